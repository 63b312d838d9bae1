/**
 * The synchronous primitive interface behind every named crypto function in spec/. Two providers
 * implement it: `noble` (pure JavaScript, the reference, runs in browsers) and `node`
 * (node:crypto where Node has the primitive). Both must pass every vector and agree on random
 * inputs (spec/crypto/providers.test.ts).
 *
 * Providers are deliberately thin: they compute primitives and make no protocol decisions.
 * Validation (lengths, key types, low-order points, all-zero DH output) lives in the spec functions
 * that call them.
 * @module
 */
import type { MlKem1024, Sha3Functions } from './ml-kem.js';

/** Primitive operations, all synchronous, all on raw bytes. */
export interface CryptoProvider {
  /** `'noble'` or `'node'`; appears in bench output, never in a trace. */
  readonly name: 'noble' | 'node';
  /** X25519 public key (raw 32-byte u-coordinate) of a 32-byte private key (clamped on use, RFC 7748 §5). */
  x25519PublicKey(privateKey: Uint8Array): Uint8Array;
  /** X25519(k, u) per RFC 7748 §5; returns the raw 32-byte output, all-zero output included. */
  x25519(privateKey: Uint8Array, publicKeyU: Uint8Array): Uint8Array;
  /** SHA-256 (FIPS 180-4). */
  sha256(data: Uint8Array): Uint8Array;
  /** SHA-512 (FIPS 180-4). */
  sha512(data: Uint8Array): Uint8Array;
  /** HMAC-SHA256 (RFC 2104, RFC 4231). */
  hmacSha256(key: Uint8Array, data: Uint8Array): Uint8Array;
  /**
   * HMAC-SHA256 (RFC 2104) over the concatenation `parts[0] ‖ parts[1] ‖ …`, streamed part by part
   * so that no concatenated copy is made; equal to `hmacSha256(key, concatBytes(...parts))`. The
   * message MAC (WP-DR-05) uses it to cover `IK_s ‖ IK_r ‖ macInput` without copying the body.
   */
  hmacSha256Parts(key: Uint8Array, parts: readonly Uint8Array[]): Uint8Array;
  /** HKDF-SHA256 extract-and-expand (RFC 5869); an empty salt means HashLen zero bytes. */
  hkdfSha256(ikm: Uint8Array, salt: Uint8Array, info: Uint8Array, length: number): Uint8Array;
  /** AES-256-CBC with PKCS#7 padding (NIST SP 800-38A). */
  aes256CbcEncrypt(key: Uint8Array, iv: Uint8Array, plaintext: Uint8Array): Uint8Array;
  /** AES-256-CBC decryption; `null` when the ciphertext length or the PKCS#7 padding is invalid. */
  aes256CbcDecrypt(key: Uint8Array, iv: Uint8Array, ciphertext: Uint8Array): Uint8Array | null;
  /**
   * Ed25519 verification (RFC 8032 §5.1.7) with the strict rule Lockstep adopts for both providers:
   * `S` must be canonical (`S < L`). Returns false for any malformed input; never throws.
   */
  ed25519Verify(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean;
  /** SHA-3 and SHAKE (FIPS 202): the hashes of round-3 Kyber's wrapper (WP-KEYS-08) and of ML-KEM. */
  readonly sha3: Sha3Functions;
  /**
   * ML-KEM-1024's deterministic internal algorithms (FIPS 203) on raw encodings, beneath round-3
   * Kyber (spec/crypto/kyber.ts). Both providers give byte-identical results.
   */
  readonly mlKem1024: MlKem1024;
}
