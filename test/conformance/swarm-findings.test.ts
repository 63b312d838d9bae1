/**
 * Stories distilled from simulator runs that broke a property (simulator/regressions/corpus.json),
 * each reduced to the steps that matter: a revocation undone by a failed send (WP-XPORT-10), and a
 * server-mode sender fetching bundles forever against an outdated list (WP-TRUST-06). Every story
 * runs in a twin world (test/conformance/device-twin.ts), so after each device step impl and the
 * model must also agree on outputs, random draws and abstract state.
 */
import { describe, expect, it } from 'vitest';
import { MAX_SEND_ATTEMPTS } from '../../spec/constants.js';
import { SPEC_OPTIONS } from '../../spec/security-mode.js';
import type { ServerResponse } from '../../spec/server-api.js';
import { getDeviceRecord } from '../../impl/sesame.js';
import { TwinWorld } from './device-twin.js';
import { pair } from './hardened-scenarios.js';

describe('findings of the swarm, both engines step by step', () => {
  it('a revocation learned from a refusal survives the failure of that send: the next send leaves the removed device out [WP-XPORT-10] [WP-TRUST-07] [WP-LIFE-04]', () => {
    const w = new TwinWorld('findings/failed-send-keeps-removal');
    w.createAccount('alice', 'alice');
    w.createAccount('bob', 'bob');
    w.linkDevice('bob', 'bob-2');
    w.addContact('alice', 'bob');
    w.addContact('bob', 'alice');
    w.send('alice', ['bob'], 'to both');
    w.sync();
    expect(w.texts('bob-2')).toContain('to both');
    w.input('bob', { kind: 'user.revoke-device', deviceId: 2 });
    w.run();
    // Alice's send is refused with the new list (device 2 removed) ...
    w.sendQueued('alice', ['bob'], 'fails');
    w.runUntilRequest('alice', 'send');
    const first = w.takeRequest('alice', 'send');
    const honest = w.answerHonestly(first.request);
    expect(honest.kind).toBe('refused');
    w.respond('alice', first.requestId, honest, false);
    const removed = w
      .outputsOf('alice')
      .impl.filter((o) => o.kind === 'device-list-changed' && o.userId === 'bob');
    expect(removed.at(-1)).toMatchObject({ removed: [2] });
    // ... and the try on that list is refused with a list whose signature does not verify: the send fails.
    w.runUntilRequest('alice', 'send');
    const second = w.takeRequest('alice', 'send');
    if (
      honest.kind !== 'refused' ||
      honest.refusal.kind === 'unknown-user' ||
      honest.refusal.kind === 'mailbox-full'
    )
      throw new Error('expected a refusal carrying a list');
    const signature = Uint8Array.from(honest.refusal.deviceList.signature);
    signature[0] = (signature[0] ?? 0) ^ 0x01;
    const forged: ServerResponse = {
      kind: 'refused',
      refusal: {
        kind: 'mismatched-devices',
        missing: [],
        extra: [],
        deviceList: { ...honest.refusal.deviceList, signature },
      },
    };
    w.respond('alice', second.requestId, forged);
    expect(
      w.outputsOf('alice').impl.flatMap((o) => (o.kind === 'send-failed' ? [o.error.code] : [])),
    ).toEqual(['TRUST_LIST_INVALID']);
    // The record of device 2 stays stale, and the next send encrypts to device 1 only.
    expect(getDeviceRecord(w.implState('alice').sesame, 'bob', 2)?.staleSince).not.toBeNull();
    w.sendQueued('alice', ['bob'], 'after the failure');
    w.runUntilRequest('alice', 'send');
    const next = w.takeRequest('alice', 'send');
    if (next.request.kind !== 'send') throw new Error('not a send');
    expect(next.request.messages.map((m) => m.deviceId)).toEqual([1]);
    w.respond('alice', next.requestId, w.answerHonestly(next.request));
    w.sync();
    expect(w.texts('bob')).toContain('after the failure');
    w.compareAll('after the failed send');
  });

  it('server mode: a bundle that disagrees with the held list makes the sender refresh the list, not fetch bundles forever [WP-TRUST-06]', () => {
    const w = new TwinWorld('findings/server-mode-bundle-list', SPEC_OPTIONS);
    pair(w);
    w.send('alice', ['bob'], 'before the reset');
    w.sync();
    // Bob loses his primary and resets the account: a new identity key at bob.1 and a newer list.
    const version = w.implState('bob').trust['bob']?.list?.version ?? 1;
    w.resetAccount('bob', 'bob', version);
    w.addContact('bob', 'alice');
    // Bob writes first: Alice's record of bob.1 takes the new identity key from his PreKey message,
    // while the list she holds still names the old one.
    w.send('bob', ['alice'], 'after the reset');
    w.sync();
    expect(w.texts('alice')).toContain('after the reset');
    const bundlesBefore = w
      .outputsOf('alice')
      .impl.filter((o) => o.kind === 'request' && o.request.kind === 'get-bundles').length;
    w.send('alice', ['bob'], 'answer');
    w.sync();
    const bundleRequests =
      w.outputsOf('alice').impl.filter((o) => o.kind === 'request' && o.request.kind === 'get-bundles')
        .length - bundlesBefore;
    expect(bundleRequests).toBeLessThanOrEqual(MAX_SEND_ATTEMPTS);
    expect(w.texts('bob')).toContain('answer');
    expect(w.implState('alice').trust['bob']?.list?.version).toBeGreaterThan(version);
    w.compareAll('after the answer');
  });
});
