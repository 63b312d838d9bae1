/**
 * Signed device lists, the three signature prefixes, registration proofs, account certificates and
 * account-key fingerprints (WP-DEV-01 … WP-DEV-09).
 *
 * Each account has an **account key** (an X25519/XEdDSA key held by the primary device) that signs a
 * versioned list of the account's devices and their identity keys. Every device has its own
 * identity key. Three kinds of signature exist, and each is made over `prefix ‖ message` with its
 * own two-byte prefix so that no signature of one kind can ever be presented as another
 * (WP-DEV-01). The byte values follow the domain separation of WhatsApp's published multi-device
 * design (WhatsApp Encryption Overview, "Multi-Device"); the text and code here are our own.
 *
 * ```text
 * kind                 signer        prefix     message
 * account certificate  account key   06 00      device identity key (33)               WP-DEV-07
 * registration proof   device key    06 01      registration message (below)           WP-DEV-06
 * device list          account key   06 02      encoded device list (below)            WP-DEV-04
 * ```
 *
 * ## Device list encoding (WP-DEV-02)
 *
 * ```text
 * offset  length  content
 * 0       1       format version 0x01
 * 1       n       protobuf DeviceList:
 *                   1 user_id      string   (spec/identity.ts isValidUserId)
 *                   2 version      uint32   ≥ 1
 *                   3 account_key  bytes    33, 0x05 ‖ u (WP-KEYS-01..03)
 *                   4 device       repeated message, 1..MAX_DEVICES_PER_ACCOUNT, ids strictly increasing:
 *                        1 device_id        uint32  1..127
 *                        2 identity_key     bytes   33, 0x05 ‖ u
 *                        3 registration_id  uint32  ≥ 1
 * ```
 *
 * Every field is written exactly once (devices once each), in ascending tag order. The decoder is
 * strict (WP-DEV-03): it re-encodes what it decoded and requires the same bytes, so a list has one
 * accepted encoding and the bytes that are signed are the bytes that are meant.
 *
 * ## Registration proof (WP-DEV-06; Sesame §6.3, proof of possession at registration)
 *
 * ```text
 * offset   length  content
 * 0        1       0x01
 * 1        1       n = length of the user id in bytes (1..64)
 * 2        n       user id (ASCII)
 * 2+n      1       device id (1..127)
 * 3+n      33      device identity key 0x05 ‖ u
 * 36+n     4       registration id, big-endian uint32
 * 40+n     33      account key 0x05 ‖ u
 * proof = XEdDSA(device identity key, 06 01 ‖ message)
 * ```
 *
 * ## Fingerprint and safety code (WP-DEV-08, WP-DEV-09)
 *
 * `fingerprint = SHA-256("lockstep-account-key-v1" ‖ account key)`; the safety code is the
 * fingerprint read as a 256-bit big-endian integer, reduced modulo 10^60, written as 60 decimal
 * digits in 12 groups of 5 (in the spirit of Signal's safety numbers, which print 5-digit groups).
 * @module
 */
import { BinaryWriter, WireType } from '@bufbuild/protobuf/wire';
import { concatBytes, equalBytes } from './bytes.js';
import {
  EC_KEY_TYPE_DJB,
  EC_PUBLIC_KEY_LENGTH,
  MAX_DEVICES_PER_ACCOUNT,
  MAX_UINT32,
  SIGNATURE_LENGTH,
} from './constants.js';
import type { CryptoProvider } from './crypto/provider.js';
import { XEDDSA_RANDOM_LENGTH, xeddsaSign, xeddsaVerify } from './crypto/xeddsa.js';
import type { DeviceList, DeviceListEntry, SignedDeviceList } from './device-list-types.js';
import { accept, reject, UsageError, type Result } from './errors.js';
import { isValidDeviceId, isValidUserId, type DeviceAddress, type UserId } from './identity.js';
import { decodeEcPublicKey, publicKeyFromPrivate } from './keys.js';
import {
  bytesOccurrences,
  decodeUtf8Strict,
  readStrictFields,
  singleBytes,
  singleVarint,
  type StrictFieldKind,
} from './protobuf.js';

/**
 * WP-DEV-01: the two-byte prefixes that separate the three signature kinds (values as in WhatsApp's
 * multi-device design). Every signature is XEdDSA over `prefix ‖ message`.
 */
export const SIGNATURE_PREFIX = Object.freeze({
  /** An account key certifying a device identity key (WP-DEV-07). */
  account: Uint8Array.of(0x06, 0x00),
  /** A device identity key proving possession at registration (WP-DEV-06). */
  device: Uint8Array.of(0x06, 0x01),
  /** An account key signing a device list (WP-DEV-04). */
  deviceList: Uint8Array.of(0x06, 0x02),
});

/** WP-DEV-02: the format version byte of an encoded device list. */
export const DEVICE_LIST_FORMAT_VERSION = 0x01;

/** WP-DEV-06: the format version byte of a registration proof message. */
export const REGISTRATION_PROOF_FORMAT_VERSION = 0x01;

/** WP-DEV-08: bytes of an account-key fingerprint. */
export const ACCOUNT_KEY_FINGERPRINT_LENGTH = 32;

/** Protobuf field numbers of `DeviceList` (WP-DEV-02). */
export const DEVICE_LIST_FIELD = Object.freeze({
  userId: 1,
  version: 2,
  accountKey: 3,
  device: 4,
} as const);

/** Protobuf field numbers of one `device` entry of a `DeviceList` (WP-DEV-02). */
export const DEVICE_ENTRY_FIELD = Object.freeze({
  deviceId: 1,
  identityKey: 2,
  registrationId: 3,
} as const);

const LIST_SCHEMA: ReadonlyMap<number, StrictFieldKind> = new Map<number, StrictFieldKind>([
  [DEVICE_LIST_FIELD.userId, 'bytes'],
  [DEVICE_LIST_FIELD.version, 'varint'],
  [DEVICE_LIST_FIELD.accountKey, 'bytes'],
  [DEVICE_LIST_FIELD.device, 'bytes'],
]);

const ENTRY_SCHEMA: ReadonlyMap<number, StrictFieldKind> = new Map<number, StrictFieldKind>([
  [DEVICE_ENTRY_FIELD.deviceId, 'varint'],
  [DEVICE_ENTRY_FIELD.identityKey, 'bytes'],
  [DEVICE_ENTRY_FIELD.registrationId, 'varint'],
]);

const FINGERPRINT_LABEL = new TextEncoder().encode('lockstep-account-key-v1');

/** A reason a device list is invalid, for the encoder's exception or the decoder's rejection. */
interface Problem {
  readonly message: string;
  readonly details?: Readonly<Record<string, number>>;
}

function isUint32(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= MAX_UINT32;
}

function isValidPublicKey(key: unknown): key is Uint8Array {
  return key instanceof Uint8Array && decodeEcPublicKey(key).ok;
}

/** WP-DEV-03: every semantic condition on a device list; `null` when it holds them all. */
function deviceListProblem(list: DeviceList): Problem | null {
  if (typeof list !== 'object' || list === null) return { message: 'device list must be an object' };
  if (!isValidUserId(list.userId)) return { message: 'user id is not valid' };
  if (!isUint32(list.version) || list.version < 1) return { message: 'version must be in 1..2^32-1' };
  if (!isValidPublicKey(list.accountKey)) return { message: 'account key is not a valid public key' };
  if (!Array.isArray(list.devices)) return { message: 'devices must be an array' };
  const devices: readonly DeviceListEntry[] = list.devices;
  if (devices.length < 1 || devices.length > MAX_DEVICES_PER_ACCOUNT) {
    return {
      message: 'device count out of range',
      details: { count: devices.length, limit: MAX_DEVICES_PER_ACCOUNT },
    };
  }
  let previous = 0;
  for (const [index, device] of devices.entries()) {
    if (typeof device !== 'object' || device === null) return { message: 'device must be an object' };
    if (!isValidDeviceId(device.deviceId)) return { message: 'device id out of range', details: { index } };
    if (device.deviceId <= previous) {
      return { message: 'device ids must be strictly increasing', details: { index } };
    }
    previous = device.deviceId;
    if (!isValidPublicKey(device.identityKey)) {
      return { message: 'device identity key is not a valid public key', details: { index } };
    }
    if (!isUint32(device.registrationId) || device.registrationId < 1) {
      return { message: 'registration id must be in 1..2^32-1', details: { index } };
    }
  }
  return null;
}

function requireCrypto(c: CryptoProvider): void {
  if (typeof c !== 'object' || c === null) throw new UsageError('crypto provider must be given');
}

function requireRandom(random: Uint8Array): void {
  if (!(random instanceof Uint8Array) || random.length !== XEDDSA_RANDOM_LENGTH) {
    throw new UsageError(`random must be ${XEDDSA_RANDOM_LENGTH} bytes`);
  }
}

function requirePublicKey(name: string, key: Uint8Array): void {
  if (!(key instanceof Uint8Array) || key.length !== EC_PUBLIC_KEY_LENGTH || key[0] !== EC_KEY_TYPE_DJB) {
    throw new UsageError(`${name} must be a 33-byte 0x05 public key`);
  }
}

/**
 * Encodes a device list canonically (WP-DEV-02): `0x01 ‖ protobuf`, fields in ascending tag order,
 * devices in ascending id order.
 * @throws UsageError when the list breaks any condition of WP-DEV-03 (user id, version, keys, device
 * ids not strictly increasing, device count).
 */
export function encodeDeviceList(list: DeviceList): Uint8Array {
  const problem = deviceListProblem(list);
  if (problem !== null) throw new UsageError(`invalid device list: ${problem.message}`);
  const writer = new BinaryWriter();
  writer.raw(Uint8Array.of(DEVICE_LIST_FORMAT_VERSION));
  writer.tag(DEVICE_LIST_FIELD.userId, WireType.LengthDelimited).string(list.userId);
  writer.tag(DEVICE_LIST_FIELD.version, WireType.Varint).uint32(list.version);
  writer.tag(DEVICE_LIST_FIELD.accountKey, WireType.LengthDelimited).bytes(list.accountKey);
  for (const device of list.devices) {
    const entry = new BinaryWriter();
    entry.tag(DEVICE_ENTRY_FIELD.deviceId, WireType.Varint).uint32(device.deviceId);
    entry.tag(DEVICE_ENTRY_FIELD.identityKey, WireType.LengthDelimited).bytes(device.identityKey);
    entry.tag(DEVICE_ENTRY_FIELD.registrationId, WireType.Varint).uint32(device.registrationId);
    writer.tag(DEVICE_LIST_FIELD.device, WireType.LengthDelimited).bytes(entry.finish());
  }
  return writer.finish();
}

function malformed(message: string, details?: Readonly<Record<string, number>>): Result<never> {
  return reject('DEVICE_LIST_MALFORMED', message, details);
}

/** A uint32 from a decoded varint, or `undefined` when absent or out of range. */
function uint32Of(value: bigint | undefined): number | undefined {
  return value !== undefined && value <= BigInt(MAX_UINT32) ? Number(value) : undefined;
}

function decodeEntry(bytes: Uint8Array, index: number): Result<DeviceListEntry> {
  const read = readStrictFields(bytes, ENTRY_SCHEMA);
  if (!read.ok) return malformed(`device entry: ${read.message}`, { index, ...read.details });
  const deviceId = uint32Of(singleVarint(read.fields, DEVICE_ENTRY_FIELD.deviceId));
  const identityKey = singleBytes(read.fields, DEVICE_ENTRY_FIELD.identityKey);
  const registrationId = uint32Of(singleVarint(read.fields, DEVICE_ENTRY_FIELD.registrationId));
  if (deviceId === undefined || identityKey === undefined || registrationId === undefined) {
    return malformed('device entry lacks a field, repeats one, or has one out of range', { index });
  }
  return accept({ deviceId, identityKey, registrationId });
}

/**
 * Decodes an encoded device list (WP-DEV-03). Rejects with `DEVICE_LIST_MALFORMED`: an empty input
 * or a format version other than 0x01, bytes that are not a protobuf of the DeviceList schema
 * (unknown fields included), a missing or repeated field, an invalid user id, version 0 or above
 * uint32, a key that fails WP-KEYS-01..03, device ids outside 1..127 or not strictly increasing,
 * no device or more than `MAX_DEVICES_PER_ACCOUNT`, and any encoding that is not byte-identical to
 * the canonical re-encoding. Never throws on any byte string; returned keys are copies.
 */
export function decodeDeviceList(bytes: Uint8Array): Result<DeviceList> {
  if (!(bytes instanceof Uint8Array)) throw new UsageError('device list bytes must be a Uint8Array');
  // WP-DEV-03: the format version byte first.
  if (bytes.length < 1 || bytes[0] !== DEVICE_LIST_FORMAT_VERSION) {
    return malformed('unknown device list format version', { length: bytes.length, version: bytes[0] ?? -1 });
  }
  const read = readStrictFields(bytes.subarray(1), LIST_SCHEMA);
  if (!read.ok) return malformed(read.message, read.details);
  const userIdBytes = singleBytes(read.fields, DEVICE_LIST_FIELD.userId);
  const version = uint32Of(singleVarint(read.fields, DEVICE_LIST_FIELD.version));
  const accountKey = singleBytes(read.fields, DEVICE_LIST_FIELD.accountKey);
  if (userIdBytes === undefined || version === undefined || accountKey === undefined) {
    return malformed('user_id, version and account_key must each appear once, in range');
  }
  const entries = bytesOccurrences(read.fields, DEVICE_LIST_FIELD.device);
  // WP-DEV-03: bound the work before decoding any entry.
  if (entries.length < 1 || entries.length > MAX_DEVICES_PER_ACCOUNT) {
    return malformed('device count out of range', { count: entries.length, limit: MAX_DEVICES_PER_ACCOUNT });
  }
  const devices: DeviceListEntry[] = [];
  for (const [index, entry] of entries.entries()) {
    const device = decodeEntry(entry, index);
    if (!device.ok) return device;
    devices.push(device.value);
  }
  const list: DeviceList = { userId: decodeUtf8Strict(userIdBytes) ?? '', version, accountKey, devices };
  // WP-DEV-03: user id, version, keys (WP-KEYS-01..03), ids and count.
  const problem = deviceListProblem(list);
  if (problem !== null) return malformed(problem.message, problem.details);
  // WP-DEV-03: one accepted encoding: the canonical re-encoding must be the input, byte for byte.
  if (!equalBytes(encodeDeviceList(list), bytes)) return malformed('device list encoding is not canonical');
  return accept(list);
}

/**
 * Signs a device list with the account key (WP-DEV-04): `XEdDSA(account key, 06 02 ‖ encoded list)`,
 * consuming the 64 random bytes of one XEdDSA signature (WP-KEYS-09).
 * @throws UsageError for an invalid list, a `random` that is not 64 bytes, or an account private key
 * whose public key is not the list's account key.
 */
export function signDeviceList(
  c: CryptoProvider,
  accountPrivateKey: Uint8Array,
  list: DeviceList,
  random: Uint8Array,
): SignedDeviceList {
  requireCrypto(c);
  requireRandom(random);
  const encoded = encodeDeviceList(list);
  if (!equalBytes(publicKeyFromPrivate(c, accountPrivateKey), list.accountKey)) {
    throw new UsageError('accountPrivateKey does not belong to the list account key');
  }
  // WP-DEV-01 / WP-DEV-04: the list prefix keeps this signature from passing as any other kind.
  const signature = xeddsaSign(
    c,
    accountPrivateKey,
    concatBytes(SIGNATURE_PREFIX.deviceList, encoded),
    random,
  );
  return { list: encoded, signature };
}

/**
 * Verifies a signed device list: decodes it (WP-DEV-03, `DEVICE_LIST_MALFORMED`), requires its user
 * id to be `expectedUserId` (WP-DEV-05, `DEVICE_LIST_WRONG_USER`) and verifies the signature over
 * `06 02 ‖ list bytes as received` with the list's own account key (WP-DEV-04,
 * `DEVICE_LIST_SIGNATURE_INVALID`). Whether that account key is the one the caller trusts, and
 * whether the version is newer than one already seen, are the client's decisions, not this check's.
 */
export function verifySignedDeviceList(
  c: CryptoProvider,
  signed: SignedDeviceList,
  expectedUserId: UserId,
): Result<DeviceList> {
  requireCrypto(c);
  if (typeof signed !== 'object' || signed === null) throw new UsageError('signed must be an object');
  if (!(signed.list instanceof Uint8Array) || !(signed.signature instanceof Uint8Array)) {
    throw new UsageError('signed.list and signed.signature must be Uint8Arrays');
  }
  if (!isValidUserId(expectedUserId)) throw new UsageError('expectedUserId is not a valid user id');
  const decoded = decodeDeviceList(signed.list);
  if (!decoded.ok) return decoded;
  // WP-DEV-05: a list for another account is refused whatever its signature.
  if (decoded.value.userId !== expectedUserId) {
    return reject('DEVICE_LIST_WRONG_USER', 'device list belongs to another user');
  }
  // WP-DEV-04: signature by the list's own account key over prefix ‖ the bytes as received.
  const message = concatBytes(SIGNATURE_PREFIX.deviceList, signed.list);
  if (!xeddsaVerify(c, decoded.value.accountKey, message, signed.signature)) {
    return reject('DEVICE_LIST_SIGNATURE_INVALID', 'device list signature does not verify', {
      signatureLength: signed.signature.length,
    });
  }
  return decoded;
}

/**
 * The message a device signs at registration (WP-DEV-06): its address, identity key, registration id
 * and the account key it joins, in the fixed layout of the module docs.
 * @throws UsageError for an invalid address, key or registration id.
 */
export function registrationProofMessage(
  address: DeviceAddress,
  identityKey: Uint8Array,
  registrationId: number,
  accountKey: Uint8Array,
): Uint8Array {
  if (typeof address !== 'object' || address === null) throw new UsageError('address must be an object');
  if (!isValidUserId(address.userId)) throw new UsageError('address.userId is not a valid user id');
  if (!isValidDeviceId(address.deviceId)) throw new UsageError('address.deviceId must be in 1..127');
  requirePublicKey('identityKey', identityKey);
  requirePublicKey('accountKey', accountKey);
  if (!isUint32(registrationId) || registrationId < 1) {
    throw new UsageError('registrationId must be in 1..2^32-1');
  }
  const userId = new TextEncoder().encode(address.userId);
  const registration = new Uint8Array(4);
  new DataView(registration.buffer).setUint32(0, registrationId, false);
  return concatBytes(
    Uint8Array.of(REGISTRATION_PROOF_FORMAT_VERSION, userId.length),
    userId,
    Uint8Array.of(address.deviceId),
    identityKey,
    registration,
    accountKey,
  );
}

/**
 * Signs a registration message with the device's identity key (WP-DEV-06):
 * `XEdDSA(device identity key, 06 01 ‖ message)`, consuming 64 random bytes (WP-KEYS-09).
 * @throws UsageError on wrong argument lengths.
 */
export function signRegistrationProof(
  c: CryptoProvider,
  devicePrivateKey: Uint8Array,
  message: Uint8Array,
  random: Uint8Array,
): Uint8Array {
  requireCrypto(c);
  requireRandom(random);
  if (!(message instanceof Uint8Array)) throw new UsageError('message must be a Uint8Array');
  // WP-DEV-01: device prefix.
  return xeddsaSign(c, devicePrivateKey, concatBytes(SIGNATURE_PREFIX.device, message), random);
}

/**
 * WP-DEV-06: true when `proof` is the identity key's XEdDSA signature over `06 01 ‖ message`.
 * False for any malformed key or signature; never throws on peer bytes.
 */
export function verifyRegistrationProof(
  c: CryptoProvider,
  identityKey: Uint8Array,
  message: Uint8Array,
  proof: Uint8Array,
): boolean {
  requireCrypto(c);
  if (!(message instanceof Uint8Array)) return false;
  return xeddsaVerify(c, identityKey, concatBytes(SIGNATURE_PREFIX.device, message), proof);
}

/**
 * The account key certifies a device's identity key (WP-DEV-07): `XEdDSA(account key, 06 00 ‖
 * device identity key)`, sent to a newly linked device, consuming 64 random bytes (WP-KEYS-09).
 * @throws UsageError on wrong argument lengths.
 */
export function signAccountCertificate(
  c: CryptoProvider,
  accountPrivateKey: Uint8Array,
  deviceIdentityKey: Uint8Array,
  random: Uint8Array,
): Uint8Array {
  requireCrypto(c);
  requireRandom(random);
  requirePublicKey('deviceIdentityKey', deviceIdentityKey);
  // WP-DEV-01: account prefix.
  return xeddsaSign(c, accountPrivateKey, concatBytes(SIGNATURE_PREFIX.account, deviceIdentityKey), random);
}

/**
 * WP-DEV-07: true when `signature` is the account key's XEdDSA signature over
 * `06 00 ‖ deviceIdentityKey`. False for any malformed input; never throws on peer bytes.
 */
export function verifyAccountCertificate(
  c: CryptoProvider,
  accountKey: Uint8Array,
  deviceIdentityKey: Uint8Array,
  signature: Uint8Array,
): boolean {
  requireCrypto(c);
  if (!(deviceIdentityKey instanceof Uint8Array) || deviceIdentityKey.length !== EC_PUBLIC_KEY_LENGTH) {
    return false;
  }
  if (!(signature instanceof Uint8Array) || signature.length !== SIGNATURE_LENGTH) return false;
  return xeddsaVerify(c, accountKey, concatBytes(SIGNATURE_PREFIX.account, deviceIdentityKey), signature);
}

/**
 * WP-DEV-08: the account-key fingerprint, `SHA-256("lockstep-account-key-v1" ‖ accountKey)` over the
 * 33-byte encoding (32 bytes). Carried in contact links and shown as a safety code.
 * @throws UsageError unless `accountKey` is a 33-byte 0x05 key.
 */
export function accountKeyFingerprint(c: CryptoProvider, accountKey: Uint8Array): Uint8Array {
  requireCrypto(c);
  requirePublicKey('accountKey', accountKey);
  return c.sha256(concatBytes(FINGERPRINT_LABEL, accountKey));
}

/** Digits in a safety code and digits per group. */
const SAFETY_CODE_DIGITS = 60;
const SAFETY_CODE_GROUP = 5;

/**
 * WP-DEV-09: the human-comparable form of a fingerprint: the 32 bytes as a big-endian integer modulo
 * 10^60, as 60 zero-padded decimal digits in 12 groups of 5 separated by spaces. The reduction's bias
 * is below 2^-56 (10^60 / 2^256) and the code carries about 199 bits of the fingerprint.
 * @throws UsageError unless `fingerprint` is 32 bytes.
 */
export function safetyCode(fingerprint: Uint8Array): string {
  if (!(fingerprint instanceof Uint8Array) || fingerprint.length !== ACCOUNT_KEY_FINGERPRINT_LENGTH) {
    throw new UsageError(`fingerprint must be ${ACCOUNT_KEY_FINGERPRINT_LENGTH} bytes`);
  }
  let value = 0n;
  for (const byte of fingerprint) value = (value << 8n) | BigInt(byte);
  const digits = (value % 10n ** BigInt(SAFETY_CODE_DIGITS)).toString().padStart(SAFETY_CODE_DIGITS, '0');
  const groups: string[] = [];
  for (let i = 0; i < SAFETY_CODE_DIGITS; i += SAFETY_CODE_GROUP) {
    groups.push(digits.slice(i, i + SAFETY_CODE_GROUP));
  }
  return groups.join(' ');
}
