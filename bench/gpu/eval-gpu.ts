/**
 * Evaluation throughput on a GPU machine (bundled with esbuild and run there by the carried
 * Node; see /work/shared/gpu/README.md): the TinyLlama-1.1B-shaped synthetic bf16 checkpoint
 * (bench/eval.ts) over heldout.txt, streamed, per backend and precision, and the trained
 * Mistral fixture's perplexity per precision (the 0.5 % bar). One JSON line per measurement.
 *
 *   node eval-gpu.js <heldout.txt> <mistral-bytes dir> <work dir> [configs]
 * configs: comma list of backend:precision:windows[:batch] for the 1.1B model (default
 * webgpu:float16:255:16,webgpu:float32:64:16).
 */
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import type { BackendChoice } from '../../src/core/compute/session';
import { evaluateCheckpoint, type Precision } from '../../src/core/eval';
import { syntheticLlama1b } from '../eval';

async function main(): Promise<void> {
  const [heldoutPath, mistral, work, configs] = process.argv.slice(2);
  const heldout = Int32Array.from(readFileSync(heldoutPath));
  const line = (o: Record<string, unknown>) => process.stdout.write(JSON.stringify(o) + '\n');
  const t0 = performance.now();
  const dir = await syntheticLlama1b(path.join(work, 'llama-1.1b-synthetic'));
  line({ step: 'generate', seconds: (performance.now() - t0) / 1000 });
  for (const c of (configs ?? 'webgpu:float16:255:16,webgpu:float32:64:16').split(',')) {
    const [backend, precision, windows, batch] = c.split(':');
    const t = performance.now();
    try {
      const r = await evaluateCheckpoint(dir, heldout, { seq: 256, backend: backend as BackendChoice, precision: precision as Precision, maxWindows: Number(windows), batch: batch ? Number(batch) : undefined });
      const s = (performance.now() - t) / 1000;
      line({ model: 'llama-1.1b', backend, used: r.backend, precision, windows: r.windows, tokens: r.tokens, seconds: s, tokensPerSecond: r.tokens / s, perplexity: r.perplexity, segments: r.plan?.segments.length, batch: r.plan?.batch, lastBatch: r.plan?.lastBatch, fallback: r.fallbackReason, timings: r.timings, inPlace: r.plan?.inPlace, rssGiB: process.memoryUsage().rss / 2 ** 30 });
    } catch (e) {
      line({ model: 'llama-1.1b', backend, precision, error: String((e as Error).message).split('\n')[0] });
    }
  }
  for (const [backend, precision] of [['webgpu', 'float16'], ['webgpu', 'float32'], ['cpu', 'float32']] as const) {
    const t = performance.now();
    try {
      const r = await evaluateCheckpoint(mistral, heldout, { seq: 256, backend, precision });
      line({ model: 'mistral-bytes', backend, used: r.backend, precision, half: r.plan?.half, tokens: r.tokens, seconds: (performance.now() - t) / 1000, perplexity: r.perplexity, reference: 4.30765 });
    } catch (e) {
      line({ model: 'mistral-bytes', backend, precision, error: String((e as Error).message).split('\n')[0] });
    }
  }
}

main().catch((e) => {
  console.error('error:', (e as Error).message);
  process.exit(1);
});
