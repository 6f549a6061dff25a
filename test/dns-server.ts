// A DNS server on 127.0.0.1 (UDP, dns-packet) whose answers a test sets: A/AAAA records with a TTL
// per name, or a failure (SERVFAIL, or no answer at all so the client times out). Counts queries.
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import dnsPacket from 'dns-packet';

export type DnsFailure = 'servfail' | 'silent';

export class TestDnsServer {
  private readonly zones = new Map<string, { addresses: string[]; ttl: number }>();
  /** Set: every query gets this instead of an answer. */
  failure: DnsFailure | null = null;
  /** Every query received, in order. */
  readonly queries: { name: string; type: string; at: number }[] = [];

  private constructor(
    private readonly socket: Socket,
    /** "127.0.0.1:port", for dns.servers. */
    readonly address: string,
  ) {
    socket.on('message', (msg, from) => this.answer(msg, from));
  }

  static async start(): Promise<TestDnsServer> {
    const socket = createSocket('udp4');
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
    return new TestDnsServer(socket, `127.0.0.1:${socket.address().port}`);
  }

  /** What `name` resolves to from now on (IPv4 and IPv6 addresses mixed), with this TTL in seconds. */
  set(name: string, addresses: string[], ttl = 30): void {
    this.zones.set(name, { addresses, ttl });
  }

  /** When `name` was asked for, by one record type (A by default). */
  queryTimes(name: string, type = 'A'): number[] {
    return this.queries.filter((q) => q.name === name && q.type === type).map((q) => q.at);
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.socket.close(() => resolve()));
  }

  private answer(msg: Buffer, from: RemoteInfo): void {
    const query = dnsPacket.decode(msg);
    const question = query.questions?.[0];
    if (!question) return;
    this.queries.push({ name: question.name, type: question.type, at: Date.now() });
    if (this.failure === 'silent') return;
    const zone = this.zones.get(question.name);
    const family = question.type === 'A' ? 4 : question.type === 'AAAA' ? 6 : 0;
    const answers = (zone?.addresses ?? [])
      .filter((a) => (a.includes(':') ? 6 : 4) === family)
      .map((data) => ({ type: question.type as 'A' | 'AAAA', name: question.name, ttl: zone!.ttl, data }));
    const rcode = this.failure === 'servfail' ? 'SERVFAIL' : zone ? 'NOERROR' : 'NXDOMAIN';
    const response = dnsPacket.encode({
      type: 'response',
      id: query.id,
      flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | rcodeFlag(rcode),
      questions: [question],
      answers: rcode === 'NOERROR' ? answers : [],
    });
    this.socket.send(response, from.port, from.address);
  }
}

function rcodeFlag(rcode: 'NOERROR' | 'SERVFAIL' | 'NXDOMAIN'): number {
  return { NOERROR: 0, SERVFAIL: 2, NXDOMAIN: 3 }[rcode];
}
