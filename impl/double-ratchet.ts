/**
 * The Double Ratchet over one session, as libsignal runs it (WHITEPAPER.md, "Double Ratchet",
 * rules WP-DR-01..12; Signal Double Ratchet rev 1 §3.4–3.5 with libsignal's receiver-chain list in
 * place of the spec's skip-to-`pn` rule).
 *
 * Decryption works on values, so a failure simply returns an error and the caller keeps the state
 * it had (WP-DR-11). The only effect that cannot be undone is a random draw: a DH step draws its new
 * ratchet key before the MAC is checked, exactly as the draw schedule in spec/draws.ts says.
 * @module
 */
import { MAX_FORWARD_JUMPS, MAX_MESSAGE_KEYS, MAX_RECEIVER_CHAINS } from '../spec/constants.js';
import { decryptBody, encryptBody, computeMessageMac, verifyMessageMac } from '../spec/cipher.js';
import type { Env } from '../spec/env.js';
import { accept, reject, type Result } from '../spec/errors.js';
import { deriveMessageKeys, kdfCk, kdfRk } from '../spec/kdf.js';
import { dh, generateKeyPair } from '../spec/keys.js';
import { encodePreKeySignalMessage, encodeSignalMessage } from '../spec/wire.js';
import type { ParsedSignalMessage } from '../spec/wire.js';
import { equalBytes } from '../spec/bytes.js';
import { planted } from '../spec/bugs.js';
import type { ChainKey, ReceiverChain, SessionState, SkippedMessageKey } from './session-state.js';

/** A message ready for the wire: a PreKey message until the session is acknowledged, then a SignalMessage. */
export interface CiphertextMessage {
  readonly type: 'prekey' | 'whisper';
  readonly bytes: Uint8Array;
}

/** Encrypts one message on the sending chain and advances it (Double Ratchet §3.4). Draws nothing. */
export function ratchetEncrypt(
  env: Env,
  session: SessionState,
  plaintext: Uint8Array,
): { readonly session: SessionState; readonly message: CiphertextMessage } {
  const c = env.crypto;
  const chain = session.senderChainKey;
  const step = kdfCk(c, chain.key);
  const keys = deriveMessageKeys(c, step.messageKeySeed);
  const fields = {
    ratchetKey: session.senderRatchetKey.publicKey,
    counter: chain.index,
    previousCounter: session.previousCounter,
    ciphertext: encryptBody(c, keys, plaintext),
  };
  // WP-DR-05: the MAC binds sender and receiver identity keys to the exact bytes sent.
  const signalMessage = encodeSignalMessage(fields, (macInput) =>
    computeMessageMac(c, keys.macKey, session.localIdentityKey, session.remoteIdentityKey, macInput),
  );
  const pending = session.pendingPreKey;
  const next: SessionState = {
    ...session,
    // Planted bug (simulator self-test only): `reuse-message-key` leaves the sending chain where it
    // was, so the next message is encrypted under the same message key and counter.
    senderChainKey: planted(env.bugs, 'reuse-message-key')
      ? chain
      : { key: step.nextChainKey, index: chain.index + 1 },
  };
  if (pending === null) return { session: next, message: { type: 'whisper', bytes: signalMessage } };
  // WP-PQXDH-09: until a reply decrypts, every message carries the PQXDH header.
  const prekeyMessage = encodePreKeySignalMessage({
    registrationId: session.localRegistrationId,
    ...(pending.preKeyId === null ? {} : { preKeyId: pending.preKeyId }),
    signedPreKeyId: pending.signedPreKeyId,
    kyberPreKeyId: pending.kyberPreKeyId,
    kyberCiphertext: pending.kyberCiphertext,
    baseKey: pending.baseKey,
    identityKey: session.localIdentityKey,
    message: signalMessage,
  });
  return { session: next, message: { type: 'prekey', bytes: prekeyMessage } };
}

/** The result of a successful decryption on one session. */
export interface DecryptedOnSession {
  readonly session: SessionState;
  readonly plaintext: Uint8Array;
}

/**
 * Decrypts a parsed SignalMessage on one session (Double Ratchet §3.5 as libsignal orders it): find
 * or create the receiving chain, find or derive the message key, check the MAC, decrypt the body.
 */
export function ratchetDecrypt(
  env: Env,
  session: SessionState,
  message: ParsedSignalMessage,
): Result<DecryptedOnSession> {
  const c = env.crypto;
  // WP-DR-12: the message must speak the session's version.
  if (message.messageVersion !== session.version) {
    return reject('SESSION_VERSION_MISMATCH', 'message version differs from the session version', {
      messageVersion: message.messageVersion,
      sessionVersion: session.version,
    });
  }

  let state = session;
  let chainPosition = state.receiverChains.findIndex((chain) =>
    equalBytes(chain.ratchetKey, message.ratchetKey),
  );
  if (chainPosition < 0) {
    const stepped = dhRatchetStep(env, state, message.ratchetKey);
    if (!stepped.ok) return stepped;
    state = stepped.value;
    chainPosition = state.receiverChains.length - 1;
  }
  const chain = state.receiverChains[chainPosition];
  if (chain === undefined) return reject('NO_SESSION_DECRYPTED', 'receiving chain missing after DH step');

  const derived = messageKeySeedFor(env, chain, message.counter);
  if (!derived.ok) return derived;
  const keys = deriveMessageKeys(c, derived.value.seed);
  // WP-DR-05: MAC over the bytes exactly as received, sender's identity first.
  // Planted bug (simulator self-test only): `skip-mac-check` accepts any MAC.
  if (
    !planted(env.bugs, 'skip-mac-check') &&
    !verifyMessageMac(
      c,
      keys.macKey,
      state.remoteIdentityKey,
      state.localIdentityKey,
      message.macInput,
      message.mac,
    )
  ) {
    return reject('MAC_INVALID', 'message MAC does not verify');
  }
  // WP-DR-04: AES-256-CBC with PKCS#7.
  const plaintext = decryptBody(c, keys, message.ciphertext);
  if (!plaintext.ok) return plaintext;

  const receiverChains = state.receiverChains.map((existing, i) =>
    i === chainPosition ? derived.value.chain : existing,
  );
  // WP-PQXDH-09: a decrypted message acknowledges the session; PreKey wrapping stops.
  return accept({ session: { ...state, receiverChains, pendingPreKey: null }, plaintext: plaintext.value });
}

/**
 * WP-DR-06: the DH ratchet step on a new peer ratchet key: a receiving chain from our current
 * ratchet key, then a fresh sending ratchet key (one 32-byte draw) and sending chain.
 */
export function dhRatchetStep(
  env: Env,
  session: SessionState,
  theirRatchetKey: Uint8Array,
): Result<SessionState> {
  const c = env.crypto;
  const receiveDh = dh(c, session.senderRatchetKey.privateKey, theirRatchetKey);
  if (!receiveDh.ok) return receiveDh;
  const receiving = kdfRk(c, session.rootKey, receiveDh.value);
  const ourNewRatchetKey = generateKeyPair(c, env.rng);
  const sendDh = dh(c, ourNewRatchetKey.privateKey, theirRatchetKey);
  if (!sendDh.ok) return sendDh;
  const sending = kdfRk(c, receiving.rootKey, sendDh.value);

  const newChain: ReceiverChain = {
    ratchetKey: theirRatchetKey,
    chainKey: { key: receiving.chainKey, index: 0 },
    skipped: [],
  };
  let receiverChains = [...session.receiverChains, newChain];
  // WP-DR-09: at most MAX_RECEIVER_CHAINS; the oldest is dropped, never a rejection.
  if (receiverChains.length > MAX_RECEIVER_CHAINS)
    receiverChains = receiverChains.slice(receiverChains.length - MAX_RECEIVER_CHAINS);
  const currentIndex = session.senderChainKey.index;
  return accept({
    ...session,
    rootKey: sending.rootKey,
    receiverChains,
    // WP-DR-06: previous_counter = old sending index − 1, saturating at 0.
    previousCounter: currentIndex > 0 ? currentIndex - 1 : 0,
    senderRatchetKey: ourNewRatchetKey,
    senderChainKey: { key: sending.chainKey, index: 0 },
  });
}

/** The message-key seed for `counter` on `chain`, and the chain as it is after taking it. */
function messageKeySeedFor(
  env: Env,
  chain: ReceiverChain,
  counter: number,
): Result<{ readonly seed: Uint8Array; readonly chain: ReceiverChain }> {
  const c = env.crypto;
  const chainIndex = chain.chainKey.index;
  if (chainIndex > counter) {
    const position = chain.skipped.findIndex((k) => k.index === counter);
    // WP-DR-10: an old counter without a stored key is a duplicate (or its key was dropped by the cap).
    if (position < 0) {
      return reject('DUPLICATE_MESSAGE', 'message key already used or dropped', { chainIndex, counter });
    }
    const found = chain.skipped[position];
    if (found === undefined)
      return reject('DUPLICATE_MESSAGE', 'message key already used', { chainIndex, counter });
    // WP-DR-10: a stored key is deleted when used.
    // Planted bug (simulator self-test only): `deliver-twice` keeps the used key, so a redelivered
    // copy decrypts again.
    if (planted(env.bugs, 'deliver-twice')) return accept({ seed: found.seed, chain });
    return accept({
      seed: found.seed,
      chain: { ...chain, skipped: chain.skipped.filter((_, i) => i !== position) },
    });
  }
  // WP-DR-07: refuse a jump beyond MAX_FORWARD_JUMPS before deriving any key.
  // Planted bug (simulator self-test only): `accept-past-forward-jump` skips this check.
  if (counter - chainIndex > MAX_FORWARD_JUMPS && !planted(env.bugs, 'accept-past-forward-jump')) {
    return reject('FORWARD_JUMP_TOO_FAR', 'message from too far into the future', {
      chainIndex,
      counter,
      limit: MAX_FORWARD_JUMPS,
    });
  }
  let key = chain.chainKey.key;
  let index = chainIndex;
  const newlySkipped: SkippedMessageKey[] = [];
  while (index < counter) {
    const step = kdfCk(c, key);
    newlySkipped.push({ index, seed: step.messageKeySeed });
    key = step.nextChainKey;
    index++;
  }
  const step = kdfCk(c, key);
  // WP-DR-08: newest first; beyond MAX_MESSAGE_KEYS the oldest are dropped, never a rejection.
  let skipped: readonly SkippedMessageKey[] = chain.skipped;
  // Planted bug (simulator self-test only): `deliver-twice` also stores the key it just used.
  if (planted(env.bugs, 'deliver-twice')) newlySkipped.push({ index: counter, seed: step.messageKeySeed });
  if (newlySkipped.length > 0) {
    skipped = [...newlySkipped.reverse(), ...chain.skipped];
    if (skipped.length > MAX_MESSAGE_KEYS) skipped = skipped.slice(0, MAX_MESSAGE_KEYS);
  }
  const nextChainKey: ChainKey = { key: step.nextChainKey, index: counter + 1 };
  return accept({ seed: step.messageKeySeed, chain: { ...chain, chainKey: nextChainKey, skipped } });
}
