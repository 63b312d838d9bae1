/**
 * The strict protobuf reader of Lockstep's own formats (spec/protobuf.ts): unknown fields, wrong
 * wire types and malformed varints and lengths are failures; occurrences are kept in order.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { fromHex } from './hex.js';
import { decodeUtf8Strict, encodeUtf8Strict, readStrictFields, type StrictFieldKind } from './protobuf.js';
import { UsageError } from './errors.js';

const SCHEMA = new Map<number, StrictFieldKind>([
  [1, 'bytes'],
  [2, 'varint'],
]);

describe('readStrictFields', () => {
  it('keeps every occurrence in order and copies bytes [WP-DEV-03, WP-PAY-01]', () => {
    const input = fromHex('0a01aa10050a01bb');
    const read = readStrictFields(input, SCHEMA);
    expect(read.ok).toBe(true);
    if (!read.ok) return;
    expect(read.fields.bytes.get(1)).toEqual([Uint8Array.of(0xaa), Uint8Array.of(0xbb)]);
    expect(read.fields.varints.get(2)).toEqual([5n]);
    input[2] = 0;
    expect(read.fields.bytes.get(1)?.[0]).toEqual(Uint8Array.of(0xaa));
  });

  const bad: Array<[string, string]> = [
    ['an unknown field', '1801'],
    ['a varint field sent as bytes', '120100'],
    ['a bytes field sent as a varint', '0801'],
    ['a truncated varint', '1080'],
    ['a varint overflowing 64 bits', '10ffffffffffffffffff02'],
    ['a length past the end', '0a05aa'],
    ['field number 0', '0001'],
    ['wire type 7', '0f'],
    ['a group', '0b0c'],
  ];
  for (const [name, bytes] of bad) {
    it(`fails on ${name} [WP-DEV-03, WP-PAY-01]`, () => {
      expect(readStrictFields(fromHex(bytes), SCHEMA).ok).toBe(false);
    });
  }

  it('never throws on any bytes [WP-DEV-03, WP-PAY-01]', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => void readStrictFields(bytes, SCHEMA)));
  });
});

describe('strict UTF-8', () => {
  it('rejects ill-formed UTF-8, keeps a BOM, refuses lone surrogates on encode [WP-PAY-04]', () => {
    expect(decodeUtf8Strict(fromHex('c0af'))).toBeUndefined();
    expect(decodeUtf8Strict(fromHex('efbbbf41'))).toBe('\ufeffA');
    expect(() => encodeUtf8Strict('text', '\udc00')).toThrow(UsageError);
    expect(encodeUtf8Strict('text', 'é')).toEqual(fromHex('c3a9'));
  });
});
