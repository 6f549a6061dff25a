// Which codec a session uses: built-ins by name, user codecs from a module, chosen by path prefix,
// or (codec.default auto) by the protocol the session speaks: the subprotocol its backend accepted,
// or its request (socket.io has no subprotocol).
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { SidecarConfig } from '../../common/config/schema.js';
import type { CodecModule, ProtocolState, SessionCodec } from './codec.js';
import { BUILTIN_CODECS, type BuiltinCodec } from '../../common/vocabulary.js';
import { createGraphqlWsCodec } from './graphql-ws.js';
import { createJsonRpcCodec } from './json-rpc.js';
import { createMqttCodec } from './mqtt.js';
import { createOcppCodec } from './ocpp.js';
import { createSocketIoCodec } from './socketio.js';
import { createStompCodec } from './stomp.js';
import { newCodecStats, type CodecStats } from './tracker.js';

export interface ActiveCodec {
  codec: SessionCodec;
  stats: CodecStats;
}

/** The built-in codecs by config name. */
const BUILTINS: Readonly<Record<BuiltinCodec, () => SessionCodec>> = {
  ocpp: createOcppCodec,
  'json-rpc': createJsonRpcCodec,
  'socket.io': createSocketIoCodec,
  'graphql-ws': createGraphqlWsCodec,
  mqtt: createMqttCodec,
  stomp: createStompCodec,
  stateful: createStatefulCodec,
};

/** A path declared to carry a stateful protocol the sidecar cannot resume: 1012 at a backend change. */
function createStatefulCodec(): SessionCodec {
  const state: ProtocolState = {
    sent() {},
    received() {},
    unresumable: () => 'its path is declared stateful (codec "stateful")',
    replay: () => [],
    resumeAnswer: () => 'pass',
  };
  return { name: 'stateful', classify: () => 'other', createState: () => state };
}

export class CodecRouter {
  constructor(
    /** Longest prefix first; a null codec: none. */
    private readonly routes: { prefix: string; codec: ActiveCodec | null }[],
    /** For paths no route matches: a codec, none (null), or 'auto'. */
    private readonly fallback: ActiveCodec | null | 'auto',
    /** The built-ins 'auto' chooses from. */
    private readonly detectable: readonly ActiveCodec[],
    /** Every codec in use, by name (for metrics). */
    readonly all: ReadonlyMap<string, ActiveCodec>,
  ) {}

  /**
   * The codec of a session: by its path (path and query as the client sent them), else by the
   * subprotocol its backend accepted or its request; null for none.
   */
  forSession(path: string, protocol: string): ActiveCodec | null {
    for (const r of this.routes) if (path.startsWith(r.prefix)) return r.codec;
    if (this.fallback !== 'auto') return this.fallback;
    for (const c of this.detectable) {
      if (protocol !== '' && c.codec.subprotocols?.includes(protocol)) return c;
      if (c.codec.matchesRequest?.(path)) return c;
    }
    return null;
  }
}

/** Builds the router from config; a user module that can't be loaded fails with the key named. */
export async function loadCodecs(config: SidecarConfig['codec']): Promise<CodecRouter> {
  const byConfigName = new Map<string, ActiveCodec>();
  /** By the codec's own name: its metric label (a module's path would make a poor label). */
  const all = new Map<string, ActiveCodec>();
  const get = async (name: string, key: string): Promise<ActiveCodec | null> => {
    if (name === 'none') return null;
    const existing = byConfigName.get(name);
    if (existing) return existing;
    const codec = await instantiate(name, key);
    const active = all.get(codec.name) ?? { codec, stats: newCodecStats() };
    byConfigName.set(name, active);
    all.set(codec.name, active);
    return active;
  };
  const detectable: ActiveCodec[] = [];
  if (config.default === 'auto') {
    for (const name of BUILTIN_CODECS) {
      const probe = BUILTINS[name]();
      if (probe.subprotocols || probe.matchesRequest) detectable.push((await get(name, 'codec.default'))!);
    }
  }
  const fallback = config.default === 'auto' ? 'auto' : await get(config.default, 'codec.default');
  const routes: { prefix: string; codec: ActiveCodec | null }[] = [];
  for (const [i, entry] of config.paths.entries()) {
    const eq = entry.indexOf('=');
    routes.push({ prefix: entry.slice(0, eq).trim(), codec: await get(entry.slice(eq + 1).trim(), `codec.paths[${i}]`) });
  }
  routes.sort((a, b) => b.prefix.length - a.prefix.length);
  return new CodecRouter(routes, fallback, detectable, all);
}

async function instantiate(name: string, key: string): Promise<SessionCodec> {
  if ((BUILTIN_CODECS as readonly string[]).includes(name)) return BUILTINS[name as BuiltinCodec]();
  const file = resolve(name.slice('module:'.length));
  let mod: Partial<CodecModule>;
  try {
    mod = (await import(pathToFileURL(file).href)) as Partial<CodecModule>;
  } catch (err) {
    throw new Error(`${key}: cannot load codec module ${file}: ${(err as Error).message}`);
  }
  if (typeof mod.createCodec !== 'function') throw new Error(`${key}: ${file} does not export a createCodec() function`);
  const codec = mod.createCodec();
  if (!codec || typeof codec.classify !== 'function' || typeof codec.name !== 'string') {
    throw new Error(`${key}: createCodec() in ${file} must return { name: string, classify(data, isBinary, from, ids) }`);
  }
  return codec;
}
