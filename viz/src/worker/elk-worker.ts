/**
 * The web worker that lays out statecharts with elkjs, so that the first drawing of a large machine
 * (the server's 159 states take seconds) never freezes the page.
 * @module
 */
import ELK from 'elkjs/lib/elk.bundled.js';
import type { ElkNode } from 'elkjs/lib/elk-api.js';

/** A layout request. */
export interface LayoutRequest {
  readonly id: number;
  readonly graph: ElkNode;
}

/** A layout answer. */
export type LayoutReply =
  | { readonly id: number; readonly ok: true; readonly graph: ElkNode }
  | { readonly id: number; readonly ok: false; readonly error: string };

interface WorkerScope {
  onmessage: ((event: MessageEvent<LayoutRequest>) => void) | null;
  postMessage(message: LayoutReply): void;
}

const scope = globalThis as unknown as WorkerScope;
const elk = new ELK();

scope.onmessage = (event) => {
  const { id, graph } = event.data;
  elk
    .layout(graph)
    .then((laid) => scope.postMessage({ id, ok: true, graph: laid }))
    .catch((error: unknown) =>
      scope.postMessage({ id, ok: false, error: error instanceof Error ? error.message : String(error) }),
    );
};
