/**
 * Scenario stories for the transport (WP-XPORT-*): lost and duplicated requests and responses,
 * redelivered envelopes, and retry requests for messages a device cannot decrypt (Sesame §4.1).
 */
import { describe, expect, it } from 'vitest';
import { MAX_RESENDS } from '../../spec/constants.js';
import type { DeviceAddress } from '../../spec/identity.js';
import { encodeRetryRequest } from '../../spec/retry-request.js';
import { parsePreKeySignalMessage } from '../../spec/wire.js';
import { mailboxDepth } from '../../impl/server.js';
import {
  addContact,
  createWorld,
  device,
  holdRequests,
  input,
  linkDevice,
  pendingOf,
  resetAccount,
  respond,
  run,
  send,
  sendRequestsOf,
  sync,
  texts,
  type World,
} from '../support/world.js';
import {
  createUser,
  expectFannedOut,
  expectNoUndecryptable,
  expectNothingShownTwice,
  expectStillTalks,
  outputsOfKind,
  talkingPair,
} from './stories.js';

/**
 * Flips the last MAC byte of a message: a SignalMessage ends with its MAC; in a PreKeySignalMessage
 * it is the inner message's last byte (the outer fields are not all used once a session exists).
 */
function flipMac(type: string, bytes: Uint8Array): Uint8Array {
  const out = Uint8Array.from(bytes);
  let end = out.length;
  if (type === 'prekey') {
    const parsed = parsePreKeySignalMessage(bytes);
    if (!parsed.ok) throw new Error('not a PreKeySignalMessage');
    const inner = parsed.value.message;
    const at = out.findIndex((_, i) => inner.every((b, j) => out[i + j] === b));
    if (at < 0) throw new Error('inner message not found');
    end = at + inner.length;
  }
  out[end - 1] = (out[end - 1] ?? 0) ^ 0x01;
  return out;
}

/** Flips a MAC byte of every envelope from `from` waiting for `to`. */
function corruptMailbox(w: World, to: DeviceAddress, from: string): number {
  const account = w.server.accounts[to.userId];
  const stored = account?.devices[String(to.deviceId)];
  if (account === undefined || stored === undefined) throw new Error('no such mailbox');
  let corrupted = 0;
  const envelopes = stored.mailbox.envelopes.map((e) => {
    if (e.sender.userId !== from) return e;
    corrupted++;
    return { ...e, bytes: flipMac(e.type, e.bytes) };
  });
  const devices = {
    ...account.devices,
    [String(to.deviceId)]: { ...stored, mailbox: { ...stored.mailbox, envelopes } },
  };
  w.server = { ...w.server, accounts: { ...w.server.accounts, [to.userId]: { ...account, devices } } };
  return corrupted;
}

const BOB_1 = { userId: 'bob', deviceId: 1 };

describe('lost and repeated requests', () => {
  it('a lost send response: timer.resend sends the same request, the server says duplicate, stores once [WP-XPORT-01]', () => {
    const w = createWorld('lost-response');
    talkingPair(w, 0, 1);
    let dropped = 0;
    w.policy = (p) =>
      p.dir === 'down' && p.device === 'alice' && p.response.kind === 'accepted' && dropped++ === 0
        ? 'drop'
        : 'deliver';
    send(w, 'alice', ['bob'], 'said once');
    expect(dropped).toBe(1);
    expect(pendingOf(w, 'alice', 'send')).toHaveLength(1);
    expect(outputsOfKind(w, 'alice', 'sent')).toHaveLength(1); // only the greeting
    expect(mailboxDepth(w.server, BOB_1)).toBe(1);
    input(w, 'alice', { kind: 'timer.resend' });
    run(w);
    const sends = w.serverLog.filter((e) => e.request.kind === 'send' && e.device === 'alice').slice(-2);
    expect(sends.map((e) => e.request)).toEqual([sends[0]?.request, sends[0]?.request]);
    expect(sends.map((e) => e.response.kind === 'accepted' && e.response.duplicate)).toEqual([false, true]);
    expect(mailboxDepth(w.server, BOB_1)).toBe(1);
    expect(outputsOfKind(w, 'alice', 'sent')).toHaveLength(2);
    expect(pendingOf(w, 'alice')).toEqual([]);
    sync(w);
    expectFannedOut(w, 'alice', 'bob', 'said once');
    expectNoUndecryptable(w);
  });

  it('a lost or doubled send request is stored once and shown once [WP-XPORT-01] [WP-XPORT-02]', () => {
    const w = createWorld('lost-request');
    talkingPair(w, 1, 1);
    const release = holdRequests(w, 'alice', 'send');
    send(w, 'alice', ['bob'], 'first try lost');
    release();
    expect(mailboxDepth(w.server, BOB_1)).toBe(0);
    input(w, 'alice', { kind: 'timer.resend' });
    run(w);
    w.policy = (p) => (p.dir === 'up' && p.request.kind === 'send' ? 'duplicate' : 'deliver');
    send(w, 'bob-2', ['alice'], 'sent twice over the wire');
    w.policy = () => 'deliver';
    sync(w);
    expectFannedOut(w, 'alice', 'bob', 'first try lost');
    expectFannedOut(w, 'bob-2', 'alice', 'sent twice over the wire');
    for (const name of ['alice', 'alice-2', 'bob', 'bob-2']) expectNothingShownTwice(w, name);
    expectNoUndecryptable(w);
  });
});

describe('redelivered envelopes', () => {
  it('an envelope delivered again because its ack was lost is acknowledged and dropped, never shown twice [WP-XPORT-02]', () => {
    const w = createWorld('lost-ack');
    createUser(w, 'alice');
    createUser(w, 'bob', 1);
    addContact(w, 'alice', 'bob');
    // Lose every ack for a while: the server keeps redelivering the PreKey and the whisper messages.
    w.policy = (p) => (p.dir === 'up' && p.request.kind === 'ack' ? 'drop' : 'deliver');
    send(w, 'alice', ['bob'], 'prekey message');
    sync(w, 3);
    send(w, 'bob', ['alice'], 'reply');
    sync(w, 3);
    send(w, 'alice', ['bob'], 'whisper message');
    sync(w, 3);
    expect(mailboxDepth(w.server, BOB_1)).toBe(2);
    w.policy = () => 'deliver';
    sync(w);
    expect(mailboxDepth(w.server, BOB_1)).toBe(0);
    expect(texts(w, 'bob')).toEqual(['prekey message', 'whisper message']);
    expect(texts(w, 'bob-2')).toEqual(['prekey message', '→alice: reply', 'whisper message']);
    expect(texts(w, 'alice')).toEqual(['reply']);
    expect(outputsOfKind(w, 'bob', 'duplicate-dropped').length).toBeGreaterThan(0);
    expectNoUndecryptable(w);
  });

  it('a fetch answered twice is processed once [WP-XPORT-02]', () => {
    const w = createWorld('double-fetch');
    talkingPair(w, 0, 1);
    send(w, 'alice', ['bob'], 'once please');
    w.policy = (p) => (p.dir === 'down' && p.response.kind === 'envelopes' ? 'duplicate' : 'deliver');
    sync(w);
    w.policy = () => 'deliver';
    expectFannedOut(w, 'alice', 'bob', 'once please');
    expectNothingShownTwice(w, 'bob');
    expectStillTalks(w, 'alice', 'bob', 'after double fetch');
  });

  it('a resent payload that crosses the original is shown once (same payload id) [WP-XPORT-02] [WP-XPORT-06]', () => {
    const w = createWorld('crossing-resend');
    talkingPair(w, 0, 0);
    send(w, 'alice', ['bob'], 'original');
    sync(w);
    const original = sendRequestsOf(w, 'alice').at(-1)?.request.messageId;
    if (original === undefined) throw new Error('no send');
    // A retry request for a message bob did decrypt (delayed, or forged by the server): alice resends.
    const release = holdRequests(w, 'alice', 'fetch');
    input(w, 'alice', { kind: 'net.fetch' });
    run(w);
    release();
    const pending = pendingOf(w, 'alice', 'fetch')[0];
    if (pending === undefined) throw new Error('no fetch');
    respond(w, 'alice', pending.requestId, {
      kind: 'envelopes',
      envelopes: [
        {
          envelopeId: 77,
          messageId: 'aa'.repeat(16),
          sender: BOB_1,
          type: 'retry-request',
          bytes: encodeRetryRequest(original),
          serverTimestamp: w.now,
        },
      ],
    });
    expect(outputsOfKind(w, 'alice', 'resent').map((r) => r.to)).toEqual([BOB_1]);
    sync(w);
    expect(texts(w, 'bob').filter((t) => t === 'original')).toHaveLength(1);
    expect(outputsOfKind(w, 'bob', 'duplicate-dropped')).toHaveLength(1);
    expectNothingShownTwice(w, 'bob');
    expectStillTalks(w, 'alice', 'bob', 'after crossing resend');
  });
});

describe('retry requests', () => {
  it('a tampered envelope is undecryptable; the retry request gets it resent on a new session, shown once [WP-XPORT-06]', () => {
    const w = createWorld('retry-tampered');
    talkingPair(w, 0, 1);
    send(w, 'alice', ['bob'], 'fragile');
    expect(corruptMailbox(w, BOB_1, 'alice')).toBe(1);
    sync(w);
    const failed = outputsOfKind(w, 'bob', 'undecryptable');
    expect(failed.map((u) => u.from)).toEqual([{ userId: 'alice', deviceId: 1 }]);
    const retry = sendRequestsOf(w, 'bob').find((s) =>
      s.request.messages.some((m) => m.type === 'retry-request'),
    );
    expect(retry?.request.onlyDevice).toBe(1);
    expect(retry?.request.recipient).toBe('alice');
    expect(outputsOfKind(w, 'alice', 'resent').map((r) => r.to)).toEqual([BOB_1]);
    // The recorded session was the one in use, so the resend started a new one (a PreKey message).
    const resend = sendRequestsOf(w, 'alice').at(-1)?.request;
    expect(resend?.onlyDevice).toBe(1);
    expect(resend?.messages.map((m) => m.type)).toEqual(['prekey']);
    expectFannedOut(w, 'alice', 'bob', 'fragile');
    expectStillTalks(w, 'alice', 'bob', 'after retry');
  });

  it('a receiver whose state rolled back asks again and gets the message on a new session, shown once [WP-XPORT-06]', () => {
    const w = createWorld('retry-rollback');
    createUser(w, 'alice');
    createUser(w, 'bob');
    addContact(w, 'alice', 'bob');
    const snapshot = device(w, 'bob');
    send(w, 'alice', ['bob'], 'm1');
    sync(w);
    send(w, 'bob', ['alice'], 'r1');
    sync(w);
    // bob restores an old backup: no session with alice, no list, no memory of m1.
    w.devices.set('bob', snapshot);
    send(w, 'alice', ['bob'], 'm2');
    sync(w);
    expect(outputsOfKind(w, 'bob', 'undecryptable').map((u) => u.error.code)).toEqual([
      'SESAME_NO_DEVICE_RECORD',
    ]);
    expect(outputsOfKind(w, 'alice', 'resent')).toHaveLength(1);
    expect(texts(w, 'bob')).toEqual(['m1', 'm2']);
    send(w, 'bob', ['alice'], 'r2');
    send(w, 'alice', ['bob'], 'm3');
    sync(w);
    expect(texts(w, 'alice')).toEqual(['r1', 'r2']);
    expect(texts(w, 'bob')).toEqual(['m1', 'm2', 'm3']);
  });

  it('resends are bounded: a message that never decrypts is resent at most MAX_RESENDS times [WP-XPORT-06] [WP-SES-14]', () => {
    const w = createWorld('retry-bounded');
    talkingPair(w, 0, 0);
    send(w, 'alice', ['bob'], 'doomed');
    const rounds = MAX_RESENDS + 5;
    for (let round = 0; round < rounds; round++) {
      corruptMailbox(w, BOB_1, 'alice');
      input(w, 'bob', { kind: 'net.fetch' });
      run(w);
      input(w, 'alice', { kind: 'net.fetch' });
      run(w);
    }
    // Each resend travels under a fresh transport id; the bound must hold for the message, not per id.
    expect(outputsOfKind(w, 'alice', 'resent').length).toBeLessThanOrEqual(MAX_RESENDS);
    expect(outputsOfKind(w, 'bob', 'undecryptable').length).toBeLessThanOrEqual(MAX_RESENDS + 1);
    expect(texts(w, 'bob')).not.toContain('doomed');
    expect(mailboxDepth(w.server, BOB_1)).toBe(0);
    expect(mailboxDepth(w.server, { userId: 'alice', deviceId: 1 })).toBe(0);
    expectStillTalks(w, 'alice', 'bob', 'after doomed');
  });
});

describe('retry requests that race the sender or meet a changed device', () => {
  it('a retry request that overtakes the answer to the send is answered once the send is: the copy was recorded when encrypted [WP-SES-21] [WP-XPORT-07]', () => {
    const w = createWorld('retry-overtakes-acceptance');
    talkingPair(w, 0, 0);
    // The server stores alice's message, but its answer to alice is lost.
    let dropped = 0;
    w.policy = (p) =>
      p.dir === 'down' && p.device === 'alice' && p.response.kind === 'accepted' && dropped++ === 0
        ? 'drop'
        : 'deliver';
    send(w, 'alice', ['bob'], 'overtaken');
    w.policy = () => 'deliver';
    expect(dropped).toBe(1);
    const held = pendingOf(w, 'alice', 'send')[0]?.request;
    if (held?.kind !== 'send') throw new Error('no pending send');
    expect(device(w, 'alice').sesame.messageRecords.map((r) => [r.messageId, r.deviceId])).toContainEqual([
      held.messageId,
      1,
    ]);
    // Bob cannot decrypt the copy; his retry request reaches alice before her resend timer fires.
    expect(corruptMailbox(w, BOB_1, 'alice')).toBe(1);
    input(w, 'bob', { kind: 'net.fetch' });
    run(w);
    expect(outputsOfKind(w, 'bob', 'undecryptable').map((u) => u.messageId)).toEqual([held.messageId]);
    input(w, 'alice', { kind: 'net.fetch' });
    run(w);
    // WP-XPORT-07: the send is still unanswered, so the retry request waits unacknowledged.
    expect(outputsOfKind(w, 'alice', 'resent')).toEqual([]);
    // The original send is answered later (a duplicate at the server) and completes; the retry
    // request comes again and is answered from the record.
    input(w, 'alice', { kind: 'timer.resend' });
    run(w);
    expect(outputsOfKind(w, 'alice', 'sent').map((s) => s.messageId)).toContain(held.messageId);
    input(w, 'alice', { kind: 'net.fetch' });
    run(w);
    expect(outputsOfKind(w, 'alice', 'resent').map((r) => r.to)).toEqual([BOB_1]);
    sync(w);
    expect(texts(w, 'bob').filter((t) => t === 'overtaken')).toHaveLength(1);
    expect(pendingOf(w, 'alice')).toEqual([]);
    expectNothingShownTwice(w, 'bob');
    expectStillTalks(w, 'alice', 'bob', 'after the race');
  });

  it('a send that fails leaves no message record, so nothing of it can be resent [WP-SES-21] [WP-XPORT-03]', () => {
    const w = createWorld('failed-send-no-record');
    talkingPair(w, 0, 0);
    const release = holdRequests(w, 'alice', 'send');
    send(w, 'alice', ['bob'], 'never stored');
    release();
    const held = pendingOf(w, 'alice', 'send')[0];
    if (held?.request.kind !== 'send') throw new Error('no pending send');
    const messageId = held.request.messageId;
    const recordsOf = (): number[] =>
      device(w, 'alice')
        .sesame.messageRecords.filter((r) => r.messageId === messageId)
        .map((r) => r.deviceId);
    expect(recordsOf()).toEqual([1]);
    respond(w, 'alice', held.requestId, {
      kind: 'error',
      code: 'SERVER_MALFORMED_REQUEST',
      rule: 'WP-SRV-01',
      message: 'crafted',
    });
    expect(outputsOfKind(w, 'alice', 'send-failed').map((f) => f.messageId)).toEqual([messageId]);
    expect(recordsOf()).toEqual([]);
    // A (forged) retry request naming it finds nothing to resend.
    fetchRetryRequest(w, 'alice', BOB_1, messageId);
    expect(outputsOfKind(w, 'alice', 'resent')).toEqual([]);
    expect(texts(w, 'bob')).not.toContain('never stored');
  });

  it("a retry request to a reinstalled device the requester has no list for yet is refused as stale, then asked again under the refusal's list [WP-XPORT-09]", () => {
    const w = createWorld('retry-to-reinstalled');
    talkingPair(w, 1, 0);
    const oldRegistration = device(w, 'alice-2').prekeys.registrationId;
    // alice-2 is reinstalled into device id 2; bob has not heard of it.
    w.devices.delete('alice-2');
    input(w, 'alice', { kind: 'user.revoke-device', deviceId: 2 });
    run(w);
    linkDevice(w, 'alice', 'alice-2-new');
    addContact(w, 'alice-2-new', 'bob');
    const newRegistration = device(w, 'alice-2-new').prekeys.registrationId;
    send(w, 'alice-2-new', ['bob'], 'from the new install');
    expect(corruptMailbox(w, BOB_1, 'alice')).toBe(1);
    sync(w);
    const retries = sendRequestsOf(w, 'bob').filter((s) =>
      s.request.messages.some((m) => m.type === 'retry-request'),
    );
    // The same retry request twice: first under the registration bob knew, then the current one.
    expect(retries.map((s) => s.request.messages.map((m) => [m.deviceId, m.registrationId]))).toEqual([
      [[2, oldRegistration]],
      [[2, newRegistration]],
    ]);
    expect(new Set(retries.map((s) => s.request.messageId)).size).toBe(1);
    expect(outputsOfKind(w, 'bob', 'send-failed')).toEqual([]);
    expect(outputsOfKind(w, 'alice-2-new', 'resent').map((r) => r.to)).toEqual([BOB_1]);
    expect(texts(w, 'bob').filter((t) => t === 'from the new install')).toHaveLength(1);
    expectStillTalks(w, 'alice-2-new', 'bob', 'after the retry');
  });

  it("a retry request to a device the refusal's list no longer names is given up [WP-XPORT-09]", () => {
    const w = createWorld('retry-to-revoked');
    talkingPair(w, 1, 0);
    addContact(w, 'alice-2', 'bob');
    send(w, 'alice-2', ['bob'], 'last words');
    // alice-2 is revoked before bob reads (and fails to decrypt) its message.
    input(w, 'alice', { kind: 'user.revoke-device', deviceId: 2 });
    run(w);
    expect(corruptMailbox(w, BOB_1, 'alice')).toBe(1);
    sync(w);
    const retries = sendRequestsOf(w, 'bob').filter((s) =>
      s.request.messages.some((m) => m.type === 'retry-request'),
    );
    expect(retries).toHaveLength(1);
    expect(outputsOfKind(w, 'bob', 'send-failed').map((f) => f.error.code)).toEqual([
      'XPORT_SEND_ATTEMPTS_EXHAUSTED',
    ]);
    expect(pendingOf(w, 'bob')).toEqual([]);
  });

  it('a retry request to a reset account waits for the key-change acknowledgment, then goes out [WP-XPORT-09] [WP-TRUST-04]', () => {
    const w = createWorld('retry-to-reset-account');
    talkingPair(w, 0, 0);
    const version = device(w, 'alice').trust['alice']?.list?.version ?? 1;
    resetAccount(w, 'alice', 'alice', version);
    addContact(w, 'alice', 'bob');
    send(w, 'alice', ['bob'], 'i am back');
    expect(corruptMailbox(w, BOB_1, 'alice')).toBe(1);
    sync(w);
    // Bob's request went out under the old registration; the refusal carried a list under a new
    // account key, so it waits for bob.
    expect(outputsOfKind(w, 'bob', 'key-change')).toContainEqual({
      kind: 'key-change',
      userId: 'alice',
      deviceId: null,
    });
    const waiting = device(w, 'bob').outbox.filter((i) => i.kind === 'retry-request');
    expect(waiting.map((i) => i.stage)).toEqual(['blocked']);
    expect(texts(w, 'bob')).not.toContain('i am back');
    input(w, 'bob', { kind: 'user.acknowledge-key-change', userId: 'alice' });
    run(w);
    sync(w);
    expect(outputsOfKind(w, 'alice', 'resent').map((r) => r.to)).toEqual([BOB_1]);
    expect(texts(w, 'bob').filter((t) => t === 'i am back')).toHaveLength(1);
    expect(outputsOfKind(w, 'bob', 'send-failed')).toEqual([]);
  });
});

/** Hands `name` a retry request from `from` naming `messageId`, as its next fetched envelope. */
function fetchRetryRequest(w: World, name: string, from: DeviceAddress, messageId: string): void {
  const release = holdRequests(w, name, 'fetch');
  input(w, name, { kind: 'net.fetch' });
  run(w);
  release();
  const pending = pendingOf(w, name, 'fetch')[0];
  if (pending === undefined) throw new Error('no fetch');
  respond(w, name, pending.requestId, {
    kind: 'envelopes',
    envelopes: [
      {
        envelopeId: 88,
        messageId: 'bb'.repeat(16),
        sender: from,
        type: 'retry-request',
        bytes: encodeRetryRequest(messageId),
        serverTimestamp: w.now,
      },
    ],
  });
}
