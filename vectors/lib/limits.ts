/**
 * The `limits` family: every store bound and counter limit at and past its value (house style
 * rule 9), as scripts over one shared setup. The sender's messages that are never delivered are
 * kept as `deliver: false` steps (a digest only, optionally `repeat`ed), which the checker still
 * re-runs, so the delivered messages carry the right counters.
 *
 * - WP-DR-07: a counter exactly 25 000 ahead is accepted, 25 001 ahead is refused;
 * - WP-DR-08: 2 000 skipped keys are kept; the 2 001st pushes out the oldest;
 * - WP-DR-09: 5 receiving chains are kept; the 6th pushes out the oldest;
 * - WP-REC-01/02: 40 archived sessions are kept; the 41st pushes out the oldest.
 * @module
 */
import type { CryptoProvider } from '../../spec/crypto/provider.js';
import {
  ARCHIVED_STATES_MAX_LENGTH,
  MAX_FORWARD_JUMPS,
  MAX_MESSAGE_KEYS,
  MAX_RECEIVER_CHAINS,
} from '../../spec/constants.js';
import { bundleFromPreKeyState } from '../../impl/index.js';
import { generateParties, seedLabel } from './fixtures.js';
import { GENERATOR_SOURCE, VECTOR_FORMAT_VERSION, type FamilyFile, type VectorTest } from './format.js';
import { recordScript, scriptTest, type ScriptRecorder } from './script.js';
import { setupJson, type Setup } from './setup.js';

const FAMILY = 'limits';
const SETUP_ID = 'setup-a';
const BUNDLE = 'bob-last-resort';

/** The shared setup: Bob has no one-time prekeys and only a last-resort Kyber prekey. */
function sharedSetup(c: CryptoProvider): {
  readonly json: ReturnType<typeof setupJson>;
  readonly setup: Setup;
} {
  const parties = generateParties(c, FAMILY, SETUP_ID, {
    alice: { oneTimePreKeys: 1, oneTimeKyberPreKeys: 0 },
    bob: { oneTimePreKeys: 0, oneTimeKyberPreKeys: 0 },
  });
  const bundles = { [BUNDLE]: bundleFromPreKeyState(parties.bob, { preKeyId: null, kyberPreKeyId: 1 }) };
  return {
    json: setupJson(
      'Bob holds signed prekey 1 and a last-resort Kyber prekey (id 1), no one-time prekeys: every bundle is the same, as WP-REC-01 needs.',
      parties,
      bundles,
    ),
    setup: { parties, bundles },
  };
}

/** Alice starts a session and Bob accepts it, so that Bob sends SignalMessages on a fresh chain. */
function handshake(s: ScriptRecorder): void {
  s.processBundle('alice', BUNDLE);
  const a1 = s.encrypt('alice', 'a1: hello');
  s.decrypt('bob', a1, { comment: 'Bob accepts the session; his replies start a new sending chain' });
}

function forwardJump(s: ScriptRecorder): void {
  handshake(s);
  s.encrypt('bob', 'not delivered', {
    deliver: false,
    repeat: MAX_FORWARD_JUMPS,
    comment: `counters 0..${MAX_FORWARD_JUMPS - 1}, never delivered`,
  });
  const atLimit = s.encrypt('bob', `counter ${MAX_FORWARD_JUMPS}`);
  const pastLimit = s.encrypt('bob', `counter ${MAX_FORWARD_JUMPS + 1}`);
  s.decrypt('alice', pastLimit, {
    comment: `counter ${MAX_FORWARD_JUMPS + 1} on a new chain (index 0): refused before any key is derived; the DH step's draw is still consumed`,
    expect: ['FORWARD_JUMP_TOO_FAR'],
  });
  s.decrypt('alice', atLimit, { comment: `counter ${MAX_FORWARD_JUMPS}: exactly the limit, accepted` });
  s.decrypt('alice', pastLimit, { comment: 'now one ahead of the chain: accepted' });
}

function skippedKeysPastCap(s: ScriptRecorder): void {
  handshake(s);
  const b0 = s.encrypt('bob', 'counter 0');
  const b1 = s.encrypt('bob', 'counter 1');
  s.encrypt('bob', 'not delivered', {
    deliver: false,
    repeat: MAX_MESSAGE_KEYS - 1,
    comment: `counters 2..${MAX_MESSAGE_KEYS}`,
  });
  const last = s.encrypt('bob', `counter ${MAX_MESSAGE_KEYS + 1}`);
  s.decrypt('alice', last, {
    comment: `${MAX_MESSAGE_KEYS + 1} keys skipped: the oldest (counter 0) is dropped by the cap`,
  });
  s.decrypt('alice', b0, { comment: 'its key was dropped: a duplicate', expect: ['DUPLICATE_MESSAGE'] });
  s.decrypt('alice', b1, { comment: 'counter 1 is still stored' });
}

function skippedKeysAtCap(s: ScriptRecorder): void {
  handshake(s);
  const b0 = s.encrypt('bob', 'counter 0');
  s.encrypt('bob', 'not delivered', {
    deliver: false,
    repeat: MAX_MESSAGE_KEYS - 1,
    comment: `counters 1..${MAX_MESSAGE_KEYS - 1}`,
  });
  const last = s.encrypt('bob', `counter ${MAX_MESSAGE_KEYS}`);
  s.decrypt('alice', last, { comment: `exactly ${MAX_MESSAGE_KEYS} keys skipped: all kept` });
  s.decrypt('alice', b0, { comment: 'the oldest skipped key is still there' });
}

function receiverChains(s: ScriptRecorder): void {
  s.processBundle('alice', BUNDLE);
  const a1 = s.encrypt('alice', 'chain 1, counter 0');
  const a2 = s.encrypt('alice', 'chain 1, counter 1 (held back)');
  const a3 = s.encrypt('alice', 'chain 1, counter 2 (held back)');
  s.decrypt('bob', a1, { comment: 'Bob: receiving chain 1' });
  const round = (chain: number): void => {
    const b = s.encrypt('bob', `bob, before Alice's chain ${chain}`);
    s.decrypt('alice', b, { comment: 'DH step at Alice: her next sending chain' });
    const a = s.encrypt('alice', `chain ${chain}, counter 0`);
    s.decrypt('bob', a, { comment: `Bob: receiving chain ${chain}` });
  };
  for (let chain = 2; chain <= MAX_RECEIVER_CHAINS; chain++) round(chain);
  s.decrypt('bob', a2, {
    comment: `Bob holds exactly ${MAX_RECEIVER_CHAINS} receiving chains: chain 1 is still there`,
  });
  round(MAX_RECEIVER_CHAINS + 1);
  s.decrypt('bob', a3, {
    comment: `chain ${MAX_RECEIVER_CHAINS + 1} pushed chain 1 out: its ratchet key looks new, a DH step derives the wrong keys`,
    expect: ['MAC_INVALID'],
  });
}

/**
 * Alice opens `sessions` sessions with the same bundle; Bob accepts the first two and answers on
 * each. Returns the refs of Bob's two replies.
 */
function manySessions(s: ScriptRecorder, sessions: number): { readonly r1: number; readonly r2: number } {
  s.processBundle('alice', BUNDLE, { comment: 'session 1' });
  const m1 = s.encrypt('alice', 'session 1');
  s.decrypt('bob', m1);
  const r1 = s.encrypt('bob', 'reply on session 1');
  s.processBundle('alice', BUNDLE, { comment: 'session 2' });
  const m2 = s.encrypt('alice', 'session 2');
  s.decrypt('bob', m2);
  const r2 = s.encrypt('bob', 'reply on session 2');
  for (let n = 3; n <= sessions; n++) s.processBundle('alice', BUNDLE, { comment: `session ${n}` });
  return { r1, r2 };
}

function archivedAtCap(s: ScriptRecorder): void {
  const sessions = ARCHIVED_STATES_MAX_LENGTH + 1;
  const { r1 } = manySessions(s, sessions);
  s.decrypt('alice', r1, {
    comment: `session 1 is the oldest of exactly ${ARCHIVED_STATES_MAX_LENGTH} archived sessions: every newer one is tried (a DH step each), then session 1 decrypts and is promoted`,
  });
}

function archivedPastCap(s: ScriptRecorder): void {
  const sessions = ARCHIVED_STATES_MAX_LENGTH + 2;
  const { r1, r2 } = manySessions(s, sessions);
  s.decrypt('alice', r1, {
    comment: `session 1 was dropped when session ${sessions} archived the ${ARCHIVED_STATES_MAX_LENGTH + 1}st: no session decrypts, the record is unchanged`,
    expect: ['NO_SESSION_DECRYPTED'],
  });
  s.decrypt('alice', r2, {
    comment: 'session 2 is the oldest archived session: it decrypts and is promoted to current',
  });
  const a = s.encrypt('alice', 'on the promoted session 2: a SignalMessage');
  s.decrypt('bob', a);
}

interface LimitCase {
  readonly id: string;
  readonly comment: string;
  readonly rules: readonly string[];
  readonly result: 'valid';
  readonly build: (s: ScriptRecorder) => void;
}

/** The cases, in file order. Ids are never reused. */
export const LIMIT_CASES: readonly LimitCase[] = [
  {
    id: 'limits-001',
    comment: `Forward jump: a counter ${MAX_FORWARD_JUMPS + 1} ahead is refused (FORWARD_JUMP_TOO_FAR), exactly ${MAX_FORWARD_JUMPS} ahead is accepted.`,
    rules: ['WP-DR-07', 'WP-DR-08', 'WP-DR-11', 'WP-DR-06'],
    result: 'valid',
    build: forwardJump,
  },
  {
    id: 'limits-002',
    comment: `Skipped-key cap past the limit: counter ${MAX_MESSAGE_KEYS + 1} first stores ${MAX_MESSAGE_KEYS + 1} keys, the cap drops counter 0 (then a duplicate), counter 1 still decrypts.`,
    rules: ['WP-DR-08', 'WP-DR-10'],
    result: 'valid',
    build: skippedKeysPastCap,
  },
  {
    id: 'limits-003',
    comment: `Skipped-key cap at the limit: counter ${MAX_MESSAGE_KEYS} first stores exactly ${MAX_MESSAGE_KEYS} keys, counter 0 still decrypts.`,
    rules: ['WP-DR-08'],
    result: 'valid',
    build: skippedKeysAtCap,
  },
  {
    id: 'limits-004',
    comment: `Receiver-chain cap: with ${MAX_RECEIVER_CHAINS} chains a held-back message of chain 1 decrypts; after the ${MAX_RECEIVER_CHAINS + 1}th chain another one fails.`,
    rules: ['WP-DR-09', 'WP-DR-06', 'WP-PQXDH-10'],
    result: 'valid',
    build: receiverChains,
  },
  {
    id: 'limits-005',
    comment: `Archived-session cap at the limit: ${ARCHIVED_STATES_MAX_LENGTH + 1} sessions (current + ${ARCHIVED_STATES_MAX_LENGTH} archived); a reply on session 1 decrypts and promotes it.`,
    rules: ['WP-REC-01', 'WP-REC-02', 'WP-PQXDH-07'],
    result: 'valid',
    build: archivedAtCap,
  },
  {
    id: 'limits-006',
    comment: `Archived-session cap past the limit: ${ARCHIVED_STATES_MAX_LENGTH + 2} sessions drop session 1; its reply fails (NO_SESSION_DECRYPTED), a reply on session 2 decrypts and promotes it.`,
    rules: ['WP-REC-01', 'WP-REC-02', 'WP-DR-11', 'WP-PQXDH-07'],
    result: 'valid',
    build: archivedPastCap,
  },
];

/** Generates the limits family. */
export function generateLimitsFamily(c: CryptoProvider): FamilyFile {
  const { json, setup } = sharedSetup(c);
  const tests: VectorTest[] = LIMIT_CASES.map((k) => {
    const s = recordScript(c, setup, seedLabel(FAMILY, k.id));
    k.build(s);
    return scriptTest(k, SETUP_ID, s);
  });
  return {
    family: FAMILY,
    version: VECTOR_FORMAT_VERSION,
    source: GENERATOR_SOURCE,
    setups: { [SETUP_ID]: json },
    tests,
  };
}
