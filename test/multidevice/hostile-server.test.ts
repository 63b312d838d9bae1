/**
 * Scenario stories with a hostile server: for every way a client can be refused or answered, the
 * test crafts the server's answer itself (to a request the client is really waiting for) and checks
 * that the failure is a typed output and that the client is not corrupted: afterwards it still
 * exchanges messages with honest peers through the honest server.
 */
import { describe, expect, it } from 'vitest';
import { MAX_SEND_ATTEMPTS } from '../../spec/constants.js';
import { generateKeyPair } from '../../spec/keys.js';
import type { DeviceList } from '../../spec/device-list-types.js';
import { parseSignalMessage } from '../../spec/wire.js';
import type { ServerResponse } from '../../spec/server-api.js';
import type { PendingRequest } from '../../impl/device.js';
import { mailboxDepth } from '../../impl/server.js';
import {
  addContact,
  answerHonestly,
  contactLinkOf,
  createWorld,
  device,
  holdRequests,
  input,
  linkDevice,
  pendingOf,
  respond,
  run,
  sendQueued,
  sendRequestsOf,
  sync,
  texts,
  type World,
} from '../support/world.js';
import {
  copiesIn,
  createUser,
  expectFannedOut,
  expectStillTalks,
  forgeList,
  outputsOfKind,
  serverList,
  signList,
  talkingPair,
} from './stories.js';

/** alice (one device) and bob (two devices, list version 2) who already talk. */
function setup(seed: string): World {
  const w = createWorld(seed);
  talkingPair(w, 0, 1);
  expect(serverList(w, 'bob').list.version).toBe(2);
  return w;
}

/** `name` sends `text` to `to`; the network loses the request, so the client waits for our answer. */
function heldSend(w: World, name: string, to: string, text: string): PendingRequest {
  const release = holdRequests(w, name, 'send');
  sendQueued(w, name, [to], text);
  run(w);
  release();
  const pending = pendingOf(w, name, 'send').find(
    (p) => p.request.kind === 'send' && p.request.recipient === to,
  );
  if (pending === undefined) throw new Error(`${name} has no pending send to ${to}`);
  return pending;
}

function sendFailures(w: World, name: string): string[] {
  return outputsOfKind(w, name, 'send-failed').map((f) => f.error.code);
}

/**
 * alice sends `text` to bob while her bundle request is held; returns that pending request and what
 * the honest server would answer (its prekeys consumed), for a test to answer with something else.
 */
function heldBundleRequest(
  w: World,
  text: string,
): { readonly requestId: number; readonly honest: Extract<ServerResponse, { kind: 'bundles' }> } {
  const release = holdRequests(w, 'alice', 'get-bundles');
  sendQueued(w, 'alice', ['bob'], text);
  run(w);
  release();
  const pending = pendingOf(w, 'alice', 'get-bundles')[0];
  if (pending === undefined) throw new Error('no pending bundle request');
  const honest = answerHonestly(w, 'alice', pending.request);
  if (honest.kind !== 'bundles') throw new Error('no bundles');
  return { requestId: pending.requestId, honest };
}

describe('hostile answers to a send', () => {
  it('unknown-user refusal: a typed send failure, and the client recovers [WP-XPORT-04]', () => {
    const w = setup('hostile-unknown-user');
    const pending = heldSend(w, 'alice', 'bob', 'lost to unknown-user');
    respond(w, 'alice', pending.requestId, { kind: 'refused', refusal: { kind: 'unknown-user' } });
    expect(sendFailures(w, 'alice')).toEqual(['XPORT_SERVER_ERROR']);
    expect(device(w, 'alice').outbox).toEqual([]);
    expectStillTalks(w, 'alice', 'bob', 'after unknown-user');
  });

  it('mismatched devices with a list signed by another key: refused in signed mode (TRUST_LIST_INVALID) [WP-TRUST-02]', () => {
    const w = setup('hostile-forged-list');
    const attacker = generateKeyPair(w.env.crypto, w.env.rng);
    const mallory = createUser(w, 'mallory')[0] ?? 'mallory';
    const honest = serverList(w, 'bob').list;
    // The list claims bob's account key and adds a device with mallory's identity; the signature is mallory's.
    const forged: DeviceList = {
      ...honest,
      version: honest.version + 1,
      devices: [
        ...honest.devices,
        {
          deviceId: 3,
          identityKey: device(w, mallory).prekeys.identityKeyPair.publicKey,
          registrationId: 77,
        },
      ],
    };
    const pending = heldSend(w, 'alice', 'bob', 'not for mallory');
    const sentBefore = sendRequestsOf(w, 'alice').length;
    respond(w, 'alice', pending.requestId, {
      kind: 'refused',
      refusal: {
        kind: 'mismatched-devices',
        missing: [3],
        extra: [],
        deviceList: forgeList(w, attacker.privateKey, forged),
      },
    });
    expect(sendFailures(w, 'alice')).toEqual(['TRUST_LIST_INVALID']);
    expect(sendRequestsOf(w, 'alice').slice(sentBefore)).toEqual([]);
    expect(device(w, 'alice').trust['bob']?.list?.version).toBe(honest.version);
    expect(
      outputsOfKind(w, 'alice', 'device-list-changed').filter((e) => e.userId === 'bob' && e.version > 2),
    ).toEqual([]);
    expectStillTalks(w, 'alice', 'bob', 'after forged list');
  });

  it('mismatched devices with a list under another account key: a key-change event, nothing sent until acknowledged [WP-TRUST-04]', () => {
    const w = setup('hostile-other-account-key');
    const attacker = generateKeyPair(w.env.crypto, w.env.rng);
    const honest = serverList(w, 'bob').list;
    const takeover: DeviceList = { ...honest, version: honest.version + 1, accountKey: attacker.publicKey };
    const pending = heldSend(w, 'alice', 'bob', 'held back');
    const sentBefore = sendRequestsOf(w, 'alice').length;
    respond(w, 'alice', pending.requestId, {
      kind: 'refused',
      refusal: {
        kind: 'mismatched-devices',
        missing: [],
        extra: [],
        deviceList: signList(w, attacker.privateKey, takeover),
      },
    });
    expect(outputsOfKind(w, 'alice', 'key-change')).toEqual([
      { kind: 'key-change', userId: 'bob', deviceId: null },
    ]);
    expect(device(w, 'alice').outbox.map((i) => i.stage)).toEqual(['blocked']);
    run(w);
    expect(sendRequestsOf(w, 'alice').slice(sentBefore)).toEqual([]);
    expect(texts(w, 'bob')).not.toContain('held back');
    // bob's messages wait too, unacknowledged in the mailbox: not shown under an unsettled key, not lost.
    input(w, 'bob', {
      kind: 'user.send',
      recipients: ['alice'],
      content: { kind: 'text', text: 'still here' },
    });
    run(w);
    sync(w);
    expect(texts(w, 'alice')).not.toContain('still here');
    expect(mailboxDepth(w.server, { userId: 'alice', deviceId: 1 })).toBe(1);
  });

  it('a rolled-back device list in a refusal is refused (TRUST_LIST_ROLLBACK); the send goes again on the list held [WP-TRUST-03] [WP-XPORT-08]', () => {
    const w = setup('hostile-rollback');
    const registration = w.serverLog.find((e) => e.request.kind === 'register-account' && e.device === 'bob');
    if (registration?.request.kind !== 'register-account') throw new Error('no registration of bob');
    const versionOne = registration.request.deviceList;
    const pending = heldSend(w, 'alice', 'bob', 'not to the old list');
    respond(w, 'alice', pending.requestId, {
      kind: 'refused',
      refusal: { kind: 'mismatched-devices', missing: [], extra: [2], deviceList: versionOne },
    });
    expect(device(w, 'alice').trust['bob']?.list?.devices.map((d) => d.deviceId)).toEqual([1, 2]);
    sync(w);
    expect(sendFailures(w, 'alice')).toEqual([]);
    expectFannedOut(w, 'alice', 'bob', 'not to the old list');
    expectStillTalks(w, 'alice', 'bob', 'after rollback');
  });

  it('two different lists with one version are refused (TRUST_LIST_EQUIVOCATION) [WP-TRUST-03]', () => {
    const w = setup('hostile-equivocation');
    const honest = serverList(w, 'bob').list;
    const bobKey = device(w, 'bob').accountPrivateKey;
    if (bobKey === null) throw new Error('bob holds no account key');
    // Even signed by the real account key (say, a stolen one), a second list for version 2 is refused.
    const second = signList(w, bobKey, {
      ...honest,
      devices: honest.devices.filter((d) => d.deviceId === 1),
    });
    const pending = heldSend(w, 'alice', 'bob', 'equivocated');
    respond(w, 'alice', pending.requestId, {
      kind: 'refused',
      refusal: { kind: 'mismatched-devices', missing: [], extra: [2], deviceList: second },
    });
    expect(sendFailures(w, 'alice')).toEqual(['TRUST_LIST_EQUIVOCATION']);
    expectStillTalks(w, 'alice', 'bob', 'after equivocation');
  });

  it('a lying stale-devices refusal costs a new session, not the message: shown once on every device [WP-SES-07] [WP-XPORT-02]', () => {
    const w = setup('hostile-stale');
    const pending = heldSend(w, 'alice', 'bob', 'despite the lie');
    respond(w, 'alice', pending.requestId, {
      kind: 'refused',
      refusal: { kind: 'stale-devices', stale: [2], deviceList: serverList(w, 'bob').signed },
    });
    expect(sendFailures(w, 'alice')).toEqual([]);
    expect(outputsOfKind(w, 'alice', 'key-change')).toEqual([]);
    sync(w);
    expectFannedOut(w, 'alice', 'bob', 'despite the lie');
    expectStillTalks(w, 'alice', 'bob', 'after stale lie');
  });

  it('mailbox-full: nothing lost, retried on timer.resend and stored once [WP-XPORT-05]', () => {
    const w = setup('hostile-mailbox-full');
    const pending = heldSend(w, 'alice', 'bob', 'patience');
    respond(w, 'alice', pending.requestId, {
      kind: 'refused',
      refusal: { kind: 'mailbox-full', deviceIds: [1] },
    });
    expect(sendFailures(w, 'alice')).toEqual([]);
    expect(device(w, 'alice').outbox.map((i) => i.stage)).toEqual(['mailbox-full']);
    sync(w);
    expect(texts(w, 'bob')).not.toContain('patience');
    input(w, 'alice', { kind: 'timer.resend' });
    run(w);
    sync(w);
    expectFannedOut(w, 'alice', 'bob', 'patience');
    expect(device(w, 'alice').outbox).toEqual([]);
    expectStillTalks(w, 'alice', 'bob', 'after mailbox-full');
  });

  it('a server error or an answer of the wrong kind is a typed send failure carrying the code [WP-XPORT-04]', () => {
    const w = setup('hostile-error');
    const first = heldSend(w, 'alice', 'bob', 'refused by error');
    respond(w, 'alice', first.requestId, {
      kind: 'error',
      code: 'SERVER_STORE_FULL',
      rule: 'WP-SRV-25',
      message: 'hostile',
    });
    const second = heldSend(w, 'alice', 'bob', 'answered with nonsense');
    respond(w, 'alice', second.requestId, { kind: 'ok' });
    expect(sendFailures(w, 'alice')).toEqual(['SERVER_STORE_FULL', 'XPORT_SERVER_ERROR']);
    expectStillTalks(w, 'alice', 'bob', 'after errors');
  });

  it('a failed send never rewinds the sending chain: the next message uses a later counter [WP-XPORT-03]', () => {
    const w = setup('hostile-no-rewind');
    const counterTo = (request: PendingRequest['request'], deviceId: number): number => {
      if (request.kind !== 'send') throw new Error('not a send');
      const copy = request.messages.find((m) => m.deviceId === deviceId);
      if (copy === undefined || copy.type !== 'whisper') throw new Error('no whisper copy');
      const parsed = parseSignalMessage(copy.bytes);
      if (!parsed.ok) throw new Error(parsed.error.message);
      return parsed.value.counter;
    };
    const failed = heldSend(w, 'alice', 'bob', 'fails after encryption');
    respond(w, 'alice', failed.requestId, {
      kind: 'error',
      code: 'SERVER_STORE_FULL',
      rule: 'WP-SRV-25',
      message: 'x',
    });
    expect(sendFailures(w, 'alice')).toEqual(['SERVER_STORE_FULL']);
    const next = heldSend(w, 'alice', 'bob', 'the next one');
    expect(counterTo(next.request, 1)).toBeGreaterThan(counterTo(failed.request, 1));
    respond(w, 'alice', next.requestId, answerHonestly(w, 'alice', next.request));
    sync(w);
    expectFannedOut(w, 'alice', 'bob', 'the next one');
    expect(texts(w, 'bob')).not.toContain('fails after encryption');
  });

  it('refusals are bounded: a server that keeps refusing ends in XPORT_SEND_ATTEMPTS_EXHAUSTED [WP-XPORT-03]', () => {
    const w = setup('hostile-endless-refusal');
    const release = holdRequests(w, 'alice', 'send');
    sendQueued(w, 'alice', ['bob'], 'never accepted');
    run(w);
    let answered = 0;
    for (;;) {
      const pending = pendingOf(w, 'alice', 'send')[0];
      if (pending === undefined) break;
      answered++;
      respond(w, 'alice', pending.requestId, {
        kind: 'refused',
        refusal: { kind: 'stale-devices', stale: [1], deviceList: serverList(w, 'bob').signed },
      });
      expect(answered).toBeLessThanOrEqual(10);
    }
    release();
    expect(answered).toBe(5);
    expect(sendFailures(w, 'alice')).toEqual(['XPORT_SEND_ATTEMPTS_EXHAUSTED']);
    expectStillTalks(w, 'alice', 'bob', 'after endless refusals');
  });

  it('an unknown request id and a repeated answer are ignored [WP-XPORT-01]', () => {
    const w = setup('hostile-unknown-request');
    const before = device(w, 'alice');
    const outputs = respond(w, 'alice', 9_999, {
      kind: 'accepted',
      messageId: '0'.repeat(32),
      duplicate: false,
    });
    expect(outputs).toEqual([]);
    expect(device(w, 'alice')).toBe(before);
    const pending = heldSend(w, 'alice', 'bob', 'answered twice');
    const answer = answerHonestly(w, 'alice', pending.request);
    expect(respond(w, 'alice', pending.requestId, answer).map((o) => o.kind)).toEqual(['sent']);
    const afterFirst = device(w, 'alice');
    expect(respond(w, 'alice', pending.requestId, answer)).toEqual([]);
    expect(device(w, 'alice')).toBe(afterFirst);
    sync(w);
    expectFannedOut(w, 'alice', 'bob', 'answered twice');
    expectStillTalks(w, 'alice', 'bob', 'after repeated answer');
  });
});

describe('hostile answers to bundle and list requests', () => {
  it('a bundle whose identity key differs from the list is never used: the list is fetched again and the genuine device gets the message [WP-TRUST-06] [WP-XPORT-03]', () => {
    const w = setup('hostile-bundle');
    linkDevice(w, 'bob', 'bob-3');
    // alice's next send is refused (bob-3 missing), then she asks for bob-3's bundle: we answer it.
    const pending = heldBundleRequest(w, 'not to an impostor');
    const honest = pending.honest;
    const impostor = device(w, 'bob').prekeys.identityKeyPair.publicKey;
    const swapped: ServerResponse = {
      kind: 'bundles',
      bundles: honest.bundles.map((b) => ({ ...b, identityKey: impostor })),
    };
    const listsBefore = w.serverLog.filter(
      (e) => e.device === 'alice' && e.request.kind === 'get-device-list',
    ).length;
    respond(w, 'alice', pending.requestId, swapped);
    // The swapped bundle was discarded: alice asked for the list again, then for honest bundles.
    expect(
      w.serverLog.filter((e) => e.device === 'alice' && e.request.kind === 'get-device-list').length,
    ).toBeGreaterThan(listsBefore);
    expect(sendFailures(w, 'alice')).toEqual([]);
    sync(w);
    expect(texts(w, 'bob-3')).toEqual(['not to an impostor']);
    expectStillTalks(w, 'alice', 'bob', 'after bundle swap');
  });

  it('a server that keeps swapping identity keys in bundles makes the send fail, typed, after the bounded attempts (TRUST_BUNDLE_IDENTITY_MISMATCH) [WP-TRUST-06] [WP-XPORT-03]', () => {
    const w = setup('hostile-bundle-always');
    linkDevice(w, 'bob', 'bob-3');
    const release = holdRequests(w, 'alice', 'get-bundles');
    sendQueued(w, 'alice', ['bob'], 'never to an impostor');
    run(w);
    const impostor = device(w, 'bob').prekeys.identityKeyPair.publicKey;
    for (let round = 0; round < 20 && sendFailures(w, 'alice').length === 0; round++) {
      const pending = pendingOf(w, 'alice', 'get-bundles')[0];
      if (pending === undefined) break;
      const honest = answerHonestly(w, 'alice', pending.request);
      if (honest.kind !== 'bundles') throw new Error('no bundles');
      respond(w, 'alice', pending.requestId, {
        kind: 'bundles',
        bundles: honest.bundles.map((b) => ({ ...b, identityKey: impostor })),
      });
    }
    release();
    expect(sendFailures(w, 'alice')).toEqual(['TRUST_BUNDLE_IDENTITY_MISMATCH']);
    expect(texts(w, 'bob-3')).toEqual([]);
    expectStillTalks(w, 'alice', 'bob', 'after repeated bundle swaps');
  });

  it('a bundle for a device the list does not name is never used; the send goes to the listed devices [WP-TRUST-06]', () => {
    const w = setup('hostile-bundle-unlisted');
    linkDevice(w, 'bob', 'bob-3');
    const pending = heldBundleRequest(w, 'to listed devices only');
    const honest = pending.honest;
    respond(w, 'alice', pending.requestId, {
      kind: 'bundles',
      bundles: honest.bundles.map((b) => ({ ...b, deviceId: 9 })),
    });
    expect(sendFailures(w, 'alice')).toEqual([]);
    sync(w);
    expect(texts(w, 'bob-3')).toEqual(['to listed devices only']);
    expectStillTalks(w, 'alice', 'bob', 'after unlisted bundle');
  });

  it("another user's list served for a contact is refused (TRUST_LIST_INVALID), and so is a refused lookup [WP-TRUST-02]", () => {
    const w = createWorld('hostile-wrong-user-list');
    createUser(w, 'alice');
    createUser(w, 'bob', 1);
    createUser(w, 'carol');
    const release = holdRequests(w, 'alice', 'get-device-list');
    input(w, 'alice', { kind: 'user.add-contact', link: contactLinkOf(w, 'bob') });
    sendQueued(w, 'alice', ['bob'], 'waits for the list');
    run(w);
    release();
    const pending = pendingOf(w, 'alice', 'get-device-list')[0];
    if (pending === undefined) throw new Error('no pending list request');
    respond(w, 'alice', pending.requestId, {
      kind: 'device-list',
      deviceList: serverList(w, 'carol').signed,
    });
    expect(outputsOfKind(w, 'alice', 'error').map((e) => e.error.code)).toEqual(['TRUST_LIST_INVALID']);
    // The waiting send asked again at once; the honest server answered, and the message went out.
    expect(device(w, 'alice').trust['bob']?.list?.userId).toBe('bob');
    sync(w);
    expect(sendRequestsOf(w, 'alice').filter((s) => s.request.recipient === 'bob').length).toBeGreaterThan(0);
    expectFannedOut(w, 'alice', 'bob', 'waits for the list');
  });

  it('a server that keeps serving an invalid list is asked a bounded number of times, then the send fails typed [WP-XPORT-03] [WP-TRUST-02]', () => {
    const w = createWorld('hostile-invalid-list-loop');
    createUser(w, 'alice');
    createUser(w, 'bob', 1);
    createUser(w, 'carol');
    const release = holdRequests(w, 'alice', 'get-device-list');
    input(w, 'alice', { kind: 'user.add-contact', link: contactLinkOf(w, 'bob') });
    sendQueued(w, 'alice', ['bob'], 'waits for a valid list');
    run(w);
    let answered = 0;
    for (; answered < 3 * MAX_SEND_ATTEMPTS; answered++) {
      const pending = pendingOf(w, 'alice', 'get-device-list')[0];
      if (pending === undefined) break;
      respond(w, 'alice', pending.requestId, {
        kind: 'device-list',
        deviceList: serverList(w, 'carol').signed,
      });
    }
    release();
    // Each refused list made the waiting send ask again at once, without end.
    expect(answered).toBeLessThanOrEqual(MAX_SEND_ATTEMPTS);
    expect(sendFailures(w, 'alice')).toEqual(['TRUST_LIST_INVALID']);
  });

  it('an unknown-user answer to a list lookup fails the waiting sends with a typed error [WP-XPORT-04] [WP-TRUST-01]', () => {
    const w = createWorld('hostile-unknown-user-list');
    createUser(w, 'alice');
    createUser(w, 'bob');
    const release = holdRequests(w, 'alice', 'get-device-list');
    input(w, 'alice', { kind: 'user.add-contact', link: contactLinkOf(w, 'bob') });
    sendQueued(w, 'alice', ['bob'], 'to nobody');
    run(w);
    release();
    const pending = pendingOf(w, 'alice', 'get-device-list')[0];
    if (pending === undefined) throw new Error('no pending list request');
    respond(w, 'alice', pending.requestId, {
      kind: 'error',
      code: 'SERVER_UNKNOWN_USER',
      rule: 'WP-SRV-12',
      message: 'hostile',
    });
    expect(sendFailures(w, 'alice')).toEqual(['SERVER_UNKNOWN_USER']);
    expect(sendRequestsOf(w, 'alice').map((s) => s.request.recipient)).toEqual([]);
    addContact(w, 'alice', 'bob');
    expectStillTalks(w, 'alice', 'bob', 'after unknown user');
  });
});

describe('hostile mailbox contents', () => {
  it('an envelope from a device the sender list does not name is parked, the list refetched, then rejected [WP-TRUST-05]', () => {
    const w = setup('hostile-unlisted-sender');
    const release = holdRequests(w, 'alice', 'fetch');
    input(w, 'alice', { kind: 'net.fetch' });
    run(w);
    release();
    const pending = pendingOf(w, 'alice', 'fetch')[0];
    if (pending === undefined) throw new Error('no pending fetch');
    const lists = w.serverLog.filter(
      (e) => e.device === 'alice' && e.request.kind === 'get-device-list',
    ).length;
    respond(w, 'alice', pending.requestId, {
      kind: 'envelopes',
      envelopes: [
        {
          envelopeId: 900,
          messageId: 'ab'.repeat(16),
          sender: { userId: 'bob', deviceId: 7 },
          type: 'whisper',
          bytes: Uint8Array.of(1, 2, 3),
          serverTimestamp: w.now,
        },
        {
          envelopeId: 901,
          messageId: 'cd'.repeat(16),
          sender: { userId: 'alice', deviceId: 1 },
          type: 'whisper',
          bytes: Uint8Array.of(1, 2, 3),
          serverTimestamp: w.now,
        },
      ],
    });
    expect(
      w.serverLog.filter((e) => e.device === 'alice' && e.request.kind === 'get-device-list').length,
    ).toBe(lists + 1);
    expect(outputsOfKind(w, 'alice', 'undecryptable').map((u) => [u.from.deviceId, u.error.code])).toEqual([
      [7, 'TRUST_UNKNOWN_SENDER_DEVICE'],
    ]);
    expect(outputsOfKind(w, 'alice', 'error').map((e) => e.error.code)).toEqual([
      'TRUST_UNKNOWN_SENDER_DEVICE',
    ]);
    expect(device(w, 'alice').parked).toEqual([]);
    // Both were acknowledged (the honest server has no such ids; acks are idempotent).
    const acked = w.serverLog.flatMap((e) =>
      e.device === 'alice' && e.request.kind === 'ack' ? e.request.envelopeIds : [],
    );
    expect(acked).toEqual(expect.arrayContaining([900, 901]));
    expectStillTalks(w, 'alice', 'bob', 'after unlisted sender');
  });

  it('a PreKey message under another identity, attributed by the server to a listed device, is discarded (TRUST_SENDER_IDENTITY_MISMATCH) [WP-TRUST-05]', () => {
    const w = setup('hostile-spoofed-sender');
    // mallory, a user of this server, writes a real PreKey message to alice; the server files it as bob-2's.
    createUser(w, 'mallory');
    addContact(w, 'mallory', 'alice');
    const release = holdRequests(w, 'mallory', 'send');
    sendQueued(w, 'mallory', ['alice'], 'I am bob, trust me');
    run(w);
    release();
    const spoof = pendingOf(w, 'mallory', 'send')[0]?.request;
    if (spoof?.kind !== 'send') throw new Error('no spoof');
    const bytes = spoof.messages[0]?.bytes ?? new Uint8Array(0);
    const holdFetch = holdRequests(w, 'alice', 'fetch');
    input(w, 'alice', { kind: 'net.fetch' });
    run(w);
    holdFetch();
    const pending = pendingOf(w, 'alice', 'fetch')[0];
    if (pending === undefined) throw new Error('no pending fetch');
    respond(w, 'alice', pending.requestId, {
      kind: 'envelopes',
      envelopes: [
        {
          envelopeId: 970,
          messageId: spoof.messageId,
          sender: { userId: 'bob', deviceId: 2 },
          type: 'prekey',
          bytes,
          serverTimestamp: w.now,
        },
      ],
    });
    expect(outputsOfKind(w, 'alice', 'undecryptable').map((u) => [u.from.deviceId, u.error.code])).toEqual([
      [2, 'TRUST_SENDER_IDENTITY_MISMATCH'],
    ]);
    expect(texts(w, 'alice')).not.toContain('I am bob, trust me');
    expect(outputsOfKind(w, 'alice', 'key-change')).toEqual([]);
    expectStillTalks(w, 'alice', 'bob', 'after spoof');
    expectStillTalks(w, 'alice', 'bob-2', 'after spoof, bob-2');
  });

  it('garbage from a listed device is undecryptable, answered by a retry request, and harms nothing [WP-XPORT-06]', () => {
    const w = setup('hostile-garbage');
    const release = holdRequests(w, 'alice', 'fetch');
    input(w, 'alice', { kind: 'net.fetch' });
    run(w);
    release();
    const pending = pendingOf(w, 'alice', 'fetch')[0];
    if (pending === undefined) throw new Error('no pending fetch');
    respond(w, 'alice', pending.requestId, {
      kind: 'envelopes',
      envelopes: [
        {
          envelopeId: 950,
          messageId: 'ef'.repeat(16),
          sender: { userId: 'bob', deviceId: 2 },
          type: 'whisper',
          bytes: new Uint8Array(80).fill(0x33),
          serverTimestamp: w.now,
        },
      ],
    });
    expect(outputsOfKind(w, 'alice', 'undecryptable').map((u) => u.from)).toEqual([
      { userId: 'bob', deviceId: 2 },
    ]);
    const retry = sendRequestsOf(w, 'alice').at(-1)?.request;
    expect(retry?.onlyDevice).toBe(2);
    expect(retry?.messages.map((m) => m.type)).toEqual(['retry-request']);
    sync(w);
    // bob-2 never sent that message id: it drops the request (nothing to resend).
    expect(outputsOfKind(w, 'bob-2', 'resent')).toEqual([]);
    expect(copiesIn(retry ?? { messages: [] })).toEqual([2]);
    expectStillTalks(w, 'alice', 'bob', 'after garbage');
  });
});
