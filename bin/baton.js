#!/usr/bin/env node
// Thin launcher: the compiled CLI lives in dist/ (built by `npm run build`, run by `npm ci` via prepare).
import('../dist/cli/baton.js').then((cli) => cli.main(process.argv.slice(2))).catch((err) => {
  process.stderr.write(`baton: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
