/**
 * ./ml-kem.ts against an independent implementation: `@noble/post-quantum`'s `ml_kem1024`, called
 * directly (not through the noble provider's memo). Keys, ciphertexts and secrets must be byte-equal
 * on generated seeds, for valid and tampered ciphertexts and corrupted secret keys, with noble's and
 * with node:crypto's SHA-3 plugged in, and with SampleNTT forced through its refill path.
 */
import { sha3_256 } from '@noble/hashes/sha3.js';
import { ml_kem1024 } from '@noble/post-quantum/ml-kem.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { toHex } from '../hex.js';
import { createMlKem1024, type MlKem1024, type Sha3Functions } from './ml-kem.js';
import { nobleSha3 } from './ml-kem-noble.js';
import { nodeSha3 } from './node.js';

/** Byte offsets inside a raw ML-KEM-1024 secret key: dk_PKE[1536] ‖ ek[1568] ‖ H(ek)[32] ‖ z[32]. */
const EK_AT = 1536;
const HASH_AT = EK_AT + 1568;

/** noble's decapsulation, or null where it throws (its secret-key hash check). */
function nobleDecapsulate(cipherText: Uint8Array, secretKey: Uint8Array): Uint8Array | null {
  try {
    return ml_kem1024.decapsulate(cipherText, secretKey);
  } catch {
    return null;
  }
}

const hexOrNull = (bytes: Uint8Array | null): string | null => (bytes === null ? null : toHex(bytes));

const seeds = fc.record({
  seed: fc.uint8Array({ minLength: 64, maxLength: 64 }),
  m: fc.uint8Array({ minLength: 32, maxLength: 32 }),
  flip: fc.nat(1567),
  bit: fc.nat(7),
});

const implementations: ReadonlyArray<readonly [string, Sha3Functions, number | undefined]> = [
  ['noble SHA-3', nobleSha3, undefined],
  ['node:crypto SHA-3', nodeSha3, undefined],
  // One SHAKE128 block (112 candidates for 256 coefficients): every matrix entry refills.
  ['node:crypto SHA-3, one-block first squeeze', nodeSha3, 168],
];

describe.each(implementations)('ML-KEM-1024 over %s equals noble ml_kem1024', (_name, sha3, first) => {
  const mine: MlKem1024 = createMlKem1024(sha3, first);

  it('gives the same keys, ciphertexts, secrets and implicit rejections on generated seeds [WP-KEYS-08]', () => {
    fc.assert(
      fc.property(seeds, ({ seed, m, flip, bit }) => {
        const theirs = ml_kem1024.keygen(seed);
        const ours = mine.keygen(seed);
        expect(toHex(ours.publicKey)).toBe(toHex(theirs.publicKey));
        expect(toHex(ours.secretKey)).toBe(toHex(theirs.secretKey));

        const sent = ml_kem1024.encapsulate(theirs.publicKey, m);
        const encapsulated = mine.encapsulate(ours.publicKey, m);
        expect(toHex(encapsulated.cipherText)).toBe(toHex(sent.cipherText));
        expect(toHex(encapsulated.sharedSecret)).toBe(toHex(sent.sharedSecret));
        expect(hexOrNull(mine.decapsulate(sent.cipherText, ours.secretKey))).toBe(toHex(sent.sharedSecret));

        const tampered = Uint8Array.from(sent.cipherText);
        tampered[flip] = (tampered[flip] ?? 0) ^ (1 << bit);
        const rejected = nobleDecapsulate(tampered, theirs.secretKey);
        expect(rejected).not.toBeNull();
        expect(hexOrNull(rejected)).not.toBe(toHex(sent.sharedSecret));
        expect(hexOrNull(mine.decapsulate(tampered, ours.secretKey))).toBe(hexOrNull(rejected));
      }),
      { numRuns: first === undefined ? 25 : 8 },
    );
  });

  it('agrees with noble on corrupted secret keys: refused on a wrong H(ek), decided alike on an unreduced ek (FIPS 203 §7.3)', () => {
    const keySeed = new Uint8Array(64).fill(0x5a);
    const { publicKey, secretKey } = ml_kem1024.keygen(keySeed);
    const { cipherText } = ml_kem1024.encapsulate(publicKey, new Uint8Array(32).fill(0xa5));

    const wrongHash = Uint8Array.from(secretKey);
    wrongHash[HASH_AT] = (wrongHash[HASH_AT] ?? 0) ^ 1;
    const wrongKey = Uint8Array.from(secretKey);
    wrongKey[EK_AT + 7] = (wrongKey[EK_AT + 7] ?? 0) ^ 0x10;
    // ek's first coefficient raised to 4095 (≥ q), with H(ek) recomputed so the check passes:
    // ByteDecode12 reduces it mod q, and both implementations must then decide the same way.
    const unreduced = Uint8Array.from(secretKey);
    unreduced[EK_AT] = 0xff;
    unreduced[EK_AT + 1] = (unreduced[EK_AT + 1] ?? 0) | 0x0f;
    unreduced.set(sha3_256(unreduced.subarray(EK_AT, HASH_AT)), HASH_AT);

    expect(nobleDecapsulate(cipherText, wrongHash)).toBeNull();
    expect(mine.decapsulate(cipherText, wrongHash)).toBeNull();
    expect(nobleDecapsulate(cipherText, wrongKey)).toBeNull();
    expect(mine.decapsulate(cipherText, wrongKey)).toBeNull();
    const theirs = nobleDecapsulate(cipherText, unreduced);
    expect(theirs).not.toBeNull();
    expect(hexOrNull(mine.decapsulate(cipherText, unreduced))).toBe(hexOrNull(theirs));
  });

  it('refuses a first squeeze that is not a positive multiple of 3', () => {
    for (const bad of [0, 1, 170, -3, 1.5]) expect(() => createMlKem1024(sha3, bad)).toThrow(RangeError);
  });
});
