/**
 * Contact links: starting a chat without personal data (WP-CONTACT-01 … WP-CONTACT-04). Lockstep has
 * no lookup by name or phone number; a user shares a link (or its QR code) carrying their opaque user
 * id and the fingerprint of their account key (WP-DEV-08). The recipient asks the server for that
 * user's signed device list and starts a chat only if the account key the server serves has the
 * fingerprint in the link, so a server cannot substitute an account key of its own.
 *
 * ```text
 * offset  length  content
 * 0       1       format version 0x01                         (other: CONTACT_LINK_VERSION_UNKNOWN)
 * 1       n       protobuf ContactLink:
 *                   1 user_id                  string  (spec/identity.ts isValidUserId)
 *                   2 account_key_fingerprint  bytes   32
 *                   3 invite_token             bytes   16, optional (absent when null)
 *
 * URL     lockstep://contact/<base64url of the bytes above, no padding>
 * ```
 *
 * The invite token is opaque to this layer (an application may use it to recognise invitations it
 * issued). Decoders are strict: one accepted encoding, checked by re-encoding (WP-CONTACT-01), and
 * one accepted URL text (WP-CONTACT-03). Base64url is RFC 4648 §5 without padding, computed with
 * `@bufbuild/protobuf`'s codec and checked strictly here.
 * @module
 */
import { base64Decode, base64Encode, BinaryWriter, WireType } from '@bufbuild/protobuf/wire';
import { equalBytes } from './bytes.js';
import type { CryptoProvider } from './crypto/provider.js';
import { ACCOUNT_KEY_FINGERPRINT_LENGTH, accountKeyFingerprint } from './device-list.js';
import { accept, reject, UsageError, type Result } from './errors.js';
import { isValidUserId, type UserId } from './identity.js';
import { decodeEcPublicKey } from './keys.js';
import { decodeUtf8Strict, readStrictFields, singleBytes, type StrictFieldKind } from './protobuf.js';

/** A contact link: whom to contact and how to recognise their account key. */
export interface ContactLink {
  readonly userId: UserId;
  /** `SHA-256("lockstep-account-key-v1" ‖ account key)`, 32 bytes (WP-DEV-08). */
  readonly accountKeyFingerprint: Uint8Array;
  /** An opaque 16-byte invitation token, or `null`. */
  readonly inviteToken: Uint8Array | null;
}

/** WP-CONTACT-02: the format version byte of an encoded contact link. */
export const CONTACT_LINK_FORMAT_VERSION = 0x01;

/** WP-CONTACT-01: bytes of an invite token. */
export const INVITE_TOKEN_LENGTH = 16;

/** WP-CONTACT-03: the URL prefix of a contact link. */
export const CONTACT_LINK_URL_PREFIX = 'lockstep://contact/';

/**
 * WP-CONTACT-03: longest URL text a decoder looks at. A valid link is far shorter (about 170
 * characters); the bound keeps a hostile QR code from making the decoder work on megabytes.
 */
export const MAX_LINK_URL_LENGTH = 1024;

/** Protobuf field numbers of `ContactLink` (WP-CONTACT-01). */
export const CONTACT_LINK_FIELD = Object.freeze({
  userId: 1,
  accountKeyFingerprint: 2,
  inviteToken: 3,
} as const);

const SCHEMA: ReadonlyMap<number, StrictFieldKind> = new Map<number, StrictFieldKind>([
  [CONTACT_LINK_FIELD.userId, 'bytes'],
  [CONTACT_LINK_FIELD.accountKeyFingerprint, 'bytes'],
  [CONTACT_LINK_FIELD.inviteToken, 'bytes'],
]);

const BASE64URL = /^[A-Za-z0-9_-]*$/;

/** RFC 4648 §5 base64url without padding. */
export function toBase64Url(bytes: Uint8Array): string {
  if (!(bytes instanceof Uint8Array)) throw new UsageError('bytes must be a Uint8Array');
  return base64Encode(bytes, 'url');
}

/**
 * Strict RFC 4648 §5 base64url without padding: only the 64 URL-safe characters, a length that is
 * not 1 modulo 4, and canonical trailing bits (the text must be exactly what {@link toBase64Url}
 * writes for the decoded bytes). Returns `undefined` for anything else.
 */
export function fromBase64Url(text: string): Uint8Array | undefined {
  if (typeof text !== 'string' || !BASE64URL.test(text) || text.length % 4 === 1) return undefined;
  let bytes: Uint8Array;
  try {
    bytes = base64Decode(text);
  } catch {
    return undefined;
  }
  return base64Encode(bytes, 'url') === text ? bytes : undefined;
}

/** The reason a link is invalid, or `null`. */
function linkProblem(link: ContactLink): string | null {
  if (typeof link !== 'object' || link === null) return 'contact link must be an object';
  if (!isValidUserId(link.userId)) return 'user id is not valid';
  if (
    !(link.accountKeyFingerprint instanceof Uint8Array) ||
    link.accountKeyFingerprint.length !== ACCOUNT_KEY_FINGERPRINT_LENGTH
  ) {
    return `account key fingerprint must be ${ACCOUNT_KEY_FINGERPRINT_LENGTH} bytes`;
  }
  if (
    link.inviteToken !== null &&
    (!(link.inviteToken instanceof Uint8Array) || link.inviteToken.length !== INVITE_TOKEN_LENGTH)
  ) {
    return `invite token must be null or ${INVITE_TOKEN_LENGTH} bytes`;
  }
  return null;
}

/**
 * Encodes a contact link canonically (WP-CONTACT-01): `0x01 ‖ protobuf`, fields in ascending tag
 * order, the invite token omitted when `null`.
 * @throws UsageError for an invalid user id, fingerprint or token.
 */
export function encodeContactLink(link: ContactLink): Uint8Array {
  const problem = linkProblem(link);
  if (problem !== null) throw new UsageError(`invalid contact link: ${problem}`);
  const writer = new BinaryWriter();
  writer.raw(Uint8Array.of(CONTACT_LINK_FORMAT_VERSION));
  writer.tag(CONTACT_LINK_FIELD.userId, WireType.LengthDelimited).string(link.userId);
  writer
    .tag(CONTACT_LINK_FIELD.accountKeyFingerprint, WireType.LengthDelimited)
    .bytes(link.accountKeyFingerprint);
  if (link.inviteToken !== null) {
    writer.tag(CONTACT_LINK_FIELD.inviteToken, WireType.LengthDelimited).bytes(link.inviteToken);
  }
  return writer.finish();
}

function malformed(message: string, details?: Readonly<Record<string, number>>): Result<never> {
  return reject('CONTACT_LINK_MALFORMED', message, details);
}

/**
 * Decodes a contact link. Rejects an empty input (`CONTACT_LINK_MALFORMED`), a version byte other
 * than 0x01 (`CONTACT_LINK_VERSION_UNKNOWN`, WP-CONTACT-02), and, as `CONTACT_LINK_MALFORMED`
 * (WP-CONTACT-01), bytes that are not a protobuf of the schema, a missing or repeated field, an
 * invalid user id, a fingerprint that is not 32 bytes, a token that is not 16 bytes, and any
 * non-canonical encoding. Never throws on any byte string.
 */
export function decodeContactLink(bytes: Uint8Array): Result<ContactLink> {
  if (!(bytes instanceof Uint8Array)) throw new UsageError('contact link bytes must be a Uint8Array');
  if (bytes.length < 1) return malformed('contact link is empty', { length: 0 });
  // WP-CONTACT-02: an unknown version is reported as such, so a newer link can be told apart.
  if (bytes[0] !== CONTACT_LINK_FORMAT_VERSION) {
    return reject('CONTACT_LINK_VERSION_UNKNOWN', 'unknown contact link version', {
      version: bytes[0] ?? -1,
    });
  }
  const read = readStrictFields(bytes.subarray(1), SCHEMA);
  if (!read.ok) return malformed(read.message, read.details);
  const userIdBytes = singleBytes(read.fields, CONTACT_LINK_FIELD.userId);
  const fingerprint = singleBytes(read.fields, CONTACT_LINK_FIELD.accountKeyFingerprint);
  const tokens = read.fields.bytes.get(CONTACT_LINK_FIELD.inviteToken) ?? [];
  if (userIdBytes === undefined || fingerprint === undefined || tokens.length > 1) {
    return malformed('user_id and account_key_fingerprint must appear once, invite_token at most once');
  }
  const link: ContactLink = {
    userId: decodeUtf8Strict(userIdBytes) ?? '',
    accountKeyFingerprint: fingerprint,
    inviteToken: tokens[0] ?? null,
  };
  // WP-CONTACT-01: field contents, then the single accepted encoding.
  const problem = linkProblem(link);
  if (problem !== null) return malformed(problem);
  if (!equalBytes(encodeContactLink(link), bytes)) return malformed('contact link encoding is not canonical');
  return accept(link);
}

/** WP-CONTACT-03: `lockstep://contact/` followed by the unpadded base64url of the encoding. */
export function contactLinkToUrl(link: ContactLink): string {
  return CONTACT_LINK_URL_PREFIX + toBase64Url(encodeContactLink(link));
}

/**
 * Parses a contact link URL (WP-CONTACT-03): the exact prefix (case-sensitive, nothing before it),
 * then strict unpadded base64url, then {@link decodeContactLink}. A URL that is not exactly what
 * {@link contactLinkToUrl} writes is `CONTACT_LINK_MALFORMED`; version and content errors of the
 * decoded bytes propagate unchanged. Never throws on any string.
 */
export function contactLinkFromUrl(url: string): Result<ContactLink> {
  if (typeof url !== 'string') throw new UsageError('url must be a string');
  if (url.length > MAX_LINK_URL_LENGTH) {
    return malformed('contact link URL too long', { length: url.length, limit: MAX_LINK_URL_LENGTH });
  }
  if (!url.startsWith(CONTACT_LINK_URL_PREFIX)) return malformed('not a contact link URL');
  const bytes = fromBase64Url(url.slice(CONTACT_LINK_URL_PREFIX.length));
  if (bytes === undefined) return malformed('contact link URL is not canonical unpadded base64url');
  return decodeContactLink(bytes);
}

/**
 * Checks the server's answer against a contact link (WP-CONTACT-04): the served user id must be the
 * link's, and the fingerprint of the served account key must equal the link's fingerprint, compared
 * in constant time. Anything else, a served key that is not a valid public key included, is
 * `CONTACT_LINK_MISMATCH`.
 */
export function checkContactLink(
  c: CryptoProvider,
  link: ContactLink,
  served: { readonly userId: UserId; readonly accountKey: Uint8Array },
): Result<void> {
  const problem = linkProblem(link);
  if (problem !== null) throw new UsageError(`invalid contact link: ${problem}`);
  if (typeof served !== 'object' || served === null) throw new UsageError('served must be an object');
  // WP-CONTACT-04: the server must answer for the user the link names.
  if (served.userId !== link.userId) {
    return reject('CONTACT_LINK_MISMATCH', 'server answered for another user');
  }
  // WP-CONTACT-04: a served key that does not even decode cannot match (WP-KEYS-01..03).
  if (!(served.accountKey instanceof Uint8Array) || !decodeEcPublicKey(served.accountKey).ok) {
    return reject('CONTACT_LINK_MISMATCH', 'served account key is not a valid public key');
  }
  // WP-CONTACT-04: fingerprints compared without an early exit.
  if (!equalBytes(accountKeyFingerprint(c, served.accountKey), link.accountKeyFingerprint)) {
    return reject('CONTACT_LINK_MISMATCH', 'served account key does not match the link fingerprint');
  }
  return accept(undefined);
}
