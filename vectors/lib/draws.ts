/**
 * The two random sources behind the vectors (WP-KEYS-09): a recording {@link Rng} for the generator
 * (it wraps `seededRng` and remembers every draw of the current operation) and a scripted one for
 * the checker (it returns exactly the draws a vector lists and refuses anything else).
 *
 * A vector never depends on how Lockstep's seeded stream works: it lists the bytes each operation
 * consumes, in the order and sizes spec/draws.ts fixes, so any implementation can replay them.
 * @module
 */
import type { Rng } from '../../spec/rng.js';

/** A recording source: draws pass through from `inner` and are kept until {@link take} is called. */
export interface RecordingRng extends Rng {
  /** The draws made since the last call, in order; clears the record. */
  take(): Uint8Array[];
}

/** Wraps `inner`, recording a copy of every draw. */
export function recordingRng(inner: Rng): RecordingRng {
  let recorded: Uint8Array[] = [];
  return {
    randomBytes(length: number): Uint8Array {
      const bytes = inner.randomBytes(length);
      recorded.push(Uint8Array.from(bytes));
      return bytes;
    },
    take(): Uint8Array[] {
      const out = recorded;
      recorded = [];
      return out;
    },
  };
}

/** Raised when an operation draws differently from what the vector lists. */
export class DrawMismatchError extends Error {
  override readonly name = 'DrawMismatchError';
}

/** A scripted source: exactly the listed draws, in order, of exactly the listed lengths. */
export interface ScriptedRng extends Rng {
  /** How many listed draws have not been consumed. */
  remaining(): number;
}

/**
 * Returns the listed draws one per call. Throws {@link DrawMismatchError} when the operation asks
 * for more draws than listed or for a length other than the next listed draw's; the caller checks
 * {@link ScriptedRng.remaining} afterwards to catch an operation that drew too few.
 */
export function scriptedRng(draws: readonly Uint8Array[]): ScriptedRng {
  let next = 0;
  return {
    randomBytes(length: number): Uint8Array {
      const draw = draws[next];
      if (draw === undefined) {
        throw new DrawMismatchError(
          `operation asked for draw #${next} (${length} bytes) but only ${draws.length} are listed`,
        );
      }
      if (draw.length !== length) {
        throw new DrawMismatchError(
          `operation asked for ${length} bytes at draw #${next}, the vector lists ${draw.length}`,
        );
      }
      next++;
      return Uint8Array.from(draw);
    },
    remaining(): number {
      return draws.length - next;
    },
  };
}
