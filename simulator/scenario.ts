/**
 * Scenario files (WHITEPAPER.md, "Simulator"): a JSON document that names a preset and overrides
 * parts of it, optionally with an explicit schedule. Validated against {@link SCENARIO_SCHEMA}
 * (also published as simulator/scenario.schema.json) with ajv, which runs in browsers too.
 *
 * ```json
 * {
 *   "preset": "smoke",
 *   "seed": 7,
 *   "workload": { "messages": 5 },
 *   "faults": { "loss": 0.2 },
 *   "schedule": [{ "t": 4000, "op": "send", "from": "u0/1", "to": ["u1"], "text": "hi ~mk0123456789ab~" }]
 * }
 * ```
 *
 * Precedence: the preset, then the caller's options (seed, engine, bugs, fault rates: what the
 * command line chose), then the file (its seed, workload, fault and timing fields win: a scenario
 * is the more specific input). Engine and bugs come from the caller when it gives them.
 * @module
 */
import { Ajv } from 'ajv';
import { isBugName, type BugName } from '../spec/bugs.js';
import type { EngineChoice, FaultConfig, ScheduleEntry, SimConfig } from './api.js';
import { isPresetName, PRESET_NAMES, presetConfig } from './presets.js';

const probability = { type: 'number', minimum: 0, maximum: 1 } as const;
const rate = { type: 'number', minimum: 0 } as const;
const tick = { type: 'integer', minimum: 0 } as const;
const device = { type: 'string', pattern: '^u[0-9]+/[0-9]+r*$' } as const;
const users = {
  type: 'array',
  items: { type: 'string', pattern: '^[a-z0-9][a-z0-9-]{0,63}$' },
  minItems: 1,
} as const;

const entry = (
  op: string,
  props: Record<string, unknown>,
  required: readonly string[],
): Record<string, unknown> => ({
  type: 'object',
  additionalProperties: false,
  required: ['t', 'op', ...required],
  properties: { t: tick, op: { const: op }, ...props },
});

/** The JSON Schema (draft 2020-12 subset ajv checks by default) of a scenario file. */
export const SCENARIO_SCHEMA = {
  $id: 'https://lockstep.invalid/simulator/scenario.schema.json',
  title: 'Lockstep simulator scenario',
  type: 'object',
  additionalProperties: false,
  required: ['preset'],
  properties: {
    $schema: { type: 'string' },
    description: { type: 'string' },
    preset: { enum: [...PRESET_NAMES] },
    seed: { type: 'integer', minimum: 0 },
    engine: { enum: ['impl', 'model', 'both'] },
    bugs: { type: 'array', items: { type: 'string' } },
    deviceListAuth: { enum: ['signed', 'server'] },
    traceMode: { enum: ['full', 'summary'] },
    livenessBound: { type: 'integer', minimum: 1 },
    pollInterval: { type: 'integer', minimum: 1 },
    resendInterval: { type: 'integer', minimum: 1 },
    signedPreKeyRotation: {
      type: 'object',
      additionalProperties: false,
      required: ['interval', 'gracePeriod'],
      properties: {
        interval: { type: 'integer', minimum: 1 },
        gracePeriod: { type: 'integer', minimum: 0 },
      },
    },
    workload: {
      type: 'object',
      additionalProperties: false,
      properties: {
        users: { type: 'integer', minimum: 1, maximum: 100000 },
        devicesPerUser: { type: 'integer', minimum: 1, maximum: 8 },
        contactsPerUser: { type: 'integer', minimum: 0 },
        messages: { type: 'integer', minimum: 0 },
        attachments: { type: 'integer', minimum: 0 },
        links: { type: 'integer', minimum: 0 },
        revocations: { type: 'integer', minimum: 0 },
        reinstalls: { type: 'integer', minimum: 0 },
        oneTimePreKeys: { type: 'integer', minimum: 0 },
        oneTimeKyberPreKeys: { type: 'integer', minimum: 0 },
        durationTicks: { type: 'integer', minimum: 1000 },
        diurnal: { type: 'boolean' },
      },
    },
    faults: {
      type: 'object',
      additionalProperties: false,
      properties: {
        loss: probability,
        duplication: probability,
        delayMean: rate,
        partitions: rate,
        offline: rate,
        serverCrashes: rate,
        stateLoss: rate,
        rollback: rate,
        corruption: probability,
      },
    },
    schedule: {
      type: 'array',
      items: {
        oneOf: [
          entry('send', { from: device, to: users, text: { type: 'string', minLength: 1 } }, [
            'from',
            'to',
            'text',
          ]),
          entry('attachment', { from: device, to: users, size: { type: 'integer', minimum: 1 } }, [
            'from',
            'to',
            'size',
          ]),
          entry('link', { primary: device, device }, ['primary', 'device']),
          entry('revoke', { primary: device, device }, ['primary', 'device']),
          entry('reinstall', { device }, ['device']),
          entry('partition', { device, until: tick }, ['device', 'until']),
          entry('offline', { device, until: tick }, ['device', 'until']),
          entry('server-crash', { until: tick }, ['until']),
          entry('state-loss', { device }, ['device']),
          entry('rollback', { device, toTick: tick }, ['device', 'toTick']),
        ],
      },
    },
  },
} as const;

/** What {@link loadScenario} answers. */
export type ScenarioLoad =
  | { readonly ok: true; readonly config: SimConfig; readonly schedule: readonly ScheduleEntry[] | null }
  | { readonly ok: false; readonly errors: readonly string[] };

/** The caller's choices (the command line's). */
export interface ScenarioOptions {
  readonly seed: number;
  readonly engine?: EngineChoice;
  readonly bugs?: readonly BugName[];
  readonly faults?: FaultConfig;
}

let validator: ReturnType<Ajv['compile']> | null = null;

/** Validates a parsed scenario file and builds its configuration (and explicit schedule, if any). */
export function loadScenario(json: unknown, options: ScenarioOptions): ScenarioLoad {
  validator ??= new Ajv({ allErrors: true, strict: false }).compile(SCENARIO_SCHEMA);
  if (!validator(json)) {
    return {
      ok: false,
      errors: (validator.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message ?? 'is invalid'}`),
    };
  }
  const file = json as {
    readonly preset: string;
    readonly seed?: number;
    readonly engine?: EngineChoice;
    readonly bugs?: readonly string[];
    readonly deviceListAuth?: SimConfig['deviceListAuth'];
    readonly traceMode?: SimConfig['traceMode'];
    readonly livenessBound?: number;
    readonly pollInterval?: number;
    readonly resendInterval?: number;
    readonly signedPreKeyRotation?: SimConfig['signedPreKeyRotation'];
    readonly workload?: Partial<SimConfig['workload']>;
    readonly faults?: Partial<FaultConfig>;
    readonly schedule?: readonly ScheduleEntry[];
  };
  if (!isPresetName(file.preset)) return { ok: false, errors: [`/preset ${file.preset} is not a preset`] };
  const unknownBugs = (file.bugs ?? []).filter((b) => !isBugName(b));
  if (unknownBugs.length > 0)
    return { ok: false, errors: unknownBugs.map((b) => `/bugs ${b} is not a planted bug`) };
  const base = presetConfig(file.preset, file.seed ?? options.seed, {
    engine: options.engine ?? file.engine ?? 'impl',
    bugs: options.bugs ?? (file.bugs ?? []).filter(isBugName),
    ...(options.faults === undefined ? {} : { faults: options.faults }),
  });
  const config: SimConfig = {
    ...base,
    workload: { ...base.workload, ...(file.workload ?? {}) },
    faults: { ...base.faults, ...(file.faults ?? {}) },
    deviceListAuth: file.deviceListAuth ?? base.deviceListAuth,
    traceMode: file.traceMode ?? base.traceMode,
    livenessBound: file.livenessBound ?? base.livenessBound,
    pollInterval: file.pollInterval ?? base.pollInterval,
    resendInterval: file.resendInterval ?? base.resendInterval,
    ...(file.signedPreKeyRotation === undefined ? {} : { signedPreKeyRotation: file.signedPreKeyRotation }),
  };
  const schedule = file.schedule === undefined ? null : [...file.schedule].sort((a, b) => a.t - b.t);
  return { ok: true, config, schedule };
}
