/**
 * Test/bench-only harness around `@signalapp/libsignal-client` (AGPL-3.0, a devDependency used as
 * an oracle; none of its code is copied here). It drives the package through its public npm API:
 * in-memory stores, a `LibsignalParty` that owns one device's keys, and plain-byte bundles so the
 * other side of a conversation can be our implementation.
 *
 * libsignal's protocol calls take no RNG, so the keys it generates are its own; there is no JS
 * constructor for a KEM key pair from raw bytes, so a party always uses libsignal's Kyber keys.
 * @module
 */
import {
  CiphertextMessageType,
  ErrorCode,
  IdentityChange,
  IdentityKeyPair,
  IdentityKeyStore,
  KEMKeyPair,
  LogLevel,
  initLogger,
  KEMPublicKey,
  KyberPreKeyRecord,
  KyberPreKeyStore,
  LibSignalErrorBase,
  PreKeyBundle,
  PreKeyRecord,
  PreKeySignalMessage,
  PreKeyStore,
  PrivateKey,
  ProtocolAddress,
  PublicKey,
  SessionRecord,
  SessionStore,
  SignalMessage,
  SignedPreKeyRecord,
  SignedPreKeyStore,
  processPreKeyBundle,
  signalDecrypt,
  signalDecryptPreKey,
  signalEncrypt,
} from '@signalapp/libsignal-client';
import type { Direction } from '@signalapp/libsignal-client';
import { BinaryReader, WireType } from '@bufbuild/protobuf/wire';

/** A device address as plain data. */
export interface PeerAddress {
  readonly name: string;
  readonly deviceId: number;
}

/** A prekey bundle as plain serialized bytes (the shape a server would hand out). */
export interface PlainBundle {
  readonly registrationId: number;
  readonly deviceId: number;
  /** `0x05 ‖ u`, 33 bytes. */
  readonly identityKey: Uint8Array;
  readonly signedPreKeyId: number;
  /** `0x05 ‖ u`, 33 bytes. */
  readonly signedPreKey: Uint8Array;
  /** XEdDSA over the 33-byte signed prekey, 64 bytes. */
  readonly signedPreKeySignature: Uint8Array;
  readonly preKeyId?: number;
  /** `0x05 ‖ u`, 33 bytes. */
  readonly preKey?: Uint8Array;
  readonly kyberPreKeyId: number;
  /** `0x08 ‖ 1568 bytes` = 1569 bytes. */
  readonly kyberPreKey: Uint8Array;
  /** XEdDSA over the 1569-byte Kyber key, 64 bytes. */
  readonly kyberPreKeySignature: Uint8Array;
}

/** A wire message: `prekey` = PreKeySignalMessage (type 3), `whisper` = SignalMessage (type 2). */
export interface WireMessage {
  readonly type: 'prekey' | 'whisper';
  readonly bytes: Uint8Array;
}

export type LibsignalErrorClass =
  | 'duplicate'
  | 'untrusted-identity'
  | 'invalid-message'
  | 'no-session'
  | 'invalid-key-id'
  | 'invalid-signature'
  | 'too-far'
  | 'other';

/** libsignal's API wants `Uint8Array<ArrayBuffer>`; copy anything else (e.g. a Buffer slice). */
export function ab(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(new ArrayBuffer(bytes.length));
  out.set(bytes);
  return out;
}

function addressKey(address: ProtocolAddress): string {
  return `${address.name()}.${address.deviceId()}`;
}

// ---------------------------------------------------------------------------------------------
// In-memory stores
// ---------------------------------------------------------------------------------------------

/**
 * Sessions keyed by `name.deviceId`. The record libsignal hands to `saveSession` is a fresh native
 * object, so keeping the reference is safe; `serialize: true` stores bytes instead (closer to a
 * persistent store, slower).
 */
export class InMemorySessionStore extends SessionStore {
  private readonly records = new Map<string, SessionRecord | Uint8Array<ArrayBuffer>>();
  constructor(private readonly serialize = false) {
    super();
  }
  override async saveSession(name: ProtocolAddress, record: SessionRecord): Promise<void> {
    this.records.set(addressKey(name), this.serialize ? record.serialize() : record);
  }
  override async getSession(name: ProtocolAddress): Promise<SessionRecord | null> {
    const r = this.records.get(addressKey(name));
    if (r === undefined) return null;
    return r instanceof SessionRecord ? r : SessionRecord.deserialize(r);
  }
  override async getExistingSessions(addresses: ProtocolAddress[]): Promise<SessionRecord[]> {
    const out: SessionRecord[] = [];
    for (const a of addresses) {
      const r = await this.getSession(a);
      if (r === null) throw new Error(`no session for ${addressKey(a)}`);
      out.push(r);
    }
    return out;
  }
  /** Serialized record, for snapshots and restoring (e.g. to replay a state). */
  snapshot(address: ProtocolAddress): Uint8Array<ArrayBuffer> | undefined {
    const r = this.records.get(addressKey(address));
    if (r === undefined) return undefined;
    return r instanceof SessionRecord ? r.serialize() : r;
  }
  restore(address: ProtocolAddress, bytes: Uint8Array): void {
    this.records.set(addressKey(address), SessionRecord.deserialize(ab(bytes)));
  }
  delete(address: ProtocolAddress): void {
    this.records.delete(addressKey(address));
  }
}

/**
 * Trust on first use: an unknown identity is trusted, a known one must match, unless `trustAll`.
 * `changes` records every identity replacement reported by `saveIdentity`.
 */
export class InMemoryIdentityKeyStore extends IdentityKeyStore {
  private readonly identities = new Map<string, PublicKey>();
  trustAll = false;
  readonly changes: string[] = [];
  constructor(
    private readonly identity: IdentityKeyPair,
    private readonly registrationId: number,
  ) {
    super();
  }
  override async getIdentityKey(): Promise<PrivateKey> {
    return this.identity.privateKey;
  }
  override async getLocalRegistrationId(): Promise<number> {
    return this.registrationId;
  }
  override async saveIdentity(name: ProtocolAddress, key: PublicKey): Promise<IdentityChange> {
    const k = addressKey(name);
    const old = this.identities.get(k);
    this.identities.set(k, key);
    if (old !== undefined && !old.equals(key)) {
      this.changes.push(k);
      return IdentityChange.ReplacedExisting;
    }
    return IdentityChange.NewOrUnchanged;
  }
  override async isTrustedIdentity(
    name: ProtocolAddress,
    key: PublicKey,
    _direction: Direction,
  ): Promise<boolean> {
    if (this.trustAll) return true;
    const old = this.identities.get(addressKey(name));
    return old === undefined || old.equals(key);
  }
  override async getIdentity(name: ProtocolAddress): Promise<PublicKey | null> {
    return this.identities.get(addressKey(name)) ?? null;
  }
}

export class InMemoryPreKeyStore extends PreKeyStore {
  readonly records = new Map<number, PreKeyRecord>();
  readonly removed: number[] = [];
  override async savePreKey(id: number, record: PreKeyRecord): Promise<void> {
    this.records.set(id, record);
  }
  override async getPreKey(id: number): Promise<PreKeyRecord> {
    const r = this.records.get(id);
    if (r === undefined) throw new Error(`no prekey ${id}`);
    return r;
  }
  override async removePreKey(id: number): Promise<void> {
    this.removed.push(id);
    this.records.delete(id);
  }
}

export class InMemorySignedPreKeyStore extends SignedPreKeyStore {
  readonly records = new Map<number, SignedPreKeyRecord>();
  override async saveSignedPreKey(id: number, record: SignedPreKeyRecord): Promise<void> {
    this.records.set(id, record);
  }
  override async getSignedPreKey(id: number): Promise<SignedPreKeyRecord> {
    const r = this.records.get(id);
    if (r === undefined) throw new Error(`no signed prekey ${id}`);
    return r;
  }
}

/** One-time Kyber prekeys are removed when used; last-resort ones are kept. */
export class InMemoryKyberPreKeyStore extends KyberPreKeyStore {
  readonly records = new Map<number, KyberPreKeyRecord>();
  readonly lastResort = new Set<number>();
  readonly used: { id: number; signedPreKeyId: number; baseKey: Uint8Array }[] = [];
  override async saveKyberPreKey(id: number, record: KyberPreKeyRecord): Promise<void> {
    this.records.set(id, record);
  }
  override async getKyberPreKey(id: number): Promise<KyberPreKeyRecord> {
    const r = this.records.get(id);
    if (r === undefined) throw new Error(`no kyber prekey ${id}`);
    return r;
  }
  override async markKyberPreKeyUsed(id: number, signedPreKeyId: number, baseKey: PublicKey): Promise<void> {
    this.used.push({ id, signedPreKeyId, baseKey: baseKey.serialize() });
    if (!this.lastResort.has(id)) this.records.delete(id);
  }
}

// ---------------------------------------------------------------------------------------------
// Bundles
// ---------------------------------------------------------------------------------------------

/** Turns a plain-byte bundle (ours or libsignal's) into a libsignal `PreKeyBundle`. */
export function bundleFromPlain(plain: PlainBundle): PreKeyBundle {
  const hasOpk = plain.preKey !== undefined && plain.preKeyId !== undefined;
  return PreKeyBundle.new(
    plain.registrationId,
    plain.deviceId,
    hasOpk ? (plain.preKeyId ?? null) : null,
    hasOpk && plain.preKey !== undefined ? PublicKey.deserialize(ab(plain.preKey)) : null,
    plain.signedPreKeyId,
    PublicKey.deserialize(ab(plain.signedPreKey)),
    ab(plain.signedPreKeySignature),
    PublicKey.deserialize(ab(plain.identityKey)),
    plain.kyberPreKeyId,
    KEMPublicKey.deserialize(ab(plain.kyberPreKey)),
    ab(plain.kyberPreKeySignature),
  );
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/**
 * libsignal reports most decryption failures to JS as a generic "invalid Whisper message:
 * decryption failed"; the specific reason (e.g. "message from too far into the future") only
 * reaches its logger. The logger can be installed once per process and logs synchronously on the
 * calling thread, so we keep the recent warnings in a process-wide buffer.
 */
const LOG_KEY = Symbol.for('lockstep.test.libsignal-party.log');
interface LogSink {
  lines: string[];
}
function logSink(): LogSink {
  const g = globalThis as { [LOG_KEY]?: LogSink };
  let sink = g[LOG_KEY];
  if (sink === undefined) {
    const created: LogSink = { lines: [] };
    sink = created;
    g[LOG_KEY] = created;
    initLogger(LogLevel.Warn, (_level, _target, _file, _line, message) => {
      created.lines.push(message);
      if (created.lines.length > 200) created.lines.splice(0, created.lines.length - 200);
    });
  }
  return sink;
}
logSink();

/** libsignal warnings logged while `f` ran (synchronously or across its awaits). */
export async function withLibsignalLog<T>(f: () => Promise<T>): Promise<{ result: T; log: string[] }> {
  const sink = logSink();
  const before = sink.lines.length;
  const result = await f();
  return { result, log: sink.lines.slice(before) };
}

/**
 * Maps an error thrown by libsignal-client to a coarse class: by error code first, then by message,
 * then (for the generic "decryption failed") by the reasons libsignal logged during the call.
 */
export function classifyLibsignalError(e: unknown, log: readonly string[] = []): LibsignalErrorClass {
  if (e instanceof LibSignalErrorBase) {
    switch (e.code) {
      case ErrorCode.DuplicatedMessage:
        return 'duplicate';
      case ErrorCode.UntrustedIdentity:
        return 'untrusted-identity';
      default:
        break;
    }
  }
  const message = e instanceof Error ? e.message : String(e);
  const byText = (text: string): LibsignalErrorClass | undefined => {
    if (/old counter|duplicate/i.test(text)) return 'duplicate';
    if (/untrusted identity/i.test(text)) return 'untrusted-identity';
    if (/too far into the future/i.test(text)) return 'too-far';
    if (/invalid signature|signature.*(invalid|failed)/i.test(text)) return 'invalid-signature';
    if (/session .*not found|no session/i.test(text)) return 'no-session';
    if (/invalid .*(pre ?key|prekey).*id|no (kyber |signed )?prekey|pre ?key .*not found/i.test(text))
      return 'invalid-key-id';
    return undefined;
  };
  const direct = byText(message);
  if (direct !== undefined) return direct;
  if (/decryption failed/i.test(message)) {
    // Only a reason that libsignal names more specifically than "invalid message" overrides.
    for (const line of log) {
      const k = byText(line);
      if (k === 'too-far') return k;
    }
  }
  if (/invalid .*message|decryption failed|protobuf|version|bad key|invalid (kem|key)/i.test(message))
    return 'invalid-message';
  return 'other';
}

/** The reasons libsignal logged for a failed decryption ("Candidate session 0 failed with '…'"). */
export function loggedReasons(log: readonly string[]): string[] {
  const out: string[] = [];
  for (const line of log)
    for (const m of line.matchAll(/failed with '([^']*)'/g)) if (m[1] !== undefined) out.push(m[1]);
  return out;
}

/**
 * Runs `f` and returns its result, or the class and message of the libsignal error it threw, plus
 * the failure reasons libsignal logged (which name the real cause behind "decryption failed").
 */
export async function attempt<T>(
  f: () => Promise<T>,
): Promise<
  { ok: true; value: T } | { ok: false; kind: LibsignalErrorClass; message: string; reasons: string[] }
> {
  const sink = logSink();
  const before = sink.lines.length;
  try {
    return { ok: true, value: await f() };
  } catch (e) {
    const log = sink.lines.slice(before);
    return {
      ok: false,
      kind: classifyLibsignalError(e, log),
      message: e instanceof Error ? e.message : String(e),
      reasons: loggedReasons(log),
    };
  }
}

// ---------------------------------------------------------------------------------------------
// Party
// ---------------------------------------------------------------------------------------------

export interface LibsignalPartyOptions {
  /** Number of one-time EC prekeys (ids 1..n); default 5. */
  readonly oneTimePreKeys?: number;
  /** Number of one-time Kyber prekeys (ids 1..n); default 5. The last-resort Kyber key follows. */
  readonly oneTimeKyberPreKeys?: number;
  readonly signedPreKeyId?: number;
  readonly registrationId?: number;
  /** Store session records serialized (default: keep the native objects). */
  readonly serializeSessions?: boolean;
  /** Clock passed to processPreKeyBundle / signalEncrypt (default: real time). */
  readonly now?: () => Date;
}

export interface BundleOptions {
  /** Include a one-time EC prekey (the next unused one); default true. */
  readonly withOneTimePreKey?: boolean;
  /** Which Kyber prekey to hand out; default 'one-time' (the next unused one). */
  readonly kyber?: 'one-time' | 'last-resort';
}

/** One libsignal device: its keys, its stores, and encrypt/decrypt by peer name and device id. */
export class LibsignalParty {
  readonly address: ProtocolAddress;
  readonly sessions: InMemorySessionStore;
  readonly identityStore: InMemoryIdentityKeyStore;
  readonly preKeys = new InMemoryPreKeyStore();
  readonly signedPreKeys = new InMemorySignedPreKeyStore();
  readonly kyberPreKeys = new InMemoryKyberPreKeyStore();
  /** Ids of one-time EC / Kyber prekeys not yet handed out in a bundle. */
  private readonly unusedPreKeyIds: number[] = [];
  private readonly unusedKyberIds: number[] = [];
  private nextPreKeyId = 1;
  private nextKyberId = 1;
  readonly lastResortKyberId: number;
  private readonly now: (() => Date) | undefined;

  private constructor(
    readonly name: string,
    readonly deviceId: number,
    readonly identity: IdentityKeyPair,
    readonly registrationId: number,
    readonly signedPreKeyId: number,
    opts: LibsignalPartyOptions,
  ) {
    this.address = ProtocolAddress.new(name, deviceId);
    this.sessions = new InMemorySessionStore(opts.serializeSessions ?? false);
    this.identityStore = new InMemoryIdentityKeyStore(identity, registrationId);
    this.now = opts.now;
    const spk = PrivateKey.generate();
    const spkPub = spk.getPublicKey();
    const spkSig = identity.privateKey.sign(spkPub.serialize());
    void this.signedPreKeys.saveSignedPreKey(
      signedPreKeyId,
      SignedPreKeyRecord.new(signedPreKeyId, Date.now(), spkPub, spk, spkSig),
    );
    this.addOneTimePreKeys(opts.oneTimePreKeys ?? 5);
    this.addOneTimeKyberPreKeys(opts.oneTimeKyberPreKeys ?? 5);
    this.lastResortKyberId = 0xffffff;
    const kp = KEMKeyPair.generate();
    const sig = identity.privateKey.sign(kp.getPublicKey().serialize());
    void this.kyberPreKeys.saveKyberPreKey(
      this.lastResortKyberId,
      KyberPreKeyRecord.new(this.lastResortKyberId, Date.now(), kp, sig),
    );
    this.kyberPreKeys.lastResort.add(this.lastResortKyberId);
  }

  static create(name: string, deviceId: number, opts: LibsignalPartyOptions = {}): LibsignalParty {
    const registrationId = opts.registrationId ?? 1 + Math.floor(Math.random() * 16380);
    return new LibsignalParty(
      name,
      deviceId,
      IdentityKeyPair.generate(),
      registrationId,
      opts.signedPreKeyId ?? 1 + Math.floor(Math.random() * 0xfffff),
      opts,
    );
  }

  /** 33-byte serialized identity public key. */
  get identityKey(): Uint8Array {
    return this.identity.publicKey.serialize();
  }

  addOneTimePreKeys(n: number): void {
    for (let i = 0; i < n; i++) {
      const id = this.nextPreKeyId++;
      const k = PrivateKey.generate();
      void this.preKeys.savePreKey(id, PreKeyRecord.new(id, k.getPublicKey(), k));
      this.unusedPreKeyIds.push(id);
    }
  }

  addOneTimeKyberPreKeys(n: number): void {
    for (let i = 0; i < n; i++) {
      const id = this.nextKyberId++;
      const kp = KEMKeyPair.generate();
      const sig = this.identity.privateKey.sign(kp.getPublicKey().serialize());
      void this.kyberPreKeys.saveKyberPreKey(id, KyberPreKeyRecord.new(id, Date.now(), kp, sig));
      this.unusedKyberIds.push(id);
    }
  }

  /** Hands out a bundle as plain bytes; one-time keys are not reused by later bundles. */
  bundle(opts: BundleOptions = {}): PlainBundle {
    const spk = this.signedPreKeys.records.get(this.signedPreKeyId);
    if (spk === undefined) throw new Error('signed prekey missing');
    const kyberMode = opts.kyber ?? 'one-time';
    let kyberId = this.lastResortKyberId;
    if (kyberMode === 'one-time') {
      if (this.unusedKyberIds.length === 0) this.addOneTimeKyberPreKeys(1);
      kyberId = this.unusedKyberIds.shift() ?? this.lastResortKyberId;
    }
    const kyber = this.kyberPreKeys.records.get(kyberId);
    if (kyber === undefined) throw new Error(`kyber prekey ${kyberId} missing`);
    const base = {
      registrationId: this.registrationId,
      deviceId: this.deviceId,
      identityKey: this.identity.publicKey.serialize(),
      signedPreKeyId: this.signedPreKeyId,
      signedPreKey: spk.publicKey().serialize(),
      signedPreKeySignature: spk.signature(),
      kyberPreKeyId: kyberId,
      kyberPreKey: kyber.publicKey().serialize(),
      kyberPreKeySignature: kyber.signature(),
    };
    if (opts.withOneTimePreKey ?? true) {
      if (this.unusedPreKeyIds.length === 0) this.addOneTimePreKeys(1);
      const id = this.unusedPreKeyIds.shift();
      const rec = id === undefined ? undefined : this.preKeys.records.get(id);
      if (id === undefined || rec === undefined) throw new Error('one-time prekey missing');
      return { ...base, preKeyId: id, preKey: rec.publicKey().serialize() };
    }
    return base;
  }

  /** Starts a session with a peer from its plain bundle (throws what libsignal throws). */
  async processBundle(peer: PeerAddress, plain: PlainBundle): Promise<void> {
    await processPreKeyBundle(
      bundleFromPlain(plain),
      ProtocolAddress.new(peer.name, peer.deviceId),
      this.sessions,
      this.identityStore,
      this.now?.(),
    );
  }

  async encrypt(peerName: string, peerDeviceId: number, plaintext: Uint8Array): Promise<WireMessage> {
    const m = await signalEncrypt(
      ab(plaintext),
      ProtocolAddress.new(peerName, peerDeviceId),
      this.sessions,
      this.identityStore,
      this.now?.(),
    );
    const t = m.type();
    if (t === CiphertextMessageType.PreKey) return { type: 'prekey', bytes: m.serialize() };
    if (t === CiphertextMessageType.Whisper) return { type: 'whisper', bytes: m.serialize() };
    throw new Error(`unexpected ciphertext type ${t}`);
  }

  async decrypt(peerName: string, peerDeviceId: number, msg: WireMessage): Promise<Uint8Array> {
    const address = ProtocolAddress.new(peerName, peerDeviceId);
    if (msg.type === 'prekey') {
      return signalDecryptPreKey(
        PreKeySignalMessage.deserialize(ab(msg.bytes)),
        address,
        this.sessions,
        this.identityStore,
        this.preKeys,
        this.signedPreKeys,
        this.kyberPreKeys,
      );
    }
    return signalDecrypt(
      SignalMessage.deserialize(ab(msg.bytes)),
      address,
      this.sessions,
      this.identityStore,
    );
  }

  /** The serialized session record for a peer (for "state unchanged" checks), or undefined. */
  snapshot(peerName: string, peerDeviceId: number): Uint8Array | undefined {
    return this.sessions.snapshot(ProtocolAddress.new(peerName, peerDeviceId));
  }

  /** The current session record for a peer, or null. */
  async session(peerName: string, peerDeviceId: number): Promise<SessionRecord | null> {
    return this.sessions.getSession(ProtocolAddress.new(peerName, peerDeviceId));
  }
}

// ---------------------------------------------------------------------------------------------
// Wire inspection (protobuf field listing without a schema)
// ---------------------------------------------------------------------------------------------

/** One top-level protobuf field as written: varints as numbers, length-delimited as bytes. */
export interface WireField {
  readonly field: number;
  readonly wireType: WireType;
  readonly value: number | Uint8Array;
}

/** Lists the top-level fields of a protobuf encoding in the order they are written. */
export function protobufFields(bytes: Uint8Array): WireField[] {
  const reader = new BinaryReader(bytes);
  const out: WireField[] = [];
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (wireType === WireType.Varint) out.push({ field, wireType, value: reader.uint32() });
    else if (wireType === WireType.LengthDelimited) out.push({ field, wireType, value: reader.bytes() });
    else out.push({ field, wireType, value: reader.skip(wireType, field) });
  }
  return out;
}

/** Splits a serialized SignalMessage into version byte, protobuf body and 8-byte MAC. */
export function splitSignalMessage(bytes: Uint8Array): {
  version: number;
  body: Uint8Array;
  mac: Uint8Array;
} {
  if (bytes.length < 9) throw new Error('SignalMessage too short');
  return {
    version: bytes[0] ?? 0,
    body: bytes.subarray(1, bytes.length - 8),
    mac: bytes.subarray(bytes.length - 8),
  };
}

/** Splits a serialized PreKeySignalMessage into version byte and protobuf body. */
export function splitPreKeyMessage(bytes: Uint8Array): { version: number; body: Uint8Array } {
  if (bytes.length < 1) throw new Error('PreKeySignalMessage empty');
  return { version: bytes[0] ?? 0, body: bytes.subarray(1) };
}
