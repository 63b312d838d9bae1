/**
 * The abstract projection of a whole device (WHITEPAPER.md "Device lifecycle" WP-LIFE-01, "Device
 * lists and trust", "Transport", "Sesame"): what both engines report after every step and what the
 * device conformance suite and the simulator compare. Keys appear as fingerprints only; message
 * contents, plaintexts and prekey material never appear.
 *
 * Ordering is canonical so two engines that keep the same facts in different containers report the
 * same value: trust entries by user id, outbox entries by (message id, recipient), pending requests
 * by request id; parked envelopes and prekey ids keep their order (it is behaviour: parked
 * envelopes are decided in that order, prekeys are handed out in that order).
 * @module
 */
import type { DeviceAddress, DeviceId, MessageId, UserId } from './identity.js';
import type { ServerRequest } from './server-api.js';
import type { SesameAbstract } from './sesame-abstract.js';

/** What a device trusts about one account, abstracted. */
export interface TrustEntryAbstract {
  readonly userId: UserId;
  /** Fingerprint of the pinned account key, or null before first contact. */
  readonly accountKeyFp: string | null;
  /** A changed account key waits for the user's acknowledgment (WP-TRUST-04). */
  readonly pendingAccountKeyChange: boolean;
  /** Version of the latest accepted device list, or null. */
  readonly listVersion: number | null;
}

/** One outbox entry, abstracted. */
export interface OutboxEntryAbstract {
  readonly messageId: MessageId;
  readonly recipient: UserId;
  readonly kind: 'message' | 'resend' | 'retry-request';
  readonly stage:
    'need-list' | 'need-bundles' | 'sending' | 'waiting-blob' | 'blocked' | 'mailbox-full' | 'ready';
  readonly attempts: number;
}

/** A request awaiting its answer, abstracted. */
export interface PendingRequestAbstract {
  readonly requestId: number;
  readonly kind: ServerRequest['kind'];
}

/** A whole device, abstracted. */
export interface DeviceAbstract {
  readonly lifecycle: 'provisioning' | 'registering' | 'linked' | 'revoked';
  readonly address: DeviceAddress;
  readonly sesame: SesameAbstract;
  /** Sorted by user id. */
  readonly trust: readonly TrustEntryAbstract[];
  /** Sorted by message id, then recipient. */
  readonly outbox: readonly OutboxEntryAbstract[];
  /** Sorted by request id. */
  readonly pending: readonly PendingRequestAbstract[];
  /** Number of payload ids remembered for duplicate suppression (WP-XPORT-02). */
  readonly seenCount: number;
  /** Envelopes waiting for their sender's list, in parking order (WP-TRUST-05). */
  readonly parkedEnvelopeIds: readonly number[];
  /** One-time EC prekey ids still held, in order (WP-LIFE-06). */
  readonly oneTimePreKeyIds: readonly number[];
  /** Kyber prekey ids still held (one-time and last resort), in order. */
  readonly kyberPreKeyIds: readonly number[];
  /** Signed prekey ids still held, oldest first; the last is the one published (WP-LIFE-07). */
  readonly signedPreKeyIds: readonly number[];
  /** Held signed prekeys the server no longer hands out, oldest first: in their grace period (WP-LIFE-08). */
  readonly retiredSignedPreKeyIds: readonly number[];
  /** WP-PQXDH-13: entries of the initial-message replay cache. */
  readonly initialMessages: number;
  /** WP-SES-20: peer sending chains remembered for clone detection. */
  readonly chainSightings: number;
}

/** Device id type re-exported for projections. */
export type { DeviceId };
