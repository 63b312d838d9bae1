/**
 * Lowercase hex codec for the edges only: state JSON, vectors and traces. Protocol logic never
 * handles hex.
 * @module
 */
import { UsageError } from './errors.js';

const HEX = '0123456789abcdef';

/** Encodes bytes as lowercase hex. */
export function toHex(bytes: Uint8Array): string {
  let out = '';
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i] ?? 0;
    out += (HEX[b >> 4] ?? '') + (HEX[b & 15] ?? '');
  }
  return out;
}

/** Decodes lowercase or uppercase hex; throws `UsageError` on odd length or a non-hex digit. */
export function fromHex(hex: string): Uint8Array {
  if (hex.length % 2 !== 0) throw new UsageError(`hex string has odd length ${hex.length}`);
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) {
    const byte = Number.parseInt(hex.slice(2 * i, 2 * i + 2), 16);
    if (!/^[0-9a-fA-F]{2}$/.test(hex.slice(2 * i, 2 * i + 2)) || Number.isNaN(byte)) {
      throw new UsageError(`hex string has a non-hex digit at offset ${2 * i}`);
    }
    out[i] = byte;
  }
  return out;
}
