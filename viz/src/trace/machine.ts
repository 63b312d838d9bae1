/**
 * The model's state machines as the statechart view draws them, read from the generated
 * model/diagrams/<id>.json (tools/model-diagrams.ts: xstate's `machine.definition` for the states,
 * and its list of every guarded transition, eventless ones included), and the
 * questions a trace asks of them: which state an event left a machine in, and which transition
 * fired.
 *
 * A trace made with the model engine records the machine's path through a step (`data.model`:
 * the state before, then after each microstep). A trace made with the impl engine records only the
 * spec-level abstract state; for it {@link deriveDeviceState} and {@link deriveSessionState} map
 * the abstract lifecycle or session phase to the machine's resting state, and the view labels the
 * result as derived.
 * @module
 */
import { isPlainRecord } from './model.js';

/** One state node. */
export interface MachineState {
  /** Full dotted id (`device.linked.idle`). */
  readonly id: string;
  readonly key: string;
  readonly type: string;
  readonly parent: string | null;
  readonly children: readonly string[];
  /** Full id of the initial child of a compound state. */
  readonly initial: string | null;
  readonly depth: number;
}

/** One guarded branch of a state's `on` or `always` list. */
export interface MachineTransition {
  readonly id: number;
  readonly source: string;
  /** Event type; `(always)` for an eventless transition. */
  readonly event: string;
  readonly guard: string | null;
  /** Full target ids; empty for a targetless (internal) transition. */
  readonly targets: readonly string[];
  readonly actions: readonly string[];
}

/** A machine. */
export interface Machine {
  readonly id: string;
  /** The model/ module that defines it. */
  readonly file: string;
  readonly states: ReadonlyMap<string, MachineState>;
  readonly transitions: readonly MachineTransition[];
}

function strip(target: string): string {
  return target.startsWith('#') ? target.slice(1) : target;
}

function guardText(guard: unknown): string | null {
  if (guard === undefined || guard === null) return null;
  if (typeof guard === 'string') return guard;
  if (isPlainRecord(guard) && typeof guard.type === 'string') {
    const params = isPlainRecord(guard.params) ? Object.values(guard.params).map(String) : [];
    return params.length === 0 ? guard.type : `${guard.type}(${params.join(', ')})`;
  }
  return null;
}

function actionText(action: unknown): string {
  if (typeof action === 'string') return action;
  if (isPlainRecord(action) && typeof action.type === 'string') return action.type;
  return '(inline)';
}

/** Parses a model/diagrams JSON file's text. */
export function parseMachine(text: string): Machine {
  const file: unknown = JSON.parse(text);
  if (!isPlainRecord(file) || !isPlainRecord(file.definition) || typeof file.id !== 'string') {
    throw new Error('not a model/diagrams machine file');
  }
  const states = new Map<string, MachineState>();
  const transitions: MachineTransition[] = [];
  const visit = (node: Record<string, unknown>, parent: string | null, depth: number): void => {
    const id = String(node.id);
    const children = isPlainRecord(node.states) ? Object.values(node.states).filter(isPlainRecord) : [];
    const initial =
      isPlainRecord(node.initial) && Array.isArray(node.initial.target) ? node.initial.target[0] : null;
    states.set(id, {
      id,
      key: String(node.key),
      type: String(node.type),
      parent,
      children: children.map((c) => String(c.id)),
      initial: typeof initial === 'string' ? strip(initial) : null,
      depth,
    });
    // Older diagram files have no `transitions` list: read the definition's own (no eventless ones).
    if (!Array.isArray(file.transitions)) {
      for (const t of Array.isArray(node.transitions) ? node.transitions : []) {
        if (!isPlainRecord(t)) continue;
        transitions.push({
          id: transitions.length,
          source: id,
          event: typeof t.eventType === 'string' && t.eventType !== '' ? t.eventType : '(always)',
          guard: guardText(t.guard),
          targets: Array.isArray(t.target) ? t.target.filter((x) => typeof x === 'string').map(strip) : [],
          actions: Array.isArray(t.actions) ? t.actions.map(actionText) : [],
        });
      }
    }
    for (const child of children) visit(child, id, depth + 1);
  };
  visit(file.definition, null, 0);
  // tools/model-diagrams.ts lists every guarded branch, eventless ones included (xstate's
  // definition JSON leaves `always` out).
  if (Array.isArray(file.transitions)) {
    for (const t of file.transitions) {
      if (!isPlainRecord(t) || typeof t.source !== 'string') continue;
      transitions.push({
        id: transitions.length,
        source: t.source,
        event: typeof t.event === 'string' ? t.event : '(always)',
        guard: typeof t.guard === 'string' ? t.guard : null,
        targets: Array.isArray(t.targets)
          ? t.targets.filter((x): x is string => typeof x === 'string').map(strip)
          : [],
        actions: Array.isArray(t.actions) ? t.actions.map(actionText) : [],
      });
    }
  }
  return { id: file.id, file: typeof file.file === 'string' ? file.file : '', states, transitions };
}

/** The full id of a state given relative to the machine root (`linked.idle` → `device.linked.idle`). */
export function fullStateId(machine: Machine, relative: string): string {
  return relative === '' ? machine.id : `${machine.id}.${relative}`;
}

/** The state and its ancestors, innermost first. */
export function ancestorsOrSelf(machine: Machine, id: string): string[] {
  const out: string[] = [];
  let cursor: string | null = id;
  while (cursor !== null) {
    out.push(cursor);
    cursor = machine.states.get(cursor)?.parent ?? null;
  }
  return out;
}

/** True when `id` is `ancestor` or inside it. */
export function within(id: string, ancestor: string): boolean {
  return id === ancestor || id.startsWith(`${ancestor}.`);
}

/**
 * The transitions that can take the machine from state `from` to state `to` in one microstep: the
 * source is `from` or an ancestor, and `to` is a target or inside one (a compound target enters its
 * initial child). The deepest source wins, as in xstate's selection. With no such transition and
 * `from === to`, the targetless transitions of `from` and its ancestors (internal ones) are
 * returned. Empty when nothing matches.
 */
export function firedTransitions(machine: Machine, from: string, to: string): MachineTransition[] {
  const sources = ancestorsOrSelf(machine, from);
  for (const source of sources) {
    const found = machine.transitions.filter(
      (t) => t.source === source && t.targets.some((target) => within(to, target)),
    );
    if (found.length > 0) return found;
  }
  if (from === to) {
    for (const source of sources) {
      const found = machine.transitions.filter((t) => t.source === source && t.targets.length === 0);
      if (found.length > 0) return found;
    }
  }
  return [];
}

/** Where a machine is at an event, and how it got there. */
export interface MachinePosition {
  /** Full id of the highlighted state. */
  readonly state: string;
  /** States visited during the step, full ids (path[0] is the state before). */
  readonly path: readonly string[];
  /** Transitions that fired during the step, in order. */
  readonly fired: readonly MachineTransition[];
  /** True when recorded by the model engine; false when derived from the abstract state. */
  readonly recorded: boolean;
  /** Compound states the step passed through, when derived (e.g. `session.sending`). */
  readonly via: readonly string[];
  /** One line explaining where the position comes from. */
  readonly source: string;
}

/** A position from `data.model` (paths relative to the machine root). */
export function recordedPosition(machine: Machine, path: readonly string[], state: string): MachinePosition {
  const full = path.map((p) => fullStateId(machine, p));
  const fired: MachineTransition[] = [];
  for (let i = 0; i + 1 < full.length; i++) {
    const from = full[i] ?? '';
    const to = full[i + 1] ?? '';
    fired.push(...firedTransitions(machine, from, to));
  }
  return {
    state: fullStateId(machine, state),
    path: full,
    fired,
    recorded: true,
    via: [],
    source: `recorded by the model engine (${path.length - 1} microstep${path.length === 2 ? '' : 's'})`,
  };
}

/** A device's lifecycle (spec/device-abstract.ts) as the device machine's resting state. */
export function deviceStateOfLifecycle(machine: Machine, lifecycle: string | null): string {
  switch (lifecycle) {
    case null:
      return `${machine.id}.creatingAccount`;
    case 'provisioning':
      return `${machine.id}.provisioning.waiting`;
    case 'registering':
      return `${machine.id}.registering`;
    case 'linked':
      return `${machine.id}.linked.idle`;
    case 'revoked':
      return `${machine.id}.revoked`;
    default:
      return machine.id;
  }
}

/**
 * The device machine's position derived from the abstract lifecycle before and after a step: the
 * resting state of each, and the transition between them when the lifecycle changed.
 */
export function deriveDeviceState(
  machine: Machine,
  before: string | null,
  after: string | null,
): MachinePosition {
  const from = deviceStateOfLifecycle(machine, before);
  const to = deviceStateOfLifecycle(machine, after);
  const fired = from === to ? [] : firedAlong(machine, from, to);
  return {
    state: to,
    path: from === to ? [to] : [from, to],
    fired,
    recorded: false,
    via: [],
    source: `derived from the abstract lifecycle '${after ?? 'not created'}' (this trace has no model state)`,
  };
}

/** Transitions along a short route from `from` to `to`: direct, or through one intermediate state. */
function firedAlong(machine: Machine, from: string, to: string): MachineTransition[] {
  const direct = firedTransitions(machine, from, to);
  if (direct.length > 0) return direct;
  for (const middle of machine.states.keys()) {
    const first = firedTransitions(machine, from, middle);
    if (first.length === 0) continue;
    const second = firedTransitions(machine, middle, to);
    if (second.length > 0) return [...first, ...second];
  }
  return [];
}

/** A session (spec/abstract.ts `SessionAbstract`) as the fields the derivation reads. */
interface SessionView {
  readonly phase?: unknown;
  readonly senderChainIndex?: unknown;
  readonly baseKeyFp?: unknown;
  readonly receiverChains?: unknown;
}

function currentSession(record: unknown): SessionView | null {
  if (!isPlainRecord(record) || !isPlainRecord(record.sessions)) return null;
  const current = record.sessions.current;
  return isPlainRecord(current) ? current : null;
}

function receiverTotal(session: SessionView | null): string {
  if (session === null || !Array.isArray(session.receiverChains)) return '';
  return JSON.stringify(session.receiverChains);
}

/**
 * The session machine's position for one peer device record (`record:<user>.<device>` part), derived
 * from its current session before and after an event: `noSession`, `initiating` or `established`,
 * with the operation it passed through when something changed (a new session from a bundle or a
 * PreKey message, a send advancing the sending chain, a receive changing a receiving chain).
 */
export function deriveSessionState(machine: Machine, before: unknown, after: unknown): MachinePosition {
  const restOf = (session: SessionView | null): string => {
    if (session === null) return `${machine.id}.noSession`;
    return session.phase === 'established' ? `${machine.id}.established` : `${machine.id}.initiating`;
  };
  const old = currentSession(before);
  const now = currentSession(after);
  const from = restOf(old);
  const to = restOf(now);
  const via: string[] = [];
  if (now !== null && (old === null || old.baseKeyFp !== now.baseKeyFp)) {
    // A new current session: made from a bundle (we initiated) or from a PreKey message (they did).
    via.push(now.phase === 'initiating' ? `${machine.id}.processingBundle` : `${machine.id}.decrypting`);
  } else if (now !== null && old !== null) {
    if (now.senderChainIndex !== old.senderChainIndex) via.push(`${machine.id}.sending`);
    if (receiverTotal(now) !== receiverTotal(old) || now.phase !== old.phase)
      via.push(`${machine.id}.decrypting`);
  }
  const fired: MachineTransition[] = [];
  for (const middle of via) {
    fired.push(...firedTransitions(machine, from, middle));
  }
  const what = now === null ? 'no current session' : `current session ${String(now.phase)}`;
  return {
    state: machine.states.has(to) ? to : machine.id,
    path: from === to && via.length === 0 ? [to] : [from, ...via, to],
    fired,
    recorded: false,
    via: via.filter((v) => machine.states.has(v)),
    source: `derived from the peer record (${what}); the simulator does not run the session machine inside devices`,
  };
}

/** The server machine's top-level state that handles a request kind (`register-account` → `registerAccount`). */
export function serverRouteOf(machine: Machine, requestKind: string): string | null {
  const camel = requestKind.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
  const candidates = [camel, camel.replace(/Prekeys$/, 'PreKeys')];
  for (const candidate of candidates) {
    const id = `${machine.id}.${candidate}`;
    if (machine.states.has(id)) return id;
  }
  const lower = camel.toLowerCase();
  for (const state of machine.states.values()) {
    if (state.depth === 1 && state.key.toLowerCase() === lower) return state.id;
  }
  return null;
}

/** The server machine's position for an impl-only trace: back in `serving`, having routed the request. */
export function deriveServerState(machine: Machine, requestKind: string | null): MachinePosition {
  const serving = `${machine.id}.serving`;
  const route = requestKind === null ? null : serverRouteOf(machine, requestKind);
  return {
    state: machine.states.has(serving) ? serving : machine.id,
    path: route === null ? [serving] : [serving, route, serving],
    fired: [],
    recorded: false,
    via: route === null ? [] : [route],
    source: `derived: the server rests in 'serving' between requests${route === null ? '' : `; this '${requestKind ?? ''}' request is handled in '${route.slice(machine.id.length + 1)}'`} (this trace has no model state)`,
  };
}
