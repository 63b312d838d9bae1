/**
 * Heavier simulator runs, only under `LOCKSTEP_FULL=1` (`npm run test:full`): more seeds, the
 * lockstep `both` engine on the default population, and a 1/100 peak-day.
 */
import { describe, expect, it } from 'vitest';
import { nodeProvider } from '../spec/crypto/node.js';
import { drawSwarmFaults } from './faults.js';
import { presetBody, presetConfig } from './presets.js';
import { runSimulation } from './run.js';

const full = process.env.LOCKSTEP_FULL !== undefined && process.env.LOCKSTEP_FULL !== '';

describe.skipIf(!full)('simulator, full', () => {
  const variant = {
    faults: { ...presetBody('default').faults, corruption: 0 },
    workload: { links: 0, reinstalls: 0 },
  };

  for (const seed of [3, 4, 5, 6, 7, 8]) {
    it(`default population, seed ${seed}: no violations`, () => {
      const result = runSimulation(presetConfig('default', seed, variant), { crypto: nodeProvider });
      expect(result.violations).toEqual([]);
    });
  }

  for (const seed of [6, 7, 8, 9, 10, 11, 12, 13]) {
    // With rollback at this loss rate, seeds 6 and 7 expose an open finding: a rolled-back device
    // whose resends keep failing on the old session runs out of MAX_RESENDS (see the report).
    it(`smoke, seed ${seed}, with faults and swarm-sized loss: no violations`, () => {
      const faults = { ...presetBody('smoke').faults, loss: 0.1 };
      const result = runSimulation(presetConfig('smoke', seed, { faults }), { crypto: nodeProvider });
      expect(result.violations).toEqual([]);
    });
  }

  // Smoke 6 and default 3 had a retry request overtake the sender's acceptance; default 19 had one
  // refused under a stale registration id.
  it('rollback recovery: smoke seed 6 with loss and a rollback, default seeds 3 and 19 with swarm faults [WP-SES-21] [WP-XPORT-09]', () => {
    const smoke = runSimulation(
      presetConfig('smoke', 6, { faults: { ...presetBody('smoke').faults, loss: 0.1, rollback: 1 } }),
      { crypto: nodeProvider },
    );
    expect(smoke.violations).toEqual([]);
    for (const seed of [3, 19]) {
      const faults = drawSwarmFaults(seed, presetBody('default').faults);
      const result = runSimulation(presetConfig('default', seed, { faults }), { crypto: nodeProvider });
      expect(result.violations, `default seed ${seed}`).toEqual([]);
    }
  });

  it('both: impl and model agree on the default population', () => {
    const result = runSimulation(presetConfig('default', 1, { ...variant, engine: 'both' }), {
      crypto: nodeProvider,
    });
    expect(result.divergence).toBeNull();
    expect(result.violations).toEqual([]);
  });

  it('a 1/100 peak-day converges with no violations', () => {
    const config = presetConfig('peak-day', 1, { workload: { users: 100, messages: 1000 } });
    const result = runSimulation(config, { crypto: nodeProvider });
    expect(result.violations).toEqual([]);
    expect(result.lines.length).toBeLessThan(100);
  });
});
