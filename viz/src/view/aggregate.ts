/**
 * Aggregate views of a summary-mode trace (the `peak-day` preset): such a trace has no per-event
 * state or vector clocks, only a `summary` event per simulated hour with the run's cumulative
 * counters, the phase markers and every failed check. The view charts the counters per hour (d3),
 * lists the phases and checks, and tables the final counters.
 * @module
 */
import * as d3 from 'd3';
import { formatTicks, isPlainRecord, type TraceModel } from '../trace/model.js';
import { clear, el } from './dom.js';
import { ruleLinks } from './inspector.js';

/** Counter samples over time: one per `summary` event (and the final `end`). */
export interface CounterSeries {
  /** Sample times (ticks). */
  readonly times: readonly number[];
  /** Cumulative value of each counter at each sample. */
  readonly values: ReadonlyMap<string, readonly number[]>;
}

/** The counters of every summary event, aligned by sample. */
export function counterSeries(model: TraceModel): CounterSeries {
  const samples = model.events.filter((e) => e.kind === 'summary' || e.kind === 'end');
  const names = new Set<string>();
  for (const s of samples)
    if (isPlainRecord(s.data.counters)) for (const k of Object.keys(s.data.counters)) names.add(k);
  const values = new Map<string, number[]>();
  for (const name of [...names].sort()) {
    values.set(
      name,
      samples.map((s) => {
        const counters = isPlainRecord(s.data.counters) ? s.data.counters : {};
        const v = counters[name];
        return typeof v === 'number' ? v : 0;
      }),
    );
  }
  return { times: samples.map((s) => s.t), values };
}

/** Per-interval increases of a cumulative series. */
export function increments(series: readonly number[]): number[] {
  return series.map((v, i) => Math.max(0, v - (i === 0 ? 0 : (series[i - 1] ?? 0))));
}

const PALETTE = [
  '#2563eb',
  '#0d9488',
  '#d97706',
  '#dc2626',
  '#7c3aed',
  '#db2777',
  '#16a34a',
  '#64748b',
  '#0891b2',
  '#a16207',
];

/** Draws one stacked bar chart of per-interval increases. */
function chart(
  parent: HTMLElement,
  title: string,
  series: CounterSeries,
  names: readonly string[],
  width: number,
): void {
  const present = names.filter((n) => series.values.has(n));
  const box = el('div', { class: 'agg-chart', 'data-chart': title });
  box.append(el('h3', {}, title));
  parent.append(box);
  if (present.length === 0) {
    box.append(el('p', { class: 'muted' }, 'no such counters in this trace'));
    return;
  }
  const rows = series.times.map((t, i) => {
    const row: Record<string, number> = { t };
    for (const name of present) row[name] = increments(series.values.get(name) ?? [])[i] ?? 0;
    return row;
  });
  const height = 170;
  const margin = { top: 8, right: 12, bottom: 26, left: 56 };
  const svg = d3
    .select(box)
    .append('svg')
    .attr('width', width)
    .attr('height', height)
    .attr('class', 'agg-svg');
  const stack = d3.stack<Record<string, number>>().keys(present)(rows);
  const x = d3
    .scaleBand<number>()
    .domain(rows.map((_, i) => i))
    .range([margin.left, width - margin.right])
    .padding(0.12);
  const maxY = d3.max(stack, (layer) => d3.max(layer, (d) => d[1])) ?? 1;
  const y = d3
    .scaleLinear()
    .domain([0, Math.max(1, maxY)])
    .nice()
    .range([height - margin.bottom, margin.top]);
  svg
    .append('g')
    .selectAll('g')
    .data(stack)
    .join('g')
    .attr('fill', (_, i) => PALETTE[i % PALETTE.length] ?? '#64748b')
    .attr('data-counter', (d) => d.key)
    .selectAll('rect')
    .data((d) => d)
    .join('rect')
    .attr('x', (_, i) => x(i) ?? 0)
    .attr('y', (d) => y(d[1]))
    .attr('height', (d) => Math.max(0, y(d[0]) - y(d[1])))
    .attr('width', x.bandwidth())
    .append('title')
    .text(
      (d, i) =>
        `hour ending ${formatTicks(series.times[i] ?? 0)}: ${present.map((n) => `${n} ${d.data[n] ?? 0}`).join(', ')}`,
    );
  const every = Math.max(1, Math.ceil(rows.length / 12));
  svg
    .append('g')
    .attr('transform', `translate(0,${height - margin.bottom})`)
    .call(
      d3
        .axisBottom(x)
        .tickValues(rows.map((_, i) => i).filter((i) => i % every === 0))
        .tickFormat((i) => `${Math.round((series.times[i] ?? 0) / 3_600_000)} h`),
    );
  svg.append('g').attr('transform', `translate(${margin.left},0)`).call(d3.axisLeft(y).ticks(5, 's'));
  const legend = el('div', { class: 'legend' });
  present.forEach((name, i) => {
    const swatch = el('span', { class: 'swatch' });
    swatch.style.background = PALETTE[i % PALETTE.length] ?? '#64748b';
    legend.append(swatch, ` ${name}  `);
  });
  box.append(legend);
}

/** The aggregate view. */
export class AggregateView {
  readonly root: HTMLElement;

  constructor(
    parent: HTMLElement,
    private readonly openRule: (rule: string) => void,
  ) {
    this.root = el('div', { class: 'aggregate', 'data-testid': 'aggregate', hidden: '' });
    parent.append(this.root);
  }

  /** Shows a summary-mode trace. */
  show(model: TraceModel): void {
    clear(this.root);
    this.root.hidden = false;
    const series = counterSeries(model);
    const width = Math.max(520, Math.min(1500, this.root.clientWidth - 48));
    const config = model.header.config;
    const w = config.workload;
    this.root.append(
      el('h2', {}, `Summary trace: ${config.preset ?? 'custom'} seed ${config.seed}`),
      el(
        'p',
        { class: 'muted' },
        `${w.users.toLocaleString()} users × ${w.devicesPerUser} devices, ${w.messages.toLocaleString()} messages over ${formatTicks(w.durationTicks)}. ` +
          'A summary trace records counters once per simulated hour (and every failed check) instead of every event, so it has no lanes or per-device state: these charts are its view.',
      ),
    );
    this.root.dataset.samples = String(series.times.length);
    const phases = el('ul', { class: 'phases' });
    for (const event of model.events) {
      if (
        [
          'faults-on',
          'heal',
          'converged',
          'not-converged',
          'liveness-timeout',
          'stale-epoch',
          'fault',
        ].includes(event.kind)
      ) {
        const what = event.kind === 'fault' ? `${String(event.data.fault)} (${event.node})` : event.kind;
        phases.append(el('li', {}, `${formatTicks(event.t)} — ${what}`));
      }
    }
    const checks = el('div', { class: 'checks' });
    for (const index of model.checks) {
      const event = model.events[index];
      if (event === undefined) continue;
      const item = el('div', { class: 'check-box' });
      item.append(
        el(
          'div',
          { class: 'check-title' },
          `✗ ${String(event.data.property ?? event.kind)} at ${formatTicks(event.t)}`,
        ),
        el('div', {}, String(event.data.message ?? '')),
        ruleLinks(Array.isArray(event.data.rules) ? event.data.rules : [], this.openRule),
      );
      checks.append(item);
    }
    if (model.checks.length === 0) checks.append(el('p', { class: 'ok' }, '✓ no failed check'));
    const top = el('div', { class: 'agg-top' });
    top.append(
      el('div', {}, el('h3', {}, 'Phases and faults'), phases),
      el('div', {}, el('h3', {}, 'Checks'), checks),
    );
    this.root.append(top);
    const serverKinds = [...series.values.keys()].filter((k) => k.startsWith('server.'));
    chart(this.root, 'Messages per hour', series, ['ops.send', 'sent', 'delivered'], width);
    chart(
      this.root,
      'Network faults per hour',
      series,
      ['net.lost', 'net.duplicated', 'net.lost.server', 'net.lost.link-down'],
      width,
    );
    chart(this.root, 'Server requests per hour, by kind', series, serverKinds, width);
    chart(
      this.root,
      'Device work per hour',
      series,
      ['device-list-changes', 'requests.resent', 'duplicate-dropped', 'sending-ratchet-keys'],
      width,
    );
    // Any counter, on demand.
    const pick = el('select', { 'aria-label': 'counter to chart' });
    for (const name of series.values.keys()) pick.append(el('option', { value: name }, name));
    const custom = el('div', { class: 'agg-custom' });
    pick.addEventListener('change', () => {
      clear(custom);
      chart(custom, pick.value, series, [pick.value], width);
    });
    this.root.append(el('h3', {}, 'Chart any counter: '), pick, custom);
    // Final counters.
    const end = [...model.events].reverse().find((e) => e.kind === 'end');
    const table = el('table', { class: 'grid counters', 'data-testid': 'final-counters' });
    table.append(el('tr', {}, el('th', {}, 'counter'), el('th', {}, 'final value')));
    const counters = end !== undefined && isPlainRecord(end.data.counters) ? end.data.counters : {};
    for (const [k, v] of Object.entries(counters)) {
      table.append(el('tr', { 'data-counter': k }, el('td', {}, k), el('td', {}, String(v))));
    }
    this.root.append(el('h3', {}, 'Final counters'), table);
  }

  /** Hides the view (a full trace is loaded). */
  hide(): void {
    this.root.hidden = true;
    clear(this.root);
  }
}
