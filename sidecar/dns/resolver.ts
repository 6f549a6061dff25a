// The I/O around dns/plan.ts: a node:dns Resolver (dns.servers, or the system's resolv.conf), one
// timer per name, metrics and logs. The sidecar reads expand() and is told when it changed; the
// backend pool's normal apply path adds new addresses and drains vanished ones.
import { Resolver } from 'node:dns/promises';
import type { BackendSpec } from '../../common/config/schema.js';
import type { Logger } from '../../common/logger.js';
import type { SidecarMetrics } from '../metrics.js';
import { expandBackends, initialState, namesOf, stepName, type DnsRecord, type DnsSettings, type NameState, type Resolution } from './plan.js';

/** "No such name" and "no record of this type": an answer, not a failure to get one. */
const NO_ADDRESS = new Set(['ENODATA', 'ENOTFOUND']);

interface Name {
  state: NameState;
  timer: NodeJS.Timeout | null;
}

export class DnsExpander {
  private readonly names = new Map<string, Name>();
  private specs: readonly BackendSpec[] = [];
  private settings: DnsSettings | null = null;
  private resolver = new Resolver();
  private running = false;

  constructor(
    /** Called when a name's addresses changed: expand() has a new list. */
    private readonly onChange: () => void,
    private readonly log: Logger,
    private readonly metrics: SidecarMetrics,
  ) {}

  /** The configured backends with every name expanded to its last good answer's addresses. */
  expand(): BackendSpec[] {
    const answers = new Map([...this.names].map(([name, n]) => [name, n.state.addresses]));
    return expandBackends(this.specs, answers, this.settings?.resolve ?? false);
  }

  /** Takes the file's backends and dns settings: names new to it are resolved (once running), gone ones forgotten. */
  configure(specs: readonly BackendSpec[], dns: DnsSettings): void {
    const prev = this.settings;
    if (!prev || prev.timeout !== dns.timeout || prev.servers.join() !== dns.servers.join()) {
      this.resolver = new Resolver({ timeout: dns.timeout, tries: 1 });
      if (dns.servers.length > 0) this.resolver.setServers(dns.servers);
    }
    this.specs = specs;
    this.settings = dns;
    const wanted = new Set(namesOf(specs, dns.resolve));
    for (const [name, n] of this.names) {
      if (wanted.has(name)) continue;
      if (n.timer) clearTimeout(n.timer);
      this.names.delete(name);
      this.metrics.forgetDnsName(name);
    }
    for (const name of wanted) {
      if (this.names.has(name)) continue;
      this.names.set(name, { state: initialState(Date.now()), timer: null });
      this.metrics.dnsNameAdded(name);
      if (this.running) void this.resolve(name);
    }
  }

  /** Resolves every name once (the first backends), then keeps them resolved. */
  async start(): Promise<void> {
    this.running = true;
    await Promise.all([...this.names.keys()].map((name) => this.resolve(name)));
  }

  /** No more resolutions (shutdown, or the admin API owns the backend set). */
  stop(): void {
    this.running = false;
    for (const n of this.names.values()) {
      if (n.timer) clearTimeout(n.timer);
      n.timer = null;
    }
    this.resolver.cancel();
  }

  private async resolve(name: string): Promise<void> {
    const result = await lookup(this.resolver, name);
    const n = this.names.get(name);
    if (!n || !this.running || !this.settings) return; // forgotten or stopped meanwhile
    const now = Date.now();
    const step = stepName(n.state, result, now, this.settings);
    n.state = step.state;
    const kept = step.state.addresses;
    this.metrics.resolved(name, !result.ok ? 'failure' : result.records.length === 0 ? 'empty' : 'success', kept?.length ?? null);
    if (step.logFailure) {
      const reason = result.ok ? 'no address' : result.reason;
      if (kept) this.log.warn({ name, reason, addresses: kept }, 'dns resolution failed; keeping the last good answer');
      else this.log.warn({ name, reason }, 'dns resolution failed; the name has no backends yet');
    }
    if (step.recovered) this.log.info({ name, addresses: kept }, 'dns resolution recovered');
    if (step.changed) {
      this.log.info({ name, addresses: kept }, 'dns addresses changed');
      this.onChange();
    }
    n.timer = setTimeout(() => {
      n.timer = null;
      void this.resolve(name);
    }, step.state.nextAt - now);
  }
}

/**
 * A and AAAA together, with TTLs. Any family failing (other than "no such record") fails the
 * whole: a half answer would drain the other family's backends on a DNS error.
 */
async function lookup(resolver: Resolver, name: string): Promise<Resolution> {
  const answers = await Promise.allSettled([resolver.resolve4(name, { ttl: true }), resolver.resolve6(name, { ttl: true })]);
  const records: DnsRecord[] = [];
  for (const a of answers) {
    if (a.status === 'fulfilled') records.push(...a.value);
    else if (!NO_ADDRESS.has((a.reason as NodeJS.ErrnoException).code ?? '')) return { ok: false, reason: (a.reason as Error).message };
  }
  return { ok: true, records };
}
