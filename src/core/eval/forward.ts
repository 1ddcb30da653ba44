/**
 * A runnable forward pass: a model's weights turned into one or more onnxruntime sessions
 * (segments of whole layers) on the chosen backend, returning per-token NLL for windows.
 */
import type * as ort from 'onnxruntime-node';
import { createSession, Tensor, type BackendChoice, type BackendName, type ComputeSession } from '../compute/session';
import { throwIfCancelled, type CancelToken } from '../errors';
import { buildSegment, IO } from './graph';
import type { LayerWeights, ModelSpec, OuterWeights } from './model';

/** Anything that can hand out a model's weights layer by layer (original, factored, exported). */
export interface WeightSource {
  readonly spec: ModelSpec;
  outer(): Promise<OuterWeights>;
  layer(index: number): Promise<LayerWeights>;
}

/** Options for {@link loadForward}. */
export interface ForwardOptions {
  readonly seq: number;
  readonly backend?: BackendChoice;
  readonly threads?: number;
  /** Also return logits (tests; costs batch·seq·vocab floats per run). */
  readonly logits?: boolean;
  /** Weight bytes per segment before a new session is started (default 1 GiB). */
  readonly segmentBytes?: number;
  readonly cancel?: CancelToken;
}

/** Output of one batch of windows. */
export interface ForwardResult {
  /** NLL per predicted token, [windows, seq] row-major. */
  readonly nll: Float32Array;
  /** Logits [windows, seq, vocab] when requested. */
  readonly logits?: Float32Array;
}

/** A loaded model ready to run windows. */
export interface ForwardModel {
  readonly spec: ModelSpec;
  readonly seq: number;
  /** The execution provider the sessions actually run on (after any fallback). */
  readonly backend: BackendName;
  /** Why the requested backend was not used, when it was not. */
  readonly fallbackReason?: string;
  run(inputs: BigInt64Array, targets: BigInt64Array, windows: number): Promise<ForwardResult>;
  dispose(): Promise<void>;
}

function constBytes(w: unknown): number {
  let total = 0;
  const visit = (v: unknown) => {
    if (v === null || typeof v !== 'object') return;
    if (ArrayBuffer.isView(v)) {
      total += v.byteLength;
      return;
    }
    for (const x of Object.values(v)) visit(x);
  };
  visit(w);
  return total;
}

const DEFAULT_SEGMENT_BYTES = 1 << 30;

/** Builds the graphs and sessions of a model. */
export async function loadForward(source: WeightSource, options: ForwardOptions): Promise<ForwardModel> {
  const spec = source.spec;
  const limit = options.segmentBytes ?? DEFAULT_SEGMENT_BYTES;
  const outer = await source.outer();
  const sessions: ComputeSession[] = [];
  const release = () => Promise.all(sessions.map((s) => s.dispose().catch(() => undefined)));
  try {
    let pending: { index: number; weights: LayerWeights }[] = [];
    let pendingBytes = 0;
    const flush = async (last: boolean) => {
      const first = sessions.length === 0;
      const model = buildSegment({ spec, seq: options.seq, layers: pending, outer: first || last ? outer : undefined, first, last, logits: options.logits });
      pending = [];
      pendingBytes = 0;
      sessions.push(await createSession(model, { backend: options.backend ?? 'cpu', threads: options.threads }));
    };
    for (let i = 0; i < spec.layers; i++) {
      throwIfCancelled(options.cancel);
      const weights = await source.layer(i);
      const bytes = constBytes(weights);
      if (pending.length > 0 && pendingBytes + bytes > limit) await flush(false);
      pending.push({ index: i, weights });
      pendingBytes += bytes;
    }
    await flush(true);
  } catch (e) {
    await release();
    throw e;
  }
  const backendOf = () => (sessions.every((s) => s.backend === sessions[0].backend) ? sessions[0].backend : 'cpu');
  return {
    spec,
    seq: options.seq,
    get backend() {
      return backendOf();
    },
    get fallbackReason() {
      return sessions.find((s) => s.fallbackReason)?.fallbackReason;
    },
    async run(inputs, targets, windows) {
      const seq = options.seq;
      let hidden: ort.Tensor | undefined;
      for (let i = 0; i < sessions.length; i++) {
        const s = sessions[i];
        const feeds: Record<string, ort.Tensor> = {};
        if (i === 0) feeds[IO.ids] = new Tensor('int64', inputs, [windows, seq]);
        else feeds[IO.hiddenIn] = hidden!;
        if (i === sessions.length - 1) feeds[IO.targets] = new Tensor('int64', targets, [windows, seq]);
        const out = await s.run(feeds);
        if (i < sessions.length - 1) {
          hidden = out[IO.hiddenOut];
          continue;
        }
        const nll = out[IO.nll].data as Float32Array;
        const logits = options.logits ? (out[IO.logits].data as Float32Array) : undefined;
        return { nll, logits };
      }
      throw new Error('model has no segments');
    },
    async dispose() {
      await release();
    },
  };
}
