/**
 * From an open checkpoint to its {@link ModelDescription}: the family's description, then every
 * tensor it names checked against the checkpoint (present, shapes that fit the config), so that
 * consumers can read roles without re-checking.
 */
import type { Checkpoint } from '../checkpoint/checkpoint';
import { FactoredKeysError } from '../errors';
import { ConfigReader } from './config';
import type { LinearRole, ModelDescription, NormRole, WeightOrientation } from './description';
import { FAMILY_BY_MODEL_TYPE } from './models';

/** Upper bound on query or KV heads per layer accepted from config.json. */
export const MAX_HEADS = 65536;

export const SUPPORTED_ARCHITECTURES: readonly string[] = [...FAMILY_BY_MODEL_TYPE.keys()].sort();

export interface DescribeOptions {
  /**
   * The checkpoint is a factored export: its Q/K/V tensors are rewritten (docs/FORMAT.md), so
   * their shapes are checked by the export reader instead.
   */
  readonly factored?: boolean;
  /**
   * Also check every other role (embeddings, norms, MLP, head), as running the model needs.
   * Analysis and export read only the attention projections and copy the rest.
   */
  readonly complete?: boolean;
}

function outFeatures(shape: readonly number[], o: WeightOrientation): number {
  return o === 'linear' ? shape[0] : shape[1];
}
function inFeatures(shape: readonly number[], o: WeightOrientation): number {
  return o === 'linear' ? shape[1] : shape[0];
}

/** Describes and checks a checkpoint's architecture. */
export function describeModel(ckpt: Checkpoint, options: DescribeOptions = {}): ModelDescription {
  const where = `${ckpt.dir}/config.json`;
  const modelType = ckpt.config.model_type;
  if (typeof modelType !== 'string') throw new FactoredKeysError(`${where}: missing "model_type"`);
  const family = FAMILY_BY_MODEL_TYPE.get(modelType);
  if (!family) throw new FactoredKeysError(`${where}: model_type "${modelType}" is not supported (supported: ${SUPPORTED_ARCHITECTURES.join(', ')})`);
  const c = new ConfigReader(ckpt.config, where);
  // head and layer counts are checked before any per-head array is built from them
  for (const key of ['num_attention_heads', 'n_head', 'num_key_value_heads', 'num_kv_heads']) {
    const v = c.get(key);
    if (typeof v === 'number' && v > MAX_HEADS) throw new FactoredKeysError(`${where}: ${v} attention heads ("${key}") is more than the ${MAX_HEADS} heads per layer this tool accepts`);
  }
  // every layer has at least one tensor of its own: more layers than tensors cannot be real
  for (const key of ['num_hidden_layers', 'n_layer']) {
    const v = c.get(key);
    if (typeof v === 'number' && v > ckpt.tensors.size) throw new FactoredKeysError(`${where}: "${key}" is ${v}, more layers than the checkpoint's ${ckpt.tensors.size} tensors could hold`);
  }
  const m = family.describe({ config: c, modelType, has: (t) => ckpt.tensors.has(t) });
  if (m.latentAttention) return m;
  new Checker(ckpt, m, options.factored ?? false, options.complete ?? false).run();
  return m;
}

class Checker {
  constructor(
    readonly ckpt: Checkpoint,
    readonly m: ModelDescription,
    readonly factored: boolean,
    readonly complete: boolean,
  ) {}

  private tensor(name: string, what: string) {
    const t = this.ckpt.tensors.get(name);
    if (!t) throw new FactoredKeysError(`${this.ckpt.dir}: ${what}: tensor "${name}" is missing`);
    return t;
  }

  private norm(n: NormRole | null, size: number | readonly number[], what: string): void {
    if (!n) return;
    const sizes = typeof size === 'number' ? [size] : size;
    for (const name of [n.weight, n.bias]) {
      if (!name) continue;
      const t = this.tensor(name, what);
      if (t.shape.length !== 1 || !sizes.includes(t.shape[0])) throw new FactoredKeysError(`${t.file}: ${what} "${name}" has shape [${t.shape.join(', ')}], expected [${sizes.join(' or ')}]`);
    }
  }

  /** A linear's input features must be `input`; returns its output features. */
  private linear(l: LinearRole, input: number | null, what: string): number {
    const t = this.tensor(l.weight, what);
    if (t.shape.length !== 2) throw new FactoredKeysError(`${t.file}: tensor "${t.name}" should be 2-D but has shape [${t.shape.join(', ')}]`);
    if (input !== null && inFeatures(t.shape, l.orientation) !== input) {
      throw new FactoredKeysError(`${t.file}: tensor "${t.name}" has ${inFeatures(t.shape, l.orientation)} input features, expected ${input}`);
    }
    const all = outFeatures(t.shape, l.orientation);
    if (l.rows && l.rows.start + l.rows.count > all) throw new FactoredKeysError(`${t.file}: tensor "${t.name}" has ${all} output features, fewer than the ${l.rows.start + l.rows.count} the config implies`);
    if (l.bias) {
      const b = this.tensor(l.bias, what);
      if (b.shape.length !== 1 || b.shape[0] !== all) throw new FactoredKeysError(`${b.file}: bias "${b.name}" shape [${b.shape.join(', ')}] does not match "${t.name}"`);
    }
    return l.rows ? l.rows.count : all;
  }

  run(): void {
    const { m, ckpt } = this;
    if (m.blocks.length === 0) throw new FactoredKeysError(`${ckpt.dir}/config.json: the model has no layers`);
    if (!this.factored) for (const b of m.blocks) this.projections(b.index);
    if (this.complete) this.roles();
  }

  /** Every role but the Q/K/V projections. */
  private roles(): void {
    const { m, ckpt } = this;
    const d = m.hidden;
    const embed = this.tensor(m.embedding.tokens, 'embedding');
    if (embed.shape.length !== 2 || embed.shape[1] !== d) throw new FactoredKeysError(`${embed.file}: embedding "${embed.name}" has shape [${embed.shape.join(', ')}], expected [vocab, ${d}]`);
    if (m.embedding.positions) {
      const p = this.tensor(m.embedding.positions, 'positions');
      if (p.shape.length !== 2 || p.shape[1] !== d) throw new FactoredKeysError(`${p.file}: positions "${p.name}" has shape [${p.shape.join(', ')}], expected [positions, ${d}]`);
    }
    this.norm(m.finalNorm, d, 'final norm');
    this.linear(m.head, d, 'logits head');
    for (const b of m.blocks) {
      const what = `layer ${b.index}`;
      const a = b.attention;
      this.norm(b.attentionInputNorm, d, what);
      this.norm(b.attentionOutputNorm, d, what);
      this.norm(b.mlpInputNorm, d, what);
      this.norm(b.mlpOutputNorm, d, what);
      const hd = m.headDim;
      this.norm(a.qNorm?.norm ?? null, a.qNorm?.scope === 'projection' ? m.queryHeads * hd : hd, what);
      this.norm(a.kNorm?.norm ?? null, a.kNorm?.scope === 'projection' ? m.kvHeads * hd : hd, what);
      if (a.sinks) this.norm({ kind: 'rms', weight: a.sinks, eps: 1 }, m.queryHeads, `${what} sinks`);
      if (this.linear(a.output, m.queryHeads * hd, `${what} attention output`) !== d) throw new FactoredKeysError(`${ckpt.dir}: ${what}: "${a.output.weight}" does not project to hidden size ${d}`);
      this.mlp(b.index);
    }
  }

  private mlp(i: number): void {
    const mlp = this.m.blocks[i].mlp;
    const d = this.m.hidden;
    const what = `layer ${i} MLP`;
    if (mlp.kind === 'dense' || mlp.kind === 'gated') {
      const width = this.linear(mlp.up, d, what);
      if (mlp.kind === 'gated' && this.linear(mlp.gate, d, what) !== width) throw new FactoredKeysError(`${this.ckpt.dir}: ${what}: gate and up projections differ in width`);
      if (this.linear(mlp.down, width, what) !== d) throw new FactoredKeysError(`${this.ckpt.dir}: ${what}: "${mlp.down.weight}" does not project to hidden size ${d}`);
      return;
    }
    const experts = mlp.kind === 'moe' ? mlp.experts.length : mlp.experts;
    if (this.linear(mlp.router, d, what) !== experts) throw new FactoredKeysError(`${this.ckpt.tensor(mlp.router.weight).file}: ${what}: router "${mlp.router.weight}" does not score ${experts} experts`);
    if (mlp.routing.topK > experts) throw new FactoredKeysError(`${this.ckpt.dir}/config.json: ${mlp.routing.topK} experts per token but only ${experts} experts`);
    if (mlp.kind === 'moe') {
      let width: number | undefined;
      for (const e of mlp.experts) {
        const w = this.linear(e.up, d, what);
        if ((width !== undefined && w !== width) || this.linear(e.gate, d, what) !== w) throw new FactoredKeysError(`${this.ckpt.dir}: ${what}: expert widths differ`);
        width = w;
        if (this.linear(e.down, w, what) !== d) throw new FactoredKeysError(`${this.ckpt.dir}: ${what}: "${e.down.weight}" does not project to hidden size ${d}`);
      }
      return;
    }
    const gu = this.tensor(mlp.gateUp.weight, what);
    const dn = this.tensor(mlp.down.weight, what);
    const inter = dn.shape[1];
    const ok = gu.shape.length === 3 && gu.shape[0] === experts && gu.shape[1] === d && gu.shape[2] % 2 === 0 && dn.shape.length === 3 && dn.shape[0] === experts && gu.shape[2] === 2 * inter && dn.shape[2] === d;
    if (!ok) throw new FactoredKeysError(`${gu.file}: ${what}: experts "${gu.name}" [${gu.shape.join(', ')}] and "${dn.name}" [${dn.shape.join(', ')}] are not [${experts}, ${d}, 2I] and [${experts}, I, ${d}]`);
    const gb = this.tensor(mlp.gateUp.bias, what);
    const db = this.tensor(mlp.down.bias, what);
    if (gb.shape.join() !== `${experts},${2 * inter}` || db.shape.join() !== `${experts},${d}`) throw new FactoredKeysError(`${gb.file}: ${what}: expert biases have shapes [${gb.shape.join(', ')}] and [${db.shape.join(', ')}]`);
  }

  /** The Q/K/V head slices: inside their tensors, of the config's sizes, one float dtype. */
  private projections(i: number): void {
    const { m, ckpt } = this;
    const a = m.blocks[i].attention;
    const hd = m.headDim;
    for (const group of [a.query, a.key, a.value]) {
      for (const head of group) {
        const t = this.tensor(head.tensor, `layer ${i}`);
        if (t.shape.length !== 2) throw new FactoredKeysError(`${t.file}: tensor "${t.name}" should be 2-D but has shape [${t.shape.join(', ')}]`);
        if (inFeatures(t.shape, head.orientation) !== m.hidden) throw new FactoredKeysError(`${t.file}: tensor "${t.name}" has ${inFeatures(t.shape, head.orientation)} input features but hidden_size is ${m.hidden}`);
        if (head.offset + hd > outFeatures(t.shape, head.orientation)) {
          throw new FactoredKeysError(`${t.file}: tensor "${t.name}" shape [${t.shape.join(', ')}] is too small for ${m.queryHeads} query / ${m.kvHeads} KV heads of dim ${hd}`);
        }
        if (head.bias) {
          const bt = this.tensor(head.bias, `layer ${i}`);
          if (bt.shape.length !== 1 || bt.shape[0] !== outFeatures(t.shape, head.orientation)) throw new FactoredKeysError(`${bt.file}: bias "${bt.name}" shape [${bt.shape.join(', ')}] does not match "${t.name}"`);
        }
      }
    }
    const qT = ckpt.tensor(a.query[0].tensor);
    const fused = a.projectionTensors.length === 1;
    const expected = fused ? (m.queryHeads + 2 * m.kvHeads) * hd : m.queryHeads * hd;
    if (outFeatures(qT.shape, a.query[0].orientation) !== expected) {
      throw new FactoredKeysError(`${qT.file}: tensor "${qT.name}" has ${outFeatures(qT.shape, a.query[0].orientation)} output features but the config implies ${expected} (${m.queryHeads} query / ${m.kvHeads} KV heads x ${hd})`);
    }
    const kT = ckpt.tensor(a.key[0].tensor);
    if (!fused && outFeatures(kT.shape, a.key[0].orientation) !== m.kvHeads * hd) {
      throw new FactoredKeysError(`${kT.file}: tensor "${kT.name}" has ${outFeatures(kT.shape, a.key[0].orientation)} output features but the config implies ${m.kvHeads * hd} (${m.kvHeads} KV heads x ${hd})`);
    }
    if (qT.dtype !== kT.dtype) throw new FactoredKeysError(`${kT.file}: "${qT.name}" is ${qT.dtype} but "${kT.name}" is ${kT.dtype}`);
    const first = ckpt.tensor(m.blocks[0].attention.query[0].tensor);
    if (first.dtype !== qT.dtype) throw new FactoredKeysError(`${qT.file}: "${qT.name}" is ${qT.dtype} but earlier layers are ${first.dtype}`);
    if (!['F32', 'F16', 'BF16', 'F64', 'F8_E4M3', 'F8_E5M2'].includes(qT.dtype)) throw new FactoredKeysError(`${qT.file}: tensor "${qT.name}" has dtype ${qT.dtype}, which is not a float weight type this tool reads`);
  }
}
