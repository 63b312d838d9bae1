/**
 * The discrete-event loop (WHITEPAPER.md, "Simulator"; design "Simulator shape", "Determinism").
 *
 * `runSimulation(config, { schedule })` builds the population from the seed, draws the schedule
 * (or takes the explicit one), and runs events in `(t, seq)` order:
 *
 * 1. **Setup** (not in the schedule): accounts are created one after another, each primary links
 *    its initial devices by QR provisioning, and every linked device starts its contacts from
 *    contact links.
 *    The network is fault-free until `setupTicks` (simulator/workload.ts).
 * 2. **Fault phase** `[setupTicks, durationTicks)`: schedule entries (sends, attachments, links,
 *    revocations, reinstalls; partitions, offline windows, server crashes, state losses,
 *    rollbacks) plus per-packet network faults. Devices poll every `pollInterval`, are pushed a
 *    fetch when the server stores a message for them, and resend unanswered requests every
 *    `resendInterval` while they have work. With `signedPreKeyRotation` set, each linked device's
 *    rotation timer fires every `interval` ticks from its link while it is online (WP-LIFE-07). The simulated users acknowledge key changes,
 *    scan a contact's current link again when the one they hold no longer matches the served list
 *    (an account reset after they got it, WP-TRUST-01), and download attachments they receive.
 * 3. **Liveness phase**: at `durationTicks` everything heals (no loss, duplication, tampering or
 *    extra delay; partitions and offline windows end; the server is up) and the run must converge
 *    within `livenessBound` ticks: every expected delivery made, no device with work, every live
 *    mailbox empty. Then the clock jumps past MAXLATENCY, every device drains once more, and the
 *    stale-record property is judged.
 *
 * Every property of simulator/invariants.ts is checked as the events happen and at the end. All
 * randomness comes from the seed's named streams (simulator/streams.ts); the keys stream is the
 * one `Env` every device draws from, in event order.
 * @module
 */
import { accountKeyFingerprint, decodeDeviceList } from '../spec/device-list.js';
import { MAX_LATENCY_MS, MAX_PROVISIONING_ENTRIES, PROVISIONING_TTL } from '../spec/constants.js';
import { nobleProvider } from '../spec/crypto/noble.js';
import type { CryptoProvider } from '../spec/crypto/provider.js';
import type { Env } from '../spec/env.js';
import { toHex } from '../spec/hex.js';
import type { DeviceAddress, UserId } from '../spec/identity.js';
import type { ServerRequest, ServerResponse } from '../spec/server-api.js';
import type { DeviceInput, DeviceOptions, DeviceOutput } from '../impl/device.js';
import type { LoadFigures, ScheduleEntry, SecurityReport, SimConfig, SimResult, Violation } from './api.js';
import { Adversary, type AdversaryHost } from './adversary.js';
import { addressKey } from './oracles.js';
import {
  DivergenceError,
  engineFactory,
  type DeviceAbstractView,
  type DeviceEngine,
  type EngineFactory,
  type ServerEngine,
} from './engine.js';
import { drawRun } from './faults.js';
import { Checker, type InstallFacts } from './invariants.js';
import { EventQueue, Network, tamperEnvelope } from './network.js';
import { reproCommand } from './repro.js';
import { createStreams, type Streams } from './streams.js';
import { TraceWriter, traceHeader, type EventData } from './trace.js';
import {
  attachmentBytes,
  attachmentText,
  installName,
  replacementOf,
  setupStagger,
  setupTicks,
  userOfInstall,
  type Population,
} from './workload.js';
import {
  abstractDelta,
  serverAbstractDelta,
  summarizeInput,
  summarizeOutput,
  summarizeRequest,
  summarizeResponse,
} from './summaries.js';

/** Options of a run. */
export interface RunOptions {
  /** An explicit schedule (replay, shrink): used instead of drawing one, and recorded in the header. */
  readonly schedule?: readonly ScheduleEntry[];
  /** The crypto provider (default noble, browser-safe); the trace is the same with either. */
  readonly crypto?: CryptoProvider;
  /** Replaces the engine factory (tests: e.g. `both` over two impl variants). */
  readonly factory?: EngineFactory;
}

type Clock = Readonly<Record<string, number>>;

type QEvent =
  | { readonly kind: 'op'; readonly entry: ScheduleEntry }
  | { readonly kind: 'create-account'; readonly user: UserId }
  | {
      readonly kind: 'up';
      readonly install: string;
      readonly requestId: number;
      readonly request: ServerRequest;
      readonly epoch: number;
      readonly vc: Clock;
    }
  | {
      readonly kind: 'down';
      readonly install: string;
      readonly requestId: number;
      readonly response: ServerResponse;
      readonly epoch: number;
      readonly vc: Clock;
    }
  | { readonly kind: 'push'; readonly install: string; readonly epoch: number; readonly vc: Clock }
  | { readonly kind: 'poll'; readonly install: string }
  | { readonly kind: 'resend'; readonly install: string }
  | { readonly kind: 'provision-poll'; readonly install: string }
  | { readonly kind: 'rotate'; readonly install: string }
  | { readonly kind: 'user'; readonly install: string; readonly input: DeviceInput }
  | { readonly kind: 'contacts'; readonly install: string }
  | { readonly kind: 'admin'; readonly user: UserId }
  | { readonly kind: 'snapshot'; readonly install: string; readonly tick: number }
  | { readonly kind: 'server-up'; readonly epoch: number }
  | { readonly kind: 'resume'; readonly install: string }
  | { readonly kind: 'faults-on' }
  | { readonly kind: 'attack'; readonly index: number }
  | { readonly kind: 'heal' }
  | { readonly kind: 'liveness-check' };

interface Install {
  readonly name: string;
  readonly user: UserId;
  engine: DeviceEngine;
  /** The engine runs (false once the install lost its state or was replaced). */
  alive: boolean;
  /** Exempt from delivery properties: revoked, replaced, state-lost, or told it is revoked. */
  gone: boolean;
  rolledBack: boolean;
  linked: boolean;
  address: DeviceAddress | null;
  offlineUntil: number;
  partitionUntil: number;
  resendArmed: boolean;
  readonly snapshots: Map<number, unknown>;
  readonly contactsAdded: Set<UserId>;
  readonly pendingAcks: Set<UserId>;
  /**
   * Per contact, the account-key fingerprint (hex) of the link the simulated user last scanned again
   * after a CONTACT_LINK_MISMATCH; cleared by a rollback, which may bring an older link back.
   */
  readonly relinked: Map<UserId, string>;
  /** The canonical JSON of each part of the last traced abstract state (see abstractDelta). */
  lastParts: ReadonlyMap<string, string>;
  /** Run by the adversary (a clone, a phished device): its outputs go to the attacker. */
  readonly attacker: boolean;
  /** An attacker install that fetches its address's mailbox once it has one. */
  attackerPolls: boolean;
}

type AdminOp =
  { readonly kind: 'link'; readonly device: string } | { readonly kind: 'revoke'; readonly device: string };

interface UserRec {
  readonly id: UserId;
  primary: string;
  readonly contacts: readonly UserId[];
  readonly installs: string[];
  admin: AdminOp[];
  busy: AdminOp | null;
  created: boolean;
  /** The tick from which the next link may start (see {@link LINKS_PER_RELAY_TTL}), or null. */
  linkSlot: number | null;
}

/**
 * The most links the simulated users start within one PROVISIONING_TTL: three quarters of what the
 * relay holds (WP-SRV-25), the rest left for puts that arrive late. A provisioning message stays on
 * the relay for PROVISIONING_TTL after it is put (WP-SRV-23), so a population that links its devices
 * faster than the relay drains (peak-day's 20 000 initial links during a 72-minute setup would need
 * about 5 500 places) would see most links refused for a full relay, and every refused device would
 * poll the relay for the rest of the run. The users wait their turn instead, in order, as people
 * linking devices over a morning would; no preset smaller than about 750 links within ten minutes
 * ever waits, so their runs are unchanged.
 */
const LINKS_PER_RELAY_TTL = Math.floor((MAX_PROVISIONING_ENTRIES * 3) / 4);

/** Thrown inside the loop to stop it at the first divergence under `both`. */
class Stop extends Error {}

class Simulation {
  private readonly streams: Streams;
  private readonly env: Env;
  private readonly factory: EngineFactory;
  private readonly server: ServerEngine;
  private readonly network: Network;
  private readonly queue = new EventQueue<QEvent>();
  private readonly installs = new Map<string, Install>();
  private readonly users = new Map<UserId, UserRec>();
  private readonly byAddress = new Map<string, string>();
  private readonly blobCaption = new Map<string, string>();
  /** Installs that could not yet add a contact whose account does not exist yet. */
  private readonly contactWaiters = new Map<UserId, Set<string>>();
  readonly checker: Checker;
  readonly trace: TraceWriter;
  private readonly options: DeviceOptions;
  private readonly full: boolean;
  private t = 0;
  private seq = 0;
  private serverUp = true;
  private serverEpoch = 0;
  private healed = false;
  private epochMode = false;
  private healAt: number;
  converged = false;
  divergence: SimResult['divergence'] = null;
  private lastServerParts: ReadonlyMap<string, string> = new Map();
  private readonly provisionInterval: number;
  private lastSummaryHour = -1;
  /** Start ticks of every link, in order (reserved ones included): see {@link LINKS_PER_RELAY_TTL}. */
  private readonly linkStarts: number[] = [];
  private readonly adversary: Adversary | null;
  security: SecurityReport | null = null;
  /** Benchmark figures (never traced): the deepest mailbox so far and, at the end, sessions held. */
  private load: LoadFigures = {
    peakMailboxDepth: 0,
    activeSessions: 0,
    initiatingSessions: 0,
    archivedSessions: 0,
  };

  constructor(
    readonly config: SimConfig,
    readonly schedule: readonly ScheduleEntry[],
    readonly population: Population,
    streams: Streams,
    crypto: CryptoProvider,
    factory: EngineFactory,
    explicit: boolean,
  ) {
    this.streams = streams;
    this.env =
      config.bugs.length > 0
        ? { crypto, rng: streams.keys, bugs: config.bugs }
        : { crypto, rng: streams.keys };
    this.factory = factory;
    this.server = factory.createServer(config.bugs.length > 0 ? { crypto, bugs: config.bugs } : { crypto });
    this.network = new Network(streams.network, config.faults);
    this.full = config.traceMode === 'full';
    this.trace = new TraceWriter(traceHeader(config, explicit ? schedule : null), crypto, this.full);
    this.checker = new Checker(crypto, (v) => this.traceViolation(v));
    this.options = {
      deviceListAuth: config.deviceListAuth,
      sequentialSessions: config.sequentialSessions,
      initialReplayCache: config.initialReplayCache,
      cloneDetection: config.cloneDetection,
    };
    this.healAt = config.workload.durationTicks;
    this.provisionInterval = Math.min(500, config.pollInterval);
    this.adversary =
      config.adversary === undefined
        ? null
        : new Adversary(config.adversary, this.adversaryHost(crypto), config, population);
  }

  /** What the adversary (simulator/adversary.ts) may do to and see of this run. */
  private adversaryHost(crypto: CryptoProvider): AdversaryHost {
    return {
      crypto,
      factory: this.factory,
      server: this.server,
      options: this.options,
      now: () => this.t,
      event: (kind, data) => this.event('attacker', kind, data),
      schedule: (t, index) => this.queue.push(t, { kind: 'attack', index }),
      engineOf: (name) => {
        const install = this.installs.get(name);
        return install === undefined || !install.alive || install.attacker ? null : install.engine;
      },
      addressOf: (name) => this.installs.get(name)?.address ?? null,
      addAttackerInstall: (name, engine, address, poll) => {
        const install = this.addInstall(name, engine, true);
        install.address = address;
        install.linked = address !== null;
        if (poll) install.attackerPolls = true;
        if (poll && address !== null) this.queue.push(this.t + 1, { kind: 'poll', install: name });
        this.armResend(install);
      },
      attackerOutputs: (name, outputs) => {
        const install = this.installs.get(name);
        if (install !== undefined) this.handleOutputs(install, outputs);
      },
      provisionPolls: (name) =>
        this.queue.push(this.t + this.provisionInterval, { kind: 'provision-poll', install: name }),
      input: (name, input) => {
        const install = this.installs.get(name);
        if (install !== undefined && install.alive) this.step(install, input);
      },
      contact: (name, user) => {
        const install = this.installs.get(name);
        if (install === undefined || install.contactsAdded.has(user)) return;
        const signed = this.server.signedDeviceList(user);
        const list = signed === null ? null : decodeDeviceList(signed.list);
        if (list === null || !list.ok) return;
        install.contactsAdded.add(user);
        this.step(install, {
          kind: 'user.add-contact',
          link: {
            userId: user,
            accountKeyFingerprint: accountKeyFingerprint(this.env.crypto, list.value.accountKey),
            inviteToken: null,
          },
        });
      },
      rolledBack: (name, toTick) => {
        const install = this.installs.get(name);
        if (install === undefined) return;
        install.rolledBack = true;
        install.resendArmed = false;
        install.relinked.clear();
        this.checker.rolledBack(name, toTick);
        if (install.address !== null) this.adversary?.recorder.rolledBack(install.address, this.t, toTick);
        this.armResend(install);
      },
      primaryOf: (user) => this.users.get(user)?.primary ?? null,
      store: (request) => {
        const response = this.server.handle(request, this.t);
        this.afterServerStep('attacker', 0, request, response, null, 0);
        return response;
      },
    };
  }

  // -------------------------------------------------------------------------------------------
  // Tracing

  private event(node: string, kind: string, data: EventData): void {
    if (this.full) this.trace.event(this.t, this.seq, node, kind, data);
  }

  private traceViolation(v: Violation): void {
    // Violations are recorded in both modes: they are what a summary trace is for.
    this.trace.event(this.t, this.seq, 'checker', 'check', {
      property: v.property,
      rules: v.rules,
      message: v.message,
    });
  }

  private summary(kind: string): void {
    this.trace.event(this.t, this.seq, 'sim', kind, { counters: this.checker.snapshotCounters() });
  }

  // -------------------------------------------------------------------------------------------
  // Setup

  start(): void {
    const stagger = setupStagger(this.config.workload);
    this.population.users.forEach((user, i) => {
      this.users.set(user, {
        id: user,
        primary: installName(user, 1),
        contacts: this.population.contacts[user] ?? [],
        installs: [],
        admin: [],
        busy: null,
        created: false,
        linkSlot: null,
      });
      this.queue.push(1 + i * stagger, { kind: 'create-account', user });
    });
    for (const entry of this.schedule) {
      this.queue.push(entry.t, { kind: 'op', entry });
      if (entry.op === 'rollback')
        this.queue.push(entry.toTick, { kind: 'snapshot', install: entry.device, tick: entry.toTick });
    }
    this.queue.push(setupTicks(this.config.workload), { kind: 'faults-on' });
    this.queue.push(this.healAt, { kind: 'heal' });
    this.adversary?.start();
    this.trace.event(0, 0, 'sim', 'setup', {
      users: this.population.users.length,
      devicesPerUser: this.config.workload.devicesPerUser,
      contacts: Object.values(this.population.contacts).reduce((n, c) => n + c.length, 0) / 2,
      schedule: this.schedule.length,
    });
  }

  private addInstall(name: string, engine: DeviceEngine, attacker = false): Install {
    const user = userOfInstall(name);
    const install: Install = {
      attacker,
      attackerPolls: false,
      name,
      user,
      engine,
      alive: true,
      gone: false,
      rolledBack: false,
      linked: false,
      address: null,
      offlineUntil: 0,
      partitionUntil: 0,
      resendArmed: false,
      snapshots: new Map(),
      contactsAdded: new Set(),
      pendingAcks: new Set(),
      relinked: new Map(),
      lastParts: new Map(),
    };
    this.installs.set(name, install);
    if (attacker) {
      install.gone = true;
      return install;
    }
    this.users.get(user)?.installs.push(name);
    return install;
  }

  // -------------------------------------------------------------------------------------------
  // The loop

  run(): void {
    this.start();
    try {
      for (;;) {
        const next = this.queue.pop();
        if (next === undefined) break;
        this.t = next.t;
        this.seq = next.seq;
        this.checker.at(this.t, this.seq);
        this.checker.count('events');
        if (!this.full) this.hourlySummary();
        if (this.handle(next.event)) break;
      }
    } catch (error) {
      if (error instanceof DivergenceError) {
        this.divergence = {
          t: this.t,
          seq: this.seq,
          node: error.node,
          field: error.field,
          impl: error.first,
          model: error.second,
        };
        this.trace.event(this.t, this.seq, error.node, 'divergence', { field: error.field });
        return;
      }
      if (error instanceof Stop) return;
      throw error;
    }
  }

  private hourlySummary(): void {
    const hour = Math.floor(this.t / 3_600_000);
    if (hour !== this.lastSummaryHour) {
      this.lastSummaryHour = hour;
      this.summary('summary');
    }
  }

  /** Handles one event; true ends the run. */
  private handle(e: QEvent): boolean {
    switch (e.kind) {
      case 'create-account':
        this.createAccount(e.user);
        return false;
      case 'op':
        this.applyOp(e.entry);
        return false;
      case 'up':
        this.onUp(e);
        return false;
      case 'down':
        this.onDown(e);
        return false;
      case 'push': {
        const install = this.installs.get(e.install);
        if (install === undefined || !this.canAct(install) || e.epoch !== this.serverEpoch) return false;
        this.trace.receive(install.name, e.vc);
        if (install.engine.lifecycle() === 'linked') this.step(install, { kind: 'net.fetch' });
        return false;
      }
      case 'poll': {
        const install = this.installs.get(e.install);
        if (install === undefined || !install.alive || this.epochMode) return false;
        if (install.engine.lifecycle() !== 'linked') return false;
        if (this.online(install)) this.step(install, { kind: 'net.fetch' });
        this.queue.push(this.t + this.config.pollInterval, { kind: 'poll', install: install.name });
        return false;
      }
      case 'resend': {
        const install = this.installs.get(e.install);
        if (install === undefined) return false;
        install.resendArmed = false;
        if (!install.alive || this.epochMode) return false;
        if (this.online(install)) this.step(install, { kind: 'timer.resend' });
        else this.armResend(install);
        return false;
      }
      case 'provision-poll': {
        const install = this.installs.get(e.install);
        if (install === undefined || !install.alive || install.engine.lifecycle() !== 'provisioning')
          return false;
        if (this.online(install)) this.step(install, { kind: 'timer.poll-provisioning' });
        this.queue.push(this.t + this.provisionInterval, { kind: 'provision-poll', install: install.name });
        return false;
      }
      case 'rotate': {
        // WP-LIFE-07: the device's signed-prekey rotation timer, while it stays linked.
        const rotation = this.config.signedPreKeyRotation;
        const install = this.installs.get(e.install);
        if (rotation === undefined || install === undefined || !install.alive || this.epochMode) return false;
        if (install.engine.lifecycle() !== 'linked') return false;
        if (this.online(install))
          this.step(install, { kind: 'timer.rotate-signed-prekey', gracePeriod: rotation.gracePeriod });
        this.queue.push(this.t + rotation.interval, { kind: 'rotate', install: install.name });
        return false;
      }
      case 'user': {
        const install = this.installs.get(e.install);
        if (install === undefined || !install.alive) return false;
        if (e.input.kind === 'user.acknowledge-key-change') install.pendingAcks.delete(e.input.userId);
        this.step(install, e.input);
        return false;
      }
      case 'contacts':
        this.addContacts(e.install);
        return false;
      case 'admin':
        this.runAdmin(e.user);
        return false;
      case 'snapshot': {
        const install = this.installs.get(e.install);
        if (install !== undefined && install.alive) install.snapshots.set(e.tick, install.engine.snapshot());
        return false;
      }
      case 'server-up':
        if (e.epoch === this.serverEpoch && !this.serverUp) {
          this.serverUp = true;
          this.trace.event(this.t, this.seq, 'server', 'fault', { fault: 'server-restart' });
        }
        return false;
      case 'resume': {
        const install = this.installs.get(e.install);
        if (install === undefined || !install.alive || !this.online(install)) return false;
        if (install.engine.lifecycle() === 'linked') this.step(install, { kind: 'net.fetch' });
        this.armResend(install);
        return false;
      }
      case 'attack':
        this.adversary?.act(e.index);
        return false;
      case 'faults-on':
        this.network.activate();
        this.trace.event(this.t, this.seq, 'sim', 'faults-on', {});
        return false;
      case 'heal':
        this.heal();
        return false;
      case 'liveness-check':
        return this.livenessCheck();
    }
  }

  private online(install: Install): boolean {
    return install.alive && this.t >= install.offlineUntil;
  }

  private linkUp(install: Install): boolean {
    return install.alive && this.t >= install.offlineUntil && this.t >= install.partitionUntil;
  }

  private canAct(install: Install): boolean {
    return this.linkUp(install);
  }

  // -------------------------------------------------------------------------------------------
  // Devices

  private createAccount(user: UserId): void {
    const rec = this.users.get(user);
    if (rec === undefined) return;
    rec.created = true;
    const created = this.factory.createPrimary(this.env, user, this.t, this.options);
    const install = this.addInstall(rec.primary, created.engine);
    this.event(install.name, 'create', { role: 'primary', user });
    this.handleOutputs(install, created.outputs);
    for (let n = 2; n <= this.config.workload.devicesPerUser; n++)
      rec.admin.push({ kind: 'link', device: installName(user, n) });
  }

  /** Applies one input to a device and handles what it outputs. */
  private step(install: Install, input: DeviceInput): void {
    const outputs = install.engine.step(input, this.t);
    this.handleOutputs(install, outputs, input);
  }

  private handleOutputs(install: Install, outputs: readonly DeviceOutput[], input?: DeviceInput): void {
    if (install.attacker) return this.attackerOutputs(install, outputs, input);
    if (this.full) {
      const view = install.engine.abstract();
      this.checker.deviceAbstract(install.name, view);
      // Summarised now, so that the event keeps no packet bytes alive. The abstract-state delta
      // from the install's previous step line is computed when the lines are written, in line
      // order (TraceWriter; views are immutable): a run whose trace nobody reads skips it.
      const data: Record<string, unknown> = {
        input: input === undefined ? { kind: 'create' } : summarizeInput(input),
        outputs: outputs.map(summarizeOutput),
      };
      const model = install.engine.modelStep();
      if (model !== null) data.model = { path: [...model.path], state: model.state };
      this.event(install.name, 'step', () => {
        const delta = abstractDelta(view, install.lastParts, this.env.crypto);
        data.abstractHash = delta.hash;
        if (delta.changed !== null) data.abstractDelta = delta.changed;
        install.lastParts = delta.parts;
        return data;
      });
    }
    this.adversary?.afterStep(install.name, install.address, outputs, install.engine.abstract(), input);
    for (const output of outputs) this.onOutput(install, output);
    if (install.alive && install.engine.hasWork()) this.armResend(install);
  }

  /** A step of a device the attacker runs: its requests travel, the rest is the attacker's. */
  private attackerOutputs(install: Install, outputs: readonly DeviceOutput[], input?: DeviceInput): void {
    this.event(install.name, 'attacker-step', {
      input: input === undefined ? { kind: 'create' } : summarizeInput(input),
      outputs: outputs.map(summarizeOutput),
    });
    for (const o of outputs) {
      if (o.kind === 'request') {
        this.adversary?.emitted(install.name, o.requestId, o.request);
        this.sendUp(install, o.requestId, o.request);
      }
      if (o.kind === 'linked') {
        install.linked = true;
        install.address = o.address;
        this.byAddress.set(addressKey(o.address), install.name);
        if (install.attackerPolls) this.queue.push(this.t + 1, { kind: 'poll', install: install.name });
      }
      this.adversary?.attackerOutput(install.name, install.address, o);
    }
    if (install.alive && install.engine.hasWork()) this.armResend(install);
  }

  private armResend(install: Install): void {
    if (install.resendArmed || this.epochMode || !install.alive) return;
    install.resendArmed = true;
    this.queue.push(this.t + this.config.resendInterval, { kind: 'resend', install: install.name });
  }

  private onOutput(install: Install, o: DeviceOutput): void {
    const c = this.checker;
    switch (o.kind) {
      case 'request':
        c.requestEmitted(install.name, o.requestId, o.request);
        this.adversary?.emitted(install.name, o.requestId, o.request);
        this.sendUp(install, o.requestId, o.request);
        return;
      case 'delivered': {
        const kind = c.delivered(install.name, install.user, o.from, o.payload, this.t);
        if (kind === 'attachment') {
          const content = o.payload.content;
          const inner = content.kind === 'sync' ? content.content : content;
          if (inner.kind === 'attachment') {
            this.blobCaption.set(inner.pointer.blobId, inner.caption);
            this.queue.push(this.t + 1, {
              kind: 'user',
              install: install.name,
              input: { kind: 'user.download', pointer: inner.pointer },
            });
          }
        }
        return;
      }
      case 'attachment':
        c.attachmentBytes(install.name, this.blobCaption.get(o.pointer.blobId) ?? '', o.bytes);
        return;
      case 'attachment-failed':
        c.count(`attachment-failed.${o.error.code}`);
        return;
      case 'undecryptable':
        c.undecryptable(install.name, o.messageId, o.error);
        return;
      case 'duplicate-dropped':
        c.count('duplicate-dropped');
        return;
      case 'clone-detected':
        c.count('clone-detected');
        return;
      case 'resent':
        c.count('resends');
        return;
      case 'sent':
        c.count('sent');
        return;
      case 'send-failed':
        c.count(`send-failed.${o.error.code}`);
        return;
      case 'key-change':
        c.count('key-changes');
        // The simulated user accepts the new safety number a little later.
        if (!install.pendingAcks.has(o.userId)) {
          install.pendingAcks.add(o.userId);
          this.queue.push(this.t + 20, {
            kind: 'user',
            install: install.name,
            input: { kind: 'user.acknowledge-key-change', userId: o.userId },
          });
        }
        return;
      case 'device-list-changed': {
        c.deviceListChanged(install.name, o.userId, o.added, o.removed);
        const rec = this.users.get(install.user);
        if (
          o.userId === install.user &&
          rec !== undefined &&
          rec.primary === install.name &&
          rec.busy?.kind === 'revoke'
        ) {
          const target = this.installs.get(rec.busy.device);
          if (
            target?.address !== null &&
            target?.address !== undefined &&
            o.removed.includes(target.address.deviceId)
          )
            this.adminDone(rec);
        }
        return;
      }
      case 'linked':
        this.onLinked(install, o.address);
        return;
      case 'device-linked': {
        const rec = this.users.get(install.user);
        if (rec !== undefined && rec.busy?.kind === 'link') this.adminDone(rec);
        return;
      }
      case 'revoked':
        c.count('devices-revoked');
        install.gone = true;
        this.event(install.name, 'lifecycle', { lifecycle: 'revoked' });
        return;
      case 'error': {
        c.count(`errors.${o.error.code}`);
        if (o.error.code === 'CONTACT_LINK_MISMATCH' && o.context.startsWith('device-list '))
          this.rescanContactLink(install, o.context.slice('device-list '.length));
        const rec = this.users.get(install.user);
        if (
          rec !== undefined &&
          rec.primary === install.name &&
          rec.busy !== null &&
          (o.context === 'link-device' || o.context === 'revoke-device')
        ) {
          c.count('admin.failed');
          if (rec.busy.kind === 'link') {
            const pending = this.installs.get(rec.busy.device);
            if (pending !== undefined) {
              pending.gone = true;
              pending.alive = false;
            }
          }
          this.adminDone(rec);
        }
        return;
      }
    }
  }

  private onLinked(install: Install, address: DeviceAddress): void {
    install.linked = true;
    install.address = address;
    this.byAddress.set(`${address.userId}.${address.deviceId}`, install.name);
    this.checker.count('devices-linked');
    this.event(install.name, 'lifecycle', { lifecycle: 'linked', address });
    this.queue.push(this.t + 1, { kind: 'contacts', install: install.name });
    const offset = this.streams.network.int(this.config.pollInterval) + 1;
    this.queue.push(this.t + offset, { kind: 'poll', install: install.name });
    // Devices link at different times, so their rotation timers are staggered without a draw.
    const rotation = this.config.signedPreKeyRotation;
    if (rotation !== undefined)
      this.queue.push(this.t + rotation.interval, { kind: 'rotate', install: install.name });
    const rec = this.users.get(install.user);
    if (rec !== undefined && rec.primary === install.name) {
      this.queue.push(this.t + 1, { kind: 'admin', user: rec.id });
      this.accountCreated(install.user);
    }
  }

  /** Starts each contact of a linked install from its contact link (retried until the contact exists). */
  private addContacts(name: string): void {
    const install = this.installs.get(name);
    if (install === undefined || !install.alive || install.gone || install.engine.lifecycle() !== 'linked')
      return;
    for (const contact of this.users.get(install.user)?.contacts ?? []) {
      if (install.contactsAdded.has(contact)) continue;
      const signed = this.server.signedDeviceList(contact);
      const list = signed === null ? null : decodeDeviceList(signed.list);
      if (list === null || !list.ok) {
        const waiting = this.contactWaiters.get(contact) ?? new Set<string>();
        waiting.add(name);
        this.contactWaiters.set(contact, waiting);
        continue;
      }
      install.contactsAdded.add(contact);
      this.step(install, {
        kind: 'user.add-contact',
        link: {
          userId: contact,
          accountKeyFingerprint: accountKeyFingerprint(this.env.crypto, list.value.accountKey),
          inviteToken: null,
        },
      });
    }
  }

  /**
   * WP-TRUST-01: the served list of `user` did not match the contact link this install holds: the link
   * predates an account reset (or the install was restored to before it heard of one). The simulated
   * user gets the contact's current link, as a person would ask the contact again, a little later;
   * once per fingerprint, so a server that keeps serving another key gets no endless rescans.
   */
  private rescanContactLink(install: Install, user: UserId): void {
    const signed = this.server.signedDeviceList(user);
    const list = signed === null ? null : decodeDeviceList(signed.list);
    if (list === null || !list.ok) return;
    const fingerprint = accountKeyFingerprint(this.env.crypto, list.value.accountKey);
    const hex = toHex(fingerprint);
    if (install.relinked.get(user) === hex) return;
    install.relinked.set(user, hex);
    this.checker.count('contact-rescans');
    this.queue.push(this.t + 20, {
      kind: 'user',
      install: install.name,
      input: {
        kind: 'user.add-contact',
        link: { userId: user, accountKeyFingerprint: fingerprint, inviteToken: null },
      },
    });
  }

  /** `user`'s primary registered: installs waiting to add it as a contact try again. */
  private accountCreated(user: UserId): void {
    const waiting = this.contactWaiters.get(user);
    if (waiting === undefined) return;
    this.contactWaiters.delete(user);
    for (const name of waiting) this.queue.push(this.t + 1, { kind: 'contacts', install: name });
  }

  // -------------------------------------------------------------------------------------------
  // Account administration (links and revocations, one at a time per primary)

  private runAdmin(user: UserId): void {
    const rec = this.users.get(user);
    if (rec === undefined || rec.busy !== null) return;
    const primary = this.installs.get(rec.primary);
    if (primary === undefined || !primary.alive || primary.engine.lifecycle() !== 'linked') return;
    const next = rec.admin[0];
    if (next?.kind === 'link' && !this.linkMayStart(rec)) return;
    const op = rec.admin.shift();
    if (op === undefined) return;
    if (op.kind === 'link') {
      const created = this.factory.createProvisioning(this.env, this.t, this.options);
      const install = this.addInstall(op.device, created.engine);
      this.event(install.name, 'create', { role: 'linked', user });
      this.handleOutputs(install, created.outputs);
      this.queue.push(this.t + this.provisionInterval, { kind: 'provision-poll', install: install.name });
      rec.busy = op;
      this.step(primary, { kind: 'user.link-device', code: created.code });
      return;
    }
    const target = this.installs.get(op.device);
    if (target?.address === null || target?.address === undefined) {
      this.checker.count('admin.skipped');
      this.queue.push(this.t + 1, { kind: 'admin', user });
      return;
    }
    rec.busy = op;
    this.step(primary, { kind: 'user.revoke-device', deviceId: target.address.deviceId });
  }

  /**
   * Whether `rec`'s next link may start now. The first time a link asks, it reserves the earliest
   * tick at which it keeps at most {@link LINKS_PER_RELAY_TTL} link starts within any
   * PROVISIONING_TTL; a later tick is kept in `linkSlot` and the admin step runs again then.
   */
  private linkMayStart(rec: UserRec): boolean {
    if (rec.linkSlot === null) {
      const starts = this.linkStarts;
      const bound = starts[starts.length - LINKS_PER_RELAY_TTL];
      const slot = bound === undefined ? this.t : Math.max(this.t, bound + PROVISIONING_TTL);
      starts.push(slot);
      rec.linkSlot = slot;
      if (slot > this.t) {
        this.checker.count('links.waited');
        this.queue.push(slot, { kind: 'admin', user: rec.id });
      }
    }
    if (this.t < rec.linkSlot) return false;
    rec.linkSlot = null;
    return true;
  }

  private adminDone(rec: UserRec): void {
    rec.busy = null;
    this.queue.push(this.t + 1, { kind: 'admin', user: rec.id });
  }

  // -------------------------------------------------------------------------------------------
  // Schedule entries

  private skip(entry: ScheduleEntry, reason: string): void {
    this.checker.count(`ops.skipped.${entry.op}`);
    this.event('sim', 'op', { op: entry.op, skipped: reason });
  }

  private applyOp(entry: ScheduleEntry): void {
    const isFault =
      entry.op === 'partition' ||
      entry.op === 'offline' ||
      entry.op === 'server-crash' ||
      entry.op === 'state-loss' ||
      entry.op === 'rollback';
    if (isFault && this.healed) return this.skip(entry, 'after heal');
    switch (entry.op) {
      case 'send':
      case 'attachment':
        return this.sendOp(entry);
      case 'link': {
        const rec = this.users.get(userOfInstall(entry.primary));
        if (rec === undefined || this.installs.has(entry.device)) return this.skip(entry, 'no such user');
        rec.admin.push({ kind: 'link', device: entry.device });
        this.event('sim', 'op', { op: 'link', device: entry.device });
        this.queue.push(this.t, { kind: 'admin', user: rec.id });
        return;
      }
      case 'revoke': {
        const rec = this.users.get(userOfInstall(entry.device));
        const target = this.installs.get(entry.device);
        if (
          rec === undefined ||
          target === undefined ||
          !target.alive ||
          target.gone ||
          rec.primary === entry.device
        )
          return this.skip(entry, 'no such device');
        target.gone = true;
        rec.admin.push({ kind: 'revoke', device: entry.device });
        this.event('sim', 'op', { op: 'revoke', device: entry.device });
        this.queue.push(this.t, { kind: 'admin', user: rec.id });
        return;
      }
      case 'reinstall':
      case 'state-loss':
        return this.reinstall(entry);
      case 'partition':
      case 'offline': {
        const install = this.installs.get(entry.device);
        if (install === undefined || !install.alive) return this.skip(entry, 'no such device');
        if (entry.op === 'partition') install.partitionUntil = Math.max(install.partitionUntil, entry.until);
        else install.offlineUntil = Math.max(install.offlineUntil, entry.until);
        this.checker.count(`faults.${entry.op}`);
        this.event(install.name, 'fault', { fault: entry.op, until: entry.until });
        this.queue.push(entry.until, { kind: 'resume', install: install.name });
        return;
      }
      case 'server-crash':
        this.serverUp = false;
        this.serverEpoch++;
        this.checker.count('faults.server-crash');
        this.trace.event(this.t, this.seq, 'server', 'fault', { fault: 'server-crash', until: entry.until });
        this.queue.push(entry.until, { kind: 'server-up', epoch: this.serverEpoch });
        return;
      case 'rollback': {
        const install = this.installs.get(entry.device);
        const snapshot = install?.snapshots.get(entry.toTick);
        if (install === undefined || !install.alive || snapshot === undefined)
          return this.skip(entry, 'no snapshot');
        const before = install.engine.lifecycle();
        install.engine.restore(snapshot);
        install.rolledBack = true;
        install.resendArmed = false;
        install.relinked.clear();
        this.checker.rolledBack(install.name, entry.toTick);
        if (install.address !== null)
          this.adversary?.recorder.rolledBack(install.address, this.t, entry.toTick);
        this.checker.count('faults.rollback');
        this.event(install.name, 'fault', { fault: 'rollback', toTick: entry.toTick });
        this.armResend(install);
        // The device's own timers come back with the state: a poll chain ends when the lifecycle it
        // serves does, so one restored into an earlier lifecycle gets that lifecycle's timer again.
        const after = install.engine.lifecycle();
        if (after === 'provisioning' && before !== 'provisioning')
          this.queue.push(this.t + this.provisionInterval, { kind: 'provision-poll', install: install.name });
        if (after === 'linked' && before !== 'linked')
          this.queue.push(this.t + this.config.pollInterval, { kind: 'poll', install: install.name });
        return;
      }
    }
  }

  private sendOp(entry: Extract<ScheduleEntry, { op: 'send' | 'attachment' }>): void {
    const install = this.installs.get(entry.from);
    if (
      install === undefined ||
      !install.alive ||
      install.gone ||
      install.engine.lifecycle() !== 'linked' ||
      install.address === null
    )
      return this.skip(entry, 'sender not linked');
    const linkedOf = (user: UserId, except?: string): string[] =>
      (this.users.get(user)?.installs ?? []).filter((n) => {
        const i = this.installs.get(n);
        return (
          i !== undefined &&
          n !== except &&
          i.alive &&
          !i.gone &&
          i.linked &&
          i.engine.lifecycle() === 'linked'
        );
      });
    const recipients = entry.to.flatMap((u) => linkedOf(u));
    const siblings = linkedOf(install.user, install.name);
    this.adversary?.recorder.honestSend(
      entry.op === 'send' ? entry.text : attachmentText(entry),
      install.name,
      install.address,
      this.t,
    );
    if (entry.op === 'send') {
      this.checker.sendOp(
        {
          text: entry.text,
          kind: 'text',
          sender: install.name,
          senderAddress: install.address,
          to: entry.to,
          t: this.t,
          bytesFp: null,
        },
        recipients,
        siblings,
      );
      this.step(install, {
        kind: 'user.send',
        recipients: entry.to,
        content: { kind: 'text', text: entry.text },
      });
      return;
    }
    const caption = attachmentText(entry);
    const bytes = attachmentBytes(caption, entry.size);
    this.checker.sendOp(
      {
        text: caption,
        kind: 'attachment',
        sender: install.name,
        senderAddress: install.address,
        to: entry.to,
        t: this.t,
        bytesFp: toHex(this.env.crypto.sha256(bytes)),
      },
      recipients,
      siblings,
    );
    this.step(install, {
      kind: 'user.send',
      recipients: entry.to,
      content: { kind: 'attachment', bytes, contentType: 'application/octet-stream', caption },
    });
  }

  /** A device lost its state: it comes back as a new install (WP-LIFE-05). */
  private reinstall(entry: Extract<ScheduleEntry, { op: 'reinstall' | 'state-loss' }>): void {
    const install = this.installs.get(entry.device);
    const rec = this.users.get(userOfInstall(entry.device));
    if (
      install === undefined ||
      rec === undefined ||
      !install.alive ||
      install.gone ||
      this.installs.has(replacementOf(entry.device))
    )
      return this.skip(entry, 'no such device');
    install.alive = false;
    install.gone = true;
    this.checker.count(`faults.${entry.op}`);
    this.event(install.name, 'fault', { fault: entry.op });
    if (rec.primary !== install.name) {
      if (install.address !== null) rec.admin.push({ kind: 'revoke', device: install.name });
      rec.admin.push({ kind: 'link', device: replacementOf(install.name) });
      this.queue.push(this.t, { kind: 'admin', user: rec.id });
      return;
    }
    // A lost primary resets the account with a new account key; every other install is replaced.
    const signed = this.server.signedDeviceList(rec.id);
    const list = signed === null ? null : decodeDeviceList(signed.list);
    const version = list !== null && list.ok ? list.value.version : 0;
    const others = rec.installs.filter((n) => {
      const i = this.installs.get(n);
      return n !== install.name && i !== undefined && !i.gone && (i.alive || i.linked);
    });
    for (const n of others) {
      const other = this.installs.get(n);
      if (other !== undefined) other.gone = true;
    }
    rec.primary = replacementOf(install.name);
    rec.busy = null;
    rec.admin = others.map((n) => ({ kind: 'link', device: replacementOf(n) }) as const);
    const created = this.factory.resetPrimary(this.env, rec.id, version, this.t, this.options);
    const fresh = this.addInstall(rec.primary, created.engine);
    this.event(fresh.name, 'create', { role: 'reset-primary', user: rec.id, previousVersion: version });
    this.handleOutputs(fresh, created.outputs);
  }

  // -------------------------------------------------------------------------------------------
  // Network

  private sendUp(install: Install, requestId: number, sent: ServerRequest): void {
    let request = sent;
    if (!this.linkUp(install)) {
      this.checker.count('net.lost.link-down');
      this.event('net', 'net', {
        action: 'drop',
        reason: 'link-down',
        dir: 'up',
        device: install.name,
        requestId,
      });
      return;
    }
    let held = 0;
    if (this.adversary !== null) {
      const seen = this.adversary.up(install.name, requestId, request);
      if (seen.request === null) return;
      request = seen.request;
      held = seen.delay;
    }
    const fate = this.network.fate();
    if (fate.lost) {
      this.checker.count('net.lost');
      this.event('net', 'net', {
        action: 'drop',
        reason: 'loss',
        dir: 'up',
        device: install.name,
        requestId,
      });
      return;
    }
    if (fate.duplicated) this.checker.count('net.duplicated');
    const vc = this.full ? this.trace.clockOf(install.name) : {};
    for (const delay of fate.delays)
      this.queue.push(this.t + held + delay, {
        kind: 'up',
        install: install.name,
        requestId,
        request,
        epoch: this.serverEpoch,
        vc,
      });
  }

  private onUp(e: Extract<QEvent, { kind: 'up' }>): void {
    const install = this.installs.get(e.install);
    if (!this.serverUp || e.epoch !== this.serverEpoch) {
      this.checker.count('net.lost.server');
      this.event('net', 'net', {
        action: 'drop',
        reason: this.serverUp ? 'crash' : 'server-down',
        dir: 'up',
        device: e.install,
        requestId: e.requestId,
      });
      return;
    }
    // The transport authenticates a connection as its address (impl/server.ts leaves this to the
    // transport): an install whose address now belongs to a newer registration (a reinstall or an
    // account reset took it over) is no longer that device, so its requests go nowhere.
    if (
      install !== undefined &&
      install.address !== null &&
      !install.attacker &&
      this.byAddress.get(`${install.address.userId}.${install.address.deviceId}`) !== install.name
    ) {
      this.checker.count('net.lost.superseded');
      this.event('net', 'net', {
        action: 'drop',
        reason: 'superseded',
        dir: 'up',
        device: e.install,
        requestId: e.requestId,
      });
      return;
    }
    if (install === undefined || !this.linkUp(install)) {
      this.checker.count('net.lost.link-down');
      this.event('net', 'net', {
        action: 'drop',
        reason: 'link-down',
        dir: 'up',
        device: e.install,
        requestId: e.requestId,
      });
      return;
    }
    this.trace.receive('server', e.vc);
    const request = e.request;
    const ackAddress = request.kind === 'ack' ? request.device : null;
    const before = ackAddress === null ? 0 : this.server.mailboxDepth(ackAddress);
    const response =
      this.adversary === null
        ? this.server.handle(request, this.t)
        : (this.adversary.serve(install.name, request) ??
          this.adversary.rewrite(this.server.handle(request, this.t)));
    this.afterServerStep(install.name, e.requestId, request, response, ackAddress, before);
    this.sendDown(install, e.requestId, response);
  }

  /** Checks, traces and pushes after the server answered `request` from `from`. */
  private afterServerStep(
    from: string,
    requestId: number,
    request: ServerRequest,
    response: ServerResponse,
    ackAddress: DeviceAddress | null,
    before: number,
  ): void {
    const removed = ackAddress === null ? 0 : before - this.server.mailboxDepth(ackAddress);
    this.checker.serverStep(from, request, response, this.t, removed);
    if (this.full) {
      const data: Record<string, unknown> = {
        from,
        requestId,
        request: summarizeRequest(request),
        response: summarizeResponse(response),
      };
      const view = this.server.abstract();
      const model = this.server.modelStep();
      if (model !== null) data.model = { path: [...model.path], state: model.state };
      // As for device steps: the delta is computed when the lines are written.
      this.event('server', 'request', () => {
        const delta = serverAbstractDelta(view, this.lastServerParts, this.env.crypto);
        data.abstractHash = delta.hash;
        if (delta.changed !== null) data.abstractDelta = delta.changed;
        this.lastServerParts = delta.parts;
        return data;
      });
    }
    if (request.kind === 'send' && response.kind === 'accepted' && !response.duplicate) {
      for (const m of request.messages) {
        const depth = this.server.mailboxDepth({ userId: request.recipient, deviceId: m.deviceId });
        if (depth > this.load.peakMailboxDepth) this.load = { ...this.load, peakMailboxDepth: depth };
        const target = this.byAddress.get(`${request.recipient}.${m.deviceId}`);
        if (target !== undefined) this.push(target);
      }
    }
  }

  private push(name: string): void {
    const install = this.installs.get(name);
    if (install === undefined || !this.linkUp(install)) return;
    const fate = this.network.fate();
    const delay = fate.delays[0];
    if (delay === undefined) return;
    const vc = this.full ? this.trace.clockOf('server') : {};
    this.queue.push(this.t + delay, { kind: 'push', install: name, epoch: this.serverEpoch, vc });
  }

  private sendDown(install: Install, requestId: number, original: ServerResponse): void {
    if (!this.linkUp(install)) {
      this.checker.count('net.lost.link-down');
      this.event('net', 'net', {
        action: 'drop',
        reason: 'link-down',
        dir: 'down',
        device: install.name,
        requestId,
      });
      return;
    }
    let response = original;
    if (response.kind === 'envelopes') {
      let changed = false;
      const envelopes = response.envelopes.map((envelope) => {
        if (envelope.type !== 'whisper') return envelope;
        const mode = this.network.tamperMode();
        if (mode === null) return envelope;
        const tampered = tamperEnvelope(envelope, mode, this.network.flipPosition());
        if (tampered === null) return envelope;
        changed = true;
        this.checker.tamperedWith(install.name, envelope.messageId, mode);
        this.event('net', 'net', {
          action: 'tamper',
          mode,
          device: install.name,
          messageId: envelope.messageId,
        });
        return tampered;
      });
      if (changed) response = { kind: 'envelopes', envelopes };
    }
    let held = 0;
    if (this.adversary !== null) {
      const seen = this.adversary.down(install.name, response);
      if (seen.request === null) return;
      response = seen.request;
      held = seen.delay;
    }
    const fate = this.network.fate();
    if (fate.lost) {
      this.checker.count('net.lost');
      this.event('net', 'net', {
        action: 'drop',
        reason: 'loss',
        dir: 'down',
        device: install.name,
        requestId,
      });
      return;
    }
    if (fate.duplicated) this.checker.count('net.duplicated');
    const vc = this.full ? this.trace.clockOf('server') : {};
    for (const delay of fate.delays)
      this.queue.push(this.t + held + delay, {
        kind: 'down',
        install: install.name,
        requestId,
        response,
        epoch: this.serverEpoch,
        vc,
      });
  }

  private onDown(e: Extract<QEvent, { kind: 'down' }>): void {
    const install = this.installs.get(e.install);
    if (install === undefined || !install.alive) return;
    if (e.epoch !== this.serverEpoch || !this.linkUp(install)) {
      this.checker.count(e.epoch !== this.serverEpoch ? 'net.lost.server' : 'net.lost.link-down');
      this.event('net', 'net', {
        action: 'drop',
        reason: e.epoch !== this.serverEpoch ? 'crash' : 'link-down',
        dir: 'down',
        device: e.install,
        requestId: e.requestId,
      });
      return;
    }
    this.trace.receive(install.name, e.vc);
    this.step(install, { kind: 'net.response', requestId: e.requestId, response: e.response });
  }

  // -------------------------------------------------------------------------------------------
  // Liveness

  private heal(): void {
    this.healed = true;
    this.network.heal();
    this.serverUp = true;
    this.trace.event(this.t, this.seq, 'sim', 'heal', { counters: this.checker.snapshotCounters() });
    for (const install of this.installs.values()) {
      install.offlineUntil = 0;
      install.partitionUntil = 0;
      if (!install.alive) continue;
      if (install.engine.lifecycle() === 'linked') this.step(install, { kind: 'net.fetch' });
      this.armResend(install);
    }
    this.queue.push(this.t + this.checkInterval(), { kind: 'liveness-check' });
  }

  private checkInterval(): number {
    return Math.max(100, Math.floor(this.config.pollInterval / 2));
  }

  private facts = (name: string): InstallFacts => {
    const i = this.installs.get(name);
    if (i === undefined) return { gone: true, rolledBack: false };
    return { gone: i.gone || !i.alive, rolledBack: i.rolledBack };
  };

  private quiet(): boolean {
    if (this.checker.outstanding(this.facts) > 0) return false;
    for (const rec of this.users.values()) if (rec.busy !== null || rec.admin.length > 0) return false;
    for (const install of this.installs.values()) {
      if (!install.alive || install.gone) continue;
      const lifecycle = install.engine.lifecycle();
      if (lifecycle !== 'linked') return false;
      if (install.engine.hasWork()) return false;
      if (install.address !== null && this.server.mailboxDepth(install.address) > 0) return false;
    }
    return true;
  }

  private livenessCheck(): boolean {
    if (this.quiet()) {
      this.converged = true;
      this.finish();
      return true;
    }
    if (this.t >= this.healAt + this.config.livenessBound) {
      this.trace.event(this.t, this.seq, 'sim', 'liveness-timeout', {
        outstanding: this.checker.outstanding(this.facts),
      });
      this.checker.count('liveness.timeout');
      this.finish();
      return true;
    }
    this.queue.push(this.t + this.checkInterval(), { kind: 'liveness-check' });
    return false;
  }

  private finish(): void {
    const c = this.checker;
    this.trace.event(this.t, this.seq, 'sim', this.converged ? 'converged' : 'not-converged', {
      ticksAfterHeal: this.t - this.healAt,
    });
    c.finishDeliveries(this.facts);
    for (const install of this.installs.values()) {
      if (!install.alive) continue;
      const view = install.engine.abstract();
      c.countAbstract(view);
      this.countSessions(view);
      if (!this.full) c.deviceAbstract(install.name, view);
    }
    if (this.converged) this.staleEpoch();
    c.finishConservation(this.server);
    c.scanStored(this.server.storedBytes());
    if (this.adversary !== null) this.judgeSecurity(this.adversary);
    this.summary('end');
  }

  /** Adds the sessions of one live install's final view to {@link LoadFigures}. */
  private countSessions(view: DeviceAbstractView): void {
    let { activeSessions, initiatingSessions, archivedSessions } = this.load;
    for (const user of view.sesame.users)
      for (const record of user.devices) {
        const current = record.sessions.current;
        if (current !== null) activeSessions++;
        if (current?.phase === 'initiating') initiatingSessions++;
        archivedSessions += record.sessions.archived.length;
      }
    this.load = { ...this.load, activeSessions, initiatingSessions, archivedSessions };
  }

  /** Runs the security oracles and records their verdict on the `oracle` lane. */
  private judgeSecurity(adversary: Adversary): void {
    const report = adversary.finish();
    this.security = report;
    for (const v of report.violations)
      this.trace.event(this.t, this.seq, 'oracle', 'security-violation', {
        oracle: v.oracle,
        at: v.t,
        message: v.message,
      });
    const allowed: Record<string, number> = {};
    for (const leak of report.leaks) {
      const key = leak.allowedBy ?? 'violation';
      allowed[key] = (allowed[key] ?? 0) + 1;
    }
    this.trace.event(this.t, this.seq, 'oracle', 'security', {
      plan: report.plan,
      plaintexts: report.plaintexts,
      leaks: allowed,
      leakedPlaintexts: new Set(report.leaks.map((l) => l.text)).size,
      forgeries: report.forgeries.map((f) => ({
        to: f.to,
        claimed: f.claimed,
        t: f.t,
        allowedBy: f.allowedBy,
      })),
      detections: report.detections,
      replays: report.replays,
      kciProbes: report.kciProbes,
      kciWindows: report.kciWindows,
      healed: report.healed,
      refusals: report.refusals,
      violations: report.violations.length,
    });
  }

  /** Jumps past MAXLATENCY, lets every linked device drain once, and judges stale records. */
  private staleEpoch(): void {
    this.epochMode = true;
    this.queue.filter(() => false);
    this.t += MAX_LATENCY_MS + 1;
    this.trace.event(this.t, this.seq, 'sim', 'stale-epoch', { jump: MAX_LATENCY_MS + 1 });
    const live = [...this.installs.values()].filter(
      (i) => i.alive && !i.gone && i.engine.lifecycle() === 'linked',
    );
    for (const install of live) this.step(install, { kind: 'net.fetch' });
    for (let guard = 0; guard < 1_000_000; guard++) {
      const next = this.queue.pop();
      if (next === undefined) break;
      this.t = next.t;
      this.seq = next.seq;
      this.checker.at(this.t, this.seq);
      if (next.event.kind === 'up' || next.event.kind === 'down') this.handle(next.event);
    }
    for (const install of live) this.checker.finishStale(install.name, install.engine.abstract());
  }

  result(explicit: boolean): SimResult {
    const latencies = [...this.checker.latencies].sort((a, b) => a - b);
    const pick = (q: number): number =>
      latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0;
    const header = traceHeader(this.config, explicit ? this.schedule : null);
    const trace = this.trace;
    return {
      header,
      // Serialised when first read (TraceWriter): a caller that needs only the verdict skips it.
      get lines(): readonly string[] {
        return trace.lines;
      },
      violations: this.checker.violations,
      divergence: this.divergence,
      counters: this.checker.snapshotCounters(),
      schedule: this.schedule,
      repro: reproCommand(this.config, explicit),
      security: this.security,
      latency: {
        p50: pick(0.5),
        p99: pick(0.99),
        max: latencies[latencies.length - 1] ?? 0,
        count: latencies.length,
      },
      load: this.load,
    };
  }
}

/**
 * Runs one simulation: everything follows from `config` (and `options.schedule` when given). Under
 * `both`, the first divergence between impl/ and model/ stops the run (`SimResult.divergence`).
 */
export function runSimulation(config: SimConfig, options: RunOptions = {}): SimResult {
  const factory = options.factory ?? engineFactory(config.engine);
  const streams = createStreams(config.seed);
  const explicit = options.schedule !== undefined;
  const drawn = drawRun(config, streams);
  const schedule = options.schedule ?? drawn.schedule;
  const sim = new Simulation(
    config,
    schedule,
    drawn.population,
    streams,
    options.crypto ?? nobleProvider,
    factory,
    explicit,
  );
  sim.run();
  return sim.result(explicit);
}
