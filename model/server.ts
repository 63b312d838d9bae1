/**
 * The honest server as an explicit XState machine (WHITEPAPER.md, "Server (SRV)", WP-SRV-01 …
 * WP-SRV-29): model/'s own encoding of the server rules, written on spec/ alone and checked
 * against impl/server.ts by the conformance suites (test/conformance/), which replay the same
 * requests on both engines and require identical responses and identical abstract state
 * (spec/server-abstract.ts).
 *
 * The server is one `serving` state. A `server.request` event enters a chain of transient
 * validation states for its request kind — one state per check, in the whitepaper's order — and
 * every check is an eventless transition: the guard named after the rule that lets the request
 * through, or an explicit refusal back to `serving` that emits the error. Nothing in the server
 * data changes before the last state of a chain, so every error and every send refusal leaves the
 * server exactly as it was (WP-SRV-01). For a send:
 *
 * ```text
 * serving ─server.request─► routing ─► routeByKind ─► send.checkMessageId ─► … checkSenderDevice
 *   ─► checkDuplicate ─► checkRecipient ─► checkDeviceSet ─► checkRegistrationIds
 *   ─► checkCapacity ─► store ─► serving        (each check can also answer and return to serving)
 * ```
 *
 * Effects are emitted as data: every request is answered by exactly one emitted
 * `server.response { requestId, response }`. {@link createServerRunner} wraps the machine in an
 * actor with an explicit id and answers requests synchronously; {@link abstractServerOf} projects
 * the machine context onto the abstract server state. {@link RULES} maps every guard and action to
 * the rules it implements.
 *
 * References: Sesame rev 2 §2.2, §3.3 steps 3–4, §4.1, §6.3; X3DH §3.3; PQXDH §3.3; Signal's
 * server answers 409 (mismatched devices) and 410 (stale devices).
 * @module
 */
import { assign, createActor, emit, setup, type SnapshotFrom } from 'xstate';
import { planted, type BugName } from '../spec/bugs.js';
import { copyBytes, equalBytes } from '../spec/bytes.js';
import type { PreKeyBundle } from '../spec/bundle.js';
import {
  MAILBOX_CAPACITY,
  MAX_ACCOUNTS,
  MAX_BLOB_SIZE,
  MAX_BLOBS,
  MAX_ENVELOPE_SIZE,
  MAX_ONE_TIME_PREKEYS,
  MAX_PROVISIONING_ENTRIES,
  MAX_PROVISIONING_SIZE,
  MAX_UINT32,
  MESSAGE_ID_DEDUP_WINDOW,
  PROVISIONING_TTL,
  SIGNATURE_LENGTH,
} from '../spec/constants.js';
import type { CryptoProvider } from '../spec/crypto/provider.js';
import { xeddsaVerify } from '../spec/crypto/xeddsa.js';
import {
  registrationProofMessage,
  verifyRegistrationProof,
  verifySignedDeviceList,
} from '../spec/device-list.js';
import type { DeviceList, SignedDeviceList } from '../spec/device-list-types.js';
import { ERROR_RULES, InvariantError, UsageError, type ErrorCode, type Result } from '../spec/errors.js';
import { toHex } from '../spec/hex.js';
import {
  isValidDeviceId,
  isValidMessageId,
  isValidUserId,
  MAX_DEVICE_ID,
  PRIMARY_DEVICE_ID,
  type DeviceAddress,
  type DeviceId,
  type MessageId,
  type UserId,
} from '../spec/identity.js';
import { decodeEcPublicKey, decodeKemPublicKey, fingerprint } from '../spec/keys.js';
import { compareUserIds, type ServerAbstract, type ServerAccountAbstract } from '../spec/server-abstract.js';
import type {
  Envelope,
  EnvelopeType,
  OutgoingDeviceMessage,
  SendRefusal,
  ServerRequest,
  ServerResponse,
} from '../spec/server-api.js';
import { stateId, StepRecorder, type MachineStep } from './state-path.js';

// ---------------------------------------------------------------------------------------------
// The model's server data (plain, readonly; keyed collections read with own-property lookups)
// ---------------------------------------------------------------------------------------------

/** A public prekey without a signature (one-time EC prekeys). */
export interface ModelPreKey {
  readonly keyId: number;
  readonly publicKey: Uint8Array;
}

/** A public prekey with the identity key's signature (signed prekey, Kyber prekeys). */
export interface ModelSignedPreKey extends ModelPreKey {
  readonly signature: Uint8Array;
}

/** A registered device: its listed identity, its prekey directory entry and its mailbox. */
export interface ModelDevice {
  readonly identityKey: Uint8Array;
  readonly registrationId: number;
  readonly signedPreKey: ModelSignedPreKey;
  /** Oldest first; each handed out once (WP-SRV-13). */
  readonly oneTimePreKeys: readonly ModelPreKey[];
  /** Oldest first; each handed out once (WP-SRV-14). */
  readonly oneTimeKyberPreKeys: readonly ModelSignedPreKey[];
  /** Handed out when no one-time Kyber prekey is left, and kept (WP-SRV-14). */
  readonly lastResortKyberPreKey: ModelSignedPreKey;
  /**
   * WP-SRV-29: the lowest one-time EC id a replenishment may still add, one past every id this
   * registration ever stored; it only rises.
   */
  readonly oneTimeIdFloor: number;
  /** WP-SRV-29: the same bound for one-time Kyber ids (the last resort is not one-time). */
  readonly kyberIdFloor: number;
  /** Unacknowledged envelopes, oldest first (≤ MAILBOX_CAPACITY, WP-SRV-20). */
  readonly mailbox: readonly Envelope[];
  /** Id of the next envelope stored here (WP-SRV-21). */
  readonly nextEnvelopeId: number;
}

/** A (sender, message id) pair the server accepted for an account (WP-SRV-19). */
export interface ModelAcceptedSend {
  readonly senderUserId: UserId;
  readonly senderDeviceId: DeviceId;
  readonly messageId: MessageId;
}

/** An account: the current signed list as uploaded, the list it encodes, its registered devices. */
export interface ModelAccount {
  readonly signedDeviceList: SignedDeviceList;
  readonly deviceList: DeviceList;
  /** By `String(deviceId)`; each equals its entry in {@link deviceList} (WP-SRV-11). */
  readonly registered: Readonly<Record<string, ModelDevice>>;
  /** Oldest first, ≤ MESSAGE_ID_DEDUP_WINDOW (WP-SRV-19). */
  readonly acceptedSends: readonly ModelAcceptedSend[];
}

/** A provisioning message held by the relay (WP-SRV-23). */
export interface ModelRelayEntry {
  readonly bytes: Uint8Array;
  readonly storedAt: number;
}

/** Everything the model server holds. */
export interface ModelServer {
  /** By user id (≤ MAX_ACCOUNTS). */
  readonly accounts: Readonly<Record<UserId, ModelAccount>>;
  /** Envelopes dropped by rule, by user id, then by `String(deviceId)` (WP-SRV-06, WP-SRV-11). */
  readonly dropped: Readonly<Record<UserId, Readonly<Record<string, number>>>>;
  /** By provisioning address (≤ MAX_PROVISIONING_ENTRIES). */
  readonly relay: Readonly<Record<string, ModelRelayEntry>>;
  /** By blob id = hex(SHA-256(bytes)) (≤ MAX_BLOBS). */
  readonly blobs: Readonly<Record<string, Uint8Array>>;
}

/** The request being answered: as received (untrusted, any shape), its clock reading and its id. */
export interface PendingRequest {
  readonly request: unknown;
  readonly now: number;
  readonly requestId: number;
}

/** Values a chain of checks carries to its later states (cleared when the request is answered). */
export interface RequestWork {
  /** The submitted signed list, verified once (WP-SRV-02). */
  readonly listCheck?: Result<DeviceList>;
  /** One-time EC prekeys handed out, one per requested device (WP-SRV-13). */
  readonly handedOutPreKeys?: readonly (ModelPreKey | null)[];
  /** Kyber prekeys handed out, one per requested device (WP-SRV-14). */
  readonly handedOutKyberPreKeys?: readonly ModelSignedPreKey[];
  /** The provisioning message handed out (WP-SRV-23). */
  readonly provisioned?: Uint8Array | null;
}

/** The server machine's context. */
export interface ServerMachineContext {
  readonly server: ModelServer;
  readonly pending: PendingRequest | null;
  readonly work: RequestWork;
}

/** The one event the server takes: a request on the authenticated connection at server time `now`. */
export interface ServerRequestEvent {
  readonly type: 'server.request';
  readonly request: ServerRequest;
  /** Server clock, integer ms ≥ 0. */
  readonly now: number;
  /** Chosen by the caller; echoed in the response event. */
  readonly requestId: number;
}

/** The one effect the server emits: the answer to a request. */
export interface ServerResponseEvent {
  readonly type: 'server.response';
  readonly requestId: number;
  readonly response: ServerResponse;
}

/** The machine's environment: it draws no randomness and needs only the crypto provider. */
export interface ServerMachineEnv {
  readonly crypto: CryptoProvider;
  /** Planted bugs for the simulator's self-test (spec/bugs.ts); absent in every real use. */
  readonly bugs?: readonly BugName[];
}

/** A server with nothing in it. */
export function emptyModelServer(): ModelServer {
  return { accounts: {}, dropped: {}, relay: {}, blobs: {} };
}

// ---------------------------------------------------------------------------------------------
// Reading untrusted requests
// ---------------------------------------------------------------------------------------------

function isObject(value: unknown): value is object {
  return typeof value === 'object' && value !== null;
}

/** A property of an untrusted value (undefined unless it is an object). */
function field(value: unknown, key: string): unknown {
  return isObject(value) ? Reflect.get(value, key) : undefined;
}

function isBytes(value: unknown): value is Uint8Array {
  return value instanceof Uint8Array;
}

function isUint32(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 && value <= MAX_UINT32;
}

/** `[A-Za-z0-9_-]{16,64}`: the token a new device shows in its QR code (WP-SRV-01). */
const PROVISIONING_ADDRESS_PATTERN = /^[A-Za-z0-9_-]{16,64}$/;
/** 64 lowercase hex digits: a SHA-256 (WP-SRV-01, WP-SRV-24). */
const BLOB_ID_PATTERN = /^[0-9a-f]{64}$/;
const ENVELOPE_TYPES: readonly EnvelopeType[] = ['prekey', 'whisper', 'retry-request'];

/** A device address, or null unless both fields are present and valid (WP-SRV-01). */
function addressIn(value: unknown): DeviceAddress | null {
  if (!isObject(value) || !Reflect.has(value, 'userId') || !Reflect.has(value, 'deviceId')) return null;
  const userId = field(value, 'userId');
  const deviceId = field(value, 'deviceId');
  return isValidUserId(userId) && isValidDeviceId(deviceId) ? { userId, deviceId } : null;
}

function hasDuplicates(values: readonly unknown[]): boolean {
  return new Set(values).size !== values.length;
}

/** Every element as `for … of` sees it (holes read as undefined). */
function everyElement(values: readonly unknown[], predicate: (value: unknown) => boolean): boolean {
  for (const value of values) if (!predicate(value)) return false;
  return true;
}

const ascending = (a: number, b: number): number => a - b;

function ownEntry<T>(record: Readonly<Record<string, T>>, key: string): T | undefined {
  return Object.hasOwn(record, key) ? record[key] : undefined;
}

function requestOf(context: ServerMachineContext): unknown {
  return context.pending?.request;
}

function nowOf(context: ServerMachineContext): number {
  if (context.pending === null) throw new InvariantError('no request is being answered');
  return context.pending.now;
}

function kindOf(context: ServerMachineContext): unknown {
  return field(requestOf(context), 'kind');
}

function bytesField(context: ServerMachineContext, key: string): Uint8Array {
  const value = field(requestOf(context), key);
  if (!isBytes(value)) throw new InvariantError(`${key} was checked to be bytes`);
  return value;
}

function accountOf(server: ModelServer, userId: UserId): ModelAccount | undefined {
  return ownEntry(server.accounts, userId);
}

function registeredOf(account: ModelAccount, deviceId: DeviceId): ModelDevice | undefined {
  return ownEntry(account.registered, String(deviceId));
}

/** The authenticated connection's address: `sender` of a send, `device` of everything else. */
function requesterOf(context: ServerMachineContext): DeviceAddress | null {
  return addressIn(field(requestOf(context), kindOf(context) === 'send' ? 'sender' : 'device'));
}

function requesterAccount(context: ServerMachineContext): ModelAccount | undefined {
  const address = requesterOf(context);
  return address === null ? undefined : accountOf(context.server, address.userId);
}

function requesterDevice(context: ServerMachineContext): ModelDevice | undefined {
  const address = requesterOf(context);
  const account = requesterAccount(context);
  return address === null || account === undefined ? undefined : registeredOf(account, address.deviceId);
}

function requireRequester(context: ServerMachineContext): {
  readonly address: DeviceAddress;
  readonly account: ModelAccount;
  readonly device: ModelDevice;
} {
  const address = requesterOf(context);
  const account = requesterAccount(context);
  const device = requesterDevice(context);
  if (address === null || account === undefined || device === undefined) {
    throw new InvariantError('the requester was checked to be a current device');
  }
  return { address, account, device };
}

/** The verified submitted list (after `submittedListVerifies`). */
function submittedList(context: ServerMachineContext): DeviceList {
  const check = context.work.listCheck;
  if (check === undefined || !check.ok) throw new InvariantError('the submitted list was checked to verify');
  return check.value;
}

function submittedSignedList(context: ServerMachineContext): SignedDeviceList {
  const signed = field(requestOf(context), 'deviceList');
  const list = field(signed, 'list');
  const signature = field(signed, 'signature');
  if (!isBytes(list) || !isBytes(signature)) throw new InvariantError('deviceList was checked');
  return { list, signature };
}

function copySignedList(signed: SignedDeviceList): SignedDeviceList {
  return { list: copyBytes(signed.list), signature: copyBytes(signed.signature) };
}

/** The user id a get-device-list or get-bundles request names (after `requestedUserIdWellFormed`). */
function requestedUserId(context: ServerMachineContext): UserId {
  const userId = field(requestOf(context), 'userId');
  if (!isValidUserId(userId)) throw new InvariantError('userId was checked');
  return userId;
}

function requestedAccount(context: ServerMachineContext): ModelAccount {
  const account = accountOf(context.server, requestedUserId(context));
  if (account === undefined) throw new InvariantError('the requested account was checked to exist');
  return account;
}

function requestedDeviceIds(context: ServerMachineContext): readonly unknown[] {
  const deviceIds = field(requestOf(context), 'deviceIds');
  return Array.isArray(deviceIds) ? deviceIds : [];
}

/**
 * The requested devices that are registered, in request order (after `requestedDevicesAllListed`).
 * WP-SRV-12: a listed device that has not registered yet (one being linked) gets no bundle.
 */
function requestedRegisteredDeviceIds(context: ServerMachineContext): DeviceId[] {
  const account = requestedAccount(context);
  return requestedDeviceIds(context).filter(
    (deviceId): deviceId is DeviceId =>
      isValidDeviceId(deviceId) && registeredOf(account, deviceId) !== undefined,
  );
}

/** Whether the account's current signed list names this device id. */
function isListedIn(account: ModelAccount, deviceId: unknown): boolean {
  return isValidDeviceId(deviceId) && account.deviceList.devices.some((entry) => entry.deviceId === deviceId);
}

/** The account's current devices: listed AND registered, ascending (WP-SRV-12). */
function currentDeviceIdsOf(account: ModelAccount): DeviceId[] {
  return account.deviceList.devices
    .map((entry) => entry.deviceId)
    .filter((deviceId) => registeredOf(account, deviceId) !== undefined);
}

// ---------------------------------------------------------------------------------------------
// Prekey uploads as submitted (WP-SRV-08)
// ---------------------------------------------------------------------------------------------

/** The three parts of an upload, before their elements are checked. */
interface UploadParts {
  readonly signedPreKey: object;
  readonly oneTimePreKeys: readonly unknown[];
  readonly kyberPreKeys: readonly unknown[];
}

interface SubmittedKyberPreKey extends ModelSignedPreKey {
  readonly lastResort: boolean;
}

/** An upload whose fields all have the right types (before encodings and signatures are checked). */
interface ShapedUpload {
  readonly signedPreKey: ModelSignedPreKey;
  readonly oneTimePreKeys: readonly ModelPreKey[];
  readonly kyberPreKeys: readonly SubmittedKyberPreKey[];
}

type UploadMode = 'register' | 'replenish';

function uploadPartsOf(context: ServerMachineContext): UploadParts | null {
  const preKeys = field(requestOf(context), 'preKeys');
  const signedPreKey = field(preKeys, 'signedPreKey');
  const oneTimePreKeys = field(preKeys, 'oneTimePreKeys');
  const kyberPreKeys = field(preKeys, 'kyberPreKeys');
  if (!isObject(signedPreKey) || !Array.isArray(oneTimePreKeys) || !Array.isArray(kyberPreKeys)) return null;
  return { signedPreKey, oneTimePreKeys, kyberPreKeys };
}

function shapeSignedPreKey(value: unknown): ModelSignedPreKey | null {
  const keyId = field(value, 'keyId');
  const publicKey = field(value, 'publicKey');
  const signature = field(value, 'signature');
  return isUint32(keyId) && isBytes(publicKey) && isBytes(signature) ? { keyId, publicKey, signature } : null;
}

function shapeOneTimePreKey(value: unknown): ModelPreKey | null {
  const keyId = field(value, 'keyId');
  const publicKey = field(value, 'publicKey');
  return isObject(value) && isUint32(keyId) && isBytes(publicKey) ? { keyId, publicKey } : null;
}

function shapeKyberPreKey(value: unknown): SubmittedKyberPreKey | null {
  const signed = isObject(value) ? shapeSignedPreKey(value) : null;
  const lastResort = field(value, 'lastResort');
  return signed !== null && typeof lastResort === 'boolean' ? { ...signed, lastResort } : null;
}

function shapedUploadOf(context: ServerMachineContext): ShapedUpload | null {
  const parts = uploadPartsOf(context);
  if (parts === null) return null;
  const signedPreKey = shapeSignedPreKey(parts.signedPreKey);
  const oneTimePreKeys: ModelPreKey[] = [];
  for (const key of parts.oneTimePreKeys) {
    const shaped = shapeOneTimePreKey(key);
    if (shaped === null) return null;
    oneTimePreKeys.push(shaped);
  }
  const kyberPreKeys: SubmittedKyberPreKey[] = [];
  for (const key of parts.kyberPreKeys) {
    const shaped = shapeKyberPreKey(key);
    if (shaped === null) return null;
    kyberPreKeys.push(shaped);
  }
  return signedPreKey === null ? null : { signedPreKey, oneTimePreKeys, kyberPreKeys };
}

function requireShapedUpload(context: ServerMachineContext): ShapedUpload {
  const upload = shapedUploadOf(context);
  if (upload === null) throw new InvariantError('the upload was checked to be well formed');
  return upload;
}

/** The identity key that must sign the uploaded prekeys: the registering one, or the registered one. */
function uploaderIdentityKey(context: ServerMachineContext): Uint8Array {
  return kindOf(context) === 'upload-prekeys'
    ? requireRequester(context).device.identityKey
    : bytesField(context, 'identityKey');
}

function storedSignedPreKey(key: ModelSignedPreKey): ModelSignedPreKey {
  return { keyId: key.keyId, publicKey: copyBytes(key.publicKey), signature: copyBytes(key.signature) };
}

/** WP-SRV-29: a kind's id floor after `added` keys of it are stored: past each of them, never lower. */
function floorAfter(floor: number, added: readonly ModelPreKey[]): number {
  let next = floor;
  for (const key of added) if (key.keyId >= next) next = key.keyId + 1;
  return next;
}

/**
 * WP-SRV-09: the stored one-time keys of one kind after a replenishment, and (WP-SRV-29) the kind's
 * new id floor. Normally the upload's keys join the end of the queue, except those under the floor:
 * their ids were stored before, so they come from a copy of an upload already applied whose keys
 * have all gone out since (had one been left, the repeat guard would have answered). If one of the
 * upload's ids is stored (with another key: a repeat was answered earlier), the device made new keys
 * under ids it had used, so it no longer holds the stored ones, and the upload's keys take their place.
 */
function oneTimeKeysAfterUpload<K extends ModelPreKey>(
  stored: readonly K[],
  floor: number,
  uploaded: readonly K[],
): { readonly keys: readonly K[]; readonly floor: number } {
  const idReused = stored.some((key) => uploaded.some((u) => u.keyId === key.keyId));
  if (idReused) return { keys: uploaded, floor: floorAfter(floor, uploaded) };
  const unseen = uploaded.filter((key) => key.keyId >= floor);
  return { keys: [...stored, ...unseen], floor: floorAfter(floor, unseen) };
}

/** WP-SRV-09, WP-SRV-29: the device's one-time keys, id floors and last resort once `upload` is merged in. */
function preKeysAfterReplenishment(
  device: ModelDevice,
  upload: ShapedUpload,
): Pick<
  ModelDevice,
  'oneTimePreKeys' | 'oneTimeKyberPreKeys' | 'lastResortKyberPreKey' | 'oneTimeIdFloor' | 'kyberIdFloor'
> {
  const lastResort = upload.kyberPreKeys.find((key) => key.lastResort);
  const ec = oneTimeKeysAfterUpload(
    device.oneTimePreKeys,
    device.oneTimeIdFloor,
    upload.oneTimePreKeys.map((key) => ({ keyId: key.keyId, publicKey: copyBytes(key.publicKey) })),
  );
  const kyber = oneTimeKeysAfterUpload(
    device.oneTimeKyberPreKeys,
    device.kyberIdFloor,
    upload.kyberPreKeys.filter((key) => !key.lastResort).map(storedSignedPreKey),
  );
  return {
    oneTimePreKeys: ec.keys,
    oneTimeKyberPreKeys: kyber.keys,
    lastResortKyberPreKey:
      lastResort === undefined ? device.lastResortKyberPreKey : storedSignedPreKey(lastResort),
    oneTimeIdFloor: ec.floor,
    kyberIdFloor: kyber.floor,
  };
}

/** The directory entry a registration stores (WP-SRV-08: exactly one last-resort Kyber prekey). */
function registeredPreKeys(
  upload: ShapedUpload,
): Pick<
  ModelDevice,
  | 'signedPreKey'
  | 'oneTimePreKeys'
  | 'oneTimeKyberPreKeys'
  | 'lastResortKyberPreKey'
  | 'oneTimeIdFloor'
  | 'kyberIdFloor'
> {
  const lastResort = upload.kyberPreKeys.find((key) => key.lastResort);
  if (lastResort === undefined)
    throw new InvariantError('a registration was checked to bring its last resort');
  const oneTimeKyberPreKeys = upload.kyberPreKeys.filter((key) => !key.lastResort).map(storedSignedPreKey);
  return {
    signedPreKey: storedSignedPreKey(upload.signedPreKey),
    oneTimePreKeys: upload.oneTimePreKeys.map((key) => ({
      keyId: key.keyId,
      publicKey: copyBytes(key.publicKey),
    })),
    oneTimeKyberPreKeys,
    lastResortKyberPreKey: storedSignedPreKey(lastResort),
    // WP-SRV-29: a registration starts the floors past its own one-time ids.
    oneTimeIdFloor: floorAfter(0, upload.oneTimePreKeys),
    kyberIdFloor: floorAfter(0, oneTimeKyberPreKeys),
  };
}

function firstDecodeError(
  keys: readonly { readonly publicKey: Uint8Array }[],
  decode: (bytes: Uint8Array) => Result<Uint8Array>,
): string {
  for (const key of keys) {
    const decoded = decode(key.publicKey);
    if (!decoded.ok) return decoded.error.code;
  }
  throw new InvariantError('no key failed to decode');
}

// ---------------------------------------------------------------------------------------------
// Sends as submitted (WP-SRV-15 … WP-SRV-21)
// ---------------------------------------------------------------------------------------------

function messageListOf(context: ServerMachineContext): readonly unknown[] {
  const messages = field(requestOf(context), 'messages');
  return Array.isArray(messages) ? messages : [];
}

/** True when a device message names all four fields (whatever their values). */
function messageHasAllFields(message: unknown): boolean {
  return (
    isObject(message) &&
    Reflect.has(message, 'deviceId') &&
    Reflect.has(message, 'registrationId') &&
    Reflect.has(message, 'type') &&
    Reflect.has(message, 'bytes')
  );
}

function shapeDeviceMessage(message: unknown): OutgoingDeviceMessage | null {
  if (!messageHasAllFields(message)) return null;
  const deviceId = field(message, 'deviceId');
  const registrationId = field(message, 'registrationId');
  const type = ENVELOPE_TYPES.find((known) => known === field(message, 'type'));
  const bytes = field(message, 'bytes');
  if (!isValidDeviceId(deviceId) || !isUint32(registrationId) || type === undefined || !isBytes(bytes)) {
    return null;
  }
  return { deviceId, registrationId, type, bytes };
}

/** The device copies of a send (after `deviceMessagesWellFormed`). */
function deviceMessagesOf(context: ServerMachineContext): readonly OutgoingDeviceMessage[] {
  const out: OutgoingDeviceMessage[] = [];
  for (const message of messageListOf(context)) {
    const shaped = shapeDeviceMessage(message);
    if (shaped === null) throw new InvariantError('the device messages were checked');
    out.push(shaped);
  }
  return out;
}

function sendMessageId(context: ServerMachineContext): MessageId {
  const messageId = field(requestOf(context), 'messageId');
  if (!isValidMessageId(messageId)) throw new InvariantError('messageId was checked');
  return messageId;
}

function onlyDeviceOf(context: ServerMachineContext): unknown {
  return field(requestOf(context), 'onlyDevice');
}

function recipientAccount(context: ServerMachineContext): ModelAccount | undefined {
  const recipient = field(requestOf(context), 'recipient');
  return isValidUserId(recipient) ? accountOf(context.server, recipient) : undefined;
}

function requireRecipient(context: ServerMachineContext): {
  readonly userId: UserId;
  readonly account: ModelAccount;
} {
  const userId = field(requestOf(context), 'recipient');
  const account = recipientAccount(context);
  if (!isValidUserId(userId) || account === undefined) throw new InvariantError('the recipient was checked');
  return { userId, account };
}

/**
 * WP-SRV-16 / WP-SRV-18: the devices a send must address and those it names that it must not. The
 * expected set is the recipient's current devices minus the sending device on its own account; a
 * single-device send is held to that one device.
 */
function deviceSetDifference(context: ServerMachineContext): {
  readonly missing: readonly DeviceId[];
  readonly extra: readonly DeviceId[];
} {
  const { userId, account } = requireRecipient(context);
  const sender = requireRequester(context).address;
  const expected = currentDeviceIdsOf(account).filter(
    (deviceId) => !(userId === sender.userId && deviceId === sender.deviceId),
  );
  const named = deviceMessagesOf(context).map((message) => message.deviceId);
  const onlyDevice = onlyDeviceOf(context);
  const required =
    onlyDevice === undefined ? expected : expected.filter((deviceId) => deviceId === onlyDevice);
  return {
    missing: required.filter((deviceId) => !named.includes(deviceId)).sort(ascending),
    extra: named.filter((deviceId) => !expected.includes(deviceId)).sort(ascending),
  };
}

/** WP-SRV-17: addressed devices whose current registration id is not the one the sender used. */
function staleDeviceIds(context: ServerMachineContext): DeviceId[] {
  const { account } = requireRecipient(context);
  return deviceMessagesOf(context)
    .filter((message) => registeredOf(account, message.deviceId)?.registrationId !== message.registrationId)
    .map((message) => message.deviceId)
    .sort(ascending);
}

/** WP-SRV-20: addressed devices whose mailbox is at capacity. */
function fullMailboxDeviceIds(context: ServerMachineContext): DeviceId[] {
  const { account } = requireRecipient(context);
  return deviceMessagesOf(context)
    .filter((message) => (registeredOf(account, message.deviceId)?.mailbox.length ?? 0) >= MAILBOX_CAPACITY)
    .map((message) => message.deviceId)
    .sort(ascending);
}

// ---------------------------------------------------------------------------------------------
// Provisioning relay (WP-SRV-23)
// ---------------------------------------------------------------------------------------------

function provisioningAddressOf(context: ServerMachineContext): string {
  const address = field(requestOf(context), 'address');
  if (typeof address !== 'string') throw new InvariantError('address was checked');
  return address;
}

/** WP-SRV-23: a relay entry is live for PROVISIONING_TTL after it was stored. */
function isLive(entry: ModelRelayEntry, now: number): boolean {
  return now - entry.storedAt < PROVISIONING_TTL;
}

function liveRelayEntry(context: ServerMachineContext): ModelRelayEntry | undefined {
  const entry = ownEntry(context.server.relay, provisioningAddressOf(context));
  return entry !== undefined && isLive(entry, nowOf(context)) ? entry : undefined;
}

// ---------------------------------------------------------------------------------------------
// Server updates (used only by the last state of a chain)
// ---------------------------------------------------------------------------------------------

function withAccount(server: ModelServer, userId: UserId, account: ModelAccount): ModelServer {
  return { ...server, accounts: { ...server.accounts, [userId]: account } };
}

/** WP-SRV-11: adds a removed registration's queued envelopes to its address's dropped count. */
function countDropped(
  dropped: ModelServer['dropped'],
  userId: UserId,
  removed: readonly (readonly [string, ModelDevice])[],
): ModelServer['dropped'] {
  let byDevice = ownEntry(dropped, userId) ?? {};
  for (const [deviceKey, device] of removed) {
    if (device.mailbox.length === 0) continue;
    byDevice = { ...byDevice, [deviceKey]: (ownEntry(byDevice, deviceKey) ?? 0) + device.mailbox.length };
  }
  return byDevice === ownEntry(dropped, userId) || Object.keys(byDevice).length === 0
    ? dropped
    : { ...dropped, [userId]: byDevice };
}

function newRegistration(context: ServerMachineContext): ModelDevice {
  const registrationId = field(requestOf(context), 'registrationId');
  if (!isUint32(registrationId)) throw new InvariantError('registrationId was checked');
  return {
    identityKey: copyBytes(bytesField(context, 'identityKey')),
    registrationId,
    ...registeredPreKeys(requireShapedUpload(context)),
    mailbox: [],
    nextEnvelopeId: 1,
  };
}

/** The account a register-account request installs (new, or replacing a reset one). */
function newAccount(context: ServerMachineContext, previous: ModelAccount | undefined): ModelAccount {
  return {
    signedDeviceList: copySignedList(submittedSignedList(context)),
    deviceList: submittedList(context),
    registered: { [String(PRIMARY_DEVICE_ID)]: newRegistration(context) },
    // WP-SRV-19: the dedup window survives a reset.
    acceptedSends: previous?.acceptedSends ?? [],
  };
}

function copyEnvelope(envelope: Envelope): Envelope {
  return {
    envelopeId: envelope.envelopeId,
    messageId: envelope.messageId,
    sender: { userId: envelope.sender.userId, deviceId: envelope.sender.deviceId },
    type: envelope.type,
    bytes: copyBytes(envelope.bytes),
    serverTimestamp: envelope.serverTimestamp,
  };
}

// ---------------------------------------------------------------------------------------------
// Error details
// ---------------------------------------------------------------------------------------------

/** Named sources of the `{detail}` part of an error message. */
type DetailName =
  | 'identityKeyDecodeError'
  | 'submittedListError'
  | 'signedPreKeyDecodeError'
  | 'oneTimePreKeyDecodeError'
  | 'kyberPreKeyDecodeError'
  | 'firstDeviceNotListed';

function detailOf(context: ServerMachineContext, name: DetailName): string {
  switch (name) {
    case 'identityKeyDecodeError': {
      const decoded = decodeEcPublicKey(bytesField(context, 'identityKey'));
      return decoded.ok ? '' : decoded.error.code;
    }
    case 'submittedListError': {
      const check = context.work.listCheck;
      return check === undefined || check.ok ? '' : check.error.code;
    }
    case 'signedPreKeyDecodeError':
      return firstDecodeError([requireShapedUpload(context).signedPreKey], decodeEcPublicKey);
    case 'oneTimePreKeyDecodeError':
      return firstDecodeError(requireShapedUpload(context).oneTimePreKeys, decodeEcPublicKey);
    case 'kyberPreKeyDecodeError':
      return firstDecodeError(requireShapedUpload(context).kyberPreKeys, decodeKemPublicKey);
    case 'firstDeviceNotListed': {
      const account = requestedAccount(context);
      for (const deviceId of requestedDeviceIds(context)) {
        if (!isListedIn(account, deviceId)) return `${deviceId}`;
      }
      return '';
    }
  }
}

/** Parameters of the `answerError` action. */
interface ErrorParams {
  readonly code: ErrorCode;
  readonly message: string;
  /** Fills `{detail}` in `message`. */
  readonly detail?: DetailName;
}

// ---------------------------------------------------------------------------------------------
// Rules
// ---------------------------------------------------------------------------------------------

/** A whitepaper rule ID such as `WP-SRV-16` (any area, not only those with an error code). */
export type WhitepaperRuleId = `WP-${string}-${number}`;

/**
 * Every guard and action of the server machine, with the whitepaper rules it implements. A test
 * checks that the machine uses no guard or action missing here, and nothing here is unused.
 */
export const RULES: Readonly<Record<string, readonly WhitepaperRuleId[]>> = Object.freeze({
  // Guards: routing.
  clockReadingValid: ['WP-SRV-01'],
  requestHasKind: ['WP-SRV-01'],
  requestKindIs: ['WP-SRV-01'],
  // Guards: registration.
  deviceAddressWellFormed: ['WP-SRV-01'],
  deviceIsPrimary: ['WP-SRV-05'],
  identityKeyIsBytes: ['WP-SRV-01'],
  identityKeyDecodes: ['WP-SRV-01', 'WP-KEYS-01', 'WP-KEYS-02', 'WP-KEYS-03'],
  registrationIdInRange: ['WP-SRV-01'],
  proofIsBytes: ['WP-SRV-01'],
  submittedListWellFormed: ['WP-SRV-01'],
  submittedListVerifies: ['WP-SRV-02', 'WP-DEV-03', 'WP-DEV-04', 'WP-DEV-05'],
  submittedListNamesExactlyRegisteringDevice: ['WP-SRV-05'],
  registrationProofVerifies: ['WP-SRV-04', 'WP-DEV-06'],
  userIdInUse: ['WP-SRV-05'],
  registrationIsIdenticalRetry: ['WP-SRV-05'],
  submittedAccountKeyDiffers: ['WP-SRV-05', 'WP-SRV-06'],
  submittedListVersionGreater: ['WP-SRV-03'],
  accountTableHasRoom: ['WP-SRV-25'],
  accountExists: ['WP-SRV-12'],
  listNamesDeviceWithThisIdentity: ['WP-SRV-07'],
  deviceRegisteredWithThisIdentity: ['WP-SRV-07'],
  deviceRegistered: ['WP-SRV-11'],
  // Guards: prekey uploads.
  preKeysIsObject: ['WP-SRV-01'],
  preKeysHasParts: ['WP-SRV-01'],
  uploadWithinPerUploadLimit: ['WP-SRV-08'],
  signedPreKeyFieldsWellFormed: ['WP-SRV-08'],
  oneTimePreKeyFieldsWellFormed: ['WP-SRV-08'],
  kyberPreKeyFieldsWellFormed: ['WP-SRV-08'],
  lastResortCountFits: ['WP-SRV-08'],
  oneTimeKyberCountWithinLimit: ['WP-SRV-08'],
  uploadIdsUnique: ['WP-SRV-08'],
  signedPreKeyDecodes: ['WP-SRV-08', 'WP-KEYS-01', 'WP-KEYS-02', 'WP-KEYS-03'],
  prekeySignaturesHaveSignatureLength: ['WP-SRV-08'],
  oneTimePreKeysDecode: ['WP-SRV-08', 'WP-KEYS-01', 'WP-KEYS-02', 'WP-KEYS-03'],
  kyberPreKeysDecode: ['WP-SRV-08', 'WP-KEYS-05'],
  signedPreKeySignatureVerifies: ['WP-SRV-08', 'WP-PQXDH-01'],
  kyberPreKeySignaturesVerify: ['WP-SRV-08', 'WP-PQXDH-01'],
  uploadRepeatsStoredKey: ['WP-SRV-09'],
  deviceOneTimeTotalsWithinLimit: ['WP-SRV-08', 'WP-SRV-09', 'WP-SRV-29'],
  oneTimeKyberIdsAvoidLastResort: ['WP-SRV-08'],
  // Guards: acting devices.
  requesterAddressWellFormed: ['WP-SRV-01'],
  requesterAccountExists: ['WP-SRV-12'],
  requesterIsCurrentDevice: ['WP-SRV-12'],
  // Guards: device lists.
  submittedListKeepsAccountKey: ['WP-SRV-10'],
  submittedListIsCurrentList: ['WP-SRV-10'],
  requestedUserIdWellFormed: ['WP-SRV-01'],
  requestedAccountExists: ['WP-SRV-12'],
  // Guards: bundles.
  requestedDeviceIdsWellFormed: ['WP-SRV-01'],
  requestedDeviceIdsDistinct: ['WP-SRV-01', 'WP-SRV-13'],
  requestedDevicesAllListed: ['WP-SRV-12', 'WP-SRV-13'],
  // Guards: sends.
  messageIdWellFormed: ['WP-SRV-01'],
  recipientIdWellFormed: ['WP-SRV-01'],
  onlyDeviceWellFormed: ['WP-SRV-01'],
  messageListWellFormed: ['WP-SRV-01'],
  deviceMessagesWellFormed: ['WP-SRV-01'],
  firstMalformedMessageLacksFields: ['WP-SRV-01'],
  deviceCopiesWithinSizeLimit: ['WP-SRV-21'],
  sendNamesEachDeviceOnce: ['WP-SRV-16'],
  singleDeviceSendCarriesThatCopy: ['WP-SRV-18'],
  senderAddressWellFormed: ['WP-SRV-01'],
  senderAccountExists: ['WP-SRV-12', 'WP-SRV-15'],
  senderIsCurrentDevice: ['WP-SRV-12', 'WP-SRV-15'],
  messageIdAlreadyAccepted: ['WP-SRV-19'],
  recipientExists: ['WP-SRV-15'],
  deviceSetMatches: ['WP-SRV-16', 'WP-SRV-18'],
  registrationIdsCurrent: ['WP-SRV-17', 'WP-SRV-18'],
  mailboxesHaveRoom: ['WP-SRV-20'],
  // Guards: mailboxes.
  envelopeIdsWellFormed: ['WP-SRV-01'],
  // Guards: provisioning relay and blobs.
  provisioningAddressWellFormed: ['WP-SRV-01'],
  provisioningBytesAreBytes: ['WP-SRV-01'],
  provisioningMessageWithinSizeLimit: ['WP-SRV-23'],
  liveProvisioningMessageAtAddress: ['WP-SRV-23'],
  provisioningMessageIdentical: ['WP-SRV-23'],
  relayHasRoom: ['WP-SRV-25'],
  blobIdWellFormed: ['WP-SRV-01'],
  blobBytesAreBytes: ['WP-SRV-01'],
  blobWithinSizeLimit: ['WP-SRV-24'],
  blobIdIsContentHash: ['WP-SRV-24'],
  blobAlreadyStored: ['WP-SRV-24'],
  blobStoreHasRoom: ['WP-SRV-25'],
  // Actions.
  takeRequest: ['WP-SRV-01'],
  finishRequest: ['WP-SRV-01'],
  answerError: ['WP-SRV-01'],
  answerOk: ['WP-SRV-05', 'WP-SRV-07', 'WP-SRV-09', 'WP-SRV-10', 'WP-SRV-22', 'WP-SRV-23', 'WP-SRV-24'],
  verifySubmittedDeviceList: ['WP-SRV-02'],
  createAccount: ['WP-SRV-05', 'WP-SRV-08'],
  resetAccount: ['WP-SRV-06', 'WP-SRV-11', 'WP-SRV-19'],
  registerLinkedDevice: ['WP-SRV-07', 'WP-SRV-08'],
  replenishPreKeys: ['WP-SRV-09', 'WP-SRV-28', 'WP-SRV-29'],
  revokeRemovedDevices: ['WP-SRV-11'],
  installDeviceList: ['WP-SRV-10'],
  answerDeviceList: ['WP-SRV-12'],
  handOutOneTimePreKeys: ['WP-SRV-13'],
  handOutKyberPreKeys: ['WP-SRV-14'],
  answerBundles: ['WP-SRV-13', 'WP-SRV-14'],
  answerDuplicateAccepted: ['WP-SRV-19'],
  refuseUnknownUser: ['WP-SRV-15'],
  refuseMismatchedDevices: ['WP-SRV-16', 'WP-SRV-18'],
  refuseStaleDevices: ['WP-SRV-17'],
  refuseMailboxFull: ['WP-SRV-20'],
  storeEnvelopes: ['WP-SRV-21', 'WP-SRV-26'],
  rememberAcceptedSend: ['WP-SRV-19'],
  answerAccepted: ['WP-SRV-21'],
  answerEnvelopes: ['WP-SRV-22'],
  removeAcknowledgedEnvelopes: ['WP-SRV-22'],
  purgeExpiredProvisioning: ['WP-SRV-23'],
  storeProvisioningMessage: ['WP-SRV-23'],
  handOutProvisioningMessage: ['WP-SRV-23'],
  answerProvisioningMessage: ['WP-SRV-23'],
  storeBlob: ['WP-SRV-24'],
  answerBlob: ['WP-SRV-24'],
} satisfies Record<string, readonly WhitepaperRuleId[]>);

// ---------------------------------------------------------------------------------------------
// Machine configuration helpers
// ---------------------------------------------------------------------------------------------

const SERVING = '#server.serving';
const MALFORMED: ErrorCode = 'SERVER_MALFORMED_REQUEST';

/** The explicit refusal transition: answer the error and go back to serving (state unchanged). */
function refusal(code: ErrorCode, message: string, detail?: DetailName) {
  const params: ErrorParams = detail === undefined ? { code, message } : { code, message, detail };
  return { target: SERVING, actions: [{ type: 'answerError' as const, params }] };
}

/** A check state: the guard lets the request on to `next`; otherwise the refusal is answered. */
function check<const G>(guard: G, next: string, code: ErrorCode, message: string, detail?: DetailName) {
  return { always: [{ guard, target: next }, refusal(code, message, detail)] };
}

/** WP-SRV-12: the three checks that the requester is a current device of an existing account. */
function requesterChecks(next: string) {
  return {
    checkRequesterAddress: check(
      'requesterAddressWellFormed',
      'checkRequesterAccount',
      MALFORMED,
      'device is not a valid address',
    ),
    checkRequesterAccount: check(
      'requesterAccountExists',
      'checkRequesterDevice',
      'SERVER_UNKNOWN_USER',
      'no such account',
    ),
    checkRequesterDevice: check(
      'requesterIsCurrentDevice',
      next,
      'SERVER_UNKNOWN_DEVICE',
      'the device is not registered',
    ),
  } as const;
}

/** WP-SRV-01 / WP-SRV-05 / WP-SRV-07: the identity a registration submits. */
function identityChecks(next: string) {
  return {
    checkIdentityKeyBytes: check(
      'identityKeyIsBytes',
      'checkIdentityKeyEncoding',
      MALFORMED,
      'identityKey must be bytes',
    ),
    checkIdentityKeyEncoding: check(
      'identityKeyDecodes',
      'checkRegistrationId',
      MALFORMED,
      'identityKey is not a valid EC public key ({detail})',
      'identityKeyDecodeError',
    ),
    checkRegistrationId: check(
      'registrationIdInRange',
      'checkProofBytes',
      MALFORMED,
      'registrationId must be in 1..2^32-1',
    ),
    checkProofBytes: check('proofIsBytes', next, MALFORMED, 'proof must be bytes'),
  } as const;
}

/** WP-SRV-08: the checks of a prekey upload, in order; `done` follows a valid upload. */
function preKeyChecks(mode: UploadMode, done: string) {
  const base = {
    checkObject: check('preKeysIsObject', 'checkParts', MALFORMED, 'preKeys must be an object'),
    checkParts: check(
      'preKeysHasParts',
      'checkUploadLimit',
      MALFORMED,
      'preKeys needs signedPreKey, oneTimePreKeys and kyberPreKeys',
    ),
    checkUploadLimit: check(
      'uploadWithinPerUploadLimit',
      'checkSignedPreKeyFields',
      'SERVER_PREKEY_LIMIT',
      'too many prekeys in one upload',
    ),
    checkSignedPreKeyFields: check(
      'signedPreKeyFieldsWellFormed',
      'checkOneTimePreKeyFields',
      'SERVER_PREKEY_INVALID',
      'signed prekey needs a uint32 keyId, a public key and a signature',
    ),
    checkOneTimePreKeyFields: check(
      'oneTimePreKeyFieldsWellFormed',
      'checkKyberPreKeyFields',
      'SERVER_PREKEY_INVALID',
      'one-time prekey needs a uint32 keyId and a public key',
    ),
    checkKyberPreKeyFields: check(
      'kyberPreKeyFieldsWellFormed',
      'checkLastResort',
      'SERVER_PREKEY_INVALID',
      'Kyber prekey needs a uint32 keyId, a public key, a signature and lastResort',
    ),
    checkLastResort: check(
      { type: 'lastResortCountFits', params: { mode } },
      'checkKyberLimit',
      'SERVER_PREKEY_INVALID',
      'wrong number of last-resort Kyber prekeys',
    ),
    checkKyberLimit: check(
      'oneTimeKyberCountWithinLimit',
      'checkUniqueIds',
      'SERVER_PREKEY_LIMIT',
      'too many one-time Kyber prekeys in one upload',
    ),
    checkUniqueIds: check(
      'uploadIdsUnique',
      'checkSignedPreKeyEncoding',
      'SERVER_PREKEY_DUPLICATE_ID',
      'prekey ids repeat within the upload',
    ),
    checkSignedPreKeyEncoding: check(
      'signedPreKeyDecodes',
      'checkSignatureLengths',
      'SERVER_PREKEY_INVALID',
      'signed prekey is not a valid EC key ({detail})',
      'signedPreKeyDecodeError',
    ),
    checkSignatureLengths: check(
      'prekeySignaturesHaveSignatureLength',
      'checkOneTimeEncodings',
      'SERVER_PREKEY_INVALID',
      'prekey signature has the wrong length',
    ),
    checkOneTimeEncodings: check(
      'oneTimePreKeysDecode',
      'checkKyberEncodings',
      'SERVER_PREKEY_INVALID',
      'one-time prekey is not a valid EC key ({detail})',
      'oneTimePreKeyDecodeError',
    ),
    checkKyberEncodings: check(
      'kyberPreKeysDecode',
      'checkSignedPreKeySignature',
      'SERVER_PREKEY_INVALID',
      'Kyber prekey is not a valid KEM key ({detail})',
      'kyberPreKeyDecodeError',
    ),
    checkSignedPreKeySignature: check(
      'signedPreKeySignatureVerifies',
      'checkKyberSignatures',
      'SERVER_PREKEY_SIGNATURE_INVALID',
      'signed prekey signature does not verify',
    ),
    checkKyberSignatures: check(
      'kyberPreKeySignaturesVerify',
      mode === 'register' ? done : 'checkRepeat',
      'SERVER_PREKEY_SIGNATURE_INVALID',
      'Kyber prekey signature does not verify',
    ),
  } as const;
  const states =
    mode === 'register'
      ? base
      : {
          ...base,
          // WP-SRV-09: a repeat of an upload already applied is answered ok and changes nothing.
          checkRepeat: {
            always: [
              { guard: 'uploadRepeatsStoredKey', target: SERVING, actions: 'answerOk' },
              { target: 'checkDeviceTotals' },
            ],
          } as const,
          // WP-SRV-08: the device's totals and ids after the merge (replenishment only).
          checkDeviceTotals: check(
            'deviceOneTimeTotalsWithinLimit',
            'checkStoredIds',
            'SERVER_PREKEY_LIMIT',
            'the device would hold too many one-time prekeys',
          ),
          checkStoredIds: check(
            'oneTimeKyberIdsAvoidLastResort',
            done,
            'SERVER_PREKEY_DUPLICATE_ID',
            "a one-time Kyber prekey id is the last resort's",
          ),
        };
  return { initial: 'checkObject', states } as const;
}

/** WP-SRV-01 / WP-SRV-02: the submitted signed list is a list and verifies for its account. */
function listChecks(next: string) {
  return {
    checkListShape: check(
      'submittedListWellFormed',
      'verifyList',
      MALFORMED,
      'deviceList must be a signed list',
    ),
    verifyList: {
      entry: 'verifySubmittedDeviceList',
      ...check(
        'submittedListVerifies',
        next,
        'SERVER_DEVICE_LIST_INVALID',
        'device list does not verify ({detail})',
        'submittedListError',
      ),
    },
  } as const;
}

const REQUEST_STATES = [
  ['register-account', 'registerAccount'],
  ['register-device', 'registerDevice'],
  ['upload-prekeys', 'uploadPreKeys'],
  ['update-device-list', 'updateDeviceList'],
  ['get-device-list', 'getDeviceList'],
  ['get-bundles', 'getBundles'],
  ['send', 'send'],
  ['fetch', 'fetch'],
  ['ack', 'ack'],
  ['provision-put', 'provisionPut'],
  ['provision-get', 'provisionGet'],
  ['blob-put', 'blobPut'],
  ['blob-get', 'blobGet'],
] as const satisfies readonly (readonly [ServerRequest['kind'], string])[];

// ---------------------------------------------------------------------------------------------
// The machine
// ---------------------------------------------------------------------------------------------

/**
 * The server machine. `input.server` starts it from a given server (default: empty). Send it
 * `server.request` events; it emits one `server.response` per request and returns to `serving`.
 */
export function createServerMachine(env: ServerMachineEnv) {
  const c = env.crypto;

  function respond(context: ServerMachineContext, response: ServerResponse): ServerResponseEvent {
    if (context.pending === null) throw new InvariantError('no request is being answered');
    return { type: 'server.response', requestId: context.pending.requestId, response };
  }

  function refuseSend(context: ServerMachineContext, refusal: SendRefusal): ServerResponseEvent {
    return respond(context, { kind: 'refused', refusal });
  }

  /** WP-SRV-04: the registration proof over (address, identity key, registration id, account key). */
  function registrationProofVerifies(context: ServerMachineContext, accountKey: Uint8Array): boolean {
    const address = addressIn(field(requestOf(context), 'device'));
    const registrationId = field(requestOf(context), 'registrationId');
    if (address === null || !isUint32(registrationId)) return false;
    const identityKey = bytesField(context, 'identityKey');
    const message = registrationProofMessage(address, identityKey, registrationId, accountKey);
    return verifyRegistrationProof(c, identityKey, message, bytesField(context, 'proof'));
  }

  return setup({
    types: {} as {
      context: ServerMachineContext;
      events: ServerRequestEvent;
      emitted: ServerResponseEvent;
      input: { readonly server?: ModelServer } | undefined;
    },
    guards: {
      // ---- routing (WP-SRV-01)
      clockReadingValid: ({ event }) => Number.isSafeInteger(event.now) && event.now >= 0,
      requestHasKind: ({ context }) => isObject(requestOf(context)) && typeof kindOf(context) === 'string',
      requestKindIs: ({ context }, params: { readonly kind: ServerRequest['kind'] }) =>
        kindOf(context) === params.kind,

      // ---- registration (WP-SRV-01, -02, -03, -04, -05, -06, -07, -25)
      deviceAddressWellFormed: ({ context }) => addressIn(field(requestOf(context), 'device')) !== null,
      deviceIsPrimary: ({ context }) =>
        addressIn(field(requestOf(context), 'device'))?.deviceId === PRIMARY_DEVICE_ID,
      identityKeyIsBytes: ({ context }) => isBytes(field(requestOf(context), 'identityKey')),
      identityKeyDecodes: ({ context }) => decodeEcPublicKey(bytesField(context, 'identityKey')).ok,
      registrationIdInRange: ({ context }) => {
        const registrationId = field(requestOf(context), 'registrationId');
        return isUint32(registrationId) && registrationId >= 1;
      },
      proofIsBytes: ({ context }) => isBytes(field(requestOf(context), 'proof')),
      submittedListWellFormed: ({ context }) => {
        const signed = field(requestOf(context), 'deviceList');
        return (
          isObject(signed) &&
          Reflect.has(signed, 'list') &&
          Reflect.has(signed, 'signature') &&
          isBytes(field(signed, 'list')) &&
          isBytes(field(signed, 'signature'))
        );
      },
      submittedListVerifies: ({ context }) => context.work.listCheck?.ok === true,
      submittedListNamesExactlyRegisteringDevice: ({ context }) => {
        const devices = submittedList(context).devices;
        const only = devices[0];
        return (
          devices.length === 1 &&
          only !== undefined &&
          only.deviceId === PRIMARY_DEVICE_ID &&
          only.registrationId === field(requestOf(context), 'registrationId') &&
          equalBytes(only.identityKey, bytesField(context, 'identityKey'))
        );
      },
      registrationProofVerifies: (
        { context },
        params: { readonly against: 'submitted-list' | 'current-list' },
      ) => {
        if (params.against === 'submitted-list') {
          return registrationProofVerifies(context, submittedList(context).accountKey);
        }
        const address = addressIn(field(requestOf(context), 'device'));
        const account = address === null ? undefined : accountOf(context.server, address.userId);
        return account !== undefined && registrationProofVerifies(context, account.deviceList.accountKey);
      },
      userIdInUse: ({ context }) => {
        const address = addressIn(field(requestOf(context), 'device'));
        return address !== null && accountOf(context.server, address.userId) !== undefined;
      },
      registrationIsIdenticalRetry: ({ context }) => {
        const address = addressIn(field(requestOf(context), 'device'));
        const account = address === null ? undefined : accountOf(context.server, address.userId);
        if (address === null || account === undefined) return false;
        const signed = submittedSignedList(context);
        const submitted = submittedList(context);
        const registered = registeredOf(account, address.deviceId);
        // WP-SRV-05: the retry carries the current list, or an older list under the same account
        // key (the primary linked devices after this registration, then was restored to before it).
        const listIsCurrentOrOlder =
          (equalBytes(account.signedDeviceList.list, signed.list) &&
            equalBytes(account.signedDeviceList.signature, signed.signature)) ||
          (equalBytes(account.deviceList.accountKey, submitted.accountKey) &&
            submitted.version < account.deviceList.version);
        return (
          listIsCurrentOrOlder &&
          registered !== undefined &&
          registered.registrationId === field(requestOf(context), 'registrationId') &&
          equalBytes(registered.identityKey, bytesField(context, 'identityKey'))
        );
      },
      submittedAccountKeyDiffers: ({ context }) => {
        const address = addressIn(field(requestOf(context), 'device'));
        const account = address === null ? undefined : accountOf(context.server, address.userId);
        return (
          account !== undefined &&
          !equalBytes(account.deviceList.accountKey, submittedList(context).accountKey)
        );
      },
      submittedListVersionGreater: ({ context }) => {
        const address = addressIn(field(requestOf(context), 'device'));
        const account = address === null ? undefined : accountOf(context.server, address.userId);
        return account !== undefined && submittedList(context).version > account.deviceList.version;
      },
      accountTableHasRoom: ({ context }) => Object.keys(context.server.accounts).length < MAX_ACCOUNTS,
      accountExists: ({ context }) => {
        const address = addressIn(field(requestOf(context), 'device'));
        return address !== null && accountOf(context.server, address.userId) !== undefined;
      },
      listNamesDeviceWithThisIdentity: ({ context }) => {
        const address = addressIn(field(requestOf(context), 'device'));
        const account = address === null ? undefined : accountOf(context.server, address.userId);
        const entry = account?.deviceList.devices.find((d) => d.deviceId === address?.deviceId);
        return (
          entry !== undefined &&
          entry.registrationId === field(requestOf(context), 'registrationId') &&
          equalBytes(entry.identityKey, bytesField(context, 'identityKey'))
        );
      },
      deviceRegisteredWithThisIdentity: ({ context }) => {
        const address = addressIn(field(requestOf(context), 'device'));
        const account = address === null ? undefined : accountOf(context.server, address.userId);
        const registered =
          address === null || account === undefined ? undefined : registeredOf(account, address.deviceId);
        return (
          registered !== undefined &&
          registered.registrationId === field(requestOf(context), 'registrationId') &&
          equalBytes(registered.identityKey, bytesField(context, 'identityKey'))
        );
      },
      deviceRegistered: ({ context }) => {
        const address = addressIn(field(requestOf(context), 'device'));
        const account = address === null ? undefined : accountOf(context.server, address.userId);
        return (
          address !== null && account !== undefined && registeredOf(account, address.deviceId) !== undefined
        );
      },

      // ---- prekey uploads (WP-SRV-08)
      preKeysIsObject: ({ context }) => isObject(field(requestOf(context), 'preKeys')),
      preKeysHasParts: ({ context }) => uploadPartsOf(context) !== null,
      uploadWithinPerUploadLimit: ({ context }) => {
        const parts = uploadPartsOf(context);
        return (
          parts !== null &&
          parts.oneTimePreKeys.length <= MAX_ONE_TIME_PREKEYS &&
          // One more than the one-time limit: room for the last-resort key.
          parts.kyberPreKeys.length <= MAX_ONE_TIME_PREKEYS + 1
        );
      },
      signedPreKeyFieldsWellFormed: ({ context }) => {
        const parts = uploadPartsOf(context);
        return parts !== null && shapeSignedPreKey(parts.signedPreKey) !== null;
      },
      oneTimePreKeyFieldsWellFormed: ({ context }) => {
        const parts = uploadPartsOf(context);
        return (
          parts !== null && everyElement(parts.oneTimePreKeys, (key) => shapeOneTimePreKey(key) !== null)
        );
      },
      kyberPreKeyFieldsWellFormed: ({ context }) => {
        const parts = uploadPartsOf(context);
        return parts !== null && everyElement(parts.kyberPreKeys, (key) => shapeKyberPreKey(key) !== null);
      },
      lastResortCountFits: ({ context }, params: { readonly mode: UploadMode }) => {
        const count = requireShapedUpload(context).kyberPreKeys.filter((key) => key.lastResort).length;
        // A bundle always carries a Kyber prekey: a registration brings exactly one last resort.
        return params.mode === 'register' ? count === 1 : count <= 1;
      },
      oneTimeKyberCountWithinLimit: ({ context }) =>
        requireShapedUpload(context).kyberPreKeys.filter((key) => !key.lastResort).length <=
        MAX_ONE_TIME_PREKEYS,
      uploadIdsUnique: ({ context }) => {
        const upload = requireShapedUpload(context);
        return (
          !hasDuplicates(upload.oneTimePreKeys.map((key) => key.keyId)) &&
          !hasDuplicates(upload.kyberPreKeys.map((key) => key.keyId))
        );
      },
      signedPreKeyDecodes: ({ context }) =>
        decodeEcPublicKey(requireShapedUpload(context).signedPreKey.publicKey).ok,
      prekeySignaturesHaveSignatureLength: ({ context }) => {
        const upload = requireShapedUpload(context);
        return [upload.signedPreKey, ...upload.kyberPreKeys].every(
          (key) => key.signature.length === SIGNATURE_LENGTH,
        );
      },
      oneTimePreKeysDecode: ({ context }) =>
        requireShapedUpload(context).oneTimePreKeys.every((key) => decodeEcPublicKey(key.publicKey).ok),
      kyberPreKeysDecode: ({ context }) =>
        requireShapedUpload(context).kyberPreKeys.every((key) => decodeKemPublicKey(key.publicKey).ok),
      signedPreKeySignatureVerifies: ({ context }) => {
        const { signedPreKey } = requireShapedUpload(context);
        return xeddsaVerify(c, uploaderIdentityKey(context), signedPreKey.publicKey, signedPreKey.signature);
      },
      kyberPreKeySignaturesVerify: ({ context }) => {
        const identityKey = uploaderIdentityKey(context);
        return requireShapedUpload(context).kyberPreKeys.every((key) =>
          xeddsaVerify(c, identityKey, key.publicKey, key.signature),
        );
      },
      uploadRepeatsStoredKey: ({ context }) => {
        const upload = requireShapedUpload(context);
        const { device } = requireRequester(context);
        const isStored = (stored: readonly ModelPreKey[], key: ModelPreKey): boolean =>
          stored.some((s) => s.keyId === key.keyId && equalBytes(s.publicKey, key.publicKey));
        return (
          upload.oneTimePreKeys.some((key) => isStored(device.oneTimePreKeys, key)) ||
          upload.kyberPreKeys.some((key) => !key.lastResort && isStored(device.oneTimeKyberPreKeys, key))
        );
      },
      deviceOneTimeTotalsWithinLimit: ({ context }) => {
        const merged = preKeysAfterReplenishment(
          requireRequester(context).device,
          requireShapedUpload(context),
        );
        return (
          merged.oneTimePreKeys.length <= MAX_ONE_TIME_PREKEYS &&
          merged.oneTimeKyberPreKeys.length <= MAX_ONE_TIME_PREKEYS
        );
      },
      oneTimeKyberIdsAvoidLastResort: ({ context }) => {
        const merged = preKeysAfterReplenishment(
          requireRequester(context).device,
          requireShapedUpload(context),
        );
        const lastResortId = merged.lastResortKyberPreKey.keyId;
        // WP-SRV-08: an uploaded one-time Kyber key under the last resort's id is refused even when
        // the id floor (WP-SRV-29) would not store it.
        return (
          !merged.oneTimeKyberPreKeys.some((key) => key.keyId === lastResortId) &&
          !requireShapedUpload(context).kyberPreKeys.some(
            (key) => !key.lastResort && key.keyId === lastResortId,
          )
        );
      },

      // ---- acting devices (WP-SRV-12)
      requesterAddressWellFormed: ({ context }) => requesterOf(context) !== null,
      requesterAccountExists: ({ context }) => requesterAccount(context) !== undefined,
      requesterIsCurrentDevice: ({ context }) => requesterDevice(context) !== undefined,

      // ---- device lists (WP-SRV-10, WP-SRV-12)
      submittedListKeepsAccountKey: ({ context }) =>
        equalBytes(
          submittedList(context).accountKey,
          requireRequester(context).account.deviceList.accountKey,
        ),
      submittedListIsCurrentList: ({ context }) => {
        const signed = submittedSignedList(context);
        const current = requireRequester(context).account.signedDeviceList;
        return equalBytes(signed.list, current.list) && equalBytes(signed.signature, current.signature);
      },
      requestedUserIdWellFormed: ({ context }) => isValidUserId(field(requestOf(context), 'userId')),
      requestedAccountExists: ({ context }) =>
        accountOf(context.server, requestedUserId(context)) !== undefined,

      // ---- bundles (WP-SRV-13, WP-SRV-14)
      requestedDeviceIdsWellFormed: ({ context }) => {
        const deviceIds = field(requestOf(context), 'deviceIds');
        return (
          Array.isArray(deviceIds) && deviceIds.length <= MAX_DEVICE_ID && deviceIds.every(isValidDeviceId)
        );
      },
      // A repeated id would take two one-time prekeys of one device in one request.
      requestedDeviceIdsDistinct: ({ context }) => !hasDuplicates(requestedDeviceIds(context)),
      // WP-SRV-12: every requested device must be named by the current list; one that is listed but
      // not registered yet is left out of the answer (see `requestedRegisteredDeviceIds`).
      requestedDevicesAllListed: ({ context }) => {
        const account = requestedAccount(context);
        return everyElement(requestedDeviceIds(context), (deviceId) => isListedIn(account, deviceId));
      },

      // ---- sends (WP-SRV-15 … WP-SRV-21)
      messageIdWellFormed: ({ context }) => isValidMessageId(field(requestOf(context), 'messageId')),
      recipientIdWellFormed: ({ context }) => isValidUserId(field(requestOf(context), 'recipient')),
      onlyDeviceWellFormed: ({ context }) => {
        const onlyDevice = onlyDeviceOf(context);
        return onlyDevice === undefined || isValidDeviceId(onlyDevice);
      },
      messageListWellFormed: ({ context }) => {
        const messages = field(requestOf(context), 'messages');
        return Array.isArray(messages) && messages.length <= MAX_DEVICE_ID;
      },
      deviceMessagesWellFormed: ({ context }) =>
        everyElement(messageListOf(context), (message) => shapeDeviceMessage(message) !== null),
      firstMalformedMessageLacksFields: ({ context }) => {
        const first = messageListOf(context).find((message) => shapeDeviceMessage(message) === null);
        return !messageHasAllFields(first);
      },
      deviceCopiesWithinSizeLimit: ({ context }) =>
        deviceMessagesOf(context).every((message) => message.bytes.length <= MAX_ENVELOPE_SIZE),
      sendNamesEachDeviceOnce: ({ context }) =>
        !hasDuplicates(deviceMessagesOf(context).map((message) => message.deviceId)),
      singleDeviceSendCarriesThatCopy: ({ context }) => {
        const onlyDevice = onlyDeviceOf(context);
        const messages = deviceMessagesOf(context);
        return onlyDevice === undefined || (messages.length === 1 && messages[0]?.deviceId === onlyDevice);
      },
      senderAddressWellFormed: ({ context }) => requesterOf(context) !== null,
      senderAccountExists: ({ context }) => requesterAccount(context) !== undefined,
      senderIsCurrentDevice: ({ context }) => requesterDevice(context) !== undefined,
      messageIdAlreadyAccepted: ({ context }) => {
        const sender = requireRequester(context).address;
        const messageId = sendMessageId(context);
        return (
          recipientAccount(context)?.acceptedSends.some(
            (accepted) =>
              accepted.messageId === messageId &&
              accepted.senderUserId === sender.userId &&
              accepted.senderDeviceId === sender.deviceId,
          ) === true
        );
      },
      recipientExists: ({ context }) => recipientAccount(context) !== undefined,
      deviceSetMatches: ({ context }) => {
        const { missing, extra } = deviceSetDifference(context);
        return missing.length === 0 && extra.length === 0;
      },
      registrationIdsCurrent: ({ context }) => staleDeviceIds(context).length === 0,
      mailboxesHaveRoom: ({ context }) => fullMailboxDeviceIds(context).length === 0,

      // ---- mailboxes (WP-SRV-22)
      envelopeIdsWellFormed: ({ context }) => {
        const envelopeIds = field(requestOf(context), 'envelopeIds');
        return (
          Array.isArray(envelopeIds) &&
          envelopeIds.length <= MAILBOX_CAPACITY &&
          envelopeIds.every(
            (envelopeId) =>
              typeof envelopeId === 'number' && Number.isSafeInteger(envelopeId) && envelopeId >= 0,
          )
        );
      },

      // ---- provisioning relay (WP-SRV-23, WP-SRV-25)
      provisioningAddressWellFormed: ({ context }) => {
        const address = field(requestOf(context), 'address');
        return typeof address === 'string' && PROVISIONING_ADDRESS_PATTERN.test(address);
      },
      provisioningBytesAreBytes: ({ context }) => isBytes(field(requestOf(context), 'bytes')),
      provisioningMessageWithinSizeLimit: ({ context }) =>
        bytesField(context, 'bytes').length <= MAX_PROVISIONING_SIZE,
      liveProvisioningMessageAtAddress: ({ context }) => liveRelayEntry(context) !== undefined,
      provisioningMessageIdentical: ({ context }) => {
        const entry = liveRelayEntry(context);
        return entry !== undefined && equalBytes(entry.bytes, bytesField(context, 'bytes'));
      },
      relayHasRoom: ({ context }) => {
        const now = nowOf(context);
        return (
          Object.values(context.server.relay).filter((entry) => isLive(entry, now)).length <
          MAX_PROVISIONING_ENTRIES
        );
      },

      // ---- blobs (WP-SRV-24, WP-SRV-25)
      blobIdWellFormed: ({ context }) => {
        const blobId = field(requestOf(context), 'blobId');
        return typeof blobId === 'string' && BLOB_ID_PATTERN.test(blobId);
      },
      blobBytesAreBytes: ({ context }) => isBytes(field(requestOf(context), 'bytes')),
      blobWithinSizeLimit: ({ context }) => bytesField(context, 'bytes').length <= MAX_BLOB_SIZE,
      blobIdIsContentHash: ({ context }) =>
        toHex(c.sha256(bytesField(context, 'bytes'))) === field(requestOf(context), 'blobId'),
      blobAlreadyStored: ({ context }) => {
        const blobId = field(requestOf(context), 'blobId');
        return typeof blobId === 'string' && Object.hasOwn(context.server.blobs, blobId);
      },
      blobStoreHasRoom: ({ context }) => Object.keys(context.server.blobs).length < MAX_BLOBS,
    },
    actions: {
      takeRequest: assign(({ event }) => ({
        pending: { request: event.request, now: event.now, requestId: event.requestId },
        work: {},
      })),
      finishRequest: assign({ pending: null, work: {} }),
      answerError: emit(({ context }, params: ErrorParams) =>
        respond(context, {
          kind: 'error',
          code: params.code,
          rule: ERROR_RULES[params.code],
          message:
            params.detail === undefined
              ? params.message
              : params.message.replace('{detail}', detailOf(context, params.detail)),
        }),
      ),
      answerOk: emit(({ context }) => respond(context, { kind: 'ok' })),

      // ---- accounts and devices
      verifySubmittedDeviceList: assign(({ context }) => {
        const address = addressIn(field(requestOf(context), 'device'));
        if (address === null) throw new InvariantError('the device address was checked');
        return {
          work: {
            ...context.work,
            listCheck: verifySignedDeviceList(c, submittedSignedList(context), address.userId),
          },
        };
      }),
      createAccount: assign(({ context }) => {
        const userId = requireDeviceAddress(context).userId;
        return { server: withAccount(context.server, userId, newAccount(context, undefined)) };
      }),
      resetAccount: assign(({ context }) => {
        const userId = requireDeviceAddress(context).userId;
        const previous = accountOf(context.server, userId);
        if (previous === undefined) throw new InvariantError('a reset replaces an existing account');
        // WP-SRV-06 / WP-SRV-11: every old registration goes; its queued envelopes are dropped by rule.
        const dropped = countDropped(context.server.dropped, userId, Object.entries(previous.registered));
        return { server: { ...withAccount(context.server, userId, newAccount(context, previous)), dropped } };
      }),
      registerLinkedDevice: assign(({ context }) => {
        const address = requireDeviceAddress(context);
        const account = accountOf(context.server, address.userId);
        if (account === undefined) throw new InvariantError('the account was checked to exist');
        const registered = { ...account.registered, [String(address.deviceId)]: newRegistration(context) };
        return { server: withAccount(context.server, address.userId, { ...account, registered }) };
      }),
      replenishPreKeys: assign(({ context }) => {
        const { address, account, device } = requireRequester(context);
        const upload = requireShapedUpload(context);
        const replenished: ModelDevice = {
          ...device,
          // WP-SRV-28: an older or equal signed prekey id keeps the stored key (a delayed copy of an
          // earlier upload must not bring back a key the device retired).
          signedPreKey:
            upload.signedPreKey.keyId > device.signedPreKey.keyId
              ? storedSignedPreKey(upload.signedPreKey)
              : device.signedPreKey,
          // WP-SRV-09: one-time keys appended, or replacing their kind when the device reused an id;
          // WP-SRV-29: none under its kind's id floor is appended.
          ...preKeysAfterReplenishment(device, upload),
        };
        const registered = { ...account.registered, [String(address.deviceId)]: replenished };
        return { server: withAccount(context.server, address.userId, { ...account, registered }) };
      }),
      revokeRemovedDevices: assign(({ context }) => {
        const { address, account } = requireRequester(context);
        const list = submittedList(context);
        const kept: Record<string, ModelDevice> = {};
        const revoked: (readonly [string, ModelDevice])[] = [];
        for (const [deviceKey, device] of Object.entries(account.registered)) {
          const entry = list.devices.find((d) => String(d.deviceId) === deviceKey);
          const stillListed =
            entry !== undefined &&
            entry.registrationId === device.registrationId &&
            equalBytes(entry.identityKey, device.identityKey);
          if (stillListed) kept[deviceKey] = device;
          else revoked.push([deviceKey, device]);
        }
        return {
          server: {
            ...withAccount(context.server, address.userId, { ...account, registered: kept }),
            dropped: countDropped(context.server.dropped, address.userId, revoked),
          },
        };
      }),
      installDeviceList: assign(({ context }) => {
        const address = requireDeviceAddress(context);
        const account = accountOf(context.server, address.userId);
        if (account === undefined) throw new InvariantError('the account was checked to exist');
        const updated: ModelAccount = {
          ...account,
          signedDeviceList: copySignedList(submittedSignedList(context)),
          deviceList: submittedList(context),
        };
        return { server: withAccount(context.server, address.userId, updated) };
      }),
      answerDeviceList: emit(({ context }) =>
        respond(context, {
          kind: 'device-list',
          deviceList: copySignedList(requestedAccount(context).signedDeviceList),
        }),
      ),

      // ---- bundles
      handOutOneTimePreKeys: assign(({ context }) => {
        const userId = requestedUserId(context);
        let account = requestedAccount(context);
        const handedOut: (ModelPreKey | null)[] = [];
        for (const deviceId of requestedRegisteredDeviceIds(context)) {
          const device = registeredOf(account, deviceId);
          if (device === undefined) throw new InvariantError('the requested devices were checked');
          // WP-SRV-13: the oldest one-time prekey, handed out once and deleted (X3DH §3.3).
          const [first, ...rest] = device.oneTimePreKeys;
          handedOut.push(first ?? null);
          // Planted bug server-rehands-prekey: the key stays stored (against WP-SRV-13).
          if (first !== undefined && !planted(env.bugs, 'server-rehands-prekey')) {
            const registered = {
              ...account.registered,
              [String(deviceId)]: { ...device, oneTimePreKeys: rest },
            };
            account = { ...account, registered };
          }
        }
        return {
          server: withAccount(context.server, userId, account),
          work: { ...context.work, handedOutPreKeys: handedOut },
        };
      }),
      handOutKyberPreKeys: assign(({ context }) => {
        const userId = requestedUserId(context);
        let account = requestedAccount(context);
        const handedOut: ModelSignedPreKey[] = [];
        for (const deviceId of requestedRegisteredDeviceIds(context)) {
          const device = registeredOf(account, deviceId);
          if (device === undefined) throw new InvariantError('the requested devices were checked');
          // WP-SRV-14: a one-time Kyber prekey (deleted) if any, else the last resort (kept).
          const [first, ...rest] = device.oneTimeKyberPreKeys;
          handedOut.push(first ?? device.lastResortKyberPreKey);
          // Planted bug server-rehands-prekey: the key stays stored (against WP-SRV-14).
          if (first !== undefined && !planted(env.bugs, 'server-rehands-prekey')) {
            const registered = {
              ...account.registered,
              [String(deviceId)]: { ...device, oneTimeKyberPreKeys: rest },
            };
            account = { ...account, registered };
          }
        }
        return {
          server: withAccount(context.server, userId, account),
          work: { ...context.work, handedOutKyberPreKeys: handedOut },
        };
      }),
      answerBundles: emit(({ context }) => {
        const account = requestedAccount(context);
        const preKeys = context.work.handedOutPreKeys ?? [];
        const kyberPreKeys = context.work.handedOutKyberPreKeys ?? [];
        // WP-SRV-12: a listed device that has not registered yet is left out; the rest keep request
        // order.
        const bundles: PreKeyBundle[] = requestedRegisteredDeviceIds(context).map((deviceId, index) => {
          const device = registeredOf(account, deviceId);
          const preKey = preKeys[index];
          const kyber = kyberPreKeys[index];
          if (device === undefined || preKey === undefined || kyber === undefined) {
            throw new InvariantError('every requested device had its prekeys handed out');
          }
          return {
            registrationId: device.registrationId,
            deviceId,
            identityKey: copyBytes(device.identityKey),
            signedPreKeyId: device.signedPreKey.keyId,
            signedPreKey: copyBytes(device.signedPreKey.publicKey),
            signedPreKeySignature: copyBytes(device.signedPreKey.signature),
            preKeyId: preKey === null ? null : preKey.keyId,
            preKey: preKey === null ? null : copyBytes(preKey.publicKey),
            kyberPreKeyId: kyber.keyId,
            kyberPreKey: copyBytes(kyber.publicKey),
            kyberPreKeySignature: copyBytes(kyber.signature),
          };
        });
        return respond(context, { kind: 'bundles', bundles });
      }),

      // ---- sends
      answerDuplicateAccepted: emit(({ context }) =>
        respond(context, { kind: 'accepted', messageId: sendMessageId(context), duplicate: true }),
      ),
      refuseUnknownUser: emit(({ context }) => refuseSend(context, { kind: 'unknown-user' })),
      refuseMismatchedDevices: emit(({ context }) => {
        const { missing, extra } = deviceSetDifference(context);
        return refuseSend(context, {
          kind: 'mismatched-devices',
          missing,
          extra,
          deviceList: copySignedList(requireRecipient(context).account.signedDeviceList),
        });
      }),
      refuseStaleDevices: emit(({ context }) =>
        refuseSend(context, {
          kind: 'stale-devices',
          stale: staleDeviceIds(context),
          deviceList: copySignedList(requireRecipient(context).account.signedDeviceList),
        }),
      ),
      refuseMailboxFull: emit(({ context }) =>
        refuseSend(context, { kind: 'mailbox-full', deviceIds: fullMailboxDeviceIds(context) }),
      ),
      storeEnvelopes: assign(({ context }) => {
        const { userId, account } = requireRecipient(context);
        const sender = requireRequester(context).address;
        const messageId = sendMessageId(context);
        const now = nowOf(context);
        let registered = account.registered;
        const messages = deviceMessagesOf(context);
        for (const [index, message] of messages.entries()) {
          const key = String(message.deviceId);
          const device = ownEntry(registered, key);
          if (device === undefined) throw new InvariantError('the target devices were checked');
          // Planted bug (simulator self-test only, as in impl/): `server-drops-message` accepts a
          // quarter of the sends (message id below '4') but never stores their first copy.
          if (planted(env.bugs, 'server-drops-message') && messageId < '4' && index === 0) continue;
          // WP-SRV-21 / WP-SRV-26: the copy is stored as submitted, never interpreted.
          const envelope: Envelope = {
            envelopeId: device.nextEnvelopeId,
            messageId,
            sender: { userId: sender.userId, deviceId: sender.deviceId },
            type: message.type,
            bytes: copyBytes(message.bytes),
            serverTimestamp: now,
          };
          registered = {
            ...registered,
            [key]: {
              ...device,
              mailbox: [...device.mailbox, envelope],
              nextEnvelopeId: device.nextEnvelopeId + 1,
            },
          };
        }
        return { server: withAccount(context.server, userId, { ...account, registered }) };
      }),
      rememberAcceptedSend: assign(({ context }) => {
        const { userId, account } = requireRecipient(context);
        const sender = requireRequester(context).address;
        const accepted: ModelAcceptedSend = {
          senderUserId: sender.userId,
          senderDeviceId: sender.deviceId,
          messageId: sendMessageId(context),
        };
        // WP-SRV-19: the window keeps the newest MESSAGE_ID_DEDUP_WINDOW pairs.
        const acceptedSends = [...account.acceptedSends, accepted].slice(-MESSAGE_ID_DEDUP_WINDOW);
        return { server: withAccount(context.server, userId, { ...account, acceptedSends }) };
      }),
      answerAccepted: emit(({ context }) =>
        respond(context, { kind: 'accepted', messageId: sendMessageId(context), duplicate: false }),
      ),

      // ---- mailboxes
      answerEnvelopes: emit(({ context }) =>
        respond(context, {
          kind: 'envelopes',
          envelopes: requireRequester(context).device.mailbox.map(copyEnvelope),
        }),
      ),
      removeAcknowledgedEnvelopes: assign(({ context }) => {
        const { address, account, device } = requireRequester(context);
        const acknowledged = field(requestOf(context), 'envelopeIds');
        if (!Array.isArray(acknowledged)) throw new InvariantError('envelopeIds was checked');
        const mailbox = device.mailbox.filter((envelope) => !acknowledged.includes(envelope.envelopeId));
        if (mailbox.length === device.mailbox.length) return {};
        const registered = { ...account.registered, [String(address.deviceId)]: { ...device, mailbox } };
        return { server: withAccount(context.server, address.userId, { ...account, registered }) };
      }),

      // ---- provisioning relay
      purgeExpiredProvisioning: assign(({ context }) => {
        const now = nowOf(context);
        const relay = Object.fromEntries(
          Object.entries(context.server.relay).filter(([, entry]) => isLive(entry, now)),
        );
        return { server: { ...context.server, relay } };
      }),
      storeProvisioningMessage: assign(({ context }) => {
        const entry: ModelRelayEntry = {
          bytes: copyBytes(bytesField(context, 'bytes')),
          storedAt: nowOf(context),
        };
        const relay = { ...context.server.relay, [provisioningAddressOf(context)]: entry };
        return { server: { ...context.server, relay } };
      }),
      // WP-SRV-23: the message stays in the relay (only the TTL purge removes it), so a new device
      // whose answer was lost reads the same message on its next poll.
      handOutProvisioningMessage: assign(({ context }) => {
        const entry = ownEntry(context.server.relay, provisioningAddressOf(context));
        return { work: { ...context.work, provisioned: entry === undefined ? null : entry.bytes } };
      }),
      answerProvisioningMessage: emit(({ context }) => {
        const bytes = context.work.provisioned ?? null;
        return respond(context, { kind: 'provision', bytes: bytes === null ? null : copyBytes(bytes) });
      }),

      // ---- blobs
      storeBlob: assign(({ context }) => {
        const blobId = field(requestOf(context), 'blobId');
        if (typeof blobId !== 'string') throw new InvariantError('blobId was checked');
        const blobs = { ...context.server.blobs, [blobId]: copyBytes(bytesField(context, 'bytes')) };
        return { server: { ...context.server, blobs } };
      }),
      answerBlob: emit(({ context }) => {
        const blobId = field(requestOf(context), 'blobId');
        const blob = typeof blobId === 'string' ? ownEntry(context.server.blobs, blobId) : undefined;
        return respond(context, { kind: 'blob', bytes: blob === undefined ? null : copyBytes(blob) });
      }),
    },
  }).createMachine({
    id: 'server',
    context: ({ input }) => ({ server: input?.server ?? emptyModelServer(), pending: null, work: {} }),
    initial: 'serving',
    states: {
      serving: {
        entry: 'finishRequest',
        on: {
          'server.request': { guard: 'clockReadingValid', target: 'routing', actions: 'takeRequest' },
        },
      },
      // WP-SRV-01: a request without a kind, or of an unknown kind, is malformed.
      routing: check('requestHasKind', 'routeByKind', MALFORMED, 'request has no kind'),
      routeByKind: {
        always: [
          ...REQUEST_STATES.map(([kind, state]) => ({
            guard: { type: 'requestKindIs' as const, params: { kind } },
            target: state,
          })),
          refusal(MALFORMED, 'unknown request kind'),
        ],
      },

      // WP-SRV-02, -03, -04, -05, -06, -08, -25: the primary device creates (or resets) an account.
      registerAccount: {
        initial: 'checkAddress',
        states: {
          checkAddress: check(
            'deviceAddressWellFormed',
            'checkPrimary',
            MALFORMED,
            'device is not a valid address',
          ),
          checkPrimary: check(
            'deviceIsPrimary',
            'checkIdentityKeyBytes',
            MALFORMED,
            'an account is registered by its primary device (id 1)',
          ),
          ...identityChecks('checkListShape'),
          ...listChecks('checkListNamesDevice'),
          checkListNamesDevice: check(
            'submittedListNamesExactlyRegisteringDevice',
            'checkProof',
            'SERVER_DEVICE_LIST_MISMATCH',
            'the list must name exactly the registering device',
          ),
          checkProof: check(
            { type: 'registrationProofVerifies', params: { against: 'submitted-list' } },
            'checkUserId',
            'SERVER_PROOF_INVALID',
            'registration proof does not verify',
          ),
          checkUserId: {
            always: [{ guard: 'userIdInUse', target: 'checkRetry' }, { target: 'checkAccountCapacity' }],
          },
          checkRetry: {
            always: [
              { guard: 'registrationIsIdenticalRetry', target: SERVING, actions: 'answerOk' },
              { target: 'checkAccountKey' },
            ],
          },
          checkAccountKey: check(
            'submittedAccountKeyDiffers',
            'checkResetVersion',
            'SERVER_USER_EXISTS',
            'the user id is in use',
          ),
          checkResetVersion: check(
            'submittedListVersionGreater',
            'preKeys',
            'SERVER_DEVICE_LIST_STALE',
            'an account reset needs a greater list version',
          ),
          checkAccountCapacity: check(
            'accountTableHasRoom',
            'preKeys',
            'SERVER_STORE_FULL',
            'the server holds the maximum number of accounts',
          ),
          preKeys: preKeyChecks('register', '#server.registerAccount.commit'),
          commit: {
            always: [
              { guard: 'userIdInUse', target: SERVING, actions: ['resetAccount', 'answerOk'] },
              { target: SERVING, actions: ['createAccount', 'answerOk'] },
            ],
          },
        },
      },

      // WP-SRV-04, -07, -08: a linked device registers the identity the current list names for it.
      registerDevice: {
        initial: 'checkAddress',
        states: {
          checkAddress: check(
            'deviceAddressWellFormed',
            'checkIdentityKeyBytes',
            MALFORMED,
            'device is not a valid address',
          ),
          ...identityChecks('checkAccount'),
          checkAccount: check('accountExists', 'checkListed', 'SERVER_UNKNOWN_USER', 'no such account'),
          checkListed: check(
            'listNamesDeviceWithThisIdentity',
            'checkProof',
            'SERVER_DEVICE_NOT_LISTED',
            'the current device list does not name this device with this identity',
          ),
          checkProof: check(
            { type: 'registrationProofVerifies', params: { against: 'current-list' } },
            'checkRegistered',
            'SERVER_PROOF_INVALID',
            'registration proof does not verify',
          ),
          checkRegistered: {
            always: [
              // WP-SRV-07: a retry changes nothing (its one-time prekeys may be handed out already).
              { guard: 'deviceRegisteredWithThisIdentity', target: SERVING, actions: 'answerOk' },
              // WP-SRV-11 keeps every registration equal to its list entry; anything else is a bug.
              { guard: 'deviceRegistered', target: '#server.invariantBroken' },
              { target: 'preKeys' },
            ],
          },
          preKeys: preKeyChecks('register', '#server.registerDevice.commit'),
          commit: { always: { target: SERVING, actions: ['registerLinkedDevice', 'answerOk'] } },
        },
      },

      // WP-SRV-08, -09: a current device replenishes its prekeys.
      uploadPreKeys: {
        initial: 'checkRequesterAddress',
        states: {
          ...requesterChecks('preKeys'),
          preKeys: preKeyChecks('replenish', '#server.uploadPreKeys.commit'),
          commit: { always: { target: SERVING, actions: ['replenishPreKeys', 'answerOk'] } },
        },
      },

      // WP-SRV-02, -03, -10, -11: a current device installs a newer list signed by the account key.
      updateDeviceList: {
        initial: 'checkRequesterAddress',
        states: {
          ...requesterChecks('checkListShape'),
          ...listChecks('checkAccountKey'),
          checkAccountKey: check(
            'submittedListKeepsAccountKey',
            'checkRetry',
            'SERVER_DEVICE_LIST_ACCOUNT_KEY_CHANGED',
            'the list is signed by a different account key',
          ),
          checkRetry: {
            always: [
              { guard: 'submittedListIsCurrentList', target: SERVING, actions: 'answerOk' },
              { target: 'checkVersion' },
            ],
          },
          checkVersion: check(
            'submittedListVersionGreater',
            'commit',
            'SERVER_DEVICE_LIST_STALE',
            'the list version is not greater than the current one',
          ),
          commit: {
            always: { target: SERVING, actions: ['revokeRemovedDevices', 'installDeviceList', 'answerOk'] },
          },
        },
      },

      // WP-SRV-12: the current signed list, byte for byte.
      getDeviceList: {
        initial: 'checkUserId',
        states: {
          checkUserId: check('requestedUserIdWellFormed', 'checkAccount', MALFORMED, 'userId is not valid'),
          checkAccount: check('requestedAccountExists', 'respond', 'SERVER_UNKNOWN_USER', 'no such account'),
          respond: { always: { target: SERVING, actions: 'answerDeviceList' } },
        },
      },

      // WP-SRV-12, -13, -14: bundles for current devices, handing out one-time prekeys once. A device
      // the list does not name fails the whole request; a listed device that has not registered yet
      // is left out, so a client holding the new list can still send to the registered devices.
      getBundles: {
        initial: 'checkUserId',
        states: {
          checkUserId: check('requestedUserIdWellFormed', 'checkDeviceIds', MALFORMED, 'userId is not valid'),
          checkDeviceIds: check(
            'requestedDeviceIdsWellFormed',
            'checkDistinct',
            MALFORMED,
            'deviceIds must be at most 127 valid device ids',
          ),
          checkDistinct: check('requestedDeviceIdsDistinct', 'checkAccount', MALFORMED, 'deviceIds repeat'),
          checkAccount: check(
            'requestedAccountExists',
            'checkCurrent',
            'SERVER_UNKNOWN_USER',
            'no such account',
          ),
          checkCurrent: check(
            'requestedDevicesAllListed',
            'handOut',
            'SERVER_UNKNOWN_DEVICE',
            'device {detail} is not registered',
            'firstDeviceNotListed',
          ),
          handOut: {
            always: {
              target: SERVING,
              actions: ['handOutOneTimePreKeys', 'handOutKyberPreKeys', 'answerBundles'],
            },
          },
        },
      },

      // WP-SRV-15 … WP-SRV-21: one message to one account, all or nothing.
      send: {
        initial: 'checkMessageId',
        states: {
          checkMessageId: check(
            'messageIdWellFormed',
            'checkRecipientId',
            MALFORMED,
            'messageId is not valid',
          ),
          checkRecipientId: check(
            'recipientIdWellFormed',
            'checkOnlyDeviceId',
            MALFORMED,
            'recipient is not a valid user id',
          ),
          checkOnlyDeviceId: check(
            'onlyDeviceWellFormed',
            'checkMessageList',
            MALFORMED,
            'onlyDevice is not a valid device id',
          ),
          checkMessageList: check(
            'messageListWellFormed',
            'checkDeviceMessages',
            MALFORMED,
            'messages must be at most 127 device messages',
          ),
          checkDeviceMessages: {
            always: [
              { guard: 'deviceMessagesWellFormed', target: 'checkCopySizes' },
              {
                guard: 'firstMalformedMessageLacksFields',
                ...refusal(MALFORMED, 'a device message needs deviceId, registrationId, type and bytes'),
              },
              refusal(MALFORMED, 'a device message has a field of the wrong type or range'),
            ],
          },
          checkCopySizes: check(
            'deviceCopiesWithinSizeLimit',
            'checkDistinctDevices',
            'SERVER_ENVELOPE_TOO_LARGE',
            'a device message is larger than the limit',
          ),
          checkDistinctDevices: check(
            'sendNamesEachDeviceOnce',
            'checkSingleDeviceCopy',
            'SERVER_SEND_DUPLICATE_DEVICE',
            'the send names a device twice',
          ),
          checkSingleDeviceCopy: check(
            'singleDeviceSendCarriesThatCopy',
            'checkSenderAddress',
            MALFORMED,
            'a send with onlyDevice carries exactly that device',
          ),
          checkSenderAddress: check(
            'senderAddressWellFormed',
            'checkSenderAccount',
            MALFORMED,
            'device is not a valid address',
          ),
          checkSenderAccount: check(
            'senderAccountExists',
            'checkSenderDevice',
            'SERVER_UNKNOWN_USER',
            'no such account',
          ),
          checkSenderDevice: check(
            'senderIsCurrentDevice',
            'checkDuplicate',
            'SERVER_UNKNOWN_DEVICE',
            'the device is not registered',
          ),
          checkDuplicate: {
            always: [
              { guard: 'messageIdAlreadyAccepted', target: SERVING, actions: 'answerDuplicateAccepted' },
              { target: 'checkRecipient' },
            ],
          },
          checkRecipient: {
            always: [
              { guard: 'recipientExists', target: 'checkDeviceSet' },
              { target: SERVING, actions: 'refuseUnknownUser' },
            ],
          },
          checkDeviceSet: {
            always: [
              { guard: 'deviceSetMatches', target: 'checkRegistrationIds' },
              { target: SERVING, actions: 'refuseMismatchedDevices' },
            ],
          },
          checkRegistrationIds: {
            always: [
              { guard: 'registrationIdsCurrent', target: 'checkCapacity' },
              { target: SERVING, actions: 'refuseStaleDevices' },
            ],
          },
          checkCapacity: {
            always: [
              { guard: 'mailboxesHaveRoom', target: 'store' },
              { target: SERVING, actions: 'refuseMailboxFull' },
            ],
          },
          store: {
            always: {
              target: SERVING,
              actions: ['storeEnvelopes', 'rememberAcceptedSend', 'answerAccepted'],
            },
          },
        },
      },

      // WP-SRV-22: everything unacknowledged, oldest first; nothing is removed.
      fetch: {
        initial: 'checkRequesterAddress',
        states: {
          ...requesterChecks('respond'),
          respond: { always: { target: SERVING, actions: 'answerEnvelopes' } },
        },
      },

      // WP-SRV-22: acknowledged envelopes are removed; unknown ids are ignored.
      ack: {
        initial: 'checkRequesterAddress',
        states: {
          ...requesterChecks('checkEnvelopeIds'),
          checkEnvelopeIds: check(
            'envelopeIdsWellFormed',
            'commit',
            MALFORMED,
            'envelopeIds must be at most MAILBOX_CAPACITY envelope ids',
          ),
          commit: { always: { target: SERVING, actions: ['removeAcknowledgedEnvelopes', 'answerOk'] } },
        },
      },

      // WP-SRV-23, -25: one bounded, short-lived message per provisioning address.
      provisionPut: {
        initial: 'checkAddress',
        states: {
          checkAddress: check(
            'provisioningAddressWellFormed',
            'checkBytes',
            MALFORMED,
            'not a provisioning address',
          ),
          checkBytes: check('provisioningBytesAreBytes', 'checkSize', MALFORMED, 'bytes must be bytes'),
          checkSize: check(
            'provisioningMessageWithinSizeLimit',
            'checkOccupied',
            'SERVER_PROVISION_TOO_LARGE',
            'provisioning message is larger than the limit',
          ),
          checkOccupied: {
            always: [
              { guard: 'liveProvisioningMessageAtAddress', target: 'checkIdentical' },
              { target: 'checkRelayCapacity' },
            ],
          },
          checkIdentical: {
            always: [
              {
                guard: 'provisioningMessageIdentical',
                target: SERVING,
                actions: ['purgeExpiredProvisioning', 'answerOk'],
              },
              refusal('SERVER_PROVISION_OCCUPIED', 'the address already holds a provisioning message'),
            ],
          },
          checkRelayCapacity: {
            always: [
              {
                guard: 'relayHasRoom',
                target: SERVING,
                actions: ['purgeExpiredProvisioning', 'storeProvisioningMessage', 'answerOk'],
              },
              refusal('SERVER_STORE_FULL', 'the provisioning relay is full'),
            ],
          },
        },
      },

      // WP-SRV-23: the message is handed out on every get until PROVISIONING_TTL purges it.
      provisionGet: {
        initial: 'checkAddress',
        states: {
          checkAddress: check(
            'provisioningAddressWellFormed',
            'respond',
            MALFORMED,
            'not a provisioning address',
          ),
          respond: {
            always: {
              target: SERVING,
              actions: [
                'purgeExpiredProvisioning',
                'handOutProvisioningMessage',
                'answerProvisioningMessage',
              ],
            },
          },
        },
      },

      // WP-SRV-24, -25: content-addressed, bounded, idempotent.
      blobPut: {
        initial: 'checkBlobId',
        states: {
          checkBlobId: check(
            'blobIdWellFormed',
            'checkBytes',
            MALFORMED,
            'blobId must be 64 lowercase hex digits',
          ),
          checkBytes: check('blobBytesAreBytes', 'checkSize', MALFORMED, 'bytes must be bytes'),
          checkSize: check(
            'blobWithinSizeLimit',
            'checkContentAddress',
            'SERVER_BLOB_TOO_LARGE',
            'blob is larger than the limit',
          ),
          checkContentAddress: check(
            'blobIdIsContentHash',
            'checkStored',
            'SERVER_BLOB_ID_MISMATCH',
            'blobId is not the SHA-256 of the bytes',
          ),
          checkStored: {
            always: [
              { guard: 'blobAlreadyStored', target: SERVING, actions: 'answerOk' },
              { target: 'checkCapacity' },
            ],
          },
          checkCapacity: check('blobStoreHasRoom', 'commit', 'SERVER_STORE_FULL', 'the blob store is full'),
          commit: { always: { target: SERVING, actions: ['storeBlob', 'answerOk'] } },
        },
      },

      // WP-SRV-24: a blob's bytes, or null.
      blobGet: {
        initial: 'checkBlobId',
        states: {
          checkBlobId: check(
            'blobIdWellFormed',
            'respond',
            MALFORMED,
            'blobId must be 64 lowercase hex digits',
          ),
          respond: { always: { target: SERVING, actions: 'answerBlob' } },
        },
      },

      // Reached only if a registered device differs from its list entry (a bug; WP-SRV-11).
      invariantBroken: { type: 'final' },
    },
  });
}

function requireDeviceAddress(context: ServerMachineContext): DeviceAddress {
  const address = addressIn(field(requestOf(context), 'device'));
  if (address === null) throw new InvariantError('the device address was checked');
  return address;
}

/** The server machine's type. */
export type ServerMachine = ReturnType<typeof createServerMachine>;
/** A snapshot of the server machine. */
export type ServerMachineSnapshot = SnapshotFrom<ServerMachine>;

// ---------------------------------------------------------------------------------------------
// Runner and abstract projection
// ---------------------------------------------------------------------------------------------

/** A synchronous server: one request in, one response out. */
export interface ServerRunner {
  /**
   * Answers one request at server time `now` (integer ms ≥ 0).
   * @throws UsageError for a `now` that is not a non-negative safe integer (the caller's clock);
   * InvariantError if the machine stopped or answered anything but exactly once.
   */
  handle(request: ServerRequest, now: number): ServerResponse;
  /** The machine's current snapshot (its context holds the server). */
  snapshot(): ServerMachineSnapshot;
  /** The states the last `handle` passed through (for traces; simulator/TRACE-FORMAT.md `model`). */
  lastStep(): MachineStep;
}

/**
 * Starts the server machine in an actor with the explicit id `server` and returns a synchronous
 * runner: `handle` sends one `server.request` and returns the one `server.response` it emitted.
 */
export function createServerRunner(
  env: ServerMachineEnv,
  options: { readonly server?: ModelServer } = {},
): ServerRunner {
  const machine = createServerMachine(env);
  const recorder = new StepRecorder();
  let last: MachineStep | null = null;
  const actor = createActor(machine, {
    id: 'server',
    inspect: recorder.inspect,
    input: options.server === undefined ? {} : { server: options.server },
  });
  const answers: ServerResponseEvent[] = [];
  let failure: unknown = undefined;
  actor.on('server.response', (event) => {
    answers.push(event);
  });
  actor.subscribe({
    error: (error) => {
      failure = error;
    },
  });
  actor.start();
  let nextRequestId = 1;
  return {
    handle(request: ServerRequest, now: number): ServerResponse {
      if (!Number.isSafeInteger(now) || now < 0) {
        throw new UsageError(`now must be a non-negative safe integer, got ${now}`);
      }
      const requestId = nextRequestId++;
      answers.length = 0;
      recorder.begin(actor, actor.getSnapshot().value);
      actor.send({ type: 'server.request', request, now, requestId });
      last = recorder.end(actor.getSnapshot().value);
      if (failure !== undefined) throw failure;
      const snapshot = actor.getSnapshot();
      if (snapshot.status !== 'active') throw new InvariantError('the server machine stopped');
      const [answer, ...more] = answers;
      if (answer === undefined || more.length > 0 || answer.requestId !== requestId) {
        throw new InvariantError(`expected one response to request ${requestId}, got ${answers.length}`);
      }
      return answer.response;
    },
    snapshot: () => actor.getSnapshot(),
    lastStep: () => {
      if (last !== null) return last;
      const state = stateId(actor.getSnapshot().value);
      return { path: [state], state };
    },
  };
}

/** The abstract server state (spec/server-abstract.ts) of the machine's context. */
export function abstractServerOf(
  c: CryptoProvider,
  context: Pick<ServerMachineContext, 'server'>,
): ServerAbstract {
  const { server } = context;
  const accounts = Object.keys(server.accounts)
    .sort(compareUserIds)
    .map((userId): ServerAccountAbstract => {
      const account = accountOf(server, userId);
      if (account === undefined) throw new InvariantError('an own key of accounts has no value');
      const dropped = ownEntry(server.dropped, userId) ?? {};
      const droppedAt = (deviceId: DeviceId): number => ownEntry(dropped, String(deviceId)) ?? 0;
      return {
        userId,
        listVersion: account.deviceList.version,
        accountKeyFp: fingerprint(c, account.deviceList.accountKey),
        listedDeviceIds: account.deviceList.devices.map((entry) => entry.deviceId),
        devices: Object.entries(account.registered)
          .map(([key, device]) => ({
            deviceId: Number(key),
            registrationId: device.registrationId,
            identityKeyFp: fingerprint(c, device.identityKey),
            mailboxDepth: device.mailbox.length,
            nextEnvelopeId: device.nextEnvelopeId,
            signedPreKeyId: device.signedPreKey.keyId,
            oneTimePreKeys: device.oneTimePreKeys.length,
            oneTimeKyberPreKeys: device.oneTimeKyberPreKeys.length,
            lastResortKyberPreKeyId: device.lastResortKyberPreKey.keyId,
            oneTimePreKeyIdFloor: device.oneTimeIdFloor,
            kyberPreKeyIdFloor: device.kyberIdFloor,
            droppedByRevocation: droppedAt(Number(key)),
          }))
          .sort((a, b) => a.deviceId - b.deviceId),
        droppedByRevocation: Object.entries(dropped)
          .filter(([, count]) => count > 0)
          .map(([key, count]) => ({ deviceId: Number(key), count }))
          .sort((a, b) => a.deviceId - b.deviceId),
        dedupEntries: account.acceptedSends.length,
      };
    });
  return {
    accounts,
    provisioningEntries: Object.keys(server.relay).length,
    blobs: Object.keys(server.blobs).length,
  };
}
