/**
 * The noble provider's SHA-3 and ML-KEM-1024: `@noble/hashes` and `@noble/post-quantum`'s
 * `ml_kem1024` behind the provider's {@link Sha3Functions} and {@link MlKem1024} shapes. Pure
 * JavaScript; runs in browsers.
 *
 * Most of an encapsulation's work, and of a decapsulation's (which re-encrypts to the key pair's
 * own public key), is expanding the matrix Â from the public key's seed ρ, and a simulated run
 * encapsulates to one last-resort key many times. noble's `prepare(publicKey)` expands Â once and
 * gives the same results as the one-shot calls; the last {@link PREPARED_KEY_MEMO_MAX} prepared
 * public keys are kept (public data only), each used only for identical key bytes.
 * @module
 */
import { sha3_256, sha3_512, shake128, shake256 } from '@noble/hashes/sha3.js';
import { ml_kem1024, type KEMPrepared } from '@noble/post-quantum/ml-kem.js';
import { equalBytes } from '../bytes.js';
import { KYBER1024_PUBLIC_KEY_LENGTH, KYBER1024_SECRET_KEY_LENGTH } from '../constants.js';
import { toHex } from '../hex.js';
import { BoundedLru } from '../lru.js';
import { ML_KEM1024_T_HAT_BYTES, type MlKem1024, type Sha3Functions } from './ml-kem.js';

/** noble's SHA-3 family. */
export const nobleSha3: Sha3Functions = Object.freeze({
  sha3_256: (data: Uint8Array) => sha3_256(data),
  sha3_512: (a: Uint8Array, b: Uint8Array) => sha3_512.create().update(a).update(b).digest(),
  shake128: (data: Uint8Array, length: number) => shake128(data, { dkLen: length }),
  shake256: (data: Uint8Array, length: number) => shake256(data, { dkLen: length }),
});

/** Bound of the prepared-key memo (module doc): about 12 KiB per key (Â, t̂ and the key). */
export const PREPARED_KEY_MEMO_MAX = 256;

/** Prepared public keys by the hex of their seed ρ. */
const preparedKeys = new BoundedLru<string, KEMPrepared>(PREPARED_KEY_MEMO_MAX);

/**
 * noble's prepared form of a raw 1568-byte public key, from the memo when the same key bytes were
 * prepared recently. Throws (as `prepare` does) on a key that fails the FIPS 203 modulus check.
 */
function preparedKey(rawPublicKey: Uint8Array): KEMPrepared {
  const name = toHex(rawPublicKey.subarray(ML_KEM1024_T_HAT_BYTES));
  const known = preparedKeys.get(name);
  // Two keys may share ρ (t̂ differs): only identical bytes reuse the prepared key.
  if (known !== undefined && equalBytes(known.publicKey, rawPublicKey)) return known;
  const prepared = ml_kem1024.prepare(rawPublicKey);
  preparedKeys.set(name, prepared);
  return prepared;
}

/**
 * ML-KEM decapsulation with the key pair's own public key (embedded in the secret key, FIPS 203
 * §7.3: `dk = dk_PKE ‖ ek ‖ H(ek) ‖ z`) prepared. The prepared call checks the same `H(ek)` the
 * one-shot call does; an embedded key that cannot be prepared (it fails the modulus check, so the
 * secret key is corrupt) takes the one-shot path, which decides as it always did. Throws as noble
 * does when the stored hash does not match.
 */
function decapsulateRaw(rawCiphertext: Uint8Array, rawSecretKey: Uint8Array): Uint8Array {
  const embedded = rawSecretKey.subarray(
    KYBER1024_SECRET_KEY_LENGTH - 64 - KYBER1024_PUBLIC_KEY_LENGTH,
    KYBER1024_SECRET_KEY_LENGTH - 64,
  );
  let prepared: KEMPrepared;
  try {
    prepared = preparedKey(embedded);
  } catch {
    return ml_kem1024.decapsulate(rawCiphertext, rawSecretKey);
  }
  return prepared.decapsulate(rawCiphertext, rawSecretKey);
}

/** noble's ML-KEM-1024 with the prepared-key memo. */
export const nobleMlKem1024: MlKem1024 = Object.freeze({
  keygen: (seed: Uint8Array) => ml_kem1024.keygen(seed),
  encapsulate: (publicKey: Uint8Array, m: Uint8Array) => preparedKey(publicKey).encapsulate(m),
  decapsulate(cipherText: Uint8Array, secretKey: Uint8Array): Uint8Array | null {
    try {
      return decapsulateRaw(cipherText, secretKey);
    } catch {
      return null;
    }
  },
});
