/**
 * Shrinking a failing run (design: "Simulator shape"; simulator anchors, item 6): delta debugging
 * (Zeller and Hildebrandt's ddmin) over the run's explicit schedule — workload inputs and faults —
 * keeping one named property failing, so an engineer reads the smallest counterexample the budget
 * allows.
 *
 * Every candidate is a full run of {@link runSimulation} with the same configuration and a subset of
 * the schedule (entries keep their ticks and order). The minimal run's header carries its schedule,
 * so replaying its trace reproduces it byte for byte. The number of runs is bounded by
 * `maxRuns`; when the budget runs out the smallest failing schedule found so far is returned and
 * the result says so. Pure: no Node APIs, no clock.
 * @module
 */
import type { CryptoProvider } from '../spec/crypto/provider.js';
import { InvariantError } from '../spec/errors.js';
import type { ScheduleEntry, SimConfig, SimResult } from './api.js';
import { runSimulation } from './run.js';

/** The pseudo-property naming an impl/model divergence under `--engine both`. */
export const DIVERGENCE_PROPERTY = 'divergence';

/** Default bound on simulator runs spent by {@link shrinkSchedule}. */
export const DEFAULT_MAX_RUNS = 200;

/** Whether `result` fails `property` (a property name, or {@link DIVERGENCE_PROPERTY}). */
export function failsProperty(result: SimResult, property: string): boolean {
  if (property === DIVERGENCE_PROPERTY) return result.divergence !== null;
  return result.violations.some((violation) => violation.property === property);
}

/**
 * The property a failing run fails first: the earliest violation by (t, seq), or
 * {@link DIVERGENCE_PROPERTY} when the engines diverged before any violation; null for a passing run.
 */
export function firstFailedProperty(result: SimResult): string | null {
  let first: { readonly t: number; readonly seq: number; readonly property: string } | null = null;
  for (const violation of result.violations) {
    if (first === null || violation.t < first.t || (violation.t === first.t && violation.seq < first.seq)) {
      first = violation;
    }
  }
  const divergence = result.divergence;
  if (
    divergence !== null &&
    (first === null || divergence.t < first.t || (divergence.t === first.t && divergence.seq < first.seq))
  ) {
    return DIVERGENCE_PROPERTY;
  }
  return first === null ? null : first.property;
}

/** The outcome of {@link ddmin}. */
export interface DdminResult<T> {
  /** The smallest failing subset found (1-minimal unless `exhausted`). */
  readonly items: readonly T[];
  /** Tests run (cached repeats are not counted). */
  readonly runs: number;
  /** True when the budget ran out before the subset was proven 1-minimal. */
  readonly exhausted: boolean;
}

/**
 * Delta debugging: the smallest subset of `items` (order kept) for which `fails` holds, found by
 * trying halves, then complements, at finer and finer granularity. `items` itself must fail (the
 * caller checks); `fails` is called at most `maxRuns` times, never twice on the same subset. The
 * empty subset is tried first, since a property that fails without any input is the smallest
 * counterexample of all.
 */
export function ddmin<T>(
  items: readonly T[],
  fails: (subset: readonly T[]) => boolean,
  maxRuns: number,
): DdminResult<T> {
  const tried = new Map<string, boolean>();
  let runs = 0;
  let exhausted = false;
  /** Test a subset given as sorted indices into `items`; undefined when the budget is spent. */
  const test = (indices: readonly number[]): boolean | undefined => {
    const key = indices.join(',');
    const known = tried.get(key);
    if (known !== undefined) return known;
    if (runs >= maxRuns) {
      exhausted = true;
      return undefined;
    }
    runs += 1;
    const verdict = fails(indices.map((index) => items[index] as T));
    tried.set(key, verdict);
    return verdict;
  };

  let current: readonly number[] = items.map((_, index) => index);
  tried.set(current.join(','), true);
  if (current.length > 0 && test([]) === true) current = [];

  let granularity = 2;
  while (current.length >= 2 && !exhausted) {
    const chunks = split(current, granularity);
    let reduced = false;
    // Reduce to a subset: one chunk alone still fails.
    for (const chunk of chunks) {
      const verdict = test(chunk);
      if (verdict === undefined) break;
      if (verdict) {
        current = chunk;
        granularity = 2;
        reduced = true;
        break;
      }
    }
    // Reduce to a complement: everything but one chunk still fails (with two chunks the
    // complements are the chunks themselves, already tried).
    if (!reduced && !exhausted && granularity > 2) {
      for (const chunk of chunks) {
        const removed = new Set(chunk);
        const complement = current.filter((index) => !removed.has(index));
        const verdict = test(complement);
        if (verdict === undefined) break;
        if (verdict) {
          current = complement;
          granularity = Math.max(granularity - 1, 2);
          reduced = true;
          break;
        }
      }
    }
    if (!reduced) {
      if (granularity >= current.length) break;
      granularity = Math.min(granularity * 2, current.length);
    }
  }
  return { items: current.map((index) => items[index] as T), runs, exhausted };
}

/** Split `list` into `parts` contiguous chunks of near-equal size (none empty). */
function split<T>(list: readonly T[], parts: number): readonly (readonly T[])[] {
  const chunks: T[][] = [];
  let start = 0;
  for (let part = 0; part < parts; part += 1) {
    const end = start + Math.floor((list.length - start) / (parts - part));
    if (end > start) chunks.push(list.slice(start, end));
    start = end;
  }
  return chunks;
}

/** Options of {@link shrinkSchedule}. */
export interface ShrinkOptions {
  /** Bound on simulator runs, the confirming run included (default {@link DEFAULT_MAX_RUNS}). */
  readonly maxRuns?: number;
  /**
   * The crypto provider of every run (default: the simulator's browser-safe noble provider). Runs
   * are the same with either, so a Node caller may pass the faster node:crypto one.
   */
  readonly crypto?: CryptoProvider;
}

/** The outcome of {@link shrinkSchedule}. */
export type ShrinkResult =
  | {
      readonly ok: true;
      readonly property: string;
      /** The smallest failing schedule found. */
      readonly schedule: readonly ScheduleEntry[];
      /** Its run: the header carries `schedule`, so `replay` reproduces it. */
      readonly result: SimResult;
      readonly originalLength: number;
      /** Simulator runs used, the confirming run of the full schedule included. */
      readonly runs: number;
      /** True when the run budget ran out before the schedule was proven 1-minimal. */
      readonly exhausted: boolean;
      /** Candidate runs that threw (counted as not failing the property). */
      readonly crashes: number;
    }
  | { readonly ok: false; readonly reason: 'not-failing'; readonly property: string; readonly runs: number };

/**
 * Minimise `schedule` under `config` while `property` keeps failing. The full schedule is run first
 * to confirm it fails; the returned run is the minimal schedule's own run.
 */
export function shrinkSchedule(
  config: SimConfig,
  schedule: readonly ScheduleEntry[],
  property: string,
  options: ShrinkOptions = {},
): ShrinkResult {
  const maxRuns = Math.max(1, options.maxRuns ?? DEFAULT_MAX_RUNS);
  let crashes = 0;
  const run = (entries: readonly ScheduleEntry[]): SimResult | null => {
    try {
      return runSimulation(
        config,
        options.crypto === undefined ? { schedule: entries } : { schedule: entries, crypto: options.crypto },
      );
    } catch {
      // A candidate the simulator cannot run (it should skip inputs that no longer apply) does
      // not reproduce the failure; count it so the report can say so.
      crashes += 1;
      return null;
    }
  };

  const full = run(schedule);
  if (full === null || !failsProperty(full, property)) {
    return { ok: false, reason: 'not-failing', property, runs: 1 };
  }
  // Keep the run of the smallest failing subset seen, so the answer needs no extra run.
  let best: { readonly entries: readonly ScheduleEntry[]; readonly result: SimResult } = {
    entries: schedule,
    result: full,
  };
  const minimised = ddmin(
    schedule,
    (subset) => {
      const result = run(subset);
      const fails = result !== null && failsProperty(result, property);
      if (fails && result !== null) best = { entries: subset, result };
      return fails;
    },
    maxRuns - 1,
  );
  if (minimised.items.length !== best.entries.length) {
    throw new InvariantError('ddmin returned a subset other than the last failing one');
  }
  // ddmin accepts every failing subset it sees, each smaller than the last, so its answer is the
  // subset recorded in `best`, and `best.result` is that subset's own run.
  return {
    ok: true,
    property,
    schedule: best.entries,
    result: best.result,
    originalLength: schedule.length,
    runs: minimised.runs + 1,
    exhausted: minimised.exhausted,
    crashes,
  };
}
