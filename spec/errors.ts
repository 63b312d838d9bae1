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
  // Wire formats.
  WIRE_TOO_SHORT: 'WP-WIRE-07',
  WIRE_VERSION_LEGACY: 'WP-WIRE-01',
  WIRE_VERSION_UNKNOWN: 'WP-WIRE-01',
  WIRE_VERSION_X3DH: 'WP-WIRE-01',
  WIRE_MALFORMED: 'WP-WIRE-06',
  WIRE_MISSING_FIELD: 'WP-WIRE-07',
  WIRE_KYBER_MISSING: 'WP-WIRE-03',
  // Multi-device formats: device lists, contact links, provisioning, payloads, attachments (FORMATS-ANCHOR).
  // Server rules (SERVER-ANCHOR).
  // Sesame client (SESAME-ANCHOR).
  // Device lifecycle: trust, linking, revocation, reinstall (DEVICE-ANCHOR).
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
