/**
 * Shared pieces of the multi-device scenario stories (test/multidevice/*.test.ts): building worlds
 * with several devices per user, forging device lists as a hostile server would, and the paired
 * assertions every story repeats ("seen exactly once", "nothing undecryptable", "a change event
 * before any encryption to the new device").
 * @module
 */
import { expect } from 'vitest';
import { concatBytes } from '../../spec/bytes.js';
import { xeddsaSign } from '../../spec/crypto/xeddsa.js';
import { encodeDeviceList, SIGNATURE_PREFIX, signDeviceList } from '../../spec/device-list.js';
import type { DeviceList, SignedDeviceList } from '../../spec/device-list-types.js';
import type { DeviceId, UserId } from '../../spec/identity.js';
import type { DeviceOptions, DeviceOutput } from '../../impl/device.js';
import {
  addContact,
  createAccount,
  deliveries,
  device,
  linkDevice,
  send,
  sync,
  texts,
  type World,
} from '../support/world.js';

/** Creates `userId` with a primary named `userId` and `extra` linked devices `userId-2`, `userId-3`, … */
export function createUser(world: World, userId: UserId, extra = 0, options?: DeviceOptions): string[] {
  createAccount(world, userId, userId, options);
  const names = [userId];
  for (let i = 0; i < extra; i++) {
    const name = `${userId}-${i + 2}`;
    linkDevice(world, userId, name, options);
    names.push(name);
  }
  for (const name of names) expect(device(world, name).lifecycle.kind, name).toBe('linked');
  return names;
}

/** Names of the world's linked devices of a user. */
export function linkedDevicesOf(world: World, userId: UserId): string[] {
  return [...world.devices.keys()].filter((name) => {
    const state = device(world, name);
    return state.userId === userId && state.lifecycle.kind === 'linked';
  });
}

/** How often a device's user was shown this text (as a message or as a sync copy line). */
export function timesSeen(world: World, name: string, text: string): number {
  return texts(world, name).filter((t) => t === text).length;
}

/** WP-XPORT-02: no payload id was ever shown twice on this device. */
export function expectNothingShownTwice(world: World, name: string): void {
  const ids = deliveries(world, name).map((d) => d.payload.messageId);
  expect(new Set(ids).size, `${name} showed a payload twice`).toBe(ids.length);
}

/** Outputs of a device of one kind. */
export function outputsOfKind<K extends DeviceOutput['kind']>(
  world: World,
  name: string,
  kind: K,
): Extract<DeviceOutput, { kind: K }>[] {
  return (world.outputs.get(name) ?? []).filter(
    (o): o is Extract<DeviceOutput, { kind: K }> => o.kind === kind,
  );
}

/**
 * Checks one sent text reached the right places exactly once: every device of the recipient shows
 * the text, every other device of the sender shows its sync copy, the sending device shows nothing.
 */
export function expectFannedOut(
  world: World,
  from: string,
  recipient: UserId,
  text: string,
  skip: readonly string[] = [],
): void {
  const sender = device(world, from).userId;
  for (const name of linkedDevicesOf(world, recipient)) {
    if (skip.includes(name)) continue;
    expect(timesSeen(world, name, text), `${name} sees "${text}"`).toBe(1);
  }
  for (const name of linkedDevicesOf(world, sender)) {
    if (name === from || skip.includes(name)) continue;
    expect(timesSeen(world, name, `→${recipient}: ${text}`), `${name} sees the sync copy of "${text}"`).toBe(
      1,
    );
  }
  expect(timesSeen(world, from, text) + timesSeen(world, from, `→${recipient}: ${text}`)).toBe(0);
}

/** No device of the world reported an undecryptable message. */
export function expectNoUndecryptable(world: World): void {
  for (const name of world.devices.keys()) {
    expect(outputsOfKind(world, name, 'undecryptable'), name).toEqual([]);
  }
}

/**
 * The device can still talk with an honest peer: a message each way reaches both (and their
 * siblings) exactly once. Used after every hostile answer to show no state was corrupted.
 */
export function expectStillTalks(world: World, a: string, b: string, tag: string): void {
  world.policy = () => 'deliver';
  const userA = device(world, a).userId;
  const userB = device(world, b).userId;
  send(world, a, [userB], `${tag}: ${a} → ${userB}`);
  sync(world);
  send(world, b, [userA], `${tag}: ${b} → ${userA}`);
  sync(world);
  expectFannedOut(world, a, userB, `${tag}: ${a} → ${userB}`);
  expectFannedOut(world, b, userA, `${tag}: ${b} → ${userA}`);
  for (const name of world.devices.keys()) expectNothingShownTwice(world, name);
}

/** Two users who have exchanged a first message each way (alice started from bob's contact link). */
export function talkingPair(
  world: World,
  aliceExtra = 0,
  bobExtra = 0,
  options?: DeviceOptions,
): { readonly alice: string[]; readonly bob: string[] } {
  const alice = createUser(world, 'alice', aliceExtra, options);
  const bob = createUser(world, 'bob', bobExtra, options);
  addContact(world, 'alice', 'bob');
  send(world, 'alice', ['bob'], 'hello bob');
  sync(world);
  send(world, 'bob', ['alice'], 'hello alice');
  sync(world);
  expectFannedOut(world, 'alice', 'bob', 'hello bob');
  expectFannedOut(world, 'bob', 'alice', 'hello alice');
  return { alice, bob };
}

/** The device ids a send request carries copies for. */
export function copiesIn(request: {
  readonly messages: readonly { readonly deviceId: DeviceId }[];
}): DeviceId[] {
  return request.messages.map((m) => m.deviceId);
}

/** A list signed by the holder of `accountPrivateKey` (the list's own account key must match it). */
export function signList(world: World, accountPrivateKey: Uint8Array, list: DeviceList): SignedDeviceList {
  return signDeviceList(world.env.crypto, accountPrivateKey, list, world.env.rng.randomBytes(64));
}

/**
 * A forgery: the list names whatever account key it likes, but the signature is made with
 * `signerPrivateKey` (a key the server or an attacker holds).
 */
export function forgeList(world: World, signerPrivateKey: Uint8Array, list: DeviceList): SignedDeviceList {
  const encoded = encodeDeviceList(list);
  const signature = xeddsaSign(
    world.env.crypto,
    signerPrivateKey,
    concatBytes(SIGNATURE_PREFIX.deviceList, encoded),
    world.env.rng.randomBytes(64),
  );
  return { list: encoded, signature };
}

/** The list the honest server currently holds for a user (decoded and signed forms). */
export function serverList(
  world: World,
  userId: UserId,
): { readonly list: DeviceList; readonly signed: SignedDeviceList } {
  const account = world.server.accounts[userId];
  if (account === undefined) throw new Error(`no account ${userId}`);
  return { list: account.deviceList, signed: account.signedDeviceList };
}
