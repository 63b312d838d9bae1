/**
 * What an attacker computes with real keys (WHITEPAPER.md, "Adversaries and known attacks"): the
 * security oracles never look at a plaintext to decide whether the attacker can read it; they hand
 * recorded ciphertext bytes to the reference decryption (impl/) together with what the attacker
 * holds, and see whether it comes out.
 *
 * - {@link stolenState}: the keys inside a device snapshot (impl/, model/ or `both`), in impl/'s
 *   plain-data shape. model/ keeps the same values under other field names; the conversion only
 *   renames, so the attacker holds exactly what the device held.
 * - {@link ShadowReceiver}: a copy of a stolen Sesame state and prekey store that receives every
 *   envelope addressed to the victim, as the victim would (impl/sesame.ts `receiveMessage`), minus
 *   the victim's trust policy (an attacker does not ask permission).
 * - {@link decryptOutgoing}: the victim's own outgoing copies, read from the sending chains it held
 *   when it was compromised (impl/double-ratchet.ts `ratchetDecrypt` on a mirrored chain).
 * - {@link forgeKciMessage}: key-compromise impersonation (KBB; X3DH §4.6): with a recipient's
 *   signed prekey, a PreKey message that claims any sender's identity key and that the recipient
 *   accepts.
 * @module
 */
import { CIPHERTEXT_MESSAGE_CURRENT_VERSION } from '../spec/constants.js';
import { kemEncapsulate } from '../spec/crypto/kyber.js';
import type { Env } from '../spec/env.js';
import type { DeviceAddress } from '../spec/identity.js';
import { kdfRk, pqxdhSecret } from '../spec/kdf.js';
import { dh, generateKeyPair } from '../spec/keys.js';
import { decodePayload, type AppPayload } from '../spec/payload.js';
import { parsePreKeySignalMessage, parseSignalMessage, type ParsedSignalMessage } from '../spec/wire.js';
import { equalBytes } from '../spec/bytes.js';
import type { DeviceState } from '../impl/device.js';
import { ratchetDecrypt, ratchetEncrypt } from '../impl/double-ratchet.js';
import { decryptWithRecord } from '../impl/session-record.js';
import type { PreKeyState } from '../impl/prekeys.js';
import { receiveMessage, type DeviceRecord, type SesameState, type UserRecord } from '../impl/sesame.js';
import type { SessionRecord, SessionState } from '../impl/session-state.js';
import type { DeviceContext } from '../model/device-data.js';
import type { ModelSession, ModelSessionRecord } from '../model/sesame-sessions.js';

/** The keys a compromise yields: the victim's address, Sesame state and prekey store. */
export interface StolenState {
  readonly address: DeviceAddress;
  readonly sesame: SesameState;
  readonly prekeys: PreKeyState;
}

function isModelSnapshot(value: unknown): value is { readonly context: DeviceContext } {
  return typeof value === 'object' && value !== null && 'context' in value && 'value' in value;
}

function sessionOfModel(s: ModelSession): SessionState {
  return {
    version: s.version,
    localIdentityKey: s.ourIdentityKey,
    remoteIdentityKey: s.theirIdentityKey,
    localRegistrationId: s.ourRegistrationId,
    remoteRegistrationId: s.theirRegistrationId,
    aliceBaseKey: s.baseKey,
    rootKey: s.rootKey,
    senderRatchetKey: s.sendingRatchetKey,
    senderChainKey: { key: s.sendingChainKey, index: s.sendingIndex },
    previousCounter: s.previousCounter,
    receiverChains: s.receivingChains.map((c) => ({
      ratchetKey: c.ratchetKey,
      chainKey: { key: c.chainKey, index: c.nextIndex },
      skipped: c.skipped.map((k) => ({ index: k.index, seed: k.seed })),
    })),
    pendingPreKey: s.initiation === null ? null : { ...s.initiation },
  };
}

function recordOfModel(r: ModelSessionRecord): SessionRecord {
  return {
    current: r.active === null ? null : sessionOfModel(r.active),
    archived: r.inactive.map(sessionOfModel),
  };
}

function stolenFromModel(context: DeviceContext): StolenState {
  const users: Record<string, UserRecord> = {};
  for (const user of context.sesame.users) {
    const devices: Record<string, DeviceRecord> = {};
    for (const device of user.devices)
      devices[String(device.deviceId)] = {
        deviceId: device.deviceId,
        identityKey: device.identityKey,
        registrationId: device.registrationId,
        sessions: recordOfModel(device.sessions),
        staleSince: device.staleSince,
      };
    users[user.userId] = { userId: user.userId, staleSince: user.staleSince, devices };
  }
  return {
    address: { userId: context.userId, deviceId: context.deviceId },
    sesame: { self: context.sesame.self, users, messageRecords: [] },
    prekeys: {
      identityKeyPair: context.prekeys.identityKeyPair,
      registrationId: context.prekeys.registrationId,
      signedPreKeys: context.prekeys.signedPreKeys,
      oneTimePreKeys: context.prekeys.oneTimePreKeys,
      kyberPreKeys: context.prekeys.kyberPreKeys,
    },
  };
}

/**
 * The keys inside an engine snapshot (simulator/engine.ts `DeviceEngine.snapshot`): impl/'s
 * `DeviceState`, model/'s `{context, value}`, or `both`'s pair (its first half, which the second
 * equals at every step or the run stops at a divergence).
 */
export function stolenState(snapshot: unknown): StolenState {
  const first: unknown = Array.isArray(snapshot) ? (snapshot as unknown[])[0] : snapshot;
  if (isModelSnapshot(first)) return stolenFromModel(first.context);
  const state = first as DeviceState;
  return {
    address: { userId: state.userId, deviceId: state.deviceId },
    sesame: state.sesame,
    prekeys: state.prekeys,
  };
}

/** Every session a stolen state holds, with the peer device it belongs to. */
export function stolenSessions(
  stolen: StolenState,
): readonly { readonly peer: DeviceAddress; readonly session: SessionState }[] {
  const out: { peer: DeviceAddress; session: SessionState }[] = [];
  for (const user of Object.values(stolen.sesame.users))
    for (const device of Object.values(user.devices)) {
      const peer = { userId: user.userId, deviceId: device.deviceId };
      if (device.sessions.current !== null) out.push({ peer, session: device.sessions.current });
      for (const s of device.sessions.archived) out.push({ peer, session: s });
    }
  return out;
}

/**
 * Every ratchet public key a stolen state involves: its sessions' sending keys and signed prekeys
 * (their private keys were stolen) and the peers' keys of its receiving chains (their chain keys
 * were). A sending chain computed from one of them is one the attacker can follow; one between two
 * keys outside this set it cannot.
 */
export function stolenRatchetKeys(stolen: StolenState): readonly Uint8Array[] {
  const keys: Uint8Array[] = [];
  for (const { session } of stolenSessions(stolen)) {
    keys.push(session.senderRatchetKey.publicKey);
    for (const chain of session.receiverChains) keys.push(chain.ratchetKey);
  }
  for (const spk of stolen.prekeys.signedPreKeys) keys.push(spk.keyPair.publicKey);
  return keys;
}

function payloadOf(plaintext: Uint8Array): AppPayload | null {
  const decoded = decodePayload(plaintext);
  return decoded.ok ? decoded.value : null;
}

/**
 * A copy of a stolen state that receives what was addressed to the victim: Sesame receiving with
 * the victim's sessions and prekeys (new sessions from its signed and one-time prekeys included).
 * A success advances the copy, as it would the victim.
 */
export class ShadowReceiver {
  private sesame: SesameState;
  private prekeys: PreKeyState;
  /** Base keys of the sessions this copy made itself from the stolen prekeys. */
  private readonly created: Uint8Array[] = [];

  constructor(
    private readonly env: Env,
    stolen: StolenState,
  ) {
    this.sesame = stolen.sesame;
    this.prekeys = stolen.prekeys;
  }

  /**
   * Tries one envelope; the payload when it decrypts, and whether the session that decrypted it
   * was one this copy made from the stolen prekeys (a session started to the victim after the theft).
   */
  receive(
    sender: DeviceAddress,
    type: 'prekey' | 'whisper',
    bytes: Uint8Array,
    now: number,
  ): {
    readonly payload: AppPayload | null;
    readonly fromStolenPrekeys: boolean;
    readonly baseKey: Uint8Array | null;
  } | null {
    const received = receiveMessage(this.env, this.sesame, this.prekeys, sender, type, bytes, now);
    if (!received.ok) return null;
    this.sesame = received.value.state;
    this.prekeys = received.value.prekeys;
    // The session that decrypts becomes current (WP-REC-02, WP-SES-10).
    const used = this.sesame.users[sender.userId]?.devices[String(sender.deviceId)]?.sessions.current ?? null;
    if (received.value.sessionCreated && used !== null) this.created.push(used.aliceBaseKey);
    const fromStolenPrekeys = used !== null && this.created.some((k) => equalBytes(k, used.aliceBaseKey));
    return {
      payload: payloadOf(received.value.plaintext),
      fromStolenPrekeys,
      baseKey: used === null ? null : used.aliceBaseKey,
    };
  }
}

/** The inner SignalMessage of a ciphertext copy, or null. */
export function innerMessage(type: string, bytes: Uint8Array): ParsedSignalMessage | null {
  if (type === 'prekey') {
    const parsed = parsePreKeySignalMessage(bytes);
    return parsed.ok ? parsed.value.inner : null;
  }
  if (type === 'whisper') {
    const parsed = parseSignalMessage(bytes);
    return parsed.ok ? parsed.value : null;
  }
  return null;
}

/**
 * A copy the victim sent to `recipient`, read with the sending chains the stolen state held (with
 * the base key of the session that read it): the
 * chain is mirrored into a receiving chain (identities swapped for the MAC) and the reference
 * decryption runs on it. Only chains the victim held at the compromise can be followed; a chain it
 * started later came from fresh randomness the attacker did not see.
 */
export function decryptOutgoing(
  env: Env,
  stolen: StolenState,
  recipient: DeviceAddress,
  type: string,
  bytes: Uint8Array,
): { readonly payload: AppPayload | null; readonly baseKey: Uint8Array } | null {
  const message = innerMessage(type, bytes);
  if (message === null) return null;
  const device = stolen.sesame.users[recipient.userId]?.devices[String(recipient.deviceId)];
  if (device === undefined) return null;
  const sessions = [device.sessions.current, ...device.sessions.archived];
  for (const session of sessions) {
    if (session === null) continue;
    if (!equalBytes(session.senderRatchetKey.publicKey, message.ratchetKey)) continue;
    if (message.counter < session.senderChainKey.index) continue;
    const mirror: SessionState = {
      ...session,
      localIdentityKey: session.remoteIdentityKey,
      remoteIdentityKey: session.localIdentityKey,
      receiverChains: [{ ratchetKey: message.ratchetKey, chainKey: session.senderChainKey, skipped: [] }],
      pendingPreKey: null,
    };
    const decrypted = ratchetDecrypt(env, mirror, message);
    if (decrypted.ok) return { payload: payloadOf(decrypted.value.plaintext), baseKey: session.aliceBaseKey };
  }
  return null;
}

/**
 * A session the attacker made itself (a KCI forgery's): it reads what the victim sends back on it.
 */
export class SessionReader {
  private record: SessionRecord;

  constructor(
    private readonly env: Env,
    session: SessionState,
  ) {
    this.record = { current: session, archived: [] };
  }

  /** Tries one copy the victim sent on the session; the payload when it decrypts. */
  receive(type: string, bytes: Uint8Array): AppPayload | null {
    const message = innerMessage(type, bytes);
    if (message === null) return null;
    const decrypted = decryptWithRecord(this.env, this.record, message);
    if (!decrypted.ok) return null;
    this.record = decrypted.value.record;
    return payloadOf(decrypted.value.plaintext);
  }
}

/** Who a forged message claims to come from. */
export interface ClaimedSender {
  readonly identityKey: Uint8Array;
  readonly registrationId: number;
}

/**
 * KCI (KBB; X3DH §4.6; Sesame §6.2): a PreKey message claiming `claimed`'s identity key, built with
 * the recipient's stolen signed prekey instead of the claimed sender's identity private key
 * (DH(IK_A, SPK_B) = DH(SPK_B, IK_A)). No one-time prekey; the Kyber prekey is the recipient's
 * last-resort key, which use does not consume. Draws base key, ratchet key, KEM seed from `env`.
 * Null when the stolen state holds no signed or last-resort Kyber prekey.
 */
export function forgeKciMessage(
  env: Env,
  victim: StolenState,
  claimed: ClaimedSender,
  payload: Uint8Array,
  now: number,
): { readonly type: 'prekey'; readonly bytes: Uint8Array; readonly session: SessionState } | null {
  const c = env.crypto;
  const spk = victim.prekeys.signedPreKeys[victim.prekeys.signedPreKeys.length - 1];
  const kyber = victim.prekeys.kyberPreKeys.find((k) => k.lastResort);
  if (spk === undefined || kyber === undefined) return null;
  const base = generateKeyPair(c, env.rng);
  const ratchet = generateKeyPair(c, env.rng);
  const encapsulated = kemEncapsulate(env.crypto, kyber.publicKey, env.rng);
  const outputs: Uint8Array[] = [];
  for (const [ours, theirs] of [
    [spk.keyPair.privateKey, claimed.identityKey],
    [base.privateKey, victim.prekeys.identityKeyPair.publicKey],
    [base.privateKey, spk.keyPair.publicKey],
  ] as const) {
    const out = dh(c, ours, theirs);
    if (!out.ok) return null;
    outputs.push(out.value);
  }
  const secret = pqxdhSecret(c, outputs, encapsulated.sharedSecret);
  const ratchetDh = dh(c, ratchet.privateKey, spk.keyPair.publicKey);
  if (!ratchetDh.ok) return null;
  const sending = kdfRk(c, secret.rootKey, ratchetDh.value);
  const session: SessionState = {
    version: CIPHERTEXT_MESSAGE_CURRENT_VERSION,
    localIdentityKey: claimed.identityKey,
    remoteIdentityKey: victim.prekeys.identityKeyPair.publicKey,
    localRegistrationId: claimed.registrationId,
    remoteRegistrationId: victim.prekeys.registrationId,
    aliceBaseKey: base.publicKey,
    rootKey: sending.rootKey,
    senderRatchetKey: ratchet,
    senderChainKey: { key: sending.chainKey, index: 0 },
    previousCounter: 0,
    receiverChains: [
      { ratchetKey: spk.keyPair.publicKey, chainKey: { key: secret.chainKey, index: 0 }, skipped: [] },
    ],
    pendingPreKey: {
      preKeyId: null,
      signedPreKeyId: spk.keyId,
      kyberPreKeyId: kyber.keyId,
      kyberCiphertext: encapsulated.ciphertext,
      baseKey: base.publicKey,
      createdAt: now,
    },
  };
  const encrypted = ratchetEncrypt(env, session, payload);
  const message = encrypted.message;
  return message.type === 'prekey'
    ? { type: 'prekey', bytes: message.bytes, session: encrypted.session }
    : null;
}
