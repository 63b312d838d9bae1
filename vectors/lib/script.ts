/**
 * Scripts: the step format of the `transcript`, `limits` and `invalid` families, one executor that
 * runs a step against impl/, a recorder the generator drives (it runs each step with a recording
 * Rng and writes down the draws and the outcome), and a replayer the checker uses (it runs each step
 * with a scripted Rng that returns exactly the listed draws, and compares the outcome).
 *
 * ```text
 * process_bundle  { op, comment?, by, bundle: <name in setup.bundles> | bundle, now, draws,
 *                   expected: { base_key } | { error, rule } }
 * encrypt         { op, comment?, from, plaintext, now, repeat?, deliver?, draws,
 *                   expected: { type, message, message_keys: { cipher_key, mac_key, iv } }
 *                           | { type, message_sha256 }             (deliver: false)
 *                           | { type, messages_sha256 }            (deliver: false, repeat: n)
 *                           | { error, rule } }
 * decrypt         { op, comment?, to, message_ref,                                      draws, expected }
 *                 { op, comment?, to, derived_from?, mutation, type, message,           draws, expected }
 *                   expected: { plaintext } | { error, rule }
 * ```
 *
 * `message_ref` is the index (0-based, in `steps`) of a delivered encrypt step; the message is the
 * bytes listed there. `messages_sha256` is SHA-256 over `len₁[4, big-endian] ‖ m₁ ‖ len₂ ‖ m₂ ‖ …`.
 * The executor deliberately uses only impl/'s public session-record API plus spec/'s KDFs (for the
 * message keys it reports), so the vectors pin what a caller observes.
 * @module
 */
import { concatBytes } from '../../spec/bytes.js';
import type { CryptoProvider } from '../../spec/crypto/provider.js';
import { ERROR_RULES, type ErrorCode, type ProtocolError } from '../../spec/errors.js';
import { deriveMessageKeys, kdfCk } from '../../spec/kdf.js';
import { seededRng, type Rng } from '../../spec/rng.js';
import {
  decryptMessage,
  EMPTY_SESSION_RECORD,
  encryptMessage,
  processPreKeyBundle,
  type CiphertextMessage,
  type PreKeyBundle,
  type PreKeyState,
  type SessionRecord,
} from '../../impl/index.js';
import { DrawMismatchError, recordingRng, scriptedRng } from './draws.js';
import {
  arrayField,
  firstDifference,
  hex,
  integerField,
  objectField,
  stringField,
  unhex,
  utf8Bytes,
  VectorFormatError,
  type Json,
  type JsonObject,
  type VectorTest,
} from './format.js';
import { bundleFrom, bundleJson, checkSetup, PARTY_NAMES, type PartyName, type Setup } from './setup.js';

/** The clock value of the first step when a generator does not set one (ms; Nov 2023). */
export const SCRIPT_START_TIME = 1_700_000_000_000;
/** How far the recorder's clock advances per step that takes a time. */
const CLOCK_STEP_MS = 1000;

/** One party's live state while a script runs. */
interface PartyState {
  prekeys: PreKeyState;
  record: SessionRecord;
}

/** Everything a script mutates. */
interface World {
  readonly parties: Record<PartyName, PartyState>;
  readonly bundles: Readonly<Record<string, PreKeyBundle>>;
}

function newWorld(setup: Setup): World {
  return {
    parties: {
      alice: { prekeys: setup.parties.alice, record: EMPTY_SESSION_RECORD },
      bob: { prekeys: setup.parties.bob, record: EMPTY_SESSION_RECORD },
    },
    bundles: setup.bundles,
  };
}

function partyName(value: Json | undefined, path: string): PartyName {
  const name = stringField(value, path);
  if (!PARTY_NAMES.includes(name as PartyName))
    throw new VectorFormatError(`${path} must be "alice" or "bob"`);
  return name as PartyName;
}

function errorJson(error: ProtocolError): JsonObject {
  return { error: error.code, rule: error.rule };
}

/** SHA-256 over `len[4, big-endian] ‖ message` for each message in order. */
function messagesDigest(c: CryptoProvider, messages: readonly Uint8Array[]): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const m of messages) {
    const len = new Uint8Array(4);
    new DataView(len.buffer).setUint32(0, m.length);
    parts.push(len, m);
  }
  return c.sha256(concatBytes(...parts));
}

/** The message a decrypt step delivers: by reference to a delivered encrypt step, or inline. */
function messageOfDecrypt(
  steps: readonly JsonObject[],
  step: JsonObject,
  path: string,
  index: number,
): CiphertextMessage {
  if (step.message_ref !== undefined) {
    const ref = integerField(step.message_ref, `${path}.message_ref`);
    const target = steps[ref];
    if (target === undefined || ref >= index || target.op !== 'encrypt' || target.deliver === false) {
      throw new VectorFormatError(`${path}.message_ref must name an earlier delivered encrypt step`);
    }
    const expected = objectField(target.expected, `steps[${ref}].expected`);
    return {
      type: messageType(expected.type, `steps[${ref}].expected.type`),
      bytes: unhex(expected.message, `steps[${ref}].expected.message`),
    };
  }
  return { type: messageType(step.type, `${path}.type`), bytes: unhex(step.message, `${path}.message`) };
}

function messageType(value: Json | undefined, path: string): 'prekey' | 'whisper' {
  if (value !== 'prekey' && value !== 'whisper')
    throw new VectorFormatError(`${path} must be "prekey" or "whisper"`);
  return value;
}

/**
 * Runs one step against impl/ with `rng` and returns what happened, in the shape of the step's
 * `expected`. Mutates `world` on success only (impl/ leaves state untouched on failure, WP-DR-11).
 */
function executeStep(
  c: CryptoProvider,
  world: World,
  steps: readonly JsonObject[],
  index: number,
  step: JsonObject,
  rng: Rng,
): JsonObject {
  const path = `steps[${index}]`;
  const env = { crypto: c, rng };
  switch (step.op) {
    case 'process_bundle': {
      const by = world.parties[partyName(step.by, `${path}.by`)];
      const bundle =
        typeof step.bundle === 'string'
          ? world.bundles[step.bundle]
          : bundleFrom(step.bundle, `${path}.bundle`);
      if (bundle === undefined) throw new VectorFormatError(`${path}.bundle names an unknown bundle`);
      const local = {
        identityKeyPair: by.prekeys.identityKeyPair,
        registrationId: by.prekeys.registrationId,
      };
      const result = processPreKeyBundle(
        env,
        by.record,
        local,
        bundle,
        integerField(step.now, `${path}.now`),
      );
      if (!result.ok) return errorJson(result.error);
      by.record = result.value;
      return { base_key: hex(result.value.current?.aliceBaseKey ?? new Uint8Array(0)) };
    }
    case 'encrypt': {
      const from = world.parties[partyName(step.from, `${path}.from`)];
      const plaintext = unhex(step.plaintext, `${path}.plaintext`);
      const now = integerField(step.now, `${path}.now`);
      const repeat = step.repeat === undefined ? 1 : integerField(step.repeat, `${path}.repeat`);
      const deliver = step.deliver !== false;
      if (repeat < 1 || (repeat > 1 && deliver))
        throw new VectorFormatError(`${path}.repeat needs deliver: false`);
      const messages: CiphertextMessage[] = [];
      let keysJson: JsonObject | null = null;
      for (let i = 0; i < repeat; i++) {
        // The message keys this encryption uses, derived as WP-DR-02/03 say from the sending chain.
        const chainKey = from.record.current?.senderChainKey.key;
        const result = encryptMessage(env, from.record, plaintext, now);
        if (!result.ok) {
          if (i > 0) throw new VectorFormatError(`${path}: a repeated encryption failed part way`);
          return errorJson(result.error);
        }
        if (chainKey !== undefined) {
          const keys = deriveMessageKeys(c, kdfCk(c, chainKey).messageKeySeed);
          keysJson = { cipher_key: hex(keys.cipherKey), mac_key: hex(keys.macKey), iv: hex(keys.iv) };
        }
        from.record = result.value.record;
        messages.push(result.value.message);
      }
      const type = messages[0]?.type ?? 'whisper';
      if (messages.some((m) => m.type !== type))
        throw new VectorFormatError(`${path}: repeated messages changed type`);
      if (!deliver && repeat > 1)
        return {
          type,
          messages_sha256: hex(
            messagesDigest(
              c,
              messages.map((m) => m.bytes),
            ),
          ),
        };
      const bytes = messages[0]?.bytes ?? new Uint8Array(0);
      if (!deliver) return { type, message_sha256: hex(c.sha256(bytes)) };
      return { type, message: hex(bytes), message_keys: keysJson };
    }
    case 'decrypt': {
      const to = world.parties[partyName(step.to, `${path}.to`)];
      const message = messageOfDecrypt(steps, step, path, index);
      const result = decryptMessage(env, to.record, to.prekeys, message);
      if (!result.ok) return errorJson(result.error);
      to.record = result.value.record;
      to.prekeys = result.value.prekeys;
      return { plaintext: hex(result.value.plaintext) };
    }
    default:
      throw new VectorFormatError(`${path}.op is not a known operation`);
  }
}

/** Counts a script reports as its test-level `expected`. */
export interface ScriptSummary {
  readonly steps: number;
  readonly encrypted: number;
  readonly decrypted: number;
  readonly rejected: number;
}

function summaryJson(s: ScriptSummary): JsonObject {
  return { steps: s.steps, encrypted: s.encrypted, decrypted: s.decrypted, rejected: s.rejected };
}

function tally(summary: ScriptSummary, step: JsonObject, outcome: JsonObject): ScriptSummary {
  const rejected = outcome.error !== undefined;
  const repeat = typeof step.repeat === 'number' ? step.repeat : 1;
  return {
    steps: summary.steps + 1,
    encrypted: summary.encrypted + (step.op === 'encrypt' && !rejected ? repeat : 0),
    decrypted: summary.decrypted + (step.op === 'decrypt' && !rejected ? 1 : 0),
    rejected: summary.rejected + (rejected ? 1 : 0),
  };
}

const EMPTY_SUMMARY: ScriptSummary = { steps: 0, encrypted: 0, decrypted: 0, rejected: 0 };

// ---------------------------------------------------------------------------------------------
// Recording (generator side)
// ---------------------------------------------------------------------------------------------

/** Raised when a generated script does not behave as its generator expects (a bug to report). */
export class GeneratorExpectationError extends Error {
  override readonly name = 'GeneratorExpectationError';
}

/** What the generator expects a step to do: succeed, or fail with one of the listed codes. */
export type Expectation = 'ok' | readonly ErrorCode[];

/** Options common to every recorded step. */
export interface StepOptions {
  readonly comment?: string;
  readonly expect?: Expectation;
}

/** Drives a script: each call runs one step at once and appends it, with its draws and outcome. */
export interface ScriptRecorder {
  processBundle(
    by: PartyName,
    bundle: string | PreKeyBundle,
    options?: StepOptions & { readonly now?: number },
  ): number;
  encrypt(
    from: PartyName,
    text: string,
    options?: StepOptions & { readonly now?: number; readonly deliver?: boolean; readonly repeat?: number },
  ): number;
  decrypt(to: PartyName, ref: number, options?: StepOptions): number;
  decryptBytes(
    to: PartyName,
    message: CiphertextMessage,
    options: StepOptions & { readonly mutation: string; readonly derivedFrom?: number },
  ): number;
  /** The bytes and type of a delivered encrypt step. */
  message(ref: number): CiphertextMessage;
  /** A party's live state (for crafting messages from its keys). */
  state(name: PartyName): { readonly prekeys: PreKeyState; readonly record: SessionRecord };
  /** The clock value of the last step that took one. */
  now(): number;
  /** The outcome recorded for a step. */
  outcome(index: number): JsonObject;
  /** The recorded steps and their summary. */
  finish(): { readonly steps: JsonObject[]; readonly summary: JsonObject; readonly lastError: string | null };
}

/** Starts a recorder over `setup`; all draws come from `seededRng(seed)`, recorded per step. */
export function recordScript(c: CryptoProvider, setup: Setup, seed: string): ScriptRecorder {
  const world = newWorld(setup);
  const rng = recordingRng(seededRng(seed));
  const steps: JsonObject[] = [];
  let summary = EMPTY_SUMMARY;
  let clock = SCRIPT_START_TIME;
  let lastError: string | null = null;

  const run = (skeleton: JsonObject, expect: Expectation = 'ok'): number => {
    const index = steps.length;
    const outcome = executeStep(c, world, steps, index, skeleton, rng);
    const draws = rng.take().map(hex);
    const step: JsonObject = { ...skeleton, draws, expected: outcome };
    const code = typeof outcome.error === 'string' ? outcome.error : null;
    if (expect === 'ok' && code !== null) {
      throw new GeneratorExpectationError(`step ${index} (${String(skeleton.op)}) failed with ${code}`);
    }
    if (expect !== 'ok' && (code === null || !expect.includes(code as ErrorCode))) {
      throw new GeneratorExpectationError(
        `step ${index} (${String(skeleton.op)}) gave ${code ?? 'success'}, expected one of ${expect.join(', ')}`,
      );
    }
    lastError = code;
    summary = tally(summary, step, outcome);
    steps.push(step);
    return index;
  };
  const tick = (now: number | undefined): number => {
    clock = now ?? clock + CLOCK_STEP_MS;
    return clock;
  };
  const withComment = (comment: string | undefined): JsonObject => (comment === undefined ? {} : { comment });

  return {
    processBundle(by, bundle, options = {}) {
      return run(
        {
          op: 'process_bundle',
          ...withComment(options.comment),
          by,
          bundle: typeof bundle === 'string' ? bundle : bundleJson(bundle),
          now: tick(options.now),
        },
        options.expect,
      );
    },
    encrypt(from, text, options = {}) {
      const deliver = options.deliver ?? true;
      return run(
        {
          op: 'encrypt',
          ...withComment(options.comment),
          from,
          plaintext: hex(utf8Bytes(text)),
          now: tick(options.now),
          ...(options.repeat === undefined ? {} : { repeat: options.repeat }),
          ...(deliver ? {} : { deliver: false }),
        },
        options.expect,
      );
    },
    decrypt(to, ref, options = {}) {
      return run({ op: 'decrypt', ...withComment(options.comment), to, message_ref: ref }, options.expect);
    },
    decryptBytes(to, message, options) {
      return run(
        {
          op: 'decrypt',
          ...withComment(options.comment),
          to,
          ...(options.derivedFrom === undefined ? {} : { derived_from: options.derivedFrom }),
          mutation: options.mutation,
          type: message.type,
          message: hex(message.bytes),
        },
        options.expect,
      );
    },
    message(ref) {
      const step = steps[ref];
      if (step === undefined) throw new GeneratorExpectationError(`no step ${ref}`);
      return messageOfDecrypt(steps, { message_ref: ref }, `steps[${ref}]`, steps.length);
    },
    state(name) {
      return world.parties[name];
    },
    now() {
      return clock;
    },
    outcome(index) {
      const step = steps[index];
      if (step === undefined) throw new GeneratorExpectationError(`no step ${index}`);
      return objectField(step.expected, `steps[${index}].expected`);
    },
    finish() {
      return { steps, summary: summaryJson(summary), lastError };
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Replay (checker side)
// ---------------------------------------------------------------------------------------------

/** A failed check: where (a JSON path relative to the test) and why. */
export interface CheckFailure {
  readonly path: string;
  readonly message: string;
}

/**
 * Replays a script with `c`: checks the setup, then runs every step with a scripted Rng holding
 * exactly its listed draws and compares the outcome with its `expected`; finally compares the
 * counts with the test's `expected` and, for an invalid test, the last step's error with `error`.
 * Stops at the first failure and returns it, or `null` when every step matches.
 */
export function replayScript(
  c: CryptoProvider,
  setup: Setup,
  setupPath: string,
  test: JsonObject,
  stepsPath: string,
): CheckFailure | null {
  const setupProblem = checkSetup(c, setup, setupPath);
  if (setupProblem !== null) return { path: setupProblem, message: 'setup key material is inconsistent' };
  const world = newWorld(setup);
  const input = objectField(test.input, 'input');
  const steps = arrayField(input.steps, 'input.steps').map((s, i) => objectField(s, `${stepsPath}[${i}]`));
  let summary = EMPTY_SUMMARY;
  let lastError: Json = null;
  for (const [index, step] of steps.entries()) {
    const path = `${stepsPath}[${index}]`;
    const draws = arrayField(step.draws, `${path}.draws`).map((d, i) => unhex(d, `${path}.draws[${i}]`));
    const rng = scriptedRng(draws);
    let outcome: JsonObject;
    try {
      outcome = executeStep(c, world, steps, index, step, rng);
    } catch (error) {
      if (error instanceof VectorFormatError) throw error;
      const what = error instanceof DrawMismatchError ? `${path}.draws` : path;
      return {
        path: what,
        message: error instanceof Error ? `${error.name}: ${error.message}` : String(error),
      };
    }
    const difference = firstDifference(outcome, step.expected, '');
    if (difference !== null) {
      return {
        path: `${path}.expected${difference === '(root)' ? '' : `.${difference}`}`,
        message: 'outcome differs',
      };
    }
    if (rng.remaining() !== 0) {
      return { path: `${path}.draws`, message: `${rng.remaining()} listed draw(s) were not consumed` };
    }
    summary = tally(summary, step, outcome);
    lastError = outcome.error ?? null;
  }
  const difference = firstDifference(summaryJson(summary), test.expected, '');
  if (difference !== null) return { path: `expected.${difference}`, message: 'script summary differs' };
  if (test.result === 'invalid') {
    if (lastError === null || lastError !== test.error)
      return { path: 'error', message: 'last step did not fail with error' };
    if (ERROR_RULES[lastError as ErrorCode] === undefined)
      return { path: 'error', message: 'unknown error code' };
  } else if (test.error !== undefined) {
    return { path: 'error', message: 'a valid test carries no error' };
  }
  return null;
}

/** Steps of a script test (for tooling that inspects them). */
export function scriptSteps(test: JsonObject): readonly JsonObject[] {
  const input = objectField(test.input, 'input');
  return arrayField(input.steps, 'input.steps').map((s, i) => objectField(s, `input.steps[${i}]`));
}

/** The test-level fields a script generator chooses. */
export interface ScriptTestMeta {
  readonly id: string;
  readonly comment: string;
  readonly rules: readonly string[];
  readonly result: 'valid' | 'invalid';
}

/**
 * Assembles a script test from a finished recorder. `rules` gets the rule of every rejection the
 * script records appended (once each); an invalid test's `error` is its last step's error.
 */
export function scriptTest(meta: ScriptTestMeta, setup: Json, recorder: ScriptRecorder): VectorTest {
  const { steps, summary, lastError } = recorder.finish();
  const rules = [...meta.rules];
  for (const step of steps) {
    const rule = objectField(step.expected, 'expected').rule;
    if (typeof rule === 'string' && !rules.includes(rule)) rules.push(rule);
  }
  if (meta.result === 'invalid' && lastError === null) {
    throw new GeneratorExpectationError(`${meta.id}: an invalid test must end with a rejected step`);
  }
  const head = { id: meta.id, comment: meta.comment, rules, result: meta.result };
  return {
    ...head,
    ...(meta.result === 'invalid' && lastError !== null ? { error: lastError } : {}),
    input: { setup, steps },
    expected: summary,
  };
}
