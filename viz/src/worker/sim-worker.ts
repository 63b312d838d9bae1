/**
 * The web worker that runs the simulator for the page (simulator/run.ts `runSimulation` with the
 * pure-JavaScript noble crypto provider), so a run of several seconds never freezes the page. It
 * receives a {@link SimConfig} and answers with the trace text (the exact bytes `lockstep sim
 * --out` writes), its SHA-256 and the run's verdict.
 * @module
 */
import type { SimConfig } from '../../../simulator/api.js';
import { runSimulation } from '../../../simulator/run.js';
import { nobleProvider } from '../../../spec/crypto/noble.js';
import { toHex } from '../../../spec/hex.js';

/** What the page asks. */
export interface SimRequest {
  readonly config: SimConfig;
}

/** What the worker answers. */
export type SimReply =
  | {
      readonly ok: true;
      readonly text: string;
      readonly sha256: string;
      readonly lines: number;
      readonly passed: boolean;
      readonly violations: readonly { property: string; message: string; rules: readonly string[] }[];
      readonly divergence: string | null;
      readonly wallMs: number;
    }
  | { readonly ok: false; readonly error: string };

interface WorkerScope {
  onmessage: ((event: MessageEvent<SimRequest>) => void) | null;
  postMessage(message: SimReply): void;
}

const scope = globalThis as unknown as WorkerScope;

scope.onmessage = (event) => {
  const started = performance.now();
  try {
    const result = runSimulation(event.data.config, { crypto: nobleProvider });
    // cli/io.ts traceText: each line followed by a newline.
    const text = result.lines.length === 0 ? '' : `${result.lines.join('\n')}\n`;
    const sha256 = toHex(nobleProvider.sha256(new TextEncoder().encode(text)));
    scope.postMessage({
      ok: true,
      text,
      sha256,
      lines: result.lines.length,
      passed: result.violations.length === 0 && result.divergence === null,
      violations: result.violations.map((v) => ({
        property: v.property,
        message: v.message,
        rules: v.rules,
      })),
      divergence:
        result.divergence === null
          ? null
          : `${result.divergence.node} ${result.divergence.field} at t=${result.divergence.t}`,
      wallMs: performance.now() - started,
    });
  } catch (error) {
    scope.postMessage({
      ok: false,
      error: error instanceof Error ? `${error.name}: ${error.message}` : String(error),
    });
  }
};
