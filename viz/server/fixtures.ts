/**
 * Example traces for the visualiser (Node only), made from the current sources so they can never
 * go stale: traces depend on the behaviour hash of spec/, impl/, model/ and simulator/, so none is
 * committed. The browser tests generate them in their setup; `npm run viz:fixtures` writes them to
 * viz/fixtures/ (git-ignored), where `npm run viz` lists them on its start page.
 *
 * - `smoke`: `lockstep sim --seed 1 --preset smoke --engine both` (model states recorded);
 * - `default`: `lockstep sim --seed 1 --preset default --engine impl` (a link, a revocation, a
 *   reinstall, faults of every kind);
 * - `bug-ignore-device-removal`: the same with a planted bug that the revocation invariant catches;
 * - `attack-session-revival`: `lockstep attack session-revival --mode spec` — the CJN23 Sesame
 *   session revival succeeding, with the attacker, its clone of u0/1 and the oracles' findings;
 * - `peak-day-small`: the `peak-day` preset scaled down to 20 users and 150 messages (a summary
 *   trace: hourly counters), made through the library because the CLI has no workload flags;
 * - {@link tileTrace}: a large trace for the performance test, made by repeating a real trace.
 * @module
 */
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { presetConfig } from '../../simulator/presets.js';
import { runSimulation } from '../../simulator/run.js';
import { nodeProvider } from '../../spec/crypto/node.js';

/** The repository root. */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** Where `npm run viz:fixtures` writes (git-ignored). */
export const FIXTURES_DIR = path.join(ROOT, 'viz', 'fixtures');

/** One example made by the command line. */
export interface CliFixture {
  readonly name: string;
  readonly description: string;
  /** The `lockstep` command that makes it; `sim` when absent. */
  readonly command?: 'sim' | 'attack';
  /** Arguments of the command (without `--out`). */
  readonly args: readonly string[];
}

/** The examples the command line makes. */
export const CLI_FIXTURES: readonly CliFixture[] = [
  {
    name: 'smoke',
    description: 'smoke preset, seed 1, impl and model in lockstep (machine states recorded)',
    args: ['--seed', '1', '--preset', 'smoke', '--engine', 'both'],
  },
  {
    name: 'default',
    description: 'default preset, seed 1: a link, a revocation, a reinstall, every kind of fault',
    args: ['--seed', '1', '--preset', 'default', '--engine', 'impl'],
  },
  {
    name: 'bug-ignore-device-removal',
    description: 'default preset, seed 1, with a planted bug: a sender keeps encrypting to a revoked device',
    args: ['--seed', '1', '--preset', 'default', '--engine', 'impl', '--bug', 'ignore-device-removal'],
  },
  {
    name: 'attack-session-revival',
    description:
      'lockstep attack session-revival in spec mode: a stolen state, a clone and a revived old session (attacker lane)',
    command: 'attack',
    args: ['session-revival', '--mode', 'spec', '--seed', '1'],
  },
];

/** Output of one `lockstep` run. */
export interface CliRun {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `node cli/lockstep.js ARGS` from the repository root. */
export function runCli(args: readonly string[]): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(ROOT, 'cli', 'lockstep.js'), ...args], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/** Makes a CLI example at `out` (a failing run, exit status 1, is expected for a planted bug). */
export async function makeCliFixture(fixture: CliFixture, out: string): Promise<CliRun> {
  const command = fixture.command ?? 'sim';
  const run = await runCli([command, ...fixture.args, '--out', out]);
  if (run.code !== 0 && run.code !== 1) {
    throw new Error(`lockstep ${command} ${fixture.args.join(' ')} failed (${run.code}): ${run.stderr}`);
  }
  return run;
}

/** The scaled-down peak-day summary trace, as lines. */
export function peakDaySmall(): readonly string[] {
  const config = presetConfig('peak-day', 1, { engine: 'impl', workload: { users: 20, messages: 150 } });
  return runSimulation(config, { crypto: nodeProvider }).lines;
}

/**
 * A trace of at least `events` events made by repeating a real trace's events: copy k is shifted
 * in time, sequence number and vector clock (every node's count grows by its events per copy), so
 * the result is ordered and its clocks stay consistent. Abstract-state deltas are repeated as they
 * are, so states rebuilt from the copies are not a real run's; this trace measures loading and
 * scrolling, nothing else.
 */
export function tileTrace(lines: readonly string[], events: number): string[] {
  const [header, ...body] = lines;
  if (header === undefined || body.length === 0) throw new Error('cannot tile an empty trace');
  const parsed = body.map(
    (line) => JSON.parse(line) as { t: number; seq: number; node: string; vc: Record<string, number> },
  );
  const perNode = new Map<string, number>();
  for (const e of parsed) perNode.set(e.node, (perNode.get(e.node) ?? 0) + 1);
  const span = (parsed.at(-1)?.t ?? 0) + 1_000;
  const seqSpan = Math.max(...parsed.map((e) => e.seq)) + 1;
  const out = [header];
  for (let copy = 0; out.length - 1 < events; copy++) {
    for (let i = 0; i < body.length; i++) {
      const e = parsed[i];
      const line = body[i];
      if (e === undefined || line === undefined) continue;
      if (copy === 0) {
        out.push(line);
        continue;
      }
      const vc: Record<string, number> = {};
      for (const [node, count] of Object.entries(e.vc)) vc[node] = count + copy * (perNode.get(node) ?? 0);
      // Rewrite only t, seq and vc; the rest of the line is kept byte for byte.
      const shifted = line
        .replace(/,"seq":\d+,"t":\d+,"type":"event","vc":\{[^}]*\}\}$/, '')
        .concat(
          `,"seq":${e.seq + copy * seqSpan},"t":${e.t + copy * span},"type":"event","vc":${JSON.stringify(sortKeys(vc))}}`,
        );
      out.push(shifted);
    }
  }
  return out;
}

function sortKeys(record: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(record).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** Trace text as a file holds it (cli/io.ts `traceText`). */
export function traceText(lines: readonly string[]): string {
  return lines.length === 0 ? '' : `${lines.join('\n')}\n`;
}

/** `npm run viz:fixtures`: writes every example to viz/fixtures/. */
async function main(): Promise<void> {
  mkdirSync(FIXTURES_DIR, { recursive: true });
  const index: { name: string; description: string; file: string }[] = [];
  for (const fixture of CLI_FIXTURES) {
    const file = `${fixture.name}.ndjson`;
    process.stdout.write(
      `lockstep ${fixture.command ?? 'sim'} ${fixture.args.join(' ')} → viz/fixtures/${file}\n`,
    );
    await makeCliFixture(fixture, path.join(FIXTURES_DIR, file));
    index.push({ name: fixture.name, description: fixture.description, file });
  }
  process.stdout.write(
    'peak-day (20 users, 150 messages, summary trace) → viz/fixtures/peak-day-small.ndjson\n',
  );
  writeFileSync(path.join(FIXTURES_DIR, 'peak-day-small.ndjson'), traceText(peakDaySmall()));
  index.push({
    name: 'peak-day-small',
    description: 'peak-day preset scaled to 20 users and 150 messages: a summary trace (hourly counters)',
    file: 'peak-day-small.ndjson',
  });
  writeFileSync(path.join(FIXTURES_DIR, 'index.json'), `${JSON.stringify(index, null, 2)}\n`);
  process.stdout.write('done: `npm run viz` lists them on its start page\n');
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((error: unknown) => {
    process.stderr.write(`viz:fixtures: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  });
}
