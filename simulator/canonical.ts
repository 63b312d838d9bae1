/**
 * Canonical JSON for traces and engine comparisons: object keys sorted by code unit, no
 * whitespace, `undefined` members omitted, integers only where the trace format says so. Bytes
 * never appear: a `Uint8Array` is written as its fingerprint (`"fp:<hex>"`, spec/keys.ts
 * `fingerprint`), so a trace carries no key material and does not depend on the crypto provider
 * (both providers compute the same SHA-256).
 * @module
 */
import type { CryptoProvider } from '../spec/crypto/provider.js';
import { fingerprint } from '../spec/keys.js';

/** Serialises `value` canonically; bytes become fingerprints computed with `c`. */
export function canonicalJson(value: unknown, c?: CryptoProvider): string {
  return write(value, c);
}

function write(value: unknown, c: CryptoProvider | undefined): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value);
    case 'number':
      if (!Number.isFinite(value)) return 'null';
      return JSON.stringify(value);
    case 'boolean':
      return value ? 'true' : 'false';
    case 'undefined':
      return 'null';
    case 'object':
      break;
    default:
      return JSON.stringify(String(value));
  }
  if (value instanceof Uint8Array) {
    if (c === undefined) return JSON.stringify(`len:${value.length}`);
    return JSON.stringify(`fp:${fingerprint(c, value)}`);
  }
  if (Array.isArray(value)) return `[${value.map((v: unknown) => write(v, c)).join(',')}]`;
  const record = value as Record<string, unknown>;
  const keys = Object.keys(record)
    .filter((k) => record[k] !== undefined)
    .sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${write(record[k], c)}`).join(',')}}`;
}
