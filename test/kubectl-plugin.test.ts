// `kubectl baton` run by the real kubectl (1.33) against a real API server: the plugin found on PATH,
// the status it shows from a WsBalancer's status and events, and the annotations it writes.
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  CustomObjectsApi,
  EventsV1Api,
  PatchStrategy,
  setHeaderOptions,
  V1MicroTime,
} from '@kubernetes/client-node';
import { parse, stringify } from 'yaml';
import { ANNOTATIONS, API_VERSION, GROUP, KIND, PLURAL, VERSION, type WsBalancer, type WsBalancerStatus } from '../operator/api/wsbalancer.js';
import { installCrd, startControlPlane, type ControlPlane } from './kube/control-plane.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const NS = 'shop';
const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

/** What the operator would write mid-rollout: green waits as the preview, one sidecar does not answer. */
const rolloutStatus = (now: number): WsBalancerStatus => {
  const minutesAgo = (m: number) => new Date(now - m * 60_000).toISOString();
  return {
    observedGeneration: 1,
    phase: 'Progressing',
    activeRevision: 'blue',
    previewRevision: 'green',
    previousRevision: 'red',
    rollout: { previewSince: minutesAgo(3) },
    revisions: [
      { name: 'blue', role: 'active', ready: 2, serving: 2, terminating: 0, sessions: 180 },
      { name: 'green', role: 'preview', ready: 3, serving: 3, terminating: 0, sessions: 7 },
      { name: 'red', role: 'previous', ready: 0, serving: 1, terminating: 1, sessions: 2 },
    ],
    sessions: 189,
    sidecars: { desired: 3, synced: 2, unreachable: 1 },
    backendsGeneration: 4,
    conditions: [
      { type: 'Available', status: 'True', reason: 'EndpointsReady', message: 'revision blue has ready endpoints', lastTransitionTime: minutesAgo(30) },
      { type: 'Progressing', status: 'True', reason: 'Previewing', message: 'revision green is the preview', lastTransitionTime: minutesAgo(3) },
      { type: 'SidecarsSynced', status: 'False', reason: 'SidecarsUnreachable', message: '2/3 sidecars hold backend generation 4, 1 unreachable', lastTransitionTime: minutesAgo(5) },
    ],
  };
};

const CANARY_STEPS = [{ setWeight: 10 }, { analysis: { webhook: { url: 'http://checks.shop/ok' } } }, { pause: {} }, { setWeight: 50 }, { pause: { duration: '5m' } }];

/** What the operator would write with a canary waiting at its pause until promoted (step 3 of 5), 10 % asked. */
const canaryStatus = (now: number): WsBalancerStatus => ({
  observedGeneration: 1,
  phase: 'Paused',
  activeRevision: 'blue',
  previewRevision: 'green',
  rollout: {
    previewSince: new Date(now - 120_000).toISOString(),
    canary: {
      step: 2,
      stepSince: new Date(now - 60_000).toISOString(),
      weight: 10,
      stepText: 'pause (until promoted)',
      analysis: { step: 1, result: 'passed', message: 'webhook passed' },
      message: 'paused until promoted: kubectl baton promote (baton.dev/promote=green@2)',
      sidecars: [
        { name: 'edge-a', canary: 15, target: 15, stable: 135, moving: 0 },
        { name: 'edge-b', canary: 14, target: 15, stable: 137, moving: 2 },
      ],
    },
  },
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

describe('kubectl baton (the plugin through kubectl, on a real API server)', { timeout: 120_000 }, () => {
  let cp: ControlPlane;
  let custom: CustomObjectsApi;
  let dir: string;
  let pluginDir: string;
  let kubeconfig: string;
  let env: NodeJS.ProcessEnv;
  let written: WsBalancerStatus;

  /** `kubectl ARGS` with the plugin on PATH; never throws, the exit code is part of the result. */
  const kubectl = (args: string[], extraEnv: NodeJS.ProcessEnv = {}): Promise<Run> =>
    new Promise((resolve) => {
      execFile('kubectl', args, { env: { ...env, ...extraEnv }, timeout: 30_000 }, (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
        resolve({ code, stdout, stderr });
      });
    });

  /** `kubectl baton ARGS -n NS --kubeconfig F`, expecting success. */
  const baton = async (...args: string[]): Promise<string> => {
    const run = await kubectl(['baton', ...args, '-n', NS, '--kubeconfig', kubeconfig]);
    assert.equal(run.code, 0, `kubectl baton ${args.join(' ')} failed: ${run.stderr}`);
    return run.stdout;
  };

  const objectPath = (name: string) => ({ group: GROUP, version: VERSION, plural: PLURAL, namespace: NS, name });
  const getBalancer = async (name: string) => (await custom.getNamespacedCustomObject(objectPath(name))) as WsBalancer;

  const createBalancer = async (name: string, status: WsBalancerStatus, rollout?: object) => {
    await custom.createNamespacedCustomObject({
      group: GROUP,
      version: VERSION,
      plural: PLURAL,
      namespace: NS,
      body: {
        apiVersion: API_VERSION,
        kind: KIND,
        // An annotation of someone else's, which the plugin's patches must leave alone.
        metadata: { name, annotations: { 'example.com/owner': 'team-shop' } },
        spec: { sidecarSelector: { matchLabels: { app: 'edge' } }, backend: { service: 'shop', port: 'ws', revisionLabel: 'version' }, ...(rollout ? { rollout } : {}) },
      },
    });
    await custom.patchNamespacedCustomObjectStatus({ ...objectPath(name), body: { status } }, mergePatch);
  };

  before(async () => {
    cp = await startControlPlane({ controllerManager: false });
    await cp.ensureNamespace(NS);
    const admin = cp.kubeConfig();
    custom = admin.makeApiClient(CustomObjectsApi);

    await installCrd(admin);

    // Timed when written, so the ages status shows are the ones set there (3m, 5m).
    written = rolloutStatus(Date.now());
    await createBalancer('shop', written);
    await createBalancer('steady', { phase: 'Healthy', activeRevision: 'blue', sidecars: { desired: 2, synced: 2, unreachable: 0 } });
    await createBalancer('cart', canaryStatus(Date.now()), { strategy: 'canary', canary: { steps: CANARY_STEPS } });

    // Twelve events about "shop", one a minute, written out of order; one about "steady".
    const events = admin.makeApiClient(EventsV1Api);
    const event = (regarding: string, reason: string, note: string, minutes: number) =>
      events.createNamespacedEvent({
        namespace: NS,
        body: {
          metadata: { name: `${regarding}.${reason.toLowerCase()}-${minutes}` },
          eventTime: new V1MicroTime(Date.now() - minutes * 60_000),
          type: 'Normal',
          reason,
          action: reason,
          note,
          reportingController: 'baton.dev/operator',
          reportingInstance: 'operator-a',
          regarding: { apiVersion: API_VERSION, kind: KIND, namespace: NS, name: regarding },
        },
      });
    for (const m of [3, 12, 1, 7, 2, 11, 4, 10, 5, 9, 6, 8]) await event('shop', 'Step', `step-${String(13 - m).padStart(2, '0')}`, m);
    await event('steady', 'Promoted', 'revision blue is active (steady)', 0.5);

    // PATH: the plugin (a symlink, as npm -g makes one), kubectl, and node for the plugin's shebang.
    dir = mkdtempSync(join(tmpdir(), 'baton-kubectl-plugin-'));
    pluginDir = join(dir, 'bin');
    mkdirSync(pluginDir);
    symlinkSync(`${root}bin/kubectl-baton`, join(pluginDir, 'kubectl-baton'));
    const kubectlDir = execFileSync('bash', [`${root}scripts/ensure-helm.sh`], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
    // HOME and no KUBECONFIG: nothing from the machine's own ~/.kube/config leaks in.
    env = { PATH: [pluginDir, kubectlDir, dirname(process.execPath)].join(':'), HOME: dir };
    kubeconfig = cp.writeKubeconfig();
  });

  after(async () => {
    await cp?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('kubectl plugin list finds it on PATH', async () => {
    const run = await kubectl(['plugin', 'list']);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, new RegExp(`^${join(pluginDir, 'kubectl-baton')}$`, 'm'));
  });

  test('status: phase, revisions with sessions, sidecars, conditions and the last ten events, newest last', async () => {
    const out = await baton('status', 'shop');
    assert.match(out, /^Name:\s+shop$/m);
    assert.match(out, new RegExp(`^Namespace:\\s+${NS}$`, 'm'));
    assert.match(out, /^Phase:\s+Progressing$/m);
    assert.match(out, /^Active:\s+blue$/m);
    assert.match(out, /^Preview:\s+green$/m);
    assert.match(out, /^Previous:\s+red$/m);
    assert.match(out, /^Rollout:\s+preview ready for 3m$/m);
    assert.match(out, /^Sessions:\s+189$/m);
    assert.match(out, /^Sidecars:\s+3 desired, 2 synced, 1 unreachable$/m);
    // NAME ROLE READY SERVING TERMINATING SESSIONS
    assert.match(out, /^\s+blue\s+active\s+2\s+2\s+0\s+180$/m);
    assert.match(out, /^\s+green\s+preview\s+3\s+3\s+0\s+7$/m);
    assert.match(out, /^\s+red\s+previous\s+0\s+1\s+1\s+2$/m);
    assert.match(out, /^\s+SidecarsSynced\s+False\s+SidecarsUnreachable\s+5m\s+2\/3 sidecars hold backend generation 4, 1 unreachable$/m);
    assert.match(out, /^\s+Progressing\s+True\s+Previewing\s+3m\s+revision green is the preview$/m);

    const steps = [...out.matchAll(/step-(\d\d)/g)].map((m) => m[1]);
    assert.deepEqual(steps, ['03', '04', '05', '06', '07', '08', '09', '10', '11', '12'], 'the ten newest, oldest first');
    // kubectl's ages: seconds up to two minutes.
    assert.match(out, /^\s+\d+s\s+Normal\s+Step\s+baton\.dev\/operator\s+step-12$/m);
    assert.doesNotMatch(out, /steady/, "another WsBalancer's event");
  });

  test('status -o json: the status and the events, for scripts', async () => {
    const report = JSON.parse(await baton('status', 'shop', '-o', 'json')) as { name: string; status: WsBalancerStatus; events: Array<{ reason: string; note: string; time: string }> };
    assert.equal(report.name, 'shop');
    assert.deepEqual(report.status, written);
    assert.deepEqual(report.events.map((e) => e.note), ['03', '04', '05', '06', '07', '08', '09', '10', '11', '12'].map((n) => `step-${n}`));
    assert.ok(Date.parse(report.events.at(-1)!.time) > Date.now() - 2 * 60_000, 'event times are ISO times');
  });

  test("the namespace and context come from KUBECONFIG's kubeconfig, as for kubectl", async () => {
    // Two contexts on the same cluster: the current one in "default", another in the test namespace.
    const config = parse(readFileSync(kubeconfig, 'utf8')) as { contexts: Array<{ name: string; context: Record<string, string> }> };
    const context = config.contexts[0]!.context;
    config.contexts = [
      { name: 'elsewhere', context: { ...context, namespace: 'default' } },
      { name: 'shop-team', context: { ...context, namespace: NS } },
    ];
    const file = join(dir, 'two-contexts.yaml');
    writeFileSync(file, stringify({ ...config, 'current-context': 'elsewhere' }));

    // A KUBECONFIG entry that does not exist is skipped, as kubectl skips it.
    const inDefault = await kubectl(['baton', 'status', 'shop'], { KUBECONFIG: [join(dir, 'missing.yaml'), file].join(':') });
    assert.equal(inDefault.code, 1);
    assert.equal(inDefault.stderr, 'error: wsbalancer "shop" not found in namespace "default"\n');

    const inContext = await kubectl(['baton', 'status', 'shop', '--context', 'shop-team'], { KUBECONFIG: file });
    assert.equal(inContext.code, 0, inContext.stderr);
    assert.match(inContext.stdout, new RegExp(`^Namespace:\\s+${NS}$`, 'm'));
    assert.match(inContext.stdout, /^Phase:\s+Progressing$/m);

    const noContext = await kubectl(['baton', 'status', 'shop', '--context', 'nope'], { KUBECONFIG: file });
    assert.equal(noContext.code, 1);
    assert.equal(noContext.stderr, 'error: context "nope" not found in the kubeconfig\n');
  });

  test('promote and abort set their annotation to the preview revision; nothing else changes', async () => {
    const before = await getBalancer('shop');
    assert.match(await baton('promote', 'shop'), /baton\.dev\/promote=green/);
    let wsb = await getBalancer('shop');
    assert.equal(wsb.metadata.annotations?.[ANNOTATIONS.promote], 'green');
    assert.equal(wsb.metadata.annotations?.['example.com/owner'], 'team-shop');
    assert.equal(wsb.metadata.generation, before.metadata.generation, 'the spec is untouched');

    assert.match(await baton('abort', 'shop'), /baton\.dev\/abort=green/);
    wsb = await getBalancer('shop');
    assert.equal(wsb.metadata.annotations?.[ANNOTATIONS.abort], 'green');
    assert.equal(wsb.metadata.annotations?.[ANNOTATIONS.promote], 'green');
  });

  test('canary: status shows the steps (the current one marked), the weight asked and the share per sidecar; promote names the step, --full the end', async () => {
    const out = await baton('status', 'cart');
    assert.match(out, /^Canary steps \(step 3\/5, weight 10%\):$/m);
    assert.match(out, /^\s+1\s+setWeight 10\s+done$/m);
    assert.match(out, /^\s+2\s+analysis\s+analysis passed: webhook passed$/m);
    assert.match(out, /^\s+>\s+3\s+pause \(until promoted\)\s+paused until promoted: kubectl baton promote/m);
    assert.match(out, /^\s+4\s+setWeight 50$/m);
    assert.match(out, /^\s+5\s+pause 5m$/m);
    assert.match(out, /^Canary share \(asked 10%\):$/m);
    // SIDECAR CANARY TARGET STABLE MOVING SHARE
    assert.match(out, /^\s+edge-a\s+15\s+15\s+135\s+0\s+10\.0%$/m);
    assert.match(out, /^\s+edge-b\s+14\s+15\s+137\s+2\s+9\.3%$/m);

    assert.match(await baton('promote', 'cart'), /baton\.dev\/promote=green@2: canary green completes step 3 \(pause \(until promoted\)\)/);
    assert.equal((await getBalancer('cart')).metadata.annotations?.[ANNOTATIONS.promote], 'green@2');
    assert.match(await baton('promote', 'cart', '--full'), /baton\.dev\/promote=green@full: canary green skips its remaining steps/);
    assert.equal((await getBalancer('cart')).metadata.annotations?.[ANNOTATIONS.promote], 'green@full');
    // Abort names the revision, as for blue/green.
    assert.match(await baton('abort', 'cart'), /baton\.dev\/abort=green/);
    assert.equal((await getBalancer('cart')).metadata.annotations?.[ANNOTATIONS.abort], 'green');
  });

  test('pause sets baton.dev/paused: "true", resume removes it', async () => {
    await baton('pause', 'shop');
    assert.equal((await getBalancer('shop')).metadata.annotations?.[ANNOTATIONS.paused], 'true');
    assert.match(await baton('status', 'shop'), /^Annotations:.*baton\.dev\/paused=true/m);
    // A promotion requested while paused waits, and the plugin says so.
    assert.match(await baton('promote', 'shop'), /^note: baton\.dev\/paused is "true"/m);

    await baton('resume', 'shop');
    const annotations = (await getBalancer('shop')).metadata.annotations ?? {};
    assert.ok(!(ANNOTATIONS.paused in annotations), `still paused: ${JSON.stringify(annotations)}`);
    assert.equal(annotations['example.com/owner'], 'team-shop');
  });

  test('promote or abort without a preview: exit 1, and no annotation', async () => {
    for (const action of ['promote', 'abort']) {
      const run = await kubectl(['baton', action, 'steady', '-n', NS, '--kubeconfig', kubeconfig]);
      assert.equal(run.code, 1);
      assert.equal(run.stderr, `error: wsbalancer "steady" has no preview revision to ${action} (revision blue is active)\n`);
    }
    const annotations = (await getBalancer('steady')).metadata.annotations ?? {};
    assert.deepEqual(Object.keys(annotations), ['example.com/owner']);
  });

  test('an unknown WsBalancer: exit 1 naming it and the namespace', async () => {
    for (const command of ['status', 'pause']) {
      const run = await kubectl(['baton', command, 'nope', '-n', NS, '--kubeconfig', kubeconfig]);
      assert.equal(run.code, 1, command);
      assert.equal(run.stderr, `error: wsbalancer "nope" not found in namespace "${NS}"\n`);
    }
  });

  test('bad usage: the usage text and exit 2', async () => {
    for (const [args, message] of [
      [[], 'no command given'],
      [['promote'], 'promote needs the name of a WsBalancer'],
      [['rollback', 'shop'], 'unknown command "rollback"'],
      [['status', 'shop', 'extra'], 'unexpected argument "extra"'],
      [['status', 'shop', '-o', 'wide'], '--output "wide" is not a format: json or yaml'],
      [['pause', 'shop', '-o', 'json'], '--output applies to status only'],
      [['abort', 'shop', '--full'], '--full applies to promote only'],
    ] as const) {
      const run = await kubectl(['baton', ...args, '--kubeconfig', kubeconfig]);
      assert.equal(run.code, 2, args.join(' '));
      assert.ok(run.stderr.startsWith(`error: ${message}`), run.stderr);
      assert.match(run.stderr, /^Usage: kubectl baton <command> NAME \[flags\]$/m);
    }
    const help = await kubectl(['baton', '--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^ {2}promote NAME/m);
  });
});
