/**
 * The session inspector: a node's abstract state (spec/device-abstract.ts, spec/server-abstract.ts)
 * at the cursor, rebuilt from the trace's deltas. For a device: its records per peer device with
 * the active and inactive sessions, chain counters, skipped-key counts and root-key fingerprint,
 * stale marks, the device-list version it trusts for each account, and its outbox, pending
 * requests and prekeys. For the server: its accounts and mailboxes. Values the cursor's event
 * changed are marked.
 * @module
 */
import { ATTACKER_LANE, formatTicks, isPlainRecord, type TraceModel, type VizEvent } from '../trace/model.js';
import type { Parts, StateAt } from '../trace/state.js';
import { clear, el } from './dom.js';
import { attackText, fieldRows } from './spacetime.js';

/** What the inspector reports to the app. */
export interface InspectorCallbacks {
  /** A peer record row was clicked (`u1.2`). */
  readonly selectPeer: (peer: string) => void;
  /** A rule ID was clicked. */
  readonly openRule: (rule: string) => void;
}

type Rec = Record<string, unknown>;

function rec(value: unknown): Rec {
  return isPlainRecord(value) ? value : {};
}

function list(value: unknown): unknown[] {
  return Array.isArray(value) ? (value as unknown[]) : [];
}

function text(value: unknown): string {
  if (value === null || value === undefined) return '—';
  if (typeof value === 'boolean') return value ? 'yes' : 'no';
  return String(value);
}

/** Links every rule ID (`WP-AREA-NN`) in a list to the whitepaper panel. */
export function ruleLinks(rules: readonly unknown[], open: (rule: string) => void): HTMLElement {
  const span = el('span', { class: 'rules' });
  rules.forEach((rule, i) => {
    if (i > 0) span.append(' ');
    const id = String(rule);
    if (/^WP-[A-Z]+-\d+$/.test(id)) {
      const link = el(
        'a',
        { href: `#rule=${id}`, class: 'rule-link', 'data-rule': id, title: `open ${id} in WHITEPAPER.md` },
        id,
      );
      link.addEventListener('click', (e) => {
        e.preventDefault();
        open(id);
      });
      span.append(link);
    } else
      span.append(
        el('span', { class: 'rule-other', title: 'a checkable property of the analysis digest' }, id),
      );
  });
  return span;
}

/** A table cell that is marked when its value changed. */
function cell(
  value: unknown,
  previous: unknown,
  field: string,
  title?: string,
  short = false,
): HTMLTableCellElement {
  const full = text(value);
  // Fingerprints are 16 hex digits; the table shows 8 (the cell's title and data-value keep all 16).
  const shown = short && /^[0-9a-f]{16}$/.test(full) ? `${full.slice(0, 8)}…` : full;
  const td = el('td', { 'data-field': field, 'data-value': full }, shown);
  if (title !== undefined) td.title = shown === full ? title : `${title}: ${full}`;
  if (previous !== undefined && JSON.stringify(previous) !== JSON.stringify(value)) {
    td.classList.add('changed');
    td.title = `${title ?? field}: was ${text(previous)}`;
  }
  return td;
}

function row(...cells: HTMLTableCellElement[]): HTMLTableRowElement {
  const tr = el('tr');
  tr.append(...cells);
  return tr;
}

function headRow(...names: string[]): HTMLTableRowElement {
  const tr = el('tr');
  tr.append(...names.map((name) => el('th', {}, name)));
  return tr;
}

function section(title: string, ...children: (Node | string)[]): HTMLElement {
  const s = el('section', { class: 'insp-section' });
  s.append(el('h3', {}, title), ...children);
  return s;
}

/** Sum of skipped message keys over a session's receiving chains. */
function skippedTotal(session: Rec): number {
  return list(session.receiverChains).reduce<number>(
    (n, chain) => n + Number(rec(chain).skippedKeys ?? 0),
    0,
  );
}

/** The inspector panel. */
export class InspectorView {
  readonly root: HTMLElement;
  private readonly body: HTMLElement;
  private peer: string | null = null;

  constructor(
    parent: HTMLElement,
    private readonly callbacks: InspectorCallbacks,
  ) {
    this.root = el('div', { class: 'inspector', 'data-testid': 'inspector' });
    this.body = el('div', { class: 'insp-body' });
    this.root.append(this.body);
    parent.append(this.root);
  }

  /** Marks the selected peer record. */
  setPeer(peer: string | null): void {
    this.peer = peer;
    for (const tr of this.body.querySelectorAll<HTMLElement>('tr[data-peer]')) {
      tr.classList.toggle('selected', tr.dataset.peer === peer);
    }
  }

  /** Shows `node`'s state at the cursor event. */
  show(model: TraceModel, cursor: VizEvent | undefined, node: string | null, state: StateAt | null): void {
    clear(this.body);
    this.body.append(this.eventSection(cursor));
    if (node === null || state === null) {
      this.body.append(
        el(
          'p',
          { class: 'muted' },
          'Select a lane (click its name or one of its events) to inspect its state.',
        ),
      );
      return;
    }
    this.root.dataset.node = node;
    this.root.dataset.stateEvent = String(state.event);
    if (node === ATTACKER_LANE) {
      this.body.append(attackerSection(model, cursor?.index ?? -1));
      return;
    }
    const at = model.events[state.event];
    const head = el('div', { class: 'insp-head' });
    head.append(
      el('strong', {}, node),
      at === undefined
        ? ' — no event yet at the cursor'
        : ` — state after #${at.index + 1} (${at.kind}, ${formatTicks(at.t)})${at.index === cursor?.index ? '' : ', its latest event before the cursor'}`,
    );
    if (at !== undefined && typeof at.data.abstractHash === 'string') {
      head.append(
        el(
          'span',
          { class: 'hash', title: 'abstractHash: SHA-256 over the part hashes' },
          ` hash ${at.data.abstractHash}`,
        ),
      );
    }
    this.body.append(head);
    if (model.summaryMode) {
      this.body.append(el('p', { class: 'muted' }, 'A summary-mode trace records no per-node state.'));
      return;
    }
    if (state.parts.size === 0) {
      this.body.append(
        el('p', { class: 'muted' }, 'No abstract state recorded for this node at the cursor.'),
      );
      return;
    }
    if (node === 'server') this.showServer(state.parts, state.previous, state.event === cursor?.index);
    else this.showDevice(state.parts, state.previous, state.event === cursor?.index);
  }

  private eventSection(event: VizEvent | undefined): HTMLElement {
    if (event === undefined) return section('Event', el('p', { class: 'muted' }, 'No event selected.'));
    const body = el('div', { class: 'insp-event', 'data-event': String(event.index) });
    const title = el(
      'div',
      { class: 'insp-event-title' },
      `#${event.index + 1} ${event.kind} at ${event.node}, ${formatTicks(event.t)}`,
    );
    body.append(title);
    if (event.kind === 'check') {
      const box = el('div', { class: 'check-box', 'data-testid': 'check' });
      box.append(
        el('div', { class: 'check-title' }, `✗ property '${text(event.data.property)}' failed`),
        el('div', {}, text(event.data.message)),
        el(
          'div',
          { class: 'check-rules' },
          'rules: ',
          ruleLinks(list(event.data.rules), this.callbacks.openRule),
        ),
      );
      body.append(box);
    }
    const data = { ...event.data };
    delete data.abstractHash;
    delete data.model;
    const table = el('table', { class: 'kv' });
    for (const [k, v] of fieldRows(data).slice(0, 30)) {
      const tr = el('tr');
      const td = el('td', {}, v);
      tr.append(el('th', {}, k), td);
      if (/\.rule$|^rule$/.test(k) && /^WP-/.test(v)) {
        clear(td);
        td.append(ruleLinks([v], this.callbacks.openRule));
      }
      table.append(tr);
    }
    body.append(table);
    if (event.changedParts.length > 0)
      body.append(el('div', { class: 'muted' }, `changed: ${event.changedParts.join(', ')}`));
    return section('Event', body);
  }

  private showDevice(parts: Parts, previous: Parts, own: boolean): void {
    const prev = (key: string): Rec | undefined =>
      own && previous.has(key) ? rec(previous.get(key)) : own ? {} : undefined;
    const device = rec(parts.get('device'));
    const devicePrev = prev('device');
    const address = rec(device.address);
    const summary = el('table', { class: 'kv', 'data-testid': 'device-summary' });
    summary.append(
      row(
        el('th', {}, 'address'),
        cell(`${text(address.userId)}.${text(address.deviceId)}`, undefined, 'address'),
      ),
      row(el('th', {}, 'lifecycle'), cell(device.lifecycle, devicePrev?.lifecycle, 'lifecycle')),
      row(
        el('th', {}, 'message records'),
        cell(
          device.messageRecords,
          devicePrev?.messageRecords,
          'messageRecords',
          'kept for retry requests (Sesame §4.1)',
        ),
      ),
      row(
        el('th', {}, 'payload ids seen'),
        cell(device.seenCount, devicePrev?.seenCount, 'seenCount', 'duplicate suppression (WP-XPORT-02)'),
      ),
      row(
        el('th', {}, 'one-time prekeys'),
        cell(
          list(device.oneTimePreKeyIds).length,
          devicePrev === undefined ? undefined : list(devicePrev.oneTimePreKeyIds).length,
          'oneTimePreKeys',
        ),
      ),
      row(
        el('th', {}, 'Kyber prekeys'),
        cell(
          list(device.kyberPreKeyIds).length,
          devicePrev === undefined ? undefined : list(devicePrev.kyberPreKeyIds).length,
          'kyberPreKeys',
        ),
      ),
      row(
        el('th', {}, 'parked envelopes'),
        cell(
          list(device.parkedEnvelopeIds).join(', ') || '—',
          devicePrev === undefined ? undefined : list(devicePrev.parkedEnvelopeIds).join(', ') || '—',
          'parked',
        ),
      ),
    );
    // Sessions per peer device.
    const sessions = el('table', { class: 'grid sessions', 'data-testid': 'sessions' });
    sessions.append(
      headRow(
        'peer',
        'stale',
        'active session',
        'send',
        'prev',
        'recv chains idx/skip',
        'skipped',
        'root key',
        'base key',
        'inactive',
      ),
    );
    const recordKeys = [...parts.keys()].filter((k) => k.startsWith('record:')).sort(comparePeers);
    for (const key of recordKeys) {
      const peer = key.slice('record:'.length);
      const record = rec(parts.get(key));
      const before = prev(key);
      const user = peer.split('.')[0] ?? '';
      const userStale = rec(parts.get(`user:${user}`)).stale === true;
      const current = isPlainRecord(rec(record.sessions).current) ? rec(rec(record.sessions).current) : null;
      const beforeCurrent =
        before === undefined
          ? undefined
          : isPlainRecord(rec(before.sessions).current)
            ? rec(rec(before.sessions).current)
            : null;
      const archived = list(rec(record.sessions).archived);
      const archivedBefore = before === undefined ? undefined : list(rec(before.sessions).archived).length;
      const chains =
        current === null
          ? '—'
          : list(current.receiverChains)
              .map((c) => `${text(rec(c).chainIndex)}/${text(rec(c).skippedKeys)}`)
              .join('  ') || '—';
      const chainsBefore =
        beforeCurrent === undefined
          ? undefined
          : beforeCurrent === null
            ? '—'
            : list(beforeCurrent.receiverChains)
                .map((c) => `${text(rec(c).chainIndex)}/${text(rec(c).skippedKeys)}`)
                .join('  ') || '—';
      const tr = row(
        cell(peer, undefined, 'peer'),
        cell(
          record.stale === true ? 'stale' : userStale ? 'user stale' : '',
          before === undefined ? undefined : before.stale === true ? 'stale' : userStale ? 'user stale' : '',
          'stale',
        ),
        cell(
          current === null ? 'none' : `${text(current.phase)} v${text(current.version)}`,
          beforeCurrent === undefined
            ? undefined
            : beforeCurrent === null
              ? 'none'
              : `${text(beforeCurrent.phase)} v${text(beforeCurrent.version)}`,
          'phase',
        ),
        cell(
          current?.senderChainIndex ?? '—',
          beforeCurrent === undefined ? undefined : (beforeCurrent?.senderChainIndex ?? '—'),
          'senderChainIndex',
          'sending chain index (next counter)',
        ),
        cell(
          current?.previousCounter ?? '—',
          beforeCurrent === undefined ? undefined : (beforeCurrent?.previousCounter ?? '—'),
          'previousCounter',
          'previous sending chain length',
        ),
        cell(
          chains,
          chainsBefore,
          'receiverChains',
          'receiving chains, oldest first: chain index / skipped keys held',
        ),
        cell(
          current === null ? '—' : skippedTotal(current),
          beforeCurrent === undefined
            ? undefined
            : beforeCurrent === null
              ? '—'
              : skippedTotal(beforeCurrent),
          'skippedKeys',
          'skipped message keys held (≤ MAX_MESSAGE_KEYS)',
        ),
        cell(
          current?.rootKeyFp ?? '—',
          beforeCurrent === undefined ? undefined : (beforeCurrent?.rootKeyFp ?? '—'),
          'rootKeyFp',
          'root key fingerprint',
          true,
        ),
        cell(
          current?.baseKeyFp ?? '—',
          beforeCurrent === undefined ? undefined : (beforeCurrent?.baseKeyFp ?? '—'),
          'baseKeyFp',
          "initiator's base key fingerprint: names the session on both sides",
          true,
        ),
        cell(
          archived.length,
          archivedBefore,
          'archived',
          archived
            .map((s) => `${text(rec(s).phase)} root ${text(rec(s).rootKeyFp)} base ${text(rec(s).baseKeyFp)}`)
            .join('\n') || 'no inactive sessions',
        ),
      );
      tr.dataset.peer = peer;
      tr.classList.toggle('selected', peer === this.peer);
      if (record.stale === true || userStale) tr.classList.add('stale');
      tr.addEventListener('click', () => this.callbacks.selectPeer(peer));
      sessions.append(tr);
    }
    if (recordKeys.length === 0)
      sessions.append(row(el('td', { colspan: '10', class: 'muted' }, 'no device records yet')));
    // Trust and device-list versions.
    const trust = el('table', { class: 'grid trust', 'data-testid': 'trust' });
    trust.append(headRow('account', 'device-list version', 'account key', 'key change pending'));
    const trustPrev = own ? list(previous.get('trust')) : undefined;
    for (const entry of list(parts.get('trust'))) {
      const e = rec(entry);
      const before =
        trustPrev === undefined ? undefined : rec(trustPrev.find((x) => rec(x).userId === e.userId));
      const tr = row(
        cell(e.userId, undefined, 'userId'),
        cell(e.listVersion, before?.listVersion, 'listVersion'),
        cell(e.accountKeyFp, before?.accountKeyFp, 'accountKeyFp', 'account key fingerprint', true),
        cell(e.pendingAccountKeyChange, before?.pendingAccountKeyChange, 'pendingAccountKeyChange'),
      );
      tr.dataset.user = String(e.userId);
      trust.append(tr);
    }
    // Outbox and pending requests.
    const outbox = el('table', { class: 'grid outbox' });
    outbox.append(headRow('message', 'to', 'kind', 'stage', 'attempts'));
    for (const entry of list(device.outbox)) {
      const e = rec(entry);
      outbox.append(
        row(
          cell(e.messageId, undefined, 'messageId'),
          cell(e.recipient, undefined, 'recipient'),
          cell(e.kind, undefined, 'kind'),
          cell(e.stage, undefined, 'stage'),
          cell(e.attempts, undefined, 'attempts'),
        ),
      );
    }
    const pending = list(device.pending).map((p) => `${text(rec(p).requestId)} ${text(rec(p).kind)}`);
    this.body.append(
      section('Device', summary),
      section('Sessions per peer device (click a row for its session statechart)', sessions),
      section('Device lists and trust', trust),
      section(
        `Outbox (${list(device.outbox).length})`,
        list(device.outbox).length === 0 ? el('p', { class: 'muted' }, 'empty') : outbox,
      ),
      section(`Pending requests (${pending.length})`, el('p', {}, pending.join(' · ') || '—')),
    );
  }

  private showServer(parts: Parts, previous: Parts, own: boolean): void {
    const relay = rec(parts.get('relay'));
    const relayPrev = own ? rec(previous.get('relay')) : undefined;
    const top = el('table', { class: 'kv' });
    top.append(
      row(
        el('th', {}, 'provisioning messages held'),
        cell(relay.provisioningEntries, relayPrev?.provisioningEntries, 'provisioningEntries'),
      ),
      row(el('th', {}, 'blobs stored'), cell(relay.blobs, relayPrev?.blobs, 'blobs')),
    );
    const accounts = el('table', { class: 'grid accounts', 'data-testid': 'accounts' });
    accounts.append(
      headRow(
        'account',
        'list version',
        'listed',
        'device',
        'mailbox',
        'next envelope',
        'one-time EC / Kyber',
        'dropped by rule',
      ),
    );
    const keys = [...parts.keys()].filter((k) => k.startsWith('account:')).sort(comparePeers);
    for (const key of keys) {
      const account = rec(parts.get(key));
      const before = own ? rec(previous.get(key)) : undefined;
      const devices = list(account.devices);
      devices.forEach((d, i) => {
        const device = rec(d);
        const beforeDevice =
          before === undefined
            ? undefined
            : rec(list(before.devices).find((x) => rec(x).deviceId === device.deviceId));
        const tr = row(
          cell(i === 0 ? account.userId : '', undefined, 'userId'),
          cell(i === 0 ? account.listVersion : '', i === 0 ? before?.listVersion : undefined, 'listVersion'),
          cell(
            i === 0 ? list(account.listedDeviceIds).join(', ') : '',
            i === 0 && before !== undefined ? list(before.listedDeviceIds).join(', ') : undefined,
            'listedDeviceIds',
          ),
          cell(device.deviceId, undefined, 'deviceId'),
          cell(device.mailboxDepth, beforeDevice?.mailboxDepth, 'mailboxDepth'),
          cell(device.nextEnvelopeId, beforeDevice?.nextEnvelopeId, 'nextEnvelopeId'),
          cell(
            `${text(device.oneTimePreKeys)} / ${text(device.oneTimeKyberPreKeys)}`,
            beforeDevice === undefined
              ? undefined
              : `${text(beforeDevice.oneTimePreKeys)} / ${text(beforeDevice.oneTimeKyberPreKeys)}`,
            'prekeys',
          ),
          cell(device.droppedByRevocation, beforeDevice?.droppedByRevocation, 'droppedByRevocation'),
        );
        tr.dataset.account = `${text(account.userId)}.${text(device.deviceId)}`;
        accounts.append(tr);
      });
    }
    this.body.append(section('Server', top), section('Accounts and mailboxes', accounts));
  }
}

/** Orders `record:u1.2`-like keys by user number then device number. */
function comparePeers(a: string, b: string): number {
  const na = (a.match(/\d+/g) ?? []).map(Number);
  const nb = (b.match(/\d+/g) ?? []).map(Number);
  for (let i = 0; i < Math.max(na.length, nb.length); i++) {
    const d = (na[i] ?? -1) - (nb[i] ?? -1);
    if (d !== 0) return d;
  }
  return a.localeCompare(b);
}

/**
 * What the attacker holds and has done up to the cursor (its `attack` events), and what the security
 * oracles found it could read or forge in the whole run (they decide with the attacker's final
 * knowledge, so their findings are listed whatever the cursor).
 */
function attackerSection(model: TraceModel, cursor: number): HTMLElement {
  const body = el('div', { class: 'insp-attacker', 'data-testid': 'attacker' });
  const actions = (model.byNode.get(ATTACKER_LANE) ?? []).filter((i) => i <= cursor);
  const list = el('ol', { class: 'attacker-actions' });
  for (const index of actions) {
    const event = model.events[index];
    if (event === undefined) continue;
    list.append(
      el(
        'li',
        { 'data-event': String(index) },
        `#${index + 1} ${formatTicks(event.t)} — ${attackText(event)}`,
      ),
    );
  }
  body.append(
    actions.length === 0
      ? el('p', { class: 'muted' }, 'The attacker has done nothing yet at the cursor.')
      : list,
  );
  const findings = model.byNode.get('oracle') ?? [];
  const violations = el('ul', { class: 'attacker-findings' });
  let summary: string | null = null;
  for (const index of findings) {
    const event = model.events[index];
    if (event === undefined) continue;
    if (event.kind === 'security') summary = attackText(event);
    else {
      const at = typeof event.data.at === 'number' ? ` (at ${formatTicks(event.data.at)})` : '';
      violations.append(
        el(
          'li',
          { 'data-event': String(index), 'data-testid': 'violation' },
          `${String(event.data.oracle)}: ${String(event.data.message)}${at}`,
        ),
      );
    }
  }
  body.append(el('h4', {}, 'Security oracles (whole run)'));
  if (summary !== null) body.append(el('p', {}, summary));
  body.append(
    violations.childElementCount === 0
      ? el(
          'p',
          { class: 'muted' },
          findings.length === 0 ? 'No oracle results in this trace.' : 'No violation: every claim held.',
        )
      : violations,
  );
  return section('Attacker', body);
}
