// Writes dashboards/*.json from dashboards/src. Run after a build:
//
//   node dist/dashboards/src/generate.js           # (re)write the JSON files
//   node dist/dashboards/src/generate.js --check   # exit 1 if a file is out of date
import { readFileSync, writeFileSync } from 'node:fs';
import { DASHBOARDS, dashboardJson } from './index.js';

const check = process.argv.includes('--check');
let stale = 0;
for (const { path, dashboard } of DASHBOARDS) {
  const json = dashboardJson(dashboard);
  if (!check) writeFileSync(path, json);
  else if (readFileSync(path, 'utf8') !== json) {
    console.error(`${path} is out of date: run node dist/dashboards/src/generate.js`);
    stale++;
  }
}
process.exit(stale > 0 ? 1 : 0);
