/**
 * The server machine (model/server.ts) rule by rule (WHITEPAPER.md "Server (SRV)", WP-SRV-01 …
 * WP-SRV-26): one scenario per rule and refusal, the machine's structure (every guard and action
 * mapped to its rules, every check with an explicit refusal), and the runner's contract. Keys,
 * lists and proofs come from spec/ alone (model/ never imports impl/).
 */
import { describe, expect, it } from 'vitest';
import { copyBytes } from '../spec/bytes.js';
import {
  MAILBOX_CAPACITY,
  MAX_ACCOUNTS,
  MAX_BLOB_SIZE,
  MAX_BLOBS,
  MAX_ENVELOPE_SIZE,
  MAX_ONE_TIME_PREKEYS,
  MAX_PROVISIONING_ENTRIES,
  MAX_PROVISIONING_SIZE,
  MESSAGE_ID_DEDUP_WINDOW,
  PROVISIONING_TTL,
} from '../spec/constants.js';
import { kemGenerateKeyPair } from '../spec/crypto/kyber.js';
import { nodeProvider } from '../spec/crypto/node.js';
import { xeddsaSign } from '../spec/crypto/xeddsa.js';
import { registrationProofMessage, signDeviceList, signRegistrationProof } from '../spec/device-list.js';
import type { SignedDeviceList } from '../spec/device-list-types.js';
import { ERROR_RULES, UsageError, type ErrorCode } from '../spec/errors.js';
import { toHex } from '../spec/hex.js';
import type { DeviceAddress, MessageId } from '../spec/identity.js';
import { fingerprint, generateKeyPair, type KeyPair } from '../spec/keys.js';
import { seededRng, type Rng } from '../spec/rng.js';
import type { ServerAccountAbstract, ServerDeviceAbstract } from '../spec/server-abstract.js';
import type {
  OutgoingDeviceMessage,
  PreKeyUpload,
  SendRefusal,
  ServerRequest,
  ServerResponse,
} from '../spec/server-api.js';
import {
  abstractServerOf,
  createServerMachine,
  createServerRunner,
  emptyModelServer,
  RULES,
  type ModelServer,
  type ServerRunner,
} from './server.js';

const c = nodeProvider;
const ENV = { crypto: c } as const;
const T0 = 1_700_000_000_000;

// ---------------------------------------------------------------------------------------------
// Fixtures from spec/ only
// ---------------------------------------------------------------------------------------------

interface Device {
  readonly address: DeviceAddress;
  readonly identity: KeyPair;
  readonly registrationId: number;
  readonly upload: PreKeyUpload;
  readonly rng: Rng;
}

interface Account {
  readonly userId: string;
  readonly accountKey: KeyPair;
  readonly rng: Rng;
}

function signedKyber(identity: KeyPair, rng: Rng, keyId: number, lastResort: boolean) {
  const { publicKey } = kemGenerateKeyPair(c, rng);
  return {
    keyId,
    publicKey,
    signature: xeddsaSign(c, identity.privateKey, publicKey, rng.randomBytes(64)),
    lastResort,
  };
}

/** A device with 2 one-time EC prekeys (ids 1, 2), one one-time Kyber (1) and a last resort (2). */
function newDevice(userId: string, deviceId: number, seed = `${userId}.${deviceId}`): Device {
  const rng = seededRng(`model-server-test/${seed}`);
  const identity = generateKeyPair(c, rng);
  const registrationId = 1 + (((rng.randomBytes(1)[0] ?? 0) << 4) | deviceId);
  const signed = generateKeyPair(c, rng);
  const upload: PreKeyUpload = {
    signedPreKey: {
      keyId: 1,
      publicKey: signed.publicKey,
      signature: xeddsaSign(c, identity.privateKey, signed.publicKey, rng.randomBytes(64)),
    },
    oneTimePreKeys: [1, 2].map((keyId) => ({ keyId, publicKey: generateKeyPair(c, rng).publicKey })),
    kyberPreKeys: [signedKyber(identity, rng, 1, false), signedKyber(identity, rng, 2, true)],
  };
  return { address: { userId, deviceId }, identity, registrationId, upload, rng };
}

function newAccount(userId: string, seed = userId): Account {
  const rng = seededRng(`model-server-test/account/${seed}`);
  return { userId, accountKey: generateKeyPair(c, rng), rng };
}

function signList(
  account: Account,
  version: number,
  devices: readonly Device[],
  signer = account,
): SignedDeviceList {
  return signDeviceList(
    c,
    signer.accountKey.privateKey,
    {
      userId: account.userId,
      version,
      accountKey: signer.accountKey.publicKey,
      devices: [...devices]
        .sort((a, b) => a.address.deviceId - b.address.deviceId)
        .map((d) => ({
          deviceId: d.address.deviceId,
          identityKey: d.identity.publicKey,
          registrationId: d.registrationId,
        })),
    },
    signer.rng.randomBytes(64),
  );
}

function proofOf(device: Device, accountKey: Uint8Array, signer = device): Uint8Array {
  const message = registrationProofMessage(
    device.address,
    device.identity.publicKey,
    device.registrationId,
    accountKey,
  );
  return signRegistrationProof(c, signer.identity.privateKey, message, device.rng.randomBytes(64));
}

function registerAccount(device: Device, account: Account, deviceList: SignedDeviceList): ServerRequest {
  return {
    kind: 'register-account',
    device: device.address,
    identityKey: device.identity.publicKey,
    registrationId: device.registrationId,
    deviceList,
    proof: proofOf(device, account.accountKey.publicKey),
    preKeys: device.upload,
  };
}

function registerDevice(device: Device, account: Account): ServerRequest {
  return {
    kind: 'register-device',
    device: device.address,
    identityKey: device.identity.publicKey,
    registrationId: device.registrationId,
    proof: proofOf(device, account.accountKey.publicKey),
    preKeys: device.upload,
  };
}

const messageId = (n: number): MessageId => n.toString(16).padStart(32, '0');
const text = (s: string): Uint8Array => new TextEncoder().encode(s);

function copyFor(
  device: Device,
  body = 'ciphertext',
  registrationId = device.registrationId,
): OutgoingDeviceMessage {
  return { deviceId: device.address.deviceId, registrationId, type: 'whisper', bytes: text(body) };
}

function send(
  sender: Device,
  recipient: string,
  n: number,
  targets: readonly Device[],
): Extract<ServerRequest, { kind: 'send' }> {
  return {
    kind: 'send',
    sender: sender.address,
    messageId: messageId(n),
    recipient,
    messages: targets.map((t) => copyFor(t)),
  };
}

/** Plain data, deeply frozen, so a test fails if the machine mutates a request. */
function deepFreeze<T>(value: T): T {
  if (typeof value !== 'object' || value === null || ArrayBuffer.isView(value)) return value;
  for (const key of Reflect.ownKeys(value)) deepFreeze(Reflect.get(value, key));
  return Object.freeze(value);
}

const alice = newAccount('alice');
const a1 = newDevice('alice', 1);
const a2 = newDevice('alice', 2);
const bob = newAccount('bob');
const b1 = newDevice('bob', 1);
const b2 = newDevice('bob', 2);

/** A server holding alice (1, 2) and bob (1, 2), all registered with list version 2. */
function world(): ServerRunner {
  const runner = createServerRunner(ENV);
  for (const [account, primary, linked] of [
    [alice, a1, a2],
    [bob, b1, b2],
  ] as const) {
    expectOk(runner, registerAccount(primary, account, signList(account, 1, [primary])));
    expectOk(runner, {
      kind: 'update-device-list',
      device: primary.address,
      deviceList: signList(account, 2, [primary, linked]),
    });
    expectOk(runner, registerDevice(linked, account));
  }
  return runner;
}

function serverOf(runner: ServerRunner): ModelServer {
  return runner.snapshot().context.server;
}

function expectOk(runner: ServerRunner, request: ServerRequest, now = T0): ServerResponse {
  const response = runner.handle(deepFreeze(request), now);
  if (response.kind === 'error' || response.kind === 'refused') {
    throw new Error(`${request.kind} failed: ${JSON.stringify(response)}`);
  }
  return response;
}

/** A request that must fail with `code`, leaving the very same server object (WP-SRV-01). */
function expectError(runner: ServerRunner, request: unknown, code: ErrorCode, now = T0): string {
  const before = serverOf(runner);
  const response = runner.handle(deepFreeze(request) as ServerRequest, now);
  expect(response).toMatchObject({ kind: 'error', code, rule: ERROR_RULES[code] });
  expect(serverOf(runner)).toBe(before);
  expect(runner.snapshot().value).toBe('serving');
  return response.kind === 'error' ? response.message : '';
}

function expectRefusal(runner: ServerRunner, request: ServerRequest): SendRefusal {
  const before = serverOf(runner);
  const response = runner.handle(deepFreeze(request), T0);
  if (response.kind !== 'refused') throw new Error(`expected a refusal, got ${JSON.stringify(response)}`);
  expect(serverOf(runner)).toBe(before);
  return response.refusal;
}

function accountAbstract(runner: ServerRunner, userId: string): ServerAccountAbstract {
  const account = abstractServerOf(c, runner.snapshot().context).accounts.find((a) => a.userId === userId);
  if (account === undefined) throw new Error(`no account ${userId}`);
  return account;
}

function deviceAbstract(runner: ServerRunner, address: DeviceAddress): ServerDeviceAbstract | undefined {
  return accountAbstract(runner, address.userId).devices.find((d) => d.deviceId === address.deviceId);
}

function envelopes(runner: ServerRunner, device: Device) {
  const response = runner.handle({ kind: 'fetch', device: device.address }, T0);
  if (response.kind !== 'envelopes') throw new Error(JSON.stringify(response));
  return response.envelopes;
}

function bundles(runner: ServerRunner, userId: string, deviceIds: number[]) {
  const response = runner.handle({ kind: 'get-bundles', userId, deviceIds }, T0);
  if (response.kind !== 'bundles') throw new Error(JSON.stringify(response));
  return response.bundles;
}

// ---------------------------------------------------------------------------------------------
// Structure
// ---------------------------------------------------------------------------------------------

interface Named {
  readonly type: string;
}

/** The parts of an xstate state node the structure tests read (eventless transitions included). */
interface NodeView {
  readonly key: string;
  readonly always?: readonly TransitionView[];
  readonly transitions: ReadonlyMap<string, readonly TransitionView[]>;
  readonly entry: readonly unknown[];
  readonly states: Readonly<Record<string, NodeView>>;
}

interface TransitionView {
  readonly guard?: unknown;
  readonly actions: readonly unknown[];
}

const nameOf = (value: unknown): string => (typeof value === 'string' ? value : (value as Named).type);

function* nodesOf(node: NodeView): Generator<NodeView> {
  yield node;
  for (const child of Object.values(node.states)) yield* nodesOf(child);
}

function collectNames(root: NodeView): { guards: Set<string>; actions: Set<string>; transitions: number } {
  const guards = new Set<string>();
  const actions = new Set<string>();
  let transitions = 0;
  for (const node of nodesOf(root)) {
    for (const action of node.entry) actions.add(nameOf(action));
    const all = [...(node.always ?? []), ...[...node.transitions.values()].flat()];
    transitions += all.length;
    for (const transition of all) {
      if (transition.guard !== undefined) guards.add(nameOf(transition.guard));
      for (const action of transition.actions) actions.add(nameOf(action));
    }
  }
  return { guards, actions, transitions };
}

describe('server machine structure', () => {
  const machine = createServerMachine(ENV);
  const root = machine.root as unknown as NodeView;

  it('maps every guard and action it uses to whitepaper rules, and RULES names nothing unused [WP-SRV-01]', () => {
    const { guards, actions } = collectNames(root);
    const used = [...guards, ...actions];
    for (const name of used) {
      expect(RULES[name], name).toBeDefined();
      expect(RULES[name]?.length, name).toBeGreaterThan(0);
      for (const rule of RULES[name] ?? []) expect(rule).toMatch(/^WP-[A-Z]+-\d{2}$/);
    }
    expect(Object.keys(RULES).sort()).toEqual([...new Set(used)].sort());
    const implemented = [
      ...Object.keys(machine.implementations.guards),
      ...Object.keys(machine.implementations.actions),
    ];
    expect(implemented.sort()).toEqual(Object.keys(RULES).sort());
  });

  it('gives every check state a guarded way on and an explicit refusal [WP-SRV-01]', () => {
    let checks = 0;
    for (const node of nodesOf(root)) {
      if (!node.key.startsWith('check') || node.always === undefined) continue;
      checks++;
      expect(node.always[0]?.guard, node.key).toBeDefined();
      expect(node.always.at(-1)?.guard, node.key).toBeUndefined();
    }
    const { transitions } = collectNames(root);
    expect([...nodesOf(root)].length).toBeGreaterThan(150);
    expect(transitions).toBeGreaterThan(250);
    expect(checks).toBeGreaterThan(60);
  });

  it('answers every request with exactly one response and returns to serving; a bad clock is misuse', () => {
    const runner = createServerRunner(ENV);
    expect(runner.handle({ kind: 'get-device-list', userId: 'nobody' }, T0)).toMatchObject({
      code: 'SERVER_UNKNOWN_USER',
    });
    expect(runner.snapshot().value).toBe('serving');
    expect(runner.snapshot().context.pending).toBeNull();
    expect(() => runner.handle({ kind: 'fetch', device: a1.address }, -1)).toThrow(UsageError);
    expect(() => runner.handle({ kind: 'fetch', device: a1.address }, 1.5)).toThrow(UsageError);
  });

  it('starts from a given server and projects it onto the abstract state', () => {
    const runner = world();
    const restarted = createServerRunner(ENV, { server: serverOf(runner) });
    expect(abstractServerOf(c, restarted.snapshot().context)).toEqual(
      abstractServerOf(c, runner.snapshot().context),
    );
    expect(abstractServerOf(c, { server: emptyModelServer() })).toEqual({
      accounts: [],
      provisioningEntries: 0,
      blobs: 0,
    });
  });
});

// ---------------------------------------------------------------------------------------------
// Rules
// ---------------------------------------------------------------------------------------------

describe('validation and atomicity', () => {
  const bad = { userId: 'Not Valid', deviceId: 1 };
  const cases: readonly (readonly [string, unknown])[] = [
    ['no kind', {}],
    ['a null request', null],
    ['an unknown kind', { kind: 'drop-table' }],
    [
      'register-account from a malformed address',
      { ...registerAccount(a1, alice, signList(alice, 9, [a1])), device: bad },
    ],
    [
      'register-account with a short identity key',
      { ...registerAccount(a1, alice, signList(alice, 9, [a1])), identityKey: new Uint8Array(32) },
    ],
    [
      'register-account with registration id 0',
      { ...registerAccount(a1, alice, signList(alice, 9, [a1])), registrationId: 0 },
    ],
    [
      'register-account with a proof that is not bytes',
      { ...registerAccount(a1, alice, signList(alice, 9, [a1])), proof: 'sig' },
    ],
    [
      'register-account with an unsigned list',
      { ...registerAccount(a1, alice, signList(alice, 9, [a1])), deviceList: { list: new Uint8Array(3) } },
    ],
    [
      'register-device from device 128',
      { ...registerDevice(a2, alice), device: { userId: 'alice', deviceId: 128 } },
    ],
    ['upload-prekeys with no preKeys', { kind: 'upload-prekeys', device: a1.address, preKeys: null }],
    [
      'upload-prekeys missing arrays',
      { kind: 'upload-prekeys', device: a1.address, preKeys: { signedPreKey: {} } },
    ],
    ['get-device-list of a malformed user', { kind: 'get-device-list', userId: '../etc' }],
    ['get-bundles for device 0', { kind: 'get-bundles', userId: 'bob', deviceIds: [0] }],
    ['get-bundles naming a device twice', { kind: 'get-bundles', userId: 'bob', deviceIds: [1, 1] }],
    ['send with a malformed message id', { ...send(a1, 'bob', 1, [b1, b2]), messageId: 'xyz' }],
    ['send to a malformed recipient', { ...send(a1, 'bob', 1, [b1, b2]), recipient: 'Bob' }],
    [
      'send with an unknown envelope type',
      { ...send(a1, 'bob', 1, [b1]), messages: [{ ...copyFor(b1), type: 'plaintext' }] },
    ],
    [
      'send with a message missing its bytes',
      { ...send(a1, 'bob', 1, [b1]), messages: [{ deviceId: 1, registrationId: 1, type: 'whisper' }] },
    ],
    ['send with a malformed onlyDevice', { ...send(a1, 'bob', 1, [b1]), onlyDevice: 0 }],
    ['ack with ids that are not integers', { kind: 'ack', device: b1.address, envelopeIds: ['1'] }],
    ['provision-put to a short address', { kind: 'provision-put', address: 'abc', bytes: new Uint8Array(1) }],
    ['blob-get with an uppercase id', { kind: 'blob-get', blobId: 'A'.repeat(64) }],
  ];
  for (const [name, request] of cases) {
    it(`refuses ${name} as malformed and changes nothing [WP-SRV-01]`, () => {
      expectError(world(), request, 'SERVER_MALFORMED_REQUEST');
    });
  }

  it('names the first malformed device message the way it fails [WP-SRV-01]', () => {
    const runner = world();
    const typed = { deviceId: 1, registrationId: 1, type: 'whisper', bytes: 'x' };
    const missing = { deviceId: 2, registrationId: 1 };
    expect(
      expectError(
        runner,
        { ...send(a1, 'bob', 1, []), messages: [typed, missing] },
        'SERVER_MALFORMED_REQUEST',
      ),
    ).toBe('a device message has a field of the wrong type or range');
    expect(
      expectError(
        runner,
        { ...send(a1, 'bob', 1, []), messages: [missing, typed] },
        'SERVER_MALFORMED_REQUEST',
      ),
    ).toBe('a device message needs deviceId, registrationId, type and bytes');
  });
});

describe('accounts and device lists', () => {
  it('accepts only a list that verifies for the account it is uploaded to [WP-SRV-02]', () => {
    const runner = createServerRunner(ENV);
    // A list that names alice's account key but carries the signature of another list.
    const swapped = { list: signList(alice, 1, [a1]).list, signature: signList(alice, 2, [a1]).signature };
    expect(expectError(runner, registerAccount(a1, alice, swapped), 'SERVER_DEVICE_LIST_INVALID')).toContain(
      'DEVICE_LIST_SIGNATURE_INVALID',
    );
    expect(
      expectError(runner, registerAccount(a1, alice, signList(bob, 1, [a1])), 'SERVER_DEVICE_LIST_INVALID'),
    ).toContain('DEVICE_LIST_WRONG_USER');
    const signed = signList(alice, 1, [a1]);
    const tampered = { list: signed.list, signature: copyBytes(signed.signature).fill(7, 0, 1) };
    expectError(runner, registerAccount(a1, alice, tampered), 'SERVER_DEVICE_LIST_INVALID');
  });

  it('refuses a list whose version does not increase, so a revoked device cannot come back [WP-SRV-03]', () => {
    const runner = world();
    expectError(
      runner,
      { kind: 'update-device-list', device: a1.address, deviceList: signList(alice, 2, [a1]) },
      'SERVER_DEVICE_LIST_STALE',
    );
    expectError(
      runner,
      { kind: 'update-device-list', device: a1.address, deviceList: signList(alice, 1, [a1, a2]) },
      'SERVER_DEVICE_LIST_STALE',
    );
  });

  it('requires a proof of possession of the identity key, against the joined account key [WP-SRV-04]', () => {
    const runner = createServerRunner(ENV);
    const bySomeoneElse = {
      ...registerAccount(a1, alice, signList(alice, 1, [a1])),
      proof: proofOf(a1, alice.accountKey.publicKey, b1),
    };
    expectError(runner, bySomeoneElse, 'SERVER_PROOF_INVALID');
    const forOtherAccount = {
      ...registerAccount(a1, alice, signList(alice, 1, [a1])),
      proof: proofOf(a1, bob.accountKey.publicKey),
    };
    expectError(runner, forOtherAccount, 'SERVER_PROOF_INVALID');
    const linked = world();
    expectError(
      linked,
      { ...registerDevice(a2, alice), proof: proofOf(a2, bob.accountKey.publicKey) },
      'SERVER_PROOF_INVALID',
    );
  });

  it('lets only the primary create an account with a list naming exactly it, once [WP-SRV-05]', () => {
    const runner = createServerRunner(ENV);
    expectError(
      runner,
      { ...registerAccount(a2, alice, signList(alice, 1, [a2])) },
      'SERVER_MALFORMED_REQUEST',
    );
    expectError(
      runner,
      registerAccount(a1, alice, signList(alice, 1, [a1, a2])),
      'SERVER_DEVICE_LIST_MISMATCH',
    );
    const other = newDevice('alice', 1, 'alice.1.other');
    expectError(
      runner,
      registerAccount(a1, alice, signList(alice, 1, [other])),
      'SERVER_DEVICE_LIST_MISMATCH',
    );
    const request = registerAccount(a1, alice, signList(alice, 1, [a1]));
    expectOk(runner, request);
    expect(bundles(runner, 'alice', [1])[0]?.preKeyId).toBe(1);
    // A byte-identical retry is ok and does not re-add the one-time prekey just handed out.
    expectOk(runner, request);
    expect(deviceAbstract(runner, a1.address)?.oneTimePreKeys).toBe(1);
    expectError(runner, registerAccount(a1, alice, signList(alice, 5, [a1])), 'SERVER_USER_EXISTS');
  });

  it('answers ok a registration retried with an older list after the primary changed the list, and changes nothing [WP-SRV-05]', () => {
    // alice's primary registered under list version 1; the list is at version 2 since.
    const runner = world();
    const before = serverOf(runner);
    expect(expectOk(runner, registerAccount(a1, alice, signList(alice, 1, [a1])))).toEqual({ kind: 'ok' });
    expect(serverOf(runner)).toBe(before);
    // Not a retry: another identity under an old list, or a list as new as the current one.
    const other = newDevice('alice', 1, 'alice.1.other');
    expectError(runner, registerAccount(other, alice, signList(alice, 1, [other])), 'SERVER_USER_EXISTS');
    expectError(runner, registerAccount(a1, alice, signList(alice, 2, [a1])), 'SERVER_USER_EXISTS');
  });

  it('resets an account under a new account key and a greater version, dropping old mailboxes by rule [WP-SRV-06]', () => {
    const runner = world();
    expectOk(runner, send(b1, 'alice', 1, [a1, a2]));
    const newKey = newAccount('alice', 'alice-reset');
    const fresh = newDevice('alice', 1, 'alice.1.reinstalled');
    const reset = (version: number): ServerRequest => ({
      ...registerAccount(
        fresh,
        newKey,
        signDeviceList(
          c,
          newKey.accountKey.privateKey,
          {
            userId: 'alice',
            version,
            accountKey: newKey.accountKey.publicKey,
            devices: [
              { deviceId: 1, identityKey: fresh.identity.publicKey, registrationId: fresh.registrationId },
            ],
          },
          newKey.rng.randomBytes(64),
        ),
      ),
    });
    expectError(runner, reset(2), 'SERVER_DEVICE_LIST_STALE');
    expectOk(runner, reset(3));
    const account = accountAbstract(runner, 'alice');
    expect(account.accountKeyFp).toBe(fingerprint(c, newKey.accountKey.publicKey));
    expect(account.devices.map((d) => d.deviceId)).toEqual([1]);
    expect(account.devices[0]?.mailboxDepth).toBe(0);
    expect(account.droppedByRevocation).toEqual([
      { deviceId: 1, count: 1 },
      { deviceId: 2, count: 1 },
    ]);
    // WP-SRV-19: the dedup window survives the reset.
    expect(account.dedupEntries).toBe(1);
  });

  it('registers a linked device only with the identity the current list names, and a retry changes nothing [WP-SRV-07]', () => {
    const runner = createServerRunner(ENV);
    expectError(runner, registerDevice(a2, alice), 'SERVER_UNKNOWN_USER');
    expectOk(runner, registerAccount(a1, alice, signList(alice, 1, [a1])));
    expectError(runner, registerDevice(a2, alice), 'SERVER_DEVICE_NOT_LISTED');
    expectOk(runner, {
      kind: 'update-device-list',
      device: a1.address,
      deviceList: signList(alice, 2, [a1, a2]),
    });
    expectError(
      runner,
      { ...registerDevice(a2, alice), registrationId: a2.registrationId + 1 },
      'SERVER_DEVICE_NOT_LISTED',
    );
    expect(deviceAbstract(runner, a2.address)).toBeUndefined();
    expectOk(runner, registerDevice(a2, alice));
    bundles(runner, 'alice', [2]);
    expectOk(runner, registerDevice(a2, alice));
    expect(deviceAbstract(runner, a2.address)?.oneTimePreKeys).toBe(1);
  });

  it('installs a newer list signed by the current account key only; a retry of the current list is ok [WP-SRV-10]', () => {
    const runner = world();
    const other = newAccount('alice', 'alice-other');
    const foreign = signDeviceList(
      c,
      other.accountKey.privateKey,
      {
        userId: 'alice',
        version: 9,
        accountKey: other.accountKey.publicKey,
        devices: [{ deviceId: 1, identityKey: a1.identity.publicKey, registrationId: a1.registrationId }],
      },
      other.rng.randomBytes(64),
    );
    expectError(
      runner,
      { kind: 'update-device-list', device: a1.address, deviceList: foreign },
      'SERVER_DEVICE_LIST_ACCOUNT_KEY_CHANGED',
    );
    const current = runner.handle({ kind: 'get-device-list', userId: 'alice' }, T0);
    if (current.kind !== 'device-list') throw new Error('no list');
    expect(
      runner.handle({ kind: 'update-device-list', device: a2.address, deviceList: current.deviceList }, T0),
    ).toEqual({ kind: 'ok' });
  });

  it('revokes a device the new list drops or changes: registration, prekeys and mailbox go, envelopes count as dropped [WP-SRV-11]', () => {
    const runner = world();
    expectOk(runner, send(b1, 'alice', 1, [a1, a2]));
    expectOk(runner, send(b1, 'alice', 2, [a1, a2]));
    const a3 = newDevice('alice', 3);
    expectOk(runner, {
      kind: 'update-device-list',
      device: a1.address,
      deviceList: signList(alice, 3, [a1, a3]),
    });
    const account = accountAbstract(runner, 'alice');
    expect(account.listedDeviceIds).toEqual([1, 3]);
    expect(account.devices.map((d) => d.deviceId)).toEqual([1]);
    expect(account.droppedByRevocation).toEqual([{ deviceId: 2, count: 2 }]);
    expectError(runner, { kind: 'fetch', device: a2.address }, 'SERVER_UNKNOWN_DEVICE');
    expectError(runner, { kind: 'fetch', device: a3.address }, 'SERVER_UNKNOWN_DEVICE');
    // A reinstall into slot 3 with another identity than listed is refused; the listed one registers.
    expectError(
      runner,
      registerDevice(newDevice('alice', 3, 'alice.3.other'), alice),
      'SERVER_DEVICE_NOT_LISTED',
    );
    expectOk(runner, registerDevice(a3, alice));
    expect(deviceAbstract(runner, a3.address)).toMatchObject({
      mailboxDepth: 0,
      nextEnvelopeId: 1,
      droppedByRevocation: 0,
    });
  });

  it('lets only current devices act, and returns the current list byte for byte [WP-SRV-12]', () => {
    const runner = world();
    expectError(runner, { kind: 'fetch', device: { userId: 'carol', deviceId: 1 } }, 'SERVER_UNKNOWN_USER');
    expectError(runner, { kind: 'fetch', device: { userId: 'alice', deviceId: 5 } }, 'SERVER_UNKNOWN_DEVICE');
    expectError(runner, { kind: 'get-bundles', userId: 'alice', deviceIds: [1, 5] }, 'SERVER_UNKNOWN_DEVICE');
    const list = signList(alice, 3, [a1, a2]);
    expectOk(runner, { kind: 'update-device-list', device: a2.address, deviceList: list });
    expect(runner.handle({ kind: 'get-device-list', userId: 'alice' }, T0)).toEqual({
      kind: 'device-list',
      deviceList: list,
    });
    // `constructor` is a valid user id and names no account (own-property lookups only).
    expectError(runner, { kind: 'get-device-list', userId: 'constructor' }, 'SERVER_UNKNOWN_USER');
  });
});

describe('prekeys and bundles', () => {
  const replenish = (device: Device, preKeys: unknown): ServerRequest =>
    ({ kind: 'upload-prekeys', device: device.address, preKeys }) as ServerRequest;
  const own = a1.upload;
  const lastResort = own.kyberPreKeys[1];
  const kyber = own.kyberPreKeys[0];
  const oneTime = own.oneTimePreKeys[0];
  if (lastResort === undefined || kyber === undefined || oneTime === undefined) throw new Error('fixture');
  const base = { signedPreKey: own.signedPreKey, oneTimePreKeys: [], kyberPreKeys: [] };

  it('validates uploads against the device identity key, every check with its code [WP-SRV-08]', () => {
    const runner = world();
    const many = Array.from({ length: MAX_ONE_TIME_PREKEYS + 1 }, (_, i) => ({
      keyId: 100 + i,
      publicKey: oneTime.publicKey,
    }));
    expectError(runner, replenish(a1, { ...base, oneTimePreKeys: many }), 'SERVER_PREKEY_LIMIT');
    expectError(
      runner,
      replenish(a1, { ...base, signedPreKey: { ...own.signedPreKey, keyId: -1 } }),
      'SERVER_PREKEY_INVALID',
    );
    expectError(
      runner,
      replenish(a1, { ...base, kyberPreKeys: [{ ...kyber, lastResort: 'yes' }] }),
      'SERVER_PREKEY_INVALID',
    );
    expectError(
      runner,
      replenish(a1, {
        ...base,
        kyberPreKeys: [
          { ...lastResort, keyId: 7 },
          { ...lastResort, keyId: 8 },
        ],
      }),
      'SERVER_PREKEY_INVALID',
    );
    expectError(
      runner,
      replenish(a1, {
        ...base,
        oneTimePreKeys: [
          { keyId: 9, publicKey: oneTime.publicKey },
          { keyId: 9, publicKey: oneTime.publicKey },
        ],
      }),
      'SERVER_PREKEY_DUPLICATE_ID',
    );
    expect(
      expectError(
        runner,
        replenish(a1, {
          ...base,
          oneTimePreKeys: [{ keyId: 9, publicKey: Uint8Array.of(5, ...new Uint8Array(32)) }],
        }),
        'SERVER_PREKEY_INVALID',
      ),
    ).toContain('KEY_LOW_ORDER');
    expect(
      expectError(
        runner,
        replenish(a1, {
          ...base,
          kyberPreKeys: [{ ...kyber, keyId: 9, publicKey: kyber.publicKey.slice(1) }],
        }),
        'SERVER_PREKEY_INVALID',
      ),
    ).toContain('KEM_BAD_LENGTH');
    expectError(
      runner,
      replenish(a1, { ...base, signedPreKey: { ...own.signedPreKey, signature: new Uint8Array(63) } }),
      'SERVER_PREKEY_INVALID',
    );
    // Signed by another device's identity key.
    expectError(runner, replenish(a1, a2.upload), 'SERVER_PREKEY_SIGNATURE_INVALID');
    expectError(
      runner,
      replenish(a1, {
        ...base,
        kyberPreKeys: a2.upload.kyberPreKeys.slice(0, 1).map((k) => ({ ...k, keyId: 9 })),
      }),
      'SERVER_PREKEY_SIGNATURE_INVALID',
    );
    // Against the stored keys: the last resort's id 2 is no one-time Kyber id, and totals are bounded
    // per device.
    expectError(
      runner,
      replenish(a1, { ...base, kyberPreKeys: [{ ...kyber, keyId: 2 }] }),
      'SERVER_PREKEY_DUPLICATE_ID',
    );
    expectError(
      runner,
      replenish(a1, { ...base, oneTimePreKeys: many.slice(0, MAX_ONE_TIME_PREKEYS - 1) }),
      'SERVER_PREKEY_LIMIT',
    );
    // A registration must bring exactly one last resort.
    const fresh = createServerRunner(ENV);
    expectError(
      fresh,
      { ...registerAccount(a1, alice, signList(alice, 1, [a1])), preKeys: { ...own, kyberPreKeys: [kyber] } },
      'SERVER_PREKEY_INVALID',
    );
  });

  it('appends one-time keys and replaces the signed prekey and the last resort [WP-SRV-09]', () => {
    const runner = world();
    expectOk(
      runner,
      replenish(a1, {
        ...base,
        signedPreKey: { ...own.signedPreKey, keyId: 5 },
        oneTimePreKeys: [{ keyId: 3, publicKey: oneTime.publicKey }],
        kyberPreKeys: [
          { ...kyber, keyId: 3 },
          { ...lastResort, keyId: 4 },
        ],
      }),
    );
    expect(deviceAbstract(runner, a1.address)).toMatchObject({
      signedPreKeyId: 5,
      oneTimePreKeys: 3,
      oneTimeKyberPreKeys: 2,
      lastResortKyberPreKeyId: 4,
    });
  });

  it('answers a repeat of an applied upload ok and changes nothing, even after some of its keys went out [WP-SRV-09]', () => {
    const runner = world();
    const before = serverOf(runner);
    // alice.1's registration keys again (one-time EC 1 and 2, one-time Kyber 1, last resort 2).
    expect(runner.handle(deepFreeze(replenish(a1, own)), T0)).toEqual({ kind: 'ok' });
    expect(serverOf(runner)).toBe(before);
    expect(bundles(runner, 'alice', [1])[0]?.preKeyId).toBe(1);
    const served = serverOf(runner);
    expect(runner.handle(deepFreeze(replenish(a1, own)), T0)).toEqual({ kind: 'ok' });
    expect(serverOf(runner)).toBe(served);
    expect(deviceAbstract(runner, a1.address)).toMatchObject({ oneTimePreKeys: 1, oneTimeKyberPreKeys: 0 });
  });

  it('an upload reusing a stored one-time id under another key replaces every stored key of that kind [WP-SRV-09]', () => {
    const rng = seededRng('model-server-test/reused-id');
    // A device restored from an older copy of its state makes new keys under ids it had uploaded.
    const reusedEc = { keyId: 2, publicKey: generateKeyPair(c, rng).publicKey };
    const reusedKyber = signedKyber(a1.identity, rng, 1, false);
    const runner = world();
    expectOk(runner, replenish(a1, { ...base, oneTimePreKeys: [reusedEc] }));
    expect(deviceAbstract(runner, a1.address)).toMatchObject({ oneTimePreKeys: 1, oneTimeKyberPreKeys: 1 });
    const [first] = bundles(runner, 'alice', [1]);
    expect(first?.preKeyId).toBe(2);
    expect(first?.preKey).toEqual(reusedEc.publicKey);
    expect(bundles(runner, 'alice', [1])[0]?.preKeyId).toBeNull();
    const other = world();
    expectOk(other, replenish(a1, { ...base, kyberPreKeys: [reusedKyber] }));
    expect(deviceAbstract(other, a1.address)).toMatchObject({ oneTimePreKeys: 2, oneTimeKyberPreKeys: 1 });
    const [kyberFirst] = bundles(other, 'alice', [1]);
    expect(kyberFirst?.kyberPreKeyId).toBe(1);
    expect(kyberFirst?.kyberPreKey).toEqual(reusedKyber.publicKey);
    // Without a reused id the upload is appended as before.
    const appended = world();
    expectOk(appended, replenish(a1, { ...base, oneTimePreKeys: [{ ...reusedEc, keyId: 3 }] }));
    expect(deviceAbstract(appended, a1.address)).toMatchObject({ oneTimePreKeys: 3 });
  });

  it('adds no one-time key under an id it stored before, so a copy arriving after all its keys went out hands none out twice [WP-SRV-29]', () => {
    const rng = seededRng('model-server-test/id-floor');
    const runner = world();
    // alice.1 registered one-time EC 1, 2 and one-time Kyber 1: the floors start at 3 and 2.
    expect(deviceAbstract(runner, a1.address)).toMatchObject({
      oneTimePreKeyIdFloor: 3,
      kyberPreKeyIdFloor: 2,
    });
    const upload = replenish(a1, {
      ...base,
      oneTimePreKeys: [{ keyId: 3, publicKey: generateKeyPair(c, rng).publicKey }],
      kyberPreKeys: [signedKyber(a1.identity, rng, 3, false)],
    });
    expectOk(runner, upload);
    const handedOut: string[] = [];
    const drain = (): void => {
      for (;;) {
        const left = deviceAbstract(runner, a1.address);
        if (left?.oneTimePreKeys === 0 && left.oneTimeKyberPreKeys === 0) return;
        const [bundle] = bundles(runner, 'alice', [1]);
        if (bundle === undefined) throw new Error('no bundle');
        if (bundle.preKeyId !== null) handedOut.push(`ec ${bundle.preKeyId}`);
        if (bundle.kyberPreKeyId !== lastResort.keyId) handedOut.push(`kyber ${bundle.kyberPreKeyId}`);
      }
    };
    drain();
    expect(handedOut).toEqual(['ec 1', 'kyber 1', 'ec 2', 'kyber 3', 'ec 3']);
    // The copy names no stored key any more; it is answered ok and stores nothing.
    const drained = serverOf(runner);
    expect(runner.handle(deepFreeze(upload), T0)).toEqual({ kind: 'ok' });
    expect(deviceAbstract(runner, a1.address)).toMatchObject({
      oneTimePreKeys: 0,
      oneTimeKyberPreKeys: 0,
      oneTimePreKeyIdFloor: 4,
      kyberPreKeyIdFloor: 4,
    });
    expect(serverOf(runner)).toEqual(drained);
    drain();
    expect(new Set(handedOut).size).toBe(handedOut.length);
    // A greater id is still added.
    expectOk(
      runner,
      replenish(a1, {
        ...base,
        oneTimePreKeys: [{ keyId: 4, publicKey: generateKeyPair(c, rng).publicKey }],
      }),
    );
    expect(deviceAbstract(runner, a1.address)).toMatchObject({ oneTimePreKeys: 1, oneTimePreKeyIdFloor: 5 });
  });

  it('replaces the signed prekey only with a greater id; an older upload still adds its one-time keys [WP-SRV-28]', () => {
    const runner = world();
    expectOk(runner, replenish(a1, { ...base, signedPreKey: { ...own.signedPreKey, keyId: 9 } }));
    expectOk(
      runner,
      replenish(a1, {
        ...base,
        signedPreKey: { ...own.signedPreKey, keyId: 4 },
        oneTimePreKeys: [{ keyId: 3, publicKey: oneTime.publicKey }],
      }),
    );
    expectOk(runner, replenish(a1, { ...base, signedPreKey: { ...own.signedPreKey, keyId: 9 } }));
    expect(deviceAbstract(runner, a1.address)).toMatchObject({ signedPreKeyId: 9, oneTimePreKeys: 3 });
    expect(bundles(runner, 'alice', [1])[0]?.signedPreKeyId).toBe(9);
  });

  it('hands out each one-time prekey once, oldest first, then bundles without one [WP-SRV-13]', () => {
    const runner = world();
    const ids = [1, 2, 3].map(() => bundles(runner, 'alice', [1, 2]).map((b) => b.preKeyId));
    expect(ids).toEqual([
      [1, 1],
      [2, 2],
      [null, null],
    ]);
    const [bundle] = bundles(runner, 'alice', [1]);
    expect(bundle).toMatchObject({
      deviceId: 1,
      registrationId: a1.registrationId,
      signedPreKeyId: 1,
      preKey: null,
    });
    expect(bundle?.identityKey).toEqual(a1.identity.publicKey);
    // Nothing is handed out when any requested device is not current.
    const other = world();
    expectError(other, { kind: 'get-bundles', userId: 'alice', deviceIds: [1, 9] }, 'SERVER_UNKNOWN_DEVICE');
    expect(deviceAbstract(other, a1.address)?.oneTimePreKeys).toBe(2);
  });

  it('leaves out a listed device that has not registered, consuming nothing for it [WP-SRV-12] [WP-SRV-13]', () => {
    const runner = world();
    const b3 = newDevice('bob', 3);
    expectOk(runner, {
      kind: 'update-device-list',
      device: b1.address,
      deviceList: signList(bob, 3, [b1, b2, b3]),
    });
    const before = accountAbstract(runner, 'bob');
    // Only bob.3 requested: an empty answer, and nothing changes.
    expect(bundles(runner, 'bob', [3])).toEqual([]);
    expect(accountAbstract(runner, 'bob')).toEqual(before);
    // With registered devices: their bundles, in request order, bob.3 left out.
    const mixed = bundles(runner, 'bob', [2, 3, 1]);
    expect(mixed.map((b) => [b.deviceId, b.preKeyId, b.kyberPreKeyId])).toEqual([
      [2, 1, 1],
      [1, 1, 1],
    ]);
    // The client skips bob.3 and its send succeeds; once bob.3 registers, the next send misses it.
    expectOk(runner, send(a1, 'bob', 1, [b1, b2]));
    expectOk(runner, registerDevice(b3, bob));
    expect(expectRefusal(runner, send(a1, 'bob', 2, [b1, b2]))).toMatchObject({
      kind: 'mismatched-devices',
      missing: [3],
    });
    // bob.3's prekeys were untouched: its bundle carries its first one-time keys.
    expect(bundles(runner, 'bob', [3]).map((b) => [b.deviceId, b.preKeyId, b.kyberPreKeyId])).toEqual([
      [3, 1, 1],
    ]);
  });

  it('refuses a device the list does not name, even beside a listed unregistered one, consuming nothing [WP-SRV-12] [WP-SRV-13]', () => {
    const runner = world();
    const b3 = newDevice('bob', 3);
    expectOk(runner, {
      kind: 'update-device-list',
      device: b1.address,
      deviceList: signList(bob, 3, [b1, b2, b3]),
    });
    const message = expectError(
      runner,
      { kind: 'get-bundles', userId: 'bob', deviceIds: [1, 3, 4] },
      'SERVER_UNKNOWN_DEVICE',
    );
    expect(message).toBe('device 4 is not registered');
    expect(deviceAbstract(runner, b1.address)?.oneTimePreKeys).toBe(2);
    expect(bundles(runner, 'bob', [1])[0]).toMatchObject({ deviceId: 1, preKeyId: 1, kyberPreKeyId: 1 });
  });

  it('hands out a one-time Kyber prekey once, then the last resort, which is kept [WP-SRV-14]', () => {
    const runner = world();
    const kyberIds = [1, 2, 3].map(() => bundles(runner, 'bob', [2])[0]?.kyberPreKeyId);
    expect(kyberIds).toEqual([1, 2, 2]);
    expect(deviceAbstract(runner, b2.address)).toMatchObject({
      oneTimeKyberPreKeys: 0,
      lastResortKyberPreKeyId: 2,
    });
    expect(bundles(runner, 'bob', [2])[0]?.kyberPreKey).toEqual(b2.upload.kyberPreKeys[1]?.publicKey);
  });
});

describe('sends and mailboxes', () => {
  it('accepts a send only from a current device, and refuses one to an unknown user [WP-SRV-15]', () => {
    const runner = world();
    expectError(runner, send(newDevice('alice', 3), 'bob', 1, [b1, b2]), 'SERVER_UNKNOWN_DEVICE');
    expect(expectRefusal(runner, send(a1, 'carol', 1, []))).toEqual({ kind: 'unknown-user' });
  });

  it('refuses a send that does not address exactly the current devices, with missing, extra and the list [WP-SRV-16]', () => {
    const runner = world();
    const list = runner.handle({ kind: 'get-device-list', userId: 'bob' }, T0);
    if (list.kind !== 'device-list') throw new Error('no list');
    expect(expectRefusal(runner, send(a1, 'bob', 1, [b1, newDevice('bob', 7)]))).toEqual({
      kind: 'mismatched-devices',
      missing: [2],
      extra: [7],
      deviceList: list.deviceList,
    });
    // To the sender's own account: every other current device, never the sender itself.
    expect(expectRefusal(runner, send(a1, 'alice', 1, [a1, a2]))).toMatchObject({ missing: [], extra: [1] });
    expect(runner.handle(send(a1, 'alice', 2, [a2]), T0)).toMatchObject({
      kind: 'accepted',
      duplicate: false,
    });
    expectError(
      runner,
      { ...send(a1, 'bob', 3, [b1, b2]), messages: [copyFor(b1), copyFor(b2), copyFor(b2)] },
      'SERVER_SEND_DUPLICATE_DEVICE',
    );
  });

  it('refuses a copy for a registration id that is not current, with the list [WP-SRV-17]', () => {
    const runner = world();
    const request = {
      ...send(a1, 'bob', 1, [b1, b2]),
      messages: [copyFor(b1), copyFor(b2, 'x', b2.registrationId + 1)],
    };
    expect(expectRefusal(runner, request)).toMatchObject({ kind: 'stale-devices', stale: [2] });
  });

  it('checks a single-device send against that device alone [WP-SRV-18]', () => {
    const runner = world();
    expect(runner.handle({ ...send(a1, 'bob', 1, [b2]), onlyDevice: 2 }, T0)).toMatchObject({
      kind: 'accepted',
    });
    expectError(runner, { ...send(a1, 'bob', 2, [b1, b2]), onlyDevice: 2 }, 'SERVER_MALFORMED_REQUEST');
    expectError(runner, { ...send(a1, 'bob', 2, [b1]), onlyDevice: 2 }, 'SERVER_MALFORMED_REQUEST');
    expect(expectRefusal(runner, { ...send(a1, 'alice', 2, [a1]), onlyDevice: 1 })).toMatchObject({
      missing: [],
      extra: [1],
    });
    const stale = { ...send(a1, 'bob', 3, []), messages: [copyFor(b2, 'x', 1)], onlyDevice: 2 };
    expect(expectRefusal(runner, stale)).toMatchObject({ kind: 'stale-devices', stale: [2] });
  });

  it('answers an accepted (sender, message id) again as a duplicate and stores nothing, whatever changed [WP-SRV-19]', () => {
    const runner = world();
    expect(runner.handle(send(a1, 'bob', 1, [b1, b2]), T0)).toEqual({
      kind: 'accepted',
      messageId: messageId(1),
      duplicate: false,
    });
    expectOk(runner, { kind: 'update-device-list', device: b1.address, deviceList: signList(bob, 3, [b1]) });
    const before = serverOf(runner);
    expect(runner.handle(send(a1, 'bob', 1, [b1, b2]), T0)).toEqual({
      kind: 'accepted',
      messageId: messageId(1),
      duplicate: true,
    });
    expect(serverOf(runner)).toBe(before);
    expect(envelopes(runner, b1)).toHaveLength(1);
    // Another sender device with the same message id is a different pair.
    expect(runner.handle(send(a2, 'bob', 1, [b1]), T0)).toMatchObject({ duplicate: false });
  });

  it('remembers at most MESSAGE_ID_DEDUP_WINDOW pairs per account, forgetting the oldest [WP-SRV-19]', () => {
    const runner = world();
    for (let n = 1; n <= MESSAGE_ID_DEDUP_WINDOW + 1; n++) {
      const target = n % 2 === 0 ? b1 : b2;
      expectOk(runner, { ...send(a1, 'bob', n, [target]), onlyDevice: target.address.deviceId });
      if (n % 400 === 0) {
        for (const device of [b1, b2]) {
          const envelopeIds = envelopes(runner, device).map((e) => e.envelopeId);
          expectOk(runner, { kind: 'ack', device: device.address, envelopeIds });
        }
      }
    }
    expect(accountAbstract(runner, 'bob').dedupEntries).toBe(MESSAGE_ID_DEDUP_WINDOW);
    // Pair 1 has left the window; pair 2 is the oldest still in it.
    expect(runner.handle({ ...send(a1, 'bob', 2, [b1]), onlyDevice: 1 }, T0)).toMatchObject({
      duplicate: true,
    });
    expect(runner.handle({ ...send(a1, 'bob', 1, [b1]), onlyDevice: 1 }, T0)).toMatchObject({
      duplicate: false,
    });
  });

  it('refuses a send as a whole when any target mailbox is full, and nothing is stored [WP-SRV-20]', () => {
    const runner = world();
    for (let n = 1; n <= MAILBOX_CAPACITY; n++)
      expectOk(runner, { ...send(a1, 'bob', n, [b2]), onlyDevice: 2 });
    const refusal = expectRefusal(runner, send(a1, 'bob', MAILBOX_CAPACITY + 1, [b1, b2]));
    expect(refusal).toEqual({ kind: 'mailbox-full', deviceIds: [2] });
    expect(deviceAbstract(runner, b1.address)?.mailboxDepth).toBe(0);
    expectOk(runner, { kind: 'ack', device: b2.address, envelopeIds: [1] });
    expect(runner.handle(send(a1, 'bob', MAILBOX_CAPACITY + 1, [b1, b2]), T0)).toMatchObject({
      duplicate: false,
    });
  });

  it('stores each copy once with an increasing envelope id, the authenticated sender and server time [WP-SRV-21] [WP-SRV-26]', () => {
    const runner = world();
    const request = send(a1, 'bob', 1, [b1, b2]);
    expectOk(runner, request, T0 + 5);
    expectOk(runner, send(a2, 'bob', 2, [b1, b2]), T0 + 6);
    const [first, second] = envelopes(runner, b1);
    expect(first).toEqual({
      envelopeId: 1,
      messageId: messageId(1),
      sender: a1.address,
      type: 'whisper',
      bytes: text('ciphertext'),
      serverTimestamp: T0 + 5,
    });
    expect(second).toMatchObject({ envelopeId: 2, sender: a2.address, serverTimestamp: T0 + 6 });
    const stored = serverOf(runner).accounts['bob']?.registered['1']?.mailbox[0]?.bytes;
    expect(stored).not.toBe(request.kind === 'send' ? request.messages[0]?.bytes : undefined);
    const big = {
      ...send(a1, 'bob', 3, [b1, b2]),
      messages: [copyFor(b1), { ...copyFor(b2), bytes: new Uint8Array(MAX_ENVELOPE_SIZE + 1) }],
    };
    expectError(runner, big, 'SERVER_ENVELOPE_TOO_LARGE');
  });

  it('reads the planted bug server-drops-message where impl/ does: accepted, first copy never stored', () => {
    const runner = createServerRunner({ crypto: c, bugs: ['server-drops-message'] });
    for (const [account, primary, linked] of [[bob, b1, b2]] as const) {
      expectOk(runner, registerAccount(primary, account, signList(account, 1, [primary])));
      expectOk(runner, {
        kind: 'update-device-list',
        device: primary.address,
        deviceList: signList(account, 2, [primary, linked]),
      });
      expectOk(runner, registerDevice(linked, account));
    }
    expectOk(runner, registerAccount(a1, alice, signList(alice, 1, [a1])));
    expect(runner.handle(send(a1, 'bob', 1, [b1, b2]), T0)).toMatchObject({
      kind: 'accepted',
      duplicate: false,
    });
    expect(deviceAbstract(runner, b1.address)).toMatchObject({ mailboxDepth: 0, nextEnvelopeId: 1 });
    expect(deviceAbstract(runner, b2.address)).toMatchObject({ mailboxDepth: 1, nextEnvelopeId: 2 });
  });

  it('redelivers until acknowledged; acks remove and ignore unknown ids [WP-SRV-22]', () => {
    const runner = world();
    expectOk(runner, send(a1, 'bob', 1, [b1, b2]));
    expectOk(runner, send(a1, 'bob', 2, [b1, b2]));
    expect(envelopes(runner, b1).map((e) => e.envelopeId)).toEqual([1, 2]);
    expect(envelopes(runner, b1).map((e) => e.envelopeId)).toEqual([1, 2]);
    expectOk(runner, { kind: 'ack', device: b1.address, envelopeIds: [1, 99] });
    expectOk(runner, { kind: 'ack', device: b1.address, envelopeIds: [1] });
    expect(envelopes(runner, b1).map((e) => e.envelopeId)).toEqual([2]);
    expect(envelopes(runner, b2).map((e) => e.envelopeId)).toEqual([1, 2]);
  });
});

describe('provisioning relay and blobs', () => {
  const address = 'new-device-token-0001';

  it('holds one message per address, hands it out on every get, refuses another and purges after the TTL [WP-SRV-23]', () => {
    const runner = createServerRunner(ENV);
    expectOk(runner, { kind: 'provision-put', address, bytes: text('link me') });
    expectOk(runner, { kind: 'provision-put', address, bytes: text('link me') });
    expectError(
      runner,
      { kind: 'provision-put', address, bytes: text('other') },
      'SERVER_PROVISION_OCCUPIED',
    );
    expectError(
      runner,
      {
        kind: 'provision-put',
        address: 'another-address-0001',
        bytes: new Uint8Array(MAX_PROVISIONING_SIZE + 1),
      },
      'SERVER_PROVISION_TOO_LARGE',
    );
    expect(runner.handle({ kind: 'provision-get', address }, T0)).toEqual({
      kind: 'provision',
      bytes: text('link me'),
    });
    // The get removed nothing: a new device whose answer was lost reads the same bytes again.
    expect(runner.handle({ kind: 'provision-get', address }, T0 + 1)).toEqual({
      kind: 'provision',
      bytes: text('link me'),
    });
    expect(abstractServerOf(c, runner.snapshot().context).provisioningEntries).toBe(1);
    // Reading does not free the address: a different message is still refused.
    expectError(runner, { kind: 'provision-put', address, bytes: text('late') }, 'SERVER_PROVISION_OCCUPIED');
    expect(runner.handle({ kind: 'provision-get', address }, T0 + PROVISIONING_TTL - 1)).toEqual({
      kind: 'provision',
      bytes: text('link me'),
    });
    expect(runner.handle({ kind: 'provision-get', address }, T0 + PROVISIONING_TTL)).toEqual({
      kind: 'provision',
      bytes: null,
    });
    expect(abstractServerOf(c, runner.snapshot().context).provisioningEntries).toBe(0);
  });

  it('stores blobs by content address only, idempotently, bounded in size [WP-SRV-24]', () => {
    const runner = createServerRunner(ENV);
    const bytes = text('encrypted attachment');
    const blobId = toHex(c.sha256(bytes));
    expectError(
      runner,
      { kind: 'blob-put', blobId: toHex(c.sha256(text('x'))), bytes },
      'SERVER_BLOB_ID_MISMATCH',
    );
    expectOk(runner, { kind: 'blob-put', blobId, bytes });
    expectOk(runner, { kind: 'blob-put', blobId, bytes });
    expect(runner.handle({ kind: 'blob-get', blobId }, T0)).toEqual({ kind: 'blob', bytes });
    expect(runner.handle({ kind: 'blob-get', blobId: '0'.repeat(64) }, T0)).toEqual({
      kind: 'blob',
      bytes: null,
    });
    const huge = new Uint8Array(MAX_BLOB_SIZE + 1);
    expectError(runner, { kind: 'blob-put', blobId: '0'.repeat(64), bytes: huge }, 'SERVER_BLOB_TOO_LARGE');
  });

  it('bounds accounts, provisioning messages and blobs [WP-SRV-25]', () => {
    const full = world();
    const sample = serverOf(full).accounts['bob'];
    if (sample === undefined) throw new Error('fixture');
    const accounts = Object.fromEntries(
      Array.from({ length: MAX_ACCOUNTS }, (_, i) => [`user-${i}`, sample]),
    );
    const crowded = createServerRunner(ENV, { server: { ...emptyModelServer(), accounts } });
    expectError(crowded, registerAccount(a1, alice, signList(alice, 1, [a1])), 'SERVER_STORE_FULL');

    const relay = createServerRunner(ENV);
    for (let i = 0; i < MAX_PROVISIONING_ENTRIES; i++) {
      expectOk(relay, {
        kind: 'provision-put',
        address: `address-${String(i).padStart(10, '0')}`,
        bytes: Uint8Array.of(1),
      });
    }
    expectError(
      relay,
      { kind: 'provision-put', address: 'one-address-too-many', bytes: Uint8Array.of(1) },
      'SERVER_STORE_FULL',
    );
    expectOk(
      relay,
      { kind: 'provision-put', address: 'one-address-too-many', bytes: Uint8Array.of(1) },
      T0 + PROVISIONING_TTL,
    );

    const blobs = Object.fromEntries(
      Array.from({ length: MAX_BLOBS }, (_, i) => [i.toString(16).padStart(64, '0'), new Uint8Array(0)]),
    );
    const store = createServerRunner(ENV, { server: { ...emptyModelServer(), blobs } });
    const bytes = text('one blob too many');
    expectError(store, { kind: 'blob-put', blobId: toHex(c.sha256(bytes)), bytes }, 'SERVER_STORE_FULL');
  });
});
