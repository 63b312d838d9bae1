/**
 * A twin world for the device conformance tests: the same scenario built twice, once with impl's
 * devices (impl/device.ts, as test/support/world.ts drives them) and once with the model's device
 * machines (model/device.ts), each world with its own honest server (impl/server.ts: the server is
 * not under test here) and its own seeded, recording Rng with the same seed. Every device step is
 * applied to both and the two observations (outputs, draw sizes, abstract device state) must agree;
 * every packet the router moves must be the same packet in both worlds.
 * @module
 */
import { nodeProvider } from '../../spec/crypto/node.js';
import type { ContactLink } from '../../spec/contact-link.js';
import { accountKeyFingerprint } from '../../spec/device-list.js';
import type { Env } from '../../spec/env.js';
import type { UserId } from '../../spec/identity.js';
import { seededRng } from '../../spec/rng.js';
import type { ServerRequest, ServerResponse } from '../../spec/server-api.js';
import { HARDENED_OPTIONS, type SecurityOptions } from '../../spec/security-mode.js';
import {
  createPrimaryDevice,
  createProvisioningDevice,
  deviceStep,
  resetPrimaryDevice,
  type DeviceInput,
  type DeviceOutput,
  type DeviceState,
} from '../../impl/device.js';
import { abstractDevice } from '../../impl/device-abstract.js';
import { emptyServerState, handleRequest, type ServerState } from '../../impl/server.js';
import {
  abstractDeviceOf,
  createPrimaryDeviceModel,
  createProvisioningDeviceModel,
  resetPrimaryDeviceModel,
  resumeDeviceModel,
  type DeviceContext,
  type DeviceModelRunner,
} from '../../model/device.js';
import { assertAgree, canonical, firstDifference, recordingRng, type RecordingRng } from './support.js';

/** Names of the model's actions that ran in this process (transition coverage of the suite). */
export const ACTIONS_RUN = new Set<string>();

function watch(runner: DeviceModelRunner): DeviceModelRunner {
  runner.actor.system.inspect((event) => {
    if (event.type !== '@xstate.microstep') return;
    for (const t of event._transitions)
      for (const action of t.actions as readonly unknown[])
        if (typeof action === 'string') ACTIONS_RUN.add(action);
        else if (typeof action === 'object' && action !== null && 'type' in action)
          ACTIONS_RUN.add(String(action.type));
  });
  return runner;
}

/** A packet on its way to the server (`up`) or back (`down`). */
export type TwinPacket =
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

/** What the network does with the next packet. */
export type TwinFault = 'deliver' | 'drop' | 'duplicate' | 'delay';

interface Side<D> {
  readonly env: Env & { readonly rng: RecordingRng };
  server: ServerState;
  readonly devices: Map<string, D>;
  readonly queue: TwinPacket[];
  readonly outputs: Map<string, unknown[]>;
}

/** A device backup: impl's state and the model's context and state value. */
export interface TwinBackup {
  readonly impl: DeviceState;
  readonly context: DeviceContext;
  readonly value: unknown;
}

/** The twin world. */
export class TwinWorld {
  now = 1_700_000_000_000;
  steps = 0;
  readonly impl: Side<DeviceState>;
  readonly model: Side<DeviceModelRunner>;

  /**
   * @param seed the seed of both worlds' random streams
   * @param options the security switches every device of the world gets (spec/security-mode.ts);
   *   the engines' hardened default when omitted
   */
  constructor(
    seed: string,
    readonly options: SecurityOptions = HARDENED_OPTIONS,
  ) {
    const side = <D>(): Side<D> => ({
      env: { crypto: nodeProvider, rng: recordingRng(seededRng(seed)) },
      server: emptyServerState(),
      devices: new Map(),
      queue: [],
      outputs: new Map(),
    });
    this.impl = side<DeviceState>();
    this.model = side<DeviceModelRunner>();
  }

  private record<D>(s: Side<D>, name: string, outputs: readonly DeviceOutput[] | readonly unknown[]): void {
    const list = s.outputs.get(name) ?? [];
    for (const output of outputs as readonly DeviceOutput[]) {
      list.push(output);
      if (output.kind === 'request')
        s.queue.push({ dir: 'up', device: name, requestId: output.requestId, request: output.request });
    }
    s.outputs.set(name, list);
  }

  /** Compares one step's observations of device `name`. */
  private compare(
    label: string,
    name: string,
    implOutputs: readonly unknown[],
    modelOutputs: readonly unknown[],
  ): void {
    const implState = this.impl.devices.get(name);
    const runner = this.model.devices.get(name);
    if (implState === undefined || runner === undefined) throw new Error(`no device ${name}`);
    assertAgree(
      this.steps++,
      `${label} @${name}`,
      {
        outputs: implOutputs,
        draws: this.impl.env.rng.take(),
        abstract: abstractDevice(nodeProvider, implState),
      },
      {
        outputs: modelOutputs,
        draws: this.model.env.rng.take(),
        abstract: abstractDeviceOf(nodeProvider, runner.context()),
      },
    );
  }

  /** Applies one input to device `name` in both worlds and compares. */
  input(name: string, deviceInput: DeviceInput, label: string = deviceInput.kind): readonly DeviceOutput[] {
    const state = this.impl.devices.get(name);
    const runner = this.model.devices.get(name);
    if (state === undefined || runner === undefined) throw new Error(`no device ${name}`);
    const result = deviceStep(this.impl.env, state, deviceInput, this.now);
    this.impl.devices.set(name, result.state);
    const modelOutputs = runner.step(deviceInput, this.now);
    this.record(this.impl, name, result.outputs);
    this.record(this.model, name, modelOutputs);
    this.compare(label, name, result.outputs, modelOutputs);
    return result.outputs;
  }

  /** Both worlds' routers move their oldest packet as `fault` says. False when both queues were empty. */
  deliverOne(fault: TwinFault = 'deliver'): boolean {
    const a = this.impl.queue.shift();
    const b = this.model.queue.shift();
    if (a === undefined && b === undefined) return false;
    const diff = firstDifference(canonical(a), canonical(b), 'packet');
    if (diff !== null)
      throw new Error(`routers diverge at step ${this.steps}: ${diff.field}: ${diff.impl} ≠ ${diff.model}`);
    if (a === undefined || b === undefined) return false;
    if (fault === 'drop') return true;
    if (fault === 'delay') {
      this.impl.queue.push(a);
      this.model.queue.push(b);
      return true;
    }
    const copies = fault === 'duplicate' ? 2 : 1;
    for (let i = 0; i < copies; i++) {
      if (a.dir === 'up' && b.dir === 'up') {
        const ra = handleRequest({ crypto: nodeProvider }, this.impl.server, a.request, this.now);
        const rb = handleRequest({ crypto: nodeProvider }, this.model.server, b.request, this.now);
        this.impl.server = ra.state;
        this.model.server = rb.state;
        this.impl.queue.push({
          dir: 'down',
          device: a.device,
          requestId: a.requestId,
          response: ra.response,
        });
        this.model.queue.push({
          dir: 'down',
          device: b.device,
          requestId: b.requestId,
          response: rb.response,
        });
      } else if (a.dir === 'down' && this.impl.devices.has(a.device)) {
        this.input(
          a.device,
          { kind: 'net.response', requestId: a.requestId, response: a.response },
          'net.response',
        );
      }
    }
    return true;
  }

  /**
   * Takes the oldest queued request of `name` of this kind out of both routers (a hostile server
   * holds it); returns impl's copy (the model's is checked equal).
   */
  takeRequest(name: string, kind: ServerRequest['kind']): Extract<TwinPacket, { dir: 'up' }> {
    const find = (q: TwinPacket[]): number =>
      q.findIndex((p) => p.dir === 'up' && p.device === name && p.request.kind === kind);
    const i = find(this.impl.queue);
    const j = find(this.model.queue);
    if (i < 0 || j < 0) throw new Error(`no queued ${kind} from ${name}`);
    const [a] = this.impl.queue.splice(i, 1);
    const [b] = this.model.queue.splice(j, 1);
    const diff = firstDifference(canonical(a), canonical(b), 'packet');
    if (diff !== null || a === undefined || a.dir !== 'up')
      throw new Error(`held packets differ: ${diff?.field ?? '?'}`);
    return a;
  }

  /** Delivers packets until a request of this kind from `name` is the oldest queued one of its kind. */
  runUntilRequest(name: string, kind: ServerRequest['kind']): void {
    const queued = (): boolean =>
      this.impl.queue.some((p) => p.dir === 'up' && p.device === name && p.request.kind === kind);
    let n = 0;
    while (!queued()) {
      if (++n > 10_000 || !this.deliverOne()) throw new Error(`no ${kind} from ${name}`);
    }
  }

  /** The honest server answers a held request in both worlds (its state changes); the answers are returned. */
  answerHonestly(request: ServerRequest): ServerResponse {
    const ra = handleRequest({ crypto: nodeProvider }, this.impl.server, request, this.now);
    const rb = handleRequest({ crypto: nodeProvider }, this.model.server, request, this.now);
    this.impl.server = ra.state;
    this.model.server = rb.state;
    return ra.response;
  }

  /** Answers a held request with a crafted response in both worlds, then runs the network. */
  respond(name: string, requestId: number, response: ServerResponse, andRun = true): void {
    this.input(name, { kind: 'net.response', requestId, response }, 'crafted response');
    if (andRun) this.run();
  }

  /** Delivers until both queues are empty. */
  run(limit = 100_000): void {
    let n = 0;
    while (this.impl.queue.length > 0 || this.model.queue.length > 0) {
      if (++n > limit) throw new Error('twin world did not settle');
      this.deliverOne();
    }
  }

  /** Adds a device from both factories' results, comparing creation outputs and state. */
  private adopt(
    name: string,
    impl: { state: DeviceState; outputs: readonly DeviceOutput[] },
    model: { runner: DeviceModelRunner; outputs: readonly unknown[] },
  ): void {
    this.impl.devices.set(name, impl.state);
    this.model.devices.set(name, watch(model.runner));
    this.impl.outputs.set(name, []);
    this.model.outputs.set(name, []);
    this.record(this.impl, name, impl.outputs);
    this.record(this.model, name, model.outputs);
    this.compare('create', name, impl.outputs, model.outputs);
  }

  /** A provisioning device that nobody links (yet). */
  adoptProvisioning(name: string): void {
    const impl = createProvisioningDevice(this.impl.env, this.now, this.options);
    const model = createProvisioningDeviceModel(this.model.env, this.now, this.options);
    this.adopt(name, impl, model);
  }

  /** A new account's primary device, registered. */
  createAccount(name: string, userId: UserId, options: SecurityOptions = this.options): void {
    const impl = createPrimaryDevice(this.impl.env, userId, this.now, options);
    const model = createPrimaryDeviceModel(this.model.env, userId, this.now, options);
    this.adopt(name, impl, model);
    this.run();
  }

  /** A lost primary resets its account (WP-LIFE-05). */
  resetAccount(name: string, userId: UserId, previousVersion: number): void {
    const impl = resetPrimaryDevice(this.impl.env, userId, previousVersion, this.now, this.options);
    const model = resetPrimaryDeviceModel(this.model.env, userId, previousVersion, this.now, this.options);
    this.adopt(name, impl, model);
    this.run();
  }

  /** Links a new device to `primary`'s account by QR provisioning (WP-LIFE-03). */
  linkDevice(primary: string, name: string): void {
    const impl = createProvisioningDevice(this.impl.env, this.now, this.options);
    const model = createProvisioningDeviceModel(this.model.env, this.now, this.options);
    this.adopt(name, impl, model);
    const codeDiff = firstDifference(canonical(impl.code), canonical(model.code), 'code');
    if (codeDiff !== null) throw new Error(`provisioning codes differ: ${codeDiff.field}`);
    this.input(primary, { kind: 'user.link-device', code: impl.code });
    this.run();
    this.input(name, { kind: 'timer.poll-provisioning' });
    this.run();
  }

  /** The contact link of `name`'s account (from impl's state; the model's must give the same). */
  contactLinkOf(name: string): ContactLink {
    const state = this.implState(name);
    const accountKey = state.trust[state.userId]?.accountKey;
    if (accountKey === null || accountKey === undefined) throw new Error(`${name} has no account key`);
    return {
      userId: state.userId,
      accountKeyFingerprint: accountKeyFingerprint(nodeProvider, accountKey),
      inviteToken: null,
    };
  }

  /** `from` starts a chat with `to`'s account. */
  addContact(from: string, to: string): void {
    this.input(from, { kind: 'user.add-contact', link: this.contactLinkOf(to) });
    this.run();
  }

  /** Sends text from `name` without running the network. */
  sendQueued(name: string, recipients: readonly UserId[], text: string): void {
    this.input(name, { kind: 'user.send', recipients, content: { kind: 'text', text } });
  }

  /** Sends and runs the network. */
  send(name: string, recipients: readonly UserId[], text: string): void {
    this.sendQueued(name, recipients, text);
    this.run();
  }

  /** Every linked device fetches, a few rounds. */
  sync(rounds = 6): void {
    for (let i = 0; i < rounds; i++) {
      for (const name of this.impl.devices.keys())
        if (this.implState(name).lifecycle.kind === 'linked') this.input(name, { kind: 'net.fetch' });
      this.run();
    }
  }

  /** Every device's resend timer fires. */
  resendAll(): void {
    for (const name of this.impl.devices.keys()) this.input(name, { kind: 'timer.resend' });
    this.run();
  }

  /** impl's state of a device. */
  implState(name: string): DeviceState {
    const state = this.impl.devices.get(name);
    if (state === undefined) throw new Error(`no device ${name}`);
    return state;
  }

  /** Both engines' outputs so far for a device. */
  outputsOf(name: string): { readonly impl: readonly DeviceOutput[]; readonly model: readonly unknown[] } {
    return {
      impl: (this.impl.outputs.get(name) ?? []) as DeviceOutput[],
      model: this.model.outputs.get(name) ?? [],
    };
  }

  /** A backup of a device in both worlds. */
  backup(name: string): TwinBackup {
    const runner = this.model.devices.get(name);
    if (runner === undefined) throw new Error(`no device ${name}`);
    return { impl: this.implState(name), context: runner.context(), value: runner.stateValue() };
  }

  /** Restores a backup (the device rolled back, design.md's rollback fault). */
  restore(name: string, backup: TwinBackup): void {
    this.impl.devices.set(name, backup.impl);
    this.model.devices.set(name, watch(resumeDeviceModel(this.model.env, backup.context, backup.value)));
  }

  /** Compares every device's abstract state in both worlds. */
  compareAll(label: string): void {
    for (const name of this.impl.devices.keys()) this.compare(label, name, [], []);
  }

  /** Texts a device's user saw (impl's outputs; the model's are identical when the comparison passes). */
  texts(name: string): string[] {
    return this.outputsOf(name).impl.flatMap((o) => {
      if (o.kind !== 'delivered') return [];
      const c = o.payload.content;
      if (c.kind === 'text') return [c.text];
      if (c.kind === 'sync' && c.content.kind === 'text') return [`→${c.destination}: ${c.content.text}`];
      return [];
    });
  }
}
