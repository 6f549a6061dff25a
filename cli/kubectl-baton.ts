// `kubectl baton`: a kubectl plugin (kubectl runs any `kubectl-NAME` on PATH for `kubectl NAME`) that
// shows where a WsBalancer's rollout stands and steers it through the annotations the operator reads.
import { existsSync } from 'node:fs';
import { delimiter } from 'node:path';
import { parseArgs } from 'node:util';
import type { ConfigurationOptions, CustomObjectsApi, EventsV1Api, EventsV1Event, ObservableMiddleware } from '@kubernetes/client-node';
import { stringify } from 'yaml';
import { ANNOTATIONS, GROUP, KIND, PLURAL, validateSpec, VERSION, type CanaryStep, type WsBalancer, type WsBalancerStatus } from '../operator/api/wsbalancer.js';
import { promoteValue, stepText } from '../operator/canary.js';

const USAGE = `Usage: kubectl baton <command> NAME [flags]

Commands:
  status NAME    phase, revisions with their sessions, sidecars, a canary's steps and share,
                 conditions and the last events
  promote NAME   promote the preview revision now (sets baton.dev/promote to it); for a canary,
                 complete the current step (baton.dev/promote=REVISION@STEP)
  abort NAME     abort the rollout of the preview revision (sets baton.dev/abort to it); a
                 canary's sessions move back to the active revision first
  pause NAME     hold the preview: no promotion starts (sets baton.dev/paused: "true")
  resume NAME    let promotions start again (removes baton.dev/paused)

Flags:
  -n, --namespace NS     the WsBalancer's namespace (default: the context's namespace, else "default")
      --kubeconfig FILE  kubeconfig file (default: $KUBECONFIG, else ~/.kube/config, else in-cluster)
      --context NAME     kubeconfig context (default: its current-context)
  -o, --output FORMAT    status as json or yaml
      --full             promote: a canary goes to the end, skipping its remaining steps
  -h, --help             this text
`;

/** Events shown by `status`. */
const EVENTS_SHOWN = 10;

const COMMANDS = ['status', 'promote', 'abort', 'pause', 'resume'] as const;
type Command = (typeof COMMANDS)[number];

/** A failure the user caused or can fix: printed as `error: ...`, exit 1 (2 for usage). */
class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: 1 | 2 = 1,
  ) {
    super(message);
  }
}

/** The WsBalancer a command acts on, and clients of the cluster that holds it. */
interface Target {
  name: string;
  namespace: string;
  server: string;
  objects: CustomObjectsApi;
  events: EventsV1Api;
  /** The options of a JSON merge patch (client-node sends a JSON patch by default). */
  mergePatch: ConfigurationOptions<ObservableMiddleware>;
}

/** Runs the plugin; returns the exit code (0, 1 for a failure, 2 for bad usage). */
export async function main(argv: string[]): Promise<number> {
  try {
    const parsed = parseCommandLine(argv);
    if (parsed === 'help') {
      process.stdout.write(USAGE);
      return 0;
    }
    const target = await connect(parsed.name, parsed.flags);
    switch (parsed.command) {
      case 'status':
        await status(target, parsed.flags.output);
        break;
      case 'promote':
      case 'abort':
        await annotatePreview(target, parsed.command, parsed.flags.full);
        break;
      case 'pause':
        await annotate(target, { [ANNOTATIONS.paused]: 'true' });
        process.stdout.write(`wsbalancer.${GROUP}/${target.name} paused: no preview is promoted until \`kubectl baton resume ${target.name}\`\n`);
        break;
      case 'resume':
        await annotate(target, { [ANNOTATIONS.paused]: null });
        process.stdout.write(`wsbalancer.${GROUP}/${target.name} resumed\n`);
        break;
    }
    return 0;
  } catch (err) {
    if (err instanceof CliError) {
      process.stderr.write(`error: ${err.message}\n${err.exitCode === 2 ? `\n${USAGE}` : ''}`);
      return err.exitCode;
    }
    process.stderr.write(`error: ${(err as Error).message}\n`);
    return 1;
  }
}

interface Flags {
  namespace?: string;
  kubeconfig?: string;
  context?: string;
  output?: 'json' | 'yaml';
  full?: boolean;
}

function parseCommandLine(argv: string[]): 'help' | { command: Command; name: string; flags: Flags } {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        namespace: { type: 'string', short: 'n' },
        kubeconfig: { type: 'string' },
        context: { type: 'string' },
        output: { type: 'string', short: 'o' },
        full: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    throw new CliError((err as Error).message, 2);
  }
  const { values, positionals } = parsed;
  if (values.help) return 'help';
  const [command, name, ...extra] = positionals;
  if (command === undefined) throw new CliError('no command given', 2);
  if (!(COMMANDS as readonly string[]).includes(command)) throw new CliError(`unknown command "${command}"`, 2);
  if (name === undefined) throw new CliError(`${command} needs the name of a WsBalancer`, 2);
  if (extra.length > 0) throw new CliError(`unexpected argument "${extra[0]}" (one WsBalancer at a time)`, 2);
  if (!/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(name) || name.length > 253) {
    throw new CliError(`"${name}" is not a WsBalancer name (lowercase letters, digits, "-" and ".")`, 2);
  }
  const { output } = values;
  if (output !== undefined && command !== 'status') throw new CliError(`--output applies to status only`, 2);
  if (output !== undefined && output !== 'json' && output !== 'yaml') throw new CliError(`--output "${output}" is not a format: json or yaml`, 2);
  if (values.full && command !== 'promote') throw new CliError(`--full applies to promote only`, 2);
  return { command: command as Command, name, flags: { namespace: values.namespace, kubeconfig: values.kubeconfig, context: values.context, output, full: values.full } };
}

/** The kubeconfig, context and namespace the way kubectl picks them. */
async function connect(name: string, flags: Flags): Promise<Target> {
  // Loaded only here, once the command line is valid: client-node takes about a second to load.
  const { CustomObjectsApi, EventsV1Api, KubeConfig, PatchStrategy, setHeaderOptions } = await import('@kubernetes/client-node');
  const kc = new KubeConfig();
  try {
    if (flags.kubeconfig) {
      kc.loadFromFile(flags.kubeconfig);
    } else {
      // kubectl skips KUBECONFIG files that do not exist, where client-node would fail.
      const kubeconfigs = process.env.KUBECONFIG?.split(delimiter).filter((file) => file && existsSync(file));
      if (kubeconfigs) process.env.KUBECONFIG = kubeconfigs.join(delimiter);
      // `true`: with several files the first one's current-context wins, as in kubectl.
      kc.loadFromDefault(undefined, true);
    }
  } catch (err) {
    throw new CliError(`cannot load the kubeconfig: ${(err as Error).message}`);
  }
  if (flags.context) {
    if (!kc.getContextObject(flags.context)) throw new CliError(`context "${flags.context}" not found in the kubeconfig`);
    kc.setCurrentContext(flags.context);
  }
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new CliError('the kubeconfig has no current context with a cluster (use --context)');
  return {
    name,
    namespace: flags.namespace || kc.getContextObject(kc.getCurrentContext())?.namespace || 'default',
    server: cluster.server,
    objects: kc.makeApiClient(CustomObjectsApi),
    events: kc.makeApiClient(EventsV1Api),
    mergePatch: setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
  };
}

const objectPath = (t: Target) => ({ group: GROUP, version: VERSION, plural: PLURAL, namespace: t.namespace, name: t.name });

async function getBalancer(t: Target): Promise<WsBalancer> {
  try {
    return (await t.objects.getNamespacedCustomObject(objectPath(t))) as WsBalancer;
  } catch (err) {
    throw apiError(err, t);
  }
}

/** A JSON merge patch of metadata.annotations (null removes one): nothing else of the object changes. */
async function annotate(t: Target, annotations: Record<string, string | null>): Promise<void> {
  try {
    await t.objects.patchNamespacedCustomObject({ ...objectPath(t), body: { metadata: { annotations } } }, t.mergePatch);
  } catch (err) {
    throw apiError(err, t);
  }
}

/**
 * Promote or abort names the preview revision, so a leftover annotation never acts on a later
 * rollout; a canary's promote also names its step, so it never completes a later step.
 */
async function annotatePreview(t: Target, action: 'promote' | 'abort', full = false): Promise<void> {
  const wsb = await getBalancer(t);
  const preview = wsb.status?.previewRevision;
  if (!preview) {
    const active = wsb.status?.activeRevision;
    throw new CliError(`wsbalancer "${t.name}" has no preview revision to ${action}${active ? ` (revision ${active} is active)` : ''}`);
  }
  const annotation = ANNOTATIONS[action];
  const canary = wsb.status?.rollout?.promotingSince === undefined ? wsb.status?.rollout?.canary : undefined;
  let value = preview;
  let outcome = action === 'promote' ? `the operator promotes revision ${preview}` : `the operator aborts the rollout of revision ${preview}`;
  if (action === 'promote' && canary) {
    value = promoteValue(preview, full ? 'full' : canary.step);
    outcome = full ? `canary ${preview} skips its remaining steps and is promoted` : `canary ${preview} completes step ${canary.step + 1} (${canary.stepText ?? ''})`;
  }
  await annotate(t, { [annotation]: value });
  process.stdout.write(`wsbalancer.${GROUP}/${t.name} annotated ${annotation}=${value}: ${outcome}\n`);
  if (action === 'promote' && wsb.metadata.annotations?.[ANNOTATIONS.paused] === 'true') {
    process.stdout.write(`note: ${ANNOTATIONS.paused} is "true": the promotion starts after \`kubectl baton resume ${t.name}\`\n`);
  }
}

interface EventLine {
  time: string;
  type: string;
  reason: string;
  from: string;
  note: string;
}

/** The WsBalancer's last events (events.k8s.io/v1), oldest first. */
async function lastEvents(t: Target): Promise<EventLine[]> {
  const { items } = await t.events.listNamespacedEvent({ namespace: t.namespace, fieldSelector: `regarding.kind=${KIND},regarding.name=${t.name}` });
  return items
    .map((e) => ({ time: eventTime(e), type: e.type ?? '', reason: e.reason ?? '', from: e.reportingController ?? '', note: (e.note ?? '').replace(/\s+/g, ' ') }))
    .sort((a, b) => a.time.localeCompare(b.time))
    .slice(-EVENTS_SHOWN);
}

/** When the event last happened, as an ISO time; events written through core/v1 may lack eventTime. */
function eventTime(e: EventsV1Event): string {
  const when = e.series?.lastObservedTime ?? e.eventTime ?? e.deprecatedLastTimestamp ?? e.metadata?.creationTimestamp;
  return when ? new Date(when).toISOString() : '';
}

async function status(t: Target, output: Flags['output']): Promise<void> {
  const wsb = await getBalancer(t);
  // Events are extra: a user allowed to read the WsBalancer but not the events still gets its status.
  let events: EventLine[] | string;
  try {
    events = await lastEvents(t);
  } catch (err) {
    events = `cannot list events: ${apiError(err, t).message}`;
  }
  const annotations = Object.fromEntries(Object.values(ANNOTATIONS).flatMap((key) => (wsb.metadata.annotations?.[key] !== undefined ? [[key, wsb.metadata.annotations[key]]] : [])));
  if (output) {
    const report = { name: t.name, namespace: t.namespace, annotations, status: wsb.status ?? {}, events };
    process.stdout.write(output === 'json' ? `${JSON.stringify(report, null, 2)}\n` : stringify(report));
    return;
  }
  const checked = validateSpec(wsb.spec);
  const steps = checked.ok ? checked.spec.rollout.canary?.steps : undefined;
  process.stdout.write(describe(t, annotations, wsb.status, steps, events, Date.now()));
}

function describe(
  t: Target,
  annotations: Record<string, string>,
  s: WsBalancerStatus | undefined,
  steps: readonly CanaryStep[] | undefined,
  events: EventLine[] | string,
  now: number,
): string {
  const age = (iso: string | undefined) => (iso ? shortDuration(now - Date.parse(iso)) : '');
  const fields: Array<[string, string | undefined]> = [
    ['Name', t.name],
    ['Namespace', t.namespace],
    ['Phase', s?.phase ?? '(no status yet: is the operator running?)'],
    ['Active', s?.activeRevision ?? '<none>'],
    ['Preview', s?.previewRevision ?? '<none>'],
    ['Previous', s?.previousRevision ?? '<none>'],
    ['Aborted', s?.abortedRevision],
    ['Rollout', s?.rollout && rolloutLine(s.rollout, age)],
    ['Annotations', Object.keys(annotations).length ? Object.entries(annotations).map(([k, v]) => `${k}=${v}`).join(', ') : undefined],
    ['Sessions', s?.sessions?.toString()],
    ['Sidecars', s?.sidecars && `${s.sidecars.desired} desired, ${s.sidecars.synced} synced, ${s.sidecars.unreachable} unreachable`],
  ];
  const shown = fields.filter((f): f is [string, string] => f[1] !== undefined);
  const width = Math.max(...shown.map(([k]) => k.length)) + 2;
  let out = shown.map(([k, v]) => `${`${k}:`.padEnd(width)}${v}\n`).join('');
  if (s?.revisions?.length) {
    out += `\nRevisions:\n${table([['NAME', 'ROLE', 'READY', 'SERVING', 'TERMINATING', 'SESSIONS'], ...s.revisions.map((r) => [r.name || '""', r.role, `${r.ready}`, `${r.serving}`, `${r.terminating}`, `${r.sessions}`])])}`;
  }
  const canary = s?.previewRevision !== undefined ? s.rollout?.canary : undefined;
  if (canary && steps) out += canarySection(canary, steps, s?.rollout?.promotingSince !== undefined);
  if (s?.conditions?.length) {
    out += `\nConditions:\n${table([['TYPE', 'STATUS', 'REASON', 'AGE', 'MESSAGE'], ...s.conditions.map((c) => [c.type, c.status, c.reason, age(c.lastTransitionTime), c.message])])}`;
  }
  out += '\nEvents:\n';
  if (typeof events === 'string') out += `  ${events}\n`;
  else if (events.length === 0) out += '  <none>\n';
  else out += table([['AGE', 'TYPE', 'REASON', 'FROM', 'MESSAGE'], ...events.map((e) => [age(e.time), e.type, e.reason, e.from, e.note])]);
  return out;
}

/** A canary's steps (the current one marked ">"), the weight asked, and the share measured per sidecar. */
function canarySection(c: NonNullable<NonNullable<WsBalancerStatus['rollout']>['canary']>, steps: readonly CanaryStep[], promoting: boolean): string {
  const stateOf = (i: number): string => {
    if (c.analysis?.step === i) return `analysis ${c.analysis.result}: ${c.analysis.message}`;
    if (i < c.step || promoting) return 'done';
    if (i > c.step) return '';
    if (c.aborting) return 'aborting: sessions moving back';
    return c.message ?? 'current';
  };
  const header = promoting ? 'promoting (every step done)' : c.aborting ? `aborting, weight ${c.weight}%` : `step ${c.step + 1}/${steps.length}, weight ${c.weight}%`;
  let out = `\nCanary steps (${header}):\n${table([['', '#', 'STEP', 'STATE'], ...steps.map((step, i) => [i === c.step && !promoting ? '>' : '', `${i + 1}`, stepText(step), stateOf(i)])])}`;
  if (c.sidecars?.length) {
    const pct = (n: number, of: number) => (of === 0 ? '-' : `${((100 * n) / of).toFixed(1)}%`);
    out += `\nCanary share (asked ${c.weight}%):\n${table([
      ['SIDECAR', 'CANARY', 'TARGET', 'STABLE', 'MOVING', 'SHARE'],
      ...c.sidecars.map((x) => [x.name, `${x.canary}`, `${x.target}`, `${x.stable}`, `${x.moving}`, pct(x.canary, x.canary + x.stable)]),
    ])}`;
  }
  return out;
}

function rolloutLine(r: NonNullable<WsBalancerStatus['rollout']>, age: (iso: string | undefined) => string): string {
  const parts: string[] = [];
  if (r.previewSince) parts.push(`preview ready for ${age(r.previewSince)}`);
  if (r.promotingSince) parts.push(`promoting for ${age(r.promotingSince)}`);
  if (r.checks) parts.push(`checks ${r.checks.result}: ${r.checks.message}`);
  return parts.join(', ');
}

/** Rows as aligned columns, indented by two spaces; the last column is not padded. */
function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => `  ${r.map((cell, i) => (i < r.length - 1 ? cell.padEnd(widths[i]! + 2) : cell)).join('')}`.trimEnd() + '\n').join('');
}

/** A short age like kubectl's: 45s, 12m, 5h, 3d (kubectl also shows 6m7s and 3d4h). */
function shortDuration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 120) return `${s}s`;
  if (s < 120 * 60) return `${Math.floor(s / 60)}m`;
  if (s < 48 * 3600) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86_400)}d`;
}

/** A client-node failure as a message for a person. */
function apiError(err: unknown, t: Target): CliError {
  const { code, body } = err as { code?: unknown; body?: unknown };
  if (typeof code !== 'number') {
    // A network failure: fetch's "fetch failed" says nothing, its cause does.
    const cause = (err as Error).cause as Error | undefined;
    return new CliError(`cannot reach the API server ${t.server}: ${cause?.message ?? (err as Error).message}`);
  }
  let apiStatus: { message?: string; details?: { name?: string } } | undefined;
  try {
    apiStatus = typeof body === 'string' ? JSON.parse(body) : undefined;
  } catch {
    // Not a Kubernetes Status, e.g. "404 page not found".
  }
  if (code === 404 && apiStatus?.details?.name === t.name) return new CliError(`wsbalancer "${t.name}" not found in namespace "${t.namespace}"`);
  if (code === 404) return new CliError(`the server has no ${PLURAL}.${GROUP}/${VERSION} resource: is the WsBalancer CRD installed? (crds/baton.dev_wsbalancers.yaml)`);
  if (code === 401) return new CliError('the API server did not accept the credentials (401 Unauthorized)');
  return new CliError(apiStatus?.message ?? `the API server answered ${code}`);
}
