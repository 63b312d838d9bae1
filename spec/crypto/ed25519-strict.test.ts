/**
 * The byte-level prechecks shared by both providers (WP-KEYS-07), checked against noble's point
 * arithmetic: the small-order list is re-derived here rather than trusted.
 */
import { ed25519 } from '@noble/curves/ed25519.js';
import { numberToBytesLE } from '@noble/curves/utils.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { fromHex, toHex } from '../hex.js';
import {
  hasCanonicalY,
  isCanonicalScalar,
  isSmallOrderEncoding,
  passesStrictPrechecks,
} from './ed25519-strict.js';

const Point = ed25519.Point;
const L = Point.Fn.ORDER;
const P = Point.Fp.ORDER;

/** A signature whose S is `s`, with R all zero. */
function withS(s: bigint): Uint8Array {
  const signature = new Uint8Array(64);
  signature.set(numberToBytesLE(s, 32), 32);
  return signature;
}

describe('S < L [WP-KEYS-07]', () => {
  it('accepts 0 and L − 1, refuses L, L + 1 and S + L with the top three bits clear [WP-KEYS-07]', () => {
    expect(isCanonicalScalar(withS(0n))).toBe(true);
    expect(isCanonicalScalar(withS(L - 1n))).toBe(true);
    expect(isCanonicalScalar(withS(L))).toBe(false);
    expect(isCanonicalScalar(withS(L + 1n))).toBe(false);
    expect(isCanonicalScalar(withS(2n ** 253n - 1n))).toBe(false);
  });

  it('agrees with a bigint comparison on random S [WP-KEYS-07]', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: 2n ** 256n - 1n }), (s) => {
        expect(isCanonicalScalar(withS(s))).toBe(s < L);
      }),
    );
  });
});

describe('canonical y', () => {
  it('accepts p − 1 and refuses p … 2^255 − 1, whatever the sign bit [WP-KEYS-07]', () => {
    expect(hasCanonicalY(numberToBytesLE(P - 1n, 32))).toBe(true);
    for (let y = P; y < 2n ** 255n; y++) {
      const encoded = numberToBytesLE(y, 32);
      expect(hasCanonicalY(encoded)).toBe(false);
      encoded[31] = (encoded[31] ?? 0) | 0x80;
      expect(hasCanonicalY(encoded)).toBe(false);
    }
  });
});

describe('small-order public keys [WP-KEYS-07]', () => {
  it('lists exactly the encodings (y < p) of the eight points of order dividing 8 [WP-KEYS-07]', () => {
    // [L]Q lies in the torsion subgroup for any point Q (the group has order 8L); take the first
    // decodable y whose [L]Q has order exactly 8 and walk its multiples.
    let generator = Point.ZERO;
    for (let y = 2n; generator.multiplyUnsafe(4n).is0(); y++) {
      try {
        const q = Point.fromBytes(numberToBytesLE(y, 32));
        generator = q.multiplyUnsafe(L - 1n).add(q);
      } catch {
        // Not every y is on the curve; try the next one.
      }
    }
    const expected = new Set<string>();
    let point = Point.ZERO;
    for (let i = 0; i < 8; i++) {
      const encoded = point.toBytes();
      expected.add(toHex(encoded));
      // x = 0 also has a "negative zero" encoding with the sign bit set.
      if (point.x === 0n) expected.add(toHex(encoded.map((b, j) => (j === 31 ? b | 0x80 : b))));
      point = point.add(generator);
    }
    expect(point.is0()).toBe(true);
    expect(expected.size).toBe(10);
    for (const hex of expected) expect(isSmallOrderEncoding(fromHex(hex)), hex).toBe(true);
    // And nothing else: random canonical encodings are never listed.
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), (encoded) => {
        expect(isSmallOrderEncoding(encoded)).toBe(expected.has(toHex(encoded)));
      }),
    );
  });

  it('makes passesStrictPrechecks refuse them, and wrong lengths [WP-KEYS-07]', () => {
    const identity = Point.ZERO.toBytes();
    expect(passesStrictPrechecks(identity, new Uint8Array(64))).toBe(false);
    expect(passesStrictPrechecks(Point.BASE.toBytes(), new Uint8Array(64))).toBe(true);
    expect(passesStrictPrechecks(Point.BASE.toBytes(), new Uint8Array(63))).toBe(false);
    expect(passesStrictPrechecks(new Uint8Array(31), new Uint8Array(64))).toBe(false);
  });
});
