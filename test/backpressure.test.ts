// A slow leg must slow the other one down, not fill the sidecar's memory.
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { WebSocketServer, type WebSocket } from 'ws';
import { backendsYaml, startSidecar, TestClient, waitFor } from './helpers.js';

const MiB = 1024 * 1024;

test('a backend that stops reading: the sidecar stops reading the client and its queue stays bounded; nothing is dropped', async () => {
  // A backend that accepts, then stops reading until told to resume.
  const server = createServer();
  const wss = new WebSocketServer({ noServer: true, maxPayload: 64 * MiB });
  let backendSocket: WebSocket | undefined;
  let received = 0;
  wss.on('connection', (ws) => {
    backendSocket = ws;
    ws.on('message', () => received++);
    ws.pause();
  });
  server.on('upgrade', (req, socket, head) => wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req)));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const backendUrl = `ws://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const hwm = 256 * 1024;
  const { sidecar, url } = await startSidecar(
    `${backendsYaml([{ id: 'slow', url: backendUrl }])}session:\n  highWaterMarkBytes: ${hwm}\n  pingInterval: 1m\n  pongTimeout: 1m\n`,
  );
  try {
    const client = await TestClient.connect(`${url}/flood`);
    await waitFor(() => backendSocket !== undefined, 'backend connection');
    const session = [...sidecar.sessions.values()][0]!;
    const message = Buffer.alloc(64 * 1024, 7);
    const total = 800; // 50 MiB: far more than the kernel's socket buffers hold
    for (let i = 0; i < total; i++) client.ws.send(message);

    // The sidecar's queue towards the backend never grows past the bound (hwm + one message +
    // what one socket read can carry), while the client is left holding what it could not send.
    let maxQueued = 0;
    const deadline = Date.now() + 1500;
    while (Date.now() < deadline) {
      maxQueued = Math.max(maxQueued, session.legSocket!.bufferedAmount);
      await new Promise((r) => setImmediate(r));
    }
    assert.ok(maxQueued <= hwm + 2 * message.length, `sidecar queued ${maxQueued} bytes towards the backend`);
    assert.ok(client.ws.bufferedAmount > 20 * MiB, `client still holds ${client.ws.bufferedAmount} bytes: the sidecar stopped reading it`);

    backendSocket!.resume();
    await waitFor(() => received === total, `all ${total} messages reach the backend`, 20000);
    assert.equal(client.closed, null);
    client.close();
  } finally {
    await sidecar.stop(0);
    for (const c of wss.clients) c.terminate();
    server.close();
  }
});

test('a client that stops reading: the sidecar stops reading the backend and its queue stays bounded', async () => {
  const server = createServer();
  const wss = new WebSocketServer({ noServer: true });
  const chunk = Buffer.alloc(64 * 1024, 1);
  let sentByBackend = 0;
  let backendSocket: WebSocket | undefined;
  wss.on('connection', (ws) => {
    backendSocket = ws;
    // Push 50 MiB at the client as fast as the sidecar will take it.
    for (let i = 0; i < 800; i++) {
      ws.send(chunk);
      sentByBackend++;
    }
  });
  server.on('upgrade', (req, socket, head) => wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req)));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const hwm = 256 * 1024;
  const { sidecar, url } = await startSidecar(
    `${backendsYaml([{ id: 'pusher', url: `ws://127.0.0.1:${(server.address() as AddressInfo).port}` }])}session:\n  highWaterMarkBytes: ${hwm}\n  pingInterval: 1m\n  pongTimeout: 1m\n`,
  );
  try {
    const client = await TestClient.connect(`${url}/slow-reader`);
    client.ws.pause(); // the client stops reading
    const session = [...sidecar.sessions.values()][0]!;
    let maxQueued = 0;
    const deadline = Date.now() + 1500;
    while (Date.now() < deadline) {
      maxQueued = Math.max(maxQueued, session.client.bufferedAmount);
      await new Promise((r) => setImmediate(r));
    }
    assert.equal(sentByBackend, 800);
    assert.ok(maxQueued <= hwm + 2 * chunk.length, `sidecar queued ${maxQueued} bytes towards the client`);
    assert.ok(backendSocket!.bufferedAmount > 20 * MiB, `the backend still holds ${backendSocket!.bufferedAmount} bytes`);
    client.ws.resume();
    await client.waitForCount(800, 20000);
    assert.ok(client.received.every((m) => m.data.equals(chunk)));
    client.close();
  } finally {
    await sidecar.stop(0);
    for (const c of wss.clients) c.terminate();
    server.close();
  }
});
