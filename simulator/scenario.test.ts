import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { nodeProvider } from '../spec/crypto/node.js';
import { runSimulation } from './run.js';
import { loadScenario, SCENARIO_SCHEMA } from './scenario.js';

describe('scenario files', () => {
  it('simulator/scenario.schema.json is SCENARIO_SCHEMA', () => {
    const file = JSON.parse(
      readFileSync(new URL('./scenario.schema.json', import.meta.url), 'utf8'),
    ) as unknown;
    expect(file).toEqual(JSON.parse(JSON.stringify(SCENARIO_SCHEMA)));
  });

  it('a valid scenario overrides its preset and carries its schedule', () => {
    const loaded = loadScenario(
      {
        preset: 'quiet',
        seed: 9,
        workload: { messages: 0 },
        faults: { loss: 0.1 },
        schedule: [{ t: 5000, op: 'send', from: 'u0/1', to: ['u1'], text: 'hello ~mk0123456789ab~' }],
      },
      { seed: 1 },
    );
    expect(loaded.ok).toBe(true);
    if (!loaded.ok) return;
    expect(loaded.config.seed).toBe(9);
    expect(loaded.config.faults.loss).toBe(0.1);
    expect(loaded.schedule).toHaveLength(1);
    const result = runSimulation(loaded.config, { crypto: nodeProvider, schedule: loaded.schedule ?? [] });
    expect(result.violations).toEqual([]);
    expect(result.counters['ops.send']).toBe(1);
    expect(result.latency.count).toBe(3);
  });

  it('a scenario turns signed prekey rotation on; a rotation without a grace period is refused [WP-LIFE-07]', () => {
    const rotation = { interval: 5_000, gracePeriod: 12_000 };
    const loaded = loadScenario({ preset: 'smoke', signedPreKeyRotation: rotation }, { seed: 1 });
    expect(loaded.ok && loaded.config.signedPreKeyRotation).toEqual(rotation);
    const plain = loadScenario({ preset: 'smoke' }, { seed: 1 });
    expect(plain.ok && 'signedPreKeyRotation' in plain.config).toBe(false);
    const missing = loadScenario({ preset: 'smoke', signedPreKeyRotation: { interval: 5_000 } }, { seed: 1 });
    expect(missing.ok).toBe(false);
  });

  it('an invalid scenario is refused with the paths of its errors', () => {
    const loaded = loadScenario({ preset: 'smoke', faults: { loss: 2 }, extra: 1 }, { seed: 1 });
    expect(loaded.ok).toBe(false);
    if (loaded.ok) return;
    expect(loaded.errors.join('\n')).toContain('/faults/loss');
    expect(loadScenario({ preset: 'nope' }, { seed: 1 }).ok).toBe(false);
    expect(loadScenario({ preset: 'smoke', bugs: ['no-such-bug'] }, { seed: 1 }).ok).toBe(false);
  });
});
