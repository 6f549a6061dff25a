import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { WebSocket } from 'ws';
import { parseConfig } from './config/load.js';
import { createLogger } from '../common/logger.js';
import { Sidecar } from './sidecar.js';

const echoBackendScript = fileURLToPath(new URL('../tools/echo-backend.js', import.meta.url));

interface DemoBackend {
  id: string;
  port: number;
  process: ChildProcess | null;
}

function startBackend(b: DemoBackend): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [echoBackendScript, '--port', String(b.port), '--id', b.id, '--tag'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    b.process = child;
    child.stdout.once('data', (line: Buffer) => {
      const ready = JSON.parse(line.toString().split('\n')[0]) as { port: number };
      b.port = ready.port;
      resolve();
    });
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      if (b.process !== child) return;
      b.process = null;
      say(`backend ${b.id} (pid ${child.pid}) exited (${signal ?? code}); restarting it in 5 s`);
      setTimeout(() => void startBackend(b).then(() => say(`backend ${b.id} is back: pid ${b.process?.pid}`)), 5000).unref();
    });
  });
}

function say(text: string): void {
  process.stdout.write(`[demo] ${text}\n`);
}

/**
 * `baton demo`: two echo backends as separate processes, a sidecar in front of them, and a client
 * that talks through it once a second, so killing a backend shows the session carrying on.
 */
export async function runDemo(port: number): Promise<void> {
  const backends: DemoBackend[] = [
    { id: 'backend-a', port: 0, process: null },
    { id: 'backend-b', port: 0, process: null },
  ];
  await Promise.all(backends.map(startBackend));
  const yaml = [
    `listen: { address: "127.0.0.1:${port}" }`,
    'admin: { address: "127.0.0.1:0" }',
    'logLevel: warn',
    'session: { pingInterval: 2s, pongTimeout: 1s }',
    'backends:',
    ...backends.map((b) => `  - { id: ${b.id}, url: "ws://127.0.0.1:${b.port}" }`),
  ].join('\n');
  const { config } = parseConfig(yaml, {}, 'demo');
  const sidecar = new Sidecar(config, createLogger(config.logLevel, 'sidecar'));
  const address = await sidecar.start();
  const url = `ws://127.0.0.1:${address.port}/demo`;
  say(`sidecar listening on ${url}; admin API on http://127.0.0.1:${sidecar.adminAddress?.port} (try /v1/backends, /metrics)`);
  for (const b of backends) say(`${b.id}: ws://127.0.0.1:${b.port} (pid ${b.process?.pid})`);
  say('a client now sends a message every second; the answer says which backend echoed it.');
  say(`kill the backend it is on (kill -9 <pid>) and watch the session carry on. Connect your own: npx wscat -c ${url}`);

  const client = new WebSocket(url, { perMessageDeflate: false });
  let n = 0;
  client.on('open', () => {
    const timer = setInterval(() => client.send(`hello ${++n}`), 1000);
    client.on('close', () => clearInterval(timer));
  });
  client.on('message', (data) => {
    const [backend, text] = data.toString().split('|');
    say(`client <- "${text}" answered by ${backend} (session open, ${sidecar.sessions.size} through the sidecar)`);
  });
  client.on('close', (code, reason) => say(`client closed: ${code} ${reason.toString()}`));
  client.on('error', (err) => say(`client error: ${err.message}`));

  const stop = () => {
    client.close(1000);
    for (const b of backends) {
      const child = b.process;
      b.process = null;
      child?.kill('SIGTERM');
    }
    void sidecar.stop(0).then(() => process.exit(0));
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
