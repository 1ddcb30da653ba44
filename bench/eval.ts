/**
 * Evaluation benchmark (`npm run bench -- eval`): forward-pass throughput (predicted tokens per
 * second) of the perplexity evaluator per backend, on the trained fixtures and, with
 * BENCH_EVAL_1B=1, on a synthetic 1.1B-parameter Llama-shaped checkpoint (TinyLlama's shape,
 * BF16, random weights) written to BENCH_DIR. Prints a Markdown table; BENCH_OUT saves JSON.
 *
 * Environment: FK_FIXTURES (default ../shared/fixtures), BENCH_EVAL_WINDOWS (fixture windows,
 * default 32), BENCH_EVAL_1B_WINDOWS (default 8), BENCH_EVAL_BACKENDS (comma list; default every
 * usable backend plus auto), BENCH_DIR (default .bench), BENCH_EVAL_PPL=1 (also the full heldout
 * perplexity of originals and key-svd/qk-svd plans at ranks 8/16/32 per backend), BENCH_EVAL_STREAM=1
 * (the streamed evaluator on the 1.1B and Mistral-7B shapes, BENCH_EVAL_STREAM_WINDOWS windows).
 */
import { existsSync, promises as fsp, readFileSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { openCheckpoint } from '../src/core/checkpoint/checkpoint';
import { usableBackends, type BackendChoice } from '../src/core/compute/session';
import { checkpointSource, defaultBatch, evaluateCheckpoint, loadForward, NllAccumulator, PlanEvaluator, sweepPerplexity, windowBatch } from '../src/core/eval';
import { generateSyntheticCheckpoint } from './synthetic';

const ROOT = path.resolve(__dirname, '..');

interface Measurement {
  model: string;
  parameters: number;
  backend: string;
  requested: string;
  seq: number;
  windows: number;
  batch: number;
  loadSeconds: number;
  firstBatchSeconds: number;
  runSeconds: number;
  tokensPerSecond: number;
  /** Perplexity over the timed windows (shows the backend computes the same model). */
  perplexity: number;
  fallback?: string;
}

function machine(): string {
  const cpus = os.cpus();
  return `${cpus[0]?.model ?? 'cpu'} x ${cpus.length} logical cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB RAM, ${os.platform()} ${os.release()}, Node ${process.version}`;
}

/** Loads a checkpoint's forward pass on a backend and times windows of `ids`. */
async function measure(dir: string, label: string, ids: Int32Array, backend: BackendChoice, windows: number, seq: number, batch: number): Promise<Measurement> {
  const ckpt = await openCheckpoint(dir);
  let parameters = 0;
  for (const t of ckpt.tensors.values()) parameters += t.shape.reduce((a, b) => a * b, 1);
  try {
    const t0 = performance.now();
    const fwd = await loadForward(checkpointSource(ckpt), { seq, backend, segmentBytes: 512 << 20 });
    const loadSeconds = (performance.now() - t0) / 1000;
    try {
      // first batch separately: it includes lazy device allocations and kernel compilation
      const t1 = performance.now();
      const first = windowBatch(ids, seq, 0, Math.min(batch, windows));
      await fwd.run(first.inputs, first.targets, Math.min(batch, windows));
      const firstBatchSeconds = (performance.now() - t1) / 1000;
      const acc = new NllAccumulator();
      const t2 = performance.now();
      for (let w = 0; w < windows; w += batch) {
        const n = Math.min(batch, windows - w);
        const b = windowBatch(ids, seq, w, n);
        acc.addWindows((await fwd.run(b.inputs, b.targets, n)).nll, n, seq);
      }
      const runSeconds = (performance.now() - t2) / 1000;
      return {
        model: label, parameters, backend: fwd.backend, requested: backend, seq, windows, batch, loadSeconds, firstBatchSeconds, runSeconds,
        tokensPerSecond: (windows * seq) / runSeconds, perplexity: acc.perplexity, fallback: fwd.fallbackReason,
      };
    } finally {
      await fwd.dispose();
    }
  } finally {
    await ckpt.close();
  }
}

/** TinyLlama-1.1B's shape: 22 layers, hidden 2048, 32 query / 4 KV heads of 64, vocab 32000, BF16. */
const LLAMA_1B = { hidden: 2048, intermediate: 5632, layers: 22, heads: 32, kvHeads: 4, headDim: 64, vocab: 32000 };

/** Writes the synthetic 1.1B checkpoint (two shards + index), reusing a complete one. */
export async function syntheticLlama1b(dir: string): Promise<string> {
  const marker = path.join(dir, '.complete');
  if (existsSync(marker)) return dir;
  await fsp.rm(dir, { recursive: true, force: true });
  await fsp.mkdir(dir, { recursive: true });
  const s = LLAMA_1B;
  const tensors: [string, number[]][] = [['model.embed_tokens.weight', [s.vocab, s.hidden]]];
  for (let l = 0; l < s.layers; l++) {
    const p = `model.layers.${l}.`;
    tensors.push(
      [`${p}self_attn.q_proj.weight`, [s.heads * s.headDim, s.hidden]],
      [`${p}self_attn.k_proj.weight`, [s.kvHeads * s.headDim, s.hidden]],
      [`${p}self_attn.v_proj.weight`, [s.kvHeads * s.headDim, s.hidden]],
      [`${p}self_attn.o_proj.weight`, [s.hidden, s.heads * s.headDim]],
      [`${p}mlp.gate_proj.weight`, [s.intermediate, s.hidden]],
      [`${p}mlp.up_proj.weight`, [s.intermediate, s.hidden]],
      [`${p}mlp.down_proj.weight`, [s.hidden, s.intermediate]],
      [`${p}input_layernorm.weight`, [s.hidden]],
      [`${p}post_attention_layernorm.weight`, [s.hidden]],
    );
  }
  tensors.push(['model.norm.weight', [s.hidden]], ['lm_head.weight', [s.vocab, s.hidden]]);
  // Pseudo-random BF16 pool, |w| in 2^-8..2^-5 with random signs (keeps activations finite);
  // norm weights are 1.0 so the stack stays well scaled.
  const pool = new Uint16Array(32 << 20);
  let x = 0x2545f491;
  for (let i = 0; i < pool.length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    pool[i] = (x & 0x807f) | ((119 + ((x >>> 8) & 3)) << 7);
  }
  const half = Math.ceil(tensors.length / 2);
  const shards = [tensors.slice(0, half), tensors.slice(half)];
  const weightMap: Record<string, string> = {};
  let total = 0;
  for (let i = 0; i < shards.length; i++) {
    const name = `model-0000${i + 1}-of-00002.safetensors`;
    const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
    let offset = 0;
    for (const [n, shape] of shards[i]) {
      const bytes = shape.reduce((a, b) => a * b, 1) * 2;
      header[n] = { dtype: 'BF16', shape, data_offsets: [offset, offset + bytes] };
      offset += bytes;
      weightMap[n] = name;
    }
    total += offset;
    let json = JSON.stringify(header);
    json += ' '.repeat((8 - ((8 + json.length) % 8)) % 8);
    const fh = await fsp.open(path.join(dir, name), 'w');
    try {
      const prefix = Buffer.alloc(8 + json.length);
      prefix.writeBigUInt64LE(BigInt(json.length), 0);
      prefix.write(json, 8, 'latin1');
      await fh.write(prefix);
      let at = 0;
      for (const [n, shape] of shards[i]) {
        const count = shape.reduce((a, b) => a * b, 1);
        if (n.endsWith('layernorm.weight') || n === 'model.norm.weight') {
          await fh.write(new Uint8Array(new Uint16Array(count).fill(0x3f80).buffer));
          continue;
        }
        for (let left = count; left > 0; ) {
          const k = Math.min(left, pool.length / 2);
          at = (at + 7919) % (pool.length / 2);
          await fh.write(new Uint8Array(pool.buffer, at * 2, k * 2));
          left -= k;
        }
      }
    } finally {
      await fh.close();
    }
  }
  const config = {
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: s.hidden, intermediate_size: s.intermediate, num_hidden_layers: s.layers,
    num_attention_heads: s.heads, num_key_value_heads: s.kvHeads, head_dim: s.headDim, vocab_size: s.vocab, rms_norm_eps: 1e-5, rope_theta: 10000.0,
    hidden_act: 'silu', max_position_embeddings: 2048, tie_word_embeddings: false, torch_dtype: 'bfloat16',
  };
  await fsp.writeFile(path.join(dir, 'config.json'), JSON.stringify(config, null, 2));
  await fsp.writeFile(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2));
  await fsp.writeFile(marker, 'ok');
  return dir;
}

function row(m: Measurement): string {
  const params = m.parameters >= 1e9 ? `${(m.parameters / 1e9).toFixed(2)} B` : `${(m.parameters / 1e6).toFixed(1)} M`;
  return `| ${m.model} | ${params} | ${m.requested} → ${m.backend} | ${m.windows} × ${m.seq} | ${m.loadSeconds.toFixed(2)} s | ${m.firstBatchSeconds.toFixed(2)} s | ${m.runSeconds.toFixed(2)} s | **${Math.round(m.tokensPerSecond).toLocaleString('en-US')}** | ${m.perplexity.toFixed(4)} |${m.fallback ? ` ${m.fallback}` : ''}`;
}

/** Runs the evaluation benchmark. */
export async function run(): Promise<unknown> {
  const fixtures = path.resolve(ROOT, process.env.FK_FIXTURES ?? '../shared/fixtures');
  const windows = Number(process.env.BENCH_EVAL_WINDOWS ?? 32);
  const seq = 256;
  const batch = defaultBatch(seq);
  const backends = (process.env.BENCH_EVAL_BACKENDS?.split(',').filter(Boolean) as BackendChoice[] | undefined) ?? [...new Set<BackendChoice>([...(await usableBackends()), 'auto'])];
  const heldout = Int32Array.from(readFileSync(path.join(fixtures, 'heldout.txt')));
  const results: Measurement[] = [];
  const lines = [`machine: ${machine()}`, '', '| model | parameters | backend (requested → used) | windows × seq | load | first batch | run | tokens/s | PPL of those windows |', '|---|---|---|---|---|---|---|---|---|'];
  const emit = (m: Measurement) => {
    results.push(m);
    lines.push(row(m));
    process.stderr.write(row(m) + '\n');
  };
  for (const name of ['gpt2-bytes', 'mistral-bytes']) {
    for (const b of backends) emit(await measure(path.join(fixtures, name), name, heldout, b, windows, seq, batch));
  }
  if (process.env.BENCH_EVAL_1B === '1') {
    const dir = await syntheticLlama1b(path.join(path.resolve(ROOT, process.env.BENCH_DIR ?? '.bench'), 'llama-1.1b-synthetic'));
    const n = Number(process.env.BENCH_EVAL_1B_WINDOWS ?? 8);
    // token ids for the synthetic model: the heldout bytes (all < 32000)
    for (const b of backends) emit(await measure(dir, 'llama-1.1b (synthetic)', heldout, b, n, seq, Number(process.env.BENCH_EVAL_1B_BATCH ?? 4)));
  }
  // BENCH_EVAL_STREAM=1: the streamed evaluator (what `eval` runs) on the synthetic 1.1B model
  // and the Mistral-7B shape (bench/synthetic.ts, 14.5 GB written to BENCH_DIR), first
  // BENCH_EVAL_STREAM_WINDOWS windows (default 8) per backend, everything counted (load included)
  if (process.env.BENCH_EVAL_STREAM === '1') {
    const benchDir = path.resolve(ROOT, process.env.BENCH_DIR ?? '.bench');
    const n = Number(process.env.BENCH_EVAL_STREAM_WINDOWS ?? 8);
    lines.push('', '| model (streamed) | backend | windows × seq | segments | batch | seconds | tokens/s | estimated peak | peak RSS so far | PPL |', '|---|---|---|---|---|---|---|---|---|---|');
    const models: [string, () => Promise<string>][] = [
      ['llama-1.1b (synthetic)', () => syntheticLlama1b(path.join(benchDir, 'llama-1.1b-synthetic'))],
      ['mistral-7b (synthetic)', async () => (await generateSyntheticCheckpoint('mistral-7b', path.join(benchDir, 'mistral-7b'))).dir],
    ];
    for (const [label, make] of models) {
      const dir = await make();
      for (const b of backends) {
        const t = performance.now();
        const r = await evaluateCheckpoint(dir, heldout, { seq, backend: b, maxWindows: n });
        const s = (performance.now() - t) / 1000;
        const gib = (x: number) => `${(x / 2 ** 30).toFixed(2)} GiB`;
        const line = `| ${label} | ${b} → ${r.backend}${r.plan?.half ? ' (float16)' : ''} | ${r.windows} × ${seq} | ${r.plan?.segments.length} | ${r.plan?.batch} | ${s.toFixed(1)} | ${Math.round(r.tokens / s).toLocaleString('en-US')} | ${r.plan ? gib(r.plan.peakBytes) : '?'} | ${gib(process.resourceUsage().maxRSS * 1024)} | ${r.perplexity.toFixed(2)} |`;
        lines.push(line);
        process.stderr.write(line + '\n');
      }
    }
  }
  // BENCH_EVAL_PPL=1: the whole heldout.txt protocol per backend, originals and in-memory plans
  // (key-svd, qk-svd at ranks 8/16/32), to compare with test/reference/eval/eval_reference.json.
  const perplexities: Record<string, unknown>[] = [];
  if (process.env.BENCH_EVAL_PPL === '1') {
    lines.push('', '| model | backend | original | key-svd 8 / 16 / 32 | qk-svd 8 / 16 / 32 | seconds |', '|---|---|---|---|---|---|');
    for (const name of ['gpt2-bytes', 'mistral-bytes']) {
      for (const b of backends) {
        const ev = await PlanEvaluator.open(path.join(fixtures, name));
        try {
          const t = performance.now();
          const points = await sweepPerplexity(ev, heldout, { methods: ['key-svd', 'qk-svd'], ranks: [8, 16, 32] }, { seq, backend: b });
          const seconds = (performance.now() - t) / 1000;
          perplexities.push({ model: name, backend: b, seconds, points });
          const f = (m: string) => points.filter((p) => p.method === m).map((p) => p.perplexity.toFixed(6)).join(' / ');
          const line = `| ${name} | ${b} | ${points[0].perplexity.toFixed(6)} | ${f('key-svd')} | ${f('qk-svd')} | ${seconds.toFixed(1)} |`;
          lines.push(line);
          process.stderr.write(line + '\n');
        } finally {
          await ev.close();
        }
      }
    }
  }
  process.stdout.write(lines.join('\n') + '\n');
  if (process.env.BENCH_OUT) writeFileSync(process.env.BENCH_OUT, JSON.stringify({ machine: machine(), date: new Date().toISOString(), results, perplexities }, null, 2));
  return results;
}
