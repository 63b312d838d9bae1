/**
 * Transition coverage of the device machine (model/device.ts), checked against impl/device.ts.
 *
 * Targeted scenarios, each a sequence of device inputs run in a twin world
 * (test/conformance/device-twin.ts: impl's devices and the model's device machines, each world
 * with its own honest impl/server.ts and the same seeded random stream). After every device step
 * both engines must agree on the outputs, the sizes of the random draws and the abstract device
 * state, exactly as in device-quick.test.ts. Honest traffic is mixed with hostile inputs: crafted
 * server answers (refusals, errors, mailbox full, wrong-identity bundles, garbage provisioning),
 * forged envelopes (own address, unlisted devices, garbage ciphertexts, relabelled senders, and
 * authenticated messages carrying garbage, repeated or foreign sync payloads, built by
 * test/conformance/device-paths-support.ts), duplicate deliveries, lost acknowledgments and an
 * exhausted device-id space. The model's actors report every transition that fires (xstate
 * microsteps); finally every transition of the machine definition (tools/model-diagrams.ts
 * `listTransitions`, `always` branches included) must have fired, except those listed in
 * {@link DEVICE_UNREACHABLE} with the reason, and none of those may fire.
 */
import { describe, expect, it } from 'vitest';
import { MAX_SEND_ATTEMPTS } from '../../spec/constants.js';
import { nodeProvider } from '../../spec/crypto/node.js';
import { encodePayload } from '../../spec/payload.js';
import { encodeRetryRequest } from '../../spec/retry-request.js';
import { seededRng } from '../../spec/rng.js';
import type { Envelope, ServerResponse } from '../../spec/server-api.js';
import { createDeviceMachine } from '../../model/device.js';
import { listTransitions } from '../../tools/model-diagrams.js';
import { CoverageTwin, fetchWith, forgeEnvelopes } from './device-paths-support.js';
import { forkByRestoredCopy, replayInitialMessage, reviveOldSession } from './hardened-scenarios.js';
import { linkBeforeReset, restockAfterRestore } from './recovery-scenarios.js';

/**
 * Transitions no input sequence can fire, each with the reason. The test fails if one of them
 * fires (then it is reachable and belongs in the coverage) or if any other transition stays
 * uncovered.
 */
const DEVICE_UNREACHABLE: Readonly<Record<string, string>> = {
  'device net.response #1':
    'answerWhileNotLinked at the root is reached only in `revoked` (every other resting state handles net.response itself), and a revoked device has nothing pending: becomeRevoked clears `pending`, and in `revoked` no input issues a request (user actions are refused, resendUnanswered and acceptAccountKeyChange return early, net.fetch is not handled)',
  'device.provisioning.waiting net.response #2':
    'answerWhileNotLinked while waiting to be linked: the only request a provisioning device issues is provision-get (pollRelay), whose answer the branch before takes',
  'device.registering net.response #3':
    'answerWhileNotLinked while registering: a registering device has only its register request pending (registerAccount / registerLinkedDevice; readProvisionMessage took the provision-get, at most one poll is pending at a time, and user actions and acceptAccountKeyChange issue nothing before `linked`), whose answer the branches before take',
  'device.linked.idle net.response #4':
    'ignoreOrphanAnswer for a send: an outbox entry in stage `sending` leaves the outbox only when its send answer is taken (completeAcceptedSend, failEntry in an answer action) or with every pending request (becomeRevoked); failEntriesFor spares `sending` entries and the other removals (refused list, failed upload, outbox full) touch only need-list / waiting-blob / new entries',
  'device.linked.idle net.response #12':
    'ignoreOrphanAnswer for bundles: a `need-bundles` entry leaves the outbox only with its answer or with every pending request (becomeRevoked); failEntriesFor (a first list that does not match the contact link) needs a trust entry with no account key, and such a user has no accepted list, so none of its entries can be waiting for bundles (an account key, once pinned, is only ever replaced by another)',
};

const serverError = (code: 'SERVER_UNKNOWN_DEVICE' | 'SERVER_MALFORMED_REQUEST'): ServerResponse => ({
  kind: 'error',
  code,
  rule: code === 'SERVER_UNKNOWN_DEVICE' ? 'WP-SRV-12' : 'WP-SRV-01',
  message: 'crafted',
});

const hexId = (n: number): string => n.toString(16).padStart(32, '0');

/** A forged envelope that is no ciphertext at all. */
function garbageEnvelope(
  w: CoverageTwin,
  envelopeId: number,
  sender: { userId: string; deviceId: number },
  type: Envelope['type'],
  bytes: Uint8Array = new Uint8Array(17).fill(9),
): Envelope {
  return { envelopeId, messageId: hexId(envelopeId), sender, type, bytes, serverTimestamp: w.now };
}

function twoUsers(fired: Set<string>, seed: string, aliceExtra = 0, bobExtra = 0): CoverageTwin {
  const w = new CoverageTwin(seed, fired);
  w.createAccount('alice', 'alice');
  for (let i = 0; i < aliceExtra; i++) w.linkDevice('alice', `alice-${i + 2}`);
  w.createAccount('bob', 'bob');
  for (let i = 0; i < bobExtra; i++) w.linkDevice('bob', `bob-${i + 2}`);
  w.addContact('alice', 'bob');
  w.addContact('bob', 'alice');
  return w;
}

type Scenario = (fired: Set<string>) => CoverageTwin;

const SCENARIOS: Readonly<Record<string, Scenario>> = {
  /** Provisioning, registration and revocation, with everything a device outside `linked` refuses. */
  lifecycle(fired) {
    const w = new CoverageTwin('device-paths/lifecycle', fired);
    w.createAccount('alice', 'alice');
    // A second registration of the same account is refused; the device stays registering.
    w.createAccount('dup', 'alice');
    w.input('dup', { kind: 'net.response', requestId: 99, response: { kind: 'ok' } }, 'stray answer');
    w.input('dup', { kind: 'user.send', recipients: ['alice'], content: { kind: 'text', text: 'no' } });
    // A device waiting to be linked: user actions refused, the relay polled once at a time.
    w.adoptProvisioning('new');
    const code = {
      relayAddress: 'AAAAAAAAAAAAAAAAAAAAAA',
      ephemeralPublicKey: new Uint8Array(33),
      identityKey: new Uint8Array(33),
      registrationId: 1,
    };
    w.input('new', { kind: 'user.send', recipients: ['alice'], content: { kind: 'text', text: 'early' } });
    w.input('new', { kind: 'user.add-contact', link: w.contactLinkOf('alice') });
    w.input('new', {
      kind: 'user.download',
      pointer: {
        blobId: 'b'.repeat(64),
        key: new Uint8Array(64),
        digest: new Uint8Array(32),
        size: 1,
        contentType: 'x/y',
      },
    });
    w.input('new', { kind: 'user.link-device', code });
    w.input('new', { kind: 'user.revoke-device', deviceId: 2 });
    w.input('new', { kind: 'user.acknowledge-key-change', userId: 'alice' });
    w.input('new', { kind: 'timer.poll-provisioning' });
    w.input('new', { kind: 'timer.poll-provisioning' });
    // The empty relay answers nothing; a dropped poll's late answer is ignored.
    w.run();
    w.input('new', { kind: 'timer.poll-provisioning' });
    w.input('new', { kind: 'timer.resend' });
    const late = w.takeRequest('new', 'provision-get');
    w.input('new', { kind: 'timer.poll-provisioning' });
    w.respond('new', late.requestId, { kind: 'provision', bytes: null }, false);
    // Garbage from the relay is refused; the device keeps waiting.
    const poll = w.takeRequest('new', 'provision-get');
    w.respond('new', poll.requestId, { kind: 'provision', bytes: new Uint8Array(120).fill(3) });
    w.input('new', { kind: 'net.response', requestId: 77, response: { kind: 'ok' } }, 'stray answer');
    // A full account (MAX_DEVICES_PER_ACCOUNT) refuses a further link, typed [WP-LIFE-02].
    const full = new CoverageTwin('device-paths/full-account', fired);
    full.createAccount('carol', 'carol');
    for (let i = 2; i <= 16; i++) full.linkDevice('carol', `carol-${i}`);
    full.input('carol', { kind: 'user.link-device', code });
    const refusals = full
      .outputsOf('carol')
      .impl.filter((o) => o.kind === 'error' && o.error.code === 'LIFE_NO_FREE_DEVICE_ID');
    if (refusals.length !== 1) throw new Error('a full account must refuse a 17th device, typed');
    // A real link, then revocation.
    w.linkDevice('alice', 'alice-2');
    w.linkDevice('alice', 'alice-3');
    w.input('alice-2', { kind: 'user.link-device', code });
    w.input('alice-2', { kind: 'user.revoke-device', deviceId: 3 });
    w.input('alice', { kind: 'user.revoke-device', deviceId: 9 });
    w.input('alice', { kind: 'user.revoke-device', deviceId: 1 });
    w.input('alice', { kind: 'net.fetch' });
    w.input('alice', { kind: 'net.fetch' });
    w.input('alice', { kind: 'timer.poll-provisioning' });
    w.run();
    w.input('alice', { kind: 'user.revoke-device', deviceId: 2 });
    w.run();
    // alice-2 learns it by a refused fetch; a revoked device refuses everything, answers are stray.
    w.input('alice-2', { kind: 'net.fetch' });
    w.deliverOne('duplicate');
    w.run();
    w.input('alice-2', { kind: 'user.send', recipients: ['alice'], content: { kind: 'text', text: 'x' } });
    w.input('alice-2', { kind: 'timer.resend' });
    w.input('alice-2', { kind: 'net.response', requestId: 1, response: { kind: 'ok' } }, 'stray answer');
    // alice-3 learns its revocation from its own account's list.
    w.input('alice', { kind: 'user.revoke-device', deviceId: 3 });
    w.run();
    w.input('alice-3', { kind: 'user.add-contact', link: w.contactLinkOf('alice') });
    w.run();
    w.compareAll('after lifecycle');
    return w;
  },

  /** Conversations, attachments, lost acknowledgments and the send answers a hostile server gives. */
  conversation(fired) {
    const w = twoUsers(fired, 'device-paths/conversation', 1, 0);
    w.send('alice', ['bob'], 'hello');
    w.sync();
    w.send('bob', ['alice'], 'hi');
    w.sync();
    // Attachments: uploaded once, downloaded and checked.
    w.input('alice', {
      kind: 'user.send',
      recipients: ['bob'],
      content: {
        kind: 'attachment',
        bytes: new Uint8Array(300).fill(7),
        contentType: 'image/png',
        caption: 'c',
      },
    });
    w.run();
    w.sync();
    const delivered = w
      .outputsOf('bob')
      .impl.find((o) => o.kind === 'delivered' && o.payload.content.kind === 'attachment');
    if (delivered?.kind !== 'delivered' || delivered.payload.content.kind !== 'attachment')
      throw new Error('no pointer');
    w.input('bob', { kind: 'user.download', pointer: delivered.payload.content.pointer });
    w.run();
    // A second fetch while one is in flight is not sent.
    w.input('bob', { kind: 'net.fetch' });
    w.input('bob', { kind: 'net.fetch' });
    w.run();
    // Mailbox full, then the resend timer.
    w.sendQueued('alice', ['bob'], 'later');
    w.runUntilRequest('alice', 'send');
    w.respond('alice', w.takeRequest('alice', 'send').requestId, {
      kind: 'refused',
      refusal: { kind: 'mailbox-full', deviceIds: [1] },
    });
    w.input('alice', { kind: 'timer.resend' });
    w.run();
    // A server error fails a send.
    w.sendQueued('alice', ['bob'], 'server error');
    w.runUntilRequest('alice', 'send');
    w.respond('alice', w.takeRequest('alice', 'send').requestId, serverError('SERVER_MALFORMED_REQUEST'));
    // A refusal loop is bounded.
    w.sendQueued('alice', ['bob'], 'refused forever');
    for (let i = 0; i < MAX_SEND_ATTEMPTS; i++) {
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
    // A bundles error and a bundle with the wrong identity.
    w.linkDevice('bob', 'bob-2');
    w.sendQueued('alice', ['bob'], 'after bob links');
    w.runUntilRequest('alice', 'get-bundles');
    w.respond('alice', w.takeRequest('alice', 'get-bundles').requestId, serverError('SERVER_UNKNOWN_DEVICE'));
    w.sync();
    w.linkDevice('bob', 'bob-3');
    w.sendQueued('alice', ['bob'], 'to a forged bundle');
    w.runUntilRequest('alice', 'get-bundles');
    const heldBundles = w.takeRequest('alice', 'get-bundles');
    const honest = w.answerHonestly(heldBundles.request);
    if (honest.kind !== 'bundles') throw new Error('no bundles');
    w.respond('alice', heldBundles.requestId, {
      kind: 'bundles',
      bundles: honest.bundles.map((b) => ({
        ...b,
        identityKey: w.implState('alice').prekeys.identityKeyPair.publicKey,
      })),
    });
    w.sync();
    // Lost acknowledgment: the server redelivers, the ratchet drops the duplicate.
    w.send('alice', ['bob'], 'twice');
    w.input('bob', { kind: 'net.fetch' });
    w.runUntilRequest('bob', 'ack');
    w.takeRequest('bob', 'ack');
    w.run();
    w.input('bob', { kind: 'net.fetch' });
    w.run();
    // Forged envelopes: our own address, an unlisted device, a malformed retry request, garbage
    // from a listed device (which asks for a retry, refused by the server for its device set).
    fetchWith(
      w,
      'bob',
      [
        garbageEnvelope(w, 90_001, { userId: 'bob', deviceId: 1 }, 'whisper'),
        garbageEnvelope(w, 90_002, { userId: 'alice', deviceId: 77 }, 'whisper'),
        garbageEnvelope(w, 90_003, { userId: 'alice', deviceId: 1 }, 'retry-request'),
        garbageEnvelope(w, 90_004, { userId: 'alice', deviceId: 1 }, 'whisper'),
      ],
      false,
    );
    // The retry request bob queued for alice's device 1 is refused for its device set: the refusal's
    // list still names the device, so bob asks again (WP-XPORT-09) until the attempts run out.
    const list = w.answerHonestly({ kind: 'get-device-list', userId: 'alice' });
    if (list.kind !== 'device-list') throw new Error('no list');
    for (let i = 0; i < MAX_SEND_ATTEMPTS; i++) {
      w.runUntilRequest('bob', 'send');
      w.respond(
        'bob',
        w.takeRequest('bob', 'send').requestId,
        {
          kind: 'refused',
          refusal: { kind: 'mismatched-devices', missing: [], extra: [], deviceList: list.deviceList },
        },
        false,
      );
    }
    w.sync();
    // A forged retry request for a message bob already showed: alice resends it, bob drops it.
    const sent = w
      .outputsOf('alice')
      .impl.filter((o) => o.kind === 'request' && o.request.kind === 'send' && o.request.recipient === 'bob');
    const last = sent[sent.length - 1];
    if (last?.kind !== 'request' || last.request.kind !== 'send') throw new Error('no send');
    fetchWith(w, 'alice', [
      {
        ...garbageEnvelope(w, 91_001, { userId: 'bob', deviceId: 1 }, 'retry-request'),
        bytes: encodeRetryRequest(last.request.messageId),
      },
    ]);
    w.sync();
    // Stray answers to a linked device.
    w.input('bob', { kind: 'net.response', requestId: 9_999, response: { kind: 'ok' } }, 'stray answer');
    w.resendAll();
    w.sync();
    w.compareAll('after conversation');
    return w;
  },

  /** An account reset: a key change parks envelopes quietly until the user acknowledges it. */
  reset(fired) {
    const w = twoUsers(fired, 'device-paths/reset');
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
    return w;
  },

  /**
   * Authenticated messages a hostile client or server makes: a garbage payload, a payload shown
   * twice, a sync copy from another account, a message relabelled as another listed device's.
   */
  forged(fired) {
    const w = twoUsers(fired, 'device-paths/forged');
    w.createAccount('mallory', 'mallory');
    w.createAccount('carol', 'carol');
    w.addContact('carol', 'alice');
    const payload = (n: number, content: Parameters<typeof encodePayload>[0]['content']): Uint8Array =>
      encodePayload({ messageId: hexId(n), sentAt: w.now, content });
    const fromMallory = forgeEnvelopes(
      w,
      'mallory',
      { userId: 'bob', deviceId: 1 },
      [
        { plaintext: new Uint8Array([1, 2, 3]) },
        { plaintext: payload(1, { kind: 'text', text: 'once' }) },
        { plaintext: payload(1, { kind: 'text', text: 'once' }) },
        { plaintext: payload(2, { kind: 'sync', destination: 'bob', content: { kind: 'text', text: 'x' } }) },
      ],
      80_001,
    );
    // bob has no list for mallory: the envelopes park; a second fetch before the list skips them.
    fetchWith(w, 'bob', []);
    w.input('bob', { kind: 'net.fetch' });
    const fetch = w.takeRequest('bob', 'fetch');
    const honest = w.answerHonestly(fetch.request);
    if (honest.kind !== 'envelopes') throw new Error('no envelopes');
    w.respond(
      'bob',
      fetch.requestId,
      { kind: 'envelopes', envelopes: [...honest.envelopes, ...fromMallory] },
      false,
    );
    const list = w.takeRequest('bob', 'get-device-list');
    fetchWith(w, 'bob', fromMallory);
    w.respond('bob', list.requestId, w.answerHonestly(list.request));
    w.sync();
    // A message from mallory that the server says came from alice's device 1 (carol has alice's
    // list but no session with her): parked for the list, then refused.
    const relabelled = forgeEnvelopes(
      w,
      'mallory',
      { userId: 'carol', deviceId: 1 },
      [
        {
          plaintext: payload(3, { kind: 'text', text: 'i am alice' }),
          claimedSender: { userId: 'alice', deviceId: 1 },
        },
      ],
      81_001,
    );
    fetchWith(w, 'carol', relabelled);
    w.sync();
    const codes = (name: string): string[] =>
      w.outputsOf(name).impl.flatMap((o) => (o.kind === 'undecryptable' ? [o.error.code] : []));
    expect(codes('bob')).toContain('TRUST_UNKNOWN_SENDER_DEVICE');
    expect(codes('bob').filter((c) => c.startsWith('PAYLOAD_'))).toHaveLength(1);
    expect(w.texts('bob')).toContain('once');
    expect(w.outputsOf('bob').impl.filter((o) => o.kind === 'duplicate-dropped')).toHaveLength(1);
    expect(codes('carol')).toEqual(['TRUST_SENDER_IDENTITY_MISMATCH']);
    w.compareAll('after forgeries');
    return w;
  },

  /** A retry request that overtakes the answer to the send it names waits for that answer [WP-XPORT-07]. */
  overtaken(fired) {
    const w = twoUsers(fired, 'device-paths/overtaken');
    w.send('alice', ['bob'], 'hello');
    w.sync();
    w.sendQueued('alice', ['bob'], 'answer still on its way');
    w.runUntilRequest('alice', 'send');
    const held = w.takeRequest('alice', 'send');
    if (held.request.kind !== 'send') throw new Error('no send');
    const accepted = w.answerHonestly(held.request);
    const retry: Envelope = {
      ...garbageEnvelope(w, 92_001, { userId: 'bob', deviceId: 1 }, 'retry-request'),
      bytes: encodeRetryRequest(held.request.messageId),
    };
    fetchWith(w, 'alice', [retry]);
    w.respond('alice', held.requestId, accepted);
    fetchWith(w, 'alice', [retry]);
    w.sync();
    w.compareAll('after the overtaken answer');
    return w;
  },

  /** Signed prekey rotation: a timer with an upload in flight only deletes, otherwise it rotates [WP-LIFE-07] [WP-LIFE-08]. */
  rotation(fired) {
    const w = twoUsers(fired, 'device-paths/rotation');
    w.input('bob', { kind: 'timer.rotate-signed-prekey', gracePeriod: 1_000 });
    w.input('bob', { kind: 'timer.rotate-signed-prekey', gracePeriod: 1_000 });
    w.run();
    w.now += 1_000;
    w.input('bob', { kind: 'timer.rotate-signed-prekey', gracePeriod: 1_000 });
    w.run();
    w.send('alice', ['bob'], 'after two rotations');
    w.sync();
    w.compareAll('after rotations');
    return w;
  },

  /** Recovery: a restored device restocks its prekeys; a stale contact link waits for a new one [WP-LIFE-06] [WP-TRUST-01]. */
  recovery(fired) {
    const restock = restockAfterRestore(new CoverageTwin('device-paths/restock', fired));
    expect(restock.failures).toEqual(['UNKNOWN_KYBER_PREKEY']);
    const w = new CoverageTwin('device-paths/link-reset', fired);
    expect(linkBeforeReset(w).textsAfterNewLink).toEqual(['after my reset']);
    return w;
  },

  /** The hardened switches: a replayed initial message, a forked sender, a revived old session. */
  hardened(fired) {
    const replay = replayInitialMessage(new CoverageTwin('device-paths/replay', fired)).outputs;
    expect(
      replay.some((o) => o.kind === 'undecryptable' && o.error.code === 'INITIAL_MESSAGE_REPLAYED'),
    ).toBe(true);
    const fork = forkByRestoredCopy(new CoverageTwin('device-paths/fork', fired));
    expect(fork.some((o) => o.kind === 'clone-detected')).toBe(true);
    const w = new CoverageTwin('device-paths/revive', fired);
    expect(reviveOldSession(w).revived).toBe(false);
    return w;
  },
};

describe('path coverage: device machine against impl/device.ts', () => {
  it('every transition of the device machine fires in some scenario, and both engines agree on every step [WP-LIFE-01] [WP-XPORT-01] [WP-TRUST-05]', () => {
    const started = performance.now();
    const fired = new Set<string>();
    let steps = 0;
    const perScenario: string[] = [];
    for (const [name, scenario] of Object.entries(SCENARIOS)) {
      const t0 = performance.now();
      const before = fired.size;
      const w = scenario(fired);
      steps += w.steps;
      perScenario.push(
        `${name}: ${w.steps} steps, +${fired.size - before} (${Math.round(performance.now() - t0)} ms)`,
      );
    }
    const all = listTransitions(
      createDeviceMachine({ crypto: nodeProvider, rng: seededRng('definition') }),
    ).map((t) => t.key);
    const uncovered = all.filter((key) => !fired.has(key) && DEVICE_UNREACHABLE[key] === undefined);
    const unexpectedlyCovered = Object.keys(DEVICE_UNREACHABLE).filter((key) => fired.has(key));
    console.log(
      `device: ${all.length} transitions, ${fired.size} fired, ${Object.keys(DEVICE_UNREACHABLE).length} unreachable by construction; ` +
        `${Object.keys(SCENARIOS).length} scenarios, ${steps} steps compared on both engines in ${Math.round(performance.now() - started)} ms\n  ` +
        perScenario.join('\n  '),
    );
    expect(uncovered, 'transitions of the device machine that no scenario fired').toEqual([]);
    expect(unexpectedlyCovered, 'transitions listed as unreachable that fired').toEqual([]);
    expect(Object.keys(DEVICE_UNREACHABLE).filter((key) => !all.includes(key))).toEqual([]);
    expect(
      [...fired].filter((key) => !all.includes(key)),
      'fired keys the definition does not list',
    ).toEqual([]);
  });
});
