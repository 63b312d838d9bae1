/**
 * What a trace records of device inputs and outputs and of server requests and responses: kinds,
 * message ids, sizes, counts, device ids, and the error code and rule ID of every failure. No key,
 * no plaintext, no ciphertext byte ever appears (simulator/TRACE-FORMAT.md).
 * @module
 */
import type { DeviceInput, DeviceOutput } from '../impl/device.js';
import type { CryptoProvider } from '../spec/crypto/provider.js';
import { toHex } from '../spec/hex.js';
import type { ServerAbstract } from '../spec/server-abstract.js';
import { CanonicalFragment, canonicalJson } from './canonical.js';
import type { DeviceAbstractView } from './engine.js';
import type { SessionAbstract } from '../spec/abstract.js';
import type { DeviceRecordAbstract, UserRecordAbstract } from '../spec/sesame-abstract.js';
import type { ProtocolError } from '../spec/errors.js';
import type { ServerRequest, ServerResponse } from '../spec/server-api.js';

function error(e: ProtocolError): Record<string, unknown> {
  return { code: e.code, rule: e.rule };
}

/** A device input, summarised. */
export function summarizeInput(input: DeviceInput): Record<string, unknown> {
  switch (input.kind) {
    case 'user.send':
      return {
        kind: input.kind,
        recipients: input.recipients,
        content: input.content.kind,
        size: input.content.kind === 'text' ? input.content.text.length : input.content.bytes.length,
      };
    case 'user.add-contact':
      return { kind: input.kind, userId: input.link.userId };
    case 'user.acknowledge-key-change':
      return { kind: input.kind, userId: input.userId };
    case 'user.link-device':
      return { kind: input.kind };
    case 'user.revoke-device':
      return { kind: input.kind, deviceId: input.deviceId };
    case 'user.download':
      return { kind: input.kind, blobId: input.pointer.blobId, size: input.pointer.size };
    case 'net.response':
      return { kind: input.kind, requestId: input.requestId, response: summarizeResponse(input.response) };
    case 'timer.rotate-signed-prekey':
      return input.gracePeriod === undefined
        ? { kind: input.kind }
        : { kind: input.kind, gracePeriod: input.gracePeriod };
    default:
      return { kind: input.kind };
  }
}

/** A server request, summarised. */
export function summarizeRequest(request: ServerRequest): Record<string, unknown> {
  switch (request.kind) {
    case 'send':
      return {
        kind: request.kind,
        messageId: request.messageId,
        recipient: request.recipient,
        onlyDevice: request.onlyDevice,
        copies: request.messages.map((m) => ({ deviceId: m.deviceId, type: m.type, size: m.bytes.length })),
      };
    case 'get-device-list':
      return { kind: request.kind, userId: request.userId };
    case 'get-bundles':
      return { kind: request.kind, userId: request.userId, deviceIds: request.deviceIds };
    case 'ack':
      return { kind: request.kind, envelopeIds: request.envelopeIds };
    case 'upload-prekeys':
      return {
        kind: request.kind,
        oneTimePreKeys: request.preKeys.oneTimePreKeys.length,
        kyberPreKeys: request.preKeys.kyberPreKeys.length,
      };
    case 'blob-put':
      return { kind: request.kind, blobId: request.blobId, size: request.bytes.length };
    case 'blob-get':
      return { kind: request.kind, blobId: request.blobId };
    case 'provision-put':
      return { kind: request.kind, size: request.bytes.length };
    default:
      return { kind: request.kind };
  }
}

/** A server response, summarised. */
export function summarizeResponse(response: ServerResponse): Record<string, unknown> {
  switch (response.kind) {
    case 'error':
      return { kind: response.kind, code: response.code, rule: response.rule };
    case 'refused': {
      const r = response.refusal;
      return {
        kind: response.kind,
        refusal: r.kind,
        ...(r.kind === 'mismatched-devices' ? { missing: r.missing, extra: r.extra } : {}),
        ...(r.kind === 'stale-devices' ? { stale: r.stale } : {}),
        ...(r.kind === 'mailbox-full' ? { deviceIds: r.deviceIds } : {}),
      };
    }
    case 'accepted':
      return { kind: response.kind, messageId: response.messageId, duplicate: response.duplicate };
    case 'envelopes':
      return {
        kind: response.kind,
        envelopes: response.envelopes.map((e) => ({
          envelopeId: e.envelopeId,
          messageId: e.messageId,
          sender: `${e.sender.userId}.${e.sender.deviceId}`,
          type: e.type,
          size: e.bytes.length,
        })),
      };
    case 'bundles':
      return { kind: response.kind, deviceIds: response.bundles.map((b) => b.deviceId) };
    case 'blob':
    case 'provision':
      return { kind: response.kind, size: response.bytes === null ? null : response.bytes.length };
    default:
      return { kind: response.kind };
  }
}

/** A device output, summarised. */
export function summarizeOutput(output: DeviceOutput): Record<string, unknown> {
  switch (output.kind) {
    case 'request':
      return { kind: output.kind, requestId: output.requestId, request: output.request.kind };
    case 'delivered':
      return {
        kind: output.kind,
        from: `${output.from.userId}.${output.from.deviceId}`,
        payloadId: output.payload.messageId,
        content: output.payload.content.kind,
      };
    case 'sent':
      return { kind: output.kind, messageId: output.messageId, recipient: output.recipient };
    case 'send-failed':
      return {
        kind: output.kind,
        messageId: output.messageId,
        recipient: output.recipient,
        error: error(output.error),
      };
    case 'key-change':
      return { kind: output.kind, userId: output.userId, deviceId: output.deviceId };
    case 'device-list-changed':
      return {
        kind: output.kind,
        userId: output.userId,
        version: output.version,
        added: output.added,
        removed: output.removed,
      };
    case 'undecryptable':
      return {
        kind: output.kind,
        from: `${output.from.userId}.${output.from.deviceId}`,
        messageId: output.messageId,
        error: error(output.error),
      };
    case 'duplicate-dropped':
      return {
        kind: output.kind,
        from: `${output.from.userId}.${output.from.deviceId}`,
        messageId: output.messageId,
      };
    case 'clone-detected':
      return {
        kind: output.kind,
        from: `${output.from.userId}.${output.from.deviceId}`,
        evidence: output.evidence,
      };
    case 'resent':
      return {
        kind: output.kind,
        messageId: output.messageId,
        to: `${output.to.userId}.${output.to.deviceId}`,
      };
    case 'attachment':
      return { kind: output.kind, blobId: output.pointer.blobId, size: output.bytes.length };
    case 'attachment-failed':
      return { kind: output.kind, blobId: output.pointer.blobId, error: error(output.error) };
    case 'linked':
    case 'device-linked':
      return { kind: output.kind, address: `${output.address.userId}.${output.address.deviceId}` };
    case 'revoked':
      return { kind: output.kind };
    case 'error':
      return { kind: output.kind, context: output.context, error: error(output.error) };
  }
}

/** An abstract state split into named parts, and what changed since the previous one. */
export interface AbstractDelta {
  /** 16 hex digits of SHA-256 over the canonical JSON of the whole state. */
  readonly hash: string;
  /**
   * Parts that changed, each as its canonical JSON (a `CanonicalFragment`, written verbatim by
   * `canonicalJson`; `null` value: the part disappeared); `null` when nothing changed.
   */
  readonly changed: Readonly<Record<string, unknown>> | null;
  readonly parts: ReadonlyMap<string, string>;
}

interface Part {
  readonly json: string;
  readonly hash: string;
}

const partCache = new WeakMap<object, Part>();

const encoder = new TextEncoder();

function hashOf(c: CryptoProvider, text: string): string {
  return toHex(c.sha256(encoder.encode(text)).subarray(0, 8));
}

/** Canonical JSON and hash of one part; cached per object (abstract objects are never mutated). */
function part(c: CryptoProvider, value: unknown, before: Part | undefined): Part {
  const isObject = typeof value === 'object' && value !== null;
  if (isObject) {
    const cached = partCache.get(value);
    if (cached !== undefined) return cached;
  }
  const json = canonicalJson(value, c);
  // A part rebuilt each step (the device part, say) often has the same JSON as last time: the
  // same text has the same hash, so reuse it rather than hash again.
  const computed = before !== undefined && before.json === json ? before : { json, hash: hashOf(c, json) };
  if (isObject) partCache.set(value, computed);
  return computed;
}

/** What a delta computed, kept with its `parts` map so the next delta can reuse it. */
interface DeltaMemo {
  /** The part keys, in order, and each part (same index). */
  readonly keys: readonly string[];
  readonly parts: readonly Part[];
  readonly hashes: string;
  readonly hash: string;
}

const deltaMemo = new WeakMap<ReadonlyMap<string, string>, DeltaMemo>();

function delta(
  entries: readonly (readonly [string, unknown])[],
  previous: ReadonlyMap<string, string>,
  c: CryptoProvider,
): AbstractDelta {
  const memo = deltaMemo.get(previous);
  // Usually the same keys come in the same order as last time: compare by index, no lookups.
  let sameKeys = memo !== undefined && memo.keys.length === entries.length;
  let changed: Record<string, unknown> | null = null;
  const parts: Part[] = [];
  entries.forEach(([key, value], i) => {
    const aligned = sameKeys && memo?.keys[i] === key;
    if (!aligned) sameKeys = false;
    const before = aligned ? memo?.parts[i] : undefined;
    const p = part(c, value, before);
    parts.push(p);
    if ((before === undefined ? previous.get(key) : before.hash) !== p.hash) {
      // An undefined part stays undefined (omitted from the trace line), as before.
      (changed ??= {})[key] = value === undefined ? undefined : new CanonicalFragment(p.json);
    }
  });
  // The same keys with the same hashes: the previous map and hash stand for this state too.
  if (changed === null && sameKeys && memo !== undefined) {
    return { hash: memo.hash, changed: null, parts: previous };
  }
  const keys = sameKeys && memo !== undefined ? memo.keys : entries.map(([key]) => key);
  const next = new Map<string, string>();
  let hashes = '';
  keys.forEach((key, i) => {
    const p = parts[i];
    if (p === undefined) return;
    next.set(key, p.hash);
    if (hashes.length > 0) hashes += ';';
    hashes += key + '=' + p.hash;
  });
  if (!sameKeys) for (const key of previous.keys()) if (!next.has(key)) (changed ??= {})[key] = null;
  const hash = memo !== undefined && memo.hashes === hashes ? memo.hash : hashOf(c, hashes);
  deltaMemo.set(next, { keys, parts, hashes, hash });
  return { hash, changed, parts: next };
}

/**
 * A device's abstract state (spec/device-abstract.ts) as parts: `device` (lifecycle, address,
 * outbox, pending requests, prekey ids, counts, own address, message record count), `trust`,
 * `user:<id>` (the user record's stale flag) and one part per device record,
 * `record:<user>.<device>`. Full traces record the parts that changed at each step
 * (`abstractDelta`, a removed part as `null`); replaying the deltas in order rebuilds the state.
 * `abstractHash` is SHA-256 over the part hashes `key=hash;…` in order (16 hex digits).
 */
export function abstractDelta(
  view: DeviceAbstractView,
  previous: ReadonlyMap<string, string>,
  c: CryptoProvider,
): AbstractDelta {
  let entries = deviceEntries.get(view);
  if (entries === undefined) {
    entries = [
      ['device', devicePart(view, c)],
      ['trust', view.trust],
    ];
    for (const user of view.sesame.users) for (const entry of userEntries(user, c)) entries.push(entry);
    deviceEntries.set(view, entries);
  }
  return delta(entries, previous, c);
}

/** The parts of a device view (views are immutable, and a step that changes nothing returns the same one). */
const deviceEntries = new WeakMap<DeviceAbstractView, (readonly [string, unknown])[]>();

/** The parts of one user record, kept with the (immutable) record: unchanged users reuse their keys. */
const userEntriesMemo = new WeakMap<UserRecordAbstract, readonly (readonly [string, unknown])[]>();

function userEntries(user: UserRecordAbstract, c: CryptoProvider): readonly (readonly [string, unknown])[] {
  let entries = userEntriesMemo.get(user);
  if (entries === undefined) {
    entries = [
      [`user:${user.userId}`, user.stale ? STALE_USER : FRESH_USER],
      ...user.devices.map(
        (record) => [`record:${user.userId}.${record.deviceId}`, withSessionFragments(record, c)] as const,
      ),
    ];
    userEntriesMemo.set(user, entries);
  }
  return entries;
}

/** Canonical JSON of each session of a device record, per (immutable) session object. */
const sessionJson = new WeakMap<SessionAbstract, CanonicalFragment>();

/**
 * A device record whose sessions are their canonical JSON, memoised per session: a record keeps
 * up to 40 archived sessions that do not change when its current one does.
 */
function withSessionFragments(record: DeviceRecordAbstract, c: CryptoProvider): Record<string, unknown> {
  const json = (session: SessionAbstract): CanonicalFragment => {
    let fragment = sessionJson.get(session);
    if (fragment === undefined) {
      fragment = new CanonicalFragment(canonicalJson(session, c));
      sessionJson.set(session, fragment);
    }
    return fragment;
  };
  const { current, archived } = record.sessions;
  return {
    ...record,
    sessions: {
      ...record.sessions,
      current: current === null ? null : json(current),
      archived: archived.map(json),
    },
  };
}

/** The two values of a `user:<id>` part, shared so that their JSON and hash are computed once. */
const STALE_USER = Object.freeze({ stale: true });
const FRESH_USER = Object.freeze({ stale: false });

/** Canonical JSON of abstract-state members (arrays and records, never mutated), per object. */
const memberJson = new WeakMap<object, CanonicalFragment>();

/** `member` itself, or for an object its canonical JSON, memoised per object. */
function memberFragment(member: unknown, c: CryptoProvider): unknown {
  if (typeof member !== 'object' || member === null) return member;
  let json = memberJson.get(member);
  if (json === undefined) {
    json = new CanonicalFragment(canonicalJson(member, c));
    memberJson.set(member, json);
  }
  return json;
}

/**
 * The `device` part: every member of the view but `sesame` and `trust`, plus the Sesame state's
 * own address and message record count, each object member as its canonical JSON memoised per
 * member object (an engine that keeps a member, the outbox or the prekey ids, while it is unchanged
 * has it serialised once; `canonicalJson` writes a fragment verbatim, so the part's JSON is the same).
 */
function devicePart(view: DeviceAbstractView, c: CryptoProvider): Record<string, unknown> {
  const part: Record<string, unknown> = {};
  for (const [key, member] of Object.entries(view)) {
    if (key !== 'sesame' && key !== 'trust') part[key] = memberFragment(member, c);
  }
  part.self = memberFragment(view.sesame.self, c);
  part.messageRecords = view.sesame.messageRecords;
  return part;
}

/** The server's abstract state as parts: `relay` (provisioning and blob counts) and one per account. */
export function serverAbstractDelta(
  view: ServerAbstract,
  previous: ReadonlyMap<string, string>,
  c: CryptoProvider,
): AbstractDelta {
  const entries: (readonly [string, unknown])[] = [
    ['relay', { provisioningEntries: view.provisioningEntries, blobs: view.blobs }],
  ];
  for (const account of view.accounts) entries.push([`account:${account.userId}`, account]);
  return delta(entries, previous, c);
}
