/**
 * The floor of `analyze`: only reading every Q/K byte range it reads (no compute), as the
 * spectrum bench's `read` child does; bundled for the GPU machine (see spectrum-h200.sh).
 * Prints seconds for `sequential` (one request per tensor per layer, in order, like the bench)
 * and `parallel` (4 MiB requests, all of a layer in flight at once).
 */
import { buildLayout } from '../../src/core/arch';
import { openCheckpoint } from '../../src/core/checkpoint/checkpoint';

async function main(): Promise<void> {
  const ckpt = await openCheckpoint(process.argv[2]);
  const layout = buildLayout(ckpt);
  const ranges = layout.layers.map((l) =>
    [l.keyHeads, l.queryHeads].map((slices) => {
      const t = ckpt.tensor(slices[0].tensor);
      return { tensor: slices[0].tensor, first: slices[0].offset, last: slices[slices.length - 1].offset + layout.headDim, rowBytes: (t.end - t.start) / t.shape[0] };
    }),
  );
  const buf = new Uint8Array(64 << 20);
  for (const mode of ['sequential', 'parallel', 'sequential', 'parallel', 'sequential', 'parallel']) {
    const started = performance.now();
    let bytes = 0;
    for (const layer of ranges) {
      const reads: Promise<unknown>[] = [];
      let at = 0;
      for (const r of layer) {
        const n = (r.last - r.first) * r.rowBytes;
        if (mode === 'sequential') {
          await ckpt.readRows(r.tensor, r.first, r.last, buf.subarray(0, n));
        } else {
          const step = Math.max(1, Math.floor((4 << 20) / r.rowBytes));
          for (let row = r.first; row < r.last; row += step) {
            const end = Math.min(r.last, row + step);
            reads.push(ckpt.readRows(r.tensor, row, end, buf.subarray(at, at + (end - row) * r.rowBytes)));
            at += (end - row) * r.rowBytes;
          }
        }
        bytes += n;
      }
      await Promise.all(reads);
    }
    const s = (performance.now() - started) / 1000;
    console.log(`read ${mode}: ${(bytes / 1e9).toFixed(2)} GB in ${s.toFixed(3)} s (${(bytes / 1e9 / s).toFixed(2)} GB/s)`);
  }
  await ckpt.close();
}
main().catch((e) => {
  console.error(e);
  process.exit(1);
});
