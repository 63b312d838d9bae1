/**
 * Vite configuration of the visualiser (viz/): a static build into viz/dist with relative asset
 * paths, so the output works from any folder of any static server, and the simulator's web worker
 * bundled as an ES module worker.
 * @module
 */
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

const root = fileURLToPath(new URL('.', import.meta.url));

export default defineConfig({
  root,
  base: './',
  logLevel: 'warn',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    chunkSizeWarningLimit: 4000,
    reportCompressedSize: false,
    // The worker-URL transform is slow on a busy machine; its timing report is noise here.
    rolldownOptions: { checks: { pluginTimings: false } },
  },
  worker: { format: 'es' },
  server: { host: '127.0.0.1', fs: { allow: [fileURLToPath(new URL('..', import.meta.url))] } },
});
