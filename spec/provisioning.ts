/**
 * Linking a new device by QR code (WP-LINK-01 … WP-LINK-05), in the manner of Signal's device
 * provisioning (a QR code carries a one-time relay address and an ephemeral public key; the existing
 * device answers with an envelope only that key can open). Sesame §6.1 leaves how a user's devices
 * learn of each other to the application; this is Lockstep's answer. The design is inspired by
 * Signal's, the bytes are Lockstep's own.
 *
 * 1. The new device draws an ephemeral key pair, a 16-byte relay address and its identity key, and
 *    shows a {@link ProvisioningCode} as `lockstep://link/<base64url>`.
 * 2. The primary scans it, signs a new device list and an account certificate for the new identity
 *    key (spec/device-list.ts), and uploads `encryptProvisionEnvelope(ephemeral key, ProvisionMessage)`
 *    to the relay address.
 * 3. The new device fetches and opens the envelope, and checks both signatures.
 *
 * ## Provisioning code (WP-LINK-02)
 *
 * ```text
 * 0   1   format version 0x01
 * 1   n   protobuf: 1 relay_address bytes(16), 2 ephemeral_public_key bytes(33),
 *                   3 identity_key bytes(33), 4 registration_id uint32 ≥ 1
 * URL     lockstep://link/<base64url of the bytes above, no padding>
 * ```
 * The relay address is handled as the 22-character unpadded base64url text of its 16 bytes.
 *
 * ## Provision message (WP-LINK-03)
 *
 * ```text
 * 0   1   format version 0x01
 * 1   n   protobuf: 1 user_id string, 2 device_id uint32 (1..127),
 *                   3 device_list { 1 list bytes (a valid encoded device list, WP-DEV-03),
 *                                   2 signature bytes(64) },
 *                   4 account_certificate bytes(64)
 * ```
 *
 * ## Envelope (WP-LINK-04, WP-LINK-05)
 *
 * ```text
 * draws          e (32, sender ephemeral private key), iv (16)            spec/draws.ts provisionEnvelope
 * shared         DH(e, recipient ephemeral public key), all-zero refused (WP-KEYS-04)
 * aes ‖ mac      HKDF-SHA256(salt none, shared, "Lockstep_Provisioning_v1", 64)
 * envelope       0x01 ‖ E (33) ‖ iv (16) ‖ AES-256-CBC-PKCS7(aes, iv, plaintext) ‖ HMAC(mac, all before) (32)
 * ```
 * The receiver checks the layout, then the MAC over the bytes as received in constant time, and only
 * then decrypts.
 * @module
 */
import { BinaryWriter, WireType } from '@bufbuild/protobuf/wire';
import { concatBytes, equalBytes, utf8 } from './bytes.js';
import { EC_PUBLIC_KEY_LENGTH, MAX_UINT32, PROVISIONING_INFO, SIGNATURE_LENGTH } from './constants.js';
import { fromBase64Url, toBase64Url, MAX_LINK_URL_LENGTH } from './contact-link.js';
import type { CryptoProvider } from './crypto/provider.js';
import { decodeDeviceList } from './device-list.js';
import type { SignedDeviceList } from './device-list-types.js';
import { accept, InvariantError, reject, UsageError, type Result } from './errors.js';
import { isValidDeviceId, isValidUserId, type DeviceId, type UserId } from './identity.js';
import { decodeEcPublicKey, dh, generateKeyPair } from './keys.js';
import {
  decodeUtf8Strict,
  readStrictFields,
  singleBytes,
  singleVarint,
  type StrictFieldKind,
} from './protobuf.js';
import type { Rng } from './rng.js';

/** What a new device shows as a QR code. */
export interface ProvisioningCode {
  /** 22-character unpadded base64url of 16 random bytes: the one-time relay mailbox. */
  readonly relayAddress: string;
  /** The new device's ephemeral public key for the envelope, `0x05 ‖ u`. */
  readonly ephemeralPublicKey: Uint8Array;
  /** The new device's identity key, `0x05 ‖ u`. */
  readonly identityKey: Uint8Array;
  /** The new device's registration id. */
  readonly registrationId: number;
}

/** What the primary sends the new device inside the envelope. */
export interface ProvisionMessage {
  readonly userId: UserId;
  /** The id the primary assigned to the new device. */
  readonly deviceId: DeviceId;
  /** The account's new signed device list, which includes the new device. */
  readonly deviceList: SignedDeviceList;
  /** The account key's certificate over the new identity key (WP-DEV-07), 64 bytes. */
  readonly accountCertificate: Uint8Array;
}

/** WP-LINK-01: format version byte of provisioning codes, provision messages and envelopes. */
export const PROVISIONING_FORMAT_VERSION = 0x01;

/** WP-LINK-02: bytes behind a relay address. */
export const RELAY_ADDRESS_BYTES = 16;

/** WP-LINK-02: the URL prefix of a provisioning code. */
export const PROVISIONING_URL_PREFIX = 'lockstep://link/';

/** WP-LINK-04: AES-CBC IV length in an envelope. */
const IV_LENGTH = 16;
/** WP-LINK-04: HMAC-SHA256 tag length in an envelope. */
const ENVELOPE_MAC_LENGTH = 32;
/** WP-LINK-04: AES block size (the ciphertext is a positive multiple of it). */
const AES_BLOCK = 16;
/** Bytes before the ciphertext: version ‖ E ‖ iv. */
const ENVELOPE_HEADER_LENGTH = 1 + EC_PUBLIC_KEY_LENGTH + IV_LENGTH;
/** WP-LINK-01: shortest envelope: header, one ciphertext block, MAC. */
export const MIN_PROVISION_ENVELOPE_LENGTH = ENVELOPE_HEADER_LENGTH + AES_BLOCK + ENVELOPE_MAC_LENGTH;

const PROVISIONING_INFO_BYTES = utf8(PROVISIONING_INFO);
const EMPTY_SALT = new Uint8Array(0);

/** Protobuf field numbers of `ProvisioningCode` (WP-LINK-02). */
export const PROVISIONING_CODE_FIELD = Object.freeze({
  relayAddress: 1,
  ephemeralPublicKey: 2,
  identityKey: 3,
  registrationId: 4,
} as const);

/** Protobuf field numbers of `ProvisionMessage` and its nested `device_list` (WP-LINK-03). */
export const PROVISION_MESSAGE_FIELD = Object.freeze({
  userId: 1,
  deviceId: 2,
  deviceList: 3,
  accountCertificate: 4,
  deviceListList: 1,
  deviceListSignature: 2,
} as const);

const CODE_SCHEMA: ReadonlyMap<number, StrictFieldKind> = new Map<number, StrictFieldKind>([
  [PROVISIONING_CODE_FIELD.relayAddress, 'bytes'],
  [PROVISIONING_CODE_FIELD.ephemeralPublicKey, 'bytes'],
  [PROVISIONING_CODE_FIELD.identityKey, 'bytes'],
  [PROVISIONING_CODE_FIELD.registrationId, 'varint'],
]);

const MESSAGE_SCHEMA: ReadonlyMap<number, StrictFieldKind> = new Map<number, StrictFieldKind>([
  [PROVISION_MESSAGE_FIELD.userId, 'bytes'],
  [PROVISION_MESSAGE_FIELD.deviceId, 'varint'],
  [PROVISION_MESSAGE_FIELD.deviceList, 'bytes'],
  [PROVISION_MESSAGE_FIELD.accountCertificate, 'bytes'],
]);

const SIGNED_LIST_SCHEMA: ReadonlyMap<number, StrictFieldKind> = new Map<number, StrictFieldKind>([
  [PROVISION_MESSAGE_FIELD.deviceListList, 'bytes'],
  [PROVISION_MESSAGE_FIELD.deviceListSignature, 'bytes'],
]);

function malformed(message: string, details?: Readonly<Record<string, number>>): Result<never> {
  return reject('PROVISIONING_MALFORMED', message, details);
}

function isValidPublicKey(key: unknown): key is Uint8Array {
  return key instanceof Uint8Array && decodeEcPublicKey(key).ok;
}

/** WP-LINK-02: the relay address text of 16 bytes (22 unpadded base64url characters). */
export function relayAddressFromBytes(bytes: Uint8Array): string {
  if (!(bytes instanceof Uint8Array) || bytes.length !== RELAY_ADDRESS_BYTES) {
    throw new UsageError(`relay address must be ${RELAY_ADDRESS_BYTES} bytes`);
  }
  return toBase64Url(bytes);
}

/** The 16 bytes of a relay address text, or `undefined` when it is not one. */
function relayAddressBytes(address: unknown): Uint8Array | undefined {
  if (typeof address !== 'string') return undefined;
  const bytes = fromBase64Url(address);
  return bytes !== undefined && bytes.length === RELAY_ADDRESS_BYTES ? bytes : undefined;
}

function codeProblem(code: ProvisioningCode): string | null {
  if (typeof code !== 'object' || code === null) return 'provisioning code must be an object';
  if (relayAddressBytes(code.relayAddress) === undefined) return 'relay address is not 16 bytes of base64url';
  if (!isValidPublicKey(code.ephemeralPublicKey)) return 'ephemeral public key is not valid';
  if (!isValidPublicKey(code.identityKey)) return 'identity key is not valid';
  const id = code.registrationId;
  if (typeof id !== 'number' || !Number.isInteger(id) || id < 1 || id > MAX_UINT32) {
    return 'registration id must be in 1..2^32-1';
  }
  return null;
}

/**
 * Encodes a provisioning code canonically (WP-LINK-02).
 * @throws UsageError for an invalid relay address, key or registration id.
 */
export function encodeProvisioningCode(code: ProvisioningCode): Uint8Array {
  const problem = codeProblem(code);
  const relay = relayAddressBytes(code.relayAddress);
  if (problem !== null || relay === undefined) {
    throw new UsageError(`invalid provisioning code: ${problem ?? 'relay address'}`);
  }
  const writer = new BinaryWriter();
  writer.raw(Uint8Array.of(PROVISIONING_FORMAT_VERSION));
  writer.tag(PROVISIONING_CODE_FIELD.relayAddress, WireType.LengthDelimited).bytes(relay);
  writer
    .tag(PROVISIONING_CODE_FIELD.ephemeralPublicKey, WireType.LengthDelimited)
    .bytes(code.ephemeralPublicKey);
  writer.tag(PROVISIONING_CODE_FIELD.identityKey, WireType.LengthDelimited).bytes(code.identityKey);
  writer.tag(PROVISIONING_CODE_FIELD.registrationId, WireType.Varint).uint32(code.registrationId);
  return writer.finish();
}

/**
 * Decodes a provisioning code (WP-LINK-01, WP-LINK-02): version 0x01, the schema's fields each
 * exactly once, a 16-byte relay address, keys passing WP-KEYS-01..03, a registration id in
 * 1..2^32−1, and the canonical encoding; anything else is `PROVISIONING_MALFORMED`. Never throws.
 */
export function decodeProvisioningCode(bytes: Uint8Array): Result<ProvisioningCode> {
  if (!(bytes instanceof Uint8Array)) throw new UsageError('provisioning code bytes must be a Uint8Array');
  // WP-LINK-01: format version first.
  if (bytes.length < 1 || bytes[0] !== PROVISIONING_FORMAT_VERSION) {
    return malformed('unknown provisioning code version', { length: bytes.length, version: bytes[0] ?? -1 });
  }
  const read = readStrictFields(bytes.subarray(1), CODE_SCHEMA);
  if (!read.ok) return malformed(read.message, read.details);
  const relay = singleBytes(read.fields, PROVISIONING_CODE_FIELD.relayAddress);
  const ephemeralPublicKey = singleBytes(read.fields, PROVISIONING_CODE_FIELD.ephemeralPublicKey);
  const identityKey = singleBytes(read.fields, PROVISIONING_CODE_FIELD.identityKey);
  const registrationId = singleVarint(read.fields, PROVISIONING_CODE_FIELD.registrationId);
  if (
    relay === undefined ||
    relay.length !== RELAY_ADDRESS_BYTES ||
    ephemeralPublicKey === undefined ||
    identityKey === undefined ||
    registrationId === undefined ||
    registrationId > BigInt(MAX_UINT32)
  ) {
    return malformed('provisioning code lacks a field, repeats one, or has one of the wrong size');
  }
  const code: ProvisioningCode = {
    relayAddress: toBase64Url(relay),
    ephemeralPublicKey,
    identityKey,
    registrationId: Number(registrationId),
  };
  // WP-LINK-01: keys and range, then the single accepted encoding.
  const problem = codeProblem(code);
  if (problem !== null) return malformed(problem);
  if (!equalBytes(encodeProvisioningCode(code), bytes))
    return malformed('provisioning code is not canonical');
  return accept(code);
}

/** WP-LINK-02: `lockstep://link/` followed by the unpadded base64url of the encoding. */
export function provisioningCodeToUrl(code: ProvisioningCode): string {
  return PROVISIONING_URL_PREFIX + toBase64Url(encodeProvisioningCode(code));
}

/**
 * Parses a provisioning URL (WP-LINK-01, WP-LINK-02): exact prefix, strict unpadded base64url, then
 * {@link decodeProvisioningCode}; anything else is `PROVISIONING_MALFORMED`. Never throws.
 */
export function provisioningCodeFromUrl(url: string): Result<ProvisioningCode> {
  if (typeof url !== 'string') throw new UsageError('url must be a string');
  if (url.length > MAX_LINK_URL_LENGTH) {
    return malformed('provisioning URL too long', { length: url.length, limit: MAX_LINK_URL_LENGTH });
  }
  if (!url.startsWith(PROVISIONING_URL_PREFIX)) return malformed('not a provisioning URL');
  const bytes = fromBase64Url(url.slice(PROVISIONING_URL_PREFIX.length));
  if (bytes === undefined) return malformed('provisioning URL is not canonical unpadded base64url');
  return decodeProvisioningCode(bytes);
}

function messageProblem(message: ProvisionMessage): string | null {
  if (typeof message !== 'object' || message === null) return 'provision message must be an object';
  if (!isValidUserId(message.userId)) return 'user id is not valid';
  if (!isValidDeviceId(message.deviceId)) return 'device id must be in 1..127';
  const list = message.deviceList;
  if (typeof list !== 'object' || list === null) return 'device list must be an object';
  if (!(list.list instanceof Uint8Array) || !decodeDeviceList(list.list).ok) {
    return 'device list is not a valid encoded device list';
  }
  if (!(list.signature instanceof Uint8Array) || list.signature.length !== SIGNATURE_LENGTH) {
    return `device list signature must be ${SIGNATURE_LENGTH} bytes`;
  }
  if (
    !(message.accountCertificate instanceof Uint8Array) ||
    message.accountCertificate.length !== SIGNATURE_LENGTH
  ) {
    return `account certificate must be ${SIGNATURE_LENGTH} bytes`;
  }
  return null;
}

/**
 * Encodes a provision message canonically (WP-LINK-03). Signatures are not checked here; the new
 * device checks them after decoding (WP-DEV-04, WP-DEV-07).
 * @throws UsageError for an invalid user id, device id, device list encoding or signature length.
 */
export function encodeProvisionMessage(message: ProvisionMessage): Uint8Array {
  const problem = messageProblem(message);
  if (problem !== null) throw new UsageError(`invalid provision message: ${problem}`);
  const signed = new BinaryWriter();
  signed.tag(PROVISION_MESSAGE_FIELD.deviceListList, WireType.LengthDelimited).bytes(message.deviceList.list);
  signed
    .tag(PROVISION_MESSAGE_FIELD.deviceListSignature, WireType.LengthDelimited)
    .bytes(message.deviceList.signature);
  const writer = new BinaryWriter();
  writer.raw(Uint8Array.of(PROVISIONING_FORMAT_VERSION));
  writer.tag(PROVISION_MESSAGE_FIELD.userId, WireType.LengthDelimited).string(message.userId);
  writer.tag(PROVISION_MESSAGE_FIELD.deviceId, WireType.Varint).uint32(message.deviceId);
  writer.tag(PROVISION_MESSAGE_FIELD.deviceList, WireType.LengthDelimited).bytes(signed.finish());
  writer
    .tag(PROVISION_MESSAGE_FIELD.accountCertificate, WireType.LengthDelimited)
    .bytes(message.accountCertificate);
  return writer.finish();
}

/**
 * Decodes a provision message (WP-LINK-01, WP-LINK-03): version 0x01, every field exactly once, a
 * valid user id and device id, a device list that decodes (WP-DEV-03), 64-byte signature and
 * certificate, canonical encoding; anything else is `PROVISIONING_MALFORMED`. Never throws.
 */
export function decodeProvisionMessage(bytes: Uint8Array): Result<ProvisionMessage> {
  if (!(bytes instanceof Uint8Array)) throw new UsageError('provision message bytes must be a Uint8Array');
  if (bytes.length < 1 || bytes[0] !== PROVISIONING_FORMAT_VERSION) {
    return malformed('unknown provision message version', { length: bytes.length, version: bytes[0] ?? -1 });
  }
  const read = readStrictFields(bytes.subarray(1), MESSAGE_SCHEMA);
  if (!read.ok) return malformed(read.message, read.details);
  const userIdBytes = singleBytes(read.fields, PROVISION_MESSAGE_FIELD.userId);
  const deviceId = singleVarint(read.fields, PROVISION_MESSAGE_FIELD.deviceId);
  const signedBytes = singleBytes(read.fields, PROVISION_MESSAGE_FIELD.deviceList);
  const accountCertificate = singleBytes(read.fields, PROVISION_MESSAGE_FIELD.accountCertificate);
  if (
    userIdBytes === undefined ||
    deviceId === undefined ||
    deviceId > BigInt(MAX_UINT32) ||
    signedBytes === undefined ||
    accountCertificate === undefined
  ) {
    return malformed('provision message lacks a field or repeats one');
  }
  const signedRead = readStrictFields(signedBytes, SIGNED_LIST_SCHEMA);
  if (!signedRead.ok) return malformed(`device_list: ${signedRead.message}`, signedRead.details);
  const list = singleBytes(signedRead.fields, PROVISION_MESSAGE_FIELD.deviceListList);
  const signature = singleBytes(signedRead.fields, PROVISION_MESSAGE_FIELD.deviceListSignature);
  if (list === undefined || signature === undefined) {
    return malformed('device_list needs list and signature exactly once');
  }
  const message: ProvisionMessage = {
    userId: decodeUtf8Strict(userIdBytes) ?? '',
    deviceId: Number(deviceId),
    deviceList: { list, signature },
    accountCertificate,
  };
  const problem = messageProblem(message);
  if (problem !== null) return malformed(problem);
  if (!equalBytes(encodeProvisionMessage(message), bytes))
    return malformed('provision message is not canonical');
  return accept(message);
}

/** WP-LINK-04: `aesKey ‖ macKey = HKDF-SHA256(salt none, shared, "Lockstep_Provisioning_v1", 64)`. */
function envelopeKeys(
  c: CryptoProvider,
  shared: Uint8Array,
): { readonly aesKey: Uint8Array; readonly macKey: Uint8Array } {
  const okm = c.hkdfSha256(shared, EMPTY_SALT, PROVISIONING_INFO_BYTES, 64);
  return { aesKey: okm.slice(0, 32), macKey: okm.slice(32, 64) };
}

/**
 * Seals `plaintext` (normally an encoded {@link ProvisionMessage}) to the new device's ephemeral key
 * (WP-LINK-04). Draws, in order, the sender's ephemeral private key (32) and the IV (16).
 * @throws UsageError when the recipient key is not a valid public key.
 */
export function encryptProvisionEnvelope(
  c: CryptoProvider,
  rng: Rng,
  recipientEphemeralPublicKey: Uint8Array,
  plaintext: Uint8Array,
): Uint8Array {
  if (!isValidPublicKey(recipientEphemeralPublicKey)) {
    throw new UsageError('recipientEphemeralPublicKey must be a valid 33-byte public key');
  }
  if (!(plaintext instanceof Uint8Array)) throw new UsageError('plaintext must be a Uint8Array');
  // WP-LINK-04: draw order is the sender's ephemeral key, then the IV (spec/draws.ts).
  const ephemeral = generateKeyPair(c, rng);
  const iv = Uint8Array.from(rng.randomBytes(IV_LENGTH));
  const shared = dh(c, ephemeral.privateKey, recipientEphemeralPublicKey);
  // A validated public key never yields an all-zero output (WP-KEYS-03, WP-KEYS-04).
  if (!shared.ok) throw new InvariantError('DH with a validated key returned all zeros');
  const { aesKey, macKey } = envelopeKeys(c, shared.value);
  const body = concatBytes(
    Uint8Array.of(PROVISIONING_FORMAT_VERSION),
    ephemeral.publicKey,
    iv,
    c.aes256CbcEncrypt(aesKey, iv, plaintext),
  );
  return concatBytes(body, c.hmacSha256(macKey, body));
}

/**
 * Opens an envelope with the new device's ephemeral private key (WP-LINK-01, WP-LINK-05). Rejects,
 * in order: a length below {@link MIN_PROVISION_ENVELOPE_LENGTH} or a ciphertext that is not whole
 * AES blocks, a version byte other than 0x01, a sender key failing WP-KEYS-01..03
 * (`PROVISIONING_MALFORMED`); a MAC that does not match the bytes as received, compared in constant
 * time before anything is decrypted (`PROVISIONING_MAC_INVALID`); bad PKCS#7 padding
 * (`PROVISIONING_MALFORMED`). Never throws on any envelope.
 */
export function decryptProvisionEnvelope(
  c: CryptoProvider,
  recipientEphemeralPrivateKey: Uint8Array,
  envelope: Uint8Array,
): Result<Uint8Array> {
  if (!(recipientEphemeralPrivateKey instanceof Uint8Array) || recipientEphemeralPrivateKey.length !== 32) {
    throw new UsageError('recipientEphemeralPrivateKey must be 32 bytes');
  }
  if (!(envelope instanceof Uint8Array)) throw new UsageError('envelope must be a Uint8Array');
  const ciphertextLength = envelope.length - ENVELOPE_HEADER_LENGTH - ENVELOPE_MAC_LENGTH;
  // WP-LINK-01: the layout first: header, whole blocks, MAC.
  if (envelope.length < MIN_PROVISION_ENVELOPE_LENGTH || ciphertextLength % AES_BLOCK !== 0) {
    return malformed('provision envelope has an impossible length', {
      length: envelope.length,
      minimum: MIN_PROVISION_ENVELOPE_LENGTH,
    });
  }
  if (envelope[0] !== PROVISIONING_FORMAT_VERSION) {
    return malformed('unknown provision envelope version', { version: envelope[0] ?? -1 });
  }
  const senderKey = decodeEcPublicKey(envelope.subarray(1, 1 + EC_PUBLIC_KEY_LENGTH));
  if (!senderKey.ok) return malformed('provision envelope sender key is not valid');
  const shared = dh(c, recipientEphemeralPrivateKey, senderKey.value);
  if (!shared.ok) return shared;
  const { aesKey, macKey } = envelopeKeys(c, shared.value);
  const macStart = envelope.length - ENVELOPE_MAC_LENGTH;
  const expected = c.hmacSha256(macKey, envelope.subarray(0, macStart));
  // WP-LINK-05: constant-time MAC check over the bytes as received, before any decryption.
  if (!equalBytes(expected, envelope.subarray(macStart))) {
    return reject('PROVISIONING_MAC_INVALID', 'provision envelope MAC does not verify');
  }
  const iv = envelope.subarray(1 + EC_PUBLIC_KEY_LENGTH, ENVELOPE_HEADER_LENGTH);
  const plaintext = c.aes256CbcDecrypt(aesKey, iv, envelope.subarray(ENVELOPE_HEADER_LENGTH, macStart));
  if (plaintext === null) return malformed('provision envelope padding is invalid', { ciphertextLength });
  return accept(plaintext);
}
