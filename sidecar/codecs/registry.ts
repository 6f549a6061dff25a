// Which codec a session uses: built-ins by name, user codecs from a module, chosen by path prefix.
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { SidecarConfig } from '../config/types.js';
import type { CodecModule, SessionCodec } from './codec.js';
import { createJsonRpcCodec } from './json-rpc.js';
import { createOcppCodec } from './ocpp.js';
import { newCodecStats, type CodecStats } from './tracker.js';

export interface ActiveCodec {
  codec: SessionCodec;
  stats: CodecStats;
}

export class CodecRouter {
  constructor(
    /** Longest prefix first. */
    private readonly routes: { prefix: string; codec: ActiveCodec | null }[],
    private readonly fallback: ActiveCodec | null,
    /** Every codec in use, by name (for metrics). */
    readonly all: ReadonlyMap<string, ActiveCodec>,
  ) {}

  /** The codec for a request path (path and query as the client sent them), or null for none. */
  forPath(path: string): ActiveCodec | null {
    for (const r of this.routes) if (path.startsWith(r.prefix)) return r.codec;
    return this.fallback;
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
  const fallback = await get(config.default, 'codec.default');
  const routes: { prefix: string; codec: ActiveCodec | null }[] = [];
  for (const [i, entry] of config.paths.entries()) {
    const eq = entry.indexOf('=');
    routes.push({ prefix: entry.slice(0, eq).trim(), codec: await get(entry.slice(eq + 1).trim(), `codec.paths[${i}]`) });
  }
  routes.sort((a, b) => b.prefix.length - a.prefix.length);
  return new CodecRouter(routes, fallback, all);
}

async function instantiate(name: string, key: string): Promise<SessionCodec> {
  if (name === 'ocpp') return createOcppCodec();
  if (name === 'json-rpc') return createJsonRpcCodec();
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
