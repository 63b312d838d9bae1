/**
 * Human-readable run summaries and tables for the `lockstep` command. Presentation only: every
 * figure comes from the simulator's {@link SimResult}.
 * @module
 */
import type { Counters, SimResult } from '../simulator/api.js';
import { PROPERTIES } from '../simulator/invariants.js';

/**
 * The original messenger promised delivery "under 1 second"; simulated latency is reported against
 * it (1 tick = 1 ms of simulated time).
 */
export const CLAIMED_LATENCY_TICKS = 1_000;

/** A counter's value, or undefined when the simulator did not report it. */
export function counter(counters: Counters, name: string): number | undefined {
  return Object.hasOwn(counters, name) ? counters[name] : undefined;
}

/** The sum of the counters whose names satisfy `match`. */
function sumCounters(counters: Counters, match: (name: string) => boolean): number {
  let sum = 0;
  for (const [name, value] of Object.entries(counters)) if (match(name)) sum += value;
  return sum;
}

/** Counter families that are injected faults: scheduled ones and per-packet network ones. */
function isFaultCounter(name: string): boolean {
  return (
    name.startsWith('faults.') ||
    name.startsWith('tampered.') ||
    name === 'net.lost' ||
    name === 'net.duplicated'
  );
}

/** The number of devices a run starts with, from its configuration. */
export function deviceCount(result: SimResult): number {
  const w = result.header.config.workload;
  return w.users * w.devicesPerUser;
}

/** A multi-line summary of one run. */
export function formatSummary(result: SimResult, wallMs?: number): string {
  const config = result.header.config;
  const w = config.workload;
  const c = result.counters;
  const out: string[] = [];
  const title = config.preset === null ? 'custom configuration' : `preset ${config.preset}`;
  const bugs = config.bugs.length > 0 ? `, planted bugs: ${config.bugs.join(', ')}` : '';
  out.push(`lockstep sim: seed ${config.seed}, ${title}, engine ${config.engine}${bugs}`);
  const row = (label: string, value: string): void => {
    out.push(`  ${label.padEnd(20)} ${value}`);
  };
  row(
    'devices',
    `${deviceCount(result)} (${w.users} users × ${w.devicesPerUser}; ${w.links} linked, ${w.revocations} revoked, ${w.reinstalls} reinstalled during the run)`,
  );
  const texts = counter(c, 'ops.send');
  const attachments = counter(c, 'ops.attachment') ?? 0;
  if (texts !== undefined)
    row('messages sent', `${texts + attachments} (${texts} texts, ${attachments} attachments)`);
  const delivered = counter(c, 'delivered');
  if (delivered !== undefined) row('deliveries', `${delivered} (per receiving device, sync copies included)`);
  const faults = Object.keys(c)
    .filter(isFaultCounter)
    .sort()
    .map((name) => `${name.replace(/^faults\./, '')} ${c[name]}`);
  row(
    'faults injected',
    `${sumCounters(c, isFaultCounter)}${faults.length > 0 ? ` (${faults.join(', ')})` : ''}`,
  );
  const failedNames = new Set(result.violations.map((v) => v.property));
  row(
    'properties checked',
    `${PROPERTIES.length}: ${PROPERTIES.map((p) => `${failedNames.has(p.name) ? '✗' : '✓'} ${p.name}`).join(', ')}`,
  );
  const events = counter(c, 'events');
  row('events', `${events ?? result.lines.length - 1} (${result.lines.length} trace lines)`);
  row(
    'schedule',
    `${result.schedule.length} entries ${result.header.schedule === null ? '(drawn from the seed)' : '(explicit)'}`,
  );
  out.push(formatLatency(result.latency));
  const load = result.load;
  row(
    'load',
    `peak mailbox depth ${load.peakMailboxDepth}; sessions at the end ${load.activeSessions} current (${load.initiatingSessions} not yet confirmed by a reply), ${load.archivedSessions} archived`,
  );
  // "Sometimes" counters: how often each rarely reached path was exercised in this run.
  const sometimes = Object.keys(c).filter(isSometimesCounter).sort();
  if (sometimes.length > 0) {
    const reached = sometimes.filter((name) => (c[name] ?? 0) > 0).length;
    row('sometimes-counters', `${reached}/${sometimes.length} reached`);
    out.push(
      ...wrap(
        sometimes.map((name) => `${name}=${c[name]}`),
        4,
        100,
      ),
    );
  }
  const server = Object.keys(c)
    .filter((name) => name.startsWith('server.'))
    .sort();
  if (server.length > 0) {
    row('server requests', String(sumCounters(c, (name) => name.startsWith('server.'))));
    out.push(
      ...wrap(
        server.map((name) => `${name.slice('server.'.length)}=${c[name]}`),
        4,
        100,
      ),
    );
  }
  if (wallMs !== undefined) row('wall time', `${(wallMs / 1000).toFixed(2)} s`);
  out.push(formatVerdict(result));
  return out.join('\n');
}

/** Counters already shown in the headline rows. */
const HEADLINE = new Set(['ops.send', 'ops.attachment', 'delivered', 'events']);

/**
 * Whether a counter says how often a path was exercised ("sometimes" coverage): everything but the
 * injected faults, the server's request tallies and the headline traffic figures.
 */
export function isSometimesCounter(name: string): boolean {
  return (
    !isFaultCounter(name) &&
    !HEADLINE.has(name) &&
    !name.startsWith('server.') &&
    !name.startsWith('violations.')
  );
}

/** Join `items` with two spaces into lines of at most `width` characters, indented. */
function wrap(items: readonly string[], indent: number, width: number): readonly string[] {
  const lines: string[] = [];
  let line = '';
  for (const item of items) {
    if (line !== '' && indent + line.length + 2 + item.length > width) {
      lines.push(' '.repeat(indent) + line);
      line = '';
    }
    line = line === '' ? item : `${line}  ${item}`;
  }
  if (line !== '') lines.push(' '.repeat(indent) + line);
  return lines;
}

/** Latency percentiles against the "under 1 second" claim. */
export function formatLatency(latency: SimResult['latency']): string {
  if (latency.count === 0) return `  ${'delivery latency'.padEnd(20)} no deliveries measured`;
  const verdict =
    latency.p99 < CLAIMED_LATENCY_TICKS
      ? 'p99 under the claimed 1 s'
      : latency.p50 < CLAIMED_LATENCY_TICKS
        ? 'p50 under the claimed 1 s, p99 over it'
        : 'p50 over the claimed 1 s';
  return `  ${'delivery latency'.padEnd(20)} p50 ${latency.p50} ms, p99 ${latency.p99} ms, max ${latency.max} ms over ${latency.count} deliveries (simulated; ${verdict})`;
}

/**
 * The verdict line(s): pass, or each violation and the divergence. A run with an adversary is
 * judged by its security oracles; the honest-run properties it broke are listed as what the
 * attacker did, not as failures.
 */
export function formatVerdict(result: SimResult): string {
  const security = result.security;
  const out: string[] = [];
  if (security !== null) {
    out.push(
      `  adversary ${security.plan}: ${security.violations.length} security oracle violation(s), ${new Set(security.leaks.map((l) => l.text)).size} of ${security.plaintexts} plaintexts readable by the attacker`,
    );
    for (const v of security.violations.slice(0, 20)) out.push(`    ${v.oracle} at t=${v.t}: ${v.message}`);
    const broken = [...new Set(result.violations.map((v) => v.property))];
    if (broken.length > 0) out.push(`  honest-run properties the attack broke: ${broken.join(', ')}`);
  }
  if (passed(result)) return [...out, 'result: PASS (all properties held)'].join('\n');
  out.push('result: FAIL');
  if (security !== null) {
    if (result.divergence === null) return out.join('\n');
  } else
    for (const v of result.violations) {
      out.push(`  violated ${v.property} at t=${v.t} seq=${v.seq} [${v.rules.join(', ')}]: ${v.message}`);
    }
  const d = result.divergence;
  if (d !== null) {
    out.push(`  engines diverged at t=${d.t} seq=${d.seq} on ${d.node}, ${d.field}:`);
    out.push(`    impl:  ${d.impl}`);
    out.push(`    model: ${d.model}`);
  }
  return out.join('\n');
}

/**
 * Whether a run held every property and the engines agreed. With an adversary, the properties are
 * its security oracles (an attacker may break the honest-run ones, e.g. by dropping messages).
 */
export function passed(result: SimResult): boolean {
  if (result.security !== null) return result.security.violations.length === 0 && result.divergence === null;
  return result.violations.length === 0 && result.divergence === null;
}

/** A plain text table: a header row, a rule, then rows; numeric-looking cells are right-aligned. */
export function formatTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((cell, column) =>
    Math.max(cell.length, ...rows.map((row) => (row[column] ?? '').length)),
  );
  const numeric = /^[-+]?[\d.,]+\s*[%a-zA-Z/]*$/;
  const line = (row: readonly string[]): string =>
    row
      .map((cell, column) => {
        const width = widths[column] ?? cell.length;
        return numeric.test(cell) ? cell.padStart(width) : cell.padEnd(width);
      })
      .join('  ')
      .trimEnd();
  return [line(header), widths.map((width) => '-'.repeat(width)).join('  '), ...rows.map(line)].join('\n');
}
