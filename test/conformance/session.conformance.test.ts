/**
 * Random long conversations on both engines at once (fast-check; the seed and path of a failure are
 * printed by `fc.assert` and replay with `{ seed, path }`). After every action both engines must
 * agree on outputs (wire bytes, plaintexts, error code and rule), on the sizes of their random
 * draws, and on the abstract state of every record (spec/abstract.ts).
 *
 * 1. Two parties: sends, in-order and out-of-order delivery, loss, duplicates, tampering, and
 *    re-initiation with new (or stale) bundles from either side, interleaved at random.
 * 2. Two accounts with two devices each (2×2): every device keeps one session record per other
 *    device and one prekey store shared by all of them, as Sesame does (a model runner per pair,
 *    restarted from the device's record and prekeys at each step). Any device sends to or
 *    re-initiates with any other, and messages are delivered, lost, duplicated and reordered.
 *
 * LOCKSTEP_FULL=1 runs many more and longer conversations.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { utf8 } from '../../spec/bytes.js';
import { nodeProvider } from '../../spec/crypto/node.js';
import { seededRng } from '../../spec/rng.js';
import { createSessionMachine, type SessionMachine } from '../../model/session.js';
import type { SessionRecordData } from '../../model/session-data.js';
import type { SessionRecord } from '../../impl/index.js';
import {
  bundleFrom,
  compareObservations,
  describeAction,
  describeDivergence,
  implSessionParty,
  modelSessionParty,
  partyKeys,
  recordingRng,
  replaySessionActions,
  SESSION_T0,
  type BundleChoice,
  type EngineName,
  type Observation,
  type PartyKeys,
  type PreKeyStoreLike,
  type RecordingRng,
  type SessionAction,
  type SessionOutput,
  type Side,
  type Tampering,
} from './support.js';

const crypto = nodeProvider;
const FULL = Boolean(process.env['LOCKSTEP_FULL']);

// ---------------------------------------------------------------------------------------------
// Two parties
// ---------------------------------------------------------------------------------------------

const side = fc.constantFrom<Side>('A', 'B');

function actionArbitrary(weights: {
  readonly deliver: number;
  readonly reinit: number;
}): fc.Arbitrary<SessionAction> {
  return fc.oneof(
    { arbitrary: fc.record({ kind: fc.constant('send' as const), by: side }), weight: 5 },
    {
      arbitrary: fc.record({
        kind: fc.constant('deliver' as const),
        to: side,
        pick: fc.constantFrom<'oldest' | 'newest'>('oldest', 'newest'),
      }),
      weight: weights.deliver,
    },
    { arbitrary: fc.record({ kind: fc.constant('drop' as const), to: side }), weight: 1 },
    { arbitrary: fc.record({ kind: fc.constant('duplicate' as const), to: side }), weight: 1 },
    {
      arbitrary: fc.record({
        kind: fc.constant('bundle' as const),
        by: side,
        choice: fc.constantFrom<BundleChoice>('fresh', 'noOneTime', 'lastResort', 'stale'),
      }),
      weight: weights.reinit,
    },
    {
      arbitrary: fc.record({
        kind: fc.constant('tamper' as const),
        to: side,
        how: fc.constantFrom<Tampering>('mac', 'farFuture', 'version3', 'kyberPreKeyId', 'badPadding'),
      }),
      weight: 1,
    },
    {
      arbitrary: fc.record({
        kind: fc.constant('pingPong' as const),
        rounds: fc.integer({ min: 1, max: 3 }),
      }),
      weight: 1,
    },
  );
}

/** Per-run weights (swarm testing): some runs deliver eagerly, others re-initiate often. */
const conversation: fc.Arbitrary<SessionAction[]> = fc
  .record({ deliver: fc.integer({ min: 1, max: 8 }), reinit: fc.integer({ min: 0, max: 3 }) })
  .chain((weights) =>
    fc
      .array(actionArbitrary(weights), { minLength: 20, maxLength: FULL ? 250 : 70, size: 'max' })
      // Every conversation starts with someone processing the other's bundle.
      .map((actions): SessionAction[] => [{ kind: 'bundle', by: 'A', choice: 'fresh' }, ...actions]),
  );

describe('session conformance: random two-party conversations', () => {
  const keys = { A: partyKeys(crypto, 'conformance/A'), B: partyKeys(crypto, 'conformance/B') };
  let sequences = 0;
  let steps = 0;

  it('impl/ and model/ agree after every send, delivery, loss, duplicate, reordering, tampering and re-initiation [WP-DR-06] [WP-DR-10] [WP-DR-11] [WP-REC-02] [WP-PQXDH-10]', () => {
    fc.assert(
      fc.property(fc.string({ minLength: 1, maxLength: 6 }), conversation, (seed, actions) => {
        const result = replaySessionActions(crypto, keys, `conversation/${seed}`, actions);
        sequences++;
        steps += result.steps;
        if (result.divergence !== null) {
          throw new Error(
            `${describeDivergence(result.divergence)}\n  actions: ${actions.map(describeAction).join(' → ')}`,
          );
        }
      }),
      { numRuns: FULL ? 300 : 60 },
    );
    console.log(`two parties: ${sequences} random conversations, ${steps} steps, no divergence`);
    expect(sequences).toBeGreaterThan(0);
  });
});

// ---------------------------------------------------------------------------------------------
// Two accounts with two devices each
// ---------------------------------------------------------------------------------------------

const DEVICES = ['A1', 'A2', 'B1', 'B2'] as const;
type DeviceName = (typeof DEVICES)[number];

type DeviceAction =
  | { readonly kind: 'send'; readonly from: DeviceName; readonly to: DeviceName }
  | {
      readonly kind: 'bundle';
      readonly by: DeviceName;
      readonly of: DeviceName;
      readonly choice: BundleChoice;
    }
  | {
      readonly kind: 'deliver';
      readonly to: DeviceName;
      readonly from: DeviceName;
      readonly pick: 'oldest' | 'newest';
    }
  | { readonly kind: 'drop'; readonly to: DeviceName; readonly from: DeviceName }
  | { readonly kind: 'duplicate'; readonly to: DeviceName; readonly from: DeviceName };

interface Flight {
  readonly messageType: 'prekey' | 'whisper';
  readonly bytes: Uint8Array;
}

/** One engine's four devices: keys, shared prekey stores, a record per peer, the network. */
class DeviceWorld {
  readonly rngs = new Map<DeviceName, RecordingRng>();
  readonly prekeys = new Map<DeviceName, PreKeyStoreLike>();
  readonly records = new Map<string, unknown>();
  readonly inFlight = new Map<string, Flight[]>();
  readonly delivered = new Map<string, Flight[]>();
  readonly machines = new Map<DeviceName, SessionMachine>();
  sent = 0;

  constructor(
    readonly engine: EngineName,
    readonly keys: ReadonlyMap<DeviceName, PartyKeys>,
    seed: string,
  ) {
    for (const device of DEVICES) {
      const rng = recordingRng(seededRng(`${seed}/${device}`));
      this.rngs.set(device, rng);
      this.prekeys.set(device, this.keysOf(device).prekeys);
      if (engine === 'model') this.machines.set(device, createSessionMachine({ crypto, rng }));
    }
  }

  keysOf(device: DeviceName): PartyKeys {
    const keys = this.keys.get(device);
    if (keys === undefined) throw new Error(`no keys for ${device}`);
    return keys;
  }

  /** Runs `operation` on `device`'s record for `peer`, then stores the record and shared prekeys. */
  withParty(
    device: DeviceName,
    peer: DeviceName,
    operation: (party: ReturnType<typeof implSessionParty>) => SessionOutput[],
  ): SessionOutput[] {
    const rng = this.rngs.get(device) ?? recordingRng(seededRng('unused'));
    const record = this.records.get(`${device}>${peer}`);
    const prekeys = this.prekeys.get(device) ?? this.keysOf(device).prekeys;
    const party =
      this.engine === 'impl'
        ? implSessionParty(crypto, rng, this.keysOf(device), {
            ...(record === undefined ? {} : { record: record as SessionRecord }),
            prekeys,
          })
        : modelSessionParty(crypto, rng, this.keysOf(device), {
            ...(record === undefined ? {} : { record: record as SessionRecordData }),
            prekeys,
            ...(this.machines.has(device) ? { machine: this.machines.get(device) as SessionMachine } : {}),
          });
    const outputs = operation(party);
    const data = party.data();
    this.records.set(`${device}>${peer}`, data.record);
    this.prekeys.set(device, data.prekeys);
    return outputs;
  }

  queue(map: Map<string, Flight[]>, to: DeviceName, from: DeviceName): Flight[] {
    const key = `${from}>${to}`;
    let queue = map.get(key);
    if (queue === undefined) {
      queue = [];
      map.set(key, queue);
    }
    return queue;
  }

  apply(action: DeviceAction): { device: DeviceName; output: SessionOutput }[] {
    const out: { device: DeviceName; output: SessionOutput }[] = [];
    const record = (device: DeviceName, to: DeviceName, outputs: SessionOutput[]): void => {
      for (const output of outputs) {
        out.push({ device, output });
        if (output.type === 'session.message') this.queue(this.inFlight, to, device).push(output);
      }
    };
    const deliver = (to: DeviceName, from: DeviceName, flight: Flight): void => {
      record(
        to,
        from,
        this.withParty(to, from, (party) => party.deliver(flight.messageType, flight.bytes)),
      );
    };
    switch (action.kind) {
      case 'send': {
        this.sent++;
        const text = utf8(`message ${this.sent} from ${action.from} to ${action.to}`);
        record(
          action.from,
          action.to,
          this.withParty(action.from, action.to, (party) => party.send(text, SESSION_T0)),
        );
        break;
      }
      case 'bundle': {
        const store = this.prekeys.get(action.of) ?? this.keysOf(action.of).prekeys;
        const bundle = bundleFrom(
          this.keysOf(action.of),
          store,
          action.choice === 'stale' ? 'noOneTime' : action.choice,
        );
        record(
          action.by,
          action.of,
          this.withParty(action.by, action.of, (party) => party.processBundle(bundle, SESSION_T0)),
        );
        break;
      }
      case 'deliver': {
        const queue = this.queue(this.inFlight, action.to, action.from);
        const flight = action.pick === 'oldest' ? queue.shift() : queue.pop();
        if (flight === undefined) break;
        this.queue(this.delivered, action.to, action.from).push(flight);
        deliver(action.to, action.from, flight);
        break;
      }
      case 'drop':
        this.queue(this.inFlight, action.to, action.from).shift();
        break;
      case 'duplicate': {
        const done = this.queue(this.delivered, action.to, action.from);
        const last = done[done.length - 1];
        if (last !== undefined) deliver(action.to, action.from, last);
        break;
      }
    }
    return out;
  }

  observe(outputs: readonly { device: DeviceName; output: SessionOutput }[]): Observation {
    const draws: Record<string, number[]> = {};
    const abstract: Record<string, unknown> = {};
    for (const device of DEVICES) {
      draws[device] = this.rngs.get(device)?.take() ?? [];
      const records: Record<string, unknown> = {};
      let prekeys: unknown = null;
      for (const peer of DEVICES) {
        if (peer === device || !this.records.has(`${device}>${peer}`)) continue;
        // A throwaway party reads the stored record through the engine's own projection.
        const scratch = recordingRng(seededRng('observe'));
        const record = this.records.get(`${device}>${peer}`);
        const store = this.prekeys.get(device) ?? this.keysOf(device).prekeys;
        const party =
          this.engine === 'impl'
            ? implSessionParty(crypto, scratch, this.keysOf(device), {
                record: record as SessionRecord,
                prekeys: store,
              })
            : modelSessionParty(crypto, scratch, this.keysOf(device), {
                record: record as SessionRecordData,
                prekeys: store,
                ...(this.machines.has(device)
                  ? { machine: this.machines.get(device) as SessionMachine }
                  : {}),
              });
        const view = party.abstract() as { record: unknown; prekeys: unknown };
        records[peer] = view.record;
        prekeys = view.prekeys;
      }
      abstract[device] = { records, prekeys };
    }
    return { outputs, draws, abstract };
  }
}

const deviceName = fc.constantFrom<DeviceName>(...DEVICES);
const pair = fc
  .tuple(deviceName, deviceName)
  .filter(([a, b]) => a !== b)
  .map(([a, b]) => ({ a, b }));

const deviceAction: fc.Arbitrary<DeviceAction> = fc.oneof(
  { arbitrary: pair.map(({ a, b }): DeviceAction => ({ kind: 'send', from: a, to: b })), weight: 5 },
  {
    arbitrary: fc
      .tuple(pair, fc.constantFrom<'oldest' | 'newest'>('oldest', 'newest'))
      .map(([{ a, b }, pick]): DeviceAction => ({ kind: 'deliver', to: a, from: b, pick })),
    weight: 6,
  },
  { arbitrary: pair.map(({ a, b }): DeviceAction => ({ kind: 'drop', to: a, from: b })), weight: 1 },
  { arbitrary: pair.map(({ a, b }): DeviceAction => ({ kind: 'duplicate', to: a, from: b })), weight: 1 },
  {
    arbitrary: fc
      .tuple(pair, fc.constantFrom<BundleChoice>('fresh', 'noOneTime', 'lastResort'))
      .map(([{ a, b }, choice]): DeviceAction => ({ kind: 'bundle', by: a, of: b, choice })),
    weight: 3,
  },
);

describe('session conformance: two accounts with two devices each', () => {
  const keys = new Map<DeviceName, PartyKeys>(DEVICES.map((d) => [d, partyKeys(crypto, `conformance/${d}`)]));
  let sequences = 0;
  let steps = 0;

  it('impl/ and model/ agree on every record of every device, with one prekey store shared per device [WP-PQXDH-06] [WP-PQXDH-07] [WP-REC-01] [WP-REC-02]', () => {
    fc.assert(
      fc.property(
        fc.string({ minLength: 1, maxLength: 6 }),
        fc.array(deviceAction, { minLength: 20, maxLength: FULL ? 200 : 60, size: 'max' }),
        (seed, actions) => {
          const impl = new DeviceWorld('impl', keys, `devices/${seed}`);
          const model = new DeviceWorld('model', keys, `devices/${seed}`);
          sequences++;
          for (const [index, action] of actions.entries()) {
            const implOut = impl.apply(action);
            const modelOut = model.apply(action);
            steps++;
            const divergence = compareObservations(
              index,
              JSON.stringify(action),
              impl.observe(implOut),
              model.observe(modelOut),
            );
            if (divergence !== null) {
              throw new Error(
                `${describeDivergence(divergence, '2×2 devices')}\n  actions: ${JSON.stringify(actions)}`,
              );
            }
          }
        },
      ),
      { numRuns: FULL ? 100 : 20 },
    );
    console.log(`2×2 devices: ${sequences} random conversations, ${steps} steps, no divergence`);
    expect(sequences).toBeGreaterThan(0);
  });
});
