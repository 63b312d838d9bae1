/**
 * The `transcript` family: whole conversations between Alice and Bob, every step with the exact
 * draws it consumes (WP-KEYS-09) and its outcome, each test carrying its own setup inline.
 * @module
 */
import type { CryptoProvider } from '../../spec/crypto/provider.js';
import { bundleFromPreKeyState } from '../../impl/index.js';
import { generateParties, seedLabel } from './fixtures.js';
import { GENERATOR_SOURCE, VECTOR_FORMAT_VERSION, type FamilyFile, type VectorTest } from './format.js';
import { recordScript, scriptTest } from './script.js';
import { setupJson, type Setup } from './setup.js';

const FAMILY = 'transcript';

/** Builds an inline setup: its JSON and the decoded value the recorder runs on. */
function inlineSetup(
  c: CryptoProvider,
  name: string,
  comment: string,
  bob: { readonly oneTimePreKeys: number; readonly oneTimeKyberPreKeys: number },
  bundles: Readonly<Record<string, { readonly preKeyId: number | null; readonly kyberPreKeyId: number }>>,
): { readonly json: ReturnType<typeof setupJson>; readonly setup: Setup } {
  const parties = generateParties(c, FAMILY, name, {
    alice: { oneTimePreKeys: 1, oneTimeKyberPreKeys: 0 },
    bob,
  });
  const built: Record<string, ReturnType<typeof bundleFromPreKeyState>> = {};
  for (const [bundleName, choice] of Object.entries(bundles))
    built[bundleName] = bundleFromPreKeyState(parties.bob, choice);
  return { json: setupJson(comment, parties, built), setup: { parties, bundles: built } };
}

/**
 * transcript-001: a long conversation: PreKey messages delivered out of order and one lost, a
 * duplicate PreKey message, seven DH ratchet steps in both directions, messages from older
 * receiving chains delivered after newer ones, and a duplicate SignalMessage.
 */
function conversation(c: CryptoProvider): VectorTest {
  const id = 'transcript-001';
  const { json, setup } = inlineSetup(
    c,
    id,
    "Bob holds signed prekey 1, one-time prekeys 1-2, one-time Kyber prekey 1 and last-resort Kyber prekey 2; Alice's bundle of Bob carries one-time prekey 1 and Kyber prekey 1.",
    { oneTimePreKeys: 2, oneTimeKyberPreKeys: 1 },
    { 'bob-opk1-kyber1': { preKeyId: 1, kyberPreKeyId: 1 } },
  );
  const s = recordScript(c, setup, seedLabel(FAMILY, id));
  s.processBundle('alice', 'bob-opk1-kyber1', {
    comment: 'Alice verifies the bundle and runs PQXDH: draws base key, ratchet key, KEM seed',
  });
  const a1 = s.encrypt('alice', 'a1: hi Bob, it is Alice');
  s.encrypt('alice', 'a2: this one gets lost', { comment: 'a2 is lost in the network: never delivered' });
  const a3 = s.encrypt('alice', 'a3: third PreKey message');
  s.decrypt('bob', a3, {
    comment: 'a3 arrives first: Bob creates the session (one DH step) and keeps keys for counters 0 and 1',
  });
  s.decrypt('bob', a1, { comment: 'a1 late: matched by base key, decrypted with a stored skipped key' });
  s.decrypt('bob', a1, { comment: 'a1 again: duplicate', expect: ['DUPLICATE_MESSAGE'] });
  const b1 = s.encrypt('bob', 'b1: hello Alice');
  const b2 = s.encrypt('bob', 'b2: second reply');
  s.decrypt('alice', b2, { comment: 'b2 first: DH step at Alice; the session is acknowledged' });
  const a4 = s.encrypt('alice', 'a4: now a SignalMessage');
  const a5 = s.encrypt('alice', 'a5: on the same chain');
  s.decrypt('alice', b1, { comment: 'b1 late, from a stored skipped key' });
  s.decrypt('bob', a5, { comment: 'a5 before a4: DH step at Bob' });
  const b3 = s.encrypt('bob', 'b3: new sending chain');
  const a6 = s.encrypt('alice', 'a6: sent before Alice sees b3');
  s.decrypt('alice', b3, { comment: 'DH step at Alice' });
  const a7 = s.encrypt('alice', 'a7: on Alice’s next chain');
  s.decrypt('bob', a7, { comment: 'a7 before a6: DH step at Bob' });
  s.decrypt('bob', a6, { comment: 'a6 from the older receiving chain, after the DH step' });
  s.decrypt('bob', a4, { comment: 'a4 from the older chain, from a stored skipped key' });
  const b4 = s.encrypt('bob', 'b4: ratchet again');
  const b5 = s.encrypt('bob', 'b5: and again');
  s.decrypt('alice', b5, { comment: 'DH step at Alice, b4 skipped' });
  s.decrypt('alice', b4);
  s.decrypt('alice', b4, { comment: 'b4 again: duplicate', expect: ['DUPLICATE_MESSAGE'] });
  const a8 = s.encrypt('alice', 'a8: last word; a2 was never delivered');
  s.decrypt('bob', a8, { comment: 'DH step at Bob' });
  return scriptTest(
    {
      id,
      comment:
        'Full conversation: out-of-order PreKey messages, a lost message (a2), duplicates, seven DH ratchet steps in both directions, late messages from older receiving chains.',
      rules: [
        'WP-KEYS-09',
        'WP-PQXDH-01',
        'WP-PQXDH-03',
        'WP-PQXDH-04',
        'WP-PQXDH-06',
        'WP-PQXDH-08',
        'WP-PQXDH-09',
        'WP-PQXDH-10',
        'WP-DR-01',
        'WP-DR-02',
        'WP-DR-03',
        'WP-DR-04',
        'WP-DR-05',
        'WP-DR-06',
        'WP-DR-08',
        'WP-DR-10',
        'WP-REC-03',
        'WP-WIRE-02',
        'WP-WIRE-03',
      ],
      result: 'valid',
    },
    json,
    s,
  );
}

/**
 * transcript-002: session replacement. Alice processes a second bundle (no one-time prekey,
 * last-resort Kyber prekey reused); Bob archives the first session; late messages of the first
 * session decrypt on the archived session, which is promoted on both sides.
 */
function sessionReplacement(c: CryptoProvider): VectorTest {
  const id = 'transcript-002';
  const { json, setup } = inlineSetup(
    c,
    id,
    'Bob holds signed prekey 1 and only a last-resort Kyber prekey (id 1), no one-time prekeys; the bundle carries no one-time prekey.',
    { oneTimePreKeys: 0, oneTimeKyberPreKeys: 0 },
    { 'bob-last-resort': { preKeyId: null, kyberPreKeyId: 1 } },
  );
  const s = recordScript(c, setup, seedLabel(FAMILY, id));
  s.processBundle('alice', 'bob-last-resort', { comment: 'session 1' });
  const a1 = s.encrypt('alice', 'a1: session 1, delayed');
  const a2 = s.encrypt('alice', 'a2: session 1');
  s.decrypt('bob', a2, { comment: 'Bob creates session 1 from a2' });
  const b1 = s.encrypt('bob', 'b1: session 1 reply');
  s.decrypt('alice', b1);
  const a3 = s.encrypt('alice', 'a3: session 1, a SignalMessage, delayed');
  s.processBundle('alice', 'bob-last-resort', {
    comment: 'Alice starts session 2; session 1 is archived (WP-REC-01)',
  });
  const a4 = s.encrypt('alice', 'a4: session 2');
  s.decrypt('bob', a4, {
    comment: 'Bob creates session 2 with the same last-resort Kyber prekey; session 1 archived',
  });
  s.decrypt('bob', a3, {
    comment:
      'a3 fails on current session 2 (a DH step is tried and discarded), decrypts on archived session 1, which is promoted',
  });
  s.decrypt('bob', a1, { comment: 'a1: PreKey message of session 1 (now current) matched by base key' });
  const b2 = s.encrypt('bob', 'b2: on session 1');
  s.decrypt('alice', b2, { comment: 'Alice tries session 2, then archived session 1, and promotes it' });
  const a5 = s.encrypt('alice', 'a5: back on session 1, a SignalMessage');
  s.decrypt('bob', a5);
  return scriptTest(
    {
      id,
      comment:
        'Session replacement: a second bundle, a last-resort Kyber prekey used twice, messages of the archived session decrypted and the session promoted on both sides.',
      rules: [
        'WP-KEYS-09',
        'WP-PQXDH-04',
        'WP-PQXDH-07',
        'WP-PQXDH-09',
        'WP-PQXDH-10',
        'WP-DR-06',
        'WP-DR-11',
        'WP-REC-01',
        'WP-REC-02',
        'WP-REC-04',
      ],
      result: 'valid',
    },
    json,
    s,
  );
}

/** Generates the transcript family. */
export function generateTranscriptFamily(c: CryptoProvider): FamilyFile {
  return {
    family: FAMILY,
    version: VECTOR_FORMAT_VERSION,
    source: GENERATOR_SOURCE,
    tests: [conversation(c), sessionReplacement(c)],
  };
}
