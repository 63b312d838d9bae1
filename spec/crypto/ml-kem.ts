/**
 * ML-KEM-1024's deterministic internal algorithms (FIPS 203 §6: `ML-KEM.KeyGen_internal`,
 * `Encaps_internal`, `Decaps_internal`, over K-PKE §5), written against an injected SHA-3 family so
 * that a provider with native SHA-3 (node:crypto's OpenSSL) runs it without the pure-JavaScript
 * Keccak that dominates a pure-JavaScript ML-KEM. The noble provider keeps `@noble/post-quantum`'s
 * `ml_kem1024`; spec/crypto/ml-kem.test.ts holds this module to byte equality with it on generated
 * seeds (keys, ciphertexts, secrets, implicit rejection, a corrupted secret key), with both noble's
 * and node's SHA-3 plugged in. Round 3 Kyber (what libsignal speaks) is built on top of this in
 * `./kyber.ts` (WP-KEYS-08).
 *
 * Parameter set ML-KEM-1024 (FIPS 203 Table 2): n = 256, q = 3329, k = 4, η1 = η2 = 2, du = 11,
 * dv = 5. Polynomials are `Uint16Array`s of coefficients reduced into [0, q); every product of two
 * reduced values is below 2^24, so plain integer arithmetic with `%` stays exact.
 *
 * Like noble's, this code makes no constant-time claim: JavaScript and its JIT give none. Pure and
 * browser-safe: it imports no platform module.
 * @module
 */
import { equalBytes } from '../bytes.js';
import {
  KYBER1024_CIPHERTEXT_LENGTH,
  KYBER1024_PUBLIC_KEY_LENGTH,
  KYBER1024_SECRET_KEY_LENGTH,
} from '../constants.js';

/** The SHA-3 functions ML-KEM needs (FIPS 202): H, G, J, PRF and XOF of FIPS 203 §4.1. */
export interface Sha3Functions {
  /** SHA3-256. */
  sha3_256(data: Uint8Array): Uint8Array;
  /** SHA3-512 of the concatenation `a ‖ b` (G takes two inputs in every use). */
  sha3_512(a: Uint8Array, b: Uint8Array): Uint8Array;
  /** SHAKE128 of `data`, `length` bytes of output. */
  shake128(data: Uint8Array, length: number): Uint8Array;
  /** SHAKE256 of `data`, `length` bytes of output. */
  shake256(data: Uint8Array, length: number): Uint8Array;
}

/** A raw ML-KEM-1024 key pair: `ek` (1568 bytes) and `dk` (3168 bytes). */
export interface MlKemKeyPair {
  readonly publicKey: Uint8Array;
  readonly secretKey: Uint8Array;
}

/** ML-KEM-1024 on raw encodings (no libsignal type byte). */
export interface MlKem1024 {
  /** `KeyGen_internal(d, z)` with `seed = d ‖ z` (64 bytes). */
  keygen(seed: Uint8Array): MlKemKeyPair;
  /**
   * `Encaps_internal(ek, m)`: the 1568-byte ciphertext and the 32-byte secret. The caller has
   * checked `ek`'s length and its coefficients (FIPS 203 §7.2).
   */
  encapsulate(publicKey: Uint8Array, m: Uint8Array): { cipherText: Uint8Array; sharedSecret: Uint8Array };
  /**
   * `Decaps_internal(dk, c)` after §7.3's hash check: null when `H(ek)` stored in `dk` does not
   * match the embedded `ek` (a corrupted key); an invalid ciphertext yields the implicit-rejection
   * secret `J(z ‖ c)`, never an error. The caller has checked both lengths.
   */
  decapsulate(cipherText: Uint8Array, secretKey: Uint8Array): Uint8Array | null;
}

const N = 256;
/** The modulus q (FIPS 203 §2.4; Kyber v3.02 §1.1). */
export const ML_KEM_Q = 3329;
const Q = ML_KEM_Q;
const K = 4;
const DU = 11;
const DV = 5;
/** 128^-1 mod q: the scale of NTT^-1 (FIPS 203 Alg. 10, step 14). */
const N_INV = 3303;
/** Bytes of one polynomial under ByteEncode12. */
const POLY_BYTES = 384;
/** Bytes of the encoded vector t̂ (and of dk_PKE): k polynomials under ByteEncode12. */
export const ML_KEM1024_T_HAT_BYTES = K * POLY_BYTES;
const T_HAT_BYTES = ML_KEM1024_T_HAT_BYTES;
/** ek = ByteEncode12(t̂) ‖ ρ. */
const PUBLIC_KEY_BYTES = KYBER1024_PUBLIC_KEY_LENGTH;
/** dk = dk_PKE ‖ ek ‖ H(ek) ‖ z. */
const SECRET_KEY_BYTES = KYBER1024_SECRET_KEY_LENGTH;
const U_BYTES = (N * DU) / 8;
const CIPHERTEXT_BYTES = KYBER1024_CIPHERTEXT_LENGTH;
/** SHAKE128's rate: XOF output is read in whole blocks. */
const SHAKE128_RATE = 168;
/**
 * SampleNTT's first squeeze: four blocks give 448 candidates for 256 coefficients (each accepted
 * with probability q/4096 ≈ 0.81), so a second, longer squeeze is almost never needed.
 */
export const SAMPLE_NTT_FIRST_BYTES = 4 * SHAKE128_RATE;

/** 7-bit bit reversal (FIPS 203 §4.3). */
function bitRev7(i: number): number {
  let r = 0;
  for (let b = 0; b < 7; b++) r |= ((i >> b) & 1) << (6 - b);
  return r;
}

/** ζ^BitRev7(i) mod q for i < 128 (Alg. 9/10) and γ_i = ζ^(2·BitRev7(i)+1) (Alg. 11), ζ = 17. */
const { ZETAS, GAMMAS } = (() => {
  const powers = new Uint16Array(256);
  powers[0] = 1;
  for (let i = 1; i < 256; i++) powers[i] = ((powers[i - 1] ?? 0) * 17) % Q;
  const zetas = new Uint16Array(128);
  const gammas = new Uint16Array(128);
  for (let i = 0; i < 128; i++) {
    zetas[i] = powers[bitRev7(i)] ?? 0;
    gammas[i] = powers[2 * bitRev7(i) + 1] ?? 0;
  }
  return { ZETAS: zetas, GAMMAS: gammas };
})();

/** Alg. 9: NTT in place. */
function ntt(f: Uint16Array): void {
  let i = 1;
  for (let len = 128; len >= 2; len >>= 1) {
    for (let start = 0; start < N; start += 2 * len) {
      const zeta = ZETAS[i++] as number;
      for (let j = start; j < start + len; j++) {
        const t = (zeta * (f[j + len] as number)) % Q;
        const a = f[j] as number;
        f[j + len] = a >= t ? a - t : a - t + Q;
        const s = a + t;
        f[j] = s >= Q ? s - Q : s;
      }
    }
  }
}

/** Alg. 10: NTT^-1 in place. */
function nttInverse(f: Uint16Array): void {
  let i = 127;
  for (let len = 2; len <= 128; len <<= 1) {
    for (let start = 0; start < N; start += 2 * len) {
      const zeta = ZETAS[i--] as number;
      for (let j = start; j < start + len; j++) {
        const t = f[j] as number;
        const u = f[j + len] as number;
        const s = t + u;
        f[j] = s >= Q ? s - Q : s;
        f[j + len] = (zeta * (u >= t ? u - t : u - t + Q)) % Q;
      }
    }
  }
  for (let j = 0; j < N; j++) f[j] = ((f[j] as number) * N_INV) % Q;
}

/** `acc += f ∘ g` in T_q (Alg. 11 with Alg. 12 per pair), accumulating unreduced-safe sums. */
function multiplyAdd(acc: Uint16Array, f: Uint16Array, g: Uint16Array): void {
  for (let i = 0; i < 128; i++) {
    const a0 = f[2 * i] as number;
    const a1 = f[2 * i + 1] as number;
    const b0 = g[2 * i] as number;
    const b1 = g[2 * i + 1] as number;
    const c0 = (a0 * b0 + ((a1 * b1) % Q) * (GAMMAS[i] as number)) % Q;
    const c1 = (a0 * b1 + a1 * b0) % Q;
    const s0 = (acc[2 * i] as number) + c0;
    const s1 = (acc[2 * i + 1] as number) + c1;
    acc[2 * i] = s0 >= Q ? s0 - Q : s0;
    acc[2 * i + 1] = s1 >= Q ? s1 - Q : s1;
  }
}

/** `a += b` mod q in place. */
function addInto(a: Uint16Array, b: Uint16Array): void {
  for (let j = 0; j < N; j++) {
    const s = (a[j] as number) + (b[j] as number);
    a[j] = s >= Q ? s - Q : s;
  }
}

/** Alg. 7 SampleNTT over the XOF stream of `ρ ‖ a ‖ b`. */
function sampleNtt(
  sha3: Sha3Functions,
  firstBytes: number,
  rho: Uint8Array,
  a: number,
  b: number,
): Uint16Array {
  const seed = new Uint8Array(34);
  seed.set(rho);
  seed[32] = a;
  seed[33] = b;
  const out = new Uint16Array(N);
  // SHAKE output of length L is a prefix of any longer output, so a shortfall squeezes again,
  // longer, and reads on from where the first squeeze ended.
  for (let length = firstBytes, j = 0, read = 0; ; length *= 2) {
    const stream = sha3.shake128(seed, length);
    for (; j < N && read + 3 <= length; read += 3) {
      const b0 = stream[read] as number;
      const b1 = stream[read + 1] as number;
      const b2 = stream[read + 2] as number;
      const d1 = b0 | ((b1 & 0x0f) << 8);
      const d2 = (b1 >> 4) | (b2 << 4);
      if (d1 < Q) out[j++] = d1;
      if (d2 < Q && j < N) out[j++] = d2;
    }
    if (j === N) return out;
  }
}

/** Alg. 8 SamplePolyCBD_2 over `PRF_2(s, nonce)` = SHAKE256(s ‖ nonce, 128). */
function sampleCbd2(sha3: Sha3Functions, s: Uint8Array, nonce: number): Uint16Array {
  const input = new Uint8Array(33);
  input.set(s);
  input[32] = nonce;
  const bytes = sha3.shake256(input, 128);
  const out = new Uint16Array(N);
  for (let i = 0; i < 128; i++) {
    const byte = bytes[i] as number;
    // Each nibble is one coefficient: (bit0 + bit1) − (bit2 + bit3).
    const lo = (byte & 1) + ((byte >> 1) & 1) - ((byte >> 2) & 1) - ((byte >> 3) & 1);
    const hi = ((byte >> 4) & 1) + ((byte >> 5) & 1) - ((byte >> 6) & 1) - ((byte >> 7) & 1);
    out[2 * i] = lo < 0 ? lo + Q : lo;
    out[2 * i + 1] = hi < 0 ? hi + Q : hi;
  }
  return out;
}

/** ByteEncode12 of `polys` into `out` at `offset`. */
function encode12(polys: readonly Uint16Array[], out: Uint8Array, offset: number): void {
  let o = offset;
  for (const f of polys) {
    for (let j = 0; j < N; j += 2) {
      const a = f[j] as number;
      const b = f[j + 1] as number;
      out[o++] = a & 0xff;
      out[o++] = (a >> 8) | ((b & 0x0f) << 4);
      out[o++] = b >> 4;
    }
  }
}

/** The 12-bit value `index` of a ByteEncode12 string (two per 3 bytes, little-endian). */
function word12(bytes: Uint8Array, index: number): number {
  const o = (index >> 1) * 3;
  return index & 1
    ? ((bytes[o + 1] as number) >> 4) | ((bytes[o + 2] as number) << 4)
    : (bytes[o] as number) | (((bytes[o + 1] as number) & 0x0f) << 8);
}

/** ByteDecode12 of one polynomial at `offset`, each 12-bit value taken mod q (FIPS 203 §4.2.1). */
function decode12(bytes: Uint8Array, offset: number): Uint16Array {
  const f = new Uint16Array(N);
  const start = (offset / 3) * 2;
  for (let j = 0; j < N; j++) {
    const a = word12(bytes, start + j);
    f[j] = a >= Q ? a - Q : a;
  }
  return f;
}

/**
 * FIPS 203 §7.2 encapsulation-key check on a raw 1568-byte key: every 12-bit coefficient of t̂ is
 * below q (ByteEncode12(ByteDecode12(t̂)) = t̂).
 */
export function encapsulationKeyReduced(rawPublicKey: Uint8Array): boolean {
  if (rawPublicKey.length !== PUBLIC_KEY_BYTES) return false;
  for (let i = 0; i < K * N; i++) if (word12(rawPublicKey, i) >= Q) return false;
  return true;
}

/** ByteEncode_d(Compress_d(f)) appended to `out` at `offset` (d < 12, little-endian bit order). */
function compressEncode(f: Uint16Array, d: number, out: Uint8Array, offset: number): void {
  const mask = (1 << d) - 1;
  let acc = 0;
  let bits = 0;
  let o = offset;
  for (let j = 0; j < N; j++) {
    // Compress_d(x) = ⌈2^d·x/q⌋ mod 2^d = ⌊(2^(d+1)·x + q) / 2q⌋ mod 2^d.
    const c = Math.floor(((f[j] as number) * (2 << d) + Q) / (2 * Q)) & mask;
    acc |= c << bits;
    bits += d;
    while (bits >= 8) {
      out[o++] = acc & 0xff;
      acc >>>= 8;
      bits -= 8;
    }
  }
}

/** Decompress_d(ByteDecode_d(bytes at offset)): Decompress_d(y) = ⌊(q·y + 2^(d−1)) / 2^d⌋. */
function decodeDecompress(bytes: Uint8Array, offset: number, d: number): Uint16Array {
  const f = new Uint16Array(N);
  const mask = (1 << d) - 1;
  const half = 1 << (d - 1);
  let acc = 0;
  let bits = 0;
  let o = offset;
  for (let j = 0; j < N; j++) {
    while (bits < d) {
      acc |= (bytes[o++] as number) << bits;
      bits += 8;
    }
    f[j] = (Q * (acc & mask) + half) >> d;
    acc >>>= d;
    bits -= d;
  }
  return f;
}

/** Â[i][j] = SampleNTT(ρ ‖ j ‖ i) (Alg. 13 steps 3–7, Alg. 14 steps 4–8), row-major. */
function expandMatrix(sha3: Sha3Functions, firstBytes: number, rho: Uint8Array): Uint16Array[] {
  const a: Uint16Array[] = [];
  for (let i = 0; i < K; i++) for (let j = 0; j < K; j++) a.push(sampleNtt(sha3, firstBytes, rho, j, i));
  return a;
}

/** Alg. 14 K-PKE.Encrypt(ek, m, r). `ek` has been length-checked. */
function pkeEncrypt(
  sha3: Sha3Functions,
  firstBytes: number,
  ek: Uint8Array,
  m: Uint8Array,
  r: Uint8Array,
): Uint8Array {
  const tHat: Uint16Array[] = [];
  for (let i = 0; i < K; i++) tHat.push(decode12(ek, i * POLY_BYTES));
  const aHat = expandMatrix(sha3, firstBytes, ek.subarray(T_HAT_BYTES, PUBLIC_KEY_BYTES));
  const yHat: Uint16Array[] = [];
  for (let i = 0; i < K; i++) {
    const y = sampleCbd2(sha3, r, i);
    ntt(y);
    yHat.push(y);
  }
  const out = new Uint8Array(CIPHERTEXT_BYTES);
  for (let i = 0; i < K; i++) {
    // u[i] = NTT^-1(Σ_j Â[j][i] ∘ ŷ[j]) + e1[i]  (Âᵀ)
    const acc = new Uint16Array(N);
    for (let j = 0; j < K; j++) multiplyAdd(acc, aHat[j * K + i] as Uint16Array, yHat[j] as Uint16Array);
    nttInverse(acc);
    addInto(acc, sampleCbd2(sha3, r, K + i));
    compressEncode(acc, DU, out, i * U_BYTES);
  }
  // v = NTT^-1(t̂ᵀ ∘ ŷ) + e2 + Decompress_1(ByteDecode_1(m))
  const v = new Uint16Array(N);
  for (let i = 0; i < K; i++) multiplyAdd(v, tHat[i] as Uint16Array, yHat[i] as Uint16Array);
  nttInverse(v);
  addInto(v, sampleCbd2(sha3, r, 2 * K));
  for (let j = 0; j < N; j++) {
    if ((((m[j >> 3] as number) >> (j & 7)) & 1) === 1) {
      const s = (v[j] as number) + (Q + 1) / 2;
      v[j] = s >= Q ? s - Q : s;
    }
  }
  compressEncode(v, DV, out, K * U_BYTES);
  return out;
}

/** Alg. 15 K-PKE.Decrypt(dk_PKE, c): the 32-byte message. */
function pkeDecrypt(dk: Uint8Array, c: Uint8Array): Uint8Array {
  const acc = new Uint16Array(N);
  for (let i = 0; i < K; i++) {
    const u = decodeDecompress(c, i * U_BYTES, DU);
    ntt(u);
    multiplyAdd(acc, decode12(dk, i * POLY_BYTES), u);
  }
  nttInverse(acc);
  const v = decodeDecompress(c, K * U_BYTES, DV);
  const m = new Uint8Array(32);
  for (let j = 0; j < N; j++) {
    const w = (v[j] as number) - (acc[j] as number);
    const x = w < 0 ? w + Q : w;
    // Compress_1(x) = ⌊(4x + q) / 2q⌋ mod 2
    const bit = Math.floor((4 * x + Q) / (2 * Q)) & 1;
    m[j >> 3] = (m[j >> 3] as number) | (bit << (j & 7));
  }
  return m;
}

/**
 * ML-KEM-1024 over the given SHA-3 functions. `sampleNttFirstBytes` (a multiple of 3, default
 * {@link SAMPLE_NTT_FIRST_BYTES}) is SampleNTT's first squeeze per matrix entry; the results do not
 * depend on it, and tests pass a small value to exercise the refill path.
 */
export function createMlKem1024(
  sha3: Sha3Functions,
  sampleNttFirstBytes: number = SAMPLE_NTT_FIRST_BYTES,
): MlKem1024 {
  if (
    !Number.isSafeInteger(sampleNttFirstBytes) ||
    sampleNttFirstBytes < 3 ||
    sampleNttFirstBytes % 3 !== 0
  ) {
    throw new RangeError('sampleNttFirstBytes must be a positive multiple of 3');
  }
  const first = sampleNttFirstBytes;
  return Object.freeze({
    keygen(seed: Uint8Array): MlKemKeyPair {
      // Alg. 13: (ρ, σ) = G(d ‖ k)
      const rhoSigma = sha3.sha3_512(seed.subarray(0, 32), Uint8Array.of(K));
      const rho = rhoSigma.subarray(0, 32);
      const sigma = rhoSigma.subarray(32, 64);
      const aHat = expandMatrix(sha3, first, rho);
      const sHat: Uint16Array[] = [];
      for (let i = 0; i < K; i++) {
        const s = sampleCbd2(sha3, sigma, i);
        ntt(s);
        sHat.push(s);
      }
      const tHat: Uint16Array[] = [];
      for (let i = 0; i < K; i++) {
        const t = sampleCbd2(sha3, sigma, K + i);
        ntt(t);
        for (let j = 0; j < K; j++) multiplyAdd(t, aHat[i * K + j] as Uint16Array, sHat[j] as Uint16Array);
        tHat.push(t);
      }
      const publicKey = new Uint8Array(PUBLIC_KEY_BYTES);
      encode12(tHat, publicKey, 0);
      publicKey.set(rho, T_HAT_BYTES);
      // Alg. 16: dk = dk_PKE ‖ ek ‖ H(ek) ‖ z
      const secretKey = new Uint8Array(SECRET_KEY_BYTES);
      encode12(sHat, secretKey, 0);
      secretKey.set(publicKey, T_HAT_BYTES);
      secretKey.set(sha3.sha3_256(publicKey), T_HAT_BYTES + PUBLIC_KEY_BYTES);
      secretKey.set(seed.subarray(32, 64), T_HAT_BYTES + PUBLIC_KEY_BYTES + 32);
      rhoSigma.fill(0);
      for (const s of sHat) s.fill(0);
      return { publicKey, secretKey };
    },

    encapsulate(publicKey: Uint8Array, m: Uint8Array) {
      // Alg. 17: (K, r) = G(m ‖ H(ek)); c = K-PKE.Encrypt(ek, m, r)
      const kr = sha3.sha3_512(m, sha3.sha3_256(publicKey));
      const cipherText = pkeEncrypt(sha3, first, publicKey, m, kr.subarray(32, 64));
      const sharedSecret = kr.slice(0, 32);
      kr.fill(0);
      return { cipherText, sharedSecret };
    },

    decapsulate(cipherText: Uint8Array, secretKey: Uint8Array): Uint8Array | null {
      const ek = secretKey.subarray(T_HAT_BYTES, T_HAT_BYTES + PUBLIC_KEY_BYTES);
      const h = secretKey.subarray(T_HAT_BYTES + PUBLIC_KEY_BYTES, T_HAT_BYTES + PUBLIC_KEY_BYTES + 32);
      const z = secretKey.subarray(T_HAT_BYTES + PUBLIC_KEY_BYTES + 32);
      // §7.3 input check: the stored H(ek) matches the embedded ek.
      if (!equalBytes(sha3.sha3_256(ek), h)) return null;
      // Alg. 18
      const mPrime = pkeDecrypt(secretKey.subarray(0, T_HAT_BYTES), cipherText);
      const kr = sha3.sha3_512(mPrime, h);
      const again = pkeEncrypt(sha3, first, ek, mPrime, kr.subarray(32, 64));
      const zc = new Uint8Array(32 + cipherText.length);
      zc.set(z);
      zc.set(cipherText, 32);
      const kBar = sha3.shake256(zc, 32);
      const valid = equalBytes(again, cipherText);
      const result = valid ? kr.slice(0, 32) : kBar;
      mPrime.fill(0);
      kr.fill(0);
      zc.fill(0);
      if (valid) kBar.fill(0);
      return result;
    },
  });
}
