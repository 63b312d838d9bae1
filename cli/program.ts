/**
 * The `lockstep` command line (commander): `sim`, `replay`, `diff`, `shrink`, `swarm`,
 * `check-determinism` `viz` and `attack`. Every command parses its options, calls the simulator and prints; no
 * protocol logic lives here.
 *
 * Exit statuses: 0 success; 1 a check failed (a property was violated, the engines diverged, the
 * traces differ, the run is not deterministic); 2 a usage or input error (bad option, unreadable or
 * invalid file, a refused trace, an engine that is not available); 3 a trace did not reproduce.
 * @module
 */
import os from 'node:os';
import { Command, InvalidArgumentError, Option } from 'commander';
import { PLANTED_BUGS } from '../spec/bugs.js';
import type { SecurityMode } from '../spec/security-mode.js';
import type { EngineChoice } from '../simulator/api.js';
import { diffTraces } from '../simulator/diff.js';
import { engineAvailable } from '../simulator/engine.js';
import { parseTraceHeader, replayTrace } from '../simulator/replay.js';
import { DEFAULT_MAX_RUNS, firstFailedProperty, shrinkSchedule } from '../simulator/shrink.js';
import {
  FAULT_FLAGS,
  parseBugs,
  parsePreset,
  prepareRun,
  presetHelp,
  replayCommand,
  simCommand,
  type FaultFlag,
  type RunChoice,
} from './config.js';
import {
  attackCommand,
  attackHelpText,
  attackTable,
  formatAttackRun,
  MODES,
  parseScenario,
  runAttackCli,
} from './attack.js';
import { needsLargerHeap, rerunWithLargerHeap } from './heap.js';
import { CliError, readTraceLines, traceDigest, writeTraceLines } from './io.js';
import { CLI_CRYPTO, simulate, unavailableAsUsage } from './simulate.js';
import { formatSummary, formatVerdict, passed } from './summary.js';
import { DEFAULT_OUT_DIR, runSwarm } from './swarm.js';
import { vizAction, type VizOptions } from './viz.js';

const ENGINES: readonly EngineChoice[] = ['impl', 'model', 'both'];

/** Write a line to standard output. */
function say(text: string): void {
  process.stdout.write(`${text}\n`);
}

/** Write a line to standard error. */
function warn(text: string): void {
  process.stderr.write(`${text}\n`);
}

function parseInteger(name: string, min: number): (value: string) => number {
  return (value) => {
    const parsed = Number(value);
    if (!Number.isSafeInteger(parsed) || parsed < min) {
      throw new InvalidArgumentError(`${name} must be an integer ≥ ${min}, got '${value}'`);
    }
    return parsed;
  };
}

function parseRate(value: string): number {
  const parsed = Number(value);
  if (!Number.isFinite(parsed) || parsed < 0)
    throw new InvalidArgumentError(`expected a number ≥ 0, got '${value}'`);
  return parsed;
}

function collect(value: string, previous: readonly string[]): readonly string[] {
  return [...previous, value];
}

/** `sim --help` text: presets and planted bugs with their descriptions. */
function simHelpText(): string {
  const bugs = Object.entries(PLANTED_BUGS)
    .map(([name, description]) => `  ${name.padEnd(24)} ${description}`)
    .join('\n');
  return `\nPresets:\n${presetHelp()}\n\nPlanted bugs (--bug NAME, repeatable; read by both engines):\n${bugs}\n\nExit status: 0 all properties held, 1 a property failed or the engines diverged (a repro: line is printed), 2 bad input or an engine that is not available.`;
}

interface SimOptions {
  readonly seed: number;
  readonly preset: string;
  readonly scenario?: string;
  readonly engine: EngineChoice;
  readonly bug: readonly string[];
  readonly out?: string;
  readonly swarmFaults: boolean;
  readonly json: boolean;
  readonly adversary: number;
  readonly mode?: SecurityMode;
  readonly [flag: string]: unknown;
}

async function simAction(options: SimOptions): Promise<void> {
  const faultOverrides: Partial<Record<FaultFlag, number>> = {};
  for (const field of Object.keys(FAULT_FLAGS) as FaultFlag[]) {
    const value = options[field];
    if (typeof value === 'number') faultOverrides[field] = value;
  }
  const choice: RunChoice = {
    seed: options.seed,
    preset: parsePreset(options.preset),
    engine: options.engine,
    bugs: parseBugs(options.bug),
    scenario: options.scenario ?? null,
    swarmFaults: options.swarmFaults,
    faultOverrides,
    adversary: options.adversary,
    mode: options.mode ?? null,
  };
  const prepared = prepareRun(choice);
  if (needsLargerHeap(prepared.config)) {
    process.exitCode = await rerunWithLargerHeap();
    return;
  }
  const started = process.hrtime.bigint();
  const result = simulate(prepared.config, prepared.schedule);
  const wallMs = Number(process.hrtime.bigint() - started) / 1e6;
  if (options.out !== undefined) writeTraceLines(options.out, result.lines);
  if (options.json) {
    say(
      JSON.stringify({
        seed: choice.seed,
        passed: passed(result),
        violations: result.violations,
        divergence: result.divergence,
        counters: result.counters,
        latency: result.latency,
        load: result.load,
        repro: simCommand(choice),
      }),
    );
  } else {
    say(formatSummary(result, wallMs));
    if (options.out !== undefined)
      say(`trace: ${options.out} (${result.lines.length} lines; replay: ${replayCommand(options.out)})`);
  }
  if (!passed(result)) {
    say(`repro: ${simCommand(choice)}`);
    process.exitCode = 1;
  }
}

async function replayAction(file: string): Promise<void> {
  const lines = readTraceLines(file);
  if (await ranWithLargerHeap(lines)) return;
  const replay = unavailableAsUsage(() => replayTrace(lines, { crypto: CLI_CRYPTO }));
  if (replay.ok) {
    const header = replay.result.header;
    say(
      `replay: ${file} reproduced byte for byte (${lines.length} lines, format ${header.formatVersion}, behaviour ${header.behaviourHash.slice(0, 16)}…)`,
    );
    say(formatVerdict(replay.result));
    if (!passed(replay.result)) process.exitCode = 1;
    return;
  }
  if (replay.reason !== 'diverged') throw new CliError(`replay of ${file}: ${replay.message}`);
  warn(`replay: ${file}: ${replay.message}`);
  if (replay.firstDifference !== undefined) {
    warn(`  expected: ${replay.firstDifference.expected}`);
    warn(`  actual:   ${replay.firstDifference.actual}`);
  }
  process.exitCode = 3;
}

/**
 * When the trace's run needs a larger heap than this process has (cli/heap.ts), runs the command
 * again in a child with one, sets the exit status and answers true; otherwise false. A header
 * that does not parse is left to the command, which reports it.
 */
async function ranWithLargerHeap(lines: readonly string[]): Promise<boolean> {
  const parsed = parseTraceHeader(lines[0]);
  if (!parsed.ok || !needsLargerHeap(parsed.header.config)) return false;
  process.exitCode = await rerunWithLargerHeap();
  return true;
}

/** A line shortened for the terminal (a header line holds the whole config and schedule). */
function clip(line: string, max = 1_000): string {
  return line.length <= max ? line : `${line.slice(0, max)}… (${line.length - max} more characters)`;
}

function diffAction(fileA: string, fileB: string): void {
  const diff = diffTraces(readTraceLines(fileA), readTraceLines(fileB));
  if (diff.identical) {
    say(`identical: ${diff.lines} lines`);
    return;
  }
  say(`first difference at line ${diff.line}${diff.line === 1 ? ' (the header)' : ''}`);
  say(`  fields: ${diff.fields.join(', ')}`);
  say(`  ${fileA}: ${clip(diff.a ?? '<end of trace>')}`);
  say(`  ${fileB}: ${clip(diff.b ?? '<end of trace>')}`);
  process.exitCode = 1;
}

interface ShrinkOptions {
  readonly out: string;
  readonly property?: string;
  readonly maxRuns: number;
}

async function shrinkAction(file: string, options: ShrinkOptions): Promise<void> {
  const lines = readTraceLines(file);
  if (await ranWithLargerHeap(lines)) return;
  const parsed = parseTraceHeader(lines[0]);
  if (!parsed.ok) throw new CliError(`${file} is not a Lockstep trace: ${parsed.message}`);
  const replay = unavailableAsUsage(() => replayTrace(lines, { crypto: CLI_CRYPTO }));
  if (!replay.ok && replay.reason !== 'diverged')
    throw new CliError(`cannot shrink ${file}: ${replay.message}`);
  if (!replay.ok) warn(`shrink: warning: ${replay.message}; shrinking the re-run instead`);
  const rerun = replay.result;
  if (rerun === undefined) throw new CliError(`cannot shrink ${file}: it could not be re-run`);
  const property = options.property ?? firstFailedProperty(rerun);
  if (property === null) throw new CliError(`${file} is a passing run: nothing to shrink`, 1);
  const shrunk = shrinkSchedule(parsed.header.config, rerun.schedule, property, {
    maxRuns: options.maxRuns,
    crypto: CLI_CRYPTO,
  });
  if (!shrunk.ok) throw new CliError(`${file} does not fail '${property}' when re-run: nothing to shrink`, 1);
  writeTraceLines(options.out, shrunk.result.lines);
  say(
    `shrink: '${property}' still fails with ${shrunk.schedule.length} of ${shrunk.originalLength} schedule entries ` +
      `(${shrunk.runs} runs${shrunk.exhausted ? ', run budget exhausted: not proven minimal' : ', 1-minimal'}` +
      `${shrunk.crashes > 0 ? `, ${shrunk.crashes} candidate runs threw` : ''})`,
  );
  for (const entry of shrunk.schedule.slice(0, 50)) say(`  ${JSON.stringify(entry)}`);
  if (shrunk.schedule.length > 50) say(`  … ${shrunk.schedule.length - 50} more (see the trace header)`);
  say(`wrote ${options.out} (${shrunk.result.lines.length} lines)`);
  say(formatVerdict(shrunk.result));
  say(`repro: ${replayCommand(options.out)}`);
}

interface DeterminismOptions {
  readonly seed: number;
  readonly preset: string;
  readonly engine: EngineChoice;
  readonly bug: readonly string[];
}

async function determinismAction(options: DeterminismOptions): Promise<void> {
  const choice: RunChoice = {
    seed: options.seed,
    preset: parsePreset(options.preset),
    engine: options.engine,
    bugs: parseBugs(options.bug),
    scenario: null,
    swarmFaults: false,
    faultOverrides: {},
    adversary: 0,
    mode: null,
  };
  const prepared = prepareRun(choice);
  if (needsLargerHeap(prepared.config)) {
    process.exitCode = await rerunWithLargerHeap();
    return;
  }
  const first = simulate(prepared.config);
  const second = simulate(prepared.config);
  const digestA = traceDigest(first.lines);
  const digestB = traceDigest(second.lines);
  say(`run 1: ${first.lines.length} lines, sha256 ${digestA}`);
  say(`run 2: ${second.lines.length} lines, sha256 ${digestB}`);
  if (digestA === digestB) {
    say('deterministic: the two traces are byte-identical');
    return;
  }
  const diff = diffTraces(first.lines, second.lines);
  say('NOT deterministic: the traces differ');
  if (!diff.identical) {
    say(`  first difference at line ${diff.line} (fields: ${diff.fields.join(', ')})`);
    say(`  run 1: ${diff.a ?? '<end of trace>'}`);
    say(`  run 2: ${diff.b ?? '<end of trace>'}`);
  }
  say(
    `repro: npx lockstep check-determinism --seed ${choice.seed} --preset ${choice.preset} --engine ${choice.engine}`,
  );
  process.exitCode = 1;
}

interface AttackOptions {
  readonly mode?: SecurityMode;
  readonly seed: number;
  readonly engine: EngineChoice;
  readonly bug: readonly string[];
  readonly out?: string;
  readonly all: boolean;
}

function attackAction(name: string | undefined, options: AttackOptions): void {
  const cli = { seed: options.seed, engine: options.engine, bug: parseBugs(options.bug) };
  if (options.all) {
    if (name !== undefined) throw new CliError('give a scenario name or --all, not both');
    if (options.out !== undefined) throw new CliError('--out writes one run: name a scenario and a --mode');
    const table = attackTable(cli);
    say(table.text);
    if (table.mismatches > 0) {
      say(`${table.mismatches} outcome(s) differ from what the whitepaper expects`);
      process.exitCode = 1;
    }
    return;
  }
  if (name === undefined) throw new CliError(`name a scenario or give --all (see 'lockstep attack --help')`);
  const scenario = parseScenario(name);
  const modes = options.mode === undefined ? MODES : [options.mode];
  if (options.out !== undefined && modes.length > 1)
    throw new CliError('--out writes one run: choose it with --mode spec or --mode hardened');
  for (const mode of modes) {
    const run = runAttackCli(scenario, mode, cli);
    say(formatAttackRun(run));
    if (options.out !== undefined) {
      writeTraceLines(options.out, run.result.lines);
      say(`trace: ${options.out} (${run.result.lines.length} lines; replay: ${replayCommand(options.out)})`);
    }
    if (run.result.divergence !== null) {
      say(`divergence: ${JSON.stringify(run.result.divergence)}`);
      process.exitCode = 1;
    }
    if (run.outcome.succeeded !== run.expected) {
      say(`repro: ${attackCommand(scenario.name, mode, options.seed, options.engine)}`);
      process.exitCode = 1;
    }
  }
}

/** Build the `lockstep` program. */
export function buildProgram(): Command {
  const program = new Command('lockstep')
    .description(
      'Lockstep deterministic simulator: run seeds, replay and diff traces, shrink failures, swarm many seeds.',
    )
    .showHelpAfterError()
    .exitOverride((error) => {
      // Help and version exit 0; every other parse error is a usage error (2).
      process.exit(error.exitCode === 0 ? 0 : 2);
    });

  const engineOption = (): Option =>
    new Option('--engine <engine>', 'which engine backs the nodes; both = impl and model in lockstep')
      .choices(ENGINES)
      .default('both');
  const presetOption = (): Option =>
    new Option('--preset <name>', 'run configuration (see below)').default('default');
  const seedOption = (): Option =>
    new Option('--seed <n>', 'the seed every stream derives from')
      .argParser(parseInteger('--seed', 0))
      .default(1);
  const bugOption = (): Option =>
    new Option('--bug <name>', 'plant a bug (repeatable; see below)').argParser(collect).default([]);
  const adversaryOption = (): Option =>
    new Option(
      '--adversary <n>',
      'add an adversary taking n random actions drawn from the seed (network, malicious server, compromise, clone, KCI); judged by the security oracles',
    )
      .argParser(parseInteger('--adversary', 0))
      .default(0);
  const modeOption = (): Option =>
    new Option(
      '--mode <mode>',
      "the devices' security switches: spec (every hardening off, device lists from the server) or hardened (the presets' default)",
    ).choices([...MODES]);

  const sim = program
    .command('sim')
    .description('run one seed and print a summary; exit 1 with a repro: line when a check fails')
    .addOption(seedOption())
    .addOption(presetOption())
    .option(
      '--scenario <file>',
      'a scenario JSON file (checked against simulator/scenario.ts SCENARIO_SCHEMA); its preset, seed and fields win over --preset and --seed',
    )
    .addOption(engineOption())
    .addOption(bugOption())
    .option('--out <trace>', 'write the NDJSON trace to this file')
    .addOption(adversaryOption())
    .addOption(modeOption())
    .option('--swarm-faults', 'draw the fault rates from the seed, as swarm does', false)
    .option('--json', 'print the outcome as one JSON line instead of the summary', false);
  // Each flag's attribute name (--delay-mean → delayMean) is the FaultConfig field it overrides.
  for (const { flag, help } of Object.values(FAULT_FLAGS)) {
    sim.addOption(new Option(`${flag} <value>`, `override: ${help}`).argParser(parseRate));
  }
  sim.addHelpText('after', simHelpText()).action((options: SimOptions) => simAction(options));

  program
    .command('replay')
    .description('re-run a trace from its header and prove it reproduces byte for byte')
    .argument('<trace>', 'an NDJSON trace file')
    .addHelpText(
      'after',
      '\nRefuses (exit 2) a trace of another format version or behaviour hash, naming both values.\nExit status: 0 reproduced and passing, 1 reproduced and failing (the failure replays), 2 refused, 3 diverged (the first differing line is printed).',
    )
    .action((file: string) => replayAction(file));

  program
    .command('diff')
    .description('report the first line where two traces differ and which fields differ')
    .argument('<a>', 'first trace')
    .argument('<b>', 'second trace')
    .addHelpText('after', '\nExit status: 0 identical, 1 different.')
    .action((a: string, b: string) => diffAction(a, b));

  program
    .command('shrink')
    .description("minimise a failing trace's schedule (delta debugging) against its first violated property")
    .argument('<trace>', 'a failing NDJSON trace')
    .requiredOption('--out <trace>', 'where to write the minimal trace')
    .option(
      '--property <name>',
      "the property to keep failing (default: the trace's first violated property)",
    )
    .addOption(
      new Option('--max-runs <n>', 'bound on simulator runs')
        .argParser(parseInteger('--max-runs', 1))
        .default(DEFAULT_MAX_RUNS),
    )
    .addHelpText(
      'after',
      "\nThe minimal trace's header carries its explicit schedule, so `lockstep replay` reproduces it.\nExit status: 0 a minimal failing trace was written, 1 the trace does not fail (nothing to shrink), 2 bad input.",
    )
    .action((file: string, options: ShrinkOptions) => shrinkAction(file, options));

  program
    .command('swarm')
    .description('run many seeds on worker threads, fault rates drawn per seed; save failing traces')
    .addOption(new Option('--seeds <n>', 'how many seeds').argParser(parseInteger('--seeds', 1)).default(100))
    .addOption(
      new Option('--first-seed <n>', 'the first seed').argParser(parseInteger('--first-seed', 0)).default(1),
    )
    .addOption(presetOption())
    .addOption(engineOption())
    .addOption(bugOption())
    .addOption(
      new Option('--workers <k>', 'worker threads')
        .argParser(parseInteger('--workers', 1))
        .default(os.availableParallelism(), 'os.availableParallelism()'),
    )
    .option('--out-dir <dir>', 'folder for failing traces', DEFAULT_OUT_DIR)
    .addOption(adversaryOption())
    .addOption(modeOption())
    .option('--triage <file>', 'write property failure counts and sometimes-counters as JSON')
    .option('--no-progress', 'no progress bar')
    .addHelpText(
      'after',
      `\nPresets:\n${presetHelp()}\n\nFailing traces are saved as <out-dir>/seed-<N>.ndjson (default ./${DEFAULT_OUT_DIR}); each failing seed prints its repro: line.\nExit status: 0 every seed passed, 1 some seed failed.`,
    )
    .action(async (options: SwarmCliOptions) => {
      if (!engineAvailable(options.engine)) {
        throw new CliError(
          `engine '${options.engine}' is not available in this build; run with --engine impl`,
        );
      }
      const summary = await runSwarm({
        seeds: options.seeds,
        firstSeed: options.firstSeed,
        preset: parsePreset(options.preset),
        engine: options.engine,
        bugs: parseBugs(options.bug),
        adversary: options.adversary,
        mode: options.mode ?? null,
        workers: options.workers,
        outDir: options.outDir,
        triage: options.triage ?? null,
        progress: options.progress && process.stderr.isTTY === true,
        print: say,
      });
      if (summary.failed > 0) process.exitCode = 1;
    });

  program
    .command('attack')
    .description(
      'run a known-attack scenario with an adversary and print what the security oracles found (--all: the outcome table)',
    )
    .argument('[name]', 'the scenario (see below)')
    .addOption(
      new Option(
        '--mode <mode>',
        'security switches of every device (default: both modes, one after the other)',
      ).choices([...MODES]),
    )
    .addOption(seedOption())
    .addOption(
      new Option('--engine <engine>', 'which engine backs the nodes; both = impl and model in lockstep')
        .choices(ENGINES)
        .default('impl'),
    )
    .addOption(bugOption())
    .option('--out <trace>', 'write the NDJSON trace of the run (needs --mode)')
    .option('--all', 'run every scenario in both modes and print the outcome table', false)
    .addHelpText('after', attackHelpText())
    .action((name: string | undefined, options: AttackOptions) => attackAction(name, options));

  program
    .command('check-determinism')
    .description('run one seed twice and compare the SHA-256 of the two traces')
    .addOption(seedOption())
    .addOption(presetOption())
    .addOption(engineOption())
    .addOption(bugOption())
    .addHelpText(
      'after',
      `\nPresets:\n${presetHelp()}\n\nExit status: 0 byte-identical, 1 different (the first difference is printed).`,
    )
    .action((options: DeterminismOptions) => determinismAction(options));

  program
    .command('viz')
    .description('serve the browser visualiser on 127.0.0.1 and print its URL (opening TRACE when given)')
    .argument('[trace]', 'an NDJSON trace file to open')
    .addOption(
      new Option('--port <n>', 'port on 127.0.0.1 (0: any free port)')
        .argParser(parseInteger('--port', 0))
        .default(5178),
    )
    .option('--rebuild', 'rebuild the app even when a build exists', false)
    .option('--dist <dir>', 'serve this build folder instead of viz/dist')
    .action((trace: string | undefined, options: VizOptions) => vizAction(trace, options, say));

  return program;
}

interface SwarmCliOptions {
  readonly adversary: number;
  readonly mode?: SecurityMode;
  readonly seeds: number;
  readonly firstSeed: number;
  readonly preset: string;
  readonly engine: EngineChoice;
  readonly bug: readonly string[];
  readonly workers: number;
  readonly outDir: string;
  readonly triage?: string;
  readonly progress: boolean;
}
