// The module graph (madge, type imports included): no import cycles, and the two roles meet only in
// common/ — the operator imports nothing from sidecar/, the sidecar nothing from operator/, and
// common/ neither of them.
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import madge from 'madge';

const root = fileURLToPath(new URL('../../', import.meta.url));
const graph = madge(['common', 'sidecar', 'operator'], { baseDir: root, fileExtensions: ['ts'], tsConfig: `${root}tsconfig.json` });

/** Each import from a module under `from` of a module under one of `forbidden`, as "a → b". */
export function crossings(deps: Record<string, string[]>, from: string, forbidden: readonly string[]): string[] {
  const out: string[] = [];
  for (const [mod, imports] of Object.entries(deps)) {
    if (!mod.startsWith(`${from}/`)) continue;
    for (const dep of imports) if (forbidden.some((f) => dep.startsWith(`${f}/`))) out.push(`${mod} → ${dep}`);
  }
  return out;
}

test('no import cycle in common/, sidecar/ or operator/ (madge --circular)', async () => {
  const g = await graph;
  const modules = Object.keys(g.obj());
  assert.ok(modules.includes('sidecar/session.ts') && modules.includes('operator/plan.ts') && modules.includes('common/admin/contract.ts'), `madge read the sources (${modules.length} modules)`);
  assert.ok(g.obj()['sidecar/session.ts']!.includes('sidecar/session-machine.ts'), 'madge resolved the .js import specifiers to .ts files');
  assert.deepEqual(g.circular(), [], 'import cycles');
});

test('the operator and the sidecar import each other only through common/', async () => {
  const deps = (await graph).obj();
  assert.ok(deps['operator/controller.ts']!.includes('common/admin/contract.ts'), 'the operator reaches the contract in common/');
  assert.deepEqual(crossings(deps, 'operator', ['sidecar']), [], 'operator/ imports from sidecar/');
  assert.deepEqual(crossings(deps, 'sidecar', ['operator']), [], 'sidecar/ imports from operator/');
  assert.deepEqual(crossings(deps, 'common', ['sidecar', 'operator']), [], 'common/ imports from a role');
});

test('the boundary check sees a crossing', () => {
  const deps = { 'operator/a.ts': ['common/b.ts', 'sidecar/c.ts'], 'sidecar/c.ts': ['common/b.ts'], 'common/b.ts': [] };
  assert.deepEqual(crossings(deps, 'operator', ['sidecar']), ['operator/a.ts → sidecar/c.ts']);
  assert.deepEqual(crossings(deps, 'sidecar', ['operator']), []);
});
