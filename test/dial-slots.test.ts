// upstream.maxConcurrentDials: the dials in flight to one backend are bounded, so that a storm of
// failovers does not overflow its listen queue (sidecar/dial-slots.ts); the ones waiting are a gauge.
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { after, describe, test } from 'node:test';
import { WebSocketServer } from 'ws';
import { Cancel } from '../sidecar/dial.js';
import { DialSlots } from '../sidecar/dial-slots.js';
import type { Sidecar } from '../sidecar/sidecar.js';
import { backendsYaml, startSidecar, TestClient, waitFor } from './helpers.js';

describe('DialSlots', () => {
  test('up to the limit at once, without a promise; then first come, first served as slots free', async () => {
    const slots = new DialSlots();
    assert.equal(slots.acquire(2), true);
    assert.equal(slots.acquire(2), true);
    const order: string[] = [];
    const third = (slots.acquire(2) as Promise<boolean>).then((ok) => order.push(`third ${ok}`));
    const fourth = (slots.acquire(2) as Promise<boolean>).then((ok) => order.push(`fourth ${ok}`));
    await Promise.resolve();
    assert.deepEqual(order, [], 'both wait while two dials are in flight');
    slots.release(2);
    await third;
    assert.deepEqual(order, ['third true']);
    slots.release(2);
    await fourth;
    assert.deepEqual(order, ['third true', 'fourth true']);
  });

  test('a waiter that is cancelled leaves the queue and gets false; the next one gets its turn', async () => {
    const slots = new DialSlots();
    assert.equal(slots.acquire(1), true);
    const cancel = new Cancel();
    const cancelled = slots.acquire(1, cancel) as Promise<boolean>;
    const next = slots.acquire(1) as Promise<boolean>;
    cancel.cancel();
    assert.equal(await cancelled, false);
    slots.release(1);
    assert.equal(await next, true);
    // The slot it holds is the only one in flight: one more waits.
    assert.notEqual(slots.acquire(1), true);
  });

  test('a waiter arriving while others wait queues behind them, even if a slot is free by a raised limit', async () => {
    const slots = new DialSlots();
    assert.equal(slots.acquire(1), true);
    const first = slots.acquire(1) as Promise<boolean>;
    assert.notEqual(slots.acquire(5), true, 'no overtaking the queue');
    slots.release(5);
    assert.equal(await first, true);
  });
});

describe('upstream.maxConcurrentDials', () => {
  let sidecar: Sidecar | undefined;
  const servers: { close(): void }[] = [];
  after(async () => {
    await sidecar?.stop();
    for (const s of servers) s.close();
  });

  /** A ws echo backend that answers each upgrade `delayMs` late and counts the upgrades pending at once. */
  async function backend(delayMs: number): Promise<{ url: string; peak: () => number; kill: () => void }> {
    const http = createServer();
    const wss = new WebSocketServer({ noServer: true });
    const sockets = new Set<Socket>();
    let pending = 0;
    let peak = 0;
    http.on('connection', (s: Socket) => {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
    });
    http.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
      peak = Math.max(peak, ++pending);
      setTimeout(() => {
        pending--;
        wss.handleUpgrade(req, socket, head, (ws) => ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary })));
      }, delayMs);
    });
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
    servers.push(http);
    return {
      url: `ws://127.0.0.1:${(http.address() as AddressInfo).port}`,
      peak: () => peak,
      // As a SIGKILL: no close frames, connections reset, nothing listening.
      kill: () => {
        http.close();
        for (const s of sockets) s.resetAndDestroy();
      },
    };
  }

  test('a backend that never answers: once its breaker opens, the dials queued behind its slots go to another backend at once', async () => {
    const a = await backend(0);
    // Takes the connection and never answers the upgrade.
    const silent = createServer();
    let upgrades = 0;
    silent.on('upgrade', () => upgrades++);
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    servers.push({ close: () => silent.close() });
    const silentUrl = `ws://127.0.0.1:${(silent.address() as AddressInfo).port}`;
    const { sidecar: s, url } = await startSidecar(
      `${backendsYaml([{ id: 'a', url: a.url }, { id: 'silent', url: silentUrl }])}upstream:\n  maxConcurrentDials: 2\n  handshakeTimeout: 300ms\n` +
        'health:\n  breaker:\n    threshold: 2\nbalancer:\n  algorithm: round-robin\nshutdown:\n  grace: 0\n',
    );
    try {
      const started = Date.now();
      const clients = await Promise.all(Array.from({ length: 12 }, () => TestClient.connect(`${url}/x`)));
      const took = Date.now() - started;
      assert.equal(s.pool.backends.get('a')!.sessions, 12, 'every session on a');
      // Half of them pick the silent backend: two dial, the first timeout frees a slot while the
      // breaker is still closed (one failure), so a third dials; the second timeout opens it, and
      // the three still queued go to a without dialling. (Without that check: 6 upgrades.)
      assert.equal(upgrades, 3, 'upgrades the silent backend was sent');
      assert.ok(took < 1000, `all 12 open after ${took} ms (a handshake timeout is 300 ms)`);
      for (const c of clients) c.close();
    } finally {
      await s.stop();
    }
  });

  test('24 sessions failing over at once: never more than 4 dials in flight to the survivor, and every session carries on', async () => {
    const a = await backend(0);
    const b = await backend(50);
    ({ sidecar } = await startSidecar(`${backendsYaml([{ id: 'a', url: a.url }, { id: 'b', url: b.url }])}upstream:\n  maxConcurrentDials: 4\nbalancer:\n  algorithm: round-robin\n`));
    const url = `ws://127.0.0.1:${sidecar.address().port}`;
    const clients: TestClient[] = [];
    for (let i = 0; i < 48; i++) clients.push(await TestClient.connect(`${url}/x`));
    const onA = sidecar.pool.backends.get('a')!.sessions;
    assert.equal(onA, 24, 'round-robin: half of them on a');
    assert.ok(b.peak() <= 4, `${b.peak()} upgrades pending at once on b while the sessions opened`);

    // What an operator sees meanwhile: dials waiting for b's slots, then none.
    const waitingOnB = async () => {
      const { values } = await sidecar!.metrics.registry.getSingleMetric('baton_backend_dials_waiting')!.get();
      return values.find((v) => v.labels.backend === 'b')?.value;
    };
    assert.equal(await waitingOnB(), 0);
    const seen: number[] = [];
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        seen.push((await waitingOnB()) ?? -1);
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    a.kill();
    await waitFor(() => sidecar!.pool.backends.get('b')!.sessions === clients.length, 'every session on b', 10_000);
    watching = false;
    await watcher;
    assert.equal(b.peak(), 4, 'the failover storm filled the 4 slots, and no more');
    assert.ok(Math.max(...seen) >= 10, `baton_backend_dials_waiting{backend="b"} during the storm: ${seen.join(' ')}`);
    assert.equal(await waitingOnB(), 0);
    for (const [i, c] of clients.entries()) c.ws.send(`after ${i}`);
    await waitFor(() => clients.every((c, i) => c.texts().includes(`after ${i}`)), 'every session answered by b');
    assert.ok(clients.every((c) => c.closed === null), 'no client closed');
    for (const c of clients) c.close();
  });
});
