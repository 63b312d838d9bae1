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

/**
 * A value already serialised by `canonicalJson` (with the same provider): written verbatim, so a
 * part serialised once for its hash (simulator/summaries.ts) is not serialised again for its
 * trace line.
 */
export class CanonicalFragment {
  constructor(readonly json: string) {}
}

/** Serialises `value` canonically; bytes become fingerprints computed with `c`. */
export function canonicalJson(value: unknown, c?: CryptoProvider): string {
  return write(value, c);
}

/** Quoted object keys: traces reuse a small set of keys, so quote each one once. */
const quotedKeys = new Map<string, string>();
const QUOTED_KEYS_MAX = 4096;

function quoteKey(key: string): string {
  let quoted = quotedKeys.get(key);
  if (quoted === undefined) {
    quoted = JSON.stringify(key);
    if (quotedKeys.size < QUOTED_KEYS_MAX) quotedKeys.set(key, quoted);
  }
  return quoted;
}

/**
 * `Object.keys(record).sort()`: the same order (code units; keys are distinct), by insertion sort
 * in place, because a trace serialises hundreds of thousands of small objects and
 * `Array.prototype.sort` allocates working storage on every call.
 */
function sortedKeys(record: Record<string, unknown>): string[] {
  const keys = Object.keys(record);
  for (let i = 1; i < keys.length; i++) {
    const key = keys[i];
    if (key === undefined) continue;
    let j = i - 1;
    for (; j >= 0; j--) {
      const before = keys[j];
      if (before === undefined || before < key) break;
      keys[j + 1] = before;
    }
    keys[j + 1] = key;
  }
  return keys;
}

function write(value: unknown, c: CryptoProvider | undefined): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value);
    case 'number':
      // Number-to-string is the same algorithm JSON.stringify uses for finite numbers.
      return Number.isFinite(value) ? String(value) : 'null';
    case 'boolean':
      return value ? 'true' : 'false';
    case 'undefined':
      return 'null';
    case 'object':
      break;
    default:
      return JSON.stringify(String(value));
  }
  if (value instanceof CanonicalFragment) return value.json;
  if (value instanceof Uint8Array) {
    if (c === undefined) return JSON.stringify(`len:${value.length}`);
    return JSON.stringify(`fp:${fingerprint(c, value)}`);
  }
  if (Array.isArray(value)) {
    const items = value as readonly unknown[];
    let out = '[';
    for (let i = 0; i < items.length; i++) {
      if (i > 0) out += ',';
      // A hole is written as nothing, as `Array.prototype.join` would.
      if (i in items) out += write(items[i], c);
    }
    return out + ']';
  }
  const record = value as Record<string, unknown>;
  const keys = sortedKeys(record);
  let out = '{';
  let first = true;
  for (const key of keys) {
    const member = record[key];
    if (member === undefined) continue;
    if (first) first = false;
    else out += ',';
    out += quoteKey(key) + ':' + write(member, c);
  }
  return out + '}';
}

/**
 * True only when `canonicalJson(a, c) === canonicalJson(b, c)` for every provider `c`, decided
 * without writing either: the same value, equal bytes, equal fragments, or arrays and records whose
 * members are so pairwise (undefined record members ignored, holes and undefined array items alike,
 * as {@link canonicalJson} writes them). False means "not shown equal here": the caller then compares
 * the canonical texts (`both` does, to report a divergence), so this is only ever a shortcut.
 * simulator/canonical.test.ts checks it against {@link canonicalJson} on generated values.
 */
export function canonicallyEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a === 'number' && typeof b === 'number') return Number.isNaN(a) && Number.isNaN(b);
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (a instanceof CanonicalFragment || b instanceof CanonicalFragment) {
    return a instanceof CanonicalFragment && b instanceof CanonicalFragment && a.json === b.json;
  }
  if (a instanceof Uint8Array || b instanceof Uint8Array) {
    if (!(a instanceof Uint8Array && b instanceof Uint8Array) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
    return true;
  }
  const aArray = Array.isArray(a);
  if (aArray !== Array.isArray(b)) return false;
  if (aArray) {
    const left = a as readonly unknown[];
    const right = b as readonly unknown[];
    if (left.length !== right.length) return false;
    for (let i = 0; i < left.length; i++) {
      // A hole is written as nothing and undefined as null: only the same kind is equal here.
      if (i in left !== i in right) return false;
      if (!canonicallyEqual(left[i], right[i])) return false;
    }
    return true;
  }
  const left = a as Record<string, unknown>;
  const right = b as Record<string, unknown>;
  let members = 0;
  for (const key of Object.keys(left)) {
    const l = left[key];
    if (l === undefined) continue;
    members += 1;
    if (!Object.hasOwn(right, key) || !canonicallyEqual(l, right[key])) return false;
  }
  for (const key of Object.keys(right)) if (right[key] !== undefined) members -= 1;
  return members === 0;
}
