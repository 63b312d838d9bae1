/**
 * Export to ShiViz (https://bestchai.bitbucket.io/shiviz/): a log whose first line is the parser
 * regular expression, whose second line is the (empty) delimiter between executions, and whose
 * entries are two lines each — a description, then `host {vector clock}`. The trace's vector
 * clocks (simulator/trace.ts) already follow ShiViz's rules: a node's own entry increases by one
 * per event, and a receive merges the clock the packet carried. Summary-mode traces carry no
 * clocks and cannot be exported.
 * @module
 */
import { canonicalJson } from '../../../simulator/canonical.js';
import { formatTicks, isPlainRecord, type TraceModel, type VizEvent } from './model.js';

/** The parser regular expression ShiViz is given (first line of the export). */
export const SHIVIZ_REGEX = '(?<event>.*)\\n(?<host>\\S*) (?<clock>{.*})';

/** One line describing an event for ShiViz. */
export function describeEvent(event: VizEvent): string {
  const d = event.data;
  let what: string = event.kind;
  if (event.kind === 'step') {
    const input = isPlainRecord(d.input) ? d.input : {};
    const outputs = Array.isArray(d.outputs) ? d.outputs.length : 0;
    what = `step ${String(input.kind)}${outputs > 0 ? ` → ${outputs} output${outputs === 1 ? '' : 's'}` : ''}`;
  } else if (event.kind === 'request') {
    const request = isPlainRecord(d.request) ? d.request : {};
    const response = isPlainRecord(d.response) ? d.response : {};
    what = `request ${String(request.kind)} from ${String(d.from)} → ${String(response.kind)}`;
  } else if (event.kind === 'net') {
    what =
      `net ${String(d.action)} ${String(d.reason ?? d.mode ?? '')} ${String(d.dir ?? '')} ${String(d.device)}`.replace(
        /\s+/g,
        ' ',
      );
  } else if (event.kind === 'fault') what = `fault ${String(d.fault)}`;
  else if (event.kind === 'check') what = `CHECK FAILED ${String(d.property)}: ${String(d.message)}`;
  else if (event.kind === 'lifecycle') what = `lifecycle ${String(d.lifecycle)}`;
  return `#${event.index + 1} t=${event.t} (${formatTicks(event.t)}) ${what}`.replace(/\n/g, ' ');
}

/** The ShiViz log of a trace, or null for a trace without vector clocks (summary mode). */
export function shivizLog(model: TraceModel): string | null {
  if (model.summaryMode) return null;
  const out: string[] = [SHIVIZ_REGEX, ''];
  for (const event of model.events) {
    if (Object.keys(event.vc).length === 0) continue;
    out.push(describeEvent(event));
    out.push(`${event.node} ${canonicalJson(event.vc)}`);
  }
  return `${out.join('\n')}\n`;
}
