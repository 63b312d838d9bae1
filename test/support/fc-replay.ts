/**
 * Replaying a fast-check run from the environment. Property tests draw a fresh seed on every run,
 * and fast-check prints the seed and the shrink path of any failure (`{ seed: …, path: "…",
 * endOnFailure: true }`). To replay one, pass them back:
 *
 * ```sh
 * LOCKSTEP_FC_SEED=1798807440 LOCKSTEP_FC_PATH=2:0:0:11 npx vitest run <the test file>
 * ```
 *
 * `LOCKSTEP_FC_SEED` alone reruns the whole run from that seed; with `LOCKSTEP_FC_PATH` fast-check
 * goes straight to the counterexample. A replayed counterexample then becomes a regular test
 * (CONTRIBUTING.md, "Tests").
 * @module
 */
import { UsageError } from '../../spec/errors.js';

/** The fast-check options that pin a run, or none when the environment names no seed. */
export interface ReplayOptions {
  readonly seed?: number;
  readonly path?: string;
  readonly endOnFailure?: boolean;
}

/** Reads `LOCKSTEP_FC_SEED` and `LOCKSTEP_FC_PATH` for `fc.assert`'s options. */
export function fcReplayOptions(env: NodeJS.ProcessEnv = process.env): ReplayOptions {
  const seedText = env['LOCKSTEP_FC_SEED'];
  const path = env['LOCKSTEP_FC_PATH'];
  if (seedText === undefined || seedText === '') {
    if (path !== undefined && path !== '') throw new UsageError('LOCKSTEP_FC_PATH needs LOCKSTEP_FC_SEED');
    return {};
  }
  const seed = Number(seedText);
  // fast-check seeds are 32-bit integers (it prints negative ones too).
  if (!Number.isSafeInteger(seed) || seed < -(2 ** 31) || seed >= 2 ** 32) {
    throw new UsageError(`LOCKSTEP_FC_SEED must be a 32-bit integer, got ${seedText}`);
  }
  if (path === undefined || path === '') return { seed };
  if (!/^\d+(:\d+)*$/.test(path)) throw new UsageError(`LOCKSTEP_FC_PATH must look like 2:0:11, got ${path}`);
  return { seed, path, endOnFailure: true };
}
