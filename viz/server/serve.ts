/**
 * Builds and serves the visualiser on loopback (Node only): `npm run viz` and `npx lockstep viz
 * TRACE` both end here. The production build (viz/dist, git-ignored) is plain static files; this
 * server adds one route, `/trace.ndjson`, for the trace given on the command line, and the printed
 * URL opens it (`?trace=trace.ndjson`).
 *
 * Nothing listens beyond 127.0.0.1.
 * @module
 */
import { createReadStream, existsSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The visualiser's folder (viz/). */
export const VIZ_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Where the production build goes. */
export const DIST_DIR = path.join(VIZ_DIR, 'dist');

/** Example traces written by `npm run viz:fixtures`, served under `/examples/`. */
export const EXAMPLES_DIR = path.join(VIZ_DIR, 'fixtures');

const TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.svg': 'image/svg+xml',
  '.ndjson': 'application/x-ndjson; charset=utf-8',
  '.map': 'application/json',
};

/** Whether a build exists. */
export function built(dist = DIST_DIR): boolean {
  return existsSync(path.join(dist, 'index.html'));
}

/** Builds the app with Vite into `outDir` (default viz/dist). */
export async function buildViz(outDir = DIST_DIR): Promise<void> {
  const { build } = await import('vite');
  await build({ configFile: path.join(VIZ_DIR, 'vite.config.ts'), build: { outDir }, logLevel: 'warn' });
}

/** Options of {@link serveViz}. */
export interface ServeOptions {
  /** A trace file served at `/trace.ndjson` and opened by the printed URL. */
  readonly trace?: string | undefined;
  /** TCP port on 127.0.0.1; 0 picks a free one. */
  readonly port?: number | undefined;
  /** The folder to serve (default viz/dist). */
  readonly dist?: string | undefined;
  /** Extra files served by URL path (tests serve generated traces this way). */
  readonly files?: Readonly<Record<string, string>> | undefined;
  /** Folder served under `/examples/` (default viz/fixtures, when it exists). */
  readonly examples?: string | undefined;
}

/** A running server. */
export interface VizServer {
  readonly server: Server;
  /** Base URL, e.g. `http://127.0.0.1:5178/`. */
  readonly base: string;
  /** The URL to open: the base, plus `?trace=trace.ndjson` when a trace was given. */
  readonly url: string;
  close(): Promise<void>;
}

/** Serves the build (and a trace) on 127.0.0.1. */
export async function serveViz(options: ServeOptions = {}): Promise<VizServer> {
  const dist = path.resolve(options.dist ?? DIST_DIR);
  const examples = path.resolve(options.examples ?? EXAMPLES_DIR);
  const files = new Map<string, string>(Object.entries(options.files ?? {}));
  if (options.trace !== undefined) files.set('/trace.ndjson', path.resolve(options.trace));
  const server = createServer((request, response) => {
    const url = new URL(request.url ?? '/', 'http://127.0.0.1');
    let pathname = decodeURIComponent(url.pathname);
    if (pathname === '/') pathname = '/index.html';
    const mapped = files.get(pathname);
    const inExamples = mapped === undefined && pathname.startsWith('/examples/');
    const folder = inExamples ? examples : dist;
    const file = mapped ?? path.join(folder, inExamples ? pathname.slice('/examples/'.length) : pathname);
    // Refuse anything outside the served folders (the mapped files are the only exceptions).
    if (mapped === undefined && !file.startsWith(folder + path.sep)) {
      response.writeHead(403).end('forbidden');
      return;
    }
    if (inExamples && pathname === '/examples/index.json' && !existsSync(file)) {
      // No examples made (`npm run viz:fixtures`): an empty list, not an error in the console.
      response.writeHead(200, { 'content-type': TYPES['.json'] ?? 'application/json' }).end('[]');
      return;
    }
    if (!existsSync(file) || !statSync(file).isFile()) {
      response.writeHead(404, { 'content-type': 'text/plain' }).end(`not found: ${pathname}`);
      return;
    }
    response.writeHead(200, {
      'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream',
      'content-length': String(statSync(file).size),
      'cache-control': 'no-store',
    });
    createReadStream(file).pipe(response);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const base = `http://127.0.0.1:${port}/`;
  return {
    server,
    base,
    url: options.trace === undefined ? base : `${base}?trace=trace.ndjson`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** `npm run viz [-- TRACE] [--port N] [--no-build]`: builds, serves and prints the URL. */
async function main(argv: readonly string[]): Promise<void> {
  let trace: string | undefined;
  let port = 5178;
  let rebuild = true;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? '';
    if (arg === '--port') port = Number(argv[++i]);
    else if (arg === '--no-build') rebuild = false;
    else if (arg === '--help' || arg === '-h') {
      process.stdout.write('usage: npm run viz [-- TRACE.ndjson] [--port N] [--no-build]\n');
      return;
    } else trace = arg;
  }
  if (trace !== undefined && !existsSync(trace)) throw new Error(`no such trace: ${trace}`);
  if (rebuild || !built()) {
    process.stdout.write('building the visualiser (viz/dist) …\n');
    await buildViz();
  }
  const served = await serveViz({ trace, port: Number.isSafeInteger(port) ? port : 0 }).catch(
    async (error: unknown) => {
      // The usual port is taken (another viz running): take any free one.
      if ((error as { code?: string }).code === 'EADDRINUSE') return serveViz({ trace, port: 0 });
      throw error;
    },
  );
  process.stdout.write(`Lockstep viz: ${served.url}\n(Ctrl-C to stop)\n`);
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).catch((error: unknown) => {
    process.stderr.write(`viz: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 2;
  });
}
