/**
 * The reference {@link CryptoProvider}: pure JavaScript on the audited noble libraries, with no
 * `node:` imports, so it runs unchanged in browsers.
 *
 * - X25519: RFC 7748 §5 (`@noble/curves`); the private key is clamped on use (WP-KEYS-06).
 * - SHA-256 / SHA-512: FIPS 180-4; HMAC-SHA256: RFC 2104; HKDF-SHA256: RFC 5869 (`@noble/hashes`).
 * - AES-256-CBC with PKCS#7 padding: NIST SP 800-38A §6.2 (`@noble/ciphers`).
 * - Ed25519 verification: RFC 8032 §5.1.7 under the strict rule of `./ed25519-strict.ts`
 *   (WP-KEYS-07), written out here as OpenSSL computes it, so that this provider and the `node`
 *   provider accept exactly the same signatures.
 *
 * Edge case: noble's X25519 throws on a low-order `u` (before running the ladder) where RFC 7748
 * returns the all-zero output. Lockstep's providers return the raw output and leave the decision
 * to spec/keys.ts (WP-KEYS-04), so {@link nobleProvider}.x25519 maps that refusal to 32 zero bytes:
 * a clamped scalar is a multiple of the cofactor 8, so every low-order input (on the curve or its
 * twist, canonical or not) yields the all-zero output under RFC 7748.
 * @module
 */
import { cbc } from '@noble/ciphers/aes.js';
import { ed25519, x25519 } from '@noble/curves/ed25519.js';
import { bytesToNumberLE } from '@noble/curves/utils.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { hmac } from '@noble/hashes/hmac.js';
import { sha256, sha512 } from '@noble/hashes/sha2.js';
import { concatBytes, equalBytes } from '../bytes.js';
import { X25519_KEY_LENGTH } from '../constants.js';
import { requireByteParts, requireBytes, requireHkdfArguments } from './checks.js';
import { passesStrictPrechecks } from './ed25519-strict.js';
import { nobleMlKem1024, nobleSha3 } from './ml-kem-noble.js';
import type { CryptoProvider } from './provider.js';

/** AES-256 key length (FIPS 197). */
const AES_256_KEY_LENGTH = 32;
/** AES block and CBC IV length (NIST SP 800-38A). */
const AES_BLOCK_LENGTH = 16;

const Point = ed25519.Point;

/**
 * Ed25519 verification under the strict rule (`./ed25519-strict.ts`): prechecks 1–4, then the
 * cofactorless equation compared byte-for-byte, `encode([S]B − [k]A) = R` (RFC 8032 §5.1.7 allows
 * this form; OpenSSL uses it). Returns false on any malformed input; never throws.
 */
function ed25519VerifyStrict(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  if (!(message instanceof Uint8Array)) return false;
  if (!passesStrictPrechecks(publicKey, signature)) return false;
  try {
    // Canonical y was checked above; strict decoding also rejects a y with no matching x.
    const pointA = Point.fromBytes(publicKey, false);
    const encodedR = signature.subarray(0, 32);
    const s = bytesToNumberLE(signature.subarray(32, 64));
    // RFC 8032 §5.1.7 step 2: k = SHA-512(dom2(F, C) ‖ R ‖ A ‖ PH(M)), with empty dom2 for Ed25519.
    const k = Point.Fn.create(bytesToNumberLE(sha512(concatBytes(encodedR, publicKey, message))));
    const checkR = Point.BASE.multiplyUnsafe(s).subtract(pointA.multiplyUnsafe(k));
    return equalBytes(checkR.toBytes(), encodedR);
  } catch {
    return false;
  }
}

/** Pure-JavaScript provider on `@noble/curves`, `@noble/hashes` and `@noble/ciphers`. */
export const nobleProvider: CryptoProvider = Object.freeze({
  name: 'noble',
  sha3: nobleSha3,
  mlKem1024: nobleMlKem1024,

  x25519PublicKey(privateKey: Uint8Array): Uint8Array {
    requireBytes('privateKey', privateKey, X25519_KEY_LENGTH);
    return x25519.getPublicKey(privateKey);
  },

  x25519(privateKey: Uint8Array, publicKeyU: Uint8Array): Uint8Array {
    requireBytes('privateKey', privateKey, X25519_KEY_LENGTH);
    requireBytes('publicKeyU', publicKeyU, X25519_KEY_LENGTH);
    try {
      return x25519.getSharedSecret(privateKey, publicKeyU);
    } catch {
      // Lengths are checked above, so noble refused a low-order u: RFC 7748 gives all zeros
      // (module doc). WP-KEYS-04 is decided by spec/keys.ts, not here.
      return new Uint8Array(X25519_KEY_LENGTH);
    }
  },

  sha256(data: Uint8Array): Uint8Array {
    requireBytes('data', data);
    return sha256(data);
  },

  sha512(data: Uint8Array): Uint8Array {
    requireBytes('data', data);
    return sha512(data);
  },

  hmacSha256(key: Uint8Array, data: Uint8Array): Uint8Array {
    requireBytes('key', key);
    requireBytes('data', data);
    return hmac(sha256, key, data);
  },

  hmacSha256Parts(key: Uint8Array, parts: readonly Uint8Array[]): Uint8Array {
    requireBytes('key', key);
    requireByteParts('parts', parts);
    const mac = hmac.create(sha256, key);
    for (const part of parts) mac.update(part);
    return mac.digest();
  },

  hkdfSha256(ikm: Uint8Array, salt: Uint8Array, info: Uint8Array, length: number): Uint8Array {
    requireHkdfArguments(ikm, salt, info, length);
    // RFC 5869 §2.2: an empty salt acts as HashLen zero bytes (HMAC pads either to the same block).
    return hkdf(sha256, ikm, salt, info, length);
  },

  aes256CbcEncrypt(key: Uint8Array, iv: Uint8Array, plaintext: Uint8Array): Uint8Array {
    requireBytes('key', key, AES_256_KEY_LENGTH);
    requireBytes('iv', iv, AES_BLOCK_LENGTH);
    requireBytes('plaintext', plaintext);
    return cbc(key, iv).encrypt(plaintext);
  },

  aes256CbcDecrypt(key: Uint8Array, iv: Uint8Array, ciphertext: Uint8Array): Uint8Array | null {
    requireBytes('key', key, AES_256_KEY_LENGTH);
    requireBytes('iv', iv, AES_BLOCK_LENGTH);
    requireBytes('ciphertext', ciphertext);
    try {
      // Throws on a length that is zero or not a multiple of 16, and on invalid PKCS#7 padding.
      return cbc(key, iv).decrypt(ciphertext);
    } catch {
      return null;
    }
  },

  ed25519Verify: ed25519VerifyStrict,
} satisfies CryptoProvider);
