import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { ATTACKS } from '../simulator/attacks.js';
import { PROPERTIES } from '../simulator/invariants.js';
import {
  declaredEntries,
  parseClaims,
  parseWhitepaperRules,
  runTraceCheck,
  testTitles,
  TRACEABILITY_PATH,
  traceCheck,
} from './trace-check.js';

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

/** The evidence of the fixture's one valid claim: one item of every kind. */
const EVIDENCE = [
  '[spec/a.test.ts](spec/a.test.ts) › `the first`',
  '[spec/b.test.ts](spec/b.test.ts) › `: holds in both modes`',
  '[vectors/fam.json](vectors/fam.json) › `v-1`',
  '[impl/a.ts](impl/a.ts)',
  'SIM `prop-one`',
  'attack `attack-one`',
  '[REF1]',
];

/** A claims table with one row per evidence list (claims C1, C2, …), and the references it cites. */
function claimsBlock(
  evidence: readonly (readonly string[])[],
  limits = 'see [REF1] and SIM `prop-one`',
): string {
  return [
    '<!-- references:begin -->',
    '| tag | reference |',
    '|---|---|',
    '| [REF1] | A paper |',
    '<!-- references:end -->',
    '',
    '<!-- claims:begin -->',
    '| claim | statement | evidence | known limits |',
    '|---|---|---|---|',
    ...evidence.map((items, i) => `| C${i + 1} | A claim. | ${items.join('<br>')} | ${limits} |`),
    '<!-- claims:end -->',
  ].join('\n');
}

function whitepaper(rules: readonly string[], extra = '', claims = claimsBlock([EVIDENCE])): string {
  return [
    '# Fixture whitepaper',
    '',
    'Prose before the rule list.',
    '',
    '<!-- rules:begin -->',
    '## Area',
    '',
    ...rules,
    '<!-- rules:end -->',
    '',
    extra,
    '',
    claims,
    '',
  ].join('\n');
}

/** Line of the first claim row in a fixture whitepaper built with no `extra` text. */
const FIRST_CLAIM_LINE = 24;

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
    'spec/b.test.ts':
      "describe.each(['spec', 'hardened'])('modes', (m) => {\n  it(`${m}: holds in both modes`, () => {});\n});\n",
    'vectors/fam.json': JSON.stringify(
      { family: 'fam', tests: [{ id: 'v-1', comment: `mentions ${A2} in prose`, rules: [A1] }] },
      null,
      2,
    ),
    'simulator/invariants.ts': [
      '// The fixture property list, laid out as prettier writes the real one.',
      'export const PROPERTIES = Object.freeze([',
      '  {',
      "    name: 'prop-one',",
      `    rules: ['${A1}', 'P4'],`,
      '  },',
      ']);',
      '',
    ].join('\n'),
    'simulator/attacks.ts': [
      'export const ATTACKS = Object.freeze([',
      '  {',
      "    name: 'attack-one',",
      "    steps: [{ t: 1, op: 'clone', name: 'not-an-attack' }],",
      '  },',
      ']);',
      '',
    ].join('\n'),
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
      'WHITEPAPER.md: no claims table between <!-- claims:begin --> and <!-- claims:end -->',
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
        '[vectors/fam.json:8](../vectors/fam.json#L8) | ' +
        '[simulator/invariants.ts:5](../simulator/invariants.ts#L5)<br>[simulator/p.ts:1](../simulator/p.ts#L1) |',
      `| [${A2}](../WHITEPAPER.md#L9) | The second rule \\| with a pipe and a continuation line that is part of its text. | ` +
        '— | [impl/a.ts:3](../impl/a.ts#L3) | [model/a.ts:1](../model/a.ts#L1) | ' +
        '[spec/a.test.ts:2](../spec/a.test.ts#L2) | — | — |',
    ]);
    expect(first.table).toContain(
      'Rules: 2. Cited by a test: 2. Not yet cited by a test: 0. Claims checked: 1.',
    );
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

  it('fails on an unknown ID cross-referenced inside the rule list, in prose outside it, and in a claim', () => {
    const { errors } = traceCheck(
      repo({
        ...cleanFiles(),
        'WHITEPAPER.md': whitepaper(
          [...RULES, `  See also ${UNKNOWN}.`],
          `Prose naming ${UNKNOWN}.`,
          claimsBlock([[...EVIDENCE]], `see ${UNKNOWN}`),
        ),
      }),
    );
    expect(errors).toEqual([
      `WHITEPAPER.md:11: unknown rule ID ${UNKNOWN} in the rule list`,
      `WHITEPAPER.md:14: unknown rule ID ${UNKNOWN}`,
      `WHITEPAPER.md:${FIRST_CLAIM_LINE + 1}: unknown rule ID ${UNKNOWN}`,
    ]);
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

/** Failures in a fixed order (their order is the CLI's sorting, not what these tests pin). */
function sorted(errors: readonly string[]): string[] {
  return [...errors].sort();
}

describe('claims table', () => {
  /** Errors of a fixture whose one claim has the given evidence (the limits column as given). */
  function claimErrors(
    evidence: readonly string[],
    limits?: string,
    files: Record<string, string> = {},
  ): string[] {
    const whitepaperText = whitepaper(RULES, '', claimsBlock([evidence], limits));
    return sorted(traceCheck(repo({ ...cleanFiles(), ...files, 'WHITEPAPER.md': whitepaperText })).errors);
  }
  const at = `WHITEPAPER.md:${FIRST_CLAIM_LINE}: claim C1`;

  it('reads the claims and accepts evidence of every kind, a template title included', () => {
    const parsed = parseClaims(whitepaper(RULES));
    expect(parsed.errors).toEqual([]);
    expect(parsed.claims.map((claim) => [claim.id, claim.line])).toEqual([['C1', FIRST_CLAIM_LINE]]);
    expect(parsed.claims[0]?.cells['evidence']?.split('<br>')).toEqual(EVIDENCE);
    expect(claimErrors(EVIDENCE)).toEqual([]);
  });

  it('fails on an evidence file that does not exist', () => {
    expect(claimErrors(['[spec/gone.test.ts](spec/gone.test.ts) › `anything`'])).toEqual(
      sorted([
        `${at}: evidence file 'spec/gone.test.ts' does not exist`,
        `WHITEPAPER.md:${FIRST_CLAIM_LINE}: link target 'spec/gone.test.ts' does not exist`,
      ]),
    );
  });

  it('fails on a test title that is not in the file, and on a title cited from a file that is not a test', () => {
    expect(
      claimErrors([
        '[spec/a.test.ts](spec/a.test.ts) › `pins the third rule`',
        '[spec/b.test.ts](spec/b.test.ts) › `spec: holds`',
        '[impl/a.ts](impl/a.ts) › `the decision`',
      ]),
    ).toEqual(
      sorted([
        `${at}: 'impl/a.ts' › 'the decision': only a test file or a vector file can be cited with a title`,
        `${at}: 'spec/a.test.ts' has no test titled 'pins the third rule'`,
        `${at}: 'spec/b.test.ts' has no test titled 'spec: holds'`,
      ]),
    );
  });

  it('fails on a vector id that is not in the vector file, and on a vector file that is not JSON', () => {
    expect(
      claimErrors(
        [
          '[vectors/fam.json](vectors/fam.json) › `v-2`',
          '[vectors/broken.json](vectors/broken.json) › `v-1`',
        ],
        undefined,
        { 'vectors/broken.json': '{ not json' },
      ),
    ).toEqual(
      sorted([
        `${at}: 'vectors/fam.json' has no vector with id 'v-2'`,
        `${at}: evidence file 'vectors/broken.json' is not valid JSON`,
        'vectors/broken.json: not valid JSON, so its rules cannot be read',
      ]),
    );
  });

  it('fails on a simulator property or an attack scenario that does not exist, in any column', () => {
    expect(
      claimErrors(
        ['SIM `prop-two`', 'attack `not-an-attack`'],
        'see SIM `prop-three` and attack `attack-two`',
      ),
    ).toEqual(
      sorted([
        `${at} (known limits): SIM 'prop-three' is not a property of simulator/invariants.ts`,
        `${at} (known limits): attack 'attack-two' is not a scenario of simulator/attacks.ts`,
        `${at}: SIM 'prop-two' is not a property of simulator/invariants.ts`,
        `${at}: attack 'not-an-attack' is not a scenario of simulator/attacks.ts`,
      ]),
    );
  });

  it('fails on a reference tag the references table does not list, in any column', () => {
    expect(claimErrors(['[REF2]'], 'see [REF3] §4')).toEqual(
      sorted([
        `${at} (known limits): [REF3] is not a reference of the references table`,
        `${at}: [REF2] is not a reference of the references table`,
      ]),
    );
  });

  it('fails on a claim without evidence and on an item of no known form', () => {
    expect(claimErrors([])).toEqual([`${at} has no evidence`]);
    expect(claimErrors(['tests: spec/a.test.ts'])).toEqual(
      sorted([
        `${at}: 'tests: spec/a.test.ts' is not an evidence item (a test, vector or file link, SIM \`name\`, attack \`name\` or [TAG])`,
      ]),
    );
  });

  it('fails on a missing claims table, a claim defined twice, and a row of the wrong width', () => {
    expect(traceCheck(repo({ ...cleanFiles(), 'WHITEPAPER.md': whitepaper(RULES, '', '') })).errors).toEqual(
      sorted(['WHITEPAPER.md: no claims table between <!-- claims:begin --> and <!-- claims:end -->']),
    );
    const twice = claimsBlock([EVIDENCE, EVIDENCE]).replace('| C2 |', '| C1 |');
    expect(
      traceCheck(repo({ ...cleanFiles(), 'WHITEPAPER.md': whitepaper(RULES, '', twice) })).errors.sort(),
    ).toEqual(
      sorted([
        `WHITEPAPER.md:${FIRST_CLAIM_LINE + 1}: claim C1 is defined twice (first at line ${FIRST_CLAIM_LINE})`,
      ]),
    );
    const narrow = claimsBlock([EVIDENCE]).replace(' | see [REF1] and SIM `prop-one` |', ' |');
    expect(
      traceCheck(repo({ ...cleanFiles(), 'WHITEPAPER.md': whitepaper(RULES, '', narrow) })).errors.sort(),
    ).toEqual(
      sorted([
        `WHITEPAPER.md:${FIRST_CLAIM_LINE}: claims row has 3 cells, the header 4`,
        `WHITEPAPER.md:${FIRST_CLAIM_LINE - 3}: the claims table has no claims`,
      ]),
    );
  });
});

describe('coverage gaps', () => {
  it('lists rules without a model citation (impl only, spec only) and without a simulator property', () => {
    const files = cleanFiles();
    files['model/a.ts'] = '// no rule here\n';
    files['impl/a.ts'] = `// ${A2}: the decision\n`;
    const { errors, gaps, table } = traceCheck(repo(files));
    expect(errors).toEqual([]);
    expect(gaps).toEqual({ noModelImplOnly: [A2], noModelSpecOnly: [A1], noSimulatorProperty: [A2] });
    expect(table).toContain(`- No model citation, enforced by impl/ alone (1): ${A2}.`);
    expect(table).toContain(`- No model citation, in spec/ alone and shared by both engines (1): ${A1}.`);
    expect(table).toContain(`- No simulator property (1): ${A2}.`);
  });

  it('prints the lists on the command line', () => {
    const { output } = runTraceCheck(repo(cleanFiles()), []);
    expect(output).toContain(`trace:check: No simulator property (1): ${A2}.`);
    expect(output).toContain(`trace:check: No model citation, enforced by impl/ alone (1): ${A1}.`);
    expect(output).toContain(
      'trace:check: No model citation, in spec/ alone and shared by both engines (0): none.',
    );
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
  it('cites no unknown rule ID, has no broken whitepaper link and no dead claim evidence (rules without tests are reported by the CLI)', () => {
    const { errors } = traceCheck(REPO_ROOT);
    expect(errors.filter((error) => !error.endsWith('is cited by no test'))).toEqual([]);
    expect(
      parseClaims(readFileSync(path.join(REPO_ROOT, 'WHITEPAPER.md'), 'utf8')).claims.length,
    ).toBeGreaterThan(0);
  });

  it('reads the simulator properties and attack scenarios as the simulator declares them', () => {
    const read = (file: string): string => readFileSync(path.join(REPO_ROOT, file), 'utf8');
    expect(declaredEntries(read('simulator/invariants.ts'), 'PROPERTIES')).toEqual(
      PROPERTIES.map((p) => ({ name: p.name, rules: [...p.rules] })),
    );
    expect(declaredEntries(read('simulator/attacks.ts'), 'ATTACKS').map((a) => a.name)).toEqual(
      ATTACKS.map((a) => a.name),
    );
  });

  it('finds the titles of it, test and describe calls, each, skipIf and template titles included', () => {
    const titles = testTitles(
      'x.test.ts',
      [
        "describe.each([1])('group %s', () => {",
        "  it.skipIf(false)('plain title', () => {});",
        '  it(`${1} in ${2}: templated`, () => {});',
        "  test.each([1])('$a each', () => {});",
        "  other('not a test', () => {});",
        '});',
      ].join('\n'),
    );
    expect(titles).toEqual([['group %s'], ['plain title'], ['', ' in ', ': templated'], ['$a each']]);
  });
});
