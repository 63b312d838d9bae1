/**
 * Determinism (design "Determinism"; WHITEPAPER.md "Simulator"): the same seed and config give the
 * same trace bytes, run after run and whichever crypto provider computes; and the model/ engine
 * writes the very trace impl/ writes.
 */
import { describe, expect, it } from 'vitest';
import { nobleProvider } from '../spec/crypto/noble.js';
import { nodeProvider } from '../spec/crypto/node.js';
import { presetConfig } from './presets.js';
import { runSimulation } from './run.js';

describe('determinism', () => {
  it('the same seed twice gives byte-identical traces', () => {
    const config = presetConfig('smoke', 11);
    const a = runSimulation(config, { crypto: nodeProvider });
    const b = runSimulation(config, { crypto: nodeProvider });
    expect(a.lines.length).toBeGreaterThan(100);
    expect(b.lines).toEqual(a.lines);
    expect(b.counters).toEqual(a.counters);
  });

  it('different seeds give different traces', () => {
    const a = runSimulation(presetConfig('smoke', 1), { crypto: nodeProvider });
    const b = runSimulation(presetConfig('smoke', 2), { crypto: nodeProvider });
    expect(b.lines).not.toEqual(a.lines);
  });

  it('the node:crypto and noble providers give byte-identical traces', () => {
    const config = presetConfig('smoke', 3);
    const node = runSimulation(config, { crypto: nodeProvider });
    const noble = runSimulation(config, { crypto: nobleProvider });
    expect(noble.lines).toEqual(node.lines);
  });

  it('an explicit schedule (the drawn one) replays the drawn run event for event', () => {
    const config = presetConfig('smoke', 4);
    const drawn = runSimulation(config, { crypto: nodeProvider });
    const replayed = runSimulation(config, { crypto: nodeProvider, schedule: drawn.schedule });
    expect(replayed.lines.slice(1)).toEqual(drawn.lines.slice(1));
    expect(replayed.header.schedule).toEqual(drawn.schedule);
    expect(replayed.repro).toMatch(/^npx lockstep replay /);
  });

  it("the model engine writes the impl engine's trace plus its statechart states", () => {
    const impl = runSimulation(presetConfig('smoke', 5, { engine: 'impl' }), { crypto: nodeProvider });
    const model = runSimulation(presetConfig('smoke', 5, { engine: 'model' }), { crypto: nodeProvider });
    const withoutModel = model.lines.slice(1).map((line) => {
      const event = JSON.parse(line) as { kind: string; data: Record<string, unknown> };
      if (event.kind === 'step' || event.kind === 'request') {
        expect(event.data.model).toBeDefined();
        delete event.data.model;
      }
      return event;
    });
    expect(withoutModel).toEqual(impl.lines.slice(1).map((line) => JSON.parse(line) as unknown));
    expect(impl.lines.some((line) => line.includes('"model":'))).toBe(false);
  });

  it('lines written late (after other runs) are the lines written at once', () => {
    // Trace lines are serialised when first read (simulator/trace.ts): other runs in between, which
    // share the serialisation caches, must not change them.
    const late = runSimulation(presetConfig('smoke', 7, { engine: 'both' }), { crypto: nodeProvider });
    const other = runSimulation(presetConfig('default', 8, { workload: { messages: 40 } }), {
      crypto: nodeProvider,
    });
    expect(other.lines.length).toBeGreaterThan(100);
    const early = runSimulation(presetConfig('smoke', 7, { engine: 'both' }), { crypto: nodeProvider });
    const earlyLines = [...early.lines];
    expect(late.lines).toEqual(earlyLines);
  });

  it('trace lines are canonical JSON: a header, then events with sorted keys', () => {
    const result = runSimulation(presetConfig('smoke', 6), { crypto: nodeProvider });
    const [header, ...events] = result.lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(header).toMatchObject({
      type: 'header',
      format: 'lockstep-trace',
      formatVersion: 3,
      commit: null,
    });
    for (const line of result.lines.slice(0, 50)) {
      const keys = Object.keys(JSON.parse(line) as object);
      expect(keys).toEqual([...keys].sort());
    }
    expect(events.every((e) => e.type === 'event')).toBe(true);
  });
});
