/**
 * Argument checks shared by both providers, so that `noble` and `node` refuse the same misuse with
 * the same {@link UsageError} (a wrong length here is a bug in the caller, never peer input:
 * peer-supplied bytes are decoded and validated by spec/keys.ts before they reach a provider).
 * @module
 */
import { UsageError } from '../errors.js';

/** HKDF-SHA256 can produce at most 255 blocks of 32 bytes (RFC 5869 §2.3). */
export const HKDF_SHA256_MAX_LENGTH = 255 * 32;

/**
 * Longest HKDF `info` both providers accept: node:crypto refuses more than 1024 bytes, so the noble
 * provider refuses it too (Lockstep's labels are under 64 bytes).
 */
export const HKDF_MAX_INFO_LENGTH = 1024;

/** Throws {@link UsageError} unless `value` is a `Uint8Array` (of `length` bytes, when given). */
export function requireBytes(name: string, value: Uint8Array, length?: number): void {
  if (!(value instanceof Uint8Array)) throw new UsageError(`${name} must be a Uint8Array`);
  if (length !== undefined && value.length !== length) {
    throw new UsageError(`${name} must be ${length} bytes, got ${value.length}`);
  }
}

/**
 * Throws {@link UsageError} unless `parts` is an array of `Uint8Array`s (an empty array is allowed:
 * HMAC of the empty message). The failing element is named by its index.
 */
export function requireByteParts(name: string, parts: readonly Uint8Array[]): void {
  if (!Array.isArray(parts)) throw new UsageError(`${name} must be an array of Uint8Array`);
  parts.forEach((part, index) => {
    requireBytes(`${name}[${index}]`, part);
  });
}

/** Checks the arguments of HKDF-SHA256 (RFC 5869 §2.2–2.3) identically for both providers. */
export function requireHkdfArguments(
  ikm: Uint8Array,
  salt: Uint8Array,
  info: Uint8Array,
  length: number,
): void {
  requireBytes('ikm', ikm);
  requireBytes('salt', salt);
  requireBytes('info', info);
  if (info.length > HKDF_MAX_INFO_LENGTH) {
    throw new UsageError(`info must be at most ${HKDF_MAX_INFO_LENGTH} bytes, got ${info.length}`);
  }
  if (!Number.isSafeInteger(length) || length < 1 || length > HKDF_SHA256_MAX_LENGTH) {
    throw new UsageError(`HKDF length must be 1..${HKDF_SHA256_MAX_LENGTH}, got ${length}`);
  }
}
