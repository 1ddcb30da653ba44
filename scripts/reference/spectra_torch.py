#!/usr/bin/env python3
"""PyTorch comparison for the spectrum benchmark (run on the GPU machine; test tooling only).

1. Times the way a model engineer would do it in PyTorch: safetensors `safe_open` per shard,
   every layer's q_proj/k_proj reshaped to heads, `torch.linalg.svdvals` batched per layer in
   float32, on CUDA and on the CPU (all threads).
2. Optionally checks an `analyze --json` output against float64 `svdvals` for some layers:
   max |sigma_ours - sigma_ref| / sigma_max(head).

Usage: python3 spectra_torch.py <checkpoint dir> [analyze.json] [layers to check, e.g. 0,31]
"""
import json
import os
import sys
import time

import torch
from safetensors import safe_open


def layer_blocks(ckpt):
    cfg = json.load(open(os.path.join(ckpt, 'config.json')))
    index = json.load(open(os.path.join(ckpt, 'model.safetensors.index.json')))['weight_map']
    hd = cfg.get('head_dim') or cfg['hidden_size'] // cfg['num_attention_heads']
    return cfg, index, hd


def run(ckpt, device):
    cfg, index, hd = layer_blocks(ckpt)
    handles = {}
    t0 = time.perf_counter()
    out = 0
    for l in range(cfg['num_hidden_layers']):
        mats = []
        for kind in ('k_proj', 'q_proj'):
            name = f'model.layers.{l}.self_attn.{kind}.weight'
            shard = index[name]
            if shard not in handles:
                handles[shard] = safe_open(os.path.join(ckpt, shard), framework='pt', device='cpu')
            w = handles[shard].get_tensor(name)
            mats.append(w.reshape(-1, hd, w.shape[1]))
        x = torch.cat(mats).to(device=device, dtype=torch.float32)
        s = torch.linalg.svdvals(x)
        out += s.shape[0]
        s.cpu()
    if device == 'cuda':
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def check(ckpt, analyze_json, layers):
    cfg, index, hd = layer_blocks(ckpt)
    ours = json.load(open(analyze_json))
    worst = 0.0
    checked = 0
    for l in layers:
        for kind, proj in (('key', 'k_proj'), ('query', 'q_proj')):
            name = f'model.layers.{l}.self_attn.{proj}.weight'
            with safe_open(os.path.join(ckpt, index[name]), framework='pt', device='cpu') as f:
                w = f.get_tensor(name).to(torch.float64)
            ref = torch.linalg.svdvals(w.reshape(-1, hd, w.shape[1]))
            for h in range(ref.shape[0]):
                mine = next(x for x in ours['heads'] if x['layer'] == l and x['kind'] == kind and x['head'] == h)
                r = ref[h]
                err = (torch.tensor(mine['singular_values'], dtype=torch.float64) - r).abs().max().item() / r[0].item()
                worst = max(worst, err)
                checked += 1
    return worst, checked


def main():
    ckpt = sys.argv[1]
    print(f'torch {torch.__version__}, cuda {torch.cuda.is_available()}, cpu threads {torch.get_num_threads()}')
    devices = [] if os.environ.get('SKIP_TIMING') else (['cuda'] if torch.cuda.is_available() else []) + ['cpu']
    for device in devices:
        times = []
        for _ in range(3):
            t, n = run(ckpt, device)
            times.append(t)
        print(f'pytorch svdvals fp32 {device}: {n} heads, min {min(times):.2f} s, all {", ".join(f"{t:.2f}" for t in times)}')
    if len(sys.argv) > 2:
        layers = [int(x) for x in (sys.argv[3] if len(sys.argv) > 3 else '0').split(',')]
        worst, checked = check(ckpt, sys.argv[2], layers)
        print(f'analyze vs float64 svdvals: {checked} heads of layers {layers}, max |err|/sigma_max = {worst:.2e}')


if __name__ == '__main__':
    main()
