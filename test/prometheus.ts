// Prometheus's own tools for the metrics tests: promtool and a real server, from Debian's
// `prometheus` package, installed on first use when missing.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './helpers.js';

function onPath(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Makes sure `commands` exist: apt-get install `pkg` (as root, once) when one is missing. */
export function ensureDebianPackage(pkg: string, commands: string[]): void {
  if (commands.every(onPath)) return;
  if (process.getuid?.() !== 0) {
    throw new Error(`${commands.join('/')} missing and not root: run \`apt-get install ${pkg}\` first`);
  }
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
  execFileSync('apt-get', ['install', '-y', '-qq', pkg], { stdio: 'inherit', env });
}

/** Makes sure promtool and prometheus exist (Debian's `prometheus`). */
export function ensurePrometheus(): void {
  ensureDebianPackage('prometheus', ['promtool', 'prometheus']);
}

/** `promtool check metrics` on exposition text; returns its complaints ('' when clean). */
export function promtoolCheckMetrics(text: string): string {
  try {
    execFileSync('promtool', ['check', 'metrics'], { input: text, stdio: ['pipe', 'pipe', 'pipe'] });
    return '';
  } catch (err) {
    const e = err as { stdout?: Buffer; stderr?: Buffer };
    return `${e.stdout?.toString() ?? ''}${e.stderr?.toString() ?? ''}`.trim() || String(err);
  }
}

/** A Prometheus server on loopback with its own config and data dir, scraping `target` every 200 ms. */
export class PrometheusServer {
  private constructor(
    private readonly child: ChildProcess,
    private readonly dir: string,
    readonly url: string,
  ) {}

  static async start(target: string, metricsPath = '/metrics'): Promise<PrometheusServer> {
    const dir = mkdtempSync(join(tmpdir(), 'baton-prom-'));
    const port = await freePort();
    writeFileSync(
      join(dir, 'prometheus.yml'),
      `global:\n  scrape_interval: 200ms\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: baton\n    metrics_path: ${metricsPath}\n    static_configs:\n      - targets: ["${target}"]\n`,
    );
    const child = spawn(
      'prometheus',
      [
        `--config.file=${join(dir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
        '--web.enable-lifecycle',
      ],
      { stdio: 'ignore' },
    );
    const server = new PrometheusServer(child, dir, `http://127.0.0.1:${port}`);
    let ready = false;
    const deadline = Date.now() + 20000;
    while (!ready && Date.now() < deadline && child.exitCode === null) {
      ready = await fetch(`${server.url}/-/ready`).then((r) => r.ok, () => false);
      if (!ready) await new Promise((r) => setTimeout(r, 100));
    }
    if (!ready) {
      await server.stop();
      throw new Error('prometheus did not become ready');
    }
    return server;
  }

  /** Instant query; returns the result vector. */
  async query(promql: string): Promise<{ metric: Record<string, string>; value: [number, string] }[]> {
    const res = await fetch(`${this.url}/api/v1/query?query=${encodeURIComponent(promql)}`);
    const body = (await res.json()) as { status: string; data: { result: { metric: Record<string, string>; value: [number, string] }[] } };
    if (body.status !== 'success') throw new Error(`query failed: ${JSON.stringify(body)}`);
    return body.data.result;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode === null) {
      const exited = new Promise((r) => this.child.once('exit', r));
      this.child.kill('SIGTERM');
      await exited;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
