/**
 * A larger heap for large runs. Node's default old-generation limit is about 4 GiB on a 64-bit
 * machine, and `peak-day` (30 000 devices, each holding its sessions, prekeys and Sesame records)
 * needs more than that live at once. Node fixes the limit at startup, so a command about to run
 * such a configuration in a process with the default limit runs its own command line again in a
 * child Node process with {@link LARGE_RUN_NODE_FLAGS} (heap limit {@link HEAP_LIMIT_MIB}), passing the terminal
 * through, and exits with the child's status. Smaller runs never pay for the extra process.
 * @module
 */
import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import { getHeapStatistics } from 'node:v8';
import type { SimConfig } from '../simulator/api.js';

/**
 * The heap limit of a large run (MiB). `peak-day` peaks at about 4.5 GiB of live heap (measured:
 * README.md, "Performance"); 7 GiB leaves the collector room without letting the process grow past
 * the 8 GiB floor on the heap alone.
 */
export const HEAP_LIMIT_MIB = 7168;

/**
 * The young generation's semi-space size of a large run (MiB; Node's default is 16). A simulated
 * step allocates many short-lived objects (immutable state copies, BigInt arithmetic); with a
 * multi-GiB live heap, a larger nursery lets more of them die young instead of being promoted and
 * marked by full collections (measured: README.md, "Performance").
 */
export const SEMI_SPACE_MIB = 128;

/** The Node flags a large run is started with. */
export const LARGE_RUN_NODE_FLAGS: readonly string[] = [
  `--max-old-space-size=${HEAP_LIMIT_MIB}`,
  `--max-semi-space-size=${SEMI_SPACE_MIB}`,
];

/**
 * Live heap per simulated device (MiB), an upper estimate from heap snapshots at the end of
 * scaled-down `peak-day` runs (sessions, prekeys, Sesame records and the checker's bookkeeping).
 */
const HEAP_PER_DEVICE_MIB = 0.16;

/** Set in the child so that it never starts another one. */
const RELAUNCHED_ENV = 'LOCKSTEP_LARGE_HEAP';

/**
 * True when a run of `config` is expected to need more than half of this process's heap limit and
 * the limit is below {@link HEAP_LIMIT_MIB} (and this process is not already such a child).
 */
export function needsLargerHeap(config: SimConfig): boolean {
  if (process.env[RELAUNCHED_ENV] !== undefined) return false;
  const limitMib = getHeapStatistics().heap_size_limit / 2 ** 20;
  if (limitMib >= HEAP_LIMIT_MIB) return false;
  const devices = config.workload.users * config.workload.devicesPerUser;
  return devices * HEAP_PER_DEVICE_MIB > limitMib / 2;
}

/**
 * Runs this process's command line again in a child Node process whose heap limit is
 * {@link HEAP_LIMIT_MIB}, with the same terminal, and resolves to its exit status (128 + the signal
 * number when a signal ended it). Interrupts and terminations sent to this process are passed on.
 */
export function rerunWithLargerHeap(): Promise<number> {
  process.stderr.write(
    `lockstep: this run needs a larger heap than Node's default; running it again with ${LARGE_RUN_NODE_FLAGS.join(' ')}\n`,
  );
  const child = spawn(
    process.execPath,
    [...process.execArgv, ...LARGE_RUN_NODE_FLAGS, ...process.argv.slice(1)],
    { stdio: 'inherit', env: { ...process.env, [RELAUNCHED_ENV]: '1' } },
  );
  const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
  const forward = (signal: NodeJS.Signals): void => {
    child.kill(signal);
  };
  for (const signal of signals) process.on(signal, forward);
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      for (const s of signals) process.off(s, forward);
      resolve(code ?? 128 + (signal === null ? 0 : constants.signals[signal]));
    });
  });
}
