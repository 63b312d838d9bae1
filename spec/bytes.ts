/**
 * Byte helpers shared by every layer: concatenation, constant-time comparison, copying.
 *
 * Protocol code handles `Uint8Array` only (never `Buffer`, never hex); hex lives in the codecs at
 * the edges (`spec/hex.ts`). JavaScript cannot promise constant time; `equalBytes` avoids the
 * data-dependent early exit, which is the part we control (see WHITEPAPER.md, "What JavaScript cannot guarantee").
 * @module
 */

/** Concatenates byte arrays into a fresh array. */
export function concatBytes(...parts: readonly Uint8Array[]): Uint8Array {
  let total = 0;
  for (const part of parts) total += part.length;
  const out = new Uint8Array(total);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/** Compares two byte arrays without an early exit on the first difference. */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= (a[i] ?? 0) ^ (b[i] ?? 0);
  return diff === 0;
}

/** Returns a copy, so stored state never aliases a caller's buffer. */
export function copyBytes(a: Uint8Array): Uint8Array {
  return Uint8Array.from(a);
}

/** True when every byte is zero (checked without an early exit). */
export function isAllZero(a: Uint8Array): boolean {
  let acc = 0;
  for (let i = 0; i < a.length; i++) acc |= a[i] ?? 0;
  return acc === 0;
}

/** ASCII/UTF-8 encoding of a label (KDF info strings, signature prefixes). */
export function utf8(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}
