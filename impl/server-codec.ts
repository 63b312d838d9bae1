/**
 * WP-SRV-27 / WP-STATE-01: the one canonical JSON encoding of the honest server's state, so that
 * mailboxes are durable: a server that crashes and restarts from its last snapshot has lost nothing
 * it acknowledged. Same conventions as impl/state-codec.ts: a `version` field, snake_case keys in a
 * fixed order, lowercase hex for bytes, and every keyed collection written as an array sorted by
 * its key (accounts by user id, devices by device id, the rest by their text key), so equal states
 * have equal encodings.
 *
 * ```text
 * { version: 2,
 *   accounts: [{ user_id, signed_device_list: { list, signature },
 *                devices: [{ device_id, identity_key, registration_id,
 *                            pre_keys: { signed_pre_key, one_time_pre_keys, kyber_pre_keys,
 *                                        last_resort_kyber_pre_key, one_time_pre_key_id_floor,
 *                                        kyber_pre_key_id_floor },
 *                            mailbox: { next_envelope_id, envelopes: [{ envelope_id, message_id,
 *                                       sender: { user_id, device_id }, type, bytes,
 *                                       server_timestamp }] } }],
 *                recent_sends: [{ sender, message_id }] }],
 *   dropped_by_rule: [{ user_id, device_id, count }],
 *   provisioning: [{ address, bytes, stored_at }],
 *   blobs: [{ blob_id, bytes }] }
 * ```
 *
 * The decoder takes the crypto provider because it re-checks what the server relies on: each
 * signed device list verifies for its user (WP-SRV-02) and every registered device matches its
 * list entry (WP-SRV-11), and each blob's id is the SHA-256 of its bytes (WP-SRV-24). It also checks
 * key encodings, every bound of spec/constants.ts, sort order and uniqueness, and rejects anything
 * else with `STATE_MALFORMED` (naming the path) or `STATE_VERSION_UNKNOWN`. Prekey signatures are
 * checked for length only (they were verified at upload, WP-SRV-08). `decode(encode(s))` equals `s`
 * and `encode(decode(j)) === j` for a canonical `j`.
 * @module
 */
import {
  MAILBOX_CAPACITY,
  MAX_ACCOUNTS,
  MAX_BLOB_SIZE,
  MAX_BLOBS,
  MAX_ENVELOPE_SIZE,
  MAX_ONE_TIME_PREKEYS,
  MAX_PROVISIONING_ENTRIES,
  MAX_PROVISIONING_SIZE,
  MAX_UINT32,
  MESSAGE_ID_DEDUP_WINDOW,
  SIGNATURE_LENGTH,
} from '../spec/constants.js';
import { equalBytes } from '../spec/bytes.js';
import type { CryptoProvider } from '../spec/crypto/provider.js';
import { verifySignedDeviceList } from '../spec/device-list.js';
import type { SignedDeviceList } from '../spec/device-list-types.js';
import { accept, reject, type Result } from '../spec/errors.js';
import { fromHex, toHex } from '../spec/hex.js';
import {
  addressKey,
  isValidDeviceId,
  isValidMessageId,
  isValidUserId,
  MAX_DEVICE_ID,
  type DeviceAddress,
} from '../spec/identity.js';
import { decodeEcPublicKey, decodeKemPublicKey } from '../spec/keys.js';
import type { Envelope, EnvelopeType } from '../spec/server-api.js';
import {
  BLOB_ID,
  PROVISIONING_ADDRESS,
  type Mailbox,
  type ProvisioningEntry,
  type RecentSend,
  type ServerAccount,
  type ServerDevice,
  type ServerPreKeys,
  type ServerState,
  type StoredKyberPreKey,
  type StoredOneTimePreKey,
  type StoredSignedPreKey,
} from './server.js';

/**
 * Version of the server-state JSON encoding. 2: each device's prekeys carry their id floors
 * (WP-SRV-29); a version-1 snapshot lacks them and is refused rather than guessed at.
 */
export const SERVER_STATE_JSON_VERSION = 2;

type Json = null | boolean | number | string | readonly Json[] | { readonly [key: string]: Json };

const addressJson = (a: DeviceAddress): Json => ({ user_id: a.userId, device_id: a.deviceId });
const signedKeyJson = (k: StoredSignedPreKey | StoredKyberPreKey): Json => ({
  key_id: k.keyId,
  public_key: toHex(k.publicKey),
  signature: toHex(k.signature),
});
const envelopeJson = (e: Envelope): Json => ({
  envelope_id: e.envelopeId,
  message_id: e.messageId,
  sender: addressJson(e.sender),
  type: e.type,
  bytes: toHex(e.bytes),
  server_timestamp: e.serverTimestamp,
});
const deviceJson = (deviceId: number, d: ServerDevice): Json => ({
  device_id: deviceId,
  identity_key: toHex(d.identityKey),
  registration_id: d.registrationId,
  pre_keys: {
    signed_pre_key: signedKeyJson(d.preKeys.signedPreKey),
    one_time_pre_keys: d.preKeys.oneTimePreKeys.map((k) => ({
      key_id: k.keyId,
      public_key: toHex(k.publicKey),
    })),
    kyber_pre_keys: d.preKeys.kyberPreKeys.map(signedKeyJson),
    last_resort_kyber_pre_key: signedKeyJson(d.preKeys.lastResortKyberPreKey),
    one_time_pre_key_id_floor: d.preKeys.oneTimePreKeyIdFloor,
    kyber_pre_key_id_floor: d.preKeys.kyberPreKeyIdFloor,
  },
  mailbox: { next_envelope_id: d.mailbox.nextEnvelopeId, envelopes: d.mailbox.envelopes.map(envelopeJson) },
});

/** Code-unit order, the order the decoder requires (locale-independent). */
const byText = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

function sortedEntries<T>(record: Readonly<Record<string, T>>): [string, T][] {
  return Object.entries(record).sort(([a], [b]) => byText(a, b));
}

function accountJson(userId: string, a: ServerAccount): Json {
  return {
    user_id: userId,
    signed_device_list: {
      list: toHex(a.signedDeviceList.list),
      signature: toHex(a.signedDeviceList.signature),
    },
    devices: Object.entries(a.devices)
      .map(([key, device]) => [Number(key), device] as const)
      .sort(([a], [b]) => a - b)
      .map(([deviceId, device]) => deviceJson(deviceId, device)),
    recent_sends: a.recentSends.map((r) => ({ sender: addressJson(r.sender), message_id: r.messageId })),
  };
}

/** Splits `user.device` (the addressKey form; user ids contain no dot) back into an address. */
function splitAddressKey(key: string): DeviceAddress {
  const dot = key.lastIndexOf('.');
  return { userId: key.slice(0, dot), deviceId: Number(key.slice(dot + 1)) };
}

const compareAddress = (a: DeviceAddress, b: DeviceAddress): number =>
  byText(a.userId, b.userId) || a.deviceId - b.deviceId;

/** Encodes the server state as canonical JSON (WP-SRV-27). */
export function encodeServerState(state: ServerState): string {
  return JSON.stringify({
    version: SERVER_STATE_JSON_VERSION,
    accounts: sortedEntries(state.accounts).map(([userId, account]) => accountJson(userId, account)),
    dropped_by_rule: Object.entries(state.droppedByRule)
      .map(([key, count]) => ({ address: splitAddressKey(key), count }))
      .sort((a, b) => compareAddress(a.address, b.address))
      .map(({ address, count }) => ({ user_id: address.userId, device_id: address.deviceId, count })),
    provisioning: sortedEntries(state.provisioning).map(([address, entry]) => ({
      address,
      bytes: toHex(entry.bytes),
      stored_at: entry.storedAt,
    })),
    blobs: sortedEntries(state.blobs).map(([blobId, bytes]) => ({ blob_id: blobId, bytes: toHex(bytes) })),
  });
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

/** Thrown inside the decoder and turned into a returned `STATE_MALFORMED` at its entry point. */
class Malformed {
  constructor(readonly path: string) {}
}

type Obj = { readonly [key: string]: unknown };

function obj(value: unknown, path: string): Obj {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Malformed(path);
  return value as Obj;
}
/** An array of at most `limit` entries (every store is bounded). */
function bounded(value: unknown, path: string, limit: number): readonly unknown[] {
  if (!Array.isArray(value) || value.length > limit) throw new Malformed(path);
  return value;
}
function safeUint(value: unknown, path: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) throw new Malformed(path);
  return value;
}
function uint32(value: unknown, path: string): number {
  const n = safeUint(value, path);
  if (n > MAX_UINT32) throw new Malformed(path);
  return n;
}
function text(value: unknown, path: string, valid: (s: string) => boolean): string {
  if (typeof value !== 'string' || !valid(value)) throw new Malformed(path);
  return value;
}
function bytes(value: unknown, path: string, maxLength: number, exactLength?: number): Uint8Array {
  if (typeof value !== 'string' || !/^(?:[0-9a-f]{2})*$/.test(value)) throw new Malformed(path);
  if (value.length > 2 * maxLength) throw new Malformed(path);
  if (exactLength !== undefined && value.length !== 2 * exactLength) throw new Malformed(path);
  return fromHex(value);
}
function ecKey(value: unknown, path: string): Uint8Array {
  const b = bytes(value, path, 33, 33);
  if (!decodeEcPublicKey(b).ok) throw new Malformed(path);
  return b;
}
function kemKey(value: unknown, path: string): Uint8Array {
  const b = bytes(value, path, 1569, 1569);
  if (!decodeKemPublicKey(b).ok) throw new Malformed(path);
  return b;
}
/** Keys of a keyed collection must strictly increase: canonical order, no duplicates. */
function requireAscending<T>(items: readonly T[], compare: (a: T, b: T) => number, path: string): void {
  for (let i = 1; i < items.length; i++) {
    const previous = items[i - 1];
    const current = items[i];
    if (previous === undefined || current === undefined || compare(previous, current) >= 0) {
      throw new Malformed(`${path}[${i}]`);
    }
  }
}

const readAddress = (v: unknown, p: string): DeviceAddress => {
  const o = obj(v, p);
  const userId = text(o['user_id'], `${p}.user_id`, isValidUserId);
  const deviceId = o['device_id'];
  if (!isValidDeviceId(deviceId)) throw new Malformed(`${p}.device_id`);
  return { userId, deviceId };
};
const readSignedKey = (v: unknown, p: string, kyber: boolean): StoredSignedPreKey => {
  const o = obj(v, p);
  return {
    keyId: uint32(o['key_id'], `${p}.key_id`),
    publicKey: kyber ? kemKey(o['public_key'], `${p}.public_key`) : ecKey(o['public_key'], `${p}.public_key`),
    signature: bytes(o['signature'], `${p}.signature`, SIGNATURE_LENGTH, SIGNATURE_LENGTH),
  };
};

const ENVELOPE_TYPES: readonly EnvelopeType[] = ['prekey', 'whisper', 'retry-request'];

function readEnvelope(v: unknown, p: string): Envelope {
  const o = obj(v, p);
  const type = ENVELOPE_TYPES.find((known) => known === o['type']);
  if (type === undefined) throw new Malformed(`${p}.type`);
  return {
    envelopeId: safeUint(o['envelope_id'], `${p}.envelope_id`),
    messageId: text(o['message_id'], `${p}.message_id`, isValidMessageId),
    sender: readAddress(o['sender'], `${p}.sender`),
    type,
    bytes: bytes(o['bytes'], `${p}.bytes`, MAX_ENVELOPE_SIZE),
    serverTimestamp: safeUint(o['server_timestamp'], `${p}.server_timestamp`),
  };
}

function readMailbox(v: unknown, p: string): Mailbox {
  const o = obj(v, p);
  const nextEnvelopeId = safeUint(o['next_envelope_id'], `${p}.next_envelope_id`);
  const envelopes = bounded(o['envelopes'], `${p}.envelopes`, MAILBOX_CAPACITY).map((e, i) =>
    readEnvelope(e, `${p}.envelopes[${i}]`),
  );
  // WP-SRV-21: envelope ids increase per mailbox and stay below the next id to assign.
  requireAscending(envelopes, (a, b) => a.envelopeId - b.envelopeId, `${p}.envelopes`);
  const last = envelopes[envelopes.length - 1];
  if (nextEnvelopeId < 1 || (last !== undefined && last.envelopeId >= nextEnvelopeId)) {
    throw new Malformed(`${p}.next_envelope_id`);
  }
  return { nextEnvelopeId, envelopes };
}

function readPreKeys(v: unknown, p: string): ServerPreKeys {
  const o = obj(v, p);
  const oneTimePreKeys = bounded(o['one_time_pre_keys'], `${p}.one_time_pre_keys`, MAX_ONE_TIME_PREKEYS).map(
    (k, i): StoredOneTimePreKey => {
      const q = obj(k, `${p}.one_time_pre_keys[${i}]`);
      return {
        keyId: uint32(q['key_id'], `${p}.one_time_pre_keys[${i}].key_id`),
        publicKey: ecKey(q['public_key'], `${p}.one_time_pre_keys[${i}].public_key`),
      };
    },
  );
  const kyberPreKeys = bounded(o['kyber_pre_keys'], `${p}.kyber_pre_keys`, MAX_ONE_TIME_PREKEYS).map((k, i) =>
    readSignedKey(k, `${p}.kyber_pre_keys[${i}]`, true),
  );
  const lastResortKyberPreKey = readSignedKey(
    o['last_resort_kyber_pre_key'],
    `${p}.last_resort_kyber_pre_key`,
    true,
  );
  // WP-SRV-08: prekey ids are unique per kind (Kyber one-time and last resort together).
  if (new Set(oneTimePreKeys.map((k) => k.keyId)).size !== oneTimePreKeys.length) {
    throw new Malformed(`${p}.one_time_pre_keys`);
  }
  const kyberIds = [...kyberPreKeys, lastResortKyberPreKey].map((k) => k.keyId);
  if (new Set(kyberIds).size !== kyberIds.length) throw new Malformed(`${p}.kyber_pre_keys`);
  // WP-SRV-29: a floor is at most one above the greatest uint32 id, and above every stored id of its kind.
  const floor = (key: string, stored: readonly StoredOneTimePreKey[]): number => {
    const value = safeUint(o[key], `${p}.${key}`);
    if (value > MAX_UINT32 + 1 || stored.some((k) => k.keyId >= value)) throw new Malformed(`${p}.${key}`);
    return value;
  };
  return {
    signedPreKey: readSignedKey(o['signed_pre_key'], `${p}.signed_pre_key`, false),
    oneTimePreKeys,
    kyberPreKeys,
    lastResortKyberPreKey,
    oneTimePreKeyIdFloor: floor('one_time_pre_key_id_floor', oneTimePreKeys),
    kyberPreKeyIdFloor: floor('kyber_pre_key_id_floor', kyberPreKeys),
  };
}

function readAccount(c: CryptoProvider, v: unknown, p: string): readonly [string, ServerAccount] {
  const o = obj(v, p);
  const userId = text(o['user_id'], `${p}.user_id`, isValidUserId);
  const s = obj(o['signed_device_list'], `${p}.signed_device_list`);
  const signedDeviceList: SignedDeviceList = {
    list: bytes(s['list'], `${p}.signed_device_list.list`, Number.MAX_SAFE_INTEGER),
    signature: bytes(s['signature'], `${p}.signed_device_list.signature`, SIGNATURE_LENGTH, SIGNATURE_LENGTH),
  };
  // WP-SRV-02: a stored list verifies for its user, as when it was accepted.
  const verified = verifySignedDeviceList(c, signedDeviceList, userId);
  if (!verified.ok) throw new Malformed(`${p}.signed_device_list`);
  const deviceList = verified.value;
  const deviceEntries = bounded(o['devices'], `${p}.devices`, MAX_DEVICE_ID).map((d, i) => {
    const q = obj(d, `${p}.devices[${i}]`);
    const deviceId = q['device_id'];
    if (!isValidDeviceId(deviceId)) throw new Malformed(`${p}.devices[${i}].device_id`);
    const device: ServerDevice = {
      identityKey: ecKey(q['identity_key'], `${p}.devices[${i}].identity_key`),
      registrationId: uint32(q['registration_id'], `${p}.devices[${i}].registration_id`),
      preKeys: readPreKeys(q['pre_keys'], `${p}.devices[${i}].pre_keys`),
      mailbox: readMailbox(q['mailbox'], `${p}.devices[${i}].mailbox`),
    };
    // WP-SRV-11: a registered device is exactly the device its list entry names.
    const entry = deviceList.devices.find((e) => e.deviceId === deviceId);
    if (
      entry === undefined ||
      entry.registrationId !== device.registrationId ||
      !equalBytes(entry.identityKey, device.identityKey)
    ) {
      throw new Malformed(`${p}.devices[${i}]`);
    }
    return [deviceId, device] as const;
  });
  requireAscending(deviceEntries, ([a], [b]) => a - b, `${p}.devices`);
  const recentSends = bounded(o['recent_sends'], `${p}.recent_sends`, MESSAGE_ID_DEDUP_WINDOW).map(
    (r, i): RecentSend => {
      const q = obj(r, `${p}.recent_sends[${i}]`);
      return {
        sender: readAddress(q['sender'], `${p}.recent_sends[${i}].sender`),
        messageId: text(q['message_id'], `${p}.recent_sends[${i}].message_id`, isValidMessageId),
      };
    },
  );
  const devices = Object.fromEntries(deviceEntries.map(([deviceId, device]) => [String(deviceId), device]));
  return [userId, { signedDeviceList, deviceList, devices, recentSends }];
}

/**
 * Decodes a server snapshot (WP-SRV-27). `STATE_MALFORMED` names the first bad field's path;
 * `STATE_VERSION_UNKNOWN` an encoding version other than {@link SERVER_STATE_JSON_VERSION}.
 */
export function decodeServerState(c: CryptoProvider, json: string): Result<ServerState> {
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch {
    return reject('STATE_MALFORMED', 'state is not valid JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return reject('STATE_MALFORMED', 'state is not a JSON object');
  }
  const o = value as Obj;
  // WP-STATE-01: unknown versions are refused, never guessed at.
  if (o['version'] !== SERVER_STATE_JSON_VERSION) {
    return reject('STATE_VERSION_UNKNOWN', 'unknown state encoding version', {
      expected: SERVER_STATE_JSON_VERSION,
      got: String(o['version']),
    });
  }
  try {
    const accounts = bounded(o['accounts'], 'accounts', MAX_ACCOUNTS).map((a, i) =>
      readAccount(c, a, `accounts[${i}]`),
    );
    requireAscending(accounts, ([a], [b]) => byText(a, b), 'accounts');
    const dropped = bounded(o['dropped_by_rule'], 'dropped_by_rule', Number.MAX_SAFE_INTEGER).map((d, i) => {
      const q = obj(d, `dropped_by_rule[${i}]`);
      const address = readAddress(q, `dropped_by_rule[${i}]`);
      const count = safeUint(q['count'], `dropped_by_rule[${i}].count`);
      // Only positive counts are stored.
      if (count === 0) throw new Malformed(`dropped_by_rule[${i}].count`);
      return { address, count };
    });
    requireAscending(dropped, (a, b) => compareAddress(a.address, b.address), 'dropped_by_rule');
    const provisioning = bounded(o['provisioning'], 'provisioning', MAX_PROVISIONING_ENTRIES).map(
      (e, i): readonly [string, ProvisioningEntry] => {
        const q = obj(e, `provisioning[${i}]`);
        return [
          text(q['address'], `provisioning[${i}].address`, (s) => PROVISIONING_ADDRESS.test(s)),
          {
            bytes: bytes(q['bytes'], `provisioning[${i}].bytes`, MAX_PROVISIONING_SIZE),
            storedAt: safeUint(q['stored_at'], `provisioning[${i}].stored_at`),
          },
        ];
      },
    );
    requireAscending(provisioning, ([a], [b]) => byText(a, b), 'provisioning');
    const blobs = bounded(o['blobs'], 'blobs', MAX_BLOBS).map((b, i): readonly [string, Uint8Array] => {
      const q = obj(b, `blobs[${i}]`);
      const blobId = text(q['blob_id'], `blobs[${i}].blob_id`, (s) => BLOB_ID.test(s));
      const blob = bytes(q['bytes'], `blobs[${i}].bytes`, MAX_BLOB_SIZE);
      // WP-SRV-24: content addressing holds in the snapshot too.
      if (toHex(c.sha256(blob)) !== blobId) throw new Malformed(`blobs[${i}].blob_id`);
      return [blobId, blob];
    });
    requireAscending(blobs, ([a], [b]) => byText(a, b), 'blobs');
    return accept({
      accounts: Object.fromEntries(accounts),
      droppedByRule: Object.fromEntries(dropped.map(({ address, count }) => [addressKey(address), count])),
      provisioning: Object.fromEntries(provisioning),
      blobs: Object.fromEntries(blobs),
    });
  } catch (e) {
    if (e instanceof Malformed) {
      return reject('STATE_MALFORMED', 'state field is missing or has the wrong type', { path: e.path });
    }
    throw e;
  }
}
