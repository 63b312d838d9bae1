import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { setup } from 'xstate';
import { listTransitions, runModelDiagrams, toMermaid, transitionTable } from './model-diagrams.js';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

describe('model:diagrams', () => {
  it('the committed diagrams, manifest and WHITEPAPER.md machine section match the machines in model/', async () => {
    const { exitCode, output } = await runModelDiagrams(REPO_ROOT, ['--check']);
    expect(output.join('\n'), 'run `npm run model:diagrams` and commit the result').not.toMatch(/problem/);
    expect(exitCode).toBe(0);
  });

  it('lists one transition per guarded branch, draws every branch and tabulates guards, params and emits', () => {
    const machine = setup({
      types: {} as { events: { type: 'go' } | { type: 'stop' }; emitted: { type: 'out' } },
      guards: { ready: () => true, within: (_, params: { readonly limit: number }) => params.limit > 0 },
      actions: { count: () => undefined },
    }).createMachine({
      id: 'toy',
      initial: 'idle',
      states: {
        idle: {
          on: {
            go: [
              { guard: { type: 'within', params: { limit: 3 } }, target: 'busy', actions: 'count' },
              { guard: 'ready', actions: 'count' },
            ],
          },
        },
        busy: { always: { target: 'idle' }, on: { stop: 'idle' } },
      },
    });
    expect(listTransitions(machine).map((t) => t.key)).toEqual([
      'toy.idle go #0',
      'toy.idle go #1',
      'toy.busy stop #0',
      'toy.busy (always) #0',
    ]);
    const mermaid = toMermaid(machine);
    expect(mermaid).toContain('toy_idle --> toy_busy : go [within(3)]');
    expect(mermaid).toContain('toy_idle --> toy_idle : go [ready]');
    const table = transitionTable(machine);
    expect(table).toContain('| idle | `go` | `within(3)` | busy | `count` |');
    expect(table).toContain('| idle | `go` | `ready` | (stays) | `count` |');
    expect(table).toContain('| busy | `(always)` | — | idle | — |');
  });
});
