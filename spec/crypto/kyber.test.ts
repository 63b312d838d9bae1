/**
 * Round-3 Kyber-1024 from ML-KEM-1024 (WP-KEYS-08) and its random draws (WP-KEYS-09). The wrapper
 * is checked independently: the test recomputes the round-3 formulas from noble's raw ML-KEM and
 * SHA-3 and compares. Every check runs on both providers (noble's ML-KEM; ./ml-kem.ts over
 * node:crypto's SHA-3).
 */
import { sha3_256, shake256 } from '@noble/hashes/sha3.js';
import { ml_kem1024 } from '@noble/post-quantum/ml-kem.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { concatBytes } from '../bytes.js';
import { DRAWS } from '../draws.js';
import { UsageError } from '../errors.js';
import { toHex } from '../hex.js';
import { seededRng, type Rng } from '../rng.js';
import {
  kemDecapsulate,
  kemEncapsulate,
  kemGenerateKeyPair,
  kemPublicKeyCoefficientsReduced,
} from './kyber.js';
import { PREPARED_KEY_MEMO_MAX } from './ml-kem-noble.js';
import { nobleProvider } from './noble.js';
import { nodeProvider } from './node.js';

/** An Rng that records every draw (a copy of the bytes handed out) on top of a seeded stream. */
function recordingRng(seed: string): { rng: Rng; draws: Uint8Array[] } {
  const inner = seededRng(seed);
  const draws: Uint8Array[] = [];
  return {
    draws,
    rng: {
      randomBytes(length: number): Uint8Array {
        const out = inner.randomBytes(length);
        draws.push(Uint8Array.from(out));
        return out;
      },
    },
  };
}

for (const c of [nobleProvider, nodeProvider]) {
  describe(`${c.name} provider`, () => {
    const keyPair = kemGenerateKeyPair(c, seededRng('kyber fixture'));

    describe('Kyber-1024 encodings and round trip', () => {
      it('uses libsignal encodings 0x08 ‖ raw (1569 / 3169 / 1569 bytes) [WP-KEYS-05] [WP-KEYS-08]', () => {
        const { ciphertext, sharedSecret } = kemEncapsulate(c, keyPair.publicKey, seededRng('enc'));
        expect([
          keyPair.publicKey.length,
          keyPair.secretKey.length,
          ciphertext.length,
          sharedSecret.length,
        ]).toEqual([1569, 3169, 1569, 32]);
        expect([keyPair.publicKey[0], keyPair.secretKey[0], ciphertext[0]]).toEqual([0x08, 0x08, 0x08]);
      });

      it('decapsulates to the encapsulated secret [WP-KEYS-08]', () => {
        for (let i = 0; i < 5; i++) {
          const pair = kemGenerateKeyPair(c, seededRng(`pair ${i}`));
          const { ciphertext, sharedSecret } = kemEncapsulate(c, pair.publicKey, seededRng(`enc ${i}`));
          expect(toHex(kemDecapsulate(c, pair.secretKey, ciphertext))).toBe(toHex(sharedSecret));
        }
      });

      it('gives a different secret, without an error, for a tampered ciphertext (implicit rejection) [WP-KEYS-08]', () => {
        const { ciphertext, sharedSecret } = kemEncapsulate(c, keyPair.publicKey, seededRng('tamper'));
        fc.assert(
          fc.property(fc.integer({ min: 1, max: 1568 }), fc.integer({ min: 0, max: 7 }), (index, bit) => {
            const tampered = Uint8Array.from(ciphertext);
            tampered[index] = (tampered[index] ?? 0) ^ (1 << bit);
            const secret = kemDecapsulate(c, keyPair.secretKey, tampered);
            expect(secret.length).toBe(32);
            expect(toHex(secret)).not.toBe(toHex(sharedSecret));
          }),
          { numRuns: 20 },
        );
      });

      it('is deterministic given the Rng stream [WP-KEYS-09]', () => {
        expect(toHex(kemGenerateKeyPair(c, seededRng('same')).publicKey)).toBe(
          toHex(kemGenerateKeyPair(c, seededRng('same')).publicKey),
        );
        const a = kemEncapsulate(c, keyPair.publicKey, seededRng('same'));
        const b = kemEncapsulate(c, keyPair.publicKey, seededRng('same'));
        expect(toHex(a.ciphertext)).toBe(toHex(b.ciphertext));
      });
    });

    describe('Kyber-1024 random draws [WP-KEYS-09]', () => {
      it('key generation draws exactly one 64-byte seed and hands it to ML-KEM keygen [WP-KEYS-08] [WP-KEYS-09]', () => {
        const { rng, draws } = recordingRng('draws keygen');
        const pair = kemGenerateKeyPair(c, rng);
        expect(draws.map((d) => d.length)).toEqual(DRAWS.kemGenerateKeyPair.map((d) => d.bytes));
        expect(draws.map((d) => d.length)).toEqual([64]);
        const direct = ml_kem1024.keygen(draws[0] ?? new Uint8Array(0));
        expect(toHex(pair.publicKey)).toBe(toHex(concatBytes(Uint8Array.of(0x08), direct.publicKey)));
        expect(toHex(pair.secretKey)).toBe(toHex(concatBytes(Uint8Array.of(0x08), direct.secretKey)));
      });

      it('encapsulation draws exactly one 32-byte seed [WP-KEYS-08] [WP-KEYS-09]', () => {
        const { rng, draws } = recordingRng('draws encaps');
        kemEncapsulate(c, keyPair.publicKey, rng);
        expect(draws.map((d) => d.length)).toEqual(DRAWS.kemEncapsulate.map((d) => d.bytes));
        expect(draws.map((d) => d.length)).toEqual([32]);
      });
    });

    describe('the round-3 wrapper, checked independently [WP-KEYS-08]', () => {
      it('ss = SHAKE256(K̄ ‖ SHA3-256(ct), 32) with (ct, K̄) = ML-KEM.Encaps(pk, SHA3-256(seed)), and ss ≠ K̄ [WP-KEYS-08]', () => {
        for (let i = 0; i < 5; i++) {
          const { rng, draws } = recordingRng(`wrapper ${i}`);
          const { ciphertext, sharedSecret } = kemEncapsulate(c, keyPair.publicKey, rng);
          const seed = draws[0] ?? new Uint8Array(0);
          // Kyber v3.02 Alg. 8: m = H(seed); then ML-KEM's deterministic encapsulation with that m.
          const raw = ml_kem1024.encapsulate(keyPair.publicKey.subarray(1), sha3_256(seed));
          expect(toHex(ciphertext.subarray(1))).toBe(toHex(raw.cipherText));
          const expected = shake256(concatBytes(raw.sharedSecret, sha3_256(raw.cipherText)), { dkLen: 32 });
          expect(toHex(sharedSecret)).toBe(toHex(expected));
          // Raw ML-KEM's secret is not what libsignal's round-3 Kyber derives.
          expect(toHex(sharedSecret)).not.toBe(toHex(raw.sharedSecret));
          // Decapsulation applies the same wrapper to ML-KEM's K̄.
          const kBar = ml_kem1024.decapsulate(raw.cipherText, keyPair.secretKey.subarray(1));
          expect(toHex(kBar)).toBe(toHex(raw.sharedSecret));
          expect(toHex(kemDecapsulate(c, keyPair.secretKey, ciphertext))).toBe(toHex(expected));
        }
      });
    });

    describe('the prepared-key memo (same results as without it) [WP-KEYS-08]', () => {
      it('gives the same ciphertext and secret when a key comes back after the memo dropped it [WP-KEYS-08]', () => {
        const pair = kemGenerateKeyPair(c, seededRng('memo pair'));
        const first = kemEncapsulate(c, pair.publicKey, seededRng('memo enc'));
        const again = kemEncapsulate(c, pair.publicKey, seededRng('memo enc'));
        // Enough other keys to push this one out of the memo (both for encapsulation and for the
        // decapsulation that re-encrypts to it).
        for (let i = 0; i < PREPARED_KEY_MEMO_MAX; i++) {
          kemEncapsulate(
            c,
            kemGenerateKeyPair(c, seededRng(`memo filler ${i}`)).publicKey,
            seededRng('filler enc'),
          );
        }
        const later = kemEncapsulate(c, pair.publicKey, seededRng('memo enc'));
        for (const result of [again, later]) {
          expect(toHex(result.ciphertext)).toBe(toHex(first.ciphertext));
          expect(toHex(result.sharedSecret)).toBe(toHex(first.sharedSecret));
        }
        expect(toHex(kemDecapsulate(c, pair.secretKey, first.ciphertext))).toBe(toHex(first.sharedSecret));
      });

      it('refuses a secret key whose embedded public key has a coefficient ≥ q with UsageError', () => {
        const corrupt = Uint8Array.from(keyPair.secretKey);
        // dk = dk_PKE[1536] ‖ ek[1568] ‖ H(ek)[32] ‖ z[32]: raise ek's first coefficient to 4095.
        corrupt[1 + 1536] = 0xff;
        corrupt[1 + 1537] = (corrupt[1 + 1537] ?? 0) | 0x0f;
        const { ciphertext } = kemEncapsulate(c, keyPair.publicKey, seededRng('corrupt ek'));
        expect(() => kemDecapsulate(c, corrupt, ciphertext)).toThrow(UsageError);
      });
    });

    describe('Kyber-1024 argument checks', () => {
      it('refuses wrong lengths and type bytes with UsageError', () => {
        const rng = seededRng('misuse');
        const { ciphertext } = kemEncapsulate(c, keyPair.publicKey, rng);
        expect(() => kemEncapsulate(c, keyPair.publicKey.subarray(1), rng)).toThrow(UsageError);
        expect(() =>
          kemEncapsulate(c, concatBytes(Uint8Array.of(0x0a), keyPair.publicKey.subarray(1)), rng),
        ).toThrow(UsageError);
        expect(() => kemDecapsulate(c, keyPair.secretKey.subarray(0, 3168), ciphertext)).toThrow(UsageError);
        expect(() => kemDecapsulate(c, keyPair.secretKey, ciphertext.subarray(0, 1568))).toThrow(UsageError);
        expect(() =>
          kemDecapsulate(c, keyPair.secretKey, concatBytes(Uint8Array.of(0x07), ciphertext.subarray(1))),
        ).toThrow(UsageError);
      });

      it('refuses a secret key whose embedded public-key hash is corrupt with UsageError', () => {
        const corrupt = Uint8Array.from(keyPair.secretKey);
        // dk = dk_PKE[1536] ‖ ek[1568] ‖ H(ek)[32] ‖ z[32]; flip a byte of H(ek) (after the type byte).
        corrupt[1 + 1536 + 1568] = (corrupt[1 + 1536 + 1568] ?? 0) ^ 1;
        const { ciphertext } = kemEncapsulate(c, keyPair.publicKey, seededRng('corrupt'));
        expect(() => kemDecapsulate(c, corrupt, ciphertext)).toThrow(UsageError);
      });
    });
  });
}

describe('FIPS 203 §7.2 encapsulation-key check [WP-KEYS-05]', () => {
  /** Sets the 12-bit coefficient `index` of t̂ in a raw public key to `value`. */
  function setCoefficient(raw: Uint8Array, index: number, value: number): Uint8Array {
    const out = Uint8Array.from(raw);
    const at = Math.floor(index / 2) * 3;
    if (index % 2 === 0) {
      out[at] = value & 0xff;
      out[at + 1] = ((out[at + 1] ?? 0) & 0xf0) | (value >> 8);
    } else {
      out[at + 1] = ((out[at + 1] ?? 0) & 0x0f) | ((value & 0x0f) << 4);
      out[at + 2] = value >> 4;
    }
    return out;
  }

  const noblePassesCheck = (raw: Uint8Array): boolean => {
    try {
      ml_kem1024.encapsulate(raw, new Uint8Array(32));
      return true;
    } catch {
      return false;
    }
  };

  it('agrees with noble on keys with one coefficient set anywhere in 0 … 4095 [WP-KEYS-05]', () => {
    const raw = kemGenerateKeyPair(nobleProvider, seededRng('kyber fixture')).publicKey.subarray(1);
    expect(kemPublicKeyCoefficientsReduced(raw)).toBe(true);
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 1023 }), fc.integer({ min: 0, max: 4095 }), (index, value) => {
        const modified = setCoefficient(raw, index, value);
        expect(kemPublicKeyCoefficientsReduced(modified)).toBe(value < 3329);
        expect(noblePassesCheck(modified)).toBe(value < 3329);
      }),
      { numRuns: 60 },
    );
  });

  it('agrees with noble on random 1568-byte strings [WP-KEYS-05]', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1568, maxLength: 1568 }), (raw) => {
        expect(kemPublicKeyCoefficientsReduced(raw)).toBe(noblePassesCheck(raw));
      }),
      { numRuns: 20 },
    );
  });
});
