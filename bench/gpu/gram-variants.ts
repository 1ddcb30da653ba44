/**
 * Per-layer cost of the Gram step's variants on one Mistral-7B layer (40 heads of 128 x 4096,
 * random bf16 weights), CPU provider, best of 5 after a warm-up: how bf16 is widened (in the
 * graph: BitCast+Cast, Cast+BitShift+BitCast, on 1 or 8 branches; or by JavaScript before the
 * run) and how the float32 input is split. Bundled for the GPU machine (see spectrum-h200.sh).
 */
import * as os from 'node:os';
import { DataType, GraphBuilder } from '../../src/core/compute/onnx';
import { createSession, Tensor } from '../../src/core/compute/session';
import { bf16Branches, gramModel } from '../../src/core/spectrum/gram';

const heads = 40;
const hd = 128;
const dm = 4096;
const block = hd * dm;

/**
 * The batched Gram product over several float32 inputs at once: input `w<k>` (counts[k] x
 * headDim x dModel) gives output `g<k>`. Used when the layer arrives in parts (widened to
 * float32 by worker threads, each part its own buffer), so one `session.run` covers the layer.
 */
function gramPartsModel(headDim: number, dModel: number, counts: readonly number[]): Uint8Array {
  const g = new GraphBuilder(`gram_parts_${counts.length}`);
  counts.forEach((c, k) => {
    const x = g.input(`w${k}`, 'float32', [c, headDim, dModel]);
    g.op('MatMul', [x, g.op('Transpose', [x], { perm: [0, 2, 1] })], {}, { outputs: [`g${k}`] });
    g.output(`g${k}`, 'float32', [c, headDim, headDim]);
  });
  return g.toModel({ opset: 17 });
}

/** bfloat16 -> float32 in place (the 16-bit values in the upper half of `buffer`), two per 32-bit load. */
function widenBf16InPlace(buffer: ArrayBuffer, elements: number): void {
  const pairs = elements >>> 1;
  const src = new Int32Array(buffer, 2 * elements, pairs);
  const dst = new Int32Array(buffer, 0, elements);
  for (let k = 0, o = 0; k < pairs; k++, o += 2) {
    const w = src[k];
    dst[o] = w << 16;
    dst[o + 1] = w & -65536;
  }
}

async function best(f: () => Promise<unknown> | unknown, k = 5): Promise<number> {
  await f();
  let b = Infinity;
  for (let i = 0; i < k; i++) {
    const s = performance.now();
    await f();
    b = Math.min(b, performance.now() - s);
  }
  return b;
}

/** uint16 -> int32 Cast, BitShift left 16 (as uint32), BitCast to float: integer widening in-graph. */
function shiftModel(): Uint8Array {
  const g = new GraphBuilder('gram_shift');
  const x = g.input('w', 'uint16', ['batch', hd, dm]);
  const u = g.op('Cast', [x], { to: DataType.UINT32 });
  const sh = g.op('BitShift', [u, g.constant('uint32', [], Uint32Array.from([16]))], { direction: 'LEFT' });
  const f = g.op('BitCast', [sh], { to: DataType.FLOAT });
  g.op('MatMul', [f, g.op('Transpose', [f], { perm: [0, 2, 1] })], {}, { outputs: ['gram'] });
  g.output('gram', 'float32', ['batch', hd, hd]);
  return g.toModel({ opset: 26 });
}

async function main(): Promise<void> {
  const threads = os.availableParallelism();
  const raw = new Uint16Array(heads * block);
  let x = 0x9e3779b9;
  for (let i = 0; i < raw.length; i++) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    raw[i] = (x & 0x807f) | ((117 + ((x >>> 7) & 7)) << 7);
  }
  const f32 = new Float32Array(raw.length);
  const u32 = new Uint32Array(f32.buffer);
  for (let i = 0; i < raw.length; i++) u32[i] = raw[i] << 16;
  const out: Record<string, number> = {};
  const opts = { backend: 'cpu' as const, spinning: false };
  const bf1 = await createSession(gramModel('bfloat16', hd, dm, 1, heads), opts);
  out['bf16 in-graph BitCast+Cast, 1 branch'] = await best(() => bf1.run({ w: new Tensor('uint16', raw, [heads, hd, dm]) }));
  const br = bf16Branches('cpu', threads, heads);
  const bfb = await createSession(gramModel('bfloat16', hd, dm, br, heads), { ...opts, parallelBranches: br });
  out[`bf16 in-graph BitCast+Cast, ${br} branches (previous default)`] = await best(() => bfb.run({ w: new Tensor('uint16', raw, [heads, hd, dm]) }));
  try {
    const sh = await createSession(shiftModel(), opts);
    out['bf16 in-graph Cast(uint32)+BitShift+BitCast, 1 branch'] = await best(() => sh.run({ w: new Tensor('uint16', raw, [heads, hd, dm]) }));
  } catch (e) {
    console.log('shift variant failed:', (e as Error).message.split('\n')[0]);
  }
  const f1 = await createSession(gramModel('float32', hd, dm, 1, heads), opts);
  out['float32 input, 1 run of 40 heads'] = await best(() => f1.run({ w: new Tensor('float32', f32, [heads, hd, dm]) }));
  for (const per of [1, 3, 5, 10, 20]) {
    const counts: number[] = [];
    for (let left = heads; left > 0; left -= per) counts.push(Math.min(per, left));
    const parts = counts.map((_, k) => f32.subarray(counts.slice(0, k).reduce((a, b) => a + b, 0) * block, counts.slice(0, k + 1).reduce((a, b) => a + b, 0) * block).slice());
    for (const inter of [1, 4]) {
      const s = await createSession(gramPartsModel(hd, dm, counts), { ...opts, parallelBranches: inter });
      const feeds: Record<string, Tensor> = {};
      parts.forEach((p, k) => (feeds[`w${k}`] = new Tensor('float32', p, [counts[k], hd, dm])));
      out[`float32 parts of ${per} heads (${counts.length} inputs), inter-op ${inter}`] = await best(() => s.run(feeds));
    }
  }
  const buf = new ArrayBuffer(raw.length * 4);
  const upper = new Uint16Array(buf, raw.length * 2, raw.length);
  const copy = await best(() => upper.set(raw));
  out['JavaScript widening of the layer, 1 thread (widenBf16InPlace)'] = (await best(() => { upper.set(raw); widenBf16InPlace(buf, raw.length); })) - copy;
  console.log(`gram variants, one Mistral-7B layer (40 heads), ${threads} threads, ms per layer (best of 5):`);
  for (const [k, v] of Object.entries(out)) console.log(`  ${v.toFixed(2)}  ${k}`);
}
main().catch((e) => {
  console.error(e);
  process.exit(1);
});
