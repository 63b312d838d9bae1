/**
 * Simulator benchmark: how fast the deterministic simulator runs, measured on the wall clock
 * (never fed into a trace). It prints one table with the figures issue 5 asks for and writes them
 * to `bench/results/sim.json` (each section replaced only when it was measured, so a `--peak-day`
 * run and a quick run add up in one file).
 *
 * Every run uses the CLI's node:crypto provider (cli/simulate.ts), as `lockstep sim` and `swarm` do;
 * the `noble` row repeats the first one with the browser-safe provider, for the ratio between the
 * two. The machine is shared: wall-clock figures are medians over repeats, and CPU time is given
 * beside them.
 *
 * Rows:
 * - `events/s default, verdict only`: events processed per second by single-threaded
 *   `runSimulation` on the `default` preset (seeds 1..`--runs`, impl engine), when nobody reads the
 *   trace (what `swarm` does for a passing seed: lines are serialised only when read).
 * - `events/s default, trace written`: the same with every trace line serialised (what `sim --out`
 *   does).
 * - `events/s default, noble provider`: the first row with the noble provider, and the ratio.
 * - `swarm default`: seeds per minute of `lockstep swarm --preset default` (fault rates drawn per
 *   seed) with `--workers` threads over `--seeds` seeds, median of `--swarm-repeats` swarms.
 *   Floor: 100 seeds/min on a 2-core machine (checked unless `--no-floors`).
 * - `peak-day` (only with `--peak-day`; it takes tens of minutes): one simulated day of 10 000 users
 *   × 3 devices and 100 000 messages, seed 1, impl engine, summary trace, run in a child process
 *   with the CLI's heap limit (cli/lockstep.js): wall and CPU time (floor: 30 minutes), peak memory
 *   (the child's maxRSS; floor: 8 GiB), messages sent and deliveries (counters `ops.send`,
 *   `delivered`), sessions held at the end and peak mailbox depth (`SimResult.load`), and simulated
 *   delivery latency p50/p99 against the original messenger's claim of "under 1 second".
 *
 * Usage: `npm run bench:sim [-- --runs N] [--seeds N] [--swarm-repeats N] [--workers K]
 * [--engine impl] [--peak-day] [--json FILE] [--no-floors]`. When a floor is missed, profile with
 * `node --cpu-prof --cpu-prof-dir=prof --import tsx bench/sim.bench.ts --seeds 0` and open the
 * .cpuprofile in Chrome DevTools.
 * @module
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { nobleProvider } from '../spec/crypto/noble.js';
import type { EngineChoice, SimResult } from '../simulator/api.js';
import { presetBody, presetConfig } from '../simulator/presets.js';
import { runSimulation } from '../simulator/run.js';
import { HEAP_LIMIT_MIB, LARGE_RUN_NODE_FLAGS } from '../cli/heap.js';
import { runSwarm } from '../cli/swarm.js';
import { simulate } from '../cli/simulate.js';
import { formatTable } from '../cli/summary.js';

const { values: args } = parseArgs({
  options: {
    runs: { type: 'string', default: '6' },
    seeds: { type: 'string', default: '60' },
    'swarm-repeats': { type: 'string', default: '3' },
    workers: { type: 'string', default: String(os.availableParallelism()) },
    engine: { type: 'string', default: 'impl' },
    'peak-day': { type: 'boolean', default: false },
    'peak-day-child': { type: 'boolean', default: false },
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
const SWARM_REPEATS = Math.max(1, Number.parseInt(args['swarm-repeats'], 10));
const WORKERS = Math.max(1, Number.parseInt(args.workers, 10));
const SWARM_FLOOR_PER_MINUTE = 100;
/** The issue's peak-day floors: one simulated day within 30 minutes and 8 GiB. */
const PEAK_DAY_FLOOR_MINUTES = 30;
const PEAK_DAY_FLOOR_GIB = 8;
/** Devices of the peak-day population (users × devices per user). */
const PEAK_DAY_DEVICES =
  presetBody('peak-day').workload.users * presetBody('peak-day').workload.devicesPerUser;
/** Prefix of the child's result line (anything else it prints is left alone). */
const PEAK_DAY_MARKER = 'peak-day-figures ';
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const RESULTS = args.json ?? path.join(ROOT, 'bench', 'results', 'sim.json');

const nowMs = (): number => Number(process.hrtime.bigint()) / 1e6;
const cpuMs = (since: NodeJS.CpuUsage): number => {
  const used = process.cpuUsage(since);
  return (used.user + used.system) / 1000;
};

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[mid] ?? 0) : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

/** A counter's value, or null when the run did not count it. */
function counter(result: SimResult, name: string): number | null {
  return result.counters[name] ?? null;
}

interface Row {
  readonly name: string;
  readonly value: string;
  readonly detail: string;
}

const rows: Row[] = [];
const report: Record<string, unknown> = {};
let floorsMissed = false;

/** What the peak-day child reports (one JSON line on stdout). */
interface PeakDayFigures {
  readonly wallMs: number;
  readonly cpuMs: number;
  readonly maxRssMiB: number;
  readonly heapUsedMiB: number;
  readonly messagesSent: number | null;
  readonly deliveries: number | null;
  readonly events: number | null;
  readonly load: SimResult['load'];
  readonly latency: SimResult['latency'];
  readonly violations: number;
  readonly converged: boolean;
  readonly counters: SimResult['counters'];
  /** Why the child failed, or null. */
  readonly crashed: string | null;
}

/** Runs peak-day in this process (the child) and prints its figures. */
function peakDayChild(): void {
  const started = nowMs();
  const cpu = process.cpuUsage();
  const result = simulate(presetConfig('peak-day', 1, { engine: 'impl' }));
  const figures: PeakDayFigures = {
    wallMs: nowMs() - started,
    cpuMs: cpuMs(cpu),
    maxRssMiB: process.resourceUsage().maxRSS / 1024,
    heapUsedMiB: process.memoryUsage().heapUsed / 1024 / 1024,
    messagesSent: counter(result, 'ops.send'),
    deliveries: counter(result, 'delivered'),
    events: counter(result, 'events'),
    load: result.load,
    latency: result.latency,
    violations: result.violations.length,
    // A summary trace has a handful of lines: `converged` or `not-converged` is one of them.
    converged: result.lines.some((line) => line.includes('"kind":"converged"')),
    counters: result.counters,
    crashed: null,
  };
  process.stdout.write(`${PEAK_DAY_MARKER}${JSON.stringify(figures)}\n`);
}

/** Runs {@link peakDayChild} in a child process with the CLI's large-run flags and returns its figures. */
function runPeakDayChild(): PeakDayFigures {
  const child = spawnSync(
    process.execPath,
    [...LARGE_RUN_NODE_FLAGS, '--import', 'tsx', fileURLToPath(import.meta.url), '--peak-day-child'],
    { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 26 },
  );
  const line = child.stdout.split('\n').find((l) => l.startsWith(PEAK_DAY_MARKER));
  // The child wrote this line from a PeakDayFigures (peakDayChild).
  if (line !== undefined) return JSON.parse(line.slice(PEAK_DAY_MARKER.length)) as PeakDayFigures;
  return {
    wallMs: 0,
    cpuMs: 0,
    maxRssMiB: 0,
    heapUsedMiB: 0,
    messagesSent: null,
    deliveries: null,
    events: null,
    load: { peakMailboxDepth: 0, activeSessions: 0, initiatingSessions: 0, archivedSessions: 0 },
    latency: { p50: 0, p99: 0, max: 0, count: 0 },
    violations: 0,
    converged: false,
    counters: {},
    crashed:
      child.error?.message ?? `exit status ${child.status ?? 'none'}, signal ${child.signal ?? 'none'}`,
  };
}

if (args['peak-day-child']) {
  peakDayChild();
  process.exit(0);
}

/** Events per second of `runSimulation` over seeds 1..RUNS, reading the lines or not. */
function eventsPerSecond(
  key: string,
  label: string,
  run: (seed: number) => SimResult,
  readLines: boolean,
): number {
  // Warm up once (JIT, module loading, key caches) outside the measurement.
  run(1_000_000);
  let events = 0;
  let lines = 0;
  const perSeed: number[] = [];
  const started = nowMs();
  const cpu = process.cpuUsage();
  for (let seed = 1; seed <= RUNS; seed += 1) {
    const seedStarted = nowMs();
    const result = run(seed);
    if (readLines) lines += result.lines.length;
    perSeed.push(nowMs() - seedStarted);
    events += result.counters['events'] ?? 0;
  }
  const wall = nowMs() - started;
  const cpuUsed = cpuMs(cpu);
  const perSecond = events / (wall / 1000);
  rows.push({
    name: label,
    value: perSecond.toFixed(0),
    detail: `${events} events over ${RUNS} seeds in ${(wall / 1000).toFixed(1)} s (CPU ${(cpuUsed / 1000).toFixed(1)} s, ${(events / (cpuUsed / 1000)).toFixed(0)} events per CPU-second); median ${median(perSeed).toFixed(0)} ms/seed${readLines ? `; ${lines} trace lines` : ''}`,
  });
  report[key] = {
    eventsPerSecond: perSecond,
    eventsPerCpuSecond: events / (cpuUsed / 1000),
    events,
    runs: RUNS,
    wallMs: wall,
    cpuMs: cpuUsed,
    medianMsPerSeed: median(perSeed),
  };
  return perSecond;
}

// events/s on `default`, single thread.
if (RUNS > 0) {
  const config = (seed: number) => presetConfig('default', seed, { engine: ENGINE });
  const node = eventsPerSecond(
    'eventsVerdictOnly',
    'events/s default, verdict only',
    (seed) => simulate(config(seed)),
    false,
  );
  eventsPerSecond(
    'eventsTraceWritten',
    'events/s default, trace written',
    (seed) => simulate(config(seed)),
    true,
  );
  const noble = eventsPerSecond(
    'eventsNoble',
    'events/s default, noble provider',
    (seed) => runSimulation(config(seed), { crypto: nobleProvider }),
    false,
  );
  rows.push({
    name: 'node:crypto / noble',
    value: `${(node / noble).toFixed(2)}×`,
    detail: 'events/s ratio of the two providers on the same runs (identical traces)',
  });
  report.providerRatio = node / noble;
}

// seeds/min on `default` with swarm.
if (SEEDS > 0) {
  const swarms: { seedsPerMinute: number; wallMs: number; failed: number; events: number }[] = [];
  for (let repeat = 0; repeat < SWARM_REPEATS; repeat += 1) {
    const summary = await runSwarm({
      seeds: SEEDS,
      firstSeed: 1,
      preset: 'default',
      engine: ENGINE,
      bugs: [],
      workers: WORKERS,
      outDir: path.join(ROOT, 'artifacts', 'bench-swarm-failures'),
      triage: null,
      progress: false,
      print: null,
    });
    swarms.push({
      seedsPerMinute: summary.seedsPerMinute,
      wallMs: summary.wallMs,
      failed: summary.failed,
      events: summary.events,
    });
  }
  const perMinute = median(swarms.map((s) => s.seedsPerMinute));
  const missed = perMinute < SWARM_FLOOR_PER_MINUTE;
  floorsMissed ||= missed;
  rows.push({
    name: `swarm default (${WORKERS} workers)`,
    value: `${perMinute.toFixed(0)} seeds/min`,
    detail: `median of ${SWARM_REPEATS} swarms of ${SEEDS} seeds (${swarms.map((s) => s.seedsPerMinute.toFixed(0)).join(', ')} seeds/min; ${swarms[0]?.failed ?? 0} seeds failed a property); floor ${SWARM_FLOOR_PER_MINUTE}/min ${missed ? 'MISSED' : 'met'}`,
  });
  report.swarm = {
    seedsPerMinute: perMinute,
    repeats: swarms,
    seeds: SEEDS,
    workers: WORKERS,
    floor: SWARM_FLOOR_PER_MINUTE,
    floorMet: !missed,
  };
}

// peak-day, on request: in a child process, so that its memory is measured alone and its heap may
// grow past Node's default limit (about 4 GiB) as the CLI's does.
if (args['peak-day']) {
  const figures = runPeakDayChild();
  const minutes = figures.wallMs / 60_000;
  const gib = figures.maxRssMiB / 1024;
  const missed = minutes > PEAK_DAY_FLOOR_MINUTES || gib > PEAK_DAY_FLOOR_GIB || figures.crashed !== null;
  floorsMissed ||= missed;
  rows.push({
    name: 'peak-day wall time',
    value: `${(figures.wallMs / 60_000).toFixed(1)} min`,
    detail: `seed 1, impl engine, summary trace; CPU ${(figures.cpuMs / 60_000).toFixed(1)} min; ${figures.events ?? 'n/a'} events; floor ${PEAK_DAY_FLOOR_MINUTES} min ${minutes > PEAK_DAY_FLOOR_MINUTES ? 'MISSED' : 'met'}${figures.crashed === null ? '' : `; CRASHED: ${figures.crashed}`}`,
  });
  rows.push({
    name: 'peak-day peak memory',
    value: `${(figures.maxRssMiB / 1024).toFixed(2)} GiB`,
    detail: `maxRSS of the child (heap limit ${HEAP_LIMIT_MIB} MiB); heap after the run ${figures.heapUsedMiB.toFixed(0)} MiB; floor ${PEAK_DAY_FLOOR_GIB} GiB ${gib > PEAK_DAY_FLOOR_GIB ? 'MISSED' : 'met'}`,
  });
  if (figures.crashed === null) {
    const show = (value: number | null): string => (value === null ? 'n/a' : String(value));
    const load = figures.load;
    rows.push({
      name: 'peak-day messages',
      value: show(figures.messagesSent),
      detail: `${show(figures.deliveries)} deliveries (every device of each recipient, and the sender's other devices) to ${PEAK_DAY_DEVICES} devices; ${figures.violations} violations; ${figures.converged ? 'converged' : 'NOT converged'}`,
    });
    rows.push({
      name: 'peak-day sessions',
      value: String(load.activeSessions),
      detail: `device records with a current session at the end (${load.initiatingSessions} not yet confirmed by a reply; ${load.archivedSessions} archived sessions besides)`,
    });
    rows.push({
      name: 'peak-day peak mailbox depth',
      value: String(load.peakMailboxDepth),
      detail: 'envelopes waiting in the fullest mailbox at any time',
    });
    const latency = figures.latency;
    rows.push({
      name: 'peak-day delivery latency',
      value: `p50 ${latency.p50} ms, p99 ${latency.p99} ms`,
      detail: `max ${latency.max} ms over ${latency.count} deliveries (simulated); the claim "under 1 second": p50 ${latency.p50 < 1000 ? 'holds' : 'fails'}, p99 ${latency.p99 < 1000 ? 'holds' : 'fails'}`,
    });
  }
  report.peakDay = figures;
}

process.stdout.write(
  `${formatTable(
    ['benchmark', 'value', 'detail'],
    rows.map((row) => [row.name, row.value, row.detail]),
  )}\n`,
);

// Merge into the results file: sections measured now replace the old ones, the rest are kept.
const measuredAt = new Date().toISOString();
const machine = {
  node: process.version,
  cpus: os.availableParallelism(),
  cpuModel: os.cpus()[0]?.model ?? null,
  loadAverage: os.loadavg(),
  engine: ENGINE,
};
const previous: Record<string, unknown> = existsSync(RESULTS)
  ? (JSON.parse(readFileSync(RESULTS, 'utf8')) as Record<string, unknown>)
  : {};
const merged: Record<string, unknown> = { ...previous };
for (const [section, value] of Object.entries(report)) merged[section] = { measuredAt, machine, value };
mkdirSync(path.dirname(RESULTS), { recursive: true });
writeFileSync(RESULTS, `${JSON.stringify(merged, null, 2)}\n`);
process.stdout.write(`results: ${path.relative(ROOT, RESULTS)}\n`);

if (floorsMissed) {
  process.stdout.write(
    'floor missed: profile with `node --cpu-prof --cpu-prof-dir=prof --import tsx bench/sim.bench.ts --seeds 0`\n',
  );
  if (!args['no-floors']) process.exitCode = 1;
}
