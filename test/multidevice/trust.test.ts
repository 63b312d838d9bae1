/**
 * Scenario stories for trust in device lists (WP-TRUST-*): chats start from contact links, and in
 * signed mode a server cannot add a device of its own to someone's account. The same attack in
 * `server` mode (Sesame's original trust in the server) succeeds: that is what the signature buys.
 */
import { describe, expect, it } from 'vitest';
import { contactLinkFromUrl, contactLinkToUrl } from '../../spec/contact-link.js';
import { accountKeyFingerprint } from '../../spec/device-list.js';
import type { DeviceOptions } from '../../impl/device.js';
import { createProvisioningDevice, preKeyUpload } from '../../impl/device.js';
import { emptySesameState } from '../../impl/sesame.js';
import { mailboxDepth, type ServerAccount, type ServerPreKeys } from '../../impl/server.js';
import { generateKeyPair } from '../../spec/keys.js';
import { HARDENED_OPTIONS } from '../../spec/security-mode.js';
import {
  addContact,
  contactLinkOf,
  createWorld,
  device,
  input,
  run,
  runAtMost,
  send,
  sendRequestsOf,
  sync,
  texts,
  type World,
} from '../support/world.js';
import { copiesIn, createUser, expectFannedOut, forgeList, outputsOfKind, serverList } from './stories.js';

describe('contact links', () => {
  it('a chat started from a contact link (URL form) works and pins the account key [WP-TRUST-01]', () => {
    const w = createWorld('link-ok');
    createUser(w, 'alice', 1);
    createUser(w, 'bob', 1);
    const parsed = contactLinkFromUrl(contactLinkToUrl(contactLinkOf(w, 'bob')));
    if (!parsed.ok) throw new Error(parsed.error.message);
    input(w, 'alice', { kind: 'user.add-contact', link: parsed.value });
    run(w);
    expect(device(w, 'alice').trust['bob']?.accountKey).toEqual(serverList(w, 'bob').list.accountKey);
    send(w, 'alice', ['bob'], 'from a link');
    sync(w);
    expectFannedOut(w, 'alice', 'bob', 'from a link');
  });

  it('a link whose fingerprint does not match the served account key: nothing is sent, typed error [WP-TRUST-01]', () => {
    const w = createWorld('link-mismatch');
    createUser(w, 'alice');
    createUser(w, 'bob');
    const impostorKey = generateKeyPair(w.env.crypto, w.env.rng).publicKey;
    const link = {
      userId: 'bob',
      accountKeyFingerprint: accountKeyFingerprint(w.env.crypto, impostorKey),
      inviteToken: null,
    };
    // The send is asked for before the list arrives: it waits, then fails with the link check.
    input(w, 'alice', { kind: 'user.add-contact', link });
    input(w, 'alice', { kind: 'user.send', recipients: ['bob'], content: { kind: 'text', text: 'never' } });
    run(w);
    expect(outputsOfKind(w, 'alice', 'send-failed').map((f) => f.error.code)).toEqual([
      'CONTACT_LINK_MISMATCH',
    ]);
    expect(outputsOfKind(w, 'alice', 'error').map((e) => e.error.code)).toEqual(['CONTACT_LINK_MISMATCH']);
    expect(sendRequestsOf(w, 'alice').map((s) => s.request.recipient)).toEqual([]);
    expect(w.serverLog.some((e) => e.request.kind === 'get-bundles')).toBe(false);
    expect(device(w, 'alice').trust['bob']?.accountKey ?? null).toBeNull();
    sync(w);
    expect(texts(w, 'bob')).toEqual([]);
  });

  it('after a mismatching link, later sends to that user are still refused: no fallback to trust on first use [WP-TRUST-01]', () => {
    const w = createWorld('link-mismatch-later');
    createUser(w, 'alice');
    createUser(w, 'bob');
    const impostorKey = generateKeyPair(w.env.crypto, w.env.rng).publicKey;
    input(w, 'alice', {
      kind: 'user.add-contact',
      link: {
        userId: 'bob',
        accountKeyFingerprint: accountKeyFingerprint(w.env.crypto, impostorKey),
        inviteToken: null,
      },
    });
    run(w);
    expect(outputsOfKind(w, 'alice', 'error').map((e) => e.error.code)).toEqual(['CONTACT_LINK_MISMATCH']);
    send(w, 'alice', ['bob'], 'after the mismatch');
    sync(w);
    expect(sendRequestsOf(w, 'alice').map((s) => s.request.recipient)).toEqual([]);
    expect(texts(w, 'bob')).toEqual([]);
    expect(outputsOfKind(w, 'alice', 'send-failed')).toHaveLength(1);
  });

  it('sending to a user never started from a link is refused (TRUST_CONTACT_UNKNOWN), with no lookup at all [WP-TRUST-01]', () => {
    const w = createWorld('link-unknown');
    createUser(w, 'alice', 1);
    createUser(w, 'carol');
    const logged = w.serverLog.length;
    send(w, 'alice', ['carol'], 'who are you');
    expect(outputsOfKind(w, 'alice', 'send-failed').map((f) => [f.recipient, f.error.code])).toEqual([
      ['carol', 'TRUST_CONTACT_UNKNOWN'],
    ]);
    // Not even the device list was asked for: there is no lookup by name.
    expect(w.serverLog.slice(logged).filter((e) => e.request.kind === 'get-device-list')).toEqual([]);
    sync(w);
    expect(texts(w, 'carol')).toEqual([]);
    // A refused message is not reported to the sender's other devices as sent.
    expect(texts(w, 'alice-2')).toEqual([]);
  });

  it('a user who wrote first is heard, and may be answered, without a link [WP-TRUST-01] [WP-TRUST-05]', () => {
    const w = createWorld('link-heard-from');
    createUser(w, 'alice');
    createUser(w, 'bob');
    addContact(w, 'alice', 'bob');
    send(w, 'alice', ['bob'], 'hi bob');
    sync(w);
    send(w, 'bob', ['alice'], 'hi alice, whom I never linked');
    sync(w);
    expect(texts(w, 'alice')).toEqual(['hi alice, whom I never linked']);
  });
});

/**
 * The server adds a device of its own (identity, prekeys, mailbox) to bob's account, under a list
 * that names bob's account key but carries the attacker's signature. Returns the attacker's device
 * name in the world: a device state that reads the injected mailbox.
 */
function injectDevice(w: World, options: DeviceOptions): string {
  const attackerKey = generateKeyPair(w.env.crypto, w.env.rng);
  const mallory = createProvisioningDevice(w.env, w.now, options);
  const identityKey = mallory.state.prekeys.identityKeyPair.publicKey;
  const registrationId = mallory.state.prekeys.registrationId;
  const { list } = serverList(w, 'bob');
  const forged = forgeList(w, attackerKey.privateKey, {
    ...list,
    version: list.version + 1,
    devices: [...list.devices, { deviceId: 3, identityKey, registrationId }],
  });
  const upload = preKeyUpload(mallory.state.prekeys);
  const lastResort = upload.kyberPreKeys.find((k) => k.lastResort);
  if (lastResort === undefined) throw new Error('no last-resort key');
  const oneTimeKyber = upload.kyberPreKeys.filter((k) => !k.lastResort);
  const preKeys: ServerPreKeys = {
    signedPreKey: upload.signedPreKey,
    oneTimePreKeys: upload.oneTimePreKeys,
    kyberPreKeys: oneTimeKyber,
    lastResortKyberPreKey: lastResort,
    // WP-SRV-29: one past each kind's greatest id, as a registration of these keys leaves them.
    oneTimePreKeyIdFloor: Math.max(0, ...upload.oneTimePreKeys.map((k) => k.keyId + 1)),
    kyberPreKeyIdFloor: Math.max(0, ...oneTimeKyber.map((k) => k.keyId + 1)),
  };
  const account = w.server.accounts['bob'];
  if (account === undefined) throw new Error('no bob');
  const injected: ServerAccount = {
    ...account,
    signedDeviceList: forged,
    deviceList: {
      ...list,
      version: list.version + 1,
      devices: [...list.devices, { deviceId: 3, identityKey, registrationId }],
    },
    devices: {
      ...account.devices,
      '3': { identityKey, registrationId, preKeys, mailbox: { nextEnvelopeId: 1, envelopes: [] } },
    },
  };
  w.server = { ...w.server, accounts: { ...w.server.accounts, bob: injected } };
  const address = { userId: 'bob', deviceId: 3 };
  w.devices.set('mallory', {
    ...mallory.state,
    lifecycle: { kind: 'linked' },
    userId: 'bob',
    deviceId: 3,
    sesame: emptySesameState(address),
  });
  return 'mallory';
}

describe('a device injected by the server', () => {
  for (const mode of ['signed', 'server'] as const) {
    it(`${mode} mode: ${mode === 'signed' ? 'refuses to encrypt to it' : 'encrypts to it (the attack the signature prevents)'} [WP-TRUST-02]`, () => {
      const options: DeviceOptions = { ...HARDENED_OPTIONS, deviceListAuth: mode };
      const w = createWorld(`inject-${mode}`);
      createUser(w, 'alice', 0, options);
      createUser(w, 'bob', 1, options);
      addContact(w, 'alice', 'bob');
      send(w, 'alice', ['bob'], 'before the injection');
      sync(w);
      const mallory = injectDevice(w, options);
      const before = (w.outputs.get('alice') ?? []).length;
      send(w, 'alice', ['bob'], 'the secret');
      sync(w);
      const copies = sendRequestsOf(w, 'alice')
        .filter((s) => s.index >= before && s.request.recipient === 'bob')
        .map((s) => copiesIn(s.request));
      if (mode === 'signed') {
        expect(outputsOfKind(w, 'alice', 'send-failed').map((f) => f.error.code)).toEqual([
          'TRUST_LIST_INVALID',
        ]);
        // The first attempt, refused by the server, went to bob's real devices only; nothing else.
        expect(copies).toEqual([[1, 2]]);
        expect(texts(w, mallory)).toEqual([]);
        expect(mailboxDepth(w.server, { userId: 'bob', deviceId: 3 })).toBe(0);
        expect(outputsOfKind(w, 'alice', 'device-list-changed').filter((e) => e.added.includes(3))).toEqual(
          [],
        );
        // A fresh contact meeting bob's account through this server refuses the forged list as well.
        createUser(w, 'carol', 0, options);
        addContact(w, 'carol', 'bob');
        expect(outputsOfKind(w, 'carol', 'error').map((e) => e.error.code)).toEqual(['TRUST_LIST_INVALID']);
        input(w, 'carol', {
          kind: 'user.send',
          recipients: ['bob'],
          content: { kind: 'text', text: 'carol to bob' },
        });
        // Bounded: a client that keeps asking for the list it refuses is a separate finding (hostile-server.test.ts).
        runAtMost(w, 2_000);
        w.queue.length = 0;
        expect(sendRequestsOf(w, 'carol').map((s) => copiesIn(s.request))).toEqual([]);
        expect(texts(w, mallory)).toEqual([]);
      } else {
        // The server's word is taken: the device is announced, then encrypted to, and reads the secret.
        const added = (w.outputs.get('alice') ?? []).findIndex(
          (o) => o.kind === 'device-list-changed' && o.userId === 'bob' && o.added.includes(3),
        );
        expect(added).toBeGreaterThanOrEqual(before);
        expect(copies.at(-1)).toEqual([1, 2, 3]);
        expect(texts(w, mallory)).toEqual(['the secret']);
      }
      // bob's real devices are unaffected by what the attacker did with his list.
      expect(texts(w, 'bob')).toContain('before the injection');
    });
  }
});
