/**
 * The security oracles (WHITEPAPER.md, "Adversaries and known attacks"; the checkable properties
 * P5, P8, P15, P16, P30–P35, P38 of the analysis digest). An adversarial run records two things:
 *
 * - the **attacker's view**: every ciphertext copy it saw go to the server (a network attacker sees
 *   every packet; a malicious server stores them), the copies it injected, the states it stole and
 *   what the devices it runs (clones, a phished device) decrypted;
 * - the **ground truth**: which plaintext each honest device sent and showed, their device-list and
 *   clone-detection events, and their abstract states (spec/device-abstract.ts).
 *
 * At the end the {@link SecurityRecorder} decides, for every copy, whether the attacker can decrypt
 * it by actually trying (simulator/attacker-crypto.ts: the recorded bytes, the stolen keys, the
 * reference decryption), then compares each plaintext it recovered with what the whitepaper
 * claims. A recovered plaintext is allowed only inside a documented window:
 *
 * - **forward secrecy** (P16): a copy sent before a compromise whose key the victim had used (the
 *   sender always deletes at once; the receiver when it showed the copy) stays unreadable;
 * - **post-compromise security** (P15, P30): per direction of a pair, once the sender's current
 *   session uses a sending ratchet key and the newest peer ratchet key it answers that both came
 *   after the compromise (a DH round trip with fresh randomness), every later copy in that direction
 *   stays unreadable — for the rest of the run, so a revived old session (CJN23) is a violation;
 * - **post-revocation secrecy** (P33): nothing a sender encrypts after it learned a device was
 *   removed is readable with that device's keys;
 * - **confidentiality** against the network and the server: any other recovered plaintext; a
 *   device the account did not sign (a server-injected one) counts here, one the user linked
 *   (QR phishing) is the documented exception.
 *
 * Further oracles judge events: **authentication** (an accepted message its claimed sender did not
 * send is a forgery, allowed only in the KCI window, before healing, or on a receiving chain the
 * receiver already held), **signed-devices-only** (P32), **initial-replay** (P5, P34: one initial
 * message accepted twice by one device), **clone-detection-sound** (P31: no detection without a
 * clone) and **device-list-visibility** (WP-TRUST-07: a device-list change event before anything is
 * encrypted to a new device).
 * @module
 */
import { equalBytes } from '../spec/bytes.js';
import { SIGNED_PREKEY_GRACE_PERIOD } from '../spec/constants.js';
import type { CryptoProvider } from '../spec/crypto/provider.js';
import { decodeDeviceList } from '../spec/device-list.js';
import type { Env } from '../spec/env.js';
import type { DeviceAddress, UserId } from '../spec/identity.js';
import { fingerprint } from '../spec/keys.js';
import type { AppPayload } from '../spec/payload.js';
import type { EnvelopeType, ServerRequest } from '../spec/server-api.js';
import { decodeRetryRequest } from '../spec/retry-request.js';
import { parsePreKeySignalMessage } from '../spec/wire.js';
import type { DeviceInput, DeviceOutput } from '../impl/device.js';
import type { SessionState } from '../impl/session-state.js';
import type { Leak, OracleName, SecurityReport, SecurityViolation } from './api.js';
import {
  decryptOutgoing,
  innerMessage,
  SessionReader,
  ShadowReceiver,
  stolenRatchetKeys,
  type StolenState,
} from './attacker-crypto.js';
import type { DeviceAbstractView } from './engine.js';

/** `u.d` for an address. */
export function addressKey(a: DeviceAddress): string {
  return `${a.userId}.${a.deviceId}`;
}

/** The text of a payload (a text, an attachment's caption, or the content of a sync copy), or null. */
export function payloadText(payload: AppPayload): string | null {
  const content = payload.content;
  if (content.kind === 'text') return content.text;
  if (content.kind === 'attachment') return content.caption;
  if (content.kind === 'sync') {
    const inner = content.content;
    return inner.kind === 'text' ? inner.text : inner.caption;
  }
  return null;
}

/** One ciphertext copy the attacker saw on its way to the server, or injected itself. */
export interface ObservedCopy {
  readonly t: number;
  /** The recorder's step counter when it was seen (orders copies against device steps). */
  readonly step: number;
  /** The install that sent it, or `attacker` for a copy the attacker injected. */
  readonly install: string;
  /** Sent by something the attacker controls (a clone, an injected forgery or replay). */
  readonly attacker: boolean;
  /** Made by the attacker (a clone's or a forgery's message, not a replay of someone else's bytes). */
  readonly forged: boolean;
  readonly sender: DeviceAddress;
  readonly recipient: DeviceAddress;
  readonly transportId: string;
  readonly type: EnvelopeType;
  readonly bytes: Uint8Array;
}

/** A compromise: what was stolen, from whom, when. */
export interface Compromise {
  readonly label: string;
  readonly install: string;
  readonly address: DeviceAddress;
  readonly t: number;
  readonly step: number;
  readonly stolen: StolenState;
  /** Fingerprints of every ratchet and signed prekey public key whose private key was stolen. */
  readonly keyFps: ReadonlySet<string>;
  /** Signed prekey ids stolen. */
  readonly signedPreKeyIds: readonly number[];
}

interface Healing {
  readonly t: number;
  readonly step: number;
  /** Base-key fingerprints of the sessions the healed side held with its peer then. */
  readonly held: ReadonlySet<string>;
}

/**
 * The KCI window a compromise opened (X3DH §4.6, KBB, P38; WP-LIFE-08): from the theft of the
 * victim's signed prekeys until it holds none of them any more.
 */
interface KciWindow {
  readonly label: string;
  readonly install: string;
  readonly ids: readonly number[];
  readonly stolenAt: number;
  /** Stolen key id → when the victim's view first showed it retired (a newer key confirmed). */
  readonly retiredAt: Map<number, number>;
  /** When the victim first held none of the stolen keys, or null while it still holds one. */
  closedAt: number | null;
}

/** Records the attacker's view and the ground truth of an adversarial run, then judges it. */
export class SecurityRecorder {
  /** Incremented on every device step the recorder sees. */
  private step = 0;
  private readonly copies: ObservedCopy[] = [];
  /** `${install}|${requestId}|${message id or kind}` → when the request was first emitted. */
  private readonly emission = new Map<string, { readonly t: number; readonly step: number }>();
  private readonly seenCopies = new Set<string>();
  readonly compromises: Compromise[] = [];
  private readonly honestSends = new Map<
    string,
    { readonly install: string; readonly address: DeviceAddress; readonly t: number }
  >();
  /** `${install}|${payloadId}` → first tick it was shown. */
  private readonly shown = new Map<string, number>();
  private readonly undecryptable = new Set<string>();
  /** `${install}|${transport id}` of messages a device asked to have resent (retry requests). */
  private readonly retried = new Set<string>();
  /** install → user → devices announced by device-list events (or linked by the install itself). */
  private readonly announced = new Map<string, Map<UserId, Set<number>>>();
  /** `${senderInstall}|${address}` → tick the sender learned the device was removed. */
  private readonly removalLearned = new Map<string, number>();
  /** user → devices some genuine device of the account put in a list it uploaded. */
  private readonly signed = new Map<UserId, Set<number>>();
  /** user → devices of the latest list the account uploaded. */
  private readonly latestList = new Map<UserId, readonly number[]>();
  private readonly honestInstalls = new Set<string>();
  private readonly prevView = new Map<string, DeviceAbstractView>();
  private readonly sessionKeys = new Map<string, Set<string>>();
  private readonly insertions = new Map<string, Map<string, number>>();
  private readonly healed = new Map<string, Map<string, Healing>>();
  /** Forged copies per recipient address, in order. */
  private readonly forgedTo = new Map<string, ObservedCopy[]>();
  /** Ratchet public keys the attacker made (its forgeries' and its clones' headers). */
  private readonly attackerKeys = new Set<string>();
  private readonly learned: {
    readonly engine: string;
    readonly address: DeviceAddress;
    readonly label: string | null;
    readonly payload: AppPayload;
    readonly t: number;
    readonly step: number;
  }[] = [];
  /** Attacker engines: install → compromise label it runs (null for a device it provisioned). */
  private readonly engines = new Map<string, string | null>();
  /** When each attacker engine started (recorder step). */
  private readonly engineStart = new Map<string, number>();
  /** Clones that fetch the victim's mail: they follow the conversation (CFKN20's clone). */
  private readonly activeClones = new Set<string>();
  /** `${recipient}|${baseKeyFp}` of PreKey messages the attacker stored again (replays). */
  private readonly replayedInitials = new Set<string>();
  /** Addresses of devices the user linked for the attacker (QR phishing). */
  private readonly phished = new Set<string>();
  /** Addresses of devices the server made up, with the keys the attacker holds for them. */
  private readonly injected = new Map<string, StolenState>();
  /** Sessions the attacker built by KCI: who it claimed to be, with whom, and the session. */
  private readonly kciSessions: {
    readonly label: string;
    readonly claimed: DeviceAddress;
    readonly victim: DeviceAddress;
    readonly reader: SessionReader;
  }[] = [];
  private readonly rollbacks: { readonly address: string; readonly t: number; readonly toTick: number }[] =
    [];
  private readonly violations: SecurityViolation[] = [];
  private readonly flagged = new Set<string>();
  private readonly forgeries: SecurityReport['forgeries'][number][] = [];
  private readonly detections: SecurityReport['detections'][number][] = [];
  private readonly kciProbes: SecurityReport['kciProbes'][number][] = [];
  /** One per compromise that stole signed prekeys, in theft order. */
  private readonly kciWindows: KciWindow[] = [];
  private readonly refusals = new Map<string, number>();

  constructor(
    private readonly c: CryptoProvider,
    /** The attacker's environment: its own random stream, for the decryption attempts. */
    private readonly env: Env,
    private readonly plan: string,
  ) {}

  private violate(oracle: OracleName, t: number, message: string, once?: string): void {
    if (once !== undefined) {
      if (this.flagged.has(once)) return;
      this.flagged.add(once);
    }
    this.violations.push({ oracle, t, message });
  }

  // -------------------------------------------------------------------------------------------
  // What the attacker does and holds

  /** A device state was stolen. */
  compromised(label: string, install: string, address: DeviceAddress, t: number, stolen: StolenState): void {
    this.compromises.push({
      label,
      install,
      address,
      t,
      step: this.step,
      stolen,
      keyFps: new Set(stolenRatchetKeys(stolen).map((k) => fingerprint(this.c, k))),
      signedPreKeyIds: stolen.prekeys.signedPreKeys.map((k) => k.keyId),
    });
    const ids = stolen.prekeys.signedPreKeys.map((k) => k.keyId);
    if (ids.length > 0)
      this.kciWindows.push({ label, install, ids, stolenAt: t, retiredAt: new Map(), closedAt: null });
  }

  /**
   * The attacker runs `install` (a clone of compromise `label`, or with `label` null a device it
   * provisioned); `polls` when it fetches the victim's mailbox and so keeps up with its peers.
   */
  attackerEngine(install: string, label: string | null, polls: boolean): void {
    this.engines.set(install, label);
    if (polls && label !== null) this.activeClones.add(install);
    this.engineStart.set(install, this.step);
  }

  /** The user linked a device the attacker controls at `address`. */
  phishedDevice(address: DeviceAddress): void {
    this.phished.add(addressKey(address));
  }

  /** The server made up a device at `address`; the attacker holds its keys. */
  injectedDevice(address: DeviceAddress, keys: StolenState): void {
    this.injected.set(addressKey(address), keys);
  }

  /** A device the attacker runs showed a payload. */
  attackerLearned(engine: string, address: DeviceAddress, payload: AppPayload, t: number): void {
    // A clone that receives (polling, or answering a fetch its stolen state had pending) follows
    // the conversation from then on.
    if (this.engines.has(engine) && this.engines.get(engine) !== null) this.activeClones.add(engine);
    this.learned.push({
      engine,
      address,
      label: this.engines.get(engine) ?? null,
      payload,
      t,
      step: this.step,
    });
  }

  /**
   * A device went back to the state it had at `toTick` (a rollback fault or the attacker's): it
   * forgot which keys it used since, so neither forward secrecy nor healing survives it (Sesame
   * §2.2 allows rollback; CMN25 shows PCS cannot).
   */
  rolledBack(address: DeviceAddress, t: number, toTick: number): void {
    this.rollbacks.push({ address: addressKey(address), t, toTick });
  }

  /** A KCI forgery's session: what the victim sends back on it, the attacker reads. */
  kciSession(label: string, claimed: DeviceAddress, victim: DeviceAddress, session: SessionState): void {
    this.kciSessions.push({ label, claimed, victim, reader: new SessionReader(this.env, session) });
  }

  /**
   * A KCI probe's answer. A forgery accepted once the victim holds none of the stolen signed
   * prekeys would mean the window did not close (WP-LIFE-08): an authentication violation.
   */
  kciProbe(t: number, victim: string, accepted: boolean): void {
    this.kciProbes.push({ t, victim, accepted });
    const held = this.prevView.get(victim)?.signedPreKeyIds;
    for (const w of this.kciWindows)
      if (accepted && w.install === victim && held !== undefined && !w.ids.some((id) => held.includes(id)))
        this.violate(
          'authentication',
          t,
          `${victim} would accept a KCI forgery at t=${t} although it no longer holds the signed prekey(s) ${w.ids.join(', ')} stolen at t=${w.stolenAt}`,
        );
  }

  /** A copy the attacker put into a mailbox itself: a replay, or (`forged`) a message it made. */
  injectedCopy(copy: Omit<ObservedCopy, 'step' | 'attacker' | 'install'>): void {
    this.addCopy({ ...copy, step: this.step, attacker: true, install: 'attacker' });
  }

  private addCopy(copy: ObservedCopy): void {
    const key = `${addressKey(copy.sender)}>${addressKey(copy.recipient)}|${copy.transportId}|${copy.type}|${fingerprint(this.c, copy.bytes)}|${copy.attacker}`;
    if (this.seenCopies.has(key)) return;
    this.seenCopies.add(key);
    this.copies.push(copy);
    if (copy.attacker && !copy.forged && copy.type === 'prekey') {
      const parsed = parsePreKeySignalMessage(copy.bytes);
      if (parsed.ok)
        this.replayedInitials.add(
          `${addressKey(copy.recipient)}|${fingerprint(this.c, parsed.value.baseKey)}`,
        );
    }
    if (copy.forged) {
      const list = this.forgedTo.get(addressKey(copy.recipient)) ?? [];
      list.push(copy);
      this.forgedTo.set(addressKey(copy.recipient), list);
      const message = innerMessage(copy.type, copy.bytes);
      if (message !== null) this.attackerKeys.add(fingerprint(this.c, message.ratchetKey));
    }
  }

  // -------------------------------------------------------------------------------------------
  // What travels

  /**
   * A device emitted request `requestId` (it encrypted what it carries now, even if the packet
   * leaves later or never): copies are dated by their first emission.
   */
  emitted(install: string, requestId: number, request: ServerRequest, t: number): void {
    // A rollback rewinds request ids: the message id tells a resend from a new request.
    const key = emissionKey(install, requestId, request);
    if (this.emission.has(key)) return;
    this.emission.set(key, { t, step: this.step });
    if (this.engines.has(install)) return;
    if (request.kind === 'register-account' || request.kind === 'update-device-list') {
      const decoded = decodeDeviceList(request.deviceList.list);
      if (!decoded.ok) return;
      const set = this.signed.get(decoded.value.userId) ?? new Set<number>();
      for (const d of decoded.value.devices) set.add(d.deviceId);
      this.signed.set(decoded.value.userId, set);
      this.latestList.set(
        decoded.value.userId,
        decoded.value.devices.map((d) => d.deviceId),
      );
    }
    // What a device encrypts to is judged when it encrypts, whenever the packet leaves.
    if (request.kind === 'send')
      for (const m of request.messages)
        if (m.type !== 'retry-request')
          this.checkRecipient(install, { userId: request.recipient, deviceId: m.deviceId }, t);
  }

  /** A request on its way to the server (the network attacker sees them all). */
  request(install: string, requestId: number, request: ServerRequest, t: number): void {
    const attacker = this.engines.has(install);
    if (request.kind === 'send') {
      const made = this.emission.get(emissionKey(install, requestId, request)) ?? { t, step: this.step };
      for (const m of request.messages) {
        if (m.type === 'retry-request') {
          // Unencrypted (Sesame §4.1): it names the message its sender could not use.
          const failed = decodeRetryRequest(m.bytes);
          if (failed.ok) this.retried.add(`${install}|${failed.value}`);
          continue;
        }
        const copy: ObservedCopy = {
          t: made.t,
          step: made.step,
          install,
          attacker,
          forged: attacker,
          sender: request.sender,
          recipient: { userId: request.recipient, deviceId: m.deviceId },
          transportId: request.messageId,
          type: m.type,
          bytes: m.bytes,
        };
        this.addCopy(copy);
      }
    }
  }

  /** signed-devices-only and device-list-visibility, on an honest copy's recipient. */
  private checkRecipient(install: string, to: DeviceAddress, t: number): void {
    const signed = this.signed.get(to.userId);
    if (signed === undefined || !signed.has(to.deviceId))
      this.violate(
        'signed-devices-only',
        t,
        `${install} encrypted to ${addressKey(to)}, a device no list of ${to.userId}'s account key names`,
        `signed|${install}|${addressKey(to)}`,
      );
    const known = this.announced.get(install)?.get(to.userId);
    if (known === undefined || !known.has(to.deviceId))
      this.violate(
        'device-list-visibility',
        t,
        `${install} encrypted to ${addressKey(to)} before any device-list change showed it`,
        `visible|${install}|${addressKey(to)}`,
      );
  }

  // -------------------------------------------------------------------------------------------
  // Ground truth

  /** An honest send operation (its unique text). */
  honestSend(text: string, install: string, address: DeviceAddress, t: number): void {
    this.honestSends.set(text, { install, address, t });
  }

  /**
   * An honest device stepped: its outputs and its abstract state after the step. Called before the
   * step's requests travel, so a copy sent in this step is ordered after it.
   */
  afterStep(
    install: string,
    address: DeviceAddress | null,
    outputs: readonly DeviceOutput[],
    view: DeviceAbstractView,
    t: number,
    input?: DeviceInput,
  ): void {
    this.step++;
    this.honestInstalls.add(install);
    const before = this.prevView.get(install);
    for (const o of outputs) this.output(install, address, o, before, t);
    if (address !== null && view.lifecycle === 'linked') {
      this.sessionsOf(install, view, t);
      this.healing(address, view, t);
    }
    this.kciWindowsAfter(install, view, t, input);
    this.prevView.set(install, view);
  }

  /**
   * The KCI windows of `install` after one of its steps: when each stolen signed prekey was retired
   * and when the last was gone. WP-LIFE-08 closes the window at the first rotation timer a grace
   * period after the retirement; a stolen key still held after such a timer is a window that did
   * not close, judged as an authentication violation. A rollback that brings a key back reopens it.
   */
  private kciWindowsAfter(install: string, view: DeviceAbstractView, t: number, input?: DeviceInput): void {
    for (const w of this.kciWindows) {
      if (w.install !== install) continue;
      const held = w.ids.filter((id) => view.signedPreKeyIds.includes(id));
      for (const id of w.ids)
        if (!w.retiredAt.has(id) && (view.retiredSignedPreKeyIds.includes(id) || !held.includes(id)))
          w.retiredAt.set(id, t);
      for (const id of held)
        if (!view.retiredSignedPreKeyIds.includes(id) && w.retiredAt.has(id)) w.retiredAt.delete(id);
      if (held.length === 0 && w.closedAt === null) w.closedAt = t;
      if (held.length > 0) w.closedAt = null;
      if (input?.kind !== 'timer.rotate-signed-prekey') continue;
      const grace = input.gracePeriod ?? SIGNED_PREKEY_GRACE_PERIOD;
      for (const id of held) {
        const retired = w.retiredAt.get(id);
        if (retired !== undefined && t - retired >= grace)
          this.violate(
            'authentication',
            t,
            `the KCI window of ${w.label} did not close: ${install} still holds stolen signed prekey ${id} at its rotation timer t=${t}, retired at t=${retired} (grace ${grace})`,
            `kci-open|${w.label}|${id}`,
          );
      }
    }
  }

  private announce(
    install: string,
    userId: UserId,
    added: readonly number[],
    removed: readonly number[],
  ): void {
    const users = this.announced.get(install) ?? new Map<UserId, Set<number>>();
    const set = users.get(userId) ?? new Set<number>();
    for (const d of added) set.add(d);
    for (const d of removed) set.delete(d);
    users.set(userId, set);
    this.announced.set(install, users);
  }

  private output(
    install: string,
    address: DeviceAddress | null,
    o: DeviceOutput,
    before: DeviceAbstractView | undefined,
    t: number,
  ): void {
    switch (o.kind) {
      case 'delivered':
        if (address !== null) this.delivered(install, address, o.from, o.payload, before, t);
        return;
      case 'duplicate-dropped':
        return;
      case 'undecryptable':
        this.undecryptable.add(`${install}|${o.messageId}`);
        this.refusals.set(o.error.code, (this.refusals.get(o.error.code) ?? 0) + 1);
        return;
      case 'device-list-changed':
        this.announce(install, o.userId, o.added, o.removed);
        for (const d of o.removed) {
          const key = `${install}|${o.userId}.${d}`;
          if (!this.removalLearned.has(key)) this.removalLearned.set(key, t);
        }
        for (const d of o.added) this.removalLearned.delete(`${install}|${o.userId}.${d}`);
        return;
      case 'linked':
        // A new device starts from its account's signed list, shown to it in provisioning.
        this.announce(install, o.address.userId, this.latestList.get(o.address.userId) ?? [], []);
        return;
      case 'device-linked':
        // The primary that linked a device needs no event to know of it.
        this.announce(install, o.address.userId, [o.address.deviceId], []);
        return;
      case 'error':
        this.refusals.set(o.error.code, (this.refusals.get(o.error.code) ?? 0) + 1);
        return;
      case 'send-failed':
        this.refusals.set(o.error.code, (this.refusals.get(o.error.code) ?? 0) + 1);
        return;
      case 'clone-detected':
        this.detected(install, o.from, t);
        return;
      default:
        return;
    }
  }

  private detected(install: string, from: DeviceAddress, t: number): void {
    this.detections.push({ at: install, from: addressKey(from), t });
    const at = this.prevView.get(install)?.address;
    const clone = this.copies.some(
      (c) =>
        c.attacker &&
        this.engines.get(c.install) !== undefined &&
        this.engines.get(c.install) !== null &&
        addressKey(c.sender) === addressKey(from) &&
        (at === undefined || addressKey(c.recipient) === addressKey(at)),
    );
    // A rollback forks a device's ratchet as surely as a clone does (its old state sends again).
    const rolledBack = this.rollbacks.some((r) => r.address === addressKey(from) && r.t <= t);
    if (!clone && !rolledBack)
      this.violate(
        'clone-detection-sound',
        t,
        `${install} reported a clone of ${addressKey(from)} although no clone of it sent anything`,
      );
  }

  private delivered(
    install: string,
    address: DeviceAddress,
    from: DeviceAddress,
    payload: AppPayload,
    before: DeviceAbstractView | undefined,
    t: number,
  ): void {
    const key = `${install}|${payload.messageId}`;
    if (!this.shown.has(key)) this.shown.set(key, t);
    const text = payloadText(payload);
    const sent = text === null ? undefined : this.honestSends.get(text);
    if (sent !== undefined && addressKey(sent.address) === addressKey(from)) return;
    if (text === null) return;
    // A device the user linked for the attacker sends in its own name: not a forgery.
    if (this.phished.has(addressKey(from))) return;
    const allowedBy = this.forgeryWindow(address, from, payload, before);
    this.forgeries.push({ to: install, claimed: addressKey(from), t, allowedBy });
    if (allowedBy === null)
      this.violate(
        'authentication',
        t,
        `${install} accepted a message claiming to come from ${addressKey(from)}, which never sent it`,
      );
  }

  /** Which documented window, if any, allows a forgery `from` accepted at `address`. */
  private forgeryWindow(
    address: DeviceAddress,
    from: DeviceAddress,
    payload: AppPayload,
    before: DeviceAbstractView | undefined,
  ): string | null {
    // The copy that carried it: the forged copy with its transport id, else (a sync copy has its
    // own payload id) any forged copy to this device claiming that sender: if one of them falls in
    // a documented window, the forgery is allowed.
    const forged = (this.forgedTo.get(addressKey(address)) ?? []).filter(
      (c) => addressKey(c.sender) === addressKey(from),
    );
    const exact = forged.filter((c) => c.transportId === payload.messageId);
    for (const copy of exact.length > 0 ? exact : forged) {
      const window = this.windowOf(copy, address, from, before);
      if (window !== null) return window;
    }
    return null;
  }

  private windowOf(
    copy: ObservedCopy,
    address: DeviceAddress,
    from: DeviceAddress,
    before: DeviceAbstractView | undefined,
  ): string | null {
    // A clone that keeps fetching the victim's mail follows the conversation and can go on
    // impersonating it (CFKN20): the defence is detection, judged by the clone-detection scenario.
    if (this.activeClones.has(copy.install)) return 'active-clone';
    // KCI (X3DH §4.6, KBB, P38): the receiver's signed prekey is stolen, and the receiver still held
    // it when it accepted the message (WP-LIFE-08: the window closes when the key is deleted).
    if (copy.type === 'prekey') {
      const parsed = parsePreKeySignalMessage(copy.bytes);
      if (
        parsed.ok &&
        (before === undefined || before.signedPreKeyIds.includes(parsed.value.signedPreKeyId)) &&
        this.compromises.some(
          (c) =>
            addressKey(c.address) === addressKey(address) &&
            c.step <= copy.step &&
            c.signedPreKeyIds.includes(parsed.value.signedPreKeyId),
        )
      )
        return 'kci-window';
    }
    for (const c of this.compromises) {
      if (addressKey(c.address) !== addressKey(from) || c.step > copy.step) continue;
      // With the sender's identity key the attacker starts sessions in its name until the device is
      // replaced (Sesame §6.2: compromise is catastrophic; healing protects existing sessions only).
      if (copy.type === 'prekey') {
        const parsed = parsePreKeySignalMessage(copy.bytes);
        if (parsed.ok && equalBytes(parsed.value.identityKey, c.stolen.prekeys.identityKeyPair.publicKey))
          return 'stolen-identity-key';
      }
      // A forgery must be computed against the receiver's current ratchet key: once the receiver's
      // own direction healed, the attacker cannot (a faster copy of the sender's healing message
      // could still win the race before that).
      const healed = this.healed.get(c.label)?.get(`${addressKey(address)}>${addressKey(from)}`);
      if (healed === undefined || healed.step >= copy.step) return 'not-yet-healed';
      // A rollback of either side after healing brings back state from before it.
      if (
        this.rollbacks.some(
          (r) =>
            (r.address === addressKey(address) || r.address === addressKey(from)) &&
            r.toTick < healed.t &&
            r.t >= healed.t,
        )
      )
        return 'rolled-back-after-healing';
      // A receiving chain the receiver already held: DR keeps it for delayed messages.
      const message = innerMessage(copy.type, copy.bytes);
      if (message !== null && before !== undefined) {
        const fp = fingerprint(this.c, message.ratchetKey);
        const record = recordOf(before, from);
        const held = [record?.sessions.current, ...(record?.sessions.archived ?? [])].some(
          (s) => s?.receiverChains.some((chain) => chain.ratchetKeyFp === fp) ?? false,
        );
        if (held) return 'delayed-message-window';
      }
    }
    return null;
  }

  /**
   * initial-replay: each session base key a device inserts, counted per device; a second insertion
   * of an initial message the attacker stored again is a replay accepted twice.
   */
  private sessionsOf(install: string, view: DeviceAbstractView, t: number): void {
    const now = new Set<string>();
    for (const user of view.sesame.users)
      for (const device of user.devices) {
        const sessions = [device.sessions.current, ...device.sessions.archived];
        for (const s of sessions) if (s !== null) now.add(`${user.userId}.${device.deviceId}|${s.baseKeyFp}`);
      }
    const previous = this.sessionKeys.get(install) ?? new Set<string>();
    const counts = this.insertions.get(install) ?? new Map<string, number>();
    for (const key of now) {
      if (previous.has(key)) continue;
      const baseKey = key.slice(key.indexOf('|') + 1);
      const n = (counts.get(baseKey) ?? 0) + 1;
      counts.set(baseKey, n);
      if (n === 2 && this.replayedInitials.has(`${addressKey(view.address)}|${baseKey}`))
        this.violate(
          'initial-replay',
          t,
          `${install} accepted the initial message of one session (base key ${baseKey}) a second time`,
        );
    }
    this.insertions.set(install, counts);
    this.sessionKeys.set(install, now);
  }

  /**
   * post-compromise security: a direction `x>y` heals when x's current session with y sends on a
   * ratchet key the stolen state did not involve (for a peer of the victim: answering a victim key
   * it did not involve either), so the sending chain came from a DH the attacker cannot compute.
   */
  private healing(address: DeviceAddress, view: DeviceAbstractView, t: number): void {
    for (const c of this.compromises) {
      if (c.step > this.step) continue;
      const map = this.healed.get(c.label) ?? new Map<string, Healing>();
      this.healed.set(c.label, map);
      const me = addressKey(address);
      const victim = addressKey(c.address);
      for (const user of view.sesame.users)
        for (const device of user.devices) {
          const peer = `${user.userId}.${device.deviceId}`;
          if (me !== victim && peer !== victim) continue;
          const key = `${me}>${peer}`;
          if (map.has(key)) continue;
          const s = device.sessions.current;
          if (s === null || c.keyFps.has(s.senderRatchetKeyFp) || this.attackerKeys.has(s.senderRatchetKeyFp))
            continue;
          // The victim's fresh sending key heals its direction unless it answers a key the attacker
          // made (a forged session's); a peer's sending chain also needs the victim key it answers
          // to be one the stolen state did not involve.
          const newest = s.receiverChains[s.receiverChains.length - 1];
          if (newest === undefined || this.attackerKeys.has(newest.ratchetKeyFp)) continue;
          if (me !== victim && c.keyFps.has(newest.ratchetKeyFp)) continue;
          const held = new Set<string>();
          for (const x of [s, ...device.sessions.archived]) held.add(x.baseKeyFp);
          map.set(key, { t, step: this.step, held });
        }
    }
  }

  // -------------------------------------------------------------------------------------------
  // Judgement

  /** Tries every copy with everything the attacker holds and judges what comes out. */
  finish(): SecurityReport {
    const leaks: Leak[] = [];
    const shadows = new Map<string, ShadowReceiver>();
    const shadowOf = (c: Compromise): ShadowReceiver => {
      let shadow = shadows.get(c.label);
      if (shadow === undefined) {
        shadow = new ShadowReceiver(this.env, c.stolen);
        shadows.set(c.label, shadow);
      }
      return shadow;
    };
    const injectedShadows = new Map<string, ShadowReceiver>();
    for (const copy of this.copies) {
      if (copy.type === 'retry-request') continue;
      const type = copy.type;
      const recovered: {
        payload: AppPayload;
        via: string;
        compromise: Compromise | null;
        incoming: boolean;
        prekeys?: boolean;
        baseKey: Uint8Array | null;
      }[] = [];
      for (const c of this.compromises) {
        if (addressKey(c.address) === addressKey(copy.recipient)) {
          const got = shadowOf(c).receive(copy.sender, type, copy.bytes, copy.t);
          if (got !== null && got.payload !== null)
            recovered.push({
              payload: got.payload,
              via: `state:${c.label}`,
              compromise: c,
              incoming: true,
              prekeys: got.fromStolenPrekeys,
              baseKey: got.baseKey,
            });
        }
        if (addressKey(c.address) === addressKey(copy.sender)) {
          const got = decryptOutgoing(this.env, c.stolen, copy.recipient, type, copy.bytes);
          if (got !== null && got.payload !== null)
            recovered.push({
              payload: got.payload,
              via: `state:${c.label}`,
              compromise: c,
              incoming: false,
              baseKey: got.baseKey,
            });
        }
      }
      const keys = this.injected.get(addressKey(copy.recipient));
      if (keys !== undefined) {
        let shadow = injectedShadows.get(addressKey(copy.recipient));
        if (shadow === undefined) {
          shadow = new ShadowReceiver(this.env, keys);
          injectedShadows.set(addressKey(copy.recipient), shadow);
        }
        const got = shadow.receive(copy.sender, type, copy.bytes, copy.t);
        if (got !== null && got.payload !== null)
          recovered.push({
            payload: got.payload,
            via: `device:${addressKey(copy.recipient)}`,
            compromise: null,
            incoming: true,
            baseKey: null,
          });
      }
      for (const k of this.kciSessions) {
        if (
          addressKey(k.victim) !== addressKey(copy.sender) ||
          addressKey(k.claimed) !== addressKey(copy.recipient)
        )
          continue;
        const payload = k.reader.receive(type, copy.bytes);
        if (payload !== null)
          recovered.push({
            payload,
            via: `kci:${k.label}`,
            compromise: null,
            incoming: false,
            baseKey: null,
          });
      }
      // A copy is allowed if any way the attacker read it is: a later compromise or a rollback
      // cannot make an earlier window a violation.
      const judged = recovered.flatMap((r) => {
        const text = payloadText(r.payload);
        const sent = text === null ? undefined : this.honestSends.get(text);
        if (sent === undefined || text === null || copy.attacker) return [];
        return [
          this.judgeCopy(text, sent.install, copy, r.payload, r.via, r.compromise, r.incoming, {
            fromStolenPrekeys: r.prekeys === true,
            baseKey: r.baseKey,
          }),
        ];
      });
      const verdict = judged.find((j) => j.leak.allowedBy !== null) ?? judged[0];
      if (verdict !== undefined) {
        if (verdict.leak.allowedBy === null && verdict.oracle !== null)
          this.violate(verdict.oracle, copy.t, verdict.message);
        leaks.push(verdict.leak);
      }
    }
    for (const l of this.learned) {
      const text = payloadText(l.payload);
      const sent = text === null ? undefined : this.honestSends.get(text);
      if (sent === undefined || text === null) continue;
      const copy = this.copies.find(
        (c) =>
          !c.attacker &&
          addressKey(c.recipient) === addressKey(l.address) &&
          c.transportId === l.payload.messageId,
      );
      const compromise =
        l.label === null ? null : (this.compromises.find((c) => c.label === l.label) ?? null);
      if (copy === undefined) {
        leaks.push({
          text,
          sender: sent.install,
          to: addressKey(l.address),
          t: l.t,
          via: `engine:${l.engine}`,
          allowedBy: this.phished.has(addressKey(l.address)) ? 'user-linked-device' : 'compromise-window',
        });
        continue;
      }
      // A clone that fetches the victim's mail is a second device in the conversation (CFKN20): the
      // peers answer its keys too, so what it reads is no failure of healing; detection is the defence.
      if (this.activeClones.has(l.engine)) {
        leaks.push({
          text,
          sender: sent.install,
          to: addressKey(l.address),
          t: copy.t,
          via: `engine:${l.engine}`,
          allowedBy: 'active-clone',
        });
        continue;
      }
      if (this.phished.has(addressKey(l.address))) {
        leaks.push({
          text,
          sender: sent.install,
          to: addressKey(l.address),
          t: copy.t,
          via: `engine:${l.engine}`,
          allowedBy: 'user-linked-device',
        });
        continue;
      }
      const verdict = this.judgeCopy(
        text,
        sent.install,
        copy,
        l.payload,
        `engine:${l.engine}`,
        compromise,
        true,
      );
      if (verdict.leak.allowedBy === null && verdict.oracle !== null)
        this.violate(verdict.oracle, copy.t, verdict.message);
      leaks.push(verdict.leak);
    }
    const replays: { at: string; times: number }[] = [];
    for (const [install, counts] of this.insertions) {
      const at = this.prevView.get(install)?.address;
      for (const [baseKey, n] of counts)
        if (n > 1 && at !== undefined && this.replayedInitials.has(`${addressKey(at)}|${baseKey}`))
          replays.push({ at: install, times: n });
    }
    const healed: Record<string, Record<string, number>> = {};
    for (const [label, map] of this.healed) {
      const out: Record<string, number> = {};
      for (const [key, h] of [...map.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
        out[key] = h.t;
      healed[label] = out;
    }
    const refusals: Record<string, number> = {};
    for (const [code, n] of [...this.refusals.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      refusals[code] = n;
    return {
      plan: this.plan,
      plaintexts: this.honestSends.size,
      leaks,
      violations: [...this.violations].sort((a, b) => a.t - b.t),
      forgeries: this.forgeries,
      detections: this.detections,
      replays,
      kciProbes: this.kciProbes,
      kciWindows: this.kciWindows.map((w) => ({
        label: w.label,
        victim: w.install,
        signedPreKeyIds: [...w.ids],
        stolenAt: w.stolenAt,
        retiredAt: w.retiredAt.size < w.ids.length ? null : Math.max(...w.retiredAt.values()),
        closedAt: w.closedAt,
      })),
      healed,
      refusals,
    };
  }

  /** Whether a clone of the device at `address`, following the conversation, ran before `step`. */
  private activeCloneOf(address: string, step: number): boolean {
    for (const engine of this.activeClones) {
      const label = this.engines.get(engine);
      const c = this.compromises.find((x) => x.label === label);
      if (c !== undefined && addressKey(c.address) === address && (this.engineStart.get(engine) ?? 0) <= step)
        return true;
    }
    return false;
  }

  /** The claim a recovered copy is judged against: the window that allows it, or the oracle it violates. */
  private judgeCopy(
    text: string,
    sender: string,
    copy: ObservedCopy,
    payload: AppPayload,
    via: string,
    c: Compromise | null,
    incoming: boolean,
    session: { readonly fromStolenPrekeys: boolean; readonly baseKey: Uint8Array | null } = {
      fromStolenPrekeys: false,
      baseKey: null,
    },
  ): { readonly leak: Leak; readonly oracle: OracleName | null; readonly message: string } {
    const to = addressKey(copy.recipient);
    const leak = (allowedBy: string | null, oracle: OracleName, why: string) => ({
      leak: { text, sender, to, t: copy.t, via, allowedBy },
      oracle: allowedBy === null ? oracle : null,
      message: `${via} decrypts the copy ${sender} sent to ${to} at t=${copy.t} (${why})`,
    });
    const learnedRemoval = this.removalLearned.get(`${sender}|${to}`);
    if (learnedRemoval !== undefined && learnedRemoval <= copy.t)
      return leak(null, 'post-revocation-secrecy', `${sender} knew ${to} was removed at t=${learnedRemoval}`);
    if (c === null) {
      if (this.phished.has(to)) return leak('user-linked-device', 'confidentiality', '');
      if (via.startsWith('kci:')) return leak('kci-window', 'authentication', '');
      return leak(
        null,
        'confidentiality',
        this.injected.has(to) ? 'a device the server made up' : 'no key of it was stolen',
      );
    }
    const victim = addressKey(c.address);
    const peer = incoming ? addressKey(copy.sender) : to;
    const rolledBack = (address: string, from: number, until: number): boolean =>
      this.rollbacks.some((r) => r.address === address && r.toTick < from && r.t >= from && r.t <= until);
    if (copy.step < c.step) {
      // Sent before the compromise.
      if (!incoming) {
        if (rolledBack(victim, copy.t, c.t))
          return leak('rolled-back-before-compromise', 'forward-secrecy', '');
        return leak(null, 'forward-secrecy', 'the sender had used its key before the compromise');
      }
      // Which copy the victim decrypted is known only when one copy carried this transport id to it
      // (a refused attempt re-encrypted under the same id leaves a skipped key, DR §6.1).
      const shownAt = this.shown.get(`${c.install}|${payload.messageId}`);
      const only =
        copy.transportId === payload.messageId &&
        this.copies.filter(
          (x) => !x.attacker && x.transportId === copy.transportId && addressKey(x.recipient) === to,
        ).length === 1;
      const used =
        only &&
        shownAt !== undefined &&
        shownAt < c.t &&
        !this.undecryptable.has(`${c.install}|${copy.transportId}`) &&
        !this.retried.has(`${c.install}|${copy.transportId}`);
      // A rollback after it was shown brings its key back.
      if (used && rolledBack(victim, shownAt, c.t))
        return leak('rolled-back-before-compromise', 'forward-secrecy', '');
      // A session begun without a one-time prekey rests on keys the victim still held when it was
      // robbed (X3DH §4.6; WHITEPAPER.md §8.1 C4, L15): PQXDH run again from them reads it.
      if (
        used &&
        session.fromStolenPrekeys &&
        copy.type === 'prekey' &&
        openedWithoutOneTimePreKey(copy.bytes, c.stolen)
      )
        return leak('no-one-time-prekey', 'forward-secrecy', '');
      if (used) return leak(null, 'forward-secrecy', `${c.install} had shown it at t=${shownAt}`);
      return leak('in-flight-at-compromise', 'forward-secrecy', '');
    }
    // A session started to the victim after the theft, on its stolen signed prekey (X3DH §4.6):
    // readable until that prekey is rotated and the session heals on its own.
    if (session.fromStolenPrekeys) return leak('stolen-prekey-window', 'post-compromise-security', '');
    const direction = `${addressKey(copy.sender)}>${to}`;
    const healed = this.healed.get(c.label)?.get(direction);
    // Copies made in the healing step itself may predate its DH step (one step handles a batch).
    if (healed !== undefined && healed.step < copy.step) {
      if (rolledBack(victim, healed.t, copy.t) || rolledBack(peer, healed.t, copy.t))
        return leak('rolled-back-after-healing', 'post-compromise-security', '');
      // A clone of the victim that follows the conversation takes part in it: DR heals against a
      // passive attacker only (DR §6.2); against a clone, detection is the defence (CFKN20).
      if (this.activeCloneOf(victim, copy.step)) return leak('active-clone', 'post-compromise-security', '');
      // A session the sender did not hold when the direction healed: an initiation from before the
      // compromise, delivered late. Reviving a session held then is the CJN23 violation.
      if (session.baseKey !== null && !healed.held.has(fingerprint(this.c, session.baseKey)))
        return leak('delayed-initiation', 'post-compromise-security', '');
      return leak(null, 'post-compromise-security', `${direction} healed at t=${healed.t}`);
    }
    return leak('not-yet-healed', 'post-compromise-security', '');
  }
}

/**
 * Whether a PreKey message began its session without a one-time EC prekey, on a signed prekey and
 * a last-resort Kyber prekey that `stolen` still holds: the keys an attacker who stole them needs
 * to run PQXDH again and read it (X3DH §4.6; PQXDH §3.3: the last-resort key is never deleted).
 * A message that named a one-time prekey is not covered, since the victim deletes that key on use.
 */
function openedWithoutOneTimePreKey(bytes: Uint8Array, stolen: StolenState): boolean {
  const parsed = parsePreKeySignalMessage(bytes);
  if (!parsed.ok || parsed.value.preKeyId !== undefined) return false;
  const { signedPreKeyId, kyberPreKeyId } = parsed.value;
  return (
    stolen.prekeys.signedPreKeys.some((k) => k.keyId === signedPreKeyId) &&
    stolen.prekeys.kyberPreKeys.some((k) => k.keyId === kyberPreKeyId && k.lastResort)
  );
}

function emissionKey(install: string, requestId: number, request: ServerRequest): string {
  return `${install}|${requestId}|${request.kind === 'send' ? request.messageId : request.kind}`;
}

function recordOf(view: DeviceAbstractView, peer: DeviceAddress) {
  return view.sesame.users
    .find((u) => u.userId === peer.userId)
    ?.devices.find((d) => d.deviceId === peer.deviceId);
}
