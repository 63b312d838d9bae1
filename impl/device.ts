/**
 * One client device: the whole multi-device client on top of the session layer and Sesame
 * (WHITEPAPER.md, "Device lists and trust" WP-TRUST-*, "Transport" WP-XPORT-*, "Device lifecycle"
 * WP-LIFE-*; Sesame rev 2 §3.3–§4.1).
 *
 * A device is a pure step function: `deviceStep(env, state, input, now) → { state, outputs }`. It
 * never talks to the network itself: every server request is an output (`request`, with an id), and
 * every server answer comes back as an input (`net.response`). Timers are inputs too
 * (`timer.resend`, `timer.poll-provisioning`, `timer.rotate-signed-prekey`), so a simulator owns
 * time and the network.
 *
 * What it does:
 * - **Sending** (Sesame §3.3): for each recipient user (and one's own siblings, as a sync copy) an
 *   outbox item walks: device list → device records (ConditionalUpdate; key-change events) →
 *   bundles for devices without a session (PrepEncrypt) → encrypt to every current device → send.
 *   A refusal (unknown user, missing/extra/stale devices) updates the records from the refusal's
 *   device list and loops, at most MAX_SEND_ATTEMPTS times (WP-XPORT-03).
 * - **Transport**: every send carries an idempotent message id; unanswered requests are resent on
 *   `timer.resend` until the server answers (WP-XPORT-01); received envelopes are acknowledged
 *   after processing, duplicates are acknowledged and dropped, never shown twice (WP-XPORT-02).
 * - **Trust**: in `signed` mode (the default) every device list is verified against the pinned
 *   account key, may not go back in version, and every device encrypted to or accepted from must be
 *   in the latest verified list (WP-TRUST-*). `server` mode is Sesame's original behaviour: the
 *   server's word is taken, so the simulator can show what the signature prevents.
 * - **Lifecycle**: a primary creates the account and the account key; it links new devices by QR
 *   provisioning and revokes devices by signing a list without them (WP-LIFE-*). Every linked device
 *   keeps its one-time prekeys stocked (WP-LIFE-06) and rotates its signed prekey when its rotation
 *   timer fires, keeping retired ones for a grace period (WP-LIFE-07, WP-LIFE-08).
 * @module
 */
import {
  CHAIN_SIGHTINGS_CAPACITY,
  INITIAL_REPLAY_CACHE_CAPACITY,
  MAX_DEVICES_PER_ACCOUNT,
  MAX_ONE_TIME_PREKEYS,
  MAX_SEND_ATTEMPTS,
  MAX_SIGNED_PREKEYS,
  SIGNED_PREKEY_GRACE_PERIOD,
} from '../spec/constants.js';
import { planted } from '../spec/bugs.js';
import { copyBytes, equalBytes } from '../spec/bytes.js';
import { encryptAttachment, decryptAttachment, type AttachmentPointer } from '../spec/attachment.js';
import { checkContactLink, type ContactLink } from '../spec/contact-link.js';
import {
  decodeDeviceList,
  encodeDeviceList,
  registrationProofMessage,
  signAccountCertificate,
  signDeviceList,
  signRegistrationProof,
  verifyAccountCertificate,
  verifySignedDeviceList,
} from '../spec/device-list.js';
import type { DeviceList, DeviceListEntry, SignedDeviceList } from '../spec/device-list-types.js';
import type { Env } from '../spec/env.js';
import {
  accept,
  InvariantError,
  reject,
  UsageError,
  type ErrorCode,
  type ProtocolError,
  type Result,
} from '../spec/errors.js';
import { toHex } from '../spec/hex.js';
import {
  MAX_DEVICE_ID,
  PRIMARY_DEVICE_ID,
  type DeviceAddress,
  type DeviceId,
  type MessageId,
  type UserId,
} from '../spec/identity.js';
import { generateKeyPair, type KeyPair } from '../spec/keys.js';
import { decodePayload, encodePayload, type AppPayload, type PayloadContent } from '../spec/payload.js';
import {
  decodeProvisionMessage,
  decryptProvisionEnvelope,
  encodeProvisionMessage,
  encryptProvisionEnvelope,
  RELAY_ADDRESS_BYTES,
  relayAddressFromBytes,
  type ProvisioningCode,
} from '../spec/provisioning.js';
import { decodeRetryRequest, encodeRetryRequest } from '../spec/retry-request.js';
import { parsePreKeySignalMessage, parseSignalMessage, type ParsedSignalMessage } from '../spec/wire.js';
import { HARDENED_OPTIONS, type SecurityOptions } from '../spec/security-mode.js';
import type {
  Envelope,
  PreKeyUpload,
  SendRefusal,
  ServerRequest,
  ServerResponse,
} from '../spec/server-api.js';
import {
  generateKyberPreKey,
  generateOneTimePreKey,
  generatePreKeyState,
  generateSignedPreKey,
  type PreKeyState,
} from './prekeys.js';
import type { SessionRecord, SessionState } from './session-state.js';
import {
  applySendRefusal,
  cleanupStaleRecords,
  conditionalUpdate,
  devicesNeedingSessions,
  emptySesameState,
  encryptForDevice,
  encryptForUser,
  getDeviceRecord,
  getUserRecord,
  handleRetryRequest,
  markDeviceStale,
  prepEncrypt,
  prepEncryptNewSession,
  receiveMessage,
  recordSentMessage,
  type SesameState,
  type UserRecord,
} from './sesame.js';

/**
 * The security switches of a device (spec/security-mode.ts): how it decides which devices of a user
 * exist (WP-TRUST-02) and which hardenings against published attacks are on.
 */
export type DeviceOptions = SecurityOptions;

/** The hardened default: every switch on (spec/security-mode.ts `HARDENED_OPTIONS`). */
export const DEFAULT_DEVICE_OPTIONS: DeviceOptions = HARDENED_OPTIONS;

/** Received payload ids remembered to drop duplicates (WP-XPORT-02); oldest forgotten beyond this. */
export const MAX_SEEN_MESSAGE_IDS = 4_096;
/** Outbox items a device holds at once; a send beyond it is refused to the user. */
export const MAX_OUTBOX = 1_024;
/** Envelopes parked while their sender's device list is fetched. */
export const MAX_PARKED = 1_024;
/** One-time EC prekeys uploaded per batch, and the level below which a device replenishes. */
export const ONE_TIME_PREKEY_BATCH = 10;
/** WP-LIFE-06: replenish one-time EC prekeys when fewer than this remain. */
export const ONE_TIME_PREKEY_LOW_WATER = 3;
/** One-time Kyber prekeys uploaded per batch. */
export const KYBER_PREKEY_BATCH = 2;
/** WP-LIFE-06: replenish one-time Kyber prekeys when none remain. */
export const KYBER_PREKEY_LOW_WATER = 1;

/** What a device knows and trusts about one account (its own included). */
export interface TrustEntry {
  readonly userId: UserId;
  /** The pinned account key (from a contact link, first use, or one's own account). */
  readonly accountKey: Uint8Array | null;
  /** A changed account key waiting for the user's acknowledgment; sends are blocked meanwhile. */
  readonly pendingAccountKey: Uint8Array | null;
  /** The contact link's fingerprint the first list must match (WP-TRUST-01). */
  readonly expectedFingerprint: ContactLink | null;
  /** The latest accepted device list and its exact encoding. */
  readonly list: DeviceList | null;
  readonly listBytes: Uint8Array | null;
}

/** Content a user asks to send; attachments are encrypted once and uploaded once (WP-ATT). */
export type SendContent =
  | { readonly kind: 'text'; readonly text: string }
  | {
      readonly kind: 'attachment';
      readonly bytes: Uint8Array;
      readonly contentType: string;
      readonly caption: string;
    };

/** One message on its way to one recipient account. */
export interface OutboxItem {
  /** Transport message id: the idempotency key at the server (WP-XPORT-01). */
  readonly messageId: MessageId;
  readonly recipient: UserId;
  readonly kind: 'message' | 'resend' | 'retry-request';
  /** The encoded payload (message, resend) or retry-request bytes. */
  readonly plaintext: Uint8Array;
  /** For resends and retry requests: the one target device. */
  readonly onlyDevice: DeviceId | null;
  /** For resends: whether a fresh session is needed first (Sesame §4.1). */
  readonly needNewSession: boolean;
  readonly stage:
    'need-list' | 'need-bundles' | 'sending' | 'waiting-blob' | 'blocked' | 'mailbox-full' | 'ready';
  readonly attempts: number;
  readonly blobId: string | null;
  /** The recipient's user record when this send started, for WP-XPORT-03 rollback. */
  readonly recordBefore: UserRecord | null;
  readonly recordCaptured: boolean;
  /** The sync copy for one's own other devices, sent once the server accepts this send (Sesame §3.3). */
  readonly syncCopy: Uint8Array | null;
  /** For resends: the transport id of the message record this resend replaces (WP-XPORT-06). */
  readonly replacesMessageId: MessageId | null;
}

/** A request awaiting its answer, with what the answer is for. */
export interface PendingRequest {
  readonly requestId: number;
  readonly request: ServerRequest;
  readonly purpose:
    | { readonly kind: 'register' }
    | { readonly kind: 'upload-prekeys' }
    | { readonly kind: 'device-list'; readonly userId: UserId }
    | { readonly kind: 'bundles'; readonly messageId: MessageId; readonly recipient: UserId }
    | { readonly kind: 'send'; readonly messageId: MessageId; readonly recipient: UserId }
    | { readonly kind: 'fetch' }
    | { readonly kind: 'ack' }
    | {
        readonly kind: 'link';
        readonly code: ProvisioningCode;
        readonly deviceId: DeviceId;
        readonly list: SignedDeviceList;
      }
    | { readonly kind: 'revoke'; readonly deviceId: DeviceId; readonly list: SignedDeviceList }
    | { readonly kind: 'provision-put' }
    | { readonly kind: 'provision-get' }
    | { readonly kind: 'blob-put'; readonly blobId: string }
    | { readonly kind: 'blob-get'; readonly pointer: AttachmentPointer };
}

/** Where a device is in its life (WP-LIFE-01). */
export type Lifecycle =
  | {
      readonly kind: 'provisioning';
      readonly relayAddress: string;
      readonly ephemeralKey: KeyPair;
    }
  | { readonly kind: 'registering' }
  | { readonly kind: 'linked' }
  | { readonly kind: 'revoked' };

/**
 * A signed prekey the server no longer hands out (WP-LIFE-08): still held, so PreKey messages made
 * from bundles fetched earlier decrypt, until its grace period has passed.
 */
export interface RetiredSignedPreKey {
  readonly keyId: number;
  /** When the server confirmed it stores a newer signed prekey (the grace period starts here). */
  readonly retiredAt: number;
}

/** A received envelope waiting for its sender's device list. */
export interface ParkedEnvelope {
  readonly envelope: Envelope;
  /** True once a list for the sender arrived after parking: then an unknown sender is rejected. */
  readonly listRefreshed: boolean;
}

/** The complete state of one device: plain data, canonical JSON in impl/device-codec.ts. */
export interface DeviceState {
  readonly options: DeviceOptions;
  readonly lifecycle: Lifecycle;
  readonly userId: UserId;
  readonly deviceId: DeviceId;
  readonly prekeys: PreKeyState;
  readonly nextPreKeyId: number;
  readonly nextKyberPreKeyId: number;
  /** Signed prekeys in their grace period, oldest first (WP-LIFE-08); the newest is never retired. */
  readonly retiredSignedPreKeys: readonly RetiredSignedPreKey[];
  /** Only the primary holds the account private key. */
  readonly accountPrivateKey: Uint8Array | null;
  readonly sesame: SesameState;
  readonly trust: Readonly<Record<UserId, TrustEntry>>;
  readonly outbox: readonly OutboxItem[];
  readonly pending: readonly PendingRequest[];
  readonly nextRequestId: number;
  readonly seen: readonly MessageId[];
  readonly parked: readonly ParkedEnvelope[];
  readonly linkedAt: number;
  readonly lastFullDrainAt: number;
  /** WP-PQXDH-13: accepted PreKey messages made without a one-time prekey, oldest first. */
  readonly initialMessages: readonly InitialMessageSighting[];
  /** WP-SES-20: what this device saw of its peers' sending chains, oldest first. */
  readonly chainSightings: readonly ChainSighting[];
}

/**
 * WP-PQXDH-13: a PreKey message this device accepted although it named no one-time prekey: the
 * sender's identity key and base key identify it, the signed prekey id says how long it matters.
 */
export interface InitialMessageSighting {
  readonly senderIdentityKey: Uint8Array;
  readonly baseKey: Uint8Array;
  readonly signedPreKeyId: number;
}

/**
 * WP-SES-20: one sending chain of a peer device as this device saw it: the session (its base key),
 * the chain's ratchet key, the `previous_counter` its messages announce for the peer's chain before
 * it, and the highest counter accepted on it.
 */
export interface ChainSighting {
  readonly peer: DeviceAddress;
  readonly sessionBaseKey: Uint8Array;
  readonly ratchetKey: Uint8Array;
  readonly previousCounter: number;
  readonly highestCounter: number;
}

/** What the user, the network and the clock tell a device. */
export type DeviceInput =
  | { readonly kind: 'user.send'; readonly recipients: readonly UserId[]; readonly content: SendContent }
  | { readonly kind: 'user.add-contact'; readonly link: ContactLink }
  | { readonly kind: 'user.acknowledge-key-change'; readonly userId: UserId }
  | { readonly kind: 'user.link-device'; readonly code: ProvisioningCode }
  | { readonly kind: 'user.revoke-device'; readonly deviceId: DeviceId }
  | { readonly kind: 'user.download'; readonly pointer: AttachmentPointer }
  | { readonly kind: 'net.fetch' }
  | { readonly kind: 'net.response'; readonly requestId: number; readonly response: ServerResponse }
  | { readonly kind: 'timer.resend' }
  | { readonly kind: 'timer.poll-provisioning' }
  | {
      /**
       * WP-LIFE-07, WP-LIFE-08: the signed-prekey rotation timer fired (every
       * SIGNED_PREKEY_ROTATION_INTERVAL in an application). `gracePeriod` (milliseconds, default
       * SIGNED_PREKEY_GRACE_PERIOD) lets a simulation retire keys within a short run.
       */
      readonly kind: 'timer.rotate-signed-prekey';
      readonly gracePeriod?: number;
    };

/** What a device tells the network and the user. */
export type DeviceOutput =
  | { readonly kind: 'request'; readonly requestId: number; readonly request: ServerRequest }
  | { readonly kind: 'delivered'; readonly from: DeviceAddress; readonly payload: AppPayload }
  | { readonly kind: 'sent'; readonly messageId: MessageId; readonly recipient: UserId }
  | {
      readonly kind: 'send-failed';
      readonly messageId: MessageId;
      readonly recipient: UserId;
      readonly error: ProtocolError;
    }
  | { readonly kind: 'key-change'; readonly userId: UserId; readonly deviceId: DeviceId | null }
  | {
      readonly kind: 'device-list-changed';
      readonly userId: UserId;
      readonly version: number;
      readonly added: readonly DeviceId[];
      readonly removed: readonly DeviceId[];
    }
  | {
      readonly kind: 'undecryptable';
      readonly from: DeviceAddress;
      readonly messageId: MessageId;
      readonly error: ProtocolError;
    }
  | { readonly kind: 'duplicate-dropped'; readonly from: DeviceAddress; readonly messageId: MessageId }
  /** WP-SES-20: authenticated evidence that the sending device's ratchet state forked (a clone); the message was refused. */
  | { readonly kind: 'clone-detected'; readonly from: DeviceAddress; readonly evidence: string }
  | { readonly kind: 'resent'; readonly messageId: MessageId; readonly to: DeviceAddress }
  | { readonly kind: 'attachment'; readonly pointer: AttachmentPointer; readonly bytes: Uint8Array }
  | { readonly kind: 'attachment-failed'; readonly pointer: AttachmentPointer; readonly error: ProtocolError }
  | { readonly kind: 'linked'; readonly address: DeviceAddress }
  | { readonly kind: 'device-linked'; readonly address: DeviceAddress }
  | { readonly kind: 'revoked' }
  | { readonly kind: 'error'; readonly context: string; readonly error: ProtocolError };

/** A step's result. */
export interface DeviceStepResult {
  readonly state: DeviceState;
  readonly outputs: readonly DeviceOutput[];
}

/** The mutable frame of one step: the state so far and the outputs so far. Never escapes a step. */
interface Tx {
  state: DeviceState;
  readonly outputs: DeviceOutput[];
  readonly env: Env;
  readonly now: number;
}

// ---------------------------------------------------------------------------------------------
// Creating devices

/** The public prekeys of a device as the server stores them. */
export function preKeyUpload(
  prekeys: PreKeyState,
  onlyNew?: { readonly fromPreKeyId: number; readonly fromKyberId: number },
): PreKeyUpload {
  const signed = prekeys.signedPreKeys[prekeys.signedPreKeys.length - 1];
  if (signed === undefined) throw new Error('device has no signed prekey');
  return {
    signedPreKey: { keyId: signed.keyId, publicKey: signed.keyPair.publicKey, signature: signed.signature },
    oneTimePreKeys: prekeys.oneTimePreKeys
      .filter((k) => onlyNew === undefined || k.keyId >= onlyNew.fromPreKeyId)
      .map((k) => ({ keyId: k.keyId, publicKey: k.keyPair.publicKey })),
    kyberPreKeys: prekeys.kyberPreKeys
      .filter((k) => onlyNew === undefined || k.lastResort || k.keyId >= onlyNew.fromKyberId)
      .map((k) => ({
        keyId: k.keyId,
        publicKey: k.publicKey,
        signature: k.signature,
        lastResort: k.lastResort,
      })),
  };
}

function baseState(
  options: DeviceOptions,
  prekeys: PreKeyState,
  lifecycle: Lifecycle,
  address: DeviceAddress,
): DeviceState {
  return {
    options,
    lifecycle,
    userId: address.userId,
    deviceId: address.deviceId,
    prekeys,
    nextPreKeyId: prekeys.oneTimePreKeys.length + 1,
    nextKyberPreKeyId: prekeys.kyberPreKeys.length + 1,
    retiredSignedPreKeys: [],
    accountPrivateKey: null,
    sesame: emptySesameState(address),
    trust: {},
    outbox: [],
    pending: [],
    nextRequestId: 1,
    seen: [],
    parked: [],
    linkedAt: 0,
    lastFullDrainAt: 0,
    initialMessages: [],
    chainSightings: [],
  };
}

/**
 * WP-LIFE-01: a new account's primary device: its identity and prekeys, the account key, and the
 * first signed device list (version 1, this device alone). Returns the registration request.
 */
export function createPrimaryDevice(
  env: Env,
  userId: UserId,
  now: number,
  options: DeviceOptions = DEFAULT_DEVICE_OPTIONS,
): DeviceStepResult {
  const prekeys = generatePreKeyState(env, {
    oneTimePreKeys: ONE_TIME_PREKEY_BATCH,
    oneTimeKyberPreKeys: KYBER_PREKEY_BATCH,
  });
  const accountKey = generateKeyPair(env.crypto, env.rng);
  const list: DeviceList = {
    userId,
    version: 1,
    accountKey: accountKey.publicKey,
    devices: [
      {
        deviceId: PRIMARY_DEVICE_ID,
        identityKey: prekeys.identityKeyPair.publicKey,
        registrationId: prekeys.registrationId,
      },
    ],
  };
  const signed = signDeviceList(env.crypto, accountKey.privateKey, list, env.rng.randomBytes(64));
  return createPrimaryFromList(env, prekeys, accountKey, list, signed, now, options);
}

/**
 * WP-LIFE-05: a lost primary comes back with a new account key (an account reset). The list version
 * continues above the old one; contacts see an account-key change before anything is sent.
 */
export function resetPrimaryDevice(
  env: Env,
  userId: UserId,
  previousListVersion: number,
  now: number,
  options: DeviceOptions = DEFAULT_DEVICE_OPTIONS,
): DeviceStepResult {
  const prekeys = generatePreKeyState(env, {
    oneTimePreKeys: ONE_TIME_PREKEY_BATCH,
    oneTimeKyberPreKeys: KYBER_PREKEY_BATCH,
  });
  const accountKey = generateKeyPair(env.crypto, env.rng);
  const list: DeviceList = {
    userId,
    version: previousListVersion + 1,
    accountKey: accountKey.publicKey,
    devices: [
      {
        deviceId: PRIMARY_DEVICE_ID,
        identityKey: prekeys.identityKeyPair.publicKey,
        registrationId: prekeys.registrationId,
      },
    ],
  };
  const signed = signDeviceList(env.crypto, accountKey.privateKey, list, env.rng.randomBytes(64));
  return createPrimaryFromList(env, prekeys, accountKey, list, signed, now, options);
}

function createPrimaryFromList(
  env: Env,
  prekeys: PreKeyState,
  accountKey: KeyPair,
  list: DeviceList,
  signed: SignedDeviceList,
  now: number,
  options: DeviceOptions,
): DeviceStepResult {
  const address = { userId: list.userId, deviceId: PRIMARY_DEVICE_ID };
  const proofMessage = registrationProofMessage(
    address,
    prekeys.identityKeyPair.publicKey,
    prekeys.registrationId,
    accountKey.publicKey,
  );
  const proof = signRegistrationProof(
    env.crypto,
    prekeys.identityKeyPair.privateKey,
    proofMessage,
    env.rng.randomBytes(64),
  );
  const state: DeviceState = {
    ...baseState(options, prekeys, { kind: 'registering' }, address),
    accountPrivateKey: accountKey.privateKey,
    trust: {
      [list.userId]: {
        userId: list.userId,
        accountKey: accountKey.publicKey,
        pendingAccountKey: null,
        expectedFingerprint: null,
        list,
        listBytes: signed.list,
      },
    },
  };
  const tx: Tx = { state, outputs: [], env, now };
  issue(
    tx,
    { kind: 'register' },
    {
      kind: 'register-account',
      device: address,
      identityKey: prekeys.identityKeyPair.publicKey,
      registrationId: prekeys.registrationId,
      deviceList: signed,
      proof,
      preKeys: preKeyUpload(prekeys),
    },
  );
  return { state: tx.state, outputs: tx.outputs };
}

/**
 * WP-LIFE-03: a device to be linked: its own identity and prekeys, an ephemeral key and a relay
 * address, shown to the primary as a QR code (`code`).
 */
export function createProvisioningDevice(
  env: Env,
  now: number,
  options: DeviceOptions = DEFAULT_DEVICE_OPTIONS,
): DeviceStepResult & { readonly code: ProvisioningCode } {
  const prekeys = generatePreKeyState(env, {
    oneTimePreKeys: ONE_TIME_PREKEY_BATCH,
    oneTimeKyberPreKeys: KYBER_PREKEY_BATCH,
  });
  const ephemeralKey = generateKeyPair(env.crypto, env.rng);
  const relayAddress = relayAddressFromBytes(env.rng.randomBytes(RELAY_ADDRESS_BYTES));
  const state = baseState(
    options,
    prekeys,
    { kind: 'provisioning', relayAddress, ephemeralKey },
    { userId: 'unlinked', deviceId: PRIMARY_DEVICE_ID },
  );
  const code: ProvisioningCode = {
    relayAddress,
    ephemeralPublicKey: ephemeralKey.publicKey,
    identityKey: prekeys.identityKeyPair.publicKey,
    registrationId: prekeys.registrationId,
  };
  void now;
  return { state, outputs: [], code };
}

// ---------------------------------------------------------------------------------------------
// The step function

/** Applies one input to a device. Never throws on bad network input; returns typed error outputs. */
export function deviceStep(env: Env, state: DeviceState, input: DeviceInput, now: number): DeviceStepResult {
  const tx: Tx = { state, outputs: [], env, now };
  switch (input.kind) {
    case 'user.send':
      userSend(tx, input.recipients, input.content);
      break;
    case 'user.add-contact':
      addContact(tx, input.link);
      break;
    case 'user.acknowledge-key-change':
      if (tx.state.lifecycle.kind === 'linked') acknowledgeKeyChange(tx, input.userId);
      break;
    case 'user.link-device':
      linkDevice(tx, input.code);
      break;
    case 'user.revoke-device':
      revokeDevice(tx, input.deviceId);
      break;
    case 'user.download':
      if (requireLinked(tx, 'download'))
        issue(
          tx,
          { kind: 'blob-get', pointer: input.pointer },
          { kind: 'blob-get', blobId: input.pointer.blobId },
        );
      break;
    case 'net.fetch':
      if (tx.state.lifecycle.kind === 'linked' && !tx.state.pending.some((p) => p.purpose.kind === 'fetch')) {
        issue(tx, { kind: 'fetch' }, { kind: 'fetch', device: ownAddress(tx.state) });
      }
      break;
    case 'net.response':
      onResponse(tx, input.requestId, input.response);
      break;
    case 'timer.resend':
      // WP-LIFE-01: a revoked device sends nothing more.
      if (tx.state.lifecycle.kind !== 'revoked') resendPending(tx);
      break;
    case 'timer.poll-provisioning':
      if (
        tx.state.lifecycle.kind === 'provisioning' &&
        !tx.state.pending.some((p) => p.purpose.kind === 'provision-get')
      ) {
        issue(
          tx,
          { kind: 'provision-get' },
          { kind: 'provision-get', address: tx.state.lifecycle.relayAddress },
        );
      }
      break;
    case 'timer.rotate-signed-prekey': {
      const gracePeriod = input.gracePeriod ?? SIGNED_PREKEY_GRACE_PERIOD;
      if (!Number.isSafeInteger(gracePeriod) || gracePeriod < 0)
        throw new UsageError(`gracePeriod must be a non-negative safe integer, got ${gracePeriod}`);
      // Only a linked device publishes prekeys; the timer is ignored in every other phase.
      if (tx.state.lifecycle.kind === 'linked') {
        deleteExpiredSignedPreKeys(tx, gracePeriod);
        rotateSignedPreKey(tx);
      }
      break;
    }
  }
  return { state: tx.state, outputs: tx.outputs };
}

function ownAddress(state: DeviceState): DeviceAddress {
  return { userId: state.userId, deviceId: state.deviceId };
}

function emit(tx: Tx, output: DeviceOutput): void {
  tx.outputs.push(output);
}

function emitError(tx: Tx, context: string, code: ErrorCode, message: string): void {
  const r = reject(code, message);
  emit(tx, { kind: 'error', context, error: r.error });
}

function requireLinked(tx: Tx, context: string): boolean {
  if (tx.state.lifecycle.kind === 'linked') return true;
  // WP-LIFE-01: only a linked device sends or receives.
  emitError(
    tx,
    context,
    tx.state.lifecycle.kind === 'revoked' ? 'LIFE_REVOKED' : 'LIFE_NOT_LINKED',
    `device is ${tx.state.lifecycle.kind}`,
  );
  return false;
}

function issue(tx: Tx, purpose: PendingRequest['purpose'], request: ServerRequest): void {
  const requestId = tx.state.nextRequestId;
  tx.state = {
    ...tx.state,
    nextRequestId: requestId + 1,
    pending: [...tx.state.pending, { requestId, request, purpose }],
  };
  emit(tx, { kind: 'request', requestId, request });
}

/** WP-XPORT-01: every unanswered request goes out again, unchanged (same message ids). */
function resendPending(tx: Tx): void {
  for (const pending of tx.state.pending) {
    if (
      pending.purpose.kind === 'fetch' ||
      pending.purpose.kind === 'ack' ||
      pending.purpose.kind === 'provision-get'
    )
      continue;
    emit(tx, { kind: 'request', requestId: pending.requestId, request: pending.request });
  }
  // Fetches, acks and relay polls are not resent: the next poll asks again.
  tx.state = {
    ...tx.state,
    pending: tx.state.pending.filter(
      (p) => p.purpose.kind !== 'fetch' && p.purpose.kind !== 'ack' && p.purpose.kind !== 'provision-get',
    ),
  };
  // Mailbox-full sends are tried again (WP-XPORT-05).
  for (const item of tx.state.outbox) {
    if (item.stage === 'mailbox-full') {
      updateItem(tx, item.messageId, item.recipient, { stage: 'ready' });
      advance(tx, item.messageId, item.recipient);
    }
  }
}

function onResponse(tx: Tx, requestId: number, response: ServerResponse): void {
  const pending = tx.state.pending.find((p) => p.requestId === requestId);
  // A response to nothing we wait for (a duplicate or a late answer) is ignored.
  if (pending === undefined) return;
  tx.state = { ...tx.state, pending: tx.state.pending.filter((p) => p.requestId !== requestId) };
  const purpose = pending.purpose;
  switch (purpose.kind) {
    case 'register':
      onRegistered(tx, response);
      return;
    case 'upload-prekeys':
      if (response.kind === 'error') {
        emit(tx, { kind: 'error', context: 'upload-prekeys', error: serverError(response) });
        return;
      }
      if (pending.request.kind === 'upload-prekeys')
        retireSignedPreKeys(tx, pending.request.preKeys.signedPreKey.keyId);
      // WP-LIFE-06: keys used up while this upload was in flight are replenished now.
      replenishPreKeys(tx);
      return;
    case 'device-list':
      onDeviceList(tx, purpose.userId, response);
      return;
    case 'bundles':
      onBundles(
        tx,
        purpose.messageId,
        purpose.recipient,
        response,
        pending.request.kind === 'get-bundles' ? pending.request.deviceIds : [],
      );
      return;
    case 'send':
      onSendResponse(tx, purpose.messageId, purpose.recipient, response);
      return;
    case 'fetch':
      onFetch(tx, response);
      return;
    case 'ack':
      return;
    case 'link':
      onLinkListUpdated(tx, purpose.code, purpose.deviceId, purpose.list, response);
      return;
    case 'revoke':
      onRevokeListUpdated(tx, purpose.deviceId, purpose.list, response);
      return;
    case 'provision-put':
      if (response.kind === 'error')
        emit(tx, { kind: 'error', context: 'provision-put', error: serverError(response) });
      return;
    case 'provision-get':
      onProvisionMessage(tx, response);
      return;
    case 'blob-put':
      onBlobStored(tx, purpose.blobId, response);
      return;
    case 'blob-get':
      onBlob(tx, purpose.pointer, response);
      return;
  }
}

function serverError(response: ServerResponse): ProtocolError {
  if (response.kind === 'error')
    return { code: response.code, rule: response.rule, message: response.message };
  return reject('XPORT_SERVER_ERROR', `unexpected server answer ${response.kind}`).error;
}

function onRegistered(tx: Tx, response: ServerResponse): void {
  if (response.kind !== 'ok') {
    emit(tx, { kind: 'error', context: 'register', error: serverError(response) });
    return;
  }
  // WP-LIFE-03: registered with the server; from now on the device receives.
  tx.state = { ...tx.state, lifecycle: { kind: 'linked' }, linkedAt: tx.now };
  emit(tx, { kind: 'linked', address: ownAddress(tx.state) });
}

// ---------------------------------------------------------------------------------------------
// Contacts and trust

function trustOf(state: DeviceState, userId: UserId): TrustEntry | undefined {
  // Own properties only: `constructor` is a valid user id.
  return Object.hasOwn(state.trust, userId) ? state.trust[userId] : undefined;
}

function setTrust(tx: Tx, entry: TrustEntry): void {
  tx.state = { ...tx.state, trust: { ...tx.state.trust, [entry.userId]: entry } };
}

function emptyTrust(userId: UserId): TrustEntry {
  return {
    userId,
    accountKey: null,
    pendingAccountKey: null,
    expectedFingerprint: null,
    list: null,
    listBytes: null,
  };
}

/** WP-TRUST-01: a chat starts from a contact link; the first list must match its fingerprint. */
function addContact(tx: Tx, link: ContactLink): void {
  if (!requireLinked(tx, 'add-contact')) return;
  const existing = trustOf(tx.state, link.userId);
  setTrust(tx, { ...(existing ?? emptyTrust(link.userId)), expectedFingerprint: link });
  requestDeviceList(tx, link.userId);
}

/**
 * WP-TRUST-01: true while a chat started from a contact link has no accepted list: every list served
 * so far failed the link's fingerprint, so nothing from that account can be verified yet.
 */
function awaitsContactLink(entry: TrustEntry | undefined): boolean {
  return entry !== undefined && entry.expectedFingerprint !== null && entry.accountKey === null;
}

function requestDeviceList(tx: Tx, userId: UserId): void {
  if (tx.state.pending.some((p) => p.purpose.kind === 'device-list' && p.purpose.userId === userId)) return;
  issue(tx, { kind: 'device-list', userId }, { kind: 'get-device-list', userId });
}

function onDeviceList(tx: Tx, userId: UserId, response: ServerResponse): void {
  let refused: ProtocolError | null = null;
  if (response.kind === 'device-list') {
    const accepted = acceptDeviceList(tx, userId, response.deviceList);
    if (!accepted.ok) {
      emit(tx, { kind: 'error', context: `device-list ${userId}`, error: accepted.error });
      refused = accepted.error;
    }
  } else {
    refused = serverError(response);
    emit(tx, { kind: 'error', context: `device-list ${userId}`, error: refused });
  }
  if (refused !== null) {
    // WP-XPORT-03: a list that cannot be had is asked for again a bounded number of times: a changed
    // account key blocks the sends until acknowledged; anything else fails them, typed, in the end.
    for (const item of tx.state.outbox) {
      if (item.recipient !== userId || item.stage !== 'need-list') continue;
      if (refused.code === 'TRUST_ACCOUNT_KEY_CHANGED') {
        updateItem(tx, item.messageId, item.recipient, { stage: 'blocked' });
      } else if (refused.code === 'SERVER_UNKNOWN_USER' || item.attempts + 1 >= MAX_SEND_ATTEMPTS) {
        failItem(tx, item, refused);
      } else {
        updateItem(tx, item.messageId, item.recipient, { attempts: item.attempts + 1 });
        requestDeviceList(tx, userId);
      }
    }
  }
  // Whatever the outcome, envelopes parked for this user are decided now, and sends move on.
  tx.state = {
    ...tx.state,
    parked: tx.state.parked.map((p) =>
      p.envelope.sender.userId === userId ? { ...p, listRefreshed: true } : p,
    ),
  };
  reprocessParked(tx, userId);
  for (const item of tx.state.outbox) {
    if (item.recipient === userId && item.stage === 'need-list') advance(tx, item.messageId, item.recipient);
  }
}

/**
 * Accepts a device list for `userId` if the trust rules allow it, updating records and emitting
 * change events. Signed mode: WP-TRUST-02 (signature), WP-TRUST-03 (no rollback, no equivocation),
 * WP-TRUST-04 (account key pinned). Server mode: the list's content is taken as the server says.
 */
function acceptDeviceList(tx: Tx, userId: UserId, signed: SignedDeviceList): Result<DeviceList> {
  const c = tx.env.crypto;
  const entry = trustOf(tx.state, userId) ?? emptyTrust(userId);
  let list: DeviceList;
  if (tx.state.options.deviceListAuth === 'signed') {
    const verified = verifySignedDeviceList(c, signed, userId);
    // WP-TRUST-02: an unsigned, badly signed or foreign list is refused.
    if (!verified.ok) return reject('TRUST_LIST_INVALID', `device list refused: ${verified.error.code}`);
    list = verified.value;
    if (entry.expectedFingerprint !== null && entry.accountKey === null) {
      // WP-TRUST-01: the first list must match the contact link; a mismatch sends nothing.
      const matches = checkContactLink(c, entry.expectedFingerprint, { userId, accountKey: list.accountKey });
      if (!matches.ok) {
        // The link stays the reference: every later list is checked against it too, never trusted on first use.
        failItemsFor(tx, userId, matches.error);
        return matches;
      }
    }
    if (entry.accountKey !== null && !equalBytes(entry.accountKey, list.accountKey)) {
      // WP-TRUST-04: a new account key is a safety-number change: nothing is sent until acknowledged.
      if (entry.pendingAccountKey === null || !equalBytes(entry.pendingAccountKey, list.accountKey)) {
        setTrust(tx, { ...entry, pendingAccountKey: list.accountKey });
        emit(tx, { kind: 'key-change', userId, deviceId: null });
      }
      return reject('TRUST_ACCOUNT_KEY_CHANGED', 'account key changed; waiting for acknowledgment');
    }
    if (entry.list !== null && entry.listBytes !== null) {
      // WP-TRUST-03: never go back to an older list (no resurrecting a revoked device) ...
      if (list.version < entry.list.version) {
        return reject('TRUST_LIST_ROLLBACK', 'device list older than one already accepted');
      }
      // ... and one version has one content.
      if (list.version === entry.list.version) {
        if (!equalBytes(signed.list, entry.listBytes))
          return reject('TRUST_LIST_EQUIVOCATION', 'two different lists with one version');
        // The pinned key's own list again: a pending key change (a forged list) is withdrawn.
        if (entry.pendingAccountKey !== null) setTrust(tx, { ...entry, pendingAccountKey: null });
        return accept(list);
      }
    }
  } else {
    // Server mode (Sesame rev 2): the server is authoritative; the signature is not checked.
    const decoded = decodeDeviceList(signed.list);
    if (!decoded.ok) return reject('TRUST_LIST_INVALID', `device list malformed: ${decoded.error.code}`);
    if (decoded.value.userId !== userId)
      return reject('TRUST_LIST_INVALID', 'device list names another user');
    list = decoded.value;
    if (entry.listBytes !== null && equalBytes(entry.listBytes, signed.list)) return accept(list);
  }
  const before = new Set((entry.list?.devices ?? []).map((d) => d.deviceId));
  const after = new Set(list.devices.map((d) => d.deviceId));
  const added = [...after].filter((d) => !before.has(d));
  const removed = [...before].filter((d) => !after.has(d));
  setTrust(tx, {
    ...entry,
    accountKey: entry.accountKey ?? list.accountKey,
    pendingAccountKey: null,
    list,
    listBytes: signed.list,
    expectedFingerprint: null,
  });
  // WP-TRUST-07: every change to a list is an event, before anything is encrypted to a new device.
  emit(tx, { kind: 'device-list-changed', userId, version: list.version, added, removed });
  // Removed devices become stale: kept to read delayed messages, never encrypted to (Sesame §3.3 step 6).
  // WP-TRUST-07: that is every device record the list does not name, not only those the previous list
  // named: an acknowledged account-key change discards the list but keeps the old records.
  const unlisted = Object.values(getUserRecord(tx.state.sesame, userId)?.devices ?? {})
    .map((d) => d.deviceId)
    .filter((d) => !after.has(d));
  for (const deviceId of unlisted) {
    if (userId === tx.state.userId && deviceId === tx.state.deviceId) continue;
    // Planted bug (simulator self-test only): `ignore-device-removal` keeps removed devices as
    // current records, so the next send still encrypts to them.
    if (planted(tx.env.bugs, 'ignore-device-removal')) continue;
    tx.state = { ...tx.state, sesame: markDeviceStale(tx.state.sesame, userId, deviceId, tx.now) };
  }
  if (userId === tx.state.userId && !after.has(tx.state.deviceId) && tx.state.lifecycle.kind === 'linked') {
    // WP-LIFE-04: our own account's list no longer has us: this device was revoked.
    becomeRevoked(tx);
  }
  return accept(list);
}

function acknowledgeKeyChange(tx: Tx, userId: UserId): void {
  const entry = trustOf(tx.state, userId);
  if (entry === undefined || entry.pendingAccountKey === null) return;
  // WP-TRUST-04: the user accepted the new account key; its list is fetched again under it.
  setTrust(tx, {
    ...entry,
    accountKey: entry.pendingAccountKey,
    pendingAccountKey: null,
    list: null,
    listBytes: null,
  });
  for (const item of tx.state.outbox) {
    if (item.recipient === userId && item.stage === 'blocked') {
      updateItem(tx, item.messageId, item.recipient, { stage: 'need-list' });
    }
  }
  requestDeviceList(tx, userId);
}

/** Devices of a user we may encrypt to: the latest accepted list, minus ourselves. */
function listedDevices(state: DeviceState, userId: UserId): readonly DeviceListEntry[] | null {
  const list = trustOf(state, userId)?.list;
  if (list === null || list === undefined) return null;
  return list.devices.filter((d) => !(userId === state.userId && d.deviceId === state.deviceId));
}

// ---------------------------------------------------------------------------------------------
// Sending

function newMessageId(tx: Tx): MessageId {
  return toHex(tx.env.rng.randomBytes(16));
}

function userSend(tx: Tx, recipients: readonly UserId[], content: SendContent): void {
  if (!requireLinked(tx, 'send')) return;
  const messageId = newMessageId(tx);
  let payloadContent: Extract<PayloadContent, { kind: 'text' | 'attachment' }>;
  let blobId: string | null = null;
  if (content.kind === 'attachment') {
    // WP-ATT: encrypted once, uploaded once; the pointer travels to every device.
    const { blob, pointer } = encryptAttachment(
      tx.env.crypto,
      tx.env.rng,
      content.bytes,
      content.contentType,
    );
    blobId = pointer.blobId;
    issue(tx, { kind: 'blob-put', blobId }, { kind: 'blob-put', blobId, bytes: blob });
    // Planted bug (simulator self-test only): `server-keeps-plaintext` also uploads the attachment's
    // plaintext, so the server stores a readable copy.
    if (planted(tx.env.bugs, 'server-keeps-plaintext')) {
      const plainId = toHex(tx.env.crypto.sha256(content.bytes));
      issue(
        tx,
        { kind: 'blob-put', blobId: plainId },
        { kind: 'blob-put', blobId: plainId, bytes: content.bytes },
      );
    }
    payloadContent = { kind: 'attachment', pointer, caption: content.caption };
  } else {
    payloadContent = { kind: 'text', text: content.text };
  }
  const targets = [...new Set(recipients)];
  for (const recipient of targets) {
    const entry = trustOf(tx.state, recipient);
    // WP-TRUST-01: no lookup by name: only users started from a link (or who wrote to us) are reachable.
    if (recipient !== tx.state.userId && entry === undefined) {
      emit(tx, {
        kind: 'send-failed',
        messageId,
        recipient,
        error: reject('TRUST_CONTACT_UNKNOWN', 'no contact link for this user').error,
      });
      continue;
    }
    const payload = encodePayload({ messageId, sentAt: tx.now, content: payloadContent });
    // Sesame §3.3: every message also reaches the sender's other devices, as a sync copy, sent once
    // the server has accepted the message itself (so a refused send shows nowhere as sent).
    const syncCopy =
      recipient !== tx.state.userId && (listedDevices(tx.state, tx.state.userId) ?? []).length > 0
        ? encodePayload({
            messageId: newMessageId(tx),
            sentAt: tx.now,
            content: { kind: 'sync', destination: recipient, content: payloadContent },
          })
        : null;
    enqueue(tx, {
      messageId,
      recipient,
      kind: 'message',
      plaintext: payload,
      onlyDevice: null,
      needNewSession: false,
      blobId,
      syncCopy,
    });
  }
}

function enqueue(
  tx: Tx,
  fields: Pick<
    OutboxItem,
    'messageId' | 'recipient' | 'kind' | 'plaintext' | 'onlyDevice' | 'needNewSession' | 'blobId'
  > &
    Partial<Pick<OutboxItem, 'syncCopy' | 'replacesMessageId'>>,
): void {
  if (tx.state.outbox.length >= MAX_OUTBOX) {
    emit(tx, {
      kind: 'send-failed',
      messageId: fields.messageId,
      recipient: fields.recipient,
      error: reject('XPORT_SEND_ATTEMPTS_EXHAUSTED', 'outbox full').error,
    });
    return;
  }
  const item: OutboxItem = {
    ...fields,
    stage: fields.blobId === null ? 'ready' : 'waiting-blob',
    attempts: 0,
    recordBefore: null,
    recordCaptured: false,
    syncCopy: fields.syncCopy ?? null,
    replacesMessageId: fields.replacesMessageId ?? null,
  };
  tx.state = { ...tx.state, outbox: [...tx.state.outbox, item] };
  if (item.stage === 'ready') advance(tx, item.messageId, item.recipient);
}

function findItem(state: DeviceState, messageId: MessageId, recipient: UserId): OutboxItem | undefined {
  return state.outbox.find((i) => i.messageId === messageId && i.recipient === recipient);
}

function updateItem(tx: Tx, messageId: MessageId, recipient: UserId, patch: Partial<OutboxItem>): void {
  tx.state = {
    ...tx.state,
    outbox: tx.state.outbox.map((i) =>
      i.messageId === messageId && i.recipient === recipient ? { ...i, ...patch } : i,
    ),
  };
}

function removeItem(tx: Tx, messageId: MessageId, recipient: UserId): void {
  tx.state = {
    ...tx.state,
    outbox: tx.state.outbox.filter((i) => !(i.messageId === messageId && i.recipient === recipient)),
  };
}

/**
 * WP-XPORT-03: a failed send discards the record changes it made for that user (stale marks, new
 * device records, new sessions) but never rewinds a session that encrypted: a sending chain only
 * moves forward, so no message key is ever used twice. WP-XPORT-10: what an accepted device list
 * taught on the way is no change of the send's and stays: a device the list does not name stays stale.
 */
function failItem(tx: Tx, item: OutboxItem, error: ProtocolError): void {
  if (item.recordCaptured) {
    const current = getUserRecord(tx.state.sesame, item.recipient);
    const before = item.recordBefore;
    const users = { ...tx.state.sesame.users };
    if (before === null) {
      delete users[item.recipient];
    } else {
      const listed = listedDevices(tx.state, item.recipient);
      const devices = { ...before.devices };
      for (const [key, was] of Object.entries(before.devices)) {
        const now = current?.devices[key];
        const kept =
          now !== undefined && equalBytes(now.identityKey, was.identityKey)
            ? { ...was, sessions: now.sessions }
            : was;
        // WP-XPORT-10: a removal the accepted list showed (WP-TRUST-07) is never undone by the
        // failure; the record keeps the stale mark it got when the list was accepted.
        const removed = listed !== null && !listed.some((d) => d.deviceId === was.deviceId);
        devices[key] =
          removed && kept.staleSince === null ? { ...kept, staleSince: now?.staleSince ?? tx.now } : kept;
      }
      users[item.recipient] = { ...before, devices };
    }
    tx.state = { ...tx.state, sesame: { ...tx.state.sesame, users } };
  }
  // WP-SES-21: a send that failed was never stored, so the message records it wrote go with it.
  const messageRecords = tx.state.sesame.messageRecords.filter(
    (r) => !(r.messageId === item.messageId && r.userId === item.recipient),
  );
  if (messageRecords.length !== tx.state.sesame.messageRecords.length)
    tx.state = { ...tx.state, sesame: { ...tx.state.sesame, messageRecords } };
  removeItem(tx, item.messageId, item.recipient);
  emit(tx, { kind: 'send-failed', messageId: item.messageId, recipient: item.recipient, error });
}

function failItemsFor(tx: Tx, userId: UserId, error: ProtocolError): void {
  for (const item of tx.state.outbox)
    if (item.recipient === userId && item.stage !== 'sending') failItem(tx, item, error);
}

/** Moves one outbox item as far as it can go without waiting for the server. */
function advance(tx: Tx, messageId: MessageId, recipient: UserId): void {
  let item = findItem(tx.state, messageId, recipient);
  if (item === undefined || item.stage === 'sending' || item.stage === 'waiting-blob') return;
  if (!item.recordCaptured) {
    updateItem(tx, messageId, recipient, {
      recordBefore: getUserRecord(tx.state.sesame, recipient) ?? null,
      recordCaptured: true,
    });
    item = findItem(tx.state, messageId, recipient);
    if (item === undefined) return;
  }
  if (item.kind === 'retry-request') {
    sendSingle(tx, item);
    return;
  }
  const entry = trustOf(tx.state, recipient);
  if (entry?.pendingAccountKey !== null && entry?.pendingAccountKey !== undefined) {
    // WP-TRUST-04: blocked until the user acknowledges the new account key.
    updateItem(tx, messageId, recipient, { stage: 'blocked' });
    return;
  }
  const devices = listedDevices(tx.state, recipient);
  const refreshing = tx.state.pending.some(
    (p) => p.purpose.kind === 'device-list' && p.purpose.userId === recipient,
  );
  if (devices === null || refreshing) {
    updateItem(tx, messageId, recipient, { stage: 'need-list' });
    requestDeviceList(tx, recipient);
    return;
  }
  if (item.kind === 'resend') {
    sendSingle(tx, item);
    return;
  }
  // Sesame ConditionalUpdate for every listed device: new devices get records, changed keys are events.
  for (const device of devices) {
    const updated = conditionalUpdate(
      tx.state.sesame,
      recipient,
      device.deviceId,
      device.identityKey,
      device.registrationId,
    );
    tx.state = { ...tx.state, sesame: updated.state };
    // WP-TRUST-07: a key change is reported before anything is encrypted to the device.
    if (updated.keyChanged && !updated.created)
      emit(tx, { kind: 'key-change', userId: recipient, deviceId: device.deviceId });
  }
  const need = devicesNeedingSessions(tx.state.sesame, recipient, tx.now);
  if (need.length > 0) {
    updateItem(tx, messageId, recipient, { stage: 'need-bundles' });
    issue(
      tx,
      { kind: 'bundles', messageId, recipient },
      { kind: 'get-bundles', userId: recipient, deviceIds: need },
    );
    return;
  }
  const encrypted = encryptForUser(tx.env, tx.state.sesame, recipient, item.plaintext, tx.now);
  if (!encrypted.ok) {
    failItem(tx, item, encrypted.error);
    return;
  }
  tx.state = { ...tx.state, sesame: encrypted.value.state };
  recordCopies(tx, item, encrypted.value.sessionsUsed);
  updateItem(tx, messageId, recipient, { stage: 'sending', attempts: item.attempts + 1 });
  issue(
    tx,
    { kind: 'send', messageId, recipient },
    {
      kind: 'send',
      sender: ownAddress(tx.state),
      messageId,
      recipient,
      messages: encrypted.value.messages,
    },
  );
}

/**
 * Sesame §4.1: remembers what went to each device, to answer a retry request. WP-SES-21: written
 * as the copies are encrypted, not when the server's answer arrives: the server may store a copy,
 * and the recipient ask for it again, before the sender hears that the send was accepted.
 */
function recordCopies(
  tx: Tx,
  item: OutboxItem,
  used: readonly { readonly deviceId: DeviceId; readonly sessionBaseKey: Uint8Array }[],
): void {
  let sesame = tx.state.sesame;
  for (const copy of used) {
    // WP-XPORT-06: a resend replaces the record it answers and inherits its resend count, so
    // the bound holds across the fresh transport ids of successive resends.
    const replaced =
      item.replacesMessageId === null
        ? undefined
        : sesame.messageRecords.find(
            (r) =>
              r.messageId === item.replacesMessageId &&
              r.userId === item.recipient &&
              r.deviceId === copy.deviceId,
          );
    if (replaced !== undefined) {
      sesame = { ...sesame, messageRecords: sesame.messageRecords.filter((r) => r !== replaced) };
    }
    sesame = recordSentMessage(sesame, {
      messageId: item.messageId,
      userId: item.recipient,
      deviceId: copy.deviceId,
      sessionBaseKey: copy.sessionBaseKey,
      plaintext: item.plaintext,
    });
    if (replaced !== undefined) {
      sesame = {
        ...sesame,
        messageRecords: sesame.messageRecords.map((r) =>
          r.messageId === item.messageId && r.userId === item.recipient && r.deviceId === copy.deviceId
            ? { ...r, resends: replaced.resends }
            : r,
        ),
      };
    }
  }
  tx.state = { ...tx.state, sesame };
}

/** A resend or retry request to one device (Sesame §4.1). */
function sendSingle(tx: Tx, item: OutboxItem): void {
  const deviceId = item.onlyDevice;
  if (deviceId === null) {
    failItem(tx, item, reject('XPORT_SERVER_ERROR', 'single-device send without a device').error);
    return;
  }
  if (item.kind === 'retry-request') {
    const registrationId =
      listedDevices(tx.state, item.recipient)?.find((d) => d.deviceId === deviceId)?.registrationId ?? 0;
    updateItem(tx, item.messageId, item.recipient, { stage: 'sending', attempts: item.attempts + 1 });
    issue(
      tx,
      { kind: 'send', messageId: item.messageId, recipient: item.recipient },
      {
        kind: 'send',
        sender: ownAddress(tx.state),
        messageId: item.messageId,
        recipient: item.recipient,
        messages: [{ deviceId, registrationId, type: 'retry-request', bytes: item.plaintext }],
        onlyDevice: deviceId,
      },
    );
    return;
  }
  const listed = listedDevices(tx.state, item.recipient)?.find((d) => d.deviceId === deviceId);
  if (listed === undefined) {
    failItem(
      tx,
      item,
      reject('TRUST_UNKNOWN_SENDER_DEVICE', 'resend target is not in the device list').error,
    );
    return;
  }
  if (item.needNewSession) {
    updateItem(tx, item.messageId, item.recipient, { stage: 'need-bundles' });
    issue(
      tx,
      { kind: 'bundles', messageId: item.messageId, recipient: item.recipient },
      {
        kind: 'get-bundles',
        userId: item.recipient,
        deviceIds: [deviceId],
      },
    );
    return;
  }
  const encrypted = encryptForDevice(
    tx.env,
    tx.state.sesame,
    item.recipient,
    deviceId,
    item.plaintext,
    tx.now,
  );
  if (!encrypted.ok) {
    failItem(tx, item, encrypted.error);
    return;
  }
  tx.state = { ...tx.state, sesame: encrypted.value.state };
  recordCopies(tx, item, [{ deviceId, sessionBaseKey: encrypted.value.sessionBaseKey }]);
  updateItem(tx, item.messageId, item.recipient, { stage: 'sending', attempts: item.attempts + 1 });
  issue(
    tx,
    { kind: 'send', messageId: item.messageId, recipient: item.recipient },
    {
      kind: 'send',
      sender: ownAddress(tx.state),
      messageId: item.messageId,
      recipient: item.recipient,
      messages: [encrypted.value.message],
      onlyDevice: deviceId,
    },
  );
}

function onBundles(
  tx: Tx,
  messageId: MessageId,
  recipient: UserId,
  response: ServerResponse,
  requested: readonly DeviceId[],
): void {
  const item = findItem(tx.state, messageId, recipient);
  if (item === undefined) return;
  if (response.kind !== 'bundles') {
    // The list we hold may name a device the server no longer has (revoked since): refresh the
    // list and try again, within the same bounded attempts (WP-XPORT-03).
    const stale = response.kind === 'error' && response.code === 'SERVER_UNKNOWN_DEVICE';
    if (stale && item.attempts < MAX_SEND_ATTEMPTS) {
      updateItem(tx, messageId, recipient, { stage: 'need-list', attempts: item.attempts + 1 });
      requestDeviceList(tx, recipient);
      return;
    }
    failItem(tx, item, serverError(response));
    return;
  }
  const devices = listedDevices(tx.state, recipient) ?? [];
  const local = {
    identityKeyPair: tx.state.prekeys.identityKeyPair,
    registrationId: tx.state.prekeys.registrationId,
  };
  let sesame = tx.state.sesame;
  for (const bundle of response.bundles) {
    const listed = devices.find((d) => d.deviceId === bundle.deviceId);
    // WP-TRUST-06: a bundle must carry the identity key the accepted list names for that device, in
    // both modes: in server mode the list is the server's own word too, and using the bundle while
    // the older list stays would make the next ConditionalUpdate undo it (a get-bundles livelock).
    if (listed === undefined || !equalBytes(listed.identityKey, bundle.identityKey)) {
      // The list we hold may predate a reinstall into that device id: refresh it and try again,
      // within the bounded attempts (WP-XPORT-03); only a bundle the latest list vouches for is used.
      if (item.attempts < MAX_SEND_ATTEMPTS) {
        updateItem(tx, messageId, recipient, { stage: 'need-list', attempts: item.attempts + 1 });
        requestDeviceList(tx, recipient);
        return;
      }
      failItem(
        tx,
        item,
        reject('TRUST_BUNDLE_IDENTITY_MISMATCH', 'bundle identity key differs from the device list').error,
      );
      return;
    }
    const prepared = item.needNewSession
      ? prepEncryptNewSession(tx.env, sesame, local, { ...bundle, userId: recipient }, tx.now)
      : prepEncrypt(tx.env, sesame, local, { ...bundle, userId: recipient }, tx.now);
    if (!prepared.ok) {
      failItem(tx, item, prepared.error);
      return;
    }
    sesame = prepared.value.state;
    if (prepared.value.keyChanged)
      emit(tx, { kind: 'key-change', userId: recipient, deviceId: bundle.deviceId });
  }
  // WP-SRV-12 / WP-SES-11: a listed device the server has no bundle for has not registered yet
  // (it is being linked): it is left out of this send, as a stale record, until the server reports
  // it missing from a send — then its record is renewed and its bundle fetched (WP-SES-07).
  for (const deviceId of requested) {
    if (!response.bundles.some((b) => b.deviceId === deviceId)) {
      sesame = markDeviceStale(sesame, recipient, deviceId, tx.now);
    }
  }
  tx.state = { ...tx.state, sesame };
  updateItem(tx, messageId, recipient, { stage: 'ready', needNewSession: false });
  advance(tx, messageId, recipient);
}

function onSendResponse(tx: Tx, messageId: MessageId, recipient: UserId, response: ServerResponse): void {
  const item = findItem(tx.state, messageId, recipient);
  if (item === undefined) return;
  if (response.kind === 'accepted') {
    removeItem(tx, messageId, recipient);
    if (item.syncCopy !== null) {
      enqueue(tx, {
        messageId: newMessageId(tx),
        recipient: tx.state.userId,
        kind: 'message',
        plaintext: item.syncCopy,
        onlyDevice: null,
        needNewSession: false,
        blobId: null,
      });
    }
    if (item.kind === 'resend' && item.onlyDevice !== null)
      emit(tx, { kind: 'resent', messageId, to: { userId: recipient, deviceId: item.onlyDevice } });
    else if (item.kind === 'message') emit(tx, { kind: 'sent', messageId, recipient });
    return;
  }
  if (response.kind === 'refused') {
    onRefusal(tx, item, response.refusal);
    return;
  }
  failItem(tx, item, serverError(response));
}

function onRefusal(tx: Tx, item: OutboxItem, refusal: SendRefusal): void {
  if (refusal.kind === 'mailbox-full') {
    // WP-XPORT-05: nothing was stored; the send is tried again later, never dropped.
    updateItem(tx, item.messageId, item.recipient, { stage: 'mailbox-full' });
    return;
  }
  if (item.kind !== 'message') {
    if (
      item.kind === 'retry-request' &&
      refusal.kind !== 'unknown-user' &&
      item.attempts < MAX_SEND_ATTEMPTS
    ) {
      // WP-XPORT-09: our list of the sender may predate its reinstall (a rolled-back device's list
      // does); the refusal carries the current list: if it still names the device, ask again under
      // its current registration id, within the bounded attempts.
      const accepted = acceptDeviceList(tx, item.recipient, refusal.deviceList);
      if (findItem(tx.state, item.messageId, item.recipient) === undefined) return;
      if (!accepted.ok && accepted.error.code === 'TRUST_ACCOUNT_KEY_CHANGED') {
        // WP-TRUST-04: the sender's account was reset; the request waits for the acknowledgment.
        updateItem(tx, item.messageId, item.recipient, { stage: 'blocked' });
        return;
      }
      const listed = listedDevices(tx.state, item.recipient)?.some((d) => d.deviceId === item.onlyDevice);
      if (accepted.ok && listed === true) {
        updateItem(tx, item.messageId, item.recipient, { stage: 'ready' });
        advance(tx, item.messageId, item.recipient);
        return;
      }
    }
    failItem(
      tx,
      item,
      reject('XPORT_SEND_ATTEMPTS_EXHAUSTED', `single-device send refused: ${refusal.kind}`).error,
    );
    return;
  }
  // WP-XPORT-03: the refusal loop is bounded.
  if (item.attempts >= MAX_SEND_ATTEMPTS) {
    failItem(
      tx,
      item,
      reject('XPORT_SEND_ATTEMPTS_EXHAUSTED', 'server kept refusing the device set', {
        attempts: item.attempts,
      }).error,
    );
    return;
  }
  let entries: readonly DeviceListEntry[] | null = null;
  if (refusal.kind === 'mismatched-devices' || refusal.kind === 'stale-devices') {
    const accepted = acceptDeviceList(tx, item.recipient, refusal.deviceList);
    if (!accepted.ok) {
      if (accepted.error.code === 'TRUST_ACCOUNT_KEY_CHANGED') {
        updateItem(tx, item.messageId, item.recipient, { stage: 'blocked' });
        return;
      }
      if (accepted.error.code === 'TRUST_LIST_ROLLBACK') {
        // WP-XPORT-08: a newer list overtook this refusal; it judged an old device set, so it changes
        // nothing and the send is tried again on the newer list, within the bounded attempts.
        updateItem(tx, item.messageId, item.recipient, { stage: 'ready' });
        advance(tx, item.messageId, item.recipient);
        return;
      }
      failItem(tx, item, accepted.error);
      return;
    }
    entries = listedDevices(tx.state, item.recipient);
  }
  const applied = applySendRefusal(tx.state.sesame, item.recipient, refusal, entries, tx.now);
  if (!applied.ok) {
    failItem(tx, item, applied.error);
    return;
  }
  tx.state = { ...tx.state, sesame: applied.value.state };
  for (const deviceId of applied.value.keyChanges)
    emit(tx, { kind: 'key-change', userId: item.recipient, deviceId });
  if (refusal.kind === 'unknown-user') {
    failItem(tx, item, reject('XPORT_SERVER_ERROR', 'recipient user does not exist').error);
    return;
  }
  updateItem(tx, item.messageId, item.recipient, { stage: 'ready' });
  advance(tx, item.messageId, item.recipient);
}

function onBlobStored(tx: Tx, blobId: string, response: ServerResponse): void {
  const waiting = tx.state.outbox.filter((i) => i.blobId === blobId && i.stage === 'waiting-blob');
  if (response.kind !== 'ok') {
    for (const item of waiting) failItem(tx, item, serverError(response));
    return;
  }
  for (const item of waiting) {
    updateItem(tx, item.messageId, item.recipient, { stage: 'ready' });
    advance(tx, item.messageId, item.recipient);
  }
}

function onBlob(tx: Tx, pointer: AttachmentPointer, response: ServerResponse): void {
  if (response.kind !== 'blob' || response.bytes === null) {
    emit(tx, {
      kind: 'attachment-failed',
      pointer,
      error:
        response.kind === 'error'
          ? serverError(response)
          : reject('XPORT_SERVER_ERROR', 'blob not found').error,
    });
    return;
  }
  const plaintext = decryptAttachment(tx.env.crypto, pointer, response.bytes);
  if (!plaintext.ok) emit(tx, { kind: 'attachment-failed', pointer, error: plaintext.error });
  else emit(tx, { kind: 'attachment', pointer, bytes: plaintext.value });
}

// ---------------------------------------------------------------------------------------------
// Receiving

function onFetch(tx: Tx, response: ServerResponse): void {
  if (response.kind !== 'envelopes') {
    if (
      response.kind === 'error' &&
      (response.code === 'SERVER_UNKNOWN_DEVICE' || response.code === 'SERVER_UNKNOWN_USER')
    ) {
      // WP-LIFE-04: the server no longer knows this device: it was revoked.
      becomeRevoked(tx);
      return;
    }
    emit(tx, { kind: 'error', context: 'fetch', error: serverError(response) });
    return;
  }
  const acked: number[] = [];
  for (const envelope of response.envelopes) {
    if (tx.state.parked.some((p) => p.envelope.envelopeId === envelope.envelopeId)) continue;
    if (processEnvelope(tx, envelope, false)) acked.push(envelope.envelopeId);
  }
  if (acked.length > 0)
    issue(tx, { kind: 'ack' }, { kind: 'ack', device: ownAddress(tx.state), envelopeIds: acked });
  if (tx.state.parked.length === 0) {
    // Sesame §3.1: stale records go after MAXLATENCY and a complete mailbox drain.
    // Planted bug (simulator self-test only): `never-clean-stale` skips the cleanup.
    tx.state = {
      ...tx.state,
      lastFullDrainAt: tx.now,
      sesame: planted(tx.env.bugs, 'never-clean-stale')
        ? tx.state.sesame
        : cleanupStaleRecords(tx.state.sesame, tx.now, tx.now),
    };
  }
  replenishPreKeys(tx);
}

function reprocessParked(tx: Tx, userId: UserId): void {
  const mine = tx.state.parked.filter((p) => p.envelope.sender.userId === userId);
  if (mine.length === 0) return;
  const acked: number[] = [];
  for (const parked of mine) {
    tx.state = {
      ...tx.state,
      parked: tx.state.parked.filter((p) => p.envelope.envelopeId !== parked.envelope.envelopeId),
    };
    if (processEnvelope(tx, parked.envelope, parked.listRefreshed)) acked.push(parked.envelope.envelopeId);
  }
  if (acked.length > 0)
    issue(tx, { kind: 'ack' }, { kind: 'ack', device: ownAddress(tx.state), envelopeIds: acked });
  replenishPreKeys(tx);
}

function parkQuietly(tx: Tx, envelope: Envelope): void {
  if (tx.state.parked.length >= MAX_PARKED) return;
  tx.state = { ...tx.state, parked: [...tx.state.parked, { envelope, listRefreshed: false }] };
}

function park(tx: Tx, envelope: Envelope): void {
  if (tx.state.parked.length >= MAX_PARKED) return; // left unacknowledged: the server redelivers it later
  tx.state = { ...tx.state, parked: [...tx.state.parked, { envelope, listRefreshed: false }] };
  requestDeviceList(tx, envelope.sender.userId);
}

/**
 * Processes one envelope; returns true when it is done (to be acknowledged), false when parked or
 * left for the server to redeliver.
 */
function processEnvelope(tx: Tx, envelope: Envelope, listRefreshed: boolean): boolean {
  if (tx.state.lifecycle.kind !== 'linked') return false;
  const sender = envelope.sender;
  if (sender.userId === tx.state.userId && sender.deviceId === tx.state.deviceId) {
    emitError(tx, 'receive', 'TRUST_UNKNOWN_SENDER_DEVICE', 'envelope claims to come from this device');
    return true;
  }
  const signedMode = tx.state.options.deviceListAuth === 'signed';
  if (signedMode && trustOf(tx.state, sender.userId)?.pendingAccountKey != null) {
    // WP-TRUST-04: the sender's account key changed; its messages wait, unacknowledged, until the
    // user accepts the new key and the new list is fetched. Nothing is lost.
    parkQuietly(tx, envelope);
    return false;
  }
  const listed = listedDevices(tx.state, sender.userId)?.find((d) => d.deviceId === sender.deviceId);
  if (signedMode && listed === undefined) {
    // WP-TRUST-05: only devices in the sender's verified list are heard; fetch the list once, then decide.
    if (!listRefreshed) {
      park(tx, envelope);
      return false;
    }
    if (awaitsContactLink(trustOf(tx.state, sender.userId))) {
      // WP-TRUST-01: no served list matched the contact link yet (it may predate an account reset):
      // the envelope waits, unacknowledged, for a list that matches a link the user adds.
      parkQuietly(tx, envelope);
      return false;
    }
    emit(tx, {
      kind: 'undecryptable',
      from: sender,
      messageId: envelope.messageId,
      error: reject('TRUST_UNKNOWN_SENDER_DEVICE', 'sender device is not in its account list').error,
    });
    return true;
  }
  if (envelope.type === 'retry-request') {
    // WP-XPORT-07: a retry request can overtake the answer to the send it names; that message has no
    // record yet (WP-SES-12), so it stays unacknowledged and the server redelivers it after the answer.
    if (namesUnansweredSend(tx.state, sender, envelope.bytes)) return false;
    onRetryRequest(tx, sender, envelope.bytes);
    return true;
  }
  if (envelope.type === 'prekey' && tx.state.options.initialReplayCache) {
    const replayed = replayedInitialMessage(tx.state, sender, envelope.bytes);
    if (replayed !== null) {
      // WP-PQXDH-13: refused like any undecryptable message, retry request included: an honest
      // initiator still sending on a session this device dropped resends on a new session, and a
      // replaying attacker gains at most MAX_RESENDS resends of a payload shown once (WP-SES-14).
      emit(tx, { kind: 'undecryptable', from: sender, messageId: envelope.messageId, error: replayed });
      requestRetry(tx, sender, envelope.messageId);
      return true;
    }
  }
  const received = receiveMessage(
    tx.env,
    tx.state.sesame,
    tx.state.prekeys,
    sender,
    envelope.type,
    envelope.bytes,
    tx.now,
    // WP-SES-18/19: sequential sessions when the device is hardened.
    { sequentialSessions: tx.state.options.sequentialSessions },
  );
  if (!received.ok) {
    if (received.error.code === 'DUPLICATE_MESSAGE') {
      // WP-XPORT-02: at-least-once delivery: a duplicate is acknowledged and dropped.
      emit(tx, { kind: 'duplicate-dropped', from: sender, messageId: envelope.messageId });
      return true;
    }
    // Sesame §4.1: report it and ask the sender to resend.
    emit(tx, { kind: 'undecryptable', from: sender, messageId: envelope.messageId, error: received.error });
    requestRetry(tx, sender, envelope.messageId);
    // WP-LIFE-06: a prekey id this device has not made yet was uploaded by a later state of it (it was
    // restored from an older copy): a new batch makes the server replace the keys it cannot use.
    if (namesPreKeyNotYetMade(tx.state, envelope)) replenishPreKeys(tx, true);
    return true;
  }
  const sighting = sightChain(tx.state, sender, envelope, received.value.state);
  if (tx.state.options.cloneDetection && sighting !== null && !sighting.ok) {
    // WP-SES-20: the sender's ratchet state forked: refuse the message and say so; the retry request
    // lets an honest device that holds the address resend on a new session.
    emit(tx, { kind: 'clone-detected', from: sender, evidence: sighting.error.message });
    requestRetry(tx, sender, envelope.messageId);
    return true;
  }
  if (
    signedMode &&
    listed !== undefined &&
    !equalBytes(listed.identityKey, received.value.senderIdentityKey)
  ) {
    // WP-TRUST-05: the list we hold may predate a reinstall in that slot: fetch it once more first.
    if (!listRefreshed) {
      park(tx, envelope);
      return false;
    }
    // Still not vouched for: discard it.
    emit(tx, {
      kind: 'undecryptable',
      from: sender,
      messageId: envelope.messageId,
      error: reject('TRUST_SENDER_IDENTITY_MISMATCH', 'sender identity key differs from its device list')
        .error,
    });
    return true;
  }
  tx.state = {
    ...tx.state,
    sesame: received.value.state,
    prekeys: received.value.prekeys,
    initialMessages:
      tx.state.options.initialReplayCache && received.value.sessionCreated
        ? rememberInitialMessage(tx.state, received.value.prekeys, envelope.bytes)
        : tx.state.initialMessages,
    chainSightings:
      tx.state.options.cloneDetection && sighting !== null && sighting.ok
        ? sighting.value
        : tx.state.chainSightings,
  };
  // A sender who wrote first becomes reachable (WP-TRUST-01); only an authenticated message makes an
  // entry, so forged senders cannot grow the trust map.
  if (trustOf(tx.state, sender.userId) === undefined) setTrust(tx, emptyTrust(sender.userId));
  if (received.value.keyChanged)
    emit(tx, { kind: 'key-change', userId: sender.userId, deviceId: sender.deviceId });
  const payload = decodePayload(received.value.plaintext);
  if (!payload.ok) {
    emit(tx, { kind: 'undecryptable', from: sender, messageId: envelope.messageId, error: payload.error });
    return true;
  }
  // Planted bug (simulator self-test only): `deliver-twice` forgets which payloads were shown.
  if (!planted(tx.env.bugs, 'deliver-twice') && tx.state.seen.includes(payload.value.messageId)) {
    // WP-XPORT-02: the same payload twice (a resend that crossed the original) is shown once.
    emit(tx, { kind: 'duplicate-dropped', from: sender, messageId: payload.value.messageId });
    return true;
  }
  if (payload.value.content.kind === 'sync' && sender.userId !== tx.state.userId) {
    emit(tx, {
      kind: 'undecryptable',
      from: sender,
      messageId: envelope.messageId,
      error: reject('TRUST_UNKNOWN_SENDER_DEVICE', 'sync copy from another account').error,
    });
    return true;
  }
  const seen = [...tx.state.seen, payload.value.messageId];
  tx.state = {
    ...tx.state,
    seen: seen.length > MAX_SEEN_MESSAGE_IDS ? seen.slice(seen.length - MAX_SEEN_MESSAGE_IDS) : seen,
  };
  emit(tx, { kind: 'delivered', from: sender, payload: payload.value });
  return true;
}

// ---------------------------------------------------------------------------------------------
// Hardened receiving: the initial-message replay cache and clone detection

/**
 * WP-PQXDH-13: the refusal of a PreKey message that names no one-time prekey, that no session of
 * the sender's record can take, and whose (identity key, base key) this device already accepted:
 * without a one-time prekey, nothing else stops PQXDH from accepting the same message twice
 * (Kobeissi–Bhargavan–Blanchet 2017). Null when the message may go on.
 */
function replayedInitialMessage(
  state: DeviceState,
  sender: DeviceAddress,
  bytes: Uint8Array,
): ProtocolError | null {
  const parsed = parsePreKeySignalMessage(bytes);
  if (!parsed.ok || parsed.value.preKeyId !== undefined) return null;
  const message = parsed.value;
  const record = getDeviceRecord(state.sesame, sender.userId, sender.deviceId)?.sessions;
  const held = (s: SessionState): boolean =>
    s.version === message.messageVersion && equalBytes(s.aliceBaseKey, message.baseKey);
  // WP-PQXDH-10: a session that still exists decrypts a retransmission itself (and drops duplicates).
  if (
    record !== undefined &&
    ((record.current !== null && held(record.current)) || record.archived.some(held))
  )
    return null;
  const seen = state.initialMessages.some(
    (m) => equalBytes(m.baseKey, message.baseKey) && equalBytes(m.senderIdentityKey, message.identityKey),
  );
  if (!seen) return null;
  return reject(
    'INITIAL_MESSAGE_REPLAYED',
    'a PreKey message without a one-time prekey was accepted before',
    {
      signedPreKeyId: message.signedPreKeyId,
    },
  ).error;
}

/**
 * WP-PQXDH-13: the cache after accepting the PreKey message `bytes` (which created a session):
 * entries whose signed prekey the device no longer holds are forgotten (such a message is refused
 * by WP-PQXDH-05 anyway), a message without a one-time prekey is added, and beyond
 * INITIAL_REPLAY_CACHE_CAPACITY the oldest entry goes.
 */
function rememberInitialMessage(
  state: DeviceState,
  prekeys: PreKeyState,
  bytes: Uint8Array,
): readonly InitialMessageSighting[] {
  const kept = state.initialMessages.filter((m) =>
    prekeys.signedPreKeys.some((k) => k.keyId === m.signedPreKeyId),
  );
  const parsed = parsePreKeySignalMessage(bytes);
  if (!parsed.ok || parsed.value.preKeyId !== undefined) return kept;
  const added = [
    ...kept,
    {
      senderIdentityKey: copyBytes(parsed.value.identityKey),
      baseKey: copyBytes(parsed.value.baseKey),
      signedPreKeyId: parsed.value.signedPreKeyId,
    },
  ];
  return added.slice(Math.max(0, added.length - INITIAL_REPLAY_CACHE_CAPACITY));
}

/** The session of `record` (current or archived) with base key `baseKey`. */
function sessionWithBaseKey(
  record: SessionRecord | undefined,
  baseKey: Uint8Array,
): SessionState | undefined {
  if (record === undefined) return undefined;
  const all = record.current === null ? record.archived : [record.current, ...record.archived];
  return all.find((s) => equalBytes(s.aliceBaseKey, baseKey));
}

/**
 * WP-SES-20: checks a message that decrypted against what this device saw of the sender's chains
 * and returns the updated sightings, or the evidence that the sender's ratchet state forked. An
 * honest device sends only on its newest chain and announces, on each new chain, how many messages
 * it sent on the one before (`previous_counter` = count − 1, or 0); the MAC covers both fields. So
 * a valid message is evidence of a fork when
 *
 * - it starts a new chain whose `previous_counter` is below a counter already accepted on the
 *   session's previous chain,
 * - it is on a chain whose messages announced a different `previous_counter` before, or
 * - it is on a chain whose successor announced a `previous_counter` below its counter.
 *
 * Null when the message cannot be placed (not parseable, no session holds its chain).
 */
function sightChain(
  state: DeviceState,
  sender: DeviceAddress,
  envelope: Envelope,
  after: SesameState,
): Result<readonly ChainSighting[]> | null {
  let message: ParsedSignalMessage;
  if (envelope.type === 'prekey') {
    const parsed = parsePreKeySignalMessage(envelope.bytes);
    if (!parsed.ok) return null;
    message = parsed.value.inner;
  } else {
    const parsed = parseSignalMessage(envelope.bytes);
    if (!parsed.ok) return null;
    message = parsed.value;
  }
  const record = getDeviceRecord(after, sender.userId, sender.deviceId)?.sessions;
  const all =
    record === undefined
      ? []
      : record.current === null
        ? record.archived
        : [record.current, ...record.archived];
  const session = all.find((s) => s.receiverChains.some((c) => equalBytes(c.ratchetKey, message.ratchetKey)));
  if (session === undefined) return null;
  const baseKey = session.aliceBaseKey;
  const before = sessionWithBaseKey(
    getDeviceRecord(state.sesame, sender.userId, sender.deviceId)?.sessions,
    baseKey,
  );
  const sightingOf = (ratchetKey: Uint8Array | undefined): ChainSighting | undefined =>
    ratchetKey === undefined
      ? undefined
      : state.chainSightings.find(
          (c) =>
            c.peer.userId === sender.userId &&
            c.peer.deviceId === sender.deviceId &&
            equalBytes(c.sessionBaseKey, baseKey) &&
            equalBytes(c.ratchetKey, ratchetKey),
        );
  const chains = before?.receiverChains ?? [];
  const position = chains.findIndex((c) => equalBytes(c.ratchetKey, message.ratchetKey));
  const fork = (evidence: string): Result<never> => reject('SESSION_FORK_DETECTED', evidence);
  if (position < 0) {
    // A new chain: its predecessor is the last chain the session held before this message.
    const previous = sightingOf(chains[chains.length - 1]?.ratchetKey);
    if (previous !== undefined && previous.highestCounter > message.previousCounter)
      return fork(
        `message ${previous.highestCounter} was accepted on the previous chain, but the new chain announces previous_counter ${message.previousCounter}`,
      );
  } else {
    const own = sightingOf(message.ratchetKey);
    if (own !== undefined && own.previousCounter !== message.previousCounter)
      return fork(
        `one chain announced previous_counter ${own.previousCounter} and ${message.previousCounter}`,
      );
    const next = sightingOf(chains[position + 1]?.ratchetKey);
    if (next !== undefined && message.counter > next.previousCounter)
      return fork(
        `message ${message.counter} arrived on a chain its successor closed at previous_counter ${next.previousCounter}`,
      );
  }
  const existing = sightingOf(message.ratchetKey);
  const updated: ChainSighting = {
    peer: { userId: sender.userId, deviceId: sender.deviceId },
    sessionBaseKey: copyBytes(baseKey),
    ratchetKey: copyBytes(message.ratchetKey),
    previousCounter: message.previousCounter,
    highestCounter: Math.max(existing?.highestCounter ?? 0, message.counter),
  };
  const sightings =
    existing === undefined
      ? [...state.chainSightings, updated]
      : state.chainSightings.map((c) => (c === existing ? updated : c));
  return accept(sightings.slice(Math.max(0, sightings.length - CHAIN_SIGHTINGS_CAPACITY)));
}

/** Sesame §4.1: an unencrypted retry request naming the transport id of the failed message. */
function requestRetry(tx: Tx, sender: DeviceAddress, failedMessageId: MessageId): void {
  if (!/^[0-9a-f]{32}$/.test(failedMessageId)) return;
  enqueue(tx, {
    messageId: newMessageId(tx),
    recipient: sender.userId,
    kind: 'retry-request',
    plaintext: encodeRetryRequest(failedMessageId),
    onlyDevice: sender.deviceId,
    needNewSession: false,
    blobId: null,
  });
}

/**
 * WP-XPORT-07: true when a retry request from `requester` names a message or resend to the
 * requester's account that is still in the outbox, i.e. whose send the server has not yet been seen
 * to accept.
 */
function namesUnansweredSend(state: DeviceState, requester: DeviceAddress, bytes: Uint8Array): boolean {
  const named = decodeRetryRequest(bytes);
  return (
    named.ok &&
    state.outbox.some(
      (i) => i.kind !== 'retry-request' && i.messageId === named.value && i.recipient === requester.userId,
    )
  );
}

function onRetryRequest(tx: Tx, requester: DeviceAddress, bytes: Uint8Array): void {
  const decoded = decodeRetryRequest(bytes);
  if (!decoded.ok) {
    emit(tx, { kind: 'error', context: 'retry-request', error: decoded.error });
    return;
  }
  const handled = handleRetryRequest(tx.state.sesame, requester, decoded.value, tx.now);
  if (!handled.ok) {
    emit(tx, { kind: 'error', context: 'retry-request', error: handled.error });
    return;
  }
  tx.state = { ...tx.state, sesame: handled.value.state };
  const action = handled.value.action;
  if (action.kind === 'drop') return;
  // The resend gets a fresh transport id (the old one is already stored at the server); the payload
  // inside keeps its own id, so the receiver shows it once (WP-XPORT-02).
  enqueue(tx, {
    messageId: newMessageId(tx),
    recipient: requester.userId,
    kind: 'resend',
    plaintext: action.plaintext,
    onlyDevice: requester.deviceId,
    needNewSession: action.needNewSession,
    blobId: null,
    replacesMessageId: decoded.value,
  });
}

// ---------------------------------------------------------------------------------------------
// Prekeys

/**
 * WP-LIFE-06: keep one-time prekeys stocked: below the low-water mark, generate and upload a batch.
 * `restock` (evidence that the server holds keys this device no longer has) makes a batch of each kind
 * held fewer than MAX_ONE_TIME_PREKEYS times, whatever the low-water mark says.
 */
function replenishPreKeys(tx: Tx, restock = false): void {
  const prekeys = tx.state.prekeys;
  const heldEc = prekeys.oneTimePreKeys.length;
  const heldKyber = prekeys.kyberPreKeys.filter((k) => !k.lastResort).length;
  // WP-LIFE-06: a restock is bounded by what the server would store, so forged evidence cannot grow
  // the device's key store without limit.
  const needEc = restock ? heldEc < MAX_ONE_TIME_PREKEYS : heldEc < ONE_TIME_PREKEY_LOW_WATER;
  const needKyber = restock ? heldKyber < MAX_ONE_TIME_PREKEYS : heldKyber < KYBER_PREKEY_LOW_WATER;
  if (!needEc && !needKyber) return;
  if (tx.state.pending.some((p) => p.purpose.kind === 'upload-prekeys')) return;
  const fromPreKeyId = tx.state.nextPreKeyId;
  const fromKyberId = tx.state.nextKyberPreKeyId;
  const oneTime = [...prekeys.oneTimePreKeys];
  const kyber = [...prekeys.kyberPreKeys];
  let nextPreKeyId = fromPreKeyId;
  let nextKyberPreKeyId = fromKyberId;
  if (needEc)
    for (let i = 0; i < ONE_TIME_PREKEY_BATCH; i++)
      oneTime.push(generateOneTimePreKey(tx.env, nextPreKeyId++));
  if (needKyber) {
    for (let i = 0; i < KYBER_PREKEY_BATCH; i++)
      kyber.push(generateKyberPreKey(tx.env, prekeys.identityKeyPair, nextKyberPreKeyId++, false));
  }
  const updated = { ...prekeys, oneTimePreKeys: oneTime, kyberPreKeys: kyber };
  tx.state = { ...tx.state, prekeys: updated, nextPreKeyId, nextKyberPreKeyId };
  const upload = preKeyUpload(updated, { fromPreKeyId, fromKyberId });
  issue(
    tx,
    { kind: 'upload-prekeys' },
    { kind: 'upload-prekeys', device: ownAddress(tx.state), preKeys: upload },
  );
}

/**
 * WP-LIFE-06: true when `envelope` is a PreKey message naming a one-time EC or Kyber prekey id at or
 * above the next id this device would give: no state of this device made it yet, so the server
 * handed out a key uploaded by a state the device lost (restored from an older copy).
 */
function namesPreKeyNotYetMade(state: DeviceState, envelope: Envelope): boolean {
  if (envelope.type !== 'prekey') return false;
  const parsed = parsePreKeySignalMessage(envelope.bytes);
  if (!parsed.ok) return false;
  const { preKeyId, kyberPreKeyId } = parsed.value;
  return (
    (preKeyId !== undefined && preKeyId >= state.nextPreKeyId) || kyberPreKeyId >= state.nextKyberPreKeyId
  );
}

/**
 * WP-LIFE-07: makes the next signed prekey (id: the newest one's plus one; draws as spec/draws.ts
 * `rotateSignedPreKey`) and uploads it with the last-resort Kyber prekey and no one-time keys. With
 * a prekey upload still in flight nothing happens until the next timer, so uploads reach the server
 * one at a time and in key order (WP-SRV-28 covers copies the network delays).
 */
function rotateSignedPreKey(tx: Tx): void {
  // WP-LIFE-07: one prekey upload at a time; the next timer rotates.
  if (tx.state.pending.some((p) => p.purpose.kind === 'upload-prekeys')) return;
  const prekeys = tx.state.prekeys;
  const newest = prekeys.signedPreKeys[prekeys.signedPreKeys.length - 1];
  if (newest === undefined) throw new InvariantError('a linked device holds a signed prekey');
  const rotated = generateSignedPreKey(tx.env, prekeys.identityKeyPair, newest.keyId + 1);
  let signedPreKeys = [...prekeys.signedPreKeys, rotated];
  // WP-LIFE-07: at most MAX_SIGNED_PREKEYS are held; the oldest goes first, even within its grace.
  if (signedPreKeys.length > MAX_SIGNED_PREKEYS) signedPreKeys = signedPreKeys.slice(-MAX_SIGNED_PREKEYS);
  const held = new Set(signedPreKeys.map((k) => k.keyId));
  const updated = { ...prekeys, signedPreKeys };
  tx.state = {
    ...tx.state,
    prekeys: updated,
    retiredSignedPreKeys: tx.state.retiredSignedPreKeys.filter((r) => held.has(r.keyId)),
  };
  const upload = preKeyUpload(updated, {
    fromPreKeyId: tx.state.nextPreKeyId,
    fromKyberId: tx.state.nextKyberPreKeyId,
  });
  issue(
    tx,
    { kind: 'upload-prekeys' },
    { kind: 'upload-prekeys', device: ownAddress(tx.state), preKeys: upload },
  );
}

/**
 * WP-LIFE-08: the server confirmed an upload whose signed prekey has id `confirmedKeyId`, so it
 * stores that key or a newer one (WP-SRV-28) and hands out no older one: every older signed prekey
 * not yet retired starts its grace period now.
 */
function retireSignedPreKeys(tx: Tx, confirmedKeyId: number): void {
  const retired = tx.state.retiredSignedPreKeys;
  // WP-LIFE-08: the grace period of a key starts when a newer one is confirmed, not when it is made.
  const newlyRetired = tx.state.prekeys.signedPreKeys
    .filter((k) => k.keyId < confirmedKeyId && !retired.some((r) => r.keyId === k.keyId))
    .map((k) => ({ keyId: k.keyId, retiredAt: tx.now }));
  if (newlyRetired.length === 0) return;
  // Keys held are in id order and every earlier retirement named smaller ids, so this stays sorted.
  tx.state = { ...tx.state, retiredSignedPreKeys: [...retired, ...newlyRetired] };
}

/**
 * WP-LIFE-08: deletes every retired signed prekey whose grace period has passed. A PreKey message
 * naming one is then refused as naming an unknown signed prekey (WP-PQXDH-05).
 */
function deleteExpiredSignedPreKeys(tx: Tx, gracePeriod: number): void {
  // WP-LIFE-08: a retired key is usable for exactly `gracePeriod` milliseconds after its retirement.
  const expired = tx.state.retiredSignedPreKeys.filter((r) => tx.now - r.retiredAt >= gracePeriod);
  if (expired.length === 0) return;
  const gone = new Set(expired.map((r) => r.keyId));
  tx.state = {
    ...tx.state,
    prekeys: {
      ...tx.state.prekeys,
      signedPreKeys: tx.state.prekeys.signedPreKeys.filter((k) => !gone.has(k.keyId)),
    },
    retiredSignedPreKeys: tx.state.retiredSignedPreKeys.filter((r) => !gone.has(r.keyId)),
  };
}

// ---------------------------------------------------------------------------------------------
// Linking, revocation

function requirePrimary(tx: Tx, context: string): Uint8Array | null {
  if (!requireLinked(tx, context)) return null;
  // WP-LIFE-02: only the primary holds the account key, so only it changes the device list.
  if (tx.state.accountPrivateKey === null) {
    emitError(tx, context, 'LIFE_NOT_PRIMARY', 'only the primary device can change the device list');
    return null;
  }
  return tx.state.accountPrivateKey;
}

function ownList(state: DeviceState): DeviceList | null {
  return trustOf(state, state.userId)?.list ?? null;
}

/** WP-LIFE-02: the primary adds the device shown in a QR code to a new signed list. */
function linkDevice(tx: Tx, code: ProvisioningCode): void {
  const accountPrivateKey = requirePrimary(tx, 'link-device');
  if (accountPrivateKey === null) return;
  const current = ownList(tx.state);
  if (current === null) return;
  const used = new Set(current.devices.map((d) => d.deviceId));
  let deviceId = 0;
  // WP-LIFE-02: an account has at most MAX_DEVICES_PER_ACCOUNT devices (WP-DEV-03) and ids up to 127.
  for (let id = PRIMARY_DEVICE_ID + 1; id <= MAX_DEVICE_ID && used.size < MAX_DEVICES_PER_ACCOUNT; id++) {
    if (!used.has(id)) {
      deviceId = id;
      break;
    }
  }
  if (deviceId === 0) {
    emitError(tx, 'link-device', 'LIFE_NO_FREE_DEVICE_ID', 'no free device id');
    return;
  }
  const list: DeviceList = {
    ...current,
    version: current.version + 1,
    devices: [
      ...current.devices,
      { deviceId, identityKey: code.identityKey, registrationId: code.registrationId },
    ].sort((a, b) => a.deviceId - b.deviceId),
  };
  const signed = signDeviceList(tx.env.crypto, accountPrivateKey, list, tx.env.rng.randomBytes(64));
  issue(
    tx,
    { kind: 'link', code, deviceId, list: signed },
    { kind: 'update-device-list', device: ownAddress(tx.state), deviceList: signed },
  );
}

function onLinkListUpdated(
  tx: Tx,
  code: ProvisioningCode,
  deviceId: DeviceId,
  signed: SignedDeviceList,
  response: ServerResponse,
): void {
  if (response.kind !== 'ok') {
    emit(tx, { kind: 'error', context: 'link-device', error: serverError(response) });
    return;
  }
  const accepted = acceptDeviceList(tx, tx.state.userId, signed);
  if (!accepted.ok) {
    emit(tx, { kind: 'error', context: 'link-device', error: accepted.error });
    return;
  }
  const accountPrivateKey = tx.state.accountPrivateKey;
  if (accountPrivateKey === null) return;
  // WP-LIFE-03: the provisioning message travels encrypted to the QR code's ephemeral key.
  const certificate = signAccountCertificate(
    tx.env.crypto,
    accountPrivateKey,
    code.identityKey,
    tx.env.rng.randomBytes(64),
  );
  const message = encodeProvisionMessage({
    userId: tx.state.userId,
    deviceId,
    deviceList: signed,
    accountCertificate: certificate,
  });
  const envelope = encryptProvisionEnvelope(tx.env.crypto, tx.env.rng, code.ephemeralPublicKey, message);
  issue(
    tx,
    { kind: 'provision-put' },
    { kind: 'provision-put', address: code.relayAddress, bytes: envelope },
  );
  emit(tx, { kind: 'device-linked', address: { userId: tx.state.userId, deviceId } });
  // Planted bug (simulator self-test only): `history-to-new-device` re-sends every payload this
  // device has a message record of to its own account (so the new device too), on the next resend
  // timer, when the new device has registered.
  if (planted(tx.env.bugs, 'history-to-new-device')) {
    const payloads = new Map(tx.state.sesame.messageRecords.map((r) => [r.messageId, r.plaintext]));
    const history: OutboxItem[] = [...payloads.values()].map((plaintext) => ({
      messageId: newMessageId(tx),
      recipient: tx.state.userId,
      kind: 'message',
      plaintext,
      onlyDevice: null,
      needNewSession: false,
      stage: 'mailbox-full',
      attempts: 0,
      blobId: null,
      recordBefore: null,
      recordCaptured: false,
      syncCopy: null,
      replacesMessageId: null,
    }));
    tx.state = { ...tx.state, outbox: [...tx.state.outbox, ...history] };
  }
}

/** WP-LIFE-04: the primary signs a list without the device; the server then deletes its mailbox. */
function revokeDevice(tx: Tx, deviceId: DeviceId): void {
  const accountPrivateKey = requirePrimary(tx, 'revoke-device');
  if (accountPrivateKey === null) return;
  const current = ownList(tx.state);
  if (current === null) return;
  if (deviceId === tx.state.deviceId || !current.devices.some((d) => d.deviceId === deviceId)) {
    emitError(tx, 'revoke-device', 'LIFE_UNKNOWN_DEVICE', 'no such other device in the account');
    return;
  }
  const list: DeviceList = {
    ...current,
    version: current.version + 1,
    devices: current.devices.filter((d) => d.deviceId !== deviceId),
  };
  const signed = signDeviceList(tx.env.crypto, accountPrivateKey, list, tx.env.rng.randomBytes(64));
  issue(
    tx,
    { kind: 'revoke', deviceId, list: signed },
    { kind: 'update-device-list', device: ownAddress(tx.state), deviceList: signed },
  );
}

function onRevokeListUpdated(
  tx: Tx,
  _deviceId: DeviceId,
  signed: SignedDeviceList,
  response: ServerResponse,
): void {
  if (response.kind !== 'ok') {
    emit(tx, { kind: 'error', context: 'revoke-device', error: serverError(response) });
    return;
  }
  const accepted = acceptDeviceList(tx, tx.state.userId, signed);
  if (!accepted.ok) emit(tx, { kind: 'error', context: 'revoke-device', error: accepted.error });
}

function becomeRevoked(tx: Tx): void {
  if (tx.state.lifecycle.kind === 'revoked') return;
  tx.state = { ...tx.state, lifecycle: { kind: 'revoked' }, outbox: [], parked: [], pending: [] };
  emit(tx, { kind: 'revoked' });
}

/** WP-LIFE-03: the new device reads the relay, checks everything, and registers. */
function onProvisionMessage(tx: Tx, response: ServerResponse): void {
  const lifecycle = tx.state.lifecycle;
  if (lifecycle.kind !== 'provisioning' || response.kind !== 'provision' || response.bytes === null) return;
  const c = tx.env.crypto;
  const fail = (message: string): void => emitError(tx, 'provision', 'LIFE_PROVISION_INVALID', message);
  const plaintext = decryptProvisionEnvelope(c, lifecycle.ephemeralKey.privateKey, response.bytes);
  if (!plaintext.ok) return fail(`envelope: ${plaintext.error.code}`);
  const message = decodeProvisionMessage(plaintext.value);
  if (!message.ok) return fail(`message: ${message.error.code}`);
  const list = verifySignedDeviceList(c, message.value.deviceList, message.value.userId);
  if (!list.ok) return fail(`device list: ${list.error.code}`);
  const me = list.value.devices.find((d) => d.deviceId === message.value.deviceId);
  const identityKey = tx.state.prekeys.identityKeyPair.publicKey;
  // WP-LIFE-03: the signed list must contain exactly this device, certified by the account key.
  if (
    me === undefined ||
    !equalBytes(me.identityKey, identityKey) ||
    me.registrationId !== tx.state.prekeys.registrationId
  ) {
    return fail('the list does not contain this device');
  }
  if (!verifyAccountCertificate(c, list.value.accountKey, identityKey, message.value.accountCertificate)) {
    return fail('account certificate does not verify');
  }
  const address = { userId: message.value.userId, deviceId: message.value.deviceId };
  const proofMessage = registrationProofMessage(
    address,
    identityKey,
    tx.state.prekeys.registrationId,
    list.value.accountKey,
  );
  const proof = signRegistrationProof(
    c,
    tx.state.prekeys.identityKeyPair.privateKey,
    proofMessage,
    tx.env.rng.randomBytes(64),
  );
  tx.state = {
    ...tx.state,
    lifecycle: { kind: 'registering' },
    userId: address.userId,
    deviceId: address.deviceId,
    sesame: emptySesameState(address),
    trust: {
      [address.userId]: {
        userId: address.userId,
        accountKey: list.value.accountKey,
        pendingAccountKey: null,
        expectedFingerprint: null,
        list: list.value,
        listBytes: message.value.deviceList.list,
      },
    },
  };
  issue(
    tx,
    { kind: 'register' },
    {
      kind: 'register-device',
      device: address,
      identityKey,
      registrationId: tx.state.prekeys.registrationId,
      proof,
      preKeys: preKeyUpload(tx.state.prekeys),
    },
  );
}

/** Exposed for tests: the encoded own device list, e.g. to compare versions. */
export function ownDeviceList(state: DeviceState): DeviceList | null {
  return ownList(state);
}

/** Exposed for tests and the simulator: the account key fingerprint input of this account. */
export function encodedOwnList(state: DeviceState): Uint8Array | null {
  const list = ownList(state);
  return list === null ? null : encodeDeviceList(list);
}
