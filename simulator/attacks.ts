/**
 * The known attacks as regression scenarios (WHITEPAPER.md, "Adversaries and known attacks"; the
 * analysis digest, Part 2): each is a small population, an explicit honest schedule and a scripted
 * adversary (simulator/adversary.ts), run in `spec` mode (every hardening off, server-authoritative
 * device lists) and in `hardened` mode (the default). The security oracles (simulator/oracles.ts)
 * judge each run; {@link judgeAttack} turns their report into the scenario's outcome, and
 * {@link ATTACKS} records the outcome the whitepaper expects in each mode. `lockstep attack` runs
 * them; `npm test` asserts every expected outcome (simulator/attacks.test.ts); the whitepaper's
 * table is generated from the same runs (tools/attacks-table.ts).
 *
 * Beyond the six attacks of the issue, three scenarios exist to show the remaining oracles at work
 * (`forward-secrecy`, `post-compromise`, `revoked-device`): the claims hold in both modes, and a
 * planted bug makes each oracle fail (simulator/oracles.test.ts).
 * @module
 */
import type { BugName } from '../spec/bugs.js';
import { securityOptions, type SecurityMode } from '../spec/security-mode.js';
import {
  NO_FAULTS,
  type AttackStep,
  type SignedPreKeyRotationConfig,
  type EngineChoice,
  type OracleName,
  type ScheduleEntry,
  type SecurityReport,
  type SimConfig,
  type SimResult,
} from './api.js';
import { presetConfig } from './presets.js';
import { runSimulation, type RunOptions } from './run.js';

/** What a scenario's run showed: did the attack work, and the facts behind the verdict. */
export interface AttackOutcome {
  readonly succeeded: boolean;
  /** One line for the terminal and the whitepaper table (ticks, counts, addresses; no plaintext). */
  readonly summary: string;
}

/** A known attack as a scenario. */
export interface AttackScenario {
  readonly name: string;
  readonly title: string;
  /** The published source (digest tags) and the checkable properties it exercises. */
  readonly source: string;
  /** The oracle whose verdict decides the outcome. */
  readonly oracle: OracleName | 'kci-window' | 'clone-detection';
  readonly users: number;
  readonly devicesPerUser: number;
  readonly schedule: readonly ScheduleEntry[];
  readonly steps: readonly AttackStep[];
  /** Whether the attack succeeds in each mode (what the whitepaper claims, asserted by the tests). */
  readonly expected: Readonly<Record<SecurityMode, boolean>>;
  /** The whitepaper's word on the outcome in hardened mode when the attack still works there. */
  readonly limit: string | null;
  /** Signed-prekey rotation during the run (WP-LIFE-07/08); absent: devices never rotate. */
  readonly rotation?: SignedPreKeyRotationConfig;
  readonly judge: (report: SecurityReport) => AttackOutcome;
}

let marker = 0;
/** A send with a unique marker text (simulator/workload.ts markers: `~mk` + 12 hex + `~`). */
function send(t: number, from: string, to: string, label: string): ScheduleEntry {
  marker++;
  return { t, op: 'send', from, to: [to], text: `${label} ~mk${marker.toString(16).padStart(12, '0')}~` };
}

function violations(report: SecurityReport, oracle: OracleName): SecurityReport['violations'] {
  return report.violations.filter((v) => v.oracle === oracle);
}

function leakCount(report: SecurityReport, allowedBy: string | null): number {
  return new Set(report.leaks.filter((l) => l.allowedBy === allowedBy).map((l) => l.text)).size;
}

function refused(report: SecurityReport): string {
  const codes = Object.entries(report.refusals);
  return codes.length === 0 ? 'no refusal' : codes.map(([code, n]) => `${code}×${n}`).join(', ');
}

const A = 'u0/1';
const B = 'u1/1';

/** The scenarios, in the whitepaper table's order. */
export const ATTACKS: readonly AttackScenario[] = Object.freeze([
  {
    name: 'session-revival',
    title: 'Sesame session revival after one state compromise',
    source: 'CJN23 (P30, P15); Sesame §3.4 Activate',
    oracle: 'post-compromise-security',
    users: 2,
    devicesPerUser: 1,
    schedule: [
      send(4_000, A, 'u1', 'm1'),
      send(5_000, B, 'u0', 'm2'),
      send(6_000, A, 'u1', 'm3'),
      send(7_000, B, 'u0', 'm4'),
      // m5 is tampered with: B asks for a retry and A resends it on a second session (s2) with
      // fresh keys: the conversation heals.
      send(8_000, A, 'u1', 'm5'),
      send(10_000, B, 'u0', 'm6'),
      send(11_000, A, 'u1', 'm7'),
      send(12_000, B, 'u0', 'm8'),
      send(15_000, B, 'u0', 'm9'),
      send(16_000, A, 'u1', 'm10'),
      send(17_000, B, 'u0', 'm11'),
    ],
    steps: [
      { t: 7_500, op: 'compromise', device: A, label: 'A' },
      { t: 7_600, op: 'tamper', from: A, to: B },
      // After healing, the attacker uses the stolen first session: a message on a new chain of s1.
      { t: 13_000, op: 'clone', label: 'A', name: 'u0/1c', poll: false },
      { t: 13_100, op: 'send-as', device: 'u0/1c', to: ['u1'], text: 'from the stolen session' },
    ],
    expected: { spec: true, hardened: false },
    limit: null,
    judge: (r) => {
      const pcs = violations(r, 'post-compromise-security');
      const auth = violations(r, 'authentication');
      const healed = r.healed['A'] ?? {};
      const when = Object.values(healed);
      const healedAt = when.length === 0 ? 'never' : `t=${Math.min(...when)}`;
      return {
        succeeded: pcs.length > 0 || auth.length > 0,
        summary:
          pcs.length > 0 || auth.length > 0
            ? `healed at ${healedAt}, then the old session was revived: ${leakCount(r, null)} later message(s) readable, ${auth.length} forgery accepted`
            : `healed at ${healedAt}; the old session stayed dead (${refused(r)}); nothing sent after healing is readable`,
      };
    },
  },
  {
    name: 'server-injected-device',
    title: 'Server-injected device in a device list',
    source: 'Sesame §3.3 steps 4, 7; WBPE; MLS §16.10 (P32)',
    oracle: 'signed-devices-only',
    users: 2,
    devicesPerUser: 1,
    schedule: [
      send(4_000, B, 'u0', 'm1'),
      send(5_000, A, 'u1', 'm2'),
      send(6_000, B, 'u0', 'm3'),
      send(7_000, B, 'u0', 'm4'),
      send(8_000, A, 'u1', 'm5'),
    ],
    steps: [{ t: 5_500, op: 'inject-device', user: 'u0', deviceId: 9, until: 40_000 }],
    expected: { spec: true, hardened: false },
    limit: null,
    judge: (r) => {
      const leaked = new Set(r.leaks.filter((l) => l.via === 'device:u0.9').map((l) => l.text)).size;
      const signed = violations(r, 'signed-devices-only');
      return {
        succeeded: leaked > 0 || signed.length > 0,
        summary:
          leaked > 0 || signed.length > 0
            ? `${signed.length} device(s) encrypted to the made-up device u0.9; the attacker reads ${leaked} message(s)`
            : `the forged list was refused (${refused(r)}); nothing was encrypted to u0.9`,
      };
    },
  },
  {
    name: 'initial-replay',
    title: 'Replay of a PreKey message sent without a one-time prekey',
    source: 'KBB; X3DH §4.2 (P5, P34)',
    oracle: 'initial-replay',
    users: 2,
    devicesPerUser: 2,
    schedule: [send(4_000, A, 'u1', 'm1')],
    steps: [
      { t: 3_500, op: 'withhold-opks', user: 'u1', until: 40_000 },
      // The server stores the recorded initial message again, as if u0's other device sent it:
      // Sesame looks for the session in that device's record, finds none, and starts over.
      {
        t: 6_000,
        op: 'replay',
        to: B,
        nth: 0,
        type: 'prekey-no-opk',
        asSender: { userId: 'u0', deviceId: 2 },
      },
    ],
    expected: { spec: true, hardened: false },
    limit: null,
    judge: (r) => {
      const twice = r.replays.filter((x) => x.times > 1);
      return {
        succeeded: twice.length > 0,
        summary:
          twice.length > 0
            ? `${twice.map((x) => x.at).join(', ')} accepted the one initial message ${Math.max(...twice.map((x) => x.times))} times`
            : `the replay was refused (${refused(r)})`,
      };
    },
  },
  {
    name: 'kci-signed-prekey',
    title: 'Key-compromise impersonation with a stolen signed prekey',
    source: 'KBB; X3DH §4.6; Sesame §6.2 (P38, P8)',
    oracle: 'kci-window',
    users: 2,
    devicesPerUser: 1,
    schedule: [send(4_000, A, 'u1', 'm1'), send(5_000, B, 'u0', 'm2'), send(27_000, A, 'u1', 'm3')],
    // B's rotation timer fires 10 000 ticks apart from its link (t≈10 000, 20 000, …): the first
    // retires the stolen key once the server confirms its successor, the second, past the grace
    // period, deletes it (WP-LIFE-07/08).
    rotation: { interval: 10_000, gracePeriod: 5_000 },
    steps: [
      { t: 6_000, op: 'compromise', device: B, label: 'B' },
      { t: 6_500, op: 'kci-probe', label: 'B', as: A },
      { t: 7_000, op: 'forge-kci', label: 'B', as: A, text: 'claims to be u0/1' },
      // Retired but within its grace period: still usable, so still forgeable.
      { t: 12_000, op: 'kci-probe', label: 'B', as: A },
      { t: 25_000, op: 'kci-probe', label: 'B', as: A },
      { t: 26_000, op: 'forge-kci', label: 'B', as: A, text: 'claims to be u0/1 again' },
      { t: 30_000, op: 'kci-probe', label: 'B', as: A },
    ],
    expected: { spec: true, hardened: true },
    limit:
      'documented limit (WP-LIFE-08): the window stays open until the stolen signed prekey is retired by a rotation and its grace period has ended; from then on forgeries with it are refused (UNKNOWN_SIGNED_PREKEY)',
    judge: (r) => {
      const accepted = r.forgeries.filter((f) => f.allowedBy === 'kci-window').length;
      const open = r.kciProbes.filter((p) => p.accepted);
      const shut = r.kciProbes.filter((p) => !p.accepted);
      const window = r.kciWindows.find((w) => w.label === 'B');
      const outside = violations(r, 'authentication').length;
      const refusedAfter = r.refusals['UNKNOWN_SIGNED_PREKEY'] ?? 0;
      const closed =
        window?.closedAt === null || window === undefined
          ? 'window still open at the end'
          : `signed prekey ${window.signedPreKeyIds.join(', ')} retired at t=${window.retiredAt ?? '?'}, window closed at t=${window.closedAt}; then ${refusedAfter} forgery refused (UNKNOWN_SIGNED_PREKEY)`;
      return {
        succeeded: accepted > 0 || open.length > 0,
        summary: `${accepted} forgery accepted as u0.1; probes accepted at ${open.map((p) => `t=${p.t}`).join(', ') || 'none'}${shut.length > 0 ? `, refused at ${shut.map((p) => `t=${p.t}`).join(', ')}` : ''}; ${closed}${outside > 0 ? `; ${outside} forgery outside the window` : ''}`,
      };
    },
  },
  {
    name: 'clone-detection',
    title: 'A clone and the original both send',
    source: 'CFKN20; CJN23 clone detection (P31)',
    oracle: 'clone-detection',
    users: 2,
    devicesPerUser: 1,
    schedule: [
      send(4_000, A, 'u1', 'm1'),
      send(5_000, B, 'u0', 'm2'),
      send(6_000, A, 'u1', 'm3'),
      send(7_000, B, 'u0', 'm4'),
      send(9_000, A, 'u1', 'm5'),
      send(11_000, B, 'u0', 'm6'),
      send(12_000, A, 'u1', 'm7'),
      send(14_000, B, 'u0', 'm8'),
      send(15_000, A, 'u1', 'm9'),
    ],
    steps: [
      { t: 7_500, op: 'compromise', device: A, label: 'A' },
      { t: 8_000, op: 'clone', label: 'A', name: 'u0/1c', poll: false },
      { t: 9_500, op: 'send-as', device: 'u0/1c', to: ['u1'], text: 'clone 1' },
      { t: 12_500, op: 'send-as', device: 'u0/1c', to: ['u1'], text: 'clone 2' },
    ],
    expected: { spec: true, hardened: false },
    limit: null,
    judge: (r) => {
      const first = r.detections[0];
      const accepted = r.forgeries.length;
      return {
        succeeded: first === undefined,
        summary:
          first === undefined
            ? `no detection; ${accepted} clone message(s) accepted as u0.1`
            : `${first.at} detected a clone of ${first.from} at t=${first.t} (${r.detections.length} detection event(s)); ${accepted} clone message(s) accepted before`,
      };
    },
  },
  {
    name: 'qr-phishing',
    title: 'Malicious device linked by QR phishing',
    source: 'WBPE; MITRE T1676 (P32, WP-TRUST-07)',
    oracle: 'device-list-visibility',
    users: 2,
    devicesPerUser: 2,
    schedule: [
      send(4_000, B, 'u0', 'm1'),
      send(9_000, B, 'u0', 'm2'),
      send(10_000, 'u0/2', 'u1', 'm3'),
      send(11_000, A, 'u1', 'm4'),
    ],
    steps: [
      { t: 5_000, op: 'phish-link', user: 'u0', name: 'u0/9' },
      // The phished device writes first: a contact that learns devices from messages adds it.
      { t: 8_000, op: 'send-as', device: 'u0/9', to: ['u1'], text: 'hello from the new device' },
    ],
    expected: { spec: true, hardened: false },
    limit:
      'a device the user links is a device of the account and reads what is sent to it after the link (documented); the defence is visibility: every device and contact sees a device-list change before anything is encrypted to it, and can revoke it',
    judge: (r) => {
      const hidden = violations(r, 'device-list-visibility');
      const read = leakCount(r, 'user-linked-device');
      return {
        succeeded: hidden.length > 0,
        summary: `the linked device reads ${read} later message(s); ${hidden.length === 0 ? 'every device and contact saw a device-list change before encrypting to it' : `${hidden.length} device(s) encrypted to it with no device-list change first`}`,
      };
    },
  },
  {
    name: 'forward-secrecy',
    title: 'Compromise after a conversation: earlier messages',
    source: 'DR §6.1; CDGGS (P16)',
    oracle: 'forward-secrecy',
    users: 2,
    devicesPerUser: 1,
    schedule: [
      send(4_000, A, 'u1', 'm1'),
      send(5_000, B, 'u0', 'm2'),
      send(6_000, A, 'u1', 'm3'),
      send(7_000, A, 'u1', 'm4'),
      send(9_000, B, 'u0', 'm5'),
    ],
    steps: [{ t: 8_000, op: 'compromise', device: A, label: 'A' }],
    expected: { spec: false, hardened: false },
    limit: null,
    judge: (r) => {
      const fs = violations(r, 'forward-secrecy');
      return {
        succeeded: fs.length > 0,
        summary:
          fs.length > 0
            ? `${fs.length} message(s) sent or read before the compromise are readable`
            : `nothing sent or read before the compromise is readable (${leakCount(r, 'not-yet-healed')} later message(s) readable until healing)`,
      };
    },
  },
  {
    name: 'post-compromise',
    title: 'Compromise, then a DH round trip with fresh keys',
    source: 'DR §6.2; CDGGS (P15)',
    oracle: 'post-compromise-security',
    users: 2,
    devicesPerUser: 1,
    schedule: [
      send(4_000, A, 'u1', 'm1'),
      send(5_000, B, 'u0', 'm2'),
      send(7_000, A, 'u1', 'm3'),
      send(8_000, B, 'u0', 'm4'),
      send(9_000, A, 'u1', 'm5'),
      send(10_000, B, 'u0', 'm6'),
      send(11_000, A, 'u1', 'm7'),
    ],
    steps: [{ t: 6_000, op: 'compromise', device: A, label: 'A' }],
    expected: { spec: false, hardened: false },
    limit: null,
    judge: (r) => {
      const pcs = violations(r, 'post-compromise-security');
      const healed = Object.entries(r.healed['A'] ?? {})
        .map(([k, t]) => `${k} at t=${t}`)
        .join(', ');
      return {
        succeeded: pcs.length > 0,
        summary:
          pcs.length > 0
            ? `${pcs.length} message(s) sent after healing are readable`
            : `healed ${healed || 'never'}; ${leakCount(r, 'not-yet-healed')} message(s) before healing readable, none after`,
      };
    },
  },
  {
    name: 'revoked-device',
    title: 'A revoked device whose keys were stolen',
    source: 'Sesame §3.3; WA21 companion removal (P33)',
    oracle: 'post-revocation-secrecy',
    users: 2,
    devicesPerUser: 2,
    schedule: [
      send(4_000, B, 'u0', 'm1'),
      { t: 5_500, op: 'link', primary: A, device: 'u0/3' },
      { t: 7_000, op: 'revoke', primary: A, device: 'u0/2' },
      // The device linked meanwhile writes to u1, whose device fetches u0's list to hear it and so
      // learns of the removal from the list (a refusal would teach it only after encrypting).
      send(8_500, 'u0/3', 'u1', 'm2'),
      send(9_500, B, 'u0', 'm3'),
      send(11_000, A, 'u1', 'm4'),
    ],
    steps: [{ t: 5_000, op: 'compromise', device: 'u0/2', label: 'R' }],
    expected: { spec: false, hardened: false },
    limit: null,
    judge: (r) => {
      const revoked = violations(r, 'post-revocation-secrecy');
      return {
        succeeded: revoked.length > 0,
        summary:
          revoked.length > 0
            ? `${revoked.length} message(s) encrypted after the removal was known are readable with the revoked device's keys`
            : 'nothing encrypted after the removal was known is readable with the revoked device’s keys',
      };
    },
  },
]);

/** The scenario named `name`, or undefined. */
export function attackScenario(name: string): AttackScenario | undefined {
  return ATTACKS.find((a) => a.name === name);
}

/** Choices for one attack run. */
export interface AttackOptions {
  readonly mode: SecurityMode;
  readonly seed?: number;
  readonly engine?: EngineChoice;
  readonly bugs?: readonly BugName[];
}

/** Ticks every scenario runs for (its fault phase; the liveness phase follows). */
export const ATTACK_DURATION = 40_000;

/** The complete configuration of a scenario run: a fault-free `quiet` base, the mode's switches, the adversary. */
export function attackConfig(scenario: AttackScenario, options: AttackOptions): SimConfig {
  const base = presetConfig('quiet', options.seed ?? 1, {
    engine: options.engine ?? 'impl',
    bugs: options.bugs ?? [],
    faults: NO_FAULTS,
    security: securityOptions(options.mode),
    ...(scenario.rotation === undefined ? {} : { signedPreKeyRotation: scenario.rotation }),
    workload: {
      users: scenario.users,
      devicesPerUser: scenario.devicesPerUser,
      contactsPerUser: 1,
      messages: 0,
      durationTicks: ATTACK_DURATION,
    },
  });
  return { ...base, adversary: { name: scenario.name, steps: scenario.steps, randomActions: 0 } };
}

/** The result of one scenario run. */
export interface AttackRun {
  readonly scenario: AttackScenario;
  readonly mode: SecurityMode;
  readonly result: SimResult;
  readonly report: SecurityReport;
  readonly outcome: AttackOutcome;
  /** The outcome the whitepaper expects in this mode. */
  readonly expected: boolean;
}

/** Judges a finished run of `scenario`. */
export function judgeAttack(scenario: AttackScenario, mode: SecurityMode, result: SimResult): AttackRun {
  const report = result.security;
  if (report === null) throw new Error(`${scenario.name}: the run had no adversary`);
  return {
    scenario,
    mode,
    result,
    report,
    outcome: scenario.judge(report),
    expected: scenario.expected[mode],
  };
}

/** Runs `scenario` in one mode. */
export function runAttack(scenario: AttackScenario, options: AttackOptions, run: RunOptions = {}): AttackRun {
  const config = attackConfig(scenario, options);
  const result = runSimulation(config, { ...run, schedule: scenario.schedule });
  return judgeAttack(scenario, options.mode, result);
}
