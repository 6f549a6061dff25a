// The least a Node proxy can do for a WebSocket session, as a reference for the benchmark: accept a
// connection, dial the backend, copy bytes both ways, close each side when the other closes. No
// HTTP parsing, no WebSocket framing, no sessions, no logs: what is left is Node's own cost of two
// TCP sockets (net.Socket, its streams, libuv), which every Node proxy pays and the sidecar cannot
// go below. nginx and haproxy show what the kernel costs; this shows what Node adds to it.
// As a process: node dist/tools/node-pipe.js --port P --backend-port B. Prints {"event":"listening"}.
import net from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { port: { type: 'string' }, 'backend-port': { type: 'string' } } });
const backendPort = Number(values['backend-port']);

const server = net.createServer({ noDelay: true }, (client) => {
  const backend = net.connect({ port: backendPort, host: '127.0.0.1', noDelay: true });
  client.pipe(backend);
  backend.pipe(client);
  // pipe() ends the other side on 'end'; an error or a close without one destroys it.
  client.on('error', () => backend.destroy());
  backend.on('error', () => client.destroy());
  client.on('close', () => backend.destroy());
  backend.on('close', () => client.destroy());
});
server.listen(Number(values.port ?? 0), '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ event: 'listening', port: (server.address() as net.AddressInfo).port })}\n`);
});
