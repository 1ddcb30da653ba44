#!/usr/bin/env python3
"""Independent float64 reference for the spectrum engine.

For every fixture checkpoint, reads the safetensors files with plain struct/json + numpy (bf16
widened by a 16-bit shift), slices every layer's key and query heads following each
architecture's Hugging Face layout (written here from the model definitions, not from the
TypeScript adapters), and writes the singular values from LAPACK's SVD (numpy.linalg.svd,
float64) to test/reference/spectra/<fixture>.json.

Usage: python3 scripts/reference/spectra.py [fixtures_dir] [out_dir] [name_prefix]
(test/fixtures/variants is run with its own prefix: spectra.py test/fixtures/variants test/reference/spectra variants__)
"""
import glob
import json
import os
import struct
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, '..', 'shared', 'fixtures')
OUT = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, 'test', 'reference', 'spectra')
PREFIX = sys.argv[3] if len(sys.argv) > 3 else ''

NP_DTYPES = {'F32': np.float32, 'F64': np.float64, 'F16': np.float16}


def load_tensors(folder):
    tensors = {}
    for path in sorted(glob.glob(os.path.join(folder, '*.safetensors'))):
        with open(path, 'rb') as f:
            (n,) = struct.unpack('<Q', f.read(8))
            header = json.loads(f.read(n))
            base = 8 + n
            for name, info in header.items():
                if name == '__metadata__':
                    continue
                start, end = info['data_offsets']
                f.seek(base + start)
                raw = f.read(end - start)
                if info['dtype'] == 'BF16':
                    bits = np.frombuffer(raw, dtype='<u2').astype(np.uint32) << 16
                    arr = bits.view(np.float32)
                else:
                    arr = np.frombuffer(raw, dtype=np.dtype(NP_DTYPES[info['dtype']]).newbyteorder('<'))
                tensors[name] = arr.astype(np.float64).reshape(info['shape'])
    return tensors


def heads(cfg, t):
    """Yields (layer, kind, head, W) with W = d_model x head_dim, head output = x @ W."""
    mt = cfg['model_type']
    if mt == 'gpt2':
        d, H = cfg['n_embd'], cfg['n_head']
        hd = d // H
        for l in range(cfg['n_layer']):
            w = t[f'transformer.h.{l}.attn.c_attn.weight']  # Conv1D [in, 3*out]: q | k | v columns
            for h in range(H):
                yield l, 'key', h, w[:, d + h * hd: d + (h + 1) * hd]
            for h in range(H):
                yield l, 'query', h, w[:, h * hd:(h + 1) * hd]
        return
    if mt in ('gpt_bigcode', 'gptj'):
        d, H = cfg['n_embd'], cfg['n_head']
        hd = d // H
        for l in range(cfg['n_layer']):
            if mt == 'gptj':  # separate [out, in] projections; multi-head whatever num_key_value_heads says
                q, k = t[f'transformer.h.{l}.attn.q_proj.weight'], t[f'transformer.h.{l}.attn.k_proj.weight']
                ks = [k[g * hd:(g + 1) * hd] for g in range(H)]
                qs = [q[h * hd:(h + 1) * hd] for h in range(H)]
            else:
                w = t[f'transformer.h.{l}.attn.c_attn.weight']  # nn.Linear [out, in]
                if cfg.get('multi_query', True):  # rows: q heads | one k | one v
                    ks = [w[d:d + hd]]
                    qs = [w[h * hd:(h + 1) * hd] for h in range(H)]
                else:  # rows per head: [q_h | k_h | v_h]
                    ks = [w[h * 3 * hd + hd:h * 3 * hd + 2 * hd] for h in range(H)]
                    qs = [w[h * 3 * hd:h * 3 * hd + hd] for h in range(H)]
            for g, k in enumerate(ks):
                yield l, 'key', g, k.T
            for h, q in enumerate(qs):
                yield l, 'query', h, q.T
        return
    if mt.startswith('deepseek'):
        return  # multi-head latent attention: no per-head key projection
    H = cfg['num_attention_heads']
    d = cfg['hidden_size']
    hd = cfg.get('head_dim') or d // H
    L = cfg['num_hidden_layers']
    if mt == 'gpt_neox':
        for l in range(L):
            w = t[f'gpt_neox.layers.{l}.attention.query_key_value.weight']  # per head [q | k | v] rows
            for h in range(H):
                yield l, 'key', h, w[h * 3 * hd + hd: h * 3 * hd + 2 * hd].T
            for h in range(H):
                yield l, 'query', h, w[h * 3 * hd: h * 3 * hd + hd].T
        return
    if mt == 'falcon':
        kv = 1 if cfg.get('multi_query') else H
        for l in range(L):
            w = t[f'transformer.h.{l}.self_attention.query_key_value.weight']  # [q heads | k | v] rows
            for g in range(kv):
                yield l, 'key', g, w[H * hd + g * hd: H * hd + (g + 1) * hd].T
            for h in range(H):
                yield l, 'query', h, w[h * hd:(h + 1) * hd].T
        return
    kv = cfg.get('num_key_value_heads') or H
    for l in range(L):
        p = f'model.layers.{l}.self_attn.'
        if mt == 'phi3':
            w = t[p + 'qkv_proj.weight']
            q, k = w[:H * hd], w[H * hd:(H + kv) * hd]
        else:
            q, k = t[p + 'q_proj.weight'], t[p + 'k_proj.weight']
        for g in range(kv):
            yield l, 'key', g, k[g * hd:(g + 1) * hd].T
        for h in range(H):
            yield l, 'query', h, q[h * hd:(h + 1) * hd].T


def main():
    os.makedirs(OUT, exist_ok=True)
    folders = sorted(os.path.dirname(c) for c in glob.glob(os.path.join(FIXTURES, '**', 'config.json'), recursive=True))
    for folder in folders:
        cfg = json.load(open(os.path.join(folder, 'config.json')))
        name = PREFIX + os.path.relpath(folder, FIXTURES).replace(os.sep, '__')
        t = load_tensors(folder)
        out = []
        if cfg['model_type'].startswith('deepseek'):
            continue
        for l, kind, h, w in heads(cfg, t):
            sv = np.linalg.svd(w, compute_uv=False)
            out.append({'layer': l, 'kind': kind, 'head': h, 'singular_values': [float(x) for x in sv]})
        with open(os.path.join(OUT, name + '.json'), 'w') as f:
            json.dump({'fixture': os.path.relpath(folder, FIXTURES), 'generator': 'scripts/reference/spectra.py (numpy %s, float64 LAPACK svd)' % np.__version__, 'heads': out}, f)
        print(f'{name}: {len(out)} heads')


if __name__ == '__main__':
    main()
