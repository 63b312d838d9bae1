/**
 * The key schedule (WP-DR-01, WP-DR-02, WP-DR-03, WP-PQXDH-03), checked against HMAC and HKDF
 * computed independently in the test with node:crypto, and against libsignal's chain-key vector.
 */
import { createHmac, hkdfSync } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { nobleProvider } from './crypto/noble.js';
import { nodeProvider } from './crypto/node.js';
import { UsageError } from './errors.js';
import { fromHex, toHex } from './hex.js';
import { deriveMessageKeys, kdfCk, kdfRk, pqxdhSecret } from './kdf.js';

const providers = [nobleProvider, nodeProvider] as const;
const key32 = fc.uint8Array({ minLength: 32, maxLength: 32 });

/** Independent HKDF-SHA256 with the label written out as text here, not imported. */
function hkdf(ikm: Uint8Array, salt: Uint8Array, info: string, length: number): string {
  return Buffer.from(hkdfSync('sha256', ikm, salt, Buffer.from(info, 'ascii'), length)).toString('hex');
}

function hmac(key: Uint8Array, data: number[]): string {
  return createHmac('sha256', key).update(Uint8Array.from(data)).digest('hex');
}

describe('kdfRk', () => {
  it('is HKDF-SHA256(salt = RK, IKM = dh, "WhisperRatchet", 64) split RK′ ‖ CK [WP-DR-01]', () => {
    fc.assert(
      fc.property(key32, key32, (rootKey, dhOutput) => {
        const okm = hkdf(dhOutput, rootKey, 'WhisperRatchet', 64);
        for (const c of providers) {
          const result = kdfRk(c, rootKey, dhOutput);
          expect([toHex(result.rootKey), toHex(result.chainKey)]).toEqual([
            okm.slice(0, 64),
            okm.slice(64, 128),
          ]);
        }
      }),
      { numRuns: 50 },
    );
  });

  it('uses the root key as salt, not as IKM [WP-DR-01]', () => {
    const rootKey = new Uint8Array(32).fill(1);
    const dhOutput = new Uint8Array(32).fill(2);
    const swapped = hkdf(rootKey, dhOutput, 'WhisperRatchet', 64);
    expect(toHex(kdfRk(nobleProvider, rootKey, dhOutput).rootKey)).not.toBe(swapped.slice(0, 64));
  });

  it('refuses wrong lengths with UsageError', () => {
    expect(() => kdfRk(nobleProvider, new Uint8Array(31), new Uint8Array(32))).toThrow(UsageError);
    expect(() => kdfRk(nobleProvider, new Uint8Array(32), new Uint8Array(33))).toThrow(UsageError);
  });
});

describe('kdfCk', () => {
  it('is seed = HMAC-SHA256(CK, 0x01), CK′ = HMAC-SHA256(CK, 0x02) [WP-DR-02]', () => {
    fc.assert(
      fc.property(key32, (chainKey) => {
        for (const c of providers) {
          const result = kdfCk(c, chainKey);
          expect(toHex(result.messageKeySeed)).toBe(hmac(chainKey, [0x01]));
          expect(toHex(result.nextChainKey)).toBe(hmac(chainKey, [0x02]));
        }
      }),
      { numRuns: 50 },
    );
  });

  it("matches libsignal's test_chain_key_derivation [WP-DR-02] [WP-DR-03]", () => {
    // rust/protocol/src/ratchet/keys.rs (also vectors/external/chain-key-libsignal.json).
    const chainKey = fromHex('8ab72d6f4cc5ac0d387eaf463378ddb28edd07385b1cb01250c715982e7ad48f');
    for (const c of providers) {
      const { messageKeySeed, nextChainKey } = kdfCk(c, chainKey);
      const keys = deriveMessageKeys(c, messageKeySeed);
      expect(toHex(keys.cipherKey)).toBe('bf51e9d75e0e31031051f82a2491ffc084fa298b7793bd9db620056febf45217');
      expect(toHex(keys.macKey)).toBe('c6c77d6a73a354337a56435e34607dfe48e3ace14e77314dc6abc172e7a7030b');
      expect(toHex(nextChainKey)).toBe('28e8f8fee54b801eef7c5cfb2f17f32c7b334485bbb70fac6ec10342a246d15d');
    }
  });
});

describe('deriveMessageKeys', () => {
  it('is HKDF-SHA256(salt = none, IKM = seed, "WhisperMessageKeys", 80) split 32/32/16 [WP-DR-03]', () => {
    fc.assert(
      fc.property(key32, (seed) => {
        // RFC 5869: "salt not provided" = HashLen zero bytes.
        const okm = hkdf(seed, new Uint8Array(32), 'WhisperMessageKeys', 80);
        for (const c of providers) {
          const keys = deriveMessageKeys(c, seed);
          expect([toHex(keys.cipherKey), toHex(keys.macKey), toHex(keys.iv)]).toEqual([
            okm.slice(0, 64),
            okm.slice(64, 128),
            okm.slice(128, 160),
          ]);
        }
      }),
      { numRuns: 50 },
    );
  });
});

describe('pqxdhSecret', () => {
  const dhOutputs = (count: number) => fc.array(key32, { minLength: count, maxLength: count });

  it('is HKDF(salt = none, 0xFF×32 ‖ DH1 ‖ … ‖ DHn ‖ SS, PQXDH info, 96) split RK ‖ CK ‖ PQR, for 3 and 4 DHs [WP-PQXDH-03]', () => {
    fc.assert(
      fc.property(fc.oneof(dhOutputs(3), dhOutputs(4)), key32, (outputs, kemSecret) => {
        const ikm = Buffer.concat([Buffer.alloc(32, 0xff), ...outputs, kemSecret]);
        const okm = hkdf(ikm, new Uint8Array(0), 'WhisperText_X25519_SHA-256_CRYSTALS-KYBER-1024', 96);
        for (const c of providers) {
          const result = pqxdhSecret(c, outputs, kemSecret);
          expect([toHex(result.rootKey), toHex(result.chainKey), toHex(result.pqrKey)]).toEqual([
            okm.slice(0, 64),
            okm.slice(64, 128),
            okm.slice(128, 192),
          ]);
        }
      }),
      { numRuns: 40 },
    );
  });

  it('depends on the order of the DH outputs and puts the KEM secret last [WP-PQXDH-03]', () => {
    const a = new Uint8Array(32).fill(1);
    const b = new Uint8Array(32).fill(2);
    const d = new Uint8Array(32).fill(3);
    const ss = new Uint8Array(32).fill(4);
    const base = toHex(pqxdhSecret(nodeProvider, [a, b, d], ss).rootKey);
    expect(toHex(pqxdhSecret(nodeProvider, [b, a, d], ss).rootKey)).not.toBe(base);
    expect(toHex(pqxdhSecret(nodeProvider, [ss, a, b], d).rootKey)).not.toBe(base);
  });

  it('refuses fewer than 3 or more than 4 DH outputs, and wrong lengths, with UsageError', () => {
    const k = new Uint8Array(32);
    expect(() => pqxdhSecret(nobleProvider, [k, k], k)).toThrow(UsageError);
    expect(() => pqxdhSecret(nobleProvider, [k, k, k, k, k], k)).toThrow(UsageError);
    expect(() => pqxdhSecret(nobleProvider, [k, k, new Uint8Array(31)], k)).toThrow(UsageError);
    expect(() => pqxdhSecret(nobleProvider, [k, k, k], new Uint8Array(16))).toThrow(UsageError);
  });
});
