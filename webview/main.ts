/**
 * The inspection panel (runs in the webview). Owns the DOM and the message port; state
 * transitions live in state.ts. Every request to the host carries an id and gets exactly one
 * reply; plan requests are coalesced so typing in a field never queues a backlog.
 */
import '@vscode-elements/elements/dist/main.js';
import 'uplot/dist/uPlot.min.css';
import './panel.css';
import { normalizeSpectra, normalizeSweep, POLICIES, type EnergyLevel, type HostMessage, type PlanControls, type PlanResult, type PolicyName, type RequestMap, type RequestType, type SavingsControls } from '../src/protocol';
import { readableSeriesColor, stackedBackground } from './colors';
import { cellSize, drawHeatmap, drawLegend, hitTest, type HeatmapTheme } from './heatmap';
import { SpectrumPlots, SweepPlot, type PlotTheme, type SweepTheme } from './plots';
import { canExport, formatBytes, heatmapValues, initialState, policyField, reduce, selectedRank, selectedSpectra, sweepChart, sweepRows, sweepSetting, type Action, type HeatmapMode, type PanelState } from './state';

interface VsCodeApi {
  postMessage(message: unknown): void;
  setState(state: unknown): void;
  getState(): unknown;
}
declare function acquireVsCodeApi(): VsCodeApi;

const vscode = acquireVsCodeApi();
let state: PanelState = initialState();
/** When the latest spectra message arrived (for the render-time measurement), until shown. */
let spectraArrived: number | null = null;

// ------------------------------------------------------------------ requests

type Params<K extends RequestType> = Omit<Extract<import('../src/protocol').WebviewRequest, { type: K }>, 'type' | 'id'>;
const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error & { cancelled?: boolean }) => void }>();
let nextId = 1;

function request<K extends RequestType>(type: K, params: Params<K>): Promise<RequestMap[K]['result']> {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
    vscode.postMessage({ type, id, ...params });
  });
}

function dispatch(action: Action): void {
  state = reduce(state, action);
  scheduleRender();
  if (state.planPending) schedulePlan();
}

// Plan requests: at most one in flight; the latest controls win.
let planInFlight = false;
let planTimer: ReturnType<typeof setTimeout> | undefined;
function schedulePlan(): void {
  if (planTimer !== undefined || planInFlight) return;
  planTimer = setTimeout(sendPlan, 30);
}
function sendPlan(): void {
  planTimer = undefined;
  if (!state.summary || !state.planPending) return;
  const plan: PlanControls = state.plan;
  const savings: SavingsControls = state.savings;
  planInFlight = true;
  request('plan', { plan, savings })
    .then((result) => {
      planInFlight = false;
      const fresh = state.plan === plan && state.savings === savings;
      dispatch({ kind: 'planResult', result: reviveResult(result) });
      if (!fresh) {
        state = { ...state, planPending: true };
        schedulePlan();
      }
    })
    .catch((e: Error) => {
      planInFlight = false;
      const fresh = state.plan === plan && state.savings === savings;
      dispatch({ kind: 'planError', message: e.message });
      if (!fresh) {
        state = { ...state, planPending: true };
        schedulePlan();
      }
    });
}

function reviveResult(r: PlanResult): PlanResult {
  const ranks = r.ranks instanceof Uint32Array ? r.ranks : Uint32Array.from(Object.values(r.ranks as unknown as Record<string, number>));
  return { ...r, ranks };
}

window.addEventListener('message', (event: MessageEvent) => {
  const m = event.data as HostMessage;
  if (!m || typeof m !== 'object') return;
  if (m.type === 'reply') {
    const p = pending.get(m.id);
    if (!p) return;
    pending.delete(m.id);
    if (m.ok) p.resolve(m.result);
    else p.reject(Object.assign(new Error(m.error), { cancelled: m.cancelled }));
    return;
  }
  if (m.type === 'spectra') {
    spectraArrived = performance.now();
    try {
      dispatch({ kind: 'host', message: { type: 'spectra', spectra: normalizeSpectra(m.spectra) } });
    } catch (e) {
      dispatch({ kind: 'notice', level: 'error', message: `spectra: ${(e as Error).message}` });
    }
    return;
  }
  if (m.type === 'sweepResult') {
    try {
      dispatch({ kind: 'host', message: { type: 'sweepResult', result: normalizeSweep(m.result) } });
    } catch (e) {
      dispatch({ kind: 'notice', level: 'error', message: `sweep: ${(e as Error).message}` });
    }
    return;
  }
  if (m.type === 'focus') {
    document.getElementById(m.section)?.scrollIntoView({ behavior: 'smooth', block: 'start' });
    return;
  }
  dispatch({ kind: 'host', message: m });
});

// ------------------------------------------------------------------ DOM

const app = document.getElementById('app') as HTMLElement;
app.innerHTML = `
<header class="bar">
  <div class="title"><h1 id="model-name">Factored Keys</h1><span id="model-facts" class="muted"></span><span id="model-features" class="muted"></span></div>
  <div class="actions">
    <vscode-badge id="busy" class="hidden"></vscode-badge>
    <vscode-button id="btn-backend" secondary title="Compute backend (click to change)">backend: auto</vscode-button>
    <vscode-button id="btn-analyze" secondary>Analyze</vscode-button>
    <vscode-button id="btn-cancel" secondary class="hidden">Cancel</vscode-button>
    <vscode-button id="btn-evaluate" secondary disabled title="Perplexity of the plan on held-out text">Evaluate</vscode-button>
    <vscode-button id="btn-sweep" secondary disabled title="Perplexity of both methods over ranks (or energy thresholds) against key-cache size">Sweep</vscode-button>
    <vscode-button id="btn-export">Export…</vscode-button>
  </div>
</header>
<div id="notice" class="notice hidden" role="status"></div>
<main class="grid">
  <section class="card" id="heatmaps">
    <div class="card-head">
      <h2>Heads</h2>
      <div class="inline">
        <vscode-single-select id="heat-mode" aria-label="Heatmap shows">
          <vscode-option value="effective:p90">effective rank (90% energy)</vscode-option>
          <vscode-option value="effective:p95" selected>effective rank (95% energy)</vscode-option>
          <vscode-option value="effective:p99">effective rank (99% energy)</vscode-option>
          <vscode-option value="chosen">chosen rank (plan)</vscode-option>
        </vscode-single-select>
        <canvas id="legend" aria-hidden="true"></canvas>
      </div>
    </div>
    <div class="maps">
      <figure><figcaption>Keys <span class="muted">(layer × KV head)</span></figcaption><canvas id="heat-keys" data-testid="heatmap-keys" tabindex="0"></canvas></figure>
      <figure><figcaption>Queries <span class="muted">(layer × query head)</span></figcaption><canvas id="heat-queries" data-testid="heatmap-queries" tabindex="0"></canvas></figure>
    </div>
    <p class="muted small">Click a head to plot its spectrum and pin its rank. Query heads share the factorization of their KV head.</p>
  </section>
  <section class="card" id="plan">
    <h2>Plan</h2>
    <div class="form">
      <vscode-label for="policy">Policy</vscode-label>
      <vscode-single-select id="policy">${POLICIES.map((p) => `<vscode-option value="${p}">${p}</vscode-option>`).join('')}</vscode-single-select>
      <vscode-label for="param" id="param-label">Rank</vscode-label>
      <vscode-textfield id="param" type="number"></vscode-textfield>
    </div>
    <p class="error-text small hidden" id="plan-error" role="alert"></p>
    <h3 id="sel-title">Selected head</h3>
    <div class="form">
      <vscode-label for="override">Rank</vscode-label>
      <div class="inline"><vscode-textfield id="override" type="number" min="1"></vscode-textfield>
      <vscode-button id="btn-pin" secondary>Pin</vscode-button><vscode-button id="btn-unpin" secondary>Unpin</vscode-button></div>
    </div>
    <p class="muted small" id="sel-info"></p>
    <p class="muted small" id="pins"></p>
  </section>
  <section class="card" id="savings" data-testid="savings">
    <h2>Cache savings</h2>
    <div class="form">
      <vscode-label for="ctx">Context</vscode-label><vscode-textfield id="ctx" type="number" min="1"></vscode-textfield>
      <vscode-label for="batch">Batch</vscode-label><vscode-textfield id="batch" type="number" min="1"></vscode-textfield>
      <vscode-label for="dtype">Cache dtype</vscode-label>
      <vscode-single-select id="dtype"><vscode-option value="f32">f32</vscode-option><vscode-option value="f16">f16</vscode-option><vscode-option value="bf16">bf16</vscode-option><vscode-option value="fp8">fp8</vscode-option></vscode-single-select>
    </div>
    <table class="numbers">
      <thead><tr><th></th><th>original</th><th>factored</th></tr></thead>
      <tbody>
        <tr><th>keys / token</th><td id="sv-k0"></td><td id="sv-k1"></td></tr>
        <tr><th>K+V / token</th><td id="sv-t0"></td><td id="sv-t1"></td></tr>
        <tr><th id="sv-at">K+V total</th><td id="sv-b0"></td><td id="sv-b1" data-testid="savings-factored-total"></td></tr>
      </tbody>
    </table>
    <p class="big"><span id="sv-saved" data-testid="savings-saved"></span> <span id="sv-cap" class="muted" data-testid="savings-capacity"></span></p>
    <p class="muted small" id="sv-energy"></p>
    <p class="small" id="sv-eval" data-testid="evaluation"></p>
    <p class="muted small" id="sv-reference" data-testid="savings-reference"></p>
  </section>
  <section class="card wide" id="spectra">
    <div class="card-head"><h2 id="spec-title">Spectrum</h2><span class="muted small" id="spec-info"></span></div>
    <div class="plots"><div id="plot-spectrum" data-testid="plot-spectrum"></div><div id="plot-energy" data-testid="plot-energy"></div></div>
  </section>
  <section class="card wide" id="sweep" data-testid="sweep">
    <div class="card-head"><h2>Quality vs key cache</h2><span class="muted small" id="sweep-info"></span></div>
    <p class="muted small" id="sweep-hint">Sweep measures perplexity on the Evaluate text for key-svd and qk-svd at ranks head_dim/16 … full (energy thresholds when the policy is energy), next to the original and this plan.</p>
    <div class="sweep-body" id="sweep-body">
      <div id="plot-sweep" data-testid="plot-sweep"></div>
      <table class="numbers hidden" id="sweep-table" data-testid="sweep-table">
        <thead><tr><th>series</th><th>setting</th><th>keys / token</th><th>perplexity</th><th>Δ</th></tr></thead>
        <tbody id="sweep-rows"></tbody>
      </table>
    </div>
  </section>
</main>`;

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;
type ValueElement = HTMLElement & { value: string; disabled: boolean };
const plots = new SpectrumPlots($('plot-spectrum'), $('plot-energy'));
const sweepPlot = new SweepPlot($('plot-sweep'), formatBytes);
let keyCell = 10;
let queryCell = 10;

function cssVar(name: string, fallback: string): string {
  const v = getComputedStyle(document.body).getPropertyValue(name).trim();
  return v || fallback;
}

function isHighContrast(): boolean {
  return document.body.classList.contains('vscode-high-contrast') || document.body.classList.contains('vscode-high-contrast-light');
}

function heatTheme(): HeatmapTheme {
  return {
    foreground: cssVar('--vscode-foreground', '#ccc'),
    muted: cssVar('--vscode-descriptionForeground', '#999'),
    focus: cssVar('--vscode-focusBorder', '#09f'),
    background: cssVar('--vscode-editor-background', '#1e1e1e'),
    highContrast: isHighContrast(),
  };
}

/**
 * A chart-palette colour as drawn on the cards: opaque, with at least 3:1 contrast (theme chart
 * colours can be translucent or faint on light backgrounds; see colors.ts).
 */
function seriesColor(name: string, fallback: string): string {
  const card = stackedBackground(cssVar('--vscode-editorWidget-background', 'transparent'), cssVar('--vscode-editor-background', '#1e1e1e'));
  return readableSeriesColor(cssVar(name, fallback), card, cssVar('--vscode-foreground', '#ccc'));
}

function plotTheme(): PlotTheme {
  return {
    foreground: cssVar('--vscode-foreground', '#ccc'),
    grid: cssVar('--vscode-editorWidget-border', cssVar('--vscode-panel-border', '#8884')),
    key: seriesColor('--vscode-charts-blue', '#3794ff'),
    queries: [seriesColor('--vscode-charts-orange', '#d18616'), seriesColor('--vscode-charts-purple', '#b180d7'), seriesColor('--vscode-charts-green', '#89d185'), seriesColor('--vscode-charts-yellow', '#cca700')],
    marker: seriesColor('--vscode-charts-red', '#f14c4c'),
  };
}

function sweepTheme(): SweepTheme {
  return {
    foreground: cssVar('--vscode-foreground', '#ccc'),
    grid: cssVar('--vscode-editorWidget-border', cssVar('--vscode-panel-border', '#8884')),
    methods: { 'key-svd': seriesColor('--vscode-charts-blue', '#3794ff'), 'qk-svd': seriesColor('--vscode-charts-orange', '#d18616'), calibrated: seriesColor('--vscode-charts-green', '#89d185') },
    original: seriesColor('--vscode-descriptionForeground', '#999'),
    plan: seriesColor('--vscode-charts-red', '#f14c4c'),
  };
}

// ------------------------------------------------------------------ render

let renderQueued = false;
function scheduleRender(): void {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    render();
  });
}

/** Sets a field's value unless the user is typing in it. */
function setField(id: string, value: string): void {
  const el = $<ValueElement>(id);
  if (document.activeElement === el) return;
  if (el.value !== value) el.value = value;
}

function render(): void {
  const started = performance.now();
  renderPanel();
  // Exposed for the e2e test's rendering budget (32 × 32 heads in under a second).
  app.dataset.renderMs = (performance.now() - started).toFixed(1);
  if (spectraArrived !== null && state.spectra) {
    const t0 = spectraArrived;
    spectraArrived = null;
    // Time from the spectra message to the first frame that shows them (decode, layout, paint).
    requestAnimationFrame(() => (app.dataset.spectraToFrameMs = (performance.now() - t0).toFixed(1)));
  }
}

function renderPanel(): void {
  const s = state;
  const sm = s.summary;
  if (sm) {
    $('model-name').textContent = sm.name;
    const gqa = sm.queryHeads === sm.kvHeads ? 'MHA' : sm.kvHeads === 1 ? 'MQA' : `GQA ${sm.queryHeads / sm.kvHeads}:1`;
    $('model-facts').textContent = `${sm.architecture} · ${sm.layers} layers · ${sm.queryHeads} query / ${sm.kvHeads} KV heads × ${sm.headDim} (${gqa}) · hidden ${sm.hiddenSize} · ${sm.rope ? `RoPE θ=${sm.ropeTheta}` : 'no RoPE'} · ${sm.dtype} · ${sm.parameters.toLocaleString('en-US')} params · ${sm.files} file${sm.files === 1 ? '' : 's'}`;
    $('model-features').textContent = sm.features.length ? sm.features.join(' · ') : '';
  }
  // header actions
  const busy = $('busy');
  busy.classList.toggle('hidden', !s.busy);
  busy.textContent = s.busy ? `${s.busy.label ?? s.busy.task}${s.busy.backend ? ` · ${s.busy.backend}` : ''}` : '';
  $('btn-backend').textContent = `backend: ${s.busy?.backend ?? s.backend}`;
  $<ValueElement>('btn-analyze').disabled = s.busy !== null || !sm;
  $('btn-cancel').classList.toggle('hidden', !s.busy);
  const exportBtn = $<ValueElement>('btn-export');
  exportBtn.disabled = !canExport(s);
  exportBtn.title = s.trusted ? 'Write a factored checkpoint (you choose the folder)' : 'Export needs a trusted workspace';
  const evalBtn = $<ValueElement>('btn-evaluate');
  evalBtn.disabled = !s.evaluateAvailable || s.busy !== null || !s.result;
  evalBtn.title = s.evaluateAvailable ? 'Perplexity of the original and of this plan on held-out text' : 'Perplexity evaluation is not available in this build';
  const sweepBtn = $<ValueElement>('btn-sweep');
  sweepBtn.disabled = evalBtn.disabled;
  sweepBtn.title = s.evaluateAvailable ? `Perplexity of key-svd and qk-svd over ${s.plan.policy === 'energy' ? 'energy thresholds' : 'ranks'} against key-cache size, on the Evaluate text` : 'Perplexity evaluation is not available in this build';
  const notice = $('notice');
  notice.classList.toggle('hidden', !s.notice);
  notice.classList.toggle('error', s.notice?.level === 'error');
  notice.textContent = s.notice?.message ?? '';

  renderHeatmaps();
  renderPlan();
  renderSavings();
  renderSpectra();
  renderSweep();
}

function renderHeatmaps(): void {
  const s = state;
  const sm = s.summary;
  if (!sm) return;
  const theme = heatTheme();
  const pinnedKeys = new Set(s.plan.overrides.map((o) => `${o.layer}/${o.head}`));
  const pinnedQueries = new Set<string>();
  for (const o of s.plan.overrides) sm.queryToKv.forEach((g, h) => g === o.head && pinnedQueries.add(`${o.layer}/${h}`));
  const cell = cellSize(sm.layers, sm.kvHeads + sm.queryHeads, 2, $('heatmaps').clientWidth - 26);
  keyCell = cell;
  queryCell = cell;
  const keyCanvas = $<HTMLCanvasElement>('heat-keys');
  const queryCanvas = $<HTMLCanvasElement>('heat-queries');
  const sel = s.selection;
  drawHeatmap(keyCanvas, { rows: sm.layers, cols: sm.kvHeads, values: heatmapValues(s, 'key'), max: sm.headDim, selected: { row: sel.layer, col: sel.kvHead }, pinned: pinnedKeys, colLabel: (c) => `KV${c}` }, cell, theme);
  drawHeatmap(queryCanvas, { rows: sm.layers, cols: sm.queryHeads, values: heatmapValues(s, 'query'), max: sm.headDim, selected: sel.queryHead === null ? null : { row: sel.layer, col: sel.queryHead }, related: sm.queryToKv.flatMap((g, h) => (g === sel.kvHead && h !== sel.queryHead ? [{ row: sel.layer, col: h }] : [])), pinned: pinnedQueries, colLabel: (c) => `Q${c}` }, cell, theme);
  for (const [canvas, heads, kind] of [[keyCanvas, sm.kvHeads, 'KV'], [queryCanvas, sm.queryHeads, 'query']] as const) {
    canvas.dataset.layers = String(sm.layers);
    canvas.dataset.heads = String(heads);
    canvas.dataset.ready = heatmapValues(s, kind === 'KV' ? 'key' : 'query') ? 'true' : 'false';
    canvas.setAttribute('aria-label', `${sm.layers} layers by ${heads} ${kind} heads, coloured by ${s.heatmapMode === 'chosen' ? 'chosen rank' : `effective rank at ${s.level}`}`);
  }
  drawLegend($<HTMLCanvasElement>('legend'), sm.headDim, theme);
  setField('heat-mode', s.heatmapMode === 'chosen' ? 'chosen' : `effective:${s.level}`);
}

function renderPlan(): void {
  const s = state;
  const field = policyField(s.plan.policy);
  setField('policy', s.plan.policy);
  $('param-label').textContent = { rank: 'Rank (every KV head)', fraction: 'Fraction of head_dim', energy: 'Key energy kept', budget: 'Key-cache budget (share)' }[field];
  const param = $<ValueElement & { min?: number; max?: number; step?: number }>('param');
  param.step = field === 'rank' ? 1 : 0.01;
  setField('param', String(s.plan[field]));
  param.dataset.field = field;
  const sm = s.summary;
  const sel = s.selection;
  const { rank, pinned } = selectedRank(s);
  $('sel-title').textContent = `Selected: layer ${sel.layer}, KV head ${sel.kvHead}${sel.queryHead !== null ? ` (query ${sel.queryHead})` : ''}`;
  setField('override', rank === null ? '' : String(rank));
  $<ValueElement>('btn-unpin').disabled = !pinned;
  const spectra = s.spectra;
  let info = pinned ? 'Pinned rank.' : 'Rank from the policy.';
  if (spectra && sm) {
    const row = sel.layer * spectra.kvHeads + sel.kvHead;
    const e = spectra.keyEffRank;
    info += ` Key effective rank ${e[row * 3]} / ${e[row * 3 + 1]} / ${e[row * 3 + 2]} (90/95/99% energy), stable rank ${spectra.keyStableRank[row].toFixed(1)}.`;
    if (rank !== null) info += ` Keeps ${(100 * spectra.keyEnergy[row * spectra.width + rank - 1]).toFixed(1)}% of its key energy.`;
  }
  $('sel-info').textContent = info;
  $('plan-error').classList.toggle('hidden', !s.planError);
  $('plan-error').textContent = s.planError ?? '';
  $('pins').textContent = s.plan.overrides.length ? `Pinned: ${s.plan.overrides.map((o) => `L${o.layer}·KV${o.head}=${o.rank}`).join(', ')}` : '';
}

function renderSavings(): void {
  const s = state;
  setField('ctx', String(s.savings.context));
  setField('batch', String(s.savings.batch));
  setField('dtype', s.savings.dtype);
  const r = s.result?.savings;
  $('savings').classList.toggle('stale', s.planPending);
  const set = (id: string, text: string) => ($(id).textContent = text);
  const ref = s.reference;
  set('sv-reference', ref ? `For scale, the ${ref.label}: ${formatBytes(ref.baselineBytes)} → ${formatBytes(ref.factoredBytes)}, saves ${formatBytes(ref.baselineBytes - ref.factoredBytes)} (×${ref.capacityMultiplier.toFixed(2)}).` : '');
  set('sv-at', `K+V at ${s.savings.context.toLocaleString('en-US')} × ${s.savings.batch}`);
  if (!r) {
    for (const id of ['sv-k0', 'sv-k1', 'sv-t0', 'sv-t1', 'sv-b0', 'sv-b1', 'sv-saved', 'sv-cap']) set(id, '');
    return;
  }
  set('sv-k0', formatBytes(r.baselineKeyBytesPerToken));
  set('sv-k1', formatBytes(r.factoredKeyBytesPerToken));
  set('sv-t0', formatBytes(r.baselineBytesPerToken));
  set('sv-t1', formatBytes(r.factoredBytesPerToken));
  set('sv-b0', formatBytes(r.baselineBytes));
  set('sv-b1', formatBytes(r.factoredBytes));
  set('sv-saved', `saves ${formatBytes(r.baselineBytes - r.factoredBytes)}`);
  set('sv-cap', `· ×${r.capacityMultiplier.toFixed(2)} tokens in the same memory`);
  const energy = s.result?.meanRetainedEnergy;
  set('sv-energy', energy === null || energy === undefined ? '' : `Mean key energy kept: ${(100 * energy).toFixed(1)}%`);
  const ev = s.evaluation;
  set('sv-eval', ev ? `Perplexity${ev.stale ? ' (for an earlier plan)' : ''}: ${ev.original.toFixed(3)} → ${ev.factored.toFixed(3)} (${ev.deltaPercent >= 0 ? '+' : ''}${ev.deltaPercent.toFixed(2)}%) on ${ev.tokens.toLocaleString('en-US')} tokens of ${ev.textFile.split(/[\\/]/).pop()}, ${ev.backend}, ${ev.seconds.toFixed(1)} s` : '');
}

function renderSpectra(): void {
  const s = state;
  const series = selectedSpectra(s);
  const { rank } = selectedRank(s);
  const hostWidth = $('spectra').clientWidth;
  const width = Math.max(260, Math.floor((hostWidth - 64) / 2));
  $('spec-title').textContent = `Spectrum · layer ${s.selection.layer}, KV head ${s.selection.kvHead}`;
  $('spec-info').textContent = s.spectra ? `${s.spectra.backend} · ${s.spectra.seconds.toFixed(2)} s for ${s.spectra.layers * (s.spectra.kvHeads + s.spectra.queryHeads)} heads` : s.busy ? 'analyzing…' : '';
  plots.update(series, rank, width, plotTheme());
  $('spectra').dataset.series = String(series.length);
}

function renderSweep(): void {
  const sw = state.sweep;
  const section = $('sweep');
  $('sweep-hint').classList.toggle('hidden', sw !== null);
  $('sweep-table').classList.toggle('hidden', sw === null);
  if (!sw) {
    $('sweep-info').textContent = state.busy?.task === 'sweep' ? 'sweeping…' : '';
    sweepPlot.destroy();
    section.dataset.ready = 'false';
    return;
  }
  $('sweep-info').textContent = `${sw.axis === 'rank' ? 'uniform ranks' : 'energy thresholds'} · ${sw.tokens.toLocaleString('en-US')} tokens of ${sw.textFile.split(/[\\/]/).pop()} · ${sw.backend} · ${sw.seconds.toFixed(1)} s`;
  const rows = $('sweep-rows');
  rows.replaceChildren(
    ...sweepRows(sw).map((p) => {
      const tr = document.createElement('tr');
      tr.dataset.method = p.method;
      if (p.rank !== null) tr.dataset.rank = String(p.rank);
      if (p.threshold !== null) tr.dataset.threshold = String(p.threshold);
      tr.dataset.perplexity = String(p.perplexity);
      tr.dataset.bytes = String(p.keyCacheBytesPerToken);
      const name = p.method === 'plan' ? `${sw.stale ? 'earlier plan' : 'plan'} (${sw.planMethod})` : p.method;
      const delta = p.method === 'original' ? '' : `${p.deltaPercent >= 0 ? '+' : ''}${p.deltaPercent.toFixed(2)}%`;
      for (const text of [name, sweepSetting(p), formatBytes(p.keyCacheBytesPerToken), p.perplexity.toFixed(3), delta]) {
        const cell = document.createElement(tr.children.length === 0 ? 'th' : 'td');
        cell.textContent = text;
        tr.append(cell);
      }
      return tr;
    }),
  );
  // The chart takes what the table leaves of the card's width (it wraps below on narrow panels).
  const chart = sweepChart(sw);
  const room = $('sweep-body').clientWidth - $('sweep-table').offsetWidth - 24;
  sweepPlot.update(chart, room >= 360 ? Math.min(900, room) : Math.max(300, Math.min(900, $('sweep-body').clientWidth - 8)), sweepTheme());
  // For tests and screen readers: how many measured points each method has on the chart.
  const pointsKey = { 'key-svd': 'pointsKeySvd', 'qk-svd': 'pointsQkSvd', calibrated: 'pointsCalibrated' } as const;
  for (const series of chart.series) if (series.kind === 'key-svd' || series.kind === 'qk-svd' || series.kind === 'calibrated') section.dataset[pointsKey[series.kind]] = String(series.ys.filter((y) => y !== null).length);
  section.dataset.ready = 'true';
}

// ------------------------------------------------------------------ events

function numberFrom(el: HTMLElement): number {
  return Number((el as ValueElement).value);
}

$('policy').addEventListener('change', () => dispatch({ kind: 'policy', policy: $<ValueElement>('policy').value as PolicyName }));
$('param').addEventListener('input', (e) => {
  const field = policyField(state.plan.policy);
  const v = numberFrom(e.currentTarget as HTMLElement);
  if (Number.isFinite(v) && v > 0) dispatch({ kind: 'param', field, value: v });
});
$('heat-mode').addEventListener('change', () => {
  const v = $<ValueElement>('heat-mode').value;
  if (v === 'chosen') dispatch({ kind: 'heatmapMode', mode: 'chosen' });
  else {
    dispatch({ kind: 'heatmapMode', mode: 'effective' as HeatmapMode });
    dispatch({ kind: 'level', level: v.split(':')[1] as EnergyLevel });
  }
});
for (const [id, field] of [['ctx', 'context'], ['batch', 'batch']] as const) {
  $(id).addEventListener('input', (e) => dispatch({ kind: 'savings', field, value: numberFrom(e.currentTarget as HTMLElement) }));
}
$('dtype').addEventListener('change', () => dispatch({ kind: 'savings', field: 'dtype', value: $<ValueElement>('dtype').value }));

function pinSelected(): void {
  const v = numberFrom($('override'));
  if (!Number.isFinite(v) || v < 1) return;
  dispatch({ kind: 'override', layer: state.selection.layer, head: state.selection.kvHead, rank: v });
}
$('btn-pin').addEventListener('click', pinSelected);
$('override').addEventListener('keydown', (e) => {
  if ((e as KeyboardEvent).key === 'Enter') pinSelected();
});
$('btn-unpin').addEventListener('click', () => dispatch({ kind: 'override', layer: state.selection.layer, head: state.selection.kvHead, rank: null }));

function onHeatmapClick(kind: 'key' | 'query') {
  return (e: MouseEvent) => {
    const sm = state.summary;
    if (!sm) return;
    const canvas = e.currentTarget as HTMLCanvasElement;
    const box = canvas.getBoundingClientRect();
    const cols = kind === 'key' ? sm.kvHeads : sm.queryHeads;
    const hit = hitTest(e.clientX - box.left, e.clientY - box.top, kind === 'key' ? keyCell : queryCell, sm.layers, cols);
    if (!hit) return;
    const kvHead = kind === 'key' ? hit.col : sm.queryToKv[hit.col];
    dispatch({ kind: 'select', layer: hit.row, kvHead, queryHead: kind === 'query' ? hit.col : null });
    // Shift/Alt-click pins the head at its current rank straight away (click-to-override).
    if (e.shiftKey || e.altKey) {
      const { rank } = selectedRank(state);
      if (rank !== null) dispatch({ kind: 'override', layer: hit.row, head: kvHead, rank });
    }
    const field = $('override');
    (field as HTMLElement & { focus(): void }).focus();
  };
}
/** Arrow keys move the selection on a focused heatmap; Enter jumps to the rank field. */
function onHeatmapKey(kind: 'key' | 'query') {
  return (e: KeyboardEvent) => {
    const sm = state.summary;
    if (!sm) return;
    const sel = state.selection;
    const cols = kind === 'key' ? sm.kvHeads : sm.queryHeads;
    let col = kind === 'key' ? sel.kvHead : (sel.queryHead ?? sm.queryToKv.indexOf(sel.kvHead));
    let row = sel.layer;
    if (e.key === 'ArrowLeft') col = Math.max(0, col - 1);
    else if (e.key === 'ArrowRight') col = Math.min(cols - 1, col + 1);
    else if (e.key === 'ArrowUp') row = Math.max(0, row - 1);
    else if (e.key === 'ArrowDown') row = Math.min(sm.layers - 1, row + 1);
    else if (e.key === 'Enter') {
      ($('override') as HTMLElement & { focus(): void }).focus();
      return;
    } else return;
    e.preventDefault();
    dispatch({ kind: 'select', layer: row, kvHead: kind === 'key' ? col : sm.queryToKv[col], queryHead: kind === 'query' ? col : null });
  };
}
$('heat-keys').addEventListener('keydown', onHeatmapKey('key'));
$('heat-queries').addEventListener('keydown', onHeatmapKey('query'));
$('heat-keys').addEventListener('click', onHeatmapClick('key'));
$('heat-queries').addEventListener('click', onHeatmapClick('query'));

function runTask<K extends 'analyze' | 'selectBackend' | 'cancel'>(type: K): void {
  request(type, {} as Params<K>).catch((e: Error & { cancelled?: boolean }) => {
    if (!e.cancelled) dispatch({ kind: 'notice', level: 'error', message: e.message });
  });
}
$('btn-analyze').addEventListener('click', () => runTask('analyze'));
$('btn-backend').addEventListener('click', () => runTask('selectBackend'));
$('btn-cancel').addEventListener('click', () => runTask('cancel'));
$('btn-export').addEventListener('click', () => {
  if (!canExport(state)) return;
  dispatch({ kind: 'notice', level: 'info', message: null });
  request('export', { plan: state.plan })
    .then((r) => r && dispatch({ kind: 'notice', level: 'info', message: `Exported to ${r.path}` }))
    .catch((e: Error & { cancelled?: boolean }) => dispatch({ kind: 'notice', level: e.cancelled ? 'info' : 'error', message: e.cancelled ? 'Export cancelled.' : e.message }));
});
$('btn-evaluate').addEventListener('click', () => {
  dispatch({ kind: 'notice', level: 'info', message: null });
  request('evaluate', { plan: state.plan })
    .then((r) => r && dispatch({ kind: 'evaluation', result: r }))
    .catch((e: Error & { cancelled?: boolean }) => !e.cancelled && dispatch({ kind: 'notice', level: 'error', message: e.message }));
});

$('btn-sweep').addEventListener('click', () => {
  dispatch({ kind: 'notice', level: 'info', message: null });
  request('sweep', { plan: state.plan })
    .then((r) => {
      if (!r) return;
      dispatch({ kind: 'sweep', result: normalizeSweep(r) });
      $('sweep').scrollIntoView({ behavior: 'smooth', block: 'nearest' });
    })
    .catch((e: Error & { cancelled?: boolean }) => dispatch({ kind: 'notice', level: e.cancelled ? 'info' : 'error', message: e.cancelled ? 'Sweep cancelled.' : e.message }));
});

// Theme switches change the CSS variables and body class; canvases must be redrawn.
new MutationObserver(() => {
  plots.destroy();
  sweepPlot.destroy();
  scheduleRender();
}).observe(document.body, { attributes: true, attributeFilter: ['class'] });
new ResizeObserver(() => scheduleRender()).observe(app);

vscode.postMessage({ type: 'ready' });
