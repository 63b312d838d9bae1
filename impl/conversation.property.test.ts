/**
 * Properties of a two-party conversation (fast-check; the seed and path of a failure are printed by
 * `fc.assert`, replay with `{ seed, path }`). LOCKSTEP_FULL=1 runs many more cases.
 *
 * 1. Interaction: random sends, deliveries in any order, drops and replays. An independent model
 *    of ratchet epochs predicts every outcome: a message decrypts exactly once with its plaintext
 *    unless its receiving chain has been dropped by the five-chain cap (WP-DR-09); replays are
 *    rejected; every failure leaves the receiver's record unchanged (WP-DR-11).
 * 2. Mutations and truncations of valid messages never throw and never change the record (for a
 *    PreKey message, whose header is not authenticated, a success must still yield the original
 *    plaintext).
 * 3. Random bytes as a message never throw.
 */
import { Buffer } from 'node:buffer';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { nodeProvider } from '../spec/crypto/node.js';
import {
  createParty,
  deepFreeze,
  deliverOk,
  establishedPair,
  send,
  snapshot,
  startSession,
  withFreshRng,
  type Party,
} from '../test/support/parties.js';
import type { CiphertextMessage } from './double-ratchet.js';
import { decryptMessage } from './session-record.js';
import { encodeSessionRecord } from './state-codec.js';
import { EMPTY_SESSION_RECORD } from './session-state.js';

const crypto = nodeProvider;
const FULL = Boolean(process.env['LOCKSTEP_FULL']);
const NUM_RUNS = FULL ? 300 : 30;
const SMALL = { oneTimePreKeys: 1, oneTimeKyberPreKeys: 1 } as const;
/** WP-DR-09, restated here so the model does not read it from the code under test. */
const RECEIVER_CHAINS_KEPT = 5;

type Name = 'alice' | 'bob';

interface Flight {
  readonly id: number;
  readonly to: Name;
  readonly text: string;
  /** The sender's ratchet epoch when it sent the message (model, not impl state). */
  readonly epoch: number;
  readonly message: CiphertextMessage;
}

/** The model of one party: its sending epoch and the peer epochs it holds receiving chains for. */
interface ModelParty {
  /** null until the responder has a session. */
  sendEpoch: number | null;
  chains: number[];
  readonly delivered: Set<number>;
}

type Op =
  | { readonly kind: 'send'; readonly from: Name }
  /** Send and deliver at once: advances the ratchet quickly while other messages stay held. */
  | { readonly kind: 'ping'; readonly from: Name }
  | { readonly kind: 'deliver'; readonly pick: number }
  | { readonly kind: 'drop'; readonly pick: number }
  | { readonly kind: 'replay'; readonly pick: number };

/**
 * Operations with per-run weights (swarm testing): some runs deliver eagerly, others hold messages
 * back while pings advance the ratchet, so that chains fall out of the five-chain window.
 */
function opArbitrary(weights: { readonly ping: number; readonly deliver: number }): fc.Arbitrary<Op> {
  const from = fc.constantFrom<Name>('alice', 'bob');
  return fc.oneof(
    { arbitrary: fc.record({ kind: fc.constant('send' as const), from }), weight: 4 },
    { arbitrary: fc.record({ kind: fc.constant('ping' as const), from }), weight: weights.ping },
    {
      arbitrary: fc.record({ kind: fc.constant('deliver' as const), pick: fc.nat() }),
      weight: weights.deliver,
    },
    { arbitrary: fc.record({ kind: fc.constant('drop' as const), pick: fc.nat() }), weight: 1 },
    { arbitrary: fc.record({ kind: fc.constant('replay' as const), pick: fc.nat() }), weight: 1 },
  );
}

const opsArbitrary: fc.Arbitrary<Op[]> = fc
  .record({ ping: fc.integer({ min: 0, max: 6 }), deliver: fc.integer({ min: 1, max: 6 }) })
  .chain((weights) =>
    fc.array(opArbitrary(weights), { minLength: 40, maxLength: FULL ? 300 : 120, size: 'max' }),
  );

describe('conversation properties', () => {
  const aliceTemplate = createParty('alice', crypto, 'prop-interaction', SMALL);
  const bobTemplate = createParty('bob', crypto, 'prop-interaction', SMALL);

  it("random interleaving, drops, reordering and replays: every outcome is the model's [WP-DR-06] [WP-DR-08] [WP-DR-09] [WP-DR-10] [WP-DR-11] [WP-PQXDH-09] [WP-PQXDH-10]", () => {
    fc.assert(
      fc.property(
        fc.string({ minLength: 1, maxLength: 8 }),
        opsArbitrary,
        fc.array(fc.nat(), { maxLength: 200, size: 'max' }),
        (seed, ops, finalOrder) => {
          const parties: Record<Name, Party> = {
            alice: withFreshRng(aliceTemplate, seed),
            bob: withFreshRng(bobTemplate, seed),
          };
          startSession(parties.alice, parties.bob);
          const model: Record<Name, ModelParty> = {
            // Alice holds Bob's signed prekey as epoch 0's receiving chain (WP-PQXDH-08).
            alice: { sendEpoch: 0, chains: [0], delivered: new Set() },
            bob: { sendEpoch: null, chains: [], delivered: new Set() },
          };
          const inFlight: Flight[] = [];
          const deliveredFlights: Flight[] = [];
          let nextId = 0;

          const deliverFlight = (flight: Flight, isReplay: boolean): void => {
            const receiver = parties[flight.to];
            const m = model[flight.to];
            const before = encodeSessionRecord(receiver.record);
            const prekeysBefore = receiver.prekeys;
            deepFreeze(receiver.record);
            const result = decryptMessage(receiver.env, receiver.record, receiver.prekeys, flight.message);
            const held = m.chains.includes(flight.epoch);
            const newer = m.chains.length === 0 || flight.epoch > Math.max(...m.chains);
            if (isReplay || m.delivered.has(flight.id)) {
              // WP-DR-10: a replay never decrypts; with its chain still held it is a duplicate.
              expect(result.ok).toBe(false);
              if (held && !result.ok) expect(result.error.code).toBe('DUPLICATE_MESSAGE');
            } else if (held || newer) {
              expect(result.ok ? new TextDecoder().decode(result.value.plaintext) : result.error.code).toBe(
                flight.text,
              );
              if (result.ok) {
                receiver.record = result.value.record;
                receiver.prekeys = result.value.prekeys;
              }
              m.delivered.add(flight.id);
              if (!held) {
                // The model's invariant: epochs arrive in order, one new chain per DH step.
                if (m.chains.length > 0) expect(flight.epoch).toBe(Math.max(...m.chains) + 1);
                m.chains = [...m.chains, flight.epoch].slice(-RECEIVER_CHAINS_KEPT);
                m.sendEpoch = (m.sendEpoch ?? flight.epoch) + 1;
              }
              deliveredFlights.push(flight);
              return;
            } else {
              // WP-DR-09: the chain was dropped; the message cannot decrypt.
              expect(result.ok).toBe(false);
            }
            // WP-DR-11: every failure leaves the record (and prekeys) as they were.
            expect(encodeSessionRecord(receiver.record)).toBe(before);
            expect(receiver.prekeys).toBe(prekeysBefore);
          };

          for (const op of ops) {
            if (op.kind === 'send' || op.kind === 'ping') {
              const sendEpoch = model[op.from].sendEpoch;
              if (sendEpoch === null) continue; // Bob has no session yet
              const text = `${op.from} #${nextId}`;
              const flight: Flight = {
                id: nextId++,
                to: op.from === 'alice' ? 'bob' : 'alice',
                text,
                epoch: sendEpoch,
                message: send(parties[op.from], text),
              };
              if (op.kind === 'ping') deliverFlight(flight, false);
              else inFlight.push(flight);
            } else if (op.kind === 'deliver' || op.kind === 'drop') {
              if (inFlight.length === 0) continue;
              const [flight] = inFlight.splice(op.pick % inFlight.length, 1);
              if (flight !== undefined && op.kind === 'deliver') deliverFlight(flight, false);
            } else {
              const flight = deliveredFlights[op.pick % Math.max(1, deliveredFlights.length)];
              if (flight !== undefined) deliverFlight(flight, true);
            }
          }
          // Liveness: the network heals and delivers what is left, in a random order.
          let k = 0;
          while (inFlight.length > 0) {
            const [flight] = inFlight.splice((finalOrder[k++] ?? 0) % inFlight.length, 1);
            if (flight !== undefined) deliverFlight(flight, false);
          }
          // Exactly once: each delivered id was recorded once.
          const ids = deliveredFlights.map((f) => f.id);
          expect(new Set(ids).size).toBe(ids.length);
        },
      ),
      { numRuns: NUM_RUNS },
    );
  });

  describe('mutations', () => {
    const { alice, bob } = establishedPair(crypto, 'prop-mutate', SMALL);
    const whisper = send(alice, 'an established message');
    const carol = createParty('carol', crypto, 'prop-mutate', SMALL);
    startSession(carol, bob, { choice: { preKeyId: null, kyberPreKeyId: 2 } });
    const opener = send(carol, 'a new session');
    // A PreKey message on a session Bob already holds.
    const dave = createParty('dave', crypto, 'prop-mutate', SMALL);
    startSession(dave, bob, { choice: { preKeyId: null, kyberPreKeyId: 2 } });
    deliverOk(bob, send(dave, 'dave 1'));
    const daveAgain = send(dave, 'dave 2');
    deepFreeze(bob.record);
    deepFreeze(bob.prekeys);
    const samples = [
      { message: whisper, text: 'an established message' },
      { message: opener, text: 'a new session' },
      { message: daveAgain, text: 'dave 2' },
    ];

    type Mutation =
      | { readonly kind: 'flip'; readonly index: number; readonly mask: number }
      | { readonly kind: 'truncate'; readonly length: number }
      | { readonly kind: 'insert'; readonly index: number; readonly byte: number }
      | { readonly kind: 'delete'; readonly index: number };
    const mutationArbitrary: fc.Arbitrary<Mutation> = fc.oneof(
      fc.record({
        kind: fc.constant('flip' as const),
        index: fc.nat(),
        mask: fc.integer({ min: 1, max: 255 }),
      }),
      fc.record({ kind: fc.constant('truncate' as const), length: fc.nat() }),
      fc.record({
        kind: fc.constant('insert' as const),
        index: fc.nat(),
        byte: fc.integer({ min: 0, max: 255 }),
      }),
      fc.record({ kind: fc.constant('delete' as const), index: fc.nat() }),
    );
    function mutate(bytes: Uint8Array, mutation: Mutation): Uint8Array {
      const out = Array.from(bytes);
      // Flips and deletions address an existing byte; truncations and insertions also the end.
      const room = mutation.kind === 'flip' || mutation.kind === 'delete' ? bytes.length : bytes.length + 1;
      if (room === 0) return bytes;
      const index = (mutation.kind === 'truncate' ? mutation.length : mutation.index) % room;
      switch (mutation.kind) {
        case 'flip':
          out[index] = (out[index] ?? 0) ^ mutation.mask;
          break;
        case 'truncate':
          out.length = index;
          break;
        case 'insert':
          out.splice(index, 0, mutation.byte);
          break;
        case 'delete':
          out.splice(index, 1);
          break;
      }
      return Uint8Array.from(out);
    }

    it('random mutations and truncations of valid messages never throw and never change the record [WP-DR-05] [WP-DR-11]', () => {
      const before = snapshot(bob);
      fc.assert(
        fc.property(
          fc.constantFrom(...samples),
          fc.array(mutationArbitrary, { minLength: 1, maxLength: 3 }),
          fc.boolean(),
          (sample, mutations, asOtherType) => {
            const bytes = mutations.reduce(mutate, sample.message.bytes);
            fc.pre(Buffer.compare(bytes, sample.message.bytes) !== 0);
            const type = asOtherType
              ? sample.message.type === 'prekey'
                ? 'whisper'
                : 'prekey'
              : sample.message.type;
            const result = decryptMessage(bob.env, bob.record, bob.prekeys, { type, bytes });
            if (sample.message.type === 'whisper') {
              // Every byte of a SignalMessage is under the MAC.
              expect(result.ok).toBe(false);
            } else if (result.ok) {
              // A PreKey message header is not authenticated (e.g. registration_id), but the content is.
              expect(new TextDecoder().decode(result.value.plaintext)).toBe(sample.text);
            }
            expect(snapshot(bob)).toBe(before);
          },
        ),
        { numRuns: NUM_RUNS * 10 },
      );
    });

    it('random bytes as a message never throw [WP-WIRE-06]', () => {
      const before = snapshot(bob);
      fc.assert(
        fc.property(
          fc.uint8Array({ maxLength: 2000 }),
          fc.constantFrom<CiphertextMessage['type']>('whisper', 'prekey'),
          fc.boolean(),
          fc.boolean(),
          (random, type, withVersion, emptyRecord) => {
            const bytes = withVersion ? Uint8Array.from([0x44, ...random]) : random;
            const record = emptyRecord ? EMPTY_SESSION_RECORD : bob.record;
            const result = decryptMessage(bob.env, record, bob.prekeys, { type, bytes });
            expect(result.ok).toBe(false);
            expect(snapshot(bob)).toBe(before);
          },
        ),
        { numRuns: NUM_RUNS * 10 },
      );
    });
  });
});
