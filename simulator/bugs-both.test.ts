/**
 * Planted bugs are read by BOTH engines (spec/bugs.ts): under `--engine both` the bug must surface
 * as its property's violation, never as a divergence between impl/ and model/ (design "Simulator
 * shape"). By default the bugs exposed on `smoke` are checked; `LOCKSTEP_FULL` checks every one.
 */
import { describe, expect, it } from 'vitest';
import type { BugName } from '../spec/bugs.js';
import { nodeProvider } from '../spec/crypto/node.js';
import { PROPERTIES } from './invariants.js';
import { presetBody, presetConfig, type PresetOptions } from './presets.js';
import { runSimulation } from './run.js';

const smokeFaults = presetBody('smoke').faults;
const defaultFaults = presetBody('default').faults;
const defaultVariant = (extra: NonNullable<PresetOptions['workload']> = {}): PresetOptions => ({
  faults: { ...defaultFaults, corruption: 0 },
  workload: { links: 0, reinstalls: 0, messages: 60, ...extra },
});
const RUNS: Readonly<
  Record<BugName, { readonly preset: 'smoke' | 'default'; readonly options: PresetOptions }>
> = {
  'skip-mac-check': { preset: 'smoke', options: { faults: { ...smokeFaults, corruption: 0.3 } } },
  'accept-past-forward-jump': { preset: 'smoke', options: { faults: { ...smokeFaults, corruption: 0.3 } } },
  'reuse-message-key': { preset: 'smoke', options: {} },
  'deliver-twice': { preset: 'smoke', options: {} },
  'server-drops-message': { preset: 'smoke', options: {} },
  'server-keeps-plaintext': { preset: 'smoke', options: { workload: { attachments: 1 } } },
  'ignore-device-removal': { preset: 'default', options: defaultVariant() },
  'never-clean-stale': { preset: 'default', options: defaultVariant() },
  'server-rehands-prekey': { preset: 'smoke', options: {} },
  'history-to-new-device': { preset: 'default', options: defaultVariant({ links: 1, revocations: 0 }) },
};
const QUICK = new Set<BugName>(
  (Object.keys(RUNS) as BugName[]).filter((bug) => RUNS[bug].preset === 'smoke'),
);

describe('planted bugs under --engine both', () => {
  for (const property of PROPERTIES) {
    const bug = property.bug;
    if (bug === null) continue;
    const run = process.env['LOCKSTEP_FULL'] || QUICK.has(bug) ? it : it.skip;
    run(`${bug} is caught by ${property.name}, not by a divergence, with both engines running`, () => {
      const spec = RUNS[bug];
      // rollback-recovery is about rolled-back devices: its run needs a rollback fault.
      const rollback =
        property.name === 'rollback-recovery' ? { faults: { ...smokeFaults, rollback: 1 } } : {};
      const config = {
        ...presetConfig(spec.preset, 1, { ...spec.options, ...rollback, bugs: [bug] }),
        engine: 'both' as const,
      };
      const result = runSimulation(config, { crypto: nodeProvider });
      expect(result.divergence).toBeNull();
      expect(result.violations.map((v) => v.property)).toContain(property.name);
    });
  }
});
