/**
 * The server snapshot codec (WP-SRV-27, WP-STATE-01): canonical JSON that round-trips exactly, so a
 * restarted server loses nothing, and a decoder that refuses every malformed or inconsistent
 * snapshot with a typed error naming the path.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MAILBOX_CAPACITY, MESSAGE_ID_DEDUP_WINDOW } from '../spec/constants.js';
import { nodeProvider } from '../spec/crypto/node.js';
import { registrationProofMessage, signDeviceList, signRegistrationProof } from '../spec/device-list.js';
import type { SignedDeviceList } from '../spec/device-list-types.js';
import type { ErrorCode } from '../spec/errors.js';
import { generateKeyPair, type KeyPair } from '../spec/keys.js';
import { seededRng, type Rng } from '../spec/rng.js';
import type { ServerRequest } from '../spec/server-api.js';
import { generatePreKeyState, type PreKeyState } from './prekeys.js';
import { decodeServerState, encodeServerState, SERVER_STATE_JSON_VERSION } from './server-codec.js';
import { emptyServerState, handleRequest, mailboxDepth, type ServerState } from './server.js';

const c = nodeProvider;
const T0 = 1_700_000_000_000;

interface Device {
  readonly userId: string;
  readonly deviceId: number;
  readonly keys: PreKeyState;
  readonly rng: Rng;
}

function newDevice(userId: string, deviceId: number): Device {
  const rng = seededRng(`server-codec-test/${userId}.${deviceId}`);
  return {
    userId,
    deviceId,
    keys: generatePreKeyState({ crypto: c, rng }, { oneTimePreKeys: 2, oneTimeKyberPreKeys: 1 }),
    rng,
  };
}

function signList(
  userId: string,
  accountKey: KeyPair,
  rng: Rng,
  version: number,
  devices: Device[],
): SignedDeviceList {
  return signDeviceList(
    c,
    accountKey.privateKey,
    {
      userId,
      version,
      accountKey: accountKey.publicKey,
      devices: devices.map((d) => ({
        deviceId: d.deviceId,
        identityKey: d.keys.identityKeyPair.publicKey,
        registrationId: d.keys.registrationId,
      })),
    },
    // A fresh stream per list, so equal states come out whatever order they were built in.
    seededRng(`server-codec-test/list/${userId}/${version}`).randomBytes(64),
  );
}

function registration(device: Device, accountKey: Uint8Array) {
  const { keys } = device;
  const address = { userId: device.userId, deviceId: device.deviceId };
  const message = registrationProofMessage(
    address,
    keys.identityKeyPair.publicKey,
    keys.registrationId,
    accountKey,
  );
  const signed = keys.signedPreKeys[0];
  if (signed === undefined) throw new Error('fixture');
  return {
    device: address,
    identityKey: keys.identityKeyPair.publicKey,
    registrationId: keys.registrationId,
    proof: signRegistrationProof(
      c,
      keys.identityKeyPair.privateKey,
      message,
      seededRng(`server-codec-test/proof/${device.userId}.${device.deviceId}`).randomBytes(64),
    ),
    preKeys: {
      signedPreKey: { keyId: signed.keyId, publicKey: signed.keyPair.publicKey, signature: signed.signature },
      oneTimePreKeys: keys.oneTimePreKeys.map((k) => ({ keyId: k.keyId, publicKey: k.keyPair.publicKey })),
      kyberPreKeys: keys.kyberPreKeys.map((k) => ({
        keyId: k.keyId,
        publicKey: k.publicKey,
        signature: k.signature,
        lastResort: k.lastResort,
      })),
    },
  };
}

function ok(state: ServerState, request: ServerRequest, now = T0): ServerState {
  const result = handleRequest({ crypto: c }, state, request, now);
  if (result.response.kind === 'error' || result.response.kind === 'refused') {
    throw new Error(`${request.kind} failed: ${JSON.stringify(result.response)}`);
  }
  return result.state;
}

const messageId = (n: number): string => n.toString(16).padStart(32, '0');

// Two accounts registered in opposite orders (canonical encoding must not depend on history).
const accounts = ['zoe', 'adam'].map((userId) => {
  const rng = seededRng(`server-codec-test/account/${userId}`);
  const accountKey = generateKeyPair(c, rng);
  return {
    userId,
    rng,
    accountKey,
    d1: newDevice(userId, 1),
    d2: newDevice(userId, 2),
    d3: newDevice(userId, 3),
  };
});
type Acct = (typeof accounts)[number];
function pick(index: number): Acct {
  const account = accounts[index];
  if (account === undefined) throw new Error('fixture');
  return account;
}
const zoe = pick(0);
const adam = pick(1);

function registerAll(order: readonly Acct[]): ServerState {
  let state = emptyServerState();
  for (const a of order) {
    state = ok(state, {
      kind: 'register-account',
      ...registration(a.d1, a.accountKey.publicKey),
      deviceList: signList(a.userId, a.accountKey, a.rng, 1, [a.d1]),
    });
  }
  for (const a of order) {
    state = ok(state, {
      kind: 'update-device-list',
      device: { userId: a.userId, deviceId: 1 },
      deviceList: signList(a.userId, a.accountKey, a.rng, 2, [a.d1, a.d2, a.d3]),
    });
    state = ok(state, { kind: 'register-device', ...registration(a.d3, a.accountKey.publicKey) });
    state = ok(state, { kind: 'register-device', ...registration(a.d2, a.accountKey.publicKey) });
  }
  return state;
}

/** A state with every kind of content: accounts, bundles consumed, mailboxes, dedup, drops, relay, blobs. */
function richState(order: readonly Acct[]): ServerState {
  let state = registerAll(order);
  const from = { userId: 'zoe', deviceId: 1 };
  const to = (a: Acct, devices: Device[], id: number): ServerRequest => ({
    kind: 'send',
    sender: from,
    messageId: messageId(id),
    recipient: a.userId,
    messages: devices.map((d) => ({
      deviceId: d.deviceId,
      registrationId: d.keys.registrationId,
      type: 'prekey',
      bytes: Uint8Array.of(id, d.deviceId),
    })),
  });
  state = ok(state, to(adam, [adam.d1, adam.d2, adam.d3], 1), T0 + 1);
  state = ok(state, to(adam, [adam.d1, adam.d2, adam.d3], 2), T0 + 2);
  state = ok(state, to(zoe, [zoe.d2, zoe.d3], 3), T0 + 3);
  state = ok(state, { kind: 'ack', device: { userId: 'adam', deviceId: 1 }, envelopeIds: [1] });
  state = ok(state, { kind: 'get-bundles', userId: 'adam', deviceIds: [2, 1] });
  // Revoke adam.3 with two queued messages.
  state = ok(state, {
    kind: 'update-device-list',
    device: { userId: 'adam', deviceId: 1 },
    deviceList: signList('adam', adam.accountKey, adam.rng, 3, [adam.d1, adam.d2]),
  });
  state = ok(
    state,
    { kind: 'provision-put', address: 'zzzz-provisioning-1', bytes: Uint8Array.of(1) },
    T0 + 4,
  );
  state = ok(
    state,
    { kind: 'provision-put', address: 'aaaa-provisioning-2', bytes: Uint8Array.of(2) },
    T0 + 5,
  );
  for (const text of ['blob one', 'blob two']) {
    const bytes = new TextEncoder().encode(text);
    state = ok(state, { kind: 'blob-put', blobId: Buffer.from(c.sha256(bytes)).toString('hex'), bytes });
  }
  return state;
}

const RICH = richState([zoe, adam]);
const RICH_JSON = encodeServerState(RICH);

function decodeOk(json: string): ServerState {
  const result = decodeServerState(c, json);
  if (!result.ok) throw new Error(`${result.error.code} ${JSON.stringify(result.error.details)}`);
  return result.value;
}

type JsonObject = { [key: string]: unknown };
/** Parses the snapshot, lets `edit` change it, and re-serialises it. */
function mutate(edit: (o: JsonObject) => void, json = RICH_JSON): string {
  const o = JSON.parse(json) as JsonObject;
  edit(o);
  return JSON.stringify(o);
}
function at(o: unknown, ...path: (string | number)[]): JsonObject {
  let cur: unknown = o;
  for (const key of path) cur = (cur as Record<string | number, unknown>)[key];
  return cur as JsonObject;
}

function list(o: unknown, ...path: (string | number)[]): unknown[] {
  const value: unknown = at(o, ...path);
  if (!Array.isArray(value)) throw new Error('not an array');
  return value;
}

function expectDecodeError(json: string, code: ErrorCode, path?: string): void {
  const result = decodeServerState(c, json);
  expect(result.ok).toBe(false);
  if (result.ok) return;
  expect(result.error.code).toBe(code);
  if (path !== undefined) expect(result.error.details?.['path']).toBe(path);
}

describe('server snapshot codec', () => {
  it('round-trips a rich state exactly, and its encoding is canonical [WP-SRV-27] [WP-STATE-01]', () => {
    const decoded = decodeOk(RICH_JSON);
    expect(decoded).toEqual(RICH);
    expect(encodeServerState(decoded)).toBe(RICH_JSON);
    expect(decodeOk(encodeServerState(emptyServerState()))).toEqual(emptyServerState());
    expect(JSON.parse(RICH_JSON)).toMatchObject({ version: SERVER_STATE_JSON_VERSION });
  });

  it('encodes equal states identically whatever order they were built in [WP-SRV-27]', () => {
    expect(encodeServerState(richState([adam, zoe]))).toBe(RICH_JSON);
  });

  it('a server restarted from its snapshot continues where it stopped [WP-SRV-27]', () => {
    const restarted = decodeOk(RICH_JSON);
    const adam2 = { userId: 'adam', deviceId: 2 };
    expect(mailboxDepth(restarted, adam2)).toBe(mailboxDepth(RICH, adam2));
    const fetch = (s: ServerState) =>
      handleRequest({ crypto: c }, s, { kind: 'fetch', device: adam2 }, T0).response;
    expect(fetch(restarted)).toEqual(fetch(RICH));
    // A resent message is still a duplicate; a bundle fetch continues with the next one-time key.
    const resend: ServerRequest = {
      kind: 'send',
      sender: { userId: 'zoe', deviceId: 1 },
      messageId: messageId(1),
      recipient: 'adam',
      messages: [],
    };
    expect(handleRequest({ crypto: c }, restarted, resend, T0).response).toMatchObject({ duplicate: true });
    const bundles = (s: ServerState) =>
      handleRequest({ crypto: c }, s, { kind: 'get-bundles', userId: 'adam', deviceIds: [1] }, T0).response;
    expect(bundles(restarted)).toEqual(bundles(RICH));
  });

  it('rejects malformed JSON and unknown versions [WP-SRV-27] [WP-STATE-01]', () => {
    expectDecodeError('{', 'STATE_MALFORMED');
    expectDecodeError('[]', 'STATE_MALFORMED');
    expectDecodeError(
      mutate((o) => (o['version'] = SERVER_STATE_JSON_VERSION + 1)),
      'STATE_VERSION_UNKNOWN',
    );
    // Version 1 had no prekey id floors (WP-SRV-29): refused, never read with guessed floors.
    expectDecodeError(
      mutate((o) => (o['version'] = 1)),
      'STATE_VERSION_UNKNOWN',
    );
    expectDecodeError(
      mutate((o) => delete o['version']),
      'STATE_VERSION_UNKNOWN',
    );
  });

  const cases: readonly (readonly [string, (o: JsonObject) => void, string])[] = [
    ['accounts not an array', (o) => (o['accounts'] = {}), 'accounts'],
    ['accounts out of order', (o) => list(o, 'accounts').reverse(), 'accounts[1]'],
    ['a malformed user id', (o) => (at(o, 'accounts', 0)['user_id'] = 'Adam'), 'accounts[0].user_id'],
    [
      'a list that belongs to another account',
      (o) => (at(o, 'accounts', 0)['signed_device_list'] = at(o, 'accounts', 1, 'signed_device_list')),
      'accounts[0].signed_device_list',
    ],
    [
      'a tampered list signature',
      (o) => {
        const s = at(o, 'accounts', 0, 'signed_device_list');
        s['signature'] = `00${String(s['signature']).slice(2)}`;
      },
      'accounts[0].signed_device_list',
    ],
    [
      'uppercase hex',
      (o) => {
        const d = at(o, 'accounts', 0, 'devices', 0);
        d['identity_key'] = String(d['identity_key']).toUpperCase();
      },
      'accounts[0].devices[0].identity_key',
    ],
    [
      'a registered device that differs from its list entry',
      (o) => (at(o, 'accounts', 0, 'devices', 0)['registration_id'] = 99_999),
      'accounts[0].devices[0]',
    ],
    [
      'a registered device the list does not name',
      (o) => (at(o, 'accounts', 0, 'devices', 1)['device_id'] = 3),
      'accounts[0].devices[1]',
    ],
    ['devices out of order', (o) => list(o, 'accounts', 0, 'devices').reverse(), 'accounts[0].devices[1]'],
    [
      'a low-order one-time prekey',
      (o) =>
        (at(o, 'accounts', 1, 'devices', 0, 'pre_keys', 'one_time_pre_keys', 0)['public_key'] =
          `05${'00'.repeat(32)}`),
      'accounts[1].devices[0].pre_keys.one_time_pre_keys[0].public_key',
    ],
    [
      'a truncated Kyber prekey',
      (o) => {
        const k = at(o, 'accounts', 1, 'devices', 0, 'pre_keys', 'last_resort_kyber_pre_key');
        k['public_key'] = String(k['public_key']).slice(0, 100);
      },
      'accounts[1].devices[0].pre_keys.last_resort_kyber_pre_key.public_key',
    ],
    [
      'a repeated Kyber prekey id',
      (o) => {
        const p = at(o, 'accounts', 1, 'devices', 0, 'pre_keys');
        at(p, 'kyber_pre_keys', 0)['key_id'] = at(p, 'last_resort_kyber_pre_key')['key_id'];
      },
      'accounts[1].devices[0].pre_keys.kyber_pre_keys',
    ],
    [
      'a one-time prekey id at its floor',
      (o) => {
        const p = at(o, 'accounts', 1, 'devices', 0, 'pre_keys');
        p['one_time_pre_key_id_floor'] = at(p, 'one_time_pre_keys', 0)['key_id'];
      },
      'accounts[1].devices[0].pre_keys.one_time_pre_key_id_floor',
    ],
    [
      'a missing Kyber prekey id floor',
      (o) => delete at(o, 'accounts', 1, 'devices', 0, 'pre_keys')['kyber_pre_key_id_floor'],
      'accounts[1].devices[0].pre_keys.kyber_pre_key_id_floor',
    ],
    [
      'a prekey id floor past every uint32 id',
      (o) => (at(o, 'accounts', 1, 'devices', 0, 'pre_keys')['kyber_pre_key_id_floor'] = 2 ** 32 + 1),
      'accounts[1].devices[0].pre_keys.kyber_pre_key_id_floor',
    ],
    [
      'a short prekey signature',
      (o) => (at(o, 'accounts', 1, 'devices', 0, 'pre_keys', 'signed_pre_key')['signature'] = 'aa'),
      'accounts[1].devices[0].pre_keys.signed_pre_key.signature',
    ],
    [
      'a mailbox over capacity',
      (o) => {
        const m = at(o, 'accounts', 0, 'devices', 1, 'mailbox');
        const e = at(m, 'envelopes', 0);
        m['envelopes'] = Array.from({ length: MAILBOX_CAPACITY + 1 }, (_, i) => ({
          ...e,
          envelope_id: i + 1,
        }));
        m['next_envelope_id'] = MAILBOX_CAPACITY + 2;
      },
      'accounts[0].devices[1].mailbox.envelopes',
    ],
    [
      'envelope ids that do not increase',
      (o) => (at(o, 'accounts', 0, 'devices', 1, 'mailbox', 'envelopes', 1)['envelope_id'] = 1),
      'accounts[0].devices[1].mailbox.envelopes[1]',
    ],
    [
      'a next envelope id not above the last one',
      (o) => (at(o, 'accounts', 0, 'devices', 1, 'mailbox')['next_envelope_id'] = 2),
      'accounts[0].devices[1].mailbox.next_envelope_id',
    ],
    [
      'an unknown envelope type',
      (o) => (at(o, 'accounts', 0, 'devices', 1, 'mailbox', 'envelopes', 0)['type'] = 'plaintext'),
      'accounts[0].devices[1].mailbox.envelopes[0].type',
    ],
    [
      'a malformed sender',
      (o) => (at(o, 'accounts', 0, 'devices', 1, 'mailbox', 'envelopes', 0, 'sender')['device_id'] = 0),
      'accounts[0].devices[1].mailbox.envelopes[0].sender.device_id',
    ],
    [
      'a recent-send list over the dedup window',
      (o) => {
        const a = at(o, 'accounts', 0);
        const r = at(a, 'recent_sends', 0);
        a['recent_sends'] = Array.from({ length: MESSAGE_ID_DEDUP_WINDOW + 1 }, () => r);
      },
      'accounts[0].recent_sends',
    ],
    [
      'a dropped count of zero',
      (o) => (at(o, 'dropped_by_rule', 0)['count'] = 0),
      'dropped_by_rule[0].count',
    ],
    [
      'a negative server timestamp',
      (o) => (at(o, 'accounts', 0, 'devices', 1, 'mailbox', 'envelopes', 0)['server_timestamp'] = -1),
      'accounts[0].devices[1].mailbox.envelopes[0].server_timestamp',
    ],
    [
      'a malformed provisioning address',
      (o) => (at(o, 'provisioning', 0)['address'] = 'short'),
      'provisioning[0].address',
    ],
    ['provisioning out of order', (o) => list(o, 'provisioning').reverse(), 'provisioning[1]'],
    ['a blob whose id is not its hash', (o) => (at(o, 'blobs', 0)['bytes'] = '00'), 'blobs[0].blob_id'],
    ['blobs out of order', (o) => list(o, 'blobs').reverse(), 'blobs[1]'],
  ];
  it.each(cases)('rejects %s with the path [WP-SRV-27] [WP-STATE-01]', (_name, edit, path) => {
    expectDecodeError(mutate(edit), 'STATE_MALFORMED', path);
  });

  it('round-trips every state reached by random sends, acks and bundle fetches [WP-SRV-27]', () => {
    const base = registerAll([zoe, adam]);
    const devices = accounts.flatMap((a) => [a.d1, a.d2, a.d3]);
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            fc.record({
              kind: fc.constant('send' as const),
              from: fc.integer({ min: 0, max: 5 }),
              to: fc.integer({ min: 0, max: 1 }),
              id: fc.integer({ min: 0, max: 9 }),
            }),
            fc.record({
              kind: fc.constant('ack' as const),
              device: fc.integer({ min: 0, max: 5 }),
              id: fc.integer({ min: 1, max: 6 }),
            }),
            fc.record({ kind: fc.constant('bundles' as const), to: fc.integer({ min: 0, max: 1 }) }),
          ),
          { maxLength: 15 },
        ),
        (commands) => {
          let state = base;
          for (const cmd of commands) {
            let request: ServerRequest;
            if (cmd.kind === 'send') {
              const sender = devices[cmd.from];
              const recipient = accounts[cmd.to];
              if (sender === undefined || recipient === undefined) throw new Error('index');
              const targets = [recipient.d1, recipient.d2, recipient.d3].filter(
                (d) => !(d.userId === sender.userId && d.deviceId === sender.deviceId),
              );
              request = {
                kind: 'send',
                sender: { userId: sender.userId, deviceId: sender.deviceId },
                messageId: messageId(cmd.id),
                recipient: recipient.userId,
                messages: targets.map((d) => ({
                  deviceId: d.deviceId,
                  registrationId: d.keys.registrationId,
                  type: 'whisper',
                  bytes: Uint8Array.of(cmd.id),
                })),
              };
            } else if (cmd.kind === 'ack') {
              const device = devices[cmd.device];
              if (device === undefined) throw new Error('index');
              request = {
                kind: 'ack',
                device: { userId: device.userId, deviceId: device.deviceId },
                envelopeIds: [cmd.id],
              };
            } else {
              request = {
                kind: 'get-bundles',
                userId: accounts[cmd.to]?.userId ?? 'zoe',
                deviceIds: [1, 2, 3],
              };
            }
            state = handleRequest({ crypto: c }, state, request, T0).state;
          }
          const json = encodeServerState(state);
          const decoded = decodeOk(json);
          expect(decoded).toEqual(state);
          expect(encodeServerState(decoded)).toBe(json);
        },
      ),
      { numRuns: 25 },
    );
  });
});
