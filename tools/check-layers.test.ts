import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { checkLayers, formatViolations, type Violation, type ViolationRule } from './check-layers.js';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

const fixtures: string[] = [];
afterAll(() => {
  for (const dir of fixtures) rmSync(dir, { recursive: true, force: true });
});

/** Writes a throwaway repository with the given files and runs the check over it. */
function check(files: Readonly<Record<string, string>>): Violation[] {
  const root = mkdtempSync(path.join(tmpdir(), 'lockstep-layers-'));
  fixtures.push(root);
  for (const [file, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(root, file)), { recursive: true });
    writeFileSync(path.join(root, file), text);
  }
  return checkLayers(root);
}

function rulesOf(violations: readonly Violation[]): ViolationRule[] {
  return violations.map((v) => v.rule);
}

const EMPTY = 'export const x = 1;\n';

describe('layer rule', () => {
  it('fires when impl/ imports model/ and when model/ imports impl/', () => {
    const violations = check({
      'impl/session.ts': "import { machine } from '../model/session.js';\nexport const a = machine;\n",
      'model/session.ts': "import { a } from '../impl/other.js';\nexport const machine = a;\n",
      'impl/other.ts': EMPTY,
    });
    expect(violations).toEqual([
      expect.objectContaining({ rule: 'layer', file: 'impl/session.ts', line: 1 }),
      expect.objectContaining({ rule: 'layer', file: 'model/session.ts', line: 1 }),
    ]);
    expect(violations[0]?.message).toContain('impl/ must not import model/');
  });

  it("lets a layer's tests use test/support/ fixtures, but not its sources", () => {
    const violations = check({
      'impl/session.test.ts':
        "import { party } from '../test/support/parties.js';\nexport const a = party;\n",
      'impl/session.ts': "import { party } from '../test/support/parties.js';\nexport const b = party;\n",
      'test/support/parties.ts': 'export const party = 1;\n',
    });
    expect(violations).toEqual([
      expect.objectContaining({ rule: 'layer', file: 'impl/session.ts', line: 1 }),
    ]);
  });

  it('fires for every folder spec/ imports outside spec/', () => {
    const folders = ['impl', 'model', 'simulator', 'cli', 'viz', 'bench', 'vectors', 'test', 'tools'];
    const files: Record<string, string> = {};
    for (const folder of folders) {
      files[`spec/uses-${folder}.ts`] = `export * from '../${folder}/x.js';\n`;
      files[`${folder}/x.ts`] = EMPTY;
    }
    const violations = check(files).filter((v) => v.file.startsWith('spec/'));
    expect(violations.map((v) => v.file)).toEqual(folders.map((folder) => `spec/uses-${folder}.ts`).sort());
    expect(new Set(rulesOf(violations))).toEqual(new Set(['layer']));
  });

  it('fires for a JSON import from vectors/ in spec/, even though it is not source', () => {
    const violations = check({
      'spec/kat.ts': "import data from '../vectors/wire.json' with { type: 'json' };\nexport default data;\n",
      'vectors/wire.json': '{}\n',
    });
    expect(rulesOf(violations)).toEqual(['layer']);
  });

  it('fires when impl/ or model/ import simulator/, cli/ or viz/', () => {
    const files: Record<string, string> = { 'simulator/a.ts': EMPTY, 'cli/a.ts': EMPTY, 'viz/a.ts': EMPTY };
    for (const from of ['impl', 'model']) {
      for (const to of ['simulator', 'cli', 'viz'])
        files[`${from}/uses-${to}.ts`] = `import '../${to}/a.js';\n`;
    }
    const violations = check(files);
    expect(violations).toHaveLength(6);
    expect(new Set(rulesOf(violations))).toEqual(new Set(['layer']));
  });

  it('fires when simulator/ imports cli/ or viz/', () => {
    const violations = check({
      'simulator/run.ts':
        "import '../cli/main.js';\nimport { draw } from '../viz/draw.js';\nexport { draw };\n",
      'cli/main.ts': EMPTY,
      'viz/draw.ts': 'export const draw = 1;\n',
    });
    expect(violations.map((v) => [v.rule, v.line])).toEqual([
      ['layer', 1],
      ['layer', 2],
    ]);
  });

  it('lets viz/src/ import spec/, simulator/, the machine JSON and WHITEPAPER.md, but no impl/, model/ or cli/ code', () => {
    const violations = check({
      'viz/src/app.ts': [
        "import { runSimulation } from '../../simulator/run.js';",
        "import { toHex } from '../../spec/hex.js';",
        "import device from '../../model/diagrams/device.json?raw';",
        "import paper from '../../WHITEPAPER.md?raw';",
        "import { view } from './view.js';",
        'export const all = [runSimulation, toHex, device, paper, view];',
      ].join('\n'),
      'viz/src/view.ts': EMPTY.replace('x', 'view'),
      'viz/src/bad.ts': [
        "import { deviceStep } from '../../impl/device.js';",
        "import { machine } from '../../model/device.js';",
        "import { simulate } from '../../cli/simulate.js';",
        'export const all = [deviceStep, machine, simulate];',
      ].join('\n'),
      'viz/server/serve.ts': "import { run } from '../../impl/device.js';\nexport { run };\n",
      'simulator/run.ts': EMPTY,
      'spec/hex.ts': EMPTY,
      'impl/device.ts': EMPTY,
      'model/device.ts': EMPTY,
      'model/diagrams/device.json': '{}\n',
      'WHITEPAPER.md': '# w\n',
      'cli/simulate.ts': EMPTY,
    });
    expect(violations.map((v) => `${v.rule} ${v.file}:${v.line}`)).toEqual([
      'layer viz/src/bad.ts:1',
      'layer viz/src/bad.ts:2',
      'layer viz/src/bad.ts:3',
    ]);
    expect(violations[0]?.message).toContain('viz/src/ must not import impl/');
  });

  it('allows the dependency rule: spec ← impl, spec ← model, both ← simulator ← cli; test and bench import anything', () => {
    const violations = check({
      'spec/a.ts': EMPTY,
      'spec/b.ts': "import { x } from './a.js';\nexport const y = x;\n",
      'impl/a.ts': "import { y } from '../spec/b.js';\nexport const i = y;\n",
      'model/a.ts': "import { y } from '../spec/b.js';\nexport const m = y;\n",
      'simulator/a.ts':
        "import { i } from '../impl/a.js';\nimport { m } from '../model/a.js';\nexport const s = i + m;\n",
      'cli/a.ts':
        "import { s } from '../simulator/a.js';\nimport { i } from '../impl/a.js';\nexport const c = s + i;\n",
      'test/a.test.ts': "import '../impl/a.js';\nimport '../model/a.js';\nimport '../cli/a.js';\n",
      'bench/a.ts': "import '../impl/a.js';\nimport '../model/a.js';\n",
      'spec/a.test.ts': "import { x } from './a.js';\nexport const t = x;\n",
    });
    expect(violations).toEqual([]);
  });

  it('counts dynamic imports and export-from, but not imports written in comments or strings', () => {
    const violations = check({
      'impl/a.ts': "export { m } from '../model/a.js';\nexport const load = () => import('../model/a.js');\n",
      'model/a.ts': 'export const m = 1;\n',
      'impl/b.ts': "// import '../model/a.js';\nexport const s = \"import '../model/a.js'\";\n",
    });
    expect(violations.map((v) => [v.file, v.line])).toEqual([
      ['impl/a.ts', 1],
      ['impl/a.ts', 2],
    ]);
  });
});

describe('cycle rule', () => {
  it('fires on an import cycle and reports the path', () => {
    const violations = check({
      'spec/a.ts': "import { b } from './b.js';\nexport const a = b;\n",
      'spec/b.ts': "import { c } from './c.js';\nexport const b = c;\n",
      'spec/c.ts': "import { a } from './a.js';\nexport const c = a;\n",
      'spec/d.ts': "import { a } from './a.js';\nexport const d = a;\n",
    });
    expect(rulesOf(violations)).toEqual(['cycle']);
    expect(violations[0]?.message).toBe('import cycle: spec/a.ts → spec/b.ts → spec/c.ts → spec/a.ts');
  });

  it('fires on a file that imports itself and across folders that are otherwise allowed', () => {
    const violations = check({
      'tools/self.ts': "import './self.js';\n",
      'test/a.ts': "import '../bench/b.js';\n",
      'bench/b.ts': "import '../test/a.js';\n",
    });
    expect(violations.map((v) => v.message)).toEqual([
      'import cycle: bench/b.ts → test/a.ts → bench/b.ts',
      'import cycle: tools/self.ts → tools/self.ts',
    ]);
  });

  it('stays quiet on a diamond (no cycle)', () => {
    const violations = check({
      'spec/top.ts': "import './left.js';\nimport './right.js';\n",
      'spec/left.ts': "import './bottom.js';\n",
      'spec/right.ts': "import './bottom.js';\n",
      'spec/bottom.ts': EMPTY,
    });
    expect(violations).toEqual([]);
  });
});

describe('libsignal rule', () => {
  it('fires outside test/interop/ and bench/, the viz bundle included', () => {
    const importLibsignal =
      "import { PrivateKey } from '@signalapp/libsignal-client';\nexport { PrivateKey };\n";
    const violations = check({
      'spec/a.ts': importLibsignal,
      'viz/app.js':
        "import * as signal from '@signalapp/libsignal-client/dist/index.js';\nexport { signal };\n",
      'test/scenario.test.ts': importLibsignal,
      'test/interop/session.test.ts': importLibsignal,
      'bench/session.bench.ts': importLibsignal,
    });
    expect(violations.filter((v) => v.rule === 'libsignal').map((v) => v.file)).toEqual([
      'spec/a.ts',
      'test/scenario.test.ts',
      'viz/app.js',
    ]);
  });
});

describe('determinism rule', () => {
  const tokens: readonly (readonly [string, string])[] = [
    ['Math.random', 'export const r = Math.random();\n'],
    ['Date.now', 'export const t = Date.now();\n'],
    ['new Date', 'export const d = new Date(0);\n'],
    ['Date()', 'export const d = Date();\n'],
    ['performance.now', 'export const p = performance.now();\n'],
    ['setTimeout', 'setTimeout(() => undefined, 1);\n'],
    ['setInterval', 'export const h = setInterval(() => undefined, 1);\n'],
    ['setImmediate', 'setImmediate(() => undefined);\n'],
    ['getRandomValues', 'export const g = crypto.getRandomValues(new Uint8Array(4));\n'],
    ['globalThis.setTimeout', 'globalThis.setTimeout(() => undefined, 1);\n'],
    ["Math['random']", "export const r = Math['random']();\n"],
    ['globalThis.Date.now', 'export const t = globalThis.Date.now();\n'],
  ];

  for (const [name, source] of tokens) {
    it(`fires on ${name} in each pure layer`, () => {
      const violations = check({
        'spec/a.ts': source,
        'impl/a.ts': source,
        'model/a.ts': source,
        'simulator/a.ts': source,
      });
      expect(violations.map((v) => `${v.rule} ${v.file}`)).toEqual([
        'determinism impl/a.ts',
        'determinism model/a.ts',
        'determinism simulator/a.ts',
        'determinism spec/a.ts',
      ]);
    });
  }

  it('ignores comments, strings, methods that share a name, and the csprng adapter', () => {
    const violations = check({
      'spec/a.ts': [
        '// Math.random and Date.now are banned; so is new Date( and setTimeout(',
        "export const s = 'performance.now() getRandomValues setInterval(';",
        'export const clock = { setTimeout(run: () => void, ticks: number) { return ticks; } };',
        'clock.setTimeout(() => undefined, 3);',
        'export interface Timers { setInterval(): void }',
        '',
      ].join('\n'),
      'spec/csprng.ts': 'export const f = (b: Uint8Array) => globalThis.crypto.getRandomValues(b);\n',
    });
    expect(violations).toEqual([]);
  });

  it('ignores test files and layers outside spec/, impl/, model/, simulator/', () => {
    const violations = check({
      'spec/a.test.ts': 'export const t = Date.now();\n',
      'simulator/run.test.ts': 'setTimeout(() => undefined, 1);\n',
      'cli/progress.ts': 'export const t = performance.now();\n',
      'bench/x.ts': 'export const r = Math.random();\n',
    });
    expect(violations).toEqual([]);
  });
});

describe('node-builtin rule', () => {
  it('fires on node:*, bare built-ins and their subpaths in pure layers', () => {
    const violations = check({
      'spec/a.ts': "import { createHash } from 'node:crypto';\nexport { createHash };\n",
      'impl/a.ts': "import { readFileSync } from 'fs';\nexport { readFileSync };\n",
      'model/a.ts': "import { readFile } from 'fs/promises';\nexport { readFile };\n",
      'simulator/a.ts': "import { Worker } from 'node:worker_threads';\nexport { Worker };\n",
    });
    expect(violations.map((v) => `${v.rule} ${v.file}`)).toEqual([
      'node-builtin impl/a.ts',
      'node-builtin model/a.ts',
      'node-builtin simulator/a.ts',
      'node-builtin spec/a.ts',
    ]);
  });

  it('fires on Node built-ins in the browser code of viz/, not in its server or tests', () => {
    const violations = check({
      'viz/src/load.ts': "import { readFileSync } from 'node:fs';\nexport { readFileSync };\n",
      'viz/server/serve.ts': "import { createServer } from 'node:http';\nexport { createServer };\n",
      'viz/test/browser.test.ts': "import { spawn } from 'node:child_process';\nexport { spawn };\n",
      'viz/src/timer.ts': 'export const h = setTimeout(() => undefined, 1);\n',
    });
    expect(violations.map((v) => `${v.rule} ${v.file}`)).toEqual(['node-builtin viz/src/load.ts']);
  });

  it('allows the node:crypto provider, tests, tools and the cli', () => {
    const violations = check({
      'spec/crypto/node.ts': "import { createHmac } from 'node:crypto';\nexport { createHmac };\n",
      'spec/a.test.ts': "import { readFileSync } from 'node:fs';\nexport { readFileSync };\n",
      'cli/main.ts': "import { Worker } from 'node:worker_threads';\nexport { Worker };\n",
      'tools/x.ts': "import path from 'node:path';\nexport { path };\n",
      'spec/b.ts': "import { sha256 } from '@noble/hashes/sha2.js';\nexport { sha256 };\n",
    });
    expect(violations).toEqual([]);
  });
});

describe('scope', () => {
  it('skips node_modules, docs/api, dist and hidden folders', () => {
    const violations = check({
      'node_modules/pkg/impl/a.js': "import '../model/a.js';\n",
      'docs/api/assets/main.js': "import '@signalapp/libsignal-client';\n",
      'dist/spec/a.js': 'export const r = Math.random();\n',
      '.cache/spec/a.ts': "import '../../impl/a.js';\n",
      'spec/ok.ts': EMPTY,
    });
    expect(violations).toEqual([]);
  });

  it('passes on this repository', () => {
    const violations = checkLayers(REPO_ROOT);
    expect(formatViolations(violations)).toBe('');
  });
});
