/**
 * The honest server (WHITEPAPER.md, "Server", WP-SRV-01 … WP-SRV-26): every rule path, every
 * refusal and error, hostile requests of every kind, and a fast-check property that no accepted
 * message is ever lost or duplicated in a mailbox. Accounts use real keys: prekeys from
 * impl/prekeys.ts, device lists and registration proofs signed with spec/device-list.ts.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { nodeProvider } from '../spec/crypto/node.js';
import { registrationProofMessage, signDeviceList, signRegistrationProof } from '../spec/device-list.js';
import type { SignedDeviceList } from '../spec/device-list-types.js';
import { ERROR_RULES, InvariantError, UsageError, type ErrorCode } from '../spec/errors.js';
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
import type { DeviceAddress, MessageId } from '../spec/identity.js';
import { generateKeyPair, type KeyPair } from '../spec/keys.js';
import { seededRng, type Rng } from '../spec/rng.js';
import type {
  Envelope,
  OutgoingDeviceMessage,
  PreKeyUpload,
  SendRefusal,
  ServerRequest,
  ServerResponse,
} from '../spec/server-api.js';
import { deepFreeze } from '../test/support/parties.js';
import { EMPTY_SESSION_RECORD } from './session-state.js';
import {
  generateKyberPreKey,
  generateOneTimePreKey,
  generatePreKeyState,
  generateSignedPreKey,
  type PreKeyState,
} from './prekeys.js';
import { decryptMessage, encryptMessage, processPreKeyBundle } from './session-record.js';
import { encodeServerState } from './server-codec.js';
import { abstractServer } from './server-abstract.js';
import {
  currentDevices,
  droppedByRevocation,
  emptyServerState,
  handleRequest,
  mailboxDepth,
  type ServerState,
  type ServerStep,
} from './server.js';

const c = nodeProvider;
const ENV = { crypto: c } as const;
const T0 = 1_700_000_000_000;
const SMALL = { oneTimePreKeys: 2, oneTimeKyberPreKeys: 1 } as const;

// ---------------------------------------------------------------------------------------------
// Fixtures: devices, accounts, requests
// ---------------------------------------------------------------------------------------------

interface Device {
  readonly address: DeviceAddress;
  readonly keys: PreKeyState;
  readonly rng: Rng;
}

interface Account {
  readonly userId: string;
  readonly accountKey: KeyPair;
  readonly rng: Rng;
}

function newDevice(
  userId: string,
  deviceId: number,
  seed = `${userId}.${deviceId}`,
  options = SMALL,
): Device {
  const rng = seededRng(`server-test/${seed}`);
  return { address: { userId, deviceId }, keys: generatePreKeyState({ crypto: c, rng }, options), rng };
}

function newAccount(userId: string, seed = userId): Account {
  const rng = seededRng(`server-test/account/${seed}`);
  return { userId, accountKey: generateKeyPair(c, rng), rng };
}

function uploadOf(keys: PreKeyState): PreKeyUpload {
  const signed = keys.signedPreKeys[keys.signedPreKeys.length - 1];
  if (signed === undefined) throw new Error('no signed prekey');
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
          identityKey: d.keys.identityKeyPair.publicKey,
          registrationId: d.keys.registrationId,
        })),
    },
    signer.rng.randomBytes(64),
  );
}

function proofOf(device: Device, accountKey: Uint8Array): Uint8Array {
  const message = registrationProofMessage(
    device.address,
    device.keys.identityKeyPair.publicKey,
    device.keys.registrationId,
    accountKey,
  );
  return signRegistrationProof(
    c,
    device.keys.identityKeyPair.privateKey,
    message,
    device.rng.randomBytes(64),
  );
}

function registerAccountRequest(
  device: Device,
  account: Account,
  deviceList: SignedDeviceList,
): Extract<ServerRequest, { kind: 'register-account' }> {
  return {
    kind: 'register-account',
    device: device.address,
    identityKey: device.keys.identityKeyPair.publicKey,
    registrationId: device.keys.registrationId,
    deviceList,
    proof: proofOf(device, account.accountKey.publicKey),
    preKeys: uploadOf(device.keys),
  };
}

function registerDeviceRequest(
  device: Device,
  account: Account,
): Extract<ServerRequest, { kind: 'register-device' }> {
  return {
    kind: 'register-device',
    device: device.address,
    identityKey: device.keys.identityKeyPair.publicKey,
    registrationId: device.keys.registrationId,
    proof: proofOf(device, account.accountKey.publicKey),
    preKeys: uploadOf(device.keys),
  };
}

function step(state: ServerState, request: ServerRequest, now = T0): ServerStep {
  return handleRequest(ENV, state, request, now);
}

/** Runs a request that must succeed (anything but an error or a refusal) and returns the new state. */
function ok(state: ServerState, request: ServerRequest, now = T0): ServerState {
  const result = step(state, request, now);
  if (result.response.kind === 'error' || result.response.kind === 'refused') {
    throw new Error(`${request.kind} failed: ${JSON.stringify(result.response)}`);
  }
  return result.state;
}

/** A request, frozen, that must fail with `code`, leaving the very same state object. */
function expectError(
  state: ServerState,
  request: ServerRequest,
  code: ErrorCode,
  options: { readonly now?: number; readonly snapshot?: boolean } = {},
): ServerStep {
  const frozen = deepFreeze(state);
  const before = options.snapshot === false ? '' : encodeServerState(frozen);
  const result = step(frozen, deepFreeze(request), options.now ?? T0);
  expect(result.response).toMatchObject({ kind: 'error', code, rule: ERROR_RULES[code] });
  expect(result.state).toBe(frozen);
  if (options.snapshot !== false) expect(encodeServerState(result.state)).toBe(before);
  return result;
}

/** A send that must be refused, leaving the very same state object. */
function expectRefusal(state: ServerState, request: ServerRequest): SendRefusal {
  const frozen = deepFreeze(state);
  const result = step(frozen, deepFreeze(request));
  if (result.response.kind !== 'refused') throw new Error(`expected a refusal, got ${result.response.kind}`);
  expect(result.state).toBe(frozen);
  return result.response.refusal;
}

/** Hostile requests are built from untyped values on purpose: the server must survive any shape. */
function hostile(value: unknown): ServerRequest {
  return value as ServerRequest;
}

const messageId = (n: number): MessageId => n.toString(16).padStart(32, '0');
const text = (s: string): Uint8Array => new TextEncoder().encode(s);

function copyFor(
  device: Device,
  body = 'ciphertext',
  registrationId = device.keys.registrationId,
): OutgoingDeviceMessage {
  return { deviceId: device.address.deviceId, registrationId, type: 'whisper', bytes: text(body) };
}

function sendRequest(
  sender: Device,
  recipient: string,
  id: MessageId,
  targets: readonly Device[],
  body = 'ciphertext',
): Extract<ServerRequest, { kind: 'send' }> {
  return {
    kind: 'send',
    sender: sender.address,
    messageId: id,
    recipient,
    messages: targets.map((t) => copyFor(t, body)),
  };
}

function envelopesOf(state: ServerState, device: Device): readonly Envelope[] {
  const response = step(state, { kind: 'fetch', device: device.address }).response;
  if (response.kind !== 'envelopes') throw new Error(`fetch failed: ${JSON.stringify(response)}`);
  return response.envelopes;
}

function bundlesOf(
  state: ServerState,
  userId: string,
  deviceIds: number[],
): { state: ServerState; response: ServerResponse } {
  return step(state, { kind: 'get-bundles', userId, deviceIds });
}

// The world most tests start from: alice (devices 1, 2) and bob (devices 1, 2), all registered.
const alice = newAccount('alice');
const a1 = newDevice('alice', 1);
const a2 = newDevice('alice', 2);
const bob = newAccount('bob');
const b1 = newDevice('bob', 1);
const b2 = newDevice('bob', 2);

function buildWorld(): ServerState {
  let state = emptyServerState();
  for (const [account, primary, linked] of [
    [alice, a1, a2],
    [bob, b1, b2],
  ] as const) {
    state = ok(state, registerAccountRequest(primary, account, signList(account, 1, [primary])));
    state = ok(state, {
      kind: 'update-device-list',
      device: primary.address,
      deviceList: signList(account, 2, [primary, linked]),
    });
    state = ok(state, registerDeviceRequest(linked, account));
  }
  return deepFreeze(state);
}
const WORLD = buildWorld();

// ---------------------------------------------------------------------------------------------
// WP-SRV-01: validation and atomicity
// ---------------------------------------------------------------------------------------------

describe('request validation', () => {
  const badAddress = { userId: 'Not Valid', deviceId: 1 };
  const badDevice = { userId: 'alice', deviceId: 128 };
  const cases: readonly (readonly [string, unknown])[] = [
    ['no kind', {}],
    ['unknown kind', { kind: 'drop-table' }],
    ['null request', null],
    [
      'register-account from a malformed address',
      { ...registerAccountRequest(a1, alice, signList(alice, 9, [a1])), device: badAddress },
    ],
    [
      'register-account with a short identity key',
      { ...registerAccountRequest(a1, alice, signList(alice, 9, [a1])), identityKey: new Uint8Array(32) },
    ],
    [
      'register-account with a low-order identity key',
      {
        ...registerAccountRequest(a1, alice, signList(alice, 9, [a1])),
        identityKey: Uint8Array.of(5, ...new Uint8Array(32)),
      },
    ],
    [
      'register-account with registration id 0',
      { ...registerAccountRequest(a1, alice, signList(alice, 9, [a1])), registrationId: 0 },
    ],
    [
      'register-account with a non-integer registration id',
      { ...registerAccountRequest(a1, alice, signList(alice, 9, [a1])), registrationId: 1.5 },
    ],
    [
      'register-account with a proof that is not bytes',
      { ...registerAccountRequest(a1, alice, signList(alice, 9, [a1])), proof: 'sig' },
    ],
    [
      'register-account with a list that is not signed',
      {
        ...registerAccountRequest(a1, alice, signList(alice, 9, [a1])),
        deviceList: { list: new Uint8Array(3) },
      },
    ],
    ['register-device from device 128', { ...registerDeviceRequest(a2, alice), device: badDevice }],
    [
      'register-device with a 34-byte identity key',
      { ...registerDeviceRequest(a2, alice), identityKey: new Uint8Array(34) },
    ],
    [
      'upload-prekeys from a malformed address',
      { kind: 'upload-prekeys', device: badAddress, preKeys: uploadOf(a1.keys) },
    ],
    ['upload-prekeys with no preKeys', { kind: 'upload-prekeys', device: a1.address, preKeys: null }],
    [
      'upload-prekeys with preKeys missing arrays',
      { kind: 'upload-prekeys', device: a1.address, preKeys: { signedPreKey: {} } },
    ],
    [
      'update-device-list from a malformed address',
      { kind: 'update-device-list', device: badAddress, deviceList: signList(alice, 3, [a1]) },
    ],
    [
      'update-device-list with a list that is not bytes',
      { kind: 'update-device-list', device: a1.address, deviceList: { list: 'x', signature: 'y' } },
    ],
    ['get-device-list of a malformed user', { kind: 'get-device-list', userId: '../etc' }],
    ['get-bundles of a malformed user', { kind: 'get-bundles', userId: '', deviceIds: [1] }],
    ['get-bundles for device 0', { kind: 'get-bundles', userId: 'bob', deviceIds: [0] }],
    ['get-bundles naming a device twice', { kind: 'get-bundles', userId: 'bob', deviceIds: [1, 1] }],
    ['get-bundles without a list', { kind: 'get-bundles', userId: 'bob', deviceIds: 'all' }],
    [
      'send with a malformed message id',
      { ...sendRequest(a1, 'bob', messageId(1), [b1, b2]), messageId: 'xyz' },
    ],
    [
      'send to a malformed recipient',
      { ...sendRequest(a1, 'bob', messageId(1), [b1, b2]), recipient: 'Bob' },
    ],
    [
      'send from a malformed sender',
      { ...sendRequest(a1, 'bob', messageId(1), [b1, b2]), sender: badAddress },
    ],
    [
      'send with messages that are not a list',
      { ...sendRequest(a1, 'bob', messageId(1), [b1, b2]), messages: {} },
    ],
    [
      'send with an unknown envelope type',
      { ...sendRequest(a1, 'bob', messageId(1), [b1]), messages: [{ ...copyFor(b1), type: 'plaintext' }] },
    ],
    [
      'send with bytes that are not bytes',
      { ...sendRequest(a1, 'bob', messageId(1), [b1]), messages: [{ ...copyFor(b1), bytes: 'hello' }] },
    ],
    [
      'send with a negative registration id',
      { ...sendRequest(a1, 'bob', messageId(1), [b1]), messages: [{ ...copyFor(b1), registrationId: -1 }] },
    ],
    ['send with a malformed onlyDevice', { ...sendRequest(a1, 'bob', messageId(1), [b1]), onlyDevice: 0 }],
    ['fetch from a malformed address', { kind: 'fetch', device: badAddress }],
    ['ack with ids that are not integers', { kind: 'ack', device: b1.address, envelopeIds: ['1'] }],
    [
      'ack with more ids than a mailbox holds',
      {
        kind: 'ack',
        device: b1.address,
        envelopeIds: Array.from({ length: MAILBOX_CAPACITY + 1 }, (_, i) => i),
      },
    ],
    ['provision-put to a short address', { kind: 'provision-put', address: 'abc', bytes: new Uint8Array(1) }],
    [
      'provision-put to an address with a slash',
      { kind: 'provision-put', address: 'a/bcdefghijklmnopq', bytes: new Uint8Array(1) },
    ],
    ['provision-put without bytes', { kind: 'provision-put', address: 'abcdefghijklmnop', bytes: [1, 2] }],
    ['provision-get from a malformed address', { kind: 'provision-get', address: 42 }],
    ['blob-put with an uppercase id', { kind: 'blob-put', blobId: 'A'.repeat(64), bytes: new Uint8Array(1) }],
    ['blob-put without bytes', { kind: 'blob-put', blobId: 'a'.repeat(64), bytes: null }],
    ['blob-get with a short id', { kind: 'blob-get', blobId: 'abc' }],
  ];
  it.each(cases)('refuses %s and leaves the state untouched [WP-SRV-01]', (_name, request) => {
    expectError(WORLD, hostile(request), 'SERVER_MALFORMED_REQUEST');
  });

  it('throws UsageError for a clock that is not a non-negative safe integer [WP-SRV-01]', () => {
    expect(() => step(WORLD, { kind: 'fetch', device: b1.address }, -1)).toThrow(UsageError);
    expect(() => step(WORLD, { kind: 'fetch', device: b1.address }, 1.5)).toThrow(UsageError);
  });

  it('never mutates its inputs on success: deep-frozen state and request [WP-SRV-01]', () => {
    const before = encodeServerState(WORLD);
    const request = deepFreeze(sendRequest(a1, 'bob', messageId(1), [b1, b2]));
    const result = step(WORLD, request);
    expect(result.response).toMatchObject({ kind: 'accepted', duplicate: false });
    expect(encodeServerState(WORLD)).toBe(before);
    expect(result.state).not.toBe(WORLD);
  });
});

// ---------------------------------------------------------------------------------------------
// Accounts, lists, proofs: WP-SRV-02 … WP-SRV-07
// ---------------------------------------------------------------------------------------------

describe('accounts and device lists', () => {
  it('refuses a list signed for another user, a bad signature, and garbage [WP-SRV-02]', () => {
    const carol = newAccount('carol');
    const c1 = newDevice('carol', 1);
    const forAlice = registerAccountRequest(c1, carol, signList(alice, 1, [a1]));
    expectError(emptyServerState(), forAlice, 'SERVER_DEVICE_LIST_INVALID');
    const good = signList(carol, 1, [c1]);
    const tampered = {
      list: good.list,
      signature: Uint8Array.from(good.signature, (b, i) => (i === 0 ? b ^ 1 : b)),
    };
    expectError(
      emptyServerState(),
      registerAccountRequest(c1, carol, tampered),
      'SERVER_DEVICE_LIST_INVALID',
    );
    const garbage = { list: text('not a device list'), signature: good.signature };
    expectError(emptyServerState(), registerAccountRequest(c1, carol, garbage), 'SERVER_DEVICE_LIST_INVALID');
    // update-device-list checks the same way.
    const badUpdate = signList(alice, 3, [a1, a2]);
    expectError(
      WORLD,
      {
        kind: 'update-device-list',
        device: a1.address,
        deviceList: { list: badUpdate.list, signature: good.signature },
      },
      'SERVER_DEVICE_LIST_INVALID',
    );
    expectError(
      WORLD,
      { kind: 'update-device-list', device: a1.address, deviceList: signList(bob, 3, [b1, b2]) },
      'SERVER_DEVICE_LIST_INVALID',
    );
  });

  it('refuses a list whose version does not increase [WP-SRV-03]', () => {
    // WORLD holds alice's list version 2; a different list with version 2 or 1 is stale.
    expectError(
      WORLD,
      { kind: 'update-device-list', device: a1.address, deviceList: signList(alice, 2, [a1]) },
      'SERVER_DEVICE_LIST_STALE',
    );
    expectError(
      WORLD,
      { kind: 'update-device-list', device: a1.address, deviceList: signList(alice, 1, [a1, a2]) },
      'SERVER_DEVICE_LIST_STALE',
    );
    // An account reset must move the version forward too.
    const aliceNew = newAccount('alice', 'alice-reset-stale');
    const a1New = newDevice('alice', 1, 'alice.1.reset-stale');
    expectError(
      WORLD,
      registerAccountRequest(a1New, aliceNew, signList(aliceNew, 2, [a1New])),
      'SERVER_DEVICE_LIST_STALE',
    );
  });

  it('requires proof of possession of the identity key at every registration [WP-SRV-04]', () => {
    const carol = newAccount('carol');
    const c1 = newDevice('carol', 1);
    const request = registerAccountRequest(c1, carol, signList(carol, 1, [c1]));
    // A proof by another key, a proof for another account key, a truncated proof.
    const mallory = newDevice('carol', 1, 'mallory');
    const wrongSigner = signRegistrationProof(
      c,
      mallory.keys.identityKeyPair.privateKey,
      registrationProofMessage(
        c1.address,
        c1.keys.identityKeyPair.publicKey,
        c1.keys.registrationId,
        carol.accountKey.publicKey,
      ),
      mallory.rng.randomBytes(64),
    );
    expectError(emptyServerState(), { ...request, proof: wrongSigner }, 'SERVER_PROOF_INVALID');
    expectError(
      emptyServerState(),
      { ...request, proof: proofOf(c1, alice.accountKey.publicKey) },
      'SERVER_PROOF_INVALID',
    );
    expectError(
      emptyServerState(),
      { ...request, proof: request.proof.subarray(0, 63) },
      'SERVER_PROOF_INVALID',
    );
    // register-device: a linked device's proof must name the account key of the current list.
    const b3 = newDevice('bob', 3);
    const listed = ok(WORLD, {
      kind: 'update-device-list',
      device: b1.address,
      deviceList: signList(bob, 3, [b1, b2, b3]),
    });
    expectError(
      listed,
      { ...registerDeviceRequest(b3, bob), proof: proofOf(b3, alice.accountKey.publicKey) },
      'SERVER_PROOF_INVALID',
    );
    expectError(
      listed,
      { ...registerDeviceRequest(b3, bob), proof: proofOf(b2, bob.accountKey.publicKey) },
      'SERVER_PROOF_INVALID',
    );
  });

  it('registers an account whose list names exactly its primary device [WP-SRV-05]', () => {
    const carol = newAccount('carol');
    const c1 = newDevice('carol', 1);
    const list = signList(carol, 1, [c1]);
    const state = ok(emptyServerState(), registerAccountRequest(c1, carol, list));
    expect(currentDevices(state, 'carol')).toEqual([1]);
    expect(step(state, { kind: 'get-device-list', userId: 'carol' }).response).toEqual({
      kind: 'device-list',
      deviceList: list,
    });
    expect(mailboxDepth(state, c1.address)).toBe(0);
  });

  it('refuses a user id in use, a list not naming exactly the device, and a non-primary registrant [WP-SRV-05]', () => {
    const state = WORLD;
    // Same account key, new list: the user id is in use.
    expectError(state, registerAccountRequest(a1, alice, signList(alice, 7, [a1])), 'SERVER_USER_EXISTS');
    const carol = newAccount('carol');
    const c1 = newDevice('carol', 1);
    const c2 = newDevice('carol', 2);
    expectError(
      emptyServerState(),
      registerAccountRequest(c1, carol, signList(carol, 1, [c1, c2])),
      'SERVER_DEVICE_LIST_MISMATCH',
    );
    const otherKey = newDevice('carol', 1, 'carol.1.other');
    expectError(
      emptyServerState(),
      registerAccountRequest(c1, carol, signList(carol, 1, [otherKey])),
      'SERVER_DEVICE_LIST_MISMATCH',
    );
    const request = registerAccountRequest(c1, carol, signList(carol, 1, [c1]));
    expectError(
      emptyServerState(),
      { ...request, registrationId: c1.keys.registrationId + 1 },
      'SERVER_DEVICE_LIST_MISMATCH',
    );
    // Only the primary (device 1) registers an account.
    const c2only = registerAccountRequest(c2, carol, signList(carol, 1, [c2]));
    expectError(emptyServerState(), c2only, 'SERVER_MALFORMED_REQUEST');
  });

  it('answers a retried account registration ok without re-adding its prekeys [WP-SRV-05]', () => {
    const carol = newAccount('carol');
    const c1 = newDevice('carol', 1);
    const request = registerAccountRequest(c1, carol, signList(carol, 1, [c1]));
    const registered = ok(emptyServerState(), request);
    const consumed = bundlesOf(registered, 'carol', [1]).state;
    const retried = step(consumed, request);
    expect(retried.response).toEqual({ kind: 'ok' });
    expect(retried.state).toBe(consumed);
  });

  it('answers ok a registration retried with an older list after the primary changed the list, and changes nothing [WP-SRV-05]', () => {
    const carol = newAccount('carol');
    const c1 = newDevice('carol', 1);
    const c2 = newDevice('carol', 2);
    const request = registerAccountRequest(c1, carol, signList(carol, 1, [c1]));
    const registered = ok(emptyServerState(), request);
    // The primary linked a device (list version 2), then was restored to before its registration
    // was answered and retries it.
    const moved = ok(registered, {
      kind: 'update-device-list',
      device: c1.address,
      deviceList: signList(carol, 2, [c1, c2]),
    });
    const retried = step(moved, request);
    expect(retried.response).toEqual({ kind: 'ok' });
    expect(retried.state).toBe(moved);
    // Not a retry: another identity under an old list, or a list as new as the current one.
    const other = newDevice('carol', 1, 'carol.1.other');
    expectError(
      moved,
      registerAccountRequest(other, carol, signList(carol, 1, [other])),
      'SERVER_USER_EXISTS',
    );
    expectError(moved, registerAccountRequest(c1, carol, signList(carol, 2, [c1])), 'SERVER_USER_EXISTS');
  });

  it('an account reset replaces the account and drops every old mailbox by rule [WP-SRV-06]', () => {
    let state = ok(WORLD, sendRequest(b1, 'alice', messageId(1), [a1, a2]));
    state = ok(state, sendRequest(b1, 'alice', messageId(2), [a1, a2]));
    const aliceNew = newAccount('alice', 'alice-reset');
    const a1New = newDevice('alice', 1, 'alice.1.reset');
    const newList = signList(aliceNew, 3, [a1New]);
    state = ok(state, registerAccountRequest(a1New, aliceNew, newList));
    expect(step(state, { kind: 'get-device-list', userId: 'alice' }).response).toEqual({
      kind: 'device-list',
      deviceList: newList,
    });
    expect(currentDevices(state, 'alice')).toEqual([1]);
    expect(mailboxDepth(state, a1.address)).toBe(0);
    expect(droppedByRevocation(state, a1.address)).toBe(2);
    expect(droppedByRevocation(state, a2.address)).toBe(2);
    // The old linked device is gone: no bundle, no mailbox; the new primary's bundle has its key.
    expectError(state, { kind: 'get-bundles', userId: 'alice', deviceIds: [2] }, 'SERVER_UNKNOWN_DEVICE');
    expectError(state, { kind: 'fetch', device: a2.address }, 'SERVER_UNKNOWN_DEVICE');
    const bundles = bundlesOf(state, 'alice', [1]).response;
    expect(bundles.kind === 'bundles' && bundles.bundles[0]?.identityKey).toEqual(
      a1New.keys.identityKeyPair.publicKey,
    );
    // Old senders are told the device set changed (a sender's own check sees the new account key).
    expect(expectRefusal(state, sendRequest(b1, 'alice', messageId(3), [a1, a2]))).toMatchObject({
      kind: 'mismatched-devices',
      missing: [],
      extra: [2],
    });
  });

  it('registers a linked device the current list names, and refuses one it does not [WP-SRV-07]', () => {
    const b3 = newDevice('bob', 3);
    // Not in the list yet.
    expectError(WORLD, registerDeviceRequest(b3, bob), 'SERVER_DEVICE_NOT_LISTED');
    const listed = ok(WORLD, {
      kind: 'update-device-list',
      device: b1.address,
      deviceList: signList(bob, 3, [b1, b2, b3]),
    });
    // Listed, but with another identity key or registration id.
    const impostor = newDevice('bob', 3, 'impostor');
    expectError(listed, registerDeviceRequest(impostor, bob), 'SERVER_DEVICE_NOT_LISTED');
    expectError(
      listed,
      { ...registerDeviceRequest(b3, bob), registrationId: b3.keys.registrationId + 1 },
      'SERVER_DEVICE_NOT_LISTED',
    );
    // Unknown account.
    const carol = newAccount('carol');
    expectError(listed, registerDeviceRequest(newDevice('carol', 2), carol), 'SERVER_UNKNOWN_USER');
    const registered = ok(listed, registerDeviceRequest(b3, bob));
    expect(currentDevices(registered, 'bob')).toEqual([1, 2, 3]);
    // A retry changes nothing (the one-time keys handed out since stay handed out).
    const consumed = bundlesOf(registered, 'bob', [3]).state;
    const retried = step(consumed, registerDeviceRequest(b3, bob));
    expect(retried.response).toEqual({ kind: 'ok' });
    expect(retried.state).toBe(consumed);
  });

  it('treats a registered device that differs from its list entry as a broken invariant [WP-SRV-07]', () => {
    const account = WORLD.accounts['bob'];
    const device = account?.devices['2'];
    if (account === undefined || device === undefined) throw new Error('fixture');
    const broken: ServerState = {
      ...WORLD,
      accounts: {
        ...WORLD.accounts,
        bob: {
          ...account,
          devices: { ...account.devices, '2': { ...device, registrationId: device.registrationId + 1 } },
        },
      },
    };
    expect(() => step(broken, registerDeviceRequest(b2, bob))).toThrow(InvariantError);
  });
});

// ---------------------------------------------------------------------------------------------
// Prekeys: WP-SRV-08, WP-SRV-09, WP-SRV-13, WP-SRV-14
// ---------------------------------------------------------------------------------------------

describe('prekey directory', () => {
  const carol = newAccount('carol');
  const c1 = newDevice('carol', 1);
  const base = registerAccountRequest(c1, carol, signList(carol, 1, [c1]));
  const upload = base.preKeys;
  const withUpload = (preKeys: unknown): ServerRequest => hostile({ ...base, preKeys });
  const spk = upload.signedPreKey;
  const [k1, k2] = upload.kyberPreKeys;
  if (k1 === undefined || k2 === undefined) throw new Error('fixture');
  const flip = (b: Uint8Array, i = 1): Uint8Array => Uint8Array.from(b, (x, j) => (j === i ? x ^ 1 : x));

  it('refuses bad prekey encodings [WP-SRV-08]', () => {
    const empty = emptyServerState();
    expectError(
      empty,
      withUpload({ ...upload, signedPreKey: { ...spk, publicKey: spk.publicKey.subarray(0, 32) } }),
      'SERVER_PREKEY_INVALID',
    );
    expectError(
      empty,
      withUpload({
        ...upload,
        oneTimePreKeys: [{ keyId: 9, publicKey: Uint8Array.of(5, ...new Uint8Array(32)) }],
      }),
      'SERVER_PREKEY_INVALID',
    );
    expectError(
      empty,
      withUpload({ ...upload, kyberPreKeys: [{ ...k1, publicKey: k1.publicKey.subarray(0, 100) }, k2] }),
      'SERVER_PREKEY_INVALID',
    );
    expectError(
      empty,
      withUpload({
        ...upload,
        kyberPreKeys: [{ ...k1, publicKey: Uint8Array.of(0x0a, ...k1.publicKey.subarray(1)) }, k2],
      }),
      'SERVER_PREKEY_INVALID',
    );
    expectError(
      empty,
      withUpload({ ...upload, signedPreKey: { ...spk, signature: spk.signature.subarray(0, 63) } }),
      'SERVER_PREKEY_INVALID',
    );
    expectError(
      empty,
      withUpload({ ...upload, signedPreKey: { ...spk, keyId: -1 } }),
      'SERVER_PREKEY_INVALID',
    );
    expectError(
      empty,
      withUpload({ ...upload, kyberPreKeys: [{ ...k1, lastResort: 'yes' }, k2] }),
      'SERVER_PREKEY_INVALID',
    );
    expectError(empty, withUpload({ ...upload, oneTimePreKeys: [null] }), 'SERVER_PREKEY_INVALID');
  });

  it('refuses a registration without exactly one last-resort Kyber prekey [WP-SRV-08]', () => {
    expectError(emptyServerState(), withUpload({ ...upload, kyberPreKeys: [k1] }), 'SERVER_PREKEY_INVALID');
    expectError(
      emptyServerState(),
      withUpload({ ...upload, kyberPreKeys: [{ ...k1, lastResort: true }, k2] }),
      'SERVER_PREKEY_INVALID',
    );
  });

  it('refuses prekey signatures that do not verify under the identity key [WP-SRV-08]', () => {
    expectError(
      emptyServerState(),
      withUpload({ ...upload, signedPreKey: { ...spk, signature: flip(spk.signature) } }),
      'SERVER_PREKEY_SIGNATURE_INVALID',
    );
    expectError(
      emptyServerState(),
      withUpload({ ...upload, kyberPreKeys: [k1, { ...k2, signature: flip(k2.signature) }] }),
      'SERVER_PREKEY_SIGNATURE_INVALID',
    );
    // A key signed by another identity.
    const other = newDevice('carol', 1, 'other-signer');
    expectError(
      emptyServerState(),
      withUpload({ ...upload, signedPreKey: uploadOf(other.keys).signedPreKey }),
      'SERVER_PREKEY_SIGNATURE_INVALID',
    );
  });

  it('refuses repeated prekey ids and uploads over the limit [WP-SRV-08]', () => {
    const [o1] = upload.oneTimePreKeys;
    if (o1 === undefined) throw new Error('fixture');
    expectError(
      emptyServerState(),
      withUpload({ ...upload, oneTimePreKeys: [o1, o1] }),
      'SERVER_PREKEY_DUPLICATE_ID',
    );
    expectError(
      emptyServerState(),
      withUpload({ ...upload, kyberPreKeys: [k1, { ...k2, keyId: k1.keyId }] }),
      'SERVER_PREKEY_DUPLICATE_ID',
    );
    const many = Array.from({ length: MAX_ONE_TIME_PREKEYS + 1 }, (_, i) => ({
      keyId: i,
      publicKey: o1.publicKey,
    }));
    expectError(emptyServerState(), withUpload({ ...upload, oneTimePreKeys: many }), 'SERVER_PREKEY_LIMIT');
    const manyKyber = Array.from({ length: MAX_ONE_TIME_PREKEYS + 1 }, (_, i) => ({ ...k1, keyId: i }));
    expectError(
      emptyServerState(),
      withUpload({ ...upload, kyberPreKeys: [...manyKyber, k2] }),
      'SERVER_PREKEY_LIMIT',
    );
  });

  it('upload-prekeys appends one-time keys and replaces the signed and last-resort keys [WP-SRV-09]', () => {
    const env = { crypto: c, rng: seededRng('server-test/replenish') };
    const identity = b1.keys.identityKeyPair;
    const newSigned = generateSignedPreKey(env, identity, 7);
    const newOneTime = [generateOneTimePreKey(env, 50), generateOneTimePreKey(env, 51)];
    const newLastResort = generateKyberPreKey(env, identity, 60, true);
    // Exhaust bob.1's one-time keys first (2 EC, 1 Kyber).
    let state = bundlesOf(WORLD, 'bob', [1]).state;
    state = bundlesOf(state, 'bob', [1]).state;
    state = ok(state, {
      kind: 'upload-prekeys',
      device: b1.address,
      preKeys: {
        signedPreKey: { keyId: 7, publicKey: newSigned.keyPair.publicKey, signature: newSigned.signature },
        oneTimePreKeys: newOneTime.map((k) => ({ keyId: k.keyId, publicKey: k.keyPair.publicKey })),
        kyberPreKeys: [
          {
            keyId: 60,
            publicKey: newLastResort.publicKey,
            signature: newLastResort.signature,
            lastResort: true,
          },
        ],
      },
    });
    const first = bundlesOf(state, 'bob', [1]);
    expect(first.response).toMatchObject({
      kind: 'bundles',
      bundles: [{ signedPreKeyId: 7, preKeyId: 50, kyberPreKeyId: 60 }],
    });
    const second = bundlesOf(first.state, 'bob', [1]);
    expect(second.response).toMatchObject({
      kind: 'bundles',
      bundles: [{ preKeyId: 51, kyberPreKeyId: 60 }],
    });
  });

  it('upload-prekeys replaces the signed prekey only with a newer id; an older or equal one keeps the stored key [WP-SRV-28]', () => {
    const env = { crypto: c, rng: seededRng('server-test/signed-prekey-order') };
    const identity = b1.keys.identityKeyPair;
    const upload = (keyId: number, oneTimePreKeyId?: number): ServerRequest => {
      const signed = generateSignedPreKey(env, identity, keyId);
      const oneTime = oneTimePreKeyId === undefined ? [] : [generateOneTimePreKey(env, oneTimePreKeyId)];
      return {
        kind: 'upload-prekeys',
        device: b1.address,
        preKeys: {
          signedPreKey: { keyId, publicKey: signed.keyPair.publicKey, signature: signed.signature },
          oneTimePreKeys: oneTime.map((k) => ({ keyId: k.keyId, publicKey: k.keyPair.publicKey })),
          kyberPreKeys: [],
        },
      };
    };
    const served = (state: ServerState) => {
      const response = bundlesOf(state, 'bob', [1]).response;
      if (response.kind !== 'bundles') throw new Error('no bundle');
      return { keyId: response.bundles[0]?.signedPreKeyId, publicKey: response.bundles[0]?.signedPreKey };
    };
    const newer = upload(9);
    if (newer.kind !== 'upload-prekeys') throw new Error('fixture');
    const afterNewer = ok(WORLD, newer);
    const expected = { keyId: 9, publicKey: newer.preKeys.signedPreKey.publicKey };
    expect(served(afterNewer)).toEqual(expected);
    // A delayed copy of an older upload, or another key under the same id, leaves the stored key.
    expect(served(ok(afterNewer, upload(8)))).toEqual(expected);
    expect(served(ok(afterNewer, upload(9)))).toEqual(expected);
    // The rest of an older upload is merged as WP-SRV-09 says.
    const merged = ok(afterNewer, upload(3, 77));
    expect(served(merged)).toEqual(expected);
    const before = abstractServer(c, afterNewer).accounts.find((a) => a.userId === 'bob')?.devices[0];
    const after = abstractServer(c, merged).accounts.find((a) => a.userId === 'bob')?.devices[0];
    expect(after?.oneTimePreKeys).toBe((before?.oneTimePreKeys ?? 0) + 1);
    expect(after?.signedPreKeyId).toBe(9);
  });

  it('upload-prekeys answers a repeat of an applied upload ok and changes nothing [WP-SRV-09]', () => {
    // bob.1's registration upload, sent again (its answer lost): its one-time EC id 1 and one-time
    // Kyber id 1 are still stored with the same keys.
    const repeat: ServerRequest = { kind: 'upload-prekeys', device: b1.address, preKeys: uploadOf(b1.keys) };
    const frozen = deepFreeze(WORLD);
    const result = step(frozen, deepFreeze(repeat));
    expect(result.response).toEqual({ kind: 'ok' });
    expect(result.state).toBe(frozen);
    // A repeat after some of its keys went out does not bring those keys back.
    const served = bundlesOf(WORLD, 'bob', [1]);
    const after = step(served.state, repeat);
    expect(after.response).toEqual({ kind: 'ok' });
    expect(after.state).toBe(served.state);
  });

  it('upload-prekeys that reuses a stored one-time id under another key replaces that kind of stored keys [WP-SRV-09]', () => {
    const env = { crypto: c, rng: seededRng('server-test/reused-id') };
    const identity = b1.keys.identityKeyPair;
    const stored = uploadOf(b1.keys);
    const storedEc = stored.oneTimePreKeys.map((k) => k.keyId);
    const storedKyber = stored.kyberPreKeys.filter((k) => !k.lastResort).map((k) => k.keyId);
    const reusedEc = storedEc[storedEc.length - 1];
    const reusedKyber = storedKyber[0];
    if (storedEc.length < 2 || reusedEc === undefined || reusedKyber === undefined)
      throw new Error('fixture');
    // A device restored from an older copy of its state makes new keys under ids it had uploaded.
    const ec = generateOneTimePreKey(env, reusedEc);
    const kyber = generateKyberPreKey(env, identity, reusedKyber, false);
    const upload = (oneTime: boolean): ServerRequest => ({
      kind: 'upload-prekeys',
      device: b1.address,
      preKeys: {
        ...stored,
        oneTimePreKeys: oneTime ? [{ keyId: ec.keyId, publicKey: ec.keyPair.publicKey }] : [],
        kyberPreKeys: oneTime
          ? []
          : [
              {
                keyId: kyber.keyId,
                publicKey: kyber.publicKey,
                signature: kyber.signature,
                lastResort: false,
              },
            ],
      },
    });
    const afterEc = ok(WORLD, upload(true));
    const devOf = (state: ServerState) =>
      abstractServer(c, state)
        .accounts.find((a) => a.userId === 'bob')
        ?.devices.find((d) => d.deviceId === 1);
    // Every stored one-time EC key went, the new one alone is left; the Kyber keys are untouched.
    expect(devOf(afterEc)?.oneTimePreKeys).toBe(1);
    expect(devOf(afterEc)?.oneTimeKyberPreKeys).toBe(devOf(WORLD)?.oneTimeKyberPreKeys);
    const first = bundlesOf(afterEc, 'bob', [1]);
    if (first.response.kind !== 'bundles') throw new Error('no bundle');
    expect(first.response.bundles[0]?.preKeyId).toBe(reusedEc);
    expect(first.response.bundles[0]?.preKey).toEqual(ec.keyPair.publicKey);
    const second = bundlesOf(first.state, 'bob', [1]);
    if (second.response.kind !== 'bundles') throw new Error('no bundle');
    expect(second.response.bundles[0]?.preKeyId).toBeNull();
    // The same for one-time Kyber keys.
    const afterKyber = ok(WORLD, upload(false));
    expect(devOf(afterKyber)?.oneTimeKyberPreKeys).toBe(1);
    expect(devOf(afterKyber)?.oneTimePreKeys).toBe(devOf(WORLD)?.oneTimePreKeys);
    const kyberBundle = bundlesOf(afterKyber, 'bob', [1]);
    if (kyberBundle.response.kind !== 'bundles') throw new Error('no bundle');
    expect(kyberBundle.response.bundles[0]?.kyberPreKeyId).toBe(reusedKyber);
    expect(kyberBundle.response.bundles[0]?.kyberPreKey).toEqual(kyber.publicKey);
  });

  it('upload-prekeys stores no one-time key under an id stored before: a copy arriving after all its keys went out hands none out twice [WP-SRV-29]', () => {
    const env = { crypto: c, rng: seededRng('server-test/id-floor') };
    const identity = b1.keys.identityKeyPair;
    const stored = uploadOf(b1.keys);
    const ec = generateOneTimePreKey(env, 40);
    const kyber = generateKyberPreKey(env, identity, 41, false);
    const replenish = (ecKey: typeof ec, kyberKey: typeof kyber): ServerRequest => ({
      kind: 'upload-prekeys',
      device: b1.address,
      preKeys: {
        signedPreKey: stored.signedPreKey,
        oneTimePreKeys: [{ keyId: ecKey.keyId, publicKey: ecKey.keyPair.publicKey }],
        kyberPreKeys: [
          {
            keyId: kyberKey.keyId,
            publicKey: kyberKey.publicKey,
            signature: kyberKey.signature,
            lastResort: false,
          },
        ],
      },
    });
    const devOf = (state: ServerState) =>
      abstractServer(c, state)
        .accounts.find((a) => a.userId === 'bob')
        ?.devices.find((d) => d.deviceId === 1);
    const lastResortId = stored.kyberPreKeys.find((k) => k.lastResort)?.keyId;
    // Hand out bundles until bob.1 has no one-time key of either kind left, noting what went out.
    const handedOut: string[] = [];
    const drain = (from: ServerState): ServerState => {
      let state = from;
      for (;;) {
        const dev = devOf(state);
        if (dev?.oneTimePreKeys === 0 && dev.oneTimeKyberPreKeys === 0) return state;
        const served = bundlesOf(state, 'bob', [1]);
        if (served.response.kind !== 'bundles') throw new Error('no bundle');
        const bundle = served.response.bundles[0];
        if (bundle === undefined) throw new Error('no bundle');
        if (bundle.preKeyId !== null) handedOut.push(`ec ${bundle.preKeyId}`);
        if (bundle.kyberPreKeyId !== lastResortId) handedOut.push(`kyber ${bundle.kyberPreKeyId}`);
        state = served.state;
      }
    };
    const request = replenish(ec, kyber);
    const applied = drain(ok(WORLD, request));
    expect(handedOut).toContain('ec 40');
    expect(handedOut).toContain('kyber 41');
    // The copy (a resend whose answer was lost, or a network duplicate) names no stored key now.
    const frozen = deepFreeze(applied);
    const copy = step(frozen, deepFreeze(request));
    expect(copy.response).toEqual({ kind: 'ok' });
    expect(devOf(copy.state)).toEqual(devOf(applied));
    drain(copy.state);
    expect(new Set(handedOut).size).toBe(handedOut.length);
    // Nor does another key under an id at or below the floor join; a greater id still does.
    const below = ok(
      applied,
      replenish(generateOneTimePreKey(env, 39), generateKyberPreKey(env, identity, 41, false)),
    );
    expect(devOf(below)).toMatchObject({ oneTimePreKeys: 0, oneTimeKyberPreKeys: 0 });
    const above = ok(
      applied,
      replenish(generateOneTimePreKey(env, 42), generateKyberPreKey(env, identity, 43, false)),
    );
    expect(devOf(above)).toMatchObject({
      oneTimePreKeys: 1,
      oneTimeKyberPreKeys: 1,
      oneTimePreKeyIdFloor: 43,
      kyberPreKeyIdFloor: 44,
    });
  });

  it('upload-prekeys refuses a one-time Kyber id equal to the last resort, totals over the limit and unknown devices [WP-SRV-08] [WP-SRV-09]', () => {
    const stored = uploadOf(b1.keys);
    const replenish = (preKeys: PreKeyUpload): ServerRequest => ({
      kind: 'upload-prekeys',
      device: b1.address,
      preKeys,
    });
    const lastResort = stored.kyberPreKeys.find((k) => k.lastResort);
    if (lastResort === undefined) throw new Error('fixture');
    expectError(
      WORLD,
      replenish({ ...stored, oneTimePreKeys: [], kyberPreKeys: [{ ...lastResort, lastResort: false }] }),
      'SERVER_PREKEY_DUPLICATE_ID',
    );
    const [o1] = stored.oneTimePreKeys;
    if (o1 === undefined) throw new Error('fixture');
    const fill = Array.from({ length: MAX_ONE_TIME_PREKEYS - 1 }, (_, i) => ({
      keyId: 1000 + i,
      publicKey: o1.publicKey,
    }));
    expectError(
      WORLD,
      replenish({ ...stored, oneTimePreKeys: fill, kyberPreKeys: [] }),
      'SERVER_PREKEY_LIMIT',
    );
    expectError(
      WORLD,
      { kind: 'upload-prekeys', device: { userId: 'bob', deviceId: 9 }, preKeys: stored },
      'SERVER_UNKNOWN_DEVICE',
    );
    expectError(
      WORLD,
      { kind: 'upload-prekeys', device: { userId: 'nobody', deviceId: 1 }, preKeys: stored },
      'SERVER_UNKNOWN_USER',
    );
    // Keys signed by another device's identity are refused for this one.
    expectError(
      WORLD,
      replenish({ ...uploadOf(b2.keys), oneTimePreKeys: [], kyberPreKeys: [] }),
      'SERVER_PREKEY_SIGNATURE_INVALID',
    );
  });

  it('hands out each one-time EC prekey once, then bundles without one [WP-SRV-13]', () => {
    const first = bundlesOf(WORLD, 'bob', [1, 2]);
    expect(first.response).toMatchObject({
      kind: 'bundles',
      bundles: [
        { deviceId: 1, preKeyId: 1 },
        { deviceId: 2, preKeyId: 1 },
      ],
    });
    const second = bundlesOf(first.state, 'bob', [1]);
    expect(second.response).toMatchObject({ kind: 'bundles', bundles: [{ preKeyId: 2 }] });
    const third = bundlesOf(second.state, 'bob', [1]);
    expect(third.response).toMatchObject({ kind: 'bundles', bundles: [{ preKeyId: null, preKey: null }] });
    if (third.response.kind !== 'bundles') throw new Error('bundles');
    const bundle = third.response.bundles[0];
    expect(bundle?.identityKey).toEqual(b1.keys.identityKeyPair.publicKey);
    expect(bundle?.registrationId).toBe(b1.keys.registrationId);
    expect(bundle?.signedPreKey).toEqual(b1.keys.signedPreKeys[0]?.keyPair.publicKey);
    expect(bundle?.signedPreKeySignature).toEqual(b1.keys.signedPreKeys[0]?.signature);
  });

  it('refuses bundles of unknown users and devices, consuming nothing [WP-SRV-13]', () => {
    expectError(WORLD, { kind: 'get-bundles', userId: 'nobody', deviceIds: [1] }, 'SERVER_UNKNOWN_USER');
    // Device 1 exists, device 3 does not: nothing is handed out, not even device 1's key.
    expectError(WORLD, { kind: 'get-bundles', userId: 'bob', deviceIds: [1, 3] }, 'SERVER_UNKNOWN_DEVICE');
  });

  it('leaves out a listed device that has not registered, consuming nothing for it [WP-SRV-12] [WP-SRV-13]', () => {
    const b3 = newDevice('bob', 3);
    const listed = ok(WORLD, {
      kind: 'update-device-list',
      device: b1.address,
      deviceList: signList(bob, 3, [b1, b2, b3]),
    });
    // Only bob.3 requested: an empty answer, and the state is the very same object.
    const alone = bundlesOf(listed, 'bob', [3]);
    expect(alone.response).toEqual({ kind: 'bundles', bundles: [] });
    expect(alone.state).toBe(listed);
    // With registered devices: their bundles, in request order, bob.3 left out.
    const mixed = bundlesOf(listed, 'bob', [2, 3, 1]);
    expect(mixed.response).toMatchObject({
      kind: 'bundles',
      bundles: [
        { deviceId: 2, preKeyId: 1, kyberPreKeyId: 1 },
        { deviceId: 1, preKeyId: 1, kyberPreKeyId: 1 },
      ],
    });
    if (mixed.response.kind !== 'bundles') throw new Error('bundles');
    expect(mixed.response.bundles).toHaveLength(2);
    // The client skips bob.3 and its send succeeds; bob.3's prekeys were not touched.
    let state = ok(mixed.state, sendRequest(a1, 'bob', messageId(1), [b1, b2]));
    state = ok(state, registerDeviceRequest(b3, bob));
    expect(expectRefusal(state, sendRequest(a1, 'bob', messageId(2), [b1, b2]))).toMatchObject({
      kind: 'mismatched-devices',
      missing: [3],
    });
    expect(bundlesOf(state, 'bob', [3]).response).toMatchObject({
      kind: 'bundles',
      bundles: [{ deviceId: 3, preKeyId: 1, kyberPreKeyId: 1 }],
    });
  });

  it('refuses a device the list does not name, even beside a listed unregistered one, consuming nothing [WP-SRV-12] [WP-SRV-13]', () => {
    const b3 = newDevice('bob', 3);
    const listed = ok(WORLD, {
      kind: 'update-device-list',
      device: b1.address,
      deviceList: signList(bob, 3, [b1, b2, b3]),
    });
    const refused = expectError(
      listed,
      { kind: 'get-bundles', userId: 'bob', deviceIds: [1, 3, 4] },
      'SERVER_UNKNOWN_DEVICE',
    );
    expect(refused.response).toMatchObject({ message: 'device 4 is not registered' });
    // Device 1's one-time prekeys are still all there.
    expect(bundlesOf(listed, 'bob', [1]).response).toMatchObject({
      kind: 'bundles',
      bundles: [{ deviceId: 1, preKeyId: 1, kyberPreKeyId: 1 }],
    });
  });

  it('hands out a one-time Kyber prekey once, then keeps serving the last resort [WP-SRV-14]', () => {
    const first = bundlesOf(WORLD, 'bob', [1]);
    expect(first.response).toMatchObject({ kind: 'bundles', bundles: [{ kyberPreKeyId: 1 }] });
    let state = first.state;
    for (let i = 0; i < 3; i++) {
      const next = bundlesOf(state, 'bob', [1]);
      expect(next.response).toMatchObject({ kind: 'bundles', bundles: [{ kyberPreKeyId: 2 }] });
      if (next.response.kind !== 'bundles') throw new Error('bundles');
      const lastResort = b1.keys.kyberPreKeys.find((k) => k.lastResort);
      expect(next.response.bundles[0]?.kyberPreKey).toEqual(lastResort?.publicKey);
      expect(next.response.bundles[0]?.kyberPreKeySignature).toEqual(lastResort?.signature);
      state = next.state;
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Device lists and revocation: WP-SRV-10 … WP-SRV-12
// ---------------------------------------------------------------------------------------------

describe('device-list updates and revocation', () => {
  it('accepts a newer list under the current account key from a registered device [WP-SRV-10]', () => {
    const b3 = newDevice('bob', 3);
    const list = signList(bob, 3, [b1, b2, b3]);
    // Any registered device of the account may upload it (the signature is what counts).
    const state = ok(WORLD, { kind: 'update-device-list', device: b2.address, deviceList: list });
    expect(step(state, { kind: 'get-device-list', userId: 'bob' }).response).toEqual({
      kind: 'device-list',
      deviceList: list,
    });
    // A retry of the same upload is ok and changes nothing.
    const retried = step(state, { kind: 'update-device-list', device: b1.address, deviceList: list });
    expect(retried).toEqual({ state, response: { kind: 'ok' } });
    expect(retried.state).toBe(state);
  });

  it('refuses a list under another account key, and uploads by unregistered devices [WP-SRV-10]', () => {
    const thief = newAccount('bob', 'thief');
    expectError(
      WORLD,
      { kind: 'update-device-list', device: b1.address, deviceList: signList(bob, 3, [b1], thief) },
      'SERVER_DEVICE_LIST_ACCOUNT_KEY_CHANGED',
    );
    expectError(
      WORLD,
      {
        kind: 'update-device-list',
        device: { userId: 'bob', deviceId: 5 },
        deviceList: signList(bob, 3, [b1]),
      },
      'SERVER_UNKNOWN_DEVICE',
    );
    expectError(
      WORLD,
      {
        kind: 'update-device-list',
        device: { userId: 'nobody', deviceId: 1 },
        deviceList: signList(bob, 3, [b1]),
      },
      'SERVER_UNKNOWN_USER',
    );
  });

  it('revocation deletes the mailbox, prekeys and registration and counts the dropped messages [WP-SRV-11]', () => {
    let state = ok(WORLD, sendRequest(a1, 'bob', messageId(1), [b1, b2]));
    state = ok(state, sendRequest(a1, 'bob', messageId(2), [b1, b2]));
    state = ok(state, sendRequest(a1, 'bob', messageId(3), [b1, b2]));
    expect(mailboxDepth(state, b2.address)).toBe(3);
    state = ok(state, { kind: 'update-device-list', device: b1.address, deviceList: signList(bob, 3, [b1]) });
    expect(currentDevices(state, 'bob')).toEqual([1]);
    expect(mailboxDepth(state, b2.address)).toBe(0);
    expect(droppedByRevocation(state, b2.address)).toBe(3);
    expect(droppedByRevocation(state, b1.address)).toBe(0);
    expect(mailboxDepth(state, b1.address)).toBe(3);
    expectError(state, { kind: 'fetch', device: b2.address }, 'SERVER_UNKNOWN_DEVICE');
    expectError(state, { kind: 'get-bundles', userId: 'bob', deviceIds: [2] }, 'SERVER_UNKNOWN_DEVICE');
    expectError(state, sendRequest(b2, 'alice', messageId(4), [a1, a2]), 'SERVER_UNKNOWN_DEVICE');
    // Senders learn it from the server's device-set check.
    expect(expectRefusal(state, sendRequest(a1, 'bob', messageId(5), [b1, b2]))).toMatchObject({
      kind: 'mismatched-devices',
      missing: [],
      extra: [2],
    });
  });

  it('a list entry with a new identity revokes the old install until the new one registers [WP-SRV-11]', () => {
    let state = ok(WORLD, sendRequest(a1, 'bob', messageId(1), [b1, b2]));
    const b2New = newDevice('bob', 2, 'bob.2.reinstall');
    state = ok(state, {
      kind: 'update-device-list',
      device: b1.address,
      deviceList: signList(bob, 3, [b1, b2New]),
    });
    expect(currentDevices(state, 'bob')).toEqual([1]);
    expect(droppedByRevocation(state, b2.address)).toBe(1);
    state = ok(state, registerDeviceRequest(b2New, bob));
    expect(currentDevices(state, 'bob')).toEqual([1, 2]);
    expect(mailboxDepth(state, b2.address)).toBe(0);
  });

  it('current devices are those listed and registered; get-device-list serves the signed list [WP-SRV-12]', () => {
    const b3 = newDevice('bob', 3);
    const list = signList(bob, 3, [b1, b2, b3]);
    const state = ok(WORLD, { kind: 'update-device-list', device: b1.address, deviceList: list });
    // bob.3 is listed but has not registered: not current, no mailbox, not part of a send.
    expect(currentDevices(state, 'bob')).toEqual([1, 2]);
    expect(ok(state, sendRequest(a1, 'bob', messageId(1), [b1, b2]))).toBeDefined();
    expect(expectRefusal(state, sendRequest(a1, 'bob', messageId(1), [b1, b2, b3]))).toMatchObject({
      kind: 'mismatched-devices',
      extra: [3],
    });
    expect(currentDevices(state, 'nobody')).toEqual([]);
    expectError(state, { kind: 'get-device-list', userId: 'nobody' }, 'SERVER_UNKNOWN_USER');
    expectError(state, { kind: 'fetch', device: b3.address }, 'SERVER_UNKNOWN_DEVICE');
    expectError(state, { kind: 'ack', device: b3.address, envelopeIds: [] }, 'SERVER_UNKNOWN_DEVICE');
    expectError(state, { kind: 'fetch', device: { userId: 'nobody', deviceId: 1 } }, 'SERVER_UNKNOWN_USER');
    // Record lookups use own properties only: a user id that names an Object.prototype member.
    expectError(state, { kind: 'get-device-list', userId: 'constructor' }, 'SERVER_UNKNOWN_USER');
    expectError(
      state,
      { kind: 'fetch', device: { userId: 'constructor', deviceId: 1 } },
      'SERVER_UNKNOWN_USER',
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Sends: WP-SRV-15 … WP-SRV-21
// ---------------------------------------------------------------------------------------------

describe('sends', () => {
  it('refuses sends from unregistered devices and to unknown users [WP-SRV-15]', () => {
    expectError(
      WORLD,
      sendRequest({ ...a1, address: { userId: 'alice', deviceId: 9 } }, 'bob', messageId(1), [b1, b2]),
      'SERVER_UNKNOWN_DEVICE',
    );
    expectError(
      WORLD,
      sendRequest({ ...a1, address: { userId: 'nobody', deviceId: 1 } }, 'bob', messageId(1), [b1, b2]),
      'SERVER_UNKNOWN_USER',
    );
    expect(expectRefusal(WORLD, sendRequest(a1, 'nobody', messageId(1), [b1]))).toEqual({
      kind: 'unknown-user',
    });
  });

  it('refuses a send whose device set is not the current one, with missing and extra [WP-SRV-16]', () => {
    const listResponse = step(WORLD, { kind: 'get-device-list', userId: 'bob' }).response;
    if (listResponse.kind !== 'device-list') throw new Error('list');
    expect(expectRefusal(WORLD, sendRequest(a1, 'bob', messageId(1), [b1]))).toEqual({
      kind: 'mismatched-devices',
      missing: [2],
      extra: [],
      deviceList: listResponse.deviceList,
    });
    const ghost = { ...b2, address: { userId: 'bob', deviceId: 7 } };
    expect(expectRefusal(WORLD, sendRequest(a1, 'bob', messageId(1), [ghost, b1]))).toMatchObject({
      kind: 'mismatched-devices',
      missing: [2],
      extra: [7],
    });
    expect(expectRefusal(WORLD, sendRequest(a1, 'bob', messageId(1), []))).toMatchObject({
      missing: [1, 2],
      extra: [],
    });
  });

  it('a send to the own account excludes the sending device [WP-SRV-16]', () => {
    const state = ok(WORLD, sendRequest(a1, 'alice', messageId(1), [a2]));
    expect(mailboxDepth(state, a2.address)).toBe(1);
    expect(mailboxDepth(state, a1.address)).toBe(0);
    expect(expectRefusal(WORLD, sendRequest(a1, 'alice', messageId(1), [a1, a2]))).toMatchObject({
      missing: [],
      extra: [1],
    });
  });

  it('refuses a send naming a device twice [WP-SRV-16]', () => {
    expectError(WORLD, sendRequest(a1, 'bob', messageId(1), [b1, b2, b1]), 'SERVER_SEND_DUPLICATE_DEVICE');
  });

  it('refuses a send with a stale registration id after a reinstall [WP-SRV-17]', () => {
    const b2New = newDevice('bob', 2, 'bob.2.reinstall');
    let state = ok(WORLD, {
      kind: 'update-device-list',
      device: b1.address,
      deviceList: signList(bob, 3, [b1, b2New]),
    });
    state = ok(state, registerDeviceRequest(b2New, bob));
    // The sender still uses the old install's registration id for bob.2.
    expect(expectRefusal(state, sendRequest(a1, 'bob', messageId(1), [b1, b2]))).toMatchObject({
      kind: 'stale-devices',
      stale: [2],
    });
    expect(ok(state, sendRequest(a1, 'bob', messageId(1), [b1, b2New]))).toBeDefined();
  });

  it('a single-device send checks that device alone [WP-SRV-18]', () => {
    const only = (
      targets: readonly (typeof b1)[],
      onlyDevice: number,
      registrationId?: number,
    ): ServerRequest => ({
      ...sendRequest(a1, 'bob', messageId(1), targets),
      ...(registrationId === undefined
        ? {}
        : { messages: targets.map((t) => copyFor(t, 'x', registrationId)) }),
      onlyDevice,
    });
    const state = ok(WORLD, only([b2], 2));
    expect(mailboxDepth(state, b2.address)).toBe(1);
    expect(mailboxDepth(state, b1.address)).toBe(0);
    expectError(WORLD, only([b1, b2], 2), 'SERVER_MALFORMED_REQUEST');
    expectError(WORLD, only([b1], 2), 'SERVER_MALFORMED_REQUEST');
    const ghost = { ...b2, address: { userId: 'bob', deviceId: 7 } };
    expect(expectRefusal(WORLD, only([ghost], 7))).toMatchObject({
      kind: 'mismatched-devices',
      missing: [],
      extra: [7],
    });
    expect(expectRefusal(WORLD, only([b2], 2, b2.keys.registrationId + 1))).toMatchObject({
      kind: 'stale-devices',
      stale: [2],
    });
    // The sender's own device is never a target, not even alone.
    expect(
      expectRefusal(WORLD, { ...sendRequest(a1, 'alice', messageId(1), [a1]), onlyDevice: 1 }),
    ).toMatchObject({ extra: [1] });
  });

  it('a resent message id is acknowledged as a duplicate and stored nowhere [WP-SRV-19]', () => {
    const request = sendRequest(a1, 'bob', messageId(1), [b1, b2]);
    const first = step(WORLD, request);
    expect(first.response).toEqual({ kind: 'accepted', messageId: messageId(1), duplicate: false });
    const again = step(first.state, request);
    expect(again.response).toEqual({ kind: 'accepted', messageId: messageId(1), duplicate: true });
    expect(again.state).toBe(first.state);
    expect(mailboxDepth(again.state, b1.address)).toBe(1);
    // Even after the device set changed, the resend is a duplicate, not a refusal.
    const revoked = ok(first.state, {
      kind: 'update-device-list',
      device: b1.address,
      deviceList: signList(bob, 3, [b1]),
    });
    expect(step(revoked, request).response).toMatchObject({ kind: 'accepted', duplicate: true });
    // Another sender's message with the same id is its own message.
    const fromA2 = step(first.state, sendRequest(a2, 'bob', messageId(1), [b1, b2]));
    expect(fromA2.response).toMatchObject({ kind: 'accepted', duplicate: false });
  });

  it('forgets the oldest accepted message id beyond the dedup window [WP-SRV-19]', () => {
    // Sends from alice.1 to her own account with alice.2 revoked store nothing, so the window fills fast.
    let state = ok(WORLD, {
      kind: 'update-device-list',
      device: a1.address,
      deviceList: signList(alice, 3, [a1]),
    });
    for (let i = 0; i <= MESSAGE_ID_DEDUP_WINDOW; i++)
      state = ok(state, sendRequest(a1, 'alice', messageId(i), []));
    expect(
      step(state, sendRequest(a1, 'alice', messageId(MESSAGE_ID_DEDUP_WINDOW), [])).response,
    ).toMatchObject({ duplicate: true });
    expect(step(state, sendRequest(a1, 'alice', messageId(1), [])).response).toMatchObject({
      duplicate: true,
    });
    expect(step(state, sendRequest(a1, 'alice', messageId(0), [])).response).toMatchObject({
      duplicate: false,
    });
  });

  it('refuses a send when any target mailbox is full and stores nothing for anyone [WP-SRV-20]', () => {
    let state: ServerState = WORLD;
    for (let i = 0; i < MAILBOX_CAPACITY; i++) {
      state = ok(state, { ...sendRequest(a1, 'bob', messageId(i), [b2]), onlyDevice: 2 });
    }
    expect(mailboxDepth(state, b2.address)).toBe(MAILBOX_CAPACITY);
    expect(expectRefusal(state, sendRequest(a1, 'bob', messageId(100_000), [b1, b2]))).toEqual({
      kind: 'mailbox-full',
      deviceIds: [2],
    });
    expect(mailboxDepth(state, b1.address)).toBe(0);
    // Once bob.2 acknowledges one envelope, the same send is accepted.
    const [oldest] = envelopesOf(state, b2);
    if (oldest === undefined) throw new Error('envelope');
    state = ok(state, { kind: 'ack', device: b2.address, envelopeIds: [oldest.envelopeId] });
    state = ok(state, sendRequest(a1, 'bob', messageId(100_000), [b1, b2]));
    expect(mailboxDepth(state, b1.address)).toBe(1);
    expect(mailboxDepth(state, b2.address)).toBe(MAILBOX_CAPACITY);
  });

  it('stores each device its own copy once, with server id, sender, type and time [WP-SRV-21]', () => {
    const request: ServerRequest = {
      kind: 'send',
      sender: a1.address,
      messageId: messageId(42),
      recipient: 'bob',
      messages: [
        { deviceId: 2, registrationId: b2.keys.registrationId, type: 'prekey', bytes: text('for bob.2') },
        { deviceId: 1, registrationId: b1.keys.registrationId, type: 'whisper', bytes: text('for bob.1') },
      ],
    };
    let state = ok(WORLD, request, T0 + 5);
    state = ok(
      state,
      {
        ...sendRequest(a2, 'bob', messageId(43), [b1, b2]),
        messages: [copyFor(b1, 'second'), { ...copyFor(b2, 'r'), type: 'retry-request' }],
      },
      T0 + 9,
    );
    expect(envelopesOf(state, b1)).toEqual([
      {
        envelopeId: 1,
        messageId: messageId(42),
        sender: a1.address,
        type: 'whisper',
        bytes: text('for bob.1'),
        serverTimestamp: T0 + 5,
      },
      {
        envelopeId: 2,
        messageId: messageId(43),
        sender: a2.address,
        type: 'whisper',
        bytes: text('second'),
        serverTimestamp: T0 + 9,
      },
    ]);
    expect(envelopesOf(state, b2).map((e) => [e.envelopeId, e.type])).toEqual([
      [1, 'prekey'],
      [2, 'retry-request'],
    ]);
  });

  it('copies the bytes it stores and hands out copies [WP-SRV-21]', () => {
    const bytes = text('original');
    const request: ServerRequest = {
      ...sendRequest(a1, 'bob', messageId(1), [b1, b2]),
      messages: [{ ...copyFor(b1), bytes }, copyFor(b2)],
    };
    const state = ok(WORLD, request);
    bytes[0] = 0;
    const [envelope] = envelopesOf(state, b1);
    expect(envelope?.bytes).toEqual(text('original'));
    if (envelope !== undefined) envelope.bytes[0] = 0;
    expect(envelopesOf(state, b1)[0]?.bytes).toEqual(text('original'));
  });

  it('refuses a device copy larger than MAX_ENVELOPE_SIZE [WP-SRV-21]', () => {
    const big = new Uint8Array(MAX_ENVELOPE_SIZE + 1);
    const request: ServerRequest = {
      ...sendRequest(a1, 'bob', messageId(1), [b1, b2]),
      messages: [copyFor(b1), { ...copyFor(b2), bytes: big }],
    };
    expectError(WORLD, request, 'SERVER_ENVELOPE_TOO_LARGE');
    const atLimit: ServerRequest = {
      ...request,
      messages: [copyFor(b1), { ...copyFor(b2), bytes: new Uint8Array(MAX_ENVELOPE_SIZE) }],
    };
    expect(step(WORLD, atLimit).response).toMatchObject({ kind: 'accepted' });
  });
});

// ---------------------------------------------------------------------------------------------
// Mailboxes: WP-SRV-22
// ---------------------------------------------------------------------------------------------

describe('fetch and ack', () => {
  it('redelivers every unacknowledged envelope, oldest first, until acknowledged [WP-SRV-22]', () => {
    let state = WORLD;
    for (let i = 1; i <= 3; i++) state = ok(state, sendRequest(a1, 'bob', messageId(i), [b1, b2], `m${i}`));
    const once = envelopesOf(state, b1);
    expect(once.map((e) => e.messageId)).toEqual([messageId(1), messageId(2), messageId(3)]);
    // Fetching changes nothing: a reconnecting device gets everything again.
    expect(step(state, { kind: 'fetch', device: b1.address }).state).toBe(state);
    expect(envelopesOf(state, b1)).toEqual(once);
    state = ok(state, { kind: 'ack', device: b1.address, envelopeIds: [once[1]?.envelopeId ?? -1] });
    expect(envelopesOf(state, b1).map((e) => e.messageId)).toEqual([messageId(1), messageId(3)]);
    // bob.2's mailbox is its own.
    expect(mailboxDepth(state, b2.address)).toBe(3);
  });

  it('ack ignores unknown ids and is idempotent [WP-SRV-22]', () => {
    let state = ok(WORLD, sendRequest(a1, 'bob', messageId(1), [b1, b2]));
    const nothing = step(state, { kind: 'ack', device: b1.address, envelopeIds: [99, 100] });
    expect(nothing).toEqual({ state, response: { kind: 'ok' } });
    expect(nothing.state).toBe(state);
    state = ok(state, { kind: 'ack', device: b1.address, envelopeIds: [1, 99] });
    expect(mailboxDepth(state, b1.address)).toBe(0);
    const again = step(state, { kind: 'ack', device: b1.address, envelopeIds: [1] });
    expect(again.state).toBe(state);
    // Envelope ids keep increasing after acks.
    state = ok(state, sendRequest(a1, 'bob', messageId(2), [b1, b2]));
    expect(envelopesOf(state, b1).map((e) => e.envelopeId)).toEqual([2]);
  });
});

// ---------------------------------------------------------------------------------------------
// Provisioning relay, blobs, bounds: WP-SRV-23 … WP-SRV-25
// ---------------------------------------------------------------------------------------------

describe('provisioning relay', () => {
  const address = 'provisioning-address-0001';

  it('relays one message per address and hands it out again on every get until the TTL [WP-SRV-23]', () => {
    const state = ok(emptyServerState(), { kind: 'provision-put', address, bytes: text('encrypted link') });
    // An identical retry is ok; a different message cannot replace it.
    expect(step(state, { kind: 'provision-put', address, bytes: text('encrypted link') })).toEqual({
      state,
      response: { kind: 'ok' },
    });
    expectError(
      state,
      { kind: 'provision-put', address, bytes: text('something else') },
      'SERVER_PROVISION_OCCUPIED',
    );
    // A get leaves the message in place: a new device whose answer was lost reads the same bytes.
    const got = step(state, { kind: 'provision-get', address });
    expect(got.response).toEqual({ kind: 'provision', bytes: text('encrypted link') });
    expect(got.state).toBe(state);
    const again = step(got.state, { kind: 'provision-get', address }, T0 + 1);
    expect(again.response).toEqual({ kind: 'provision', bytes: text('encrypted link') });
    expect(again.state).toBe(state);
    // The copy handed out is not the stored one.
    if (got.response.kind !== 'provision' || got.response.bytes === null) throw new Error('no message');
    got.response.bytes.fill(0);
    expect(step(state, { kind: 'provision-get', address }).response).toEqual({
      kind: 'provision',
      bytes: text('encrypted link'),
    });
    // Reading does not free the address: a different message is still refused after a get.
    expectError(
      again.state,
      { kind: 'provision-put', address, bytes: text('something else') },
      'SERVER_PROVISION_OCCUPIED',
    );
  });

  it('keeps a message that was read until PROVISIONING_TTL, then purges it [WP-SRV-23]', () => {
    const state = ok(emptyServerState(), { kind: 'provision-put', address, bytes: text('link') }, T0);
    const read = step(state, { kind: 'provision-get', address }, T0 + 1);
    expect(read.response).toEqual({ kind: 'provision', bytes: text('link') });
    const last = step(read.state, { kind: 'provision-get', address }, T0 + PROVISIONING_TTL - 1);
    expect(last.response).toEqual({ kind: 'provision', bytes: text('link') });
    expect(Object.keys(last.state.provisioning)).toEqual([address]);
    const expired = step(last.state, { kind: 'provision-get', address }, T0 + PROVISIONING_TTL);
    expect(expired.response).toEqual({ kind: 'provision', bytes: null });
    expect(expired.state.provisioning).toEqual({});
    // Expired entries free their address for a new message.
    const other = step(state, { kind: 'provision-put', address, bytes: text('new') }, T0 + PROVISIONING_TTL);
    expect(other.response).toEqual({ kind: 'ok' });
  });

  it('refuses an oversize provisioning message [WP-SRV-23]', () => {
    expectError(
      emptyServerState(),
      { kind: 'provision-put', address, bytes: new Uint8Array(MAX_PROVISIONING_SIZE + 1) },
      'SERVER_PROVISION_TOO_LARGE',
    );
    expect(
      step(emptyServerState(), {
        kind: 'provision-put',
        address,
        bytes: new Uint8Array(MAX_PROVISIONING_SIZE),
      }).response,
    ).toEqual({ kind: 'ok' });
  });
});

describe('blob store', () => {
  const blob = text('attachment ciphertext');
  const blobId = Buffer.from(c.sha256(blob)).toString('hex');

  it('stores a blob under the SHA-256 of its bytes, once, and serves copies [WP-SRV-24]', () => {
    const state = ok(emptyServerState(), { kind: 'blob-put', blobId, bytes: blob });
    expect(step(state, { kind: 'blob-put', blobId, bytes: blob })).toEqual({
      state,
      response: { kind: 'ok' },
    });
    expect(step(state, { kind: 'blob-put', blobId, bytes: blob }).state).toBe(state);
    const got = step(state, { kind: 'blob-get', blobId });
    expect(got.response).toEqual({ kind: 'blob', bytes: blob });
    expect(step(state, { kind: 'blob-get', blobId: 'f'.repeat(64) }).response).toEqual({
      kind: 'blob',
      bytes: null,
    });
  });

  it('refuses a blob whose id is not its hash, so a stored blob cannot be swapped [WP-SRV-24]', () => {
    const state = ok(emptyServerState(), { kind: 'blob-put', blobId, bytes: blob });
    expectError(state, { kind: 'blob-put', blobId, bytes: text('swapped') }, 'SERVER_BLOB_ID_MISMATCH');
    expectError(
      emptyServerState(),
      { kind: 'blob-put', blobId: 'a'.repeat(64), bytes: blob },
      'SERVER_BLOB_ID_MISMATCH',
    );
  });

  it('refuses a blob larger than MAX_BLOB_SIZE [WP-SRV-24]', () => {
    const big = new Uint8Array(MAX_BLOB_SIZE + 1);
    expectError(
      emptyServerState(),
      { kind: 'blob-put', blobId: Buffer.from(c.sha256(big)).toString('hex'), bytes: big },
      'SERVER_BLOB_TOO_LARGE',
    );
  });
});

describe('bounded stores', () => {
  it('refuses new provisioning messages when the relay is full [WP-SRV-25]', () => {
    let state = emptyServerState();
    for (let i = 0; i < MAX_PROVISIONING_ENTRIES; i++) {
      state = ok(state, {
        kind: 'provision-put',
        address: `address-${String(i).padStart(10, '0')}`,
        bytes: Uint8Array.of(i & 255),
      });
    }
    expectError(
      state,
      { kind: 'provision-put', address: 'address-overflowing', bytes: Uint8Array.of(1) },
      'SERVER_STORE_FULL',
    );
    // Expiry makes room.
    expect(
      step(
        state,
        { kind: 'provision-put', address: 'address-overflowing', bytes: Uint8Array.of(1) },
        T0 + PROVISIONING_TTL,
      ).response,
    ).toEqual({ kind: 'ok' });
  });

  it('purges exactly the expired relay entries and counts only live ones as full [WP-SRV-23, WP-SRV-25]', () => {
    // Staggered entries: the first half stored at T0, the second half a minute later.
    const name = (i: number): string => `address-${String(i).padStart(10, '0')}`;
    const half = MAX_PROVISIONING_ENTRIES / 2;
    let state = emptyServerState();
    for (let i = 0; i < MAX_PROVISIONING_ENTRIES; i++) {
      const at = i < half ? T0 : T0 + 60_000;
      state = ok(state, { kind: 'provision-put', address: name(i), bytes: Uint8Array.of(i & 255) }, at);
    }
    const full = state;
    // One tick before the first half expires the relay is still full.
    const extra = { kind: 'provision-put', address: 'address-one-more', bytes: Uint8Array.of(7) } as const;
    expect(step(full, extra, T0 + PROVISIONING_TTL - 1).response).toMatchObject({
      code: 'SERVER_STORE_FULL',
    });
    // Once it has, exactly that half goes, in order, and the put takes one of its places.
    const after = step(full, extra, T0 + PROVISIONING_TTL);
    expect(after.response).toEqual({ kind: 'ok' });
    const expected = [...Array.from({ length: half }, (_, i) => name(half + i)), 'address-one-more'];
    expect(Object.keys(after.state.provisioning)).toEqual(expected);
    expect(
      step(after.state, { kind: 'provision-get', address: name(0) }, T0 + PROVISIONING_TTL).response,
    ).toEqual({ kind: 'provision', bytes: null });
    // The earlier state is a value: the same put on it still sees a full relay, and its entries stay.
    expect(step(full, extra, T0 + 1).response).toMatchObject({ code: 'SERVER_STORE_FULL' });
    expect(Object.keys(full.provisioning)).toHaveLength(MAX_PROVISIONING_ENTRIES);
    // The second half expires a minute later; the late entry stays.
    const later = step(
      after.state,
      { kind: 'provision-get', address: 'address-one-more' },
      T0 + PROVISIONING_TTL + 60_000,
    );
    expect(Object.keys(later.state.provisioning)).toEqual(['address-one-more']);
  });

  it('refuses new blobs when the blob store is full [WP-SRV-25]', () => {
    const blobs: Record<string, Uint8Array> = {};
    for (let i = 0; i < MAX_BLOBS; i++) blobs[i.toString(16).padStart(64, '0')] = new Uint8Array(0);
    const state: ServerState = { ...emptyServerState(), blobs };
    const blob = text('one more');
    expectError(
      state,
      { kind: 'blob-put', blobId: Buffer.from(c.sha256(blob)).toString('hex'), bytes: blob },
      'SERVER_STORE_FULL',
    );
  });

  it('refuses new accounts when the account table is full [WP-SRV-25]', () => {
    const existing = WORLD.accounts['bob'];
    if (existing === undefined) throw new Error('fixture');
    const accounts = Object.fromEntries(
      Array.from({ length: MAX_ACCOUNTS }, (_, i) => [`user-${i}`, existing]),
    );
    const carol = newAccount('carol');
    const c1 = newDevice('carol', 1);
    // (No snapshot comparison: the table holds MAX_ACCOUNTS references to one account.)
    expectError(
      { ...WORLD, accounts },
      registerAccountRequest(c1, carol, signList(carol, 1, [c1])),
      'SERVER_STORE_FULL',
      {
        snapshot: false,
      },
    );
  });
});

// ---------------------------------------------------------------------------------------------
// WP-SRV-26: no plaintext, no private keys; bundles drive real sessions
// ---------------------------------------------------------------------------------------------

describe('what the server holds', () => {
  it('a real conversation through the server leaves no plaintext or private key in its state [WP-SRV-26]', () => {
    const marker = 'PLAINTEXT-MARKER-7f3a9c';
    const aliceEnv = { crypto: c, rng: seededRng('server-test/alice-session') };
    const bundles = bundlesOf(WORLD, 'bob', [1, 2]);
    if (bundles.response.kind !== 'bundles') throw new Error('bundles');
    let state = bundles.state;
    const messages: OutgoingDeviceMessage[] = [];
    for (const bundle of bundles.response.bundles) {
      const local = { identityKeyPair: a1.keys.identityKeyPair, registrationId: a1.keys.registrationId };
      const record = processPreKeyBundle(aliceEnv, EMPTY_SESSION_RECORD, local, bundle, T0);
      if (!record.ok) throw new Error(record.error.code);
      const encrypted = encryptMessage(aliceEnv, record.value, text(marker), T0);
      if (!encrypted.ok) throw new Error(encrypted.error.code);
      messages.push({
        deviceId: bundle.deviceId,
        registrationId: bundle.registrationId,
        ...encrypted.value.message,
      });
    }
    state = ok(state, {
      kind: 'send',
      sender: a1.address,
      messageId: messageId(1),
      recipient: 'bob',
      messages,
    });
    const snapshot = encodeServerState(state);
    expect(snapshot).not.toContain(marker);
    expect(snapshot).not.toContain(Buffer.from(marker).toString('hex'));
    for (const device of [a1, a2, b1, b2]) {
      const secrets = [
        device.keys.identityKeyPair.privateKey,
        ...device.keys.signedPreKeys.map((k) => k.keyPair.privateKey),
        ...device.keys.oneTimePreKeys.map((k) => k.keyPair.privateKey),
        ...device.keys.kyberPreKeys.map((k) => k.secretKey),
      ];
      for (const secret of secrets) expect(snapshot).not.toContain(Buffer.from(secret).toString('hex'));
    }
    // Each bob device decrypts its own envelope: the server's bundles and mailboxes work end to end.
    for (const device of [b1, b2]) {
      const [envelope] = envelopesOf(state, device);
      if (envelope === undefined || envelope.type === 'retry-request') throw new Error('envelope');
      const bobEnv = { crypto: c, rng: seededRng(`server-test/bob-session/${device.address.deviceId}`) };
      const decrypted = decryptMessage(bobEnv, EMPTY_SESSION_RECORD, device.keys, {
        type: envelope.type,
        bytes: envelope.bytes,
      });
      if (!decrypted.ok) throw new Error(decrypted.error.code);
      expect(new TextDecoder().decode(decrypted.value.plaintext)).toBe(marker);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Property: no accepted message is lost or duplicated (WP-SRV-19 … WP-SRV-22)
// ---------------------------------------------------------------------------------------------

describe('mailbox property', () => {
  const devices = [a1, a2, b1, b2] as const;
  type Command =
    | {
        readonly kind: 'send';
        readonly from: number;
        readonly to: 'alice' | 'bob';
        readonly id: number;
        readonly drop: number | null;
      }
    | { readonly kind: 'fetch-ack'; readonly device: number; readonly take: number }
    | { readonly kind: 'ack-random'; readonly device: number; readonly envelopeIds: readonly number[] };

  const command: fc.Arbitrary<Command> = fc.oneof(
    {
      weight: 3,
      arbitrary: fc.record({
        kind: fc.constant('send' as const),
        from: fc.integer({ min: 0, max: 3 }),
        to: fc.constantFrom('alice' as const, 'bob' as const),
        id: fc.integer({ min: 0, max: 5 }),
        drop: fc.option(fc.integer({ min: 0, max: 3 }), { nil: null }),
      }),
    },
    fc.record({
      kind: fc.constant('fetch-ack' as const),
      device: fc.integer({ min: 0, max: 3 }),
      take: fc.integer({ min: 0, max: 4 }),
    }),
    fc.record({
      kind: fc.constant('ack-random' as const),
      device: fc.integer({ min: 0, max: 3 }),
      envelopeIds: fc.array(fc.integer({ min: 0, max: 40 }), { maxLength: 4 }),
    }),
  );

  it('any sequence of sends, fetches and acks never loses or duplicates an accepted message [WP-SRV-19] [WP-SRV-21] [WP-SRV-22]', () => {
    // Counts across runs, so the property provably exercises acceptance, duplicates and refusals.
    const seen = { accepted: 0, duplicate: 0, refused: 0 };
    fc.assert(
      fc.property(fc.array(command, { minLength: 5, maxLength: 40 }), (commands) => {
        let state = WORLD;
        // The model: per device, the (sender, message id) pairs accepted and not yet acknowledged.
        const pending = new Map<string, string[]>(
          devices.map((d) => [`${d.address.userId}.${d.address.deviceId}`, []]),
        );
        const accepted = new Set<string>();
        for (const cmd of commands) {
          if (cmd.kind === 'send') {
            const sender = devices[cmd.from];
            if (sender === undefined) throw new Error('index');
            // The sender usually names the right devices; `drop` leaves one out (or adds itself).
            const expected = devices.filter((d) => d.address.userId === cmd.to && d !== sender);
            const targets =
              cmd.drop === null
                ? expected
                : devices.filter((d, i) => d.address.userId === cmd.to && i !== cmd.drop);
            const result = step(state, sendRequest(sender, cmd.to, messageId(cmd.id), targets, `m${cmd.id}`));
            const key = `${sender.address.userId}.${sender.address.deviceId}/${messageId(cmd.id)}/${cmd.to}`;
            if (result.response.kind === 'accepted') {
              seen[result.response.duplicate ? 'duplicate' : 'accepted']++;
              expect(result.response.duplicate).toBe(accepted.has(key));
              if (!result.response.duplicate) {
                accepted.add(key);
                for (const target of targets)
                  pending
                    .get(`${target.address.userId}.${target.address.deviceId}`)
                    ?.push(`${sender.address.userId}.${sender.address.deviceId}/${messageId(cmd.id)}`);
              } else {
                expect(result.state).toBe(state);
              }
            } else {
              seen.refused++;
              expect(result.response.kind).toBe('refused');
              expect(result.state).toBe(state);
              expect(accepted.has(key)).toBe(false);
            }
            state = result.state;
          } else {
            const device = devices[cmd.device];
            if (device === undefined) throw new Error('index');
            const envelopes = envelopesOf(state, device);
            const ids =
              cmd.kind === 'fetch-ack'
                ? envelopes.slice(0, cmd.take).map((e) => e.envelopeId)
                : [...cmd.envelopeIds];
            state = ok(state, { kind: 'ack', device: device.address, envelopeIds: ids });
            const acked = new Set(
              envelopes
                .filter((e) => ids.includes(e.envelopeId))
                .map((e) => `${e.sender.userId}.${e.sender.deviceId}/${e.messageId}`),
            );
            const key = `${device.address.userId}.${device.address.deviceId}`;
            pending.set(
              key,
              (pending.get(key) ?? []).filter((entry) => !acked.has(entry)),
            );
          }
          // Every mailbox holds exactly the accepted, unacknowledged messages, each once, in order.
          for (const device of devices) {
            const held = envelopesOf(state, device).map(
              (e) => `${e.sender.userId}.${e.sender.deviceId}/${e.messageId}`,
            );
            expect(held).toEqual(pending.get(`${device.address.userId}.${device.address.deviceId}`));
            expect(new Set(held).size).toBe(held.length);
          }
        }
      }),
      { numRuns: 150 },
    );
    expect(seen.accepted).toBeGreaterThan(100);
    expect(seen.duplicate).toBeGreaterThan(10);
    expect(seen.refused).toBeGreaterThan(100);
  });
});
