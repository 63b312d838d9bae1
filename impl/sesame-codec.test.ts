/**
 * Sesame state codec (WHITEPAPER.md WP-STATE-01, WP-SES-17): canonical JSON round trips of real
 * multi-device states, an encoding independent of insertion order, a decoded state that carries the
 * conversation on, refusals of every malformed or rule-breaking input with a typed error (never a
 * throw), and a fast-check round trip over random record operations.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MAX_DEVICE_RECORDS_PER_USER, MAX_MESSAGE_RECORDS, MAX_RESENDS } from '../spec/constants.js';
import { nodeProvider } from '../spec/crypto/node.js';
import type { Env } from '../spec/env.js';
import type { Result } from '../spec/errors.js';
import type { DeviceAddress } from '../spec/identity.js';
import { seededRng } from '../spec/rng.js';
import { bundleFromPreKeyState, generatePreKeyState, type PreKeyState } from './prekeys.js';
import {
  conditionalUpdate,
  deleteDevice,
  emptySesameState,
  encryptForUser,
  markDeviceStale,
  markUserStale,
  prepEncrypt,
  prepEncryptNewSession,
  receiveMessage,
  recordSentMessage,
  type SesameState,
} from './sesame.js';
import { decodeSesameState, encodeSesameState, SESAME_STATE_JSON_VERSION } from './sesame-codec.js';

const crypto = nodeProvider;
const T0 = 1_700_000_000_000;
const NUM_RUNS = process.env['LOCKSTEP_FULL'] ? 500 : 50;
const text = (s: string): Uint8Array => new TextEncoder().encode(s);

type JsonObject = { [key: string]: unknown };

interface Dev {
  readonly address: DeviceAddress;
  readonly env: Env;
  prekeys: PreKeyState;
  sesame: SesameState;
}

function makeDev(userId: string, deviceId: number): Dev {
  const env: Env = { crypto, rng: seededRng(`sesame-codec/${userId}.${deviceId}`) };
  const prekeys = generatePreKeyState(env, { oneTimePreKeys: 3, oneTimeKyberPreKeys: 0 });
  return { address: { userId, deviceId }, env, prekeys, sesame: emptySesameState({ userId, deviceId }) };
}

function unwrap<T>(result: Result<T>): T {
  if (!result.ok) throw new Error(`${result.error.code}: ${result.error.message}`);
  return result.value;
}

function prep(from: Dev, to: Dev, preKeyId: number | null, newSession = false): void {
  const bundle = {
    ...bundleFromPreKeyState(to.prekeys, { deviceId: to.address.deviceId, preKeyId }),
    userId: to.address.userId,
  };
  const local = {
    identityKeyPair: from.prekeys.identityKeyPair,
    registrationId: from.prekeys.registrationId,
  };
  const step = newSession ? prepEncryptNewSession : prepEncrypt;
  from.sesame = unwrap(step(from.env, from.sesame, local, bundle, T0)).state;
}

/** A state with sessions (current and archived), stale marks and message records. */
function richState(): { a1: Dev; b1: Dev; b2: Dev; a2: Dev } {
  const a1 = makeDev('alice', 1);
  const a2 = makeDev('alice', 2);
  const b1 = makeDev('bob', 1);
  const b2 = makeDev('bob', 2);
  prep(a1, b1, 1);
  prep(a1, b2, 1);
  prep(a1, a2, 1);
  const sent = unwrap(encryptForUser(a1.env, a1.sesame, 'bob', text('hello'), T0));
  a1.sesame = sent.state;
  for (const used of sent.sessionsUsed)
    a1.sesame = recordSentMessage(a1.sesame, {
      messageId: 'ab'.repeat(16),
      userId: 'bob',
      ...used,
      plaintext: text('hello'),
    });
  const copy = sent.messages[0];
  if (copy === undefined || copy.type === 'retry-request') throw new Error('setup');
  const received = unwrap(
    receiveMessage(b1.env, b1.sesame, b1.prekeys, a1.address, copy.type, copy.bytes, T0),
  );
  b1.sesame = received.state;
  b1.prekeys = received.prekeys;
  const reply = unwrap(encryptForUser(b1.env, b1.sesame, 'alice', text('hi'), T0));
  b1.sesame = reply.state;
  const answer = reply.messages[0];
  if (answer === undefined || answer.type === 'retry-request') throw new Error('setup');
  a1.sesame = unwrap(
    receiveMessage(a1.env, a1.sesame, a1.prekeys, b1.address, answer.type, answer.bytes, T0),
  ).state;
  // A second session with bob.1 puts the first among the inactive ones.
  prep(a1, b1, 2, true);
  a1.sesame = markDeviceStale(a1.sesame, 'bob', 2, T0 + 5);
  a1.sesame = conditionalUpdate(a1.sesame, 'carol', 3, b2.prekeys.identityKeyPair.publicKey, 77).state;
  a1.sesame = markUserStale(a1.sesame, 'carol', T0 + 9);
  return { a1, a2, b1, b2 };
}

function expectRoundTrip(state: SesameState): string {
  const json = encodeSesameState(state);
  const decoded = decodeSesameState(json);
  if (!decoded.ok) throw new Error(`${decoded.error.code} at ${String(decoded.error.details?.['path'])}`);
  expect(decoded.value).toEqual(state);
  expect(encodeSesameState(decoded.value)).toBe(json);
  return json;
}

function edited(json: string, edit: (o: JsonObject) => void): string {
  const o = JSON.parse(json) as JsonObject;
  edit(o);
  return JSON.stringify(o);
}

/** Walks `path` (keys and indices) into a parsed JSON value. */
function at(o: unknown, path: readonly (string | number)[]): JsonObject {
  let node: unknown = o;
  for (const key of path) node = (node as JsonObject)[key];
  return node as JsonObject;
}
const list = (o: unknown, path: readonly (string | number)[]): unknown[] =>
  at(o, path) as unknown as unknown[];

describe('Sesame state codec', () => {
  const { a1, b1 } = richState();
  const json = encodeSesameState(a1.sesame);

  it('round-trips a multi-device state with sessions, stale marks and message records [WP-STATE-01] [WP-SES-17]', () => {
    expectRoundTrip(a1.sesame);
    expectRoundTrip(b1.sesame);
    expectRoundTrip(emptySesameState({ userId: 'alice', deviceId: 1 }));
    const o = JSON.parse(json) as JsonObject;
    expect(o['version']).toBe(SESAME_STATE_JSON_VERSION);
    expect(list(o, ['users']).map((u) => (u as JsonObject)['user_id'])).toEqual(['alice', 'bob', 'carol']);
    expect(list(o, ['users', 1, 'devices', 0, 'sessions', 'archived'])).toHaveLength(1);
  });

  it('the encoding does not depend on the order records were created in [WP-SES-17]', () => {
    const key1 = b1.prekeys.identityKeyPair.publicKey;
    const key2 = a1.prekeys.identityKeyPair.publicKey;
    let x = emptySesameState({ userId: 'zed', deviceId: 1 });
    x = conditionalUpdate(x, 'bob', 2, key1, 1).state;
    x = conditionalUpdate(x, 'alice', 1, key2, 2).state;
    x = conditionalUpdate(x, 'bob', 1, key2, 3).state;
    let y = emptySesameState({ userId: 'zed', deviceId: 1 });
    y = conditionalUpdate(y, 'alice', 1, key2, 2).state;
    y = conditionalUpdate(y, 'bob', 1, key2, 3).state;
    y = conditionalUpdate(y, 'bob', 2, key1, 1).state;
    expect(encodeSesameState(x)).toBe(encodeSesameState(y));
  });

  it('a decoded state carries the conversation on [WP-STATE-01]', () => {
    const decoded = unwrap(decodeSesameState(encodeSesameState(b1.sesame)));
    const next = unwrap(encryptForUser(b1.env, decoded, 'alice', text('after a restart'), T0));
    const copy = next.messages[0];
    if (copy === undefined || copy.type === 'retry-request') throw new Error('no copy');
    // Alice holds a newer active session with bob.1 now; the old one is inactive and still decrypts.
    const alice = unwrap(decodeSesameState(json));
    const received = unwrap(receiveMessage(a1.env, alice, a1.prekeys, b1.address, copy.type, copy.bytes, T0));
    expect(new TextDecoder().decode(received.plaintext)).toBe('after a restart');
  });

  it('refuses malformed and rule-breaking states with a typed error [WP-STATE-01] [WP-SES-17]', () => {
    const ownKey = a1.prekeys.identityKeyPair.publicKey;
    const cases: readonly [string, (o: JsonObject) => void][] = [
      ['self device id out of range', (o) => (at(o, ['self'])['device_id'] = 0)],
      ['user id malformed', (o) => (at(o, ['users', 0])['user_id'] = 'Alice')],
      ['users out of order', (o) => list(o, ['users']).reverse()],
      ['a user twice', (o) => list(o, ['users']).push(list(o, ['users'])[2])],
      ['an empty user record', (o) => (at(o, ['users', 2])['devices'] = [])],
      ['devices out of order', (o) => list(o, ['users', 1, 'devices']).reverse()],
      ['a record for our own address', (o) => (at(o, ['users', 0, 'devices', 0])['device_id'] = 1)],
      [
        'too many device records',
        (o) => {
          const devices = list(o, ['users', 2, 'devices']);
          const one = devices[0] as JsonObject;
          for (let i = 1; i <= MAX_DEVICE_RECORDS_PER_USER; i++) devices[i] = { ...one, device_id: 3 + i };
        },
      ],
      ['a short identity key', (o) => (at(o, ['users', 1, 'devices', 0])['identity_key'] = 'aa')],
      [
        'a registration id beyond uint32',
        (o) => (at(o, ['users', 1, 'devices', 0])['registration_id'] = 2 ** 32),
      ],
      ['a stale mark that is not a time', (o) => (at(o, ['users', 1, 'devices', 1])['stale_since'] = -1)],
      [
        'a session with another identity key',
        (o) => (at(o, ['users', 1, 'devices', 0])['identity_key'] = Buffer.from(ownKey).toString('hex')),
      ],
      [
        'the active session also inactive',
        (o) =>
          list(o, ['users', 1, 'devices', 0, 'sessions', 'archived']).push(
            at(o, ['users', 1, 'devices', 0, 'sessions', 'current']),
          ),
      ],
      [
        'a malformed session',
        (o) => (at(o, ['users', 1, 'devices', 0, 'sessions', 'current'])['root_key'] = 'zz'),
      ],
      ['a message id malformed', (o) => (at(o, ['message_records', 0])['message_id'] = 'x')],
      ['a message record for our own address', (o) => (at(o, ['message_records', 0])['user_id'] = 'alice')],
      ['a message record twice', (o) => list(o, ['message_records']).push(list(o, ['message_records'])[0])],
      ['too many resends', (o) => (at(o, ['message_records', 0])['resends'] = MAX_RESENDS + 1)],
      [
        'too many message records',
        (o) => {
          const records = list(o, ['message_records']);
          const one = records[0] as JsonObject;
          for (let i = 0; i <= MAX_MESSAGE_RECORDS; i++)
            records[i] = { ...one, message_id: i.toString(16).padStart(32, '0') };
        },
      ],
      ['message records missing', (o) => delete o['message_records']],
    ];
    for (const [name, edit] of cases) {
      const result = decodeSesameState(edited(json, edit));
      expect(result.ok, name).toBe(false);
      if (!result.ok) expect(result.error.code, name).toBe('STATE_MALFORMED');
    }
    const nested = decodeSesameState(
      edited(json, (o) => (at(o, ['users', 1, 'devices', 0, 'sessions'])['version'] = 9)),
    );
    expect(nested.ok ? null : nested.error).toMatchObject({
      code: 'STATE_VERSION_UNKNOWN',
      details: { path: 'users[1].devices[0].sessions' },
    });
    const inner = decodeSesameState(
      edited(json, (o) => (at(o, ['users', 1, 'devices', 0, 'sessions', 'current'])['root_key'] = 'zz')),
    );
    expect(inner.ok ? null : inner.error.details?.['path']).toBe(
      'users[1].devices[0].sessions.current.root_key',
    );
    expect(decodeSesameState('{').ok).toBe(false);
    expect(decodeSesameState('[]').ok).toBe(false);
    const version = decodeSesameState(edited(json, (o) => (o['version'] = 2)));
    expect(version.ok ? null : version.error.code).toBe('STATE_VERSION_UNKNOWN');
  });

  it('round-trips every state random record operations produce [WP-STATE-01] [WP-SES-17]', () => {
    const keys = [a1, b1].map((d) => d.prekeys.identityKeyPair.publicKey);
    const userId = fc.constantFrom('alice', 'bob', 'carol', 'constructor');
    const op = fc.oneof(
      fc.record({
        kind: fc.constant('update' as const),
        userId,
        deviceId: fc.integer({ min: 1, max: 4 }),
        key: fc.nat(1),
        reg: fc.nat(3),
      }),
      fc.record({ kind: fc.constant('stale-user' as const), userId, at: fc.nat(1000) }),
      fc.record({
        kind: fc.constant('stale-device' as const),
        userId,
        deviceId: fc.integer({ min: 1, max: 4 }),
        at: fc.nat(1000),
      }),
      fc.record({ kind: fc.constant('delete' as const), userId, deviceId: fc.integer({ min: 1, max: 4 }) }),
      fc.record({
        kind: fc.constant('record' as const),
        userId,
        deviceId: fc.integer({ min: 2, max: 4 }),
        n: fc.nat(5),
        body: fc.uint8Array({ maxLength: 8 }),
      }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 30 }), (ops) => {
        let s = emptySesameState({ userId: 'alice', deviceId: 1 });
        for (const o of ops) {
          if (o.kind === 'update')
            s = conditionalUpdate(s, o.userId, o.deviceId, keys[o.key] ?? new Uint8Array(), o.reg).state;
          else if (o.kind === 'stale-user') s = markUserStale(s, o.userId, T0 + o.at);
          else if (o.kind === 'stale-device') s = markDeviceStale(s, o.userId, o.deviceId, T0 + o.at);
          else if (o.kind === 'delete') s = deleteDevice(s, o.userId, o.deviceId);
          else
            s = recordSentMessage(s, {
              messageId: o.n.toString(16).padStart(32, '0'),
              userId: o.userId,
              deviceId: o.deviceId,
              sessionBaseKey: keys[0] ?? new Uint8Array(),
              plaintext: o.body,
            });
          expectRoundTrip(s);
        }
      }),
      { numRuns: NUM_RUNS },
    );
  });
});
