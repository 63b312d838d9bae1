/**
 * The statechart view (after the Stately inspector): a machine of model/ drawn from its generated
 * definition — compound states as nested boxes laid out by elkjs (layered, hierarchical), one edge
 * per (source, target) pair labelled with its events — with the state at the cursor highlighted,
 * the states the step passed through tinted, and the transitions that fired emphasised.
 *
 * Layouts are computed once per machine and cached; d3 draws the SVG and gives it pan and zoom.
 * @module
 */
import * as d3 from 'd3';
import type { ElkExtendedEdge, ElkNode } from 'elkjs/lib/elk-api.js';
import { within, type Machine, type MachinePosition, type MachineTransition } from '../trace/machine.js';
import type { LayoutReply, LayoutRequest } from '../worker/elk-worker.js';
import { clear, el } from './dom.js';

/** One drawn edge: every transition between one source and one target. */
interface EdgeGroup {
  readonly id: string;
  readonly source: string;
  readonly target: string;
  readonly transitions: readonly MachineTransition[];
  readonly lines: readonly string[];
}

/** A laid-out machine. */
interface MachineLayout {
  readonly graph: ElkNode;
  readonly groups: ReadonlyMap<string, EdgeGroup>;
  /** Transitions of the root without a target (handled in any state): listed, not drawn. */
  readonly anyState: readonly MachineTransition[];
  /** Deepest level drawn (null: all). */
  readonly depth: number | null;
  readonly width: number;
  readonly height: number;
}

const CHAR = 6.6;
const STATE_HEIGHT = 26;
const MAX_LABEL_LINES = 3;

function labelLines(transitions: readonly MachineTransition[]): string[] {
  const counts = new Map<string, number>();
  for (const t of transitions) counts.set(t.event, (counts.get(t.event) ?? 0) + 1);
  const lines = [...counts].map(
    ([event, count]) => `${event === '(always)' ? 'always' : event}${count > 1 ? ` ×${count}` : ''}`,
  );
  if (lines.length <= MAX_LABEL_LINES) return lines;
  return [...lines.slice(0, MAX_LABEL_LINES - 1), `+${lines.length - MAX_LABEL_LINES + 1} more`];
}

/**
 * The state a drawing at `depth` shows for `id`: the state itself, or its ancestor at `depth` when it
 * lies deeper (a collapsed compound state stands for everything inside it). `null` draws every level.
 */
export function visibleState(machine: Machine, id: string, depth: number | null): string {
  if (depth === null) return id;
  let cursor = id;
  for (;;) {
    const state = machine.states.get(cursor);
    if (state === undefined || state.depth <= depth || state.parent === null) return cursor;
    cursor = state.parent;
  }
}

/** The ELK graph of a machine drawn down to `depth` (null: every level). */
export function machineGraph(
  machine: Machine,
  depth: number | null,
): { graph: ElkNode; groups: Map<string, EdgeGroup>; anyState: MachineTransition[] } {
  const shown = [...machine.states.values()].filter((state) => depth === null || state.depth <= depth);
  const nodes = new Map<string, ElkNode>();
  for (const state of shown) {
    const hidden = state.children.length > 0 && depth !== null && state.depth >= depth;
    const label = hidden ? `${state.key} ⊕${countInside(machine, state.id)}` : state.key;
    nodes.set(state.id, {
      id: state.id,
      width: Math.max(60, label.length * CHAR + 22),
      height: STATE_HEIGHT,
      children: [],
      layoutOptions: { 'elk.padding': '[top=30,left=14,bottom=14,right=14]' },
    });
  }
  let root: ElkNode | undefined;
  for (const state of shown) {
    const node = nodes.get(state.id);
    if (node === undefined) continue;
    if (state.parent === null) root = node;
    else nodes.get(state.parent)?.children?.push(node);
  }
  for (const node of nodes.values()) {
    if ((node.children ?? []).length > 0) {
      delete node.width;
      delete node.height;
    }
  }
  if (root === undefined) throw new Error(`machine ${machine.id} has no root`);
  const buckets = new Map<string, MachineTransition[]>();
  const anyState: MachineTransition[] = [];
  for (const t of machine.transitions) {
    const rawTarget = t.targets[0] ?? t.source;
    if (t.source === machine.id && rawTarget === machine.id) {
      anyState.push(t);
      continue;
    }
    const source = visibleState(machine, t.source, depth);
    const target = visibleState(machine, rawTarget, depth);
    // A transition between two states inside one collapsed compound stays inside it.
    if (source === target && (source !== t.source || target !== rawTarget)) continue;
    const key = `${source}→${target}`;
    let list = buckets.get(key);
    if (list === undefined) buckets.set(key, (list = []));
    list.push(t);
  }
  const groups = new Map<string, EdgeGroup>();
  const edges: ElkExtendedEdge[] = [];
  for (const [key, transitions] of buckets) {
    const [source = '', target = ''] = key.split('→');
    const id = `edge-${groups.size}`;
    const lines = labelLines(transitions);
    groups.set(id, { id, source, target, transitions, lines });
    edges.push({
      id,
      sources: [source],
      targets: [target],
      labels: [
        {
          text: lines.join('\n'),
          width: Math.max(...lines.map((l) => l.length)) * 6 + 6,
          height: lines.length * 12 + 2,
        },
      ],
    });
  }
  root.edges = edges;
  root.layoutOptions = {
    'elk.algorithm': 'layered',
    'elk.hierarchyHandling': 'INCLUDE_CHILDREN',
    'elk.direction': 'DOWN',
    'elk.json.shapeCoords': 'ROOT',
    'elk.json.edgeCoords': 'ROOT',
    'elk.layered.spacing.nodeNodeBetweenLayers': '34',
    'elk.spacing.nodeNode': '22',
    'elk.spacing.edgeLabel': '3',
    'elk.layered.nodePlacement.strategy': 'BRANDES_KOEPF',
    'elk.edgeRouting': 'ORTHOGONAL',
    'elk.padding': '[top=36,left=14,bottom=14,right=14]',
  };
  return { graph: root, groups, anyState };
}

/** Number of states inside a compound state. */
function countInside(machine: Machine, id: string): number {
  let n = 0;
  for (const state of machine.states.values()) if (state.id.startsWith(`${id}.`)) n++;
  return n;
}

const layouts = new Map<string, Promise<MachineLayout>>();

let layoutWorker: Worker | null = null;
let nextRequest = 0;
const waiting = new Map<number, (reply: LayoutReply) => void>();

/** Lays out a graph with elkjs in a web worker. */
function layoutInWorker(graph: ElkNode): Promise<ElkNode> {
  if (layoutWorker === null) {
    layoutWorker = new Worker(new URL('../worker/elk-worker.ts', import.meta.url), { type: 'module' });
    layoutWorker.onmessage = (event: MessageEvent<LayoutReply>) => {
      waiting.get(event.data.id)?.(event.data);
      waiting.delete(event.data.id);
    };
  }
  const worker = layoutWorker;
  const id = nextRequest++;
  return new Promise((resolve, reject) => {
    waiting.set(id, (reply) => (reply.ok ? resolve(reply.graph) : reject(new Error(reply.error))));
    const request: LayoutRequest = { id, graph };
    worker.postMessage(request);
  });
}

/** Lays out a machine at a depth once (elkjs, in a worker) and caches the result. */
export function layoutMachine(machine: Machine, depth: number | null): Promise<MachineLayout> {
  const cacheKey = `${machine.id}@${String(depth)}`;
  let cached = layouts.get(cacheKey);
  if (cached === undefined) {
    const { graph, groups, anyState } = machineGraph(machine, depth);
    cached = layoutInWorker(graph).then((laid) => ({
      graph: laid,
      groups,
      anyState,
      depth,
      width: laid.width ?? 0,
      height: laid.height ?? 0,
    }));
    layouts.set(cacheKey, cached);
  }
  return cached;
}

function flatten(node: ElkNode, out: ElkNode[] = []): ElkNode[] {
  out.push(node);
  for (const child of node.children ?? []) flatten(child, out);
  return out;
}

function edgePath(edge: ElkExtendedEdge): string {
  const path = d3.path();
  for (const section of edge.sections ?? []) {
    const points = [section.startPoint, ...(section.bendPoints ?? []), section.endPoint];
    points.forEach((p, i) => (i === 0 ? path.moveTo(p.x, p.y) : path.lineTo(p.x, p.y)));
  }
  return path.toString();
}

/** A statechart panel. */
export class StatechartView {
  readonly root: HTMLElement;
  private readonly title: HTMLElement;
  private readonly note: HTMLElement;
  private readonly svg: SVGSVGElement;
  private readonly zoom: d3.ZoomBehavior<SVGSVGElement, unknown>;
  private current: { machine: Machine; layout: MachineLayout } | null = null;
  private last: { machine: Machine; position: MachinePosition; title: string } | null = null;
  private request = 0;
  /** Levels drawn per machine (null: all); large machines start with their top level. */
  private readonly depths = new Map<string, number | null>();
  private readonly levels: HTMLButtonElement;
  private lastShown = '';

  constructor(parent: HTMLElement, testId: string) {
    this.root = el('div', { class: 'chart', 'data-testid': testId });
    const bar = el('div', { class: 'chart-bar' });
    this.title = el('div', { class: 'chart-title' });
    this.levels = el(
      'button',
      { type: 'button', class: 'small', 'data-testid': `${testId}-levels` },
      'all levels',
    );
    const fit = el('button', { type: 'button', class: 'small', title: 'fit the whole machine' }, 'fit');
    const focus = el(
      'button',
      { type: 'button', class: 'small', title: 'centre the current state' },
      'focus',
    );
    const expand = el(
      'button',
      { type: 'button', class: 'small', title: 'use the whole column for this chart' },
      'expand',
    );
    fit.addEventListener('click', () => this.fit());
    focus.addEventListener('click', () => this.focus());
    this.levels.addEventListener('click', () => {
      const machine = this.last?.machine;
      if (machine === undefined) return;
      this.depths.set(machine.id, this.depthOf(machine) === null ? 1 : null);
      const last = this.last;
      if (last !== null) void this.show(last.machine, last.position, last.title);
    });
    expand.addEventListener('click', () => {
      const expanded = this.root.classList.toggle('expanded');
      expand.textContent = expanded ? 'restore' : 'expand';
      window.setTimeout(() => this.focus(), 50);
    });
    bar.append(this.title, this.levels, fit, focus, expand);
    this.note = el('div', { class: 'chart-note' });
    this.svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
    this.svg.setAttribute('class', 'chart-svg');
    this.root.append(bar, this.note, this.svg);
    parent.append(this.root);
    this.zoom = d3
      .zoom<SVGSVGElement, unknown>()
      .scaleExtent([0.05, 3])
      .on('zoom', (event: d3.D3ZoomEvent<SVGSVGElement, unknown>) => {
        d3.select(this.svg).select('g.viewport').attr('transform', event.transform.toString());
      });
    d3.select(this.svg).call(this.zoom);
  }

  /** Shows nothing, with a message. */
  empty(message: string): void {
    this.current = null;
    this.request++;
    this.title.textContent = '';
    this.note.textContent = message;
    this.root.dataset.state = '';
    this.root.dataset.fired = '';
    clear(this.svg);
  }

  /** Levels drawn for a machine: the server's 159 states and the session's 53 start collapsed. */
  private depthOf(machine: Machine): number | null {
    const chosen = this.depths.get(machine.id);
    if (chosen !== undefined) return chosen;
    return machine.states.size > 40 ? 1 : null;
  }

  /** Shows `machine` with `position` highlighted. */
  async show(machine: Machine, position: MachinePosition, title: string): Promise<void> {
    const request = ++this.request;
    this.last = { machine, position, title };
    const depth = this.depthOf(machine);
    this.levels.textContent = depth === null ? 'top level' : 'all levels';
    this.levels.title =
      depth === null ? 'collapse compound states to the top level' : 'draw every nested state';
    const redraw = this.current?.machine.id !== machine.id || this.current.layout.depth !== depth;
    if (redraw) {
      this.title.textContent = title;
      this.note.textContent = `laying out the ${machine.id} machine (${machine.states.size} states, ${machine.transitions.length} transitions) …`;
      this.root.dataset.state = '';
    }
    const layout = await layoutMachine(machine, depth);
    if (request !== this.request) return;
    this.current = { machine, layout };
    this.title.textContent = title;
    const shown = visibleState(machine, position.state, depth);
    this.note.textContent = `${position.source}${shown === position.state ? '' : ` · inside ${shown.slice(machine.id.length + 1)} (collapsed; 'all levels' shows ${position.state.slice(machine.id.length + 1)})`}`;
    this.note.classList.toggle('derived', !position.recorded);
    this.root.dataset.machine = machine.id;
    this.root.dataset.state = position.state;
    this.root.dataset.shownState = shown;
    this.root.dataset.recorded = String(position.recorded);
    if (redraw) this.draw(machine, layout);
    this.highlight(machine, layout, position);
    // Follow the machine: re-frame when the highlighted state changes, as the Stately inspector does.
    if (redraw || shown !== this.lastShown) this.focus();
    this.lastShown = shown;
  }

  private draw(machine: Machine, layout: MachineLayout): void {
    clear(this.svg);
    const svg = d3.select(this.svg);
    const defs = svg.append('defs');
    for (const [id, colour] of [
      ['arrow', '#94a3b8'],
      ['arrow-hot', '#dc2626'],
    ] as const) {
      defs
        .append('marker')
        .attr('id', `${machine.id}-${id}`)
        .attr('viewBox', '0 0 10 10')
        .attr('refX', 9)
        .attr('refY', 5)
        .attr('markerWidth', 7)
        .attr('markerHeight', 7)
        .attr('orient', 'auto-start-reverse')
        .append('path')
        .attr('d', 'M0,0 L10,5 L0,10 z')
        .attr('fill', colour);
    }
    const viewport = svg.append('g').attr('class', 'viewport');
    const nodes = flatten(layout.graph).slice(1);
    const stateGroups = viewport
      .append('g')
      .attr('class', 'states')
      .selectAll<SVGGElement, ElkNode>('g.state')
      .data(nodes)
      .join('g')
      .attr('class', (d) => {
        const collapsed =
          (machine.states.get(d.id)?.children.length ?? 0) > 0 && (d.children ?? []).length === 0;
        return `state ${(d.children ?? []).length > 0 ? 'compound' : 'atomic'}${collapsed ? ' collapsed' : ''}`;
      })
      .attr('data-state', (d) => d.id)
      .attr('transform', (d) => `translate(${d.x ?? 0},${d.y ?? 0})`);
    stateGroups
      .append('rect')
      .attr('width', (d) => d.width ?? 0)
      .attr('height', (d) => d.height ?? 0)
      .attr('rx', (d) => ((d.children ?? []).length > 0 ? 10 : 13));
    stateGroups
      .append('text')
      .attr('x', (d) => ((d.children ?? []).length > 0 ? 12 : (d.width ?? 0) / 2))
      .attr('y', (d) => ((d.children ?? []).length > 0 ? 18 : (d.height ?? 0) / 2))
      .attr('text-anchor', (d) => ((d.children ?? []).length > 0 ? 'start' : 'middle'))
      .attr('dominant-baseline', 'central')
      .text((d) => {
        const state = machine.states.get(d.id);
        const collapsed = state !== undefined && state.children.length > 0 && (d.children ?? []).length === 0;
        return collapsed ? `${state.key} ⊕${countInside(machine, state.id)}` : (state?.key ?? d.id);
      });
    stateGroups.append('title').text((d) => d.id);
    const edges = (layout.graph.edges ?? []) as ElkExtendedEdge[];
    const edgeGroups = viewport
      .append('g')
      .attr('class', 'edges')
      .selectAll<SVGGElement, ElkExtendedEdge>('g.edge')
      .data(edges)
      .join('g')
      .attr('class', 'edge')
      .attr('data-edge', (d) => d.id);
    edgeGroups
      .append('path')
      .attr('d', (d) => edgePath(d))
      .attr('marker-end', `url(#${machine.id}-arrow)`);
    edgeGroups
      .append('title')
      .text((d) =>
        (layout.groups.get(d.id)?.transitions ?? [])
          .map(
            (t) =>
              `${t.event === '(always)' ? 'always' : t.event}${t.guard === null ? '' : ` [${t.guard}]`}${t.actions.length > 0 ? ` / ${t.actions.join(', ')}` : ''}`,
          )
          .join('\n'),
      );
    const labels = edgeGroups
      .append('text')
      .attr('class', 'edge-label')
      .attr('transform', (d) => {
        const label = d.labels?.[0];
        return `translate(${label?.x ?? 0},${label?.y ?? 0})`;
      });
    labels
      .selectAll('tspan')
      .data((d) => layout.groups.get(d.id)?.lines ?? [])
      .join('tspan')
      .attr('x', 2)
      .attr('dy', (_, i) => (i === 0 ? 10 : 12))
      .text((d) => d);
    if (layout.anyState.length > 0) {
      const events = [...new Set(layout.anyState.map((t) => t.event))];
      viewport
        .append('text')
        .attr('class', 'any-state')
        .attr('x', 14)
        .attr('y', 20)
        .text(`in any state: ${events.join(', ')}`);
    }
  }

  private highlight(machine: Machine, layout: MachineLayout, position: MachinePosition): void {
    const svg = d3.select(this.svg);
    const shown = (id: string): string => visibleState(machine, id, layout.depth);
    const active = shown(position.state);
    const visited = new Set(position.path.map(shown));
    const via = position.via.map(shown);
    svg
      .selectAll<SVGGElement, ElkNode>('g.state')
      .classed('active', (d) => d.id === active)
      .classed('active-ancestor', (d) => d.id !== active && within(active, d.id))
      .classed('visited', (d) => d.id !== active && visited.has(d.id))
      .classed('via', (d) => via.includes(d.id))
      .classed('derived', !position.recorded);
    const fired = new Set<string>();
    for (const t of position.fired) {
      for (const group of layout.groups.values()) if (group.transitions.includes(t)) fired.add(group.id);
    }
    svg
      .selectAll<SVGGElement, ElkExtendedEdge>('g.edge')
      .classed('fired', (d) => fired.has(d.id))
      .each(function (d) {
        d3.select(this)
          .select('path')
          .attr('marker-end', `url(#${machine.id}-${fired.has(d.id) ? 'arrow-hot' : 'arrow'})`);
        if (fired.has(d.id)) this.parentNode?.appendChild(this);
      });
    const anyFired = position.fired.some((t) => layout.anyState.includes(t));
    svg.select('text.any-state').classed('fired', anyFired);
    this.root.dataset.fired = [...fired].sort().join(' ');
    this.root.dataset.firedTransitions = position.fired
      .map((t) => `${t.source}:${t.event}→${t.targets.join(',') || '(internal)'}`)
      .join(' | ');
  }

  /** Zooms to fit the whole machine. */
  fit(): void {
    const current = this.current;
    if (current === null) return;
    const box = this.svg.getBoundingClientRect();
    const scale = Math.min(
      box.width / (current.layout.width + 20),
      box.height / (current.layout.height + 20),
      1.5,
    );
    const x = (box.width - current.layout.width * scale) / 2;
    const y = (box.height - current.layout.height * scale) / 2;
    d3.select(this.svg).call(this.zoom.transform, d3.zoomIdentity.translate(x, y).scale(scale));
  }

  /**
   * Frames the step: the active state with the states it passed through (all of them when they fit
   * at a readable scale, else the active state alone); fits small machines whole.
   */
  focus(): void {
    const current = this.current;
    if (current === null) return;
    const box = this.svg.getBoundingClientRect();
    if (box.width === 0 || box.height === 0) return;
    const fitScale = Math.min(
      box.width / (current.layout.width + 20),
      box.height / (current.layout.height + 20),
    );
    if (fitScale >= 0.7) {
      this.fit();
      return;
    }
    const byId = new Map(flatten(current.layout.graph).map((n) => [n.id, n]));
    const marked = Array.from(
      this.svg.querySelectorAll<SVGGElement>('g.state.active, g.state.visited, g.state.via'),
    )
      .map((g) => byId.get(g.dataset.state ?? ''))
      .filter((n): n is ElkNode => n !== undefined && (n.children ?? []).length === 0);
    const active = byId.get(this.root.dataset.shownState ?? '');
    if (active === undefined || marked.length === 0) {
      this.fit();
      return;
    }
    const frame = (nodes: readonly ElkNode[]): { x0: number; y0: number; x1: number; y1: number } => ({
      x0: Math.min(...nodes.map((n) => n.x ?? 0)) - 40,
      y0: Math.min(...nodes.map((n) => n.y ?? 0)) - 40,
      x1: Math.max(...nodes.map((n) => (n.x ?? 0) + (n.width ?? 0))) + 40,
      y1: Math.max(...nodes.map((n) => (n.y ?? 0) + (n.height ?? 0))) + 40,
    });
    let f = frame(marked);
    let scale = Math.min(1, box.width / (f.x1 - f.x0), box.height / (f.y1 - f.y0));
    if (scale < 0.45) {
      f = frame([active]);
      scale = 0.85;
    }
    const cx = (f.x0 + f.x1) / 2;
    const cy = (f.y0 + f.y1) / 2;
    d3.select(this.svg).call(
      this.zoom.transform,
      d3.zoomIdentity.translate(box.width / 2 - cx * scale, box.height / 2 - cy * scale).scale(scale),
    );
  }
}
