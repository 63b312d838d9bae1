/**
 * The `repro:` line of a run: the shortest command that reproduces it. A run whose configuration is
 * exactly a preset's (for its seed, engine and bugs, with the preset's fault rates, swarm-drawn
 * rates, or overridden rates) is `npx lockstep sim --seed N --preset P --engine E
 * [--swarm-faults] [--<fault> X …] [--bug B …]`; anything else (an explicit schedule, a scenario
 * file) is `npx lockstep replay FILE`, FILE being the saved trace.
 * @module
 */
import type { FaultConfig, SimConfig } from './api.js';
import { canonicalJson } from './canonical.js';
import { drawSwarmFaults } from './faults.js';
import { isPresetName, presetBody, presetConfig } from './presets.js';

/** The command-line flag of each fault rate (cli/config.ts uses the same names). */
export const FAULT_FLAG_NAMES: Readonly<Record<keyof FaultConfig, string>> = Object.freeze({
  loss: '--loss',
  duplication: '--duplication',
  delayMean: '--delay-mean',
  partitions: '--partitions',
  offline: '--offline',
  serverCrashes: '--server-crashes',
  stateLoss: '--state-loss',
  rollback: '--rollback',
  corruption: '--corruption',
});

/** The file name a saved trace of this run gets by default. */
export function traceFileName(config: SimConfig): string {
  return `lockstep-${config.preset ?? 'run'}-${config.seed}.ndjson`;
}

/** The command that reproduces a run of `config` (explicit: the run had an explicit schedule). */
export function reproCommand(config: SimConfig, explicit: boolean): string {
  const replay = `npx lockstep replay ${traceFileName(config)}`;
  if (explicit || config.preset === null || !isPresetName(config.preset)) return replay;
  const base = presetConfig(config.preset, config.seed, {
    engine: config.engine,
    bugs: config.bugs,
    traceMode: config.traceMode,
  });
  const withoutFaults = (c: SimConfig): string => canonicalJson({ ...c, faults: null });
  if (withoutFaults(base) !== withoutFaults(config)) return replay;
  const parts = ['npx', 'lockstep', 'sim', '--seed', String(config.seed), '--preset', config.preset];
  // Always explicit: the CLI's default engine (`both`) is not every run's.
  parts.push('--engine', config.engine);
  if (config.traceMode !== presetBody(config.preset).traceMode) return replay;
  const presetFaults = presetBody(config.preset).faults;
  const swarm = drawSwarmFaults(config.seed, presetFaults);
  let reference: FaultConfig = presetFaults;
  if (
    canonicalJson(config.faults) !== canonicalJson(presetFaults) &&
    canonicalJson(config.faults) === canonicalJson(swarm)
  ) {
    parts.push('--swarm-faults');
    reference = swarm;
  }
  for (const key of Object.keys(FAULT_FLAG_NAMES) as (keyof FaultConfig)[]) {
    const value = config.faults[key] ?? 0;
    if (value !== (reference[key] ?? 0)) parts.push(FAULT_FLAG_NAMES[key], String(value));
  }
  for (const bug of config.bugs) parts.push('--bug', bug);
  return parts.join(' ');
}
