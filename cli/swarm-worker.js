// Worker-thread launcher for `lockstep swarm`: plain ESM, like cli/lockstep.js, so a worker can
// load the TypeScript sources without a build step whoever started the main thread.
import { register } from 'tsx/esm/api';

register();
await import('./swarm-worker.ts');
