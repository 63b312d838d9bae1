/**
 * The abstract-state projection both engines report (impl/ from its plain state, model/ from its
 * machine context) and traces record. It is what the cross-checks compare when two engines run in
 * lockstep: phases, counters, record shapes and key fingerprints, never keys.
 * @module
 */

/** One receiving chain of a session, abstracted. */
export interface ReceiverChainAbstract {
  /** Fingerprint of the peer's ratchet public key for this chain. */
  readonly ratchetKeyFp: string;
  /** Index of the next message key to derive. */
  readonly chainIndex: number;
  /** Stored keys of skipped messages (≤ MAX_MESSAGE_KEYS). */
  readonly skippedKeys: number;
}

/** A Double Ratchet session, abstracted. */
export interface SessionAbstract {
  /** `initiating` until a message on the session decrypts (PreKey wrapping still on), then `established`. */
  readonly phase: 'initiating' | 'established';
  readonly version: number;
  readonly localIdentityFp: string;
  readonly remoteIdentityFp: string;
  /** Fingerprint of the initiator's base key: names the session across both parties. */
  readonly baseKeyFp: string;
  readonly rootKeyFp: string;
  readonly senderRatchetKeyFp: string;
  readonly senderChainIndex: number;
  readonly previousCounter: number;
  /** Receiving chains, oldest first (≤ MAX_RECEIVER_CHAINS). */
  readonly receiverChains: readonly ReceiverChainAbstract[];
}

/** A session record, abstracted: current session and archived ones, newest first. */
export interface SessionRecordAbstract {
  readonly current: SessionAbstract | null;
  readonly archived: readonly SessionAbstract[];
}
