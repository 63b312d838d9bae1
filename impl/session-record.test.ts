/**
 * Session-record scenarios (WHITEPAPER.md WP-REC-01..05): archiving, the 40-session cap, promotion
 * of the archived session that decrypts, the duplicate short-circuit, PreKey inner messages tried
 * on their own session only, the empty record, and simultaneous initiation (libsignal's
 * `simultaneous_initiate` family).
 */
import { describe, expect, it } from 'vitest';
import { nobleProvider } from '../spec/crypto/noble.js';
import { nodeProvider } from '../spec/crypto/node.js';
import {
  bundleOf,
  createParty,
  deliver,
  deliverOk,
  establishedPair,
  preKeyFields,
  rewritePreKeyMessage,
  send,
  snapshot,
  startSession,
  T0,
  type Party,
} from '../test/support/parties.js';
import type { CiphertextMessage } from './double-ratchet.js';
import {
  decryptMessage,
  decryptPreKeySignalMessage,
  decryptSignalMessage,
  decryptWithRecord,
  encryptMessage,
  isEstablished,
  isSuperseded,
  type RecordPolicy,
} from './session-record.js';
import { EMPTY_SESSION_RECORD, type SessionState } from './session-state.js';
import { parseSignalMessage } from '../spec/wire.js';

const PROVIDERS = [nobleProvider, nodeProvider].map((p) => [p.name, p] as const);
const SMALL = { oneTimePreKeys: 2, oneTimeKyberPreKeys: 1 } as const;
const LAST_RESORT_KYBER_ID = 2;

function current(party: Party): SessionState {
  const session = party.record.current;
  if (session === null) throw new Error(`${party.name} has no current session`);
  return session;
}

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');
const baseKeyOf = (message: CiphertextMessage): string => hex(preKeyFields(message).baseKey);
const currentId = (party: Party): string => hex(current(party).aliceBaseKey);
const archivedIds = (party: Party): string[] => party.record.archived.map((s) => hex(s.aliceBaseKey));

describe.each(PROVIDERS)('session records (%s)', (_name, crypto) => {
  const seed = `rec-${crypto.name}`;

  it('a new session archives the current one at the head [WP-REC-01]', () => {
    const alice = createParty('alice', crypto, seed, SMALL);
    const bob = createParty('bob', crypto, seed, SMALL);
    startSession(alice, bob, { choice: { preKeyId: 1 } });
    const first = baseKeyOf(send(alice, 'on session 1'));
    startSession(alice, bob, { choice: { preKeyId: 2 } });
    const second = baseKeyOf(send(alice, 'on session 2'));
    startSession(alice, bob, { choice: { preKeyId: null } });
    const third = baseKeyOf(send(alice, 'on session 3'));
    expect(currentId(alice)).toBe(third);
    expect(archivedIds(alice)).toEqual([second, first]);
  });

  it('promotion of the archived session that decrypts [WP-REC-02]', () => {
    const { alice, bob } = establishedPair(crypto, `${seed}-promote`, SMALL);
    const established = currentId(alice);
    // Alice starts a second session (say, after reinstalling her view of Bob); Bob keeps answering
    // on the first.
    startSession(alice, bob, { choice: { preKeyId: null, kyberPreKeyId: LAST_RESORT_KYBER_ID } });
    const fresh = currentId(alice);
    expect(archivedIds(alice)).toEqual([established]);
    expect(deliverOk(alice, send(bob, 'still on the first session'))).toBe('still on the first session');
    expect(currentId(alice)).toBe(established);
    expect(archivedIds(alice)).toEqual([fresh]);
    // The promoted session is acknowledged: Alice's next message is a plain SignalMessage.
    const next = send(alice, 'back on the first');
    expect(next.type).toBe('whisper');
    expect(deliverOk(bob, next)).toBe('back on the first');
  });

  it('no session decrypts: NO_SESSION_DECRYPTED and the record is unchanged [WP-REC-02]', () => {
    const { alice, bob } = establishedPair(crypto, `${seed}-none`, SMALL);
    startSession(alice, bob, { choice: { preKeyId: null, kyberPreKeyId: LAST_RESORT_KYBER_ID } });
    const stranger = establishedPair(crypto, `${seed}-stranger`, SMALL);
    const before = snapshot(alice);
    const delivery = deliver(alice, send(stranger.bob, 'not for you'));
    expect(delivery.ok ? null : delivery.error).toMatchObject({
      code: 'NO_SESSION_DECRYPTED',
      rule: 'WP-REC-02',
    });
    expect(snapshot(alice)).toBe(before);
  });

  it('a duplicate in the current session stops the search [WP-REC-03]', () => {
    const { alice, bob } = establishedPair(crypto, `${seed}-dupstop`, SMALL);
    const message = send(alice, 'once');
    const sessionBefore = current(bob);
    deliverOk(bob, message);
    // An archived copy of the session as it was before: it would decrypt the message again if the
    // search went on past the duplicate.
    const record = { current: current(bob), archived: [sessionBefore] };
    const parsed = parseSignalMessage(message.bytes);
    if (!parsed.ok) throw new Error('unparseable');
    expect(decryptWithRecord(bob.env, { current: sessionBefore, archived: [] }, parsed.value).ok).toBe(true);
    bob.rng.reset();
    const result = decryptWithRecord(bob.env, record, parsed.value);
    expect(result.ok ? null : result.error).toMatchObject({ code: 'DUPLICATE_MESSAGE', rule: 'WP-DR-10' });
    expect(bob.rng.draws).toEqual([]);
  });

  it('the inner message of a PreKey message naming a fresh base key is tried on the new session only [WP-REC-04]', () => {
    const { alice, bob } = establishedPair(crypto, `${seed}-inner`, SMALL);
    const onFirst = send(alice, 'first session, not yet delivered');
    expect(onFirst.type).toBe('whisper');
    startSession(alice, bob, { choice: { preKeyId: 2, kyberPreKeyId: LAST_RESORT_KYBER_ID } });
    const opener = send(alice, 'second session opener');
    // A valid PQXDH header with a fresh base key around a SignalMessage of the existing session.
    const crafted = rewritePreKeyMessage(opener, { message: onFirst.bytes });
    const before = snapshot(bob);
    const result = decryptPreKeySignalMessage(bob.env, bob.record, bob.prekeys, crafted.bytes);
    expect(result.ok).toBe(false);
    expect(snapshot(bob)).toBe(before);
    // Both genuine messages still decrypt where they belong.
    expect(deliverOk(bob, onFirst)).toBe('first session, not yet delivered');
    expect(deliverOk(bob, opener)).toBe('second session opener');
  });

  it('the inner message of a PreKey message matching a session is tried on that session only [WP-REC-04] [WP-PQXDH-10]', () => {
    const alice = createParty('alice', crypto, `${seed}-inner2`, SMALL);
    const bob = createParty('bob', crypto, `${seed}-inner2`, SMALL);
    startSession(alice, bob, { choice: { preKeyId: 1 } });
    const firstOpener = send(alice, 'session 1');
    startSession(alice, bob, { choice: { preKeyId: 2, kyberPreKeyId: LAST_RESORT_KYBER_ID } });
    const secondOpener = send(alice, 'session 2');
    const secondFollowUp = send(alice, 'session 2, again');
    deliverOk(bob, firstOpener);
    deliverOk(bob, secondOpener);
    expect(archivedIds(bob)).toEqual([baseKeyOf(firstOpener)]);
    // Session 1's header (archived at Bob) around session 2's next inner message.
    const crafted = rewritePreKeyMessage(firstOpener, { message: preKeyFields(secondFollowUp).message });
    const before = snapshot(bob);
    expect(decryptPreKeySignalMessage(bob.env, bob.record, bob.prekeys, crafted.bytes).ok).toBe(false);
    expect(snapshot(bob)).toBe(before);
    expect(deliverOk(bob, secondFollowUp)).toBe('session 2, again');
  });

  it('empty record: NO_SESSION on encrypt and decrypt [WP-REC-05]', () => {
    const { alice } = establishedPair(crypto, `${seed}-empty`, SMALL);
    const encrypted = encryptMessage(alice.env, EMPTY_SESSION_RECORD, new Uint8Array(3), T0);
    expect(encrypted.ok ? null : encrypted.error).toMatchObject({ code: 'NO_SESSION', rule: 'WP-REC-05' });
    const whisper = send(alice, 'to nobody');
    const decrypted = decryptSignalMessage(alice.env, EMPTY_SESSION_RECORD, whisper.bytes);
    expect(decrypted.ok ? null : decrypted.error).toMatchObject({ code: 'NO_SESSION', rule: 'WP-REC-05' });
  });

  describe('simultaneous initiation', () => {
    function crossed(tag: string) {
      const alice = createParty('alice', crypto, `${seed}-${tag}`, SMALL);
      const bob = createParty('bob', crypto, `${seed}-${tag}`, SMALL);
      startSession(alice, bob);
      startSession(bob, alice);
      const fromAlice = send(alice, 'hi from alice');
      const fromBob = send(bob, 'hi from bob');
      expect([fromAlice.type, fromBob.type]).toEqual(['prekey', 'prekey']);
      return { alice, bob, fromAlice, fromBob };
    }

    function expectConverged(alice: Party, bob: Party, rounds: number): void {
      for (let i = 0; i < rounds; i++) {
        const a = send(alice, `a${i}`);
        expect(a.type).toBe('whisper');
        expect(deliverOk(bob, a)).toBe(`a${i}`);
        const b = send(bob, `b${i}`);
        expect(b.type).toBe('whisper');
        expect(deliverOk(alice, b)).toBe(`b${i}`);
        expect(currentId(alice)).toBe(currentId(bob));
      }
    }

    it('simultaneous initiation [WP-REC-01] [WP-REC-02] [WP-PQXDH-10]', () => {
      const { alice, bob, fromAlice, fromBob } = crossed('simul');
      expect(deliverOk(bob, fromAlice)).toBe('hi from alice');
      expect(deliverOk(alice, fromBob)).toBe('hi from bob');
      // Each side made the other's session current and archived its own.
      expect(currentId(alice)).toBe(baseKeyOf(fromBob));
      expect(currentId(bob)).toBe(baseKeyOf(fromAlice));
      expect(archivedIds(alice)).toEqual([baseKeyOf(fromAlice)]);
      expect(archivedIds(bob)).toEqual([baseKeyOf(fromBob)]);
      // Alice answers on her current (Bob-initiated) session; Bob finds it archived and promotes it.
      const answer = send(alice, 'answer');
      expect(answer.type).toBe('whisper');
      expect(deliverOk(bob, answer)).toBe('answer');
      expect(currentId(bob)).toBe(currentId(alice));
      expectConverged(alice, bob, 3);
    });

    it('simultaneous initiation, both answer before hearing back [WP-REC-02]', () => {
      const { alice, bob, fromAlice, fromBob } = crossed('simul-both');
      deliverOk(bob, fromAlice);
      deliverOk(alice, fromBob);
      const aliceAnswer = send(alice, 'alice answers');
      const bobAnswer = send(bob, 'bob answers');
      expect(deliverOk(alice, bobAnswer)).toBe('bob answers');
      expect(deliverOk(bob, aliceAnswer)).toBe('alice answers');
      // Each promoted the session the other answered on: they cross over once more.
      expect(currentId(alice)).toBe(baseKeyOf(fromAlice));
      expect(currentId(bob)).toBe(baseKeyOf(fromBob));
      // One more message settles it: its receiver promotes the sender's current session.
      expect(deliverOk(bob, send(alice, 'settle'))).toBe('settle');
      expect(currentId(bob)).toBe(currentId(alice));
      expectConverged(alice, bob, 2);
    });

    it('simultaneous initiation with lossage [WP-REC-02] [WP-PQXDH-09]', () => {
      const { alice, bob, fromBob } = crossed('simul-loss');
      // Alice's PreKey message is lost; Bob's arrives.
      expect(deliverOk(alice, fromBob)).toBe('hi from bob');
      const answer = send(alice, 'answer');
      expect(deliverOk(bob, answer)).toBe('answer');
      expect(currentId(bob)).toBe(baseKeyOf(fromBob));
      expect(currentId(alice)).toBe(currentId(bob));
      expectConverged(alice, bob, 2);
    });
  });
});

describe('session records: archive cap (node)', () => {
  it('42 sessions keep 1 current and 40 archived; the oldest is dropped [WP-REC-01] [WP-REC-02]', () => {
    const crypto = nodeProvider;
    const alice = createParty('alice', crypto, 'rec-cap', SMALL);
    const bob = createParty('bob', crypto, 'rec-cap', SMALL);
    // No one-time prekey and the last-resort Kyber key: the same bundle serves every session.
    const bundle = bundleOf(bob, { preKeyId: null, kyberPreKeyId: LAST_RESORT_KYBER_ID });
    const baseKeys: string[] = [];
    const replies: CiphertextMessage[] = [];
    for (let i = 0; i < 42; i++) {
      startSession(alice, bob, { bundle });
      const opener = send(alice, `opener ${i}`);
      baseKeys.push(baseKeyOf(opener));
      expect(deliverOk(bob, opener)).toBe(`opener ${i}`);
      replies.push(send(bob, `reply on session ${i}`));
    }
    expect(currentId(alice)).toBe(baseKeys[41]);
    expect(archivedIds(alice)).toEqual(baseKeys.slice(1, 41).reverse());
    expect(bob.record.archived).toHaveLength(40);

    const [onDropped, onSecond] = replies;
    if (onDropped === undefined || onSecond === undefined) throw new Error('no replies');
    const before = snapshot(alice);
    const dropped = deliver(alice, onDropped);
    expect(dropped.ok ? null : dropped.error.code).toBe('NO_SESSION_DECRYPTED');
    expect(snapshot(alice)).toBe(before);

    expect(deliverOk(alice, onSecond)).toBe('reply on session 1');
    expect(currentId(alice)).toBe(baseKeys[1]);
    expect(archivedIds(alice)).toEqual([...baseKeys.slice(2, 42)].reverse());
    expect(deliverOk(bob, send(alice, 'back on session 1'))).toBe('back on session 1');
  });
});

describe('sequential sessions (node)', () => {
  const crypto = nodeProvider;
  const SEQUENTIAL = { sequentialSessions: true } as const;
  const SPEC = { sequentialSessions: false } as const;

  /** Delivers under a record policy; keeps the new record and prekeys only on success. */
  function deliverWith(
    policy: RecordPolicy,
    to: Party,
    message: CiphertextMessage,
  ): { readonly ok: true; readonly text: string } | { readonly ok: false; readonly code: string } {
    const result = decryptMessage(to.env, to.record, to.prekeys, message, policy);
    if (!result.ok) return { ok: false, code: result.error.code };
    to.record = result.value.record;
    to.prekeys = result.value.prekeys;
    return { ok: true, text: new TextDecoder().decode(result.value.plaintext) };
  }

  function okWith(policy: RecordPolicy, to: Party, message: CiphertextMessage): string {
    const d = deliverWith(policy, to, message);
    if (!d.ok) throw new Error(`${to.name} could not decrypt: ${d.code}`);
    return d.text;
  }

  /** A copy of a party as an attacker who stole its whole state would hold it. */
  function steal(party: Party, name: string): Party {
    return { ...party, name, rng: party.rng, record: party.record, prekeys: party.prekeys };
  }

  /**
   * Alice and Bob talk on session 1; Alice's state is stolen right after she received Bob's reply
   * (her next sending ratchet key unused). Bob then opens session 2 and they complete a round trip
   * on it. The thief sends on session 1: a new receiving chain for Bob.
   */
  function afterHealing(policy: RecordPolicy, seed: string) {
    const { alice, bob } = establishedPair(crypto, seed, SMALL);
    const session1 = currentId(bob);
    const thief = steal(alice, 'thief');
    startSession(bob, alice, { choice: { preKeyId: null, kyberPreKeyId: LAST_RESORT_KYBER_ID } });
    expect(okWith(policy, alice, send(bob, 'session 2 opens'))).toBe('session 2 opens');
    expect(okWith(policy, bob, send(alice, 'session 2 answer'))).toBe('session 2 answer');
    expect(okWith(policy, alice, send(bob, 'session 2 round trip'))).toBe('session 2 round trip');
    expect(isEstablished(current(bob))).toBe(true);
    expect(archivedIds(bob)).toEqual([session1]);
    return { alice, bob, thief, session1 };
  }

  it('session revival after one compromise (CJN23): spec mode makes the stolen session current again [WP-REC-02]', () => {
    const { bob, thief, session1 } = afterHealing(SPEC, 'seq-spec');
    expect(okWith(SPEC, bob, send(thief, 'from the thief'))).toBe('from the thief');
    expect(currentId(bob)).toBe(session1);
    // Bob's next message goes on session 1, where the thief reads it.
    expect(okWith(SPEC, thief, send(bob, 'for alice only'))).toBe('for alice only');
  });

  it('session revival after one compromise (CJN23): a superseded session starts no new chain and never becomes current [WP-SES-18] [WP-SES-19]', () => {
    const { alice, bob, thief } = afterHealing(SEQUENTIAL, 'seq-hard');
    const session2 = currentId(bob);
    const before = snapshot(bob);
    const attack = deliverWith(SEQUENTIAL, bob, send(thief, 'from the thief'));
    // Session 2 fails its MAC, session 1 is refused before any DH step: two sessions tried.
    expect(attack).toEqual({ ok: false, code: 'NO_SESSION_DECRYPTED' });
    expect(snapshot(bob)).toBe(before);
    // Bob keeps sending on session 2, which the thief cannot read and Alice can.
    const next = send(bob, 'for alice only');
    expect(currentId(bob)).toBe(session2);
    expect(deliverWith(SEQUENTIAL, thief, next).ok).toBe(false);
    expect(okWith(SEQUENTIAL, alice, next)).toBe('for alice only');
  });

  it('a superseded session refuses a new chain with SESSION_SUPERSEDED and still decrypts on chains it holds [WP-SES-18]', () => {
    const alice = createParty('alice', crypto, 'seq-held', SMALL);
    const bob = createParty('bob', crypto, 'seq-held', SMALL);
    startSession(alice, bob);
    const opener = send(alice, 'hello');
    okWith(SEQUENTIAL, bob, opener);
    okWith(SEQUENTIAL, alice, send(bob, 'reply'));
    // Two messages on Alice's next chain of session 1; the second arrives late.
    const early = send(alice, 'early');
    const late = send(alice, 'late');
    expect(okWith(SEQUENTIAL, bob, early)).toBe('early');
    okWith(SEQUENTIAL, alice, send(bob, 'reply 2'));
    const thief = steal(alice, 'thief');
    // Session 2 from Bob, with a round trip: session 1 is now superseded at Bob.
    startSession(bob, alice, { choice: { preKeyId: null, kyberPreKeyId: LAST_RESORT_KYBER_ID } });
    okWith(SEQUENTIAL, alice, send(bob, 's2 open'));
    okWith(SEQUENTIAL, bob, send(alice, 's2 answer'));
    okWith(SEQUENTIAL, alice, send(bob, 's2 again'));
    expect(isSuperseded(bob.record, 0)).toBe(true);
    // The delayed message is on a chain session 1 holds: it decrypts, and session 2 stays current.
    const session2 = currentId(bob);
    expect(okWith(SEQUENTIAL, bob, late)).toBe('late');
    expect(currentId(bob)).toBe(session2);
    // A new chain on session 1, wrapped in session 1's PreKey header so that only session 1 is
    // tried (WP-REC-04): refused with its own code, nothing drawn, nothing changed.
    const newChain = send(thief, 'new chain');
    const wrapped = rewritePreKeyMessage(opener, { message: newChain.bytes });
    bob.rng.reset();
    const before = snapshot(bob);
    expect(deliverWith(SEQUENTIAL, bob, wrapped)).toEqual({ ok: false, code: 'SESSION_SUPERSEDED' });
    expect(snapshot(bob)).toBe(before);
    expect(bob.rng.draws).toEqual([]);
    // Spec mode takes it: a DH step (one draw), and session 1 becomes current again.
    expect(okWith(SPEC, bob, wrapped)).toBe('new chain');
    expect(bob.rng.draws).toEqual([32]);
    expect(currentId(bob)).toBe(baseKeyOf(opener));
  });

  it('simultaneous initiation with crossing replies settles on the greater base key on both sides [WP-SES-19]', () => {
    for (const tag of ['a', 'b', 'c', 'd']) {
      const alice = createParty('alice', crypto, `seq-cross-${tag}`, SMALL);
      const bob = createParty('bob', crypto, `seq-cross-${tag}`, SMALL);
      startSession(alice, bob);
      startSession(bob, alice);
      const fromAlice = send(alice, 'hi from alice');
      const fromBob = send(bob, 'hi from bob');
      const greater = [baseKeyOf(fromAlice), baseKeyOf(fromBob)].sort()[1];
      okWith(SEQUENTIAL, bob, fromAlice);
      okWith(SEQUENTIAL, alice, fromBob);
      // Both answer at once, each on the session it made current, and the answers cross.
      const a1 = send(alice, 'a1');
      const b1 = send(bob, 'b1');
      expect(okWith(SEQUENTIAL, bob, a1)).toBe('a1');
      expect(okWith(SEQUENTIAL, alice, b1)).toBe('b1');
      expect(currentId(alice)).toBe(greater);
      expect(currentId(bob)).toBe(greater);
      // From now on they ratchet on that one session, crossing or not.
      for (let i = 0; i < 3; i++) {
        const a = send(alice, `a${i + 2}`);
        const b = send(bob, `b${i + 2}`);
        expect(okWith(SEQUENTIAL, bob, a)).toBe(`a${i + 2}`);
        expect(okWith(SEQUENTIAL, alice, b)).toBe(`b${i + 2}`);
        expect(currentId(alice)).toBe(greater);
        expect(currentId(bob)).toBe(greater);
      }
      expect(isEstablished(current(alice)) && isEstablished(current(bob))).toBe(true);
    }
  });
});
