/**
 * The hardened switches of impl/device.ts (spec/security-mode.ts) in multi-device stories: a real
 * clone — a second device instance running a copy of Alice's whole state under her address — sends
 * next to the original (clone detection, WP-SES-20), in both arrival orders and in spec mode; and
 * the bounds of the initial-message replay cache (WP-PQXDH-13). The replay itself, sequential
 * sessions and the rollback fork run in both engines in test/conformance/device-quick.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { INITIAL_REPLAY_CACHE_CAPACITY } from '../../spec/constants.js';
import { HARDENED_OPTIONS, SPEC_OPTIONS, type SecurityOptions } from '../../spec/security-mode.js';
import type { DeviceState } from '../../impl/device.js';
import {
  addContact,
  answerHonestly,
  createWorld,
  device,
  holdRequests,
  input,
  pendingOf,
  respond,
  run,
  sendQueued,
  texts,
  type World,
} from '../support/world.js';
import { createUser, outputsOfKind } from './stories.js';

/** Only `name` fetches its mailbox (the clone and the original do not share fetches). */
function fetchOnly(world: World, name: string, rounds = 3): void {
  for (let i = 0; i < rounds; i++) {
    input(world, name, { kind: 'net.fetch' });
    run(world);
  }
}

function sendFrom(world: World, name: string, to: string, text: string): void {
  sendQueued(world, name, [to], text);
  run(world);
}

/** Alice and Bob, one device each, after a first exchange; then a clone of Alice's whole state. */
function aliceAndClone(seed: string, options: SecurityOptions): World {
  const world = createWorld(seed);
  createUser(world, 'alice', 0, options);
  createUser(world, 'bob', 0, options);
  addContact(world, 'alice', 'bob');
  addContact(world, 'bob', 'alice');
  sendFrom(world, 'alice', 'bob', 'hello bob');
  fetchOnly(world, 'bob');
  sendFrom(world, 'bob', 'alice', 'hello alice');
  fetchOnly(world, 'alice');
  sendFrom(world, 'alice', 'bob', 'before the copy');
  fetchOnly(world, 'bob');
  // The attacker copies Alice's state and runs it as a second device with her address.
  world.devices.set('clone', device(world, 'alice'));
  world.outputs.set('clone', []);
  return world;
}

/** Bob answers and only the original Alice reads it: her next message starts a new chain. */
function originalMovesOn(world: World): void {
  sendFrom(world, 'bob', 'alice', 'only the original reads this');
  fetchOnly(world, 'alice');
  sendFrom(world, 'alice', 'bob', 'original on its next chain');
}

describe('clone detection (impl)', () => {
  it('the original moves to a new chain, then the clone sends on the old one: detected, refused [WP-SES-20]', () => {
    const world = aliceAndClone('clone-original-first', HARDENED_OPTIONS);
    originalMovesOn(world);
    fetchOnly(world, 'bob');
    sendFrom(world, 'clone', 'bob', 'from the clone');
    fetchOnly(world, 'bob');
    const detected = outputsOfKind(world, 'bob', 'clone-detected');
    expect(detected).toHaveLength(1);
    expect(detected[0]?.from).toEqual({ userId: 'alice', deviceId: 1 });
    expect(detected[0]?.evidence).toMatch(/successor closed at previous_counter/);
    expect(texts(world, 'bob')).toContain('original on its next chain');
    // The clone's message was refused; a retry request went to Alice's address.
    expect(texts(world, 'bob').filter((t) => t === 'from the clone')).toHaveLength(0);
    const outputs = world.outputs.get('bob') ?? [];
    const after = outputs.slice(outputs.findIndex((o) => o.kind === 'clone-detected'));
    expect(
      after.some(
        (o) =>
          o.kind === 'request' &&
          o.request.kind === 'send' &&
          o.request.messages.some((m) => m.type === 'retry-request'),
      ),
    ).toBe(true);
  });

  it('the clone sends first, then the original starts a new chain: detected on the original, refused [WP-SES-20]', () => {
    const world = aliceAndClone('clone-clone-first', HARDENED_OPTIONS);
    sendFrom(world, 'clone', 'bob', 'clone one');
    sendFrom(world, 'clone', 'bob', 'clone two');
    fetchOnly(world, 'bob');
    expect(texts(world, 'bob')).toEqual(['hello bob', 'before the copy', 'clone one', 'clone two']);
    originalMovesOn(world);
    fetchOnly(world, 'bob');
    const detected = outputsOfKind(world, 'bob', 'clone-detected');
    expect(detected).toHaveLength(1);
    expect(detected[0]?.evidence).toMatch(/accepted on the previous chain/);
  });

  it('spec mode: the clone and the original are both heard, nothing is reported [WP-SES-20]', () => {
    const world = aliceAndClone('clone-spec', SPEC_OPTIONS);
    originalMovesOn(world);
    fetchOnly(world, 'bob');
    sendFrom(world, 'clone', 'bob', 'from the clone');
    fetchOnly(world, 'bob');
    expect(outputsOfKind(world, 'bob', 'clone-detected')).toEqual([]);
    expect(texts(world, 'bob')).toContain('from the clone');
    expect(texts(world, 'bob')).toContain('original on its next chain');
  });
});

describe('initial-message replay cache bounds (impl)', () => {
  /**
   * Alice's first message to Bob from a bundle without a one-time prekey (and the last-resort Kyber
   * key); Bob's cache is preset to `preset` before he reads it.
   */
  function acceptOneWithout(
    seed: string,
    preset: DeviceState['initialMessages'],
    options: SecurityOptions = HARDENED_OPTIONS,
  ): DeviceState {
    const world = createWorld(seed);
    createUser(world, 'alice', 0, options);
    createUser(world, 'bob', 0, options);
    addContact(world, 'alice', 'bob');
    world.devices.set('bob', { ...device(world, 'bob'), initialMessages: preset });
    // The server's answer to Alice's bundle request is replaced by one without a one-time prekey.
    const release = holdRequests(world, 'alice', 'get-bundles');
    sendQueued(world, 'alice', ['bob'], 'without a one-time prekey');
    run(world);
    release();
    const [held] = pendingOf(world, 'alice', 'get-bundles');
    if (held === undefined) throw new Error('no bundle request');
    const honest = answerHonestly(world, 'alice', held.request);
    if (honest.kind !== 'bundles') throw new Error('no bundles');
    const lastResort = device(world, 'bob').prekeys.kyberPreKeys.find((k) => k.lastResort);
    if (lastResort === undefined) throw new Error('no last-resort Kyber prekey');
    respond(world, 'alice', held.requestId, {
      kind: 'bundles',
      bundles: honest.bundles.map((b) => ({
        ...b,
        preKeyId: null,
        preKey: null,
        kyberPreKeyId: lastResort.keyId,
        kyberPreKey: lastResort.publicKey,
        kyberPreKeySignature: lastResort.signature,
      })),
    });
    run(world);
    fetchOnly(world, 'bob');
    expect(texts(world, 'bob')).toEqual(['without a one-time prekey']);
    return device(world, 'bob');
  }

  const entry = (tag: number, signedPreKeyId: number): DeviceState['initialMessages'][number] => ({
    senderIdentityKey: Uint8Array.from({ length: 33 }, (_, i) => (i === 0 ? 5 : tag % 251)),
    baseKey: Uint8Array.from({ length: 33 }, (_, i) => (i === 0 ? 5 : (tag * 7) % 251)),
    signedPreKeyId,
  });

  it('a full cache forgets its oldest entry to remember the new one [WP-PQXDH-13]', () => {
    const full = Array.from({ length: INITIAL_REPLAY_CACHE_CAPACITY }, (_, i) => entry(i, 1));
    const bob = acceptOneWithout('replay-cap', full);
    expect(bob.initialMessages).toHaveLength(INITIAL_REPLAY_CACHE_CAPACITY);
    expect(bob.initialMessages[0]).toEqual(full[1]);
    expect(bob.initialMessages.at(-1)?.signedPreKeyId).toBe(1);
  });

  it('entries for a signed prekey the device no longer holds are forgotten [WP-PQXDH-13]', () => {
    const bob = acceptOneWithout('replay-expiry', [entry(1, 7), entry(2, 1)]);
    expect(bob.initialMessages.map((m) => m.signedPreKeyId)).toEqual([1, 1]);
    expect(bob.initialMessages[0]).toEqual(entry(2, 1));
  });

  it('a message with a one-time prekey makes no entry, and spec mode keeps none [WP-PQXDH-13]', () => {
    const world = createWorld('replay-none');
    createUser(world, 'alice', 0, HARDENED_OPTIONS);
    createUser(world, 'bob', 0, HARDENED_OPTIONS);
    addContact(world, 'alice', 'bob');
    sendFrom(world, 'alice', 'bob', 'with a one-time prekey');
    fetchOnly(world, 'bob');
    expect(texts(world, 'bob')).toEqual(['with a one-time prekey']);
    expect(device(world, 'bob').initialMessages).toEqual([]);
    expect(acceptOneWithout('replay-spec', [], SPEC_OPTIONS).initialMessages).toEqual([]);
    expect(acceptOneWithout('replay-hardened', [], HARDENED_OPTIONS).initialMessages).toHaveLength(1);
  });
});
