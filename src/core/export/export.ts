/**
 * Factored-keys export: analyze every KV head, choose ranks, and stream a new checkpoint whose
 * key cache is physically r-dimensional. docs/FORMAT.md specifies the output.
 */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildLayout } from '../arch';
import type { AttentionLayout } from '../arch/layout';
import { CONFIG_FILE, INDEX_FILE, openCheckpoint, type Checkpoint } from '../checkpoint/checkpoint';
import { bytesPerElement } from '../checkpoint/dtypes';
import { CancelledError, FactoredKeysError, throwIfCancelled, type CancelToken, type ProgressFn } from '../errors';
import type { CalibrationInfo, CalibrationSpec } from '../calibration/moments';
import { analyzeHeads, energiesOf, truncateBasis, type HeadBasis } from '../factor/basis';
import { modelFingerprint, type TensorShapes } from '../plan/fingerprint';
import { buildPlan, retainedEnergy, validatePlan } from '../plan/plan';
import type { FactorMethod, PlanModel, RankOverride, RankPlan, RankPolicy } from '../plan/types';
import { computeSavings } from '../savings';
import { EigenPool } from '../spectrum/eigenPool';
import { defaultCacheDtype, type CacheDtypeChoice } from '../savings/cacheDtype';
import { checkDestination, commitTempFolder, makeTempFolder, removeStaleTemps } from './destination';
import { AUTO_MAP, FACTORED_KEYS_FORMAT_VERSION, REPORT_FILE, RUNTIME_FILE, type ExportReport, type ExportSource, type FactoredKeysConfig, type RopeMode } from './format';
import { configWithAdditions, layerRuntime, runtimeTemplatePath, writeRuntime } from './runtime';
import { planLayerRewrite, produceLayer, type LayerRewrite, type NewTensor } from './rewrite';
import { copiedEnd, copyTensors, copyTensorsInWorker, headerJson, headerPrefix, SourceFiles, writeFullyAt, type CopiedTensor, type HeaderEntry } from './writer';

/**
 * Below these sizes the work stays on the main thread: starting a worker (~30 ms) costs more
 * than it saves on a small checkpoint.
 */
const WORKER_COPY_MIN_BYTES = 64 << 20;
const EIGEN_WORKERS_MIN_HEADS = 64;
/** A 7B model has 256 KV heads of ~20 ms each: more eigensolve workers than this gain nothing. */
const EIGEN_WORKERS_MAX = 4;

/** Test hooks of {@link exportFactored}: force the worker paths on (true) or off (false) for any size. */
export interface ExportInternals {
  readonly copyInWorker?: boolean;
  readonly eigenWorkers?: boolean;
}

/** Weight files in the source folder that are not copied (they would be unfactored duplicates). */
const SKIPPED_WEIGHT_EXTENSIONS = ['.safetensors', '.bin', '.pt', '.pth', '.ckpt', '.gguf', '.h5', '.msgpack', '.onnx', '.npz'];

/** Inputs of {@link exportFactored}. Exactly one of `plan` or `policy` is given. */
export interface ExportOptions {
  readonly source: string;
  readonly dest: string;
  readonly method: FactorMethod;
  readonly policy?: RankPolicy;
  readonly overrides?: readonly RankOverride[];
  /** A plan (e.g. from `plan --json` or the panel); its method must equal `method`. */
  readonly plan?: unknown;
  /** Where `plan` came from, for messages. */
  readonly planSource?: string;
  /** Replace a non-empty destination folder. */
  readonly force?: boolean;
  /** How the KV cache is priced (budget policy, report); default: {@link defaultCacheDtype} of the config. */
  readonly cache?: CacheDtypeChoice;
  /** The calibration text of method `calibrated` (recorded in the report by file name and hash). */
  readonly calibration?: CalibrationSpec;
  /** Worker threads for the eigensolves (key-svd, qk-svd), at most 4; default: the cores but one. */
  readonly threads?: number;
  readonly cancel?: CancelToken;
  readonly progress?: ProgressFn;
}

/** What an export produced. */
export interface ExportResult {
  readonly dest: string;
  readonly plan: RankPlan;
  readonly config: FactoredKeysConfig;
  readonly report: ExportReport;
  /** Bytes of tensor data + headers written. */
  readonly bytesWritten: number;
}

/**
 * The plan model of a checkpoint (what plans are validated against). With the checkpoint's
 * tensors it carries the model fingerprint, which binds plans to this model.
 */
export function planModelOf(layout: AttentionLayout, tensors?: TensorShapes, cache?: CacheDtypeChoice): PlanModel {
  return {
    architecture: layout.architecture,
    layers: layout.layers.length,
    kv_heads: layout.kvHeads,
    head_dim: layout.headDim,
    // without a cache choice (in-process callers), the weights' width as before
    key_bytes_per_value: cache?.bytesPerValue ?? bytesPerElement(layout.dtype),
    ...(cache?.dtype ? { cache_dtype: cache.dtype } : {}),
    ...(tensors ? { fingerprint: modelFingerprint(layout, tensors) } : {}),
  };
}

/** Resolves the plan for an export (or for `plan`): validates a given one or builds one. */
export function resolvePlan(
  layout: AttentionLayout,
  bases: readonly (readonly HeadBasis[])[],
  options: Pick<ExportOptions, 'method' | 'policy' | 'overrides' | 'plan' | 'planSource' | 'cache'>,
  tensors?: TensorShapes,
): RankPlan {
  const model = planModelOf(layout, tensors, options.cache);
  const energies = energiesOf(bases);
  if (options.plan !== undefined) {
    const where = options.planSource ?? 'plan';
    const p = validatePlan(options.plan, where, model);
    if (p.method !== options.method) throw new FactoredKeysError(`${where}: plan is for method ${p.method} but the export uses ${options.method}`);
    return { ...p, retained_energy: p.ranks.map((row, l) => row.map((r, g) => retainedEnergy(energies[l][g], r))) };
  }
  if (!options.policy) throw new FactoredKeysError('export: give a rank policy (--rank, --fraction, --energy, --budget-bytes-per-token) or --plan');
  return buildPlan({ method: options.method, policy: options.policy, model, energies, overrides: options.overrides });
}

/** Builds the report and cache numbers for a plan. */
export function buildReport(source: ExportSource, layout: AttentionLayout, plan: RankPlan, bases: readonly (readonly HeadBasis[])[], mode: RopeMode): ExportReport {
  const bpv = plan.model.key_bytes_per_value;
  const s = computeSavings({ layers: layout.layers.length, kvHeads: layout.kvHeads, headDim: layout.headDim, keyRanks: plan.ranks, keyBitsPerValue: bpv * 8, context: 1, batch: 1 });
  return {
    format_version: FACTORED_KEYS_FORMAT_VERSION,
    source,
    method: plan.method,
    rope_mode: mode,
    plan,
    heads: plan.ranks.flatMap((row, l) =>
      row.map((r, g) => ({ layer: l, kv_head: g, rank: r, retained_energy: retainedEnergy(Array.from(bases[l][g].energies), r), score_error: bases[l][g].scoreError[r] })),
    ),
    cache: {
      ...(plan.model.cache_dtype ? { dtype: plan.model.cache_dtype } : {}),
      bytes_per_value: bpv,
      key_bytes_per_token: s.keyBytesPerToken,
      value_bytes_per_token: s.valueBytesPerToken.before,
      kv_bytes_per_token: s.kvBytesPerToken,
      capacity_multiplier: s.capacityMultiplier,
    },
  };
}

/**
 * How the report names its source, without an absolute path: the folder's name (the hub repo's
 * `org/name` and revision for a hub cache snapshot) and a SHA-256 over config.json and every
 * shard's file name, size and safetensors header (names, dtypes, shapes, offsets), in index
 * order. The hash is the source's manifest, not a full read of the weights.
 */
export async function exportSource(ckpt: Checkpoint): Promise<ExportSource> {
  const h = createHash('sha256');
  const config = await fsp.readFile(path.join(ckpt.dir, CONFIG_FILE));
  h.update(`config.json ${config.byteLength}\n`).update(config);
  for (const f of ckpt.files) {
    const st = await fsp.stat(f.file);
    const fh = await fsp.open(f.file, 'r');
    try {
      const prefix = Buffer.alloc(8);
      await fh.read(prefix, 0, 8, 0);
      const length = Number(prefix.readBigUInt64LE(0));
      const header = Buffer.alloc(length);
      await fh.read(header, 0, length, 8);
      h.update(`\n${path.basename(f.file)} ${st.size} ${length}\n`).update(header);
    } finally {
      await fh.close();
    }
  }
  const hubName = ckpt.hub ? /^models--(.+)$/.exec(path.basename(ckpt.hub.repo))?.[1]?.replace(/--/g, '/') : undefined;
  return {
    name: hubName ?? path.basename(ckpt.dir),
    ...(ckpt.hub ? { revision: ckpt.hub.revision } : {}),
    manifest_sha256: h.digest('hex'),
  };
}

/** Reads index.json's metadata block so the output index keeps it (total_size is recomputed). */
async function indexMetadata(ckpt: Checkpoint): Promise<Record<string, unknown>> {
  if (!ckpt.indexFile) return {};
  const parsed = JSON.parse(await fsp.readFile(ckpt.indexFile, 'utf8')) as { metadata?: unknown };
  return parsed.metadata && typeof parsed.metadata === 'object' && !Array.isArray(parsed.metadata) ? { ...(parsed.metadata as Record<string, unknown>) } : {};
}

/** Files other than weights, config and index, copied as they are (symlinks followed; hidden files skipped). */
async function extraFiles(ckpt: Checkpoint): Promise<string[]> {
  const own = new Set([CONFIG_FILE, INDEX_FILE, REPORT_FILE, RUNTIME_FILE, ...ckpt.files.map((f) => path.basename(f.file))]);
  const out: string[] = [];
  for (const e of await fsp.readdir(ckpt.dir)) {
    if (own.has(e) || e.startsWith('.') || SKIPPED_WEIGHT_EXTENSIONS.some((x) => e.endsWith(x))) continue;
    const st = await fsp.stat(path.join(ckpt.dir, e)).catch(() => undefined);
    if (st?.isFile()) out.push(e);
  }
  return out.sort();
}

/** File-system failures that are the environment's fault, not a bug: reported as one line. */
const FILE_SYSTEM_ERRORS: Readonly<Record<string, string>> = {
  ENOSPC: 'no space left on the device',
  EDQUOT: 'disk quota exceeded',
  EFBIG: 'a file is too large for the file system',
  EROFS: 'the file system is read-only',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EIO: 'input/output error',
};

/**
 * Turns a disk-full (or similar) errno error into a FactoredKeysError naming the destination;
 * anything else is returned unchanged. By the time it is thrown the temporary folder is gone.
 */
export function fileSystemError(e: unknown, dest: string): unknown {
  const code = (e as NodeJS.ErrnoException | null)?.code;
  if (e instanceof FactoredKeysError || typeof code !== 'string' || !Object.hasOwn(FILE_SYSTEM_ERRORS, code)) return e;
  const where = (e as NodeJS.ErrnoException).path;
  return new FactoredKeysError(`${dest}: ${FILE_SYSTEM_ERRORS[code]} (${code}${where ? ` at ${where}` : ''}); the export was not written`);
}

/** Picks the error to report when concurrent phases fail: the first that is not a cancellation. */
function firstRealError(results: PromiseSettledResult<unknown>[]): unknown {
  const errors = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => r.reason as unknown);
  return errors.find((e) => !(e instanceof CancelledError)) ?? errors[0];
}

/** Checks the rank source before any work: a plan's shape and method, or a policy's numbers. */
function validateRankSource(layout: AttentionLayout, options: ExportOptions, tensors: TensorShapes): void {
  const model = planModelOf(layout, tensors, options.cache);
  if (options.plan !== undefined) {
    const where = options.planSource ?? 'plan';
    const p = validatePlan(options.plan, where, model);
    if (p.method !== options.method) throw new FactoredKeysError(`${where}: plan is for method ${p.method} but the export uses ${options.method}`);
    return;
  }
  if (!options.policy) throw new FactoredKeysError('export: give a rank policy (--rank, --fraction, --energy, --budget-bytes-per-token) or --plan');
  // flat stand-in spectra: validates the policy, overrides and a budget's minimum
  const flat = Array.from({ length: model.layers }, () => Array.from({ length: model.kv_heads }, () => Array<number>(model.head_dim).fill(1)));
  buildPlan({ method: options.method, policy: options.policy, model, energies: flat, overrides: options.overrides });
}

/**
 * Exports a factored checkpoint. Safety rules: see ./destination.ts and docs/FORMAT.md. On
 * any error or cancellation nothing is left at the destination and the temporary folder is
 * removed; the source is only read.
 *
 * Copying the untouched tensors (most of the bytes) starts at once on a worker thread and runs
 * concurrently with the factorization (its eigensolves on an EigenPool's workers); the
 * factored tensors are written after the copied ones' (known) end as soon as they are computed,
 * still during the copy, and the headers last (see ./writer.ts for the file layout).
 */
export async function exportFactored(options: ExportOptions, internals: ExportInternals = {}): Promise<ExportResult> {
  const ckpt = await openCheckpoint(options.source);
  const sources = new SourceFiles();
  const handles: fsp.FileHandle[] = [];
  let temp: string | undefined;
  let pool: EigenPool | undefined;
  try {
    if (ckpt.config.factored_keys !== undefined) throw new FactoredKeysError(`${ckpt.dir}/config.json: this checkpoint is already factored (it has a "factored_keys" block)`);
    const layout = buildLayout(ckpt);
    options = { ...options, cache: options.cache ?? defaultCacheDtype(ckpt.config) };
    validateRankSource(layout, options, ckpt.tensors);
    runtimeTemplatePath();
    const dest = await checkDestination(ckpt.dir, ckpt.files.map((f) => f.file), options.dest, options.force ?? false);
    await removeStaleTemps(dest);
    const mode: RopeMode = layout.keyMode;
    // Full-rank rewrites: which tensors change (independent of ranks) and the largest headers.
    const fullRank = layout.layers.map((layer) => planLayerRewrite(ckpt, layout, layer, Array<number>(layout.kvHeads).fill(layout.headDim), mode));
    const replacedNames = new Set(fullRank.flatMap((rw) => [...rw.replaced.keys()]));
    const addedAfter = new Map<string, string[]>();
    for (const rw of fullRank) for (const a of rw.added) addedAfter.set(a.after, [...(addedAfter.get(a.after) ?? []), a.tensor.name]);
    const fullSize = new Map<string, NewTensor>();
    for (const rw of fullRank) {
      for (const t of rw.replaced.values()) fullSize.set(t.name, t);
      for (const a of rw.added) fullSize.set(a.tensor.name, a.tensor);
    }
    const shards = ckpt.files.map((f) => {
      const copied: CopiedTensor[] = [];
      const created: string[] = [];
      for (const t of f.tensors) {
        if (replacedNames.has(t.name)) created.push(t.name);
        else copied.push({ name: t.name, dtype: t.dtype, shape: t.shape, byteLength: t.end - t.start, file: t.file, start: t.start });
        created.push(...(addedAfter.get(t.name) ?? []));
      }
      // every number in a header only shrinks with the rank, so full rank bounds its length
      const maxHeader = headerJson([...copied, ...created.map((n) => fullSize.get(n)!)], f.metadata).byteLength;
      const reserved = maxHeader + 64;
      return { name: path.basename(f.file), metadata: f.metadata, copied, created, reserved };
    });

    temp = await makeTempFolder(dest);
    for (const sh of shards) handles.push(await fsp.open(path.join(temp, sh.name), 'wx'));
    let aborted = false;
    const cancel = { get cancelled() { return aborted || (options.cancel?.cancelled ?? false); } };
    const guard = <T>(p: Promise<T>) =>
      p.catch((e: unknown) => {
        aborted = true;
        throw e;
      });
    const copiedTotal = shards.reduce((a, sh) => a + sh.copied.reduce((b, t) => b + t.byteLength, 0), 0);
    // where each shard's copied tensors end, i.e. where its factored tensors go
    const ends = shards.map((sh) => copiedEnd(8 + sh.reserved, sh.copied));
    let copiedDone = 0;
    const onCopied = (n: number, i: number) => {
      copiedDone += n;
      options.progress?.(copiedDone, copiedTotal, `writing ${shards[i].name}`);
    };
    const copyPhase = guard(
      (async () => {
        const jobs = shards.map((sh, i) => ({ fh: handles[i], position: 8 + sh.reserved, tensors: sh.copied }));
        const inWorker = (internals.copyInWorker ?? copiedTotal >= WORKER_COPY_MIN_BYTES) ? await copyTensorsInWorker(jobs, sources, cancel, onCopied) : undefined;
        if (inWorker) return inWorker;
        // no worker entry: the same copy on this thread's event loop
        const out: number[] = [];
        for (let i = 0; i < shards.length; i++) out.push(await copyTensors(handles[i], jobs[i].position, jobs[i].tensors, sources, cancel, (n) => onCopied(n, i)));
        return out;
      })(),
    );
    if (options.method !== 'calibrated' && (internals.eigenWorkers ?? layout.layers.length * layout.kvHeads >= EIGEN_WORKERS_MIN_HEADS)) {
      pool = EigenPool.create(Math.max(1, Math.min(EIGEN_WORKERS_MAX, options.threads ?? os.availableParallelism() - 1)));
    }
    let calibration: CalibrationInfo | undefined;
    const factorPhase = guard(
      (async () => {
        const bases = await analyzeHeads(ckpt, layout, options.method, { cancel, progress: options.progress, calibration: options.calibration, onCalibrated: (info) => (calibration = info), pool });
        const plan = resolvePlan(layout, bases, options, ckpt.tensors);
        const rewrites = layout.layers.map((layer) => planLayerRewrite(ckpt, layout, layer, plan.ranks[layer.layer], mode));
        // Phase 2, while the copy may still run: factored tensors, computed one layer at a time,
        // written after the shard's copied tensors and dropped once written.
        const producer = new Map<string, { layer: number; tensor: NewTensor }>();
        for (const rw of rewrites) {
          for (const t of rw.replaced.values()) producer.set(t.name, { layer: rw.layer, tensor: t });
          for (const a of rw.added) producer.set(a.tensor.name, { layer: rw.layer, tensor: a.tensor });
        }
        const pending = new Map<number, Promise<Map<string, Uint8Array>>>();
        const take = async (name: string): Promise<Uint8Array> => {
          const { layer } = producer.get(name)!;
          let p = pending.get(layer);
          if (!p) {
            const maps = bases[layer].map((b, g) => truncateBasis(b, plan.ranks[layer][g]));
            p = produceLayer(ckpt, layout, rewrites[layer], maps);
            pending.set(layer, p);
          }
          const all = await p;
          const bytes = all.get(name)!;
          all.delete(name);
          if (all.size === 0) pending.delete(layer);
          return bytes;
        };
        const created: HeaderEntry[][] = [];
        for (let i = 0; i < shards.length; i++) {
          let pos = ends[i];
          const entries: HeaderEntry[] = [];
          for (const name of shards[i].created) {
            throwIfCancelled(cancel);
            const t = producer.get(name)!.tensor;
            const bytes = await take(name);
            if (bytes.byteLength !== t.byteLength) throw new Error(`tensor "${name}": produced ${bytes.byteLength} bytes, expected ${t.byteLength}`);
            await writeFullyAt(handles[i], bytes, bytes.byteLength, pos);
            pos += bytes.byteLength;
            entries.push(t);
          }
          created.push(entries);
        }
        return { bases, plan, rewrites, created };
      })(),
    );
    const settled = await Promise.allSettled([copyPhase, factorPhase]);
    if (settled.some((r) => r.status === 'rejected')) throw firstRealError(settled);
    const copyEnds = (settled[0] as PromiseFulfilledResult<number[]>).value;
    if (copyEnds.some((e, i) => e !== ends[i])) throw new Error(`copied tensors end at ${copyEnds.join(', ')}, expected ${ends.join(', ')}`);
    const { bases, plan, rewrites, created } = (settled[1] as PromiseFulfilledResult<{ bases: HeadBasis[][]; plan: RankPlan; rewrites: LayerRewrite[]; created: HeaderEntry[][] }>).value;
    await pool?.close();
    pool = undefined;

    const weightMap: Record<string, string> = {};
    let totalBytes = 0;
    let totalParameters = 0;
    for (let i = 0; i < shards.length; i++) {
      const sh = shards[i];
      const entries: HeaderEntry[] = [...sh.copied, ...created[i]];
      const header = headerJson(entries, sh.metadata, sh.reserved);
      await writeFullyAt(handles[i], headerPrefix(header.byteLength), 8, 0);
      await writeFullyAt(handles[i], header, header.byteLength, 8);
      for (const e of entries) {
        weightMap[e.name] = sh.name;
        totalBytes += e.byteLength;
        totalParameters += e.shape.reduce((a, b) => a * b, 1);
      }
    }
    for (const h of handles.splice(0)) await h.close();
    if (ckpt.indexFile) {
      const metadata = { ...(await indexMetadata(ckpt)), total_parameters: totalParameters, total_size: totalBytes };
      await fsp.writeFile(path.join(temp, INDEX_FILE), JSON.stringify({ metadata, weight_map: weightMap }, null, 2) + '\n', { flag: 'wx' });
    }
    const config: FactoredKeysConfig = {
      format_version: FACTORED_KEYS_FORMAT_VERSION,
      method: plan.method,
      rope_mode: mode,
      architecture: layout.architecture,
      original_head_dim: layout.headDim,
      softmax_scale: layout.softmaxScale,
      num_query_heads: layout.queryHeads,
      num_kv_heads: layout.kvHeads,
      query_to_kv: [...layout.queryToKv],
      rope: layout.rope ? { rotary_dim: layout.rope.rotaryDim, theta: layout.rope.theta, style: layout.rope.style } : null,
      ranks: plan.ranks,
      layers: rewrites.map((rw) => ({ ...rw.entry, attention: layerRuntime(layout.description.blocks[rw.layer], rw, mode) })),
    };
    // auto_map makes AutoModelForCausalLM(trust_remote_code=True) load the fixed template (section 9)
    const rawConfig = await fsp.readFile(path.join(ckpt.dir, CONFIG_FILE), 'utf8');
    await fsp.writeFile(path.join(temp, CONFIG_FILE), configWithAdditions(rawConfig, ckpt.config, { auto_map: AUTO_MAP, factored_keys: config }), { flag: 'wx' });
    await writeRuntime(temp);
    const report: ExportReport = { ...buildReport(await exportSource(ckpt), layout, plan, bases, mode), ...(calibration ? { calibration } : {}) };
    await fsp.writeFile(path.join(temp, REPORT_FILE), JSON.stringify(report, null, 2) + '\n', { flag: 'wx' });
    for (const f of await extraFiles(ckpt)) {
      throwIfCancelled(options.cancel);
      await fsp.copyFile(path.join(ckpt.dir, f), path.join(temp, f));
    }
    throwIfCancelled(options.cancel);
    await commitTempFolder(temp, dest, options.force ?? false);
    temp = undefined;
    return { dest: dest.dest, plan, config, report, bytesWritten: totalBytes };
  } catch (e) {
    throw fileSystemError(e, options.dest);
  } finally {
    await pool?.close().catch(() => undefined);
    for (const h of handles) await h.close().catch(() => undefined);
    await sources.close();
    await ckpt.close();
    if (temp) await fsp.rm(temp, { recursive: true, force: true }).catch(() => undefined);
  }
}
