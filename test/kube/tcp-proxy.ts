// A TCP proxy a test can pause: a network partition as a client sees one. Paused, it forwards no
// byte either way and holds every connection open (new ones are accepted and held too), so the
// client's requests hang rather than fail; resumed, the held bytes flow on.
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';

export class PausableTcpProxy {
  private paused = false;
  private readonly sockets = new Set<Socket>();

  private constructor(private readonly server: Server) {}

  static async start(target: { host: string; port: number }): Promise<PausableTcpProxy> {
    const proxy: PausableTcpProxy = new PausableTcpProxy(createServer((client) => proxy.join(client, connect(target.port, target.host))));
    await new Promise<void>((resolve, reject) => {
      proxy.server.once('error', reject);
      proxy.server.listen(0, '127.0.0.1', resolve);
    });
    return proxy;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  /** Stops forwarding; connections stay open, silent. */
  pause(): void {
    this.paused = true;
    for (const s of this.sockets) s.pause();
  }

  resume(): void {
    this.paused = false;
    for (const s of this.sockets) s.resume();
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise((r) => this.server.close(r));
  }

  private join(a: Socket, b: Socket): void {
    for (const [from, to] of [[a, b], [b, a]] as const) {
      this.sockets.add(from);
      if (this.paused) from.pause();
      from.on('data', (chunk: Buffer) => {
        if (!to.write(chunk)) from.pause();
      });
      to.on('drain', () => {
        if (!this.paused) from.resume();
      });
      from.on('close', () => {
        this.sockets.delete(from);
        to.destroy();
      });
      from.on('error', () => to.destroy());
    }
  }
}
