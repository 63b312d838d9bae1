/**
 * The abstract projection of the honest server's state (WHITEPAPER.md, "Server (SRV)",
 * WP-SRV-01 … WP-SRV-29) that both engines report: impl/ from its plain `ServerState`
 * (impl/server-abstract.ts), model/ from the server machine's context (model/server.ts). The
 * conformance suite compares the two after every request, so everything here is canonical:
 * accounts by user id, devices by device id, keys as fingerprints (spec/keys.ts `fingerprint`),
 * mailboxes, prekey stores and the dedup window as counts and ids, never bytes.
 * @module
 */
import type { DeviceId, UserId } from './identity.js';

/** One registered (current, WP-SRV-12) device of an account, abstracted. */
export interface ServerDeviceAbstract {
  readonly deviceId: DeviceId;
  readonly registrationId: number;
  /** Fingerprint of the registered identity key. */
  readonly identityKeyFp: string;
  /** Envelopes waiting for an acknowledgement (≤ MAILBOX_CAPACITY, WP-SRV-20, WP-SRV-22). */
  readonly mailboxDepth: number;
  /** The envelope id the next accepted copy gets (ids increase per mailbox, WP-SRV-21). */
  readonly nextEnvelopeId: number;
  /** Key id of the stored signed prekey (replaced by a newer one, WP-SRV-09, WP-SRV-28). */
  readonly signedPreKeyId: number;
  /** One-time EC prekeys left (≤ MAX_ONE_TIME_PREKEYS, WP-SRV-08, WP-SRV-13). */
  readonly oneTimePreKeys: number;
  /** One-time Kyber prekeys left (≤ MAX_ONE_TIME_PREKEYS, WP-SRV-08, WP-SRV-14). */
  readonly oneTimeKyberPreKeys: number;
  /** Key id of the last-resort Kyber prekey (kept when handed out, WP-SRV-14). */
  readonly lastResortKyberPreKeyId: number;
  /** One above the greatest one-time EC prekey id ever stored for this registration (WP-SRV-29). */
  readonly oneTimePreKeyIdFloor: number;
  /** One above the greatest one-time Kyber prekey id ever stored for this registration (WP-SRV-29). */
  readonly kyberPreKeyIdFloor: number;
  /** Envelopes dropped by rule at this address so far, by earlier installs (WP-SRV-11). */
  readonly droppedByRevocation: number;
}

/** Envelopes dropped by rule at one address of an account (WP-SRV-06, WP-SRV-11). */
export interface ServerDroppedAbstract {
  readonly deviceId: DeviceId;
  readonly count: number;
}

/** One account, abstracted. */
export interface ServerAccountAbstract {
  readonly userId: UserId;
  /** Version of the current signed device list (strictly increasing, WP-SRV-03). */
  readonly listVersion: number;
  /** Fingerprint of the account key that signs the current list (changes only by a reset, WP-SRV-06). */
  readonly accountKeyFp: string;
  /** Device ids the current list names, ascending (registered or not). */
  readonly listedDeviceIds: readonly DeviceId[];
  /** Registered devices, ascending by id; each is listed with this identity (WP-SRV-11). */
  readonly devices: readonly ServerDeviceAbstract[];
  /** Every address of the account with envelopes dropped by rule, ascending by device id. */
  readonly droppedByRevocation: readonly ServerDroppedAbstract[];
  /** Accepted (sender, message id) pairs remembered for this account (≤ MESSAGE_ID_DEDUP_WINDOW, WP-SRV-19). */
  readonly dedupEntries: number;
}

/** The whole server, abstracted. */
export interface ServerAbstract {
  /** Accounts ascending by user id (code-unit order). */
  readonly accounts: readonly ServerAccountAbstract[];
  /** Provisioning messages held, expired ones not yet purged included (WP-SRV-23). */
  readonly provisioningEntries: number;
  /** Blobs stored (WP-SRV-24). */
  readonly blobs: number;
}

/** Code-unit order of strings, the canonical order of user ids in {@link ServerAbstract}. */
export function compareUserIds(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
