/**
 * The engine interface (simulator/engine.ts): the generic `both` engine compares two engines step
 * by step and stops at the first divergence; the sharded impl server answers like the unsharded
 * one; the memoised Sesame projection equals impl/'s.
 */
import { describe, expect, it } from 'vitest';
import { nodeProvider } from '../spec/crypto/node.js';
import { abstractDevice } from '../impl/device-abstract.js';
import { deviceStep, type DeviceInput, type DeviceState } from '../impl/device.js';
import { droppedByRevocation, emptyServerState, handleRequest, mailboxDepth } from '../impl/server.js';
import { abstractServer } from '../impl/server-abstract.js';
import type { Env } from '../spec/env.js';
import { canonicalJson } from './canonical.js';
import {
  abstractImplDevice,
  bothEngineFactory,
  implEngineFactory,
  modelEngineFactory,
  SesameAbstractCache,
  type EngineFactory,
} from './engine.js';
import { presetConfig } from './presets.js';
import { runSimulation } from './run.js';

describe('engines', () => {
  it('both: the sharded and the unsharded impl server agree on every request of a run', () => {
    const factory = bothEngineFactory(
      implEngineFactory({ sharded: true }),
      implEngineFactory({ sharded: false }),
    );
    const result = runSimulation(presetConfig('smoke', 21), { crypto: nodeProvider, factory });
    expect(result.divergence).toBeNull();
    expect(result.violations).toEqual([]);
  });

  it('both: impl and model agree on a whole run', () => {
    const result = runSimulation(presetConfig('smoke', 22, { engine: 'both' }), { crypto: nodeProvider });
    expect(result.divergence).toBeNull();
    expect(result.violations).toEqual([]);
  });

  it('both: a difference between the engines is reported as the first divergence', () => {
    // A second engine that draws one byte more when it creates a primary device.
    const impl = implEngineFactory();
    const skewed: EngineFactory = {
      ...impl,
      createPrimary(env, userId, now, options) {
        env.rng.randomBytes(1);
        return impl.createPrimary(env, userId, now, options);
      },
    };
    const result = runSimulation(presetConfig('smoke', 23), {
      crypto: nodeProvider,
      factory: bothEngineFactory(impl, skewed),
    });
    expect(result.divergence).toMatchObject({ field: 'draws', t: 1 });
    expect(result.lines.at(-1)).toContain('"kind":"divergence"');
  });

  it('both: the memoised impl server projection equals impl/server-abstract.ts over the whole state after every request', () => {
    // The second engine's server runs impl/server.ts over one plain state and projects it afresh.
    const impl = implEngineFactory();
    const plain: EngineFactory = {
      ...impl,
      createServer(env) {
        let state = emptyServerState();
        return {
          handle(request, now) {
            const step = handleRequest(env, state, request, now);
            state = step.state;
            return step.response;
          },
          abstract: () => abstractServer(env.crypto, state),
          mailboxDepth: (address) => mailboxDepth(state, address),
          droppedByRevocation: (address) => droppedByRevocation(state, address),
          signedDeviceList: (userId) =>
            Object.hasOwn(state.accounts, userId) ? (state.accounts[userId]?.signedDeviceList ?? null) : null,
          storedBytes: () => [],
          modelStep: () => null,
        };
      },
    };
    const result = runSimulation(presetConfig('default', 25, { workload: { messages: 60 } }), {
      crypto: nodeProvider,
      factory: bothEngineFactory(impl, plain),
    });
    expect(result.divergence).toBeNull();
    expect(result.counters['server.send']).toBeGreaterThan(50);
  });

  it('the model factory builds every node', () => {
    expect(modelEngineFactory().name).toBe('model');
  });

  it('the memoised projection equals impl/device-abstract.ts on every step of a device', () => {
    // Drive one device through a run and compare the projections after each of its steps.
    const states: DeviceState[] = [];
    const recording: EngineFactory = {
      ...implEngineFactory(),
      createPrimary(env: Env, userId, now, options) {
        const created = implEngineFactory().createPrimary(env, userId, now, options);
        const engine = created.engine;
        return {
          outputs: created.outputs,
          engine: {
            ...engine,
            step: (input: DeviceInput, t: number) => {
              const out = engine.step(input, t);
              states.push(engine.snapshot() as DeviceState);
              return out;
            },
            abstract: () => engine.abstract(),
            lifecycle: () => engine.lifecycle(),
            address: () => engine.address(),
            hasWork: () => engine.hasWork(),
            snapshot: () => engine.snapshot(),
            restore: (s: unknown) => engine.restore(s),
            modelStep: () => engine.modelStep(),
          },
        };
      },
    };
    runSimulation(presetConfig('smoke', 24), { crypto: nodeProvider, factory: recording });
    expect(states.length).toBeGreaterThan(50);
    const cache = new SesameAbstractCache(nodeProvider);
    for (const state of states) {
      expect(canonicalJson(abstractImplDevice(nodeProvider, state, cache), nodeProvider)).toBe(
        canonicalJson(abstractDevice(nodeProvider, state), nodeProvider),
      );
    }
    void deviceStep;
  });
});
