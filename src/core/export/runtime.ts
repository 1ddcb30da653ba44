/**
 * The Hugging Face runtime of an export: `python/modeling_factored_keys.py`, a fixed template of
 * this project copied byte for byte into the export, and the per-layer `attention` block of
 * `factored_keys` that it reads at run time (docs/FORMAT.md section 9). Nothing from the
 * checkpoint is ever written into the Python file: every variable lives in config.json.
 */
import { existsSync, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { LayerDescription, QkNorm } from '../arch/description';
import { FactoredKeysError } from '../errors';
import { RUNTIME_FILE, type LayerRuntime, type RopeMode, type RuntimeNorm } from './format';
import type { LayerRewrite } from './rewrite';

/**
 * Where the template lies: `python/` at the project root, found from this module's folder
 * (src/core/export under tsx, dist/ in the bundles and the .vsix).
 */
export function runtimeTemplatePath(): string {
  let dir = __dirname;
  for (let i = 0; i < 5; i++) {
    const p = path.join(dir, 'python', RUNTIME_FILE);
    if (existsSync(p)) return p;
    dir = path.dirname(dir);
  }
  throw new FactoredKeysError(`export: the runtime template python/${RUNTIME_FILE} is missing from this installation`);
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
