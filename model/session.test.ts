/**
 * The session machine (model/session.ts) driven as two devices: Alice the initiator and Bob the
 * responder, each one actor through `createSessionRunner`, with key material generated from spec/
 * only, in the order spec/draws.ts fixes. Scenario titles carry the rule IDs they pin.
 */
import { describe, expect, it } from 'vitest';
import type { BugName } from '../spec/bugs.js';
import type { PreKeyBundle } from '../spec/bundle.js';
import { computeMessageMac, encryptBody } from '../spec/cipher.js';
import {
  ARCHIVED_STATES_MAX_LENGTH,
  MAX_FORWARD_JUMPS,
  MAX_MESSAGE_KEYS,
  MAX_RECEIVER_CHAINS,
  MAX_UNACKNOWLEDGED_SESSION_AGE_MS,
} from '../spec/constants.js';
import { kemGenerateKeyPair } from '../spec/crypto/kyber.js';
import { nobleProvider } from '../spec/crypto/noble.js';
import { xeddsaSign } from '../spec/crypto/xeddsa.js';
import type { Env } from '../spec/env.js';
import { ERROR_RULES, type ErrorCode } from '../spec/errors.js';
import { deriveMessageKeys, kdfCk } from '../spec/kdf.js';
import { generateKeyPair, type KeyPair } from '../spec/keys.js';
import { seededRng, type Rng } from '../spec/rng.js';
import {
  encodeSignalMessage,
  parsePreKeySignalMessage,
  parseSignalMessage,
  type ParsedSignalMessage,
} from '../spec/wire.js';
import {
  buildRawPreKeySignalMessage,
  buildRawSignalMessage,
  preKeySignalMessageRawFields,
  signalMessageRawFields,
} from '../spec/wire-testing.js';
import {
  abstractSessionRecordOf,
  createSessionMachine,
  createSessionRunner,
  prekeysOf,
  RULES,
  sessionMachineJson,
  type MessageType,
  type SessionContext,
  type SessionEmitted,
  type SessionRunner,
  type StateNodeJson,
} from './session.js';
import type { PreKeyStoreData } from './session-data.js';

const c = nobleProvider;
const T0 = 1_700_000_000_000;
const utf8 = (text: string): Uint8Array => new TextEncoder().encode(text);
const text = (bytes: Uint8Array): string => new TextDecoder().decode(bytes);

// ---------------------------------------------------------------------------------------------
// Key material from spec/ only, drawn in spec/draws.ts order
// ---------------------------------------------------------------------------------------------

interface DeviceKeys {
  readonly identityKeyPair: KeyPair;
  readonly registrationId: number;
  readonly prekeys: PreKeyStoreData;
}

/** A recording Rng: every draw's size, in order. */
function recordingRng(seed: string): { readonly rng: Rng; readonly draws: number[] } {
  const inner = seededRng(seed);
  const draws: number[] = [];
  return {
    draws,
    rng: {
      randomBytes(length: number): Uint8Array {
        draws.push(length);
        return inner.randomBytes(length);
      },
    },
  };
}

/**
 * Identity (32), registration id (2), signed prekey 1 (32, 64), one-time prekeys 1..n (32 each),
 * one-time Kyber prekeys 1..m (64, 64 each) and a last-resort Kyber prekey m + 1.
 */
function generateDevice(
  rng: Rng,
  options: { oneTimePreKeys?: number; oneTimeKyberPreKeys?: number } = {},
): DeviceKeys {
  const identityKeyPair = generateKeyPair(c, rng);
  const idBytes = rng.randomBytes(2);
  const registrationId = ((((idBytes[0] ?? 0) << 8) | (idBytes[1] ?? 0)) % 16380) + 1;
  const signed = generateKeyPair(c, rng);
  const signedPreKeys = [
    {
      keyId: 1,
      keyPair: signed,
      signature: xeddsaSign(c, identityKeyPair.privateKey, signed.publicKey, rng.randomBytes(64)),
    },
  ];
  const oneTimePreKeys = [];
  for (let keyId = 1; keyId <= (options.oneTimePreKeys ?? 3); keyId++) {
    oneTimePreKeys.push({ keyId, keyPair: generateKeyPair(c, rng) });
  }
  const kyberPreKeys = [];
  const oneTimeKyber = options.oneTimeKyberPreKeys ?? 1;
  for (let keyId = 1; keyId <= oneTimeKyber + 1; keyId++) {
    const { publicKey, secretKey } = kemGenerateKeyPair(c, rng);
    const signature = xeddsaSign(c, identityKeyPair.privateKey, publicKey, rng.randomBytes(64));
    kyberPreKeys.push({ keyId, publicKey, secretKey, signature, lastResort: keyId === oneTimeKyber + 1 });
  }
  return { identityKeyPair, registrationId, prekeys: { signedPreKeys, oneTimePreKeys, kyberPreKeys } };
}

/** The bundle an honest server would hand out: by default OPK 1 and Kyber prekey 1. */
function bundleOf(
  device: DeviceKeys,
  choice: { preKeyId?: number | null; kyberPreKeyId?: number } = {},
): PreKeyBundle {
  const signed = device.prekeys.signedPreKeys[0];
  const preKeyId = choice.preKeyId === undefined ? 1 : choice.preKeyId;
  const preKey =
    preKeyId === null ? undefined : device.prekeys.oneTimePreKeys.find((k) => k.keyId === preKeyId);
  const kyber = device.prekeys.kyberPreKeys.find((k) => k.keyId === (choice.kyberPreKeyId ?? 1));
  if (signed === undefined || kyber === undefined || (preKeyId !== null && preKey === undefined)) {
    throw new Error('test bundle names keys the device does not have');
  }
  return Object.freeze({
    registrationId: device.registrationId,
    deviceId: 1,
    identityKey: device.identityKeyPair.publicKey,
    signedPreKeyId: signed.keyId,
    signedPreKey: signed.keyPair.publicKey,
    signedPreKeySignature: signed.signature,
    preKeyId,
    preKey: preKey?.keyPair.publicKey ?? null,
    kyberPreKeyId: kyber.keyId,
    kyberPreKey: kyber.publicKey,
    kyberPreKeySignature: kyber.signature,
  });
}

// ---------------------------------------------------------------------------------------------
// Parties
// ---------------------------------------------------------------------------------------------

interface Party {
  readonly name: string;
  readonly keys: DeviceKeys;
  readonly runner: SessionRunner;
  readonly draws: number[];
}

interface Wire {
  readonly messageType: MessageType;
  readonly bytes: Uint8Array;
}

function party(
  name: string,
  seed: string,
  options?: { oneTimePreKeys?: number; oneTimeKyberPreKeys?: number },
  bugs?: readonly BugName[],
): Party {
  const keys = generateDevice(seededRng(`${seed}/${name}/keys`), options);
  return partyWithKeys(name, seed, keys, bugs);
}

function partyWithKeys(name: string, seed: string, keys: DeviceKeys, bugs?: readonly BugName[]): Party {
  const { rng, draws } = recordingRng(`${seed}/${name}/session`);
  const env: Env = bugs === undefined ? { crypto: c, rng } : { crypto: c, rng, bugs };
  const runner = createSessionRunner(env, {
    localIdentityKeyPair: keys.identityKeyPair,
    localRegistrationId: keys.registrationId,
    prekeys: keys.prekeys,
  });
  return { name, keys, runner, draws };
}

function contextOf(p: Party): SessionContext {
  return p.runner.snapshot().context;
}

function stateOf(p: Party): unknown {
  return p.runner.snapshot().value;
}

function abstractOf(p: Party): ReturnType<typeof abstractSessionRecordOf> {
  return abstractSessionRecordOf(c, contextOf(p));
}

function only(outputs: readonly SessionEmitted[]): SessionEmitted {
  expect(outputs).toHaveLength(1);
  const [first] = outputs;
  if (first === undefined) throw new Error('no output');
  return first;
}

function processBundle(p: Party, bundle: PreKeyBundle, now = T0): readonly SessionEmitted[] {
  return p.runner.step({ type: 'user.processBundle', bundle, now }).outputs;
}

function send(p: Party, plaintext: string, now = T0): Wire {
  const out = only(p.runner.step({ type: 'user.send', plaintext: utf8(plaintext), now }).outputs);
  if (out.type !== 'session.message') throw new Error(`${p.name} could not send: ${JSON.stringify(out)}`);
  return { messageType: out.messageType, bytes: out.bytes };
}

function deliver(p: Party, wire: Wire): SessionEmitted {
  return only(
    p.runner.step({ type: 'net.deliver', messageType: wire.messageType, bytes: wire.bytes }).outputs,
  );
}

function deliverOk(p: Party, wire: Wire): { readonly plaintext: string; readonly createdSession: boolean } {
  const out = deliver(p, wire);
  if (out.type !== 'session.plaintext') throw new Error(`${p.name} rejected: ${JSON.stringify(out)}`);
  return { plaintext: text(out.plaintext), createdSession: out.createdSession };
}

/** Delivers a message that must be rejected with `code`, and checks nothing committed changed. */
function expectRejected(p: Party, wire: Wire, code: ErrorCode): void {
  const before = abstractOf(p);
  const prekeysBefore = prekeysOf(contextOf(p));
  const valueBefore = stateOf(p);
  expect(deliver(p, wire)).toEqual({ type: 'session.rejected', code, rule: ERROR_RULES[code] });
  expect(abstractOf(p)).toEqual(before);
  expect(prekeysOf(contextOf(p))).toEqual(prekeysBefore);
  expect(stateOf(p)).toEqual(valueBefore);
  expect(contextOf(p).working).toBeNull();
}

/** Alice and Bob with one acknowledged session (Alice initiated, Bob replied, Alice read it). */
function establishedPair(seed: string, bugs?: readonly BugName[]): { alice: Party; bob: Party } {
  const alice = party('alice', seed, undefined, bugs);
  const bob = party('bob', seed, undefined, bugs);
  processBundle(alice, bundleOf(bob.keys));
  expect(deliverOk(bob, send(alice, 'hello')).createdSession).toBe(true);
  expect(deliverOk(alice, send(bob, 'hi')).plaintext).toBe('hi');
  expect(stateOf(alice)).toBe('established');
  return { alice, bob };
}

/**
 * A SignalMessage at an arbitrary counter of the sender's current sending chain, computed from its
 * committed state with spec/ functions (what the sender would produce after `counter − index`
 * further sends), so limits far ahead can be reached without sending thousands of messages.
 */
function messageAtCounter(sender: Party, counter: number, plaintext: string): Wire {
  const session = contextOf(sender).record.current;
  if (session === null || session.pendingPreKey !== null) throw new Error('needs an acknowledged session');
  let key = session.senderChainKey.key;
  for (let index = session.senderChainKey.index; index < counter; index++) key = kdfCk(c, key).nextChainKey;
  const keys = deriveMessageKeys(c, kdfCk(c, key).messageKeySeed);
  const bytes = encodeSignalMessage(
    {
      ratchetKey: session.senderRatchetKey.publicKey,
      counter,
      previousCounter: session.previousCounter,
      ciphertext: encryptBody(c, keys, utf8(plaintext)),
    },
    (macInput) =>
      computeMessageMac(c, keys.macKey, session.localIdentityKey, session.remoteIdentityKey, macInput),
  );
  return { messageType: 'whisper', bytes };
}

function parsedWhisper(wire: Wire): ParsedSignalMessage {
  const parsed = parseSignalMessage(wire.bytes);
  if (!parsed.ok) throw new Error('test message does not parse');
  return parsed.value;
}

/** The same SignalMessage with one bit of its body flipped and the original MAC kept. */
function tamperedBody(wire: Wire): Wire {
  const parsed = parsedWhisper(wire);
  const ciphertext = Uint8Array.from(parsed.ciphertext);
  ciphertext[0] = (ciphertext[0] ?? 0) ^ 0x01;
  return {
    messageType: 'whisper',
    bytes: buildRawSignalMessage(signalMessageRawFields({ ...parsed, ciphertext }), { mac: parsed.mac }),
  };
}

// ---------------------------------------------------------------------------------------------
// Conversations
// ---------------------------------------------------------------------------------------------

describe('session machine: conversations', () => {
  it('initiator: bundle → initiating → established on the first reply; responder creates a session [WP-PQXDH-09] [WP-REC-01]', () => {
    const alice = party('alice', 'conv-basic');
    const bob = party('bob', 'conv-basic');
    expect(stateOf(alice)).toBe('noSession');
    expect(processBundle(alice, bundleOf(bob.keys))).toEqual([]);
    expect(stateOf(alice)).toBe('initiating');
    const first = send(alice, 'hello bob');
    expect(first.messageType).toBe('prekey');
    expect(deliverOk(bob, first)).toEqual({ plaintext: 'hello bob', createdSession: true });
    expect(stateOf(bob)).toBe('established');
    expect(abstractOf(bob).current?.phase).toBe('established');
    const second = send(alice, 'still unanswered');
    expect(second.messageType).toBe('prekey');
    expect(deliverOk(bob, second).createdSession).toBe(false);
    const reply = send(bob, 'hello alice');
    expect(reply.messageType).toBe('whisper');
    expect(deliverOk(alice, reply)).toEqual({ plaintext: 'hello alice', createdSession: false });
    expect(stateOf(alice)).toBe('established');
    expect(send(alice, 'now plain').messageType).toBe('whisper');
    // Both sides name the session by Alice's base key.
    expect(abstractOf(alice).current?.baseKeyFp).toBe(abstractOf(bob).current?.baseKeyFp);
  });

  it('a long conversation both ways with out-of-order delivery and duplicates [WP-DR-06] [WP-DR-08] [WP-DR-10] [WP-REC-03]', () => {
    const { alice, bob } = establishedPair('conv-long');
    for (let round = 0; round < 6; round++) {
      const fromAlice = [0, 1, 2, 3].map((i) => send(alice, `a${round}.${i}`));
      // Delivered 3, 1, 0, 2: the early ones come from stored skipped keys.
      for (const i of [3, 1, 0, 2])
        expect(deliverOk(bob, fromAlice[i] as Wire).plaintext).toBe(`a${round}.${i}`);
      expectRejected(bob, fromAlice[1] as Wire, 'DUPLICATE_MESSAGE');
      const fromBob = [0, 1, 2].map((i) => send(bob, `b${round}.${i}`));
      for (const i of [2, 0, 1])
        expect(deliverOk(alice, fromBob[i] as Wire).plaintext).toBe(`b${round}.${i}`);
      expectRejected(alice, fromBob[2] as Wire, 'DUPLICATE_MESSAGE');
    }
    const current = abstractOf(bob).current;
    expect(current?.receiverChains.length).toBeLessThanOrEqual(MAX_RECEIVER_CHAINS);
    expect(current?.receiverChains.every((chain) => chain.skippedKeys === 0)).toBe(true);
  });

  it('a message from an older receiving chain still decrypts after the DH step [WP-DR-06] [WP-DR-08]', () => {
    const { alice, bob } = establishedPair('conv-old-chain');
    const late = send(alice, 'late from the old chain');
    const early = send(alice, 'early');
    expect(deliverOk(bob, early).plaintext).toBe('early');
    deliverOk(alice, send(bob, 'ping'));
    deliverOk(bob, send(alice, 'pong on a new chain'));
    expect(deliverOk(bob, late).plaintext).toBe('late from the old chain');
  });

  it('encrypting draws nothing; the initiator draws 32, 32, 32; each receiving DH step draws 32 [WP-KEYS-09] [WP-PQXDH-04] [WP-DR-06]', () => {
    const alice = party('alice', 'draws');
    const bob = party('bob', 'draws');
    processBundle(alice, bundleOf(bob.keys));
    expect(alice.draws).toEqual([32, 32, 32]);
    const first = send(alice, 'one');
    expect(alice.draws).toEqual([32, 32, 32]);
    deliverOk(bob, first);
    expect(bob.draws).toEqual([32]);
    deliverOk(alice, send(bob, 'two'));
    expect(alice.draws).toEqual([32, 32, 32, 32]);
    deliverOk(bob, send(alice, 'three'));
    expect(bob.draws).toEqual([32, 32]);
  });
});

// ---------------------------------------------------------------------------------------------
// Rejections and atomicity
// ---------------------------------------------------------------------------------------------

describe('session machine: rejections leave record and prekeys untouched', () => {
  it('a tampered body or MAC on the only session is MAC_INVALID [WP-DR-05] [WP-DR-11] [WP-REC-02]', () => {
    const { alice, bob } = establishedPair('tamper');
    const message = send(alice, 'tamper with me');
    expectRejected(bob, tamperedBody(message), 'MAC_INVALID');
    const macFlipped = Uint8Array.from(message.bytes);
    macFlipped[macFlipped.length - 1] = (macFlipped[macFlipped.length - 1] ?? 0) ^ 0x80;
    expectRejected(bob, { messageType: 'whisper', bytes: macFlipped }, 'MAC_INVALID');
    expect(deliverOk(bob, message).plaintext).toBe('tamper with me');
  });

  it('a tampered message that needs a DH step still draws its ratchet key before the MAC check [WP-DR-06] [WP-DR-11]', () => {
    const { alice, bob } = establishedPair('tamper-dh');
    deliverOk(alice, send(bob, 'make alice step'));
    const onNewChain = send(alice, 'new chain');
    const drawsBefore = bob.draws.length;
    expectRejected(bob, tamperedBody(onNewChain), 'MAC_INVALID');
    expect(bob.draws.slice(drawsBefore)).toEqual([32]);
    expect(deliverOk(bob, onNewChain).plaintext).toBe('new chain');
  });

  it('sending or receiving a SignalMessage without any session is NO_SESSION; a malformed message fails parsing first [WP-REC-05] [WP-WIRE-07]', () => {
    const alice = party('alice', 'no-session');
    const out = only(alice.runner.step({ type: 'user.send', plaintext: utf8('x'), now: T0 }).outputs);
    expect(out).toEqual({ type: 'session.rejected', code: 'NO_SESSION', rule: 'WP-REC-05' });
    const { alice: a2 } = establishedPair('no-session-2');
    const whisper = send(a2, 'to nobody');
    expectRejected(alice, whisper, 'NO_SESSION');
    expectRejected(alice, { messageType: 'whisper', bytes: Uint8Array.of(0x44, 1, 2) }, 'WIRE_TOO_SHORT');
    expect(stateOf(alice)).toBe('noSession');
  });

  it('a message of another version is SESSION_VERSION_MISMATCH on one session, NO_SESSION_DECRYPTED on two [WP-DR-12] [WP-REC-02]', () => {
    const { alice, bob } = establishedPair('version');
    const parsed = parsedWhisper(send(bob, 'v4'));
    const v3: Wire = {
      messageType: 'whisper',
      bytes: buildRawSignalMessage(signalMessageRawFields(parsed), { versionByte: 0x33, mac: parsed.mac }),
    };
    expectRejected(alice, v3, 'SESSION_VERSION_MISMATCH');
    processBundle(alice, bundleOf(bob.keys, { preKeyId: 2 }));
    expect(contextOf(alice).record.archived).toHaveLength(1);
    expectRejected(alice, v3, 'NO_SESSION_DECRYPTED');
  });

  it('a duplicate on the current session stops the record search: no archived session is tried [WP-REC-03] [WP-DR-10]', () => {
    const { alice, bob } = establishedPair('dup-stops');
    const reply = send(bob, 'once');
    deliverOk(alice, reply);
    processBundle(alice, bundleOf(bob.keys, { preKeyId: 2 }));
    // The reply's session is now archived: the current (new) session fails with MAC_INVALID after a
    // DH step, and the archived one reports the duplicate, which stops the search.
    const before = alice.draws.length;
    expectRejected(alice, reply, 'DUPLICATE_MESSAGE');
    expect(alice.draws.slice(before)).toEqual([32]);
  });

  it('an unanswered session stops encrypting after 30 days [WP-PQXDH-11]', () => {
    const alice = party('alice', 'too-old');
    const bob = party('bob', 'too-old');
    processBundle(alice, bundleOf(bob.keys), T0);
    expect(send(alice, 'just in time', T0 + MAX_UNACKNOWLEDGED_SESSION_AGE_MS).messageType).toBe('prekey');
    const before = abstractOf(alice);
    const out = only(
      alice.runner.step({
        type: 'user.send',
        plaintext: utf8('late'),
        now: T0 + MAX_UNACKNOWLEDGED_SESSION_AGE_MS + 1,
      }).outputs,
    );
    expect(out).toEqual({
      type: 'session.rejected',
      code: 'SESSION_UNACKNOWLEDGED_TOO_OLD',
      rule: 'WP-PQXDH-11',
    });
    expect(abstractOf(alice)).toEqual(before);
    expect(stateOf(alice)).toBe('initiating');
  });

  it('an acknowledged session encrypts however old it is [WP-PQXDH-11]', () => {
    const { alice } = establishedPair('old-but-acked');
    expect(send(alice, 'years later', T0 + 10 * MAX_UNACKNOWLEDGED_SESSION_AGE_MS).messageType).toBe(
      'whisper',
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------------------

describe('session machine: limits', () => {
  it('a counter exactly MAX_FORWARD_JUMPS ahead decrypts; one more is rejected [WP-DR-07] [WP-DR-08]', () => {
    const { alice, bob } = establishedPair('jump');
    deliverOk(bob, send(alice, 'sets up the chain'));
    const chainIndex = abstractOf(bob).current?.receiverChains.at(-1)?.chainIndex ?? -1;
    expect(chainIndex).toBe(1);
    expectRejected(
      bob,
      messageAtCounter(alice, chainIndex + MAX_FORWARD_JUMPS + 1, 'too far'),
      'FORWARD_JUMP_TOO_FAR',
    );
    expect(
      deliverOk(bob, messageAtCounter(alice, chainIndex + MAX_FORWARD_JUMPS, 'just far enough')).plaintext,
    ).toBe('just far enough');
    const chain = abstractOf(bob).current?.receiverChains.at(-1);
    expect(chain?.chainIndex).toBe(chainIndex + MAX_FORWARD_JUMPS + 1);
    expect(chain?.skippedKeys).toBe(MAX_MESSAGE_KEYS);
  });

  it('on a new chain the DH step comes first, then the jump is refused and the step discarded [WP-DR-07] [WP-DR-11]', () => {
    const { alice, bob } = establishedPair('jump-new-chain');
    deliverOk(alice, send(bob, 'alice steps'));
    const before = bob.draws.length;
    expectRejected(bob, messageAtCounter(alice, MAX_FORWARD_JUMPS + 1, 'too far'), 'FORWARD_JUMP_TOO_FAR');
    expect(bob.draws.slice(before)).toEqual([32]);
    expect(deliverOk(bob, messageAtCounter(alice, MAX_FORWARD_JUMPS, 'edge')).plaintext).toBe('edge');
  });

  it('skipped keys are capped at MAX_MESSAGE_KEYS, the oldest dropped [WP-DR-08] [WP-DR-10]', () => {
    const { alice, bob } = establishedPair('skip-cap');
    deliverOk(alice, send(bob, 'alice steps'));
    const oldest = send(alice, 'counter 0');
    const early = [1, 2, 3, 4, 5, 6].map((n) => messageAtCounter(alice, n, `counter ${n}`));
    const far = MAX_MESSAGE_KEYS + 5;
    expect(deliverOk(bob, messageAtCounter(alice, far, 'far')).plaintext).toBe('far');
    expect(abstractOf(bob).current?.receiverChains.at(-1)?.skippedKeys).toBe(MAX_MESSAGE_KEYS);
    // Keys 0..4 were the oldest and are gone: their messages now look like duplicates.
    expectRejected(bob, oldest, 'DUPLICATE_MESSAGE');
    expectRejected(bob, early[3] as Wire, 'DUPLICATE_MESSAGE');
    expect(deliverOk(bob, early[4] as Wire).plaintext).toBe('counter 5');
    expect(abstractOf(bob).current?.receiverChains.at(-1)?.skippedKeys).toBe(MAX_MESSAGE_KEYS - 1);
    expectRejected(bob, early[4] as Wire, 'DUPLICATE_MESSAGE');
  });

  it('receiving chains are capped at MAX_RECEIVER_CHAINS, the oldest dropped [WP-DR-09]', () => {
    const { alice, bob } = establishedPair('chain-cap');
    const lateMessages: Wire[] = [];
    for (let round = 0; round < MAX_RECEIVER_CHAINS + 2; round++) {
      deliverOk(alice, send(bob, `b${round}`));
      lateMessages.push(send(alice, `late ${round}`));
      deliverOk(bob, send(alice, `a${round}`));
      expect(abstractOf(bob).current?.receiverChains.length).toBeLessThanOrEqual(MAX_RECEIVER_CHAINS);
    }
    expect(abstractOf(bob).current?.receiverChains).toHaveLength(MAX_RECEIVER_CHAINS);
    // The chain of round 0 was dropped: its late message fails on the only session.
    expectRejected(bob, lateMessages[0] as Wire, 'MAC_INVALID');
    // The chain of the last round is still held.
    expect(deliverOk(bob, lateMessages.at(-1) as Wire).plaintext).toBe(`late ${MAX_RECEIVER_CHAINS + 1}`);
  });

  it('at most 40 archived sessions, newest first; the oldest is dropped [WP-REC-01]', () => {
    const alice = party('alice', 'archive-cap');
    const bob = party('bob', 'archive-cap');
    const bundle = bundleOf(bob.keys, { preKeyId: null, kyberPreKeyId: 2 });
    const baseKeys: string[] = [];
    for (let i = 0; i < ARCHIVED_STATES_MAX_LENGTH + 2; i++) {
      processBundle(alice, bundle);
      baseKeys.push(abstractOf(alice).current?.baseKeyFp ?? '');
    }
    const record = abstractOf(alice);
    expect(record.current?.baseKeyFp).toBe(baseKeys.at(-1));
    expect(record.archived).toHaveLength(ARCHIVED_STATES_MAX_LENGTH);
    expect(record.archived.map((s) => s.baseKeyFp)).toEqual(baseKeys.slice(1, -1).reverse());
  });
});

// ---------------------------------------------------------------------------------------------
// Records, promotion and PreKey messages
// ---------------------------------------------------------------------------------------------

describe('session machine: records and PreKey messages', () => {
  it('the archived session that decrypts is promoted; the current one is archived [WP-REC-02]', () => {
    const { alice, bob } = establishedPair('promote');
    const first = abstractOf(alice).current?.baseKeyFp;
    processBundle(alice, bundleOf(bob.keys, { preKeyId: null, kyberPreKeyId: 2 }));
    const second = abstractOf(alice).current?.baseKeyFp;
    expect(stateOf(alice)).toBe('initiating');
    const before = alice.draws.length;
    expect(deliverOk(alice, send(bob, 'still on the first')).plaintext).toBe('still on the first');
    // The new session is tried first: a DH step (one draw), then a MAC failure. The archived one
    // already holds the receiving chain of Bob's ratchet key, so it draws nothing.
    expect(alice.draws.slice(before)).toEqual([32]);
    expect(abstractOf(alice).current?.baseKeyFp).toBe(first);
    expect(abstractOf(alice).archived.map((s) => s.baseKeyFp)).toEqual([second]);
    expect(stateOf(alice)).toBe('established');
    expect(deliverOk(bob, send(alice, 'back on the first')).plaintext).toBe('back on the first');
  });

  it('a retransmitted PreKey message decrypts on the session it created, or is a duplicate [WP-PQXDH-10] [WP-DR-10]', () => {
    const alice = party('alice', 'retransmit');
    const bob = party('bob', 'retransmit');
    processBundle(alice, bundleOf(bob.keys));
    const first = send(alice, 'first');
    const second = send(alice, 'second');
    expect(deliverOk(bob, second)).toEqual({ plaintext: 'second', createdSession: true });
    const afterCreate = prekeysOf(contextOf(bob));
    expect(afterCreate).toEqual({ oneTimePreKeyIds: [2, 3], kyberPreKeyIds: [2] });
    expect(deliverOk(bob, first)).toEqual({ plaintext: 'first', createdSession: false });
    expectRejected(bob, first, 'DUPLICATE_MESSAGE');
    expectRejected(bob, second, 'DUPLICATE_MESSAGE');
    expect(contextOf(bob).record.archived).toHaveLength(0);
  });

  it('a late PreKey message naming an archived session is decrypted there and promotes it [WP-PQXDH-10] [WP-REC-02]', () => {
    const alice = party('alice', 'prekey-archived');
    const bob = party('bob', 'prekey-archived');
    processBundle(alice, bundleOf(bob.keys, { preKeyId: 1 }));
    const early = send(alice, 'session one, message one');
    const late = send(alice, 'session one, message two');
    deliverOk(bob, early);
    const sessionOne = abstractOf(bob).current?.baseKeyFp;
    processBundle(alice, bundleOf(bob.keys, { preKeyId: 2, kyberPreKeyId: 2 }));
    expect(deliverOk(bob, send(alice, 'session two')).createdSession).toBe(true);
    const sessionTwo = abstractOf(bob).current?.baseKeyFp;
    expect(deliverOk(bob, late)).toEqual({ plaintext: 'session one, message two', createdSession: false });
    expect(abstractOf(bob).current?.baseKeyFp).toBe(sessionOne);
    expect(abstractOf(bob).archived.map((s) => s.baseKeyFp)).toEqual([sessionTwo]);
    expect(prekeysOf(contextOf(bob))).toEqual({ oneTimePreKeyIds: [3], kyberPreKeyIds: [2] });
  });

  it('the inner message of a PreKey message is tried on its own session only; prekeys stay on failure [WP-REC-04] [WP-PQXDH-06] [WP-PQXDH-07]', () => {
    const { alice, bob } = establishedPair('prekey-inner');
    const prekeysBefore = prekeysOf(contextOf(bob));
    const fresh = party('carol', 'prekey-inner');
    // Carol plays a reinstalled Alice: a new session towards Bob with OPK 2 and the last-resort Kyber key.
    processBundle(fresh, bundleOf(bob.keys, { preKeyId: 2, kyberPreKeyId: 2 }));
    const message = send(fresh, 'from a new session');
    const parsed = parsePreKeySignalMessage(message.bytes);
    if (!parsed.ok) throw new Error('does not parse');
    const inner = tamperedBody({ messageType: 'whisper', bytes: parsed.value.message });
    const tampered: Wire = {
      messageType: 'prekey',
      bytes: buildRawPreKeySignalMessage(
        preKeySignalMessageRawFields({ ...parsed.value, message: inner.bytes }),
      ),
    };
    expectRejected(bob, tampered, 'MAC_INVALID');
    expect(prekeysOf(contextOf(bob))).toEqual(prekeysBefore);
    expect(deliverOk(bob, message).createdSession).toBe(true);
    expect(prekeysOf(contextOf(bob))).toEqual({ oneTimePreKeyIds: [3], kyberPreKeyIds: [2] });
    expect(contextOf(bob).record.archived).toHaveLength(1);
    // Alice's old session still works from the archive.
    expect(deliverOk(bob, send(alice, 'old session')).plaintext).toBe('old session');
  });

  it('the responder checks signed, then Kyber, then one-time prekey [WP-PQXDH-05] [WP-PQXDH-07] [WP-PQXDH-06]', () => {
    const bob = party('bob', 'responder-order');
    const alice = party('alice', 'responder-order');
    processBundle(alice, bundleOf(bob.keys, { preKeyId: 1, kyberPreKeyId: 1 }));
    const message = send(alice, 'needs SPK 1, Kyber 1, OPK 1');
    const withStore = (name: string, prekeys: PreKeyStoreData): Party =>
      partyWithKeys(name, 'responder-order', { ...bob.keys, prekeys });
    const full = bob.keys.prekeys;
    expectRejected(
      withStore('no-spk', { signedPreKeys: [], kyberPreKeys: [], oneTimePreKeys: [] }),
      message,
      'UNKNOWN_SIGNED_PREKEY',
    );
    expectRejected(
      withStore('no-kyber', { ...full, kyberPreKeys: [], oneTimePreKeys: [] }),
      message,
      'UNKNOWN_KYBER_PREKEY',
    );
    expectRejected(withStore('no-opk', { ...full, oneTimePreKeys: [] }), message, 'UNKNOWN_ONE_TIME_PREKEY');
    expect(deliverOk(bob, message).createdSession).toBe(true);
  });

  it('a one-time Kyber prekey is used once; the last-resort one stays [WP-PQXDH-07]', () => {
    const bob = party('bob', 'kyber-once');
    const alice = party('alice', 'kyber-once');
    const carol = party('carol', 'kyber-once');
    processBundle(alice, bundleOf(bob.keys, { preKeyId: 1, kyberPreKeyId: 1 }));
    processBundle(carol, bundleOf(bob.keys, { preKeyId: 2, kyberPreKeyId: 1 }));
    deliverOk(bob, send(alice, 'uses Kyber 1'));
    expectRejected(bob, send(carol, 'Kyber 1 again'), 'UNKNOWN_KYBER_PREKEY');
    const dave = party('dave', 'kyber-once');
    const erin = party('erin', 'kyber-once');
    processBundle(dave, bundleOf(bob.keys, { preKeyId: null, kyberPreKeyId: 2 }));
    processBundle(erin, bundleOf(bob.keys, { preKeyId: null, kyberPreKeyId: 2 }));
    // One machine is one peer's record; both land in Bob's record here, which is enough for the keys.
    deliverOk(bob, send(dave, 'last resort'));
    deliverOk(bob, send(erin, 'last resort again'));
    expect(prekeysOf(contextOf(bob)).kyberPreKeyIds).toEqual([2]);
  });
});

// ---------------------------------------------------------------------------------------------
// Bad bundles
// ---------------------------------------------------------------------------------------------

describe('session machine: bad bundles create nothing and draw nothing', () => {
  const bob = party('bob', 'bad-bundles');
  const good = bundleOf(bob.keys);
  const flip = (bytes: Uint8Array, index: number): Uint8Array => {
    const out = Uint8Array.from(bytes);
    out[index] = (out[index] ?? 0) ^ 0x01;
    return out;
  };
  const cases: readonly (readonly [string, PreKeyBundle, ErrorCode])[] = [
    [
      'identity key of the wrong length [WP-KEYS-01]',
      { ...good, identityKey: good.identityKey.subarray(0, 32) },
      'KEY_BAD_LENGTH',
    ],
    [
      'signed prekey with a bad type byte [WP-KEYS-01]',
      { ...good, signedPreKey: flip(good.signedPreKey, 0) },
      'KEY_BAD_TYPE',
    ],
    [
      'bad signed-prekey signature [WP-PQXDH-01]',
      { ...good, signedPreKeySignature: flip(good.signedPreKeySignature, 3) },
      'BUNDLE_SIGNATURE_INVALID',
    ],
    ['no Kyber prekey [WP-PQXDH-02]', { ...good, kyberPreKey: null }, 'BUNDLE_KYBER_MISSING'],
    [
      'no Kyber prekey signature [WP-PQXDH-02]',
      { ...good, kyberPreKeySignature: null },
      'BUNDLE_KYBER_MISSING',
    ],
    [
      'Kyber prekey of the wrong length [WP-KEYS-05]',
      { ...good, kyberPreKey: (good.kyberPreKey ?? new Uint8Array()).subarray(0, 100) },
      'KEM_BAD_LENGTH',
    ],
    [
      'bad Kyber-prekey signature [WP-PQXDH-01]',
      { ...good, kyberPreKeySignature: flip(good.kyberPreKeySignature ?? new Uint8Array(64), 3) },
      'BUNDLE_SIGNATURE_INVALID',
    ],
    ['one-time prekey without its id [WP-PQXDH-12]', { ...good, preKeyId: null }, 'BUNDLE_MALFORMED'],
    ['one-time prekey id without the key [WP-PQXDH-12]', { ...good, preKey: null }, 'BUNDLE_MALFORMED'],
    [
      'signature failure wins over a missing Kyber key (check order) [WP-PQXDH-01] [WP-PQXDH-02]',
      { ...good, signedPreKeySignature: flip(good.signedPreKeySignature, 3), kyberPreKey: null },
      'BUNDLE_SIGNATURE_INVALID',
    ],
  ];
  it.each(cases)('%s', (_title, bundle, code) => {
    const alice = party('alice', 'bad-bundles');
    const out = processBundle(alice, bundle);
    expect(out).toEqual([{ type: 'session.rejected', code, rule: ERROR_RULES[code] }]);
    expect(alice.draws).toEqual([]);
    expect(stateOf(alice)).toBe('noSession');
    expect(abstractOf(alice)).toEqual({ current: null, archived: [] });
  });

  it('a bad bundle leaves an existing session current and untouched [WP-PQXDH-01] [WP-REC-01]', () => {
    const { alice, bob: b } = establishedPair('bad-bundle-existing');
    const before = abstractOf(alice);
    const bundle = bundleOf(b.keys, { preKeyId: 2 });
    expect(
      processBundle(alice, { ...bundle, signedPreKeySignature: flip(bundle.signedPreKeySignature, 0) }),
    ).toEqual([{ type: 'session.rejected', code: 'BUNDLE_SIGNATURE_INVALID', rule: 'WP-PQXDH-01' }]);
    expect(abstractOf(alice)).toEqual(before);
    expect(stateOf(alice)).toBe('established');
  });
});

// ---------------------------------------------------------------------------------------------
// The machine as a document
// ---------------------------------------------------------------------------------------------

function walk(node: StateNodeJson, visit: (node: StateNodeJson) => void): void {
  visit(node);
  for (const child of Object.values(node.states)) walk(child, visit);
}

describe('session machine: definition', () => {
  const machine = createSessionMachine({ crypto: c, rng: seededRng('definition') });

  it('machine.definition and the full JSON (with eventless transitions) serialise [WP-DR-11]', () => {
    expect(() => JSON.stringify(machine.definition)).not.toThrow();
    const json = sessionMachineJson(machine);
    const again = JSON.parse(JSON.stringify(json)) as StateNodeJson;
    expect(again).toEqual(json);
    expect(json.id).toBe('session');
    let states = 0;
    let transitions = 0;
    walk(json, (node) => {
      states++;
      transitions += node.transitions.length;
    });
    expect(states).toBeGreaterThan(40);
    expect(transitions).toBeGreaterThan(80);
  });

  it('every guard and action in the machine names its rules in RULES, and RULES names nothing else [WP-DR-11]', () => {
    const used = new Set<string>();
    walk(sessionMachineJson(machine), (node) => {
      for (const action of node.entry) used.add(action.type);
      for (const t of node.transitions) {
        if (t.guard !== null) used.add(t.guard.type);
        for (const action of t.actions) used.add(action.type);
      }
    });
    const implemented = new Set([
      ...Object.keys(machine.implementations.guards),
      ...Object.keys(machine.implementations.actions),
    ]);
    expect([...used].filter((name) => !(name in RULES))).toEqual([]);
    expect([...used].filter((name) => !implemented.has(name))).toEqual([]);
    expect(Object.keys(RULES).filter((name) => !used.has(name))).toEqual([]);
    for (const rules of Object.values(RULES)) {
      expect(rules.length).toBeGreaterThan(0);
      for (const rule of rules) expect(rule).toMatch(/^WP-[A-Z]+-\d{2}$/);
    }
  });

  it('rests only in noSession, initiating or established [WP-PQXDH-09]', () => {
    const { alice, bob } = establishedPair('rest');
    expect(['noSession', 'initiating', 'established']).toContain(stateOf(alice));
    expect(['noSession', 'initiating', 'established']).toContain(stateOf(bob));
  });
});

// ---------------------------------------------------------------------------------------------
// Planted bugs (spec/bugs.ts): the model plants them exactly where impl/ does
// ---------------------------------------------------------------------------------------------

describe('session machine: planted bugs for the simulator self-test', () => {
  it('skip-mac-check accepts a message whose MAC was altered [WP-DR-05]', () => {
    const { alice, bob } = establishedPair('bug-mac', ['skip-mac-check']);
    const message = send(alice, 'forged');
    const macFlipped = Uint8Array.from(message.bytes);
    macFlipped[macFlipped.length - 1] = (macFlipped[macFlipped.length - 1] ?? 0) ^ 0x80;
    expect(deliverOk(bob, { messageType: 'whisper', bytes: macFlipped }).plaintext).toBe('forged');
  });

  it('accept-past-forward-jump accepts a counter beyond MAX_FORWARD_JUMPS [WP-DR-07]', () => {
    const { alice, bob } = establishedPair('bug-jump', ['accept-past-forward-jump']);
    deliverOk(alice, send(bob, 'alice steps'));
    expect(deliverOk(bob, messageAtCounter(alice, MAX_FORWARD_JUMPS + 1, 'too far')).plaintext).toBe(
      'too far',
    );
  });

  it('reuse-message-key sends two messages under one counter [WP-DR-02]', () => {
    const { alice } = establishedPair('bug-reuse', ['reuse-message-key']);
    const first = parsedWhisper(send(alice, 'one'));
    const second = parsedWhisper(send(alice, 'two'));
    expect(second.counter).toBe(first.counter);
  });

  it('deliver-twice decrypts a redelivered message again [WP-DR-10]', () => {
    const { alice, bob } = establishedPair('bug-twice', ['deliver-twice']);
    const message = send(alice, 'twice');
    expect(deliverOk(bob, message).plaintext).toBe('twice');
    expect(deliverOk(bob, message).plaintext).toBe('twice');
  });
});
