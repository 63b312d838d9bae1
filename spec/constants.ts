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

/**
 * WP-SRV-20: envelopes one device's mailbox holds until that device acknowledges them. A send that
 * would overflow any target mailbox is refused as a whole (`mailbox-full`) and retried by the
 * sender later, so the bound never drops an accepted message.
 */
export const MAILBOX_CAPACITY = 500;

/** WP-SRV-21: largest ciphertext one device's copy of a message may carry (Signal's 256 KiB). */
export const MAX_ENVELOPE_SIZE = 256 * 1024;

/**
 * WP-SRV-19: accepted (sender, message id) pairs the server remembers per recipient account to make
 * sends idempotent; the oldest is forgotten beyond this. A client's resends of one send happen well
 * within this many later sends to the same account.
 */
export const MESSAGE_ID_DEDUP_WINDOW = 1_000;

/**
 * WP-SRV-08: one-time EC prekeys, and separately one-time Kyber prekeys, the server stores per device
 * (Signal's server accepts 100 per upload). Bounds the directory; devices replenish as keys go.
 */
export const MAX_ONE_TIME_PREKEYS = 100;

/** WP-SRV-23: milliseconds a provisioning message waits for its reader before it is purged (10 min). */
export const PROVISIONING_TTL = 10 * 60 * 1000;

/** WP-SRV-23: largest provisioning message (an encrypted linking payload is a few KiB). */
export const MAX_PROVISIONING_SIZE = 64 * 1024;

/** WP-SRV-25: provisioning messages the relay holds at once. */
export const MAX_PROVISIONING_ENTRIES = 1_024;

/** WP-SRV-24: largest attachment blob (ciphertext) the server stores. */
export const MAX_BLOB_SIZE = 4 * 1024 * 1024;

/** WP-SRV-25: blobs the server stores at once. */
export const MAX_BLOBS = 4_096;

/** WP-SRV-25: accounts the server holds. */
export const MAX_ACCOUNTS = 100_000;

/**
 * WP-DEV-03: most devices one signed device list may hold (primary included). Bounds the list a
 * peer must decode and the fan-out of every send; Signal allows the primary plus a handful of linked
 * devices, WhatsApp four companions, so 16 leaves room without making a send unbounded.
 */
export const MAX_DEVICES_PER_ACCOUNT = 16;

/**
 * WP-PAY-04: largest text and caption of an application payload, in UTF-8 bytes (64 KiB). Longer
 * texts travel as attachments; the bound keeps one decrypted message small.
 */
export const MAX_TEXT_LENGTH = 65_536;

/** WP-PAY-04: most message ids one receipt may acknowledge (bounds a receipt's size and work). */
export const MAX_RECEIPT_IDS = 100;

/**
 * WP-PAY-03: payloads are padded to a multiple of this many bytes (Signal's message padding block),
 * so a ciphertext's length reveals the message length only to the nearest 160 bytes.
 */
export const PAYLOAD_PADDING_BLOCK = 160;

/**
 * WP-ATT-01: largest attachment plaintext, 100 MiB. Bounds the blob store and what one download
 * can force a device to hash and decrypt (Signal's limit is of the same order).
 */
export const MAX_ATTACHMENT_SIZE = 100 * 1024 * 1024;

/** WP-ATT-06: longest attachment content type (RFC 6838 §4.2 allows 127 + 1 + 127 characters). */
export const MAX_CONTENT_TYPE_LENGTH = 255;

/**
 * WP-SES-11: Sesame's MAXLATENCY (§2.2, §3.1): a message not delivered within 30 days is treated as
 * lost, so a stale record older than this (and a complete mailbox drain later) can be deleted.
 */
export const MAX_LATENCY_MS = 30 * 24 * 60 * 60 * 1000;

/**
 * WP-LIFE-07: how often a linked device replaces its signed prekey: 2 days, the interval of Signal's
 * signed-prekey rotation job. The timer belongs to the caller (an application's scheduler, the
 * simulator), which fires `timer.rotate-signed-prekey` at this interval; the device rotates each time
 * it fires. Rotation bounds how long one signed prekey is published, and with it how long a stolen
 * one lets an attacker impersonate anyone to this device (key-compromise impersonation,
 * Kobeissi–Bhargavan–Blanchet 2017) or have a PreKey message without a one-time prekey accepted.
 */
export const SIGNED_PREKEY_ROTATION_INTERVAL = 2 * 24 * 60 * 60 * 1000;

/**
 * WP-LIFE-08: how long a retired signed prekey is still accepted: 30 days from the server's
 * confirmation that it stores a newer one (the archive age of Signal's clients). From that
 * confirmation on the server hands out no bundle naming the retired key, so only PreKey messages
 * made from bundles fetched earlier can still name it, and Sesame treats a message not delivered
 * within MAXLATENCY (`MAX_LATENCY_MS`, also 30 days) as lost. A shorter grace would strand messages
 * the network is still allowed to deliver; a longer one keeps a stolen key useful for longer.
 */
export const SIGNED_PREKEY_GRACE_PERIOD = MAX_LATENCY_MS;

/**
 * WP-LIFE-07: signed prekeys a device holds at most; beyond this the oldest is deleted even within
 * its grace period. Rotating every 2 days with a 30-day grace keeps 16 (the current key and 15
 * retired ones); twice that leaves room for slow confirmations and a caller whose timer runs fast,
 * while a runaway timer still cannot grow the store without bound.
 */
export const MAX_SIGNED_PREKEYS = 32;

/**
 * Sesame §3.3, §6.5: attempts of the send loop per recipient user. An honest server needs at most
 * three (mismatched devices, then stale devices, then accept) unless devices change meanwhile.
 */
export const MAX_SEND_ATTEMPTS = 5;

/** WP-SES-12: message records kept for retry requests (Sesame §4.1); the oldest is dropped beyond this. */
export const MAX_MESSAGE_RECORDS = 1_000;

/** WP-SES-14: resends per message record (Sesame §4.1, §6.5), so forged retry requests cannot make us loop. */
export const MAX_RESENDS = 3;

/**
 * WP-SES-15: device records per user record, stale ones included (Sesame §6.5): twice the 16 devices
 * an account may list, so a full list still fits beside the stale records awaiting deletion.
 */
export const MAX_DEVICE_RECORDS_PER_USER = 32;

/** WP-SES-15: user records per device (Sesame §6.5): bounds what forged senders can make us store. */
export const MAX_USER_RECORDS = 10_000;

/**
 * WP-PQXDH-13: PreKey messages without a one-time prekey a device remembers to refuse their replay
 * (the oldest is forgotten beyond this). Only such messages make entries, and only when a device's
 * one-time prekeys ran out at the server (a device uploads 10 and replenishes below 3); in signed
 * mode only devices of verified lists can make them. 1 024 entries (≈ 70 KiB) cover far more
 * initiations without one-time prekeys than one signed prekey's lifetime sees; a replay becomes
 * possible again only after 1 024 newer such initiations.
 */
export const INITIAL_REPLAY_CACHE_CAPACITY = 1_024;

/**
 * WP-SES-20: peers' sending chains a device remembers for clone detection (the oldest is forgotten
 * beyond this). A session keeps at most MAX_RECEIVER_CHAINS (5) receiving chains, and only chains
 * still held can be evidence; 2 048 entries (≈ 180 KiB) cover 5 chains of about 400 sessions in
 * use. A forgotten chain costs only a missed detection, never a false one.
 */
export const CHAIN_SIGHTINGS_CAPACITY = 2_048;

/** WP-LINK-04: HKDF info deriving the provisioning envelope's AES and HMAC keys. */
export const PROVISIONING_INFO = 'Lockstep_Provisioning_v1';
