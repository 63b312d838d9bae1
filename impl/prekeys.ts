/**
 * Key material of a device and its prekey store (WHITEPAPER.md, "Key types" and "PQXDH"): identity
 * key pair, registration id, signed prekeys, one-time prekeys, signed Kyber prekeys (one-time and
 * last resort), and the bundle a server hands to an initiator. Every key comes from the injected
 * Rng in the order fixed by spec/draws.ts (WP-KEYS-09).
 * @module
 */
import { kemGenerateKeyPair } from '../spec/crypto/kyber.js';
import { xeddsaSign } from '../spec/crypto/xeddsa.js';
import type { Env } from '../spec/env.js';
import { UsageError } from '../spec/errors.js';
import { generateKeyPair, type KeyPair } from '../spec/keys.js';
import type { PreKeyBundle } from '../spec/bundle.js';

export type { PreKeyBundle } from '../spec/bundle.js';

/** A signed prekey with its id and signature over its 33-byte public encoding. */
export interface SignedPreKeyRecord {
  readonly keyId: number;
  readonly keyPair: KeyPair;
  readonly signature: Uint8Array;
}

/** A one-time EC prekey. */
export interface OneTimePreKeyRecord {
  readonly keyId: number;
  readonly keyPair: KeyPair;
}

/** A Kyber-1024 prekey (encoded `0x08 ‖ …`) with its signature; last-resort keys survive use. */
export interface KyberPreKeyRecord {
  readonly keyId: number;
  readonly publicKey: Uint8Array;
  readonly secretKey: Uint8Array;
  readonly signature: Uint8Array;
  readonly lastResort: boolean;
}

/** A device's long-term identity and the prekeys it still holds. */
export interface PreKeyState {
  readonly identityKeyPair: KeyPair;
  readonly registrationId: number;
  readonly signedPreKeys: readonly SignedPreKeyRecord[];
  readonly oneTimePreKeys: readonly OneTimePreKeyRecord[];
  readonly kyberPreKeys: readonly KyberPreKeyRecord[];
}

/** Draws a registration id in 1..16380 from two random bytes (spec/draws.ts `generateRegistrationId`). */
export function generateRegistrationId(env: Env): number {
  const bytes = env.rng.randomBytes(2);
  const value = ((bytes[0] ?? 0) << 8) | (bytes[1] ?? 0);
  return (value % 16380) + 1;
}

/** A new identity key pair (32 bytes drawn). */
export function generateIdentityKeyPair(env: Env): KeyPair {
  return generateKeyPair(env.crypto, env.rng);
}

/** A signed prekey: key pair, then the XEdDSA signature over its public encoding (WP-PQXDH-01). */
export function generateSignedPreKey(env: Env, identityKeyPair: KeyPair, keyId: number): SignedPreKeyRecord {
  checkKeyId(keyId);
  const keyPair = generateKeyPair(env.crypto, env.rng);
  const signature = xeddsaSign(
    env.crypto,
    identityKeyPair.privateKey,
    keyPair.publicKey,
    env.rng.randomBytes(64),
  );
  return { keyId, keyPair, signature };
}

/** A one-time EC prekey (32 bytes drawn). */
export function generateOneTimePreKey(env: Env, keyId: number): OneTimePreKeyRecord {
  checkKeyId(keyId);
  return { keyId, keyPair: generateKeyPair(env.crypto, env.rng) };
}

/** A signed Kyber prekey: key pair seed (64 bytes), then the signature over the 1569-byte encoding. */
export function generateKyberPreKey(
  env: Env,
  identityKeyPair: KeyPair,
  keyId: number,
  lastResort: boolean,
): KyberPreKeyRecord {
  checkKeyId(keyId);
  const { publicKey, secretKey } = kemGenerateKeyPair(env.crypto, env.rng);
  const signature = xeddsaSign(env.crypto, identityKeyPair.privateKey, publicKey, env.rng.randomBytes(64));
  return { keyId, publicKey, secretKey, signature, lastResort };
}

/** Options for {@link generatePreKeyState}. */
export interface PreKeyStateOptions {
  readonly oneTimePreKeys?: number;
  readonly oneTimeKyberPreKeys?: number;
}

/**
 * A device's complete key material: identity, registration id, signed prekey 1, one-time prekeys
 * 1..n, one-time Kyber prekeys 1..m and a last-resort Kyber prekey with id m+1.
 */
export function generatePreKeyState(env: Env, options: PreKeyStateOptions = {}): PreKeyState {
  const identityKeyPair = generateIdentityKeyPair(env);
  const registrationId = generateRegistrationId(env);
  const signedPreKeys = [generateSignedPreKey(env, identityKeyPair, 1)];
  const oneTimePreKeys: OneTimePreKeyRecord[] = [];
  for (let i = 1; i <= (options.oneTimePreKeys ?? 5); i++) oneTimePreKeys.push(generateOneTimePreKey(env, i));
  const kyberPreKeys: KyberPreKeyRecord[] = [];
  const oneTimeKyber = options.oneTimeKyberPreKeys ?? 2;
  for (let i = 1; i <= oneTimeKyber; i++)
    kyberPreKeys.push(generateKyberPreKey(env, identityKeyPair, i, false));
  kyberPreKeys.push(generateKyberPreKey(env, identityKeyPair, oneTimeKyber + 1, true));
  return { identityKeyPair, registrationId, signedPreKeys, oneTimePreKeys, kyberPreKeys };
}

/** Which prekeys a bundle should carry; defaults: the first one-time EC key and first Kyber key held. */
export interface BundleChoice {
  readonly deviceId?: number;
  /** A one-time prekey id, or `null` for a bundle without one (OPKs exhausted). */
  readonly preKeyId?: number | null;
  readonly kyberPreKeyId?: number;
}

/** Builds the public bundle for a device's current prekeys (what an honest server would hand out). */
export function bundleFromPreKeyState(state: PreKeyState, choice: BundleChoice = {}): PreKeyBundle {
  const signed = state.signedPreKeys[state.signedPreKeys.length - 1];
  if (signed === undefined) throw new UsageError('no signed prekey to publish');
  const preKeyId = choice.preKeyId === undefined ? (state.oneTimePreKeys[0]?.keyId ?? null) : choice.preKeyId;
  const preKey = preKeyId === null ? undefined : state.oneTimePreKeys.find((k) => k.keyId === preKeyId);
  if (preKeyId !== null && preKey === undefined) throw new UsageError(`no one-time prekey ${preKeyId}`);
  const kyber =
    choice.kyberPreKeyId === undefined
      ? state.kyberPreKeys[0]
      : state.kyberPreKeys.find((k) => k.keyId === choice.kyberPreKeyId);
  if (kyber === undefined) throw new UsageError('no Kyber prekey to publish');
  return {
    registrationId: state.registrationId,
    deviceId: choice.deviceId ?? 1,
    identityKey: state.identityKeyPair.publicKey,
    signedPreKeyId: signed.keyId,
    signedPreKey: signed.keyPair.publicKey,
    signedPreKeySignature: signed.signature,
    preKeyId,
    preKey: preKey?.keyPair.publicKey ?? null,
    kyberPreKeyId: kyber.keyId,
    kyberPreKey: kyber.publicKey,
    kyberPreKeySignature: kyber.signature,
  };
}

function checkKeyId(keyId: number): void {
  if (!Number.isSafeInteger(keyId) || keyId < 0 || keyId > 0xffff_ffff) {
    throw new UsageError(`prekey id must be a uint32, got ${keyId}`);
  }
}
