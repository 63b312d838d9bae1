/**
 * Device conformance (model/device.ts against impl/device.ts): each scenario is built twice in a
 * twin world (test/conformance/device-twin.ts) with the same seed; after every device step both
 * engines must show the same outputs (requests with their ids and bytes, deliveries, events, errors
 * with code and rule), the same random draws and the same abstract device state
 * (spec/device-abstract.ts). A fast-check property runs random interleavings of sends, fetches,
 * resend timers and network faults (drops, duplicates, delays).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { nodeProvider } from '../../spec/crypto/node.js';
import { signDeviceList } from '../../spec/device-list.js';
import { UsageError } from '../../spec/errors.js';
import { seededRng } from '../../spec/rng.js';
import { deviceStep } from '../../impl/device.js';
import { parsePreKeySignalMessage } from '../../spec/wire.js';
import type { DeviceAddress } from '../../spec/identity.js';
import { HARDENED_OPTIONS, SPEC_OPTIONS, type SecurityOptions } from '../../spec/security-mode.js';
import { createDeviceMachine } from '../../model/device.js';
import type { ServerState } from '../../impl/server.js';
import { ACTIONS_RUN, TwinWorld, type TwinFault } from './device-twin.js';
import { forkByRestoredCopy, replayInitialMessage, reviveOldSession } from './hardened-scenarios.js';
import { linkBeforeReset, restockAfterRestore } from './recovery-scenarios.js';

function twoUsers(
  seed: string,
  aliceExtra = 0,
  bobExtra = 0,
  options: SecurityOptions = HARDENED_OPTIONS,
): TwinWorld {
  const w = new TwinWorld(seed, options);
  w.createAccount('alice', 'alice');
  for (let i = 0; i < aliceExtra; i++) w.linkDevice('alice', `alice-${i + 2}`);
  w.createAccount('bob', 'bob');
  for (let i = 0; i < bobExtra; i++) w.linkDevice('bob', `bob-${i + 2}`);
  w.addContact('alice', 'bob');
  w.addContact('bob', 'alice');
  return w;
}

describe('device machine conforms to impl/device.ts', () => {
  it('account creation: same registration request, draws and abstract state [WP-LIFE-01]', () => {
    const w = new TwinWorld('conf-create');
    w.createAccount('alice', 'alice');
    expect(w.implState('alice').lifecycle.kind).toBe('linked');
    w.compareAll('after creation');
  });

  it('linking a device by QR provisioning [WP-LIFE-02] [WP-LIFE-03]', () => {
    const w = new TwinWorld('conf-link');
    w.createAccount('alice', 'alice');
    w.linkDevice('alice', 'alice-2');
    w.linkDevice('alice', 'alice-3');
    expect(w.implState('alice-3').deviceId).toBe(3);
    w.sync(2);
    w.compareAll('after link');
  });

  it('adding a contact from its link, and a send to a stranger refused [WP-TRUST-01]', () => {
    const w = new TwinWorld('conf-contact');
    w.createAccount('alice', 'alice');
    w.createAccount('bob', 'bob');
    w.send('alice', ['carol'], 'nobody');
    w.addContact('alice', 'bob');
    w.compareAll('after contact');
  });

  it('fan-out conversation between two multi-device users [WP-SES-05] [WP-XPORT-02]', () => {
    const w = twoUsers('conf-fanout', 1, 2);
    w.send('alice', ['bob'], 'hello bob');
    w.sync();
    w.send('bob-2', ['alice'], 'hi alice');
    w.send('bob', ['alice', 'bob'], 'to both');
    w.sync();
    w.send('alice-2', ['bob'], 'from my laptop');
    w.sync();
    expect(w.texts('bob-3')).toContain('hello bob');
    expect(w.texts('alice')).toContain('hi alice');
    w.compareAll('after conversation');
  });

  it('revocation: the revoked device learns it, senders stop encrypting to it [WP-LIFE-04] [WP-TRUST-07]', () => {
    const w = twoUsers('conf-revoke', 2, 0);
    w.send('bob', ['alice'], 'before');
    w.sync();
    w.input('alice', { kind: 'user.revoke-device', deviceId: 2 });
    w.run();
    w.input('alice-2', { kind: 'user.revoke-device', deviceId: 3 });
    w.run();
    w.send('bob', ['alice'], 'after');
    w.sync();
    w.send('alice-2', ['bob'], 'zombie');
    w.run();
    expect(w.implState('alice-2').lifecycle.kind).toBe('revoked');
    w.compareAll('after revocation');
  });

  it('account reset: a key change blocks sends until acknowledged [WP-LIFE-05] [WP-TRUST-04]', () => {
    const w = twoUsers('conf-reset');
    w.send('bob', ['alice'], 'one');
    w.sync();
    const version = w.implState('alice').trust['alice']?.list?.version ?? 1;
    w.resetAccount('alice', 'alice', version);
    w.addContact('alice', 'bob');
    w.send('alice', ['bob'], 'i am back');
    w.send('bob', ['alice'], 'blocked');
    w.sync();
    w.input('bob', { kind: 'user.acknowledge-key-change', userId: 'alice' });
    w.run();
    w.sync();
    w.send('bob', ['alice'], 'unblocked');
    w.sync();
    w.compareAll('after reset');
  });

  it('attachment: encrypted once, uploaded once, downloaded and checked [WP-ATT-01] [WP-ATT-02]', () => {
    const w = twoUsers('conf-attachment', 1, 0);
    w.input('alice', {
      kind: 'user.send',
      recipients: ['bob'],
      content: {
        kind: 'attachment',
        bytes: new Uint8Array(300).fill(7),
        contentType: 'image/png',
        caption: 'cat',
      },
    });
    w.run();
    w.sync();
    const delivered = w.outputsOf('bob').impl.find((o) => o.kind === 'delivered');
    expect(delivered?.kind).toBe('delivered');
    if (delivered?.kind !== 'delivered' || delivered.payload.content.kind !== 'attachment')
      throw new Error('no pointer');
    w.input('bob', { kind: 'user.download', pointer: delivered.payload.content.pointer });
    w.run();
    expect(w.outputsOf('bob').impl.some((o) => o.kind === 'attachment')).toBe(true);
    w.compareAll('after attachment');
  });

  it('retry request after a rollback: resent on a new session, shown once [WP-XPORT-06] [WP-SES-13]', () => {
    const w = new TwinWorld('conf-rollback');
    w.createAccount('alice', 'alice');
    w.createAccount('bob', 'bob');
    w.addContact('alice', 'bob');
    const backup = w.backup('bob');
    w.send('alice', ['bob'], 'm1');
    w.sync();
    w.send('bob', ['alice'], 'r1');
    w.sync();
    w.restore('bob', backup);
    w.send('alice', ['bob'], 'm2');
    w.sync();
    w.send('bob', ['alice'], 'r2');
    w.send('alice', ['bob'], 'm3');
    w.sync();
    expect(w.outputsOf('alice').impl.filter((o) => o.kind === 'resent')).toHaveLength(1);
    expect(w.texts('bob')).toEqual(['m1', 'm2', 'm3']);
    w.compareAll('after rollback');
  });

  it('a restored device handed a key only a later state made restocks; the server replaces the keys it cannot use and the resend is shown once [WP-LIFE-06] [WP-SRV-09]', () => {
    const w = new TwinWorld('conf-restock');
    const outcome = restockAfterRestore(w);
    expect(outcome.uploadsBefore).toBe(1);
    expect(outcome.failures).toEqual(['UNKNOWN_KYBER_PREKEY']);
    // The failure made bob upload a new batch at once; only keys he holds are left on the server.
    expect(outcome.uploadsAfter).toBe(2);
    expect(outcome.serverHoldsOnlyUsableKeys).toBe(true);
    expect(outcome.shownAfterRestore).toBe(1);
    w.compareAll('after the restock');
  });

  it('an envelope from a contact whose link predates its account reset waits unacknowledged until the user adds the new link [WP-TRUST-01]', () => {
    const w = new TwinWorld('conf-link-reset');
    const outcome = linkBeforeReset(w);
    expect(outcome.errors).toEqual(['CONTACT_LINK_MISMATCH']);
    // Refused by the link, but neither rejected nor acknowledged: it waits in the mailbox.
    expect(outcome.textsBeforeNewLink).toEqual([]);
    expect(outcome.undecryptableBeforeNewLink).toBe(0);
    expect(outcome.parkedFrom).toEqual(['bob']);
    expect(outcome.textsAfterNewLink).toEqual(['after my reset']);
    w.compareAll('after the new link');
  });

  it('a retry request that overtakes the answer to the send is answered from the record written at encryption once the send is answered [WP-SES-21] [WP-XPORT-07]', () => {
    const w = twoUsers('conf-retry-overtakes');
    w.send('alice', ['bob'], 'hello');
    w.sync();
    // The server stores alice's message; its answer to her is lost, and bob's copy is damaged.
    w.sendQueued('alice', ['bob'], 'overtaken');
    w.runUntilRequest('alice', 'send');
    const held = w.takeRequest('alice', 'send');
    if (held.request.kind !== 'send') throw new Error('no send');
    expect(w.answerHonestly(held.request).kind).toBe('accepted');
    expect(corruptMailboxes(w, { userId: 'bob', deviceId: 1 }, 'alice')).toBe(1);
    w.input('bob', { kind: 'net.fetch' });
    w.run();
    w.input('alice', { kind: 'net.fetch' });
    w.run();
    // WP-XPORT-07: the send is still unanswered, so the retry request waits unacknowledged.
    expect(w.outputsOf('alice').impl.filter((o) => o.kind === 'resent')).toHaveLength(0);
    w.input('alice', { kind: 'timer.resend' });
    w.run();
    w.input('alice', { kind: 'net.fetch' });
    w.run();
    expect(w.outputsOf('alice').impl.filter((o) => o.kind === 'resent')).toHaveLength(1);
    w.sync();
    expect(w.texts('bob')).toEqual(['hello', 'overtaken']);
    w.compareAll('after the race');
  });

  it('a retry request refused under a stale registration id is asked again under the served list, or waits for a key-change acknowledgment [WP-XPORT-09] [WP-TRUST-04]', () => {
    const w = twoUsers('conf-retry-stale', 1, 0);
    w.send('alice', ['bob'], 'hello');
    w.sync();
    // alice-2 is reinstalled into device id 2 and writes to bob, who has not seen the new list.
    const oldRegistration = w.implState('alice-2').prekeys.registrationId;
    w.impl.devices.delete('alice-2');
    w.model.devices.delete('alice-2');
    w.input('alice', { kind: 'user.revoke-device', deviceId: 2 });
    w.run();
    w.linkDevice('alice', 'alice-2-new');
    w.addContact('alice-2-new', 'bob');
    w.send('alice-2-new', ['bob'], 'from the new install');
    expect(corruptMailboxes(w, { userId: 'bob', deviceId: 1 }, 'alice')).toBe(1);
    w.sync();
    const retried = w
      .outputsOf('bob')
      .impl.flatMap((o) =>
        o.kind === 'request' && o.request.kind === 'send' && o.request.messages[0]?.type === 'retry-request'
          ? [o.request.messages[0].registrationId]
          : [],
      );
    expect(retried).toEqual([oldRegistration, w.implState('alice-2-new').prekeys.registrationId]);
    expect(w.outputsOf('alice-2-new').impl.filter((o) => o.kind === 'resent')).toHaveLength(1);
    expect(w.texts('bob')).toEqual(['hello', 'from the new install']);
    // alice's account is reset: bob's next retry request is refused with a list under a new key.
    const version = w.implState('alice').trust['alice']?.list?.version ?? 1;
    w.resetAccount('alice', 'alice', version);
    w.addContact('alice', 'bob');
    w.send('alice', ['bob'], 'i am back');
    expect(corruptMailboxes(w, { userId: 'bob', deviceId: 1 }, 'alice')).toBe(1);
    w.sync();
    expect(w.implState('bob').outbox.map((i) => [i.kind, i.stage])).toEqual([['retry-request', 'blocked']]);
    w.input('bob', { kind: 'user.acknowledge-key-change', userId: 'alice' });
    w.run();
    w.sync();
    expect(w.texts('bob')).toEqual(['hello', 'from the new install', 'i am back']);
    expect(w.outputsOf('bob').impl.filter((o) => o.kind === 'send-failed')).toEqual([]);
    w.compareAll('after the stale retry requests');
  });

  it('user actions outside the linked state are refused the same way [WP-LIFE-01] [WP-LIFE-02]', () => {
    const w = twoUsers('conf-lifecycle', 1, 0);
    w.input('alice-2', {
      kind: 'user.link-device',
      code: {
        relayAddress: 'AAAAAAAAAAAAAAAAAAAAAA',
        ephemeralPublicKey: new Uint8Array(33),
        identityKey: new Uint8Array(33),
        registrationId: 1,
      },
    });
    w.input('alice-2', { kind: 'user.revoke-device', deviceId: 1 });
    w.input('alice', { kind: 'user.revoke-device', deviceId: 9 });
    w.input('alice', { kind: 'user.revoke-device', deviceId: 1 });
    w.input('alice', { kind: 'net.fetch' });
    w.input('alice', { kind: 'net.fetch' });
    w.input('alice', { kind: 'timer.poll-provisioning' });
    w.input('alice', { kind: 'user.acknowledge-key-change', userId: 'nobody' });
    w.run();
    w.compareAll('after refusals');
  });

  it("server mode (Sesame rev 2): the server's lists are taken as served [WP-TRUST-02]", () => {
    const w = new TwinWorld('conf-server-mode');
    w.createAccount('alice', 'alice', { ...HARDENED_OPTIONS, deviceListAuth: 'server' });
    w.createAccount('bob', 'bob', { ...HARDENED_OPTIONS, deviceListAuth: 'server' });
    w.addContact('alice', 'bob');
    w.send('alice', ['bob'], 'trusting the server');
    w.sync();
    w.send('bob', ['alice'], 'me too');
    w.sync();
    expect(w.texts('alice')).toEqual(['me too']);
    w.compareAll('after server mode');
  });

  it('a full mailbox stores nothing and the send is tried again on the resend timer [WP-XPORT-05]', () => {
    const w = twoUsers('conf-mailbox');
    w.sendQueued('alice', ['bob'], 'later');
    w.runUntilRequest('alice', 'send');
    const held = w.takeRequest('alice', 'send');
    w.respond('alice', held.requestId, {
      kind: 'refused',
      refusal: { kind: 'mailbox-full', deviceIds: [1] },
    });
    w.input('alice', { kind: 'timer.resend' });
    w.run();
    w.sync();
    expect(w.texts('bob')).toEqual(['later']);
    w.compareAll('after mailbox full');
  });

  it('bundles whose identity the list does not name are refused again and again until the send fails [WP-TRUST-06] [WP-XPORT-03]', () => {
    const w = new TwinWorld('conf-bundle');
    w.createAccount('alice', 'alice');
    w.createAccount('bob', 'bob');
    w.addContact('bob', 'alice');
    w.sendQueued('bob', ['alice'], 'to a forged bundle');
    const failed = (): boolean =>
      w
        .outputsOf('bob')
        .impl.some((o) => o.kind === 'send-failed' && o.error.code === 'TRUST_BUNDLE_IDENTITY_MISMATCH');
    for (let round = 0; round < 20 && !failed(); round++) {
      w.runUntilRequest('bob', 'get-bundles');
      const held = w.takeRequest('bob', 'get-bundles');
      const honest = w.answerHonestly(held.request);
      if (honest.kind !== 'bundles') throw new Error('no bundles');
      const forged = honest.bundles.map((b) => ({
        ...b,
        identityKey: w.implState('bob').prekeys.identityKeyPair.publicKey,
      }));
      w.respond('bob', held.requestId, { kind: 'bundles', bundles: forged }, false);
    }
    expect(failed()).toBe(true);
    w.compareAll('after forged bundles');
  });

  it('an older or equivocating device list is refused [WP-TRUST-03]', () => {
    const w = new TwinWorld('conf-list-rollback');
    w.createAccount('alice', 'alice');
    const register = w
      .outputsOf('alice')
      .impl.find((o) => o.kind === 'request' && o.request.kind === 'register-account');
    if (register?.kind !== 'request' || register.request.kind !== 'register-account')
      throw new Error('no registration');
    const v1 = register.request.deviceList;
    w.linkDevice('alice', 'alice-2');
    w.createAccount('bob', 'bob');
    w.addContact('bob', 'alice');
    w.input('bob', { kind: 'user.add-contact', link: w.contactLinkOf('alice') });
    const held = w.takeRequest('bob', 'get-device-list');
    w.respond('bob', held.requestId, { kind: 'device-list', deviceList: v1 });
    const key = w.implState('alice').accountPrivateKey;
    const list = w.implState('alice').trust['alice']?.list;
    if (key === null || list === null || list === undefined) throw new Error('no account key');
    const other = signDeviceList(
      nodeProvider,
      key,
      { ...list, devices: list.devices.slice(0, 1) },
      new Uint8Array(64).fill(1),
    );
    w.input('bob', { kind: 'user.add-contact', link: w.contactLinkOf('alice') });
    const again = w.takeRequest('bob', 'get-device-list');
    w.respond('bob', again.requestId, { kind: 'device-list', deviceList: other });
    const codes = w.outputsOf('bob').impl.flatMap((o) => (o.kind === 'error' ? [o.error.code] : []));
    expect(codes).toEqual(['TRUST_LIST_ROLLBACK', 'TRUST_LIST_EQUIVOCATION']);
    w.compareAll('after forged lists');
  });

  it('an envelope from a device not yet listed waits for the list, then is delivered [WP-TRUST-05]', () => {
    const w = twoUsers('conf-parked', 1, 0);
    w.send('alice', ['bob'], 'first');
    w.sync();
    w.linkDevice('alice', 'alice-3');
    w.addContact('alice-3', 'bob');
    w.send('alice-3', ['bob'], 'from the new device');
    w.sync();
    expect(w.texts('bob')).toEqual(['first', 'from the new device']);
    expect(w.implState('bob').parked).toHaveLength(0);
    w.compareAll('after parked');
  });

  it('hostile answers and lost acknowledgments are handled the same way [WP-XPORT-02] [WP-XPORT-03] [WP-XPORT-04] [WP-TRUST-05] [WP-SES-04]', () => {
    const w = twoUsers('conf-hostile');
    const serverError = (code: 'SERVER_UNKNOWN_DEVICE' | 'SERVER_MALFORMED_REQUEST') =>
      ({
        kind: 'error',
        code,
        rule: code === 'SERVER_UNKNOWN_DEVICE' ? 'WP-SRV-12' : 'WP-SRV-01',
        message: 'forged',
      }) as const;
    // A send answered with a server error fails, typed (WP-XPORT-04).
    w.sendQueued('alice', ['bob'], 'server error');
    w.runUntilRequest('alice', 'send');
    w.respond('alice', w.takeRequest('alice', 'send').requestId, serverError('SERVER_MALFORMED_REQUEST'));
    // A refusal loop that never ends is bounded (WP-XPORT-03).
    w.sendQueued('alice', ['bob'], 'refused forever');
    for (let i = 0; i < 5; i++) {
      w.runUntilRequest('alice', 'send');
      const held = w.takeRequest('alice', 'send');
      const list = w.answerHonestly({ kind: 'get-device-list', userId: 'bob' });
      if (list.kind !== 'device-list') throw new Error('no list');
      w.respond(
        'alice',
        held.requestId,
        {
          kind: 'refused',
          refusal: { kind: 'mismatched-devices', missing: [], extra: [], deviceList: list.deviceList },
        },
        false,
      );
    }
    w.run();
    expect(
      w
        .outputsOf('alice')
        .impl.some((o) => o.kind === 'send-failed' && o.error.code === 'XPORT_SEND_ATTEMPTS_EXHAUSTED'),
    ).toBe(true);
    // A bundles request for a device the server no longer has sends the client back for the list.
    w.linkDevice('bob', 'bob-2');
    w.sendQueued('alice', ['bob'], 'after bob links');
    w.runUntilRequest('alice', 'get-bundles');
    w.respond('alice', w.takeRequest('alice', 'get-bundles').requestId, serverError('SERVER_UNKNOWN_DEVICE'));
    w.sync();
    // Lost acknowledgments: the server redelivers, the ratchet drops the duplicates (WP-XPORT-02).
    w.send('alice', ['bob'], 'twice');
    w.input('bob', { kind: 'net.fetch' });
    w.runUntilRequest('bob', 'ack');
    w.takeRequest('bob', 'ack');
    w.run();
    w.input('bob', { kind: 'net.fetch' });
    w.run();
    // Forged envelopes in a fetch: our own address, an unknown device, a malformed retry request.
    w.input('bob', { kind: 'net.fetch' });
    const fetch = w.takeRequest('bob', 'fetch');
    const honest = w.answerHonestly(fetch.request);
    if (honest.kind !== 'envelopes') throw new Error('no envelopes');
    const forged = (
      envelopeId: number,
      sender: { userId: string; deviceId: number },
      type: 'whisper' | 'retry-request',
    ) => ({
      envelopeId,
      messageId: '0123456789abcdef0123456789abcdef',
      sender,
      type,
      bytes: new Uint8Array(17).fill(9),
      serverTimestamp: w.now,
    });
    w.respond('bob', fetch.requestId, {
      kind: 'envelopes',
      envelopes: [
        ...honest.envelopes,
        forged(90_001, { userId: 'bob', deviceId: 1 }, 'whisper'),
        forged(90_002, { userId: 'alice', deviceId: 77 }, 'whisper'),
        forged(90_003, { userId: 'alice', deviceId: 1 }, 'retry-request'),
        forged(90_004, { userId: 'alice', deviceId: 1 }, 'whisper'),
      ],
    });
    w.sync();
    const codes = w
      .outputsOf('bob')
      .impl.flatMap((o) => (o.kind === 'error' || o.kind === 'undecryptable' ? [o.error.code] : []));
    expect(codes).toContain('TRUST_UNKNOWN_SENDER_DEVICE');
    expect(codes).toContain('RETRY_REQUEST_MALFORMED');
    expect(w.outputsOf('bob').impl.some((o) => o.kind === 'duplicate-dropped')).toBe(true);
    w.compareAll('after hostile answers');
  });

  it('a failed registration and a garbage provision message are reported the same way [WP-LIFE-01] [WP-LIFE-03]', () => {
    const w = new TwinWorld('conf-register');
    w.createAccount('alice', 'alice');
    w.createAccount('dup', 'alice');
    expect(w.implState('dup').lifecycle.kind).toBe('registering');
    w.linkDevice('alice', 'alice-2');
    w.input('alice-2', { kind: 'timer.poll-provisioning' });
    w.compareAll('after failed registration');
  });

  it('a garbage provision message is refused and the new device keeps waiting [WP-LIFE-03]', () => {
    const w = new TwinWorld('conf-provision');
    w.createAccount('alice', 'alice');
    w.adoptProvisioning('new');
    w.input('new', { kind: 'timer.poll-provisioning' });
    w.input('new', { kind: 'timer.poll-provisioning' });
    const held = w.takeRequest('new', 'provision-get');
    w.respond('new', held.requestId, { kind: 'provision', bytes: new Uint8Array(120).fill(3) });
    w.input('new', {
      kind: 'user.send',
      recipients: ['alice'],
      content: { kind: 'text', text: 'too early' },
    });
    w.input('new', { kind: 'timer.resend' });
    expect(w.implState('new').lifecycle.kind).toBe('provisioning');
    w.compareAll('after garbage provision');
  });

  it('signed prekey rotation: a PreKey message made before it decrypts within the grace period [WP-LIFE-07] [WP-LIFE-08]', () => {
    const w = new TwinWorld('conf-rotation-grace');
    w.createAccount('alice', 'alice');
    w.createAccount('bob', 'bob');
    w.addContact('alice', 'bob');
    w.addContact('bob', 'alice');
    // Alice's first message is encrypted from a bundle naming signed prekey 1, then held.
    w.sendQueued('alice', ['bob'], 'made before the rotation');
    w.runUntilRequest('alice', 'send');
    const held = w.takeRequest('alice', 'send');
    // A second timer while the first upload is unanswered only deletes what expired.
    w.input('bob', { kind: 'timer.rotate-signed-prekey', gracePeriod: 10_000 });
    w.input('bob', { kind: 'timer.rotate-signed-prekey', gracePeriod: 10_000 });
    expect(w.implState('bob').prekeys.signedPreKeys.map((k) => k.keyId)).toEqual([1, 2]);
    expect(w.implState('bob').retiredSignedPreKeys).toEqual([]);
    w.run();
    expect(w.implState('bob').retiredSignedPreKeys).toEqual([{ keyId: 1, retiredAt: w.now }]);
    w.now += 9_999;
    w.input('bob', { kind: 'timer.rotate-signed-prekey', gracePeriod: 10_000 });
    w.run();
    w.respond('alice', held.requestId, w.answerHonestly(held.request));
    w.sync();
    expect(w.texts('bob')).toEqual(['made before the rotation']);
    expect(w.implState('bob').prekeys.signedPreKeys.map((k) => k.keyId)).toEqual([1, 2, 3]);
    w.compareAll('after rotation within grace');
  });

  it('signed prekey rotation: after the grace period the old key is gone, its PreKey message refused and resent on a new session [WP-LIFE-08] [WP-PQXDH-05] [WP-XPORT-06]', () => {
    const w = new TwinWorld('conf-rotation-expired');
    w.createAccount('alice', 'alice');
    w.createAccount('bob', 'bob');
    w.addContact('alice', 'bob');
    w.addContact('bob', 'alice');
    w.sendQueued('alice', ['bob'], 'made before the rotation');
    w.runUntilRequest('alice', 'send');
    const held = w.takeRequest('alice', 'send');
    w.input('bob', { kind: 'timer.rotate-signed-prekey', gracePeriod: 10_000 });
    w.run();
    w.now += 10_000;
    w.input('bob', { kind: 'timer.rotate-signed-prekey', gracePeriod: 10_000 });
    w.run();
    expect(w.implState('bob').prekeys.signedPreKeys.map((k) => k.keyId)).toEqual([2, 3]);
    w.respond('alice', held.requestId, w.answerHonestly(held.request));
    w.sync();
    const refused = w
      .outputsOf('bob')
      .impl.flatMap((o) => (o.kind === 'undecryptable' ? [o.error.code] : []));
    expect(refused).toEqual(['UNKNOWN_SIGNED_PREKEY']);
    expect(w.texts('bob')).toEqual(['made before the rotation']);
    w.compareAll('after rotation past grace');
  });

  it('the rotation timer is ignored before linking and a bad grace period is refused by both engines [WP-LIFE-07]', () => {
    const w = new TwinWorld('conf-rotation-unlinked');
    w.adoptProvisioning('new');
    w.input('new', { kind: 'timer.rotate-signed-prekey' });
    expect(w.implState('new').prekeys.signedPreKeys.map((k) => k.keyId)).toEqual([1]);
    const runner = w.model.devices.get('new');
    expect(() => runner?.step({ kind: 'timer.rotate-signed-prekey', gracePeriod: -1 }, w.now)).toThrow(
      UsageError,
    );
    expect(() =>
      deviceStep(
        w.impl.env,
        w.implState('new'),
        { kind: 'timer.rotate-signed-prekey', gracePeriod: 0.5 },
        w.now,
      ),
    ).toThrow(UsageError);
    w.compareAll('after unlinked rotation');
  });

  type Command =
    | { readonly kind: 'send'; readonly device: number; readonly to: number }
    | { readonly kind: 'fetch'; readonly device: number }
    | { readonly kind: 'resend'; readonly device: number }
    | { readonly kind: 'rotate'; readonly device: number }
    | { readonly kind: 'network'; readonly faults: readonly TwinFault[] };

  const fault: fc.Arbitrary<TwinFault> = fc.oneof(
    { weight: 6, arbitrary: fc.constant('deliver' as const) },
    { weight: 1, arbitrary: fc.constant('drop' as const) },
    { weight: 1, arbitrary: fc.constant('duplicate' as const) },
    { weight: 1, arbitrary: fc.constant('delay' as const) },
  );
  const command: fc.Arbitrary<Command> = fc.oneof(
    {
      weight: 3,
      arbitrary: fc.record({ kind: fc.constant('send' as const), device: fc.nat(4), to: fc.nat(2) }),
    },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('fetch' as const), device: fc.nat(4) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('resend' as const), device: fc.nat(4) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('rotate' as const), device: fc.nat(4) }) },
    {
      weight: 4,
      arbitrary: fc.record({
        kind: fc.constant('network' as const),
        faults: fc.array(fault, { minLength: 1, maxLength: 10 }),
      }),
    },
  );

  it.each([
    ['hardened', HARDENED_OPTIONS],
    ['spec', SPEC_OPTIONS],
  ] as const)(
    'random interleavings of sends, fetches, timers, rotations, drops, duplicates and delays agree step by step (%s mode) [WP-LIFE-07] [WP-LIFE-08]',
    (_mode, options) => {
      fc.assert(
        fc.property(
          fc.array(command, { minLength: 5, maxLength: 25 }),
          fc.nat(1_000_000),
          (commands, seed) => {
            const w = twoUsers(`conf-prop-${seed}`, 1, 1, options);
            const names = ['alice', 'alice-2', 'bob', 'bob-2', 'alice'];
            let n = 0;
            for (const c of commands) {
              if (c.kind === 'send') {
                const to = c.to === 0 ? ['bob'] : c.to === 1 ? ['alice'] : ['alice', 'bob'];
                w.sendQueued(names[c.device] ?? 'alice', to, `m${n++}`);
              } else if (c.kind === 'fetch') w.input(names[c.device] ?? 'alice', { kind: 'net.fetch' });
              else if (c.kind === 'resend') w.input(names[c.device] ?? 'alice', { kind: 'timer.resend' });
              // A grace of three commands: keys are retired and deleted within one interleaving.
              else if (c.kind === 'rotate')
                w.input(names[c.device] ?? 'alice', {
                  kind: 'timer.rotate-signed-prekey',
                  gracePeriod: 3_000,
                });
              else for (const f of c.faults) w.deliverOne(f);
              w.now += 1_000;
            }
            // Heal: reliable network, timers and fetches until quiet.
            w.run();
            for (let round = 0; round < 3; round++) {
              w.resendAll();
              w.sync(3);
            }
            w.compareAll('after healing');
          },
        ),
        { numRuns: process.env['LOCKSTEP_FULL'] ? 60 : 8 },
      );
    },
  );

  describe.each([
    ['hardened', HARDENED_OPTIONS],
    ['spec', SPEC_OPTIONS],
  ] as const)('hardened switches agree in %s mode', (mode, options) => {
    const hardened = mode === 'hardened';

    it(`a replayed initial message without a one-time prekey: ${hardened ? 'refused' : 'accepted again'} [WP-PQXDH-13]`, () => {
      const { outputs, sessionRecreated } = replayInitialMessage(
        new TwinWorld(`conf-replay-${mode}`, options),
      );
      const refused = outputs.filter(
        (o) => o.kind === 'undecryptable' && o.error.code === 'INITIAL_MESSAGE_REPLAYED',
      );
      expect(refused).toHaveLength(hardened ? 1 : 0);
      // Spec mode: PQXDH accepted it again and re-created the dropped session; only the payload id
      // check stops a second display. Hardened: refused, the retry request's resend is a duplicate.
      expect(sessionRecreated).toBe(!hardened);
      expect(outputs.filter((o) => o.kind === 'delivered')).toEqual([]);
      expect(outputs.filter((o) => o.kind === 'duplicate-dropped')).toHaveLength(1);
    });

    it(`a restored copy sends on a chain its original left: ${hardened ? 'clone detected' : 'accepted'} [WP-SES-20]`, () => {
      const w = new TwinWorld(`conf-fork-${mode}`, options);
      const outputs = forkByRestoredCopy(w);
      const detected = outputs.filter((o) => o.kind === 'clone-detected');
      expect(detected).toHaveLength(hardened ? 1 : 0);
      // Both modes show the message beyond the fork once: directly, or resent on a new session.
      expect(w.texts('bob').filter((t) => t === 'c2 beyond')).toHaveLength(1);
      expect(outputs.filter((o) => o.kind === 'resent')).toHaveLength(0);
      expect(w.outputsOf('alice').impl.filter((o) => o.kind === 'resent')).toHaveLength(hardened ? 1 : 0);
    });

    it(`a stolen copy of an old session after healing: ${hardened ? 'refused, never active again' : 'revived'} [WP-SES-18] [WP-SES-19]`, () => {
      const { outputs, texts, revived } = reviveOldSession(new TwinWorld(`conf-revive-${mode}`, options));
      expect(revived).toBe(!hardened);
      const failed = outputs.filter((o) => o.kind === 'undecryptable');
      expect(failed).toHaveLength(hardened ? 1 : 0);
      // Hardened: shown through a resend on a new session, after the refusal.
      expect(texts.filter((t) => t === 'from the stolen session')).toHaveLength(1);
    });
  });

  it('runs every action of the machine but a few listed hostile-only paths (transition coverage)', () => {
    // Paths this quick suite does not reach: each needs a forged ciphertext, an exhausted id space
    // or a resend that crosses its original (the scenario suites and the simulator reach them).
    const notReached = new Set([
      'registerAccount', // runs at actor start, before the suite watches the actor
      'rejectNoFreeDeviceId',
      'answerWhileNotLinked',
      'ignoreOrphanAnswer',
      'failSingleDeviceSend',
      'rejectIdentityMismatch',
      'reportMalformedPayload',
      'rejectForeignSyncCopy',
    ]);
    const machine = createDeviceMachine({ crypto: nodeProvider, rng: seededRng('coverage') });
    const actions = Object.keys(machine.implementations.actions);
    const missed = actions.filter((a) => !ACTIONS_RUN.has(a) && !notReached.has(a));
    expect(missed, `actions never run: ${missed.join(', ')}`).toEqual([]);
    console.log(
      `actions run: ${actions.filter((a) => ACTIONS_RUN.has(a)).length}/${actions.length}; not reached: ${actions.filter((a) => !ACTIONS_RUN.has(a)).join(', ')}`,
    );
  });
});

/** Flips a MAC byte of every envelope from `from` waiting for `to`, in both worlds. */
function corruptMailboxes(w: TwinWorld, to: DeviceAddress, from: string): number {
  const corrupt = (server: ServerState): { server: ServerState; corrupted: number } => {
    const account = server.accounts[to.userId];
    const stored = account?.devices[String(to.deviceId)];
    if (account === undefined || stored === undefined) throw new Error('no such mailbox');
    let corrupted = 0;
    const envelopes = stored.mailbox.envelopes.map((e) => {
      if (e.sender.userId !== from) return e;
      corrupted++;
      // The MAC is the last byte of a SignalMessage, or of the one inside a PreKeySignalMessage.
      const bytes = Uint8Array.from(e.bytes);
      let end = bytes.length;
      if (e.type === 'prekey') {
        const parsed = parsePreKeySignalMessage(e.bytes);
        if (!parsed.ok) throw new Error('not a PreKeySignalMessage');
        const inner = parsed.value.message;
        end = bytes.findIndex((_, i) => inner.every((b, j) => bytes[i + j] === b)) + inner.length;
      }
      bytes[end - 1] = (bytes[end - 1] ?? 0) ^ 0x01;
      return { ...e, bytes };
    });
    const devices = {
      ...account.devices,
      [String(to.deviceId)]: { ...stored, mailbox: { ...stored.mailbox, envelopes } },
    };
    return {
      server: { ...server, accounts: { ...server.accounts, [to.userId]: { ...account, devices } } },
      corrupted,
    };
  };
  const impl = corrupt(w.impl.server);
  const model = corrupt(w.model.server);
  w.impl.server = impl.server;
  w.model.server = model.server;
  if (impl.corrupted !== model.corrupted) throw new Error('the twin servers differ');
  return impl.corrupted;
}
