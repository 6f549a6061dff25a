// The container image without a Docker engine: the Dockerfile's stages are rebuilt in temp dirs (its
// COPY lines copy, the build stages' RUN lines run here with sh, in the stage's WORKDIR), from a
// context filtered by .dockerignore, and the runtime stage's tree is run the way its ENTRYPOINT
// runs it, with its ENV.
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { cpSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, posix } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { BackendProcess, freePort, killAllBackends, TestClient, waitFor } from './helpers.js';
import { ensureDebianPackage } from './prometheus.js';

const repo = fileURLToPath(new URL('../../', import.meta.url));

interface Stage {
  name: string;
  instructions: { op: string; args: string }[];
}

/** FROM … AS name starts a stage; line continuations are joined, comments and pre-FROM ARGs dropped. */
function parseDockerfile(text: string): Stage[] {
  const stages: Stage[] = [];
  for (const line of text.replace(/\\\n/g, ' ').split('\n').map((l) => l.trim())) {
    if (!line || line.startsWith('#')) continue;
    const [, op, args] = /^(\S+)\s*(.*)$/.exec(line)!;
    if (op.toUpperCase() === 'FROM') stages.push({ name: /\sAS\s+(\S+)/i.exec(args)?.[1] ?? String(stages.length), instructions: [] });
    else stages.at(-1)?.instructions.push({ op: op.toUpperCase(), args });
  }
  return stages;
}

const last = (stage: Stage, op: string): string | undefined => stage.instructions.filter((i) => i.op === op).at(-1)?.args;

function stageEnv(stage: Stage): Record<string, string> {
  const env: Record<string, string> = {};
  for (const { args } of stage.instructions.filter((i) => i.op === 'ENV')) {
    for (const [, name, value] of args.matchAll(/(\w+)=("[^"]*"|\S+)/g)) env[name] = value.replace(/^"|"$/g, '');
  }
  return env;
}

/** Docker's rule, roughly: the last pattern that matches the path or one of its parent dirs decides. */
function dockerignore(text: string): (path: string) => boolean {
  const rules = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      const negated = l.startsWith('!');
      const glob = l.replace(/^!/, '').replace(/^\/+|\/+$/g, '');
      const parts = glob.split('**').map((p) => p.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]'));
      return { negated, re: new RegExp(`^${parts.join('.*')}$`) };
    });
  return (path) => {
    const selfAndParents = path.split('/').map((_, i, parts) => parts.slice(0, i + 1).join('/'));
    let ignored = false;
    for (const r of rules) if (selfAndParents.some((p) => r.re.test(p))) ignored = !r.negated;
    return ignored;
  };
}

interface BuiltStage {
  root: string; // the stage's "/"
  workdir: string;
}

/** Builds the stages concurrently, as BuildKit does: a COPY --from waits for its stage. */
async function build(stages: Stage[], context: string, dir: string): Promise<Map<string, BuiltStage>> {
  const building = new Map<string, Promise<BuiltStage>>();
  for (const stage of stages) building.set(stage.name, buildStage(stage, stage === stages.at(-1), context, join(dir, stage.name), building));
  // Settle all before reporting a failure, so that no RUN is still writing when the dir is removed.
  const results = await Promise.allSettled(building.values());
  for (const r of results) if (r.status === 'rejected') throw r.reason;
  return new Map(stages.map((s, i) => [s.name, (results[i] as PromiseFulfilledResult<BuiltStage>).value]));
}

async function buildStage(stage: Stage, isRuntime: boolean, context: string, root: string, building: Map<string, Promise<BuiltStage>>): Promise<BuiltStage> {
  let workdir = '/';
  const env = stageEnv(stage);
  for (const { op, args } of stage.instructions) {
    const cwd = join(root, workdir);
    mkdirSync(cwd, { recursive: true });
    if (op === 'WORKDIR') workdir = posix.resolve(workdir, args);
    if (op === 'COPY') {
      const from = /--from=(\S+)/.exec(args)?.[1];
      const fromRoot = from === undefined ? context : (await building.get(from))?.root;
      assert.ok(fromRoot, `COPY --from=${from}: no stage of that name`);
      copy(args, fromRoot, join(root, posix.resolve(workdir, args.split(/\s+/).at(-1)!)));
    }
    if (op === 'RUN') {
      assert.ok(!isRuntime, `RUN ${args}: the runtime stage only copies what the build stages made`);
      // Reuse the machine's npm cache: the stages' downloads are the repo's own.
      await sh(args, cwd, { ...process.env, npm_config_prefer_offline: 'true', ...env }, stage.name);
    }
  }
  return { root, workdir };
}

function sh(command: string, cwd: string, env: NodeJS.ProcessEnv, stage: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('sh', ['-c', command], { cwd, env, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`RUN ${command} (stage ${stage}) failed (exit ${err.code}):\n${stdout}${stderr}`));
      else resolve();
    });
  });
}

/** COPY [--from=stage] SRC... DEST: a directory's contents go into DEST, files into DEST/ or as DEST. */
function copy(args: string, fromRoot: string, dest: string): void {
  const sources = args.split(/\s+/).filter((w) => !w.startsWith('--')).slice(0, -1);
  const intoDir = args.endsWith('/') || sources.length > 1;
  for (const src of sources) {
    assert.doesNotMatch(src, /[*?[]/, `COPY ${src}: wildcards are not reproduced here`);
    const source = join(fromRoot, src);
    cpSync(source, statSync(source).isFile() && intoDir ? join(dest, basename(src)) : dest, { recursive: true, verbatimSymlinks: true });
  }
}

/** Every file under `dir` with its size and mtime, to tell whether anything was written. */
function snapshot(dir: string): string[] {
  return readdirSync(dir, { recursive: true })
    .map(String)
    .map((f) => {
      const s = lstatSync(join(dir, f));
      return `${f} ${s.size} ${s.mtimeMs}`;
    });
}

const dockerfileText = readFileSync(join(repo, 'Dockerfile'), 'utf8');
const dockerfile = parseDockerfile(dockerfileText);
const runtimeStage = dockerfile.at(-1)!;
const ignored = dockerignore(readFileSync(join(repo, '.dockerignore'), 'utf8'));
/** The image's `node` (its NODE_VERSION, fetched once per machine): what ships is run on what ships, whatever runs this test. */
const imageNode = (): string => execFileSync('bash', [join(repo, 'scripts/ensure-node.sh')], { encoding: 'utf8' }).trim();

describe('Dockerfile and .dockerignore', () => {
  test('multi-stage; the runtime stage runs `node /app/bin/baton.js` as a numeric non-root user, in production', () => {
    assert.ok(dockerfile.length >= 2, 'a build stage and a runtime stage');
    assert.match(last(runtimeStage, 'USER') ?? '', /^[1-9]\d*(:\d+)?$/, 'numeric, so Kubernetes runAsNonRoot can check it');
    assert.deepEqual(JSON.parse(last(runtimeStage, 'ENTRYPOINT') ?? 'null'), ['node', '/app/bin/baton.js']);
    assert.deepEqual(JSON.parse(last(runtimeStage, 'CMD') ?? 'null'), ['--help']);
    const env = stageEnv(runtimeStage);
    assert.equal(env.NODE_ENV, 'production');
    // V8's defaults: the bench measures the sidecar as shipped (docs/performance.md, "Memory per idle session").
    assert.equal(env.NODE_OPTIONS, undefined);
    for (const run of dockerfile.flatMap((s) => s.instructions.filter((i) => i.op === 'RUN'))) {
      assert.doesNotMatch(run.args, /npm (install|i|add)\b/, 'npm ci installs exactly what package-lock.json pins');
    }
  });

  test('every stage is FROM node:${NODE_VERSION}, an exact release: the one the tests and the bench run on', () => {
    const pinned = /^ARG NODE_VERSION=(\d+\.\d+\.\d+)$/m.exec(dockerfileText);
    assert.ok(pinned, 'ARG NODE_VERSION is an exact version (x.y.z)');
    const froms = [...dockerfileText.matchAll(/^FROM\s+(\S+)/gm)].map((m) => m[1]);
    assert.equal(froms.length, dockerfile.length);
    for (const from of froms) assert.match(from!, /^node:\$\{NODE_VERSION\}-bookworm(-slim)?$/);
    assert.equal(spawnSync(imageNode(), ['--version'], { encoding: 'utf8' }).stdout.trim(), `v${pinned[1]}`);
  });

  test('.dockerignore keeps installed, built and non-runtime files out of the context', () => {
    for (const path of ['node_modules/ws/package.json', 'dist/cli/baton.js', '.git/HEAD', 'test/helpers.ts', 'bench/bench.ts', 'charts/baton/values.yaml', 'x.log']) {
      assert.ok(ignored(path), `${path} is sent to the build`);
    }
  });
});

describe('the release workflow: .github/workflows/release.yml', () => {
  interface Step {
    id?: string;
    uses?: string;
    run?: string;
    with?: Record<string, string | boolean>;
  }
  const workflow = parse(readFileSync(join(repo, '.github/workflows/release.yml'), 'utf8')) as {
    on: unknown;
    permissions: Record<string, string>;
    jobs: Record<string, { steps: Step[] }>;
  };
  const steps = Object.values(workflow.jobs).flatMap((job) => job.steps);
  const action = (name: string): Step => {
    const found = steps.filter((s) => s.uses?.split('@')[0] === name);
    assert.equal(found.length, 1, `one ${name} step`);
    return found[0]!;
  };
  const chartValues = (dir: string) => parse(readFileSync(join(dir, 'charts/baton/values.yaml'), 'utf8')) as { image: { repository: string } };
  const appVersion = (parse(readFileSync(join(repo, 'charts/baton/Chart.yaml'), 'utf8')) as { appVersion: string }).appVersion;

  test('on a v* tag it builds this Dockerfile for amd64 and arm64, with every ARG of its runtime stage, and pushes with GITHUB_TOKEN', () => {
    assert.deepEqual(workflow.on, { push: { tags: ['v*'] } });
    assert.equal(workflow.permissions.packages, 'write');
    for (const name of ['actions/checkout', 'docker/setup-qemu-action', 'docker/setup-buildx-action']) action(name);
    assert.deepEqual(action('docker/login-action').with, { registry: 'ghcr.io', username: '${{ github.actor }}', password: '${{ secrets.GITHUB_TOKEN }}' });
    // The image name is the checked repository (below); its tags come from the git tag.
    const meta = action('docker/metadata-action');
    assert.equal(meta.with!.images, '${{ steps.release.outputs.repository }}');
    assert.match(String(meta.with!.tags), /^type=semver,pattern=\{\{version\}\}$/m, 'v1.2.3 → 1.2.3, the chart\'s appVersion form');

    const build = action('docker/build-push-action').with!;
    assert.equal(build.context, '.', 'the Dockerfile and .dockerignore at the root');
    assert.deepEqual(String(build.platforms).split(','), ['linux/amd64', 'linux/arm64']);
    assert.equal(build.push, true);
    assert.equal(build.tags, '${{ steps.meta.outputs.tags }}');
    const passed = String(build['build-args']).trim().split('\n').map((line) => line.split('=')[0]);
    const declared = runtimeStage.instructions.filter((i) => i.op === 'ARG').map((i) => i.args.split('=')[0]);
    assert.deepEqual(passed.sort(), declared.sort());
  });

  test("the tag must be the chart's appVersion and package.json's version; the image goes to the chart's image.repository", (t) => {
    ensureDebianPackage('yq', ['yq']); // GitHub's runners have yq; Debian's is another yq that reads the same
    const check = steps.find((s) => s.id === 'release')!;
    const work = mkdtempSync(join(tmpdir(), 'baton-release-'));
    t.after(() => rmSync(work, { recursive: true, force: true }));
    let runs = 0;
    const runCheck = (dir: string, tag: string) => {
      const output = join(work, `output-${++runs}`);
      writeFileSync(output, '');
      const r = spawnSync('bash', ['-c', check.run!], { cwd: dir, env: { PATH: process.env.PATH, TAG: tag, GITHUB_OUTPUT: output }, encoding: 'utf8' });
      return { code: r.status, log: r.stdout + r.stderr, output: readFileSync(output, 'utf8') };
    };

    const ok = runCheck(repo, `v${appVersion}`);
    assert.equal(ok.code, 0, ok.log);
    assert.equal(ok.output, `repository=${chartValues(repo).image.repository}\n`);

    const wrong = runCheck(repo, 'v9.9.9');
    assert.notEqual(wrong.code, 0);
    assert.equal(wrong.output, '', 'nothing is pushed');
    assert.match(wrong.log, new RegExp(`^::error file=charts/baton/Chart.yaml::appVersion is ${appVersion}; the tag v9.9.9 says 9.9.9$`, 'm'));
    assert.match(wrong.log, /^::error file=package\.json::version is .*; the tag v9\.9\.9 says 9\.9\.9$/m);

    // A repository GITHUB_TOKEN cannot push to is refused before building.
    const elsewhere = join(work, 'elsewhere');
    for (const f of ['package.json', 'charts/baton/Chart.yaml', 'charts/baton/values.yaml']) cpSync(join(repo, f), join(elsewhere, f));
    const values = join(elsewhere, 'charts/baton/values.yaml');
    writeFileSync(values, readFileSync(values, 'utf8').replace(/^( {2}repository: ).*$/m, '$1docker.io/someone/baton'));
    assert.equal(chartValues(elsewhere).image.repository, 'docker.io/someone/baton');
    const refused = runCheck(elsewhere, `v${appVersion}`);
    assert.notEqual(refused.code, 0);
    assert.match(refused.log, /^::error file=charts\/baton\/values\.yaml::image\.repository docker\.io\/someone\/baton is not on ghcr\.io/m);
  });
});

describe('the image, rebuilt from the Dockerfile without Docker', () => {
  let dir = '';
  let app = '';
  let entrypoint = '';
  let node = '';
  const env = { PATH: process.env.PATH, ...stageEnv(runtimeStage) };
  const started: ChildProcess[] = [];

  before(async () => {
    node = imageNode();
    dir = mkdtempSync(join(tmpdir(), 'baton-image-'));
    const context = join(dir, 'context');
    const files = execFileSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: repo }).toString().split('\0');
    for (const f of files.filter((f) => f && !ignored(f) && existsSync(join(repo, f)))) cpSync(join(repo, f), join(context, f));
    const runtime = (await build(dockerfile, context, join(dir, 'stages'))).get(runtimeStage.name)!;
    app = join(runtime.root, runtime.workdir);
    entrypoint = join(runtime.root, JSON.parse(last(runtimeStage, 'ENTRYPOINT')!)[1]);
  });
  after(async () => {
    for (const child of started) child.kill('SIGKILL');
    await killAllBackends();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const batonSync = (args: string[]) => spawnSync(node, [entrypoint, ...args], { cwd: app, env, encoding: 'utf8' });

  /** `docker run IMAGE ARGS…`: the ENTRYPOINT with ARGS, in the runtime stage's WORKDIR and ENV. */
  function baton(args: string[], extraEnv: NodeJS.ProcessEnv = {}) {
    const child = spawn(node, [entrypoint, ...args], { cwd: app, env: { ...env, ...extraEnv } });
    const p = { child, output: '', exit: undefined as number | null | undefined };
    child.stdout.on('data', (d: Buffer) => (p.output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (p.output += d.toString()));
    child.on('exit', (code) => (p.exit = code));
    started.push(child);
    return p;
  }

  test('production dependencies only, with the native bufferutil; no tests or bench in dist/', () => {
    const lock = JSON.parse(readFileSync(join(repo, 'package-lock.json'), 'utf8')) as { packages: Record<string, { dev?: boolean }> };
    const devOnly = Object.keys(lock.packages).filter((p) => lock.packages[p]!.dev);
    assert.ok(devOnly.includes('node_modules/typescript'));
    assert.deepEqual(devOnly.filter((p) => existsSync(join(app, p))), [], 'dev-only packages in the image');
    assert.ok(existsSync(join(app, 'node_modules/ws')));
    const bufferutil = spawnSync(node, ['-e', "console.log(require('bufferutil') === require('bufferutil/fallback') ? 'js' : 'native')"], { cwd: app, env, encoding: 'utf8' });
    assert.equal(bufferutil.stdout.trim(), 'native', bufferutil.stderr);
    assert.ok(!existsSync(join(app, 'dist/test')) && !existsSync(join(app, 'dist/bench')));
  });

  test('every file under /app is readable by any uid (the chart runs 10001, an injected sidecar 65532)', () => {
    const closed = readdirSync(app, { recursive: true })
      .map(String)
      .filter((f) => {
        const s = statSync(join(app, f));
        const needed = s.isDirectory() ? 0o005 : 0o004;
        return (s.mode & needed) !== needed;
      });
    assert.deepEqual(closed, []);
  });

  test('CMD gives the usage; --version is package.json\'s; the operator\'s code loads', () => {
    const help = batonSync(JSON.parse(last(runtimeStage, 'CMD')!));
    assert.equal(help.status, 0, help.stderr);
    for (const command of ['sidecar --config FILE', 'operator', 'demo']) assert.match(help.stdout, new RegExp(`^  ${command}`, 'm'));
    const { version } = JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')) as { version: string };
    assert.equal(batonSync(['--version']).stdout, `${version}\n`);
    // A bad flag is reported after operator/main.js and @kubernetes/client-node have loaded.
    const operator = batonSync(['operator', '--resync', 'soon']);
    assert.equal(operator.status, 2, operator.stderr);
    assert.match(operator.stderr, /--resync: "soon" is not a duration/);
  });

  test('`baton sidecar --config FILE` proxies a session to a real backend, writes nothing under /app, exits 0 on SIGTERM', async () => {
    const backend = await BackendProcess.start('a');
    const port = await freePort();
    const config = join(dir, 'sidecar.yaml');
    writeFileSync(config, `listen:\n  address: "127.0.0.1:${port}"\nlogLevel: info\nbackends:\n  - { id: a, url: "${backend.url}" }\n`);
    const filesBefore = new Set(snapshot(app));
    const sidecar = baton(['sidecar', '--config', config], { BATON_ADMIN_ADDRESS: '127.0.0.1:0' });
    await waitFor(() => sidecar.output.includes('sidecar listening') || sidecar.exit !== undefined, 'sidecar listening');
    assert.equal(sidecar.exit, undefined, sidecar.output);
    const client = await TestClient.connect(`ws://127.0.0.1:${port}/image`);
    client.ws.send('hello');
    await waitFor(() => client.texts().includes('a|hello'), 'the echo from backend a through the sidecar');
    client.close();
    await client.waitForClose();
    sidecar.child.kill('SIGTERM');
    await waitFor(() => sidecar.exit !== undefined, 'the sidecar exiting after SIGTERM', 10000);
    assert.equal(sidecar.exit, 0, sidecar.output);
    const written = snapshot(app).filter((entry) => !filesBefore.has(entry));
    assert.deepEqual(written, [], 'files written under /app: a read-only root filesystem would break');
  });

  test('`baton demo` runs its echo backends from the image and its client gets answers; exits 0 on SIGTERM', async () => {
    const demo = baton(['demo', '--port', '0']);
    await waitFor(() => /answered by backend-/.test(demo.output) || demo.exit !== undefined, 'the demo client\'s first answer', 10000);
    assert.equal(demo.exit, undefined, demo.output);
    demo.child.kill('SIGTERM');
    await waitFor(() => demo.exit !== undefined, 'the demo exiting after SIGTERM', 10000);
    assert.equal(demo.exit, 0, demo.output);
  });
});
