/**
 * The Lockstep visualiser: loads a trace (file picker, drag and drop, `?trace=URL`, or a run of the
 * simulator in a web worker), and ties the views together around one cursor — the space-time
 * diagram, the statecharts of the selected device and peer session, the session inspector and the
 * timeline. The URL keeps the trace (or the in-page run), the cursor, the selection and the
 * filters, so a link reopens the same view.
 * @module
 */
import deviceMachineJson from '../../model/diagrams/device.json?raw';
import serverMachineJson from '../../model/diagrams/server.json?raw';
import sessionMachineJson from '../../model/diagrams/session.json?raw';
import whitepaperText from '../../WHITEPAPER.md?raw';
import { BEHAVIOUR_HASH } from '../../simulator/behaviour-hash.js';
import {
  deriveDeviceState,
  deriveServerState,
  deriveSessionState,
  parseMachine,
  recordedPosition,
  type Machine,
  type MachinePosition,
} from './trace/machine.js';
import { buildMessages, type MessageIndex } from './trace/messages.js';
import {
  ATTACKER_LANE,
  TraceFormatError,
  formatTicks,
  isPlainRecord,
  laneOf,
  modelStepOf,
  parseTraceAsync,
  type TraceModel,
} from './trace/model.js';
import { decodeRun, encodeRun, pageRunConfig, type PageRun } from './trace/run-config.js';
import { shivizLog } from './trace/shiviz.js';
import { StateIndex, lastAtOrBefore, type StateAt } from './trace/state.js';
import { parseWhitepaper, renderSection, type Whitepaper } from './trace/whitepaper.js';
import { AggregateView } from './view/aggregate.js';
import { clear, download, el } from './view/dom.js';
import { InspectorView } from './view/inspector.js';
import { RunForm } from './view/run-form.js';
import { COLOURS, SpaceTimeView, topicOf, type DiagramFilter } from './view/spacetime.js';
import { StatechartView } from './view/statechart.js';
import { SHORTCUTS, TimelineView } from './view/timeline.js';
import type { SimReply, SimRequest } from './worker/sim-worker.js';

/** Where the loaded trace came from. */
type Source =
  | { readonly kind: 'url'; readonly url: string }
  | { readonly kind: 'file'; readonly name: string }
  | { readonly kind: 'sim'; readonly run: PageRun };

/** Rows taller than this are a "whole trace" SVG export's limit. */
const SVG_EXPORT_MAX_ROWS = 20_000;

/** The application. */
export class App {
  private readonly machines: { device: Machine; server: Machine; session: Machine };
  private readonly whitepaper: Whitepaper;
  private model: TraceModel | null = null;
  private messages: MessageIndex | null = null;
  private states: StateIndex | null = null;
  private source: Source | null = null;
  private cursor = -1;
  private node: string | null = null;
  private peer: string | null = null;
  private filter: { hiddenLanes: Set<string>; hiddenTopics: Set<string>; hideIdlePolls: boolean } = {
    hiddenLanes: new Set(),
    hiddenTopics: new Set(),
    hideIdlePolls: false,
  };
  private playing = 0;
  private speed = 4;
  private urlTimer = 0;
  private worker: Worker | null = null;
  private lastTraceText = '';

  private readonly traceInfo: HTMLElement;
  private readonly landing: HTMLElement;
  private readonly workspace: HTMLElement;
  private readonly toolbar: HTMLElement;
  private readonly diagram: SpaceTimeView;
  private readonly aggregate: AggregateView;
  private readonly timeline: TimelineView;
  private readonly deviceChart: StatechartView;
  private readonly sessionChart: StatechartView;
  private readonly inspector: InspectorView;
  private readonly runForm: RunForm;
  private readonly rulePanel: HTMLElement;
  private readonly help: HTMLDialogElement;
  private readonly progress: HTMLElement;
  private readonly fileInput: HTMLInputElement;

  constructor(private readonly root: HTMLElement) {
    this.machines = {
      device: parseMachine(deviceMachineJson),
      server: parseMachine(serverMachineJson),
      session: parseMachine(sessionMachineJson),
    };
    this.whitepaper = parseWhitepaper(whitepaperText);

    // Top bar.
    const top = el('header', { class: 'topbar' });
    const brand = el('div', { class: 'brand' }, 'Lockstep ', el('span', {}, 'viz'));
    this.traceInfo = el('div', { class: 'trace-info', 'data-testid': 'trace-info' }, 'no trace loaded');
    const actions = el('div', { class: 'actions' });
    const action = (label: string, title: string, testId: string, run: () => void): HTMLButtonElement => {
      const b = el('button', { type: 'button', title, 'data-testid': testId }, label);
      b.addEventListener('click', run);
      actions.append(b);
      // Exports and saving need a trace; they are enabled when one is loaded.
      if (testId.startsWith('export') || testId === 'save-trace') {
        b.disabled = true;
        b.classList.add('needs-trace');
      }
      return b;
    };
    this.fileInput = el('input', {
      type: 'file',
      accept: '.ndjson,.jsonl,.json,.txt,application/x-ndjson',
      hidden: '',
      'data-testid': 'file-input',
    });
    this.fileInput.addEventListener('change', () => {
      const file = this.fileInput.files?.[0];
      if (file !== undefined) void this.loadFile(file);
      this.fileInput.value = '';
    });
    action('Open trace…', 'open a trace file (o); you can also drop one on the page', 'open', () =>
      this.fileInput.click(),
    );
    action('Run simulator…', 'run the simulator in this page (r)', 'run', () => this.runForm.open());
    action('Export SVG (view)', 'save the rows on screen as SVG', 'export-svg-view', () =>
      this.exportSvg(false),
    );
    action(
      'Export SVG (all)',
      `save the whole diagram as SVG (at most ${SVG_EXPORT_MAX_ROWS.toLocaleString('en')} rows; hide lanes or idle polls to shorten it)`,
      'export-svg-all',
      () => this.exportSvg(true),
    );
    action(
      'Export ShiViz log',
      'save a ShiViz-compatible log (paste into ShiViz, or load the file)',
      'export-shiviz',
      () => this.exportShiviz(),
    );
    action('Save trace', 'save the trace shown (e.g. one run in the page)', 'save-trace', () =>
      this.saveTrace(),
    );
    action('?', 'keyboard shortcuts and legend (?)', 'help', () => this.help.showModal());
    top.append(brand, this.traceInfo, actions, this.fileInput);

    // Timeline.
    this.timeline = new TimelineView(el('div'), {
      seek: (index) => this.seek(index),
      step: (delta) => this.step(delta),
      togglePlay: () => this.togglePlay(),
      jump: (what, direction) => this.jump(what, direction),
      home: () => this.stepTo(0),
      end: () => this.stepTo(Number.MAX_SAFE_INTEGER),
      speed: (s) => {
        this.speed = s;
        if (this.playing !== 0) {
          this.stopPlaying();
          this.togglePlay();
        }
      },
    });

    // Workspace.
    this.workspace = el('main', { class: 'workspace', hidden: '' });
    const left = el('section', { class: 'left' });
    this.toolbar = el('div', { class: 'toolbar', 'data-testid': 'toolbar' });
    const diagramSlot = el('div', { class: 'diagram-slot' });
    left.append(this.toolbar, diagramSlot);
    this.diagram = new SpaceTimeView(diagramSlot, {
      select: (index) => this.selectEvent(index),
      selectLane: (node) => this.selectNode(node),
      hideLane: (node) => {
        this.filter.hiddenLanes.add(node);
        this.applyFilter();
      },
    });
    this.aggregate = new AggregateView(diagramSlot, (rule) => this.openRule(rule));
    const right = el('aside', { class: 'right' });
    const charts = el('div', { class: 'charts' });
    this.deviceChart = new StatechartView(charts, 'device-chart');
    this.sessionChart = new StatechartView(charts, 'session-chart');
    const inspectorSlot = el('div', { class: 'inspector-slot' });
    right.append(charts, inspectorSlot);
    this.inspector = new InspectorView(inspectorSlot, {
      selectPeer: (peer) => {
        this.peer = peer;
        this.inspector.setPeer(peer);
        this.refreshCharts();
        this.saveUrl();
      },
      openRule: (rule) => this.openRule(rule),
    });
    // Drag the bar between the diagram and the right column to share the width differently.
    const splitter = el('div', { class: 'splitter', title: 'drag to resize the columns' });
    const savedWidth = Number(window.localStorage.getItem('lockstep-viz-right') ?? '');
    if (savedWidth > 0) this.workspace.style.setProperty('--right', `${savedWidth}px`);
    splitter.addEventListener('pointerdown', (down) => {
      splitter.setPointerCapture(down.pointerId);
      const move = (e: PointerEvent): void => {
        const width = Math.max(360, Math.min(window.innerWidth - 360, window.innerWidth - e.clientX));
        this.workspace.style.setProperty('--right', `${width}px`);
        window.localStorage.setItem('lockstep-viz-right', String(Math.round(width)));
      };
      const up = (): void => {
        splitter.removeEventListener('pointermove', move);
        splitter.removeEventListener('pointerup', up);
      };
      splitter.addEventListener('pointermove', move);
      splitter.addEventListener('pointerup', up);
    });
    this.workspace.append(left, splitter, right);

    // Landing page.
    this.landing = this.buildLanding();

    // Rule panel, help, progress, drop overlay.
    this.rulePanel = el('aside', { class: 'rule-panel', hidden: '', 'data-testid': 'rule-panel' });
    this.help = this.buildHelp();
    this.progress = el('div', { class: 'progress', hidden: '', 'data-testid': 'progress' });
    const dropOverlay = el(
      'div',
      { class: 'drop-overlay', hidden: '' },
      'Drop a Lockstep trace (.ndjson) to open it',
    );
    this.runForm = new RunForm((run) => void this.runInPage(run));

    root.append(
      top,
      this.timeline.root,
      this.workspace,
      this.landing,
      this.rulePanel,
      this.progress,
      dropOverlay,
    );
    this.timeline.root.hidden = true;

    // Drag and drop anywhere.
    let depth = 0;
    window.addEventListener('dragenter', (e) => {
      e.preventDefault();
      depth++;
      dropOverlay.hidden = false;
    });
    window.addEventListener('dragleave', () => {
      depth = Math.max(0, depth - 1);
      if (depth === 0) dropOverlay.hidden = true;
    });
    window.addEventListener('dragover', (e) => e.preventDefault());
    window.addEventListener('drop', (e) => {
      e.preventDefault();
      depth = 0;
      dropOverlay.hidden = true;
      const file = e.dataTransfer?.files[0];
      if (file !== undefined) void this.loadFile(file);
    });
    document.addEventListener('keydown', (e) => this.key(e));
    window.addEventListener('popstate', () => void this.fromUrl());
  }

  // -------------------------------------------------------------------------------------------
  // Loading

  /** Opens whatever the URL names (a trace URL or an in-page run). */
  async fromUrl(): Promise<void> {
    const params = new URLSearchParams(window.location.search);
    const trace = params.get('trace');
    const run = decodeRun(params);
    if (trace !== null) await this.loadUrl(trace, params);
    else if (run !== null) {
      this.runForm.set(run);
      await this.runInPage(run, params);
    } else {
      this.showLanding();
      this.root.dataset.ready = 'true';
    }
    const rule = params.get('rule');
    if (rule !== null) this.openRule(rule);
  }

  private async loadUrl(url: string, params: URLSearchParams): Promise<void> {
    this.showProgress(`Fetching ${url} …`);
    try {
      const response = await fetch(url);
      if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
      const text = await response.text();
      await this.load(text, { kind: 'url', url }, params);
    } catch (error) {
      this.fail(`Could not load ${url}: ${error instanceof Error ? error.message : String(error)}`);
    }
  }

  private async loadFile(file: File): Promise<void> {
    this.showProgress(`Reading ${file.name} …`);
    try {
      const text = await file.text();
      await this.load(text, { kind: 'file', name: file.name }, new URLSearchParams());
    } catch (error) {
      this.fail(`Could not read ${file.name}: ${error instanceof Error ? error.message : String(error)}`);
    }
  }

  /** Parses and shows a trace. */
  async load(text: string, source: Source, params: URLSearchParams): Promise<void> {
    const started = performance.now();
    this.stopPlaying();
    let model: TraceModel;
    try {
      model = await parseTraceAsync(text, (done, total) =>
        this.showProgress(`Reading events: ${done.toLocaleString('en')} / ${total.toLocaleString('en')}`),
      );
    } catch (error) {
      this.fail(error instanceof TraceFormatError ? error.message : `Not a readable trace: ${String(error)}`);
      return;
    }
    this.showProgress('Matching messages …');
    await new Promise<void>((resolve) => setTimeout(resolve, 0));
    const messages = buildMessages(model);
    this.model = model;
    this.messages = messages;
    this.states = new StateIndex(model);
    this.source = source;
    this.lastTraceText = text;
    this.filter = {
      hiddenLanes: new Set((params.get('hide') ?? '').split(',').filter((s) => s !== '')),
      hiddenTopics: new Set((params.get('topics') ?? '').split(',').filter((s) => s !== '')),
      hideIdlePolls: params.get('idle') === '0',
    };
    this.landing.hidden = true;
    for (const b of this.root.querySelectorAll<HTMLButtonElement>('button.needs-trace')) b.disabled = false;
    this.timeline.root.hidden = false;
    this.workspace.hidden = false;
    this.renderInfo();
    this.renderToolbar();
    this.timeline.setTrace(model);
    if (model.summaryMode) {
      this.diagram.root.hidden = true;
      this.aggregate.show(model);
      this.workspace.classList.add('summary');
    } else {
      this.aggregate.hide();
      this.diagram.root.hidden = false;
      this.workspace.classList.remove('summary');
      const rows = Number(params.get('rows'));
      if (rows > 0) this.diagram.setRowHeight(rows);
      this.diagram.setTrace(model, messages, this.filter);
    }
    const position = Number(params.get('e'));
    this.node = params.get('node');
    this.peer = params.get('peer');
    this.cursor = -1;
    this.hideProgress();
    const loadMs = performance.now() - started;
    document.body.dataset.loadMs = String(Math.round(loadMs));
    this.root.dataset.loaded = String(model.events.length);
    this.seek(Number.isSafeInteger(position) && position >= 1 ? position - 1 : firstInteresting(model));
    this.root.dataset.ready = 'true';
  }

  private async runInPage(run: PageRun, params?: URLSearchParams): Promise<void> {
    this.runForm.open();
    const started = performance.now();
    this.runForm.setStatus('Running… 0.0 s', 'running');
    const ticker = window.setInterval(
      () =>
        this.runForm.setStatus(`Running… ${((performance.now() - started) / 1000).toFixed(1)} s`, 'running'),
      200,
    );
    this.worker?.terminate();
    const worker = new Worker(new URL('./worker/sim-worker.ts', import.meta.url), { type: 'module' });
    this.worker = worker;
    const reply = await new Promise<SimReply>((resolve) => {
      worker.onmessage = (e: MessageEvent<SimReply>) => resolve(e.data);
      worker.onerror = (e) => resolve({ ok: false, error: e.message });
      const request: SimRequest = { config: pageRunConfig(run) };
      worker.postMessage(request);
    });
    window.clearInterval(ticker);
    worker.terminate();
    this.worker = null;
    if (!reply.ok) {
      this.runForm.setStatus(`The run failed: ${reply.error}`, 'fail');
      return;
    }
    const verdict = reply.passed
      ? 'PASS'
      : `FAIL (${reply.violations.map((v) => v.property).join(', ') || reply.divergence || 'divergence'})`;
    this.runForm.setStatus(
      `${verdict} · ${reply.lines.toLocaleString('en')} lines · ${(reply.wallMs / 1000).toFixed(1)} s · sha256 ${reply.sha256}`,
      reply.passed ? 'ok' : 'fail',
    );
    document.body.dataset.runSha256 = reply.sha256;
    const next = params ?? new URLSearchParams();
    await this.load(reply.text, { kind: 'sim', run }, next);
    this.saveUrl();
  }

  private showProgress(text: string): void {
    this.progress.hidden = false;
    this.progress.textContent = text;
  }

  private hideProgress(): void {
    this.progress.hidden = true;
  }

  private fail(message: string): void {
    this.hideProgress();
    this.showLanding();
    const error = this.landing.querySelector('.load-error');
    if (error !== null) {
      error.textContent = message;
      (error as HTMLElement).hidden = false;
    }
    this.root.dataset.ready = 'true';
    this.root.dataset.error = message;
  }

  private showLanding(): void {
    this.landing.hidden = false;
    this.workspace.hidden = true;
    this.timeline.root.hidden = true;
  }

  private buildLanding(): HTMLElement {
    const landing = el('div', { class: 'landing', 'data-testid': 'landing' });
    const open = el('button', { type: 'button', class: 'primary' }, 'Open a trace file…');
    open.addEventListener('click', () => this.fileInput.click());
    const run = el('button', { type: 'button', class: 'primary' }, 'Run the simulator in this page…');
    run.addEventListener('click', () => this.runForm.open());
    // `npm run viz` serves the traces of `npm run viz:fixtures` under examples/; a static copy has none.
    const examples = el('div', { class: 'examples', 'data-testid': 'examples' });
    void fetch('examples/index.json')
      .then(async (response) => (response.ok ? ((await response.json()) as unknown) : []))
      .then((list) => {
        if (!Array.isArray(list) || list.length === 0) return;
        const ul = el('ul');
        for (const item of list) {
          if (!isPlainRecord(item) || typeof item.file !== 'string') continue;
          const link = el(
            'a',
            { href: `?trace=${encodeURIComponent(`examples/${item.file}`)}` },
            String(item.name),
          );
          ul.append(el('li', {}, link, ` — ${String(item.description ?? '')}`));
        }
        examples.append(el('h3', {}, 'Examples (npm run viz:fixtures)'), ul);
      })
      .catch(() => undefined);
    const urlInput = el('input', {
      type: 'url',
      placeholder: 'https://…/trace.ndjson or /trace.ndjson',
      'aria-label': 'trace URL',
    });
    const go = el('button', { type: 'button' }, 'Open URL');
    go.addEventListener('click', () => {
      if (urlInput.value.trim() === '') return;
      const params = new URLSearchParams({ trace: urlInput.value.trim() });
      window.history.pushState(null, '', `?${params.toString()}`);
      void this.fromUrl();
    });
    landing.append(
      el('h1', {}, 'See what happened in a Lockstep run'),
      el(
        'p',
        {},
        'Which device was in which state when, which message crossed the network, where it was lost or duplicated, why a session was archived or a device went stale.',
      ),
      el('div', { class: 'landing-actions' }, open, run),
      el('p', { class: 'muted' }, 'or drop a trace file anywhere on this page, or open one by URL:'),
      el('div', { class: 'row' }, urlInput, go),
      el('p', { class: 'load-error', hidden: '', 'data-testid': 'load-error' }),
      examples,
      el(
        'pre',
        { class: 'hint' },
        'npx lockstep sim --seed 1 --preset default --engine impl --out default.ndjson\nnpx lockstep viz default.ndjson',
      ),
    );
    return landing;
  }

  private buildHelp(): HTMLDialogElement {
    const dialog = el('dialog', { class: 'help', 'data-testid': 'help' });
    const table = el('table', { class: 'kv' });
    for (const [keys, what] of SHORTCUTS) table.append(el('tr', {}, el('th', {}, keys), el('td', {}, what)));
    const legend = el('table', { class: 'kv legend-table' });
    const items: [string, string][] = [
      [COLOURS.request, 'request: device → server'],
      [COLOURS.response, 'response: server → device'],
      [COLOURS.push, 'push: the server tells a device to fetch (dashed)'],
      [COLOURS.dropped, 'dropped packet (dashed, ends in ✕; a stub when lost on sending)'],
      [COLOURS.duplicate, 'duplicated packet: the second copy (2×)'],
      [COLOURS.delayed, 'delayed: transit longer than the base latency + 3 × the mean extra delay'],
      [COLOURS.tampered, 'tampered envelope in a response (⚡)'],
      ['#9ca3af', 'never arrived (the device was gone, or the trace ended): a dotted stub with ?'],
      [COLOURS.fault, 'fault (diamond); shaded lane: partition (orange), offline (grey), server down (red)'],
      [COLOURS.check, 'failed check: a red full-width row'],
    ];
    for (const [colour, text] of items) {
      const swatch = el('span', { class: 'swatch' });
      swatch.style.background = colour;
      legend.append(el('tr', {}, el('th', {}, swatch), el('td', {}, text)));
    }
    const close = el('button', { type: 'button' }, 'Close');
    close.addEventListener('click', () => dialog.close());
    dialog.append(el('h2', {}, 'Keyboard'), table, el('h2', {}, 'Legend'), legend, close);
    document.body.append(dialog);
    return dialog;
  }

  // -------------------------------------------------------------------------------------------
  // Header, toolbar, filters

  private renderInfo(): void {
    const model = this.model;
    const messages = this.messages;
    clear(this.traceInfo);
    if (model === null || messages === null) return;
    const c = model.header.config;
    const source = this.source;
    const where =
      source === null
        ? ''
        : source.kind === 'url'
          ? source.url
          : source.kind === 'file'
            ? source.name
            : 'run in this page';
    const failed = model.checks.length;
    this.traceInfo.append(
      el('span', { class: 'chip' }, `${c.preset ?? 'custom'} · seed ${c.seed} · ${c.engine}`),
      c.bugs.length > 0 ? el('span', { class: 'chip bug' }, `bug: ${c.bugs.join(', ')}`) : '',
      el('span', { class: 'chip' }, `${model.events.length.toLocaleString('en')} events`),
      model.summaryMode
        ? el('span', { class: 'chip' }, 'summary trace')
        : el(
            'span',
            { class: 'chip' },
            `${model.lanes.length} lanes · ${messages.counts.total.toLocaleString('en')} messages`,
          ),
      el(
        'span',
        { class: failed > 0 ? 'chip fail' : 'chip ok', 'data-testid': 'verdict' },
        failed > 0 ? `✗ ${failed} failed check${failed === 1 ? '' : 's'}` : '✓ all checks held',
      ),
      el('span', { class: 'where', title: `behaviour ${model.header.behaviourHash}` }, where),
    );
    if (model.header.behaviourHash !== BEHAVIOUR_HASH) {
      this.traceInfo.append(
        el(
          'span',
          {
            class: 'chip warn',
            title: `trace: ${model.header.behaviourHash}\nthis build: ${BEHAVIOUR_HASH}`,
          },
          'made by other sources (replay would refuse it)',
        ),
      );
    }
    this.root.dataset.modelState = String(model.hasModelState);
  }

  private renderToolbar(): void {
    const model = this.model;
    const messages = this.messages;
    clear(this.toolbar);
    if (model === null || messages === null || model.summaryMode) return;
    // Lanes menu.
    const lanes = el('details', { class: 'menu', 'data-testid': 'lanes-menu' });
    const hidden = this.filter.hiddenLanes.size;
    lanes.append(el('summary', {}, `Lanes (${model.lanes.length - hidden}/${model.lanes.length})`));
    const laneList = el('div', { class: 'menu-body' });
    const users = [...new Set(model.lanes.map((l) => l.user).filter((u): u is string => u !== null))];
    const quick = el('div', { class: 'row' });
    const all = el('button', { type: 'button', class: 'small' }, 'all');
    all.addEventListener('click', () => {
      this.filter.hiddenLanes.clear();
      this.applyFilter();
    });
    quick.append(all);
    for (const user of users) {
      const only = el(
        'button',
        { type: 'button', class: 'small', title: `show only the server and ${user}'s devices` },
        `only ${user}`,
      );
      only.addEventListener('click', () => {
        this.filter.hiddenLanes = new Set(
          model.lanes.filter((l) => l.user !== null && l.user !== user).map((l) => l.node),
        );
        this.applyFilter();
      });
      quick.append(only);
    }
    laneList.append(quick);
    for (const lane of model.lanes) {
      const box = el('input', { type: 'checkbox', 'data-lane': lane.node });
      box.checked = !this.filter.hiddenLanes.has(lane.node);
      box.addEventListener('change', () => {
        if (box.checked) this.filter.hiddenLanes.delete(lane.node);
        else this.filter.hiddenLanes.add(lane.node);
        this.applyFilter();
      });
      laneList.append(el('label', {}, box, ` ${lane.node}`));
    }
    lanes.append(laneList);
    // Message topics menu.
    const topics = new Map<string, number>();
    for (const m of messages.messages) topics.set(topicOf(m), (topics.get(topicOf(m)) ?? 0) + 1);
    const topicMenu = el('details', { class: 'menu', 'data-testid': 'topics-menu' });
    topicMenu.append(
      el(
        'summary',
        {},
        `Messages (${[...topics.keys()].filter((t) => !this.filter.hiddenTopics.has(t)).length}/${topics.size} kinds)`,
      ),
    );
    const topicList = el('div', { class: 'menu-body' });
    const quiet = el(
      'button',
      { type: 'button', class: 'small', title: 'hide fetch, ack and push traffic' },
      'hide polling',
    );
    quiet.addEventListener('click', () => {
      for (const t of ['fetch', 'ack', 'push']) this.filter.hiddenTopics.add(t);
      this.applyFilter();
    });
    const showAll = el('button', { type: 'button', class: 'small' }, 'all');
    showAll.addEventListener('click', () => {
      this.filter.hiddenTopics.clear();
      this.applyFilter();
    });
    topicList.append(el('div', { class: 'row' }, showAll, quiet));
    for (const [topic, count] of [...topics].sort((a, b) => b[1] - a[1])) {
      const box = el('input', { type: 'checkbox', 'data-topic': topic });
      box.checked = !this.filter.hiddenTopics.has(topic);
      box.addEventListener('change', () => {
        if (box.checked) this.filter.hiddenTopics.delete(topic);
        else this.filter.hiddenTopics.add(topic);
        this.applyFilter();
      });
      topicList.append(
        el('label', {}, box, ` ${topic} `, el('span', { class: 'muted' }, `(${count.toLocaleString('en')})`)),
      );
    }
    topicMenu.append(topicList);
    // Idle polls.
    const idle = el('input', { type: 'checkbox', 'data-testid': 'hide-idle' });
    idle.checked = this.filter.hideIdlePolls;
    idle.addEventListener('change', () => {
      this.filter.hideIdlePolls = idle.checked;
      this.applyFilter();
    });
    // Density.
    const smaller = el('button', { type: 'button', class: 'small', title: 'shorter rows (−)' }, '−');
    const larger = el('button', { type: 'button', class: 'small', title: 'taller rows (+)' }, '+');
    smaller.addEventListener('click', () => this.density(-1));
    larger.addEventListener('click', () => this.density(1));
    const c = messages.counts;
    const legend = el(
      'div',
      { class: 'counts', 'data-testid': 'message-counts' },
      swatched(COLOURS.request, 'request'),
      swatched(COLOURS.response, 'response'),
      swatched(COLOURS.dropped, `dropped ${c.dropped}`),
      swatched(COLOURS.duplicate, `duplicated ${c.duplicates}`),
      swatched(COLOURS.delayed, `delayed ${c.delayed}`),
      swatched(COLOURS.tampered, `tampered ${c.tampered}`),
    );
    this.toolbar.append(
      lanes,
      topicMenu,
      el('label', { title: 'hide device steps that only polled an empty mailbox' }, idle, ' hide idle polls'),
      el('span', { class: 'density' }, 'rows ', smaller, larger),
      legend,
    );
  }

  private applyFilter(): void {
    if (this.model === null) return;
    this.diagram.setFilter(this.filter as DiagramFilter);
    this.renderToolbar();
    this.diagram.setCursor(this.cursor);
    this.saveUrl();
  }

  private density(direction: number): void {
    const heights = [3, 5, 8, 12, 18, 24, 32];
    const current = this.diagram.getRowHeight();
    const index = heights.findIndex((h) => h >= current);
    const next =
      heights[
        Math.max(0, Math.min(heights.length - 1, (index < 0 ? heights.length - 1 : index) + direction))
      ] ?? 18;
    this.diagram.setRowHeight(next);
    this.saveUrl();
  }

  // -------------------------------------------------------------------------------------------
  // Cursor

  /** Moves the cursor to an event (any event; the diagram shows the nearest visible row). */
  seek(index: number): void {
    const model = this.model;
    if (model === null || model.events.length === 0) return;
    this.cursor = Math.max(0, Math.min(model.events.length - 1, index));
    const event = model.events[this.cursor];
    if (this.node === null && event !== undefined) this.node = defaultNode(model, this.cursor);
    this.root.dataset.cursor = String(this.cursor);
    this.diagram.setCursor(this.cursor);
    this.timeline.setCursor(this.cursor);
    this.refreshState();
    this.saveUrl();
  }

  private selectEvent(index: number): void {
    const event = this.model?.events[index];
    if (event !== undefined && (event.node === 'server' || /^u\d+\//.test(event.node)))
      this.node = event.node;
    this.seek(index);
  }

  private selectNode(node: string): void {
    this.node = node;
    this.peer = null;
    this.refreshState();
    this.saveUrl();
  }

  /** Steps through the rows the diagram shows (the filter decides what a step is). */
  private step(delta: number): void {
    const model = this.model;
    if (model === null) return;
    const rows = model.summaryMode ? null : this.diagram.rowEvents();
    if (rows === null || rows.length === 0) {
      this.seek(this.cursor + delta);
      return;
    }
    const position = lastAtOrBefore(rows, this.cursor);
    const onRow = position >= 0 && rows[position] === this.cursor;
    // Between rows (the cursor is on a hidden event), one step forward is the next row and one step
    // back is the row before.
    const target = onRow || delta > 0 ? position + delta : position + delta + 1;
    const clamped = Math.max(0, Math.min(rows.length - 1, target));
    this.seek(rows[clamped] ?? this.cursor);
  }

  private stepTo(position: number): void {
    const rows = this.diagram.rowEvents();
    if (this.model?.summaryMode === true || rows.length === 0) {
      this.seek(position);
      return;
    }
    this.seek(rows[Math.max(0, Math.min(rows.length - 1, position))] ?? 0);
  }

  private jump(what: 'fault' | 'check' | 'any' | 'lifecycle', direction: 1 | -1): void {
    const model = this.model;
    if (model === null) return;
    const list =
      what === 'fault'
        ? model.faults
        : what === 'check'
          ? model.checks
          : what === 'lifecycle'
            ? model.events.filter((e) => e.kind === 'lifecycle').map((e) => e.index)
            : [...model.faults, ...model.checks].sort((a, b) => a - b);
    const next =
      direction > 0 ? list.find((i) => i > this.cursor) : [...list].reverse().find((i) => i < this.cursor);
    if (next === undefined) {
      const name = {
        any: 'fault or failed check',
        check: 'failed check',
        fault: 'fault',
        lifecycle: 'lifecycle change',
      }[what];
      this.flash(`no ${direction > 0 ? 'later' : 'earlier'} ${name}`);
      return;
    }
    const event = model.events[next];
    if (event !== undefined && (event.node === 'server' || /^u\d+\//.test(event.node)))
      this.node = event.node;
    if (event?.kind === 'net' && typeof event.data.device === 'string') this.node = event.data.device;
    this.seek(next);
  }

  private flash(text: string): void {
    this.showProgress(text);
    window.setTimeout(() => this.hideProgress(), 1200);
  }

  private togglePlay(): void {
    if (this.playing !== 0) {
      this.stopPlaying();
      return;
    }
    this.playing = window.setInterval(() => {
      const before = this.cursor;
      this.step(1);
      if (this.cursor === before) this.stopPlaying();
    }, 1000 / this.speed);
    this.timeline.setPlaying(true);
  }

  private stopPlaying(): void {
    if (this.playing !== 0) window.clearInterval(this.playing);
    this.playing = 0;
    this.timeline.setPlaying(false);
  }

  /** Updates the inspector and the statecharts for the cursor and the selected node. */
  private refreshState(): void {
    const model = this.model;
    const states = this.states;
    if (model === null || states === null) return;
    const cursorEvent = model.events[this.cursor];
    const node = this.node !== null && model.lanes.some((l) => l.node === this.node) ? this.node : null;
    const state = node === null || model.summaryMode ? null : states.at(node, this.cursor);
    if (node !== null && state !== null && (this.peer === null || !state.parts.has(`record:${this.peer}`))) {
      this.peer = defaultPeer(state, this.peer ?? peerNamedBy(cursorEvent?.data.message));
    }
    this.diagram.setSelectedLane(node);
    this.inspector.setPeer(this.peer);
    this.inspector.show(model, cursorEvent, node, state);
    this.inspector.setPeer(this.peer);
    this.root.dataset.node = node ?? '';
    this.root.dataset.peer = this.peer ?? '';
    void this.drawCharts(node, state);
  }

  private refreshCharts(): void {
    const model = this.model;
    if (model === null || this.states === null || this.node === null || model.summaryMode) return;
    void this.drawCharts(this.node, this.states.at(this.node, this.cursor));
  }

  private async drawCharts(node: string | null, state: StateAt | null): Promise<void> {
    const model = this.model;
    if (model === null) return;
    if (model.summaryMode || node === null || state === null) {
      this.deviceChart.empty(
        model.summaryMode
          ? 'A summary trace has no per-device state.'
          : 'Select a lane to see its statechart.',
      );
      this.sessionChart.empty('');
      return;
    }
    if (laneOf(node)?.kind === 'attacker' || laneOf(node)?.clone === true) {
      this.deviceChart.empty(
        node === ATTACKER_LANE
          ? 'The attacker runs no protocol machine: its actions and what the oracles found are in the inspector.'
          : 'A clone runs a stolen copy of a device outside the simulator’s machines: its steps carry no machine state.',
      );
      this.sessionChart.empty('');
      return;
    }
    const event = model.events[state.event];
    const isServer = node === 'server';
    const machine = isServer ? this.machines.server : this.machines.device;
    let position: MachinePosition;
    const recorded = event === undefined ? null : modelStepOf(event);
    if (recorded !== null) position = recordedPosition(machine, recorded.path, recorded.state);
    else if (isServer) {
      const request =
        event !== undefined && isPlainRecord(event.data.request) ? String(event.data.request.kind) : null;
      position = deriveServerState(machine, request);
    } else {
      const lifecycle = (parts: ReadonlyMap<string, unknown>): string | null => {
        const device = parts.get('device');
        return isPlainRecord(device) && typeof device.lifecycle === 'string' ? device.lifecycle : null;
      };
      position =
        event === undefined
          ? deriveDeviceState(machine, null, null)
          : deriveDeviceState(machine, lifecycle(state.previous), lifecycle(state.parts));
      if (
        event !== undefined &&
        model.hasModelState === false &&
        state.previous.size === 0 &&
        event.kind !== 'step'
      ) {
        position = { ...position, fired: [] };
      }
    }
    const at =
      event === undefined
        ? 'before its first event'
        : `after #${event.index + 1} ${event.kind}${event.index === this.cursor ? '' : ' (its latest event before the cursor)'}`;
    const title = `${isServer ? 'server' : node}: ${position.state.slice(machine.id.length + 1) || machine.id} — ${at}`;
    // The server holds no sessions: its machine gets the whole chart area.
    this.sessionChart.root.hidden = isServer;
    const work: Promise<void>[] = [this.deviceChart.show(machine, position, title)];
    if (!isServer && this.peer !== null) {
      const key = `record:${this.peer}`;
      const sessionPosition = deriveSessionState(
        this.machines.session,
        state.previous.get(key) ?? null,
        state.parts.get(key) ?? null,
      );
      const own = event?.index === this.cursor;
      work.push(
        this.sessionChart.show(
          this.machines.session,
          own ? sessionPosition : { ...sessionPosition, fired: [], via: [], path: [sessionPosition.state] },
          `${node}'s session with ${this.peer}: ${sessionPosition.state.slice(this.machines.session.id.length + 1)}`,
        ),
      );
    } else if (!isServer) {
      this.sessionChart.empty('No peer records yet: select a row of the inspector once the device has one.');
    }
    await Promise.all(work);
  }

  // -------------------------------------------------------------------------------------------
  // Rules, exports, keyboard, URL

  /** Opens the whitepaper panel at a rule. */
  openRule(id: string): void {
    const rule = this.whitepaper.rules.get(id);
    clear(this.rulePanel);
    const close = el('button', { type: 'button', class: 'close', 'aria-label': 'close' }, '×');
    close.addEventListener('click', () => {
      this.rulePanel.hidden = true;
      this.saveUrl();
    });
    this.rulePanel.append(close);
    if (rule === undefined) {
      this.rulePanel.append(el('p', {}, `${id} is not a rule of this WHITEPAPER.md.`));
    } else {
      const section = this.whitepaper.sections.find((s) => s.heading === rule.section);
      this.rulePanel.append(
        el(
          'div',
          { class: 'rule-head' },
          el('strong', {}, id),
          ` — WHITEPAPER.md line ${rule.line}, section ${rule.section}`,
        ),
      );
      if (section !== undefined) this.rulePanel.append(renderSection(section));
    }
    this.rulePanel.hidden = false;
    this.rulePanel.dataset.rule = id;
    const target = this.rulePanel.querySelector<HTMLElement>(`[id="${id}"]`);
    if (target !== null) {
      target.classList.add('highlight');
      target.scrollIntoView({ block: 'center' });
    }
    this.saveUrl(id);
  }

  private exportSvg(all: boolean): void {
    const model = this.model;
    if (model === null || model.summaryMode) {
      this.flash('A summary trace has no space-time diagram to export.');
      return;
    }
    const rows = this.diagram.rowEvents().length;
    if (all && rows > SVG_EXPORT_MAX_ROWS) {
      this.flash(
        `${rows.toLocaleString('en')} rows is too many for one SVG; hide lanes, message kinds or idle polls, or export the view.`,
      );
      return;
    }
    const range = all ? undefined : this.diagram.visibleRows();
    const svg = this.diagram.exportSvg(range);
    const c = model.header.config;
    download(
      `lockstep-${c.preset ?? 'run'}-${c.seed}${all ? '' : `-rows-${range?.from ?? 0}-${range?.to ?? 0}`}.svg`,
      svg,
      'image/svg+xml',
    );
  }

  private exportShiviz(): void {
    const model = this.model;
    if (model === null) return;
    const log = shivizLog(model);
    if (log === null) {
      this.flash('A summary trace has no vector clocks: nothing to export to ShiViz.');
      return;
    }
    const c = model.header.config;
    download(`lockstep-${c.preset ?? 'run'}-${c.seed}.shiviz.log`, log, 'text/plain');
  }

  private saveTrace(): void {
    const model = this.model;
    if (model === null) return;
    const c = model.header.config;
    download(`lockstep-${c.preset ?? 'run'}-${c.seed}.ndjson`, this.lastTraceText, 'application/x-ndjson');
  }

  private key(e: KeyboardEvent): void {
    const target = e.target;
    if (
      target instanceof HTMLInputElement ||
      target instanceof HTMLSelectElement ||
      target instanceof HTMLTextAreaElement
    )
      return;
    if (document.querySelector('dialog[open]') !== null) return;
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const handled = (): void => e.preventDefault();
    switch (e.key) {
      case 'ArrowRight':
      case 'j':
        this.step(e.shiftKey ? 10 : 1);
        return handled();
      case 'ArrowLeft':
      case 'k':
        this.step(e.shiftKey ? -10 : -1);
        return handled();
      case ' ':
        this.togglePlay();
        return handled();
      case 'n':
        this.jump('any', 1);
        return handled();
      case 'N':
        this.jump('any', -1);
        return handled();
      case 'f':
        this.jump('fault', 1);
        return handled();
      case 'F':
        this.jump('fault', -1);
        return handled();
      case 'c':
        this.jump('check', 1);
        return handled();
      case 'C':
        this.jump('check', -1);
        return handled();
      case 'l':
        this.jump('lifecycle', 1);
        return handled();
      case 'L':
        this.jump('lifecycle', -1);
        return handled();
      case 'Home':
        this.stepTo(0);
        return handled();
      case 'End':
        this.stepTo(Number.MAX_SAFE_INTEGER);
        return handled();
      case '+':
      case '=':
        this.density(1);
        return handled();
      case '-':
        this.density(-1);
        return handled();
      case 'o':
        this.fileInput.click();
        return handled();
      case 'r':
        this.runForm.open();
        return handled();
      case '?':
        this.help.showModal();
        return handled();
      case 'Escape':
        this.rulePanel.hidden = true;
        return handled();
      default:
    }
  }

  /** Writes the position, selection and filters into the URL (without a history entry per step). */
  private saveUrl(rule?: string): void {
    window.clearTimeout(this.urlTimer);
    this.urlTimer = window.setTimeout(() => {
      const params = new URLSearchParams();
      const source = this.source;
      if (source?.kind === 'url') params.set('trace', source.url);
      if (source?.kind === 'sim') encodeRun(source.run, params);
      if (this.model !== null && this.cursor >= 0) params.set('e', String(this.cursor + 1));
      if (this.node !== null) params.set('node', this.node);
      if (this.peer !== null) params.set('peer', this.peer);
      if (this.filter.hiddenLanes.size > 0) params.set('hide', [...this.filter.hiddenLanes].join(','));
      if (this.filter.hiddenTopics.size > 0) params.set('topics', [...this.filter.hiddenTopics].join(','));
      if (this.filter.hideIdlePolls) params.set('idle', '0');
      if (this.model !== null && !this.model.summaryMode && this.diagram.getRowHeight() !== 18)
        params.set('rows', String(this.diagram.getRowHeight()));
      const openRule = rule ?? (this.rulePanel.hidden ? undefined : this.rulePanel.dataset.rule);
      if (openRule !== undefined) params.set('rule', openRule);
      const query = params.toString();
      window.history.replaceState(null, '', query === '' ? window.location.pathname : `?${query}`);
    }, 120);
  }
}

function swatched(colour: string, text: string): HTMLElement {
  const swatch = el('span', { class: 'swatch' });
  swatch.style.background = colour;
  return el('span', { class: 'count' }, swatch, ` ${text}`);
}

/** Where a fresh view starts: the first failed check, else the first event. */
function firstInteresting(model: TraceModel): number {
  return model.checks[0] ?? 0;
}

/** The node a fresh view inspects: the cursor event's device or server, else the first device. */
function defaultNode(model: TraceModel, cursor: number): string | null {
  const event = model.events[cursor];
  if (event !== undefined && model.lanes.some((l) => l.node === event.node)) return event.node;
  if (event?.kind === 'check') {
    const named = /\bu\d+\/\d+r*\b/.exec(String(event.data.message ?? ''));
    if (named !== null) return named[0];
  }
  return model.lanes.find((l) => l.kind === 'device')?.node ?? model.lanes[0]?.node ?? null;
}

/** A device address a check's message names (`… encrypted to u1.2 …`), if any. */
function peerNamedBy(message: unknown): string | null {
  return typeof message === 'string' ? (/\bu\d+\.\d+\b/.exec(message)?.[0] ?? null) : null;
}

/** The peer record to show: the requested one if the node has it, else the first with a session. */
function defaultPeer(state: StateAt, wanted: string | null): string | null {
  if (wanted !== null && state.parts.has(`record:${wanted}`)) return wanted;
  const records = [...state.parts.keys()].filter((k) => k.startsWith('record:')).sort();
  const withSession = records.find((k) => {
    const value = state.parts.get(k);
    return isPlainRecord(value) && isPlainRecord(value.sessions) && value.sessions.current !== null;
  });
  const key = withSession ?? records[0];
  return key === undefined ? null : key.slice('record:'.length);
}

/** Formats simulated time (re-exported for the page's own scripts). */
export { formatTicks };
