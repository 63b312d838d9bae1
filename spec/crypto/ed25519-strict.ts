/**
 * The Ed25519 acceptance rule shared by both providers (WP-KEYS-07), so that `noble` and `node`
 * accept exactly the same signatures.
 *
 * RFC 8032 §5.1.7 leaves implementations a choice (cofactored or cofactorless equation; what to do
 * with non-canonical or small-order keys), and real libraries differ. Lockstep fixes one rule:
 *
 * 1. the public key is 32 bytes and the signature 64 bytes;
 * 2. `S < L` (RFC 8032 §5.1.7 step 1; libsignal only checks the top three bits, see WHITEPAPER.md);
 * 3. the public key's `y` is canonical (`y < p`, RFC 8032 §5.1.3 step 1);
 * 4. the public key is not one of the eight small-order points (any encoding with `y < p`);
 * 5. the cofactorless equation holds byte-for-byte: `encode([S]B − [k]A) = R_bytes` with
 *    `k = SHA-512(R_bytes ‖ A_bytes ‖ M) mod L` — which is what OpenSSL computes, and which rejects
 *    any non-canonical or off-curve `R` because a re-encoded point is always canonical.
 *
 * This module checks rules 1–4, which are pure byte comparisons; each provider then checks rule 5
 * (OpenSSL in `node`, the same equation written out with noble's point arithmetic in `noble`).
 * Rule 2 is also enforced inside both libraries today (OpenSSL's `ossl_ed25519_verify`, noble's
 * `multiplyUnsafe` range check); checking it here keeps the rule explicit and independent of
 * library versions.
 * @module
 */
import { fromHex } from '../hex.js';

/** Ed25519 public key length (RFC 8032 §5.1.5). */
export const ED25519_PUBLIC_KEY_LENGTH = 32;
/** Ed25519 signature length (RFC 8032 §5.1.6). */
export const ED25519_SIGNATURE_LENGTH = 64;

/** The group order `L = 2^252 + 27742317777372353535851937790883648493`, little-endian. */
const L_LE = fromHex('edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010');

/** The field prime `p = 2^255 − 19`, little-endian. */
const P_LE = fromHex('edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f');

/**
 * The encodings with `y < p` of the eight points of order dividing 8: the canonical encoding of
 * each, plus the two "negative zero" encodings (x = 0 with the sign bit set) of the points of order
 * 1 and 2. Non-canonical `y` is refused by rule 3 before this list is consulted. The test suite
 * re-derives this list from noble's point arithmetic (spec/crypto/ed25519-strict.test.ts).
 */
const SMALL_ORDER_ENCODINGS: readonly Uint8Array[] = Object.freeze(
  [
    '0100000000000000000000000000000000000000000000000000000000000000', // identity (0, 1)
    '0100000000000000000000000000000000000000000000000000000000000080', // identity, sign bit set
    'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f', // order 2 (0, −1)
    'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff', // order 2, sign bit set
    '0000000000000000000000000000000000000000000000000000000000000000', // order 4 (x even, y = 0)
    '0000000000000000000000000000000000000000000000000000000000000080', // order 4 (x odd, y = 0)
    'c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a', // order 8
    'c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa', // order 8
    '26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05', // order 8
    '26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85', // order 8
  ].map(fromHex),
);

/** Little-endian comparison `a < b` of two 32-byte numbers (public data, variable time is fine). */
function lessThanLE(a: Uint8Array, b: Uint8Array): boolean {
  for (let i = 31; i >= 0; i--) {
    const x = a[i] ?? 0;
    const y = b[i] ?? 0;
    if (x !== y) return x < y;
  }
  return false;
}

/** True when `bytes` equals one of the listed encodings (public data). */
function isListed(bytes: Uint8Array, list: readonly Uint8Array[]): boolean {
  return list.some((entry) => entry.every((byte, i) => byte === bytes[i]));
}

/** Rule 2: `S` (the signature's last 32 bytes, little-endian) is below the group order L. */
export function isCanonicalScalar(signature: Uint8Array): boolean {
  return lessThanLE(signature.subarray(32, 64), L_LE);
}

/** Rule 3: the encoded `y` (sign bit cleared) is below p. */
export function hasCanonicalY(encodedPoint: Uint8Array): boolean {
  const y = Uint8Array.from(encodedPoint);
  y[31] = (y[31] ?? 0) & 0x7f;
  return lessThanLE(y, P_LE);
}

/** Rule 4: the encoding names a point of order 1, 2, 4 or 8 (for encodings with `y < p`). */
export function isSmallOrderEncoding(encodedPoint: Uint8Array): boolean {
  return isListed(encodedPoint, SMALL_ORDER_ENCODINGS);
}

/**
 * Rules 1–4 of the module doc: the checks both providers make before the group equation.
 * Returns false when the signature must be rejected whatever the equation says.
 */
export function passesStrictPrechecks(publicKey: Uint8Array, signature: Uint8Array): boolean {
  if (!(publicKey instanceof Uint8Array) || !(signature instanceof Uint8Array)) return false;
  if (publicKey.length !== ED25519_PUBLIC_KEY_LENGTH || signature.length !== ED25519_SIGNATURE_LENGTH)
    return false;
  // WP-KEYS-07: S must be canonical (S < L) in both providers.
  if (!isCanonicalScalar(signature)) return false;
  if (!hasCanonicalY(publicKey)) return false;
  return !isSmallOrderEncoding(publicKey);
}
