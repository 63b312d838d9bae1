/**
 * The simulated network and clock (WHITEPAPER.md, "Simulator"; design "Simulator shape").
 *
 * - **Time** is integer ticks (1 tick = 1 ms). The {@link EventQueue} orders events by `(t, seq)`,
 *   `seq` being a run-wide counter assigned at scheduling, so equal times keep scheduling order.
 * - **Links.** Each device has one link to the server. A link is down while the device is offline
 *   or partitioned, or while the server is down; a packet sent or arriving on a down link is lost.
 * - **Packets** are drawn from the `network` stream as they are sent: lost with probability `loss`,
 *   delivered twice with probability `duplication`, delayed by {@link BASE_LATENCY} plus an
 *   exponential delay with mean `delayMean` (independent per copy, so packets reorder).
 * - **Server crash/restart**: the server's epoch increments; packets of an older epoch (in flight
 *   at the crash) are lost on arrival. Mailboxes and all server state survive (they are durable).
 * - **Tampering** (`corruption`): a ciphertext envelope in a fetch response is altered on its way
 *   to the device: a flipped bit in the last block of the body (`flip`), or the counter pushed
 *   40 000 ahead with the MAC unchanged (`jump`).
 *
 * The network is fault-free during setup (accounts, initial links, contact links) and again in the
 * liveness phase, when it heals: no loss, duplication, tampering or extra delay.
 * @module
 */
import { parseSignalMessage, encodeSignalMessage } from '../spec/wire.js';
import type { Envelope } from '../spec/server-api.js';
import type { FaultConfig } from './api.js';
import type { Stream } from './streams.js';

/** Minimum one-way latency of every packet (ticks). */
export const BASE_LATENCY = 5;

/** How far a `jump` tamper pushes a counter: well beyond MAX_FORWARD_JUMPS (25 000). */
export const TAMPER_JUMP = 40_000;

/** A min-heap of events ordered by `(t, seq)`. */
export class EventQueue<E> {
  private readonly heap: Entry<E>[] = [];
  private nextSeq = 0;

  get size(): number {
    return this.heap.length;
  }

  /** Schedules `event` at tick `t`; returns its sequence number. */
  push(t: number, event: E): number {
    const seq = this.nextSeq++;
    const heap = this.heap;
    heap.push({ t, seq, event });
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const p = heap[parent];
      const c = heap[i];
      if (p === undefined || c === undefined || !less(c, p)) break;
      heap[parent] = c;
      heap[i] = p;
      i = parent;
    }
    return seq;
  }

  /** Removes and returns the earliest event. */
  pop(): { readonly t: number; readonly seq: number; readonly event: E } | undefined {
    const heap = this.heap;
    const top = heap[0];
    const last = heap.pop();
    if (top === undefined || last === undefined) return undefined;
    const n = heap.length;
    if (n > 0) {
      // Sift `last` down from the root; every index read below is < n, so the casts hold.
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        let best = last;
        if (l < n && less(heap[l] as Entry<E>, best)) {
          m = l;
          best = heap[l] as Entry<E>;
        }
        if (r < n && less(heap[r] as Entry<E>, best)) m = r;
        if (m === i) break;
        heap[i] = heap[m] as Entry<E>;
        i = m;
      }
      heap[i] = last;
    }
    return top;
  }

  /** The earliest time scheduled, or undefined. */
  peekTime(): number | undefined {
    return this.heap[0]?.t;
  }

  /** Drops every event for which `keep` is false. */
  filter(keep: (event: E) => boolean): void {
    const kept = this.heap.filter((e) => keep(e.event));
    kept.sort((a, b) => a.t - b.t || a.seq - b.seq);
    this.heap.length = 0;
    this.heap.push(...kept);
  }
}

interface Entry<E> {
  readonly t: number;
  readonly seq: number;
  readonly event: E;
}

function less(a: { t: number; seq: number }, b: { t: number; seq: number }): boolean {
  return a.t < b.t || (a.t === b.t && a.seq < b.seq);
}

/** What happens to one packet. */
export interface PacketFate {
  /** Arrival delays of each copy (empty: lost). */
  readonly delays: readonly number[];
  readonly lost: boolean;
  readonly duplicated: boolean;
}

/** The network's per-packet draws under the current fault rates. */
export class Network {
  private healed = false;
  /** Per-packet faults start with the fault phase proper, after setup (see run.ts). */
  private active = false;

  constructor(
    private readonly stream: Stream,
    private readonly faults: FaultConfig,
  ) {}

  /** Setup is over: per-packet faults begin. */
  activate(): void {
    this.active = true;
  }

  /** The liveness phase: no more loss, duplication, tampering or extra delay. */
  heal(): void {
    this.healed = true;
  }

  get isHealed(): boolean {
    return this.healed;
  }

  /** Draws the fate of one packet. */
  fate(): PacketFate {
    if (this.healed || !this.active) return { delays: [BASE_LATENCY], lost: false, duplicated: false };
    const f = this.faults;
    const lost = this.stream.chance(f.loss);
    if (lost) return { delays: [], lost: true, duplicated: false };
    const duplicated = this.stream.chance(f.duplication);
    const delays = [BASE_LATENCY + this.stream.exponential(f.delayMean)];
    if (duplicated) delays.push(BASE_LATENCY + this.stream.exponential(f.delayMean));
    return { delays, lost: false, duplicated };
  }

  /** Draws whether to tamper with one ciphertext envelope, and how. */
  tamperMode(): 'flip' | 'jump' | null {
    if (this.healed || !this.active) return null;
    const p = this.faults.corruption ?? 0;
    if (!this.stream.chance(p)) return null;
    return this.stream.chance(0.5) ? 'flip' : 'jump';
  }

  /** A bit position for a `flip` tamper: byte offset from the end of the body, and the bit. */
  flipPosition(): { readonly back: number; readonly bit: number } {
    return { back: this.stream.int(16), bit: this.stream.int(8) };
  }
}

/**
 * Tampers with a `whisper` envelope (a SignalMessage). `flip` flips one bit in the last 16 bytes
 * before the MAC (the body's last AES block, since the ciphertext is the last protobuf field);
 * `jump` re-encodes the message with its counter {@link TAMPER_JUMP} ahead and the old MAC.
 * Returns null when the bytes do not parse (then nothing is altered).
 */
export function tamperEnvelope(
  envelope: Envelope,
  mode: 'flip' | 'jump',
  position: { readonly back: number; readonly bit: number },
): Envelope | null {
  if (envelope.type !== 'whisper') return null;
  const parsed = parseSignalMessage(envelope.bytes);
  if (!parsed.ok) return null;
  if (mode === 'flip') {
    const bytes = envelope.bytes.slice();
    const at = bytes.length - 9 - position.back;
    if (at < 1) return null;
    bytes[at] = (bytes[at] ?? 0) ^ (1 << position.bit);
    return { ...envelope, bytes };
  }
  const m = parsed.value;
  const bytes = encodeSignalMessage(
    {
      ratchetKey: m.ratchetKey,
      counter: m.counter + TAMPER_JUMP,
      previousCounter: m.previousCounter,
      ciphertext: m.ciphertext,
    },
    () => m.mac,
  );
  return { ...envelope, bytes };
}
