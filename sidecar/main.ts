import { readFileSync, watch, type FSWatcher } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { ConfigError, loadConfig } from './config/load.js';
import { createLogger } from '../common/logger.js';
import { Sidecar } from './sidecar.js';

/**
 * `baton sidecar --config FILE`: load and validate the config (exit 2 on any problem, nothing
 * started), serve, reload on SIGHUP or when the file changes, drain on SIGTERM and exit 0.
 */
export async function runSidecar(configFile: string | undefined): Promise<void> {
  // V8 may send an allocation site's objects straight to the old generation once it has seen most
  // of them outlive a scavenge. Under a stream of handshakes that put short-lived session objects
  // where only a full GC frees them, and each kept its young parts alive through scavenges: with
  // the sessions in a ChurnMap, 12.4–12.5 µs of GC pause per handshake with pretenuring, 3.1–4.2
  // without (docs/performance.md). NODE_OPTIONS does not take V8's flag; set here, before the
  // first session, it holds for the process.
  setFlagsFromString('--no-allocation-site-pretenuring');
  let loaded;
  try {
    loaded = loadConfig({ file: configFile, env: process.env });
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`baton: invalid configuration${configFile ? ` in ${configFile}` : ''}:\n${err.problems.map((p) => `  - ${p}`).join('\n')}\n`);
      process.exit(2);
    }
    throw err;
  }
  const log = createLogger(loaded.config.logLevel, 'sidecar', { buffered: true });
  for (const w of loaded.warnings) log.warn({ reason: w }, 'config warning');
  const sidecar = new Sidecar(loaded.config, log);
  try {
    await sidecar.start();
  } catch (err) {
    log.fatal({ reason: (err as Error).message }, 'cannot start listener');
    process.exit(1);
  }

  let lastText = configFile ? readFileSync(configFile, 'utf8') : '';
  const reload = (trigger: string) => {
    try {
      if (configFile) lastText = readFileSync(configFile, 'utf8');
      const next = loadConfig({ file: configFile, env: process.env });
      for (const w of next.warnings) log.warn({ reason: w }, 'config warning');
      sidecar.reload(next.config);
    } catch (err) {
      const problems = err instanceof ConfigError ? err.problems : [(err as Error).message];
      log.error({ reason: trigger, problems }, 'config reload rejected; keeping the running config');
    }
  };
  process.on('SIGHUP', () => reload('SIGHUP'));

  let watcher: FSWatcher | undefined;
  if (configFile) {
    // Watch the directory: a ConfigMap update swaps a symlink rather than writing the file.
    const path = resolve(configFile);
    let pending: NodeJS.Timeout | undefined;
    watcher = watch(dirname(path), (_event, name) => {
      if (name && name !== basename(path) && !name.startsWith('..')) return;
      clearTimeout(pending);
      pending = setTimeout(() => {
        let text: string;
        try {
          text = readFileSync(path, 'utf8');
        } catch {
          return; // mid-swap; the next event will bring it
        }
        if (text !== lastText) reload('file changed');
      }, 100);
    });
  }

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    watcher?.close();
    log.info({ reason: signal }, 'stopping');
    void sidecar.stop().then(() => process.exit(0));
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}
