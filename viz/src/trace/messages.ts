/**
 * Messages rebuilt from a trace: every packet the simulator sent between a device and the server,
 * with its fate. The trace records the two ends separately (simulator/run.ts): a device `step`
 * whose outputs hold a `request`, the server `request` event that received it and answered, the
 * device `step` whose input is that `net.response`, and `net` events for packets dropped or
 * tampered with. A server push (a fetch notification) shows only as the receiving device's clock
 * taking the server's count.
 *
 * Packets are matched by `(device, requestId)`. When several copies share that key (a resend, a
 * duplicated packet, a duplicated request answered twice) the vector clock decides: a packet
 * carries its sender's clock, so a receive that raises the receiver's entry for the sender names
 * the exact sending event (ShiViz's happened-before edge). A receive that raises nothing is a
 * reordered or duplicated copy: it takes the oldest copy still in flight, or else counts as a
 * duplicate of the newest one.
 * @module
 */
import { BASE_LATENCY } from '../../../simulator/network.js';
import { isPlainRecord, type TraceModel, type VizEvent } from './model.js';

/** What a message is. */
export type MessageKind = 'request' | 'response' | 'push';

/** What happened to a message. */
export type MessageFate = 'delivered' | 'dropped' | 'undelivered';

/** One packet. */
export interface Message {
  readonly id: number;
  readonly kind: MessageKind;
  /** Request kind (`send`, `fetch` …), response kind (`envelopes`, `accepted` …) or `push`. */
  readonly label: string;
  readonly from: string;
  readonly to: string;
  /** The device end of the link. */
  readonly device: string;
  readonly requestId: number | null;
  /** Event index of the send. */
  readonly sendEvent: number;
  /** Event index of the receipt (delivered), of the `net` drop event (dropped), or -1. */
  endEvent: number;
  fate: MessageFate;
  /** A second (or later) receipt of a copy already received. */
  readonly duplicate: boolean;
  /** Why a dropped packet was lost: `loss`, `link-down`, `server-down`, `crash`, `superseded`. */
  dropReason: string | null;
  /** Dropped as it was sent (the loss is decided on sending), not on arrival. */
  droppedAtSend: boolean;
  /** Transit time in ticks (delivered messages). */
  transit: number | null;
  /** Transit longer than the base latency plus three times the run's mean extra delay. */
  delayed: boolean;
  /** `flip` or `jump` when an envelope in this response was tampered with. */
  tamper: string | null;
  /** What the hover card shows: kinds, ids, sizes, counters, fingerprints (never keys: traces hold none). */
  readonly fields: Record<string, unknown>;
}

/** Counts by category, for the legend and the tests. */
export interface MessageCounts {
  readonly total: number;
  readonly delivered: number;
  readonly dropped: number;
  readonly undelivered: number;
  readonly duplicates: number;
  readonly delayed: number;
  readonly tampered: number;
  readonly pushes: number;
}

/** All messages of a trace, with lookups by event. */
export interface MessageIndex {
  readonly messages: readonly Message[];
  /** Messages sent or received (or dropped) at each event index. */
  readonly byEvent: ReadonlyMap<number, readonly number[]>;
  readonly counts: MessageCounts;
}

interface Pending {
  /** Messages for one `(device, requestId)` key, in send order. */
  readonly list: Message[];
}

function num(value: unknown): number | null {
  return typeof value === 'number' ? value : null;
}

function str(value: unknown): string | null {
  return typeof value === 'string' ? value : null;
}

/** Rebuilds every message of `model`. */
export function buildMessages(model: TraceModel): MessageIndex {
  const messages: Message[] = [];
  const byEvent = new Map<number, number[]>();
  const requests = new Map<string, Pending>();
  const responses = new Map<string, Pending>();
  /** Event index of the server's k-th event (its own vector-clock count k). */
  const serverByCount: number[] = [];
  /** Count of each device's own events → event index. */
  const deviceByCount = new Map<string, number[]>();
  /** Each node's clock before its current event. */
  const lastClock = new Map<string, Readonly<Record<string, number>>>();
  /** Response sent at a server event, by `device#serverEvent`. */
  const responseAt = new Map<string, Message>();
  /** The latest response sent to each device (tamper events follow it in the same queue event). */
  const lastResponseTo = new Map<string, Message>();
  const faults = model.header.config.faults;
  // Extra delays are exponential with mean `delayMean`: one longer than three means happens to about
  // one packet in twenty, so "delayed" marks the outliers that reorder traffic, not every packet.
  const delayThreshold = BASE_LATENCY + 3 * Math.max(1, faults.delayMean);

  const note = (eventIndex: number, message: Message): void => {
    let list = byEvent.get(eventIndex);
    if (list === undefined) byEvent.set(eventIndex, (list = []));
    list.push(message.id);
  };

  const add = (message: Omit<Message, 'id'>): Message => {
    const full: Message = { ...message, id: messages.length };
    messages.push(full);
    note(full.sendEvent, full);
    return full;
  };

  const pending = (table: Map<string, Pending>, key: string): Pending => {
    let entry = table.get(key);
    if (entry === undefined) table.set(key, (entry = { list: [] }));
    return entry;
  };

  const deliver = (message: Message, event: VizEvent): void => {
    const sent = model.events[message.sendEvent];
    message.endEvent = event.index;
    message.fate = 'delivered';
    message.transit = sent === undefined ? null : event.t - sent.t;
    message.delayed = message.transit !== null && message.transit > delayThreshold;
    note(event.index, message);
  };

  const duplicateOf = (original: Message, event: VizEvent): void => {
    const copy = add({
      ...original,
      fields: { ...original.fields },
      duplicate: true,
      endEvent: -1,
      fate: 'undelivered',
      dropReason: null,
      droppedAtSend: false,
      transit: null,
      delayed: false,
    });
    deliver(copy, event);
  };

  /**
   * The copy a receipt belongs to: the exact sending event when the clock names it, else the
   * oldest copy in flight; `null` when every copy already arrived (then it is a duplicate of the
   * newest).
   */
  const match = (
    list: readonly Message[],
    exact: number | null,
  ): { message: Message; duplicate: boolean } | null => {
    if (exact !== null) {
      const named = list.find((m) => m.sendEvent === exact);
      if (named !== undefined) return { message: named, duplicate: named.fate !== 'undelivered' };
    }
    const inFlight = list.find((m) => m.fate === 'undelivered' && !m.duplicate);
    if (inFlight !== undefined) return { message: inFlight, duplicate: false };
    const newest = list.filter((m) => !m.duplicate).at(-1);
    return newest === undefined ? null : { message: newest, duplicate: true };
  };

  const raisedEntry = (event: VizEvent, sender: string): number | null => {
    const before = lastClock.get(event.node)?.[sender] ?? 0;
    const after = event.vc[sender] ?? 0;
    return after > before ? after : null;
  };

  for (const event of model.events) {
    const own = event.vc[event.node];
    if (own !== undefined) {
      if (event.node === 'server') serverByCount[own] = event.index;
      else {
        let counts = deviceByCount.get(event.node);
        if (counts === undefined) deviceByCount.set(event.node, (counts = []));
        counts[own] = event.index;
      }
    }
    if (event.kind === 'step' || event.kind === 'attacker-step') handleStep(event);
    else if (event.kind === 'request' && event.node === 'server') handleServer(event);
    else if (event.kind === 'net') handleNet(event);
    lastClock.set(event.node, event.vc);
  }

  function handleStep(event: VizEvent): void {
    const device = event.node;
    const input = isPlainRecord(event.data.input) ? event.data.input : {};
    const inputKind = str(input.kind);
    if (inputKind === 'net.response') {
      const requestId = num(input.requestId);
      const raised = raisedEntry(event, 'server');
      const exactServerEvent = raised === null ? null : (serverByCount[raised] ?? null);
      const list = pending(responses, `${device}#${String(requestId)}`).list;
      const exact =
        exactServerEvent === null
          ? null
          : (responseAt.get(`${device}#${exactServerEvent}`)?.sendEvent ?? null);
      const found = match(list, exact);
      if (found === null) {
        // A response whose sending was not traced (cannot happen in a whole trace; a cut trace).
        const orphan = add({
          kind: 'response',
          label: str(isPlainRecord(input.response) ? input.response.kind : null) ?? 'response',
          from: 'server',
          to: device,
          device,
          requestId,
          sendEvent: event.index,
          endEvent: -1,
          fate: 'undelivered',
          duplicate: false,
          dropReason: null,
          droppedAtSend: false,
          transit: null,
          delayed: false,
          tamper: null,
          fields: isPlainRecord(input.response) ? input.response : {},
        });
        deliver(orphan, event);
      } else if (found.duplicate) duplicateOf(found.message, event);
      else deliver(found.message, event);
    } else if (inputKind === 'net.fetch') {
      const raised = raisedEntry(event, 'server');
      const from = raised === null ? undefined : serverByCount[raised];
      if (from !== undefined) {
        const push = add({
          kind: 'push',
          label: 'push',
          from: 'server',
          to: device,
          device,
          requestId: null,
          sendEvent: from,
          endEvent: -1,
          fate: 'undelivered',
          duplicate: false,
          dropReason: null,
          droppedAtSend: false,
          transit: null,
          delayed: false,
          tamper: null,
          fields: { kind: 'push', note: 'the server tells the device to fetch its mailbox' },
        });
        deliver(push, event);
      }
    }
    const outputs = Array.isArray(event.data.outputs) ? (event.data.outputs as unknown[]) : [];
    for (const output of outputs) {
      if (!isPlainRecord(output) || output.kind !== 'request') continue;
      const requestId = num(output.requestId);
      const message = add({
        kind: 'request',
        label: str(output.request) ?? 'request',
        from: device,
        to: 'server',
        device,
        requestId,
        sendEvent: event.index,
        endEvent: -1,
        fate: 'undelivered',
        duplicate: false,
        dropReason: null,
        droppedAtSend: false,
        transit: null,
        delayed: false,
        tamper: null,
        fields: { kind: str(output.request) ?? 'request', requestId },
      });
      pending(requests, `${device}#${String(requestId)}`).list.push(message);
    }
  }

  function handleServer(event: VizEvent): void {
    const device = str(event.data.from) ?? '?';
    const requestId = num(event.data.requestId);
    const key = `${device}#${String(requestId)}`;
    const raised = raisedEntry(event, device);
    const exact = raised === null ? null : (deviceByCount.get(device)?.[raised] ?? null);
    const list = pending(requests, key).list;
    const found = match(list, exact);
    const request = isPlainRecord(event.data.request) ? event.data.request : {};
    if (found !== null) {
      // The server's summary of the request is richer than the device's (ids, copies, sizes).
      const target = found.duplicate ? null : found.message;
      if (target !== null) {
        Object.assign(target.fields, request);
        deliver(target, event);
      } else duplicateOf(found.message, event);
    }
    const response = isPlainRecord(event.data.response) ? event.data.response : {};
    const reply = add({
      kind: 'response',
      label: str(response.kind) ?? 'response',
      from: 'server',
      to: device,
      device,
      requestId,
      sendEvent: event.index,
      endEvent: -1,
      fate: 'undelivered',
      duplicate: false,
      dropReason: null,
      droppedAtSend: false,
      transit: null,
      delayed: false,
      tamper: null,
      fields: { ...response, request: str(request.kind) ?? '?', requestId },
    });
    pending(responses, key).list.push(reply);
    responseAt.set(`${device}#${event.index}`, reply);
    lastResponseTo.set(device, reply);
  }

  function handleNet(event: VizEvent): void {
    const data = event.data;
    const device = str(data.device) ?? '?';
    if (data.action === 'tamper') {
      const reply = lastResponseTo.get(device);
      if (reply !== undefined && model.events[reply.sendEvent]?.seq === event.seq) {
        reply.tamper = str(data.mode);
        reply.fields.tampered = { mode: data.mode, messageId: data.messageId };
        note(event.index, reply);
      }
      return;
    }
    if (data.action !== 'drop') return;
    const requestId = num(data.requestId);
    const key = `${device}#${String(requestId)}`;
    const up = data.dir === 'up';
    const list = pending(up ? requests : responses, key).list;
    // Dropped on sending: the packet just sent in this same queue event.
    const sentNow = list.find(
      (m) => m.fate === 'undelivered' && !m.duplicate && model.events[m.sendEvent]?.seq === event.seq,
    );
    const target = sentNow ?? list.find((m) => m.fate === 'undelivered' && !m.duplicate);
    const reason = str(data.reason);
    if (target !== undefined) {
      target.fate = 'dropped';
      target.endEvent = event.index;
      target.dropReason = reason;
      target.droppedAtSend = sentNow !== undefined;
      note(event.index, target);
      return;
    }
    // A second copy of a duplicated packet, lost on arrival.
    const newest = list.filter((m) => !m.duplicate).at(-1);
    if (newest === undefined) return;
    const copy = add({
      ...newest,
      fields: { ...newest.fields },
      duplicate: true,
      endEvent: event.index,
      fate: 'dropped',
      dropReason: reason,
      droppedAtSend: false,
      transit: null,
      delayed: false,
    });
    note(event.index, copy);
  }

  let delivered = 0;
  let dropped = 0;
  let undelivered = 0;
  let duplicates = 0;
  let delayed = 0;
  let tampered = 0;
  let pushes = 0;
  for (const m of messages) {
    if (m.fate === 'delivered') delivered++;
    else if (m.fate === 'dropped') dropped++;
    else undelivered++;
    if (m.duplicate) duplicates++;
    if (m.delayed) delayed++;
    if (m.tamper !== null) tampered++;
    if (m.kind === 'push') pushes++;
  }
  return {
    messages,
    byEvent,
    counts: {
      total: messages.length,
      delivered,
      dropped,
      undelivered,
      duplicates,
      delayed,
      tampered,
      pushes,
    },
  };
}
