/**
 * Calibration benchmark: time and peak RSS of `calibrated`'s statistics pass (forward over N
 * calibration tokens, one layer at a time, C per layer, S_k/S_q per head) and of the bases, on a
 * checkpoint folder (e.g. the Mistral-7B-shaped synthetic one from ./synthetic.ts).
 *
 *   node --import tsx bench/calibration.ts <checkpoint> <text> <tokens> [backend] [--generate mistral-7b] [--tokenizer tokenizer.json]
 *
 * Prints one JSON line. The text is fed with the `bytes` tokenizer (ids 0..255 fit any vocabulary)
 * unless --tokenizer names one (e.g. ./byte-tokenizer.ts's, the ids the CLI run uses).
 */
import { existsSync } from 'node:fs';
import { buildLayout } from '../src/core/arch';
import { openCheckpoint } from '../src/core/checkpoint/checkpoint';
import { calibrationMoments } from '../src/core/calibration/moments';
import { parseBackendChoice } from '../src/core/compute/session';
import { calibratedBasis } from '../src/core/factor/calibrated';
import { generateSyntheticCheckpoint } from './synthetic';

async function main(): Promise<void> {
  const [dir, text, tokensRaw, backendRaw] = process.argv.slice(2);
  const gen = process.argv.indexOf('--generate');
  const tok = process.argv.indexOf('--tokenizer');
  const tokenizer = tok > 0 ? process.argv[tok + 1] : 'bytes';
  if (gen > 0 && !existsSync(dir)) {
    const t = performance.now();
    await generateSyntheticCheckpoint(process.argv[gen + 1] as 'mistral-7b', dir);
    console.error(`generated ${dir} in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  }
  const ckpt = await openCheckpoint(dir);
  try {
    const layout = buildLayout(ckpt);
    const t0 = performance.now();
    let last = 0;
    const stats = await calibrationMoments(ckpt, layout, { text, tokenizer, tokens: Number(tokensRaw), cacheDir: null, backend: parseBackendChoice(backendRaw ?? 'cpu') }, {
      progress: (done, total, label) => {
        const now = performance.now();
        if (now - last > 10000) {
          last = now;
          console.error(`${label} ${done}/${total} ${((now - t0) / 1000).toFixed(0)} s rss ${(process.memoryUsage().rss / 2 ** 30).toFixed(2)} GiB`);
        }
      },
    });
    const t1 = performance.now();
    let finite = true;
    for (const row of stats.moments) for (const m of row) if (!m.key.every(Number.isFinite) || !m.query.every(Number.isFinite)) finite = false;
    const bases = finite ? stats.moments.map((row, l) => row.map((m, g) => calibratedBasis(m, layout.headDim, l, g))) : [];
    const t2 = performance.now();
    console.log(
      JSON.stringify({
        checkpoint: dir.split('/').pop(),
        layers: layout.layers.length,
        hidden: layout.hiddenSize,
        tokens: stats.info.tokens,
        backend: stats.backend,
        statistics_s: +((t1 - t0) / 1000).toFixed(2),
        tokens_per_s: +(stats.info.tokens / ((t1 - t0) / 1000)).toFixed(1),
        bases_s: +((t2 - t1) / 1000).toFixed(2),
        heads: bases.flat().length,
        finite,
        peak_rss_gib: +(process.resourceUsage().maxRSS / 2 ** 20).toFixed(3),
      }),
    );
  } finally {
    await ckpt.close();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
