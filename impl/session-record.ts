/**
 * Session records as libsignal keeps them (WHITEPAPER.md, "Session records", rules WP-REC-01..05,
 * WP-PQXDH-09..11): one current session and up to 40 archived ones, newest first. This is the
 * session-layer API the rest of Lockstep uses: process a bundle, encrypt, decrypt a SignalMessage,
 * decrypt a PreKey message. Every function returns a new record (and prekey state) on success and
 * leaves its inputs untouched on failure.
 * @module
 */
import { ARCHIVED_STATES_MAX_LENGTH, MAX_UNACKNOWLEDGED_SESSION_AGE_MS } from '../spec/constants.js';
import { equalBytes } from '../spec/bytes.js';
import type { Env } from '../spec/env.js';
import { accept, reject, type ProtocolError, type Result } from '../spec/errors.js';
import { parsePreKeySignalMessage, parseSignalMessage, type ParsedSignalMessage } from '../spec/wire.js';
import { ratchetDecrypt, ratchetEncrypt, type CiphertextMessage } from './double-ratchet.js';
import { acceptSession, consumePreKeys, initiateSession, type LocalIdentity } from './pqxdh.js';
import type { PreKeyBundle, PreKeyState } from './prekeys.js';
import type { SessionRecord, SessionState } from './session-state.js';

/** WP-REC-01: makes `session` current, archiving the old current session at the head. */
export function promoteSession(record: SessionRecord, session: SessionState): SessionRecord {
  const archived = record.current === null ? record.archived : [record.current, ...record.archived];
  // WP-REC-01: beyond ARCHIVED_STATES_MAX_LENGTH the oldest archived session is dropped.
  return { current: session, archived: archived.slice(0, ARCHIVED_STATES_MAX_LENGTH) };
}

/** WP-REC-02: promotes archived session `index` (after it decrypted) to current. */
function promoteArchived(record: SessionRecord, index: number, session: SessionState): SessionRecord {
  return promoteSession(
    { current: record.current, archived: record.archived.filter((_, i) => i !== index) },
    session,
  );
}

/**
 * Processes a peer's prekey bundle into a new current session (the old one is archived). The record
 * is unchanged if the bundle is rejected.
 */
export function processPreKeyBundle(
  env: Env,
  record: SessionRecord,
  local: LocalIdentity,
  bundle: PreKeyBundle,
  now: number,
): Result<SessionRecord> {
  const session = initiateSession(env, local, bundle, now);
  if (!session.ok) return session;
  return accept(promoteSession(record, session.value));
}

/**
 * WP-PQXDH-11: whether the current session may still encrypt: it exists and, if its PreKey messages
 * were never answered, it is not older than 30 days. Callers that get `false` fetch a new bundle.
 */
export function hasUsableSenderChain(record: SessionRecord, now: number): boolean {
  const current = record.current;
  if (current === null) return false;
  const pending = current.pendingPreKey;
  return pending === null || now - pending.createdAt <= MAX_UNACKNOWLEDGED_SESSION_AGE_MS;
}

/** Encrypts on the current session: a PreKey message until acknowledged, then a SignalMessage. */
export function encryptMessage(
  env: Env,
  record: SessionRecord,
  plaintext: Uint8Array,
  now: number,
): Result<{ readonly record: SessionRecord; readonly message: CiphertextMessage }> {
  const current = record.current;
  // WP-REC-05: nothing to encrypt with.
  if (current === null) return reject('NO_SESSION', 'no session with this peer');
  // WP-PQXDH-11: an unanswered session stops encrypting after 30 days.
  if (!hasUsableSenderChain(record, now)) {
    return reject('SESSION_UNACKNOWLEDGED_TOO_OLD', 'unacknowledged session is older than 30 days', {
      ageMs: now - (current.pendingPreKey?.createdAt ?? now),
    });
  }
  const { session, message } = ratchetEncrypt(env, current, plaintext);
  return accept({ record: { current: session, archived: record.archived }, message });
}

/** A decryption on a record: the new record and the plaintext. */
export interface DecryptedOnRecord {
  readonly record: SessionRecord;
  readonly plaintext: Uint8Array;
}

/**
 * How a record chooses among its sessions. `sequentialSessions` is the hardened rule set of
 * WHITEPAPER.md WP-SES-18/19 (Cremers–Jacomme–Naska 2023); off, the record behaves as libsignal's
 * and Sesame §3.4 (any session that decrypts becomes current).
 */
export interface RecordPolicy {
  readonly sequentialSessions: boolean;
}

/** libsignal's and Sesame's behaviour: every hardening off. */
export const SPEC_RECORD_POLICY: RecordPolicy = Object.freeze({ sequentialSessions: false });

/**
 * WP-SES-18: a session is established once it holds a receiving chain the peer created after
 * processing one of our ratchet keys of that session, i.e. a second receiving chain (the initiator
 * starts with the responder's signed-prekey chain, the responder with the initiator's first key).
 */
export function isEstablished(session: SessionState): boolean {
  return session.receiverChains.length >= 2;
}

/**
 * WP-SES-18: archived session `index` is superseded when a session ahead of it in the record
 * (the current one or a newer archived one) is established.
 */
export function isSuperseded(record: SessionRecord, index: number): boolean {
  if (record.current !== null && isEstablished(record.current)) return true;
  return record.archived.slice(0, index).some(isEstablished);
}

/** Unsigned byte-wise comparison of two equally long keys: negative, zero or positive. */
function compareKeys(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < a.length && i < b.length; i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d;
  }
  return a.length - b.length;
}

/**
 * WP-SES-22: archived session `session` (as it was before the message) can be one side of a
 * simultaneous initiation: our own initiation that no reply had reached yet (it still holds its
 * pending prekey). Every other archived session was left for a session made after it.
 */
function inCrossing(session: SessionState): boolean {
  return session.pendingPreKey !== null;
}

/**
 * Archived session `index` was tried and decrypted, giving `session`: the record afterwards. With
 * spec behaviour it becomes current (WP-REC-02). With sequential sessions it becomes current only
 * when it is our unanswered initiation (WP-SES-22), the current session is not established and its
 * base key is the greater one (the crossing tie-break of WP-SES-19); otherwise it is updated where
 * it is.
 */
function afterArchivedDecrypt(
  record: SessionRecord,
  index: number,
  session: SessionState,
  policy: RecordPolicy,
): SessionRecord {
  if (!policy.sequentialSessions) return promoteArchived(record, index, session);
  const current = record.current;
  const was = record.archived[index];
  // WP-SES-19: never back to an older session once the current one is established; between two
  // unestablished contenders both parties pick the greater base key. WP-SES-22: only a crossing
  // has two contenders; any other archived session would revive a session left behind (CJN23).
  if (
    current === null ||
    (was !== undefined &&
      inCrossing(was) &&
      !isEstablished(current) &&
      compareKeys(session.aliceBaseKey, current.aliceBaseKey) > 0)
  )
    return promoteArchived(record, index, session);
  return { current, archived: record.archived.map((s, i) => (i === index ? session : s)) };
}

/**
 * WP-SES-18: a superseded session may still decrypt on receiving chains it holds (delayed
 * messages), but never starts a new one: the refusal, or null when the session may try.
 */
function supersededRefusal(
  record: SessionRecord,
  index: number,
  message: ParsedSignalMessage,
  policy: RecordPolicy,
): ProtocolError | null {
  if (!policy.sequentialSessions || !isSuperseded(record, index)) return null;
  const session = record.archived[index];
  if (session === undefined) return null;
  if (session.receiverChains.some((chain) => equalBytes(chain.ratchetKey, message.ratchetKey))) return null;
  // WP-SES-18: a new receiving chain on a superseded session is what session revival needs (CJN23).
  return reject('SESSION_SUPERSEDED', 'a superseded session cannot start a new receiving chain', {
    archivedIndex: index,
  }).error;
}

/**
 * WP-REC-02/03: tries the current session, then archived sessions newest first; the first that
 * decrypts is promoted (with sequential sessions, only as WP-SES-19 allows). A duplicate stops the
 * search. No session decrypting leaves the record as it was.
 */
export function decryptWithRecord(
  env: Env,
  record: SessionRecord,
  message: ParsedSignalMessage,
  policy: RecordPolicy = SPEC_RECORD_POLICY,
): Result<DecryptedOnRecord> {
  // WP-REC-05: no session at all.
  if (record.current === null && record.archived.length === 0)
    return reject('NO_SESSION', 'no session with this peer');
  const errors: ProtocolError[] = [];
  if (record.current !== null) {
    const result = ratchetDecrypt(env, record.current, message);
    if (result.ok)
      return accept({
        record: { current: result.value.session, archived: record.archived },
        plaintext: result.value.plaintext,
      });
    // WP-REC-03: a duplicate stops the search.
    if (result.error.code === 'DUPLICATE_MESSAGE') return result;
    errors.push(result.error);
  }
  for (let index = 0; index < record.archived.length; index++) {
    const archived = record.archived[index];
    if (archived === undefined) continue;
    const refused = supersededRefusal(record, index, message, policy);
    if (refused !== null) {
      errors.push(refused);
      continue;
    }
    const result = ratchetDecrypt(env, archived, message);
    // WP-REC-02: the archived session that decrypts becomes current (WP-SES-19 when sequential).
    if (result.ok)
      return accept({
        record: afterArchivedDecrypt(record, index, result.value.session, policy),
        plaintext: result.value.plaintext,
      });
    // WP-REC-03: a duplicate stops the search.
    if (result.error.code === 'DUPLICATE_MESSAGE') return result;
    errors.push(result.error);
  }
  const only = errors.length === 1 ? errors[0] : undefined;
  if (only !== undefined) return { ok: false, error: only };
  return reject('NO_SESSION_DECRYPTED', 'no session in the record decrypts the message', {
    sessionsTried: errors.length,
  });
}

/** Decrypts a serialized SignalMessage (type 'whisper'). */
export function decryptSignalMessage(
  env: Env,
  record: SessionRecord,
  bytes: Uint8Array,
  policy: RecordPolicy = SPEC_RECORD_POLICY,
): Result<DecryptedOnRecord> {
  const parsed = parseSignalMessage(bytes);
  if (!parsed.ok) return parsed;
  return decryptWithRecord(env, record, parsed.value, policy);
}

/** A decrypted PreKey message: new record, prekeys after consumption, plaintext, and the sender's identity key. */
export interface DecryptedPreKeyMessage extends DecryptedOnRecord {
  readonly prekeys: PreKeyState;
  readonly remoteIdentityKey: Uint8Array;
  /** True when the message created a new session; false when it matched one already held (WP-PQXDH-10). */
  readonly createdSession: boolean;
}

/**
 * Decrypts a serialized PreKeySignalMessage (type 'prekey'). If a session with its base key exists,
 * the inner message is decrypted there (WP-PQXDH-10; with sequential sessions WP-SES-18/19 decide
 * whether it may and whether it becomes current); otherwise PQXDH creates a new session, the
 * current one is archived, and the prekeys it used are consumed only after the inner message
 * decrypts (WP-PQXDH-06/07). The inner message is tried only on that one session (WP-REC-04).
 */
export function decryptPreKeySignalMessage(
  env: Env,
  record: SessionRecord,
  prekeys: PreKeyState,
  bytes: Uint8Array,
  policy: RecordPolicy = SPEC_RECORD_POLICY,
): Result<DecryptedPreKeyMessage> {
  const parsed = parsePreKeySignalMessage(bytes);
  if (!parsed.ok) return parsed;
  const message = parsed.value;
  const matches = (s: SessionState): boolean =>
    s.version === message.messageVersion && equalBytes(s.aliceBaseKey, message.baseKey);

  // WP-PQXDH-10: a retransmitted PreKey message decrypts on the session it created.
  if (record.current !== null && matches(record.current)) {
    const result = ratchetDecrypt(env, record.current, message.inner);
    if (!result.ok) return result;
    return accept({
      record: { current: result.value.session, archived: record.archived },
      prekeys,
      plaintext: result.value.plaintext,
      remoteIdentityKey: message.identityKey,
      createdSession: false,
    });
  }
  const archivedIndex = record.archived.findIndex(matches);
  const archivedMatch = record.archived[archivedIndex];
  if (archivedMatch !== undefined) {
    const refused = supersededRefusal(record, archivedIndex, message.inner, policy);
    if (refused !== null) return { ok: false, error: refused };
    const result = ratchetDecrypt(env, archivedMatch, message.inner);
    if (!result.ok) return result;
    return accept({
      record: afterArchivedDecrypt(record, archivedIndex, result.value.session, policy),
      prekeys,
      plaintext: result.value.plaintext,
      remoteIdentityKey: message.identityKey,
      createdSession: false,
    });
  }

  const created = acceptSession(env, prekeys, message);
  if (!created.ok) return created;
  // WP-REC-04: the inner message is tried on the new session only.
  const result = ratchetDecrypt(env, created.value.session, message.inner);
  if (!result.ok) return result;
  return accept({
    record: promoteSession(record, result.value.session),
    // WP-PQXDH-06/07: prekeys are consumed only now that the message decrypted.
    prekeys: consumePreKeys(prekeys, created.value.used),
    plaintext: result.value.plaintext,
    remoteIdentityKey: message.identityKey,
    createdSession: true,
  });
}

/** Decrypts either message type. */
export function decryptMessage(
  env: Env,
  record: SessionRecord,
  prekeys: PreKeyState,
  message: CiphertextMessage,
  policy: RecordPolicy = SPEC_RECORD_POLICY,
): Result<DecryptedOnRecord & { readonly prekeys: PreKeyState }> {
  if (message.type === 'prekey')
    return decryptPreKeySignalMessage(env, record, prekeys, message.bytes, policy);
  const result = decryptSignalMessage(env, record, message.bytes, policy);
  if (!result.ok) return result;
  return accept({ ...result.value, prekeys });
}
