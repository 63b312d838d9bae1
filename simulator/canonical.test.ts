import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { nodeProvider } from '../spec/crypto/node.js';
import { CanonicalFragment, canonicalJson, canonicallyEqual } from './canonical.js';

/** Values like the engines' outputs and projections, with the corner cases canonical JSON has. */
const leaf = fc.oneof(
  fc.constant(undefined),
  fc.constant(null),
  fc.boolean(),
  fc.integer({ min: -3, max: 3 }),
  fc.constantFrom(Number.NaN, Number.POSITIVE_INFINITY, -0),
  fc.constantFrom('a', 'b', ''),
  fc.uint8Array({ maxLength: 3 }),
  fc.constantFrom('{}', '1', '"a"').map((json) => new CanonicalFragment(json)),
);
const value = fc.letrec((tie) => ({
  value: fc.oneof({ depthSize: 'small' }, leaf, tie('array'), tie('record')),
  array: fc.array(tie('value'), { maxLength: 3 }),
  record: fc.dictionary(fc.constantFrom('x', 'y', 'z'), tie('value'), { maxKeys: 3 }),
})).value;

describe('canonicallyEqual (the `both` comparison shortcut)', () => {
  it('never calls two values equal whose canonical JSON differs, and agrees on structural copies', () => {
    fc.assert(
      fc.property(value, value, (a, b) => {
        const same = canonicalJson(a, nodeProvider) === canonicalJson(b, nodeProvider);
        if (canonicallyEqual(a, b)) expect(same).toBe(true);
        // A structural copy (fresh arrays, records and byte arrays) is always recognised.
        expect(canonicallyEqual(a, structuredCopy(a))).toBe(true);
      }),
      { numRuns: 3000, seed: 5 },
    );
  });

  it('finds differences a shortcut could miss: bytes, member order, undefined members, holes', () => {
    expect(canonicallyEqual(Uint8Array.of(1, 2), Uint8Array.of(1, 3))).toBe(false);
    expect(canonicallyEqual({ x: 1, y: 2 }, { y: 2, x: 1 })).toBe(true);
    expect(canonicallyEqual({ x: 1, y: undefined }, { x: 1 })).toBe(true);
    expect(canonicallyEqual({ x: 1 }, { x: 1, y: 0 })).toBe(false);
    // eslint-disable-next-line no-sparse-arrays
    expect(canonicallyEqual([1, , 3], [1, undefined, 3])).toBe(false);
    expect(canonicallyEqual([Uint8Array.of(1)], [[1]])).toBe(false);
    expect(canonicallyEqual(new CanonicalFragment('1'), 1)).toBe(false);
  });
});

function structuredCopy(v: unknown): unknown {
  if (v instanceof Uint8Array) return Uint8Array.from(v);
  if (v instanceof CanonicalFragment) return new CanonicalFragment(v.json);
  if (Array.isArray(v)) return v.map(structuredCopy);
  if (v !== null && typeof v === 'object')
    return Object.fromEntries(Object.entries(v).map(([k, m]) => [k, structuredCopy(m)]));
  return v;
}
