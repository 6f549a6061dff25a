// The module graph: no import cycles in the sidecar or the operator (madge, type imports included).
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import madge from 'madge';

const root = fileURLToPath(new URL('../../', import.meta.url));

test('no import cycle in sidecar/ or operator/ (madge --circular)', async () => {
  const graph = await madge(['sidecar', 'operator'], { baseDir: root, fileExtensions: ['ts'], tsConfig: `${root}tsconfig.json` });
  const modules = Object.keys(graph.obj());
  assert.ok(modules.includes('sidecar/session.ts') && modules.includes('operator/plan.ts'), `madge read the sources (${modules.length} modules)`);
  assert.ok(graph.obj()['sidecar/session.ts']!.includes('sidecar/session-machine.ts'), 'madge resolved the .js import specifiers to .ts files');
  assert.deepEqual(graph.circular(), [], 'import cycles');
});
