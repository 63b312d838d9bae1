/**
 * The model's hardened receive rules (WHITEPAPER.md WP-PQXDH-13, WP-SES-20; spec/security-mode.ts)
 * as pure helpers for the device machine's guards and actions: the initial-message replay cache
 * (Kobeissi–Bhargavan–Blanchet 2017) and clone detection from `previous_counter` evidence
 * (Cohn-Gordon et al. 2020; Cremers–Jacomme–Naska 2023).
 *
 * Written independently of impl/device.ts; the device conformance suite checks both engines emit
 * the same outputs and reach the same abstract state with these switches on and off.
 * @module
 */
import { copyBytes, equalBytes } from '../spec/bytes.js';
import { CHAIN_SIGHTINGS_CAPACITY, INITIAL_REPLAY_CACHE_CAPACITY } from '../spec/constants.js';
import { reject, type ProtocolError } from '../spec/errors.js';
import type { DeviceAddress } from '../spec/identity.js';
import type { Envelope } from '../spec/server-api.js';
import { parsePreKeySignalMessage, parseSignalMessage, type ParsedSignalMessage } from '../spec/wire.js';
import type { ModelSesame } from './sesame.js';
import {
  holdsSession,
  type ModelPreKeys,
  type ModelSession,
  type ModelSessionRecord,
} from './sesame-sessions.js';

/** WP-PQXDH-13: an accepted PreKey message that named no one-time prekey. */
export interface ModelInitialMessage {
  readonly identityKey: Uint8Array;
  readonly baseKey: Uint8Array;
  readonly signedPreKeyId: number;
}

/** WP-SES-20: one of a peer's sending chains as seen here. */
export interface ModelChainSighting {
  readonly userId: string;
  readonly deviceId: number;
  readonly baseKey: Uint8Array;
  readonly ratchetKey: Uint8Array;
  /** The `previous_counter` the chain's messages announce. */
  readonly announcedPrevious: number;
  /** The highest counter accepted on the chain. */
  readonly highest: number;
}

/** What a decrypted message says about the sender's chains. */
export type ModelSightingCheck =
  | { readonly kind: 'unplaced' }
  | { readonly kind: 'fork'; readonly evidence: string }
  | { readonly kind: 'consistent'; readonly sightings: readonly ModelChainSighting[] };

function sessionsOf(sesame: ModelSesame, peer: DeviceAddress): ModelSessionRecord | undefined {
  return sesame.users.find((u) => u.userId === peer.userId)?.devices.find((d) => d.deviceId === peer.deviceId)
    ?.sessions;
}

function allSessions(record: ModelSessionRecord | undefined): readonly ModelSession[] {
  if (record === undefined) return [];
  return record.active === null ? record.inactive : [record.active, ...record.inactive];
}

/**
 * WP-PQXDH-13: the PreKey message `bytes` names no one-time prekey, no session of the sender's
 * record carries its base key, and its (identity key, base key) was accepted before.
 */
export function replayedInitialMessage(
  sesame: ModelSesame,
  cache: readonly ModelInitialMessage[],
  sender: DeviceAddress,
  bytes: Uint8Array,
): boolean {
  const parsed = parsePreKeySignalMessage(bytes);
  if (!parsed.ok || parsed.value.preKeyId !== undefined) return false;
  const { baseKey, identityKey, messageVersion } = parsed.value;
  const record = sessionsOf(sesame, sender);
  if (record !== undefined && holdsSession(record, baseKey, messageVersion)) return false;
  return cache.some(
    (entry) => equalBytes(entry.identityKey, identityKey) && equalBytes(entry.baseKey, baseKey),
  );
}

/** WP-PQXDH-13: the refusal of a replayed initial message (same text and details as impl/). */
export function replayRefusal(bytes: Uint8Array): ProtocolError {
  const parsed = parsePreKeySignalMessage(bytes);
  const signedPreKeyId = parsed.ok ? parsed.value.signedPreKeyId : 0;
  return reject(
    'INITIAL_MESSAGE_REPLAYED',
    'a PreKey message without a one-time prekey was accepted before',
    {
      signedPreKeyId,
    },
  ).error;
}

/**
 * WP-PQXDH-13: the cache after the PreKey message `bytes` created a session: entries for signed
 * prekeys no longer held are dropped, a message without a one-time prekey is appended, and only
 * the newest INITIAL_REPLAY_CACHE_CAPACITY entries stay.
 */
export function cacheAfterAccepting(
  cache: readonly ModelInitialMessage[],
  prekeys: ModelPreKeys,
  bytes: Uint8Array,
): readonly ModelInitialMessage[] {
  const live = cache.filter((entry) => prekeys.signedPreKeys.some((k) => k.keyId === entry.signedPreKeyId));
  const parsed = parsePreKeySignalMessage(bytes);
  if (!parsed.ok || parsed.value.preKeyId !== undefined) return live;
  const entry: ModelInitialMessage = {
    identityKey: copyBytes(parsed.value.identityKey),
    baseKey: copyBytes(parsed.value.baseKey),
    signedPreKeyId: parsed.value.signedPreKeyId,
  };
  return [...live, entry].slice(-INITIAL_REPLAY_CACHE_CAPACITY);
}

/** Whether the PreKey message `bytes` created a session (no session of the record had its base key). */
export function createsSession(sesame: ModelSesame, sender: DeviceAddress, bytes: Uint8Array): boolean {
  const parsed = parsePreKeySignalMessage(bytes);
  if (!parsed.ok) return false;
  const record = sessionsOf(sesame, sender);
  return record === undefined || !holdsSession(record, parsed.value.baseKey, parsed.value.messageVersion);
}

function innerMessage(envelope: Envelope): ParsedSignalMessage | null {
  if (envelope.type === 'prekey') {
    const parsed = parsePreKeySignalMessage(envelope.bytes);
    return parsed.ok ? parsed.value.inner : null;
  }
  const parsed = parseSignalMessage(envelope.bytes);
  return parsed.ok ? parsed.value : null;
}

/**
 * WP-SES-20: places a decrypted message on the sender's chains (`before` and `after` are the Sesame
 * states around its decryption) and looks for fork evidence: a new chain announcing fewer messages
 * on the previous chain than were accepted there, a chain announcing two `previous_counter`
 * values, or a message beyond what the chain's successor announced.
 */
export function checkChainSighting(
  sightings: readonly ModelChainSighting[],
  before: ModelSesame,
  after: ModelSesame,
  sender: DeviceAddress,
  envelope: Envelope,
): ModelSightingCheck {
  const message = innerMessage(envelope);
  if (message === null) return { kind: 'unplaced' };
  const holder = allSessions(sessionsOf(after, sender)).find((s) =>
    s.receivingChains.some((ch) => equalBytes(ch.ratchetKey, message.ratchetKey)),
  );
  if (holder === undefined) return { kind: 'unplaced' };
  const baseKey = holder.baseKey;
  const previousState = allSessions(sessionsOf(before, sender)).find((s) => equalBytes(s.baseKey, baseKey));
  const chains = previousState?.receivingChains ?? [];
  const seen = (ratchetKey: Uint8Array | undefined): ModelChainSighting | undefined =>
    ratchetKey === undefined
      ? undefined
      : sightings.find(
          (x) =>
            x.userId === sender.userId &&
            x.deviceId === sender.deviceId &&
            equalBytes(x.baseKey, baseKey) &&
            equalBytes(x.ratchetKey, ratchetKey),
        );
  const at = chains.findIndex((ch) => equalBytes(ch.ratchetKey, message.ratchetKey));
  if (at === -1) {
    const predecessor = seen(chains.at(-1)?.ratchetKey);
    if (predecessor !== undefined && predecessor.highest > message.previousCounter)
      return {
        kind: 'fork',
        evidence: `message ${predecessor.highest} was accepted on the previous chain, but the new chain announces previous_counter ${message.previousCounter}`,
      };
  } else {
    const same = seen(message.ratchetKey);
    if (same !== undefined && same.announcedPrevious !== message.previousCounter)
      return {
        kind: 'fork',
        evidence: `one chain announced previous_counter ${same.announcedPrevious} and ${message.previousCounter}`,
      };
    const successor = seen(chains[at + 1]?.ratchetKey);
    if (successor !== undefined && message.counter > successor.announcedPrevious)
      return {
        kind: 'fork',
        evidence: `message ${message.counter} arrived on a chain its successor closed at previous_counter ${successor.announcedPrevious}`,
      };
  }
  const old = seen(message.ratchetKey);
  const fresh: ModelChainSighting = {
    userId: sender.userId,
    deviceId: sender.deviceId,
    baseKey: copyBytes(baseKey),
    ratchetKey: copyBytes(message.ratchetKey),
    announcedPrevious: message.previousCounter,
    highest: old === undefined ? message.counter : Math.max(old.highest, message.counter),
  };
  const next = old === undefined ? [...sightings, fresh] : sightings.map((x) => (x === old ? fresh : x));
  return { kind: 'consistent', sightings: next.slice(-CHAIN_SIGHTINGS_CAPACITY) };
}
