/**
 * A builder for malformed wire messages, for negative tests only (WP-WIRE-01 … WP-WIRE-06). The
 * encoders in `spec/wire.ts` refuse to produce bad messages; this module writes whatever it is
 * told: missing, duplicated, reordered and unknown fields, wrong wire types, bare tags (groups,
 * wire types 6 and 7, field 0), out-of-range varints and raw byte splices. It uses the same
 * `BinaryWriter` as the codecs, so only the content differs, never the varint encoding.
 *
 * Nothing in protocol code imports this module.
 * @module
 */
import { BinaryWriter, WireType } from '@bufbuild/protobuf/wire';
import { concatBytes } from './bytes.js';
import { MAC_LENGTH, VERSION_BYTE } from './constants.js';
import { UsageError } from './errors.js';
import {
  PREKEY_MESSAGE_FIELD,
  SIGNAL_MESSAGE_FIELD,
  type PreKeySignalMessageFields,
  type SignalMessageFields,
} from './wire.js';

/** One protobuf element to write, verbatim. */
export type RawField =
  /** A tag with wire type 0 and a varint value (up to 64 bits). */
  | { readonly kind: 'varint'; readonly field: number; readonly value: number | bigint }
  /** A tag with wire type 2, a length prefix and the bytes. */
  | { readonly kind: 'bytes'; readonly field: number; readonly value: Uint8Array }
  /** A tag with wire type 5 and 4 little-endian bytes. */
  | { readonly kind: 'fixed32'; readonly field: number; readonly value: number }
  /** A tag with wire type 1 and 8 little-endian bytes. */
  | { readonly kind: 'fixed64'; readonly field: number; readonly value: bigint }
  /** A bare tag with any wire type 0..7 (group start/end, invalid types), nothing after it. */
  | { readonly kind: 'tag'; readonly field: number; readonly wireType: number }
  /** Raw bytes spliced in as they are (a hand-made varint, a truncated length, garbage). */
  | { readonly kind: 'raw'; readonly bytes: Uint8Array };

/** Writes the elements in the order given, with no validation of their meaning. */
export function encodeRawFields(fields: readonly RawField[]): Uint8Array {
  const writer = new BinaryWriter();
  for (const element of fields) {
    switch (element.kind) {
      case 'varint':
        writer.tag(element.field, WireType.Varint).uint64(element.value);
        break;
      case 'bytes':
        writer.tag(element.field, WireType.LengthDelimited).bytes(element.value);
        break;
      case 'fixed32':
        writer.tag(element.field, WireType.Bit32).fixed32(element.value);
        break;
      case 'fixed64':
        writer.tag(element.field, WireType.Bit64).fixed64(element.value);
        break;
      case 'tag':
        if (!Number.isInteger(element.wireType) || element.wireType < 0 || element.wireType > 7) {
          throw new UsageError(`wire type must be 0..7, got ${element.wireType}`);
        }
        writer.uint32(((element.field << 3) | element.wireType) >>> 0);
        break;
      case 'raw':
        writer.raw(element.bytes);
        break;
    }
  }
  return writer.finish();
}

/** The elements `encodeSignalMessageBody` would write, in order, ready to be edited. */
export function signalMessageRawFields(fields: SignalMessageFields): RawField[] {
  return [
    { kind: 'bytes', field: SIGNAL_MESSAGE_FIELD.ratchetKey, value: fields.ratchetKey },
    { kind: 'varint', field: SIGNAL_MESSAGE_FIELD.counter, value: fields.counter },
    { kind: 'varint', field: SIGNAL_MESSAGE_FIELD.previousCounter, value: fields.previousCounter },
    { kind: 'bytes', field: SIGNAL_MESSAGE_FIELD.ciphertext, value: fields.ciphertext },
  ];
}

/** The elements `encodePreKeySignalMessage` would write, in order, ready to be edited. */
export function preKeySignalMessageRawFields(fields: PreKeySignalMessageFields): RawField[] {
  const out: RawField[] = [];
  if (fields.preKeyId !== undefined) {
    out.push({ kind: 'varint', field: PREKEY_MESSAGE_FIELD.preKeyId, value: fields.preKeyId });
  }
  out.push(
    { kind: 'bytes', field: PREKEY_MESSAGE_FIELD.baseKey, value: fields.baseKey },
    { kind: 'bytes', field: PREKEY_MESSAGE_FIELD.identityKey, value: fields.identityKey },
    { kind: 'bytes', field: PREKEY_MESSAGE_FIELD.message, value: fields.message },
    { kind: 'varint', field: PREKEY_MESSAGE_FIELD.registrationId, value: fields.registrationId },
    { kind: 'varint', field: PREKEY_MESSAGE_FIELD.signedPreKeyId, value: fields.signedPreKeyId },
    { kind: 'varint', field: PREKEY_MESSAGE_FIELD.kyberPreKeyId, value: fields.kyberPreKeyId },
    { kind: 'bytes', field: PREKEY_MESSAGE_FIELD.kyberCiphertext, value: fields.kyberCiphertext },
  );
  return out;
}

/** Options for {@link buildRawSignalMessage}. */
export interface RawSignalMessageOptions {
  /** Defaults to 0x44. */
  readonly versionByte?: number;
  /** Defaults to 8 zero bytes; any length is allowed. */
  readonly mac?: Uint8Array;
}

/** `versionByte ‖ fields ‖ mac`, exactly as given. */
export function buildRawSignalMessage(
  fields: readonly RawField[],
  options: RawSignalMessageOptions = {},
): Uint8Array {
  const mac = options.mac ?? new Uint8Array(MAC_LENGTH);
  return concatBytes(Uint8Array.of(options.versionByte ?? VERSION_BYTE), encodeRawFields(fields), mac);
}

/** `versionByte ‖ fields`, exactly as given (defaults to 0x44). */
export function buildRawPreKeySignalMessage(
  fields: readonly RawField[],
  versionByte: number = VERSION_BYTE,
): Uint8Array {
  return concatBytes(Uint8Array.of(versionByte), encodeRawFields(fields));
}
