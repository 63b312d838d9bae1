/**
 * Browser-safe entry point of spec/'s crypto layer: the noble provider, XEdDSA (WP-KEYS-07) and
 * round-3 Kyber-1024 (WP-KEYS-08). The Node provider is deliberately not re-exported here, so a
 * browser bundle that imports this module never pulls in `node:crypto`; Node code imports it
 * directly from `spec/crypto/node.ts`.
 * @module
 */
export type { CryptoProvider } from './provider.js';
export { nobleProvider } from './noble.js';
export { xeddsaSign, xeddsaVerify, XEDDSA_RANDOM_LENGTH } from './xeddsa.js';
export {
  kemGenerateKeyPair,
  kemEncapsulate,
  kemDecapsulate,
  kemPublicKeyCoefficientsReduced,
  KEM_KEYGEN_SEED_LENGTH,
  KEM_ENCAPSULATION_SEED_LENGTH,
  type KemKeyPair,
  type KemEncapsulation,
} from './kyber.js';
