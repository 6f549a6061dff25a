#!/usr/bin/env node
// Runs every compiled test file (dist/test/**/*.test.js) with Node's built-in runner, on the Node
// that runs this script: `npm test` starts it with the image's (scripts/ensure-node.sh), so every
// sidecar and operator a test spawns (process.execPath) runs what ships. --test is given files,
// not globs (Node 20's takes no globs), so they are listed here. Extra arguments are passed to
// node (e.g. `npm test -- --test-name-pattern=failover`); TEST_FILTER=substr limits which files run.
import { readdirSync, readFileSync } from 'node:fs';
import { execFileSync, spawn } from 'node:child_process';
import { join, relative } from 'node:path';

const root = new URL('../dist/test/', import.meta.url).pathname;
const filter = process.env.TEST_FILTER ?? '';
const files = readdirSync(root, { recursive: true })
  .map(String)
  .filter((f) => f.endsWith('.test.js') && f.includes(filter))
  .sort()
  .map((f) => join(root, f));
if (files.length === 0) {
  console.error(`no test files under ${relative(process.cwd(), root)} matching "${filter}"`);
  process.exit(1);
}
// The operator tests run a real control plane; its binaries are built once per machine (about 7
// minutes the first time, then cached), here rather than inside a test's timeout.
if (files.some((f) => readFileSync(f, 'utf8').includes('kube/control-plane.js'))) {
  execFileSync('bash', [new URL('../scripts/ensure-kube.sh', import.meta.url).pathname], { stdio: ['ignore', 'ignore', 'inherit'] });
}
const child = spawn(process.execPath, ['--test', '--test-concurrency=1', ...process.argv.slice(2), ...files], {
  stdio: 'inherit',
});
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
