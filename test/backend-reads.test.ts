// A backend leg's read buffer (BackendReads in sidecar/wire/frame-peer.ts) on its own, driven as
// Node's `onread` drives it: buffer() once when the socket is made, then callback() and buffer()
// for every read. What it promises: no byte a reader kept is ever read over, and a buffer is read
// into again (no new one per read) while nothing is kept.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BackendReads } from '../sidecar/wire/frame-peer.js';
import { mulberry32 } from './prng.js';

/** A socket's reads as Node makes them: each fills up to `size` bytes of the buffer it was last given. */
function socket(reads: BackendReads, random: () => number) {
  let buffer = reads.onread.buffer();
  const buffers = new Set<ArrayBufferLike>([buffer.buffer]);
  /** Each buffer handed out (a view: slices of Node's shared pool share an ArrayBuffer). */
  const views = new Set<Buffer>([buffer]);
  return {
    buffers,
    views,
    get room(): number {
      return buffer.length;
    },
    read(size: number): void {
      const n = Math.min(size, buffer.length);
      for (let i = 0; i < n; i++) buffer[i] = Math.floor(random() * 256);
      reads.onread.callback(n, buffer);
      buffer = reads.onread.buffer();
      buffers.add(buffer.buffer);
      views.add(buffer);
    },
  };
}

test('bytes kept from a read are never read over, whatever the mix of reads and lends', () => {
  const random = mulberry32(13);
  const reads = new BackendReads();
  const kept: { piece: Buffer; copy: Buffer }[] = [];
  let keep = false;
  reads.reader = {
    receive(chunk: Buffer): void {
      if (!keep) return;
      // Some piece of it, as a split frame, a held fragment or a queued write would be.
      const from = Math.floor(random() * chunk.length);
      const piece = chunk.subarray(from, from + 1 + Math.floor(random() * (chunk.length - from)));
      kept.push({ piece, copy: Buffer.from(piece) });
      reads.lend();
    },
  };
  const s = socket(reads, random);
  for (let i = 0; i < 5000; i++) {
    keep = random() < 0.3;
    // Mostly short reads, some that fill the buffer (a busy leg).
    s.read(random() < 0.1 ? s.room : 1 + Math.floor(random() ** 3 * s.room));
    if (i % 100 === 0) for (const k of kept) assert.ok(k.piece.equals(k.copy), `a kept piece read over by read ${i}`);
  }
  for (const k of kept) assert.ok(k.piece.equals(k.copy), 'a kept piece read over');
  assert.ok(kept.length > 1000);
});

test('while nothing is kept, every read goes into the same buffer: 512 bytes until a read fills it, then 64 KiB until a small read a second after the last full one', () => {
  const random = mulberry32(7);
  let now = 0;
  const reads = new BackendReads(() => now);
  reads.reader = { receive: () => undefined };
  const s = socket(reads, random);
  assert.equal(s.room, 512, 'the first buffer: a 101 and small messages');
  for (let i = 0; i < 100; i++) s.read(200);
  assert.equal(s.buffers.size, 1, 'short reads reuse the first buffer');
  s.read(512);
  assert.equal(s.room, 64 * 1024, 'a read that filled it: a full-size buffer next');
  for (let i = 0; i < 100; i++) s.read(513 + Math.floor(random() * (s.room - 513)));
  assert.equal(s.buffers.size, 2, 'then every read over 512 bytes reuses that one');
  s.read(2);
  assert.equal(s.room, 64 * 1024, 'a small read soon after a full one: the leg is busy, it keeps its buffer');
  assert.equal(s.buffers.size, 2);
  now += 999;
  s.read(2);
  assert.equal(s.room, 64 * 1024);
  now += 1;
  s.read(2);
  assert.equal(s.room, 512, 'a small read (a pong) a second after the last full one: back to 512 bytes, so a leg gone quiet keeps no 64 KiB');
  const before = s.views.size;
  for (let i = 0; i < 100; i++) s.read(1 + Math.floor(random() * 200));
  assert.equal(s.views.size, before, 'and small reads reuse it');
  assert.equal(s.room, 512);
});

test('reads after a lent one go after it in the same buffer, until less than a quarter is left', () => {
  const reads = new BackendReads();
  reads.reader = { receive: () => reads.lend() };
  const s = socket(reads, mulberry32(3));
  s.read(512);
  const rooms: number[] = [];
  for (let i = 0; i < 4; i++) {
    s.read(16 * 1024);
    rooms.push(s.room);
  }
  assert.deepEqual(rooms, [48 * 1024, 32 * 1024, 16 * 1024, 64 * 1024]);
  assert.equal(s.buffers.size, 3, 'the first buffer, one 64 KiB buffer for three lent reads, then a new one');
});
