/**
 * WP-STATE-01: the one canonical JSON encoding of each state type: a `version` field, lowercase hex
 * for bytes, fields in a fixed order. Decoders validate every field's type and byte length and
 * return typed errors; `decode(encode(x))` equals `x` and `encode(decode(s)) === s` for canonical
 * `s` (round-trip tested).
 * @module
 */
import {
  ARCHIVED_STATES_MAX_LENGTH,
  CIPHERTEXT_MESSAGE_CURRENT_VERSION,
  MAX_MESSAGE_KEYS,
  MAX_RECEIVER_CHAINS,
  MAX_UINT32,
} from '../spec/constants.js';
import { toHex } from '../spec/hex.js';
import {
  decodeEcPublicKey,
  decodeKemCiphertext,
  decodeKemPublicKey,
  decodeKemSecretKey,
} from '../spec/keys.js';
import { accept, reject, type Result } from '../spec/errors.js';
import type { KeyPair } from '../spec/keys.js';
import type { KyberPreKeyRecord, OneTimePreKeyRecord, PreKeyState, SignedPreKeyRecord } from './prekeys.js';
import type {
  ChainKey,
  PendingPreKey,
  ReceiverChain,
  SessionRecord,
  SessionState,
  SkippedMessageKey,
} from './session-state.js';

/** Version of the session-record JSON encoding. */
export const SESSION_RECORD_JSON_VERSION = 1;
/** Version of the prekey-state JSON encoding. */
export const PREKEY_STATE_JSON_VERSION = 1;

type Json = null | boolean | number | string | readonly Json[] | { readonly [key: string]: Json };

const keyPairJson = (k: KeyPair): Json => ({
  public_key: toHex(k.publicKey),
  private_key: toHex(k.privateKey),
});
const chainKeyJson = (k: ChainKey): Json => ({ key: toHex(k.key), index: k.index });
const skippedJson = (k: SkippedMessageKey): Json => ({ index: k.index, seed: toHex(k.seed) });
const receiverJson = (r: ReceiverChain): Json => ({
  ratchet_key: toHex(r.ratchetKey),
  chain_key: chainKeyJson(r.chainKey),
  skipped: r.skipped.map(skippedJson),
});
const pendingJson = (p: PendingPreKey): Json => ({
  pre_key_id: p.preKeyId,
  signed_pre_key_id: p.signedPreKeyId,
  kyber_pre_key_id: p.kyberPreKeyId,
  kyber_ciphertext: toHex(p.kyberCiphertext),
  base_key: toHex(p.baseKey),
  created_at: p.createdAt,
});
const sessionJson = (s: SessionState): Json => ({
  version: s.version,
  local_identity_key: toHex(s.localIdentityKey),
  remote_identity_key: toHex(s.remoteIdentityKey),
  local_registration_id: s.localRegistrationId,
  remote_registration_id: s.remoteRegistrationId,
  alice_base_key: toHex(s.aliceBaseKey),
  root_key: toHex(s.rootKey),
  sender_ratchet_key: keyPairJson(s.senderRatchetKey),
  sender_chain_key: chainKeyJson(s.senderChainKey),
  previous_counter: s.previousCounter,
  receiver_chains: s.receiverChains.map(receiverJson),
  pending_pre_key: s.pendingPreKey === null ? null : pendingJson(s.pendingPreKey),
});

/** Encodes a session record as canonical JSON. */
export function encodeSessionRecord(record: SessionRecord): string {
  return JSON.stringify({
    version: SESSION_RECORD_JSON_VERSION,
    current: record.current === null ? null : sessionJson(record.current),
    archived: record.archived.map(sessionJson),
  });
}

/** Encodes a prekey state as canonical JSON. */
export function encodePreKeyState(state: PreKeyState): string {
  return JSON.stringify({
    version: PREKEY_STATE_JSON_VERSION,
    identity_key_pair: keyPairJson(state.identityKeyPair),
    registration_id: state.registrationId,
    signed_pre_keys: state.signedPreKeys.map((k) => ({
      key_id: k.keyId,
      key_pair: keyPairJson(k.keyPair),
      signature: toHex(k.signature),
    })),
    one_time_pre_keys: state.oneTimePreKeys.map((k) => ({
      key_id: k.keyId,
      key_pair: keyPairJson(k.keyPair),
    })),
    kyber_pre_keys: state.kyberPreKeys.map((k) => ({
      key_id: k.keyId,
      public_key: toHex(k.publicKey),
      secret_key: toHex(k.secretKey),
      signature: toHex(k.signature),
      last_resort: k.lastResort,
    })),
  });
}

/** Thrown inside a decoder and turned into a returned `STATE_MALFORMED` at its entry point. */
class Malformed {
  constructor(readonly path: string) {}
}

type Obj = { readonly [key: string]: unknown };

function obj(value: unknown, path: string): Obj {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Malformed(path);
  return value as Obj;
}
function arr(value: unknown, path: string): readonly unknown[] {
  if (!Array.isArray(value)) throw new Malformed(path);
  return value;
}
function uint(value: unknown, path: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) throw new Malformed(path);
  return value;
}
/** Counters, indices, ids: they travel as protobuf uint32, so a stored value must fit one. */
function uint32(value: unknown, path: string): number {
  const n = uint(value, path);
  if (n > MAX_UINT32) throw new Malformed(path);
  return n;
}
/** Arrays bounded by a named limit (every store is bounded, WP-DR-08/09, WP-REC-01). */
function bounded(value: unknown, path: string, limit: number): readonly unknown[] {
  const a = arr(value, path);
  if (a.length > limit) throw new Malformed(path);
  return a;
}
/** A stored key must pass the same decoder as a key from the wire (WP-KEYS-01..03, WP-KEYS-05). */
function validated(
  decode: (b: Uint8Array) => { readonly ok: boolean },
  value: unknown,
  path: string,
  length: number,
): Uint8Array {
  const b = bytes(value, path, length);
  if (!decode(b).ok) throw new Malformed(path);
  return b;
}
const ecPublic = (v: unknown, p: string): Uint8Array => validated(decodeEcPublicKey, v, p, 33);
function bool(value: unknown, path: string): boolean {
  if (typeof value !== 'boolean') throw new Malformed(path);
  return value;
}
function bytes(value: unknown, path: string, length?: number): Uint8Array {
  if (typeof value !== 'string' || !/^(?:[0-9a-f]{2})*$/.test(value)) throw new Malformed(path);
  if (length !== undefined && value.length !== 2 * length) throw new Malformed(path);
  const out = new Uint8Array(value.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(value.slice(2 * i, 2 * i + 2), 16);
  return out;
}

const readKeyPair = (v: unknown, p: string): KeyPair => {
  const o = obj(v, p);
  return {
    publicKey: ecPublic(o['public_key'], `${p}.public_key`),
    privateKey: bytes(o['private_key'], `${p}.private_key`, 32),
  };
};
const readChainKey = (v: unknown, p: string): ChainKey => {
  const o = obj(v, p);
  return { key: bytes(o['key'], `${p}.key`, 32), index: uint32(o['index'], `${p}.index`) };
};
const readSession = (v: unknown, p: string): SessionState => {
  const o = obj(v, p);
  const pendingRaw = o['pending_pre_key'];
  let pendingPreKey: PendingPreKey | null = null;
  if (pendingRaw !== null) {
    const q = obj(pendingRaw, `${p}.pending_pre_key`);
    const preKeyId = q['pre_key_id'];
    pendingPreKey = {
      preKeyId: preKeyId === null ? null : uint32(preKeyId, `${p}.pending_pre_key.pre_key_id`),
      signedPreKeyId: uint32(q['signed_pre_key_id'], `${p}.pending_pre_key.signed_pre_key_id`),
      kyberPreKeyId: uint32(q['kyber_pre_key_id'], `${p}.pending_pre_key.kyber_pre_key_id`),
      kyberCiphertext: validated(
        decodeKemCiphertext,
        q['kyber_ciphertext'],
        `${p}.pending_pre_key.kyber_ciphertext`,
        1569,
      ),
      baseKey: ecPublic(q['base_key'], `${p}.pending_pre_key.base_key`),
      createdAt: uint(q['created_at'], `${p}.pending_pre_key.created_at`),
    };
  }
  // WP-DR-12: only sessions of the version this profile speaks.
  if (o['version'] !== CIPHERTEXT_MESSAGE_CURRENT_VERSION) throw new Malformed(`${p}.version`);
  return {
    version: CIPHERTEXT_MESSAGE_CURRENT_VERSION,
    localIdentityKey: ecPublic(o['local_identity_key'], `${p}.local_identity_key`),
    remoteIdentityKey: ecPublic(o['remote_identity_key'], `${p}.remote_identity_key`),
    localRegistrationId: uint32(o['local_registration_id'], `${p}.local_registration_id`),
    remoteRegistrationId: uint32(o['remote_registration_id'], `${p}.remote_registration_id`),
    aliceBaseKey: ecPublic(o['alice_base_key'], `${p}.alice_base_key`),
    rootKey: bytes(o['root_key'], `${p}.root_key`, 32),
    senderRatchetKey: readKeyPair(o['sender_ratchet_key'], `${p}.sender_ratchet_key`),
    senderChainKey: readChainKey(o['sender_chain_key'], `${p}.sender_chain_key`),
    previousCounter: uint32(o['previous_counter'], `${p}.previous_counter`),
    receiverChains: bounded(o['receiver_chains'], `${p}.receiver_chains`, MAX_RECEIVER_CHAINS).map((r, i) => {
      const q = obj(r, `${p}.receiver_chains[${i}]`);
      return {
        ratchetKey: ecPublic(q['ratchet_key'], `${p}.receiver_chains[${i}].ratchet_key`),
        chainKey: readChainKey(q['chain_key'], `${p}.receiver_chains[${i}].chain_key`),
        skipped: bounded(q['skipped'], `${p}.receiver_chains[${i}].skipped`, MAX_MESSAGE_KEYS).map((s, j) => {
          const k = obj(s, `${p}.receiver_chains[${i}].skipped[${j}]`);
          return {
            index: uint32(k['index'], `${p}.receiver_chains[${i}].skipped[${j}].index`),
            seed: bytes(k['seed'], `${p}.receiver_chains[${i}].skipped[${j}].seed`, 32),
          };
        }),
      };
    }),
    pendingPreKey,
  };
};

function parseWithVersion(json: string, expectedVersion: number): Result<Obj> {
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch {
    return reject('STATE_MALFORMED', 'state is not valid JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    return reject('STATE_MALFORMED', 'state is not a JSON object');
  const version = (value as Obj)['version'];
  // WP-STATE-01: unknown versions are refused, never guessed at.
  if (version !== expectedVersion) {
    return reject('STATE_VERSION_UNKNOWN', 'unknown state encoding version', {
      expected: expectedVersion,
      got: String(version),
    });
  }
  return accept(value as Obj);
}

function guarded<T>(read: () => T): Result<T> {
  try {
    return accept(read());
  } catch (e) {
    if (e instanceof Malformed)
      return reject('STATE_MALFORMED', 'state field is missing or has the wrong type', { path: e.path });
    throw e;
  }
}

/** Decodes a session record; `STATE_MALFORMED` names the first bad field's path. */
export function decodeSessionRecord(json: string): Result<SessionRecord> {
  const parsed = parseWithVersion(json, SESSION_RECORD_JSON_VERSION);
  if (!parsed.ok) return parsed;
  const o = parsed.value;
  return guarded(() => ({
    current: o['current'] === null ? null : readSession(o['current'], 'current'),
    archived: bounded(o['archived'], 'archived', ARCHIVED_STATES_MAX_LENGTH).map((s, i) =>
      readSession(s, `archived[${i}]`),
    ),
  }));
}

/** Decodes a prekey state. */
export function decodePreKeyState(json: string): Result<PreKeyState> {
  const parsed = parseWithVersion(json, PREKEY_STATE_JSON_VERSION);
  if (!parsed.ok) return parsed;
  const o = parsed.value;
  return guarded(() => ({
    identityKeyPair: readKeyPair(o['identity_key_pair'], 'identity_key_pair'),
    registrationId: uint32(o['registration_id'], 'registration_id'),
    signedPreKeys: arr(o['signed_pre_keys'], 'signed_pre_keys').map((v, i): SignedPreKeyRecord => {
      const k = obj(v, `signed_pre_keys[${i}]`);
      return {
        keyId: uint32(k['key_id'], `signed_pre_keys[${i}].key_id`),
        keyPair: readKeyPair(k['key_pair'], `signed_pre_keys[${i}].key_pair`),
        signature: bytes(k['signature'], `signed_pre_keys[${i}].signature`, 64),
      };
    }),
    oneTimePreKeys: arr(o['one_time_pre_keys'], 'one_time_pre_keys').map((v, i): OneTimePreKeyRecord => {
      const k = obj(v, `one_time_pre_keys[${i}]`);
      return {
        keyId: uint32(k['key_id'], `one_time_pre_keys[${i}].key_id`),
        keyPair: readKeyPair(k['key_pair'], `one_time_pre_keys[${i}].key_pair`),
      };
    }),
    kyberPreKeys: arr(o['kyber_pre_keys'], 'kyber_pre_keys').map((v, i): KyberPreKeyRecord => {
      const k = obj(v, `kyber_pre_keys[${i}]`);
      return {
        keyId: uint32(k['key_id'], `kyber_pre_keys[${i}].key_id`),
        publicKey: validated(decodeKemPublicKey, k['public_key'], `kyber_pre_keys[${i}].public_key`, 1569),
        secretKey: validated(decodeKemSecretKey, k['secret_key'], `kyber_pre_keys[${i}].secret_key`, 3169),
        signature: bytes(k['signature'], `kyber_pre_keys[${i}].signature`, 64),
        lastResort: bool(k['last_resort'], `kyber_pre_keys[${i}].last_resort`),
      };
    }),
  }));
}
