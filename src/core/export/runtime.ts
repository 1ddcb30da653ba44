/**
 * The Hugging Face runtime of an export: `python/modeling_factored_keys.py`, a fixed template of
 * this project copied byte for byte into the export, and the per-layer `attention` block of
 * `factored_keys` that it reads at run time (docs/FORMAT.md section 9). Nothing from the
 * checkpoint is ever written into the Python file: every variable lives in config.json.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { LayerDescription, QkNorm } from '../arch/description';
import { RUNTIME_FILE, type LayerRuntime, type RopeMode, type RuntimeNorm } from './format';
import type { LayerRewrite } from './rewrite';
import { shippedPythonFile } from '../shippedPython';

/** Where the template lies (`python/` at the project root). */
export function runtimeTemplatePath(): string {
  return shippedPythonFile(RUNTIME_FILE, 'export: the runtime template');
}

/** Copies the template unchanged into `folder` (refusing to overwrite). */
export async function writeRuntime(folder: string): Promise<void> {
  await fsp.copyFile(runtimeTemplatePath(), path.join(folder, RUNTIME_FILE), fsp.constants.COPYFILE_EXCL);
}

function norm(n: QkNorm | null): RuntimeNorm | null {
  return n ? { weight: n.norm.weight, scope: n.scope } : null;
}

/** The runtime block of one layer: its description's attention features and the rewritten shapes. */
export function layerRuntime(block: LayerDescription, rw: LayerRewrite, mode: RopeMode): LayerRuntime {
  const a = block.attention;
  const shapes: Record<string, number[]> = {};
  for (const t of rw.replaced.values()) shapes[t.name] = [...t.shape];
  for (const t of rw.added) shapes[t.tensor.name] = [...t.tensor.shape];
  const rope = mode === 'latent' ? a.rope : null;
  return {
    shapes,
    output: a.output.weight,
    q_norm: norm(a.qNorm),
    k_norm: norm(a.kNorm),
    rotary_dim: rope ? rope.rotaryDim : null,
    rope_style: rope ? rope.style : null,
    scale: a.scale,
    softcap: a.softcap,
    sliding_window: a.slidingWindow,
    sinks: a.sinks,
  };
}

/**
 * The export's config.json: the source's own text for every top-level entry (so `15.0` stays a
 * float: transformers 5 validates config fields by type and refuses `15` for a float), minus the
 * keys in `added`, then `added` (pretty-printed). Falls back to re-serialising when the source is
 * not a plain JSON object the scanner understands.
 */
export function configWithAdditions(raw: string, parsed: Record<string, unknown>, added: Record<string, unknown>): string {
  const entries = topLevelEntries(raw);
  const out: string[] = [];
  if (entries && JSON.stringify(Object.fromEntries(entries.map(([k, v]) => [JSON.parse(k) as string, JSON.parse(v) as unknown]))) === JSON.stringify(parsed)) {
    for (const [k, v] of entries) if (!Object.hasOwn(added, JSON.parse(k) as string)) out.push(`  ${k}: ${v}`);
  } else {
    for (const [k, v] of Object.entries(parsed)) if (!Object.hasOwn(added, k)) out.push(`  ${JSON.stringify(k)}: ${JSON.stringify(v, null, 2).replace(/\n/g, '\n  ')}`);
  }
  for (const [k, v] of Object.entries(added)) out.push(`  ${JSON.stringify(k)}: ${JSON.stringify(v, null, 2).replace(/\n/g, '\n  ')}`);
  return `{\n${out.join(',\n')}\n}\n`;
}

/** [raw key, raw value] of a JSON object's top-level entries, or null if `raw` is not one. */
function topLevelEntries(raw: string): [string, string][] | null {
  let i = 0;
  const ws = () => {
    while (i < raw.length && ' \t\r\n'.includes(raw[i])) i++;
  };
  const str = (): boolean => {
    if (raw[i] !== '"') return false;
    for (i++; i < raw.length; i++) {
      if (raw[i] === '\\') i++;
      else if (raw[i] === '"') {
        i++;
        return true;
      }
    }
    return false;
  };
  ws();
  if (raw[i] !== '{') return null;
  i++;
  const entries: [string, string][] = [];
  ws();
  if (raw[i] === '}') return entries;
  for (;;) {
    ws();
    const k0 = i;
    if (!str()) return null;
    const key = raw.slice(k0, i);
    ws();
    if (raw[i] !== ':') return null;
    i++;
    ws();
    const v0 = i;
    let depth = 0;
    while (i < raw.length) {
      const c = raw[i];
      if (c === '"') {
        if (!str()) return null;
        continue;
      }
      if (c === '{' || c === '[') depth++;
      else if (c === '}' || c === ']') {
        if (depth === 0) break;
        depth--;
      } else if (c === ',' && depth === 0) break;
      i++;
    }
    const value = raw.slice(v0, i).trim();
    try {
      JSON.parse(value);
      JSON.parse(key);
    } catch {
      return null;
    }
    entries.push([key, value]);
    if (raw[i] === ',') {
      i++;
      continue;
    }
    if (raw[i] !== '}') return null;
    i++;
    ws();
    return i === raw.length ? entries : null;
  }
}
