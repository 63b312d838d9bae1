/**
 * Round-3 Kyber-1024 (CRYSTALS-Kyber v3.02, the KEM libsignal uses) built from the provider's FIPS
 * 203 ML-KEM-1024 and SHA-3 (WP-KEYS-08): noble's `ml_kem1024` in the noble provider, the
 * injected-hash implementation of `./ml-kem.ts` over node:crypto's native SHA-3 in the Node
 * provider; both give byte-identical results.
 *
 * Kyber round 3 and ML-KEM share key generation output formats, ciphertexts and the inner K-PKE;
 * they differ in how the shared secret is formed. With ML-KEM's deterministic internal algorithms:
 *
 * ```text
 * encapsulate(pk, seed):  m = SHA3-256(seed)                      Kyber v3.02 Alg. 8 step 1
 *                         (ct, K̄) = ML-KEM.Encaps_internal(pk, m)  K̄ = G(m ‖ H(pk))[0..32]
 *                         ss = SHAKE256(K̄ ‖ SHA3-256(ct), 32)      Kyber v3.02 Alg. 8 step 4
 * decapsulate(sk, ct):    ss = SHAKE256(ML-KEM.Decaps(sk, ct) ‖ SHA3-256(ct), 32)
 * ```
 *
 * Known differences from a native round-3 implementation, none observable by an honest peer:
 * - key generation: FIPS 203 hashes `d ‖ k` where round 3 hashes `d`, so one 64-byte seed gives a
 *   different (equally valid) key pair than libsignal would; keys are interchangeable;
 * - implicit rejection: for an invalid ciphertext ML-KEM returns `J(z ‖ ct)` and we return
 *   `SHAKE256(J(z ‖ ct) ‖ H(ct))`, where round 3 returns `SHAKE256(z ‖ H(ct))`. Both are pseudorandom
 *   values the sender cannot predict, so the session fails the same way (MAC failure);
 * - FIPS 203 §7.2's encapsulation-key check (every coefficient < q) is applied by spec/keys.ts when
 *   the key is decoded (`KEM_NON_CANONICAL`); round 3 has no such check, but an honest key passes it.
 *
 * Encodings carry libsignal's type byte `0x08` (WP-KEYS-05). These functions take encodings that
 * spec/keys.ts has already validated; a wrong length here is caller misuse ({@link UsageError}).
 * @module
 */
import { concatBytes } from '../bytes.js';
import {
  KEM_KEY_TYPE_KYBER1024,
  KEM_SHARED_SECRET_LENGTH,
  KYBER1024_CIPHERTEXT_LENGTH,
  KYBER1024_PUBLIC_KEY_LENGTH,
  KYBER1024_SECRET_KEY_LENGTH,
} from '../constants.js';
import { UsageError } from '../errors.js';
import type { Rng } from '../rng.js';
import { encapsulationKeyReduced } from './ml-kem.js';
import type { CryptoProvider } from './provider.js';

/** WP-KEYS-09: bytes a Kyber-1024 key generation draws (the ML-KEM seed `d ‖ z`). */
export const KEM_KEYGEN_SEED_LENGTH = 64;
/** WP-KEYS-09: bytes a Kyber-1024 encapsulation draws (hashed with SHA3-256 before use). */
export const KEM_ENCAPSULATION_SEED_LENGTH = 32;

/** A Kyber-1024 key pair in libsignal's encoding (`0x08 ‖ raw`). */
export interface KemKeyPair {
  /** `0x08 ‖ 1568 bytes`. */
  readonly publicKey: Uint8Array;
  /** `0x08 ‖ 3168 bytes`. */
  readonly secretKey: Uint8Array;
}

/** The result of an encapsulation: the ciphertext to send and the secret to keep. */
export interface KemEncapsulation {
  /** `0x08 ‖ 1568 bytes`. */
  readonly ciphertext: Uint8Array;
  /** 32 bytes. */
  readonly sharedSecret: Uint8Array;
}

/** Throws {@link UsageError} unless `encoded` is `0x08 ‖ rawLength bytes`; returns the raw view. */
function rawOf(name: string, encoded: Uint8Array, rawLength: number): Uint8Array {
  if (!(encoded instanceof Uint8Array) || encoded.length !== rawLength + 1) {
    throw new UsageError(`${name} must be ${rawLength + 1} bytes (decode it first)`);
  }
  if (encoded[0] !== KEM_KEY_TYPE_KYBER1024) throw new UsageError(`${name} must start with type byte 0x08`);
  return encoded.subarray(1);
}

/** Kyber v3.02 Alg. 8 step 4 / Alg. 9 step 8: `SHAKE256(K̄ ‖ H(ct), 32)` with `H` = SHA3-256. */
function roundThreeKdf(crypto: CryptoProvider, kBar: Uint8Array, rawCiphertext: Uint8Array): Uint8Array {
  return crypto.sha3.shake256(
    concatBytes(kBar, crypto.sha3.sha3_256(rawCiphertext)),
    KEM_SHARED_SECRET_LENGTH,
  );
}

/**
 * FIPS 203 §7.2 encapsulation-key check on a raw 1568-byte key: every 12-bit coefficient of t̂ is
 * below q. noble refuses to encapsulate to a key that fails it, so spec/keys.ts rejects such a key
 * when decoding it (an honest key always passes).
 */
export function kemPublicKeyCoefficientsReduced(rawPublicKey: Uint8Array): boolean {
  return encapsulationKeyReduced(rawPublicKey);
}

/**
 * Generates a Kyber-1024 key pair from exactly one draw of 64 bytes (WP-KEYS-09), used as the
 * ML-KEM seed `d ‖ z`.
 */
export function kemGenerateKeyPair(crypto: CryptoProvider, rng: Rng): KemKeyPair {
  const seed = rng.randomBytes(KEM_KEYGEN_SEED_LENGTH);
  const { publicKey, secretKey } = crypto.mlKem1024.keygen(seed);
  return {
    publicKey: concatBytes(Uint8Array.of(KEM_KEY_TYPE_KYBER1024), publicKey),
    secretKey: concatBytes(Uint8Array.of(KEM_KEY_TYPE_KYBER1024), secretKey),
  };
}

/**
 * Encapsulates to a decoded `0x08 ‖ 1568`-byte public key with exactly one draw of 32 bytes
 * (WP-KEYS-09), applying the round-3 wrapper (WP-KEYS-08). Throws {@link UsageError} on a wrong
 * length or type byte, or a key that fails the FIPS 203 check (decode it with spec/keys.ts first).
 */
export function kemEncapsulate(crypto: CryptoProvider, publicKey: Uint8Array, rng: Rng): KemEncapsulation {
  const rawPublicKey = rawOf('publicKey', publicKey, KYBER1024_PUBLIC_KEY_LENGTH);
  if (!kemPublicKeyCoefficientsReduced(rawPublicKey)) {
    throw new UsageError('publicKey has a coefficient ≥ q (decode it first)');
  }
  const seed = rng.randomBytes(KEM_ENCAPSULATION_SEED_LENGTH);
  // WP-KEYS-08: round 3 hashes the random seed before use (Kyber v3.02 Alg. 8 step 1).
  const m = crypto.sha3.sha3_256(seed);
  const { cipherText, sharedSecret: kBar } = crypto.mlKem1024.encapsulate(rawPublicKey, m);
  m.fill(0);
  const sharedSecret = roundThreeKdf(crypto, kBar, cipherText);
  kBar.fill(0);
  return {
    ciphertext: concatBytes(Uint8Array.of(KEM_KEY_TYPE_KYBER1024), cipherText),
    sharedSecret,
  };
}

/**
 * Decapsulates a decoded `0x08 ‖ 1568`-byte ciphertext with a `0x08 ‖ 3168`-byte secret key,
 * applying the round-3 wrapper (WP-KEYS-08). An invalid ciphertext yields an unpredictable secret
 * (implicit rejection), never an error. Throws {@link UsageError} on a wrong length or type byte,
 * or a secret key whose embedded public-key hash does not match (a corrupted local key).
 */
export function kemDecapsulate(
  crypto: CryptoProvider,
  secretKey: Uint8Array,
  ciphertext: Uint8Array,
): Uint8Array {
  const rawSecretKey = rawOf('secretKey', secretKey, KYBER1024_SECRET_KEY_LENGTH);
  const rawCiphertext = rawOf('ciphertext', ciphertext, KYBER1024_CIPHERTEXT_LENGTH);
  const kBar = crypto.mlKem1024.decapsulate(rawCiphertext, rawSecretKey);
  if (kBar === null) throw new UsageError('secretKey is not a consistent Kyber-1024 secret key');
  const sharedSecret = roundThreeKdf(crypto, kBar, rawCiphertext);
  kBar.fill(0);
  return sharedSecret;
}
