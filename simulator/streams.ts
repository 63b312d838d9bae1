/**
 * Seeded random streams of a simulation run (WHITEPAPER.md, "Simulator"; /work design "Determinism").
 *
 * One run seed is split into four independent, named streams by a fixed derivation rule:
 *
 * | stream     | derivation                                 | draws                                        |
 * | ---------- | ------------------------------------------ | -------------------------------------------- |
 * | `network`  | `seedrandom("lockstep-sim/<seed>/network")`  | per-packet loss, duplication, delay, tamper  |
 * | `workload` | `seedrandom("lockstep-sim/<seed>/workload")` | population, contacts, send times, texts      |
 * | `faults`   | `seedrandom("lockstep-sim/<seed>/faults")`   | the fault schedule (windows, crashes, losses) |
 * | `keys`     | `seededRng("lockstep-sim/<seed>/keys")`      | every byte any device draws (spec/rng.ts)    |
 *
 * The first three are seedrandom's ARC4 generator (floats in [0, 1)); `keys` is the spec's byte
 * stream (ChaCha20 keystream, spec/rng.ts) fed to the one `Env` all nodes share, so protocol draws
 * happen in event order. Streams never share state: adding a network draw does not shift a key.
 * Nothing here reads the platform clock or the platform random source.
 * @module
 */
import seedrandom from 'seedrandom';
import { seededRng, type Rng } from '../spec/rng.js';

/** A stream of uniform floats in [0, 1) with the few distributions the simulator needs. */
export interface Stream {
  /** Uniform in [0, 1). */
  next(): number;
  /** Uniform integer in [0, n). */
  int(n: number): number;
  /** True with probability p. */
  chance(p: number): boolean;
  /** Exponential with the given mean, rounded down to an integer (0 when mean ≤ 0). */
  exponential(mean: number): number;
  /** One element of a non-empty array. */
  pick<T>(items: readonly T[]): T;
  /** `length` lowercase hex digits. */
  hex(length: number): string;
}

/** The named streams of one run. */
export interface Streams {
  readonly network: Stream;
  readonly workload: Stream;
  readonly faults: Stream;
  /** The byte stream behind the shared protocol `Env` (spec/rng.ts). */
  readonly keys: Rng;
}

/** The derivation label of a named stream: `lockstep-sim/<seed>/<name>`. */
export function streamLabel(seed: number | string, name: string): string {
  return `lockstep-sim/${seed}/${name}`;
}

/** A float stream from a label (seedrandom ARC4). */
export function floatStream(label: string): Stream {
  const prng = seedrandom(label);
  const next = (): number => prng.quick();
  const stream: Stream = {
    next,
    int(n) {
      if (!(n >= 1)) return 0;
      return Math.floor(next() * n);
    },
    chance(p) {
      if (p <= 0) return false;
      if (p >= 1) return true;
      return next() < p;
    },
    exponential(mean) {
      if (mean <= 0) return 0;
      // Inverse transform; 1 − u is in (0, 1], so the logarithm is finite.
      return Math.floor(-Math.log(1 - next()) * mean);
    },
    pick(items) {
      const item = items[stream.int(items.length)];
      if (item === undefined) throw new Error('pick from an empty list');
      return item;
    },
    hex(length) {
      let out = '';
      for (let i = 0; i < length; i++) out += '0123456789abcdef'[stream.int(16)] ?? '0';
      return out;
    },
  };
  return stream;
}

/** Splits a run seed into its named streams (module table). */
export function createStreams(seed: number | string): Streams {
  return {
    network: floatStream(streamLabel(seed, 'network')),
    workload: floatStream(streamLabel(seed, 'workload')),
    faults: floatStream(streamLabel(seed, 'faults')),
    keys: seededRng(streamLabel(seed, 'keys')),
  };
}
