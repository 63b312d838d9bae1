/**
 * Signed prekey rotation (WP-LIFE-07) and the grace period of retired keys (WP-LIFE-08) in the
 * reference implementation, told as stories between two accounts and an honest server: what a
 * rotation draws and uploads, when an older key is retired and deleted, what happens to a PreKey
 * message made from a bundle fetched before the rotation, and the bounds of the key store.
 */
import { describe, expect, it } from 'vitest';
import { MAX_SIGNED_PREKEYS, SIGNED_PREKEY_GRACE_PERIOD } from '../../spec/constants.js';
import { nodeProvider } from '../../spec/crypto/node.js';
import { DRAWS } from '../../spec/draws.js';
import { UsageError } from '../../spec/errors.js';
import { seededRng } from '../../spec/rng.js';
import type { ServerRequest } from '../../spec/server-api.js';
import { createProvisioningDevice, deviceStep, type DeviceInput } from '../../impl/device.js';
import { recordingRng } from '../conformance/support.js';
import {
  addContact,
  advance,
  answerHonestly,
  createAccount,
  createWorld,
  device,
  holdRequests,
  input,
  outputsOf,
  pendingOf,
  respond,
  run,
  send,
  sendQueued,
  sync,
  texts,
  type World,
} from '../support/world.js';

const ROTATE: DeviceInput = { kind: 'timer.rotate-signed-prekey' };

function pair(seed: string, env?: World['env']): World {
  const w = createWorld(seed, env);
  createAccount(w, 'alice', 'alice');
  createAccount(w, 'bob', 'bob');
  addContact(w, 'alice', 'bob');
  addContact(w, 'bob', 'alice');
  return w;
}

function signedIds(w: World, name: string): number[] {
  return device(w, name).prekeys.signedPreKeys.map((k) => k.keyId);
}

/** The signed prekey id of the bundle the honest server would hand out for bob.1 now. */
function servedSignedPreKeyId(w: World): number | undefined {
  const response = answerHonestly(w, 'probe', { kind: 'get-bundles', userId: 'bob', deviceIds: [1] });
  return response.kind === 'bundles' ? response.bundles[0]?.signedPreKeyId : undefined;
}

/** Alice encrypts a first message to bob from the bundle the server hands out now, and holds it. */
function holdFirstMessage(w: World, text: string): { requestId: number; request: ServerRequest } {
  const release = holdRequests(w, 'alice', 'send');
  sendQueued(w, 'alice', ['bob'], text);
  run(w);
  release();
  const [held] = pendingOf(w, 'alice', 'send');
  if (held === undefined) throw new Error('no held send');
  return { requestId: held.requestId, request: held.request };
}

describe('signed prekey rotation', () => {
  it('makes the next signed prekey when the timer fires and uploads it alone, drawing as spec/draws.ts [WP-LIFE-07]', () => {
    const rng = recordingRng(seededRng('rotation/draws'));
    const w = pair('rotation/draws', { crypto: nodeProvider, rng });
    rng.take();
    const outputs = input(w, 'bob', ROTATE);
    expect(rng.take()).toEqual(DRAWS.rotateSignedPreKey.map((d) => d.bytes));
    expect(signedIds(w, 'bob')).toEqual([1, 2]);
    const requests = outputs.flatMap((o) => (o.kind === 'request' ? [o.request] : []));
    expect(requests).toHaveLength(1);
    const [upload] = requests;
    if (upload?.kind !== 'upload-prekeys') throw new Error('no upload');
    const newest = device(w, 'bob').prekeys.signedPreKeys[1];
    expect(upload.preKeys.signedPreKey.keyId).toBe(2);
    expect(upload.preKeys.signedPreKey.publicKey).toEqual(newest?.keyPair.publicKey);
    expect(upload.preKeys.oneTimePreKeys).toEqual([]);
    expect(upload.preKeys.kyberPreKeys.map((k) => k.lastResort)).toEqual([true]);
  });

  it('the server hands out the new signed prekey once the upload lands, and new sessions use it [WP-LIFE-07] [WP-SRV-09]', () => {
    const w = pair('rotation/served');
    expect(servedSignedPreKeyId(w)).toBe(1);
    input(w, 'bob', ROTATE);
    expect(servedSignedPreKeyId(w)).toBe(1);
    run(w);
    expect(servedSignedPreKeyId(w)).toBe(2);
    send(w, 'alice', ['bob'], 'after the rotation');
    sync(w);
    expect(texts(w, 'bob')).toEqual(['after the rotation']);
    expect(outputsOf(w, 'bob', 'undecryptable')).toEqual([]);
  });

  it('waits for the next timer while a prekey upload is unanswered [WP-LIFE-07]', () => {
    const w = pair('rotation/in-flight');
    const release = holdRequests(w, 'bob', 'upload-prekeys');
    input(w, 'bob', ROTATE);
    run(w);
    const second = input(w, 'bob', ROTATE);
    expect(second).toEqual([]);
    expect(signedIds(w, 'bob')).toEqual([1, 2]);
    release();
    const [pending] = pendingOf(w, 'bob', 'upload-prekeys');
    if (pending === undefined) throw new Error('no pending upload');
    respond(w, 'bob', pending.requestId, answerHonestly(w, 'bob', pending.request));
    input(w, 'bob', ROTATE);
    run(w);
    expect(signedIds(w, 'bob')).toEqual([1, 2, 3]);
    expect(servedSignedPreKeyId(w)).toBe(3);
  });

  it('keeps at most MAX_SIGNED_PREKEYS signed prekeys, deleting the oldest first [WP-LIFE-07]', () => {
    const w = pair('rotation/cap');
    for (let i = 0; i < MAX_SIGNED_PREKEYS; i++) {
      input(w, 'bob', ROTATE);
      run(w);
    }
    const ids = signedIds(w, 'bob');
    expect(ids).toHaveLength(MAX_SIGNED_PREKEYS);
    expect(ids[0]).toBe(2);
    expect(ids.at(-1)).toBe(MAX_SIGNED_PREKEYS + 1);
    expect(device(w, 'bob').retiredSignedPreKeys.map((r) => r.keyId)).toEqual(ids.slice(0, -1));
  });

  it('does nothing on a device that is not linked, and refuses a grace period that is not a non-negative integer [WP-LIFE-07]', () => {
    const env = { crypto: nodeProvider, rng: seededRng('rotation/unlinked') };
    const { state } = createProvisioningDevice(env, 0);
    const result = deviceStep(env, state, ROTATE, 10);
    expect(result.outputs).toEqual([]);
    expect(result.state).toBe(state);
    expect(() => deviceStep(env, state, { ...ROTATE, gracePeriod: -1 }, 10)).toThrow(UsageError);
    expect(() => deviceStep(env, state, { ...ROTATE, gracePeriod: 1.5 }, 10)).toThrow(UsageError);
  });
});

describe('grace period of a retired signed prekey', () => {
  it('retires older keys only when the server confirms the upload [WP-LIFE-08]', () => {
    const w = pair('rotation/retire');
    const release = holdRequests(w, 'bob', 'upload-prekeys');
    input(w, 'bob', ROTATE);
    run(w);
    release();
    expect(device(w, 'bob').retiredSignedPreKeys).toEqual([]);
    const [pending] = pendingOf(w, 'bob', 'upload-prekeys');
    if (pending === undefined) throw new Error('no pending upload');
    advance(w, 500);
    // A refused upload retires nothing: the server may still hand out the older key.
    respond(w, 'bob', pending.requestId, {
      kind: 'error',
      code: 'SERVER_MALFORMED_REQUEST',
      rule: 'WP-SRV-01',
      message: 'refused',
    });
    expect(device(w, 'bob').retiredSignedPreKeys).toEqual([]);
    input(w, 'bob', ROTATE);
    run(w);
    expect(device(w, 'bob').retiredSignedPreKeys).toEqual([
      { keyId: 1, retiredAt: w.now },
      { keyId: 2, retiredAt: w.now },
    ]);
  });

  it('a PreKey message made from a bundle fetched before the rotation decrypts within the grace period [WP-LIFE-08]', () => {
    const w = pair('rotation/within-grace');
    const held = holdFirstMessage(w, 'made before the rotation');
    input(w, 'bob', ROTATE);
    run(w);
    advance(w, SIGNED_PREKEY_GRACE_PERIOD - 1);
    input(w, 'bob', ROTATE);
    run(w);
    expect(signedIds(w, 'bob')).toEqual([1, 2, 3]);
    respond(w, 'alice', held.requestId, answerHonestly(w, 'alice', held.request));
    sync(w);
    expect(texts(w, 'bob')).toEqual(['made before the rotation']);
    expect(outputsOf(w, 'bob', 'undecryptable')).toEqual([]);
  });

  it('deletes a retired key when its grace period has passed; a PreKey message naming it is refused and resent on a new session [WP-LIFE-08] [WP-PQXDH-05]', () => {
    const w = pair('rotation/expired');
    const held = holdFirstMessage(w, 'made before the rotation');
    input(w, 'bob', ROTATE);
    run(w);
    advance(w, SIGNED_PREKEY_GRACE_PERIOD);
    input(w, 'bob', ROTATE);
    run(w);
    expect(signedIds(w, 'bob')).toEqual([2, 3]);
    expect(device(w, 'bob').retiredSignedPreKeys.map((r) => r.keyId)).toEqual([2]);
    respond(w, 'alice', held.requestId, answerHonestly(w, 'alice', held.request));
    sync(w);
    expect(outputsOf(w, 'bob', 'undecryptable').map((o) => o.error.code)).toEqual(['UNKNOWN_SIGNED_PREKEY']);
    // The retry request makes alice resend on a session from a fresh bundle: shown once.
    expect(texts(w, 'bob')).toEqual(['made before the rotation']);
    expect(outputsOf(w, 'alice', 'resent')).toHaveLength(1);
  });

  it('a caller-supplied grace period applies to every retired key at that timer [WP-LIFE-08]', () => {
    const w = pair('rotation/short-grace');
    input(w, 'bob', ROTATE);
    run(w);
    advance(w, 999);
    input(w, 'bob', { ...ROTATE, gracePeriod: 1_000 });
    run(w);
    expect(signedIds(w, 'bob')).toEqual([1, 2, 3]);
    advance(w, 1);
    input(w, 'bob', { ...ROTATE, gracePeriod: 1_000 });
    run(w);
    expect(signedIds(w, 'bob')).toEqual([2, 3, 4]);
    advance(w, 5_000);
    input(w, 'bob', { ...ROTATE, gracePeriod: 0 });
    run(w);
    expect(signedIds(w, 'bob')).toEqual([4, 5]);
  });
});
