/** A checkpoint's config.json read only for defaults (the command itself validates it later). */
import { readFileSync, statSync } from 'node:fs';
import * as path from 'node:path';
import type { ModelConfig } from '../core/checkpoint/checkpoint';
import { resolveHubCache } from '../core/checkpoint/checkpoint';
import { jsonTooDeep } from '../core/checkpoint/jsonDepth';

/**
 * The config.json beside or inside `input` (a folder, an index.json or a .safetensors file), or
 * undefined when it cannot be read: the command's own open then reports the problem.
 */
export async function readConfigForDefaults(input: string): Promise<ModelConfig | undefined> {
  try {
    let dir = statSync(input).isDirectory() ? path.resolve(input) : path.dirname(path.resolve(input));
    dir = (await resolveHubCache(dir).catch(() => undefined))?.snapshot ?? dir;
    const file = path.join(dir, 'config.json');
    if (!statSync(file).isFile() || statSync(file).size > 64 * 1024 * 1024) return undefined;
    const text = readFileSync(file, 'utf8');
    if (jsonTooDeep(text) !== undefined) return undefined;
    const v = JSON.parse(text) as unknown;
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as ModelConfig) : undefined;
  } catch {
    return undefined;
  }
}
