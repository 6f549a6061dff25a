// A blue/green cutover of a stateful protocol on a real control plane: socket.io servers
// (test/fixtures/socketio-server.ts) run as the pods of two Deployments, blue and green, real
// sidecars as the pods of a third, the operator as its own process with the chart's permissions.
// socket.io-client sessions (websocket transport, two namespaces joined with auth, a tick from the
// server every 50 ms per namespace, an emitWithAck every 250 ms) run through the sidecars while the
// operator promotes green. What is promised (docs/codecs.md, "What each protocol gets on a backend
// change"): every session ends up served by green, resumed on it (its namespaces joined again with
// their auth, the new server's answers swallowed), and the client library notices nothing: no
// 'disconnect', no second 'connect' or handshake, no 'connect_error', no tick lost or repeated and
// no gap over a second, every request answered once; blue is left with no session.
// Then, on the same clients, a canary of a third revision (red) at 50 % then 100 %: at 50 % half
// of each sidecar's sessions are on red (as the clients' ticks and status both show), each session
// moves once (a split move resumes it the same way), and the clients again notice nothing.
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { AppsV1Api, CoreV1Api, CustomObjectsApi, PatchStrategy, setHeaderOptions, type KubeConfig } from '@kubernetes/client-node';
import { Manager, type Socket } from 'socket.io-client';
import type { BackendsResponse } from '../common/admin/contract.js';
import { FixtureProcess, freePort, waitFor } from './helpers.js';
import { eventually, type ControlPlane } from './kube/control-plane.js';
import type { FakeKubelet } from './kube/kubelet.js';
import { OperatorProcess, runPods, startOperatorCluster, testOperatorArgs } from './kube/operator-process.js';
import { canaryPausedAt, createEdgeAndService, createEdgeBalancer, deployment, revisionGone, sessionsOn, waitForPromoted } from './kube/rollout.js';
import { BACKEND_PORT, PodProcesses, ROLE_LABEL, type SidecarProcess } from './kube/workloads.js';

const NS = 'app';
const OPERATOR_NS = 'baton-system';
const ADMIN_TOKEN = 'test-admin-token-0123456789';
/** The auth every namespace CONNECT carries; the servers refuse any other. */
const TOKEN = 'sio-token-42';
const SESSIONS = 30;
const NAMESPACES = ['/chat', '/news'];
/** The longest a namespace may go without a tick (they come every 50 ms). */
const MAX_GAP_MS = 1000;
/** Engine.IO heartbeats of the servers: the client gives up after 2.5 s without a ping. */
const PING_INTERVAL_MS = 500;
const PING_TIMEOUT_MS = 2000;

const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

const socketIoServer = fileURLToPath(new URL('./fixtures/socketio-server.js', import.meta.url));
const backendLabels = (version: string) => ({ app: 'sio', version, [ROLE_LABEL]: 'backend' });
/** "sio-green-5d8f7c9b4-x2x7q" → "green". */
const revisionOf = (pod: string): string => pod.split('-')[1] ?? pod;

interface Tick {
  n: number;
  servedBy: string;
  at: number;
}

/** What one namespace socket saw. */
class NsRecord {
  readonly ticks: Tick[] = [];
  connects = 0;
  readonly disconnects: string[] = [];
  readonly connectErrors: string[] = [];

  constructor(readonly socket: Socket) {
    socket.on('connect', () => this.connects++);
    socket.on('disconnect', (reason) => this.disconnects.push(reason));
    socket.on('connect_error', (err: Error) => this.connectErrors.push(err.message));
    socket.on('tick', (t: { n: number; servedBy: string }) => this.ticks.push({ n: t.n, servedBy: t.servedBy, at: Date.now() }));
  }

  /** The longest time without a tick, from the first one until `until`. */
  maxGap(until: number): number {
    let gap = 0;
    this.ticks.forEach((t, i) => (gap = Math.max(gap, t.at - (this.ticks[i - 1]?.at ?? t.at))));
    return Math.max(gap, until - (this.ticks.at(-1)?.at ?? until));
  }
}

interface Request {
  i: number;
  servedBy?: string;
  error?: string;
}

/** A socket.io-client Manager on one sidecar with a socket per namespace, recording everything. */
class SioSession {
  readonly manager: Manager;
  readonly ns = new Map<string, NsRecord>();
  /** Engine.IO packets the client received, by type; socket.io CONNECT answers by namespace. */
  handshakes = 0;
  readonly connectAnswers = new Map<string, number>();
  readonly requests: Request[] = [];
  private readonly pending = new Set<Promise<void>>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    readonly id: string,
    readonly via: SidecarProcess,
  ) {
    this.manager = new Manager(via.url, { transports: ['websocket'], reconnectionDelay: 100, reconnectionDelayMax: 300, randomizationFactor: 0 });
    const watch = () => {
      this.manager.engine.on('packet', (p: { type: string; data?: unknown }) => {
        if (p.type === 'open') this.handshakes++;
        const m = p.type === 'message' && typeof p.data === 'string' ? /^0(\/[^,]*)?,?\{/.exec(p.data) : null;
        if (m) this.connectAnswers.set(m[1] ?? '/', (this.connectAnswers.get(m[1] ?? '/') ?? 0) + 1);
      });
    };
    watch(); // the Manager opened its engine in its constructor
    this.manager.on('reconnect_attempt', () => queueMicrotask(watch));
    for (const n of NAMESPACES) this.ns.set(n, new NsRecord(this.manager.socket(n, { auth: { token: TOKEN } })));
  }

  get(n: string): NsRecord {
    return this.ns.get(n)!;
  }

  /** An emitWithAck on /chat every `everyMs`, each recorded with its answer (or its error). */
  startRequests(everyMs: number): void {
    this.timer = setInterval(() => {
      const r: Request = { i: this.requests.length };
      this.requests.push(r);
      const p = (this.get('/chat').socket.timeout(5000).emitWithAck('echo', { session: this.id, i: r.i }) as Promise<{ servedBy: string }>).then(
        (a) => void (r.servedBy = a.servedBy),
        (err: Error) => void (r.error = err.message),
      );
      this.pending.add(p);
      void p.then(() => this.pending.delete(p));
    }, everyMs);
  }

  async stopRequests(): Promise<void> {
    clearInterval(this.timer);
    await Promise.all(this.pending);
  }

  close(): void {
    clearInterval(this.timer);
    for (const r of this.ns.values()) r.socket.disconnect();
    this.manager.engine?.close();
  }
}

describe('operator on a real API server: socket.io sessions through a blue/green cutover, then a canary', { timeout: 180_000 }, () => {
  let cp: ControlPlane;
  let admin: KubeConfig;
  let apps: AppsV1Api;
  let custom: CustomObjectsApi;
  let kubelet: FakeKubelet;
  let pods: PodProcesses<FixtureProcess>;
  let operator: OperatorProcess | undefined;
  const sessions: SioSession[] = [];

  const sidecars = (): SidecarProcess[] => [...pods.sidecars.values()].sort((a, b) => a.name.localeCompare(b.name));
  const backendsOf = (revision: string): FixtureProcess[] => [...pods.backends.values()].filter((b) => revisionOf(b.id) === revision);

  /**
   * After a move to `revision`: runs longer than the client's ping timeout (interval + timeout), so
   * the new servers' heartbeats reach the client and its pongs reach them; stops the requests; then
   * one request on each namespace of each session must be answered by `revision`.
   */
  const servedNowBy = async (sessions: readonly SioSession[], revision: string, after: string): Promise<void> => {
    await new Promise((r) => setTimeout(r, PING_INTERVAL_MS + PING_TIMEOUT_MS + 500));
    await Promise.all(sessions.map((s) => s.stopRequests()));
    const servers = new Set(backendsOf(revision).map((b) => b.id));
    for (const s of sessions) {
      for (const n of NAMESPACES) {
        const answer = (await s.get(n).socket.timeout(3000).emitWithAck('echo', { session: s.id, after: true })) as { servedBy: string };
        assert.ok(servers.has(answer.servedBy), `${s.id}${n}: the request after ${after} answered by ${answer.servedBy}`);
      }
    }
  };

  /**
   * Nothing of a move showed to the client library: one handshake, one 'connect' and one CONNECT
   * answer per namespace, no 'disconnect' or 'connect_error'; on each namespace the ticks of each
   * server 0, 1, 2, … (none lost or repeated), a server never returned to once left, ticks still
   * coming after `movedAt` and no gap over MAX_GAP_MS until `end`.
   */
  const assertClientSawNothing = (s: SioSession, movedAt: number, end: number): void => {
    assert.equal(s.handshakes, 1, `${s.id}: one Engine.IO handshake reached the client`);
    for (const n of NAMESPACES) {
      const r = s.get(n);
      const where = `${s.id}${n}`;
      assert.deepEqual(r.disconnects, [], `${where}: no disconnect`);
      assert.deepEqual(r.connectErrors, [], `${where}: no connect_error`);
      assert.equal(r.connects, 1, `${where}: one 'connect' event`);
      assert.equal(s.connectAnswers.get(n), 1, `${where}: one CONNECT answer reached the client`);
      assert.ok(r.socket.connected, `${where}: still connected`);
      const servers = serversOf(r);
      for (const server of servers) {
        const ns = r.ticks.filter((t) => t.servedBy === server).map((t) => t.n);
        const firstWrong = ns.findIndex((v, i) => v !== i);
        assert.equal(firstWrong, -1, `${where}: tick ${firstWrong} from ${server} is ${ns[firstWrong]} (${ns.slice(Math.max(0, firstWrong - 3), firstWrong + 3).join(', ')})`);
      }
      const runs = r.ticks.filter((t, i) => i === 0 || t.servedBy !== r.ticks[i - 1]!.servedBy).length;
      assert.equal(runs, servers.length, `${where}: no server's ticks after the next server's first one`);
      assert.ok(r.ticks.at(-1)!.at >= movedAt, `${where}: ticks still coming after the move`);
      const gap = r.maxGap(end);
      assert.ok(gap <= MAX_GAP_MS, `${where}: ${gap} ms without a tick (at most ${MAX_GAP_MS})`);
    }
  };

  /** The servers whose ticks a namespace socket received since tick `from`, in order. */
  const serversOf = (r: NsRecord, from = 0): string[] => [...new Set(r.ticks.slice(from).map((t) => t.servedBy))];

  /** The servers' view: every request of the clients reached a server and ran there once (a planned move replays nothing). */
  const assertEveryRequestRanOnce = (): void => {
    const ran = new Map<string, number>();
    for (const b of pods.backends.values()) {
      for (const e of b.of('echo')) {
        const x = e.x as { session: string; i?: number; after?: boolean };
        if (x.i === undefined) continue;
        const key = `${x.session}#${x.i}`;
        ran.set(key, (ran.get(key) ?? 0) + 1);
      }
    }
    const requests = sessions.reduce((n, s) => n + s.requests.length, 0);
    assert.equal(ran.size, requests, 'every request reached a server');
    assert.deepEqual([...ran].filter(([, n]) => n !== 1), [], 'no request ran twice');
  };

  /** Requests since request `from`: every one answered, `before`'s answers then `after`'s (at least one of each). */
  const assertAnsweredBy = (s: SioSession, from: number, before: string, after: string): void => {
    const requests = s.requests.slice(from);
    assert.deepEqual(requests.filter((r) => r.error).map((r) => `${r.i}: ${r.error}`), [], `${s.id}: every request answered`);
    const by = requests.map((r) => revisionOf(r.servedBy!));
    const firstAfter = by.indexOf(after);
    assert.ok(
      firstAfter > 0 && by.slice(0, firstAfter).every((v) => v === before) && by.slice(firstAfter).every((v) => v === after),
      `${s.id}: requests answered by ${before}, then ${after} (${by.join(' ')})`,
    );
  };

  /** The revision's servers saw `sessions` sessions once each, both namespaces joined with the client's auth; no CONNECT refused anywhere. */
  const assertResumedOnceOn = (revision: string, sessions: number): void => {
    const servers = backendsOf(revision);
    assert.equal(servers.reduce((n, b) => n + b.of('connection').length, 0), sessions, `one Engine.IO connection per session on ${revision}`);
    for (const n of NAMESPACES) {
      assert.equal(servers.reduce((k, b) => k + b.of('connect', { nsp: n }).length, 0), sessions, `${n} joined once per session on ${revision}`);
      const joins = servers.flatMap((b) => b.of('message').map((e) => String(e.raw)).filter((raw) => raw.startsWith(`0${n},`)));
      assert.ok(joins.every((raw) => raw === `0${n},{"token":"${TOKEN}"}`), `${n}: joined on ${revision} with the client's auth (${joins[0]})`);
    }
    assert.deepEqual([...pods.backends.values()].flatMap((b) => b.of('refused')), [], 'no CONNECT refused');
  };

  /** The socket.io codec's counters, summed over the sidecars. */
  const codecCounts = async (): Promise<{ resumed: number; refusals: number; unresumable: number; replayed: number }> => {
    const metric = async (name: string): Promise<number> => {
      let sum = 0;
      for (const s of sidecars()) {
        const text = await fetch(`${s.adminUrl}/metrics`).then((r) => r.text());
        const m = new RegExp(`^${name}\\{codec="socket.io"\\} (\\S+)$`, 'm').exec(text);
        sum += m ? Number(m[1]) : 0;
      }
      return sum;
    };
    return {
      resumed: await metric('baton_codec_resumed_total'),
      refusals: await metric('baton_codec_resume_refusals_total'),
      unresumable: await metric('baton_codec_unresumable_sessions_total'),
      replayed: await metric('baton_codec_requests_replayed_total'),
    };
  };

  before(async () => {
    let core: CoreV1Api;
    let kubeconfig: string;
    ({ cp, admin, apps, core, custom, operatorKubeconfig: kubeconfig } = await startOperatorCluster(OPERATOR_NS, NS, ADMIN_TOKEN));

    // Each backend pod is a socket.io server on the pod's IP and the backend port, tagging its ticks and answers with the pod's name.
    pods = new PodProcesses(ADMIN_TOKEN, {
      backend: (name, ip, port) =>
        new FixtureProcess(name, socketIoServer, [
          '--host', ip,
          '--port', String(port),
          '--id', name,
          '--token', TOKEN,
          '--ping-interval', String(PING_INTERVAL_MS),
          '--ping-timeout', String(PING_TIMEOUT_MS),
        ]),
    });
    kubelet = await runPods(admin, NS, pods);

    await createEdgeAndService(apps, core, NS, { sidecars: 2, service: 'sio' });
    await apps.createNamespacedDeployment({ namespace: NS, body: deployment(NS, 'sio-blue', backendLabels('blue'), 2, BACKEND_PORT) });
    await createEdgeBalancer(custom, NS, { service: 'sio', blueGreen: { autoPromotionDelaySeconds: 1, migrationRate: 20, drainDeadlineSeconds: 60 } });
    await pods.waitForSidecars(2);
    operator = new OperatorProcess('operator-a', kubeconfig, await freePort(), testOperatorArgs(OPERATOR_NS));
  });

  after(async () => {
    for (const s of sessions) s.close();
    await operator?.kill();
    await kubelet?.stop();
    await pods?.stopAll();
    await cp?.stop();
  });

  test(`${SESSIONS} socket.io sessions (two namespaces with auth) move from blue to green: no disconnect, no second connect, ticks keep coming, every request answered once`, async (t) => {
    // Both sidecars hold both blue pods before a client connects (so no session moves between blue pods).
    await eventually(async () => {
      const views = await Promise.all(sidecars().map((s) => s.admin<BackendsResponse>('/backends')));
      return views.every((v) => v.backends.filter((b) => b.state === 'enabled' && b.labels.revision === 'blue').length === 2) ? true : undefined;
    }, 'both sidecars hold the two blue pods', 30_000, 100);

    for (let i = 0; i < SESSIONS; i++) sessions.push(new SioSession(`s${i}`, sidecars()[i % 2]!));
    await waitFor(
      () => sessions.every((s) => NAMESPACES.every((n) => s.get(n).socket.connected && s.get(n).ticks.length >= 3)),
      'every session connected on both namespaces, ticking',
      15_000,
    );
    for (const s of sessions) s.startRequests(250);
    await waitFor(() => sessions.every((s) => s.requests.some((r) => r.servedBy)), 'a request of every session answered', 10_000);
    for (const s of sessions) for (const n of NAMESPACES) assert.equal(revisionOf(s.get(n).ticks[0]!.servedBy), 'blue', `${s.id}${n}: served by blue first`);

    // Green comes up; the operator previews it, promotes it after a second and drains blue at 20 sessions/s per sidecar.
    const greenAt = Date.now();
    await apps.createNamespacedDeployment({ namespace: NS, body: deployment(NS, 'sio-green', backendLabels('green'), 2, BACKEND_PORT) });
    const promoted = await waitForPromoted(custom, NS, 'edge', 'green', 45_000);
    const promotedAt = Date.now();
    assert.equal(promoted.status?.previousRevision, 'blue');
    await eventually(async () => ((await sessionsOn(sidecars(), 'green')) === SESSIONS ? true : undefined), `${SESSIONS} sessions on green`, 30_000, 100);
    assert.equal(await sessionsOn(sidecars(), 'blue'), 0, 'no session left on blue');
    await revisionGone(sidecars, 'blue');
    const movedAt = Date.now();
    // Blue's own view: every namespace socket it accepted has been let go.
    await eventually(
      async () => (backendsOf('blue').every((b) => b.of('connect').length === b.of('disconnect').length) ? true : undefined),
      'the blue servers have no socket left',
      10_000,
      100,
    );
    const blueSockets = backendsOf('blue').reduce((n, b) => n + b.of('connect').length, 0);
    assert.equal(blueSockets, SESSIONS * NAMESPACES.length, 'blue served every namespace of every session, once');

    assert.equal(backendsOf('green').length, 2);
    await servedNowBy(sessions, 'green', 'the cutover');

    const end = Date.now();
    const gaps = sessions.flatMap((s) => NAMESPACES.map((n) => s.get(n).maxGap(end)));
    t.diagnostic(`promoted ${promotedAt - greenAt} ms after green was created, every session on green ${movedAt - greenAt} ms after; longest gap between ticks ${Math.max(...gaps)} ms`);
    for (const s of sessions) {
      assertClientSawNothing(s, movedAt, end);
      for (const n of NAMESPACES) {
        const servers = serversOf(s.get(n));
        assert.deepEqual(servers.map(revisionOf), ['blue', 'green'], `${s.id}${n}: ticks from ${servers.join(', ')}`);
        assert.ok(backendsOf('green').some((b) => b.id === servers[1]), `${s.id}${n}: ends on a green pod (${servers[1]})`);
      }

      assertAnsweredBy(s, 0, 'blue', 'green');
    }

    // The servers' view: each request ran once (a planned move replays nothing); green saw each
    // session once, its two namespaces joined with the client's auth, and nothing refused.
    assertEveryRequestRanOnce();
    assertResumedOnceOn('green', SESSIONS);

    // The sidecars' count: every session resumed once, none refused or unresumable.
    assert.deepEqual(await codecCounts(), { resumed: SESSIONS, refusals: 0, unresumable: 0, replayed: 0 });
  });

  test(`then a canary of red over the same sessions, 50 % → 100 %: the share per sidecar at 50 %, each session moved once, the clients see nothing`, async (t) => {
    // The same balancer turned canary, a pause after 50 % so the share can be read there.
    await custom.patchNamespacedCustomObject(
      {
        group: 'baton.dev',
        version: 'v1alpha1',
        namespace: NS,
        plural: 'wsbalancers',
        name: 'edge',
        body: { spec: { rollout: { strategy: 'canary', canary: { migrationRate: 20, steps: [{ setWeight: 50 }, { pause: {} }, { setWeight: 100 }] } } } },
      },
      mergePatch,
    );
    // What each client saw before the canary, so the moves are counted from there.
    const ticksFrom = new Map(sessions.map((s) => [s, new Map(NAMESPACES.map((n) => [n, s.get(n).ticks.length]))]));
    const requestsFrom = new Map(sessions.map((s) => [s, s.requests.length]));
    const sinceCanary = (s: SioSession, n: string): string[] => serversOf(s.get(n), ticksFrom.get(s)!.get(n));
    for (const s of sessions) s.startRequests(250);
    // A request answered on green by every session before red exists: a session the canary moves
    // at once must still show green's answers, then red's.
    await eventually(
      async () => (sessions.every((s) => s.requests.slice(requestsFrom.get(s)).some((r) => r.servedBy !== undefined)) ? true : undefined),
      'a request answered on every session before the canary',
      10_000,
      50,
    );

    const redAt = Date.now();
    await apps.createNamespacedDeployment({ namespace: NS, body: deployment(NS, 'sio-red', backendLabels('red'), 2, BACKEND_PORT) });
    const atHalf = await canaryPausedAt(custom, NS, 'edge', 1, 45_000);
    const halfAt = Date.now();
    assert.equal(atHalf.status?.rollout?.canary?.weight, 50);
    // A session moved just before the status was read may have had one namespace's first tick
    // from red (they come every 50 ms per namespace) and not yet the other's: read the clients
    // once every namespace has ticked since. A namespace not resumed on red ticks no more.
    await eventually(
      async () => (sessions.every((s) => NAMESPACES.every((n) => (s.get(n).ticks.at(-1)?.at ?? 0) >= halfAt + 200)) ? true : undefined),
      'every namespace ticking after the pause',
      5_000,
      50,
    );

    // At 50 %: each session moved at most once (green, or green then one red server, on both
    // namespaces alike), and per sidecar half its sessions on red, as the clients and status see it.
    const onRed = new Map<string, number>();
    for (const s of sessions) {
      const paths = NAMESPACES.map((n) => sinceCanary(s, n));
      assert.deepEqual(paths[1], paths[0], `${s.id}: both namespaces on the same servers`);
      const revisions = paths[0]!.map(revisionOf);
      assert.ok(['green', 'green red'].includes(revisions.join(' ')), `${s.id}: at most one move at 50 % (${paths[0]!.join(' → ')})`);
      if (revisions.at(-1) === 'red') onRed.set(s.via.name, (onRed.get(s.via.name) ?? 0) + 1);
    }
    const perSidecar = SESSIONS / sidecars().length;
    for (const via of sidecars()) {
      const on = onRed.get(via.name) ?? 0;
      assert.ok(Math.abs(on - perSidecar / 2) <= 1, `${via.name}: ${on} of ${perSidecar} sessions on red at 50 %`);
      const reported = atHalf.status?.rollout?.canary?.sidecars?.find((r) => r.name === via.name);
      assert.ok(reported && Math.abs(reported.canary - on) <= 1, `${via.name}: status says ${JSON.stringify(reported)}, the clients ${on}`);
    }

    // Promoted past the pause: 100 %, then red is the active revision and green is retired.
    await custom.patchNamespacedCustomObject(
      { group: 'baton.dev', version: 'v1alpha1', namespace: NS, plural: 'wsbalancers', name: 'edge', body: { metadata: { annotations: { 'baton.dev/promote': 'red@1' } } } },
      mergePatch,
    );
    const promoted = await waitForPromoted(custom, NS, 'edge', 'red', 45_000);
    assert.equal(promoted.status?.previousRevision, 'green');
    await revisionGone(sidecars, 'green');
    assert.equal(await sessionsOn(sidecars(), 'red'), SESSIONS, 'every session on red');
    const movedAt = Date.now();
    await eventually(
      async () => (backendsOf('green').every((b) => b.of('connect').length === b.of('disconnect').length) ? true : undefined),
      'the green servers have no socket left',
      10_000,
      100,
    );

    await servedNowBy(sessions, 'red', 'the canary');

    const end = Date.now();
    const gaps = sessions.flatMap((s) => NAMESPACES.map((n) => s.get(n).maxGap(end)));
    t.diagnostic(`paused at 50 % ${halfAt - redAt} ms after red was created (on red then: ${[...onRed].map(([via, n]) => `${via} ${n}/${perSidecar}`).join(', ')}), every session on red ${movedAt - redAt} ms after; longest gap between ticks ${Math.max(...gaps)} ms`);
    for (const s of sessions) {
      assertClientSawNothing(s, movedAt, end);
      // Over the whole canary one move: from its green server to one red server (a session moved at 50 % stayed there).
      for (const n of NAMESPACES) assert.deepEqual(sinceCanary(s, n).map(revisionOf), ['green', 'red'], `${s.id}${n}: ticks from ${sinceCanary(s, n).join(', ')}`);
      assertAnsweredBy(s, requestsFrom.get(s)!, 'green', 'red');
    }
    assertEveryRequestRanOnce();
    assertResumedOnceOn('red', SESSIONS);
    // Each session resumed once in the cutover and once in the canary.
    assert.deepEqual(await codecCounts(), { resumed: 2 * SESSIONS, refusals: 0, unresumable: 0, replayed: 0 });
  });
});
