/**
 * Stories where the network lets one answer overtake another (WHITEPAPER.md WP-XPORT-07,
 * WP-XPORT-08, WP-TRUST-07), each the minimal form of a simulator run that lost a message. Every
 * story runs in a twin world (test/conformance/device-twin.ts), so after each device step impl and
 * the model must also agree on outputs, random draws and abstract state.
 */
import { describe, expect, it } from 'vitest';
import { MAX_SEND_ATTEMPTS } from '../../spec/constants.js';
import type { SignedDeviceList } from '../../spec/device-list-types.js';
import type { ServerResponse } from '../../spec/server-api.js';
import { mailboxDepth } from '../../impl/server.js';
import { TwinWorld } from './device-twin.js';

function twoUsers(seed: string, bobExtra = 0): TwinWorld {
  const w = new TwinWorld(seed);
  w.createAccount('alice', 'alice');
  w.createAccount('bob', 'bob');
  for (let i = 0; i < bobExtra; i++) w.linkDevice('bob', `bob-${i + 2}`);
  w.addContact('alice', 'bob');
  w.addContact('bob', 'alice');
  return w;
}

function listOf(w: TwinWorld, userId: string): SignedDeviceList {
  const answer = w.answerHonestly({ kind: 'get-device-list', userId });
  if (answer.kind !== 'device-list') throw new Error(`no list for ${userId}`);
  return answer.deviceList;
}

function countOf(w: TwinWorld, name: string, kind: string): number {
  return w.outputsOf(name).impl.filter((o) => o.kind === kind).length;
}

function sendFailures(w: TwinWorld, name: string): string[] {
  return w.outputsOf(name).impl.flatMap((o) => (o.kind === 'send-failed' ? [o.error.code] : []));
}

describe('answers overtaken in the network', () => {
  it('a retry request that overtakes the answer to the send it names waits unacknowledged, then gets the message resent, shown once [WP-XPORT-07] [WP-XPORT-06]', () => {
    const w = twoUsers('overtaken/retry-before-answer');
    w.send('alice', ['bob'], 'hello');
    w.sync();
    w.send('bob', ['alice'], 'hi');
    w.sync();
    // The server accepts alice's message, but its answer is still on the way back to her.
    w.sendQueued('alice', ['bob'], 'fragile');
    w.runUntilRequest('alice', 'send');
    const held = w.takeRequest('alice', 'send');
    const accepted: ServerResponse = w.answerHonestly(held.request);
    expect(accepted.kind).toBe('accepted');
    // bob's copy arrives tampered with: undecryptable, so bob asks alice for a retry.
    w.input('bob', { kind: 'net.fetch' });
    const fetch = w.takeRequest('bob', 'fetch');
    const honest = w.answerHonestly(fetch.request);
    if (honest.kind !== 'envelopes') throw new Error('no envelopes');
    w.respond('bob', fetch.requestId, {
      kind: 'envelopes',
      envelopes: honest.envelopes.map((e) => {
        const bytes = Uint8Array.from(e.bytes);
        bytes[bytes.length - 1] = (bytes[bytes.length - 1] ?? 0) ^ 0x01;
        return { ...e, bytes };
      }),
    });
    expect(countOf(w, 'bob', 'undecryptable')).toBe(1);
    // alice fetches the retry request before she knows her send was accepted: she has no record of
    // the message yet, so she leaves the request unacknowledged instead of dropping it.
    w.input('alice', { kind: 'net.fetch' });
    w.run();
    const alice = { userId: 'alice', deviceId: 1 };
    expect(mailboxDepth(w.impl.server, alice)).toBe(1);
    expect(countOf(w, 'alice', 'resent')).toBe(0);
    // The answer arrives; the server redelivers the retry request, which is now answered.
    w.respond('alice', held.requestId, accepted);
    w.input('alice', { kind: 'net.fetch' });
    w.run();
    expect(countOf(w, 'alice', 'resent')).toBe(1);
    expect(mailboxDepth(w.impl.server, alice)).toBe(0);
    w.sync();
    expect(w.texts('bob').filter((t) => t === 'fragile')).toHaveLength(1);
    expect(sendFailures(w, 'alice')).toEqual([]);
    w.compareAll('after the overtaken answer');
  });

  it('a refusal carrying a list older than one already accepted changes nothing; the send goes again on the newer list [WP-XPORT-08] [WP-TRUST-03]', () => {
    const w = twoUsers('overtaken/stale-refusal');
    const old = listOf(w, 'bob');
    w.linkDevice('bob', 'bob-2');
    w.send('alice', ['bob'], 'first');
    w.sync();
    expect(w.implState('alice').trust['bob']?.list?.devices.map((d) => d.deviceId)).toEqual([1, 2]);
    // A refusal the server gave while bob's list was still the old one reaches alice only now.
    w.sendQueued('alice', ['bob'], 'second');
    w.runUntilRequest('alice', 'send');
    const held = w.takeRequest('alice', 'send');
    w.respond('alice', held.requestId, {
      kind: 'refused',
      refusal: { kind: 'mismatched-devices', missing: [], extra: [2], deviceList: old },
    });
    w.sync();
    expect(sendFailures(w, 'alice')).toEqual([]);
    expect(w.texts('bob').filter((t) => t === 'second')).toHaveLength(1);
    expect(w.texts('bob-2').filter((t) => t === 'second')).toHaveLength(1);
    w.compareAll('after the stale refusal');
  });

  it('refusals that keep carrying an older list still end the send after MAX_SEND_ATTEMPTS [WP-XPORT-08] [WP-XPORT-03]', () => {
    const w = twoUsers('overtaken/stale-refusals-bounded');
    const old = listOf(w, 'bob');
    w.linkDevice('bob', 'bob-2');
    w.send('alice', ['bob'], 'first');
    w.sync();
    w.sendQueued('alice', ['bob'], 'never');
    let refusals = 0;
    while (sendFailures(w, 'alice').length === 0) {
      if (refusals > MAX_SEND_ATTEMPTS) throw new Error('the refusal loop is not bounded');
      w.runUntilRequest('alice', 'send');
      const held = w.takeRequest('alice', 'send');
      w.respond(
        'alice',
        held.requestId,
        {
          kind: 'refused',
          refusal: { kind: 'mismatched-devices', missing: [], extra: [2], deviceList: old },
        },
        false,
      );
      refusals++;
    }
    expect(refusals).toBe(MAX_SEND_ATTEMPTS);
    expect(sendFailures(w, 'alice')).toEqual(['XPORT_SEND_ATTEMPTS_EXHAUSTED']);
    w.compareAll('after the bounded loop');
  });

  it('after an acknowledged account reset, devices the new list leaves out are never asked for bundles [WP-TRUST-07] [WP-TRUST-04]', () => {
    // alice holds bob's list naming devices 1 and 2, but no session with either yet.
    const w = twoUsers('overtaken/reset-drops-device', 1);
    expect(w.implState('alice').trust['bob']?.list?.devices.map((d) => d.deviceId)).toEqual([1, 2]);
    // bob loses his primary and resets the account alone: the old device 2 is gone with it.
    const version = w.implState('bob').trust['bob']?.list?.version ?? 1;
    w.resetAccount('bob', 'bob', version);
    w.addContact('bob', 'alice');
    w.sync();
    w.send('alice', ['bob'], 'after the reset');
    w.input('alice', { kind: 'user.acknowledge-key-change', userId: 'bob' });
    w.run();
    w.sync();
    const asked = w
      .outputsOf('alice')
      .impl.flatMap((o) =>
        o.kind === 'request' && o.request.kind === 'get-bundles' && o.request.userId === 'bob'
          ? [o.request.deviceIds]
          : [],
      );
    expect(asked.at(-1)).toEqual([1]);
    expect(sendFailures(w, 'alice')).toEqual([]);
    expect(w.texts('bob').filter((t) => t === 'after the reset')).toHaveLength(1);
    w.compareAll('after the reset');
  });
});
