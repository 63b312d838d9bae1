import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const LAUNCHER = path.join(ROOT, 'cli', 'lockstep.js');
const TMP = mkdtempSync(path.join(os.tmpdir(), 'lockstep-cli-'));

afterAll(() => rmSync(TMP, { recursive: true, force: true }));

/** Run the real launcher, as `npx lockstep` does after `npm ci`. */
function lockstep(...args: readonly string[]): { status: number | null; stdout: string; stderr: string } {
  const run = spawnSync(process.execPath, [LAUNCHER, ...args], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: 240_000,
  });
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

describe('lockstep command line', () => {
  it('lists every command in --help', () => {
    const help = lockstep('--help');
    expect(help.status).toBe(0);
    for (const command of ['sim', 'replay', 'diff', 'shrink', 'swarm', 'check-determinism', 'attack']) {
      expect(help.stdout).toMatch(new RegExp(`^\\s+${command}\\b`, 'm'));
    }
  });

  it('has --help on every command; sim lists presets and planted bugs, swarm names its output folder', () => {
    for (const command of ['sim', 'replay', 'diff', 'shrink', 'swarm', 'check-determinism', 'attack']) {
      const help = lockstep(command, '--help');
      expect(help.status, command).toBe(0);
      expect(help.stdout, command).toContain('Usage: lockstep');
    }
    const sim = lockstep('sim', '--help').stdout;
    for (const text of [
      'smoke',
      'default',
      'peak-day',
      'deliver-twice',
      'server-drops-message',
      '--engine',
    ]) {
      expect(sim).toContain(text);
    }
    expect(lockstep('swarm', '--help').stdout).toContain('swarm-failures');
  });

  it('runs a population too large for the heap again in a child with a larger heap: same output, same trace', () => {
    // 450 devices are more than half of what cli/heap.ts expects a 64 MiB heap to hold, and far
    // less than the default heap does: only the small-heap run starts a child.
    const scenario = path.join(TMP, 'wide.json');
    writeFileSync(
      scenario,
      JSON.stringify({ preset: 'peak-day', workload: { users: 150, messages: 30, durationTicks: 60_000 } }),
    );
    const relaunched = path.join(TMP, 'wide-relaunched.ndjson');
    const direct = path.join(TMP, 'wide-direct.ndjson');
    const small = spawnSync(
      process.execPath,
      [
        '--max-old-space-size=64',
        LAUNCHER,
        'sim',
        '--scenario',
        scenario,
        '--engine',
        'impl',
        '--out',
        relaunched,
      ],
      { cwd: ROOT, encoding: 'utf8', timeout: 240_000 },
    );
    expect(small.stderr).toContain('running it again with --max-old-space-size=');
    expect(small.status).toBe(0);
    expect(small.stdout).toContain('result: PASS');
    const plain = lockstep('sim', '--scenario', scenario, '--engine', 'impl', '--out', direct);
    expect(plain.stderr).toBe('');
    expect(plain.status).toBe(0);
    expect(readFileSync(relaunched, 'utf8')).toBe(readFileSync(direct, 'utf8'));
  });

  it('runs a passing smoke seed, prints a summary and exits 0; the trace replays and diffs identical', () => {
    const trace = path.join(TMP, 'smoke.ndjson');
    const run = lockstep('sim', '--seed', '1', '--preset', 'smoke', '--engine', 'impl', '--out', trace);
    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
    expect(run.stdout).toContain('lockstep sim: seed 1, preset smoke, engine impl');
    expect(run.stdout).toContain('delivery latency');
    expect(run.stdout).toContain('result: PASS');
    expect(run.stdout).not.toContain('repro:');

    const replay = lockstep('replay', trace);
    expect(replay.status).toBe(0);
    expect(replay.stdout).toContain('reproduced byte for byte');

    expect(lockstep('diff', trace, trace)).toMatchObject({ status: 0 });
    const lines = readFileSync(trace, 'utf8').split('\n');
    lines[2] = (lines[2] ?? '').replace(/"t":(\d+)/, (_, t: string) => `"t":${Number(t) + 1}`);
    const tampered = path.join(TMP, 'tampered.ndjson');
    writeFileSync(tampered, lines.join('\n'));
    const diff = lockstep('diff', trace, tampered);
    expect(diff.status).toBe(1);
    expect(diff.stdout).toContain('first difference at line 3');
    const diverged = lockstep('replay', tampered);
    expect(diverged.status).toBe(3);
    expect(diverged.stderr).toContain('line 3');

    const header = JSON.parse(lines[0] ?? '{}') as { behaviourHash: string };
    const foreign = path.join(TMP, 'foreign.ndjson');
    writeFileSync(
      foreign,
      [JSON.stringify({ ...header, behaviourHash: 'e'.repeat(64) }), ...lines.slice(1)].join('\n'),
    );
    const refused = lockstep('replay', foreign);
    expect(refused.status).toBe(2);
    expect(refused.stderr).toContain('REFUSED');
    expect(refused.stderr).toContain('e'.repeat(64));
    expect(refused.stderr).toContain(header.behaviourHash);
  });

  it('exits 1 with a repro: line when a planted bug is caught', () => {
    const run = lockstep(
      'sim',
      '--seed',
      '1',
      '--preset',
      'smoke',
      '--engine',
      'impl',
      '--bug',
      'deliver-twice',
    );
    expect(run.status).toBe(1);
    expect(run.stdout).toContain('result: FAIL');
    expect(run.stdout).toMatch(
      /^repro: npx lockstep sim --seed 1 --preset smoke --engine impl --bug deliver-twice$/m,
    );
  });

  it('refuses an engine that is not available, an unknown bug and a bad scenario with exit 2', () => {
    const model = lockstep('sim', '--preset', 'smoke', '--engine', 'model');
    if (model.status !== 0 && model.status !== 1) {
      expect(model.status).toBe(2);
      expect(model.stderr).toContain("engine 'model' is not available");
    }
    const bug = lockstep('sim', '--preset', 'smoke', '--engine', 'impl', '--bug', 'no-such-bug');
    expect(bug.status).toBe(2);
    expect(bug.stderr).toContain("unknown planted bug 'no-such-bug'");
    const scenario = path.join(TMP, 'bad-scenario.json');
    writeFileSync(scenario, '{"users": "many"}');
    const bad = lockstep('sim', '--preset', 'smoke', '--engine', 'impl', '--scenario', scenario);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain('bad-scenario.json');
    expect(lockstep('sim', '--preset', 'nope').status).toBe(2);
  });

  it('check-determinism runs a seed twice and finds the same SHA-256', () => {
    const run = lockstep('check-determinism', '--seed', '2', '--preset', 'smoke', '--engine', 'impl');
    expect(run.status).toBe(0);
    expect(run.stdout).toContain('deterministic: the two traces are byte-identical');
  });

  it(
    'a smoke swarm of 30 seeds with drawn fault rates passes every property on both engines',
    { timeout: 240_000 },
    () => {
      const outDir = path.join(TMP, 'smoke-swarm');
      const run = lockstep(
        'swarm',
        '--seeds',
        '30',
        '--preset',
        'smoke',
        '--engine',
        'both',
        '--workers',
        '2',
        '--no-progress',
        '--out-dir',
        outDir,
      );
      expect(run.stdout).toContain('result: PASS (30 seeds)');
      expect(run.status).toBe(0);
    },
  );

  it('swarm runs seeds on worker threads, saves failing traces and writes a triage file', () => {
    const outDir = path.join(TMP, 'swarm');
    const triage = path.join(TMP, 'triage.json');
    const run = lockstep(
      'swarm',
      '--seeds',
      '2',
      '--preset',
      'smoke',
      '--engine',
      'impl',
      '--workers',
      '2',
      '--bug',
      'deliver-twice',
      '--out-dir',
      outDir,
      '--triage',
      triage,
    );
    expect(run.stderr).toBe('');
    expect(run.stdout).toContain('seeds/min');
    const report = JSON.parse(readFileSync(triage, 'utf8')) as {
      failed: number;
      properties: Record<string, { failures: number }>;
      failures: { trace: string | null; repro: string }[];
    };
    expect(report.failed).toBeGreaterThan(0);
    expect(run.status).toBe(1);
    expect(run.stdout).toContain('repro: npx lockstep sim --seed');
    for (const failure of report.failures) {
      expect(failure.trace).not.toBeNull();
      // The saved trace is the full trace of the seed: what its repro line writes, byte for byte.
      const replayed = path.join(TMP, 'swarm-repro.ndjson');
      const args = failure.repro.split(' ').slice(2);
      expect(lockstep(...args, '--out', replayed).status).toBe(1);
      expect(readFileSync(failure.trace ?? '', 'utf8')).toBe(readFileSync(replayed, 'utf8'));
    }
  });

  it('attack: --help lists the scenarios; a run prints the oracles’ findings, writes a trace that replays, and exits 0 on the expected outcome', () => {
    const help = lockstep('attack', '--help');
    expect(help.status).toBe(0);
    for (const name of [
      'session-revival',
      'server-injected-device',
      'initial-replay',
      'kci-signed-prekey',
      'clone-detection',
      'qr-phishing',
    ])
      expect(help.stdout).toContain(name);
    const trace = path.join(TMP, 'replay-attack.ndjson');
    const run = lockstep('attack', 'initial-replay', '--mode', 'spec', '--out', trace);
    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
    expect(run.stdout).toContain('attack succeeds (whitepaper expects: succeeds)');
    expect(run.stdout).toContain('replay      u1/1 accepted one initial message 2 times');
    expect(run.stdout).not.toMatch(/~mk[0-9a-f]{12}~/);
    const replay = lockstep('replay', trace);
    expect(replay.stdout).toContain('reproduced byte for byte');
    expect(replay.stdout).toContain('adversary initial-replay: 1 security oracle violation(s)');
    expect(lockstep('attack', 'no-such-attack').status).toBe(2);
    expect(lockstep('attack', 'initial-replay', '--out', trace).status).toBe(2);
  });

  it('swarm --adversary judges each seed by the security oracles and names the adversary in repro lines', () => {
    const outDir = path.join(TMP, 'adversary-failures');
    const run = lockstep(
      'swarm',
      '--seeds',
      '2',
      '--first-seed',
      '3',
      '--preset',
      'smoke',
      '--engine',
      'impl',
      '--workers',
      '1',
      '--adversary',
      '4',
      '--mode',
      'hardened',
      '--out-dir',
      outDir,
      '--no-progress',
    );
    expect(run.stderr).toBe('');
    expect(run.stdout).toContain('an adversary with 4 random actions (mode hardened');
    if (run.status === 1)
      expect(run.stdout).toMatch(/repro: npx lockstep sim .*--mode hardened --adversary 4/);
    else expect(run.status).toBe(0);
  });
});
