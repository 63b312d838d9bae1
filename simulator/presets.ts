/**
 * Named run configurations (WHITEPAPER.md, "Simulator"). A preset fixes the population, the work
 * it does, the fault rates, the timing and the trace mode; the seed and the engine are chosen per
 * run. `presetConfig` is the single place a preset becomes a {@link SimConfig}, so a `repro:` line
 * (`--seed N --preset P`) rebuilds exactly the configuration that ran.
 *
 * | preset      | users × devices | contacts | messages | attachments | links | revocations | reinstalls | ticks      |
 * | ----------- | --------------- | -------- | -------- | ----------- | ----- | ----------- | ---------- | ---------- |
 * | `quiet`     | 2 × 2           | 1        | 20       | 0           | 0     | 0           | 0          | 20 000     |
 * | `smoke`     | 2 × 2           | 1        | 20       | 0           | 0     | 0           | 0          | 20 000     |
 * | `default`   | 4 × 3           | 3        | 200      | 2           | 1     | 1           | 1          | 120 000    |
 * | `peak-day`  | 10 000 × 3      | 5        | 100 000  | 0           | 0     | 0           | 0          | 86 400 000 |
 *
 * `quiet` is `smoke` without faults. `peak-day` is one simulated day (1 tick = 1 ms) with a diurnal
 * send curve, 10 one-time EC and 2 one-time Kyber prekeys per device, the impl engine and a summary
 * trace.
 *
 * No preset rotates signed prekeys (WP-LIFE-07): an application rotates every 2 days, longer than
 * any preset runs. A scenario file's or {@link PresetOptions}' `signedPreKeyRotation` turns rotation
 * on with timings short enough for a run.
 * @module
 */
import type { BugName } from '../spec/bugs.js';
import { HARDENED_OPTIONS, type SecurityOptions } from '../spec/security-mode.js';
import {
  NO_FAULTS,
  type EngineChoice,
  type FaultConfig,
  type SimConfig,
  type WorkloadConfig,
} from './api.js';

/** The names of the built-in presets. */
export const PRESET_NAMES = ['quiet', 'smoke', 'default', 'peak-day'] as const;

/** A preset name. */
export type PresetName = (typeof PRESET_NAMES)[number];

/** True for a built-in preset name. */
export function isPresetName(name: string): name is PresetName {
  return (PRESET_NAMES as readonly string[]).includes(name);
}

const SMOKE_WORKLOAD: WorkloadConfig = Object.freeze({
  users: 2,
  devicesPerUser: 2,
  contactsPerUser: 1,
  messages: 20,
  attachments: 0,
  links: 0,
  revocations: 0,
  reinstalls: 0,
  oneTimePreKeys: 10,
  oneTimeKyberPreKeys: 2,
  durationTicks: 20_000,
  diurnal: false,
});

const SMOKE_FAULTS: FaultConfig = Object.freeze({
  loss: 0.02,
  duplication: 0.02,
  delayMean: 20,
  partitions: 0.5,
  offline: 0.5,
  serverCrashes: 1,
  stateLoss: 0,
  rollback: 0,
  corruption: 0.01,
});

const DEFAULT_WORKLOAD: WorkloadConfig = Object.freeze({
  users: 4,
  devicesPerUser: 3,
  contactsPerUser: 3,
  messages: 200,
  attachments: 2,
  links: 1,
  revocations: 1,
  reinstalls: 1,
  oneTimePreKeys: 10,
  oneTimeKyberPreKeys: 2,
  durationTicks: 120_000,
  diurnal: false,
});

const DEFAULT_FAULTS: FaultConfig = Object.freeze({
  loss: 0.05,
  duplication: 0.03,
  delayMean: 50,
  partitions: 1,
  offline: 1,
  serverCrashes: 2,
  stateLoss: 0,
  rollback: 0,
  corruption: 0.01,
});

const PEAK_DAY_WORKLOAD: WorkloadConfig = Object.freeze({
  users: 10_000,
  devicesPerUser: 3,
  contactsPerUser: 5,
  messages: 100_000,
  attachments: 0,
  links: 0,
  revocations: 0,
  reinstalls: 0,
  oneTimePreKeys: 10,
  oneTimeKyberPreKeys: 2,
  durationTicks: 86_400_000,
  diurnal: true,
});

const PEAK_DAY_FAULTS: FaultConfig = Object.freeze({
  loss: 0.01,
  duplication: 0.005,
  delayMean: 200,
  partitions: 0,
  offline: 0,
  serverCrashes: 1,
  stateLoss: 0,
  rollback: 0,
  corruption: 0,
});

/** Everything a preset fixes (a SimConfig without seed, engine and bugs). */
export type PresetBody = Omit<SimConfig, 'seed' | 'engine' | 'bugs' | 'preset'>;

const PRESETS: Readonly<Record<PresetName, PresetBody>> = Object.freeze({
  quiet: {
    workload: SMOKE_WORKLOAD,
    faults: NO_FAULTS,
    ...HARDENED_OPTIONS,
    livenessBound: 200_000,
    traceMode: 'full',
    pollInterval: 1_000,
    resendInterval: 2_000,
  },
  smoke: {
    workload: SMOKE_WORKLOAD,
    faults: SMOKE_FAULTS,
    ...HARDENED_OPTIONS,
    livenessBound: 200_000,
    traceMode: 'full',
    pollInterval: 1_000,
    resendInterval: 2_000,
  },
  default: {
    workload: DEFAULT_WORKLOAD,
    faults: DEFAULT_FAULTS,
    ...HARDENED_OPTIONS,
    livenessBound: 400_000,
    traceMode: 'full',
    pollInterval: 2_000,
    resendInterval: 3_000,
  },
  'peak-day': {
    workload: PEAK_DAY_WORKLOAD,
    faults: PEAK_DAY_FAULTS,
    ...HARDENED_OPTIONS,
    livenessBound: 4 * 3_600_000,
    traceMode: 'summary',
    pollInterval: 3_600_000,
    resendInterval: 60_000,
  },
});

/** Per-run choices layered over a preset. */
export interface PresetOptions {
  readonly engine?: EngineChoice;
  readonly bugs?: readonly BugName[];
  /** Replaces the preset's fault rates (swarm mode draws them per seed). */
  readonly faults?: FaultConfig;
  /** Shallow overrides of the workload (tests use them to scale a preset down). */
  readonly workload?: Partial<WorkloadConfig>;
  readonly traceMode?: SimConfig['traceMode'];
  readonly deviceListAuth?: SimConfig['deviceListAuth'];
  /** Signed prekey rotation (WP-LIFE-07); no preset turns it on. */
  readonly signedPreKeyRotation?: SimConfig['signedPreKeyRotation'];
  /** The devices' security switches (spec/security-mode.ts); default the preset's (hardened). */
  readonly security?: SecurityOptions;
}

/** The configuration of `preset` for one seed. */
export function presetConfig(preset: PresetName, seed: number, options: PresetOptions = {}): SimConfig {
  const body = PRESETS[preset];
  return {
    preset,
    seed,
    engine: options.engine ?? 'impl',
    workload: { ...body.workload, ...(options.workload ?? {}) },
    faults: options.faults ?? body.faults,
    deviceListAuth: options.deviceListAuth ?? options.security?.deviceListAuth ?? body.deviceListAuth,
    sequentialSessions: options.security?.sequentialSessions ?? body.sequentialSessions,
    initialReplayCache: options.security?.initialReplayCache ?? body.initialReplayCache,
    cloneDetection: options.security?.cloneDetection ?? body.cloneDetection,
    bugs: [...(options.bugs ?? [])],
    livenessBound: body.livenessBound,
    traceMode: options.traceMode ?? body.traceMode,
    pollInterval: body.pollInterval,
    resendInterval: body.resendInterval,
    ...(options.signedPreKeyRotation === undefined
      ? {}
      : { signedPreKeyRotation: options.signedPreKeyRotation }),
  };
}

/** The preset body itself (read-only), e.g. for documentation and the CLI's `--list-presets`. */
export function presetBody(preset: PresetName): PresetBody {
  return PRESETS[preset];
}
