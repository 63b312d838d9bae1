/**
 * PQXDH key agreement as libsignal runs it (WHITEPAPER.md, "PQXDH", rules WP-PQXDH-01..10;
 * Signal PQXDH rev 3 §3). The initiator turns a verified bundle into a session that wraps its
 * messages as PreKey messages; the responder turns a PreKey message into a session, checking the
 * prekeys it names.
 *
 * ```
 * IKM = 0xFF×32 ‖ DH(IK_A, SPK_B) ‖ DH(EK_A, IK_B) ‖ DH(EK_A, SPK_B) ‖ [DH(EK_A, OPK_B)] ‖ SS
 * RK ‖ CK ‖ PQR = HKDF-SHA256(salt = none, IKM, "WhisperText_X25519_SHA-256_CRYSTALS-KYBER-1024", 96)
 * ```
 * @module
 */
import { CIPHERTEXT_MESSAGE_CURRENT_VERSION } from '../spec/constants.js';
import { kemDecapsulate, kemEncapsulate } from '../spec/crypto/kyber.js';
import { xeddsaVerify } from '../spec/crypto/xeddsa.js';
import type { Env } from '../spec/env.js';
import { accept, reject, type Result } from '../spec/errors.js';
import { kdfRk, pqxdhSecret } from '../spec/kdf.js';
import { decodeEcPublicKey, decodeKemPublicKey, dh, generateKeyPair, type KeyPair } from '../spec/keys.js';
import type { ParsedPreKeySignalMessage } from '../spec/wire.js';
import type { PreKeyBundle, PreKeyState } from './prekeys.js';
import type { SessionState } from './session-state.js';

/** The initiator's own identity as PQXDH needs it. */
export interface LocalIdentity {
  readonly identityKeyPair: KeyPair;
  readonly registrationId: number;
}

/**
 * Initiator side: verifies the bundle and creates the session that will wrap messages as PreKey
 * messages until a reply decrypts. Draws base key, ratchet key, KEM seed (WP-PQXDH-04).
 */
export function initiateSession(
  env: Env,
  local: LocalIdentity,
  bundle: PreKeyBundle,
  now: number,
): Result<SessionState> {
  const c = env.crypto;
  const identity = decodeEcPublicKey(bundle.identityKey);
  if (!identity.ok) return identity;
  const signedPreKey = decodeEcPublicKey(bundle.signedPreKey);
  if (!signedPreKey.ok) return signedPreKey;
  // WP-PQXDH-01: the signed prekey's signature covers its 33-byte encoding.
  if (!xeddsaVerify(c, identity.value, signedPreKey.value, bundle.signedPreKeySignature)) {
    return reject('BUNDLE_SIGNATURE_INVALID', 'signed prekey signature does not verify');
  }
  // WP-PQXDH-02: this profile requires a Kyber prekey.
  if (bundle.kyberPreKey === null || bundle.kyberPreKeyId === null || bundle.kyberPreKeySignature === null) {
    return reject('BUNDLE_KYBER_MISSING', 'bundle carries no Kyber prekey');
  }
  const kyberPreKey = decodeKemPublicKey(bundle.kyberPreKey);
  if (!kyberPreKey.ok) return kyberPreKey;
  // WP-PQXDH-01: the Kyber prekey's signature covers its 1569-byte encoding.
  if (!xeddsaVerify(c, identity.value, kyberPreKey.value, bundle.kyberPreKeySignature)) {
    return reject('BUNDLE_SIGNATURE_INVALID', 'Kyber prekey signature does not verify');
  }
  // WP-PQXDH-12: a one-time prekey travels with its id, or not at all.
  if ((bundle.preKey === null) !== (bundle.preKeyId === null)) {
    return reject('BUNDLE_MALFORMED', 'one-time prekey and its id must be both present or both absent');
  }
  let oneTimePreKey: Uint8Array | null = null;
  if (bundle.preKey !== null) {
    const decoded = decodeEcPublicKey(bundle.preKey);
    if (!decoded.ok) return decoded;
    oneTimePreKey = decoded.value;
  }

  // WP-PQXDH-04: draws in order: base key, first sending ratchet key, KEM encapsulation seed.
  const baseKey = generateKeyPair(c, env.rng);
  const sendingRatchetKey = generateKeyPair(c, env.rng);
  const encapsulated = kemEncapsulate(env.crypto, kyberPreKey.value, env.rng);

  // WP-PQXDH-03: DH1..DH4 in this order, the KEM secret last.
  const dhInputs: Array<[Uint8Array, Uint8Array]> = [
    [local.identityKeyPair.privateKey, signedPreKey.value],
    [baseKey.privateKey, identity.value],
    [baseKey.privateKey, signedPreKey.value],
  ];
  if (oneTimePreKey !== null) dhInputs.push([baseKey.privateKey, oneTimePreKey]);
  const dhOutputs: Uint8Array[] = [];
  for (const [ours, theirs] of dhInputs) {
    const out = dh(c, ours, theirs);
    if (!out.ok) return out;
    dhOutputs.push(out.value);
  }
  const secret = pqxdhSecret(c, dhOutputs, encapsulated.sharedSecret);

  // WP-PQXDH-08: the responder's first ratchet key is SPK_B; ratchet forward at once.
  const ratchetDh = dh(c, sendingRatchetKey.privateKey, signedPreKey.value);
  if (!ratchetDh.ok) return ratchetDh;
  const sending = kdfRk(c, secret.rootKey, ratchetDh.value);

  return accept({
    version: CIPHERTEXT_MESSAGE_CURRENT_VERSION,
    localIdentityKey: local.identityKeyPair.publicKey,
    remoteIdentityKey: identity.value,
    localRegistrationId: local.registrationId,
    remoteRegistrationId: bundle.registrationId,
    aliceBaseKey: baseKey.publicKey,
    rootKey: sending.rootKey,
    senderRatchetKey: sendingRatchetKey,
    senderChainKey: { key: sending.chainKey, index: 0 },
    previousCounter: 0,
    receiverChains: [
      { ratchetKey: signedPreKey.value, chainKey: { key: secret.chainKey, index: 0 }, skipped: [] },
    ],
    // WP-PQXDH-09: wrap as PreKey messages until a reply decrypts.
    pendingPreKey: {
      preKeyId: oneTimePreKey === null ? null : bundle.preKeyId,
      signedPreKeyId: bundle.signedPreKeyId,
      kyberPreKeyId: bundle.kyberPreKeyId,
      kyberCiphertext: encapsulated.ciphertext,
      baseKey: baseKey.publicKey,
      createdAt: now,
    },
  });
}

/** Which prekeys a successful responder session consumed (deleted only after the message decrypts). */
export interface PreKeysUsed {
  readonly preKeyId: number | null;
  readonly kyberPreKeyId: number;
}

/**
 * Responder side: looks up the prekeys the PreKey message names and derives the session. Checks in
 * libsignal's order: signed prekey, Kyber prekey, one-time prekey. Draws nothing.
 */
export function acceptSession(
  env: Env,
  prekeys: PreKeyState,
  message: ParsedPreKeySignalMessage,
): Result<{ readonly session: SessionState; readonly used: PreKeysUsed }> {
  const c = env.crypto;
  const signed = prekeys.signedPreKeys.find((k) => k.keyId === message.signedPreKeyId);
  // WP-PQXDH-05: an unknown signed prekey id is refused.
  if (signed === undefined) {
    return reject('UNKNOWN_SIGNED_PREKEY', 'no signed prekey with that id', {
      signedPreKeyId: message.signedPreKeyId,
    });
  }
  const kyber = prekeys.kyberPreKeys.find((k) => k.keyId === message.kyberPreKeyId);
  // WP-PQXDH-07: an unknown (or already used one-time) Kyber prekey id is refused.
  if (kyber === undefined) {
    return reject('UNKNOWN_KYBER_PREKEY', 'no Kyber prekey with that id', {
      kyberPreKeyId: message.kyberPreKeyId,
    });
  }
  let oneTime: KeyPair | null = null;
  if (message.preKeyId !== undefined) {
    const found = prekeys.oneTimePreKeys.find((k) => k.keyId === message.preKeyId);
    // WP-PQXDH-06: an unknown (or already used) one-time prekey id is refused.
    if (found === undefined) {
      return reject('UNKNOWN_ONE_TIME_PREKEY', 'no one-time prekey with that id', {
        preKeyId: message.preKeyId,
      });
    }
    oneTime = found.keyPair;
  }

  // WP-PQXDH-03: the responder's view of the same four DHs, in the initiator's order.
  const dhInputs: Array<[Uint8Array, Uint8Array]> = [
    [signed.keyPair.privateKey, message.identityKey],
    [prekeys.identityKeyPair.privateKey, message.baseKey],
    [signed.keyPair.privateKey, message.baseKey],
  ];
  if (oneTime !== null) dhInputs.push([oneTime.privateKey, message.baseKey]);
  const dhOutputs: Uint8Array[] = [];
  for (const [ours, theirs] of dhInputs) {
    const out = dh(c, ours, theirs);
    if (!out.ok) return out;
    dhOutputs.push(out.value);
  }
  const kemSecret = kemDecapsulate(env.crypto, kyber.secretKey, message.kyberCiphertext);
  const secret = pqxdhSecret(c, dhOutputs, kemSecret);

  return accept({
    session: {
      version: CIPHERTEXT_MESSAGE_CURRENT_VERSION,
      localIdentityKey: prekeys.identityKeyPair.publicKey,
      remoteIdentityKey: message.identityKey,
      localRegistrationId: prekeys.registrationId,
      remoteRegistrationId: message.registrationId,
      aliceBaseKey: message.baseKey,
      rootKey: secret.rootKey,
      // WP-PQXDH-08: the responder's first ratchet key is its signed prekey.
      senderRatchetKey: signed.keyPair,
      senderChainKey: { key: secret.chainKey, index: 0 },
      previousCounter: 0,
      receiverChains: [],
      pendingPreKey: null,
    },
    used: { preKeyId: oneTime === null ? null : (message.preKeyId ?? null), kyberPreKeyId: kyber.keyId },
  });
}

/**
 * Removes the prekeys a decrypted PreKey message used: the one-time EC prekey (WP-PQXDH-06) and a
 * one-time Kyber prekey (WP-PQXDH-07); a last-resort Kyber prekey stays.
 */
export function consumePreKeys(prekeys: PreKeyState, used: PreKeysUsed): PreKeyState {
  return {
    ...prekeys,
    oneTimePreKeys: prekeys.oneTimePreKeys.filter((k) => k.keyId !== used.preKeyId),
    kyberPreKeys: prekeys.kyberPreKeys.filter((k) => k.lastResort || k.keyId !== used.kyberPreKeyId),
  };
}
