/**
 * The device machine's decision helpers (model/device.ts): each is a pure step on a `Frame` (the
 * context so far and the outputs so far), named after what the whitepaper rule does. The machine's
 * guards and actions call them; nothing here knows about xstate. WHITEPAPER.md "Device lists and
 * trust" WP-TRUST-01..07, "Transport" WP-XPORT-01..09, "Device lifecycle" WP-LIFE-01..08, Sesame
 * rev 2 §3.3 (the client's send loop) and §4.1 (retry requests).
 *
 * Written for model/ on spec/ and model/ only; the conformance suite replays the same inputs on
 * impl/device.ts and requires identical outputs, draws and abstract state.
 * @module
 */
import { decryptAttachment, encryptAttachment, type AttachmentPointer } from '../spec/attachment.js';
import { planted } from '../spec/bugs.js';
import { equalBytes } from '../spec/bytes.js';
import {
  MAX_DEVICES_PER_ACCOUNT,
  MAX_ONE_TIME_PREKEYS,
  MAX_SEND_ATTEMPTS,
  MAX_SIGNED_PREKEYS,
} from '../spec/constants.js';
import { checkContactLink, type ContactLink } from '../spec/contact-link.js';
import {
  decodeDeviceList,
  registrationProofMessage,
  signAccountCertificate,
  signDeviceList,
  signRegistrationProof,
  verifyAccountCertificate,
  verifySignedDeviceList,
} from '../spec/device-list.js';
import type { DeviceList, DeviceListEntry, SignedDeviceList } from '../spec/device-list-types.js';
import type { Env } from '../spec/env.js';
import {
  accept,
  InvariantError,
  reject,
  type ErrorCode,
  type ProtocolError,
  type Result,
} from '../spec/errors.js';
import { toHex } from '../spec/hex.js';
import {
  MAX_DEVICE_ID,
  PRIMARY_DEVICE_ID,
  type DeviceAddress,
  type DeviceId,
  type MessageId,
  type UserId,
} from '../spec/identity.js';
import { encodePayload, type PayloadContent } from '../spec/payload.js';
import {
  decodeProvisionMessage,
  decryptProvisionEnvelope,
  encodeProvisionMessage,
  encryptProvisionEnvelope,
  type ProvisioningCode,
} from '../spec/provisioning.js';
import { decodeRetryRequest, encodeRetryRequest } from '../spec/retry-request.js';
import type {
  Envelope,
  PreKeyUpload,
  SendRefusal,
  ServerRequest,
  ServerResponse,
} from '../spec/server-api.js';
import type {
  DeviceContext,
  ModelDeviceOutput,
  ModelOutboxEntry,
  ModelPending,
  ModelPurpose,
  ModelSendContent,
  ModelTrust,
} from './device-data.js';
import {
  applyRefusal,
  conditionalUpdateFromList,
  decideRetry,
  devicesWithoutSession,
  dropExpiredStaleRecords,
  markDeviceRecordStale,
  newSesame,
  prepareSession,
  rememberSentCopy,
  sealForOneDevice,
  sealForUser,
  userRecord,
  withoutUser,
  withUser,
  type ModelMessageRecord,
  type SessionsUsed,
} from './sesame.js';
import {
  drawKyberPreKey,
  drawOneTimePreKey,
  drawSignedPreKey,
  parsePreKeySignalMessage,
  type ModelPreKeys,
} from './sesame-sessions.js';

/** Received payload ids remembered to drop duplicates (WP-XPORT-02). */
export const MODEL_MAX_SEEN = 4_096;
/** Outbox entries held at once. */
export const MODEL_MAX_OUTBOX = 1_024;
/** Envelopes parked while their sender's list is fetched. */
export const MODEL_MAX_PARKED = 1_024;
/** WP-LIFE-06: one-time EC prekeys per batch and the low-water mark. */
export const EC_PREKEY_BATCH = 10;
export const EC_PREKEY_LOW_WATER = 3;
/** WP-LIFE-06: one-time Kyber prekeys per batch and the low-water mark. */
export const KYBER_BATCH = 2;
export const KYBER_LOW_WATER = 1;

/** One step's working frame: the context so far and the outputs so far. Never escapes a step. */
export interface Frame {
  ctx: DeviceContext;
  readonly out: ModelDeviceOutput[];
  readonly env: Env;
  readonly now: number;
}

// ---------------------------------------------------------------------------------------------
// Small helpers

/** The device's own address. */
export function ownAddress(ctx: DeviceContext): DeviceAddress {
  return { userId: ctx.userId, deviceId: ctx.deviceId };
}

/** Appends an output. */
export function say(f: Frame, output: ModelDeviceOutput): void {
  f.out.push(output);
}

/** Appends an `error` output. */
export function sayError(f: Frame, context: string, code: ErrorCode, message: string): void {
  say(f, { kind: 'error', context, error: reject(code, message).error });
}

/** WP-XPORT-01: a request goes out with a fresh request id and is remembered until answered. */
export function issueRequest(f: Frame, purpose: ModelPurpose, request: ServerRequest): void {
  const requestId = f.ctx.nextRequestId;
  f.ctx = {
    ...f.ctx,
    nextRequestId: requestId + 1,
    pending: [...f.ctx.pending, { requestId, request, purpose }],
  };
  say(f, { kind: 'request', requestId, request });
}

/** A server answer as a typed error. */
export function serverErrorOf(response: ServerResponse): ProtocolError {
  if (response.kind === 'error')
    return { code: response.code, rule: response.rule, message: response.message };
  return reject('XPORT_SERVER_ERROR', `unexpected server answer ${response.kind}`).error;
}

/** The trust entry for a user. */
export function trustFor(ctx: DeviceContext, userId: UserId): ModelTrust | undefined {
  return ctx.trust.find((t) => t.userId === userId);
}

/** Stores a trust entry (sorted by user id). */
export function putTrust(f: Frame, entry: ModelTrust): void {
  const others = f.ctx.trust.filter((t) => t.userId !== entry.userId);
  f.ctx = {
    ...f.ctx,
    trust: [...others, entry].sort((a, b) => (a.userId < b.userId ? -1 : a.userId > b.userId ? 1 : 0)),
  };
}

/** A trust entry that knows nothing yet. */
export function blankTrust(userId: UserId): ModelTrust {
  return {
    userId,
    accountKey: null,
    pendingAccountKey: null,
    expectedFingerprint: null,
    list: null,
    listBytes: null,
  };
}

/** The devices of a user one may encrypt to: the latest accepted list minus oneself. */
export function listedEntries(ctx: DeviceContext, userId: UserId): readonly DeviceListEntry[] | null {
  const list = trustFor(ctx, userId)?.list ?? null;
  if (list === null) return null;
  return list.devices.filter((d) => !(userId === ctx.userId && d.deviceId === ctx.deviceId));
}

/** A fresh 16-byte message id (WP-XPORT-01). */
export function drawMessageId(f: Frame): MessageId {
  return toHex(f.env.rng.randomBytes(16));
}

/** The public prekeys as the server stores them (all, or only those from the given ids on). */
export function preKeyUploadOf(
  prekeys: ModelPreKeys,
  onlyNew?: { readonly fromPreKeyId: number; readonly fromKyberId: number },
): PreKeyUpload {
  const signed = prekeys.signedPreKeys[prekeys.signedPreKeys.length - 1];
  if (signed === undefined) throw new Error('device has no signed prekey');
  return {
    signedPreKey: { keyId: signed.keyId, publicKey: signed.keyPair.publicKey, signature: signed.signature },
    oneTimePreKeys: prekeys.oneTimePreKeys
      .filter((k) => onlyNew === undefined || k.keyId >= onlyNew.fromPreKeyId)
      .map((k) => ({ keyId: k.keyId, publicKey: k.keyPair.publicKey })),
    kyberPreKeys: prekeys.kyberPreKeys
      .filter((k) => onlyNew === undefined || k.lastResort || k.keyId >= onlyNew.fromKyberId)
      .map((k) => ({
        keyId: k.keyId,
        publicKey: k.publicKey,
        signature: k.signature,
        lastResort: k.lastResort,
      })),
  };
}

/** Finds the pending request an answer is for. */
export function pendingFor(ctx: DeviceContext, requestId: number): ModelPending | undefined {
  return ctx.pending.find((p) => p.requestId === requestId);
}

/** Removes an answered request (an answer is used once: a duplicate is then ignored). */
export function takePending(f: Frame, requestId: number): void {
  f.ctx = { ...f.ctx, pending: f.ctx.pending.filter((p) => p.requestId !== requestId) };
}

// ---------------------------------------------------------------------------------------------
// Lifecycle (WP-LIFE-*)

/** WP-LIFE-01: the error a device that is not linked answers a user action with. */
export function rejectNotLinked(f: Frame, context: string): void {
  sayError(
    f,
    context,
    f.ctx.lifecycle.kind === 'revoked' ? 'LIFE_REVOKED' : 'LIFE_NOT_LINKED',
    `device is ${f.ctx.lifecycle.kind}`,
  );
}

/** WP-LIFE-04: the device learns it was revoked; its outbox and parked envelopes are dropped by rule. */
export function becomeRevoked(f: Frame): void {
  if (f.ctx.lifecycle.kind === 'revoked') return;
  f.ctx = { ...f.ctx, lifecycle: { kind: 'revoked' }, outbox: [], parked: [], pending: [] };
  say(f, { kind: 'revoked' });
}

/** WP-LIFE-01: a primary registers the account with a proof of possession of its identity key. */
export function registerAccount(f: Frame, accountPublicKey: Uint8Array, signedList: SignedDeviceList): void {
  const address = ownAddress(f.ctx);
  const identityKey = f.ctx.prekeys.identityKeyPair.publicKey;
  const message = registrationProofMessage(
    address,
    identityKey,
    f.ctx.prekeys.registrationId,
    accountPublicKey,
  );
  const proof = signRegistrationProof(
    f.env.crypto,
    f.ctx.prekeys.identityKeyPair.privateKey,
    message,
    f.env.rng.randomBytes(64),
  );
  issueRequest(
    f,
    { kind: 'register' },
    {
      kind: 'register-account',
      device: address,
      identityKey,
      registrationId: f.ctx.prekeys.registrationId,
      deviceList: signedList,
      proof,
      preKeys: preKeyUploadOf(f.ctx.prekeys),
    },
  );
}

/** WP-LIFE-03: registered with the server: from now on the device receives. */
export function markLinked(f: Frame): void {
  f.ctx = { ...f.ctx, lifecycle: { kind: 'linked' }, linkedAt: f.now };
  say(f, { kind: 'linked', address: ownAddress(f.ctx) });
}

/** WP-LIFE-03: asks the relay for the provision message (once at a time). */
export function pollRelay(f: Frame): void {
  const lifecycle = f.ctx.lifecycle;
  if (lifecycle.kind !== 'provisioning') return;
  issueRequest(f, { kind: 'provision-get' }, { kind: 'provision-get', address: lifecycle.relayAddress });
}

/**
 * WP-LIFE-03: reads the relay's answer: opens the envelope, decodes the message, verifies the
 * signed list, checks it names this device with its own keys and that the account certificate
 * verifies. The outcome is stored for the machine's guard; nothing else changes.
 */
export function readProvisionMessage(f: Frame, response: ServerResponse): void {
  const lifecycle = f.ctx.lifecycle;
  if (lifecycle.kind !== 'provisioning' || response.kind !== 'provision' || response.bytes === null) {
    f.ctx = { ...f.ctx, provisionCheck: null };
    return;
  }
  const c = f.env.crypto;
  const fail = (reason: string): void => {
    f.ctx = { ...f.ctx, provisionCheck: { ok: false, reason } };
  };
  const opened = decryptProvisionEnvelope(c, lifecycle.ephemeralKey.privateKey, response.bytes);
  if (!opened.ok) return fail(`envelope: ${opened.error.code}`);
  const message = decodeProvisionMessage(opened.value);
  if (!message.ok) return fail(`message: ${message.error.code}`);
  const list = verifySignedDeviceList(c, message.value.deviceList, message.value.userId);
  if (!list.ok) return fail(`device list: ${list.error.code}`);
  const me = list.value.devices.find((d) => d.deviceId === message.value.deviceId);
  const identityKey = f.ctx.prekeys.identityKeyPair.publicKey;
  if (
    me === undefined ||
    !equalBytes(me.identityKey, identityKey) ||
    me.registrationId !== f.ctx.prekeys.registrationId
  )
    return fail('the list does not contain this device');
  if (!verifyAccountCertificate(c, list.value.accountKey, identityKey, message.value.accountCertificate))
    return fail('account certificate does not verify');
  f.ctx = {
    ...f.ctx,
    provisionCheck: {
      ok: true,
      address: { userId: message.value.userId, deviceId: message.value.deviceId },
      list: list.value,
      listBytes: message.value.deviceList.list,
    },
  };
}

/** WP-LIFE-03: a provision message that fails a check is reported; the device keeps waiting. */
export function rejectProvisionMessage(f: Frame): void {
  const check = f.ctx.provisionCheck;
  if (check !== null && !check.ok) sayError(f, 'provision', 'LIFE_PROVISION_INVALID', check.reason);
  f.ctx = { ...f.ctx, provisionCheck: null };
}

/** WP-LIFE-03: the verified new device takes its address and registers with a proof. */
export function registerLinkedDevice(f: Frame): void {
  const check = f.ctx.provisionCheck;
  if (check === null || !check.ok) return;
  const address = check.address;
  const identityKey = f.ctx.prekeys.identityKeyPair.publicKey;
  const proofMessage = registrationProofMessage(
    address,
    identityKey,
    f.ctx.prekeys.registrationId,
    check.list.accountKey,
  );
  const proof = signRegistrationProof(
    f.env.crypto,
    f.ctx.prekeys.identityKeyPair.privateKey,
    proofMessage,
    f.env.rng.randomBytes(64),
  );
  f.ctx = {
    ...f.ctx,
    lifecycle: { kind: 'registering' },
    userId: address.userId,
    deviceId: address.deviceId,
    sesame: newSesame(address),
    trust: [
      {
        userId: address.userId,
        accountKey: check.list.accountKey,
        pendingAccountKey: null,
        expectedFingerprint: null,
        list: check.list,
        listBytes: check.listBytes,
      },
    ],
    provisionCheck: null,
  };
  issueRequest(
    f,
    { kind: 'register' },
    {
      kind: 'register-device',
      device: address,
      identityKey,
      registrationId: f.ctx.prekeys.registrationId,
      proof,
      preKeys: preKeyUploadOf(f.ctx.prekeys),
    },
  );
}

/** WP-LIFE-06: below the low-water marks, draw a batch and upload it (one upload at a time). */
export function replenishPreKeys(f: Frame, restock = false): void {
  const prekeys = f.ctx.prekeys;
  const ecHeld = prekeys.oneTimePreKeys.length;
  const kyberHeld = prekeys.kyberPreKeys.filter((k) => !k.lastResort).length;
  // WP-LIFE-06: a restock (the server hands out keys this device no longer has) makes a batch of
  // every kind held fewer than MAX_ONE_TIME_PREKEYS times; the bound keeps forged evidence from
  // growing the key store without end.
  const needEc = restock ? ecHeld < MAX_ONE_TIME_PREKEYS : ecHeld < EC_PREKEY_LOW_WATER;
  const needKyber = restock ? kyberHeld < MAX_ONE_TIME_PREKEYS : kyberHeld < KYBER_LOW_WATER;
  if (!needEc && !needKyber) return;
  if (f.ctx.pending.some((p) => p.purpose.kind === 'upload-prekeys')) return;
  const fromPreKeyId = f.ctx.nextPreKeyId;
  const fromKyberId = f.ctx.nextKyberPreKeyId;
  let nextPreKeyId = fromPreKeyId;
  let nextKyberPreKeyId = fromKyberId;
  const oneTimePreKeys = [...prekeys.oneTimePreKeys];
  const kyberPreKeys = [...prekeys.kyberPreKeys];
  if (needEc)
    for (let i = 0; i < EC_PREKEY_BATCH; i++) oneTimePreKeys.push(drawOneTimePreKey(f.env, nextPreKeyId++));
  if (needKyber)
    for (let i = 0; i < KYBER_BATCH; i++)
      kyberPreKeys.push(drawKyberPreKey(f.env, prekeys.identityKeyPair, nextKyberPreKeyId++, false));
  const updated: ModelPreKeys = { ...prekeys, oneTimePreKeys, kyberPreKeys };
  f.ctx = { ...f.ctx, prekeys: updated, nextPreKeyId, nextKyberPreKeyId };
  issueRequest(
    f,
    { kind: 'upload-prekeys' },
    {
      kind: 'upload-prekeys',
      device: ownAddress(f.ctx),
      preKeys: preKeyUploadOf(updated, { fromPreKeyId, fromKyberId }),
    },
  );
}

/**
 * WP-LIFE-06: the envelope is a PreKey message naming a one-time EC or Kyber prekey id this device
 * has not given out yet (at or above its next id of that kind): it was made from a key that a later
 * state of this device uploaded, a state it lost when it was restored from an older copy.
 */
export function namesPreKeyNotYetMade(ctx: DeviceContext, envelope: Envelope): boolean {
  if (envelope.type !== 'prekey') return false;
  const message = parsePreKeySignalMessage(envelope.bytes);
  if (!message.ok) return false;
  const ecId = message.value.preKeyId;
  if (ecId !== undefined && ecId >= ctx.nextPreKeyId) return true;
  return message.value.kyberPreKeyId >= ctx.nextKyberPreKeyId;
}

/** True while a prekey upload waits for its answer (uploads go one at a time, WP-LIFE-06/07). */
export function preKeyUploadInFlight(ctx: DeviceContext): boolean {
  return ctx.pending.some((p) => p.purpose.kind === 'upload-prekeys');
}

/**
 * WP-LIFE-07: the next signed prekey (the newest id plus one; a key pair, then its signature's
 * nonce), kept with at most MAX_SIGNED_PREKEYS held (the oldest goes first), and uploaded with the
 * last-resort Kyber prekey and no one-time keys. The machine runs it only with no upload in flight.
 */
export function rotateSignedPreKey(f: Frame): void {
  const prekeys = f.ctx.prekeys;
  const newest = prekeys.signedPreKeys.at(-1);
  if (newest === undefined) throw new InvariantError('a linked device holds a signed prekey');
  const all = [...prekeys.signedPreKeys, drawSignedPreKey(f.env, prekeys.identityKeyPair, newest.keyId + 1)];
  // WP-LIFE-07: the store is bounded; beyond MAX_SIGNED_PREKEYS the oldest key is deleted.
  const signedPreKeys = all.length > MAX_SIGNED_PREKEYS ? all.slice(all.length - MAX_SIGNED_PREKEYS) : all;
  const updated: ModelPreKeys = { ...prekeys, signedPreKeys };
  f.ctx = {
    ...f.ctx,
    prekeys: updated,
    retiredSignedPreKeys: f.ctx.retiredSignedPreKeys.filter((r) =>
      signedPreKeys.some((k) => k.keyId === r.keyId),
    ),
  };
  issueRequest(
    f,
    { kind: 'upload-prekeys' },
    {
      kind: 'upload-prekeys',
      device: ownAddress(f.ctx),
      preKeys: preKeyUploadOf(updated, {
        fromPreKeyId: f.ctx.nextPreKeyId,
        fromKyberId: f.ctx.nextKyberPreKeyId,
      }),
    },
  );
}

/**
 * WP-LIFE-08: deletes the retired signed prekeys whose grace period has run out by `f.now`; a
 * PreKey message naming one is then refused as naming an unknown signed prekey (WP-PQXDH-05).
 */
export function deleteExpiredSignedPreKeys(f: Frame, gracePeriod: number): void {
  // WP-LIFE-08: kept while younger than the grace period, counted from retirement.
  const keep = f.ctx.retiredSignedPreKeys.filter((r) => f.now - r.retiredAt < gracePeriod);
  if (keep.length === f.ctx.retiredSignedPreKeys.length) return;
  const expired = f.ctx.retiredSignedPreKeys.filter((r) => !keep.includes(r)).map((r) => r.keyId);
  f.ctx = {
    ...f.ctx,
    prekeys: {
      ...f.ctx.prekeys,
      signedPreKeys: f.ctx.prekeys.signedPreKeys.filter((k) => !expired.includes(k.keyId)),
    },
    retiredSignedPreKeys: keep,
  };
}

/**
 * WP-LIFE-06, WP-LIFE-08: the answer to a prekey upload. An error is reported. Success means the
 * server now stores the uploaded signed prekey or a newer one (WP-SRV-28) and hands out nothing
 * older, so every older signed prekey not yet retired starts its grace period; then one-time keys
 * used up while the upload was in flight are replenished.
 */
export function confirmPreKeyUpload(f: Frame, pending: ModelPending, response: ServerResponse): void {
  if (response.kind === 'error') {
    say(f, { kind: 'error', context: 'upload-prekeys', error: serverErrorOf(response) });
    return;
  }
  if (pending.request.kind === 'upload-prekeys') {
    // WP-LIFE-08: a confirmed upload retires every older key held; its grace period starts now.
    const confirmed = pending.request.preKeys.signedPreKey.keyId;
    const retired = f.ctx.retiredSignedPreKeys;
    const newlyRetired = f.ctx.prekeys.signedPreKeys
      .filter((k) => k.keyId < confirmed && retired.every((r) => r.keyId !== k.keyId))
      .map((k) => ({ keyId: k.keyId, retiredAt: f.now }));
    if (newlyRetired.length > 0) f.ctx = { ...f.ctx, retiredSignedPreKeys: [...retired, ...newlyRetired] };
  }
  replenishPreKeys(f);
}

// ---------------------------------------------------------------------------------------------
// Trust (WP-TRUST-*)

/** Asks for a user's device list unless a request is already in flight. */
export function requestList(f: Frame, userId: UserId): void {
  if (f.ctx.pending.some((p) => p.purpose.kind === 'device-list' && p.purpose.userId === userId)) return;
  issueRequest(f, { kind: 'device-list', userId }, { kind: 'get-device-list', userId });
}

/** WP-TRUST-01: a chat starts from a contact link; its fingerprint binds the first list. */
export function pinContactLink(f: Frame, link: ContactLink): void {
  const existing = trustFor(f.ctx, link.userId);
  putTrust(f, { ...(existing ?? blankTrust(link.userId)), expectedFingerprint: link });
  requestList(f, link.userId);
}

/** WP-TRUST-04: the user accepts a changed account key; the list is fetched again under it. */
export function acceptAccountKeyChange(f: Frame, userId: UserId): void {
  // WP-LIFE-01: only a linked device acts on the user's acknowledgment.
  if (f.ctx.lifecycle.kind !== 'linked') return;
  const entry = trustFor(f.ctx, userId);
  if (entry === undefined || entry.pendingAccountKey === null) return;
  putTrust(f, {
    ...entry,
    accountKey: entry.pendingAccountKey,
    pendingAccountKey: null,
    list: null,
    listBytes: null,
  });
  for (const item of f.ctx.outbox)
    if (item.recipient === userId && item.stage === 'blocked')
      patchEntry(f, item.messageId, item.recipient, { stage: 'need-list' });
  requestList(f, userId);
}

/** WP-TRUST-02 (signed mode): the list verifies under the account-key signature for the user asked for. */
export function listSignedByAccountKey(
  f: Frame,
  userId: UserId,
  signed: SignedDeviceList,
): Result<DeviceList> {
  const verified = verifySignedDeviceList(f.env.crypto, signed, userId);
  if (!verified.ok) return reject('TRUST_LIST_INVALID', `device list refused: ${verified.error.code}`);
  return verified;
}

/** WP-TRUST-04: the list is under the pinned account key (or nothing is pinned yet). */
export function listUnderPinnedAccountKey(entry: ModelTrust, list: DeviceList): boolean {
  return entry.accountKey === null || equalBytes(entry.accountKey, list.accountKey);
}

/** WP-TRUST-03: the list is not older than the one accepted. */
export function listNotOlderThanAccepted(entry: ModelTrust, list: DeviceList): boolean {
  return entry.list === null || list.version >= entry.list.version;
}

/**
 * Accepts a served device list if the trust rules allow it (WP-TRUST-01..04, WP-TRUST-07): updates
 * the trust entry, emits the change events, marks removed devices stale, and notices this device's
 * own revocation (WP-LIFE-04). Server mode (Sesame rev 2) takes the server's word.
 */
export function acceptServedList(f: Frame, userId: UserId, signed: SignedDeviceList): Result<DeviceList> {
  const entry = trustFor(f.ctx, userId) ?? blankTrust(userId);
  let list: DeviceList;
  if (f.ctx.options.deviceListAuth === 'signed') {
    const verified = listSignedByAccountKey(f, userId, signed);
    if (!verified.ok) return verified;
    list = verified.value;
    if (entry.expectedFingerprint !== null && entry.accountKey === null) {
      // WP-TRUST-01: the first list must match the contact link.
      const matches = checkContactLink(f.env.crypto, entry.expectedFingerprint, {
        userId,
        accountKey: list.accountKey,
      });
      if (!matches.ok) {
        failEntriesFor(f, userId, matches.error);
        return matches;
      }
    }
    if (!listUnderPinnedAccountKey(entry, list)) {
      // WP-TRUST-04
      if (entry.pendingAccountKey === null || !equalBytes(entry.pendingAccountKey, list.accountKey)) {
        putTrust(f, { ...entry, pendingAccountKey: list.accountKey });
        say(f, { kind: 'key-change', userId, deviceId: null });
      }
      return reject('TRUST_ACCOUNT_KEY_CHANGED', 'account key changed; waiting for acknowledgment');
    }
    if (entry.list !== null && entry.listBytes !== null) {
      // WP-TRUST-03
      if (!listNotOlderThanAccepted(entry, list))
        return reject('TRUST_LIST_ROLLBACK', 'device list older than one already accepted');
      if (list.version === entry.list.version) {
        if (!equalBytes(signed.list, entry.listBytes))
          return reject('TRUST_LIST_EQUIVOCATION', 'two different lists with one version');
        if (entry.pendingAccountKey !== null) putTrust(f, { ...entry, pendingAccountKey: null });
        return accept(list);
      }
    }
  } else {
    const decoded = decodeDeviceList(signed.list);
    if (!decoded.ok) return reject('TRUST_LIST_INVALID', `device list malformed: ${decoded.error.code}`);
    if (decoded.value.userId !== userId)
      return reject('TRUST_LIST_INVALID', 'device list names another user');
    list = decoded.value;
    if (entry.listBytes !== null && equalBytes(entry.listBytes, signed.list)) return accept(list);
  }
  const before = (entry.list?.devices ?? []).map((d) => d.deviceId);
  const after = list.devices.map((d) => d.deviceId);
  const added = after.filter((d, i) => !before.includes(d) && after.indexOf(d) === i);
  const removed = before.filter((d, i) => !after.includes(d) && before.indexOf(d) === i);
  putTrust(f, {
    ...entry,
    accountKey: entry.accountKey ?? list.accountKey,
    pendingAccountKey: null,
    list,
    listBytes: signed.list,
    expectedFingerprint: null,
  });
  // WP-TRUST-07
  say(f, { kind: 'device-list-changed', userId, version: list.version, added, removed });
  // WP-TRUST-07: every device record the list does not name becomes stale, including records kept
  // through an acknowledged account-key change (which discards the list they came from).
  const unnamedRecords = (userRecord(f.ctx.sesame, userId)?.devices ?? [])
    .map((d) => d.deviceId)
    .filter((d) => !after.includes(d));
  for (const deviceId of unnamedRecords) {
    if (userId === f.ctx.userId && deviceId === f.ctx.deviceId) continue;
    // Planted bug (simulator self-test only): `ignore-device-removal` keeps removed devices current.
    if (planted(f.env.bugs, 'ignore-device-removal')) continue;
    f.ctx = { ...f.ctx, sesame: markDeviceRecordStale(f.ctx.sesame, userId, deviceId, f.now) };
  }
  // WP-LIFE-04: our own account's list no longer names us.
  if (userId === f.ctx.userId && !after.includes(f.ctx.deviceId) && f.ctx.lifecycle.kind === 'linked')
    becomeRevoked(f);
  return accept(list);
}

/**
 * The first half of a device-list answer: accept it (or report why not), move the sends waiting
 * for it (blocked, failed, or asked again within MAX_SEND_ATTEMPTS, WP-XPORT-03), and mark the
 * envelopes parked for this user as decidable (WP-TRUST-05).
 */
export function applyServedDeviceList(f: Frame, userId: UserId, response: ServerResponse): void {
  let refused: ProtocolError | null = null;
  if (response.kind === 'device-list') {
    const accepted = acceptServedList(f, userId, response.deviceList);
    if (!accepted.ok) {
      say(f, { kind: 'error', context: `device-list ${userId}`, error: accepted.error });
      refused = accepted.error;
    }
  } else {
    refused = serverErrorOf(response);
    say(f, { kind: 'error', context: `device-list ${userId}`, error: refused });
  }
  if (refused !== null) {
    for (const item of f.ctx.outbox) {
      if (item.recipient !== userId || item.stage !== 'need-list') continue;
      if (refused.code === 'TRUST_ACCOUNT_KEY_CHANGED')
        patchEntry(f, item.messageId, item.recipient, { stage: 'blocked' });
      else if (refused.code === 'SERVER_UNKNOWN_USER' || item.attempts + 1 >= MAX_SEND_ATTEMPTS)
        failEntry(f, item, refused);
      else {
        patchEntry(f, item.messageId, item.recipient, { attempts: item.attempts + 1 });
        requestList(f, userId);
      }
    }
  }
  f.ctx = {
    ...f.ctx,
    parked: f.ctx.parked.map((p) =>
      p.envelope.sender.userId === userId ? { ...p, listRefreshed: true } : p,
    ),
  };
}

/** The second half: after the parked envelopes were decided, sends waiting for the list move on. */
export function advanceSendsAwaitingList(f: Frame, userId: UserId): void {
  for (const item of f.ctx.outbox)
    if (item.recipient === userId && item.stage === 'need-list')
      advanceEntry(f, item.messageId, item.recipient);
}

// ---------------------------------------------------------------------------------------------
// The outbox (Sesame §3.3 send loop, WP-XPORT-*)

function findEntry(
  ctx: DeviceContext,
  messageId: MessageId,
  recipient: UserId,
): ModelOutboxEntry | undefined {
  return ctx.outbox.find((i) => i.messageId === messageId && i.recipient === recipient);
}

/** Changes fields of one outbox entry. */
export function patchEntry(
  f: Frame,
  messageId: MessageId,
  recipient: UserId,
  patch: Partial<ModelOutboxEntry>,
): void {
  f.ctx = {
    ...f.ctx,
    outbox: f.ctx.outbox.map((i) =>
      i.messageId === messageId && i.recipient === recipient ? { ...i, ...patch } : i,
    ),
  };
}

function dropEntry(f: Frame, messageId: MessageId, recipient: UserId): void {
  f.ctx = {
    ...f.ctx,
    outbox: f.ctx.outbox.filter((i) => !(i.messageId === messageId && i.recipient === recipient)),
  };
}

/**
 * WP-XPORT-03: a failed send discards the record changes it made for its user (stale marks, new
 * records) but keeps every session that encrypted (a sending chain never rewinds). WP-XPORT-10: a
 * device the accepted list leaves out was learned, not changed by the send, and stays stale.
 */
export function failEntry(f: Frame, item: ModelOutboxEntry, error: ProtocolError): void {
  if (item.recordCaptured) {
    const current = userRecord(f.ctx.sesame, item.recipient);
    const before = item.recordBefore;
    if (before === null) f.ctx = { ...f.ctx, sesame: withoutUser(f.ctx.sesame, item.recipient) };
    else {
      const entries = listedEntries(f.ctx, item.recipient);
      const devices = before.devices.map((was) => {
        const now = current?.devices.find((d) => d.deviceId === was.deviceId);
        const restored =
          now !== undefined && equalBytes(now.identityKey, was.identityKey)
            ? { ...was, sessions: now.sessions }
            : was;
        // WP-XPORT-10 (WP-TRUST-07): the list's removal outlives the failed send, with its stale mark.
        const unlisted = entries !== null && entries.every((d) => d.deviceId !== was.deviceId);
        if (!unlisted || restored.staleSince !== null) return restored;
        return { ...restored, staleSince: now?.staleSince ?? f.now };
      });
      f.ctx = { ...f.ctx, sesame: withUser(f.ctx.sesame, { ...before, devices }) };
    }
  }
  // WP-SES-21: the server stored nothing of a failed send; the copies it remembered are forgotten.
  const ofThisSend = (r: ModelMessageRecord): boolean =>
    r.messageId === item.messageId && r.userId === item.recipient;
  if (f.ctx.sesame.messageRecords.some(ofThisSend))
    f.ctx = {
      ...f.ctx,
      sesame: {
        ...f.ctx.sesame,
        messageRecords: f.ctx.sesame.messageRecords.filter((r) => !ofThisSend(r)),
      },
    };
  dropEntry(f, item.messageId, item.recipient);
  say(f, { kind: 'send-failed', messageId: item.messageId, recipient: item.recipient, error });
}

function failEntriesFor(f: Frame, userId: UserId, error: ProtocolError): void {
  for (const item of f.ctx.outbox)
    if (item.recipient === userId && item.stage !== 'sending') failEntry(f, item, error);
}

type NewEntry = Pick<
  ModelOutboxEntry,
  'messageId' | 'recipient' | 'kind' | 'plaintext' | 'onlyDevice' | 'needNewSession' | 'blobId'
> &
  Partial<Pick<ModelOutboxEntry, 'syncCopy' | 'replacesMessageId'>>;

/** Queues a send (bounded by MODEL_MAX_OUTBOX) and moves it as far as it goes. */
export function queueEntry(f: Frame, fields: NewEntry): void {
  if (f.ctx.outbox.length >= MODEL_MAX_OUTBOX) {
    say(f, {
      kind: 'send-failed',
      messageId: fields.messageId,
      recipient: fields.recipient,
      error: reject('XPORT_SEND_ATTEMPTS_EXHAUSTED', 'outbox full').error,
    });
    return;
  }
  const entry: ModelOutboxEntry = {
    ...fields,
    stage: fields.blobId === null ? 'ready' : 'waiting-blob',
    attempts: 0,
    recordBefore: null,
    recordCaptured: false,
    syncCopy: fields.syncCopy ?? null,
    replacesMessageId: fields.replacesMessageId ?? null,
  };
  f.ctx = { ...f.ctx, outbox: [...f.ctx.outbox, entry] };
  if (entry.stage === 'ready') advanceEntry(f, entry.messageId, entry.recipient);
}

/** A user's message: one outbox entry per recipient account, plus a sync copy for one's own devices. */
export function queueUserMessage(f: Frame, recipients: readonly UserId[], content: ModelSendContent): void {
  const messageId = drawMessageId(f);
  let payloadContent: Extract<PayloadContent, { kind: 'text' | 'attachment' }>;
  let blobId: string | null = null;
  if (content.kind === 'attachment') {
    // WP-ATT-01: encrypted once, uploaded once.
    const { blob, pointer } = encryptAttachment(f.env.crypto, f.env.rng, content.bytes, content.contentType);
    blobId = pointer.blobId;
    issueRequest(f, { kind: 'blob-put', blobId }, { kind: 'blob-put', blobId, bytes: blob });
    // Planted bug (simulator self-test only): `server-keeps-plaintext` also uploads the plaintext.
    if (planted(f.env.bugs, 'server-keeps-plaintext')) {
      const plainId = toHex(f.env.crypto.sha256(content.bytes));
      issueRequest(
        f,
        { kind: 'blob-put', blobId: plainId },
        { kind: 'blob-put', blobId: plainId, bytes: content.bytes },
      );
    }
    payloadContent = { kind: 'attachment', pointer, caption: content.caption };
  } else payloadContent = { kind: 'text', text: content.text };
  for (const recipient of recipients.filter((r, i) => recipients.indexOf(r) === i)) {
    // WP-TRUST-01: no lookup by name.
    if (recipient !== f.ctx.userId && trustFor(f.ctx, recipient) === undefined) {
      say(f, {
        kind: 'send-failed',
        messageId,
        recipient,
        error: reject('TRUST_CONTACT_UNKNOWN', 'no contact link for this user').error,
      });
      continue;
    }
    const plaintext = encodePayload({ messageId, sentAt: f.now, content: payloadContent });
    const syncCopy =
      recipient !== f.ctx.userId && (listedEntries(f.ctx, f.ctx.userId) ?? []).length > 0
        ? encodePayload({
            messageId: drawMessageId(f),
            sentAt: f.now,
            content: { kind: 'sync', destination: recipient, content: payloadContent },
          })
        : null;
    queueEntry(f, {
      messageId,
      recipient,
      kind: 'message',
      plaintext,
      onlyDevice: null,
      needNewSession: false,
      blobId,
      syncCopy,
    });
  }
}

/** Moves one outbox entry as far as it can go without the server (Sesame §3.3 steps 1–2). */
export function advanceEntry(f: Frame, messageId: MessageId, recipient: UserId): void {
  let item = findEntry(f.ctx, messageId, recipient);
  if (item === undefined || item.stage === 'sending' || item.stage === 'waiting-blob') return;
  if (!item.recordCaptured) {
    patchEntry(f, messageId, recipient, {
      recordBefore: userRecord(f.ctx.sesame, recipient) ?? null,
      recordCaptured: true,
    });
    item = findEntry(f.ctx, messageId, recipient);
    if (item === undefined) return;
  }
  if (item.kind === 'retry-request') return sendToOneDevice(f, item);
  const pendingKey = trustFor(f.ctx, recipient)?.pendingAccountKey ?? null;
  if (pendingKey !== null) {
    // WP-TRUST-04: blocked until acknowledged.
    patchEntry(f, messageId, recipient, { stage: 'blocked' });
    return;
  }
  const devices = listedEntries(f.ctx, recipient);
  const refreshing = f.ctx.pending.some(
    (p) => p.purpose.kind === 'device-list' && p.purpose.userId === recipient,
  );
  if (devices === null || refreshing) {
    patchEntry(f, messageId, recipient, { stage: 'need-list' });
    requestList(f, recipient);
    return;
  }
  if (item.kind === 'resend') return sendToOneDevice(f, item);
  for (const device of devices) {
    // WP-SES-02 ConditionalUpdate from the trusted list; WP-TRUST-07 key change first.
    const updated = conditionalUpdateFromList(f.ctx.sesame, recipient, device);
    f.ctx = { ...f.ctx, sesame: updated.sesame };
    if (updated.keyChanged && !updated.created)
      say(f, { kind: 'key-change', userId: recipient, deviceId: device.deviceId });
  }
  const need = devicesWithoutSession(f.ctx.sesame, recipient, f.now);
  if (need.length > 0) {
    patchEntry(f, messageId, recipient, { stage: 'need-bundles' });
    issueRequest(
      f,
      { kind: 'bundles', messageId, recipient },
      { kind: 'get-bundles', userId: recipient, deviceIds: need },
    );
    return;
  }
  const sealed = sealForUser(f.env, f.ctx.sesame, recipient, item.plaintext, f.now);
  if (!sealed.ok) return failEntry(f, item, sealed.error);
  f.ctx = { ...f.ctx, sesame: sealed.value.sesame };
  rememberCopies(f, item, sealed.value.sessionsUsed);
  patchEntry(f, messageId, recipient, { stage: 'sending', attempts: item.attempts + 1 });
  issueRequest(
    f,
    { kind: 'send', messageId, recipient },
    { kind: 'send', sender: ownAddress(f.ctx), messageId, recipient, messages: sealed.value.messages },
  );
}

/**
 * WP-SES-12 / WP-SES-21 (Sesame §4.1): each sealed copy is remembered at once, before the server
 * answers, since the recipient's retry request may overtake that answer. WP-XPORT-06: a resend takes
 * the place of the record it answers and carries its resend count on.
 */
function rememberCopies(f: Frame, item: ModelOutboxEntry, copies: SessionsUsed): void {
  let sesame = f.ctx.sesame;
  for (const copy of copies) {
    const answered = sesame.messageRecords.find(
      (r) =>
        item.replacesMessageId !== null &&
        r.messageId === item.replacesMessageId &&
        r.userId === item.recipient &&
        r.deviceId === copy.deviceId,
    );
    if (answered !== undefined)
      sesame = { ...sesame, messageRecords: sesame.messageRecords.filter((r) => r !== answered) };
    sesame = rememberSentCopy(sesame, {
      messageId: item.messageId,
      userId: item.recipient,
      deviceId: copy.deviceId,
      sessionBaseKey: copy.sessionBaseKey,
      plaintext: item.plaintext,
    });
    if (answered !== undefined)
      sesame = {
        ...sesame,
        messageRecords: sesame.messageRecords.map((r) =>
          r.messageId === item.messageId && r.userId === item.recipient && r.deviceId === copy.deviceId
            ? { ...r, resends: answered.resends }
            : r,
        ),
      };
  }
  f.ctx = { ...f.ctx, sesame };
}

/** A resend or retry request to one device (Sesame §4.1). */
function sendToOneDevice(f: Frame, item: ModelOutboxEntry): void {
  const deviceId = item.onlyDevice;
  if (deviceId === null)
    return failEntry(f, item, reject('XPORT_SERVER_ERROR', 'single-device send without a device').error);
  const purpose: ModelPurpose = { kind: 'send', messageId: item.messageId, recipient: item.recipient };
  if (item.kind === 'retry-request') {
    const registrationId =
      listedEntries(f.ctx, item.recipient)?.find((d) => d.deviceId === deviceId)?.registrationId ?? 0;
    patchEntry(f, item.messageId, item.recipient, { stage: 'sending', attempts: item.attempts + 1 });
    issueRequest(f, purpose, {
      kind: 'send',
      sender: ownAddress(f.ctx),
      messageId: item.messageId,
      recipient: item.recipient,
      messages: [{ deviceId, registrationId, type: 'retry-request', bytes: item.plaintext }],
      onlyDevice: deviceId,
    });
    return;
  }
  if (listedEntries(f.ctx, item.recipient)?.find((d) => d.deviceId === deviceId) === undefined)
    return failEntry(
      f,
      item,
      reject('TRUST_UNKNOWN_SENDER_DEVICE', 'resend target is not in the device list').error,
    );
  if (item.needNewSession) {
    patchEntry(f, item.messageId, item.recipient, { stage: 'need-bundles' });
    issueRequest(
      f,
      { kind: 'bundles', messageId: item.messageId, recipient: item.recipient },
      { kind: 'get-bundles', userId: item.recipient, deviceIds: [deviceId] },
    );
    return;
  }
  const sealed = sealForOneDevice(f.env, f.ctx.sesame, item.recipient, deviceId, item.plaintext, f.now);
  if (!sealed.ok) return failEntry(f, item, sealed.error);
  f.ctx = { ...f.ctx, sesame: sealed.value.sesame };
  rememberCopies(f, item, [{ deviceId, sessionBaseKey: sealed.value.sessionBaseKey }]);
  patchEntry(f, item.messageId, item.recipient, { stage: 'sending', attempts: item.attempts + 1 });
  issueRequest(f, purpose, {
    kind: 'send',
    sender: ownAddress(f.ctx),
    messageId: item.messageId,
    recipient: item.recipient,
    messages: [sealed.value.message],
    onlyDevice: deviceId,
  });
}

/** The outbox entry a send or bundles answer is for. */
export function entryForPurpose(ctx: DeviceContext, purpose: ModelPurpose): ModelOutboxEntry | undefined {
  if (purpose.kind !== 'send' && purpose.kind !== 'bundles') return undefined;
  return findEntry(ctx, purpose.messageId, purpose.recipient);
}

/** WP-TRUST-06: every bundle carries the identity key the accepted list names for its device (both modes). */
export function bundlesMatchList(ctx: DeviceContext, recipient: UserId, response: ServerResponse): boolean {
  if (response.kind !== 'bundles') return false;
  const devices = listedEntries(ctx, recipient) ?? [];
  return response.bundles.every((b) => {
    const listed = devices.find((d) => d.deviceId === b.deviceId);
    if (listed === undefined) return false;
    return equalBytes(listed.identityKey, b.identityKey);
  });
}

/**
 * WP-SES-03 PrepEncrypt for each bundle, in order, then the send moves on. A bundle that fails a
 * check, or whose identity the list does not vouch for (WP-TRUST-06), fails the send.
 */
export function prepareSessionsFromBundles(
  f: Frame,
  item: ModelOutboxEntry,
  response: ServerResponse,
  requested: readonly DeviceId[],
): void {
  if (response.kind !== 'bundles') return;
  const devices = listedEntries(f.ctx, item.recipient) ?? [];
  const ours = {
    identityKeyPair: f.ctx.prekeys.identityKeyPair,
    registrationId: f.ctx.prekeys.registrationId,
  };
  let sesame = f.ctx.sesame;
  for (const bundle of response.bundles) {
    const listed = devices.find((d) => d.deviceId === bundle.deviceId);
    // WP-TRUST-06, in both modes: a server-mode list is the server's word as well, and a bundle used
    // against it would be undone by the next ConditionalUpdate from that list.
    if (listed === undefined || !equalBytes(listed.identityKey, bundle.identityKey)) {
      // WP-TRUST-06 / WP-XPORT-03: refresh a list that may predate a reinstall, bounded.
      if (item.attempts < MAX_SEND_ATTEMPTS) {
        patchEntry(f, item.messageId, item.recipient, { stage: 'need-list', attempts: item.attempts + 1 });
        requestList(f, item.recipient);
        return;
      }
      return failEntry(
        f,
        item,
        reject('TRUST_BUNDLE_IDENTITY_MISMATCH', 'bundle identity key differs from the device list').error,
      );
    }
    const prepared = prepareSession(
      f.env,
      sesame,
      ours,
      { ...bundle, userId: item.recipient },
      f.now,
      item.needNewSession,
    );
    if (!prepared.ok) return failEntry(f, item, prepared.error);
    sesame = prepared.value.sesame;
    if (prepared.value.keyChanged)
      say(f, { kind: 'key-change', userId: item.recipient, deviceId: bundle.deviceId });
  }
  // WP-SRV-12 / WP-SES-11: a listed device without a bundle has not registered yet: it sits this
  // send out as a stale record until a send refusal names it missing.
  for (const deviceId of requested) {
    if (!response.bundles.some((b) => b.deviceId === deviceId))
      sesame = markDeviceRecordStale(sesame, item.recipient, deviceId, f.now);
  }
  f.ctx = { ...f.ctx, sesame };
  patchEntry(f, item.messageId, item.recipient, { stage: 'ready', needNewSession: false });
  advanceEntry(f, item.messageId, item.recipient);
}

/** A bundles request failed: a device the server no longer has sends us back for the list (bounded). */
export function retryListAfterBundleFailure(
  f: Frame,
  item: ModelOutboxEntry,
  response: ServerResponse,
): void {
  const stale = response.kind === 'error' && response.code === 'SERVER_UNKNOWN_DEVICE';
  if (stale && item.attempts < MAX_SEND_ATTEMPTS) {
    patchEntry(f, item.messageId, item.recipient, { stage: 'need-list', attempts: item.attempts + 1 });
    requestList(f, item.recipient);
    return;
  }
  failEntry(f, item, serverErrorOf(response));
}

/** An accepted send leaves the outbox (its copies were remembered when sealed); a sync copy follows. */
export function completeAcceptedSend(f: Frame, item: ModelOutboxEntry): void {
  const recipient = item.recipient;
  dropEntry(f, item.messageId, recipient);
  if (item.syncCopy !== null)
    queueEntry(f, {
      messageId: drawMessageId(f),
      recipient: f.ctx.userId,
      kind: 'message',
      plaintext: item.syncCopy,
      onlyDevice: null,
      needNewSession: false,
      blobId: null,
    });
  if (item.kind === 'resend' && item.onlyDevice !== null)
    say(f, {
      kind: 'resent',
      messageId: item.messageId,
      to: { userId: recipient, deviceId: item.onlyDevice },
    });
  else if (item.kind === 'message') say(f, { kind: 'sent', messageId: item.messageId, recipient });
}

/** WP-XPORT-05: a full mailbox stored nothing; the send waits for the next resend timer. */
export function holdForMailbox(f: Frame, item: ModelOutboxEntry): void {
  patchEntry(f, item.messageId, item.recipient, { stage: 'mailbox-full' });
}

/**
 * WP-XPORT-09: a retry request refused for its device set may have named the sender device under a
 * list older than its reinstall (a rolled-back requester's list is). The refusal's list is taken
 * like any served list (WP-TRUST-02/03); if it still names the device, the request goes out again
 * with that device's current registration id; otherwise it is given up.
 */
export function askAgainUnderServedList(f: Frame, item: ModelOutboxEntry, refusal: SendRefusal): void {
  if (refusal.kind !== 'mismatched-devices' && refusal.kind !== 'stale-devices') return;
  const accepted = acceptServedList(f, item.recipient, refusal.deviceList);
  const still = findEntry(f.ctx, item.messageId, item.recipient);
  if (still === undefined) return;
  // WP-TRUST-04: a reset account's list waits for the user's acknowledgment, and the request with it.
  if (!accepted.ok && accepted.error.code === 'TRUST_ACCOUNT_KEY_CHANGED')
    return patchEntry(f, item.messageId, item.recipient, { stage: 'blocked' });
  const named = (listedEntries(f.ctx, item.recipient) ?? []).some((d) => d.deviceId === item.onlyDevice);
  if (!accepted.ok || !named) return failSingleDeviceSend(f, still, refusal);
  patchEntry(f, item.messageId, item.recipient, { stage: 'ready' });
  advanceEntry(f, item.messageId, item.recipient);
}

/** A resend or retry request refused for its device set is given up (single-device sends do not loop). */
export function failSingleDeviceSend(f: Frame, item: ModelOutboxEntry, refusal: SendRefusal): void {
  failEntry(
    f,
    item,
    reject('XPORT_SEND_ATTEMPTS_EXHAUSTED', `single-device send refused: ${refusal.kind}`).error,
  );
}

/** WP-XPORT-03: the refusal loop is bounded. */
export function failSendExhausted(f: Frame, item: ModelOutboxEntry): void {
  failEntry(
    f,
    item,
    reject('XPORT_SEND_ATTEMPTS_EXHAUSTED', 'server kept refusing the device set', {
      attempts: item.attempts,
    }).error,
  );
}

/** WP-XPORT-04: any other server answer fails the send, typed. */
export function failSendWithServerError(f: Frame, item: ModelOutboxEntry, response: ServerResponse): void {
  failEntry(f, item, serverErrorOf(response));
}

/** Sesame §3.3 steps 4–8 (WP-SES-06..08): update the records from the refusal and loop. */
export function applySendRefusal(f: Frame, item: ModelOutboxEntry, refusal: SendRefusal): void {
  let entries: readonly DeviceListEntry[] | null = null;
  if (refusal.kind === 'mismatched-devices' || refusal.kind === 'stale-devices') {
    const accepted = acceptServedList(f, item.recipient, refusal.deviceList);
    if (!accepted.ok) {
      if (accepted.error.code === 'TRUST_ACCOUNT_KEY_CHANGED') {
        patchEntry(f, item.messageId, item.recipient, { stage: 'blocked' });
        return;
      }
      if (accepted.error.code === 'TRUST_LIST_ROLLBACK') return retryOvertakenRefusal(f, item);
      return failEntry(f, item, accepted.error);
    }
    entries = listedEntries(f.ctx, item.recipient);
  }
  const applied = applyRefusal(f.ctx.sesame, item.recipient, refusal, entries, f.now);
  if (!applied.ok) return failEntry(f, item, applied.error);
  f.ctx = { ...f.ctx, sesame: applied.value.sesame };
  for (const deviceId of applied.value.keyChanges)
    say(f, { kind: 'key-change', userId: item.recipient, deviceId });
  if (refusal.kind === 'unknown-user')
    return failEntry(f, item, reject('XPORT_SERVER_ERROR', 'recipient user does not exist').error);
  patchEntry(f, item.messageId, item.recipient, { stage: 'ready' });
  advanceEntry(f, item.messageId, item.recipient);
}

/**
 * WP-XPORT-08: a refusal whose list is older than the one accepted was judged against a device set
 * that has changed since; it changes nothing, and the send goes again on the newer list (each try
 * counts towards MAX_SEND_ATTEMPTS).
 */
function retryOvertakenRefusal(f: Frame, item: ModelOutboxEntry): void {
  patchEntry(f, item.messageId, item.recipient, { stage: 'ready' });
  advanceEntry(f, item.messageId, item.recipient);
}

/**
 * A send answer, decided as the machine's guarded transitions decide it (used where the machine
 * has no per-branch transitions, e.g. after revocation).
 */
export function answerSend(f: Frame, purpose: ModelPurpose, response: ServerResponse): void {
  const item = entryForPurpose(f.ctx, purpose);
  if (item === undefined) return;
  if (response.kind === 'accepted') return completeAcceptedSend(f, item);
  if (response.kind !== 'refused') return failSendWithServerError(f, item, response);
  const refusal = response.refusal;
  if (refusal.kind === 'mailbox-full') return holdForMailbox(f, item);
  if (item.kind === 'retry-request' && refusal.kind !== 'unknown-user' && item.attempts < MAX_SEND_ATTEMPTS)
    return askAgainUnderServedList(f, item, refusal);
  if (item.kind !== 'message') return failSingleDeviceSend(f, item, refusal);
  if (item.attempts >= MAX_SEND_ATTEMPTS) return failSendExhausted(f, item);
  applySendRefusal(f, item, refusal);
}

/** A bundles answer (as {@link answerSend}). */
export function answerBundles(f: Frame, pending: ModelPending, response: ServerResponse): void {
  const item = entryForPurpose(f.ctx, pending.purpose);
  if (item === undefined) return;
  if (response.kind !== 'bundles') return retryListAfterBundleFailure(f, item, response);
  prepareSessionsFromBundles(
    f,
    item,
    response,
    pending.request.kind === 'get-bundles' ? pending.request.deviceIds : [],
  );
}

/** WP-ATT: sends waiting for their attachment's upload move on, or fail with the server's error. */
export function releaseAttachmentSends(f: Frame, blobId: string, response: ServerResponse): void {
  const waiting = f.ctx.outbox.filter((i) => i.blobId === blobId && i.stage === 'waiting-blob');
  if (response.kind !== 'ok') {
    for (const item of waiting) failEntry(f, item, serverErrorOf(response));
    return;
  }
  for (const item of waiting) {
    patchEntry(f, item.messageId, item.recipient, { stage: 'ready' });
    advanceEntry(f, item.messageId, item.recipient);
  }
}

/** WP-ATT-02..05: a downloaded blob is checked against its pointer and decrypted. */
export function decryptDownloadedAttachment(
  f: Frame,
  pointer: AttachmentPointer,
  response: ServerResponse,
): void {
  if (response.kind !== 'blob' || response.bytes === null) {
    say(f, {
      kind: 'attachment-failed',
      pointer,
      error:
        response.kind === 'error'
          ? serverErrorOf(response)
          : reject('XPORT_SERVER_ERROR', 'blob not found').error,
    });
    return;
  }
  const plaintext = decryptAttachment(f.env.crypto, pointer, response.bytes);
  if (!plaintext.ok) say(f, { kind: 'attachment-failed', pointer, error: plaintext.error });
  else say(f, { kind: 'attachment', pointer, bytes: plaintext.value });
}

/** WP-XPORT-01: every unanswered request goes out again unchanged; fetches, acks and polls are dropped. */
export function resendUnanswered(f: Frame): void {
  // WP-LIFE-01: a revoked device sends nothing more.
  if (f.ctx.lifecycle.kind === 'revoked') return;
  const polled = (p: ModelPending): boolean =>
    p.purpose.kind === 'fetch' || p.purpose.kind === 'ack' || p.purpose.kind === 'provision-get';
  for (const p of f.ctx.pending)
    if (!polled(p)) say(f, { kind: 'request', requestId: p.requestId, request: p.request });
  f.ctx = { ...f.ctx, pending: f.ctx.pending.filter((p) => !polled(p)) };
  // WP-XPORT-05
  for (const item of f.ctx.outbox)
    if (item.stage === 'mailbox-full') {
      patchEntry(f, item.messageId, item.recipient, { stage: 'ready' });
      advanceEntry(f, item.messageId, item.recipient);
    }
}

// ---------------------------------------------------------------------------------------------
// Linking and revocation (WP-LIFE-02..04)

/** The own account's accepted list. */
export function ownList(ctx: DeviceContext): DeviceList | null {
  return trustFor(ctx, ctx.userId)?.list ?? null;
}

/** WP-LIFE-02: the smallest free device id (0 when none). */
export function freeDeviceId(ctx: DeviceContext): DeviceId {
  const used = (ownList(ctx)?.devices ?? []).map((d) => d.deviceId);
  // A list holds at most MAX_DEVICES_PER_ACCOUNT devices (WP-DEV-03).
  if (used.length >= MAX_DEVICES_PER_ACCOUNT) return 0;
  for (let id = PRIMARY_DEVICE_ID + 1; id <= MAX_DEVICE_ID; id++) if (!used.includes(id)) return id;
  return 0;
}

/** WP-LIFE-02/03: sign a list with the new device and upload it. */
export function signListWithNewDevice(f: Frame, code: ProvisioningCode): void {
  const key = f.ctx.accountPrivateKey;
  const current = ownList(f.ctx);
  if (key === null || current === null) return;
  const deviceId = freeDeviceId(f.ctx);
  if (deviceId === 0) return sayError(f, 'link-device', 'LIFE_NO_FREE_DEVICE_ID', 'no free device id');
  const list: DeviceList = {
    ...current,
    version: current.version + 1,
    devices: [
      ...current.devices,
      { deviceId, identityKey: code.identityKey, registrationId: code.registrationId },
    ].sort((a, b) => a.deviceId - b.deviceId),
  };
  const signed = signDeviceList(f.env.crypto, key, list, f.env.rng.randomBytes(64));
  issueRequest(
    f,
    { kind: 'link', code, deviceId, list: signed },
    { kind: 'update-device-list', device: ownAddress(f.ctx), deviceList: signed },
  );
}

/** WP-LIFE-03: the list is uploaded: accept it, then send the provision message through the relay. */
export function sendProvisionMessage(
  f: Frame,
  purpose: Extract<ModelPurpose, { kind: 'link' }>,
  response: ServerResponse,
): void {
  if (response.kind !== 'ok')
    return void say(f, { kind: 'error', context: 'link-device', error: serverErrorOf(response) });
  const accepted = acceptServedList(f, f.ctx.userId, purpose.list);
  if (!accepted.ok) return void say(f, { kind: 'error', context: 'link-device', error: accepted.error });
  const key = f.ctx.accountPrivateKey;
  if (key === null) return;
  const certificate = signAccountCertificate(
    f.env.crypto,
    key,
    purpose.code.identityKey,
    f.env.rng.randomBytes(64),
  );
  const message = encodeProvisionMessage({
    userId: f.ctx.userId,
    deviceId: purpose.deviceId,
    deviceList: purpose.list,
    accountCertificate: certificate,
  });
  const envelope = encryptProvisionEnvelope(
    f.env.crypto,
    f.env.rng,
    purpose.code.ephemeralPublicKey,
    message,
  );
  issueRequest(
    f,
    { kind: 'provision-put' },
    { kind: 'provision-put', address: purpose.code.relayAddress, bytes: envelope },
  );
  say(f, { kind: 'device-linked', address: { userId: f.ctx.userId, deviceId: purpose.deviceId } });
  // Planted bug (simulator self-test only): `history-to-new-device` queues every recorded payload to
  // the own account again (so to the new device too), sent on the next resend timer.
  if (planted(f.env.bugs, 'history-to-new-device')) {
    const payloads = new Map(f.ctx.sesame.messageRecords.map((r) => [r.messageId, r.plaintext]));
    const history: ModelOutboxEntry[] = [...payloads.values()].map((plaintext) => ({
      messageId: drawMessageId(f),
      recipient: f.ctx.userId,
      kind: 'message',
      plaintext,
      onlyDevice: null,
      needNewSession: false,
      stage: 'mailbox-full',
      attempts: 0,
      blobId: null,
      recordBefore: null,
      recordCaptured: false,
      syncCopy: null,
      replacesMessageId: null,
    }));
    f.ctx = { ...f.ctx, outbox: [...f.ctx.outbox, ...history] };
  }
}

/** WP-LIFE-04: a device id the primary may revoke (another device of the current list). */
export function revocableDevice(ctx: DeviceContext, deviceId: DeviceId): boolean {
  const current = ownList(ctx);
  return (
    current !== null && deviceId !== ctx.deviceId && current.devices.some((d) => d.deviceId === deviceId)
  );
}

/** WP-LIFE-04: sign a list without the device and upload it. */
export function signListWithoutDevice(f: Frame, deviceId: DeviceId): void {
  const key = f.ctx.accountPrivateKey;
  const current = ownList(f.ctx);
  if (key === null || current === null) return;
  const list: DeviceList = {
    ...current,
    version: current.version + 1,
    devices: current.devices.filter((d) => d.deviceId !== deviceId),
  };
  const signed = signDeviceList(f.env.crypto, key, list, f.env.rng.randomBytes(64));
  issueRequest(
    f,
    { kind: 'revoke', deviceId, list: signed },
    { kind: 'update-device-list', device: ownAddress(f.ctx), deviceList: signed },
  );
}

/** WP-LIFE-04: the revocation list is uploaded: accept it as the own account's list. */
export function acceptRevocationList(
  f: Frame,
  purpose: Extract<ModelPurpose, { kind: 'revoke' }>,
  response: ServerResponse,
): void {
  if (response.kind !== 'ok')
    return void say(f, { kind: 'error', context: 'revoke-device', error: serverErrorOf(response) });
  const accepted = acceptServedList(f, f.ctx.userId, purpose.list);
  if (!accepted.ok) say(f, { kind: 'error', context: 'revoke-device', error: accepted.error });
}

// ---------------------------------------------------------------------------------------------
// Receiving: the pieces of the pipeline (the machine sequences them)

/** WP-TRUST-05: the sender device as the accepted list names it. */
export function senderEntry(ctx: DeviceContext, sender: DeviceAddress): DeviceListEntry | undefined {
  return listedEntries(ctx, sender.userId)?.find((d) => d.deviceId === sender.deviceId);
}

/** WP-TRUST-05: keeps an envelope until its sender's list arrives (and asks for that list). */
export function parkEnvelope(f: Frame, envelope: Envelope, quietly: boolean): void {
  if (f.ctx.parked.length >= MODEL_MAX_PARKED) return;
  f.ctx = { ...f.ctx, parked: [...f.ctx.parked, { envelope, listRefreshed: false }] };
  if (!quietly) requestList(f, envelope.sender.userId);
}

/** Sesame §4.1, WP-XPORT-06: asks the sender to resend what did not decrypt. */
export function requestRetry(f: Frame, sender: DeviceAddress, failedMessageId: MessageId): void {
  if (!/^[0-9a-f]{32}$/.test(failedMessageId)) return;
  queueEntry(f, {
    messageId: drawMessageId(f),
    recipient: sender.userId,
    kind: 'retry-request',
    plaintext: encodeRetryRequest(failedMessageId),
    onlyDevice: sender.deviceId,
    needNewSession: false,
    blobId: null,
  });
}

/**
 * WP-XPORT-07: the retry request names a message (or resend) to the requester's account that is
 * still in the outbox: the server has not been seen to accept it, so it has no message record yet.
 */
export function retryNamesUnansweredSend(
  ctx: DeviceContext,
  requester: DeviceAddress,
  bytes: Uint8Array,
): boolean {
  const named = decodeRetryRequest(bytes);
  if (!named.ok) return false;
  return ctx.outbox.some(
    (entry) =>
      entry.kind !== 'retry-request' &&
      entry.recipient === requester.userId &&
      entry.messageId === named.value,
  );
}

/** WP-SES-13/14, WP-XPORT-06: answers a retry request with a resend under a fresh transport id. */
export function answerRetryRequest(f: Frame, requester: DeviceAddress, bytes: Uint8Array): void {
  const decoded = decodeRetryRequest(bytes);
  if (!decoded.ok) return void say(f, { kind: 'error', context: 'retry-request', error: decoded.error });
  const decided = decideRetry(f.ctx.sesame, requester, decoded.value, f.now);
  if (!decided.ok) return void say(f, { kind: 'error', context: 'retry-request', error: decided.error });
  f.ctx = { ...f.ctx, sesame: decided.value.sesame };
  const decision = decided.value.decision;
  if (decision.kind === 'drop') return;
  queueEntry(f, {
    messageId: drawMessageId(f),
    recipient: requester.userId,
    kind: 'resend',
    plaintext: decision.plaintext,
    onlyDevice: requester.deviceId,
    needNewSession: decision.needNewSession,
    blobId: null,
    replacesMessageId: decoded.value,
  });
}

/** Issues the acknowledgment of processed envelopes (WP-XPORT-02: only after processing). */
export function acknowledge(f: Frame, envelopeIds: readonly number[]): void {
  if (envelopeIds.length > 0)
    issueRequest(
      f,
      { kind: 'ack' },
      { kind: 'ack', device: ownAddress(f.ctx), envelopeIds: [...envelopeIds] },
    );
}

/** The end of a fetch: acknowledge; after a complete drain, delete expired stale records (WP-SES-11). */
export function finishFetch(f: Frame, acked: readonly number[]): void {
  acknowledge(f, acked);
  if (f.ctx.parked.length === 0)
    // Planted bug (simulator self-test only): `never-clean-stale` skips the cleanup.
    f.ctx = {
      ...f.ctx,
      lastFullDrainAt: f.now,
      sesame: planted(f.env.bugs, 'never-clean-stale')
        ? f.ctx.sesame
        : dropExpiredStaleRecords(f.ctx.sesame, f.now, f.now),
    };
  replenishPreKeys(f);
}

/** WP-LIFE-04: a fetch refused because the server no longer knows this device means revocation. */
export function fetchRefused(f: Frame, response: ServerResponse): void {
  if (
    response.kind === 'error' &&
    (response.code === 'SERVER_UNKNOWN_DEVICE' || response.code === 'SERVER_UNKNOWN_USER')
  )
    return becomeRevoked(f);
  say(f, { kind: 'error', context: 'fetch', error: serverErrorOf(response) });
}

/**
 * Any answer to a device that is not linked (or whose machine has no dedicated transition for the
 * purpose): decided exactly as the linked transitions decide it, except that a device that is not
 * linked processes no envelope (WP-LIFE-01): fetched envelopes stay unacknowledged.
 */
export function answerWhileNotLinked(f: Frame, pending: ModelPending, response: ServerResponse): void {
  const purpose = pending.purpose;
  switch (purpose.kind) {
    case 'register':
      if (response.kind !== 'ok')
        say(f, { kind: 'error', context: 'register', error: serverErrorOf(response) });
      else markLinked(f);
      return;
    case 'upload-prekeys':
      return confirmPreKeyUpload(f, pending, response);
    case 'device-list':
      applyServedDeviceList(f, purpose.userId, response);
      // Nothing is parked unless linked, so there is nothing to decide before the sends move on.
      advanceSendsAwaitingList(f, purpose.userId);
      return;
    case 'bundles':
      return answerBundles(f, pending, response);
    case 'send':
      return answerSend(f, purpose, response);
    case 'fetch':
      if (response.kind !== 'envelopes') return fetchRefused(f, response);
      return finishFetch(f, []);
    case 'ack':
      return;
    case 'link':
      return sendProvisionMessage(f, purpose, response);
    case 'revoke':
      return acceptRevocationList(f, purpose, response);
    case 'provision-put':
      if (response.kind === 'error')
        say(f, { kind: 'error', context: 'provision-put', error: serverErrorOf(response) });
      return;
    case 'provision-get':
      // Only a provisioning device reads the relay; the machine's provisioning state handles it.
      return;
    case 'blob-put':
      return releaseAttachmentSends(f, purpose.blobId, response);
    case 'blob-get':
      return decryptDownloadedAttachment(f, purpose.pointer, response);
  }
}
