/**
 * Rotary positions: reading a layer's RoPE from config.json (transformers 5's `rope_parameters`,
 * per layer type where the model has several, or the older `rope_theta` + `rope_scaling`), and
 * the inverse frequencies and attention factor of every scaling type, computed as transformers'
 * float32 code does.
 */
import { previewJson } from '../checkpoint/safetensors';
import { FactoredKeysError } from '../errors';
import { ConfigReader } from './config';
import { NO_POSITION_LIMIT, type PositionLimit, type RopeScaling, type RopeSpec } from './description';

/** Scaling types this tool implements (transformers' names; `su` is longrope's old name). */
export const ROPE_TYPES = ['default', 'linear', 'dynamic', 'yarn', 'longrope', 'llama3'] as const;

/** The RoPE parameters object that applies to a layer type, as a reader over its keys. */
function ropeParameters(c: ConfigReader, layerType?: string): ConfigReader {
  const params = c.get('rope_parameters');
  if (params !== undefined && (typeof params !== 'object' || Array.isArray(params))) throw new FactoredKeysError(`${c.where}: "rope_parameters" must be an object, got ${previewJson(params)}`);
  const p = params as Record<string, unknown> | undefined;
  if (p && layerType && p[layerType] !== undefined) {
    const inner = p[layerType];
    if (typeof inner !== 'object' || inner === null || Array.isArray(inner)) throw new FactoredKeysError(`${c.where}: "rope_parameters.${layerType}" must be an object, got ${previewJson(inner)}`);
    return new ConfigReader(inner as Record<string, unknown>, `${c.where} rope_parameters.${layerType}`);
  }
  if (p && Object.keys(p).length > 0) return new ConfigReader(p, `${c.where} rope_parameters`);
  // older configs: rope_theta at the top, scaling in rope_scaling
  const scaling = c.get('rope_scaling');
  if (scaling !== undefined && (typeof scaling !== 'object' || Array.isArray(scaling))) throw new FactoredKeysError(`${c.where}: "rope_scaling" must be an object, got ${previewJson(scaling)}`);
  return new ConfigReader({ ...((scaling as Record<string, unknown>) ?? {}) }, `${c.where} rope_scaling`);
}

export interface RopeOptions {
  readonly style?: RopeSpec['style'];
  /** Rotary dimensions when the config names them directly (GPT-J `rotary_dim`). */
  readonly rotaryDim?: number;
  /** Partial rotary factor when the config has none (GPT-NeoX 0.25). */
  readonly defaultPartialFactor?: number;
  /** Key of the per-layer-type parameters (Gemma 3 `sliding_attention`). */
  readonly layerType?: string;
  readonly defaultTheta?: number;
}

/** A layer's RoPE from config.json. */
export function readRope(c: ConfigReader, headDim: number, options: RopeOptions = {}): RopeSpec {
  const p = ropeParameters(c, options.layerType);
  const factor = p.optionalNumber('partial_rotary_factor') ?? c.optionalNumber('partial_rotary_factor', 'rotary_pct') ?? options.defaultPartialFactor ?? 1;
  const rotaryDim = options.rotaryDim ?? Math.floor(headDim * factor);
  if (rotaryDim <= 0 || rotaryDim > headDim || rotaryDim % 2 !== 0) {
    throw new FactoredKeysError(`${c.where}: partial rotary factor ${factor} gives ${rotaryDim} rotary dims of ${headDim}, which is not an even count in (0, ${headDim}]`);
  }
  // rope_parameters' theta wins over the top-level key (transformers 5 moves it there)
  const theta = p.optionalNumber('rope_theta') ?? c.positive(options.defaultTheta ?? 10000, 'rope_theta', 'rotary_emb_base');
  if (!(theta > 1)) throw new FactoredKeysError(`${p.where}: "rope_theta" must be greater than 1, got ${theta}`);
  return { style: options.style ?? 'rotate-half', rotaryDim, theta, scaling: readScaling(p, c) };
}

function readScaling(p: ConfigReader, c: ConfigReader): RopeScaling {
  const raw = p.get('rope_type') ?? p.get('type') ?? 'default';
  const type = raw === 'su' ? 'longrope' : raw;
  if (typeof type !== 'string' || !(ROPE_TYPES as readonly string[]).includes(type)) {
    throw new FactoredKeysError(`${p.where}: rope_type ${previewJson(raw)} is not supported (supported: ${ROPE_TYPES.join(', ')})`);
  }
  const maxPositions = c.optionalInt('max_position_embeddings', 'n_positions');
  // a top-level original_max_position_embeddings (Phi-3) overrides the one in the RoPE parameters
  const original = () => c.optionalInt('original_max_position_embeddings') ?? p.optionalInt('original_max_position_embeddings') ?? maxPositions ?? fail('original_max_position_embeddings');
  const fail = (key: string): never => {
    throw new FactoredKeysError(`${p.where}: rope_type "${type}" needs "${key}"`);
  };
  const factor = () => {
    const f = p.optionalNumber('factor') ?? fail('factor');
    if (!(f >= 1)) throw new FactoredKeysError(`${p.where}: "factor" must be at least 1, got ${f}`);
    return f;
  };
  switch (type) {
    case 'default':
      return { type: 'default' };
    case 'linear':
      return { type: 'linear', factor: factor() };
    case 'dynamic':
      return { type: 'dynamic', factor: factor(), originalMaxPositions: maxPositions ?? fail('max_position_embeddings') };
    case 'yarn':
      return {
        type: 'yarn',
        factor: factor(),
        originalMaxPositions: original(),
        betaFast: p.number(32, 'beta_fast'),
        betaSlow: p.number(1, 'beta_slow'),
        mscale: p.optionalNumber('mscale') ?? null,
        mscaleAllDim: p.optionalNumber('mscale_all_dim') ?? null,
        attentionFactor: p.optionalNumber('attention_factor') ?? null,
        truncate: p.bool('truncate', true),
      };
    case 'longrope': {
      const shortFactor = p.numbers('short_factor') ?? fail('short_factor');
      const longFactor = p.numbers('long_factor') ?? fail('long_factor');
      return {
        type: 'longrope',
        shortFactor,
        longFactor,
        originalMaxPositions: original(),
        maxPositions: maxPositions ?? fail('max_position_embeddings'),
        attentionFactor: p.optionalNumber('attention_factor') ?? null,
        factor: p.optionalNumber('factor') ?? null,
      };
    }
    default:
      return {
        type: 'llama3',
        factor: factor(),
        lowFreqFactor: p.number(1, 'low_freq_factor'),
        highFreqFactor: p.number(4, 'high_freq_factor'),
        originalMaxPositions: c.optionalInt('original_max_position_embeddings') ?? p.optionalInt('original_max_position_embeddings') ?? fail('original_max_position_embeddings'),
      };
  }
}

/**
 * The longest sequence a model runs, the one rule for it: what config.json states, unless a
 * layer's RoPE scaling is made to run further. Dynamic NTK recomputes its base for any length (no
 * limit); YaRN, and longrope with a factor, stretch original_max_position_embeddings by the
 * factor. Linear and llama3 configs state the stretched length in max_position_embeddings.
 */
export function positionLimit(stated: PositionLimit, ropes: readonly (RopeSpec | null)[]): PositionLimit {
  let limit = stated;
  for (const s of ropes.map((r) => r?.scaling)) {
    let own: PositionLimit | undefined;
    if (s?.type === 'dynamic') own = { tokens: NO_POSITION_LIMIT, source: 'dynamic RoPE scaling: no limit' };
    else if ((s?.type === 'yarn' || s?.type === 'longrope') && s.factor) own = { tokens: Math.min(NO_POSITION_LIMIT, Math.floor(s.factor * s.originalMaxPositions)), source: `${s.type} RoPE scaling: factor ${s.factor} × original_max_position_embeddings ${s.originalMaxPositions}` };
    if (own && own.tokens > limit.tokens) limit = own;
  }
  return limit;
}

/** Inverse frequencies (rotaryDim / 2) and the factor cos and sin are multiplied by. */
export interface RopeFrequencies {
  readonly invFreq: Float32Array;
  readonly attentionFactor: number;
}

const f32 = Math.fround;

/** base^(−2i/dim) for i < dim/2, in float32 as transformers computes it. */
function baseInvFreq(base: number, dim: number): Float32Array {
  const out = new Float32Array(dim / 2);
  for (let i = 0; i < dim / 2; i++) out[i] = f32(1 / f32(Math.pow(base, f32(f32(2 * i) / dim))));
  return out;
}

/**
 * Frequencies for windows of `seqLen` positions (0-based token index within the window).
 * `dynamic` and `longrope` depend on it, as transformers' per-forward frequency update does.
 */
export function ropeFrequencies(rope: RopeSpec, seqLen: number): RopeFrequencies {
  const dim = rope.rotaryDim;
  const s = rope.scaling;
  switch (s.type) {
    case 'default':
      return { invFreq: baseInvFreq(rope.theta, dim), attentionFactor: 1 };
    case 'linear':
      return { invFreq: baseInvFreq(rope.theta, dim).map((v) => f32(v / s.factor)), attentionFactor: 1 };
    case 'dynamic': {
      const len = Math.max(seqLen, s.originalMaxPositions);
      const base = rope.theta * Math.pow((s.factor * len) / s.originalMaxPositions - (s.factor - 1), dim / (dim - 2));
      return { invFreq: baseInvFreq(f32(base), dim), attentionFactor: 1 };
    }
    case 'llama3': {
      const inv = baseInvFreq(rope.theta, dim);
      const lowWavelen = s.originalMaxPositions / s.lowFreqFactor;
      const highWavelen = s.originalMaxPositions / s.highFreqFactor;
      const out = new Float32Array(inv.length);
      for (let i = 0; i < inv.length; i++) {
        const wavelen = (2 * Math.PI) / inv[i];
        let v = wavelen > lowWavelen ? inv[i] / s.factor : inv[i];
        if (!(wavelen < highWavelen) && !(wavelen > lowWavelen)) {
          const smooth = (s.originalMaxPositions / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
          v = ((1 - smooth) * v) / s.factor + smooth * v;
        }
        out[i] = f32(v);
      }
      return { invFreq: out, attentionFactor: 1 };
    }
    case 'yarn': {
      const mscaleOf = (scale: number, m = 1) => (scale <= 1 ? 1 : 0.1 * m * Math.log(scale) + 1);
      const attentionFactor = s.attentionFactor ?? (s.mscale && s.mscaleAllDim ? mscaleOf(s.factor, s.mscale) / mscaleOf(s.factor, s.mscaleAllDim) : mscaleOf(s.factor));
      const correctionDim = (rotations: number) => (dim * Math.log(s.originalMaxPositions / (rotations * 2 * Math.PI))) / (2 * Math.log(rope.theta));
      let low = correctionDim(s.betaFast);
      let high = correctionDim(s.betaSlow);
      if (s.truncate) {
        low = Math.floor(low);
        high = Math.ceil(high);
      }
      low = Math.max(low, 0);
      high = Math.min(high, dim - 1);
      if (low === high) high += 0.001;
      const out = new Float32Array(dim / 2);
      for (let i = 0; i < dim / 2; i++) {
        const posFreq = f32(Math.pow(rope.theta, f32(f32(2 * i) / dim)));
        const extrapolation = f32(1 / posFreq);
        const interpolation = f32(1 / f32(s.factor * posFreq));
        const ramp = Math.min(1, Math.max(0, f32((i - low) / (high - low))));
        const extrapolationFactor = f32(1 - ramp);
        out[i] = f32(interpolation * (1 - extrapolationFactor) + extrapolation * extrapolationFactor);
      }
      return { invFreq: out, attentionFactor };
    }
    case 'longrope': {
      const factor = s.factor ?? s.maxPositions / s.originalMaxPositions;
      const attentionFactor = s.attentionFactor ?? (factor <= 1 ? 1 : Math.sqrt(1 + Math.log(factor) / Math.log(s.originalMaxPositions)));
      const ext = seqLen > s.originalMaxPositions ? s.longFactor : s.shortFactor;
      if (ext.length !== dim / 2) throw new FactoredKeysError(`rope: longrope factors have ${ext.length} entries, the rotary dim ${dim} needs ${dim / 2}`);
      const out = new Float32Array(dim / 2);
      for (let i = 0; i < dim / 2; i++) out[i] = f32(1 / f32(f32(ext[i]) * f32(Math.pow(rope.theta, f32(f32(2 * i) / dim)))));
      return { invFreq: out, attentionFactor };
    }
  }
}

/** cos/sin tables [seqLen, rotaryDim] laid out for the rope's style (already × attention factor). */
export function ropeTables(rope: RopeSpec, seqLen: number): { cos: Float32Array; sin: Float32Array } {
  const { invFreq, attentionFactor } = ropeFrequencies(rope, seqLen);
  const dim = rope.rotaryDim;
  const half = dim / 2;
  const cos = new Float32Array(seqLen * dim);
  const sin = new Float32Array(seqLen * dim);
  for (let p = 0; p < seqLen; p++) {
    for (let i = 0; i < half; i++) {
      const a = f32(invFreq[i] * p);
      const c = f32(f32(Math.cos(a)) * attentionFactor);
      const s = f32(f32(Math.sin(a)) * attentionFactor);
      // rotate-half pairs i with i + d/2; interleaved pairs 2i with 2i + 1
      const [x, y] = rope.style === 'rotate-half' ? [i, half + i] : [2 * i, 2 * i + 1];
      cos[p * dim + x] = cos[p * dim + y] = c;
      sin[p * dim + x] = sin[p * dim + y] = s;
    }
  }
  return { cos, sin };
}
