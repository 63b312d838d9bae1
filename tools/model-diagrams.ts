/**
 * Generates the drawings and the transition tables of the XState machines in model/ from their
 * definitions, so that what an auditor reads is what runs:
 *
 * | output                                       | what                                                              |
 * | -------------------------------------------- | ----------------------------------------------------------------- |
 * | `model/diagrams/<id>.json`                   | `machine.definition`, every transition ({@link listTransitions}) and `toDirectedGraph(machine)` for the viz |
 * | `model/diagrams/<id>.mmd`                    | a Mermaid `stateDiagram-v2`                                        |
 * | `model/manifest.json`                        | per machine: states, transitions, events (pinned: drift fails)    |
 * | WHITEPAPER.md between `machines:begin/end`   | per machine: the diagram, the transition table and its rule list   |
 *
 * A transition is one entry of a state node's `on`/`always` list (one guarded branch), so a table
 * row, a manifest count and a transition the conformance tests must exercise are the same thing
 * (see {@link listTransitions}).
 *
 * Usage: `npm run model:diagrams` (writes) or `npm run model:diagrams -- --check` (fails when a
 * committed file differs from the regenerated one; run by tools/model-diagrams.test.ts).
 * @module
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { toDirectedGraph } from '@xstate/graph';
import * as prettier from 'prettier';
import type { AnyStateMachine, AnyStateNode, AnyTransitionDefinition } from 'xstate';
import { nodeProvider } from '../spec/crypto/node.js';
import type { Env } from '../spec/env.js';
import { seededRng } from '../spec/rng.js';
import * as deviceModule from '../model/device.js';
import * as serverModule from '../model/server.js';
import * as sessionModule from '../model/session.js';

/** The generated files, relative to the repository root. */
export const DIAGRAMS_DIR = 'model/diagrams';
export const MANIFEST_PATH = 'model/manifest.json';
const WHITEPAPER = 'WHITEPAPER.md';
export const MACHINES_BEGIN = '<!-- machines:begin -->';
export const MACHINES_END = '<!-- machines:end -->';

/** One machine of model/ as the generator sees it. */
export interface MachineEntry {
  /** The module that defines it, relative to the root. */
  readonly file: string;
  readonly machine: AnyStateMachine;
  /** The module's rule list (its `RULES` export), as rule IDs. */
  readonly rules: readonly string[];
  /** The module's doc comment, first paragraph (what the machine is). */
  readonly summary: string;
}

/** One guarded branch of a state node's `on` or `always` list. */
export interface TransitionInfo {
  /** Stable key: `<source state id> <event type> #<branch index>`; eventless transitions use `(always)`. */
  readonly key: string;
  /** The source state node's id (`session.established`). */
  readonly source: string;
  /** The event type, `(always)` for an eventless transition; `after` transitions keep xstate's type. */
  readonly event: string;
  /** Branch index within the source's list for that event (order of evaluation). */
  readonly index: number;
  /** The guard as written (`counterWithinForwardJumpLimit`, `!x`, `a && b`), or null. */
  readonly guard: string | null;
  /** Target state ids; empty for a targetless (internal) transition. */
  readonly targets: readonly string[];
  /** Whether the transition re-enters its source. */
  readonly reenter: boolean;
  /** Action names in order. */
  readonly actions: readonly string[];
}

/** The environment the factories are called with: real crypto, a fixed seed (nothing is drawn). */
function dummyEnv(): Env {
  return { crypto: nodeProvider, rng: seededRng('model-diagrams') };
}

/** The doc comment at the top of a module, first paragraph, on one line. */
function moduleSummary(rootDir: string, file: string): string {
  const source = readFileSync(path.join(rootDir, file), 'utf8');
  const match = /\/\*\*([\s\S]*?)\*\//.exec(source);
  if (match === null) return '';
  const lines = (match[1] ?? '').split('\n').map((line) => line.replace(/^\s*\* ?/, ''));
  const paragraph: string[] = [];
  for (const line of lines) {
    if (line.trim() === '') {
      if (paragraph.length > 0) break;
      continue;
    }
    if (line.startsWith('@')) break;
    paragraph.push(line.trim());
  }
  return paragraph.join(' ');
}

/** Rule IDs from a module's `RULES` export, whatever its shape (array of IDs or objects, or a record). */
export function ruleIdsOf(rules: unknown): string[] {
  const ids = new Set<string>();
  const visit = (value: unknown): void => {
    if (typeof value === 'string') {
      for (const id of value.match(/\bWP-[A-Z]+-[0-9]+\b/g) ?? []) ids.add(id);
    } else if (Array.isArray(value)) {
      for (const item of value as unknown[]) visit(item);
    } else if (value !== null && typeof value === 'object') {
      for (const [key, child] of Object.entries(value)) {
        visit(key);
        visit(child);
      }
    }
  };
  visit(rules);
  return [...ids].sort(compareRuleIds);
}

function compareRuleIds(a: string, b: string): number {
  const [, areaA = '', numA = '0'] = /^WP-([A-Z]+)-([0-9]+)$/.exec(a) ?? [];
  const [, areaB = '', numB = '0'] = /^WP-([A-Z]+)-([0-9]+)$/.exec(b) ?? [];
  return areaA.localeCompare(areaB) || Number(numA) - Number(numB);
}

/** Every machine in model/, in a fixed order (session, server, device). */
export function loadMachines(rootDir: string): MachineEntry[] {
  const env = dummyEnv();
  const entries: { file: string; machine: AnyStateMachine; rules: unknown }[] = [
    {
      file: 'model/session.ts',
      machine: sessionModule.createSessionMachine(env),
      rules: sessionModule.RULES,
    },
    { file: 'model/server.ts', machine: serverModule.createServerMachine(env), rules: serverModule.RULES },
    { file: 'model/device.ts', machine: deviceModule.createDeviceMachine(env), rules: deviceModule.RULES },
  ];
  return entries.map((entry) => ({
    file: entry.file,
    machine: entry.machine,
    rules: ruleIdsOf(entry.rules),
    summary: moduleSummary(rootDir, entry.file),
  }));
}

/** Every state node of a machine, root first, in document order. */
export function listStateNodes(machine: AnyStateMachine): AnyStateNode[] {
  const out: AnyStateNode[] = [];
  const visit = (node: AnyStateNode): void => {
    out.push(node);
    for (const child of Object.values(node.states)) visit(child);
  };
  visit(machine.root);
  return out;
}

/** `name(v1, v2)` for a parameterised guard or action, the bare name otherwise. */
function withParams(name: string, params: unknown): string {
  if (params === undefined || params === null || typeof params === 'function') return name;
  const values =
    typeof params === 'object'
      ? Object.values(params as Record<string, unknown>).map((v) =>
          typeof v === 'string' ? v : JSON.stringify(v),
        )
      : [String(params)];
  return values.length === 0 ? name : `${name}(${values.join(', ')})`;
}

function guardText(guard: unknown): string | null {
  if (guard === undefined || guard === null) return null;
  if (typeof guard === 'string') return guard;
  if (typeof guard === 'function') {
    const named = guard as { name?: string; guards?: unknown[]; check?: unknown };
    // xstate's and()/or()/not() helpers carry their operands.
    const parts = Array.isArray(named.guards) ? named.guards.map((g) => guardText(g) ?? '?') : [];
    if (parts.length > 0 && /not/i.test(named.name ?? '')) return `!${parts.join(' && ')}`;
    if (parts.length > 0 && /or/i.test(named.name ?? '')) return parts.join(' || ');
    if (parts.length > 0) return parts.join(' && ');
    return named.name !== undefined && named.name !== '' ? named.name : '(inline)';
  }
  if (typeof guard === 'object') {
    const object = guard as { type?: unknown; params?: unknown };
    if (typeof object.type === 'string') return withParams(object.type, object.params);
  }
  return '(inline)';
}

function actionName(action: unknown): string {
  if (typeof action === 'string') return action;
  if (typeof action === 'function') {
    const fn = action as { name?: string; type?: unknown };
    if (typeof fn.type === 'string') return fn.type;
    return fn.name !== undefined && fn.name !== '' ? fn.name : '(inline)';
  }
  if (action !== null && typeof action === 'object') {
    const object = action as { type?: unknown; params?: unknown };
    if (typeof object.type === 'string') return withParams(object.type, object.params);
  }
  return '(inline)';
}

/** Names of the machine's actions implemented with xstate's `emit` (its effects as data). */
function emittingActions(machine: AnyStateMachine): Set<string> {
  const out = new Set<string>();
  const actions = (machine.implementations.actions ?? {}) as Record<string, unknown>;
  for (const [name, implementation] of Object.entries(actions)) {
    if ((implementation as { type?: unknown } | null)?.type === 'xstate.emit') out.add(name);
  }
  return out;
}

/** An action as a table shows it: emitting actions are marked. */
function actionCell(name: string, emitting: ReadonlySet<string>): string {
  const base = name.replace(/\(.*$/, '');
  return emitting.has(base) ? `\`${cell(name)}\` ⇒ emits` : `\`${cell(name)}\``;
}

function describeTransition(node: AnyStateNode, t: AnyTransitionDefinition, index: number): TransitionInfo {
  const event = t.eventType === '' ? '(always)' : t.eventType;
  return {
    key: `${node.id} ${event} #${index}`,
    source: node.id,
    event,
    index,
    guard: guardText(t.guard),
    targets: (t.target ?? []).map((target: AnyStateNode) => target.id),
    reenter: t.reenter,
    actions: (t.actions ?? []).map(actionName),
  };
}

/** Every transition of a machine (one per guarded branch), in document order. */
export function listTransitions(machine: AnyStateMachine): TransitionInfo[] {
  const out: TransitionInfo[] = [];
  for (const node of listStateNodes(machine)) {
    for (const [, list] of node.transitions) {
      list.forEach((t, index) => out.push(describeTransition(node, t, index)));
    }
    (node.always ?? []).forEach((t, index) => out.push(describeTransition(node, t, index)));
  }
  return out;
}

/** The {@link TransitionInfo.key} of a transition object xstate reports (e.g. in a microstep). */
export function transitionKeyOf(t: AnyTransitionDefinition): string {
  const node = t.source;
  const event = t.eventType === '' ? '(always)' : t.eventType;
  const list = t.eventType === '' ? (node.always ?? []) : (node.transitions.get(t.eventType) ?? []);
  return `${node.id} ${event} #${list.indexOf(t)}`;
}

/** Event types a machine handles somewhere (xstate's own `after`/`done` types included). */
export function listEventTypes(machine: AnyStateMachine): string[] {
  const types = new Set<string>();
  for (const t of listTransitions(machine)) if (t.event !== '(always)') types.add(t.event);
  return [...types].sort();
}

// ---------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------

/** A readable event label: `after 1000 ms` for xstate's delayed events. */
function eventLabel(event: string): string {
  const after = /^xstate\.after\.([^.]+)\./.exec(event);
  if (after !== null) return `after ${after[1] ?? '?'}${/^\d+$/.test(after[1] ?? '') ? ' ms' : ''}`;
  return event;
}

function mermaidId(stateId: string): string {
  return stateId.replace(/[^A-Za-z0-9_]/g, '_');
}

function mermaidText(text: string): string {
  // Mermaid labels end at a newline and treat ':' and ';' specially; keep them readable.
  return text.replace(/[:;]/g, ' ').replace(/\s+/g, ' ').trim();
}

/** A Mermaid `stateDiagram-v2` of the machine: nested states as composites, one arrow per branch. */
export function toMermaid(machine: AnyStateMachine): string {
  const lines: string[] = ['stateDiagram-v2'];
  const transitions = listTransitions(machine);
  const emit = (node: AnyStateNode, depth: number): void => {
    const pad = '  '.repeat(depth);
    const children = Object.values(node.states);
    if (node !== machine.root) {
      if (children.length > 0) lines.push(`${pad}state ${mermaidId(node.id)} {`);
      else lines.push(`${pad}state "${mermaidText(node.key)}" as ${mermaidId(node.id)}`);
    }
    const inner = node === machine.root ? pad : `${pad}  `;
    if (children.length > 0) {
      if (node.type === 'parallel') {
        children.forEach((child, i) => {
          if (i > 0) lines.push(`${inner}--`);
          emit(child, depth + (node === machine.root ? 0 : 1));
        });
      } else {
        const initial = node.initial?.target?.[0] as AnyStateNode | undefined;
        if (initial !== undefined) lines.push(`${inner}[*] --> ${mermaidId(initial.id)}`);
        for (const child of children) emit(child, depth + (node === machine.root ? 0 : 1));
        for (const child of children) {
          if (child.type === 'final') lines.push(`${inner}${mermaidId(child.id)} --> [*]`);
        }
      }
    }
    if (node !== machine.root && children.length > 0) lines.push(`${pad}}`);
  };
  emit(machine.root, 1);
  const anyState = `${mermaidId(machine.root.id)}_any`;
  if (transitions.some((t) => t.source === machine.root.id))
    lines.push(`  state "(any state)" as ${anyState}`);
  for (const t of transitions) {
    const label = [eventLabel(t.event), t.guard === null ? '' : `[${t.guard}]`].filter((s) => s !== '');
    const from = t.source === machine.root.id ? anyState : mermaidId(t.source);
    const targets = t.targets.length === 0 ? [t.source] : t.targets;
    for (const target of targets) {
      const to = mermaidId(target);
      // A transition on the root applies in every state: it is drawn from "(any state)".
      lines.push(`  ${from} --> ${to} : ${mermaidText(label.join(' '))}`);
    }
  }
  return `${lines.join('\n')}\n`;
}

function cell(text: string): string {
  return text.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

function shortState(machine: AnyStateMachine, stateId: string): string {
  const prefix = `${machine.root.id}.`;
  if (stateId === machine.root.id) return '(any)';
  return stateId.startsWith(prefix) ? stateId.slice(prefix.length) : stateId;
}

/** The Markdown transition table: state | event | guard | target | actions. */
export function transitionTable(machine: AnyStateMachine): string {
  const emitting = emittingActions(machine);
  const rows = ['| state | event | guard | target | actions (emitted effects) |', '|---|---|---|---|---|'];
  for (const t of listTransitions(machine)) {
    const target =
      t.targets.length === 0
        ? '(stays)'
        : t.targets.map((id) => shortState(machine, id)).join(', ') + (t.reenter ? ' (re-enter)' : '');
    rows.push(
      `| ${cell(shortState(machine, t.source))} | \`${cell(eventLabel(t.event))}\` | ${
        t.guard === null ? '—' : `\`${cell(t.guard)}\``
      } | ${cell(target)} | ${t.actions.length === 0 ? '—' : t.actions.map((a) => actionCell(a, emitting)).join(', ')} |`,
    );
  }
  return rows.join('\n');
}

/** The Markdown table of the states that run actions on entry (state | entry actions). */
export function entryTable(machine: AnyStateMachine): string {
  const emitting = emittingActions(machine);
  const rows: string[] = [];
  for (const node of listStateNodes(machine)) {
    const entry = (node.entry ?? []).map(actionName).filter((name) => !name.startsWith('xstate.'));
    if (entry.length === 0) continue;
    rows.push(
      `| ${cell(shortState(machine, node.id))} | ${entry.map((a) => actionCell(a, emitting)).join(', ')} |`,
    );
  }
  if (rows.length === 0) return '';
  return ['| state | entry actions (emitted effects) |', '|---|---|', ...rows].join('\n');
}

/** The manifest entry of one machine. */
export interface ManifestEntry {
  readonly file: string;
  readonly states: number;
  readonly transitions: number;
  readonly events: number;
}

function manifestEntry(entry: MachineEntry): ManifestEntry {
  return {
    file: entry.file,
    // The root is the machine itself, not one of its states.
    states: listStateNodes(entry.machine).length - 1,
    transitions: listTransitions(entry.machine).length,
    events: listEventTypes(entry.machine).length,
  };
}

/** The generated WHITEPAPER.md section (without the markers). */
export function whitepaperSection(entries: readonly MachineEntry[]): string {
  const out: string[] = [
    '',
    'Generated by `npm run model:diagrams` from the machines in `model/`; do not edit by hand. Each',
    'machine is drawn from its XState definition, and every row of its table is one guarded branch',
    '(the transitions the conformance tests in `test/conformance/paths.test.ts` must each exercise on',
    'both engines). A guard or action name cites the rule it enforces; `(stays)` is a transition that',
    'runs its actions without leaving the state; `(any)` is a transition the machine takes in every state.',
    '',
    '| machine | module | states | transitions | events |',
    '|---|---|---|---|---|',
  ];
  for (const entry of entries) {
    const m = manifestEntry(entry);
    out.push(
      `| \`${entry.machine.id}\` | [${entry.file}](${entry.file}) | ${m.states} | ${m.transitions} | ${m.events} |`,
    );
  }
  for (const entry of entries) {
    const id = entry.machine.id;
    out.push('', `### Machine \`${id}\``, '');
    if (entry.summary !== '') out.push(entry.summary, '');
    out.push(
      `Source: [${entry.file}](${entry.file}); drawing data: [${DIAGRAMS_DIR}/${id}.json](${DIAGRAMS_DIR}/${id}.json).`,
      '',
      '```mermaid',
      toMermaid(entry.machine).trimEnd(),
      '```',
      '',
      transitionTable(entry.machine),
      '',
      ...(entryTable(entry.machine) === '' ? [] : [entryTable(entry.machine), '']),
      `Rules this machine enforces (its \`RULES\` list): ${
        entry.rules.length === 0 ? 'none listed' : entry.rules.join(', ')
      }.`,
    );
  }
  out.push('');
  return out.join('\n');
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

async function formatJson(rootDir: string, file: string, value: unknown): Promise<string> {
  const options = (await prettier.resolveConfig(path.join(rootDir, file))) ?? {};
  return prettier.format(JSON.stringify(value), { ...options, parser: 'json' });
}

/** Every generated file (path relative to the root → content) and the new WHITEPAPER.md. */
export async function generate(rootDir: string): Promise<Map<string, string>> {
  const entries = loadMachines(rootDir);
  const files = new Map<string, string>();
  const manifest: Record<string, ManifestEntry> = {};
  for (const entry of entries) {
    const id = entry.machine.id;
    const json = {
      id,
      file: entry.file,
      definition: entry.machine.definition,
      // Every guarded branch, eventless ones included (xstate's definition JSON omits `always`).
      transitions: listTransitions(entry.machine),
      graph: toDirectedGraph(entry.machine),
    };
    const jsonPath = `${DIAGRAMS_DIR}/${id}.json`;
    files.set(jsonPath, await formatJson(rootDir, jsonPath, json));
    files.set(`${DIAGRAMS_DIR}/${id}.mmd`, toMermaid(entry.machine));
    manifest[id] = manifestEntry(entry);
  }
  files.set(MANIFEST_PATH, await formatJson(rootDir, MANIFEST_PATH, manifest));
  const whitepaper = readFileSync(path.join(rootDir, WHITEPAPER), 'utf8').replace(/\r\n?/g, '\n');
  const begin = whitepaper.indexOf(MACHINES_BEGIN);
  const end = whitepaper.indexOf(MACHINES_END);
  if (begin === -1 || end === -1 || end < begin) {
    throw new Error(`${WHITEPAPER} lacks the ${MACHINES_BEGIN} … ${MACHINES_END} markers`);
  }
  files.set(
    WHITEPAPER,
    whitepaper.slice(0, begin + MACHINES_BEGIN.length) + whitepaperSection(entries) + whitepaper.slice(end),
  );
  return files;
}

/** The command line: writes the files, or with `--check` reports every file that differs. */
export async function runModelDiagrams(
  rootDir: string,
  args: readonly string[],
): Promise<{ readonly exitCode: number; readonly output: string[] }> {
  const unknown = args.filter((arg) => arg !== '--check');
  if (unknown.length > 0) {
    return {
      exitCode: 2,
      output: [`model:diagrams: unknown argument ${unknown.join(' ')}; usage: [--check]`],
    };
  }
  const check = args.includes('--check');
  const files = await generate(rootDir);
  const output: string[] = [];
  const problems: string[] = [];
  const diagramsDir = path.join(rootDir, DIAGRAMS_DIR);
  const stale = existsSync(diagramsDir)
    ? readdirSync(diagramsDir)
        .map((name) => `${DIAGRAMS_DIR}/${name}`)
        .filter((file) => !files.has(file))
    : [];
  for (const [file, content] of files) {
    const target = path.join(rootDir, file);
    const committed = existsSync(target) ? readFileSync(target, 'utf8').replace(/\r\n?/g, '\n') : null;
    if (committed === content) continue;
    if (check) {
      problems.push(
        `${file} is ${committed === null ? 'missing' : 'out of date'}; run npm run model:diagrams`,
      );
    } else {
      mkdirSync(path.dirname(target), { recursive: true });
      writeFileSync(target, content);
      output.push(`model:diagrams: wrote ${file}`);
    }
  }
  for (const file of stale) problems.push(`${file} is not generated by any machine; delete it`);
  if (problems.length > 0) {
    output.push(`model:diagrams: ${problems.length} problem(s)`, ...problems);
    return { exitCode: 1, output };
  }
  output.push(`model:diagrams: ${files.size} generated files ${check ? 'up to date' : 'in place'}`);
  return { exitCode: 0, output };
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const rootDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  const { exitCode, output } = await runModelDiagrams(rootDir, process.argv.slice(2));
  for (const line of output) (exitCode === 0 ? console.log : console.error)(line);
  process.exitCode = exitCode;
}
