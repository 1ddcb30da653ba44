/**
 * onnxruntime-node sessions over graphs built with {@link GraphBuilder}, on a chosen execution
 * provider, with clean fallback to the CPU: a provider that is missing, fails to initialise or
 * fails while running never fails the computation, it only changes `backend` to `'cpu'` and
 * records why in `fallbackReason`.
 */
// first: onnxruntime must see ORT_DISABLE_TELEMETRY=1 when it loads
import './noTelemetry';
import { existsSync, readdirSync } from 'node:fs';
import * as ort from 'onnxruntime-node';
import { FactoredKeysError } from '../errors';
import { GraphBuilder } from './onnx';

/** An execution provider this project knows how to ask onnxruntime for. */
export type BackendName = 'cpu' | 'webgpu' | 'cuda' | 'dml' | 'coreml';
/** A backend request: a provider, or `auto` (the fastest usable one; see {@link autoCandidates}). */
export type BackendChoice = BackendName | 'auto';

/** All accepted `--backend` values, in the order help texts list them. */
export const BACKEND_CHOICES: readonly BackendChoice[] = ['auto', 'cpu', 'webgpu', 'cuda', 'dml', 'coreml'];

/** Parses a user-supplied backend name (CLI flag, setting); throws a one-line error otherwise. */
export function parseBackendChoice(value: string, what = '--backend'): BackendChoice {
  if ((BACKEND_CHOICES as readonly string[]).includes(value)) return value as BackendChoice;
  throw new FactoredKeysError(`${what} must be one of ${BACKEND_CHOICES.join(', ')}, got "${value}"`);
}

/** What was found out about one provider on this machine. */
export interface BackendProbe {
  readonly name: BackendName;
  /** Whether this onnxruntime-node build lists the provider for this platform. */
  readonly listed: boolean;
  /** Whether its libraries ship inside the npm package (CUDA/TensorRT come from an extra download). */
  readonly bundled: boolean;
  /** Whether a small test session could be created and run on it. */
  readonly usable: boolean;
  /** Why it is not usable (first line of onnxruntime's error), when it is not. */
  readonly reason?: string;
  /**
   * How long the test session took to create and run, when it worked: for a GPU provider mostly
   * its one-time start-up in this process (a CUDA context: ~0.45 s on the H200), which every
   * fresh process pays again.
   */
  readonly startMs?: number;
  /** When the probe ended (`performance.now()` of this thread), when it worked. */
  readonly endedAt?: number;
}

/** Session-wide options. */
export interface SessionOptions {
  /** Which provider to use (default `cpu`). `auto` here means the first usable of {@link autoCandidates}. */
  readonly backend?: BackendChoice;
  /** CPU intra-op threads (default: onnxruntime's choice, one per physical core). */
  readonly threads?: number;
  /** onnxruntime graph optimisation level (default `all`). */
  readonly optimization?: 'disabled' | 'basic' | 'extended' | 'all';
  /**
   * Whether idle intra-op threads busy-wait for the next op (onnxruntime's default: true).
   * Turn off when other threads (workers) need the cores between runs.
   */
  /**
   * false: no constant folding, so that a Cast of a 16-bit weight runs on the device at every run
   * instead of being folded on the CPU into a float32 copy at session creation.
   */
  readonly foldConstants?: boolean;
  readonly spinning?: boolean;
  /**
   * Independent branches of the graph to run at once (onnxruntime's parallel executor with
   * that many inter-op threads); 1 or unset = sequential execution.
   */
  readonly parallelBranches?: number;
  /**
   * Whether the CPU allocator keeps an arena (onnxruntime's default: true). Off, activation
   * buffers go back to the system after each run: bounded memory over many sessions.
   */
  readonly memoryArena?: boolean;
  /**
   * Whether constant matrix operands are repacked at load (onnxruntime's default: true). The
   * packed copy doubles the memory of weights loaded from a memory-mapped external data file.
   */
  readonly prepacking?: boolean;
}

/** A session plus the provider it actually runs on. */
export interface ComputeSession {
  /** The provider actually used (after any fallback). */
  readonly backend: BackendName;
  /** Why the requested provider was not used, when a fallback happened. */
  readonly fallbackReason?: string;
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  /**
   * Runs the graph. If a non-CPU provider fails at run time the session is rebuilt on the CPU
   * and the run repeated, so callers only ever see graph errors, never provider failures.
   */
  run(feeds: Record<string, ort.Tensor>): Promise<Record<string, ort.Tensor>>;
  dispose(): Promise<void>;
}

const ORT_PROVIDER: Record<BackendName, string> = { cpu: 'cpu', webgpu: 'webgpu', cuda: 'cuda', dml: 'dml', coreml: 'coreml' };

/** onnxruntime's messages start with a source location and an assertion; keep the human part. */
function firstLine(e: unknown): string {
  let m = String((e as Error)?.message ?? e).split('\n')[0];
  const assertion = m.lastIndexOf(' was false. ');
  if (assertion >= 0) m = m.slice(assertion + ' was false. '.length);
  return m.replace(/^\/onnxruntime_src\/\S+ /, '').slice(0, 200);
}

// Providers that fail to load log native errors at 'error' level while being probed; the
// failure is reported through BackendProbe.reason instead.
if (ort.env.logLevel === undefined || ort.env.logLevel === 'warning') ort.env.logLevel = 'fatal';

/** Providers that onnxruntime-node says exist on this platform, with whether they are bundled. */
export function listedBackends(): Map<BackendName, { bundled: boolean }> {
  const out = new Map<BackendName, { bundled: boolean }>();
  let listed: { name: string; bundled: boolean }[] = [];
  try {
    listed = ort.listSupportedBackends();
  } catch {
    listed = [{ name: 'cpu', bundled: true }];
  }
  for (const b of listed) {
    if ((Object.keys(ORT_PROVIDER) as string[]).includes(b.name)) out.set(b.name as BackendName, { bundled: b.bundled });
  }
  if (!out.has('cpu')) out.set('cpu', { bundled: true });
  return out;
}

/**
 * The order `auto` considers providers in: vendor GPU providers first, then WebGPU, then CPU.
 * Callers that can afford it (the spectrum engine) time the usable candidates and keep the
 * fastest rather than trusting this order.
 */
export function autoCandidates(): BackendName[] {
  const order: BackendName[] = process.platform === 'darwin' ? ['coreml', 'webgpu', 'cpu'] : process.platform === 'win32' ? ['cuda', 'dml', 'webgpu', 'cpu'] : ['cuda', 'webgpu', 'cpu'];
  const listed = listedBackends();
  return order.filter((b) => listed.has(b));
}

/** onnxruntime's session config entries (`extra`, keys as nested objects) that the options ask for, if any. */
function configEntries(options: SessionOptions): { extra?: Record<string, unknown> } {
  const session = {
    ...(options.spinning === false ? { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } : {}),
    ...(options.prepacking === false ? { disable_prepacking: '1' } : {}),
  };
  const extra = {
    ...(Object.keys(session).length > 0 ? { session } : {}),
    ...(options.foldConstants === false ? { optimization: { disable_specified_optimizers: 'ConstantFolding' } } : {}),
  };
  return Object.keys(extra).length > 0 ? { extra } : {};
}

const OPTIMIZATION_LEVELS = ['disabled', 'basic', 'extended', 'all'] as const;

/**
 * Diagnostics for measurements (docs/BENCHMARKS.md): FK_ORT_PROFILE=<prefix> writes onnxruntime's
 * own profile of every session (its initialisation and each node's run), and
 * FK_ORT_OPTIMIZATION=disabled|basic|extended|all overrides the graph optimisation level.
 */
function diagnostics(): ort.InferenceSession.SessionOptions {
  const profile = process.env.FK_ORT_PROFILE;
  const level = OPTIMIZATION_LEVELS.find((l) => l === process.env.FK_ORT_OPTIMIZATION);
  return { ...(profile ? { enableProfiling: true, profileFilePrefix: profile } : {}), ...(level ? { graphOptimizationLevel: level } : {}) };
}

function ortOptions(backend: BackendName, options: SessionOptions): ort.InferenceSession.SessionOptions {
  return {
    executionProviders: backend === 'cpu' ? ['cpu'] : [ORT_PROVIDER[backend], 'cpu'],
    graphOptimizationLevel: options.optimization ?? 'all',
    ...(options.threads ? { intraOpNumThreads: options.threads, interOpNumThreads: 1 } : {}),
    ...(options.parallelBranches && options.parallelBranches > 1 ? { executionMode: 'parallel' as const, interOpNumThreads: options.parallelBranches } : {}),
    ...(options.memoryArena === false ? { enableCpuMemArena: false } : {}),
    ...configEntries(options),
    ...diagnostics(),
    logSeverityLevel: 3,
  };
}

/** A tiny graph (a 2x2 product) used to check that a provider really works. */
function probeModel(): Uint8Array {
  const g = new GraphBuilder('probe');
  const x = g.input('x', 'float32', [2, 2]);
  g.output(g.op('MatMul', [x, x]), 'float32', [2, 2]);
  return g.toModel();
}

const probeCache = new Map<BackendName, Promise<BackendProbe>>();

/** Test hooks: how a shared library is loaded (default `process.dlopen`), and a fresh probe cache. */
export const sessionInternals: { loadLibrary: (file: string) => void; resetProbes: () => void } = {
  loadLibrary: (file) => process.dlopen({ exports: {} } as NodeJS.Module, file),
  resetProbes: () => probeCache.clear(),
};

/**
 * A system library a provider needs that cannot be loaded, checked before onnxruntime loads the
 * provider: without the Vulkan loader Dawn prints its own multi-line warning (with build paths)
 * to stderr, which no caller could catch; this way the user gets one line.
 */
function missingSystemLibrary(name: BackendName): string | undefined {
  if (name !== 'webgpu' || process.platform !== 'linux') return undefined;
  try {
    sessionInternals.loadLibrary('libvulkan.so.1');
  } catch (e) {
    // a library that loads but is no Node addon fails later, with another message
    if (/cannot open shared object file/i.test(String((e as Error).message))) return 'the Vulkan loader (libvulkan.so.1) is not installed; WebGPU needs it (e.g. apt install libvulkan1)';
  }
  return undefined;
}

/** Checks one provider by creating and running a tiny session on it (cached per process). */
export function probeBackend(name: BackendName): Promise<BackendProbe> {
  let p = probeCache.get(name);
  if (!p) {
    p = (async (): Promise<BackendProbe> => {
      const listed = listedBackends().get(name);
      if (!listed) return { name, listed: false, bundled: false, usable: false, reason: `onnxruntime-node has no ${name} provider on ${process.platform}-${process.arch}` };
      const missing = missingSystemLibrary(name);
      if (missing) return { name, listed: true, bundled: listed.bundled, usable: false, reason: missing };
      try {
        const started = performance.now();
        const session = await ort.InferenceSession.create(probeModel(), { ...ortOptions(name, {}), executionProviders: [ORT_PROVIDER[name]] });
        try {
          const r = await session.run({ x: new ort.Tensor('float32', Float32Array.from([1, 2, 3, 4]), [2, 2]) });
          const y = r[session.outputNames[0]].data as Float32Array;
          if (y[0] !== 7 || y[3] !== 22) return { name, listed: true, bundled: listed.bundled, usable: false, reason: 'test product gave a wrong result' };
          const endedAt = performance.now();
          return { name, listed: true, bundled: listed.bundled, usable: true, startMs: endedAt - started, endedAt };
        } finally {
          await session.release();
        }
      } catch (e) {
        return { name, listed: true, bundled: listed.bundled, usable: false, reason: firstLine(e) };
      }
    })();
    probeCache.set(name, p);
  }
  return p;
}

/** Probes every provider onnxruntime-node lists here (for `--backend` help and diagnostics). */
export async function probeBackends(): Promise<BackendProbe[]> {
  return Promise.all([...listedBackends().keys()].map((b) => probeBackend(b)));
}

/**
 * On Linux, whether any GPU device node exists. Without one, `auto` skips probing GPU providers:
 * the probe cannot succeed and Dawn would print a Vulkan warning to stderr on every run.
 */
function linuxHasGpuDevice(): boolean {
  if (process.platform !== 'linux') return true;
  try {
    if (existsSync('/dev/nvidiactl') || existsSync('/dev/kfd')) return true;
    return existsSync('/dev/dri') && readdirSync('/dev/dri').some((f) => f.startsWith('renderD') || f.startsWith('card'));
  } catch {
    return true;
  }
}

/** Non-CPU providers `auto` may consider here, without probing them (listed, and a GPU device exists). */
export function gpuCandidates(): BackendName[] {
  return linuxHasGpuDevice() ? autoCandidates().filter((b) => b !== 'cpu') : [];
}

/**
 * Why an explicitly requested provider cannot be used here, or undefined when it works. Without
 * a GPU device node (Linux) GPU providers are not even loaded, so Dawn/Vulkan print nothing.
 */
export async function explicitBackendProblem(name: BackendName): Promise<string | undefined> {
  if (name === 'cpu') return undefined;
  const listed = listedBackends().get(name);
  if (!listed) return `onnxruntime-node has no ${name} provider on ${process.platform}-${process.arch}`;
  if (!linuxHasGpuDevice()) return 'no GPU device found (no /dev/dri render node, /dev/nvidiactl or /dev/kfd)';
  const probe = await probeBackend(name);
  if (probe.usable) return undefined;
  const hint = name === 'cuda' && !listed.bundled ? '; its CUDA libraries are not installed (README: CUDA on networked Linux machines)' : '';
  return `${probe.reason ?? 'the provider failed to start'}${hint}`;
}

/** Usable providers in `auto` order (always ends with `cpu`). */
export async function usableBackends(): Promise<BackendName[]> {
  const out: BackendName[] = [];
  const gpu = linuxHasGpuDevice();
  for (const b of autoCandidates()) {
    if (b === 'cpu') continue; // always there; probing it would only cost a session
    if (!gpu) continue;
    if ((await probeBackend(b)).usable) out.push(b);
  }
  if (!out.includes('cpu')) out.push('cpu');
  return out;
}

class FallbackSession implements ComputeSession {
  constructor(
    private session: ort.InferenceSession,
    public backend: BackendName,
    private readonly model: ModelSource,
    private readonly options: SessionOptions,
    public fallbackReason?: string,
  ) {}

  get inputNames(): readonly string[] {
    return this.session.inputNames;
  }
  get outputNames(): readonly string[] {
    return this.session.outputNames;
  }

  async run(feeds: Record<string, ort.Tensor>): Promise<Record<string, ort.Tensor>> {
    try {
      return (await this.session.run(feeds)) as Record<string, ort.Tensor>;
    } catch (e) {
      if (this.backend === 'cpu') throw e;
      const reason = `${this.backend} failed while running (${firstLine(e)}); continued on cpu`;
      await this.session.release().catch(() => undefined);
      this.session = await open(this.model, ortOptions('cpu', this.options));
      this.backend = 'cpu';
      this.fallbackReason = reason;
      return (await this.session.run(feeds)) as Record<string, ort.Tensor>;
    }
  }

  dispose(): Promise<void> {
    return this.session.release();
  }
}

/** A model: its bytes (from {@link GraphBuilder.toModel}), or the path of a model file (external data beside it). */
export type ModelSource = Uint8Array | string;

function open(model: ModelSource, options: ort.InferenceSession.SessionOptions): Promise<ort.InferenceSession> {
  return typeof model === 'string' ? ort.InferenceSession.create(model, options) : ort.InferenceSession.create(model, options);
}

/**
 * Creates a session for `model` (bytes from {@link GraphBuilder.toModel}, or a model file) on the requested
 * provider. If that provider is unavailable or fails to initialise, the session is created on
 * the CPU instead and `fallbackReason` says why. Graph errors on the CPU are bugs and throw.
 */
export async function createSession(model: ModelSource, options: SessionOptions = {}): Promise<ComputeSession> {
  const choice = options.backend ?? 'cpu';
  let wanted: BackendName;
  let reason: string | undefined;
  if (choice === 'auto') {
    wanted = (await usableBackends())[0];
  } else {
    wanted = choice;
    if (wanted !== 'cpu') {
      const probe = await probeBackend(wanted);
      if (!probe.usable) {
        reason = `${wanted} is not usable here (${probe.reason}); using cpu`;
        wanted = 'cpu';
      }
    }
  }
  if (wanted !== 'cpu') {
    try {
      const s = await open(model, ortOptions(wanted, options));
      return new FallbackSession(s, wanted, model, options);
    } catch (e) {
      reason = `${wanted} could not create the session (${firstLine(e)}); using cpu`;
    }
  }
  const s = await open(model, ortOptions('cpu', options));
  return new FallbackSession(s, 'cpu', model, options, reason);
}

/** Re-exported so callers build feeds without importing onnxruntime-node themselves. */
export const Tensor = ort.Tensor;
/** An onnxruntime tensor (CPU data). */
export type Tensor = ort.Tensor;
