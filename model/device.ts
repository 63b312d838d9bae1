/**
 * The device machine: one client device's lifecycle and its Sesame device-sync behaviour as an
 * explicit XState v5 machine (WHITEPAPER.md "Sesame" WP-SES-*, "Device lists and trust"
 * WP-TRUST-01..07, "Transport" WP-XPORT-01..09, "Device lifecycle" WP-LIFE-01..08, "Linking a
 * device" WP-LINK-*, "Attachments" WP-ATT-*; Signal *Sesame* rev 2 §3.3–§4.1).
 *
 * This is the second, independent encoding of the device rules (the first is impl/device.ts); it
 * imports spec/, model/ and xstate only. Events are impl's `DeviceInput` kinds with a `now` field;
 * the machine emits `device.output` events carrying impl's `DeviceOutput` shapes, in impl's order.
 * The conformance suite (test/conformance/device-quick.test.ts) replays the same inputs on both
 * engines with the same seeded Rng and requires identical outputs, draws and abstract state
 * (spec/device-abstract.ts).
 *
 * ```text
 *   creatingAccount ──(primary: registerAccount)──► registering ──(registrationAccepted)──► linked ──► revoked
 *   provisioning.waiting ─ net.response(relay) ─► provisioning.verifying ─(provisionMessageValid)─► registering
 *
 *   linked.idle ── net.response(fetch) ───────────┐        linked.idle ── net.response(device-list) ─┐
 *                                                  ▼                                                   ▼
 *   linked.receiving: next ─► checkSender ─► dispatchType ─► decrypt ─► checkDecrypted ─► checkIdentity
 *                     ▲         │ park / reject     │ retry request                 │ duplicate / failed (retry request)
 *                     └─────────┴───────────────────┴── decodePayload ─► deliver ◄──┘ commitSessions
 *                     next (inbox empty) ─► finish ─► linked.idle   (fetch: ack, cleanup, replenish;
 *                                                                    parked: ack, replenish, sends move on)
 * ```
 *
 * A device handles many sends at once, so, like impl, it keeps its outbox and its requests in
 * flight in context; each send answer is a guarded transition (accepted, mailbox full, single-device
 * refusal, attempts exhausted, refusal applied, server error). The per-envelope decision flow is a
 * chain of transient states, so each receive rule is one guard. Decisions that several transitions
 * share (accepting a device list, moving an outbox entry on, PrepEncrypt) are helpers in
 * model/device-steps.ts and model/sesame.ts, named after their rules.
 * @module
 */
import { and, createActor, enqueueActions, not, setup, type Actor } from 'xstate';
import type { AttachmentPointer } from '../spec/attachment.js';
import { planted } from '../spec/bugs.js';
import { equalBytes } from '../spec/bytes.js';
import { MAX_SEND_ATTEMPTS, SIGNED_PREKEY_GRACE_PERIOD } from '../spec/constants.js';
import type { ContactLink } from '../spec/contact-link.js';
import type { CryptoProvider } from '../spec/crypto/provider.js';
import type { DeviceAbstract } from '../spec/device-abstract.js';
import { signDeviceList } from '../spec/device-list.js';
import type { DeviceList } from '../spec/device-list-types.js';
import type { Env } from '../spec/env.js';
import { reject, UsageError } from '../spec/errors.js';
import { PRIMARY_DEVICE_ID, type DeviceId, type UserId } from '../spec/identity.js';
import { fingerprint, generateKeyPair } from '../spec/keys.js';
import { decodePayload } from '../spec/payload.js';
import { RELAY_ADDRESS_BYTES, relayAddressFromBytes, type ProvisioningCode } from '../spec/provisioning.js';
import { HARDENED_OPTIONS } from '../spec/security-mode.js';
import type { Envelope, ServerRequest, ServerResponse } from '../spec/server-api.js';
import type {
  DeviceContext,
  DeviceEvent,
  DeviceMachineInput,
  DeviceOutputEvent,
  ModelDeviceInput,
  ModelDeviceOptions,
  ModelDeviceOutput,
  ModelPending,
  ModelPurpose,
  ModelSendContent,
} from './device-data.js';
import {
  acceptAccountKeyChange,
  acceptRevocationList,
  acknowledge,
  advanceSendsAwaitingList,
  answerRetryRequest,
  answerWhileNotLinked,
  applySendRefusal,
  applyServedDeviceList,
  blankTrust,
  bundlesMatchList,
  confirmPreKeyUpload,
  decryptDownloadedAttachment,
  deleteExpiredSignedPreKeys,
  EC_PREKEY_BATCH,
  entryForPurpose,
  failSendExhausted,
  failSendWithServerError,
  failSingleDeviceSend,
  fetchRefused,
  finishFetch,
  freeDeviceId,
  holdForMailbox,
  issueRequest,
  KYBER_BATCH,
  markLinked,
  MODEL_MAX_SEEN,
  ownAddress,
  parkEnvelope,
  pendingFor,
  pinContactLink,
  pollRelay,
  namesPreKeyNotYetMade,
  preKeyUploadInFlight,
  prepareSessionsFromBundles,
  putTrust,
  queueUserMessage,
  readProvisionMessage,
  askAgainUnderServedList,
  completeAcceptedSend,
  registerAccount,
  registerLinkedDevice,
  rejectNotLinked,
  rejectProvisionMessage,
  releaseAttachmentSends,
  replenishPreKeys,
  requestRetry,
  resendUnanswered,
  retryListAfterBundleFailure,
  retryNamesUnansweredSend,
  revocableDevice,
  rotateSignedPreKey,
  say,
  sayError,
  sendProvisionMessage,
  senderEntry,
  serverErrorOf,
  signListWithNewDevice,
  signListWithoutDevice,
  takePending,
  trustFor,
  type Frame,
} from './device-steps.js';
import {
  cacheAfterAccepting,
  checkChainSighting,
  createsSession,
  replayedInitialMessage,
  replayRefusal,
} from './hardening.js';
import { abstractModelSesame, newSesame, openFromSender } from './sesame.js';
import { drawPreKeys } from './sesame-sessions.js';
import { stateId, StepRecorder, type MachineStep } from './state-path.js';

export type { DeviceContext, DeviceEvent, ModelDeviceInput, ModelDeviceOutput } from './device-data.js';

/** A whitepaper rule ID. */
export type WhitepaperRuleId = `WP-${string}-${string}`;

/**
 * Every guard and action of the machine with the rules it enforces (an auditor's index; a test
 * checks that every name in the machine's configuration is listed here and vice versa).
 */
export const RULES: Readonly<Record<string, readonly WhitepaperRuleId[]>> = Object.freeze({
  // guards
  isPrimaryCreation: ['WP-LIFE-01'],
  responseAwaited: ['WP-XPORT-01'],
  answers: ['WP-XPORT-01'],
  registrationAccepted: ['WP-LIFE-01', 'WP-LIFE-03'],
  relayPollInFlight: ['WP-LIFE-03'],
  provisionMessageValid: ['WP-LIFE-03', 'WP-LINK-03', 'WP-LINK-05'],
  relayEmpty: ['WP-LIFE-03'],
  isPrimary: ['WP-LIFE-02'],
  freeDeviceIdLeft: ['WP-LIFE-02'],
  revocableDevice: ['WP-LIFE-04'],
  fetchInFlight: ['WP-XPORT-02'],
  fetchDelivered: ['WP-XPORT-02'],
  outboxEntryExists: ['WP-XPORT-01'],
  sendAccepted: ['WP-XPORT-01', 'WP-SES-12'],
  sendRefused: ['WP-SES-06', 'WP-SES-07'],
  mailboxFull: ['WP-XPORT-05'],
  isSingleDeviceSend: ['WP-XPORT-06', 'WP-SES-13'],
  isRetryRequestSend: ['WP-XPORT-09'],
  refusalCarriesList: ['WP-XPORT-09'],
  withinSendAttempts: ['WP-XPORT-03'],
  bundlesDelivered: ['WP-SES-03'],
  bundleMatchesList: ['WP-TRUST-06'],
  deviceWasRevoked: ['WP-LIFE-04'],
  inboxEmpty: ['WP-XPORT-02'],
  nextEnvelopeAlreadyParked: ['WP-TRUST-05'],
  senderIsOwnDevice: ['WP-SES-04'],
  senderAccountKeyPending: ['WP-TRUST-04'],
  senderListed: ['WP-TRUST-05'],
  listRefreshedSinceParked: ['WP-TRUST-05'],
  senderAwaitsContactLink: ['WP-TRUST-01'],
  isRetryRequest: ['WP-XPORT-06', 'WP-SES-13'],
  retryNamesUnansweredSend: ['WP-XPORT-07'],
  ratchetDuplicate: ['WP-XPORT-02', 'WP-DR-10'],
  decryptionFailed: ['WP-SES-09', 'WP-SES-10', 'WP-XPORT-06'],
  namesPreKeyNotYetMade: ['WP-LIFE-06'],
  initialMessageReplayed: ['WP-PQXDH-13'],
  forkEvidence: ['WP-SES-20'],
  senderIdentityMatchesList: ['WP-TRUST-05'],
  payloadDecodes: ['WP-PAY-01'],
  payloadAlreadySeen: ['WP-XPORT-02'],
  syncCopyFromOtherAccount: ['WP-TRUST-05'],
  drainingFetch: ['WP-SES-11'],
  preKeyUploadInFlight: ['WP-LIFE-07'],
  // actions
  registerAccount: ['WP-LIFE-01'],
  markLinked: ['WP-LIFE-01', 'WP-LIFE-03'],
  reportRegistrationFailure: ['WP-LIFE-01'],
  rejectNotLinked: ['WP-LIFE-01'],
  rejectNotPrimary: ['WP-LIFE-02'],
  rejectNoFreeDeviceId: ['WP-LIFE-02'],
  rejectUnknownDevice: ['WP-LIFE-04'],
  acceptAccountKeyChange: ['WP-TRUST-04'],
  pollRelay: ['WP-LIFE-03'],
  readProvisionMessage: ['WP-LIFE-03', 'WP-LINK-01', 'WP-LINK-05'],
  rejectProvisionMessage: ['WP-LIFE-03'],
  registerLinkedDevice: ['WP-LIFE-03'],
  answerWhileNotLinked: ['WP-LIFE-01'],
  resendUnanswered: ['WP-XPORT-01', 'WP-XPORT-05'],
  enqueueUserMessage: ['WP-SES-05', 'WP-SES-21', 'WP-TRUST-01', 'WP-ATT-01', 'WP-XPORT-01'],
  pinContactLink: ['WP-TRUST-01'],
  signListWithNewDevice: ['WP-LIFE-02', 'WP-LIFE-03'],
  signListWithoutDevice: ['WP-LIFE-04'],
  requestBlob: ['WP-ATT-02'],
  fetchMailbox: ['WP-XPORT-02'],
  queueFetchedEnvelopes: ['WP-XPORT-02'],
  reportFetchFailure: ['WP-LIFE-04'],
  applyServedDeviceList: ['WP-TRUST-02', 'WP-TRUST-03', 'WP-TRUST-04', 'WP-TRUST-07', 'WP-XPORT-03'],
  queueParkedEnvelopes: ['WP-TRUST-05'],
  confirmPreKeyUpload: ['WP-LIFE-06', 'WP-LIFE-08'],
  deleteExpiredSignedPreKeys: ['WP-LIFE-08'],
  rotateSignedPreKey: ['WP-LIFE-07'],
  sendProvisionMessage: ['WP-LIFE-03', 'WP-LINK-04'],
  acceptRevocationList: ['WP-LIFE-04'],
  reportProvisionPut: ['WP-LIFE-03'],
  releaseAttachmentSends: ['WP-ATT-01'],
  decryptDownloadedAttachment: ['WP-ATT-02', 'WP-ATT-03', 'WP-ATT-04', 'WP-ATT-05'],
  ignoreAnswer: ['WP-XPORT-01'],
  ignoreOrphanAnswer: ['WP-XPORT-01'],
  completeAcceptedSend: ['WP-XPORT-01', 'WP-XPORT-06'],
  holdForMailbox: ['WP-XPORT-05'],
  askAgainUnderServedList: ['WP-XPORT-09', 'WP-TRUST-03', 'WP-TRUST-04'],
  failSingleDeviceSend: ['WP-XPORT-06'],
  failSendExhausted: ['WP-XPORT-03', 'WP-SES-21'],
  applySendRefusal: ['WP-SES-06', 'WP-SES-07', 'WP-SES-08', 'WP-TRUST-07', 'WP-XPORT-08'],
  failSendWithServerError: ['WP-XPORT-04', 'WP-SES-21'],
  prepareSessionsFromBundles: ['WP-SES-03', 'WP-SES-21', 'WP-TRUST-06'],
  rejectMismatchedBundles: ['WP-TRUST-06'],
  retryListAfterBundleFailure: ['WP-XPORT-03'],
  takeNextEnvelope: ['WP-XPORT-02'],
  skipParkedEnvelope: ['WP-TRUST-05'],
  rejectOwnSender: ['WP-SES-04'],
  parkEnvelopeQuietly: ['WP-TRUST-04', 'WP-TRUST-01'],
  parkEnvelope: ['WP-TRUST-05'],
  rejectUnlistedSender: ['WP-TRUST-05'],
  answerRetryRequest: ['WP-SES-13', 'WP-SES-14', 'WP-SES-21', 'WP-XPORT-06'],
  acknowledgeEnvelope: ['WP-XPORT-02'],
  decryptEnvelope: ['WP-SES-09', 'WP-SES-10', 'WP-SES-18', 'WP-SES-19', 'WP-SES-22'],
  dropDuplicateEnvelope: ['WP-XPORT-02'],
  rejectReplayedInitialMessage: ['WP-PQXDH-13'],
  reportCloneDetected: ['WP-SES-20'],
  reportUndecryptable: ['WP-SES-09', 'WP-SES-10'],
  requestRetry: ['WP-XPORT-06'],
  restockPreKeys: ['WP-LIFE-06', 'WP-SRV-09'],
  rejectIdentityMismatch: ['WP-TRUST-05'],
  commitSessions: ['WP-SES-02', 'WP-SES-10', 'WP-TRUST-07', 'WP-PQXDH-13', 'WP-SES-20'],
  reportMalformedPayload: ['WP-PAY-01'],
  dropDuplicatePayload: ['WP-XPORT-02'],
  rejectForeignSyncCopy: ['WP-TRUST-05'],
  deliverPayload: ['WP-XPORT-02'],
  finishFetch: ['WP-SES-11', 'WP-LIFE-06'],
  finishParkedDrain: ['WP-TRUST-05', 'WP-LIFE-06'],
});

/** The device ids a pending get-bundles request asked for. */
function requestedBundleIds(pending: { readonly request: ServerRequest }): readonly DeviceId[] {
  return pending.request.kind === 'get-bundles' ? pending.request.deviceIds : [];
}

/** The time an event happens (machine-internal init events carry none). */
function nowOf(event: { readonly type: string }, fallback: number): number {
  return 'now' in event && typeof event.now === 'number' ? event.now : fallback;
}

type ResponseEvent = Extract<DeviceEvent, { type: 'net.response' }>;

function asResponse(event: { readonly type: string }): ResponseEvent | null {
  return event.type === 'net.response' ? (event as ResponseEvent) : null;
}

/** The pending request an answer event is for. */
function awaitedPending(context: DeviceContext, event: { readonly type: string }): ModelPending | undefined {
  const response = asResponse(event);
  return response === null ? undefined : pendingFor(context, response.requestId);
}

function responseOf(event: { readonly type: string }): ServerResponse | null {
  return asResponse(event)?.response ?? null;
}

function purposeOf(context: DeviceContext, event: { readonly type: string }): ModelPurpose | null {
  return awaitedPending(context, event)?.purpose ?? null;
}

/**
 * Builds the device machine for an environment (crypto provider and Rng). Its `input` is the
 * prepared context (see the factories below).
 */
export function createDeviceMachine(env: Env) {
  /** An action that runs a step on a frame, then stores the context and emits the outputs in order. */
  const step = (run: (f: Frame, event: DeviceEvent) => void) =>
    enqueueActions<
      DeviceContext,
      DeviceEvent,
      undefined,
      DeviceEvent,
      never,
      never,
      never,
      never,
      DeviceOutputEvent
    >(({ context, event, enqueue }) => {
      const f: Frame = { ctx: context, out: [], env, now: nowOf(event, context.linkedAt) };
      run(f, event);
      const next = f.ctx;
      enqueue.assign(() => next);
      for (const output of f.out) enqueue.emit({ type: 'device.output', output });
    });
  /** An answer action: takes the request out of the pending list, then runs the step on it. */
  const answer = (run: (f: Frame, pending: ModelPending, response: ServerResponse) => void) =>
    step((f, event) => {
      const response = asResponse(event);
      if (response === null) return;
      const pending = pendingFor(f.ctx, response.requestId);
      if (pending === undefined) return;
      takePending(f, response.requestId);
      run(f, pending, response.response);
    });
  /** A receive-pipeline action on the envelope in flight. */
  const onEnvelope = (run: (f: Frame, envelope: Envelope, listRefreshed: boolean) => void) =>
    step((f) => {
      const inFlight = f.ctx.inFlight;
      if (inFlight !== null) run(f, inFlight.envelope, inFlight.listRefreshed);
    });
  const undecryptable = (f: Frame, envelope: Envelope, error: ReturnType<typeof reject>['error']): void =>
    say(f, { kind: 'undecryptable', from: envelope.sender, messageId: envelope.messageId, error });

  return setup({
    types: {
      context: {} as DeviceContext,
      events: {} as DeviceEvent,
      emitted: {} as DeviceOutputEvent,
      input: {} as DeviceMachineInput,
    },
    guards: {
      isPrimaryCreation: ({ context }) => context.lifecycle.kind === 'registering',
      responseAwaited: ({ context, event }) => awaitedPending(context, event) !== undefined,
      answers: ({ context, event }, params: { readonly purpose: ModelPurpose['kind'] }) =>
        purposeOf(context, event)?.kind === params.purpose,
      registrationAccepted: ({ event }) => responseOf(event)?.kind === 'ok',
      relayPollInFlight: ({ context }) => context.pending.some((p) => p.purpose.kind === 'provision-get'),
      provisionMessageValid: ({ context }) => context.provisionCheck?.ok === true,
      relayEmpty: ({ context }) => context.provisionCheck === null,
      isPrimary: ({ context }) => context.accountPrivateKey !== null,
      freeDeviceIdLeft: ({ context }) => freeDeviceId(context) !== 0,
      revocableDevice: ({ context, event }) =>
        event.type === 'user.revoke-device' && revocableDevice(context, event.deviceId),
      fetchInFlight: ({ context }) => context.pending.some((p) => p.purpose.kind === 'fetch'),
      fetchDelivered: ({ event }) => responseOf(event)?.kind === 'envelopes',
      outboxEntryExists: ({ context, event }) => {
        const purpose = purposeOf(context, event);
        return purpose !== null && entryForPurpose(context, purpose) !== undefined;
      },
      sendAccepted: ({ event }) => responseOf(event)?.kind === 'accepted',
      sendRefused: ({ event }) => responseOf(event)?.kind === 'refused',
      mailboxFull: ({ event }) => {
        const response = responseOf(event);
        return response?.kind === 'refused' && response.refusal.kind === 'mailbox-full';
      },
      isSingleDeviceSend: ({ context, event }) => {
        const purpose = purposeOf(context, event);
        const item = purpose === null ? undefined : entryForPurpose(context, purpose);
        return item !== undefined && item.kind !== 'message';
      },
      isRetryRequestSend: ({ context, event }) => {
        const purpose = purposeOf(context, event);
        const item = purpose === null ? undefined : entryForPurpose(context, purpose);
        return item?.kind === 'retry-request';
      },
      refusalCarriesList: ({ event }) => {
        const response = responseOf(event);
        return (
          response?.kind === 'refused' &&
          (response.refusal.kind === 'mismatched-devices' || response.refusal.kind === 'stale-devices')
        );
      },
      withinSendAttempts: ({ context, event }) => {
        const purpose = purposeOf(context, event);
        const item = purpose === null ? undefined : entryForPurpose(context, purpose);
        return item !== undefined && item.attempts < MAX_SEND_ATTEMPTS;
      },
      bundlesDelivered: ({ event }) => responseOf(event)?.kind === 'bundles',
      bundleMatchesList: ({ context, event }) => {
        const purpose = purposeOf(context, event);
        const response = responseOf(event);
        return (
          purpose?.kind === 'bundles' &&
          response !== null &&
          bundlesMatchList(context, purpose.recipient, response)
        );
      },
      deviceWasRevoked: ({ context }) => context.lifecycle.kind === 'revoked',
      inboxEmpty: ({ context }) => context.inbox.length === 0,
      nextEnvelopeAlreadyParked: ({ context }) => {
        const next = context.inbox[0];
        return (
          context.drain?.kind === 'fetch' &&
          next !== undefined &&
          context.parked.some((p) => p.envelope.envelopeId === next.envelope.envelopeId)
        );
      },
      senderIsOwnDevice: ({ context }) => {
        const sender = context.inFlight?.envelope.sender;
        return (
          sender !== undefined && sender.userId === context.userId && sender.deviceId === context.deviceId
        );
      },
      senderAccountKeyPending: ({ context }) => {
        const sender = context.inFlight?.envelope.sender;
        return (
          sender !== undefined &&
          context.options.deviceListAuth === 'signed' &&
          (trustFor(context, sender.userId)?.pendingAccountKey ?? null) !== null
        );
      },
      senderListed: ({ context }) => {
        const sender = context.inFlight?.envelope.sender;
        // Server mode (Sesame rev 2) hears every sender the server reports.
        return (
          sender !== undefined &&
          (context.options.deviceListAuth === 'server' || senderEntry(context, sender) !== undefined)
        );
      },
      listRefreshedSinceParked: ({ context }) => context.inFlight?.listRefreshed === true,
      // WP-TRUST-01: a chat started from a contact link whose served lists all failed the link yet.
      senderAwaitsContactLink: ({ context }) => {
        const sender = context.inFlight?.envelope.sender;
        const trust = sender === undefined ? undefined : trustFor(context, sender.userId);
        return trust !== undefined && trust.expectedFingerprint !== null && trust.accountKey === null;
      },
      isRetryRequest: ({ context }) => context.inFlight?.envelope.type === 'retry-request',
      retryNamesUnansweredSend: ({ context }) => {
        const envelope = context.inFlight?.envelope;
        return envelope !== undefined && retryNamesUnansweredSend(context, envelope.sender, envelope.bytes);
      },
      ratchetDuplicate: ({ context }) => {
        const received = context.inFlight?.received;
        return (
          received !== null &&
          received !== undefined &&
          !received.ok &&
          received.error.code === 'DUPLICATE_MESSAGE'
        );
      },
      decryptionFailed: ({ context }) => context.inFlight?.received?.ok !== true,
      namesPreKeyNotYetMade: ({ context }) => {
        const envelope = context.inFlight?.envelope;
        return envelope !== undefined && namesPreKeyNotYetMade(context, envelope);
      },
      initialMessageReplayed: ({ context }) => {
        const inFlight = context.inFlight;
        return (
          inFlight !== null &&
          context.options.initialReplayCache &&
          inFlight.envelope.type === 'prekey' &&
          replayedInitialMessage(
            context.sesame,
            context.initialMessages,
            inFlight.envelope.sender,
            inFlight.envelope.bytes,
          )
        );
      },
      forkEvidence: ({ context }) => context.inFlight?.sighting?.kind === 'fork',
      senderIdentityMatchesList: ({ context }) => {
        const inFlight = context.inFlight;
        if (inFlight === null || inFlight.received === null || !inFlight.received.ok) return false;
        if (context.options.deviceListAuth !== 'signed') return true;
        const listed = senderEntry(context, inFlight.envelope.sender);
        return (
          listed === undefined || equalBytes(listed.identityKey, inFlight.received.value.senderIdentityKey)
        );
      },
      payloadDecodes: ({ context }) => context.inFlight?.payload?.ok === true,
      payloadAlreadySeen: ({ context }) => {
        const payload = context.inFlight?.payload;
        // Planted bug (simulator self-test only): `deliver-twice` forgets which payloads were shown.
        if (planted(env.bugs, 'deliver-twice')) return false;
        return payload?.ok === true && context.seen.includes(payload.value.messageId);
      },
      syncCopyFromOtherAccount: ({ context }) => {
        const inFlight = context.inFlight;
        return (
          inFlight?.payload?.ok === true &&
          inFlight.payload.value.content.kind === 'sync' &&
          inFlight.envelope.sender.userId !== context.userId
        );
      },
      drainingFetch: ({ context }) => context.drain?.kind === 'fetch',
      // WP-LIFE-07: uploads go one at a time, so a rotation waits for the next timer.
      preKeyUploadInFlight: ({ context }) => preKeyUploadInFlight(context),
    },
    actions: {
      registerAccount: step((f) => {
        const creation = f.ctx.creation;
        if (creation === null) return;
        f.ctx = { ...f.ctx, creation: null };
        registerAccount(f, creation.accountPublicKey, creation.signedList);
      }),
      markLinked: answer((f) => markLinked(f)),
      reportRegistrationFailure: answer((f, _p, response) =>
        say(f, { kind: 'error', context: 'register', error: serverErrorOf(response) }),
      ),
      rejectNotLinked: step((f, event) => rejectNotLinked(f, userContext(event.type))),
      rejectNotPrimary: step((f, event) =>
        sayError(
          f,
          userContext(event.type),
          'LIFE_NOT_PRIMARY',
          'only the primary device can change the device list',
        ),
      ),
      rejectNoFreeDeviceId: step((f) =>
        sayError(f, 'link-device', 'LIFE_NO_FREE_DEVICE_ID', 'no free device id'),
      ),
      rejectUnknownDevice: step((f) =>
        sayError(f, 'revoke-device', 'LIFE_UNKNOWN_DEVICE', 'no such other device in the account'),
      ),
      acceptAccountKeyChange: step((f, event) => {
        if (event.type === 'user.acknowledge-key-change') acceptAccountKeyChange(f, event.userId);
      }),
      pollRelay: step((f) => pollRelay(f)),
      readProvisionMessage: answer((f, _p, response) => readProvisionMessage(f, response)),
      rejectProvisionMessage: step((f) => rejectProvisionMessage(f)),
      registerLinkedDevice: step((f) => registerLinkedDevice(f)),
      answerWhileNotLinked: answer((f, pending, response) => answerWhileNotLinked(f, pending, response)),
      resendUnanswered: step((f) => resendUnanswered(f)),
      enqueueUserMessage: step((f, event) => {
        if (event.type === 'user.send') queueUserMessage(f, event.recipients, event.content);
      }),
      pinContactLink: step((f, event) => {
        if (event.type === 'user.add-contact') pinContactLink(f, event.link);
      }),
      signListWithNewDevice: step((f, event) => {
        if (event.type === 'user.link-device') signListWithNewDevice(f, event.code);
      }),
      signListWithoutDevice: step((f, event) => {
        if (event.type === 'user.revoke-device') signListWithoutDevice(f, event.deviceId);
      }),
      requestBlob: step((f, event) => {
        if (event.type === 'user.download')
          issueRequest(
            f,
            { kind: 'blob-get', pointer: event.pointer },
            { kind: 'blob-get', blobId: event.pointer.blobId },
          );
      }),
      fetchMailbox: step((f) =>
        issueRequest(f, { kind: 'fetch' }, { kind: 'fetch', device: ownAddress(f.ctx) }),
      ),
      queueFetchedEnvelopes: answer((f, _p, response) => {
        if (response.kind !== 'envelopes') return;
        f.ctx = {
          ...f.ctx,
          inbox: response.envelopes.map((envelope) => ({ envelope, listRefreshed: false })),
          acked: [],
          drain: { kind: 'fetch' },
        };
      }),
      reportFetchFailure: answer((f, _p, response) => fetchRefused(f, response)),
      applyServedDeviceList: answer((f, pending, response) => {
        if (pending.purpose.kind !== 'device-list') return;
        const userId = pending.purpose.userId;
        applyServedDeviceList(f, userId, response);
        f.ctx = { ...f.ctx, drain: { kind: 'parked', userId, count: 0 } };
      }),
      queueParkedEnvelopes: step((f) => {
        // The envelopes parked for this user are decided next (a snapshot, in parking order).
        const drain = f.ctx.drain;
        if (drain?.kind !== 'parked') return;
        const mine = f.ctx.parked.filter((p) => p.envelope.sender.userId === drain.userId);
        f.ctx = { ...f.ctx, inbox: mine, acked: [], drain: { ...drain, count: mine.length } };
      }),
      // WP-LIFE-06: keys used while the upload was in flight are replenished; WP-LIFE-08: older
      // signed prekeys are retired once the server confirms a newer one.
      confirmPreKeyUpload: answer((f, pending, response) => confirmPreKeyUpload(f, pending, response)),
      // WP-LIFE-08: retired signed prekeys past their grace period are deleted.
      deleteExpiredSignedPreKeys: step((f, event) => {
        if (event.type === 'timer.rotate-signed-prekey')
          deleteExpiredSignedPreKeys(f, event.gracePeriod ?? SIGNED_PREKEY_GRACE_PERIOD);
      }),
      // WP-LIFE-07: the next signed prekey, uploaded at once.
      rotateSignedPreKey: step((f) => rotateSignedPreKey(f)),
      sendProvisionMessage: answer((f, pending, response) => {
        if (pending.purpose.kind === 'link') sendProvisionMessage(f, pending.purpose, response);
      }),
      acceptRevocationList: answer((f, pending, response) => {
        if (pending.purpose.kind === 'revoke') acceptRevocationList(f, pending.purpose, response);
      }),
      reportProvisionPut: answer((f, _p, response) => {
        if (response.kind === 'error')
          say(f, { kind: 'error', context: 'provision-put', error: serverErrorOf(response) });
      }),
      releaseAttachmentSends: answer((f, pending, response) => {
        if (pending.purpose.kind === 'blob-put') releaseAttachmentSends(f, pending.purpose.blobId, response);
      }),
      decryptDownloadedAttachment: answer((f, pending, response) => {
        if (pending.purpose.kind === 'blob-get')
          decryptDownloadedAttachment(f, pending.purpose.pointer, response);
      }),
      ignoreAnswer: answer(() => undefined),
      ignoreOrphanAnswer: answer(() => undefined),
      completeAcceptedSend: answer((f, pending) => {
        const item = entryForPurpose(f.ctx, pending.purpose);
        if (item !== undefined) completeAcceptedSend(f, item);
      }),
      holdForMailbox: answer((f, pending) => {
        const item = entryForPurpose(f.ctx, pending.purpose);
        if (item !== undefined) holdForMailbox(f, item);
      }),
      askAgainUnderServedList: answer((f, pending, response) => {
        const item = entryForPurpose(f.ctx, pending.purpose);
        if (item !== undefined && response.kind === 'refused')
          askAgainUnderServedList(f, item, response.refusal);
      }),
      failSingleDeviceSend: answer((f, pending, response) => {
        const item = entryForPurpose(f.ctx, pending.purpose);
        if (item !== undefined && response.kind === 'refused')
          failSingleDeviceSend(f, item, response.refusal);
      }),
      failSendExhausted: answer((f, pending) => {
        const item = entryForPurpose(f.ctx, pending.purpose);
        if (item !== undefined) failSendExhausted(f, item);
      }),
      applySendRefusal: answer((f, pending, response) => {
        const item = entryForPurpose(f.ctx, pending.purpose);
        if (item !== undefined && response.kind === 'refused') applySendRefusal(f, item, response.refusal);
      }),
      failSendWithServerError: answer((f, pending, response) => {
        const item = entryForPurpose(f.ctx, pending.purpose);
        if (item !== undefined) failSendWithServerError(f, item, response);
      }),
      prepareSessionsFromBundles: answer((f, pending, response) => {
        const item = entryForPurpose(f.ctx, pending.purpose);
        if (item !== undefined) prepareSessionsFromBundles(f, item, response, requestedBundleIds(pending));
      }),
      rejectMismatchedBundles: answer((f, pending, response) => {
        // The same walk as prepareSessionsFromBundles: bundles before the first mismatch are
        // prepared (their draws happen), then the send fails and its record changes are discarded.
        const item = entryForPurpose(f.ctx, pending.purpose);
        if (item !== undefined) prepareSessionsFromBundles(f, item, response, requestedBundleIds(pending));
      }),
      retryListAfterBundleFailure: answer((f, pending, response) => {
        const item = entryForPurpose(f.ctx, pending.purpose);
        if (item !== undefined) retryListAfterBundleFailure(f, item, response);
      }),
      takeNextEnvelope: step((f) => {
        const [next, ...rest] = f.ctx.inbox;
        if (next === undefined) return;
        let parked = f.ctx.parked;
        if (f.ctx.drain?.kind === 'parked')
          parked = parked.filter((p) => p.envelope.envelopeId !== next.envelope.envelopeId);
        f.ctx = {
          ...f.ctx,
          inbox: rest,
          parked,
          inFlight: {
            envelope: next.envelope,
            listRefreshed: next.listRefreshed,
            received: null,
            payload: null,
            sighting: null,
            createdSession: false,
          },
        };
      }),
      skipParkedEnvelope: step((f) => {
        f.ctx = { ...f.ctx, inbox: f.ctx.inbox.slice(1) };
      }),
      rejectOwnSender: step((f) =>
        sayError(f, 'receive', 'TRUST_UNKNOWN_SENDER_DEVICE', 'envelope claims to come from this device'),
      ),
      parkEnvelopeQuietly: onEnvelope((f, envelope) => parkEnvelope(f, envelope, true)),
      parkEnvelope: onEnvelope((f, envelope) => parkEnvelope(f, envelope, false)),
      rejectUnlistedSender: onEnvelope((f, envelope) =>
        undecryptable(
          f,
          envelope,
          reject('TRUST_UNKNOWN_SENDER_DEVICE', 'sender device is not in its account list').error,
        ),
      ),
      answerRetryRequest: onEnvelope((f, envelope) => answerRetryRequest(f, envelope.sender, envelope.bytes)),
      acknowledgeEnvelope: onEnvelope((f, envelope) => {
        f.ctx = { ...f.ctx, acked: [...f.ctx.acked, envelope.envelopeId] };
      }),
      decryptEnvelope: onEnvelope((f, envelope) => {
        if (envelope.type === 'retry-request') return;
        const received = openFromSender(
          f.env,
          f.ctx.sesame,
          f.ctx.prekeys,
          envelope.sender,
          envelope.type,
          envelope.bytes,
          // WP-SES-18/19: sequential sessions when the device is hardened.
          f.ctx.options.sequentialSessions,
        );
        const inFlight = f.ctx.inFlight;
        if (inFlight === null) return;
        f.ctx = {
          ...f.ctx,
          inFlight: {
            ...inFlight,
            received,
            // WP-SES-20: placed on the sender's chains before anything is committed.
            sighting:
              received.ok && f.ctx.options.cloneDetection
                ? checkChainSighting(
                    f.ctx.chainSightings,
                    f.ctx.sesame,
                    received.value.sesame,
                    envelope.sender,
                    envelope,
                  )
                : null,
            createdSession:
              received.ok &&
              envelope.type === 'prekey' &&
              createsSession(f.ctx.sesame, envelope.sender, envelope.bytes),
          },
        };
      }),
      rejectReplayedInitialMessage: onEnvelope((f, envelope) =>
        // WP-PQXDH-13: reported like any undecryptable message; `requestRetry` follows.
        undecryptable(f, envelope, replayRefusal(envelope.bytes)),
      ),
      reportCloneDetected: onEnvelope((f, envelope) => {
        const sighting = f.ctx.inFlight?.sighting;
        // WP-SES-20: the message is refused and the fork reported.
        if (sighting?.kind === 'fork')
          say(f, { kind: 'clone-detected', from: envelope.sender, evidence: sighting.evidence });
      }),
      dropDuplicateEnvelope: onEnvelope((f, envelope) =>
        say(f, { kind: 'duplicate-dropped', from: envelope.sender, messageId: envelope.messageId }),
      ),
      reportUndecryptable: onEnvelope((f, envelope) => {
        const received = f.ctx.inFlight?.received;
        if (received !== null && received !== undefined && !received.ok)
          undecryptable(f, envelope, received.error);
      }),
      requestRetry: onEnvelope((f, envelope) => requestRetry(f, envelope.sender, envelope.messageId)),
      // WP-LIFE-06: the server handed out a key of a state this device lost: upload a new batch, whose
      // reused ids make the server drop the keys it cannot use (WP-SRV-09).
      restockPreKeys: step((f) => replenishPreKeys(f, true)),
      rejectIdentityMismatch: onEnvelope((f, envelope) =>
        undecryptable(
          f,
          envelope,
          reject('TRUST_SENDER_IDENTITY_MISMATCH', 'sender identity key differs from its device list').error,
        ),
      ),
      commitSessions: onEnvelope((f, envelope) => {
        const inFlight = f.ctx.inFlight;
        if (inFlight === null || inFlight.received === null || !inFlight.received.ok) return;
        const received = inFlight.received.value;
        const sighting = inFlight.sighting;
        f.ctx = {
          ...f.ctx,
          sesame: received.sesame,
          prekeys: received.prekeys,
          // WP-PQXDH-13: remember an accepted initial message made without a one-time prekey.
          initialMessages:
            f.ctx.options.initialReplayCache && inFlight.createdSession
              ? cacheAfterAccepting(f.ctx.initialMessages, received.prekeys, envelope.bytes)
              : f.ctx.initialMessages,
          // WP-SES-20: what this message showed of the sender's chains.
          chainSightings: sighting?.kind === 'consistent' ? sighting.sightings : f.ctx.chainSightings,
          inFlight: { ...inFlight, payload: decodePayload(received.plaintext) },
        };
        // An authenticated message from a sender who wrote first makes them reachable (WP-TRUST-01);
        // forged senders never get an entry, so the trust map stays bounded.
        if (trustFor(f.ctx, envelope.sender.userId) === undefined)
          putTrust(f, blankTrust(envelope.sender.userId));
        if (received.keyChanged)
          say(f, { kind: 'key-change', userId: envelope.sender.userId, deviceId: envelope.sender.deviceId });
      }),
      reportMalformedPayload: onEnvelope((f, envelope) => {
        const payload = f.ctx.inFlight?.payload;
        if (payload !== null && payload !== undefined && !payload.ok)
          undecryptable(f, envelope, payload.error);
      }),
      dropDuplicatePayload: onEnvelope((f, envelope) => {
        const payload = f.ctx.inFlight?.payload;
        if (payload?.ok === true)
          say(f, { kind: 'duplicate-dropped', from: envelope.sender, messageId: payload.value.messageId });
      }),
      rejectForeignSyncCopy: onEnvelope((f, envelope) =>
        undecryptable(
          f,
          envelope,
          reject('TRUST_UNKNOWN_SENDER_DEVICE', 'sync copy from another account').error,
        ),
      ),
      deliverPayload: onEnvelope((f, envelope) => {
        const payload = f.ctx.inFlight?.payload;
        if (payload?.ok !== true) return;
        const seen = [...f.ctx.seen, payload.value.messageId].slice(-MODEL_MAX_SEEN);
        f.ctx = { ...f.ctx, seen };
        say(f, { kind: 'delivered', from: envelope.sender, payload: payload.value });
      }),
      finishFetch: step((f) => {
        const acked = f.ctx.acked;
        f.ctx = { ...f.ctx, inFlight: null, acked: [], drain: null };
        finishFetch(f, acked);
      }),
      finishParkedDrain: step((f) => {
        const drain = f.ctx.drain;
        const acked = f.ctx.acked;
        f.ctx = { ...f.ctx, inFlight: null, acked: [], drain: null };
        if (drain?.kind !== 'parked') return;
        if (drain.count > 0) {
          acknowledge(f, acked);
          replenishPreKeys(f);
        }
        advanceSendsAwaitingList(f, drain.userId);
      }),
    },
  }).createMachine({
    id: 'device',
    context: ({ input }) => input.context,
    initial: 'creatingAccount',
    on: {
      // Lifecycle-independent behaviour (impl answers these in every phase).
      'timer.resend': { actions: 'resendUnanswered' },
      'user.acknowledge-key-change': { actions: 'acceptAccountKeyChange' },
      'user.send': { actions: 'rejectNotLinked' },
      'user.add-contact': { actions: 'rejectNotLinked' },
      'user.download': { actions: 'rejectNotLinked' },
      'user.link-device': { actions: 'rejectNotLinked' },
      'user.revoke-device': { actions: 'rejectNotLinked' },
      'net.response': [{ guard: not('responseAwaited') }, { actions: 'answerWhileNotLinked' }],
    },
    states: {
      creatingAccount: {
        always: [
          { guard: 'isPrimaryCreation', target: 'registering', actions: 'registerAccount' },
          { target: 'provisioning' },
        ],
      },
      provisioning: {
        initial: 'waiting',
        states: {
          waiting: {
            on: {
              'timer.poll-provisioning': [{ guard: 'relayPollInFlight' }, { actions: 'pollRelay' }],
              'net.response': [
                { guard: not('responseAwaited') },
                {
                  guard: answers('provision-get'),
                  target: 'verifying',
                  actions: 'readProvisionMessage',
                },
                { actions: 'answerWhileNotLinked' },
              ],
            },
          },
          verifying: {
            always: [
              { guard: 'relayEmpty', target: 'waiting' },
              {
                guard: 'provisionMessageValid',
                target: '#device.registering',
                actions: 'registerLinkedDevice',
              },
              { target: 'waiting', actions: 'rejectProvisionMessage' },
            ],
          },
        },
      },
      registering: {
        on: {
          'net.response': [
            { guard: not('responseAwaited') },
            {
              guard: and([answers('register'), 'registrationAccepted']),
              target: 'linked',
              actions: 'markLinked',
            },
            { guard: answers('register'), actions: 'reportRegistrationFailure' },
            { actions: 'answerWhileNotLinked' },
          ],
        },
      },
      linked: {
        initial: 'idle',
        always: [{ guard: 'deviceWasRevoked', target: 'revoked' }],
        states: {
          idle: {
            on: {
              'user.send': { actions: 'enqueueUserMessage' },
              'user.add-contact': { actions: 'pinContactLink' },
              'user.download': { actions: 'requestBlob' },
              'user.link-device': [
                { guard: not('isPrimary'), actions: 'rejectNotPrimary' },
                { guard: 'freeDeviceIdLeft', actions: 'signListWithNewDevice' },
                { actions: 'rejectNoFreeDeviceId' },
              ],
              'user.revoke-device': [
                { guard: not('isPrimary'), actions: 'rejectNotPrimary' },
                { guard: 'revocableDevice', actions: 'signListWithoutDevice' },
                { actions: 'rejectUnknownDevice' },
              ],
              'net.fetch': [{ guard: 'fetchInFlight' }, { actions: 'fetchMailbox' }],
              'timer.rotate-signed-prekey': [
                { guard: 'preKeyUploadInFlight', actions: 'deleteExpiredSignedPreKeys' },
                { actions: ['deleteExpiredSignedPreKeys', 'rotateSignedPreKey'] },
              ],
              'net.response': [
                { guard: not('responseAwaited') },
                // Fetched envelopes go through the receive pipeline one by one.
                {
                  guard: and([answers('fetch'), 'fetchDelivered']),
                  target: 'receiving',
                  actions: 'queueFetchedEnvelopes',
                },
                { guard: answers('fetch'), actions: 'reportFetchFailure' },
                // A device list: accepted (or refused), then the envelopes parked for it are decided.
                {
                  guard: answers('device-list'),
                  target: 'receiving',
                  actions: ['applyServedDeviceList', 'queueParkedEnvelopes'],
                },
                // Send answers (Sesame §3.3 steps 3–8).
                {
                  guard: and([answers('send'), not('outboxEntryExists')]),
                  actions: 'ignoreOrphanAnswer',
                },
                { guard: and([answers('send'), 'sendAccepted']), actions: 'completeAcceptedSend' },
                { guard: and([answers('send'), 'mailboxFull']), actions: 'holdForMailbox' },
                {
                  guard: and([
                    answers('send'),
                    'sendRefused',
                    'isRetryRequestSend',
                    'refusalCarriesList',
                    'withinSendAttempts',
                  ]),
                  actions: 'askAgainUnderServedList',
                },
                {
                  guard: and([answers('send'), 'sendRefused', 'isSingleDeviceSend']),
                  actions: 'failSingleDeviceSend',
                },
                {
                  guard: and([answers('send'), 'sendRefused', not('withinSendAttempts')]),
                  actions: 'failSendExhausted',
                },
                { guard: and([answers('send'), 'sendRefused']), actions: 'applySendRefusal' },
                { guard: answers('send'), actions: 'failSendWithServerError' },
                // Bundle answers (PrepEncrypt, WP-SES-03).
                {
                  guard: and([answers('bundles'), not('outboxEntryExists')]),
                  actions: 'ignoreOrphanAnswer',
                },
                {
                  guard: and([answers('bundles'), not('bundlesDelivered')]),
                  actions: 'retryListAfterBundleFailure',
                },
                {
                  guard: and([answers('bundles'), 'bundleMatchesList']),
                  actions: 'prepareSessionsFromBundles',
                },
                { guard: answers('bundles'), actions: 'rejectMismatchedBundles' },
                { guard: answers('upload-prekeys'), actions: 'confirmPreKeyUpload' },
                { guard: answers('link'), actions: 'sendProvisionMessage' },
                { guard: answers('revoke'), actions: 'acceptRevocationList' },
                { guard: answers('provision-put'), actions: 'reportProvisionPut' },
                { guard: answers('blob-put'), actions: 'releaseAttachmentSends' },
                { guard: answers('blob-get'), actions: 'decryptDownloadedAttachment' },
                { actions: 'ignoreAnswer' },
              ],
            },
          },
          receiving: {
            initial: 'next',
            states: {
              next: {
                always: [
                  { guard: 'inboxEmpty', target: 'finish' },
                  {
                    guard: 'nextEnvelopeAlreadyParked',
                    target: 'next',
                    reenter: true,
                    actions: 'skipParkedEnvelope',
                  },
                  { target: 'checkSender', actions: 'takeNextEnvelope' },
                ],
              },
              checkSender: {
                always: [
                  {
                    guard: 'senderIsOwnDevice',
                    target: 'next',
                    actions: ['rejectOwnSender', 'acknowledgeEnvelope'],
                  },
                  { guard: 'senderAccountKeyPending', target: 'next', actions: 'parkEnvelopeQuietly' },
                  { guard: 'senderListed', target: 'dispatchType' },
                  // WP-TRUST-01: it waits, unacknowledged, for a list matching a link the user adds.
                  {
                    guard: and(['listRefreshedSinceParked', 'senderAwaitsContactLink']),
                    target: 'next',
                    actions: 'parkEnvelopeQuietly',
                  },
                  {
                    guard: 'listRefreshedSinceParked',
                    target: 'next',
                    actions: ['rejectUnlistedSender', 'acknowledgeEnvelope'],
                  },
                  { target: 'next', actions: 'parkEnvelope' },
                ],
              },
              dispatchType: {
                always: [
                  // WP-XPORT-07: not acknowledged, so the server redelivers it once the send is answered.
                  { guard: and(['isRetryRequest', 'retryNamesUnansweredSend']), target: 'next' },
                  {
                    guard: 'isRetryRequest',
                    target: 'next',
                    actions: ['answerRetryRequest', 'acknowledgeEnvelope'],
                  },
                  {
                    guard: 'initialMessageReplayed',
                    target: 'next',
                    actions: ['rejectReplayedInitialMessage', 'requestRetry', 'acknowledgeEnvelope'],
                  },
                  { target: 'checkDecrypted', actions: 'decryptEnvelope' },
                ],
              },
              checkDecrypted: {
                always: [
                  {
                    guard: 'ratchetDuplicate',
                    target: 'next',
                    actions: ['dropDuplicateEnvelope', 'acknowledgeEnvelope'],
                  },
                  {
                    guard: and(['decryptionFailed', 'namesPreKeyNotYetMade']),
                    target: 'next',
                    actions: ['reportUndecryptable', 'requestRetry', 'restockPreKeys', 'acknowledgeEnvelope'],
                  },
                  {
                    guard: 'decryptionFailed',
                    target: 'next',
                    actions: ['reportUndecryptable', 'requestRetry', 'acknowledgeEnvelope'],
                  },
                  {
                    guard: 'forkEvidence',
                    target: 'next',
                    actions: ['reportCloneDetected', 'requestRetry', 'acknowledgeEnvelope'],
                  },
                  { target: 'checkIdentity' },
                ],
              },
              checkIdentity: {
                always: [
                  { guard: 'senderIdentityMatchesList', target: 'decodePayload', actions: 'commitSessions' },
                  {
                    guard: 'listRefreshedSinceParked',
                    target: 'next',
                    actions: ['rejectIdentityMismatch', 'acknowledgeEnvelope'],
                  },
                  { target: 'next', actions: 'parkEnvelope' },
                ],
              },
              decodePayload: {
                always: [
                  {
                    guard: not('payloadDecodes'),
                    target: 'next',
                    actions: ['reportMalformedPayload', 'acknowledgeEnvelope'],
                  },
                  {
                    guard: 'payloadAlreadySeen',
                    target: 'next',
                    actions: ['dropDuplicatePayload', 'acknowledgeEnvelope'],
                  },
                  {
                    guard: 'syncCopyFromOtherAccount',
                    target: 'next',
                    actions: ['rejectForeignSyncCopy', 'acknowledgeEnvelope'],
                  },
                  { target: 'next', actions: ['deliverPayload', 'acknowledgeEnvelope'] },
                ],
              },
              finish: {
                always: [
                  { guard: 'drainingFetch', target: '#device.linked.idle', actions: 'finishFetch' },
                  { target: '#device.linked.idle', actions: 'finishParkedDrain' },
                ],
              },
            },
          },
        },
      },
      revoked: {},
    },
  });
}

/** The device machine type. */
export type DeviceMachine = ReturnType<typeof createDeviceMachine>;

/** The parameterised guard "this answer is for a request of `purpose`". */
function answers(purpose: ModelPurpose['kind']): {
  readonly type: 'answers';
  readonly params: { readonly purpose: ModelPurpose['kind'] };
} {
  return { type: 'answers', params: { purpose } };
}

function userContext(type: string): string {
  switch (type) {
    case 'user.send':
      return 'send';
    case 'user.add-contact':
      return 'add-contact';
    case 'user.download':
      return 'download';
    case 'user.link-device':
      return 'link-device';
    case 'user.revoke-device':
      return 'revoke-device';
    default:
      return type;
  }
}

// ---------------------------------------------------------------------------------------------
// Factories and the synchronous runner

/** The hardened default: every switch on (spec/security-mode.ts `HARDENED_OPTIONS`). */
export const DEFAULT_MODEL_OPTIONS: ModelDeviceOptions = HARDENED_OPTIONS;

/** A running device machine driven synchronously: one input in, its outputs out. */
export interface DeviceModelRunner {
  /** Applies one input at time `now` and returns what the machine emitted, in order. */
  step(input: ModelDeviceInput, now: number): readonly ModelDeviceOutput[];
  /** The current context. */
  context(): DeviceContext;
  /** The statechart state value (for traces). */
  stateValue(): unknown;
  /** The states the last `step` passed through (for traces; simulator/TRACE-FORMAT.md `model`). */
  lastStep(): MachineStep;
  /** The underlying actor. */
  readonly actor: Actor<DeviceMachine>;
}

/** What a factory returns: the runner and the outputs of creation. */
export interface DeviceModelStart {
  readonly runner: DeviceModelRunner;
  readonly outputs: readonly ModelDeviceOutput[];
}

function baseContext(
  options: ModelDeviceOptions,
  prekeys: DeviceContext['prekeys'],
  lifecycle: DeviceContext['lifecycle'],
  userId: UserId,
  deviceId: DeviceId,
): DeviceContext {
  return {
    options,
    lifecycle,
    userId,
    deviceId,
    prekeys,
    nextPreKeyId: prekeys.oneTimePreKeys.length + 1,
    nextKyberPreKeyId: prekeys.kyberPreKeys.length + 1,
    retiredSignedPreKeys: [],
    accountPrivateKey: null,
    sesame: newSesame({ userId, deviceId }),
    trust: [],
    outbox: [],
    pending: [],
    nextRequestId: 1,
    seen: [],
    parked: [],
    linkedAt: 0,
    lastFullDrainAt: 0,
    initialMessages: [],
    chainSightings: [],
    inbox: [],
    inFlight: null,
    acked: [],
    drain: null,
    provisionCheck: null,
    creation: null,
  };
}

function startRunner(
  env: Env,
  input: DeviceMachineInput,
  restore?: { readonly context: DeviceContext; readonly value: unknown },
): DeviceModelStart {
  const machine = createDeviceMachine(env);
  const recorder = new StepRecorder();
  const actor =
    restore === undefined
      ? createActor(machine, { input, id: 'device', inspect: recorder.inspect })
      : createActor(machine, {
          input,
          id: 'device',
          inspect: recorder.inspect,
          snapshot: machine.resolveState({ value: restore.value as never, context: restore.context }),
        });
  let last: MachineStep | null = null;
  let collected: ModelDeviceOutput[] = [];
  actor.on('device.output', (event) => {
    collected.push(event.output);
  });
  actor.start();
  const outputs = collected;
  collected = [];
  const runner: DeviceModelRunner = {
    actor,
    step(deviceInput, now) {
      // A caller's grace period is checked before the machine sees it, as impl/ checks it.
      if (deviceInput.kind === 'timer.rotate-signed-prekey') {
        const gracePeriod = deviceInput.gracePeriod ?? SIGNED_PREKEY_GRACE_PERIOD;
        if (!Number.isSafeInteger(gracePeriod) || gracePeriod < 0)
          throw new UsageError(`gracePeriod must be a non-negative safe integer, got ${gracePeriod}`);
      }
      collected = [];
      const { kind, ...fields } = deviceInput;
      recorder.begin(actor, actor.getSnapshot().value);
      actor.send({ ...fields, type: kind, now } as DeviceEvent);
      last = recorder.end(actor.getSnapshot().value);
      const out = collected;
      collected = [];
      return out;
    },
    context: () => actor.getSnapshot().context,
    stateValue: () => actor.getSnapshot().value,
    lastStep: () => {
      if (last !== null) return last;
      const state = stateId(actor.getSnapshot().value);
      return { path: [state], state };
    },
  };
  return { runner, outputs };
}

function primaryWithList(
  env: Env,
  userId: UserId,
  version: number,
  now: number,
  options: ModelDeviceOptions,
): DeviceModelStart {
  const prekeys = drawPreKeys(env, EC_PREKEY_BATCH, KYBER_BATCH);
  const accountKey = generateKeyPair(env.crypto, env.rng);
  const list: DeviceList = {
    userId,
    version,
    accountKey: accountKey.publicKey,
    devices: [
      {
        deviceId: PRIMARY_DEVICE_ID,
        identityKey: prekeys.identityKeyPair.publicKey,
        registrationId: prekeys.registrationId,
      },
    ],
  };
  const signedList = signDeviceList(env.crypto, accountKey.privateKey, list, env.rng.randomBytes(64));
  const context: DeviceContext = {
    ...baseContext(options, prekeys, { kind: 'registering' }, userId, PRIMARY_DEVICE_ID),
    accountPrivateKey: accountKey.privateKey,
    creation: { accountPublicKey: accountKey.publicKey, signedList },
    trust: [
      {
        userId,
        accountKey: accountKey.publicKey,
        pendingAccountKey: null,
        expectedFingerprint: null,
        list,
        listBytes: signedList.list,
      },
    ],
  };
  void now;
  return startRunner(env, { mode: 'primary', context });
}

/** WP-LIFE-01: a new account's primary device, registering (impl's `createPrimaryDevice`). */
export function createPrimaryDeviceModel(
  env: Env,
  userId: UserId,
  now: number,
  options: ModelDeviceOptions = DEFAULT_MODEL_OPTIONS,
): DeviceModelStart {
  return primaryWithList(env, userId, 1, now, options);
}

/** WP-LIFE-05: a lost primary resets the account with a new account key (impl's `resetPrimaryDevice`). */
export function resetPrimaryDeviceModel(
  env: Env,
  userId: UserId,
  previousListVersion: number,
  now: number,
  options: ModelDeviceOptions = DEFAULT_MODEL_OPTIONS,
): DeviceModelStart {
  return primaryWithList(env, userId, previousListVersion + 1, now, options);
}

/**
 * A device machine resumed from a context and state value it held at rest (a backup restored: the
 * simulator's rollback fault). Nothing is emitted on resumption.
 */
export function resumeDeviceModel(env: Env, context: DeviceContext, stateValue: unknown): DeviceModelRunner {
  return startRunner(env, { mode: 'provisioning', context }, { context, value: stateValue }).runner;
}

/** WP-LIFE-03: a device to be linked, showing its provisioning code (impl's `createProvisioningDevice`). */
export function createProvisioningDeviceModel(
  env: Env,
  now: number,
  options: ModelDeviceOptions = DEFAULT_MODEL_OPTIONS,
): DeviceModelStart & { readonly code: ProvisioningCode } {
  const prekeys = drawPreKeys(env, EC_PREKEY_BATCH, KYBER_BATCH);
  const ephemeralKey = generateKeyPair(env.crypto, env.rng);
  const relayAddress = relayAddressFromBytes(env.rng.randomBytes(RELAY_ADDRESS_BYTES));
  const context = baseContext(
    options,
    prekeys,
    { kind: 'provisioning', relayAddress, ephemeralKey },
    'unlinked',
    PRIMARY_DEVICE_ID,
  );
  const code: ProvisioningCode = {
    relayAddress,
    ephemeralPublicKey: ephemeralKey.publicKey,
    identityKey: prekeys.identityKeyPair.publicKey,
    registrationId: prekeys.registrationId,
  };
  void now;
  return { ...startRunner(env, { mode: 'provisioning', context }), code };
}

// ---------------------------------------------------------------------------------------------
// Abstraction (spec/device-abstract.ts)

/** Projects the machine's context onto the abstract device state both engines report. */
export function abstractDeviceOf(c: CryptoProvider, context: DeviceContext): DeviceAbstract {
  const byText = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);
  return {
    lifecycle: context.lifecycle.kind,
    address: { userId: context.userId, deviceId: context.deviceId },
    sesame: abstractModelSesame(c, context.sesame),
    trust: [...context.trust]
      .sort((a, b) => byText(a.userId, b.userId))
      .map((t) => ({
        userId: t.userId,
        accountKeyFp: t.accountKey === null ? null : fingerprint(c, t.accountKey),
        pendingAccountKeyChange: t.pendingAccountKey !== null,
        listVersion: t.list?.version ?? null,
      })),
    outbox: context.outbox
      .map((i) => ({
        messageId: i.messageId,
        recipient: i.recipient,
        kind: i.kind,
        stage: i.stage,
        attempts: i.attempts,
      }))
      .sort((a, b) => byText(a.messageId, b.messageId) || byText(a.recipient, b.recipient)),
    pending: context.pending
      .map((p) => ({ requestId: p.requestId, kind: p.request.kind }))
      .sort((a, b) => a.requestId - b.requestId),
    seenCount: context.seen.length,
    parkedEnvelopeIds: context.parked.map((p) => p.envelope.envelopeId),
    oneTimePreKeyIds: context.prekeys.oneTimePreKeys.map((k) => k.keyId),
    kyberPreKeyIds: context.prekeys.kyberPreKeys.map((k) => k.keyId),
    signedPreKeyIds: context.prekeys.signedPreKeys.map((k) => k.keyId),
    retiredSignedPreKeyIds: context.retiredSignedPreKeys.map((r) => r.keyId),
    initialMessages: context.initialMessages.length,
    chainSightings: context.chainSightings.length,
  };
}

/** Re-exported for tests that build inputs. */
export type { AttachmentPointer, ContactLink, ModelSendContent };
