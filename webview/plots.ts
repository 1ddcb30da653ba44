/**
 * Per-head spectrum plots with uPlot: normalized singular values on a log axis and cumulative
 * energy, the selected KV head's key against the query heads that share it, with the chosen
 * rank drawn as a vertical marker on both.
 */
import uPlot from 'uplot';
import type { SpectrumSeries } from './state';

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
    const key = `${series.map((s) => s.label).join('|')}#${n}#${width}#${theme.key}#${theme.foreground}`;
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
