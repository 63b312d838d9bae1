/**
 * Interoperability of our implementation (impl/, both crypto providers) with
 * @signalapp/libsignal-client 0.90.0 in both roles: our initiator ⇄ libsignal responder and
 * libsignal initiator ⇄ our responder. Behaviour is compared, never transcripts (libsignal takes no
 * RNG). libsignal 0.90 offers SPQR in `pq_ratchet`; we send none, so every mixed session is
 * downgraded to the classical Double Ratchet, which is what these tests pin.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { nobleProvider } from '../../spec/crypto/noble.js';
import { nodeProvider } from '../../spec/crypto/node.js';
import type { CryptoProvider } from '../../spec/crypto/provider.js';
import type { ProtocolError } from '../../spec/errors.js';
import { seededRng } from '../../spec/rng.js';
import {
  LibsignalParty,
  attempt,
  protobufFields,
  splitPreKeyMessage,
  splitSignalMessage,
  type BundleOptions,
  type LibsignalErrorClass,
  type PlainBundle,
  type WireMessage,
} from './libsignal-party.js';
import { OursParty } from './ours-party.js';

const FULL = process.env['LOCKSTEP_FULL'] !== undefined && process.env['LOCKSTEP_FULL'] !== '';
const te = new TextEncoder();
const td = new TextDecoder();

// ---------------------------------------------------------------------------------------------
// A common face for both implementations
// ---------------------------------------------------------------------------------------------

type Outcome =
  | { readonly ok: true; readonly plaintext: Uint8Array }
  | { readonly ok: false; readonly kind: LibsignalErrorClass; readonly detail: string };

/** Our rejection codes mapped onto the harness's coarse classes. */
function classifyOurs(e: ProtocolError): LibsignalErrorClass {
  switch (e.code) {
    case 'DUPLICATE_MESSAGE':
      return 'duplicate';
    case 'FORWARD_JUMP_TOO_FAR':
      return 'too-far';
    case 'NO_SESSION':
      return 'no-session';
    case 'BUNDLE_SIGNATURE_INVALID':
    case 'SIGNATURE_INVALID':
      return 'invalid-signature';
    case 'UNKNOWN_SIGNED_PREKEY':
    case 'UNKNOWN_ONE_TIME_PREKEY':
    case 'UNKNOWN_KYBER_PREKEY':
      return 'invalid-key-id';
    default:
      return 'invalid-message';
  }
}

interface Endpoint {
  readonly impl: 'ours' | 'libsignal';
  readonly name: string;
  readonly deviceId: number;
  bundle(opts?: BundleOptions): PlainBundle;
  processBundle(peer: Endpoint, bundle: PlainBundle): Promise<Outcome>;
  encrypt(peer: Endpoint, plaintext: Uint8Array): Promise<WireMessage>;
  decrypt(peer: Endpoint, message: WireMessage): Promise<Outcome>;
  /** A value that compares equal (toEqual) iff the session record with `peer` is unchanged. */
  state(peer: Endpoint): unknown;
  /** Ids of one-time EC prekeys still held / Kyber prekeys still held. */
  heldPreKeys(): { readonly ec: number[]; readonly kyber: number[] };
}

function oursEndpoint(
  name: string,
  deviceId: number,
  provider: CryptoProvider,
  seed: string,
): Endpoint & {
  party: OursParty;
} {
  const party = OursParty.create(name, deviceId, provider, seededRng(seed));
  return {
    impl: 'ours',
    name,
    deviceId,
    party,
    bundle: (opts) => party.bundle(opts),
    async processBundle(peer, bundle) {
      const r = party.processBundle({ name: peer.name, deviceId: peer.deviceId }, bundle);
      return r.ok
        ? { ok: true, plaintext: new Uint8Array() }
        : { ok: false, kind: classifyOurs(r.error), detail: r.error.code };
    },
    async encrypt(peer, plaintext) {
      return party.encryptOrThrow(peer.name, peer.deviceId, plaintext);
    },
    async decrypt(peer, message) {
      const r = party.decrypt(peer.name, peer.deviceId, message);
      return r.ok
        ? { ok: true, plaintext: r.value }
        : { ok: false, kind: classifyOurs(r.error), detail: r.error.code };
    },
    state: (peer) => party.record(peer.name, peer.deviceId),
    heldPreKeys: () => ({
      ec: party.prekeys.oneTimePreKeys.map((k) => k.keyId),
      kyber: party.prekeys.kyberPreKeys.map((k) => k.keyId),
    }),
  };
}

function libsignalEndpoint(name: string, deviceId: number): Endpoint & { party: LibsignalParty } {
  const party = LibsignalParty.create(name, deviceId);
  return {
    impl: 'libsignal',
    name,
    deviceId,
    party,
    bundle: (opts) => party.bundle(opts),
    async processBundle(peer, bundle) {
      const r = await attempt(() =>
        party.processBundle({ name: peer.name, deviceId: peer.deviceId }, bundle),
      );
      return r.ok
        ? { ok: true, plaintext: new Uint8Array() }
        : { ok: false, kind: r.kind, detail: r.message };
    },
    encrypt: (peer, plaintext) => party.encrypt(peer.name, peer.deviceId, plaintext),
    async decrypt(peer, message) {
      const r = await attempt(() => party.decrypt(peer.name, peer.deviceId, message));
      return r.ok
        ? { ok: true, plaintext: r.value }
        : { ok: false, kind: r.kind, detail: [r.message, ...r.reasons].join(' | ') };
    },
    state: (peer) => party.snapshot(peer.name, peer.deviceId),
    heldPreKeys: () => ({
      ec: [...party.preKeys.records.keys()],
      kyber: [...party.kyberPreKeys.records.keys()],
    }),
  };
}

type Role = 'ours' | 'libsignal';

interface Pair {
  /** The initiator (processes the responder's bundle). */
  readonly a: Endpoint;
  /** The responder. */
  readonly b: Endpoint;
  /** The bundle the initiator used. */
  readonly bundle: PlainBundle;
}

/** Creates the two endpoints and has the initiator process the responder's bundle. */
async function setup(
  provider: CryptoProvider,
  initiator: Role,
  bundleOpts: BundleOptions = {},
  seed = 'interop',
): Promise<Pair> {
  const ours = (name: string, deviceId: number) => oursEndpoint(name, deviceId, provider, `${seed}:${name}`);
  const a = initiator === 'ours' ? ours('alice', 1) : libsignalEndpoint('alice', 1);
  const b = initiator === 'ours' ? libsignalEndpoint('bob', 2) : ours('bob', 2);
  const bundle = b.bundle(bundleOpts);
  const processed = await a.processBundle(b, bundle);
  if (!processed.ok) throw new Error(`bundle rejected: ${processed.detail}`);
  return { a, b, bundle };
}

async function send(from: Endpoint, to: Endpoint, text: string): Promise<WireMessage> {
  return from.encrypt(to, te.encode(text));
}

/** Delivers and expects success with the given text. */
async function deliver(to: Endpoint, from: Endpoint, m: WireMessage, text: string): Promise<void> {
  const r = await to.decrypt(from, m);
  if (!r.ok) throw new Error(`${to.impl} rejected "${text}" from ${from.impl}: ${r.kind} (${r.detail})`);
  expect(td.decode(r.plaintext)).toBe(text);
}

/** Delivers and expects a rejection of the given class; the receiver's state must not change. */
async function expectRejected(
  to: Endpoint,
  from: Endpoint,
  m: WireMessage,
  kind: LibsignalErrorClass,
): Promise<string> {
  const before = to.state(from);
  const r = await to.decrypt(from, m);
  expect(r.ok ? 'accepted' : r.kind, `${to.impl} receiving from ${from.impl}`).toBe(kind);
  expect(to.state(from)).toEqual(before);
  return r.ok ? '' : r.detail;
}

/** Round trip so both sides have sending chains and the initiator stops PreKey wrapping. */
async function establish(p: Pair): Promise<void> {
  await deliver(p.b, p.a, await send(p.a, p.b, 'hello'), 'hello');
  await deliver(p.a, p.b, await send(p.b, p.a, 'hello back'), 'hello back');
}

function flip(m: WireMessage, indexFromEnd: number): WireMessage {
  const bytes = new Uint8Array(m.bytes);
  const i = bytes.length - indexFromEnd;
  bytes[i] = (bytes[i] ?? 0) ^ 0x01;
  return { type: m.type, bytes };
}

const PROVIDERS: readonly CryptoProvider[] = [nobleProvider, nodeProvider];
const ROLES: readonly Role[] = ['ours', 'libsignal'];

// ---------------------------------------------------------------------------------------------

describe.each(PROVIDERS.map((p) => [p.name, p] as const))(
  'ours (%s provider) ⇄ libsignal-client 0.90',
  (_n, provider) => {
    describe('conversations', () => {
      for (const initiator of ROLES) {
        for (const withOneTimePreKey of [true, false]) {
          for (const kyber of ['one-time', 'last-resort'] as const) {
            it(`${initiator} initiates (opk=${withOneTimePreKey}, kyber=${kyber}): many rounds both ways [WP-PQXDH-03] [WP-PQXDH-09] [WP-DR-06]`, async () => {
              const { a, b } = await setup(provider, initiator, { withOneTimePreKey, kyber });
              const heldBefore = b.heldPreKeys();
              // PreKey wrapping until a reply decrypts [WP-PQXDH-09].
              const m0 = await send(a, b, 'm0');
              const m1 = await send(a, b, 'm1');
              expect([m0.type, m1.type]).toEqual(['prekey', 'prekey']);
              await deliver(b, a, m0, 'm0');
              await deliver(b, a, m1, 'm1');
              // Prekeys consumed once, after the first decrypt [WP-PQXDH-06] [WP-PQXDH-07].
              const heldAfter = b.heldPreKeys();
              expect(heldAfter.ec.length).toBe(heldBefore.ec.length - (withOneTimePreKey ? 1 : 0));
              expect(heldAfter.kyber.length).toBe(heldBefore.kyber.length - (kyber === 'one-time' ? 1 : 0));
              const r0 = await send(b, a, 'r0');
              expect(r0.type).toBe('whisper');
              await deliver(a, b, r0, 'r0');
              expect((await send(a, b, 'after reply')).type).toBe('whisper');
              // Rounds with bursts of 1..3 from each side: a DH step at every change of direction.
              for (let round = 0; round < 25; round++) {
                for (let i = 0; i < 1 + (round % 3); i++) {
                  const m = await send(a, b, `a${round}.${i}`);
                  expect(m.type).toBe('whisper');
                  await deliver(b, a, m, `a${round}.${i}`);
                }
                for (let i = 0; i < 1 + ((round + 1) % 3); i++) {
                  await deliver(a, b, await send(b, a, `b${round}.${i}`), `b${round}.${i}`);
                }
              }
              // Large and empty bodies.
              const big = 'x'.repeat(70_000);
              await deliver(b, a, await send(a, b, big), big);
              await deliver(a, b, await send(b, a, ''), '');
            });
          }
        }
      }
    });

    describe.each(ROLES.map((r) => [r] as const))('%s initiates', (initiator) => {
      it('out-of-order delivery within chains and across DH ratchet steps, both directions [WP-DR-06] [WP-DR-08]', async () => {
        const p = await setup(provider, initiator);
        const { a, b } = p;
        // PreKey messages out of order: the later one creates the session, the earlier one matches it.
        const p0 = await send(a, b, 'p0');
        const p1 = await send(a, b, 'p1');
        const p2 = await send(a, b, 'p2');
        await deliver(b, a, p2, 'p2');
        await deliver(a, b, await send(b, a, 'ack'), 'ack');
        await deliver(b, a, p0, 'p0'); // after the initiator already stopped wrapping
        for (const [x, y] of [
          [a, b],
          [b, a],
        ] as const) {
          // x sends chain 1, y replies (x steps), x sends chain 2, y replies again, x sends chain 3.
          const chains: WireMessage[][] = [[], [], []];
          for (let c = 0; c < 3; c++) {
            for (let i = 0; i < 4; i++) chains[c]?.push(await send(x, y, `c${c}.${i}`));
            if (c < 2) {
              // y must have a chain from x before replying moves x forward: deliver x's last message.
              const last = chains[c]?.[3];
              if (last === undefined) throw new Error('unreachable');
              await deliver(y, x, last, `c${c}.3`);
              await deliver(x, y, await send(y, x, `y${c}`), `y${c}`);
            }
          }
          // Newest chain first, reversed; then the older chains shuffled.
          for (const i of [3, 2, 1, 0]) await deliver(y, x, chains[2]?.[i] as WireMessage, `c2.${i}`);
          for (const [c, i] of [
            [0, 1],
            [1, 2],
            [0, 0],
            [1, 0],
            [0, 2],
            [1, 1],
          ] as const) {
            await deliver(y, x, chains[c]?.[i] as WireMessage, `c${c}.${i}`);
          }
          // A PreKey message held back across three DH steps still decrypts (its chain is one of
          // the 5 kept); after the other direction's rounds its chain would be dropped [WP-DR-09].
          if (x === a) await deliver(b, a, p1, 'p1');
        }
      });

      it('duplicates are rejected by both, state untouched [WP-DR-10] [WP-REC-03]', async () => {
        const p = await setup(provider, initiator);
        const { a, b } = p;
        await establish(p);
        for (const [x, y] of [
          [a, b],
          [b, a],
        ] as const) {
          const m0 = await send(x, y, 'd0');
          const m1 = await send(x, y, 'd1');
          await deliver(y, x, m1, 'd1');
          await expectRejected(y, x, m1, 'duplicate'); // current index
          await deliver(y, x, m0, 'd0'); // stored skipped key
          await expectRejected(y, x, m0, 'duplicate'); // skipped key used once
          // After a DH step, an old-chain duplicate is still a duplicate.
          await deliver(x, y, await send(y, x, 'turn'), 'turn');
          await deliver(y, x, await send(x, y, 'new chain'), 'new chain');
          await expectRejected(y, x, m1, 'duplicate');
        }
      });

      it('a retransmitted PreKey message is a duplicate, not a new session; prekeys consumed once [WP-PQXDH-10]', async () => {
        const { a, b } = await setup(provider, initiator);
        const m = await send(a, b, 'once');
        await deliver(b, a, m, 'once');
        const held = b.heldPreKeys();
        await expectRejected(b, a, m, 'duplicate');
        expect(b.heldPreKeys()).toEqual(held);
        // The next PreKey message (same base key) goes to the same session.
        await deliver(b, a, await send(a, b, 'twice'), 'twice');
        expect(b.heldPreKeys()).toEqual(held);
        await deliver(a, b, await send(b, a, 'reply'), 'reply');
        await expectRejected(b, a, m, 'duplicate');
      });

      it('tampered MACs are rejected by both, state untouched [WP-DR-05] [WP-DR-11]', async () => {
        const p = await setup(provider, initiator);
        const { a, b } = p;
        // Inner MAC of a PreKey message: no session, no prekey consumed.
        const pk = await send(a, b, 'pk');
        const held = b.heldPreKeys();
        const detail = await expectRejected(b, a, flip(pk, 1), 'invalid-message');
        if (b.impl === 'ours') expect(detail).toBe('MAC_INVALID');
        else expect(detail).toMatch(/MAC verification failed/);
        expect(b.heldPreKeys()).toEqual(held);
        await deliver(b, a, pk, 'pk');
        await deliver(a, b, await send(b, a, 'ack'), 'ack');
        for (const [x, y] of [
          [a, b],
          [b, a],
        ] as const) {
          // Same chain, then a DH step (new ratchet key in the tampered message).
          for (const label of ['same chain', 'after DH step']) {
            const m = await send(x, y, label);
            for (const fromEnd of [1, 8, 12, m.bytes.length - 1]) {
              const d = await expectRejected(y, x, flip(m, fromEnd), 'invalid-message');
              if (fromEnd <= 12) {
                if (y.impl === 'ours') expect(d).toBe('MAC_INVALID');
                else expect(d).toMatch(/MAC verification failed/);
              }
            }
            await deliver(y, x, m, label);
            await deliver(x, y, await send(y, x, `reply to ${label}`), `reply to ${label}`);
          }
        }
      });

      it('a peer re-initiating: new session, then an old-session message promotes the old one on both sides [WP-REC-02] [WP-REC-01]', async () => {
        const p = await setup(provider, initiator);
        const { a, b } = p;
        await establish(p);
        const late = await send(a, b, 'late, old session');
        // The initiator starts over from a fresh bundle (its old session is archived).
        const again = await a.processBundle(b, b.bundle());
        expect(again.ok).toBe(true);
        const fresh = await send(a, b, 'new session');
        expect(fresh.type).toBe('prekey');
        await deliver(b, a, fresh, 'new session'); // b archives the old session
        await deliver(b, a, late, 'late, old session'); // old session decrypts and is promoted
        // b now replies on the old session; a finds it in its archive and promotes it too.
        const reply = await send(b, a, 'reply on old session');
        expect(reply.type).toBe('whisper');
        await deliver(a, b, reply, 'reply on old session');
        const next = await send(a, b, 'a continues on old session');
        expect(next.type).toBe('whisper');
        await deliver(b, a, next, 'a continues on old session');
        // A message on the now archived new session is still accepted (and promotes it back).
        const m = await send(b, a, 'b again');
        await deliver(a, b, m, 'b again');
      });

      it('a PreKey message for an archived session promotes it [WP-PQXDH-10]', async () => {
        const { a, b } = await setup(provider, initiator);
        const first = await send(a, b, 'first session');
        await deliver(b, a, first, 'first session');
        const first2 = await send(a, b, 'first session, second message');
        await a.processBundle(b, b.bundle());
        await deliver(b, a, await send(a, b, 'second session'), 'second session');
        // The older PreKey message names the archived session's base key.
        await deliver(b, a, first2, 'first session, second message');
        await deliver(a, b, await send(b, a, 'reply'), 'reply');
      });

      it('a bundle with a bad signature is rejected by both [WP-PQXDH-01]', async () => {
        const a =
          initiator === 'ours' ? oursEndpoint('alice', 1, provider, 'sig') : libsignalEndpoint('alice', 1);
        const b =
          initiator === 'ours' ? libsignalEndpoint('bob', 2) : oursEndpoint('bob', 2, provider, 'sig');
        const bundle = b.bundle();
        const badSpk = new Uint8Array(bundle.signedPreKeySignature);
        badSpk[5] = (badSpk[5] ?? 0) ^ 0x10;
        const badKyber = new Uint8Array(bundle.kyberPreKeySignature);
        badKyber[40] = (badKyber[40] ?? 0) ^ 0x02;
        for (const bad of [
          { ...bundle, signedPreKeySignature: badSpk },
          { ...bundle, kyberPreKeySignature: badKyber },
          { ...bundle, signedPreKey: b.bundle().signedPreKey.map((x, i) => (i === 0 ? x : x ^ 1)) },
        ]) {
          const r = await a.processBundle(b, bad);
          expect(r.ok ? 'accepted' : r.kind).toBe('invalid-signature');
        }
        expect((await a.processBundle(b, bundle)).ok).toBe(true);
      });

      // ~5 s per run (libsignal encrypts 25003 messages, ~70 µs each, and skips 25000 keys); by
      // by default once (node provider, our initiator: both directions), every combination with
      // LOCKSTEP_FULL.
      it.skipIf(!FULL && (initiator !== 'ours' || provider.name !== 'node'))(
        'skip limits: a jump of exactly 25000 accepted, 25001 rejected, by both; 2000 skipped keys kept [WP-DR-07] [WP-DR-08]',
        async () => {
          const p = await setup(provider, initiator);
          const { a, b } = p;
          await establish(p);
          // libsignal sends first: once its record holds 2000 skipped keys, every libsignal call
          // (de)serializes them and its encryption slows down about fourfold.
          const directions =
            a.impl === 'libsignal'
              ? ([
                  [a, b],
                  [b, a],
                ] as const)
              : ([
                  [b, a],
                  [a, b],
                ] as const);
          for (const [x, y] of directions) {
            // x's fresh chain after a DH step: counters 0..25002.
            await deliver(x, y, await send(y, x, 'turn'), 'turn');
            const msgs: WireMessage[] = [];
            for (let i = 0; i <= 25002; i++) msgs.push(await x.encrypt(y, te.encode(String(i))));
            const at = (i: number): WireMessage => msgs[i] as WireMessage;
            await deliver(y, x, at(0), '0'); // y's chain index is now 1
            await expectRejected(y, x, at(25002), 'too-far'); // 25001 ahead
            await deliver(y, x, at(25001), '25001'); // exactly 25000 ahead
            await deliver(y, x, at(25002), '25002');
            // Skipped 1..25000 then 25001 used: keys kept are the newest 2000, counters 23001..25000.
            await deliver(y, x, at(25000), '25000');
            await deliver(y, x, at(23001), '23001');
            await expectRejected(y, x, at(23000), 'duplicate');
            await expectRejected(y, x, at(1), 'duplicate');
            await deliver(x, y, await send(y, x, 'still in sync'), 'still in sync');
          }
        },
        120_000,
      );

      it('messages across more than 5 ratchet steps: the oldest receiving chain is dropped by both [WP-DR-09]', async () => {
        const p = await setup(provider, initiator);
        const { a, b } = p;
        await establish(p);
        for (const [x, y] of [
          [a, b],
          [b, a],
        ] as const) {
          // Each round: x sends two (one held back), y replies: y gains one receiving chain per round.
          const held: WireMessage[] = [];
          for (let round = 0; round < 6; round++) {
            const keep = await send(x, y, `held ${round}`);
            held.push(keep);
            await deliver(y, x, await send(x, y, `sent ${round}`), `sent ${round}`);
            await deliver(x, y, await send(y, x, `reply ${round}`), `reply ${round}`);
          }
          // y has seen 6+ chains from x since the first held message's chain: the newest 5 remain.
          await deliver(y, x, held[5] as WireMessage, 'held 5');
          await deliver(y, x, held[2] as WireMessage, 'held 2');
          await deliver(y, x, held[1] as WireMessage, 'held 1');
          const r = await y.decrypt(x, held[0] as WireMessage);
          expect(r.ok ? 'accepted' : r.kind).toBe('invalid-message');
        }
      });
    });

    describe('wire layout of our messages matches libsignal 0.90', () => {
      it('version byte, field order, sizes; no pq_ratchet from us [WP-WIRE-01] [WP-WIRE-02] [WP-WIRE-03] [WP-WIRE-05]', async () => {
        const ours = await setup(provider, 'ours');
        const theirs = await setup(provider, 'libsignal');
        const o = await send(ours.a, ours.b, 'hi');
        const t = await send(theirs.a, theirs.b, 'hi');
        const fields = (m: WireMessage) => protobufFields(splitPreKeyMessage(m.bytes).body);
        const of = fields(o);
        const tf = fields(t);
        expect(o.bytes[0]).toBe(0x44);
        expect(of.map((f) => f.field)).toEqual(tf.map((f) => f.field));
        expect(of.map((f) => f.field)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
        expect(of.map((f) => f.wireType)).toEqual(tf.map((f) => f.wireType));
        const inner = (fs: ReturnType<typeof fields>) => {
          const v = fs.find((f) => f.field === 4)?.value;
          if (!(v instanceof Uint8Array)) throw new Error('no inner message');
          return protobufFields(splitSignalMessage(v).body);
        };
        expect(inner(of).map((f) => f.field)).toEqual([1, 2, 3, 4]);
        expect(inner(tf).map((f) => f.field)).toEqual([1, 2, 3, 4, 5]);
        // Same field sizes; our inner message is libsignal's minus its SPQR offer (field 5 of the
        // inner message: tag, length varint, body), since the body of "hi" is one AES block in both.
        const sizes = (fs: ReturnType<typeof fields>) =>
          fs.map((f) => (typeof f.value === 'number' ? 'varint' : f.field === 4 ? 'inner' : f.value.length));
        expect(sizes(of)).toEqual(sizes(tf));
        expect(sizes(of)).toEqual(['varint', 33, 33, 'inner', 'varint', 'varint', 'varint', 1569]);
        const pq = inner(tf).find((f) => f.field === 5)?.value;
        if (!(pq instanceof Uint8Array)) throw new Error('libsignal sent no pq_ratchet');
        const innerLen = (fs: ReturnType<typeof fields>) => {
          const v = fs.find((f) => f.field === 4)?.value;
          return v instanceof Uint8Array ? v.length : -1;
        };
        expect(innerLen(of)).toBe(innerLen(tf) - (1 + (pq.length < 128 ? 1 : 2) + pq.length));
        expect(innerLen(of)).toBe(1 + (2 + 33) + 2 + 2 + (2 + 16) + 8);
        // Our replies: 0x44 ‖ fields 1..4 ‖ 8-byte MAC.
        await deliver(ours.b, ours.a, o, 'hi');
        await deliver(theirs.b, theirs.a, t, 'hi');
        const ourReply = await send(theirs.b, theirs.a, 'r');
        expect(ourReply.bytes[0]).toBe(0x44);
        expect(protobufFields(splitSignalMessage(ourReply.bytes).body).map((f) => f.field)).toEqual([
          1, 2, 3, 4,
        ]);
      });

      it('counter and previous_counter agree with libsignal for the same sending pattern [WP-DR-06] [WP-WIRE-02]', async () => {
        // The same script in a pure libsignal pair and in a mixed pair; the counters the slot under
        // test writes must agree.
        const script = [3, 2, 1, 4, 2, 1, 1, 3];
        const counters = async (a: Endpoint, b: Endpoint): Promise<number[][]> => {
          const out: number[][] = [];
          await deliver(b, a, await send(a, b, 'start'), 'start');
          for (const [turn, n] of script.entries()) {
            const [x, y] = turn % 2 === 0 ? [b, a] : [a, b];
            const batch: WireMessage[] = [];
            for (let i = 0; i < n; i++) batch.push(await send(x, y, `${turn}.${i}`));
            for (const [i, m] of batch.entries()) {
              if (x === b) {
                const body = protobufFields(splitSignalMessage(m.bytes).body);
                out.push([body[1]?.value as number, body[2]?.value as number]);
              }
              await deliver(y, x, m, `${turn}.${i}`);
            }
          }
          return out;
        };
        const oursAsB = await setup(provider, 'libsignal');
        const ref = { a: libsignalEndpoint('alice', 1), b: libsignalEndpoint('bob', 2) };
        await ref.a.processBundle(ref.b, ref.b.bundle());
        expect(await counters(oursAsB.a, oursAsB.b)).toEqual(await counters(ref.a, ref.b));
      });
    });

    describe('random conversations (fast-check)', () => {
      type Action =
        | { readonly kind: 'send'; readonly from: 0 | 1; readonly body: Uint8Array }
        | { readonly kind: 'deliver' | 'drop' | 'duplicate'; readonly to: 0 | 1; readonly pick: number };
      const side = fc.constantFrom<0 | 1>(0, 1);
      const actionArb: fc.Arbitrary<Action> = fc.oneof(
        {
          weight: 4,
          arbitrary: fc.record({
            kind: fc.constant('send' as const),
            from: side,
            body: fc.uint8Array({ maxLength: 80 }),
          }),
        },
        {
          weight: 4,
          arbitrary: fc.record({ kind: fc.constant('deliver' as const), to: side, pick: fc.nat() }),
        },
        { weight: 1, arbitrary: fc.record({ kind: fc.constant('drop' as const), to: side, pick: fc.nat() }) },
        {
          weight: 1,
          arbitrary: fc.record({ kind: fc.constant('duplicate' as const), to: side, pick: fc.nat() }),
        },
      );
      const scenarioArb = fc.record({
        initiator: fc.constantFrom<Role>('ours', 'libsignal'),
        withOneTimePreKey: fc.boolean(),
        kyber: fc.constantFrom<'one-time' | 'last-resort'>('one-time', 'last-resort'),
        seed: fc.string({ maxLength: 8 }),
        actions: fc.array(actionArb, { minLength: 1, maxLength: 60 }),
      });

      /** The ratchet key of a wire message (inner message for a PreKey message), as hex. */
      function ratchetKeyOf(m: WireMessage): string {
        let signal = m.bytes;
        if (m.type === 'prekey') {
          const v = protobufFields(splitPreKeyMessage(m.bytes).body).find((f) => f.field === 4)?.value;
          if (!(v instanceof Uint8Array)) throw new Error('no inner message');
          signal = v;
        }
        const key = protobufFields(splitSignalMessage(signal).body).find((f) => f.field === 1)?.value;
        if (!(key instanceof Uint8Array)) throw new Error('no ratchet key');
        return Buffer.from(key).toString('hex');
      }

      it(`every accepted message decrypts to what was sent; every undropped message is accepted (numRuns ${FULL ? 200 : 25})`, async () => {
        await fc.assert(
          fc.asyncProperty(scenarioArb, async (s) => {
            const { a, b, bundle } = await setup(
              provider,
              s.initiator,
              { withOneTimePreKey: s.withOneTimePreKey, kyber: s.kyber },
              `fc:${s.seed}`,
            );
            const ends = [a, b] as const;
            interface InFlight {
              readonly m: WireMessage;
              readonly body: Uint8Array;
              readonly key: string;
            }
            const inFlight: [InFlight[], InFlight[]] = [[], []]; // to side 0 / side 1
            const delivered: [InFlight[], InFlight[]] = [[], []];
            // Receiving-chain model per receiver: sender ratchet keys in order of first sight, at most
            // 5 kept (WP-DR-09). The initiator starts with the responder's signed prekey.
            const seen: [string[], string[]] = [[Buffer.from(bundle.signedPreKey).toString('hex')], []];
            const trimmed: [Set<string>, Set<string>] = [new Set(), new Set()];
            let responderHasSession = false;
            const receive = async (to: 0 | 1, f: InFlight, isDuplicate: boolean) => {
              const receiver = ends[to];
              const sender = ends[to === 0 ? 1 : 0];
              const r = await receiver.decrypt(sender, f.m);
              const chainGone = trimmed[to].has(f.key);
              if (isDuplicate || chainGone) {
                expect(
                  r.ok,
                  `${receiver.impl} accepted a ${isDuplicate ? 'duplicate' : 'message on a dropped chain'}`,
                ).toBe(false);
                if (!r.ok && isDuplicate && !chainGone) expect(r.kind).toBe('duplicate');
                return;
              }
              if (!r.ok)
                throw new Error(
                  `${receiver.impl} (${to}) rejected a fresh message from ${sender.impl}: ${r.kind} ${r.detail}`,
                );
              expect(r.plaintext).toEqual(f.body);
              if (to === 1) responderHasSession = true;
              if (!seen[to].includes(f.key)) {
                seen[to].push(f.key);
                while (seen[to].length > 5) {
                  const old = seen[to].shift();
                  if (old !== undefined) trimmed[to].add(old);
                }
              }
              delivered[to].push(f);
            };
            for (const act of s.actions) {
              if (act.kind === 'send') {
                if (act.from === 1 && !responderHasSession) continue;
                const to = act.from === 0 ? 1 : 0;
                const m = await ends[act.from].encrypt(ends[to], act.body);
                inFlight[to].push({ m, body: act.body, key: ratchetKeyOf(m) });
              } else if (act.kind === 'duplicate') {
                const list = delivered[act.to];
                const f = list[act.pick % Math.max(1, list.length)];
                if (f !== undefined) await receive(act.to, f, true);
              } else {
                const list = inFlight[act.to];
                if (list.length === 0) continue;
                const [f] = list.splice(act.pick % list.length, 1);
                if (f !== undefined && act.kind === 'deliver') await receive(act.to, f, false);
              }
            }
            // Flush: everything still in flight arrives, in order.
            for (const to of [1, 0] as const)
              for (const f of inFlight[to].splice(0)) await receive(to, f, false);
            // And the conversation still works both ways.
            const last = await a.encrypt(b, te.encode('final'));
            await deliver(b, a, last, 'final');
            await deliver(a, b, await b.encrypt(a, te.encode('final reply')), 'final reply');
          }),
          { numRuns: FULL ? 200 : 25 },
        );
      });
    });
  },
);
