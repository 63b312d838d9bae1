/**
 * Scenario stories for the transport (WP-XPORT-*): lost and duplicated requests and responses,
 * redelivered envelopes, and retry requests for messages a device cannot decrypt (Sesame §4.1).
 */
import { describe, expect, it } from 'vitest';
import { MAX_RESENDS } from '../../spec/constants.js';
import type { DeviceAddress } from '../../spec/identity.js';
import { encodeRetryRequest } from '../../spec/retry-request.js';
import { mailboxDepth } from '../../impl/server.js';
import {
  addContact,
  createWorld,
  device,
  holdRequests,
  input,
  pendingOf,
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

/** Flips the last byte (inside the MAC) of every envelope from `from` waiting for `to`. */
function corruptMailbox(w: World, to: DeviceAddress, from: string): number {
  const account = w.server.accounts[to.userId];
  const stored = account?.devices[String(to.deviceId)];
  if (account === undefined || stored === undefined) throw new Error('no such mailbox');
  let corrupted = 0;
  const envelopes = stored.mailbox.envelopes.map((e) => {
    if (e.sender.userId !== from) return e;
    corrupted++;
    const bytes = Uint8Array.from(e.bytes);
    bytes[bytes.length - 1] = (bytes[bytes.length - 1] ?? 0) ^ 0x01;
    return { ...e, bytes };
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
