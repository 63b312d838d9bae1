/**
 * Setups of the script families: both parties' key material and the bundles the initiator fetches,
 * as explicit hex (never Lockstep's state JSON or seeded stream), with their codecs and a check
 * that the material is self-consistent (public keys derive from private keys, prekey signatures
 * verify: WP-KEYS-01, WP-KEYS-06, WP-KEYS-07, WP-PQXDH-01).
 *
 * ```text
 * setup  = { comment, parties: { alice: party, bob: party }, bundles: { <name>: bundle } }
 * party  = { identity_key_pair: { public_key, private_key }, registration_id,
 *            signed_pre_keys:   [ { key_id, public_key, private_key, signature } ],
 *            one_time_pre_keys: [ { key_id, public_key, private_key } ],
 *            kyber_pre_keys:    [ { key_id, public_key, secret_key, signature, last_resort } ] }
 * bundle = { registration_id, device_id, identity_key, signed_pre_key_id, signed_pre_key,
 *            signed_pre_key_signature, pre_key_id, pre_key, kyber_pre_key_id, kyber_pre_key,
 *            kyber_pre_key_signature }            (absent prekeys are null)
 * ```
 * @module
 */
import type { CryptoProvider } from '../../spec/crypto/provider.js';
import { xeddsaVerify } from '../../spec/crypto/xeddsa.js';
import { equalBytes } from '../../spec/bytes.js';
import { publicKeyFromPrivate } from '../../spec/keys.js';
import type { KeyPair } from '../../spec/keys.js';
import type { PreKeyBundle, PreKeyState } from '../../impl/index.js';
import {
  arrayField,
  booleanField,
  hex,
  integerField,
  joinPath,
  objectField,
  stringField,
  unhex,
  VectorFormatError,
  type Json,
  type JsonObject,
} from './format.js';

/** The two parties of every script. */
export type PartyName = 'alice' | 'bob';

/** Both parties' names, in the order setups list them. */
export const PARTY_NAMES: readonly PartyName[] = ['alice', 'bob'];

/** A decoded setup. */
export interface Setup {
  readonly parties: Readonly<Record<PartyName, PreKeyState>>;
  readonly bundles: Readonly<Record<string, PreKeyBundle>>;
}

const keyPairJson = (k: KeyPair): JsonObject => ({
  public_key: hex(k.publicKey),
  private_key: hex(k.privateKey),
});

/** A party's key material as setup JSON. */
export function partyJson(state: PreKeyState): JsonObject {
  return {
    identity_key_pair: keyPairJson(state.identityKeyPair),
    registration_id: state.registrationId,
    signed_pre_keys: state.signedPreKeys.map((k) => ({
      key_id: k.keyId,
      public_key: hex(k.keyPair.publicKey),
      private_key: hex(k.keyPair.privateKey),
      signature: hex(k.signature),
    })),
    one_time_pre_keys: state.oneTimePreKeys.map((k) => ({
      key_id: k.keyId,
      public_key: hex(k.keyPair.publicKey),
      private_key: hex(k.keyPair.privateKey),
    })),
    kyber_pre_keys: state.kyberPreKeys.map((k) => ({
      key_id: k.keyId,
      public_key: hex(k.publicKey),
      secret_key: hex(k.secretKey),
      signature: hex(k.signature),
      last_resort: k.lastResort,
    })),
  };
}

const nullableHex = (bytes: Uint8Array | null): Json => (bytes === null ? null : hex(bytes));

/** A bundle as setup JSON. */
export function bundleJson(b: PreKeyBundle): JsonObject {
  return {
    registration_id: b.registrationId,
    device_id: b.deviceId,
    identity_key: hex(b.identityKey),
    signed_pre_key_id: b.signedPreKeyId,
    signed_pre_key: hex(b.signedPreKey),
    signed_pre_key_signature: hex(b.signedPreKeySignature),
    pre_key_id: b.preKeyId,
    pre_key: nullableHex(b.preKey),
    kyber_pre_key_id: b.kyberPreKeyId,
    kyber_pre_key: nullableHex(b.kyberPreKey),
    kyber_pre_key_signature: nullableHex(b.kyberPreKeySignature),
  };
}

/** Builds the setup JSON object. */
export function setupJson(
  comment: string,
  parties: Readonly<Record<PartyName, PreKeyState>>,
  bundles: Readonly<Record<string, PreKeyBundle>>,
): JsonObject {
  const bundleEntries: Record<string, Json> = {};
  for (const [name, bundle] of Object.entries(bundles)) bundleEntries[name] = bundleJson(bundle);
  return {
    comment,
    parties: { alice: partyJson(parties.alice), bob: partyJson(parties.bob) },
    bundles: bundleEntries,
  };
}

function keyPairFrom(value: Json | undefined, path: string): KeyPair {
  const o = objectField(value, path);
  return {
    publicKey: unhex(o.public_key, joinPath(path, 'public_key')),
    privateKey: unhex(o.private_key, joinPath(path, 'private_key')),
  };
}

/** Decodes a party's key material. */
export function partyFrom(value: Json | undefined, path: string): PreKeyState {
  const o = objectField(value, path);
  const list = (key: string): readonly JsonObject[] =>
    arrayField(o[key], joinPath(path, key)).map((e, i) => objectField(e, joinPath(joinPath(path, key), i)));
  return {
    identityKeyPair: keyPairFrom(o.identity_key_pair, joinPath(path, 'identity_key_pair')),
    registrationId: integerField(o.registration_id, joinPath(path, 'registration_id')),
    signedPreKeys: list('signed_pre_keys').map((k, i) => {
      const p = `${path}.signed_pre_keys[${i}]`;
      return {
        keyId: integerField(k.key_id, `${p}.key_id`),
        keyPair: {
          publicKey: unhex(k.public_key, `${p}.public_key`),
          privateKey: unhex(k.private_key, `${p}.private_key`),
        },
        signature: unhex(k.signature, `${p}.signature`),
      };
    }),
    oneTimePreKeys: list('one_time_pre_keys').map((k, i) => {
      const p = `${path}.one_time_pre_keys[${i}]`;
      return {
        keyId: integerField(k.key_id, `${p}.key_id`),
        keyPair: {
          publicKey: unhex(k.public_key, `${p}.public_key`),
          privateKey: unhex(k.private_key, `${p}.private_key`),
        },
      };
    }),
    kyberPreKeys: list('kyber_pre_keys').map((k, i) => {
      const p = `${path}.kyber_pre_keys[${i}]`;
      return {
        keyId: integerField(k.key_id, `${p}.key_id`),
        publicKey: unhex(k.public_key, `${p}.public_key`),
        secretKey: unhex(k.secret_key, `${p}.secret_key`),
        signature: unhex(k.signature, `${p}.signature`),
        lastResort: booleanField(k.last_resort, `${p}.last_resort`),
      };
    }),
  };
}

function nullableInteger(value: Json | undefined, path: string): number | null {
  return value === null ? null : integerField(value, path);
}

function nullableBytes(value: Json | undefined, path: string): Uint8Array | null {
  return value === null ? null : unhex(value, path);
}

/** Decodes a bundle. */
export function bundleFrom(value: Json | undefined, path: string): PreKeyBundle {
  const o = objectField(value, path);
  return {
    registrationId: integerField(o.registration_id, `${path}.registration_id`),
    deviceId: integerField(o.device_id, `${path}.device_id`),
    identityKey: unhex(o.identity_key, `${path}.identity_key`),
    signedPreKeyId: integerField(o.signed_pre_key_id, `${path}.signed_pre_key_id`),
    signedPreKey: unhex(o.signed_pre_key, `${path}.signed_pre_key`),
    signedPreKeySignature: unhex(o.signed_pre_key_signature, `${path}.signed_pre_key_signature`),
    preKeyId: nullableInteger(o.pre_key_id, `${path}.pre_key_id`),
    preKey: nullableBytes(o.pre_key, `${path}.pre_key`),
    kyberPreKeyId: nullableInteger(o.kyber_pre_key_id, `${path}.kyber_pre_key_id`),
    kyberPreKey: nullableBytes(o.kyber_pre_key, `${path}.kyber_pre_key`),
    kyberPreKeySignature: nullableBytes(o.kyber_pre_key_signature, `${path}.kyber_pre_key_signature`),
  };
}

/** Decodes a setup object. */
export function setupFrom(value: Json | undefined, path: string): Setup {
  const o = objectField(value, path);
  stringField(o.comment, `${path}.comment`);
  const parties = objectField(o.parties, `${path}.parties`);
  const bundles: Record<string, PreKeyBundle> = {};
  for (const [name, bundle] of Object.entries(objectField(o.bundles, `${path}.bundles`))) {
    bundles[name] = bundleFrom(bundle, `${path}.bundles.${name}`);
  }
  return {
    parties: {
      alice: partyFrom(parties.alice, `${path}.parties.alice`),
      bob: partyFrom(parties.bob, `${path}.parties.bob`),
    },
    bundles,
  };
}

/**
 * Resolves `input.setup`: an inline setup object, or the id of an entry of the file's top-level
 * `setups`. Returns the decoded setup and the JSON path it was read from.
 */
export function resolveSetup(
  reference: Json | undefined,
  setups: JsonObject | undefined,
  testPath: string,
): { readonly setup: Setup; readonly path: string } {
  if (typeof reference === 'string') {
    const entry = setups?.[reference];
    if (entry === undefined)
      throw new VectorFormatError(`${testPath}.input.setup names unknown setup "${reference}"`);
    return { setup: setupFrom(entry, `setups.${reference}`), path: `setups.${reference}` };
  }
  return { setup: setupFrom(reference, `${testPath}.input.setup`), path: `${testPath}.input.setup` };
}

/**
 * Checks a setup's internal consistency with one provider: every public key is the one its private
 * key gives (WP-KEYS-06), every bundle matches its party's keys, and every prekey signature verifies
 * (WP-KEYS-07). Returns the path of the first inconsistency, or `null`.
 */
export function checkSetup(c: CryptoProvider, setup: Setup, path: string): string | null {
  for (const name of PARTY_NAMES) {
    const party = setup.parties[name];
    const p = `${path}.parties.${name}`;
    const identity = party.identityKeyPair;
    if (!equalBytes(publicKeyFromPrivate(c, identity.privateKey), identity.publicKey)) {
      return `${p}.identity_key_pair.public_key`;
    }
    for (const [i, k] of party.signedPreKeys.entries()) {
      if (!equalBytes(publicKeyFromPrivate(c, k.keyPair.privateKey), k.keyPair.publicKey)) {
        return `${p}.signed_pre_keys[${i}].public_key`;
      }
      if (!xeddsaVerify(c, identity.publicKey, k.keyPair.publicKey, k.signature))
        return `${p}.signed_pre_keys[${i}].signature`;
    }
    for (const [i, k] of party.oneTimePreKeys.entries()) {
      if (!equalBytes(publicKeyFromPrivate(c, k.keyPair.privateKey), k.keyPair.publicKey)) {
        return `${p}.one_time_pre_keys[${i}].public_key`;
      }
    }
    for (const [i, k] of party.kyberPreKeys.entries()) {
      if (!xeddsaVerify(c, identity.publicKey, k.publicKey, k.signature))
        return `${p}.kyber_pre_keys[${i}].signature`;
    }
  }
  return null;
}
