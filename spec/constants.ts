/**
 * Constants and limits of the session layer, with the reason for each (WHITEPAPER.md, "Limits").
 * Values match libsignal (rust/protocol/src/consts.rs) so that both accept and reject the same
 * messages.
 * @module
 */

/**
 * WP-DR-07: a message whose counter is more than this far ahead of its receiving chain is rejected
 * before any key is derived (bounds the work a malicious sender can cause).
 */
export const MAX_FORWARD_JUMPS = 25_000;

/**
 * WP-DR-08: skipped message keys kept per receiving chain. A cap, not a rejection: when full, the
 * oldest key is dropped and a message that needed it later fails like any undecryptable message.
 */
export const MAX_MESSAGE_KEYS = 2_000;

/** WP-DR-09: receiving chains kept per session; the oldest is dropped beyond this. */
export const MAX_RECEIVER_CHAINS = 5;

/** WP-REC-01: archived (previous) sessions kept per session record; the oldest is dropped beyond this. */
export const ARCHIVED_STATES_MAX_LENGTH = 40;

/**
 * WP-PQXDH-11: an initiator session whose PreKey message was never answered stops encrypting after
 * this many milliseconds (30 days), so a stale bundle is not used forever.
 */
export const MAX_UNACKNOWLEDGED_SESSION_AGE_MS = 30 * 24 * 60 * 60 * 1000;

/** WP-DR-12: the session and message version this profile speaks (libsignal's PQXDH version). */
export const CIPHERTEXT_MESSAGE_CURRENT_VERSION = 4;

/** WP-WIRE-01: the version byte, `(version << 4) | current version`. */
export const VERSION_BYTE = (CIPHERTEXT_MESSAGE_CURRENT_VERSION << 4) | CIPHERTEXT_MESSAGE_CURRENT_VERSION;

/** WP-DR-05: bytes of the truncated HMAC-SHA256 appended to each SignalMessage. */
export const MAC_LENGTH = 8;

/** WP-KEYS-01: type byte of an X25519 public key encoding. */
export const EC_KEY_TYPE_DJB = 0x05;
/** WP-KEYS-01: length of an X25519 public key encoding (`0x05 ‖ u`). */
export const EC_PUBLIC_KEY_LENGTH = 33;
/** Raw X25519 key and shared-secret length. */
export const X25519_KEY_LENGTH = 32;
/** WP-KEYS-07: XEdDSA signature length. */
export const SIGNATURE_LENGTH = 64;

/** WP-KEYS-05: type byte of a Kyber-1024 (round 3) key or ciphertext encoding. */
export const KEM_KEY_TYPE_KYBER1024 = 0x08;
/** Raw Kyber-1024 public key length. */
export const KYBER1024_PUBLIC_KEY_LENGTH = 1568;
/** Raw Kyber-1024 secret key length. */
export const KYBER1024_SECRET_KEY_LENGTH = 3168;
/** Raw Kyber-1024 ciphertext length. */
export const KYBER1024_CIPHERTEXT_LENGTH = 1568;
/** Kyber shared secret length. */
export const KEM_SHARED_SECRET_LENGTH = 32;

/** WP-PQXDH-03: HKDF info for the PQXDH secret. */
export const PQXDH_INFO = 'WhisperText_X25519_SHA-256_CRYSTALS-KYBER-1024';
/** WP-DR-01: HKDF info for the root-key KDF. */
export const KDF_RK_INFO = 'WhisperRatchet';
/** WP-DR-03: HKDF info for message keys. */
export const MESSAGE_KEYS_INFO = 'WhisperMessageKeys';

/** Largest registration id and prekey id values (uint32 on the wire). */
export const MAX_UINT32 = 0xffff_ffff;
