/**
 * The abstract projection of a device's Sesame state (WHITEPAPER.md, "Sesame", WP-SES-01): what
 * traces record and what the model cross-check compares. Records are listed in a canonical order
 * (users by id, devices by id), keys appear as fingerprints only, and message records only as a
 * count, since they hold plaintext.
 * @module
 */
import type { SessionRecordAbstract } from './abstract.js';
import type { DeviceAddress, DeviceId, UserId } from './identity.js';

/** One device record, abstracted. */
export interface DeviceRecordAbstract {
  readonly deviceId: DeviceId;
  /** Marked stale (kept only to decrypt delayed messages, Sesame §3.1). */
  readonly stale: boolean;
  /** Fingerprint of the device's identity key. */
  readonly identityKeyFp: string;
  readonly registrationId: number;
  /** Active session (`current`) and inactive ones (`archived`, newest first). */
  readonly sessions: SessionRecordAbstract;
}

/** One user record, abstracted. */
export interface UserRecordAbstract {
  readonly userId: UserId;
  readonly stale: boolean;
  /** Device records, ordered by device id. */
  readonly devices: readonly DeviceRecordAbstract[];
}

/** A device's Sesame state, abstracted. */
export interface SesameAbstract {
  /** The device's own address. */
  readonly self: DeviceAddress;
  /** User records, ordered by user id. */
  readonly users: readonly UserRecordAbstract[];
  /** Number of message records kept for retry requests (Sesame §4.1). */
  readonly messageRecords: number;
}
