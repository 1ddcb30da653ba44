/**
 * One checkpoint's evaluation throughput on the GPU machine (bundled with esbuild, run by the
 * carried Node): the bytes of a text as token ids, windows of 256, per backend and precision.
 * One JSON line per configuration; GPU memory is sampled by the calling script (nvidia-smi).
 *
 *   node eval-model.js <checkpoint dir> <text> [configs]
 * configs: comma list of backend:precision[:windows[:batch]] (default cuda:float16).
 * FK_BENCH_PREWARM=1 first creates a one-node session on the first config's backend and reports
 * how long that took (the provider's own start-up: CUDA context, libraries), so that the
 * evaluation's session time that follows is the model's alone.
 */
import { readFileSync } from 'node:fs';
import { DataType, GraphBuilder } from '../../src/core/compute/onnx';
import { createSession, Tensor, type BackendChoice, type BackendName } from '../../src/core/compute/session';
import { evaluateCheckpoint, type Precision } from '../../src/core/eval';

async function main(): Promise<void> {
  const [dir, textPath, configs] = process.argv.slice(2);
  const ids = Int32Array.from(readFileSync(textPath));
  const line = (o: Record<string, unknown>) => process.stdout.write(JSON.stringify(o) + '\n');
  if (process.env.FK_BENCH_PREWARM) {
    const backend = (configs ?? 'cuda').split(':')[0] as BackendName;
    const g = new GraphBuilder('prewarm');
    g.op('Cast', [g.input('x', 'float32', [4])], { to: DataType.FLOAT }, { outputs: ['y'] });
    g.output('y', 'float32', [4]);
    const t = performance.now();
    const s = await createSession(g.toModel({ opset: 17 }), { backend });
    const created = performance.now() - t;
    await s.run({ x: new Tensor('float32', new Float32Array(4), [4]) });
    line({ prewarm: backend, used: s.backend, createMs: created, firstRunMs: performance.now() - t - created });
    await s.dispose();
  }
  for (const c of (configs ?? 'cuda:float16').split(',')) {
    const [backend, precision, windows, batch] = c.split(':');
    const t = performance.now();
    try {
      const r = await evaluateCheckpoint(dir, ids, { seq: 256, backend: backend as BackendChoice, precision: precision as Precision, maxWindows: windows ? Number(windows) : undefined, batch: batch ? Number(batch) : undefined });
      const s = (performance.now() - t) / 1000;
      line({ dir, backend, used: r.backend, precision, windows: r.windows, tokens: r.tokens, seconds: s, tokensPerSecond: r.tokens / s, perplexity: r.perplexity, segments: r.plan?.segments.length, batch: r.plan?.batch, lastBatch: r.plan?.lastBatch, fallback: r.fallbackReason, timings: r.timings, inPlace: r.plan?.inPlace, peakRssGiB: process.resourceUsage().maxRSS / 2 ** 20 });
    } catch (e) {
      line({ dir, backend, precision, error: String((e as Error).message).split('\n')[0] });
    }
  }
}

main().catch((e) => {
  console.error('error:', (e as Error).message);
  process.exit(1);
});
