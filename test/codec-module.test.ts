// A user's own codec, named in the config as a module: loaded at start, used like the built-ins.
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { BackendProcess, backendsYaml, killAllBackends, startSidecar, TestClient, waitFor } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'baton-codec-'));
// The example from docs/codecs.md: "REQ <id> ..." requests and "RES <id> ..." answers.
const codecFile = join(dir, 'my-codec.mjs');
writeFileSync(
  codecFile,
  `export function createCodec() {
  return {
    name: 'my-protocol',
    classify(data, isBinary, from, ids) {
      if (isBinary || data.length < 5) return 'other';
      const kind = data.toString('latin1', 0, 4);
      if (kind !== 'REQ ' && kind !== 'RES ') return 'other';
      const end = data.indexOf(0x20, 4);
      if (end < 0) return 'malformed';
      ids.push(data.toString('latin1', 4, end));
      return kind === 'REQ ' ? 'request' : 'response';
    },
  };
}
`,
);

after(killAllBackends);

test('a codec module from the config tracks requests: an unanswered one is replayed after a failover', async () => {
  // The backends never answer REQ frames with RES (they echo "<id>|REQ ..."), so every REQ stays unanswered.
  const a = await BackendProcess.start('a');
  const b = await BackendProcess.start('b');
  const { sidecar, url } = await startSidecar(
    `codec: { default: "module:${codecFile}" }\nsession: { pingInterval: 200ms, pongTimeout: 300ms }\n` + backendsYaml([a, b]),
  );
  try {
    const c = await TestClient.connect(`${url}/mine`);
    const session = [...sidecar.sessions.values()][0]!;
    const [first, second] = session.backend!.id === 'a' ? [a, b] : [b, a];
    c.ws.send('REQ 7 do-something');
    await waitFor(() => c.texts().includes(`${first.id}|REQ 7 do-something`), 'echo from the first backend');
    await first.signal('SIGKILL');
    // The request was never answered with "RES 7", so the new backend gets it again.
    await waitFor(() => c.texts().includes(`${second.id}|REQ 7 do-something`), 'the request replayed to the second backend');
    const tracked = sidecar.codecs.all.get('my-protocol')!.stats;
    assert.equal(tracked.tracked, 1);
    assert.equal(tracked.replayed, 1);
    c.close();
  } finally {
    await sidecar.stop(0);
  }
});

test('a codec module that cannot be loaded stops the start with the config key named', async () => {
  const bad = join(dir, 'not-a-codec.mjs');
  writeFileSync(bad, 'export const nothing = 1;\n');
  await assert.rejects(startSidecar(`codec: { paths: ["/x=module:${bad}"] }\n`), /codec\.paths\[0\].*does not export a createCodec\(\) function/);
  await assert.rejects(startSidecar(`codec: { default: "module:${join(dir, 'missing.mjs')}" }\n`), /codec\.default: cannot load codec module/);
});
