/**
 * The visualiser's trace layer (viz/src/trace/), in Node against traces the simulator makes here:
 * lanes and messages match what the trace records, rebuilt abstract states hash to the trace's own
 * `abstractHash` at every event, recorded model paths map onto drawn transitions, derived states
 * agree with recorded ones, the ShiViz export follows ShiViz's clock rules, the whitepaper index
 * finds every rule, and the page builds the same configuration as `lockstep sim`.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { prepareRun } from '../../cli/config.js';
import { canonicalJson } from '../../simulator/canonical.js';
import { presetConfig } from '../../simulator/presets.js';
import { runSimulation } from '../../simulator/run.js';
import { ERROR_RULES } from '../../spec/errors.js';
import { nodeProvider } from '../../spec/crypto/node.js';
import { toHex } from '../../spec/hex.js';
import { tileTrace, traceText } from '../server/fixtures.js';
import {
  deriveDeviceState,
  firedTransitions,
  fullStateId,
  parseMachine,
  recordedPosition,
} from '../src/trace/machine.js';
import { buildMessages } from '../src/trace/messages.js';
import { compareLanes, laneOf, modelStepOf, parseTrace, type TraceModel } from '../src/trace/model.js';
import { TRACE_FORMAT_VERSION } from '../../simulator/trace.js';
import { cliCommand, decodeRun, encodeRun, pageRunConfig, type PageRun } from '../src/trace/run-config.js';
import { SHIVIZ_REGEX, shivizLog } from '../src/trace/shiviz.js';
import { StateIndex } from '../src/trace/state.js';
import { parseWhitepaper } from '../src/trace/whitepaper.js';

const bothRun = runSimulation(presetConfig('smoke', 1, { engine: 'both' }), { crypto: nodeProvider });
const both = parseTrace(traceText(bothRun.lines));
const implRun = runSimulation(presetConfig('smoke', 4, { engine: 'impl' }), { crypto: nodeProvider });
const impl = parseTrace(traceText(implRun.lines));

interface RawEvent {
  readonly kind: string;
  readonly node: string;
  readonly data: Record<string, unknown>;
  readonly vc: Record<string, number>;
}

function raw(lines: readonly string[]): RawEvent[] {
  return lines.slice(1).map((line) => JSON.parse(line) as RawEvent);
}

function machine(name: string): ReturnType<typeof parseMachine> {
  return parseMachine(readFileSync(new URL(`../../model/diagrams/${name}.json`, import.meta.url), 'utf8'));
}

const sha16 = (text: string): string =>
  toHex(nodeProvider.sha256(new TextEncoder().encode(text)).subarray(0, 8));

/** Part order of simulator/summaries.ts: device, trust, then per user `user:` and its records. */
function devicePartOrder(keys: readonly string[]): string[] {
  const rank = (key: string): [number, number, number, number] => {
    if (key === 'device') return [0, 0, 0, 0];
    if (key === 'trust') return [1, 0, 0, 0];
    const user = /^user:u(\d+)$/.exec(key);
    if (user !== null) return [2, Number(user[1]), 0, 0];
    const record = /^record:u(\d+)\.(\d+)$/.exec(key);
    if (record !== null) return [2, Number(record[1]), 1, Number(record[2])];
    return [3, 0, 0, 0];
  };
  return [...keys].sort((a, b) => {
    const ra = rank(a);
    const rb = rank(b);
    for (let i = 0; i < 4; i++) if ((ra[i] ?? 0) !== (rb[i] ?? 0)) return (ra[i] ?? 0) - (rb[i] ?? 0);
    return 0;
  });
}

/** Server part order: relay, then accounts by user id (code-unit order). */
function serverPartOrder(keys: readonly string[]): string[] {
  return [...keys].sort((a, b) => (a === 'relay' ? -1 : b === 'relay' ? 1 : a < b ? -1 : a > b ? 1 : 0));
}

/** The trace's `abstractHash` recomputed from rebuilt parts (simulator/summaries.ts). */
function abstractHashOf(parts: ReadonlyMap<string, unknown>, server: boolean): string {
  const keys = server ? serverPartOrder([...parts.keys()]) : devicePartOrder([...parts.keys()]);
  return sha16(keys.map((key) => `${key}=${sha16(canonicalJson(parts.get(key)))}`).join(';'));
}

describe('trace model', () => {
  it('has one lane per device install plus the server, and every event of the trace', () => {
    const events = raw(bothRun.lines);
    const devices = new Set(events.map((e) => e.node).filter((n) => /^u\d+\/\d+r*$/.test(n)));
    expect(both.events).toHaveLength(bothRun.lines.length - 1);
    expect(both.lanes.map((l) => l.node)).toEqual(['server', ...[...devices].sort()]);
    expect(both.hasModelState).toBe(true);
    expect(impl.hasModelState).toBe(false);
  });

  it('refuses text that is not a Lockstep trace, and a format it does not know', () => {
    expect(() => parseTrace('hello\n')).toThrow(/not JSON/);
    expect(() => parseTrace('{"type":"header","format":"other"}\n')).toThrow(/not a Lockstep trace header/);
    const header = JSON.parse(bothRun.lines[0] ?? '{}') as Record<string, unknown>;
    expect(() => parseTrace(`${JSON.stringify({ ...header, formatVersion: 99 })}\n`)).toThrow(/version 99/);
    expect(() => parseTrace(`${JSON.stringify({ ...header, formatVersion: 0 })}\n`)).toThrow(/version 0/);
    // Every earlier version still opens (their events are a subset of the current format's).
    for (let version = 1; version < TRACE_FORMAT_VERSION; version++)
      expect(parseTrace(`${JSON.stringify({ ...header, formatVersion: version })}\n`).events).toEqual([]);
  });

  it("gives the attacker and a device's clone lanes of their own, the attacker last", () => {
    const lanes = ['attacker', 'u1/1', 'u0/1c', 'server', 'u0/1', 'u0/2r'].map((n) => laneOf(n));
    expect(lanes.map((l) => l?.kind)).toEqual(['attacker', 'device', 'device', 'server', 'device', 'device']);
    expect(lanes[2]?.clone).toBe(true);
    expect(lanes[4]?.clone).toBeUndefined();
    const sorted = lanes.flatMap((l) => (l === null ? [] : [l])).sort(compareLanes);
    expect(sorted.map((l) => l.node)).toEqual(['server', 'u0/1', 'u0/1c', 'u0/2r', 'u1/1', 'attacker']);
    expect(laneOf('oracle')).toBeNull();
    expect(laneOf('checker')).toBeNull();
  });
});

describe('messages', () => {
  for (const [name, run, model] of [
    ['both', bothRun, both],
    ['impl', implRun, impl],
  ] as const) {
    it(`draws each packet the ${name} trace records once, with its fate`, () => {
      const events = raw(run.lines);
      const messages = buildMessages(model as TraceModel);
      const serverRequests = events.filter((e) => e.kind === 'request' && e.node === 'server').length;
      const responsesIn = events.filter(
        (e) => e.kind === 'step' && (e.data.input as { kind?: string } | undefined)?.kind === 'net.response',
      ).length;
      const drops = events.filter((e) => e.kind === 'net' && e.data.action === 'drop').length;
      const requestsOut = events
        .filter((e) => e.kind === 'step')
        .reduce(
          (n, e) =>
            n +
            ((e.data.outputs as { kind: string }[] | undefined) ?? []).filter((o) => o.kind === 'request')
              .length,
          0,
        );
      const all = messages.messages;
      const count = (f: (m: (typeof all)[number]) => boolean): number => all.filter(f).length;
      expect(count((m) => m.kind === 'request' && m.fate === 'delivered')).toBe(serverRequests);
      expect(count((m) => m.kind === 'response' && m.fate === 'delivered')).toBe(responsesIn);
      expect(count((m) => m.fate === 'dropped')).toBe(drops);
      expect(count((m) => m.kind === 'request' && !m.duplicate)).toBe(requestsOut);
      expect(count((m) => m.kind === 'response' && !m.duplicate)).toBe(serverRequests);
      for (const m of all) {
        const sent = model.events[m.sendEvent];
        expect(sent?.node).toBe(m.from);
        if (m.fate === 'delivered') {
          const received = model.events[m.endEvent];
          expect(received?.node).toBe(m.to);
          expect(m.endEvent).toBeGreaterThan(m.sendEvent);
        }
      }
    });
  }

  it('finds duplicates, drops on sending and on arrival, and pushes in a faulty run', () => {
    const c = buildMessages(both).counts;
    expect(c.duplicates).toBeGreaterThan(0);
    expect(c.dropped).toBeGreaterThan(0);
    expect(c.pushes).toBeGreaterThan(0);
    const dropped = buildMessages(both).messages.filter((m) => m.fate === 'dropped');
    expect(dropped.some((m) => m.droppedAtSend)).toBe(true);
    expect(dropped.some((m) => !m.droppedAtSend)).toBe(true);
  });
});

describe('abstract state', () => {
  for (const [name, model] of [
    ['both', both],
    ['impl', impl],
  ] as const) {
    it(`rebuilds every node's state so that it hashes to the ${name} trace's abstractHash at each event`, () => {
      const states = new StateIndex(model);
      let checked = 0;
      // Visit out of order, so checkpoints are built and reused in both directions.
      const indexes = model.events.map((e) => e.index).reverse();
      for (const index of indexes) {
        const event = model.events[index];
        const hash = event?.data.abstractHash;
        if (event === undefined || typeof hash !== 'string') continue;
        const state = states.at(event.node, index);
        expect(state.event).toBe(index);
        expect(
          abstractHashOf(state.parts, event.node === 'server'),
          `${event.kind} #${index} at ${event.node}`,
        ).toBe(hash);
        checked++;
      }
      expect(checked).toBeGreaterThan(500);
    });
  }
});

describe('statecharts', () => {
  const device = machine('device');
  const server = machine('server');
  const session = machine('session');

  it('reads every state and transition of the three machines, eventless ones included', () => {
    const manifest = JSON.parse(
      readFileSync(new URL('../../model/manifest.json', import.meta.url), 'utf8'),
    ) as Record<string, { states: number; transitions: number }>;
    for (const m of [device, server, session]) {
      const expected = manifest[m.id];
      expect(expected, m.id).toBeDefined();
      // The manifest counts states below the root.
      expect(m.states.size - 1).toBe(expected?.states);
      expect(m.transitions).toHaveLength(expected?.transitions ?? -1);
      expect(m.transitions.some((t) => t.event === '(always)')).toBe(true);
    }
  });

  it('maps every consecutive pair of a recorded path onto drawn transitions', () => {
    let pairs = 0;
    for (const event of both.events) {
      const step = modelStepOf(event);
      if (step === null) continue;
      const m = event.node === 'server' ? server : device;
      const position = recordedPosition(m, step.path, step.state);
      expect(m.states.has(position.state), position.state).toBe(true);
      for (let i = 0; i + 1 < step.path.length; i++) {
        const from = fullStateId(m, step.path[i] ?? '');
        const to = fullStateId(m, step.path[i + 1] ?? '');
        expect(firedTransitions(m, from, to).length, `${event.node} ${from} → ${to}`).toBeGreaterThan(0);
        pairs++;
      }
    }
    expect(pairs).toBeGreaterThan(1000);
  });

  it("derives from the abstract lifecycle the device machine's recorded resting state", () => {
    const states = new StateIndex(both);
    let compared = 0;
    for (const event of both.events) {
      const step = modelStepOf(event);
      if (step === null || event.node === 'server') continue;
      const state = states.at(event.node, event.index);
      const lifecycle = (parts: ReadonlyMap<string, unknown>): string | null =>
        (parts.get('device') as { lifecycle?: string } | undefined)?.lifecycle ?? null;
      const derived = deriveDeviceState(device, lifecycle(state.previous), lifecycle(state.parts));
      expect(derived.state, `#${event.index + 1} ${event.node}`).toBe(fullStateId(device, step.state));
      compared++;
    }
    expect(compared).toBeGreaterThan(200);
  });
});

describe('ShiViz export', () => {
  it("writes the regex, an empty delimiter, then two lines per event whose host's own clock counts up by one", () => {
    const log = shivizLog(both);
    expect(log).not.toBeNull();
    const lines = (log ?? '').split('\n');
    expect(lines[0]).toBe(SHIVIZ_REGEX);
    expect(lines[1]).toBe('');
    const entries = lines.slice(2, -1);
    expect(entries.length).toBe(both.events.length * 2);
    const own = new Map<string, number>();
    const parser = new RegExp(SHIVIZ_REGEX.replace('\\n', '\\n'));
    for (let i = 0; i < entries.length; i += 2) {
      const match = parser.exec(`${entries[i] ?? ''}\n${entries[i + 1] ?? ''}`);
      expect(match?.groups?.host).toBeDefined();
      const host = match?.groups?.host ?? '';
      const clock = JSON.parse(match?.groups?.clock ?? '{}') as Record<string, number>;
      expect(clock[host]).toBe((own.get(host) ?? 0) + 1);
      own.set(host, clock[host] ?? 0);
    }
  });
});

describe('whitepaper', () => {
  it('indexes every rule between the rules markers, each error code rule among them', () => {
    const text = readFileSync(new URL('../../WHITEPAPER.md', import.meta.url), 'utf8');
    const paper = parseWhitepaper(text);
    const region = text.slice(text.indexOf('<!-- rules:begin -->'), text.indexOf('<!-- rules:end -->'));
    const ids = new Set([...region.matchAll(/^- \*\*(WP-[A-Z]+-\d+)\*\*/gm)].map((m) => m[1]));
    expect(new Set(paper.rules.keys())).toEqual(ids);
    for (const rule of Object.values(ERROR_RULES)) expect(paper.rules.has(rule), rule).toBe(true);
    const first = paper.rules.values().next().value;
    expect(text.split('\n')[(first?.line ?? 1) - 1]).toContain(first?.id ?? '?');
  });

  it('opens a rule in its own protocol subsection (### 6.N), not the whole of part 6', () => {
    const paper = parseWhitepaper(readFileSync(new URL('../../WHITEPAPER.md', import.meta.url), 'utf8'));
    for (const rule of paper.rules.values()) expect(rule.section, rule.id).toMatch(/^6\.\d+ /);
    expect(paper.sections.map((s) => s.heading)).toContain('6. Protocols');
  });
});

describe('runs in the page', () => {
  const runs: PageRun[] = [
    { seed: 1, preset: 'smoke', engine: 'impl', bugs: [], faults: {} },
    {
      seed: 9,
      preset: 'default',
      engine: 'both',
      bugs: ['deliver-twice'],
      faults: { loss: 0.2, corruption: 0 },
    },
    { seed: 3, preset: 'peak-day', engine: 'model', bugs: [], faults: { serverCrashes: 3 } },
  ];
  for (const run of runs) {
    it(`builds the configuration lockstep sim builds (${cliCommand(run)})`, () => {
      const args = cliCommand(run).split(' ').slice(3);
      const value = (flag: string): string | undefined => args[args.indexOf(flag) + 1];
      const faultOverrides: Record<string, number> = {};
      for (const [field, number] of Object.entries(run.faults)) faultOverrides[field] = number;
      const cli = prepareRun({
        seed: Number(value('--seed')),
        preset: run.preset,
        engine: run.engine,
        bugs: run.bugs,
        scenario: null,
        swarmFaults: false,
        adversary: 0,
        mode: null,
        faultOverrides,
      });
      expect(canonicalJson(pageRunConfig(run))).toBe(canonicalJson(cli.config));
      const params = new URLSearchParams();
      encodeRun(run, params);
      expect(decodeRun(params)).toEqual(run);
    });
  }
});

describe('large-trace fixture', () => {
  it('repeats a trace into an ordered one of the requested size whose clocks still count by one', () => {
    const lines = tileTrace(implRun.lines, 3_000);
    expect(lines.length - 1).toBeGreaterThanOrEqual(3_000);
    const model = parseTrace(traceText(lines));
    const own = new Map<string, number>();
    let t = 0;
    for (const event of model.events) {
      expect(event.t).toBeGreaterThanOrEqual(t);
      t = event.t;
      const count = event.vc[event.node];
      expect(count).toBe((own.get(event.node) ?? 0) + 1);
      own.set(event.node, count ?? 0);
    }
  });
});
