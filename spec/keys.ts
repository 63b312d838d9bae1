/**
 * Key pairs, key encodings and the validated Diffie–Hellman (WP-KEYS-01 … WP-KEYS-06, WP-KEYS-09).
 * References: RFC 7748 §5 (X25519, clamping) and §6.1, libsignal's encodings
 * (rust/core/src/curve.rs, read for facts only), CRYSTALS-Kyber v3.02 / FIPS 203 §7.2 for KEM keys.
 *
 * ```text
 * EC public key   0x05 ‖ u[32]          u little-endian, canonical (u < 2^255 − 19), not low order
 * EC private key  k[32]                 stored raw, clamped on use (RFC 7748 §5)
 * KEM public key  0x08 ‖ ek[1568]       round-3 Kyber-1024
 * KEM secret key  0x08 ‖ dk[3168]
 * KEM ciphertext  0x08 ‖ ct[1568]
 * ```
 *
 * Decoders return a fresh copy on success, so stored state never aliases a caller's buffer.
 * @module
 */
import { concatBytes, copyBytes, equalBytes, isAllZero, utf8 } from './bytes.js';
import {
  EC_KEY_TYPE_DJB,
  EC_PUBLIC_KEY_LENGTH,
  KEM_KEY_TYPE_KYBER1024,
  KYBER1024_CIPHERTEXT_LENGTH,
  KYBER1024_PUBLIC_KEY_LENGTH,
  KYBER1024_SECRET_KEY_LENGTH,
  X25519_KEY_LENGTH,
} from './constants.js';
import { kemPublicKeyCoefficientsReduced } from './crypto/kyber.js';
import type { CryptoProvider } from './crypto/provider.js';
import { accept, reject, UsageError, type Result } from './errors.js';
import { fromHex, toHex } from './hex.js';
import type { Rng } from './rng.js';

/** An X25519 key pair: the 33-byte encoded public key and the 32 raw private key bytes. */
export interface KeyPair {
  /** `0x05 ‖ u` (33 bytes). */
  readonly publicKey: Uint8Array;
  /** 32 raw bytes, clamped when used (WP-KEYS-06). */
  readonly privateKey: Uint8Array;
}

/** The field prime p = 2^255 − 19, little-endian. */
const P_LE = fromHex('edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f');

/**
 * WP-KEYS-03: the canonical u-coordinates (u < p) of the Curve25519 points of order 1, 2, 4 and 8
 * and of the low-order points of its twist (RFC 7748 §6.1 note; cr.yp.to/ecdh.html#validate):
 * 0, 1, 325606250916557431795983626356110631294008115727848805560023387167927233504,
 * 39382357235489614581723060781553021112529911719440698176882885853963445705823 and p − 1.
 * Their non-canonical aliases (p, p + 1, and any value with the top bit set) are refused earlier as
 * non-canonical (WP-KEYS-02), so this list is complete for the values that reach it.
 */
const LOW_ORDER_U: readonly Uint8Array[] = Object.freeze(
  [
    '0000000000000000000000000000000000000000000000000000000000000000',
    '0100000000000000000000000000000000000000000000000000000000000000',
    'e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800',
    '5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157',
    'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
  ].map(fromHex),
);

/** Little-endian `a < b` for 32-byte values (public data). */
function lessThanLE(a: Uint8Array, b: Uint8Array): boolean {
  for (let i = 31; i >= 0; i--) {
    const x = a[i] ?? 0;
    const y = b[i] ?? 0;
    if (x !== y) return x < y;
  }
  return false;
}

/** Throws {@link UsageError} unless `privateKey` is 32 bytes (a local key: misuse, not peer input). */
function requirePrivateKey(privateKey: Uint8Array): void {
  if (!(privateKey instanceof Uint8Array) || privateKey.length !== X25519_KEY_LENGTH) {
    throw new UsageError(`privateKey must be ${X25519_KEY_LENGTH} bytes`);
  }
}

/** Encodes a raw 32-byte u-coordinate as `0x05 ‖ u` (WP-KEYS-01). Throws {@link UsageError} on a wrong length. */
export function encodeEcPublicKey(u: Uint8Array): Uint8Array {
  if (!(u instanceof Uint8Array) || u.length !== X25519_KEY_LENGTH) {
    throw new UsageError(`u must be ${X25519_KEY_LENGTH} bytes`);
  }
  const out = new Uint8Array(EC_PUBLIC_KEY_LENGTH);
  out[0] = EC_KEY_TYPE_DJB;
  out.set(u, 1);
  return out;
}

/**
 * Decodes and validates a peer's 33-byte X25519 public key; on success returns a fresh copy of the
 * 33-byte encoding. Rejects, in this order: a wrong length (`KEY_BAD_LENGTH`, WP-KEYS-01), a type
 * byte other than 0x05 (`KEY_BAD_TYPE`, WP-KEYS-01), a non-canonical u (`KEY_NON_CANONICAL`,
 * WP-KEYS-02), a low-order u (`KEY_LOW_ORDER`, WP-KEYS-03).
 */
export function decodeEcPublicKey(bytes: Uint8Array): Result<Uint8Array> {
  if (!(bytes instanceof Uint8Array)) throw new UsageError('public key must be a Uint8Array');
  // WP-KEYS-01: exactly 33 bytes.
  if (bytes.length !== EC_PUBLIC_KEY_LENGTH) {
    return reject('KEY_BAD_LENGTH', 'EC public key has the wrong length', {
      expected: EC_PUBLIC_KEY_LENGTH,
      got: bytes.length,
    });
  }
  // WP-KEYS-01: type byte 0x05 (DJB).
  if (bytes[0] !== EC_KEY_TYPE_DJB) {
    return reject('KEY_BAD_TYPE', 'EC public key has an unknown type byte', {
      expected: EC_KEY_TYPE_DJB,
      got: bytes[0] ?? -1,
    });
  }
  const u = bytes.subarray(1);
  // WP-KEYS-02: u must be canonical: top bit clear and u < p.
  if (((u[31] ?? 0) & 0x80) !== 0 || !lessThanLE(u, P_LE)) {
    return reject('KEY_NON_CANONICAL', 'EC public key u-coordinate is not canonical (u >= 2^255 - 19)');
  }
  // WP-KEYS-03: refuse the low-order points (their aliases were refused as non-canonical above).
  if (LOW_ORDER_U.some((lowOrder) => equalBytes(lowOrder, u))) {
    return reject('KEY_LOW_ORDER', 'EC public key is a low-order point');
  }
  return accept(copyBytes(bytes));
}

/** The 33-byte encoded public key of a raw 32-byte private key (clamped on use, WP-KEYS-06). */
export function publicKeyFromPrivate(c: CryptoProvider, privateKey: Uint8Array): Uint8Array {
  requirePrivateKey(privateKey);
  return encodeEcPublicKey(c.x25519PublicKey(privateKey));
}

/**
 * Generates an X25519 key pair from exactly one draw of 32 bytes (WP-KEYS-09), stored raw and
 * clamped on use, as libsignal does (WP-KEYS-06).
 */
export function generateKeyPair(c: CryptoProvider, rng: Rng): KeyPair {
  // Copied so the stored key never aliases a buffer the Rng might reuse.
  const privateKey = copyBytes(rng.randomBytes(X25519_KEY_LENGTH));
  return { publicKey: publicKeyFromPrivate(c, privateKey), privateKey };
}

/**
 * X25519 between our raw private key and a validated 33-byte public key (decode it first with
 * {@link decodeEcPublicKey}). Rejects an all-zero output (`DH_ZERO_OUTPUT`, WP-KEYS-04).
 */
export function dh(
  c: CryptoProvider,
  ourPrivateKey: Uint8Array,
  theirPublicKey: Uint8Array,
): Result<Uint8Array> {
  requirePrivateKey(ourPrivateKey);
  if (
    !(theirPublicKey instanceof Uint8Array) ||
    theirPublicKey.length !== EC_PUBLIC_KEY_LENGTH ||
    theirPublicKey[0] !== EC_KEY_TYPE_DJB
  ) {
    throw new UsageError('theirPublicKey must be a decoded 33-byte 0x05 key');
  }
  const shared = c.x25519(ourPrivateKey, theirPublicKey.subarray(1));
  // WP-KEYS-04: an all-zero shared secret means a low-order input; refuse it (RFC 7748 §6.1).
  if (isAllZero(shared)) return reject('DH_ZERO_OUTPUT', 'X25519 output is all zero');
  return accept(shared);
}

/** Shared WP-KEYS-05 check: `0x08 ‖ rawLength bytes`, returning a fresh copy. */
function decodeKem(bytes: Uint8Array, what: string, rawLength: number): Result<Uint8Array> {
  if (!(bytes instanceof Uint8Array)) throw new UsageError(`${what} must be a Uint8Array`);
  // WP-KEYS-05: exact length, type byte included.
  if (bytes.length !== rawLength + 1) {
    return reject('KEM_BAD_LENGTH', `${what} has the wrong length`, {
      expected: rawLength + 1,
      got: bytes.length,
    });
  }
  // WP-KEYS-05: type byte 0x08 (round-3 Kyber-1024); ML-KEM-1024's 0x0A is refused, as by libsignal.
  if (bytes[0] !== KEM_KEY_TYPE_KYBER1024) {
    return reject('KEM_BAD_TYPE', `${what} has an unknown type byte`, {
      expected: KEM_KEY_TYPE_KYBER1024,
      got: bytes[0] ?? -1,
    });
  }
  return accept(copyBytes(bytes));
}

/**
 * Decodes a peer's Kyber-1024 public key `0x08 ‖ 1568` (WP-KEYS-05): `KEM_BAD_LENGTH`,
 * `KEM_BAD_TYPE`, and `KEM_NON_CANONICAL` for a key with a coefficient ≥ q (FIPS 203 §7.2), which no
 * honest key generator produces and which noble cannot encapsulate to.
 */
export function decodeKemPublicKey(bytes: Uint8Array): Result<Uint8Array> {
  const decoded = decodeKem(bytes, 'KEM public key', KYBER1024_PUBLIC_KEY_LENGTH);
  if (!decoded.ok) return decoded;
  // WP-KEYS-05 (FIPS 203 §7.2 encapsulation-key check): every coefficient of t̂ below q.
  if (!kemPublicKeyCoefficientsReduced(decoded.value.subarray(1))) {
    return reject('KEM_NON_CANONICAL', 'KEM public key has a coefficient that is not reduced mod q');
  }
  return decoded;
}

/** Decodes a peer's Kyber-1024 ciphertext `0x08 ‖ 1568` (WP-KEYS-05: `KEM_BAD_LENGTH`, `KEM_BAD_TYPE`). */
export function decodeKemCiphertext(bytes: Uint8Array): Result<Uint8Array> {
  return decodeKem(bytes, 'KEM ciphertext', KYBER1024_CIPHERTEXT_LENGTH);
}

/** Decodes a stored Kyber-1024 secret key `0x08 ‖ 3168` (WP-KEYS-05: `KEM_BAD_LENGTH`, `KEM_BAD_TYPE`). */
export function decodeKemSecretKey(bytes: Uint8Array): Result<Uint8Array> {
  return decodeKem(bytes, 'KEM secret key', KYBER1024_SECRET_KEY_LENGTH);
}

/** Domain label of {@link fingerprint}. */
const FINGERPRINT_LABEL = utf8('lockstep-fp-v1');
/** Bytes of the SHA-256 digest kept in a fingerprint. */
const FINGERPRINT_BYTES = 8;

/**
 * A short, non-reversible name for key material in traces and abstract state (never the key
 * itself): the first 8 bytes of `SHA-256("lockstep-fp-v1" ‖ bytes)` as 16 lowercase hex digits.
 */
export function fingerprint(c: CryptoProvider, bytes: Uint8Array): string {
  if (!(bytes instanceof Uint8Array)) throw new UsageError('fingerprint input must be a Uint8Array');
  const digest = c.sha256(concatBytes(FINGERPRINT_LABEL, bytes));
  return toHex(digest.subarray(0, FINGERPRINT_BYTES));
}
