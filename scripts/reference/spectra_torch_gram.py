#!/usr/bin/env python3
"""The best PyTorch paths for the spectrum benchmark (run on the GPU machine; test tooling only).

Every key and query head's singular values of a safetensors checkpoint, timed three ways on CUDA,
each from the checkpoint's files (page cache as the caller left it) to the spectra on the host:

- ``gram``: the way an experienced PyTorch user writes it (issue 16's 1.18 s): per layer
  ``safe_open(...).get_tensor`` of k_proj and q_proj, heads stacked, moved to the GPU in bf16,
  widened there, Gram ``x @ x.mT`` in float32 (TF32 off), batched ``torch.linalg.eigvalsh``,
  sigma = sqrt(max(lambda, 0)).
- ``gram-tuned``: the same arithmetic with the host side tuned: the shards ``mmap``-ed, each
  layer's rows copied by ``torch`` into one of two pinned staging buffers (multi-threaded copy),
  copied to the device on a side stream without blocking (layer l+1 crosses while layer l
  computes), one batched ``eigvalsh`` over all heads at the end.
- ``gram-tuned-cpu-eig``: as ``gram-tuned``, but the Grams come back to the host for one batched
  float64 ``eigvalsh`` there (LAPACK on all cores; cuSOLVER handles a batch of 128 x 128
  problems one by one).
- ``svdvals``: ``torch.linalg.svdvals`` on the float32 heads per layer (for reference).

Also checks each path, and optionally an ``analyze --json`` output, against float64 ``svdvals``
on the CPU for some layers: max |sigma - sigma_ref| / sigma_max(head).

Usage: python3 spectra_torch_gram.py <checkpoint dir> [--repeats N] [--json out.json]
       [--check analyze.json] [--layers 0,15,31]
"""
import argparse
import json
import mmap
import os
import struct
import threading
import time

import torch
from safetensors import safe_open


def describe(ckpt):
    cfg = json.load(open(os.path.join(ckpt, 'config.json')))
    index_path = os.path.join(ckpt, 'model.safetensors.index.json')
    if os.path.exists(index_path):
        weight_map = json.load(open(index_path))['weight_map']
    else:
        only = [f for f in os.listdir(ckpt) if f.endswith('.safetensors')][0]
        weight_map = None, only
    hd = cfg.get('head_dim') or cfg['hidden_size'] // cfg['num_attention_heads']
    return cfg, weight_map, hd


def names(layer):
    return [f'model.layers.{layer}.self_attn.{p}.weight' for p in ('k_proj', 'q_proj')]


def shard_of(weight_map, name):
    return weight_map[name] if isinstance(weight_map, dict) else weight_map[1]


def spectra_gram(ckpt):
    """The experienced user's version."""
    cfg, weight_map, hd = describe(ckpt)
    handles = {}
    out = []
    for layer in range(cfg['num_hidden_layers']):
        mats = []
        for name in names(layer):
            shard = shard_of(weight_map, name)
            if shard not in handles:
                handles[shard] = safe_open(os.path.join(ckpt, shard), framework='pt', device='cpu')
            w = handles[shard].get_tensor(name)
            mats.append(w.reshape(-1, hd, w.shape[1]))
        x = torch.cat(mats).to('cuda').float()
        g = x @ x.mT
        out.append(torch.linalg.eigvalsh(g).clamp_min(0).sqrt().flip(-1))
    return torch.cat(out).cpu()


class Shard:
    """A safetensors file mapped into memory; tensors as zero-copy CPU views."""

    def __init__(self, path):
        self.file = open(path, 'rb')
        self.map = mmap.mmap(self.file.fileno(), 0, prot=mmap.PROT_READ)
        n = struct.unpack('<Q', self.map[:8])[0]
        self.header = json.loads(self.map[8:8 + n])
        self.data = 8 + n
        self.base = torch.frombuffer(self.map, dtype=torch.uint8)

    def view(self, name):
        t = self.header[name]
        a, b = t['data_offsets']
        assert t['dtype'] == 'BF16'
        return self.base[self.data + a:self.data + b].view(torch.bfloat16).view(*t['shape'])


def spectra_gram_tuned(ckpt, eig_on_cpu=False):
    cfg, weight_map, hd = describe(ckpt)
    shards = {}

    def view(name):
        s = shard_of(weight_map, name)
        if s not in shards:
            shards[s] = Shard(os.path.join(ckpt, s))
        return shards[s].view(name)

    layers = cfg['num_hidden_layers']
    first = [view(n) for n in names(0)]
    rows = sum(v.shape[0] for v in first)
    d = first[0].shape[1]
    staging = [torch.empty((rows, d), dtype=torch.bfloat16, pin_memory=True) for _ in range(2)]
    device_in = [torch.empty((rows, d), dtype=torch.bfloat16, device='cuda') for _ in range(2)]
    copy_stream = torch.cuda.Stream()
    copied = [torch.cuda.Event() for _ in range(2)]
    consumed = [torch.cuda.Event() for _ in range(2)]
    grams = torch.empty((layers, rows // hd, hd, hd), dtype=torch.float32, device='cuda')

    def stage(layer):
        buf = staging[layer % 2]
        at = 0
        for name in names(layer):
            v = view(name)
            buf[at:at + v.shape[0]].copy_(v)
            at += v.shape[0]

    # the host copy of layer l+1 runs in a thread (torch's copy releases the GIL) while the GPU
    # computes layer l
    pending = None
    stage(0)
    for layer in range(layers):
        slot = layer % 2
        if pending is not None:
            pending.join()
        with torch.cuda.stream(copy_stream):
            copy_stream.wait_event(consumed[slot])
            device_in[slot].copy_(staging[slot], non_blocking=True)
            copied[slot].record(copy_stream)
        if layer + 1 < layers:
            # staging[(layer+1)%2] is free once its previous H2D copy (layer-1) finished
            copied[(layer + 1) % 2].synchronize()
            pending = threading.Thread(target=stage, args=(layer + 1,))
            pending.start()
        torch.cuda.current_stream().wait_event(copied[slot])
        x = device_in[slot].view(-1, hd, d).float()
        consumed[slot].record()
        torch.matmul(x, x.mT, out=grams[layer])
    if eig_on_cpu:
        # cuSOLVER loops over a batch of 128 x 128 problems; LAPACK on the host's cores is faster
        g = grams.view(-1, hd, hd).cpu().double()
        return torch.linalg.eigvalsh(g).clamp_min(0).sqrt().flip(-1).float()
    s = torch.linalg.eigvalsh(grams.view(-1, hd, hd)).clamp_min(0).sqrt().flip(-1)
    return s.cpu()


def spectra_svdvals(ckpt):
    cfg, weight_map, hd = describe(ckpt)
    handles = {}
    out = []
    for layer in range(cfg['num_hidden_layers']):
        mats = []
        for name in names(layer):
            shard = shard_of(weight_map, name)
            if shard not in handles:
                handles[shard] = safe_open(os.path.join(ckpt, shard), framework='pt', device='cpu')
            w = handles[shard].get_tensor(name)
            mats.append(w.reshape(-1, hd, w.shape[1]))
        out.append(torch.linalg.svdvals(torch.cat(mats).to('cuda').float()))
    return torch.cat(out).cpu()


def reference(ckpt, layers):
    """float64 svdvals on the CPU of the given layers: {layer: tensor [heads, hd]} (keys first)."""
    cfg, weight_map, hd = describe(ckpt)
    ref = {}
    for layer in layers:
        mats = []
        for name in names(layer):
            with safe_open(os.path.join(ckpt, shard_of(weight_map, name)), framework='pt', device='cpu') as f:
                w = f.get_tensor(name).to(torch.float64)
            mats.append(w.reshape(-1, hd, w.shape[1]))
        ref[layer] = torch.linalg.svdvals(torch.cat(mats))
    return ref


def worst_error(values_by_layer, ref):
    worst = 0.0
    for layer, r in ref.items():
        mine = values_by_layer(layer)
        err = (mine.to(torch.float64) - r).abs().amax(dim=1) / r[:, 0]
        worst = max(worst, err.max().item())
    return worst


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('ckpt')
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--json')
    ap.add_argument('--check', help='analyze --json output to check against float64')
    ap.add_argument('--layers', default='0,15,31')
    ap.add_argument('--paths', default='gram,gram-tuned,svdvals')
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    print(f'torch {torch.__version__}, {torch.cuda.get_device_name(0)}, cpu threads {torch.get_num_threads()}', flush=True)
    # CUDA context, cuBLAS and cuSOLVER handles: created once, as in any session that already ran
    w = torch.randn(8, 128, 4096, device='cuda')
    torch.linalg.eigvalsh(w @ w.mT)
    torch.linalg.svdvals(w)
    torch.cuda.synchronize()
    cfg, _, hd = describe(a.ckpt)
    layers = [int(x) for x in a.layers.split(',') if x != '']
    ref = reference(a.ckpt, layers)
    per_layer = next(iter(ref.values())).shape[0]
    fns = {'gram': spectra_gram, 'gram-tuned': spectra_gram_tuned, 'gram-tuned-cpu-eig': lambda c: spectra_gram_tuned(c, eig_on_cpu=True), 'svdvals': spectra_svdvals}
    results = {'torch': torch.__version__, 'device': torch.cuda.get_device_name(0), 'paths': {}}
    for name in a.paths.split(','):
        fn = fns[name]
        times = []
        s = None
        try:
            for _ in range(a.repeats):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                s = fn(a.ckpt)
                times.append(time.perf_counter() - t0)
        except Exception as e:  # one path failing must not lose the others' numbers
            print(f'pytorch {name}: failed: {e!r}', flush=True)
            results['paths'][name] = {'error': repr(e)}
            continue
        err = worst_error(lambda layer: s[layer * per_layer:(layer + 1) * per_layer], ref)
        results['paths'][name] = {'seconds': times, 'heads': s.shape[0], 'maxErrVsF64': err}
        print(f'pytorch {name}: {s.shape[0]} heads, min {min(times):.3f} s, runs {", ".join(f"{t:.3f}" for t in times)}; '
              f'max |err|/sigma_max vs float64 (layers {layers}) {err:.2e}', flush=True)
    if a.check:
        ours = json.load(open(a.check))
        by = {}
        for h in ours['heads']:
            by.setdefault(h['layer'], {})[(0 if h['kind'] == 'key' else 1, h['head'])] = h['singular_values']
        err = worst_error(lambda layer: torch.tensor([by[layer][k] for k in sorted(by[layer])], dtype=torch.float64), ref)
        results['analyze'] = {'file': a.check, 'maxErrVsF64': err, 'seconds': ours.get('seconds'), 'backend': ours.get('backend')}
        print(f'analyze ({ours.get("backend")}, {ours.get("seconds"):.3f} s) vs float64 svdvals, layers {layers}: max |err|/sigma_max = {err:.2e}', flush=True)
    if a.json:
        with open(a.json, 'w') as f:
            json.dump(results, f, indent=1)


if __name__ == '__main__':
    main()
