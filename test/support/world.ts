/**
 * A small in-process world for multi-device scenario tests: the honest server (impl/server.ts) and
 * any number of devices (impl/device.ts), connected by a message router the test controls. Requests
 * and responses are delivered in FIFO order; a test can drop, duplicate or hold back any of them.
 * Deterministic: one seeded Rng, a virtual clock advanced explicitly.
 *
 * This is test support, not the simulator: it has no faults of its own and no invariants.
 */
import { nodeProvider } from '../../spec/crypto/node.js';
import type { ContactLink } from '../../spec/contact-link.js';
import { accountKeyFingerprint } from '../../spec/device-list.js';
import type { Env } from '../../spec/env.js';
import type { DeviceAddress, UserId } from '../../spec/identity.js';
import type { AppPayload } from '../../spec/payload.js';
import { seededRng } from '../../spec/rng.js';
import type { ServerRequest, ServerResponse } from '../../spec/server-api.js';
import {
  createPrimaryDevice,
  createProvisioningDevice,
  deviceStep,
  resetPrimaryDevice,
  type DeviceInput,
  type DeviceOptions,
  type DeviceOutput,
  type DeviceState,
  type PendingRequest,
  type SendContent,
} from '../../impl/device.js';
import { emptyServerState, handleRequest, mailboxDepth, type ServerState } from '../../impl/server.js';

/** A request on its way to the server, or a response on its way back. */
export type Packet =
  | {
      readonly dir: 'up';
      readonly device: string;
      readonly requestId: number;
      readonly request: ServerRequest;
    }
  | {
      readonly dir: 'down';
      readonly device: string;
      readonly requestId: number;
      readonly response: ServerResponse;
    };

/** A message as one device's user saw it. */
export interface Delivery {
  readonly from: DeviceAddress;
  readonly payload: AppPayload;
}

/** Decides what the network does with a packet: deliver it, drop it, or deliver it twice. */
export type NetworkPolicy = (packet: Packet) => 'deliver' | 'drop' | 'duplicate';

/** The world: server, devices, router, clock, and what each device output. */
export interface World {
  readonly env: Env;
  now: number;
  server: ServerState;
  readonly devices: Map<string, DeviceState>;
  readonly queue: Packet[];
  readonly outputs: Map<string, DeviceOutput[]>;
  policy: NetworkPolicy;
  /** Every request the server handled, in order (for tests that inspect traffic). */
  readonly serverLog: {
    readonly device: string;
    readonly request: ServerRequest;
    readonly response: ServerResponse;
  }[];
}

/** A new, empty world. */
export function createWorld(seed = 'world', env?: Env): World {
  return {
    env: env ?? { crypto: nodeProvider, rng: seededRng(seed) },
    now: 1_700_000_000_000,
    server: emptyServerState(),
    devices: new Map(),
    queue: [],
    outputs: new Map(),
    policy: () => 'deliver',
    serverLog: [],
  };
}

function record(world: World, name: string, outputs: readonly DeviceOutput[]): void {
  const list = world.outputs.get(name) ?? [];
  for (const output of outputs) {
    list.push(output);
    if (output.kind === 'request')
      world.queue.push({ dir: 'up', device: name, requestId: output.requestId, request: output.request });
  }
  world.outputs.set(name, list);
}

/** Applies one input to a named device and queues its requests. */
export function input(world: World, name: string, deviceInput: DeviceInput): readonly DeviceOutput[] {
  const state = world.devices.get(name);
  if (state === undefined) throw new Error(`no device ${name}`);
  const result = deviceStep(world.env, state, deviceInput, world.now);
  world.devices.set(name, result.state);
  record(world, name, result.outputs);
  return result.outputs;
}

/** Delivers queued packets (requests to the server, responses back) until the queue is empty. */
export function run(world: World, limit = 100_000): void {
  let steps = 0;
  while (world.queue.length > 0) {
    if (++steps > limit) throw new Error('world did not settle');
    deliverOne(world);
  }
}

/**
 * Takes the oldest queued packet and does with it what `world.policy` says: a request goes to the
 * honest server (its response is queued), a response goes to its device. False when the queue was
 * empty.
 */
export function deliverOne(world: World): boolean {
  const packet = world.queue.shift();
  if (packet === undefined) return false;
  const decision = world.policy(packet);
  if (decision === 'drop') return true;
  const copies = decision === 'duplicate' ? 2 : 1;
  for (let i = 0; i < copies; i++) {
    if (packet.dir === 'up') {
      const response = answerHonestly(world, packet.device, packet.request);
      world.queue.push({ dir: 'down', device: packet.device, requestId: packet.requestId, response });
    } else if (world.devices.has(packet.device)) {
      input(world, packet.device, {
        kind: 'net.response',
        requestId: packet.requestId,
        response: packet.response,
      });
    }
  }
  return true;
}

/**
 * The honest server handles one request now (its state changes and the exchange is logged), but the
 * response goes back to the caller instead of the device: a test can inspect, alter or hold it.
 */
export function answerHonestly(world: World, name: string, request: ServerRequest): ServerResponse {
  const step = handleRequest({ crypto: world.env.crypto }, world.server, request, world.now);
  world.server = step.state;
  world.serverLog.push({ device: name, request, response: step.response });
  return step.response;
}

/** Creates an account with its primary device and registers it. */
export function createAccount(world: World, name: string, userId: UserId, options?: DeviceOptions): void {
  const result = createPrimaryDevice(world.env, userId, world.now, options);
  world.devices.set(name, result.state);
  record(world, name, result.outputs);
  run(world);
}

/** A lost primary re-registers the account under a new account key (an account reset). */
export function resetAccount(
  world: World,
  name: string,
  userId: UserId,
  previousVersion: number,
  options?: DeviceOptions,
): void {
  const result = resetPrimaryDevice(world.env, userId, previousVersion, world.now, options);
  world.devices.set(name, result.state);
  world.outputs.set(name, []);
  record(world, name, result.outputs);
  run(world);
}

/** Links a new device to the account of `primary` by QR provisioning, and runs it to completion. */
export function linkDevice(world: World, primary: string, name: string, options?: DeviceOptions): void {
  const created = createProvisioningDevice(world.env, world.now, options);
  world.devices.set(name, created.state);
  input(world, primary, { kind: 'user.link-device', code: created.code });
  run(world);
  input(world, name, { kind: 'timer.poll-provisioning' });
  run(world);
}

/** The contact link a device's user would share (QR or URL). */
export function contactLinkOf(world: World, name: string): ContactLink {
  const state = device(world, name);
  const accountKey = state.trust[state.userId]?.accountKey;
  if (accountKey === null || accountKey === undefined) throw new Error(`${name} has no account key`);
  return {
    userId: state.userId,
    accountKeyFingerprint: accountKeyFingerprint(world.env.crypto, accountKey),
    inviteToken: null,
  };
}

/** `from` starts a chat with `to`'s account from its contact link. */
export function addContact(world: World, from: string, to: string): void {
  input(world, from, { kind: 'user.add-contact', link: contactLinkOf(world, to) });
  run(world);
}

/** A named device's state. */
export function device(world: World, name: string): DeviceState {
  const state = world.devices.get(name);
  if (state === undefined) throw new Error(`no device ${name}`);
  return state;
}

/** Sends from a device and runs the network until it settles. */
export function send(
  world: World,
  name: string,
  recipients: readonly UserId[],
  content: SendContent | string,
): void {
  input(world, name, {
    kind: 'user.send',
    recipients,
    content: typeof content === 'string' ? { kind: 'text', text: content } : content,
  });
  run(world);
}

/** Every device fetches its mailbox, repeatedly, until nothing more arrives. */
export function sync(world: World, rounds = 6): void {
  for (let i = 0; i < rounds; i++) {
    for (const name of world.devices.keys()) {
      if (device(world, name).lifecycle.kind === 'linked') input(world, name, { kind: 'net.fetch' });
    }
    run(world);
  }
}

/** The messages a device's user has seen, in order. */
export function deliveries(world: World, name: string): Delivery[] {
  return (world.outputs.get(name) ?? []).flatMap((o) =>
    o.kind === 'delivered' ? [{ from: o.from, payload: o.payload }] : [],
  );
}

/** The texts a device's user has seen (sync copies included, marked `→ destination`). */
export function texts(world: World, name: string): string[] {
  return deliveries(world, name).flatMap((d) => {
    const c = d.payload.content;
    if (c.kind === 'text') return [c.text];
    if (c.kind === 'sync' && c.content.kind === 'text') return [`→${c.destination}: ${c.content.text}`];
    return [];
  });
}

/** All outputs of a kind for a device. */
export function outputsOf<K extends DeviceOutput['kind']>(
  world: World,
  name: string,
  kind: K,
): Extract<DeviceOutput, { kind: K }>[] {
  return (world.outputs.get(name) ?? []).filter(
    (o): o is Extract<DeviceOutput, { kind: K }> => o.kind === kind,
  );
}

/** Advances the virtual clock. */
export function advance(world: World, ms: number): void {
  world.now += ms;
}

/** Requests a device still waits an answer for, optionally only those of one request kind. */
export function pendingOf(world: World, name: string, kind?: ServerRequest['kind']): PendingRequest[] {
  return device(world, name).pending.filter((p) => kind === undefined || p.request.kind === kind);
}

/**
 * Answers a device's request with a response the test crafted (a hostile or broken server), then
 * runs the network. Returns what the device output for this answer alone.
 */
export function respond(
  world: World,
  name: string,
  requestId: number,
  response: ServerResponse,
): readonly DeviceOutput[] {
  const outputs = input(world, name, { kind: 'net.response', requestId, response });
  run(world);
  return outputs;
}

/**
 * From now on the network loses every request `name` makes of this kind (the device keeps waiting
 * for the answer, so a test can answer it with {@link respond}); other packets follow the policy
 * that was in force. Returns a function that restores that policy.
 */
export function holdRequests(world: World, name: string, kind: ServerRequest['kind']): () => void {
  const previous = world.policy;
  world.policy = (packet) =>
    packet.dir === 'up' && packet.device === name && packet.request.kind === kind ? 'drop' : previous(packet);
  return () => {
    world.policy = previous;
  };
}

/** The send requests a device emitted, in order, with their position in the device's outputs. */
export function sendRequestsOf(
  world: World,
  name: string,
): { readonly index: number; readonly request: Extract<ServerRequest, { kind: 'send' }> }[] {
  return (world.outputs.get(name) ?? []).flatMap((o, index) =>
    o.kind === 'request' && o.request.kind === 'send' ? [{ index, request: o.request }] : [],
  );
}

/** Position of the first output of a device matching `predicate`, or -1. */
export function firstOutputIndex(
  world: World,
  name: string,
  predicate: (output: DeviceOutput) => boolean,
): number {
  return (world.outputs.get(name) ?? []).findIndex(predicate);
}

/** Sends from a device without running the network (its requests stay queued). */
export function sendQueued(
  world: World,
  name: string,
  recipients: readonly UserId[],
  content: SendContent | string,
): readonly DeviceOutput[] {
  return input(world, name, {
    kind: 'user.send',
    recipients,
    content: typeof content === 'string' ? { kind: 'text', text: content } : content,
  });
}

/**
 * True while the server holds an envelope a linked device of the world has not acknowledged yet.
 * A healing phase that stops before this is false can miss the last step of a recovery: a resend
 * (WP-XPORT-06) the server accepted after the recipient's final fetch.
 */
export function mailWaiting(world: World): boolean {
  for (const state of world.devices.values()) {
    if (state.lifecycle.kind !== 'linked') continue;
    if (mailboxDepth(world.server, { userId: state.userId, deviceId: state.deviceId }) > 0) return true;
  }
  return false;
}

/** Every linked device resends what is unanswered (`timer.resend`), then the network runs. */
export function resendAll(world: World): void {
  for (const name of world.devices.keys()) {
    if (device(world, name).lifecycle.kind === 'linked') input(world, name, { kind: 'timer.resend' });
  }
  run(world);
}

/**
 * Delivers at most `steps` packets; true when the network settled. A test of a client that might
 * loop with a hostile server uses it, then inspects what was sent.
 */
export function runAtMost(world: World, steps: number): boolean {
  for (let i = 0; i < steps && world.queue.length > 0; i++) deliverOne(world);
  return world.queue.length === 0;
}
