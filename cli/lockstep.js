#!/usr/bin/env node
// The `lockstep` command's launcher: plain ESM so it runs right after `npm ci` without a build
// step. It registers tsx's loader for this process, then loads the TypeScript entry point.
import { register } from 'tsx/esm/api';

register();
await import('./main.ts');
