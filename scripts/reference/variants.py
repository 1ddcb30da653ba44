#!/usr/bin/env python3
"""Tiny hyper-parameter variants of the 2025-26 architecture families, with transformers' own reference
(test tooling, not product code; run on the GPU machine, which has PyTorch and transformers).

For every variant below this script
  1. builds the config with `AutoConfig.for_model(model_type, **kwargs)` and checks that every asked-for
     value is really in the config (a value transformers silently drops is reported, not hidden);
  2. builds the model with `AutoModelForCausalLM.from_config` in float32 (eager attention) after
     `torch.manual_seed(SEED)`, multiplies every 2-D parameter by 4 (as the layouts2 fixtures were made, so
     attention is not uniform; 3-D fused expert tensors are left as initialised, as there) and, unless
     --zero-biases is given, adds N(0, 0.05^2) noise to every 1-D parameter (biases, norm weights, sinks,
     router biases), which are zeros or ones at init: without it a bias or norm-weight bug in an
     evaluator would go unnoticed;
  3. saves it with `save_pretrained(dir, safe_serialization=True)`;
  4. reloads the saved folder (fresh model for every pass, so no RoPE state carries over) and records the
     reference exactly as layouts2/reference.json does:
       logits[position][token] of the fp32 model for PROBE_IDS, rounded to 6 decimals;
       ppl_2048: perplexity of the first 2,049 bytes of heldout.txt as byte ids, 8 windows of 256 (window j
       feeds ids[256j:256j+256] and predicts ids[256j+1:256j+257]; each window from empty context);
       NLL accumulated in float64.
     The reference is computed on CUDA (TF32 off) when there is a GPU; the same passes run on the CPU too
     and the largest differences go to the diagnostics file.

A variant whose config or model transformers rejects is dropped and listed as such in the diagnostics.

Usage (GPU machine):
  python3 scripts/reference/variants.py --heldout HELDOUT_PREFIX --out DIR [--diag FILE.json] [--only a,b]
"""
import argparse
import copy
import json
import logging
import math
import os
import shutil
import sys
import time
import traceback
import warnings

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM

SEED = 0
SEQ = 256
WINDOWS = 8
TEXT_BYTES = SEQ * WINDOWS + 1  # 2,049

# The same probe as layouts2/reference.json: the bytes of 'def spectrum(W):\n    return svd(W)  # keys only'.
PROBE_IDS = [100, 101, 102, 32, 115, 112, 101, 99, 116, 114, 117, 109, 40, 87, 41, 58, 10, 32, 32, 32, 32, 114,
             101, 116, 117, 114, 110, 32, 115, 118, 100, 40, 87, 41, 32, 32, 35, 32, 107, 101, 121, 115, 32, 111,
             110, 108, 121]

PROTOCOL = {
    'probe': 'logits[position][token] of the fp32 model for probe_ids (the bytes of a 48-character string), '
             'rounded to 6 decimals',
    'ppl_2048': 'perplexity of the first 2,049 bytes of heldout.txt (the shared fixtures\' heldout.txt, the same '
                'text as layouts2) as byte ids, 8 windows of 256 (window j feeds ids[256j:256j+256], predicts '
                'ids[256j+1:256j+257])',
}

# Common tiny shape of the llama-like families (layouts2 used the same).
BASE = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, max_position_embeddings=1024)

# LongRoPE rescale lists: one factor per rotary frequency pair (head_dim / 2 = 8).
LLAMA_SHORT = [1.0, 1.0, 1.1, 1.25, 1.5, 1.8, 2.2, 2.6]
LLAMA_LONG = [1.0, 1.3, 1.8, 2.5, 3.5, 5.0, 6.5, 8.0]
PHI3_SHORT = [1.05, 1.1, 1.2, 1.3, 1.45, 1.6, 1.8, 2.0]
PHI3_LONG = [1.2, 1.6, 2.4, 3.2, 4.4, 5.6, 7.0, 9.0]

# Families whose default pad token id lies outside a 256-entry vocabulary (nn.Embedding refuses it) get
# in-vocabulary special ids, as layouts2 did for smollm3 and phi3.
BYTE_TOKENS = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)


def variant(name, model_type, note, base=True, **kwargs):
    merged = dict(BASE) if base else {}
    merged.update(kwargs)
    return {'name': name, 'model_type': model_type, 'note': note, 'kwargs': merged}


VARIANTS = [
    variant('llama_linear', 'llama', 'linear RoPE scaling, factor 4',
            rope_parameters={'rope_type': 'linear', 'factor': 4.0, 'rope_theta': 10000.0}),
    # transformers' dynamic NTK keys off config.max_position_embeddings (it has no
    # original_max_position_embeddings key for this type): 128 here, so the 256-token windows are scaled
    # (inv_freq recomputed with seq_len = 256) and the 47-token probe is not.
    variant('llama_dynamic', 'llama', 'dynamic NTK, factor 4, max_position_embeddings 128 (scaled at 256 tokens)',
            max_position_embeddings=128,
            rope_parameters={'rope_type': 'dynamic', 'factor': 4.0, 'rope_theta': 10000.0}),
    variant('llama_yarn', 'llama', 'YaRN factor 8 from 128 original positions',
            rope_parameters={'rope_type': 'yarn', 'factor': 8.0, 'original_max_position_embeddings': 128,
                             'rope_theta': 10000.0}),
    variant('llama_longrope', 'llama', 'LongRoPE, short/long factors, 128 original positions',
            rope_parameters={'rope_type': 'longrope', 'short_factor': LLAMA_SHORT, 'long_factor': LLAMA_LONG,
                             'factor': 8.0, 'original_max_position_embeddings': 128, 'rope_theta': 10000.0}),
    variant('llama3_b', 'llama', 'llama3 RoPE: factor 16, low 2, high 8, 128 original positions, theta 2e5',
            rope_parameters={'rope_type': 'llama3', 'factor': 16.0, 'low_freq_factor': 2.0,
                             'high_freq_factor': 8.0, 'original_max_position_embeddings': 128,
                             'rope_theta': 200000.0}),
    variant('llama_bias', 'llama', 'attention_bias and mlp_bias',
            attention_bias=True, mlp_bias=True),
    variant('gemma3_mixed', 'gemma3_text',
            '3 layers sliding/full/sliding, window 32, local theta 2e4, global theta 5e5 with linear factor 4',
            num_hidden_layers=3, layer_types=['sliding_attention', 'full_attention', 'sliding_attention'],
            sliding_window=32, query_pre_attn_scalar=16,
            rope_parameters={'sliding_attention': {'rope_type': 'default', 'rope_theta': 20000.0},
                             'full_attention': {'rope_type': 'linear', 'factor': 4.0, 'rope_theta': 500000.0}}),
    variant('gemma2_b', 'gemma2', 'softcaps 20 (attention) / 15 (final), query_pre_attn_scalar 24, window 32',
            attn_logit_softcapping=20.0, final_logit_softcapping=15.0, query_pre_attn_scalar=24,
            sliding_window=32),
    variant('cohere2_mixed', 'cohere2', 'layer_types sliding/full, window 32',
            layer_types=['sliding_attention', 'full_attention'], sliding_window=32),
    variant('qwen3_moe_norm', 'qwen3_moe', '8 experts top-2, norm_topk_prob, layer 1 dense (mlp_only_layers [1])',
            num_experts=8, num_experts_per_tok=2, norm_topk_prob=True, moe_intermediate_size=32,
            decoder_sparse_step=1, mlp_only_layers=[1]),
    variant('mixtral_b', 'mixtral', '8 experts top-3 (expert intermediate 32 to stay small)',
            intermediate_size=32, num_local_experts=8, num_experts_per_tok=3),
    variant('gpt_oss_b', 'gpt_oss', '3 layers, window 32, 8 experts top-3, YaRN factor 4 from 256, untruncated',
            num_hidden_layers=3, intermediate_size=24, sliding_window=32, num_local_experts=8,
            num_experts_per_tok=3, layer_types=['sliding_attention', 'full_attention', 'sliding_attention'],
            rope_parameters={'rope_type': 'yarn', 'factor': 4.0, 'beta_fast': 16.0, 'beta_slow': 1.0,
                             'truncate': False, 'original_max_position_embeddings': 256,
                             'rope_theta': 150000.0}),
    variant('smollm3_b', 'smollm3', '3 layers, no_rope_layers [1, 1, 0] (layer 2 is NoPE)',
            num_hidden_layers=3, no_rope_layers=[1, 1, 0], no_rope_layer_interval=3, **BYTE_TOKENS),
    variant('olmo2_b', 'olmo2', '3 layers, rope theta 5e5',
            num_hidden_layers=3, rope_parameters={'rope_type': 'default', 'rope_theta': 500000.0}),
    variant('granite_b', 'granite', 'multipliers: embedding 6, attention 0.125, residual 0.3, logits_scaling 2.5',
            embedding_multiplier=6.0, attention_multiplier=0.125, residual_multiplier=0.3, logits_scaling=2.5),
    variant('qwen3_b', 'qwen3', 'head_dim 32 (hidden/heads is 16)', head_dim=32),
    variant('phi_b', 'phi', 'partial_rotary_factor 0.75 (12 of 16 dims), qk_layernorm false',
            partial_rotary_factor=0.75, qk_layernorm=False),
    variant('stablelm_b', 'stablelm', 'use_parallel_residual, use_qkv_bias',
            use_parallel_residual=True, use_qkv_bias=True),
    variant('starcoder2_b', 'starcoder2', 'sliding_window 32', sliding_window=32),
    variant('gptj_b', 'gptj', 'rotary_dim 12 (of 16), n_inner 128', base=False,
            vocab_size=256, n_embd=64, n_layer=2, n_head=4, n_positions=1024, n_inner=128, rotary_dim=12),
    variant('gpt_bigcode_mha', 'gpt_bigcode', 'multi_query false (full multi-head c_attn), n_inner 128', base=False,
            vocab_size=256, n_embd=64, n_layer=2, n_head=4, n_positions=1024, n_inner=128, multi_query=False),
    variant('phi3_longrope', 'phi3', 'phi3 LongRoPE, original_max_position_embeddings 128 (factor 1024/128)',
            original_max_position_embeddings=128, **BYTE_TOKENS,
            rope_parameters={'rope_type': 'longrope', 'short_factor': PHI3_SHORT, 'long_factor': PHI3_LONG,
                             'rope_theta': 10000.0}),
]


class Capture(logging.Handler):
    """Collects transformers' log records (warnings and above) while one variant is built."""

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.records = []

    def emit(self, record):
        try:
            self.records.append(f'{record.levelname}: {record.getMessage()}')
        except Exception:  # noqa: BLE001 - a broken log record must not stop the run
            self.records.append(f'{record.levelname}: <unprintable>')


def strict_fp32():
    """fp32 matmuls in full IEEE precision on CUDA (no TF32)."""
    torch.set_float32_matmul_precision('highest')
    try:
        torch.backends.cuda.matmul.fp32_precision = 'ieee'
        torch.backends.cudnn.conv.fp32_precision = 'ieee'
    except (AttributeError, RuntimeError):
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def applied_mismatches(cfg, kwargs):
    """Asked-for values that the built config does not hold."""
    out = []
    for key, want in kwargs.items():
        got = getattr(cfg, key, '<missing>')
        if key == 'rope_parameters':
            got = got or {}
            nested = isinstance(want, dict) and all(isinstance(v, dict) for v in want.values())
            pairs = [(lt, k, v) for lt, d in want.items() for k, v in d.items()] if nested else \
                [(None, k, v) for k, v in want.items()]
            for lt, k, v in pairs:
                have = (got.get(lt) or {}).get(k, '<missing>') if lt else got.get(k, '<missing>')
                if have != v:
                    out.append(f'rope_parameters{"[" + lt + "]" if lt else ""}[{k}]: asked {v!r}, got {have!r}')
        elif got != want:
            out.append(f'{key}: asked {want!r}, got {got!r}')
    return out


def use_eager_experts(model):
    if hasattr(model, 'set_experts_implementation'):
        try:
            model.set_experts_implementation('eager')
        except Exception as e:  # noqa: BLE001 - models without experts may refuse
            return f'not set ({type(e).__name__}: {e})'
    return getattr(model.config, '_experts_implementation', None)


def load(path, device):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation='eager')
    experts = use_eager_experts(model)
    return model.to(device).eval(), experts


@torch.no_grad()
def probe_logits(model, device):
    x = torch.tensor([PROBE_IDS], dtype=torch.long, device=device)
    return model(input_ids=x).logits[0].float().cpu()


@torch.no_grad()
def perplexity(model, ids, device):
    nll = []
    for j in range(WINDOWS):
        x = torch.tensor([ids[SEQ * j: SEQ * j + SEQ]], dtype=torch.long, device=device)
        y = torch.tensor(ids[SEQ * j + 1: SEQ * j + SEQ + 1], dtype=torch.long, device=device)
        logp = torch.log_softmax(model(input_ids=x).logits[0].double(), dim=-1)
        nll.append(float(-logp.gather(-1, y[:, None]).sum()))
    return math.exp(sum(nll) / (SEQ * WINDOWS)), nll


def rope_state(model):
    """inv_freq (and its original) of every rotary module, to show which frequencies a pass used."""
    state = {}
    for name, module in model.named_modules():
        entry = {}
        for attr in dir(module):
            if attr.endswith('inv_freq') and isinstance(getattr(module, attr, None), torch.Tensor):
                entry[attr] = [round(float(v), 9) for v in getattr(module, attr).flatten().tolist()]
            elif attr.endswith('max_seq_len_cached') or attr.endswith('attention_scaling'):
                value = getattr(module, attr, None)
                if isinstance(value, (int, float)) or isinstance(value, torch.Tensor):
                    entry[attr] = float(value)
        if entry:
            state[name or '<root>'] = entry
    return state


def perturb_and_scale(model, noise):
    generator = torch.Generator().manual_seed(SEED + 1)
    touched = {'scaled_2d': 0, 'noised_1d': 0, 'kept': []}
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied parameters are yielded once
            if p.dim() == 2:
                p.mul_(4.0)
                touched['scaled_2d'] += 1
            elif p.dim() == 1 and noise > 0:
                p.add_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * noise)
                touched['noised_1d'] += 1
            else:
                touched['kept'].append(f'{name} {list(p.shape)}')
    return touched


def folder_bytes(path):
    return {f: os.path.getsize(os.path.join(path, f)) for f in sorted(os.listdir(path))}


def run_variant(spec, out_dir, ids, devices, noise):
    name = spec['name']
    dest = os.path.join(out_dir, name)
    diag = {'model_type': spec['model_type'], 'note': spec['note'], 'kwargs': spec['kwargs']}
    capture = Capture()
    tf_logger = logging.getLogger('transformers')
    tf_logger.addHandler(capture)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            t0 = time.perf_counter()
            cfg = AutoConfig.for_model(spec['model_type'], **copy.deepcopy(spec['kwargs']))
            diag['mismatches'] = applied_mismatches(cfg, spec['kwargs'])
            torch.manual_seed(SEED)
            model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, attn_implementation='eager')
            model.eval()
            diag['class'] = type(model).__name__
            diag['parameters'] = sum(p.numel() for p in model.parameters())
            diag['touched'] = perturb_and_scale(model, noise)
            use_eager_experts(model)
            in_memory = probe_logits(model, 'cpu')
            if os.path.exists(dest):
                shutil.rmtree(dest)
            try:
                model.save_pretrained(dest, safe_serialization=True)
            except TypeError:  # a transformers without the (always-on) flag
                model.save_pretrained(dest)
            del model
            diag['files'] = folder_bytes(dest)
            with open(os.path.join(dest, 'config.json')) as f:
                diag['saved_config'] = json.load(f)

            results = {}
            for device in devices:
                m, experts = load(dest, device)
                logits = probe_logits(m, device)
                probe_rope = rope_state(m)
                del m
                m, _ = load(dest, device)  # fresh: no dynamic-RoPE state from the probe
                ppl, window_nll = perplexity(m, ids, device)
                results[device] = {'logits': logits, 'ppl': ppl, 'window_nll': window_nll,
                                   'experts_implementation': experts,
                                   'rope_after_probe': probe_rope, 'rope_after_ppl': rope_state(m)}
                del m
            diag['seconds'] = round(time.perf_counter() - t0, 2)
        diag['warnings'] = sorted(set(capture.records + [f'{w.category.__name__}: {w.message}' for w in caught]))
    except Exception as e:  # noqa: BLE001 - a rejected variant is dropped, the rest go on
        diag['error'] = f'{type(e).__name__}: {e}'
        diag['traceback'] = traceback.format_exc()
        diag['warnings'] = sorted(set(capture.records))
        if os.path.exists(dest):
            shutil.rmtree(dest)
        return None, diag
    finally:
        tf_logger.removeHandler(capture)

    ref_device = devices[0]
    ref = results[ref_device]
    diag['reference_device'] = ref_device
    diag['reload_vs_in_memory_max_abs'] = float((results['cpu']['logits'] - in_memory).abs().max())
    for device, r in results.items():
        diag[device] = {'ppl': r['ppl'], 'window_nll': r['window_nll'],
                        'experts_implementation': r['experts_implementation'],
                        'rope_after_probe': r['rope_after_probe'], 'rope_after_ppl': r['rope_after_ppl']}
        if device != ref_device:
            diag[device]['logits_max_abs_vs_ref'] = float((r['logits'] - ref['logits']).abs().max())
            diag[device]['ppl_rel_vs_ref'] = abs(r['ppl'] - ref['ppl']) / ref['ppl']
    entry = {
        'model_type': diag['saved_config']['model_type'],
        'probe_ids': list(PROBE_IDS),
        'logits': [[round(float(v), 6) for v in row] for row in ref['logits'].tolist()],
        'ppl_2048': ref['ppl'],
    }
    return entry, diag


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--heldout', required=True, help='heldout.txt (only its first 2,049 bytes are read)')
    ap.add_argument('--out', required=True, help='folder for <name>/ checkpoints and reference.json')
    ap.add_argument('--diag', help='diagnostics JSON (warnings, CPU/CUDA differences, RoPE state)')
    ap.add_argument('--only', help='comma-separated variant names')
    ap.add_argument('--zero-biases', action='store_true', help='leave 1-D parameters as initialised')
    args = ap.parse_args()

    strict_fp32()
    with open(args.heldout, 'rb') as f:
        ids = list(f.read(TEXT_BYTES))
    if len(ids) != TEXT_BYTES:
        sys.exit(f'{args.heldout}: need {TEXT_BYTES} bytes, got {len(ids)}')
    devices = (['cuda'] if torch.cuda.is_available() else []) + ['cpu']
    wanted = set(args.only.split(',')) if args.only else None
    os.makedirs(args.out, exist_ok=True)
    env = {'torch': torch.__version__, 'transformers': transformers.__version__,
           'python': sys.version.split()[0], 'devices': devices,
           'gpu': torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
           'seed': SEED, 'noise_1d': 0.0 if args.zero_biases else 0.05}
    print(json.dumps(env), flush=True)

    models, diags, dropped = {}, {}, {}
    for spec in VARIANTS:
        if wanted and spec['name'] not in wanted:
            continue
        entry, diag = run_variant(spec, args.out, ids, devices, 0.0 if args.zero_biases else 0.05)
        diags[spec['name']] = diag
        if entry is None:
            dropped[spec['name']] = diag['error']
            print(f'DROPPED {spec["name"]}: {diag["error"]}', flush=True)
            continue
        models[spec['name']] = entry
        size = sum(diag['files'].values())
        other = [d for d in devices if d != diag['reference_device']]
        cmp = ', '.join(f'{d}: logits max|d| {diag[d]["logits_max_abs_vs_ref"]:.2e}, ppl rel {diag[d]["ppl_rel_vs_ref"]:.1e}'
                        for d in other)
        print(f'{spec["name"]:16s} {entry["model_type"]:12s} ppl {entry["ppl_2048"]:.4f}  {size / 1024:.0f} KiB  '
              f'{cmp}  mismatches {diag["mismatches"]}', flush=True)
        for w in diag['warnings']:
            print(f'    warn: {w[:300]}', flush=True)

    ref_path = os.path.join(args.out, 'reference.json')
    with open(ref_path, 'w') as f:
        json.dump({'protocol': PROTOCOL, 'models': models}, f)
    print(f'wrote {ref_path}: {len(models)} models, dropped {sorted(dropped)}', flush=True)
    if args.diag:
        with open(args.diag, 'w') as f:
            json.dump({'env': env, 'dropped': dropped, 'variants': diags}, f, indent=1)


if __name__ == '__main__':
    main()
