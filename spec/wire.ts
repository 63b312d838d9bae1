/**
 * Wire codecs for libsignal's message version 4: `SignalMessage` and `PreKeySignalMessage`
 * (WP-WIRE-01 … WP-WIRE-06). External reference: libsignal `rust/protocol/src/proto/wire.proto`
 * (proto2, every field optional) and the framing in `protocol.rs`; the protobuf encoding itself is
 * the Protocol Buffers "Encoding" guide. Varints, tags and length prefixes are read and written with
 * `@bufbuild/protobuf`'s `BinaryReader` / `BinaryWriter`; this module adds only the field tables,
 * the framing and the checks the protocol needs; the varint, length and skipping rules it shares
 * with Lockstep's own formats live in spec/protobuf.ts.
 *
 * ## SignalMessage (WP-WIRE-02)
 *
 * ```text
 * offset   length  content
 * 0        1       version byte 0x44 = (4 << 4) | 4       ┐ MAC input (the MAC also covers both
 * 1        n       protobuf SignalMessage (below)         ┘ identity keys, prepended: WP-DR-05)
 * 1 + n    8       mac = HMAC-SHA256(mac_key, IK_s ‖ IK_r ‖ version ‖ protobuf)[0..8]
 *
 * field  key byte  wire type    name              on parse
 * 1      0x0a      2 (LEN)      ratchet_key       required; 33 bytes 0x05 ‖ u (WP-KEYS-01..03)
 * 2      0x10      0 (VARINT)   counter           required; uint32
 * 3      0x18      0 (VARINT)   previous_counter  optional; absent = 0
 * 4      0x22      2 (LEN)      ciphertext        required; AES-256-CBC body (may be empty here)
 * 5      0x2a      2 (LEN)      pq_ratchet        ignored (SPQR offer from libsignal 0.90, WP-WIRE-04)
 * 6      0x32      2 (LEN)      addresses         ignored (WP-WIRE-04)
 * other  any       any          unknown           skipped and ignored (WP-WIRE-04)
 * ```
 *
 * ## PreKeySignalMessage (WP-WIRE-03)
 *
 * ```text
 * offset   length  content
 * 0        1       version byte 0x44
 * 1        n       protobuf PreKeySignalMessage (below); no MAC of its own
 *
 * field  key byte  wire type    name               on parse
 * 1      0x08      0 (VARINT)   pre_key_id         optional (one-time prekey id)
 * 2      0x12      2 (LEN)      base_key           required; 33 bytes 0x05 ‖ u
 * 3      0x1a      2 (LEN)      identity_key       required; 33 bytes 0x05 ‖ u
 * 4      0x22      2 (LEN)      message            required; a complete SignalMessage (version ‖ protobuf ‖ mac)
 * 5      0x28      0 (VARINT)   registration_id    optional; absent = 0
 * 6      0x30      0 (VARINT)   signed_pre_key_id  required
 * 7      0x38      0 (VARINT)   kyber_pre_key_id   required together with 8 (WIRE_KYBER_MISSING)
 * 8      0x42      2 (LEN)      kyber_ciphertext   required together with 7; 1569 bytes 0x08 ‖ ct
 * other  any       any          unknown            skipped and ignored (WP-WIRE-04)
 * ```
 *
 * ## Decisions a reader should know
 *
 * - **Order of checks** (as libsignal): length, then version nibble, then the whole protobuf is
 *   decoded (any malformation wins over a missing field), then required fields, then the key
 *   encodings, then (PreKey only) the inner SignalMessage, whose errors propagate unchanged.
 * - **Version byte.** Only the high nibble is read; the low nibble is ignored, as in libsignal. A
 *   SignalMessage with high nibble 3 parses and reports `messageVersion: 3`; the session layer
 *   rejects the mismatch (WP-DR-12).
 * - **Repeated scalar fields**: the last occurrence wins (protobuf semantics for non-repeated
 *   fields; prost does the same). The MAC is over the bytes as received, so a duplicate cannot be
 *   smuggled past a MAC that was computed over something else.
 * - **uint32 overflow** (a deliberate strictness): protobuf, and prost in libsignal, decode a
 *   uint32 field from a 64-bit varint by truncating it. Lockstep rejects a uint32 field whose
 *   varint value exceeds `0xffffffff` as `WIRE_MALFORMED` rather than silently reading another
 *   number. No honest encoder writes such a value. Non-minimal varints whose value fits are
 *   accepted, as in every protobuf decoder.
 * - **Varints and lengths** are read as 64-bit values: a varint longer than 10 bytes, or whose 10th
 *   byte exceeds 1, is malformed, and so is a length that runs past the end (prost's rules). We do
 *   not use the reader's 32-bit length read, which would truncate a huge length silently.
 * - **Unknown fields** of every wire type are skipped, including proto2 groups (nested at most
 *   {@link MAX_GROUP_DEPTH} deep, like prost's recursion limit, and skipped without recursion). A
 *   stray end-group tag, a tag with field number 0 or wire type 6/7 is malformed.
 * - **Known field, wrong wire type** (e.g. `counter` sent as bytes) is `WIRE_MALFORMED`.
 * - Parsed values never alias the caller's buffer. The input is copied once, on entry; the key
 *   fields are copied again on their own (they end up in session state and must not keep a whole
 *   message alive), while `ciphertext`, `macInput`, `mac`, `serialized` (and a PreKey message's
 *   `message` and `inner`) are views into that private copy, so a large body is copied once rather
 *   than four times. Those views may share memory with each other; no caller writes to them.
 * - Encoders are for our own, trusted data: a wrong length, type byte or integer range is caller
 *   misuse and throws {@link UsageError}. To build malformed messages for tests, use
 *   `spec/wire-testing.ts`.
 * @module
 */
import { BinaryWriter, WireType } from '@bufbuild/protobuf/wire';
import { concatBytes, copyBytes } from './bytes.js';
import {
  CIPHERTEXT_MESSAGE_CURRENT_VERSION,
  EC_KEY_TYPE_DJB,
  EC_PUBLIC_KEY_LENGTH,
  KEM_KEY_TYPE_KYBER1024,
  KYBER1024_CIPHERTEXT_LENGTH,
  MAC_LENGTH,
  MAX_UINT32,
  VERSION_BYTE,
} from './constants.js';
import { accept, InvariantError, reject, UsageError, type Result } from './errors.js';
import { decodeEcPublicKey, decodeKemCiphertext } from './keys.js';
import { cursorOf, MalformedProtobuf, readLengthDelimited, readVarint, skipField } from './protobuf.js';

/** The message version that PQXDH replaced (X3DH); PreKey messages of this version are refused. */
const X3DH_MESSAGE_VERSION = 3;

/** Oldest message version whose high nibble is still recognised (older is "legacy"). */
const OLDEST_RECOGNISED_VERSION = X3DH_MESSAGE_VERSION;

/** Deepest nesting of proto2 groups skipped inside unknown fields (re-exported from spec/protobuf.ts). */
export { MAX_GROUP_DEPTH } from './protobuf.js';

/** Length of a Kyber-1024 ciphertext encoding on the wire: type byte ‖ raw ciphertext. */
const KEM_CIPHERTEXT_ENCODED_LENGTH = 1 + KYBER1024_CIPHERTEXT_LENGTH;

/** Protobuf field numbers of `SignalMessage` (wire.proto). */
export const SIGNAL_MESSAGE_FIELD = Object.freeze({
  ratchetKey: 1,
  counter: 2,
  previousCounter: 3,
  ciphertext: 4,
  pqRatchet: 5,
  addresses: 6,
} as const);

/** Protobuf field numbers of `PreKeySignalMessage` (wire.proto). */
export const PREKEY_MESSAGE_FIELD = Object.freeze({
  preKeyId: 1,
  baseKey: 2,
  identityKey: 3,
  message: 4,
  registrationId: 5,
  signedPreKeyId: 6,
  kyberPreKeyId: 7,
  kyberCiphertext: 8,
} as const);

/** The fields of a `SignalMessage` that Lockstep writes and reads. */
export interface SignalMessageFields {
  /** The sender's current ratchet public key, 33 bytes `0x05 ‖ u`. */
  readonly ratchetKey: Uint8Array;
  /** Index of this message in the sending chain (uint32). */
  readonly counter: number;
  /** Length of the sender's previous sending chain (uint32). */
  readonly previousCounter: number;
  /** The AES-256-CBC body. */
  readonly ciphertext: Uint8Array;
}

/** A `SignalMessage` as received: its fields plus the exact bytes the MAC covers. */
export interface ParsedSignalMessage extends SignalMessageFields {
  /** High nibble of the version byte (3 or 4; the session layer insists on its own version). */
  readonly messageVersion: number;
  /** `version byte ‖ protobuf`, exactly as received (WP-DR-05: never re-encoded). */
  readonly macInput: Uint8Array;
  /** The trailing 8-byte truncated MAC. */
  readonly mac: Uint8Array;
  /** The whole message as received. */
  readonly serialized: Uint8Array;
}

/** The fields of a `PreKeySignalMessage`. */
export interface PreKeySignalMessageFields {
  /** The sender's (initiator's) registration id (uint32; 0 when absent on the wire). */
  readonly registrationId: number;
  /** The one-time prekey used, if any. */
  readonly preKeyId?: number;
  /** The signed prekey used. */
  readonly signedPreKeyId: number;
  /** The Kyber prekey used. */
  readonly kyberPreKeyId: number;
  /** The KEM ciphertext, 1569 bytes `0x08 ‖ ct`. */
  readonly kyberCiphertext: Uint8Array;
  /** The initiator's base key EK_A, 33 bytes `0x05 ‖ u`. */
  readonly baseKey: Uint8Array;
  /** The initiator's identity key IK_A, 33 bytes `0x05 ‖ u`. */
  readonly identityKey: Uint8Array;
  /** A complete serialized `SignalMessage` (version ‖ protobuf ‖ mac). */
  readonly message: Uint8Array;
}

/** A `PreKeySignalMessage` as received, with its inner `SignalMessage` parsed. */
export interface ParsedPreKeySignalMessage extends PreKeySignalMessageFields {
  /** High nibble of the version byte (always 4 once parsed). */
  readonly messageVersion: number;
  /** The inner message, parsed by {@link parseSignalMessage}. */
  readonly inner: ParsedSignalMessage;
  /** The whole message as received. */
  readonly serialized: Uint8Array;
}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

function requireBytes(name: string, value: unknown): Uint8Array {
  if (!(value instanceof Uint8Array)) throw new UsageError(`${name} must be a Uint8Array`);
  return value;
}

function requireUint32(name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > MAX_UINT32) {
    throw new UsageError(`${name} must be an integer in 0..${MAX_UINT32}`);
  }
  return value;
}

function requireEncodedKey(name: string, value: unknown, length: number, typeByte: number): Uint8Array {
  const bytes = requireBytes(name, value);
  if (bytes.length !== length) throw new UsageError(`${name} must be ${length} bytes, got ${bytes.length}`);
  if (bytes[0] !== typeByte) throw new UsageError(`${name} must start with type byte ${typeByte}`);
  return bytes;
}

/**
 * Writes `version byte ‖ protobuf` of a SignalMessage into one fresh buffer that has
 * `trailerLength` zero bytes spare at its end (room for the MAC), and returns the buffer and the
 * length of `version byte ‖ protobuf`.
 *
 * Only the small header (fields 1–3, then the tag and length prefix of field 4) goes through the
 * `BinaryWriter`; the ciphertext is copied once, straight into its final place. A large body is
 * therefore copied exactly once, where writing it through the writer and then framing it would copy
 * it three or four times. The bytes are those the writer alone would produce: `bytes()` writes the
 * same `uint32` length prefix and then the raw bytes (pinned by a property test against the plain
 * writer in spec/wire.test.ts).
 */
function writeSignalMessage(
  fields: SignalMessageFields,
  trailerLength: number,
): { readonly bytes: Uint8Array; readonly bodyLength: number } {
  const ratchetKey = requireEncodedKey(
    'ratchetKey',
    fields.ratchetKey,
    EC_PUBLIC_KEY_LENGTH,
    EC_KEY_TYPE_DJB,
  );
  const counter = requireUint32('counter', fields.counter);
  const previousCounter = requireUint32('previousCounter', fields.previousCounter);
  const ciphertext = requireBytes('ciphertext', fields.ciphertext);
  // WP-WIRE-05: fields in ascending tag order; counter and previous_counter always written.
  const header = new BinaryWriter()
    .tag(SIGNAL_MESSAGE_FIELD.ratchetKey, WireType.LengthDelimited)
    .bytes(ratchetKey)
    .tag(SIGNAL_MESSAGE_FIELD.counter, WireType.Varint)
    .uint32(counter)
    .tag(SIGNAL_MESSAGE_FIELD.previousCounter, WireType.Varint)
    .uint32(previousCounter)
    .tag(SIGNAL_MESSAGE_FIELD.ciphertext, WireType.LengthDelimited)
    .uint32(ciphertext.length) // the length prefix of field 4; its bytes follow below
    .finish();
  const bodyLength = 1 + header.length + ciphertext.length;
  const bytes = new Uint8Array(bodyLength + trailerLength);
  bytes[0] = VERSION_BYTE; // WP-WIRE-01: version byte first
  bytes.set(header, 1);
  bytes.set(ciphertext, 1 + header.length);
  return { bytes, bodyLength };
}

/**
 * Encodes `version byte ‖ protobuf` of a SignalMessage: the MAC input without the identity keys.
 * WP-WIRE-05: fields in ascending tag order; `counter` and `previous_counter` are always written
 * (libsignal sets both, so a zero is on the wire as `0x10 0x00` / `0x18 0x00`).
 * @throws UsageError when a field has the wrong type, length or range.
 */
export function encodeSignalMessageBody(fields: SignalMessageFields): Uint8Array {
  return writeSignalMessage(fields, 0).bytes;
}

/**
 * Encodes and frames a SignalMessage in one allocation: `version byte ‖ protobuf ‖ mac`, byte for
 * byte `frameSignalMessage(encodeSignalMessageBody(fields), mac)`, without copying the body twice.
 *
 * `computeMac` receives `version byte ‖ protobuf` (the MAC input of WP-DR-05, as a view into the
 * message being built) and returns the 8-byte MAC, which is written into the 8 bytes reserved at
 * the end. It must neither keep nor modify the view it is given.
 * @throws UsageError when a field has the wrong type, length or range, or the MAC is not 8 bytes.
 */
export function encodeSignalMessage(
  fields: SignalMessageFields,
  computeMac: (macInput: Uint8Array) => Uint8Array,
): Uint8Array {
  const { bytes, bodyLength } = writeSignalMessage(fields, MAC_LENGTH);
  const mac = requireBytes('mac', computeMac(bytes.subarray(0, bodyLength)));
  if (mac.length !== MAC_LENGTH) throw new UsageError(`mac must be ${MAC_LENGTH} bytes, got ${mac.length}`);
  bytes.set(mac, bodyLength); // WP-WIRE-02: the 8-byte MAC trails the protobuf
  return bytes;
}

/**
 * Frames a SignalMessage: `body ‖ mac`, where `body` comes from {@link encodeSignalMessageBody}
 * and `mac` is the 8-byte truncated HMAC over the identity keys and `body` (WP-DR-05).
 * {@link encodeSignalMessage} does both steps with one copy of the body fewer.
 * @throws UsageError when `mac` is not 8 bytes or `body` is empty.
 */
export function frameSignalMessage(body: Uint8Array, mac: Uint8Array): Uint8Array {
  requireBytes('body', body);
  requireBytes('mac', mac);
  if (body.length < 1) throw new UsageError('body must hold at least the version byte');
  if (mac.length !== MAC_LENGTH) throw new UsageError(`mac must be ${MAC_LENGTH} bytes, got ${mac.length}`);
  return concatBytes(body, mac);
}

/**
 * Encodes a PreKeySignalMessage: `version byte ‖ protobuf`.
 * WP-WIRE-05: fields in ascending tag order 1..8; `pre_key_id` only when present;
 * `registration_id` always (libsignal always sets it).
 * @throws UsageError when a field has the wrong type, length or range.
 */
export function encodePreKeySignalMessage(fields: PreKeySignalMessageFields): Uint8Array {
  const preKeyId = fields.preKeyId === undefined ? undefined : requireUint32('preKeyId', fields.preKeyId);
  const baseKey = requireEncodedKey('baseKey', fields.baseKey, EC_PUBLIC_KEY_LENGTH, EC_KEY_TYPE_DJB);
  const identityKey = requireEncodedKey(
    'identityKey',
    fields.identityKey,
    EC_PUBLIC_KEY_LENGTH,
    EC_KEY_TYPE_DJB,
  );
  const message = requireBytes('message', fields.message);
  const registrationId = requireUint32('registrationId', fields.registrationId);
  const signedPreKeyId = requireUint32('signedPreKeyId', fields.signedPreKeyId);
  const kyberPreKeyId = requireUint32('kyberPreKeyId', fields.kyberPreKeyId);
  const kyberCiphertext = requireEncodedKey(
    'kyberCiphertext',
    fields.kyberCiphertext,
    KEM_CIPHERTEXT_ENCODED_LENGTH,
    KEM_KEY_TYPE_KYBER1024,
  );
  const writer = new BinaryWriter();
  writer.raw(Uint8Array.of(VERSION_BYTE)); // WP-WIRE-01
  if (preKeyId !== undefined) writer.tag(PREKEY_MESSAGE_FIELD.preKeyId, WireType.Varint).uint32(preKeyId);
  writer.tag(PREKEY_MESSAGE_FIELD.baseKey, WireType.LengthDelimited).bytes(baseKey);
  writer.tag(PREKEY_MESSAGE_FIELD.identityKey, WireType.LengthDelimited).bytes(identityKey);
  writer.tag(PREKEY_MESSAGE_FIELD.message, WireType.LengthDelimited).bytes(message);
  writer.tag(PREKEY_MESSAGE_FIELD.registrationId, WireType.Varint).uint32(registrationId);
  writer.tag(PREKEY_MESSAGE_FIELD.signedPreKeyId, WireType.Varint).uint32(signedPreKeyId);
  writer.tag(PREKEY_MESSAGE_FIELD.kyberPreKeyId, WireType.Varint).uint32(kyberPreKeyId);
  writer.tag(PREKEY_MESSAGE_FIELD.kyberCiphertext, WireType.LengthDelimited).bytes(kyberCiphertext);
  return writer.finish();
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

/** How a known field is typed: a uint32 varint or a length-delimited byte string. */
type FieldKind = 'uint32' | 'bytes';

/** The last value seen for each known field (protobuf: last one wins). */
interface DecodedFields {
  readonly uint32: ReadonlyMap<number, number>;
  readonly bytes: ReadonlyMap<number, Uint8Array>;
}

/**
 * Decodes a whole protobuf message against a table of known fields. Unknown fields are skipped
 * (WP-WIRE-04); anything the protobuf encoding does not allow is `WIRE_MALFORMED` (WP-WIRE-06).
 * Byte fields are views into `protobuf`, which must therefore be the parser's private copy.
 */
function decodeFields(protobuf: Uint8Array, schema: ReadonlyMap<number, FieldKind>): Result<DecodedFields> {
  const cursor = cursorOf(protobuf);
  const { reader } = cursor;
  const uint32 = new Map<number, number>();
  const bytes = new Map<number, Uint8Array>();
  try {
    while (reader.pos < reader.len) {
      const tagOffset = reader.pos;
      const [fieldNo, wireType] = reader.tag(); // throws on field 0, wire type 6/7, tag > uint32
      const kind = schema.get(fieldNo);
      if (kind === undefined) {
        skipField(cursor, fieldNo, wireType); // WP-WIRE-04: unknown field ignored
      } else if (kind === 'uint32') {
        // WP-WIRE-06: a known field with the wrong wire type is malformed, not unknown.
        if (wireType !== WireType.Varint) {
          return reject('WIRE_MALFORMED', 'uint32 field with the wrong wire type', {
            offset: tagOffset,
            field: fieldNo,
            wireType,
          });
        }
        const value = readVarint(cursor);
        // WP-WIRE-06: Lockstep rejects a uint32 varint above 0xffffffff instead of truncating it.
        if (value > BigInt(MAX_UINT32)) {
          return reject('WIRE_MALFORMED', 'uint32 field out of range', { offset: tagOffset, field: fieldNo });
        }
        uint32.set(fieldNo, Number(value)); // last one wins
      } else {
        if (wireType !== WireType.LengthDelimited) {
          return reject('WIRE_MALFORMED', 'bytes field with the wrong wire type', {
            offset: tagOffset,
            field: fieldNo,
            wireType,
          });
        }
        bytes.set(fieldNo, readLengthDelimited(cursor)); // last one wins; a view of the private copy
      }
    }
  } catch (error) {
    // A bug or caller misuse is not the peer's fault: never turn it into a rejection.
    if (error instanceof InvariantError || error instanceof UsageError) throw error;
    // WP-WIRE-06: anything the reader cannot decode (truncated varint, length past the end, bad tag).
    const details =
      error instanceof MalformedProtobuf ? error.details : { offset: Math.min(reader.pos, reader.len) };
    return reject('WIRE_MALFORMED', 'not a valid protobuf encoding', details);
  }
  return accept({ uint32, bytes });
}

/** WP-WIRE-01: checks the version nibble shared by both message types. */
function checkVersion(messageVersion: number): Result<number> {
  if (messageVersion < OLDEST_RECOGNISED_VERSION) {
    return reject('WIRE_VERSION_LEGACY', 'legacy message version', { version: messageVersion });
  }
  if (messageVersion > CIPHERTEXT_MESSAGE_CURRENT_VERSION) {
    return reject('WIRE_VERSION_UNKNOWN', 'unrecognised message version', { version: messageVersion });
  }
  return accept(messageVersion);
}

const SIGNAL_MESSAGE_SCHEMA: ReadonlyMap<number, FieldKind> = new Map<number, FieldKind>([
  [SIGNAL_MESSAGE_FIELD.ratchetKey, 'bytes'],
  [SIGNAL_MESSAGE_FIELD.counter, 'uint32'],
  [SIGNAL_MESSAGE_FIELD.previousCounter, 'uint32'],
  [SIGNAL_MESSAGE_FIELD.ciphertext, 'bytes'],
  // Fields 5 (pq_ratchet) and 6 (addresses) are deliberately absent: WP-WIRE-04 skips them like
  // any unknown field, whatever their wire type.
]);

const PREKEY_MESSAGE_SCHEMA: ReadonlyMap<number, FieldKind> = new Map<number, FieldKind>([
  [PREKEY_MESSAGE_FIELD.preKeyId, 'uint32'],
  [PREKEY_MESSAGE_FIELD.baseKey, 'bytes'],
  [PREKEY_MESSAGE_FIELD.identityKey, 'bytes'],
  [PREKEY_MESSAGE_FIELD.message, 'bytes'],
  [PREKEY_MESSAGE_FIELD.registrationId, 'uint32'],
  [PREKEY_MESSAGE_FIELD.signedPreKeyId, 'uint32'],
  [PREKEY_MESSAGE_FIELD.kyberPreKeyId, 'uint32'],
  [PREKEY_MESSAGE_FIELD.kyberCiphertext, 'bytes'],
]);

function requireInput(bytes: unknown): Uint8Array {
  if (!(bytes instanceof Uint8Array)) throw new UsageError('message bytes must be a Uint8Array');
  return bytes;
}

/**
 * Parses `version ‖ protobuf ‖ mac[8]` (WP-WIRE-01, -02, -04, -06). The MAC is not checked here:
 * that needs the session's keys (WP-DR-05); `macInput` and `mac` are returned for it.
 */
export function parseSignalMessage(bytes: Uint8Array): Result<ParsedSignalMessage> {
  const input = requireInput(bytes);
  // The one copy of the message: nothing returned aliases the caller's buffer (module doc).
  return parseOwnedSignalMessage(input.slice());
}

/**
 * {@link parseSignalMessage} on a buffer the parser owns: `owned` is a private copy, so the large
 * fields are returned as views into it rather than copied once more.
 */
function parseOwnedSignalMessage(owned: Uint8Array): Result<ParsedSignalMessage> {
  // WP-WIRE-07: at least the version byte and the 8-byte MAC.
  if (owned.length < 1 + MAC_LENGTH) {
    return reject('WIRE_TOO_SHORT', 'SignalMessage shorter than version byte and MAC', {
      length: owned.length,
      minimum: 1 + MAC_LENGTH,
    });
  }
  // WP-WIRE-01: the high nibble is the message version; version 3 passes here (WP-DR-12 decides).
  const version = checkVersion((owned[0] ?? 0) >> 4);
  if (!version.ok) return version;
  const macStart = owned.length - MAC_LENGTH;
  const decoded = decodeFields(owned.subarray(1, macStart), SIGNAL_MESSAGE_SCHEMA);
  if (!decoded.ok) return decoded;
  const ratchetKey = decoded.value.bytes.get(SIGNAL_MESSAGE_FIELD.ratchetKey);
  const counter = decoded.value.uint32.get(SIGNAL_MESSAGE_FIELD.counter);
  const ciphertext = decoded.value.bytes.get(SIGNAL_MESSAGE_FIELD.ciphertext);
  // WP-WIRE-02: ratchet_key, counter and ciphertext are required; previous_counter defaults to 0.
  if (ratchetKey === undefined) return missing('ratchet_key', SIGNAL_MESSAGE_FIELD.ratchetKey);
  if (counter === undefined) return missing('counter', SIGNAL_MESSAGE_FIELD.counter);
  if (ciphertext === undefined) return missing('ciphertext', SIGNAL_MESSAGE_FIELD.ciphertext);
  const previousCounter = decoded.value.uint32.get(SIGNAL_MESSAGE_FIELD.previousCounter) ?? 0;
  // WP-KEYS-01..03: the ratchet key must be a valid X25519 public key encoding.
  const key = decodeEcPublicKey(ratchetKey);
  if (!key.ok) return key;
  return accept({
    messageVersion: version.value,
    ratchetKey: copyBytes(ratchetKey), // stored in a receiving chain: must not pin the whole message
    counter,
    previousCounter,
    ciphertext,
    macInput: owned.subarray(0, macStart), // WP-DR-05: exactly as received
    mac: owned.subarray(macStart),
    serialized: owned,
  });
}

/**
 * Parses `version ‖ protobuf` of a PreKeySignalMessage and its inner SignalMessage
 * (WP-WIRE-01, -03, -04, -06).
 */
export function parsePreKeySignalMessage(bytes: Uint8Array): Result<ParsedPreKeySignalMessage> {
  // The one copy of the message: nothing returned aliases the caller's buffer (module doc).
  const owned = requireInput(bytes).slice();
  if (owned.length < 1) {
    return reject('WIRE_TOO_SHORT', 'PreKeySignalMessage is empty', { length: 0, minimum: 1 });
  }
  const version = checkVersion((owned[0] ?? 0) >> 4);
  if (!version.ok) return version;
  // WP-WIRE-01: PQXDH replaced X3DH; a version-3 PreKey message is refused.
  if (version.value === X3DH_MESSAGE_VERSION) {
    return reject('WIRE_VERSION_X3DH', 'X3DH PreKey messages are no longer supported', {
      version: version.value,
    });
  }
  const decoded = decodeFields(owned.subarray(1), PREKEY_MESSAGE_SCHEMA);
  if (!decoded.ok) return decoded;
  const { uint32, bytes: fields } = decoded.value;
  const baseKey = fields.get(PREKEY_MESSAGE_FIELD.baseKey);
  const identityKey = fields.get(PREKEY_MESSAGE_FIELD.identityKey);
  const message = fields.get(PREKEY_MESSAGE_FIELD.message);
  const signedPreKeyId = uint32.get(PREKEY_MESSAGE_FIELD.signedPreKeyId);
  // WP-WIRE-03: base_key, identity_key, message and signed_pre_key_id are required.
  if (baseKey === undefined) return missing('base_key', PREKEY_MESSAGE_FIELD.baseKey);
  if (identityKey === undefined) return missing('identity_key', PREKEY_MESSAGE_FIELD.identityKey);
  if (message === undefined) return missing('message', PREKEY_MESSAGE_FIELD.message);
  if (signedPreKeyId === undefined) return missing('signed_pre_key_id', PREKEY_MESSAGE_FIELD.signedPreKeyId);
  const kyberPreKeyId = uint32.get(PREKEY_MESSAGE_FIELD.kyberPreKeyId);
  const kyberCiphertext = fields.get(PREKEY_MESSAGE_FIELD.kyberCiphertext);
  // WP-WIRE-03: version 4 requires both Kyber fields (one without the other is refused too).
  if (kyberPreKeyId === undefined || kyberCiphertext === undefined) {
    return reject('WIRE_KYBER_MISSING', 'kyber_pre_key_id and kyber_ciphertext are both required', {
      hasKyberPreKeyId: kyberPreKeyId !== undefined,
      hasKyberCiphertext: kyberCiphertext !== undefined,
    });
  }
  // WP-KEYS-01..03: base and identity keys are X25519 public key encodings.
  const base = decodeEcPublicKey(baseKey);
  if (!base.ok) return base;
  const identity = decodeEcPublicKey(identityKey);
  if (!identity.ok) return identity;
  // WP-KEYS-05: the KEM ciphertext is `0x08 ‖ 1568 bytes`.
  const kem = decodeKemCiphertext(kyberCiphertext);
  if (!kem.ok) return kem;
  // The inner SignalMessage is parsed by the same rules; its errors propagate unchanged. `message`
  // is a view into our private copy, so it needs no copy of its own.
  const inner = parseOwnedSignalMessage(message);
  if (!inner.ok) return inner;
  const preKeyId = uint32.get(PREKEY_MESSAGE_FIELD.preKeyId);
  const common = {
    messageVersion: version.value,
    registrationId: uint32.get(PREKEY_MESSAGE_FIELD.registrationId) ?? 0,
    signedPreKeyId,
    kyberPreKeyId,
    // The keys and the KEM ciphertext are stored in session state: copies, not views of the message.
    kyberCiphertext: copyBytes(kyberCiphertext),
    baseKey: copyBytes(baseKey),
    identityKey: copyBytes(identityKey),
    message,
    inner: inner.value,
    serialized: owned,
  };
  return accept(preKeyId === undefined ? common : { ...common, preKeyId });
}

/** WP-WIRE-02 / WP-WIRE-03: a required field is absent. */
function missing(name: string, field: number): ReturnType<typeof reject> {
  return reject('WIRE_MISSING_FIELD', `required field ${name} is absent`, { field });
}
