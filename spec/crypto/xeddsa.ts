/**
 * XEdDSA signatures on X25519 keys, libsignal's variant (WP-KEYS-07). Reference: "The XEdDSA and
 * VXEdDSA Signature Schemes" (Perrin, 2016, signal.org/docs/specifications/xeddsa) §2.3 and §3,
 * with the differences libsignal makes (rust/core/src/curve/curve25519.rs, read for facts only):
 *
 * ```text
 * k      = clamp(private key)                 RFC 7748 §5 (WP-KEYS-06)
 * a      = k mod L;  A = aB                   A is NOT negated to a zero sign bit (libsignal)
 * r      = SHA-512(0xFE ‖ 0xFF×31 ‖ k ‖ M ‖ Z) mod L     k as 32 clamped bytes, Z = 64 random bytes
 * R      = rB
 * h      = SHA-512(R ‖ A ‖ M) mod L
 * s      = r + h·a mod L
 * sig    = R ‖ s, with A's sign bit (bit 7 of A's last byte) stored in bit 7 of sig[63]
 * ```
 *
 * Verification rebuilds the Edwards key from the Montgomery `u` (`y = (u − 1)/(u + 1)`, RFC 7748 §4.1)
 * and the sign bit carried in the signature, clears that bit, and runs Ed25519 verification under
 * Lockstep's strict rule (`./ed25519-strict.ts`): unlike libsignal, `s ≥ L` is rejected.
 *
 * Three memos spare repeated work without changing any result (a run signs many prekeys with one
 * identity key and verifies the same signed prekey or device list again and again):
 * - signing keeps `A` (public) under the caller's private-key array, with a copy of the bytes it was
 *   computed from, and uses it only while the array holds those bytes; it lives no longer than the
 *   caller's array;
 * - verification keeps each provider's {@link VERIFY_MEMO_MAX} most recently used verdicts by
 *   signature, with copies of the key and message, and reuses a verdict only for the same provider
 *   and identical key, message and signature bytes. Verdicts are a function of those bytes, and
 *   keeping them per provider leaves each provider's own computation to tests that compare the two;
 * - verification keeps the Edwards `y` of the {@link EDWARDS_MEMO_MAX} most recently used Montgomery
 *   keys (public data, computed without the provider), which spares a field inversion per verdict.
 * @module
 */
import { ed25519 } from '@noble/curves/ed25519.js';
import { bytesToNumberLE, numberToBytesLE } from '@noble/curves/utils.js';
import { concatBytes, copyBytes, equalBytes } from '../bytes.js';
import { EC_KEY_TYPE_DJB, EC_PUBLIC_KEY_LENGTH, SIGNATURE_LENGTH, X25519_KEY_LENGTH } from '../constants.js';
import { UsageError } from '../errors.js';
import { BoundedLru } from '../lru.js';
import { toHex } from '../hex.js';
import type { CryptoProvider } from './provider.js';

/** Length of the XEdDSA random input `Z` (XEdDSA §3.3; WP-KEYS-09 draws exactly this many bytes). */
export const XEDDSA_RANDOM_LENGTH = 64;

const Point = ed25519.Point;
const Fn = Point.Fn;
const Fp = Point.Fp;

/**
 * Window of the signing base point's precomputed table. noble precomputes `BASE` with a 6-bit
 * window; signing multiplies only the base point, so its own copy with a 10-bit window (26 windows
 * of 512 points, about 3 MiB, built on the first signature in about 70 ms) makes each `[r]B` about
 * 40% cheaper. Same constant-time blinded multiplication, same results.
 */
export const SIGNING_BASE_WINDOW = 10;

/** The base point B with its own {@link SIGNING_BASE_WINDOW}-bit table (lazy: built on first use). */
const SIGNING_BASE = Point.fromAffine(Point.BASE.toAffine());
SIGNING_BASE.precompute(SIGNING_BASE_WINDOW, true);

/** XEdDSA §3.3 `hash_1` prefix: `2^256 − 1 − 1` little-endian, i.e. `0xFE ‖ 0xFF×31`. */
const HASH1_PREFIX = Uint8Array.from({ length: 32 }, (_, i) => (i === 0 ? 0xfe : 0xff));

/** `A` of a private key, with the key bytes it was computed from (module doc: the signing memo). */
interface SigningKey {
  readonly privateKey: Uint8Array;
  readonly encodedA: Uint8Array;
}

/** Signing memo: by the caller's private-key array. */
const signingKeys = new WeakMap<Uint8Array, SigningKey>();

/** Bound of each provider's verification memo: about 2 KiB per entry at most (a Kyber key signed). */
export const VERIFY_MEMO_MAX = 4096;

/** A verdict with the exact inputs it was given (module doc: the verification memo). */
interface Verdict {
  readonly publicKey: Uint8Array;
  readonly message: Uint8Array;
  readonly valid: boolean;
}

/** Verification memos per provider: signature hex → verdict. */
const verdicts = new WeakMap<CryptoProvider, BoundedLru<string, Verdict>>();

/** RFC 7748 §5 `decodeScalar25519` clamping, on a copy. */
function clamp(privateKey: Uint8Array): Uint8Array {
  const k = Uint8Array.from(privateKey);
  k[0] = (k[0] ?? 0) & 248;
  k[31] = ((k[31] ?? 0) & 127) | 64;
  return k;
}

/**
 * Signs `message` with a raw 32-byte X25519 private key and the 64 random bytes `random` (`Z`).
 * Deterministic given its inputs; the caller draws `random` from its `Rng` (WP-KEYS-09, spec/draws.ts).
 * Throws {@link UsageError} on wrong argument lengths.
 */
export function xeddsaSign(
  c: CryptoProvider,
  privateKey: Uint8Array,
  message: Uint8Array,
  random: Uint8Array,
): Uint8Array {
  if (!(privateKey instanceof Uint8Array) || privateKey.length !== X25519_KEY_LENGTH) {
    throw new UsageError(`privateKey must be ${X25519_KEY_LENGTH} bytes`);
  }
  if (!(message instanceof Uint8Array)) throw new UsageError('message must be a Uint8Array');
  if (!(random instanceof Uint8Array) || random.length !== XEDDSA_RANDOM_LENGTH) {
    throw new UsageError(`random must be ${XEDDSA_RANDOM_LENGTH} bytes`);
  }
  // WP-KEYS-06 / WP-KEYS-07: a = clamp(k) mod L and A = aB, kept unnegated (libsignal's variant).
  const k = clamp(privateKey);
  const a = Fn.create(bytesToNumberLE(k));
  const encodedA = signingKeyA(privateKey, a);
  const signBit = (encodedA[31] ?? 0) & 0x80;
  // WP-KEYS-07: r = SHA-512(0xFE ‖ 0xFF×31 ‖ k ‖ M ‖ Z) mod L. libsignal hashes the clamped
  // private key bytes here (not a mod L); any value is secure, this one matches libsignal.
  const r = Fn.create(bytesToNumberLE(c.sha512(concatBytes(HASH1_PREFIX, k, message, random))));
  // r = 0 has probability 2^-252; noble's constant-time multiply refuses 0, so name the identity.
  const encodedR = (r === 0n ? Point.ZERO : SIGNING_BASE.multiply(r)).toBytes();
  // RFC 8032 §5.1.6 steps 4–5: h = SHA-512(R ‖ A ‖ M) mod L; s = r + h·a mod L.
  const h = Fn.create(bytesToNumberLE(c.sha512(concatBytes(encodedR, encodedA, message))));
  const s = Fn.add(r, Fn.mul(h, a));
  const signature = concatBytes(encodedR, numberToBytesLE(s, 32));
  // s < L < 2^253, so bit 7 of the last byte is free to carry A's sign bit.
  signature[SIGNATURE_LENGTH - 1] = ((signature[SIGNATURE_LENGTH - 1] ?? 0) & 0x7f) | signBit;
  return signature;
}

/** `A = aB` encoded, for the private key `privateKey` whose scalar is `a`, from the signing memo. */
function signingKeyA(privateKey: Uint8Array, a: bigint): Uint8Array {
  const known = signingKeys.get(privateKey);
  // The array may have been overwritten since (zeroised, reused): then it is another key.
  if (known !== undefined && equalBytes(known.privateKey, privateKey)) return known.encodedA;
  const encodedA = SIGNING_BASE.multiply(a).toBytes();
  signingKeys.set(privateKey, { privateKey: copyBytes(privateKey), encodedA });
  return encodedA;
}

/**
 * Verifies an XEdDSA signature against a 33-byte `0x05 ‖ u` public key (WP-KEYS-07). Returns false
 * for any malformed key or signature (wrong lengths or type byte, `u ≥ p`, `u = p − 1`, a point
 * that does not decode, `s ≥ L`, a small-order key); never throws.
 */
export function xeddsaVerify(
  c: CryptoProvider,
  publicKey: Uint8Array,
  message: Uint8Array,
  signature: Uint8Array,
): boolean {
  if (!(publicKey instanceof Uint8Array) || !(signature instanceof Uint8Array)) return false;
  if (!(message instanceof Uint8Array)) return false;
  let memo = verdicts.get(c);
  if (memo === undefined) {
    memo = new BoundedLru(VERIFY_MEMO_MAX);
    verdicts.set(c, memo);
  }
  const name = toHex(signature);
  const known = memo.get(name);
  if (known !== undefined && equalBytes(known.publicKey, publicKey) && equalBytes(known.message, message))
    return known.valid;
  const valid = verifyOnce(c, publicKey, message, signature);
  memo.set(name, { publicKey: copyBytes(publicKey), message: copyBytes(message), valid });
  return valid;
}

/** Bound of the Montgomery-to-Edwards memo (public keys only; 32 bytes of result each). */
export const EDWARDS_MEMO_MAX = 8192;

/** Edwards `y` (32 bytes, sign bit clear) by Montgomery public key hex. */
const edwardsYs = new BoundedLru<string, Uint8Array | null>(EDWARDS_MEMO_MAX);

/**
 * The Edwards `y` of a `0x05 ‖ u` key (RFC 7748 §4.1 birational map `y = (u − 1)/(u + 1)`), or null
 * when `u` is not canonical (WP-KEYS-02: `u ≥ p`, which also refuses a set top bit) or is `p − 1`,
 * which has no Edwards image. Keys recur (every signed prekey and device list of one identity), so
 * the field inversion is kept per key; the result is a function of the key bytes alone.
 */
function edwardsYOf(publicKey: Uint8Array): Uint8Array | null {
  const name = toHex(publicKey);
  const known = edwardsYs.get(name);
  if (known !== undefined) return known;
  const u = bytesToNumberLE(publicKey.subarray(1));
  const y =
    u >= Fp.ORDER || u === Fp.ORDER - 1n
      ? null
      : numberToBytesLE(Fp.mul(Fp.sub(u, 1n), Fp.inv(Fp.add(u, 1n))), 32);
  edwardsYs.set(name, y);
  return y;
}

/** {@link xeddsaVerify} without the verdict memo. */
function verifyOnce(
  c: CryptoProvider,
  publicKey: Uint8Array,
  message: Uint8Array,
  signature: Uint8Array,
): boolean {
  try {
    if (publicKey.length !== EC_PUBLIC_KEY_LENGTH || publicKey[0] !== EC_KEY_TYPE_DJB) return false;
    if (signature.length !== SIGNATURE_LENGTH) return false;
    const edwardsY = edwardsYOf(publicKey);
    if (edwardsY === null) return false;
    const edwardsKey = Uint8Array.from(edwardsY);
    const signBit = (signature[SIGNATURE_LENGTH - 1] ?? 0) & 0x80;
    edwardsKey[31] = (edwardsKey[31] ?? 0) | signBit;
    const ed25519Signature = Uint8Array.from(signature);
    ed25519Signature[SIGNATURE_LENGTH - 1] = (ed25519Signature[SIGNATURE_LENGTH - 1] ?? 0) & 0x7f;
    // WP-KEYS-07: the provider enforces s < L, canonical and non-small-order keys, and the equation.
    return c.ed25519Verify(edwardsKey, message, ed25519Signature);
  } catch {
    return false;
  }
}
