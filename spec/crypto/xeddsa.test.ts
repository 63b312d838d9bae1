/**
 * XEdDSA, libsignal's variant (WP-KEYS-07). Signatures are checked by an independent verifier
 * (noble's stock RFC 8032 Ed25519 verification on the converted key) and against libsignal's own
 * vector; the libsignal vector also runs from vectors/external/xeddsa-libsignal.json.
 */
import { ed25519, x25519 } from '@noble/curves/ed25519.js';
import { bytesToNumberLE, numberToBytesLE } from '@noble/curves/utils.js';
import { sha512 } from '@noble/hashes/sha2.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { concatBytes } from '../bytes.js';
import { UsageError } from '../errors.js';
import { fromHex, toHex } from '../hex.js';
import { publicKeyFromPrivate } from '../keys.js';
import { seededRng } from '../rng.js';
import { nobleProvider } from './noble.js';
import { nodeProvider } from './node.js';
import { xeddsaSign, xeddsaVerify } from './xeddsa.js';

const providers = [nobleProvider, nodeProvider] as const;
const Point = ed25519.Point;
const L = Point.Fn.ORDER;
const P = Point.Fp.ORDER;

// libsignal rust/core/src/curve/curve25519.rs, test_signature (see vectors/external/xeddsa-libsignal.json).
const LIBSIGNAL_PUBLIC = fromHex('05ab7e717d4a163b7d9a1d8071dfe9dcf8cdcd1cea3339b6356be84d887e322c64');
const LIBSIGNAL_MESSAGE = fromHex('05edce9d9c415ca78cb7252e72c2c4a554d3eb29485a0e1d503118d1a82d99fb4a');
const LIBSIGNAL_SIGNATURE = fromHex(
  '5de88ca9a89b4a115da79109c67c9c7464a3e4180274f1cb8c63c2984e286dfbede82deb9dcd9fae0bfbb821569b3d9001bd8130cd11d486cef047bd60b86e88',
);

const bytes = (length: number) => fc.uint8Array({ minLength: length, maxLength: length });

/** RFC 7748 §5 clamping, written out independently of the module under test. */
function clampScalar(k: Uint8Array): bigint {
  const c = Uint8Array.from(k);
  c[0] = (c[0] ?? 0) & 0xf8;
  c[31] = ((c[31] ?? 0) & 0x7f) | 0x40;
  return bytesToNumberLE(c);
}

/** Replaces s (sign bit excluded) by `f(s)`, keeping the sign bit in place. */
function withS(signature: Uint8Array, f: (s: bigint) => bigint): Uint8Array {
  const sBytes = Uint8Array.from(signature.subarray(32));
  const signBit = (sBytes[31] ?? 0) & 0x80;
  sBytes[31] = (sBytes[31] ?? 0) & 0x7f;
  const out = concatBytes(signature.subarray(0, 32), numberToBytesLE(f(bytesToNumberLE(sBytes)), 32));
  out[63] = (out[63] ?? 0) | signBit;
  return out;
}

describe('XEdDSA sign and verify', () => {
  it("verifies libsignal's test_signature vector with both providers [WP-KEYS-07]", () => {
    for (const c of providers)
      expect(xeddsaVerify(c, LIBSIGNAL_PUBLIC, LIBSIGNAL_MESSAGE, LIBSIGNAL_SIGNATURE)).toBe(true);
  });

  it('round-trips with both providers, and across them [WP-KEYS-07]', () => {
    fc.assert(
      fc.property(bytes(32), fc.uint8Array({ maxLength: 100 }), bytes(64), (privateKey, message, random) => {
        const publicKey = publicKeyFromPrivate(nobleProvider, privateKey);
        const signatures = providers.map((c) => xeddsaSign(c, privateKey, message, random));
        // Deterministic given Z, and the provider makes no difference.
        expect(toHex(signatures[1] ?? new Uint8Array(0))).toBe(toHex(signatures[0] ?? new Uint8Array(1)));
        for (const c of providers) {
          for (const signature of signatures)
            expect(xeddsaVerify(c, publicKey, message, signature)).toBe(true);
        }
      }),
      { numRuns: 40 },
    );
  });

  it('produces signatures an independent RFC 8032 verifier accepts under the Edwards key A = aB [WP-KEYS-07]', () => {
    fc.assert(
      fc.property(bytes(32), fc.uint8Array({ maxLength: 64 }), bytes(64), (privateKey, message, random) => {
        const signature = xeddsaSign(nobleProvider, privateKey, message, random);
        // A = aB with a = clamp(k) mod L, not negated: its sign bit rides in bit 7 of sig[63].
        const edwardsKey = Point.BASE.multiply(clampScalar(privateKey) % L).toBytes();
        expect((signature[63] ?? 0) >> 7).toBe((edwardsKey[31] ?? 0) >> 7);
        // The Edwards key is birationally equivalent to the X25519 public key (RFC 7748 §4.1).
        const y = Point.fromBytes(edwardsKey).y;
        const u = Point.Fp.div(Point.Fp.add(1n, y), Point.Fp.sub(1n, y)); // u = (1 + y) / (1 − y)
        expect(toHex(numberToBytesLE(u, 32))).toBe(toHex(x25519.getPublicKey(privateKey)));
        const plain = Uint8Array.from(signature);
        plain[63] = (plain[63] ?? 0) & 0x7f;
        expect(ed25519.verify(plain, message, edwardsKey, { zip215: false })).toBe(true);
      }),
      { numRuns: 30 },
    );
  });

  it('derives the nonce as r = SHA-512(0xFE ‖ 0xFF×31 ‖ clamped k ‖ M ‖ Z) mod L, as libsignal does [WP-KEYS-07]', () => {
    const rng = seededRng('xeddsa nonce');
    for (let i = 0; i < 10; i++) {
      const privateKey = rng.randomBytes(32);
      const message = rng.randomBytes(i * 7);
      const random = rng.randomBytes(64);
      const clamped = numberToBytesLE(clampScalar(privateKey), 32);
      const prefix = concatBytes(Uint8Array.of(0xfe), new Uint8Array(31).fill(0xff));
      const r = bytesToNumberLE(sha512(concatBytes(prefix, clamped, message, random))) % L;
      const signature = xeddsaSign(nodeProvider, privateKey, message, random);
      expect(toHex(signature.subarray(0, 32))).toBe(toHex(Point.BASE.multiply(r).toBytes()));
    }
  });

  it('rejects every single-bit flip of a signature [WP-KEYS-07]', () => {
    const rng = seededRng('xeddsa flips');
    const privateKey = rng.randomBytes(32);
    const message = rng.randomBytes(40);
    const publicKey = publicKeyFromPrivate(nodeProvider, privateKey);
    const signature = xeddsaSign(nodeProvider, privateKey, message, rng.randomBytes(64));
    for (const c of providers) {
      for (let bit = 0; bit < 512; bit++) {
        const flipped = Uint8Array.from(signature);
        flipped[bit >> 3] = (flipped[bit >> 3] ?? 0) ^ (1 << (bit & 7));
        expect(xeddsaVerify(c, publicKey, message, flipped), `bit ${bit}`).toBe(false);
      }
      const otherMessage = Uint8Array.from(message);
      otherMessage[0] = (otherMessage[0] ?? 0) ^ 1;
      expect(xeddsaVerify(c, publicKey, otherMessage, signature)).toBe(false);
    }
  });

  it('rejects a non-canonical s (s + L, top three bits still clear), which libsignal would accept [WP-KEYS-07]', () => {
    const rng = seededRng('xeddsa s+L');
    for (let i = 0; i < 10; i++) {
      const privateKey = rng.randomBytes(32);
      const message = rng.randomBytes(20);
      const publicKey = publicKeyFromPrivate(nobleProvider, privateKey);
      const signature = xeddsaSign(nobleProvider, privateKey, message, rng.randomBytes(64));
      const bigS = withS(signature, (s) => s + L);
      // libsignal's only check on s: the top three bits (of the 255-bit field, sign bit removed).
      expect((bigS[63] ?? 0) & 0x60).toBe(0);
      for (const c of providers) {
        expect(xeddsaVerify(c, publicKey, message, signature)).toBe(true);
        expect(xeddsaVerify(c, publicKey, message, bigS)).toBe(false);
      }
    }
    const libsignalBigS = withS(LIBSIGNAL_SIGNATURE, (s) => s + L);
    for (const c of providers)
      expect(xeddsaVerify(c, LIBSIGNAL_PUBLIC, LIBSIGNAL_MESSAGE, libsignalBigS)).toBe(false);
  });

  it('rejects malformed public keys and signatures without throwing [WP-KEYS-07]', () => {
    const good = [LIBSIGNAL_PUBLIC, LIBSIGNAL_MESSAGE, LIBSIGNAL_SIGNATURE] as const;
    const u = (value: bigint) => concatBytes(Uint8Array.of(0x05), numberToBytesLE(value, 32));
    const badKeys = [
      LIBSIGNAL_PUBLIC.subarray(1), // no type byte
      concatBytes(LIBSIGNAL_PUBLIC, Uint8Array.of(0)), // 34 bytes
      concatBytes(Uint8Array.of(0x06), LIBSIGNAL_PUBLIC.subarray(1)), // wrong type byte
      u(P - 1n), // u + 1 = 0: no Edwards image
      u(P), // non-canonical
      u(P + 1n),
      u(2n ** 255n + bytesToNumberLE(LIBSIGNAL_PUBLIC.subarray(1))), // the same key with the top bit set
      u(0n), // low order
      u(1n),
    ];
    for (const c of providers) {
      expect(xeddsaVerify(c, ...good)).toBe(true);
      for (const key of badKeys) expect(xeddsaVerify(c, key, good[1], good[2]), toHex(key)).toBe(false);
      expect(xeddsaVerify(c, good[0], good[1], good[2].subarray(0, 63))).toBe(false);
      expect(xeddsaVerify(c, good[0], good[1], concatBytes(good[2], Uint8Array.of(0)))).toBe(false);
      expect(xeddsaVerify(c, good[0], good[1], new Uint8Array(64))).toBe(false);
    }
  });

  it('refuses wrong argument lengths when signing with UsageError', () => {
    const k = new Uint8Array(32).fill(3);
    expect(() => xeddsaSign(nobleProvider, k.subarray(1), k, new Uint8Array(64))).toThrow(UsageError);
    expect(() => xeddsaSign(nobleProvider, k, k, new Uint8Array(32))).toThrow(UsageError);
  });
});

describe('XEdDSA memos (same results as without them)', () => {
  const message = fromHex('0102030405');
  const random = new Uint8Array(64).fill(7);

  it('signs with the bytes a private-key array holds now, after the array was overwritten [WP-KEYS-07]', () => {
    const a = seededRng('memo key a').randomBytes(32);
    const b = seededRng('memo key b').randomBytes(32);
    for (const c of providers) {
      const key = Uint8Array.from(a);
      const first = xeddsaSign(c, key, message, random);
      key.set(b);
      const second = xeddsaSign(c, key, message, random);
      expect(toHex(second)).toBe(toHex(xeddsaSign(c, Uint8Array.from(b), message, random)));
      expect(toHex(second)).not.toBe(toHex(first));
      expect(xeddsaVerify(c, publicKeyFromPrivate(c, b), message, second)).toBe(true);
      expect(xeddsaVerify(c, publicKeyFromPrivate(c, a), message, second)).toBe(false);
    }
  });

  it('reuses a verdict only for identical key, message and signature bytes [WP-KEYS-07]', () => {
    const privateKey = seededRng('memo verdicts').randomBytes(32);
    for (const c of providers) {
      const publicKey = publicKeyFromPrivate(c, privateKey);
      const signed = Uint8Array.from(message);
      const signature = xeddsaSign(c, privateKey, signed, random);
      expect(xeddsaVerify(c, publicKey, signed, signature)).toBe(true);
      // The same arrays, changed in place after a valid verdict: each change is judged anew.
      signed[0] = (signed[0] ?? 0) ^ 1;
      expect(xeddsaVerify(c, publicKey, signed, signature)).toBe(false);
      signed[0] = (signed[0] ?? 0) ^ 1;
      expect(xeddsaVerify(c, publicKey, signed, signature)).toBe(true);
      publicKey[5] = (publicKey[5] ?? 0) ^ 1;
      expect(xeddsaVerify(c, publicKey, signed, signature)).toBe(false);
      publicKey[5] = (publicKey[5] ?? 0) ^ 1;
      signature[10] = (signature[10] ?? 0) ^ 1;
      expect(xeddsaVerify(c, publicKey, signed, signature)).toBe(false);
    }
  });
});
