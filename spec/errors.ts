/**
 * Error codes and the rule each one enforces (WHITEPAPER.md). Three kinds of failure, never mixed:
 *
 * - a **rejection** of bad input (malformed bytes, bad signature, replay, counter past a limit) is a
 *   returned value `{ ok: false, error }` whose `code` comes from {@link ErrorCode} and whose `rule`
 *   is the whitepaper rule it enforces; the caller's state is untouched;
 * - **misuse** by the caller (wrong argument types, hex that is not hex) throws {@link UsageError};
 * - a broken internal invariant (a bug) throws {@link InvariantError}.
 *
 * Details carry numbers and lengths, never key bytes or plaintext.
 * @module
 */

/** Every rejection code, mapped to the whitepaper rule that defines it. */
export const ERROR_RULES = Object.freeze({
  // Key encodings and primitives.
  KEY_BAD_LENGTH: 'WP-KEYS-01',
  KEY_BAD_TYPE: 'WP-KEYS-01',
  KEY_NON_CANONICAL: 'WP-KEYS-02',
  KEY_LOW_ORDER: 'WP-KEYS-03',
  DH_ZERO_OUTPUT: 'WP-KEYS-04',
  KEM_BAD_LENGTH: 'WP-KEYS-05',
  KEM_BAD_TYPE: 'WP-KEYS-05',
  KEM_NON_CANONICAL: 'WP-KEYS-05',
  SIGNATURE_INVALID: 'WP-KEYS-07',
  // PQXDH.
  BUNDLE_SIGNATURE_INVALID: 'WP-PQXDH-01',
  BUNDLE_KYBER_MISSING: 'WP-PQXDH-02',
  BUNDLE_MALFORMED: 'WP-PQXDH-12',
  UNKNOWN_SIGNED_PREKEY: 'WP-PQXDH-05',
  UNKNOWN_ONE_TIME_PREKEY: 'WP-PQXDH-06',
  UNKNOWN_KYBER_PREKEY: 'WP-PQXDH-07',
  SESSION_UNACKNOWLEDGED_TOO_OLD: 'WP-PQXDH-11',
  // Double Ratchet.
  MAC_INVALID: 'WP-DR-05',
  BODY_DECRYPT_FAILED: 'WP-DR-04',
  FORWARD_JUMP_TOO_FAR: 'WP-DR-07',
  DUPLICATE_MESSAGE: 'WP-DR-10',
  SESSION_VERSION_MISMATCH: 'WP-DR-12',
  // Session records.
  NO_SESSION: 'WP-REC-05',
  NO_SESSION_DECRYPTED: 'WP-REC-02',
  // Hardened session handling (spec/security-mode.ts).
  SESSION_SUPERSEDED: 'WP-SES-18',
  SESSION_FORK_DETECTED: 'WP-SES-20',
  INITIAL_MESSAGE_REPLAYED: 'WP-PQXDH-13',
  // Wire formats.
  WIRE_TOO_SHORT: 'WP-WIRE-07',
  WIRE_VERSION_LEGACY: 'WP-WIRE-01',
  WIRE_VERSION_UNKNOWN: 'WP-WIRE-01',
  WIRE_VERSION_X3DH: 'WP-WIRE-01',
  WIRE_MALFORMED: 'WP-WIRE-06',
  WIRE_MISSING_FIELD: 'WP-WIRE-07',
  WIRE_KYBER_MISSING: 'WP-WIRE-03',
  // Multi-device formats: device lists, contact links, provisioning, payloads, attachments (FORMATS-ANCHOR).
  DEVICE_LIST_MALFORMED: 'WP-DEV-03',
  DEVICE_LIST_SIGNATURE_INVALID: 'WP-DEV-04',
  DEVICE_LIST_WRONG_USER: 'WP-DEV-05',
  CONTACT_LINK_MALFORMED: 'WP-CONTACT-01',
  CONTACT_LINK_VERSION_UNKNOWN: 'WP-CONTACT-02',
  CONTACT_LINK_MISMATCH: 'WP-CONTACT-04',
  PROVISIONING_MALFORMED: 'WP-LINK-01',
  PROVISIONING_MAC_INVALID: 'WP-LINK-05',
  PAYLOAD_MALFORMED: 'WP-PAY-01',
  PAYLOAD_VERSION_UNKNOWN: 'WP-PAY-02',
  ATTACHMENT_DIGEST_MISMATCH: 'WP-ATT-02',
  ATTACHMENT_MALFORMED: 'WP-ATT-03',
  ATTACHMENT_MAC_INVALID: 'WP-ATT-04',
  ATTACHMENT_SIZE_MISMATCH: 'WP-ATT-05',
  // Server rules (SERVER-ANCHOR).
  SERVER_MALFORMED_REQUEST: 'WP-SRV-01',
  SERVER_DEVICE_LIST_INVALID: 'WP-SRV-02',
  SERVER_DEVICE_LIST_STALE: 'WP-SRV-03',
  SERVER_PROOF_INVALID: 'WP-SRV-04',
  SERVER_USER_EXISTS: 'WP-SRV-05',
  SERVER_DEVICE_LIST_MISMATCH: 'WP-SRV-05',
  SERVER_DEVICE_NOT_LISTED: 'WP-SRV-07',
  SERVER_PREKEY_INVALID: 'WP-SRV-08',
  SERVER_PREKEY_SIGNATURE_INVALID: 'WP-SRV-08',
  SERVER_PREKEY_DUPLICATE_ID: 'WP-SRV-08',
  SERVER_PREKEY_LIMIT: 'WP-SRV-08',
  SERVER_DEVICE_LIST_ACCOUNT_KEY_CHANGED: 'WP-SRV-10',
  SERVER_UNKNOWN_USER: 'WP-SRV-12',
  SERVER_UNKNOWN_DEVICE: 'WP-SRV-12',
  SERVER_SEND_DUPLICATE_DEVICE: 'WP-SRV-16',
  SERVER_ENVELOPE_TOO_LARGE: 'WP-SRV-21',
  SERVER_PROVISION_TOO_LARGE: 'WP-SRV-23',
  SERVER_PROVISION_OCCUPIED: 'WP-SRV-23',
  SERVER_BLOB_ID_MISMATCH: 'WP-SRV-24',
  SERVER_BLOB_TOO_LARGE: 'WP-SRV-24',
  SERVER_STORE_FULL: 'WP-SRV-25',
  // Sesame client (SESAME-ANCHOR).
  SESAME_OWN_ADDRESS: 'WP-SES-04',
  SESAME_INVALID_DEVICE_ENTRY: 'WP-SES-16',
  SESAME_NO_USABLE_SESSION: 'WP-SES-05',
  SESAME_RECORD_STALE: 'WP-SES-11',
  SESAME_REFUSAL_INVALID: 'WP-SES-08',
  SESAME_NO_DEVICE_RECORD: 'WP-SES-09',
  SESAME_TOO_MANY_DEVICES: 'WP-SES-15',
  SESAME_TOO_MANY_USERS: 'WP-SES-15',
  // Device lifecycle: trust, linking, revocation, reinstall (DEVICE-ANCHOR).
  TRUST_CONTACT_UNKNOWN: 'WP-TRUST-01',
  TRUST_LIST_INVALID: 'WP-TRUST-02',
  TRUST_LIST_ROLLBACK: 'WP-TRUST-03',
  TRUST_LIST_EQUIVOCATION: 'WP-TRUST-03',
  TRUST_ACCOUNT_KEY_CHANGED: 'WP-TRUST-04',
  TRUST_UNKNOWN_SENDER_DEVICE: 'WP-TRUST-05',
  TRUST_SENDER_IDENTITY_MISMATCH: 'WP-TRUST-05',
  TRUST_BUNDLE_IDENTITY_MISMATCH: 'WP-TRUST-06',
  XPORT_SEND_ATTEMPTS_EXHAUSTED: 'WP-XPORT-03',
  XPORT_SERVER_ERROR: 'WP-XPORT-04',
  RETRY_REQUEST_MALFORMED: 'WP-XPORT-06',
  LIFE_NOT_LINKED: 'WP-LIFE-01',
  LIFE_REVOKED: 'WP-LIFE-05',
  LIFE_NOT_PRIMARY: 'WP-LIFE-02',
  LIFE_NO_FREE_DEVICE_ID: 'WP-LIFE-02',
  LIFE_PROVISION_INVALID: 'WP-LIFE-03',
  LIFE_UNKNOWN_DEVICE: 'WP-LIFE-04',
  // State codecs.
  STATE_MALFORMED: 'WP-STATE-01',
  STATE_VERSION_UNKNOWN: 'WP-STATE-01',
} as const);

/** One string-literal union of every rejection code. */
export type ErrorCode = keyof typeof ERROR_RULES;

/** A whitepaper rule ID such as `WP-DR-07`. */
export type RuleId = (typeof ERROR_RULES)[ErrorCode];

/** A rejection: typed, mapped to its rule, with non-secret numeric details. */
export interface ProtocolError {
  readonly code: ErrorCode;
  readonly rule: RuleId;
  readonly message: string;
  readonly details?: Readonly<Record<string, number | string | boolean>>;
}

/** The result of any step that can reject its input. */
export type Result<T> =
  { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: ProtocolError };

/** Builds a rejection with its rule looked up from the code. */
export function reject(
  code: ErrorCode,
  message: string,
  details?: Readonly<Record<string, number | string | boolean>>,
): { readonly ok: false; readonly error: ProtocolError } {
  const error: ProtocolError =
    details === undefined
      ? { code, rule: ERROR_RULES[code], message }
      : { code, rule: ERROR_RULES[code], message, details };
  return { ok: false, error };
}

/** Wraps a value as a success. */
export function accept<T>(value: T): { readonly ok: true; readonly value: T } {
  return { ok: true, value };
}

/** Thrown when a caller misuses an API (wrong types or lengths of arguments it controls). */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** Thrown when an internal invariant breaks: always a bug in Lockstep. */
export class InvariantError extends Error {
  override readonly name = 'InvariantError';
}
