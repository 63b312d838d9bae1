/**
 * Key pairs, encodings and the validated DH (WP-KEYS-01 … WP-KEYS-06, WP-KEYS-09): every rejection
 * path with its code, for both providers where a provider is involved.
 */
import { createHash } from 'node:crypto';
import { numberToBytesLE } from '@noble/curves/utils.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { concatBytes } from './bytes.js';
import { kemEncapsulate, kemGenerateKeyPair } from './crypto/kyber.js';
import { nobleProvider } from './crypto/noble.js';
import { nodeProvider } from './crypto/node.js';
import { DRAWS } from './draws.js';
import { UsageError, type Result } from './errors.js';
import { fromHex, toHex } from './hex.js';
import {
  decodeEcPublicKey,
  decodeKemCiphertext,
  decodeKemPublicKey,
  decodeKemSecretKey,
  dh,
  encodeEcPublicKey,
  fingerprint,
  generateKeyPair,
  publicKeyFromPrivate,
} from './keys.js';
import { seededRng, type Rng } from './rng.js';

const providers = [nobleProvider, nodeProvider] as const;
const P = 2n ** 255n - 19n;

/** `0x05 ‖ u` for a u given as a number (little-endian, 32 bytes). */
const ecKey = (u: bigint) => concatBytes(Uint8Array.of(0x05), numberToBytesLE(u, 32));

function codeOf<T>(result: Result<T>): string {
  return result.ok ? 'ok' : result.error.code;
}

/** The low-order u values of Curve25519 and its twist (RFC 7748 §6.1; cr.yp.to/ecdh.html). */
const LOW_ORDER_U = [
  0n,
  1n,
  325606250916557431795983626356110631294008115727848805560023387167927233504n,
  39382357235489614581723060781553021112529911719440698176882885853963445705823n,
  P - 1n,
];

// RFC 7748 §6.1 (also in vectors/external/x25519.json).
const ALICE_PRIVATE = fromHex('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a');
const ALICE_PUBLIC_U = fromHex('8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a');
const BOB_PUBLIC_U = fromHex('de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f');
const SHARED = '4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742';

describe('decodeEcPublicKey', () => {
  it('accepts a valid key and returns a fresh copy [WP-KEYS-01]', () => {
    const encoded = encodeEcPublicKey(ALICE_PUBLIC_U);
    const result = decodeEcPublicKey(encoded);
    expect(result.ok && toHex(result.value)).toBe(`05${toHex(ALICE_PUBLIC_U)}`);
    if (result.ok) {
      expect(result.value).not.toBe(encoded);
      encoded[1] = (encoded[1] ?? 0) ^ 1;
      expect(toHex(result.value)).toBe(`05${toHex(ALICE_PUBLIC_U)}`);
    }
  });

  it('rejects any length other than 33 with KEY_BAD_LENGTH [WP-KEYS-01]', () => {
    for (const length of [0, 1, 32, 34, 65]) {
      const result = decodeEcPublicKey(
        concatBytes(Uint8Array.of(0x05), new Uint8Array(Math.max(0, length - 1)).fill(9)),
      );
      expect(codeOf(result), `length ${length}`).toBe(length === 33 ? 'ok' : 'KEY_BAD_LENGTH');
    }
    const result = decodeEcPublicKey(ALICE_PUBLIC_U);
    expect(result.ok ? null : [result.error.code, result.error.rule, result.error.details]).toEqual([
      'KEY_BAD_LENGTH',
      'WP-KEYS-01',
      { expected: 33, got: 32 },
    ]);
  });

  it('rejects any type byte other than 0x05 with KEY_BAD_TYPE [WP-KEYS-01]', () => {
    for (let type = 0; type < 256; type++) {
      const result = decodeEcPublicKey(concatBytes(Uint8Array.of(type), ALICE_PUBLIC_U));
      expect(codeOf(result)).toBe(type === 0x05 ? 'ok' : 'KEY_BAD_TYPE');
    }
  });

  it('rejects u ≥ p and a set top bit with KEY_NON_CANONICAL [WP-KEYS-02]', () => {
    expect(codeOf(decodeEcPublicKey(ecKey(P - 2n)))).toBe('ok');
    for (let u = P; u < 2n ** 255n; u++)
      expect(codeOf(decodeEcPublicKey(ecKey(u)))).toBe('KEY_NON_CANONICAL');
    const topBit = encodeEcPublicKey(ALICE_PUBLIC_U);
    topBit[32] = (topBit[32] ?? 0) | 0x80;
    expect(codeOf(decodeEcPublicKey(topBit))).toBe('KEY_NON_CANONICAL');
    const rejected = decodeEcPublicKey(ecKey(P));
    expect(rejected.ok ? null : rejected.error.rule).toBe('WP-KEYS-02');
  });

  it('rejects every low-order point with KEY_LOW_ORDER [WP-KEYS-03]', () => {
    for (const u of LOW_ORDER_U) {
      const result = decodeEcPublicKey(ecKey(u));
      expect(result.ok ? null : [result.error.code, result.error.rule]).toEqual([
        'KEY_LOW_ORDER',
        'WP-KEYS-03',
      ]);
    }
  });

  it('rejects the non-canonical aliases of low-order points too (as non-canonical) [WP-KEYS-02] [WP-KEYS-03]', () => {
    const aliases = [P, P + 1n, ...LOW_ORDER_U.map((u) => u + 2n ** 255n)];
    for (const alias of aliases) {
      expect(alias < 2n ** 256n).toBe(true);
      const encoded = concatBytes(Uint8Array.of(0x05), numberToBytesLE(alias, 32));
      expect(codeOf(decodeEcPublicKey(encoded))).toBe('KEY_NON_CANONICAL');
    }
  });

  it('lists points that really are low order: X25519 with any clamped scalar gives zero [WP-KEYS-03]', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.constantFrom(...LOW_ORDER_U),
        (privateKey, u) => {
          for (const c of providers)
            expect(toHex(c.x25519(privateKey, numberToBytesLE(u, 32)))).toBe('00'.repeat(32));
        },
      ),
      { numRuns: 30 },
    );
  });

  it('accepts random canonical keys that are not low order [WP-KEYS-02] [WP-KEYS-03]', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 2n, max: P - 2n }), (u) => {
        fc.pre(!LOW_ORDER_U.includes(u));
        expect(codeOf(decodeEcPublicKey(ecKey(u)))).toBe('ok');
      }),
    );
  });
});

describe('key pairs', () => {
  it('draws exactly 32 bytes and stores them raw (clamped only on use) [WP-KEYS-06] [WP-KEYS-09]', () => {
    const inner = seededRng('keypair');
    const draws: Uint8Array[] = [];
    const rng: Rng = {
      randomBytes(length) {
        const out = inner.randomBytes(length);
        draws.push(Uint8Array.from(out));
        return out;
      },
    };
    const pair = generateKeyPair(nodeProvider, rng);
    expect(draws.map((d) => d.length)).toEqual(DRAWS.generateKeyPair.map((d) => d.bytes));
    expect(toHex(pair.privateKey)).toBe(toHex(draws[0] ?? new Uint8Array(0)));
    expect(pair.publicKey.length).toBe(33);
    expect(pair.publicKey[0]).toBe(0x05);
  });

  it('derives the RFC 7748 §6.1 public key from an unclamped private key [WP-KEYS-06]', () => {
    for (const c of providers)
      expect(toHex(publicKeyFromPrivate(c, ALICE_PRIVATE))).toBe(`05${toHex(ALICE_PUBLIC_U)}`);
  });

  it('gives the same key pair with both providers from the same stream [WP-KEYS-09]', () => {
    const a = generateKeyPair(nobleProvider, seededRng('same'));
    const b = generateKeyPair(nodeProvider, seededRng('same'));
    expect([toHex(a.publicKey), toHex(a.privateKey)]).toEqual([toHex(b.publicKey), toHex(b.privateKey)]);
  });

  it('refuses misuse with UsageError', () => {
    expect(() => publicKeyFromPrivate(nobleProvider, new Uint8Array(31))).toThrow(UsageError);
    expect(() => encodeEcPublicKey(new Uint8Array(33))).toThrow(UsageError);
  });
});

describe('dh', () => {
  it('computes the RFC 7748 §6.1 shared secret with both providers [WP-KEYS-06]', () => {
    for (const c of providers) {
      const result = dh(c, ALICE_PRIVATE, encodeEcPublicKey(BOB_PUBLIC_U));
      expect(result.ok && toHex(result.value)).toBe(SHARED);
    }
  });

  it('rejects an all-zero output with DH_ZERO_OUTPUT [WP-KEYS-04]', () => {
    for (const c of providers) {
      for (const u of [...LOW_ORDER_U, P, P + 1n]) {
        const result = dh(c, ALICE_PRIVATE, ecKey(u));
        expect(result.ok ? null : [result.error.code, result.error.rule]).toEqual([
          'DH_ZERO_OUTPUT',
          'WP-KEYS-04',
        ]);
      }
    }
  });

  it('refuses an undecoded public key with UsageError', () => {
    expect(() => dh(nobleProvider, ALICE_PRIVATE, BOB_PUBLIC_U)).toThrow(UsageError);
    expect(() => dh(nobleProvider, ALICE_PRIVATE.subarray(1), encodeEcPublicKey(BOB_PUBLIC_U))).toThrow(
      UsageError,
    );
  });
});

describe('KEM decoders', () => {
  const pair = kemGenerateKeyPair(nobleProvider, seededRng('kem decode'));
  const { ciphertext } = kemEncapsulate(nobleProvider, pair.publicKey, seededRng('kem decode ct'));
  const cases = [
    ['public key', decodeKemPublicKey, pair.publicKey],
    ['ciphertext', decodeKemCiphertext, ciphertext],
    ['secret key', decodeKemSecretKey, pair.secretKey],
  ] as const;

  it('accept valid encodings and return fresh copies [WP-KEYS-05]', () => {
    for (const [, decode, encoded] of cases) {
      const result = decode(encoded);
      expect(result.ok && toHex(result.value)).toBe(toHex(encoded));
      expect(result.ok && result.value !== encoded).toBe(true);
    }
  });

  it('reject a wrong length with KEM_BAD_LENGTH [WP-KEYS-05]', () => {
    for (const [name, decode, encoded] of cases) {
      for (const bad of [
        encoded.subarray(0, encoded.length - 1),
        concatBytes(encoded, Uint8Array.of(0)),
        encoded.subarray(1),
      ]) {
        const result = decode(bad);
        expect(result.ok ? name : [result.error.code, result.error.rule]).toEqual([
          'KEM_BAD_LENGTH',
          'WP-KEYS-05',
        ]);
      }
    }
  });

  it('reject any type byte but 0x08 (ML-KEM 0x0A included) with KEM_BAD_TYPE [WP-KEYS-05]', () => {
    for (const [, decode, encoded] of cases) {
      for (const type of [0x00, 0x05, 0x07, 0x09, 0x0a, 0xff]) {
        const result = decode(concatBytes(Uint8Array.of(type), encoded.subarray(1)));
        expect(codeOf(result)).toBe('KEM_BAD_TYPE');
      }
    }
  });

  it('rejects a public key with a coefficient ≥ q with KEM_NON_CANONICAL [WP-KEYS-05]', () => {
    const bad = Uint8Array.from(pair.publicKey);
    // First coefficient of t̂ := 0xFFF (4095 ≥ q = 3329).
    bad[1] = 0xff;
    bad[2] = (bad[2] ?? 0) | 0x0f;
    const result = decodeKemPublicKey(bad);
    expect(result.ok ? null : [result.error.code, result.error.rule]).toEqual([
      'KEM_NON_CANONICAL',
      'WP-KEYS-05',
    ]);
  });
});

describe('fingerprint', () => {
  it('is the first 8 bytes of SHA-256("lockstep-fp-v1" ‖ bytes) in lowercase hex, with both providers', () => {
    const input = fromHex('05' + toHex(ALICE_PUBLIC_U));
    const expected = createHash('sha256')
      .update(Buffer.from('lockstep-fp-v1', 'utf8'))
      .update(input)
      .digest('hex')
      .slice(0, 16);
    for (const c of providers) {
      expect(fingerprint(c, input)).toBe(expected);
      expect(fingerprint(c, input)).toMatch(/^[0-9a-f]{16}$/);
    }
    expect(fingerprint(nobleProvider, new Uint8Array(0))).not.toBe(
      fingerprint(nobleProvider, new Uint8Array(1)),
    );
  });
});
