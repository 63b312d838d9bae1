/**
 * WHITEPAPER.md inside the visualiser: the rule index (every `- **WP-AREA-NN** …` item between the
 * `rules:begin`/`rules:end` markers, with its section) and a small Markdown reader for showing a
 * rule in its section, so a failed check's rule opens next to the trace rather than in another
 * program. The text is bundled at build time; nothing is fetched.
 * @module
 */

/** One normative rule. */
export interface Rule {
  readonly id: string;
  /** The rule's text (Markdown, continuation lines joined). */
  readonly text: string;
  /** The heading of its section (`## …` or `### …`: the protocol parts are numbered subsections). */
  readonly section: string;
  /** 1-based line of the rule in WHITEPAPER.md. */
  readonly line: number;
}

/** A `## …` or `### …` section of the whitepaper, up to the next heading of either level. */
export interface Section {
  readonly heading: string;
  readonly line: number;
  /** Markdown lines, heading excluded. */
  readonly lines: readonly string[];
}

/** The parsed whitepaper. */
export interface Whitepaper {
  readonly rules: ReadonlyMap<string, Rule>;
  readonly sections: readonly Section[];
}

const RULE_START = /^- \*\*(WP-[A-Z]+-\d+)\*\*\s*(.*)$/;

/** Parses WHITEPAPER.md. */
export function parseWhitepaper(markdown: string): Whitepaper {
  const lines = markdown.split('\n');
  const sections: Section[] = [];
  const rules = new Map<string, Rule>();
  let current: { heading: string; line: number; lines: string[] } | null = null;
  let inRules = false;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] ?? '';
    if (line.includes('<!-- rules:begin -->')) inRules = true;
    if (line.includes('<!-- rules:end -->')) inRules = false;
    const heading = /^#{2,3} (.*)$/.exec(line);
    if (heading !== null) {
      if (current !== null) sections.push(current);
      current = { heading: (heading[1] ?? '').trim(), line: i + 1, lines: [] };
      continue;
    }
    current?.lines.push(line);
    const match = inRules ? RULE_START.exec(line) : null;
    if (match !== null && current !== null) {
      const parts = [match[2] ?? ''];
      for (let j = i + 1; j < lines.length && /^\s{2,}\S/.test(lines[j] ?? ''); j++)
        parts.push((lines[j] ?? '').trim());
      const id = match[1] ?? '';
      if (!rules.has(id)) rules.set(id, { id, text: parts.join(' '), section: current.heading, line: i + 1 });
    }
  }
  if (current !== null) sections.push(current);
  return { rules, sections };
}

/** Appends inline Markdown (code, bold, italics, links as text) to `parent`. */
function inline(parent: HTMLElement, text: string): void {
  const pattern = /(`[^`]+`|\*\*[^*]+\*\*|\[[^\]]+\]\([^)]+\))/g;
  let last = 0;
  for (const match of text.matchAll(pattern)) {
    const index = match.index ?? 0;
    if (index > last) parent.append(text.slice(last, index));
    const token = match[0];
    if (token.startsWith('`')) {
      const code = document.createElement('code');
      code.textContent = token.slice(1, -1);
      parent.append(code);
    } else if (token.startsWith('**')) {
      const strong = document.createElement('strong');
      strong.textContent = token.slice(2, -2);
      parent.append(strong);
    } else {
      parent.append(/^\[([^\]]+)\]/.exec(token)?.[1] ?? token);
    }
    last = index + token.length;
  }
  if (last < text.length) parent.append(text.slice(last));
}

/**
 * Renders a section's Markdown (headings, paragraphs, lists, tables, code blocks) into elements;
 * each rule item gets `id="<rule>"` so it can be scrolled to and highlighted.
 */
export function renderSection(section: Section): HTMLElement {
  const root = document.createElement('article');
  const h = document.createElement('h2');
  h.textContent = section.heading;
  root.append(h);
  const lines = section.lines;
  let i = 0;
  while (i < lines.length) {
    const line = lines[i] ?? '';
    if (line.trim() === '' || line.startsWith('<!--')) {
      i++;
      continue;
    }
    if (line.startsWith('```')) {
      const pre = document.createElement('pre');
      const body: string[] = [];
      for (i++; i < lines.length && !(lines[i] ?? '').startsWith('```'); i++) body.push(lines[i] ?? '');
      pre.textContent = body.join('\n');
      root.append(pre);
      i++;
      continue;
    }
    const heading = /^(#{3,6}) (.*)$/.exec(line);
    if (heading !== null) {
      const hn = document.createElement('h3');
      inline(hn, heading[2] ?? '');
      root.append(hn);
      i++;
      continue;
    }
    if (line.startsWith('|')) {
      const table = document.createElement('table');
      for (; i < lines.length && (lines[i] ?? '').startsWith('|'); i++) {
        const cells = (lines[i] ?? '').split('|').slice(1, -1);
        if (cells.every((c) => /^\s*:?-+:?\s*$/.test(c))) continue;
        const tr = document.createElement('tr');
        for (const c of cells) {
          const td = document.createElement('td');
          inline(td, c.trim());
          tr.append(td);
        }
        table.append(tr);
      }
      root.append(table);
      continue;
    }
    if (/^\s*([-*]|\d+\.) /.test(line)) {
      const ul = document.createElement('ul');
      while (i < lines.length && /^\s*([-*]|\d+\.) /.test(lines[i] ?? '')) {
        const parts = [(lines[i] ?? '').replace(/^\s*([-*]|\d+\.) /, '')];
        for (
          i++;
          i < lines.length && /^\s{2,}\S/.test(lines[i] ?? '') && !/^\s*([-*]|\d+\.) /.test(lines[i] ?? '');
          i++
        ) {
          parts.push((lines[i] ?? '').trim());
        }
        const li = document.createElement('li');
        const textValue = parts.join(' ');
        const rule = /^\*\*(WP-[A-Z]+-\d+)\*\*/.exec(textValue);
        if (rule !== null) {
          li.id = rule[1] ?? '';
          li.className = 'rule';
        }
        inline(li, textValue);
        ul.append(li);
      }
      root.append(ul);
      continue;
    }
    const paragraph: string[] = [];
    while (
      i < lines.length &&
      (lines[i] ?? '').trim() !== '' &&
      !/^(```|#|\||\s*[-*] )/.test(lines[i] ?? '')
    ) {
      paragraph.push((lines[i] ?? '').trim());
      i++;
    }
    if (paragraph.length === 0) {
      i++;
      continue;
    }
    const p = document.createElement('p');
    inline(p, paragraph.join(' '));
    root.append(p);
  }
  return root;
}
