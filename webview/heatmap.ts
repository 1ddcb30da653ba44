/**
 * Layer × head heatmap on a canvas: one fillRect per head, so 32 × 32 heads draw in well
 * under a millisecond budget per frame. Colours come from a perceptual ramp that reads on
 * light, dark and high-contrast themes; outlines and text use the theme's own colours.
 */

/** Theme colours the canvas needs (read from VS Code's CSS variables at draw time). */
export interface HeatmapTheme {
  readonly foreground: string;
  readonly muted: string;
  readonly focus: string;
  readonly background: string;
  readonly highContrast: boolean;
}

export interface HeatmapData {
  readonly rows: number;
  readonly cols: number;
  /** rows × cols values, row-major; NaN draws an empty cell. */
  readonly values: Float32Array | null;
  readonly max: number;
  readonly selected: { readonly row: number; readonly col: number } | null;
  /** Other cells of the selection's group (the query heads sharing the selected KV head), outlined lightly. */
  readonly related?: readonly { readonly row: number; readonly col: number }[];
  /** Cells drawn with a pin mark (user overrides). */
  readonly pinned: ReadonlySet<string>;
  readonly colLabel: (c: number) => string;
}

// Viridis, sampled at 9 stops: dark blue (low rank) to yellow (high rank).
const RAMP: readonly [number, number, number][] = [
  [68, 1, 84], [71, 45, 123], [59, 82, 139], [44, 114, 142], [33, 145, 140], [40, 174, 128], [94, 201, 98], [173, 220, 48], [253, 231, 37],
];

/** The ramp colour for t in [0, 1]. */
export function rampColor(t: number): [number, number, number] {
  const x = Math.min(1, Math.max(0, t)) * (RAMP.length - 1);
  const i = Math.min(RAMP.length - 2, Math.floor(x));
  const f = x - i;
  const a = RAMP[i];
  const b = RAMP[i + 1];
  return [Math.round(a[0] + (b[0] - a[0]) * f), Math.round(a[1] + (b[1] - a[1]) * f), Math.round(a[2] + (b[2] - a[2]) * f)];
}

const AXIS = 28;
const TOP = 16;

/**
 * One cell size for both maps (so their layer rows line up): the keys' and queries' columns
 * together must fit `width`, and tall models stay within a readable height.
 */
export function cellSize(rows: number, totalCols: number, maps: number, width: number): number {
  const byWidth = Math.floor((width - maps * (AXIS + 4) - (maps - 1) * 24) / Math.max(1, totalCols));
  const byHeight = Math.max(10, Math.floor(560 / Math.max(1, rows)));
  return Math.max(5, Math.min(44, byWidth, byHeight));
}

/** Draws the heatmap into `canvas` at `cell` CSS pixels per head (resizing the canvas). */
export function drawHeatmap(canvas: HTMLCanvasElement, data: HeatmapData, cell: number, theme: HeatmapTheme): void {
  const cssW = AXIS + data.cols * cell + 2;
  const cssH = TOP + data.rows * cell + 2;
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.round(cssW * dpr);
  canvas.height = Math.round(cssH * dpr);
  canvas.style.width = `${cssW}px`;
  canvas.style.height = `${cssH}px`;
  const ctx = canvas.getContext('2d');
  if (!ctx) return;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, cssW, cssH);
  const font = getComputedStyle(document.body).fontFamily || 'sans-serif';
  ctx.font = `10px ${font}`;
  ctx.textAlign = 'center';
  ctx.textBaseline = 'middle';
  ctx.fillStyle = theme.muted;
  // Label every k-th column/row so labels never overlap (widest label decides).
  const widest = ctx.measureText(data.colLabel(data.cols - 1)).width + 4;
  const labelEvery = Math.max(1, Math.ceil(widest / cell));
  for (let c = 0; c < data.cols; c += labelEvery) ctx.fillText(data.colLabel(c), AXIS + c * cell + cell / 2, TOP / 2);
  ctx.textAlign = 'right';
  for (let r = 0; r < data.rows; r += Math.max(1, Math.ceil(12 / cell))) ctx.fillText(`L${r}`, AXIS - 4, TOP + r * cell + cell / 2);

  const gap = cell >= 12 ? 1 : 0;
  const showText = cell >= 24;
  ctx.textAlign = 'center';
  for (let r = 0; r < data.rows; r++) {
    for (let c = 0; c < data.cols; c++) {
      const x = AXIS + c * cell;
      const y = TOP + r * cell;
      const v = data.values ? data.values[r * data.cols + c] : NaN;
      if (Number.isNaN(v)) {
        ctx.strokeStyle = theme.muted;
        ctx.strokeRect(x + 0.5, y + 0.5, cell - 1, cell - 1);
        continue;
      }
      const t = data.max > 0 ? v / data.max : 0;
      const [R, G, B] = rampColor(t);
      ctx.fillStyle = `rgb(${R},${G},${B})`;
      ctx.fillRect(x + gap, y + gap, cell - gap, cell - gap);
      if (showText) {
        // Dark text on the bright end of the ramp, light text on the dark end.
        ctx.fillStyle = t > 0.6 ? '#000' : '#fff';
        ctx.fillText(String(Math.round(v)), x + cell / 2 + gap / 2, y + cell / 2 + gap / 2);
      }
      if (data.pinned.has(`${r}/${c}`)) {
        ctx.fillStyle = theme.highContrast ? theme.focus : '#fff';
        ctx.beginPath();
        ctx.arc(x + cell - 4, y + 4, Math.max(1.5, cell / 10), 0, Math.PI * 2);
        ctx.fill();
      }
    }
  }
  if (data.related?.length) {
    ctx.strokeStyle = theme.focus;
    ctx.lineWidth = 1;
    ctx.setLineDash([3, 2]);
    for (const c of data.related) ctx.strokeRect(AXIS + c.col * cell + 1.5, TOP + c.row * cell + 1.5, cell - 2, cell - 2);
    ctx.setLineDash([]);
  }
  if (data.selected) {
    ctx.strokeStyle = theme.focus;
    ctx.lineWidth = 2;
    ctx.strokeRect(AXIS + data.selected.col * cell + 1, TOP + data.selected.row * cell + 1, cell - 1, cell - 1);
  }
}

/** The cell under a point in the canvas's CSS pixels, or null outside the grid. */
export function hitTest(x: number, y: number, cell: number, rows: number, cols: number): { row: number; col: number } | null {
  const col = Math.floor((x - AXIS) / cell);
  const row = Math.floor((y - TOP) / cell);
  if (x < AXIS || y < TOP || col < 0 || row < 0 || col >= cols || row >= rows) return null;
  return { row, col };
}

/** A ramp legend (0..max) drawn on a small canvas. */
export function drawLegend(canvas: HTMLCanvasElement, max: number, theme: HeatmapTheme): void {
  const w = 160;
  const h = 22;
  const dpr = window.devicePixelRatio || 1;
  canvas.width = w * dpr;
  canvas.height = h * dpr;
  canvas.style.width = `${w}px`;
  canvas.style.height = `${h}px`;
  const ctx = canvas.getContext('2d');
  if (!ctx) return;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  for (let i = 0; i < 120; i++) {
    const [R, G, B] = rampColor(i / 119);
    ctx.fillStyle = `rgb(${R},${G},${B})`;
    ctx.fillRect(20 + i, 2, 1, 10);
  }
  ctx.fillStyle = theme.foreground;
  ctx.font = `10px ${getComputedStyle(document.body).fontFamily || 'sans-serif'}`;
  ctx.textBaseline = 'top';
  ctx.textAlign = 'left';
  ctx.fillText('0', 20, 13);
  ctx.textAlign = 'right';
  ctx.fillText(String(max), 140, 13);
}
