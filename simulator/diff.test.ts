import { describe, expect, it } from 'vitest';
import { MAX_FIELD_PATHS, diffTraces, differingFields } from './diff.js';

const header = JSON.stringify({ type: 'header', formatVersion: 1, config: { seed: 1 } });
const event = (seq: number, data: Record<string, unknown> = {}, node = 'alice-1'): string =>
  JSON.stringify({ type: 'event', t: seq * 10, seq, node, kind: 'send', vc: { [node]: seq }, data });

describe('diffTraces', () => {
  it('reports identical traces with their line count', () => {
    const trace = [header, event(1), event(2)];
    expect(diffTraces(trace, [...trace])).toEqual({ identical: true, lines: 3 });
  });

  it('finds the first divergent event and names the differing fields', () => {
    const a = [header, event(1), event(2, { counter: 3, size: 10 }), event(3, { counter: 9 })];
    const b = [header, event(1), event(2, { counter: 4, size: 10 }), event(3, { counter: 8 })];
    const diff = diffTraces(a, b);
    expect(diff.identical).toBe(false);
    if (diff.identical) return;
    expect(diff.line).toBe(3);
    expect(diff.a).toBe(a[2]);
    expect(diff.b).toBe(b[2]);
    expect(diff.fields).toEqual(['data', 'data.counter']);
  });

  it('names header fields that differ', () => {
    const other = JSON.stringify({ type: 'header', formatVersion: 2, config: { seed: 7 } });
    const diff = diffTraces([header, event(1)], [other, event(1)]);
    expect(diff).toMatchObject({
      identical: false,
      line: 1,
      fields: ['config', 'config.seed', 'formatVersion'],
    });
  });

  it('reports a trace that ends early at the first missing line', () => {
    const a = [header, event(1), event(2)];
    expect(diffTraces(a, a.slice(0, 2))).toEqual({
      identical: false,
      line: 3,
      a: a[2],
      b: null,
      fields: ['<missing line>'],
    });
    expect(diffTraces(a.slice(0, 1), a)).toMatchObject({ line: 2, a: null, b: a[1] });
  });

  it('names added and removed keys, vector-clock entries and array elements', () => {
    const a = JSON.stringify({ t: 1, vc: { a: 1 }, data: { ids: [1, 2, 3] } });
    const b = JSON.stringify({ t: 1, vc: { a: 1, b: 2 }, data: { ids: [1, 5] }, extra: true });
    expect(differingFields(a, b)).toEqual([
      'data',
      'data.ids',
      'data.ids[1]',
      'data.ids[2]',
      'extra',
      'vc',
      'vc.b',
    ]);
  });

  it('compares non-JSON lines as text and flags non-canonical encodings', () => {
    expect(differingFields('not json', '{}')).toEqual(['<text>']);
    expect(differingFields('{"a":1,"b":2}', '{"b":2,"a":1}')).toEqual(['<encoding>']);
  });

  it('caps the number of listed fields', () => {
    const many = (offset: number): string =>
      JSON.stringify(
        Object.fromEntries(Array.from({ length: 100 }, (_, index) => [`k${index}`, index + offset])),
      );
    expect(differingFields(many(0), many(1))).toHaveLength(MAX_FIELD_PATHS);
  });
});
