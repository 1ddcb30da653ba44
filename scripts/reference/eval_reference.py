#!/usr/bin/env python3
"""Independent PyTorch/transformers reference for `factored-keys eval` (test tooling, not product code).

Loads the trained fixtures with transformers' AutoModelForCausalLM (float32, eager attention) and
computes perplexity on heldout.txt exactly per the evaluation protocol:
  ids = bytes of the text; windows j = 0 .. floor((N-1)/seq)-1; window j feeds ids[j*seq : j*seq+seq]
  and predicts ids[j*seq+1 : j*seq+seq+1]; every window starts from empty context;
  PPL = exp(mean NLL over all predicted tokens), accumulated in float64.

It also evaluates the two key factorizations at uniform ranks, computed here from the original weights
(float64 math) and applied as the full-shape rank-r model: each KV head's key projection (and bias)
W_K is replaced by W_K . P, which gives the same attention scores as the thin-key export
(absorbed queries without RoPE; latent c = x.A up-projected by B before RoPE with RoPE).
  key-svd:     P = V_r V_r^T, V_r = top-r right singular vectors of W_K (d_model x head_dim).
  qk-svd:      inputs get a constant-1 feature so biases join the weights: Wk = [W_K; b_K], Wq_i = [W_Qi; b_Qi].
               Thin QR Wk = Q R; E_r = top-r eigenvectors of R (sum_i Wq_i^T Wq_i) R^T over the query
               heads i of the KV head; keys k -> k R^-1 E_r, queries q -> q R^T E_r, i.e. P = R^-1 E_r E_r^T R.
  key-svd-aug: like key-svd but V_r from the SVD of [W_K; b_K] (only differs on models with key biases).

Usage (GPU machine): python3 eval_reference.py --fixtures DIR --out FILE.json [--seq 256] [--device cuda]
test/reference/eval/eval_reference.json was produced on the H200 machine with
  python3 scripts/reference/eval_reference.py --fixtures <copy of ../shared/fixtures> --out eval_reference.json
(the file records the torch/transformers versions and device it ran with).
"""
import argparse
import json
import math
import os
import time

import numpy as np
import torch
from transformers import AutoModelForCausalLM

RANKS = [8, 16, 32]
LOGIT_WINDOWS = [0, 200]
LOGIT_POSITIONS = [0, 1, 17, 100, 255]
FACTORED_LOGIT_POSITIONS = [0, 5, 255]


def load(path, device):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation='eager')
    return model.to(device).eval()


def windows(ids, seq):
    count = (len(ids) - 1) // seq
    return [(ids[j * seq: j * seq + seq], ids[j * seq + 1: j * seq + seq + 1]) for j in range(count)]


@torch.no_grad()
def evaluate(model, ids, seq, device, batch=64):
    """Per-window NLL sums (float64) and selected logits."""
    wins = windows(ids, seq)
    nll = []
    logits_keep = {}
    for start in range(0, len(wins), batch):
        chunk = wins[start:start + batch]
        x = torch.tensor([w[0] for w in chunk], dtype=torch.long, device=device)
        y = torch.tensor([w[1] for w in chunk], dtype=torch.long, device=device)
        logits = model(input_ids=x).logits  # [b, seq, vocab] float32
        logp = torch.log_softmax(logits.double(), dim=-1)
        picked = logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)  # [b, seq]
        nll.extend((-picked.sum(dim=-1)).cpu().tolist())
        for k in range(len(chunk)):
            j = start + k
            if j in LOGIT_WINDOWS:
                logits_keep[j] = logits[k].float().cpu().numpy()
    total = float(sum(nll))
    tokens = len(wins) * seq
    return {'tokens': tokens, 'windows': len(wins), 'perplexity': math.exp(total / tokens), 'window_nll': nll}, logits_keep


class Heads:
    """Float64 views of one layer's per-head Q/K weights in the x.W orientation, with write-back for keys."""

    def __init__(self, model, arch, layer):
        cfg = model.config
        self.arch = arch
        if arch == 'gpt2':
            attn = model.transformer.h[layer].attn
            self.hidden = cfg.n_embd
            self.nq = self.nkv = cfg.n_head
            self.hd = self.hidden // self.nq
            self.w = attn.c_attn.weight  # Conv1D [in, 3*hidden]: columns q | k | v
            self.b = attn.c_attn.bias
        else:
            attn = model.model.layers[layer].self_attn
            self.hidden = cfg.hidden_size
            self.nq = cfg.num_attention_heads
            self.nkv = cfg.num_key_value_heads
            self.hd = getattr(cfg, 'head_dim', None) or self.hidden // self.nq
            self.q = attn.q_proj
            self.k = attn.k_proj

    def query_heads_of(self, g):
        per = self.nq // self.nkv
        return [h for h in range(self.nq) if h // per == g]

    def wq(self, h):
        if self.arch == 'gpt2':
            c0 = h * self.hd
            return self.w[:, c0:c0 + self.hd].detach().double().cpu().numpy(), self.b[c0:c0 + self.hd].detach().double().cpu().numpy()
        r0 = h * self.hd
        w = self.q.weight[r0:r0 + self.hd, :].detach().double().cpu().numpy().T
        b = self.q.bias[r0:r0 + self.hd].detach().double().cpu().numpy() if self.q.bias is not None else None
        return w, b

    def wk(self, g):
        if self.arch == 'gpt2':
            c0 = self.hidden + g * self.hd
            return self.w[:, c0:c0 + self.hd].detach().double().cpu().numpy(), self.b[c0:c0 + self.hd].detach().double().cpu().numpy()
        r0 = g * self.hd
        w = self.k.weight[r0:r0 + self.hd, :].detach().double().cpu().numpy().T
        b = self.k.bias[r0:r0 + self.hd].detach().double().cpu().numpy() if self.k.bias is not None else None
        return w, b

    @torch.no_grad()
    def set_wk(self, g, w, b):
        if self.arch == 'gpt2':
            c0 = self.hidden + g * self.hd
            self.w[:, c0:c0 + self.hd] = torch.from_numpy(w).to(self.w)
            self.b[c0:c0 + self.hd] = torch.from_numpy(b).to(self.b)
            return
        r0 = g * self.hd
        self.k.weight[r0:r0 + self.hd, :] = torch.from_numpy(w.T.copy()).to(self.k.weight)
        if b is not None:
            self.k.bias[r0:r0 + self.hd] = torch.from_numpy(b).to(self.k.bias)


def augment(w, b):
    """[W; b]: a constant-1 input feature so the bias joins the weights."""
    return np.vstack([w, b[None, :]]) if b is not None else w


def projector(method, heads, g, r):
    """The head_dim x head_dim map P with rank-r keys k -> k . P (full-shape equivalent of the export)."""
    wk, bk = heads.wk(g)
    hd = wk.shape[1]
    if method in ('key-svd', 'key-svd-aug'):
        m = augment(wk, bk) if method == 'key-svd-aug' else wk
        _, _, vt = np.linalg.svd(m, full_matrices=False)
        v = vt[:r].T
        return v @ v.T
    assert method == 'qk-svd'
    k_aug = augment(wk, bk)
    _, rr = np.linalg.qr(k_aug)  # k_aug = Q R, R head_dim x head_dim
    gram = np.zeros((hd, hd))
    for h in heads.query_heads_of(g):
        wq, bq = heads.wq(h)
        q_aug = augment(wq, bq)
        gram += q_aug.T @ q_aug
    m = rr @ gram @ rr.T
    vals, vecs = np.linalg.eigh((m + m.T) / 2)
    e = vecs[:, np.argsort(vals)[::-1][:r]]
    return np.linalg.solve(rr, e) @ e.T @ rr  # R^-1 E E^T R


def factor_in_place(model, arch, method, r):
    layers = model.config.n_layer if arch == 'gpt2' else model.config.num_hidden_layers
    for layer in range(layers):
        heads = Heads(model, arch, layer)
        new = []
        for g in range(heads.nkv):
            p = projector(method, heads, g, r)
            wk, bk = heads.wk(g)
            new.append((g, wk @ p, None if bk is None else bk @ p))
        for g, w, b in new:  # write after all projectors read the original weights
            heads.set_wk(g, w, b)


def round_list(a, digits=7):
    return [float(f'{v:.{digits}g}') for v in np.asarray(a).ravel().tolist()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--fixtures', required=True)
    ap.add_argument('--out', required=True)
    ap.add_argument('--seq', type=int, default=256)
    ap.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision('highest')
    with open(os.path.join(args.fixtures, 'heldout.txt'), 'rb') as f:
        ids = list(f.read())
    out = {
        'generator': 'scripts/reference/eval_reference.py',
        'torch': torch.__version__,
        'transformers': __import__('transformers').__version__,
        'device': args.device,
        'text': 'heldout.txt',
        'text_bytes': len(ids),
        'tokenizer': 'bytes',
        'seq': args.seq,
        'logit_windows': LOGIT_WINDOWS,
        'logit_positions': LOGIT_POSITIONS,
        'factored_logit_positions': FACTORED_LOGIT_POSITIONS,
        'models': {},
    }
    for name, arch, methods in [('gpt2-bytes', 'gpt2', ['key-svd', 'qk-svd', 'key-svd-aug']), ('mistral-bytes', 'mistral', ['key-svd', 'qk-svd'])]:
        path = os.path.join(args.fixtures, name)
        t0 = time.time()
        model = load(path, args.device)
        res, logits = evaluate(model, ids, args.seq, args.device)
        entry = {'original': res, 'logits': {str(j): {str(p): round_list(logits[j][p]) for p in LOGIT_POSITIONS} for j in LOGIT_WINDOWS}, 'factored': {}}
        print(f'{name} original ppl={res["perplexity"]:.6f} ({time.time() - t0:.1f}s)', flush=True)
        for method in methods:
            for r in RANKS:
                model = load(path, args.device)
                factor_in_place(model, arch, method, r)
                res, logits = evaluate(model, ids, args.seq, args.device)
                res['logits_window0'] = {str(p): round_list(logits[0][p]) for p in FACTORED_LOGIT_POSITIONS}
                entry['factored'][f'{method}/{r}'] = res
                print(f'{name} {method} r={r} ppl={res["perplexity"]:.6f}', flush=True)
        out['models'][name] = entry
    # Short logits checks on random-init layout fixtures (biases, explicit head_dim, tied embeddings).
    probe = ids[:64]
    out['layout_logits'] = {'input': probe, 'positions': [0, 31, 63], 'models': {}}
    for name in ['layouts/llama', 'layouts/qwen2', 'stories260K']:
        path = os.path.join(args.fixtures, name)
        if not os.path.isdir(path):
            continue
        model = load(path, args.device)
        with torch.no_grad():
            lg = model(input_ids=torch.tensor([probe], device=args.device)).logits[0].float().cpu().numpy()
        out['layout_logits']['models'][name] = {str(p): round_list(lg[p]) for p in [0, 31, 63]}
    with open(args.out, 'w') as f:
        json.dump(out, f)
    print('wrote', args.out)


if __name__ == '__main__':
    main()
