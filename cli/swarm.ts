/**
 * `lockstep swarm`: many seeds on worker threads, each with fault rates drawn from its seed
 * (simulator/faults.ts), a progress bar, a summary table, the failing seeds with their repro lines
 * and their traces saved in a folder, and an optional triage JSON (property failure counts and how
 * often each "sometimes" counter was reached). Wall-clock time is measured here for the report
 * only; it never reaches a trace.
 * @module
 */
import { Worker } from 'node:worker_threads';
import cliProgress from 'cli-progress';
import type { BugName } from '../spec/bugs.js';
import type { SecurityMode } from '../spec/security-mode.js';
import type { EngineChoice } from '../simulator/api.js';
import type { PresetName } from '../simulator/presets.js';
import { replayCommand } from './config.js';
import { writeTextFile } from './io.js';
import type { SwarmJob, SwarmOutcome } from './swarm-job.js';
import { formatTable, isSometimesCounter } from './summary.js';

/** Where failing traces go unless `--out-dir` says otherwise. */
export const DEFAULT_OUT_DIR = 'swarm-failures';

/** Options of {@link runSwarm}. */
export interface SwarmOptions {
  readonly seeds: number;
  readonly firstSeed: number;
  readonly preset: PresetName;
  readonly engine: EngineChoice;
  readonly bugs: readonly BugName[];
  /** Random adversary actions per seed (0: honest runs); its runs are judged by the security oracles. */
  readonly adversary?: number;
  /** The devices' security switches; null or absent keeps the preset's (hardened). */
  readonly mode?: SecurityMode | null;
  readonly workers: number;
  readonly outDir: string;
  /** Triage JSON file, or null. */
  readonly triage: string | null;
  readonly progress: boolean;
  /** Where report lines go (null: silent). */
  readonly print: ((line: string) => void) | null;
}

/** The triage report: what failed how often, and what the swarm exercised. */
export interface SwarmTriage {
  readonly preset: PresetName;
  readonly engine: EngineChoice;
  readonly bugs: readonly BugName[];
  readonly seeds: { readonly first: number; readonly count: number };
  readonly passed: number;
  readonly failed: number;
  /** Property → seeds that violated it. */
  readonly properties: Readonly<
    Record<string, { readonly failures: number; readonly seeds: readonly number[] }>
  >;
  /** "Sometimes" counter (summary.ts `isSometimesCounter`) → in how many seeds it was reached, and its total. */
  readonly sometimes: Readonly<Record<string, { readonly seedsReached: number; readonly total: number }>>;
  /** Every other counter (faults injected, server requests, traffic) summed over the seeds. */
  readonly counters: Readonly<Record<string, number>>;
  readonly failures: readonly {
    readonly seed: number;
    readonly properties: readonly string[];
    readonly message: string | null;
    readonly repro: string;
    readonly trace: string | null;
  }[];
}

/** The outcome of a swarm. */
export interface SwarmSummary {
  readonly outcomes: readonly SwarmOutcome[];
  readonly failed: number;
  readonly wallMs: number;
  readonly seedsPerMinute: number;
  readonly events: number;
  readonly triage: SwarmTriage;
}

/** Run the swarm. Resolves when every seed has an outcome; workers are always terminated. */
export async function runSwarm(options: SwarmOptions): Promise<SwarmSummary> {
  const jobs: SwarmJob[] = Array.from({ length: options.seeds }, (_, index) => ({
    seed: options.firstSeed + index,
    preset: options.preset,
    engine: options.engine,
    bugs: options.bugs,
    adversary: options.adversary ?? 0,
    mode: options.mode ?? null,
    outDir: options.outDir,
  }));
  const workerCount = Math.max(1, Math.min(options.workers, jobs.length));
  const print = options.print ?? (() => undefined);
  print(
    `swarm: ${jobs.length} seeds from ${options.firstSeed}, preset ${options.preset}, engine ${options.engine}, ${workerCount} workers, fault rates drawn per seed${(options.adversary ?? 0) > 0 ? `, an adversary with ${options.adversary} random actions (mode ${options.mode ?? 'hardened'}; every security oracle must hold)` : ''}; failing traces go to ${options.outDir}/`,
  );

  const bar = options.progress
    ? new cliProgress.SingleBar(
        {
          format:
            'swarm [{bar}] {value}/{total} seeds | {failed} failed | {rate} seeds/min | eta {eta_formatted}',
          hideCursor: true,
          stream: process.stderr,
        },
        cliProgress.Presets.shades_classic,
      )
    : null;
  const started = process.hrtime.bigint();
  const elapsedMs = (): number => Number(process.hrtime.bigint() - started) / 1e6;
  bar?.start(jobs.length, 0, { failed: 0, rate: '0' });

  const outcomes: SwarmOutcome[] = [];
  let failed = 0;
  const workers: Worker[] = [];
  try {
    await new Promise<void>((resolve, reject) => {
      let next = 0;
      const dispatch = (worker: Worker): void => {
        const job = jobs[next];
        if (job === undefined) return;
        next += 1;
        worker.postMessage(job);
      };
      for (let index = 0; index < workerCount; index += 1) {
        const worker = new Worker(new URL('./swarm-worker.js', import.meta.url));
        workers.push(worker);
        worker.on('message', (outcome: SwarmOutcome) => {
          outcomes.push(outcome);
          if (!outcome.passed) failed += 1;
          const minutes = elapsedMs() / 60_000;
          bar?.update(outcomes.length, {
            failed,
            rate: minutes > 0 ? (outcomes.length / minutes).toFixed(0) : '0',
          });
          if (outcomes.length === jobs.length) resolve();
          else dispatch(worker);
        });
        worker.on('error', reject);
        worker.on('exit', (code) => {
          if (outcomes.length < jobs.length && code !== 0)
            reject(new Error(`swarm worker exited with status ${code}`));
        });
        dispatch(worker);
      }
    });
  } finally {
    bar?.stop();
    await Promise.all(workers.map((worker) => worker.terminate()));
  }
  const wallMs = elapsedMs();
  outcomes.sort((a, b) => a.seed - b.seed);
  const triage = buildTriage(options, outcomes);
  const summary: SwarmSummary = {
    outcomes,
    failed,
    wallMs,
    seedsPerMinute: outcomes.length / (wallMs / 60_000),
    events: outcomes.reduce((sum, outcome) => sum + outcome.events, 0),
    triage,
  };
  if (options.triage !== null) writeTextFile(options.triage, `${JSON.stringify(triage, null, 2)}\n`);
  for (const line of formatSwarmReport(summary, options.triage)) print(line);
  return summary;
}

/** Fold the outcomes into the triage report. */
export function buildTriage(options: SwarmOptions, outcomes: readonly SwarmOutcome[]): SwarmTriage {
  const properties: Record<string, { failures: number; seeds: number[] }> = {};
  const sometimes: Record<string, { seedsReached: number; total: number }> = {};
  const counters: Record<string, number> = {};
  for (const outcome of outcomes) {
    for (const property of outcome.failedProperties) {
      const entry = (properties[property] ??= { failures: 0, seeds: [] });
      entry.failures += 1;
      entry.seeds.push(outcome.seed);
    }
    for (const [name, value] of Object.entries(outcome.counters)) {
      if (isSometimesCounter(name)) {
        const entry = (sometimes[name] ??= { seedsReached: 0, total: 0 });
        if (value > 0) entry.seedsReached += 1;
        entry.total += value;
      } else {
        counters[name] = (counters[name] ?? 0) + value;
      }
    }
  }
  const failures = outcomes
    .filter((outcome) => !outcome.passed)
    .map((outcome) => ({
      seed: outcome.seed,
      properties: outcome.failedProperties,
      message: outcome.firstMessage,
      repro: outcome.repro,
      trace: outcome.trace,
    }));
  return {
    preset: options.preset,
    engine: options.engine,
    bugs: options.bugs,
    seeds: { first: options.firstSeed, count: outcomes.length },
    passed: outcomes.length - failures.length,
    failed: failures.length,
    properties: sortKeys(properties),
    sometimes: sortKeys(sometimes),
    counters: sortKeys(counters),
    failures,
  };
}

function sortKeys<T>(record: Record<string, T>): Record<string, T> {
  return Object.fromEntries(Object.entries(record).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

function percentile(values: readonly number[], fraction: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(fraction * sorted.length))] ?? 0;
}

/** The report printed after a swarm. */
export function formatSwarmReport(summary: SwarmSummary, triageFile: string | null): readonly string[] {
  const t = summary.triage;
  const lines: string[] = [];
  const withLatency = summary.outcomes.filter((outcome) => outcome.latency.count > 0);
  lines.push(
    formatTable(
      [
        'seeds',
        'passed',
        'failed',
        'wall s',
        'seeds/min',
        'events',
        'seed wall p50 ms',
        'latency p50 (median)',
        'latency p99 (max)',
      ],
      [
        [
          String(summary.outcomes.length),
          String(t.passed),
          String(t.failed),
          (summary.wallMs / 1000).toFixed(1),
          summary.seedsPerMinute.toFixed(0),
          String(summary.events),
          percentile(
            summary.outcomes.map((outcome) => outcome.wallMs),
            0.5,
          ).toFixed(0),
          `${percentile(
            withLatency.map((outcome) => outcome.latency.p50),
            0.5,
          )} ms`,
          `${Math.max(0, ...withLatency.map((outcome) => outcome.latency.p99))} ms`,
        ],
      ],
    ),
  );
  const propertyRows = Object.entries(t.properties).map(([name, entry]) => [
    name,
    String(entry.failures),
    entry.seeds.slice(0, 8).join(' ') + (entry.seeds.length > 8 ? ' …' : ''),
  ]);
  if (propertyRows.length > 0) {
    lines.push('', formatTable(['property', 'failing seeds', 'seeds'], propertyRows));
  }
  const sometimesRows = Object.entries(t.sometimes).map(([name, entry]) => [
    name,
    `${entry.seedsReached}/${summary.outcomes.length}`,
    String(entry.total),
  ]);
  if (sometimesRows.length > 0) {
    lines.push('', formatTable(['sometimes', 'seeds reached', 'total'], sometimesRows));
    const never = sometimesRows.filter((row) => row[1]?.startsWith('0/'));
    if (never.length > 0) lines.push(`never reached: ${never.map((row) => row[0]).join(', ')}`);
  }
  if (t.failures.length > 0) {
    lines.push('', 'failing seeds:');
    for (const failure of t.failures) {
      lines.push(`  seed ${failure.seed}: ${failure.message ?? failure.properties.join(', ')}`);
      if (failure.trace !== null) lines.push(`    trace: ${failure.trace} (${replayCommand(failure.trace)})`);
      lines.push(`    repro: ${failure.repro}`);
    }
  }
  if (triageFile !== null) lines.push(`triage: ${triageFile}`);
  lines.push(
    t.failed === 0
      ? `result: PASS (${t.passed} seeds)`
      : `result: FAIL (${t.failed} of ${summary.outcomes.length} seeds)`,
  );
  return lines;
}
