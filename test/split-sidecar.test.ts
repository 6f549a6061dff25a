// A canary rollout as one sidecar sees it: real echo backends in two revisions ("v1", "v2", each
// answering 1–200 ms late), real ws clients sending all the time, and the split driven through
// PUT /v1/backends the way the operator will. At each step the canary holds its share within one
// session; no client is closed, no message is lost or reordered, and (from the tag each backend
// puts on its answers) no session changes backend more often than the steps ask.
import assert from 'node:assert/strict';
import { after, describe, test, type TestContext } from 'node:test';
import type { BackendInput, BackendsResponse, PutBackendsRequest, SplitView } from '../common/admin/contract.js';
import type { Sidecar } from '../sidecar/sidecar.js';
import { BackendProcess, killAllBackends, pump, startSidecar, TestClient, waitFor } from './helpers.js';
import { eventually } from './kube/control-plane.js';

const SEND_EVERY_MS = 100;
/** Sessions moved per second (the whole sidecar). */
const RATE = 40;

after(killAllBackends);

const split = (canary: number) => ({ label: 'revision', rate: RATE, groups: [{ value: 'v2', weight: canary }, { value: 'v1', weight: 100 - canary }] });

/** A sidecar in front of two v1 and two v2 echo backends, driven through its admin API. */
async function rollout(t: TestContext) {
  const backends = await Promise.all(['v1-a', 'v1-b', 'v2-a', 'v2-b'].map((id) => BackendProcess.start(id, ['--answer-delay', '1-200'])));
  const { sidecar } = await startSidecar(`backends:\n  - { id: boot, url: "${backends[0]!.url}" }\n`);
  const clients: TestClient[] = [];
  const pumps: ReturnType<typeof pump>[] = [];
  // A failed assertion must not leave clients sending (the process would never end).
  t.after(async () => {
    for (const p of pumps) p.stop();
    for (const c of clients) c.close();
    await sidecar.stop(0);
  });
  const url = `ws://127.0.0.1:${sidecar.address().port}`;
  const admin = `http://127.0.0.1:${sidecar.adminAddress!.port}/v1/backends`;
  const all: BackendInput[] = backends.map((b) => ({ id: b.id, url: b.url, labels: { revision: b.id.slice(0, 2) } }));
  let generation = 0;
  const view = async (): Promise<SplitView> => ((await (await fetch(admin)).json()) as BackendsResponse).split!;
  return {
    sidecar: sidecar as Sidecar,
    backends,
    all,
    clients,
    /** The next generation unless `gen` is given. */
    put: (body: Omit<PutBackendsRequest, 'generation'>, gen = ++generation): Promise<Response> =>
      fetch(admin, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ generation: gen, ...body }) }),
    view,
    /** The split once no move is left and `done` holds. */
    settled: (done: (s: SplitView) => boolean, what: string): Promise<SplitView> =>
      eventually(async () => {
        const s = await view();
        return s.moving === 0 && done(s) ? s : undefined;
      }, what, 30_000),
    /** Opens `n` clients, each sending a numbered message every SEND_EVERY_MS, and waits for a first answer on each. */
    async open(n: number): Promise<void> {
      const opened = await Promise.all(Array.from({ length: n }, () => TestClient.connect(url)));
      for (const c of opened) {
        pumps.push(pump(c, `c${clients.length}-`, SEND_EVERY_MS));
        clients.push(c);
      }
      await waitFor(() => opened.every((c) => c.received.length > 0), 'a first answer on every new session', 10_000);
    },
    /** Stops sending; checks every client is open and got every answer once, in order. */
    async allAnswered(): Promise<void> {
      const sent = pumps.map((p) => p.stop());
      await waitFor(() => clients.every((c, i) => c.received.length >= sent[i]! || c.closed !== null), 'every answer', 10_000);
      clients.forEach((c, i) => {
        assert.equal(c.closed, null, `client ${i} still open`);
        const texts = c.received.map((m) => m.data.toString().split('|')[1]);
        assert.deepEqual(texts, Array.from({ length: sent[i]! }, (_, n) => `c${i}-${n}`), `client ${i}: every message answered once, in order`);
      });
    },
  };
}

/** The backends a client's answers came from, each change once. */
function backendsSeen(c: TestClient): string[] {
  const seen: string[] = [];
  for (const m of c.received) {
    const id = m.data.toString().split('|')[0]!;
    if (seen.at(-1) !== id) seen.push(id);
  }
  return seen;
}

const revisionsSeen = (c: TestClient): string[] => backendsSeen(c).map((id) => id.slice(0, 2));

describe('split: a sidecar holds the canary share', () => {
  test('0 → 10 → 50 → 100 → 0 %: share within one session, nothing closed or lost, no session moved twice', { timeout: 120_000 }, async (t) => {
    const r = await rollout(t);
    const SESSIONS = 120;
    // The contract: weights must sum to 100; a stale generation's split is refused.
    const badWeights = { label: 'revision', groups: [{ value: 'v2', weight: 10 }, { value: 'v1', weight: 80 }] };
    assert.equal((await r.put({ backends: r.all, split: badWeights }, 1)).status, 400);
    assert.equal((await r.put({ backends: r.all, split: split(0) }, 2)).status, 200);
    assert.equal((await r.put({ backends: r.all, split: split(50) }, 1)).status, 409, 'a stale generation is refused');
    assert.equal((await r.view()).groups[0]!.weight, 0, 'and its split is not applied');

    await r.open(SESSIONS);
    assert.ok(r.clients.every((c) => backendsSeen(c)[0]!.startsWith('v1')), 'with the canary at 0 % every session opened on v1');

    for (const canary of [10, 50, 100]) {
      const before = await r.view();
      const startedAt = Date.now();
      assert.equal((await r.put({ backends: r.all, split: split(canary) }, 2 + canary)).status, 200);
      const v = await r.settled((s) => s.groups[0]!.sessions === s.groups[0]!.target, `canary ${canary} %: the share reached`);
      const moved = v.groups[0]!.sessions - before.groups[0]!.sessions;
      const tookMs = Date.now() - startedAt;
      t.diagnostic(`canary ${canary} %: ${moved} sessions moved in ${tookMs} ms; ${JSON.stringify(v.groups)}`);
      assert.ok(Math.abs(v.groups[0]!.sessions - (SESSIONS * canary) / 100) <= 1, `canary ${canary} % holds its share within one session`);
      assert.ok(tookMs >= ((moved - 1) * 1000) / RATE, `${moved} moves at ${RATE}/s took ${tookMs} ms: paced`);
    }

    // Abort: every session goes back to v1.
    assert.equal((await r.put({ backends: r.all, split: split(0) }, 200)).status, 200);
    await r.settled((s) => s.groups[0]!.sessions === 0, 'abort: every session back on v1');

    await r.allAnswered();
    // 100 % then 0 %: each session reached the canary once and came back once, never more.
    r.clients.forEach((c, i) => assert.deepEqual(revisionsSeen(c), ['v1', 'v2', 'v1'], `client ${i} moved once each way: ${backendsSeen(c).join(' → ')}`));
  });

  test('a canary without backends yet: moves wait for them; arrivals at a steady weight keep the share and move nobody', { timeout: 120_000 }, async (t) => {
    const r = await rollout(t);
    const v1Only = r.all.filter((b) => b.id.startsWith('v1'));
    assert.equal((await r.put({ backends: v1Only })).status, 200);
    await r.open(60);
    // 50 % asked before any v2 backend exists: nothing can move, nothing is closed.
    assert.equal((await r.put({ backends: v1Only, split: split(50) })).status, 200);
    // Nothing to poll for (nothing may happen): let a retry or more (one a second) come and go.
    await new Promise((resolve) => setTimeout(resolve, 1500));
    let v = await r.view();
    assert.equal(v.groups[0]!.sessions, 0);
    assert.equal(v.moving, 30, 'the 30 moves wait');
    // The v2 backends arrive (the same split): the waiting moves go through.
    assert.equal((await r.put({ backends: r.all, split: split(50) })).status, 200);
    v = await r.settled((s) => s.groups[0]!.sessions === 30, 'the canary at 30 of 60 once its backends exist');
    // Arrivals at 50 %: 40 more sessions; the share holds and no earlier session moves again.
    await r.open(40);
    v = await r.view();
    assert.equal(v.moving, 0);
    assert.ok(Math.abs(v.groups[0]!.sessions - 50) <= 1, `arrivals keep the share: ${JSON.stringify(v.groups)}`);
    await r.allAnswered();
    r.clients.forEach((c, i) => {
      const expected = i < 60 ? backendsSeen(c).length <= 2 : backendsSeen(c).length === 1;
      assert.ok(expected, `client ${i} changed backend at most once (opened ${i < 60 ? 'before' : 'after'} the step): ${backendsSeen(c).join(' → ')}`);
    });
  });

  test('a canary backend dies: its sessions fail over within the canary, so the share holds', { timeout: 60_000 }, async (t) => {
    const r = await rollout(t);
    assert.equal((await r.put({ backends: r.all, split: split(50) })).status, 200);
    await r.open(40);
    await r.settled((s) => s.groups[0]!.sessions === 20, 'the canary at 20 of 40');
    const onV2a = r.sidecar.pool.backends.get('v2-a')!.sessions;
    assert.ok(onV2a > 0, `v2-a holds sessions (${onV2a})`);
    await r.backends[2]!.kill();
    // Failover, not the split, moves them: the least-loaded backend overall would be a v1 one.
    const v = await eventually(async () => {
      const s = await r.view();
      return r.sidecar.pool.backends.get('v2-a')!.sessions === 0 && s.groups[0]!.sessions + s.groups[1]!.sessions === 40 ? s : undefined;
    }, 'every session of v2-a resumed elsewhere', 20_000);
    assert.equal(v.groups[0]!.sessions, 20, `the canary still holds 20: ${JSON.stringify(v.groups)}`);
    assert.equal(r.sidecar.pool.backends.get('v2-b')!.sessions, 20, 'all on the other canary backend');
    assert.ok(r.clients.every((c) => c.closed === null), 'no client closed');
  });
});
