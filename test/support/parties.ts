/**
 * A tiny two-party harness for the impl/ tests: devices created from a seed, a session started from
 * a bundle, send and deliver helpers that keep each device's record and prekeys, a recording Rng
 * (to check draw schedules, WP-KEYS-09), a deep-freeze helper (inputs are never mutated) and state
 * snapshots (canonical JSON, so byte arrays are compared too).
 *
 * Test-only: protocol code never imports this module. Devices are mutable test fixtures; every
 * protocol step they call is the pure impl/ function.
 * @module
 */
import { Buffer } from 'node:buffer';
import { createHmac, createPrivateKey, createPublicKey, diffieHellman, hkdfSync } from 'node:crypto';
import type { CryptoProvider } from '../../spec/crypto/provider.js';
import type { Env } from '../../spec/env.js';
import type { ProtocolError, Result } from '../../spec/errors.js';
import { seededRng, type Rng } from '../../spec/rng.js';
import {
  encodePreKeySignalMessage,
  encodeSignalMessageBody,
  frameSignalMessage,
  parsePreKeySignalMessage,
  parseSignalMessage,
  type ParsedSignalMessage,
  type PreKeySignalMessageFields,
  type SignalMessageFields,
} from '../../spec/wire.js';
import {
  EMPTY_SESSION_RECORD,
  bundleFromPreKeyState,
  decryptMessage,
  encodePreKeyState,
  encodeSessionRecord,
  encryptMessage,
  generatePreKeyState,
  processPreKeyBundle,
  type BundleChoice,
  type CiphertextMessage,
  type LocalIdentity,
  type PreKeyBundle,
  type PreKeyState,
  type PreKeyStateOptions,
  type SessionRecord,
} from '../../impl/index.js';

/** The fixed clock the harness uses unless a test passes its own time (ms). */
export const T0 = 1_700_000_000_000;

/** An Rng that records the length of every draw it serves. */
export interface RecordingRng extends Rng {
  /** Lengths of the draws so far, in order. */
  readonly draws: number[];
  /** Forgets the draws recorded so far. */
  reset(): void;
}

/** Wraps `inner` so every `randomBytes(n)` is recorded as `n`. */
export function recordingRng(inner: Rng): RecordingRng {
  const draws: number[] = [];
  return {
    draws,
    reset(): void {
      draws.length = 0;
    },
    randomBytes(length: number): Uint8Array {
      draws.push(length);
      return inner.randomBytes(length);
    },
  };
}

/** One device talking to one peer: its env, prekeys and the session record for that peer. */
export interface Party {
  readonly name: string;
  readonly env: Env;
  readonly rng: RecordingRng;
  prekeys: PreKeyState;
  record: SessionRecord;
}

/** Creates a device whose keys and draws come from `seededRng(seed/name)`. */
export function createParty(
  name: string,
  crypto: CryptoProvider,
  seed: string,
  options: PreKeyStateOptions = {},
): Party {
  const rng = recordingRng(seededRng(`${seed}/${name}`));
  const env: Env = { crypto, rng };
  const prekeys = generatePreKeyState(env, options);
  rng.reset();
  return { name, env, rng, prekeys, record: EMPTY_SESSION_RECORD };
}

/** What PQXDH needs of the initiator. */
export function localIdentity(party: Party): LocalIdentity {
  return { identityKeyPair: party.prekeys.identityKeyPair, registrationId: party.prekeys.registrationId };
}

/** The bundle `party` would publish (see {@link bundleFromPreKeyState}). */
export function bundleOf(party: Party, choice: BundleChoice = {}): PreKeyBundle {
  return bundleFromPreKeyState(party.prekeys, choice);
}

/** Throws with the error code when a step the test expects to succeed fails. */
export function unwrap<T>(result: Result<T>, what = 'step'): T {
  if (!result.ok) throw new Error(`${what} failed: ${result.error.code} (${result.error.message})`);
  return result.value;
}

/** The error of a result the test expects to fail. */
export function errorOf<T>(result: Result<T>): ProtocolError {
  if (result.ok) throw new Error('expected a rejection, got success');
  return result.error;
}

/** `initiator` processes `responder`'s bundle (a new current session on the initiator's side). */
export function startSession(
  initiator: Party,
  responder: Party,
  options: { readonly choice?: BundleChoice; readonly now?: number; readonly bundle?: PreKeyBundle } = {},
): void {
  const bundle = options.bundle ?? bundleOf(responder, options.choice);
  initiator.record = unwrap(
    processPreKeyBundle(initiator.env, initiator.record, localIdentity(initiator), bundle, options.now ?? T0),
    `${initiator.name} processing ${responder.name}'s bundle`,
  );
}

/** Encrypts `text` on `from`'s current session and keeps the new record. */
export function send(from: Party, text: string, now: number = T0): CiphertextMessage {
  const result = unwrap(encryptMessage(from.env, from.record, utf8(text), now), `${from.name} encrypting`);
  from.record = result.record;
  return result.message;
}

/** The outcome of a delivery: the plaintext on success, the error otherwise. */
export type Delivery =
  { readonly ok: true; readonly text: string } | { readonly ok: false; readonly error: ProtocolError };

/** Decrypts `message` at `to`; on success keeps the new record and prekeys, on failure keeps the old ones. */
export function deliver(to: Party, message: CiphertextMessage): Delivery {
  const result = decryptMessage(to.env, to.record, to.prekeys, message);
  if (!result.ok) return { ok: false, error: result.error };
  to.record = result.value.record;
  to.prekeys = result.value.prekeys;
  return { ok: true, text: new TextDecoder().decode(result.value.plaintext) };
}

/** Delivers and insists on success, returning the plaintext. */
export function deliverOk(to: Party, message: CiphertextMessage): string {
  const delivery = deliver(to, message);
  if (!delivery.ok) throw new Error(`${to.name} could not decrypt: ${delivery.error.code}`);
  return delivery.text;
}

/** Both parties' complete state as canonical JSON (bytes included), for "unchanged" checks. */
export function snapshot(party: Party): string {
  return `${encodeSessionRecord(party.record)}\n${encodePreKeyState(party.prekeys)}`;
}

/**
 * Freezes objects and arrays recursively, so a step that writes into its input throws in strict
 * mode. Typed arrays cannot be frozen; compare {@link snapshot}s for those.
 */
export function deepFreeze<T>(value: T): T {
  if (typeof value !== 'object' || value === null || ArrayBuffer.isView(value)) return value;
  for (const key of Reflect.ownKeys(value)) deepFreeze((value as Record<PropertyKey, unknown>)[key]);
  return Object.freeze(value);
}

/** UTF-8 bytes of a string. */
export function utf8(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

/** A copy of `bytes` with `mask` XORed into the byte at `index` (negative counts from the end). */
export function flipByte(bytes: Uint8Array, index: number, mask = 0x01): Uint8Array {
  const out = Uint8Array.from(bytes);
  const at = index < 0 ? out.length + index : index;
  out[at] = (out[at] ?? 0) ^ mask;
  return out;
}

/** A fresh pair with an established session: alice initiated, bob replied, alice received the reply. */
export function establishedPair(
  crypto: CryptoProvider,
  seed: string,
  options: PreKeyStateOptions = {},
): { readonly alice: Party; readonly bob: Party } {
  const alice = createParty('alice', crypto, seed, options);
  const bob = createParty('bob', crypto, seed, options);
  startSession(alice, bob);
  deliverOk(bob, send(alice, 'hello bob'));
  deliverOk(alice, send(bob, 'hello alice'));
  alice.rng.reset();
  bob.rng.reset();
  return { alice, bob };
}

/** The fields of a PreKey message as received, ready to be edited and re-encoded. */
export function preKeyFields(message: CiphertextMessage): PreKeySignalMessageFields {
  if (message.type !== 'prekey') throw new Error('not a PreKey message');
  const p = unwrap(parsePreKeySignalMessage(message.bytes), 'parsing a PreKey message');
  const fields: PreKeySignalMessageFields = {
    registrationId: p.registrationId,
    signedPreKeyId: p.signedPreKeyId,
    kyberPreKeyId: p.kyberPreKeyId,
    kyberCiphertext: p.kyberCiphertext,
    baseKey: p.baseKey,
    identityKey: p.identityKey,
    message: p.message,
  };
  return p.preKeyId === undefined ? fields : { ...fields, preKeyId: p.preKeyId };
}

/** Re-encodes a PreKey message with some fields replaced (the encoder writes them canonically). */
export function rewritePreKeyMessage(
  message: CiphertextMessage,
  edit: Partial<PreKeySignalMessageFields>,
): CiphertextMessage {
  return { type: 'prekey', bytes: encodePreKeySignalMessage({ ...preKeyFields(message), ...edit }) };
}

/** The SignalMessage inside a message: itself for 'whisper', the inner message for 'prekey'. */
export function signalMessageOf(message: CiphertextMessage): ParsedSignalMessage {
  const bytes = message.type === 'prekey' ? preKeyFields(message).message : message.bytes;
  return unwrap(parseSignalMessage(bytes), 'parsing a SignalMessage');
}

/** Re-encodes a SignalMessage with some header fields replaced, keeping its original MAC. */
export function rewriteSignalMessage(
  message: CiphertextMessage,
  edit: Partial<SignalMessageFields>,
): CiphertextMessage {
  if (message.type !== 'whisper') throw new Error('not a SignalMessage');
  const p = signalMessageOf(message);
  const fields: SignalMessageFields = {
    ratchetKey: p.ratchetKey,
    counter: p.counter,
    previousCounter: p.previousCounter,
    ciphertext: p.ciphertext,
    ...edit,
  };
  return { type: 'whisper', bytes: frameSignalMessage(encodeSignalMessageBody(fields), p.mac) };
}

// ---------------------------------------------------------------------------------------------
// Independent reference primitives (node:crypto directly, not the providers), for recomputing a
// derivation in a test instead of trusting the code under test.
// ---------------------------------------------------------------------------------------------

const PKCS8_X25519_PREFIX = Uint8Array.from([
  0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20,
]);
const SPKI_X25519_PREFIX = Uint8Array.from([
  0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x03, 0x21, 0x00,
]);

/** RFC 7748 X25519 of a raw private key and a 33-byte `0x05 ‖ u` public key, via OpenSSL. */
export function refX25519(privateKey: Uint8Array, publicKey33: Uint8Array): Uint8Array {
  const privateKeyObject = createPrivateKey({
    key: Buffer.concat([PKCS8_X25519_PREFIX, privateKey]),
    format: 'der',
    type: 'pkcs8',
  });
  const publicKeyObject = createPublicKey({
    key: Buffer.concat([SPKI_X25519_PREFIX, publicKey33.subarray(1)]),
    format: 'der',
    type: 'spki',
  });
  return new Uint8Array(diffieHellman({ privateKey: privateKeyObject, publicKey: publicKeyObject }));
}

/** RFC 5869 HKDF-SHA256 via `hkdfSync`. */
export function refHkdf(ikm: Uint8Array, salt: Uint8Array, info: string, length: number): Uint8Array {
  return new Uint8Array(hkdfSync('sha256', ikm, salt, Buffer.from(info, 'utf8'), length));
}

/** RFC 2104 HMAC-SHA256 via `createHmac`. */
export function refHmac(key: Uint8Array, data: Uint8Array): Uint8Array {
  return new Uint8Array(createHmac('sha256', key).update(data).digest());
}

/** The message keys of the chain key `chainKey` (WHITEPAPER WP-DR-02/03), recomputed. */
export function refMessageKeys(chainKey: Uint8Array): {
  readonly cipherKey: Uint8Array;
  readonly macKey: Uint8Array;
  readonly iv: Uint8Array;
  readonly nextChainKey: Uint8Array;
} {
  const seed = refHmac(chainKey, Uint8Array.of(0x01));
  const okm = refHkdf(seed, new Uint8Array(0), 'WhisperMessageKeys', 80);
  return {
    cipherKey: okm.slice(0, 32),
    macKey: okm.slice(32, 64),
    iv: okm.slice(64, 80),
    nextChainKey: refHmac(chainKey, Uint8Array.of(0x02)),
  };
}

/**
 * A copy of `party` with a fresh Rng seeded by `seed` (keys and record are immutable data, so they
 * are shared): lets a property reuse expensive key material across runs.
 */
export function withFreshRng(party: Party, seed: string): Party {
  const rng = recordingRng(seededRng(`${seed}/${party.name}`));
  return {
    name: party.name,
    env: { crypto: party.env.crypto, rng },
    rng,
    prekeys: party.prekeys,
    record: party.record,
  };
}
