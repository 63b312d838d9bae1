/**
 * The timeline: a scrubber over the whole trace (faults, failed checks, revocations and phases
 * marked along it), step and play controls, jumps to the previous or next fault or failed check,
 * and the cursor's position. Keyboard shortcuts are wired by the app (see {@link SHORTCUTS}).
 * @module
 */
import { formatTicks, type TraceModel } from '../trace/model.js';
import { el } from './dom.js';

/** What the timeline asks the app to do. */
export interface TimelineCallbacks {
  readonly seek: (event: number) => void;
  readonly step: (delta: number) => void;
  readonly togglePlay: () => void;
  readonly jump: (what: 'fault' | 'check' | 'any' | 'lifecycle', direction: 1 | -1) => void;
  readonly home: () => void;
  readonly end: () => void;
  readonly speed: (eventsPerSecond: number) => void;
}

/** Keyboard shortcuts, as the help overlay lists them. */
export const SHORTCUTS: readonly (readonly [string, string])[] = [
  ['→ / ←  (or j / k)', 'step forward / back one event'],
  ['Shift + → / ←', 'step 10 events'],
  ['Space', 'play / pause'],
  ['n / N', 'next / previous fault or failed check'],
  ['f / F', 'next / previous fault'],
  ['c / C', 'next / previous failed check'],
  ['l / L', 'next / previous lifecycle change (a device linked or revoked)'],
  ['Home / End', 'first / last event'],
  ['+ / −', 'taller / shorter rows'],
  ['o', 'open a trace file'],
  ['r', 'run the simulator in the page'],
  ['?', 'this help'],
  ['Esc', 'close a panel'],
];

/** Play speeds (events per second). */
export const SPEEDS = [1, 4, 16, 64, 256] as const;

/** The timeline bar. */
export class TimelineView {
  readonly root: HTMLElement;
  private readonly canvas: HTMLCanvasElement;
  private readonly position: HTMLElement;
  private readonly playButton: HTMLButtonElement;
  private model: TraceModel | null = null;
  /** Phase, fault, revocation and check marks: event index and kind, drawn in this order. */
  private marks: { readonly index: number; readonly kind: 'phase' | 'fault' | 'revoked' | 'check' }[] = [];
  private cursor = -1;
  private dragging = false;

  constructor(
    parent: HTMLElement,
    private readonly callbacks: TimelineCallbacks,
  ) {
    this.root = el('div', { class: 'timeline', 'data-testid': 'timeline' });
    const controls = el('div', { class: 'tl-controls' });
    const button = (label: string, title: string, testId: string, action: () => void): HTMLButtonElement => {
      const b = el('button', { type: 'button', title, 'aria-label': title, 'data-testid': testId }, label);
      b.addEventListener('click', action);
      controls.append(b);
      return b;
    };
    button('|◀', 'first event (Home)', 'first', () => callbacks.home());
    button('◀ fault', 'previous fault (F)', 'prev-fault', () => callbacks.jump('fault', -1));
    button('◀', 'step back one event (←)', 'step-back', () => callbacks.step(-1));
    this.playButton = button('play', 'play / pause (Space)', 'play', () => callbacks.togglePlay());
    button('▶', 'step forward one event (→)', 'step-forward', () => callbacks.step(1));
    button('fault ▶', 'next fault (f)', 'next-fault', () => callbacks.jump('fault', 1));
    button('check ▶', 'next failed check (c)', 'next-check', () => callbacks.jump('check', 1));
    button('▶|', 'last event (End)', 'last', () => callbacks.end());
    const speed = el('select', { title: 'play speed', 'aria-label': 'play speed', 'data-testid': 'speed' });
    for (const s of SPEEDS) speed.append(el('option', { value: String(s) }, `${s} ev/s`));
    speed.value = '4';
    speed.addEventListener('change', () => callbacks.speed(Number(speed.value)));
    controls.append(speed);
    this.canvas = el('canvas', {
      class: 'tl-scrubber',
      'data-testid': 'scrubber',
      title: 'drag to scrub; marks: faults (orange), failed checks (red), revocations (black), phases (blue)',
    });
    this.position = el('div', { class: 'tl-position', 'data-testid': 'position' });
    this.root.append(controls, this.canvas, this.position);
    parent.append(this.root);
    const seekAt = (e: PointerEvent): void => {
      const model = this.model;
      if (model === null || model.events.length === 0) return;
      const rect = this.canvas.getBoundingClientRect();
      const f = Math.max(0, Math.min(1, (e.clientX - rect.left) / rect.width));
      callbacks.seek(Math.round(f * (model.events.length - 1)));
    };
    this.canvas.addEventListener('pointerdown', (e) => {
      this.dragging = true;
      this.canvas.setPointerCapture(e.pointerId);
      seekAt(e);
    });
    this.canvas.addEventListener('pointermove', (e) => {
      if (this.dragging) seekAt(e);
    });
    this.canvas.addEventListener('pointerup', () => {
      this.dragging = false;
    });
    new ResizeObserver(() => this.draw()).observe(this.canvas);
  }

  /** Shows a trace. */
  setTrace(model: TraceModel): void {
    this.model = model;
    const marks: typeof this.marks = [];
    for (const event of model.events) {
      if (event.kind === 'faults-on' || event.kind === 'heal' || event.kind === 'stale-epoch')
        marks.push({ index: event.index, kind: 'phase' });
      if (event.kind === 'lifecycle' && event.data.lifecycle === 'revoked')
        marks.push({ index: event.index, kind: 'revoked' });
    }
    for (const index of model.faults) marks.push({ index, kind: 'fault' });
    for (const index of model.checks) marks.push({ index, kind: 'check' });
    const order = { phase: 0, fault: 1, revoked: 2, check: 3 };
    marks.sort((a, b) => order[a.kind] - order[b.kind]);
    this.marks = marks;
    this.draw();
  }

  /** Moves the cursor mark and the position text. */
  setCursor(index: number): void {
    this.cursor = index;
    const model = this.model;
    const event = model?.events[index];
    this.root.dataset.cursor = String(index);
    this.position.textContent =
      model === null || event === undefined
        ? 'no event'
        : `event ${(index + 1).toLocaleString('en')} / ${model.events.length.toLocaleString('en')} · t = ${formatTicks(event.t)} · ${event.kind} @ ${event.node}`;
    this.draw();
  }

  /** Shows play or pause on the button. */
  setPlaying(playing: boolean): void {
    this.playButton.textContent = playing ? 'pause' : 'play';
    this.root.dataset.playing = String(playing);
  }

  private draw(): void {
    const model = this.model;
    const width = this.canvas.clientWidth;
    const height = this.canvas.clientHeight;
    const ratio = window.devicePixelRatio || 1;
    if (width === 0) return;
    this.canvas.width = Math.round(width * ratio);
    this.canvas.height = Math.round(height * ratio);
    const g = this.canvas.getContext('2d');
    if (g === null) return;
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.fillStyle = '#f1f5f9';
    g.fillRect(0, 0, width, height);
    if (model === null || model.events.length === 0) return;
    const n = Math.max(1, model.events.length - 1);
    const x = (i: number): number => Math.round((i / n) * (width - 2)) + 1;
    for (const mark of this.marks) {
      const at = x(mark.index);
      if (mark.kind === 'phase') {
        g.fillStyle = '#6366f1';
        g.fillRect(at, 0, 2, height);
      } else if (mark.kind === 'fault') {
        g.fillStyle = '#ea580c';
        g.fillRect(at, height * 0.35, 1.5, height * 0.5);
      } else if (mark.kind === 'revoked') {
        g.fillStyle = '#111827';
        g.fillRect(at - 1, 2, 3, height - 4);
      } else {
        g.fillStyle = '#dc2626';
        g.fillRect(at - 1, 0, 3, height);
      }
    }
    if (this.cursor >= 0) {
      g.fillStyle = '#f59e0b';
      g.fillRect(x(this.cursor) - 1.5, 0, 3, height);
      g.beginPath();
      g.arc(x(this.cursor), height / 2, 5, 0, Math.PI * 2);
      g.fill();
    }
  }
}
