/**
 * Sesame scenarios (WHITEPAPER.md WP-SES-01..16; Sesame rev 2 §3–§4, §6.5; properties P18–P28 of
 * the analyses digest): users with several devices and real keys, fan-out to recipients and own
 * siblings, the server's refusals, receiving (Insert, Activate, rollback, duplicates), retry
 * requests, stale records, bounds, and a fast-check interaction property with a trivial server.
 * Every step is followed by the invariant check of WP-SES-01 (P18/P19).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { PreKeyBundle } from '../spec/bundle.js';
import {
  MAX_DEVICE_RECORDS_PER_USER,
  MAX_LATENCY_MS,
  MAX_MESSAGE_RECORDS,
  MAX_RESENDS,
  MAX_UNACKNOWLEDGED_SESSION_AGE_MS,
  MAX_USER_RECORDS,
} from '../spec/constants.js';
import { nodeProvider } from '../spec/crypto/node.js';
import type { DeviceListEntry, SignedDeviceList } from '../spec/device-list-types.js';
import type { Env } from '../spec/env.js';
import { UsageError, type ProtocolError, type Result } from '../spec/errors.js';
import type { DeviceAddress, DeviceId, UserId } from '../spec/identity.js';
import { fingerprint } from '../spec/keys.js';
import { seededRng } from '../spec/rng.js';
import type { OutgoingDeviceMessage, SendRefusal } from '../spec/server-api.js';
import { deepFreeze, flipByte } from '../test/support/parties.js';
import type { LocalIdentity } from './pqxdh.js';
import { bundleFromPreKeyState, generatePreKeyState, type PreKeyState } from './prekeys.js';
import {
  abstractSesame,
  applySendRefusal,
  checkRecordBounds,
  cleanupStaleRecords,
  conditionalUpdate,
  deleteDevice,
  deleteMessageRecords,
  deleteUser,
  devicesNeedingSessions,
  emptySesameState,
  encryptForDevice,
  encryptForUser,
  getDeviceRecord,
  getUserRecord,
  handleRetryRequest,
  markDeviceStale,
  markUserStale,
  prepEncrypt,
  prepEncryptNewSession,
  receiveMessage,
  recordSentMessage,
  sesameInvariantViolations,
  type DeviceRecord,
  type ReceivedMessage,
  type SesameState,
  type UserRecord,
} from './sesame.js';
import { encodeSesameState } from './sesame-codec.js';
import { encodePreKeyState } from './state-codec.js';

const crypto = nodeProvider;
const T0 = 1_700_000_000_000;
const OPKS = 6;
const text = (s: string): Uint8Array => new TextEncoder().encode(s);
const str = (b: Uint8Array): string => new TextDecoder().decode(b);
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const EMPTY_LIST: SignedDeviceList = { list: new Uint8Array(0), signature: new Uint8Array(0) };

// ---------------------------------------------------------------------------------------------
// A small world of devices with real keys and a trivial key directory
// ---------------------------------------------------------------------------------------------

/** One device: its keys, its Sesame state, and how many one-time prekeys the directory handed out. */
interface Dev {
  readonly address: DeviceAddress;
  readonly env: Env;
  prekeys: PreKeyState;
  sesame: SesameState;
  handedOut: number;
}

function makeDev(seed: string, userId: UserId, deviceId: DeviceId): Dev {
  const env: Env = { crypto, rng: seededRng(`${seed}/${userId}.${deviceId}`) };
  const prekeys = generatePreKeyState(env, { oneTimePreKeys: OPKS, oneTimeKyberPreKeys: 0 });
  return {
    address: { userId, deviceId },
    env,
    prekeys,
    sesame: emptySesameState({ userId, deviceId }),
    handedOut: 0,
  };
}

function makeUser(seed: string, userId: UserId, count: number): Dev[] {
  return Array.from({ length: count }, (_, i) => makeDev(seed, userId, i + 1));
}

/** What an honest server hands out: each one-time prekey once, then none; the last-resort Kyber key. */
function bundleOf(dev: Dev): PreKeyBundle & { readonly userId: UserId } {
  dev.handedOut += 1;
  const preKeyId = dev.handedOut <= OPKS ? dev.handedOut : null;
  return {
    ...bundleFromPreKeyState(dev.prekeys, { deviceId: dev.address.deviceId, preKeyId, kyberPreKeyId: 1 }),
    userId: dev.address.userId,
  };
}

const local = (dev: Dev): LocalIdentity => ({
  identityKeyPair: dev.prekeys.identityKeyPair,
  registrationId: dev.prekeys.registrationId,
});
const entryOf = (dev: Dev): DeviceListEntry => ({
  deviceId: dev.address.deviceId,
  identityKey: dev.prekeys.identityKeyPair.publicKey,
  registrationId: dev.prekeys.registrationId,
});

function unwrap<T>(result: Result<T>, what = 'step'): T {
  if (!result.ok) throw new Error(`${what} failed: ${result.error.code} (${result.error.message})`);
  return result.value;
}
function errorOf<T>(result: Result<T>): ProtocolError {
  if (result.ok) throw new Error('expected a rejection, got success');
  return result.error;
}

/** WP-SES-01 invariants (P18/P19) hold for every device given. */
function expectInvariants(...devs: readonly Dev[]): void {
  for (const dev of devs) expect(sesameInvariantViolations(dev.sesame)).toEqual([]);
}

/** Canonical JSON of a device's whole state (Sesame and prekeys), for "unchanged" checks. */
const snapshot = (dev: Dev): string => `${encodeSesameState(dev.sesame)}\n${encodePreKeyState(dev.prekeys)}`;

/** PrepEncrypt for each target device (bundles from the directory). */
function prep(from: Dev, targets: readonly Dev[], now = T0): void {
  for (const to of targets)
    from.sesame = unwrap(
      prepEncrypt(from.env, from.sesame, local(from), bundleOf(to), now),
      'prepEncrypt',
    ).state;
  expectInvariants(from);
}

/** Encrypts for a user and keeps the new state. */
function sendTo(from: Dev, userId: UserId, body: string, now = T0): readonly OutgoingDeviceMessage[] {
  const result = unwrap(encryptForUser(from.env, from.sesame, userId, text(body), now), 'encryptForUser');
  from.sesame = result.state;
  expectInvariants(from);
  return result.messages;
}

function messageFor(messages: readonly OutgoingDeviceMessage[], deviceId: DeviceId): OutgoingDeviceMessage {
  const m = messages.find((x) => x.deviceId === deviceId);
  if (m === undefined) throw new Error(`no copy for device ${deviceId}`);
  return m;
}

function kindOf(m: OutgoingDeviceMessage): 'prekey' | 'whisper' {
  if (m.type === 'retry-request') throw new Error('not a ratchet message');
  return m.type;
}

/** Delivers at `to`; on success keeps the new state and prekeys, on failure keeps the old ones. */
function receive(to: Dev, from: DeviceAddress, m: OutgoingDeviceMessage, now = T0): Result<ReceivedMessage> {
  const result = receiveMessage(to.env, to.sesame, to.prekeys, from, kindOf(m), m.bytes, now);
  if (result.ok) {
    to.sesame = result.value.state;
    to.prekeys = result.value.prekeys;
  }
  expectInvariants(to);
  return result;
}
const receiveText = (to: Dev, from: Dev, m: OutgoingDeviceMessage, now = T0): string =>
  str(unwrap(receive(to, from.address, m, now), `${to.address.deviceId} receiving`).plaintext);

const deviceOf = (dev: Dev, userId: UserId, deviceId: DeviceId): DeviceRecord => {
  const device = getDeviceRecord(dev.sesame, userId, deviceId);
  if (device === undefined) throw new Error(`no record ${userId}.${deviceId}`);
  return device;
};
const activeBaseKey = (dev: Dev, peer: Dev): string => {
  const current = deviceOf(dev, peer.address.userId, peer.address.deviceId).sessions.current;
  if (current === null) throw new Error('no active session');
  return hex(current.aliceBaseKey);
};
const MESSAGE_ID = 'aa'.repeat(16);

// ---------------------------------------------------------------------------------------------
// Data model and operations (§3.1, §3.2)
// ---------------------------------------------------------------------------------------------

describe('Sesame records and operations', () => {
  const seed = 'sesame-ops';
  const [alice1] = makeUser(seed, 'alice', 1);
  const bob = makeUser(seed, 'bob', 2);
  if (alice1 === undefined) throw new Error('setup');
  const [bob1, bob2] = bob;
  if (bob1 === undefined || bob2 === undefined) throw new Error('setup');

  it('ConditionalUpdate creates missing records and never one for our own address [WP-SES-02] [WP-SES-04]', () => {
    const start = deepFreeze(emptySesameState(alice1.address));
    const own = conditionalUpdate(start, 'alice', 1, entryOf(bob1).identityKey, 7);
    expect(own).toEqual({ state: start, keyChanged: false, created: false, replaced: false });
    const first = conditionalUpdate(start, 'bob', 1, entryOf(bob1).identityKey, entryOf(bob1).registrationId);
    expect(first.created).toBe(true);
    expect(first.keyChanged).toBe(false);
    const again = conditionalUpdate(
      first.state,
      'bob',
      1,
      entryOf(bob1).identityKey,
      entryOf(bob1).registrationId,
    );
    expect(again.state).toBe(first.state);
    expect(again.created).toBe(false);
    const sibling = conditionalUpdate(again.state, 'alice', 2, entryOf(bob2).identityKey, 9);
    expect(sibling.created).toBe(true);
    expect(Object.keys(sibling.state.users).sort()).toEqual(['alice', 'bob']);
    expect(getDeviceRecord(sibling.state, 'alice', 1)).toBeUndefined();
    expect(sesameInvariantViolations(sibling.state)).toEqual([]);
  });

  it('ConditionalUpdate with a different identity key replaces the record and its sessions, reporting the key change [WP-SES-02]', () => {
    const dev = makeDev(seed, 'alice', 1);
    prep(dev, [bob1]);
    expect(deviceOf(dev, 'bob', 1).sessions.current).not.toBeNull();
    const changed = conditionalUpdate(
      dev.sesame,
      'bob',
      1,
      entryOf(bob2).identityKey,
      entryOf(bob1).registrationId,
    );
    expect(changed.keyChanged).toBe(true);
    expect(changed.replaced).toBe(true);
    const record = getDeviceRecord(changed.state, 'bob', 1);
    expect(record?.sessions.current).toBeNull();
    expect(record?.sessions.archived).toEqual([]);
    expect(hex(record?.identityKey ?? new Uint8Array())).toBe(hex(entryOf(bob2).identityKey));
  });

  it('ConditionalUpdate with a new registration id replaces the record without a key change [WP-SES-02]', () => {
    const dev = makeDev(seed, 'alice', 1);
    prep(dev, [bob1]);
    const updated = conditionalUpdate(
      dev.sesame,
      'bob',
      1,
      entryOf(bob1).identityKey,
      entryOf(bob1).registrationId + 1,
    );
    expect(updated).toMatchObject({ keyChanged: false, created: false, replaced: true });
    expect(getDeviceRecord(updated.state, 'bob', 1)?.sessions.current).toBeNull();
  });

  it('ConditionalUpdate refuses malformed arguments [WP-SES-16]', () => {
    const s = emptySesameState(alice1.address);
    const key = entryOf(bob1).identityKey;
    expect(() => conditionalUpdate(s, 'Bob', 1, key, 1)).toThrow(UsageError);
    expect(() => conditionalUpdate(s, 'bob', 0, key, 1)).toThrow(UsageError);
    expect(() => conditionalUpdate(s, 'bob', 128, key, 1)).toThrow(UsageError);
    expect(() => conditionalUpdate(s, 'bob', 1, key.subarray(1), 1)).toThrow(UsageError);
    expect(() => conditionalUpdate(s, 'bob', 1, key, -1)).toThrow(UsageError);
  });

  it('deleting the last device record deletes the user record; deleting a user deletes everything [WP-SES-01]', () => {
    let s = emptySesameState(alice1.address);
    s = conditionalUpdate(s, 'bob', 1, entryOf(bob1).identityKey, 1).state;
    s = conditionalUpdate(s, 'bob', 2, entryOf(bob2).identityKey, 2).state;
    s = deleteDevice(s, 'bob', 1);
    expect(Object.keys(getUserRecord(s, 'bob')?.devices ?? {})).toEqual(['2']);
    s = deleteDevice(s, 'bob', 2);
    expect(getUserRecord(s, 'bob')).toBeUndefined();
    expect(s.users).toEqual({});
    s = conditionalUpdate(s, 'bob', 2, entryOf(bob2).identityKey, 2).state;
    expect(deleteUser(s, 'bob').users).toEqual({});
    expect(deleteDevice(s, 'bob', 5)).toBe(s);
    expect(deleteUser(s, 'carol')).toBe(s);
  });

  it('marking stale keeps the first mark, and a missing record stays missing [WP-SES-06]', () => {
    let s = conditionalUpdate(emptySesameState(alice1.address), 'bob', 1, entryOf(bob1).identityKey, 1).state;
    s = markDeviceStale(s, 'bob', 1, T0);
    s = markDeviceStale(s, 'bob', 1, T0 + 5);
    expect(getDeviceRecord(s, 'bob', 1)?.staleSince).toBe(T0);
    s = markUserStale(s, 'bob', T0 + 1);
    s = markUserStale(s, 'bob', T0 + 9);
    expect(getUserRecord(s, 'bob')?.staleSince).toBe(T0 + 1);
    expect(markUserStale(s, 'carol', T0)).toBe(s);
    expect(markDeviceStale(s, 'bob', 9, T0)).toBe(s);
  });

  it('a user id spelled like an Object prototype member is an ordinary record [WP-SES-01]', () => {
    const s = emptySesameState(alice1.address);
    expect(getUserRecord(s, 'constructor')).toBeUndefined();
    expect(getDeviceRecord(s, 'constructor', 1)).toBeUndefined();
    expect(devicesNeedingSessions(s, 'constructor', T0)).toEqual([]);
    const created = conditionalUpdate(s, 'constructor', 1, entryOf(bob1).identityKey, 1);
    expect(created.created).toBe(true);
    expect(getUserRecord(created.state, 'constructor')?.userId).toBe('constructor');
    expect(deleteUser(created.state, 'constructor').users).toEqual({});
  });

  it('the invariant check finds planted violations [WP-SES-01]', () => {
    const dev = makeDev(seed, 'alice', 1);
    prep(dev, [bob1]);
    const bobRecord = getUserRecord(dev.sesame, 'bob');
    const device = deviceOf(dev, 'bob', 1);
    if (bobRecord === undefined || device.sessions.current === null) throw new Error('setup');
    const planted = (users: Record<string, UserRecord>): readonly string[] =>
      sesameInvariantViolations({ ...dev.sesame, users });
    expect(planted({ bob: { ...bobRecord, devices: {} } })).toEqual(['user record bob is empty']);
    expect(
      planted({ alice: { userId: 'alice', staleSince: null, devices: { '1': { ...device, deviceId: 1 } } } }),
    ).toContain('a device record exists for our own address');
    const twice = {
      ...device,
      sessions: { current: device.sessions.current, archived: [device.sessions.current] },
    };
    expect(planted({ bob: { ...bobRecord, devices: { '1': twice } } })).toEqual([
      'bob.1: the active session is also inactive',
    ]);
    const otherKey = { ...device, identityKey: entryOf(bob2).identityKey };
    expect(planted({ bob: { ...bobRecord, devices: { '1': otherKey } } })).toEqual([
      "bob.1: a session is with another identity key than the record's",
    ]);
  });
});

// ---------------------------------------------------------------------------------------------
// Sending (§3.3 step 1) and PrepEncrypt (§3.2)
// ---------------------------------------------------------------------------------------------

describe('Sesame sending', () => {
  const seed = 'sesame-send';

  it('fan-out to three recipient devices and two own siblings: every device decrypts [WP-SES-03] [WP-SES-05]', () => {
    const alice = makeUser(seed, 'alice', 3);
    const bob = makeUser(seed, 'bob', 3);
    const [a1, a2, a3] = alice;
    if (a1 === undefined || a2 === undefined || a3 === undefined) throw new Error('setup');
    prep(a1, [...bob, a2, a3]);
    expect(devicesNeedingSessions(a1.sesame, 'bob', T0)).toEqual([]);
    expect(devicesNeedingSessions(a1.sesame, 'alice', T0)).toEqual([]);
    const toBob = sendTo(a1, 'bob', 'hello bob');
    const toSelf = sendTo(a1, 'alice', 'hello bob');
    // P20: one copy per device of the recipient, one per sibling, none for the sender itself.
    expect(toBob.map((m) => m.deviceId)).toEqual([1, 2, 3]);
    expect(toSelf.map((m) => m.deviceId)).toEqual([2, 3]);
    for (const m of [...toBob, ...toSelf]) expect(m.type).toBe('prekey');
    expect(toBob.map((m) => m.registrationId)).toEqual(bob.map((b) => b.prekeys.registrationId));
    for (const b of bob) {
      const received = unwrap(receive(b, a1.address, messageFor(toBob, b.address.deviceId)));
      expect(str(received.plaintext)).toBe('hello bob');
      expect(received.sessionCreated).toBe(true);
      expect(hex(received.senderIdentityKey)).toBe(hex(entryOf(a1).identityKey));
    }
    for (const sibling of [a2, a3])
      expect(receiveText(sibling, a1, messageFor(toSelf, sibling.address.deviceId))).toBe('hello bob');
    // Bob's second device answers: it knows alice.1 only, so its fan-out is that one device.
    const bob2 = bob[1];
    if (bob2 === undefined) throw new Error('setup');
    const reply = sendTo(bob2, 'alice', 'hi alice');
    expect(reply.map((m) => m.deviceId)).toEqual([1]);
    expect(reply[0]?.type).toBe('whisper');
    expect(receiveText(a1, bob2, messageFor(reply, 1))).toBe('hi alice');
    // Acknowledged: alice.1's next copy to bob.2 is a plain SignalMessage; the others still PreKey.
    const next = sendTo(a1, 'bob', 'again');
    expect(next.map((m) => m.type)).toEqual(['prekey', 'whisper', 'prekey']);
  });

  it('a stale or missing user record gives an empty fan-out; a stale device record is skipped [WP-SES-11] [WP-SES-05]', () => {
    const [a1] = makeUser(seed, 'alice', 1);
    const bob = makeUser(seed, 'bob', 2);
    if (a1 === undefined) throw new Error('setup');
    prep(a1, bob);
    const none = unwrap(encryptForUser(a1.env, a1.sesame, 'carol', text('x'), T0));
    expect(none.messages).toEqual([]);
    expect(none.state).toBe(a1.sesame);
    a1.sesame = markDeviceStale(a1.sesame, 'bob', 1, T0);
    expect(sendTo(a1, 'bob', 'one left').map((m) => m.deviceId)).toEqual([2]);
    expect(devicesNeedingSessions(a1.sesame, 'bob', T0)).toEqual([]);
    a1.sesame = markUserStale(a1.sesame, 'bob', T0);
    expect(sendTo(a1, 'bob', 'nobody')).toEqual([]);
    expect(errorOf(encryptForDevice(a1.env, a1.sesame, 'bob', 2, text('x'), T0)).code).toBe(
      'SESAME_RECORD_STALE',
    );
  });

  it('a device without a usable session is an error and nothing changes [WP-SES-05]', () => {
    const [a1] = makeUser(seed, 'alice', 1);
    const bob = makeUser(seed, 'bob', 3);
    const [b1, b2, b3] = bob;
    if (a1 === undefined || b1 === undefined || b2 === undefined || b3 === undefined)
      throw new Error('setup');
    prep(a1, [b1, b3]);
    a1.sesame = conditionalUpdate(
      a1.sesame,
      'bob',
      2,
      entryOf(b2).identityKey,
      entryOf(b2).registrationId,
    ).state;
    expect(devicesNeedingSessions(a1.sesame, 'bob', T0)).toEqual([2]);
    const before = snapshot(a1);
    deepFreeze(a1.sesame);
    const error = errorOf(encryptForUser(a1.env, a1.sesame, 'bob', text('x'), T0));
    expect(error).toMatchObject({
      code: 'SESAME_NO_USABLE_SESSION',
      rule: 'WP-SES-05',
      details: { deviceId: 2 },
    });
    expect(snapshot(a1)).toBe(before);
    expect(errorOf(encryptForDevice(a1.env, a1.sesame, 'bob', 2, text('x'), T0)).code).toBe(
      'SESAME_NO_USABLE_SESSION',
    );
    expect(errorOf(encryptForDevice(a1.env, a1.sesame, 'bob', 9, text('x'), T0)).code).toBe(
      'SESAME_NO_DEVICE_RECORD',
    );
  });

  it('PrepEncrypt keeps a usable active session and replaces an unanswered one older than 30 days [WP-SES-03]', () => {
    const [a1] = makeUser(seed, 'alice', 1);
    const [b1] = makeUser(seed, 'bob', 1);
    if (a1 === undefined || b1 === undefined) throw new Error('setup');
    prep(a1, [b1]);
    const first = activeBaseKey(a1, b1);
    prep(a1, [b1], T0 + 1000);
    expect(activeBaseKey(a1, b1)).toBe(first);
    const late = T0 + MAX_UNACKNOWLEDGED_SESSION_AGE_MS + 1;
    expect(devicesNeedingSessions(a1.sesame, 'bob', late)).toEqual([1]);
    prep(a1, [b1], late);
    expect(activeBaseKey(a1, b1)).not.toBe(first);
    // Insert: the old active session heads the inactive list (P19).
    expect(deviceOf(a1, 'bob', 1).sessions.archived.map((s) => hex(s.aliceBaseKey))).toEqual([first]);
  });

  it('PrepEncrypt deletes a stale record before updating it [WP-SES-03]', () => {
    const [a1] = makeUser(seed, 'alice', 1);
    const bob = makeUser(seed, 'bob', 2);
    const [b1, b2] = bob;
    if (a1 === undefined || b1 === undefined || b2 === undefined) throw new Error('setup');
    prep(a1, bob);
    a1.sesame = markDeviceStale(a1.sesame, 'bob', 1, T0);
    prep(a1, [b1]);
    expect(deviceOf(a1, 'bob', 1).staleSince).toBeNull();
    expect(deviceOf(a1, 'bob', 1).sessions.archived).toEqual([]);
    a1.sesame = markUserStale(a1.sesame, 'bob', T0);
    prep(a1, [b2]);
    expect(getUserRecord(a1.sesame, 'bob')?.staleSince).toBeNull();
    expect(Object.keys(getUserRecord(a1.sesame, 'bob')?.devices ?? {})).toEqual(['2']);
  });

  it('a bundle for our own device is refused [WP-SES-04]', () => {
    const [a1] = makeUser(seed, 'alice', 1);
    if (a1 === undefined) throw new Error('setup');
    const error = errorOf(prepEncrypt(a1.env, a1.sesame, local(a1), bundleOf(a1), T0));
    expect(error).toMatchObject({ code: 'SESAME_OWN_ADDRESS', rule: 'WP-SES-04' });
  });

  it('a malformed bundle entry is refused with nothing stored [WP-SES-16]', () => {
    const [a1] = makeUser(seed, 'alice', 1);
    const [b1] = makeUser(seed, 'bob', 1);
    if (a1 === undefined || b1 === undefined) throw new Error('setup');
    const good = bundleOf(b1);
    const bad: (PreKeyBundle & { userId: UserId })[] = [
      { ...good, deviceId: 0 },
      { ...good, deviceId: 128 },
      { ...good, userId: 'Bob' },
      { ...good, registrationId: -1 },
      { ...good, identityKey: good.identityKey.subarray(0, 32) },
      { ...good, identityKey: new Uint8Array(33).fill(0).map((_, i) => (i === 0 ? 5 : 0)) },
    ];
    for (const bundle of bad) {
      const error = errorOf(prepEncrypt(a1.env, a1.sesame, local(a1), bundle, T0));
      expect(error).toMatchObject({ code: 'SESAME_INVALID_DEVICE_ENTRY', rule: 'WP-SES-16' });
    }
    expect(a1.sesame.users).toEqual({});
  });

  it('an error in the middle (a bad bundle for one device) leaves that user record unchanged; other users go on [WP-SES-03] [WP-SES-08]', () => {
    const [a1] = makeUser(seed, 'alice', 1);
    const bob = makeUser(seed, 'bob', 3);
    const [carol1] = makeUser(seed, 'carol', 1);
    const [b1, b2, b3] = bob;
    if (a1 === undefined || b1 === undefined || b2 === undefined || b3 === undefined || carol1 === undefined)
      throw new Error('setup');
    prep(a1, [b1]);
    const before = snapshot(a1);
    // bob.2's bundle arrives with a broken signed-prekey signature: the session cannot be created.
    const broken = bundleOf(b2);
    const forged = { ...broken, signedPreKeySignature: flipByte(broken.signedPreKeySignature, 3) };
    const error = errorOf(prepEncrypt(a1.env, a1.sesame, local(a1), forged, T0));
    expect(error.code).toBe('BUNDLE_SIGNATURE_INVALID');
    expect(snapshot(a1)).toBe(before);
    // P25: another user's preparation and send are unaffected.
    prep(a1, [carol1]);
    expect(receiveText(carol1, a1, messageFor(sendTo(a1, 'carol', 'independent'), 1))).toBe('independent');
  });
});

// ---------------------------------------------------------------------------------------------
// Refusals (§3.3 steps 4–7)
// ---------------------------------------------------------------------------------------------

describe('Sesame refusals', () => {
  const seed = 'sesame-refusal';

  function world(): { a1: Dev; bob: Dev[]; carol: Dev } {
    const [a1] = makeUser(seed, 'alice', 1);
    const bob = makeUser(seed, 'bob', 3);
    const [carol] = makeUser(seed, 'carol', 1);
    if (a1 === undefined || carol === undefined) throw new Error('setup');
    prep(a1, [...bob.slice(0, 2), carol]);
    return { a1, bob, carol };
  }
  const pick = (devs: readonly Dev[], index: number): Dev => {
    const dev = devs[index];
    if (dev === undefined) throw new Error('setup');
    return dev;
  };

  it('unknown user marks the user record stale; nothing is encrypted to it afterwards [WP-SES-06] [WP-SES-11]', () => {
    const { a1 } = world();
    const out = unwrap(applySendRefusal(a1.sesame, 'bob', { kind: 'unknown-user' }, null, T0 + 7));
    expect(out.needBundles).toEqual([]);
    a1.sesame = out.state;
    expect(getUserRecord(a1.sesame, 'bob')?.staleSince).toBe(T0 + 7);
    expect(sendTo(a1, 'bob', 'anyone?')).toEqual([]);
    expectInvariants(a1);
  });

  it('mismatched devices: an extra device becomes stale, a missing one gets a record that needs a bundle [WP-SES-06] [WP-SES-07]', () => {
    const { a1, bob } = world();
    const [b1, b3] = [pick(bob, 0), pick(bob, 2)];
    // The server's current devices: bob.2 is gone, bob.3 is new.
    const refusal: SendRefusal = {
      kind: 'mismatched-devices',
      missing: [3],
      extra: [2],
      deviceList: EMPTY_LIST,
    };
    const out = unwrap(
      applySendRefusal(deepFreeze(a1.sesame), 'bob', refusal, [entryOf(b1), entryOf(b3)], T0 + 1),
    );
    expect(out).toMatchObject({ needBundles: [3], keyChanges: [] });
    a1.sesame = out.state;
    expect(deviceOf(a1, 'bob', 2).staleSince).toBe(T0 + 1);
    expect(deviceOf(a1, 'bob', 3).sessions.current).toBeNull();
    expect(devicesNeedingSessions(a1.sesame, 'bob', T0)).toEqual([3]);
    expectInvariants(a1);
    prep(a1, [b3]);
    const messages = sendTo(a1, 'bob', 'after the change');
    expect(messages.map((m) => m.deviceId)).toEqual([1, 3]);
    expect(receiveText(b3, a1, messageFor(messages, 3))).toBe('after the change');
    expect(receiveText(b1, a1, messageFor(messages, 1))).toBe('after the change');
  });

  it('stale devices: the re-registered device record is replaced and needs a new session; the key change is reported [WP-SES-07] [WP-SES-02]', () => {
    const { a1, bob } = world();
    const reinstalled = makeDev(`${seed}-reinstall`, 'bob', 2);
    const refusal: SendRefusal = { kind: 'stale-devices', stale: [2], deviceList: EMPTY_LIST };
    const out = unwrap(
      applySendRefusal(a1.sesame, 'bob', refusal, [entryOf(pick(bob, 0)), entryOf(reinstalled)], T0),
    );
    expect(out).toMatchObject({ needBundles: [2], keyChanges: [2] });
    a1.sesame = out.state;
    const record = deviceOf(a1, 'bob', 2);
    expect(record.sessions).toEqual({ current: null, archived: [] });
    expect(record.registrationId).toBe(reinstalled.prekeys.registrationId);
    prep(a1, [reinstalled]);
    const messages = sendTo(a1, 'bob', 'welcome back');
    expect(receiveText(reinstalled, a1, messageFor(messages, 2))).toBe('welcome back');
  });

  it('stale devices with an unchanged identity key still replace the record, without a key change [WP-SES-07]', () => {
    const { a1, bob } = world();
    const b2 = pick(bob, 1);
    const sameKey: DeviceListEntry = { ...entryOf(b2), registrationId: entryOf(b2).registrationId + 1 };
    const out = unwrap(
      applySendRefusal(
        a1.sesame,
        'bob',
        { kind: 'stale-devices', stale: [2], deviceList: EMPTY_LIST },
        [sameKey],
        T0,
      ),
    );
    expect(out).toMatchObject({ needBundles: [2], keyChanges: [] });
    expect(getDeviceRecord(out.state, 'bob', 2)?.sessions.current).toBeNull();
  });

  it('mailbox full changes no record [WP-SES-06]', () => {
    const { a1 } = world();
    const out = unwrap(
      applySendRefusal(a1.sesame, 'bob', { kind: 'mailbox-full', deviceIds: [1] }, null, T0),
    );
    expect(out.state).toBe(a1.sesame);
    expect(out.needBundles).toEqual([]);
  });

  it('an invalid refusal changes nothing: our own device, a repeated id, an id out of range, a device missing from the list [WP-SES-08]', () => {
    const { a1, bob } = world();
    const entries = bob.map(entryOf);
    const before = snapshot(a1);
    const cases: {
      readonly userId: UserId;
      readonly refusal: SendRefusal;
      readonly list: readonly DeviceListEntry[] | null;
    }[] = [
      {
        userId: 'alice',
        refusal: { kind: 'mismatched-devices', missing: [1], extra: [], deviceList: EMPTY_LIST },
        list: [],
      },
      {
        userId: 'alice',
        refusal: { kind: 'mismatched-devices', missing: [], extra: [1], deviceList: EMPTY_LIST },
        list: [],
      },
      { userId: 'alice', refusal: { kind: 'stale-devices', stale: [1], deviceList: EMPTY_LIST }, list: [] },
      {
        userId: 'bob',
        refusal: { kind: 'mismatched-devices', missing: [3], extra: [3], deviceList: EMPTY_LIST },
        list: entries,
      },
      {
        userId: 'bob',
        refusal: { kind: 'mismatched-devices', missing: [0], extra: [], deviceList: EMPTY_LIST },
        list: entries,
      },
      // The extra device would be marked stale before the missing one fails: all of it is discarded.
      {
        userId: 'bob',
        refusal: { kind: 'mismatched-devices', missing: [3, 4], extra: [2], deviceList: EMPTY_LIST },
        list: entries,
      },
      {
        userId: 'bob',
        refusal: { kind: 'mismatched-devices', missing: [3], extra: [], deviceList: EMPTY_LIST },
        list: null,
      },
      {
        userId: 'bob',
        refusal: { kind: 'stale-devices', stale: [1, 1], deviceList: EMPTY_LIST },
        list: entries,
      },
    ];
    for (const { userId, refusal, list } of cases) {
      const error = errorOf(applySendRefusal(a1.sesame, userId, refusal, list, T0));
      expect(error).toMatchObject({ code: 'SESAME_REFUSAL_INVALID', rule: 'WP-SES-08' });
    }
    const badKey: DeviceListEntry = {
      ...entries[2],
      deviceId: 3,
      registrationId: 1,
      identityKey: new Uint8Array(33),
    };
    const refusal: SendRefusal = {
      kind: 'mismatched-devices',
      missing: [3],
      extra: [],
      deviceList: EMPTY_LIST,
    };
    expect(errorOf(applySendRefusal(a1.sesame, 'bob', refusal, [badKey], T0)).code).toBe(
      'SESAME_INVALID_DEVICE_ENTRY',
    );
    expect(snapshot(a1)).toBe(before);
  });

  it('refusals never touch another user record [WP-SES-08]', () => {
    const { a1, bob } = world();
    const carolBefore = encodeSesameState({
      ...a1.sesame,
      users: { carol: getUserRecord(a1.sesame, 'carol') as UserRecord },
    });
    const refusals: SendRefusal[] = [
      { kind: 'unknown-user' },
      { kind: 'mismatched-devices', missing: [3], extra: [1, 2], deviceList: EMPTY_LIST },
      { kind: 'stale-devices', stale: [1], deviceList: EMPTY_LIST },
    ];
    let s = a1.sesame;
    for (const refusal of refusals)
      s = unwrap(applySendRefusal(s, 'bob', refusal, bob.map(entryOf), T0)).state;
    const carol = getUserRecord(s, 'carol');
    if (carol === undefined) throw new Error('carol vanished');
    expect(encodeSesameState({ ...s, users: { carol } })).toBe(carolBefore);
    expect(sesameInvariantViolations(s)).toEqual([]);
  });

  it('a missing device for a stale user record deletes the stale record first (PrepEncrypt) [WP-SES-07]', () => {
    const { a1, bob } = world();
    a1.sesame = unwrap(applySendRefusal(a1.sesame, 'bob', { kind: 'unknown-user' }, null, T0)).state;
    const refusal: SendRefusal = {
      kind: 'mismatched-devices',
      missing: [1, 2, 3],
      extra: [],
      deviceList: EMPTY_LIST,
    };
    const out = unwrap(applySendRefusal(a1.sesame, 'bob', refusal, bob.map(entryOf), T0 + 1));
    expect(out.needBundles).toEqual([1, 2, 3]);
    expect(getUserRecord(out.state, 'bob')?.staleSince).toBeNull();
    expect(sesameInvariantViolations(out.state)).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------
// Bounds (§6.5)
// ---------------------------------------------------------------------------------------------

describe('Sesame bounds', () => {
  const seed = 'sesame-bounds';
  const [a1] = makeUser(seed, 'alice', 1);
  const [b1] = makeUser(seed, 'bob', 1);
  if (a1 === undefined || b1 === undefined) throw new Error('setup');
  const key = entryOf(b1).identityKey;
  const entries = (ids: readonly number[]): DeviceListEntry[] =>
    ids.map((deviceId) => ({ deviceId, identityKey: key, registrationId: deviceId }));
  const range = (from: number, count: number): number[] => Array.from({ length: count }, (_, i) => from + i);

  it('a refusal that would pass MAX_DEVICE_RECORDS_PER_USER fails with the user record unchanged [WP-SES-15]', () => {
    const full = range(1, MAX_DEVICE_RECORDS_PER_USER);
    let s = emptySesameState(a1.address);
    const ok = unwrap(
      applySendRefusal(
        s,
        'bob',
        { kind: 'mismatched-devices', missing: full, extra: [], deviceList: EMPTY_LIST },
        entries(full),
        T0,
      ),
    );
    s = ok.state;
    expect(Object.keys(getUserRecord(s, 'bob')?.devices ?? {})).toHaveLength(MAX_DEVICE_RECORDS_PER_USER);
    const more = [MAX_DEVICE_RECORDS_PER_USER + 1];
    const refusal: SendRefusal = {
      kind: 'mismatched-devices',
      missing: more,
      extra: [],
      deviceList: EMPTY_LIST,
    };
    const error = errorOf(applySendRefusal(s, 'bob', refusal, entries(more), T0));
    expect(error).toMatchObject({ code: 'SESAME_TOO_MANY_DEVICES', rule: 'WP-SES-15' });
    expect(checkRecordBounds(s, 'bob', MAX_DEVICE_RECORDS_PER_USER + 1).ok).toBe(false);
    expect(checkRecordBounds(s, 'bob', 1).ok).toBe(true);
    expect(() => conditionalUpdate(s, 'bob', MAX_DEVICE_RECORDS_PER_USER + 1, key, 1)).toThrow(UsageError);
  });

  it('at MAX_DEVICE_RECORDS_PER_USER the stale record marked longest ago is evicted first [WP-SES-15]', () => {
    const full = range(1, MAX_DEVICE_RECORDS_PER_USER);
    let s = emptySesameState(a1.address);
    s = unwrap(
      applySendRefusal(
        s,
        'bob',
        { kind: 'mismatched-devices', missing: full, extra: [], deviceList: EMPTY_LIST },
        entries(full),
        T0,
      ),
    ).state;
    s = markDeviceStale(s, 'bob', 5, T0 + 2);
    s = markDeviceStale(s, 'bob', 9, T0 + 1);
    const next = MAX_DEVICE_RECORDS_PER_USER + 1;
    const out = unwrap(
      applySendRefusal(
        s,
        'bob',
        { kind: 'mismatched-devices', missing: [next], extra: [], deviceList: EMPTY_LIST },
        entries([next]),
        T0,
      ),
    );
    expect(getDeviceRecord(out.state, 'bob', 9)).toBeUndefined();
    expect(getDeviceRecord(out.state, 'bob', 5)).toBeDefined();
    expect(getDeviceRecord(out.state, 'bob', next)).toBeDefined();
    expect(sesameInvariantViolations(out.state)).toEqual([]);
  });

  it('user records stop at MAX_USER_RECORDS: a stale one is evicted, otherwise new senders are refused [WP-SES-15]', () => {
    const users: Record<string, UserRecord> = {};
    const device: DeviceRecord = {
      deviceId: 1,
      identityKey: key,
      registrationId: 1,
      sessions: { current: null, archived: [] },
      staleSince: null,
    };
    for (let i = 0; i < MAX_USER_RECORDS; i++)
      users[`u${i}`] = { userId: `u${i}`, staleSince: null, devices: { '1': device } };
    const full: SesameState = { ...emptySesameState(a1.address), users };
    expect(sesameInvariantViolations(full)).toEqual([]);
    expect(errorOf(checkRecordBounds(full, 'bob', 1))).toMatchObject({
      code: 'SESAME_TOO_MANY_USERS',
      rule: 'WP-SES-15',
    });
    // A PreKey message from a new user is refused with nothing changed.
    const sender = makeDev(seed, 'bob', 1);
    const receiver = makeDev(seed, 'alice', 1);
    prep(sender, [receiver]);
    const m = messageFor(sendTo(sender, 'alice', 'hi'), 1);
    const refused = receiveMessage(
      receiver.env,
      full,
      receiver.prekeys,
      sender.address,
      'prekey',
      m.bytes,
      T0,
    );
    expect(errorOf(refused).code).toBe('SESAME_TOO_MANY_USERS');
    const withStale = markUserStale(full, 'u77', T0);
    const accepted = unwrap(
      receiveMessage(receiver.env, withStale, receiver.prekeys, sender.address, 'prekey', m.bytes, T0),
    );
    expect(getUserRecord(accepted.state, 'u77')).toBeUndefined();
    expect(getUserRecord(accepted.state, 'bob')).toBeDefined();
    expect(Object.keys(accepted.state.users)).toHaveLength(MAX_USER_RECORDS);
  });

  it('archived sessions per device record stop at the session record cap of 40 [WP-SES-15]', () => {
    const dev = makeDev(seed, 'alice', 1);
    const [peer] = makeUser(`${seed}-many`, 'bob', 1);
    if (peer === undefined) throw new Error('setup');
    for (let i = 0; i < 42; i++)
      dev.sesame = unwrap(prepEncryptNewSession(dev.env, dev.sesame, local(dev), bundleOf(peer), T0)).state;
    expect(deviceOf(dev, 'bob', 1).sessions.archived).toHaveLength(40);
    expectInvariants(dev);
  });
});

// ---------------------------------------------------------------------------------------------
// Receiving (§3.4)
// ---------------------------------------------------------------------------------------------

describe('Sesame receiving', () => {
  const seed = 'sesame-receive';

  function pair(tag: string): { a1: Dev; b1: Dev } {
    const a1 = makeDev(`${seed}-${tag}`, 'alice', 1);
    const b1 = makeDev(`${seed}-${tag}`, 'bob', 1);
    return { a1, b1 };
  }

  it('a PreKey message creates the session and inserts it as active [WP-SES-10]', () => {
    const { a1, b1 } = pair('insert');
    prep(a1, [b1]);
    const m = messageFor(sendTo(a1, 'bob', 'first'), 1);
    const received = unwrap(receive(b1, a1.address, m));
    expect(received).toMatchObject({ keyChanged: false, sessionCreated: true });
    expect(hex(received.senderIdentityKey)).toBe(hex(entryOf(a1).identityKey));
    expect(deviceOf(b1, 'alice', 1).registrationId).toBe(a1.prekeys.registrationId);
    expect(activeBaseKey(b1, a1)).toBe(activeBaseKey(a1, b1));
    // The one-time prekey it used is consumed.
    expect(b1.prekeys.oneTimePreKeys.map((k) => k.keyId)).not.toContain(1);
    // A second PreKey message on the same session decrypts there (no new session).
    const again = messageFor(sendTo(a1, 'bob', 'second'), 1);
    expect(unwrap(receive(b1, a1.address, again)).sessionCreated).toBe(false);
  });

  it('an inactive session that decrypts becomes active again (Activate) [WP-SES-09]', () => {
    const { a1, b1 } = pair('activate');
    prep(a1, [b1]);
    receiveText(b1, a1, messageFor(sendTo(a1, 'bob', 'hello'), 1));
    const established = activeBaseKey(a1, b1);
    // Alice starts a second session (a retry, say); Bob keeps answering on the first.
    a1.sesame = unwrap(prepEncryptNewSession(a1.env, a1.sesame, local(a1), bundleOf(b1), T0)).state;
    expect(activeBaseKey(a1, b1)).not.toBe(established);
    const reply = messageFor(sendTo(b1, 'alice', 'on the first session'), 1);
    expect(reply.type).toBe('whisper');
    expect(receiveText(a1, b1, reply)).toBe('on the first session');
    expect(activeBaseKey(a1, b1)).toBe(established);
    expect(deviceOf(a1, 'bob', 1).sessions.archived).toHaveLength(1);
  });

  it('a failed decryption rolls back state and prekeys, and creates no record [WP-SES-10] [WP-SES-09]', () => {
    const { a1, b1 } = pair('rollback');
    prep(a1, [b1]);
    const m = messageFor(sendTo(a1, 'bob', 'fragile'), 1);
    const before = snapshot(b1);
    deepFreeze(b1.sesame);
    deepFreeze(b1.prekeys);
    const corrupted = { ...m, bytes: flipByte(m.bytes, -1) };
    const error = errorOf(receive(b1, a1.address, corrupted));
    expect(error.code).toBe('MAC_INVALID');
    expect(snapshot(b1)).toBe(before);
    expect(getUserRecord(b1.sesame, 'alice')).toBeUndefined();
    // The genuine message still decrypts afterwards.
    expect(receiveText(b1, a1, m)).toBe('fragile');
    // A whisper that fails leaves the established record as it was.
    const reply = messageFor(sendTo(b1, 'alice', 'reply'), 1);
    const beforeAlice = snapshot(a1);
    expect(errorOf(receive(a1, b1.address, { ...reply, bytes: flipByte(reply.bytes, -1) })).code).toBe(
      'MAC_INVALID',
    );
    expect(snapshot(a1)).toBe(beforeAlice);
  });

  it('duplicates are rejected and change nothing [WP-SES-09] [WP-SES-10]', () => {
    const { a1, b1 } = pair('duplicate');
    prep(a1, [b1]);
    const m = messageFor(sendTo(a1, 'bob', 'once'), 1);
    expect(receiveText(b1, a1, m)).toBe('once');
    const before = snapshot(b1);
    expect(errorOf(receive(b1, a1.address, m)).code).toBe('DUPLICATE_MESSAGE');
    expect(snapshot(b1)).toBe(before);
    const reply = messageFor(sendTo(b1, 'alice', 'twice?'), 1);
    expect(receiveText(a1, b1, reply)).toBe('twice?');
    const beforeAlice = snapshot(a1);
    expect(errorOf(receive(a1, b1.address, reply)).code).toBe('DUPLICATE_MESSAGE');
    expect(snapshot(a1)).toBe(beforeAlice);
  });

  it('a SignalMessage from a device without a record is SESAME_NO_DEVICE_RECORD [WP-SES-09]', () => {
    const { a1, b1 } = pair('unknown');
    prep(a1, [b1]);
    receiveText(b1, a1, messageFor(sendTo(a1, 'bob', 'hi'), 1));
    const reply = messageFor(sendTo(b1, 'alice', 'hi'), 1);
    const stranger = { userId: 'mallory', deviceId: 1 };
    expect(errorOf(receive(a1, stranger, reply))).toMatchObject({
      code: 'SESAME_NO_DEVICE_RECORD',
      rule: 'WP-SES-09',
    });
    expect(errorOf(receive(a1, { userId: 'bob', deviceId: 2 }, reply)).code).toBe('SESAME_NO_DEVICE_RECORD');
  });

  it('a message claiming our own address, or a malformed one, is refused [WP-SES-04] [WP-SES-16]', () => {
    const { a1, b1 } = pair('own');
    prep(a1, [b1]);
    const m = messageFor(sendTo(a1, 'bob', 'hi'), 1);
    expect(errorOf(receive(b1, b1.address, m))).toMatchObject({
      code: 'SESAME_OWN_ADDRESS',
      rule: 'WP-SES-04',
    });
    expect(errorOf(receive(b1, { userId: 'alice', deviceId: 0 }, m))).toMatchObject({
      code: 'SESAME_INVALID_DEVICE_ENTRY',
      rule: 'WP-SES-16',
    });
    expect(errorOf(receive(b1, { userId: 'ALICE', deviceId: 1 }, m)).code).toBe(
      'SESAME_INVALID_DEVICE_ENTRY',
    );
  });

  it('a PreKey message under a new identity key replaces the record and reports the key change [WP-SES-10] [WP-SES-02]', () => {
    const { a1, b1 } = pair('keychange');
    prep(a1, [b1]);
    receiveText(b1, a1, messageFor(sendTo(a1, 'bob', 'before'), 1));
    const reinstalled = makeDev(`${seed}-keychange-new`, 'alice', 1);
    prep(reinstalled, [b1]);
    const m = messageFor(sendTo(reinstalled, 'bob', 'after reinstall'), 1);
    const received = unwrap(receive(b1, reinstalled.address, m));
    expect(received).toMatchObject({ keyChanged: true, sessionCreated: true });
    expect(hex(received.senderIdentityKey)).toBe(hex(entryOf(reinstalled).identityKey));
    expect(deviceOf(b1, 'alice', 1).sessions.archived).toEqual([]);
    // The old device's late messages no longer decrypt: its sessions are gone with the record.
    const late = messageFor(sendTo(a1, 'bob', 'late'), 1);
    expect(receive(b1, a1.address, late).ok).toBe(false);
  });

  it('a registration id in a PreKey header does not cost a record with the same key its sessions [WP-SES-10]', () => {
    const { a1, b1 } = pair('regid');
    prep(a1, [b1]);
    receiveText(b1, a1, messageFor(sendTo(a1, 'bob', 'one'), 1));
    const first = activeBaseKey(b1, a1);
    a1.sesame = unwrap(prepEncryptNewSession(a1.env, a1.sesame, local(a1), bundleOf(b1), T0)).state;
    receiveText(b1, a1, messageFor(sendTo(a1, 'bob', 'two'), 1));
    expect(deviceOf(b1, 'alice', 1).sessions.archived.map((s) => hex(s.aliceBaseKey))).toEqual([first]);
  });

  it('a stale record still receives delayed messages and stays stale [WP-SES-11]', () => {
    const { a1, b1 } = pair('stale');
    prep(a1, [b1]);
    receiveText(b1, a1, messageFor(sendTo(a1, 'bob', 'hello'), 1));
    const delayed = messageFor(sendTo(a1, 'bob', 'delayed'), 1);
    b1.sesame = markUserStale(markDeviceStale(b1.sesame, 'alice', 1, T0), 'alice', T0);
    expect(receiveText(b1, a1, delayed)).toBe('delayed');
    expect(deviceOf(b1, 'alice', 1).staleSince).toBe(T0);
    expect(getUserRecord(b1.sesame, 'alice')?.staleSince).toBe(T0);
  });
});

// ---------------------------------------------------------------------------------------------
// Retry requests (§4.1)
// ---------------------------------------------------------------------------------------------

describe('Sesame retry requests', () => {
  const seed = 'sesame-retry';

  /** Alice sends to Bob's devices and records what went to each (as the client does once accepted). */
  function sendAndRecord(
    a1: Dev,
    userId: UserId,
    body: string,
    messageId = MESSAGE_ID,
  ): readonly OutgoingDeviceMessage[] {
    const result = unwrap(encryptForUser(a1.env, a1.sesame, userId, text(body), T0));
    a1.sesame = result.state;
    for (const used of result.sessionsUsed)
      a1.sesame = recordSentMessage(a1.sesame, { messageId, userId, ...used, plaintext: text(body) });
    return result.messages;
  }

  it('undecryptable message → retry request → resend on a NEW session when the recorded session is active [WP-SES-13]', () => {
    const a1 = makeDev(seed, 'alice', 1);
    const b1 = makeDev(seed, 'bob', 1);
    prep(a1, [b1]);
    receiveText(b1, a1, messageFor(sendTo(a1, 'bob', 'hello'), 1));
    receiveText(a1, b1, messageFor(sendTo(b1, 'alice', 'hi'), 1));
    // Bob loses his session state (a restore from an old backup); Alice's next message is a whisper.
    b1.sesame = emptySesameState(b1.address);
    const m = messageFor(sendAndRecord(a1, 'bob', 'can you read this?'), 1);
    expect(m.type).toBe('whisper');
    expect(errorOf(receive(b1, a1.address, m)).code).toBe('SESAME_NO_DEVICE_RECORD');
    // Bob asks for a resend; the recorded session is Alice's active one, so a new one is needed.
    const handled = unwrap(handleRetryRequest(a1.sesame, b1.address, MESSAGE_ID, T0));
    expect(handled.action).toMatchObject({ kind: 'resend', needNewSession: true, deviceId: 1 });
    if (handled.action.kind !== 'resend') throw new Error('expected a resend');
    a1.sesame = handled.state;
    const old = activeBaseKey(a1, b1);
    a1.sesame = unwrap(prepEncryptNewSession(a1.env, a1.sesame, local(a1), bundleOf(b1), T0)).state;
    expect(activeBaseKey(a1, b1)).not.toBe(old);
    const resend = unwrap(encryptForDevice(a1.env, a1.sesame, 'bob', 1, handled.action.plaintext, T0));
    a1.sesame = resend.state;
    a1.sesame = recordSentMessage(a1.sesame, {
      messageId: MESSAGE_ID,
      userId: 'bob',
      deviceId: 1,
      sessionBaseKey: resend.sessionBaseKey,
      plaintext: handled.action.plaintext,
    });
    expect(a1.sesame.messageRecords).toHaveLength(1);
    expect(a1.sesame.messageRecords[0]?.resends).toBe(1);
    expect(resend.message.type).toBe('prekey');
    const received = unwrap(receive(b1, a1.address, resend.message));
    expect(str(received.plaintext)).toBe('can you read this?');
    expect(received.sessionCreated).toBe(true);
    expectInvariants(a1, b1);
  });

  it('a retry whose recorded session is no longer active resends on the active session [WP-SES-13]', () => {
    const a1 = makeDev(seed, 'alice', 1);
    const b1 = makeDev(seed, 'bob', 1);
    prep(a1, [b1]);
    sendAndRecord(a1, 'bob', 'lost');
    a1.sesame = unwrap(prepEncryptNewSession(a1.env, a1.sesame, local(a1), bundleOf(b1), T0)).state;
    const handled = unwrap(handleRetryRequest(a1.sesame, b1.address, MESSAGE_ID, T0));
    expect(handled.action).toMatchObject({ kind: 'resend', needNewSession: false, deviceId: 1 });
  });

  it('resends stop at MAX_RESENDS [WP-SES-14]', () => {
    const a1 = makeDev(seed, 'alice', 1);
    const b1 = makeDev(seed, 'bob', 1);
    prep(a1, [b1]);
    sendAndRecord(a1, 'bob', 'again and again');
    for (let i = 0; i < MAX_RESENDS; i++) {
      const handled = unwrap(handleRetryRequest(a1.sesame, b1.address, MESSAGE_ID, T0));
      expect(handled.action.kind).toBe('resend');
      a1.sesame = handled.state;
    }
    expect(a1.sesame.messageRecords[0]?.resends).toBe(MAX_RESENDS);
    const last = unwrap(handleRetryRequest(a1.sesame, b1.address, MESSAGE_ID, T0));
    expect(last.action).toEqual({ kind: 'drop', reason: 'resend-limit' });
    expect(last.state).toBe(a1.sesame);
    // Recording the resend's new session keeps the count: the limit cannot be reset.
    const base = deviceOf(a1, 'bob', 1).sessions.current?.aliceBaseKey ?? new Uint8Array();
    a1.sesame = recordSentMessage(a1.sesame, {
      messageId: MESSAGE_ID,
      userId: 'bob',
      deviceId: 1,
      sessionBaseKey: base,
      plaintext: text('x'),
    });
    expect(a1.sesame.messageRecords[0]?.resends).toBe(MAX_RESENDS);
  });

  it('unknown message ids and user mismatches are dropped; the device id is not checked [WP-SES-13]', () => {
    const a1 = makeDev(seed, 'alice', 1);
    const bob = makeUser(seed, 'bob', 1);
    const [b1] = bob;
    const [c1] = makeUser(seed, 'carol', 1);
    if (b1 === undefined || c1 === undefined) throw new Error('setup');
    prep(a1, [b1, c1]);
    sendAndRecord(a1, 'bob', 'for bob');
    const unknown = unwrap(handleRetryRequest(a1.sesame, b1.address, 'bb'.repeat(16), T0));
    expect(unknown.action).toEqual({ kind: 'drop', reason: 'unknown-message' });
    expect(unwrap(handleRetryRequest(a1.sesame, b1.address, 'not-an-id', T0)).action).toEqual({
      kind: 'drop',
      reason: 'unknown-message',
    });
    const mismatch = unwrap(handleRetryRequest(a1.sesame, c1.address, MESSAGE_ID, T0));
    expect(mismatch.action).toEqual({ kind: 'drop', reason: 'user-mismatch' });
    // bob.5 is unknown to Alice, but the user id matches: the resend goes to bob.5 on a new session.
    const other = unwrap(handleRetryRequest(a1.sesame, { userId: 'bob', deviceId: 5 }, MESSAGE_ID, T0));
    expect(other.action).toMatchObject({ kind: 'resend', needNewSession: true, deviceId: 5 });
    expect(other.state.messageRecords.map((r) => [r.deviceId, r.resends])).toEqual([
      [1, 0],
      [5, 1],
    ]);
    expect(errorOf(handleRetryRequest(a1.sesame, a1.address, MESSAGE_ID, T0)).code).toBe(
      'SESAME_OWN_ADDRESS',
    );
    expect(
      errorOf(handleRetryRequest(a1.sesame, { userId: 'bob', deviceId: 200 }, MESSAGE_ID, T0)).code,
    ).toBe('SESAME_INVALID_DEVICE_ENTRY');
  });

  it('message records are one per recipient device, bounded by MAX_MESSAGE_RECORDS, and deleted on receipt [WP-SES-12]', () => {
    const a1 = makeDev(seed, 'alice', 1);
    const base = a1.prekeys.identityKeyPair.publicKey;
    let s = a1.sesame;
    const id = (i: number): string => i.toString(16).padStart(32, '0');
    for (let i = 0; i < MAX_MESSAGE_RECORDS + 5; i++)
      s = recordSentMessage(s, {
        messageId: id(i),
        userId: 'bob',
        deviceId: 1,
        sessionBaseKey: base,
        plaintext: text(`m${i}`),
      });
    expect(s.messageRecords).toHaveLength(MAX_MESSAGE_RECORDS);
    expect(s.messageRecords[0]?.messageId).toBe(id(5));
    const replaced = recordSentMessage(s, {
      messageId: id(10),
      userId: 'bob',
      deviceId: 1,
      sessionBaseKey: base,
      plaintext: text('new'),
    });
    expect(replaced.messageRecords).toHaveLength(MAX_MESSAGE_RECORDS);
    expect(str(replaced.messageRecords[5]?.plaintext ?? new Uint8Array())).toBe('new');
    expect(deleteMessageRecords(replaced, id(10)).messageRecords).toHaveLength(MAX_MESSAGE_RECORDS - 1);
    expect(sesameInvariantViolations(replaced)).toEqual([]);
    expect(() =>
      recordSentMessage(s, {
        messageId: id(1),
        userId: 'alice',
        deviceId: 1,
        sessionBaseKey: base,
        plaintext: text('x'),
      }),
    ).toThrow(UsageError);
  });
});

// ---------------------------------------------------------------------------------------------
// Stale record cleanup (§3.1, §6.4)
// ---------------------------------------------------------------------------------------------

describe('Sesame stale record cleanup', () => {
  const [a1] = makeUser('sesame-cleanup', 'alice', 1);
  const bob = makeUser('sesame-cleanup', 'bob', 2);
  if (a1 === undefined) throw new Error('setup');

  it('stale records go only after MAX_LATENCY_MS and a complete mailbox drain after that [WP-SES-11]', () => {
    let s = emptySesameState(a1.address);
    for (const b of bob) s = conditionalUpdate(s, 'bob', b.address.deviceId, entryOf(b).identityKey, 1).state;
    s = conditionalUpdate(s, 'carol', 1, entryOf(a1).identityKey, 1).state;
    s = markDeviceStale(s, 'bob', 1, T0);
    s = markUserStale(s, 'carol', T0);
    const due = T0 + MAX_LATENCY_MS;
    // Not yet older than MAX_LATENCY_MS.
    expect(cleanupStaleRecords(s, due, due)).toEqual(s);
    // Old enough, but the last complete drain happened before they were that old.
    expect(cleanupStaleRecords(s, due + 1, due - 1)).toEqual(s);
    // Old enough and drained afterwards: gone.
    const cleaned = cleanupStaleRecords(s, due + 1, due);
    expect(getDeviceRecord(cleaned, 'bob', 1)).toBeUndefined();
    expect(getDeviceRecord(cleaned, 'bob', 2)).toBeDefined();
    expect(getUserRecord(cleaned, 'carol')).toBeUndefined();
    // The cascade: bob's last device goes stale and is cleaned up with its user record.
    const later = cleanupStaleRecords(
      markDeviceStale(cleaned, 'bob', 2, due),
      due + MAX_LATENCY_MS + 1,
      due + MAX_LATENCY_MS,
    );
    expect(later.users).toEqual({});
  });
});

// ---------------------------------------------------------------------------------------------
// Abstraction
// ---------------------------------------------------------------------------------------------

describe('Sesame abstraction', () => {
  it('lists users and devices in order with fingerprints, never keys [WP-SES-01]', () => {
    const a1 = makeDev('sesame-abstract', 'alice', 1);
    const bob = makeUser('sesame-abstract', 'bob', 2);
    const [b1, b2] = bob;
    if (b1 === undefined || b2 === undefined) throw new Error('setup');
    prep(a1, [b2, b1]);
    a1.sesame = markDeviceStale(a1.sesame, 'bob', 2, T0);
    a1.sesame = recordSentMessage(a1.sesame, {
      messageId: MESSAGE_ID,
      userId: 'bob',
      deviceId: 1,
      sessionBaseKey: b1.prekeys.identityKeyPair.publicKey,
      plaintext: text('secret'),
    });
    const abstract = abstractSesame(crypto, a1.sesame);
    expect(abstract.self).toEqual({ userId: 'alice', deviceId: 1 });
    expect(abstract.messageRecords).toBe(1);
    expect(abstract.users.map((u) => u.userId)).toEqual(['bob']);
    expect(abstract.users[0]?.devices.map((d) => [d.deviceId, d.stale, d.registrationId])).toEqual([
      [1, false, b1.prekeys.registrationId],
      [2, true, b2.prekeys.registrationId],
    ]);
    expect(abstract.users[0]?.devices[0]?.identityKeyFp).toBe(fingerprint(crypto, entryOf(b1).identityKey));
    expect(abstract.users[0]?.devices[0]?.sessions.current?.phase).toBe('initiating');
    const json = JSON.stringify(abstract);
    expect(json).not.toContain(hex(entryOf(b1).identityKey));
    expect(json).not.toContain(hex(text('secret')));
  });
});

// ---------------------------------------------------------------------------------------------
// Property: multi-device interaction with a trivial server
// ---------------------------------------------------------------------------------------------

/** Sends per device in one run: with at most 5, no delayed message can outlive its receiving chain (WP-DR-09). */
const SENDS_PER_DEVICE = 5;

type Command =
  | { readonly kind: 'send'; readonly device: number }
  | { readonly kind: 'deliver'; readonly pick: number }
  | { readonly kind: 'duplicate'; readonly pick: number }
  | { readonly kind: 'drop'; readonly pick: number };

interface InFlight {
  readonly messageNo: number;
  readonly from: DeviceAddress;
  readonly to: DeviceAddress;
  readonly copy: OutgoingDeviceMessage;
}

const addressKey = (a: DeviceAddress): string => `${a.userId}.${a.deviceId}`;

/**
 * A trivial honest server for one send: accepts iff the copies name exactly the recipient's devices
 * (minus the sender) with their current registration ids, otherwise refuses like Signal's server.
 */
function serverCheck(
  all: readonly Dev[],
  sender: Dev,
  userId: UserId,
  copies: readonly OutgoingDeviceMessage[],
): SendRefusal | null {
  const current = all.filter(
    (d) => d.address.userId === userId && addressKey(d.address) !== addressKey(sender.address),
  );
  const sent = copies.map((c) => c.deviceId);
  const missing = current.map((d) => d.address.deviceId).filter((id) => !sent.includes(id));
  const extra = sent.filter((id) => !current.some((d) => d.address.deviceId === id));
  if (missing.length > 0 || extra.length > 0)
    return { kind: 'mismatched-devices', missing, extra, deviceList: EMPTY_LIST };
  const stale = copies.filter(
    (c) =>
      current.find((d) => d.address.deviceId === c.deviceId)?.prekeys.registrationId !== c.registrationId,
  );
  if (stale.length > 0)
    return { kind: 'stale-devices', stale: stale.map((c) => c.deviceId), deviceList: EMPTY_LIST };
  return null;
}

describe('Sesame interaction property', () => {
  it('random sends, deliveries, drops and duplicates across 2 users with 2–3 devices: every delivered copy decrypts exactly once at its device [WP-SES-05] [WP-SES-09] [WP-SES-10]', () => {
    const command: fc.Arbitrary<Command> = fc.oneof(
      { weight: 2, arbitrary: fc.record({ kind: fc.constant('send' as const), device: fc.nat(5) }) },
      { weight: 4, arbitrary: fc.record({ kind: fc.constant('deliver' as const), pick: fc.nat(1000) }) },
      { weight: 1, arbitrary: fc.record({ kind: fc.constant('duplicate' as const), pick: fc.nat(1000) }) },
      { weight: 1, arbitrary: fc.record({ kind: fc.constant('drop' as const), pick: fc.nat(1000) }) },
    );
    fc.assert(
      fc.property(
        fc.integer({ min: 2, max: 3 }),
        fc.integer({ min: 2, max: 3 }),
        fc.array(command, { minLength: 10, maxLength: 80 }),
        fc.nat(1000),
        (aliceCount, bobCount, commands, runSeed) => {
          const seed = `sesame-property-${runSeed}`;
          const devs = [...makeUser(seed, 'alice', aliceCount), ...makeUser(seed, 'bob', bobCount)];
          const sends = new Map<string, number>();
          const inFlight: InFlight[] = [];
          const delivered: InFlight[] = [];
          /** `messageNo → addresses that decrypted it`, and the addresses each copy was meant for. */
          const decryptedAt = new Map<number, string[]>();
          const intended = new Map<number, string[]>();
          const dropped = new Set<string>();
          let messageNo = 0;

          const sendFrom = (sender: Dev): void => {
            const no = messageNo++;
            const body = `m${no} from ${addressKey(sender.address)}`;
            intended.set(no, []);
            for (const userId of ['alice', 'bob']) {
              // §3.3: encrypt, submit, apply refusals, prep, retry; bounded by MAX_SEND_ATTEMPTS.
              let accepted = false;
              for (let attempt = 0; attempt < 5 && !accepted; attempt++) {
                const out = unwrap(encryptForUser(sender.env, sender.sesame, userId, text(body), T0));
                const refusal = serverCheck(devs, sender, userId, out.messages);
                if (refusal === null) {
                  sender.sesame = out.state;
                  for (const copy of out.messages) {
                    const to = { userId, deviceId: copy.deviceId };
                    inFlight.push({ messageNo: no, from: sender.address, to, copy });
                    intended.get(no)?.push(addressKey(to));
                  }
                  accepted = true;
                  break;
                }
                const current = devs.filter((d) => d.address.userId === userId).map(entryOf);
                const applied = unwrap(applySendRefusal(sender.sesame, userId, refusal, current, T0));
                sender.sesame = applied.state;
                const need = devicesNeedingSessions(sender.sesame, userId, T0);
                prep(
                  sender,
                  devs.filter((d) => d.address.userId === userId && need.includes(d.address.deviceId)),
                );
              }
              expect(accepted).toBe(true);
            }
            expectInvariants(sender);
          };

          const deliverCopy = (item: InFlight): Result<ReceivedMessage> => {
            const to = devs.find((d) => addressKey(d.address) === addressKey(item.to));
            if (to === undefined) throw new Error('no such device');
            return receive(to, item.from, item.copy);
          };

          const deliverFirst = (item: InFlight): void => {
            const result = deliverCopy(item);
            if (!result.ok)
              throw new Error(`m${item.messageNo} at ${addressKey(item.to)} failed: ${result.error.code}`);
            expect(str(result.value.plaintext)).toBe(`m${item.messageNo} from ${addressKey(item.from)}`);
            decryptedAt.set(item.messageNo, [
              ...(decryptedAt.get(item.messageNo) ?? []),
              addressKey(item.to),
            ]);
            delivered.push(item);
          };

          for (const c of commands) {
            if (c.kind === 'send') {
              const sender = devs[c.device % devs.length];
              if (sender === undefined) continue;
              const count = sends.get(addressKey(sender.address)) ?? 0;
              if (count >= SENDS_PER_DEVICE) continue;
              sends.set(addressKey(sender.address), count + 1);
              sendFrom(sender);
            } else if (c.kind === 'deliver' || c.kind === 'drop') {
              if (inFlight.length === 0) continue;
              const [item] = inFlight.splice(c.pick % inFlight.length, 1);
              if (item === undefined) continue;
              if (c.kind === 'drop') dropped.add(`${item.messageNo}/${addressKey(item.to)}`);
              else deliverFirst(item);
            } else {
              const item = delivered[c.pick % Math.max(1, delivered.length)];
              if (item === undefined) continue;
              const to = devs.find((d) => addressKey(d.address) === addressKey(item.to));
              if (to === undefined) continue;
              const before = snapshot(to);
              // P34: a duplicate is rejected and changes nothing.
              expect(deliverCopy(item).ok).toBe(false);
              expect(snapshot(to)).toBe(before);
            }
          }
          // Liveness: the network heals; everything still in flight arrives (in its current order).
          for (const item of inFlight.splice(0)) deliverFirst(item);
          for (const [no, targets] of intended) {
            const expected = targets.filter((t) => !dropped.has(`${no}/${t}`)).sort();
            expect([...(decryptedAt.get(no) ?? [])].sort()).toEqual(expected);
          }
          expectInvariants(...devs);
        },
      ),
      { numRuns: process.env['LOCKSTEP_FULL'] ? 200 : 25 },
    );
  });
});
