/**
 * Quick differential check of the server's two engines (WHITEPAPER.md "Server (SRV)", WP-SRV-01 …
 * WP-SRV-29): the same request sequences — honest, out of order, and hostile (malformed fields,
 * wrong types, unknown kinds) — go to impl/server.ts `handleRequest` and to the model's machine
 * (model/server.ts `createServerRunner`); after every request the responses must be deeply equal
 * (error codes, rules and messages, refusals, envelope ids, bundles) and so must the abstract states
 * (impl/server-abstract.ts vs model/server.ts `abstractServerOf`). Bounds that random runs cannot
 * reach (a full mailbox, the dedup window) get their own deterministic differential runs.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { generatePreKeyState, type PreKeyState } from '../../impl/prekeys.js';
import { abstractServer } from '../../impl/server-abstract.js';
import { emptyServerState, handleRequest, type ServerState } from '../../impl/server.js';
import { abstractServerOf, createServerRunner, type ServerRunner } from '../../model/server.js';
import {
  MAILBOX_CAPACITY,
  MAX_ENVELOPE_SIZE,
  MESSAGE_ID_DEDUP_WINDOW,
  PROVISIONING_TTL,
} from '../../spec/constants.js';
import type { BugName } from '../../spec/bugs.js';
import { nodeProvider } from '../../spec/crypto/node.js';
import { registrationProofMessage, signDeviceList, signRegistrationProof } from '../../spec/device-list.js';
import type { SignedDeviceList } from '../../spec/device-list-types.js';
import { toHex } from '../../spec/hex.js';
import type { DeviceAddress } from '../../spec/identity.js';
import { generateKeyPair, type KeyPair } from '../../spec/keys.js';
import { seededRng } from '../../spec/rng.js';
import type { PreKeyUpload, ServerRequest, ServerResponse } from '../../spec/server-api.js';

const c = nodeProvider;
const T0 = 1_700_000_000_000;

// ---------------------------------------------------------------------------------------------
// Fixtures: a fixed cast of users, account keys, device installs, lists and uploads
// ---------------------------------------------------------------------------------------------

/** `constructor` is a valid user id: it checks that both engines read records by own keys only. */
const USERS = ['alice', 'bob', 'constructor'] as const;
const INSTALLS = [0, 1] as const;
const ACCOUNT_KEYS = [0, 1] as const;
/** Device sets a list can name, as (deviceId, install) pairs. */
const DEVICE_SETS: readonly (readonly (readonly [number, number])[])[] = [
  [[1, 0]],
  [
    [1, 0],
    [2, 0],
  ],
  [
    [1, 0],
    [2, 0],
    [3, 0],
  ],
  [
    [1, 0],
    [3, 0],
  ],
  [
    [1, 0],
    [2, 1],
  ],
  [[1, 1]],
  [
    [1, 1],
    [2, 0],
  ],
];

function cached<K extends string, V>(make: (key: K) => V): (key: K) => V {
  const cache = new Map<K, V>();
  return (key) => {
    const hit = cache.get(key);
    if (hit !== undefined) return hit;
    const value = make(key);
    cache.set(key, value);
    return value;
  };
}

const accountKey = cached((key: `${string}/${number}`): KeyPair =>
  generateKeyPair(c, seededRng(`server-quick/account/${key}`)),
);
const install = cached((key: `${string}/${number}/${number}`): PreKeyState =>
  generatePreKeyState(
    { crypto: c, rng: seededRng(`server-quick/install/${key}`) },
    { oneTimePreKeys: 2, oneTimeKyberPreKeys: 1 },
  ),
);
/** Replenishment uploads per install, honest and not, each aimed at one check of WP-SRV-08. */
const replenishment = cached((key: `${string}/${number}/${number}/${number}`): PreKeyUpload => {
  const [userId = '', deviceId = '0', installIndex = '0', variant = '0'] = key.split('/');
  const keys = install(`${userId}/${Number(deviceId)}/${Number(installIndex)}`);
  const own = uploadOf(keys);
  const ownOneTime = own.oneTimePreKeys[0] ?? { keyId: 1, publicKey: new Uint8Array(33) };
  const ownKyber = own.kyberPreKeys.find((k) => !k.lastResort) ?? own.kyberPreKeys[0];
  const lastResort = own.kyberPreKeys.find((k) => k.lastResort);
  if (ownKyber === undefined || lastResort === undefined) throw new Error('fixture without Kyber keys');
  const manyOneTime = (count: number, from: number) =>
    Array.from({ length: count }, (_, i) => ({ keyId: from + i, publicKey: ownOneTime.publicKey }));
  const base = { signedPreKey: own.signedPreKey, oneTimePreKeys: [], kyberPreKeys: [] };
  switch (Number(variant)) {
    case 0: // fresh ids for one-time EC and Kyber keys: accepted
      return { ...base, oneTimePreKeys: manyOneTime(2, 100), kyberPreKeys: [{ ...ownKyber, keyId: 200 }] };
    case 1: // the stored one-time ids again
      return { ...own, kyberPreKeys: [] };
    case 2: // a replacement last resort under a new id
      return { ...base, kyberPreKeys: [{ ...lastResort, keyId: 300 }] };
    case 3: // signatures by another identity
      return uploadOf(install(`${userId}/${(Number(deviceId) % 3) + 1}/${Number(installIndex)}`));
    case 4: // more one-time keys than one upload may carry
      return { ...base, oneTimePreKeys: manyOneTime(101, 1000) };
    case 5: // a truncated signature
      return {
        ...base,
        signedPreKey: { ...own.signedPreKey, signature: own.signedPreKey.signature.slice(1) },
      };
    case 6: // a low-order one-time key
      return {
        ...base,
        oneTimePreKeys: [{ keyId: 400, publicKey: Uint8Array.of(5, ...new Uint8Array(32)) }],
      };
    case 7: // a Kyber key with the wrong type byte
      return {
        ...base,
        kyberPreKeys: [
          { ...ownKyber, keyId: 500, publicKey: Uint8Array.of(9, ...ownKyber.publicKey.slice(1)) },
        ],
      };
    case 8: // two last resorts
      return {
        ...base,
        kyberPreKeys: [
          { ...lastResort, keyId: 600 },
          { ...lastResort, keyId: 601 },
        ],
      };
    case 9: // an id twice within the upload
      return { ...base, oneTimePreKeys: manyOneTime(2, 700).map((k) => ({ ...k, keyId: 700 })) };
    case 12: // a rotated signed prekey (a greater id): replaces the stored one (WP-SRV-28)
      return { ...base, signedPreKey: { ...own.signedPreKey, keyId: 5 } };
    case 13: // a delayed copy of an older upload: the stored signed prekey stays (WP-SRV-28)
      return { ...base, signedPreKey: { ...own.signedPreKey, keyId: 0 } };
    default: // 60 keys: twice is more than a device may hold
      return { ...base, oneTimePreKeys: manyOneTime(60, 800 + Number(variant) * 100) };
  }
});

/** Registration uploads: honest, without a last resort, or with a Kyber key missing `lastResort`. */
function registrationUpload(keys: PreKeyState, variant: number): PreKeyUpload {
  const own = uploadOf(keys);
  if (variant === 1) return { ...own, kyberPreKeys: own.kyberPreKeys.filter((k) => !k.lastResort) };
  if (variant === 2) {
    return {
      ...own,
      kyberPreKeys: own.kyberPreKeys.map(({ lastResort: _, ...rest }) => rest),
    } as unknown as PreKeyUpload;
  }
  return own;
}

function uploadOf(keys: PreKeyState): PreKeyUpload {
  const signed = keys.signedPreKeys[0];
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

const signedList = cached((key: `${string}/${number}/${number}/${number}`): SignedDeviceList => {
  const [userId = '', k = '0', version = '0', set = '0'] = key.split('/');
  const account = accountKey(`${userId}/${Number(k)}`);
  const devices = (DEVICE_SETS[Number(set)] ?? []).map(([deviceId, i]) => {
    const keys = install(`${userId}/${deviceId}/${i}`);
    return { deviceId, identityKey: keys.identityKeyPair.publicKey, registrationId: keys.registrationId };
  });
  return signDeviceList(
    c,
    account.privateKey,
    { userId, version: Number(version), accountKey: account.publicKey, devices },
    seededRng(`server-quick/list/${key}`).randomBytes(64),
  );
});

const proof = cached((key: `${string}/${number}/${number}/${number}`): Uint8Array => {
  const [userId = '', deviceId = '1', i = '0', k = '0'] = key.split('/');
  const keys = install(`${userId}/${Number(deviceId)}/${Number(i)}`);
  const address: DeviceAddress = { userId, deviceId: Number(deviceId) };
  const message = registrationProofMessage(
    address,
    keys.identityKeyPair.publicKey,
    keys.registrationId,
    accountKey(`${userId}/${Number(k)}`).publicKey,
  );
  return signRegistrationProof(
    c,
    keys.identityKeyPair.privateKey,
    message,
    seededRng(`server-quick/proof/${key}`).randomBytes(64),
  );
});

const PROVISIONING_ADDRESSES = ['provisioning-address-0001', 'provisioning-address-0002'] as const;
const BLOBS = [new TextEncoder().encode('attachment one'), new TextEncoder().encode('attachment two')];
const messageId = (n: number): string => n.toString(16).padStart(32, '0');

// ---------------------------------------------------------------------------------------------
// Commands: drawn as intents, turned into requests against the current (impl) state
// ---------------------------------------------------------------------------------------------

type Intent =
  | { kind: 'register-account'; user: number; install: number; k: number; version: number; set: number }
  | { kind: 'register-device'; user: number; device: number; install: number; k: number; upload: number }
  | { kind: 'update-device-list'; user: number; device: number; k: number; version: number; set: number }
  | { kind: 'upload-prekeys'; user: number; device: number; install: number; variant: number }
  | { kind: 'get-device-list'; user: number }
  | { kind: 'get-bundles'; user: number; devices: number[] }
  | {
      kind: 'send';
      user: number;
      device: number;
      recipient: number;
      message: number;
      targets: 'current' | number[];
      staleFor: number;
      only: boolean;
      bytes: number;
      duplicate: boolean;
    }
  | { kind: 'fetch'; user: number; device: number }
  | { kind: 'ack'; user: number; device: number; how: 'all' | 'first' | 'bogus' }
  | { kind: 'provision-put'; address: number; bytes: number }
  | { kind: 'provision-get'; address: number }
  | { kind: 'blob-put'; blob: number; honest: boolean }
  | { kind: 'blob-get'; blob: number };

const user = fc.nat({ max: USERS.length - 1 });
/** Device ids 1..3, the registered ones (1, 2) more often. */
const device = fc.constantFrom(1, 1, 2, 2, 3);
const pick = <T>(values: readonly T[]) => fc.constantFrom(...values);

const intent: fc.Arbitrary<Intent> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('register-account' as const),
      user,
      install: pick(INSTALLS),
      k: pick(ACCOUNT_KEYS),
      version: fc.integer({ min: 1, max: 4 }),
      set: fc.constantFrom(0, 0, 0, 5, 1),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('register-device' as const),
      user,
      device,
      install: pick(INSTALLS),
      k: pick(ACCOUNT_KEYS),
      upload: fc.constantFrom(0, 0, 0, 0, 1, 2),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('update-device-list' as const),
      user,
      device,
      k: pick(ACCOUNT_KEYS),
      version: fc.integer({ min: 1, max: 6 }),
      set: fc.nat({ max: DEVICE_SETS.length - 1 }),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('upload-prekeys' as const),
      user,
      device,
      install: pick(INSTALLS),
      variant: fc.nat({ max: 13 }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('get-device-list' as const), user }) },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('get-bundles' as const),
      user,
      devices: fc.uniqueArray(device, { maxLength: 3 }),
    }),
  },
  {
    weight: 8,
    arbitrary: fc.record({
      kind: fc.constant('send' as const),
      user,
      device,
      recipient: user,
      message: fc.nat({ max: 2 }),
      targets: fc.oneof(fc.constant('current' as const), fc.uniqueArray(device, { maxLength: 3 })),
      staleFor: fc.integer({ min: 0, max: 4 }),
      only: fc.boolean(),
      bytes: fc.constantFrom(0, 1, 2, 3, 3, 3, 3, 4),
      duplicate: fc.boolean(),
    }),
  },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('fetch' as const), user, device }) },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('ack' as const),
      user,
      device,
      how: fc.constantFrom('all' as const, 'first' as const, 'bogus' as const),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('provision-put' as const),
      address: fc.nat({ max: 1 }),
      bytes: fc.nat({ max: 1 }),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({ kind: fc.constant('provision-get' as const), address: fc.nat({ max: 1 }) }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('blob-put' as const),
      blob: fc.nat({ max: 1 }),
      honest: fc.boolean(),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('blob-get' as const), blob: fc.nat({ max: 1 }) }) },
);

/** A value that no field of a request should accept as is (or, sometimes, exactly the right type). */
const junk: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom(null, undefined, 0, -1, 1.5, 128, 2 ** 32, '', 'x', 'Not Valid', true, [], {}, [1, 1], [0]),
  fc.constant(new Uint8Array(0)),
  fc.constant(new Uint8Array(33)),
  fc.constant(Uint8Array.of(5, ...new Uint8Array(32))),
  fc.constant({ userId: 'alice', deviceId: 1 }),
  fc.constant({ userId: 'alice', deviceId: 9 }),
  fc.constant({ list: new Uint8Array(3), signature: new Uint8Array(64) }),
  fc.constant({ signedPreKey: {}, oneTimePreKeys: [], kyberPreKeys: [] }),
  fc.constant([{ deviceId: 1, registrationId: 1, type: 'plaintext', bytes: new Uint8Array(1) }]),
  fc.constant([{ deviceId: 1, registrationId: 1 }]),
  fc.constant(new Uint8Array(256 * 1024 + 1)),
  fc.constant('drop-table'),
);

/** How to spoil a request: none, one field replaced, one field removed, one nested field replaced. */
const spoil = fc.oneof(
  { weight: 14, arbitrary: fc.constant({ how: 'none' as const }) },
  { weight: 2, arbitrary: fc.record({ how: fc.constant('replace' as const), field: fc.nat(), value: junk }) },
  { weight: 1, arbitrary: fc.record({ how: fc.constant('remove' as const), field: fc.nat() }) },
  {
    weight: 2,
    arbitrary: fc.record({
      how: fc.constant('nested' as const),
      field: fc.nat(),
      inner: fc.nat(),
      value: junk,
    }),
  },
  { weight: 1, arbitrary: fc.record({ how: fc.constant('whole' as const), value: junk }) },
  {
    weight: 1,
    arbitrary: fc.record({
      how: fc.constant('kind' as const),
      kind: fc.constantFrom('drop-table', 'constructor', 'toString', 'SEND', ''),
    }),
  },
);

type Spoil = typeof spoil extends fc.Arbitrary<infer S> ? S : never;

function spoiled(request: ServerRequest, how: Spoil): ServerRequest {
  const hostile = (value: unknown): ServerRequest => value as ServerRequest;
  if (how.how === 'none') return request;
  if (how.how === 'whole') return hostile(how.value);
  if (how.how === 'kind') return hostile({ ...request, kind: how.kind });
  const keys = Object.keys(request).filter((k) => k !== 'kind');
  const key = keys[how.field % Math.max(keys.length, 1)] ?? 'kind';
  const record: Record<string, unknown> = { ...request };
  if (how.how === 'remove') {
    delete record[key];
    return hostile(record);
  }
  if (how.how === 'replace') return hostile({ ...record, [key]: how.value });
  const inner = record[key];
  if (Array.isArray(inner)) {
    const copy: unknown[] = [...inner];
    if (copy.length === 0) copy.push(how.value);
    else copy[how.inner % copy.length] = how.value;
    return hostile({ ...record, [key]: copy });
  }
  if (typeof inner === 'object' && inner !== null && !(inner instanceof Uint8Array)) {
    const innerKeys = Object.keys(inner);
    const innerKey = innerKeys[how.inner % Math.max(innerKeys.length, 1)] ?? 'x';
    return hostile({ ...record, [key]: { ...inner, [innerKey]: how.value } });
  }
  return hostile({ ...record, [key]: how.value });
}

function materialize(state: ServerState, step: Intent): ServerRequest {
  switch (step.kind) {
    case 'register-account': {
      const userId = USERS[step.user] ?? 'alice';
      const keys = install(`${userId}/1/${step.install}`);
      return {
        kind: 'register-account',
        device: { userId, deviceId: 1 },
        identityKey: keys.identityKeyPair.publicKey,
        registrationId: keys.registrationId,
        deviceList: signedList(`${userId}/${step.k}/${step.version}/${step.set}`),
        proof: proof(`${userId}/1/${step.install}/${step.k}`),
        preKeys: uploadOf(keys),
      };
    }
    case 'register-device': {
      const userId = USERS[step.user] ?? 'alice';
      const keys = install(`${userId}/${step.device}/${step.install}`);
      return {
        kind: 'register-device',
        device: { userId, deviceId: step.device },
        identityKey: keys.identityKeyPair.publicKey,
        registrationId: keys.registrationId,
        proof: proof(`${userId}/${step.device}/${step.install}/${step.k}`),
        preKeys: registrationUpload(keys, step.upload),
      };
    }
    case 'update-device-list': {
      const userId = USERS[step.user] ?? 'alice';
      return {
        kind: 'update-device-list',
        device: { userId, deviceId: step.device },
        deviceList: signedList(`${userId}/${step.k}/${step.version}/${step.set}`),
      };
    }
    case 'upload-prekeys': {
      const userId = USERS[step.user] ?? 'alice';
      return {
        kind: 'upload-prekeys',
        device: { userId, deviceId: step.device },
        preKeys: replenishment(`${userId}/${step.device}/${step.install}/${step.variant}`),
      };
    }
    case 'get-device-list':
      return { kind: 'get-device-list', userId: USERS[step.user] ?? 'alice' };
    case 'get-bundles':
      return { kind: 'get-bundles', userId: USERS[step.user] ?? 'alice', deviceIds: step.devices };
    case 'send': {
      const sender = { userId: USERS[step.user] ?? 'alice', deviceId: step.device };
      const recipient = USERS[step.recipient] ?? 'bob';
      const account = Object.hasOwn(state.accounts, recipient) ? state.accounts[recipient] : undefined;
      const registered = account === undefined ? [] : Object.keys(account.devices).map(Number);
      let targets =
        step.targets === 'current'
          ? registered.filter((d) => !(recipient === sender.userId && d === sender.deviceId))
          : step.targets;
      if (step.only) targets = targets.slice(0, 1);
      else if (step.duplicate && step.bytes === 0) targets = [...targets, ...targets.slice(0, 1)];
      const messages = targets.map((deviceId) => {
        const current = account === undefined ? undefined : account.devices[String(deviceId)];
        const registrationId = (current?.registrationId ?? 7) + (step.staleFor === deviceId ? 1 : 0);
        return {
          deviceId,
          registrationId,
          type: 'whisper' as const,
          bytes: new Uint8Array(step.bytes === 4 ? MAX_ENVELOPE_SIZE + 1 : step.bytes * 10),
        };
      });
      const onlyDevice = step.only ? targets[0] : undefined;
      return {
        kind: 'send',
        sender,
        messageId: messageId(step.message),
        recipient,
        messages,
        ...(onlyDevice === undefined ? {} : { onlyDevice }),
      };
    }
    case 'fetch':
      return { kind: 'fetch', device: { userId: USERS[step.user] ?? 'alice', deviceId: step.device } };
    case 'ack': {
      const address = { userId: USERS[step.user] ?? 'alice', deviceId: step.device };
      const account = Object.hasOwn(state.accounts, address.userId)
        ? state.accounts[address.userId]
        : undefined;
      const ids =
        account?.devices[String(address.deviceId)]?.mailbox.envelopes.map((e) => e.envelopeId) ?? [];
      const envelopeIds = step.how === 'all' ? ids : step.how === 'first' ? ids.slice(0, 1) : [999, 0];
      return { kind: 'ack', device: address, envelopeIds };
    }
    case 'provision-put':
      return {
        kind: 'provision-put',
        address: PROVISIONING_ADDRESSES[step.address] ?? '',
        bytes: Uint8Array.of(step.bytes, 1, 2),
      };
    case 'provision-get':
      return { kind: 'provision-get', address: PROVISIONING_ADDRESSES[step.address] ?? '' };
    case 'blob-put': {
      const bytes = BLOBS[step.blob] ?? new Uint8Array(0);
      const blobId = toHex(c.sha256(step.honest ? bytes : Uint8Array.of(9)));
      return { kind: 'blob-put', blobId, bytes };
    }
    case 'blob-get':
      return { kind: 'blob-get', blobId: toHex(c.sha256(BLOBS[step.blob] ?? new Uint8Array(0))) };
  }
}

// ---------------------------------------------------------------------------------------------
// The lockstep driver
// ---------------------------------------------------------------------------------------------

interface Lockstep {
  impl: ServerState;
  readonly model: ServerRunner;
  readonly env: { readonly crypto: typeof c; readonly bugs?: readonly BugName[] };
}

function newLockstep(bugs?: readonly BugName[]): Lockstep {
  const env = bugs === undefined ? { crypto: c } : { crypto: c, bugs };
  return { impl: emptyServerState(), model: createServerRunner(env), env };
}

/** Runs one request on both engines; fails on any difference in response or abstract state. */
function stepBoth(world: Lockstep, request: ServerRequest, now: number, label: string): ServerResponse {
  const implStep = handleRequest(world.env, world.impl, request, now);
  const modelResponse = world.model.handle(request, now);
  expect(modelResponse, `${label}: response`).toEqual(implStep.response);
  world.impl = implStep.state;
  expect(abstractServerOf(c, world.model.snapshot().context), `${label}: abstract state`).toEqual(
    abstractServer(c, world.impl),
  );
  return implStep.response;
}

/** Registers every user with devices 1 and 2 (so random runs start from a populated server). */
function populate(world: Lockstep, now: number): void {
  for (const userId of USERS) {
    const k1 = install(`${userId}/1/0`);
    stepBoth(
      world,
      {
        kind: 'register-account',
        device: { userId, deviceId: 1 },
        identityKey: k1.identityKeyPair.publicKey,
        registrationId: k1.registrationId,
        deviceList: signedList(`${userId}/0/1/0`),
        proof: proof(`${userId}/1/0/0`),
        preKeys: uploadOf(k1),
      },
      now,
      'populate',
    );
    stepBoth(
      world,
      {
        kind: 'update-device-list',
        device: { userId, deviceId: 1 },
        deviceList: signedList(`${userId}/0/2/1`),
      },
      now,
      'populate',
    );
    const k2 = install(`${userId}/2/0`);
    stepBoth(
      world,
      {
        kind: 'register-device',
        device: { userId, deviceId: 2 },
        identityKey: k2.identityKeyPair.publicKey,
        registrationId: k2.registrationId,
        proof: proof(`${userId}/2/0/0`),
        preKeys: uploadOf(k2),
      },
      now,
      'populate',
    );
  }
}

const command = fc.record({
  intent,
  /** Send the previous request again, byte for byte (retries, resends, replays). */
  repeat: fc.nat({ max: 5 }).map((n) => n === 0),
  spoil,
  advance: fc.oneof(
    { weight: 8, arbitrary: fc.constant(0) },
    { weight: 3, arbitrary: fc.integer({ min: 1, max: 60_000 }) },
    { weight: 1, arbitrary: fc.constant(PROVISIONING_TTL) },
  ),
});

/** Random command sequences on both engines, from an empty or a populated server. */
function runLockstepProperty(bugs: readonly BugName[] | undefined, numRuns: number): void {
  fc.assert(
    fc.property(
      fc.nat({ max: 4 }),
      fc.array(command, { minLength: 1, maxLength: 50 }),
      (populated, commands) => {
        const world = newLockstep(bugs);
        let now = T0;
        if (populated > 0) populate(world, now);
        let previous: ServerRequest | undefined;
        commands.forEach((cmd, index) => {
          now += cmd.advance;
          const request =
            cmd.repeat && previous !== undefined
              ? previous
              : spoiled(materialize(world.impl, cmd.intent), cmd.spoil);
          previous = request;
          stepBoth(
            world,
            request,
            now,
            `step ${index} (${cmd.repeat ? 'repeat' : cmd.intent.kind}, ${cmd.spoil.how})`,
          );
        });
      },
    ),
    { numRuns, seed: 20_240_611, verbose: 1 },
  );
}

describe('server: impl/ and model/ answer alike [WP-SRV-01] [WP-SRV-27]', () => {
  it('random honest and hostile request sequences give identical responses and abstract states', () => {
    runLockstepProperty(undefined, 200);
  });

  it('agree with the planted bug server-drops-message too, which both engines read alike', () => {
    runLockstepProperty(['server-drops-message'], 40);
  });

  it('a rotated signed prekey replaces the stored one and a delayed older upload does not, alike [WP-SRV-28]', () => {
    const world = newLockstep();
    populate(world, T0);
    const upload = (variant: number): ServerRequest => ({
      kind: 'upload-prekeys',
      device: { userId: 'alice', deviceId: 1 },
      preKeys: replenishment(`alice/1/0/${variant}`),
    });
    stepBoth(world, upload(12), T0, 'rotated signed prekey');
    stepBoth(world, upload(13), T0, 'older signed prekey');
    stepBoth(world, upload(0), T0, 'equal id with one-time keys');
    const alice = abstractServer(c, world.impl).accounts.find((a) => a.userId === 'alice');
    expect(alice?.devices.find((d) => d.deviceId === 1)?.signedPreKeyId).toBe(5);
  });

  it('a copy of an upload arriving after every one-time key it carried went out adds none again, alike [WP-SRV-29]', () => {
    const world = newLockstep();
    populate(world, T0);
    const upload: ServerRequest = {
      kind: 'upload-prekeys',
      device: { userId: 'alice', deviceId: 1 },
      preKeys: replenishment('alice/1/0/0'),
    };
    const alice1 = () =>
      abstractServer(c, world.impl)
        .accounts.find((a) => a.userId === 'alice')
        ?.devices.find((d) => d.deviceId === 1);
    const drain = (label: string): void => {
      for (let n = 0; alice1()?.oneTimePreKeys !== 0 || alice1()?.oneTimeKyberPreKeys !== 0; n++) {
        stepBoth(world, { kind: 'get-bundles', userId: 'alice', deviceIds: [1] }, T0, `${label} ${n}`);
      }
    };
    stepBoth(world, upload, T0, 'upload');
    drain('hand out');
    expect(stepBoth(world, upload, T0, 'copy')).toEqual({ kind: 'ok' });
    expect(alice1()).toMatchObject({ oneTimePreKeys: 0, oneTimeKyberPreKeys: 0 });
  });

  it('the mailbox bound refuses as a whole and the dedup window forgets the oldest pair, alike [WP-SRV-19] [WP-SRV-20]', () => {
    const world = newLockstep();
    populate(world, T0);
    const alice1 = install('alice/1/0');
    const alice2 = install('alice/2/0');
    const sendTo = (
      n: number,
      devices: readonly [number, PreKeyState][],
    ): Extract<ServerRequest, { kind: 'send' }> => ({
      kind: 'send',
      sender: { userId: 'bob', deviceId: 1 },
      messageId: messageId(n),
      recipient: 'alice',
      messages: devices.map(([deviceId, keys]) => ({
        deviceId,
        registrationId: keys.registrationId,
        type: 'whisper' as const,
        bytes: Uint8Array.of(n & 0xff),
      })),
    });
    // Fill alice.2 with single-device sends, then a full send to both devices is refused.
    for (let n = 1; n <= MAILBOX_CAPACITY; n++) {
      stepBoth(world, { ...sendTo(n, [[2, alice2]]), onlyDevice: 2 }, T0 + n, `fill ${n}`);
    }
    const refused = stepBoth(
      world,
      sendTo(MAILBOX_CAPACITY + 1, [
        [1, alice1],
        [2, alice2],
      ]),
      T0,
      'full',
    );
    expect(refused).toMatchObject({ kind: 'refused', refusal: { kind: 'mailbox-full', deviceIds: [2] } });
    // Acknowledge everything, then push the dedup window past its bound on alice.1.
    stepBoth(
      world,
      {
        kind: 'ack',
        device: { userId: 'alice', deviceId: 2 },
        envelopeIds: Array.from({ length: MAILBOX_CAPACITY }, (_, i) => i + 1),
      },
      T0,
      'ack all',
    );
    // Alternate the two mailboxes so neither fills while the window passes its bound.
    for (let n = MAILBOX_CAPACITY + 2; n <= MESSAGE_ID_DEDUP_WINDOW + 2; n++) {
      const target: [number, PreKeyState] = n % 2 === 0 ? [1, alice1] : [2, alice2];
      stepBoth(world, { ...sendTo(n, [target]), onlyDevice: target[0] }, T0, `window ${n}`);
    }
    // Message 1 has left the window: a resend of it is accepted afresh; message 2 … is still a duplicate.
    expect(stepBoth(world, { ...sendTo(1, [[2, alice2]]), onlyDevice: 2 }, T0, 'forgotten')).toEqual({
      kind: 'accepted',
      messageId: messageId(1),
      duplicate: false,
    });
    expect(stepBoth(world, { ...sendTo(5, [[2, alice2]]), onlyDevice: 2 }, T0, 'remembered')).toEqual({
      kind: 'accepted',
      messageId: messageId(5),
      duplicate: true,
    });
  });
});
