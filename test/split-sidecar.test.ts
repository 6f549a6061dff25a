// A canary rollout as one sidecar sees it: real echo backends in two revisions ("v1", "v2", each
// answering 1–200 ms late), real ws clients sending all the time, and the split driven through
// PUT /v1/backends the way the operator will: canary 0 → 10 → 50 → 100 %, then an abort to 0.
// At each step the canary holds its share within one session; no client is closed, no message is
// lost or reordered, and (from the tag each backend puts on its answers) no session changes
// backend more than the steps ask: once forward, once back.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import type { BackendsResponse, PutBackendsRequest, SplitView } from '../common/admin/contract.js';
import type { Sidecar } from '../sidecar/sidecar.js';
import { BackendProcess, killAllBackends, pump, startSidecar, TestClient, waitFor } from './helpers.js';
import { eventually } from './kube/control-plane.js';

const SESSIONS = 120;
const SEND_EVERY_MS = 100;
/** Sessions moved per second (the whole sidecar). */
const RATE = 40;

after(killAllBackends);

describe('split: a sidecar holds the canary share step by step', () => {
  let sidecar: Sidecar | undefined;
  after(() => sidecar?.stop(0));

  test('0 → 10 → 50 → 100 → 0 %: share within one session, nothing closed or lost, no session moved twice', { timeout: 120_000 }, async (t) => {
    const backends = await Promise.all(['v1-a', 'v1-b', 'v2-a', 'v2-b'].map((id) => BackendProcess.start(id, ['--answer-delay', '1-200'])));
    ({ sidecar } = await startSidecar(`backends:\n  - { id: boot, url: "${backends[0]!.url}" }\n`));
    const url = `ws://127.0.0.1:${sidecar.address().port}`;
    const admin = `http://127.0.0.1:${sidecar.adminAddress!.port}/v1/backends`;
    const backendSet = backends.map((b) => ({ id: b.id, url: b.url, labels: { revision: b.id.slice(0, 2) } }));
    let generation = 0;
    const put = async (body: Omit<PutBackendsRequest, 'generation' | 'backends'>, gen = ++generation): Promise<Response> =>
      fetch(admin, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ generation: gen, backends: backendSet, ...body }) });
    const split = (canary: number) => ({ label: 'revision', rate: RATE, groups: [{ value: 'v2', weight: canary }, { value: 'v1', weight: 100 - canary }] });
    const view = async (): Promise<SplitView> => ((await (await fetch(admin)).json()) as BackendsResponse).split!;
    /** The split once no move is left and `done` holds. */
    const settled = (done: (s: SplitView) => boolean, what: string): Promise<SplitView> =>
      eventually(async () => {
        const s = await view();
        return s.moving === 0 && done(s) ? s : undefined;
      }, what, 30_000);

    // The contract: weights must sum to 100; a stale generation's split is refused.
    assert.equal((await put({ split: { label: 'revision', groups: [{ value: 'v2', weight: 10 }, { value: 'v1', weight: 80 }] } }, 1)).status, 400);
    assert.equal((await put({ split: split(0) })).status, 200);

    // Every client counts the backends its answers came from, in order.
    const clients = await Promise.all(Array.from({ length: SESSIONS }, () => TestClient.connect(url)));
    const pumps = clients.map((c, i) => pump(c, `c${i}-`, SEND_EVERY_MS));
    // A failed assertion must not leave the clients sending (the process would never end).
    t.after(() => {
      for (const p of pumps) p.stop();
      for (const c of clients) c.close();
    });
    const backendsSeen = (c: TestClient): string[] => {
      const seen: string[] = [];
      for (const m of c.received) {
        const id = m.data.toString().split('|')[0]!;
        if (seen.at(-1) !== id) seen.push(id);
      }
      return seen;
    };
    await waitFor(() => clients.every((c) => c.received.length > 0), 'a first answer on every session', 10_000);
    assert.ok(clients.every((c) => backendsSeen(c)[0]!.startsWith('v1')), 'with the canary at 0 % every session opened on v1');

    for (const canary of [10, 50, 100]) {
      const before = await view();
      const startedAt = Date.now();
      assert.equal((await put({ split: split(canary) })).status, 200);
      const v = await settled((s) => s.groups[0]!.sessions === s.groups[0]!.target, `canary ${canary} %: the share reached`);
      const moved = v.groups[0]!.sessions - before.groups[0]!.sessions;
      const tookMs = Date.now() - startedAt;
      t.diagnostic(`canary ${canary} %: ${moved} sessions moved in ${tookMs} ms; ${JSON.stringify(v.groups)}`);
      assert.ok(Math.abs(v.groups[0]!.sessions - (SESSIONS * canary) / 100) <= 1, `canary ${canary} % holds its share within one session`);
      assert.ok(tookMs >= ((moved - 1) * 1000) / RATE, `${moved} moves at ${RATE}/s took ${tookMs} ms: paced`);
    }

    // Abort: every session goes back to v1.
    assert.equal((await put({ split: split(0) })).status, 200);
    await settled((s) => s.groups[0]!.sessions === 0, 'abort: every session back on v1');

    // Every message answered, in order, and no client closed.
    const sent = pumps.map((p) => p.stop());
    await waitFor(() => clients.every((c, i) => c.received.length >= sent[i]! || c.closed !== null), 'every answer', 10_000);
    clients.forEach((c, i) => {
      assert.equal(c.closed, null, `client ${i} still open`);
      const texts = c.received.map((m) => m.data.toString().split('|')[1]);
      assert.deepEqual(texts, Array.from({ length: sent[i]! }, (_, n) => `c${i}-${n}`), `client ${i}: every message answered once, in order`);
      // 100 % then 0 %: each session reached the canary once and came back once, never more.
      const revisions = backendsSeen(c).map((id) => id.slice(0, 2));
      assert.deepEqual(revisions, ['v1', 'v2', 'v1'], `client ${i} moved once each way: ${backendsSeen(c).join(' → ')}`);
    });
  });
});
