/**
 * The two providers must be interchangeable: on random and adversarial inputs, `noble` and `node`
 * return the same bytes, the same `null`, the same verdict, or both throw `UsageError`. fast-check
 * prints the seed and the shrunk counterexample on failure.
 */
import { createDecipheriv, createHmac } from 'node:crypto';
import { cbc } from '@noble/ciphers/aes.js';
import { ed25519 } from '@noble/curves/ed25519.js';
import { bytesToNumberLE, numberToBytesLE } from '@noble/curves/utils.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { concatBytes } from '../bytes.js';
import { UsageError } from '../errors.js';
import { fromHex, toHex } from '../hex.js';
import { nobleProvider } from './noble.js';
import { nodeProvider, PRIVATE_KEY_CACHE_MAX, PUBLIC_KEY_CACHE_MAX } from './node.js';
import type { CryptoProvider } from './provider.js';

const providers: readonly CryptoProvider[] = [nobleProvider, nodeProvider];
const Point = ed25519.Point;
const L = Point.Fn.ORDER;
const P = Point.Fp.ORDER;

const bytes = (length: number) => fc.uint8Array({ minLength: length, maxLength: length });
const anyBytes = (maxLength: number) => fc.uint8Array({ maxLength });

/** Runs `f` with each provider and returns what each produced, a thrown error's class included. */
function outcomes<T>(f: (c: CryptoProvider) => T): (T | string)[] {
  return providers.map((c) => {
    try {
      return f(c);
    } catch (error) {
      return error instanceof UsageError ? 'UsageError' : `other error: ${String(error)}`;
    }
  });
}

function expectAgreement<T>(f: (c: CryptoProvider) => T): T | string {
  const [noble, node] = outcomes(f);
  expect(node).toEqual(noble);
  return noble as T | string;
}

/** The canonical RFC 7748 low-order u values plus their aliases below 2^256 (see spec/keys.ts). */
const LOW_ORDER_U = [
  0n,
  1n,
  325606250916557431795983626356110631294008115727848805560023387167927233504n,
  39382357235489614581723060781553021112529911719440698176882885853963445705823n,
  P - 1n,
  P,
  P + 1n,
].flatMap((u) => [u, u + 2n ** 255n]);

describe('providers return plain Uint8Arrays', () => {
  it('never a Buffer', () => {
    const key = new Uint8Array(32).fill(1);
    for (const c of providers) {
      const results = [
        c.x25519PublicKey(key),
        c.x25519(key, c.x25519PublicKey(key)),
        c.sha256(key),
        c.sha512(key),
        c.hmacSha256(key, key),
        c.hmacSha256Parts(key, [key, key]),
        c.hkdfSha256(key, key, key, 42),
        c.aes256CbcEncrypt(key, key.subarray(0, 16), key),
        c.aes256CbcDecrypt(key, key.subarray(0, 16), c.aes256CbcEncrypt(key, key.subarray(0, 16), key)),
      ];
      for (const result of results) expect(Object.getPrototypeOf(result)).toBe(Uint8Array.prototype);
    }
  });
});

describe('X25519 agreement between providers', () => {
  it('derives the same public key from any 32 bytes (clamped on use) [WP-KEYS-06]', () => {
    fc.assert(
      fc.property(bytes(32), (privateKey) => {
        expectAgreement((c) => toHex(c.x25519PublicKey(privateKey)));
      }),
      { numRuns: 100 },
    );
  });

  it('computes the same output for any u, including a set top bit and u ≥ p [WP-KEYS-06]', () => {
    fc.assert(
      fc.property(bytes(32), bytes(32), (privateKey, u) => {
        expectAgreement((c) => toHex(c.x25519(privateKey, u)));
      }),
      { numRuns: 100 },
    );
  });

  it('returns all zeros (not an exception) for every low-order u and alias [WP-KEYS-04]', () => {
    fc.assert(
      fc.property(bytes(32), fc.constantFrom(...LOW_ORDER_U), (privateKey, u) => {
        const result = expectAgreement((c) => toHex(c.x25519(privateKey, numberToBytesLE(u, 32))));
        expect(result).toBe('00'.repeat(32));
      }),
      { numRuns: 60 },
    );
  });

  it('refuses wrong lengths with UsageError in both', () => {
    for (const [privateLength, uLength] of [
      [31, 32],
      [32, 33],
      [0, 32],
    ] as const) {
      const result = expectAgreement((c) => c.x25519(new Uint8Array(privateLength), new Uint8Array(uLength)));
      expect(result).toBe('UsageError');
    }
    expect(expectAgreement((c) => c.x25519PublicKey(new Uint8Array(33)))).toBe('UsageError');
  });
});

describe('hashes, HMAC and HKDF agree between providers', () => {
  it('SHA-256 and SHA-512', () => {
    fc.assert(
      fc.property(anyBytes(300), (data) => {
        expectAgreement((c) => toHex(c.sha256(data)));
        expectAgreement((c) => toHex(c.sha512(data)));
      }),
    );
  });

  it('HMAC-SHA256 with keys shorter and longer than a block [WP-DR-02] [WP-DR-05]', () => {
    fc.assert(
      fc.property(anyBytes(200), anyBytes(300), (key, data) => {
        expectAgreement((c) => toHex(c.hmacSha256(key, data)));
      }),
    );
  });

  it('HMAC-SHA256 over parts equals HMAC-SHA256 over their concatenation [WP-DR-05]', () => {
    fc.assert(
      fc.property(anyBytes(200), fc.array(anyBytes(150), { maxLength: 6 }), (key, parts) => {
        const expected = toHex(nobleProvider.hmacSha256(key, concatBytes(...parts)));
        expect(expectAgreement((c) => toHex(c.hmacSha256Parts(key, parts)))).toBe(expected);
      }),
    );
  });

  it('HMAC-SHA256 over parts: views at offsets, large parts, inputs left untouched [WP-DR-05]', () => {
    const key = Uint8Array.from({ length: 32 }, (_, i) => i);
    const shared = Uint8Array.from({ length: 70_000 }, (_, i) => (i * 7 + 3) & 0xff);
    const parts = [shared.subarray(5, 38), shared.subarray(1, 34), shared.subarray(100), new Uint8Array(0)];
    const before = toHex(shared);
    const expected = createHmac('sha256', key)
      .update(concatBytes(...parts))
      .digest('hex');
    expect(expectAgreement((c) => toHex(c.hmacSha256Parts(key, Object.freeze(parts))))).toBe(expected);
    expect(toHex(shared)).toBe(before);
  });

  it('HMAC-SHA256 over parts refuses parts that are not Uint8Arrays with UsageError in both', () => {
    const key = new Uint8Array(32);
    const notBytes = [1, 2, 3] as unknown as Uint8Array; // misuse, as a JavaScript caller could make it
    expect(expectAgreement((c) => c.hmacSha256Parts(key, [key, notBytes]))).toBe('UsageError');
    const notArray = key as unknown as readonly Uint8Array[]; // a single array where a list was promised
    expect(expectAgreement((c) => c.hmacSha256Parts(key, notArray))).toBe('UsageError');
    expect(expectAgreement((c) => c.hmacSha256Parts(notBytes, [key]))).toBe('UsageError');
  });

  it('HKDF-SHA256 for any salt (empty included), info and length [WP-DR-01] [WP-DR-03] [WP-PQXDH-03]', () => {
    fc.assert(
      fc.property(
        anyBytes(100),
        anyBytes(80),
        anyBytes(100),
        fc.integer({ min: 1, max: 255 * 32 }),
        (ikm, salt, info, length) => {
          expectAgreement((c) => toHex(c.hkdfSha256(ikm, salt, info, length)));
        },
      ),
      { numRuns: 100 },
    );
  });

  it('HKDF-SHA256 refuses the same out-of-range arguments', () => {
    const k = new Uint8Array(32);
    expect(expectAgreement((c) => c.hkdfSha256(k, k, k, 0))).toBe('UsageError');
    expect(expectAgreement((c) => c.hkdfSha256(k, k, k, 255 * 32 + 1))).toBe('UsageError');
    expect(expectAgreement((c) => c.hkdfSha256(k, k, new Uint8Array(1025), 32))).toBe('UsageError');
    expect(expectAgreement((c) => c.hkdfSha256(k, k, new Uint8Array(1024), 32).length)).toBe(32);
  });
});

describe('AES-256-CBC agrees between providers [WP-DR-04]', () => {
  it('encrypts identically and round-trips [WP-DR-04]', () => {
    fc.assert(
      fc.property(bytes(32), bytes(16), anyBytes(100), (key, iv, plaintext) => {
        const ciphertext = expectAgreement((c) => toHex(c.aes256CbcEncrypt(key, iv, plaintext)));
        expect(typeof ciphertext === 'string' && ciphertext.length / 2).toBe(
          (Math.floor(plaintext.length / 16) + 1) * 16,
        );
        for (const c of providers) {
          const decrypted = c.aes256CbcDecrypt(key, iv, fromHex(String(ciphertext)));
          expect(decrypted && toHex(decrypted)).toBe(toHex(plaintext));
        }
      }),
    );
  });

  it('decrypts random garbage to the same result (null or equal bytes) [WP-DR-04]', () => {
    fc.assert(
      fc.property(bytes(32), bytes(16), anyBytes(80), (key, iv, garbage) => {
        expectAgreement((c) => {
          const result = c.aes256CbcDecrypt(key, iv, garbage);
          return result === null ? null : toHex(result);
        });
      }),
      { numRuns: 300 },
    );
  });

  it('decrypts bit-flipped and truncated ciphertexts to the same result [WP-DR-04]', () => {
    fc.assert(
      fc.property(
        bytes(32),
        bytes(16),
        anyBytes(64),
        fc.nat(),
        fc.integer({ min: 0, max: 7 }),
        fc.integer({ min: 0, max: 17 }),
        (key, iv, plaintext, position, bit, cut) => {
          const ciphertext = nobleProvider.aes256CbcEncrypt(key, iv, plaintext);
          const mutated = Uint8Array.from(ciphertext);
          const index = position % mutated.length;
          mutated[index] = (mutated[index] ?? 0) ^ (1 << bit);
          for (const candidate of [mutated, ciphertext.subarray(0, Math.max(0, ciphertext.length - cut))]) {
            expectAgreement((c) => {
              const result = c.aes256CbcDecrypt(key, iv, candidate);
              return result === null ? null : toHex(result);
            });
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it('decrypts every last-block padding pattern as OpenSSL does, valid or not [WP-DR-04]', () => {
    /** node:crypto with its own PKCS#7 check: the independent oracle. */
    const openssl = (key: Uint8Array, iv: Uint8Array, ciphertext: Uint8Array): string | null => {
      try {
        const decipher = createDecipheriv('aes-256-cbc', key, iv);
        return Buffer.concat([decipher.update(ciphertext), decipher.final()]).toString('hex');
      } catch {
        return null;
      }
    };
    fc.assert(
      fc.property(
        bytes(32),
        bytes(16),
        fc.integer({ min: 0, max: 3 }).chain((blocks) => bytes(16 * blocks)),
        bytes(16),
        fc.integer({ min: 0, max: 20 }),
        fc.integer({ min: 1, max: 16 }),
        fc.option(fc.integer({ min: 0, max: 15 })),
        (key, iv, leading, lastBlock, padByte, padCount, spoilAt) => {
          // The last block ends in padCount copies of padByte, optionally with one byte spoiled.
          const last = Uint8Array.from(lastBlock);
          last.fill(padByte, 16 - padCount);
          if (spoilAt !== null) last[spoilAt] = (last[spoilAt] ?? 0) ^ 0x01;
          const raw = concatBytes(leading, last);
          const ciphertext = cbc(key, iv, { disablePadding: true }).encrypt(raw);
          const agreed = expectAgreement((c) => {
            const result = c.aes256CbcDecrypt(key, iv, ciphertext);
            return result === null ? null : toHex(result);
          });
          expect(agreed).toBe(openssl(key, iv, ciphertext));
        },
      ),
      { numRuns: 400 },
    );
  });

  it('refuses a wrong key or IV length with UsageError in both', () => {
    expect(
      expectAgreement((c) => c.aes256CbcEncrypt(new Uint8Array(16), new Uint8Array(16), new Uint8Array(1))),
    ).toBe('UsageError');
    expect(
      expectAgreement((c) => c.aes256CbcDecrypt(new Uint8Array(32), new Uint8Array(12), new Uint8Array(16))),
    ).toBe('UsageError');
  });
});

describe('Ed25519 verification agrees between providers [WP-KEYS-07]', () => {
  /** A standard RFC 8032 signature from noble's signer (independent of the providers). */
  const signed = fc.record({ secretKey: bytes(32), message: anyBytes(64) }).map(({ secretKey, message }) => ({
    publicKey: ed25519.getPublicKey(secretKey),
    message,
    signature: ed25519.sign(message, secretKey),
  }));

  const verdicts = (publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array) =>
    expectAgreement((c) => c.ed25519Verify(publicKey, message, signature));

  it('accepts valid RFC 8032 signatures [WP-KEYS-07]', () => {
    fc.assert(
      fc.property(signed, ({ publicKey, message, signature }) => {
        expect(verdicts(publicKey, message, signature)).toBe(true);
      }),
      { numRuns: 60 },
    );
  });

  it('agrees on mutated signatures, keys and messages [WP-KEYS-07]', () => {
    fc.assert(
      fc.property(
        signed,
        fc.nat(),
        fc.integer({ min: 0, max: 7 }),
        fc.constantFrom(0, 1, 2),
        (v, position, bit, target) => {
          const parts = [v.publicKey, v.message, v.signature].map((part) => Uint8Array.from(part));
          const part = parts[target] ?? new Uint8Array(0);
          if (part.length > 0) {
            const index = position % part.length;
            part[index] = (part[index] ?? 0) ^ (1 << bit);
          }
          const [publicKey = new Uint8Array(0), message = new Uint8Array(0), signature = new Uint8Array(0)] =
            parts;
          verdicts(publicKey, message, signature);
        },
      ),
      { numRuns: 150 },
    );
  });

  it('agrees on random garbage, wrong lengths included (never throws) [WP-KEYS-07]', () => {
    fc.assert(
      fc.property(anyBytes(34), anyBytes(20), anyBytes(66), (publicKey, message, signature) => {
        const verdict = verdicts(publicKey, message, signature);
        expect(typeof verdict).toBe('boolean');
      }),
      { numRuns: 150 },
    );
    fc.assert(
      fc.property(bytes(32), anyBytes(20), bytes(64), (publicKey, message, signature) => {
        expect(verdicts(publicKey, message, signature)).toBe(false);
      }),
      { numRuns: 100 },
    );
  });

  it('refuses S + L (non-canonical S) in both [WP-KEYS-07]', () => {
    fc.assert(
      fc.property(signed, ({ publicKey, message, signature }) => {
        const s = bytesToNumberLE(signature.subarray(32));
        const bigS = concatBytes(signature.subarray(0, 32), numberToBytesLE(s + L, 32));
        expect(verdicts(publicKey, message, bigS)).toBe(false);
        // S + 8L and other large values too: only S < L is accepted.
        const maxS = concatBytes(signature.subarray(0, 32), new Uint8Array(32).fill(0xff));
        expect(verdicts(publicKey, message, maxS)).toBe(false);
      }),
      { numRuns: 30 },
    );
  });

  it('refuses R shifted by a small-order point, which a cofactored verifier would accept [WP-KEYS-07]', () => {
    const torsion = Point.fromBytes(
      fromHex('c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a'),
    );
    fc.assert(
      fc.property(
        fc.bigInt({ min: 1n, max: L - 1n }),
        fc.bigInt({ min: 1n, max: L - 1n }),
        fc.integer({ min: 1, max: 7 }),
        anyBytes(16),
        (a, r, multiple, message) => {
          // Sign honestly for A = aB, except that R = rB + T with T of order dividing 8 (not 1).
          const publicKey = Point.BASE.multiply(a).toBytes();
          const encodedR = Point.BASE.multiply(r)
            .add(torsion.multiplyUnsafe(BigInt(multiple)))
            .toBytes();
          const k = Point.Fn.create(
            bytesToNumberLE(nobleProvider.sha512(concatBytes(encodedR, publicKey, message))),
          );
          const signature = concatBytes(encodedR, numberToBytesLE(Point.Fn.add(r, Point.Fn.mul(k, a)), 32));
          // noble's stock verifier checks the cofactored equation and accepts this signature...
          expect(ed25519.verify(signature, message, publicKey, { zip215: false })).toBe(true);
          // ...while both Lockstep providers check the cofactorless equation, as OpenSSL does.
          expect(verdicts(publicKey, message, signature)).toBe(false);
        },
      ),
      { numRuns: 30 },
    );
  });

  it('agrees on keys with a small-order component (mixed order) [WP-KEYS-07]', () => {
    const torsion = Point.fromBytes(
      fromHex('c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a'),
    );
    let accepted = 0;
    fc.assert(
      fc.property(
        fc.bigInt({ min: 1n, max: L - 1n }),
        fc.bigInt({ min: 1n, max: L - 1n }),
        anyBytes(16),
        (a, r, message) => {
          // Sign for A' = aB + T with the secret a: the cofactorless check holds iff k·T = 0 (k ≡ 0 mod 8).
          const mixedKey = Point.BASE.multiply(a).add(torsion).toBytes();
          const encodedR = Point.BASE.multiply(r).toBytes();
          const k = Point.Fn.create(
            bytesToNumberLE(nobleProvider.sha512(concatBytes(encodedR, mixedKey, message))),
          );
          const s = Point.Fn.add(r, Point.Fn.mul(k, a));
          const signature = concatBytes(encodedR, numberToBytesLE(s, 32));
          if (verdicts(mixedKey, message, signature) === true) accepted++;
        },
      ),
      { numRuns: 200 },
    );
    // About one in eight is accepted by both; the point is that they agree on every one, both ways.
    expect(accepted).toBeGreaterThan(0);
    expect(accepted).toBeLessThan(200);
  });

  it('refuses non-canonical and small-order public keys in both [WP-KEYS-07]', () => {
    const message = new Uint8Array(0);
    const anySignature = new Uint8Array(64);
    // y = p … 2^255 − 1, with and without the sign bit: non-canonical encodings.
    for (let offset = 0n; offset < 19n; offset++) {
      const encoded = numberToBytesLE(P + offset, 32);
      expect(verdicts(encoded, message, anySignature)).toBe(false);
      encoded[31] = (encoded[31] ?? 0) | 0x80;
      expect(verdicts(encoded, message, anySignature)).toBe(false);
    }
    // The identity as public key with R = identity and S = 0 satisfies [S]B = R + [k]A for every
    // message: the classic forgery a small-order key allows. Both refuse it.
    const identity = Point.ZERO.toBytes();
    const forged = concatBytes(identity, new Uint8Array(32));
    expect(verdicts(identity, utf8Message('anything'), forged)).toBe(false);
  });
});

function utf8Message(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

describe('the node provider key caches (same results as without them)', () => {
  it('agrees with noble when a private-key array is overwritten between uses [WP-KEYS-06]', () => {
    fc.assert(
      fc.property(bytes(32), bytes(32), bytes(32), (a, b, peer) => {
        const key = Uint8Array.from(a);
        const u = nobleProvider.x25519PublicKey(peer);
        expect(toHex(nodeProvider.x25519(key, u))).toBe(toHex(nobleProvider.x25519(a, u)));
        key.set(b);
        expect(toHex(nodeProvider.x25519PublicKey(key))).toBe(toHex(nobleProvider.x25519PublicKey(b)));
        expect(toHex(nodeProvider.x25519(key, u))).toBe(toHex(nobleProvider.x25519(b, u)));
      }),
      { numRuns: 20 },
    );
  });

  it('agrees with noble for keys used again after more keys than the caches hold [WP-KEYS-06]', () => {
    const keys = Array.from({ length: 8 }, (_, i) => Uint8Array.from({ length: 32 }, (_, j) => i * 31 + j));
    const peers = keys.map((k) => nobleProvider.x25519PublicKey(Uint8Array.from(k, (x) => x ^ 0x55)));
    const expected = keys.map((k, i) => toHex(nobleProvider.x25519(k, peers[i] ?? new Uint8Array(32))));
    const round = (): string[] =>
      keys.map((k, i) => toHex(nodeProvider.x25519(k, peers[i] ?? new Uint8Array(32))));
    expect(round()).toEqual(expected);
    const fillers = Math.max(PRIVATE_KEY_CACHE_MAX, PUBLIC_KEY_CACHE_MAX) + 1;
    const key = new Uint8Array(32).fill(9);
    for (let i = 0; i < fillers; i++) {
      const filler = Uint8Array.from(key);
      filler[0] = i & 0xff;
      filler[1] = i >> 8;
      nodeProvider.x25519(filler, filler);
    }
    expect(round()).toEqual(expected);
  });
});
