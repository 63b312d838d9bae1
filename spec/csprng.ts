/**
 * The one entry-point adapter allowed to read the platform CSPRNG (see ARCHITECTURE.md,
 * "Determinism"). Nothing in spec/, impl/, model/ or simulator/ imports it; applications and the
 * command line pass it in as the {@link Rng} when they want real keys.
 * @module
 */
import type { Rng } from './rng.js';

/** An {@link Rng} backed by `crypto.getRandomValues` (Web Crypto; also available in Node 20). */
export const csprng: Rng = {
  randomBytes(length: number): Uint8Array {
    const out = new Uint8Array(length);
    // getRandomValues fills at most 65536 bytes per call.
    for (let offset = 0; offset < length; offset += 65536) {
      globalThis.crypto.getRandomValues(out.subarray(offset, Math.min(length, offset + 65536)));
    }
    return out;
  },
};
