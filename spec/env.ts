/**
 * The environment every protocol step receives: the crypto provider and the random source. Time is
 * passed explicitly (`now`, integer milliseconds of the injected clock) to the steps that need it.
 * @module
 */
import type { CryptoProvider } from './crypto/provider.js';
import type { Rng } from './rng.js';

/** Injected dependencies of a protocol step. */
export interface Env {
  readonly crypto: CryptoProvider;
  readonly rng: Rng;
}
