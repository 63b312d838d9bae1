/**
 * The `model` field of trace events (simulator/TRACE-FORMAT.md, "Model states"): every pair of
 * consecutive states in a recorded path is a transition of the machine's definition as
 * model/diagrams/<id>.json publishes it, so a viewer drawing the path from that file draws what ran.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { nodeProvider } from '../spec/crypto/node.js';
import { presetConfig } from './presets.js';
import { runSimulation } from './run.js';

interface PublishedTransition {
  readonly source: string;
  readonly targets: readonly string[];
}

function transitionsOf(machine: 'device' | 'server'): readonly PublishedTransition[] {
  const file = new URL(`../model/diagrams/${machine}.json`, import.meta.url);
  return (JSON.parse(readFileSync(file, 'utf8')) as { transitions: PublishedTransition[] }).transitions;
}

/** True when some published transition leads from state `from` to state `to` (ids from the root). */
function connects(
  machine: string,
  transitions: readonly PublishedTransition[],
  from: string,
  to: string,
): boolean {
  const fromId = `${machine}.${from}`;
  const toId = `${machine}.${to}`;
  return transitions.some((t) => {
    const fromSource = fromId === t.source || fromId.startsWith(`${t.source}.`);
    if (!fromSource) return false;
    if (t.targets.length === 0) return from === to;
    return t.targets.some((target) => toId === target || toId.startsWith(`${target}.`));
  });
}

interface StepLine {
  readonly kind: string;
  readonly node: string;
  readonly data: { readonly model?: { readonly path: readonly string[]; readonly state: string } };
}

describe('model states in traces', () => {
  it('every recorded step of the device and server machines follows a published transition', () => {
    const device = transitionsOf('device');
    const server = transitionsOf('server');
    const result = runSimulation(presetConfig('smoke', 2, { engine: 'model' }), { crypto: nodeProvider });
    const events = result.lines.slice(1).map((line) => JSON.parse(line) as StepLine);
    let pairs = 0;
    let eventless = 0;
    for (const event of events) {
      if (event.kind !== 'step' && event.kind !== 'request') continue;
      const model = event.data.model;
      expect(model, `${event.kind} of ${event.node} has no model states`).toBeDefined();
      if (model === undefined) continue;
      expect(model.path.at(-1)).toBe(model.state);
      const machine = event.kind === 'step' ? 'device' : 'server';
      const transitions = machine === 'device' ? device : server;
      for (let i = 1; i < model.path.length; i++) {
        const from = model.path[i - 1] ?? '';
        const to = model.path[i] ?? '';
        expect(connects(machine, transitions, from, to), `${machine}: ${from} → ${to}`).toBe(true);
        pairs++;
      }
      if (model.path.length > 2) eventless++;
    }
    expect(pairs).toBeGreaterThan(500);
    expect(eventless).toBeGreaterThan(50);
  });

  it("a device step starts where that device's previous step ended when no fault intervened", () => {
    const result = runSimulation(presetConfig('quiet', 3, { engine: 'model' }), { crypto: nodeProvider });
    const last = new Map<string, string>();
    let checked = 0;
    for (const line of result.lines.slice(1)) {
      const event = JSON.parse(line) as StepLine;
      if (event.kind !== 'step' || event.data.model === undefined) continue;
      const before = last.get(event.node);
      if (before !== undefined) {
        expect(event.data.model.path[0]).toBe(before);
        checked++;
      }
      last.set(event.node, event.data.model.state);
    }
    expect(checked).toBeGreaterThan(100);
  });

  it('the connectivity check rejects a pair the machine cannot take', () => {
    expect(connects('device', transitionsOf('device'), 'revoked', 'linked.idle')).toBe(false);
    expect(connects('device', transitionsOf('device'), 'registering', 'linked.idle')).toBe(true);
  });
});
