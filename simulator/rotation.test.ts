/**
 * Signed prekey rotation in simulated runs (WP-LIFE-07, WP-LIFE-08): with `signedPreKeyRotation`
 * set, every linked device's rotation timer fires on schedule, retired keys are deleted after the
 * grace period, both engines agree step by step, and every property still holds under the preset's
 * faults; without it (every preset) no device rotates.
 */
import { describe, expect, it } from 'vitest';
import { nodeProvider } from '../spec/crypto/node.js';
import { presetConfig } from './presets.js';
import { runSimulation } from './run.js';

interface StepEvent {
  readonly t: number;
  readonly node: string;
  readonly data: {
    readonly input?: { readonly kind: string; readonly gracePeriod?: number };
    readonly abstractDelta?: { readonly device?: { readonly signedPreKeyIds?: readonly number[] } };
  };
}

function steps(lines: readonly string[]): StepEvent[] {
  return lines
    .slice(1)
    .map((line) => JSON.parse(line) as StepEvent & { readonly kind: string })
    .filter((e) => e.kind === 'step');
}

describe('signed prekey rotation in the simulator', () => {
  it('devices rotate every interval and delete retired keys after the grace period, both engines agreeing [WP-LIFE-07] [WP-LIFE-08]', () => {
    const rotation = { interval: 3_000, gracePeriod: 6_000 };
    const config = presetConfig('smoke', 1, { engine: 'both', signedPreKeyRotation: rotation });
    const result = runSimulation(config, { crypto: nodeProvider });
    expect(result.divergence).toBeNull();
    expect(result.violations).toEqual([]);
    expect(JSON.parse(result.lines[0] ?? '{}').config.signedPreKeyRotation).toEqual(rotation);
    const all = steps(result.lines);
    const timers = all.filter((e) => e.data.input?.kind === 'timer.rotate-signed-prekey');
    expect(timers.length).toBeGreaterThan(0);
    expect(timers.every((e) => e.data.input?.gracePeriod === rotation.gracePeriod)).toBe(true);
    // One device's timers fire `interval` apart (offline windows skip a step, never the schedule).
    const byDevice = new Map<string, number[]>();
    for (const e of timers) byDevice.set(e.node, [...(byDevice.get(e.node) ?? []), e.t]);
    for (const times of byDevice.values())
      for (let i = 1; i < times.length; i++)
        expect(((times[i] ?? 0) - (times[0] ?? 0)) % rotation.interval).toBe(0);
    // Keys are deleted: some device ends up no longer holding signed prekey 1.
    const held = all.flatMap((e) => {
      const ids = e.data.abstractDelta?.device?.signedPreKeyIds;
      return ids === undefined ? [] : [ids];
    });
    expect(held.some((ids) => ids.length > 1)).toBe(true);
    expect(held.some((ids) => !ids.includes(1))).toBe(true);
  });

  it('no preset rotates: without the option the timer never fires [WP-LIFE-07]', () => {
    const result = runSimulation(presetConfig('quiet', 1), { crypto: nodeProvider });
    expect(steps(result.lines).some((e) => e.data.input?.kind === 'timer.rotate-signed-prekey')).toBe(false);
  });
});
