/**
 * A simulator run started from the page, and the command line that makes the same trace. The page
 * builds its configuration exactly as `lockstep sim` does (cli/config.ts `prepareRun`): the preset's
 * configuration for the seed, engine and planted bugs, with the fault rates the user overrode laid
 * over the preset's. Same configuration, same seed, same sources ⇒ the same trace bytes, whichever
 * crypto provider computes them (simulator/determinism.test.ts); the browser tests check it against
 * the CLI.
 * @module
 */
import { isBugName, type BugName } from '../../../spec/bugs.js';
import type { EngineChoice, FaultConfig, SimConfig } from '../../../simulator/api.js';
import { isPresetName, presetBody, presetConfig, type PresetName } from '../../../simulator/presets.js';
import { FAULT_FLAG_NAMES } from '../../../simulator/repro.js';

/** What the run form asks for. */
export interface PageRun {
  readonly seed: number;
  readonly preset: PresetName;
  readonly engine: EngineChoice;
  readonly bugs: readonly BugName[];
  /** Fault rates that differ from the preset's. */
  readonly faults: Readonly<Partial<Record<keyof FaultConfig, number>>>;
}

/** Fault-rate fields in the order the form and the command line list them. */
export const FAULT_FIELDS = Object.keys(FAULT_FLAG_NAMES) as (keyof FaultConfig)[];

/** The configuration `lockstep sim` builds for the same choices. */
export function pageRunConfig(run: PageRun): SimConfig {
  const faults: FaultConfig = { ...presetBody(run.preset).faults, ...run.faults };
  return presetConfig(run.preset, run.seed, { engine: run.engine, bugs: run.bugs, faults });
}

/** The `lockstep sim` command that writes the same trace bytes to `out`. */
export function cliCommand(run: PageRun, out = 'trace.ndjson'): string {
  const parts = [
    'npx',
    'lockstep',
    'sim',
    '--seed',
    String(run.seed),
    '--preset',
    run.preset,
    '--engine',
    run.engine,
  ];
  for (const field of FAULT_FIELDS) {
    const value = run.faults[field];
    if (value !== undefined) parts.push(FAULT_FLAG_NAMES[field], String(value));
  }
  for (const bug of run.bugs) parts.push('--bug', bug);
  parts.push('--out', out);
  return parts.join(' ');
}

/** The run as URL parameters (`sim=1&preset=default&engine=impl&bug=…&loss=0.1`). */
export function encodeRun(run: PageRun, params: URLSearchParams): void {
  params.set('sim', String(run.seed));
  params.set('preset', run.preset);
  params.set('engine', run.engine);
  params.delete('bug');
  for (const bug of run.bugs) params.append('bug', bug);
  for (const field of FAULT_FIELDS) {
    const value = run.faults[field];
    if (value === undefined) params.delete(field);
    else params.set(field, String(value));
  }
}

/** A run from URL parameters, or null when they name none (or an invalid one). */
export function decodeRun(params: URLSearchParams): PageRun | null {
  const seedText = params.get('sim');
  if (seedText === null) return null;
  const seed = Number(seedText);
  const preset = params.get('preset') ?? 'smoke';
  const engine = params.get('engine') ?? 'impl';
  if (!Number.isSafeInteger(seed) || seed < 0 || !isPresetName(preset)) return null;
  if (engine !== 'impl' && engine !== 'model' && engine !== 'both') return null;
  const bugs = params.getAll('bug').filter(isBugName);
  const faults: Partial<Record<keyof FaultConfig, number>> = {};
  for (const field of FAULT_FIELDS) {
    const text = params.get(field);
    if (text === null) continue;
    const value = Number(text);
    if (Number.isFinite(value) && value >= 0) faults[field] = value;
  }
  return { seed, preset, engine, bugs, faults };
}
