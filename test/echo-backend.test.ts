// The echo backend the other tests stand on: late answers (--answer-delay) keep their order.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startEchoBackend } from '../tools/echo-backend.js';
import { TestClient } from './helpers.js';

test('late answers come back in order per connection, even when messages arrive in bursts', async () => {
  const backend = await startEchoBackend({ answerDelayMs: [1, 40] });
  try {
    const clients = await Promise.all(Array.from({ length: 20 }, () => TestClient.connect(backend.url)));
    const n = 300;
    // Bursts of 5 every 2 ms: many answers fall due in the same millisecond, from different timers' points of view.
    for (let i = 0; i < n; i += 5) {
      for (const c of clients) for (let k = i; k < i + 5; k++) c.ws.send(String(k));
      await new Promise((r) => setTimeout(r, 2));
    }
    await Promise.all(clients.map((c) => c.waitForCount(n, 10_000)));
    for (const c of clients) assert.deepEqual(c.texts(), Array.from({ length: n }, (_, k) => String(k)));
    for (const c of clients) c.close();
  } finally {
    await backend.close();
  }
});
