/**
 * `lockstep viz [TRACE]`: serves the browser visualiser (viz/) on 127.0.0.1 and prints the URL;
 * with a trace, the URL opens it. The app is built on demand (Vite, into viz/dist) when no build
 * exists. Node-only; the server code lives in viz/server/serve.ts and is loaded only by this
 * command, so other commands do not pay for it.
 * @module
 */
import { closeSync, existsSync, openSync, readSync } from 'node:fs';
import path from 'node:path';
import { parseTraceHeader } from '../simulator/replay.js';
import { CliError, describe } from './io.js';

/** Options of `lockstep viz`. */
export interface VizOptions {
  readonly port: number;
  readonly rebuild: boolean;
  readonly dist?: string;
}

/** Serves the visualiser until the process is stopped; prints the URL through `say`. */
export async function vizAction(
  trace: string | undefined,
  options: VizOptions,
  say: (text: string) => void,
): Promise<void> {
  if (trace !== undefined) {
    const header = parseTraceHeader(firstLine(trace));
    if (!header.ok) throw new CliError(`${trace} is not a Lockstep trace: ${header.message}`);
  }
  const serve = await import('../viz/server/serve.js');
  const dist = options.dist === undefined ? serve.DIST_DIR : path.resolve(options.dist);
  if (options.rebuild || !serve.built(dist)) {
    if (options.dist !== undefined && !options.rebuild && !existsSync(dist))
      throw new CliError(`no build at ${dist}`);
    say(`building the visualiser into ${path.relative(process.cwd(), dist) || dist} …`);
    await serve.buildViz(dist);
  }
  const start = (port: number): ReturnType<typeof serve.serveViz> => serve.serveViz({ trace, port, dist });
  const served = await start(options.port).catch((error: unknown) => {
    // The default port is taken (another viz is running): any free port will do.
    if ((error as { code?: string }).code === 'EADDRINUSE') return start(0);
    throw error;
  });
  say(`Lockstep viz: ${served.url}`);
  say('serving on 127.0.0.1 only; Ctrl-C to stop');
}

/** The first line of a file, read without loading the rest (traces can be hundreds of megabytes). */
function firstLine(file: string): string | undefined {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (error) {
    throw new CliError(`cannot read trace ${file}: ${describe(error)}`);
  }
  try {
    const chunks: Buffer[] = [];
    const chunk = Buffer.alloc(1 << 16);
    for (;;) {
      const read = readSync(fd, chunk, 0, chunk.length, null);
      if (read === 0) break;
      const end = chunk.subarray(0, read).indexOf(10);
      chunks.push(Buffer.from(chunk.subarray(0, end < 0 ? read : end)));
      if (end >= 0) break;
    }
    const text = Buffer.concat(chunks).toString('utf8');
    return text === '' ? undefined : text;
  } finally {
    closeSync(fd);
  }
}
