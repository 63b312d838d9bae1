/**
 * State paths for traces: which statechart states a machine passed through while it handled one
 * input. The simulator records them on device `step` and server `request` events when the model
 * engine runs (simulator/TRACE-FORMAT.md, `data.model`), so the visualiser can highlight the state
 * at the cursor and the transitions that fired, eventless ones included.
 * @module
 */
import type { AnyActorRef, InspectionEvent } from 'xstate';

/** The states one input moved a machine through. */
export interface MachineStep {
  /** The state before the input, then the state after each microstep, in order. */
  readonly path: readonly string[];
  /** The state after the input (the last entry of `path`). */
  readonly state: string;
}

/**
 * A state value as a dotted id relative to the machine root (`linked.receiving.next`). A parallel
 * value, which no Lockstep machine has today, becomes its sorted leaf ids joined by commas.
 */
export function stateId(value: unknown): string {
  if (typeof value === 'string') return value;
  if (value === null || typeof value !== 'object') return String(value);
  const leaves = Object.entries(value as Record<string, unknown>).map(([key, child]) => {
    const inner = stateId(child);
    return inner === '' ? key : `${key}.${inner}`;
  });
  return leaves.sort().join(',');
}

/**
 * Records the microsteps of one actor. `inspect` goes into `createActor`'s options; `begin` is
 * called with the state before an input and `end` returns the step.
 */
export class StepRecorder {
  private path: string[] = [];
  private actor: AnyActorRef | null = null;

  /** The `inspect` callback; only microsteps of the recorded actor itself count. */
  readonly inspect = (event: InspectionEvent): void => {
    if (event.type !== '@xstate.microstep') return;
    if (this.actor !== null && event.actorRef !== this.actor) return;
    this.path.push(stateId((event.snapshot as { readonly value?: unknown }).value));
  };

  /** Starts a step from `value`, the state before the input, for `actor`. */
  begin(actor: AnyActorRef, value: unknown): void {
    this.actor = actor;
    this.path = [stateId(value)];
  }

  /** The step recorded since `begin`, ending in `value`, the state after the input. */
  end(value: unknown): MachineStep {
    const state = stateId(value);
    const path = this.path;
    if (path[path.length - 1] !== state) path.push(state);
    this.path = [];
    return { path, state };
  }
}
