// The dashboards and the JSON files they are written to (dashboards/*.json, for Grafana's import or
// provisioning). `node dist/dashboards/src/generate.js` writes them; test/dashboards.test.ts checks
// that the committed files are what the sources produce.
import type { Dashboard } from '@grafana/schema';
import { fileURLToPath } from 'node:url';
import { rolloutDashboard } from './rollout.js';
import { sidecarDashboard } from './sidecar.js';

/** dashboards/, relative to this module (dist/dashboards/src/ → repo root). */
const DIR = fileURLToPath(new URL('../../../dashboards/', import.meta.url));

export const DASHBOARDS: ReadonlyArray<{ name: string; path: string; dashboard: Dashboard }> = [
  { name: 'sidecar', path: `${DIR}baton-sidecar.json`, dashboard: sidecarDashboard },
  { name: 'rollout', path: `${DIR}baton-rollout.json`, dashboard: rolloutDashboard },
];

export const dashboardJson = (d: Dashboard): string => `${JSON.stringify(d, null, 2)}\n`;
