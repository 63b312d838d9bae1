/**
 * From command-line choices to a simulator configuration, and back to the command that reproduces
 * it. The CLI decides nothing about the protocol: presets, scenarios and swarm fault draws all come
 * from simulator/.
 * @module
 */
import { isBugName, type BugName } from '../spec/bugs.js';
import { securityOptions, type SecurityMode } from '../spec/security-mode.js';
import type { EngineChoice, FaultConfig, ScheduleEntry, SimConfig } from '../simulator/api.js';
import { drawSwarmFaults } from '../simulator/faults.js';
import {
  PRESET_NAMES,
  isPresetName,
  presetBody,
  presetConfig,
  type PresetName,
} from '../simulator/presets.js';
import { loadScenario } from '../simulator/scenario.js';
import { CliError, readJsonFile, shellQuote } from './io.js';

/** Fault-rate flags of `sim`, keyed by the FaultConfig field they override. */
export const FAULT_FLAGS = {
  loss: { flag: '--loss', help: 'probability a packet is lost (0..1)' },
  duplication: { flag: '--duplication', help: 'probability a packet is delivered twice (0..1)' },
  delayMean: { flag: '--delay-mean', help: 'mean extra packet delay in ticks (reorders packets)' },
  partitions: { flag: '--partitions', help: 'expected device/server partitions per device' },
  offline: { flag: '--offline', help: 'expected offline windows per device' },
  serverCrashes: { flag: '--server-crashes', help: 'server crash-and-restart events' },
  stateLoss: { flag: '--state-loss', help: 'device state-loss events (reinstall)' },
  rollback: { flag: '--rollback', help: 'device rollback events' },
  corruption: { flag: '--corruption', help: 'probability a packet is corrupted in flight (0..1)' },
} as const satisfies Partial<Record<keyof FaultConfig, { flag: string; help: string }>>;

/** A fault field the command line can override. */
export type FaultFlag = keyof typeof FAULT_FLAGS;

/** Everything the command line chose for one run. */
export interface RunChoice {
  readonly seed: number;
  readonly preset: PresetName;
  readonly engine: EngineChoice;
  readonly bugs: readonly BugName[];
  /** A scenario JSON file (replaces the preset's population and schedule as the file says). */
  readonly scenario: string | null;
  /** Draw the fault rates from the seed, as `swarm` does. */
  readonly swarmFaults: boolean;
  readonly faultOverrides: Readonly<Partial<Record<FaultFlag, number>>>;
  /** Random adversary actions drawn from the seed (simulator/adversary.ts; 0: an honest run). */
  readonly adversary: number;
  /** The devices' security switches; null keeps the preset's (hardened). */
  readonly mode: SecurityMode | null;
}

/** A configuration ready to run, with the explicit schedule when the input fixes one. */
export interface PreparedRun {
  readonly config: SimConfig;
  readonly schedule: readonly ScheduleEntry[] | undefined;
}

/** One line per preset for `--help`. */
export function presetHelp(): string {
  return PRESET_NAMES.map((name) => {
    const body = presetBody(name);
    const w = body.workload;
    const faults = Object.values(body.faults).some((rate) => rate !== 0) ? 'with faults' : 'no faults';
    return `  ${name.padEnd(9)} ${w.users} users × ${w.devicesPerUser} devices, ${w.messages} messages, ${w.durationTicks} ticks, ${faults}, ${body.traceMode} trace`;
  }).join('\n');
}

/** Parse a preset name or fail with the list. */
export function parsePreset(name: string): PresetName {
  if (!isPresetName(name))
    throw new CliError(`unknown preset '${name}' (presets: ${PRESET_NAMES.join(', ')})`);
  return name;
}

/** Parse planted-bug names or fail with the list. */
export function parseBugs(names: readonly string[]): readonly BugName[] {
  return names.map((name) => {
    if (!isBugName(name)) throw new CliError(`unknown planted bug '${name}' (see 'lockstep sim --help')`);
    return name;
  });
}

/** The fault rates a choice asks for over `preset`: the preset's, or drawn per seed, then the overrides. */
function chosenFaults(choice: RunChoice, preset: PresetName): FaultConfig {
  const base = presetBody(preset).faults;
  return { ...(choice.swarmFaults ? drawSwarmFaults(choice.seed, base) : base), ...choice.faultOverrides };
}

/** The configuration (and explicit schedule, if any) a choice stands for. */
export function prepareRun(choice: RunChoice): PreparedRun {
  const prepared = prepareHonestRun(choice);
  const security =
    choice.mode === null
      ? {}
      : (() => {
          const o = securityOptions(choice.mode);
          return {
            deviceListAuth: o.deviceListAuth,
            sequentialSessions: o.sequentialSessions,
            initialReplayCache: o.initialReplayCache,
            cloneDetection: o.cloneDetection,
          };
        })();
  const adversary =
    choice.adversary > 0 ? { adversary: { name: 'swarm', steps: [], randomActions: choice.adversary } } : {};
  return { ...prepared, config: { ...prepared.config, ...security, ...adversary } };
}

function prepareHonestRun(choice: RunChoice): PreparedRun {
  const options = { engine: choice.engine, bugs: choice.bugs };
  if (choice.scenario === null) {
    const faults = chosenFaults(choice, choice.preset);
    return { config: presetConfig(choice.preset, choice.seed, { ...options, faults }), schedule: undefined };
  }
  // A scenario names its own preset (and may fix its seed and fault rates, which win): fault flags
  // on the command line apply over that preset's rates.
  const json = readJsonFile(choice.scenario);
  const named = typeof json === 'object' && json !== null && 'preset' in json ? json.preset : undefined;
  const custom = choice.swarmFaults || Object.keys(choice.faultOverrides).length > 0;
  const faults =
    custom && typeof named === 'string' && isPresetName(named) ? { faults: chosenFaults(choice, named) } : {};
  const loaded = loadScenario(json, { seed: choice.seed, ...options, ...faults });
  if (!loaded.ok) {
    throw new CliError(
      `scenario ${choice.scenario} is invalid:\n${loaded.errors.map((e) => `  ${e}`).join('\n')}`,
    );
  }
  return { config: loaded.config, schedule: loaded.schedule ?? undefined };
}

/** The `lockstep sim` command line that reproduces a choice. */
export function simCommand(choice: RunChoice): string {
  const parts = ['npx', 'lockstep', 'sim', '--seed', String(choice.seed)];
  if (choice.scenario === null) parts.push('--preset', choice.preset);
  else parts.push('--scenario', choice.scenario);
  parts.push('--engine', choice.engine);
  if (choice.swarmFaults) parts.push('--swarm-faults');
  for (const [field, value] of Object.entries(choice.faultOverrides)) {
    parts.push(FAULT_FLAGS[field as FaultFlag].flag, String(value));
  }
  for (const bug of choice.bugs) parts.push('--bug', bug);
  if (choice.mode !== null) parts.push('--mode', choice.mode);
  if (choice.adversary > 0) parts.push('--adversary', String(choice.adversary));
  return parts.map(shellQuote).join(' ');
}

/** The command that replays a saved trace. */
export function replayCommand(file: string): string {
  return `npx lockstep replay ${shellQuote(file)}`;
}
