import { BinaryWriter, WireType } from '@bufbuild/protobuf/wire';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { concatBytes, equalBytes } from './bytes.js';
import { ERROR_RULES, UsageError, type ErrorCode, type ProtocolError, type Result } from './errors.js';
import { fromHex, toHex } from './hex.js';
import {
  encodePreKeySignalMessage,
  encodeSignalMessage,
  encodeSignalMessageBody,
  frameSignalMessage,
  MAX_GROUP_DEPTH,
  parsePreKeySignalMessage,
  parseSignalMessage,
  type PreKeySignalMessageFields,
  type SignalMessageFields,
} from './wire.js';
import {
  buildRawPreKeySignalMessage,
  buildRawSignalMessage,
  encodeRawFields,
  preKeySignalMessageRawFields,
  signalMessageRawFields,
  type RawField,
} from './wire-testing.js';

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/**
 * A valid X25519 public key encoding: 0x05 ‖ u with u[0] = 9 and the top bit clear. Such a u is
 * always canonical (< 2^255 − 19) and never one of the low-order points (whose first bytes are
 * 0x00, 0x01, 0x5f, 0xe0, 0xec, 0xed, 0xee).
 */
function ecKey(fill: number): Uint8Array {
  const key = new Uint8Array(33).fill(fill & 0xff);
  key[0] = 0x05;
  key[1] = 0x09;
  key[32] = fill & 0x7f;
  return key;
}

function kemCiphertext(fill: number): Uint8Array {
  const ct = new Uint8Array(1569).fill(fill & 0xff);
  ct[0] = 0x08;
  return ct;
}

const MAC = fromHex('0102030405060708');

const SIGNAL_FIELDS: SignalMessageFields = {
  ratchetKey: ecKey(0),
  counter: 300,
  previousCounter: 0,
  ciphertext: fromHex('dead'),
};

function signalMessage(fields: SignalMessageFields = SIGNAL_FIELDS, mac: Uint8Array = MAC): Uint8Array {
  return frameSignalMessage(encodeSignalMessageBody(fields), mac);
}

const PREKEY_FIELDS: PreKeySignalMessageFields = {
  registrationId: 0x3fff,
  preKeyId: 1,
  signedPreKeyId: 2,
  kyberPreKeyId: 3,
  kyberCiphertext: kemCiphertext(0x5a),
  baseKey: ecKey(0x11),
  identityKey: ecKey(0x22),
  message: signalMessage(),
};

const KNOWN_CODES = new Set<string>(Object.keys(ERROR_RULES));

function expectError<T>(result: Result<T>, code: ErrorCode): ProtocolError {
  if (result.ok) throw new Error(`expected ${code}, got a parsed message`);
  expect(result.error.code).toBe(code);
  expect(result.error.rule).toBe(ERROR_RULES[code]);
  return result.error;
}

function expectOk<T>(result: Result<T>): T {
  if (!result.ok) throw new Error(`expected success, got ${result.error.code}: ${result.error.message}`);
  return result.value;
}

function expectTypedError<T>(result: Result<T>): void {
  if (result.ok) return;
  expect(KNOWN_CODES.has(result.error.code)).toBe(true);
  expect(result.error.rule).toBe(ERROR_RULES[result.error.code]);
}

/** Replaces (or with `undefined`, removes) the raw elements for one field number. */
function withField(fields: RawField[], field: number, replacement?: RawField): RawField[] {
  const out: RawField[] = [];
  for (const element of fields) {
    if (element.kind !== 'raw' && element.field === field) {
      if (replacement !== undefined) out.push(replacement);
    } else {
      out.push(element);
    }
  }
  return out;
}

const signalRaw = (): RawField[] => signalMessageRawFields(SIGNAL_FIELDS);
const preKeyRaw = (): RawField[] => preKeySignalMessageRawFields(PREKEY_FIELDS);

// Arbitraries.
const uint32 = fc.integer({ min: 0, max: 0xffff_ffff });
const ecKeyArb = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((u) => {
  const key = concatBytes(Uint8Array.of(0x05), u);
  key[1] = 0x09;
  key[32] = (key[32] ?? 0) & 0x7f;
  return key;
});
const signalFieldsArb = fc.record({
  ratchetKey: ecKeyArb,
  counter: uint32,
  previousCounter: uint32,
  ciphertext: fc.uint8Array({ maxLength: 300 }),
});
const macArb = fc.uint8Array({ minLength: 8, maxLength: 8 });

/** A deterministic body of `length` bytes (large bodies without fast-check generating each byte). */
function patternBytes(length: number, seed = 0): Uint8Array {
  return Uint8Array.from({ length }, (_, i) => (i * 131 + seed * 7 + 11) & 0xff);
}

/** Ciphertexts small and large, so that the length prefix takes one, two and three varint bytes. */
const anySizeCiphertextArb = fc.oneof(
  fc.uint8Array({ maxLength: 300 }),
  fc
    .tuple(fc.integer({ min: 0, max: 70_000 }), fc.nat(255))
    .map(([length, seed]) => patternBytes(length, seed)),
);

/**
 * The slow, plain reference for the SignalMessage encoders: every field through one BinaryWriter,
 * as the protobuf encoding guide describes it, then the MAC appended by concatenation.
 */
function referenceSignalMessage(fields: SignalMessageFields, mac: Uint8Array): Uint8Array {
  const writer = new BinaryWriter();
  writer.raw(Uint8Array.of(0x44));
  writer.tag(1, WireType.LengthDelimited).bytes(fields.ratchetKey);
  writer.tag(2, WireType.Varint).uint32(fields.counter);
  writer.tag(3, WireType.Varint).uint32(fields.previousCounter);
  writer.tag(4, WireType.LengthDelimited).bytes(fields.ciphertext);
  return concatBytes(writer.finish(), mac);
}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

describe('SignalMessage encoding', () => {
  it('writes the hand-computed bytes, fields in ascending tag order [WP-WIRE-05] [WP-WIRE-02]', () => {
    // 0x44 version; 0x0a = field 1, wire type 2, length 0x21 = 33; 0x10 = field 2 varint,
    // 300 = 0b10_0101100 -> 0xac 0x02; 0x18 = field 3 varint, 0 written explicitly;
    // 0x22 = field 4, wire type 2, length 2.
    const expected = '44' + '0a21' + '0509' + '00'.repeat(31) + '10ac02' + '1800' + '2202dead';
    expect(toHex(encodeSignalMessageBody(SIGNAL_FIELDS))).toBe(expected);
    expect(toHex(signalMessage())).toBe(expected + '0102030405060708');
  });

  it('always writes counter and previous_counter, even when zero [WP-WIRE-05]', () => {
    const body = encodeSignalMessageBody({ ...SIGNAL_FIELDS, counter: 0, previousCounter: 0 });
    expect(toHex(body.subarray(36))).toBe('1000' + '1800' + '2202dead');
  });

  it('writes the largest uint32 as a 5-byte varint [WP-WIRE-05]', () => {
    const body = encodeSignalMessageBody({ ...SIGNAL_FIELDS, counter: 0xffff_ffff });
    expect(toHex(body.subarray(36, 42))).toBe('10ffffffff0f');
  });

  it('refuses caller misuse with UsageError', () => {
    expect(() => encodeSignalMessageBody({ ...SIGNAL_FIELDS, ratchetKey: new Uint8Array(32) })).toThrow(
      UsageError,
    );
    expect(() => encodeSignalMessageBody({ ...SIGNAL_FIELDS, ratchetKey: new Uint8Array(33) })).toThrow(
      UsageError,
    );
    expect(() => encodeSignalMessageBody({ ...SIGNAL_FIELDS, counter: -1 })).toThrow(UsageError);
    expect(() => encodeSignalMessageBody({ ...SIGNAL_FIELDS, counter: 2 ** 32 })).toThrow(UsageError);
    expect(() => encodeSignalMessageBody({ ...SIGNAL_FIELDS, previousCounter: 1.5 })).toThrow(UsageError);
    expect(() => frameSignalMessage(encodeSignalMessageBody(SIGNAL_FIELDS), new Uint8Array(7))).toThrow(
      UsageError,
    );
    expect(() => frameSignalMessage(new Uint8Array(0), MAC)).toThrow(UsageError);
  });

  it('encodes in one allocation exactly the bytes of the plain reference encoding [WP-WIRE-05] [WP-WIRE-02]', () => {
    fc.assert(
      fc.property(signalFieldsArb, anySizeCiphertextArb, macArb, (base, ciphertext, mac) => {
        const fields = { ...base, ciphertext };
        const expected = toHex(referenceSignalMessage(fields, mac));
        const body = encodeSignalMessageBody(fields);
        let seenMacInput = '';
        const framed = encodeSignalMessage(fields, (macInput) => {
          seenMacInput = toHex(macInput);
          return mac;
        });
        expect(toHex(framed)).toBe(expected);
        expect(toHex(frameSignalMessage(body, mac))).toBe(expected);
        // WP-DR-05: the MAC is computed over version ‖ protobuf, exactly the bytes sent.
        expect(seenMacInput).toBe(toHex(body));
        expect(toHex(body)).toBe(expected.slice(0, -16));
      }),
      { numRuns: 200 },
    );
  });

  it('writes the ciphertext length prefix at every varint boundary as the reference does [WP-WIRE-05]', () => {
    for (const length of [0, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152]) {
      const fields = { ...SIGNAL_FIELDS, ciphertext: patternBytes(length) };
      const expected = referenceSignalMessage(fields, MAC);
      // equalBytes, not toEqual: vitest's deep equality takes seconds on megabyte arrays.
      expect(
        equalBytes(
          encodeSignalMessage(fields, () => MAC),
          expected,
        ),
      ).toBe(true);
      expect(equalBytes(encodeSignalMessageBody(fields), expected.subarray(0, expected.length - 8))).toBe(
        true,
      );
    }
  });

  it('refuses a MAC that is not 8 bytes, and bad fields, with UsageError', () => {
    for (const length of [0, 7, 9, 32]) {
      expect(() => encodeSignalMessage(SIGNAL_FIELDS, () => new Uint8Array(length))).toThrow(UsageError);
    }
    let called = false;
    const mac = () => {
      called = true;
      return MAC;
    };
    expect(() => encodeSignalMessage({ ...SIGNAL_FIELDS, ratchetKey: new Uint8Array(33) }, mac)).toThrow(
      UsageError,
    );
    expect(() => encodeSignalMessage({ ...SIGNAL_FIELDS, counter: 2 ** 32 }, mac)).toThrow(UsageError);
    expect(called).toBe(false);
  });
});

describe('PreKeySignalMessage encoding', () => {
  it('writes the hand-computed bytes, fields 1..8 in ascending order [WP-WIRE-05] [WP-WIRE-03]', () => {
    const inner = signalMessage();
    expect(inner.length).toBe(0x35);
    const expected = [
      '44', // version byte
      '08' + '01', // field 1 pre_key_id (varint) = 1
      '12' + '21' + toHex(PREKEY_FIELDS.baseKey), // field 2 base_key (LEN), 33 bytes
      '1a' + '21' + toHex(PREKEY_FIELDS.identityKey), // field 3 identity_key (LEN), 33 bytes
      '22' + '35' + toHex(inner), // field 4 message (LEN), 53 bytes
      '28' + 'ff7f', // field 5 registration_id (varint) = 0x3fff
      '30' + '02', // field 6 signed_pre_key_id (varint) = 2
      '38' + '03', // field 7 kyber_pre_key_id (varint) = 3
      '42' + 'a10c' + toHex(PREKEY_FIELDS.kyberCiphertext), // field 8 (LEN), 1569 = 0x621 -> 0xa1 0x0c
    ].join('');
    expect(toHex(encodePreKeySignalMessage(PREKEY_FIELDS))).toBe(expected);
  });

  it('omits an absent pre_key_id and still writes a zero registration_id [WP-WIRE-05]', () => {
    const { preKeyId: _omit, ...withoutPreKey } = PREKEY_FIELDS;
    const bytes = encodePreKeySignalMessage({ ...withoutPreKey, registrationId: 0 });
    expect(toHex(bytes.subarray(0, 3))).toBe('441221');
    expect(toHex(bytes)).toContain('2800' + '3002' + '3803' + '42a10c');
    const parsed = expectOk(parsePreKeySignalMessage(bytes));
    expect('preKeyId' in parsed).toBe(false);
    expect(parsed.registrationId).toBe(0);
  });

  it('refuses caller misuse with UsageError', () => {
    expect(() =>
      encodePreKeySignalMessage({ ...PREKEY_FIELDS, kyberCiphertext: new Uint8Array(1569) }),
    ).toThrow(UsageError);
    expect(() => encodePreKeySignalMessage({ ...PREKEY_FIELDS, baseKey: new Uint8Array(33) })).toThrow(
      UsageError,
    );
    expect(() => encodePreKeySignalMessage({ ...PREKEY_FIELDS, identityKey: ecKey(1).subarray(1) })).toThrow(
      UsageError,
    );
    expect(() => encodePreKeySignalMessage({ ...PREKEY_FIELDS, preKeyId: -1 })).toThrow(UsageError);
    expect(() => encodePreKeySignalMessage({ ...PREKEY_FIELDS, registrationId: 2 ** 32 })).toThrow(
      UsageError,
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------

describe('round trips', () => {
  it('parses what it encodes, MAC input exactly as encoded [WP-WIRE-02] [WP-WIRE-05]', () => {
    fc.assert(
      fc.property(signalFieldsArb, macArb, (fields, mac) => {
        const body = encodeSignalMessageBody(fields);
        const bytes = frameSignalMessage(body, mac);
        const parsed = expectOk(parseSignalMessage(bytes));
        expect(parsed.messageVersion).toBe(4);
        expect(parsed.ratchetKey).toEqual(fields.ratchetKey);
        expect(parsed.counter).toBe(fields.counter);
        expect(parsed.previousCounter).toBe(fields.previousCounter);
        expect(parsed.ciphertext).toEqual(fields.ciphertext);
        expect(parsed.macInput).toEqual(body);
        expect(parsed.mac).toEqual(mac);
        expect(parsed.serialized).toEqual(bytes);
      }),
    );
  });

  it('parses the PreKey messages it encodes, inner message included [WP-WIRE-03] [WP-WIRE-05]', () => {
    const preKeyArb = fc.record(
      {
        registrationId: uint32,
        preKeyId: uint32,
        signedPreKeyId: uint32,
        kyberPreKeyId: uint32,
        kyberCiphertext: fc
          .uint8Array({ minLength: 1568, maxLength: 1568 })
          .map((ct) => concatBytes(Uint8Array.of(8), ct)),
        baseKey: ecKeyArb,
        identityKey: ecKeyArb,
        message: fc.tuple(signalFieldsArb, macArb).map(([f, mac]) => signalMessage(f, mac)),
      },
      {
        requiredKeys: [
          'registrationId',
          'signedPreKeyId',
          'kyberPreKeyId',
          'kyberCiphertext',
          'baseKey',
          'identityKey',
          'message',
        ],
      },
    );
    fc.assert(
      fc.property(preKeyArb, (fields) => {
        const bytes = encodePreKeySignalMessage(fields);
        const parsed = expectOk(parsePreKeySignalMessage(bytes));
        expect(parsed.messageVersion).toBe(4);
        expect(parsed.registrationId).toBe(fields.registrationId);
        expect(parsed.preKeyId).toBe(fields.preKeyId);
        expect('preKeyId' in parsed).toBe(fields.preKeyId !== undefined);
        expect(parsed.signedPreKeyId).toBe(fields.signedPreKeyId);
        expect(parsed.kyberPreKeyId).toBe(fields.kyberPreKeyId);
        expect(parsed.kyberCiphertext).toEqual(fields.kyberCiphertext);
        expect(parsed.baseKey).toEqual(fields.baseKey);
        expect(parsed.identityKey).toEqual(fields.identityKey);
        expect(parsed.message).toEqual(fields.message);
        expect(parsed.inner.serialized).toEqual(fields.message);
        expect(parsed.serialized).toEqual(bytes);
      }),
      { numRuns: 50 },
    );
  });

  it('returns copies that never alias the input', () => {
    const bytes = signalMessage();
    const parsed = expectOk(parseSignalMessage(bytes));
    const snapshot = toHex(parsed.serialized);
    bytes.fill(0xff);
    expect(toHex(parsed.serialized)).toBe(snapshot);
    expect(parsed.ratchetKey).toEqual(SIGNAL_FIELDS.ratchetKey);
    expect(parsed.ciphertext).toEqual(SIGNAL_FIELDS.ciphertext);
    expect(parsed.mac).toEqual(MAC);

    const preKeyBytes = encodePreKeySignalMessage(PREKEY_FIELDS);
    const preKey = expectOk(parsePreKeySignalMessage(preKeyBytes));
    preKeyBytes.fill(0);
    expect(preKey.baseKey).toEqual(PREKEY_FIELDS.baseKey);
    expect(preKey.kyberCiphertext).toEqual(PREKEY_FIELDS.kyberCiphertext);
    expect(preKey.message).toEqual(PREKEY_FIELDS.message);
  });

  it('gives the fields sessions store buffers of their own, not views that pin the whole message', () => {
    const parsed = expectOk(
      parseSignalMessage(signalMessage({ ...SIGNAL_FIELDS, ciphertext: patternBytes(4096) })),
    );
    expect(parsed.ratchetKey.buffer.byteLength).toBe(33);
    const preKey = expectOk(parsePreKeySignalMessage(encodePreKeySignalMessage(PREKEY_FIELDS)));
    expect(preKey.baseKey.buffer.byteLength).toBe(33);
    expect(preKey.identityKey.buffer.byteLength).toBe(33);
    expect(preKey.kyberCiphertext.buffer.byteLength).toBe(1569);
    expect(preKey.inner.ratchetKey.buffer.byteLength).toBe(33);
  });

  it('parses a subarray view with a non-zero byte offset', () => {
    const bytes = signalMessage();
    const padded = concatBytes(new Uint8Array(7).fill(0xee), bytes, new Uint8Array(5));
    const parsed = expectOk(parseSignalMessage(padded.subarray(7, 7 + bytes.length)));
    expect(parsed.serialized).toEqual(bytes);
  });
});

// ---------------------------------------------------------------------------------------------
// Versions and lengths
// ---------------------------------------------------------------------------------------------

describe('version byte', () => {
  it('rejects a legacy version byte [WP-WIRE-01]', () => {
    for (const versionByte of [0x04, 0x14, 0x22, 0x24]) {
      expect(
        expectError(
          parseSignalMessage(buildRawSignalMessage(signalRaw(), { versionByte })),
          'WIRE_VERSION_LEGACY',
        ).details,
      ).toEqual({ version: versionByte >> 4 });
      expectError(
        parsePreKeySignalMessage(buildRawPreKeySignalMessage(preKeyRaw(), versionByte)),
        'WIRE_VERSION_LEGACY',
      );
    }
  });

  it('rejects an unrecognised future version byte [WP-WIRE-01]', () => {
    for (const versionByte of [0x54, 0x55, 0xf4, 0xff]) {
      expectError(
        parseSignalMessage(buildRawSignalMessage(signalRaw(), { versionByte })),
        'WIRE_VERSION_UNKNOWN',
      );
      expectError(
        parsePreKeySignalMessage(buildRawPreKeySignalMessage(preKeyRaw(), versionByte)),
        'WIRE_VERSION_UNKNOWN',
      );
    }
  });

  it('rejects a version-3 (X3DH) PreKey message [WP-WIRE-01]', () => {
    expectError(
      parsePreKeySignalMessage(buildRawPreKeySignalMessage(preKeyRaw(), 0x33)),
      'WIRE_VERSION_X3DH',
    );
    expectError(
      parsePreKeySignalMessage(buildRawPreKeySignalMessage(preKeyRaw(), 0x34)),
      'WIRE_VERSION_X3DH',
    );
  });

  it('accepts a version-3 SignalMessage and reports its version for the session layer [WP-WIRE-01]', () => {
    const parsed = expectOk(parseSignalMessage(buildRawSignalMessage(signalRaw(), { versionByte: 0x33 })));
    expect(parsed.messageVersion).toBe(3);
    expect(parsed.macInput[0]).toBe(0x33);
  });

  it('reads only the high nibble of the version byte [WP-WIRE-01]', () => {
    const parsed = expectOk(parseSignalMessage(buildRawSignalMessage(signalRaw(), { versionByte: 0x4f })));
    expect(parsed.messageVersion).toBe(4);
    expect(parsed.macInput[0]).toBe(0x4f);
  });
});

describe('lengths', () => {
  it('rejects a SignalMessage shorter than version byte + MAC [WP-WIRE-07]', () => {
    for (let length = 0; length < 9; length++) {
      const error = expectError(parseSignalMessage(new Uint8Array(length).fill(0x44)), 'WIRE_TOO_SHORT');
      expect(error.details).toEqual({ length, minimum: 9 });
    }
  });

  it('rejects an empty PreKeySignalMessage [WP-WIRE-07]', () => {
    expectError(parsePreKeySignalMessage(new Uint8Array(0)), 'WIRE_TOO_SHORT');
  });

  it('treats exactly version + MAC as an empty protobuf, so fields are missing [WP-WIRE-02]', () => {
    expectError(parseSignalMessage(buildRawSignalMessage([])), 'WIRE_MISSING_FIELD');
  });
});

// ---------------------------------------------------------------------------------------------
// Required and optional fields
// ---------------------------------------------------------------------------------------------

describe('required fields', () => {
  it('rejects a SignalMessage missing ratchet_key, counter or ciphertext [WP-WIRE-02] [WP-WIRE-07]', () => {
    for (const field of [1, 2, 4]) {
      const error = expectError(
        parseSignalMessage(buildRawSignalMessage(withField(signalRaw(), field))),
        'WIRE_MISSING_FIELD',
      );
      expect(error.details).toEqual({ field });
    }
  });

  it('defaults an absent previous_counter to 0 [WP-WIRE-02]', () => {
    const parsed = expectOk(
      parseSignalMessage(
        buildRawSignalMessage(withField(signalMessageRawFields({ ...SIGNAL_FIELDS, previousCounter: 9 }), 3)),
      ),
    );
    expect(parsed.previousCounter).toBe(0);
  });

  it('accepts an empty ciphertext as present [WP-WIRE-02]', () => {
    const parsed = expectOk(
      parseSignalMessage(signalMessage({ ...SIGNAL_FIELDS, ciphertext: new Uint8Array(0) })),
    );
    expect(parsed.ciphertext.length).toBe(0);
  });

  it('rejects a PreKey message missing base_key, identity_key, message or signed_pre_key_id [WP-WIRE-03] [WP-WIRE-07]', () => {
    for (const field of [2, 3, 4, 6]) {
      const error = expectError(
        parsePreKeySignalMessage(buildRawPreKeySignalMessage(withField(preKeyRaw(), field))),
        'WIRE_MISSING_FIELD',
      );
      expect(error.details).toEqual({ field });
    }
  });

  it('rejects a PreKey message without both Kyber fields [WP-WIRE-03]', () => {
    const noId = withField(preKeyRaw(), 7);
    const noCiphertext = withField(preKeyRaw(), 8);
    const neither = withField(noId, 8);
    for (const fields of [noId, noCiphertext, neither]) {
      expectError(parsePreKeySignalMessage(buildRawPreKeySignalMessage(fields)), 'WIRE_KYBER_MISSING');
    }
  });

  it('defaults an absent registration_id to 0 and an absent pre_key_id to none [WP-WIRE-03]', () => {
    const parsed = expectOk(
      parsePreKeySignalMessage(buildRawPreKeySignalMessage(withField(withField(preKeyRaw(), 5), 1))),
    );
    expect(parsed.registrationId).toBe(0);
    expect(parsed.preKeyId).toBeUndefined();
    expect('preKeyId' in parsed).toBe(false);
  });

  it('keeps the last value of a repeated field (protobuf semantics) [WP-WIRE-02] [WP-WIRE-03]', () => {
    const parsed = expectOk(
      parseSignalMessage(
        buildRawSignalMessage([
          ...signalRaw(),
          { kind: 'varint', field: 2, value: 7 },
          { kind: 'bytes', field: 4, value: fromHex('beef') },
          { kind: 'bytes', field: 1, value: ecKey(0x33) },
        ]),
      ),
    );
    expect(parsed.counter).toBe(7);
    expect(parsed.ciphertext).toEqual(fromHex('beef'));
    expect(parsed.ratchetKey).toEqual(ecKey(0x33));

    const preKey = expectOk(
      parsePreKeySignalMessage(
        buildRawPreKeySignalMessage([...preKeyRaw(), { kind: 'varint', field: 6, value: 99 }]),
      ),
    );
    expect(preKey.signedPreKeyId).toBe(99);
  });

  it('accepts fields in any order on parse [WP-WIRE-02]', () => {
    const parsed = expectOk(parseSignalMessage(buildRawSignalMessage([...signalRaw()].reverse())));
    expect(parsed.counter).toBe(300);
  });
});

// ---------------------------------------------------------------------------------------------
// Unknown fields
// ---------------------------------------------------------------------------------------------

describe('unknown fields', () => {
  const extras: readonly RawField[] = [
    { kind: 'bytes', field: 5, value: new Uint8Array(200).fill(7) }, // pq_ratchet (SPQR offer)
    { kind: 'bytes', field: 6, value: new Uint8Array(36).fill(1) }, // addresses
    { kind: 'varint', field: 9, value: 2n ** 64n - 1n },
    { kind: 'fixed32', field: 10, value: 0xdeadbeef },
    { kind: 'fixed64', field: 11, value: 2n ** 63n },
    { kind: 'bytes', field: 536_870_911, value: fromHex('00') }, // the largest field number
    { kind: 'tag', field: 12, wireType: 3 }, // a proto2 group with contents
    { kind: 'varint', field: 1, value: 5 }, // inside the group: ignored even with a known number
    { kind: 'tag', field: 13, wireType: 3 },
    { kind: 'tag', field: 13, wireType: 4 },
    { kind: 'tag', field: 12, wireType: 4 },
    { kind: 'varint', field: 5, value: 1 }, // field 5 with an unexpected wire type is still ignored
  ];

  it('ignores pq_ratchet, addresses and unknown fields of every wire type in a SignalMessage [WP-WIRE-04]', () => {
    const bytes = buildRawSignalMessage([...signalRaw().slice(0, 2), ...extras, ...signalRaw().slice(2)], {
      mac: MAC,
    });
    const parsed = expectOk(parseSignalMessage(bytes));
    expect(parsed.ratchetKey).toEqual(SIGNAL_FIELDS.ratchetKey);
    expect(parsed.counter).toBe(300);
    expect(parsed.ciphertext).toEqual(SIGNAL_FIELDS.ciphertext);
    // WP-DR-05 relies on this: the MAC input keeps the ignored fields, byte for byte.
    expect(parsed.macInput).toEqual(bytes.subarray(0, bytes.length - 8));
    expect(parsed.serialized).toEqual(bytes);
  });

  it('ignores unknown fields in a PreKey message [WP-WIRE-04]', () => {
    const bytes = buildRawPreKeySignalMessage([
      ...preKeyRaw(),
      ...extras.slice(2),
      { kind: 'bytes', field: 9, value: MAC },
    ]);
    const parsed = expectOk(parsePreKeySignalMessage(bytes));
    expect(parsed.signedPreKeyId).toBe(2);
  });

  it(`skips groups nested up to ${MAX_GROUP_DEPTH} deep and rejects deeper ones [WP-WIRE-04] [WP-WIRE-06]`, () => {
    const nest = (depth: number): RawField[] => [
      ...Array.from({ length: depth }, (): RawField => ({ kind: 'tag', field: 15, wireType: 3 })),
      ...Array.from({ length: depth }, (): RawField => ({ kind: 'tag', field: 15, wireType: 4 })),
    ];
    expectOk(parseSignalMessage(buildRawSignalMessage([...signalRaw(), ...nest(MAX_GROUP_DEPTH)])));
    expectError(
      parseSignalMessage(buildRawSignalMessage([...signalRaw(), ...nest(MAX_GROUP_DEPTH + 1)])),
      'WIRE_MALFORMED',
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Malformed protobuf
// ---------------------------------------------------------------------------------------------

describe('malformed protobuf', () => {
  const malformedSignal = (fields: RawField[]): void => {
    expectError(parseSignalMessage(buildRawSignalMessage(fields)), 'WIRE_MALFORMED');
  };

  it('rejects a known field with the wrong wire type [WP-WIRE-06]', () => {
    malformedSignal(withField(signalRaw(), 2, { kind: 'bytes', field: 2, value: fromHex('01') }));
    malformedSignal(withField(signalRaw(), 1, { kind: 'varint', field: 1, value: 5 }));
    malformedSignal(withField(signalRaw(), 3, { kind: 'fixed32', field: 3, value: 0 }));
    malformedSignal(withField(signalRaw(), 4, { kind: 'fixed64', field: 4, value: 0n }));
    const error = expectError(
      parsePreKeySignalMessage(
        buildRawPreKeySignalMessage(
          withField(preKeyRaw(), 6, { kind: 'bytes', field: 6, value: fromHex('02') }),
        ),
      ),
      'WIRE_MALFORMED',
    );
    expect(error.details).toMatchObject({ field: 6, wireType: 2 });
  });

  it('rejects a known field sent as a group [WP-WIRE-06]', () => {
    malformedSignal([
      ...signalRaw(),
      { kind: 'tag', field: 2, wireType: 3 },
      { kind: 'tag', field: 2, wireType: 4 },
    ]);
  });

  it('rejects a uint32 field above 0xffffffff instead of truncating it [WP-WIRE-06]', () => {
    malformedSignal(withField(signalRaw(), 2, { kind: 'varint', field: 2, value: 2 ** 32 }));
    malformedSignal(withField(signalRaw(), 3, { kind: 'varint', field: 3, value: 2n ** 64n - 1n }));
    expectError(
      parsePreKeySignalMessage(
        buildRawPreKeySignalMessage(
          withField(preKeyRaw(), 5, { kind: 'varint', field: 5, value: 2n ** 32n + 5n }),
        ),
      ),
      'WIRE_MALFORMED',
    );
  });

  it('accepts a non-minimal varint whose value fits in uint32 [WP-WIRE-06]', () => {
    // counter = 5 written in 10 bytes: 0x85 0x80 … 0x80 0x00.
    const counter: RawField = { kind: 'raw', bytes: fromHex('10' + '85' + '80'.repeat(8) + '00') };
    const parsed = expectOk(parseSignalMessage(buildRawSignalMessage(withField(signalRaw(), 2, counter))));
    expect(parsed.counter).toBe(5);
  });

  it('rejects a varint longer than 10 bytes or overflowing 64 bits [WP-WIRE-06]', () => {
    malformedSignal(
      withField(signalRaw(), 2, { kind: 'raw', bytes: fromHex('10' + '80'.repeat(10) + '00') }),
    );
    // Ten bytes whose last byte carries more than bit 63: a reader that wraps would see 0.
    malformedSignal(withField(signalRaw(), 2, { kind: 'raw', bytes: fromHex('10' + '80'.repeat(9) + '02') }));
    // The same inside an unknown field.
    malformedSignal([...signalRaw(), { kind: 'raw', bytes: fromHex('48' + '80'.repeat(9) + '7f') }]);
  });

  it('rejects a length that runs past the end, including one that only fits if truncated [WP-WIRE-06]', () => {
    malformedSignal([...signalRaw(), { kind: 'raw', bytes: fromHex('2a05' + '0000') }]);
    // Length 2^32 + 1 in a 5-byte varint: truncated to 32 bits it would read as 1.
    malformedSignal([...signalRaw(), { kind: 'raw', bytes: fromHex('2a' + '8180808010' + '00') }]);
    malformedSignal(withField(signalRaw(), 4, { kind: 'raw', bytes: fromHex('22' + '8280808010' + 'dead') }));
  });

  it('rejects a truncated varint [WP-WIRE-06]', () => {
    malformedSignal([...signalRaw(), { kind: 'raw', bytes: fromHex('10ff') }]);
    malformedSignal([...signalRaw(), { kind: 'raw', bytes: fromHex('ff') }]); // a truncated tag
  });

  it('rejects wire types 6 and 7, field number 0 and an oversized tag [WP-WIRE-06]', () => {
    malformedSignal([
      ...signalRaw(),
      { kind: 'tag', field: 20, wireType: 6 },
      { kind: 'raw', bytes: fromHex('00') },
    ]);
    malformedSignal([
      ...signalRaw(),
      { kind: 'tag', field: 20, wireType: 7 },
      { kind: 'raw', bytes: fromHex('00') },
    ]);
    malformedSignal([...signalRaw(), { kind: 'raw', bytes: fromHex('0000') }]); // field 0, varint 0
    malformedSignal([...signalRaw(), { kind: 'raw', bytes: fromHex('8080808010' + '00') }]); // tag > uint32
  });

  it('rejects a stray or mismatched end-group tag and an unterminated group [WP-WIRE-06]', () => {
    malformedSignal([...signalRaw(), { kind: 'tag', field: 12, wireType: 4 }]);
    malformedSignal([
      ...signalRaw(),
      { kind: 'tag', field: 12, wireType: 3 },
      { kind: 'tag', field: 13, wireType: 4 },
    ]);
    malformedSignal([
      ...signalRaw(),
      { kind: 'tag', field: 12, wireType: 3 },
      { kind: 'varint', field: 1, value: 1 },
    ]);
  });

  it('rejects truncated fixed-width fields [WP-WIRE-06]', () => {
    malformedSignal([...signalRaw(), { kind: 'raw', bytes: fromHex('4d' + '000000') }]); // fixed32, 3 bytes
    malformedSignal([...signalRaw(), { kind: 'raw', bytes: fromHex('49' + '00000000000000') }]); // fixed64, 7 bytes
  });

  it('rejects malformed protobuf in a PreKey message and in its inner message [WP-WIRE-06]', () => {
    expectError(
      parsePreKeySignalMessage(
        buildRawPreKeySignalMessage([...preKeyRaw(), { kind: 'raw', bytes: fromHex('42ff') }]),
      ),
      'WIRE_MALFORMED',
    );
    const badInner = buildRawSignalMessage([...signalRaw(), { kind: 'tag', field: 3, wireType: 7 }]);
    expectError(
      parsePreKeySignalMessage(
        buildRawPreKeySignalMessage(withField(preKeyRaw(), 4, { kind: 'bytes', field: 4, value: badInner })),
      ),
      'WIRE_MALFORMED',
    );
  });

  it('reports malformation before a missing field [WP-WIRE-06]', () => {
    malformedSignal([{ kind: 'raw', bytes: fromHex('10ff') }]);
  });
});

// ---------------------------------------------------------------------------------------------
// Key encodings inside messages
// ---------------------------------------------------------------------------------------------

describe('key fields', () => {
  it('rejects a ratchet key with a bad type byte or length [WP-KEYS-01]', () => {
    const badType = ecKey(0);
    badType[0] = 0x06;
    expectError(
      parseSignalMessage(
        buildRawSignalMessage(withField(signalRaw(), 1, { kind: 'bytes', field: 1, value: badType })),
      ),
      'KEY_BAD_TYPE',
    );
    expectError(
      parseSignalMessage(
        buildRawSignalMessage(
          withField(signalRaw(), 1, { kind: 'bytes', field: 1, value: ecKey(0).subarray(0, 32) }),
        ),
      ),
      'KEY_BAD_LENGTH',
    );
  });

  it('rejects a low-order ratchet key [WP-KEYS-03]', () => {
    const zero = new Uint8Array(33);
    zero[0] = 0x05;
    expectError(
      parseSignalMessage(
        buildRawSignalMessage(withField(signalRaw(), 1, { kind: 'bytes', field: 1, value: zero })),
      ),
      'KEY_LOW_ORDER',
    );
  });

  it('rejects a bad base key or identity key in a PreKey message [WP-KEYS-01]', () => {
    for (const field of [2, 3]) {
      expectError(
        parsePreKeySignalMessage(
          buildRawPreKeySignalMessage(
            withField(preKeyRaw(), field, { kind: 'bytes', field, value: new Uint8Array(34) }),
          ),
        ),
        'KEY_BAD_LENGTH',
      );
    }
  });

  it('rejects a Kyber ciphertext with a bad type byte or length [WP-KEYS-05]', () => {
    const badType = kemCiphertext(1);
    badType[0] = 0x05;
    expectError(
      parsePreKeySignalMessage(
        buildRawPreKeySignalMessage(withField(preKeyRaw(), 8, { kind: 'bytes', field: 8, value: badType })),
      ),
      'KEM_BAD_TYPE',
    );
    expectError(
      parsePreKeySignalMessage(
        buildRawPreKeySignalMessage(
          withField(preKeyRaw(), 8, { kind: 'bytes', field: 8, value: kemCiphertext(1).subarray(1) }),
        ),
      ),
      'KEM_BAD_LENGTH',
    );
  });

  it('propagates the inner SignalMessage error unchanged [WP-WIRE-02]', () => {
    const tooShort = fromHex('4400');
    expectError(
      parsePreKeySignalMessage(
        buildRawPreKeySignalMessage(withField(preKeyRaw(), 4, { kind: 'bytes', field: 4, value: tooShort })),
      ),
      'WIRE_TOO_SHORT',
    );
    const legacyInner = buildRawSignalMessage(signalRaw(), { versionByte: 0x22 });
    expectError(
      parsePreKeySignalMessage(
        buildRawPreKeySignalMessage(
          withField(preKeyRaw(), 4, { kind: 'bytes', field: 4, value: legacyInner }),
        ),
      ),
      'WIRE_VERSION_LEGACY',
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Robustness
// ---------------------------------------------------------------------------------------------

describe('robustness', () => {
  it('returns a typed error for every truncation of a valid message, never throws [WP-WIRE-06]', () => {
    const signal = signalMessage();
    for (let length = 0; length < signal.length; length++) {
      const result = parseSignalMessage(signal.subarray(0, length));
      expect(result.ok).toBe(false);
      expectTypedError(result);
    }
    const preKey = encodePreKeySignalMessage(PREKEY_FIELDS);
    for (let length = 0; length < preKey.length; length++) {
      const result = parsePreKeySignalMessage(preKey.subarray(0, length));
      expect(result.ok).toBe(false);
      expectTypedError(result);
    }
  });

  it('never throws on random bytes [WP-WIRE-06]', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), fc.boolean(), (tail, withVersion) => {
        const bytes = withVersion ? concatBytes(Uint8Array.of(0x44), tail) : tail;
        expectTypedError(parseSignalMessage(bytes));
        expectTypedError(parsePreKeySignalMessage(bytes));
      }),
      { numRuns: 2000 },
    );
  });

  it('never throws on single-byte mutations of valid messages [WP-WIRE-06]', () => {
    const signal = signalMessage();
    const preKey = encodePreKeySignalMessage(PREKEY_FIELDS);
    fc.assert(
      fc.property(fc.nat(), fc.integer({ min: 0, max: 255 }), (position, value) => {
        const mutatedSignal = signal.slice();
        mutatedSignal[position % signal.length] = value;
        expectTypedError(parseSignalMessage(mutatedSignal));
        const mutatedPreKey = preKey.slice();
        mutatedPreKey[position % preKey.length] = value;
        expectTypedError(parsePreKeySignalMessage(mutatedPreKey));
      }),
      { numRuns: 2000 },
    );
  });

  it('builds raw protobuf byte for byte as asked (test builder sanity)', () => {
    expect(
      toHex(
        encodeRawFields([
          { kind: 'varint', field: 2, value: 1 },
          { kind: 'tag', field: 1, wireType: 7 },
        ]),
      ),
    ).toBe('10010f');
  });
});
