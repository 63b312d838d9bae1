/**
 * Entry point of the `lockstep` command (loaded by `cli/lockstep.js` through tsx). Parses the
 * command line and maps failures to exit statuses: 0 success, 1 a check failed, 2 a usage or input
 * error, 3 a trace did not reproduce.
 * @module
 */
import { buildProgram } from './program.js';
import { CliError } from './io.js';

try {
  await buildProgram().parseAsync(process.argv);
} catch (error) {
  if (error instanceof CliError) {
    process.stderr.write(`lockstep: ${error.message}\n`);
    process.exitCode = error.exitCode;
  } else {
    throw error;
  }
}
