/**
 * A cross-check that cannot fail proves nothing (design brief, "Planted-bug flags"). These tests
 * plant one wrong guard in the session machine (`machine.provide`), replay a path that exercises
 * it on both engines, and require the comparison of test/conformance/support.ts to report the
 * divergence at the right step and field — and to report nothing for the unmodified machine.
 */
import { describe, expect, it } from 'vitest';
import { nodeProvider } from '../../spec/crypto/node.js';
import type { SessionMachine } from '../../model/session.js';
import {
  describeAction,
  describeDivergence,
  partyKeys,
  replaySessionActions,
  type SessionAction,
} from './support.js';

const crypto = nodeProvider;
const keys = { A: partyKeys(crypto, 'planted/A'), B: partyKeys(crypto, 'planted/B') };

const establish: readonly SessionAction[] = [
  { kind: 'bundle', by: 'A', choice: 'fresh' },
  { kind: 'send', by: 'A' },
  { kind: 'deliver', to: 'B', pick: 'newest' },
];

function divergenceOf(
  actions: readonly SessionAction[],
  variant?: (machine: SessionMachine) => SessionMachine,
) {
  const result = replaySessionActions(
    crypto,
    keys,
    'planted',
    actions,
    variant === undefined ? {} : { variant },
  );
  return { result, message: result.divergence === null ? null : describeDivergence(result.divergence) };
}

describe('planted divergences are caught', () => {
  it('a forward-jump guard that always passes is reported at the far-future delivery, on the error code [WP-DR-07]', () => {
    const actions: SessionAction[] = [...establish, { kind: 'tamper', to: 'B', how: 'farFuture' }];
    expect(divergenceOf(actions).message).toBeNull();
    const { result, message } = divergenceOf(actions, (machine) =>
      machine.provide({ guards: { counterWithinForwardJumpLimit: () => true } }),
    );
    expect(result.divergence).not.toBeNull();
    expect(result.divergence?.step).toBe(3);
    expect(result.divergence?.label).toBe(describeAction({ kind: 'tamper', to: 'B', how: 'farFuture' }));
    expect(result.divergence?.field).toBe('outputs[0].output.code');
    expect(result.divergence?.impl).toBe('"FORWARD_JUMP_TOO_FAR"');
    expect(message).toContain("at step 3 (deliver A's message to B with farFuture tampering)");
    expect(message).toContain('field outputs[0].output.code: impl "FORWARD_JUMP_TOO_FAR" ≠ model');
  });

  it('a receiving-chain cap that never fires is reported in the abstract state [WP-DR-09]', () => {
    const actions: SessionAction[] = [...establish, { kind: 'pingPong', rounds: 6 }];
    expect(divergenceOf(actions).message).toBeNull();
    const { result, message } = divergenceOf(actions, (machine) =>
      machine.provide({ guards: { receiverChainsOverLimit: () => false } }),
    );
    expect(result.divergence?.step).toBe(3);
    expect(result.divergence?.field).toMatch(/^abstract\.[AB]\.record\.current\.receiverChains\.length$/);
    expect(result.divergence?.impl).toBe('5');
    expect(Number(result.divergence?.model)).toBeGreaterThan(5);
    expect(message).toContain('at step 3 (6 round trips)');
  });

  it('a duplicate accepted as if its key were stored is reported on the output [WP-DR-10]', () => {
    const actions: SessionAction[] = [...establish, { kind: 'duplicate', to: 'B' }];
    expect(divergenceOf(actions).message).toBeNull();
    const { result } = divergenceOf(actions, (machine) =>
      machine.provide({ guards: { counterBehindChain: () => false } }),
    );
    expect(result.divergence?.step).toBe(3);
    expect(result.divergence?.field).toMatch(/^outputs\[0\]\.output\./);
  });
});
