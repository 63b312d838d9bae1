/**
 * Scenarios for the hardened switches (spec/security-mode.ts), built on a twin world
 * (test/conformance/device-twin.ts) so both engines run them step by step: the replay of an initial
 * message without a one-time prekey (WP-PQXDH-13), a device's ratchet state forked by restoring an
 * older copy (WP-SES-20), and a session revived from a stolen copy after the devices healed on a
 * newer one (WP-SES-18/19, Cremers–Jacomme–Naska 2023). Each returns what the receiving device
 * reported; the tests assert the outcome per mode. device-quick.test.ts runs them in both modes,
 * device-paths.test.ts for transition coverage.
 * @module
 */
import { equalBytes } from '../../spec/bytes.js';
import type { Envelope } from '../../spec/server-api.js';
import { parsePreKeySignalMessage } from '../../spec/wire.js';
import type { DeviceOutput } from '../../impl/device.js';
import { getDeviceRecord } from '../../impl/sesame.js';
import type { TwinWorld } from './device-twin.js';

/** A fresh twin world's two users, each with the other as a contact. */
export function pair(w: TwinWorld): void {
  w.createAccount('alice', 'alice');
  w.createAccount('bob', 'bob');
  w.addContact('alice', 'bob');
  w.addContact('bob', 'alice');
}

/** Outputs of `name` from index `from` on (impl's; the model's are compared equal step by step). */
export function outputsSince(w: TwinWorld, name: string, from: number): readonly DeviceOutput[] {
  return w.outputsOf(name).impl.slice(from);
}

/** `name` fetches and gets the honest envelopes, each passed through `edit` (a hostile server). */
export function fetchEdited(
  w: TwinWorld,
  name: string,
  edit: (envelopes: readonly Envelope[]) => readonly Envelope[],
): readonly Envelope[] {
  w.input(name, { kind: 'net.fetch' });
  const held = w.takeRequest(name, 'fetch');
  const honest = w.answerHonestly(held.request);
  if (honest.kind !== 'envelopes') throw new Error(`fetch of ${name} answered ${honest.kind}`);
  w.respond(name, held.requestId, { kind: 'envelopes', envelopes: edit(honest.envelopes) });
  return honest.envelopes;
}

/**
 * WP-PQXDH-13: Alice opens a session with a bundle that has no one-time prekey (the server hands out
 * the last-resort Kyber prekey too, as it does once one-time keys run out); Bob accepts the PreKey
 * message. A `stale-devices` refusal of Bob's next send then replaces Bob's record of Alice's
 * device, so the session is gone; the server replays the captured PreKey message. Returns Bob's
 * outputs from the replay on, and whether Bob's record holds the replayed session again.
 */
export function replayInitialMessage(w: TwinWorld): {
  readonly outputs: readonly DeviceOutput[];
  readonly sessionRecreated: boolean;
} {
  pair(w);
  w.sendQueued('alice', ['bob'], 'first, without a one-time prekey');
  w.runUntilRequest('alice', 'get-bundles');
  const held = w.takeRequest('alice', 'get-bundles');
  const honest = w.answerHonestly(held.request);
  if (honest.kind !== 'bundles') throw new Error('no bundles');
  const lastResort = w.implState('bob').prekeys.kyberPreKeys.find((k) => k.lastResort);
  if (lastResort === undefined) throw new Error('bob has no last-resort Kyber prekey');
  const stripped = honest.bundles.map((b) => ({
    ...b,
    preKeyId: null,
    preKey: null,
    kyberPreKeyId: lastResort.keyId,
    kyberPreKey: lastResort.publicKey,
    kyberPreKeySignature: lastResort.signature,
  }));
  w.respond('alice', held.requestId, { kind: 'bundles', bundles: stripped });
  let captured: Envelope | undefined;
  fetchEdited(w, 'bob', (envelopes) => {
    captured = envelopes.find((e) => e.sender.userId === 'alice' && e.type === 'prekey');
    return envelopes;
  });
  if (captured === undefined) throw new Error('no PreKey message from alice');
  w.sync(2);
  // Bob's next send is refused as if Alice's device had re-registered: his record of it is replaced.
  w.sendQueued('bob', ['alice'], 'answer');
  w.runUntilRequest('bob', 'send');
  const send = w.takeRequest('bob', 'send');
  const list = w.answerHonestly({ kind: 'get-device-list', userId: 'alice' });
  if (list.kind !== 'device-list') throw new Error('no device list');
  w.respond('bob', send.requestId, {
    kind: 'refused',
    refusal: { kind: 'stale-devices', stale: [1], deviceList: list.deviceList },
  });
  w.sync(2);
  const mark = w.outputsOf('bob').impl.length;
  const replay: Envelope = { ...captured, envelopeId: captured.envelopeId + 10_000 };
  fetchEdited(w, 'bob', (envelopes) => [...envelopes, replay]);
  w.sync(2);
  w.compareAll('after the replay');
  const replayed = parsePreKeySignalMessage(captured.bytes);
  if (!replayed.ok) throw new Error('captured message does not parse');
  const record = getDeviceRecord(w.implState('bob').sesame, 'alice', 1)?.sessions;
  const sessions = record === undefined ? [] : [record.current, ...record.archived];
  return {
    outputs: outputsSince(w, 'bob', mark),
    sessionRecreated: sessions.some((s) => s !== null && equalBytes(s.aliceBaseKey, replayed.value.baseKey)),
  };
}

/**
 * WP-SES-20: Alice's state is copied (a backup), Alice goes on — a message, Bob's reply, a message
 * on her next chain — and then the copy is restored and sends twice on the chain Alice had left:
 * the first reuses a message key (a duplicate for Bob), the second goes beyond what Alice's next
 * chain announced. Returns Bob's outputs from the restore on.
 */
export function forkByRestoredCopy(w: TwinWorld): readonly DeviceOutput[] {
  pair(w);
  w.send('alice', ['bob'], 'a1');
  w.sync(2);
  w.send('bob', ['alice'], 'b1');
  w.sync(2);
  w.send('alice', ['bob'], 'a2');
  w.sync(2);
  const copy = w.backup('alice');
  w.send('alice', ['bob'], 'a3');
  w.sync(2);
  w.send('bob', ['alice'], 'b2');
  w.sync(2);
  w.send('alice', ['bob'], 'a4 on the next chain');
  w.sync(2);
  const mark = w.outputsOf('bob').impl.length;
  w.restore('alice', copy);
  w.send('alice', ['bob'], 'c1 reuses a3');
  w.send('alice', ['bob'], 'c2 beyond');
  w.sync(3);
  w.compareAll('after the fork');
  return outputsSince(w, 'bob', mark);
}

/**
 * WP-SES-18/19 (CJN23): Alice and Bob talk on session 1; Alice's state is copied right after she
 * received Bob's reply (her next sending ratchet key not yet used). A tampered message makes Bob ask
 * for a resend, which Alice sends on a new session 2; they talk on it until it completed a round
 * trip at both. Then the copy is restored and sends on session 1: a new receiving chain for Bob.
 * Returns Bob's outputs from the restore on, and the texts Bob showed.
 */
export function reviveOldSession(w: TwinWorld): {
  readonly outputs: readonly DeviceOutput[];
  readonly texts: readonly string[];
  /** Bob's active session with Alice's device is session 1 again. */
  readonly revived: boolean;
} {
  pair(w);
  w.send('alice', ['bob'], 's1 hello');
  w.sync(2);
  const session1 = activeBaseKey(w, 'bob');
  w.send('bob', ['alice'], 's1 reply');
  w.sync(2);
  const stolen = w.backup('alice');
  w.send('alice', ['bob'], 'tampered in transit');
  fetchEdited(w, 'bob', (envelopes) =>
    envelopes.map((e) => {
      if (e.sender.userId !== 'alice') return e;
      const bytes = Uint8Array.from(e.bytes);
      bytes[bytes.length - 1] = (bytes[bytes.length - 1] ?? 0) ^ 0x01;
      return { ...e, bytes };
    }),
  );
  w.sync(3);
  w.send('bob', ['alice'], 's2 reply');
  w.sync(2);
  w.send('alice', ['bob'], 's2 again');
  w.sync(2);
  w.send('bob', ['alice'], 's2 third');
  w.sync(2);
  const mark = w.outputsOf('bob').impl.length;
  w.restore('alice', stolen);
  w.send('alice', ['bob'], 'from the stolen session');
  w.sync(3);
  w.compareAll('after the revival attempt');
  const active = activeBaseKey(w, 'bob');
  return {
    outputs: outputsSince(w, 'bob', mark),
    texts: w.texts('bob'),
    revived: active !== null && session1 !== null && equalBytes(active, session1),
  };
}

/** The base key of `name`'s active session with Alice's device 1 (impl's state). */
function activeBaseKey(w: TwinWorld, name: string): Uint8Array | null {
  return getDeviceRecord(w.implState(name).sesame, 'alice', 1)?.sessions.current?.aliceBaseKey ?? null;
}
