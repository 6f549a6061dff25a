// The sidecar and the demo as a user runs them: `baton ...` processes, config files, signals.
import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdtempSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { BackendProcess, freePort, killAllBackends, TestClient, waitFor } from './helpers.js';

const baton = fileURLToPath(new URL('../../bin/baton.js', import.meta.url));

class BatonProcess {
  readonly lines: string[] = [];
  stderr = '';
  exit: { code: number | null; signal: string | null } | null = null;
  readonly child: ChildProcessWithoutNullStreams;

  constructor(args: string[], env: NodeJS.ProcessEnv = {}) {
    this.child = spawn(process.execPath, [baton, ...args], { env: { PATH: process.env.PATH, BATON_ADMIN_ADDRESS: '127.0.0.1:0', ...env } });
    let pending = '';
    this.child.stdout.on('data', (d: Buffer) => {
      pending += d.toString();
      const parts = pending.split('\n');
      pending = parts.pop()!;
      this.lines.push(...parts);
    });
    this.child.stderr.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.child.on('exit', (code, signal) => (this.exit = { code, signal }));
    running.add(this);
  }

  async waitForLine(re: RegExp, what: string, timeoutMs = 5000): Promise<string> {
    await waitFor(() => this.lines.some((l) => re.test(l)) || this.exit !== null, what, timeoutMs);
    const line = this.lines.find((l) => re.test(l));
    if (!line) throw new Error(`process exited (${JSON.stringify(this.exit)}) before: ${what}\n${this.stderr}`);
    return line;
  }

  async waitForExit(timeoutMs = 10000): Promise<{ code: number | null; signal: string | null }> {
    await waitFor(() => this.exit !== null, 'process exit', timeoutMs);
    running.delete(this);
    return this.exit!;
  }
}

const running = new Set<BatonProcess>();

describe('baton processes', () => {
  const dir = mkdtempSync(join(tmpdir(), 'baton-test-'));
  after(async () => {
    for (const p of running) p.child.kill('SIGKILL');
    await killAllBackends();
  });

  test('an invalid config exits 2 and names every bad key and value; nothing listens', async () => {
    const port = await freePort();
    const file = join(dir, 'bad.yaml');
    writeFileSync(file, `listen:\n  address: "127.0.0.1:${port}"\nfailover:\n  deadline: 30 parsecs\nbackends:\n  - url: http://x:1\n`);
    const p = new BatonProcess(['sidecar', '--config', file], { BATON_SESSION_PING_INTERVAL: 'often' });
    assert.equal((await p.waitForExit()).code, 2);
    assert.match(p.stderr, /failover\.deadline: "30 parsecs" is not a duration/);
    assert.match(p.stderr, /BATON_SESSION_PING_INTERVAL.*"often"/);
    assert.match(p.stderr, /backends\[0\]\.url.*http:\/\/x:1/);
    await assert.rejects(TestClient.connect(`ws://127.0.0.1:${port}/`));
  });

  test('reload: a new file adds a backend and removes the old one by migration; a bad file is rejected and the old config kept', async () => {
    const a = await BackendProcess.start('a');
    const b = await BackendProcess.start('b');
    const port = await freePort();
    const file = join(dir, 'reload.yaml');
    const write = (text: string) => {
      // Replace atomically, as a ConfigMap update does.
      writeFileSync(`${file}.tmp`, text);
      renameSync(`${file}.tmp`, file);
    };
    const head = `listen:\n  address: "127.0.0.1:${port}"\nlogLevel: info\n`;
    write(`${head}backends:\n  - { id: a, url: "${a.url}" }\n`);
    const p = new BatonProcess(['sidecar', '--config', file]);
    await p.waitForLine(/sidecar listening/, 'listening');
    const c = await TestClient.connect(`ws://127.0.0.1:${port}/r`);
    c.ws.send('one');
    await waitFor(() => c.texts().includes('a|one'), 'echo from a');

    write(`${head}backends:\n  - { id: b, url: "${b.url}" }\n`);
    await p.waitForLine(/"msg":"migration complete"/, 'session migrated off the removed backend');
    c.ws.send('two');
    await waitFor(() => c.texts().includes('b|two'), 'echo from b after the reload');
    assert.equal(c.closed, null, 'the client stayed connected through the reload');

    write(`${head}backends:\n  - { id: b, url: "ftp://nope" }\n`);
    await p.waitForLine(/config reload rejected/, 'bad reload rejected');
    assert.match(p.lines.find((l) => l.includes('config reload rejected'))!, /backends\[0\]\.url/);
    c.ws.send('three');
    await waitFor(() => c.texts().includes('b|three'), 'still served by the old config');

    write(`${head}backends:\n  - { id: a, url: "${a.url}" }\n  - { id: b, url: "${b.url}" }\n`);
    await p.waitForLine(/"added":\["a"\]/, 'backend a added');
    // SIGHUP re-reads the file even when it did not change.
    const reloads = () => p.lines.filter((l) => l.includes('"msg":"config reloaded"')).length;
    const before = reloads();
    p.child.kill('SIGHUP');
    await waitFor(() => reloads() === before + 1, 'SIGHUP reload');
    c.close();
    p.child.kill('SIGTERM');
    assert.equal((await p.waitForExit()).code, 0);
  });

  test('SIGTERM: no new sessions, open ones get the grace period, then 1001; exit 0', async () => {
    const a = await BackendProcess.start('a');
    const port = await freePort();
    const p = new BatonProcess(['sidecar'], {
      BATON_LISTEN_ADDRESS: `127.0.0.1:${port}`,
      BATON_BACKENDS: `a=${a.url}`,
      BATON_SHUTDOWN_GRACE: '700ms',
      BATON_LOG_LEVEL: 'info',
    });
    await p.waitForLine(/sidecar listening/, 'listening');
    const c = await TestClient.connect(`ws://127.0.0.1:${port}/t`);
    p.child.kill('SIGTERM');
    await p.waitForLine(/no new sessions/, 'stopped accepting');
    await assert.rejects(TestClient.connect(`ws://127.0.0.1:${port}/late`), 'new connections refused');
    c.ws.send('in grace');
    await waitFor(() => c.texts().includes('a|in grace'), 'served during the grace period');
    const closed = await c.waitForClose(3000);
    assert.equal(closed.code, 1001);
    assert.deepEqual(await p.waitForExit(), { code: 0, signal: null });
  });


  test('logs at info: a session writes one line, at its end, with all of it; a failover one line, when it completes', async () => {
    const a = await BackendProcess.start('a');
    const b = await BackendProcess.start('b');
    const port = await freePort();
    const p = new BatonProcess(['sidecar'], {
      BATON_LISTEN_ADDRESS: `127.0.0.1:${port}`,
      BATON_BACKENDS: `a=${a.url},b=${b.url}`,
      BATON_LOG_LEVEL: 'info',
    });
    await p.waitForLine(/sidecar listening/, 'listening');
    const c = await TestClient.connect(`ws://127.0.0.1:${port}/room/7?x=1`);
    c.ws.send('one');
    await waitFor(() => c.texts().some((t) => t.endsWith('|one')), 'first answer');
    const first = c.texts()[0]!.split('|')[0]!;
    const [lost, other] = first === 'a' ? [a, b] : [b, a];
    await lost.kill();
    c.ws.send('two');
    await waitFor(() => c.texts().includes(`${other.id}|two`), 'answered by the other backend');
    c.close();
    const closedLine = JSON.parse(await p.waitForLine(/"msg":"session closed"/, 'the session closed line')) as Record<string, unknown>;
    const parsed = p.lines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
    const about = parsed.filter((l) => l.session === closedLine.session);
    assert.deepEqual(
      about.map((l) => l.msg),
      ['failover complete', 'session closed'],
      'one line per failover and one per session, nothing when it opens',
    );
    const failover = about[0]!;
    assert.equal(failover.level, 'info');
    assert.equal(failover.from, lost.id);
    assert.equal(failover.backend, other.id);
    assert.equal(failover.reason, 'error');
    assert.equal(typeof failover.gapMs, 'number');
    assert.equal(closedLine.level, 'info');
    assert.equal(closedLine.reason, 'client-closed');
    assert.equal(closedLine.backend, other.id);
    assert.equal(closedLine.path, '/room/7?x=1');
    assert.equal(closedLine.remoteAddress, '127.0.0.1');
    assert.equal(closedLine.failovers, 1);
    assert.ok(typeof closedLine.durationMs === 'number' && closedLine.durationMs >= 0, `durationMs ${String(closedLine.durationMs)}`);
    p.child.kill('SIGTERM');
    assert.equal((await p.waitForExit()).code, 0);
  });
  test("wsbalancer's environment names run the sidecar without a config file", async () => {
    const a = await BackendProcess.start('a');
    const port = await freePort();
    const p = new BatonProcess(['sidecar'], { FE_ADDR: `127.0.0.1:${port}`, BE_URLS: a.url, BE_URL_IDS: 'legacy', LOG_LEVEL: 'INFO' });
    const listening = await p.waitForLine(/sidecar listening/, 'listening');
    assert.match(listening, /"backends":\["legacy"\]/);
    const c = await TestClient.connect(`ws://127.0.0.1:${port}/w`);
    c.ws.send('x');
    await waitFor(() => c.texts().includes('a|x'), 'echo');
    c.close();
    p.child.kill('SIGTERM');
    assert.equal((await p.waitForExit()).code, 0);
  });

  test('baton demo: the talking client carries on when its backend is killed', async () => {
    const p = new BatonProcess(['demo', '--port', '0']);
    const first = await p.waitForLine(/answered by backend-/, 'first answer', 10000);
    const serving = /answered by (backend-[ab])/.exec(first)![1]!;
    const pidLine = await p.waitForLine(new RegExp(`${serving}: ws://.*\\(pid (\\d+)\\)`), 'backend pid');
    const pid = Number(/\(pid (\d+)\)/.exec(pidLine)![1]);
    process.kill(pid, 'SIGKILL');
    const other = serving === 'backend-a' ? 'backend-b' : 'backend-a';
    await p.waitForLine(new RegExp(`answered by ${other}`), 'answer from the other backend', 10000);
    assert.ok(!p.lines.some((l) => l.includes('client closed')), 'the demo client was never disconnected');
    p.child.kill('SIGINT');
    assert.equal((await p.waitForExit()).code, 0);
  });
});
