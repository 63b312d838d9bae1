/**
 * Strict protobuf reading shared by every codec in spec/ (WP-WIRE-06 for libsignal's messages,
 * WP-DEV-02, WP-CONTACT-01, WP-LINK-01, WP-LINK-03, WP-PAY-01 for Lockstep's own formats). Varints,
 * tags and length prefixes are read with `@bufbuild/protobuf`'s `BinaryReader`; this module adds
 * the validity rules prost applies (the decoder inside libsignal) and nothing else. Reference: the
 * Protocol Buffers "Encoding" guide (varints, wire types, length-delimited records, groups).
 *
 * Two ways of reading:
 *
 * - spec/wire.ts builds its own lenient-where-libsignal-is-lenient decoder (unknown fields skipped,
 *   last value wins) from {@link readVarint}, {@link readLengthDelimited} and {@link skipField};
 * - Lockstep's own formats (device lists, contact links, provisioning, payloads) use
 *   {@link readStrictFields}: every field must be known and carry its declared wire type, and the
 *   caller then re-encodes the decoded value and requires the same bytes, so each value has exactly
 *   one accepted encoding (field order, duplicates, non-minimal varints and defaults included).
 *
 * ```text
 * varint   at most 10 bytes; a 10th byte above 0x01 overflows 64 bits          → malformed
 * length   read as a 64-bit varint; must not run past the end                  → malformed
 * tag      field number ≥ 1, wire type 0..5 (6 and 7 do not exist)             → malformed otherwise
 * group    skipped iteratively, nested at most MAX_GROUP_DEPTH deep             (lenient reader only)
 * ```
 * @module
 */
import { BinaryReader, WireType } from '@bufbuild/protobuf/wire';
import { copyBytes } from './bytes.js';
import { InvariantError, UsageError } from './errors.js';

/** Deepest nesting of proto2 groups skipped inside unknown fields (prost's default recursion limit). */
export const MAX_GROUP_DEPTH = 100;

/**
 * Thrown by the readers below when the bytes are not a valid protobuf encoding. It never leaves
 * spec/: every decoder catches it and turns it into its own typed rejection. Details are numbers.
 */
export class MalformedProtobuf extends Error {
  override readonly name = 'MalformedProtobuf';
  constructor(
    message: string,
    readonly details: Readonly<Record<string, number>>,
  ) {
    super(message);
  }
}

/** A reader together with the bytes it reads (the reader keeps its buffer private). */
export interface Cursor {
  readonly reader: BinaryReader;
  readonly bytes: Uint8Array;
}

/** A cursor at the start of `bytes`. */
export function cursorOf(bytes: Uint8Array): Cursor {
  return { reader: new BinaryReader(bytes), bytes };
}

/** Reads one varint as an unsigned 64-bit value with prost's validity rules. */
export function readVarint({ reader, bytes }: Cursor): bigint {
  const start = reader.pos;
  const value = BigInt(reader.uint64()); // throws past 10 bytes or past the end
  // WP-WIRE-06: a 10-byte varint may carry only bit 63 in its last byte; the reader would wrap.
  if (reader.pos - start === 10 && (bytes[reader.pos - 1] ?? 0) > 1) {
    throw new MalformedProtobuf('varint overflows 64 bits', { offset: start });
  }
  return value;
}

/** Reads a length prefix and returns a view of the bytes it covers. */
export function readLengthDelimited(cursor: Cursor): Uint8Array {
  const { reader, bytes } = cursor;
  const start = reader.pos;
  const length = readVarint(cursor);
  // WP-WIRE-06: the length must fit in what is left (checked as a 64-bit value, never truncated).
  if (length > BigInt(reader.len - reader.pos)) {
    throw new MalformedProtobuf('length runs past the end', { offset: start });
  }
  const begin = reader.pos;
  reader.pos = begin + Number(length);
  return bytes.subarray(begin, reader.pos);
}

/**
 * Skips one unknown field, groups included, iteratively (never recursing over untrusted input).
 * WP-WIRE-04: unknown fields of any wire type are accepted and ignored (libsignal's messages only).
 */
export function skipField(cursor: Cursor, fieldNo: number, wireType: WireType): void {
  const { reader } = cursor;
  const openGroups: number[] = [];
  let field = fieldNo;
  let type = wireType;
  for (;;) {
    const offset = reader.pos;
    switch (type) {
      case WireType.Varint:
        readVarint(cursor);
        break;
      case WireType.Bit64:
      case WireType.Bit32:
        reader.skip(type, field); // checks bounds
        break;
      case WireType.LengthDelimited:
        readLengthDelimited(cursor);
        break;
      case WireType.StartGroup:
        if (openGroups.length >= MAX_GROUP_DEPTH) {
          throw new MalformedProtobuf('groups nested too deeply', { offset, limit: MAX_GROUP_DEPTH });
        }
        openGroups.push(field);
        break;
      case WireType.EndGroup:
        // WP-WIRE-06: an end-group tag must close the group opened with the same field number.
        if (openGroups.pop() !== field) {
          throw new MalformedProtobuf('unexpected end-group tag', { offset, field });
        }
        break;
      default:
        throw new MalformedProtobuf('invalid wire type', { offset, wireType: type });
    }
    if (openGroups.length === 0) return;
    [field, type] = reader.tag();
  }
}

/** The wire shape of a field in one of Lockstep's own formats. */
export type StrictFieldKind = 'varint' | 'bytes';

/** Every occurrence of every field, in the order read; byte values are copies. */
export interface StrictFields {
  readonly varints: ReadonlyMap<number, readonly bigint[]>;
  readonly bytes: ReadonlyMap<number, readonly Uint8Array[]>;
}

/** The outcome of {@link readStrictFields}: the fields, or why the bytes are not acceptable. */
export type StrictRead =
  | { readonly ok: true; readonly fields: StrictFields }
  | { readonly ok: false; readonly message: string; readonly details: Readonly<Record<string, number>> };

/**
 * Reads a protobuf message of one of Lockstep's own formats: every field must appear in `schema`
 * with its declared wire type; anything else (an unknown field, a wrong wire type, a truncated or
 * overflowing varint, a length past the end, a bad tag) fails. Field order and repetition are
 * reported as read; callers enforce canonical form by re-encoding. Never throws on any input.
 */
export function readStrictFields(
  protobuf: Uint8Array,
  schema: ReadonlyMap<number, StrictFieldKind>,
): StrictRead {
  const cursor = cursorOf(protobuf);
  const { reader } = cursor;
  const varints = new Map<number, bigint[]>();
  const bytes = new Map<number, Uint8Array[]>();
  try {
    while (reader.pos < reader.len) {
      const offset = reader.pos;
      const [field, wireType] = reader.tag(); // throws on field 0, wire type 6/7, tag > uint32
      const kind = schema.get(field);
      if (kind === undefined) return { ok: false, message: 'unknown field', details: { offset, field } };
      if (kind === 'varint') {
        if (wireType !== WireType.Varint) {
          return { ok: false, message: 'varint field with the wrong wire type', details: { offset, field } };
        }
        const list = varints.get(field) ?? [];
        list.push(readVarint(cursor));
        varints.set(field, list);
      } else {
        if (wireType !== WireType.LengthDelimited) {
          return { ok: false, message: 'bytes field with the wrong wire type', details: { offset, field } };
        }
        const list = bytes.get(field) ?? [];
        list.push(copyBytes(readLengthDelimited(cursor)));
        bytes.set(field, list);
      }
    }
  } catch (error) {
    // A bug or caller misuse is not the peer's fault: never turn it into a rejection.
    if (error instanceof InvariantError || error instanceof UsageError) throw error;
    const details =
      error instanceof MalformedProtobuf ? error.details : { offset: Math.min(reader.pos, reader.len) };
    return { ok: false, message: 'not a valid protobuf encoding', details };
  }
  return { ok: true, fields: { varints, bytes } };
}

/** Every occurrence of a bytes field (empty when absent). */
export function bytesOccurrences(fields: StrictFields, field: number): readonly Uint8Array[] {
  return fields.bytes.get(field) ?? [];
}

/** Every occurrence of a varint field (empty when absent). */
export function varintOccurrences(fields: StrictFields, field: number): readonly bigint[] {
  return fields.varints.get(field) ?? [];
}

/** The value of a bytes field that occurs exactly once, else `undefined`. */
export function singleBytes(fields: StrictFields, field: number): Uint8Array | undefined {
  const all = bytesOccurrences(fields, field);
  return all.length === 1 ? all[0] : undefined;
}

/** The value of a varint field that occurs exactly once, else `undefined`. */
export function singleVarint(fields: StrictFields, field: number): bigint | undefined {
  const all = varintOccurrences(fields, field);
  return all.length === 1 ? all[0] : undefined;
}

const STRICT_UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Decodes a protobuf `string` field: well-formed UTF-8 only (the `fatal` decoder refuses overlong
 * forms, surrogates and truncated sequences); a leading byte-order mark is kept, not stripped.
 * Returns `undefined` for bytes that are not UTF-8.
 */
export function decodeUtf8Strict(bytes: Uint8Array): string | undefined {
  try {
    return STRICT_UTF8.decode(bytes);
  } catch {
    return undefined;
  }
}

/**
 * UTF-8 of a string the caller supplies, refusing a string with lone surrogates (which UTF-8 cannot
 * carry and which TextEncoder would silently replace, breaking the round trip).
 * @throws UsageError for a string that is not well-formed Unicode.
 */
export function encodeUtf8Strict(name: string, text: string): Uint8Array {
  if (typeof text !== 'string') throw new UsageError(`${name} must be a string`);
  const bytes = new TextEncoder().encode(text);
  if (decodeUtf8Strict(bytes) !== text) throw new UsageError(`${name} is not well-formed Unicode`);
  return bytes;
}
