/**
 * `lockstep attack`: runs the known-attack scenarios of simulator/attacks.ts and prints what the
 * security oracles found (which messages the attacker could read, which forgeries were accepted,
 * when a compromised conversation healed, detection events), or with `--all` the outcome table of
 * every scenario in both modes. Output names messages by the label of their scenario text (`m9`),
 * devices and ticks; never a key or a ciphertext.
 * @module
 */
import type { BugName } from '../spec/bugs.js';
import type { SecurityMode } from '../spec/security-mode.js';
import type { EngineChoice } from '../simulator/api.js';
import { ATTACKS, runAttack, type AttackRun, type AttackScenario } from '../simulator/attacks.js';
import { CliError, shellQuote } from './io.js';
import { CLI_CRYPTO } from './simulate.js';

/** The security modes, in table order. */
export const MODES: readonly SecurityMode[] = ['spec', 'hardened'];

/** `attack --help` text: the scenarios. */
export function attackHelpText(): string {
  const names = ATTACKS.map((a) => `  ${a.name.padEnd(24)} ${a.title} [${a.source}]`).join('\n');
  return `\nScenarios:\n${names}\n\nModes: spec (every hardening off, device lists from the server), hardened (the default).\nExit status: 0 every outcome is the one the whitepaper expects, 1 some outcome differs, 2 bad input.`;
}

/** The scenario named `name`, or a usage error listing them. */
export function parseScenario(name: string): AttackScenario {
  const scenario = ATTACKS.find((a) => a.name === name);
  if (scenario === undefined)
    throw new CliError(`unknown attack '${name}' (attacks: ${ATTACKS.map((a) => a.name).join(', ')})`);
  return scenario;
}

/** The label of a scenario text (`m9 ~mk…~` → `m9`). */
function label(text: string): string {
  const cut = text.indexOf(' ~mk');
  return cut < 0 ? text : text.slice(0, cut);
}

/** The command that reproduces one run. */
export function attackCommand(name: string, mode: SecurityMode, seed: number, engine: EngineChoice): string {
  return ['npx', 'lockstep', 'attack', name, '--mode', mode, '--seed', String(seed), '--engine', engine]
    .map(shellQuote)
    .join(' ');
}

/** `succeeds` / `fails`. */
function verdict(succeeded: boolean): string {
  return succeeded ? 'succeeds' : 'fails';
}

/** The findings of one run, for the terminal. */
export function formatAttackRun(run: AttackRun): string {
  const r = run.report;
  const lines = [
    `lockstep attack ${run.scenario.name} (${run.scenario.title}; ${run.scenario.source}), mode ${run.mode}`,
    `  outcome     attack ${verdict(run.outcome.succeeded)} (whitepaper expects: ${verdict(run.expected)})`,
    `  found       ${run.outcome.summary}`,
  ];
  const byText = new Map<string, { allowed: Set<string>; via: Set<string>; to: Set<string> }>();
  for (const leak of r.leaks) {
    const entry = byText.get(leak.text) ?? { allowed: new Set(), via: new Set(), to: new Set() };
    entry.allowed.add(leak.allowedBy ?? 'VIOLATION');
    entry.via.add(leak.via);
    entry.to.add(`${leak.sender}→${leak.to}@t=${leak.t}`);
    byText.set(leak.text, entry);
  }
  lines.push(`  leaked      ${byText.size} of ${r.plaintexts} plaintexts`);
  for (const [text, e] of byText)
    lines.push(
      `    ${label(text).padEnd(22)} ${[...e.allowed].join(', ')} via ${[...e.via].join(', ')} (${[...e.to].join(', ')})`,
    );
  for (const [labelName, healed] of Object.entries(r.healed)) {
    const entries = Object.entries(healed);
    lines.push(
      `  healed      after compromise ${labelName}: ${entries.length === 0 ? 'never' : entries.map(([k, t]) => `${k} at t=${t}`).join(', ')}`,
    );
  }
  for (const f of r.forgeries)
    lines.push(
      `  forgery     ${f.to} accepted a message as ${f.claimed} at t=${f.t}: ${f.allowedBy ?? 'VIOLATION'}`,
    );
  for (const d of r.detections) lines.push(`  detection   ${d.at} reported a clone of ${d.from} at t=${d.t}`);
  for (const x of r.replays)
    lines.push(`  replay      ${x.at} accepted one initial message ${x.times} times`);
  for (const p of r.kciProbes)
    lines.push(`  kci probe   t=${p.t}: ${p.victim} ${p.accepted ? 'accepts' : 'refuses'} a forgery`);
  const refusals = Object.entries(r.refusals);
  if (refusals.length > 0)
    lines.push(`  refusals    ${refusals.map(([code, n]) => `${code}×${n}`).join(', ')}`);
  lines.push(
    `  oracles     ${r.violations.length === 0 ? 'every claim held' : `${r.violations.length} violation(s)`}`,
  );
  for (const v of r.violations.slice(0, 20)) lines.push(`    ${v.oracle}: ${v.message}`);
  if (r.violations.length > 20) lines.push(`    … ${r.violations.length - 20} more`);
  return lines.join('\n');
}

/** Options of `lockstep attack`. */
export interface AttackCliOptions {
  readonly mode?: SecurityMode;
  readonly seed: number;
  readonly engine: EngineChoice;
  readonly bug: readonly BugName[];
}

/** Runs one scenario in one mode with the CLI's crypto provider. */
export function runAttackCli(
  scenario: AttackScenario,
  mode: SecurityMode,
  options: AttackCliOptions,
): AttackRun {
  return runAttack(
    scenario,
    { mode, seed: options.seed, engine: options.engine, bugs: options.bug },
    { crypto: CLI_CRYPTO },
  );
}

/** Every scenario in both modes: one row per scenario. */
export function attackTable(options: AttackCliOptions): {
  readonly rows: readonly (readonly [AttackScenario, AttackRun, AttackRun])[];
  readonly text: string;
  readonly mismatches: number;
} {
  const rows = ATTACKS.map(
    (a) => [a, runAttackCli(a, 'spec', options), runAttackCli(a, 'hardened', options)] as const,
  );
  let mismatches = 0;
  const cell = (run: AttackRun): string => {
    const ok = run.outcome.succeeded === run.expected && run.result.divergence === null;
    if (!ok) mismatches++;
    const diverged = run.result.divergence === null ? '' : ' (ENGINES DIVERGED)';
    return `${verdict(run.outcome.succeeded)}${run.outcome.succeeded === run.expected ? '' : ' (UNEXPECTED)'}${diverged}`;
  };
  const lines = [`${'attack'.padEnd(24)} ${'spec'.padEnd(22)} ${'hardened'.padEnd(22)} oracle`];
  for (const [a, spec, hardened] of rows)
    lines.push(`${a.name.padEnd(24)} ${cell(spec).padEnd(22)} ${cell(hardened).padEnd(22)} ${a.oracle}`);
  for (const [a, spec, hardened] of rows) {
    lines.push('', `${a.name}:`);
    lines.push(`  spec      ${spec.outcome.summary}`);
    lines.push(`  hardened  ${hardened.outcome.summary}`);
  }
  return { rows, text: lines.join('\n'), mismatches };
}
