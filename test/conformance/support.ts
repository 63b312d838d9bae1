/**
 * Shared pieces of the conformance tests (model/ against impl/): a recording Rng, the canonical
 * form of an observation, and the one comparison function every conformance test uses, so a
 * divergence is always reported the same way: the step, the field path, and both values.
 *
 * An observation is what one engine shows after one step: its outputs (wire bytes, plaintexts,
 * errors with code and rule, responses), the sizes of the random draws it made during the step,
 * and its abstract state (spec/abstract.ts and friends). Two engines agree on a step when the
 * canonical forms of their observations are equal.
 * @module
 */
import { createActor, type AnyTransitionDefinition, type InspectionEvent } from 'xstate';
import type { PreKeyBundle } from '../../spec/bundle.js';
import { utf8 } from '../../spec/bytes.js';
import { computeMessageMac, encryptBody } from '../../spec/cipher.js';
import type { CryptoProvider } from '../../spec/crypto/provider.js';
import type { Env } from '../../spec/env.js';
import type { ProtocolError } from '../../spec/errors.js';
import { toHex } from '../../spec/hex.js';
import { deriveMessageKeys, kdfCk } from '../../spec/kdf.js';
import type { KeyPair } from '../../spec/keys.js';
import { seededRng, type Rng } from '../../spec/rng.js';
import {
  encodePreKeySignalMessage,
  encodeSignalMessage,
  encodeSignalMessageBody,
  frameSignalMessage,
  parsePreKeySignalMessage,
  parseSignalMessage,
  type PreKeySignalMessageFields,
  type SignalMessageFields,
} from '../../spec/wire.js';
import {
  abstractSessionRecord,
  decryptPreKeySignalMessage,
  decryptSignalMessage,
  EMPTY_SESSION_RECORD,
  encryptMessage,
  generatePreKeyState,
  processPreKeyBundle,
  type PreKeyState,
  type SessionRecord,
} from '../../impl/index.js';
import {
  abstractSessionRecordOf,
  createSessionMachine,
  createSessionRunner,
  prekeysOf,
  type SessionContext,
  type SessionEmitted,
  type SessionEvent,
  type SessionMachine,
} from '../../model/session.js';
import type { PreKeyStoreData, SessionRecordData } from '../../model/session-data.js';
import { transitionKeyOf } from '../../tools/model-diagrams.js';

/** An Rng that records the length of every draw it serves. */
export interface RecordingRng extends Rng {
  /** Lengths of the draws since the last {@link RecordingRng.take}. */
  readonly draws: number[];
  /** Returns the draws recorded so far and forgets them. */
  take(): number[];
}

/** Wraps `inner` so every `randomBytes(n)` is recorded as `n`. */
export function recordingRng(inner: Rng): RecordingRng {
  const draws: number[] = [];
  return {
    draws,
    take(): number[] {
      return draws.splice(0, draws.length);
    },
    randomBytes(length: number): Uint8Array {
      draws.push(length);
      return inner.randomBytes(length);
    },
  };
}

/** What one engine shows after one step. */
export interface Observation {
  readonly outputs: unknown;
  /** Draw sizes, in order (per party where a world has several). */
  readonly draws: unknown;
  readonly abstract: unknown;
}

/** Where two engines first differ. */
export interface Divergence {
  /** 0-based index of the step in its path or run. */
  readonly step: number;
  /** The step as a person would describe it (`A sends`, `deliver A's oldest to B`). */
  readonly label: string;
  /** Path of the first differing field (`abstract.current.senderChainIndex`, `draws`, `outputs[0].bytes`). */
  readonly field: string;
  readonly impl: string;
  readonly model: string;
}

/**
 * A JSON-like canonical copy: byte arrays as `hex:…`, `undefined` fields dropped, object keys
 * sorted, Maps and Sets as sorted entries. Functions and class instances other than these throw,
 * since an observation must be plain data.
 */
export function canonical(value: unknown): unknown {
  if (value instanceof Uint8Array) return `hex:${toHex(value)}`;
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return value;
  if (typeof value === 'number') return Object.is(value, -0) ? 0 : value;
  if (typeof value === 'bigint') return `bigint:${value.toString()}`;
  if (value === undefined) return undefined;
  if (Array.isArray(value)) return value.map((item) => canonical(item) ?? null);
  if (value instanceof Map) {
    return [...value.entries()]
      .map(([k, v]) => [canonical(k), canonical(v)] as const)
      .sort((a, b) => JSON.stringify(a[0]).localeCompare(JSON.stringify(b[0])));
  }
  if (value instanceof Set) return [...value].map(canonical).sort();
  if (typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(value).sort()) {
      const child = canonical((value as Record<string, unknown>)[key]);
      if (child !== undefined) out[key] = child;
    }
    return out;
  }
  throw new Error(`observation holds a ${typeof value}; observations must be plain data`);
}

function show(value: unknown): string {
  if (value === undefined) return '(absent)';
  const text = JSON.stringify(value);
  return text.length > 160 ? `${text.slice(0, 157)}...` : text;
}

/** The first field where two canonical values differ, or null. */
export function firstDifference(
  implValue: unknown,
  modelValue: unknown,
  at: string,
): { field: string; impl: string; model: string } | null {
  if (Array.isArray(implValue) && Array.isArray(modelValue)) {
    // Lists of different lengths (an extra output, a chain not dropped) are reported as such.
    if (implValue.length !== modelValue.length) {
      return { field: `${at}.length`, impl: String(implValue.length), model: String(modelValue.length) };
    }
    for (let i = 0; i < implValue.length; i++) {
      const found = firstDifference(implValue[i], modelValue[i], `${at}[${i}]`);
      if (found !== null) return found;
    }
    return null;
  }
  if (
    implValue !== null &&
    modelValue !== null &&
    typeof implValue === 'object' &&
    typeof modelValue === 'object' &&
    !Array.isArray(implValue) &&
    !Array.isArray(modelValue)
  ) {
    const a = implValue as Record<string, unknown>;
    const b = modelValue as Record<string, unknown>;
    const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
    for (const key of keys) {
      const found = firstDifference(a[key], b[key], at === '' ? key : `${at}.${key}`);
      if (found !== null) return found;
    }
    return null;
  }
  if (JSON.stringify(implValue) === JSON.stringify(modelValue)) return null;
  return { field: at === '' ? '(value)' : at, impl: show(implValue), model: show(modelValue) };
}

/**
 * Compares the two engines' observations of one step: outputs first, then draws, then the
 * abstract state. Returns the first difference, or null when they agree.
 */
export function compareObservations(
  step: number,
  label: string,
  impl: Observation,
  model: Observation,
): Divergence | null {
  for (const field of ['outputs', 'draws', 'abstract'] as const) {
    const found = firstDifference(canonical(impl[field]), canonical(model[field]), field);
    if (found !== null) return { step, label, ...found };
  }
  return null;
}

/** The one-line report of a divergence, as every conformance failure prints it. */
export function describeDivergence(d: Divergence, context = ''): string {
  return (
    `engines diverge${context === '' ? '' : ` (${context})`} at step ${d.step} (${d.label}): ` +
    `field ${d.field}: impl ${d.impl} ≠ model ${d.model}`
  );
}

/** Throws with {@link describeDivergence} when the observations differ. */
export function assertAgree(
  step: number,
  label: string,
  impl: Observation,
  model: Observation,
  context = '',
): void {
  const divergence = compareObservations(step, label, impl, model);
  if (divergence !== null) throw new Error(describeDivergence(divergence, context));
}

// ---------------------------------------------------------------------------------------------
// The two-party session world (both engines behind one interface)
// ---------------------------------------------------------------------------------------------

/** What a session engine reports for one operation, in the model's emitted-event vocabulary. */
export type SessionOutput =
  | {
      readonly type: 'session.message';
      readonly messageType: 'prekey' | 'whisper';
      readonly bytes: Uint8Array;
    }
  | { readonly type: 'session.plaintext'; readonly plaintext: Uint8Array; readonly createdSession: boolean }
  | { readonly type: 'session.rejected'; readonly code: string; readonly rule: string };

/** The prekey store fields both engines share by name (impl/prekeys.ts, model/session-data.ts). */
export interface PreKeyStoreLike {
  readonly signedPreKeys: readonly {
    readonly keyId: number;
    readonly keyPair: KeyPair;
    readonly signature: Uint8Array;
  }[];
  readonly oneTimePreKeys: readonly { readonly keyId: number; readonly keyPair: KeyPair }[];
  readonly kyberPreKeys: readonly {
    readonly keyId: number;
    readonly publicKey: Uint8Array;
    readonly signature: Uint8Array;
    readonly lastResort: boolean;
  }[];
}

/** The session fields a forger needs (both engines use these names). */
export interface SessionLike {
  readonly localIdentityKey: Uint8Array;
  readonly remoteIdentityKey: Uint8Array;
  readonly senderRatchetKey: KeyPair;
  readonly senderChainKey: { readonly key: Uint8Array; readonly index: number };
  readonly previousCounter: number;
  readonly pendingPreKey: unknown;
}

/** One device's session state with one peer, in one engine. */
export interface SessionParty {
  processBundle(bundle: PreKeyBundle, now: number): SessionOutput[];
  send(plaintext: Uint8Array, now: number): SessionOutput[];
  deliver(messageType: 'prekey' | 'whisper', bytes: Uint8Array): SessionOutput[];
  /** Abstract record plus the prekey ids still held. */
  abstract(): unknown;
  prekeys(): PreKeyStoreLike;
  currentSession(): SessionLike | null;
  /** Draw sizes since the last call. */
  takeDraws(): number[];
  /** Model only: transitions fired since the last call (keys of tools/model-diagrams.ts). */
  takeFired(): string[];
  /** The committed record and prekey store (plain data, to start a copy of the party from). */
  data(): { readonly record: unknown; readonly prekeys: PreKeyStoreLike };
  /** Model only: the machine's state value as JSON ('' for impl). */
  value(): string;
}

/** The fixed identity of a party: keys, registration id and initial prekeys. */
export interface PartyKeys {
  readonly identityKeyPair: KeyPair;
  readonly registrationId: number;
  readonly prekeys: PreKeyStoreLike;
}

/** Which prekeys a bundle offers. */
export type BundleChoice = 'fresh' | 'noOneTime' | 'lastResort' | 'stale';

/** What is wrong with a bad bundle (one defect each, in the order the checks meet them). */
export type BundleDefect =
  | 'identityKey'
  | 'signedPreKey'
  | 'signedPreKeySignature'
  | 'kyberMissing'
  | 'kyberPreKey'
  | 'kyberSignature'
  | 'unpairedOneTime'
  | 'oneTimePreKey';

/** How a message is mangled before delivery. */
export type Tampering =
  | 'mac'
  | 'signedPreKeyId'
  | 'kyberPreKeyId'
  | 'oneTimePreKeyId'
  | 'farFuture'
  | 'version3'
  | 'garbage'
  | 'badPadding';

/** A party of the two-party world. */
export type Side = 'A' | 'B';

/** One abstract action of the two-party world; both engines resolve it against their own state. */
export type SessionAction =
  | { readonly kind: 'bundle'; readonly by: Side; readonly choice: BundleChoice }
  | { readonly kind: 'badBundle'; readonly by: Side; readonly defect: BundleDefect }
  | { readonly kind: 'send'; readonly by: Side }
  | { readonly kind: 'deliver'; readonly to: Side; readonly pick: 'oldest' | 'newest' }
  | { readonly kind: 'drop'; readonly to: Side }
  | { readonly kind: 'duplicate'; readonly to: Side }
  | { readonly kind: 'tamper'; readonly to: Side; readonly how: Tampering }
  | { readonly kind: 'advanceClock'; readonly days: number }
  | { readonly kind: 'pingPong'; readonly rounds: number }
  | { readonly kind: 'burst'; readonly by: Side; readonly count: number }
  | { readonly kind: 'reinitiate'; readonly by: Side; readonly times: number };

/** A one-line description of an action, used in failure messages. */
export function describeAction(action: SessionAction): string {
  const other = (side: Side): Side => (side === 'A' ? 'B' : 'A');
  switch (action.kind) {
    case 'bundle':
      return `${action.by} processes ${other(action.by)}'s ${action.choice} bundle`;
    case 'badBundle':
      return `${action.by} processes a bundle with a bad ${action.defect}`;
    case 'send':
      return `${action.by} sends`;
    case 'deliver':
      return `deliver ${other(action.to)}'s ${action.pick} message to ${action.to}`;
    case 'drop':
      return `drop ${other(action.to)}'s oldest message to ${action.to}`;
    case 'duplicate':
      return `deliver a duplicate of ${other(action.to)}'s last delivered message to ${action.to}`;
    case 'tamper':
      return `deliver ${other(action.to)}'s message to ${action.to} with ${action.how} tampering`;
    case 'advanceClock':
      return `the clock advances ${action.days} days`;
    case 'pingPong':
      return `${action.rounds} round trips`;
    case 'burst':
      return `${action.by} sends ${action.count} messages, all but the last lost`;
    case 'reinitiate':
      return `${action.by} processes ${other(action.by)}'s bundle ${action.times} times`;
  }
}

interface Flight {
  readonly messageType: 'prekey' | 'whisper';
  readonly bytes: Uint8Array;
}

const DAY_MS = 24 * 60 * 60 * 1000;
/** The world's clock at the start (ms). */
export const SESSION_T0 = 1_700_000_000_000;

/** A bundle from a party's current prekeys, as an honest server would build it. */
export function bundleFrom(
  keys: PartyKeys,
  store: PreKeyStoreLike,
  choice: Exclude<BundleChoice, 'stale'>,
): PreKeyBundle {
  const signed = store.signedPreKeys[store.signedPreKeys.length - 1];
  if (signed === undefined) throw new Error('no signed prekey');
  const oneTime = choice === 'noOneTime' ? undefined : store.oneTimePreKeys[0];
  const kyber =
    choice === 'lastResort' ? store.kyberPreKeys.find((k) => k.lastResort) : store.kyberPreKeys[0];
  if (kyber === undefined) throw new Error('no Kyber prekey');
  return {
    registrationId: keys.registrationId,
    deviceId: 1,
    identityKey: keys.identityKeyPair.publicKey,
    signedPreKeyId: signed.keyId,
    signedPreKey: signed.keyPair.publicKey,
    signedPreKeySignature: signed.signature,
    preKeyId: oneTime?.keyId ?? null,
    preKey: oneTime?.keyPair.publicKey ?? null,
    kyberPreKeyId: kyber.keyId,
    kyberPreKey: kyber.publicKey,
    kyberPreKeySignature: kyber.signature,
  };
}

function flipLast(bytes: Uint8Array): Uint8Array {
  const out = bytes.slice();
  out[out.length - 1] = (out[out.length - 1] ?? 0) ^ 0x01;
  return out;
}

/** A bundle with exactly one defect. */
export function badBundle(good: PreKeyBundle, defect: BundleDefect): PreKeyBundle {
  switch (defect) {
    case 'identityKey':
      return { ...good, identityKey: Uint8Array.of(0x07, ...good.identityKey.subarray(1)) };
    case 'signedPreKey':
      return { ...good, signedPreKey: good.signedPreKey.subarray(0, 32) };
    case 'signedPreKeySignature':
      return { ...good, signedPreKeySignature: flipLast(good.signedPreKeySignature) };
    case 'kyberMissing':
      return { ...good, kyberPreKeyId: null, kyberPreKey: null, kyberPreKeySignature: null };
    case 'kyberPreKey':
      return {
        ...good,
        kyberPreKey: Uint8Array.of(0x0a, ...(good.kyberPreKey ?? new Uint8Array(1)).subarray(1)),
      };
    case 'kyberSignature':
      return { ...good, kyberPreKeySignature: flipLast(good.kyberPreKeySignature ?? new Uint8Array(64)) };
    case 'unpairedOneTime':
      return { ...good, preKeyId: good.preKeyId ?? 77, preKey: null };
    case 'oneTimePreKey':
      return {
        ...good,
        preKeyId: good.preKeyId ?? 77,
        // u = 0: a low-order point (WP-KEYS-03).
        preKey: Uint8Array.of(0x05, ...new Uint8Array(32)),
      };
  }
}

/** Re-encodes a SignalMessage with a changed header, keeping its MAC (so only pre-MAC checks differ). */
function reencodeSignal(
  bytes: Uint8Array,
  change: (fields: SignalMessageFields) => SignalMessageFields,
): Uint8Array {
  const parsed = parseSignalMessage(bytes);
  if (!parsed.ok) return bytes;
  const body = encodeSignalMessageBody(change(parsed.value));
  const framed = frameSignalMessage(body, parsed.value.mac.slice());
  framed[0] = bytes[0] ?? framed[0] ?? 0;
  return framed;
}

/** Applies `change` to the SignalMessage, or to the inner message of a PreKey message. */
function mapInner(flight: Flight, change: (inner: Uint8Array) => Uint8Array): Uint8Array {
  if (flight.messageType === 'whisper') return change(flight.bytes);
  const parsed = parsePreKeySignalMessage(flight.bytes);
  if (!parsed.ok) return flight.bytes;
  return encodePreKeySignalMessage({ ...preKeyFields(parsed.value), message: change(parsed.value.message) });
}

function preKeyFields(parsed: PreKeySignalMessageFields): PreKeySignalMessageFields {
  const fields: PreKeySignalMessageFields = {
    registrationId: parsed.registrationId,
    signedPreKeyId: parsed.signedPreKeyId,
    kyberPreKeyId: parsed.kyberPreKeyId,
    kyberCiphertext: parsed.kyberCiphertext,
    baseKey: parsed.baseKey,
    identityKey: parsed.identityKey,
    message: parsed.message,
  };
  return parsed.preKeyId === undefined ? fields : { ...fields, preKeyId: parsed.preKeyId };
}

function mapPreKeyHeader(
  flight: Flight,
  change: (fields: PreKeySignalMessageFields) => PreKeySignalMessageFields,
): Uint8Array {
  if (flight.messageType !== 'prekey') return flight.bytes;
  const parsed = parsePreKeySignalMessage(flight.bytes);
  if (!parsed.ok) return flight.bytes;
  return encodePreKeySignalMessage(change(preKeyFields(parsed.value)));
}

/**
 * A SignalMessage forged by someone who knows the sender's current sending chain key: a correct
 * MAC over a body whose padding is invalid (reaches WP-DR-04's rejection, which no outsider can).
 */
export function forgeBadPadding(c: CryptoProvider, session: SessionLike): Uint8Array {
  const seed = kdfCk(c, session.senderChainKey.key).messageKeySeed;
  const keys = deriveMessageKeys(c, seed);
  // One block that decrypts to 16 zero bytes: PKCS#7 padding byte 0x00 is invalid.
  const ciphertext = encryptBody(c, keys, new Uint8Array(16)).subarray(0, 16);
  return encodeSignalMessage(
    {
      ratchetKey: session.senderRatchetKey.publicKey,
      counter: session.senderChainKey.index,
      previousCounter: session.previousCounter,
      ciphertext,
    },
    (macInput) =>
      computeMessageMac(c, keys.macKey, session.localIdentityKey, session.remoteIdentityKey, macInput),
  );
}

/** The mangled bytes of a flight. */
function tampered(c: CryptoProvider, flight: Flight, how: Tampering, sender: SessionLike | null): Flight {
  switch (how) {
    case 'mac':
      return { ...flight, bytes: mapInner(flight, flipLast) };
    case 'signedPreKeyId':
      return {
        ...flight,
        bytes: mapPreKeyHeader(flight, (f) => ({ ...f, signedPreKeyId: f.signedPreKeyId + 1000 })),
      };
    case 'kyberPreKeyId':
      return {
        ...flight,
        bytes: mapPreKeyHeader(flight, (f) => ({ ...f, kyberPreKeyId: f.kyberPreKeyId + 1000 })),
      };
    case 'oneTimePreKeyId':
      return {
        ...flight,
        bytes: mapPreKeyHeader(flight, (f) => ({ ...f, preKeyId: (f.preKeyId ?? 0) + 1000 })),
      };
    case 'farFuture':
      return {
        ...flight,
        bytes: mapInner(flight, (inner) =>
          reencodeSignal(inner, (f) => ({ ...f, counter: f.counter + 30_000 })),
        ),
      };
    case 'version3':
      return {
        ...flight,
        bytes: mapInner(flight, (inner) => Uint8Array.of(0x33, ...inner.subarray(1))),
      };
    case 'garbage':
      return { ...flight, bytes: Uint8Array.of(0x44, 0x0a, 0xff, 1, 2, 3, 4, 5, 6, 7, 8) };
    case 'badPadding':
      return sender === null ? flight : { messageType: 'whisper', bytes: forgeBadPadding(c, sender) };
  }
}

/** The two-party world of one engine: the parties, the messages in flight, the clock. */
export interface SessionWorld {
  readonly crypto: CryptoProvider;
  readonly keys: Readonly<Record<Side, PartyKeys>>;
  readonly parties: Readonly<Record<Side, SessionParty>>;
  /** Messages on their way to each side, oldest first. */
  readonly inFlight: Record<Side, Flight[]>;
  /** Messages delivered to each side, in delivery order. */
  readonly delivered: Record<Side, Flight[]>;
  readonly lastBundle: Partial<Record<Side, PreKeyBundle>>;
  now: number;
  sent: number;
}

const OTHER: Readonly<Record<Side, Side>> = { A: 'B', B: 'A' };

/** Whether an action can do anything in this world (the path generator offers only these). */
export function applicable(world: SessionWorld, action: SessionAction): boolean {
  switch (action.kind) {
    case 'deliver':
    case 'drop':
      return world.inFlight[action.to].length > 0;
    case 'duplicate':
      return world.delivered[action.to].length > 0;
    case 'tamper': {
      const candidates = [...world.inFlight[action.to], ...world.delivered[action.to].slice(-1)];
      if (action.how === 'badPadding') return world.parties[OTHER[action.to]].currentSession() !== null;
      if (
        action.how === 'signedPreKeyId' ||
        action.how === 'kyberPreKeyId' ||
        action.how === 'oneTimePreKeyId'
      ) {
        return candidates.some((f) => f.messageType === 'prekey');
      }
      return candidates.length > 0;
    }
    default:
      return true;
  }
}

/** One observed step of a world: outputs per side, draws per side, abstract state per side. */
export function observeSessionWorld(
  world: SessionWorld,
  outputs: readonly { side: Side; output: SessionOutput }[],
): Observation {
  return {
    outputs,
    draws: { A: world.parties.A.takeDraws(), B: world.parties.B.takeDraws() },
    abstract: {
      A: world.parties.A.abstract(),
      B: world.parties.B.abstract(),
      inFlight: world.inFlight.A.length + world.inFlight.B.length,
    },
  };
}

/** Runs one action on a world; returns what the parties output, tagged by side. */
export function applySessionAction(
  world: SessionWorld,
  action: SessionAction,
): { side: Side; output: SessionOutput }[] {
  const out: { side: Side; output: SessionOutput }[] = [];
  const record = (side: Side, outputs: readonly SessionOutput[]): void => {
    for (const output of outputs) {
      out.push({ side, output });
      if (output.type === 'session.message') {
        world.inFlight[OTHER[side]].push({ messageType: output.messageType, bytes: output.bytes });
      }
    }
  };
  const send = (side: Side): void => {
    world.sent++;
    record(side, world.parties[side].send(utf8(`message ${world.sent} from ${side}`), world.now));
  };
  const deliverFlight = (to: Side, flight: Flight): void => {
    record(to, world.parties[to].deliver(flight.messageType, flight.bytes));
  };
  const processBundle = (by: Side, choice: BundleChoice): void => {
    const peer = OTHER[by];
    const bundle =
      choice === 'stale' && world.lastBundle[by] !== undefined
        ? world.lastBundle[by]
        : bundleFrom(world.keys[peer], world.parties[peer].prekeys(), choice === 'stale' ? 'fresh' : choice);
    world.lastBundle[by] = bundle;
    record(by, world.parties[by].processBundle(bundle, world.now));
  };
  switch (action.kind) {
    case 'bundle':
      processBundle(action.by, action.choice);
      break;
    case 'badBundle': {
      const peer = OTHER[action.by];
      const good = bundleFrom(world.keys[peer], world.parties[peer].prekeys(), 'fresh');
      record(action.by, world.parties[action.by].processBundle(badBundle(good, action.defect), world.now));
      break;
    }
    case 'send':
      send(action.by);
      break;
    case 'deliver': {
      const queue = world.inFlight[action.to];
      const flight = action.pick === 'oldest' ? queue.shift() : queue.pop();
      if (flight === undefined) break;
      world.delivered[action.to].push(flight);
      deliverFlight(action.to, flight);
      break;
    }
    case 'drop':
      world.inFlight[action.to].shift();
      break;
    case 'duplicate': {
      const last = world.delivered[action.to][world.delivered[action.to].length - 1];
      if (last !== undefined) deliverFlight(action.to, last);
      break;
    }
    case 'tamper': {
      const sender = world.parties[OTHER[action.to]].currentSession();
      const candidates = [...world.inFlight[action.to], ...world.delivered[action.to].slice(-1)];
      const needsPreKey =
        action.how === 'signedPreKeyId' || action.how === 'kyberPreKeyId' || action.how === 'oneTimePreKeyId';
      const flight = needsPreKey ? candidates.find((f) => f.messageType === 'prekey') : candidates[0];
      const base = flight ?? { messageType: 'whisper' as const, bytes: new Uint8Array(0) };
      deliverFlight(action.to, tampered(world.crypto, base, action.how, sender));
      break;
    }
    case 'advanceClock':
      world.now += action.days * DAY_MS;
      break;
    case 'pingPong':
      for (let round = 0; round < action.rounds; round++) {
        for (const side of ['A', 'B'] as const) {
          send(side);
          const flight = world.inFlight[OTHER[side]].pop();
          if (flight !== undefined) {
            world.delivered[OTHER[side]].push(flight);
            deliverFlight(OTHER[side], flight);
          }
        }
      }
      break;
    case 'burst':
      for (let i = 0; i < action.count; i++) {
        send(action.by);
        if (i < action.count - 1) world.inFlight[OTHER[action.by]].pop();
      }
      break;
    case 'reinitiate':
      for (let i = 0; i < action.times; i++) processBundle(action.by, 'noOneTime');
      break;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Engine adapters
// ---------------------------------------------------------------------------------------------

function rejected(error: ProtocolError): SessionOutput {
  return { type: 'session.rejected', code: error.code, rule: error.rule };
}

/** Generates a party's keys (fixture data handed to both engines alike). */
export function partyKeys(crypto: CryptoProvider, seed: string): PartyKeys {
  const state = generatePreKeyState(
    { crypto, rng: seededRng(`keys/${seed}`) },
    { oneTimePreKeys: 3, oneTimeKyberPreKeys: 1 },
  );
  return {
    identityKeyPair: state.identityKeyPair,
    registrationId: state.registrationId,
    prekeys: {
      signedPreKeys: state.signedPreKeys,
      oneTimePreKeys: state.oneTimePreKeys,
      kyberPreKeys: state.kyberPreKeys,
    },
  };
}

/** impl/'s side of a party: the session-record functions over plain data. */
export function implSessionParty(
  crypto: CryptoProvider,
  rng: RecordingRng,
  keys: PartyKeys,
  start: { readonly record?: SessionRecord; readonly prekeys?: PreKeyStoreLike } = {},
): SessionParty {
  const env: Env = { crypto, rng };
  let record: SessionRecord = start.record ?? EMPTY_SESSION_RECORD;
  let prekeys: PreKeyState = {
    identityKeyPair: keys.identityKeyPair,
    registrationId: keys.registrationId,
    ...(start.prekeys ?? keys.prekeys),
  } as PreKeyState;
  const local = { identityKeyPair: keys.identityKeyPair, registrationId: keys.registrationId };
  return {
    processBundle(bundle, now) {
      const result = processPreKeyBundle(env, record, local, bundle, now);
      if (!result.ok) return [rejected(result.error)];
      record = result.value;
      return [];
    },
    send(plaintext, now) {
      const result = encryptMessage(env, record, plaintext, now);
      if (!result.ok) return [rejected(result.error)];
      record = result.value.record;
      return [
        {
          type: 'session.message',
          messageType: result.value.message.type,
          bytes: result.value.message.bytes,
        },
      ];
    },
    deliver(messageType, bytes) {
      if (messageType === 'prekey') {
        const result = decryptPreKeySignalMessage(env, record, prekeys, bytes);
        if (!result.ok) return [rejected(result.error)];
        record = result.value.record;
        prekeys = result.value.prekeys;
        return [
          {
            type: 'session.plaintext',
            plaintext: result.value.plaintext,
            createdSession: result.value.createdSession,
          },
        ];
      }
      const result = decryptSignalMessage(env, record, bytes);
      if (!result.ok) return [rejected(result.error)];
      record = result.value.record;
      return [{ type: 'session.plaintext', plaintext: result.value.plaintext, createdSession: false }];
    },
    abstract: () => ({
      record: abstractSessionRecord(crypto, record),
      prekeys: {
        oneTimePreKeyIds: prekeys.oneTimePreKeys.map((k) => k.keyId),
        kyberPreKeyIds: prekeys.kyberPreKeys.map((k) => k.keyId),
      },
    }),
    prekeys: () => prekeys,
    currentSession: () => record.current,
    takeDraws: () => rng.take(),
    takeFired: () => [],
    data: () => ({ record, prekeys }),
    value: () => '',
  };
}

/** Options of {@link modelSessionParty}. */
export interface ModelPartyOptions {
  /** A variant of the machine (a planted bug); the runner of model/session.ts otherwise. */
  readonly variant?: (machine: SessionMachine) => SessionMachine;
  /** A machine built beforehand (its env's Rng must be `rng`): saves building one per party. */
  readonly machine?: SessionMachine;
  readonly record?: SessionRecordData;
  readonly prekeys?: PreKeyStoreLike;
}

/** Keys of the transitions in a microstep inspection event. */
function firedIn(event: InspectionEvent): string[] {
  if (event.type !== '@xstate.microstep') return [];
  const transitions = (event as { _transitions?: AnyTransitionDefinition[] })._transitions ?? [];
  return transitions.map(transitionKeyOf);
}

/**
 * model/'s side of a party: a session actor driven through events. With no variant it is the
 * module's own runner (`createSessionRunner`); a variant is started the same way (id `session`,
 * emitted events collected synchronously).
 */
export function modelSessionParty(
  crypto: CryptoProvider,
  rng: RecordingRng,
  keys: PartyKeys,
  options: ModelPartyOptions = {},
): SessionParty {
  const env: Env = { crypto, rng };
  const input = {
    localIdentityKeyPair: keys.identityKeyPair,
    localRegistrationId: keys.registrationId,
    prekeys: (options.prekeys ?? keys.prekeys) as PreKeyStoreData,
    ...(options.record === undefined ? {} : { record: options.record }),
  };
  const fired: string[] = [];
  let step: (event: SessionEvent) => readonly SessionEmitted[];
  let context: () => SessionContext;
  let value: () => unknown;
  if (options.variant === undefined && options.machine === undefined) {
    const runner = createSessionRunner(env, input);
    runner.actor.system.inspect((event) => fired.push(...firedIn(event)));
    step = (event) => runner.step(event).outputs;
    context = () => runner.snapshot().context;
    value = () => runner.snapshot().value;
  } else {
    const machine =
      options.machine ?? (options.variant ?? ((m: SessionMachine) => m))(createSessionMachine(env));
    const actor = createActor(machine, {
      input,
      id: 'session',
      inspect: (event) => fired.push(...firedIn(event)),
    });
    let collected: SessionEmitted[] = [];
    actor.on('*', (emitted) => {
      collected.push(emitted);
    });
    actor.subscribe({ error: () => undefined });
    actor.start();
    step = (event) => {
      collected = [];
      actor.send(event);
      const snapshot = actor.getSnapshot();
      if (snapshot.status === 'error') throw snapshot.error;
      return collected;
    };
    context = () => actor.getSnapshot().context;
    value = () => actor.getSnapshot().value;
  }
  const run = (event: SessionEvent): SessionOutput[] =>
    step(event).map((emitted): SessionOutput => {
      switch (emitted.type) {
        case 'session.message':
          return { type: emitted.type, messageType: emitted.messageType, bytes: emitted.bytes };
        case 'session.plaintext':
          return { type: emitted.type, plaintext: emitted.plaintext, createdSession: emitted.createdSession };
        case 'session.rejected':
          return { type: emitted.type, code: emitted.code, rule: emitted.rule };
      }
    });
  fired.length = 0;
  return {
    processBundle: (bundle, now) => run({ type: 'user.processBundle', bundle, now }),
    send: (plaintext, now) => run({ type: 'user.send', plaintext, now }),
    deliver: (messageType, bytes) => run({ type: 'net.deliver', messageType, bytes }),
    abstract: () => ({ record: abstractSessionRecordOf(crypto, context()), prekeys: prekeysOf(context()) }),
    prekeys: () => context().prekeys,
    currentSession: () => context().record.current,
    takeDraws: () => rng.take(),
    takeFired: () => fired.splice(0, fired.length),
    data: () => ({ record: context().record, prekeys: context().prekeys }),
    value: () => JSON.stringify(value()),
  };
}

/** Which engine a world runs. */
export type EngineName = 'impl' | 'model';

/** A fresh two-party world of one engine; the same seed gives both engines the same random streams. */
export function createSessionWorld(
  engine: EngineName,
  crypto: CryptoProvider,
  keys: Readonly<Record<Side, PartyKeys>>,
  seed: string,
  options: { readonly variant?: (machine: SessionMachine) => SessionMachine } = {},
): SessionWorld {
  const party = (side: Side): SessionParty => {
    const rng = recordingRng(seededRng(`${seed}/${side}`));
    return engine === 'impl'
      ? implSessionParty(crypto, rng, keys[side])
      : modelSessionParty(
          crypto,
          rng,
          keys[side],
          options.variant === undefined ? {} : { variant: options.variant },
        );
  };
  return {
    crypto,
    keys,
    parties: { A: party('A'), B: party('B') },
    inFlight: { A: [], B: [] },
    delivered: { A: [], B: [] },
    lastBundle: {},
    now: SESSION_T0,
    sent: 0,
  };
}

/** The result of replaying actions on both engines. */
export interface ReplayResult {
  readonly divergence: Divergence | null;
  /** Model transitions fired, by key. */
  readonly fired: ReadonlySet<string>;
  readonly steps: number;
}

/**
 * Replays `actions` on a fresh impl world and a fresh model world with the same seed, comparing
 * outputs, draws and abstract state after every action; stops at the first divergence.
 */
export function replaySessionActions(
  crypto: CryptoProvider,
  keys: Readonly<Record<Side, PartyKeys>>,
  seed: string,
  actions: readonly SessionAction[],
  options: {
    readonly variant?: (machine: SessionMachine) => SessionMachine;
    readonly fired?: Set<string>;
  } = {},
): ReplayResult {
  const impl = createSessionWorld('impl', crypto, keys, seed);
  const model = createSessionWorld('model', crypto, keys, seed, options);
  const fired = options.fired ?? new Set<string>();
  let steps = 0;
  for (const [index, action] of actions.entries()) {
    const implOut = applySessionAction(impl, action);
    const modelOut = applySessionAction(model, action);
    for (const side of ['A', 'B'] as const) for (const key of model.parties[side].takeFired()) fired.add(key);
    steps++;
    const divergence = compareObservations(
      index,
      describeAction(action),
      observeSessionWorld(impl, implOut),
      observeSessionWorld(model, modelOut),
    );
    if (divergence !== null) return { divergence, fired, steps };
  }
  return { divergence: null, fired, steps };
}

/**
 * A copy of a model world for the path generator, which branches worlds: each party restarts from
 * the committed data of the original (a session machine settles into its resting state from its
 * input record), lazily, only when an action touches it. `machines` are built once per side over
 * an env whose Rng is `rng`.
 */
export function cloneModelWorld(
  world: SessionWorld,
  machines: Readonly<Record<Side, SessionMachine>>,
  rng: RecordingRng,
): SessionWorld {
  const party = (side: Side): SessionParty => {
    const original = world.parties[side];
    const data = original.data();
    const frozen = {
      data,
      value: original.value(),
      current: original.currentSession(),
    };
    let live: SessionParty | null = null;
    const get = (): SessionParty => {
      live ??= modelSessionParty(world.crypto, rng, world.keys[side], {
        machine: machines[side],
        record: data.record as SessionRecordData,
        prekeys: data.prekeys,
      });
      return live;
    };
    return {
      processBundle: (bundle, now) => get().processBundle(bundle, now),
      send: (plaintext, now) => get().send(plaintext, now),
      deliver: (messageType, bytes) => get().deliver(messageType, bytes),
      abstract: () => get().abstract(),
      prekeys: () => (live === null ? frozen.data.prekeys : live.prekeys()),
      currentSession: () => (live === null ? frozen.current : live.currentSession()),
      takeDraws: () => rng.take(),
      takeFired: () => (live === null ? [] : live.takeFired()),
      data: () => (live === null ? frozen.data : live.data()),
      value: () => (live === null ? frozen.value : live.value()),
    };
  };
  return {
    crypto: world.crypto,
    keys: world.keys,
    parties: { A: party('A'), B: party('B') },
    inFlight: { A: [...world.inFlight.A], B: [...world.inFlight.B] },
    delivered: { A: [...world.delivered.A], B: [...world.delivered.B] },
    lastBundle: { ...world.lastBundle },
    now: world.now,
    sent: world.sent,
  };
}
