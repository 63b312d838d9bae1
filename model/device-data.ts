/**
 * Types of the device machine (model/device.ts): its context, the inputs it takes and the outputs it
 * emits (WHITEPAPER.md "Device lists and trust" WP-TRUST-*, "Transport" WP-XPORT-*, "Device
 * lifecycle" WP-LIFE-*, Sesame rev 2 §3.3–§4.1).
 *
 * The input and output shapes are the device protocol's contract: they are structurally the same as
 * impl/device.ts's `DeviceInput`/`DeviceOutput` (the conformance suite compares them with deep
 * equality), but written here, since model/ never imports impl/. Machine events are the inputs with
 * a `now` field: time comes from events.
 * @module
 */
import type { AttachmentPointer } from '../spec/attachment.js';
import type { ContactLink } from '../spec/contact-link.js';
import type { DeviceList, SignedDeviceList } from '../spec/device-list-types.js';
import type { ProtocolError } from '../spec/errors.js';
import type { DeviceAddress, DeviceId, MessageId, UserId } from '../spec/identity.js';
import type { KeyPair } from '../spec/keys.js';
import type { AppPayload } from '../spec/payload.js';
import type { ProvisioningCode } from '../spec/provisioning.js';
import type { SecurityOptions } from '../spec/security-mode.js';
import type { Envelope, ServerRequest, ServerResponse } from '../spec/server-api.js';
import type { ModelReceived, ModelSesame, ModelUserRecord } from './sesame.js';
import type { ModelChainSighting, ModelInitialMessage, ModelSightingCheck } from './hardening.js';
import type { ModelPreKeys } from './sesame-sessions.js';

/**
 * The security switches of a device (spec/security-mode.ts): how it decides which devices of a user
 * exist (WP-TRUST-02) and which hardenings against published attacks are on.
 */
export type ModelDeviceOptions = SecurityOptions;

/** What a device knows and trusts about one account. */
export interface ModelTrust {
  readonly userId: UserId;
  readonly accountKey: Uint8Array | null;
  readonly pendingAccountKey: Uint8Array | null;
  readonly expectedFingerprint: ContactLink | null;
  readonly list: DeviceList | null;
  readonly listBytes: Uint8Array | null;
}

/** Content a user asks to send. */
export type ModelSendContent =
  | { readonly kind: 'text'; readonly text: string }
  | {
      readonly kind: 'attachment';
      readonly bytes: Uint8Array;
      readonly contentType: string;
      readonly caption: string;
    };

/** Where an outbox entry is in the send loop (Sesame §3.3). */
export type OutboxStage =
  'need-list' | 'need-bundles' | 'sending' | 'waiting-blob' | 'blocked' | 'mailbox-full' | 'ready';

/** One message on its way to one recipient account. */
export interface ModelOutboxEntry {
  readonly messageId: MessageId;
  readonly recipient: UserId;
  readonly kind: 'message' | 'resend' | 'retry-request';
  readonly plaintext: Uint8Array;
  readonly onlyDevice: DeviceId | null;
  readonly needNewSession: boolean;
  readonly stage: OutboxStage;
  readonly attempts: number;
  readonly blobId: string | null;
  /** The recipient's user record when the send started (WP-XPORT-03 rollback). */
  readonly recordBefore: ModelUserRecord | null;
  readonly recordCaptured: boolean;
  readonly syncCopy: Uint8Array | null;
  readonly replacesMessageId: MessageId | null;
}

/** What a request in flight is for. */
export type ModelPurpose =
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

/** A request awaiting its answer. */
export interface ModelPending {
  readonly requestId: number;
  readonly request: ServerRequest;
  readonly purpose: ModelPurpose;
}

/** A signed prekey the server no longer hands out, kept for its grace period (WP-LIFE-08). */
export interface ModelRetiredSignedPreKey {
  readonly keyId: number;
  /** When the server confirmed a newer signed prekey: the grace period runs from here. */
  readonly retiredAt: number;
}

/** A received envelope waiting for its sender's device list (WP-TRUST-05). */
export interface ModelParked {
  readonly envelope: Envelope;
  readonly listRefreshed: boolean;
}

/** The envelope the receive pipeline is deciding on, with what each stage found. */
export interface ModelInFlight {
  readonly envelope: Envelope;
  readonly listRefreshed: boolean;
  readonly received:
    | { readonly ok: true; readonly value: ModelReceived }
    | { readonly ok: false; readonly error: ProtocolError }
    | null;
  readonly payload:
    | { readonly ok: true; readonly value: AppPayload }
    | { readonly ok: false; readonly error: ProtocolError }
    | null;
  /** WP-SES-20: what the decrypted message says about the sender's chains (clone detection on). */
  readonly sighting: ModelSightingCheck | null;
  /** WP-PQXDH-13: the decrypted PreKey message created a session. */
  readonly createdSession: boolean;
}

/** What a receive pipeline run drains and what happens when it is done. */
export type ModelDrain =
  { readonly kind: 'fetch' } | { readonly kind: 'parked'; readonly userId: UserId; readonly count: number };

/** The outcome of reading a provisioning relay message (WP-LIFE-03). */
export type ModelProvisionCheck =
  | {
      readonly ok: true;
      readonly address: DeviceAddress;
      readonly list: DeviceList;
      readonly listBytes: Uint8Array;
    }
  | { readonly ok: false; readonly reason: string }
  | null;

/** Lifecycle data (WP-LIFE-01); the statechart's top-level state mirrors `kind`. */
export type ModelLifecycle =
  | { readonly kind: 'provisioning'; readonly relayAddress: string; readonly ephemeralKey: KeyPair }
  | { readonly kind: 'registering' }
  | { readonly kind: 'linked' }
  | { readonly kind: 'revoked' };

/** The machine's context: plain data. */
export interface DeviceContext {
  readonly options: ModelDeviceOptions;
  readonly lifecycle: ModelLifecycle;
  readonly userId: UserId;
  readonly deviceId: DeviceId;
  readonly prekeys: ModelPreKeys;
  readonly nextPreKeyId: number;
  readonly nextKyberPreKeyId: number;
  /** Retired signed prekeys still held, oldest first (WP-LIFE-08); never the newest one. */
  readonly retiredSignedPreKeys: readonly ModelRetiredSignedPreKey[];
  readonly accountPrivateKey: Uint8Array | null;
  readonly sesame: ModelSesame;
  /** Trust entries, sorted by user id. */
  readonly trust: readonly ModelTrust[];
  readonly outbox: readonly ModelOutboxEntry[];
  readonly pending: readonly ModelPending[];
  readonly nextRequestId: number;
  readonly seen: readonly MessageId[];
  readonly parked: readonly ModelParked[];
  readonly linkedAt: number;
  readonly lastFullDrainAt: number;
  /** WP-PQXDH-13: accepted PreKey messages without a one-time prekey, oldest first. */
  readonly initialMessages: readonly ModelInitialMessage[];
  /** WP-SES-20: peers' sending chains seen, oldest first. */
  readonly chainSightings: readonly ModelChainSighting[];
  /** Receive pipeline: envelopes still to decide, the one being decided, ids to acknowledge. */
  readonly inbox: readonly ModelParked[];
  readonly inFlight: ModelInFlight | null;
  readonly acked: readonly number[];
  readonly drain: ModelDrain | null;
  readonly provisionCheck: ModelProvisionCheck;
  /** A new primary's registration data, used once by `registerAccount`. */
  readonly creation: { readonly accountPublicKey: Uint8Array; readonly signedList: SignedDeviceList } | null;
}

/** What the user, the network and the clock tell a device (impl/device.ts's `DeviceInput`). */
export type ModelDeviceInput =
  | { readonly kind: 'user.send'; readonly recipients: readonly UserId[]; readonly content: ModelSendContent }
  | { readonly kind: 'user.add-contact'; readonly link: ContactLink }
  | { readonly kind: 'user.acknowledge-key-change'; readonly userId: UserId }
  | { readonly kind: 'user.link-device'; readonly code: ProvisioningCode }
  | { readonly kind: 'user.revoke-device'; readonly deviceId: DeviceId }
  | { readonly kind: 'user.download'; readonly pointer: AttachmentPointer }
  | { readonly kind: 'net.fetch' }
  | { readonly kind: 'net.response'; readonly requestId: number; readonly response: ServerResponse }
  | { readonly kind: 'timer.resend' }
  | { readonly kind: 'timer.poll-provisioning' }
  /** WP-LIFE-07/08: the rotation timer fired; `gracePeriod` defaults to SIGNED_PREKEY_GRACE_PERIOD. */
  | { readonly kind: 'timer.rotate-signed-prekey'; readonly gracePeriod?: number };

/** The machine's events: an input with its `type` and the time it happens. */
export type DeviceEvent = {
  [K in ModelDeviceInput['kind']]: Omit<Extract<ModelDeviceInput, { kind: K }>, 'kind'> & {
    readonly type: K;
    readonly now: number;
  };
}[ModelDeviceInput['kind']];

/** What a device tells the network and the user (impl/device.ts's `DeviceOutput`). */
export type ModelDeviceOutput =
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

/** The one event the machine emits. */
export interface DeviceOutputEvent {
  readonly type: 'device.output';
  readonly output: ModelDeviceOutput;
}

/** How the machine starts (its `input`): the prepared context and which path it takes. */
export interface DeviceMachineInput {
  /** `primary`: register a new account (creation or reset); `provisioning`: wait for a QR link. */
  readonly mode: 'primary' | 'provisioning';
  readonly context: DeviceContext;
}
