/**
 * Message body encryption and the message MAC of the Double Ratchet (WP-DR-04, WP-DR-05).
 * References: NIST SP 800-38A §6.2 (CBC), RFC 5652 §6.3 (PKCS#7 padding), RFC 2104 (HMAC), as
 * used by libsignal (rust/protocol/src/session_cipher.rs and protocol.rs, read for facts only):
 *
 * ```text
 * body = AES-256-CBC-PKCS7(cipher_key, iv, plaintext)
 * mac  = HMAC-SHA256(mac_key, IK_sender[33] ‖ IK_receiver[33] ‖ version ‖ protobuf)[0..8]
 * ```
 * @module
 */
import { equalBytes } from './bytes.js';
import { EC_PUBLIC_KEY_LENGTH, MAC_LENGTH } from './constants.js';
import type { CryptoProvider } from './crypto/provider.js';
import { accept, reject, UsageError, type Result } from './errors.js';
import type { MessageKeys } from './kdf.js';

/** Throws {@link UsageError} unless `value` is a `Uint8Array` (of `length` bytes, when given). */
function requireBytes(name: string, value: Uint8Array, length?: number): void {
  if (!(value instanceof Uint8Array)) throw new UsageError(`${name} must be a Uint8Array`);
  if (length !== undefined && value.length !== length)
    throw new UsageError(`${name} must be ${length} bytes`);
}

/** WP-DR-04: encrypts a message body with AES-256-CBC and PKCS#7 padding under the message keys. */
export function encryptBody(c: CryptoProvider, keys: MessageKeys, plaintext: Uint8Array): Uint8Array {
  requireBytes('plaintext', plaintext);
  return c.aes256CbcEncrypt(keys.cipherKey, keys.iv, plaintext);
}

/**
 * WP-DR-04: decrypts a message body; a length that is not a positive multiple of 16 or invalid
 * PKCS#7 padding is rejected (`BODY_DECRYPT_FAILED`). Details carry the length only.
 */
export function decryptBody(
  c: CryptoProvider,
  keys: MessageKeys,
  ciphertext: Uint8Array,
): Result<Uint8Array> {
  requireBytes('ciphertext', ciphertext);
  const plaintext = c.aes256CbcDecrypt(keys.cipherKey, keys.iv, ciphertext);
  // WP-DR-04: bad length or bad padding is a rejection, never an exception.
  if (plaintext === null) {
    return reject('BODY_DECRYPT_FAILED', 'message body did not decrypt', {
      ciphertextLength: ciphertext.length,
    });
  }
  return accept(plaintext);
}

/**
 * WP-DR-05: the 8-byte message MAC, the first 8 bytes of
 * `HMAC-SHA256(mac_key, IK_sender ‖ IK_receiver ‖ macInput)`, where `macInput` is the version byte
 * followed by the serialized protobuf, exactly as sent or received.
 */
export function computeMessageMac(
  c: CryptoProvider,
  macKey: Uint8Array,
  senderIdentityKey: Uint8Array,
  receiverIdentityKey: Uint8Array,
  macInput: Uint8Array,
): Uint8Array {
  requireBytes('macKey', macKey, 32);
  requireBytes('senderIdentityKey', senderIdentityKey, EC_PUBLIC_KEY_LENGTH);
  requireBytes('receiverIdentityKey', receiverIdentityKey, EC_PUBLIC_KEY_LENGTH);
  requireBytes('macInput', macInput);
  // WP-DR-05: sender identity, then receiver identity, then version ‖ protobuf; truncate to 8 bytes.
  // The three parts are streamed into the HMAC rather than concatenated: the body can be large.
  const full = c.hmacSha256Parts(macKey, [senderIdentityKey, receiverIdentityKey, macInput]);
  return full.slice(0, MAC_LENGTH);
}

/**
 * WP-DR-05: checks a received 8-byte MAC in constant time (no early exit on the first differing
 * byte). A MAC of the wrong length is simply false.
 */
export function verifyMessageMac(
  c: CryptoProvider,
  macKey: Uint8Array,
  senderIdentityKey: Uint8Array,
  receiverIdentityKey: Uint8Array,
  macInput: Uint8Array,
  mac: Uint8Array,
): boolean {
  requireBytes('mac', mac);
  const expected = computeMessageMac(c, macKey, senderIdentityKey, receiverIdentityKey, macInput);
  // WP-DR-05: constant-time comparison.
  return equalBytes(expected, mac);
}
