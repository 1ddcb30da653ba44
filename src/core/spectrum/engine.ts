/**
 * The streaming spectrum engine behind `analyzeSpectra`: per layer, read the Q/K head blocks
 * by byte range (16-bit weights stay 16-bit), one batched Gram product on onnxruntime, then the
 * per-head eigensolves; the next layer's reads are in flight while the current layer computes.
 */
import * as os from 'node:os';
import type { AttentionLayout, HeadSlice } from '../arch/layout';
import type { Checkpoint } from '../checkpoint/checkpoint';
import { decodeToFloat32 } from '../checkpoint/dtypes';
import { createSession, gpuCandidates, probeBackend, usableBackends, type BackendName } from '../compute/session';
import { FactoredKeysError, throwIfCancelled } from '../errors';
import { EigenPool, solveEigenTask } from './eigenPool';
import { GramRunner, gramModel, type GramFeed } from './gram';
import type { HeadSpectrum, SpectrumKind, SpectrumOptions, SpectrumResult } from './index';
import { choiceKey, recalledChoice, rememberChoice } from '../compute/backendChoice';
import { cumulativeEnergy, effectiveRanks, stableRank } from './metrics';
import { SpectrumTrace, tracing } from './trace';

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
  /** The whole layer in one buffer (empty when the workers read and computed it: `solved`). */
  readonly data: Float32Array | Uint16Array;
  /**
   * Set when worker threads computed the layer's spectra themselves (the many-core path):
   * part k holds `counts[k]` consecutive jobs, `eigen[k]` their eigenvalues.
   */
  readonly solved?: { readonly counts: number[]; readonly eigen: Promise<Float64Array>[] };
}

/**
 * Recycles the layer feed buffers: a fresh 40-100 MB ArrayBuffer per layer costs page faults
 * (kernel time comparable to reading the bytes); two buffers cover the layer being computed
 * and the one being read ahead.
 */
class BufferRing {
  private readonly free: ArrayBuffer[] = [];

  /** `capacity`: buffers kept for reuse (the layer being computed and those read ahead). */
  constructor(public capacity = 2) {}

  acquire(bytes: number): ArrayBuffer {
    const i = this.free.findIndex((b) => b.byteLength === bytes);
    return i >= 0 ? this.free.splice(i, 1)[0] : new ArrayBuffer(bytes);
  }

  release(buffer: ArrayBufferLike): void {
    if (buffer instanceof ArrayBuffer && buffer.byteLength > 0 && this.free.length < this.capacity) this.free.push(buffer);
  }
}

/**
 * Whether the worker threads compute whole spectra (each reads its heads' rows, widens them,
 * runs the Gram on a single-threaded onnxruntime session and solves the eigenproblems) instead
 * of the main thread reading each layer and running one batched Gram on all cores. Since the
 * workers read for themselves, no layer bytes cross threads and the main thread only posts:
 * faster on 2 cores as on 16 (docs/BENCHMARKS.md). FK_SPECTRUM_GRAM=main forces the
 * main-thread path (benchmarks).
 */
function gramInWorkers(forcedByTest?: boolean): boolean {
  if (forcedByTest !== undefined) return forcedByTest;
  return process.env.FK_SPECTRUM_GRAM !== 'main';
}

/**
 * Cores left to the main thread on many-core hosts, unless --threads says otherwise
 * (FK_SPECTRUM_SPARE_CORES overrides; benchmarks).
 */
function spareCores(cores: number): number {
  const v = Number(process.env.FK_SPECTRUM_SPARE_CORES);
  if (Number.isInteger(v) && v >= 0 && v < cores) return v;
  return cores >= MANY_CORES ? MANY_CORE_SPARE : 0;
}

/** From this many cores on, {@link MANY_CORE_SPARE} are left to the main thread. */
const MANY_CORES = 12;
const MANY_CORE_SPARE = 4;

/** Eigensolver workers for `cores` (all of them when `explicit`, i.e. --threads). */
function poolSize(cores: number, explicit: boolean, forcedWorkerGram?: boolean): number {
  if (explicit || !gramInWorkers(forcedWorkerGram)) return cores;
  return cores - spareCores(cores);
}

/**
 * Heads per worker task: a few, so every worker gets work from each layer; 2 on many-core hosts
 * (on the H200 as fast as 4 within noise, with 15 % less peak memory and a finer split of the
 * last layer), else up to 4 (FK_SPECTRUM_PART_HEADS overrides).
 */
function partHeads(layerHeads: number, workers: number, forcedByTest?: number): number {
  if (forcedByTest !== undefined && forcedByTest > 0) return forcedByTest;
  const forced = Number(process.env.FK_SPECTRUM_PART_HEADS);
  if (Number.isInteger(forced) && forced > 0) return forced;
  const most = workers >= MANY_CORES - MANY_CORE_SPARE ? 2 : 4;
  return Math.max(1, Math.min(most, Math.ceil(layerHeads / Math.max(1, workers))));
}

/**
 * Layers in flight: every layer when the workers compute (a layer in flight is only its tasks,
 * waiting in the pool until a worker has room; the worker reads the bytes when it starts one),
 * else 1 (FK_SPECTRUM_PREFETCH overrides; on the H200's CUDA Gram 2 and 3 layers were no faster
 * than 1, docs/BENCHMARKS.md).
 */
function prefetchDepth(workerGram: boolean, layers: number): number {
  const v = Number(process.env.FK_SPECTRUM_PREFETCH);
  if (Number.isInteger(v) && v >= 1 && v <= 8) return v;
  return workerGram ? Math.max(1, layers) : 1;
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

/** How a stored weight type is fed to the Gram (16-bit stays 16-bit); undefined when it needs decoding first. */
function gramFeedOf(dtype: string | undefined): GramFeed | undefined {
  return dtype === 'F32' ? 'float32' : dtype === 'F16' ? 'float16' : dtype === 'BF16' ? 'bfloat16' : undefined;
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
async function loadLayer(ckpt: Checkpoint, layout: AttentionLayout, layer: number, kinds: readonly SpectrumKind[], ring: BufferRing, workers?: { pool: EigenPool; per: number }, trace?: SpectrumTrace): Promise<LayerBatch> {
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
  const directFeed = jobs.every((j) => j.slice.orientation === 'linear') ? gramFeedOf(dtype) : undefined;
  const block = hd * dModel;
  if (directFeed && workers) {
    // parts of at most `per` heads, never across tensors, each handed to the least busy worker,
    // which reads its rows itself (this thread only posts)
    const feed = directFeed;
    const counts: number[] = [];
    const eigen: Promise<Float64Array>[] = [];
    for (let i = 0; i < jobs.length; ) {
      let k = i + 1;
      while (k < jobs.length && k - i < workers.per && jobs[k].slice.tensor === jobs[i].slice.tensor && jobs[k].slice.offset === jobs[k - 1].slice.offset + hd) k++;
      const count = k - i;
      const first = jobs[i].slice;
      const last = jobs[k - 1].slice;
      const part = counts.length;
      eigen.push(
        ckpt.rowSource(first.tensor, first.offset, last.offset + hd).then(async (source) => {
          trace?.mark('posted', { layer, part, count });
          const r = await workers.pool.spectra(feed, source, count, hd, dModel);
          if (trace && r.timing) trace.mark('solved', { layer, part, ...trace.relative(r.timing) });
          return r.values;
        }),
      );
      counts.push(count);
      i = k;
    }
    for (const e of eigen) e.catch(() => undefined);
    return { layer, jobs, feed, dModel, data: new Float32Array(0), solved: { counts, eigen } };
  }
  if (directFeed) {
    const feed = directFeed;
    const bytesPerElement = dtype === 'F32' ? 4 : 2;
    const buffer = ring.acquire(jobs.length * block * bytesPerElement);
    const reads: Promise<Uint8Array>[] = [];
    for (let i = 0; i < jobs.length; ) {
      // coalesce heads stored back to back in one tensor into one read
      let k = i + 1;
      while (k < jobs.length && jobs[k].slice.tensor === jobs[i].slice.tensor && jobs[k].slice.offset === jobs[k - 1].slice.offset + hd) k++;
      const target = new Uint8Array(buffer, i * block * bytesPerElement, (k - i) * block * bytesPerElement);
      reads.push(ckpt.readRows(jobs[i].slice.tensor, jobs[i].slice.offset, jobs[k - 1].slice.offset + hd, target));
      i = k;
    }
    trace?.mark('read', { layer });
    await Promise.all(reads);
    trace?.mark('read done', { layer });
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

/**
 * `auto` with several usable providers: each gets a short trial inside the real analysis (a
 * warm-up layer, then {@link TRIAL_LAYERS} timed layers including their eigensolves), and the
 * fastest per layer runs the rest. Whole-pipeline timing matters: a CPU provider competes with
 * the eigensolver workers for cores, a GPU provider does not, so timing the Gram product alone
 * picks wrong. No work is wasted: every trial layer's result is kept.
 */
class BackendTrial {
  private index = 0;
  private timedLayers = 0;
  private windowStart = 0;
  private warmUpStart = 0;
  private readonly perLayerMs: number[] = [];
  /** Each candidate's warm-up layer, start-up included (session creation, a GPU's context). */
  private readonly startUpMs: number[] = [];
  private readonly runners: GramRunner[] = [];

  constructor(
    private readonly candidates: readonly BackendName[],
    private readonly threads: number | undefined,
    private readonly layers: number,
    /** Whether the candidates were probed in this process (not a test's list). */
    private readonly probed = true,
  ) {}

  /** The runner for the next layer, or undefined once the trial is over. */
  current(): GramRunner | undefined {
    if (this.index >= this.candidates.length) return undefined;
    if (this.runners.length === this.index) {
      this.runners.push(new GramRunner(this.candidates[this.index], this.threads));
      this.warmUpStart = performance.now();
    }
    return this.runners[this.index];
  }

  /** Whether the next layer is a warm-up (session creation, kernel compilation), not timed. */
  get warmingUp(): boolean {
    return this.windowStart === 0;
  }

  /** Marks the start of the timed window (call after draining the warm-up's eigensolves). */
  startWindow(): void {
    this.windowStart = performance.now();
    this.startUpMs[this.index] = this.windowStart - this.warmUpStart;
  }

  /** Counts a finished timed layer; true when the window is full (drain, then call {@link closeWindow}). */
  countLayer(): boolean {
    return ++this.timedLayers >= TRIAL_LAYERS;
  }

  closeWindow(): void {
    const r = this.runners[this.index];
    const ms = (performance.now() - this.windowStart) / this.timedLayers;
    this.perLayerMs.push(r.backend === r.requested ? ms : Number.POSITIVE_INFINITY);
    this.index++;
    this.timedLayers = 0;
    this.windowStart = 0;
  }

  /**
   * The winner (others disposed), the measured times and a note saying how it was chosen. The
   * choice is by a whole analysis' predicted time, start-up + (layers - 1) × per layer: every
   * later run pays the start-up again, and a GPU's (its context, ~0.45 s for CUDA on the H200)
   * can cost more than its faster layers save on a 7B. A GPU's start-up includes its probe's,
   * where the context was created.
   */
  async finish(): Promise<{ runner: GramRunner; note: string; perLayerMs: Record<string, number>; startUpMs: Record<string, number> }> {
    const ms = this.runners.map((_, i) => this.perLayerMs[i] ?? Number.POSITIVE_INFINITY);
    // a GPU provider's context was created by its usability probe before the trial began: count
    // it, as a later run pays it inside the analysis
    const probed = await Promise.all(this.candidates.map(async (c) => (c === 'cpu' || !this.probed ? 0 : ((await probeBackend(c)).startMs ?? 0))));
    const start = this.runners.map((_, i) => (this.startUpMs[i] ?? Number.POSITIVE_INFINITY) + probed[i]);
    const best = fastestByPrediction(ms, start, this.layers);
    const timing = (i: number) => (Number.isFinite(ms[i] + start[i]) ? `${ms[i].toFixed(1)} ms per layer after ${start[i].toFixed(0)} ms of start-up` : 'failed');
    const note = `auto: measured ${this.runners.map((r, i) => `${r.requested} ${timing(i)}`).join(', ')}; using ${this.runners[best].backend}`;
    const losers = this.runners.filter((_, i) => i !== best);
    const winner = this.runners[best];
    this.runners.length = 0;
    await Promise.all(losers.map((r) => r.dispose()));
    return { runner: winner, note, perLayerMs: Object.fromEntries(this.candidates.map((c, i) => [c, ms[i]])), startUpMs: Object.fromEntries(this.candidates.map((c, i) => [c, start[i]])) };
  }

  /** Disposes every runner (on errors). */
  async dispose(): Promise<void> {
    await Promise.all(this.runners.map((r) => r.dispose()));
  }
}

/**
 * The index of the candidate whose whole analysis of `layers` layers is predicted fastest:
 * start-up + (layers - 1) × per layer (the first layer is the start-up's warm-up layer).
 */
export function fastestByPrediction(perLayerMs: readonly number[], startUpMs: readonly number[], layers: number): number {
  let best = 0;
  const predicted = perLayerMs.map((m, i) => startUpMs[i] + Math.max(0, layers - 1) * m);
  for (let i = 1; i < predicted.length; i++) if (predicted[i] < predicted[best]) best = i;
  return best;
}

/** Timed layers per candidate in an `auto` trial. */
const TRIAL_LAYERS = 2;

/** Test hooks. */
export interface EngineInternals {
  /** Replaces the provider list `auto` chooses from. */
  readonly autoCandidates?: readonly BackendName[];
  /** Forces the eigensolves onto worker threads (true) or inline (false). */
  readonly workers?: boolean;
  /** Forces the Gram products onto the workers (true) or the main thread (false). */
  readonly workerGram?: boolean;
  /** Heads per worker task. */
  readonly partHeads?: number;
}

/** Implementation of `analyzeSpectra` (see there). */
export async function runSpectrumEngine(ckpt: Checkpoint, layout: AttentionLayout, options: SpectrumOptions, internals: EngineInternals = {}): Promise<SpectrumResult> {
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
  const useWorkers = internals.workers ?? (totalHeads >= MIN_HEADS_FOR_WORKERS && n >= 32);
  const trace = tracing() ? new SpectrumTrace() : undefined;
  const pool = useWorkers ? EigenPool.create(poolSize(cores, threads !== undefined, internals.workerGram), n) : undefined;
  trace?.mark('pool', { workers: pool?.size ?? 0 });
  let runner: GramRunner | undefined;
  let trial: BackendTrial | undefined;
  /** An explicit GPU provider's start-up done before the analysis, noted if it ran the analysis. */
  let startUpElsewhere: string | undefined;
  let trialKey = '';
  if (choice === 'auto') {
    // the remembered choice is keyed by the providers that may exist here, so that recalling
    // it needs no probe (creating a GPU session just to check costs a few hundred ms)
    const possible: BackendName[] = internals.autoCandidates ? [...internals.autoCandidates] : ['cpu', ...gpuCandidates()];
    const first = layout.layers[0];
    const shape = first ? `${layout.dtype}|${layout.headDim}x${layout.hiddenSize}|${kinds.map((k) => (k === 'key' ? first.keyHeads.length : first.queryHeads.length)).join('+')}` : '';
    trialKey = choiceKey(shape, cores, possible);
    const known = possible.length > 1 && !options.calibrate ? recalledChoice('spectrum', trialKey, possible) : undefined;
    if (possible.length === 1) {
      runner = new GramRunner('cpu', threads);
    } else if (known) {
      runner = new GramRunner(known.backend, threads);
      const start = (b: string): string => (known.startUpMs?.[b] !== undefined && Number.isFinite(known.startUpMs[b]) ? ` after ${known.startUpMs[b].toFixed(0)} ms of start-up` : '');
      notes.push(`auto: using ${known.backend}, measured fastest here on ${known.measured.slice(0, 10)} (${Object.entries(known.perLayerMs).map(([b, ms]) => `${b} ${ms === null || !Number.isFinite(ms) ? 'failed' : `${ms.toFixed(1)} ms per layer${start(b)}`}`).join(', ')})`);
    } else if (!options.calibrate && !internals.autoCandidates) {
      // Unmeasured machine: the Gram step does ~2·head_dim flop per uploaded weight, so GPU
      // providers fed from host memory lost to the CPU on every machine measured (H200 included,
      // docs/BENCHMARKS.md). A first-run trial would make this run slower than cpu; calibration
      // is explicit instead, and its verdict is remembered.
      runner = new GramRunner('cpu', threads);
      notes.push('auto: using cpu (no measurement on this machine yet; calibrate once to time the GPU providers and remember the fastest)');
    } else {
      // cpu first: it needs no warm-up, so a trial it wins wastes least
      const candidates: BackendName[] = internals.autoCandidates ? possible : ['cpu', ...(await usableBackends()).filter((b) => b !== 'cpu')];
      if (candidates.length === 1) {
        runner = new GramRunner('cpu', threads);
        notes.push('auto: no GPU provider is usable here; using cpu');
      } else if (layers >= (options.calibrate ? 1 : 4) * candidates.length * (TRIAL_LAYERS + 1) + (options.calibrate ? 1 : 0)) {
        // enough layers for a trial to pay for itself; asked to calibrate, enough to time each
        // candidate at all (a 7B's 32 layers and three providers)
        trial = new BackendTrial(candidates, threads, layers, !internals.autoCandidates);
      } else {
        runner = new GramRunner('cpu', threads);
        notes.push(`auto: ${layers} layers are too few to time ${candidates.join(' and ')}; using cpu`);
      }
    }
  } else {
    runner = new GramRunner(choice, threads);
    if (choice !== 'cpu') {
      // the provider was checked before the analysis began (the CLI checks --backend): its
      // start-up, a CUDA context for instance, happened there and is not in these seconds
      const probe = await probeBackend(choice);
      if (probe.usable && probe.endedAt !== undefined && probe.endedAt < started && probe.startMs !== undefined) {
        startUpElsewhere = `${choice}: its start-up in this process (${probe.startMs.toFixed(0)} ms, while checking that it is usable, before the analysis began) is not in these seconds`;
      }
    }
  }
  const pendingEigen: Promise<void>[] = [];
  const drain = async (): Promise<void> => {
    await Promise.all(pendingEigen.splice(0));
  };
  try {
    throwIfCancelled(options.cancel);
    options.progress?.(0, layers, 'reading layer 0');
    const ring = new BufferRing();
    // The workers compute whole spectra for the CPU provider (GPU providers get the layer in one
    // run). In an `auto` trial the CPU candidate is timed on that same path, with one layer in
    // flight so that each candidate's window only holds its own layers; the run after the trial
    // reads further ahead.
    const workerPool = (): EigenPool | undefined => (pool && gramInWorkers(internals.workerGram) && (trial ? trial.current() : runner)?.requested === 'cpu' ? pool : undefined);
    const perLayer = layers > 0 ? layerJobs(layout, 0, kinds).length : 0;
    const per = partHeads(perLayer, pool?.size ?? 1, internals.partHeads);
    const depth = (): number => (trial ? 1 : prefetchDepth(workerPool() !== undefined, layers));
    if (!workerPool()) ring.capacity = Math.max(ring.capacity, depth() + 1);
    let primeOnnxruntime: (() => void) | undefined;
    if (workerPool() && perLayer > 0) {
      const first = layerJobs(layout, 0, kinds)[0].slice;
      const feed = gramFeedOf(ckpt.tensor(first.tensor).dtype);
      const dModel = sliceDModel(ckpt, first);
      if (feed) {
        const ready = pool!.warmUpSpectra(feed, n, dModel, per);
        if (trace) ready.forEach((p, worker) => void p.then((timing) => trace.mark('worker ready', { worker, ...(timing ? trace.relative(timing) : {}) })));
        if (process.env.FK_SPECTRUM_PRIME !== '0') primeOnnxruntime = () => {
          // onnxruntime's one-time set-up of a process (its first session anywhere) serialises
          // the workers' first sessions; done here while they are still starting, it is off
          // their path (the H200's traces: ready ~100 ms after loading, all at once, before)
          trace?.mark('prime');
          void createSession(gramModel(feed, n, dModel), { backend: 'cpu', threads: 1, spinning: false })
            .then((s) => {
              trace?.mark('primed');
              return s.dispose();
            })
            .catch(() => undefined);
        };
      }
    }
    const load = (layer: number): Promise<LayerBatch> => {
      const via = workerPool();
      return via ? loadLayer(ckpt, layout, layer, kinds, ring, { pool: via, per }, trace) : loadLayer(ckpt, layout, layer, kinds, ring, undefined, trace);
    };
    const ahead: Promise<LayerBatch>[] = [];
    const prefetch = (layer: number): void => {
      if (layer >= layers) return;
      const p = load(layer);
      // keep a rejected prefetch from surfacing as unhandled if we stop early
      p.catch(() => undefined);
      ahead.push(p);
    };
    let nextToLoad = 0;
    const fill = (layer: number): void => {
      while (nextToLoad < layers && nextToLoad <= layer + depth()) prefetch(nextToLoad++);
    };
    fill(-1);
    // after the first reads are issued: creating a session blocks this thread
    primeOnnxruntime?.();
    for (let layer = 0; layer < layers; layer++) {
      const batch = await ahead.shift()!;
      fill(layer);
      throwIfCancelled(options.cancel);
      if (batch.jobs.length === 0) continue;
      const active = trial?.current() ?? runner!;
      const warmUp = trial?.current() !== undefined && trial.warmingUp;
      const slot = heads.length;
      heads.length += batch.jobs.length;
      const solve = (grams: Float32Array, first: number, count: number): void => {
        const place = (eigen: Float64Array): void => {
          for (let i = 0; i < count; i++) heads[slot + first + i] = headSpectrum(batch.layer, batch.jobs[first + i], eigen, i * n, n);
        };
        if (pool) {
          // a failed worker must not fail the analysis: solve that part here instead
          const p = pool.eigenvalues(grams, n, count).then(place, () => place(solveEigenTask(grams, n, count)));
          p.catch(() => undefined);
          pendingEigen.push(p);
        } else {
          place(solveEigenTask(grams, n, count));
        }
      };
      if (batch.solved) {
        const { counts, eigen } = batch.solved;
        let values: Float64Array[];
        try {
          values = await Promise.all(eigen);
        } catch (e) {
          if (e instanceof FactoredKeysError) throw e;
          // a failed worker must not fail the analysis: this layer again, the main-thread way
          const again = await loadLayer(ckpt, layout, batch.layer, kinds, ring);
          const grams = await active.run(again.feed, again.data, again.jobs.length, n, again.dModel);
          values = [solveEigenTask(grams, n, again.jobs.length)];
          counts.splice(0, counts.length, again.jobs.length);
        }
        let first = 0;
        values.forEach((v, k) => {
          for (let i = 0; i < counts[k]; i++) heads[slot + first + i] = headSpectrum(batch.layer, batch.jobs[first + i], v, i * n, n);
          first += counts[k];
        });
      } else {
        trace?.mark('gram', { layer: batch.layer, backend: active.backend });
        const grams = await active.run(batch.feed, batch.data, batch.jobs.length, n, batch.dModel);
        trace?.mark('gram done', { layer: batch.layer });
        ring.release(batch.data.buffer);
        solve(grams, 0, batch.jobs.length);
      }
      // a layer the workers computed because it was read during the CPU window, although the
      // next candidate's window has begun: kept, but neither that candidate's warm-up nor timed
      const stray = batch.solved !== undefined && active.requested !== 'cpu';
      if (trial?.current() && !stray) {
        if (warmUp) {
          await drain();
          trial.startWindow();
        } else if (trial.countLayer()) {
          await drain();
          trial.closeWindow();
          if (!trial.current()) {
            const { runner: best, note, perLayerMs, startUpMs } = await trial.finish();
            runner = best;
            notes.push(note);
            trial = undefined;
            rememberChoice('spectrum', trialKey, best.backend, perLayerMs, startUpMs);
          }
        }
      }
      trace?.mark('layer', { layer });
      options.progress?.(layer + 1, layers, `layer ${layer + 1}/${layers}`);
    }
    await drain();
    trace?.mark('done');
    trace?.write({ backend: runner?.backend ?? 'cpu', workers: pool?.size ?? 0, heads: heads.length });
    throwIfCancelled(options.cancel);
    if (runner) for (const note of runner.notes) if (!notes.includes(note)) notes.push(note);
    if (startUpElsewhere && runner?.backend === choice) notes.push(startUpElsewhere);
    return { backend: runner?.backend ?? 'cpu', seconds: (performance.now() - started) / 1000, heads, ...(notes.length > 0 ? { notes } : {}) };
  } finally {
    await trial?.dispose();
    await runner?.dispose();
    await pool?.close();
  }
}
