/**
 * The fault schedule of a run (WHITEPAPER.md, "Simulator"; design "Simulator shape"): drawn from
 * the `faults` stream given the {@link FaultConfig}, together with the workload into one schedule.
 *
 * | fault          | drawn as                                                                          |
 * | -------------- | --------------------------------------------------------------------------------- |
 * | partition      | per initial install, ⌊rate⌋ (+1 with probability frac(rate)) windows; start uniform in the fault phase, length exponential (mean 5 % of the phase) |
 * | offline        | the same, as offline windows (no polling, link down)                               |
 * | server-crash   | ⌊rate⌋ (+1 …) crashes over the phase; down for an exponential time (mean 1 000 ticks) |
 * | state-loss     | ⌊rate⌋ (+1 …) events on a live install (it comes back as a reinstall)             |
 * | rollback       | ⌊rate⌋ (+1 …) events on a live install, back to a tick drawn before it             |
 *
 * Per-packet faults (loss, duplication, delay, tampering) are not scheduled: the network draws them
 * from the `network` stream as packets travel (simulator/network.ts).
 *
 * {@link drawSwarmFaults} is swarm mode: every seed draws its own fault rates, around the preset's.
 * @module
 */
import type { FaultConfig, ScheduleEntry, SimConfig } from './api.js';
import { floatStream, streamLabel, type Stream } from './streams.js';
import {
  applyLifecycle,
  drawLifecycleTimes,
  drawMessages,
  drawPopulation,
  drawTime,
  setupTicks,
  sortSchedule,
  Timeline,
  type Population,
} from './workload.js';

/** How many events a rate asks for: its integer part, plus one with probability its fraction. */
function countOf(stream: Stream, rate: number): number {
  if (!(rate > 0)) return 0;
  const whole = Math.floor(rate);
  return whole + (stream.chance(rate - whole) ? 1 : 0);
}

/** Ticks after a link before the generator treats the new install as linked. */
export function linkGrace(config: SimConfig): number {
  return Math.min(config.pollInterval, 500) * 4 + 200;
}

/** A drawn run: the population and the schedule (workload and faults, in time order). */
export interface DrawnRun {
  readonly population: Population;
  readonly schedule: readonly ScheduleEntry[];
}

/**
 * Draws the population and the whole schedule of a run from its seed: population and lifecycle
 * times (workload stream), state-loss times (faults stream), lifecycle targets in time order,
 * messages (workload stream), then windows, crashes and rollbacks (faults stream).
 */
export function drawRun(
  config: SimConfig,
  streams: { readonly workload: Stream; readonly faults: Stream },
): DrawnRun {
  const w = config.workload;
  const f = config.faults;
  const population = drawPopulation(w, streams.workload);
  const timeline = new Timeline(w, population.users, linkGrace(config));
  const from = setupTicks(w) + 1;
  const phaseEnd = w.durationTicks;
  const lifecycle: { t: number; op: 'link' | 'revoke' | 'reinstall' | 'state-loss' }[] = [
    ...drawLifecycleTimes(w, streams.workload),
  ];
  const losses = countOf(streams.faults, f.stateLoss);
  for (let i = 0; i < losses; i++)
    lifecycle.push({
      t: drawTime(streams.faults, from, Math.floor(phaseEnd * 0.6), false),
      op: 'state-loss',
    });
  lifecycle.sort((a, b) => a.t - b.t);
  const entries: ScheduleEntry[] = [];
  for (const item of lifecycle) {
    const stream = item.op === 'state-loss' ? streams.faults : streams.workload;
    const entry = applyLifecycle(
      timeline,
      population.users,
      stream,
      item.t,
      item.op,
      Math.min(w.devicesPerUser + 2, 8),
    );
    if (entry !== null) entries.push(entry);
  }
  entries.push(...drawMessages(w, population, timeline, streams.workload));
  const fs = streams.faults;
  const windowMean = Math.max(100, Math.floor(phaseEnd * 0.05));
  for (const kind of ['partition', 'offline'] as const) {
    const rate = kind === 'partition' ? f.partitions : f.offline;
    if (!(rate > 0)) continue;
    for (const user of population.users) {
      for (const device of timeline.installsAt(user, from)) {
        const n = countOf(fs, rate);
        for (let i = 0; i < n; i++) {
          const t = drawTime(fs, from, Math.floor(phaseEnd * 0.9), false);
          const until = Math.min(phaseEnd, t + 50 + fs.exponential(windowMean));
          entries.push({ t, op: kind, device, until });
        }
      }
    }
  }
  const crashes = countOf(fs, f.serverCrashes);
  for (let i = 0; i < crashes; i++) {
    const t = drawTime(fs, from, Math.floor(phaseEnd * 0.9), false);
    entries.push({ t, op: 'server-crash', until: Math.min(phaseEnd, t + 50 + fs.exponential(1_000)) });
  }
  const rollbacks = countOf(fs, f.rollback);
  for (let i = 0; i < rollbacks; i++) {
    const t = drawTime(fs, from + 2_000, Math.floor(phaseEnd * 0.8), false);
    const users = timeline.usersWith(population.users, 1, t);
    if (users.length === 0) continue;
    const device = fs.pick(timeline.installsAt(fs.pick(users), t));
    const toTick = Math.max(from, t - 1 - fs.exponential(Math.max(200, Math.floor(phaseEnd * 0.1))));
    entries.push({ t, op: 'rollback', device, toTick });
  }
  return { population, schedule: sortSchedule(entries) };
}

/** The population of a run alone (an explicit schedule replaces the drawn one, not the population). */
export function drawPopulationOnly(config: SimConfig, workload: Stream): Population {
  return drawPopulation(config.workload, workload);
}

const MULTIPLIERS = [0, 0, 0.5, 1, 2, 4] as const;

/**
 * Swarm mode: fault rates drawn per seed from `seedrandom("lockstep-sim/<seed>/swarm")`: each rate is
 * the base rate times one of 0, 0, ½, 1, 2, 4 (so a third of the seeds switch a fault off), with a
 * default base for faults the preset leaves at zero; probabilities are capped at 0.3.
 */
export function drawSwarmFaults(seed: number, base: FaultConfig): FaultConfig {
  const s = floatStream(streamLabel(seed, 'swarm'));
  const scale = (value: number, fallback: number, cap: number): number => {
    const m = s.pick(MULTIPLIERS);
    const v = (value > 0 ? value : fallback) * m;
    return Math.min(cap, Math.round(v * 1000) / 1000);
  };
  return {
    loss: scale(base.loss, 0.02, 0.3),
    duplication: scale(base.duplication, 0.02, 0.3),
    delayMean: Math.round(scale(base.delayMean, 50, 10_000)),
    partitions: scale(base.partitions, 0.5, 4),
    offline: scale(base.offline, 0.5, 4),
    serverCrashes: scale(base.serverCrashes, 1, 4),
    stateLoss: scale(base.stateLoss, 0.5, 2),
    rollback: scale(base.rollback, 0.5, 2),
    corruption: scale(base.corruption ?? 0, 0.01, 0.1),
  };
}
