/**
 * Trace comparison: the first line where two NDJSON traces differ, and which fields differ there.
 *
 * Traces are canonical JSON, one record per line (the header, then events `{t, seq, node, kind,
 * ...}`), so equal runs give equal lines and the first unequal line is the first divergence. For
 * that line both records are parsed and compared field by field; the differing fields are named by
 * dotted path (`data.counter`, `vc.alice-1`, `config.seed`). Lines that are not JSON are compared
 * as text. Pure: no Node APIs, no clock.
 * @module
 */

/** At most this many differing field paths are listed for the divergent line. */
export const MAX_FIELD_PATHS = 32;

/** The outcome of {@link diffTraces}. */
export type TraceDiff =
  | { readonly identical: true; readonly lines: number }
  | {
      readonly identical: false;
      /** 1-based line number of the first difference (line 1 is the header). */
      readonly line: number;
      /** The line in the first trace, or null when the first trace ends before it. */
      readonly a: string | null;
      /** The line in the second trace, or null when the second trace ends before it. */
      readonly b: string | null;
      /**
       * Dotted paths of the fields that differ, each container before its differing children
       * (`data`, `data.counter`), at most {@link MAX_FIELD_PATHS}; `<missing line>` when one trace is
       * shorter, `<text>` when a line is not a JSON object, `<encoding>` when both parse to equal
       * values (the lines are not canonical).
       */
      readonly fields: readonly string[];
    };

/** Find the first line where traces `a` and `b` differ (both given as lines, header first). */
export function diffTraces(a: readonly string[], b: readonly string[]): TraceDiff {
  const common = Math.min(a.length, b.length);
  for (let index = 0; index < common; index += 1) {
    const lineA = a[index] ?? '';
    const lineB = b[index] ?? '';
    if (lineA !== lineB) {
      return { identical: false, line: index + 1, a: lineA, b: lineB, fields: differingFields(lineA, lineB) };
    }
  }
  if (a.length === b.length) return { identical: true, lines: a.length };
  const line = common + 1;
  return {
    identical: false,
    line,
    a: a[common] ?? null,
    b: b[common] ?? null,
    fields: ['<missing line>'],
  };
}

/** Dotted paths of the fields in which two JSON lines differ. */
export function differingFields(lineA: string, lineB: string): readonly string[] {
  const valueA = parseObject(lineA);
  const valueB = parseObject(lineB);
  if (valueA === undefined || valueB === undefined) return ['<text>'];
  const paths: string[] = [];
  collectDifferences(valueA, valueB, '', paths);
  // Equal values with different text (key order, spacing) mean the lines are not canonical.
  return paths.length === 0 ? ['<encoding>'] : paths;
}

function parseObject(line: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(line);
    return isRecord(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Append to `paths` the path of every leaf (or container whose shape differs) where `x` and `y`
 * differ, breadth-limited by {@link MAX_FIELD_PATHS}. A container whose children differ is reported
 * by its own path too, so a reader sees `data` before `data.counter`.
 */
function collectDifferences(x: unknown, y: unknown, path: string, paths: string[]): boolean {
  if (paths.length >= MAX_FIELD_PATHS) return true;
  if (Object.is(x, y)) return false;
  if (Array.isArray(x) && Array.isArray(y)) {
    const before = paths.length;
    if (path !== '') paths.push(path);
    let differs = x.length !== y.length;
    const length = Math.max(x.length, y.length);
    for (let index = 0; index < length; index += 1) {
      if (collectDifferences(x[index], y[index], `${path}[${index}]`, paths)) differs = true;
    }
    if (!differs) paths.length = before;
    return differs;
  }
  if (isRecord(x) && isRecord(y)) {
    const before = paths.length;
    if (path !== '') paths.push(path);
    let differs = false;
    const keys = [...new Set([...Object.keys(x), ...Object.keys(y)])].sort();
    for (const key of keys) {
      const child = path === '' ? key : `${path}.${key}`;
      if (!Object.hasOwn(x, key) || !Object.hasOwn(y, key)) {
        if (paths.length < MAX_FIELD_PATHS) paths.push(child);
        differs = true;
      } else if (collectDifferences(x[key], y[key], child, paths)) {
        differs = true;
      }
    }
    if (!differs) paths.length = before;
    return differs;
  }
  paths.push(path === '' ? '<value>' : path);
  return true;
}
