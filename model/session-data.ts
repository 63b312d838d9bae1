/**
 * The session machine's own plain data (WHITEPAPER.md §6.3 "Double Ratchet", §6.4 "Session
 * records", §6.2 "PQXDH"): sessions, session records and the responder's prekey store, as the model keeps them
 * in its machine context. model/ never imports impl/, so these types are written here a second
 * time on purpose (ARCHITECTURE.md, "Why impl/ and model/ never import each other"); only the
 * vocabulary (key pairs, bundles, parsed messages) comes from spec/.
 *
 * Everything is readonly data: strings, safe integers, booleans, `Uint8Array` and arrays of these.
 * No `Map`, `Set`, class or function, so a machine snapshot is plain data.
 *
 * The prekey-store field names (`keyId`, `keyPair`, `signature`, `publicKey`, `secretKey`,
 * `lastResort`) are the whitepaper's words; a store built by another engine with the same names
 * can be handed to the machine as it is.
 * @module
 */
import type { KeyPair } from '../spec/keys.js';

/** A chain key and the index of the next message key it derives (WP-DR-02). */
export interface ChainKeyData {
  readonly key: Uint8Array;
  readonly index: number;
}

/** The seed of a skipped message's key (WP-DR-08), kept until used (WP-DR-10) or dropped by the cap. */
export interface SkippedKeyData {
  readonly index: number;
  readonly seed: Uint8Array;
}

/** A receiving chain (WP-DR-09): the peer's ratchet key, its chain key, skipped keys newest first. */
export interface ReceiverChainData {
  readonly ratchetKey: Uint8Array;
  readonly chainKey: ChainKeyData;
  /** Newest first, at most MAX_MESSAGE_KEYS (WP-DR-08). */
  readonly skipped: readonly SkippedKeyData[];
}

/** The PQXDH header an initiator repeats in every message until a reply decrypts (WP-PQXDH-09). */
export interface PendingPreKeyData {
  readonly preKeyId: number | null;
  readonly signedPreKeyId: number;
  readonly kyberPreKeyId: number;
  readonly kyberCiphertext: Uint8Array;
  readonly baseKey: Uint8Array;
  /** Clock time (ms) when the session was created, for WP-PQXDH-11. */
  readonly createdAt: number;
}

/** One Double Ratchet session with one peer device. */
export interface SessionData {
  readonly version: number;
  readonly localIdentityKey: Uint8Array;
  readonly remoteIdentityKey: Uint8Array;
  readonly localRegistrationId: number;
  readonly remoteRegistrationId: number;
  /** The initiator's base key EK_A: names the session on both sides (WP-PQXDH-10). */
  readonly aliceBaseKey: Uint8Array;
  readonly rootKey: Uint8Array;
  readonly senderRatchetKey: KeyPair;
  readonly senderChainKey: ChainKeyData;
  readonly previousCounter: number;
  /** Receiving chains, oldest first, at most MAX_RECEIVER_CHAINS (WP-DR-09). */
  readonly receiverChains: readonly ReceiverChainData[];
  /** Non-null while the session still wraps its messages as PreKey messages (WP-PQXDH-09). */
  readonly pendingPreKey: PendingPreKeyData | null;
}

/** WP-REC-01: a current session and archived ones, newest first (at most ARCHIVED_STATES_MAX_LENGTH). */
export interface SessionRecordData {
  readonly current: SessionData | null;
  readonly archived: readonly SessionData[];
}

/** The empty record: no session with the peer yet (WP-REC-05). */
export const EMPTY_RECORD: SessionRecordData = Object.freeze({
  current: null,
  archived: Object.freeze([]),
});

/** A signed prekey with its id and its signature over the 33-byte public encoding. */
export interface SignedPreKeyData {
  readonly keyId: number;
  readonly keyPair: KeyPair;
  readonly signature: Uint8Array;
}

/** A one-time EC prekey (WP-PQXDH-06: deleted after the first message that used it decrypts). */
export interface OneTimePreKeyData {
  readonly keyId: number;
  readonly keyPair: KeyPair;
}

/** A Kyber-1024 prekey `0x08 ‖ …` (WP-PQXDH-07: one-time keys deleted on use, last-resort kept). */
export interface KyberPreKeyData {
  readonly keyId: number;
  readonly publicKey: Uint8Array;
  readonly secretKey: Uint8Array;
  readonly signature: Uint8Array;
  readonly lastResort: boolean;
}

/** The prekeys a responder still holds (the identity key pair travels separately). */
export interface PreKeyStoreData {
  readonly signedPreKeys: readonly SignedPreKeyData[];
  readonly oneTimePreKeys: readonly OneTimePreKeyData[];
  readonly kyberPreKeys: readonly KyberPreKeyData[];
}

/** Which prekeys a new responder session used; consumed only once its first message decrypts. */
export interface PreKeysUsedData {
  readonly preKeyId: number | null;
  readonly kyberPreKeyId: number;
}
