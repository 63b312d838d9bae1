/**
 * The registry of Lockstep's own vector families: name, file and generator. vectors/generate.ts
 * writes them, vectors/check.ts and vectors/own.test.ts verify them.
 * @module
 */
import type { CryptoProvider } from '../../spec/crypto/provider.js';
import type { FamilyFile } from './format.js';
import { generateInvalidFamily } from './invalid.js';
import { generateLimitsFamily } from './limits.js';
import { generateMultideviceFormatsFamily } from './multidevice-formats.js';
import { generatePqxdhFamily } from './pqxdh.js';
import { generateTranscriptFamily } from './transcript.js';

/** One family: its name (the file is `vectors/<name>.json`) and its generator. */
export interface FamilyDefinition {
  readonly name: string;
  readonly generate: (c: CryptoProvider) => FamilyFile;
}

/** Every family, in the order they are generated and checked. */
export const FAMILIES: readonly FamilyDefinition[] = [
  { name: 'pqxdh', generate: generatePqxdhFamily },
  { name: 'transcript', generate: generateTranscriptFamily },
  { name: 'limits', generate: generateLimitsFamily },
  { name: 'invalid', generate: generateInvalidFamily },
  { name: 'multidevice-formats', generate: generateMultideviceFormatsFamily },
];
