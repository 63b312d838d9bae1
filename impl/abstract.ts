/**
 * impl/'s projection of its plain state onto spec/'s abstract state (spec/abstract.ts): what traces
 * record and what the model cross-check compares. Fingerprints only, never keys.
 * @module
 */
import type { SessionAbstract, SessionRecordAbstract } from '../spec/abstract.js';
import type { CryptoProvider } from '../spec/crypto/provider.js';
import { fingerprint } from '../spec/keys.js';
import type { SessionRecord, SessionState } from './session-state.js';

/** Projects one session. */
export function abstractSession(c: CryptoProvider, s: SessionState): SessionAbstract {
  return {
    phase: s.pendingPreKey === null ? 'established' : 'initiating',
    version: s.version,
    localIdentityFp: fingerprint(c, s.localIdentityKey),
    remoteIdentityFp: fingerprint(c, s.remoteIdentityKey),
    baseKeyFp: fingerprint(c, s.aliceBaseKey),
    rootKeyFp: fingerprint(c, s.rootKey),
    senderRatchetKeyFp: fingerprint(c, s.senderRatchetKey.publicKey),
    senderChainIndex: s.senderChainKey.index,
    previousCounter: s.previousCounter,
    receiverChains: s.receiverChains.map((r) => ({
      ratchetKeyFp: fingerprint(c, r.ratchetKey),
      chainIndex: r.chainKey.index,
      skippedKeys: r.skipped.length,
    })),
  };
}

/** Projects a session record. */
export function abstractSessionRecord(c: CryptoProvider, record: SessionRecord): SessionRecordAbstract {
  return {
    current: record.current === null ? null : abstractSession(c, record.current),
    archived: record.archived.map((s) => abstractSession(c, s)),
  };
}
