/**
 * The "Run the simulator" form: seed, preset, engine, planted bugs and fault rates (prefilled with
 * the preset's; only changed rates become overrides, as `lockstep sim --loss …` would), the
 * equivalent command line, and the run's status and result (pass or fail, trace size, SHA-256).
 * @module
 */
import { PLANTED_BUGS, isBugName, type BugName } from '../../../spec/bugs.js';
import type { EngineChoice, FaultConfig } from '../../../simulator/api.js';
import { PRESET_NAMES, isPresetName, presetBody, type PresetName } from '../../../simulator/presets.js';
import { FAULT_FIELDS, cliCommand, type PageRun } from '../trace/run-config.js';
import { el } from './dom.js';

const FAULT_HELP: Readonly<Record<keyof FaultConfig, string>> = {
  loss: 'probability a packet is lost',
  duplication: 'probability a packet is delivered twice',
  delayMean: 'mean extra delay per packet (ticks)',
  partitions: 'device↔server partitions per device',
  offline: 'offline windows per device',
  serverCrashes: 'server crash-and-restart events',
  stateLoss: 'device state losses (reinstall)',
  rollback: 'device rollbacks',
  corruption: 'probability an envelope is tampered with',
};

/** The run form (a modal dialog). */
export class RunForm {
  readonly dialog: HTMLDialogElement;
  private readonly seed: HTMLInputElement;
  private readonly preset: HTMLSelectElement;
  private readonly engine: HTMLSelectElement;
  private readonly bugs = new Map<BugName, HTMLInputElement>();
  private readonly faults = new Map<keyof FaultConfig, HTMLInputElement>();
  private readonly command: HTMLElement;
  private readonly status: HTMLElement;
  private readonly runButton: HTMLButtonElement;
  private readonly presetNote: HTMLElement;

  constructor(private readonly run: (run: PageRun) => void) {
    this.dialog = el('dialog', { class: 'run-dialog', 'data-testid': 'run-dialog' });
    const form = el('form', { method: 'dialog' });
    this.seed = el('input', {
      type: 'number',
      min: '0',
      step: '1',
      value: '1',
      name: 'seed',
      'data-testid': 'run-seed',
    });
    this.preset = el('select', { name: 'preset', 'data-testid': 'run-preset' });
    for (const name of PRESET_NAMES) {
      const w = presetBody(name).workload;
      this.preset.append(
        el(
          'option',
          { value: name },
          `${name} — ${w.users.toLocaleString('en')} users × ${w.devicesPerUser}, ${w.messages.toLocaleString('en')} messages`,
        ),
      );
    }
    this.preset.value = 'smoke';
    this.engine = el('select', { name: 'engine', 'data-testid': 'run-engine' });
    for (const [value, label] of [
      ['impl', 'impl — the reference implementation (fastest)'],
      ['model', 'model — the XState machines (records machine states)'],
      ['both', 'both — impl and model in lockstep, compared every step'],
    ] as const) {
      this.engine.append(el('option', { value }, label));
    }
    this.presetNote = el('p', { class: 'muted small-text' });
    const bugBox = el('fieldset', { class: 'bugs' });
    bugBox.append(el('legend', {}, 'Planted bugs (each must make an invariant fail)'));
    for (const [name, description] of Object.entries(PLANTED_BUGS)) {
      if (!isBugName(name)) continue;
      const box = el('input', { type: 'checkbox', value: name, 'data-testid': `run-bug-${name}` });
      this.bugs.set(name, box);
      bugBox.append(
        el(
          'label',
          { title: description },
          box,
          ` ${name}`,
          el('span', { class: 'muted' }, ` — ${description}`),
        ),
      );
    }
    const faultBox = el('fieldset', { class: 'faults' });
    faultBox.append(
      el('legend', {}, "Fault rates (prefilled with the preset's; a changed value becomes an override)"),
    );
    for (const field of FAULT_FIELDS) {
      const input = el('input', {
        type: 'number',
        min: '0',
        step: 'any',
        name: field,
        'data-testid': `run-fault-${field}`,
      });
      this.faults.set(field, input);
      faultBox.append(el('label', { title: FAULT_HELP[field] }, el('span', {}, field), input));
    }
    this.command = el('code', { class: 'command', 'data-testid': 'run-command' });
    this.status = el('div', { class: 'run-status', 'data-testid': 'run-status' });
    this.runButton = el(
      'button',
      { type: 'button', class: 'primary', 'data-testid': 'run-go' },
      'Run in this page',
    );
    const close = el('button', { type: 'button' }, 'Close');
    close.addEventListener('click', () => this.dialog.close());
    this.runButton.addEventListener('click', () => this.run(this.value()));
    form.append(
      el('h2', {}, 'Run the simulator in this page'),
      el(
        'p',
        { class: 'muted' },
        'The simulator runs in a web worker with the pure-JavaScript (noble) crypto provider. The same seed and configuration give the same trace bytes as the command line below.',
      ),
      el(
        'div',
        { class: 'row' },
        el('label', {}, 'Seed ', this.seed),
        el('label', {}, 'Preset ', this.preset),
        el('label', {}, 'Engine ', this.engine),
      ),
      this.presetNote,
      bugBox,
      faultBox,
      el('p', {}, 'Same trace from the command line: ', this.command),
      el('div', { class: 'row end' }, this.status, close, this.runButton),
    );
    this.dialog.append(form);
    document.body.append(this.dialog);
    this.preset.addEventListener('change', () => {
      this.fillFaults();
      this.update();
    });
    form.addEventListener('input', () => this.update());
    this.fillFaults();
    this.update();
  }

  private fillFaults(): void {
    const preset = this.preset.value;
    if (!isPresetName(preset)) return;
    const faults = presetBody(preset).faults;
    for (const [field, input] of this.faults) input.value = String(faults[field] ?? 0);
    const w = presetBody(preset).workload;
    this.presetNote.textContent =
      preset === 'peak-day'
        ? `peak-day simulates ${w.users.toLocaleString('en')} users for a day: in a browser that takes a long time (use the command line and open its trace), and the trace is a summary (charts, no lanes).`
        : `${preset}: ${w.users} users × ${w.devicesPerUser} devices, ${w.messages} messages, ${w.links} links, ${w.revocations} revocations, ${w.reinstalls} reinstalls over ${w.durationTicks / 1000} s simulated.`;
  }

  /** The choices as a run. */
  value(): PageRun {
    const preset: PresetName = isPresetName(this.preset.value) ? this.preset.value : 'smoke';
    const engine = this.engine.value as EngineChoice;
    const base = presetBody(preset).faults;
    const faults: Partial<Record<keyof FaultConfig, number>> = {};
    for (const [field, input] of this.faults) {
      const value = Number(input.value);
      if (input.value !== '' && Number.isFinite(value) && value >= 0 && value !== (base[field] ?? 0))
        faults[field] = value;
    }
    const bugs = [...this.bugs].filter(([, box]) => box.checked).map(([name]) => name);
    const seed = Math.max(0, Math.floor(Number(this.seed.value) || 0));
    return { seed, preset, engine, bugs, faults };
  }

  /** Fills the form from a run. */
  set(run: PageRun): void {
    this.seed.value = String(run.seed);
    this.preset.value = run.preset;
    this.engine.value = run.engine;
    this.fillFaults();
    for (const [field, value] of Object.entries(run.faults)) {
      const input = this.faults.get(field as keyof FaultConfig);
      if (input !== undefined) input.value = String(value);
    }
    for (const [name, box] of this.bugs) box.checked = run.bugs.includes(name);
    this.update();
  }

  private update(): void {
    this.command.textContent = cliCommand(this.value());
  }

  /** Opens the dialog. */
  open(): void {
    if (!this.dialog.open) this.dialog.showModal();
  }

  /** Shows the run's progress or result. */
  setStatus(text: string, kind: 'running' | 'ok' | 'fail' | 'idle'): void {
    this.status.textContent = text;
    this.status.dataset.kind = kind;
    this.runButton.disabled = kind === 'running';
  }
}
