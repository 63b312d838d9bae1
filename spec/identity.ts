/**
 * Names of users and devices (WHITEPAPER.md, "Multi-device"). A user id is an opaque identifier,
 * never a name or a phone number: Lockstep has no lookup by name anywhere. Device ids follow
 * libsignal's range 1..127; device 1 is the primary, which holds the account key.
 * @module
 */

/** An opaque user identifier: 1–64 characters of `[a-z0-9-]`, starting with a letter or digit. */
export type UserId = string;
/** A device identifier, 1..127. */
export type DeviceId = number;

/** One device of one user. */
export interface DeviceAddress {
  readonly userId: UserId;
  readonly deviceId: DeviceId;
}

/** Smallest device id. */
export const MIN_DEVICE_ID = 1;
/** Largest device id (libsignal's limit). */
export const MAX_DEVICE_ID = 127;
/** The primary device's id: it registers the account and holds the account key. */
export const PRIMARY_DEVICE_ID = 1;

const USER_ID = /^[a-z0-9][a-z0-9-]{0,63}$/;

/** True for a well-formed user id. */
export function isValidUserId(userId: unknown): userId is UserId {
  return typeof userId === 'string' && USER_ID.test(userId);
}

/** True for a device id in 1..127. */
export function isValidDeviceId(deviceId: unknown): deviceId is DeviceId {
  return (
    typeof deviceId === 'number' &&
    Number.isInteger(deviceId) &&
    deviceId >= MIN_DEVICE_ID &&
    deviceId <= MAX_DEVICE_ID
  );
}

/** `userId.deviceId`, the stable text form used as a record key and in traces. */
export function addressKey(address: DeviceAddress): string {
  return `${address.userId}.${address.deviceId}`;
}

/**
 * A message id: 32 lowercase hex characters (16 random bytes). Message ids make sends idempotent
 * and let receivers drop duplicates; they are identifiers, not key material.
 */
export type MessageId = string;

/** True for a well-formed message id. */
export function isValidMessageId(messageId: unknown): messageId is MessageId {
  return typeof messageId === 'string' && /^[0-9a-f]{32}$/.test(messageId);
}
