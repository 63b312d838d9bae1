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
 * WP-REC-02/03: tries the current session, then archived sessions newest first; the first that
 * decrypts is promoted. A duplicate stops the search. No session decrypting leaves the record as it
 * was.
 */
export function decryptWithRecord(
  env: Env,
  record: SessionRecord,
  message: ParsedSignalMessage,
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
    const result = ratchetDecrypt(env, archived, message);
    // WP-REC-02: the archived session that decrypts becomes current.
    if (result.ok)
      return accept({
        record: promoteArchived(record, index, result.value.session),
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
): Result<DecryptedOnRecord> {
  const parsed = parseSignalMessage(bytes);
  if (!parsed.ok) return parsed;
  return decryptWithRecord(env, record, parsed.value);
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
 * the inner message is decrypted there (WP-PQXDH-10); otherwise PQXDH creates a new session, the
 * current one is archived, and the prekeys it used are consumed only after the inner message
 * decrypts (WP-PQXDH-06/07). The inner message is tried only on that one session (WP-REC-04).
 */
export function decryptPreKeySignalMessage(
  env: Env,
  record: SessionRecord,
  prekeys: PreKeyState,
  bytes: Uint8Array,
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
    const result = ratchetDecrypt(env, archivedMatch, message.inner);
    if (!result.ok) return result;
    return accept({
      record: promoteArchived(record, archivedIndex, result.value.session),
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
): Result<DecryptedOnRecord & { readonly prekeys: PreKeyState }> {
  if (message.type === 'prekey') return decryptPreKeySignalMessage(env, record, prekeys, message.bytes);
  const result = decryptSignalMessage(env, record, message.bytes);
  if (!result.ok) return result;
  return accept({ ...result.value, prekeys });
}
