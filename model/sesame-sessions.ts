/**
 * The session layer the device machine needs for every peer device, written for model/ on spec/
 * primitives alone (WHITEPAPER.md "PQXDH" WP-PQXDH-01..12, "Double Ratchet" WP-DR-01..12, "Session
 * records" WP-REC-01..05; libsignal's session record). It is the model's own encoding of those
 * rules, independent of impl/: it is checked against impl/ by the device conformance suite
 * (test/conformance/device-quick.test.ts), which compares bytes, draws and abstract state.
 *
 * Everything is a pure function over plain data. Draw order (spec/draws.ts): PQXDH initiation draws
 * base key, first ratchet key, KEM seed; a receiving DH step draws one ratchet key before the MAC
 * is checked; encryption draws nothing.
 * @module
 */
import {
  ARCHIVED_STATES_MAX_LENGTH,
  CIPHERTEXT_MESSAGE_CURRENT_VERSION,
  MAX_FORWARD_JUMPS,
  MAX_MESSAGE_KEYS,
  MAX_RECEIVER_CHAINS,
  MAX_UNACKNOWLEDGED_SESSION_AGE_MS,
} from '../spec/constants.js';
import type { SessionAbstract, SessionRecordAbstract } from '../spec/abstract.js';
import type { PreKeyBundle } from '../spec/bundle.js';
import { planted } from '../spec/bugs.js';
import { equalBytes } from '../spec/bytes.js';
import { computeMessageMac, decryptBody, encryptBody, verifyMessageMac } from '../spec/cipher.js';
import { kemDecapsulate, kemEncapsulate, kemGenerateKeyPair } from '../spec/crypto/kyber.js';
import type { CryptoProvider } from '../spec/crypto/provider.js';
import { xeddsaSign, xeddsaVerify } from '../spec/crypto/xeddsa.js';
import type { Env } from '../spec/env.js';
import { accept, reject, type ProtocolError, type Result } from '../spec/errors.js';
import { deriveMessageKeys, kdfCk, kdfRk, pqxdhSecret } from '../spec/kdf.js';
import {
  decodeEcPublicKey,
  decodeKemPublicKey,
  dh,
  fingerprint,
  generateKeyPair,
  type KeyPair,
} from '../spec/keys.js';
import {
  encodePreKeySignalMessage,
  encodeSignalMessage,
  parsePreKeySignalMessage,
  parseSignalMessage,
  type ParsedPreKeySignalMessage,
  type ParsedSignalMessage,
} from '../spec/wire.js';

// ---------------------------------------------------------------------------------------------
// Data

/** A receiving chain: the peer's ratchet key, the next index, its chain key, skipped seeds newest first. */
export interface ModelReceiverChain {
  readonly ratchetKey: Uint8Array;
  readonly chainKey: Uint8Array;
  readonly nextIndex: number;
  readonly skipped: readonly { readonly index: number; readonly seed: Uint8Array }[];
}

/** The PQXDH header an initiating session repeats until a reply decrypts (WP-PQXDH-09). */
export interface ModelInitiation {
  readonly preKeyId: number | null;
  readonly signedPreKeyId: number;
  readonly kyberPreKeyId: number;
  readonly kyberCiphertext: Uint8Array;
  readonly baseKey: Uint8Array;
  readonly createdAt: number;
}

/** One Double Ratchet session. `initiation` non-null is the `initiating` phase. */
export interface ModelSession {
  readonly version: number;
  readonly ourIdentityKey: Uint8Array;
  readonly theirIdentityKey: Uint8Array;
  readonly ourRegistrationId: number;
  readonly theirRegistrationId: number;
  readonly baseKey: Uint8Array;
  readonly rootKey: Uint8Array;
  readonly sendingRatchetKey: KeyPair;
  readonly sendingChainKey: Uint8Array;
  readonly sendingIndex: number;
  readonly previousCounter: number;
  readonly receivingChains: readonly ModelReceiverChain[];
  readonly initiation: ModelInitiation | null;
}

/** WP-REC-01: the active session and the inactive ones, newest first. */
export interface ModelSessionRecord {
  readonly active: ModelSession | null;
  readonly inactive: readonly ModelSession[];
}

/** The empty record. */
export const NO_SESSIONS: ModelSessionRecord = Object.freeze({ active: null, inactive: Object.freeze([]) });

/** A device's identity and the prekeys it still holds. */
export interface ModelPreKeys {
  readonly identityKeyPair: KeyPair;
  readonly registrationId: number;
  readonly signedPreKeys: readonly {
    readonly keyId: number;
    readonly keyPair: KeyPair;
    readonly signature: Uint8Array;
  }[];
  readonly oneTimePreKeys: readonly { readonly keyId: number; readonly keyPair: KeyPair }[];
  readonly kyberPreKeys: readonly {
    readonly keyId: number;
    readonly publicKey: Uint8Array;
    readonly secretKey: Uint8Array;
    readonly signature: Uint8Array;
    readonly lastResort: boolean;
  }[];
}

/** A ciphertext ready for the wire. */
export interface ModelCiphertext {
  readonly type: 'prekey' | 'whisper';
  readonly bytes: Uint8Array;
}

// ---------------------------------------------------------------------------------------------
// Prekeys (WP-KEYS-09 draw order)

/** A one-time EC prekey: one key pair drawn. */
export function drawOneTimePreKey(env: Env, keyId: number): ModelPreKeys['oneTimePreKeys'][number] {
  return { keyId, keyPair: generateKeyPair(env.crypto, env.rng) };
}

/** A signed prekey: its key pair, then the XEdDSA nonce of its signature over the 33-byte encoding. */
export function drawSignedPreKey(
  env: Env,
  identity: KeyPair,
  keyId: number,
): ModelPreKeys['signedPreKeys'][number] {
  const keyPair = generateKeyPair(env.crypto, env.rng);
  const signature = xeddsaSign(env.crypto, identity.privateKey, keyPair.publicKey, env.rng.randomBytes(64));
  return { keyId, keyPair, signature };
}

/** A signed Kyber prekey: keygen seed, then the XEdDSA nonce of its signature. */
export function drawKyberPreKey(
  env: Env,
  identity: KeyPair,
  keyId: number,
  lastResort: boolean,
): ModelPreKeys['kyberPreKeys'][number] {
  const kem = kemGenerateKeyPair(env.crypto, env.rng);
  const signature = xeddsaSign(env.crypto, identity.privateKey, kem.publicKey, env.rng.randomBytes(64));
  return { keyId, publicKey: kem.publicKey, secretKey: kem.secretKey, signature, lastResort };
}

/**
 * A device's key material, drawn in the order of spec/draws.ts: identity key, registration id (two
 * bytes reduced to 1..16380), signed prekey 1 (key, nonce), one-time prekeys 1..n, one-time Kyber
 * prekeys 1..m, last-resort Kyber prekey m+1.
 */
export function drawPreKeys(env: Env, oneTime: number, oneTimeKyber: number): ModelPreKeys {
  const identityKeyPair = generateKeyPair(env.crypto, env.rng);
  const idBytes = env.rng.randomBytes(2);
  const registrationId: number = ((((idBytes[0] ?? 0) << 8) | (idBytes[1] ?? 0)) % 16380) + 1;
  const spk = generateKeyPair(env.crypto, env.rng);
  const spkSignature = xeddsaSign(
    env.crypto,
    identityKeyPair.privateKey,
    spk.publicKey,
    env.rng.randomBytes(64),
  );
  const oneTimePreKeys = [];
  for (let keyId = 1; keyId <= oneTime; keyId++) oneTimePreKeys.push(drawOneTimePreKey(env, keyId));
  const kyberPreKeys = [];
  for (let keyId = 1; keyId <= oneTimeKyber; keyId++)
    kyberPreKeys.push(drawKyberPreKey(env, identityKeyPair, keyId, false));
  kyberPreKeys.push(drawKyberPreKey(env, identityKeyPair, oneTimeKyber + 1, true));
  return {
    identityKeyPair,
    registrationId,
    signedPreKeys: [{ keyId: 1, keyPair: spk, signature: spkSignature }],
    oneTimePreKeys,
    kyberPreKeys,
  };
}

// ---------------------------------------------------------------------------------------------
// Records (WP-REC-01/02)

/** WP-REC-01 Insert: `session` becomes active; the old active heads the inactive list, capped at 40. */
export function insertSession(record: ModelSessionRecord, session: ModelSession): ModelSessionRecord {
  const inactive = record.active === null ? [...record.inactive] : [record.active, ...record.inactive];
  return { active: session, inactive: inactive.slice(0, ARCHIVED_STATES_MAX_LENGTH) };
}

/** WP-REC-02 Activate: inactive session `position`, advanced to `session`, becomes active. */
function activateSession(
  record: ModelSessionRecord,
  position: number,
  session: ModelSession,
): ModelSessionRecord {
  return insertSession(
    { active: record.active, inactive: record.inactive.filter((_, i) => i !== position) },
    session,
  );
}

/** WP-PQXDH-11: the active session may encrypt (exists; if unanswered, at most 30 days old). */
export function canEncrypt(record: ModelSessionRecord, now: number): boolean {
  const active = record.active;
  if (active === null) return false;
  return active.initiation === null || now - active.initiation.createdAt <= MAX_UNACKNOWLEDGED_SESSION_AGE_MS;
}

// ---------------------------------------------------------------------------------------------
// PQXDH (WP-PQXDH-01..12)

/** Initiator: verify the bundle, draw base key, ratchet key, KEM seed, derive the session. */
export function startSession(
  env: Env,
  ours: { readonly identityKeyPair: KeyPair; readonly registrationId: number },
  bundle: PreKeyBundle,
  now: number,
): Result<ModelSession> {
  const c = env.crypto;
  const theirIdentity = decodeEcPublicKey(bundle.identityKey);
  if (!theirIdentity.ok) return theirIdentity;
  const theirSpk = decodeEcPublicKey(bundle.signedPreKey);
  if (!theirSpk.ok) return theirSpk;
  // WP-PQXDH-01
  if (!xeddsaVerify(c, theirIdentity.value, theirSpk.value, bundle.signedPreKeySignature))
    return reject('BUNDLE_SIGNATURE_INVALID', 'signed prekey signature does not verify');
  // WP-PQXDH-02
  if (bundle.kyberPreKey === null || bundle.kyberPreKeyId === null || bundle.kyberPreKeySignature === null)
    return reject('BUNDLE_KYBER_MISSING', 'bundle carries no Kyber prekey');
  const theirKyber = decodeKemPublicKey(bundle.kyberPreKey);
  if (!theirKyber.ok) return theirKyber;
  if (!xeddsaVerify(c, theirIdentity.value, theirKyber.value, bundle.kyberPreKeySignature))
    return reject('BUNDLE_SIGNATURE_INVALID', 'Kyber prekey signature does not verify');
  // WP-PQXDH-12
  if ((bundle.preKey === null) !== (bundle.preKeyId === null))
    return reject('BUNDLE_MALFORMED', 'one-time prekey and its id must be both present or both absent');
  let theirOpk: Uint8Array | null = null;
  if (bundle.preKey !== null) {
    const opk = decodeEcPublicKey(bundle.preKey);
    if (!opk.ok) return opk;
    theirOpk = opk.value;
  }
  // WP-PQXDH-04: draws in order.
  const base = generateKeyPair(c, env.rng);
  const ratchet = generateKeyPair(c, env.rng);
  const kem = kemEncapsulate(env.crypto, theirKyber.value, env.rng);
  // WP-PQXDH-03
  const pairs: [Uint8Array, Uint8Array][] = [
    [ours.identityKeyPair.privateKey, theirSpk.value],
    [base.privateKey, theirIdentity.value],
    [base.privateKey, theirSpk.value],
  ];
  if (theirOpk !== null) pairs.push([base.privateKey, theirOpk]);
  const shared = dhAll(c, pairs);
  if (!shared.ok) return shared;
  const secret = pqxdhSecret(c, shared.value, kem.sharedSecret);
  // WP-PQXDH-08
  const first = dh(c, ratchet.privateKey, theirSpk.value);
  if (!first.ok) return first;
  const sending = kdfRk(c, secret.rootKey, first.value);
  return accept({
    version: CIPHERTEXT_MESSAGE_CURRENT_VERSION,
    ourIdentityKey: ours.identityKeyPair.publicKey,
    theirIdentityKey: theirIdentity.value,
    ourRegistrationId: ours.registrationId,
    theirRegistrationId: bundle.registrationId,
    baseKey: base.publicKey,
    rootKey: sending.rootKey,
    sendingRatchetKey: ratchet,
    sendingChainKey: sending.chainKey,
    sendingIndex: 0,
    previousCounter: 0,
    receivingChains: [{ ratchetKey: theirSpk.value, chainKey: secret.chainKey, nextIndex: 0, skipped: [] }],
    initiation: {
      preKeyId: theirOpk === null ? null : bundle.preKeyId,
      signedPreKeyId: bundle.signedPreKeyId,
      kyberPreKeyId: bundle.kyberPreKeyId,
      kyberCiphertext: kem.ciphertext,
      baseKey: base.publicKey,
      createdAt: now,
    },
  });
}

function dhAll(
  c: CryptoProvider,
  pairs: readonly (readonly [Uint8Array, Uint8Array])[],
): Result<Uint8Array[]> {
  const out: Uint8Array[] = [];
  for (const [priv, pub] of pairs) {
    const shared = dh(c, priv, pub);
    if (!shared.ok) return shared;
    out.push(shared.value);
  }
  return accept(out);
}

/** Responder: the prekeys a PreKey message names (signed, Kyber, one-time, in libsignal's order). */
function answerSession(
  env: Env,
  prekeys: ModelPreKeys,
  message: ParsedPreKeySignalMessage,
): Result<{
  readonly session: ModelSession;
  readonly usedOneTime: number | null;
  readonly usedKyber: number;
}> {
  const c = env.crypto;
  const spk = prekeys.signedPreKeys.find((k) => k.keyId === message.signedPreKeyId);
  // WP-PQXDH-05
  if (spk === undefined)
    return reject('UNKNOWN_SIGNED_PREKEY', 'no signed prekey with that id', {
      signedPreKeyId: message.signedPreKeyId,
    });
  const kyber = prekeys.kyberPreKeys.find((k) => k.keyId === message.kyberPreKeyId);
  // WP-PQXDH-07
  if (kyber === undefined)
    return reject('UNKNOWN_KYBER_PREKEY', 'no Kyber prekey with that id', {
      kyberPreKeyId: message.kyberPreKeyId,
    });
  let opk: KeyPair | null = null;
  if (message.preKeyId !== undefined) {
    const found = prekeys.oneTimePreKeys.find((k) => k.keyId === message.preKeyId);
    // WP-PQXDH-06
    if (found === undefined)
      return reject('UNKNOWN_ONE_TIME_PREKEY', 'no one-time prekey with that id', {
        preKeyId: message.preKeyId,
      });
    opk = found.keyPair;
  }
  const pairs: [Uint8Array, Uint8Array][] = [
    [spk.keyPair.privateKey, message.identityKey],
    [prekeys.identityKeyPair.privateKey, message.baseKey],
    [spk.keyPair.privateKey, message.baseKey],
  ];
  if (opk !== null) pairs.push([opk.privateKey, message.baseKey]);
  const shared = dhAll(c, pairs);
  if (!shared.ok) return shared;
  const secret = pqxdhSecret(
    c,
    shared.value,
    kemDecapsulate(env.crypto, kyber.secretKey, message.kyberCiphertext),
  );
  return accept({
    session: {
      version: CIPHERTEXT_MESSAGE_CURRENT_VERSION,
      ourIdentityKey: prekeys.identityKeyPair.publicKey,
      theirIdentityKey: message.identityKey,
      ourRegistrationId: prekeys.registrationId,
      theirRegistrationId: message.registrationId,
      baseKey: message.baseKey,
      rootKey: secret.rootKey,
      sendingRatchetKey: spk.keyPair,
      sendingChainKey: secret.chainKey,
      sendingIndex: 0,
      previousCounter: 0,
      receivingChains: [],
      initiation: null,
    },
    usedOneTime: opk === null ? null : (message.preKeyId ?? null),
    usedKyber: kyber.keyId,
  });
}

// ---------------------------------------------------------------------------------------------
// Double Ratchet (WP-DR-01..12)

/** Encrypts on one session (draws nothing); PreKey-wrapped while initiating (WP-PQXDH-09). */
function sealOnSession(
  env: Env,
  session: ModelSession,
  plaintext: Uint8Array,
): { readonly session: ModelSession; readonly message: ModelCiphertext } {
  const c = env.crypto;
  const step = kdfCk(c, session.sendingChainKey);
  const keys = deriveMessageKeys(c, step.messageKeySeed);
  const signalMessage = encodeSignalMessage(
    {
      ratchetKey: session.sendingRatchetKey.publicKey,
      counter: session.sendingIndex,
      previousCounter: session.previousCounter,
      ciphertext: encryptBody(c, keys, plaintext),
    },
    // WP-DR-05
    (macInput) =>
      computeMessageMac(c, keys.macKey, session.ourIdentityKey, session.theirIdentityKey, macInput),
  );
  // Planted bug (simulator self-test only): `reuse-message-key` leaves the sending chain in place.
  const next: ModelSession = planted(env.bugs, 'reuse-message-key')
    ? session
    : { ...session, sendingChainKey: step.nextChainKey, sendingIndex: session.sendingIndex + 1 };
  const init = session.initiation;
  if (init === null) return { session: next, message: { type: 'whisper', bytes: signalMessage } };
  const bytes = encodePreKeySignalMessage({
    registrationId: session.ourRegistrationId,
    ...(init.preKeyId === null ? {} : { preKeyId: init.preKeyId }),
    signedPreKeyId: init.signedPreKeyId,
    kyberPreKeyId: init.kyberPreKeyId,
    kyberCiphertext: init.kyberCiphertext,
    baseKey: init.baseKey,
    identityKey: session.ourIdentityKey,
    message: signalMessage,
  });
  return { session: next, message: { type: 'prekey', bytes } };
}

/** Decrypts a parsed SignalMessage on one session; the session is untouched on failure. */
function openOnSession(
  env: Env,
  session: ModelSession,
  message: ParsedSignalMessage,
): Result<{ readonly session: ModelSession; readonly plaintext: Uint8Array }> {
  const c = env.crypto;
  // WP-DR-12
  if (message.messageVersion !== session.version)
    return reject('SESSION_VERSION_MISMATCH', 'message version differs from the session version', {
      messageVersion: message.messageVersion,
      sessionVersion: session.version,
    });
  let current = session;
  let position = current.receivingChains.findIndex((ch) => equalBytes(ch.ratchetKey, message.ratchetKey));
  if (position < 0) {
    // WP-DR-06: receiving chain, then a freshly drawn sending ratchet key.
    const recvDh = dh(c, current.sendingRatchetKey.privateKey, message.ratchetKey);
    if (!recvDh.ok) return recvDh;
    const recv = kdfRk(c, current.rootKey, recvDh.value);
    const fresh = generateKeyPair(c, env.rng);
    const sendDh = dh(c, fresh.privateKey, message.ratchetKey);
    if (!sendDh.ok) return sendDh;
    const send = kdfRk(c, recv.rootKey, sendDh.value);
    // WP-DR-09: at most MAX_RECEIVER_CHAINS, oldest dropped.
    const chains = [
      ...current.receivingChains,
      { ratchetKey: message.ratchetKey, chainKey: recv.chainKey, nextIndex: 0, skipped: [] },
    ].slice(-MAX_RECEIVER_CHAINS);
    current = {
      ...current,
      rootKey: send.rootKey,
      receivingChains: chains,
      previousCounter: Math.max(current.sendingIndex - 1, 0),
      sendingRatchetKey: fresh,
      sendingChainKey: send.chainKey,
      sendingIndex: 0,
    };
    position = chains.length - 1;
  }
  const chain = current.receivingChains[position];
  if (chain === undefined) return reject('NO_SESSION_DECRYPTED', 'receiving chain missing after DH step');
  let seed: Uint8Array;
  let advanced: ModelReceiverChain;
  if (message.counter < chain.nextIndex) {
    const stored = chain.skipped.find((k) => k.index === message.counter);
    // WP-DR-10
    if (stored === undefined)
      return reject('DUPLICATE_MESSAGE', 'message key already used or dropped', {
        chainIndex: chain.nextIndex,
        counter: message.counter,
      });
    seed = stored.seed;
    // Planted bug (simulator self-test only): `deliver-twice` keeps a used skipped key.
    advanced = planted(env.bugs, 'deliver-twice')
      ? chain
      : { ...chain, skipped: chain.skipped.filter((k) => k !== stored) };
  } else {
    // WP-DR-07
    // Planted bug (simulator self-test only): `accept-past-forward-jump` skips this check.
    if (
      message.counter - chain.nextIndex > MAX_FORWARD_JUMPS &&
      !planted(env.bugs, 'accept-past-forward-jump')
    )
      return reject('FORWARD_JUMP_TOO_FAR', 'message from too far into the future', {
        chainIndex: chain.nextIndex,
        counter: message.counter,
        limit: MAX_FORWARD_JUMPS,
      });
    let key = chain.chainKey;
    const newSkipped: { index: number; seed: Uint8Array }[] = [];
    for (let index = chain.nextIndex; index < message.counter; index++) {
      const s = kdfCk(c, key);
      newSkipped.unshift({ index, seed: s.messageKeySeed });
      key = s.nextChainKey;
    }
    const s = kdfCk(c, key);
    seed = s.messageKeySeed;
    // Planted bug (simulator self-test only): `deliver-twice` also stores the key it just used.
    if (planted(env.bugs, 'deliver-twice')) newSkipped.unshift({ index: message.counter, seed });
    // WP-DR-08: newest first, capped.
    const skipped =
      newSkipped.length === 0 ? chain.skipped : [...newSkipped, ...chain.skipped].slice(0, MAX_MESSAGE_KEYS);
    advanced = { ...chain, chainKey: s.nextChainKey, nextIndex: message.counter + 1, skipped };
  }
  const keys = deriveMessageKeys(c, seed);
  // WP-DR-05
  // Planted bug (simulator self-test only): `skip-mac-check` accepts any MAC.
  if (
    !planted(env.bugs, 'skip-mac-check') &&
    !verifyMessageMac(
      c,
      keys.macKey,
      current.theirIdentityKey,
      current.ourIdentityKey,
      message.macInput,
      message.mac,
    )
  )
    return reject('MAC_INVALID', 'message MAC does not verify');
  const plaintext = decryptBody(c, keys, message.ciphertext);
  if (!plaintext.ok) return plaintext;
  const chains = current.receivingChains.map((ch, i) => (i === position ? advanced : ch));
  // WP-PQXDH-09: a decrypted message ends the initiating phase.
  return accept({
    session: { ...current, receivingChains: chains, initiation: null },
    plaintext: plaintext.value,
  });
}

// ---------------------------------------------------------------------------------------------
// Record operations

/** A new initiating session from a bundle, inserted as active (WP-REC-01). */
export function sessionFromBundle(
  env: Env,
  record: ModelSessionRecord,
  ours: { readonly identityKeyPair: KeyPair; readonly registrationId: number },
  bundle: PreKeyBundle,
  now: number,
): Result<ModelSessionRecord> {
  const started = startSession(env, ours, bundle, now);
  return started.ok ? accept(insertSession(record, started.value)) : started;
}

/** Encrypts on the active session (WP-REC-05, WP-PQXDH-11). */
export function sealMessage(
  env: Env,
  record: ModelSessionRecord,
  plaintext: Uint8Array,
  now: number,
): Result<{ readonly record: ModelSessionRecord; readonly message: ModelCiphertext }> {
  const active = record.active;
  if (active === null) return reject('NO_SESSION', 'no session with this peer');
  if (!canEncrypt(record, now))
    return reject('SESSION_UNACKNOWLEDGED_TOO_OLD', 'unacknowledged session is older than 30 days', {
      ageMs: now - (active.initiation?.createdAt ?? now),
    });
  const sealed = sealOnSession(env, active, plaintext);
  return accept({ record: { active: sealed.session, inactive: record.inactive }, message: sealed.message });
}

// ---------------------------------------------------------------------------------------------
// Sequential sessions (WP-SES-18/19; Cremers–Jacomme–Naska 2023)

/** WP-SES-18: a session has completed a round trip: it holds a second receiving chain. */
export function roundTripDone(session: ModelSession): boolean {
  return session.receivingChains.length > 1;
}

/** WP-SES-18: an established session sits ahead of inactive session `position`. */
export function supersededAt(record: ModelSessionRecord, position: number): boolean {
  const ahead = [...(record.active === null ? [] : [record.active]), ...record.inactive.slice(0, position)];
  return ahead.some(roundTripDone);
}

/** WP-SES-18: the message would open a receiving chain the session does not hold. */
function opensNewChain(session: ModelSession, ratchetKey: Uint8Array): boolean {
  return !session.receivingChains.some((ch) => equalBytes(ch.ratchetKey, ratchetKey));
}

/** WP-SES-19: `a` sorts after `b` as unsigned bytes (base keys are all 33 bytes long). */
function greaterKey(a: Uint8Array, b: Uint8Array): boolean {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return (a[i] ?? 0) > (b[i] ?? 0);
  return a.length > b.length;
}

/**
 * WP-SES-22: only our own initiation still waiting for its first reply contends with the active
 * session (the two sides of a simultaneous initiation); any other inactive session was replaced by
 * a newer one and never comes back by the base-key comparison.
 */
export function crossingContender(session: ModelSession): boolean {
  return session.initiation !== null;
}

/**
 * The record after inactive session `position` decrypted (its advanced state is `session`).
 * Sesame §3.4 activates it (WP-REC-02). Sequential sessions (WP-SES-19) activate it only when it is
 * a crossing contender (WP-SES-22, judged as it was before the message), the active session has not
 * completed a round trip and its base key is the greater; otherwise it is updated in place.
 */
function recordAfterInactiveOpened(
  record: ModelSessionRecord,
  position: number,
  session: ModelSession,
  sequential: boolean,
): ModelSessionRecord {
  const active = record.active;
  const before = record.inactive[position];
  const activate =
    !sequential ||
    active === null ||
    (before !== undefined &&
      crossingContender(before) &&
      !roundTripDone(active) &&
      greaterKey(session.baseKey, active.baseKey));
  if (activate) return activateSession(record, position, session);
  return { active, inactive: record.inactive.map((s, i) => (i === position ? session : s)) };
}

/** WP-SES-18: a superseded inactive session never starts a new receiving chain. */
function supersededRefuses(
  record: ModelSessionRecord,
  position: number,
  ratchetKey: Uint8Array,
  sequential: boolean,
): Result<null> {
  const candidate = record.inactive[position];
  if (!sequential || candidate === undefined) return accept(null);
  if (!supersededAt(record, position) || !opensNewChain(candidate, ratchetKey)) return accept(null);
  return reject('SESSION_SUPERSEDED', 'a superseded session cannot start a new receiving chain', {
    archivedIndex: position,
  });
}

/**
 * WP-REC-02/03: a SignalMessage tried on the active session, then inactive newest first. With
 * `sequential` (WP-SES-18/19) superseded sessions only decrypt on chains they hold and activation
 * follows the crossing tie-break.
 */
export function openSignalMessage(
  env: Env,
  record: ModelSessionRecord,
  bytes: Uint8Array,
  sequential = false,
): Result<{ readonly record: ModelSessionRecord; readonly plaintext: Uint8Array }> {
  const parsed = parseSignalMessage(bytes);
  if (!parsed.ok) return parsed;
  if (record.active === null && record.inactive.length === 0)
    return reject('NO_SESSION', 'no session with this peer');
  const failures: ProtocolError[] = [];
  if (record.active !== null) {
    const opened = openOnSession(env, record.active, parsed.value);
    if (opened.ok)
      return accept({
        record: { active: opened.value.session, inactive: record.inactive },
        plaintext: opened.value.plaintext,
      });
    if (opened.error.code === 'DUPLICATE_MESSAGE') return opened;
    failures.push(opened.error);
  }
  for (let i = 0; i < record.inactive.length; i++) {
    const candidate = record.inactive[i];
    if (candidate === undefined) continue;
    const allowed = supersededRefuses(record, i, parsed.value.ratchetKey, sequential);
    if (!allowed.ok) {
      failures.push(allowed.error);
      continue;
    }
    const opened = openOnSession(env, candidate, parsed.value);
    if (opened.ok)
      return accept({
        record: recordAfterInactiveOpened(record, i, opened.value.session, sequential),
        plaintext: opened.value.plaintext,
      });
    if (opened.error.code === 'DUPLICATE_MESSAGE') return opened;
    failures.push(opened.error);
  }
  const only = failures.length === 1 ? failures[0] : undefined;
  if (only !== undefined) return { ok: false, error: only };
  return reject('NO_SESSION_DECRYPTED', 'no session in the record decrypts the message', {
    sessionsTried: failures.length,
  });
}

/** Whether a record holds a session with this base key and version (WP-PQXDH-10). */
export function holdsSession(record: ModelSessionRecord, baseKey: Uint8Array, version: number): boolean {
  const match = (s: ModelSession): boolean => s.version === version && equalBytes(s.baseKey, baseKey);
  return (record.active !== null && match(record.active)) || record.inactive.some(match);
}

/**
 * A PreKey message: on the session its base key names (WP-SES-18/19 when `sequential`), else a new
 * session (Insert) whose prekeys are consumed only once the inner message decrypts
 * (WP-PQXDH-06/07/10, WP-REC-04).
 */
export function openPreKeyMessage(
  env: Env,
  record: ModelSessionRecord,
  prekeys: ModelPreKeys,
  parsed: ParsedPreKeySignalMessage,
  sequential = false,
): Result<{
  readonly record: ModelSessionRecord;
  readonly prekeys: ModelPreKeys;
  readonly plaintext: Uint8Array;
}> {
  const match = (s: ModelSession): boolean =>
    s.version === parsed.messageVersion && equalBytes(s.baseKey, parsed.baseKey);
  if (record.active !== null && match(record.active)) {
    const opened = openOnSession(env, record.active, parsed.inner);
    if (!opened.ok) return opened;
    return accept({
      record: { active: opened.value.session, inactive: record.inactive },
      prekeys,
      plaintext: opened.value.plaintext,
    });
  }
  const position = record.inactive.findIndex(match);
  const held = record.inactive[position];
  if (held !== undefined) {
    // WP-SES-18: the matched session may be superseded.
    const allowed = supersededRefuses(record, position, parsed.inner.ratchetKey, sequential);
    if (!allowed.ok) return allowed;
    const opened = openOnSession(env, held, parsed.inner);
    if (!opened.ok) return opened;
    return accept({
      record: recordAfterInactiveOpened(record, position, opened.value.session, sequential),
      prekeys,
      plaintext: opened.value.plaintext,
    });
  }
  const answered = answerSession(env, prekeys, parsed);
  if (!answered.ok) return answered;
  const opened = openOnSession(env, answered.value.session, parsed.inner);
  if (!opened.ok) return opened;
  const { usedOneTime, usedKyber } = answered.value;
  return accept({
    record: insertSession(record, opened.value.session),
    prekeys: {
      ...prekeys,
      oneTimePreKeys: prekeys.oneTimePreKeys.filter((k) => k.keyId !== usedOneTime),
      kyberPreKeys: prekeys.kyberPreKeys.filter((k) => k.lastResort || k.keyId !== usedKyber),
    },
    plaintext: opened.value.plaintext,
  });
}

/** Parses a PreKey message (re-exported for the receive pipeline). */
export { parsePreKeySignalMessage };

// ---------------------------------------------------------------------------------------------
// Abstraction (spec/abstract.ts)

/** Projects one session. */
export function abstractModelSession(c: CryptoProvider, s: ModelSession): SessionAbstract {
  // Sessions are immutable values that keep their identity while unchanged, so a projection (a
  // dozen fingerprints) is computed once per session object and provider.
  let memo = sessionAbstracts.get(c);
  if (memo === undefined) {
    memo = new WeakMap();
    sessionAbstracts.set(c, memo);
  }
  const known = memo.get(s);
  if (known !== undefined) return known;
  const view = projectModelSession(c, s);
  memo.set(s, view);
  return view;
}

/** Projections of sessions already seen, per provider (see {@link abstractModelSession}). */
const sessionAbstracts = new WeakMap<CryptoProvider, WeakMap<ModelSession, SessionAbstract>>();

function projectModelSession(c: CryptoProvider, s: ModelSession): SessionAbstract {
  return {
    phase: s.initiation === null ? 'established' : 'initiating',
    version: s.version,
    localIdentityFp: fingerprint(c, s.ourIdentityKey),
    remoteIdentityFp: fingerprint(c, s.theirIdentityKey),
    baseKeyFp: fingerprint(c, s.baseKey),
    rootKeyFp: fingerprint(c, s.rootKey),
    senderRatchetKeyFp: fingerprint(c, s.sendingRatchetKey.publicKey),
    senderChainIndex: s.sendingIndex,
    previousCounter: s.previousCounter,
    receiverChains: s.receivingChains.map((ch) => ({
      ratchetKeyFp: fingerprint(c, ch.ratchetKey),
      chainIndex: ch.nextIndex,
      skippedKeys: ch.skipped.length,
    })),
  };
}

/** Projects a record. */
export function abstractModelRecord(c: CryptoProvider, record: ModelSessionRecord): SessionRecordAbstract {
  return {
    current: record.active === null ? null : abstractModelSession(c, record.active),
    archived: record.inactive.map((s) => abstractModelSession(c, s)),
  };
}
