/**
 * State codec (WHITEPAPER.md WP-STATE-01): canonical JSON round trips of session records and prekey
 * states at several points of a conversation, decoded states that carry the conversation on, and
 * malformed inputs that are refused with a typed error and never a throw.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { nodeProvider } from '../spec/crypto/node.js';
import type { Result } from '../spec/errors.js';
import {
  createParty,
  deliverOk,
  establishedPair,
  send,
  startSession,
  T0,
  type Party,
} from '../test/support/parties.js';
import { decryptMessage, encryptMessage } from './session-record.js';
import {
  decodePreKeyState,
  decodeSessionRecord,
  encodePreKeyState,
  encodeSessionRecord,
} from './state-codec.js';
import { EMPTY_SESSION_RECORD } from './session-state.js';

const crypto = nodeProvider;
const SMALL = { oneTimePreKeys: 2, oneTimeKyberPreKeys: 1 } as const;
const NUM_RUNS = process.env['LOCKSTEP_FULL'] ? 500 : 30;

type JsonObject = { [key: string]: unknown };

function expectRoundTrip(party: Party): void {
  const recordJson = encodeSessionRecord(party.record);
  const record = decodeSessionRecord(recordJson);
  expect(record.ok).toBe(true);
  if (!record.ok) return;
  expect(record.value).toEqual(party.record);
  expect(encodeSessionRecord(record.value)).toBe(recordJson);

  const prekeyJson = encodePreKeyState(party.prekeys);
  const prekeys = decodePreKeyState(prekeyJson);
  expect(prekeys.ok).toBe(true);
  if (!prekeys.ok) return;
  expect(prekeys.value).toEqual(party.prekeys);
  expect(encodePreKeyState(prekeys.value)).toBe(prekeyJson);
}

/** Applies `edit` to the parsed JSON of `json` and serializes it again. */
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

function codeOf<T>(result: Result<T>): string {
  return result.ok ? 'ok' : result.error.code;
}

/** A conversation with a pending session archived, skipped keys stored and prekeys consumed. */
function richPair() {
  const { alice, bob } = establishedPair(crypto, 'codec-rich', SMALL);
  send(bob, 'skipped 0');
  send(bob, 'skipped 1');
  deliverOk(alice, send(bob, 'delivered'));
  // A second, still pending session on Alice's side archives the established one.
  startSession(alice, bob, { choice: { preKeyId: 2, kyberPreKeyId: 2 } });
  return { alice, bob };
}

describe('state codec', () => {
  it('round trip at several points of a conversation [WP-STATE-01]', () => {
    const alice = createParty('alice', crypto, 'codec-rt', SMALL);
    const bob = createParty('bob', crypto, 'codec-rt', SMALL);
    expectRoundTrip(alice); // fresh prekeys, empty record
    startSession(alice, bob);
    expectRoundTrip(alice); // pending initiator session
    const first = send(alice, 'one');
    send(alice, 'lost');
    const third = send(alice, 'three');
    deliverOk(bob, third);
    expectRoundTrip(bob); // skipped keys, consumed prekeys
    deliverOk(bob, first);
    deliverOk(alice, send(bob, 'reply'));
    expectRoundTrip(alice); // acknowledged, two receiving chains
    const rich = richPair();
    expectRoundTrip(rich.alice); // pending current, established archived
    expectRoundTrip(rich.bob);
  });

  it('a decoded record continues the conversation [WP-STATE-01]', () => {
    const { alice, bob } = establishedPair(crypto, 'codec-continue', SMALL);
    const skipped = send(alice, 'skipped, then delivered');
    deliverOk(bob, send(alice, 'delivered'));
    const decodedRecord = decodeSessionRecord(encodeSessionRecord(bob.record));
    const decodedPrekeys = decodePreKeyState(encodePreKeyState(bob.prekeys));
    if (!decodedRecord.ok || !decodedPrekeys.ok) throw new Error('decode failed');
    // Decrypting from a skipped key: no draws, so both copies must end in identical states.
    const fromOriginal = decryptMessage(bob.env, bob.record, bob.prekeys, skipped);
    const fromDecoded = decryptMessage(bob.env, decodedRecord.value, decodedPrekeys.value, skipped);
    if (!fromOriginal.ok || !fromDecoded.ok) throw new Error('decrypt failed');
    expect(new TextDecoder().decode(fromDecoded.value.plaintext)).toBe('skipped, then delivered');
    expect(encodeSessionRecord(fromDecoded.value.record)).toBe(
      encodeSessionRecord(fromOriginal.value.record),
    );
    // Encryption draws nothing: the same bytes from either copy, and the peer decrypts them.
    const a = encryptMessage(bob.env, fromOriginal.value.record, new TextEncoder().encode('onwards'), T0);
    const b = encryptMessage(bob.env, fromDecoded.value.record, new TextEncoder().encode('onwards'), T0);
    if (!a.ok || !b.ok) throw new Error('encrypt failed');
    expect(b.value.message).toEqual(a.value.message);
    expect(deliverOk(alice, b.value.message)).toBe('onwards');
  });

  it('a decoded prekey state accepts a new session and consumes its prekeys [WP-STATE-01]', () => {
    const alice = createParty('alice', crypto, 'codec-prekeys', SMALL);
    const bob = createParty('bob', crypto, 'codec-prekeys', SMALL);
    startSession(alice, bob, { choice: { preKeyId: 1, kyberPreKeyId: 1 } });
    const decoded = decodePreKeyState(encodePreKeyState(bob.prekeys));
    if (!decoded.ok) throw new Error('decode failed');
    bob.prekeys = decoded.value;
    expect(deliverOk(bob, send(alice, 'hi'))).toBe('hi');
    expect(bob.prekeys.oneTimePreKeys.map((k) => k.keyId)).toEqual([2]);
    expect(bob.prekeys.kyberPreKeys.map((k) => k.keyId)).toEqual([2]);
  });

  describe('malformed session records', () => {
    const { alice } = richPair();
    const good = encodeSessionRecord(alice.record);
    const cases: ReadonlyArray<{ label: string; json: () => string; code: string; path?: string }> = [
      { label: 'not JSON', json: () => '{"version":1,', code: 'STATE_MALFORMED' },
      { label: 'an array', json: () => '[]', code: 'STATE_MALFORMED' },
      { label: 'null', json: () => 'null', code: 'STATE_MALFORMED' },
      { label: 'a string', json: () => '"record"', code: 'STATE_MALFORMED' },
      {
        label: 'version 2',
        json: () => edited(good, (o) => (o['version'] = 2)),
        code: 'STATE_VERSION_UNKNOWN',
      },
      {
        label: 'version 0',
        json: () => edited(good, (o) => (o['version'] = 0)),
        code: 'STATE_VERSION_UNKNOWN',
      },
      {
        label: 'current missing',
        json: () => edited(good, (o) => delete o['current']),
        code: 'STATE_MALFORMED',
        path: 'current',
      },
      {
        label: 'archived not an array',
        json: () => edited(good, (o) => (o['archived'] = {})),
        code: 'STATE_MALFORMED',
        path: 'archived',
      },
      {
        label: 'root key of 31 bytes',
        json: () => edited(good, (o) => (at(o, ['current'])['root_key'] = '00'.repeat(31))),
        code: 'STATE_MALFORMED',
        path: 'current.root_key',
      },
      {
        label: 'root key in uppercase hex',
        json: () => edited(good, (o) => (at(o, ['current'])['root_key'] = 'AB'.repeat(32))),
        code: 'STATE_MALFORMED',
        path: 'current.root_key',
      },
      {
        label: 'root key of odd hex length',
        json: () => edited(good, (o) => (at(o, ['current'])['root_key'] = '0'.repeat(63))),
        code: 'STATE_MALFORMED',
      },
      {
        label: 'root key as a number',
        json: () => edited(good, (o) => (at(o, ['current'])['root_key'] = 7)),
        code: 'STATE_MALFORMED',
      },
      {
        label: 'negative chain index',
        json: () => edited(good, (o) => (at(o, ['current', 'sender_chain_key'])['index'] = -1)),
        code: 'STATE_MALFORMED',
        path: 'current.sender_chain_key.index',
      },
      {
        label: 'fractional chain index',
        json: () => edited(good, (o) => (at(o, ['current', 'sender_chain_key'])['index'] = 1.5)),
        code: 'STATE_MALFORMED',
      },
      {
        label: 'chain index as a string',
        json: () => edited(good, (o) => (at(o, ['current', 'sender_chain_key'])['index'] = '3')),
        code: 'STATE_MALFORMED',
      },
      {
        label: 'private key of 33 bytes',
        json: () =>
          edited(good, (o) => (at(o, ['current', 'sender_ratchet_key'])['private_key'] = '00'.repeat(33))),
        code: 'STATE_MALFORMED',
      },
      {
        label: 'pending PreKey data missing',
        json: () => edited(good, (o) => delete at(o, ['current'])['pending_pre_key']),
        code: 'STATE_MALFORMED',
      },
      {
        label: 'Kyber ciphertext of 1568 bytes',
        json: () =>
          edited(
            good,
            (o) => (at(o, ['current', 'pending_pre_key'])['kyber_ciphertext'] = '08'.repeat(1568)),
          ),
        code: 'STATE_MALFORMED',
        path: 'current.pending_pre_key.kyber_ciphertext',
      },
      {
        label: 'skipped seed of 16 bytes',
        json: () =>
          edited(
            good,
            (o) => (at(o, ['archived', 0, 'receiver_chains', 1, 'skipped', 0])['seed'] = '11'.repeat(16)),
          ),
        code: 'STATE_MALFORMED',
        path: 'archived[0].receiver_chains[1].skipped[0].seed',
      },
      {
        label: 'receiver chains missing in an archived session',
        json: () => edited(good, (o) => delete at(o, ['archived', 0])['receiver_chains']),
        code: 'STATE_MALFORMED',
      },
    ];
    it.each(cases)('$label → $code, no throw [WP-STATE-01]', ({ json, code, path }) => {
      const input = json();
      let result: Result<unknown> | undefined;
      expect(() => (result = decodeSessionRecord(input))).not.toThrow();
      if (result === undefined || result.ok) throw new Error('expected a rejection');
      expect(result.error).toMatchObject({ code, rule: 'WP-STATE-01' });
      if (path !== undefined) expect(result.error.details?.['path']).toBe(path);
    });

    it('the fixture really has the fields the cases edit', () => {
      const o = JSON.parse(good) as JsonObject;
      expect(at(o, ['current'])['pending_pre_key']).not.toBeNull();
      expect(at(o, ['archived', 0, 'receiver_chains', 1, 'skipped'])).toHaveLength(2);
      expect(decodeSessionRecord(good).ok).toBe(true);
    });
  });

  describe('malformed prekey states', () => {
    const bob = createParty('bob', crypto, 'codec-bad-prekeys', SMALL);
    const good = encodePreKeyState(bob.prekeys);
    const cases: ReadonlyArray<{ label: string; json: () => string; code: string }> = [
      {
        label: 'version 9',
        json: () => edited(good, (o) => (o['version'] = 9)),
        code: 'STATE_VERSION_UNKNOWN',
      },
      { label: 'not JSON', json: () => 'version: 1', code: 'STATE_MALFORMED' },
      {
        label: 'Kyber secret key of 3168 bytes',
        json: () => edited(good, (o) => (at(o, ['kyber_pre_keys', 0])['secret_key'] = '08'.repeat(3168))),
        code: 'STATE_MALFORMED',
      },
      {
        label: 'last_resort as a string',
        json: () => edited(good, (o) => (at(o, ['kyber_pre_keys', 1])['last_resort'] = 'yes')),
        code: 'STATE_MALFORMED',
      },
      {
        label: 'signature of 63 bytes',
        json: () => edited(good, (o) => (at(o, ['signed_pre_keys', 0])['signature'] = '00'.repeat(63))),
        code: 'STATE_MALFORMED',
      },
      {
        label: 'one-time prekeys not an array',
        json: () => edited(good, (o) => (o['one_time_pre_keys'] = null)),
        code: 'STATE_MALFORMED',
      },
      {
        label: 'registration id missing',
        json: () => edited(good, (o) => delete o['registration_id']),
        code: 'STATE_MALFORMED',
      },
    ];
    it.each(cases)('$label → $code, no throw [WP-STATE-01]', ({ json, code }) => {
      const input = json();
      let result: Result<unknown> | undefined;
      expect(() => (result = decodePreKeyState(input))).not.toThrow();
      if (result === undefined || result.ok) throw new Error('expected a rejection');
      expect(result.error).toMatchObject({ code, rule: 'WP-STATE-01' });
    });
  });

  describe('a decoded state never makes a later step throw [WP-STATE-01]', () => {
    // Fields whose JSON type is right but whose value no protocol step can use: the decoder must
    // refuse them (STATE_MALFORMED) rather than let encryption or decryption throw later.
    const { alice } = richPair();
    const aliceJson = encodeSessionRecord(alice.record);
    const cases: ReadonlyArray<{ label: string; edit: (o: JsonObject) => void }> = [
      {
        label: 'sender chain index above uint32',
        edit: (o) => (at(o, ['current', 'sender_chain_key'])['index'] = 2 ** 32),
      },
      {
        label: 'previous counter above uint32',
        edit: (o) => (at(o, ['current'])['previous_counter'] = 2 ** 32),
      },
      {
        label: 'registration id above uint32',
        edit: (o) => (at(o, ['current'])['local_registration_id'] = 2 ** 32),
      },
      {
        label: 'pending one-time prekey id above uint32',
        edit: (o) => (at(o, ['current', 'pending_pre_key'])['pre_key_id'] = 2 ** 32),
      },
      {
        label: 'sender ratchet public key with type byte 0x06',
        edit: (o) => {
          const k = at(o, ['current', 'sender_ratchet_key']);
          k['public_key'] = `06${String(k['public_key']).slice(2)}`;
        },
      },
      {
        label: 'pending Kyber ciphertext with type byte 0x09',
        edit: (o) => {
          const p = at(o, ['current', 'pending_pre_key']);
          p['kyber_ciphertext'] = `09${String(p['kyber_ciphertext']).slice(2)}`;
        },
      },
    ];
    it.each(cases)('session record: $label', ({ edit }) => {
      const decoded = decodeSessionRecord(edited(aliceJson, edit));
      if (!decoded.ok) {
        expect(decoded.error.code).toBe('STATE_MALFORMED');
        return;
      }
      expect(() => encryptMessage(alice.env, decoded.value, new Uint8Array(4), T0)).not.toThrow();
    });

    it('prekey state: Kyber secret key with type byte 0x09', () => {
      const responder = createParty('carol', crypto, 'codec-throw', SMALL);
      const initiator = createParty('dave', crypto, 'codec-throw', SMALL);
      startSession(initiator, responder, { choice: { kyberPreKeyId: 1 } });
      const opener = send(initiator, 'hi');
      const json = edited(encodePreKeyState(responder.prekeys), (o) => {
        const k = at(o, ['kyber_pre_keys', 0]);
        k['secret_key'] = `09${String(k['secret_key']).slice(2)}`;
      });
      const decoded = decodePreKeyState(json);
      if (!decoded.ok) {
        expect(decoded.error.code).toBe('STATE_MALFORMED');
        return;
      }
      expect(() => decryptMessage(responder.env, EMPTY_SESSION_RECORD, decoded.value, opener)).not.toThrow();
    });
  });

  describe('properties', () => {
    const { alice } = richPair();
    const recordJson = encodeSessionRecord(alice.record);
    const prekeyJson = encodePreKeyState(alice.prekeys);

    /** Every path to a value inside a parsed JSON document. */
    function paths(value: unknown, prefix: (string | number)[] = []): (string | number)[][] {
      if (typeof value !== 'object' || value === null) return [prefix];
      const entries: [string | number, unknown][] = Array.isArray(value)
        ? value.map((v, i) => [i, v] as [number, unknown])
        : Object.entries(value);
      return [prefix, ...entries.flatMap(([k, v]) => paths(v, [...prefix, k]))];
    }
    const recordPaths = paths(JSON.parse(recordJson)).filter((p) => p.length > 0);
    const prekeyPaths = paths(JSON.parse(prekeyJson)).filter((p) => p.length > 0);

    function replaced(json: string, path: readonly (string | number)[], value: unknown): string {
      return edited(json, (o) => {
        const parent = at(o, path.slice(0, -1));
        const key = path[path.length - 1];
        if (key !== undefined) parent[key] = value;
      });
    }

    const isStateCode = (code: string): boolean =>
      code === 'ok' || code === 'STATE_MALFORMED' || code === 'STATE_VERSION_UNKNOWN';

    it('arbitrary strings and JSON values never make a decoder throw [WP-STATE-01]', () => {
      fc.assert(
        fc.property(fc.oneof(fc.string(), fc.json()), (input) => {
          expect(isStateCode(codeOf(decodeSessionRecord(input)))).toBe(true);
          expect(isStateCode(codeOf(decodePreKeyState(input)))).toBe(true);
        }),
        { numRuns: NUM_RUNS * 10 },
      );
    });

    it('replacing any field of a valid encoding never makes a decoder throw [WP-STATE-01]', () => {
      fc.assert(
        fc.property(
          fc.constantFrom(...recordPaths),
          fc.constantFrom(...prekeyPaths),
          fc.jsonValue({ maxDepth: 2 }),
          (recordPath, prekeyPath, value) => {
            expect(isStateCode(codeOf(decodeSessionRecord(replaced(recordJson, recordPath, value))))).toBe(
              true,
            );
            expect(isStateCode(codeOf(decodePreKeyState(replaced(prekeyJson, prekeyPath, value))))).toBe(
              true,
            );
          },
        ),
        { numRuns: NUM_RUNS * 10 },
      );
    });
  });
});
