/**
 * WP-STATE-01, WP-SES-17: the canonical JSON encoding of a Sesame state. Bytes are lowercase hex,
 * keys snake_case, user records sorted by user id and device records by device id (so the encoding
 * does not depend on insertion order), and each device record's session record is embedded as the
 * JSON object impl/state-codec.ts writes for it:
 *
 * ```
 * { "version": 1,
 *   "self": { "user_id", "device_id" },
 *   "users": [ { "user_id", "stale_since", "devices": [ { "device_id", "identity_key",
 *                "registration_id", "stale_since", "sessions": <session record> } ] } ],
 *   "message_records": [ { "message_id", "user_id", "device_id", "session_base_key",
 *                          "plaintext", "resends" } ] }
 * ```
 *
 * The decoder accepts exactly what the encoder writes: it refuses any field of the wrong type or
 * length, unsorted or repeated records, and every state the Sesame rules cannot produce (a record
 * for our own address, an empty user record, stores beyond their bounds, a session with another
 * identity key than its record's): `STATE_MALFORMED` with the path of the first bad field.
 * `decode(encode(x))` equals `x` and `encode(decode(s)) === s` for canonical `s`.
 * @module
 */
import { equalBytes } from '../spec/bytes.js';
import {
  MAX_DEVICE_RECORDS_PER_USER,
  MAX_MESSAGE_RECORDS,
  MAX_RESENDS,
  MAX_UINT32,
  MAX_USER_RECORDS,
} from '../spec/constants.js';
import { accept, reject, type Result } from '../spec/errors.js';
import { toHex } from '../spec/hex.js';
import { isValidDeviceId, isValidMessageId, isValidUserId } from '../spec/identity.js';
import { decodeEcPublicKey } from '../spec/keys.js';
import type { DeviceRecord, MessageRecord, SesameState, UserRecord } from './sesame.js';
import { decodeSessionRecord, encodeSessionRecord } from './state-codec.js';
import type { SessionRecord } from './session-state.js';

/** Version of the Sesame state JSON encoding. */
export const SESAME_STATE_JSON_VERSION = 1;

const byUserId = (a: UserRecord, b: UserRecord): number =>
  a.userId < b.userId ? -1 : a.userId > b.userId ? 1 : 0;
const byDeviceId = (a: DeviceRecord, b: DeviceRecord): number => a.deviceId - b.deviceId;

/** Encodes a Sesame state as canonical JSON. */
export function encodeSesameState(state: SesameState): string {
  return JSON.stringify({
    version: SESAME_STATE_JSON_VERSION,
    self: { user_id: state.self.userId, device_id: state.self.deviceId },
    users: Object.values(state.users)
      .sort(byUserId)
      .map((user) => ({
        user_id: user.userId,
        stale_since: user.staleSince,
        devices: Object.values(user.devices)
          .sort(byDeviceId)
          .map((device) => ({
            device_id: device.deviceId,
            identity_key: toHex(device.identityKey),
            registration_id: device.registrationId,
            stale_since: device.staleSince,
            // The session record's own canonical encoding, embedded as an object.
            sessions: JSON.parse(encodeSessionRecord(device.sessions)) as unknown,
          })),
      })),
    message_records: state.messageRecords.map((r) => ({
      message_id: r.messageId,
      user_id: r.userId,
      device_id: r.deviceId,
      session_base_key: toHex(r.sessionBaseKey),
      plaintext: toHex(r.plaintext),
      resends: r.resends,
    })),
  });
}

/** Thrown inside the decoder and turned into a returned rejection at its entry point. */
class Malformed {
  constructor(
    readonly path: string,
    readonly code: 'STATE_MALFORMED' | 'STATE_VERSION_UNKNOWN' = 'STATE_MALFORMED',
  ) {}
}

type Obj = { readonly [key: string]: unknown };

function obj(value: unknown, path: string): Obj {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Malformed(path);
  return value as Obj;
}
function bounded(value: unknown, path: string, limit: number): readonly unknown[] {
  if (!Array.isArray(value) || value.length > limit) throw new Malformed(path);
  return value;
}
function uint(value: unknown, path: string, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0 || value > max)
    throw new Malformed(path);
  return value;
}
function timeOrNull(value: unknown, path: string): number | null {
  return value === null ? null : uint(value, path);
}
function bytes(value: unknown, path: string): Uint8Array {
  if (typeof value !== 'string' || !/^(?:[0-9a-f]{2})*$/.test(value)) throw new Malformed(path);
  const out = new Uint8Array(value.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(value.slice(2 * i, 2 * i + 2), 16);
  return out;
}
/** A stored key passes the same decoder as a key from the wire (WP-KEYS-01..03). */
function ecPublic(value: unknown, path: string): Uint8Array {
  const b = bytes(value, path);
  if (b.length !== 33 || !decodeEcPublicKey(b).ok) throw new Malformed(path);
  return b;
}
function userId(value: unknown, path: string): string {
  if (!isValidUserId(value)) throw new Malformed(path);
  return value;
}
function deviceId(value: unknown, path: string): number {
  if (!isValidDeviceId(value)) throw new Malformed(path);
  return value;
}

function readSessions(value: unknown, path: string, identityKey: Uint8Array): SessionRecord {
  const decoded = decodeSessionRecord(JSON.stringify(obj(value, path)));
  if (!decoded.ok) {
    const inner = decoded.error.details?.['path'];
    throw new Malformed(
      typeof inner === 'string' ? `${path}.${inner}` : path,
      decoded.error.code === 'STATE_VERSION_UNKNOWN' ? 'STATE_VERSION_UNKNOWN' : 'STATE_MALFORMED',
    );
  }
  const record = decoded.value;
  const current = record.current;
  // WP-SES-01: the active session is not also inactive, and every session is with the record's key.
  if (current !== null && record.archived.some((s) => equalBytes(s.aliceBaseKey, current.aliceBaseKey)))
    throw new Malformed(`${path}.archived`);
  const all = current === null ? record.archived : [current, ...record.archived];
  all.forEach((s, i) => {
    if (!equalBytes(s.remoteIdentityKey, identityKey))
      throw new Malformed(`${path}[${i}].remote_identity_key`);
  });
  return record;
}

function readState(o: Obj): SesameState {
  const selfObj = obj(o['self'], 'self');
  const self = {
    userId: userId(selfObj['user_id'], 'self.user_id'),
    deviceId: deviceId(selfObj['device_id'], 'self.device_id'),
  };
  const users: Record<string, UserRecord> = {};
  let previousUser: string | null = null;
  // WP-SES-15: the stores are bounded.
  bounded(o['users'], 'users', MAX_USER_RECORDS).forEach((u, i) => {
    const p = `users[${i}]`;
    const uo = obj(u, p);
    const uid = userId(uo['user_id'], `${p}.user_id`);
    // Canonical order: strictly increasing user ids (no duplicates).
    if (previousUser !== null && uid <= previousUser) throw new Malformed(`${p}.user_id`);
    previousUser = uid;
    const devices: Record<string, DeviceRecord> = {};
    const list = bounded(uo['devices'], `${p}.devices`, MAX_DEVICE_RECORDS_PER_USER);
    // WP-SES-01: no empty user record.
    if (list.length === 0) throw new Malformed(`${p}.devices`);
    let previousDevice = 0;
    list.forEach((d, j) => {
      const q = `${p}.devices[${j}]`;
      const dobj = obj(d, q);
      const did = deviceId(dobj['device_id'], `${q}.device_id`);
      if (did <= previousDevice) throw new Malformed(`${q}.device_id`);
      previousDevice = did;
      // WP-SES-04: no record for our own address.
      if (uid === self.userId && did === self.deviceId) throw new Malformed(`${q}.device_id`);
      const identityKey = ecPublic(dobj['identity_key'], `${q}.identity_key`);
      devices[String(did)] = {
        deviceId: did,
        identityKey,
        registrationId: uint(dobj['registration_id'], `${q}.registration_id`, MAX_UINT32),
        sessions: readSessions(dobj['sessions'], `${q}.sessions`, identityKey),
        staleSince: timeOrNull(dobj['stale_since'], `${q}.stale_since`),
      };
    });
    users[uid] = { userId: uid, staleSince: timeOrNull(uo['stale_since'], `${p}.stale_since`), devices };
  });
  const seen = new Set<string>();
  const messageRecords: MessageRecord[] = bounded(
    o['message_records'],
    'message_records',
    MAX_MESSAGE_RECORDS,
  ).map((m, i) => {
    const p = `message_records[${i}]`;
    const mo = obj(m, p);
    const messageId = mo['message_id'];
    if (!isValidMessageId(messageId)) throw new Malformed(`${p}.message_id`);
    const record: MessageRecord = {
      messageId,
      userId: userId(mo['user_id'], `${p}.user_id`),
      deviceId: deviceId(mo['device_id'], `${p}.device_id`),
      sessionBaseKey: ecPublic(mo['session_base_key'], `${p}.session_base_key`),
      plaintext: bytes(mo['plaintext'], `${p}.plaintext`),
      // WP-SES-14: the resend counter never passes its limit.
      resends: uint(mo['resends'], `${p}.resends`, MAX_RESENDS),
    };
    // WP-SES-12: one record per message and recipient device, never for our own address.
    const key = `${record.messageId}/${record.userId}.${record.deviceId}`;
    if (seen.has(key) || (record.userId === self.userId && record.deviceId === self.deviceId))
      throw new Malformed(`${p}.device_id`);
    seen.add(key);
    return record;
  });
  return { self, users, messageRecords };
}

/** Decodes a Sesame state; a rejection names the path of the first bad field. */
export function decodeSesameState(json: string): Result<SesameState> {
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch {
    return reject('STATE_MALFORMED', 'state is not valid JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    return reject('STATE_MALFORMED', 'state is not a JSON object');
  const o = value as Obj;
  // WP-STATE-01: unknown versions are refused, never guessed at.
  if (o['version'] !== SESAME_STATE_JSON_VERSION)
    return reject('STATE_VERSION_UNKNOWN', 'unknown state encoding version', {
      expected: SESAME_STATE_JSON_VERSION,
      got: String(o['version']),
    });
  try {
    return accept(readState(o));
  } catch (e) {
    if (!(e instanceof Malformed)) throw e;
    return e.code === 'STATE_VERSION_UNKNOWN'
      ? reject('STATE_VERSION_UNKNOWN', 'unknown session record encoding version', { path: e.path })
      : reject('STATE_MALFORMED', 'state field is missing, malformed or inconsistent', { path: e.path });
  }
}
