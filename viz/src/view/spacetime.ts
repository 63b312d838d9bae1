/**
 * The space-time diagram (ShiViz style): one lane per device install plus the server, time running
 * downward one row per event (logical time, in trace order; the gutter shows simulated time), an
 * arrow for every packet — delivered, dropped (✕), duplicated, delayed, tampered with (⚡) — and
 * marks for faults, lifecycle changes, operations, phases and failed checks.
 *
 * Rendering is virtualised: a tall spacer gives the scroll range, and a canvas the size of the
 * viewport redraws only the rows and arrows that cross it (arrows are bucketed by row block), so a
 * 100 000-event trace scrolls like a short one. The same drawing code writes SVG for export.
 * @module
 */
import type { Message, MessageIndex } from '../trace/messages.js';
import {
  ATTACKER_LANE,
  formatTicks,
  formatTicksShort,
  laneOf,
  type Lane,
  type TraceModel,
  type VizEvent,
} from '../trace/model.js';
import { CanvasPainter, SvgPainter, type Painter } from './painter.js';
import { el, clear } from './dom.js';

/** Which lanes and message topics are shown. */
export interface DiagramFilter {
  readonly hiddenLanes: ReadonlySet<string>;
  /** Request kinds (`fetch`, `ack` …, and `push`) whose messages are hidden. */
  readonly hiddenTopics: ReadonlySet<string>;
  /** Hide rows of device steps that only polled the mailbox and found nothing. */
  readonly hideIdlePolls: boolean;
}

/** What the diagram reports to the app. */
export interface DiagramCallbacks {
  /** An event was clicked (its index) or a lane header. */
  readonly select: (event: number) => void;
  readonly selectLane: (node: string) => void;
  readonly hideLane: (node: string) => void;
}

/** Rows, lanes and arrow buckets for one filter. */
interface Layout {
  /** Event index of each row, ascending. */
  readonly rows: Int32Array;
  /** Row of each event, -1 when it has none. */
  readonly rowOf: Int32Array;
  readonly lanes: readonly Lane[];
  readonly column: ReadonlyMap<string, number>;
  /** Message ids per block of {@link BLOCK} rows. */
  readonly blocks: readonly (readonly number[])[];
  /** Messages drawn (both ends on visible lanes, topic shown). */
  readonly drawn: readonly number[];
  /** Fault windows: lane, first row, last row, kind. */
  readonly windows: readonly { lane: string; from: number; to: number; kind: string }[];
}

const BLOCK = 128;
const HEADER = 44;

/** Colours by meaning (kept in one place so the legend matches). */
export const COLOURS = {
  request: '#2563eb',
  response: '#0d9488',
  push: '#94a3b8',
  dropped: '#dc2626',
  duplicate: '#7c3aed',
  delayed: '#d97706',
  tampered: '#db2777',
  fault: '#ea580c',
  check: '#dc2626',
  lifecycle: '#16a34a',
  revoked: '#111827',
  op: '#9333ea',
  attacker: '#be123c',
  cursor: '#fef3c7',
  cursorLine: '#f59e0b',
} as const;

/** The topic of a message: its request kind, or `push`. */
export function topicOf(message: Message): string {
  if (message.kind === 'push') return 'push';
  if (message.kind === 'request') return message.label;
  const request = message.fields.request;
  return typeof request === 'string' ? request : message.label;
}

/** The lane an event is drawn on: a node, `null` for a full-width row, `undefined` for no row. */
export function laneOfEvent(event: VizEvent): string | null | undefined {
  if (event.kind === 'net') return undefined;
  if (laneOf(event.node) !== null) return event.node;
  if (event.node === 'oracle') return ATTACKER_LANE;
  if (event.kind === 'op' && typeof event.data.device === 'string') return event.data.device;
  return null;
}

/** A device step that only polled and got an empty mailbox (or nothing yet). */
export function isIdlePoll(event: VizEvent, messages: MessageIndex): boolean {
  if (event.kind !== 'step' || event.changedParts.length > 0) return false;
  const input = event.data.input;
  const kind = typeof input === 'object' && input !== null ? (input as Record<string, unknown>).kind : null;
  const outputs = Array.isArray(event.data.outputs) ? (event.data.outputs as unknown[]) : [];
  const onlyFetch = outputs.every(
    (o) => typeof o === 'object' && o !== null && (o as Record<string, unknown>).request === 'fetch',
  );
  if (kind === 'net.fetch' && onlyFetch) return true;
  if (kind !== 'net.response' || outputs.length > 0) return false;
  const ids = messages.byEvent.get(event.index) ?? [];
  return ids.every((id) => {
    const m = messages.messages[id];
    return m !== undefined && (topicOf(m) === 'fetch' || topicOf(m) === 'ack');
  });
}

/** Lays out rows and arrows for a filter. */
export function layoutDiagram(model: TraceModel, messages: MessageIndex, filter: DiagramFilter): Layout {
  const lanes = model.lanes.filter((lane) => !filter.hiddenLanes.has(lane.node));
  const column = new Map(lanes.map((lane, i) => [lane.node, i]));
  const rowOf = new Int32Array(model.events.length).fill(-1);
  const rowList: number[] = [];
  for (const event of model.events) {
    const lane = laneOfEvent(event);
    if (lane === undefined) continue;
    if (lane !== null && !column.has(lane)) {
      // An operation on a device without a lane yet, or a hidden one: show it full width only if unknown.
      if (event.kind !== 'op' || model.lanes.some((l) => l.node === lane)) continue;
    }
    if (filter.hideIdlePolls && isIdlePoll(event, messages)) continue;
    rowOf[event.index] = rowList.length;
    rowList.push(event.index);
  }
  const rows = Int32Array.from(rowList);
  const blocks: number[][] = [];
  const drawn: number[] = [];
  for (const message of messages.messages) {
    if (!column.has(message.from) || !column.has(message.to)) continue;
    if (filter.hiddenTopics.has(topicOf(message))) continue;
    const start = rowOf[message.sendEvent] ?? -1;
    if (start < 0) continue;
    const end = endRow(message, model, rowOf, rows);
    drawn.push(message.id);
    const lo = Math.floor(Math.min(start, end) / BLOCK);
    const hi = Math.floor(Math.max(start, end) / BLOCK);
    for (let b = lo; b <= hi; b++) (blocks[b] ??= []).push(message.id);
  }
  const windows: { lane: string; from: number; to: number; kind: string }[] = [];
  let crashFrom = -1;
  for (const index of model.faults) {
    const event = model.events[index];
    if (event === undefined || event.kind !== 'fault') continue;
    const fault = String(event.data.fault);
    if (fault === 'server-crash') crashFrom = index;
    if (fault === 'server-restart' && crashFrom >= 0) {
      windows.push({
        lane: 'server',
        from: rowAtOrAfter(rows, crashFrom),
        to: rowAtOrAfter(rows, index),
        kind: 'crash',
      });
      crashFrom = -1;
    }
    if ((fault === 'partition' || fault === 'offline') && typeof event.data.until === 'number') {
      const until = firstEventAtOrAfter(model, event.data.until);
      windows.push({
        lane: event.node,
        from: rowAtOrAfter(rows, index),
        to: rowAtOrAfter(rows, until),
        kind: fault,
      });
    }
  }
  return { rows, rowOf, lanes, column, blocks, drawn, windows };
}

/** The first row whose event index is ≥ `index` (rows.length when none). */
function rowAtOrAfter(rows: Int32Array, index: number): number {
  let lo = 0;
  let hi = rows.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if ((rows[mid] ?? 0) < index) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function firstEventAtOrAfter(model: TraceModel, t: number): number {
  let lo = 0;
  let hi = model.events.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if ((model.events[mid]?.t ?? 0) < t) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The row (fractional) where a message's arrow ends. */
function endRow(message: Message, model: TraceModel, rowOf: Int32Array, rows: Int32Array): number {
  const start = rowOf[message.sendEvent] ?? 0;
  if (message.fate === 'delivered') {
    const row = rowOf[message.endEvent] ?? -1;
    if (row >= 0) return row;
    return rowAtOrAfter(rows, message.endEvent) - 0.5;
  }
  if (message.fate === 'dropped') {
    if (message.droppedAtSend) return start + 0.6;
    return Math.max(start + 0.5, rowAtOrAfter(rows, message.endEvent) - 0.5);
  }
  void model;
  return start + 0.8;
}

/** The space-time diagram view. */
export class SpaceTimeView {
  readonly root: HTMLElement;
  private readonly header: HTMLElement;
  private readonly scroller: HTMLElement;
  private readonly spacer: HTMLElement;
  private readonly canvas: HTMLCanvasElement;
  private readonly tooltip: HTMLElement;
  private model: TraceModel | null = null;
  private messages: MessageIndex | null = null;
  private layout: Layout | null = null;
  private cursor = -1;
  private rowHeight = 18;
  private laneWidth = 90;
  private frame = 0;
  private focusMessage = -1;
  private selectedLane: string | null = null;
  /** Width of the left column (event number and time), sized to the trace's largest number. */
  private gutter = 110;
  /** Events related to the cursor (a failed check's triggering step shares its queue event). */
  private related: ReadonlySet<number> = new Set();

  constructor(
    parent: HTMLElement,
    private readonly callbacks: DiagramCallbacks,
  ) {
    this.root = el('div', { class: 'st-root', 'data-testid': 'spacetime' });
    this.header = el('div', { class: 'st-header' });
    this.scroller = el('div', { class: 'st-scroll' });
    this.spacer = el('div', { class: 'st-spacer' });
    this.canvas = el('canvas', { class: 'st-canvas' });
    this.tooltip = el('div', { class: 'tooltip', hidden: '' });
    this.scroller.append(this.spacer);
    this.root.append(this.header, this.scroller, this.canvas, this.tooltip);
    parent.append(this.root);
    this.scroller.addEventListener('scroll', () => {
      this.header.scrollLeft = this.scroller.scrollLeft;
      this.schedule();
    });
    this.scroller.addEventListener('mousemove', (e) => this.hover(e));
    this.scroller.addEventListener('mouseleave', () => {
      this.tooltip.hidden = true;
    });
    this.scroller.addEventListener('click', (e) => this.click(e));
    new ResizeObserver(() => {
      this.fitLanes();
      this.schedule();
    }).observe(this.scroller);
  }

  /** Shows a trace. */
  setTrace(model: TraceModel, messages: MessageIndex, filter: DiagramFilter): void {
    this.model = model;
    this.gutter = 24 + String(model.events.length).length * 7.2 + 66;
    this.messages = messages;
    this.setFilter(filter);
  }

  /** Re-lays out rows for a new filter. */
  setFilter(filter: DiagramFilter): void {
    if (this.model === null || this.messages === null) return;
    this.layout = layoutDiagram(this.model, this.messages, filter);
    this.root.dataset.laneCount = String(this.layout.lanes.length);
    this.root.dataset.rowCount = String(this.layout.rows.length);
    this.root.dataset.arrowCount = String(this.layout.drawn.length);
    this.fitLanes();
    this.renderHeader();
    this.schedule();
  }

  /** Row height in pixels (density). */
  setRowHeight(height: number): void {
    const keep = this.cursorRow();
    this.rowHeight = Math.max(3, Math.min(32, height));
    this.fitLanes();
    if (keep >= 0) this.scrollToRow(keep, true);
    this.schedule();
  }

  /** Current row height. */
  getRowHeight(): number {
    return this.rowHeight;
  }

  /** Moves the cursor to an event and keeps it in view. */
  setCursor(index: number): void {
    this.cursor = index;
    const event = this.model?.events[index];
    const related = new Set<number>();
    if (event !== undefined && (event.kind === 'check' || event.kind === 'divergence')) {
      // The step or request that broke the property was handled in the same queue event.
      for (let i = index - 1; i >= 0; i--) {
        const before = this.model?.events[i];
        if (before === undefined || before.seq !== event.seq || before.t !== event.t) break;
        if (laneOf(before.node) !== null) related.add(i);
      }
    }
    this.related = related;
    const row = this.cursorRow();
    if (row >= 0) this.scrollToRow(row, false);
    this.schedule();
  }

  /** Marks the inspected lane. */
  setSelectedLane(node: string | null): void {
    this.selectedLane = node;
    for (const head of this.header.querySelectorAll<HTMLElement>('.st-lane-head')) {
      head.classList.toggle('selected', head.dataset.lane === node);
    }
    this.schedule();
  }

  /** Emphasises one message (hover in another view), -1 for none. */
  setFocusMessage(id: number): void {
    this.focusMessage = id;
    this.schedule();
  }

  /** The row of the cursor, or of the nearest event before it that has a row. */
  private cursorRow(): number {
    const layout = this.layout;
    if (layout === null || this.cursor < 0) return -1;
    const direct = layout.rowOf[this.cursor] ?? -1;
    if (direct >= 0) return direct;
    return Math.max(0, rowAtOrAfter(layout.rows, this.cursor) - 1);
  }

  /** The visible rows' event indexes (first, last). */
  visibleRange(): { first: number; last: number } {
    const layout = this.layout;
    if (layout === null || layout.rows.length === 0) return { first: 0, last: -1 };
    const top = Math.max(0, Math.floor(this.scroller.scrollTop / this.rowHeight));
    const bottom = Math.min(
      layout.rows.length - 1,
      Math.ceil((this.scroller.scrollTop + this.scroller.clientHeight) / this.rowHeight),
    );
    return { first: layout.rows[top] ?? 0, last: layout.rows[bottom] ?? 0 };
  }

  /** Rows in the current filter, in event order. */
  rowEvents(): Int32Array {
    return this.layout?.rows ?? new Int32Array();
  }

  private scrollToRow(row: number, centre: boolean): void {
    const y = row * this.rowHeight;
    const view = this.scroller.clientHeight;
    const top = this.scroller.scrollTop;
    if (centre || y < top + this.rowHeight * 2 || y > top + view - this.rowHeight * 4) {
      this.scroller.scrollTop = Math.max(0, y - view / 2);
    }
  }

  private fitLanes(): void {
    const layout = this.layout;
    if (layout === null) return;
    const available = Math.max(200, this.scroller.clientWidth - this.gutter - 8);
    this.laneWidth = Math.max(44, Math.min(220, Math.floor(available / Math.max(1, layout.lanes.length))));
    this.spacer.style.height = `${layout.rows.length * this.rowHeight + 40}px`;
    this.spacer.style.width = `${this.gutter + layout.lanes.length * this.laneWidth}px`;
    this.renderHeader();
  }

  private laneX(column: number): number {
    return this.gutter + column * this.laneWidth + this.laneWidth / 2;
  }

  private renderHeader(): void {
    const layout = this.layout;
    clear(this.header);
    if (layout === null) return;
    const inner = el('div', { class: 'st-header-inner' });
    inner.style.width = `${this.gutter + layout.lanes.length * this.laneWidth + 400}px`;
    const gutter = el('div', { class: 'st-gutter-head' }, 'event · time');
    gutter.style.width = `${this.gutter}px`;
    inner.append(gutter);
    for (const lane of layout.lanes) {
      const head = el('div', {
        class: `st-lane-head ${lane.kind}${lane.generation > 0 ? ' reinstall' : ''}${lane.node === this.selectedLane ? ' selected' : ''}`,
        'data-lane': lane.node,
        title:
          lane.kind === 'server'
            ? 'the server (click: its statechart and state)'
            : lane.kind === 'attacker'
              ? 'the attacker: its actions (compromise, clone, tamper, inject, forge) and what the security oracles found it can read or forge'
              : lane.clone === true
                ? `${lane.node}: the attacker's clone of ${lane.node.slice(0, -1)}, run from a stolen state`
                : `${lane.node}: device ${lane.device ?? '?'} of ${lane.user ?? '?'}${lane.device === 1 ? ' (primary)' : ''}${lane.generation > 0 ? `, reinstall ${lane.generation}` : ''} — click to inspect`,
      });
      head.style.width = `${this.laneWidth}px`;
      const name = el('button', { class: 'lane-name', type: 'button' }, lane.node);
      name.addEventListener('click', () => this.callbacks.selectLane(lane.node));
      const hide = el(
        'button',
        {
          class: 'lane-hide',
          type: 'button',
          title: `hide lane ${lane.node}`,
          'aria-label': `hide lane ${lane.node}`,
        },
        '×',
      );
      hide.addEventListener('click', () => this.callbacks.hideLane(lane.node));
      const role =
        lane.kind === 'server'
          ? 'server'
          : lane.kind === 'attacker'
            ? 'adversary'
            : lane.clone === true
              ? 'clone'
              : lane.device === 1 && lane.generation === 0
                ? 'primary'
                : lane.generation > 0
                  ? 'reinstall'
                  : 'linked';
      head.append(name, hide, el('span', { class: 'lane-role' }, role));
      inner.append(head);
    }
    this.header.append(inner);
    this.header.scrollLeft = this.scroller.scrollLeft;
  }

  private schedule(): void {
    if (this.frame !== 0) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.draw();
    });
  }

  /** Draws now (tests and exports call this to avoid waiting for a frame). */
  draw(): void {
    const layout = this.layout;
    const width = this.scroller.clientWidth;
    const height = this.scroller.clientHeight;
    const ratio = window.devicePixelRatio || 1;
    this.canvas.style.top = `${this.scroller.offsetTop}px`;
    this.canvas.style.width = `${width}px`;
    this.canvas.style.height = `${height}px`;
    if (
      this.canvas.width !== Math.round(width * ratio) ||
      this.canvas.height !== Math.round(height * ratio)
    ) {
      this.canvas.width = Math.round(width * ratio);
      this.canvas.height = Math.round(height * ratio);
    }
    const g = this.canvas.getContext('2d');
    if (g === null || layout === null) return;
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, height);
    const scrollTop = this.scroller.scrollTop;
    const scrollLeft = this.scroller.scrollLeft;
    g.translate(-scrollLeft, -scrollTop);
    const first = Math.max(0, Math.floor(scrollTop / this.rowHeight) - 1);
    const last = Math.min(layout.rows.length - 1, Math.ceil((scrollTop + height) / this.rowHeight) + 1);
    this.paint(new CanvasPainter(g), layout, first, last, {
      left: scrollLeft,
      width,
      top: scrollTop,
      height,
    });
    const range = this.visibleRange();
    this.root.dataset.firstEvent = String(range.first);
    this.root.dataset.lastEvent = String(range.last);
  }

  /** Rows are at `row * rowHeight`; the painter's origin is the top of row 0. */
  private rowY(row: number): number {
    return row * this.rowHeight + this.rowHeight / 2;
  }

  private paint(
    p: Painter,
    layout: Layout,
    first: number,
    last: number,
    view: { left: number; width: number; top: number; height: number },
  ): void {
    const model = this.model;
    const messages = this.messages;
    if (model === null || messages === null) return;
    const rh = this.rowHeight;
    const lw = this.laneWidth;
    const top = first * rh;
    const bottom = (last + 1) * rh;
    const totalWidth = this.gutter + layout.lanes.length * lw;
    // Lanes: a tint per user, the lane line, the selected lane.
    p.begin('lanes');
    layout.lanes.forEach((lane, column) => {
      const x = this.gutter + column * lw;
      const user = lane.user === null ? -1 : Number(lane.user.slice(1));
      const tint =
        lane.node === this.selectedLane
          ? '#eff6ff'
          : lane.kind === 'server'
            ? '#f1f5f9'
            : lane.kind === 'attacker' || lane.clone === true
              ? '#fff1f2'
              : user % 2 === 0
                ? '#ffffff'
                : '#f8fafc';
      p.rect(x, top, lw, bottom - top, { fill: tint, cls: 'lane-bg' });
      p.begin('lane', { 'data-lane': lane.node });
      p.line(this.laneX(column), top, this.laneX(column), bottom, {
        stroke: lane.kind === 'server' ? '#64748b' : lane.kind === 'attacker' ? COLOURS.attacker : '#cbd5e1',
        width: lane.kind === 'device' ? 1 : 2,
        cls: 'lane-line',
      });
      p.end();
    });
    p.end();
    // Fault windows.
    for (const w of layout.windows) {
      const column = layout.column.get(w.lane);
      if (column === undefined || w.to < first || w.from > last) continue;
      const y1 = Math.max(top, w.from * rh);
      const y2 = Math.min(bottom, w.to * rh);
      const colour = w.kind === 'crash' ? '#fecaca' : w.kind === 'offline' ? '#e5e7eb' : '#fed7aa';
      p.rect(this.gutter + column * lw + 4, y1, lw - 8, Math.max(0, y2 - y1), {
        fill: colour,
        opacity: 0.55,
        cls: `window window-${w.kind}`,
      });
    }
    // Cursor band.
    const cursorRow = this.cursorRow();
    if (cursorRow >= first && cursorRow <= last) {
      p.rect(0, cursorRow * rh, Math.max(totalWidth, view.left + view.width), rh, {
        fill: COLOURS.cursor,
        cls: 'cursor',
      });
    }
    // Full-width rows: phases and checks.
    for (let row = first; row <= last; row++) {
      const event = model.events[layout.rows[row] ?? -1];
      if (event === undefined || laneOfEvent(event) !== null) continue;
      const y = this.rowY(row);
      const failed = event.kind === 'check' || event.kind === 'divergence' || event.kind === 'not-converged';
      p.begin(failed ? 'check' : 'phase', { 'data-event': String(event.index) });
      p.rect(this.gutter, row * rh + 1, totalWidth - this.gutter, rh - 2, {
        fill: failed ? '#fee2e2' : '#eef2ff',
        stroke: failed ? COLOURS.check : '#c7d2fe',
        width: failed ? 1.5 : 1,
      });
      if (rh >= 9) {
        p.text(this.gutter + 8, y, phaseText(event), {
          fill: failed ? '#991b1b' : '#3730a3',
          size: Math.min(12, rh - 4),
          weight: failed ? 'bold' : 'normal',
        });
      }
      p.end();
    }
    // Arrows.
    const ids = new Set<number>();
    for (let b = Math.floor(first / BLOCK); b <= Math.floor(last / BLOCK); b++) {
      for (const id of layout.blocks[b] ?? []) ids.add(id);
    }
    const cursorMessages = new Set(messages.byEvent.get(this.cursor) ?? []);
    for (const index of this.related)
      for (const id of messages.byEvent.get(index) ?? []) cursorMessages.add(id);
    p.begin('messages');
    for (const id of [...ids].sort((a, b) => a - b)) {
      const message = messages.messages[id];
      if (message !== undefined)
        this.paintMessage(p, layout, message, cursorMessages.has(id) || id === this.focusMessage);
    }
    p.end();
    // Event glyphs and the gutter.
    p.begin('events');
    for (let row = first; row <= last; row++) {
      const event = model.events[layout.rows[row] ?? -1];
      if (event === undefined) continue;
      const y = this.rowY(row);
      if (rh >= 8) {
        p.text(6, y, `#${event.index + 1}`, { fill: '#64748b', size: Math.min(11, rh - 3), mono: true });
        p.text(this.gutter - 6, y, formatTicksShort(event.t), {
          fill: '#94a3b8',
          size: Math.min(10, rh - 4),
          align: 'right',
          mono: true,
        });
      }
      const lane = laneOfEvent(event);
      if (lane === null || lane === undefined) continue;
      const column = layout.column.get(lane);
      if (column === undefined) continue;
      this.paintGlyph(
        p,
        event,
        this.laneX(column),
        y,
        event.index === this.cursor || this.related.has(event.index),
      );
    }
    p.end();
    if (cursorRow >= first && cursorRow <= last) {
      p.line(0, cursorRow * rh, totalWidth, cursorRow * rh, { stroke: COLOURS.cursorLine, width: 1 });
      p.line(0, (cursorRow + 1) * rh, totalWidth, (cursorRow + 1) * rh, {
        stroke: COLOURS.cursorLine,
        width: 1,
      });
    }
  }

  private paintGlyph(p: Painter, event: VizEvent, x: number, y: number, selected: boolean): void {
    const rh = this.rowHeight;
    const r = Math.max(1.5, Math.min(5, rh / 3.2));
    const small = Math.min(11, rh - 4);
    const label = (text: string, colour: string): void => {
      if (rh >= 10) p.text(x + r + 4, y, text, { fill: colour, size: small, cls: 'glyph-label' });
    };
    const attrs = { 'data-event': String(event.index), 'data-kind': event.kind };
    p.begin(`event event-${event.kind}${selected ? ' selected' : ''}`, attrs);
    switch (event.kind) {
      case 'fault': {
        const fault = String(event.data.fault);
        p.polygon(
          [
            [x, y - r - 1.5],
            [x + r + 1.5, y],
            [x, y + r + 1.5],
            [x - r - 1.5, y],
          ],
          { fill: COLOURS.fault, stroke: '#9a3412', width: 1 },
        );
        const until = typeof event.data.until === 'number' ? ` until ${formatTicks(event.data.until)}` : '';
        label(`${fault}${until}`, '#9a3412');
        break;
      }
      case 'lifecycle': {
        const revoked = event.data.lifecycle === 'revoked';
        p.rect(x - r - 1, y - r - 1, 2 * r + 2, 2 * r + 2, {
          fill: revoked ? COLOURS.revoked : COLOURS.lifecycle,
        });
        label(String(event.data.lifecycle), revoked ? COLOURS.revoked : '#166534');
        break;
      }
      case 'create':
        p.circle(x, y, r + 1, { fill: '#ffffff', stroke: COLOURS.lifecycle, width: 2 });
        label(`created (${String(event.data.role)})`, '#166534');
        break;
      case 'op':
        p.polygon(
          [
            [x - r - 1, y - r],
            [x + r + 1, y - r],
            [x, y + r + 1],
          ],
          { fill: COLOURS.op },
        );
        label(
          `op: ${String(event.data.op)}${typeof event.data.skipped === 'string' ? ` skipped (${event.data.skipped})` : ''}`,
          COLOURS.op,
        );
        break;
      case 'adversary':
      case 'attack':
      case 'security': {
        // The attacker's actions and the oracle's summary: a red square.
        p.rect(x - r - 1, y - r - 1, 2 * r + 2, 2 * r + 2, { fill: COLOURS.attacker });
        label(attackText(event), COLOURS.attacker);
        break;
      }
      case 'security-violation':
        p.circle(x, y, r + 2, { fill: COLOURS.check, stroke: '#7f1d1d', width: 1.5 });
        label(`✗ ${String(event.data.oracle)}: ${String(event.data.message)}`, COLOURS.check);
        break;
      case 'divergence':
        p.circle(x, y, r + 2, { fill: COLOURS.check });
        label(`divergence: ${String(event.data.field)}`, COLOURS.check);
        break;
      default: {
        const error = hasError(event);
        p.circle(x, y, r, {
          fill: event.node === 'server' ? '#334155' : error ? '#f87171' : '#1e293b',
          stroke: error ? COLOURS.check : undefined,
          width: 1,
        });
        if (this.laneWidth >= 120 && rh >= 12) {
          const input = event.data.input;
          const text =
            event.kind === 'request'
              ? String((event.data.request as Record<string, unknown> | undefined)?.kind ?? '')
              : typeof input === 'object' && input !== null
                ? String((input as Record<string, unknown>).kind ?? '')
                : '';
          label(text, '#64748b');
        }
      }
    }
    if (selected) p.circle(x, y, r + 4, { stroke: COLOURS.cursorLine, width: 2 });
    p.end();
  }

  private paintMessage(p: Painter, layout: Layout, m: Message, strong: boolean): void {
    const model = this.model;
    if (model === null) return;
    const fromColumn = layout.column.get(m.from);
    const toColumn = layout.column.get(m.to);
    const startRow = layout.rowOf[m.sendEvent] ?? -1;
    if (fromColumn === undefined || toColumn === undefined || startRow < 0) return;
    const rh = this.rowHeight;
    const x1 = this.laneX(fromColumn);
    const y1 = this.rowY(startRow);
    const endRowValue = endRow(m, model, layout.rowOf, layout.rows);
    let x2 = this.laneX(toColumn);
    let y2 = this.rowY(endRowValue);
    const base =
      m.kind === 'request' ? COLOURS.request : m.kind === 'response' ? COLOURS.response : COLOURS.push;
    let colour: string = base;
    let dash: number[] | undefined = m.kind === 'push' ? [3, 3] : undefined;
    if (m.delayed) colour = COLOURS.delayed;
    if (m.duplicate) colour = COLOURS.duplicate;
    if (m.tamper !== null) colour = COLOURS.tampered;
    if (m.fate === 'dropped') {
      colour = COLOURS.dropped;
      dash = [5, 3];
    }
    if (m.fate === 'undelivered') {
      colour = '#9ca3af';
      dash = [2, 3];
    }
    if (m.fate !== 'delivered' && (m.droppedAtSend || m.fate === 'undelivered')) {
      // A stub: the packet never left (lost on sending) or never arrived.
      x2 = x1 + (x2 - x1) * 0.35;
      y2 = y1 + rh * 0.6;
    }
    const cls = `msg msg-${m.kind} msg-${m.fate}${m.duplicate ? ' msg-duplicate' : ''}${m.delayed ? ' msg-delayed' : ''}${m.tamper !== null ? ' msg-tampered' : ''}`;
    p.begin(cls, {
      'data-message': String(m.id),
      'data-topic': topicOf(m),
      'data-from': m.from,
      'data-to': m.to,
    });
    const width = strong ? 2.6 : m.kind === 'push' ? 1 : 1.3;
    p.line(x1, y1, x2, y2, {
      stroke: colour,
      width,
      dash,
      opacity: strong ? 1 : 0.85,
      title: `${m.kind} ${m.label} ${m.from} → ${m.to}: ${m.fate}${m.duplicate ? ' (duplicate)' : ''}`,
    });
    const angle = Math.atan2(y2 - y1, x2 - x1);
    const size = Math.max(3, Math.min(7, rh / 2.5)) + (strong ? 1.5 : 0);
    if (m.fate === 'delivered') {
      p.polygon(
        [
          [x2, y2],
          [x2 - size * Math.cos(angle - 0.45), y2 - size * Math.sin(angle - 0.45)],
          [x2 - size * Math.cos(angle + 0.45), y2 - size * Math.sin(angle + 0.45)],
        ],
        { fill: colour },
      );
    } else if (m.fate === 'dropped') {
      const s = size * 0.8;
      p.line(x2 - s, y2 - s, x2 + s, y2 + s, { stroke: COLOURS.dropped, width: 2 });
      p.line(x2 - s, y2 + s, x2 + s, y2 - s, { stroke: COLOURS.dropped, width: 2 });
    } else if (rh >= 9) {
      p.text(x2 + 3, y2, '?', { fill: '#6b7280', size: 10 });
    }
    if (m.tamper !== null && rh >= 8)
      p.text((x1 + x2) / 2, (y1 + y2) / 2 - 6, '⚡', { fill: COLOURS.tampered, size: 12, align: 'center' });
    if (m.duplicate && rh >= 10)
      p.text(x2 + (x2 > x1 ? -14 : 14), y2 - 7, '2×', {
        fill: COLOURS.duplicate,
        size: 9,
        align: 'center',
        weight: 'bold',
      });
    if (strong && rh >= 10) {
      const label = m.kind === 'response' ? `${m.label} (${topicOf(m)})` : m.label;
      p.text((x1 + x2) / 2, (y1 + y2) / 2 - 8, label, {
        fill: colour,
        size: 11,
        align: 'center',
        weight: 'bold',
      });
    }
    p.end();
  }

  /** Finds what is under the mouse: an event glyph, else the nearest arrow. */
  private pick(e: MouseEvent): { event?: VizEvent; message?: Message } {
    const layout = this.layout;
    const model = this.model;
    const messages = this.messages;
    if (layout === null || model === null || messages === null) return {};
    const rect = this.scroller.getBoundingClientRect();
    const x = e.clientX - rect.left + this.scroller.scrollLeft;
    const y = e.clientY - rect.top + this.scroller.scrollTop;
    const row = Math.floor(y / this.rowHeight);
    const event = model.events[layout.rows[row] ?? -1];
    if (event !== undefined) {
      const lane = laneOfEvent(event);
      const column = lane === null || lane === undefined ? undefined : layout.column.get(lane);
      if (lane === null) return { event };
      if (column !== undefined && Math.abs(x - this.laneX(column)) <= Math.max(10, this.rowHeight))
        return { event };
    }
    let best: Message | undefined;
    let bestDistance = 6;
    const block = Math.floor(row / BLOCK);
    for (const id of layout.blocks[block] ?? []) {
      const m = messages.messages[id];
      if (m === undefined) continue;
      const fromColumn = layout.column.get(m.from);
      const toColumn = layout.column.get(m.to);
      if (fromColumn === undefined || toColumn === undefined) continue;
      const x1 = this.laneX(fromColumn);
      const y1 = this.rowY(layout.rowOf[m.sendEvent] ?? 0);
      let x2 = this.laneX(toColumn);
      let y2 = this.rowY(endRow(m, model, layout.rowOf, layout.rows));
      if (m.fate !== 'delivered' && (m.droppedAtSend || m.fate === 'undelivered')) {
        x2 = x1 + (x2 - x1) * 0.35;
        y2 = y1 + this.rowHeight * 0.6;
      }
      const d = distanceToSegment(x, y, x1, y1, x2, y2);
      if (d < bestDistance) {
        bestDistance = d;
        best = m;
      }
    }
    if (best !== undefined) return { message: best };
    return event === undefined ? {} : {};
  }

  private hover(e: MouseEvent): void {
    const found = this.pick(e);
    const rect = this.root.getBoundingClientRect();
    if (found.message !== undefined) showCard(this.tooltip, messageCard(found.message, this.model));
    else if (found.event !== undefined) showCard(this.tooltip, eventCard(found.event));
    else {
      this.tooltip.hidden = true;
      return;
    }
    const left = Math.min(e.clientX - rect.left + 14, rect.width - this.tooltip.offsetWidth - 8);
    const top = Math.min(e.clientY - rect.top + 14, rect.height - this.tooltip.offsetHeight - 8);
    this.tooltip.style.left = `${Math.max(4, left)}px`;
    this.tooltip.style.top = `${Math.max(4, top)}px`;
  }

  private click(e: MouseEvent): void {
    const found = this.pick(e);
    if (found.event !== undefined) this.callbacks.select(found.event.index);
    else if (found.message !== undefined) {
      const m = found.message;
      this.callbacks.select(m.fate === 'delivered' ? m.endEvent : m.sendEvent);
    }
  }

  /** The whole diagram (or rows `from`..`to` of the current filter) as an SVG document. */
  exportSvg(range?: { from: number; to: number }): string {
    const layout = this.layout;
    const model = this.model;
    if (layout === null || model === null) return '';
    const first = Math.max(0, range?.from ?? 0);
    const last = Math.min(layout.rows.length - 1, range?.to ?? layout.rows.length - 1);
    const svg = new SvgPainter();
    const width = this.gutter + layout.lanes.length * this.laneWidth + 16;
    const offset = first * this.rowHeight;
    // Header: lane names.
    svg.begin('lane-heads');
    layout.lanes.forEach((lane, column) => {
      svg.text(this.laneX(column), HEADER / 2, lane.node, {
        fill: '#0f172a',
        size: 13,
        weight: 'bold',
        align: 'center',
        mono: true,
        cls: 'lane-name',
      });
    });
    svg.end();
    svg.begin('body', { transform: `translate(0 ${HEADER - offset})` });
    this.paint(svg, layout, first, last, {
      left: 0,
      width,
      top: offset,
      height: (last - first + 1) * this.rowHeight,
    });
    svg.end();
    const height = HEADER + (last - first + 1) * this.rowHeight + 8;
    const config = model.header.config;
    return svg.document(
      width,
      height,
      `Lockstep trace: preset ${config.preset ?? 'custom'}, seed ${config.seed}, engine ${config.engine}, events ${model.events[layout.rows[first] ?? 0]?.index ?? 0}–${model.events[layout.rows[last] ?? 0]?.index ?? 0}`,
    );
  }

  /** Rows currently on screen (first, last) in the current filter. */
  visibleRows(): { from: number; to: number } {
    const top = Math.max(0, Math.floor(this.scroller.scrollTop / this.rowHeight));
    const count = Math.ceil(this.scroller.clientHeight / this.rowHeight);
    return { from: top, to: top + count };
  }
}

function hasError(event: VizEvent): boolean {
  const outputs = Array.isArray(event.data.outputs) ? (event.data.outputs as unknown[]) : [];
  if (outputs.some((o) => typeof o === 'object' && o !== null && 'error' in o)) return true;
  const response = event.data.response;
  return (
    typeof response === 'object' &&
    response !== null &&
    (response as Record<string, unknown>).kind === 'error'
  );
}

/** A short label for an attacker or oracle event. */
export function attackText(event: VizEvent): string {
  const d = event.data;
  if (event.kind === 'adversary')
    return `adversary: ${String(d.plan ?? 'random')} (${String(d.steps ?? 0)} steps)`;
  if (event.kind === 'security') {
    return `oracles: ${String(d.violations ?? 0)} violation(s), ${String(d.leakedPlaintexts ?? 0)} of ${String(d.plaintexts ?? 0)} plaintexts readable`;
  }
  const on = [d.device, d.from === undefined ? undefined : `${String(d.from)}→${String(d.to)}`, d.of]
    .filter((part) => typeof part === 'string')
    .join(' ');
  return `${String(d.op ?? event.kind)}${on === '' ? '' : ` ${on}`}`;
}

function phaseText(event: VizEvent): string {
  const d = event.data;
  switch (event.kind) {
    case 'check':
      return `✗ ${String(d.property)} — ${String(d.message)}  [${Array.isArray(d.rules) ? d.rules.join(', ') : ''}]`;
    case 'setup':
      return `setup: ${String(d.users)} users × ${String(d.devicesPerUser)} devices, ${String(d.contacts)} contact pairs, ${String(d.schedule)} schedule entries`;
    case 'faults-on':
      return 'faults on: setup is over, per-packet faults start';
    case 'heal':
      return 'heal: faults end, the liveness phase starts';
    case 'converged':
      return `converged ${formatTicks(Number(d.ticksAfterHeal))} after healing`;
    case 'not-converged':
      return `✗ not converged ${formatTicks(Number(d.ticksAfterHeal))} after healing`;
    case 'liveness-timeout':
      return 'liveness bound passed';
    case 'stale-epoch':
      return `clock jumps ${formatTicks(Number(d.jump))} (past MAXLATENCY) before the final drain`;
    case 'summary':
      return 'hourly summary';
    case 'end':
      return 'end of run';
    case 'op':
      return `op: ${String(d.op)} ${typeof d.device === 'string' ? d.device : ''}${typeof d.skipped === 'string' ? ` skipped: ${d.skipped}` : ''}`;
    case 'divergence':
      return `✗ divergence between engines: ${String(d.field)}`;
    default:
      return event.kind;
  }
}

function distanceToSegment(px: number, py: number, x1: number, y1: number, x2: number, y2: number): number {
  const dx = x2 - x1;
  const dy = y2 - y1;
  const length = dx * dx + dy * dy;
  const t = length === 0 ? 0 : Math.max(0, Math.min(1, ((px - x1) * dx + (py - y1) * dy) / length));
  return Math.hypot(px - (x1 + t * dx), py - (y1 + t * dy));
}

function showCard(tooltip: HTMLElement, card: HTMLElement): void {
  clear(tooltip);
  tooltip.append(card);
  tooltip.hidden = false;
}

/** Flattens small nested values into `key: value` rows for a card. */
export function fieldRows(
  value: unknown,
  prefix = '',
  out: [string, string][] = [],
  depth = 0,
): [string, string][] {
  if (out.length > 40) return out;
  if (Array.isArray(value)) {
    if (value.length === 0) out.push([prefix, '[]']);
    else if (value.every((v) => typeof v !== 'object' || v === null)) out.push([prefix, value.join(', ')]);
    else value.slice(0, 8).forEach((v, i) => fieldRows(v, `${prefix}[${i}]`, out, depth + 1));
    if (value.length > 8 && value.some((v) => typeof v === 'object'))
      out.push([prefix, `… ${value.length - 8} more`]);
    return out;
  }
  if (typeof value === 'object' && value !== null) {
    for (const [k, v] of Object.entries(value as Record<string, unknown>))
      fieldRows(v, prefix === '' ? k : `${prefix}.${k}`, out, depth + 1);
    return out;
  }
  out.push([prefix, String(value)]);
  return out;
}

function cardTable(title: string, rows: readonly [string, string][], note?: string): HTMLElement {
  const card = el('div', { class: 'card' });
  card.append(el('div', { class: 'card-title' }, title));
  const table = el('table', { class: 'card-fields' });
  for (const [k, v] of rows) {
    const tr = el('tr');
    tr.append(el('th', {}, k), el('td', {}, v));
    table.append(tr);
  }
  card.append(table);
  if (note !== undefined) card.append(el('div', { class: 'card-note' }, note));
  return card;
}

/** The hover card of a message: what it was, its fate, and its fields (ids, sizes, counters, fingerprints). */
export function messageCard(m: Message, model: TraceModel | null): HTMLElement {
  const sent = model?.events[m.sendEvent];
  const rows: [string, string][] = [
    ['from → to', `${m.from} → ${m.to}`],
    [
      'fate',
      `${m.fate}${m.duplicate ? ' (duplicate copy)' : ''}${m.dropReason !== null ? ` — ${m.dropReason}${m.droppedAtSend ? ' on sending' : ' on arrival'}` : ''}`,
    ],
  ];
  if (m.requestId !== null) rows.push(['requestId', String(m.requestId)]);
  if (sent !== undefined) rows.push(['sent', `#${sent.index + 1} at ${formatTicks(sent.t)}`]);
  if (m.transit !== null) rows.push(['transit', `${m.transit} ticks${m.delayed ? ' (delayed)' : ''}`]);
  if (m.tamper !== null)
    rows.push([
      'tampered',
      m.tamper === 'flip' ? 'flip: a bit of the body flipped' : 'jump: counter pushed past MAX_FORWARD_JUMPS',
    ]);
  for (const [k, v] of fieldRows(m.fields)) if (k !== 'requestId') rows.push([k, v]);
  const title =
    m.kind === 'push'
      ? 'push (fetch notification)'
      : m.kind === 'request'
        ? `request: ${m.label}`
        : `response: ${m.label} (to ${topicOf(m)})`;
  return cardTable(
    title,
    rows,
    'Traces carry ids, sizes, counters and fingerprints only — never keys or plaintext.',
  );
}

/** The hover card of an event. */
export function eventCard(event: VizEvent): HTMLElement {
  const rows: [string, string][] = [
    ['node', event.node],
    ['time', `${formatTicks(event.t)} (t=${event.t}, seq ${event.seq})`],
  ];
  const data = { ...event.data };
  delete data.abstractHash;
  for (const [k, v] of fieldRows(data)) rows.push([k, v]);
  if (event.changedParts.length > 0) rows.push(['state changed', event.changedParts.join(', ')]);
  return cardTable(`#${event.index + 1} ${event.kind}`, rows);
}
