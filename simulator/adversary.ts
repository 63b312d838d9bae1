/**
 * The adversary as a simulator node (WHITEPAPER.md, "Adversaries and known attacks"; trace lane
 * `attacker`). One {@link Adversary} plays every role the threat model names, as its plan says:
 *
 * - **network attacker**: sees every request on its way to the server (recorded as the attacker's
 *   view), and can drop, delay, tamper with (flip a bit) and, with the server, replay packets;
 * - **malicious server**: wraps the honest server engine and rewrites what it answers: device
 *   lists and refusals naming a device the attacker made up, hiding a device, or serving an old
 *   list; bundles without one-time prekeys; hostile refusals; and it stores envelopes of its own
 *   (replays, re-addressed replays with forged sender metadata, KCI forgeries);
 * - **device compromise**: copies a device's whole state through the engine's snapshot, runs the
 *   copy as a second device at the victim's address (a clone), or puts the victim back into the
 *   stolen state (rollback); with a stolen signed prekey it forges KCI messages;
 * - **QR phishing**: provisions a device of its own and has a user's primary link it.
 *
 * Everything it does is scripted (`AdversaryPlan.steps`), plus in swarm mode actions drawn from
 * the seed's `adversary` stream; its own key material comes from the `attacker-keys` stream, so an
 * adversary never shifts an honest device's random draws. What it records goes to the
 * {@link SecurityRecorder} (simulator/oracles.ts), which judges the run at the end.
 * @module
 */
import { MAX_DEVICES_PER_ACCOUNT } from '../spec/constants.js';
import type { CryptoProvider } from '../spec/crypto/provider.js';
import { decodeDeviceList, encodeDeviceList } from '../spec/device-list.js';
import type { SignedDeviceList } from '../spec/device-list-types.js';
import type { Env } from '../spec/env.js';
import { toHex } from '../spec/hex.js';
import type { DeviceAddress, UserId } from '../spec/identity.js';
import { encodePayload } from '../spec/payload.js';
import { seededRng } from '../spec/rng.js';
import type { Envelope, ServerRequest, ServerResponse } from '../spec/server-api.js';
import { parsePreKeySignalMessage } from '../spec/wire.js';
import type { DeviceInput, DeviceOptions, DeviceOutput } from '../impl/device.js';
import { bundleFromPreKeyState, generatePreKeyState } from '../impl/prekeys.js';
import { emptySesameState } from '../impl/sesame.js';
import type { SessionState } from '../impl/session-state.js';
import type { AttackStep, AdversaryPlan, SecurityReport, SimConfig } from './api.js';
import { forgeKciMessage, stolenState, type StolenState } from './attacker-crypto.js';
import type { DeviceAbstractView, DeviceEngine, EngineFactory, ServerEngine } from './engine.js';
import { tamperEnvelope } from './network.js';
import { addressKey, SecurityRecorder } from './oracles.js';
import { floatStream, streamLabel, type Stream } from './streams.js';
import { installName, setupTicks, type Population } from './workload.js';

/** What the adversary needs from the event loop (simulator/run.ts implements it). */
export interface AdversaryHost {
  readonly crypto: CryptoProvider;
  readonly factory: EngineFactory;
  readonly server: ServerEngine;
  readonly options: DeviceOptions;
  now(): number;
  /** Writes an event on the `attacker` lane. */
  event(kind: string, data: Readonly<Record<string, unknown>>): void;
  /** Queues plan step `index` at tick `t`. */
  schedule(t: number, index: number): void;
  /** The engine of a live honest install, or null. */
  engineOf(install: string): DeviceEngine | null;
  addressOf(install: string): DeviceAddress | null;
  /** Adds an install the attacker runs; it polls the mailbox of `address` when `poll`. */
  addAttackerInstall(name: string, engine: DeviceEngine, address: DeviceAddress | null, poll: boolean): void;
  /** Hands outputs of an attacker install to the loop (its requests travel like any other). */
  attackerOutputs(name: string, outputs: readonly DeviceOutput[]): void;
  /** Starts provisioning polls for an attacker install. */
  provisionPolls(name: string): void;
  /** Gives an install an input, as its user or the network would. */
  input(install: string, input: DeviceInput): void;
  /** Starts a contact from its public contact link on an install (a no-op when it has it). */
  contact(install: string, user: UserId): void;
  /** A device's state was replaced by what it held at `toTick` (rollback). */
  rolledBack(install: string, toTick: number): void;
  /** The primary install of a user, or null. */
  primaryOf(user: UserId): string | null;
  /**
   * The malicious server's own request to the honest server (storing an envelope of its choice);
   * checked, traced and pushed like any other.
   */
  store(request: ServerRequest): ServerResponse;
}

interface Window {
  readonly user: UserId;
  readonly deviceId: number;
  readonly until: number;
}

interface Injection extends Window {
  readonly keys: StolenState;
  readonly identityKey: Uint8Array;
  readonly registrationId: number;
}

interface Copy {
  readonly sender: DeviceAddress;
  readonly recipient: DeviceAddress;
  readonly registrationId: number;
  readonly type: 'prekey' | 'whisper';
  readonly bytes: Uint8Array;
}

/** Everything a compromise took. */
interface Stolen {
  readonly t: number;
  readonly install: string;
  readonly address: DeviceAddress;
  readonly snapshot: unknown;
  readonly keys: StolenState;
}

/** The ops a swarm adversary draws from, with weights. */
const RANDOM_OPS = [
  'compromise',
  'clone',
  'tamper',
  'drop',
  'delay',
  'withhold-opks',
  'inject-device',
  'hide-device',
  'old-list',
  'replay',
  'hostile-refusal',
  'forge-kci',
  'rollback',
] as const;

/**
 * Swarm mode: `n` adversary actions drawn from the seed's `adversary` stream over the fault phase,
 * aimed at the installs present from setup. Steps that need stolen keys (clone, KCI, rollback)
 * draw their compromise first.
 */
export function drawAdversarySteps(config: SimConfig, population: Population, n: number): AttackStep[] {
  const s = floatStream(streamLabel(config.seed, 'adversary'));
  const w = config.workload;
  const from = setupTicks(w) + 1;
  const to = Math.max(from + 1, Math.floor(w.durationTicks * 0.8));
  const installs = population.users.flatMap((u) =>
    Array.from({ length: w.devicesPerUser }, (_, i) => installName(u, i + 1)),
  );
  const steps: AttackStep[] = [];
  const at = (): number => from + s.int(to - from);
  for (let i = 0; i < n; i++) {
    const op = s.pick(RANDOM_OPS);
    const t = at();
    const device = s.pick(installs);
    const user = s.pick(population.users);
    const until = t + 200 + s.int(3_000);
    const label = `r${i}`;
    switch (op) {
      case 'compromise':
        steps.push({ t, op, device, label });
        break;
      case 'clone': {
        steps.push({ t, op: 'compromise', device, label });
        const name = `${device}c${i}`;
        steps.push({ t: t + 50 + s.int(2_000), op: 'clone', label, name, poll: s.chance(0.5) });
        const contacts = population.contacts[device.slice(0, device.indexOf('/'))] ?? [];
        if (contacts.length > 0)
          for (let k = 0; k < 2; k++)
            steps.push({
              t: t + 2_100 + s.int(4_000),
              op: 'send-as',
              device: name,
              to: [s.pick(contacts)],
              text: `forged by ${name} #${k}`,
            });
        break;
      }
      case 'tamper':
        steps.push({ t, op, from: s.pick(installs), to: device });
        break;
      case 'drop':
        steps.push({ t, op, device, count: 1 + s.int(3) });
        break;
      case 'delay':
        steps.push({ t, op, device, ticks: 100 + s.int(2_000) });
        break;
      case 'withhold-opks':
      case 'old-list':
        steps.push({ t, op, user, until });
        break;
      case 'inject-device':
        steps.push({ t, op, user, deviceId: 20 + i, until });
        break;
      case 'hide-device':
        steps.push({ t, op, user, deviceId: 1 + s.int(w.devicesPerUser), until });
        break;
      case 'replay': {
        const types = ['prekey', 'prekey-no-opk', 'whisper', 'any'] as const;
        const other = s.pick(installs);
        steps.push({
          t,
          op,
          to: device,
          nth: s.int(6),
          type: s.pick(types),
          asSender: s.chance(0.5)
            ? {
                userId: other.slice(0, other.indexOf('/')),
                deviceId: Number(other.slice(other.indexOf('/') + 1)),
              }
            : null,
        });
        break;
      }
      case 'hostile-refusal':
        steps.push({ t, op, device, refusal: s.chance(0.5) ? 'unknown-user' : 'mailbox-full', until });
        break;
      case 'forge-kci': {
        steps.push({ t, op: 'compromise', device, label });
        const claimed = s.pick(installs.filter((x) => x !== device));
        steps.push({ t: t + 100 + s.int(3_000), op: 'forge-kci', label, as: claimed, text: `kci ${label}` });
        break;
      }
      case 'rollback':
        steps.push({ t, op: 'compromise', device, label });
        steps.push({ t: t + 200 + s.int(3_000), op: 'rollback', label });
        break;
    }
  }
  return steps.sort((a, b) => a.t - b.t);
}

/** The adversary of one run. */
export class Adversary {
  readonly recorder: SecurityRecorder;
  private readonly steps: readonly AttackStep[];
  private readonly stream: Stream;
  private readonly env: Env;
  private readonly stolen = new Map<string, Stolen>();
  private readonly tampers: { readonly from: string; readonly to: string }[] = [];
  private readonly drops = new Map<string, number>();
  private readonly delays = new Map<string, number>();
  private readonly withheld: { readonly user: UserId; readonly until: number }[] = [];
  private readonly injections: Injection[] = [];
  private readonly hidden: Window[] = [];
  private readonly oldLists: { readonly user: UserId; readonly until: number }[] = [];
  private readonly hostile: {
    readonly install: string;
    readonly refusal: 'unknown-user' | 'mailbox-full';
    readonly until: number;
  }[] = [];
  /** The oldest list the attacker saw per user (for `old-list`). */
  private readonly firstLists = new Map<UserId, SignedDeviceList>();
  /** Public registration facts per address: identity key and registration id. */
  private readonly registrations = new Map<
    string,
    { readonly identityKey: Uint8Array; readonly registrationId: number }
  >();
  /** The last-resort Kyber prekey each device published (what a bundle without one-time keys carries). */
  private readonly lastResort = new Map<
    string,
    { readonly keyId: number; readonly publicKey: Uint8Array; readonly signature: Uint8Array }
  >();
  /** Copies seen per recipient address, in order (for replays). */
  private readonly byRecipient = new Map<string, Copy[]>();
  private readonly phishing = new Map<string, UserId>();

  constructor(
    readonly plan: AdversaryPlan,
    private readonly host: AdversaryHost,
    config: SimConfig,
    population: Population,
  ) {
    this.stream = floatStream(streamLabel(config.seed, 'attacker'));
    this.env = { crypto: host.crypto, rng: seededRng(streamLabel(config.seed, 'attacker-keys')) };
    this.recorder = new SecurityRecorder(host.crypto, this.env, plan.name);
    const drawn = plan.randomActions > 0 ? drawAdversarySteps(config, population, plan.randomActions) : [];
    this.steps = [...plan.steps, ...drawn];
  }

  /** Queues every step. */
  start(): void {
    this.steps.forEach((step, index) => this.host.schedule(step.t, index));
    this.host.event('adversary', {
      plan: this.plan.name,
      steps: this.steps.length,
      drawn: this.steps.length - this.plan.steps.length,
    });
  }

  private freshId(): string {
    return toHex(this.env.rng.randomBytes(16));
  }

  private stepEvent(step: AttackStep, data: Readonly<Record<string, unknown>>): void {
    this.host.event('attack', { op: step.op, ...data });
  }

  // -------------------------------------------------------------------------------------------
  // Scripted actions

  /** Runs plan step `index`. */
  act(index: number): void {
    const step = this.steps[index];
    if (step === undefined) return;
    const now = this.host.now();
    switch (step.op) {
      case 'compromise': {
        const engine = this.host.engineOf(step.device);
        const address = this.host.addressOf(step.device);
        if (engine === null || address === null) return this.stepEvent(step, { skipped: 'no such device' });
        const snapshot = engine.snapshot();
        const keys = stolenState(snapshot);
        this.stolen.set(step.label, { t: now, install: step.device, address, snapshot, keys });
        this.recorder.compromised(step.label, step.device, address, now, keys);
        return this.stepEvent(step, { device: step.device, label: step.label, address: addressKey(address) });
      }
      case 'clone': {
        const s = this.stolen.get(step.label);
        if (s === undefined) return this.stepEvent(step, { skipped: 'nothing stolen' });
        const engine = this.host.factory.createProvisioning(this.env, now, this.host.options).engine;
        engine.restore(s.snapshot);
        this.recorder.attackerEngine(step.name, step.label, step.poll);
        this.host.addAttackerInstall(step.name, engine, s.address, step.poll);
        return this.stepEvent(step, { clone: step.name, of: s.install, poll: step.poll });
      }
      case 'send-as':
        // A contact link is public (an account-key fingerprint): the attacker's device can start one.
        for (const user of step.to) this.host.contact(step.device, user);
        this.host.input(step.device, {
          kind: 'user.send',
          recipients: step.to,
          content: { kind: 'text', text: step.text },
        });
        return this.stepEvent(step, { device: step.device, to: step.to });
      case 'rollback': {
        const s = this.stolen.get(step.label);
        const engine = s === undefined ? null : this.host.engineOf(s.install);
        if (s === undefined || engine === null) return this.stepEvent(step, { skipped: 'no such device' });
        engine.restore(s.snapshot);
        this.host.rolledBack(s.install, s.t);
        // The victim now runs on a state the attacker knows: a compromise again, as of now.
        this.recorder.compromised(`${step.label}@rollback`, s.install, s.address, now, s.keys);
        return this.stepEvent(step, { device: s.install, label: step.label });
      }
      case 'tamper':
        this.tampers.push({ from: step.from, to: step.to });
        return this.stepEvent(step, { from: step.from, to: step.to });
      case 'drop':
        this.drops.set(step.device, (this.drops.get(step.device) ?? 0) + step.count);
        return this.stepEvent(step, { device: step.device, count: step.count });
      case 'delay':
        this.delays.set(step.device, step.ticks);
        return this.stepEvent(step, { device: step.device, ticks: step.ticks });
      case 'withhold-opks':
        this.withheld.push({ user: step.user, until: step.until });
        return this.stepEvent(step, { user: step.user, until: step.until });
      case 'inject-device':
        return this.injectDevice(step);
      case 'hide-device':
        this.hidden.push({ user: step.user, deviceId: step.deviceId, until: step.until });
        return this.stepEvent(step, { user: step.user, deviceId: step.deviceId, until: step.until });
      case 'old-list':
        this.oldLists.push({ user: step.user, until: step.until });
        return this.stepEvent(step, { user: step.user, until: step.until });
      case 'hostile-refusal':
        this.hostile.push({ install: step.device, refusal: step.refusal, until: step.until });
        return this.stepEvent(step, { device: step.device, refusal: step.refusal, until: step.until });
      case 'replay':
        return this.replay(step);
      case 'forge-kci':
        return this.forgeKci(step);
      case 'kci-probe':
        return this.kciProbe(step);
      case 'phish-link':
        return this.phish(step);
    }
  }

  private injectDevice(step: Extract<AttackStep, { op: 'inject-device' }>): void {
    const address = { userId: step.user, deviceId: step.deviceId };
    const prekeys = generatePreKeyState(this.env, { oneTimePreKeys: 5, oneTimeKyberPreKeys: 2 });
    const keys: StolenState = { address, sesame: emptySesameState(address), prekeys };
    this.injections.push({
      user: step.user,
      deviceId: step.deviceId,
      until: step.until,
      keys,
      identityKey: prekeys.identityKeyPair.publicKey,
      registrationId: prekeys.registrationId,
    });
    this.recorder.injectedDevice(address, keys);
    this.stepEvent(step, { user: step.user, deviceId: step.deviceId, until: step.until });
  }

  /** Stores `bytes` in the mailbox of `recipient` as if `sender` had sent it; true when stored. */
  private store(
    sender: DeviceAddress,
    recipient: DeviceAddress,
    registrationId: number,
    type: 'prekey' | 'whisper',
    bytes: Uint8Array,
    transportId: string,
    forged: boolean,
  ): boolean {
    const response = this.host.store({
      kind: 'send',
      sender,
      messageId: transportId,
      recipient: recipient.userId,
      messages: [{ deviceId: recipient.deviceId, registrationId, type, bytes }],
      onlyDevice: recipient.deviceId,
    });
    if (response.kind !== 'accepted') return false;
    this.recorder.injectedCopy({ t: this.host.now(), sender, recipient, transportId, type, bytes, forged });
    return true;
  }

  private replay(step: Extract<AttackStep, { op: 'replay' }>): void {
    const to = this.host.addressOf(step.to);
    if (to === null) return this.stepEvent(step, { skipped: 'no such device' });
    const candidates = (this.byRecipient.get(addressKey(to)) ?? []).filter((c) => {
      if (step.type === 'any') return true;
      if (step.type === 'whisper') return c.type === 'whisper';
      if (c.type !== 'prekey') return false;
      if (step.type === 'prekey') return true;
      const parsed = parsePreKeySignalMessage(c.bytes);
      return parsed.ok && parsed.value.preKeyId === undefined;
    });
    const copy = candidates[step.nth];
    if (copy === undefined) return this.stepEvent(step, { skipped: 'nothing to replay', to: step.to });
    const sender = step.asSender ?? copy.sender;
    const stored = this.store(sender, to, copy.registrationId, copy.type, copy.bytes, this.freshId(), false);
    this.stepEvent(step, {
      to: step.to,
      type: copy.type,
      from: addressKey(copy.sender),
      as: addressKey(sender),
      stored,
    });
  }

  /** A KCI forgery of `step.as` for the victim of `step.label`, or null. */
  private kciEnvelope(
    step: { readonly label: string; readonly as: string },
    text: string,
  ): {
    readonly victim: Stolen;
    readonly claimed: DeviceAddress;
    readonly envelope: Envelope;
    readonly regId: number;
    readonly session: SessionState;
  } | null {
    const victim = this.stolen.get(step.label);
    const claimed = this.host.addressOf(step.as);
    if (victim === undefined || claimed === null) return null;
    const facts = this.registrations.get(addressKey(claimed));
    const mine = this.registrations.get(addressKey(victim.address));
    if (facts === undefined || mine === undefined) return null;
    const messageId = this.freshId();
    const payload = encodePayload({ messageId, sentAt: this.host.now(), content: { kind: 'text', text } });
    const forged = forgeKciMessage(this.env, victim.keys, facts, payload, this.host.now());
    if (forged === null) return null;
    return {
      victim,
      claimed,
      session: forged.session,
      regId: mine.registrationId,
      envelope: {
        envelopeId: 1_000_000_000 + this.stream.int(1_000_000),
        messageId,
        sender: claimed,
        type: forged.type,
        bytes: forged.bytes,
        serverTimestamp: this.host.now(),
      },
    };
  }

  private forgeKci(step: Extract<AttackStep, { op: 'forge-kci' }>): void {
    const forged = this.kciEnvelope(step, step.text);
    if (forged === null) return this.stepEvent(step, { skipped: 'no stolen prekey or unknown sender' });
    const stored = this.store(
      forged.claimed,
      forged.victim.address,
      forged.regId,
      'prekey',
      forged.envelope.bytes,
      forged.envelope.messageId,
      true,
    );
    if (stored) this.recorder.kciSession(step.label, forged.claimed, forged.victim.address, forged.session);
    this.stepEvent(step, { victim: forged.victim.install, as: step.as, stored });
  }

  /**
   * Would the victim accept a KCI forgery now? The forgery is fed to a throwaway copy of the
   * victim's current state (through the engine: a fetch, then its answer); the run is not touched.
   */
  private kciProbe(step: Extract<AttackStep, { op: 'kci-probe' }>): void {
    const forged = this.kciEnvelope(step, `kci probe at ${this.host.now()}`);
    const live = forged === null ? null : this.host.engineOf(forged.victim.install);
    if (forged === null || live === null) return this.stepEvent(step, { skipped: 'no victim' });
    const now = this.host.now();
    const copy = this.host.factory.createProvisioning(this.env, now, this.host.options).engine;
    copy.restore(live.snapshot());
    const fetch = copy
      .step({ kind: 'net.fetch' }, now)
      .find(
        (o): o is Extract<DeviceOutput, { kind: 'request' }> =>
          o.kind === 'request' && o.request.kind === 'fetch',
      );
    let accepted = false;
    if (fetch !== undefined) {
      const outputs = copy.step(
        {
          kind: 'net.response',
          requestId: fetch.requestId,
          response: { kind: 'envelopes', envelopes: [forged.envelope] },
        },
        now,
      );
      accepted = outputs.some(
        (o) => o.kind === 'delivered' && o.payload.messageId === forged.envelope.messageId,
      );
    }
    this.recorder.kciProbe(now, forged.victim.install, accepted);
    this.stepEvent(step, { victim: forged.victim.install, as: step.as, accepted });
  }

  private phish(step: Extract<AttackStep, { op: 'phish-link' }>): void {
    const primary = this.host.primaryOf(step.user);
    if (primary === null) return this.stepEvent(step, { skipped: 'no primary' });
    const created = this.host.factory.createProvisioning(this.env, this.host.now(), this.host.options);
    this.recorder.attackerEngine(step.name, null, true);
    this.phishing.set(step.name, step.user);
    this.host.addAttackerInstall(step.name, created.engine, null, true);
    this.host.attackerOutputs(step.name, created.outputs);
    this.host.provisionPolls(step.name);
    this.stepEvent(step, { user: step.user, device: step.name, primary });
    this.host.input(primary, { kind: 'user.link-device', code: created.code });
  }

  // -------------------------------------------------------------------------------------------
  // The network and the server

  /**
   * A request leaves `install`. The attacker records it, and returns it (possibly delayed by
   * `delay` ticks) or null to drop it.
   */
  up(
    install: string,
    requestId: number,
    request: ServerRequest,
  ): { readonly request: ServerRequest | null; readonly delay: number } {
    const now = this.host.now();
    this.recorder.request(install, requestId, request, now);
    if (request.kind === 'register-account' || request.kind === 'register-device')
      this.registrations.set(addressKey(request.device), {
        identityKey: request.identityKey,
        registrationId: request.registrationId,
      });
    if (
      request.kind === 'register-account' ||
      request.kind === 'register-device' ||
      request.kind === 'upload-prekeys'
    ) {
      const last = request.preKeys.kyberPreKeys.find((k) => k.lastResort);
      if (last !== undefined) this.lastResort.set(addressKey(request.device), last);
    }
    if (request.kind === 'register-account' && !this.firstLists.has(request.device.userId))
      this.firstLists.set(request.device.userId, request.deviceList);
    if (request.kind === 'send')
      for (const m of request.messages) {
        if (m.type === 'retry-request') continue;
        const key = `${request.recipient}.${m.deviceId}`;
        const list = this.byRecipient.get(key) ?? [];
        list.push({
          sender: request.sender,
          recipient: { userId: request.recipient, deviceId: m.deviceId },
          registrationId: m.registrationId,
          type: m.type,
          bytes: m.bytes,
        });
        this.byRecipient.set(key, list);
      }
    return this.fate(install, request);
  }

  private fate<T>(install: string, packet: T): { readonly request: T | null; readonly delay: number } {
    const drops = this.drops.get(install) ?? 0;
    if (drops > 0) {
      this.drops.set(install, drops - 1);
      this.host.event('attack', { op: 'dropped', device: install });
      return { request: null, delay: 0 };
    }
    const delay = this.delays.get(install) ?? 0;
    if (delay > 0) {
      this.delays.delete(install);
      this.host.event('attack', { op: 'delayed', device: install, ticks: delay });
    }
    return { request: packet, delay };
  }

  /** A response on its way down to `install`: tampered with, dropped or delayed as the plan says. */
  down(
    install: string,
    response: ServerResponse,
  ): { readonly request: ServerResponse | null; readonly delay: number } {
    let out = response;
    if (response.kind === 'envelopes' && this.tampers.some((x) => x.to === install)) {
      const index = this.tampers.findIndex((x) => x.to === install);
      const tamper = this.tampers[index];
      const from = tamper === undefined ? null : this.host.addressOf(tamper.from);
      const at = response.envelopes.findIndex(
        (e) => e.type === 'whisper' && from !== null && addressKey(e.sender) === addressKey(from),
      );
      const target = response.envelopes[at];
      if (target !== undefined && tamper !== undefined) {
        const tampered = tamperEnvelope(target, 'flip', {
          back: this.stream.int(16),
          bit: this.stream.int(8),
        });
        if (tampered !== null) {
          this.tampers.splice(index, 1);
          out = { kind: 'envelopes', envelopes: response.envelopes.map((e, i) => (i === at ? tampered : e)) };
          this.host.event('attack', { op: 'tampered', device: install, messageId: target.messageId });
        }
      }
    }
    return this.fate(install, out);
  }

  private active<T extends { readonly until: number }>(windows: readonly T[]): T[] {
    const now = this.host.now();
    return windows.filter((w) => w.until > now);
  }

  /** The list for `user` as the malicious server tells it. */
  private rewriteList(user: UserId, signed: SignedDeviceList): SignedDeviceList {
    const old = this.active(this.oldLists).some((w) => w.user === user)
      ? this.firstLists.get(user)
      : undefined;
    if (old !== undefined) return old;
    const injected = this.active(this.injections).filter((w) => w.user === user);
    const hidden = this.active(this.hidden).filter((w) => w.user === user);
    if (injected.length === 0 && hidden.length === 0) return signed;
    const decoded = decodeDeviceList(signed.list);
    if (!decoded.ok) return signed;
    const devices = decoded.value.devices.filter((d) => !hidden.some((h) => h.deviceId === d.deviceId));
    for (const i of injected)
      if (!devices.some((d) => d.deviceId === i.deviceId))
        devices.push({ deviceId: i.deviceId, identityKey: i.identityKey, registrationId: i.registrationId });
    devices.sort((a, b) => a.deviceId - b.deviceId);
    // A list must name 1..MAX_DEVICES_PER_ACCOUNT devices to be encoded at all.
    if (devices.length === 0 || devices.length > MAX_DEVICES_PER_ACCOUNT) return signed;
    // The account key's signature no longer covers this list: only `server` mode takes it.
    return { ...signed, list: encodeDeviceList({ ...decoded.value, devices }) };
  }

  /**
   * The malicious server: an answer of its own for `request` from `install`, or null to let the
   * honest server answer (its answer then passes {@link rewrite}).
   */
  serve(install: string, request: ServerRequest): ServerResponse | null {
    if (request.kind === 'send') {
      const hostile = this.active(this.hostile).find((h) => h.install === install);
      if (hostile !== undefined) {
        this.host.event('attack', { op: 'refused', device: install, refusal: hostile.refusal });
        return {
          kind: 'refused',
          refusal:
            hostile.refusal === 'unknown-user'
              ? { kind: 'unknown-user' }
              : { kind: 'mailbox-full', deviceIds: request.messages.map((m) => m.deviceId) },
        };
      }
      const injected = this.active(this.injections).filter((w) => w.user === request.recipient);
      if (injected.length === 0) return null;
      // Copies to a made-up device stay with the attacker (it recorded them on the way up).
      const kept = request.messages.filter((m) => !injected.some((i) => i.deviceId === m.deviceId));
      const missing = injected.filter((i) => !request.messages.some((m) => m.deviceId === i.deviceId));
      if (missing.length > 0 && request.onlyDevice === undefined) {
        const honest = this.host.server.signedDeviceList(request.recipient);
        if (honest !== null)
          return {
            kind: 'refused',
            refusal: {
              kind: 'mismatched-devices',
              missing: missing.map((i) => i.deviceId),
              extra: [],
              deviceList: this.rewriteList(request.recipient, honest),
            },
          };
      }
      if (kept.length === 0) return { kind: 'accepted', messageId: request.messageId, duplicate: false };
      return this.rewrite(this.host.server.handle({ ...request, messages: kept }, this.host.now()));
    }
    if (request.kind === 'get-bundles') {
      const injected = this.active(this.injections).filter((w) => w.user === request.userId);
      const mine = injected.filter((i) => request.deviceIds.includes(i.deviceId));
      const rest = request.deviceIds.filter((d) => !mine.some((i) => i.deviceId === d));
      const honest =
        rest.length === 0
          ? ({ kind: 'bundles', bundles: [] } as const)
          : this.host.server.handle({ ...request, deviceIds: rest }, this.host.now());
      if (honest.kind !== 'bundles') return this.rewrite(honest);
      const withheld = this.active(this.withheld).some((w) => w.user === request.userId);
      const bundles = [
        ...honest.bundles.map((b) => {
          if (!withheld) return b;
          // No one-time prekey of either kind: the last-resort Kyber prekey stands in (PQXDH §3.3).
          const last = this.lastResort.get(`${request.userId}.${b.deviceId}`);
          return {
            ...b,
            preKeyId: null,
            preKey: null,
            ...(last === undefined
              ? {}
              : {
                  kyberPreKeyId: last.keyId,
                  kyberPreKey: last.publicKey,
                  kyberPreKeySignature: last.signature,
                }),
          };
        }),
        ...mine.map((i) => bundleFromPreKeyState(i.keys.prekeys, { deviceId: i.deviceId })),
      ];
      if (withheld || mine.length > 0)
        this.host.event('attack', { op: 'bundles', user: request.userId, withheld, injected: mine.length });
      return { kind: 'bundles', bundles };
    }
    return null;
  }

  /** The malicious server's rewriting of an honest answer (device lists and refusals). */
  rewrite(response: ServerResponse): ServerResponse {
    if (response.kind === 'device-list') {
      const list = this.listUser(response.deviceList);
      if (list === null) return response;
      const rewritten = this.rewriteList(list, response.deviceList);
      return rewritten === response.deviceList ? response : { kind: 'device-list', deviceList: rewritten };
    }
    if (
      response.kind === 'refused' &&
      (response.refusal.kind === 'mismatched-devices' || response.refusal.kind === 'stale-devices')
    ) {
      const list = this.listUser(response.refusal.deviceList);
      if (list === null) return response;
      const rewritten = this.rewriteList(list, response.refusal.deviceList);
      if (rewritten === response.refusal.deviceList) return response;
      return { kind: 'refused', refusal: { ...response.refusal, deviceList: rewritten } };
    }
    return response;
  }

  private listUser(signed: SignedDeviceList): UserId | null {
    const decoded = decodeDeviceList(signed.list);
    if (!decoded.ok) return null;
    if (!this.firstLists.has(decoded.value.userId)) this.firstLists.set(decoded.value.userId, signed);
    return decoded.value.userId;
  }

  // -------------------------------------------------------------------------------------------
  // Ground truth and judgement

  /** An honest device stepped (see {@link SecurityRecorder.afterStep}). */
  afterStep(
    install: string,
    address: DeviceAddress | null,
    outputs: readonly DeviceOutput[],
    view: DeviceAbstractView,
    input?: DeviceInput,
  ): void {
    this.recorder.afterStep(install, address, outputs, view, this.host.now(), input);
  }

  /** A device emitted a request (see {@link SecurityRecorder.emitted}). */
  emitted(install: string, requestId: number, request: ServerRequest): void {
    this.recorder.emitted(install, requestId, request, this.host.now());
  }

  /** An output of a device the attacker runs. */
  attackerOutput(install: string, address: DeviceAddress | null, o: DeviceOutput): void {
    if (o.kind === 'delivered' && address !== null) {
      this.recorder.attackerLearned(install, address, o.payload, this.host.now());
      this.host.event('learned', {
        engine: install,
        from: addressKey(o.from),
        payloadId: o.payload.messageId,
      });
    }
    if (o.kind === 'linked' && this.phishing.has(install)) this.recorder.phishedDevice(o.address);
  }

  /** The oracles' verdict, also written on the `oracle` lane by the loop. */
  finish(): SecurityReport {
    return this.recorder.finish();
  }
}
