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
 * followed by two coverage lists, which it also prints: the rules no model/ code cites (split into
 * those only an impl/ codec enforces and those that live in spec/ alone, shared by both engines),
 * and the rules that no simulator property names (the `rules` of `PROPERTIES` in
 * simulator/invariants.ts).
 *
 * It also reads the security claims table of WHITEPAPER.md (between `<!-- claims:begin -->` and
 * `<!-- claims:end -->`) and checks every evidence item of every claim (`<br>`-separated in the
 * `evidence` column):
 *
 * | item                                  | must hold                                                       |
 * | ------------------------------------- | --------------------------------------------------------------- |
 * | `[path](path) › \`text\``             | a test file with an `it`/`test`/`describe` title containing text, or a vectors/ JSON file with a vector of that `id` |
 * | `[path](path)`                        | the file exists                                                 |
 * | `SIM \`name\``                         | a property of `PROPERTIES` in simulator/invariants.ts           |
 * | `attack \`name\``                      | a scenario of `ATTACKS` in simulator/attacks.ts                 |
 * | `[TAG]`                               | a reference of the table between `<!-- references:begin/end -->` |
 *
 * `SIM`, `attack` and `[TAG]` mentions in the other columns of the table are checked the same way.
 *
 * It fails on:
 * - an ID cited anywhere (source, tests, vectors, Markdown, WHITEPAPER.md itself) that WHITEPAPER.md
 *   does not define;
 * - a rule defined twice, or no rule list at all;
 * - a defined rule that no test cites;
 * - a relative link in WHITEPAPER.md (`[text](path)`, `[text](path#L10-L20)`, a bare
 *   `(path#L10)`, a reference definition `[id]: path`, or an `evidence: path` line) whose target
 *   file does not exist or is shorter than the line it points at;
 * - no claims table, a claim defined twice, a claim without evidence, an evidence item of no known
 *   form, or one that points at nothing (above);
 * - with `--check`: a committed docs/traceability.md that differs from the regenerated one.
 *
 * Usage: `npm run trace:check` (writes the table) or `npm run trace:check -- --check` (CI).
 * @module
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

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

/** Rules the coverage lists name (sorted as the whitepaper defines them). */
export interface CoverageGaps {
  /** Rules no model/ source cites, that an impl/ source does (a codec only impl/ has). */
  readonly noModelImplOnly: readonly string[];
  /** Rules no model/ or impl/ source cites: they live in spec/ alone, shared by both engines. */
  readonly noModelSpecOnly: readonly string[];
  /** Rules that no simulator property names. */
  readonly noSimulatorProperty: readonly string[];
}

/** What {@link traceCheck} returns: the generated Markdown, every failure found, and the gaps. */
export interface TraceResult {
  readonly table: string;
  readonly errors: string[];
  readonly gaps: CoverageGaps;
}

/** Where the table is written, relative to the repository root. */
export const TRACEABILITY_PATH = 'docs/traceability.md';
const WHITEPAPER = 'WHITEPAPER.md';
const RULES_BEGIN = '<!-- rules:begin -->';
const RULES_END = '<!-- rules:end -->';
const CLAIMS_BEGIN = '<!-- claims:begin -->';
const CLAIMS_END = '<!-- claims:end -->';
const REFERENCES_BEGIN = '<!-- references:begin -->';
const REFERENCES_END = '<!-- references:end -->';
/** Where the simulator's properties and the attack scenarios are declared. */
const PROPERTIES_FILE = 'simulator/invariants.ts';
const ATTACKS_FILE = 'simulator/attacks.ts';

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

/** One row of the claims table. */
export interface ClaimRow {
  readonly id: string;
  /** 1-based line in WHITEPAPER.md. */
  readonly line: number;
  /** The cells by lower-case column name. */
  readonly cells: Readonly<Record<string, string>>;
}

/** The claims table (empty with an error when the markers or the evidence column are missing). */
export function parseClaims(text: string): { readonly claims: ClaimRow[]; readonly errors: string[] } {
  const lines = splitLines(text);
  const begin = lines.findIndex((line) => line.trim() === CLAIMS_BEGIN);
  const end = lines.findIndex((line) => line.trim() === CLAIMS_END);
  if (begin === -1 || end === -1 || end < begin) {
    return {
      claims: [],
      errors: [`${WHITEPAPER}: no claims table between ${CLAIMS_BEGIN} and ${CLAIMS_END}`],
    };
  }
  const errors: string[] = [];
  const claims: ClaimRow[] = [];
  let header: string[] | null = null;
  const seen = new Map<string, number>();
  for (let i = begin + 1; i < end; i++) {
    const line = lines[i] ?? '';
    if (!line.trim().startsWith('|')) continue;
    const cells = splitRow(line);
    if (header === null) {
      header = cells.map((cell) => cell.toLowerCase());
      if (!header.includes('evidence') || !header.includes('claim')) {
        errors.push(`${WHITEPAPER}:${i + 1}: the claims table needs a 'claim' and an 'evidence' column`);
        return { claims, errors };
      }
      continue;
    }
    if (cells.every((cell) => /^:?-+:?$/.test(cell))) continue;
    if (cells.length !== header.length) {
      errors.push(
        `${WHITEPAPER}:${i + 1}: claims row has ${cells.length} cells, the header ${header.length}`,
      );
      continue;
    }
    const byColumn: Record<string, string> = {};
    header.forEach((name, index) => (byColumn[name] = cells[index] ?? ''));
    const id = byColumn['claim'] ?? '';
    const previous = seen.get(id);
    if (previous !== undefined) {
      errors.push(`${WHITEPAPER}:${i + 1}: claim ${id} is defined twice (first at line ${previous})`);
      continue;
    }
    seen.set(id, i + 1);
    claims.push({ id, line: i + 1, cells: byColumn });
  }
  if (header === null || claims.length === 0)
    errors.push(`${WHITEPAPER}:${begin + 1}: the claims table has no claims`);
  return { claims, errors };
}

/** The cells of a Markdown table row, trimmed; `\|` inside a cell is not a separator. */
function splitRow(line: string): string[] {
  const cells: string[] = [];
  let current = '';
  const body = line.trim().replace(/^\|/, '').replace(/\|$/, '');
  for (let i = 0; i < body.length; i++) {
    const char = body[i];
    if (char === '\\' && body[i + 1] === '|') {
      current += '|';
      i++;
    } else if (char === '|') {
      cells.push(current.trim());
      current = '';
    } else {
      current += char;
    }
  }
  cells.push(current.trim());
  return cells;
}

/** The tags of the references table (`| [TAG] | … |` rows between the references markers). */
export function parseReferenceTags(text: string): Set<string> {
  const lines = splitLines(text);
  const begin = lines.findIndex((line) => line.trim() === REFERENCES_BEGIN);
  const end = lines.findIndex((line) => line.trim() === REFERENCES_END);
  const tags = new Set<string>();
  if (begin === -1 || end < begin) return tags;
  for (const line of lines.slice(begin + 1, end)) {
    const tag = /^\|\s*\[([^\]]+)\]\s*\|/.exec(line);
    if (tag !== null) tags.add(tag[1] ?? '');
  }
  return tags;
}

/** One entry of a declared scenario or property array: its name and the rule IDs it lists. */
export interface DeclaredEntry {
  readonly name: string;
  readonly rules: readonly string[];
}

/**
 * The entries of `export const NAME … = Object.freeze([ { name: '…', … }, … ])` in a source file, read
 * as text so that the check needs no import of the simulator: each entry is an object literal at
 * two spaces of indentation whose first property is `name` (as prettier writes them), and its
 * `rules: [ … ]` array if it has one. tools/trace-check.test.ts compares the result with the
 * imported arrays, so a change of layout cannot go unnoticed.
 */
export function declaredEntries(source: string, exportName: string): DeclaredEntry[] {
  const start = source.search(new RegExp(`^export const ${exportName}\\b`, 'm'));
  if (start === -1) return [];
  const text = splitLines(source.slice(start)).join('\n');
  const starts = [...text.matchAll(/^ {2}\{\n {4}name: '([^']+)',/gm)];
  return starts.map((match, index) => {
    const from = match.index ?? 0;
    const to = starts[index + 1]?.index ?? text.length;
    const rules = /\brules:\s*\[([^\]]*)\]/.exec(text.slice(from, to));
    return {
      name: match[1] ?? '',
      rules: rules === null ? [] : [...(rules[1] ?? '').matchAll(/'([^']+)'/g)].map((m) => m[1] ?? ''),
    };
  });
}

const TEST_FUNCTIONS = new Set(['it', 'test', 'describe', 'suite']);

/**
 * The titles of the `it`/`test`/`describe` calls of a test file (`it.each(…)('…')`, `describe.runIf(…)`
 * and friends included), each as its literal pieces: one for a string, the text between the
 * substitutions for a template.
 */
export function testTitles(file: string, text: string): string[][] {
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
  const titles: string[][] = [];
  const root = (expression: ts.Expression): string | null => {
    let current: ts.Expression = expression;
    for (;;) {
      if (ts.isIdentifier(current)) return current.text;
      if (ts.isPropertyAccessExpression(current) || ts.isCallExpression(current))
        current = current.expression;
      else return null;
    }
  };
  const visit = (node: ts.Node): void => {
    if (ts.isCallExpression(node)) {
      const name = root(node.expression);
      const first = node.arguments[0];
      if (name !== null && TEST_FUNCTIONS.has(name) && first !== undefined) {
        if (ts.isStringLiteral(first) || ts.isNoSubstitutionTemplateLiteral(first)) titles.push([first.text]);
        else if (ts.isTemplateExpression(first))
          titles.push([first.head.text, ...first.templateSpans.map((span) => span.literal.text)]);
      }
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return titles;
}

/** The `id`s of the vectors in a vector file (every object with a string `id` inside `tests`). */
function vectorIds(value: unknown): Set<string> {
  const ids = new Set<string>();
  const tests =
    value !== null && typeof value === 'object' ? (value as { tests?: unknown }).tests : undefined;
  const pending: unknown[] = Array.isArray(tests) ? [...(tests as unknown[])] : [];
  while (pending.length > 0) {
    const item = pending.pop();
    if (Array.isArray(item)) pending.push(...(item as unknown[]));
    else if (item !== null && typeof item === 'object') {
      const id = (item as { id?: unknown }).id;
      if (typeof id === 'string') ids.add(id);
    }
  }
  return ids;
}

/** What the evidence check knows about the repository. */
interface EvidenceContext {
  readonly rootDir: string;
  readonly properties: ReadonlySet<string>;
  readonly attacks: ReadonlySet<string>;
  readonly references: ReadonlySet<string>;
  /** Parsed test titles and vector ids, per file, read once. */
  readonly titles: Map<string, string[][]>;
  readonly vectors: Map<string, Set<string> | null>;
}

const EVIDENCE_FORMS: readonly {
  readonly pattern: RegExp;
  readonly kind: 'titled' | 'file' | 'sim' | 'attack' | 'ref';
}[] = [
  { pattern: /^\[[^\]]+\]\(([^)\s]+)\)\s*›\s*`([^`]+)`$/, kind: 'titled' },
  { pattern: /^\[[^\]]+\]\(([^)\s]+)\)$/, kind: 'file' },
  { pattern: /^SIM `([^`]+)`$/, kind: 'sim' },
  { pattern: /^attack `([^`]+)`$/, kind: 'attack' },
  { pattern: /^\[([^\]]+)\]$/, kind: 'ref' },
];

/** Checks one evidence item; returns a failure or null. */
function checkEvidenceItem(context: EvidenceContext, item: string): string | null {
  for (const { pattern, kind } of EVIDENCE_FORMS) {
    const match = pattern.exec(item);
    if (match === null) continue;
    const first = match[1] ?? '';
    if (kind === 'sim')
      return context.properties.has(first) ? null : `SIM '${first}' is not a property of ${PROPERTIES_FILE}`;
    if (kind === 'attack')
      return context.attacks.has(first) ? null : `attack '${first}' is not a scenario of ${ATTACKS_FILE}`;
    if (kind === 'ref')
      return context.references.has(first) ? null : `[${first}] is not a reference of the references table`;
    const file = first.split('#')[0] ?? '';
    const absolute = path.resolve(context.rootDir, file);
    if (!existsSync(absolute) || !statSync(absolute).isFile())
      return `evidence file '${file}' does not exist`;
    if (kind === 'file') return null;
    const text = match[2] ?? '';
    if (topFolder(file) === 'vectors' && file.endsWith('.json')) {
      let ids = context.vectors.get(file);
      if (ids === undefined) {
        try {
          ids = vectorIds(JSON.parse(readFileSync(absolute, 'utf8')) as unknown);
        } catch {
          ids = null;
        }
        context.vectors.set(file, ids);
      }
      if (ids === null) return `evidence file '${file}' is not valid JSON`;
      return ids.has(text) ? null : `'${file}' has no vector with id '${text}'`;
    }
    if (!isTestFile(file))
      return `'${file}' › '${text}': only a test file or a vector file can be cited with a title`;
    let titles = context.titles.get(file);
    if (titles === undefined) {
      titles = testTitles(file, readFileSync(absolute, 'utf8'));
      context.titles.set(file, titles);
    }
    return titles.some((pieces) => pieces.some((piece) => piece.includes(text)))
      ? null
      : `'${file}' has no test titled '${text}'`;
  }
  return `'${item}' is not an evidence item (a test, vector or file link, SIM \`name\`, attack \`name\` or [TAG])`;
}

/** Checks every claim's evidence, and the SIM, attack and reference mentions in its other cells. */
function checkClaims(context: EvidenceContext, claims: readonly ClaimRow[]): string[] {
  const errors: string[] = [];
  for (const claim of claims) {
    const where = `${WHITEPAPER}:${claim.line}: claim ${claim.id}`;
    const items = (claim.cells['evidence'] ?? '')
      .split(/<br\s*\/?>/)
      .map((item) => item.trim())
      .filter((item) => item !== '');
    if (items.length === 0) errors.push(`${where} has no evidence`);
    for (const item of items) {
      const problem = checkEvidenceItem(context, item);
      if (problem !== null) errors.push(`${where}: ${problem}`);
    }
    for (const [column, cell] of Object.entries(claim.cells)) {
      if (column === 'evidence') continue;
      const mentions = [
        ...[...cell.matchAll(/\b(?:SIM|attack) `[^`]+`/g)].map((m) => m[0]),
        ...[...cell.matchAll(/\[([A-Z][A-Za-z0-9.-]*)\](?![(:[])/g)].map((m) => m[0]),
      ];
      for (const mention of mentions) {
        const problem = checkEvidenceItem(context, mention);
        if (problem !== null) errors.push(`${where} (${column}): ${problem}`);
      }
    }
  }
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
    return {
      table: '',
      errors: [`${WHITEPAPER} not found`],
      gaps: { noModelImplOnly: [], noModelSpecOnly: [], noSimulatorProperty: [] },
    };
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
  // Outside the rule list too (prose, claims, generated tables), every ID must be a rule.
  const inList = new Set(parsed.mentions.map((mention) => mention.line));
  splitLines(whitepaper).forEach((line, index) => {
    if (inList.has(index + 1)) return;
    for (const match of line.matchAll(ID_PATTERN)) {
      if (!defined.has(match[0])) errors.push(`${WHITEPAPER}:${index + 1}: unknown rule ID ${match[0]}`);
    }
  });
  errors.push(...checkWhitepaperLinks(rootDir, whitepaper));

  const readIfExists = (file: string): string =>
    existsSync(path.join(rootDir, file)) ? readFileSync(path.join(rootDir, file), 'utf8') : '';
  const properties = declaredEntries(readIfExists(PROPERTIES_FILE), 'PROPERTIES');
  const attacks = declaredEntries(readIfExists(ATTACKS_FILE), 'ATTACKS');
  const claims = parseClaims(whitepaper);
  errors.push(...claims.errors);
  errors.push(
    ...checkClaims(
      {
        rootDir,
        properties: new Set(properties.map((entry) => entry.name)),
        attacks: new Set(attacks.map((entry) => entry.name)),
        references: parseReferenceTags(whitepaper),
        titles: new Map(),
        vectors: new Map(),
      },
      claims.claims,
    ),
  );

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
  const propertyRules = new Set(properties.flatMap((entry) => entry.rules));
  const noModelImplOnly: string[] = [];
  const noModelSpecOnly: string[] = [];
  const noSimulatorProperty: string[] = [];
  for (const rule of parsed.rules) {
    const columns = cited.get(rule.id);
    const tests = columns?.get('tests') ?? [];
    if (tests.length === 0) {
      errors.push(`${WHITEPAPER}:${rule.line}: rule ${rule.id} is cited by no test`);
    } else {
      tested++;
    }
    if ((columns?.get('model') ?? []).length === 0)
      ((columns?.get('impl') ?? []).length > 0 ? noModelImplOnly : noModelSpecOnly).push(rule.id);
    if (!propertyRules.has(rule.id)) noSimulatorProperty.push(rule.id);
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
      'unknown rule ID, on a rule that no test cites, and on a security claim whose evidence points at nothing.',
    '',
    `Rules: ${parsed.rules.length}. Cited by a test: ${tested}. Not yet cited by a test: ${parsed.rules.length - tested}. ` +
      `Claims checked: ${claims.claims.length}.`,
    '',
    `| rule | summary | ${COLUMNS.join(' | ')} |`,
    `| ${['---', '---', ...COLUMNS.map(() => '---')].join(' | ')} |`,
    ...rows,
    '',
    '## Coverage gaps',
    '',
    'Rules that the model does not encode a second time, and rules that no simulator property names ' +
      `(the \`rules\` of \`PROPERTIES\` in ${PROPERTIES_FILE}). The simulator still runs the code of every rule; ` +
      'these lists say which rules no property states as a check of whole runs.',
    '',
    ...gapLines({ noModelImplOnly, noModelSpecOnly, noSimulatorProperty }).map((line) => `- ${line}`),
    '',
  ].join('\n');

  return {
    table,
    errors: [...new Set(errors)].sort(compareLocations),
    gaps: { noModelImplOnly, noModelSpecOnly, noSimulatorProperty },
  };
}

/** The coverage lists as lines of text (counts, then the IDs), for the table and the terminal. */
export function gapLines(gaps: CoverageGaps): string[] {
  const list = (ids: readonly string[]): string => (ids.length === 0 ? 'none' : ids.join(', '));
  return [
    `No model citation, enforced by impl/ alone (${gaps.noModelImplOnly.length}): ${list(gaps.noModelImplOnly)}.`,
    `No model citation, in spec/ alone and shared by both engines (${gaps.noModelSpecOnly.length}): ${list(gaps.noModelSpecOnly)}.`,
    `No simulator property (${gaps.noSimulatorProperty.length}): ${list(gaps.noSimulatorProperty)}.`,
  ];
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
  const { table, errors, gaps } = traceCheck(rootDir);
  const problems = [...errors];
  const output: string[] = [];
  if (table !== '') output.push(...gapLines(gaps).map((line) => `trace:check: ${line}`));
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
  output.push(
    "trace:check: every rule is defined once, cited IDs exist, every rule has a test, every claim's evidence exists",
  );
  return { exitCode: 0, output };
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const rootDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  const { exitCode, output } = runTraceCheck(rootDir, process.argv.slice(2));
  for (const line of output) (exitCode === 0 ? console.log : console.error)(line);
  process.exitCode = exitCode;
}
