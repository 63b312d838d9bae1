/**
 * The environment every protocol step receives: the crypto provider and the random source. Time is
 * passed explicitly (`now`, integer milliseconds of the injected clock) to the steps that need it.
 * @module
 */
import type { CryptoProvider } from './crypto/provider.js';
import type { BugName } from './bugs.js';
import type { Rng } from './rng.js';

/** Injected dependencies of a protocol step. */
export interface Env {
  readonly crypto: CryptoProvider;
  readonly rng: Rng;
  /** Planted bugs for the simulator's self-test (spec/bugs.ts); absent in every real use. */
  readonly bugs?: readonly BugName[];
}
