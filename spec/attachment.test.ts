/**
 * Attachments (WP-ATT-01 … WP-ATT-06): layout, draws, and every rejection in its order, with both
 * providers.
 */
import { createCipheriv, createHash, createHmac } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  attachmentPointerProblem,
  decryptAttachment,
  encryptAttachment,
  MIN_ATTACHMENT_BLOB_LENGTH,
  type AttachmentPointer,
} from './attachment.js';
import { concatBytes } from './bytes.js';
import { MAX_ATTACHMENT_SIZE } from './constants.js';
import { nobleProvider } from './crypto/noble.js';
import { nodeProvider } from './crypto/node.js';
import type { CryptoProvider } from './crypto/provider.js';
import { DRAWS } from './draws.js';
import { ERROR_RULES, UsageError, type ErrorCode, type Result } from './errors.js';
import { toHex } from './hex.js';
import { seededRng, type Rng } from './rng.js';

const providers = [nobleProvider, nodeProvider] as const;
const c = nodeProvider;
const PLAINTEXT = new TextEncoder().encode('a picture of a cat, honestly');

function expectCode<T>(result: Result<T>, code: ErrorCode): void {
  if (result.ok) throw new Error(`expected ${code}, got ok`);
  expect(result.error.code).toBe(code);
  expect(result.error.rule).toBe(ERROR_RULES[code]);
}

/** A pointer that matches `blob` (digest and blob id recomputed), with the key of `pointer`. */
function repoint(
  p: CryptoProvider,
  pointer: AttachmentPointer,
  blob: Uint8Array,
  size = pointer.size,
): AttachmentPointer {
  const digest = p.sha256(blob);
  return { ...pointer, digest, blobId: toHex(digest), size };
}

/** A blob made by hand under `key` (64 bytes): iv ‖ raw AES-CBC of `blocks` (no padding added) ‖ mac. */
function handBlob(key: Uint8Array, blocks: Uint8Array): Uint8Array {
  const iv = new Uint8Array(16).fill(7);
  const cipher = createCipheriv('aes-256-cbc', key.subarray(0, 32), iv).setAutoPadding(false);
  const ct = concatBytes(new Uint8Array(cipher.update(blocks)), new Uint8Array(cipher.final()));
  const body = concatBytes(iv, ct);
  return concatBytes(body, new Uint8Array(createHmac('sha256', key.subarray(32)).update(body).digest()));
}

describe('attachment encryption', () => {
  it('draws the 64-byte key, then the IV, as spec/draws.ts says [WP-ATT-01]', () => {
    const sizes: number[] = [];
    const inner = seededRng('draws');
    const source: Rng = {
      randomBytes(length: number): Uint8Array {
        sizes.push(length);
        return inner.randomBytes(length);
      },
    };
    encryptAttachment(c, source, PLAINTEXT, 'image/jpeg');
    expect(sizes).toEqual(DRAWS.encryptAttachment.map((d) => d.bytes));
  });

  it('writes iv ‖ AES-256-CBC(key[0..32]) ‖ HMAC(key[32..64], iv ‖ ct); digest and blob id of the blob [WP-ATT-01]', () => {
    const draws = seededRng('layout');
    const key = seededRng('layout').randomBytes(64);
    const { blob, pointer } = encryptAttachment(c, draws, PLAINTEXT, 'image/jpeg');
    const iv = blob.subarray(0, 16);
    const cipher = createCipheriv('aes-256-cbc', key.subarray(0, 32), iv);
    const ct = concatBytes(new Uint8Array(cipher.update(PLAINTEXT)), new Uint8Array(cipher.final()));
    const mac = new Uint8Array(createHmac('sha256', key.subarray(32)).update(concatBytes(iv, ct)).digest());
    expect(toHex(blob)).toBe(toHex(concatBytes(iv, ct, mac)));
    const digest = createHash('sha256').update(blob).digest('hex');
    expect(pointer).toEqual({
      blobId: digest,
      key,
      digest: Uint8Array.from(Buffer.from(digest, 'hex')),
      size: PLAINTEXT.length,
      contentType: 'image/jpeg',
    });
    expect(attachmentPointerProblem(pointer)).toBeNull();
  });

  it('refuses a plaintext above MAX_ATTACHMENT_SIZE and a bad content type [WP-ATT-01]', () => {
    const big = new Uint8Array(MAX_ATTACHMENT_SIZE + 1);
    expect(() => encryptAttachment(c, seededRng('big'), big, 'application/octet-stream')).toThrow(UsageError);
    expect(() => encryptAttachment(c, seededRng('ct'), PLAINTEXT, '')).toThrow(UsageError);
    expect(() => encryptAttachment(c, seededRng('ct'), PLAINTEXT, 'image/jpeg\n')).toThrow(UsageError);
  });

  for (const p of providers) {
    it(`round-trips any plaintext, the empty one included (${p.name}) [WP-ATT-01]`, () => {
      fc.assert(
        fc.property(fc.uint8Array({ maxLength: 200 }), fc.string({ minLength: 1 }), (plaintext, seed) => {
          const { blob, pointer } = encryptAttachment(
            p,
            seededRng(seed),
            plaintext,
            'application/octet-stream',
          );
          expect(decryptAttachment(p, pointer, blob)).toEqual({ ok: true, value: plaintext });
        }),
        { numRuns: 50 },
      );
    });
  }
});

describe('attachment decryption', () => {
  for (const p of providers) {
    const { blob, pointer } = encryptAttachment(p, seededRng('decrypt'), PLAINTEXT, 'image/png');

    it(`checks the digest first: any changed byte is ATTACHMENT_DIGEST_MISMATCH (${p.name}) [WP-ATT-02]`, () => {
      for (const at of [0, 20, blob.length - 1]) {
        const bad = Uint8Array.from(blob);
        bad[at] = (bad[at] ?? 0) ^ 0x80;
        expectCode(decryptAttachment(p, pointer, bad), 'ATTACHMENT_DIGEST_MISMATCH');
      }
      expectCode(decryptAttachment(p, pointer, blob.subarray(0, 10)), 'ATTACHMENT_DIGEST_MISMATCH');
    });

    it(`rejects a blob whose MAC fails even when the digest matches (${p.name}) [WP-ATT-04]`, () => {
      const bad = Uint8Array.from(blob);
      bad[20] = (bad[20] ?? 0) ^ 1;
      expectCode(decryptAttachment(p, repoint(p, pointer, bad), bad), 'ATTACHMENT_MAC_INVALID');
      const otherKey = { ...pointer, key: new Uint8Array(64).fill(1) };
      expectCode(decryptAttachment(p, otherKey, blob), 'ATTACHMENT_MAC_INVALID');
    });

    it(`rejects impossible lengths and bad padding as ATTACHMENT_MALFORMED (${p.name}) [WP-ATT-03]`, () => {
      const short = blob.subarray(0, MIN_ATTACHMENT_BLOB_LENGTH - 1);
      expectCode(decryptAttachment(p, repoint(p, pointer, short), short), 'ATTACHMENT_MALFORMED');
      const ragged = blob.subarray(0, blob.length - 1);
      expectCode(decryptAttachment(p, repoint(p, pointer, ragged), ragged), 'ATTACHMENT_MALFORMED');
      const unpadded = handBlob(pointer.key, new Uint8Array(16).fill(0x11));
      expectCode(decryptAttachment(p, repoint(p, pointer, unpadded), unpadded), 'ATTACHMENT_MALFORMED');
    });

    it(`rejects a plaintext of another length than the pointer says (${p.name}) [WP-ATT-05]`, () => {
      expectCode(
        decryptAttachment(p, { ...pointer, size: pointer.size + 1 }, blob),
        'ATTACHMENT_SIZE_MISMATCH',
      );
      expectCode(decryptAttachment(p, { ...pointer, size: 0 }, blob), 'ATTACHMENT_SIZE_MISMATCH');
    });
  }

  it('refuses an invalid pointer with UsageError [WP-ATT-06]', () => {
    const { blob, pointer } = encryptAttachment(c, seededRng('ptr'), PLAINTEXT, 'image/png');
    const bad: AttachmentPointer[] = [
      { ...pointer, blobId: pointer.blobId.toUpperCase() },
      { ...pointer, blobId: '0'.repeat(64) },
      { ...pointer, key: pointer.key.subarray(1) },
      { ...pointer, digest: pointer.digest.subarray(1) },
      { ...pointer, size: -1 },
      { ...pointer, size: MAX_ATTACHMENT_SIZE + 1 },
      { ...pointer, contentType: 'x'.repeat(256) },
    ];
    for (const p of bad) {
      expect(attachmentPointerProblem(p)).not.toBeNull();
      expect(() => decryptAttachment(c, p, blob)).toThrow(UsageError);
    }
  });

  it('never throws on random or mutated blobs [WP-ATT-02, WP-ATT-03, WP-ATT-04, WP-ATT-05]', () => {
    const { blob, pointer } = encryptAttachment(c, seededRng('fuzz'), PLAINTEXT, 'image/png');
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.boolean(), (bytes, matchDigest) => {
        const target = matchDigest ? repoint(c, pointer, bytes) : pointer;
        const result = decryptAttachment(c, target, bytes);
        expect(result.ok).toBe(false);
      }),
      { numRuns: 300 },
    );
    expect(decryptAttachment(c, pointer, blob).ok).toBe(true);
  });
});
