/**
 * The swarm worker thread: receives {@link SwarmJob}s, runs each and posts its
 * {@link SwarmOutcome}. One job at a time; the main thread hands out the next seed on each answer.
 * @module
 */
import { parentPort } from 'node:worker_threads';
import { runSwarmJob, type SwarmJob } from './swarm-job.js';

const port = parentPort;
if (port === null) throw new Error('cli/swarm-worker.ts must run in a worker thread');
port.on('message', (job: SwarmJob) => {
  port.postMessage(runSwarmJob(job));
});
