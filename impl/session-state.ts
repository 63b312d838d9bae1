/**
 * The plain data of a Double Ratchet session and of a session record (WHITEPAPER.md, "Double
 * Ratchet" and "Session records"). Everything is readonly data: strings, safe integers, byte arrays
 * and arrays of these. Steps return new values; nothing here is mutated after construction.
 * @module
 */
import type { KeyPair } from '../spec/keys.js';

/** A chain key and the index of the next message key it derives. */
export interface ChainKey {
  readonly key: Uint8Array;
  readonly index: number;
}

/** The seed of a skipped message's key (WP-DR-08), kept until used or dropped by the cap. */
export interface SkippedMessageKey {
  readonly index: number;
  readonly seed: Uint8Array;
}

/** A receiving chain (WP-DR-09): the peer's ratchet key, its chain key and skipped keys, newest first. */
export interface ReceiverChain {
  readonly ratchetKey: Uint8Array;
  readonly chainKey: ChainKey;
  readonly skipped: readonly SkippedMessageKey[];
}

/** What the initiator repeats in every PreKey message until a reply decrypts (WP-PQXDH-09). */
export interface PendingPreKey {
  readonly preKeyId: number | null;
  readonly signedPreKeyId: number;
  readonly kyberPreKeyId: number;
  readonly kyberCiphertext: Uint8Array;
  readonly baseKey: Uint8Array;
  /** Clock time (ms) when the session was created, for WP-PQXDH-11. */
  readonly createdAt: number;
}

/** One Double Ratchet session with one peer device. */
export interface SessionState {
  readonly version: number;
  readonly localIdentityKey: Uint8Array;
  readonly remoteIdentityKey: Uint8Array;
  readonly localRegistrationId: number;
  readonly remoteRegistrationId: number;
  /** The initiator's base key; names the session on both sides (WP-PQXDH-10). */
  readonly aliceBaseKey: Uint8Array;
  readonly rootKey: Uint8Array;
  readonly senderRatchetKey: KeyPair;
  readonly senderChainKey: ChainKey;
  readonly previousCounter: number;
  /** Receiving chains, oldest first. */
  readonly receiverChains: readonly ReceiverChain[];
  readonly pendingPreKey: PendingPreKey | null;
}

/** WP-REC-01: a current session and archived ones, newest first. */
export interface SessionRecord {
  readonly current: SessionState | null;
  readonly archived: readonly SessionState[];
}

/** The empty record: no session with the peer yet. */
export const EMPTY_SESSION_RECORD: SessionRecord = Object.freeze({
  current: null,
  archived: Object.freeze([]),
});
