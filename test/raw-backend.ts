// A WebSocket backend on a bare TCP socket, for tests that need bytes `ws` would never send: it
// reads each upgrade request's head and lets the test answer with whatever it likes.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import net from 'node:net';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/** Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 §4.2.2). */
export const acceptFor = (key: string): string => createHash('sha1').update(key + GUID).digest('base64');

/** An upgrade request as a backend received it: its request line and header lines, in order. */
export interface SeenRequest {
  line: string;
  headers: [name: string, value: string][];
  /** The value of the one header with this name (case-insensitive); undefined if absent. */
  get(name: string): string | undefined;
}

export interface RawBackend {
  url: string;
  requests: SeenRequest[];
  /** Takes no more connections; the open ones go on. */
  stopListening(): void;
  close(): void;
}

/** A TCP server that reads each upgrade request's head, then lets `answer` write any bytes it likes. */
export async function rawBackend(answer: (socket: net.Socket, req: SeenRequest) => unknown): Promise<RawBackend> {
  const requests: SeenRequest[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.setNoDelay(true);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let received = '';
    const onData = (chunk: Buffer) => {
      received += chunk.toString('latin1');
      const end = received.indexOf('\r\n\r\n');
      if (end === -1) return;
      socket.off('data', onData);
      const [line, ...rest] = received.slice(0, end).split('\r\n');
      const headers = rest.map((h): [string, string] => [h.slice(0, h.indexOf(':')), h.slice(h.indexOf(':') + 1).trim()]);
      const req: SeenRequest = {
        line: line!,
        headers,
        get: (name) => {
          const found = headers.filter(([n]) => n.toLowerCase() === name);
          assert.ok(found.length <= 1, `one ${name} header, not ${found.length}`);
          return found[0]?.[1];
        },
      };
      requests.push(req);
      void answer(socket, req);
    };
    socket.on('data', onData);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `ws://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    requests,
    stopListening: () => void server.close(),
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

/** A backend's 101 for this request; `accept`/`upgrade` override the right values, `extra` adds lines. */
export function switching(req: SeenRequest, { accept = acceptFor(req.get('sec-websocket-key')!), upgrade = 'websocket', extra = [] as string[] } = {}): string {
  const upgradeLine = upgrade === '' ? '' : `Upgrade: ${upgrade}\r\n`;
  return `HTTP/1.1 101 Switching Protocols\r\n${upgradeLine}Connection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n${extra.map((l) => `${l}\r\n`).join('')}\r\n`;
}
