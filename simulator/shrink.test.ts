import { describe, expect, it } from 'vitest';
import { nodeProvider } from '../spec/crypto/node.js';
import { presetConfig } from './presets.js';
import { replayTrace } from './replay.js';
import { runSimulation } from './run.js';
import { ddmin, failsProperty, firstFailedProperty, shrinkSchedule } from './shrink.js';

const range = (n: number): readonly number[] => Array.from({ length: n }, (_, index) => index);

describe('ddmin', () => {
  it('finds a 1-minimal failing subset, keeping order', () => {
    const calls: number[][] = [];
    const found = ddmin(
      range(40),
      (subset) => {
        calls.push([...subset]);
        return subset.includes(3) && subset.includes(17) && subset.includes(31);
      },
      500,
    );
    expect(found.items).toEqual([3, 17, 31]);
    expect(found.exhausted).toBe(false);
    expect(found.runs).toBe(calls.length);
    // Never tests the same subset twice.
    expect(new Set(calls.map((call) => call.join(','))).size).toBe(calls.length);
  });

  it('returns the empty subset when the failure needs no input', () => {
    expect(ddmin(range(10), () => true, 50)).toEqual({ items: [], runs: 1, exhausted: false });
  });

  it('stops at the run budget with the smallest failing subset so far', () => {
    const found = ddmin(range(64), (subset) => subset.includes(5) && subset.includes(60), 10);
    expect(found.runs).toBe(10);
    expect(found.exhausted).toBe(true);
    expect(found.items).toContain(5);
    expect(found.items).toContain(60);
    expect(found.items.length).toBeLessThan(64);
  });
});

describe('shrinkSchedule', () => {
  it('shrinks a planted-bug failure to a smaller schedule that still fails and replays', () => {
    const config = presetConfig('smoke', 1, { engine: 'impl', bugs: ['deliver-twice'] });
    // node:crypto for speed: runs, and so traces, are the same with either provider.
    const failing = runSimulation(config, { crypto: nodeProvider });
    const property = firstFailedProperty(failing);
    expect(property).not.toBeNull();
    if (property === null) return;
    const shrunk = shrinkSchedule(config, failing.schedule, property, { maxRuns: 80, crypto: nodeProvider });
    expect(shrunk.ok).toBe(true);
    if (!shrunk.ok) return;
    expect(shrunk.runs).toBeLessThanOrEqual(80);
    expect(shrunk.schedule.length).toBeLessThan(failing.schedule.length);
    expect(failsProperty(shrunk.result, property)).toBe(true);
    expect(shrunk.result.header.schedule).toEqual(shrunk.schedule);
    const replay = replayTrace(shrunk.result.lines, { crypto: nodeProvider });
    expect(replay.ok).toBe(true);
  });

  it('refuses to shrink a run that does not fail the property', () => {
    const config = presetConfig('quiet', 1, { engine: 'impl' });
    const passing = runSimulation(config);
    expect(shrinkSchedule(config, passing.schedule, 'no-duplicate-delivery', { maxRuns: 5 })).toMatchObject({
      ok: false,
      reason: 'not-failing',
      runs: 1,
    });
  });
});
