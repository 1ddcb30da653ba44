/**
 * Chart colours that stay readable on every theme. VS Code's chart palette is not always opaque
 * (Light/Dark Modern derive `charts.orange` from the translucent find-match highlight, which
 * looks pale peach on white), so series colours are taken at full opacity and, where that is
 * still too faint against the card, mixed toward the theme's foreground until they reach the
 * WCAG non-text contrast of 3:1. Pure functions (no DOM) so they can be tested in Node.
 */

/** An sRGB colour, channels 0..255, alpha 0..1. */
export interface Rgba {
  readonly r: number;
  readonly g: number;
  readonly b: number;
  readonly a: number;
}

/** WCAG 2.x minimum contrast for graphical objects such as plot lines (SC 1.4.11). */
export const MIN_GRAPHIC_CONTRAST = 3;

/** Parses `#rgb`, `#rgba`, `#rrggbb`, `#rrggbbaa`, `rgb(…)` and `rgba(…)`; null for anything else. */
export function parseCssColor(text: string): Rgba | null {
  const s = text.trim().toLowerCase();
  const hex = /^#([0-9a-f]{3,4}|[0-9a-f]{6}|[0-9a-f]{8})$/.exec(s);
  if (hex) {
    let h = hex[1];
    if (h.length <= 4) h = [...h].map((c) => c + c).join('');
    const byte = (i: number) => parseInt(h.slice(i, i + 2), 16);
    return { r: byte(0), g: byte(2), b: byte(4), a: h.length === 8 ? byte(6) / 255 : 1 };
  }
  const fn = /^rgba?\(\s*([^)]*)\)$/.exec(s);
  if (!fn) return null;
  const parts = fn[1].split(/[\s,/]+/).filter(Boolean);
  if (parts.length !== 3 && parts.length !== 4) return null;
  const channel = (p: string) => (p.endsWith('%') ? (parseFloat(p) * 255) / 100 : parseFloat(p));
  const [r, g, b] = parts.slice(0, 3).map(channel);
  const a = parts.length === 4 ? (parts[3].endsWith('%') ? parseFloat(parts[3]) / 100 : parseFloat(parts[3])) : 1;
  if (![r, g, b, a].every(Number.isFinite)) return null;
  const clamp = (v: number, hi: number) => Math.min(hi, Math.max(0, v));
  return { r: clamp(r, 255), g: clamp(g, 255), b: clamp(b, 255), a: clamp(a, 1) };
}

/** `top` painted over the opaque `bottom`. */
export function composite(top: Rgba, bottom: Rgba): Rgba {
  const mix = (t: number, b: number) => t * top.a + b * (1 - top.a);
  return { r: mix(top.r, bottom.r), g: mix(top.g, bottom.g), b: mix(top.b, bottom.b), a: 1 };
}

/** WCAG relative luminance of an opaque colour. */
export function luminance(c: Rgba): number {
  const lin = (v: number) => {
    const x = v / 255;
    return x <= 0.04045 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4;
  };
  return 0.2126 * lin(c.r) + 0.7152 * lin(c.g) + 0.0722 * lin(c.b);
}

/** WCAG contrast ratio (1..21) of two opaque colours. */
export function contrastRatio(a: Rgba, b: Rgba): number {
  const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
  return (hi + 0.05) / (lo + 0.05);
}

/** `#rrggbb` of an opaque colour. */
export function toHex(c: Rgba): string {
  return `#${[c.r, c.g, c.b].map((v) => Math.round(v).toString(16).padStart(2, '0')).join('')}`;
}

/**
 * The theme colour `color` as a line drawn on `background`: opaque, and mixed toward
 * `foreground` (in 5% steps, the least that suffices) until it has `minContrast` against the
 * background. Colours that cannot be parsed are returned unchanged.
 */
export function readableSeriesColor(color: string, background: string, foreground: string, minContrast = MIN_GRAPHIC_CONTRAST): string {
  const c = parseCssColor(color);
  const bgRaw = parseCssColor(background);
  const fgRaw = parseCssColor(foreground);
  if (!c || !bgRaw || !fgRaw) return color;
  const bg = composite(bgRaw, { r: 255, g: 255, b: 255, a: 1 });
  const fg = composite(fgRaw, bg);
  const base = { ...c, a: 1 };
  for (let step = 0; step <= 20; step++) {
    const t = step / 20;
    // Judged after rounding to #rrggbb, so the colour drawn is the colour that passed.
    const hex = toHex({ r: base.r + (fg.r - base.r) * t, g: base.g + (fg.g - base.g) * t, b: base.b + (fg.b - base.b) * t, a: 1 });
    if (contrastRatio(parseCssColor(hex)!, bg) >= minContrast) return hex;
  }
  return toHex(fg);
}

/**
 * The colour seen where `layers` are stacked, topmost first (a card's translucent background
 * over the editor's, for instance); layers that cannot be parsed are skipped. `#rrggbb`, or the
 * last layer unchanged when none parses.
 */
export function stackedBackground(...layers: string[]): string {
  let seen: Rgba | null = null;
  for (const layer of [...layers].reverse()) {
    const c = parseCssColor(layer);
    if (c) seen = seen ? composite(c, seen) : composite(c, { r: 255, g: 255, b: 255, a: 1 });
  }
  return seen ? toHex(seen) : layers[layers.length - 1];
}
