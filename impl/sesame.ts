/**
 * Sesame session management (WHITEPAPER.md, "Sesame", rules WP-SES-01..17; Signal *Sesame* rev 2,
 * 2017-04-14, §3–§4, §6.5, §6.7) in the per-device identity key variant (§3.1): a device keeps
 *
 * ```
 * SesameState → UserRecord (by UserID) → DeviceRecord (by DeviceID: identity key, registration id)
 *             → session record: the active session (`current`) and inactive ones (`archived`,
 *               newest first, at most 40: WP-REC-01)
 * ```
 *
 * and never a device record for its own address, so copies of its messages reach its siblings.
 * The operations of §3.2 map onto the session record as follows:
 *
 * | Sesame §3.2          | here                                                                  |
 * | -------------------- | --------------------------------------------------------------------- |
 * | Delete (cascade)     | {@link deleteDevice}, {@link deleteUser}                              |
 * | Insert(s)            | `processPreKeyBundle` / `decryptPreKeySignalMessage` creating a session (`promoteSession`) |
 * | Activate(s)          | an archived session that decrypts is promoted (WP-REC-02)             |
 * | MarkStale            | {@link markUserStale}, {@link markDeviceStale}                        |
 * | ConditionalUpdate    | {@link conditionalUpdate}                                             |
 * | PrepEncrypt          | {@link prepEncrypt}, {@link prepEncryptNewSession}                    |
 *
 * Sending (§3.3) is split between this module (step 1: {@link encryptForUser}; steps 5–7:
 * {@link applySendRefusal}) and the client that talks to the server (steps 2–4, the bounded loop,
 * impl/device.ts). Receiving is §3.4 ({@link receiveMessage}); retry requests are §4.1
 * ({@link recordSentMessage}, {@link handleRetryRequest}). Every function is pure: it returns a new
 * state and leaves its inputs untouched, so "discard all changes" (§3.3, §3.4, §6.7) is simply
 * keeping the old state.
 *
 * Not implemented: session expiration (§4.2, optional; see docs/rules/sesame.md) and per-user
 * identity keys (§3.1; Lockstep gives every device its own identity key).
 * @module
 */
import { copyBytes, equalBytes } from '../spec/bytes.js';
import type { PreKeyBundle } from '../spec/bundle.js';
import {
  MAX_DEVICE_RECORDS_PER_USER,
  MAX_LATENCY_MS,
  MAX_MESSAGE_RECORDS,
  MAX_RESENDS,
  MAX_UINT32,
  MAX_USER_RECORDS,
  ARCHIVED_STATES_MAX_LENGTH,
} from '../spec/constants.js';
import type { CryptoProvider } from '../spec/crypto/provider.js';
import type { DeviceListEntry } from '../spec/device-list-types.js';
import type { Env } from '../spec/env.js';
import {
  accept,
  InvariantError,
  reject,
  UsageError,
  type ProtocolError,
  type Result,
} from '../spec/errors.js';
import {
  isValidDeviceId,
  isValidMessageId,
  isValidUserId,
  type DeviceAddress,
  type DeviceId,
  type MessageId,
  type UserId,
} from '../spec/identity.js';
import { decodeEcPublicKey, fingerprint } from '../spec/keys.js';
import type { OutgoingDeviceMessage, SendRefusal } from '../spec/server-api.js';
import type { SesameAbstract } from '../spec/sesame-abstract.js';
import { parsePreKeySignalMessage } from '../spec/wire.js';
import { abstractSessionRecord } from './abstract.js';
import type { LocalIdentity } from './pqxdh.js';
import type { PreKeyState } from './prekeys.js';
import {
  decryptPreKeySignalMessage,
  decryptSignalMessage,
  encryptMessage,
  hasUsableSenderChain,
  processPreKeyBundle,
  SPEC_RECORD_POLICY,
  type RecordPolicy,
} from './session-record.js';
import { EMPTY_SESSION_RECORD, type SessionRecord } from './session-state.js';

// ---------------------------------------------------------------------------------------------
// Data model (§3.1)
// ---------------------------------------------------------------------------------------------

/** WP-SES-01: what a device knows of one peer device (per-device identity keys, Sesame §3.1). */
export interface DeviceRecord {
  readonly deviceId: DeviceId;
  /** The device's identity key, `0x05 ‖ u`; every session in `sessions` is with this key. */
  readonly identityKey: Uint8Array;
  /** The registration id the server reports for the device (Signal's stale-device detection). */
  readonly registrationId: number;
  /** `current` is Sesame's active session, `archived` the inactive ones, newest first (WP-REC-01). */
  readonly sessions: SessionRecord;
  /** Clock time (ms) when the record was marked stale, or `null` (Sesame §3.1). */
  readonly staleSince: number | null;
}

/** WP-SES-01: what a device knows of one user: never empty (the last device's deletion deletes it). */
export interface UserRecord {
  readonly userId: UserId;
  readonly staleSince: number | null;
  /** Device records keyed by `String(deviceId)`. */
  readonly devices: Readonly<Record<string, DeviceRecord>>;
}

/** WP-SES-12: what a retry request may resend (Sesame §4.1), one per message and recipient device. */
export interface MessageRecord {
  readonly messageId: MessageId;
  readonly userId: UserId;
  readonly deviceId: DeviceId;
  /** The `aliceBaseKey` of the session the copy was encrypted on: Sesame's SessionID. */
  readonly sessionBaseKey: Uint8Array;
  readonly plaintext: Uint8Array;
  /** Resends so far (≤ MAX_RESENDS, WP-SES-14). */
  readonly resends: number;
}

/** A device's complete Sesame state. */
export interface SesameState {
  /** The device's own address: no device record is ever kept for it (WP-SES-04). */
  readonly self: DeviceAddress;
  /** User records keyed by user id (≤ MAX_USER_RECORDS, WP-SES-15). */
  readonly users: Readonly<Record<UserId, UserRecord>>;
  /** Message records, oldest first (≤ MAX_MESSAGE_RECORDS, WP-SES-12). */
  readonly messageRecords: readonly MessageRecord[];
}

/** The state of a device that knows nobody yet. */
export function emptySesameState(self: DeviceAddress): SesameState {
  requireAddress(self, 'self');
  return { self: { userId: self.userId, deviceId: self.deviceId }, users: {}, messageRecords: [] };
}

// ---------------------------------------------------------------------------------------------
// Lookups and small helpers
// ---------------------------------------------------------------------------------------------

/** The user record of `userId`, if any (own-property lookup: a user id may be `constructor`). */
export function getUserRecord(state: SesameState, userId: UserId): UserRecord | undefined {
  return Object.hasOwn(state.users, userId) ? state.users[userId] : undefined;
}

/** The device record of `userId.deviceId`, if any. */
export function getDeviceRecord(
  state: SesameState,
  userId: UserId,
  deviceId: DeviceId,
): DeviceRecord | undefined {
  const user = getUserRecord(state, userId);
  return user === undefined ? undefined : deviceOf(user, deviceId);
}

function deviceOf(user: UserRecord, deviceId: DeviceId): DeviceRecord | undefined {
  const key = String(deviceId);
  return Object.hasOwn(user.devices, key) ? user.devices[key] : undefined;
}

/** Device records of a user ordered by device id (the order every fan-out uses). */
function sortedDevices(user: UserRecord): DeviceRecord[] {
  return Object.values(user.devices).sort((a, b) => a.deviceId - b.deviceId);
}

function isSelf(state: SesameState, userId: UserId, deviceId: DeviceId): boolean {
  return userId === state.self.userId && deviceId === state.self.deviceId;
}

function putUser(state: SesameState, user: UserRecord): SesameState {
  return { ...state, users: { ...state.users, [user.userId]: user } };
}

function putDevice(state: SesameState, userId: UserId, device: DeviceRecord): SesameState {
  const user = getUserRecord(state, userId);
  if (user === undefined) throw new InvariantError(`no user record for a device record of ${userId}`);
  return putUser(state, { ...user, devices: { ...user.devices, [String(device.deviceId)]: device } });
}

function requireUserId(userId: unknown, name: string): asserts userId is UserId {
  if (!isValidUserId(userId)) throw new UsageError(`${name} must be a valid user id`);
}

function requireDeviceId(deviceId: unknown, name: string): asserts deviceId is DeviceId {
  if (!isValidDeviceId(deviceId)) throw new UsageError(`${name} must be a device id in 1..127`);
}

function requireAddress(address: DeviceAddress, name: string): void {
  requireUserId(address.userId, `${name}.userId`);
  requireDeviceId(address.deviceId, `${name}.deviceId`);
}

function requireTime(now: number, name = 'now'): void {
  if (!Number.isSafeInteger(now) || now < 0)
    throw new UsageError(`${name} must be a non-negative safe integer`);
}

function isUint32(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= MAX_UINT32;
}

/**
 * WP-SES-16: a user id, device id, registration id and identity key that arrive from the server (a
 * bundle, a refusal's device list, an envelope's sender) are checked before anything is stored.
 */
function checkEntry(
  userId: unknown,
  deviceId: unknown,
  registrationId: unknown,
  identityKey: unknown,
  source: string,
): ProtocolError | null {
  const bad = (field: string): ProtocolError => {
    const r = reject('SESAME_INVALID_DEVICE_ENTRY', `${source}: ${field} is malformed`, { field });
    return r.error;
  };
  if (!isValidUserId(userId)) return bad('userId');
  if (!isValidDeviceId(deviceId)) return bad('deviceId');
  if (!isUint32(registrationId)) return bad('registrationId');
  if (!(identityKey instanceof Uint8Array) || !decodeEcPublicKey(identityKey).ok) return bad('identityKey');
  return null;
}

// ---------------------------------------------------------------------------------------------
// Bounds (§6.5)
// ---------------------------------------------------------------------------------------------

/** The stale record marked longest ago (ties: lowest id), the one evicted when a store is full. */
function oldestStale<T extends { readonly staleSince: number | null }>(
  records: readonly T[],
  order: (a: T, b: T) => number,
): T | undefined {
  let oldest: T | undefined;
  for (const record of records) {
    if (record.staleSince === null) continue;
    if (
      oldest === undefined ||
      record.staleSince < (oldest.staleSince ?? 0) ||
      (record.staleSince === oldest.staleSince && order(record, oldest) < 0)
    )
      oldest = record;
  }
  return oldest;
}

/**
 * WP-SES-15: makes room for a new device record of `userId` (and a new user record if needed). A
 * full store first loses its oldest stale record (kept only for delayed messages); with no stale
 * record to evict, the addition is refused and the state is unchanged.
 */
function makeRoom(state: SesameState, userId: UserId, deviceId: DeviceId): Result<SesameState> {
  const user = getUserRecord(state, userId);
  if (user === undefined) {
    const users = Object.values(state.users);
    if (users.length < MAX_USER_RECORDS) return accept(state);
    const evict = oldestStale(users, (a, b) => (a.userId < b.userId ? -1 : 1));
    if (evict === undefined)
      return reject('SESAME_TOO_MANY_USERS', 'user records are at their limit and none is stale', {
        limit: MAX_USER_RECORDS,
      });
    return accept(deleteUser(state, evict.userId));
  }
  if (deviceOf(user, deviceId) !== undefined) return accept(state);
  const devices = Object.values(user.devices);
  if (devices.length < MAX_DEVICE_RECORDS_PER_USER) return accept(state);
  const evict = oldestStale(devices, (a, b) => a.deviceId - b.deviceId);
  if (evict === undefined)
    return reject(
      'SESAME_TOO_MANY_DEVICES',
      'device records of this user are at their limit and none is stale',
      {
        limit: MAX_DEVICE_RECORDS_PER_USER,
      },
    );
  return accept(deleteDevice(state, userId, evict.deviceId));
}

/**
 * Whether {@link conditionalUpdate} could add a record for `userId.deviceId` (WP-SES-15): `ok` when
 * the record exists, there is room, or a stale record can be evicted; otherwise the typed refusal.
 */
export function checkRecordBounds(state: SesameState, userId: UserId, deviceId: DeviceId): Result<null> {
  const room = makeRoom(state, userId, deviceId);
  return room.ok ? accept(null) : room;
}

// ---------------------------------------------------------------------------------------------
// Operations (§3.2)
// ---------------------------------------------------------------------------------------------

/** What ConditionalUpdate did. */
export interface ConditionalUpdateResult {
  readonly state: SesameState;
  /** An existing device record held a different identity key: it was replaced (WP-SES-02). */
  readonly keyChanged: boolean;
  /** No device record existed: one was created (with its user record if needed). */
  readonly created: boolean;
  /** An existing device record was replaced (different identity key or registration id). */
  readonly replaced: boolean;
}

/**
 * The core of ConditionalUpdate. `compareRegistrationId` is false on receipt, where the registration
 * id comes from an unauthenticated PreKey header and must not cost the record its sessions.
 */
function conditionalUpdateResult(
  state: SesameState,
  userId: UserId,
  deviceId: DeviceId,
  identityKey: Uint8Array,
  registrationId: number,
  compareRegistrationId: boolean,
): Result<ConditionalUpdateResult> {
  // WP-SES-04: a device never keeps a record for itself.
  if (isSelf(state, userId, deviceId))
    return accept({ state, keyChanged: false, created: false, replaced: false });
  const existing = getDeviceRecord(state, userId, deviceId);
  const fresh: DeviceRecord = {
    deviceId,
    identityKey: copyBytes(identityKey),
    registrationId,
    sessions: EMPTY_SESSION_RECORD,
    staleSince: null,
  };
  if (existing !== undefined) {
    const sameKey = equalBytes(existing.identityKey, identityKey);
    if (sameKey && (!compareRegistrationId || existing.registrationId === registrationId))
      return accept({ state, keyChanged: false, created: false, replaced: false });
    // WP-SES-02: a different identity key (or registration id) replaces the record: old sessions go.
    return accept({
      state: putDevice(state, userId, fresh),
      keyChanged: !sameKey,
      created: false,
      replaced: true,
    });
  }
  // WP-SES-15: a new record needs room.
  const room = makeRoom(state, userId, deviceId);
  if (!room.ok) return room;
  const user = getUserRecord(room.value, userId);
  // WP-SES-02: a missing user record is created with the device record (never empty, WP-SES-01).
  const next =
    user === undefined
      ? putUser(room.value, { userId, staleSince: null, devices: { [String(deviceId)]: fresh } })
      : putDevice(room.value, userId, fresh);
  return accept({ state: next, keyChanged: false, created: true, replaced: false });
}

/**
 * Sesame §3.2 ConditionalUpdate(UserID, DeviceID, pk) in per-device mode (WP-SES-02): a missing
 * user or device record is created; a device record holding a different identity key or
 * registration id is replaced by an empty one (its sessions are deleted) and `keyChanged` reports a
 * different identity key. Never creates a record for the device's own address (WP-SES-04).
 * Throws `UsageError` on malformed arguments or when the bounds of WP-SES-15 leave no room (check
 * with {@link checkRecordBounds} first; the Result-returning steps do).
 */
export function conditionalUpdate(
  state: SesameState,
  userId: UserId,
  deviceId: DeviceId,
  identityKey: Uint8Array,
  registrationId: number,
): ConditionalUpdateResult {
  requireUserId(userId, 'userId');
  requireDeviceId(deviceId, 'deviceId');
  if (!isUint32(registrationId)) throw new UsageError('registrationId must be a uint32');
  if (!(identityKey instanceof Uint8Array) || !decodeEcPublicKey(identityKey).ok)
    throw new UsageError('identityKey must be a valid 33-byte X25519 public key encoding');
  const result = conditionalUpdateResult(state, userId, deviceId, identityKey, registrationId, true);
  if (!result.ok) throw new UsageError(`conditionalUpdate: ${result.error.message}`);
  return result.value;
}

/** Sesame §3.2 MarkStale on a user record (WP-SES-06). A record already stale keeps its first mark. */
export function markUserStale(state: SesameState, userId: UserId, now: number): SesameState {
  requireTime(now);
  const user = getUserRecord(state, userId);
  if (user === undefined || user.staleSince !== null) return state;
  return putUser(state, { ...user, staleSince: now });
}

/** Sesame §3.2 MarkStale on a device record (WP-SES-06). A record already stale keeps its first mark. */
export function markDeviceStale(
  state: SesameState,
  userId: UserId,
  deviceId: DeviceId,
  now: number,
): SesameState {
  requireTime(now);
  const device = getDeviceRecord(state, userId, deviceId);
  if (device === undefined || device.staleSince !== null) return state;
  return putDevice(state, userId, { ...device, staleSince: now });
}

/** Sesame §3.2 Delete of a device record; deleting the last one deletes the user record (WP-SES-01). */
export function deleteDevice(state: SesameState, userId: UserId, deviceId: DeviceId): SesameState {
  const user = getUserRecord(state, userId);
  if (user === undefined || deviceOf(user, deviceId) === undefined) return state;
  const devices: Record<string, DeviceRecord> = {};
  for (const device of Object.values(user.devices))
    if (device.deviceId !== deviceId) devices[String(device.deviceId)] = device;
  // WP-SES-01: the delete cascade: no empty user record survives.
  if (Object.keys(devices).length === 0) return deleteUser(state, userId);
  return putUser(state, { ...user, devices });
}

/** Sesame §3.2 Delete of a user record and everything in it. */
export function deleteUser(state: SesameState, userId: UserId): SesameState {
  if (getUserRecord(state, userId) === undefined) return state;
  const users: Record<UserId, UserRecord> = {};
  for (const user of Object.values(state.users)) if (user.userId !== userId) users[user.userId] = user;
  return { ...state, users };
}

/** WP-SES-03: PrepEncrypt's first step deletes the stale record the tuple falls in. */
function deleteStaleRecordFor(state: SesameState, userId: UserId, deviceId: DeviceId): SesameState {
  const user = getUserRecord(state, userId);
  if (user === undefined) return state;
  if (user.staleSince !== null) return deleteUser(state, userId);
  const device = deviceOf(user, deviceId);
  if (device !== undefined && device.staleSince !== null) return deleteDevice(state, userId, deviceId);
  return state;
}

function requireDevice(state: SesameState, userId: UserId, deviceId: DeviceId): DeviceRecord {
  const device = getDeviceRecord(state, userId, deviceId);
  if (device === undefined) throw new InvariantError(`device record ${userId}.${deviceId} vanished`);
  return device;
}

function prepEncryptStep(
  env: Env,
  state: SesameState,
  local: LocalIdentity,
  bundle: PreKeyBundle & { readonly userId: UserId },
  now: number,
  forceNewSession: boolean,
): Result<{ readonly state: SesameState; readonly keyChanged: boolean }> {
  requireTime(now);
  const bad = checkEntry(bundle.userId, bundle.deviceId, bundle.registrationId, bundle.identityKey, 'bundle');
  if (bad !== null) return { ok: false, error: bad };
  const { userId, deviceId } = bundle;
  // WP-SES-04: never a session with ourselves.
  if (isSelf(state, userId, deviceId)) return reject('SESAME_OWN_ADDRESS', 'a bundle for our own device');
  // WP-SES-03: delete the relevant stale record, then ConditionalUpdate with the bundle's key.
  const cleaned = deleteStaleRecordFor(state, userId, deviceId);
  const updated = conditionalUpdateResult(
    cleaned,
    userId,
    deviceId,
    bundle.identityKey,
    bundle.registrationId,
    true,
  );
  if (!updated.ok) return updated;
  const { keyChanged } = updated.value;
  const device = requireDevice(updated.value.state, userId, deviceId);
  // WP-SES-03: only a device record without a usable active session gets a new initiating one
  // (WP-SES-13: unless a retry request asked for a new one).
  if (!forceNewSession && hasUsableSenderChain(device.sessions, now))
    return accept({ state: updated.value.state, keyChanged });
  // Insert(s): the new session becomes active; the old active one heads the inactive list (WP-REC-01).
  const sessions = processPreKeyBundle(env, device.sessions, local, bundle, now);
  if (!sessions.ok) return sessions;
  return accept({
    state: putDevice(updated.value.state, userId, { ...device, sessions: sessions.value }),
    keyChanged,
  });
}

/**
 * Sesame §3.2 PrepEncrypt (WP-SES-03): deletes a stale record for the bundle's device (or its whole
 * stale user record), runs ConditionalUpdate with the bundle's identity key and registration id,
 * and, if the device record has no usable active session (`hasUsableSenderChain`), creates an
 * initiating session from the bundle and inserts it. On any error the state is unchanged.
 */
export function prepEncrypt(
  env: Env,
  state: SesameState,
  local: LocalIdentity,
  bundle: PreKeyBundle & { readonly userId: UserId },
  now: number,
): Result<{ readonly state: SesameState; readonly keyChanged: boolean }> {
  return prepEncryptStep(env, state, local, bundle, now, false);
}

/**
 * PrepEncrypt that always creates and inserts a new initiating session (WP-SES-13, Sesame §4.1):
 * used when a retry request names the session that is still active, so the resend cannot fail the
 * same way again.
 */
export function prepEncryptNewSession(
  env: Env,
  state: SesameState,
  local: LocalIdentity,
  bundle: PreKeyBundle & { readonly userId: UserId },
  now: number,
): Result<{ readonly state: SesameState; readonly keyChanged: boolean }> {
  return prepEncryptStep(env, state, local, bundle, now, true);
}

/** Non-stale device records of a non-stale user that have no usable active session (they need a bundle). */
export function devicesNeedingSessions(state: SesameState, userId: UserId, now: number): readonly DeviceId[] {
  requireTime(now);
  const user = getUserRecord(state, userId);
  if (user === undefined || user.staleSince !== null) return [];
  return sortedDevices(user)
    .filter((d) => d.staleSince === null && !hasUsableSenderChain(d.sessions, now))
    .map((d) => d.deviceId);
}

// ---------------------------------------------------------------------------------------------
// Sending (§3.3)
// ---------------------------------------------------------------------------------------------

/** One device copy encrypted on its active session. */
function encryptOnDevice(
  env: Env,
  userId: UserId,
  device: DeviceRecord,
  plaintext: Uint8Array,
  now: number,
): Result<{
  readonly device: DeviceRecord;
  readonly message: OutgoingDeviceMessage;
  readonly sessionBaseKey: Uint8Array;
}> {
  const active = device.sessions.current;
  // WP-SES-05: a device without a usable active session needs PrepEncrypt first.
  if (active === null || !hasUsableSenderChain(device.sessions, now))
    return reject('SESAME_NO_USABLE_SESSION', `no usable active session with a device of ${userId}`, {
      deviceId: device.deviceId,
    });
  const encrypted = encryptMessage(env, device.sessions, plaintext, now);
  if (!encrypted.ok) return encrypted;
  return accept({
    device: { ...device, sessions: encrypted.value.record },
    message: {
      deviceId: device.deviceId,
      registrationId: device.registrationId,
      type: encrypted.value.message.type,
      bytes: encrypted.value.message.bytes,
    },
    sessionBaseKey: copyBytes(active.aliceBaseKey),
  });
}

/**
 * Sesame §3.3 step 1 (WP-SES-05): encrypts `plaintext` on the active session of every non-stale
 * device record of `userId`, in device-id order; for our own user id that is every sibling (there
 * is no record for ourselves). A stale or missing user record gives an empty list (the server then
 * reports the devices). A device record without a usable active session is an error
 * (`SESAME_NO_USABLE_SESSION`: call {@link prepEncrypt} first); on any error the state is unchanged.
 */
export function encryptForUser(
  env: Env,
  state: SesameState,
  userId: UserId,
  plaintext: Uint8Array,
  now: number,
): Result<{
  readonly state: SesameState;
  readonly messages: readonly OutgoingDeviceMessage[];
  readonly sessionsUsed: readonly { readonly deviceId: DeviceId; readonly sessionBaseKey: Uint8Array }[];
}> {
  requireUserId(userId, 'userId');
  requireTime(now);
  if (!(plaintext instanceof Uint8Array)) throw new UsageError('plaintext must be a Uint8Array');
  const user = getUserRecord(state, userId);
  // WP-SES-11: a stale user record is never encrypted to.
  if (user === undefined || user.staleSince !== null)
    return accept({ state, messages: [], sessionsUsed: [] });
  const devices: Record<string, DeviceRecord> = { ...user.devices };
  const messages: OutgoingDeviceMessage[] = [];
  const sessionsUsed: { deviceId: DeviceId; sessionBaseKey: Uint8Array }[] = [];
  for (const device of sortedDevices(user)) {
    // WP-SES-11: nor is a stale device record.
    if (device.staleSince !== null) continue;
    const encrypted = encryptOnDevice(env, userId, device, plaintext, now);
    if (!encrypted.ok) return encrypted;
    devices[String(device.deviceId)] = encrypted.value.device;
    messages.push(encrypted.value.message);
    sessionsUsed.push({ deviceId: device.deviceId, sessionBaseKey: encrypted.value.sessionBaseKey });
  }
  return accept({ state: putUser(state, { ...user, devices }), messages, sessionsUsed });
}

/**
 * Encrypts for one device of `userId` (a resend after a retry request, Sesame §4.1): its record
 * must exist (`SESAME_NO_DEVICE_RECORD`), not be stale and not belong to a stale user
 * (`SESAME_RECORD_STALE`, WP-SES-11), and hold a usable active session (`SESAME_NO_USABLE_SESSION`).
 */
export function encryptForDevice(
  env: Env,
  state: SesameState,
  userId: UserId,
  deviceId: DeviceId,
  plaintext: Uint8Array,
  now: number,
): Result<{
  readonly state: SesameState;
  readonly message: OutgoingDeviceMessage;
  readonly sessionBaseKey: Uint8Array;
}> {
  requireUserId(userId, 'userId');
  requireDeviceId(deviceId, 'deviceId');
  requireTime(now);
  if (!(plaintext instanceof Uint8Array)) throw new UsageError('plaintext must be a Uint8Array');
  const user = getUserRecord(state, userId);
  const device = user === undefined ? undefined : deviceOf(user, deviceId);
  if (user === undefined || device === undefined)
    return reject('SESAME_NO_DEVICE_RECORD', `no record for a device of ${userId}`, { deviceId });
  // WP-SES-11: stale records are kept for receiving only.
  if (user.staleSince !== null || device.staleSince !== null)
    return reject('SESAME_RECORD_STALE', `the record for a device of ${userId} is stale`, { deviceId });
  const encrypted = encryptOnDevice(env, userId, device, plaintext, now);
  if (!encrypted.ok) return encrypted;
  return accept({
    state: putDevice(state, userId, encrypted.value.device),
    message: encrypted.value.message,
    sessionBaseKey: encrypted.value.sessionBaseKey,
  });
}

/** What a refusal changed and what the client must do next. */
export interface RefusalOutcome {
  readonly state: SesameState;
  /** Devices that need a prekey bundle (then {@link prepEncrypt}) before the send is retried. */
  readonly needBundles: readonly DeviceId[];
  /** Devices whose identity key changed (WP-SES-02): a key-change event precedes any encryption to them. */
  readonly keyChanges: readonly DeviceId[];
}

function isStaleUser(state: SesameState, userId: UserId): boolean {
  const user = getUserRecord(state, userId);
  return user !== undefined && user.staleSince !== null;
}

function refusalInvalid(message: string, details: Readonly<Record<string, number | string>>): Result<never> {
  return reject('SESAME_REFUSAL_INVALID', message, details);
}

/** WP-SES-08: device ids in a refusal are in range, distinct, and never our own device. */
function checkRefusalIds(
  state: SesameState,
  userId: UserId,
  lists: readonly (readonly DeviceId[])[],
): Result<null> {
  const seen = new Set<number>();
  for (const list of lists) {
    for (const deviceId of list) {
      if (!isValidDeviceId(deviceId))
        return refusalInvalid('refusal names a device id out of range', { field: 'deviceId' });
      if (seen.has(deviceId)) return refusalInvalid('refusal names a device twice', { deviceId });
      seen.add(deviceId);
      // WP-SES-04: the server must never ask us to encrypt to, or stop encrypting to, ourselves.
      if (isSelf(state, userId, deviceId))
        return refusalInvalid('refusal names our own device', { deviceId });
    }
  }
  return accept(null);
}

/** WP-SES-07/08: the current device entry a refusal's missing or stale device must come with. */
function entryFor(
  currentDevices: readonly DeviceListEntry[] | null,
  userId: UserId,
  deviceId: DeviceId,
): Result<DeviceListEntry> {
  const entry = currentDevices?.find((e) => e.deviceId === deviceId);
  if (entry === undefined)
    return refusalInvalid('refusal names a device absent from the current device list', { deviceId });
  const bad = checkEntry(
    userId,
    entry.deviceId,
    entry.registrationId,
    entry.identityKey,
    'device list entry',
  );
  if (bad !== null) return { ok: false, error: bad };
  return accept(entry);
}

/**
 * Sesame §3.3 steps 4–7 with Signal's refusals (WP-SES-06..08). Only `userId`'s record changes:
 *
 * - `unknown-user`: the user record is marked stale (step 5);
 * - `mismatched-devices`: each extra device record is marked stale (step 6); each missing device
 *   gets ConditionalUpdate with its entry in `currentDevices` (step 7; a stale user or device
 *   record is deleted first, as PrepEncrypt does), and needs a bundle unless it already holds a
 *   usable session;
 * - `stale-devices` (Signal's registration-id check): each device record is replaced by an empty
 *   one from its entry in `currentDevices` and needs a bundle;
 * - `mailbox-full`: no record changes (the message was not lost to a record problem).
 *
 * `currentDevices` is the verified device list in signed mode, the server's list otherwise. A
 * refusal naming our own device, a device twice, a device id out of range, or a missing/stale
 * device absent from `currentDevices` is `SESAME_REFUSAL_INVALID`; a malformed entry is
 * `SESAME_INVALID_DEVICE_ENTRY`; no room is `SESAME_TOO_MANY_DEVICES`/`_USERS`. On any error the
 * whole state is unchanged (§3.3: discard all changes to that user record).
 */
export function applySendRefusal(
  state: SesameState,
  userId: UserId,
  refusal: SendRefusal,
  currentDevices: readonly DeviceListEntry[] | null,
  now: number,
): Result<RefusalOutcome> {
  requireUserId(userId, 'userId');
  requireTime(now);
  switch (refusal.kind) {
    case 'mailbox-full':
      // WP-SES-06: a full mailbox says nothing about the device set.
      return accept({ state, needBundles: [], keyChanges: [] });
    case 'unknown-user':
      // WP-SES-06 (§3.3 step 5): the user no longer exists; keep the record for delayed messages.
      return accept({ state: markUserStale(state, userId, now), needBundles: [], keyChanges: [] });
    case 'mismatched-devices': {
      const ids = checkRefusalIds(state, userId, [refusal.missing, refusal.extra]);
      if (!ids.ok) return ids;
      let next = state;
      // WP-SES-07: a stale user record is deleted before new devices are added (PrepEncrypt).
      if (refusal.missing.length > 0 && isStaleUser(next, userId)) next = deleteUser(next, userId);
      // WP-SES-06 (§3.3 step 6): devices the account no longer has become stale.
      for (const deviceId of refusal.extra) next = markDeviceStale(next, userId, deviceId, now);
      const needBundles: DeviceId[] = [];
      const keyChanges: DeviceId[] = [];
      for (const deviceId of refusal.missing) {
        const entry = entryFor(currentDevices, userId, deviceId);
        if (!entry.ok) return entry;
        // WP-SES-07 (§3.3 step 7): PrepEncrypt's record part; the session needs a bundle.
        next = deleteStaleRecordFor(next, userId, deviceId);
        const updated = conditionalUpdateResult(
          next,
          userId,
          deviceId,
          entry.value.identityKey,
          entry.value.registrationId,
          true,
        );
        if (!updated.ok) return updated;
        next = updated.value.state;
        if (updated.value.keyChanged) keyChanges.push(deviceId);
        if (!hasUsableSenderChain(requireDevice(next, userId, deviceId).sessions, now))
          needBundles.push(deviceId);
      }
      return accept({ state: next, needBundles, keyChanges });
    }
    case 'stale-devices': {
      const ids = checkRefusalIds(state, userId, [refusal.stale]);
      if (!ids.ok) return ids;
      let next = state;
      if (refusal.stale.length > 0 && isStaleUser(next, userId)) next = deleteUser(next, userId);
      const keyChanges: DeviceId[] = [];
      for (const deviceId of refusal.stale) {
        const entry = entryFor(currentDevices, userId, deviceId);
        if (!entry.ok) return entry;
        const old = getDeviceRecord(next, userId, deviceId);
        if (old !== undefined && !equalBytes(old.identityKey, entry.value.identityKey))
          keyChanges.push(deviceId);
        // WP-SES-07: the device re-registered: its record is replaced, so its sessions go.
        next = deleteDevice(next, userId, deviceId);
        const updated = conditionalUpdateResult(
          next,
          userId,
          deviceId,
          entry.value.identityKey,
          entry.value.registrationId,
          true,
        );
        if (!updated.ok) return updated;
        next = updated.value.state;
      }
      return accept({ state: next, needBundles: [...refusal.stale], keyChanges });
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Receiving (§3.4)
// ---------------------------------------------------------------------------------------------

/** A message received and decrypted. */
export interface ReceivedMessage {
  readonly state: SesameState;
  readonly prekeys: PreKeyState;
  readonly plaintext: Uint8Array;
  /** The identity key of the sender's device record (the PreKey header's key when it created one). */
  readonly senderIdentityKey: Uint8Array;
  /** ConditionalUpdate replaced a record holding a different identity key (WP-SES-02). */
  readonly keyChanged: boolean;
  /** The message created a new session (Insert). */
  readonly sessionCreated: boolean;
}

function holdsBaseKey(record: SessionRecord, baseKey: Uint8Array, version: number): boolean {
  const matches = (s: { readonly version: number; readonly aliceBaseKey: Uint8Array }): boolean =>
    s.version === version && equalBytes(s.aliceBaseKey, baseKey);
  return (record.current !== null && matches(record.current)) || record.archived.some(matches);
}

/**
 * Sesame §3.4 (WP-SES-09, WP-SES-10). `sender` is the address the server reports.
 *
 * - A message claiming our own address is `SESAME_OWN_ADDRESS` (WP-SES-04).
 * - `whisper`: the sender's device record's sessions are tried, active first, then inactive ones;
 *   one that decrypts becomes active (Activate, WP-REC-02). No device record is
 *   `SESAME_NO_DEVICE_RECORD`; otherwise the session record's own error is returned.
 * - `prekey`: a session with the message's base key decrypts it if the record holds one
 *   (WP-PQXDH-10); otherwise ConditionalUpdate with the header's identity key (which replaces the
 *   record on a key change) and a new session is created and inserted.
 *
 * Stale records still receive (WP-SES-11). Any failure discards every change: the returned error
 * comes with the caller's state and prekeys untouched (§3.4 step 2, §6.7). `policy` turns on the
 * hardened session choice of WP-SES-18/19 (sequential sessions); the default is Sesame's.
 */
export function receiveMessage(
  env: Env,
  state: SesameState,
  prekeys: PreKeyState,
  sender: DeviceAddress,
  type: 'prekey' | 'whisper',
  bytes: Uint8Array,
  now: number,
  policy: RecordPolicy = SPEC_RECORD_POLICY,
): Result<ReceivedMessage> {
  requireTime(now);
  if (type !== 'prekey' && type !== 'whisper') throw new UsageError('type must be prekey or whisper');
  if (!(bytes instanceof Uint8Array)) throw new UsageError('bytes must be a Uint8Array');
  // WP-SES-16: the reported sender is data from the server.
  if (!isValidUserId(sender.userId) || !isValidDeviceId(sender.deviceId))
    return reject('SESAME_INVALID_DEVICE_ENTRY', 'sender address is malformed', { field: 'sender' });
  const { userId, deviceId } = sender;
  // WP-SES-04: nothing we sent ourselves comes back to us; a message claiming so is forged.
  if (isSelf(state, userId, deviceId)) return reject('SESAME_OWN_ADDRESS', 'message claims our own address');
  const device = getDeviceRecord(state, userId, deviceId);

  if (type === 'whisper') {
    // WP-SES-09: only the sender's own device record is searched.
    if (device === undefined)
      return reject('SESAME_NO_DEVICE_RECORD', 'no record for the sending device', { deviceId });
    const decrypted = decryptSignalMessage(env, device.sessions, bytes, policy);
    if (!decrypted.ok) return decrypted;
    return accept({
      state: putDevice(state, userId, { ...device, sessions: decrypted.value.record }),
      prekeys,
      plaintext: decrypted.value.plaintext,
      senderIdentityKey: copyBytes(device.identityKey),
      keyChanged: false,
      sessionCreated: false,
    });
  }

  const parsed = parsePreKeySignalMessage(bytes);
  if (!parsed.ok) return parsed;
  let next = state;
  let keyChanged = false;
  let target = device;
  if (
    target === undefined ||
    !holdsBaseKey(target.sessions, parsed.value.baseKey, parsed.value.messageVersion)
  ) {
    // WP-SES-10 (§3.4 step 1): no session of the record can take it: ConditionalUpdate with the
    // identity key of the header. The registration id of an unauthenticated header never costs a
    // record with the same key its sessions.
    const updated = conditionalUpdateResult(
      next,
      userId,
      deviceId,
      parsed.value.identityKey,
      parsed.value.registrationId,
      false,
    );
    if (!updated.ok) return updated;
    next = updated.value.state;
    keyChanged = updated.value.keyChanged;
    target = requireDevice(next, userId, deviceId);
  }
  // WP-SES-10: decrypt on the matching session, or create one and Insert it (WP-REC-04).
  const decrypted = decryptPreKeySignalMessage(env, target.sessions, prekeys, bytes, policy);
  if (!decrypted.ok) return decrypted;
  return accept({
    state: putDevice(next, userId, { ...target, sessions: decrypted.value.record }),
    prekeys: decrypted.value.prekeys,
    plaintext: decrypted.value.plaintext,
    senderIdentityKey: copyBytes(target.identityKey),
    keyChanged,
    sessionCreated: decrypted.value.createdSession,
  });
}

// ---------------------------------------------------------------------------------------------
// Retry requests (§4.1)
// ---------------------------------------------------------------------------------------------

function sameCopy(a: MessageRecord, messageId: MessageId, userId: UserId, deviceId: DeviceId): boolean {
  return a.messageId === messageId && a.userId === userId && a.deviceId === deviceId;
}

/** WP-SES-12: appends a record and drops the oldest beyond MAX_MESSAGE_RECORDS. */
function appendBounded(records: readonly MessageRecord[], record: MessageRecord): readonly MessageRecord[] {
  const all = [...records, record];
  return all.length > MAX_MESSAGE_RECORDS ? all.slice(all.length - MAX_MESSAGE_RECORDS) : all;
}

/**
 * Keeps what a retry request for one device copy may resend (Sesame §4.1, WP-SES-12): one record
 * per (message id, recipient device), oldest first, at most MAX_MESSAGE_RECORDS (the oldest is
 * dropped). A record for the same copy is replaced in place and keeps its resend count, so a resend
 * that records its new session cannot reset the limit of WP-SES-14.
 */
export function recordSentMessage(state: SesameState, record: Omit<MessageRecord, 'resends'>): SesameState {
  if (!isValidMessageId(record.messageId))
    throw new UsageError('messageId must be 32 lowercase hex characters');
  requireUserId(record.userId, 'userId');
  requireDeviceId(record.deviceId, 'deviceId');
  if (isSelf(state, record.userId, record.deviceId))
    throw new UsageError('no message record for our own device');
  if (!(record.sessionBaseKey instanceof Uint8Array) || !decodeEcPublicKey(record.sessionBaseKey).ok)
    throw new UsageError('sessionBaseKey must be a 33-byte X25519 public key encoding');
  if (!(record.plaintext instanceof Uint8Array)) throw new UsageError('plaintext must be a Uint8Array');
  const index = state.messageRecords.findIndex((r) =>
    sameCopy(r, record.messageId, record.userId, record.deviceId),
  );
  const fresh: MessageRecord = {
    messageId: record.messageId,
    userId: record.userId,
    deviceId: record.deviceId,
    sessionBaseKey: copyBytes(record.sessionBaseKey),
    plaintext: copyBytes(record.plaintext),
    resends: state.messageRecords[index]?.resends ?? 0,
  };
  if (index < 0) return { ...state, messageRecords: appendBounded(state.messageRecords, fresh) };
  return { ...state, messageRecords: state.messageRecords.map((r, i) => (i === index ? fresh : r)) };
}

/** Deletes every record of a message (a delivery receipt, Sesame §4.1; §6.4 deletes plaintext early). */
export function deleteMessageRecords(state: SesameState, messageId: MessageId): SesameState {
  const kept = state.messageRecords.filter((r) => r.messageId !== messageId);
  return kept.length === state.messageRecords.length ? state : { ...state, messageRecords: kept };
}

/** What to do with a retry request. */
export type RetryAction =
  | {
      readonly kind: 'resend';
      /** Fetch a bundle and call {@link prepEncryptNewSession} before {@link encryptForDevice}. */
      readonly needNewSession: boolean;
      readonly plaintext: Uint8Array;
      /** The requesting device: the resend goes to it alone. */
      readonly deviceId: DeviceId;
    }
  | { readonly kind: 'drop'; readonly reason: 'unknown-message' | 'user-mismatch' | 'resend-limit' };

/**
 * Sesame §4.1 (WP-SES-13, WP-SES-14). A retry request from `requester` for `messageId` is dropped
 * unless a message record for that message id and the requester's user id exists; the device id is
 * intentionally not checked (the requester may be a device the sender did not know), but the resend
 * goes to the requesting device. The record of the requesting device is used if there is one,
 * otherwise another of that user's records (copied for the requester). `needNewSession` is set when
 * the requester has no usable active session or its active session is the recorded one (resending
 * on the session that failed could fail again and loop). Each record allows MAX_RESENDS resends;
 * the counter is incremented here.
 */
export function handleRetryRequest(
  state: SesameState,
  requester: DeviceAddress,
  messageId: MessageId,
  now: number,
): Result<{ readonly state: SesameState; readonly action: RetryAction }> {
  requireTime(now);
  // WP-SES-16: the requester's address comes from the server.
  if (!isValidUserId(requester.userId) || !isValidDeviceId(requester.deviceId))
    return reject('SESAME_INVALID_DEVICE_ENTRY', 'requester address is malformed', { field: 'requester' });
  const { userId, deviceId } = requester;
  // WP-SES-04: we never ask ourselves to resend.
  if (isSelf(state, userId, deviceId))
    return reject('SESAME_OWN_ADDRESS', 'retry request claims our own address');
  const drop = (reason: 'unknown-message' | 'user-mismatch' | 'resend-limit') =>
    accept({ state, action: { kind: 'drop', reason } as const });
  const ofMessage = state.messageRecords.filter((r) => r.messageId === messageId);
  // WP-SES-13: only a current message id is resent...
  if (ofMessage.length === 0) return drop('unknown-message');
  // ...and only to the user it was sent to (the device id is deliberately not compared).
  const ofUser = ofMessage.filter((r) => r.userId === userId);
  const chosen = ofUser.find((r) => r.deviceId === deviceId) ?? ofUser[0];
  if (chosen === undefined) return drop('user-mismatch');
  // WP-SES-14: resends are bounded, so forged retry requests cannot make us loop.
  if (chosen.resends >= MAX_RESENDS) return drop('resend-limit');
  const bumped: MessageRecord = { ...chosen, deviceId, resends: chosen.resends + 1 };
  const index = state.messageRecords.findIndex((r) => sameCopy(r, messageId, userId, deviceId));
  const messageRecords =
    index < 0
      ? appendBounded(state.messageRecords, bumped)
      : state.messageRecords.map((r, i) => (i === index ? bumped : r));
  const user = getUserRecord(state, userId);
  const device = user === undefined ? undefined : deviceOf(user, deviceId);
  const usable =
    user !== undefined &&
    device !== undefined &&
    user.staleSince === null &&
    device.staleSince === null &&
    hasUsableSenderChain(device.sessions, now);
  const active = device?.sessions.current ?? null;
  // WP-SES-13: a new initiating session when there is no usable one or the active one is the one
  // that failed.
  const needNewSession = !usable || active === null || equalBytes(active.aliceBaseKey, chosen.sessionBaseKey);
  return accept({
    state: { ...state, messageRecords },
    action: { kind: 'resend', needNewSession, plaintext: copyBytes(chosen.plaintext), deviceId },
  });
}

// ---------------------------------------------------------------------------------------------
// Stale records (§3.1, §6.4)
// ---------------------------------------------------------------------------------------------

/**
 * WP-SES-11 (Sesame §3.1, §6.4): deletes stale user and device records marked more than
 * MAX_LATENCY_MS before `now`, but only if a complete mailbox drain finished after they became that
 * old (`lastFullDrainAt ≥ staleSince + MAX_LATENCY_MS`): every message sent before the mark has
 * then either arrived or is lost. Deleting the last device record deletes the user record.
 */
export function cleanupStaleRecords(state: SesameState, now: number, lastFullDrainAt: number): SesameState {
  requireTime(now);
  requireTime(lastFullDrainAt, 'lastFullDrainAt');
  const expired = (staleSince: number | null): boolean =>
    staleSince !== null &&
    now - staleSince > MAX_LATENCY_MS &&
    lastFullDrainAt >= staleSince + MAX_LATENCY_MS;
  let next = state;
  for (const user of Object.values(state.users)) {
    if (expired(user.staleSince)) {
      next = deleteUser(next, user.userId);
      continue;
    }
    for (const device of Object.values(user.devices))
      if (expired(device.staleSince)) next = deleteDevice(next, user.userId, device.deviceId);
  }
  return next;
}

// ---------------------------------------------------------------------------------------------
// Invariants and abstraction
// ---------------------------------------------------------------------------------------------

/**
 * The invariants of WP-SES-01 and the bounds of WP-SES-12/14/15 (properties P18, P19, P28): an
 * empty list when all hold, otherwise one sentence per violation. Tests and the simulator call it
 * after every step.
 */
export function sesameInvariantViolations(state: SesameState): readonly string[] {
  const violations: string[] = [];
  const users = Object.entries(state.users);
  if (users.length > MAX_USER_RECORDS)
    violations.push(`${users.length} user records exceed MAX_USER_RECORDS`);
  for (const [userKey, user] of users) {
    if (user.userId !== userKey) violations.push(`user record ${userKey} is filed under another id`);
    const devices = Object.entries(user.devices);
    if (devices.length === 0) violations.push(`user record ${userKey} is empty`);
    if (devices.length > MAX_DEVICE_RECORDS_PER_USER)
      violations.push(`user record ${userKey} has ${devices.length} device records`);
    for (const [deviceKey, device] of devices) {
      const name = `${userKey}.${deviceKey}`;
      if (String(device.deviceId) !== deviceKey)
        violations.push(`device record ${name} is filed under another id`);
      if (isSelf(state, user.userId, device.deviceId))
        violations.push(`a device record exists for our own address`);
      const { current, archived } = device.sessions;
      if (archived.length > ARCHIVED_STATES_MAX_LENGTH)
        violations.push(`${name} keeps ${archived.length} inactive sessions`);
      if (current !== null && archived.some((s) => equalBytes(s.aliceBaseKey, current.aliceBaseKey)))
        violations.push(`${name}: the active session is also inactive`);
      const all = current === null ? archived : [current, ...archived];
      if (all.some((s) => !equalBytes(s.remoteIdentityKey, device.identityKey)))
        violations.push(`${name}: a session is with another identity key than the record's`);
    }
  }
  if (state.messageRecords.length > MAX_MESSAGE_RECORDS)
    violations.push(`${state.messageRecords.length} message records exceed MAX_MESSAGE_RECORDS`);
  const copies = new Set<string>();
  for (const r of state.messageRecords) {
    const key = `${r.messageId}/${r.userId}.${r.deviceId}`;
    if (copies.has(key)) violations.push(`two message records for ${key}`);
    copies.add(key);
    if (r.resends > MAX_RESENDS) violations.push(`message record ${key} was resent ${r.resends} times`);
    if (isSelf(state, r.userId, r.deviceId)) violations.push(`a message record names our own address`);
  }
  return violations;
}

/** Projects the Sesame state onto spec/sesame-abstract.ts (fingerprints only, canonical order). */
export function abstractSesame(c: CryptoProvider, state: SesameState): SesameAbstract {
  const users = Object.values(state.users).sort((a, b) =>
    a.userId < b.userId ? -1 : a.userId > b.userId ? 1 : 0,
  );
  return {
    self: { userId: state.self.userId, deviceId: state.self.deviceId },
    users: users.map((user) => ({
      userId: user.userId,
      stale: user.staleSince !== null,
      devices: sortedDevices(user).map((device) => ({
        deviceId: device.deviceId,
        stale: device.staleSince !== null,
        identityKeyFp: fingerprint(c, device.identityKey),
        registrationId: device.registrationId,
        sessions: abstractSessionRecord(c, device.sessions),
      })),
    })),
    messageRecords: state.messageRecords.length,
  };
}
