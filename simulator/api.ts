/**
 * The simulator's public contract (WHITEPAPER.md, "Simulator", WP-SIM rules): configuration,
 * schedules, engines, trace records and results. Pure data and interfaces; no Node APIs, so the
 * whole simulator runs in a browser too (viz/ runs it in a web worker).
 *
 * One seed and one config determine everything: the seed is split into named PRNG streams
 * (network, workload, keys, faults); time is integer virtual ticks (1 tick = 1 ms of simulated
 * time); the event queue is ordered by (time, sequence). Same seed + config + commit ⇒ the same
 * trace bytes, whichever crypto provider computes.
 * @module
 */
import type { BugName } from '../spec/bugs.js';
import type { DeviceAddress, UserId } from '../spec/identity.js';

/** Which engine(s) back the nodes. `both` runs impl/ and model/ in lockstep and stops at the first divergence. */
export type EngineChoice = 'impl' | 'model' | 'both';

/**
 * The statechart states a model machine passed through while it handled one input (trace field
 * `model` on device `step` and server `request` events when the model engine ran).
 */
export interface ModelStepRecord {
  /** The state before the input, then the state after each microstep (dotted ids from the root). */
  readonly path: readonly string[];
  /** The state after the input. */
  readonly state: string;
}

/** Fault rates and windows for a run (all probabilities per packet or per opportunity, 0..1). */
export interface FaultConfig {
  /** Probability a packet (request or response) is lost. */
  readonly loss: number;
  /** Probability a packet is delivered twice. */
  readonly duplication: number;
  /** Extra delay drawn per packet: exponential with this mean (ticks); delays reorder packets. */
  readonly delayMean: number;
  /** Partitions: device↔server link down windows, expected number per device over the fault phase. */
  readonly partitions: number;
  /** Device offline windows (no polling, link down), expected number per device. */
  readonly offline: number;
  /** Server crash-and-restart events over the fault phase (mailboxes are durable; in-flight packets are lost). */
  readonly serverCrashes: number;
  /** Device state loss events (the device comes back as a reinstall). */
  readonly stateLoss: number;
  /** Device rollback events (the device's state returns to an older snapshot). */
  readonly rollback: number;
  /**
   * Probability that a network attacker tampers with a ciphertext envelope on its way to a device:
   * a flipped bit in the body or a counter pushed beyond MAX_FORWARD_JUMPS (absent = 0). The
   * receiver must reject it at the MAC or forward-jump check and recover by a retry request.
   */
  readonly corruption?: number;
}

/** No faults at all. */
export const NO_FAULTS: FaultConfig = Object.freeze({
  loss: 0,
  duplication: 0,
  delayMean: 0,
  partitions: 0,
  offline: 0,
  serverCrashes: 0,
  stateLoss: 0,
  rollback: 0,
  corruption: 0,
});

/** The population and the work it does. */
export interface WorkloadConfig {
  readonly users: number;
  readonly devicesPerUser: number;
  /** Contacts per user (each pair started from a contact link). */
  readonly contactsPerUser: number;
  /** Total messages sent over the fault phase. */
  readonly messages: number;
  readonly attachments: number;
  /** Devices linked during the run, revoked during the run, reinstalled during the run. */
  readonly links: number;
  readonly revocations: number;
  readonly reinstalls: number;
  /** One-time EC and Kyber prekeys per device (replenished when low). */
  readonly oneTimePreKeys: number;
  readonly oneTimeKyberPreKeys: number;
  /** Length of the fault phase in ticks; a diurnal curve shapes send times when set. */
  readonly durationTicks: number;
  readonly diurnal: boolean;
}

/**
 * Signed prekey rotation during a run (WP-LIFE-07, WP-LIFE-08): every linked device's rotation
 * timer fires every `interval` ticks from its link, and retired keys are deleted once `gracePeriod`
 * ticks have passed. Applications use SIGNED_PREKEY_ROTATION_INTERVAL and SIGNED_PREKEY_GRACE_PERIOD
 * (days); a run of a few minutes needs shorter ones to rotate at all.
 */
export interface SignedPreKeyRotationConfig {
  readonly interval: number;
  readonly gracePeriod: number;
}

/** A complete, self-describing run configuration (what a trace header records). */
export interface SimConfig {
  readonly preset: string | null;
  readonly seed: number;
  readonly engine: EngineChoice;
  readonly workload: WorkloadConfig;
  readonly faults: FaultConfig;
  /** `signed` (default) or Sesame's `server`-authoritative device lists. */
  readonly deviceListAuth: 'signed' | 'server';
  /**
   * The hardening flags every device runs with (spec/security-mode.ts `SecurityOptions`, beside
   * `deviceListAuth`): CJN23's sequential sessions, the KBB initial-message replay cache and
   * CFKN20-style clone detection. Presets turn them all on (the hardened default).
   */
  readonly sequentialSessions: boolean;
  readonly initialReplayCache: boolean;
  readonly cloneDetection: boolean;
  /** An adversary (simulator/adversary.ts) and its plan; absent in an honest run. */
  readonly adversary?: AdversaryPlan;
  /** Planted bugs, read by both engines. */
  readonly bugs: readonly BugName[];
  /** Ticks the liveness phase may take to converge after everything heals. */
  readonly livenessBound: number;
  /** `full` records every event with abstract state; `summary` records counters only (peak-day). */
  readonly traceMode: 'full' | 'summary';
  /** Device polling and resend intervals (ticks). */
  readonly pollInterval: number;
  readonly resendInterval: number;
  /** Signed prekey rotation; absent: devices never rotate (no preset runs long enough to need it). */
  readonly signedPreKeyRotation?: SignedPreKeyRotationConfig;
}

/**
 * One explicit input of a run: a workload operation or a fault, at a tick. A run is either drawn from
 * the seed (and its schedule recorded) or given an explicit schedule (replay, shrink): the header
 * then carries it, and the run uses it instead of drawing.
 */
export type ScheduleEntry =
  | {
      readonly t: number;
      readonly op: 'send';
      readonly from: string;
      readonly to: readonly UserId[];
      readonly text: string;
    }
  | {
      readonly t: number;
      readonly op: 'attachment';
      readonly from: string;
      readonly to: readonly UserId[];
      readonly size: number;
    }
  | { readonly t: number; readonly op: 'link'; readonly primary: string; readonly device: string }
  | { readonly t: number; readonly op: 'revoke'; readonly primary: string; readonly device: string }
  | { readonly t: number; readonly op: 'reinstall'; readonly device: string }
  | { readonly t: number; readonly op: 'partition'; readonly device: string; readonly until: number }
  | { readonly t: number; readonly op: 'offline'; readonly device: string; readonly until: number }
  | { readonly t: number; readonly op: 'server-crash'; readonly until: number }
  | { readonly t: number; readonly op: 'state-loss'; readonly device: string }
  | { readonly t: number; readonly op: 'rollback'; readonly device: string; readonly toTick: number };

/** A device address as adversary steps name it. */
export interface AttackAddress {
  readonly userId: UserId;
  readonly deviceId: number;
}

/**
 * One scripted adversary action (simulator/adversary.ts), at a tick. Installs are named as in the
 * schedule (`u0/1`); `label` names a compromise so later steps can use what it stole.
 */
export type AttackStep =
  /** Device compromise: copy the install's whole state (sessions, identity and prekeys). */
  | { readonly t: number; readonly op: 'compromise'; readonly device: string; readonly label: string }
  /** Run a copy of a stolen state as a second device at the victim's address. */
  | {
      readonly t: number;
      readonly op: 'clone';
      readonly label: string;
      readonly name: string;
      /** Whether the clone fetches the victim's mailbox (it always gets answers to its own requests). */
      readonly poll: boolean;
    }
  /** Rollback: put the victim of `label` back into the state stolen then (Sesame §2.2 allows it). */
  | { readonly t: number; readonly op: 'rollback'; readonly label: string }
  /** A device the attacker runs (a clone, a phished device) sends a text it wrote to users. */
  | {
      readonly t: number;
      readonly op: 'send-as';
      readonly device: string;
      readonly to: readonly UserId[];
      readonly text: string;
    }
  /** Network: flip one body bit of the next ratchet message from `from` that `to` fetches. */
  | { readonly t: number; readonly op: 'tamper'; readonly from: string; readonly to: string }
  /** Network: drop the next `count` packets of install `device` (either direction). */
  | { readonly t: number; readonly op: 'drop'; readonly device: string; readonly count: number }
  /** Network: hold the next packet of install `device` back by `ticks`. */
  | { readonly t: number; readonly op: 'delay'; readonly device: string; readonly ticks: number }
  /** Malicious server: bundles of `user` lose their one-time prekey until `until`. */
  | { readonly t: number; readonly op: 'withhold-opks'; readonly user: UserId; readonly until: number }
  /**
   * Malicious server: device lists and refusals about `user` name an extra device `deviceId` whose
   * keys the attacker made, and copies to it are kept by the attacker, until `until`.
   */
  | {
      readonly t: number;
      readonly op: 'inject-device';
      readonly user: UserId;
      readonly deviceId: number;
      readonly until: number;
    }
  /** Malicious server: device lists about `user` leave out `deviceId` until `until`. */
  | {
      readonly t: number;
      readonly op: 'hide-device';
      readonly user: UserId;
      readonly deviceId: number;
      readonly until: number;
    }
  /** Malicious server: answers about `user` carry the oldest list it saw, until `until`. */
  | { readonly t: number; readonly op: 'old-list'; readonly user: UserId; readonly until: number }
  /**
   * Malicious server: store again, in the mailbox of install `to`, the `nth` (0-based, in
   * observation order) ciphertext copy addressed to it (`type` filters), reported as coming from
   * `asSender` (default: its real sender).
   */
  | {
      readonly t: number;
      readonly op: 'replay';
      readonly to: string;
      readonly nth: number;
      readonly type: 'prekey' | 'prekey-no-opk' | 'whisper' | 'any';
      readonly asSender: AttackAddress | null;
    }
  /** Malicious server: answer every send of install `device` with a refusal of kind `refusal`, until `until`. */
  | {
      readonly t: number;
      readonly op: 'hostile-refusal';
      readonly device: string;
      readonly refusal: 'unknown-user' | 'mailbox-full';
      readonly until: number;
    }
  /** KCI: with the stolen signed prekey of `label`'s victim, deliver a text claiming to come from install `as`. */
  | {
      readonly t: number;
      readonly op: 'forge-kci';
      readonly label: string;
      readonly as: string;
      readonly text: string;
    }
  /** KCI probe: would the victim of `label` accept such a forgery now? Tried on a throwaway copy of its state. */
  | { readonly t: number; readonly op: 'kci-probe'; readonly label: string; readonly as: string }
  /** QR phishing: `user`'s primary links a device the attacker provisioned, installed as `name`. */
  | { readonly t: number; readonly op: 'phish-link'; readonly user: UserId; readonly name: string };

/** The adversary of a run: a scripted plan, and (swarm) random actions drawn from the seed. */
export interface AdversaryPlan {
  /** The scenario's name, or `swarm` for drawn adversaries. */
  readonly name: string;
  readonly steps: readonly AttackStep[];
  /** Random actions drawn from `lockstep-sim/<seed>/adversary` over the fault phase (0 = none). */
  readonly randomActions: number;
}

/** The security oracles (simulator/oracles.ts), in report order. */
export const ORACLE_NAMES = [
  'confidentiality',
  'forward-secrecy',
  'post-compromise-security',
  'post-revocation-secrecy',
  'authentication',
  'signed-devices-only',
  'initial-replay',
  'clone-detection-sound',
  'device-list-visibility',
] as const;

/** A security oracle's name. */
export type OracleName = (typeof ORACLE_NAMES)[number];

/** One violated claim: which oracle, when, and what happened (ids and addresses, never plaintext). */
export interface SecurityViolation {
  readonly oracle: OracleName;
  readonly t: number;
  readonly message: string;
}

/** A plaintext the attacker could decrypt, and whether a documented window allows it. */
export interface Leak {
  /** The send operation's marker text (the oracle's ground truth, never shown in traces). */
  readonly text: string;
  /** The honest sender's install and the copy's recipient address. */
  readonly sender: string;
  readonly to: string;
  /** When the copy was sent. */
  readonly t: number;
  /** How: `state:<label>` (stolen state), `engine:<install>` (a device the attacker runs), `device:<address>` (keys it made). */
  readonly via: string;
  /** `null` when a violation, else the documented window that allows it. */
  readonly allowedBy: string | null;
}

/** What the oracles found in an adversarial run. */
export interface SecurityReport {
  readonly plan: string;
  /** Honest plaintexts sent. */
  readonly plaintexts: number;
  readonly leaks: readonly Leak[];
  readonly violations: readonly SecurityViolation[];
  /** Forged messages honest devices accepted (claimed sender, receiver, window or null). */
  readonly forgeries: readonly {
    readonly to: string;
    readonly claimed: string;
    readonly t: number;
    readonly allowedBy: string | null;
  }[];
  /** `clone-detected` outputs: device, peer, time. */
  readonly detections: readonly { readonly at: string; readonly from: string; readonly t: number }[];
  /** Initial messages a device accepted more than once (receiver, times). */
  readonly replays: readonly { readonly at: string; readonly times: number }[];
  /** KCI probes in time order: whether the victim would accept a forgery at that tick. */
  readonly kciProbes: readonly { readonly t: number; readonly victim: string; readonly accepted: boolean }[];
  /**
   * The KCI windows (WP-LIFE-08), one per compromise that stole signed prekeys: which keys, when
   * stolen, when the last of them was retired (a newer key confirmed by the server; null: not yet)
   * and when the victim held none of them any more (null: still open at the end).
   */
  readonly kciWindows: readonly {
    readonly label: string;
    readonly victim: string;
    readonly signedPreKeyIds: readonly number[];
    readonly stolenAt: number;
    readonly retiredAt: number | null;
    readonly closedAt: number | null;
  }[];
  /** Per compromise label: when each direction of a pair healed (first tick), `from>to`. */
  readonly healed: Readonly<Record<string, Readonly<Record<string, number>>>>;
  /** Errors honest devices reported about attacker input (code → count). */
  readonly refusals: Readonly<Record<string, number>>;
}

/** Where a property holds and where it is allowed not to (its fault envelope). */
export interface PropertySpec {
  readonly name: string;
  readonly kind: 'always' | 'eventually' | 'sometimes';
  /** Whitepaper rules or checkable properties (P1–P38 of the analysis digest) it pins. */
  readonly rules: readonly string[];
  /** The planted bug proven to make it fail. */
  readonly bug: BugName | null;
  /** Plain words: which faults it tolerates and which exempt a device. */
  readonly envelope: string;
}

/** A property violation. */
export interface Violation {
  readonly property: string;
  readonly t: number;
  readonly seq: number;
  readonly message: string;
  readonly rules: readonly string[];
}

/** A divergence between impl/ and model/ under `both`. */
export interface Divergence {
  readonly t: number;
  readonly seq: number;
  readonly node: string;
  /** What differed: outputs, wire bytes, error, abstract state or draws. */
  readonly field: string;
  readonly impl: string;
  readonly model: string;
}

/** The first line of a trace. */
export interface TraceHeader {
  readonly type: 'header';
  readonly format: 'lockstep-trace';
  readonly formatVersion: number;
  /** SHA-256 over the protocol sources that define behaviour (spec/, impl/, model/, simulator/). */
  readonly behaviourHash: string;
  readonly config: SimConfig;
  /** Present when the run used an explicit schedule (replay of a shrunk run). */
  readonly schedule: readonly ScheduleEntry[] | null;
  /** For information only; never compared. */
  readonly commit: string | null;
}

/** One trace event: `{t, seq, node, kind, ...}` with a vector clock. */
export interface TraceEvent {
  readonly type: 'event';
  readonly t: number;
  readonly seq: number;
  readonly node: string;
  readonly kind: string;
  /** Vector clock: node name → logical time (ShiViz-compatible). */
  readonly vc: Readonly<Record<string, number>>;
  /** Kind-specific fields: message ids, sizes, fingerprints, counters, abstract state, rule IDs. */
  readonly data: Readonly<Record<string, unknown>>;
}

/** Counters of what a run exercised ("sometimes" properties) and of its traffic. */
export type Counters = Readonly<Record<string, number>>;

/** The outcome of a run. */
export interface SimResult {
  readonly header: TraceHeader;
  /** NDJSON lines (header first), byte-stable. */
  readonly lines: readonly string[];
  readonly violations: readonly Violation[];
  readonly divergence: Divergence | null;
  readonly counters: Counters;
  /** The schedule the run used (drawn or explicit): what `shrink` minimises. */
  readonly schedule: readonly ScheduleEntry[];
  /** A one-line command that reproduces this run. */
  readonly repro: string;
  /** What the security oracles found, when the run had an adversary; else null. */
  readonly security: SecurityReport | null;
  /** Simulated delivery latency samples summary (ticks). */
  readonly latency: {
    readonly p50: number;
    readonly p99: number;
    readonly max: number;
    readonly count: number;
  };
  /** Load figures the trace does not carry (benchmarks report them): see {@link LoadFigures}. */
  readonly load: LoadFigures;
}

/**
 * How loaded a run was, for benchmarks. Not part of the trace (so adding a figure never changes
 * trace bytes) and not a property: a run is judged by its invariants.
 */
export interface LoadFigures {
  /** The most envelopes one mailbox held at any time (after each accepted send). */
  readonly peakMailboxDepth: number;
  /** At the end, over live installs: device records holding a current session. */
  readonly activeSessions: number;
  /** Of those, sessions no reply has confirmed yet (still `initiating`). */
  readonly initiatingSessions: number;
  /** Archived sessions held at the end, over live installs. */
  readonly archivedSessions: number;
}

/** A device as the simulator addresses it. */
export interface SimDevice {
  readonly name: string;
  readonly address: DeviceAddress;
}
