/**
 * Signed device lists, signature prefixes, registration proofs, account certificates, fingerprints
 * and safety codes (WP-DEV-01 … WP-DEV-09), with both providers where crypto is involved.
 */
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { concatBytes } from './bytes.js';
import { MAX_DEVICES_PER_ACCOUNT } from './constants.js';
import { nobleProvider } from './crypto/noble.js';
import { nodeProvider } from './crypto/node.js';
import { xeddsaSign } from './crypto/xeddsa.js';
import {
  accountKeyFingerprint,
  decodeDeviceList,
  encodeDeviceList,
  registrationProofMessage,
  safetyCode,
  SIGNATURE_PREFIX,
  signAccountCertificate,
  signDeviceList,
  signRegistrationProof,
  verifyAccountCertificate,
  verifyRegistrationProof,
  verifySignedDeviceList,
} from './device-list.js';
import type { DeviceList } from './device-list-types.js';
import { ERROR_RULES, UsageError, type ErrorCode, type Result } from './errors.js';
import { fromHex, toHex } from './hex.js';
import { generateKeyPair, type KeyPair } from './keys.js';
import { seededRng } from './rng.js';
import { encodeRawFields, type RawField } from './wire-testing.js';

const providers = [nobleProvider, nodeProvider] as const;
const c = nodeProvider;
const rng = seededRng('device-list.test');
const account: KeyPair = generateKeyPair(c, rng);
const other: KeyPair = generateKeyPair(c, rng);
const deviceKeys: readonly KeyPair[] = Array.from({ length: MAX_DEVICES_PER_ACCOUNT + 1 }, () =>
  generateKeyPair(c, rng),
);
const random64 = (label: string): Uint8Array => seededRng(label).randomBytes(64);

function key(index: number): Uint8Array {
  const pair = deviceKeys[index];
  if (pair === undefined) throw new Error(`no key ${index}`);
  return pair.publicKey;
}

const LIST: DeviceList = {
  userId: 'alice',
  version: 3,
  accountKey: account.publicKey,
  devices: [
    { deviceId: 1, identityKey: key(0), registrationId: 1234 },
    { deviceId: 2, identityKey: key(1), registrationId: 16380 },
    { deviceId: 7, identityKey: key(2), registrationId: 1 },
  ],
};

function expectCode<T>(result: Result<T>, code: ErrorCode): void {
  if (result.ok) throw new Error(`expected ${code}, got ok`);
  expect(result.error.code).toBe(code);
  expect(result.error.rule).toBe(ERROR_RULES[code]);
}

/** Raw protobuf fields of a device entry, to edit. */
function entryFields(
  deviceId: number | bigint,
  identityKey: Uint8Array,
  registrationId: number | bigint,
): RawField[] {
  return [
    { kind: 'varint', field: 1, value: deviceId },
    { kind: 'bytes', field: 2, value: identityKey },
    { kind: 'varint', field: 3, value: registrationId },
  ];
}

/** Raw protobuf fields of LIST, to edit. */
function listFields(list: DeviceList = LIST): RawField[] {
  return [
    { kind: 'bytes', field: 1, value: new TextEncoder().encode(list.userId) },
    { kind: 'varint', field: 2, value: list.version },
    { kind: 'bytes', field: 3, value: list.accountKey },
    ...list.devices.map((d): RawField => ({
      kind: 'bytes',
      field: 4,
      value: encodeRawFields(entryFields(d.deviceId, d.identityKey, d.registrationId)),
    })),
  ];
}

const raw = (fields: readonly RawField[], version = 0x01): Uint8Array =>
  concatBytes(Uint8Array.of(version), encodeRawFields(fields));

/** Applies one of four byte-level mutations. */
function mutate(bytes: Uint8Array, [kind, position, value]: readonly [number, number, number]): Uint8Array {
  if (bytes.length === 0) return Uint8Array.of(value);
  const at = position % bytes.length;
  switch (kind % 4) {
    case 0: {
      const out = Uint8Array.from(bytes);
      out[at] = (out[at] ?? 0) ^ (value === 0 ? 1 : value);
      return out;
    }
    case 1:
      return bytes.slice(0, at);
    case 2:
      return concatBytes(bytes.subarray(0, at), Uint8Array.of(value), bytes.subarray(at));
    default:
      return concatBytes(bytes.subarray(0, at), bytes.subarray(at + 1));
  }
}
const mutationArb = fc.tuple(fc.nat(3), fc.nat(10_000), fc.nat(255));

const deviceListArb: fc.Arbitrary<DeviceList> = fc
  .record({
    userId: fc.stringMatching(/^[a-z0-9][a-z0-9-]{0,63}$/),
    version: fc.integer({ min: 1, max: 0xffffffff }),
    ids: fc.uniqueArray(fc.integer({ min: 1, max: 127 }), {
      minLength: 1,
      maxLength: MAX_DEVICES_PER_ACCOUNT,
    }),
    registrationId: fc.integer({ min: 1, max: 0xffffffff }),
  })
  .map(({ userId, version, ids, registrationId }) => ({
    userId,
    version,
    accountKey: account.publicKey,
    devices: [...ids]
      .sort((a, b) => a - b)
      .map((deviceId, i) => ({
        deviceId,
        identityKey: key(i),
        registrationId: registrationId - (i % 2) || 1,
      })),
  }));

describe('signature prefixes', () => {
  it('are 06 00 (account), 06 01 (device), 06 02 (device list), frozen [WP-DEV-01]', () => {
    expect(toHex(SIGNATURE_PREFIX.account)).toBe('0600');
    expect(toHex(SIGNATURE_PREFIX.device)).toBe('0601');
    expect(toHex(SIGNATURE_PREFIX.deviceList)).toBe('0602');
    expect(Object.isFrozen(SIGNATURE_PREFIX)).toBe(true);
  });

  for (const p of providers) {
    it(`a signature of one kind never verifies as another (${p.name}) [WP-DEV-01]`, () => {
      const signed = signDeviceList(p, account.privateKey, LIST, random64('kinds'));
      // The account key's list signature presented as an account certificate over the same bytes.
      const asListMessage = signed.list;
      expect(verifySignedDeviceList(p, signed, 'alice').ok).toBe(true);
      const cert = signAccountCertificate(p, account.privateKey, key(0), random64('cert'));
      expect(verifyAccountCertificate(p, account.publicKey, key(0), cert)).toBe(true);
      expectCode(
        verifySignedDeviceList(p, { list: asListMessage, signature: cert }, 'alice'),
        'DEVICE_LIST_SIGNATURE_INVALID',
      );
      // A device-prefix proof by the account key over the list bytes is not a list signature.
      const proof = signRegistrationProof(p, account.privateKey, signed.list, random64('proof'));
      expect(verifyRegistrationProof(p, account.publicKey, signed.list, proof)).toBe(true);
      expectCode(
        verifySignedDeviceList(p, { list: signed.list, signature: proof }, 'alice'),
        'DEVICE_LIST_SIGNATURE_INVALID',
      );
      // And the list signature is neither a proof nor a certificate.
      expect(verifyRegistrationProof(p, account.publicKey, signed.list, signed.signature)).toBe(false);
      expect(verifyAccountCertificate(p, account.publicKey, key(0), signed.signature)).toBe(false);
    });
  }
});

describe('device list encoding', () => {
  it('writes 0x01 then fields 1..4 in order, devices sorted by id [WP-DEV-02]', () => {
    const encoded = encodeDeviceList(LIST);
    expect(toHex(encoded)).toBe(toHex(raw(listFields())));
    expect(encoded[0]).toBe(0x01);
    expect(toHex(encoded.subarray(1, 8))).toBe(`0a05${toHex(new TextEncoder().encode('alice'))}`);
  });

  it('round-trips any valid list byte for byte [WP-DEV-02, WP-DEV-03]', () => {
    fc.assert(
      fc.property(deviceListArb, (list) => {
        const encoded = encodeDeviceList(list);
        const decoded = decodeDeviceList(encoded);
        expect(decoded.ok).toBe(true);
        if (decoded.ok) {
          expect(decoded.value).toEqual(list);
          expect(encodeDeviceList(decoded.value)).toEqual(encoded);
        }
      }),
      { numRuns: 100 },
    );
  });

  it('refuses to encode invalid lists with UsageError [WP-DEV-02]', () => {
    const bad: DeviceList[] = [
      { ...LIST, userId: 'Alice' },
      { ...LIST, userId: '' },
      { ...LIST, version: 0 },
      { ...LIST, version: 2 ** 32 },
      { ...LIST, accountKey: new Uint8Array(33) },
      { ...LIST, devices: [] },
      { ...LIST, devices: [...LIST.devices].reverse() },
      { ...LIST, devices: [LIST.devices[0], LIST.devices[0]].flatMap((d) => (d === undefined ? [] : [d])) },
      { ...LIST, devices: [{ deviceId: 128, identityKey: key(0), registrationId: 1 }] },
      { ...LIST, devices: [{ deviceId: 1, identityKey: key(0), registrationId: 0 }] },
      { ...LIST, devices: [{ deviceId: 1, identityKey: key(0).subarray(1), registrationId: 1 }] },
      {
        ...LIST,
        devices: Array.from({ length: MAX_DEVICES_PER_ACCOUNT + 1 }, (_, i) => ({
          deviceId: i + 1,
          identityKey: key(i),
          registrationId: 1,
        })),
      },
    ];
    for (const list of bad) expect(() => encodeDeviceList(list)).toThrow(UsageError);
  });
});

describe('device list decoding is strict', () => {
  const devices = (n: number): RawField[] =>
    Array.from({ length: n }, (_, i) => ({
      kind: 'bytes' as const,
      field: 4,
      value: encodeRawFields(entryFields(i + 1, key(i), 1)),
    }));
  const userIdField: RawField = { kind: 'bytes', field: 1, value: new TextEncoder().encode('alice') };
  const accountKeyField: RawField = { kind: 'bytes', field: 3, value: account.publicKey };
  const head: RawField[] = [userIdField, { kind: 'varint', field: 2, value: 3 }, accountKeyField];
  const withVersion = (version: RawField): RawField[] => [
    userIdField,
    version,
    accountKeyField,
    ...devices(1),
  ];
  const cases: Array<[string, Uint8Array]> = [
    ['an empty input', new Uint8Array(0)],
    ['format version 0x02', raw(listFields(), 0x02)],
    ['an unknown field', raw([...listFields(), { kind: 'varint', field: 9, value: 1 }])],
    [
      'a repeated user_id',
      raw([listFields()[0], ...listFields()].flatMap((f) => (f === undefined ? [] : [f]))),
    ],
    [
      'fields out of order',
      raw([...listFields().slice(1, 2), ...listFields().slice(0, 1), ...listFields().slice(2)]),
    ],
    ['a missing account_key', raw(listFields().filter((f) => f.kind === 'raw' || f.field !== 3))],
    ['version 0', raw(withVersion({ kind: 'varint', field: 2, value: 0 }))],
    ['version above uint32', raw(withVersion({ kind: 'varint', field: 2, value: 2n ** 32n }))],
    ['a non-minimal varint', raw(withVersion({ kind: 'raw', bytes: fromHex('108300') }))],
    [
      'a user id that is not UTF-8',
      raw([{ kind: 'bytes', field: 1, value: fromHex('ff') }, ...head.slice(1), ...devices(1)]),
    ],
    [
      'an invalid user id',
      raw([
        { kind: 'bytes', field: 1, value: new TextEncoder().encode('Alice') },
        ...head.slice(1),
        ...devices(1),
      ]),
    ],
    [
      'a low-order account key',
      raw([
        ...head.slice(0, 2),
        { kind: 'bytes', field: 3, value: concatBytes(Uint8Array.of(5), new Uint8Array(32)) },
        ...devices(1),
      ]),
    ],
    ['no device', raw(head)],
    ['too many devices', raw([...head, ...devices(MAX_DEVICES_PER_ACCOUNT + 1)])],
    [
      'device id 0',
      raw([...head, { kind: 'bytes', field: 4, value: encodeRawFields(entryFields(0, key(0), 1)) }]),
    ],
    [
      'device id 128',
      raw([...head, { kind: 'bytes', field: 4, value: encodeRawFields(entryFields(128, key(0), 1)) }]),
    ],
    ['decreasing device ids', raw([...head, ...devices(2).reverse()])],
    ['duplicate device ids', raw([...head, ...devices(1), ...devices(1)])],
    [
      'registration id 0',
      raw([...head, { kind: 'bytes', field: 4, value: encodeRawFields(entryFields(1, key(0), 0)) }]),
    ],
    [
      'a device key of 32 bytes',
      raw([
        ...head,
        { kind: 'bytes', field: 4, value: encodeRawFields(entryFields(1, key(0).subarray(1), 1)) },
      ]),
    ],
    [
      'a device entry with an unknown field',
      raw([
        ...head,
        {
          kind: 'bytes',
          field: 4,
          value: encodeRawFields([...entryFields(1, key(0), 1), { kind: 'varint', field: 4, value: 0 }]),
        },
      ]),
    ],
    ['a truncated protobuf', encodeDeviceList(LIST).slice(0, -1)],
  ];
  for (const [name, bytes] of cases) {
    it(`rejects ${name} as DEVICE_LIST_MALFORMED [WP-DEV-03]`, () => {
      expectCode(decodeDeviceList(bytes), 'DEVICE_LIST_MALFORMED');
    });
  }

  it('accepts exactly MAX_DEVICES_PER_ACCOUNT devices [WP-DEV-03]', () => {
    const bytes = raw([...head, ...devices(MAX_DEVICES_PER_ACCOUNT)]);
    expect(decodeDeviceList(bytes).ok).toBe(true);
  });

  it('never throws on random bytes or mutated lists, and accepts only canonical bytes [WP-DEV-03]', () => {
    const valid = encodeDeviceList(LIST);
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 400 }),
          mutationArb.map((m) => mutate(valid, m)),
        ),
        (bytes) => {
          const result = decodeDeviceList(bytes);
          if (result.ok) expect(encodeDeviceList(result.value)).toEqual(bytes);
          else expect(result.error.code).toBe('DEVICE_LIST_MALFORMED');
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe('signed device lists', () => {
  for (const p of providers) {
    it(`verifies a list signed by its own account key (${p.name}) [WP-DEV-04]`, () => {
      const signed = signDeviceList(p, account.privateKey, LIST, random64('sign'));
      const verified = verifySignedDeviceList(p, signed, 'alice');
      expect(verified).toEqual({ ok: true, value: LIST });
    });

    it(`rejects a list signed by another key (${p.name}) [WP-DEV-04]`, () => {
      const encoded = encodeDeviceList(LIST);
      const signature = xeddsaSign(
        p,
        other.privateKey,
        concatBytes(SIGNATURE_PREFIX.deviceList, encoded),
        random64('x'),
      );
      expectCode(
        verifySignedDeviceList(p, { list: encoded, signature }, 'alice'),
        'DEVICE_LIST_SIGNATURE_INVALID',
      );
    });

    it(`rejects a flipped signature bit, a truncated signature and an edited list (${p.name}) [WP-DEV-04]`, () => {
      const signed = signDeviceList(p, account.privateKey, LIST, random64('flip'));
      const flipped = Uint8Array.from(signed.signature);
      flipped[10] = (flipped[10] ?? 0) ^ 1;
      expectCode(
        verifySignedDeviceList(p, { ...signed, signature: flipped }, 'alice'),
        'DEVICE_LIST_SIGNATURE_INVALID',
      );
      expectCode(
        verifySignedDeviceList(p, { ...signed, signature: signed.signature.subarray(1) }, 'alice'),
        'DEVICE_LIST_SIGNATURE_INVALID',
      );
      const edited = encodeDeviceList({ ...LIST, version: LIST.version + 1 });
      expectCode(
        verifySignedDeviceList(p, { ...signed, list: edited }, 'alice'),
        'DEVICE_LIST_SIGNATURE_INVALID',
      );
    });

    it(`rejects a signature without the list prefix (${p.name}) [WP-DEV-04]`, () => {
      const encoded = encodeDeviceList(LIST);
      const bare = xeddsaSign(p, account.privateKey, encoded, random64('bare'));
      expectCode(
        verifySignedDeviceList(p, { list: encoded, signature: bare }, 'alice'),
        'DEVICE_LIST_SIGNATURE_INVALID',
      );
    });
  }

  it('rejects a list for another user before looking at the signature [WP-DEV-05]', () => {
    const signed = signDeviceList(c, account.privateKey, LIST, random64('user'));
    expectCode(verifySignedDeviceList(c, signed, 'bob'), 'DEVICE_LIST_WRONG_USER');
    expectCode(
      verifySignedDeviceList(c, { ...signed, signature: new Uint8Array(64) }, 'bob'),
      'DEVICE_LIST_WRONG_USER',
    );
  });

  it('reports a malformed list inside a signed list as DEVICE_LIST_MALFORMED [WP-DEV-03]', () => {
    expectCode(
      verifySignedDeviceList(c, { list: Uint8Array.of(1), signature: new Uint8Array(64) }, 'alice'),
      'DEVICE_LIST_MALFORMED',
    );
  });

  it('refuses to sign with a key that is not the list account key, or with short randomness [WP-DEV-04]', () => {
    expect(() => signDeviceList(c, other.privateKey, LIST, random64('k'))).toThrow(UsageError);
    expect(() => signDeviceList(c, account.privateKey, LIST, new Uint8Array(32))).toThrow(UsageError);
  });
});

describe('registration proofs', () => {
  const device = deviceKeys[3] ?? account;
  const message = registrationProofMessage(
    { userId: 'alice', deviceId: 2 },
    device.publicKey,
    0x01020304,
    account.publicKey,
  );

  it('lays out 0x01, user id length and bytes, device id, identity key, registration id, account key [WP-DEV-06]', () => {
    const expected = concatBytes(
      Uint8Array.of(0x01, 5),
      new TextEncoder().encode('alice'),
      Uint8Array.of(2),
      device.publicKey,
      fromHex('01020304'),
      account.publicKey,
    );
    expect(toHex(message)).toBe(toHex(expected));
    expect(() =>
      registrationProofMessage({ userId: 'alice', deviceId: 0 }, device.publicKey, 1, account.publicKey),
    ).toThrow(UsageError);
    expect(() =>
      registrationProofMessage({ userId: 'alice', deviceId: 1 }, device.publicKey, 0, account.publicKey),
    ).toThrow(UsageError);
  });

  for (const p of providers) {
    it(`verifies with the device key only, over the exact message (${p.name}) [WP-DEV-06]`, () => {
      const proof = signRegistrationProof(p, device.privateKey, message, random64('proof'));
      expect(verifyRegistrationProof(p, device.publicKey, message, proof)).toBe(true);
      expect(verifyRegistrationProof(p, other.publicKey, message, proof)).toBe(false);
      const altered = Uint8Array.from(message);
      altered[2] = 0x62;
      expect(verifyRegistrationProof(p, device.publicKey, altered, proof)).toBe(false);
      expect(verifyRegistrationProof(p, device.publicKey, message, proof.subarray(0, 63))).toBe(false);
    });
  }
});

describe('account certificates', () => {
  for (const p of providers) {
    it(`certify one device identity key under the account key (${p.name}) [WP-DEV-07]`, () => {
      const cert = signAccountCertificate(p, account.privateKey, key(4), random64('cert'));
      expect(verifyAccountCertificate(p, account.publicKey, key(4), cert)).toBe(true);
      expect(verifyAccountCertificate(p, account.publicKey, key(5), cert)).toBe(false);
      expect(verifyAccountCertificate(p, other.publicKey, key(4), cert)).toBe(false);
      expect(verifyAccountCertificate(p, account.publicKey, key(4).subarray(1), cert)).toBe(false);
      const bare = xeddsaSign(p, account.privateKey, key(4), random64('bare'));
      expect(verifyAccountCertificate(p, account.publicKey, key(4), bare)).toBe(false);
    });
  }
});

describe('fingerprints and safety codes', () => {
  for (const p of providers) {
    it(`fingerprint is SHA-256("lockstep-account-key-v1" ‖ key) (${p.name}) [WP-DEV-08]`, () => {
      const expected = createHash('sha256')
        .update('lockstep-account-key-v1')
        .update(account.publicKey)
        .digest('hex');
      expect(toHex(accountKeyFingerprint(p, account.publicKey))).toBe(expected);
      expect(() => accountKeyFingerprint(p, account.publicKey.subarray(1))).toThrow(UsageError);
    });
  }

  it('safety code is the fingerprint mod 10^60 in 12 groups of 5 digits [WP-DEV-09]', () => {
    expect(safetyCode(new Uint8Array(32))).toBe(Array(12).fill('00000').join(' '));
    const ones = new Uint8Array(32).fill(0xff);
    const digits = ((2n ** 256n - 1n) % 10n ** 60n).toString().padStart(60, '0');
    expect(safetyCode(ones)).toBe(digits.match(/.{5}/g)?.join(' '));
    const fp = accountKeyFingerprint(c, account.publicKey);
    expect(safetyCode(fp)).toMatch(/^(\d{5} ){11}\d{5}$/);
    expect(safetyCode(fp)).not.toBe(safetyCode(accountKeyFingerprint(c, other.publicKey)));
    expect(() => safetyCode(new Uint8Array(31))).toThrow(UsageError);
  });
});
