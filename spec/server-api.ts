/**
 * The requests a device sends the server and the server's responses (WHITEPAPER.md, "Server").
 * Plain data passed between nodes; the server is trusted with nothing but availability: it sees
 * ciphertexts, addresses and sizes, never plaintext or keys.
 *
 * Every request has a `kind`; every response is either a success variant or a typed refusal. The
 * honest server is impl/server.ts; a malicious server (simulator) answers with the same types.
 * @module
 */
import type { PreKeyBundle } from './bundle.js';
import type { ErrorCode, RuleId } from './errors.js';
import type { SignedDeviceList } from './device-list-types.js';
import type { DeviceAddress, DeviceId, MessageId, UserId } from './identity.js';

/** The public prekeys a device uploads (at registration and to replenish). */
export interface PreKeyUpload {
  readonly signedPreKey: {
    readonly keyId: number;
    readonly publicKey: Uint8Array;
    readonly signature: Uint8Array;
  };
  readonly oneTimePreKeys: readonly { readonly keyId: number; readonly publicKey: Uint8Array }[];
  readonly kyberPreKeys: readonly {
    readonly keyId: number;
    readonly publicKey: Uint8Array;
    readonly signature: Uint8Array;
    readonly lastResort: boolean;
  }[];
}

/** What travels in a mailbox: ratchet messages, and unencrypted retry requests (Sesame §4.1). */
export type EnvelopeType = 'prekey' | 'whisper' | 'retry-request';

/** One device's copy of a message, as the sender submits it. */
export interface OutgoingDeviceMessage {
  readonly deviceId: DeviceId;
  /** The registration id the sender believes the device has (stale-device detection). */
  readonly registrationId: number;
  readonly type: EnvelopeType;
  readonly bytes: Uint8Array;
}

/** A message stored in a device's mailbox until that device acknowledges it. */
export interface Envelope {
  /** Server-assigned, unique per mailbox; used to acknowledge. */
  readonly envelopeId: number;
  readonly messageId: MessageId;
  /** The sender as the server authenticated it. */
  readonly sender: DeviceAddress;
  readonly type: EnvelopeType;
  readonly bytes: Uint8Array;
  /** Server clock (ms) when the message was accepted. */
  readonly serverTimestamp: number;
}

/** Requests a device makes. `sender`/`device` is the authenticated connection's address. */
export type ServerRequest =
  | {
      readonly kind: 'register-account';
      readonly device: DeviceAddress;
      readonly identityKey: Uint8Array;
      readonly registrationId: number;
      readonly deviceList: SignedDeviceList;
      /** Proof of possession: the device identity key's signature (device prefix) over the registration. */
      readonly proof: Uint8Array;
      readonly preKeys: PreKeyUpload;
    }
  | {
      readonly kind: 'register-device';
      readonly device: DeviceAddress;
      readonly identityKey: Uint8Array;
      readonly registrationId: number;
      readonly proof: Uint8Array;
      readonly preKeys: PreKeyUpload;
    }
  | { readonly kind: 'upload-prekeys'; readonly device: DeviceAddress; readonly preKeys: PreKeyUpload }
  | {
      readonly kind: 'update-device-list';
      readonly device: DeviceAddress;
      readonly deviceList: SignedDeviceList;
    }
  | { readonly kind: 'get-device-list'; readonly userId: UserId }
  | { readonly kind: 'get-bundles'; readonly userId: UserId; readonly deviceIds: readonly DeviceId[] }
  | {
      readonly kind: 'send';
      readonly sender: DeviceAddress;
      readonly messageId: MessageId;
      readonly recipient: UserId;
      readonly messages: readonly OutgoingDeviceMessage[];
      /**
       * A resend or retry request to one device (Sesame §4.1): the server checks that device alone
       * (exists, registration id current) instead of the complete device set.
       */
      readonly onlyDevice?: DeviceId;
    }
  | { readonly kind: 'fetch'; readonly device: DeviceAddress }
  | { readonly kind: 'ack'; readonly device: DeviceAddress; readonly envelopeIds: readonly number[] }
  | { readonly kind: 'provision-put'; readonly address: string; readonly bytes: Uint8Array }
  | { readonly kind: 'provision-get'; readonly address: string }
  | { readonly kind: 'blob-put'; readonly blobId: string; readonly bytes: Uint8Array }
  | { readonly kind: 'blob-get'; readonly blobId: string };

/** Why the server refused a send (Sesame §3.3 steps 3–4; Signal's 409/410). */
export type SendRefusal =
  | { readonly kind: 'unknown-user' }
  | {
      readonly kind: 'mismatched-devices';
      /** Current devices the send left out. */
      readonly missing: readonly DeviceId[];
      /** Devices in the send that the account no longer has. */
      readonly extra: readonly DeviceId[];
      /** The account's current signed list (with every current device's identity key). */
      readonly deviceList: SignedDeviceList;
    }
  | {
      readonly kind: 'stale-devices';
      /** Devices whose registration id changed (re-registered: a reinstall). */
      readonly stale: readonly DeviceId[];
      readonly deviceList: SignedDeviceList;
    }
  | { readonly kind: 'mailbox-full'; readonly deviceIds: readonly DeviceId[] };

/** The server's answers, one variant per request kind, plus typed errors. */
export type ServerResponse =
  | { readonly kind: 'ok' }
  | { readonly kind: 'device-list'; readonly deviceList: SignedDeviceList }
  | { readonly kind: 'bundles'; readonly bundles: readonly PreKeyBundle[] }
  | { readonly kind: 'accepted'; readonly messageId: MessageId; readonly duplicate: boolean }
  | { readonly kind: 'refused'; readonly refusal: SendRefusal }
  | { readonly kind: 'envelopes'; readonly envelopes: readonly Envelope[] }
  | { readonly kind: 'provision'; readonly bytes: Uint8Array | null }
  | { readonly kind: 'blob'; readonly bytes: Uint8Array | null }
  | { readonly kind: 'error'; readonly code: ErrorCode; readonly rule: RuleId; readonly message: string };
