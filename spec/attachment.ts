/**
 * Attachments: encrypted once under a fresh key, uploaded once, fetched by every device
 * (WP-ATT-01 … WP-ATT-06). The design follows the shape of Signal's attachment encryption
 * (AES-256-CBC + HMAC-SHA256 under a random 64-byte key, a SHA-256 digest of the whole blob carried
 * in the pointer) as inspiration; the bytes are Lockstep's own. The server stores the blob under
 * `blobId = hex(digest)` and never learns the key; the pointer travels inside the ratchet sessions
 * (spec/payload.ts).
 *
 * ```text
 * draws     key (64) = aesKey (32) ‖ macKey (32), then iv (16)       spec/draws.ts encryptAttachment
 * blob      iv (16) ‖ ct = AES-256-CBC-PKCS7(aesKey, iv, plaintext) ‖ mac = HMAC-SHA256(macKey, iv ‖ ct) (32)
 * digest    SHA-256(blob)                           blobId = lowercase hex of digest (64 characters)
 * pointer   { blobId, key (64), digest (32), size = plaintext length, contentType }
 * ```
 *
 * Decryption checks, in order: the digest of the blob as downloaded, in constant time (WP-ATT-02);
 * the layout (WP-ATT-03); the MAC, in constant time, before decrypting (WP-ATT-04); the padding
 * (WP-ATT-03); the plaintext length against the pointer (WP-ATT-05). The blob is not padded beyond
 * PKCS#7, so the server learns each attachment's size to within 16 bytes.
 * @module
 */
import { concatBytes, equalBytes } from './bytes.js';
import { MAX_ATTACHMENT_SIZE, MAX_CONTENT_TYPE_LENGTH } from './constants.js';
import type { CryptoProvider } from './crypto/provider.js';
import { accept, reject, UsageError, type Result } from './errors.js';
import { toHex } from './hex.js';
import type { Rng } from './rng.js';

/** Everything a device needs to fetch and decrypt one attachment. */
export interface AttachmentPointer {
  /** 64 lowercase hex characters: hex of {@link AttachmentPointer.digest}. */
  readonly blobId: string;
  /** 64 bytes: AES-256 key ‖ HMAC-SHA256 key. */
  readonly key: Uint8Array;
  /** SHA-256 of the whole blob, 32 bytes. */
  readonly digest: Uint8Array;
  /** Plaintext length in bytes, 0..MAX_ATTACHMENT_SIZE. */
  readonly size: number;
  /** A MIME type such as `image/jpeg` (1..255 printable ASCII characters). */
  readonly contentType: string;
}

/** WP-ATT-01: bytes of an attachment key (AES-256 ‖ HMAC-SHA256). */
export const ATTACHMENT_KEY_LENGTH = 64;
/** WP-ATT-01: bytes of an attachment digest (SHA-256). */
export const ATTACHMENT_DIGEST_LENGTH = 32;
/** WP-ATT-01: IV length at the start of a blob. */
const IV_LENGTH = 16;
/** WP-ATT-01: MAC length at the end of a blob. */
const MAC_LENGTH = 32;
/** AES block size. */
const AES_BLOCK = 16;
/** WP-ATT-03: shortest blob: IV, one ciphertext block, MAC. */
export const MIN_ATTACHMENT_BLOB_LENGTH = IV_LENGTH + AES_BLOCK + MAC_LENGTH;

const BLOB_ID = /^[0-9a-f]{64}$/;
const CONTENT_TYPE = /^[\x20-\x7e]+$/;

/** WP-ATT-06: true for a content type of 1..255 printable ASCII characters. */
export function isValidContentType(contentType: unknown): contentType is string {
  return (
    typeof contentType === 'string' &&
    contentType.length <= MAX_CONTENT_TYPE_LENGTH &&
    CONTENT_TYPE.test(contentType)
  );
}

/** WP-ATT-06: the reason a pointer is invalid, or `null` when it is valid. */
export function attachmentPointerProblem(pointer: AttachmentPointer): string | null {
  if (typeof pointer !== 'object' || pointer === null) return 'pointer must be an object';
  if (!(pointer.key instanceof Uint8Array) || pointer.key.length !== ATTACHMENT_KEY_LENGTH) {
    return `key must be ${ATTACHMENT_KEY_LENGTH} bytes`;
  }
  if (!(pointer.digest instanceof Uint8Array) || pointer.digest.length !== ATTACHMENT_DIGEST_LENGTH) {
    return `digest must be ${ATTACHMENT_DIGEST_LENGTH} bytes`;
  }
  if (typeof pointer.blobId !== 'string' || !BLOB_ID.test(pointer.blobId)) {
    return 'blobId must be 64 lowercase hex characters';
  }
  if (pointer.blobId !== toHex(pointer.digest)) return 'blobId must be the hex of the digest';
  const size = pointer.size;
  if (typeof size !== 'number' || !Number.isInteger(size) || size < 0 || size > MAX_ATTACHMENT_SIZE) {
    return `size must be an integer in 0..${MAX_ATTACHMENT_SIZE}`;
  }
  if (!isValidContentType(pointer.contentType))
    return 'contentType must be 1..255 printable ASCII characters';
  return null;
}

/**
 * Encrypts an attachment under a fresh key (WP-ATT-01). Draws the 64-byte key, then the 16-byte IV.
 * @throws UsageError for a plaintext above `MAX_ATTACHMENT_SIZE` or an invalid content type.
 */
export function encryptAttachment(
  c: CryptoProvider,
  rng: Rng,
  plaintext: Uint8Array,
  contentType: string,
): { readonly blob: Uint8Array; readonly pointer: AttachmentPointer } {
  if (!(plaintext instanceof Uint8Array)) throw new UsageError('plaintext must be a Uint8Array');
  // WP-ATT-01: the size limit is the sender's to respect.
  if (plaintext.length > MAX_ATTACHMENT_SIZE) {
    throw new UsageError(`attachment of ${plaintext.length} bytes exceeds ${MAX_ATTACHMENT_SIZE}`);
  }
  if (!isValidContentType(contentType)) throw new UsageError('contentType must be 1..255 printable ASCII');
  // WP-ATT-01: draw order: key, then IV (spec/draws.ts encryptAttachment).
  const key = Uint8Array.from(rng.randomBytes(ATTACHMENT_KEY_LENGTH));
  const iv = Uint8Array.from(rng.randomBytes(IV_LENGTH));
  const ivAndCiphertext = concatBytes(iv, c.aes256CbcEncrypt(key.subarray(0, 32), iv, plaintext));
  const blob = concatBytes(ivAndCiphertext, c.hmacSha256(key.subarray(32, 64), ivAndCiphertext));
  const digest = c.sha256(blob);
  return {
    blob,
    pointer: { blobId: toHex(digest), key, digest, size: plaintext.length, contentType },
  };
}

/**
 * Decrypts a downloaded blob with its pointer. Rejects, in this order: a blob whose SHA-256 is not
 * the pointer's digest (`ATTACHMENT_DIGEST_MISMATCH`, WP-ATT-02, constant time); a blob too short or
 * not whole AES blocks (`ATTACHMENT_MALFORMED`, WP-ATT-03); a MAC that does not verify
 * (`ATTACHMENT_MAC_INVALID`, WP-ATT-04, constant time, before decryption); invalid PKCS#7 padding
 * (`ATTACHMENT_MALFORMED`, WP-ATT-03); a plaintext whose length is not the pointer's size
 * (`ATTACHMENT_SIZE_MISMATCH`, WP-ATT-05). Never throws on any blob.
 * @throws UsageError when the pointer itself is invalid (it comes from a decoded payload).
 */
export function decryptAttachment(
  c: CryptoProvider,
  pointer: AttachmentPointer,
  blob: Uint8Array,
): Result<Uint8Array> {
  const problem = attachmentPointerProblem(pointer);
  if (problem !== null) throw new UsageError(`invalid attachment pointer: ${problem}`);
  if (!(blob instanceof Uint8Array)) throw new UsageError('blob must be a Uint8Array');
  // WP-ATT-02: the digest binds the blob to the pointer; checked first, without an early exit.
  if (!equalBytes(c.sha256(blob), pointer.digest)) {
    return reject('ATTACHMENT_DIGEST_MISMATCH', 'blob does not match the pointer digest', {
      length: blob.length,
    });
  }
  // WP-ATT-03: iv ‖ at least one whole block ‖ mac.
  const ciphertextLength = blob.length - IV_LENGTH - MAC_LENGTH;
  if (blob.length < MIN_ATTACHMENT_BLOB_LENGTH || ciphertextLength % AES_BLOCK !== 0) {
    return reject('ATTACHMENT_MALFORMED', 'blob has an impossible length', {
      length: blob.length,
      minimum: MIN_ATTACHMENT_BLOB_LENGTH,
    });
  }
  const macStart = blob.length - MAC_LENGTH;
  const expected = c.hmacSha256(pointer.key.subarray(32, 64), blob.subarray(0, macStart));
  // WP-ATT-04: constant-time MAC check before decrypting anything.
  if (!equalBytes(expected, blob.subarray(macStart))) {
    return reject('ATTACHMENT_MAC_INVALID', 'attachment MAC does not verify');
  }
  const plaintext = c.aes256CbcDecrypt(
    pointer.key.subarray(0, 32),
    blob.subarray(0, IV_LENGTH),
    blob.subarray(IV_LENGTH, macStart),
  );
  // WP-ATT-03: bad padding under a valid MAC means a broken sender; still a rejection.
  if (plaintext === null)
    return reject('ATTACHMENT_MALFORMED', 'attachment padding is invalid', { ciphertextLength });
  // WP-ATT-05: the plaintext must be exactly the size the sender announced.
  if (plaintext.length !== pointer.size) {
    return reject('ATTACHMENT_SIZE_MISMATCH', 'attachment size differs from the pointer', {
      expected: pointer.size,
      got: plaintext.length,
    });
  }
  return accept(plaintext);
}
