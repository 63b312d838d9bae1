/**
 * The known attacks (simulator/attacks.ts) as regression scenarios: each runs in `spec` mode and in
 * `hardened` mode, and its outcome must be the one the whitepaper states ("Adversaries and known
 * attacks"). The outcome is decided by the security oracles from the run, with real keys and
 * ciphertexts; nothing here looks at a plaintext.
 */
import { readFileSync } from 'node:fs';
import { Ajv } from 'ajv';
import { describe, expect, it } from 'vitest';
import { nodeProvider } from '../spec/crypto/node.js';
import type { SecurityMode } from '../spec/security-mode.js';
import { ATTACKS, attackScenario, runAttack, type AttackRun } from './attacks.js';
import { drawRun, drawSwarmFaults } from './faults.js';
import { presetBody, presetConfig } from './presets.js';
import { replayTrace } from './replay.js';
import { runSimulation } from './run.js';
import { createStreams } from './streams.js';

const FULL = process.env.LOCKSTEP_FULL === '1';
const runs = new Map<string, AttackRun>();

/** One run per scenario and mode, shared by the tests below. */
function run(name: string, mode: SecurityMode): AttackRun {
  const key = `${name}|${mode}`;
  const cached = runs.get(key);
  if (cached !== undefined) return cached;
  const scenario = attackScenario(name);
  if (scenario === undefined) throw new Error(`no scenario ${name}`);
  const result = runAttack(scenario, { mode }, { crypto: nodeProvider });
  runs.set(key, result);
  return result;
}

describe('known attacks: the outcome the whitepaper states, in both modes', () => {
  for (const scenario of ATTACKS) {
    for (const mode of ['spec', 'hardened'] as const) {
      const expected = scenario.expected[mode] ? 'succeeds' : 'fails';
      it(`${scenario.name} (${scenario.source}) ${expected} in ${mode} mode`, () => {
        const r = run(scenario.name, mode);
        expect(r.result.divergence).toBeNull();
        expect(r.outcome.succeeded, r.outcome.summary).toBe(scenario.expected[mode]);
      });
    }
  }
});

describe.runIf(FULL)('known attacks on both engines in lockstep (npm run test:full)', () => {
  for (const scenario of ATTACKS)
    for (const mode of ['spec', 'hardened'] as const)
      it(`${scenario.name} in ${mode} mode: impl and model agree and the outcome is the same`, () => {
        const both = runAttack(scenario, { mode, engine: 'both' }, { crypto: nodeProvider });
        expect(both.result.divergence).toBeNull();
        expect(both.outcome).toEqual(run(scenario.name, mode).outcome);
      });
});

describe('what each attack does, as the oracles see it', () => {
  it('CJN23 session revival: in spec mode a message after healing is readable and a forgery is accepted; hardened, neither [P30, P15]', () => {
    const spec = run('session-revival', 'spec').report;
    expect(spec.violations.map((v) => v.oracle)).toEqual(
      expect.arrayContaining(['post-compromise-security', 'authentication']),
    );
    expect(Object.keys(spec.healed['A'] ?? {})).toHaveLength(2);
    const hardened = run('session-revival', 'hardened').report;
    expect(hardened.violations).toEqual([]);
    expect(hardened.forgeries.filter((f) => f.allowedBy === null)).toEqual([]);
  });

  it('a server-injected device receives copies only when lists are the server’s word [P32]', () => {
    const spec = run('server-injected-device', 'spec').report;
    expect(spec.leaks.some((l) => l.via === 'device:u0.9' && l.allowedBy === null)).toBe(true);
    expect(spec.violations.some((v) => v.oracle === 'signed-devices-only')).toBe(true);
    const hardened = run('server-injected-device', 'hardened').report;
    expect(hardened.leaks.filter((l) => l.via === 'device:u0.9')).toEqual([]);
    expect(hardened.refusals['TRUST_LIST_INVALID']).toBeGreaterThan(0);
  });

  it('an OPK-less initial message replayed under another sender address is accepted twice only in spec mode [P5, P34]', () => {
    expect(run('initial-replay', 'spec').report.replays).toEqual([{ at: 'u1/1', times: 2 }]);
    const hardened = run('initial-replay', 'hardened').report;
    expect(hardened.replays).toEqual([]);
    expect(hardened.violations).toEqual([]);
  });

  it('KCI with a stolen signed prekey: forgeries are accepted inside the window, which closes once the key is rotated out and its grace period ends, in both modes [P38, P8] [WP-LIFE-08]', () => {
    const scenario = attackScenario('kci-signed-prekey');
    const rotation = scenario?.rotation;
    if (rotation === undefined) throw new Error('the KCI scenario rotates signed prekeys');
    for (const mode of ['spec', 'hardened'] as const) {
      const r = run('kci-signed-prekey', mode).report;
      expect(r.violations, mode).toEqual([]);
      // The window, from the victim's own state: retired when a newer key was confirmed, closed
      // when the victim deleted the stolen key, at its first rotation timer after the grace period.
      const window = r.kciWindows.find((w) => w.label === 'B');
      if (window === undefined) throw new Error(`${mode}: no KCI window`);
      const { retiredAt, closedAt } = window;
      if (retiredAt === null || closedAt === null) throw new Error(`${mode}: the window never closed`);
      expect(retiredAt, mode).toBeGreaterThan(window.stolenAt);
      expect(closedAt - retiredAt, mode).toBeGreaterThanOrEqual(rotation.gracePeriod);
      expect(closedAt - retiredAt, mode).toBeLessThanOrEqual(rotation.gracePeriod + rotation.interval);
      // With real keys: every probe inside the window is accepted, every probe after it refused.
      const inside = r.kciProbes.filter((p) => p.t < closedAt);
      const after = r.kciProbes.filter((p) => p.t >= closedAt);
      expect(inside.length, mode).toBeGreaterThan(0);
      expect(after.length, mode).toBeGreaterThan(0);
      expect(
        inside.every((p) => p.accepted),
        mode,
      ).toBe(true);
      expect(
        after.some((p) => p.accepted),
        mode,
      ).toBe(false);
      // A probe after the retirement but within the grace period still gets through.
      expect(
        inside.some((p) => p.t > retiredAt),
        mode,
      ).toBe(true);
      // The forgery inside the window is accepted (a documented window); the one after it is refused.
      expect(r.forgeries.length, mode).toBe(1);
      expect(r.forgeries[0]?.allowedBy, mode).toBe('kci-window');
      expect(r.forgeries[0]?.t ?? Infinity, mode).toBeLessThan(closedAt);
      expect(r.refusals['UNKNOWN_SIGNED_PREKEY'], mode).toBe(1);
    }
  });

  it('without rotation the KCI window stays open to the end of the run [P38, WP-LIFE-07]', () => {
    const scenario = attackScenario('kci-signed-prekey');
    if (scenario === undefined) throw new Error('no KCI scenario');
    const { rotation: _ignored, ...unrotated } = scenario;
    const r = runAttack(unrotated, { mode: 'hardened' }, { crypto: nodeProvider }).report;
    expect(r.kciWindows.map((w) => w.closedAt)).toEqual([null]);
    expect(r.kciProbes.every((p) => p.accepted)).toBe(true);
    expect(r.forgeries.map((f) => f.allowedBy)).toEqual(['kci-window', 'kci-window']);
    expect(r.violations).toEqual([]);
  });

  it('clone detection: a detection event in hardened mode, none in spec mode, and never without a clone [P31]', () => {
    expect(run('clone-detection', 'spec').report.detections).toEqual([]);
    const hardened = run('clone-detection', 'hardened').report;
    expect(hardened.detections.length).toBeGreaterThan(0);
    expect(hardened.detections.every((d) => d.from === 'u0.1')).toBe(true);
    expect(hardened.violations.filter((v) => v.oracle === 'clone-detection-sound')).toEqual([]);
  });

  it('a device linked by QR phishing reads later messages; hardened, every device and contact saw the list change first [WP-TRUST-07, P32]', () => {
    for (const mode of ['spec', 'hardened'] as const) {
      const r = run('qr-phishing', mode).report;
      expect(r.leaks.length, mode).toBeGreaterThan(0);
      expect(
        r.leaks.every((l) => l.allowedBy === 'user-linked-device'),
        mode,
      ).toBe(true);
    }
    // Sesame learns a device from its first message (§3.4 step 1): no list event in spec mode.
    expect(run('qr-phishing', 'spec').report.violations.map((v) => v.oracle)).toContain(
      'device-list-visibility',
    );
    expect(run('qr-phishing', 'hardened').report.violations).toEqual([]);
  });

  it('forward secrecy, healing and post-revocation secrecy hold in both modes, with only documented windows [P15, P16, P33]', () => {
    for (const name of ['forward-secrecy', 'post-compromise', 'revoked-device'])
      for (const mode of ['spec', 'hardened'] as const) {
        const r = run(name, mode).report;
        const claims = ['forward-secrecy', 'post-compromise-security', 'post-revocation-secrecy'];
        expect(
          r.violations.filter((v) => claims.includes(v.oracle)),
          `${name} ${mode}`,
        ).toEqual([]);
        expect(
          r.leaks.every((l) => l.allowedBy !== null),
          `${name} ${mode}`,
        ).toBe(true);
      }
    expect(run('forward-secrecy', 'hardened').report.leaks.length).toBeGreaterThan(0);
  });
});

describe('attack traces', () => {
  const schema = JSON.parse(readFileSync(new URL('./trace.schema.json', import.meta.url), 'utf8')) as object;
  const validate = new Ajv({ allErrors: true, strict: false }).compile(schema);

  it('match the trace schema, show the attacker and the oracle lanes, and carry no plaintext after the header', () => {
    for (const name of ['session-revival', 'qr-phishing', 'kci-signed-prekey']) {
      const lines = run(name, 'spec').result.lines;
      for (const line of lines) {
        const ok = validate(JSON.parse(line));
        if (!ok) throw new Error(`${line.slice(0, 200)}\n${JSON.stringify(validate.errors)}`);
      }
      const events = lines.slice(1).map((l) => JSON.parse(l) as { node: string; kind: string });
      expect(
        events.some((e) => e.node === 'attacker' && e.kind === 'attack'),
        name,
      ).toBe(true);
      expect(
        events.some((e) => e.node === 'oracle' && e.kind === 'security'),
        name,
      ).toBe(true);
      expect(lines.slice(1).join('\n'), name).not.toMatch(/~mk[0-9a-f]{12}~/);
    }
  });

  it('replay byte for byte, adversary included', () => {
    const r = run('session-revival', 'spec');
    const replay = replayTrace(r.result.lines, { crypto: nodeProvider });
    expect(replay.ok, replay.ok ? '' : replay.message).toBe(true);
  });

  it('the adversary does not shift honest draws: up to its first action the trace equals the honest run', () => {
    const scenario = attackScenario('forward-secrecy');
    if (scenario === undefined) throw new Error('no scenario');
    const honest = runAttack({ ...scenario, steps: [] }, { mode: 'hardened' }, { crypto: nodeProvider });
    const attacked = run('forward-secrecy', 'hardened');
    const firstAttack = scenario.steps[0]?.t ?? 0;
    const strip = (lines: readonly string[]): string[] =>
      lines
        .slice(1)
        .filter((l) => {
          const e = JSON.parse(l) as { t: number; node: string };
          return e.t < firstAttack && e.node !== 'attacker';
        })
        .map((l) => l.replace(/"vc":\{[^}]*\}/, '').replace(/"seq":\d+/, ''));
    expect(strip(attacked.result.lines)).toEqual(strip(honest.result.lines));
  });
});

describe('swarm adversaries', () => {
  it(
    'in hardened mode every security oracle holds against 6 random adversary actions per seed (smoke seeds 1–12)',
    { timeout: 120_000 },
    () => {
      const problems: string[] = [];
      for (let seed = 1; seed <= 12; seed++) {
        const faults = drawSwarmFaults(seed, presetBody('smoke').faults);
        const config = {
          ...presetConfig('smoke', seed, { faults }),
          adversary: { name: 'swarm', steps: [], randomActions: 6 },
        };
        const result = runSimulation(config, { crypto: nodeProvider });
        const report = result.security;
        if (report === null) throw new Error('no security report');
        for (const v of report.violations) problems.push(`seed ${seed}: ${v.oracle}: ${v.message}`);
        if (result.divergence !== null) problems.push(`seed ${seed}: divergence`);
        const events = result.lines.slice(1).map((l) => JSON.parse(l) as { node: string; kind: string });
        expect(
          events.filter((e) => e.node === 'attacker' && e.kind === 'attack').length,
          `seed ${seed}`,
        ).toBeGreaterThan(0);
      }
      expect(problems).toEqual([]);
    },
  );

  it('draws the same adversary from the same seed, and its actions name installs that exist', () => {
    const config = { ...presetConfig('smoke', 5), adversary: { name: 'swarm', steps: [], randomActions: 6 } };
    const a = runSimulation(config, { crypto: nodeProvider });
    const b = runSimulation(config, { crypto: nodeProvider });
    expect(a.lines).toEqual(b.lines);
    const population = drawRun(config, createStreams(config.seed)).population;
    const attacks = a.lines
      .slice(1)
      .map((l) => JSON.parse(l) as { node: string; kind: string; data: { device?: string } })
      .filter((e) => e.node === 'attacker' && e.kind === 'attack' && e.data.device !== undefined);
    for (const e of attacks)
      expect(population.users).toContain(e.data.device?.slice(0, e.data.device.indexOf('/')));
  });

  it(
    'no honest run reports a clone unless a rollback forked a device (default seeds 1–2; smoke swarm seeds 1–20) [P31]',
    { timeout: 180_000 },
    () => {
      for (const seed of [1, 2]) {
        const result = runSimulation(presetConfig('default', seed), { crypto: nodeProvider });
        expect(result.counters['clone-detected'], `default seed ${seed}`).toBeUndefined();
        expect(result.security).toBeNull();
      }
      // A rollback fault makes a device send again from an old state: a real fork of its ratchet,
      // which WP-SES-20 may report; without one, an honest run never shows a detection.
      for (let seed = 1; seed <= 20; seed++) {
        const faults = drawSwarmFaults(seed, presetBody('smoke').faults);
        const result = runSimulation(presetConfig('smoke', seed, { faults }), { crypto: nodeProvider });
        if ((result.counters['faults.rollback'] ?? 0) === 0)
          expect(result.counters['clone-detected'], `smoke seed ${seed}`).toBeUndefined();
      }
    },
  );
});
