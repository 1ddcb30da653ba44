#!/usr/bin/env node
// A stand-in for the Python that runs python/train_factored_keys.py, for tests without PyTorch.
// It speaks the script's protocol: `<script> check` prints the check line; `<script> train ...`
// prints start/eval/step events and writes the checkpoint's shards into --out. FAKE_PY_MODE picks
// a behaviour: ok (shards copied unchanged), nocuda, missing (no torch), slow (hangs after the
// first step, for cancellation), corrupt (writes a truncated shard), fail (an error event).
// FAKE_PY_ARGS_FILE, when set, receives the train command's arguments as JSON; with --teacher the
// eval and done events carry the KL fields the real script adds.
import { copyFileSync, readFileSync, readdirSync, writeFileSync, existsSync } from 'node:fs';
import * as path from 'node:path';
import process from 'node:process';
import { setInterval } from 'node:timers';

const mode = process.env.FAKE_PY_MODE ?? 'ok';
const [, , , command, ...rest] = process.argv;
const emit = (o) => process.stdout.write(JSON.stringify(o) + '\n');
if (command === 'check') {
  if (mode === 'missing') {
    emit({ event: 'check', python: '3.12.0', executable: '/fake/python3', missing: ['torch', 'transformers'], too_old: [], ok: false });
    process.exit(3);
  }
  emit({ event: 'check', python: '3.12.0', executable: '/fake/python3', torch: '2.11.0', transformers: '5.17.0', safetensors: '0.6.0', cuda: mode !== 'nocuda', cuda_devices: 1, missing: [], too_old: [], ok: true });
  process.exit(0);
}
const arg = (name) => rest[rest.indexOf(name) + 1];
const ckpt = arg('--checkpoint');
const out = arg('--out');
const steps = Number(arg('--steps'));
const kl = rest.includes('--teacher');
if (process.env.FAKE_PY_ARGS_FILE) writeFileSync(process.env.FAKE_PY_ARGS_FILE, JSON.stringify(rest));
if (!existsSync(arg('--tokens'))) {
  emit({ event: 'error', message: 'no tokens file' });
  process.exit(2);
}
emit({ event: 'start', device: 'cpu', device_name: 'cpu', torch: '2.11.0', transformers: '5.17.0', tensors: ['x'], trained_parameters: 10, total_parameters: 100, train_tokens: 1000, heldout_tokens: 50, steps, batch: 2, seq: 8, lr: 0.001 });
emit({ event: 'eval', phase: 'before', loss: 1.5, perplexity: Math.exp(1.5), ...(kl ? { kl: 0.08 } : {}) });
if (mode === 'fail') {
  emit({ event: 'error', message: 'the loss became nan at step 1: lower --lr' });
  process.exit(2);
}
emit({ event: 'step', step: 1, steps, loss: 1.4, lr: 0.001, tokens_per_s: 1000, elapsed_s: 0.1, eta_s: 1 });
if (mode === 'slow') {
  writeFileSync(path.join(out, 'partial.safetensors'), 'x');
  setInterval(() => {}, 1000);
} else {
  emit({ event: 'eval', phase: 'after', loss: 1.4, perplexity: Math.exp(1.4), ...(kl ? { kl: 0.05 } : {}) });
  const shards = readdirSync(ckpt).filter((f) => f.endsWith('.safetensors'));
  for (const f of shards) {
    if (mode === 'corrupt') writeFileSync(path.join(out, f), readFileSync(path.join(ckpt, f)).subarray(0, 100));
    else copyFileSync(path.join(ckpt, f), path.join(out, f));
    emit({ event: 'saved', file: f, tensors: 1 });
  }
  emit({ event: 'done', kept: 'trained', before_loss: 1.5, after_loss: 1.4, before_perplexity: Math.exp(1.5), after_perplexity: Math.exp(1.4), train_s: 0.1, tokens_per_s: 1000, steps, batch: 2, seq: 8, lr: 0.001, trained_parameters: 10, device: 'cpu', ...(kl ? { criterion: 'kl', before_kl: 0.08, after_kl: 0.05 } : {}) });
}
