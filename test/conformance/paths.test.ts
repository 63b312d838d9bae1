/**
 * Transition coverage of the model's machines, checked against impl/ (ARCHITECTURE.md, "Why impl/
 * and model/ never import each other").
 *
 * For each machine, @xstate/graph explores a small world around it (for the session machine: two
 * parties A and B and the network between them, driven by abstract actions such as "A sends",
 * "deliver A's oldest message to B", "B processes a bad bundle") with `getShortestPaths`, where a
 * world's serialisation is its machines' state values plus the transitions that the action leading
 * there fired. Every transition that fires somewhere thus ends one path. Each path is then replayed
 * from scratch on BOTH engines with the same seeded random streams, and after every step the two
 * must agree on outputs (wire bytes, plaintexts, error code and rule), on the sizes of the random
 * draws, and on the abstract state (spec/abstract.ts). Finally every transition of the machine
 * definition (tools/model-diagrams.ts `listTransitions`) must have fired in at least one replay.
 */
import { ed25519 } from '@noble/curves/ed25519.js';
import { bytesToNumberLE, numberToBytesLE } from '@noble/curves/utils.js';
import { getShortestPaths } from '@xstate/graph';
import { describe, expect, it } from 'vitest';
import { createActor, fromTransition, type AnyTransitionDefinition } from 'xstate';
import {
  MAILBOX_CAPACITY,
  MAX_ACCOUNTS,
  MAX_BLOB_SIZE,
  MAX_BLOBS,
  MAX_ENVELOPE_SIZE,
  MAX_PROVISIONING_ENTRIES,
  MAX_PROVISIONING_SIZE,
} from '../../spec/constants.js';
import { concatBytes } from '../../spec/bytes.js';
import { nodeProvider } from '../../spec/crypto/node.js';
import {
  encodeDeviceList,
  registrationProofMessage,
  signDeviceList,
  signRegistrationProof,
  SIGNATURE_PREFIX,
} from '../../spec/device-list.js';
import type { DeviceList, SignedDeviceList } from '../../spec/device-list-types.js';
import { toHex } from '../../spec/hex.js';
import { generateKeyPair, type KeyPair } from '../../spec/keys.js';
import { seededRng } from '../../spec/rng.js';
import type { PreKeyUpload, ServerRequest, ServerResponse } from '../../spec/server-api.js';
import { generatePreKeyState, type PreKeyState } from '../../impl/prekeys.js';
import { abstractServer } from '../../impl/server-abstract.js';
import {
  emptyServerState,
  handleRequest,
  type ServerAccount,
  type ServerDevice,
  type ServerState,
} from '../../impl/server.js';
import { decodeServerState, encodeServerState } from '../../impl/server-codec.js';
import { createSessionMachine } from '../../model/session.js';
import {
  abstractServerOf,
  createServerMachine,
  emptyModelServer,
  type ModelAccount,
  type ModelDevice,
  type ModelServer,
} from '../../model/server.js';
import { listTransitions, transitionKeyOf } from '../../tools/model-diagrams.js';
import {
  applicable,
  applySessionAction,
  cloneModelWorld,
  compareObservations,
  createSessionWorld,
  describeAction,
  describeDivergence,
  partyKeys,
  recordingRng,
  replaySessionActions,
  type BundleChoice,
  type BundleDefect,
  type SessionAction,
  type SessionWorld,
  type Side,
  type Tampering,
} from './support.js';

const crypto = nodeProvider;
const FULL = Boolean(process.env['LOCKSTEP_FULL']);

/**
 * Transitions no input can reach, each with the reason. The test fails if one of them fires (then
 * it is reachable and belongs in the coverage) or if any other transition stays uncovered.
 */
const SESSION_UNREACHABLE: Readonly<Record<string, string>> = {
  'session.processingBundle.deriveSecret (always) #1':
    'DH_ZERO_OUTPUT (WP-KEYS-04) on the initiator: every bundle key was decoded first, and the decoder refuses the low-order points (WP-KEYS-03) whose X25519 output is zero',
  'session.decrypting.accepting.deriveSecret (always) #1':
    'DH_ZERO_OUTPUT (WP-KEYS-04) on the responder: the base and identity keys of a PreKey message are decoded (WP-KEYS-03) before any DH',
  'session.decrypting.trial.ratchetStep (always) #1':
    "DH_ZERO_OUTPUT (WP-KEYS-04) in a DH ratchet step: the message's ratchet key was decoded (WP-KEYS-03) when it was parsed",
};

// ---------------------------------------------------------------------------------------------
// Session machine
// ---------------------------------------------------------------------------------------------

interface GenWorld {
  readonly world: SessionWorld;
  readonly depth: number;
  /** Transitions the action that led here fired. */
  readonly fired: readonly string[];
}

interface ActionEvent {
  readonly type: string;
  readonly action: SessionAction;
}

const SIDES: readonly Side[] = ['A', 'B'];
const CHOICES: readonly BundleChoice[] = ['fresh', 'noOneTime', 'lastResort', 'stale'];
const DEFECTS: readonly BundleDefect[] = [
  'identityKey',
  'signedPreKey',
  'signedPreKeySignature',
  'kyberMissing',
  'kyberPreKey',
  'kyberSignature',
  'unpairedOneTime',
  'oneTimePreKey',
];
const TAMPERINGS: readonly Tampering[] = [
  'mac',
  'signedPreKeyId',
  'kyberPreKeyId',
  'oneTimePreKeyId',
  'farFuture',
  'version3',
  'garbage',
  'badPadding',
];
const MAX_DEPTH = FULL ? 6 : 5;

/**
 * Probes: actions that each engine must reject (or, for a tampered header the receiver ignores,
 * accept) identically in any world. They are appended to the end of every maximal path rather than
 * explored, since a rejection leaves the world as it was (WP-DR-11).
 */
const PROBES: readonly SessionAction[] = SIDES.flatMap((side): SessionAction[] => [
  ...DEFECTS.map((defect): SessionAction => ({ kind: 'badBundle', by: side, defect })),
  ...TAMPERINGS.map((how): SessionAction => ({ kind: 'tamper', to: side, how })),
  { kind: 'duplicate', to: side },
]);

/** Deep or long situations the shortest paths do not reach, as explicit paths (each then probed). */
const SCENARIOS: readonly (readonly SessionAction[])[] = [
  // WP-DR-10: a message delivered after a later one uses its stored skipped key.
  [
    { kind: 'bundle', by: 'A', choice: 'fresh' },
    { kind: 'send', by: 'A' },
    { kind: 'send', by: 'A' },
    { kind: 'deliver', to: 'B', pick: 'newest' },
    { kind: 'deliver', to: 'B', pick: 'oldest' },
  ],
  // WP-PQXDH-11: an unanswered session stops encrypting after 30 days.
  [
    { kind: 'bundle', by: 'A', choice: 'fresh' },
    { kind: 'advanceClock', days: 31 },
    { kind: 'send', by: 'A' },
  ],
  // WP-DR-09: six DH steps on each side push a receiving chain out.
  [
    { kind: 'bundle', by: 'A', choice: 'fresh' },
    { kind: 'send', by: 'A' },
    { kind: 'deliver', to: 'B', pick: 'newest' },
    { kind: 'pingPong', rounds: 6 },
  ],
  // WP-DR-08: a gap of 2001 messages stores more than 2000 skipped keys.
  [
    { kind: 'bundle', by: 'A', choice: 'fresh' },
    { kind: 'send', by: 'A' },
    { kind: 'deliver', to: 'B', pick: 'newest' },
    { kind: 'send', by: 'B' },
    { kind: 'deliver', to: 'A', pick: 'newest' },
    { kind: 'burst', by: 'A', count: 2002 },
    { kind: 'deliver', to: 'B', pick: 'newest' },
  ],
  // WP-REC-01: 42 sessions on the initiator's side, then a PreKey message creating one more on
  // the responder's side that already holds 40 archived sessions.
  [
    { kind: 'reinitiate', by: 'B', times: 42 },
    { kind: 'send', by: 'B' },
    { kind: 'deliver', to: 'A', pick: 'newest' },
    { kind: 'reinitiate', by: 'A', times: 42 },
    { kind: 'bundle', by: 'B', choice: 'lastResort' },
    { kind: 'send', by: 'B' },
    { kind: 'deliver', to: 'A', pick: 'newest' },
  ],
];

function event(action: SessionAction): ActionEvent {
  return { type: describeAction(action), action };
}

/** The explored alphabet: bundles, sends, deliveries in order and out of order, loss, duplicates. */
function offeredActions(gen: GenWorld): ActionEvent[] {
  if (gen.depth >= MAX_DEPTH) return [];
  const out: SessionAction[] = [];
  for (const side of SIDES) {
    for (const choice of CHOICES) {
      if (choice !== 'stale' || gen.world.lastBundle[side] !== undefined) {
        out.push({ kind: 'bundle', by: side, choice });
      }
    }
    out.push({ kind: 'send', by: side });
    out.push({ kind: 'deliver', to: side, pick: 'oldest' }, { kind: 'deliver', to: side, pick: 'newest' });
    out.push({ kind: 'drop', to: side }, { kind: 'duplicate', to: side });
  }
  return out.filter((action) => applicable(gen.world, action)).map(event);
}

/**
 * A world's vertex in the graph: each party's state value and record shape (sessions archived,
 * bucketed), what is in flight to it (count bucketed, type of the oldest), whether it has received
 * anything, and the transitions of the action that led here — the `[value, incoming event]`
 * serialisation that makes shortest paths cover transitions rather than states.
 */
function shapeOf(gen: GenWorld): string {
  const side = (s: Side) => {
    const party = gen.world.parties[s];
    const record = party.data().record as { current: unknown; archived: readonly unknown[] };
    const flights = gen.world.inFlight[s];
    return [
      party.value(),
      Math.min(record.archived.length, 2),
      Math.min(flights.length, 2),
      flights[0]?.messageType ?? '-',
      gen.world.delivered[s].length > 0 ? 'r' : '-',
    ].join(':');
  };
  return [side('A'), side('B')].join('|');
}

function serializeGen(gen: GenWorld): string {
  return `${shapeOf(gen)}|${gen.fired.join(',')}`;
}

function sessionGenLogic(initial: SessionWorld) {
  const rng = recordingRng(seededRng('paths/generate'));
  const env = { crypto, rng };
  const machines = { A: createSessionMachine(env), B: createSessionMachine(env) };
  return fromTransition(
    (gen: GenWorld, ev: ActionEvent): GenWorld => {
      const world = cloneModelWorld(gen.world, machines, rng);
      applySessionAction(world, ev.action);
      const fired = [...new Set([...world.parties.A.takeFired(), ...world.parties.B.takeFired()])].sort();
      return { world, depth: gen.depth + 1, fired };
    },
    { world: initial, depth: 0, fired: [] } satisfies GenWorld,
  );
}

describe('path coverage: session machine against impl/', () => {
  it('every transition of the session machine fires on some path, and both engines agree on every step of every path [WP-DR-11] [WP-REC-02] [WP-PQXDH-10]', () => {
    const keys = { A: partyKeys(crypto, 'paths/A'), B: partyKeys(crypto, 'paths/B') };
    const initial = createSessionWorld('model', crypto, keys, 'paths/generate');
    const started = performance.now();
    const paths = getShortestPaths(sessionGenLogic(initial), {
      events: (snapshot) => offeredActions(snapshot.context),
      serializeState: (snapshot) => serializeGen(snapshot.context),
      serializeEvent: (e) => e.type,
      limit: FULL ? 100_000 : 20_000,
    });
    const generation = performance.now() - started;
    // A path that is a prefix of another adds nothing: its steps are replayed as part of the longer one.
    const sequences = paths.map((path) => ({
      shape: shapeOf(path.state.context),
      actions: path.steps.flatMap((step) => {
        const action = (step.event as Partial<ActionEvent>).action;
        return action === undefined ? [] : [action];
      }),
    }));
    // A path that is a prefix of another adds nothing: its steps are replayed as part of the longer one.
    const keysOf = sequences.map(({ actions }) => actions.map(describeAction).join(' ; '));
    const leaves = sequences.filter(
      (_, i) => !keysOf.some((other, j) => j !== i && other.startsWith(`${keysOf[i]} ; `)),
    );
    // The probes run once per distinct final world shape (and after every scenario).
    const probed = new Set<string>();
    const replayed = [
      ...leaves.map(({ shape, actions }) => {
        if (probed.has(shape)) return actions;
        probed.add(shape);
        return [...actions, ...PROBES];
      }),
      ...SCENARIOS.map((actions) => [...actions, ...PROBES]),
    ];
    const fired = new Set<string>();
    let steps = 0;
    for (const [index, actions] of replayed.entries()) {
      const result = replaySessionActions(crypto, keys, `paths/${index}`, actions, { fired });
      steps += result.steps;
      if (result.divergence !== null) {
        throw new Error(
          `${describeDivergence(result.divergence, `session path ${index}`)}\n  path: ${actions.map(describeAction).join(' → ')}`,
        );
      }
    }
    const all = listTransitions(createSessionMachine({ crypto, rng: seededRng('definition') })).map(
      (t) => t.key,
    );
    const uncovered = all.filter((key) => !fired.has(key) && SESSION_UNREACHABLE[key] === undefined);
    const unexpectedlyCovered = Object.keys(SESSION_UNREACHABLE).filter((key) => fired.has(key));
    console.log(
      `session: ${all.length} transitions, ${fired.size} fired, ${Object.keys(SESSION_UNREACHABLE).length} unreachable by construction; ` +
        `${paths.length} shortest paths (${leaves.length} maximal, ${probed.size} world shapes probed) + ${SCENARIOS.length} scenarios; ${PROBES.length} probes each: ` +
        `${replayed.length} paths replayed in ${steps} steps on both engines; ` +
        `generation ${Math.round(generation)} ms, total ${Math.round(performance.now() - started)} ms`,
    );
    expect(uncovered, 'transitions of the session machine that no path fired').toEqual([]);
    expect(unexpectedlyCovered, 'transitions listed as unreachable that fired').toEqual([]);
    expect(Object.keys(SESSION_UNREACHABLE).filter((key) => !all.includes(key))).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------
// Server machine
// ---------------------------------------------------------------------------------------------

/**
 * Server transitions no path reaches here, each with the reason. The test fails if one fires (it
 * then belongs in the coverage) or if any other transition stays uncovered.
 */
const SERVER_NOT_COVERED: Readonly<Record<string, string>> = {
  'server.registerAccount.preKeys.checkKyberLimit (always) #1':
    'a registration carries exactly one last-resort Kyber key (checkLastResort) and at most MAX_ONE_TIME_PREKEYS + 1 Kyber keys (checkUploadLimit), so at most MAX_ONE_TIME_PREKEYS one-time ones: the later limit cannot fail',
  'server.registerDevice.preKeys.checkKyberLimit (always) #1':
    'as for registerAccount: checkLastResort and checkUploadLimit together already bound the one-time Kyber keys of a registration',
  'server.registerDevice.checkRegistered (always) #1':
    'the invariant guard (a registered device whose identity differs from its list entry): update-device-list revokes a device whose listed identity or registration id changed (WP-SRV-11), so no request sequence reaches it',
};

const SERVER_T0 = 1_700_000_000_000;
type UserName = 'alice' | 'bob';

const serverFixtures = (() => {
  const cache = new Map<string, unknown>();
  const memo = <T>(key: string, make: () => T): T => {
    if (!cache.has(key)) cache.set(key, make());
    return cache.get(key) as T;
  };
  const install = (userId: UserName, deviceId: number, index: number): PreKeyState =>
    memo(`install/${userId}/${deviceId}/${index}`, () =>
      generatePreKeyState(
        { crypto, rng: seededRng(`paths/server/install/${userId}/${deviceId}/${index}`) },
        { oneTimePreKeys: 2, oneTimeKyberPreKeys: 1 },
      ),
    );
  const accountKey = (userId: UserName, k: number): KeyPair =>
    memo(`account/${userId}/${k}`, () =>
      generateKeyPair(crypto, seededRng(`paths/server/account/${userId}/${k}`)),
    );
  const list = (
    userId: UserName,
    k: number,
    version: number,
    devices: readonly (readonly [number, number])[],
  ) =>
    memo(`list/${userId}/${k}/${version}/${JSON.stringify(devices)}`, (): SignedDeviceList => {
      const account = accountKey(userId, k);
      return signDeviceList(
        crypto,
        account.privateKey,
        {
          userId,
          version,
          accountKey: account.publicKey,
          devices: devices.map(([deviceId, index]) => {
            const keys = install(userId, deviceId, index);
            return {
              deviceId,
              identityKey: keys.identityKeyPair.publicKey,
              registrationId: keys.registrationId,
            };
          }),
        },
        seededRng(`paths/server/list/${userId}/${version}`).randomBytes(64),
      );
    });
  const proof = (userId: UserName, deviceId: number, index: number, k: number): Uint8Array =>
    memo(`proof/${userId}/${deviceId}/${index}/${k}`, () => {
      const keys = install(userId, deviceId, index);
      const message = registrationProofMessage(
        { userId, deviceId },
        keys.identityKeyPair.publicKey,
        keys.registrationId,
        accountKey(userId, k).publicKey,
      );
      return signRegistrationProof(
        crypto,
        keys.identityKeyPair.privateKey,
        message,
        seededRng(`paths/server/proof/${userId}/${deviceId}`).randomBytes(64),
      );
    });
  return { install, accountKey, list, proof };
})();

function uploadOf(keys: PreKeyState): PreKeyUpload {
  const signed = keys.signedPreKeys[0];
  if (signed === undefined) throw new Error('fixture without a signed prekey');
  return {
    signedPreKey: { keyId: signed.keyId, publicKey: signed.keyPair.publicKey, signature: signed.signature },
    oneTimePreKeys: keys.oneTimePreKeys.map((k) => ({ keyId: k.keyId, publicKey: k.keyPair.publicKey })),
    kyberPreKeys: keys.kyberPreKeys.map((k) => ({
      keyId: k.keyId,
      publicKey: k.publicKey,
      signature: k.signature,
      lastResort: k.lastResort,
    })),
  };
}

function registerAccount(
  userId: UserName,
  index: number,
  k: number,
  version: number,
): Extract<ServerRequest, { kind: 'register-account' }> {
  const keys = serverFixtures.install(userId, 1, index);
  return {
    kind: 'register-account',
    device: { userId, deviceId: 1 },
    identityKey: keys.identityKeyPair.publicKey,
    registrationId: keys.registrationId,
    deviceList: serverFixtures.list(userId, k, version, [[1, index]]),
    proof: serverFixtures.proof(userId, 1, index, k),
    preKeys: uploadOf(keys),
  };
}

function registerDevice(
  userId: UserName,
  deviceId: number,
  index: number,
  k: number,
): Extract<ServerRequest, { kind: 'register-device' }> {
  const keys = serverFixtures.install(userId, deviceId, index);
  return {
    kind: 'register-device',
    device: { userId, deviceId },
    identityKey: keys.identityKeyPair.publicKey,
    registrationId: keys.registrationId,
    proof: serverFixtures.proof(userId, deviceId, index, k),
    preKeys: uploadOf(keys),
  };
}

/** Driver-side bookkeeping of one engine's server world (the same in both while they agree). */
interface ServerWorld {
  handle(request: ServerRequest): ServerResponse;
  abstract(): unknown;
  takeFired(): string[];
  /** A copy that continues independently (the path generator branches worlds). */
  clone(): ServerWorld;
  now: number;
  messages: number;
  uploads: number;
  lastMessageId: string | null;
  readonly fetched: Record<string, number[]>;
}

function messageIdOf(n: number): string {
  return n.toString(16).padStart(32, '0');
}

function implServerWorld(state: ServerState = emptyServerState()): ServerWorld {
  let current = state;
  const world: ServerWorld = {
    handle(request) {
      const step = handleRequest({ crypto }, current, request, world.now);
      current = step.state;
      return step.response;
    },
    abstract: () => abstractServer(crypto, current),
    takeFired: () => [],
    clone() {
      const copy = implServerWorld(current);
      Object.assign(copy, {
        now: world.now,
        messages: world.messages,
        uploads: world.uploads,
        lastMessageId: world.lastMessageId,
      });
      Object.assign(copy.fetched, world.fetched);
      return copy;
    },
    now: SERVER_T0,
    messages: 0,
    uploads: 0,
    lastMessageId: null,
    fetched: {},
  };
  return world;
}

const serverMachine = createServerMachine({ crypto });

function modelServerWorld(server?: ModelServer): ServerWorld {
  const fired: string[] = [];
  const actor = createActor(serverMachine, {
    id: 'server',
    input: server === undefined ? {} : { server },
    inspect: (event) => {
      if (event.type !== '@xstate.microstep') return;
      const transitions = (event as { _transitions?: AnyTransitionDefinition[] })._transitions ?? [];
      fired.push(...transitions.map(transitionKeyOf));
    },
  });
  const answers: ServerResponse[] = [];
  actor.on('server.response', (event) => {
    answers.push(event.response);
  });
  actor.start();
  fired.length = 0;
  let requestId = 1;
  const world: ServerWorld = {
    handle(request) {
      answers.length = 0;
      actor.send({ type: 'server.request', request, now: world.now, requestId: requestId++ });
      const snapshot = actor.getSnapshot();
      if (snapshot.status === 'error') throw snapshot.error;
      if (answers.length !== 1) throw new Error(`the server machine answered ${answers.length} times`);
      return answers[0] as ServerResponse;
    },
    abstract: () => abstractServerOf(crypto, actor.getSnapshot().context),
    takeFired: () => fired.splice(0, fired.length),
    clone() {
      const copy = modelServerWorld(actor.getSnapshot().context.server);
      Object.assign(copy, {
        now: world.now,
        messages: world.messages,
        uploads: world.uploads,
        lastMessageId: world.lastMessageId,
      });
      Object.assign(copy.fetched, world.fetched);
      return copy;
    },
    now: SERVER_T0,
    messages: 0,
    uploads: 0,
    lastMessageId: null,
    fetched: {},
  };
  return world;
}

/** One abstract server action: requests built from the driver's bookkeeping, answered in order. */
interface ServerAction {
  readonly name: string;
  readonly run: (world: ServerWorld) => ServerResponse[];
}

function single(name: string, build: (world: ServerWorld) => ServerRequest): ServerAction {
  return { name, run: (world) => [world.handle(build(world))] };
}

function sendRequest(
  world: ServerWorld,
  from: UserName,
  to: UserName,
  devices: readonly (readonly [number, number])[],
  options: { readonly fresh?: boolean; readonly bytes?: number } = {},
): ServerRequest {
  if (options.fresh !== false || world.lastMessageId === null)
    world.lastMessageId = messageIdOf(++world.messages);
  return {
    kind: 'send',
    sender: { userId: from, deviceId: 1 },
    messageId: world.lastMessageId,
    recipient: to,
    messages: devices.map(([deviceId, index]) => ({
      deviceId,
      registrationId: serverFixtures.install(to, deviceId, index).registrationId,
      type: 'whisper' as const,
      bytes: new Uint8Array(options.bytes ?? 40).fill(world.messages & 0xff),
    })),
  };
}

function fetchAction(userId: UserName, deviceId: number): ServerAction {
  return {
    name: `${userId}/${deviceId} fetches`,
    run: (world) => {
      const response = world.handle({ kind: 'fetch', device: { userId, deviceId } });
      world.fetched[`${userId}/${deviceId}`] =
        response.kind === 'envelopes' ? response.envelopes.map((e) => e.envelopeId) : [];
      return [response];
    },
  };
}

const BLOB = new TextEncoder().encode('an encrypted attachment');
const blobIdOf = (bytes: Uint8Array): string => toHex(crypto.sha256(bytes));
const PROVISIONING = 'provisioning-address-0001';

/** The explored alphabet of honest (and honestly mistaken) requests. */
const SERVER_ACTIONS: readonly ServerAction[] = [
  single('register alice', () => registerAccount('alice', 0, 0, 1)),
  single('register bob', () => registerAccount('bob', 0, 0, 1)),
  single('alice lists device 2', () => ({
    kind: 'update-device-list',
    device: { userId: 'alice', deviceId: 1 },
    deviceList: serverFixtures.list('alice', 0, 2, [
      [1, 0],
      [2, 0],
    ]),
  })),
  single('register alice device 2', () => registerDevice('alice', 2, 0, 0)),
  single('alice relists device 2 reinstalled', () => ({
    kind: 'update-device-list',
    device: { userId: 'alice', deviceId: 1 },
    deviceList: serverFixtures.list('alice', 0, 3, [
      [1, 0],
      [2, 1],
    ]),
  })),
  single('register alice device 2 reinstalled', () => registerDevice('alice', 2, 1, 0)),
  single('alice revokes device 2', () => ({
    kind: 'update-device-list',
    device: { userId: 'alice', deviceId: 1 },
    deviceList: serverFixtures.list('alice', 0, 4, [[1, 0]]),
  })),
  single('alice resets her account', () => registerAccount('alice', 1, 1, 5)),
  single('alice uploads prekeys', (world) => {
    world.uploads++;
    const own = uploadOf(serverFixtures.install('alice', 1, 0));
    const oneTime = own.oneTimePreKeys[0];
    const kyber = own.kyberPreKeys.find((k) => !k.lastResort);
    if (oneTime === undefined || kyber === undefined) throw new Error('fixture without one-time keys');
    return {
      kind: 'upload-prekeys',
      device: { userId: 'alice', deviceId: 1 },
      preKeys: {
        signedPreKey: own.signedPreKey,
        oneTimePreKeys: [{ ...oneTime, keyId: 1000 + world.uploads }],
        kyberPreKeys: [{ ...kyber, keyId: 2000 + world.uploads }],
      },
    };
  }),
  single("get bob's bundles", () => ({ kind: 'get-bundles', userId: 'bob', deviceIds: [1] })),
  single("get alice's bundles", () => ({ kind: 'get-bundles', userId: 'alice', deviceIds: [1] })),
  single("get alice's list", () => ({ kind: 'get-device-list', userId: 'alice' })),
  single('alice sends to bob', (world) => sendRequest(world, 'alice', 'bob', [[1, 0]])),
  single('alice resends her last send', (world) =>
    sendRequest(world, 'alice', 'bob', [[1, 0]], { fresh: false }),
  ),
  single('bob sends to alice/1', (world) => sendRequest(world, 'bob', 'alice', [[1, 0]])),
  single('bob sends to alice/1 and alice/2', (world) =>
    sendRequest(world, 'bob', 'alice', [
      [1, 0],
      [2, 0],
    ]),
  ),
  fetchAction('bob', 1),
  fetchAction('alice', 2),
  {
    name: 'bob acknowledges what he fetched',
    run: (world) => [
      world.handle({
        kind: 'ack',
        device: { userId: 'bob', deviceId: 1 },
        envelopeIds: world.fetched['bob/1'] ?? [],
      }),
    ],
  },
  single('provisioning put', () => ({
    kind: 'provision-put',
    address: PROVISIONING,
    bytes: Uint8Array.of(1, 2, 3),
  })),
  single('provisioning put, other bytes', () => ({
    kind: 'provision-put',
    address: PROVISIONING,
    bytes: Uint8Array.of(9, 9),
  })),
  single('provisioning get', () => ({ kind: 'provision-get', address: PROVISIONING })),
  single('blob put', () => ({ kind: 'blob-put', blobId: blobIdOf(BLOB), bytes: BLOB })),
  single('blob get', () => ({ kind: 'blob-get', blobId: blobIdOf(BLOB) })),
  { name: 'the clock advances 11 minutes', run: (world) => ((world.now += 11 * 60 * 1000), []) },
];

// Hostile probes: each template request with one field mangled, plus semantic variants.

const WRONG_VALUES: readonly unknown[] = [
  undefined,
  null,
  'x',
  -1,
  1.5,
  0,
  2,
  2 ** 32,
  new Uint8Array(0),
  Uint8Array.of(5, 1),
  [],
  {},
];

function setPath(value: unknown, pathKeys: readonly (string | number)[], replacement: unknown): unknown {
  if (pathKeys.length === 0) return replacement;
  const [head, ...rest] = pathKeys;
  if (Array.isArray(value)) {
    const copy = [...(value as unknown[])];
    copy[head as number] = setPath(copy[head as number], rest, replacement);
    return copy;
  }
  const copy = { ...(value as Record<string, unknown>) };
  const next = setPath(copy[head as string], rest, replacement);
  if (next === undefined) delete copy[head as string];
  else copy[head as string] = next;
  return copy;
}

/** Every field path of a request down to depth 3 (array elements through their first item). */
function fieldPaths(
  value: unknown,
  prefix: readonly (string | number)[] = [],
  depth = 0,
): (string | number)[][] {
  if (depth >= 3 || value === null || typeof value !== 'object' || value instanceof Uint8Array) return [];
  const out: (string | number)[][] = [];
  const entries: [string | number, unknown][] = Array.isArray(value)
    ? value.length > 0
      ? [[0, value[0]]]
      : []
    : Object.entries(value as Record<string, unknown>);
  for (const [key, child] of entries) {
    out.push([...prefix, key], ...fieldPaths(child, [...prefix, key], depth + 1));
  }
  return out;
}

function mutations(template: ServerRequest): ServerRequest[] {
  const out: ServerRequest[] = [];
  for (const pathKeys of fieldPaths(template)) {
    if (pathKeys[0] === 'kind') continue;
    for (const wrong of WRONG_VALUES) out.push(setPath(template, pathKeys, wrong) as ServerRequest);
  }
  return out;
}

function flip(bytes: Uint8Array): Uint8Array {
  const out = bytes.slice();
  out[out.length - 1] = (out[out.length - 1] ?? 0) ^ 1;
  return out;
}

/** Probes against a world in any state: rejections leave the server as it was (WP-SRV-01). */
function serverProbes(): ServerAction[] {
  const alice = registerAccount('alice', 0, 0, 1);
  const own = uploadOf(serverFixtures.install('alice', 1, 0));
  const other = uploadOf(serverFixtures.install('bob', 1, 0));
  const lastResort = own.kyberPreKeys.find((k) => k.lastResort);
  const kyber = own.kyberPreKeys.find((k) => !k.lastResort);
  const oneTime = own.oneTimePreKeys[0];
  const otherOneTime = other.oneTimePreKeys[0];
  if (lastResort === undefined || kyber === undefined || oneTime === undefined || otherOneTime === undefined)
    throw new Error('fixture');
  const upload = (preKeys: unknown): ServerRequest =>
    ({ kind: 'upload-prekeys', device: { userId: 'alice', deviceId: 1 }, preKeys }) as ServerRequest;
  const many = (count: number, from: number) =>
    Array.from({ length: count }, (_, i) => ({ keyId: from + i, publicKey: oneTime.publicKey }));
  const base = { signedPreKey: own.signedPreKey, oneTimePreKeys: [], kyberPreKeys: [] };
  const device2 = registerDevice('alice', 2, 0, 0);
  const templates: ServerRequest[] = [
    alice,
    device2,
    upload({
      ...base,
      oneTimePreKeys: [{ ...oneTime, keyId: 3500 }],
      kyberPreKeys: [{ ...kyber, keyId: 3501 }],
    }),
    {
      kind: 'update-device-list',
      device: { userId: 'alice', deviceId: 1 },
      deviceList: serverFixtures.list('alice', 0, 2, [
        [1, 0],
        [2, 0],
      ]),
    },
    { kind: 'get-device-list', userId: 'alice' },
    { kind: 'get-bundles', userId: 'bob', deviceIds: [1] },
    {
      kind: 'send',
      sender: { userId: 'alice', deviceId: 1 },
      messageId: messageIdOf(9999),
      recipient: 'bob',
      messages: [{ deviceId: 1, registrationId: 1, type: 'whisper', bytes: Uint8Array.of(1) }],
      onlyDevice: 1,
    },
    { kind: 'fetch', device: { userId: 'bob', deviceId: 1 } },
    { kind: 'ack', device: { userId: 'bob', deviceId: 1 }, envelopeIds: [1] },
    { kind: 'provision-put', address: 'provisioning-address-0002', bytes: Uint8Array.of(1) },
    { kind: 'provision-get', address: 'provisioning-address-0002' },
    { kind: 'blob-put', blobId: blobIdOf(BLOB), bytes: BLOB },
    { kind: 'blob-get', blobId: blobIdOf(BLOB) },
  ];
  // Prekey uploads aimed at one check of WP-SRV-08 each, sent as an upload, in an account
  // registration and in a device registration.
  const uploadVariants: [string, unknown][] = [
    ['stored ids again', { ...own, kyberPreKeys: [] }],
    [
      'a stored id under another key',
      { ...base, oneTimePreKeys: [{ keyId: oneTime.keyId, publicKey: otherOneTime.publicKey }] },
    ],
    [
      'a one-time Kyber key under the last resort id',
      { ...base, kyberPreKeys: [{ ...kyber, keyId: lastResort.keyId }] },
    ],
    ['another identity', other],
    ['101 one-time keys', { ...base, oneTimePreKeys: many(101, 3000) }],
    [
      'truncated signature',
      { ...base, signedPreKey: { ...own.signedPreKey, signature: own.signedPreKey.signature.slice(1) } },
    ],
    [
      'bad signed prekey',
      { ...base, signedPreKey: { ...own.signedPreKey, publicKey: Uint8Array.of(5, ...new Uint8Array(32)) } },
    ],
    [
      'low-order one-time key',
      { ...base, oneTimePreKeys: [{ keyId: 4000, publicKey: Uint8Array.of(5, ...new Uint8Array(32)) }] },
    ],
    [
      'bad Kyber type',
      {
        ...base,
        kyberPreKeys: [{ ...kyber, keyId: 5000, publicKey: Uint8Array.of(9, ...kyber.publicKey.slice(1)) }],
      },
    ],
    [
      'bad Kyber signature',
      { ...base, kyberPreKeys: [{ ...kyber, keyId: 5001, signature: flip(kyber.signature) }] },
    ],
    [
      'two last resorts',
      {
        ...base,
        kyberPreKeys: [
          { ...lastResort, keyId: 6000 },
          { ...lastResort, keyId: 6001 },
        ],
      },
    ],
    [
      'an id twice',
      {
        ...base,
        oneTimePreKeys: [
          { ...oneTime, keyId: 7000 },
          { ...oneTime, keyId: 7000 },
        ],
      },
    ],
    ['60 one-time keys', { ...base, oneTimePreKeys: many(60, 8000) }],
    ['60 more one-time keys', { ...base, oneTimePreKeys: many(60, 8100) }],
    [
      '101 Kyber keys',
      { ...base, kyberPreKeys: Array.from({ length: 101 }, (_, i) => ({ ...kyber, keyId: 9000 + i })) },
    ],
    [
      'a last resort without the flag',
      { ...base, kyberPreKeys: [{ keyId: 9500, publicKey: kyber.publicKey, signature: kyber.signature }] },
    ],
  ];
  // A registration needs exactly one last resort: add it where a variant has none.
  const withLastResort = (preKeys: unknown): unknown => {
    const kyberPreKeys = (preKeys as { kyberPreKeys?: unknown }).kyberPreKeys;
    if (
      !Array.isArray(kyberPreKeys) ||
      kyberPreKeys.some((k) => (k as { lastResort?: unknown }).lastResort === true)
    ) {
      return preKeys;
    }
    return { ...(preKeys as object), kyberPreKeys: [...kyberPreKeys, { ...lastResort, keyId: 9999 }] };
  };
  const device2Keys = device2.preKeys;
  const semantic: [string, ServerRequest | unknown][] = [
    [
      'register device: bad Kyber signature',
      {
        ...device2,
        preKeys: {
          ...device2Keys,
          kyberPreKeys: device2Keys.kyberPreKeys.map((k) => ({ ...k, signature: flip(k.signature) })),
        },
      },
    ],
    ...uploadVariants.flatMap(([name, preKeys]): [string, unknown][] => [
      [`upload: ${name}`, upload(preKeys)],
      [`register account: ${name}`, { ...alice, preKeys: withLastResort(preKeys) }],
      [`register device: ${name}`, { ...device2, preKeys: withLastResort(preKeys) }],
    ]),
    ['a request that is not an object', null],
    ['a request without a kind', { device: alice.device }],
    ['an unknown kind', { kind: 'delete-everything' }],
    ['register: a non-primary device', { ...alice, device: { userId: 'alice', deviceId: 2 } }],
    [
      'register: a list naming another device',
      { ...alice, deviceList: serverFixtures.list('alice', 0, 1, [[2, 0]]) },
    ],
    [
      'register: a badly signed list',
      { ...alice, deviceList: { ...alice.deviceList, signature: flip(alice.deviceList.signature) } },
    ],
    ['register: a bad proof', { ...alice, proof: flip(alice.proof) }],
    ['register: an identical retry', alice],
    // WP-SRV-05: an older list under the account's key is a retry only from the registered identity.
    ['register: the same account key, another identity', registerAccount('alice', 1, 0, 1)],
    ['register: another account key, same version', registerAccount('alice', 1, 1, 1)],
    ['register: low-order identity key', { ...alice, identityKey: Uint8Array.of(5, ...new Uint8Array(32)) }],
    ['register: no last resort', { ...alice, preKeys: { ...alice.preKeys, kyberPreKeys: [kyber] } }],
    ['bundles: a device twice', { kind: 'get-bundles', userId: 'bob', deviceIds: [1, 1] }],
    ['bundles: an unknown device', { kind: 'get-bundles', userId: 'bob', deviceIds: [3] }],
    ['bundles: an unknown user', { kind: 'get-bundles', userId: 'carol', deviceIds: [1] }],
    [
      'bundles: 128 ids',
      { kind: 'get-bundles', userId: 'bob', deviceIds: Array.from({ length: 128 }, (_, i) => i + 1) },
    ],
    ['list of an unknown user', { kind: 'get-device-list', userId: 'carol' }],
    [
      'update: another account key',
      {
        kind: 'update-device-list',
        device: { userId: 'alice', deviceId: 1 },
        deviceList: serverFixtures.list('alice', 1, 9, [[1, 0]]),
      },
    ],
    [
      'update: a stale version',
      {
        kind: 'update-device-list',
        device: { userId: 'alice', deviceId: 1 },
        deviceList: serverFixtures.list('alice', 0, 1, [[1, 0]]),
      },
    ],
    [
      'update: by an unregistered device',
      {
        kind: 'update-device-list',
        device: { userId: 'alice', deviceId: 3 },
        deviceList: serverFixtures.list('alice', 0, 9, [[1, 0]]),
      },
    ],
    [
      'update: unknown user',
      {
        kind: 'update-device-list',
        device: { userId: 'carol', deviceId: 1 },
        deviceList: serverFixtures.list('alice', 0, 9, [[1, 0]]),
      },
    ],
    [
      'send: a copy too large',
      {
        ...sendRequestStatic('alice', 'bob', [[1, 0]]),
        messages: [
          { deviceId: 1, registrationId: 1, type: 'whisper', bytes: new Uint8Array(MAX_ENVELOPE_SIZE + 1) },
        ],
      },
    ],
    [
      'send: a device twice',
      {
        ...sendRequestStatic('alice', 'bob', [
          [1, 0],
          [1, 0],
        ]),
      },
    ],
    ['send: onlyDevice without its copy', { ...sendRequestStatic('alice', 'bob', [[1, 0]]), onlyDevice: 2 }],
    ['send: onlyDevice with its copy', { ...sendRequestStatic('alice', 'bob', [[1, 0]]), onlyDevice: 1 }],
    ['send: an unknown recipient', sendRequestStatic('alice', 'carol' as UserName, [])],
    [
      'send: an unknown sender',
      { ...sendRequestStatic('alice', 'bob', [[1, 0]]), sender: { userId: 'carol', deviceId: 1 } },
    ],
    [
      'send: an unregistered sender device',
      { ...sendRequestStatic('alice', 'bob', [[1, 0]]), sender: { userId: 'alice', deviceId: 3 } },
    ],
    [
      'send: a stale registration id',
      {
        ...sendRequestStatic('alice', 'bob', [[1, 0]]),
        messages: [{ deviceId: 1, registrationId: 7, type: 'whisper', bytes: Uint8Array.of(1) }],
      },
    ],
    [
      'send: an extra device',
      sendRequestStatic('alice', 'bob', [
        [1, 0],
        [2, 0],
      ]),
    ],
    [
      'send: a device message without fields',
      { ...sendRequestStatic('alice', 'bob', [[1, 0]]), messages: [{ deviceId: 1 }] },
    ],
    [
      'send: a device message with a bad type',
      {
        ...sendRequestStatic('alice', 'bob', [[1, 0]]),
        messages: [{ deviceId: 1, registrationId: 1, type: 'sms', bytes: Uint8Array.of(1) }],
      },
    ],
    ['fetch: unknown user', { kind: 'fetch', device: { userId: 'carol', deviceId: 1 } }],
    ['fetch: unregistered device', { kind: 'fetch', device: { userId: 'bob', deviceId: 3 } }],
    ['ack: unknown ids', { kind: 'ack', device: { userId: 'bob', deviceId: 1 }, envelopeIds: [999_999] }],
    [
      'ack: too many ids',
      {
        kind: 'ack',
        device: { userId: 'bob', deviceId: 1 },
        envelopeIds: Array.from({ length: 501 }, (_, i) => i + 1),
      },
    ],
    [
      'provisioning: too large',
      {
        kind: 'provision-put',
        address: 'provisioning-address-0003',
        bytes: new Uint8Array(MAX_PROVISIONING_SIZE + 1),
      },
    ],
    ['provisioning: a bad address', { kind: 'provision-put', address: 'short', bytes: Uint8Array.of(1) }],
    ['blob: id mismatch', { kind: 'blob-put', blobId: blobIdOf(Uint8Array.of(1)), bytes: BLOB }],
    [
      'blob: too large',
      { kind: 'blob-put', blobId: '0'.repeat(64), bytes: new Uint8Array(MAX_BLOB_SIZE + 1) },
    ],
    ['blob: unknown', { kind: 'blob-get', blobId: 'f'.repeat(64) }],
  ];
  // Mutations first: a semantic probe may change the server (an identical retry registers).
  return [
    ...templates.flatMap((template) =>
      mutations(template).map((request, i) => single(`probe: ${template.kind} mutation ${i}`, () => request)),
    ),
    ...semantic.map(([name, request]) => single(`probe: ${name}`, () => request as ServerRequest)),
    {
      name: 'probe: upload 60 one-time keys twice (more than a device may hold)',
      run: (world) => [
        world.handle(upload({ ...base, oneTimePreKeys: many(60, 10_000) })),
        world.handle(upload({ ...base, oneTimePreKeys: many(60, 10_100) })),
      ],
    },
  ];
}

function sendRequestStatic(
  from: UserName,
  to: UserName,
  devices: readonly (readonly [number, number])[],
): Extract<ServerRequest, { kind: 'send' }> {
  return {
    kind: 'send',
    sender: { userId: from, deviceId: 1 },
    messageId: messageIdOf(77_777),
    recipient: to,
    messages: devices.map(([deviceId, index]) => ({
      deviceId,
      registrationId: serverFixtures.install(to === 'alice' ? 'alice' : 'bob', deviceId, index)
        .registrationId,
      type: 'whisper' as const,
      bytes: Uint8Array.of(1, 2, 3),
    })),
  };
}

/** Bounds reached only by many requests: each a separate path. */
const SERVER_SCENARIOS: readonly (readonly ServerAction[])[] = [
  // WP-SRV-20: a full mailbox refuses the next send.
  [
    SERVER_ACTIONS[0] as ServerAction,
    SERVER_ACTIONS[1] as ServerAction,
    {
      name: `alice sends ${MAILBOX_CAPACITY + 1} messages to bob`,
      run: (world) =>
        Array.from({ length: MAILBOX_CAPACITY + 1 }, () =>
          world.handle(sendRequest(world, 'alice', 'bob', [[1, 0]])),
        ),
    },
  ],
  // The provisioning relay and the blob store are bounded.
  [
    {
      name: `${MAX_PROVISIONING_ENTRIES + 1} provisioning messages`,
      run: (world) =>
        Array.from({ length: MAX_PROVISIONING_ENTRIES + 1 }, (_, i) =>
          world.handle({
            kind: 'provision-put',
            address: `provisioning-${String(i).padStart(12, '0')}`,
            bytes: Uint8Array.of(1),
          }),
        ),
    },
  ],
  [
    {
      name: `${MAX_BLOBS + 1} blobs`,
      run: (world) =>
        Array.from({ length: MAX_BLOBS + 1 }, (_, i) => {
          const bytes = new TextEncoder().encode(`blob ${i}`);
          return world.handle({ kind: 'blob-put', blobId: blobIdOf(bytes), bytes });
        }),
    },
  ],
];

/**
 * XEdDSA signatures (spec/crypto/xeddsa.ts) by one private key with ONE nonce for every message:
 * `R = rB` and `A = aB` are computed once, so a signature costs a SHA-512 and a scalar
 * multiply-add instead of two base-point multiplications (about 0.75 ms). The signatures verify
 * with `xeddsaVerify`. Reusing a nonce reveals the private key: fine for a fixture key that signs
 * placeholder device lists, never acceptable anywhere else.
 */
function fixedNonceSigner(privateKey: Uint8Array): (message: Uint8Array) => Uint8Array {
  const { Point } = ed25519;
  const Fn = Point.Fn;
  const k = Uint8Array.from(privateKey);
  k[0] = (k[0] ?? 0) & 248;
  k[31] = ((k[31] ?? 0) & 127) | 64;
  const a = Fn.create(bytesToNumberLE(k));
  const encodedA = Point.BASE.multiply(a).toBytes();
  const signBit = (encodedA[31] ?? 0) & 0x80;
  const r = Fn.create(bytesToNumberLE(crypto.sha512(concatBytes(Uint8Array.of(0xfe), k))));
  const encodedR = Point.BASE.multiply(r).toBytes();
  return (message) => {
    const h = Fn.create(bytesToNumberLE(crypto.sha512(concatBytes(encodedR, encodedA, message))));
    const signature = concatBytes(encodedR, numberToBytesLE(Fn.add(r, Fn.mul(h, a)), 32));
    signature[63] = ((signature[63] ?? 0) & 0x7f) | signBit;
    return signature;
  };
}

/**
 * WP-SRV-25: a server already holding `count` placeholder accounts `filler-000000`, …, as impl/'s
 * plain state and as the model's server, built directly instead of by `count` registrations. Each
 * account is what a registration leaves: a device list naming only its primary device, signed by
 * one shared fixture account key (a valid signature for its own user id, see
 * {@link fixedNonceSigner}), and that device registered with one shared install's identity and
 * prekeys, an empty mailbox and no recent sends. The test checks on a small instance that impl/'s
 * codec, which re-verifies every list and device (WP-SRV-27), accepts the state unchanged.
 */
function prefilledServers(count: number): { readonly impl: ServerState; readonly model: ModelServer } {
  const install = generatePreKeyState(
    { crypto, rng: seededRng('paths/server/filler/install') },
    { oneTimePreKeys: 1, oneTimeKyberPreKeys: 1 },
  );
  const upload = uploadOf(install);
  const signedPreKey = upload.signedPreKey;
  const [oneTimeKyber, lastResort] = [false, true].map((wanted) =>
    upload.kyberPreKeys
      .filter((key) => key.lastResort === wanted)
      .map(({ keyId, publicKey, signature }) => ({ keyId, publicKey, signature })),
  );
  const lastResortKyberPreKey = lastResort?.[0];
  if (oneTimeKyber === undefined || lastResortKyberPreKey === undefined) {
    throw new Error('filler install without Kyber prekeys');
  }
  const identityKey = install.identityKeyPair.publicKey;
  const registrationId = install.registrationId;
  // WP-SRV-29: as a registration of these keys leaves them, one past each kind's greatest id.
  const floorPast = (keys: readonly { readonly keyId: number }[]): number =>
    Math.max(0, ...keys.map((key) => key.keyId + 1));
  const implDevice: ServerDevice = {
    identityKey,
    registrationId,
    preKeys: {
      signedPreKey,
      oneTimePreKeys: upload.oneTimePreKeys,
      kyberPreKeys: oneTimeKyber,
      lastResortKyberPreKey,
      oneTimePreKeyIdFloor: floorPast(upload.oneTimePreKeys),
      kyberPreKeyIdFloor: floorPast(oneTimeKyber),
    },
    mailbox: { nextEnvelopeId: 1, envelopes: [] },
  };
  const modelDevice: ModelDevice = {
    identityKey,
    registrationId,
    signedPreKey,
    oneTimePreKeys: upload.oneTimePreKeys,
    oneTimeKyberPreKeys: oneTimeKyber,
    lastResortKyberPreKey,
    oneTimeIdFloor: floorPast(upload.oneTimePreKeys),
    kyberIdFloor: floorPast(oneTimeKyber),
    mailbox: [],
    nextEnvelopeId: 1,
  };
  const accountKey = generateKeyPair(crypto, seededRng('paths/server/filler/account'));
  const sign = fixedNonceSigner(accountKey.privateKey);
  const devices = [{ deviceId: 1, identityKey, registrationId }];
  const listOf = (userId: string): DeviceList => ({
    userId,
    version: 1,
    accountKey: accountKey.publicKey,
    devices,
  });
  // The user ids all have DIGITS digits, so each encoded list is the first one with the digits of
  // its user id replaced (encodeDeviceList validates keys on every call: 10 µs, a second in all).
  const DIGITS = 6;
  if (count > 10 ** DIGITS) throw new Error(`at most ${10 ** DIGITS} filler accounts`);
  const template = encodeDeviceList(listOf(`filler-${'0'.repeat(DIGITS)}`));
  const idBytes = new TextEncoder().encode(`filler-${'0'.repeat(DIGITS)}`);
  const digitsAt =
    template.findIndex((_, at) => idBytes.every((byte, j) => template[at + j] === byte)) + 'filler-'.length;
  const implAccounts: Record<string, ServerAccount> = {};
  const modelAccounts: Record<string, ModelAccount> = {};
  for (let i = 0; i < count; i++) {
    const digits = String(i).padStart(DIGITS, '0');
    const userId = `filler-${digits}`;
    const deviceList = listOf(userId);
    const list = template.slice();
    for (let j = 0; j < DIGITS; j++) list[digitsAt + j] = digits.charCodeAt(j);
    const signedDeviceList = { list, signature: sign(concatBytes(SIGNATURE_PREFIX.deviceList, list)) };
    implAccounts[userId] = { signedDeviceList, deviceList, devices: { '1': implDevice }, recentSends: [] };
    modelAccounts[userId] = {
      signedDeviceList,
      deviceList,
      registered: { '1': modelDevice },
      acceptedSends: [],
    };
  }
  return {
    impl: { ...emptyServerState(), accounts: implAccounts },
    model: { ...emptyModelServer(), accounts: modelAccounts },
  };
}

/**
 * WP-SRV-25: the account table is bounded. On a server holding MAX_ACCOUNTS accounts, a valid
 * registration of a new user is refused with SERVER_STORE_FULL (by both engines: `run` is called
 * on each) and changes nothing.
 */
const SERVER_FULL_TABLE: readonly ServerAction[] = [
  {
    name: 'register alice on a full account table',
    run: (world) => {
      const response = world.handle(registerAccount('alice', 0, 0, 1));
      if (response.kind !== 'error' || response.code !== 'SERVER_STORE_FULL') {
        throw new Error(`a full account table answered ${JSON.stringify(response)}`);
      }
      return [response];
    },
  },
];

interface ServerGen {
  readonly world: ServerWorld;
  readonly depth: number;
  readonly fired: readonly string[];
}

function compareServer(
  index: number,
  name: string,
  impl: { world: ServerWorld; out: ServerResponse[] },
  model: { world: ServerWorld; out: ServerResponse[] },
): ReturnType<typeof compareObservations> {
  return compareObservations(
    index,
    name,
    { outputs: impl.out, draws: [], abstract: impl.world.abstract() },
    { outputs: model.out, draws: [], abstract: model.world.abstract() },
  );
}

/**
 * Replays `actions` on both engines from an empty server (or from `start`, the same server in each
 * engine's representation), then runs each probe on a copy of the final worlds (so probes never see
 * each other's effects). Returns steps and the first divergence.
 */
function replayServer(
  actions: readonly ServerAction[],
  probes: readonly ServerAction[],
  fired: Set<string>,
  start?: { readonly impl: ServerState; readonly model: ModelServer },
): { steps: number; error: string | null } {
  const impl = implServerWorld(start?.impl);
  const model = modelServerWorld(start?.model);
  const path = (): string => actions.map((a) => a.name).join(' → ');
  for (const [index, action] of actions.entries()) {
    const implOut = action.run(impl);
    const modelOut = action.run(model);
    for (const key of model.takeFired()) fired.add(key);
    const divergence = compareServer(
      index,
      action.name,
      { world: impl, out: implOut },
      { world: model, out: modelOut },
    );
    if (divergence !== null)
      return { steps: index + 1, error: `${describeDivergence(divergence, 'server')}\n  path: ${path()}` };
  }
  for (const probe of probes) {
    const implCopy = impl.clone();
    const modelCopy = model.clone();
    const implOut = probe.run(implCopy);
    const modelOut = probe.run(modelCopy);
    for (const key of modelCopy.takeFired()) fired.add(key);
    const divergence = compareServer(
      actions.length,
      probe.name,
      { world: implCopy, out: implOut },
      { world: modelCopy, out: modelOut },
    );
    if (divergence !== null)
      return {
        steps: actions.length + 1,
        error: `${describeDivergence(divergence, 'server probe')}\n  after: ${path()}`,
      };
  }
  return { steps: actions.length + probes.length, error: null };
}

describe('path coverage: server machine against impl/', () => {
  it('every transition of the server machine fires on some path, and both engines agree on every response and abstract state [WP-SRV-01]', () => {
    const started = performance.now();
    const logic = fromTransition(
      (gen: ServerGen, ev: { type: string; action: ServerAction }): ServerGen => {
        const world = gen.world.clone();
        ev.action.run(world);
        return { world, depth: gen.depth + 1, fired: [...new Set(world.takeFired())].sort() };
      },
      { world: modelServerWorld(), depth: 0, fired: [] } satisfies ServerGen,
    );
    const paths = getShortestPaths(logic, {
      events: (snapshot) =>
        snapshot.context.depth >= (FULL ? 6 : 4)
          ? []
          : SERVER_ACTIONS.map((action) => ({ type: action.name, action })),
      // The transitions of the incoming request plus a coarse shape of the server: who is
      // registered with which devices and list version, how many relay entries and blobs.
      serializeState: (snapshot) => {
        const shape = snapshot.context.world.abstract() as {
          accounts: {
            userId: string;
            listVersion: number;
            devices: { deviceId: number; mailboxDepth: number }[];
          }[];
          provisioningEntries: number;
          blobs: number;
        };
        const accounts = shape.accounts.map(
          (a) =>
            `${a.userId}@${a.listVersion}:${a.devices.map((d) => `${d.deviceId}/${Math.min(d.mailboxDepth, 1)}`).join('+')}`,
        );
        return [
          snapshot.context.fired.join(','),
          accounts.join(';'),
          shape.provisioningEntries,
          shape.blobs,
        ].join('|');
      },
      serializeEvent: (e) => e.type,
      limit: 20_000,
    });
    const generation = performance.now() - started;
    const sequences = paths.map((path) =>
      path.steps.flatMap((step) => {
        const action = (step.event as { action?: ServerAction }).action;
        return action === undefined ? [] : [action];
      }),
    );
    const names = sequences.map((actions) => actions.map((a) => a.name).join(' ; '));
    const leaves = sequences.filter(
      (_, i) => !names.some((other, j) => j !== i && other.startsWith(`${names[i]} ; `)),
    );
    const probes = serverProbes();
    // Probes run on the empty server, once both accounts exist, and once alice lists a second
    // device that has not registered yet.
    const register = SERVER_ACTIONS.slice(0, 2);
    const probed: (readonly ServerAction[])[] = [
      [],
      register,
      [...register, SERVER_ACTIONS[2] as ServerAction],
    ];
    const replayed = [
      ...leaves.map((actions) => ({ actions, probes: [] as ServerAction[] })),
      ...SERVER_SCENARIOS.map((actions) => ({ actions, probes: [] as ServerAction[] })),
      ...probed.map((actions) => ({ actions, probes })),
    ];
    const fired = new Set<string>();
    let steps = 0;
    for (const { actions, probes: after } of replayed) {
      const result = replayServer(actions, after, fired);
      steps += result.steps;
      if (result.error !== null) throw new Error(result.error);
    }
    // WP-SRV-25: the full account table, from a prefilled server rather than MAX_ACCOUNTS
    // registrations. impl/'s codec re-verifies every list and device: a small prefilled state
    // must pass it unchanged.
    const sample = prefilledServers(12).impl;
    const decoded = decodeServerState(crypto, encodeServerState(sample));
    expect(decoded.ok ? decoded.value : decoded).toEqual(sample);
    const prefillStarted = performance.now();
    const prefilled = prefilledServers(MAX_ACCOUNTS);
    const prefill = performance.now() - prefillStarted;
    const full = replayServer(SERVER_FULL_TABLE, [], fired, prefilled);
    steps += full.steps;
    if (full.error !== null) throw new Error(full.error);
    const fullTable = performance.now() - prefillStarted;
    const all = listTransitions(serverMachine).map((t) => t.key);
    const uncovered = all.filter((key) => !fired.has(key) && SERVER_NOT_COVERED[key] === undefined);
    console.log(
      `server: ${all.length} transitions, ${fired.size} fired, ${Object.keys(SERVER_NOT_COVERED).length} not covered by design; ` +
        `${paths.length} shortest paths (${leaves.length} maximal) + ${SERVER_SCENARIOS.length} scenarios + ${probed.length} probe runs (${probes.length} probes): ` +
        `${replayed.length} paths + 1 from ${MAX_ACCOUNTS} prefilled accounts (prefill ${Math.round(prefill)} ms, with replay ${Math.round(fullTable)} ms), ` +
        `${steps} steps on both engines; generation ${Math.round(generation)} ms, total ${Math.round(performance.now() - started)} ms`,
    );
    expect(uncovered, 'transitions of the server machine that no path fired').toEqual([]);
    expect(
      Object.keys(SERVER_NOT_COVERED).filter((key) => fired.has(key)),
      'listed as not covered, yet fired',
    ).toEqual([]);
  });
});
