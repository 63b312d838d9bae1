/**
 * The node interface of the simulator (WHITEPAPER.md, "Simulator"): what a device and the server
 * look like to the event loop, whichever engine computes them.
 *
 * - {@link DeviceEngine}: one device install. `step(input, now)` applies one input and returns the
 *   outputs (impl/device.ts `DeviceInput`/`DeviceOutput` are the simulator's node I/O vocabulary);
 *   `abstract()` is the spec-level projection that traces record and engines are compared on;
 *   `snapshot()`/`restore()` serve the rollback fault.
 * - {@link ServerEngine}: the server, answering one request at a time, plus the read-only queries
 *   the invariants need (mailbox depth, envelopes dropped by rule, stored bytes for the
 *   no-plaintext search).
 * - {@link EngineFactory}: creates both kinds of node for an {@link EngineChoice}.
 *
 * Three factories exist: `impl` (impl/ functions over plain state, implemented here), `model`
 * (model/ machines; see {@link modelEngineFactory}) and `both`, which is generic: it runs any two
 * factories in lockstep on the same inputs, feeds the second the exact random bytes the first drew
 * (a tee over the `keys` stream), and after every step compares outputs, draws and abstract state,
 * throwing {@link DivergenceError} at the first difference.
 * @module
 */
import { MAX_ACCOUNTS } from '../spec/constants.js';
import { InvariantError } from '../spec/errors.js';
import type { CryptoProvider } from '../spec/crypto/provider.js';
import type { BugName } from '../spec/bugs.js';
import type { SignedDeviceList } from '../spec/device-list-types.js';
import type { Env } from '../spec/env.js';
import type { DeviceAddress, UserId } from '../spec/identity.js';
import type { ProvisioningCode } from '../spec/provisioning.js';
import type { Rng } from '../spec/rng.js';
import { compareUserIds, type ServerAbstract, type ServerAccountAbstract } from '../spec/server-abstract.js';
import type { ServerRequest, ServerResponse } from '../spec/server-api.js';
import type { SessionAbstract } from '../spec/abstract.js';
import type { DeviceRecordAbstract, SesameAbstract, UserRecordAbstract } from '../spec/sesame-abstract.js';
import type { DeviceAbstract } from '../spec/device-abstract.js';
import { fingerprint } from '../spec/keys.js';
import {
  createPrimaryDevice,
  createProvisioningDevice,
  deviceStep,
  resetPrimaryDevice,
  type DeviceInput,
  type DeviceOptions,
  type DeviceOutput,
  type DeviceState,
} from '../impl/device.js';
import type { SessionState } from '../impl/session-state.js';
import type { DeviceRecord, SesameState, UserRecord } from '../impl/sesame.js';
import { abstractServer } from '../impl/server-abstract.js';
import {
  droppedByRevocation,
  emptyServerState,
  handleRequest,
  mailboxDepth,
  type ServerAccount,
  type ServerState,
} from '../impl/server.js';
import {
  abstractDeviceOf,
  createPrimaryDeviceModel,
  createProvisioningDeviceModel,
  resetPrimaryDeviceModel,
  resumeDeviceModel,
  type DeviceModelRunner,
} from '../model/device.js';
import type { DeviceContext } from '../model/device-data.js';
import {
  abstractServerOf,
  createServerRunner,
  type ModelServer,
  type ServerRunner,
} from '../model/server.js';
import type { EngineChoice, ModelStepRecord } from './api.js';
import { canonicalJson, canonicallyEqual } from './canonical.js';

/** A device's lifecycle phase (WP-LIFE-01). */
export type LifecycleKind = 'provisioning' | 'registering' | 'linked' | 'revoked';

/** What traces record of a device and what `both` compares: spec/device-abstract.ts. */
export type DeviceAbstractView = DeviceAbstract;

/** One device install as the event loop drives it. */
export interface DeviceEngine {
  /** Applies one input at simulated time `now` and returns the outputs, in order. */
  step(input: DeviceInput, now: number): readonly DeviceOutput[];
  abstract(): DeviceAbstractView;
  lifecycle(): LifecycleKind;
  address(): DeviceAddress | null;
  /** True while requests await answers or outbox items wait: the resend timer stays armed. */
  hasWork(): boolean;
  /** An opaque copy of the whole state, for the rollback fault. */
  snapshot(): unknown;
  /** Returns to a snapshot taken from this engine. */
  restore(snapshot: unknown): void;
  /** The statechart states the last step passed through when a machine backs the node, else null. */
  modelStep(): ModelStepRecord | null;
}

/** The server as the event loop drives it. */
export interface ServerEngine {
  handle(request: ServerRequest, now: number): ServerResponse;
  abstract(): ServerAbstract;
  mailboxDepth(address: DeviceAddress): number;
  /** Envelopes dropped by rule at an address (revocation, re-registration, reset; WP-SRV-11). */
  droppedByRevocation(address: DeviceAddress): number;
  /** The account's current signed device list (for contact links), or null. */
  signedDeviceList(userId: UserId): SignedDeviceList | null;
  /** Every byte string the server stores (envelopes, blobs, relay messages). */
  storedBytes(): readonly Uint8Array[];
  /** The statechart states the last request passed through when a machine backs the server, else null. */
  modelStep(): ModelStepRecord | null;
}

/** A node freshly created, with the outputs its creation produced (e.g. the registration request). */
export interface CreatedDevice {
  readonly engine: DeviceEngine;
  readonly outputs: readonly DeviceOutput[];
}

/** Creates nodes for one engine choice. */
export interface EngineFactory {
  readonly name: EngineChoice;
  createPrimary(env: Env, userId: UserId, now: number, options: DeviceOptions): CreatedDevice;
  resetPrimary(
    env: Env,
    userId: UserId,
    previousListVersion: number,
    now: number,
    options: DeviceOptions,
  ): CreatedDevice;
  createProvisioning(
    env: Env,
    now: number,
    options: DeviceOptions,
  ): CreatedDevice & { readonly code: ProvisioningCode };
  createServer(env: ServerNodeEnv): ServerEngine;
}

/** The server's environment in the simulator: the crypto provider and the planted bugs. */
export interface ServerNodeEnv {
  readonly crypto: CryptoProvider;
  readonly bugs?: readonly BugName[];
}

// ---------------------------------------------------------------------------------------------
// impl/

/** The lists of a device projection that {@link SesameAbstractCache.derive} memoises. */
export type DerivedSlot =
  | 'trust'
  | 'outbox'
  | 'pending'
  | 'parked'
  | 'oneTimePreKeys'
  | 'kyberPreKeys'
  | 'signedPreKeys'
  | 'retiredSignedPreKeys';

/**
 * impl/sesame.ts `abstractSesame`, memoised: device records and sessions are immutable and keep
 * their identity while unchanged, so each record's projection is computed once per record object
 * and each session's (a dozen fingerprints) once per session object; a whole state is reused while
 * the Sesame state object is. Fingerprints of long-lived key arrays (identity and account keys) are
 * memoised per array. The result is equal to `abstractSesame` (simulator/engine.test.ts checks it on
 * every step of a run).
 */
export class SesameAbstractCache {
  private readonly users = new WeakMap<UserRecord, UserRecordAbstract>();
  private readonly records = new WeakMap<DeviceRecord, DeviceRecordAbstract>();
  private readonly sessions = new WeakMap<SessionState, SessionAbstract>();
  private readonly fingerprints = new WeakMap<Uint8Array, string>();
  private readonly derivedBySlot = new Map<DerivedSlot, WeakMap<object, unknown>>();
  private lastState: SesameState | null = null;
  private lastView: SesameAbstract | null = null;
  private lastAddress: DeviceAddress | null = null;

  constructor(private readonly c: CryptoProvider) {}

  /** `{ userId, deviceId }`, the same object while both stay the same. */
  address(userId: UserId, deviceId: DeviceAddress['deviceId']): DeviceAddress {
    const last = this.lastAddress;
    if (last !== null && last.userId === userId && last.deviceId === deviceId) return last;
    const address = { userId, deviceId };
    this.lastAddress = address;
    return address;
  }

  /**
   * `make(source)`, memoised per source object under `slot` (one map per slot: two slots may share
   * a source, such as one frozen empty array).
   */
  derive<S extends object, T>(slot: DerivedSlot, source: S, make: (source: S) => T): T {
    let memo = this.derivedBySlot.get(slot);
    if (memo === undefined) {
      memo = new WeakMap<object, unknown>();
      this.derivedBySlot.set(slot, memo);
    }
    // Only this method writes the slot's map, always with make(source) for that source: a T.
    if (memo.has(source)) return memo.get(source) as T;
    const value = make(source);
    memo.set(source, value);
    return value;
  }

  /** spec/keys.ts `fingerprint`, memoised per array (state arrays are never written to). */
  fingerprint(bytes: Uint8Array): string {
    let fp = this.fingerprints.get(bytes);
    if (fp === undefined) {
      fp = fingerprint(this.c, bytes);
      this.fingerprints.set(bytes, fp);
    }
    return fp;
  }

  project(state: SesameState): SesameAbstract {
    if (state === this.lastState && this.lastView !== null) return this.lastView;
    const users = Object.values(state.users).sort((a, b) =>
      a.userId < b.userId ? -1 : a.userId > b.userId ? 1 : 0,
    );
    const view: SesameAbstract = {
      self: this.address(state.self.userId, state.self.deviceId),
      users: users.map((user) => this.user(user)),
      messageRecords: state.messageRecords.length,
    };
    this.lastState = state;
    this.lastView = view;
    return view;
  }

  private user(user: UserRecord): UserRecordAbstract {
    let projected = this.users.get(user);
    if (projected === undefined) {
      projected = {
        userId: user.userId,
        stale: user.staleSince !== null,
        devices: Object.values(user.devices)
          .sort((a, b) => a.deviceId - b.deviceId)
          .map((device) => this.record(device)),
      };
      this.users.set(user, projected);
    }
    return projected;
  }

  private record(device: DeviceRecord): DeviceRecordAbstract {
    const cached = this.records.get(device);
    if (cached !== undefined) return cached;
    const projected: DeviceRecordAbstract = {
      deviceId: device.deviceId,
      stale: device.staleSince !== null,
      identityKeyFp: this.fingerprint(device.identityKey),
      registrationId: device.registrationId,
      // impl/abstract.ts `abstractSessionRecord`, one session at a time.
      sessions: {
        current: device.sessions.current === null ? null : this.session(device.sessions.current),
        archived: device.sessions.archived.map((s) => this.session(s)),
      },
    };
    this.records.set(device, projected);
    return projected;
  }

  /**
   * impl/abstract.ts `abstractSession` with memoised fingerprints: a session updated by a step
   * shares its identity keys, base key and most ratchet keys with the session it replaced.
   */
  private session(s: SessionState): SessionAbstract {
    let projected = this.sessions.get(s);
    if (projected === undefined) {
      projected = {
        phase: s.pendingPreKey === null ? 'established' : 'initiating',
        version: s.version,
        localIdentityFp: this.fingerprint(s.localIdentityKey),
        remoteIdentityFp: this.fingerprint(s.remoteIdentityKey),
        baseKeyFp: this.fingerprint(s.aliceBaseKey),
        rootKeyFp: this.fingerprint(s.rootKey),
        senderRatchetKeyFp: this.fingerprint(s.senderRatchetKey.publicKey),
        senderChainIndex: s.senderChainKey.index,
        previousCounter: s.previousCounter,
        receiverChains: s.receiverChains.map((r) => ({
          ratchetKeyFp: this.fingerprint(r.ratchetKey),
          chainIndex: r.chainKey.index,
          skippedKeys: r.skipped.length,
        })),
      };
      this.sessions.set(s, projected);
    }
    return projected;
  }
}

function byText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * impl/device-abstract.ts `abstractDevice` with the Sesame part and key fingerprints memoised by
 * `cache` (equal to it: simulator/engine.test.ts checks every step of a run).
 */
export function abstractImplDevice(
  c: CryptoProvider,
  state: DeviceState,
  cache: SesameAbstractCache = new SesameAbstractCache(c),
): DeviceAbstract {
  // Each derived list is kept while its source (immutable) is, so that an unchanged list is the
  // same array from step to step and its canonical JSON is reused (simulator/summaries.ts).
  return {
    lifecycle: state.lifecycle.kind,
    address: cache.address(state.userId, state.deviceId),
    sesame: cache.project(state.sesame),
    trust: cache.derive('trust', state.trust, (trust) =>
      Object.values(trust)
        .sort((a, b) => byText(a.userId, b.userId))
        .map((t) => ({
          userId: t.userId,
          accountKeyFp: t.accountKey === null ? null : cache.fingerprint(t.accountKey),
          pendingAccountKeyChange: t.pendingAccountKey !== null,
          listVersion: t.list?.version ?? null,
        })),
    ),
    outbox: cache.derive('outbox', state.outbox, (outbox) =>
      outbox
        .map((i) => ({
          messageId: i.messageId,
          recipient: i.recipient,
          kind: i.kind,
          stage: i.stage,
          attempts: i.attempts,
        }))
        .sort((a, b) => byText(a.messageId, b.messageId) || byText(a.recipient, b.recipient)),
    ),
    pending: cache.derive('pending', state.pending, (pending) =>
      pending
        .map((p) => ({ requestId: p.requestId, kind: p.request.kind }))
        .sort((a, b) => a.requestId - b.requestId),
    ),
    seenCount: state.seen.length,
    parkedEnvelopeIds: cache.derive('parked', state.parked, (parked) =>
      parked.map((p) => p.envelope.envelopeId),
    ),
    oneTimePreKeyIds: cache.derive('oneTimePreKeys', state.prekeys.oneTimePreKeys, (keys) =>
      keys.map((k) => k.keyId),
    ),
    kyberPreKeyIds: cache.derive('kyberPreKeys', state.prekeys.kyberPreKeys, (keys) =>
      keys.map((k) => k.keyId),
    ),
    signedPreKeyIds: cache.derive('signedPreKeys', state.prekeys.signedPreKeys, (keys) =>
      keys.map((k) => k.keyId),
    ),
    retiredSignedPreKeyIds: cache.derive('retiredSignedPreKeys', state.retiredSignedPreKeys, (retired) =>
      retired.map((r) => r.keyId),
    ),
    initialMessages: state.initialMessages.length,
    chainSightings: state.chainSightings.length,
  };
}

class ImplDevice implements DeviceEngine {
  private readonly cache: SesameAbstractCache;
  /** The state last projected and its projection: a step that changed nothing reuses it. */
  private projectedState: DeviceState | null = null;
  private projection: DeviceAbstractView | null = null;

  constructor(
    private readonly env: Env,
    private state: DeviceState,
  ) {
    this.cache = new SesameAbstractCache(env.crypto);
  }

  step(input: DeviceInput, now: number): readonly DeviceOutput[] {
    const result = deviceStep(this.env, this.state, input, now);
    this.state = result.state;
    return result.outputs;
  }

  abstract(): DeviceAbstractView {
    if (this.projection === null || this.projectedState !== this.state) {
      this.projection = abstractImplDevice(this.env.crypto, this.state, this.cache);
      this.projectedState = this.state;
    }
    return this.projection;
  }

  lifecycle(): LifecycleKind {
    return this.state.lifecycle.kind;
  }

  address(): DeviceAddress | null {
    return this.state.lifecycle.kind === 'provisioning'
      ? null
      : { userId: this.state.userId, deviceId: this.state.deviceId };
  }

  hasWork(): boolean {
    return this.state.pending.length > 0 || this.state.outbox.length > 0;
  }

  snapshot(): unknown {
    // States are immutable plain data: the reference itself is a snapshot.
    return this.state;
  }

  restore(snapshot: unknown): void {
    this.state = snapshot as DeviceState;
  }

  modelStep(): null {
    return null;
  }
}

/** The user ids whose accounts a request can read or change (see {@link ImplServer}). */
function accountsTouched(request: ServerRequest): readonly UserId[] | null {
  switch (request.kind) {
    case 'register-account':
    case 'register-device':
    case 'upload-prekeys':
    case 'update-device-list':
    case 'fetch':
    case 'ack':
      return typeof request.device?.userId === 'string' ? [request.device.userId] : null;
    case 'get-device-list':
    case 'get-bundles':
      return typeof request.userId === 'string' ? [request.userId] : null;
    case 'send':
      return typeof request.sender?.userId === 'string' && typeof request.recipient === 'string'
        ? [request.sender.userId, request.recipient]
        : null;
    case 'provision-put':
    case 'provision-get':
    case 'blob-put':
    case 'blob-get':
      return [];
    default:
      return null;
  }
}

/**
 * impl/server.ts behind the engine interface. The accounts live in a Map and each request sees a
 * server state holding only the accounts it can touch (its acting device's account, and a send's
 * recipient): `handleRequest` reads no other account, so the answer is the same as over the full
 * state, but a step costs O(touched accounts) instead of copying every account (peak-day has
 * 10 000). Requests it cannot classify, and registrations near MAX_ACCOUNTS (which count all
 * accounts), run over the full state. `simulator/engine.test.ts` checks both paths agree under `both`.
 */
class ImplServer implements ServerEngine {
  private readonly accounts = new Map<UserId, ServerAccount>();
  private rest: Omit<ServerState, 'accounts'>;
  private abstractCache: ServerAbstract | null = null;
  /**
   * Each account's projection, kept while the account object (immutable) and the dropped-by-rule
   * counts it reads are the same objects: a request re-projects only the accounts it changed.
   */
  private readonly accountAbstracts = new WeakMap<
    ServerAccount,
    { readonly droppedByRule: ServerState['droppedByRule']; readonly view: ServerAccountAbstract }
  >();

  constructor(
    private readonly env: ServerNodeEnv,
    private readonly sharded: boolean,
  ) {
    const { accounts: _accounts, ...rest } = emptyServerState();
    this.rest = rest;
  }

  private full(): ServerState {
    return { ...this.rest, accounts: Object.fromEntries(this.accounts) };
  }

  private replaceAll(state: ServerState): void {
    this.accounts.clear();
    for (const [userId, account] of Object.entries(state.accounts)) this.accounts.set(userId, account);
    const { accounts: _accounts, ...rest } = state;
    this.rest = rest;
  }

  handle(request: ServerRequest, now: number): ServerResponse {
    const touched = this.sharded ? accountsTouched(request) : null;
    if (touched === null || this.accounts.size >= MAX_ACCOUNTS - 1) {
      const before = this.full();
      const step = handleRequest(this.env, before, request, now);
      if (step.state !== before) {
        this.replaceAll(step.state);
        this.abstractCache = null;
      }
      return step.response;
    }
    const view: Record<string, ServerAccount> = {};
    for (const userId of touched) {
      const account = this.accounts.get(userId);
      if (account !== undefined) view[userId] = account;
    }
    const input: ServerState = { ...this.rest, accounts: view };
    const step = handleRequest(this.env, input, request, now);
    // WP-SRV-01: an unchanged state is returned as the same object.
    if (step.state === input) return step.response;
    this.abstractCache = null;
    for (const userId of touched) {
      const account = Object.hasOwn(step.state.accounts, userId) ? step.state.accounts[userId] : undefined;
      if (account === undefined) this.accounts.delete(userId);
      else this.accounts.set(userId, account);
    }
    const { accounts: _accounts, ...rest } = step.state;
    this.rest = rest;
    return step.response;
  }

  abstract(): ServerAbstract {
    // Recomputed only after a request changed the state (most requests, fetches, change nothing).
    if (this.abstractCache === null) {
      this.abstractCache = {
        accounts: [...this.accounts.keys()]
          .sort(compareUserIds)
          .map((userId) => this.accountAbstract(userId)),
        provisioningEntries: Object.keys(this.rest.provisioning).length,
        blobs: Object.keys(this.rest.blobs).length,
      };
    }
    return this.abstractCache;
  }

  /** impl/server-abstract.ts's projection of one account (equal to it: the sharding test compares). */
  private accountAbstract(userId: UserId): ServerAccountAbstract {
    const account = this.accounts.get(userId);
    if (account === undefined) throw new InvariantError('a listed account has no state');
    const cached = this.accountAbstracts.get(account);
    if (cached !== undefined && cached.droppedByRule === this.rest.droppedByRule) return cached.view;
    // abstractServer projects each account from the account and the shared dropped-by-rule counts
    // only, so a state holding just this account projects it the same.
    const view = abstractServer(this.env.crypto, { ...this.rest, accounts: { [userId]: account } })
      .accounts[0];
    if (view === undefined) throw new InvariantError('abstractServer dropped an account');
    this.accountAbstracts.set(account, { droppedByRule: this.rest.droppedByRule, view });
    return view;
  }

  private viewOf(userId: UserId): ServerState {
    const account = this.accounts.get(userId);
    return { ...this.rest, accounts: account === undefined ? {} : { [userId]: account } };
  }

  mailboxDepth(address: DeviceAddress): number {
    return mailboxDepth(this.viewOf(address.userId), address);
  }

  droppedByRevocation(address: DeviceAddress): number {
    return droppedByRevocation(this.viewOf(address.userId), address);
  }

  signedDeviceList(userId: UserId): SignedDeviceList | null {
    return this.accounts.get(userId)?.signedDeviceList ?? null;
  }

  storedBytes(): readonly Uint8Array[] {
    const out: Uint8Array[] = [];
    for (const account of this.accounts.values())
      for (const device of Object.values(account.devices))
        for (const envelope of device.mailbox.envelopes) out.push(envelope.bytes);
    for (const blob of Object.values(this.rest.blobs)) out.push(blob);
    for (const entry of Object.values(this.rest.provisioning)) out.push(entry.bytes);
    return out;
  }
  modelStep(): null {
    return null;
  }
}

/** The impl/ engine. `sharded: false` runs every server request over the full state (tests). */
export function implEngineFactory(options: { readonly sharded?: boolean } = {}): EngineFactory {
  const sharded = options.sharded ?? true;
  return {
    name: 'impl',
    createPrimary(env, userId, now, deviceOptions) {
      const r = createPrimaryDevice(env, userId, now, deviceOptions);
      return { engine: new ImplDevice(env, r.state), outputs: r.outputs };
    },
    resetPrimary(env, userId, previousListVersion, now, deviceOptions) {
      const r = resetPrimaryDevice(env, userId, previousListVersion, now, deviceOptions);
      return { engine: new ImplDevice(env, r.state), outputs: r.outputs };
    },
    createProvisioning(env, now, deviceOptions) {
      const r = createProvisioningDevice(env, now, deviceOptions);
      return { engine: new ImplDevice(env, r.state), outputs: r.outputs, code: r.code };
    },
    createServer(env) {
      return new ImplServer(env, sharded);
    },
  };
}

// ---------------------------------------------------------------------------------------------
// model/

/**
 * Why an engine cannot be used: the typed error a build without model/'s runners reports for
 * `model` and `both` (cli/simulate.ts maps it to exit status 2). This build has them all.
 */
export class EngineUnavailableError extends Error {
  readonly code = 'ENGINE_UNAVAILABLE' as const;
  constructor(readonly engine: EngineChoice) {
    super('model engine not available');
    this.name = 'EngineUnavailableError';
  }
}

class ModelDeviceEngine implements DeviceEngine {
  constructor(
    private readonly env: Env,
    private runner: DeviceModelRunner,
  ) {}

  step(input: DeviceInput, now: number): readonly DeviceOutput[] {
    return this.runner.step(input, now);
  }

  abstract(): DeviceAbstract {
    return abstractDeviceOf(this.env.crypto, this.runner.context());
  }

  lifecycle(): LifecycleKind {
    return this.runner.context().lifecycle.kind;
  }

  address(): DeviceAddress | null {
    const context = this.runner.context();
    return context.lifecycle.kind === 'provisioning'
      ? null
      : { userId: context.userId, deviceId: context.deviceId };
  }

  hasWork(): boolean {
    const context = this.runner.context();
    return context.pending.length > 0 || context.outbox.length > 0;
  }

  snapshot(): unknown {
    return { context: this.runner.context(), value: this.runner.stateValue() };
  }

  restore(snapshot: unknown): void {
    const { context, value } = snapshot as { context: DeviceContext; value: unknown };
    this.runner = resumeDeviceModel(this.env, context, value);
  }

  modelStep(): ModelStepRecord {
    return this.runner.lastStep();
  }
}

class ModelServerEngine implements ServerEngine {
  private readonly runner: ServerRunner;

  constructor(private readonly env: ServerNodeEnv) {
    this.runner = createServerRunner(
      env.bugs === undefined ? { crypto: env.crypto } : { crypto: env.crypto, bugs: env.bugs },
    );
  }

  private server(): ModelServer {
    return this.runner.snapshot().context.server;
  }

  handle(request: ServerRequest, now: number): ServerResponse {
    return this.runner.handle(request, now);
  }

  abstract(): ServerAbstract {
    return abstractServerOf(this.env.crypto, this.runner.snapshot().context);
  }

  mailboxDepth(address: DeviceAddress): number {
    const account = own(this.server().accounts, address.userId);
    return (
      (account === undefined ? undefined : own(account.registered, String(address.deviceId)))?.mailbox
        .length ?? 0
    );
  }

  droppedByRevocation(address: DeviceAddress): number {
    const dropped = own(this.server().dropped, address.userId);
    return (dropped === undefined ? undefined : own(dropped, String(address.deviceId))) ?? 0;
  }

  signedDeviceList(userId: UserId): SignedDeviceList | null {
    return own(this.server().accounts, userId)?.signedDeviceList ?? null;
  }

  storedBytes(): readonly Uint8Array[] {
    const server = this.server();
    const out: Uint8Array[] = [];
    for (const account of Object.values(server.accounts))
      for (const device of Object.values(account.registered))
        for (const envelope of device.mailbox) out.push(envelope.bytes);
    for (const blob of Object.values(server.blobs)) out.push(blob);
    for (const entry of Object.values(server.relay)) out.push(entry.bytes);
    return out;
  }
  modelStep(): ModelStepRecord {
    return this.runner.lastStep();
  }
}

function own<T>(record: Readonly<Record<string, T>>, key: string): T | undefined {
  return Object.hasOwn(record, key) ? record[key] : undefined;
}

/** The model/ engine: the device and server machines of model/ behind the same interface. */
export function modelEngineFactory(): EngineFactory {
  return {
    name: 'model',
    createPrimary(env, userId, now, options) {
      const r = createPrimaryDeviceModel(env, userId, now, options);
      return { engine: new ModelDeviceEngine(env, r.runner), outputs: r.outputs };
    },
    resetPrimary(env, userId, previousListVersion, now, options) {
      const r = resetPrimaryDeviceModel(env, userId, previousListVersion, now, options);
      return { engine: new ModelDeviceEngine(env, r.runner), outputs: r.outputs };
    },
    createProvisioning(env, now, options) {
      const r = createProvisioningDeviceModel(env, now, options);
      return { engine: new ModelDeviceEngine(env, r.runner), outputs: r.outputs, code: r.code };
    },
    createServer(env) {
      return new ModelServerEngine(env);
    },
  };
}

/** True when {@link engineFactory} can build `choice`. */
export function engineAvailable(choice: EngineChoice): boolean {
  void choice;
  return true;
}

// ---------------------------------------------------------------------------------------------
// both

/** Raised by the `both` engine at the first difference between its two engines. */
export class DivergenceError extends Error {
  constructor(
    readonly node: string,
    /** outputs, draws, abstract or response. */
    readonly field: string,
    readonly first: string,
    readonly second: string,
  ) {
    super(`engines diverge at ${node} in ${field}`);
    this.name = 'DivergenceError';
  }
}

/**
 * A tee over one byte stream: the first engine draws from the real stream (and every byte it drew
 * is kept), the second replays exactly those bytes. A second engine asking for bytes the first did
 * not draw, or for different lengths, is a `draws` divergence.
 */
class TeeRng {
  private log: Uint8Array[] = [];
  private replayIndex = 0;
  private replayOffset = 0;
  private secondOverdraw = false;

  constructor(private readonly source: Rng) {}

  readonly first: Rng = {
    randomBytes: (length: number): Uint8Array => {
      const bytes = this.source.randomBytes(length);
      this.log.push(bytes.slice());
      return bytes;
    },
  };

  readonly second: Rng = {
    randomBytes: (length: number): Uint8Array => {
      const out = new Uint8Array(length);
      let written = 0;
      while (written < length) {
        const chunk = this.log[this.replayIndex];
        if (chunk === undefined) {
          this.secondOverdraw = true;
          return out;
        }
        const take = Math.min(length - written, chunk.length - this.replayOffset);
        out.set(chunk.subarray(this.replayOffset, this.replayOffset + take), written);
        written += take;
        this.replayOffset += take;
        if (this.replayOffset === chunk.length) {
          this.replayIndex++;
          this.replayOffset = 0;
        }
      }
      return out;
    },
  };

  /** Starts a step: forgets the previous step's bytes. */
  begin(): void {
    this.log = [];
    this.replayIndex = 0;
    this.replayOffset = 0;
    this.secondOverdraw = false;
  }

  /** Describes the draws of the step for comparison: lengths drawn by each side. */
  end(): { readonly first: string; readonly second: string } {
    const total = this.log.reduce((n, c) => n + c.length, 0);
    let consumed = 0;
    for (let i = 0; i < this.replayIndex; i++) consumed += this.log[i]?.length ?? 0;
    consumed += this.replayOffset;
    return {
      first: `${total} bytes`,
      second: this.secondOverdraw ? `more than ${total} bytes` : `${consumed} bytes`,
    };
  }
}

function compare(node: string, field: string, a: unknown, b: unknown, c: CryptoProvider): void {
  // The structural shortcut spares writing both texts on the common path (the engines agree).
  if (canonicallyEqual(a, b)) return;
  const left = canonicalJson(a, c);
  const right = canonicalJson(b, c);
  if (left !== right) throw new DivergenceError(node, field, left, right);
}

class BothDevice implements DeviceEngine {
  constructor(
    private readonly first: DeviceEngine,
    private readonly second: DeviceEngine,
    private readonly tee: TeeRng,
    private readonly c: CryptoProvider,
  ) {}

  step(input: DeviceInput, now: number): readonly DeviceOutput[] {
    this.tee.begin();
    const a = this.first.step(input, now);
    const b = this.second.step(input, now);
    const node = addressName(this.first.address());
    const draws = this.tee.end();
    if (draws.first !== draws.second) throw new DivergenceError(node, 'draws', draws.first, draws.second);
    compare(node, 'outputs', a, b, this.c);
    compare(node, 'abstract', this.first.abstract(), this.second.abstract(), this.c);
    return a;
  }

  abstract(): DeviceAbstractView {
    return this.first.abstract();
  }

  lifecycle(): LifecycleKind {
    return this.first.lifecycle();
  }

  address(): DeviceAddress | null {
    return this.first.address();
  }

  hasWork(): boolean {
    return this.first.hasWork() || this.second.hasWork();
  }

  snapshot(): unknown {
    return [this.first.snapshot(), this.second.snapshot()];
  }

  restore(snapshot: unknown): void {
    const [a, b] = snapshot as [unknown, unknown];
    this.first.restore(a);
    this.second.restore(b);
  }

  modelStep(): ModelStepRecord | null {
    return this.first.modelStep() ?? this.second.modelStep();
  }
}

class BothServer implements ServerEngine {
  constructor(
    private readonly first: ServerEngine,
    private readonly second: ServerEngine,
    private readonly c: CryptoProvider,
  ) {}

  handle(request: ServerRequest, now: number): ServerResponse {
    const a = this.first.handle(request, now);
    const b = this.second.handle(request, now);
    compare('server', 'response', a, b, this.c);
    compare('server', 'abstract', this.first.abstract(), this.second.abstract(), this.c);
    return a;
  }

  abstract(): ServerAbstract {
    return this.first.abstract();
  }

  mailboxDepth(address: DeviceAddress): number {
    return this.first.mailboxDepth(address);
  }

  droppedByRevocation(address: DeviceAddress): number {
    return this.first.droppedByRevocation(address);
  }

  signedDeviceList(userId: UserId): SignedDeviceList | null {
    return this.first.signedDeviceList(userId);
  }

  storedBytes(): readonly Uint8Array[] {
    return this.first.storedBytes();
  }

  modelStep(): ModelStepRecord | null {
    return this.first.modelStep() ?? this.second.modelStep();
  }
}

function addressName(address: DeviceAddress | null): string {
  return address === null ? 'provisioning' : `${address.userId}.${address.deviceId}`;
}

/**
 * Runs two factories in lockstep (generic: `impl` against `model`, or two impl variants in tests).
 * Every node creation and step happens on both; the second engine replays the first one's random
 * bytes; outputs, draws, abstract state and server responses are compared after every step.
 */
export function bothEngineFactory(first: EngineFactory, second: EngineFactory): EngineFactory {
  const tees = new WeakMap<Rng, TeeRng>();
  const split = (env: Env): { readonly a: Env; readonly b: Env; readonly tee: TeeRng } => {
    let tee = tees.get(env.rng);
    if (tee === undefined) {
      tee = new TeeRng(env.rng);
      tees.set(env.rng, tee);
    }
    return { a: { ...env, rng: tee.first }, b: { ...env, rng: tee.second }, tee };
  };
  const pair = (
    env: Env,
    make: (factory: EngineFactory, e: Env) => CreatedDevice,
  ): { readonly created: CreatedDevice; readonly second: CreatedDevice; readonly tee: TeeRng } => {
    const { a, b, tee } = split(env);
    tee.begin();
    const created = make(first, a);
    const second = make(second_, b);
    const draws = tee.end();
    const node = addressName(created.engine.address());
    if (draws.first !== draws.second) throw new DivergenceError(node, 'draws', draws.first, draws.second);
    compare(node, 'outputs', created.outputs, second.outputs, env.crypto);
    compare(node, 'abstract', created.engine.abstract(), second.engine.abstract(), env.crypto);
    return { created, second, tee };
  };
  const second_ = second;
  return {
    name: 'both',
    createPrimary(env, userId, now, options) {
      const p = pair(env, (f, e) => f.createPrimary(e, userId, now, options));
      return {
        engine: new BothDevice(p.created.engine, p.second.engine, p.tee, env.crypto),
        outputs: p.created.outputs,
      };
    },
    resetPrimary(env, userId, previousListVersion, now, options) {
      const p = pair(env, (f, e) => f.resetPrimary(e, userId, previousListVersion, now, options));
      return {
        engine: new BothDevice(p.created.engine, p.second.engine, p.tee, env.crypto),
        outputs: p.created.outputs,
      };
    },
    createProvisioning(env, now, options) {
      const { a, b, tee } = split(env);
      tee.begin();
      const x = first.createProvisioning(a, now, options);
      const y = second.createProvisioning(b, now, options);
      const draws = tee.end();
      if (draws.first !== draws.second)
        throw new DivergenceError('provisioning', 'draws', draws.first, draws.second);
      compare('provisioning', 'code', x.code, y.code, env.crypto);
      compare('provisioning', 'abstract', x.engine.abstract(), y.engine.abstract(), env.crypto);
      return {
        engine: new BothDevice(x.engine, y.engine, tee, env.crypto),
        outputs: x.outputs,
        code: x.code,
      };
    },
    createServer(env) {
      return new BothServer(first.createServer(env), second.createServer(env), env.crypto);
    },
  };
}

/** The factory for an engine choice (all three are available; see {@link EngineUnavailableError}). */
export function engineFactory(choice: EngineChoice): EngineFactory {
  switch (choice) {
    case 'impl':
      return implEngineFactory();
    case 'model':
      return modelEngineFactory();
    case 'both':
      return bothEngineFactory(implEngineFactory(), modelEngineFactory());
  }
}
