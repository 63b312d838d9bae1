/**
 * Randomness is always a parameter (WP-KEYS-09). Every operation draws bytes from an injected
 * {@link Rng} in the order and sizes fixed by `spec/draws.ts`, so two independent engines fed the
 * same stream produce the same bytes.
 *
 * Production entry points pass the CSPRNG adapter (`spec/csprng.ts`, the one place allowed to touch
 * `crypto.getRandomValues`); tests, vectors, the demo and the simulator pass {@link seededRng}.
 * @module
 */
import { chacha20 } from '@noble/ciphers/chacha.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { utf8 } from './bytes.js';
import { UsageError } from './errors.js';

/** A source of random bytes. */
export interface Rng {
  /** Returns `length` fresh random bytes. */
  randomBytes(length: number): Uint8Array;
}

/**
 * A deterministic stream: ChaCha20 keystream under `key = SHA-256("lockstep-rng-v1" ‖ seed)`, nonce
 * zero, read sequentially. Not for production keys; for reproducible tests, vectors and simulation.
 */
export function seededRng(seed: string | Uint8Array): Rng {
  const seedBytes = typeof seed === 'string' ? utf8(seed) : seed;
  const label = utf8('lockstep-rng-v1');
  const keyInput = new Uint8Array(label.length + seedBytes.length);
  keyInput.set(label, 0);
  keyInput.set(seedBytes, label.length);
  const key = sha256(keyInput);
  const nonce = new Uint8Array(12);
  const blockSize = 64;
  let counter = 0;
  let buffer = new Uint8Array(0);
  let offset = 0;
  return {
    randomBytes(length: number): Uint8Array {
      if (!Number.isSafeInteger(length) || length < 0)
        throw new UsageError(`invalid random length ${length}`);
      const out = new Uint8Array(length);
      let written = 0;
      while (written < length) {
        if (offset === buffer.length) {
          const blocks = 16;
          buffer = chacha20(key, nonce, new Uint8Array(blockSize * blocks), undefined, counter);
          counter += blocks;
          offset = 0;
        }
        const take = Math.min(length - written, buffer.length - offset);
        out.set(buffer.subarray(offset, offset + take), written);
        written += take;
        offset += take;
      }
      return out;
    },
  };
}
