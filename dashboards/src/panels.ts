// Builders for the Grafana dashboards, typed against Grafana's published schema (@grafana/schema):
// tsc rejects a field Grafana does not know or a value of the wrong shape. Every panel reads a
// Prometheus data source chosen by the dashboard's `datasource` variable.
import {
  BigValueColorMode,
  BigValueGraphMode,
  BigValueJustifyMode,
  BigValueTextMode,
  DashboardCursorSync,
  FieldColorModeId,
  GraphDrawStyle,
  LegendDisplayMode,
  LineInterpolation,
  MappingType,
  PercentChangeColorMode,
  SortOrder,
  StackingMode,
  ThresholdsMode,
  TooltipDisplayMode,
  VariableRefresh,
  VariableSort,
  VisibilityMode,
  VizOrientation,
  type Dashboard,
  type DataQuery,
  type DataSourceRef,
  type FieldConfigSource,
  type GridPos,
  type Panel,
  type RowPanel,
  type ValueMapping,
  type VariableModel,
} from '@grafana/schema';
import type { Options as StatOptions } from '@grafana/schema/dist/esm/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen';
import type {
  FieldConfig as StateTimelineFieldConfig,
  Options as StateTimelineOptions,
} from '@grafana/schema/dist/esm/raw/composable/statetimeline/panelcfg/x/StateTimelinePanelCfg_types.gen';
import type {
  FieldConfig as TimeSeriesFieldConfig,
  Options as TimeSeriesOptions,
} from '@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen';

const DATASOURCE: DataSourceRef = { type: 'prometheus', uid: '${datasource}' };

/** A Prometheus query of a panel, as Grafana's Prometheus data source stores it. */
export interface PromQuery extends DataQuery {
  expr: string;
  legendFormat: string;
  range: boolean;
}

export interface Query {
  expr: string;
  /** Grafana legend template, e.g. "{{backend}}". */
  legend: string;
}

/** A discrete value a state panel shows as text and colour (e.g. a phase coded as a number). */
export interface State {
  value: number;
  text: string;
  color: string;
}

interface PanelSpec {
  title: string;
  description: string;
  queries: Query[];
  /** Grafana unit id: short, bytes, s, Bps, or "suffix:<text>". */
  unit?: string;
  /** Width in grid columns (of 24) and height in grid rows (of 30 px). */
  w: number;
  h: number;
}

/** A panel before the dashboard lays it out. Options and custom field config are typed by their
 * panel plugin's schema, then spread into the bare records Grafana's Panel type holds. */
type Placed = { panel: Panel | RowPanel; w: number; h: number };

const targets = (queries: Query[]): PromQuery[] =>
  queries.map((q, i) => ({ refId: String.fromCharCode(65 + i), datasource: DATASOURCE, expr: q.expr, legendFormat: q.legend, range: true }));

const GREEN_BASE = { mode: ThresholdsMode.Absolute, steps: [{ color: 'green', value: null }] };

export function timeseries(spec: PanelSpec & { stacked?: boolean; stepped?: boolean }): Placed {
  const custom: TimeSeriesFieldConfig = {
    drawStyle: GraphDrawStyle.Line,
    lineInterpolation: spec.stepped ? LineInterpolation.StepAfter : LineInterpolation.Linear,
    lineWidth: 1,
    fillOpacity: spec.stacked ? 30 : 10,
    showPoints: VisibilityMode.Never,
    spanNulls: false,
    stacking: { mode: spec.stacked ? StackingMode.Normal : StackingMode.None, group: 'A' },
  };
  const options: TimeSeriesOptions = {
    legend: { displayMode: LegendDisplayMode.List, placement: 'bottom', showLegend: true, calcs: [] },
    tooltip: { mode: TooltipDisplayMode.Multi, sort: SortOrder.Descending },
  };
  const fieldConfig: FieldConfigSource = {
    defaults: { unit: spec.unit ?? 'short', min: 0, color: { mode: FieldColorModeId.PaletteClassic }, thresholds: GREEN_BASE, custom: { ...custom } },
    overrides: [],
  };
  return placed('timeseries', spec, options, fieldConfig);
}

export function stat(spec: PanelSpec & { decimals?: number }): Placed {
  const options: StatOptions = {
    reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false },
    orientation: VizOrientation.Auto,
    textMode: BigValueTextMode.Value,
    colorMode: BigValueColorMode.None,
    graphMode: BigValueGraphMode.Area,
    justifyMode: BigValueJustifyMode.Auto,
    percentChangeColorMode: PercentChangeColorMode.Standard,
    showPercentChange: false,
    wideLayout: true,
  };
  const fieldConfig: FieldConfigSource = {
    defaults: { unit: spec.unit ?? 'short', decimals: spec.decimals ?? 0, color: { mode: FieldColorModeId.Thresholds }, thresholds: GREEN_BASE },
    overrides: [],
  };
  return placed('stat', spec, options, fieldConfig);
}

/** One row per series, coloured by its current state: `states` maps each coded value to a name. */
export function stateTimeline(spec: PanelSpec & { states: State[] }): Placed {
  const mappings: ValueMapping[] = [
    {
      type: MappingType.ValueToText,
      options: Object.fromEntries(spec.states.map((s, index) => [String(s.value), { text: s.text, color: s.color, index }])),
    },
  ];
  const custom: StateTimelineFieldConfig = { fillOpacity: 80, lineWidth: 0 };
  const options: StateTimelineOptions = {
    legend: { displayMode: LegendDisplayMode.List, placement: 'bottom', showLegend: true, calcs: [] },
    tooltip: { mode: TooltipDisplayMode.Single, sort: SortOrder.None },
    showValue: VisibilityMode.Auto,
    mergeValues: true,
    rowHeight: 0.9,
  };
  const fieldConfig: FieldConfigSource = {
    defaults: { color: { mode: FieldColorModeId.Thresholds }, thresholds: GREEN_BASE, mappings, custom: { ...custom } },
    overrides: [],
  };
  return placed('state-timeline', spec, options, fieldConfig);
}

export function row(title: string): Placed {
  return { panel: { type: 'row', title, collapsed: false, panels: [], id: 0, gridPos: { x: 0, y: 0, w: 24, h: 1 } }, w: 24, h: 1 };
}

function placed(type: string, spec: PanelSpec, options: object, fieldConfig: FieldConfigSource): Placed {
  const panel: Panel = {
    type,
    title: spec.title,
    description: spec.description,
    datasource: DATASOURCE,
    // Spread into plain objects: Grafana types a target as a bare record.
    targets: targets(spec.queries).map((t) => ({ ...t })),
    options: { ...options },
    fieldConfig,
  };
  return { panel, w: spec.w, h: spec.h };
}

/** A Prometheus query variable whose values are one label's values on a selector. */
export function labelVariable(name: string, label: string, selector: string, description: string): VariableModel {
  return {
    type: 'query',
    name,
    label,
    description,
    datasource: DATASOURCE,
    query: `label_values(${selector}, ${name})`,
    refresh: VariableRefresh.onTimeRangeChanged,
    sort: VariableSort.alphabeticalAsc,
    multi: true,
    includeAll: true,
    allValue: '.*',
    current: { text: 'All', value: '$__all' },
  };
}

/** A dashboard: panels laid out left to right in the order given, wrapping at 24 columns. */
export function dashboard(spec: { uid: string; title: string; description: string; tags: string[]; variables: VariableModel[]; panels: Placed[] }): Dashboard {
  const datasource: VariableModel = {
    type: 'datasource',
    name: 'datasource',
    label: 'Prometheus',
    query: 'prometheus',
    current: { text: 'default', value: 'default' },
  };
  let x = 0;
  let y = 0;
  let rowHeight = 0;
  const panels = spec.panels.map(({ panel, w, h }, i) => {
    if (x + w > 24) {
      x = 0;
      y += rowHeight;
      rowHeight = 0;
    }
    const gridPos: GridPos = { x, y, w, h };
    x += w;
    rowHeight = Math.max(rowHeight, h);
    return { ...panel, id: i + 1, gridPos };
  });
  return {
    uid: spec.uid,
    title: spec.title,
    description: spec.description,
    tags: spec.tags,
    editable: true,
    graphTooltip: DashboardCursorSync.Crosshair,
    schemaVersion: 42,
    time: { from: 'now-1h', to: 'now' },
    refresh: '30s',
    timezone: 'browser',
    templating: { list: [datasource, ...spec.variables] },
    annotations: { list: [] },
    links: [],
    panels,
  };
}

/** What a panel shows, read back from a dashboard (rows included, with no queries). */
export interface PanelView {
  title: string;
  type: string;
  unit: string;
  gridPos: GridPos;
  stacked: boolean;
  stepped: boolean;
  states: State[];
  queries: Query[];
}

export function panelViews(d: Dashboard): PanelView[] {
  return (d.panels ?? []).map((p) => {
    const gridPos = p.gridPos!;
    if (p.type === 'row') return { title: p.title ?? '', type: 'row', unit: '', gridPos, stacked: false, stepped: false, states: [], queries: [] };
    const panel = p as Panel;
    const defaults = panel.fieldConfig?.defaults;
    const custom = defaults?.custom ?? {};
    const states = (defaults?.mappings ?? []).flatMap((m) =>
      m.type === MappingType.ValueToText ? Object.entries(m.options).map(([v, r]) => ({ value: Number(v), text: r.text ?? v, color: r.color ?? 'gray' })) : [],
    );
    return {
      title: panel.title ?? '',
      type: panel.type,
      unit: defaults?.unit ?? 'short',
      gridPos,
      stacked: (custom.stacking as { mode?: string } | undefined)?.mode === StackingMode.Normal,
      stepped: custom.lineInterpolation === LineInterpolation.StepAfter,
      states,
      queries: (panel.targets ?? []).map((t) => ({ expr: String(t.expr), legend: String(t.legendFormat) })),
    };
  });
}

/** Every PromQL expression of a dashboard: its panels' queries and its variables' selectors. */
export function dashboardExprs(d: Dashboard): string[] {
  const variables = (d.templating?.list ?? []).flatMap((v) => {
    const selector = typeof v.query === 'string' ? /^label_values\((.*),\s*\w+\)$/.exec(v.query)?.[1] : undefined;
    return selector ? [selector] : [];
  });
  return [...panelViews(d).flatMap((p) => p.queries.map((q) => q.expr)), ...variables];
}
