/**
 * One swarm seed, as a worker thread runs it: build the configuration with fault rates drawn from
 * the seed, run the simulator, save the trace when the run fails, and answer with a small summary
 * (traces never cross the thread boundary). Shared by the worker and the in-process fallback.
 *
 * A passing seed's trace is never serialised: the simulator writes trace lines only when they are
 * first read (simulator/trace.ts `TraceWriter`), which only a failing seed's does.
 * @module
 */
import path from 'node:path';
import type { BugName } from '../spec/bugs.js';
import type { SecurityMode } from '../spec/security-mode.js';
import type { Counters, EngineChoice } from '../simulator/api.js';
import type { PresetName } from '../simulator/presets.js';
import { prepareRun, simCommand, type RunChoice } from './config.js';
import { describe, writeTraceLines } from './io.js';
import { simulate } from './simulate.js';
import { passed } from './summary.js';

/** What the main thread asks a worker to run. */
export interface SwarmJob {
  readonly seed: number;
  readonly preset: PresetName;
  readonly engine: EngineChoice;
  readonly bugs: readonly BugName[];
  readonly adversary: number;
  readonly mode: SecurityMode | null;
  readonly outDir: string;
}

/** What a worker answers for one seed. */
export interface SwarmOutcome {
  readonly seed: number;
  readonly passed: boolean;
  /** Properties violated (each once), plus `divergence` when the engines diverged. */
  readonly failedProperties: readonly string[];
  /** The first violation's or divergence's message. */
  readonly firstMessage: string | null;
  readonly counters: Counters;
  /** Events the simulator processed (the `events` counter; reading the trace's lines would write them). */
  readonly events: number;
  readonly latency: { readonly p50: number; readonly p99: number; readonly count: number };
  readonly repro: string;
  /** The saved failing trace, or null for a passing seed. */
  readonly trace: string | null;
  /** The simulator threw: the message (the seed counts as failed). */
  readonly crash: string | null;
  readonly wallMs: number;
}

/** Run one swarm seed. */
export function runSwarmJob(job: SwarmJob): SwarmOutcome {
  const choice: RunChoice = {
    seed: job.seed,
    preset: job.preset,
    engine: job.engine,
    bugs: job.bugs,
    scenario: null,
    swarmFaults: true,
    faultOverrides: {},
    adversary: job.adversary,
    mode: job.mode,
  };
  const repro = simCommand(choice);
  const started = process.hrtime.bigint();
  try {
    const result = simulate(prepareRun(choice).config);
    const wallMs = Number(process.hrtime.bigint() - started) / 1e6;
    const ok = passed(result);
    // With an adversary the security oracles decide (the attacker may break honest-run properties).
    const failedProperties =
      result.security === null
        ? [...new Set(result.violations.map((v) => v.property))]
        : [...new Set(result.security.violations.map((v) => `oracle:${v.oracle}`))];
    if (result.divergence !== null) failedProperties.push('divergence');
    let trace: string | null = null;
    if (!ok) {
      trace = path.join(job.outDir, `seed-${job.seed}.ndjson`);
      writeTraceLines(trace, result.lines);
    }
    const oracle = result.security?.violations[0];
    const first =
      oracle !== undefined
        ? { property: `oracle:${oracle.oracle}`, message: oracle.message }
        : result.security === null
          ? result.violations[0]
          : undefined;
    return {
      seed: job.seed,
      passed: ok,
      failedProperties,
      firstMessage:
        first !== undefined
          ? `${first.property}: ${first.message}`
          : result.divergence !== null
            ? `divergence on ${result.divergence.node} (${result.divergence.field})`
            : null,
      counters: result.counters,
      events: result.counters['events'] ?? 0,
      latency: { p50: result.latency.p50, p99: result.latency.p99, count: result.latency.count },
      repro,
      trace,
      crash: null,
      wallMs,
    };
  } catch (error) {
    return {
      seed: job.seed,
      passed: false,
      failedProperties: ['crash'],
      firstMessage: `the simulator threw: ${describe(error)}`,
      counters: {},
      events: 0,
      latency: { p50: 0, p99: 0, count: 0 },
      repro,
      trace: null,
      crash: error instanceof Error ? (error.stack ?? error.message) : String(error),
      wallMs: Number(process.hrtime.bigint() - started) / 1e6,
    };
  }
}
