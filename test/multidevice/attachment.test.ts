/**
 * Scenario stories for attachments across devices (WP-ATT-*): encrypted once, uploaded once, the
 * pointer fanned out to every device, each device downloading and checking the same blob.
 */
import { describe, expect, it } from 'vitest';
import type { AttachmentPointer } from '../../spec/attachment.js';
import {
  createWorld,
  deliveries,
  device,
  holdRequests,
  input,
  pendingOf,
  respond,
  run,
  send,
  sync,
  type World,
} from '../support/world.js';
import { expectNoUndecryptable, outputsOfKind, talkingPair } from './stories.js';

const PHOTO = Uint8Array.from({ length: 5_000 }, (_, i) => (i * 31 + 7) & 0xff);

/** The attachment pointer a device was shown last (as a message or as a sync copy). */
function lastPointer(w: World, name: string): AttachmentPointer {
  const pointers = deliveries(w, name).flatMap((d) => {
    const c = d.payload.content;
    if (c.kind === 'attachment') return [c.pointer];
    if (c.kind === 'sync' && c.content.kind === 'attachment') return [c.content.pointer];
    return [];
  });
  const pointer = pointers.at(-1);
  if (pointer === undefined) throw new Error(`${name} saw no attachment`);
  return pointer;
}

function download(w: World, name: string, pointer: AttachmentPointer): void {
  input(w, name, { kind: 'user.download', pointer });
  run(w);
}

function blobPuts(w: World): number {
  return w.serverLog.filter((e) => e.request.kind === 'blob-put').length;
}

describe('attachments across devices', () => {
  it('an attachment to five devices is uploaded once and every device decrypts the same bytes [WP-ATT-02] [WP-SES-05]', () => {
    const w = createPair();
    const before = blobPuts(w);
    send(w, 'alice', ['bob'], {
      kind: 'attachment',
      bytes: PHOTO,
      contentType: 'image/png',
      caption: 'look',
    });
    sync(w);
    expect(blobPuts(w) - before).toBe(1);
    const receivers = ['alice-2', 'alice-3', 'bob', 'bob-2', 'bob-3'];
    const pointers = receivers.map((name) => lastPointer(w, name));
    expect(new Set(pointers.map((p) => p.blobId)).size).toBe(1);
    expect(Object.keys(w.server.blobs)).toEqual([pointers[0]?.blobId]);
    for (const [i, name] of receivers.entries()) {
      download(w, name, pointers[i] ?? lastPointer(w, name));
      expect(outputsOfKind(w, name, 'attachment').map((a) => a.bytes)).toEqual([PHOTO]);
      expect(outputsOfKind(w, name, 'attachment-failed')).toEqual([]);
    }
    const caption = deliveries(w, 'bob').at(-1)?.payload.content;
    expect(caption?.kind === 'attachment' && caption.caption).toBe('look');
    expect(w.serverLog.filter((e) => e.request.kind === 'blob-get')).toHaveLength(receivers.length);
    expectNoUndecryptable(w);
  });

  it('the pointer is sent only after the blob is stored; a lost upload is resent on the timer, stored once [WP-SRV-24] [WP-XPORT-01]', () => {
    const w = createPair();
    const release = holdRequests(w, 'alice', 'blob-put');
    send(w, 'alice', ['bob'], { kind: 'attachment', bytes: PHOTO, contentType: 'image/png', caption: '' });
    release();
    const waiting = device(w, 'alice').outbox;
    // The message to bob waits for the blob; the sync copy for alice's own devices follows only
    // once the server has accepted the message itself.
    expect(waiting.map((i) => i.stage)).toEqual(['waiting-blob']);
    input(w, 'alice', { kind: 'timer.resend' });
    run(w);
    sync(w);
    expect(Object.keys(w.server.blobs)).toHaveLength(1);
    download(w, 'bob-3', lastPointer(w, 'bob-3'));
    expect(outputsOfKind(w, 'bob-3', 'attachment').map((a) => a.bytes)).toEqual([PHOTO]);
  });

  it('a corrupted blob, a wrong key, a wrong size or a missing blob give typed attachment-failed outputs [WP-ATT-02] [WP-ATT-04] [WP-ATT-05]', () => {
    const w = createPair();
    send(w, 'alice', ['bob'], { kind: 'attachment', bytes: PHOTO, contentType: 'image/png', caption: '' });
    sync(w);
    const pointer = lastPointer(w, 'bob');
    const stored = w.server.blobs[pointer.blobId];
    if (stored === undefined) throw new Error('blob not stored');
    // The server (or the disk under it) flips one byte: the digest no longer matches.
    const corrupted = Uint8Array.from(stored);
    corrupted[100] = (corrupted[100] ?? 0) ^ 1;
    const honest = w.server;
    w.server = { ...honest, blobs: { ...honest.blobs, [pointer.blobId]: corrupted } };
    download(w, 'bob', pointer);
    w.server = honest;
    // A pointer with another MAC key, and one announcing another size (both fail after the digest).
    const wrongKey = Uint8Array.from(pointer.key);
    wrongKey[40] = (wrongKey[40] ?? 0) ^ 1;
    download(w, 'bob', { ...pointer, key: wrongKey });
    download(w, 'bob', { ...pointer, size: pointer.size + 1 });
    // A blob the server does not have.
    const otherDigest = w.env.crypto.sha256(Uint8Array.of(1, 2, 3));
    const otherId = [...otherDigest].map((b) => b.toString(16).padStart(2, '0')).join('');
    download(w, 'bob', { ...pointer, digest: otherDigest, blobId: otherId });
    expect(outputsOfKind(w, 'bob', 'attachment-failed').map((f) => f.error.code)).toEqual([
      'ATTACHMENT_DIGEST_MISMATCH',
      'ATTACHMENT_MAC_INVALID',
      'ATTACHMENT_SIZE_MISMATCH',
      'XPORT_SERVER_ERROR',
    ]);
    expect(outputsOfKind(w, 'bob', 'attachment')).toEqual([]);
    // A hostile answer with another blob's bytes is caught by the digest as well.
    const release = holdRequests(w, 'bob-2', 'blob-get');
    input(w, 'bob-2', { kind: 'user.download', pointer });
    run(w);
    release();
    const pending = pendingOf(w, 'bob-2', 'blob-get')[0];
    if (pending === undefined) throw new Error('no pending download');
    respond(w, 'bob-2', pending.requestId, { kind: 'blob', bytes: corrupted });
    expect(outputsOfKind(w, 'bob-2', 'attachment-failed').map((f) => f.error.code)).toEqual([
      'ATTACHMENT_DIGEST_MISMATCH',
    ]);
    // The honest blob still downloads afterwards.
    download(w, 'bob-2', pointer);
    expect(outputsOfKind(w, 'bob-2', 'attachment').map((a) => a.bytes)).toEqual([PHOTO]);
  });
});

function createPair(): World {
  const w = createWorld('attachments');
  talkingPair(w, 2, 2);
  return w;
}
