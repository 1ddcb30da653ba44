/**
 * The streaming spectrum engine behind `analyzeSpectra`: per layer, read the Q/K head blocks
 * by byte range (16-bit weights stay 16-bit), one batched Gram product on onnxruntime, then the
 * per-head eigensolves; the next layer's reads are in flight while the current layer computes.
 */
import * as os from 'node:os';
import type { AttentionLayout, HeadSlice } from '../arch/layout';
import type { Checkpoint } from '../checkpoint/checkpoint';
import { decodeToFloat32 } from '../checkpoint/dtypes';
import { usableBackends, type BackendName } from '../compute/session';
import { FactoredKeysError, throwIfCancelled } from '../errors';
import { EigenPool, solveEigenTask } from './eigenPool';
import { GramRunner, type GramFeed } from './gram';
import type { HeadSpectrum, SpectrumKind, SpectrumOptions, SpectrumResult } from './index';
import { cumulativeEnergy, effectiveRanks, stableRank } from './metrics';

/** One head to analyse. */
interface HeadJob {
  readonly kind: SpectrumKind;
  readonly head: number;
  readonly slice: HeadSlice;
}

/** A layer's heads, loaded as W^T blocks (batch x headDim x dModel) ready to feed. */
interface LayerBatch {
  readonly layer: number;
  readonly jobs: readonly HeadJob[];
  readonly feed: GramFeed;
  readonly dModel: number;
  readonly data: Float32Array | Uint16Array;
}

/** Below this many heads in the whole model, worker start-up costs more than it saves. */
const MIN_HEADS_FOR_WORKERS = 96;

function layerJobs(layout: AttentionLayout, layer: number, kinds: readonly SpectrumKind[]): HeadJob[] {
  const l = layout.layers[layer];
  const jobs: HeadJob[] = [];
  for (const kind of kinds) {
    const slices = kind === 'key' ? l.keyHeads : l.queryHeads;
    slices.forEach((slice, head) => jobs.push({ kind, head, slice }));
  }
  return jobs;
}

/** d_model of a head slice, from its tensor's shape. */
function sliceDModel(ckpt: Checkpoint, slice: HeadSlice): number {
  const t = ckpt.tensor(slice.tensor);
  if (t.shape.length !== 2) throw new FactoredKeysError(`${t.file}: tensor "${t.name}" has shape [${t.shape.join(', ')}], expected a 2-D projection`);
  return slice.orientation === 'linear' ? t.shape[1] : t.shape[0];
}

/**
 * Reads one layer's heads. Fast path (row-oriented F32/F16/BF16 projections, i.e. every HF
 * `nn.Linear` checkpoint): each head's W^T is a contiguous run of rows, read straight into the
 * feed buffer, and adjacent heads of one tensor are read in one request. Otherwise (GPT-2
 * Conv1D columns, F64/F8 weights) the tensor is decoded to float32 and the blocks gathered.
 */
async function loadLayer(ckpt: Checkpoint, layout: AttentionLayout, layer: number, kinds: readonly SpectrumKind[]): Promise<LayerBatch> {
  const jobs = layerJobs(layout, layer, kinds);
  const hd = layout.headDim;
  const dModel = jobs.length > 0 ? sliceDModel(ckpt, jobs[0].slice) : layout.hiddenSize;
  for (const j of jobs) {
    if (sliceDModel(ckpt, j.slice) !== dModel) throw new FactoredKeysError(`${ckpt.tensor(j.slice.tensor).file}: tensor "${j.slice.tensor}" has input size ${sliceDModel(ckpt, j.slice)}, expected ${dModel} like the other heads of layer ${layer}`);
    const t = ckpt.tensor(j.slice.tensor);
    const outFeatures = j.slice.orientation === 'linear' ? t.shape[0] : t.shape[1];
    if (j.slice.offset < 0 || j.slice.offset + hd > outFeatures) throw new FactoredKeysError(`${t.file}: tensor "${t.name}" has ${outFeatures} output features, too few for a head at ${j.slice.offset}..${j.slice.offset + hd}`);
  }
  const dtypes = new Set(jobs.map((j) => ckpt.tensor(j.slice.tensor).dtype));
  const dtype = dtypes.size === 1 ? [...dtypes][0] : undefined;
  const direct = jobs.every((j) => j.slice.orientation === 'linear') && (dtype === 'F32' || dtype === 'F16' || dtype === 'BF16');
  const block = hd * dModel;
  if (direct) {
    const feed: GramFeed = dtype === 'F32' ? 'float32' : dtype === 'F16' ? 'float16' : 'bfloat16';
    const bytesPerElement = dtype === 'F32' ? 4 : 2;
    const buffer = new ArrayBuffer(jobs.length * block * bytesPerElement);
    const reads: Promise<Uint8Array>[] = [];
    for (let i = 0; i < jobs.length; ) {
      // coalesce heads stored back to back in one tensor into one read
      let k = i + 1;
      while (k < jobs.length && jobs[k].slice.tensor === jobs[i].slice.tensor && jobs[k].slice.offset === jobs[k - 1].slice.offset + hd) k++;
      const target = new Uint8Array(buffer, i * block * bytesPerElement, (k - i) * block * bytesPerElement);
      reads.push(ckpt.readRows(jobs[i].slice.tensor, jobs[i].slice.offset, jobs[k - 1].slice.offset + hd, target));
      i = k;
    }
    await Promise.all(reads);
    return { layer, jobs, feed, dModel, data: feed === 'float32' ? new Float32Array(buffer) : new Uint16Array(buffer) };
  }
  const data = new Float32Array(jobs.length * block);
  const decoded = new Map<string, Float32Array>();
  for (let i = 0; i < jobs.length; i++) {
    const { slice } = jobs[i];
    const out = data.subarray(i * block, (i + 1) * block);
    if (slice.orientation === 'linear') {
      out.set(await ckpt.readRowsF32(slice.tensor, slice.offset, slice.offset + hd));
      continue;
    }
    // Conv1D [in, out]: the head is columns offset..offset+hd; W^T[j][i] = T[i][offset + j]
    let full = decoded.get(slice.tensor);
    if (!full) {
      const t = ckpt.tensor(slice.tensor);
      full = decodeToFloat32(t.dtype, await ckpt.readRows(slice.tensor));
      decoded.set(slice.tensor, full);
    }
    const cols = ckpt.tensor(slice.tensor).shape[1];
    for (let r = 0; r < dModel; r++) {
      const src = r * cols + slice.offset;
      for (let j = 0; j < hd; j++) out[j * dModel + r] = full[src + j];
    }
  }
  return { layer, jobs, feed: 'float32', dModel, data };
}

/** Builds a head's result from its eigenvalues (NaN-filled when its Gram was not finite). */
function headSpectrum(layer: number, job: HeadJob, eigen: Float64Array, at: number, n: number): HeadSpectrum {
  if (Number.isNaN(eigen[at])) {
    return { layer, kind: job.kind, head: job.head, singularValues: [], cumulativeEnergy: [], effectiveRank: { p90: 0, p95: 0, p99: 0 }, stableRank: 0, nonFinite: true };
  }
  const sv = new Array<number>(n);
  for (let i = 0; i < n; i++) sv[i] = Math.sqrt(Math.max(eigen[at + i], 0));
  const cumulative = cumulativeEnergy(sv);
  return { layer, kind: job.kind, head: job.head, singularValues: sv, cumulativeEnergy: cumulative, effectiveRank: effectiveRanks(cumulative), stableRank: stableRank(sv) };
}

/** Picks the provider for `auto`: the only usable one, or the fastest on a real layer. */
async function raceBackends(candidates: BackendName[], sample: LayerBatch, headDim: number, threads: number | undefined, notes: string[]): Promise<GramRunner> {
  const runners = candidates.map((b) => new GramRunner(b, threads));
  const times: number[] = [];
  for (const r of runners) {
    // first run pays for session creation and kernel compilation; time the second
    await r.run(sample.feed, sample.data, sample.jobs.length, headDim, sample.dModel);
    const t = performance.now();
    await r.run(sample.feed, sample.data, sample.jobs.length, headDim, sample.dModel);
    times.push(r.backend === r.requested ? performance.now() - t : Number.POSITIVE_INFINITY);
  }
  let best = 0;
  for (let i = 1; i < runners.length; i++) if (times[i] < times[best]) best = i;
  notes.push(`auto: ${runners.map((r, i) => `${r.requested} ${Number.isFinite(times[i]) ? `${times[i].toFixed(1)} ms` : 'failed'}`).join(', ')} per layer; using ${runners[best].backend}`);
  await Promise.all(runners.filter((_, i) => i !== best).map((r) => r.dispose()));
  return runners[best];
}

/** Implementation of `analyzeSpectra` (see there). */
export async function runSpectrumEngine(ckpt: Checkpoint, layout: AttentionLayout, options: SpectrumOptions): Promise<SpectrumResult> {
  const started = performance.now();
  const kinds: readonly SpectrumKind[] = options.kinds && options.kinds.length > 0 ? [...new Set(options.kinds)] : ['key', 'query'];
  const threads = options.threads;
  const choice = options.backend ?? 'auto';
  const notes: string[] = [];
  const layers = layout.layers.length;
  const n = layout.headDim;
  const heads: HeadSpectrum[] = [];
  const totalHeads = layout.layers.reduce((s, l) => s + kinds.reduce((a, k) => a + (k === 'key' ? l.keyHeads.length : l.queryHeads.length), 0), 0);

  const cores = Math.max(1, threads ?? os.availableParallelism());
  const pool = totalHeads >= MIN_HEADS_FOR_WORKERS && n >= 32 ? EigenPool.create(cores) : undefined;
  let runner: GramRunner | undefined;
  try {
    throwIfCancelled(options.cancel);
    options.progress?.(0, layers, 'reading layer 0');
    let nextBatch: Promise<LayerBatch> | undefined = layers > 0 ? loadLayer(ckpt, layout, 0, kinds) : undefined;
    const pendingEigen: Promise<void>[] = [];
    for (let layer = 0; layer < layers; layer++) {
      const batch = await nextBatch!;
      nextBatch = layer + 1 < layers ? loadLayer(ckpt, layout, layer + 1, kinds) : undefined;
      // keep a rejected prefetch from surfacing as unhandled if we stop early
      nextBatch?.catch(() => undefined);
      throwIfCancelled(options.cancel);
      if (batch.jobs.length === 0) continue;
      if (!runner) {
        if (choice === 'auto') {
          const candidates = await usableBackends();
          runner = candidates.length > 1 ? await raceBackends(candidates, batch, n, threads, notes) : new GramRunner(candidates[0], threads);
        } else {
          runner = new GramRunner(choice, threads);
        }
      }
      const grams = await runner.run(batch.feed, batch.data, batch.jobs.length, n, batch.dModel);
      const slot = heads.length;
      heads.length += batch.jobs.length;
      const place = (eigen: Float64Array): void => {
        batch.jobs.forEach((job, i) => (heads[slot + i] = headSpectrum(batch.layer, job, eigen, i * n, n)));
      };
      if (pool) pendingEigen.push(pool.eigenvalues(grams, n, batch.jobs.length).then(place));
      else place(solveEigenTask(grams, n, batch.jobs.length));
      options.progress?.(layer + 1, layers, `layer ${layer + 1}/${layers}`);
    }
    await Promise.all(pendingEigen);
    throwIfCancelled(options.cancel);
    if (runner) for (const note of runner.notes) if (!notes.includes(note)) notes.push(note);
    return { backend: runner?.backend ?? (choice === 'auto' ? 'cpu' : choice), seconds: (performance.now() - started) / 1000, heads, ...(notes.length > 0 ? { notes } : {}) };
  } finally {
    await runner?.dispose();
    await pool?.close();
  }
}
