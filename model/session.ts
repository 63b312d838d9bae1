/**
 * The session machine: one device's session record for ONE peer device, with the local keys it
 * needs, as an explicit XState v5 machine (WHITEPAPER.md §6.2 "PQXDH", §6.3 "Double Ratchet",
 * §6.4 "Session records"; rules WP-PQXDH-01..12, WP-DR-02..12, WP-REC-01..05, WP-KEYS-01..05,
 * WP-WIRE-01..07 through spec/wire.ts). External references: Signal *PQXDH* rev 3 §3, Signal
 * *The Double Ratchet Algorithm* rev 1 §3.4–3.5, and libsignal 0.90's session cipher, whose
 * behaviour (check order, caps that drop the oldest entry, the record search) the machine follows.
 *
 * This is the second, independent encoding of those rules (the first is impl/); it imports spec/
 * and xstate only. Every decision is a named guard (a predicate, named after the rule it checks) or
 * a named action (a verb); {@link RULES} maps every name to its rule IDs.
 *
 * ```text
 *                user.processBundle                       net.deliver (prekey: new session)
 *   noSession ─────────────────────► initiating ─────────────────────────────► established
 *       │        processingBundle        │  net.deliver: a reply decrypts          ▲
 *       │  (verify → checkKyber → draw   └──────────────────────────────────────────┘
 *       │   → deriveSecret → install)       (WP-PQXDH-09: the session is acknowledged)
 *       └── user.send ─► rejecting (NO_SESSION, WP-REC-05)
 *
 *   decrypting:  chooseFormat ─► parse ─► selectSession ─┐           (whisper: WP-REC-02/03)
 *                             └► parsePreKey ─► matchBaseKey ─► accepting ─┐  (prekey: WP-PQXDH-05..10)
 *                trial: checkVersion → findReceiverChain → [ratchetStep → capReceiverChains]
 *                       → checkCounter → [useSkippedKey | checkForwardJump → advanceChain → capSkippedKeys]
 *                       → verifyMac → decryptBody ─► trialSucceeded ─► commit
 *                       every failed check ─► trialFailed ─► next session | rejecting
 * ```
 *
 * Key agreement lives inside this machine rather than in a separate one: the initiator's side is
 * `processingBundle` (bundle verified → secret derived → session installed, then `initiating` until
 * the first reply decrypts, then `established`), the responder's side is `decrypting.accepting`
 * (signed prekey → Kyber prekey → one-time prekey → secret) followed by the inner message's trial.
 *
 * **Work on a copy, commit on success (WP-DR-11).** Every operation starts by copying the
 * committed record and prekey store into `context.working`; every step edits only that copy; the
 * `commit` states write it back and `rejecting` throws it away. The committed record therefore
 * never sees a failing path. The one effect a failure cannot undo is a random draw: a DH ratchet
 * step draws its new ratchet key before the MAC is checked (spec/draws.ts), exactly as impl/ does.
 *
 * The pipelines are transient states (`always` transitions): an event runs to completion inside
 * one macrostep and the machine rests only in `noSession`, `initiating` or `established`.
 * @module
 */
import {
  assign,
  createActor,
  emit,
  setup,
  type Actor,
  type AnyStateMachine,
  type AnyStateNode,
  type SnapshotFrom,
} from 'xstate';
import type { SessionAbstract, SessionRecordAbstract } from '../spec/abstract.js';
import { planted } from '../spec/bugs.js';
import type { PreKeyBundle } from '../spec/bundle.js';
import { equalBytes } from '../spec/bytes.js';
import { computeMessageMac, decryptBody, encryptBody, verifyMessageMac } from '../spec/cipher.js';
import {
  ARCHIVED_STATES_MAX_LENGTH,
  CIPHERTEXT_MESSAGE_CURRENT_VERSION,
  MAX_FORWARD_JUMPS,
  MAX_MESSAGE_KEYS,
  MAX_RECEIVER_CHAINS,
  MAX_UNACKNOWLEDGED_SESSION_AGE_MS,
} from '../spec/constants.js';
import { kemDecapsulate, kemEncapsulate, type KemEncapsulation } from '../spec/crypto/kyber.js';
import type { CryptoProvider } from '../spec/crypto/provider.js';
import { xeddsaVerify } from '../spec/crypto/xeddsa.js';
import type { Env } from '../spec/env.js';
import {
  ERROR_RULES,
  InvariantError,
  type ErrorCode,
  type ProtocolError,
  type Result,
  type RuleId,
} from '../spec/errors.js';
import { deriveMessageKeys, kdfCk, kdfRk, pqxdhSecret, type MessageKeys } from '../spec/kdf.js';
import {
  decodeEcPublicKey,
  decodeKemPublicKey,
  dh,
  fingerprint,
  generateKeyPair,
  publicKeyFromPrivate,
  type KeyPair,
} from '../spec/keys.js';
import {
  encodePreKeySignalMessage,
  encodeSignalMessage,
  parsePreKeySignalMessage,
  parseSignalMessage,
  type ParsedPreKeySignalMessage,
  type ParsedSignalMessage,
} from '../spec/wire.js';
import {
  EMPTY_RECORD,
  type PreKeysUsedData,
  type PreKeyStoreData,
  type ReceiverChainData,
  type SessionData,
  type SessionRecordData,
  type SkippedKeyData,
} from './session-data.js';

// ---------------------------------------------------------------------------------------------
// Types: input, events, emitted events, context
// ---------------------------------------------------------------------------------------------

/** What the machine is created with: the local device's keys and (for the responder) its prekeys. */
export interface SessionInput {
  readonly localIdentityKeyPair: KeyPair;
  readonly localRegistrationId: number;
  /** The local prekey store (responder role); empty when omitted. */
  readonly prekeys?: PreKeyStoreData;
  /** A record to start from; the empty record when omitted. */
  readonly record?: SessionRecordData;
}

/** The wire type of a message: a PreKeySignalMessage or a SignalMessage ("whisper"). */
export type MessageType = 'prekey' | 'whisper';

/** Events the machine accepts, dotted by source (CONTRIBUTING.md, "Names"). */
export type SessionEvent =
  | { readonly type: 'user.processBundle'; readonly bundle: PreKeyBundle; readonly now: number }
  | { readonly type: 'user.send'; readonly plaintext: Uint8Array; readonly now: number }
  | { readonly type: 'net.deliver'; readonly messageType: MessageType; readonly bytes: Uint8Array };

/** Events the machine emits (xstate `emit`), in the order the runner collects them. */
export type SessionEmitted =
  | { readonly type: 'session.message'; readonly messageType: MessageType; readonly bytes: Uint8Array }
  | { readonly type: 'session.plaintext'; readonly plaintext: Uint8Array; readonly createdSession: boolean }
  | { readonly type: 'session.rejected'; readonly code: ErrorCode; readonly rule: RuleId };

/** The operation in flight, as its event delivered it. */
export type SessionRequest =
  | { readonly kind: 'processBundle'; readonly bundle: PreKeyBundle; readonly now: number }
  | { readonly kind: 'send'; readonly plaintext: Uint8Array; readonly now: number }
  | { readonly kind: 'deliver'; readonly messageType: MessageType; readonly bytes: Uint8Array };

/** Where the session under trial came from. */
export type TrialSource = 'current' | 'archived' | 'created';

/** One session being tried on one message (Double Ratchet §3.5), edited step by step. */
export interface TrialData {
  readonly source: TrialSource;
  /** Position in the archived list when `source` is `archived`, else -1. */
  readonly archivedIndex: number;
  /** The session as the steps so far have changed it. */
  readonly session: SessionData;
  /** The receiving chain in use, -1 until one is found or created. */
  readonly chainPosition: number;
  readonly seed: Uint8Array | null;
  readonly keys: MessageKeys | null;
  readonly plaintext: Uint8Array | null;
  /** The error of the step that failed, if one did. */
  readonly error: ProtocolError | null;
}

/** The initiator's three draws (WP-PQXDH-04), in draw order. */
export interface InitiatorDrawsData {
  readonly baseKey: KeyPair;
  readonly ratchetKey: KeyPair;
  readonly encapsulation: KemEncapsulation;
}

/** The working copy of one operation (WP-DR-11): everything a failure throws away. */
export interface WorkingCopy {
  readonly request: SessionRequest;
  readonly record: SessionRecordData;
  readonly prekeys: PreKeyStoreData;
  readonly signalMessage: ParsedSignalMessage | null;
  readonly preKeyMessage: ParsedPreKeySignalMessage | null;
  readonly parseError: ProtocolError | null;
  readonly initiatorDraws: InitiatorDrawsData | null;
  /** A session created by key agreement, waiting to be installed. */
  readonly created: SessionData | null;
  readonly used: PreKeysUsedData | null;
  readonly agreementError: ProtocolError | null;
  /** Record search (WP-REC-02): the next candidate position and the errors of those tried. */
  readonly nextCandidate: number;
  readonly sessionErrors: readonly ProtocolError[];
  readonly trial: TrialData | null;
  readonly outgoing: { readonly messageType: MessageType; readonly bytes: Uint8Array } | null;
}

/** The machine's context: plain data only (no functions; the env is closed over). */
export interface SessionContext {
  readonly localIdentityKeyPair: KeyPair;
  readonly localRegistrationId: number;
  /** The committed record: written only by `commitWorkingCopy`. */
  readonly record: SessionRecordData;
  /** The committed prekey store: written only by `commitWorkingCopy`. */
  readonly prekeys: PreKeyStoreData;
  /** The operation in flight, or null at rest. */
  readonly working: WorkingCopy | null;
  /** The rejection about to be emitted, or null. */
  readonly rejection: ProtocolError | null;
}

/** The bundle fields that carry keys a decoder must accept (WP-KEYS-01..05). */
export type BundleKeyName = 'identityKey' | 'signedPreKey' | 'kyberPreKey' | 'preKey';

/** An empty prekey store. */
const EMPTY_PREKEYS: PreKeyStoreData = Object.freeze({
  signedPreKeys: Object.freeze([]),
  oneTimePreKeys: Object.freeze([]),
  kyberPreKeys: Object.freeze([]),
});

// ---------------------------------------------------------------------------------------------
// Small plain helpers (no decisions)
// ---------------------------------------------------------------------------------------------

/** Returns `value` or throws {@link InvariantError}: the machine reached a step without its data. */
function need<T>(value: T | null | undefined, what: string): T {
  if (value === null || value === undefined) throw new InvariantError(`session machine: ${what} missing`);
  return value;
}

function workingOf(context: SessionContext): WorkingCopy {
  return need(context.working, 'working copy');
}

function trialOf(context: SessionContext): TrialData {
  return need(workingOf(context).trial, 'session under trial');
}

function requestOf<K extends SessionRequest['kind']>(
  context: SessionContext,
  kind: K,
): Extract<SessionRequest, { kind: K }> {
  const request = workingOf(context).request;
  if (request.kind !== kind) throw new InvariantError(`session machine: expected a ${kind} request`);
  return request as Extract<SessionRequest, { kind: K }>; // narrowed by the check above
}

function bundleOf(context: SessionContext): PreKeyBundle {
  return requestOf(context, 'processBundle').bundle;
}

function signalMessageOf(context: SessionContext): ParsedSignalMessage {
  return need(workingOf(context).signalMessage, 'parsed SignalMessage');
}

function preKeyMessageOf(context: SessionContext): ParsedPreKeySignalMessage {
  return need(workingOf(context).preKeyMessage, 'parsed PreKeySignalMessage');
}

/** The receiving chain the trial is using. */
function trialChainOf(trial: TrialData): ReceiverChainData {
  return need(trial.session.receiverChains[trial.chainPosition], 'receiving chain under trial');
}

/** A context update that patches the working copy. */
function patchWorking(context: SessionContext, patch: Partial<WorkingCopy>): Partial<SessionContext> {
  return { working: { ...workingOf(context), ...patch } };
}

/** A context update that patches the session under trial. */
function patchTrial(context: SessionContext, patch: Partial<TrialData>): Partial<SessionContext> {
  return patchWorking(context, { trial: { ...trialOf(context), ...patch } });
}

/** A context update that replaces the trial's receiving chain. */
function patchTrialChain(
  context: SessionContext,
  change: (chain: ReceiverChainData) => ReceiverChainData,
  extra: Partial<TrialData> = {},
): Partial<SessionContext> {
  const trial = trialOf(context);
  const receiverChains = trial.session.receiverChains.map((chain, i) =>
    i === trial.chainPosition ? change(chain) : chain,
  );
  return patchTrial(context, { ...extra, session: { ...trial.session, receiverChains } });
}

/** A rejection value with its rule looked up from the code (spec/errors.ts). */
function protocolError(code: ErrorCode, message: string): ProtocolError {
  return { code, rule: ERROR_RULES[code], message };
}

/** A fresh trial of `session`. */
function newTrial(source: TrialSource, archivedIndex: number, session: SessionData): TrialData {
  return {
    source,
    archivedIndex,
    session,
    chainPosition: -1,
    seed: null,
    keys: null,
    plaintext: null,
    error: null,
  };
}

/** Decodes one key of a bundle (WP-KEYS-01..05); the states ensure it is present. */
function decodeBundleKey(bundle: PreKeyBundle, key: BundleKeyName): Result<Uint8Array> {
  switch (key) {
    case 'identityKey':
      return decodeEcPublicKey(bundle.identityKey);
    case 'signedPreKey':
      return decodeEcPublicKey(bundle.signedPreKey);
    case 'kyberPreKey':
      return decodeKemPublicKey(need(bundle.kyberPreKey, 'bundle Kyber prekey'));
    case 'preKey':
      return decodeEcPublicKey(need(bundle.preKey, 'bundle one-time prekey'));
  }
}

/** A key the machine has already checked with `bundleKeyWellFormed`. */
function checkedBundleKey(bundle: PreKeyBundle, key: BundleKeyName): Uint8Array {
  const decoded = decodeBundleKey(bundle, key);
  if (!decoded.ok) throw new InvariantError(`session machine: bundle ${key} used before it was checked`);
  return decoded.value;
}

/** Runs the DHs of PQXDH in order; the first zero output is the error (WP-KEYS-04). */
function dhAll(
  c: CryptoProvider,
  pairs: readonly (readonly [Uint8Array, Uint8Array])[],
): Result<Uint8Array[]> {
  const outputs: Uint8Array[] = [];
  for (const [ours, theirs] of pairs) {
    const out = dh(c, ours, theirs);
    if (!out.ok) return out;
    outputs.push(out.value);
  }
  return { ok: true, value: outputs };
}

/** The candidate sessions of a record search, in order: current, then archived newest first. */
function candidateCount(record: SessionRecordData): number {
  return (record.current === null ? 0 : 1) + record.archived.length;
}

/** A record's sessions whose base key names the PreKey message's session (WP-PQXDH-10). */
function namesSession(session: SessionData, message: ParsedPreKeySignalMessage): boolean {
  return session.version === message.messageVersion && equalBytes(session.aliceBaseKey, message.baseKey);
}

/** The placeholder identity used only when a tool builds the machine without input (a diagram). */
function placeholderIdentity(c: CryptoProvider): KeyPair {
  const privateKey = new Uint8Array(32);
  return { publicKey: publicKeyFromPrivate(c, privateKey), privateKey };
}

// ---------------------------------------------------------------------------------------------
// The machine
// ---------------------------------------------------------------------------------------------

/** Rule IDs, e.g. `WP-DR-07`. */
export type WhitepaperRuleId = `WP-${string}-${string}`;

/**
 * Every guard and action of the session machine and the whitepaper rules it implements. A test
 * checks that every name in the machine definition appears here and vice versa.
 */
export const RULES: Readonly<Record<string, readonly WhitepaperRuleId[]>> = Object.freeze({
  // Guards.
  recordHasNoCurrentSession: ['WP-REC-05'],
  currentSessionAwaitsReply: ['WP-PQXDH-09'],
  bundleKeyWellFormed: ['WP-KEYS-01', 'WP-KEYS-02', 'WP-KEYS-03', 'WP-KEYS-05'],
  signedPreKeySignatureValid: ['WP-PQXDH-01'],
  bundleHasKyberPreKey: ['WP-PQXDH-02'],
  kyberPreKeySignatureValid: ['WP-PQXDH-01'],
  oneTimePreKeyPairedWithId: ['WP-PQXDH-12'],
  bundleHasNoOneTimePreKey: ['WP-PQXDH-03'],
  keyAgreementSucceeded: ['WP-KEYS-04'],
  archiveFullOnInsert: ['WP-REC-01'],
  unacknowledgedSessionWithinMaxAge: ['WP-PQXDH-11'],
  sessionAwaitsReply: ['WP-PQXDH-09'],
  deliveredPreKeyMessage: ['WP-WIRE-03'],
  messageWellFormed: ['WP-WIRE-01', 'WP-WIRE-02', 'WP-WIRE-03', 'WP-WIRE-06', 'WP-WIRE-07'],
  recordHasSession: ['WP-REC-05'],
  untriedSessionRemains: ['WP-REC-02'],
  exactlyOneSessionTried: ['WP-REC-02'],
  baseKeyMatchesCurrentSession: ['WP-PQXDH-10'],
  baseKeyMatchesArchivedSession: ['WP-PQXDH-10'],
  signedPreKeyHeld: ['WP-PQXDH-05'],
  kyberPreKeyHeld: ['WP-PQXDH-07'],
  messageNamesNoOneTimePreKey: ['WP-PQXDH-06'],
  oneTimePreKeyHeld: ['WP-PQXDH-06'],
  versionMatchesSession: ['WP-DR-12'],
  hasReceiverChainForRatchetKey: ['WP-DR-06'],
  trialStepSucceeded: ['WP-KEYS-04'],
  receiverChainsOverLimit: ['WP-DR-09'],
  counterBehindChain: ['WP-DR-10'],
  hasStoredSkippedKey: ['WP-DR-10'],
  counterWithinForwardJumpLimit: ['WP-DR-07'],
  skippedKeysOverLimit: ['WP-DR-08'],
  macValid: ['WP-DR-05'],
  bodyDecrypted: ['WP-DR-04'],
  singleSessionTrial: ['WP-REC-04'],
  trialFailedAsDuplicate: ['WP-REC-03'],
  trialOnCreatedSession: ['WP-PQXDH-06', 'WP-PQXDH-07'],
  trialOnCurrentSession: ['WP-REC-02'],
  // Actions.
  beginOperation: ['WP-DR-11'],
  commitWorkingCopy: ['WP-DR-11'],
  discardWorkingCopy: ['WP-DR-11'],
  rejectWith: ['WP-DR-11'],
  rejectWithBundleKeyError: ['WP-KEYS-01', 'WP-KEYS-02', 'WP-KEYS-03', 'WP-KEYS-05'],
  rejectWithParseError: ['WP-WIRE-01', 'WP-WIRE-02', 'WP-WIRE-03', 'WP-WIRE-06', 'WP-WIRE-07'],
  rejectWithAgreementError: ['WP-KEYS-04'],
  rejectWithTrialError: ['WP-REC-03', 'WP-REC-04'],
  rejectWithOnlySessionError: ['WP-REC-02'],
  emitRejection: ['WP-DR-11'],
  drawInitiatorKeys: ['WP-PQXDH-04', 'WP-KEYS-09'],
  deriveInitiatorSession: ['WP-PQXDH-03', 'WP-PQXDH-08', 'WP-PQXDH-09'],
  archiveCurrentSession: ['WP-REC-01'],
  dropOldestArchivedSession: ['WP-REC-01'],
  makeNewSessionCurrent: ['WP-REC-01'],
  encryptOnCurrentSession: ['WP-DR-02', 'WP-DR-03', 'WP-DR-04', 'WP-DR-05'],
  wrapInPreKeyMessage: ['WP-PQXDH-09'],
  emitMessage: ['WP-PQXDH-09'],
  parseSignalMessage: ['WP-WIRE-01', 'WP-WIRE-02', 'WP-WIRE-04'],
  parsePreKeyMessage: ['WP-WIRE-01', 'WP-WIRE-03', 'WP-WIRE-04'],
  loadNextCandidate: ['WP-REC-02'],
  rememberSessionError: ['WP-REC-02'],
  loadCurrentSession: ['WP-PQXDH-10'],
  loadMatchingArchivedSession: ['WP-PQXDH-10'],
  deriveResponderSession: ['WP-PQXDH-03', 'WP-PQXDH-08'],
  loadCreatedSession: ['WP-REC-04'],
  failTrial: ['WP-DR-11'],
  selectReceiverChain: ['WP-DR-06'],
  performDhRatchetStep: ['WP-DR-06', 'WP-DR-01'],
  dropOldestReceiverChain: ['WP-DR-09'],
  takeStoredSkippedKey: ['WP-DR-10'],
  storeSkippedKeys: ['WP-DR-08', 'WP-DR-02'],
  takeChainMessageKey: ['WP-DR-02'],
  dropOldestSkippedKeys: ['WP-DR-08'],
  deriveMessageKeys: ['WP-DR-03'],
  decryptMessageBody: ['WP-DR-04'],
  acknowledgeSession: ['WP-PQXDH-09'],
  replaceCurrentSession: ['WP-REC-02'],
  promoteArchivedSession: ['WP-REC-02', 'WP-REC-01'],
  keepDecryptedSessionAsNew: ['WP-REC-04'],
  consumeOneTimePreKey: ['WP-PQXDH-06'],
  consumeKyberPreKey: ['WP-PQXDH-07'],
  emitPlaintext: ['WP-REC-02', 'WP-PQXDH-10'],
});

/**
 * Builds the session machine over `env` (crypto provider and Rng, closed over: no function ever
 * enters the context). Create one actor per (local device, peer device) pair; see
 * {@link createSessionRunner} for a synchronous driver.
 */
export function createSessionMachine(env: Env) {
  const c = env.crypto;
  return setup({
    types: {} as {
      context: SessionContext;
      events: SessionEvent;
      input: SessionInput | undefined;
      emitted: SessionEmitted;
    },
    guards: {
      // --- Resting states -------------------------------------------------------------------
      /** WP-REC-05: a record without a current session cannot encrypt. */
      recordHasNoCurrentSession: ({ context }) => context.record.current === null,
      /** WP-PQXDH-09: the current session still wraps its messages as PreKey messages. */
      currentSessionAwaitsReply: ({ context }) => {
        const current = context.record.current;
        return current !== null && current.pendingPreKey !== null;
      },

      // --- Initiator key agreement (processingBundle) ---------------------------------------
      /** WP-KEYS-01..03 (EC keys), WP-KEYS-05 (the Kyber key): the bundle's key decodes. */
      bundleKeyWellFormed: ({ context }, params: { readonly key: BundleKeyName }) =>
        decodeBundleKey(bundleOf(context), params.key).ok,
      /** WP-PQXDH-01: the signed prekey's signature covers its 33-byte encoding. */
      signedPreKeySignatureValid: ({ context }) => {
        const bundle = bundleOf(context);
        return xeddsaVerify(
          c,
          checkedBundleKey(bundle, 'identityKey'),
          checkedBundleKey(bundle, 'signedPreKey'),
          bundle.signedPreKeySignature,
        );
      },
      /** WP-PQXDH-02: the bundle carries a Kyber prekey, its id and its signature. */
      bundleHasKyberPreKey: ({ context }) => {
        const bundle = bundleOf(context);
        return (
          bundle.kyberPreKey !== null && bundle.kyberPreKeyId !== null && bundle.kyberPreKeySignature !== null
        );
      },
      /** WP-PQXDH-01: the Kyber prekey's signature covers its 1569-byte encoding. */
      kyberPreKeySignatureValid: ({ context }) => {
        const bundle = bundleOf(context);
        return xeddsaVerify(
          c,
          checkedBundleKey(bundle, 'identityKey'),
          checkedBundleKey(bundle, 'kyberPreKey'),
          need(bundle.kyberPreKeySignature, 'Kyber prekey signature'),
        );
      },
      /** WP-PQXDH-12: a one-time prekey travels with its id, or neither is present. */
      oneTimePreKeyPairedWithId: ({ context }) => {
        const bundle = bundleOf(context);
        return (bundle.preKey === null) === (bundle.preKeyId === null);
      },
      /** WP-PQXDH-03: without a one-time prekey the optional fourth DH is left out. */
      bundleHasNoOneTimePreKey: ({ context }) => bundleOf(context).preKey === null,
      /** WP-KEYS-04: no DH of the key agreement produced an all-zero output. */
      keyAgreementSucceeded: ({ context }) => workingOf(context).agreementError === null,
      /** WP-REC-01: archiving the current session would push the archive past its cap. */
      archiveFullOnInsert: ({ context }) => {
        const record = workingOf(context).record;
        return record.current !== null && record.archived.length >= ARCHIVED_STATES_MAX_LENGTH;
      },

      // --- Sending --------------------------------------------------------------------------
      /** WP-PQXDH-11: an unanswered session may encrypt for 30 days after it was created. */
      unacknowledgedSessionWithinMaxAge: ({ context }) => {
        const pending = need(workingOf(context).record.current, 'current session').pendingPreKey;
        const { now } = requestOf(context, 'send');
        return pending === null || now - pending.createdAt <= MAX_UNACKNOWLEDGED_SESSION_AGE_MS;
      },
      /** WP-PQXDH-09: the session has not seen a reply, so the message goes out as a PreKey message. */
      sessionAwaitsReply: ({ context }) =>
        need(workingOf(context).record.current, 'current session').pendingPreKey !== null,

      // --- Decrypting -----------------------------------------------------------------------
      /** WP-WIRE-03: the transport says this is a PreKeySignalMessage. */
      deliveredPreKeyMessage: ({ context }) => requestOf(context, 'deliver').messageType === 'prekey',
      /** WP-WIRE-01..07: the message parsed (its keys decoded, WP-KEYS-01..05). */
      messageWellFormed: ({ context }) => workingOf(context).parseError === null,
      /** WP-REC-05: there is at least one session to try. */
      recordHasSession: ({ context }) => candidateCount(workingOf(context).record) > 0,
      /** WP-REC-02: a session of the record has not been tried yet (current, then archived). */
      untriedSessionRemains: ({ context }) => {
        const working = workingOf(context);
        return working.nextCandidate < candidateCount(working.record);
      },
      /** WP-REC-02: exactly one session was tried, so its own error is reported. */
      exactlyOneSessionTried: ({ context }) => workingOf(context).sessionErrors.length === 1,
      /** WP-PQXDH-10: the PreKey message's base key names the current session. */
      baseKeyMatchesCurrentSession: ({ context }) => {
        const current = workingOf(context).record.current;
        return current !== null && namesSession(current, preKeyMessageOf(context));
      },
      /** WP-PQXDH-10: the PreKey message's base key names an archived session. */
      baseKeyMatchesArchivedSession: ({ context }) => {
        const message = preKeyMessageOf(context);
        return workingOf(context).record.archived.some((s) => namesSession(s, message));
      },
      /** WP-PQXDH-05: the responder holds the signed prekey the message names. */
      signedPreKeyHeld: ({ context }) => {
        const { signedPreKeyId } = preKeyMessageOf(context);
        return workingOf(context).prekeys.signedPreKeys.some((k) => k.keyId === signedPreKeyId);
      },
      /** WP-PQXDH-07: the responder holds the Kyber prekey the message names (not yet used if one-time). */
      kyberPreKeyHeld: ({ context }) => {
        const { kyberPreKeyId } = preKeyMessageOf(context);
        return workingOf(context).prekeys.kyberPreKeys.some((k) => k.keyId === kyberPreKeyId);
      },
      /** WP-PQXDH-06: the message names no one-time prekey (the bundle had none left). */
      messageNamesNoOneTimePreKey: ({ context }) => preKeyMessageOf(context).preKeyId === undefined,
      /** WP-PQXDH-06: the responder still holds the one-time prekey the message names. */
      oneTimePreKeyHeld: ({ context }) => {
        const { preKeyId } = preKeyMessageOf(context);
        return workingOf(context).prekeys.oneTimePreKeys.some((k) => k.keyId === preKeyId);
      },

      // --- One session's trial (Double Ratchet §3.5) ----------------------------------------
      /** WP-DR-12: the message speaks the session's version. */
      versionMatchesSession: ({ context }) =>
        signalMessageOf(context).messageVersion === trialOf(context).session.version,
      /** WP-DR-06: a receiving chain exists for the message's ratchet key (else a DH step). */
      hasReceiverChainForRatchetKey: ({ context }) => {
        const { ratchetKey } = signalMessageOf(context);
        return trialOf(context).session.receiverChains.some((chain) =>
          equalBytes(chain.ratchetKey, ratchetKey),
        );
      },
      /** WP-KEYS-04: the step just taken (a DH ratchet step) produced no all-zero DH output. */
      trialStepSucceeded: ({ context }) => trialOf(context).error === null,
      /** WP-DR-09: more receiving chains than MAX_RECEIVER_CHAINS. */
      receiverChainsOverLimit: ({ context }) =>
        trialOf(context).session.receiverChains.length > MAX_RECEIVER_CHAINS,
      /** WP-DR-10: the counter is behind the chain: only a stored skipped key can decrypt it. */
      counterBehindChain: ({ context }) =>
        trialChainOf(trialOf(context)).chainKey.index > signalMessageOf(context).counter,
      /** WP-DR-10: the key of this skipped message is still stored. */
      hasStoredSkippedKey: ({ context }) => {
        const { counter } = signalMessageOf(context);
        return trialChainOf(trialOf(context)).skipped.some((k) => k.index === counter);
      },
      /** WP-DR-07: the counter is at most MAX_FORWARD_JUMPS ahead of the chain. */
      counterWithinForwardJumpLimit: ({ context }) =>
        // Planted bug (simulator self-test only): `accept-past-forward-jump` waives the limit.
        planted(env.bugs, 'accept-past-forward-jump') ||
        signalMessageOf(context).counter - trialChainOf(trialOf(context)).chainKey.index <= MAX_FORWARD_JUMPS,
      /** WP-DR-08: more stored skipped keys than MAX_MESSAGE_KEYS. */
      skippedKeysOverLimit: ({ context }) => trialChainOf(trialOf(context)).skipped.length > MAX_MESSAGE_KEYS,
      /** WP-DR-05: the MAC over the bytes as received verifies (sender's identity key first). */
      macValid: ({ context }) => {
        // Planted bug (simulator self-test only, spec/bugs.ts): `skip-mac-check` accepts any MAC.
        if (planted(env.bugs, 'skip-mac-check')) return true;
        const trial = trialOf(context);
        const message = signalMessageOf(context);
        return verifyMessageMac(
          c,
          need(trial.keys, 'message keys').macKey,
          trial.session.remoteIdentityKey,
          trial.session.localIdentityKey,
          message.macInput,
          message.mac,
        );
      },
      /** WP-DR-04: the body decrypted with valid PKCS#7 padding. */
      bodyDecrypted: ({ context }) => trialOf(context).error === null,

      // --- Outcome of a trial ---------------------------------------------------------------
      /** WP-REC-04: a PreKey message is tried on one session only (the one it created or names). */
      singleSessionTrial: ({ context }) => requestOf(context, 'deliver').messageType === 'prekey',
      /** WP-REC-03: the failure was a duplicate, which stops the record search. */
      trialFailedAsDuplicate: ({ context }) => trialOf(context).error?.code === 'DUPLICATE_MESSAGE',
      /** WP-PQXDH-06/07: the session was created by this PreKey message (prekeys to consume). */
      trialOnCreatedSession: ({ context }) => trialOf(context).source === 'created',
      /** WP-REC-02: the session that decrypted is the current one (no promotion needed). */
      trialOnCurrentSession: ({ context }) => trialOf(context).source === 'current',
    },
    actions: {
      // --- Working copy (WP-DR-11) ----------------------------------------------------------
      /** WP-DR-11: copy the committed record and prekeys; every later step edits the copy. */
      beginOperation: assign(({ context, event }) => {
        const request: SessionRequest =
          event.type === 'user.processBundle'
            ? { kind: 'processBundle', bundle: event.bundle, now: event.now }
            : event.type === 'user.send'
              ? { kind: 'send', plaintext: event.plaintext, now: event.now }
              : { kind: 'deliver', messageType: event.messageType, bytes: event.bytes };
        const working: WorkingCopy = {
          request,
          record: context.record,
          prekeys: context.prekeys,
          signalMessage: null,
          preKeyMessage: null,
          parseError: null,
          initiatorDraws: null,
          created: null,
          used: null,
          agreementError: null,
          nextCandidate: 0,
          sessionErrors: [],
          trial: null,
          outgoing: null,
        };
        return { working, rejection: null };
      }),
      /** WP-DR-11: the operation succeeded; its copy becomes the committed record and prekeys. */
      commitWorkingCopy: assign(({ context }) => {
        const working = workingOf(context);
        return { record: working.record, prekeys: working.prekeys };
      }),
      /** WP-DR-11: forget the working copy (after a commit, or a rejection). */
      discardWorkingCopy: assign(() => ({ working: null, rejection: null })),
      /** WP-DR-11: reject with a fixed code; the rule comes from spec/errors.ts. */
      rejectWith: assign((_, params: { readonly code: ErrorCode }) => ({
        rejection: protocolError(params.code, 'rejected by the session machine'),
      })),
      /** WP-KEYS-01..05: reject with the decoder's own error for a bundle key. */
      rejectWithBundleKeyError: assign(({ context }, params: { readonly key: BundleKeyName }) => {
        const decoded = decodeBundleKey(bundleOf(context), params.key);
        if (decoded.ok) throw new InvariantError('session machine: bundle key decoded after all');
        return { rejection: decoded.error };
      }),
      /** WP-WIRE-01..07: reject with the parser's error. */
      rejectWithParseError: assign(({ context }) => ({
        rejection: need(workingOf(context).parseError, 'parse error'),
      })),
      /** WP-KEYS-04: reject with the key agreement's DH error. */
      rejectWithAgreementError: assign(({ context }) => ({
        rejection: need(workingOf(context).agreementError, 'key agreement error'),
      })),
      /** WP-REC-03 / WP-REC-04: reject with the error of the session just tried. */
      rejectWithTrialError: assign(({ context }) => ({
        rejection: need(trialOf(context).error, 'trial error'),
      })),
      /** WP-REC-02: exactly one session was tried; its error is the answer. */
      rejectWithOnlySessionError: assign(({ context }) => ({
        rejection: need(workingOf(context).sessionErrors[0], 'session error'),
      })),
      /** WP-DR-11: tell the caller; the committed record and prekeys are untouched. */
      emitRejection: emit(({ context }) => {
        const rejection = need(context.rejection, 'rejection');
        return { type: 'session.rejected' as const, code: rejection.code, rule: rejection.rule };
      }),

      // --- Initiator key agreement ----------------------------------------------------------
      /** WP-PQXDH-04 (WP-KEYS-09): draw base key, first sending ratchet key, KEM seed, in that order. */
      drawInitiatorKeys: assign(({ context }) => {
        const kyberPreKey = checkedBundleKey(bundleOf(context), 'kyberPreKey');
        const baseKey = generateKeyPair(c, env.rng);
        const ratchetKey = generateKeyPair(c, env.rng);
        const encapsulation = kemEncapsulate(env.crypto, kyberPreKey, env.rng);
        return patchWorking(context, { initiatorDraws: { baseKey, ratchetKey, encapsulation } });
      }),
      /**
       * WP-PQXDH-03: IKM from DH(IK_A, SPK_B), DH(EK_A, IK_B), DH(EK_A, SPK_B), [DH(EK_A, OPK_B)]
       * and SS; WP-PQXDH-08: ratchet at once against SPK_B and keep (SPK_B, CK) as the first
       * receiving chain; WP-PQXDH-09: remember the PreKey header to repeat.
       */
      deriveInitiatorSession: assign(({ context }) => {
        const { bundle, now } = requestOf(context, 'processBundle');
        const draws = need(workingOf(context).initiatorDraws, 'initiator draws');
        const identity = checkedBundleKey(bundle, 'identityKey');
        const signedPreKey = checkedBundleKey(bundle, 'signedPreKey');
        const oneTimePreKey = bundle.preKey === null ? null : checkedBundleKey(bundle, 'preKey');
        const ours = context.localIdentityKeyPair;
        const pairs: (readonly [Uint8Array, Uint8Array])[] = [
          [ours.privateKey, signedPreKey],
          [draws.baseKey.privateKey, identity],
          [draws.baseKey.privateKey, signedPreKey],
        ];
        if (oneTimePreKey !== null) pairs.push([draws.baseKey.privateKey, oneTimePreKey]);
        const outputs = dhAll(c, pairs);
        if (!outputs.ok) return patchWorking(context, { agreementError: outputs.error });
        const secret = pqxdhSecret(c, outputs.value, draws.encapsulation.sharedSecret);
        const ratchetDh = dh(c, draws.ratchetKey.privateKey, signedPreKey);
        if (!ratchetDh.ok) return patchWorking(context, { agreementError: ratchetDh.error });
        const sending = kdfRk(c, secret.rootKey, ratchetDh.value);
        const created: SessionData = {
          version: CIPHERTEXT_MESSAGE_CURRENT_VERSION,
          localIdentityKey: ours.publicKey,
          remoteIdentityKey: identity,
          localRegistrationId: context.localRegistrationId,
          remoteRegistrationId: bundle.registrationId,
          aliceBaseKey: draws.baseKey.publicKey,
          rootKey: sending.rootKey,
          senderRatchetKey: draws.ratchetKey,
          senderChainKey: { key: sending.chainKey, index: 0 },
          previousCounter: 0,
          receiverChains: [
            { ratchetKey: signedPreKey, chainKey: { key: secret.chainKey, index: 0 }, skipped: [] },
          ],
          pendingPreKey: {
            preKeyId: oneTimePreKey === null ? null : bundle.preKeyId,
            signedPreKeyId: bundle.signedPreKeyId,
            kyberPreKeyId: need(bundle.kyberPreKeyId, 'Kyber prekey id'),
            kyberCiphertext: draws.encapsulation.ciphertext,
            baseKey: draws.baseKey.publicKey,
            createdAt: now,
          },
        };
        return patchWorking(context, { created });
      }),

      // --- Installing a new session (WP-REC-01) ---------------------------------------------
      /** WP-REC-01: the current session moves to the head of the archive. */
      archiveCurrentSession: assign(({ context }) => {
        const record = workingOf(context).record;
        if (record.current === null) return {};
        return patchWorking(context, {
          record: { current: null, archived: [record.current, ...record.archived] },
        });
      }),
      /** WP-REC-01: beyond ARCHIVED_STATES_MAX_LENGTH the oldest archived session is dropped. */
      dropOldestArchivedSession: assign(({ context }) => {
        const record = workingOf(context).record;
        return patchWorking(context, {
          record: { ...record, archived: record.archived.slice(0, ARCHIVED_STATES_MAX_LENGTH) },
        });
      }),
      /** WP-REC-01: the newly created session becomes current. */
      makeNewSessionCurrent: assign(({ context }) => {
        const working = workingOf(context);
        return patchWorking(context, {
          record: { ...working.record, current: need(working.created, 'new session') },
        });
      }),

      // --- Sending --------------------------------------------------------------------------
      /**
       * WP-DR-02: `seed = HMAC(CK, 0x01)`, `CK' = HMAC(CK, 0x02)`; WP-DR-03: message keys;
       * WP-DR-04: AES-256-CBC body; WP-DR-05: MAC over both identity keys and the bytes sent.
       */
      encryptOnCurrentSession: assign(({ context }) => {
        const working = workingOf(context);
        const { plaintext } = requestOf(context, 'send');
        const session = need(working.record.current, 'current session');
        const chain = session.senderChainKey;
        const step = kdfCk(c, chain.key);
        const keys = deriveMessageKeys(c, step.messageKeySeed);
        const bytes = encodeSignalMessage(
          {
            ratchetKey: session.senderRatchetKey.publicKey,
            counter: chain.index,
            previousCounter: session.previousCounter,
            ciphertext: encryptBody(c, keys, plaintext),
          },
          (macInput) =>
            computeMessageMac(c, keys.macKey, session.localIdentityKey, session.remoteIdentityKey, macInput),
        );
        const advanced: SessionData = {
          ...session,
          // Planted bug (simulator self-test only): `reuse-message-key` leaves the sending chain
          // where it was, so the next message reuses this message key and counter.
          senderChainKey: planted(env.bugs, 'reuse-message-key')
            ? chain
            : { key: step.nextChainKey, index: chain.index + 1 },
        };
        return patchWorking(context, {
          record: { ...working.record, current: advanced },
          outgoing: { messageType: 'whisper', bytes },
        });
      }),
      /** WP-PQXDH-09: wrap the SignalMessage in the PQXDH header until a reply decrypts. */
      wrapInPreKeyMessage: assign(({ context }) => {
        const working = workingOf(context);
        const session = need(working.record.current, 'current session');
        const pending = need(session.pendingPreKey, 'pending PreKey header');
        const bytes = encodePreKeySignalMessage({
          registrationId: session.localRegistrationId,
          ...(pending.preKeyId === null ? {} : { preKeyId: pending.preKeyId }),
          signedPreKeyId: pending.signedPreKeyId,
          kyberPreKeyId: pending.kyberPreKeyId,
          kyberCiphertext: pending.kyberCiphertext,
          baseKey: pending.baseKey,
          identityKey: session.localIdentityKey,
          message: need(working.outgoing, 'SignalMessage').bytes,
        });
        return patchWorking(context, { outgoing: { messageType: 'prekey', bytes } });
      }),
      /** WP-PQXDH-09: hand the message (PreKey or SignalMessage) to the transport. */
      emitMessage: emit(({ context }) => {
        const outgoing = need(workingOf(context).outgoing, 'outgoing message');
        return { type: 'session.message' as const, messageType: outgoing.messageType, bytes: outgoing.bytes };
      }),

      // --- Parsing --------------------------------------------------------------------------
      /** WP-WIRE-01/02/04: parse a SignalMessage (its MAC is checked later, per session). */
      parseSignalMessage: assign(({ context }) => {
        const parsed = parseSignalMessage(requestOf(context, 'deliver').bytes);
        return parsed.ok
          ? patchWorking(context, { signalMessage: parsed.value })
          : patchWorking(context, { parseError: parsed.error });
      }),
      /** WP-WIRE-01/03/04: parse a PreKeySignalMessage and its inner SignalMessage. */
      parsePreKeyMessage: assign(({ context }) => {
        const parsed = parsePreKeySignalMessage(requestOf(context, 'deliver').bytes);
        return parsed.ok
          ? patchWorking(context, { preKeyMessage: parsed.value, signalMessage: parsed.value.inner })
          : patchWorking(context, { parseError: parsed.error });
      }),

      // --- Choosing the session to try ------------------------------------------------------
      /** WP-REC-02: try the next session: the current one first, then archived newest first. */
      loadNextCandidate: assign(({ context }) => {
        const working = workingOf(context);
        const record = working.record;
        const position = working.nextCandidate;
        const archivedIndex = record.current === null ? position : position - 1;
        const trial =
          record.current !== null && position === 0
            ? newTrial('current', -1, record.current)
            : newTrial('archived', archivedIndex, need(record.archived[archivedIndex], 'archived session'));
        return patchWorking(context, { trial, nextCandidate: position + 1 });
      }),
      /** WP-REC-02: keep the failed session's error (its session stays as it was) and move on. */
      rememberSessionError: assign(({ context }) => {
        const working = workingOf(context);
        const error = need(trialOf(context).error, 'trial error');
        return patchWorking(context, { sessionErrors: [...working.sessionErrors, error], trial: null });
      }),
      /** WP-PQXDH-10: a retransmitted PreKey message is tried on the current session it names. */
      loadCurrentSession: assign(({ context }) =>
        patchWorking(context, {
          trial: newTrial('current', -1, need(workingOf(context).record.current, 'current session')),
        }),
      ),
      /** WP-PQXDH-10: a PreKey message naming an archived session is tried there (promoted on success). */
      loadMatchingArchivedSession: assign(({ context }) => {
        const message = preKeyMessageOf(context);
        const archived = workingOf(context).record.archived;
        const index = archived.findIndex((s) => namesSession(s, message));
        return patchWorking(context, {
          trial: newTrial('archived', index, need(archived[index], 'matching archived session')),
        });
      }),

      // --- Responder key agreement ----------------------------------------------------------
      /**
       * WP-PQXDH-03: the responder's view of the same DHs, in the initiator's order, and the KEM
       * secret; WP-PQXDH-08: the responder's first sending ratchet key is its signed prekey.
       * Draws nothing (spec/draws.ts `pqxdhAccept`).
       */
      deriveResponderSession: assign(({ context }) => {
        const working = workingOf(context);
        const message = preKeyMessageOf(context);
        const store = working.prekeys;
        const signed = need(
          store.signedPreKeys.find((k) => k.keyId === message.signedPreKeyId),
          'signed prekey',
        );
        const kyber = need(
          store.kyberPreKeys.find((k) => k.keyId === message.kyberPreKeyId),
          'Kyber prekey',
        );
        const oneTime =
          message.preKeyId === undefined
            ? null
            : need(
                store.oneTimePreKeys.find((k) => k.keyId === message.preKeyId),
                'one-time prekey',
              );
        const ours = context.localIdentityKeyPair;
        const pairs: (readonly [Uint8Array, Uint8Array])[] = [
          [signed.keyPair.privateKey, message.identityKey],
          [ours.privateKey, message.baseKey],
          [signed.keyPair.privateKey, message.baseKey],
        ];
        if (oneTime !== null) pairs.push([oneTime.keyPair.privateKey, message.baseKey]);
        const outputs = dhAll(c, pairs);
        if (!outputs.ok) return patchWorking(context, { agreementError: outputs.error });
        const secret = pqxdhSecret(
          c,
          outputs.value,
          kemDecapsulate(env.crypto, kyber.secretKey, message.kyberCiphertext),
        );
        const created: SessionData = {
          version: CIPHERTEXT_MESSAGE_CURRENT_VERSION,
          localIdentityKey: ours.publicKey,
          remoteIdentityKey: message.identityKey,
          localRegistrationId: context.localRegistrationId,
          remoteRegistrationId: message.registrationId,
          aliceBaseKey: message.baseKey,
          rootKey: secret.rootKey,
          senderRatchetKey: signed.keyPair,
          senderChainKey: { key: secret.chainKey, index: 0 },
          previousCounter: 0,
          receiverChains: [],
          pendingPreKey: null,
        };
        const used: PreKeysUsedData = {
          preKeyId: oneTime === null ? null : oneTime.keyId,
          kyberPreKeyId: kyber.keyId,
        };
        return patchWorking(context, { created, used });
      }),
      /** WP-REC-04: the inner message is tried on the new session only. */
      loadCreatedSession: assign(({ context }) =>
        patchWorking(context, {
          trial: newTrial('created', -1, need(workingOf(context).created, 'new session')),
        }),
      ),

      // --- One session's trial --------------------------------------------------------------
      /** WP-DR-11: record why this session could not decrypt; its state is thrown away. */
      failTrial: assign(({ context }, params: { readonly code: ErrorCode }) =>
        patchTrial(context, {
          error: protocolError(params.code, 'the session could not decrypt the message'),
        }),
      ),
      /** WP-DR-06: use the receiving chain of the message's ratchet key. */
      selectReceiverChain: assign(({ context }) => {
        const { ratchetKey } = signalMessageOf(context);
        const position = trialOf(context).session.receiverChains.findIndex((chain) =>
          equalBytes(chain.ratchetKey, ratchetKey),
        );
        return patchTrial(context, { chainPosition: position });
      }),
      /**
       * WP-DR-06: a new receiving chain from `KDF_RK(RK, DH(our ratchet, their ratchet))` (WP-DR-01),
       * then one 32-byte draw for our new sending ratchet key and a new sending chain;
       * `previous_counter` becomes the old sending index − 1, saturating at 0.
       */
      performDhRatchetStep: assign(({ context }) => {
        const session = trialOf(context).session;
        const theirRatchetKey = signalMessageOf(context).ratchetKey;
        const receiveDh = dh(c, session.senderRatchetKey.privateKey, theirRatchetKey);
        if (!receiveDh.ok) return patchTrial(context, { error: receiveDh.error });
        const receiving = kdfRk(c, session.rootKey, receiveDh.value);
        const ourNewRatchetKey = generateKeyPair(c, env.rng);
        const sendDh = dh(c, ourNewRatchetKey.privateKey, theirRatchetKey);
        if (!sendDh.ok) return patchTrial(context, { error: sendDh.error });
        const sending = kdfRk(c, receiving.rootKey, sendDh.value);
        const receiverChains = [
          ...session.receiverChains,
          { ratchetKey: theirRatchetKey, chainKey: { key: receiving.chainKey, index: 0 }, skipped: [] },
        ];
        const oldIndex = session.senderChainKey.index;
        return patchTrial(context, {
          chainPosition: receiverChains.length - 1,
          session: {
            ...session,
            rootKey: sending.rootKey,
            receiverChains,
            previousCounter: oldIndex > 0 ? oldIndex - 1 : 0,
            senderRatchetKey: ourNewRatchetKey,
            senderChainKey: { key: sending.chainKey, index: 0 },
          },
        });
      }),
      /** WP-DR-09: keep the newest MAX_RECEIVER_CHAINS receiving chains (a cap, never a rejection). */
      dropOldestReceiverChain: assign(({ context }) => {
        const session = trialOf(context).session;
        const receiverChains = session.receiverChains.slice(
          session.receiverChains.length - MAX_RECEIVER_CHAINS,
        );
        return patchTrial(context, {
          chainPosition: receiverChains.length - 1,
          session: { ...session, receiverChains },
        });
      }),
      /** WP-DR-10: use the stored key of a skipped message, and delete it. */
      takeStoredSkippedKey: assign(({ context }) => {
        const { counter } = signalMessageOf(context);
        const chain = trialChainOf(trialOf(context));
        const position = chain.skipped.findIndex((k) => k.index === counter);
        const found = need(chain.skipped[position], 'stored skipped key');
        // Planted bug (simulator self-test only): `deliver-twice` keeps the used key.
        if (planted(env.bugs, 'deliver-twice')) return patchTrial(context, { seed: found.seed });
        return patchTrialChain(
          context,
          (old) => ({ ...old, skipped: old.skipped.filter((_, i) => i !== position) }),
          { seed: found.seed },
        );
      }),
      /** WP-DR-08: store the keys of the messages skipped up to the counter, newest first (WP-DR-02). */
      storeSkippedKeys: assign(({ context }) => {
        const { counter } = signalMessageOf(context);
        return patchTrialChain(context, (chain) => {
          let key = chain.chainKey.key;
          let index = chain.chainKey.index;
          const newlySkipped: SkippedKeyData[] = [];
          while (index < counter) {
            const step = kdfCk(c, key);
            newlySkipped.push({ index, seed: step.messageKeySeed });
            key = step.nextChainKey;
            index++;
          }
          if (newlySkipped.length === 0) return chain;
          return {
            ...chain,
            chainKey: { key, index },
            skipped: [...newlySkipped.reverse(), ...chain.skipped],
          };
        });
      }),
      /** WP-DR-02: derive this message's key seed and advance the chain past it. */
      takeChainMessageKey: assign(({ context }) => {
        const { counter } = signalMessageOf(context);
        const step = kdfCk(c, trialChainOf(trialOf(context)).chainKey.key);
        // Planted bug (simulator self-test only): `deliver-twice` also stores the key it just used,
        // as the newest skipped key.
        const keepUsedKey = planted(env.bugs, 'deliver-twice');
        return patchTrialChain(
          context,
          (chain) => ({
            ...chain,
            chainKey: { key: step.nextChainKey, index: counter + 1 },
            skipped: keepUsedKey
              ? [{ index: counter, seed: step.messageKeySeed }, ...chain.skipped]
              : chain.skipped,
          }),
          { seed: step.messageKeySeed },
        );
      }),
      /** WP-DR-08: keep the newest MAX_MESSAGE_KEYS skipped keys (a cap, never a rejection). */
      dropOldestSkippedKeys: assign(({ context }) =>
        patchTrialChain(context, (chain) => ({
          ...chain,
          skipped: chain.skipped.slice(0, MAX_MESSAGE_KEYS),
        })),
      ),
      /** WP-DR-03: cipher key, MAC key and IV from the message-key seed. */
      deriveMessageKeys: assign(({ context }) =>
        patchTrial(context, { keys: deriveMessageKeys(c, need(trialOf(context).seed, 'message key seed')) }),
      ),
      /** WP-DR-04: AES-256-CBC with PKCS#7; a bad padding is the trial's error. */
      decryptMessageBody: assign(({ context }) => {
        const trial = trialOf(context);
        const body = decryptBody(c, need(trial.keys, 'message keys'), signalMessageOf(context).ciphertext);
        return body.ok
          ? patchTrial(context, { plaintext: body.value })
          : patchTrial(context, { error: body.error });
      }),
      /** WP-PQXDH-09: a message that decrypts on the session acknowledges it: PreKey wrapping stops. */
      acknowledgeSession: assign(({ context }) => {
        const trial = trialOf(context);
        return patchTrial(context, { session: { ...trial.session, pendingPreKey: null } });
      }),

      // --- Outcome --------------------------------------------------------------------------
      /** WP-REC-02: the current session decrypted; it stays current, as changed. */
      replaceCurrentSession: assign(({ context }) => {
        const working = workingOf(context);
        return patchWorking(context, { record: { ...working.record, current: trialOf(context).session } });
      }),
      /**
       * WP-REC-02: the archived session that decrypted becomes current and the old current session
       * goes to the head of the archive (WP-REC-01; the length cannot grow here).
       */
      promoteArchivedSession: assign(({ context }) => {
        const record = workingOf(context).record;
        const trial = trialOf(context);
        const rest = record.archived.filter((_, i) => i !== trial.archivedIndex);
        const archived = record.current === null ? rest : [record.current, ...rest];
        return patchWorking(context, {
          record: { current: trial.session, archived: archived.slice(0, ARCHIVED_STATES_MAX_LENGTH) },
        });
      }),
      /** WP-REC-04: the new session, as its first message left it, is what gets installed. */
      keepDecryptedSessionAsNew: assign(({ context }) =>
        patchWorking(context, { created: trialOf(context).session }),
      ),
      /** WP-PQXDH-06: the one-time prekey is deleted now that its first message decrypted. */
      consumeOneTimePreKey: assign(({ context }) => {
        const working = workingOf(context);
        const used = need(working.used, 'prekeys used');
        return patchWorking(context, {
          prekeys: {
            ...working.prekeys,
            oneTimePreKeys: working.prekeys.oneTimePreKeys.filter((k) => k.keyId !== used.preKeyId),
          },
        });
      }),
      /** WP-PQXDH-07: a one-time Kyber prekey is deleted after its first use; a last-resort one stays. */
      consumeKyberPreKey: assign(({ context }) => {
        const working = workingOf(context);
        const used = need(working.used, 'prekeys used');
        return patchWorking(context, {
          prekeys: {
            ...working.prekeys,
            kyberPreKeys: working.prekeys.kyberPreKeys.filter(
              (k) => k.lastResort || k.keyId !== used.kyberPreKeyId,
            ),
          },
        });
      }),
      /** WP-REC-02 / WP-PQXDH-10: hand the plaintext to the caller, saying whether a session was created. */
      emitPlaintext: emit(({ context }) => {
        const trial = trialOf(context);
        return {
          type: 'session.plaintext' as const,
          plaintext: need(trial.plaintext, 'plaintext'),
          createdSession: trial.source === 'created',
        };
      }),
    },
  }).createMachine({
    id: 'session',
    context: ({ input }) => ({
      localIdentityKeyPair: input?.localIdentityKeyPair ?? placeholderIdentity(c),
      localRegistrationId: input?.localRegistrationId ?? 0,
      record: input?.record ?? EMPTY_RECORD,
      prekeys: input?.prekeys ?? EMPTY_PREKEYS,
      working: null,
      rejection: null,
    }),
    initial: 'settle',
    states: {
      /** Chooses the resting state from the committed record. */
      settle: {
        always: [
          { guard: 'recordHasNoCurrentSession', target: 'noSession' },
          { guard: 'currentSessionAwaitsReply', target: 'initiating' },
          { target: 'established' },
        ],
      },
      /** No current session: the record is empty (WP-REC-05). */
      noSession: {
        on: {
          'user.processBundle': { target: 'processingBundle', actions: 'beginOperation' },
          'user.send': {
            target: 'rejecting',
            actions: { type: 'rejectWith', params: { code: 'NO_SESSION' } },
          },
          'net.deliver': { target: 'decrypting', actions: 'beginOperation' },
        },
      },
      /** The current session is ours and unanswered: messages go out as PreKey messages (WP-PQXDH-09). */
      initiating: {
        on: {
          'user.processBundle': { target: 'processingBundle', actions: 'beginOperation' },
          'user.send': { target: 'sending', actions: 'beginOperation' },
          'net.deliver': { target: 'decrypting', actions: 'beginOperation' },
        },
      },
      /** The current session is acknowledged (or was created by the peer's PreKey message). */
      established: {
        on: {
          'user.processBundle': { target: 'processingBundle', actions: 'beginOperation' },
          'user.send': { target: 'sending', actions: 'beginOperation' },
          'net.deliver': { target: 'decrypting', actions: 'beginOperation' },
        },
      },

      /** Initiator key agreement (PQXDH §3.3): every check in the order libsignal makes it. */
      processingBundle: {
        initial: 'decodeIdentityKey',
        states: {
          decodeIdentityKey: {
            always: [
              {
                guard: { type: 'bundleKeyWellFormed', params: { key: 'identityKey' } },
                target: 'decodeSignedPreKey',
              },
              {
                target: '#session.rejecting',
                actions: { type: 'rejectWithBundleKeyError', params: { key: 'identityKey' } },
              },
            ],
          },
          decodeSignedPreKey: {
            always: [
              {
                guard: { type: 'bundleKeyWellFormed', params: { key: 'signedPreKey' } },
                target: 'verifySignedPreKeySignature',
              },
              {
                target: '#session.rejecting',
                actions: { type: 'rejectWithBundleKeyError', params: { key: 'signedPreKey' } },
              },
            ],
          },
          verifySignedPreKeySignature: {
            always: [
              { guard: 'signedPreKeySignatureValid', target: 'checkKyber' },
              {
                target: '#session.rejecting',
                actions: { type: 'rejectWith', params: { code: 'BUNDLE_SIGNATURE_INVALID' } },
              },
            ],
          },
          checkKyber: {
            always: [
              { guard: 'bundleHasKyberPreKey', target: 'decodeKyberPreKey' },
              {
                target: '#session.rejecting',
                actions: { type: 'rejectWith', params: { code: 'BUNDLE_KYBER_MISSING' } },
              },
            ],
          },
          decodeKyberPreKey: {
            always: [
              {
                guard: { type: 'bundleKeyWellFormed', params: { key: 'kyberPreKey' } },
                target: 'verifyKyberPreKeySignature',
              },
              {
                target: '#session.rejecting',
                actions: { type: 'rejectWithBundleKeyError', params: { key: 'kyberPreKey' } },
              },
            ],
          },
          verifyKyberPreKeySignature: {
            always: [
              { guard: 'kyberPreKeySignatureValid', target: 'checkOneTimePreKeyPairing' },
              {
                target: '#session.rejecting',
                actions: { type: 'rejectWith', params: { code: 'BUNDLE_SIGNATURE_INVALID' } },
              },
            ],
          },
          checkOneTimePreKeyPairing: {
            always: [
              { guard: 'oneTimePreKeyPairedWithId', target: 'decodeOneTimePreKey' },
              {
                target: '#session.rejecting',
                actions: { type: 'rejectWith', params: { code: 'BUNDLE_MALFORMED' } },
              },
            ],
          },
          decodeOneTimePreKey: {
            always: [
              { guard: 'bundleHasNoOneTimePreKey', target: 'deriveSecret' },
              { guard: { type: 'bundleKeyWellFormed', params: { key: 'preKey' } }, target: 'deriveSecret' },
              {
                target: '#session.rejecting',
                actions: { type: 'rejectWithBundleKeyError', params: { key: 'preKey' } },
              },
            ],
          },
          deriveSecret: {
            entry: ['drawInitiatorKeys', 'deriveInitiatorSession'],
            always: [
              { guard: 'keyAgreementSucceeded', target: 'installSession' },
              { target: '#session.rejecting', actions: 'rejectWithAgreementError' },
            ],
          },
          installSession: {
            always: [
              {
                guard: 'archiveFullOnInsert',
                target: 'commit',
                actions: ['archiveCurrentSession', 'dropOldestArchivedSession', 'makeNewSessionCurrent'],
              },
              { target: 'commit', actions: ['archiveCurrentSession', 'makeNewSessionCurrent'] },
            ],
          },
          commit: {
            entry: ['commitWorkingCopy', 'discardWorkingCopy'],
            always: '#session.settle',
          },
        },
      },

      /** Encrypting on the current session (Double Ratchet §3.4). Draws nothing. */
      sending: {
        initial: 'checkSessionAge',
        states: {
          checkSessionAge: {
            always: [
              { guard: 'unacknowledgedSessionWithinMaxAge', target: 'encrypt' },
              {
                target: '#session.rejecting',
                actions: { type: 'rejectWith', params: { code: 'SESSION_UNACKNOWLEDGED_TOO_OLD' } },
              },
            ],
          },
          encrypt: {
            entry: 'encryptOnCurrentSession',
            always: [{ guard: 'sessionAwaitsReply', target: 'wrapPreKey' }, { target: 'commit' }],
          },
          wrapPreKey: {
            entry: 'wrapInPreKeyMessage',
            always: 'commit',
          },
          commit: {
            entry: ['commitWorkingCopy', 'emitMessage', 'discardWorkingCopy'],
            always: '#session.settle',
          },
        },
      },

      /** Decrypting a delivered message: parse, choose the session(s), try them, commit or reject. */
      decrypting: {
        initial: 'chooseFormat',
        states: {
          chooseFormat: {
            always: [{ guard: 'deliveredPreKeyMessage', target: 'parsePreKey' }, { target: 'parse' }],
          },

          // SignalMessage: the record search (WP-REC-02, WP-REC-03).
          parse: {
            entry: 'parseSignalMessage',
            always: [
              { guard: 'messageWellFormed', target: 'checkRecord' },
              { target: '#session.rejecting', actions: 'rejectWithParseError' },
            ],
          },
          checkRecord: {
            always: [
              { guard: 'recordHasSession', target: 'selectSession' },
              {
                target: '#session.rejecting',
                actions: { type: 'rejectWith', params: { code: 'NO_SESSION' } },
              },
            ],
          },
          selectSession: {
            always: [
              { guard: 'untriedSessionRemains', target: 'trial', actions: 'loadNextCandidate' },
              { target: 'searchExhausted' },
            ],
          },
          searchExhausted: {
            always: [
              {
                guard: 'exactlyOneSessionTried',
                target: '#session.rejecting',
                actions: 'rejectWithOnlySessionError',
              },
              {
                target: '#session.rejecting',
                actions: { type: 'rejectWith', params: { code: 'NO_SESSION_DECRYPTED' } },
              },
            ],
          },

          // PreKeySignalMessage: the session it names, or responder key agreement (WP-PQXDH-05..10).
          parsePreKey: {
            entry: 'parsePreKeyMessage',
            always: [
              { guard: 'messageWellFormed', target: 'matchBaseKey' },
              { target: '#session.rejecting', actions: 'rejectWithParseError' },
            ],
          },
          matchBaseKey: {
            always: [
              { guard: 'baseKeyMatchesCurrentSession', target: 'trial', actions: 'loadCurrentSession' },
              {
                guard: 'baseKeyMatchesArchivedSession',
                target: 'trial',
                actions: 'loadMatchingArchivedSession',
              },
              { target: 'accepting' },
            ],
          },
          accepting: {
            initial: 'checkSignedPreKey',
            states: {
              checkSignedPreKey: {
                always: [
                  { guard: 'signedPreKeyHeld', target: 'checkKyberPreKey' },
                  {
                    target: '#session.rejecting',
                    actions: { type: 'rejectWith', params: { code: 'UNKNOWN_SIGNED_PREKEY' } },
                  },
                ],
              },
              checkKyberPreKey: {
                always: [
                  { guard: 'kyberPreKeyHeld', target: 'checkOneTimePreKey' },
                  {
                    target: '#session.rejecting',
                    actions: { type: 'rejectWith', params: { code: 'UNKNOWN_KYBER_PREKEY' } },
                  },
                ],
              },
              checkOneTimePreKey: {
                always: [
                  { guard: 'messageNamesNoOneTimePreKey', target: 'deriveSecret' },
                  { guard: 'oneTimePreKeyHeld', target: 'deriveSecret' },
                  {
                    target: '#session.rejecting',
                    actions: { type: 'rejectWith', params: { code: 'UNKNOWN_ONE_TIME_PREKEY' } },
                  },
                ],
              },
              deriveSecret: {
                entry: 'deriveResponderSession',
                always: [
                  {
                    guard: 'keyAgreementSucceeded',
                    target: '#session.decrypting.trial',
                    actions: 'loadCreatedSession',
                  },
                  { target: '#session.rejecting', actions: 'rejectWithAgreementError' },
                ],
              },
            },
          },

          // One session's attempt at the message (Double Ratchet §3.5, libsignal's order).
          trial: {
            initial: 'checkVersion',
            states: {
              checkVersion: {
                always: [
                  { guard: 'versionMatchesSession', target: 'findReceiverChain' },
                  {
                    target: '#session.decrypting.trialFailed',
                    actions: { type: 'failTrial', params: { code: 'SESSION_VERSION_MISMATCH' } },
                  },
                ],
              },
              findReceiverChain: {
                always: [
                  {
                    guard: 'hasReceiverChainForRatchetKey',
                    target: 'checkCounter',
                    actions: 'selectReceiverChain',
                  },
                  { target: 'ratchetStep' },
                ],
              },
              ratchetStep: {
                entry: 'performDhRatchetStep',
                always: [
                  { guard: 'trialStepSucceeded', target: 'capReceiverChains' },
                  { target: '#session.decrypting.trialFailed' },
                ],
              },
              capReceiverChains: {
                always: [
                  {
                    guard: 'receiverChainsOverLimit',
                    target: 'checkCounter',
                    actions: 'dropOldestReceiverChain',
                  },
                  { target: 'checkCounter' },
                ],
              },
              checkCounter: {
                always: [
                  { guard: 'counterBehindChain', target: 'useSkippedKey' },
                  { target: 'checkForwardJump' },
                ],
              },
              useSkippedKey: {
                always: [
                  { guard: 'hasStoredSkippedKey', target: 'verifyMac', actions: 'takeStoredSkippedKey' },
                  {
                    target: '#session.decrypting.trialFailed',
                    actions: { type: 'failTrial', params: { code: 'DUPLICATE_MESSAGE' } },
                  },
                ],
              },
              checkForwardJump: {
                always: [
                  { guard: 'counterWithinForwardJumpLimit', target: 'advanceChain' },
                  {
                    target: '#session.decrypting.trialFailed',
                    actions: { type: 'failTrial', params: { code: 'FORWARD_JUMP_TOO_FAR' } },
                  },
                ],
              },
              advanceChain: {
                entry: ['storeSkippedKeys', 'takeChainMessageKey'],
                always: 'capSkippedKeys',
              },
              capSkippedKeys: {
                always: [
                  { guard: 'skippedKeysOverLimit', target: 'verifyMac', actions: 'dropOldestSkippedKeys' },
                  { target: 'verifyMac' },
                ],
              },
              verifyMac: {
                entry: 'deriveMessageKeys',
                always: [
                  { guard: 'macValid', target: 'decryptBody' },
                  {
                    target: '#session.decrypting.trialFailed',
                    actions: { type: 'failTrial', params: { code: 'MAC_INVALID' } },
                  },
                ],
              },
              decryptBody: {
                entry: 'decryptMessageBody',
                always: [
                  {
                    guard: 'bodyDecrypted',
                    target: '#session.decrypting.trialSucceeded',
                    actions: 'acknowledgeSession',
                  },
                  { target: '#session.decrypting.trialFailed' },
                ],
              },
            },
          },
          trialFailed: {
            always: [
              { guard: 'singleSessionTrial', target: '#session.rejecting', actions: 'rejectWithTrialError' },
              {
                guard: 'trialFailedAsDuplicate',
                target: '#session.rejecting',
                actions: 'rejectWithTrialError',
              },
              { target: 'selectSession', actions: 'rememberSessionError' },
            ],
          },
          trialSucceeded: {
            always: [
              {
                guard: 'trialOnCreatedSession',
                target: 'installCreatedSession',
                actions: 'keepDecryptedSessionAsNew',
              },
              { guard: 'trialOnCurrentSession', target: 'commit', actions: 'replaceCurrentSession' },
              { target: 'commit', actions: 'promoteArchivedSession' },
            ],
          },
          installCreatedSession: {
            always: [
              {
                guard: 'archiveFullOnInsert',
                target: 'consumePreKeys',
                actions: ['archiveCurrentSession', 'dropOldestArchivedSession', 'makeNewSessionCurrent'],
              },
              { target: 'consumePreKeys', actions: ['archiveCurrentSession', 'makeNewSessionCurrent'] },
            ],
          },
          consumePreKeys: {
            entry: ['consumeOneTimePreKey', 'consumeKyberPreKey'],
            always: 'commit',
          },
          commit: {
            entry: ['commitWorkingCopy', 'emitPlaintext', 'discardWorkingCopy'],
            always: '#session.settle',
          },
        },
      },

      /** Any rejection: tell the caller, throw the working copy away (WP-DR-11). */
      rejecting: {
        entry: ['emitRejection', 'discardWorkingCopy'],
        always: 'settle',
      },
    },
  });
}

/** The type of the session machine. */
export type SessionMachine = ReturnType<typeof createSessionMachine>;

/** A snapshot of the session machine. */
export type SessionSnapshot = SnapshotFrom<SessionMachine>;

// ---------------------------------------------------------------------------------------------
// Runner
// ---------------------------------------------------------------------------------------------

/** The outcome of one event: what the machine emitted, in order, and the snapshot after it. */
export interface SessionStep {
  readonly outputs: readonly SessionEmitted[];
  readonly snapshot: SessionSnapshot;
}

/** A started session actor with a synchronous `step`. */
export interface SessionRunner {
  readonly machine: SessionMachine;
  readonly actor: Actor<SessionMachine>;
  /** Sends one event and returns what it emitted; throws if the machine hit a bug (an InvariantError). */
  step(event: SessionEvent): SessionStep;
  /** The current snapshot. */
  snapshot(): SessionSnapshot;
}

/**
 * Creates and starts the session actor (`id: 'session'`) and returns a synchronous driver. Emitted
 * events are collected through `actor.on('*')`, which xstate calls synchronously inside `send`.
 */
export function createSessionRunner(env: Env, input: SessionInput): SessionRunner {
  const machine = createSessionMachine(env);
  const actor = createActor(machine, { input, id: 'session' });
  let collected: SessionEmitted[] = [];
  actor.on('*', (emitted) => {
    collected.push(emitted);
  });
  // Errors surface through the snapshot below; this observer only keeps xstate from re-throwing
  // them asynchronously.
  actor.subscribe({ error: () => undefined });
  actor.start();
  return {
    machine,
    actor,
    step(event: SessionEvent): SessionStep {
      collected = [];
      actor.send(event);
      const snapshot = actor.getSnapshot();
      if (snapshot.status === 'error') throw snapshot.error;
      const outputs = collected;
      collected = [];
      return { outputs, snapshot };
    },
    snapshot: () => actor.getSnapshot(),
  };
}

// ---------------------------------------------------------------------------------------------
// Projections
// ---------------------------------------------------------------------------------------------

/** Projects one session onto spec/abstract.ts (fingerprints, never keys). */
export function abstractSessionOf(c: CryptoProvider, s: SessionData): SessionAbstract {
  return {
    phase: s.pendingPreKey === null ? 'established' : 'initiating',
    version: s.version,
    localIdentityFp: fingerprint(c, s.localIdentityKey),
    remoteIdentityFp: fingerprint(c, s.remoteIdentityKey),
    baseKeyFp: fingerprint(c, s.aliceBaseKey),
    rootKeyFp: fingerprint(c, s.rootKey),
    senderRatchetKeyFp: fingerprint(c, s.senderRatchetKey.publicKey),
    senderChainIndex: s.senderChainKey.index,
    previousCounter: s.previousCounter,
    receiverChains: s.receiverChains.map((chain) => ({
      ratchetKeyFp: fingerprint(c, chain.ratchetKey),
      chainIndex: chain.chainKey.index,
      skippedKeys: chain.skipped.length,
    })),
  };
}

/** The committed record of a machine context, projected onto spec/abstract.ts. */
export function abstractSessionRecordOf(c: CryptoProvider, context: SessionContext): SessionRecordAbstract {
  return {
    current: context.record.current === null ? null : abstractSessionOf(c, context.record.current),
    archived: context.record.archived.map((s) => abstractSessionOf(c, s)),
  };
}

/** The prekeys a machine still holds, by id, in store order. */
export interface PreKeyIds {
  readonly oneTimePreKeyIds: readonly number[];
  readonly kyberPreKeyIds: readonly number[];
}

/** The committed prekey store of a machine context as plain id lists. */
export function prekeysOf(context: SessionContext): PreKeyIds {
  return {
    oneTimePreKeyIds: context.prekeys.oneTimePreKeys.map((k) => k.keyId),
    kyberPreKeyIds: context.prekeys.kyberPreKeys.map((k) => k.keyId),
  };
}

// ---------------------------------------------------------------------------------------------
// Drawing: the definition with its transient transitions
// ---------------------------------------------------------------------------------------------

/** A named guard or action as it appears in a machine config (`params` when it has them). */
export interface NamedImplementationJson {
  readonly type: string;
  readonly params?: unknown;
}

/** One transition of a state node: `event` is null for an eventless (`always`) transition. */
export interface TransitionJson {
  readonly event: string | null;
  readonly targets: readonly string[];
  readonly guard: NamedImplementationJson | null;
  readonly actions: readonly NamedImplementationJson[];
}

/** One state node, its entry actions, its transitions and its children. */
export interface StateNodeJson {
  readonly id: string;
  readonly type: string;
  readonly initial: string | null;
  readonly entry: readonly NamedImplementationJson[];
  readonly transitions: readonly TransitionJson[];
  readonly states: Readonly<Record<string, StateNodeJson>>;
}

function namedImplementation(value: unknown): NamedImplementationJson {
  if (typeof value === 'string') return { type: value };
  if ((typeof value === 'object' || typeof value === 'function') && value !== null && 'type' in value) {
    const type = typeof value.type === 'string' ? value.type : 'inline';
    return 'params' in value && value.params !== undefined ? { type, params: value.params } : { type };
  }
  return { type: 'inline' };
}

interface TransitionLike {
  readonly eventType: string;
  readonly target?: readonly AnyStateNode[] | undefined;
  readonly guard?: unknown;
  readonly actions: readonly unknown[];
}

function transitionJson(t: TransitionLike, eventless: boolean): TransitionJson {
  return {
    event: eventless ? null : t.eventType,
    targets: (t.target ?? []).map((node) => `#${node.id}`),
    guard: t.guard === undefined ? null : namedImplementation(t.guard),
    actions: t.actions.map(namedImplementation),
  };
}

function stateNodeJson(node: AnyStateNode): StateNodeJson {
  const on = [...node.transitions.values()].flat().map((t) => transitionJson(t, false));
  const always = (node.always ?? []).map((t) => transitionJson(t, true));
  const initialTarget = node.initial?.target[0];
  return {
    id: node.id,
    type: node.type,
    initial: initialTarget === undefined ? null : `#${initialTarget.id}`,
    entry: node.entry.map(namedImplementation),
    transitions: [...on, ...always],
    states: Object.fromEntries(
      Object.entries(node.states).map(([key, child]) => [key, stateNodeJson(child)]),
    ),
  };
}

/**
 * The machine as plain JSON for drawing and auditing: state nodes with their entry actions and
 * every transition, eventless ones included. xstate 5.33's `machine.definition` (and
 * @xstate/graph's `toDirectedGraph`) leave out `always` transitions, which carry every decision of
 * this machine's pipelines, so a diagram built from them alone would show none of the checks.
 */
export function sessionMachineJson(machine: AnyStateMachine): StateNodeJson {
  return stateNodeJson(machine.root);
}
