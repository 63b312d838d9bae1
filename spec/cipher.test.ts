/**
 * Body encryption and the message MAC (WP-DR-04, WP-DR-05), checked against AES-256-CBC and HMAC
 * computed independently with node:crypto.
 */
import { createCipheriv, createHmac } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { computeMessageMac, decryptBody, encryptBody, verifyMessageMac } from './cipher.js';
import { nobleProvider } from './crypto/noble.js';
import { nodeProvider } from './crypto/node.js';
import { UsageError } from './errors.js';
import { toHex } from './hex.js';
import type { MessageKeys } from './kdf.js';

const providers = [nobleProvider, nodeProvider] as const;
const bytes = (length: number) => fc.uint8Array({ minLength: length, maxLength: length });
const messageKeys = fc
  .record({ cipherKey: bytes(32), macKey: bytes(32), iv: bytes(16) })
  .map((keys): MessageKeys => keys);

describe('encryptBody / decryptBody', () => {
  it('is AES-256-CBC with PKCS#7 under cipher_key and iv, and round-trips [WP-DR-04]', () => {
    fc.assert(
      fc.property(messageKeys, fc.uint8Array({ maxLength: 100 }), (keys, plaintext) => {
        const cipher = createCipheriv('aes-256-cbc', keys.cipherKey, keys.iv);
        const expected = Buffer.concat([cipher.update(plaintext), cipher.final()]).toString('hex');
        for (const c of providers) {
          const body = encryptBody(c, keys, plaintext);
          expect(toHex(body)).toBe(expected);
          const decrypted = decryptBody(c, keys, body);
          expect(decrypted.ok && toHex(decrypted.value)).toBe(toHex(plaintext));
        }
      }),
      { numRuns: 50 },
    );
  });

  it('rejects a bad length or bad padding with BODY_DECRYPT_FAILED [WP-DR-04]', () => {
    fc.assert(
      fc.property(messageKeys, fc.uint8Array({ maxLength: 40 }), (keys, plaintext) => {
        const body = encryptBody(nobleProvider, keys, plaintext);
        const otherKeys = { ...keys, cipherKey: keys.cipherKey.map((b) => b ^ 0x55) };
        for (const c of providers) {
          for (const bad of [new Uint8Array(0), body.subarray(0, body.length - 1), body.subarray(1)]) {
            const result = decryptBody(c, keys, bad);
            expect(result.ok ? 'ok' : [result.error.code, result.error.rule]).toEqual([
              'BODY_DECRYPT_FAILED',
              'WP-DR-04',
            ]);
          }
          // A wrong key almost always breaks the padding; when it does, the code is the same.
          const wrong = decryptBody(c, otherKeys, body);
          if (!wrong.ok) expect(wrong.error.code).toBe('BODY_DECRYPT_FAILED');
        }
      }),
      { numRuns: 30 },
    );
  });

  it('rejects a last block with inconsistent padding bytes [WP-DR-04]', () => {
    const keys: MessageKeys = {
      cipherKey: new Uint8Array(32).fill(7),
      macKey: new Uint8Array(32),
      iv: new Uint8Array(16),
    };
    // A block ending in 0x02 0x03 claims two bytes of padding but they differ.
    const block = Uint8Array.from({ length: 16 }, (_, i) => (i === 15 ? 0x02 : i === 14 ? 0x03 : 0x41));
    const cipher = createCipheriv('aes-256-cbc', keys.cipherKey, keys.iv);
    cipher.setAutoPadding(false);
    const body = new Uint8Array(Buffer.concat([cipher.update(block), cipher.final()]));
    for (const c of providers) {
      const result = decryptBody(c, keys, body);
      expect(result.ok ? 'ok' : result.error.code).toBe('BODY_DECRYPT_FAILED');
    }
  });
});

describe('message MAC', () => {
  const identity = bytes(33);

  it('is the first 8 bytes of HMAC-SHA256(mac_key, IK_sender ‖ IK_receiver ‖ version ‖ protobuf) [WP-DR-05]', () => {
    fc.assert(
      fc.property(
        bytes(32),
        identity,
        identity,
        fc.uint8Array({ maxLength: 80 }),
        (macKey, sender, receiver, macInput) => {
          const expected = createHmac('sha256', macKey)
            .update(sender)
            .update(receiver)
            .update(macInput)
            .digest()
            .subarray(0, 8)
            .toString('hex');
          for (const c of providers) {
            const mac = computeMessageMac(c, macKey, sender, receiver, macInput);
            expect(toHex(mac)).toBe(expected);
            expect(verifyMessageMac(c, macKey, sender, receiver, macInput, mac)).toBe(true);
          }
        },
      ),
      { numRuns: 50 },
    );
  });

  it('rejects any flipped bit, swapped identities, a wrong length [WP-DR-05]', () => {
    fc.assert(
      fc.property(
        bytes(32),
        identity,
        identity,
        fc.uint8Array({ minLength: 1, maxLength: 40 }),
        fc.integer({ min: 0, max: 63 }),
        (macKey, sender, receiver, macInput, bit) => {
          fc.pre(toHex(sender) !== toHex(receiver));
          for (const c of providers) {
            const mac = computeMessageMac(c, macKey, sender, receiver, macInput);
            const flipped = Uint8Array.from(mac);
            flipped[bit >> 3] = (flipped[bit >> 3] ?? 0) ^ (1 << (bit & 7));
            expect(verifyMessageMac(c, macKey, sender, receiver, macInput, flipped)).toBe(false);
            expect(verifyMessageMac(c, macKey, receiver, sender, macInput, mac)).toBe(false);
            expect(verifyMessageMac(c, macKey, sender, receiver, macInput, mac.subarray(0, 7))).toBe(false);
            const fullMac = createHmac('sha256', macKey)
              .update(sender)
              .update(receiver)
              .update(macInput)
              .digest();
            expect(verifyMessageMac(c, macKey, sender, receiver, macInput, new Uint8Array(fullMac))).toBe(
              false,
            );
          }
        },
      ),
      { numRuns: 30 },
    );
  });

  it('refuses identity keys that are not 33 bytes with UsageError', () => {
    const k = new Uint8Array(32);
    expect(() => computeMessageMac(nobleProvider, k, new Uint8Array(32), new Uint8Array(33), k)).toThrow(
      UsageError,
    );
    expect(() => computeMessageMac(nobleProvider, k, new Uint8Array(33), new Uint8Array(34), k)).toThrow(
      UsageError,
    );
  });
});
