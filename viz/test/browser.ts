/**
 * Launching Debian's Chromium for the visualiser's browser tests (playwright-core drives it;
 * `npx playwright install` cannot download browsers here). The flags keep a headless run quiet and
 * offline. Without /usr/bin/chromium the tests skip with a warning, except under `CI=true`, where a
 * missing browser fails the run (DEVELOPERS.md).
 * @module
 */
import { existsSync } from 'node:fs';
import { chromium, type Browser } from 'playwright-core';

/** Where Debian installs Chromium (`apt-get install -y chromium`); `LOCKSTEP_CHROMIUM` overrides. */
export const CHROMIUM_PATH = process.env.LOCKSTEP_CHROMIUM ?? '/usr/bin/chromium';

/** The launch flags (documented in DEVELOPERS.md). */
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-quic',
  '--no-first-run',
] as const;

/** How the browser tests should run here. */
export type BrowserMode =
  { readonly run: true } | { readonly run: false; readonly fail: boolean; readonly reason: string };

/** Whether Chromium is there, and what to do when it is not. */
export function browserMode(): BrowserMode {
  if (existsSync(CHROMIUM_PATH)) return { run: true };
  const reason = `${CHROMIUM_PATH} not found (install it with: apt-get install -y chromium)`;
  return { run: false, fail: process.env.CI === 'true', reason };
}

/** Starts headless Chromium. */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM_PATH, args: [...CHROMIUM_ARGS] });
}
