/**
 * Validates the libsignal-client harness on its own (libsignal ⇄ libsignal) before our
 * implementation is plugged in, and pins the wire facts observed from @signalapp/libsignal-client
 * 0.90.0 that the interop tests rely on.
 */
import { describe, expect, it } from 'vitest';
import { WireType } from '@bufbuild/protobuf/wire';
import {
  LibsignalParty,
  attempt,
  bundleFromPlain,
  protobufFields,
  splitPreKeyMessage,
  splitSignalMessage,
  type WireField,
  type WireMessage,
} from './libsignal-party.js';

const FULL = process.env['LOCKSTEP_FULL'] !== undefined && process.env['LOCKSTEP_FULL'] !== '';
const te = new TextEncoder();
const td = new TextDecoder();

function fieldNumbers(fields: readonly WireField[]): number[] {
  return fields.map((f) => f.field);
}

function field(fields: readonly WireField[], n: number): WireField {
  const f = fields.find((x) => x.field === n);
  if (f === undefined) throw new Error(`field ${n} missing`);
  return f;
}

function bytesOf(f: WireField): Uint8Array {
  if (typeof f.value === 'number') throw new Error(`field ${f.field} is a varint`);
  return f.value;
}

/** alice (initiator, device 1) and bob (responder, device 2) with an established session. */
async function pair(opts: { withOneTimePreKey?: boolean; kyber?: 'one-time' | 'last-resort' } = {}) {
  const alice = LibsignalParty.create('alice', 1);
  const bob = LibsignalParty.create('bob', 2);
  await alice.processBundle({ name: 'bob', deviceId: 2 }, bob.bundle(opts));
  const send = (from: LibsignalParty, to: LibsignalParty, text: string): Promise<WireMessage> =>
    from.encrypt(to.name, to.deviceId, te.encode(text));
  const recv = async (to: LibsignalParty, from: LibsignalParty, m: WireMessage): Promise<string> =>
    td.decode(await to.decrypt(from.name, from.deviceId, m));
  return { alice, bob, send, recv };
}

describe('libsignal harness: conversations (libsignal ⇄ libsignal)', () => {
  for (const opts of [
    { withOneTimePreKey: true, kyber: 'one-time' as const },
    { withOneTimePreKey: false, kyber: 'one-time' as const },
    { withOneTimePreKey: true, kyber: 'last-resort' as const },
    { withOneTimePreKey: false, kyber: 'last-resort' as const },
  ]) {
    it(`full conversation, many rounds (opk=${opts.withOneTimePreKey}, kyber=${opts.kyber})`, async () => {
      const { alice, bob, send, recv } = await pair(opts);
      // Alice keeps sending PreKey messages until a reply arrives [WP-PQXDH-09].
      const first = await send(alice, bob, 'hello 0');
      const second = await send(alice, bob, 'hello 1');
      expect(first.type).toBe('prekey');
      expect(second.type).toBe('prekey');
      expect(await recv(bob, alice, first)).toBe('hello 0');
      expect(await recv(bob, alice, second)).toBe('hello 1');
      const reply = await send(bob, alice, 'reply');
      expect(reply.type).toBe('whisper');
      expect(await recv(alice, bob, reply)).toBe('reply');
      expect((await send(alice, bob, 'after reply')).type).toBe('whisper');
      // Consumed one-time keys are gone; a last-resort Kyber key stays.
      const kyberUse = bob.kyberPreKeys.used;
      expect(kyberUse).toHaveLength(1);
      if (opts.kyber === 'last-resort')
        expect(bob.kyberPreKeys.records.has(bob.lastResortKyberId)).toBe(true);
      else expect(bob.kyberPreKeys.records.has(kyberUse[0]?.id ?? -1)).toBe(false);
      expect(bob.preKeys.removed).toHaveLength(opts.withOneTimePreKey ? 1 : 0);

      // Many rounds, with bursts in each direction.
      for (let round = 0; round < 30; round++) {
        const burstA = 1 + (round % 3);
        for (let i = 0; i < burstA; i++) {
          const m = await send(alice, bob, `a${round}.${i}`);
          expect(await recv(bob, alice, m)).toBe(`a${round}.${i}`);
        }
        const burstB = 1 + ((round + 1) % 4);
        for (let i = 0; i < burstB; i++) {
          const m = await send(bob, alice, `b${round}.${i}`);
          expect(m.type).toBe('whisper');
          expect(await recv(alice, bob, m)).toBe(`b${round}.${i}`);
        }
      }
    });
  }

  it('out-of-order delivery within a chain and across DH ratchet steps [WP-DR-06] [WP-DR-08]', async () => {
    const { alice, bob, send, recv } = await pair();
    expect(await recv(bob, alice, await send(alice, bob, 'start'))).toBe('start');
    expect(await recv(alice, bob, await send(bob, alice, 'ack'))).toBe('ack');

    // Alice sends chain 1 (5 messages), Bob replies (forcing a DH step on Alice's side once
    // delivered), Alice sends chain 2 (5 messages). Bob receives chain 2 first, reversed, then
    // chain 1 shuffled.
    const chain1: WireMessage[] = [];
    for (let i = 0; i < 5; i++) chain1.push(await send(alice, bob, `c1.${i}`));
    const b1 = await send(bob, alice, 'b1');
    expect(await recv(alice, bob, b1)).toBe('b1');
    const chain2: WireMessage[] = [];
    for (let i = 0; i < 5; i++) chain2.push(await send(alice, bob, `c2.${i}`));
    for (let i = 4; i >= 0; i--) expect(await recv(bob, alice, chain2[i] as WireMessage)).toBe(`c2.${i}`);
    for (const i of [3, 0, 4, 2, 1]) expect(await recv(bob, alice, chain1[i] as WireMessage)).toBe(`c1.${i}`);
    // Everything delivered once; every redelivery is a duplicate [WP-DR-10].
    for (const m of [...chain1, ...chain2]) {
      const r = await attempt(() => bob.decrypt('alice', 1, m));
      expect(r.ok ? 'ok' : r.kind).toBe('duplicate');
    }
  });

  it('a duplicate is rejected and classified "duplicate" [WP-DR-10]', async () => {
    const { alice, bob, send, recv } = await pair();
    expect(await recv(bob, alice, await send(alice, bob, 'x'))).toBe('x');
    const reply = await send(bob, alice, 'y');
    expect(await recv(alice, bob, reply)).toBe('y');
    const r = await attempt(() => alice.decrypt('bob', 2, reply));
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.kind).toBe('duplicate');
      expect(r.message).toMatch(/old counter/);
    }
  });

  it('a retransmitted PreKey message is a duplicate, not a new session [WP-PQXDH-10]', async () => {
    const { alice, bob, send, recv } = await pair();
    const m = await send(alice, bob, 'once');
    expect(await recv(bob, alice, m)).toBe('once');
    const before = bob.sessions.snapshot(alice.address);
    const r = await attempt(() => bob.decrypt('alice', 1, m));
    expect(r.ok ? 'ok' : r.kind).toBe('duplicate');
    expect(bob.sessions.snapshot(alice.address)).toEqual(before);
    // A second PreKey message (same base key) still works after the retransmission.
    expect(await recv(bob, alice, await send(alice, bob, 'twice'))).toBe('twice');
  });

  it('a tampered MAC is rejected and the state is left untouched [WP-DR-05] [WP-DR-11]', async () => {
    const { alice, bob, send, recv } = await pair();
    expect(await recv(bob, alice, await send(alice, bob, 'x'))).toBe('x');
    expect(await recv(alice, bob, await send(bob, alice, 'y'))).toBe('y');
    const m = await send(alice, bob, 'z');
    expect(m.type).toBe('whisper');
    const tampered = new Uint8Array(m.bytes);
    tampered[tampered.length - 1] = (tampered[tampered.length - 1] ?? 0) ^ 0x01;
    const before = bob.sessions.snapshot(alice.address);
    const r = await attempt(() => bob.decrypt('alice', 1, { type: 'whisper', bytes: tampered }));
    expect(r.ok ? 'ok' : r.kind).toBe('invalid-message');
    if (!r.ok) {
      expect(r.message).toBe('invalid Whisper message: decryption failed');
      expect(r.reasons).toEqual(['invalid Whisper message: MAC verification failed']);
    }
    expect(bob.sessions.snapshot(alice.address)).toEqual(before);
    expect(await recv(bob, alice, m)).toBe('z');

    // Tampering with the body (ciphertext field) is also a MAC failure.
    const m2 = await send(alice, bob, 'w');
    const t2 = new Uint8Array(m2.bytes);
    t2[t2.length - 9 - 40] = (t2[t2.length - 9 - 40] ?? 0) ^ 0x80;
    const r2 = await attempt(() => bob.decrypt('alice', 1, { type: 'whisper', bytes: t2 }));
    expect(r2.ok ? 'ok' : r2.kind).toBe('invalid-message');
    expect(await recv(bob, alice, m2)).toBe('w');
  });

  it('a tampered inner MAC inside a PreKey message is rejected; the one-time keys survive', async () => {
    const { alice, bob, send, recv } = await pair();
    const m = await send(alice, bob, 'x');
    const tampered = new Uint8Array(m.bytes);
    tampered[tampered.length - 1] = (tampered[tampered.length - 1] ?? 0) ^ 0x01; // inner MAC is last
    const r = await attempt(() => bob.decrypt('alice', 1, { type: 'prekey', bytes: tampered }));
    expect(r.ok ? 'ok' : r.kind).toBe('invalid-message');
    if (!r.ok) expect(r.reasons).toEqual(['invalid PreKey message: MAC verification failed']);
    expect(bob.preKeys.removed).toEqual([]);
    expect(bob.kyberPreKeys.used).toEqual([]);
    expect(await bob.session('alice', 1)).toBeNull();
    expect(await recv(bob, alice, m)).toBe('x');
  });

  it('a bundle with a bad signed-prekey or Kyber signature is rejected [WP-PQXDH-01]', async () => {
    const alice = LibsignalParty.create('alice', 1);
    const bob = LibsignalParty.create('bob', 2);
    const b = bob.bundle();
    const badSpk = new Uint8Array(b.signedPreKeySignature);
    badSpk[0] = (badSpk[0] ?? 0) ^ 1;
    const r1 = await attempt(() =>
      alice.processBundle({ name: 'bob', deviceId: 2 }, { ...b, signedPreKeySignature: badSpk }),
    );
    expect(r1.ok ? 'ok' : r1.kind).toBe('invalid-signature');
    const badKyber = new Uint8Array(b.kyberPreKeySignature);
    badKyber[10] = (badKyber[10] ?? 0) ^ 1;
    const r2 = await attempt(() =>
      alice.processBundle({ name: 'bob', deviceId: 2 }, { ...b, kyberPreKeySignature: badKyber }),
    );
    expect(r2.ok ? 'ok' : r2.kind).toBe('invalid-signature');
    // Signature over the other key (swap SPK and identity): rejected too.
    const r3 = await attempt(() =>
      alice.processBundle({ name: 'bob', deviceId: 2 }, { ...b, signedPreKey: b.identityKey }),
    );
    expect(r3.ok ? 'ok' : r3.kind).toBe('invalid-signature');
    expect(await alice.session('bob', 2)).toBeNull();
    await alice.processBundle({ name: 'bob', deviceId: 2 }, b);
    expect(await alice.session('bob', 2)).not.toBeNull();
  });

  it('no session, missing prekeys and untrusted identities are classified', async () => {
    const carol = LibsignalParty.create('carol', 3);
    const r0 = await attempt(() => carol.encrypt('bob', 2, te.encode('x')));
    expect(r0.ok ? 'ok' : r0.kind).toBe('no-session');

    const { alice, bob, send } = await pair();
    const m = await send(alice, bob, 'x');
    const r1 = await attempt(() =>
      carol.decrypt('alice', 1, {
        type: 'whisper',
        bytes: field(protobufFields(splitPreKeyMessage(m.bytes).body), 4).value as Uint8Array,
      }),
    );
    expect(r1.ok ? 'ok' : r1.kind).toBe('no-session');
    // The one-time prekey is gone (e.g. consumed by someone else) [WP-PQXDH-06].
    const opkId = field(protobufFields(splitPreKeyMessage(m.bytes).body), 1).value as number;
    await bob.preKeys.removePreKey(opkId);
    const r2 = await attempt(() => bob.decrypt('alice', 1, m));
    expect(r2.ok ? 'ok' : r2.kind).toBe('invalid-key-id');

    // Bob's identity changes: Alice refuses the new bundle unless she trusts everything.
    const bob2 = LibsignalParty.create('bob', 2);
    const r3 = await attempt(() => alice.processBundle({ name: 'bob', deviceId: 2 }, bob2.bundle()));
    expect(r3.ok ? 'ok' : r3.kind).toBe('untrusted-identity');
    alice.identityStore.trustAll = true;
    await alice.processBundle({ name: 'bob', deviceId: 2 }, bob2.bundle());
    expect(alice.identityStore.changes).toEqual(['bob.2']);
  });

  it('a peer re-initiating: new session, then an old-session message promotes the old one [WP-REC-02]', async () => {
    const { alice, bob, send, recv } = await pair();
    expect(await recv(bob, alice, await send(alice, bob, 'a0'))).toBe('a0');
    expect(await recv(alice, bob, await send(bob, alice, 'b0'))).toBe('b0');
    const late = await send(alice, bob, 'late, old session');
    // Alice starts over from a fresh bundle; her old session is archived.
    await alice.processBundle({ name: 'bob', deviceId: 2 }, bob.bundle());
    const fresh = await send(alice, bob, 'new session');
    expect(fresh.type).toBe('prekey');
    expect(await recv(bob, alice, fresh)).toBe('new session');
    // The late message decrypts with Bob's archived session, which becomes current again.
    expect(await recv(bob, alice, late)).toBe('late, old session');
    const bobReply = await send(bob, alice, 'reply on promoted session');
    expect(await recv(alice, bob, bobReply)).toBe('reply on promoted session');
  });

  // ~6 s (25003 libsignal encryptions); runs with LOCKSTEP_FULL.
  it.skipIf(!FULL)(
    'forward jump between two libsignal parties: "too far" past 25000, SPQR stricter by one [WP-DR-07] [WP-DR-08]',
    async () => {
      const { alice, bob, send, recv } = await pair({ withOneTimePreKey: false });
      expect(await recv(bob, alice, await send(alice, bob, 'a0'))).toBe('a0');
      expect(await recv(alice, bob, await send(bob, alice, 'b0'))).toBe('b0');
      // Alice's new chain: counters 0 .. 25002. Bob first sees counter 0, so his chain index (the
      // next expected counter) is 1; counter c is c − 1 ahead of the chain.
      const msgs: WireMessage[] = [];
      for (let i = 0; i <= 25002; i++) msgs.push(await alice.encrypt('bob', 2, te.encode(String(i))));
      expect(msgs[0]?.type).toBe('whisper');
      expect(await recv(bob, alice, msgs[0] as WireMessage)).toBe('0');
      // 25001 ahead: the classical MAX_FORWARD_JUMPS check. JS sees only the generic error; the
      // reason is in libsignal's log.
      const tooFar = await attempt(() => bob.decrypt('alice', 1, msgs[25002] as WireMessage));
      expect(tooFar.ok ? 'ok' : tooFar.kind).toBe('too-far');
      if (!tooFar.ok) {
        expect(tooFar.message).toBe('invalid Whisper message: decryption failed');
        expect(tooFar.reasons).toEqual(['invalid Whisper message: message from too far into the future']);
      }
      // Exactly 25000 ahead: between two libsignal 0.90 parties SPQR is active, and its own chain
      // rejects this jump (max_jump 25000 counted one step stricter). A session downgraded to no
      // SPQR (a peer that sends no pq_ratchet) only has the classical check.
      const spqr = await attempt(() => bob.decrypt('alice', 1, msgs[25001] as WireMessage));
      expect(spqr.ok ? 'ok' : spqr.kind).toBe('invalid-message');
      if (!spqr.ok) expect(spqr.reasons).toEqual(['invalid Whisper message: post-quantum ratchet error']);
      // 24999 ahead: accepted; counters 1..24999 are skipped.
      expect(await recv(bob, alice, msgs[25000] as WireMessage)).toBe('25000');
      expect(await recv(bob, alice, msgs[25002] as WireMessage)).toBe('25002');
      expect(await recv(bob, alice, msgs[25001] as WireMessage)).toBe('25001');
      // Only 2000 skipped keys are kept: after counter 25000, counters 23000..24999; skipping 25001
      // (to read 25002) stored one more and dropped 23000. A message needing a dropped key fails as
      // a duplicate. SPQR keeps its own skipped keys and again holds one fewer: 23001 still has a
      // classical key but SPQR has dropped its half.
      expect(await recv(bob, alice, msgs[24999] as WireMessage)).toBe('24999');
      expect(await recv(bob, alice, msgs[23002] as WireMessage)).toBe('23002');
      const spqrDropped = await attempt(() => bob.decrypt('alice', 1, msgs[23001] as WireMessage));
      expect(spqrDropped.ok ? 'ok' : spqrDropped.reasons).toEqual([
        'invalid Whisper message: post-quantum ratchet error',
      ]);
      for (const k of [23000, 22999, 1]) {
        const dropped = await attempt(() => bob.decrypt('alice', 1, msgs[k] as WireMessage));
        expect(dropped.ok ? 'ok' : dropped.kind).toBe('duplicate');
      }
    },
    60_000,
  );
});

describe('libsignal 0.90.0 wire facts (observed)', () => {
  it('every message starts with 0x44; PreKey message fields are 1..8 in ascending order [WP-WIRE-01] [WP-WIRE-03]', async () => {
    const { alice, bob, send, recv } = await pair({ withOneTimePreKey: true, kyber: 'one-time' });
    const b = bob.bundle();
    expect(b.identityKey).toHaveLength(33);
    expect(b.identityKey[0]).toBe(0x05);
    expect(b.signedPreKey).toHaveLength(33);
    expect(b.signedPreKey[0]).toBe(0x05);
    expect(b.preKey).toHaveLength(33);
    expect(b.signedPreKeySignature).toHaveLength(64);
    expect(b.kyberPreKey).toHaveLength(1569);
    expect(b.kyberPreKey[0]).toBe(0x08);
    expect(b.kyberPreKeySignature).toHaveLength(64);
    expect(bundleFromPlain(b).kyberPreKeyId()).toBe(b.kyberPreKeyId);

    const m = await send(alice, bob, 'hi');
    expect(m.type).toBe('prekey');
    const pk = splitPreKeyMessage(m.bytes);
    expect(pk.version).toBe(0x44);
    const fields = protobufFields(pk.body);
    // Observed order: 1 pre_key_id, 2 base_key, 3 identity_key, 4 message, 5 registration_id,
    // 6 signed_pre_key_id, 7 kyber_pre_key_id, 8 kyber_ciphertext (ascending tags).
    expect(fieldNumbers(fields)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    const wt = fields.map((f) => f.wireType);
    expect(wt).toEqual([
      WireType.Varint,
      WireType.LengthDelimited,
      WireType.LengthDelimited,
      WireType.LengthDelimited,
      WireType.Varint,
      WireType.Varint,
      WireType.Varint,
      WireType.LengthDelimited,
    ]);
    const session = await alice.session('bob', 2);
    expect(field(fields, 5).value).toBe(alice.registrationId);
    expect(session?.localRegistrationId()).toBe(alice.registrationId);
    expect(field(fields, 6).value).toBe(bob.signedPreKeyId);
    expect(bytesOf(field(fields, 2))).toHaveLength(33); // base key
    expect(bytesOf(field(fields, 2))[0]).toBe(0x05);
    expect(bytesOf(field(fields, 3))).toEqual(alice.identityKey);
    const ct = bytesOf(field(fields, 8));
    expect(ct).toHaveLength(1569);
    expect(ct[0]).toBe(0x08);
    // No trailing MAC on the outer message: the protobuf runs to the end.
    const inner = bytesOf(field(fields, 4));
    const sm = splitSignalMessage(inner);
    expect(sm.version).toBe(0x44);
    const innerFields = protobufFields(sm.body);
    // Observed: 1 ratchet_key, 2 counter, 3 previous_counter, 4 ciphertext, 5 pq_ratchet (SPQR
    // offer), in ascending order; counter and previous_counter are written even when 0; no field 6.
    expect(fieldNumbers(innerFields)).toEqual([1, 2, 3, 4, 5]);
    expect(field(innerFields, 2).value).toBe(0);
    expect(field(innerFields, 3).value).toBe(0);
    expect(bytesOf(field(innerFields, 1))).toHaveLength(33);
    expect(bytesOf(field(innerFields, 4))).toHaveLength(16); // "hi" ⇒ one AES-CBC block
    expect(bytesOf(field(innerFields, 5)).length).toBeGreaterThan(0);
    // Total size with a one-time prekey: ~1761 B (varint ids vary by a byte or two).
    expect(m.bytes.length).toBeGreaterThan(1740);
    expect(m.bytes.length).toBeLessThan(1780);

    // Without a one-time prekey, field 1 is simply absent.
    const carol = LibsignalParty.create('carol', 3);
    await carol.processBundle(
      { name: 'bob', deviceId: 2 },
      bob.bundle({ withOneTimePreKey: false, kyber: 'last-resort' }),
    );
    const m2 = await carol.encrypt('bob', 2, te.encode('hi'));
    const f2 = protobufFields(splitPreKeyMessage(m2.bytes).body);
    expect(fieldNumbers(f2)).toEqual([2, 3, 4, 5, 6, 7, 8]);
    expect(field(f2, 7).value).toBe(bob.lastResortKyberId);

    // Replies and later messages: all SignalMessages start with 0x44, end with an 8-byte MAC.
    expect(await recv(bob, alice, m)).toBe('hi');
    const seen: WireMessage[] = [];
    for (let i = 0; i < 6; i++) {
      const r = await send(bob, alice, `r${i}`);
      seen.push(r);
      expect(await recv(alice, bob, r)).toBe(`r${i}`);
      const a = await send(alice, bob, `a${i}`);
      seen.push(a);
      expect(await recv(bob, alice, a)).toBe(`a${i}`);
    }
    for (const s of seen) {
      expect(s.type).toBe('whisper');
      expect(s.bytes[0]).toBe(0x44);
      const { body, mac } = splitSignalMessage(s.bytes);
      expect(mac).toHaveLength(8);
      expect(fieldNumbers(protobufFields(body))).toEqual([1, 2, 3, 4, 5]);
    }
  });

  it('SignalMessage counters and previous_counter as written [WP-WIRE-02]', async () => {
    const { alice, bob, send, recv } = await pair();
    expect(await recv(bob, alice, await send(alice, bob, 'a0'))).toBe('a0');
    const bs: WireMessage[] = [];
    for (let i = 0; i < 3; i++) bs.push(await send(bob, alice, `b${i}`));
    const counters = bs.map((m) => {
      const f = protobufFields(splitSignalMessage(m.bytes).body);
      return [field(f, 2).value, field(f, 3).value];
    });
    expect(counters).toEqual([
      [0, 0],
      [1, 0],
      [2, 0],
    ]);
    for (const [i, m] of bs.entries()) expect(await recv(alice, bob, m)).toBe(`b${i}`);
    // Alice sent 1 message on her first chain (index 1 ⇒ previous_counter = 0), then 2 more.
    const as: WireMessage[] = [];
    for (let i = 0; i < 2; i++) as.push(await send(alice, bob, `a${i + 1}`));
    for (const [i, m] of as.entries()) expect(await recv(bob, alice, m)).toBe(`a${i + 1}`);
    const next = await send(bob, alice, 'b3');
    const f = protobufFields(splitSignalMessage(next.bytes).body);
    // Bob's previous chain had 3 messages (indices 0..2) ⇒ previous_counter = 2.
    expect([field(f, 2).value, field(f, 3).value]).toEqual([0, 2]);
  });
});
