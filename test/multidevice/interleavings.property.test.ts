/**
 * Property: two users with two or three devices each, random interleavings of sends from random
 * devices, fetches, resend timers and network faults (packets dropped, duplicated or delayed behind later ones, drawn from the
 * property's random stream), then a healing phase (a reliable network, resend timers, fetches
 * until quiet). Every message must then have reached every device of its recipient and every other
 * device of its sender (as a sync copy) exactly once, with the plaintext that was sent, and no
 * device may have shown anything twice (WP-XPORT-01, WP-XPORT-02, WP-SES-05), and no device may have
 * reported a clone (WP-SES-20: the devices run the hardened default).
 *
 * numRuns: 15 by default, 100 with LOCKSTEP_FULL=1; a failure prints fast-check's seed and path.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  addContact,
  createWorld,
  deliverOne,
  device,
  input,
  resendAll,
  sendQueued,
  sync,
  type World,
} from '../support/world.js';
import { createUser, expectNothingShownTwice, linkedDevicesOf, timesSeen } from './stories.js';

const NUM_RUNS = process.env['LOCKSTEP_FULL'] ? 100 : 15;

/** What the network does with the next packet; `delay` sends it to the back of the queue (reordering). */
type Fault = 'deliver' | 'drop' | 'duplicate' | 'delay';

type Command =
  | { readonly kind: 'send'; readonly device: number }
  | { readonly kind: 'fetch'; readonly device: number }
  | { readonly kind: 'resend'; readonly device: number }
  | { readonly kind: 'network'; readonly faults: readonly Fault[] };

const fault: fc.Arbitrary<Fault> = fc.oneof(
  { weight: 6, arbitrary: fc.constant('deliver' as const) },
  { weight: 1, arbitrary: fc.constant('drop' as const) },
  { weight: 1, arbitrary: fc.constant('duplicate' as const) },
  { weight: 1, arbitrary: fc.constant('delay' as const) },
);

const command: fc.Arbitrary<Command> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('send' as const), device: fc.nat(5) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('fetch' as const), device: fc.nat(5) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('resend' as const), device: fc.nat(5) }) },
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant('network' as const),
      faults: fc.array(fault, { minLength: 1, maxLength: 12 }),
    }),
  },
);

interface Sent {
  readonly from: string;
  readonly to: string;
  readonly text: string;
}

function setup(seed: number, aliceDevices: number, bobDevices: number): { w: World; names: string[] } {
  const w = createWorld(`interleavings-${seed}`);
  const alice = createUser(w, 'alice', aliceDevices - 1);
  const bob = createUser(w, 'bob', bobDevices - 1);
  for (const name of alice) addContact(w, name, 'bob');
  for (const name of bob) addContact(w, name, 'alice');
  return { w, names: [...alice, ...bob] };
}

/** Reliable network, resend timers and fetches until nothing is pending anywhere. */
function heal(w: World): void {
  w.policy = () => 'deliver';
  for (let round = 0; round < 12; round++) {
    resendAll(w);
    sync(w, 2);
    const busy = [...w.devices.values()].some(
      (d) => d.outbox.length > 0 || d.pending.length > 0 || d.parked.length > 0,
    );
    if (!busy && w.queue.length === 0) return;
  }
}

describe('random interleavings with a lossy, duplicating network', () => {
  it('after healing, every message reached every intended device exactly once, and no clone was reported [WP-XPORT-01] [WP-XPORT-02] [WP-SES-05] [WP-SES-20]', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 1_000_000 }),
        fc.integer({ min: 2, max: 3 }),
        fc.integer({ min: 2, max: 3 }),
        fc.array(command, { minLength: 5, maxLength: 40 }),
        (seed, aliceDevices, bobDevices, commands) => {
          const { w, names } = setup(seed, aliceDevices, bobDevices);
          const sent: Sent[] = [];
          for (const c of commands) {
            if (c.kind === 'network') {
              for (const f of c.faults) {
                const next = w.queue[0];
                if (next === undefined) break;
                if (f === 'delay') {
                  w.queue.push(next);
                  w.queue.shift();
                  continue;
                }
                w.policy = () => f;
                deliverOne(w);
              }
              w.policy = () => 'deliver';
              continue;
            }
            const name = names[c.device % names.length] ?? 'alice';
            if (c.kind === 'send') {
              const to = device(w, name).userId === 'alice' ? 'bob' : 'alice';
              const text = `#${sent.length} from ${name}`;
              sendQueued(w, name, [to], text);
              sent.push({ from: name, to, text });
            } else if (c.kind === 'fetch') {
              input(w, name, { kind: 'net.fetch' });
            } else {
              input(w, name, { kind: 'timer.resend' });
            }
          }
          heal(w);
          for (const { from, to, text } of sent) {
            const sender = device(w, from).userId;
            for (const name of linkedDevicesOf(w, to))
              expect(timesSeen(w, name, text), `${name}: ${text}`).toBe(1);
            for (const name of linkedDevicesOf(w, sender)) {
              const copy = `→${to}: ${text}`;
              expect(timesSeen(w, name, copy), `${name}: ${copy}`).toBe(name === from ? 0 : 1);
            }
          }
          for (const name of names) {
            expectNothingShownTwice(w, name);
            expect(
              (w.outputs.get(name) ?? []).filter((o) => o.kind === 'send-failed'),
              name,
            ).toEqual([]);
            // WP-SES-20: loss, duplication and reordering are never evidence of a fork.
            expect(
              (w.outputs.get(name) ?? []).filter((o) => o.kind === 'clone-detected'),
              name,
            ).toEqual([]);
          }
        },
      ),
      { numRuns: NUM_RUNS },
    );
  });
});
