/**
 * Charts with uPlot. Per-head spectrum plots: normalized singular values on a log axis and
 * cumulative energy, the selected KV head's key against the query heads that share it, with the
 * chosen rank drawn as a vertical marker on both. The sweep chart: perplexity against key-cache
 * size for both methods.
 */
import uPlot from 'uplot';
import type { SpectrumSeries, SweepChart } from './state';

/** Colours taken from the VS Code theme (charts palette). */
export interface PlotTheme {
  readonly foreground: string;
  readonly grid: string;
  readonly key: string;
  readonly queries: readonly string[];
  readonly marker: string;
}

type Which = 'spectrum' | 'energy';

/** A pair of live charts that are rebuilt only when the series layout changes. */
export class SpectrumPlots {
  private charts: Partial<Record<Which, uPlot>> = {};
  private layoutKey = '';
  private rank: number | null = null;

  constructor(
    private readonly spectrumHost: HTMLElement,
    private readonly energyHost: HTMLElement,
  ) {}

  /** Shows `series` with `rank` marked; `width` is each chart's width in CSS pixels. */
  update(series: readonly SpectrumSeries[], rank: number | null, width: number, theme: PlotTheme): void {
    this.rank = rank;
    if (series.length === 0) {
      this.destroy();
      return;
    }
    const n = series[0].normalized.length;
    const xs = Float64Array.from({ length: n }, (_, i) => i + 1);
    const key = `${series.map((s) => s.label).join('|')}#${n}#${width}#${theme.key}#${theme.queries.join()}#${theme.foreground}`;
    const spectrumData: uPlot.AlignedData = [xs, ...series.map((s) => Float64Array.from(s.normalized, (v) => (v > 0 ? v : NaN)))];
    const energyData: uPlot.AlignedData = [xs, ...series.map((s) => Float64Array.from(s.energy))];
    if (key !== this.layoutKey || !this.charts.spectrum || !this.charts.energy) {
      this.destroy();
      this.layoutKey = key;
      this.charts.spectrum = new uPlot(this.options('spectrum', series, width, theme, n), spectrumData, this.spectrumHost);
      this.charts.energy = new uPlot(this.options('energy', series, width, theme, n), energyData, this.energyHost);
    } else {
      this.charts.spectrum.setData(spectrumData);
      this.charts.energy.setData(energyData);
    }
  }

  destroy(): void {
    this.charts.spectrum?.destroy();
    this.charts.energy?.destroy();
    this.charts = {};
    this.layoutKey = '';
  }

  private options(which: Which, series: readonly SpectrumSeries[], width: number, theme: PlotTheme, n: number): uPlot.Options {
    let q = 0;
    const axis = (label: string): uPlot.Axis => ({
      label,
      stroke: theme.foreground,
      grid: { stroke: theme.grid, width: 1 },
      ticks: { stroke: theme.grid, width: 1 },
      labelSize: 18,
      size: which === 'spectrum' && label !== 'index' ? 56 : 44,
    });
    return {
      width,
      height: 200,
      title: which === 'spectrum' ? 'Singular values σᵢ / σ₁ (log)' : 'Cumulative energy',
      legend: { show: true, live: false },
      cursor: { drag: { x: false, y: false }, points: { show: false } },
      scales: {
        x: { time: false, range: [1, n] },
        y: which === 'spectrum' ? { distr: 3, log: 10 } : { range: [0, 1] },
      },
      axes: [axis('index'), axis(which === 'spectrum' ? 'σᵢ / σ₁' : 'energy kept')],
      series: [
        { label: 'rank' },
        ...series.map((s): uPlot.Series => ({
          label: s.label,
          stroke: s.kind === 'key' ? theme.key : theme.queries[q++ % theme.queries.length],
          width: s.kind === 'key' ? 3 : 2,
          points: { show: false },
        })),
      ],
      hooks: { draw: [(u: uPlot) => this.drawRankMarker(u, theme)] },
    };
  }

  /** Vertical line at the chosen rank, labelled, so the cut is visible against the spectrum. */
  private drawRankMarker(u: uPlot, theme: PlotTheme): void {
    if (this.rank === null) return;
    const x = Math.round(u.valToPos(this.rank, 'x', true));
    const { top, height } = u.bbox;
    const ctx = u.ctx;
    const dpr = window.devicePixelRatio || 1;
    ctx.save();
    ctx.strokeStyle = theme.marker;
    ctx.lineWidth = 2 * dpr;
    ctx.setLineDash([4 * dpr, 3 * dpr]);
    ctx.beginPath();
    ctx.moveTo(x, top);
    ctx.lineTo(x, top + height);
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = theme.marker;
    ctx.font = `${11 * dpr}px sans-serif`;
    ctx.textBaseline = 'top';
    ctx.fillText(` r = ${this.rank}`, x + 2 * dpr, top + 2 * dpr);
    ctx.restore();
  }

  /** Redraws only the marker (rank changed, data did not). */
  redraw(rank: number | null): void {
    this.rank = rank;
    this.charts.spectrum?.redraw(false, false);
    this.charts.energy?.redraw(false, false);
  }
}

/** Colours of the quality/savings chart, from the VS Code theme. */
export interface SweepTheme {
  readonly foreground: string;
  readonly grid: string;
  readonly methods: Readonly<Record<'key-svd' | 'qk-svd' | 'calibrated', string>>;
  readonly original: string;
  readonly plan: string;
}

/**
 * Quality against key-cache size: perplexity (y) over key-cache bytes per token (x, log₂),
 * one line per method, the original as a dashed horizontal reference, the plan as a ringed point.
 */
export class SweepPlot {
  private chart: uPlot | null = null;
  private layoutKey = '';

  constructor(
    private readonly host: HTMLElement,
    private readonly formatX: (bytes: number) => string,
  ) {}

  /** Shows `chart` at `width` CSS pixels; null clears the plot. */
  update(chart: SweepChart | null, width: number, theme: SweepTheme): void {
    if (!chart || chart.xs.length === 0) {
      this.destroy();
      return;
    }
    const data: uPlot.AlignedData = [Float64Array.from(chart.xs), ...chart.series.map((s) => s.ys.map((y) => y))];
    const key = `${chart.series.map((s) => s.label).join('|')}#${width}#${theme.foreground}#${theme.methods['key-svd']}`;
    if (key !== this.layoutKey || !this.chart) {
      this.destroy();
      this.layoutKey = key;
      this.chart = new uPlot(this.options(chart, width, theme), data, this.host);
    } else {
      this.chart.setData(data);
    }
  }

  destroy(): void {
    this.chart?.destroy();
    this.chart = null;
    this.layoutKey = '';
  }

  private options(chart: SweepChart, width: number, theme: SweepTheme): uPlot.Options {
    const axis = (label: string, size: number, values?: uPlot.Axis['values']): uPlot.Axis => ({
      label,
      stroke: theme.foreground,
      grid: { stroke: theme.grid, width: 1 },
      ticks: { stroke: theme.grid, width: 1 },
      labelSize: 18,
      size,
      values,
    });
    const noLine = (): null => null;
    return {
      width,
      height: 260,
      legend: { show: true, live: false },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: false, distr: 3, log: 2 }, y: { auto: true } },
      axes: [axis('key cache per token', 36, (_u, splits) => splits.map((v) => (v == null ? '' : this.formatX(v)))), axis('perplexity', 52, (_u, splits) => splits.map((v) => (v == null ? '' : v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2))))],
      series: [
        { label: 'key cache' },
        ...chart.series.map((s): uPlot.Series => {
          if (s.kind === 'original') return { label: s.label, stroke: theme.original, width: 1.5, dash: [6, 4], points: { show: false } };
          if (s.kind === 'plan') return { label: s.label, stroke: theme.plan, width: 2, paths: noLine, points: { show: true, size: 13, width: 3, stroke: theme.plan, fill: 'transparent' } };
          return { label: s.label, stroke: theme.methods[s.kind], width: 2, spanGaps: true, points: { show: true, size: 7, fill: theme.methods[s.kind] } };
        }),
      ],
    };
  }
}
