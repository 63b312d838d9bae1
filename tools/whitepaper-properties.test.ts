import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { PROPERTIES } from '../simulator/invariants.js';
import { propertiesTable, runWhitepaperProperties, withPropertiesTable } from './whitepaper-properties.js';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

describe('whitepaper:properties', () => {
  it('WHITEPAPER.md states exactly the properties the simulator checks', () => {
    expect(runWhitepaperProperties(REPO_ROOT, ['--check'])).toBe(0);
  });

  it('has one row per property with its rules, bug and envelope', () => {
    const table = propertiesTable();
    for (const p of PROPERTIES) {
      expect(table).toContain(`| \`${p.name}\` |`);
      for (const rule of p.rules) expect(table).toContain(rule);
    }
    expect(table.split('\n').filter((l) => l.startsWith('| `')).length).toBe(PROPERTIES.length);
  });

  it('replaces only the text between the markers and refuses a document without them', () => {
    const doc = 'before\n<!-- properties:begin -->\nOBSOLETE-PLACEHOLDER\n<!-- properties:end -->\nafter\n';
    const next = withPropertiesTable(doc);
    expect(next.startsWith('before\n<!-- properties:begin -->')).toBe(true);
    expect(next.endsWith('<!-- properties:end -->\nafter\n')).toBe(true);
    expect(next).not.toContain('OBSOLETE-PLACEHOLDER');
    expect(() => withPropertiesTable('no markers')).toThrow(/properties:begin/);
  });
});
