/**
 * Scenario stories of a device's life (WP-LIFE-*): linking mid-conversation, revocation, reinstall
 * of a secondary and of a primary (account reset), and one-time prekey exhaustion.
 */
import { describe, expect, it } from 'vitest';
import { currentDevices, droppedByRevocation, mailboxDepth } from '../../impl/server.js';
import {
  KYBER_PREKEY_BATCH,
  KYBER_PREKEY_LOW_WATER,
  ONE_TIME_PREKEY_BATCH,
  ONE_TIME_PREKEY_LOW_WATER,
  createProvisioningDevice,
} from '../../impl/device.js';
import {
  addContact,
  createAccount,
  createWorld,
  device,
  firstOutputIndex,
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
  copiesIn,
  createUser,
  expectFannedOut,
  expectNoUndecryptable,
  expectNothingShownTwice,
  expectStillTalks,
  outputsOfKind,
  talkingPair,
} from './stories.js';

/**
 * WP-TRUST-07: on device `name`, the first event announcing `userId.deviceId` comes before the first
 * send that carries a copy for that device (for the install with `registrationId`, when given).
 * Returns false when the device never encrypted to it.
 */
function announcedBeforeEncrypted(
  w: World,
  name: string,
  userId: string,
  deviceId: number,
  event: 'device-list-changed' | 'key-change',
  registrationId?: number,
): boolean {
  const announced = firstOutputIndex(
    w,
    name,
    (o) =>
      (event === 'device-list-changed' &&
        o.kind === 'device-list-changed' &&
        o.userId === userId &&
        o.added.includes(deviceId)) ||
      (event === 'key-change' && o.kind === 'key-change' && o.userId === userId && o.deviceId === deviceId),
  );
  const firstCopy = sendRequestsOf(w, name).find(
    (s) =>
      s.request.recipient === userId &&
      s.request.messages.some(
        (m) =>
          m.deviceId === deviceId && (registrationId === undefined || m.registrationId === registrationId),
      ),
  );
  if (firstCopy === undefined) return false;
  expect(
    announced,
    `${name}: ${event} for ${userId}.${deviceId} before its first copy`,
  ).toBeGreaterThanOrEqual(0);
  expect(announced).toBeLessThan(firstCopy.index);
  return true;
}

describe('linking a device mid-conversation', () => {
  it('the new device sees only messages sent after it was linked [WP-LIFE-03]', () => {
    const w = createWorld('link-mid');
    talkingPair(w, 0, 1);
    send(w, 'bob-2', ['alice'], 'before link, fetched');
    sync(w);
    // Queued in alice's mailbox, not yet fetched, when alice links a new device.
    send(w, 'bob', ['alice'], 'before link, in flight');
    linkDevice(w, 'alice', 'alice-2');
    expect(device(w, 'alice-2').deviceId).toBe(2);
    expect(mailboxDepth(w.server, { userId: 'alice', deviceId: 2 })).toBe(0);
    sync(w);
    expect(texts(w, 'alice')).toContain('before link, in flight');
    send(w, 'bob', ['alice'], 'after link 1');
    send(w, 'bob-2', ['alice'], 'after link 2');
    send(w, 'alice', ['bob'], 'after link 3');
    sync(w);
    addContact(w, 'alice-2', 'bob');
    send(w, 'alice-2', ['bob'], 'after link 4');
    sync(w);
    expect([...texts(w, 'alice-2')].sort()).toEqual(
      ['after link 1', 'after link 2', '→bob: after link 3'].sort(),
    );
    expectFannedOut(w, 'alice-2', 'bob', 'after link 4');
    expectNoUndecryptable(w);
  });

  it('every device sees a device-list-changed event for the new device before encrypting to it [WP-TRUST-07] [WP-LIFE-03]', () => {
    const w = createWorld('link-event');
    talkingPair(w, 1, 1);
    linkDevice(w, 'alice', 'alice-3');
    send(w, 'bob', ['alice'], 'to three alices');
    send(w, 'bob-2', ['alice'], 'again to three alices');
    send(w, 'alice', ['bob'], 'alice to bob');
    send(w, 'alice-2', ['bob'], 'alice-2 to bob');
    sync(w);
    for (const name of ['bob', 'bob-2', 'alice', 'alice-2']) {
      expect(announcedBeforeEncrypted(w, name, 'alice', 3, 'device-list-changed'), name).toBe(true);
    }
    expect(outputsOfKind(w, 'alice', 'device-linked').at(-1)).toEqual({
      kind: 'device-linked',
      address: { userId: 'alice', deviceId: 3 },
    });
    expectFannedOut(w, 'bob', 'alice', 'to three alices');
    expectFannedOut(w, 'alice-2', 'bob', 'alice-2 to bob');
  });

  it('a device that is not linked yet neither sends nor fetches; a bad relay message is refused [WP-LIFE-01] [WP-LIFE-03]', () => {
    const w = createWorld('not-linked');
    createUser(w, 'alice');
    const created = createProvisioningDevice(w.env, w.now);
    w.devices.set('new', created.state);
    expect(
      input(w, 'new', { kind: 'user.send', recipients: ['alice'], content: { kind: 'text', text: 'early' } }),
    ).toEqual([
      expect.objectContaining({ kind: 'error', error: expect.objectContaining({ code: 'LIFE_NOT_LINKED' }) }),
    ]);
    expect(input(w, 'new', { kind: 'net.fetch' })).toEqual([]);
    // The relay hands it garbage (or someone else's message): refused, still provisioning.
    const release = holdRequests(w, 'new', 'provision-get');
    input(w, 'new', { kind: 'timer.poll-provisioning' });
    run(w);
    release();
    const poll = pendingOf(w, 'new', 'provision-get')[0];
    if (poll === undefined) throw new Error('no poll');
    respond(w, 'new', poll.requestId, { kind: 'provision', bytes: new Uint8Array(200).fill(7) });
    expect(outputsOfKind(w, 'new', 'error').map((e) => e.error.code)).toEqual([
      'LIFE_NOT_LINKED',
      'LIFE_PROVISION_INVALID',
    ]);
    expect(device(w, 'new').lifecycle.kind).toBe('provisioning');
    // The real message still links it afterwards.
    input(w, 'alice', { kind: 'user.link-device', code: created.code });
    run(w);
    input(w, 'new', { kind: 'timer.poll-provisioning' });
    run(w);
    expect(device(w, 'new').lifecycle.kind).toBe('linked');
    expect(outputsOfKind(w, 'new', 'linked')).toEqual([
      { kind: 'linked', address: { userId: 'alice', deviceId: 2 } },
    ]);
  });

  it('only the primary links or revokes devices [WP-LIFE-02]', () => {
    const w = createWorld('link-not-primary');
    createUser(w, 'alice', 1);
    input(w, 'alice-2', { kind: 'user.revoke-device', deviceId: 1 });
    input(w, 'alice', { kind: 'user.revoke-device', deviceId: 9 });
    run(w);
    expect(outputsOfKind(w, 'alice-2', 'error').map((e) => e.error.code)).toEqual(['LIFE_NOT_PRIMARY']);
    expect(outputsOfKind(w, 'alice', 'error').map((e) => e.error.code)).toEqual(['LIFE_UNKNOWN_DEVICE']);
    expect(currentDevices(w.server, 'alice')).toEqual([1, 2]);
  });
});

describe('a device listed but not yet registered', () => {
  it('does not block sends to its account: the registered devices get the message, the new one gets only later ones [WP-SRV-12] [WP-LIFE-03] [WP-SES-07]', () => {
    const w = createWorld('linking-window');
    createUser(w, 'alice');
    createUser(w, 'bob', 1);
    addContact(w, 'alice', 'bob');
    addContact(w, 'bob', 'alice');
    // bob's primary lists a new tablet, but the tablet has not read the relay or registered yet.
    const created = createProvisioningDevice(w.env, w.now);
    w.devices.set('bob-tablet', created.state);
    input(w, 'bob', { kind: 'user.link-device', code: created.code });
    run(w);
    send(w, 'alice', ['bob'], 'during the linking window');
    sync(w);
    expect(outputsOfKind(w, 'alice', 'send-failed')).toEqual([]);
    expect(texts(w, 'bob')).toContain('during the linking window');
    expect(texts(w, 'bob-2')).toContain('during the linking window');
    // The tablet registers; alice's next send is refused as missing it, then reaches it too.
    input(w, 'bob-tablet', { kind: 'timer.poll-provisioning' });
    run(w);
    expect(device(w, 'bob-tablet').lifecycle.kind).toBe('linked');
    send(w, 'alice', ['bob'], 'after the tablet registered');
    sync(w);
    expect(outputsOfKind(w, 'alice', 'send-failed')).toEqual([]);
    expect(texts(w, 'bob-tablet')).toEqual(['after the tablet registered']);
    expect(texts(w, 'bob')).toContain('after the tablet registered');
    expectNoUndecryptable(w);
  });
});

describe('revocation', () => {
  it('a revoked device reads nothing sent afterwards, and the server drops its mailbox [WP-LIFE-04]', () => {
    const w = createWorld('revoke');
    talkingPair(w, 1, 0);
    // Waiting in alice-2's mailbox when it is revoked: dropped by rule, never read.
    send(w, 'bob', ['alice'], 'queued for alice-2');
    const revokedAddress = { userId: 'alice', deviceId: 2 };
    expect(mailboxDepth(w.server, revokedAddress)).toBe(1);
    input(w, 'alice', { kind: 'user.revoke-device', deviceId: 2 });
    run(w);
    expect(outputsOfKind(w, 'alice', 'device-list-changed').at(-1)).toMatchObject({
      removed: [2],
      added: [],
    });
    expect(currentDevices(w.server, 'alice')).toEqual([1]);
    expect(mailboxDepth(w.server, revokedAddress)).toBe(0);
    expect(droppedByRevocation(w.server, revokedAddress)).toBe(1);

    const bobOutputsBefore = (w.outputs.get('bob') ?? []).length;
    send(w, 'bob', ['alice'], 'after revocation 1');
    send(w, 'bob', ['alice'], 'after revocation 2');
    send(w, 'alice', ['bob'], 'after revocation 3');
    sync(w);
    // Bob learnt it from the refusal of his next send, and from then on never encrypts to device 2.
    const learnt = firstOutputIndex(
      w,
      'bob',
      (o) => o.kind === 'device-list-changed' && o.userId === 'alice' && o.removed.includes(2),
    );
    expect(learnt).toBeGreaterThanOrEqual(bobOutputsBefore);
    const later = sendRequestsOf(w, 'bob').filter((s) => s.index > learnt);
    expect(later.length).toBeGreaterThanOrEqual(2);
    for (const s of later) expect(copiesIn(s.request)).not.toContain(2);
    // Alice no longer sends sync copies to it either.
    for (const s of sendRequestsOf(w, 'alice').filter((s) => s.request.recipient === 'alice')) {
      expect(s.index).toBeLessThan(
        firstOutputIndex(w, 'alice', (o) => o.kind === 'device-list-changed' && o.removed.includes(2)),
      );
    }
    // The server refuses the revoked device, which learns that it was revoked.
    expect(outputsOfKind(w, 'alice-2', 'revoked')).toHaveLength(1);
    expect(device(w, 'alice-2').lifecycle.kind).toBe('revoked');
    expect(texts(w, 'alice-2')).toEqual(['→bob: hello bob', 'hello alice']);
    expect(texts(w, 'alice')).toEqual([
      'hello alice',
      'queued for alice-2',
      'after revocation 1',
      'after revocation 2',
    ]);
    // A revoked device refuses to send (typed error), and the server would not take it anyway.
    input(w, 'alice-2', { kind: 'user.send', recipients: ['bob'], content: { kind: 'text', text: 'ghost' } });
    run(w);
    expect(outputsOfKind(w, 'alice-2', 'error').at(-1)?.error.code).toBe('LIFE_REVOKED');
    expect(texts(w, 'bob')).not.toContain('ghost');
    expectStillTalks(w, 'alice', 'bob', 'after revocation');
  });

  it('a sender whose list still names a revoked device it never had a session with still delivers to the others [WP-LIFE-04] [WP-XPORT-04]', () => {
    const w = createWorld('revoke-no-session');
    talkingPair(w, 1, 1);
    // bob-2 knows alice's list [1, 2] but has a session with alice-1 only (it only ever received).
    expect(device(w, 'bob-2').sesame.users['alice']?.devices['2']).toBeUndefined();
    input(w, 'alice', { kind: 'user.revoke-device', deviceId: 2 });
    run(w);
    // Its first send asks for a bundle of alice-2, which the server no longer has: the answer
    // (SERVER_UNKNOWN_DEVICE) must lead to a list refresh, not to losing the message for alice-1.
    send(w, 'bob-2', ['alice'], 'from bob-2 after revocation');
    sync(w);
    expect(outputsOfKind(w, 'bob-2', 'send-failed')).toEqual([]);
    expect(texts(w, 'alice')).toContain('from bob-2 after revocation');
    for (const s of sendRequestsOf(w, 'bob-2').filter((r) => r.request.recipient === 'alice')) {
      expect(copiesIn(s.request)).toEqual([1]);
    }
    expect(texts(w, 'alice-2')).not.toContain('from bob-2 after revocation');
  });
});

describe('restored from an older snapshot', () => {
  it('a primary restored to before its registration was answered retries it, is linked again and reads what was sent meanwhile [WP-SRV-05] [WP-LIFE-01]', () => {
    const w = createWorld('restored-while-registering');
    // The registration's first answer is lost: the snapshot is of a primary still registering.
    const release = holdRequests(w, 'alice', 'register-account');
    createAccount(w, 'alice', 'alice');
    release();
    const registering = device(w, 'alice');
    expect(registering.lifecycle.kind).toBe('registering');
    input(w, 'alice', { kind: 'timer.resend' });
    run(w);
    expect(device(w, 'alice').lifecycle.kind).toBe('linked');
    // The account moves on (a second device, list version 2) and bob writes.
    linkDevice(w, 'alice', 'alice-2');
    createUser(w, 'bob');
    addContact(w, 'bob', 'alice');
    send(w, 'bob', ['alice'], 'while you were away');
    w.devices.set('alice', registering);
    input(w, 'alice', { kind: 'timer.resend' });
    run(w);
    expect(device(w, 'alice').lifecycle.kind).toBe('linked');
    expect(outputsOfKind(w, 'alice', 'error')).toEqual([]);
    sync(w);
    expect(texts(w, 'alice').filter((t) => t === 'while you were away')).toHaveLength(1);
    expect(texts(w, 'alice-2')).toContain('while you were away');
  });
});

describe('reinstall', () => {
  it('a reinstalled secondary comes back as a new device; peers get a key-change event before encrypting to it [WP-LIFE-05] [WP-TRUST-07]', () => {
    const w = createWorld('reinstall-secondary');
    talkingPair(w, 1, 0);
    const oldIdentity = device(w, 'alice-2').prekeys.identityKeyPair.publicKey;
    // alice-2 loses its state: the primary revokes the old install and links the new one.
    w.devices.delete('alice-2');
    input(w, 'alice', { kind: 'user.revoke-device', deviceId: 2 });
    run(w);
    linkDevice(w, 'alice', 'alice-2-new');
    const fresh = device(w, 'alice-2-new');
    expect(fresh.deviceId).toBe(2);
    expect(fresh.prekeys.identityKeyPair.publicKey).not.toEqual(oldIdentity);
    send(w, 'bob', ['alice'], 'to the new alice-2');
    sync(w);
    expect(announcedBeforeEncrypted(w, 'bob', 'alice', 2, 'key-change', fresh.prekeys.registrationId)).toBe(
      true,
    );
    expect(texts(w, 'alice-2-new')).toEqual(['to the new alice-2']);
    expect(texts(w, 'alice')).toContain('to the new alice-2');
    expectStillTalks(w, 'bob', 'alice', 'after reinstall');
  });

  it('a message from a reinstalled secondary reaches a peer whose list predates the reinstall [WP-LIFE-05] [WP-TRUST-05]', () => {
    const w = createWorld('reinstall-secondary-writes-first');
    talkingPair(w, 1, 0);
    w.devices.delete('alice-2');
    input(w, 'alice', { kind: 'user.revoke-device', deviceId: 2 });
    run(w);
    linkDevice(w, 'alice', 'alice-2-new');
    addContact(w, 'alice-2-new', 'bob');
    // The new install writes first: bob's accepted list still names the old identity for device 2.
    send(w, 'alice-2-new', ['bob'], 'hi from my new install');
    sync(w);
    expect(outputsOfKind(w, 'bob', 'key-change')).toContainEqual({
      kind: 'key-change',
      userId: 'alice',
      deviceId: 2,
    });
    // Bob must refresh alice's list (as for an unlisted device) rather than lose the message for good.
    expect(texts(w, 'bob')).toContain('hi from my new install');
  });

  it('a lost primary resets the account: contacts get a key-change (deviceId null) and sends wait for acknowledgment [WP-LIFE-05] [WP-TRUST-04]', () => {
    const w = createWorld('reinstall-primary');
    talkingPair(w, 1, 1);
    const oldVersion = device(w, 'alice').trust['alice']?.list?.version ?? 0;
    resetAccount(w, 'alice', 'alice', oldVersion);
    expect(device(w, 'alice').trust['alice']?.list?.version).toBe(oldVersion + 1);
    // The old secondary lost its registration with the reset.
    sync(w);
    expect(device(w, 'alice-2').lifecycle.kind).toBe('revoked');
    const bobBefore = (w.outputs.get('bob') ?? []).length;
    send(w, 'bob', ['alice'], 'while blocked');
    sync(w);
    const keyChanges = outputsOfKind(w, 'bob', 'key-change');
    expect(keyChanges).toContainEqual({ kind: 'key-change', userId: 'alice', deviceId: null });
    // Nothing goes to the new account until bob acknowledges the key change.
    // Bob's one attempt went to the old installs (he did not know yet); the refusal told him.
    const toAlice = sendRequestsOf(w, 'bob').filter(
      (s) => s.index >= bobBefore && s.request.recipient === 'alice',
    );
    expect(toAlice.map((s) => copiesIn(s.request))).toEqual([[1, 2]]);
    expect(
      (w.outputs.get('bob') ?? [])
        .slice(bobBefore)
        .filter((o) => o.kind === 'sent' && o.recipient === 'alice'),
    ).toEqual([]);
    expect(texts(w, 'alice')).toEqual([]);
    send(w, 'bob', ['alice'], 'also blocked');
    sync(w);
    expect(texts(w, 'alice')).toEqual([]);
    expect(
      device(w, 'bob')
        .outbox.filter((i) => i.recipient === 'alice')
        .map((i) => i.stage),
    ).toEqual(['blocked', 'blocked']);
    input(w, 'bob', { kind: 'user.acknowledge-key-change', userId: 'alice' });
    run(w);
    sync(w);
    expect(texts(w, 'alice')).toEqual(['while blocked', 'also blocked']);
    const newPrimary = device(w, 'alice').prekeys.registrationId;
    expect(announcedBeforeEncrypted(w, 'bob', 'alice', 1, 'key-change', newPrimary)).toBe(true);
    expect(texts(w, 'bob-2')).toEqual([
      'hello bob',
      '→alice: hello alice',
      '→alice: while blocked',
      '→alice: also blocked',
    ]);
    for (const name of ['alice', 'bob', 'bob-2']) expectNothingShownTwice(w, name);
  });

  it("a reset account's new primary writing first is announced as a key change and not lost [WP-LIFE-05] [WP-TRUST-04]", () => {
    const w = createWorld('reinstall-primary-writes-first');
    talkingPair(w, 0, 0);
    const oldVersion = device(w, 'alice').trust['alice']?.list?.version ?? 0;
    resetAccount(w, 'alice', 'alice', oldVersion);
    addContact(w, 'alice', 'bob');
    send(w, 'alice', ['bob'], 'new phone, who dis');
    sync(w);
    // Bob learns of the reset from the message itself ...
    expect(outputsOfKind(w, 'bob', 'key-change')).toContainEqual({
      kind: 'key-change',
      userId: 'alice',
      deviceId: null,
    });
    input(w, 'bob', { kind: 'user.acknowledge-key-change', userId: 'alice' });
    run(w);
    sync(w);
    // ... and once he accepts the new key, the message is there, exactly once.
    expect(texts(w, 'bob').filter((t) => t === 'new phone, who dis')).toHaveLength(1);
  });
});

describe('one-time prekeys', () => {
  it('sessions still form when one-time prekeys run out, and the device replenishes when it next fetches [WP-LIFE-06]', () => {
    const w = createWorld('opk-exhaustion');
    createUser(w, 'bob');
    const senders: string[] = [];
    for (let i = 0; i < ONE_TIME_PREKEY_BATCH + 2; i++) {
      const name = `u${i}`;
      createUser(w, name);
      addContact(w, name, 'bob');
      senders.push(name);
    }
    // All of them start a session with bob before he fetches anything.
    for (const name of senders) send(w, name, ['bob'], `hello from ${name}`);
    const bundles = w.serverLog.flatMap((e) =>
      e.request.kind === 'get-bundles' && e.request.userId === 'bob' && e.response.kind === 'bundles'
        ? e.response.bundles
        : [],
    );
    expect(bundles).toHaveLength(senders.length);
    const lastResort = device(w, 'bob').prekeys.kyberPreKeys.find((k) => k.lastResort);
    expect(bundles.filter((b) => b.preKeyId !== null)).toHaveLength(ONE_TIME_PREKEY_BATCH);
    expect(bundles.slice(ONE_TIME_PREKEY_BATCH).map((b) => b.preKey)).toEqual([null, null]);
    expect(bundles.slice(KYBER_PREKEY_BATCH).every((b) => b.kyberPreKeyId === lastResort?.keyId)).toBe(true);
    expect(w.server.accounts['bob']?.devices['1']?.preKeys.oneTimePreKeys).toEqual([]);
    const uploads = (): number =>
      w.serverLog.filter((e) => e.request.kind === 'upload-prekeys' && e.device === 'bob').length;
    expect(uploads()).toBe(0);
    input(w, 'bob', { kind: 'net.fetch' });
    run(w);
    expect(texts(w, 'bob')).toEqual(senders.map((name) => `hello from ${name}`));
    expect(uploads()).toBeGreaterThanOrEqual(1);
    sync(w);
    expect(device(w, 'bob').prekeys.oneTimePreKeys.length).toBeGreaterThanOrEqual(ONE_TIME_PREKEY_LOW_WATER);
    const stored = w.server.accounts['bob']?.devices['1']?.preKeys;
    expect(stored?.oneTimePreKeys.length).toBeGreaterThanOrEqual(ONE_TIME_PREKEY_LOW_WATER);
    expect(stored?.kyberPreKeys.length).toBeGreaterThanOrEqual(KYBER_PREKEY_LOW_WATER);
    // Sessions made without one-time prekeys work both ways, and a newcomer gets a fresh one.
    for (const name of senders.slice(-2)) {
      send(w, 'bob', [name], `reply to ${name}`);
      sync(w);
      expect(texts(w, name)).toEqual([`reply to ${name}`]);
    }
    createUser(w, 'late');
    addContact(w, 'late', 'bob');
    send(w, 'late', ['bob'], 'late hello');
    sync(w);
    const lateBundle = w.serverLog.filter((e) => e.device === 'late' && e.response.kind === 'bundles').at(-1);
    expect(
      lateBundle?.response.kind === 'bundles' && lateBundle.response.bundles[0]?.preKeyId,
    ).toBeGreaterThan(ONE_TIME_PREKEY_BATCH);
    expect(texts(w, 'bob')).toContain('late hello');
    expectNoUndecryptable(w);
  });

  it('after the fetch that used its one-time prekeys up, the device holds and has uploaded a new batch [WP-LIFE-06]', () => {
    const w = createWorld('opk-replenish-one-fetch');
    createUser(w, 'bob');
    for (let i = 0; i < ONE_TIME_PREKEY_BATCH + 2; i++) {
      createUser(w, `v${i}`);
      addContact(w, `v${i}`, 'bob');
      send(w, `v${i}`, ['bob'], `hi ${i}`);
    }
    // One fetch: the envelopes wait for their senders' lists (WP-TRUST-05), then use up every
    // one-time EC and Kyber prekey. The Kyber batch goes out first; the EC batch must follow.
    input(w, 'bob', { kind: 'net.fetch' });
    run(w);
    expect(texts(w, 'bob')).toHaveLength(ONE_TIME_PREKEY_BATCH + 2);
    expect(device(w, 'bob').prekeys.oneTimePreKeys.length).toBeGreaterThanOrEqual(ONE_TIME_PREKEY_LOW_WATER);
    const stored = w.server.accounts['bob']?.devices['1']?.preKeys;
    expect(stored?.oneTimePreKeys.length).toBeGreaterThanOrEqual(ONE_TIME_PREKEY_LOW_WATER);
    expect(stored?.kyberPreKeys.length).toBeGreaterThanOrEqual(KYBER_PREKEY_LOW_WATER);
  });
});
