/**
 * The `invalid` family: inputs that must be refused, each with the error code and rule Lockstep
 * returns, as scripts over one shared setup (`setups.setup-a`). Each test replays the honest steps
 * that lead to the bad input, then delivers it (or processes the bad bundle, or encrypts when it
 * must not).
 *
 * Mutations are single bit flips in each protobuf field of a SignalMessage and of a
 * PreKeySignalMessage, truncations, version bytes, removed fields, substituted keys (low-order,
 * non-canonical) and tampered bundles. For each one the generator insists that the code is one a
 * reader would accept for that field (listed in `expect`), so an implementation change that makes
 * an odd code appear fails the generator instead of slipping into a vector.
 * @module
 */
import { createCipheriv } from 'node:crypto';
import type { CryptoProvider } from '../../spec/crypto/provider.js';
import { computeMessageMac } from '../../spec/cipher.js';
import { MAX_FORWARD_JUMPS, MAX_UNACKNOWLEDGED_SESSION_AGE_MS } from '../../spec/constants.js';
import type { ErrorCode } from '../../spec/errors.js';
import { fromHex } from '../../spec/hex.js';
import { deriveMessageKeys, kdfCk } from '../../spec/kdf.js';
import { encodeSignalMessageBody, frameSignalMessage, parseSignalMessage } from '../../spec/wire.js';
import { bundleFromPreKeyState, type CiphertextMessage, type PreKeyBundle } from '../../impl/index.js';
import { generateParties, seedLabel } from './fixtures.js';
import { GENERATOR_SOURCE, VECTOR_FORMAT_VERSION, type FamilyFile, type VectorTest } from './format.js';
import {
  addGroupOrderToScalar,
  fieldSpan,
  flipBit,
  innerMessageFields,
  preKeyMessageFields,
  setByte,
  signalMessageFields,
  splice,
  type FieldSpan,
} from './mutate.js';
import { GeneratorExpectationError, recordScript, scriptTest, type ScriptRecorder } from './script.js';
import { setupJson, type PartyName, type Setup } from './setup.js';

const FAMILY = 'invalid';
const SETUP_ID = 'setup-a';

/** Bundle names in the shared setup. */
const BUNDLE_MAIN = 'bob-opk1-kyber1';
const BUNDLE_OPK1_LAST_RESORT = 'bob-opk1-kyber2';
const BUNDLE_OPK2_KYBER1 = 'bob-opk2-kyber1';

/** SignalMessage field numbers (WP-WIRE-02). */
const SM = { ratchetKey: 1, counter: 2, previousCounter: 3, ciphertext: 4 } as const;
/** PreKeySignalMessage field numbers (WP-WIRE-03). */
const PK = {
  preKeyId: 1,
  baseKey: 2,
  identityKey: 3,
  message: 4,
  registrationId: 5,
  signedPreKeyId: 6,
  kyberPreKeyId: 7,
  kyberCiphertext: 8,
} as const;

/** u-coordinates to substitute for a key (WP-KEYS-02, WP-KEYS-03). */
const U = {
  zero: '0000000000000000000000000000000000000000000000000000000000000000',
  one: '0100000000000000000000000000000000000000000000000000000000000000',
  order8: 'e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800',
  pMinus1: 'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
  p: 'edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
  pPlus1: 'eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
} as const;

const ecKey = (u: string): Uint8Array => fromHex(`05${u}`);

/** The shared setup: Bob holds one-time prekeys 1-2, one-time Kyber prekey 1 and last-resort Kyber prekey 2. */
function sharedSetup(c: CryptoProvider): {
  readonly json: ReturnType<typeof setupJson>;
  readonly setup: Setup;
} {
  const parties = generateParties(c, FAMILY, SETUP_ID, {
    alice: { oneTimePreKeys: 1, oneTimeKyberPreKeys: 0 },
    bob: { oneTimePreKeys: 2, oneTimeKyberPreKeys: 1 },
  });
  const bundles = {
    [BUNDLE_MAIN]: bundleFromPreKeyState(parties.bob, { preKeyId: 1, kyberPreKeyId: 1 }),
    [BUNDLE_OPK1_LAST_RESORT]: bundleFromPreKeyState(parties.bob, { preKeyId: 1, kyberPreKeyId: 2 }),
    [BUNDLE_OPK2_KYBER1]: bundleFromPreKeyState(parties.bob, { preKeyId: 2, kyberPreKeyId: 1 }),
  };
  return {
    json: setupJson(
      'Bob holds signed prekey 1, one-time prekeys 1 and 2, one-time Kyber prekey 1 and last-resort Kyber prekey 2.',
      parties,
      bundles,
    ),
    setup: { parties, bundles },
  };
}

/** Alice processes the main bundle and encrypts her first PreKey message; returns its ref. */
function prekeyPrefix(s: ScriptRecorder): number {
  s.processBundle('alice', BUNDLE_MAIN);
  return s.encrypt('alice', 'a1: first PreKey message');
}

/**
 * Bob accepts Alice's session and sends b1 and b2; Alice decrypts b1 (a DH step). b2 then sits on a
 * receiving chain Alice already has, at counter 1 (chain index 1).
 */
function whisperPrefix(s: ScriptRecorder): { readonly a1: number; readonly b1: number; readonly b2: number } {
  const a1 = prekeyPrefix(s);
  s.decrypt('bob', a1);
  const b1 = s.encrypt('bob', 'b1: first reply');
  const b2 = s.encrypt('bob', 'b2: second reply');
  s.decrypt('alice', b1);
  return { a1, b1, b2 };
}

/** Delivers a mutated copy of message `ref` to `to`, expecting one of `expect`. */
function deliverMutated(
  s: ScriptRecorder,
  to: PartyName,
  ref: number,
  bytes: Uint8Array,
  mutation: string,
  expect: readonly ErrorCode[],
): void {
  const original = s.message(ref);
  s.decryptBytes(to, { type: original.type, bytes }, { derivedFrom: ref, mutation, expect });
}

/** Removes one field (tag, prefix and value) from a message. */
const withoutField = (bytes: Uint8Array, span: FieldSpan): Uint8Array =>
  splice(bytes, span.tagStart, span.valueEnd, new Uint8Array(0));

/** Replaces a length-delimited field's value with bytes of the same length. */
function replaceValue(bytes: Uint8Array, span: FieldSpan, value: Uint8Array): Uint8Array {
  if (value.length !== span.valueEnd - span.valueStart)
    throw new GeneratorExpectationError('replacement changes the length');
  return splice(bytes, span.valueStart, span.valueEnd, value);
}

/** A SignalMessage case: mutate b2 (on an existing chain at Alice) and deliver it to Alice. */
function signalCase(
  mutation: string,
  expect: readonly ErrorCode[],
  mutate: (b2: Uint8Array) => Uint8Array,
): Build {
  return (s) => {
    const { b2 } = whisperPrefix(s);
    deliverMutated(s, 'alice', b2, mutate(s.message(b2).bytes), mutation, expect);
  };
}

/** A PreKeySignalMessage case: mutate a1 and deliver it to Bob, who has no session yet. */
function preKeyCase(
  mutation: string,
  expect: readonly ErrorCode[],
  mutate: (a1: Uint8Array) => Uint8Array,
): Build {
  return (s) => {
    const a1 = prekeyPrefix(s);
    deliverMutated(s, 'bob', a1, mutate(s.message(a1).bytes), mutation, expect);
  };
}

/** A bundle case: Alice processes a tampered copy of the main bundle. */
function bundleCase(
  expect: readonly ErrorCode[],
  comment: string,
  tamper: (b: PreKeyBundle) => PreKeyBundle,
): Build {
  return (s, setup) => {
    const bundle = setup.bundles[BUNDLE_MAIN];
    if (bundle === undefined) throw new GeneratorExpectationError('main bundle missing');
    s.processBundle('alice', tamper(bundle), { comment, expect });
  };
}

const sm = (bytes: Uint8Array, field: number): FieldSpan => fieldSpan(signalMessageFields(bytes), field);
const pk = (bytes: Uint8Array, field: number): FieldSpan => fieldSpan(preKeyMessageFields(bytes), field);
const inner = (bytes: Uint8Array, field: number): FieldSpan =>
  fieldSpan(innerMessageFields(bytes).fields, field);

/** Re-encodes b2 with another counter, keeping its (now wrong) MAC. */
function withCounter(bytes: Uint8Array, counter: number): Uint8Array {
  const parsed = parseSignalMessage(bytes);
  if (!parsed.ok) throw new GeneratorExpectationError('b2 does not parse');
  return frameSignalMessage(encodeSignalMessageBody({ ...parsed.value, counter }), parsed.value.mac);
}

/**
 * A SignalMessage from Bob with a correct MAC whose body does not decrypt (WP-DR-04): built with
 * Bob's next message keys (his sending chain after b1 and b2), so only the body is wrong.
 */
function badBodyCase(mutation: string, body: (cipherKey: Uint8Array, iv: Uint8Array) => Uint8Array): Build {
  return (s, _setup, c) => {
    whisperPrefix(s);
    const bob = s.state('bob');
    const session = bob.record.current;
    if (session === null) throw new GeneratorExpectationError('Bob has no session');
    const keys = deriveMessageKeys(c, kdfCk(c, session.senderChainKey.key).messageKeySeed);
    const encoded = encodeSignalMessageBody({
      ratchetKey: session.senderRatchetKey.publicKey,
      counter: session.senderChainKey.index,
      previousCounter: session.previousCounter,
      ciphertext: body(keys.cipherKey, keys.iv),
    });
    const mac = computeMessageMac(
      c,
      keys.macKey,
      session.localIdentityKey,
      session.remoteIdentityKey,
      encoded,
    );
    const message: CiphertextMessage = { type: 'whisper', bytes: frameSignalMessage(encoded, mac) };
    s.decryptBytes('alice', message, { mutation, expect: ['BODY_DECRYPT_FAILED'] });
  };
}

/** AES-256-CBC without padding (Node's cipher with auto-padding off): a body whose padding is invalid. */
function rawCbc(key: Uint8Array, iv: Uint8Array, blocks: Uint8Array): Uint8Array {
  const cipher = createCipheriv('aes-256-cbc', key, iv).setAutoPadding(false);
  return Uint8Array.from([...cipher.update(blocks), ...cipher.final()]);
}

type Build = (s: ScriptRecorder, setup: Setup, c: CryptoProvider) => void;

interface InvalidCase {
  readonly id: string;
  readonly comment: string;
  readonly rules: readonly string[];
  readonly build: Build;
}

const MAC = ['MAC_INVALID'] as const;
const WIRE_SM = ['WP-WIRE-02'];
const WIRE_PK = ['WP-WIRE-03'];
const TRUNCATED: readonly ErrorCode[] = [
  'WIRE_TOO_SHORT',
  'WIRE_MALFORMED',
  'WIRE_MISSING_FIELD',
  'MAC_INVALID',
];

/** The cases, in file order. Ids are never reused: add new cases at the end. */
const CASES: readonly InvalidCase[] = [
  // --- SignalMessage: MAC and each field ---------------------------------------------------------
  {
    id: 'invalid-001',
    comment: 'SignalMessage with one MAC bit flipped.',
    rules: ['WP-DR-05', 'WP-DR-11'],
    build: signalCase('flip bit 0 of the last MAC byte', MAC, (b) => flipBit(b, b.length - 1, 0)),
  },
  {
    id: 'invalid-002',
    comment:
      'SignalMessage ratchet_key: a low bit of u flipped; the key is new, so a DH step runs (its draw is consumed) and the MAC fails.',
    rules: [...WIRE_SM, 'WP-DR-06', 'WP-DR-11'],
    build: signalCase('flip bit 0 of ratchet_key byte 1 (first byte of u)', MAC, (b) =>
      flipBit(b, sm(b, SM.ratchetKey).valueStart + 1, 0),
    ),
  },
  {
    id: 'invalid-003',
    comment: 'SignalMessage ratchet_key: type byte 0x05 flipped to 0x04.',
    rules: [...WIRE_SM],
    build: signalCase('flip bit 0 of ratchet_key byte 0 (type byte)', ['KEY_BAD_TYPE'], (b) =>
      flipBit(b, sm(b, SM.ratchetKey).valueStart, 0),
    ),
  },
  {
    id: 'invalid-004',
    comment: 'SignalMessage ratchet_key: the top bit of u set (non-canonical).',
    rules: [...WIRE_SM],
    build: signalCase('flip bit 7 of ratchet_key byte 32 (last byte of u)', ['KEY_NON_CANONICAL'], (b) =>
      flipBit(b, sm(b, SM.ratchetKey).valueStart + 32, 7),
    ),
  },
  {
    id: 'invalid-005',
    comment:
      'SignalMessage ratchet_key: the length prefix 33 flipped to 32; the rest of the protobuf no longer parses.',
    rules: [...WIRE_SM],
    build: signalCase(
      'flip bit 0 of the ratchet_key length prefix',
      ['WIRE_MALFORMED', 'KEY_BAD_LENGTH', 'WIRE_MISSING_FIELD'],
      (b) => flipBit(b, sm(b, SM.ratchetKey).prefixStart, 0),
    ),
  },
  {
    id: 'invalid-006',
    comment:
      'SignalMessage counter 1 flipped to 0: counter 0 of this chain was already used, so it is a duplicate.',
    rules: [...WIRE_SM, 'WP-DR-10'],
    build: signalCase('flip bit 0 of the counter varint (1 → 0)', ['DUPLICATE_MESSAGE'], (b) =>
      flipBit(b, sm(b, SM.counter).valueStart, 0),
    ),
  },
  {
    id: 'invalid-007',
    comment:
      'SignalMessage counter 1 flipped to 3: the key for counter 3 is derived, the MAC fails, nothing is stored.',
    rules: [...WIRE_SM, 'WP-DR-11'],
    build: signalCase('flip bit 1 of the counter varint (1 → 3)', MAC, (b) =>
      flipBit(b, sm(b, SM.counter).valueStart, 1),
    ),
  },
  {
    id: 'invalid-008',
    comment: 'SignalMessage previous_counter flipped: covered by the MAC.',
    rules: [...WIRE_SM],
    build: signalCase('flip bit 0 of the previous_counter varint', MAC, (b) =>
      flipBit(b, sm(b, SM.previousCounter).valueStart, 0),
    ),
  },
  {
    id: 'invalid-009',
    comment: 'SignalMessage ciphertext: first byte flipped; covered by the MAC.',
    rules: [...WIRE_SM],
    build: signalCase('flip bit 0 of ciphertext byte 0', MAC, (b) =>
      flipBit(b, sm(b, SM.ciphertext).valueStart, 0),
    ),
  },
  {
    id: 'invalid-010',
    comment: 'SignalMessage ciphertext: last byte flipped; covered by the MAC.',
    rules: [...WIRE_SM],
    build: signalCase('flip bit 7 of the last ciphertext byte', MAC, (b) =>
      flipBit(b, sm(b, SM.ciphertext).valueEnd - 1, 7),
    ),
  },
  {
    id: 'invalid-011',
    comment: 'SignalMessage ciphertext: the length prefix changed, so the field runs past the protobuf.',
    rules: [...WIRE_SM, 'WP-WIRE-06'],
    build: signalCase(
      'flip bit 4 of the ciphertext length prefix',
      ['WIRE_MALFORMED', 'MAC_INVALID', 'WIRE_MISSING_FIELD'],
      (b) => flipBit(b, sm(b, SM.ciphertext).prefixStart, 4),
    ),
  },
  {
    id: 'invalid-012',
    comment:
      'SignalMessage counter tag 0x10 flipped to 0x11: a known field with wire type 1 (64-bit) is malformed.',
    rules: [...WIRE_SM, 'WP-WIRE-06'],
    build: signalCase('flip bit 0 of the counter tag', ['WIRE_MALFORMED'], (b) =>
      flipBit(b, sm(b, SM.counter).tagStart, 0),
    ),
  },
  // --- SignalMessage: truncation, version, structure -----------------------------------------------
  ...[0, 1, 8, 9, 20].map((length, i): InvalidCase => ({
    id: `invalid-0${13 + i}`,
    comment: `SignalMessage truncated to ${length} byte(s).`,
    rules: [...WIRE_SM],
    build: signalCase(`truncate to ${length} bytes`, TRUNCATED, (b) => b.slice(0, length)),
  })),
  {
    id: 'invalid-018',
    comment: 'SignalMessage with its last byte cut: the MAC window shifts into the ciphertext.',
    rules: [...WIRE_SM],
    build: signalCase('drop the last byte', TRUNCATED, (b) => b.slice(0, b.length - 1)),
  },
  {
    id: 'invalid-019',
    comment: 'SignalMessage without its MAC (8 bytes cut).',
    rules: [...WIRE_SM],
    build: signalCase('drop the 8-byte MAC', TRUNCATED, (b) => b.slice(0, b.length - 8)),
  },
  {
    id: 'invalid-020',
    comment: 'SignalMessage with the legacy version byte 0x22.',
    rules: ['WP-WIRE-01'],
    build: signalCase('version byte 0x44 → 0x22', ['WIRE_VERSION_LEGACY'], (b) => setByte(b, 0, 0x22)),
  },
  {
    id: 'invalid-021',
    comment: 'SignalMessage with the unknown version byte 0x55.',
    rules: ['WP-WIRE-01'],
    build: signalCase('version byte 0x44 → 0x55', ['WIRE_VERSION_UNKNOWN'], (b) => setByte(b, 0, 0x55)),
  },
  {
    id: 'invalid-022',
    comment: 'SignalMessage with version byte 0x33: parses as version 3, refused by the version-4 session.',
    rules: ['WP-WIRE-01'],
    build: signalCase('version byte 0x44 → 0x33', ['SESSION_VERSION_MISMATCH'], (b) => setByte(b, 0, 0x33)),
  },
  {
    id: 'invalid-023',
    comment:
      'SignalMessage with version byte 0x43: the low nibble is ignored when parsing, but the MAC covers the byte.',
    rules: ['WP-WIRE-01', 'WP-DR-05'],
    build: signalCase('version byte 0x44 → 0x43', MAC, (b) => setByte(b, 0, 0x43)),
  },
  ...(
    [
      ['ratchet_key', SM.ratchetKey],
      ['counter', SM.counter],
      ['ciphertext', SM.ciphertext],
    ] as const
  ).map(([name, field], i): InvalidCase => ({
    id: `invalid-0${24 + i}`,
    comment: `SignalMessage without its required ${name} field.`,
    rules: [...WIRE_SM],
    build: signalCase(`remove field ${field} (${name})`, ['WIRE_MISSING_FIELD'], (b) =>
      withoutField(b, sm(b, field)),
    ),
  })),
  {
    id: 'invalid-027',
    comment: 'SignalMessage whose protobuf is not a valid encoding (a length running past the end).',
    rules: ['WP-WIRE-06'],
    build: signalCase('protobuf replaced by 0a 7f (length 127, no bytes)', ['WIRE_MALFORMED'], (b) =>
      Uint8Array.from([b[0] ?? 0x44, 0x0a, 0x7f, ...b.slice(b.length - 8)]),
    ),
  },
  // --- SignalMessage: substituted keys, counters, replays ------------------------------------------
  ...(
    [
      ['u = 0', U.zero, 'KEY_LOW_ORDER', 'WP-KEYS-03'],
      ['u = 1', U.one, 'KEY_LOW_ORDER', 'WP-KEYS-03'],
      ['u of a point of order 8', U.order8, 'KEY_LOW_ORDER', 'WP-KEYS-03'],
      ['u = p − 1 (order 2)', U.pMinus1, 'KEY_LOW_ORDER', 'WP-KEYS-03'],
      ['u = p (non-canonical 0)', U.p, 'KEY_NON_CANONICAL', 'WP-KEYS-02'],
      ['u = p + 1 (non-canonical 1)', U.pPlus1, 'KEY_NON_CANONICAL', 'WP-KEYS-02'],
    ] as const
  ).map(([label, u, code, rule], i): InvalidCase => ({
    id: `invalid-0${28 + i}`,
    comment: `SignalMessage ratchet_key replaced by ${label}.`,
    rules: [rule, 'WP-WIRE-02'],
    build: signalCase(`ratchet_key replaced by 05 ‖ ${u}`, [code], (b) =>
      replaceValue(b, sm(b, SM.ratchetKey), ecKey(u)),
    ),
  })),
  {
    id: 'invalid-034',
    comment: `SignalMessage counter set to ${MAX_FORWARD_JUMPS + 2} on a chain at index 1: ${MAX_FORWARD_JUMPS + 1} ahead, refused before any key is derived.`,
    rules: ['WP-DR-07'],
    build: signalCase(
      `counter 1 → ${MAX_FORWARD_JUMPS + 2} (re-encoded, MAC kept)`,
      ['FORWARD_JUMP_TOO_FAR'],
      (b) => withCounter(b, MAX_FORWARD_JUMPS + 2),
    ),
  },
  {
    id: 'invalid-035',
    comment: `SignalMessage counter set to ${MAX_FORWARD_JUMPS + 1} on a chain at index 1: exactly ${MAX_FORWARD_JUMPS} ahead passes the limit, the keys are derived, the MAC fails.`,
    rules: ['WP-DR-07', 'WP-DR-11'],
    build: signalCase(`counter 1 → ${MAX_FORWARD_JUMPS + 1} (re-encoded, MAC kept)`, MAC, (b) =>
      withCounter(b, MAX_FORWARD_JUMPS + 1),
    ),
  },
  {
    id: 'invalid-036',
    comment: 'A SignalMessage delivered twice: the second copy is a duplicate.',
    rules: ['WP-DR-10', 'WP-REC-03'],
    build: (s) => {
      const { b1 } = whisperPrefix(s);
      s.decrypt('alice', b1, { comment: 'b1 again', expect: ['DUPLICATE_MESSAGE'] });
    },
  },
  {
    id: 'invalid-037',
    comment:
      'A PreKeySignalMessage delivered again after it decrypted: matched by base key, then a duplicate.',
    rules: ['WP-DR-10', 'WP-PQXDH-10'],
    build: (s) => {
      const a1 = prekeyPrefix(s);
      s.decrypt('bob', a1);
      s.decrypt('bob', a1, { comment: 'a1 again', expect: ['DUPLICATE_MESSAGE'] });
    },
  },
  {
    id: 'invalid-038',
    comment: 'SignalMessage with a valid MAC whose body length (17) is not a multiple of the AES block.',
    rules: ['WP-DR-04'],
    build: badBodyCase('crafted with the right keys: 17-byte ciphertext', (key, iv) =>
      rawCbc(key, iv, new Uint8Array(32)).slice(0, 17),
    ),
  },
  {
    id: 'invalid-039',
    comment: 'SignalMessage with a valid MAC whose body decrypts to invalid PKCS#7 padding (last byte 0x00).',
    rules: ['WP-DR-04'],
    build: badBodyCase(
      'crafted with the right keys: one block of zeros encrypted without padding',
      (key, iv) => rawCbc(key, iv, new Uint8Array(16)),
    ),
  },
  // --- PreKeySignalMessage: each field ----------------------------------------------------------------
  {
    id: 'invalid-040',
    comment:
      'PreKeySignalMessage base_key: a low bit of u flipped; the session derives other keys and the inner MAC fails.',
    rules: [...WIRE_PK, 'WP-PQXDH-03', 'WP-REC-04'],
    build: preKeyCase('flip bit 0 of base_key byte 1', MAC, (b) =>
      flipBit(b, pk(b, PK.baseKey).valueStart + 1, 0),
    ),
  },
  {
    id: 'invalid-041',
    comment: 'PreKeySignalMessage base_key: type byte flipped.',
    rules: [...WIRE_PK],
    build: preKeyCase('flip bit 0 of base_key byte 0 (type byte)', ['KEY_BAD_TYPE'], (b) =>
      flipBit(b, pk(b, PK.baseKey).valueStart, 0),
    ),
  },
  {
    id: 'invalid-042',
    comment: 'PreKeySignalMessage base_key: top bit of u set.',
    rules: [...WIRE_PK],
    build: preKeyCase('flip bit 7 of base_key byte 32', ['KEY_NON_CANONICAL'], (b) =>
      flipBit(b, pk(b, PK.baseKey).valueStart + 32, 7),
    ),
  },
  {
    id: 'invalid-043',
    comment: 'PreKeySignalMessage base_key replaced by a low-order point (order 8).',
    rules: [...WIRE_PK, 'WP-KEYS-03'],
    build: preKeyCase(`base_key replaced by 05 ‖ ${U.order8}`, ['KEY_LOW_ORDER'], (b) =>
      replaceValue(b, pk(b, PK.baseKey), ecKey(U.order8)),
    ),
  },
  {
    id: 'invalid-044',
    comment: 'PreKeySignalMessage base_key replaced by u = p (non-canonical).',
    rules: [...WIRE_PK, 'WP-KEYS-02'],
    build: preKeyCase(`base_key replaced by 05 ‖ ${U.p}`, ['KEY_NON_CANONICAL'], (b) =>
      replaceValue(b, pk(b, PK.baseKey), ecKey(U.p)),
    ),
  },
  {
    id: 'invalid-045',
    comment:
      'PreKeySignalMessage identity_key: a low bit of u flipped; DH(IK_A, SPK_B) and the MAC input change.',
    rules: [...WIRE_PK, 'WP-DR-05'],
    build: preKeyCase('flip bit 0 of identity_key byte 1', MAC, (b) =>
      flipBit(b, pk(b, PK.identityKey).valueStart + 1, 0),
    ),
  },
  {
    id: 'invalid-046',
    comment: 'PreKeySignalMessage identity_key: type byte flipped.',
    rules: [...WIRE_PK],
    build: preKeyCase('flip bit 0 of identity_key byte 0 (type byte)', ['KEY_BAD_TYPE'], (b) =>
      flipBit(b, pk(b, PK.identityKey).valueStart, 0),
    ),
  },
  {
    id: 'invalid-047',
    comment: 'PreKeySignalMessage pre_key_id 1 flipped to 0, a one-time prekey Bob does not hold.',
    rules: [...WIRE_PK, 'WP-PQXDH-06'],
    build: preKeyCase('flip bit 0 of pre_key_id (1 → 0)', ['UNKNOWN_ONE_TIME_PREKEY'], (b) =>
      flipBit(b, pk(b, PK.preKeyId).valueStart, 0),
    ),
  },
  {
    id: 'invalid-048',
    comment:
      'PreKeySignalMessage pre_key_id 1 changed to 2, a one-time prekey Bob holds: DH(EK_A, OPK_B) differs, the MAC fails.',
    rules: [...WIRE_PK, 'WP-PQXDH-03'],
    build: preKeyCase('flip bits 0 and 1 of pre_key_id (1 → 2)', MAC, (b) =>
      flipBit(flipBit(b, pk(b, PK.preKeyId).valueStart, 0), pk(b, PK.preKeyId).valueStart, 1),
    ),
  },
  {
    id: 'invalid-049',
    comment: 'PreKeySignalMessage signed_pre_key_id 1 flipped to 0, a signed prekey Bob does not hold.',
    rules: [...WIRE_PK, 'WP-PQXDH-05'],
    build: preKeyCase('flip bit 0 of signed_pre_key_id (1 → 0)', ['UNKNOWN_SIGNED_PREKEY'], (b) =>
      flipBit(b, pk(b, PK.signedPreKeyId).valueStart, 0),
    ),
  },
  {
    id: 'invalid-050',
    comment: 'PreKeySignalMessage kyber_pre_key_id 1 flipped to 0, a Kyber prekey Bob does not hold.',
    rules: [...WIRE_PK, 'WP-PQXDH-07'],
    build: preKeyCase('flip bit 0 of kyber_pre_key_id (1 → 0)', ['UNKNOWN_KYBER_PREKEY'], (b) =>
      flipBit(b, pk(b, PK.kyberPreKeyId).valueStart, 0),
    ),
  },
  {
    id: 'invalid-051',
    comment:
      'PreKeySignalMessage kyber_pre_key_id 1 changed to 2 (Bob’s last-resort key): decapsulation with the wrong key gives an unrelated secret, the MAC fails.',
    rules: [...WIRE_PK, 'WP-KEYS-08'],
    build: preKeyCase('flip bits 0 and 1 of kyber_pre_key_id (1 → 2)', MAC, (b) =>
      flipBit(flipBit(b, pk(b, PK.kyberPreKeyId).valueStart, 0), pk(b, PK.kyberPreKeyId).valueStart, 1),
    ),
  },
  {
    id: 'invalid-052',
    comment:
      'PreKeySignalMessage kyber_ciphertext: a bit of the ciphertext flipped; implicit rejection gives an unrelated secret, the MAC fails.',
    rules: [...WIRE_PK, 'WP-KEYS-08'],
    build: preKeyCase('flip bit 0 of kyber_ciphertext byte 100', MAC, (b) =>
      flipBit(b, pk(b, PK.kyberCiphertext).valueStart + 100, 0),
    ),
  },
  {
    id: 'invalid-053',
    comment: 'PreKeySignalMessage kyber_ciphertext: type byte 0x08 flipped to 0x09.',
    rules: [...WIRE_PK, 'WP-KEYS-05'],
    build: preKeyCase('flip bit 0 of kyber_ciphertext byte 0 (type byte)', ['KEM_BAD_TYPE'], (b) =>
      flipBit(b, pk(b, PK.kyberCiphertext).valueStart, 0),
    ),
  },
  {
    id: 'invalid-054',
    comment: 'PreKeySignalMessage inner message: a ciphertext bit flipped.',
    rules: [...WIRE_PK, 'WP-REC-04'],
    build: preKeyCase('flip bit 0 of the inner ciphertext byte 0', MAC, (b) =>
      flipBit(b, inner(b, SM.ciphertext).valueStart, 0),
    ),
  },
  {
    id: 'invalid-055',
    comment: 'PreKeySignalMessage inner message: a MAC bit flipped.',
    rules: [...WIRE_PK, 'WP-DR-05'],
    build: preKeyCase('flip bit 0 of the inner MAC’s last byte', MAC, (b) =>
      flipBit(b, pk(b, PK.message).valueEnd - 1, 0),
    ),
  },
  {
    id: 'invalid-056',
    comment: 'PreKeySignalMessage inner message: the counter flipped (0 → 1).',
    rules: [...WIRE_PK, 'WP-DR-05'],
    build: preKeyCase('flip bit 0 of the inner counter', MAC, (b) =>
      flipBit(b, inner(b, SM.counter).valueStart, 0),
    ),
  },
  {
    id: 'invalid-057',
    comment: 'PreKeySignalMessage inner message: the ratchet key type byte flipped.',
    rules: [...WIRE_PK, 'WP-KEYS-01'],
    build: preKeyCase('flip bit 0 of the inner ratchet_key type byte', ['KEY_BAD_TYPE'], (b) =>
      flipBit(b, inner(b, SM.ratchetKey).valueStart, 0),
    ),
  },
  {
    id: 'invalid-058',
    comment: 'PreKeySignalMessage inner message with the legacy version byte 0x22.',
    rules: [...WIRE_PK, 'WP-WIRE-01'],
    build: preKeyCase('inner version byte 0x44 → 0x22', ['WIRE_VERSION_LEGACY'], (b) =>
      setByte(b, pk(b, PK.message).valueStart, 0x22),
    ),
  },
  // --- PreKeySignalMessage: truncation, version, missing fields ------------------------------------
  ...[0, 1, 40].map((length, i): InvalidCase => ({
    id: `invalid-0${59 + i}`,
    comment: `PreKeySignalMessage truncated to ${length} byte(s).`,
    rules: [...WIRE_PK],
    build: preKeyCase(`truncate to ${length} bytes`, TRUNCATED, (b) => b.slice(0, length)),
  })),
  {
    id: 'invalid-062',
    comment: 'PreKeySignalMessage with its last byte cut (inside kyber_ciphertext).',
    rules: [...WIRE_PK, 'WP-WIRE-06'],
    build: preKeyCase('drop the last byte', TRUNCATED, (b) => b.slice(0, b.length - 1)),
  },
  ...(
    [
      [0x33, 'WIRE_VERSION_X3DH', 'an X3DH (version 3) PreKey message'],
      [0x22, 'WIRE_VERSION_LEGACY', 'a legacy version'],
      [0x55, 'WIRE_VERSION_UNKNOWN', 'an unknown version'],
    ] as const
  ).map(([version, code, label], i): InvalidCase => ({
    id: `invalid-0${63 + i}`,
    comment: `PreKeySignalMessage with version byte 0x${version.toString(16)}: ${label}.`,
    rules: ['WP-WIRE-01'],
    build: preKeyCase(`version byte 0x44 → 0x${version.toString(16)}`, [code], (b) => setByte(b, 0, version)),
  })),
  ...(
    [
      [[PK.kyberPreKeyId], 'kyber_pre_key_id'],
      [[PK.kyberCiphertext], 'kyber_ciphertext'],
      [[PK.kyberPreKeyId, PK.kyberCiphertext], 'both Kyber fields'],
    ] as const
  ).map(([fields, label], i): InvalidCase => ({
    id: `invalid-0${66 + i}`,
    comment: `PreKeySignalMessage without ${label}: version 4 requires both Kyber fields.`,
    rules: [...WIRE_PK],
    build: preKeyCase(`remove field(s) ${fields.join(' and ')} (${label})`, ['WIRE_KYBER_MISSING'], (b) =>
      [...fields].reverse().reduce((bytes, field) => withoutField(bytes, pk(bytes, field)), b),
    ),
  })),
  ...(
    [
      [PK.baseKey, 'base_key'],
      [PK.identityKey, 'identity_key'],
      [PK.message, 'message'],
      [PK.signedPreKeyId, 'signed_pre_key_id'],
    ] as const
  ).map(([field, label], i): InvalidCase => ({
    id: `invalid-0${69 + i}`,
    comment: `PreKeySignalMessage without its required ${label} field.`,
    rules: [...WIRE_PK],
    build: preKeyCase(`remove field ${field} (${label})`, ['WIRE_MISSING_FIELD'], (b) =>
      withoutField(b, pk(b, field)),
    ),
  })),
  // --- Prekeys used up --------------------------------------------------------------------------------
  {
    id: 'invalid-073',
    comment:
      'A second session from a stale bundle naming one-time prekey 1, already consumed by the first session.',
    rules: ['WP-PQXDH-06'],
    build: (s) => {
      const a1 = prekeyPrefix(s);
      s.decrypt('bob', a1, { comment: 'consumes one-time prekey 1 and one-time Kyber prekey 1' });
      s.processBundle('alice', BUNDLE_OPK1_LAST_RESORT, {
        comment: 'stale bundle: one-time prekey 1, last-resort Kyber prekey 2',
      });
      const a2 = s.encrypt('alice', 'second session');
      s.decrypt('bob', a2, { expect: ['UNKNOWN_ONE_TIME_PREKEY'] });
    },
  },
  {
    id: 'invalid-074',
    comment:
      'A second session from a stale bundle naming one-time Kyber prekey 1, already consumed by the first session.',
    rules: ['WP-PQXDH-07'],
    build: (s) => {
      const a1 = prekeyPrefix(s);
      s.decrypt('bob', a1, { comment: 'consumes one-time prekey 1 and one-time Kyber prekey 1' });
      s.processBundle('alice', BUNDLE_OPK2_KYBER1, {
        comment: 'stale bundle: one-time prekey 2, one-time Kyber prekey 1',
      });
      const a2 = s.encrypt('alice', 'second session');
      s.decrypt('bob', a2, { expect: ['UNKNOWN_KYBER_PREKEY'] });
    },
  },
  // --- Bundles ------------------------------------------------------------------------------------------
  {
    id: 'invalid-075',
    comment: 'Bundle whose signed-prekey signature has one bit flipped.',
    rules: ['WP-PQXDH-01', 'WP-KEYS-07'],
    build: bundleCase(
      ['BUNDLE_SIGNATURE_INVALID'],
      'signed_pre_key_signature: bit 0 of byte 10 flipped',
      (b) => ({
        ...b,
        signedPreKeySignature: flipBit(b.signedPreKeySignature, 10, 0),
      }),
    ),
  },
  {
    id: 'invalid-076',
    comment: 'Bundle whose Kyber-prekey signature has one bit flipped.',
    rules: ['WP-PQXDH-01', 'WP-KEYS-07'],
    build: bundleCase(
      ['BUNDLE_SIGNATURE_INVALID'],
      'kyber_pre_key_signature: bit 0 of byte 40 flipped',
      (b) => ({
        ...b,
        kyberPreKeySignature: flipBit(b.kyberPreKeySignature ?? new Uint8Array(64), 40, 0),
      }),
    ),
  },
  {
    id: 'invalid-077',
    comment:
      'Bundle whose signed-prekey signature carries s + L (non-canonical scalar, same group equation): refused, unlike libsignal (WP-KEYS-07 deviation).',
    rules: ['WP-PQXDH-01', 'WP-KEYS-07'],
    build: bundleCase(['BUNDLE_SIGNATURE_INVALID'], 'signed_pre_key_signature: s replaced by s + L', (b) => ({
      ...b,
      signedPreKeySignature: addGroupOrderToScalar(b.signedPreKeySignature),
    })),
  },
  {
    id: 'invalid-078',
    comment:
      'Bundle whose Kyber-prekey signature carries s + L: refused (WP-KEYS-07 deviation from libsignal).',
    rules: ['WP-PQXDH-01', 'WP-KEYS-07'],
    build: bundleCase(['BUNDLE_SIGNATURE_INVALID'], 'kyber_pre_key_signature: s replaced by s + L', (b) => ({
      ...b,
      kyberPreKeySignature: addGroupOrderToScalar(b.kyberPreKeySignature ?? new Uint8Array(64)),
    })),
  },
  {
    id: 'invalid-079',
    comment: 'Bundle without a Kyber prekey.',
    rules: ['WP-PQXDH-02'],
    build: bundleCase(['BUNDLE_KYBER_MISSING'], 'Kyber prekey fields removed', (b) => ({
      ...b,
      kyberPreKeyId: null,
      kyberPreKey: null,
      kyberPreKeySignature: null,
    })),
  },
  {
    id: 'invalid-080',
    comment: 'Bundle whose signed prekey is a low-order point (checked before its signature).',
    rules: ['WP-KEYS-03'],
    build: bundleCase(['KEY_LOW_ORDER'], `signed_pre_key replaced by 05 ‖ ${U.order8}`, (b) => ({
      ...b,
      signedPreKey: ecKey(U.order8),
    })),
  },
  {
    id: 'invalid-081',
    comment: 'Bundle whose one-time prekey is a low-order point.',
    rules: ['WP-KEYS-03'],
    build: bundleCase(['KEY_LOW_ORDER'], `pre_key replaced by 05 ‖ ${U.zero}`, (b) => ({
      ...b,
      preKey: ecKey(U.zero),
    })),
  },
  {
    id: 'invalid-082',
    comment: 'Bundle whose identity key has a non-canonical u (top bit set).',
    rules: ['WP-KEYS-02'],
    build: bundleCase(['KEY_NON_CANONICAL'], 'identity_key: bit 7 of byte 32 set', (b) => ({
      ...b,
      identityKey: flipBit(b.identityKey, 32, 7),
    })),
  },
  {
    id: 'invalid-083',
    comment: 'Bundle whose Kyber prekey has a coefficient ≥ q (FIPS 203 §7.2 check).',
    rules: ['WP-KEYS-05'],
    build: bundleCase(['KEM_NON_CANONICAL'], 'kyber_pre_key: first coefficient set to 4095', (b) => {
      const key = Uint8Array.from(b.kyberPreKey ?? new Uint8Array(1569));
      key[1] = 0xff;
      key[2] = (key[2] ?? 0) | 0x0f;
      return { ...b, kyberPreKey: key };
    }),
  },
  {
    id: 'invalid-084',
    comment: 'Bundle whose Kyber prekey carries the ML-KEM type byte 0x0a instead of Kyber-1024’s 0x08.',
    rules: ['WP-KEYS-05'],
    build: bundleCase(['KEM_BAD_TYPE'], 'kyber_pre_key: type byte 0x08 → 0x0a', (b) => ({
      ...b,
      kyberPreKey: setByte(b.kyberPreKey ?? new Uint8Array(1569), 0, 0x0a),
    })),
  },
  // --- Sessions -------------------------------------------------------------------------------------------
  {
    id: 'invalid-085',
    comment: 'Encrypting with no session.',
    rules: ['WP-REC-05'],
    build: (s) => {
      s.encrypt('alice', 'no session yet', { expect: ['NO_SESSION'] });
    },
  },
  {
    id: 'invalid-086',
    comment: 'Decrypting a SignalMessage with no session.',
    rules: ['WP-REC-05'],
    build: (s, setup) => {
      const bob = setup.parties.bob;
      const body = encodeSignalMessageBody({
        ratchetKey: bob.signedPreKeys[0]?.keyPair.publicKey ?? new Uint8Array(33),
        counter: 0,
        previousCounter: 0,
        ciphertext: new Uint8Array(16),
      });
      s.decryptBytes(
        'alice',
        { type: 'whisper', bytes: frameSignalMessage(body, new Uint8Array(8)) },
        {
          mutation: 'a well-formed SignalMessage (ratchet key = Bob’s signed prekey, zero body and MAC)',
          expect: ['NO_SESSION'],
        },
      );
    },
  },
  {
    id: 'invalid-087',
    comment: 'An unacknowledged session encrypts at exactly 30 days and refuses one millisecond later.',
    rules: ['WP-PQXDH-11', 'WP-PQXDH-09'],
    build: (s) => {
      s.processBundle('alice', BUNDLE_MAIN);
      const created = s.now();
      s.encrypt('alice', 'at 30 days', { now: created + MAX_UNACKNOWLEDGED_SESSION_AGE_MS });
      s.encrypt('alice', 'one millisecond later', {
        now: created + MAX_UNACKNOWLEDGED_SESSION_AGE_MS + 1,
        expect: ['SESSION_UNACKNOWLEDGED_TOO_OLD'],
      });
    },
  },
];

/** Generates the invalid family. */
export function generateInvalidFamily(c: CryptoProvider): FamilyFile {
  const { json, setup } = sharedSetup(c);
  const seen = new Set<string>();
  const tests: VectorTest[] = CASES.map((k) => {
    if (seen.has(k.id)) throw new GeneratorExpectationError(`duplicate id ${k.id}`);
    seen.add(k.id);
    const s = recordScript(c, setup, seedLabel(FAMILY, k.id));
    k.build(s, setup, c);
    return scriptTest({ ...k, result: 'invalid' }, SETUP_ID, s);
  });
  return {
    family: FAMILY,
    version: VECTOR_FORMAT_VERSION,
    source: GENERATOR_SOURCE,
    setups: { [SETUP_ID]: json },
    tests,
  };
}
