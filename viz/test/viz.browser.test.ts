/**
 * The visualiser in a real browser (Debian's Chromium driven by playwright-core), against traces
 * made in this test's setup by the current sources (`lockstep sim` for three runs, the library for
 * a peak-day summary, and a 100 000-event trace repeated from the default run): lane and arrow
 * counts equal the trace's, stepping highlights exactly the recorded machine state, the inspector's
 * counters equal the trace's, a run in the page hashes like the CLI's, and screenshots of every view
 * go to viz/screenshots/ (git-ignored) for a person to look at.
 *
 * Without Chromium these tests skip with a warning; under CI=true a missing Chromium fails.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CLI_FIXTURES,
  ROOT,
  makeCliFixture,
  peakDaySmall,
  runCli,
  tileTrace,
  traceText,
} from '../server/fixtures.js';
import { buildViz, serveViz, type VizServer } from '../server/serve.js';
import { SHIVIZ_REGEX } from '../src/trace/shiviz.js';
import { browserMode, launchChromium } from './browser.js';

const mode = browserMode();
const SCREENSHOTS = path.join(ROOT, 'viz', 'screenshots');
const LARGE_EVENTS = 100_000;

interface RawEvent {
  readonly kind: string;
  readonly node: string;
  readonly t: number;
  readonly data: Record<string, unknown>;
  readonly vc: Record<string, number>;
}

interface Trace {
  readonly file: string;
  readonly lines: readonly string[];
  readonly events: readonly RawEvent[];
}

function readTrace(file: string): Trace {
  const lines = readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l !== '');
  return { file, lines, events: lines.slice(1).map((l) => JSON.parse(l) as RawEvent) };
}

const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex');

/** An event's own step or request model state, if recorded. */
function modelState(event: RawEvent | undefined): string | null {
  const model = event?.data.model as { state?: string } | undefined;
  return typeof model?.state === 'string' ? model.state : null;
}

/** The abstract state of `node` after its events up to `cursor`, rebuilt here from the raw deltas. */
function partsAt(trace: Trace, node: string, cursor: number): Map<string, Record<string, unknown>> {
  const parts = new Map<string, Record<string, unknown>>();
  for (let i = 0; i <= cursor; i++) {
    const event = trace.events[i];
    if (event?.node !== node) continue;
    const delta = event.data.abstractDelta as Record<string, Record<string, unknown> | null> | undefined;
    for (const [key, value] of Object.entries(delta ?? {})) {
      if (value === null) parts.delete(key);
      else parts.set(key, value);
    }
  }
  return parts;
}

/** Pushes counted the ShiViz way: a device's fetch step whose clock took a higher server count. */
function pushCount(trace: Trace): number {
  const last = new Map<string, number>();
  let pushes = 0;
  for (const e of trace.events) {
    const before = last.get(e.node) ?? 0;
    const after = e.vc.server ?? 0;
    if (
      e.kind === 'step' &&
      (e.data.input as { kind?: string } | undefined)?.kind === 'net.fetch' &&
      after > before
    )
      pushes++;
    last.set(e.node, after);
  }
  return pushes;
}

if (!mode.run) {
  if (mode.fail) {
    describe('viz in a browser', () => {
      it('needs Chromium when CI=true', () => {
        throw new Error(`browser tests cannot run: ${mode.reason}`);
      });
    });
  } else {
    console.warn(`viz browser tests SKIPPED: ${mode.reason}`);
  }
}

describe.skipIf(!mode.run)('viz in a browser', () => {
  let dir = '';
  let dist = '';
  let server: VizServer;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  const traces: Record<'smoke' | 'default' | 'bug' | 'attack' | 'peak' | 'large', Trace | null> = {
    smoke: null,
    default: null,
    bug: null,
    attack: null,
    peak: null,
    large: null,
  };
  const report: Record<string, unknown> = {};
  const errors: string[] = [];

  const trace = (name: keyof typeof traces): Trace => {
    const t = traces[name];
    if (t === null) throw new Error(`trace ${name} was not made`);
    return t;
  };

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'lockstep-viz-'));
    dist = path.join(dir, 'dist');
    mkdirSync(SCREENSHOTS, { recursive: true });
    const [smokeSpec, defaultSpec, bugSpec, attackSpec] = CLI_FIXTURES;
    if (
      smokeSpec === undefined ||
      defaultSpec === undefined ||
      bugSpec === undefined ||
      attackSpec === undefined
    )
      throw new Error('fixtures missing');
    const files = {
      smoke: path.join(dir, 'smoke.ndjson'),
      default: path.join(dir, 'default.ndjson'),
      bug: path.join(dir, 'bug.ndjson'),
      attack: path.join(dir, 'attack.ndjson'),
      peak: path.join(dir, 'peak.ndjson'),
      large: path.join(dir, 'large.ndjson'),
    };
    // The three CLI runs go to child processes; the build and the peak-day run share this one.
    const cli = Promise.all([
      makeCliFixture(smokeSpec, files.smoke),
      makeCliFixture(defaultSpec, files.default),
      makeCliFixture(bugSpec, files.bug),
      makeCliFixture(attackSpec, files.attack),
    ]);
    writeFileSync(files.peak, traceText(peakDaySmall()));
    await Promise.all([cli, buildViz(dist)]);
    traces.smoke = readTrace(files.smoke);
    traces.default = readTrace(files.default);
    traces.bug = readTrace(files.bug);
    traces.attack = readTrace(files.attack);
    traces.peak = readTrace(files.peak);
    const large = tileTrace(traces.default.lines, LARGE_EVENTS);
    writeFileSync(files.large, traceText(large));
    // Only its size is compared: parsing 100 000 lines here would just slow the setup.
    traces.large = { file: files.large, lines: large, events: [] };
    server = await serveViz({
      dist,
      files: Object.fromEntries(Object.entries(files).map(([name, file]) => [`/t/${name}.ndjson`, file])),
    });
    browser = await launchChromium();
    context = await browser.newContext({ viewport: { width: 1600, height: 1000 }, acceptDownloads: true });
    page = await context.newPage();
    page.on('pageerror', (error) => errors.push(error.message));
  }, 300_000);

  afterAll(async () => {
    writeFileSync(path.join(SCREENSHOTS, 'report.json'), `${JSON.stringify(report, null, 2)}\n`);
    await browser?.close();
    await server?.close();
    if (dir !== '') rmSync(dir, { recursive: true, force: true });
  });

  /** Opens the app with a query and waits until it has loaded (and drawn its statechart). */
  async function open(query: string, options: { chart?: boolean } = {}): Promise<void> {
    await page.goto(`${server.base}${query}`);
    await page.waitForSelector('#app[data-ready="true"]', { timeout: 120_000 });
    if (options.chart !== false) await waitForChart();
  }

  async function waitForChart(state?: string): Promise<void> {
    await page.waitForFunction(
      (expected) => {
        const chart = document.querySelector<HTMLElement>('[data-testid=device-chart]');
        const current = chart?.dataset.state ?? '';
        return expected === undefined ? current !== '' : current === expected;
      },
      state,
      { timeout: 60_000 },
    );
  }

  async function appData(): Promise<Record<string, string | undefined>> {
    return page.evaluate(() => ({ ...document.getElementById('app')?.dataset }));
  }

  async function cursor(): Promise<number> {
    return Number((await appData()).cursor);
  }

  async function shot(name: string): Promise<void> {
    await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`) });
  }

  async function download(testId: string): Promise<string> {
    const [file] = await Promise.all([page.waitForEvent('download'), page.click(`[data-testid=${testId}]`)]);
    const target = path.join(dir, file.suggestedFilename());
    await file.saveAs(target);
    return readFileSync(target, 'utf8');
  }

  it('draws one lane per device plus the server and one arrow per packet the trace records', async () => {
    const smoke = trace('smoke');
    await open('?trace=/t/smoke.ndjson&e=420');
    const devices = new Set(smoke.events.map((e) => e.node).filter((n) => /^u\d+\/\d+r*$/.test(n)));
    const diagram = await page.evaluate(() => ({
      ...document.querySelector<HTMLElement>('[data-testid=spacetime]')?.dataset,
    }));
    expect(Number(diagram.laneCount)).toBe(devices.size + 1);
    expect(await page.locator('.st-lane-head').count()).toBe(devices.size + 1);
    await shot('spacetime');
    const svg = await download('export-svg-all');
    const classes = [...svg.matchAll(/<g class="(msg [^"]*)"/g)].map((m) => (m[1] ?? '').split(' '));
    const count = (...wanted: string[]): number =>
      classes.filter((c) => wanted.every((w) => c.includes(w))).length;
    const serverRequests = smoke.events.filter((e) => e.kind === 'request' && e.node === 'server').length;
    const responsesIn = smoke.events.filter(
      (e) => e.kind === 'step' && (e.data.input as { kind?: string } | undefined)?.kind === 'net.response',
    ).length;
    const drops = smoke.events.filter((e) => e.kind === 'net' && e.data.action === 'drop').length;
    const requestsOut = smoke.events
      .filter((e) => e.kind === 'step')
      .reduce(
        (n, e) =>
          n +
          ((e.data.outputs as { kind: string }[] | undefined) ?? []).filter((o) => o.kind === 'request')
            .length,
        0,
      );
    expect(count('msg-request', 'msg-delivered')).toBe(serverRequests);
    expect(count('msg-response', 'msg-delivered')).toBe(responsesIn);
    expect(count('msg-dropped')).toBe(drops);
    expect(count('msg-push')).toBe(pushCount(smoke));
    expect(classes.filter((c) => c.includes('msg-request') && !c.includes('msg-duplicate'))).toHaveLength(
      requestsOut,
    );
    expect(classes.filter((c) => c.includes('msg-response') && !c.includes('msg-duplicate'))).toHaveLength(
      serverRequests,
    );
    expect(classes).toHaveLength(Number(diagram.arrowCount));
    expect([...svg.matchAll(/<g class="lane" data-lane="([^"]+)"/g)].map((m) => m[1])).toHaveLength(
      devices.size + 1,
    );
    report.smoke = {
      events: smoke.events.length,
      lanes: devices.size + 1,
      arrows: classes.length,
      serverRequests,
      responsesIn,
      drops,
    };
  });

  it('steps one event at a time and highlights exactly the machine state the trace records', async () => {
    const smoke = trace('smoke');
    const node = 'u0/1';
    const start = smoke.events.findIndex(
      (e, i) => i > 300 && e.node === node && ((e.data.model as { path?: unknown[] })?.path?.length ?? 0) > 2,
    );
    expect(start).toBeGreaterThan(0);
    await open(`?trace=/t/smoke.ndjson&e=${start - 3}`);
    await page.click(`.st-lane-head[data-lane="${node}"] .lane-name`);
    let firedSeen = 0;
    for (let step = 0; step < 24; step++) {
      await page.keyboard.press('ArrowRight');
      const at = await cursor();
      let expected: string | null = null;
      for (let i = at; i >= 0 && expected === null; i--)
        if (smoke.events[i]?.node === node) expected = modelState(smoke.events[i]);
      expect(expected).not.toBeNull();
      await waitForChart(`device.${expected ?? ''}`);
      const active = await page.$$eval('[data-testid=device-chart] g.state.active', (nodes) =>
        nodes.map((n) => n.getAttribute('data-state')),
      );
      expect(active).toEqual([`device.${expected ?? ''}`]);
      const own = smoke.events[at];
      const path = (own?.data.model as { path?: string[] } | undefined)?.path ?? [];
      if (own?.node === node && new Set(path).size > 1) {
        const fired = await page.locator('[data-testid=device-chart] g.edge.fired').count();
        expect(fired).toBeGreaterThan(0);
        firedSeen++;
        if (firedSeen === 1) await shot('statechart');
      }
    }
    expect(firedSeen).toBeGreaterThan(0);
    // Back one step: the state of the event before.
    const before = await cursor();
    await page.keyboard.press('ArrowLeft');
    expect(await cursor()).toBeLessThan(before);
    // The URL keeps the position and the selection.
    const position = await cursor();
    await page.waitForFunction(
      (e) => new URLSearchParams(window.location.search).get('e') === String(e + 1),
      position,
    );
    await page.reload();
    await page.waitForSelector('#app[data-ready="true"]');
    expect(await cursor()).toBe(position);
    expect((await appData()).node).toBe(node);
    // The server's machine: a request event walks it through many microsteps and back to serving.
    const request = smoke.events.findIndex((e, i) => i > position && e.kind === 'request');
    await open(`?trace=/t/smoke.ndjson&e=${request + 1}&node=server`);
    await waitForChart(`server.${modelState(smoke.events[request]) ?? ''}`);
    expect(await page.locator('[data-testid=device-chart] g.edge.fired').count()).toBeGreaterThan(2);
    await shot('statechart-server');
  });

  it("shows an impl-only trace's abstract state as a derived machine state, through the default run's revocation", async () => {
    const run = trace('default');
    // The step in which the revoked device learns it was removed (its abstract lifecycle turns).
    const revoked = run.events.findIndex(
      (e) =>
        e.kind === 'step' &&
        (e.data.abstractDelta as { device?: { lifecycle?: string } } | undefined)?.device?.lifecycle ===
          'revoked',
    );
    expect(revoked).toBeGreaterThan(0);
    const device = run.events[revoked]?.node ?? '';
    await open(`?trace=/t/default.ndjson&e=${revoked + 1}&node=${encodeURIComponent(device)}`);
    await waitForChart('device.revoked');
    expect(await page.textContent('[data-testid=device-chart] .chart-note')).toContain('derived');
    expect(
      await page.getAttribute('[data-testid=device-summary] td[data-field=lifecycle]', 'data-value'),
    ).toBe('revoked');
    expect(await page.locator('[data-testid=device-chart] g.edge.fired').count()).toBeGreaterThan(0);
    await shot('revocation');
    // Its event before: still linked, resting in linked.idle.
    let previous = revoked - 1;
    while (previous > 0 && run.events[previous]?.node !== device) previous--;
    await open(`?trace=/t/default.ndjson&e=${previous + 1}&node=${encodeURIComponent(device)}`);
    await waitForChart('device.linked.idle');
    expect(
      await page.getAttribute('[data-testid=device-summary] td[data-field=lifecycle]', 'data-value'),
    ).toBe('linked');
  });

  it("shows the inspector's counters exactly as the trace records them", async () => {
    const run = trace('default');
    const node = 'u1/1';
    const own = run.events
      .map((e, i) => (e.node === node && e.kind === 'step' ? i : -1))
      .filter((i) => i >= 0);
    let rows = 0;
    for (const fraction of [0.3, 0.6, 0.95]) {
      const at = own[Math.floor(own.length * fraction)] ?? 0;
      await open(`?trace=/t/default.ndjson&e=${at + 1}&node=${encodeURIComponent(node)}`, { chart: false });
      const parts = partsAt(run, node, at);
      const shown = await page.$$eval('[data-testid=sessions] tr[data-peer]', (trs) =>
        trs.map((tr) => {
          const values: Record<string, string> = { peer: (tr as HTMLElement).dataset.peer ?? '' };
          for (const td of Array.from(tr.querySelectorAll<HTMLElement>('td[data-field]')))
            values[td.dataset.field ?? ''] = td.dataset.value ?? '';
          return values;
        }),
      );
      const records = [...parts.keys()].filter((k) => k.startsWith('record:'));
      expect(shown.map((r) => r.peer).sort()).toEqual(records.map((k) => k.slice('record:'.length)).sort());
      for (const row of shown) {
        const record = parts.get(`record:${row.peer}`) ?? {};
        const sessions = record.sessions as { current: Record<string, unknown> | null; archived: unknown[] };
        const current = sessions.current;
        const skipped = ((current?.receiverChains as { skippedKeys: number }[] | undefined) ?? []).reduce(
          (n, c) => n + c.skippedKeys,
          0,
        );
        expect(row.senderChainIndex, row.peer).toBe(
          current === null ? '—' : String(current.senderChainIndex),
        );
        expect(row.previousCounter, row.peer).toBe(current === null ? '—' : String(current.previousCounter));
        expect(row.skippedKeys, row.peer).toBe(current === null ? '—' : String(skipped));
        expect(row.rootKeyFp, row.peer).toBe(current === null ? '—' : String(current.rootKeyFp));
        expect(row.archived, row.peer).toBe(String(sessions.archived.length));
        const userStale =
          (parts.get(`user:${(row.peer ?? '').split('.')[0] ?? ''}`) as { stale?: boolean } | undefined)
            ?.stale === true;
        expect(row.stale, row.peer).toBe(record.stale === true ? 'stale' : userStale ? 'user stale' : '');
        rows++;
      }
      const trust = (parts.get('trust') as unknown as { userId: string; listVersion: number | null }[]) ?? [];
      for (const entry of trust) {
        const cell = await page.getAttribute(
          `[data-testid=trust] tr[data-user="${entry.userId}"] td[data-field=listVersion]`,
          'data-value',
        );
        expect(cell).toBe(entry.listVersion === null ? '—' : String(entry.listVersion));
      }
      const device = parts.get('device') ?? {};
      expect(
        await page.getAttribute('[data-testid=device-summary] td[data-field=messageRecords]', 'data-value'),
      ).toBe(String(device.messageRecords));
    }
    expect(rows).toBeGreaterThan(10);
    await waitForChart();
    await page.locator('[data-testid=sessions]').scrollIntoViewIfNeeded();
    await shot('inspector');
  });

  it('opens a planted-bug failure at its failed check and links the check to its rule in WHITEPAPER.md', async () => {
    const run = trace('bug');
    const check = run.events.findIndex((e) => e.kind === 'check');
    expect(check).toBeGreaterThan(0);
    await open('?trace=/t/bug.ndjson');
    expect(await cursor()).toBe(check);
    expect(await page.textContent('[data-testid=verdict]')).toContain('failed check');
    const rules = (run.events[check]?.data.rules as string[]).filter((r) => r.startsWith('WP-'));
    expect(await page.locator('[data-testid=check] .rule-link').count()).toBe(rules.length);
    await shot('failed-check');
    const rule = rules[0] ?? '';
    await page.click(`[data-testid=check] .rule-link[data-rule="${rule}"]`);
    await page.waitForSelector(`[data-testid=rule-panel] li[id="${rule}"].highlight`);
    expect(await page.textContent(`[data-testid=rule-panel] li[id="${rule}"]`)).toContain(rule);
    await page.waitForFunction((r) => window.location.search.includes(`rule=${r}`), rule);
    await shot('rule');
    await page.keyboard.press('Escape');
    // Keyboard: Home, then the next failed check.
    await page.keyboard.press('Home');
    expect(await cursor()).toBe(0);
    await page.keyboard.press('c');
    expect(await cursor()).toBe(check);
    await page.keyboard.press('f');
    const fault = run.events.findIndex(
      (e, i) => i > check && (e.kind === 'fault' || (e.kind === 'net' && e.data.action === 'tamper')),
    );
    expect(await cursor()).toBe(fault);
  });

  it("shows an attack run: the attacker's lane, the clone's lane and the oracles' violations", async () => {
    const run = trace('attack');
    const violations = run.events.filter((e) => e.kind === 'security-violation');
    // The forgery the revived session accepted also fails the checker's plaintext-integrity check.
    const first = run.events.findIndex((e) => e.kind === 'security-violation' || e.kind === 'check');
    expect(violations.length).toBeGreaterThan(0);
    await open('?trace=/t/attack.ndjson', { chart: false });
    // The run opens at the first thing that went wrong; `c` then walks to the oracles' findings.
    expect(await cursor()).toBe(first);
    await page.keyboard.press('c');
    expect(await cursor()).toBe(run.events.findIndex((e) => e.kind === 'security-violation'));
    const heads = await page
      .locator('.st-lane-head')
      .evaluateAll((nodes) => nodes.map((n) => (n as HTMLElement).dataset.lane ?? ''));
    const devices = new Set(run.events.map((e) => e.node).filter((n) => /^u\d+\/\d+r*c?$/.test(n)));
    expect(heads).toEqual(['server', ...[...devices].sort(), 'attacker']);
    expect(heads).toContain('u0/1c');
    await page.click('.st-lane-head[data-lane="attacker"] .lane-name');
    await page.waitForSelector('[data-testid=attacker]');
    expect(await page.textContent('[data-testid=device-chart]')).toContain(
      'attacker runs no protocol machine',
    );
    const shown = await page.locator('[data-testid=violation]').allTextContents();
    expect(shown).toEqual(
      violations.map((e) => expect.stringContaining(`${String(e.data.oracle)}: ${String(e.data.message)}`)),
    );
    // Every attacker action up to the cursor is listed.
    const actions = run.events.filter((e, i) => e.node === 'attacker' && i <= first).length;
    expect(await page.locator('.attacker-actions li').count()).toBe(actions);
    // The clone's requests are drawn as arrows to the server like any device's.
    const svg = await download('export-svg-all');
    expect(svg).toContain('data-lane="u0/1c"');
    const cloneRequests = run.events.filter(
      (e) => e.kind === 'request' && e.node === 'server' && e.data.from === 'u0/1c',
    ).length;
    expect(cloneRequests).toBeGreaterThan(0);
    const drawn = [...svg.matchAll(/<g class="msg msg-request msg-delivered[^"]*"[^>]*data-from="u0\/1c"/g)];
    expect(drawn).toHaveLength(cloneRequests);
    await shot('attack');
  });

  it('hides and restores lanes, keeping the filter in the URL', async () => {
    await open('?trace=/t/smoke.ndjson&e=200');
    const before = await page.evaluate(() => ({
      ...document.querySelector<HTMLElement>('[data-testid=spacetime]')?.dataset,
    }));
    await page.hover('.st-lane-head[data-lane="u1/2"]');
    await page.click('.st-lane-head[data-lane="u1/2"] .lane-hide');
    const after = await page.evaluate(() => ({
      ...document.querySelector<HTMLElement>('[data-testid=spacetime]')?.dataset,
    }));
    expect(Number(after.laneCount)).toBe(Number(before.laneCount) - 1);
    expect(Number(after.arrowCount)).toBeLessThan(Number(before.arrowCount));
    await page.waitForFunction(() => new URLSearchParams(window.location.search).get('hide') === 'u1/2');
    await page.click('[data-testid=lanes-menu] summary');
    await page.click('[data-testid=lanes-menu] .menu-body button:has-text("all")');
    const restored = await page.evaluate(() => ({
      ...document.querySelector<HTMLElement>('[data-testid=spacetime]')?.dataset,
    }));
    expect(restored.laneCount).toBe(before.laneCount);
  });

  it('runs the simulator in the page and writes the same trace bytes as the CLI', async () => {
    await open('', { chart: false });
    await shot('landing');
    await page.click('[data-testid=run]');
    await page.fill('[data-testid=run-seed]', '5');
    await page.selectOption('[data-testid=run-preset]', 'smoke');
    await page.selectOption('[data-testid=run-engine]', 'both');
    await page.fill('[data-testid=run-fault-loss]', '0.05');
    const command = (await page.textContent('[data-testid=run-command]')) ?? '';
    expect(command).toContain('--loss 0.05');
    const started = Date.now();
    await page.click('[data-testid=run-go]');
    await page.waitForSelector(
      '[data-testid=run-status][data-kind="ok"], [data-testid=run-status][data-kind="fail"]',
      { timeout: 180_000 },
    );
    report.pageRunMs = Date.now() - started;
    await shot('run-form');
    const pageHash = await page.evaluate(() => document.body.dataset.runSha256);
    const out = path.join(dir, 'cli-run.ndjson');
    const args = command.replace(/^npx lockstep /, '').split(' ');
    args[args.length - 1] = out;
    const cli = await runCli(args);
    expect([0, 1]).toContain(cli.code);
    const cliHash = sha256(readFileSync(out, 'utf8'));
    expect(pageHash).toBe(cliHash);
    report.hashEquality = { command, page: pageHash, cli: cliHash };
    await page.keyboard.press('Escape');
    expect(Number((await appData()).loaded)).toBe(readTrace(out).events.length);
    expect(await page.evaluate(() => new URLSearchParams(window.location.search).get('sim'))).toBe('5');
  });

  it('opens traces from the file picker and by drag and drop', async () => {
    await open('', { chart: false });
    await page.setInputFiles('[data-testid=file-input]', trace('smoke').file);
    await page.waitForFunction(
      (n) => document.getElementById('app')?.dataset.loaded === String(n),
      trace('smoke').events.length,
    );
    const text = readFileSync(trace('bug').file, 'utf8');
    await page.evaluate((content) => {
      const transfer = new DataTransfer();
      transfer.items.add(new File([content], 'bug.ndjson', { type: 'application/x-ndjson' }));
      window.dispatchEvent(
        new DragEvent('drop', { dataTransfer: transfer, bubbles: true, cancelable: true }),
      );
    }, text);
    await page.waitForFunction(
      (n) => document.getElementById('app')?.dataset.loaded === String(n),
      trace('bug').events.length,
    );
  });

  it('exports a ShiViz log with every event and its vector clock', async () => {
    await open('?trace=/t/smoke.ndjson', { chart: false });
    const log = await download('export-shiviz');
    const lines = log.split('\n');
    expect(lines[0]).toBe(SHIVIZ_REGEX);
    expect(lines[1]).toBe('');
    expect((lines.length - 3) / 2).toBe(trace('smoke').events.length);
  });

  it('loads and scrolls a 100 000-event trace smoothly', async () => {
    const large = trace('large');
    const started = Date.now();
    await open('?trace=/t/large.ndjson');
    const wallMs = Date.now() - started;
    expect(Number((await appData()).loaded)).toBe(large.lines.length - 1);
    const loadMs = Number(await page.evaluate(() => document.body.dataset.loadMs));
    const frames = await page.evaluate(async () => {
      const scroller = document.querySelector<HTMLElement>('.st-scroll');
      if (scroller === null) return [];
      const times: number[] = [];
      for (let i = 0; i <= 40; i++) {
        const t0 = performance.now();
        scroller.scrollTop = (scroller.scrollHeight * i) / 40;
        await new Promise<void>((resolve) =>
          requestAnimationFrame(() => requestAnimationFrame(() => resolve())),
        );
        times.push(performance.now() - t0);
      }
      return times;
    });
    const sorted = [...frames].sort((a, b) => a - b);
    const median = sorted[Math.floor(sorted.length / 2)] ?? Infinity;
    // Two animation frames per sample: 33 ms is perfectly smooth; allow a loaded CI machine 4×.
    expect(median).toBeLessThan(140);
    await page.keyboard.press('End');
    await shot('large');
    await page.click('[data-testid=hide-idle]');
    const rows = Number(await page.getAttribute('[data-testid=spacetime]', 'data-row-count'));
    expect(rows).toBeLessThan(large.lines.length - 1);
    report.large = {
      events: large.lines.length - 1,
      bytes: large.lines.reduce((n, l) => n + l.length + 1, 0),
      loadMs,
      wallMs,
      scrollFrameMedianMs: median,
      scrollFrameMaxMs: sorted.at(-1),
    };
  });

  it('shows aggregate views of a peak-day summary trace', async () => {
    const peak = trace('peak');
    await open('?trace=/t/peak.ndjson', { chart: false });
    await page.waitForSelector('[data-testid=aggregate]:not([hidden])');
    expect(await page.locator('[data-testid=aggregate] .agg-chart svg').count()).toBeGreaterThanOrEqual(4);
    const end = peak.events.filter((e) => e.kind === 'end').at(-1);
    const counters = Object.keys((end?.data.counters as Record<string, number> | undefined) ?? {});
    expect(await page.locator('[data-testid=final-counters] tr[data-counter]').count()).toBe(counters.length);
    expect(Number(await page.getAttribute('[data-testid=aggregate]', 'data-samples'))).toBe(
      peak.events.filter((e) => e.kind === 'summary' || e.kind === 'end').length,
    );
    await shot('peak-day');
  });

  it('is served by `npx lockstep viz TRACE`, which prints the URL', async () => {
    const smoke = trace('smoke');
    const child: ChildProcess = spawn(
      process.execPath,
      [path.join(ROOT, 'cli', 'lockstep.js'), 'viz', smoke.file, '--port', '0', '--dist', dist],
      {
        cwd: ROOT,
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    try {
      const url = await new Promise<string>((resolve, reject) => {
        let out = '';
        child.stdout?.on('data', (chunk: Buffer) => {
          out += chunk.toString();
          const match = /Lockstep viz: (http:\/\/127\.0\.0\.1:\d+\/\S*)/.exec(out);
          if (match?.[1] !== undefined) resolve(match[1]);
        });
        child.on('exit', (code) => reject(new Error(`lockstep viz exited (${String(code)}): ${out}`)));
      });
      const served = await fetch(new URL('trace.ndjson', url));
      expect(await served.text()).toBe(readFileSync(smoke.file, 'utf8'));
      await page.goto(url);
      await page.waitForSelector('#app[data-ready="true"]');
      expect(Number((await appData()).loaded)).toBe(smoke.events.length);
    } finally {
      child.kill();
    }
  });

  it('raised no page errors', () => {
    expect(errors).toEqual([]);
  });
});
