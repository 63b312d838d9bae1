/**
 * The model's Sesame records and operations (WHITEPAPER.md "Sesame" WP-SES-01..16; Signal *Sesame*
 * rev 2 §3.1–§4.1, §6.5) as pure guard/action helpers for the device machine (model/device.ts).
 * Per-device identity keys: user records → device records (identity key, registration id, session
 * record) and never a record for the device's own address.
 *
 * Written independently of impl/sesame.ts; the device conformance suite checks that both engines
 * reach the same abstract state (spec/sesame-abstract.ts) after every step.
 * @module
 */
import type { PreKeyBundle } from '../spec/bundle.js';
import { copyBytes, equalBytes } from '../spec/bytes.js';
import {
  MAX_DEVICE_RECORDS_PER_USER,
  MAX_LATENCY_MS,
  MAX_MESSAGE_RECORDS,
  MAX_RESENDS,
  MAX_UINT32,
  MAX_USER_RECORDS,
} from '../spec/constants.js';
import type { CryptoProvider } from '../spec/crypto/provider.js';
import type { DeviceListEntry } from '../spec/device-list-types.js';
import type { Env } from '../spec/env.js';
import { accept, reject, UsageError, type ProtocolError, type Result } from '../spec/errors.js';
import {
  isValidDeviceId,
  isValidUserId,
  type DeviceAddress,
  type DeviceId,
  type MessageId,
  type UserId,
} from '../spec/identity.js';
import { decodeEcPublicKey, fingerprint, type KeyPair } from '../spec/keys.js';
import type { OutgoingDeviceMessage, SendRefusal } from '../spec/server-api.js';
import type { SesameAbstract } from '../spec/sesame-abstract.js';
import {
  abstractModelRecord,
  canEncrypt,
  holdsSession,
  NO_SESSIONS,
  openPreKeyMessage,
  openSignalMessage,
  parsePreKeySignalMessage,
  sealMessage,
  sessionFromBundle,
  type ModelPreKeys,
  type ModelSessionRecord,
} from './sesame-sessions.js';

/** WP-SES-01: one peer device. */
export interface ModelDeviceRecord {
  readonly deviceId: DeviceId;
  readonly identityKey: Uint8Array;
  readonly registrationId: number;
  readonly sessions: ModelSessionRecord;
  readonly staleSince: number | null;
}

/** WP-SES-01: one peer user; device records sorted by id, never empty. */
export interface ModelUserRecord {
  readonly userId: UserId;
  readonly staleSince: number | null;
  readonly devices: readonly ModelDeviceRecord[];
}

/** WP-SES-12: one sent copy a retry request may resend. */
export interface ModelMessageRecord {
  readonly messageId: MessageId;
  readonly userId: UserId;
  readonly deviceId: DeviceId;
  readonly sessionBaseKey: Uint8Array;
  readonly plaintext: Uint8Array;
  readonly resends: number;
}

/** The model's Sesame state: user records sorted by id, message records oldest first. */
export interface ModelSesame {
  readonly self: DeviceAddress;
  readonly users: readonly ModelUserRecord[];
  readonly messageRecords: readonly ModelMessageRecord[];
}

/** A device that knows nobody. */
export function newSesame(self: DeviceAddress): ModelSesame {
  return { self: { userId: self.userId, deviceId: self.deviceId }, users: [], messageRecords: [] };
}

// ---------------------------------------------------------------------------------------------
// Lookups and record edits

/** The user record of `userId`. */
export function userRecord(s: ModelSesame, userId: UserId): ModelUserRecord | undefined {
  return s.users.find((u) => u.userId === userId);
}

/** The device record of `userId.deviceId`. */
export function deviceRecord(
  s: ModelSesame,
  userId: UserId,
  deviceId: DeviceId,
): ModelDeviceRecord | undefined {
  return userRecord(s, userId)?.devices.find((d) => d.deviceId === deviceId);
}

/** WP-SES-04: the device's own address. */
export function isOwnAddress(s: ModelSesame, userId: UserId, deviceId: DeviceId): boolean {
  return s.self.userId === userId && s.self.deviceId === deviceId;
}

/** Replaces (or adds) a user record, keeping users sorted by id. */
export function withUser(s: ModelSesame, user: ModelUserRecord): ModelSesame {
  const others = s.users.filter((u) => u.userId !== user.userId);
  return {
    ...s,
    users: [...others, user].sort((a, b) => (a.userId < b.userId ? -1 : a.userId > b.userId ? 1 : 0)),
  };
}

/** Removes a user record. */
export function withoutUser(s: ModelSesame, userId: UserId): ModelSesame {
  return userRecord(s, userId) === undefined
    ? s
    : { ...s, users: s.users.filter((u) => u.userId !== userId) };
}

function withDevice(s: ModelSesame, userId: UserId, device: ModelDeviceRecord): ModelSesame {
  const user = userRecord(s, userId);
  if (user === undefined) return withUser(s, { userId, staleSince: null, devices: [device] });
  const devices = [...user.devices.filter((d) => d.deviceId !== device.deviceId), device].sort(
    (a, b) => a.deviceId - b.deviceId,
  );
  return withUser(s, { ...user, devices });
}

/** Sesame §3.2 Delete with the cascade of WP-SES-01. */
export function withoutDevice(s: ModelSesame, userId: UserId, deviceId: DeviceId): ModelSesame {
  const user = userRecord(s, userId);
  if (user === undefined || !user.devices.some((d) => d.deviceId === deviceId)) return s;
  const devices = user.devices.filter((d) => d.deviceId !== deviceId);
  return devices.length === 0 ? withoutUser(s, userId) : withUser(s, { ...user, devices });
}

/** Sesame §3.2 MarkStale on a device record (WP-SES-06; the first mark is kept). */
export function markDeviceRecordStale(
  s: ModelSesame,
  userId: UserId,
  deviceId: DeviceId,
  now: number,
): ModelSesame {
  const device = deviceRecord(s, userId, deviceId);
  if (device === undefined || device.staleSince !== null) return s;
  return withDevice(s, userId, { ...device, staleSince: now });
}

function markUserRecordStale(s: ModelSesame, userId: UserId, now: number): ModelSesame {
  const user = userRecord(s, userId);
  if (user === undefined || user.staleSince !== null) return s;
  return withUser(s, { ...user, staleSince: now });
}

function emptyDevice(deviceId: DeviceId, identityKey: Uint8Array, registrationId: number): ModelDeviceRecord {
  return {
    deviceId,
    identityKey: copyBytes(identityKey),
    registrationId,
    sessions: NO_SESSIONS,
    staleSince: null,
  };
}

function oldestStaleOf<T extends { readonly staleSince: number | null }>(items: readonly T[]): T | undefined {
  // `items` are in id order, so the first of equal marks has the lowest id.
  let oldest: T | undefined;
  for (const item of items)
    if (item.staleSince !== null && (oldest === undefined || item.staleSince < (oldest.staleSince ?? 0)))
      oldest = item;
  return oldest;
}

/** WP-SES-15: room for a new record of `userId.deviceId`, evicting the oldest stale one if full. */
function roomFor(s: ModelSesame, userId: UserId, deviceId: DeviceId): Result<ModelSesame> {
  const user = userRecord(s, userId);
  if (user === undefined) {
    if (s.users.length < MAX_USER_RECORDS) return accept(s);
    const evict = oldestStaleOf(s.users);
    if (evict === undefined)
      return reject('SESAME_TOO_MANY_USERS', 'user records are at their limit and none is stale', {
        limit: MAX_USER_RECORDS,
      });
    return accept(withoutUser(s, evict.userId));
  }
  if (user.devices.some((d) => d.deviceId === deviceId)) return accept(s);
  if (user.devices.length < MAX_DEVICE_RECORDS_PER_USER) return accept(s);
  const evict = oldestStaleOf(user.devices);
  if (evict === undefined)
    return reject(
      'SESAME_TOO_MANY_DEVICES',
      'device records of this user are at their limit and none is stale',
      {
        limit: MAX_DEVICE_RECORDS_PER_USER,
      },
    );
  return accept(withoutDevice(s, userId, evict.deviceId));
}

/** What ConditionalUpdate did. */
export interface ModelUpdate {
  readonly sesame: ModelSesame;
  readonly keyChanged: boolean;
  readonly created: boolean;
}

/**
 * WP-SES-02 ConditionalUpdate: create a missing record; replace one with a different identity key
 * (or, when `byRegistrationId`, registration id) by an empty one. Nothing for our own address.
 */
export function conditionalUpdateRecord(
  s: ModelSesame,
  userId: UserId,
  deviceId: DeviceId,
  identityKey: Uint8Array,
  registrationId: number,
  byRegistrationId: boolean,
): Result<ModelUpdate> {
  if (isOwnAddress(s, userId, deviceId)) return accept({ sesame: s, keyChanged: false, created: false });
  const existing = deviceRecord(s, userId, deviceId);
  if (existing !== undefined) {
    const sameKey = equalBytes(existing.identityKey, identityKey);
    if (sameKey && (!byRegistrationId || existing.registrationId === registrationId))
      return accept({ sesame: s, keyChanged: false, created: false });
    return accept({
      sesame: withDevice(s, userId, emptyDevice(deviceId, identityKey, registrationId)),
      keyChanged: !sameKey,
      created: false,
    });
  }
  const room = roomFor(s, userId, deviceId);
  if (!room.ok) return room;
  return accept({
    sesame: withDevice(room.value, userId, emptyDevice(deviceId, identityKey, registrationId)),
    keyChanged: false,
    created: true,
  });
}

/** ConditionalUpdate for a verified list entry; a full store is caller misuse (as impl). */
export function conditionalUpdateFromList(
  s: ModelSesame,
  userId: UserId,
  entry: DeviceListEntry,
): ModelUpdate {
  if (!isValidUserId(userId) || !isValidDeviceId(entry.deviceId) || !isUint32(entry.registrationId))
    throw new UsageError('conditionalUpdate: malformed list entry');
  if (!decodeEcPublicKey(entry.identityKey).ok)
    throw new UsageError('conditionalUpdate: malformed identity key');
  const updated = conditionalUpdateRecord(
    s,
    userId,
    entry.deviceId,
    entry.identityKey,
    entry.registrationId,
    true,
  );
  if (!updated.ok) throw new UsageError(`conditionalUpdate: ${updated.error.message}`);
  return updated.value;
}

function isUint32(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= MAX_UINT32;
}

/** WP-SES-16: an entry from the server is checked before it is stored. */
function entryProblem(
  userId: unknown,
  deviceId: unknown,
  registrationId: unknown,
  identityKey: unknown,
  source: string,
): ProtocolError | null {
  const field = !isValidUserId(userId)
    ? 'userId'
    : !isValidDeviceId(deviceId)
      ? 'deviceId'
      : !isUint32(registrationId)
        ? 'registrationId'
        : !(identityKey instanceof Uint8Array) || !decodeEcPublicKey(identityKey).ok
          ? 'identityKey'
          : null;
  if (field === null) return null;
  return reject('SESAME_INVALID_DEVICE_ENTRY', `${source}: ${field} is malformed`, { field }).error;
}

/** WP-SES-03: the stale record a tuple falls in is deleted first. */
function dropStaleRecordFor(s: ModelSesame, userId: UserId, deviceId: DeviceId): ModelSesame {
  const user = userRecord(s, userId);
  if (user === undefined) return s;
  if (user.staleSince !== null) return withoutUser(s, userId);
  const device = user.devices.find((d) => d.deviceId === deviceId);
  return device !== undefined && device.staleSince !== null ? withoutDevice(s, userId, deviceId) : s;
}

/**
 * WP-SES-03 PrepEncrypt from a bundle (`fresh`: always a new session, WP-SES-13). The state is
 * unchanged on any error.
 */
export function prepareSession(
  env: Env,
  s: ModelSesame,
  ours: { readonly identityKeyPair: KeyPair; readonly registrationId: number },
  bundle: PreKeyBundle & { readonly userId: UserId },
  now: number,
  fresh: boolean,
): Result<{ readonly sesame: ModelSesame; readonly keyChanged: boolean }> {
  const bad = entryProblem(
    bundle.userId,
    bundle.deviceId,
    bundle.registrationId,
    bundle.identityKey,
    'bundle',
  );
  if (bad !== null) return { ok: false, error: bad };
  if (isOwnAddress(s, bundle.userId, bundle.deviceId))
    return reject('SESAME_OWN_ADDRESS', 'a bundle for our own device');
  const updated = conditionalUpdateRecord(
    dropStaleRecordFor(s, bundle.userId, bundle.deviceId),
    bundle.userId,
    bundle.deviceId,
    bundle.identityKey,
    bundle.registrationId,
    true,
  );
  if (!updated.ok) return updated;
  const device = deviceRecord(updated.value.sesame, bundle.userId, bundle.deviceId);
  if (device === undefined) throw new UsageError('prepareSession: device record vanished');
  if (!fresh && canEncrypt(device.sessions, now))
    return accept({ sesame: updated.value.sesame, keyChanged: updated.value.keyChanged });
  const sessions = sessionFromBundle(env, device.sessions, ours, bundle, now);
  if (!sessions.ok) return sessions;
  return accept({
    sesame: withDevice(updated.value.sesame, bundle.userId, { ...device, sessions: sessions.value }),
    keyChanged: updated.value.keyChanged,
  });
}

/** Non-stale devices of a non-stale user without a usable active session. */
export function devicesWithoutSession(s: ModelSesame, userId: UserId, now: number): readonly DeviceId[] {
  const user = userRecord(s, userId);
  if (user === undefined || user.staleSince !== null) return [];
  return user.devices
    .filter((d) => d.staleSince === null && !canEncrypt(d.sessions, now))
    .map((d) => d.deviceId);
}

// ---------------------------------------------------------------------------------------------
// Sending (§3.3)

interface Sealed {
  readonly device: ModelDeviceRecord;
  readonly message: OutgoingDeviceMessage;
  readonly sessionBaseKey: Uint8Array;
}

function sealForDevice(
  env: Env,
  userId: UserId,
  device: ModelDeviceRecord,
  plaintext: Uint8Array,
  now: number,
): Result<Sealed> {
  const active = device.sessions.active;
  // WP-SES-05
  if (active === null || !canEncrypt(device.sessions, now))
    return reject('SESAME_NO_USABLE_SESSION', `no usable active session with a device of ${userId}`, {
      deviceId: device.deviceId,
    });
  const sealed = sealMessage(env, device.sessions, plaintext, now);
  if (!sealed.ok) return sealed;
  return accept({
    device: { ...device, sessions: sealed.value.record },
    message: {
      deviceId: device.deviceId,
      registrationId: device.registrationId,
      type: sealed.value.message.type,
      bytes: sealed.value.message.bytes,
    },
    sessionBaseKey: copyBytes(active.baseKey),
  });
}

/** The sessions a fan-out used (Sesame §4.1 SessionIDs). */
export type SessionsUsed = readonly { readonly deviceId: DeviceId; readonly sessionBaseKey: Uint8Array }[];

/** WP-SES-05: one copy per non-stale device record of a non-stale user, in device-id order. */
export function sealForUser(
  env: Env,
  s: ModelSesame,
  userId: UserId,
  plaintext: Uint8Array,
  now: number,
): Result<{
  readonly sesame: ModelSesame;
  readonly messages: readonly OutgoingDeviceMessage[];
  readonly sessionsUsed: SessionsUsed;
}> {
  const user = userRecord(s, userId);
  // WP-SES-11
  if (user === undefined || user.staleSince !== null)
    return accept({ sesame: s, messages: [], sessionsUsed: [] });
  const devices: ModelDeviceRecord[] = [];
  const messages: OutgoingDeviceMessage[] = [];
  const sessionsUsed: { deviceId: DeviceId; sessionBaseKey: Uint8Array }[] = [];
  for (const device of user.devices) {
    if (device.staleSince !== null) {
      devices.push(device);
      continue;
    }
    const sealed = sealForDevice(env, userId, device, plaintext, now);
    if (!sealed.ok) return sealed;
    devices.push(sealed.value.device);
    messages.push(sealed.value.message);
    sessionsUsed.push({ deviceId: device.deviceId, sessionBaseKey: sealed.value.sessionBaseKey });
  }
  return accept({ sesame: withUser(s, { ...user, devices }), messages, sessionsUsed });
}

/** One device's copy (a resend, Sesame §4.1); stale records refuse (WP-SES-11). */
export function sealForOneDevice(
  env: Env,
  s: ModelSesame,
  userId: UserId,
  deviceId: DeviceId,
  plaintext: Uint8Array,
  now: number,
): Result<{
  readonly sesame: ModelSesame;
  readonly message: OutgoingDeviceMessage;
  readonly sessionBaseKey: Uint8Array;
}> {
  const user = userRecord(s, userId);
  const device = user?.devices.find((d) => d.deviceId === deviceId);
  if (user === undefined || device === undefined)
    return reject('SESAME_NO_DEVICE_RECORD', `no record for a device of ${userId}`, { deviceId });
  if (user.staleSince !== null || device.staleSince !== null)
    return reject('SESAME_RECORD_STALE', `the record for a device of ${userId} is stale`, { deviceId });
  const sealed = sealForDevice(env, userId, device, plaintext, now);
  if (!sealed.ok) return sealed;
  return accept({
    sesame: withDevice(s, userId, sealed.value.device),
    message: sealed.value.message,
    sessionBaseKey: sealed.value.sessionBaseKey,
  });
}

function refusalIdsProblem(s: ModelSesame, userId: UserId, ids: readonly DeviceId[]): Result<null> {
  const seen: number[] = [];
  for (const deviceId of ids) {
    if (!isValidDeviceId(deviceId))
      return reject('SESAME_REFUSAL_INVALID', 'refusal names a device id out of range', {
        field: 'deviceId',
      });
    if (seen.includes(deviceId))
      return reject('SESAME_REFUSAL_INVALID', 'refusal names a device twice', { deviceId });
    seen.push(deviceId);
    if (isOwnAddress(s, userId, deviceId))
      return reject('SESAME_REFUSAL_INVALID', 'refusal names our own device', { deviceId });
  }
  return accept(null);
}

function listEntryFor(
  entries: readonly DeviceListEntry[] | null,
  userId: UserId,
  deviceId: DeviceId,
): Result<DeviceListEntry> {
  const entry = entries?.find((e) => e.deviceId === deviceId);
  if (entry === undefined)
    return reject('SESAME_REFUSAL_INVALID', 'refusal names a device absent from the current device list', {
      deviceId,
    });
  const bad = entryProblem(
    userId,
    entry.deviceId,
    entry.registrationId,
    entry.identityKey,
    'device list entry',
  );
  return bad === null ? accept(entry) : { ok: false, error: bad };
}

/** WP-SES-06..08: a server refusal updates only `userId`'s records; all-or-nothing. */
export function applyRefusal(
  s: ModelSesame,
  userId: UserId,
  refusal: SendRefusal,
  entries: readonly DeviceListEntry[] | null,
  now: number,
): Result<{ readonly sesame: ModelSesame; readonly keyChanges: readonly DeviceId[] }> {
  if (refusal.kind === 'mailbox-full') return accept({ sesame: s, keyChanges: [] });
  if (refusal.kind === 'unknown-user')
    return accept({ sesame: markUserRecordStale(s, userId, now), keyChanges: [] });
  const staleUser = (x: ModelSesame): boolean => (userRecord(x, userId)?.staleSince ?? null) !== null;
  const keyChanges: DeviceId[] = [];
  if (refusal.kind === 'mismatched-devices') {
    const ids = refusalIdsProblem(s, userId, [...refusal.missing, ...refusal.extra]);
    if (!ids.ok) return ids;
    let next = s;
    if (refusal.missing.length > 0 && staleUser(next)) next = withoutUser(next, userId);
    for (const deviceId of refusal.extra) next = markDeviceRecordStale(next, userId, deviceId, now);
    for (const deviceId of refusal.missing) {
      const entry = listEntryFor(entries, userId, deviceId);
      if (!entry.ok) return entry;
      const updated = conditionalUpdateRecord(
        dropStaleRecordFor(next, userId, deviceId),
        userId,
        deviceId,
        entry.value.identityKey,
        entry.value.registrationId,
        true,
      );
      if (!updated.ok) return updated;
      next = updated.value.sesame;
      if (updated.value.keyChanged) keyChanges.push(deviceId);
    }
    return accept({ sesame: next, keyChanges });
  }
  const ids = refusalIdsProblem(s, userId, refusal.stale);
  if (!ids.ok) return ids;
  let next = s;
  if (refusal.stale.length > 0 && staleUser(next)) next = withoutUser(next, userId);
  for (const deviceId of refusal.stale) {
    const entry = listEntryFor(entries, userId, deviceId);
    if (!entry.ok) return entry;
    const old = deviceRecord(next, userId, deviceId);
    if (old !== undefined && !equalBytes(old.identityKey, entry.value.identityKey)) keyChanges.push(deviceId);
    const updated = conditionalUpdateRecord(
      withoutDevice(next, userId, deviceId),
      userId,
      deviceId,
      entry.value.identityKey,
      entry.value.registrationId,
      true,
    );
    if (!updated.ok) return updated;
    next = updated.value.sesame;
  }
  return accept({ sesame: next, keyChanges });
}

// ---------------------------------------------------------------------------------------------
// Receiving (§3.4)

/** A decrypted envelope, not yet committed. */
export interface ModelReceived {
  readonly sesame: ModelSesame;
  readonly prekeys: ModelPreKeys;
  readonly plaintext: Uint8Array;
  readonly senderIdentityKey: Uint8Array;
  readonly keyChanged: boolean;
}

/** WP-SES-09/10: decrypt on the sender's record (creating a session for a new PreKey message). */
export function openFromSender(
  env: Env,
  s: ModelSesame,
  prekeys: ModelPreKeys,
  sender: DeviceAddress,
  type: 'prekey' | 'whisper',
  bytes: Uint8Array,
  sequential = false,
): Result<ModelReceived> {
  if (!isValidUserId(sender.userId) || !isValidDeviceId(sender.deviceId))
    return reject('SESAME_INVALID_DEVICE_ENTRY', 'sender address is malformed', { field: 'sender' });
  if (isOwnAddress(s, sender.userId, sender.deviceId))
    return reject('SESAME_OWN_ADDRESS', 'message claims our own address');
  const device = deviceRecord(s, sender.userId, sender.deviceId);
  if (type === 'whisper') {
    if (device === undefined)
      return reject('SESAME_NO_DEVICE_RECORD', 'no record for the sending device', {
        deviceId: sender.deviceId,
      });
    const opened = openSignalMessage(env, device.sessions, bytes, sequential);
    if (!opened.ok) return opened;
    return accept({
      sesame: withDevice(s, sender.userId, { ...device, sessions: opened.value.record }),
      prekeys,
      plaintext: opened.value.plaintext,
      senderIdentityKey: copyBytes(device.identityKey),
      keyChanged: false,
    });
  }
  const parsed = parsePreKeySignalMessage(bytes);
  if (!parsed.ok) return parsed;
  let next = s;
  let keyChanged = false;
  let target = device;
  if (
    target === undefined ||
    !holdsSession(target.sessions, parsed.value.baseKey, parsed.value.messageVersion)
  ) {
    const updated = conditionalUpdateRecord(
      next,
      sender.userId,
      sender.deviceId,
      parsed.value.identityKey,
      parsed.value.registrationId,
      false,
    );
    if (!updated.ok) return updated;
    next = updated.value.sesame;
    keyChanged = updated.value.keyChanged;
    target = deviceRecord(next, sender.userId, sender.deviceId);
    if (target === undefined) throw new UsageError('openFromSender: device record vanished');
  }
  const opened = openPreKeyMessage(env, target.sessions, prekeys, parsed.value, sequential);
  if (!opened.ok) return opened;
  return accept({
    sesame: withDevice(next, sender.userId, { ...target, sessions: opened.value.record }),
    prekeys: opened.value.prekeys,
    plaintext: opened.value.plaintext,
    senderIdentityKey: copyBytes(target.identityKey),
    keyChanged,
  });
}

// ---------------------------------------------------------------------------------------------
// Retry requests (§4.1)

function boundedAppend(
  records: readonly ModelMessageRecord[],
  r: ModelMessageRecord,
): readonly ModelMessageRecord[] {
  return [...records, r].slice(-MAX_MESSAGE_RECORDS);
}

/** WP-SES-12: remember a sent copy (replaced in place, keeping its resend count). */
export function rememberSentCopy(s: ModelSesame, r: Omit<ModelMessageRecord, 'resends'>): ModelSesame {
  const same = (x: ModelMessageRecord): boolean =>
    x.messageId === r.messageId && x.userId === r.userId && x.deviceId === r.deviceId;
  const existing = s.messageRecords.find(same);
  const fresh: ModelMessageRecord = {
    ...r,
    sessionBaseKey: copyBytes(r.sessionBaseKey),
    plaintext: copyBytes(r.plaintext),
    resends: existing?.resends ?? 0,
  };
  if (existing === undefined) return { ...s, messageRecords: boundedAppend(s.messageRecords, fresh) };
  return { ...s, messageRecords: s.messageRecords.map((x) => (same(x) ? fresh : x)) };
}

/** What a retry request leads to. */
export type ModelRetryDecision =
  | { readonly kind: 'resend'; readonly needNewSession: boolean; readonly plaintext: Uint8Array }
  | { readonly kind: 'drop' };

/** WP-SES-13/14: answer a retry request from `requester` for `messageId`. */
export function decideRetry(
  s: ModelSesame,
  requester: DeviceAddress,
  messageId: MessageId,
  now: number,
): Result<{ readonly sesame: ModelSesame; readonly decision: ModelRetryDecision }> {
  if (!isValidUserId(requester.userId) || !isValidDeviceId(requester.deviceId))
    return reject('SESAME_INVALID_DEVICE_ENTRY', 'requester address is malformed', { field: 'requester' });
  const { userId, deviceId } = requester;
  if (isOwnAddress(s, userId, deviceId))
    return reject('SESAME_OWN_ADDRESS', 'retry request claims our own address');
  const forUser = s.messageRecords.filter((r) => r.messageId === messageId && r.userId === userId);
  const chosen = forUser.find((r) => r.deviceId === deviceId) ?? forUser[0];
  // WP-SES-13 (unknown message / user mismatch) and WP-SES-14 (resend limit): dropped.
  if (chosen === undefined || chosen.resends >= MAX_RESENDS)
    return accept({ sesame: s, decision: { kind: 'drop' } });
  const bumped: ModelMessageRecord = { ...chosen, deviceId, resends: chosen.resends + 1 };
  const same = (r: ModelMessageRecord): boolean =>
    r.messageId === messageId && r.userId === userId && r.deviceId === deviceId;
  const messageRecords = s.messageRecords.some(same)
    ? s.messageRecords.map((r) => (same(r) ? bumped : r))
    : boundedAppend(s.messageRecords, bumped);
  const user = userRecord(s, userId);
  const device = user?.devices.find((d) => d.deviceId === deviceId);
  const usable =
    user !== undefined &&
    device !== undefined &&
    user.staleSince === null &&
    device.staleSince === null &&
    canEncrypt(device.sessions, now);
  const active = device?.sessions.active ?? null;
  const needNewSession = !usable || active === null || equalBytes(active.baseKey, chosen.sessionBaseKey);
  return accept({
    sesame: { ...s, messageRecords },
    decision: { kind: 'resend', needNewSession, plaintext: copyBytes(chosen.plaintext) },
  });
}

// ---------------------------------------------------------------------------------------------
// Stale records (§3.1, §6.4)

/** WP-SES-11: delete stale records older than MAX_LATENCY whose age a complete drain has passed. */
export function dropExpiredStaleRecords(s: ModelSesame, now: number, lastFullDrainAt: number): ModelSesame {
  const expired = (since: number | null): boolean =>
    since !== null && now - since > MAX_LATENCY_MS && lastFullDrainAt >= since + MAX_LATENCY_MS;
  let next = s;
  for (const user of s.users) {
    if (expired(user.staleSince)) {
      next = withoutUser(next, user.userId);
      continue;
    }
    for (const device of user.devices)
      if (expired(device.staleSince)) next = withoutDevice(next, user.userId, device.deviceId);
  }
  return next;
}

/** Projects onto spec/sesame-abstract.ts. */
export function abstractModelSesame(c: CryptoProvider, s: ModelSesame): SesameAbstract {
  return {
    self: { userId: s.self.userId, deviceId: s.self.deviceId },
    users: s.users.map((u) => ({
      userId: u.userId,
      stale: u.staleSince !== null,
      devices: u.devices.map((d) => ({
        deviceId: d.deviceId,
        stale: d.staleSince !== null,
        identityKeyFp: fingerprint(c, d.identityKey),
        registrationId: d.registrationId,
        sessions: abstractModelRecord(c, d.sessions),
      })),
    })),
    messageRecords: s.messageRecords.length,
  };
}
