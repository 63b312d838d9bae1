import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { parseWhitepaperRules, runTraceCheck, TRACEABILITY_PATH, traceCheck } from './trace-check.js';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/**
 * Fixture rule IDs are assembled at run time, so this file never contains a literal ID that the
 * real repository's trace check would report as unknown.
 */
function ruleId(area: string, n: number): string {
  return ['WP', area, String(n).padStart(2, '0')].join('-');
}
const A1 = ruleId('FIX', 1);
const A2 = ruleId('FIX', 2);
const UNKNOWN = ruleId('FIX', 99);

const fixtures: string[] = [];
afterAll(() => {
  for (const dir of fixtures) rmSync(dir, { recursive: true, force: true });
});

function whitepaper(rules: readonly string[], extra = ''): string {
  return [
    '# Fixture whitepaper',
    '',
    `Rules are cited as ${UNKNOWN} in prose outside the list, which is ignored.`,
    '',
    '<!-- rules:begin -->',
    '## Area',
    '',
    ...rules,
    '<!-- rules:end -->',
    '',
    extra,
    '',
  ].join('\n');
}

const RULES = [
  `- **${A1}** The first rule, long enough to be cut: it keeps going well past the eighty characters of a summary.`,
  `- **${A2}** The second rule | with a pipe and a continuation`,
  '  line that is part of its text.',
];

/** A small repository where everything is traced. */
function cleanFiles(): Record<string, string> {
  return {
    'WHITEPAPER.md': whitepaper(RULES),
    'spec/a.ts': `// ${A1}: the constant\nexport const a = 1;\n`,
    'impl/a.ts': `export const b = 2;\n// ${A1}: the decision\n// ${A2}: another\n`,
    'model/a.ts': `// ${A2}: the guard\n`,
    'simulator/p.ts': `// ${A1}: a property\n`,
    'spec/a.test.ts': `it('pins the first rule [${A1}]', () => {});\nit('pins the second [${A2}] [${A1}]', () => {});\n`,
    'vectors/fam.json': JSON.stringify(
      { family: 'fam', tests: [{ id: 1, comment: `mentions ${A2} in prose`, rules: [A1] }] },
      null,
      2,
    ),
  };
}

function repo(files: Readonly<Record<string, string>>): string {
  const root = mkdtempSync(path.join(tmpdir(), 'lockstep-trace-'));
  fixtures.push(root);
  for (const [file, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(root, file)), { recursive: true });
    writeFileSync(path.join(root, file), text);
  }
  return root;
}

describe('rule list', () => {
  it('reads rules between the markers, with continuation lines', () => {
    const parsed = parseWhitepaperRules(whitepaper(RULES));
    expect(parsed.errors).toEqual([]);
    expect(parsed.rules.map((rule) => [rule.id, rule.line])).toEqual([
      [A1, 8],
      [A2, 9],
    ]);
    expect(parsed.rules[1]?.text).toBe(
      'The second rule | with a pipe and a continuation line that is part of its text.',
    );
  });

  it('fails on a rule defined twice', () => {
    const { errors } = traceCheck(
      repo({ ...cleanFiles(), 'WHITEPAPER.md': whitepaper([...RULES, `- **${A1}** again`]) }),
    );
    expect(errors).toEqual([`WHITEPAPER.md:11: rule ${A1} is defined twice (first at line 8)`]);
  });

  it('fails when the markers are missing', () => {
    const { errors } = traceCheck(repo({ 'WHITEPAPER.md': '# nothing here\n' }));
    expect(errors).toEqual([
      'WHITEPAPER.md: no rule list between <!-- rules:begin --> and <!-- rules:end -->',
    ]);
  });
});

describe('table', () => {
  it('links every citation by column, deterministically, with no errors', () => {
    const root = repo(cleanFiles());
    const first = traceCheck(root);
    expect(first.errors).toEqual([]);
    expect(traceCheck(root).table).toBe(first.table);
    const rows = first.table.split('\n').filter((line) => line.startsWith('| ['));
    expect(rows).toEqual([
      `| [${A1}](../WHITEPAPER.md#L8) | The first rule, long enough to be cut: it keeps going well past the eighty… | ` +
        '[spec/a.ts:1](../spec/a.ts#L1) | [impl/a.ts:2](../impl/a.ts#L2) | — | ' +
        '[spec/a.test.ts:1](../spec/a.test.ts#L1) [2](../spec/a.test.ts#L2) | ' +
        '[vectors/fam.json:8](../vectors/fam.json#L8) | [simulator/p.ts:1](../simulator/p.ts#L1) |',
      `| [${A2}](../WHITEPAPER.md#L9) | The second rule \\| with a pipe and a continuation line that is part of its text. | ` +
        '— | [impl/a.ts:3](../impl/a.ts#L3) | [model/a.ts:1](../model/a.ts#L1) | ' +
        '[spec/a.test.ts:2](../spec/a.test.ts#L2) | — | — |',
    ]);
    expect(first.table).toContain('Rules: 2. Cited by a test: 2. Not yet cited by a test: 0.');
  });
});

describe('failures', () => {
  it('fails on an unknown ID cited in code, tests, vectors or Markdown', () => {
    const { errors } = traceCheck(
      repo({
        ...cleanFiles(),
        'impl/b.ts': `\n// ${UNKNOWN}: not in the whitepaper\n`,
        'test/x.test.ts': `it('t [${UNKNOWN}]', () => {});\n`,
        'vectors/other.json': JSON.stringify({ tests: [{ rules: [UNKNOWN] }] }),
        'ARCHITECTURE.md': `See ${UNKNOWN}.\n`,
        'tools/x.ts': `// ${UNKNOWN}\n`,
      }),
    );
    expect(errors).toEqual([
      `ARCHITECTURE.md:1: unknown rule ID ${UNKNOWN} (not defined in WHITEPAPER.md)`,
      `impl/b.ts:2: unknown rule ID ${UNKNOWN} (not defined in WHITEPAPER.md)`,
      `test/x.test.ts:1: unknown rule ID ${UNKNOWN} (not defined in WHITEPAPER.md)`,
      `tools/x.ts:1: unknown rule ID ${UNKNOWN} (not defined in WHITEPAPER.md)`,
      `vectors/other.json:1: unknown rule ID ${UNKNOWN} (not defined in WHITEPAPER.md)`,
    ]);
  });

  it('fails on an unknown ID cross-referenced inside the rule list, but not in prose outside it', () => {
    const { errors } = traceCheck(
      repo({ ...cleanFiles(), 'WHITEPAPER.md': whitepaper([...RULES, `  See also ${UNKNOWN}.`]) }),
    );
    expect(errors).toEqual([`WHITEPAPER.md:11: unknown rule ID ${UNKNOWN} in the rule list`]);
  });

  it('fails on a rule that no test cites, whatever else cites it', () => {
    const files = cleanFiles();
    files['spec/a.test.ts'] = `it('pins only the first [${A1}]', () => {});\n`;
    const { errors, table } = traceCheck(repo(files));
    expect(errors).toEqual([`WHITEPAPER.md:9: rule ${A2} is cited by no test`]);
    expect(table).toContain('Not yet cited by a test: 1.');
  });

  it('counts only IDs in a vector "rules" array as vector citations', () => {
    const files = cleanFiles();
    files['vectors/fam.json'] = JSON.stringify({ tests: [{ comment: `about ${A1}`, rules: [] }] });
    const row = traceCheck(repo(files))
      .table.split('\n')
      .find((line) => line.startsWith(`| [${A1}]`));
    expect(row?.split(' | ')[6]).toBe('—');
  });

  it('ignores generated *.new.json vectors and docs/traceability.md itself', () => {
    const { errors } = traceCheck(
      repo({
        ...cleanFiles(),
        'vectors/fam.new.json': JSON.stringify({ tests: [{ rules: [UNKNOWN] }] }),
        'docs/traceability.md': `| ${UNKNOWN} |\n`,
      }),
    );
    expect(errors).toEqual([]);
  });

  it('fails on broken relative links and evidence paths in WHITEPAPER.md', () => {
    const extra = [
      '## Security claims',
      '',
      '- Claim one: [the check](spec/a.ts#L1), [the test](spec/a.test.ts), [site](https://example.org/x).',
      '- Claim two: [missing](spec/gone.ts) and [too far](spec/a.ts#L50-L60).',
      '  evidence: `impl/nothing.ts`',
      '  evidence: impl/a.ts',
      '- Bare anchor (spec/a.ts#L99) and [an anchor](#area).',
      '',
      '[ref]: docs/missing.md',
    ].join('\n');
    const { errors } = traceCheck(repo({ ...cleanFiles(), 'WHITEPAPER.md': whitepaper(RULES, extra) }));
    expect(errors).toEqual([
      "WHITEPAPER.md:16: link target 'spec/a.ts' has 3 lines, the link points at line 60",
      "WHITEPAPER.md:16: link target 'spec/gone.ts' does not exist",
      "WHITEPAPER.md:17: link target 'impl/nothing.ts' does not exist",
      "WHITEPAPER.md:19: link target 'spec/a.ts' has 3 lines, the link points at line 99",
      "WHITEPAPER.md:21: link target 'docs/missing.md' does not exist",
    ]);
  });
});

describe('command line', () => {
  it('writes docs/traceability.md, then --check passes until the table changes', () => {
    const root = repo(cleanFiles());
    const write = runTraceCheck(root, []);
    expect(write.exitCode).toBe(0);
    expect(readFileSync(path.join(root, TRACEABILITY_PATH), 'utf8')).toBe(traceCheck(root).table);
    expect(runTraceCheck(root, ['--check']).exitCode).toBe(0);

    writeFileSync(path.join(root, 'impl/c.ts'), `// ${A2}: a new citation\n`);
    const stale = runTraceCheck(root, ['--check']);
    expect(stale.exitCode).toBe(1);
    expect(stale.output).toContain(
      `${TRACEABILITY_PATH} is out of date; run npm run trace:check and commit it`,
    );
  });

  it('fails --check when the table was never generated', () => {
    const result = runTraceCheck(repo(cleanFiles()), ['--check']);
    expect(result.exitCode).toBe(1);
    expect(result.output).toContain(`${TRACEABILITY_PATH} is missing; run npm run trace:check and commit it`);
  });

  it('writes the table but exits 1 when there are errors', () => {
    const files = cleanFiles();
    files['spec/a.test.ts'] = '';
    const root = repo(files);
    const result = runTraceCheck(root, []);
    expect(result.exitCode).toBe(1);
    expect(readFileSync(path.join(root, TRACEABILITY_PATH), 'utf8')).toContain('Not yet cited by a test: 2.');
  });

  it('refuses unknown arguments', () => {
    expect(runTraceCheck(repo(cleanFiles()), ['--fix']).exitCode).toBe(2);
  });
});

describe('this repository', () => {
  it('cites no unknown rule ID and has no broken whitepaper link (rules without tests are reported by the CLI)', () => {
    const { errors } = traceCheck(REPO_ROOT);
    expect(errors.filter((error) => !error.endsWith('is cited by no test'))).toEqual([]);
  });
});
