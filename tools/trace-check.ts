/**
 * The traceability check (CONTRIBUTING.md, "Rule IDs"). Reads the normative rules of WHITEPAPER.md
 * (the lines `- **WP-AREA-NN** …` between `<!-- rules:begin -->` and `<!-- rules:end -->`), finds
 * every citation `WP-AREA-NN` in the repository, and builds `docs/traceability.md`: one row per
 * rule with links to where it is cited, by column:
 *
 * | column    | where                                                              |
 * | --------- | ------------------------------------------------------------------ |
 * | spec      | spec/ (not tests): the constant, encoding or named function        |
 * | impl      | impl/ (not tests): the decision in the reference implementation    |
 * | model     | model/ (not tests): the guard or action in the state machines      |
 * | tests     | any `*.test.ts` anywhere: the tests that pin the rule              |
 * | vectors   | any .json file under vectors/: IDs listed in a `rules` array       |
 * | simulator | simulator/ (not tests): properties and invariants                  |
 *
 * It fails on:
 * - an ID cited anywhere (source, tests, vectors, Markdown) that WHITEPAPER.md does not define
 *   (IDs in WHITEPAPER.md outside the rule list are ignored; inside it they must be defined);
 * - a rule defined twice, or no rule list at all;
 * - a defined rule that no test cites;
 * - a relative link in WHITEPAPER.md (`[text](path)`, `[text](path#L10-L20)`, a bare
 *   `(path#L10)`, a reference definition `[id]: path`, or an `evidence: path` line) whose target
 *   file does not exist or is shorter than the line it points at;
 * - with `--check`: a committed docs/traceability.md that differs from the regenerated one.
 *
 * Usage: `npm run trace:check` (writes the table) or `npm run trace:check -- --check` (CI).
 * @module
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** A normative rule as defined in WHITEPAPER.md. */
export interface RuleDefinition {
  readonly id: string;
  /** The rule's text, whitespace collapsed (continuation lines included). */
  readonly text: string;
  /** 1-based line of the definition in WHITEPAPER.md. */
  readonly line: number;
}

/** The table's citation columns. */
export type TraceColumn = 'spec' | 'impl' | 'model' | 'tests' | 'vectors' | 'simulator';

/** One citation of a rule ID at a file and line. */
export interface Citation {
  readonly id: string;
  readonly file: string;
  readonly line: number;
  /** Which column it counts for; `null` for places that are checked but not tabulated. */
  readonly column: TraceColumn | null;
}

/** What {@link traceCheck} returns: the generated Markdown and every failure found. */
export interface TraceResult {
  readonly table: string;
  readonly errors: string[];
}

/** Where the table is written, relative to the repository root. */
export const TRACEABILITY_PATH = 'docs/traceability.md';
const WHITEPAPER = 'WHITEPAPER.md';
const RULES_BEGIN = '<!-- rules:begin -->';
const RULES_END = '<!-- rules:end -->';

const COLUMNS: readonly TraceColumn[] = ['spec', 'impl', 'model', 'tests', 'vectors', 'simulator'];
const ID_PATTERN = /\bWP-[A-Z]+-[0-9]+\b/g;
const RULE_LINE = /^- \*\*(WP-[A-Z]+-[0-9]+)\*\*\s*(.*)$/;
const SUMMARY_LENGTH = 80;
/** At most this many line links per file in one cell; the rest are counted. */
const MAX_LINES_PER_FILE = 10;

const SCANNED_EXTENSIONS = ['.ts', '.tsx', '.mts', '.cts', '.js', '.mjs', '.cjs', '.json', '.md'];
const SKIPPED_DIRECTORIES = new Set(['node_modules', 'dist', 'coverage', 'artifacts', 'docs/api']);
const SKIPPED_FILES = new Set(['package-lock.json', WHITEPAPER, TRACEABILITY_PATH]);

function isTestFile(file: string): boolean {
  return /\.test\.[cm]?[jt]sx?$/.test(file);
}

function topFolder(file: string): string {
  const slash = file.indexOf('/');
  return slash === -1 ? '' : file.slice(0, slash);
}

function splitLines(text: string): string[] {
  return text.replace(/\r\n?/g, '\n').split('\n');
}

/** Every file the check reads for citations, as sorted POSIX paths relative to the root. */
function listScannedFiles(rootDir: string): string[] {
  const out: string[] = [];
  const pending: string[] = [''];
  while (pending.length > 0) {
    const relativeDir = pending.pop() ?? '';
    for (const entry of readdirSync(path.join(rootDir, relativeDir), { withFileTypes: true })) {
      const relative = relativeDir === '' ? entry.name : `${relativeDir}/${entry.name}`;
      if (entry.isDirectory()) {
        if (
          entry.name.startsWith('.') ||
          SKIPPED_DIRECTORIES.has(entry.name) ||
          SKIPPED_DIRECTORIES.has(relative)
        ) {
          continue;
        }
        pending.push(relative);
      } else if (entry.isFile() && SCANNED_EXTENSIONS.some((ext) => entry.name.endsWith(ext))) {
        if (SKIPPED_FILES.has(relative) || entry.name.endsWith('.new.json') || entry.name.endsWith('.d.ts'))
          continue;
        out.push(relative);
      }
    }
  }
  return out.sort();
}

/** The column a non-vector source file's citations count for. */
function columnOf(file: string): TraceColumn | null {
  if (isTestFile(file)) return 'tests';
  if (file.endsWith('.md') || file.endsWith('.json')) return null;
  const folder = topFolder(file);
  return folder === 'spec' || folder === 'impl' || folder === 'model' || folder === 'simulator'
    ? folder
    : null;
}

/** IDs listed in any `rules` array anywhere in a parsed vector file. */
function vectorRuleIds(value: unknown, into: Set<string>): void {
  const pending: unknown[] = [value];
  while (pending.length > 0) {
    const item = pending.pop();
    if (Array.isArray(item)) {
      pending.push(...(item as unknown[]));
    } else if (item !== null && typeof item === 'object') {
      for (const [key, child] of Object.entries(item)) {
        if (key === 'rules' && Array.isArray(child)) {
          for (const id of child as unknown[]) if (typeof id === 'string') into.add(id);
        }
        pending.push(child);
      }
    }
  }
}

interface ParsedWhitepaper {
  readonly rules: RuleDefinition[];
  /** IDs mentioned inside the rule list (definitions and cross-references), with their lines. */
  readonly mentions: { readonly id: string; readonly line: number }[];
  readonly errors: string[];
}

/** Reads the rule list between the markers. */
export function parseWhitepaperRules(text: string): ParsedWhitepaper {
  const lines = splitLines(text);
  const begin = lines.findIndex((line) => line.trim() === RULES_BEGIN);
  const end = lines.findIndex((line) => line.trim() === RULES_END);
  const errors: string[] = [];
  const rules: RuleDefinition[] = [];
  const mentions: { id: string; line: number }[] = [];
  if (begin === -1 || end === -1 || end < begin) {
    errors.push(`${WHITEPAPER}: no rule list between ${RULES_BEGIN} and ${RULES_END}`);
    return { rules, mentions, errors };
  }
  const seen = new Map<string, number>();
  for (let i = begin + 1; i < end; i++) {
    const line = lines[i] ?? '';
    for (const match of line.matchAll(ID_PATTERN)) mentions.push({ id: match[0], line: i + 1 });
    const rule = RULE_LINE.exec(line);
    if (rule === null) continue;
    const id = rule[1] ?? '';
    const parts = [rule[2] ?? ''];
    for (let j = i + 1; j < end && /^\s+\S/.test(lines[j] ?? ''); j++) parts.push((lines[j] ?? '').trim());
    const previous = seen.get(id);
    if (previous !== undefined) {
      errors.push(`${WHITEPAPER}:${i + 1}: rule ${id} is defined twice (first at line ${previous})`);
      continue;
    }
    seen.set(id, i + 1);
    rules.push({ id, text: parts.join(' ').replace(/\s+/g, ' ').trim(), line: i + 1 });
  }
  if (rules.length === 0) errors.push(`${WHITEPAPER}: the rule list defines no rules`);
  return { rules, mentions, errors };
}

/** Checks one relative link target (with an optional `#L10` or `#L10-L20` fragment). */
function checkLinkTarget(rootDir: string, target: string, where: string): string | null {
  const hash = target.indexOf('#');
  const rawPath = hash === -1 ? target : target.slice(0, hash);
  let filePart: string;
  try {
    filePart = decodeURI(rawPath);
  } catch {
    return `${where}: link target '${rawPath}' is not a valid URI`;
  }
  const fragment = hash === -1 ? '' : target.slice(hash + 1);
  if (filePart === '') return null; // an anchor inside WHITEPAPER.md itself
  const absolute = path.resolve(rootDir, filePart);
  if (!existsSync(absolute)) return `${where}: link target '${filePart}' does not exist`;
  const lineRange = /^L(\d+)(?:-L(\d+))?$/.exec(fragment);
  if (lineRange !== null) {
    if (!statSync(absolute).isFile())
      return `${where}: link target '${filePart}' is not a file but has a line anchor`;
    const wanted = Math.max(Number(lineRange[1]), Number(lineRange[2] ?? 0));
    const have = splitLines(readFileSync(absolute, 'utf8')).length;
    if (wanted > have)
      return `${where}: link target '${filePart}' has ${have} lines, the link points at line ${wanted}`;
  }
  return null;
}

function isExternal(target: string): boolean {
  return /^[a-z][a-z0-9+.-]*:/i.test(target) || target.startsWith('//');
}

/** Every relative link and evidence path in WHITEPAPER.md must point at something that exists. */
function checkWhitepaperLinks(rootDir: string, text: string): string[] {
  const errors: string[] = [];
  const lines = splitLines(text);
  const patterns = [
    /\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g, // [text](target "title")
    /(?<!\])\(([\w./-]+\.[A-Za-z0-9]+#L\d+(?:-L\d+)?)\)/g, // a bare (path#L10)
    /^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)/g, // [id]: target
    /\bevidence:\s*`?([^\s`]+)`?/gi, // evidence: path
  ];
  lines.forEach((line, index) => {
    const targets = new Set<string>();
    for (const pattern of patterns) for (const match of line.matchAll(pattern)) targets.add(match[1] ?? '');
    for (const target of [...targets].sort()) {
      if (target === '' || isExternal(target)) continue;
      const error = checkLinkTarget(rootDir, target, `${WHITEPAPER}:${index + 1}`);
      if (error !== null) errors.push(error);
    }
  });
  return errors;
}

function escapeCell(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/\|/g, '\\|');
}

function summarise(text: string): string {
  if (text.length <= SUMMARY_LENGTH) return text;
  const cut = text.slice(0, SUMMARY_LENGTH);
  const space = cut.lastIndexOf(' ');
  let summary = (space > SUMMARY_LENGTH / 2 ? cut.slice(0, space) : cut).trimEnd();
  // Close a code span the cut left open, so the rest of the row still renders.
  if ((summary.match(/`/g) ?? []).length % 2 === 1) summary += '`';
  return `${summary}…`;
}

/** Link text and target for a citation, relative to docs/. */
function renderCell(citations: readonly Citation[]): string {
  if (citations.length === 0) return '—';
  const byFile = new Map<string, number[]>();
  for (const citation of citations) {
    const lines = byFile.get(citation.file) ?? [];
    if (!lines.includes(citation.line)) lines.push(citation.line);
    byFile.set(citation.file, lines);
  }
  const parts: string[] = [];
  for (const file of [...byFile.keys()].sort()) {
    const lines = (byFile.get(file) ?? []).sort((a, b) => a - b);
    const shown = lines.slice(0, MAX_LINES_PER_FILE);
    const [first, ...rest] = shown;
    const links = [
      `[${file}:${first}](../${file}#L${first})`,
      ...rest.map((line) => `[${line}](../${file}#L${line})`),
    ];
    const more = lines.length - shown.length;
    parts.push(links.join(' ') + (more > 0 ? ` (+${more})` : ''));
  }
  return parts.join('<br>');
}

/** Builds the table and collects every failure for the repository at `rootDir`. */
export function traceCheck(rootDir: string): TraceResult {
  const errors: string[] = [];
  const whitepaperPath = path.join(rootDir, WHITEPAPER);
  if (!existsSync(whitepaperPath)) {
    return { table: '', errors: [`${WHITEPAPER} not found`] };
  }
  const whitepaper = readFileSync(whitepaperPath, 'utf8');
  const parsed = parseWhitepaperRules(whitepaper);
  errors.push(...parsed.errors);
  const defined = new Set(parsed.rules.map((rule) => rule.id));
  for (const mention of parsed.mentions) {
    if (!defined.has(mention.id)) {
      errors.push(`${WHITEPAPER}:${mention.line}: unknown rule ID ${mention.id} in the rule list`);
    }
  }
  errors.push(...checkWhitepaperLinks(rootDir, whitepaper));

  const citations: Citation[] = [];
  for (const file of listScannedFiles(rootDir)) {
    const text = readFileSync(path.join(rootDir, file), 'utf8');
    const lines = splitLines(text);
    const isVector = topFolder(file) === 'vectors' && file.endsWith('.json');
    const vectorIds = new Set<string>();
    if (isVector) {
      try {
        vectorRuleIds(JSON.parse(text) as unknown, vectorIds);
      } catch {
        errors.push(`${file}: not valid JSON, so its rules cannot be read`);
      }
    }
    const column = columnOf(file);
    lines.forEach((line, index) => {
      for (const match of line.matchAll(ID_PATTERN)) {
        const id = match[0];
        if (!defined.has(id)) {
          errors.push(`${file}:${index + 1}: unknown rule ID ${id} (not defined in ${WHITEPAPER})`);
          continue;
        }
        // In a vector file only the IDs listed in a `rules` array count, found as exact JSON strings.
        const vectorCitation = isVector && vectorIds.has(id) && line.includes(`"${id}"`);
        citations.push({
          id,
          file,
          line: index + 1,
          column: isVector ? (vectorCitation ? 'vectors' : null) : column,
        });
      }
    });
  }

  const cited = new Map<string, Map<TraceColumn, Citation[]>>();
  for (const citation of citations) {
    if (citation.column === null) continue;
    const columns = cited.get(citation.id) ?? new Map<TraceColumn, Citation[]>();
    const list = columns.get(citation.column) ?? [];
    list.push(citation);
    columns.set(citation.column, list);
    cited.set(citation.id, columns);
  }

  let tested = 0;
  const rows: string[] = [];
  for (const rule of parsed.rules) {
    const columns = cited.get(rule.id);
    const tests = columns?.get('tests') ?? [];
    if (tests.length === 0) {
      errors.push(`${WHITEPAPER}:${rule.line}: rule ${rule.id} is cited by no test`);
    } else {
      tested++;
    }
    const cells = COLUMNS.map((column) => renderCell(columns?.get(column) ?? []));
    rows.push(
      `| [${rule.id}](../${WHITEPAPER}#L${rule.line}) | ${escapeCell(summarise(rule.text))} | ${cells.join(' | ')} |`,
    );
  }

  const table = [
    '# Traceability',
    '',
    '<!-- Generated by `npm run trace:check` (tools/trace-check.ts). Do not edit by hand. -->',
    '',
    `Every normative rule of [WHITEPAPER.md](../${WHITEPAPER}) and where the repository cites it. ` +
      'CI regenerates this file with `npm run trace:check -- --check` and fails on any difference, on an ' +
      'unknown rule ID, and on a rule that no test cites.',
    '',
    `Rules: ${parsed.rules.length}. Cited by a test: ${tested}. Not yet cited by a test: ${parsed.rules.length - tested}.`,
    '',
    `| rule | summary | ${COLUMNS.join(' | ')} |`,
    `| ${['---', '---', ...COLUMNS.map(() => '---')].join(' | ')} |`,
    ...rows,
    '',
  ].join('\n');

  return { table, errors: [...new Set(errors)].sort(compareLocations) };
}

/** Sorts `file:line: message` strings by file, then numerically by line. */
function compareLocations(a: string, b: string): number {
  const parse = (s: string): [string, number, string] => {
    const match = /^([^:]+):(\d+): (.*)$/.exec(s);
    return match === null ? [s, 0, ''] : [match[1] ?? '', Number(match[2]), match[3] ?? ''];
  };
  const [fileA, lineA, restA] = parse(a);
  const [fileB, lineB, restB] = parse(b);
  return fileA.localeCompare(fileB) || lineA - lineB || restA.localeCompare(restB);
}

/** The command line: writes the table, or with `--check` compares it with the committed one. */
export function runTraceCheck(
  rootDir: string,
  args: readonly string[],
): { readonly exitCode: number; readonly output: string[] } {
  const unknown = args.filter((arg) => arg !== '--check');
  if (unknown.length > 0) {
    return {
      exitCode: 2,
      output: [`trace:check: unknown argument ${unknown.join(' ')}; usage: trace-check [--check]`],
    };
  }
  const check = args.includes('--check');
  const { table, errors } = traceCheck(rootDir);
  const problems = [...errors];
  const output: string[] = [];
  const target = path.join(rootDir, TRACEABILITY_PATH);
  if (table !== '') {
    if (check) {
      const committed = existsSync(target) ? readFileSync(target, 'utf8').replace(/\r\n?/g, '\n') : null;
      if (committed === null) {
        problems.push(`${TRACEABILITY_PATH} is missing; run npm run trace:check and commit it`);
      } else if (committed !== table) {
        problems.push(`${TRACEABILITY_PATH} is out of date; run npm run trace:check and commit it`);
      }
    } else {
      mkdirSync(path.dirname(target), { recursive: true });
      writeFileSync(target, table);
      output.push(`trace:check: wrote ${TRACEABILITY_PATH}`);
    }
  }
  if (problems.length > 0) {
    output.push(`trace:check: ${problems.length} problem(s)`, ...problems);
    return { exitCode: 1, output };
  }
  output.push('trace:check: every rule is defined once, cited IDs exist, every rule has a test');
  return { exitCode: 0, output };
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const rootDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  const { exitCode, output } = runTraceCheck(rootDir, process.argv.slice(2));
  for (const line of output) (exitCode === 0 ? console.log : console.error)(line);
  process.exitCode = exitCode;
}
