/**
 * The properties the simulator checks (WHITEPAPER.md, "Simulator"; the checkable properties P1–P38
 * of the analysis digest). Each is a {@link PropertySpec}: a name, a kind (`always`: checked after
 * every step; `eventually`: must hold within the liveness bound after everything heals;
 * `sometimes`: a coverage counter), the rules it pins, the planted bug that proves it can fail, and
 * its fault envelope.
 *
 * The {@link Checker} watches what the event loop shows it — device inputs and outputs, server
 * requests and responses, abstract states — and never looks inside an engine, so the same checker
 * judges impl/, model/ and `both`. Identification is by content: every text and attachment carries
 * a unique marker, so a delivery is matched to the operation that sent it without decrypting
 * anything the network saw.
 * @module
 */
import {
  ARCHIVED_STATES_MAX_LENGTH,
  MAX_DEVICE_RECORDS_PER_USER,
  MAX_MESSAGE_KEYS,
  MAX_RECEIVER_CHAINS,
  MAX_USER_RECORDS,
} from '../spec/constants.js';
import type { CryptoProvider } from '../spec/crypto/provider.js';
import type { ProtocolError } from '../spec/errors.js';
import { toHex } from '../spec/hex.js';
import type { DeviceAddress, UserId } from '../spec/identity.js';
import type { PreKeyBundle } from '../spec/bundle.js';
import type { AppPayload } from '../spec/payload.js';
import type { ServerRequest, ServerResponse } from '../spec/server-api.js';
import { parsePreKeySignalMessage, parseSignalMessage, type ParsedSignalMessage } from '../spec/wire.js';
import type { Counters, PropertySpec, Violation } from './api.js';
import type { DeviceAbstractView } from './engine.js';
import { MARKER_PREFIX } from './workload.js';

/** The properties, in report order. */
export const PROPERTIES: readonly PropertySpec[] = Object.freeze([
  {
    name: 'plaintext-integrity',
    kind: 'always',
    rules: ['WP-DR-05', 'WP-DR-04', 'WP-PAY-01', 'WP-ATT-02', 'WP-ATT-04', 'P4', 'P13'],
    bug: 'skip-mac-check',
    envelope:
      'All faults. Every delivered text, sync copy and attachment equals what its sender sent, comes from the sending device, and reaches only the users it was sent to; an envelope the network tampered with (a flipped body bit) is rejected at the MAC check or earlier, never by a later stage or shown.',
  },
  {
    name: 'exactly-once',
    kind: 'eventually',
    rules: ['WP-SRV-21', 'WP-XPORT-01', 'WP-XPORT-02', 'WP-XPORT-06', 'WP-SES-05', 'P12', 'P20'],
    bug: 'server-drops-message',
    envelope:
      'Every text and attachment a sender that stays linked (never revoked, reinstalled, state-lost or rolled back) sent reaches every device of each recipient, and every sibling of the sender (as a sync copy), that was linked when it was sent and stays linked and is never rolled back: exactly once, within the liveness bound after healing. Loss, duplication, delay, partitions, offline windows, server crashes and tampering are all tolerated.',
  },
  {
    name: 'no-duplicate-delivery',
    kind: 'always',
    rules: ['WP-XPORT-02', 'WP-DR-10', 'P10', 'P34'],
    bug: 'deliver-twice',
    envelope:
      'All faults. No device shows a payload twice. A rollback makes a device forget what it showed after the snapshot; those payloads may be shown once more (counted as reshown-after-rollback).',
  },
  {
    name: 'rollback-recovery',
    kind: 'eventually',
    rules: ['WP-XPORT-06', 'WP-SES-13', 'WP-SES-14', 'P26'],
    bug: 'server-drops-message',
    envelope:
      'A device rolled back to an older snapshot (and otherwise staying linked) recovers through retry requests and new sessions: every message addressed to it by a sender that stays linked is shown at least once within the liveness bound (no silent loss; undecryptable ones are reported and resent).',
  },
  {
    name: 'revocation',
    kind: 'always',
    rules: ['WP-LIFE-04', 'WP-SRV-11', 'WP-SES-11', 'P33'],
    bug: 'ignore-device-removal',
    envelope:
      'All faults. After a sender learns (device-list-changed) that a device was removed, it never encrypts to it again until the device id is listed anew or the sender is rolled back to a state from before it learned (it learns again from the refusal); at the end, per address, every copy the server accepted was acknowledged, dropped by rule (droppedByRevocation) or is still queued.',
  },
  {
    name: 'no-history-to-new-device',
    kind: 'always',
    rules: ['WP-LIFE-03', 'P35'],
    bug: 'history-to-new-device',
    envelope:
      "All faults. A device never shows a direct payload whose first acceptance by the server for its account preceded the device's registration.",
  },
  {
    name: 'session-bounds',
    kind: 'always',
    rules: [
      'WP-REC-01',
      'WP-DR-07',
      'WP-DR-08',
      'WP-DR-09',
      'WP-SES-01',
      'WP-SES-15',
      'P11',
      'P18',
      'P19',
      'P28',
    ],
    bug: 'accept-past-forward-jump',
    envelope:
      'All faults. Every device record keeps one active session not also archived, ≤ 40 archived, ≤ 5 receiving chains per session, ≤ 2000 skipped keys per chain, ≤ 32 device records per user, no record for itself; a counter pushed beyond MAX_FORWARD_JUMPS by the network is refused before the MAC is checked. Checked after every step in full traces, at the end in summary traces.',
  },
  {
    name: 'no-key-reuse',
    kind: 'always',
    rules: ['WP-DR-02', 'WP-DR-10', 'WP-XPORT-03', 'P10'],
    bug: 'reuse-message-key',
    envelope:
      'All faults but rollback: a device never sends two different SignalMessages under one (ratchet key, counter). A rolled-back device may, after its rollback (counted as key-reuse-after-rollback).',
  },
  {
    name: 'server-sees-no-plaintext',
    kind: 'always',
    rules: ['WP-SRV-26'],
    bug: 'server-keeps-plaintext',
    envelope:
      'All faults. No request the server receives, and nothing it stores, contains a plaintext marker.',
  },
  {
    name: 'one-time-prekey-once',
    kind: 'always',
    rules: ['WP-SRV-13', 'WP-SRV-14', 'WP-SRV-29'],
    bug: 'server-rehands-prekey',
    envelope:
      'All faults. The server hands out each one-time EC and one-time Kyber prekey at most once (the last-resort Kyber prekey is handed out again by rule), whatever copies of prekey uploads the network delays or duplicates. A key of a device that was rolled back may be handed out again after its restored state uploads it anew (counted as prekey-rehanded-after-rollback).',
  },
  {
    name: 'stale-cleanup',
    kind: 'eventually',
    rules: ['WP-SES-11', 'P22'],
    bug: 'never-clean-stale',
    envelope:
      'After convergence the clock jumps past MAXLATENCY and every linked device drains its mailbox: then no device holds a stale user or device record.',
  },
]);

/** The spec of a property by name. */
export function propertySpec(name: string): PropertySpec {
  const spec = PROPERTIES.find((p) => p.name === name);
  if (spec === undefined) throw new Error(`unknown property ${name}`);
  return spec;
}

/** Error codes that show a tampered body got past the MAC check. */
const PAST_MAC = new Set(['BODY_DECRYPT_FAILED', 'PAYLOAD_MALFORMED', 'PAYLOAD_VERSION_UNKNOWN']);
/** Error codes that show a pushed counter got past the forward-jump check. */
const PAST_JUMP = new Set(['MAC_INVALID', ...PAST_MAC]);

/**
 * A prekey's tag in its address's ledger: the last 6 bytes of its public key as a number, plus 2^48
 * for a Kyber key. 48 bits per device, which holds a few dozen keys: no two collide in practice.
 */
function prekeyTag(kind: 'e' | 'k', publicKey: Uint8Array): number {
  let tag = 0;
  for (let i = publicKey.length - 6; i < publicKey.length; i++) tag = tag * 256 + (publicKey[i] ?? 0);
  return kind === 'k' ? tag + 2 ** 48 : tag;
}

/** What one-time-prekey-once knows of an address. */
interface PrekeyLedger {
  /** The installs that registered at the address, in order. */
  readonly installs: string[];
  /** Every one-time prekey the server handed out for the address. */
  readonly handedOut: Set<number>;
  /** Its last-resort Kyber prekeys, handed out again by rule (WP-SRV-14). */
  readonly lastResort: Set<number>;
}

/** What the run knows of a send operation. */
export interface SendOp {
  /** The op's unique text (or an attachment's caption). */
  readonly text: string;
  readonly kind: 'text' | 'attachment';
  readonly sender: string;
  readonly senderAddress: DeviceAddress;
  readonly to: readonly UserId[];
  readonly t: number;
  /** SHA-256 fingerprint of the attachment bytes. */
  readonly bytesFp: string | null;
}

/** One delivery the run expects (checked when the run ends). */
interface Expectation {
  readonly op: SendOp;
  readonly install: string;
  readonly key: string;
}

/** Facts about an install the end-of-run judgement needs. */
export interface InstallFacts {
  /** Revoked, replaced, state-lost or reported revoked: exempt from delivery properties. */
  readonly gone: boolean;
  readonly rolledBack: boolean;
}

/** Watches a run and records violations and counters. */
export class Checker {
  readonly violations: Violation[] = [];
  private readonly counters = new Map<string, number>();
  private readonly perProperty = new Map<string, number>();
  private readonly ops = new Map<string, SendOp>();
  private readonly expectations = new Map<string, Expectation>();
  /**
   * Per install, the ticks at which each payload id was shown: a number when shown once (nearly
   * always), else all of them. Nested maps of flat keys keep peak-day's half a million deliveries
   * to a few objects each.
   */
  private readonly shown = new Map<string, Map<string, number | readonly number[]>>();
  private readonly registeredAt = new Map<string, number>();
  private readonly acceptedAt = new Map<string, number>();
  private readonly removedKnown = new Map<string, Set<string>>();
  /** Per install, every device-list change it accepted, in order: a rollback forgets the later ones. */
  private readonly listChanges = new Map<
    string,
    {
      readonly t: number;
      readonly userId: UserId;
      readonly added: readonly number[];
      readonly removed: readonly number[];
    }[]
  >();
  private readonly lastRequestId = new Map<string, number>();
  /** Per install, per sending ratchet key (8 bytes, hex), per counter: the ciphertext's digest. */
  private readonly keyUse = new Map<string, Map<string, Map<number, string>>>();
  private readonly tampered = new Map<string, 'flip' | 'jump'>();
  private readonly stored = new Map<string, number>();
  private readonly acked = new Map<string, number>();
  private readonly rolledBackAt = new Map<string, number>();
  /**
   * Per address (`user.device`): the installs that registered there (a reinstall adds one) and the
   * prekeys the one-time-prekey-once property needs, as {@link prekeyTag} numbers (no strings: a
   * peak-day hands out most of a million keys).
   */
  private readonly prekeyLedgers = new Map<string, PrekeyLedger>();
  readonly latencies: number[] = [];
  private t = 0;
  private seq = 0;

  constructor(
    private readonly c: CryptoProvider,
    /** Called for each violation (the run traces it). */
    private readonly onViolation: (violation: Violation) => void,
  ) {}

  /** Sets the time and sequence number violations are stamped with. */
  at(t: number, seq: number): void {
    this.t = t;
    this.seq = seq;
  }

  /** Adds to a counter. */
  count(name: string, by = 1): void {
    this.counters.set(name, (this.counters.get(name) ?? 0) + by);
  }

  /** Every counter, sorted by name. */
  snapshotCounters(): Counters {
    return Object.fromEntries([...this.counters.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  }

  /** Reports a violation of `property` (at most 20 per property are kept; all are counted). */
  violate(property: string, message: string): void {
    const spec = propertySpec(property);
    const n = (this.perProperty.get(property) ?? 0) + 1;
    this.perProperty.set(property, n);
    this.count(`violations.${property}`);
    if (n > 20) return;
    const violation: Violation = { property, t: this.t, seq: this.seq, message, rules: spec.rules };
    this.violations.push(violation);
    this.onViolation(violation);
  }

  // -------------------------------------------------------------------------------------------
  // Registry

  /** The server accepted the registration of `install` at `address`. */
  registered(install: string, t: number): void {
    if (!this.registeredAt.has(install)) this.registeredAt.set(install, t);
  }

  /** A rollback of `install` to the state it had at `toTick`. */
  rolledBack(install: string, toTick: number): void {
    this.rolledBackAt.set(install, toTick);
    this.forgetListChangesAfter(install, toTick);
    const mine = this.shown.get(install);
    if (mine !== undefined) {
      for (const [payloadId, shownAt] of mine) {
        const times = typeof shownAt === 'number' ? [shownAt] : shownAt;
        const kept = times.filter((x) => x <= toTick);
        if (kept.length === times.length) continue;
        this.count('reshown-allowed-after-rollback', times.length - kept.length);
        if (kept.length === 0) mine.delete(payloadId);
        else mine.set(payloadId, kept.length === 1 ? (kept[0] ?? toTick) : kept);
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // Sends and deliveries

  /**
   * A user sent `op` from `op.sender`. `recipients` are the installs of each recipient user, and
   * `siblings` the sender's other installs, linked at this moment: each must show it once.
   */
  sendOp(op: SendOp, recipients: readonly string[], siblings: readonly string[]): void {
    this.ops.set(op.text, op);
    this.count(op.kind === 'text' ? 'ops.send' : 'ops.attachment');
    for (const install of recipients) this.expect(op, install, `${op.text}|d|${install}`);
    for (const dest of op.to)
      for (const install of siblings) this.expect(op, install, `${op.text}|s|${dest}|${install}`);
  }

  private expect(op: SendOp, install: string, key: string): void {
    this.expectations.set(key, { op, install, key });
  }

  /** A device showed a payload. */
  delivered(
    install: string,
    user: UserId,
    from: DeviceAddress,
    payload: AppPayload,
    t: number,
  ): 'attachment' | null {
    this.count('delivered');
    // no-duplicate-delivery (P34): a payload id is shown once per device.
    let mine = this.shown.get(install);
    if (mine === undefined) {
      mine = new Map();
      this.shown.set(install, mine);
    }
    const before = mine.get(payload.messageId);
    const times = before === undefined ? [t] : typeof before === 'number' ? [before, t] : [...before, t];
    mine.set(payload.messageId, times.length === 1 ? t : times);
    if (times.length > 1)
      this.violate(
        'no-duplicate-delivery',
        `${install} showed payload ${payload.messageId} ${times.length} times`,
      );
    const content = payload.content;
    let text: string;
    let direct: boolean;
    let dest: UserId | null = null;
    let isAttachment = false;
    if (content.kind === 'text') {
      text = content.text;
      direct = true;
    } else if (content.kind === 'attachment') {
      text = content.caption;
      direct = true;
      isAttachment = true;
    } else if (content.kind === 'sync') {
      dest = content.destination;
      direct = false;
      const inner = content.content;
      text = inner.kind === 'text' ? inner.text : inner.kind === 'attachment' ? inner.caption : '';
      isAttachment = inner.kind === 'attachment';
    } else {
      this.count('delivered.other');
      return null;
    }
    const op = this.ops.get(text);
    // plaintext-integrity: the content is what a sender sent, from that sender, to this user.
    if (op === undefined) {
      this.violate(
        'plaintext-integrity',
        `${install} showed a ${content.kind} no sender sent (${text.length} chars)`,
      );
      return null;
    }
    if (from.userId !== op.senderAddress.userId || from.deviceId !== op.senderAddress.deviceId) {
      this.violate(
        'plaintext-integrity',
        `${install} showed ${op.text.slice(0, 12)} from ${from.userId}.${from.deviceId}, sent by ${op.senderAddress.userId}.${op.senderAddress.deviceId}`,
      );
    }
    if (direct && !op.to.includes(user)) {
      this.violate(
        'plaintext-integrity',
        `${install} (${user}) showed ${op.text.slice(0, 12)}, sent to ${op.to.join(',')}`,
      );
    }
    if (!direct && (user !== op.senderAddress.userId || dest === null || !op.to.includes(dest))) {
      this.violate(
        'plaintext-integrity',
        `${install} showed a sync copy of ${op.text.slice(0, 12)} that does not match its send`,
      );
    }
    // no-history-to-new-device (P35): a direct payload accepted before this device registered.
    if (direct) {
      // The first acceptance of this payload for this account; a payload that reached the account
      // under another transport id than its own (not a send of it to this account) counts from
      // its first acceptance for anyone.
      const accepted =
        this.acceptedAt.get(`${payload.messageId}|${user}`) ?? this.acceptedAt.get(payload.messageId);
      const registered = this.registeredAt.get(install);
      if (accepted !== undefined && registered !== undefined && accepted < registered) {
        this.violate(
          'no-history-to-new-device',
          `${install} (registered at ${registered}) showed payload ${payload.messageId} accepted at ${accepted}`,
        );
      }
    }
    const key = direct ? `${op.text}|d|${install}` : `${op.text}|s|${dest ?? ''}|${install}`;
    if (this.expectations.delete(key)) {
      this.latencies.push(t - op.t);
    }
    return isAttachment ? 'attachment' : null;
  }

  /** A downloaded attachment's bytes (plaintext-integrity). */
  attachmentBytes(install: string, caption: string, bytes: Uint8Array): void {
    this.count('attachments.downloaded');
    const op = this.ops.get(caption);
    const fp = toHex(this.c.sha256(bytes));
    if (op === undefined || op.bytesFp !== fp)
      this.violate(
        'plaintext-integrity',
        `${install} downloaded attachment bytes that differ from those sent`,
      );
  }

  /** The network tampered with envelope `messageId` on its way to `install`. */
  tamperedWith(install: string, messageId: string, mode: 'flip' | 'jump'): void {
    this.tampered.set(`${install}|${messageId}`, mode);
    this.count(`tampered.${mode}`);
  }

  /** A device reported an envelope it could not decrypt. */
  undecryptable(install: string, messageId: string, error: ProtocolError): void {
    this.count(`undecryptable.${error.code}`);
    const mode = this.tampered.get(`${install}|${messageId}`);
    if (mode === undefined) return;
    this.tampered.delete(`${install}|${messageId}`);
    if (mode === 'flip' && PAST_MAC.has(error.code)) {
      this.violate(
        'plaintext-integrity',
        `${install}: a tampered body got past the MAC check (${error.code}, ${error.rule})`,
      );
    }
    if (mode === 'jump' && PAST_JUMP.has(error.code)) {
      this.violate(
        'session-bounds',
        `${install}: a counter beyond MAX_FORWARD_JUMPS got past the jump check (${error.code}, ${error.rule})`,
      );
    }
    if (mode === 'jump' && error.code === 'FORWARD_JUMP_TOO_FAR') this.count('forward-jump-refused');
  }

  /** A device accepted a new device list for `userId`. */
  deviceListChanged(
    install: string,
    userId: UserId,
    added: readonly number[],
    removed: readonly number[],
  ): void {
    this.count('device-list-changes');
    const history = this.listChanges.get(install) ?? [];
    history.push({ t: this.t, userId, added, removed });
    this.listChanges.set(install, history);
    this.learnListChange(install, userId, added, removed);
  }

  private learnListChange(
    install: string,
    userId: UserId,
    added: readonly number[],
    removed: readonly number[],
  ): void {
    const known = this.removedKnown.get(install) ?? new Set<string>();
    for (const d of removed) known.add(`${userId}.${d}`);
    for (const d of added) known.delete(`${userId}.${d}`);
    this.removedKnown.set(install, known);
  }

  /**
   * revocation under rollback: a device restored to the state it had at `toTick` no longer knows the
   * removals it learned since (its lists went back with it, as design.md's rollback fault says), so
   * what it knows is rebuilt from the changes it had accepted before then; it learns them again from
   * the next refusal or list. The snapshot is taken before the events of tick `toTick`.
   */
  private forgetListChangesAfter(install: string, toTick: number): void {
    const kept = (this.listChanges.get(install) ?? []).filter((c) => c.t < toTick);
    this.listChanges.set(install, kept);
    this.removedKnown.delete(install);
    for (const c of kept) this.learnListChange(install, c.userId, c.added, c.removed);
  }

  /**
   * A device emitted a request. Sends are checked on their first emission: no encryption to a
   * device known removed (revocation, P33) and no (ratchet key, counter) used for two different
   * messages (no-key-reuse).
   */
  requestEmitted(install: string, requestId: number, request: ServerRequest): void {
    if (request.kind !== 'send') return;
    // Request ids increase per device; a resend repeats an old id (and a rollback rewinds them, but
    // a rolled-back device is exempt from what is checked here).
    const last = this.lastRequestId.get(install) ?? 0;
    if (requestId <= last) {
      this.count('requests.resent');
      return;
    }
    this.lastRequestId.set(install, requestId);
    const known = this.removedKnown.get(install);
    const rolledBack = this.rolledBackAt.has(install);
    for (const m of request.messages) {
      if (m.type === 'retry-request') {
        this.count('retry-requests');
        continue;
      }
      if (known?.has(`${request.recipient}.${m.deviceId}`)) {
        this.violate(
          'revocation',
          `${install} encrypted to ${request.recipient}.${m.deviceId} after learning it was removed`,
        );
      }
      const parsed: ParsedSignalMessage | null =
        m.type === 'prekey'
          ? (() => {
              const p = parsePreKeySignalMessage(m.bytes);
              return p.ok ? p.value.inner : null;
            })()
          : (() => {
              const p = parseSignalMessage(m.bytes);
              return p.ok ? p.value : null;
            })();
      if (parsed === null) continue;
      // 8 bytes of the ratchet key name it within one sender (memory: peak-day has millions).
      const ratchet = toHex(parsed.ratchetKey.subarray(1, 9));
      let byRatchet = this.keyUse.get(install);
      if (byRatchet === undefined) {
        byRatchet = new Map();
        this.keyUse.set(install, byRatchet);
      }
      let byCounter = byRatchet.get(ratchet);
      if (byCounter === undefined) {
        byCounter = new Map();
        byRatchet.set(ratchet, byCounter);
        this.count('sending-ratchet-keys');
      }
      const body = toHex(this.c.sha256(parsed.ciphertext).subarray(0, 8));
      const before = byCounter.get(parsed.counter);
      if (before === undefined) byCounter.set(parsed.counter, body);
      else if (before !== body) {
        if (rolledBack) this.count('key-reuse-after-rollback');
        else
          this.violate(
            'no-key-reuse',
            `${install} sent two different messages under one key (counter ${parsed.counter})`,
          );
      }
    }
  }

  /** A request the server answered; `install` made it; `ackRemoved` is the mailbox shrinkage of an ack. */
  serverStep(
    install: string,
    request: ServerRequest,
    response: ServerResponse,
    t: number,
    ackRemoved: number,
  ): void {
    this.count(`server.${request.kind}`);
    if (response.kind === 'error') this.count(`server-errors.${response.code}`);
    if (response.kind === 'refused') this.count(`refusals.${response.refusal.kind}`);
    if (
      (request.kind === 'register-account' || request.kind === 'register-device') &&
      response.kind === 'ok'
    ) {
      this.registered(install, t);
      this.prekeyLedger(request.device.userId, request.device.deviceId).installs.push(install);
    }
    if (
      (request.kind === 'register-account' ||
        request.kind === 'register-device' ||
        request.kind === 'upload-prekeys') &&
      response.kind === 'ok'
    ) {
      const ledger = this.prekeyLedger(request.device.userId, request.device.deviceId);
      for (const key of request.preKeys.kyberPreKeys)
        if (key.lastResort) ledger.lastResort.add(prekeyTag('k', key.publicKey));
    }
    if (request.kind === 'get-bundles' && response.kind === 'bundles') {
      for (const bundle of response.bundles) this.bundleHandedOut(request.userId, bundle);
    }
    if (request.kind === 'ack') {
      const a = `${request.device.userId}.${request.device.deviceId}`;
      this.acked.set(a, (this.acked.get(a) ?? 0) + ackRemoved);
    }
    if (request.kind === 'send' && response.kind === 'accepted' && !response.duplicate) {
      const key = `${request.messageId}|${request.recipient}`;
      if (!this.acceptedAt.has(key)) this.acceptedAt.set(key, t);
      if (!this.acceptedAt.has(request.messageId)) this.acceptedAt.set(request.messageId, t);
      for (const m of request.messages) {
        const a = `${request.recipient}.${m.deviceId}`;
        this.stored.set(a, (this.stored.get(a) ?? 0) + 1);
      }
    }
    // server-sees-no-plaintext (WP-SRV-26): nothing the server receives carries a marker.
    const blobs: Uint8Array[] =
      request.kind === 'send'
        ? request.messages.map((m) => m.bytes)
        : request.kind === 'blob-put' || request.kind === 'provision-put'
          ? [request.bytes]
          : [];
    for (const bytes of blobs) {
      if (containsMarker(bytes))
        this.violate(
          'server-sees-no-plaintext',
          `the server received a plaintext marker in a ${request.kind} from ${install}`,
        );
    }
  }

  /**
   * one-time-prekey-once (WP-SRV-13, WP-SRV-14, WP-SRV-29): the one-time keys of a bundle the server
   * handed out were never handed out before.
   */
  private bundleHandedOut(userId: UserId, bundle: PreKeyBundle): void {
    const ledger = this.prekeyLedger(userId, bundle.deviceId);
    const keys: [number, string][] = [];
    if (bundle.preKey !== null)
      keys.push([prekeyTag('e', bundle.preKey), `one-time prekey ${bundle.preKeyId}`]);
    if (bundle.kyberPreKey !== null) {
      const tag = prekeyTag('k', bundle.kyberPreKey);
      if (!ledger.lastResort.has(tag)) keys.push([tag, `one-time Kyber prekey ${bundle.kyberPreKeyId}`]);
    }
    for (const [tag, what] of keys) {
      if (!ledger.handedOut.has(tag)) {
        ledger.handedOut.add(tag);
        continue;
      }
      // A restored device uploads again what its snapshot had not yet seen answered.
      if (ledger.installs.some((i) => this.rolledBackAt.has(i))) {
        this.count('prekey-rehanded-after-rollback');
      } else {
        this.violate(
          'one-time-prekey-once',
          `the server handed out ${userId}.${bundle.deviceId}'s ${what} a second time`,
        );
      }
    }
  }

  /** The prekey ledger of an address, made empty on first use. */
  private prekeyLedger(userId: UserId, deviceId: number): PrekeyLedger {
    const address = `${userId}.${deviceId}`;
    let ledger = this.prekeyLedgers.get(address);
    if (ledger === undefined) {
      ledger = { installs: [], handedOut: new Set(), lastResort: new Set() };
      this.prekeyLedgers.set(address, ledger);
    }
    return ledger;
  }

  /** End of run: the server's stored bytes carry no marker. */
  scanStored(bytes: readonly Uint8Array[]): void {
    for (const b of bytes)
      if (containsMarker(b)) {
        this.violate('server-sees-no-plaintext', 'the server stores a plaintext marker');
        return;
      }
  }

  /** session-bounds on one device's abstract state. */
  deviceAbstract(install: string, view: DeviceAbstractView): void {
    const self = view.sesame.self;
    if (view.sesame.users.length > MAX_USER_RECORDS)
      this.violate('session-bounds', `${install}: too many user records`);
    for (const user of view.sesame.users) {
      if (user.devices.length === 0)
        this.violate('session-bounds', `${install}: empty user record ${user.userId}`);
      if (user.devices.length > MAX_DEVICE_RECORDS_PER_USER)
        this.violate(
          'session-bounds',
          `${install}: ${user.devices.length} device records for ${user.userId}`,
        );
      for (const device of user.devices) {
        if (user.userId === self.userId && device.deviceId === self.deviceId)
          this.violate('session-bounds', `${install}: a record for its own address`);
        const { current, archived } = device.sessions;
        if (archived.length > ARCHIVED_STATES_MAX_LENGTH)
          this.violate('session-bounds', `${install}: ${archived.length} archived sessions`);
        if (current !== null && archived.some((s) => s.baseKeyFp === current.baseKeyFp))
          this.violate('session-bounds', `${install}: the active session is also archived`);
        for (const s of current === null ? archived : [current, ...archived]) {
          if (s.receiverChains.length > MAX_RECEIVER_CHAINS)
            this.violate('session-bounds', `${install}: ${s.receiverChains.length} receiving chains`);
          for (const chain of s.receiverChains)
            if (chain.skippedKeys > MAX_MESSAGE_KEYS)
              this.violate('session-bounds', `${install}: ${chain.skippedKeys} skipped keys on one chain`);
        }
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // Liveness

  /** Expectations not met yet whose sender and target are still judged (not gone). */
  outstanding(facts: (install: string) => InstallFacts): number {
    let n = 0;
    for (const e of this.expectations.values()) if (this.judged(e, facts) !== null) n++;
    return n;
  }

  private judged(
    e: Expectation,
    facts: (install: string) => InstallFacts,
  ): 'exactly-once' | 'rollback-recovery' | null {
    const sender = facts(e.op.sender);
    if (sender.gone || sender.rolledBack) return null;
    const target = facts(e.install);
    if (target.gone) return null;
    return target.rolledBack ? 'rollback-recovery' : 'exactly-once';
  }

  /** The liveness verdict: every unmet expectation still judged is a violation. */
  finishDeliveries(facts: (install: string) => InstallFacts): void {
    let unmet = 0;
    for (const e of this.expectations.values()) {
      const property = this.judged(e, facts);
      if (property === null) {
        this.count('expectations.exempt');
        continue;
      }
      unmet++;
      this.violate(
        property,
        `${e.install} never showed ${e.op.text.slice(0, 24)} (sent by ${e.op.sender} at ${e.op.t})`,
      );
    }
    this.count('expectations.unmet', unmet);
  }

  /** End of run: per address, accepted copies = acknowledged + dropped by rule + queued. */
  finishConservation(server: {
    droppedByRevocation(a: DeviceAddress): number;
    mailboxDepth(a: DeviceAddress): number;
  }): void {
    for (const [a, stored] of this.stored) {
      const dot = a.lastIndexOf('.');
      const address = { userId: a.slice(0, dot), deviceId: Number(a.slice(dot + 1)) };
      const dropped = server.droppedByRevocation(address);
      const queued = server.mailboxDepth(address);
      const acked = this.acked.get(a) ?? 0;
      this.count('dropped-by-rule', dropped);
      if (stored !== acked + dropped + queued) {
        this.violate(
          'revocation',
          `${a}: ${stored} copies accepted but ${acked} acknowledged + ${dropped} dropped by rule + ${queued} queued`,
        );
      }
    }
  }

  /** stale-cleanup: after the MAXLATENCY epoch, no linked device keeps a stale record. */
  finishStale(install: string, view: DeviceAbstractView): void {
    for (const user of view.sesame.users) {
      if (user.stale)
        this.violate('stale-cleanup', `${install} still holds stale user record ${user.userId}`);
      for (const device of user.devices)
        if (device.stale)
          this.violate(
            'stale-cleanup',
            `${install} still holds stale device record ${user.userId}.${device.deviceId}`,
          );
    }
  }

  /** "Sometimes" counters taken from a device's abstract state at the end. */
  countAbstract(view: DeviceAbstractView): void {
    for (const user of view.sesame.users) {
      for (const device of user.devices) {
        if (device.stale) this.count('stale-records');
        this.count('archived-sessions', device.sessions.archived.length);
        for (const s of device.sessions.current === null
          ? device.sessions.archived
          : [device.sessions.current, ...device.sessions.archived])
          for (const chain of s.receiverChains) this.count('skipped-keys-held', chain.skippedKeys);
      }
    }
  }
}

/** True when `bytes` contain a marker `~mk` + 12 hex digits + `~` (workload.ts). */
export function containsMarker(bytes: Uint8Array): boolean {
  const first = MARKER_PREFIX.charCodeAt(0);
  const second = MARKER_PREFIX.charCodeAt(1);
  const third = MARKER_PREFIX.charCodeAt(2);
  let i = bytes.indexOf(first);
  while (i >= 0 && i + 15 < bytes.length) {
    if (bytes[i + 1] === second && bytes[i + 2] === third && bytes[i + 15] === first) {
      let hex = true;
      for (let j = i + 3; j < i + 15; j++) {
        const b = bytes[j] ?? 0;
        if (!((b >= 0x30 && b <= 0x39) || (b >= 0x61 && b <= 0x66))) {
          hex = false;
          break;
        }
      }
      if (hex) return true;
    }
    i = bytes.indexOf(first, i + 1);
  }
  return false;
}
