/**
 * The key schedule of PQXDH and the Double Ratchet (WP-PQXDH-03, WP-DR-01, WP-DR-02, WP-DR-03).
 * References: RFC 5869 (HKDF), RFC 2104 (HMAC), the Signal specifications "The PQXDH Key Agreement
 * Protocol" §3.3 and "The Double Ratchet Algorithm" §5.2 as instantiated by libsignal
 * (rust/protocol/src/pqxdh.rs and ratchet/keys.rs, read for facts only):
 *
 * ```text
 * PQXDH   RK ‖ CK ‖ PQR = HKDF-SHA256(salt = none, IKM = 0xFF×32 ‖ DH1 ‖ … ‖ DHn ‖ SS,
 *                                     info = "WhisperText_X25519_SHA-256_CRYSTALS-KYBER-1024", 96)
 * KDF_RK  RK' ‖ CK      = HKDF-SHA256(salt = RK, IKM = dh, info = "WhisperRatchet", 64)
 * KDF_CK  seed          = HMAC-SHA256(CK, 0x01);  CK' = HMAC-SHA256(CK, 0x02)
 * keys    cipher ‖ mac ‖ iv = HKDF-SHA256(salt = none, IKM = seed, info = "WhisperMessageKeys", 80)
 * ```
 *
 * "salt = none" is RFC 5869's "not provided", i.e. 32 zero bytes; we pass an empty salt, which
 * HMAC treats identically (both pad to the same zero block).
 * @module
 */
import { concatBytes, utf8 } from './bytes.js';
import { KDF_RK_INFO, MESSAGE_KEYS_INFO, PQXDH_INFO, X25519_KEY_LENGTH } from './constants.js';
import type { CryptoProvider } from './crypto/provider.js';
import { UsageError } from './errors.js';

/** Length of root keys, chain keys, message-key seeds and the PQR key. */
export const KDF_KEY_LENGTH = 32;
/** AES-CBC IV length in the message keys. */
const IV_LENGTH = 16;

const EMPTY_SALT = new Uint8Array(0);
const KDF_RK_INFO_BYTES = utf8(KDF_RK_INFO);
const MESSAGE_KEYS_INFO_BYTES = utf8(MESSAGE_KEYS_INFO);
const PQXDH_INFO_BYTES = utf8(PQXDH_INFO);
/** WP-DR-02: HMAC input deriving a message-key seed. */
const MESSAGE_KEY_SEED_INPUT = Uint8Array.of(0x01);
/** WP-DR-02: HMAC input deriving the next chain key. */
const CHAIN_KEY_SEED_INPUT = Uint8Array.of(0x02);
/** WP-PQXDH-03: 32 bytes of 0xFF prefixed to the PQXDH IKM (X25519 discontinuity bytes). */
const PQXDH_IKM_PREFIX = new Uint8Array(32).fill(0xff);
/** Smallest and largest number of DH outputs in PQXDH (without and with a one-time prekey). */
const PQXDH_MIN_DH = 3;
const PQXDH_MAX_DH = 4;

/** Message keys for one message (WP-DR-03). */
export interface MessageKeys {
  /** AES-256 key, 32 bytes. */
  readonly cipherKey: Uint8Array;
  /** HMAC-SHA256 key, 32 bytes. */
  readonly macKey: Uint8Array;
  /** AES-CBC IV, 16 bytes (derived, never sent). */
  readonly iv: Uint8Array;
}

/** Throws {@link UsageError} unless `value` is a `length`-byte `Uint8Array`. */
function requireKey(name: string, value: Uint8Array, length: number): void {
  if (!(value instanceof Uint8Array) || value.length !== length) {
    throw new UsageError(`${name} must be ${length} bytes`);
  }
}

/**
 * WP-DR-01: the root-key KDF. `RK' ‖ CK = HKDF-SHA256(salt = RK, IKM = dh, "WhisperRatchet", 64)`.
 * `dhOutput` is the validated X25519 output of spec/keys.ts `dh`.
 */
export function kdfRk(
  c: CryptoProvider,
  rootKey: Uint8Array,
  dhOutput: Uint8Array,
): { readonly rootKey: Uint8Array; readonly chainKey: Uint8Array } {
  requireKey('rootKey', rootKey, KDF_KEY_LENGTH);
  requireKey('dhOutput', dhOutput, X25519_KEY_LENGTH);
  // WP-DR-01: salt = current root key, IKM = DH output, info "WhisperRatchet", 64 bytes.
  const okm = c.hkdfSha256(dhOutput, rootKey, KDF_RK_INFO_BYTES, 2 * KDF_KEY_LENGTH);
  return { rootKey: okm.slice(0, KDF_KEY_LENGTH), chainKey: okm.slice(KDF_KEY_LENGTH, 2 * KDF_KEY_LENGTH) };
}

/** WP-DR-02: the chain-key KDF. `seed = HMAC(CK, 0x01)`, `CK' = HMAC(CK, 0x02)`. */
export function kdfCk(
  c: CryptoProvider,
  chainKey: Uint8Array,
): { readonly messageKeySeed: Uint8Array; readonly nextChainKey: Uint8Array } {
  requireKey('chainKey', chainKey, KDF_KEY_LENGTH);
  return {
    // WP-DR-02: message-key seed = HMAC-SHA256(CK, 0x01).
    messageKeySeed: c.hmacSha256(chainKey, MESSAGE_KEY_SEED_INPUT),
    // WP-DR-02: next chain key = HMAC-SHA256(CK, 0x02).
    nextChainKey: c.hmacSha256(chainKey, CHAIN_KEY_SEED_INPUT),
  };
}

/**
 * WP-DR-03: message keys from a message-key seed.
 * `cipher_key[32] ‖ mac_key[32] ‖ iv[16] = HKDF-SHA256(salt = none, IKM = seed, "WhisperMessageKeys", 80)`.
 */
export function deriveMessageKeys(c: CryptoProvider, messageKeySeed: Uint8Array): MessageKeys {
  requireKey('messageKeySeed', messageKeySeed, KDF_KEY_LENGTH);
  // WP-DR-03: salt none (empty), info "WhisperMessageKeys", 80 bytes split 32/32/16.
  const okm = c.hkdfSha256(
    messageKeySeed,
    EMPTY_SALT,
    MESSAGE_KEYS_INFO_BYTES,
    2 * KDF_KEY_LENGTH + IV_LENGTH,
  );
  return {
    cipherKey: okm.slice(0, KDF_KEY_LENGTH),
    macKey: okm.slice(KDF_KEY_LENGTH, 2 * KDF_KEY_LENGTH),
    iv: okm.slice(2 * KDF_KEY_LENGTH, 2 * KDF_KEY_LENGTH + IV_LENGTH),
  };
}

/**
 * WP-PQXDH-03: the PQXDH master secret. `dhOutputs` are the 3 or 4 validated DH outputs in the
 * order of the rule (DH(IK_A, SPK_B), DH(EK_A, IK_B), DH(EK_A, SPK_B), [DH(EK_A, OPK_B)]); the
 * Kyber shared secret always comes last.
 */
export function pqxdhSecret(
  c: CryptoProvider,
  dhOutputs: readonly Uint8Array[],
  kemSharedSecret: Uint8Array,
): { readonly rootKey: Uint8Array; readonly chainKey: Uint8Array; readonly pqrKey: Uint8Array } {
  if (!Array.isArray(dhOutputs) || dhOutputs.length < PQXDH_MIN_DH || dhOutputs.length > PQXDH_MAX_DH) {
    throw new UsageError(`PQXDH takes ${PQXDH_MIN_DH} or ${PQXDH_MAX_DH} DH outputs`);
  }
  dhOutputs.forEach((output, i) => requireKey(`dhOutputs[${i}]`, output, X25519_KEY_LENGTH));
  requireKey('kemSharedSecret', kemSharedSecret, KDF_KEY_LENGTH);
  // WP-PQXDH-03: IKM = 0xFF×32 ‖ DH outputs in order ‖ Kyber shared secret (always last).
  const ikm = concatBytes(PQXDH_IKM_PREFIX, ...dhOutputs, kemSharedSecret);
  // WP-PQXDH-03: salt none, info "WhisperText_X25519_SHA-256_CRYSTALS-KYBER-1024", 96 bytes.
  const okm = c.hkdfSha256(ikm, EMPTY_SALT, PQXDH_INFO_BYTES, 3 * KDF_KEY_LENGTH);
  ikm.fill(0);
  return {
    rootKey: okm.slice(0, KDF_KEY_LENGTH),
    chainKey: okm.slice(KDF_KEY_LENGTH, 2 * KDF_KEY_LENGTH),
    pqrKey: okm.slice(2 * KDF_KEY_LENGTH, 3 * KDF_KEY_LENGTH),
  };
}
