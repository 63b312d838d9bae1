/**
 * Linking a device by QR code (WP-LINK-01 … WP-LINK-05): provisioning codes and their URLs,
 * provision messages, and the envelope, with both providers.
 */
import { createCipheriv, createHmac, hkdfSync } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { concatBytes } from './bytes.js';
import { nobleProvider } from './crypto/noble.js';
import { nodeProvider } from './crypto/node.js';
import { encodeDeviceList, signAccountCertificate, signDeviceList } from './device-list.js';
import type { DeviceList } from './device-list-types.js';
import { DRAWS } from './draws.js';
import { ERROR_RULES, UsageError, type ErrorCode, type Result } from './errors.js';
import { fromHex, toHex } from './hex.js';
import { dh, generateKeyPair, publicKeyFromPrivate } from './keys.js';
import {
  decodeProvisioningCode,
  decodeProvisionMessage,
  decryptProvisionEnvelope,
  encodeProvisioningCode,
  encodeProvisionMessage,
  encryptProvisionEnvelope,
  MIN_PROVISION_ENVELOPE_LENGTH,
  provisioningCodeFromUrl,
  provisioningCodeToUrl,
  relayAddressFromBytes,
  type ProvisioningCode,
  type ProvisionMessage,
} from './provisioning.js';
import { seededRng, type Rng } from './rng.js';
import { encodeRawFields, type RawField } from './wire-testing.js';

const providers = [nobleProvider, nodeProvider] as const;
const c = nodeProvider;
const rng = seededRng('provisioning.test');
const account = generateKeyPair(c, rng);
const primary = generateKeyPair(c, rng);
const newDevice = generateKeyPair(c, rng);
const ephemeral = generateKeyPair(c, rng);
const RELAY = relayAddressFromBytes(fromHex('000102030405060708090a0b0c0d0e0f'));

const CODE: ProvisioningCode = {
  relayAddress: RELAY,
  ephemeralPublicKey: ephemeral.publicKey,
  identityKey: newDevice.publicKey,
  registrationId: 4242,
};

const LIST: DeviceList = {
  userId: 'alice',
  version: 2,
  accountKey: account.publicKey,
  devices: [
    { deviceId: 1, identityKey: primary.publicKey, registrationId: 1 },
    { deviceId: 2, identityKey: newDevice.publicKey, registrationId: 4242 },
  ],
};
const SIGNED = signDeviceList(c, account.privateKey, LIST, seededRng('list').randomBytes(64));
const MESSAGE: ProvisionMessage = {
  userId: 'alice',
  deviceId: 2,
  deviceList: SIGNED,
  accountCertificate: signAccountCertificate(
    c,
    account.privateKey,
    newDevice.publicKey,
    seededRng('cert').randomBytes(64),
  ),
};

function expectCode<T>(result: Result<T>, code: ErrorCode): void {
  if (result.ok) throw new Error(`expected ${code}, got ok`);
  expect(result.error.code).toBe(code);
  expect(result.error.rule).toBe(ERROR_RULES[code]);
}

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

/** A source that records the size of every draw. */
function recording(inner: Rng): Rng & { readonly sizes: number[] } {
  const sizes: number[] = [];
  return {
    sizes,
    randomBytes(length: number): Uint8Array {
      sizes.push(length);
      return inner.randomBytes(length);
    },
  };
}

const codeFields = (code: ProvisioningCode = CODE): RawField[] => [
  { kind: 'bytes', field: 1, value: fromHex('000102030405060708090a0b0c0d0e0f') },
  { kind: 'bytes', field: 2, value: code.ephemeralPublicKey },
  { kind: 'bytes', field: 3, value: code.identityKey },
  { kind: 'varint', field: 4, value: code.registrationId },
];
const raw = (f: readonly RawField[], version = 0x01): Uint8Array =>
  concatBytes(Uint8Array.of(version), encodeRawFields(f));

describe('provisioning codes', () => {
  it('encode 0x01 then relay address bytes, ephemeral key, identity key, registration id [WP-LINK-02]', () => {
    expect(RELAY).toBe('AAECAwQFBgcICQoLDA0ODw');
    expect(toHex(encodeProvisioningCode(CODE))).toBe(toHex(raw(codeFields())));
    const url = provisioningCodeToUrl(CODE);
    expect(url.startsWith('lockstep://link/')).toBe(true);
    expect(provisioningCodeFromUrl(url)).toEqual({ ok: true, value: CODE });
  });

  it('round-trip for any valid code, as bytes and as URL [WP-LINK-02]', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 16, maxLength: 16 }),
        fc.integer({ min: 1, max: 0xffffffff }),
        (relay, registrationId) => {
          const code = { ...CODE, relayAddress: relayAddressFromBytes(relay), registrationId };
          expect(decodeProvisioningCode(encodeProvisioningCode(code))).toEqual({ ok: true, value: code });
          expect(provisioningCodeFromUrl(provisioningCodeToUrl(code))).toEqual({ ok: true, value: code });
        },
      ),
      { numRuns: 100 },
    );
  });

  it('refuse to encode an invalid code [WP-LINK-02]', () => {
    for (const code of [
      { ...CODE, relayAddress: 'short' },
      { ...CODE, relayAddress: `${RELAY}A` },
      { ...CODE, ephemeralPublicKey: new Uint8Array(33) },
      { ...CODE, identityKey: newDevice.publicKey.subarray(1) },
      { ...CODE, registrationId: 0 },
    ]) {
      expect(() => encodeProvisioningCode(code)).toThrow(UsageError);
    }
  });

  const cases: Array<[string, Uint8Array]> = [
    ['an empty input', new Uint8Array(0)],
    ['version 0x02', raw(codeFields(), 0x02)],
    [
      'a 15-byte relay address',
      raw([{ kind: 'bytes', field: 1, value: new Uint8Array(15) }, ...codeFields().slice(1)]),
    ],
    [
      'a low-order ephemeral key',
      raw([
        ...codeFields().slice(0, 1),
        { kind: 'bytes', field: 2, value: concatBytes(Uint8Array.of(5), new Uint8Array(32)) },
        ...codeFields().slice(2),
      ]),
    ],
    ['registration id 0', raw([...codeFields().slice(0, 3), { kind: 'varint', field: 4, value: 0 }])],
    ['a missing identity key', raw(codeFields().filter((f) => f.kind !== 'bytes' || f.field !== 3))],
    ['an unknown field', raw([...codeFields(), { kind: 'varint', field: 5, value: 0 }])],
    ['fields out of order', raw([...codeFields().slice(1), ...codeFields().slice(0, 1)])],
  ];
  for (const [name, bytes] of cases) {
    it(`reject ${name} as PROVISIONING_MALFORMED [WP-LINK-01]`, () => {
      expectCode(decodeProvisioningCode(bytes), 'PROVISIONING_MALFORMED');
    });
  }

  it('reject URLs that are not exactly the canonical form [WP-LINK-01]', () => {
    const url = provisioningCodeToUrl(CODE);
    for (const bad of [
      `${url}=`,
      url.replace('link', 'contact'),
      ` ${url}`,
      'lockstep://link/',
      `${url}\n`,
    ]) {
      expectCode(provisioningCodeFromUrl(bad), 'PROVISIONING_MALFORMED');
    }
  });

  it('never throw on random or mutated bytes [WP-LINK-01]', () => {
    const valid = encodeProvisioningCode(CODE);
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 120 }),
          mutationArb.map((m) => mutate(valid, m)),
        ),
        (bytes) => {
          const result = decodeProvisioningCode(bytes);
          if (result.ok) expect(encodeProvisioningCode(result.value)).toEqual(bytes);
          else expect(result.error.code).toBe('PROVISIONING_MALFORMED');
        },
      ),
      { numRuns: 400 },
    );
  });
});

describe('provision messages', () => {
  it('round-trip and keep the signed list bytes as signed [WP-LINK-03]', () => {
    const encoded = encodeProvisionMessage(MESSAGE);
    expect(encoded[0]).toBe(0x01);
    expect(decodeProvisionMessage(encoded)).toEqual({ ok: true, value: MESSAGE });
  });

  it('refuse to encode an invalid message [WP-LINK-03]', () => {
    for (const message of [
      { ...MESSAGE, userId: '-' },
      { ...MESSAGE, deviceId: 0 },
      { ...MESSAGE, accountCertificate: new Uint8Array(63) },
      { ...MESSAGE, deviceList: { ...SIGNED, signature: new Uint8Array(0) } },
      { ...MESSAGE, deviceList: { ...SIGNED, list: SIGNED.list.subarray(1) } },
    ]) {
      expect(() => encodeProvisionMessage(message)).toThrow(UsageError);
    }
  });

  it('reject a device list that does not decode, and non-canonical bytes [WP-LINK-01]', () => {
    const signed = (list: Uint8Array): RawField => ({
      kind: 'bytes',
      field: 3,
      value: encodeRawFields([
        { kind: 'bytes', field: 1, value: list },
        { kind: 'bytes', field: 2, value: SIGNED.signature },
      ]),
    });
    const base: RawField[] = [
      { kind: 'bytes', field: 1, value: new TextEncoder().encode('alice') },
      { kind: 'varint', field: 2, value: 2 },
      signed(SIGNED.list),
      { kind: 'bytes', field: 4, value: MESSAGE.accountCertificate },
    ];
    expect(toHex(raw(base))).toBe(toHex(encodeProvisionMessage(MESSAGE)));
    const badList = encodeDeviceList(LIST).slice(0, -1);
    expectCode(
      decodeProvisionMessage(raw([...base.slice(0, 2), signed(badList), ...base.slice(3)])),
      'PROVISIONING_MALFORMED',
    );
    expectCode(
      decodeProvisionMessage(raw([...base.slice(1, 2), ...base.slice(0, 1), ...base.slice(2)])),
      'PROVISIONING_MALFORMED',
    );
    expectCode(decodeProvisionMessage(raw(base, 0x00)), 'PROVISIONING_MALFORMED');
    expectCode(decodeProvisionMessage(raw(base.slice(0, 3))), 'PROVISIONING_MALFORMED');
  });

  it('never throw on random or mutated bytes [WP-LINK-01]', () => {
    const valid = encodeProvisionMessage(MESSAGE);
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 300 }),
          mutationArb.map((m) => mutate(valid, m)),
        ),
        (bytes) => {
          const result = decodeProvisionMessage(bytes);
          if (result.ok) expect(encodeProvisionMessage(result.value)).toEqual(bytes);
          else expect(result.error.code).toBe('PROVISIONING_MALFORMED');
        },
      ),
      { numRuns: 400 },
    );
  });
});

describe('provision envelopes', () => {
  const plaintext = encodeProvisionMessage(MESSAGE);

  it('draw the sender ephemeral key then the IV, as spec/draws.ts says [WP-LINK-04]', () => {
    const source = recording(seededRng('draws'));
    encryptProvisionEnvelope(c, source, ephemeral.publicKey, plaintext);
    expect(source.sizes).toEqual(DRAWS.provisionEnvelope.map((d) => d.bytes));
  });

  it('are 0x01 ‖ E ‖ iv ‖ AES-256-CBC ‖ HMAC under HKDF("Lockstep_Provisioning_v1") keys [WP-LINK-04]', () => {
    const draws = seededRng('layout');
    const senderPrivate = seededRng('layout').randomBytes(32);
    const iv = (() => {
      const r = seededRng('layout');
      r.randomBytes(32);
      return r.randomBytes(16);
    })();
    const envelope = encryptProvisionEnvelope(c, draws, ephemeral.publicKey, plaintext);
    const sender = publicKeyFromPrivate(c, senderPrivate);
    const shared = dh(c, senderPrivate, ephemeral.publicKey);
    if (!shared.ok) throw new Error('dh failed');
    const okm = new Uint8Array(
      hkdfSync('sha256', shared.value, new Uint8Array(0), 'Lockstep_Provisioning_v1', 64),
    );
    const cipher = createCipheriv('aes-256-cbc', okm.subarray(0, 32), iv);
    const ct = concatBytes(new Uint8Array(cipher.update(plaintext)), new Uint8Array(cipher.final()));
    const body = concatBytes(Uint8Array.of(1), sender, iv, ct);
    const mac = new Uint8Array(createHmac('sha256', okm.subarray(32)).update(body).digest());
    expect(toHex(envelope)).toBe(toHex(concatBytes(body, mac)));
  });

  for (const p of providers) {
    it(`open with the recipient key (${p.name}) [WP-LINK-04, WP-LINK-05]`, () => {
      const envelope = encryptProvisionEnvelope(
        p,
        seededRng(`open-${p.name}`),
        ephemeral.publicKey,
        plaintext,
      );
      expect(decryptProvisionEnvelope(p, ephemeral.privateKey, envelope)).toEqual({
        ok: true,
        value: plaintext,
      });
      expect(
        decryptProvisionEnvelope(
          p,
          ephemeral.privateKey,
          encryptProvisionEnvelope(p, seededRng('e'), ephemeral.publicKey, new Uint8Array(0)),
        ),
      ).toEqual({ ok: true, value: new Uint8Array(0) });
    });

    it(`reject any flipped bit of the MAC-covered bytes or the MAC, and a wrong key (${p.name}) [WP-LINK-05]`, () => {
      const envelope = encryptProvisionEnvelope(p, seededRng('flip'), ephemeral.publicKey, plaintext);
      for (const at of [40, 50, envelope.length - 40, envelope.length - 1]) {
        const bad = Uint8Array.from(envelope);
        bad[at] = (bad[at] ?? 0) ^ 0x01;
        expectCode(decryptProvisionEnvelope(p, ephemeral.privateKey, bad), 'PROVISIONING_MAC_INVALID');
      }
      expectCode(decryptProvisionEnvelope(p, newDevice.privateKey, envelope), 'PROVISIONING_MAC_INVALID');
    });
  }

  it('reject impossible lengths, an unknown version and an invalid sender key before the MAC [WP-LINK-01]', () => {
    const envelope = encryptProvisionEnvelope(c, seededRng('len'), ephemeral.publicKey, plaintext);
    expectCode(
      decryptProvisionEnvelope(
        c,
        ephemeral.privateKey,
        envelope.subarray(0, MIN_PROVISION_ENVELOPE_LENGTH - 1),
      ),
      'PROVISIONING_MALFORMED',
    );
    expectCode(
      decryptProvisionEnvelope(c, ephemeral.privateKey, envelope.subarray(0, envelope.length - 1)),
      'PROVISIONING_MALFORMED',
    );
    const version = Uint8Array.from(envelope);
    version[0] = 2;
    expectCode(decryptProvisionEnvelope(c, ephemeral.privateKey, version), 'PROVISIONING_MALFORMED');
    const lowOrder = Uint8Array.from(envelope);
    lowOrder.set(new Uint8Array(32), 2);
    expectCode(decryptProvisionEnvelope(c, ephemeral.privateKey, lowOrder), 'PROVISIONING_MALFORMED');
  });

  it('reject bad padding under a valid MAC as PROVISIONING_MALFORMED [WP-LINK-01]', () => {
    // Build an envelope by hand whose last block decrypts to a byte that is not PKCS#7 padding.
    const senderPrivate = seededRng('pad').randomBytes(32);
    const shared = dh(c, senderPrivate, ephemeral.publicKey);
    if (!shared.ok) throw new Error('dh failed');
    const okm = new Uint8Array(
      hkdfSync('sha256', shared.value, new Uint8Array(0), 'Lockstep_Provisioning_v1', 64),
    );
    const iv = new Uint8Array(16);
    const cipher = createCipheriv('aes-256-cbc', okm.subarray(0, 32), iv).setAutoPadding(false);
    const ct = concatBytes(new Uint8Array(cipher.update(new Uint8Array(16))), new Uint8Array(cipher.final()));
    const body = concatBytes(Uint8Array.of(1), publicKeyFromPrivate(c, senderPrivate), iv, ct);
    const mac = new Uint8Array(createHmac('sha256', okm.subarray(32)).update(body).digest());
    expectCode(
      decryptProvisionEnvelope(c, ephemeral.privateKey, concatBytes(body, mac)),
      'PROVISIONING_MALFORMED',
    );
  });

  it('refuse an invalid recipient key with UsageError [WP-LINK-04]', () => {
    expect(() => encryptProvisionEnvelope(c, seededRng('x'), new Uint8Array(33), plaintext)).toThrow(
      UsageError,
    );
  });

  it('never throw on random or mutated envelopes [WP-LINK-01, WP-LINK-05]', () => {
    const envelope = encryptProvisionEnvelope(c, seededRng('fuzz'), ephemeral.publicKey, plaintext);
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 200 }),
          mutationArb.map((m) => mutate(envelope, m)),
        ),
        (bytes) => {
          const result = decryptProvisionEnvelope(c, ephemeral.privateKey, bytes);
          if (result.ok) expect(result.value).toEqual(plaintext);
          else expect(['PROVISIONING_MALFORMED', 'PROVISIONING_MAC_INVALID']).toContain(result.error.code);
        },
      ),
      { numRuns: 300 },
    );
  });
});
