/**
 * The honest server (WHITEPAPER.md, "Server", WP-SRV-01 … WP-SRV-29): accounts and their signed
 * device lists, the prekey directory, one mailbox per device, the provisioning relay for linking
 * and the attachment blob store, as plain data and one pure step function:
 *
 * ```text
 * handleRequest(env, state, request, now) → { state', response }
 * ```
 *
 * References: Sesame rev 2 §2.2 (one mailbox per device, the server stores the sender with each
 * message) and §3.3 steps 3–4 (the server accepts a send only for the current device list), with
 * Signal's concrete server rules (`MismatchedDevices` missing/extra, `StaleDevices` on a changed
 * registration id); Sesame §6.3 (proof of possession of the identity key at registration); X3DH
 * §3.3 and PQXDH §3.3 (at most one one-time prekey per bundle, deleted when handed out; a one-time
 * Kyber prekey if any, else the last-resort one).
 *
 * The server sees ciphertexts, addresses, sizes and timing; it holds public keys, signatures and
 * ciphertext only, and has no operation that decrypts anything (WP-SRV-26). The input state is
 * never mutated; every error returns the input state itself (WP-SRV-01).
 *
 * Requests carry the authenticated connection's address in `device`/`sender`; authenticating the
 * connection is the transport's job and outside this model.
 * @module
 */
import type { PreKeyBundle } from '../spec/bundle.js';
import { planted, type BugName } from '../spec/bugs.js';
import { copyBytes, equalBytes } from '../spec/bytes.js';
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
  PROVISIONING_TTL,
  SIGNATURE_LENGTH,
} from '../spec/constants.js';
import type { CryptoProvider } from '../spec/crypto/provider.js';
import { xeddsaVerify } from '../spec/crypto/xeddsa.js';
import {
  registrationProofMessage,
  verifyRegistrationProof,
  verifySignedDeviceList,
} from '../spec/device-list.js';
import type { DeviceList, SignedDeviceList } from '../spec/device-list-types.js';
import {
  accept,
  ERROR_RULES,
  InvariantError,
  reject,
  UsageError,
  type ErrorCode,
  type Result,
} from '../spec/errors.js';
import { toHex } from '../spec/hex.js';
import {
  addressKey,
  isValidDeviceId,
  isValidMessageId,
  isValidUserId,
  MAX_DEVICE_ID,
  PRIMARY_DEVICE_ID,
  type DeviceAddress,
  type DeviceId,
  type MessageId,
  type UserId,
} from '../spec/identity.js';
import { decodeEcPublicKey, decodeKemPublicKey } from '../spec/keys.js';
import type {
  Envelope,
  EnvelopeType,
  OutgoingDeviceMessage,
  PreKeyUpload,
  SendRefusal,
  ServerRequest,
  ServerResponse,
} from '../spec/server-api.js';

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

/** A record keyed by string; read it with own-property lookups only (user ids may be `constructor`). */
export type StringRecord<T> = Readonly<Record<string, T>>;

/** A device's signed prekey as uploaded. */
export interface StoredSignedPreKey {
  readonly keyId: number;
  readonly publicKey: Uint8Array;
  readonly signature: Uint8Array;
}

/** A one-time EC prekey as uploaded. */
export interface StoredOneTimePreKey {
  readonly keyId: number;
  readonly publicKey: Uint8Array;
}

/** A signed Kyber prekey (one-time or last resort) as uploaded. */
export interface StoredKyberPreKey {
  readonly keyId: number;
  readonly publicKey: Uint8Array;
  readonly signature: Uint8Array;
}

/** One device's entry in the prekey directory (WP-SRV-08, WP-SRV-13, WP-SRV-14). */
export interface ServerPreKeys {
  readonly signedPreKey: StoredSignedPreKey;
  /** Oldest first; each handed out once, then deleted (WP-SRV-13); ≤ MAX_ONE_TIME_PREKEYS. */
  readonly oneTimePreKeys: readonly StoredOneTimePreKey[];
  /** One-time Kyber prekeys, oldest first; each handed out once (WP-SRV-14); ≤ MAX_ONE_TIME_PREKEYS. */
  readonly kyberPreKeys: readonly StoredKyberPreKey[];
  /** Handed out whenever no one-time Kyber prekey is left, and kept (WP-SRV-14). */
  readonly lastResortKyberPreKey: StoredKyberPreKey;
  /**
   * One above the greatest one-time EC prekey id ever stored for this registration (0 before any);
   * it never goes down. A replenishment stores no new one-time EC key below it (WP-SRV-29).
   */
  readonly oneTimePreKeyIdFloor: number;
  /** The same for one-time Kyber prekeys (the last resort's id does not count) (WP-SRV-29). */
  readonly kyberPreKeyIdFloor: number;
}

/** A device's mailbox: envelopes it has not acknowledged, oldest first (WP-SRV-20..22). */
export interface Mailbox {
  /** The envelope id the next accepted message gets (ids increase per mailbox). */
  readonly nextEnvelopeId: number;
  /** ≤ MAILBOX_CAPACITY. */
  readonly envelopes: readonly Envelope[];
}

/** A registered device: the identity its list entry names, its prekeys and its mailbox. */
export interface ServerDevice {
  readonly identityKey: Uint8Array;
  readonly registrationId: number;
  readonly preKeys: ServerPreKeys;
  readonly mailbox: Mailbox;
}

/** A send the server accepted, remembered to make resends idempotent (WP-SRV-19). */
export interface RecentSend {
  readonly sender: DeviceAddress;
  readonly messageId: MessageId;
}

/** One account: its current signed device list and its registered devices. */
export interface ServerAccount {
  /** The current signed list exactly as the account's devices uploaded it. */
  readonly signedDeviceList: SignedDeviceList;
  /** The same list decoded (`verifySignedDeviceList` of {@link signedDeviceList}). */
  readonly deviceList: DeviceList;
  /**
   * Registered devices by `String(deviceId)`. Every one is in {@link deviceList} with the same
   * identity key and registration id (WP-SRV-11 keeps it so); a listed device that has not
   * registered has no entry and no mailbox.
   */
  readonly devices: StringRecord<ServerDevice>;
  /** Accepted sends to this account, oldest first, ≤ MESSAGE_ID_DEDUP_WINDOW (WP-SRV-19). */
  readonly recentSends: readonly RecentSend[];
}

/** A provisioning message waiting for its reader (WP-SRV-23). */
export interface ProvisioningEntry {
  readonly bytes: Uint8Array;
  /** Server clock (ms) when it was stored. */
  readonly storedAt: number;
}

/** Everything the honest server holds. Plain data; encoded by impl/server-codec.ts (WP-SRV-27). */
export interface ServerState {
  /** Accounts by user id (≤ MAX_ACCOUNTS). */
  readonly accounts: StringRecord<ServerAccount>;
  /**
   * Envelopes dropped by rule, by `addressKey`: queued for a device when it was revoked, replaced
   * by a re-registration or removed by an account reset (WP-SRV-11). Lets the simulator tell
   * "dropped by rule" from "lost".
   */
  readonly droppedByRule: StringRecord<number>;
  /** The linking relay by provisioning address (≤ MAX_PROVISIONING_ENTRIES). */
  readonly provisioning: StringRecord<ProvisioningEntry>;
  /** Attachment ciphertexts by blob id = hex(SHA-256(bytes)) (≤ MAX_BLOBS). */
  readonly blobs: StringRecord<Uint8Array>;
}

/** The server's environment: it draws no randomness and needs only the crypto provider. */
export interface ServerEnv {
  readonly crypto: CryptoProvider;
  /** Planted bugs for the simulator's self-test (spec/bugs.ts); absent in every real use. */
  readonly bugs?: readonly BugName[];
}

/** What {@link handleRequest} returns. */
export interface ServerStep {
  readonly state: ServerState;
  readonly response: ServerResponse;
}

/** A server with no accounts, mailboxes, provisioning messages or blobs. */
export function emptyServerState(): ServerState {
  return { accounts: {}, droppedByRule: {}, provisioning: {}, blobs: {} };
}

/**
 * A provisioning address: 16–64 characters of `[A-Za-z0-9_-]` (a random, URL-safe token the new
 * device shows in its QR code).
 */
export const PROVISIONING_ADDRESS = /^[A-Za-z0-9_-]{16,64}$/;

/** A blob id: 64 lowercase hex digits, the SHA-256 of the blob's bytes. */
export const BLOB_ID = /^[0-9a-f]{64}$/;

// ---------------------------------------------------------------------------------------------
// Record helpers (own properties only, never the prototype)
// ---------------------------------------------------------------------------------------------

function lookup<T>(record: StringRecord<T>, key: string): T | undefined {
  return Object.hasOwn(record, key) ? record[key] : undefined;
}

function withEntry<T>(record: StringRecord<T>, key: string, value: T): StringRecord<T> {
  return { ...record, [key]: value };
}

const deviceKey = (deviceId: DeviceId): string => String(deviceId);

// ---------------------------------------------------------------------------------------------
// Query helpers
// ---------------------------------------------------------------------------------------------

function registeredDevice(state: ServerState, address: DeviceAddress): ServerDevice | undefined {
  const account = lookup(state.accounts, address.userId);
  return account === undefined ? undefined : lookup(account.devices, deviceKey(address.deviceId));
}

function currentDeviceIds(account: ServerAccount): DeviceId[] {
  return account.deviceList.devices
    .map((entry) => entry.deviceId)
    .filter((deviceId) => lookup(account.devices, deviceKey(deviceId)) !== undefined);
}

/**
 * The account's current devices, ascending: listed in its signed list AND registered (WP-SRV-12).
 * Empty for an unknown user.
 */
export function currentDevices(state: ServerState, userId: UserId): readonly DeviceId[] {
  const account = lookup(state.accounts, userId);
  return account === undefined ? [] : currentDeviceIds(account);
}

/** Envelopes waiting in a device's mailbox (0 for a device that is not registered). */
export function mailboxDepth(state: ServerState, address: DeviceAddress): number {
  return registeredDevice(state, address)?.mailbox.envelopes.length ?? 0;
}

/**
 * Envelopes dropped by rule for this address: queued when the device was revoked, re-registered
 * or removed by an account reset (WP-SRV-11).
 */
export function droppedByRevocation(state: ServerState, address: DeviceAddress): number {
  return lookup(state.droppedByRule, addressKey(address)) ?? 0;
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

function fail(state: ServerState, code: ErrorCode, message: string): ServerStep {
  return { state, response: { kind: 'error', code, rule: ERROR_RULES[code], message } };
}

function failWith(
  state: ServerState,
  error: { readonly code: ErrorCode; readonly message: string },
): ServerStep {
  return fail(state, error.code, error.message);
}

function refuse(state: ServerState, refusal: SendRefusal): ServerStep {
  return { state, response: { kind: 'refused', refusal } };
}

const OK: ServerResponse = Object.freeze({ kind: 'ok' });

function copySignedList(signed: SignedDeviceList): SignedDeviceList {
  return { list: copyBytes(signed.list), signature: copyBytes(signed.signature) };
}

function copyEnvelope(envelope: Envelope): Envelope {
  return {
    envelopeId: envelope.envelopeId,
    messageId: envelope.messageId,
    sender: { userId: envelope.sender.userId, deviceId: envelope.sender.deviceId },
    type: envelope.type,
    bytes: copyBytes(envelope.bytes),
    serverTimestamp: envelope.serverTimestamp,
  };
}

// ---------------------------------------------------------------------------------------------
// Request validation (WP-SRV-01)
// ---------------------------------------------------------------------------------------------

function isObject<T>(value: T): value is T & object {
  return typeof value === 'object' && value !== null;
}

function isAddress(value: unknown): value is DeviceAddress {
  return (
    isObject(value) &&
    'userId' in value &&
    'deviceId' in value &&
    isValidUserId(value.userId) &&
    isValidDeviceId(value.deviceId)
  );
}

function isUint32(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 && value <= MAX_UINT32;
}

function isBytes(value: unknown): value is Uint8Array {
  return value instanceof Uint8Array;
}

function isSignedList(value: unknown): value is SignedDeviceList {
  return (
    isObject(value) &&
    'list' in value &&
    'signature' in value &&
    isBytes(value.list) &&
    isBytes(value.signature)
  );
}

const ENVELOPE_TYPES: readonly EnvelopeType[] = ['prekey', 'whisper', 'retry-request'];

/** WP-SRV-01: a device's identity key must pass the WP-KEYS-01..03 decoder. */
function validateIdentity(identityKey: unknown, registrationId: unknown): Result<Uint8Array> {
  if (!isBytes(identityKey)) return reject('SERVER_MALFORMED_REQUEST', 'identityKey must be bytes');
  const decoded = decodeEcPublicKey(identityKey);
  if (!decoded.ok) {
    return reject(
      'SERVER_MALFORMED_REQUEST',
      `identityKey is not a valid EC public key (${decoded.error.code})`,
    );
  }
  // Registration ids are 1..2^32-1, as in a device list (WP-DEV-03).
  if (!isUint32(registrationId) || registrationId < 1) {
    return reject('SERVER_MALFORMED_REQUEST', 'registrationId must be in 1..2^32-1');
  }
  return decoded;
}

// ---------------------------------------------------------------------------------------------
// Prekey uploads (WP-SRV-08)
// ---------------------------------------------------------------------------------------------

/** A prekey upload after validation: fresh copies of every key, split by kind. */
interface ValidatedUpload {
  readonly signedPreKey: StoredSignedPreKey;
  readonly oneTimePreKeys: readonly StoredOneTimePreKey[];
  readonly kyberPreKeys: readonly StoredKyberPreKey[];
  readonly lastResortKyberPreKey: StoredKyberPreKey | null;
}

function hasDuplicates(ids: readonly number[]): boolean {
  return new Set(ids).size !== ids.length;
}

/**
 * WP-SRV-08: validates an upload against the device's identity key: shapes, key ids (uint32),
 * key encodings (WP-KEYS-01..03, WP-KEYS-05), signature lengths, bounded counts, unique ids, and
 * the XEdDSA signatures of the signed prekey and every Kyber prekey by the identity key. A
 * registration needs exactly one last-resort Kyber prekey; a replenishment at most one. Cheap
 * checks come first so a hostile upload cannot buy much verification work.
 */
function validatePreKeyUpload(
  c: CryptoProvider,
  identityKey: Uint8Array,
  upload: PreKeyUpload,
  mode: 'register' | 'replenish',
): Result<ValidatedUpload> {
  if (!isObject(upload)) return reject('SERVER_MALFORMED_REQUEST', 'preKeys must be an object');
  const { signedPreKey, oneTimePreKeys, kyberPreKeys } = upload;
  if (!isObject(signedPreKey) || !Array.isArray(oneTimePreKeys) || !Array.isArray(kyberPreKeys)) {
    return reject('SERVER_MALFORMED_REQUEST', 'preKeys needs signedPreKey, oneTimePreKeys and kyberPreKeys');
  }
  // WP-SRV-08: bounded counts before any per-key work.
  if (oneTimePreKeys.length > MAX_ONE_TIME_PREKEYS || kyberPreKeys.length > MAX_ONE_TIME_PREKEYS + 1) {
    return reject('SERVER_PREKEY_LIMIT', 'too many prekeys in one upload', {
      oneTimePreKeys: oneTimePreKeys.length,
      kyberPreKeys: kyberPreKeys.length,
      limit: MAX_ONE_TIME_PREKEYS,
    });
  }
  if (!isUint32(signedPreKey.keyId) || !isBytes(signedPreKey.publicKey) || !isBytes(signedPreKey.signature)) {
    return reject(
      'SERVER_PREKEY_INVALID',
      'signed prekey needs a uint32 keyId, a public key and a signature',
    );
  }
  for (const key of oneTimePreKeys) {
    if (!isObject(key) || !isUint32(key.keyId) || !isBytes(key.publicKey)) {
      return reject('SERVER_PREKEY_INVALID', 'one-time prekey needs a uint32 keyId and a public key');
    }
  }
  for (const key of kyberPreKeys) {
    if (
      !isObject(key) ||
      !isUint32(key.keyId) ||
      !isBytes(key.publicKey) ||
      !isBytes(key.signature) ||
      typeof key.lastResort !== 'boolean'
    ) {
      return reject(
        'SERVER_PREKEY_INVALID',
        'Kyber prekey needs a uint32 keyId, a public key, a signature and lastResort',
      );
    }
  }
  const lastResortCount = kyberPreKeys.filter((key) => key.lastResort).length;
  // WP-SRV-08: a bundle always carries a Kyber prekey, so a registration brings its last resort.
  if (mode === 'register' ? lastResortCount !== 1 : lastResortCount > 1) {
    return reject('SERVER_PREKEY_INVALID', 'wrong number of last-resort Kyber prekeys', {
      got: lastResortCount,
      expected: mode === 'register' ? 1 : 0,
    });
  }
  if (kyberPreKeys.length - lastResortCount > MAX_ONE_TIME_PREKEYS) {
    return reject('SERVER_PREKEY_LIMIT', 'too many one-time Kyber prekeys in one upload', {
      got: kyberPreKeys.length - lastResortCount,
      limit: MAX_ONE_TIME_PREKEYS,
    });
  }
  // WP-SRV-08: ids name keys to the client that holds the private halves, so they are unique.
  if (
    hasDuplicates(oneTimePreKeys.map((key) => key.keyId)) ||
    hasDuplicates(kyberPreKeys.map((key) => key.keyId))
  ) {
    return reject('SERVER_PREKEY_DUPLICATE_ID', 'prekey ids repeat within the upload');
  }
  const signedDecoded = decodeEcPublicKey(signedPreKey.publicKey);
  if (!signedDecoded.ok) {
    return reject(
      'SERVER_PREKEY_INVALID',
      `signed prekey is not a valid EC key (${signedDecoded.error.code})`,
    );
  }
  const signatures = [signedPreKey.signature, ...kyberPreKeys.map((key) => key.signature)];
  if (signatures.some((signature) => signature.length !== SIGNATURE_LENGTH)) {
    return reject('SERVER_PREKEY_INVALID', 'prekey signature has the wrong length', {
      expected: SIGNATURE_LENGTH,
    });
  }
  const storedOneTime: StoredOneTimePreKey[] = [];
  for (const key of oneTimePreKeys) {
    const decoded = decodeEcPublicKey(key.publicKey);
    if (!decoded.ok) {
      return reject(
        'SERVER_PREKEY_INVALID',
        `one-time prekey is not a valid EC key (${decoded.error.code})`,
        {
          keyId: key.keyId,
        },
      );
    }
    storedOneTime.push({ keyId: key.keyId, publicKey: decoded.value });
  }
  const storedKyber: StoredKyberPreKey[] = [];
  let lastResort: StoredKyberPreKey | null = null;
  for (const key of kyberPreKeys) {
    const decoded = decodeKemPublicKey(key.publicKey);
    if (!decoded.ok) {
      return reject('SERVER_PREKEY_INVALID', `Kyber prekey is not a valid KEM key (${decoded.error.code})`, {
        keyId: key.keyId,
      });
    }
    const stored = { keyId: key.keyId, publicKey: decoded.value, signature: copyBytes(key.signature) };
    if (key.lastResort) lastResort = stored;
    else storedKyber.push(stored);
  }
  // WP-SRV-08: the identity key signs each signed prekey and Kyber prekey over its encoding (WP-PQXDH-01).
  if (!xeddsaVerify(c, identityKey, signedDecoded.value, signedPreKey.signature)) {
    return reject('SERVER_PREKEY_SIGNATURE_INVALID', 'signed prekey signature does not verify', {
      keyId: signedPreKey.keyId,
    });
  }
  for (const key of [...storedKyber, ...(lastResort === null ? [] : [lastResort])]) {
    if (!xeddsaVerify(c, identityKey, key.publicKey, key.signature)) {
      return reject('SERVER_PREKEY_SIGNATURE_INVALID', 'Kyber prekey signature does not verify', {
        keyId: key.keyId,
      });
    }
  }
  return accept({
    signedPreKey: {
      keyId: signedPreKey.keyId,
      publicKey: signedDecoded.value,
      signature: copyBytes(signedPreKey.signature),
    },
    oneTimePreKeys: storedOneTime,
    kyberPreKeys: storedKyber,
    lastResortKyberPreKey: lastResort,
  });
}

/** WP-SRV-29: the id floor once `keys` are stored: above each of their ids, and never lower. */
function raisedIdFloor(floor: number, keys: readonly StoredOneTimePreKey[]): number {
  return keys.reduce((raised, key) => Math.max(raised, key.keyId + 1), floor);
}

/** The directory entry of a fresh registration (the upload was validated in 'register' mode). */
function registeredPreKeys(upload: ValidatedUpload): Result<ServerPreKeys> {
  const lastResort = upload.lastResortKyberPreKey;
  if (lastResort === null)
    return reject('SERVER_PREKEY_INVALID', 'a registration needs a last-resort Kyber prekey');
  return accept({
    signedPreKey: upload.signedPreKey,
    oneTimePreKeys: upload.oneTimePreKeys,
    kyberPreKeys: upload.kyberPreKeys,
    lastResortKyberPreKey: lastResort,
    oneTimePreKeyIdFloor: raisedIdFloor(0, upload.oneTimePreKeys),
    kyberPreKeyIdFloor: raisedIdFloor(0, upload.kyberPreKeys),
  });
}

/** WP-SRV-09: true when the upload names a stored one-time key (EC or Kyber) by id and public key. */
function repeatsStoredKey(stored: ServerPreKeys, upload: ValidatedUpload): boolean {
  const same = (a: StoredOneTimePreKey, b: StoredOneTimePreKey): boolean =>
    a.keyId === b.keyId && equalBytes(a.publicKey, b.publicKey);
  return (
    upload.oneTimePreKeys.some((key) => stored.oneTimePreKeys.some((s) => same(s, key))) ||
    upload.kyberPreKeys.some((key) => stored.kyberPreKeys.some((s) => same(s, key)))
  );
}

/**
 * WP-SRV-09: one kind of one-time keys after an upload: appended to the stored ones, or, when an
 * uploaded id is already stored (under another key: repeats were answered before), replacing them
 * all, because the device no longer holds the stored keys of that kind. WP-SRV-29: only keys at or
 * above the kind's id floor are appended, so a copy of an upload whose keys were all handed out
 * since (none of them is stored any more, so the repeat check cannot see it) stores none again.
 */
function mergedOneTimeKeys<K extends StoredOneTimePreKey>(
  stored: readonly K[],
  floor: number,
  uploaded: readonly K[],
): { readonly keys: K[]; readonly floor: number } {
  const reused = uploaded.some((key) => stored.some((s) => s.keyId === key.keyId));
  if (reused) return { keys: [...uploaded], floor: raisedIdFloor(floor, uploaded) };
  // WP-SRV-29: a key below the floor was stored before and may have been handed out since.
  const fresh = uploaded.filter((key) => key.keyId >= floor);
  return { keys: [...stored, ...fresh], floor: raisedIdFloor(floor, fresh) };
}

/**
 * WP-SRV-09: merges a replenishment into the stored directory: one-time keys appended (only those
 * at or above their kind's id floor, WP-SRV-29; or replacing the stored ones of their kind when
 * the device reused an id), totals bounded, the signed prekey replaced when its id is greater
 * (WP-SRV-28) and, if present, the last-resort Kyber prekey replaced.
 */
function replenishedPreKeys(stored: ServerPreKeys, upload: ValidatedUpload): Result<ServerPreKeys> {
  const ec = mergedOneTimeKeys(stored.oneTimePreKeys, stored.oneTimePreKeyIdFloor, upload.oneTimePreKeys);
  const kyber = mergedOneTimeKeys(stored.kyberPreKeys, stored.kyberPreKeyIdFloor, upload.kyberPreKeys);
  const oneTimePreKeys = ec.keys;
  const kyberPreKeys = kyber.keys;
  const lastResortKyberPreKey = upload.lastResortKyberPreKey ?? stored.lastResortKyberPreKey;
  // WP-SRV-08: bounded per device.
  if (oneTimePreKeys.length > MAX_ONE_TIME_PREKEYS || kyberPreKeys.length > MAX_ONE_TIME_PREKEYS) {
    return reject('SERVER_PREKEY_LIMIT', 'the device would hold too many one-time prekeys', {
      oneTimePreKeys: oneTimePreKeys.length,
      kyberPreKeys: kyberPreKeys.length,
      limit: MAX_ONE_TIME_PREKEYS,
    });
  }
  // WP-SRV-08: an id names one key: no one-time Kyber key shares the last resort's id, whether it is
  // stored or uploaded (one the id floor keeps out is still a malformed upload, WP-SRV-29).
  if (
    hasDuplicates([...kyberPreKeys.map((key) => key.keyId), lastResortKyberPreKey.keyId]) ||
    upload.kyberPreKeys.some((key) => key.keyId === lastResortKyberPreKey.keyId)
  ) {
    return reject('SERVER_PREKEY_DUPLICATE_ID', "a one-time Kyber prekey id is the last resort's");
  }
  // WP-SRV-28: only a newer signed prekey replaces the stored one, so a delayed or duplicated older
  // upload cannot bring back a key its device has retired and deleted (WP-LIFE-08).
  const signedPreKey =
    upload.signedPreKey.keyId > stored.signedPreKey.keyId ? upload.signedPreKey : stored.signedPreKey;
  return accept({
    signedPreKey,
    oneTimePreKeys,
    kyberPreKeys,
    lastResortKyberPreKey,
    oneTimePreKeyIdFloor: ec.floor,
    kyberPreKeyIdFloor: kyber.floor,
  });
}

const EMPTY_MAILBOX: Mailbox = Object.freeze({ nextEnvelopeId: 1, envelopes: Object.freeze([]) });

/** Adds the envelopes of removed registrations to the dropped-by-rule counts (WP-SRV-11). */
function countDropped(
  dropped: StringRecord<number>,
  userId: UserId,
  removed: readonly (readonly [DeviceId, ServerDevice])[],
): StringRecord<number> {
  let out = dropped;
  for (const [deviceId, device] of removed) {
    const count = device.mailbox.envelopes.length;
    if (count === 0) continue;
    const key = addressKey({ userId, deviceId });
    out = withEntry(out, key, (lookup(out, key) ?? 0) + count);
  }
  return out;
}

function registeredEntries(account: ServerAccount): (readonly [DeviceId, ServerDevice])[] {
  return Object.entries(account.devices).map(([key, device]) => [Number(key), device] as const);
}

// ---------------------------------------------------------------------------------------------
// Accounts and devices
// ---------------------------------------------------------------------------------------------

type Request<K extends ServerRequest['kind']> = Extract<ServerRequest, { readonly kind: K }>;

/**
 * register-account (WP-SRV-02, -04, -05, -06, -08): the primary device creates an account with a
 * signed list naming exactly itself, proves possession of its identity key and uploads prekeys.
 * An existing user id is refused unless this is an account reset (WP-SRV-06).
 */
function registerAccount(
  c: CryptoProvider,
  state: ServerState,
  request: Request<'register-account'>,
): ServerStep {
  const { device, registrationId, proof, deviceList, preKeys } = request;
  if (!isAddress(device)) return fail(state, 'SERVER_MALFORMED_REQUEST', 'device is not a valid address');
  // WP-SRV-05: the primary device (id 1) registers the account; it holds the account key.
  if (device.deviceId !== PRIMARY_DEVICE_ID) {
    return fail(state, 'SERVER_MALFORMED_REQUEST', 'an account is registered by its primary device (id 1)');
  }
  const identity = validateIdentity(request.identityKey, registrationId);
  if (!identity.ok) return failWith(state, identity.error);
  const identityKey = identity.value;
  if (!isBytes(proof)) return fail(state, 'SERVER_MALFORMED_REQUEST', 'proof must be bytes');
  if (!isSignedList(deviceList))
    return fail(state, 'SERVER_MALFORMED_REQUEST', 'deviceList must be a signed list');
  // WP-SRV-02: the list must verify under its own account key, for this user.
  const verified = verifySignedDeviceList(c, deviceList, device.userId);
  if (!verified.ok) {
    return fail(state, 'SERVER_DEVICE_LIST_INVALID', `device list does not verify (${verified.error.code})`);
  }
  const list = verified.value;
  // WP-SRV-05: a new account lists exactly the registering device, with its identity.
  const only = list.devices[0];
  if (
    list.devices.length !== 1 ||
    only === undefined ||
    only.deviceId !== device.deviceId ||
    only.registrationId !== registrationId ||
    !equalBytes(only.identityKey, identityKey)
  ) {
    return fail(state, 'SERVER_DEVICE_LIST_MISMATCH', 'the list must name exactly the registering device');
  }
  // WP-SRV-04: proof of possession of the identity key (Sesame §6.3).
  const proofMessage = registrationProofMessage(device, identityKey, registrationId, list.accountKey);
  if (!verifyRegistrationProof(c, identityKey, proofMessage, proof)) {
    return fail(state, 'SERVER_PROOF_INVALID', 'registration proof does not verify');
  }
  const existing = lookup(state.accounts, device.userId);
  if (existing !== undefined) {
    const registered = lookup(existing.devices, deviceKey(device.deviceId));
    // WP-SRV-05: a retry of the registration that succeeded is answered ok and changes nothing
    // (re-applying its prekeys would hand out one-time keys a second time). Its list is the current
    // one, or an older one of the same account key when the primary has changed the list since (a
    // device restored from a backup taken while it was registering retries with its first list).
    const sameOrOlderList =
      (equalBytes(existing.signedDeviceList.list, deviceList.list) &&
        equalBytes(existing.signedDeviceList.signature, deviceList.signature)) ||
      (equalBytes(existing.deviceList.accountKey, list.accountKey) &&
        list.version < existing.deviceList.version);
    if (
      sameOrOlderList &&
      registered !== undefined &&
      registered.registrationId === registrationId &&
      equalBytes(registered.identityKey, identityKey)
    ) {
      return { state, response: OK };
    }
    // WP-SRV-05: the user id is in use; only a new account key can reset it (WP-SRV-06).
    if (equalBytes(existing.deviceList.accountKey, list.accountKey)) {
      return fail(state, 'SERVER_USER_EXISTS', 'the user id is in use');
    }
    // WP-SRV-03 / WP-SRV-06: a reset must move the list version forward.
    if (list.version <= existing.deviceList.version) {
      return fail(state, 'SERVER_DEVICE_LIST_STALE', 'an account reset needs a greater list version');
    }
  } else if (Object.keys(state.accounts).length >= MAX_ACCOUNTS) {
    // WP-SRV-25: the account table is bounded.
    return fail(state, 'SERVER_STORE_FULL', 'the server holds the maximum number of accounts');
  }
  const validated = validatePreKeyUpload(c, identityKey, preKeys, 'register');
  if (!validated.ok) return failWith(state, validated.error);
  const stored = registeredPreKeys(validated.value);
  if (!stored.ok) return failWith(state, stored.error);
  const account: ServerAccount = {
    signedDeviceList: copySignedList(deviceList),
    deviceList: list,
    devices: {
      [deviceKey(device.deviceId)]: {
        identityKey,
        registrationId,
        preKeys: stored.value,
        mailbox: EMPTY_MAILBOX,
      },
    },
    // WP-SRV-19: sends accepted before a reset stay duplicates of themselves.
    recentSends: existing?.recentSends ?? [],
  };
  // WP-SRV-06: an account reset replaces the account: every old device's registration, prekeys
  // and mailbox go; their queued envelopes count as dropped by rule (WP-SRV-11).
  const droppedByRule =
    existing === undefined
      ? state.droppedByRule
      : countDropped(state.droppedByRule, device.userId, registeredEntries(existing));
  return {
    state: { ...state, accounts: withEntry(state.accounts, device.userId, account), droppedByRule },
    response: OK,
  };
}

/**
 * register-device (WP-SRV-04, -07, -08): a linked device, or a reinstall into a slot, registers
 * the identity the current signed list names for its id.
 */
function registerDevice(
  c: CryptoProvider,
  state: ServerState,
  request: Request<'register-device'>,
): ServerStep {
  const { device, registrationId, proof, preKeys } = request;
  if (!isAddress(device)) return fail(state, 'SERVER_MALFORMED_REQUEST', 'device is not a valid address');
  const identity = validateIdentity(request.identityKey, registrationId);
  if (!identity.ok) return failWith(state, identity.error);
  const identityKey = identity.value;
  if (!isBytes(proof)) return fail(state, 'SERVER_MALFORMED_REQUEST', 'proof must be bytes');
  const account = lookup(state.accounts, device.userId);
  // WP-SRV-12: the account must exist.
  if (account === undefined) return fail(state, 'SERVER_UNKNOWN_USER', 'no such account');
  // WP-SRV-07: the account key has already vouched for this device: the current list names it
  // with exactly this identity key and registration id.
  const entry = account.deviceList.devices.find((d) => d.deviceId === device.deviceId);
  if (
    entry === undefined ||
    entry.registrationId !== registrationId ||
    !equalBytes(entry.identityKey, identityKey)
  ) {
    return fail(
      state,
      'SERVER_DEVICE_NOT_LISTED',
      'the current device list does not name this device with this identity',
    );
  }
  // WP-SRV-04: proof of possession of the identity key (Sesame §6.3).
  const proofMessage = registrationProofMessage(
    device,
    identityKey,
    registrationId,
    account.deviceList.accountKey,
  );
  if (!verifyRegistrationProof(c, identityKey, proofMessage, proof)) {
    return fail(state, 'SERVER_PROOF_INVALID', 'registration proof does not verify');
  }
  const existing = lookup(account.devices, deviceKey(device.deviceId));
  if (existing !== undefined) {
    // WP-SRV-11 keeps every registered device equal to its list entry: a reinstall into a slot
    // first gets a new list, which revokes the old install, and then registers here afresh.
    if (existing.registrationId !== registrationId || !equalBytes(existing.identityKey, identityKey)) {
      throw new InvariantError('a registered device differs from its device-list entry');
    }
    // WP-SRV-07: a retry of a registration that succeeded changes nothing (its one-time keys may
    // have been handed out since; re-adding them would hand them out twice).
    return { state, response: OK };
  }
  const validated = validatePreKeyUpload(c, identityKey, preKeys, 'register');
  if (!validated.ok) return failWith(state, validated.error);
  const stored = registeredPreKeys(validated.value);
  if (!stored.ok) return failWith(state, stored.error);
  const registered: ServerDevice = {
    identityKey,
    registrationId,
    preKeys: stored.value,
    mailbox: EMPTY_MAILBOX,
  };
  const updated: ServerAccount = {
    ...account,
    devices: withEntry(account.devices, deviceKey(device.deviceId), registered),
  };
  return {
    state: { ...state, accounts: withEntry(state.accounts, device.userId, updated) },
    response: OK,
  };
}

/** The registered device a request acts as, or the error for an unknown user or device (WP-SRV-12). */
function actingDevice(
  state: ServerState,
  device: unknown,
): Result<{
  readonly address: DeviceAddress;
  readonly account: ServerAccount;
  readonly device: ServerDevice;
}> {
  if (!isAddress(device)) return reject('SERVER_MALFORMED_REQUEST', 'device is not a valid address');
  const account = lookup(state.accounts, device.userId);
  if (account === undefined) return reject('SERVER_UNKNOWN_USER', 'no such account');
  const registered = lookup(account.devices, deviceKey(device.deviceId));
  // WP-SRV-12: only a current (listed and registered) device acts for the account.
  if (registered === undefined) return reject('SERVER_UNKNOWN_DEVICE', 'the device is not registered');
  return accept({ address: device, account, device: registered });
}

function withDevice(
  state: ServerState,
  address: DeviceAddress,
  account: ServerAccount,
  device: ServerDevice,
): ServerState {
  const updated: ServerAccount = {
    ...account,
    devices: withEntry(account.devices, deviceKey(address.deviceId), device),
  };
  return { ...state, accounts: withEntry(state.accounts, address.userId, updated) };
}

/** upload-prekeys (WP-SRV-08, WP-SRV-09, WP-SRV-29). */
function uploadPreKeys(
  c: CryptoProvider,
  state: ServerState,
  request: Request<'upload-prekeys'>,
): ServerStep {
  const acting = actingDevice(state, request.device);
  if (!acting.ok) return failWith(state, acting.error);
  const { address, account, device } = acting.value;
  const validated = validatePreKeyUpload(c, device.identityKey, request.preKeys, 'replenish');
  if (!validated.ok) return failWith(state, validated.error);
  // WP-SRV-09: an upload that repeats a stored one-time key was applied before (a resend whose answer
  // was lost, or a network duplicate): applying it again could hand out keys already used.
  if (repeatsStoredKey(device.preKeys, validated.value)) return { state, response: OK };
  const merged = replenishedPreKeys(device.preKeys, validated.value);
  if (!merged.ok) return failWith(state, merged.error);
  return { state: withDevice(state, address, account, { ...device, preKeys: merged.value }), response: OK };
}

/**
 * update-device-list (WP-SRV-02, -03, -10, -11): a registered device uploads a list the CURRENT
 * account key signed, with a greater version; devices it drops, or whose entry it changes, are
 * revoked.
 */
function updateDeviceList(
  c: CryptoProvider,
  state: ServerState,
  request: Request<'update-device-list'>,
): ServerStep {
  const acting = actingDevice(state, request.device);
  if (!acting.ok) return failWith(state, acting.error);
  const { address, account } = acting.value;
  const signed = request.deviceList;
  if (!isSignedList(signed))
    return fail(state, 'SERVER_MALFORMED_REQUEST', 'deviceList must be a signed list');
  // WP-SRV-02: the list must verify, for this user.
  const verified = verifySignedDeviceList(c, signed, address.userId);
  if (!verified.ok) {
    return fail(state, 'SERVER_DEVICE_LIST_INVALID', `device list does not verify (${verified.error.code})`);
  }
  const list = verified.value;
  // WP-SRV-10: the account key changes only by an account reset (WP-SRV-06), never here.
  if (!equalBytes(list.accountKey, account.deviceList.accountKey)) {
    return fail(
      state,
      'SERVER_DEVICE_LIST_ACCOUNT_KEY_CHANGED',
      'the list is signed by a different account key',
    );
  }
  // WP-SRV-10: a retry of the update that succeeded is answered ok.
  if (
    equalBytes(signed.list, account.signedDeviceList.list) &&
    equalBytes(signed.signature, account.signedDeviceList.signature)
  ) {
    return { state, response: OK };
  }
  // WP-SRV-03: versions strictly increase, so an old list cannot be replayed.
  if (list.version <= account.deviceList.version) {
    return fail(state, 'SERVER_DEVICE_LIST_STALE', 'the list version is not greater than the current one');
  }
  // WP-SRV-11: a registered device the new list drops, or names with another identity key or
  // registration id, is revoked: registration, prekeys and mailbox deleted, queued envelopes
  // counted as dropped by rule. Listed devices that are not registered yet must register.
  const kept: Record<string, ServerDevice> = {};
  const revoked: (readonly [DeviceId, ServerDevice])[] = [];
  for (const [deviceId, device] of registeredEntries(account)) {
    const entry = list.devices.find((d) => d.deviceId === deviceId);
    if (
      entry !== undefined &&
      entry.registrationId === device.registrationId &&
      equalBytes(entry.identityKey, device.identityKey)
    ) {
      kept[deviceKey(deviceId)] = device;
    } else {
      revoked.push([deviceId, device]);
    }
  }
  const updated: ServerAccount = {
    ...account,
    signedDeviceList: copySignedList(signed),
    deviceList: list,
    devices: kept,
  };
  return {
    state: {
      ...state,
      accounts: withEntry(state.accounts, address.userId, updated),
      droppedByRule: countDropped(state.droppedByRule, address.userId, revoked),
    },
    response: OK,
  };
}

/** get-device-list (WP-SRV-12): the account's current signed list. */
function getDeviceList(state: ServerState, request: Request<'get-device-list'>): ServerStep {
  if (!isValidUserId(request.userId)) return fail(state, 'SERVER_MALFORMED_REQUEST', 'userId is not valid');
  const account = lookup(state.accounts, request.userId);
  if (account === undefined) return fail(state, 'SERVER_UNKNOWN_USER', 'no such account');
  return { state, response: { kind: 'device-list', deviceList: copySignedList(account.signedDeviceList) } };
}

// ---------------------------------------------------------------------------------------------
// Bundles (WP-SRV-13, WP-SRV-14)
// ---------------------------------------------------------------------------------------------

/**
 * get-bundles: one bundle per requested current device, in request order, consuming one-time
 * keys; a listed device that has not registered is left out (WP-SRV-12).
 */
function getBundles(
  state: ServerState,
  request: Request<'get-bundles'>,
  bugs?: readonly BugName[],
): ServerStep {
  const { userId, deviceIds } = request;
  if (!isValidUserId(userId)) return fail(state, 'SERVER_MALFORMED_REQUEST', 'userId is not valid');
  if (!Array.isArray(deviceIds) || deviceIds.length > MAX_DEVICE_ID || !deviceIds.every(isValidDeviceId)) {
    return fail(state, 'SERVER_MALFORMED_REQUEST', 'deviceIds must be at most 127 valid device ids');
  }
  // WP-SRV-01: a repeated id would take two one-time keys of one device in one request.
  if (hasDuplicates(deviceIds)) return fail(state, 'SERVER_MALFORMED_REQUEST', 'deviceIds repeat');
  const account = lookup(state.accounts, userId);
  if (account === undefined) return fail(state, 'SERVER_UNKNOWN_USER', 'no such account');
  // WP-SRV-12: a requested device the current list does not name fails the whole request, and
  // nothing is consumed.
  const listed = new Set(account.deviceList.devices.map((entry) => entry.deviceId));
  const unlisted = deviceIds.find((deviceId) => !listed.has(deviceId));
  if (unlisted !== undefined)
    return fail(state, 'SERVER_UNKNOWN_DEVICE', `device ${unlisted} is not registered`);
  let devices = account.devices;
  const bundles: PreKeyBundle[] = [];
  for (const deviceId of deviceIds) {
    const device = lookup(devices, deviceKey(deviceId));
    // WP-SRV-12: a listed device that has not registered yet (one being linked) is left out, and
    // nothing is consumed for it. A client holding the new list can then still send to the
    // account's registered devices: it skips the absent device, and the send check does not
    // expect unregistered devices (WP-SRV-16); once the device registers, the next send is
    // refused as missing it and the client fetches its bundle.
    if (device === undefined) continue;
    const { signedPreKey, oneTimePreKeys, kyberPreKeys, lastResortKyberPreKey } = device.preKeys;
    // WP-SRV-13: at most one one-time EC prekey, handed out once and deleted (X3DH §3.3); none
    // left means a bundle without one.
    const [oneTime, ...restOneTime] = oneTimePreKeys;
    // WP-SRV-14: a one-time Kyber prekey if any (deleted), else the last resort (kept).
    const [kyberOneTime, ...restKyber] = kyberPreKeys;
    const kyber = kyberOneTime ?? lastResortKyberPreKey;
    bundles.push({
      registrationId: device.registrationId,
      deviceId,
      identityKey: copyBytes(device.identityKey),
      signedPreKeyId: signedPreKey.keyId,
      signedPreKey: copyBytes(signedPreKey.publicKey),
      signedPreKeySignature: copyBytes(signedPreKey.signature),
      preKeyId: oneTime?.keyId ?? null,
      preKey: oneTime === undefined ? null : copyBytes(oneTime.publicKey),
      kyberPreKeyId: kyber.keyId,
      kyberPreKey: copyBytes(kyber.publicKey),
      kyberPreKeySignature: copyBytes(kyber.signature),
    });
    // Planted bug server-rehands-prekey: the one-time keys stay stored (against WP-SRV-13/14).
    if ((oneTime !== undefined || kyberOneTime !== undefined) && !planted(bugs, 'server-rehands-prekey')) {
      const preKeys: ServerPreKeys = {
        ...device.preKeys,
        oneTimePreKeys: oneTime === undefined ? oneTimePreKeys : restOneTime,
        kyberPreKeys: kyberOneTime === undefined ? kyberPreKeys : restKyber,
      };
      devices = withEntry(devices, deviceKey(deviceId), { ...device, preKeys });
    }
  }
  const nextState =
    devices === account.devices
      ? state
      : { ...state, accounts: withEntry(state.accounts, userId, { ...account, devices }) };
  return { state: nextState, response: { kind: 'bundles', bundles } };
}

// ---------------------------------------------------------------------------------------------
// Sends, mailboxes (WP-SRV-15 … WP-SRV-22)
// ---------------------------------------------------------------------------------------------

function validateMessages(messages: unknown): Result<readonly OutgoingDeviceMessage[]> {
  if (!Array.isArray(messages) || messages.length > MAX_DEVICE_ID) {
    return reject('SERVER_MALFORMED_REQUEST', 'messages must be at most 127 device messages');
  }
  const out: OutgoingDeviceMessage[] = [];
  for (const message of messages) {
    if (
      !isObject(message) ||
      !('deviceId' in message && 'registrationId' in message && 'type' in message && 'bytes' in message)
    ) {
      return reject(
        'SERVER_MALFORMED_REQUEST',
        'a device message needs deviceId, registrationId, type and bytes',
      );
    }
    const { deviceId, registrationId, type, bytes } = message;
    const envelopeType = ENVELOPE_TYPES.find((known) => known === type);
    if (
      !isValidDeviceId(deviceId) ||
      !isUint32(registrationId) ||
      envelopeType === undefined ||
      !isBytes(bytes)
    ) {
      return reject('SERVER_MALFORMED_REQUEST', 'a device message has a field of the wrong type or range');
    }
    out.push({ deviceId, registrationId, type: envelopeType, bytes });
  }
  // WP-SRV-21: each device's copy is bounded.
  for (const message of out) {
    if (message.bytes.length > MAX_ENVELOPE_SIZE) {
      return reject('SERVER_ENVELOPE_TOO_LARGE', 'a device message is larger than the limit', {
        deviceId: message.deviceId,
        size: message.bytes.length,
        limit: MAX_ENVELOPE_SIZE,
      });
    }
  }
  // WP-SRV-16: one copy per device; a repeated device is a bad request, not a device-set mismatch.
  if (hasDuplicates(out.map((message) => message.deviceId))) {
    return reject('SERVER_SEND_DUPLICATE_DEVICE', 'the send names a device twice');
  }
  return accept(out);
}

const ascending = (a: number, b: number): number => a - b;

/** send: the device-set checks, idempotency, capacity and storage of one message to one account. */
function send(
  state: ServerState,
  request: Request<'send'>,
  now: number,
  bugs?: readonly BugName[],
): ServerStep {
  const { sender, messageId, recipient, onlyDevice } = request;
  if (!isValidMessageId(messageId)) return fail(state, 'SERVER_MALFORMED_REQUEST', 'messageId is not valid');
  if (!isValidUserId(recipient))
    return fail(state, 'SERVER_MALFORMED_REQUEST', 'recipient is not a valid user id');
  if (onlyDevice !== undefined && !isValidDeviceId(onlyDevice)) {
    return fail(state, 'SERVER_MALFORMED_REQUEST', 'onlyDevice is not a valid device id');
  }
  const validMessages = validateMessages(request.messages);
  if (!validMessages.ok) return failWith(state, validMessages.error);
  const messages = validMessages.value;
  // WP-SRV-18: a single-device send carries exactly that device's copy.
  if (onlyDevice !== undefined && (messages.length !== 1 || messages[0]?.deviceId !== onlyDevice)) {
    return fail(state, 'SERVER_MALFORMED_REQUEST', 'a send with onlyDevice carries exactly that device');
  }
  // WP-SRV-15: the sender is a current device (the authenticated connection).
  const acting = actingDevice(state, sender);
  if (!acting.ok) return failWith(state, acting.error);
  const account = lookup(state.accounts, recipient);
  // WP-SRV-19: a send already accepted from this sender with this message id is acknowledged again
  // and stores nothing, whatever changed since.
  if (
    account?.recentSends.some(
      (recent) =>
        recent.messageId === messageId &&
        recent.sender.userId === sender.userId &&
        recent.sender.deviceId === sender.deviceId,
    )
  ) {
    return { state, response: { kind: 'accepted', messageId, duplicate: true } };
  }
  // WP-SRV-15: Sesame §3.3 step 4, "user does not exist".
  if (account === undefined) return refuse(state, { kind: 'unknown-user' });
  // WP-SRV-16: expected = the recipient's current devices, minus the sending device for a send to
  // the sender's own account (Signal's rule: a device does not message itself).
  const ownAccount = recipient === sender.userId;
  const expected = currentDeviceIds(account).filter(
    (deviceId) => !(ownAccount && deviceId === sender.deviceId),
  );
  const sentIds = messages.map((message) => message.deviceId);
  // WP-SRV-18: a single-device send is checked against that device alone.
  const required =
    onlyDevice === undefined ? expected : expected.filter((deviceId) => deviceId === onlyDevice);
  const missing = required.filter((deviceId) => !sentIds.includes(deviceId)).sort(ascending);
  const extra = sentIds.filter((deviceId) => !expected.includes(deviceId)).sort(ascending);
  if (missing.length > 0 || extra.length > 0) {
    return refuse(state, {
      kind: 'mismatched-devices',
      missing,
      extra,
      deviceList: copySignedList(account.signedDeviceList),
    });
  }
  // WP-SRV-17: a registration id other than the current one means the device was reinstalled.
  const stale = messages
    .filter(
      (message) =>
        lookup(account.devices, deviceKey(message.deviceId))?.registrationId !== message.registrationId,
    )
    .map((message) => message.deviceId)
    .sort(ascending);
  if (stale.length > 0) {
    return refuse(state, {
      kind: 'stale-devices',
      stale,
      deviceList: copySignedList(account.signedDeviceList),
    });
  }
  // WP-SRV-20: all or nothing: if any target mailbox is full, nothing is stored for anyone.
  const full = messages
    .filter(
      (message) =>
        (lookup(account.devices, deviceKey(message.deviceId))?.mailbox.envelopes.length ?? 0) >=
        MAILBOX_CAPACITY,
    )
    .map((message) => message.deviceId)
    .sort(ascending);
  if (full.length > 0) return refuse(state, { kind: 'mailbox-full', deviceIds: full });
  // WP-SRV-21: each device's copy goes into its mailbox exactly once, with a server-assigned id,
  // the authenticated sender and the server's clock; the bytes are copied, never interpreted.
  let devices = account.devices;
  for (const message of messages) {
    const device = lookup(devices, deviceKey(message.deviceId));
    if (device === undefined) return fail(state, 'SERVER_UNKNOWN_DEVICE', 'target device vanished');
    // Planted bug (simulator self-test only): `server-drops-message` accepts a quarter of the sends
    // (message id below '4') but never stores their first copy.
    if (planted(bugs, 'server-drops-message') && messageId < '4' && message === messages[0]) continue;
    const envelope: Envelope = {
      envelopeId: device.mailbox.nextEnvelopeId,
      messageId,
      sender: { userId: sender.userId, deviceId: sender.deviceId },
      type: message.type,
      bytes: copyBytes(message.bytes),
      serverTimestamp: now,
    };
    const mailbox: Mailbox = {
      nextEnvelopeId: device.mailbox.nextEnvelopeId + 1,
      envelopes: [...device.mailbox.envelopes, envelope],
    };
    devices = withEntry(devices, deviceKey(message.deviceId), { ...device, mailbox });
  }
  // WP-SRV-19: remember the send; the oldest entry is forgotten beyond the window.
  const recentSends = [
    ...account.recentSends,
    { sender: { userId: sender.userId, deviceId: sender.deviceId }, messageId },
  ];
  const trimmed =
    recentSends.length > MESSAGE_ID_DEDUP_WINDOW ? recentSends.slice(-MESSAGE_ID_DEDUP_WINDOW) : recentSends;
  const updated: ServerAccount = { ...account, devices, recentSends: trimmed };
  return {
    state: { ...state, accounts: withEntry(state.accounts, recipient, updated) },
    response: { kind: 'accepted', messageId, duplicate: false },
  };
}

/** fetch (WP-SRV-22): every unacknowledged envelope, oldest first; nothing is removed. */
function fetchMailbox(state: ServerState, request: Request<'fetch'>): ServerStep {
  const acting = actingDevice(state, request.device);
  if (!acting.ok) return failWith(state, acting.error);
  return {
    state,
    response: { kind: 'envelopes', envelopes: acting.value.device.mailbox.envelopes.map(copyEnvelope) },
  };
}

/** ack (WP-SRV-22): removes the named envelopes; unknown ids are ignored, so acks are idempotent. */
function ackEnvelopes(state: ServerState, request: Request<'ack'>): ServerStep {
  const acting = actingDevice(state, request.device);
  if (!acting.ok) return failWith(state, acting.error);
  const { envelopeIds } = request;
  if (
    !Array.isArray(envelopeIds) ||
    envelopeIds.length > MAILBOX_CAPACITY ||
    !envelopeIds.every(
      (envelopeId) => typeof envelopeId === 'number' && Number.isSafeInteger(envelopeId) && envelopeId >= 0,
    )
  ) {
    return fail(
      state,
      'SERVER_MALFORMED_REQUEST',
      'envelopeIds must be at most MAILBOX_CAPACITY envelope ids',
    );
  }
  const { address, account, device } = acting.value;
  const remaining = device.mailbox.envelopes.filter((envelope) => !envelopeIds.includes(envelope.envelopeId));
  if (remaining.length === device.mailbox.envelopes.length) return { state, response: OK };
  const mailbox: Mailbox = { ...device.mailbox, envelopes: remaining };
  return { state: withDevice(state, address, account, { ...device, mailbox }), response: OK };
}

// ---------------------------------------------------------------------------------------------
// Provisioning relay (WP-SRV-23) and blobs (WP-SRV-24)
// ---------------------------------------------------------------------------------------------

/** How many entries a relay record holds and when its oldest was stored (∞ when empty). */
interface RelaySummary {
  readonly count: number;
  readonly oldest: number;
}

/**
 * Summaries of relay records, by the (immutable) record object. They spare the scan of every entry
 * on each use of a relay that holds hundreds of links in progress: a record's summary is computed
 * once, or carried over when a put or a purge builds the next record. A cache only: the relay's
 * behaviour is what the code below says with or without it.
 */
const relaySummaries = new WeakMap<StringRecord<ProvisioningEntry>, RelaySummary>();

function relaySummary(entries: StringRecord<ProvisioningEntry>): RelaySummary {
  const known = relaySummaries.get(entries);
  if (known !== undefined) return known;
  let count = 0;
  let oldest = Number.POSITIVE_INFINITY;
  for (const entry of Object.values(entries)) {
    count += 1;
    oldest = Math.min(oldest, entry.storedAt);
  }
  const summary = { count, oldest };
  relaySummaries.set(entries, summary);
  return summary;
}

/** WP-SRV-23: entries older than PROVISIONING_TTL are purged whenever the relay is used. */
function purgeProvisioning(
  entries: StringRecord<ProvisioningEntry>,
  now: number,
): StringRecord<ProvisioningEntry> {
  // Nothing to purge unless the oldest entry has expired.
  if (now - relaySummary(entries).oldest < PROVISIONING_TTL) return entries;
  const live: Record<string, ProvisioningEntry> = {};
  let count = 0;
  let oldest = Number.POSITIVE_INFINITY;
  for (const [address, entry] of Object.entries(entries)) {
    if (now - entry.storedAt >= PROVISIONING_TTL) continue;
    live[address] = entry;
    count += 1;
    oldest = Math.min(oldest, entry.storedAt);
  }
  relaySummaries.set(live, { count, oldest });
  return live;
}

function isProvisioningAddress(address: unknown): address is string {
  return typeof address === 'string' && PROVISIONING_ADDRESS.test(address);
}

/** provision-put: one message per address, bounded in size and number; an identical retry is ok. */
function provisionPut(state: ServerState, request: Request<'provision-put'>, now: number): ServerStep {
  const { address, bytes } = request;
  if (!isProvisioningAddress(address))
    return fail(state, 'SERVER_MALFORMED_REQUEST', 'not a provisioning address');
  if (!isBytes(bytes)) return fail(state, 'SERVER_MALFORMED_REQUEST', 'bytes must be bytes');
  if (bytes.length > MAX_PROVISIONING_SIZE) {
    return fail(state, 'SERVER_PROVISION_TOO_LARGE', 'provisioning message is larger than the limit');
  }
  const entries = purgeProvisioning(state.provisioning, now);
  const existing = lookup(entries, address);
  if (existing !== undefined) {
    // WP-SRV-23: one message per address; a second, different one cannot replace the first.
    if (!equalBytes(existing.bytes, bytes)) {
      return fail(state, 'SERVER_PROVISION_OCCUPIED', 'the address already holds a provisioning message');
    }
    return {
      state: entries === state.provisioning ? state : { ...state, provisioning: entries },
      response: OK,
    };
  }
  // WP-SRV-25: the relay is bounded.
  const summary = relaySummary(entries);
  if (summary.count >= MAX_PROVISIONING_ENTRIES) {
    return fail(state, 'SERVER_STORE_FULL', 'the provisioning relay is full');
  }
  const provisioning = withEntry(entries, address, { bytes: copyBytes(bytes), storedAt: now });
  relaySummaries.set(provisioning, {
    count: summary.count + 1,
    oldest: Math.min(summary.oldest, now),
  });
  return { state: { ...state, provisioning }, response: OK };
}

/**
 * provision-get: hands out a copy of the message and leaves it in place (WP-SRV-23), so a new
 * device whose answer was lost reads it again on its next poll; it goes only when PROVISIONING_TTL
 * expires. `null` when there is none.
 */
function provisionGet(state: ServerState, request: Request<'provision-get'>, now: number): ServerStep {
  const { address } = request;
  if (!isProvisioningAddress(address))
    return fail(state, 'SERVER_MALFORMED_REQUEST', 'not a provisioning address');
  const entries = purgeProvisioning(state.provisioning, now);
  const existing = lookup(entries, address);
  return {
    state: entries === state.provisioning ? state : { ...state, provisioning: entries },
    response: { kind: 'provision', bytes: existing === undefined ? null : copyBytes(existing.bytes) },
  };
}

/** blob-put: content addressed (id = hex(SHA-256(bytes))), bounded, idempotent. */
function blobPut(c: CryptoProvider, state: ServerState, request: Request<'blob-put'>): ServerStep {
  const { blobId, bytes } = request;
  if (typeof blobId !== 'string' || !BLOB_ID.test(blobId)) {
    return fail(state, 'SERVER_MALFORMED_REQUEST', 'blobId must be 64 lowercase hex digits');
  }
  if (!isBytes(bytes)) return fail(state, 'SERVER_MALFORMED_REQUEST', 'bytes must be bytes');
  if (bytes.length > MAX_BLOB_SIZE)
    return fail(state, 'SERVER_BLOB_TOO_LARGE', 'blob is larger than the limit');
  // WP-SRV-24: the server checks the content address, so a stored blob can never be swapped.
  if (toHex(c.sha256(bytes)) !== blobId) {
    return fail(state, 'SERVER_BLOB_ID_MISMATCH', 'blobId is not the SHA-256 of the bytes');
  }
  if (lookup(state.blobs, blobId) !== undefined) return { state, response: OK };
  // WP-SRV-25: the blob store is bounded.
  if (Object.keys(state.blobs).length >= MAX_BLOBS)
    return fail(state, 'SERVER_STORE_FULL', 'the blob store is full');
  return { state: { ...state, blobs: withEntry(state.blobs, blobId, copyBytes(bytes)) }, response: OK };
}

/** blob-get: the blob's bytes, or `null` when it is not stored. */
function blobGet(state: ServerState, request: Request<'blob-get'>): ServerStep {
  const { blobId } = request;
  if (typeof blobId !== 'string' || !BLOB_ID.test(blobId)) {
    return fail(state, 'SERVER_MALFORMED_REQUEST', 'blobId must be 64 lowercase hex digits');
  }
  const blob = lookup(state.blobs, blobId);
  return { state, response: { kind: 'blob', bytes: blob === undefined ? null : copyBytes(blob) } };
}

// ---------------------------------------------------------------------------------------------
// The step
// ---------------------------------------------------------------------------------------------

/**
 * The honest server's step: answers one request at server time `now` (integer ms). Pure: the input
 * state is never mutated, and on any error (`kind: 'error'`) the returned state is the input
 * state itself (WP-SRV-01). Refusals of a send (`kind: 'refused'`) also change nothing. Throws
 * {@link UsageError} only for a `now` that is not a non-negative safe integer (the caller's clock).
 */
export function handleRequest(
  env: ServerEnv,
  state: ServerState,
  request: ServerRequest,
  now: number,
): ServerStep {
  if (!Number.isSafeInteger(now) || now < 0)
    throw new UsageError(`now must be a non-negative safe integer, got ${now}`);
  // WP-SRV-01: an unknown request shape is a typed error, never a crash.
  if (!isObject(request) || typeof request.kind !== 'string') {
    return fail(state, 'SERVER_MALFORMED_REQUEST', 'request has no kind');
  }
  const c = env.crypto;
  switch (request.kind) {
    case 'register-account':
      return registerAccount(c, state, request);
    case 'register-device':
      return registerDevice(c, state, request);
    case 'upload-prekeys':
      return uploadPreKeys(c, state, request);
    case 'update-device-list':
      return updateDeviceList(c, state, request);
    case 'get-device-list':
      return getDeviceList(state, request);
    case 'get-bundles':
      return getBundles(state, request, env.bugs);
    case 'send':
      return send(state, request, now, env.bugs);
    case 'fetch':
      return fetchMailbox(state, request);
    case 'ack':
      return ackEnvelopes(state, request);
    case 'provision-put':
      return provisionPut(state, request, now);
    case 'provision-get':
      return provisionGet(state, request, now);
    case 'blob-put':
      return blobPut(c, state, request);
    case 'blob-get':
      return blobGet(state, request);
    default:
      return fail(state, 'SERVER_MALFORMED_REQUEST', 'unknown request kind');
  }
}
