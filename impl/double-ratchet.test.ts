/**
 * Double Ratchet scenarios (WHITEPAPER.md WP-DR-01..12): long conversations, reordering inside a
 * chain and across DH steps, previous_counter, duplicates, tampering, the three limits (forward
 * jump, skipped keys, receiver chains), version mismatch and atomicity. Message keys are recomputed
 * independently with node:crypto. Limit cases run with the node provider only (they derive tens of
 * thousands of keys).
 */
import { Buffer } from 'node:buffer';
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { concatBytes, equalBytes } from '../spec/bytes.js';
import { nobleProvider } from '../spec/crypto/noble.js';
import { nodeProvider } from '../spec/crypto/node.js';
import type { CryptoProvider } from '../spec/crypto/provider.js';
import { encodeSignalMessageBody, frameSignalMessage } from '../spec/wire.js';
import {
  createParty,
  deepFreeze,
  deliver,
  deliverOk,
  establishedPair,
  flipByte,
  refHmac,
  refMessageKeys,
  rewriteSignalMessage,
  send,
  signalMessageOf,
  snapshot,
  startSession,
  type Party,
} from '../test/support/parties.js';
import type { CiphertextMessage } from './double-ratchet.js';
import { decryptMessage } from './session-record.js';
import type { ReceiverChain, SessionState } from './session-state.js';

const PROVIDERS = [nobleProvider, nodeProvider].map((p) => [p.name, p] as const);
const SMALL = { oneTimePreKeys: 1, oneTimeKyberPreKeys: 1 } as const;

function current(party: Party): SessionState {
  const session = party.record.current;
  if (session === null) throw new Error(`${party.name} has no current session`);
  return session;
}

function chainFor(party: Party, message: CiphertextMessage): ReceiverChain {
  const ratchetKey = signalMessageOf(message).ratchetKey;
  const chain = current(party).receiverChains.find((c) => equalBytes(c.ratchetKey, ratchetKey));
  if (chain === undefined) throw new Error(`${party.name} has no chain for that ratchet key`);
  return chain;
}

function pair(crypto: CryptoProvider, seed: string) {
  return establishedPair(crypto, seed, SMALL);
}

/** One AES-256-CBC block whose plaintext ends in 0x00, which PKCS#7 padding never does. */
function badPaddingBlock(keys: { readonly cipherKey: Uint8Array; readonly iv: Uint8Array }): Uint8Array {
  const cipher = createCipheriv('aes-256-cbc', keys.cipherKey, keys.iv).setAutoPadding(false);
  const block = new Uint8Array(16).fill(0x41);
  block[15] = 0;
  return new Uint8Array(Buffer.concat([cipher.update(block), cipher.final()]));
}

/** Expects a failure that leaves the receiver's state exactly as it was; returns the error code. */
function expectRejectedUnchanged(to: Party, message: CiphertextMessage): string {
  deepFreeze(to.record);
  deepFreeze(to.prekeys);
  const before = snapshot(to);
  const delivery = deliver(to, message);
  expect(delivery.ok).toBe(false);
  expect(snapshot(to)).toBe(before);
  return delivery.ok ? 'none' : delivery.error.code;
}

describe.each(PROVIDERS)('Double Ratchet (%s)', (_name, crypto) => {
  const seed = `dr-${crypto.name}`;

  it('long conversation in both directions [WP-DR-01] [WP-DR-02] [WP-DR-06]', () => {
    const { alice, bob } = pair(crypto, `${seed}-long`);
    let sent = 0;
    for (let round = 0; round < 24; round++) {
      const [from, to] = round % 2 === 0 ? [alice, bob] : [bob, alice];
      const burst = (round % 4) + 1;
      const messages = Array.from({ length: burst }, (_, i) => `${from.name} round ${round} #${i}`);
      for (const text of messages) {
        expect(deliverOk(to, send(from, text))).toBe(text);
        sent++;
      }
    }
    expect(sent).toBe(60);
    // A DH step per change of direction: both sides hold at most the last five receiving chains.
    expect(current(alice).receiverChains.length).toBeLessThanOrEqual(5);
    expect(current(bob).receiverChains.length).toBeLessThanOrEqual(5);
  });

  it('message keys match an independent recomputation [WP-DR-02] [WP-DR-03] [WP-DR-04] [WP-DR-05]', () => {
    const { alice, bob } = pair(crypto, `${seed}-keys`);
    const before = current(alice).senderChainKey;
    const keys = refMessageKeys(before.key);
    const message = send(alice, 'independently derived');
    const parsed = signalMessageOf(message);
    expect(parsed.counter).toBe(before.index);
    // WP-DR-02: the sending chain advanced by HMAC(CK, 0x02).
    expect(current(alice).senderChainKey).toEqual({ key: keys.nextChainKey, index: before.index + 1 });
    // WP-DR-05: the MAC covers sender identity, receiver identity, version ‖ protobuf.
    const macData = concatBytes(
      alice.prekeys.identityKeyPair.publicKey,
      bob.prekeys.identityKeyPair.publicKey,
      parsed.macInput,
    );
    expect(parsed.mac).toEqual(refHmac(keys.macKey, macData).slice(0, 8));
    // WP-DR-03/04: AES-256-CBC-PKCS7 under the derived key and IV.
    const decipher = createDecipheriv('aes-256-cbc', keys.cipherKey, keys.iv);
    const plaintext = Buffer.concat([decipher.update(parsed.ciphertext), decipher.final()]).toString('utf8');
    expect(plaintext).toBe('independently derived');
    expect(deliverOk(bob, message)).toBe('independently derived');
    // Both sides now hold the same chain key for Alice's chain.
    expect(chainFor(bob, message).chainKey).toEqual({ key: keys.nextChainKey, index: before.index + 1 });
  });

  it.each([
    { label: 'bad padding', ciphertext: badPaddingBlock },
    { label: 'a length that is not a multiple of 16', ciphertext: () => new Uint8Array(15).fill(7) },
  ])('body with $label under a valid MAC → BODY_DECRYPT_FAILED [WP-DR-04]', ({ ciphertext }) => {
    const { alice, bob } = pair(crypto, `${seed}-body`);
    const session = current(alice);
    const keys = refMessageKeys(session.senderChainKey.key);
    const body = encodeSignalMessageBody({
      ratchetKey: session.senderRatchetKey.publicKey,
      counter: session.senderChainKey.index,
      previousCounter: session.previousCounter,
      ciphertext: ciphertext(keys),
    });
    const macData = concatBytes(session.localIdentityKey, session.remoteIdentityKey, body);
    const forged = frameSignalMessage(body, refHmac(keys.macKey, macData).slice(0, 8));
    const code = expectRejectedUnchanged(bob, { type: 'whisper', bytes: forged });
    expect(code).toBe('BODY_DECRYPT_FAILED');
    // WP-DR-11: the genuine message with the same counter still decrypts.
    expect(deliverOk(bob, send(alice, 'genuine'))).toBe('genuine');
  });

  it('out of order within a chain [WP-DR-08] [WP-DR-10]', () => {
    const { alice, bob } = pair(crypto, `${seed}-ooo`);
    const messages = [0, 1, 2, 3, 4].map((i) => send(alice, `m${i}`));
    const at = (i: number): CiphertextMessage => {
      const m = messages[i];
      if (m === undefined) throw new Error('no such message');
      return m;
    };
    expect(deliverOk(bob, at(4))).toBe('m4');
    expect(chainFor(bob, at(4)).skipped.map((k) => k.index)).toEqual([3, 2, 1, 0]);
    for (const i of [0, 2, 1, 3]) expect(deliverOk(bob, at(i))).toBe(`m${i}`);
    expect(chainFor(bob, at(4)).skipped).toEqual([]);
    for (const i of [0, 1, 2, 3, 4]) expect(expectRejectedUnchanged(bob, at(i))).toBe('DUPLICATE_MESSAGE');
  });

  it('out of order across DH steps [WP-DR-06] [WP-DR-08]', () => {
    const { alice, bob } = pair(crypto, `${seed}-across`);
    const a1 = send(alice, 'a1');
    const a2 = send(alice, 'a2');
    const a3 = send(alice, 'a3');
    expect(deliverOk(bob, a3)).toBe('a3');
    const b1 = send(bob, 'b1');
    const b2 = send(bob, 'b2');
    expect(deliverOk(alice, b2)).toBe('b2');
    const a4 = send(alice, 'a4');
    expect(signalMessageOf(a4).ratchetKey).not.toEqual(signalMessageOf(a1).ratchetKey);
    expect(deliverOk(bob, a4)).toBe('a4');
    expect(deliverOk(bob, a1)).toBe('a1');
    expect(deliverOk(alice, b1)).toBe('b1');
    expect(deliverOk(bob, a2)).toBe('a2');
    const b3 = send(bob, 'b3');
    expect(signalMessageOf(b3).ratchetKey).not.toEqual(signalMessageOf(b1).ratchetKey);
    expect(deliverOk(alice, b3)).toBe('b3');
    for (const m of [a1, a2, a3, a4]) expect(expectRejectedUnchanged(bob, m)).toBe('DUPLICATE_MESSAGE');
    for (const m of [b1, b2, b3]) expect(expectRejectedUnchanged(alice, m)).toBe('DUPLICATE_MESSAGE');
  });

  it.each([
    { sentOnOldChain: 1, expected: 0, label: '1 sent → 0' },
    { sentOnOldChain: 2, expected: 1, label: '2 sent → 1' },
    { sentOnOldChain: 5, expected: 4, label: '5 sent → 4' },
  ])(
    'previous_counter after a DH step is the old sending index − 1 ($label) [WP-DR-06]',
    ({ sentOnOldChain, expected }) => {
      const alice = createParty('alice', crypto, `${seed}-pn`, SMALL);
      const bob = createParty('bob', crypto, `${seed}-pn`, SMALL);
      startSession(alice, bob);
      deliverOk(bob, send(alice, 'a'));
      const bobsOldChain = Array.from({ length: sentOnOldChain }, (_, i) => send(bob, `b${i}`));
      for (const m of bobsOldChain) deliverOk(alice, m);
      deliverOk(bob, send(alice, 'new alice chain'));
      const next = send(bob, 'after the step');
      expect(signalMessageOf(next).previousCounter).toBe(expected);
      expect(deliverOk(alice, next)).toBe('after the step');
    },
  );

  it("previous_counter saturates at 0 on the responder's first step [WP-DR-06]", () => {
    const alice = createParty('alice', crypto, `${seed}-pn0`, SMALL);
    const bob = createParty('bob', crypto, `${seed}-pn0`, SMALL);
    startSession(alice, bob);
    for (const text of ['a0', 'a1', 'a2']) deliverOk(bob, send(alice, text));
    const reply = send(bob, 'first reply');
    expect(signalMessageOf(reply).previousCounter).toBe(0);
    deliverOk(alice, reply);
    // Alice sent three messages on her first chain (index 3): her next chain says 2.
    expect(signalMessageOf(send(alice, 'next')).previousCounter).toBe(2);
  });

  it('duplicate message [WP-DR-10]', () => {
    const { alice, bob } = pair(crypto, `${seed}-dup`);
    const m = send(alice, 'once');
    expect(deliverOk(bob, m)).toBe('once');
    deepFreeze(bob.record);
    const delivery = deliver(bob, m);
    expect(delivery.ok ? null : delivery.error).toMatchObject({
      code: 'DUPLICATE_MESSAGE',
      rule: 'WP-DR-10',
    });
  });

  describe('tampering [WP-DR-05]', () => {
    const cases: ReadonlyArray<{
      label: string;
      tamper: (m: CiphertextMessage, other: Uint8Array) => CiphertextMessage;
    }> = [
      { label: 'a flipped MAC bit', tamper: (m) => ({ type: 'whisper', bytes: flipByte(m.bytes, -1) }) },
      {
        label: 'a flipped ciphertext bit',
        tamper: (m) => ({ type: 'whisper', bytes: flipByte(m.bytes, -9) }),
      },
      {
        label: 'the version low nibble',
        tamper: (m) => ({ type: 'whisper', bytes: flipByte(m.bytes, 0, 0x01) }),
      },
      {
        label: 'counter + 1',
        tamper: (m) => rewriteSignalMessage(m, { counter: signalMessageOf(m).counter + 1 }),
      },
      {
        label: 'previous_counter + 1',
        tamper: (m) => rewriteSignalMessage(m, { previousCounter: signalMessageOf(m).previousCounter + 1 }),
      },
      {
        label: 'another valid ratchet key (DH step, then MAC failure)',
        tamper: (m, other) => rewriteSignalMessage(m, { ratchetKey: other }),
      },
    ];
    it.each(cases)('$label → MAC_INVALID, state unchanged [WP-DR-05] [WP-DR-11]', ({ tamper }) => {
      const { alice, bob } = pair(crypto, `${seed}-tamper`);
      const other = createParty('carol', crypto, `${seed}-tamper`, SMALL).prekeys.identityKeyPair.publicKey;
      const genuine = send(alice, 'genuine');
      expect(expectRejectedUnchanged(bob, tamper(genuine, other))).toBe('MAC_INVALID');
      expect(deliverOk(bob, genuine)).toBe('genuine');
    });
  });

  it('version mismatch: a SignalMessage with version byte 0x34 [WP-DR-12]', () => {
    const { alice, bob } = pair(crypto, `${seed}-version`);
    const genuine = send(alice, 'v4');
    const bytes = Uint8Array.from(genuine.bytes);
    bytes[0] = 0x34;
    deepFreeze(bob.record);
    const before = snapshot(bob);
    const delivery = deliver(bob, { type: 'whisper', bytes });
    expect(delivery.ok ? null : delivery.error).toMatchObject({
      code: 'SESSION_VERSION_MISMATCH',
      rule: 'WP-DR-12',
    });
    expect(snapshot(bob)).toBe(before);
    expect(deliverOk(bob, genuine)).toBe('v4');
  });

  describe('atomicity [WP-DR-11]', () => {
    const cases: ReadonlyArray<{
      label: string;
      bad: (m: CiphertextMessage, old: CiphertextMessage) => CiphertextMessage;
    }> = [
      { label: 'flipped MAC', bad: (m) => ({ type: 'whisper', bytes: flipByte(m.bytes, -2) }) },
      { label: 'flipped ciphertext', bad: (m) => ({ type: 'whisper', bytes: flipByte(m.bytes, -12) }) },
      { label: 'duplicate of an old message', bad: (_m, old) => old },
      { label: 'version 3', bad: (m) => ({ type: 'whisper', bytes: flipByte(m.bytes, 0, 0x70) }) },
      { label: 'truncated', bad: (m) => ({ type: 'whisper', bytes: m.bytes.slice(0, m.bytes.length - 1) }) },
      { label: 'too short', bad: (m) => ({ type: 'whisper', bytes: m.bytes.slice(0, 5) }) },
      { label: 'counter too far ahead', bad: (m) => rewriteSignalMessage(m, { counter: 30_000 }) },
      { label: 'sent as a PreKey message', bad: (m) => ({ type: 'prekey', bytes: m.bytes }) },
      {
        label: 'unknown ratchet key (DH step, then MAC failure)',
        bad: (m) => {
          const key = Uint8Array.from(signalMessageOf(m).ratchetKey);
          key[1] = (key[1] ?? 0) ^ 0x02;
          return rewriteSignalMessage(m, { ratchetKey: key });
        },
      },
    ];
    it.each(cases)(
      '$label: the record is unchanged and still decrypts the next genuine message',
      ({ bad }) => {
        const { alice, bob } = pair(crypto, `${seed}-atomic`);
        const old = send(alice, 'old');
        deliverOk(bob, old);
        const next = send(alice, 'next');
        const previous = bob.record;
        deepFreeze(previous);
        const before = snapshot(bob);
        const result = decryptMessage(bob.env, previous, bob.prekeys, bad(next, old));
        expect(result.ok).toBe(false);
        expect(snapshot(bob)).toBe(before);
        const retry = decryptMessage(bob.env, previous, bob.prekeys, next);
        expect(retry.ok && new TextDecoder().decode(retry.value.plaintext)).toBe('next');
      },
    );
  });
});

describe('Double Ratchet limits (node)', () => {
  const crypto = nodeProvider;

  it('chain jump over limit: 25 000 ahead accepted, 25 001 rejected [WP-DR-07] [WP-DR-11]', () => {
    const { alice, bob } = pair(crypto, 'dr-jump');
    // Alice's current chain is new to Bob: its counters 0..25 002 are encrypted and mostly dropped.
    const messages: CiphertextMessage[] = [];
    for (let i = 0; i <= 25_002; i++) messages.push(send(alice, `m${i}`));
    const at = (i: number): CiphertextMessage => {
      const m = messages[i];
      if (m === undefined) throw new Error('no such message');
      return m;
    };
    const fresh = bob.record;

    // On a chain created by this very message (index 0).
    expect(deliver(bob, at(25_001))).toMatchObject({
      ok: false,
      error: { code: 'FORWARD_JUMP_TOO_FAR', rule: 'WP-DR-07', details: { chainIndex: 0, counter: 25_001 } },
    });
    expect(bob.record).toBe(fresh);
    expect(deliverOk(bob, at(25_000))).toBe('m25000');
    expect(chainFor(bob, at(25_000)).skipped).toHaveLength(2000);
    expect(deliverOk(bob, at(24_999))).toBe('m24999');

    // On a chain already at index 1.
    bob.record = fresh;
    expect(deliverOk(bob, at(0))).toBe('m0');
    const before = snapshot(bob);
    expect(deliver(bob, at(25_002))).toMatchObject({ ok: false, error: { code: 'FORWARD_JUMP_TOO_FAR' } });
    expect(snapshot(bob)).toBe(before);
    expect(deliverOk(bob, at(25_001))).toBe('m25001');
  });

  it('skipped-key cap: skipping 2001 drops the oldest key [WP-DR-08] [WP-DR-10]', () => {
    const { alice, bob } = pair(crypto, 'dr-skip');
    const messages: CiphertextMessage[] = [];
    for (let i = 0; i <= 2001; i++) messages.push(send(alice, `m${i}`));
    const at = (i: number): CiphertextMessage => {
      const m = messages[i];
      if (m === undefined) throw new Error('no such message');
      return m;
    };
    expect(deliverOk(bob, at(2001))).toBe('m2001');
    const skipped = chainFor(bob, at(2001)).skipped.map((k) => k.index);
    expect(skipped).toHaveLength(2000);
    // Newest first; counter 0 is the one dropped.
    expect(skipped[0]).toBe(2000);
    expect(skipped[1999]).toBe(1);
    expect(expectRejectedUnchanged(bob, at(0))).toBe('DUPLICATE_MESSAGE');
    expect(deliverOk(bob, at(1))).toBe('m1');
    expect(deliverOk(bob, at(2000))).toBe('m2000');
    expect(chainFor(bob, at(2001)).skipped).toHaveLength(1998);
  });

  it('receiver-chain cap: a message held from a dropped chain fails, one from a kept chain decrypts [WP-DR-09] [WP-DR-11]', () => {
    const { alice, bob } = pair(crypto, 'dr-chains');
    // Bob holds one chain (Alice's first); each round trip adds one of Alice's chains to Bob's list.
    const held: CiphertextMessage[] = [];
    for (let trip = 1; trip <= 6; trip++) {
      held.push(send(alice, `held from alice chain ${trip}`));
      deliverOk(bob, send(alice, `delivered on alice chain ${trip}`));
      deliverOk(alice, send(bob, `bob reply ${trip}`));
    }
    expect(current(bob).receiverChains).toHaveLength(5);
    const [fromDropped, fromKept] = held;
    if (fromDropped === undefined || fromKept === undefined) throw new Error('nothing held');
    // Seven chains were created (Alice's first and six more); the two oldest are gone.
    expect(expectRejectedUnchanged(bob, fromDropped)).not.toBe('none');
    expect(deliverOk(bob, fromKept)).toBe('held from alice chain 2');
    expect(deliverOk(alice, send(bob, 'still talking'))).toBe('still talking');
  });
});
