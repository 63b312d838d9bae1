/**
 * Simulator benchmark: how fast the deterministic simulator runs, measured on the wall clock
 * (never fed into a trace).
 *
 * Every run uses the CLI's node:crypto provider (cli/simulate.ts), as `lockstep sim` and `swarm` do.
 *
 * Rows:
 * - `events/s default`: events per second of single-threaded `runSimulation` on the `default`
 *   preset, over seeds 1..`--runs`.
 * - `swarm default`: seeds per minute of `lockstep swarm` on the `default` preset (fault rates drawn
 *   per seed) with `--workers` threads, over `--seeds` seeds. Floor: 100 seeds/min on a 2-core
 *   machine (checked unless `--no-floors`).
 * - `peak-day` (only with `--peak-day`, it is long): one simulated day of 10 000 users × 3 devices
 *   and 100 000 messages: wall time, peak memory (maxRSS from process.resourceUsage, heap after the
 *   run), message and session counts, peak mailbox depth and simulated delivery latency p50/p99, as
 *   reported by the run's counters.
 *
 * Usage: `npm run bench:sim [-- --runs N] [--seeds N] [--workers K] [--engine impl] [--peak-day]
 * [--json FILE] [--no-floors]`. When a floor is missed, profile with
 * `node --cpu-prof --cpu-prof-dir=prof --import tsx bench/sim.bench.ts --seeds 0` and open the
 * .cpuprofile in Chrome DevTools.
 * @module
 */
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import { parseArgs } from 'node:util';
import type { EngineChoice, SimResult } from '../simulator/api.js';
import { presetConfig } from '../simulator/presets.js';
import { runSwarm } from '../cli/swarm.js';
import { simulate } from '../cli/simulate.js';
import { formatTable } from '../cli/summary.js';

const { values: args } = parseArgs({
  options: {
    runs: { type: 'string', default: '5' },
    seeds: { type: 'string', default: '40' },
    workers: { type: 'string', default: String(os.availableParallelism()) },
    engine: { type: 'string', default: 'impl' },
    'peak-day': { type: 'boolean', default: false },
    json: { type: 'string' },
    'no-floors': { type: 'boolean', default: false },
  },
  strict: true,
});

const ENGINE = args.engine as EngineChoice;
if (!['impl', 'model', 'both'].includes(ENGINE))
  throw new Error(`--engine must be impl, model or both, got ${args.engine}`);
const RUNS = Math.max(0, Number.parseInt(args.runs, 10));
const SEEDS = Math.max(0, Number.parseInt(args.seeds, 10));
const WORKERS = Math.max(1, Number.parseInt(args.workers, 10));
const SWARM_FLOOR_PER_MINUTE = 100;

const nowMs = (): number => Number(process.hrtime.bigint()) / 1e6;

/** A counter's value, or null when the simulator does not report it. */
function counter(result: SimResult, ...names: readonly string[]): number | null {
  for (const name of names) {
    const value = result.counters[name];
    if (value !== undefined) return value;
  }
  return null;
}

interface Row {
  readonly name: string;
  readonly value: string;
  readonly detail: string;
}

const rows: Row[] = [];
const report: Record<string, unknown> = {
  node: process.version,
  cpus: os.availableParallelism(),
  cpuModel: os.cpus()[0]?.model ?? null,
  engine: ENGINE,
};
let floorsMissed = false;

// events/s on `default`, single thread.
if (RUNS > 0) {
  // Warm up once (JIT, module loading) outside the measurement.
  simulate(presetConfig('default', 1_000_000, { engine: ENGINE }));
  let events = 0;
  let wall = 0;
  for (let seed = 1; seed <= RUNS; seed += 1) {
    const started = nowMs();
    const result = simulate(presetConfig('default', seed, { engine: ENGINE }));
    wall += nowMs() - started;
    events += result.lines.length - 1;
  }
  const perSecond = events / (wall / 1000);
  rows.push({
    name: 'events/s default (1 thread)',
    value: perSecond.toFixed(0),
    detail: `${events} events over ${RUNS} seeds in ${(wall / 1000).toFixed(2)} s; ${(wall / RUNS).toFixed(0)} ms/seed`,
  });
  report.eventsPerSecond = { value: perSecond, events, runs: RUNS, wallMs: wall, msPerSeed: wall / RUNS };
}

// seeds/min on `default` with swarm.
if (SEEDS > 0) {
  const summary = await runSwarm({
    seeds: SEEDS,
    firstSeed: 1,
    preset: 'default',
    engine: ENGINE,
    bugs: [],
    workers: WORKERS,
    outDir: 'artifacts/bench-swarm-failures',
    triage: null,
    progress: false,
    print: null,
  });
  const missed = summary.seedsPerMinute < SWARM_FLOOR_PER_MINUTE;
  floorsMissed ||= missed;
  rows.push({
    name: `swarm default (${WORKERS} workers)`,
    value: `${summary.seedsPerMinute.toFixed(0)} seeds/min`,
    detail: `${SEEDS} seeds in ${(summary.wallMs / 1000).toFixed(1)} s, ${summary.failed} failed; floor ${SWARM_FLOOR_PER_MINUTE}/min ${missed ? 'MISSED' : 'met'}`,
  });
  report.swarm = {
    seedsPerMinute: summary.seedsPerMinute,
    seeds: SEEDS,
    workers: WORKERS,
    wallMs: summary.wallMs,
    failed: summary.failed,
    floor: SWARM_FLOOR_PER_MINUTE,
    floorMet: !missed,
  };
}

// peak-day, on request.
if (args['peak-day']) {
  const started = nowMs();
  const result = simulate(presetConfig('peak-day', 1, { engine: 'impl' }));
  const wall = nowMs() - started;
  const memory = process.memoryUsage();
  const maxRssMiB = process.resourceUsage().maxRSS / 1024;
  const figures = {
    wallMs: wall,
    maxRssMiB,
    heapUsedMiB: memory.heapUsed / 1024 / 1024,
    messagesSent: counter(result, 'messages.sent'),
    messagesDelivered: counter(result, 'messages.delivered'),
    sessions: counter(result, 'sessions', 'sessions.active', 'sessions.established', 'sessions.created'),
    peakMailboxDepth: counter(
      result,
      'mailbox.peak-depth',
      'mailbox.peakDepth',
      'mailbox.max-depth',
      'peakMailboxDepth',
    ),
    latency: result.latency,
    violations: result.violations.length,
    traceLines: result.lines.length,
  };
  const show = (value: number | null): string => (value === null ? 'n/a' : String(value));
  rows.push({
    name: 'peak-day wall time',
    value: `${(wall / 1000).toFixed(1)} s`,
    detail: 'seed 1, impl engine, summary trace',
  });
  rows.push({
    name: 'peak-day peak memory',
    value: `${maxRssMiB.toFixed(0)} MiB`,
    detail: `maxRSS; heap after run ${figures.heapUsedMiB.toFixed(0)} MiB`,
  });
  rows.push({
    name: 'peak-day messages',
    value: show(figures.messagesSent),
    detail: `delivered ${show(figures.messagesDelivered)}; sessions ${show(figures.sessions)}; peak mailbox depth ${show(figures.peakMailboxDepth)}`,
  });
  rows.push({
    name: 'peak-day delivery latency',
    value: `p50 ${result.latency.p50} ms`,
    detail: `p99 ${result.latency.p99} ms, max ${result.latency.max} ms over ${result.latency.count} deliveries (simulated; claim: under 1 s)`,
  });
  report.peakDay = { ...figures, counters: result.counters };
}

process.stdout.write(
  `${formatTable(
    ['benchmark', 'value', 'detail'],
    rows.map((row) => [row.name, row.value, row.detail]),
  )}\n`,
);
if (args.json !== undefined) writeFileSync(args.json, `${JSON.stringify(report, null, 2)}\n`);
if (floorsMissed) {
  process.stdout.write(
    'floor missed: profile with `node --cpu-prof --cpu-prof-dir=prof --import tsx bench/sim.bench.ts --seeds 0`\n',
  );
  if (!args['no-floors']) process.exitCode = 1;
}
