/**
 * Byte-level mutations for the `invalid` family: locating each protobuf field of a well-formed
 * SignalMessage or PreKeySignalMessage (WP-WIRE-02, WP-WIRE-03), flipping single bits, truncating,
 * replacing the version byte, and making a non-canonical XEdDSA scalar `s + L` (WP-KEYS-07).
 *
 * The locator reads only messages Lockstep itself wrote (varint and length-delimited fields, in
 * ascending order); it is a test tool, not a parser of untrusted input.
 * @module
 */
import { MAC_LENGTH } from '../../spec/constants.js';
import { GeneratorExpectationError } from './script.js';

/** Where one protobuf field sits in a byte string (absolute offsets). */
export interface FieldSpan {
  readonly field: number;
  readonly wireType: number;
  /** Offset of the tag byte(s). */
  readonly tagStart: number;
  /** Offset of the length prefix (length-delimited fields) or of the varint (varint fields). */
  readonly prefixStart: number;
  /** Offset of the value: the payload of a length-delimited field, the varint itself otherwise. */
  readonly valueStart: number;
  /** Offset just past the value. */
  readonly valueEnd: number;
}

function readVarint(bytes: Uint8Array, offset: number): { readonly value: number; readonly end: number } {
  let value = 0;
  let shift = 0;
  let position = offset;
  for (;;) {
    const byte = bytes[position];
    if (byte === undefined || shift > 28) throw new GeneratorExpectationError('varint runs past the end');
    value += (byte & 0x7f) * 2 ** shift;
    position++;
    shift += 7;
    if ((byte & 0x80) === 0) return { value, end: position };
  }
}

/** The fields of the protobuf `bytes[start..end)`, in order. */
export function protobufFields(bytes: Uint8Array, start: number, end: number): FieldSpan[] {
  const spans: FieldSpan[] = [];
  let position = start;
  while (position < end) {
    const tag = readVarint(bytes, position);
    const field = Math.floor(tag.value / 8);
    const wireType = tag.value % 8;
    if (wireType === 0) {
      const v = readVarint(bytes, tag.end);
      spans.push({
        field,
        wireType,
        tagStart: position,
        prefixStart: tag.end,
        valueStart: tag.end,
        valueEnd: v.end,
      });
      position = v.end;
    } else if (wireType === 2) {
      const len = readVarint(bytes, tag.end);
      const valueEnd = len.end + len.value;
      spans.push({
        field,
        wireType,
        tagStart: position,
        prefixStart: tag.end,
        valueStart: len.end,
        valueEnd,
      });
      position = valueEnd;
    } else {
      throw new GeneratorExpectationError(`unexpected wire type ${wireType}`);
    }
  }
  if (position !== end) throw new GeneratorExpectationError('protobuf overruns its frame');
  return spans;
}

/** The fields of a SignalMessage `version ‖ protobuf ‖ mac` found at `bytes[offset..end)`. */
export function signalMessageFields(bytes: Uint8Array, offset = 0, end = bytes.length): FieldSpan[] {
  return protobufFields(bytes, offset + 1, end - MAC_LENGTH);
}

/** The fields of a PreKeySignalMessage `version ‖ protobuf`. */
export function preKeyMessageFields(bytes: Uint8Array): FieldSpan[] {
  return protobufFields(bytes, 1, bytes.length);
}

/** The span of `field`, which must occur exactly once. */
export function fieldSpan(spans: readonly FieldSpan[], field: number): FieldSpan {
  const found = spans.filter((s) => s.field === field);
  const only = found[0];
  if (found.length !== 1 || only === undefined)
    throw new GeneratorExpectationError(`field ${field} occurs ${found.length} times`);
  return only;
}

/** The inner SignalMessage's field spans inside a PreKeySignalMessage (absolute offsets). */
export function innerMessageFields(preKeyMessage: Uint8Array): {
  readonly inner: FieldSpan;
  readonly fields: FieldSpan[];
} {
  const inner = fieldSpan(preKeyMessageFields(preKeyMessage), 4);
  return { inner, fields: signalMessageFields(preKeyMessage, inner.valueStart, inner.valueEnd) };
}

/** A copy of `bytes` with bit `bit` (0 = least significant) of byte `index` flipped. */
export function flipBit(bytes: Uint8Array, index: number, bit: number): Uint8Array {
  const out = Uint8Array.from(bytes);
  const byte = out[index];
  if (byte === undefined || bit < 0 || bit > 7)
    throw new GeneratorExpectationError(`cannot flip bit ${bit} of byte ${index}`);
  out[index] = byte ^ (1 << bit);
  return out;
}

/** A copy of `bytes` with byte `index` set to `value`. */
export function setByte(bytes: Uint8Array, index: number, value: number): Uint8Array {
  if (index < 0 || index >= bytes.length) throw new GeneratorExpectationError(`no byte ${index}`);
  const out = Uint8Array.from(bytes);
  out[index] = value;
  return out;
}

/** A copy of `bytes[start..end)` replaced by `replacement`. */
export function splice(bytes: Uint8Array, start: number, end: number, replacement: Uint8Array): Uint8Array {
  const out = new Uint8Array(bytes.length - (end - start) + replacement.length);
  out.set(bytes.subarray(0, start), 0);
  out.set(replacement, start);
  out.set(bytes.subarray(end), start + replacement.length);
  return out;
}

/** The group order L = 2^252 + 27742317777372353535851937790883648493 (RFC 8032 §5.1). */
const GROUP_ORDER_L = 2n ** 252n + 27742317777372353535851937790883648493n;

/**
 * WP-KEYS-07: the same signature with `s` replaced by `s + L` (the sign bit libsignal stores in bit
 * 7 of the last byte is kept). An Ed25519 verifier that does not insist on `s < L` accepts it.
 */
export function addGroupOrderToScalar(signature: Uint8Array): Uint8Array {
  if (signature.length !== 64) throw new GeneratorExpectationError('signature must be 64 bytes');
  const signBit = (signature[63] ?? 0) & 0x80;
  let s = 0n;
  for (let i = 63; i >= 32; i--)
    s = (s << 8n) | BigInt(i === 63 ? (signature[i] ?? 0) & 0x7f : (signature[i] ?? 0));
  let t = s + GROUP_ORDER_L;
  if (t >= 2n ** 255n) throw new GeneratorExpectationError('s + L does not fit under the sign bit');
  const out = Uint8Array.from(signature);
  for (let i = 32; i < 64; i++) {
    out[i] = Number(t & 0xffn);
    t >>= 8n;
  }
  out[63] = (out[63] ?? 0) | signBit;
  return out;
}
