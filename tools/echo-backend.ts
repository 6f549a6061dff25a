// A WebSocket echo backend for the demo, the tests and the benchmark.
// As a process: node dist/tools/echo-backend.js --port 9001 [--host 127.0.0.1] [--id a] [--tag]
//   [--handshake-delay MS] [--protocol NAME] [--report] [--answer-frames FILE] [--answer-delay MIN-MAX [--stamp-delay]]
// It prints one JSON line {"event":"listening",...} when ready; with --report it also prints one
// line per connection (path, headers, protocol) so a test can see what the sidecar sent.
// A text message "__close CODE [REASON]" makes it close that connection with CODE (tests use it to
// play a backend that restarts or ends a session; CODE 0 closes without a code).
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { WebSocketServer, type WebSocket } from 'ws';

const CLOSE_COMMAND = Buffer.from('__close ');

export interface EchoBackendOptions {
  host?: string;
  port?: number;
  id?: string;
  /** Prefix every text reply with "<id>|" so a client can tell which backend answered. */
  tag?: boolean;
  /**
   * Answer each message with a given frame instead of an echo: the k-th message of a connection
   * gets `open[k]`, then `steady[(k - open.length) % steady.length]` (the benchmark's codec
   * traffic: a protocol's frames in each direction, e.g. OCPP CALLs answered by CALLRESULTs).
   */
  answerFrames?: AnswerFrames;
  /**
   * Answer each message after a random delay in [min, max] ms, in order per connection (a backend
   * doing async work: a database call, a queue). Unset = answer at once.
   */
  answerDelayMs?: readonly [number, number];
  /**
   * With answerDelayMs: append "|<ms>" to each text reply, the time it was held here (from its
   * arrival to its answer, 3 decimals), so a client can subtract the backend's own delay.
   */
  stampDelay?: boolean;
  /** Hold each handshake this long before answering (a slow backend). */
  handshakeDelayMs?: number;
  /** Subprotocol to pick when offered; default: the first one offered. */
  protocol?: string;
  perMessageDeflate?: boolean;
  onConnection?: (info: ConnectionInfo, socket: WebSocket) => void;
}

export interface AnswerFrames {
  binary: boolean;
  open: readonly Buffer[];
  steady: readonly Buffer[];
}

/** An --answer-frames file: JSON {"binary": bool, "open": [base64…], "steady": [base64…]}. */
export function readAnswerFrames(file: string): AnswerFrames {
  const raw = JSON.parse(readFileSync(file, 'utf8')) as { binary?: unknown; open?: unknown; steady?: unknown };
  const frames = (list: unknown, key: string) => {
    if (!Array.isArray(list) || !list.every((f) => typeof f === 'string')) throw new Error(`--answer-frames ${file}: "${key}" must be an array of base64 strings`);
    return list.map((f: string) => Buffer.from(f, 'base64'));
  };
  const steady = frames(raw.steady, 'steady');
  if (steady.length === 0) throw new Error(`--answer-frames ${file}: "steady" is empty`);
  return { binary: raw.binary === true, open: frames(raw.open ?? [], 'open'), steady };
}

export interface ConnectionInfo {
  backend: string;
  path: string;
  headers: IncomingMessage['headers'];
  protocol: string;
  extensions: string;
}

export interface EchoBackend {
  readonly port: number;
  readonly url: string;
  readonly clients: Set<WebSocket>;
  close(): Promise<void>;
}

export async function startEchoBackend(opts: EchoBackendOptions = {}): Promise<EchoBackend> {
  const id = opts.id ?? 'echo';
  const tagPrefix = Buffer.from(`${id}|`);
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end(`echo backend ${id}\n`);
  });
  const wss = new WebSocketServer({
    noServer: true,
    perMessageDeflate: opts.perMessageDeflate ?? false,
    maxPayload: 256 * 1024 * 1024,
    handleProtocols: (offered) => {
      if (opts.protocol) return offered.has(opts.protocol) ? opts.protocol : false;
      const first = offered.values().next();
      return first.done ? false : first.value;
    },
  });
  server.on('upgrade', (req, socket, head) => {
    const accept = () => wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
    if (opts.handshakeDelayMs) setTimeout(accept, opts.handshakeDelayMs);
    else accept();
  });
  wss.on('connection', (ws: WebSocket, req: IncomingMessage) => {
    ws.on('error', () => {});
    let answered = 0;
    const answer = (data: Buffer, isBinary: boolean) => {
      const frames = opts.answerFrames;
      if (frames) {
        const k = answered++;
        ws.send(k < frames.open.length ? frames.open[k]! : frames.steady[(k - frames.open.length) % frames.steady.length]!, { binary: frames.binary });
      } else if (opts.tag && !isBinary) ws.send(Buffer.concat([tagPrefix, data]), { binary: false });
      else ws.send(data, { binary: isBinary });
    };
    // Delayed answers keep their order: each is due no earlier than the one before it, and one
    // timer answers them from a queue (timers due at the same time may fire in any order).
    const due: { data: Buffer; isBinary: boolean; dueAt: number; arrivedAt: number }[] = [];
    let lastDueAt = 0;
    let timer: NodeJS.Timeout | null = null;
    const answerDue = () => {
      timer = null;
      const now = Date.now();
      while (due.length > 0 && due[0]!.dueAt <= now) {
        const { data, isBinary, arrivedAt } = due.shift()!;
        // Like any server, it answers only while the connection is open: a close handshake that
        // completed first loses the answer.
        if (ws.readyState !== ws.OPEN) continue;
        if (opts.stampDelay && !isBinary) answer(Buffer.concat([data, Buffer.from(`|${(performance.now() - arrivedAt).toFixed(3)}`)]), false);
        else answer(data, isBinary);
      }
      if (due.length > 0) timer = setTimeout(answerDue, due[0]!.dueAt - now);
    };
    ws.on('close', () => {
      if (timer) clearTimeout(timer);
      due.length = 0;
    });
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (!isBinary && data[0] === 0x5f && data.length < 200 && CLOSE_COMMAND.compare(data, 0, 8) === 0) {
        const [code, ...reason] = data.subarray(8).toString().split(' ');
        if (Number(code) === 0) ws.close();
        else ws.close(Number(code), reason.join(' '));
        return;
      }
      const delay = opts.answerDelayMs;
      if (!delay) return answer(data, isBinary);
      const now = Date.now();
      lastDueAt = Math.max(lastDueAt, now + delay[0] + Math.random() * (delay[1] - delay[0]));
      due.push({ data, isBinary, dueAt: lastDueAt, arrivedAt: performance.now() });
      timer ??= setTimeout(answerDue, lastDueAt - now);
    });
    opts.onConnection?.(
      { backend: id, path: req.url ?? '', headers: req.headers, protocol: ws.protocol, extensions: ws.extensions },
      ws,
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    port,
    url: `ws://${opts.host ?? '127.0.0.1'}:${port}`,
    clients: wss.clients,
    close: () => stopWsServer(server, wss),
  };
}

/** Stops an HTTP server and its WebSocket server, cutting every connection. */
export function stopWsServer(server: Server, wss: WebSocketServer): Promise<void> {
  return new Promise<void>((resolve) => {
    for (const c of wss.clients) c.terminate();
    wss.close();
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      host: { type: 'string', default: '127.0.0.1' },
      port: { type: 'string', default: '0' },
      id: { type: 'string', default: 'echo' },
      tag: { type: 'boolean', default: false },
      'handshake-delay': { type: 'string', default: '0' },
      protocol: { type: 'string' },
      report: { type: 'boolean', default: false },
      'answer-frames': { type: 'string' },
      'answer-delay': { type: 'string' },
      'stamp-delay': { type: 'boolean', default: false },
    },
  });
  const backend = await startEchoBackend({
    host: values.host,
    port: Number(values.port),
    id: values.id,
    tag: values.tag,
    handshakeDelayMs: Number(values['handshake-delay']),
    protocol: values.protocol,
    answerFrames: values['answer-frames'] === undefined ? undefined : readAnswerFrames(values['answer-frames']),
    answerDelayMs: values['answer-delay'] === undefined ? undefined : delayRange(values['answer-delay']),
    stampDelay: values['stamp-delay'],
    onConnection: values.report ? (info) => process.stdout.write(`${JSON.stringify({ event: 'connection', ...info })}\n`) : undefined,
  });
  process.stdout.write(`${JSON.stringify({ event: 'listening', id: values.id, port: backend.port, pid: process.pid })}\n`);
  const stop = () => void backend.close().then(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

/** "MIN-MAX" in ms, e.g. "1-200". */
function delayRange(text: string): [number, number] {
  const m = /^(\d+)-(\d+)$/.exec(text);
  if (!m || Number(m[1]) > Number(m[2])) throw new Error(`--answer-delay: expected MIN-MAX in ms (e.g. 1-200), got "${text}"`);
  return [Number(m[1]), Number(m[2])];
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) void main();
