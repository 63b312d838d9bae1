/**
 * The revocation invariant under the rollback fault (simulator/invariants.ts): a device restored to
 * an older snapshot has forgotten the removals it learned after it, so encrypting to such a device is
 * what it must do until it learns again; a removal it knew at the snapshot still counts. Found by
 * swarm seeds 46 and 65 of `default` (simulator/regressions/corpus.json).
 */
import { describe, expect, it } from 'vitest';
import { nodeProvider } from '../spec/crypto/node.js';
import type { ServerRequest } from '../spec/server-api.js';
import type { Violation } from './api.js';
import { Checker } from './invariants.js';

/** A send of one copy to each of `deviceIds` of `bob` (the bytes are never parsed as a session). */
function sendTo(deviceIds: readonly number[]): ServerRequest {
  return {
    kind: 'send',
    sender: { userId: 'alice', deviceId: 1 },
    messageId: 'ab'.repeat(16),
    recipient: 'bob',
    messages: deviceIds.map((deviceId) => ({
      deviceId,
      registrationId: 1,
      type: 'whisper' as const,
      bytes: Uint8Array.of(0),
    })),
  };
}

describe('revocation under rollback', () => {
  it('a rolled-back device may encrypt to a device whose removal it learned after the snapshot, not to one it knew of then [WP-LIFE-04]', () => {
    const found: Violation[] = [];
    const checker = new Checker(nodeProvider, (v) => found.push(v));
    let requestId = 0;
    const emit = (t: number, deviceIds: readonly number[]): void => {
      checker.at(t, t);
      checker.requestEmitted('alice/1', ++requestId, sendTo(deviceIds));
    };
    checker.at(100, 1);
    checker.deviceListChanged('alice/1', 'bob', [], [3]);
    checker.at(300, 2);
    checker.deviceListChanged('alice/1', 'bob', [], [2]);
    emit(400, [1, 2]);
    expect(found.map((v) => v.property)).toEqual(['revocation']);
    // Restored to the state of t=200: device 2's removal is forgotten, device 3's is not.
    checker.rolledBack('alice/1', 200);
    emit(500, [1, 2]);
    expect(found).toHaveLength(1);
    emit(600, [1, 3]);
    expect(found.map((v) => v.message)).toEqual([
      'alice/1 encrypted to bob.2 after learning it was removed',
      'alice/1 encrypted to bob.3 after learning it was removed',
    ]);
    // Learning it again counts again.
    checker.at(700, 3);
    checker.deviceListChanged('alice/1', 'bob', [], [2]);
    emit(800, [1, 2]);
    expect(found).toHaveLength(3);
  });
});

describe('one-time prekeys handed out once', () => {
  /** A 33-byte key whose last bytes are `n` (the checker names keys by their last 8 bytes). */
  const key = (n: number): Uint8Array => Uint8Array.from({ length: 33 }, (_, i) => (i < 25 ? 0 : n + i));
  const registration = (lastResort: number): ServerRequest => ({
    kind: 'register-device',
    device: { userId: 'bob', deviceId: 2 },
    identityKey: key(90),
    registrationId: 7,
    proof: new Uint8Array(64),
    preKeys: {
      signedPreKey: { keyId: 1, publicKey: key(91), signature: new Uint8Array(64) },
      oneTimePreKeys: [],
      kyberPreKeys: [
        { keyId: 9, publicKey: key(lastResort), signature: new Uint8Array(64), lastResort: true },
      ],
    },
  });
  const bundle = (preKey: number | null, kyber: number) => ({
    registrationId: 7,
    deviceId: 2,
    identityKey: key(90),
    signedPreKeyId: 1,
    signedPreKey: key(91),
    signedPreKeySignature: new Uint8Array(64),
    preKeyId: preKey,
    preKey: preKey === null ? null : key(preKey),
    kyberPreKeyId: kyber,
    kyberPreKey: key(kyber),
    kyberPreKeySignature: new Uint8Array(64),
  });
  const fetchBundle = (checker: Checker, preKey: number | null, kyber: number): void =>
    checker.serverStep(
      'alice/1',
      { kind: 'get-bundles', userId: 'bob', deviceIds: [2] },
      { kind: 'bundles', bundles: [bundle(preKey, kyber)] },
      0,
      0,
    );

  it('fires when a one-time EC or Kyber prekey comes out twice, never for the last resort [WP-SRV-13] [WP-SRV-14] [WP-SRV-29]', () => {
    const found: Violation[] = [];
    const checker = new Checker(nodeProvider, (v) => found.push(v));
    checker.serverStep('bob/2', registration(50), { kind: 'ok' }, 0, 0);
    fetchBundle(checker, 10, 20);
    fetchBundle(checker, 11, 50);
    fetchBundle(checker, null, 50);
    expect(found).toEqual([]);
    fetchBundle(checker, 10, 21);
    fetchBundle(checker, 12, 20);
    expect(found.map((v) => [v.property, v.message])).toEqual([
      ['one-time-prekey-once', "the server handed out bob.2's one-time prekey 10 a second time"],
      ['one-time-prekey-once', "the server handed out bob.2's one-time Kyber prekey 20 a second time"],
    ]);
  });

  it("counts, without a violation, a key handed out again after its device's rollback [WP-SRV-29]", () => {
    const found: Violation[] = [];
    const checker = new Checker(nodeProvider, (v) => found.push(v));
    checker.serverStep('bob/2', registration(50), { kind: 'ok' }, 0, 0);
    fetchBundle(checker, 10, 20);
    checker.rolledBack('bob/2', 0);
    fetchBundle(checker, 10, 20);
    expect(found).toEqual([]);
    expect(checker.snapshotCounters()['prekey-rehanded-after-rollback']).toBe(2);
  });
});
