/**
 * The retry request (Sesame §4.1; WHITEPAPER.md WP-XPORT-06): an unencrypted message a device sends
 * to the sender of a message it could not decrypt, naming that message's transport id. It carries
 * nothing secret, so it needs no session; the sender decides whether to resend (WP-SES rules).
 *
 * | offset | length | field |
 * |---|---|---|
 * | 0 | 1 | version `0x01` |
 * | 1 | 16 | the transport message id of the undecryptable message |
 * @module
 */
import { accept, reject, type Result } from './errors.js';
import { fromHex, toHex } from './hex.js';
import { isValidMessageId, type MessageId } from './identity.js';
import { UsageError } from './errors.js';

/** Version byte of a retry request. */
export const RETRY_REQUEST_VERSION = 0x01;
/** Encoded length: version byte and the 16-byte message id. */
export const RETRY_REQUEST_LENGTH = 17;

/** Encodes a retry request for the message `messageId`. */
export function encodeRetryRequest(messageId: MessageId): Uint8Array {
  if (!isValidMessageId(messageId)) throw new UsageError('retry request needs a 32-hex-digit message id');
  const out = new Uint8Array(RETRY_REQUEST_LENGTH);
  out[0] = RETRY_REQUEST_VERSION;
  out.set(fromHex(messageId), 1);
  return out;
}

/** Decodes a retry request; anything but version 1 and exactly 17 bytes is `RETRY_REQUEST_MALFORMED`. */
export function decodeRetryRequest(bytes: Uint8Array): Result<MessageId> {
  // WP-XPORT-06: a fixed layout, checked exactly.
  if (bytes.length !== RETRY_REQUEST_LENGTH || bytes[0] !== RETRY_REQUEST_VERSION) {
    return reject('RETRY_REQUEST_MALFORMED', 'retry request is not version 1 with a 16-byte id', {
      length: bytes.length,
    });
  }
  return accept(toHex(bytes.subarray(1)));
}
