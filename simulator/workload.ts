/**
 * The workload of a run (WHITEPAPER.md, "Simulator"): the population, its contact graph, and the
 * schedule of user operations, all drawn from the `workload` stream (simulator/streams.ts).
 *
 * Naming. User `i` is `u<i>` (a valid user id). A device install is named `<user>/<n>`: `/1` is the
 * primary, `/2 …` the devices linked at setup, and later links continue the count. An install that
 * loses its state (a `reinstall` op or a `state-loss` fault) is replaced by the install named with
 * an `r` appended (`u3/2` → `u3/2r`); a lost primary resets the account and every other install of
 * the user is replaced the same way. The names are fixed by these rules, so a schedule drawn here
 * and the run that executes it agree on every name.
 *
 * Setup (accounts, initial links, contact links) is not part of the schedule: it follows from the
 * config and the seed. The schedule holds what shrinking may remove: sends, attachments, links,
 * revocations and reinstalls (and, from simulator/faults.ts, the faults).
 * @module
 */
import type { UserId } from '../spec/identity.js';
import type { ScheduleEntry, WorkloadConfig } from './api.js';
import type { Stream } from './streams.js';

/** The user id of user number `index`. */
export function userIdOf(index: number): UserId {
  return `u${index}`;
}

/** The install name of a user's `n`-th install. */
export function installName(userId: UserId, n: number): string {
  return `${userId}/${n}`;
}

/** The user an install belongs to. */
export function userOfInstall(name: string): UserId {
  const slash = name.indexOf('/');
  return slash < 0 ? name : name.slice(0, slash);
}

/** The install that replaces `name` after a state loss. */
export function replacementOf(name: string): string {
  return `${name}r`;
}

/** Ticks reserved at the start for accounts, initial links and contact links. */
export function setupTicks(workload: WorkloadConfig): number {
  return Math.max(3_000, Math.floor(workload.durationTicks * 0.05));
}

/** Ticks between two account creations during setup. */
export function setupStagger(workload: WorkloadConfig): number {
  return Math.max(1, Math.floor(setupTicks(workload) / 2 / Math.max(1, workload.users)));
}

/** The population: users and the symmetric contact graph. */
export interface Population {
  readonly users: readonly UserId[];
  readonly contacts: Readonly<Record<UserId, readonly UserId[]>>;
}

/**
 * The contact graph: `floor(k/2)` distinct offsets `o` in [1, N/2) drawn once, each connecting
 * every user `i` with `i ± o`; for odd `k` and even `N` the offset N/2 adds one more contact. Every
 * user then has (about) `k` contacts, each pair started from a contact link.
 */
export function drawPopulation(workload: WorkloadConfig, stream: Stream): Population {
  const n = workload.users;
  const users = Array.from({ length: n }, (_, i) => userIdOf(i));
  const sets = users.map(() => new Set<number>());
  const connect = (a: number, b: number): void => {
    if (a === b) return;
    sets[a]?.add(b);
    sets[b]?.add(a);
  };
  const k = Math.min(workload.contactsPerUser, n - 1);
  const half = Math.floor(n / 2);
  const candidates = Array.from({ length: Math.max(0, Math.ceil(n / 2) - 1) }, (_, i) => i + 1);
  const offsets: number[] = [];
  for (let i = 0; i < Math.floor(k / 2) && candidates.length > 0; i++) {
    const at = stream.int(candidates.length);
    offsets.push(candidates[at] ?? 1);
    candidates.splice(at, 1);
  }
  if (k % 2 === 1 && n % 2 === 0 && half >= 1) offsets.push(half);
  else if (k % 2 === 1 && candidates.length > 0) offsets.push(stream.pick(candidates));
  for (let i = 0; i < n; i++) for (const o of offsets) connect(i, (i + o) % n);
  const contacts: Record<UserId, UserId[]> = {};
  users.forEach((u, i) => {
    contacts[u] = [...(sets[i] ?? [])].sort((a, b) => a - b).map(userIdOf);
  });
  return { users, contacts };
}

/** A random marker embedded in every plaintext: what the no-plaintext-at-rest check searches for. */
export const MARKER_PREFIX = '~mk';

/** A fresh marker: `~mk` + 12 hex digits + `~`. */
export function drawMarker(stream: Stream): string {
  return `${MARKER_PREFIX}${stream.hex(12)}~`;
}

/** The plaintext bytes of attachment `text` (its marker first, then a fixed filler up to `size`). */
export function attachmentBytes(text: string, size: number): Uint8Array {
  const head = new TextEncoder().encode(`${text} `);
  const out = new Uint8Array(Math.max(size, head.length));
  out.set(head, 0);
  for (let i = head.length; i < out.length; i++) out[i] = 0x61 + (i % 26);
  return out;
}

/** One lifecycle change of the population, as the generator tracks it. */
interface LiveInstall {
  readonly name: string;
  readonly since: number;
}

/**
 * Tracks which installs are alive, by the same rules the run applies, so that drawn operations name
 * installs that exist. The run itself skips an op whose install is not linked when it comes due.
 */
export class Timeline {
  private readonly live = new Map<UserId, LiveInstall[]>();
  private readonly primary = new Map<UserId, string>();
  private readonly nextInstall = new Map<UserId, number>();

  constructor(workload: WorkloadConfig, users: readonly UserId[], linkGrace: number) {
    const setup = setupTicks(workload);
    for (const u of users) {
      const list: LiveInstall[] = [];
      for (let n = 1; n <= workload.devicesPerUser; n++) list.push({ name: installName(u, n), since: setup });
      this.live.set(u, list);
      this.primary.set(u, installName(u, 1));
      this.nextInstall.set(u, workload.devicesPerUser + 1);
    }
    this.linkGrace = linkGrace;
  }

  private readonly linkGrace: number;

  /** Installs of `user` alive and (probably) linked at `t`. */
  installsAt(user: UserId, t: number): readonly string[] {
    return (this.live.get(user) ?? []).filter((i) => i.since <= t).map((i) => i.name);
  }

  /** The user's current primary install. */
  primaryOf(user: UserId): string {
    return this.primary.get(user) ?? installName(user, 1);
  }

  /** A link at `t`: the new install's name. */
  link(user: UserId, t: number): string {
    const n = this.nextInstall.get(user) ?? 1;
    this.nextInstall.set(user, n + 1);
    const name = installName(user, n);
    this.live.get(user)?.push({ name, since: t + this.linkGrace });
    return name;
  }

  /** A revocation at `t`. */
  revoke(user: UserId, name: string): void {
    this.live.set(
      user,
      (this.live.get(user) ?? []).filter((i) => i.name !== name),
    );
  }

  /** A reinstall (or state loss) of `name` at `t`. */
  reinstall(user: UserId, name: string, t: number): void {
    const list = this.live.get(user) ?? [];
    if (this.primaryOf(user) === name) {
      // A lost primary resets the account: every install of the user comes back replaced.
      this.live.set(
        user,
        list.map((i) => ({ name: replacementOf(i.name), since: t + this.linkGrace * 2 })),
      );
      this.primary.set(user, replacementOf(name));
      return;
    }
    this.live.set(
      user,
      list.map((i) => (i.name === name ? { name: replacementOf(name), since: t + this.linkGrace * 2 } : i)),
    );
  }

  /** Users with at least `min` live installs at `t`. */
  usersWith(users: readonly UserId[], min: number, t: number): readonly UserId[] {
    return users.filter((u) => this.installsAt(u, t).length >= min);
  }
}

/** Draws a time in [from, to): uniform, or shaped by a diurnal curve peaking in the evening. */
export function drawTime(stream: Stream, from: number, to: number, diurnal: boolean): number {
  const span = Math.max(1, to - from);
  if (!diurnal) return from + stream.int(span);
  // Rejection sampling against 1 + 0.8·cos(2π(x − 0.85)): a trough at night, a peak near 20:24.
  for (let i = 0; i < 64; i++) {
    const x = stream.next();
    const density = 1 + 0.8 * Math.cos(2 * Math.PI * (x - 0.85));
    if (stream.next() * 1.8 <= density) return from + Math.floor(x * span);
  }
  return from + stream.int(span);
}

/** The link, revocation and reinstall ops, in time order (targets chosen when due). */
export function drawLifecycleTimes(
  workload: WorkloadConfig,
  stream: Stream,
): readonly { readonly t: number; readonly op: 'link' | 'revoke' | 'reinstall' }[] {
  const from = setupTicks(workload) + 1;
  const to = Math.floor(workload.durationTicks * 0.6);
  const out: { t: number; op: 'link' | 'revoke' | 'reinstall' }[] = [];
  for (let i = 0; i < workload.links; i++) out.push({ t: drawTime(stream, from, to, false), op: 'link' });
  for (let i = 0; i < workload.revocations; i++)
    out.push({ t: drawTime(stream, from, to, false), op: 'revoke' });
  for (let i = 0; i < workload.reinstalls; i++)
    out.push({ t: drawTime(stream, from, to, false), op: 'reinstall' });
  return out;
}

/**
 * Chooses the target of one lifecycle op due at `t` and applies it to the timeline. Returns null
 * when no install qualifies (e.g. a revocation in a population of single-device users).
 */
export function applyLifecycle(
  timeline: Timeline,
  users: readonly UserId[],
  stream: Stream,
  t: number,
  op: 'link' | 'revoke' | 'reinstall' | 'state-loss',
  maxDevices: number,
): ScheduleEntry | null {
  if (op === 'link') {
    const candidates = users.filter((u) => timeline.installsAt(u, t).length < maxDevices);
    if (candidates.length === 0) return null;
    const user = stream.pick(candidates);
    const primary = timeline.primaryOf(user);
    if (!timeline.installsAt(user, t).includes(primary)) return null;
    return { t, op: 'link', primary, device: timeline.link(user, t) };
  }
  if (op === 'revoke') {
    const candidates = timeline.usersWith(users, 2, t);
    if (candidates.length === 0) return null;
    const user = stream.pick(candidates);
    const primary = timeline.primaryOf(user);
    const others = timeline.installsAt(user, t).filter((n) => n !== primary);
    if (others.length === 0 || !timeline.installsAt(user, t).includes(primary)) return null;
    const device = stream.pick(others);
    timeline.revoke(user, device);
    return { t, op: 'revoke', primary, device };
  }
  const candidates = timeline.usersWith(users, 1, t);
  if (candidates.length === 0) return null;
  const user = stream.pick(candidates);
  const device = stream.pick(timeline.installsAt(user, t));
  timeline.reinstall(user, device, t);
  return op === 'reinstall' ? { t, op: 'reinstall', device } : { t, op: 'state-loss', device };
}

/**
 * The send and attachment ops: `messages` texts and `attachments` files, each from a live install
 * of a random user to one of its contacts (one in ten to two contacts). Every text and caption is
 * unique and carries a marker.
 */
export function drawMessages(
  workload: WorkloadConfig,
  population: Population,
  timeline: Timeline,
  stream: Stream,
): ScheduleEntry[] {
  const from = setupTicks(workload) + 1;
  const to = Math.floor(workload.durationTicks * 0.9);
  const out: ScheduleEntry[] = [];
  const total = workload.messages + workload.attachments;
  for (let k = 0; k < total; k++) {
    const t = drawTime(stream, from, to, workload.diurnal);
    const user = stream.pick(population.users);
    const contacts = population.contacts[user] ?? [];
    const installs = timeline.installsAt(user, t);
    if (contacts.length === 0 || installs.length === 0) continue;
    const sender = stream.pick(installs);
    const first = stream.pick(contacts);
    const to2 =
      contacts.length > 1 && stream.chance(0.1) ? stream.pick(contacts.filter((c) => c !== first)) : null;
    const recipients = to2 === null ? [first] : [first, to2];
    const marker = drawMarker(stream);
    if (k < workload.messages) {
      out.push({ t, op: 'send', from: sender, to: recipients, text: `m${k} ${marker}` });
    } else {
      out.push({ t, op: 'attachment', from: sender, to: recipients, size: 200 + stream.int(1800) });
    }
  }
  return out;
}

/** The caption of an attachment op (and the text at the head of its bytes), derived from the op. */
export function attachmentText(entry: {
  readonly t: number;
  readonly from: string;
  readonly size: number;
}): string {
  const id = `${entry.t}/${entry.from}/${entry.size}`;
  return `a@${id} ${MARKER_PREFIX}${hash12(id)}~`;
}

/** 12 hex digits of a small, deterministic string hash (FNV-1a, twice), for derived markers. */
function hash12(s: string): string {
  let a = 0x811c9dc5;
  let b = 0x01000193;
  for (let i = 0; i < s.length; i++) {
    a = Math.imul(a ^ s.charCodeAt(i), 0x01000193) >>> 0;
    b = Math.imul(b ^ s.charCodeAt(i), 0x811c9dc5) >>> 0;
  }
  return (a.toString(16).padStart(8, '0') + b.toString(16).padStart(8, '0')).slice(0, 12);
}

/** Sorts schedule entries by time, keeping the drawn order for equal times. */
export function sortSchedule(entries: readonly ScheduleEntry[]): ScheduleEntry[] {
  return entries
    .map((entry, index) => ({ entry, index }))
    .sort((a, b) => a.entry.t - b.entry.t || a.index - b.index)
    .map((x) => x.entry);
}
