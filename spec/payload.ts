/**
 * The application payload carried inside a Double Ratchet message (WP-PAY-01 … WP-PAY-04): what the
 * user sent (a text, an attachment pointer with caption), a copy of it for the sender's own other
 * devices (sync, as Sesame's multi-device model expects every device to see every message), and
 * delivery receipts. The ratchet encrypts the bytes below; this module only encodes them.
 *
 * ```text
 * offset  length  content
 * 0       1       format version 0x01                               (other: PAYLOAD_VERSION_UNKNOWN)
 * 1       n       protobuf AppPayload:
 *                   1 message_id  bytes(16)
 *                   2 sent_at     uint64, at most 2^53 − 1 (a safe integer, milliseconds)
 *                   exactly one of
 *                   3 text        string
 *                   4 attachment  Attachment
 *                   5 sync        Sync
 *                   6 receipt     Receipt
 * 1 + n   1       0x80 padding marker
 * 2 + n   k       0x00 × k, the smallest k making the total a multiple of 160 (k < 160)
 *
 * Attachment  1 key bytes(64), 2 digest bytes(32), 3 size uint32 ≤ MAX_ATTACHMENT_SIZE,
 *             4 content_type string, 5 caption string           (blob id = hex(digest), WP-ATT-06)
 * Sync        1 destination string (user id), exactly one of 2 text string / 3 attachment Attachment
 * Receipt     1 message_id bytes(16), repeated 1..MAX_RECEIPT_IDS times
 * ```
 *
 * Every field is written exactly once (empty strings included), in ascending tag order; the decoder
 * re-encodes and requires identical bytes (WP-PAY-01). Padding follows Signal's message padding (a
 * 0x80 marker then zeros up to a multiple of 160 bytes), so a ciphertext length reveals the payload
 * length only to the nearest 160 bytes (WP-PAY-03). Texts and captions are well-formed UTF-8 of at
 * most MAX_TEXT_LENGTH bytes (WP-PAY-04).
 * @module
 */
import { BinaryWriter, WireType } from '@bufbuild/protobuf/wire';
import { equalBytes } from './bytes.js';
import { attachmentPointerProblem, type AttachmentPointer } from './attachment.js';
import { MAX_ATTACHMENT_SIZE, MAX_RECEIPT_IDS, MAX_TEXT_LENGTH, PAYLOAD_PADDING_BLOCK } from './constants.js';
import { accept, reject, UsageError, type Result } from './errors.js';
import { fromHex, toHex } from './hex.js';
import { isValidMessageId, isValidUserId, type MessageId, type UserId } from './identity.js';
import {
  bytesOccurrences,
  decodeUtf8Strict,
  encodeUtf8Strict,
  readStrictFields,
  singleBytes,
  singleVarint,
  type StrictFieldKind,
  type StrictFields,
} from './protobuf.js';

/** A text message. */
export interface TextContent {
  readonly kind: 'text';
  readonly text: string;
}

/** An attachment with its caption (empty when none). */
export interface AttachmentContent {
  readonly kind: 'attachment';
  readonly pointer: AttachmentPointer;
  readonly caption: string;
}

/** What a payload carries. */
export type PayloadContent =
  | TextContent
  | AttachmentContent
  | {
      /** A copy of something this user sent to `destination`, for the sender's own other devices. */
      readonly kind: 'sync';
      readonly destination: UserId;
      readonly content: TextContent | AttachmentContent;
    }
  | {
      /** The recipient device has received these messages. */
      readonly kind: 'receipt';
      readonly messageIds: readonly MessageId[];
    };

/** The plaintext of one ratchet message. */
export interface AppPayload {
  readonly messageId: MessageId;
  /** Sender's clock, milliseconds; a safe non-negative integer. */
  readonly sentAt: number;
  readonly content: PayloadContent;
}

/** WP-PAY-02: the format version byte of a payload. */
export const PAYLOAD_FORMAT_VERSION = 0x01;

/** WP-PAY-03: the byte that ends the protobuf and starts the padding. */
export const PAYLOAD_PADDING_MARKER = 0x80;

/** Bytes of a message id on the wire. */
const MESSAGE_ID_BYTES = 16;

/** Protobuf field numbers of `AppPayload` (WP-PAY-01). */
export const PAYLOAD_FIELD = Object.freeze({
  messageId: 1,
  sentAt: 2,
  text: 3,
  attachment: 4,
  sync: 5,
  receipt: 6,
} as const);

/** Protobuf field numbers of the nested `Attachment` (WP-PAY-01). */
export const ATTACHMENT_FIELD = Object.freeze({
  key: 1,
  digest: 2,
  size: 3,
  contentType: 4,
  caption: 5,
} as const);

/** Protobuf field numbers of the nested `Sync` (WP-PAY-01). */
export const SYNC_FIELD = Object.freeze({ destination: 1, text: 2, attachment: 3 } as const);

/** Protobuf field numbers of the nested `Receipt` (WP-PAY-01). */
export const RECEIPT_FIELD = Object.freeze({ messageId: 1 } as const);

const PAYLOAD_SCHEMA: ReadonlyMap<number, StrictFieldKind> = new Map<number, StrictFieldKind>([
  [PAYLOAD_FIELD.messageId, 'bytes'],
  [PAYLOAD_FIELD.sentAt, 'varint'],
  [PAYLOAD_FIELD.text, 'bytes'],
  [PAYLOAD_FIELD.attachment, 'bytes'],
  [PAYLOAD_FIELD.sync, 'bytes'],
  [PAYLOAD_FIELD.receipt, 'bytes'],
]);

const ATTACHMENT_SCHEMA: ReadonlyMap<number, StrictFieldKind> = new Map<number, StrictFieldKind>([
  [ATTACHMENT_FIELD.key, 'bytes'],
  [ATTACHMENT_FIELD.digest, 'bytes'],
  [ATTACHMENT_FIELD.size, 'varint'],
  [ATTACHMENT_FIELD.contentType, 'bytes'],
  [ATTACHMENT_FIELD.caption, 'bytes'],
]);

const SYNC_SCHEMA: ReadonlyMap<number, StrictFieldKind> = new Map<number, StrictFieldKind>([
  [SYNC_FIELD.destination, 'bytes'],
  [SYNC_FIELD.text, 'bytes'],
  [SYNC_FIELD.attachment, 'bytes'],
]);

const RECEIPT_SCHEMA: ReadonlyMap<number, StrictFieldKind> = new Map<number, StrictFieldKind>([
  [RECEIPT_FIELD.messageId, 'bytes'],
]);

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

/** WP-PAY-04: UTF-8 of a text or caption within the limit. */
function textBytes(name: string, text: string): Uint8Array {
  const bytes = encodeUtf8Strict(name, text);
  if (bytes.length > MAX_TEXT_LENGTH) {
    throw new UsageError(`${name} is ${bytes.length} bytes of UTF-8, above ${MAX_TEXT_LENGTH}`);
  }
  return bytes;
}

function encodeAttachment(content: AttachmentContent): Uint8Array {
  const problem = attachmentPointerProblem(content.pointer);
  if (problem !== null) throw new UsageError(`invalid attachment pointer: ${problem}`);
  const caption = textBytes('caption', content.caption);
  const { pointer } = content;
  const writer = new BinaryWriter();
  writer.tag(ATTACHMENT_FIELD.key, WireType.LengthDelimited).bytes(pointer.key);
  writer.tag(ATTACHMENT_FIELD.digest, WireType.LengthDelimited).bytes(pointer.digest);
  writer.tag(ATTACHMENT_FIELD.size, WireType.Varint).uint32(pointer.size);
  writer.tag(ATTACHMENT_FIELD.contentType, WireType.LengthDelimited).string(pointer.contentType);
  writer.tag(ATTACHMENT_FIELD.caption, WireType.LengthDelimited).bytes(caption);
  return writer.finish();
}

function encodeTextOrAttachment(
  writer: BinaryWriter,
  content: TextContent | AttachmentContent,
  textField: number,
  attachmentField: number,
): void {
  if (typeof content !== 'object' || content === null) throw new UsageError('content must be an object');
  if (content.kind === 'text') {
    writer.tag(textField, WireType.LengthDelimited).bytes(textBytes('text', content.text));
  } else if (content.kind === 'attachment') {
    writer.tag(attachmentField, WireType.LengthDelimited).bytes(encodeAttachment(content));
  } else {
    throw new UsageError('content kind must be text or attachment');
  }
}

/**
 * Encodes a payload (WP-PAY-01) and pads it (WP-PAY-03): `0x01 ‖ protobuf ‖ 0x80 ‖ 0x00…`, a
 * multiple of 160 bytes.
 * @throws UsageError for an invalid message id, time, text (ill-formed or too long), pointer,
 * destination, or receipt list (empty, too long, invalid id).
 */
export function encodePayload(p: AppPayload): Uint8Array {
  if (typeof p !== 'object' || p === null) throw new UsageError('payload must be an object');
  if (!isValidMessageId(p.messageId)) throw new UsageError('messageId must be 32 lowercase hex characters');
  if (typeof p.sentAt !== 'number' || !Number.isSafeInteger(p.sentAt) || p.sentAt < 0) {
    throw new UsageError('sentAt must be a non-negative safe integer');
  }
  const content = p.content;
  if (typeof content !== 'object' || content === null) throw new UsageError('content must be an object');
  const writer = new BinaryWriter();
  writer.raw(Uint8Array.of(PAYLOAD_FORMAT_VERSION));
  writer.tag(PAYLOAD_FIELD.messageId, WireType.LengthDelimited).bytes(fromHex(p.messageId));
  writer.tag(PAYLOAD_FIELD.sentAt, WireType.Varint).uint64(p.sentAt);
  switch (content.kind) {
    case 'text':
    case 'attachment':
      encodeTextOrAttachment(writer, content, PAYLOAD_FIELD.text, PAYLOAD_FIELD.attachment);
      break;
    case 'sync': {
      if (!isValidUserId(content.destination))
        throw new UsageError('sync destination is not a valid user id');
      const sync = new BinaryWriter();
      sync.tag(SYNC_FIELD.destination, WireType.LengthDelimited).string(content.destination);
      encodeTextOrAttachment(sync, content.content, SYNC_FIELD.text, SYNC_FIELD.attachment);
      writer.tag(PAYLOAD_FIELD.sync, WireType.LengthDelimited).bytes(sync.finish());
      break;
    }
    case 'receipt': {
      const ids = content.messageIds;
      if (!Array.isArray(ids) || ids.length < 1 || ids.length > MAX_RECEIPT_IDS) {
        throw new UsageError(`a receipt holds 1..${MAX_RECEIPT_IDS} message ids`);
      }
      const receipt = new BinaryWriter();
      for (const id of ids) {
        if (!isValidMessageId(id))
          throw new UsageError('receipt message id must be 32 lowercase hex characters');
        receipt.tag(RECEIPT_FIELD.messageId, WireType.LengthDelimited).bytes(fromHex(id));
      }
      writer.tag(PAYLOAD_FIELD.receipt, WireType.LengthDelimited).bytes(receipt.finish());
      break;
    }
    default:
      throw new UsageError('unknown payload content kind');
  }
  const unpadded = writer.finish();
  // WP-PAY-03: marker, then the fewest zeros that reach a multiple of the padding block.
  const total = Math.ceil((unpadded.length + 1) / PAYLOAD_PADDING_BLOCK) * PAYLOAD_PADDING_BLOCK;
  const out = new Uint8Array(total);
  out.set(unpadded, 0);
  out[unpadded.length] = PAYLOAD_PADDING_MARKER;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

function malformed(message: string, details?: Readonly<Record<string, number>>): Result<never> {
  return reject('PAYLOAD_MALFORMED', message, details);
}

/** WP-PAY-04: a string field: well-formed UTF-8 within `limit` bytes. */
function stringOf(bytes: Uint8Array | undefined, limit: number): string | undefined {
  if (bytes === undefined || bytes.length > limit) return undefined;
  return decodeUtf8Strict(bytes);
}

function decodeAttachment(bytes: Uint8Array): Result<AttachmentContent> {
  const read = readStrictFields(bytes, ATTACHMENT_SCHEMA);
  if (!read.ok) return malformed(`attachment: ${read.message}`, read.details);
  const f = read.fields;
  const key = singleBytes(f, ATTACHMENT_FIELD.key);
  const digest = singleBytes(f, ATTACHMENT_FIELD.digest);
  const size = singleVarint(f, ATTACHMENT_FIELD.size);
  const contentType = stringOf(singleBytes(f, ATTACHMENT_FIELD.contentType), MAX_TEXT_LENGTH);
  const caption = stringOf(singleBytes(f, ATTACHMENT_FIELD.caption), MAX_TEXT_LENGTH);
  if (
    key === undefined ||
    digest === undefined ||
    size === undefined ||
    size > BigInt(MAX_ATTACHMENT_SIZE) ||
    contentType === undefined ||
    caption === undefined
  ) {
    return malformed('attachment lacks a field, repeats one, or has one out of range');
  }
  const pointer: AttachmentPointer = { blobId: toHex(digest), key, digest, size: Number(size), contentType };
  // WP-ATT-06: key and digest lengths, content type.
  const problem = attachmentPointerProblem(pointer);
  if (problem !== null) return malformed(`attachment: ${problem}`);
  return accept({ kind: 'attachment', pointer, caption });
}

/** Exactly one of a text field and an attachment field. */
function decodeTextOrAttachment(
  f: StrictFields,
  textField: number,
  attachmentField: number,
): Result<TextContent | AttachmentContent> {
  const texts = bytesOccurrences(f, textField);
  const attachments = bytesOccurrences(f, attachmentField);
  if (texts.length + attachments.length !== 1) {
    return malformed('exactly one content field is required', {
      count: texts.length + attachments.length,
    });
  }
  const attachment = attachments[0];
  if (attachment !== undefined) return decodeAttachment(attachment);
  // WP-PAY-04: the text is well-formed UTF-8 and within MAX_TEXT_LENGTH.
  const text = stringOf(texts[0], MAX_TEXT_LENGTH);
  if (text === undefined) return malformed('text is not UTF-8 or too long', { limit: MAX_TEXT_LENGTH });
  return accept({ kind: 'text', text });
}

function decodeContent(f: StrictFields): Result<PayloadContent> {
  const syncs = bytesOccurrences(f, PAYLOAD_FIELD.sync);
  const receipts = bytesOccurrences(f, PAYLOAD_FIELD.receipt);
  const others =
    bytesOccurrences(f, PAYLOAD_FIELD.text).length + bytesOccurrences(f, PAYLOAD_FIELD.attachment).length;
  const count = syncs.length + receipts.length + others;
  // WP-PAY-01: exactly one content field.
  if (count !== 1) return malformed('exactly one content field is required', { count });
  const sync = syncs[0];
  if (sync !== undefined) {
    const read = readStrictFields(sync, SYNC_SCHEMA);
    if (!read.ok) return malformed(`sync: ${read.message}`, read.details);
    const destination = stringOf(singleBytes(read.fields, SYNC_FIELD.destination), MAX_TEXT_LENGTH);
    if (destination === undefined || !isValidUserId(destination)) {
      return malformed('sync destination is missing, repeated or not a user id');
    }
    const inner = decodeTextOrAttachment(read.fields, SYNC_FIELD.text, SYNC_FIELD.attachment);
    if (!inner.ok) return inner;
    return accept({ kind: 'sync', destination, content: inner.value });
  }
  const receipt = receipts[0];
  if (receipt !== undefined) {
    const read = readStrictFields(receipt, RECEIPT_SCHEMA);
    if (!read.ok) return malformed(`receipt: ${read.message}`, read.details);
    const ids = bytesOccurrences(read.fields, RECEIPT_FIELD.messageId);
    // WP-PAY-04: 1..MAX_RECEIPT_IDS ids of 16 bytes each.
    if (ids.length < 1 || ids.length > MAX_RECEIPT_IDS) {
      return malformed('receipt id count out of range', { count: ids.length, limit: MAX_RECEIPT_IDS });
    }
    if (ids.some((id) => id.length !== MESSAGE_ID_BYTES))
      return malformed('receipt message id is not 16 bytes');
    return accept({ kind: 'receipt', messageIds: ids.map(toHex) });
  }
  return decodeTextOrAttachment(f, PAYLOAD_FIELD.text, PAYLOAD_FIELD.attachment);
}

/**
 * Decodes a padded payload. Rejects an unknown version byte (`PAYLOAD_VERSION_UNKNOWN`, WP-PAY-02)
 * and, as `PAYLOAD_MALFORMED` (WP-PAY-01): an empty input, a length that is not a multiple of 160, a
 * missing 0x80 marker or more than 159 zeros after it (WP-PAY-03), bytes that are not a protobuf of
 * the schema, a missing or repeated field, not exactly one content, a message id that is not 16
 * bytes, a time above 2^53 − 1, ill-formed UTF-8 or a text above MAX_TEXT_LENGTH (WP-PAY-04), an
 * invalid pointer (WP-ATT-06), and any non-canonical encoding. Never throws on any byte string.
 */
export function decodePayload(bytes: Uint8Array): Result<AppPayload> {
  if (!(bytes instanceof Uint8Array)) throw new UsageError('payload bytes must be a Uint8Array');
  if (bytes.length < 1) return malformed('payload is empty', { length: 0 });
  // WP-PAY-02: the version byte is read before anything else.
  if (bytes[0] !== PAYLOAD_FORMAT_VERSION) {
    return reject('PAYLOAD_VERSION_UNKNOWN', 'unknown payload version', { version: bytes[0] ?? -1 });
  }
  // WP-PAY-03: a whole number of padding blocks, the marker, then fewer than one block of zeros.
  if (bytes.length % PAYLOAD_PADDING_BLOCK !== 0) {
    return malformed('payload length is not a multiple of the padding block', { length: bytes.length });
  }
  let marker = bytes.length - 1;
  while (marker > 0 && bytes[marker] === 0) marker--;
  if (bytes[marker] !== PAYLOAD_PADDING_MARKER || marker < 1) {
    return malformed('payload padding has no 0x80 marker', { length: bytes.length });
  }
  if (bytes.length - 1 - marker >= PAYLOAD_PADDING_BLOCK) {
    return malformed('payload padding is longer than needed', { zeros: bytes.length - 1 - marker });
  }
  const read = readStrictFields(bytes.subarray(1, marker), PAYLOAD_SCHEMA);
  if (!read.ok) return malformed(read.message, read.details);
  const messageId = singleBytes(read.fields, PAYLOAD_FIELD.messageId);
  const sentAt = singleVarint(read.fields, PAYLOAD_FIELD.sentAt);
  if (messageId === undefined || messageId.length !== MESSAGE_ID_BYTES) {
    return malformed('message_id must appear once and be 16 bytes');
  }
  // WP-PAY-04: the time is a safe integer.
  if (sentAt === undefined || sentAt > BigInt(Number.MAX_SAFE_INTEGER)) {
    return malformed('sent_at must appear once and be at most 2^53 - 1');
  }
  const content = decodeContent(read.fields);
  if (!content.ok) return content;
  const payload: AppPayload = { messageId: toHex(messageId), sentAt: Number(sentAt), content: content.value };
  // WP-PAY-01: one accepted encoding, padding included.
  if (!equalBytes(encodePayload(payload), bytes)) return malformed('payload encoding is not canonical');
  return accept(payload);
}
