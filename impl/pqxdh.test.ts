/**
 * PQXDH scenarios (WHITEPAPER.md WP-PQXDH-01..11, WP-KEYS-01..05, WP-KEYS-09): the happy paths
 * checked against an independent recomputation of the key schedule with node:crypto, bundle
 * rejections, the responder's prekey lookups and their order, prekey consumption, PreKey wrapping,
 * retransmissions, session expiry and the draw schedule.
 */
import { describe, expect, it } from 'vitest';
import { DRAWS } from '../spec/draws.js';
import { kemDecapsulate } from '../spec/crypto/kyber.js';
import { nobleProvider } from '../spec/crypto/noble.js';
import { nodeProvider } from '../spec/crypto/node.js';
import { concatBytes } from '../spec/bytes.js';
import { parsePreKeySignalMessage } from '../spec/wire.js';
import {
  bundleOf,
  createParty,
  deliver,
  deliverOk,
  errorOf,
  flipByte,
  localIdentity,
  preKeyFields,
  refHkdf,
  refX25519,
  rewritePreKeyMessage,
  send,
  snapshot,
  startSession,
  T0,
  unwrap,
  type Party,
} from '../test/support/parties.js';
import { acceptSession } from './pqxdh.js';
import {
  generateIdentityKeyPair,
  generateKyberPreKey,
  generateOneTimePreKey,
  generatePreKeyState,
  generateRegistrationId,
  generateSignedPreKey,
  type PreKeyBundle,
} from './prekeys.js';
import {
  decryptPreKeySignalMessage,
  encryptMessage,
  hasUsableSenderChain,
  processPreKeyBundle,
} from './session-record.js';
import type { CiphertextMessage } from './double-ratchet.js';
import type { SessionState } from './session-state.js';

const PROVIDERS = [nobleProvider, nodeProvider].map((p) => [p.name, p] as const);
/** Small prekey stores keep key generation cheap: OPKs 1..2, one-time Kyber 1, last-resort Kyber 2. */
const SMALL = { oneTimePreKeys: 2, oneTimeKyberPreKeys: 1 } as const;
const LAST_RESORT_KYBER_ID = 2;
const DAY_MS = 24 * 60 * 60 * 1000;

function current(party: Party): SessionState {
  const session = party.record.current;
  if (session === null) throw new Error(`${party.name} has no current session`);
  return session;
}

function drawsOf(bytes: readonly { readonly bytes: number }[]): number[] {
  return bytes.map((d) => d.bytes);
}

/**
 * Recomputes PQXDH from the responder's private keys with node:crypto (WP-PQXDH-03) and the
 * initiator's first ratchet step (WP-PQXDH-08).
 */
function referencePqxdh(bob: Party, message: CiphertextMessage) {
  const fields = preKeyFields(message);
  const inner = unwrap(parsePreKeySignalMessage(message.bytes)).inner;
  const signed = bob.prekeys.signedPreKeys.find((k) => k.keyId === fields.signedPreKeyId);
  const kyber = bob.prekeys.kyberPreKeys.find((k) => k.keyId === fields.kyberPreKeyId);
  if (signed === undefined || kyber === undefined) throw new Error('bob lacks the named prekeys');
  const dhs = [
    refX25519(signed.keyPair.privateKey, fields.identityKey),
    refX25519(bob.prekeys.identityKeyPair.privateKey, fields.baseKey),
    refX25519(signed.keyPair.privateKey, fields.baseKey),
  ];
  if (fields.preKeyId !== undefined) {
    const oneTime = bob.prekeys.oneTimePreKeys.find((k) => k.keyId === fields.preKeyId);
    if (oneTime === undefined) throw new Error('bob lacks the one-time prekey');
    dhs.push(refX25519(oneTime.keyPair.privateKey, fields.baseKey));
  }
  const sharedSecret = kemDecapsulate(nobleProvider, kyber.secretKey, fields.kyberCiphertext);
  const ikm = concatBytes(new Uint8Array(32).fill(0xff), ...dhs, sharedSecret);
  const okm = refHkdf(ikm, new Uint8Array(0), 'WhisperText_X25519_SHA-256_CRYSTALS-KYBER-1024', 96);
  const rootKey = okm.slice(0, 32);
  const chainKey = okm.slice(32, 64);
  const step = refHkdf(refX25519(signed.keyPair.privateKey, inner.ratchetKey), rootKey, 'WhisperRatchet', 64);
  return {
    dhCount: dhs.length,
    rootKey,
    chainKey,
    aliceRootKey: step.slice(0, 32),
    aliceSendingChainKey: step.slice(32, 64),
    signedPreKey: signed.keyPair.publicKey,
  };
}

describe.each(PROVIDERS)('PQXDH (%s)', (_name, crypto) => {
  const seed = `pqxdh-${crypto.name}`;

  it.each([
    {
      label: 'with a one-time prekey and a one-time Kyber prekey',
      preKeyId: 1,
      kyberPreKeyId: 1,
      dhCount: 4,
    },
    {
      label: 'without a one-time prekey, with the last-resort Kyber prekey',
      preKeyId: null,
      kyberPreKeyId: LAST_RESORT_KYBER_ID,
      dhCount: 3,
    },
  ])('happy path $label [WP-PQXDH-03] [WP-PQXDH-08]', ({ preKeyId, kyberPreKeyId, dhCount }) => {
    const alice = createParty('alice', crypto, seed, SMALL);
    const bob = createParty('bob', crypto, seed, SMALL);
    startSession(alice, bob, { choice: { preKeyId, kyberPreKeyId } });
    const aliceInitial = current(alice);
    const message = send(alice, 'first');
    expect(message.type).toBe('prekey');
    const fields = preKeyFields(message);
    expect(fields.preKeyId).toBe(preKeyId ?? undefined);
    expect(fields.kyberPreKeyId).toBe(kyberPreKeyId);

    const reference = referencePqxdh(bob, message);
    expect(reference.dhCount).toBe(dhCount);
    // The initiator keeps (SPK_B, CK) as its first receiving chain and ratchets at once (WP-PQXDH-08).
    expect(aliceInitial.receiverChains).toHaveLength(1);
    expect(aliceInitial.receiverChains[0]?.ratchetKey).toEqual(reference.signedPreKey);
    expect(aliceInitial.receiverChains[0]?.chainKey.key).toEqual(reference.chainKey);
    expect(aliceInitial.rootKey).toEqual(reference.aliceRootKey);
    expect(aliceInitial.senderChainKey).toEqual({ key: reference.aliceSendingChainKey, index: 0 });

    // The responder derives the same secret; its first sending chain is Alice's first receiving chain.
    const accepted = unwrap(
      acceptSession(bob.env, bob.prekeys, unwrap(parsePreKeySignalMessage(message.bytes))),
    );
    expect(accepted.session.rootKey).toEqual(reference.rootKey);
    expect(accepted.session.senderChainKey.key).toEqual(aliceInitial.receiverChains[0]?.chainKey.key);
    expect(accepted.session.senderRatchetKey.publicKey).toEqual(reference.signedPreKey);
    expect(accepted.used).toEqual({ preKeyId, kyberPreKeyId });

    expect(deliverOk(bob, message)).toBe('first');
    expect(current(bob).aliceBaseKey).toEqual(fields.baseKey);
    expect(current(bob).remoteIdentityKey).toEqual(alice.prekeys.identityKeyPair.publicKey);
    expect(deliverOk(alice, send(bob, 'reply'))).toBe('reply');
  });

  describe('bundle verification', () => {
    const alice = createParty('alice', crypto, seed, SMALL);
    const bob = createParty('bob', crypto, seed, SMALL);
    const carol = createParty('carol', crypto, seed, SMALL);
    // Alice already talks to Bob, so "unchanged" is about a non-empty record.
    startSession(alice, bob);
    const good = bundleOf(bob);

    function expectRefused(bundle: PreKeyBundle, code: string, rule: string): void {
      const before = snapshot(alice);
      alice.rng.reset();
      const error = errorOf(processPreKeyBundle(alice.env, alice.record, localIdentity(alice), bundle, T0));
      expect(error.code).toBe(code);
      expect(error.rule).toBe(rule);
      expect(snapshot(alice)).toBe(before);
      // Nothing is drawn for a bundle that is refused: the checks come before the draws.
      expect(alice.rng.draws).toEqual([]);
    }

    it('bad signed-prekey signature [WP-PQXDH-01]', () => {
      expectRefused(
        { ...good, signedPreKeySignature: flipByte(good.signedPreKeySignature, 5) },
        'BUNDLE_SIGNATURE_INVALID',
        'WP-PQXDH-01',
      );
    });

    it('signed prekey signed by another identity [WP-PQXDH-01]', () => {
      const other = bundleOf(carol);
      expectRefused(
        { ...good, signedPreKey: other.signedPreKey, signedPreKeySignature: other.signedPreKeySignature },
        'BUNDLE_SIGNATURE_INVALID',
        'WP-PQXDH-01',
      );
    });

    it('bad Kyber prekey signature [WP-PQXDH-01]', () => {
      const signature = good.kyberPreKeySignature;
      if (signature === null) throw new Error('bundle without Kyber signature');
      expectRefused(
        { ...good, kyberPreKeySignature: flipByte(signature, 40) },
        'BUNDLE_SIGNATURE_INVALID',
        'WP-PQXDH-01',
      );
    });

    it('Kyber prekey swapped for one signed by another identity [WP-PQXDH-01]', () => {
      const other = bundleOf(carol);
      expectRefused(
        { ...good, kyberPreKey: other.kyberPreKey, kyberPreKeySignature: other.kyberPreKeySignature },
        'BUNDLE_SIGNATURE_INVALID',
        'WP-PQXDH-01',
      );
    });

    it('bundle without a Kyber prekey [WP-PQXDH-02]', () => {
      expectRefused(
        { ...good, kyberPreKeyId: null, kyberPreKey: null, kyberPreKeySignature: null },
        'BUNDLE_KYBER_MISSING',
        'WP-PQXDH-02',
      );
    });

    it('one-time prekey without its id, or an id without the key [WP-PQXDH-12]', () => {
      expectRefused({ ...good, preKeyId: null }, 'BUNDLE_MALFORMED', 'WP-PQXDH-12');
      expectRefused({ ...good, preKey: null }, 'BUNDLE_MALFORMED', 'WP-PQXDH-12');
    });

    const ecKey = (u: Uint8Array, type = 0x05): Uint8Array => concatBytes(Uint8Array.of(type), u);
    const p = Uint8Array.from([0xed, ...new Array<number>(30).fill(0xff), 0x7f]);
    const lowOrderOne = Uint8Array.from([1, ...new Array<number>(31).fill(0)]);
    it.each([
      {
        field: 'identityKey',
        value: () => good.identityKey.slice(0, 32),
        code: 'KEY_BAD_LENGTH',
        rule: 'WP-KEYS-01',
      },
      {
        field: 'signedPreKey',
        value: () => ecKey(good.signedPreKey.subarray(1), 0x06),
        code: 'KEY_BAD_TYPE',
        rule: 'WP-KEYS-01',
      },
      { field: 'preKey', value: () => ecKey(p), code: 'KEY_NON_CANONICAL', rule: 'WP-KEYS-02' },
      { field: 'preKey', value: () => ecKey(lowOrderOne), code: 'KEY_LOW_ORDER', rule: 'WP-KEYS-03' },
      {
        field: 'preKey',
        value: () => new Uint8Array(34).fill(5),
        code: 'KEY_BAD_LENGTH',
        rule: 'WP-KEYS-01',
      },
      {
        field: 'kyberPreKey',
        value: () => new Uint8Array(1568).fill(8),
        code: 'KEM_BAD_LENGTH',
        rule: 'WP-KEYS-05',
      },
      {
        field: 'kyberPreKey',
        value: () => concatBytes(Uint8Array.of(0x0a), (good.kyberPreKey ?? new Uint8Array(1569)).subarray(1)),
        code: 'KEM_BAD_TYPE',
        rule: 'WP-KEYS-05',
      },
      {
        field: 'kyberPreKey',
        value: () => concatBytes(Uint8Array.of(0x08), new Uint8Array(1568).fill(0xff)),
        code: 'KEM_NON_CANONICAL',
        rule: 'WP-KEYS-05',
      },
    ])('malformed $field in a bundle → $code [$rule]', ({ field, value, code, rule }) => {
      expectRefused({ ...good, [field]: value() }, code, rule);
    });
  });

  describe('responder prekey lookups', () => {
    function fixture() {
      const alice = createParty('alice', crypto, seed, SMALL);
      const bob = createParty('bob', crypto, seed, SMALL);
      startSession(alice, bob, { choice: { preKeyId: 1, kyberPreKeyId: 1 } });
      return { alice, bob, message: send(alice, 'hi') };
    }

    function expectRejected(bob: Party, message: CiphertextMessage, code: string, rule: string): void {
      const before = snapshot(bob);
      const error = errorOf(decryptPreKeySignalMessage(bob.env, bob.record, bob.prekeys, message.bytes));
      expect(error.code).toBe(code);
      expect(error.rule).toBe(rule);
      expect(snapshot(bob)).toBe(before);
    }

    it('unknown signed prekey id [WP-PQXDH-05]', () => {
      const { bob, message } = fixture();
      expectRejected(
        bob,
        rewritePreKeyMessage(message, { signedPreKeyId: 77 }),
        'UNKNOWN_SIGNED_PREKEY',
        'WP-PQXDH-05',
      );
    });

    it('unknown Kyber prekey id [WP-PQXDH-07]', () => {
      const { bob, message } = fixture();
      expectRejected(
        bob,
        rewritePreKeyMessage(message, { kyberPreKeyId: 77 }),
        'UNKNOWN_KYBER_PREKEY',
        'WP-PQXDH-07',
      );
    });

    it('unknown one-time prekey id [WP-PQXDH-06]', () => {
      const { bob, message } = fixture();
      expectRejected(
        bob,
        rewritePreKeyMessage(message, { preKeyId: 77 }),
        'UNKNOWN_ONE_TIME_PREKEY',
        'WP-PQXDH-06',
      );
    });

    it('lookup order is signed, Kyber, one-time [WP-PQXDH-05] [WP-PQXDH-06] [WP-PQXDH-07]', () => {
      const { bob, message } = fixture();
      const allUnknown = { signedPreKeyId: 77, kyberPreKeyId: 78, preKeyId: 79 };
      expectRejected(bob, rewritePreKeyMessage(message, allUnknown), 'UNKNOWN_SIGNED_PREKEY', 'WP-PQXDH-05');
      expectRejected(
        bob,
        rewritePreKeyMessage(message, { ...allUnknown, signedPreKeyId: 1 }),
        'UNKNOWN_KYBER_PREKEY',
        'WP-PQXDH-07',
      );
      expectRejected(
        bob,
        rewritePreKeyMessage(message, { ...allUnknown, signedPreKeyId: 1, kyberPreKeyId: 1 }),
        'UNKNOWN_ONE_TIME_PREKEY',
        'WP-PQXDH-06',
      );
    });

    it('one-time prekey consumed only after the message decrypts [WP-PQXDH-06] [WP-PQXDH-07]', () => {
      const { bob, message } = fixture();
      const fields = preKeyFields(message);
      const corrupted = rewritePreKeyMessage(message, { message: flipByte(fields.message, -1) });
      expectRejected(bob, corrupted, 'MAC_INVALID', 'WP-DR-05');
      expect(bob.prekeys.oneTimePreKeys.map((k) => k.keyId)).toEqual([1, 2]);
      expect(bob.prekeys.kyberPreKeys.map((k) => k.keyId)).toEqual([1, 2]);
      expect(bob.record.current).toBeNull();
      // The genuine message still finds its prekeys, and only then are they consumed.
      expect(deliverOk(bob, message)).toBe('hi');
      expect(bob.prekeys.oneTimePreKeys.map((k) => k.keyId)).toEqual([2]);
      expect(bob.prekeys.kyberPreKeys.map((k) => k.keyId)).toEqual([LAST_RESORT_KYBER_ID]);
    });

    it('a second initiator reusing a consumed one-time prekey [WP-PQXDH-06]', () => {
      const alice = createParty('alice', crypto, seed, SMALL);
      const carol = createParty('carol', crypto, seed, SMALL);
      const bob = createParty('bob', crypto, seed, SMALL);
      // Both get the same bundle (one-time prekey 1, last-resort Kyber so that only the OPK differs).
      const bundle = bundleOf(bob, { preKeyId: 1, kyberPreKeyId: LAST_RESORT_KYBER_ID });
      startSession(alice, bob, { bundle });
      startSession(carol, bob, { bundle });
      expect(deliverOk(bob, send(alice, 'from alice'))).toBe('from alice');
      expectRejected(bob, send(carol, 'from carol'), 'UNKNOWN_ONE_TIME_PREKEY', 'WP-PQXDH-06');
    });

    it('one-time Kyber prekey removed, last-resort Kyber prekey kept and reusable [WP-PQXDH-07]', () => {
      const alice = createParty('alice', crypto, seed, SMALL);
      const carol = createParty('carol', crypto, seed, SMALL);
      const dave = createParty('dave', crypto, seed, SMALL);
      const bob = createParty('bob', crypto, seed, SMALL);
      startSession(alice, bob, { choice: { preKeyId: null, kyberPreKeyId: 1 } });
      startSession(carol, bob, { choice: { preKeyId: null, kyberPreKeyId: LAST_RESORT_KYBER_ID } });
      startSession(dave, bob, { choice: { preKeyId: null, kyberPreKeyId: LAST_RESORT_KYBER_ID } });
      const fromAlice = send(alice, 'a');
      expect(deliverOk(bob, fromAlice)).toBe('a');
      expect(bob.prekeys.kyberPreKeys.map((k) => k.keyId)).toEqual([LAST_RESORT_KYBER_ID]);
      expect(deliverOk(bob, send(carol, 'c'))).toBe('c');
      expect(deliverOk(bob, send(dave, 'd'))).toBe('d');
      expect(bob.prekeys.kyberPreKeys.map((k) => k.keyId)).toEqual([LAST_RESORT_KYBER_ID]);
      expect(bob.prekeys.oneTimePreKeys.map((k) => k.keyId)).toEqual([1, 2]);
      // A new session from Eve naming the consumed one-time Kyber key is refused.
      const eve = createParty('eve', crypto, seed, SMALL);
      startSession(eve, bob, {
        bundle: bundleOf(bob, { preKeyId: null, kyberPreKeyId: LAST_RESORT_KYBER_ID }),
      });
      expectRejected(
        bob,
        rewritePreKeyMessage(send(eve, 'e'), { kyberPreKeyId: 1 }),
        'UNKNOWN_KYBER_PREKEY',
        'WP-PQXDH-07',
      );
    });
  });

  it('PreKey wrapping continues until a reply decrypts, then stops [WP-PQXDH-09]', () => {
    const alice = createParty('alice', crypto, seed, SMALL);
    const bob = createParty('bob', crypto, seed, SMALL);
    startSession(alice, bob);
    const first = send(alice, 'one');
    const second = send(alice, 'two');
    expect([first.type, second.type]).toEqual(['prekey', 'prekey']);
    // Every PreKey message repeats the same PQXDH header.
    const header = (m: CiphertextMessage) => {
      const { message: _inner, ...rest } = preKeyFields(m);
      return rest;
    };
    expect(header(second)).toEqual(header(first));
    deliverOk(bob, first);
    deliverOk(bob, second);
    const reply = send(bob, 'reply');
    expect(reply.type).toBe('whisper');
    // A forged reply does not acknowledge the session.
    expect(deliver(alice, { type: 'whisper', bytes: flipByte(reply.bytes, -3) }).ok).toBe(false);
    expect(send(alice, 'three').type).toBe('prekey');
    expect(deliverOk(alice, reply)).toBe('reply');
    const after = send(alice, 'four');
    expect(after.type).toBe('whisper');
    expect(deliverOk(bob, after)).toBe('four');
  });

  it('retransmitted PreKey message is a duplicate on the existing session [WP-PQXDH-10] [WP-DR-10]', () => {
    const alice = createParty('alice', crypto, seed, SMALL);
    const bob = createParty('bob', crypto, seed, SMALL);
    startSession(alice, bob);
    const message = send(alice, 'once');
    expect(deliverOk(bob, message)).toBe('once');
    const before = snapshot(bob);
    bob.rng.reset();
    const error = errorOf(decryptPreKeySignalMessage(bob.env, bob.record, bob.prekeys, message.bytes));
    // Not UNKNOWN_ONE_TIME_PREKEY: the consumed prekey is not looked up again.
    expect(error.code).toBe('DUPLICATE_MESSAGE');
    expect(snapshot(bob)).toBe(before);
    expect(bob.record.archived).toHaveLength(0);
    expect(bob.rng.draws).toEqual([]);
  });

  it('a later PreKey message creates the session when the first was lost [WP-PQXDH-10]', () => {
    const alice = createParty('alice', crypto, seed, SMALL);
    const bob = createParty('bob', crypto, seed, SMALL);
    startSession(alice, bob, { choice: { preKeyId: 1, kyberPreKeyId: 1 } });
    const lost = send(alice, 'lost for a while');
    const later = send(alice, 'arrives first');
    const created = unwrap(decryptPreKeySignalMessage(bob.env, bob.record, bob.prekeys, later.bytes));
    expect(created.createdSession).toBe(true);
    bob.record = created.record;
    bob.prekeys = created.prekeys;
    expect(bob.prekeys.oneTimePreKeys.map((k) => k.keyId)).toEqual([2]);
    const late = unwrap(decryptPreKeySignalMessage(bob.env, bob.record, bob.prekeys, lost.bytes));
    expect(late.createdSession).toBe(false);
    expect(new TextDecoder().decode(late.plaintext)).toBe('lost for a while');
    expect(late.record.archived).toHaveLength(0);
    expect(late.prekeys).toBe(bob.prekeys);
  });

  it('PreKey message of an archived session decrypts and promotes it [WP-PQXDH-10] [WP-REC-02]', () => {
    const alice = createParty('alice', crypto, seed, SMALL);
    const bob = createParty('bob', crypto, seed, SMALL);
    const firstBundle = bundleOf(bob, { preKeyId: 1, kyberPreKeyId: 1 });
    const secondBundle = bundleOf(bob, { preKeyId: 2, kyberPreKeyId: LAST_RESORT_KYBER_ID });
    startSession(alice, bob, { bundle: firstBundle });
    const s1m1 = send(alice, 'session 1, message 1');
    const s1m2 = send(alice, 'session 1, message 2');
    startSession(alice, bob, { bundle: secondBundle });
    const s2m1 = send(alice, 'session 2, message 1');
    deliverOk(bob, s1m1);
    deliverOk(bob, s2m1);
    const base1 = preKeyFields(s1m1).baseKey;
    const base2 = preKeyFields(s2m1).baseKey;
    expect(current(bob).aliceBaseKey).toEqual(base2);
    expect(bob.record.archived.map((s) => s.aliceBaseKey)).toEqual([base1]);
    const prekeysBefore = bob.prekeys;
    const promoted = unwrap(decryptPreKeySignalMessage(bob.env, bob.record, bob.prekeys, s1m2.bytes));
    expect(new TextDecoder().decode(promoted.plaintext)).toBe('session 1, message 2');
    expect(promoted.createdSession).toBe(false);
    expect(promoted.prekeys).toBe(prekeysBefore);
    expect(promoted.record.current?.aliceBaseKey).toEqual(base1);
    expect(promoted.record.archived.map((s) => s.aliceBaseKey)).toEqual([base2]);
  });

  it('unanswered session expires 30 days after creation; an answered one never [WP-PQXDH-11]', () => {
    const alice = createParty('alice', crypto, seed, SMALL);
    const bob = createParty('bob', crypto, seed, SMALL);
    startSession(alice, bob, { now: T0 });
    const thirtyDays = 30 * DAY_MS;
    expect(hasUsableSenderChain(alice.record, T0 + thirtyDays)).toBe(true);
    expect(encryptMessage(alice.env, alice.record, new Uint8Array(1), T0 + thirtyDays).ok).toBe(true);
    expect(hasUsableSenderChain(alice.record, T0 + thirtyDays + 1)).toBe(false);
    const before = snapshot(alice);
    const error = errorOf(encryptMessage(alice.env, alice.record, new Uint8Array(1), T0 + thirtyDays + 1));
    expect(error.code).toBe('SESSION_UNACKNOWLEDGED_TOO_OLD');
    expect(error.rule).toBe('WP-PQXDH-11');
    expect(snapshot(alice)).toBe(before);

    deliverOk(bob, send(alice, 'hi', T0 + DAY_MS));
    deliverOk(alice, send(bob, 'answer', T0 + 2 * DAY_MS));
    const muchLater = T0 + 3650 * DAY_MS;
    expect(hasUsableSenderChain(alice.record, muchLater)).toBe(true);
    expect(deliverOk(bob, send(alice, 'ten years on', muchLater))).toBe('ten years on');
    // The responder's session was never pending: it never expires either.
    expect(hasUsableSenderChain(bob.record, muchLater)).toBe(true);
  });
});

describe('draw schedule [WP-KEYS-09]', () => {
  const crypto = nodeProvider;

  it('initiation draws base key, ratchet key, KEM seed: [32, 32, 32] [WP-PQXDH-04] [WP-KEYS-09]', () => {
    const alice = createParty('alice', crypto, 'draws', SMALL);
    const bob = createParty('bob', crypto, 'draws', SMALL);
    alice.rng.reset();
    startSession(alice, bob);
    expect(alice.rng.draws).toEqual([32, 32, 32]);
    expect(alice.rng.draws).toEqual(drawsOf(DRAWS.pqxdhInitiate));
  });

  it('the initiator base key and ratchet key are the first two draws [WP-PQXDH-04]', () => {
    const alice = createParty('alice', crypto, 'draws-order', SMALL);
    const bob = createParty('bob', crypto, 'draws-order', SMALL);
    // Replay the same stream by hand: the first 32 bytes are the base key, the next the ratchet key.
    const bytes: Uint8Array[] = [];
    const replay = {
      randomBytes: (n: number) => {
        const b = alice.env.rng.randomBytes(n);
        bytes.push(b);
        return b;
      },
    };
    const session = unwrap(
      processPreKeyBundle({ crypto, rng: replay }, alice.record, localIdentity(alice), bundleOf(bob), T0),
    ).current;
    if (session === null) throw new Error('no session');
    const [baseSecret, ratchetSecret] = bytes;
    if (baseSecret === undefined || ratchetSecret === undefined) throw new Error('too few draws');
    const basePoint = concatBytes(Uint8Array.of(0x05, 9), new Uint8Array(31));
    expect(session.aliceBaseKey.subarray(1)).toEqual(refX25519(baseSecret, basePoint));
    expect(session.senderRatchetKey.privateKey).toEqual(ratchetSecret);
  });

  it('responder acceptance draws nothing; its first DH step draws [32] [WP-PQXDH-08] [WP-DR-06]', () => {
    const alice = createParty('alice', crypto, 'draws-accept', SMALL);
    const bob = createParty('bob', crypto, 'draws-accept', SMALL);
    startSession(alice, bob);
    const message = send(alice, 'hi');
    bob.rng.reset();
    unwrap(acceptSession(bob.env, bob.prekeys, unwrap(parsePreKeySignalMessage(message.bytes))));
    expect(bob.rng.draws).toEqual(drawsOf(DRAWS.pqxdhAccept));
    deliverOk(bob, message);
    expect(bob.rng.draws).toEqual(drawsOf(DRAWS.dhRatchetStep));
  });

  it('encryption draws nothing; a receiving DH step draws [32]; a same-chain decrypt nothing [WP-DR-06]', () => {
    const alice = createParty('alice', crypto, 'draws-dr', SMALL);
    const bob = createParty('bob', crypto, 'draws-dr', SMALL);
    startSession(alice, bob);
    alice.rng.reset();
    const m1 = send(alice, '1');
    const m2 = send(alice, '2');
    expect(alice.rng.draws).toEqual(drawsOf(DRAWS.ratchetEncrypt));
    deliverOk(bob, m1);
    bob.rng.reset();
    deliverOk(bob, m2);
    expect(bob.rng.draws).toEqual([]);
    const reply = send(bob, 'r');
    expect(bob.rng.draws).toEqual([]);
    alice.rng.reset();
    deliverOk(alice, reply);
    expect(alice.rng.draws).toEqual([32]);
    expect(alice.rng.draws).toEqual(drawsOf(DRAWS.dhRatchetStep));
  });

  it('prekey generation draws as spec/draws.ts says [WP-KEYS-09]', () => {
    const { rng, env } = createParty('gen', crypto, 'draws-gen', SMALL);
    rng.reset();
    const identity = generateIdentityKeyPair(env);
    expect(rng.draws).toEqual(drawsOf(DRAWS.generateKeyPair));
    rng.reset();
    generateRegistrationId(env);
    expect(rng.draws).toEqual(drawsOf(DRAWS.generateRegistrationId));
    rng.reset();
    generateSignedPreKey(env, identity, 7);
    expect(rng.draws).toEqual(drawsOf(DRAWS.generateSignedPreKey));
    rng.reset();
    generateOneTimePreKey(env, 7);
    expect(rng.draws).toEqual(drawsOf(DRAWS.generateKeyPair));
    rng.reset();
    generateKyberPreKey(env, identity, 7, false);
    expect(rng.draws).toEqual(drawsOf(DRAWS.generateKyberPreKey));
    rng.reset();
    generatePreKeyState(env, { oneTimePreKeys: 2, oneTimeKyberPreKeys: 1 });
    expect(rng.draws).toEqual([
      ...drawsOf(DRAWS.generateKeyPair),
      ...drawsOf(DRAWS.generateRegistrationId),
      ...drawsOf(DRAWS.generateSignedPreKey),
      ...drawsOf(DRAWS.generateKeyPair),
      ...drawsOf(DRAWS.generateKeyPair),
      ...drawsOf(DRAWS.generateKyberPreKey),
      ...drawsOf(DRAWS.generateKyberPreKey),
    ]);
  });
});
