// The load generator: ws clients in this process driving a WebSocket echo server, directly or
// through a proxy. The hot loops reuse one payload buffer and one options object and read no
// clock per message where the figure doesn't need it (throughput counts, it doesn't time).
import { createHistogram, performance } from 'node:perf_hooks';
import mqttPacket, { type Packet } from 'mqtt-packet';
import { WebSocket, type ClientOptions } from 'ws';
import { readCpuMs, readCpuSplitMs, readMachineBusyMs } from './procs.js';
import { distributionOf, type Distribution } from './stats.js';

const SEND_BINARY = { binary: true } as const;
const SEND_TEXT = { binary: false } as const;

/**
 * An all-zero masking key: ws then skips masking (and the copy it needs), so the load generator
 * spends less of the shared 2 cores per message. Servers unmask as usual and can't tell.
 */
function zeroMask(mask: Buffer): void {
  mask[0] = 0;
  mask[1] = 0;
  mask[2] = 0;
  mask[3] = 0;
}

const CLIENT_OPTIONS: ClientOptions = { perMessageDeflate: false, generateMask: zeroMask };

/** How long a single connect (or close) may take before it counts as failed. */
const CONNECT_TIMEOUT_MS = 10_000;
const CLOSE_TIMEOUT_MS = 3_000;
/** How often waitUntilServing() tries a new session. */
const WAIT_STEP_MS = 200;
/** How often the pacer of many sessions sends what is due. */
const PACE_MS = 2;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---- connections ----------------------------------------------------------------------------

/**
 * Opens one client; rejects on error, a non-101 answer or the connect timeout. `onMessage` is
 * attached at once: it also gets the frames a server sends with its 101 (before this resolves).
 */
export function connectClient(url: string, protocols: string[] = [], onMessage?: (ws: WebSocket, data: Buffer) => void): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols, CLIENT_OPTIONS);
    if (onMessage) ws.on('message', (data: Buffer) => onMessage(ws, data));
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`connect to ${url} timed out after ${CONNECT_TIMEOUT_MS} ms`));
    }, CONNECT_TIMEOUT_MS);
    ws.once('open', () => {
      clearTimeout(timer);
      ws.off('error', onError);
      ws.on('error', ignore);
      resolve(ws);
    });
    const onError = (err: Error) => {
      clearTimeout(timer);
      reject(err);
    };
    ws.once('error', onError);
  });
}

function ignore(): void {
  // 'close' follows every 'error'; the caller acts on that (or doesn't care).
}

/** Opens `count` clients, at most `concurrency` handshakes at a time (a harness error if any fails). */
export async function connectMany(url: string, count: number, concurrency: number): Promise<WebSocket[]> {
  const sockets: WebSocket[] = [];
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (next < count && !failed) {
      next++;
      const ws = await connectClient(url);
      if (failed) ws.terminate(); // another worker failed meanwhile: don't leak this one
      else sockets.push(ws);
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  } catch (err) {
    failed = true;
    for (const ws of sockets) ws.terminate();
    throw err;
  }
  return sockets;
}

/** Closes every client with a close handshake; whatever hasn't closed after the timeout is cut. */
export async function closeAll(sockets: readonly WebSocket[]): Promise<void> {
  const closed = sockets.map(
    (ws) =>
      new Promise<void>((resolve) => {
        if (ws.readyState === WebSocket.CLOSED) return resolve();
        ws.once('close', () => resolve());
        ws.close(1000);
      }),
  );
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      for (const ws of sockets) if (ws.readyState !== WebSocket.CLOSED) ws.terminate();
      resolve();
    }, CLOSE_TIMEOUT_MS);
  });
  await Promise.race([Promise.all(closed), timeout]);
  clearTimeout(timer);
}

// ---- CPU accounting -------------------------------------------------------------------------

/** A process whose CPU use is reported next to a figure. */
export interface WatchedProcess {
  role: string;
  pid: number;
}

/**
 * CPU used between two points, as % of one core: `loadgen` (this process), one entry per watched
 * role, and `other` — whatever else kept the machine busy (it shares the cores with the run).
 */
export type CpuShare = Record<string, number>;

export interface CpuSnapshot {
  at: number;
  own: number;
  machine: number;
  children: number[];
  /** Of `children`, the time in user mode (the rest is the kernel's: system calls, the loopback's packets). */
  childrenUser: number[];
}

export function cpuSnapshot(watched: readonly WatchedProcess[]): CpuSnapshot {
  const own = process.cpuUsage();
  return {
    at: performance.now(),
    own: (own.user + own.system) / 1000,
    machine: readMachineBusyMs(),
    ...childrenCpu(watched),
  };
}

function childrenCpu(watched: readonly WatchedProcess[]): Pick<CpuSnapshot, 'children' | 'childrenUser'> {
  const split = watched.map((w) => readCpuSplitMs(w.pid));
  return { children: split.map((c) => c.user + c.system), childrenUser: split.map((c) => c.user) };
}

/** Each watched role's CPU in user mode between two points, as % of one core. */
export function cpuUserShare(watched: readonly WatchedProcess[], from: CpuSnapshot, to: CpuSnapshot): CpuShare {
  const wall = to.at - from.at;
  return Object.fromEntries(watched.map((w, i) => [w.role, (100 * (to.childrenUser[i]! - from.childrenUser[i]!)) / wall]));
}

export function cpuShare(watched: readonly WatchedProcess[], from: CpuSnapshot, to: CpuSnapshot): CpuShare {
  const wall = to.at - from.at;
  const pct = (ms: number) => (100 * ms) / wall;
  const share: CpuShare = { loadgen: pct(to.own - from.own) };
  let ours = to.own - from.own;
  watched.forEach((w, i) => {
    const used = to.children[i] - from.children[i];
    share[w.role] = pct(used);
    ours += used;
  });
  // /proc tick granularity can make this slightly negative on an idle machine.
  share.other = Math.max(0, pct(to.machine - from.machine - ours));
  return share;
}

// ---- 1. echo throughput -----------------------------------------------------------------------

export interface ThroughputPlan {
  connections: number;
  /** Messages each connection keeps in flight. */
  window: number;
  payloadBytes: number;
  warmupMs: number;
  measureMs: number;
  /** A protocol's frames to send instead of binary payloads (e.g. OCPP CALLs with distinct ids). */
  frames?: ClientFrames;
}

/** What each connection sends: `open` once, in order, then `steady` cycled. */
export interface ClientFrames {
  binary: boolean;
  open: readonly Buffer[];
  steady: readonly Buffer[];
}

export interface ThroughputResult {
  messagesPerSec: number;
  /** Payload bytes echoed per second (one direction), in MiB/s. */
  mibPerSec: number;
  cpu: CpuShare;
}

/**
 * Each connection keeps `window` binary messages in flight: every echo received is answered by
 * the next message. Counts echoes in the measurement window that follows the warm-up. With
 * `frames`, each connection first sends the opening frames (their answers count as echoes, in the
 * warm-up), then the steady ones; the opening frames add to the window.
 */
export async function runThroughput(url: string, plan: ThroughputPlan, watched: readonly WatchedProcess[]): Promise<ThroughputResult> {
  const sockets = await connectMany(url, plan.connections, plan.connections);
  const payload = Buffer.alloc(plan.payloadBytes, 0x61);
  let received = 0;
  let sending = true;
  const frames = plan.frames;
  const frameOptions = frames?.binary ? SEND_BINARY : SEND_TEXT;
  for (const ws of sockets) {
    let next = 0;
    const send = frames
      ? () => ws.send(frames.steady[next++ % frames.steady.length]!, frameOptions)
      : () => ws.send(payload, SEND_BINARY);
    const onEcho = () => {
      received++;
      if (sending) send();
    };
    ws.on('message', onEcho);
    for (const f of frames?.open ?? []) ws.send(f, frameOptions);
    for (let i = 0; i < plan.window; i++) send();
  }
  const result = await measureEchoes(() => received, plan, watched);
  sending = false;
  await closeAll(sockets);
  return result;
}

/** Waits out the warm-up, then counts the echoes (`received()` so far) of the measurement window and the CPU it took. */
async function measureEchoes(
  received: () => number,
  plan: { warmupMs: number; measureMs: number; payloadBytes: number },
  watched: readonly WatchedProcess[],
): Promise<ThroughputResult> {
  await sleep(plan.warmupMs);
  const startCount = received();
  const startCpu = cpuSnapshot(watched);
  await sleep(plan.measureMs);
  const endCount = received();
  const endCpu = cpuSnapshot(watched);
  const messagesPerSec = (endCount - startCount) / ((endCpu.at - startCpu.at) / 1000);
  return { messagesPerSec, mibPerSec: (messagesPerSec * plan.payloadBytes) / (1024 * 1024), cpu: cpuShare(watched, startCpu, endCpu) };
}

export interface QuietSessionsPlan {
  sessions: number;
  /** Each session sends one binary message this often (one pacer staggers the sends). */
  sendEveryMs: number;
  payloadBytes: number;
  warmupMs: number;
  measureMs: number;
}

/**
 * Many sessions, each sending a message now and then, as a fleet of devices does: every message
 * arrives alone, so each read, write and wake-up of a proxy serves one message, over thousands of
 * sockets rather than the throughput run's 50 busy ones. Counts echoes in the measurement window
 * that follows the warm-up.
 */
export async function runQuietSessions(url: string, plan: QuietSessionsPlan, watched: readonly WatchedProcess[]): Promise<ThroughputResult> {
  const sockets = await connectMany(url, plan.sessions, 32);
  const payload = Buffer.alloc(plan.payloadBytes, 0x61);
  let received = 0;
  for (const ws of sockets) ws.on('message', () => received++);
  const stopPacing = paceSessions(sockets, plan.sendEveryMs, (ws) => ws.send(payload, SEND_BINARY));
  const result = await measureEchoes(() => received, plan, watched);
  stopPacing();
  await closeAll(sockets);
  return result;
}

/**
 * One pacer for many sessions: every PACE_MS it makes the sends that are due, session after
 * session, so that each open session sends every `everyMs` and the sends spread over the period.
 * Returns the function that stops it.
 */
function paceSessions(sockets: readonly WebSocket[], everyMs: number, send: (ws: WebSocket) => void): () => void {
  const start = performance.now();
  let sent = 0;
  let pacing = true;
  const pace = () => {
    if (!pacing) return;
    const due = Math.floor(((performance.now() - start) * sockets.length) / everyMs);
    for (; sent < due; sent++) {
      const ws = sockets[sent % sockets.length]!;
      if (ws.readyState === WebSocket.OPEN) send(ws);
    }
    setTimeout(pace, PACE_MS);
  };
  pace();
  return () => {
    pacing = false;
  };
}

// ---- 2. latency at a fixed rate ---------------------------------------------------------------

export interface LatencyPlan {
  connections: number;
  /** Messages per second over all connections. */
  ratePerSec: number;
  payloadBytes: number;
  warmupMs: number;
  measureMs: number;
}

export interface LatencyResult {
  /** Round trips recorded (sent inside the measurement window). */
  samples: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** Echoes that never came back before the drain timeout. */
  lost: number;
  cpu: CpuShare;
}

/** Send times of one connection's messages in flight; echoes come back in order. */
const RING_SIZE = 1024;

/**
 * Sends at a fixed total rate, round-robin over the connections (a 1 ms pacer sends whatever is
 * due, so the average rate is exact). Each round trip is timed from the actual send to the echo.
 */
export async function runLatency(url: string, plan: LatencyPlan, watched: readonly WatchedProcess[]): Promise<LatencyResult> {
  const sockets = await connectMany(url, plan.connections, plan.connections);
  const payload = Buffer.alloc(plan.payloadBytes, 0x61);
  // Nanosecond integers, 1 ns .. 60 s.
  const histogram = createHistogram({ lowest: 1, highest: 60e9, figures: 3 });
  const rings = sockets.map(() => new Float64Array(RING_SIZE));
  const heads = new Uint32Array(sockets.length);
  const tails = new Uint32Array(sockets.length);
  const start = performance.now();
  const measureFrom = start + plan.warmupMs;
  const measureUntil = measureFrom + plan.measureMs;
  let overflow = false;

  sockets.forEach((ws, c) => {
    const ring = rings[c];
    ws.on('message', () => {
      const now = performance.now();
      const sentAt = ring[tails[c]++ % RING_SIZE];
      if (sentAt >= measureFrom && sentAt < measureUntil) histogram.record(Math.max(1, Math.round((now - sentAt) * 1e6)));
    });
  });

  let sent = 0;
  let next = 0;
  const cpuMarks: { from?: CpuSnapshot; to?: CpuSnapshot } = {};
  await new Promise<void>((resolve) => {
    const pace = () => {
      const now = performance.now();
      if (cpuMarks.from === undefined && now >= measureFrom) cpuMarks.from = cpuSnapshot(watched);
      if (now >= measureUntil) {
        cpuMarks.to = cpuSnapshot(watched);
        return resolve();
      }
      const due = Math.floor(((now - start) * plan.ratePerSec) / 1000);
      while (sent < due) {
        const c = next;
        next = (next + 1) % sockets.length;
        sent++;
        if (heads[c] - tails[c] >= RING_SIZE) {
          overflow = true; // more in flight than the ring holds: the server has stalled for seconds
          continue;
        }
        rings[c][heads[c]++ % RING_SIZE] = performance.now();
        sockets[c].send(payload, SEND_BINARY);
      }
      setTimeout(pace, 1);
    };
    pace();
  });
  // Let the last echoes come back.
  const drainUntil = performance.now() + 2000;
  const outstanding = () => heads.reduce((sum, h, c) => sum + (h - tails[c]), 0);
  while (outstanding() > 0 && performance.now() < drainUntil) await sleep(5);
  const lost = outstanding();
  await closeAll(sockets);
  if (overflow) throw new Error('latency run: a connection had more than RING_SIZE messages in flight (server stalled)');
  return {
    samples: histogram.count,
    p50Ms: histogram.percentile(50) / 1e6,
    p99Ms: histogram.percentile(99) / 1e6,
    maxMs: histogram.max / 1e6,
    lost,
    cpu: cpuShare(watched, cpuMarks.from ?? cpuMarks.to!, cpuMarks.to!),
  };
}

// ---- 3. handshakes per second -----------------------------------------------------------------

export interface HandshakePlan {
  concurrency: number;
  warmupMs: number;
  measureMs: number;
}

export interface HandshakeResult {
  perSec: number;
  completed: number;
  failed: number;
  cpu: CpuShare;
  /** Of `cpu`, the user-mode part per watched role. */
  cpuUser: CpuShare;
}

/** Opens a client and closes it as soon as it is open; resolves with whether it opened. */
function openAndClose(url: string): Promise<boolean> {
  return new Promise((resolve) => {
    let opened = false;
    const ws = new WebSocket(url, CLIENT_OPTIONS);
    const timer = setTimeout(() => ws.terminate(), CONNECT_TIMEOUT_MS);
    ws.on('error', ignore);
    ws.once('open', () => {
      opened = true;
      ws.close(1000);
    });
    ws.once('close', () => {
      clearTimeout(timer);
      resolve(opened);
    });
  });
}

/** `concurrency` workers each open+close clients back to back; counts those finished inside the window. */
export async function runHandshakes(url: string, plan: HandshakePlan, watched: readonly WatchedProcess[]): Promise<HandshakeResult> {
  const start = performance.now();
  const measureFrom = start + plan.warmupMs;
  const measureUntil = measureFrom + plan.measureMs;
  let completed = 0;
  let failed = 0;
  const cpuMarks: { from?: CpuSnapshot; to?: CpuSnapshot } = {};
  const cpuTimers = [
    setTimeout(() => (cpuMarks.from = cpuSnapshot(watched)), plan.warmupMs),
    setTimeout(() => (cpuMarks.to = cpuSnapshot(watched)), plan.warmupMs + plan.measureMs),
  ];
  const worker = async () => {
    while (performance.now() < measureUntil) {
      const ok = await openAndClose(url);
      const now = performance.now();
      if (now < measureFrom || now >= measureUntil) continue;
      if (ok) completed++;
      else failed++;
    }
  };
  await Promise.all(Array.from({ length: plan.concurrency }, worker));
  for (const t of cpuTimers) clearTimeout(t);
  const from = cpuMarks.from ?? cpuSnapshot(watched);
  const to = cpuMarks.to ?? cpuSnapshot(watched);
  return { perSec: completed / (plan.measureMs / 1000), completed, failed, cpu: cpuShare(watched, from, to), cpuUser: cpuUserShare(watched, from, to) };
}

// ---- 4. memory per idle session ---------------------------------------------------------------

/** Open idle clients, to be closed by the caller with closeAll(). */
export function openIdleSessions(url: string, count: number): Promise<WebSocket[]> {
  return connectMany(url, count, 50);
}

// ---- 5. failover gap, and a resumed session's ------------------------------------------------------

export interface FailoverTrialResult {
  /** Id of the backend that served the session and was killed. */
  killed: string;
  /** Kill → an event from another backend on every stream, in ms; null if not before the timeout. */
  gapMs: number | null;
  /** Frames after the kill that were not events (a resume answer not swallowed, an error). */
  otherAfterKill: number;
  /** The sidecar closed the session before it failed over. */
  closed: boolean;
}

/** One session's traffic in a failover trial: what it sends, and which backend each event came from. */
export interface FailoverTraffic {
  /** Appended to the sidecar's URL (path and query). */
  path?: string;
  /** Subprotocols the client offers. */
  protocols?: string[];
  /** Streams that must each hear from the new backend (subscriptions, namespaces; 1 for an echo). */
  streams: number;
  /** Starts the session's traffic on the open client; returns what stops it. */
  start(ws: WebSocket): () => void;
  /** Every frame received, also before start(): the protocol's own answers (a subscribe after the ack, a pong). */
  frame?(ws: WebSocket, data: Buffer): void;
  /**
   * The backend and stream of an event; null for any other frame; 'fragment' for a frame that
   * completes nothing (part of a packet of a byte-stream protocol, MQTT), which is not counted.
   */
  event(data: Buffer): { backend: string; stream: number } | null | 'fragment';
}

/** Events seen before the kill (from every stream), so the session is in steady state when its backend dies. */
const EVENTS_BEFORE_KILL = 20;
const FAILOVER_TIMEOUT_MS = 5_000;

/**
 * Opens a session to a sidecar in front of two backends, runs its traffic, calls `kill(id)` for the
 * backend whose events it gets, and times the kill to the first event from a different backend on
 * every stream. Default traffic: tagged echo backends, a text message every 1 ms. Without `kill`,
 * it ends once the session is in steady state (warmUp).
 */
export async function runFailoverTrial(url: string, kill: ((backendId: string) => void) | null, traffic = taggedEchoTraffic()): Promise<FailoverTrialResult> {
  let events = 0;
  let servedBy = '';
  let killedAt = 0;
  let otherAfterKill = 0;
  let closed = false;
  const streamsSeen = new Set<number>();
  const streamsMoved = new Set<number>();
  let gapMs: number | null = null;
  let onFailover: () => void = () => {};
  let onReady: () => void = () => {};
  const ready = new Promise<void>((resolve) => (onReady = resolve));
  const failedOver = new Promise<void>((resolve) => (onFailover = resolve));

  const onMessage = (ws: WebSocket, data: Buffer) => {
    traffic.frame?.(ws, data);
    const e = traffic.event(data);
    if (e === 'fragment') return;
    if (killedAt === 0) {
      if (e === null) return;
      servedBy = e.backend;
      streamsSeen.add(e.stream);
      if (++events >= EVENTS_BEFORE_KILL && streamsSeen.size === traffic.streams) onReady();
    } else if (e === null) otherAfterKill++;
    else if (e.backend !== servedBy && gapMs === null) {
      streamsMoved.add(e.stream);
      if (streamsMoved.size < traffic.streams) return;
      gapMs = performance.now() - killedAt;
      onFailover();
    }
  };
  const ws = await connectClient(url + (traffic.path ?? ''), traffic.protocols, onMessage);
  ws.once('close', () => {
    closed = gapMs === null;
    onFailover();
  });
  const stop = traffic.start(ws);
  try {
    const readyInTime = await Promise.race([ready.then(() => true), sleep(FAILOVER_TIMEOUT_MS).then(() => false)]);
    if (!readyInTime) throw new Error(`failover trial: fewer than ${EVENTS_BEFORE_KILL} events, or not on every stream, before the kill`);
    if (kill === null) return { killed: '', gapMs: null, otherAfterKill: 0, closed: false };
    killedAt = performance.now();
    kill(servedBy);
    await Promise.race([failedOver, sleep(FAILOVER_TIMEOUT_MS)]);
    return { killed: servedBy, gapMs, otherAfterKill, closed };
  } finally {
    stop();
    await closeAll([ws]);
  }
}

/**
 * One session of `traffic` straight to a backend, until it has had EVENTS_BEFORE_KILL events on
 * every stream: a freshly started backend has then run its code once, so a failover trial does not
 * time a cold process's first session (JIT, lazy loading).
 */
export async function warmUp(backendUrl: string, traffic: FailoverTraffic): Promise<void> {
  await runFailoverTrial(backendUrl, null, traffic);
}

/**
 * Tagged echo backends (text replies are "<id>|<payload>", ids one character long): a text message
 * every 1 ms, each reply an event.
 */
export function taggedEchoTraffic(): FailoverTraffic {
  const message = Buffer.from('ping');
  return {
    streams: 1,
    start(ws) {
      const sender = setInterval(() => {
        if (ws.readyState === WebSocket.OPEN) ws.send(message, SEND_TEXT);
      }, 1);
      return () => clearInterval(sender);
    },
    event: (data) => (data.length >= 2 && data[1] === 0x7c ? { backend: String.fromCharCode(data[0]!), stream: 0 } : null),
  };
}

/**
 * A graphql-ws client (graphql-transport-ws) of test/fixtures/graphql-ws-server.js: connection_init
 * with the token, then, once acknowledged, one `ticks` subscription per stream. Events are the
 * `next` frames; the connection_ack and anything else are not.
 */
export function graphqlWsTraffic(streams: number, token: string): FailoverTraffic {
  let subscribed = false;
  return {
    protocols: ['graphql-transport-ws'],
    streams,
    start(ws) {
      ws.send(JSON.stringify({ type: 'connection_init', payload: { token } }));
      return () => {};
    },
    frame(ws, data) {
      if (subscribed || (JSON.parse(data.toString()) as { type?: string }).type !== 'connection_ack') return;
      subscribed = true; // a second ack (a resume's, not swallowed) counts as a frame after the kill
      for (let i = 0; i < streams; i++) {
        const query = `subscription { ticks(topic: "t${i}") { n servedBy } }`;
        ws.send(JSON.stringify({ id: String(i), type: 'subscribe', payload: { query } }));
      }
    },
    event(data) {
      const m = JSON.parse(data.toString()) as { id?: string; type?: string; payload?: { data?: { ticks?: { servedBy?: string } } } };
      const backend = m.payload?.data?.ticks?.servedBy;
      return m.type === 'next' && backend !== undefined ? { backend, stream: Number(m.id) } : null;
    },
  };
}

/**
 * A socket.io 4 client (Engine.IO 4 over the websocket transport) of
 * test/fixtures/socketio-server.js: on the server's open packet (it may come with the 101) it joins
 * one namespace per stream (/chat, /news) with the token, and answers the server's pings. Events
 * are the `tick` events.
 */
export function socketIoTraffic(streams: number, token: string): FailoverTraffic {
  const namespaces = ['/chat', '/news'].slice(0, streams);
  if (namespaces.length < streams) throw new Error(`socket.io traffic: at most 2 streams (namespaces), not ${streams}`);
  let joined = false;
  return {
    path: '/socket.io/?EIO=4&transport=websocket',
    streams,
    start: () => () => {},
    frame(ws, data) {
      if (data[0] === 0x30 /* '0': open */ && !joined) {
        joined = true; // a second open packet (a resume's, not swallowed) counts as a frame after the kill
        for (const nsp of namespaces) ws.send(`40${nsp},${JSON.stringify({ token })}`);
      } else if (data.length === 1 && data[0] === 0x32 /* '2': ping */) ws.send('3');
    },
    event(data) {
      const text = data.toString();
      if (!text.startsWith('42/')) return null;
      const comma = text.indexOf(',');
      const stream = namespaces.indexOf(text.slice(2, comma));
      const [name, tick] = JSON.parse(text.slice(comma + 1)) as [string, { servedBy?: string }];
      return stream >= 0 && name === 'tick' && tick.servedBy !== undefined ? { backend: tick.servedBy, stream } : null;
    },
  };
}

/**
 * An MQTT 3.1.1 client of test/fixtures/mqtt-server.js (served by aedes, which sends every field of
 * a packet as its own binary frame): CONNECT with the token as password (user "bench", keep-alive off), then,
 * on the CONNACK, one SUBSCRIBE (QoS 0) to t/a, t/b. The frames are fed to an mqtt-packet parser;
 * events are the PUBLISHes, counted on the frame that completes them (the others are fragments).
 */
export function mqttTraffic(streams: number, token: string): FailoverTraffic {
  const topics = ['t/a', 't/b'].slice(0, streams);
  if (topics.length < streams) throw new Error(`mqtt traffic: at most 2 streams (topics), not ${streams}`);
  const parser = mqttPacket.parser({ protocolVersion: 4 });
  /** The packets the latest frame completed (frame() parses, event() reads). */
  let completed: Packet[] = [];
  let broken = false;
  parser.on('packet', (p: Packet) => completed.push(p));
  parser.on('error', () => (broken = true));
  let subscribed = false;
  const generate = (p: Packet) => mqttPacket.generate(p, { protocolVersion: 4 });
  return {
    protocols: ['mqtt'],
    streams,
    start(ws) {
      ws.send(generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: `bench-${process.pid}-${Math.random().toString(36).slice(2, 10)}`, keepalive: 0, username: 'bench', password: Buffer.from(token) }));
      return () => {};
    },
    frame(ws, data) {
      completed = [];
      if (!broken) parser.parse(data);
      if (subscribed || !completed.some((p) => p.cmd === 'connack')) return;
      subscribed = true; // a second CONNACK (a resume's, not swallowed) counts as a frame after the kill
      ws.send(generate({ cmd: 'subscribe', messageId: 1, subscriptions: topics.map((topic) => ({ topic, qos: 0 })) }));
    },
    event() {
      if (completed.length === 0) return broken ? null : 'fragment';
      const p = completed.find((q) => q.cmd === 'publish');
      if (!p || p.cmd !== 'publish') return null;
      const from = (JSON.parse(String(p.payload)) as { from?: string }).from;
      const stream = topics.indexOf(p.topic);
      return from !== undefined && stream >= 0 ? { backend: from, stream } : null;
    },
  };
}

/**
 * A STOMP 1.2 client (subprotocol v12.stomp, one frame per text message) of
 * test/fixtures/stomp-server.js at /stomp: CONNECT with the token as passcode (heart-beats off),
 * then, on the CONNECTED, one SUBSCRIBE per stream (/topic/a, /topic/b). Events are the MESSAGE frames.
 */
export function stompTraffic(streams: number, token: string): FailoverTraffic {
  const topics = ['a', 'b'].slice(0, streams);
  if (topics.length < streams) throw new Error(`stomp traffic: at most 2 streams (topics), not ${streams}`);
  let subscribed = false;
  return {
    path: '/stomp',
    protocols: ['v12.stomp'],
    streams,
    start(ws) {
      ws.send(`CONNECT\naccept-version:1.2\nhost:localhost\nlogin:bench\npasscode:${token}\nheart-beat:0,0\n\n\0`);
      return () => {};
    },
    frame(ws, data) {
      if (subscribed || !data.toString('latin1', 0, 10).startsWith('CONNECTED\n')) return;
      subscribed = true; // a second CONNECTED (a resume's, not swallowed) counts as a frame after the kill
      topics.forEach((t, i) => ws.send(`SUBSCRIBE\nid:${i}\ndestination:/topic/${t}\nack:auto\n\n\0`));
    },
    event(data) {
      const text = data.toString();
      if (!text.startsWith('MESSAGE\n')) return null;
      const body = text.indexOf('\n\n');
      const nul = text.indexOf('\0', body);
      const m = JSON.parse(text.slice(body + 2, nul < 0 ? undefined : nul)) as { from?: string; topic?: string };
      const stream = topics.indexOf(m.topic ?? '');
      return m.from !== undefined && stream >= 0 ? { backend: m.from, stream } : null;
    },
  };
}

// ---- 5b. mass failover: many sessions lose their backend at once --------------------------------

export interface MassFailoverPlan {
  sessions: number;
  /** Each session sends one text message this often (the sessions' sends spread over the period). */
  sendEveryMs: number;
  /** Traffic before the kill: every session has been answered a few times. */
  warmupMs: number;
  /** A session of the killed backend not answered by another one this long after the kill has not failed over. */
  deadlineMs: number;
}

export interface MassFailoverResult {
  sessions: number;
  /** The killed backend's id, and how many sessions it served at the kill. */
  killed: string;
  onKilled: number;
  /** Per session of the killed backend that failed over: kill → the first answer tagged by another backend, ms. */
  gaps: Distribution;
  /** Sessions of the killed backend still open but not answered by another backend by the deadline. */
  notFailedOver: number;
  /** Sessions closed after the kill: of the killed backend, and of the other. */
  closed: number;
  closedElsewhere: number;
  /** The sidecar's CPU from the kill to the last session failed over or closed (to the deadline if one did neither), ms. */
  sidecarCpuMs: number;
  /** Kill → the last session failed over or closed (or the deadline), ms. */
  spanMs: number;
  /** The sidecar's CPU before the kill, % of one core: what the steady traffic costs (part of sidecarCpuMs). */
  steadySidecarCpuPct: number;
}

/**
 * `sessions` clients of a sidecar in front of two tagged echo backends (text replies "<id>|..."),
 * each sending a text message every `sendEveryMs`. After the warm-up, `kill(id)` is called for
 * the backend serving the most sessions; each of its sessions is timed from the kill to its first
 * answer from another backend. The sidecar's CPU (pid `sidecarPid`) is read at the kill and when
 * the last of them has failed over (or been closed).
 */
export async function runMassFailover(url: string, plan: MassFailoverPlan, sidecarPid: number, kill: (backendId: string) => void): Promise<MassFailoverResult> {
  const n = plan.sessions;
  const sockets = await connectMany(url, n, 32);
  const lastBy = new Uint8Array(n);
  /** At the kill: 1 for the sessions of the killed backend. */
  const onKilled = new Uint8Array(n);
  const gaps = new Float64Array(n);
  const closed = new Uint8Array(n);
  let killedBy = 0;
  let killedAt = 0;
  let expected = 0;
  /** Sessions of the killed backend failed over or closed: when all are, the sidecar's CPU is read. */
  let settled = 0;
  let settledAt: { at: number; cpuMs: number } | undefined;
  let onAllSettled: () => void = () => {};
  const allSettled = new Promise<void>((resolve) => (onAllSettled = resolve));
  const settle = (now: number) => {
    if (++settled !== expected) return;
    settledAt = { at: now, cpuMs: readCpuMs(sidecarPid) };
    onAllSettled();
  };
  sockets.forEach((ws, s) => {
    ws.on('close', () => {
      closed[s] = 1;
      if (onKilled[s] === 1 && gaps[s] === 0) settle(performance.now());
    });
    ws.on('message', (data: Buffer) => {
      if (data[1] !== 0x7c) return;
      const by = data[0]!;
      lastBy[s] = by;
      if (onKilled[s] === 0 || by === killedBy || gaps[s] > 0) return;
      const now = performance.now();
      gaps[s] = now - killedAt;
      settle(now);
    });
  });

  const message = Buffer.from('m');
  const stopPacing = paceSessions(sockets, plan.sendEveryMs, (ws) => ws.send(message, SEND_TEXT));
  try {
    // The steady cost: the sidecar's CPU over the second half of the warm-up.
    await sleep(plan.warmupMs / 2);
    const steadyFrom = { at: performance.now(), cpuMs: readCpuMs(sidecarPid) };
    await sleep(plan.warmupMs / 2);
    const counts = new Map<number, number>();
    for (const by of lastBy) if (by !== 0) counts.set(by, (counts.get(by) ?? 0) + 1);
    const [busiest] = [...counts].sort((a, b) => b[1] - a[1])[0] ?? [0];
    if (busiest === 0 || counts.size < 2) throw new Error(`mass failover: after the warm-up the sessions are answered by ${counts.size} backend(s), not 2`);
    for (let s = 0; s < n; s++) if (lastBy[s] === busiest) onKilled[s] = 1;
    expected = counts.get(busiest)!;
    killedBy = busiest;
    killedAt = performance.now();
    const killCpuMs = readCpuMs(sidecarPid);
    const steadySidecarCpuPct = (100 * (killCpuMs - steadyFrom.cpuMs)) / (killedAt - steadyFrom.at);
    kill(String.fromCharCode(busiest));
    await Promise.race([allSettled, sleep(plan.deadlineMs)]);
    const end = settledAt ?? { at: performance.now(), cpuMs: readCpuMs(sidecarPid) };
    let closedOnKilled = 0;
    let closedElsewhere = 0;
    let notFailedOver = 0;
    const measured: number[] = [];
    for (let s = 0; s < n; s++) {
      if (onKilled[s] === 0) closedElsewhere += closed[s]!;
      else if (closed[s] === 1) closedOnKilled++;
      if (onKilled[s] === 0) continue;
      if (gaps[s]! > 0) measured.push(gaps[s]!);
      else if (closed[s] === 0) notFailedOver++;
    }
    return {
      sessions: n,
      killed: String.fromCharCode(busiest),
      onKilled: expected,
      gaps: distributionOf(Float64Array.from(measured), measured.length),
      notFailedOver,
      closed: closedOnKilled,
      closedElsewhere,
      sidecarCpuMs: end.cpuMs - killCpuMs,
      spanMs: end.at - killedAt,
      steadySidecarCpuPct,
    };
  } finally {
    stopPacing();
    // Cut rather than close: 4,000 close handshakes would only slow the bench down.
    for (const ws of sockets) ws.terminate();
  }
}

/**
 * Opens a session every WAIT_STEP_MS, each sending one text message to tagged echo backends, until
 * one is answered by backend `id` (one restarted after a kill: the sidecar's breaker lets a trial
 * session through once its open period is over). Throws after `deadlineMs`.
 */
export async function waitUntilServing(url: string, id: string, deadlineMs: number): Promise<void> {
  const until = performance.now() + deadlineMs;
  while (performance.now() < until) {
    if ((await answeredBy(url)) === id) return;
    await sleep(WAIT_STEP_MS);
  }
  throw new Error(`backend ${id} answered no session through ${url} within ${deadlineMs} ms`);
}

/** The id of the tagged echo backend that answers a new session's first message. */
async function answeredBy(url: string): Promise<string> {
  let answered: (id: string) => void = () => {};
  // '' when no answer comes in time; the timer goes with the answer.
  const answer = new Promise<string>((resolve) => {
    const timer = setTimeout(resolve, CONNECT_TIMEOUT_MS, '');
    answered = (id) => {
      clearTimeout(timer);
      resolve(id);
    };
  });
  const ws = await connectClient(url, [], (_ws, data) => answered(String.fromCharCode(data[0]!)));
  try {
    ws.send('m', SEND_TEXT);
    return await answer;
  } finally {
    ws.terminate();
  }
}

// ---- 6. planned migration under steady traffic --------------------------------------------------

export interface MigrationTrafficPlan {
  sessions: number;
  /** Each session sends one text message this often, whatever comes back. */
  sendEveryMs: number;
  /** The longest the traffic may run: sizes the per-message records (a full session stops sending). */
  maxDurationMs: number;
}

/** What the clients saw over the whole run. */
export interface MigrationTally {
  sent: number;
  /** Messages never answered (by the end of stop()'s wait). */
  lost: number;
  /** Answers received more than once (each extra copy counts). */
  duplicates: number;
  /** First answers that came after the answer to a later message of the same session. */
  outOfOrder: number;
  /** Sessions the sidecar closed (the bench closes none before stop()). */
  closed: number;
}

/** One drain as the traffic saw it. */
export interface DrainWindow {
  /** The drained backend's (one-character) id. */
  backend: string;
  /** performance.now() at the drain request, and when the backend was seen with no session left. */
  from: number;
  until: number;
  /** Indices of the sessions its latest answer came from at `from`. */
  sessions: readonly number[];
}

export interface MigrationTraffic {
  /** Per session, the backend (one-character id) that answered its latest message ('' before any). */
  servedBy(): string[];
  /** Extra latency (ms) of the answered messages these sessions sent in [from, until). */
  extraLatency(sessions: readonly number[], from: number, until: number): Float64Array;
  /**
   * Extra latency (ms) of the messages sent while their session was migrating: held by the sidecar,
   * then delivered to the new backend. Per session, the first answer from another backend than
   * the drained one (message k) tells when the held messages reached the new backend: at about
   * sentAt(k) + extra(k). The messages that backend answered and that were sent more than
   * `transitMs` (a normal round trip's share of the extra latency) before that were held; the
   * margin is at most half the send period, so k itself, when not held, counts only if its round
   * trip took that much longer than usual.
   */
  heldExtraLatency(drain: DrainWindow, transitMs: number): Float64Array;
  /** Stops sending, waits up to `waitMs` for the answers still due, closes every session, and tallies. */
  stop(waitMs: number): Promise<MigrationTally>;
}

/** One session's messages, indexed by sequence number. */
interface SessionRecord {
  ws: WebSocket;
  sent: number;
  sentAt: Float64Array;
  /** Round trip minus the backend's stamped hold (ms), of the first answer. */
  extraMs: Float64Array;
  /** Char code of the backend that first answered (0 = unanswered). */
  by: Uint8Array;
  answers: Uint8Array;
  highest: number;
  lastBy: number;
  closed: boolean;
}

/**
 * `sessions` clients of a sidecar in front of echo backends started with `--tag --answer-delay
 * MIN-MAX --stamp-delay`. Each sends its sequence number as a text message every `sendEveryMs`
 * (the sessions' sends are spread over the period); the answer "<id>|<seq>|<held ms>" says which
 * backend answered and how long it held the message, which is subtracted from the round trip.
 */
export async function startMigrationTraffic(url: string, plan: MigrationTrafficPlan): Promise<MigrationTraffic> {
  // One handshake at a time, so a least-sessions balancer splits the sessions evenly.
  const sockets = await connectMany(url, plan.sessions, 1);
  const capacity = Math.ceil(plan.maxDurationMs / plan.sendEveryMs) + 16;
  const tally = { duplicates: 0, outOfOrder: 0 };
  const records: SessionRecord[] = sockets.map((ws) => ({
    ws,
    sent: 0,
    sentAt: new Float64Array(capacity),
    extraMs: new Float64Array(capacity),
    by: new Uint8Array(capacity),
    answers: new Uint8Array(capacity),
    highest: -1,
    lastBy: 0,
    closed: false,
  }));
  const timers: NodeJS.Timeout[] = [];
  records.forEach((r, i) => {
    r.ws.on('close', () => (r.closed = true));
    r.ws.on('message', (data: Buffer) => {
      const now = performance.now();
      const bar = data.indexOf(0x7c, 2); // "<id>|<seq>|<held>"
      if (data[1] !== 0x7c || bar < 0) return;
      const seq = Number(data.toString('latin1', 2, bar));
      if (!(seq >= 0 && seq < r.sent)) return;
      r.lastBy = data[0];
      if (r.answers[seq] < 255) r.answers[seq]++;
      if (r.answers[seq] > 1) {
        tally.duplicates++;
        return;
      }
      r.by[seq] = data[0];
      r.extraMs[seq] = now - r.sentAt[seq] - Number(data.toString('latin1', bar + 1));
      if (seq < r.highest) tally.outOfOrder++;
      else r.highest = seq;
    });
    const send = () => {
      if (r.closed || r.sent >= capacity) return;
      r.sentAt[r.sent] = performance.now();
      r.ws.send(String(r.sent++), SEND_TEXT);
    };
    timers.push(
      setTimeout(() => {
        send();
        timers.push(setInterval(send, plan.sendEveryMs));
      }, (i * plan.sendEveryMs) / plan.sessions),
    );
  });

  const collect = (sessions: readonly number[], pick: (r: SessionRecord, out: number[]) => void): Float64Array => {
    const out: number[] = [];
    for (const i of sessions) pick(records[i], out);
    return Float64Array.from(out);
  };
  const unanswered = () => records.reduce((sum, r) => sum + r.answers.subarray(0, r.sent).reduce((n, a) => n + (a === 0 ? 1 : 0), 0), 0);

  return {
    servedBy: () => records.map((r) => (r.lastBy ? String.fromCharCode(r.lastBy) : '')),
    extraLatency: (sessions, from, until) =>
      collect(sessions, (r, out) => {
        for (let seq = 0; seq < r.sent; seq++) if (r.by[seq] && r.sentAt[seq] >= from && r.sentAt[seq] < until) out.push(r.extraMs[seq]);
      }),
    heldExtraLatency: (drain, transitMs) =>
      collect(drain.sessions, (r, out) => {
        const old = drain.backend.charCodeAt(0);
        let seq = 0;
        while (seq < r.sent && (r.sentAt[seq] < drain.from || !r.by[seq] || r.by[seq] === old)) seq++;
        if (seq === r.sent) return; // never answered by another backend
        const heldUntil = r.sentAt[seq] + r.extraMs[seq] - Math.min(transitMs, plan.sendEveryMs / 2);
        for (; seq < r.sent && r.sentAt[seq] < heldUntil; seq++) if (r.by[seq] && r.by[seq] !== old) out.push(r.extraMs[seq]);
      }),
    stop: async (waitMs) => {
      for (const t of timers) clearInterval(t);
      const until = performance.now() + waitMs;
      while (performance.now() < until && unanswered() > 0) await sleep(20);
      const result: MigrationTally = {
        sent: records.reduce((sum, r) => sum + r.sent, 0),
        lost: unanswered(),
        duplicates: tally.duplicates,
        outOfOrder: tally.outOfOrder,
        closed: records.filter((r) => r.closed).length,
      };
      await closeAll(sockets);
      return result;
    },
  };
}
