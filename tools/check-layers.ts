/**
 * The architecture check (ARCHITECTURE.md, "Layers"): reads every source file in the repository,
 * extracts its imports with the TypeScript compiler (`ts.preProcessFile`, so comments and strings
 * never count) and fails on any of these:
 *
 * - **layer**: an import that crosses the dependency rule. spec/ imports only spec/; impl/ imports
 *   only spec/ and impl/; model/ imports only spec/ and model/ (impl/ and model/ never import each
 *   other); simulator/ imports only spec/, impl/, model/ and simulator/ (never cli/ or viz/);
 * - **cycle**: an import cycle among repository files (Tarjan's strongly connected components over
 *   relative imports), reported as a concrete path `a → b → a`;
 * - **libsignal**: `@signalapp/libsignal-client` (AGPL) imported anywhere but test/interop/ and
 *   bench/;
 * - **determinism**: in non-test files of spec/, impl/, model/ and simulator/, a use of
 *   `Math.random`, `Date.now`, `new Date`/`Date()`, `performance.now`, the global
 *   `setTimeout`/`setInterval`/`setImmediate`, or `getRandomValues`, found in the syntax tree (so a
 *   comment, a string or a method that merely shares the name does not count). The one allowed
 *   reader of the platform CSPRNG is `spec/csprng.ts`;
 * - **node-builtin**: a Node built-in module (`node:*`, `crypto`, `fs`, …) imported by a non-test
 *   file of spec/, impl/, model/, simulator/ or viz/src/, which must stay browser-safe. The one
 *   allowed importer is `spec/crypto/node.ts`, the node:crypto provider. (viz/server/ and the
 *   visualiser's tests are Node tooling.)
 *
 * Usage: `npm run layers:check` (exit status 1 and a list on any violation). The test suite runs
 * {@link checkLayers} against the repository and against planted violations.
 * @module
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { builtinModules } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

/** The kinds of violation the check reports. */
export type ViolationRule = 'layer' | 'cycle' | 'libsignal' | 'determinism' | 'node-builtin';

/** One violation, located at a file and line (1-based) relative to the checked root. */
export interface Violation {
  readonly rule: ViolationRule;
  readonly file: string;
  readonly line: number;
  readonly message: string;
}

/** Source files the check reads. */
const SOURCE_EXTENSIONS = ['.ts', '.tsx', '.mts', '.cts', '.js', '.mjs', '.cjs'] as const;

/** Directories never read (dependencies, generated output, tool state). */
const SKIPPED_DIRECTORIES = new Set(['node_modules', 'dist', 'coverage', 'artifacts', 'docs/api']);

/** Which top-level folders each constrained layer may import from. Other folders are unconstrained. */
const ALLOWED_IMPORTS: Readonly<Record<string, readonly string[]>> = {
  spec: ['spec'],
  impl: ['spec', 'impl'],
  model: ['spec', 'model'],
  simulator: ['spec', 'impl', 'model', 'simulator'],
  'viz/src': ['spec', 'simulator', 'viz/src'],
};

/** Data files (not code) the visualiser's browser code may bundle as text. */
const VIZ_DATA_FILES: readonly RegExp[] = [/^model\/diagrams\/[^/]+\.json$/, /^WHITEPAPER\.md$/];

/** Browser code: no Node built-ins (but real timers are fine: it is a user interface). */
const BROWSER_LAYERS = new Set(['viz/src']);

/** Layers that must stay deterministic and browser-safe. */
const PURE_LAYERS = new Set(['spec', 'impl', 'model', 'simulator']);

/** The one file allowed to read the platform CSPRNG. */
const CSPRNG_ADAPTER = 'spec/csprng.ts';
/** The one pure-layer file allowed to import Node built-ins. */
const NODE_PROVIDER = 'spec/crypto/node.ts';

const LIBSIGNAL = '@signalapp/libsignal-client';
const LIBSIGNAL_ALLOWED_PREFIXES = ['test/interop/', 'bench/'];

const NODE_BUILTINS = new Set(builtinModules.filter((name) => !name.startsWith('_')));

/** `receiver.member` pairs that read real time or ambient randomness. */
const FORBIDDEN_MEMBERS: readonly (readonly [string, string])[] = [
  ['Math', 'random'],
  ['Date', 'now'],
  ['performance', 'now'],
];
/** Globals that schedule on the real clock. */
const REAL_TIMERS = new Set(['setTimeout', 'setInterval', 'setImmediate']);
/** Names under which the global object is reached. */
const GLOBAL_OBJECTS = new Set(['globalThis', 'window', 'global', 'self']);

function toPosix(p: string): string {
  return p.split(path.sep).join('/');
}

function isTestFile(relativePath: string): boolean {
  return /\.test\.[cm]?[jt]sx?$/.test(relativePath);
}

function topFolder(relativePath: string): string {
  const slash = relativePath.indexOf('/');
  return slash === -1 ? '' : relativePath.slice(0, slash);
}

/** The layer a path belongs to: its top folder, except the visualiser's browser code, `viz/src`. */
function layerOf(relativePath: string): string {
  return relativePath.startsWith('viz/src/') ? 'viz/src' : topFolder(relativePath);
}

/** Every source file under `rootDir`, as sorted POSIX paths relative to it. */
export function listSourceFiles(rootDir: string): string[] {
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
      } else if (entry.isFile() && SOURCE_EXTENSIONS.some((ext) => entry.name.endsWith(ext))) {
        if (entry.name.endsWith('.d.ts')) continue;
        out.push(relative);
      }
    }
  }
  return out.sort();
}

/**
 * Resolves a relative specifier the way NodeNext + TypeScript do for this repository: the
 * written path, then `.js`→`.ts`/`.tsx` (and `.mjs`→`.mts`, `.cjs`→`.cts`), then an added extension,
 * then a directory index. Returns the POSIX path relative to the root, or the unresolved target
 * path (for layer checks) with `exists: false`.
 */
function resolveRelative(
  rootDir: string,
  fromFile: string,
  specifier: string,
): { readonly target: string; readonly exists: boolean } {
  const absolute = path.resolve(rootDir, path.dirname(fromFile), specifier);
  const candidates = [absolute];
  const swaps: readonly (readonly [string, readonly string[]])[] = [
    ['.js', ['.ts', '.tsx']],
    ['.jsx', ['.tsx']],
    ['.mjs', ['.mts']],
    ['.cjs', ['.cts']],
  ];
  for (const [from, tos] of swaps) {
    if (absolute.endsWith(from)) for (const to of tos) candidates.push(absolute.slice(0, -from.length) + to);
  }
  for (const ext of SOURCE_EXTENSIONS) candidates.push(absolute + ext);
  for (const ext of SOURCE_EXTENSIONS) candidates.push(path.join(absolute, `index${ext}`));
  for (const candidate of candidates) {
    if (existsSync(candidate) && statSync(candidate).isFile()) {
      return { target: toPosix(path.relative(rootDir, candidate)), exists: true };
    }
  }
  return { target: toPosix(path.relative(rootDir, absolute)), exists: false };
}

function lineOf(text: string, position: number): number {
  let line = 1;
  for (let i = 0; i < position && i < text.length; i++) if (text.charCodeAt(i) === 10) line++;
  return line;
}

function isBuiltin(specifier: string): boolean {
  if (specifier.startsWith('node:')) return true;
  const head = specifier.split('/')[0] ?? specifier;
  return NODE_BUILTINS.has(head) || NODE_BUILTINS.has(specifier);
}

/** The member name of `a.b` or `a['b']`, if it is written literally. */
function memberName(node: ts.Node): { readonly receiver: ts.Expression; readonly name: string } | undefined {
  if (ts.isPropertyAccessExpression(node)) return { receiver: node.expression, name: node.name.text };
  if (ts.isElementAccessExpression(node) && ts.isStringLiteralLike(node.argumentExpression)) {
    return { receiver: node.expression, name: node.argumentExpression.text };
  }
  return undefined;
}

/** True for `X` and `globalThis.X` (and the other names of the global object). */
function namesGlobal(expression: ts.Expression, name: string): boolean {
  if (ts.isIdentifier(expression)) return expression.text === name;
  const member = memberName(expression);
  return (
    member !== undefined &&
    member.name === name &&
    ts.isIdentifier(member.receiver) &&
    GLOBAL_OBJECTS.has(member.receiver.text)
  );
}

/** True when an identifier is the name being declared (a method, property, variable, parameter …). */
function isDeclaredName(node: ts.Identifier): boolean {
  const parent = node.parent;
  if (
    ts.isMethodDeclaration(parent) ||
    ts.isMethodSignature(parent) ||
    ts.isPropertyDeclaration(parent) ||
    ts.isPropertySignature(parent) ||
    ts.isPropertyAssignment(parent) ||
    ts.isFunctionDeclaration(parent) ||
    ts.isFunctionExpression(parent) ||
    ts.isVariableDeclaration(parent) ||
    ts.isParameter(parent) ||
    ts.isGetAccessorDeclaration(parent) ||
    ts.isSetAccessorDeclaration(parent) ||
    ts.isEnumMember(parent) ||
    ts.isClassDeclaration(parent) ||
    ts.isInterfaceDeclaration(parent) ||
    ts.isTypeAliasDeclaration(parent)
  ) {
    return parent.name === node;
  }
  if (ts.isBindingElement(parent)) return parent.propertyName === node || parent.name === node;
  return false;
}

/** Finds reads of real time and ambient randomness in one file's syntax tree. */
function findNondeterminism(file: string, text: string): Violation[] {
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
  const found: Violation[] = [];
  const report = (node: ts.Node, what: string): void => {
    const line = source.getLineAndCharacterOfPosition(node.getStart(source)).line + 1;
    found.push({
      rule: 'determinism',
      file,
      line,
      message: `uses ${what}; inject an Rng or the clock instead`,
    });
  };
  const visit = (node: ts.Node): void => {
    const member = memberName(node);
    if (member !== undefined) {
      for (const [receiver, name] of FORBIDDEN_MEMBERS) {
        if (member.name === name && namesGlobal(member.receiver, receiver))
          report(node, `${receiver}.${name}`);
      }
      if (member.name === 'getRandomValues') report(node, 'getRandomValues');
      if (
        REAL_TIMERS.has(member.name) &&
        ts.isIdentifier(member.receiver) &&
        GLOBAL_OBJECTS.has(member.receiver.text)
      ) {
        report(node, `the global ${member.name}`);
      }
    }
    if ((ts.isNewExpression(node) || ts.isCallExpression(node)) && namesGlobal(node.expression, 'Date')) {
      report(node, ts.isNewExpression(node) ? 'new Date' : 'Date()');
    }
    if (ts.isIdentifier(node) && !isDeclaredName(node)) {
      const parent = node.parent;
      const isMemberName =
        (ts.isPropertyAccessExpression(parent) && parent.name === node) ||
        (ts.isQualifiedName(parent) && parent.right === node);
      if (!isMemberName && REAL_TIMERS.has(node.text)) report(node, `the global ${node.text}`);
      if (!isMemberName && node.text === 'getRandomValues') report(node, 'getRandomValues');
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return found;
}

/** Tarjan's strongly connected components; returns the components with a cycle. */
function cyclicComponents(graph: ReadonlyMap<string, readonly string[]>): string[][] {
  let nextIndex = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const onStack = new Set<string>();
  const stack: string[] = [];
  const components: string[][] = [];
  const strongConnect = (node: string): void => {
    index.set(node, nextIndex);
    low.set(node, nextIndex);
    nextIndex++;
    stack.push(node);
    onStack.add(node);
    for (const next of graph.get(node) ?? []) {
      if (!index.has(next)) {
        strongConnect(next);
        low.set(node, Math.min(low.get(node) ?? 0, low.get(next) ?? 0));
      } else if (onStack.has(next)) {
        low.set(node, Math.min(low.get(node) ?? 0, index.get(next) ?? 0));
      }
    }
    if (low.get(node) === index.get(node)) {
      const component: string[] = [];
      for (;;) {
        const member = stack.pop();
        if (member === undefined) break;
        onStack.delete(member);
        component.push(member);
        if (member === node) break;
      }
      const selfLoop = component.length === 1 && (graph.get(node) ?? []).includes(node);
      if (component.length > 1 || selfLoop) components.push(component.sort());
    }
  };
  for (const node of [...graph.keys()].sort()) if (!index.has(node)) strongConnect(node);
  return components;
}

/** A shortest cycle through the first file of a component (breadth-first inside the component). */
function cyclePath(graph: ReadonlyMap<string, readonly string[]>, component: readonly string[]): string[] {
  const members = new Set(component);
  const start = component[0] ?? '';
  const previous = new Map<string, string>();
  const queue: string[] = [start];
  for (let head = 0; head < queue.length; head++) {
    const node = queue[head] ?? '';
    for (const next of graph.get(node) ?? []) {
      if (!members.has(next)) continue;
      if (next === start) {
        const pathBack: string[] = [node];
        let cursor = node;
        while (cursor !== start) {
          cursor = previous.get(cursor) ?? start;
          pathBack.push(cursor);
        }
        return [...pathBack.reverse(), start];
      }
      if (!previous.has(next) && next !== start) {
        previous.set(next, node);
        queue.push(next);
      }
    }
  }
  return [...component, start];
}

/** Runs every check over the repository at `rootDir`; returns the violations, sorted. */
export function checkLayers(rootDir: string): Violation[] {
  const violations: Violation[] = [];
  const graph = new Map<string, string[]>();
  const files = listSourceFiles(rootDir);
  for (const file of files) {
    const text = readFileSync(path.join(rootDir, file), 'utf8');
    const layer = layerOf(file);
    const pure = PURE_LAYERS.has(layer) && !isTestFile(file);
    const browser = (pure || BROWSER_LAYERS.has(layer)) && !isTestFile(file);
    const edges: string[] = [];
    const { importedFiles } = ts.preProcessFile(text, true, true);
    for (const reference of importedFiles) {
      // A bundler's query suffix (`./x.json?raw`) names the same file.
      const specifier = reference.fileName.replace(/\?[^/]*$/, '');
      const line = lineOf(text, reference.pos);
      if (specifier.startsWith('.')) {
        const { target, exists } = resolveRelative(rootDir, file, specifier);
        if (exists && SOURCE_EXTENSIONS.some((ext) => target.endsWith(ext))) edges.push(target);
        const allowed = ALLOWED_IMPORTS[layer];
        const targetLayer = layerOf(target);
        // A layer's own tests may use the shared fixtures in test/support/ (test code sees everything).
        const testFixture = isTestFile(file) && target.startsWith('test/support/');
        const vizData = layer === 'viz/src' && VIZ_DATA_FILES.some((pattern) => pattern.test(target));
        if (allowed !== undefined && !allowed.includes(targetLayer) && !testFixture && !vizData) {
          violations.push({
            rule: 'layer',
            file,
            line,
            message: `${layer}/ must not import ${targetLayer === '' ? target : `${targetLayer}/`} ('${specifier}'); ${layer}/ may import only ${allowed.map((l) => `${l}/`).join(', ')}`,
          });
        }
        continue;
      }
      if (specifier === LIBSIGNAL || specifier.startsWith(`${LIBSIGNAL}/`)) {
        if (!LIBSIGNAL_ALLOWED_PREFIXES.some((prefix) => file.startsWith(prefix))) {
          violations.push({
            rule: 'libsignal',
            file,
            line,
            message: `imports ${LIBSIGNAL} (AGPL), allowed only under ${LIBSIGNAL_ALLOWED_PREFIXES.join(' and ')}`,
          });
        }
      }
      if (browser && file !== NODE_PROVIDER && isBuiltin(specifier)) {
        violations.push({
          rule: 'node-builtin',
          file,
          line,
          message: `imports the Node built-in '${specifier}'; ${layer}/ must stay browser-safe (only ${NODE_PROVIDER} may)`,
        });
      }
    }
    graph.set(file, [...new Set(edges)].sort());
    if (pure && file !== CSPRNG_ADAPTER) violations.push(...findNondeterminism(file, text));
  }
  for (const component of cyclicComponents(graph)) {
    const cycle = cyclePath(graph, component);
    violations.push({
      rule: 'cycle',
      file: cycle[0] ?? '',
      line: 1,
      message: `import cycle: ${cycle.join(' → ')}${component.length > cycle.length - 1 ? ` (component of ${component.length} files)` : ''}`,
    });
  }
  return violations.sort(
    (a, b) =>
      a.file.localeCompare(b.file) ||
      a.line - b.line ||
      a.rule.localeCompare(b.rule) ||
      a.message.localeCompare(b.message),
  );
}

/** Formats violations one per line: `file:line [rule] message`. */
export function formatViolations(violations: readonly Violation[]): string {
  return violations.map((v) => `${v.file}:${v.line} [${v.rule}] ${v.message}`).join('\n');
}

function main(): number {
  const rootDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  const violations = checkLayers(rootDir);
  if (violations.length === 0) {
    console.log(`layers:check: ${listSourceFiles(rootDir).length} files, no violations`);
    return 0;
  }
  console.error(`layers:check: ${violations.length} violation(s)\n${formatViolations(violations)}`);
  return 1;
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exitCode = main();
}
