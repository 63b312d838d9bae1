/**
 * How the command line runs the simulator: with the node:crypto provider (about three times faster
 * than noble here; traces are byte-identical with either provider, so a trace made in the browser
 * replays here and the other way round), and with an engine that is not available turned into a
 * clear usage error.
 * @module
 */
import { nodeProvider } from '../spec/crypto/node.js';
import type { ScheduleEntry, SimConfig, SimResult } from '../simulator/api.js';
import { EngineUnavailableError } from '../simulator/engine.js';
import { runSimulation } from '../simulator/run.js';
import { CliError } from './io.js';

/** The crypto provider every CLI run uses. */
export const CLI_CRYPTO = nodeProvider;

/** Run `config` (with `schedule` when explicit). */
export function simulate(config: SimConfig, schedule?: readonly ScheduleEntry[]): SimResult {
  return unavailableAsUsage(() =>
    runSimulation(config, schedule === undefined ? { crypto: CLI_CRYPTO } : { crypto: CLI_CRYPTO, schedule }),
  );
}

/** Run `work`, turning {@link EngineUnavailableError} into an exit-2 {@link CliError}. */
export function unavailableAsUsage<T>(work: () => T): T {
  try {
    return work();
  } catch (error) {
    if (error instanceof EngineUnavailableError) {
      throw new CliError(
        `engine '${error.engine}' is not available in this build (${error.message}); run with --engine impl`,
      );
    }
    throw error;
  }
}
