"""PyTorch reference for evaluation throughput (issue 14): the perplexity protocol (consecutive
windows of `seq` tokens, each predicting its next token) over the bytes of a text file with a
checkpoint loaded by transformers, on the GPU, per dtype. Prints one JSON line per dtype.

    python3 scripts/reference/eval_speed.py <checkpoint> <heldout.txt> [--seq 256] [--batch 16]
"""
import argparse, json, math, time
import torch
from transformers import AutoModelForCausalLM

ap = argparse.ArgumentParser()
ap.add_argument("checkpoint")
ap.add_argument("text")
ap.add_argument("--seq", type=int, default=256)
ap.add_argument("--batch", type=int, default=16)
ap.add_argument("--dtypes", default="bfloat16,float32")
a = ap.parse_args()
ids = torch.tensor(list(open(a.text, "rb").read()), dtype=torch.long)
windows = (len(ids) - 1) // a.seq
torch.backends.cuda.matmul.allow_tf32 = False
for name in a.dtypes.split(","):
    dtype = getattr(torch, name)
    t = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(a.checkpoint, dtype=dtype, attn_implementation="sdpa").cuda().eval()
    load = time.perf_counter() - t
    total, count = 0.0, 0
    torch.cuda.synchronize()
    t = time.perf_counter()
    with torch.no_grad():
        for w in range(0, windows, a.batch):
            n = min(a.batch, windows - w)
            x = torch.stack([ids[(w + i) * a.seq:(w + i) * a.seq + a.seq] for i in range(n)]).cuda()
            y = torch.stack([ids[(w + i) * a.seq + 1:(w + i) * a.seq + a.seq + 1] for i in range(n)]).cuda()
            logits = model(x).logits.float()
            nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum")
            total += nll.item()
            count += n * a.seq
    torch.cuda.synchronize()
    s = time.perf_counter() - t
    print(json.dumps({"torch": name, "tokens": count, "seconds": s, "tokensPerSecond": count / s, "perplexity": math.exp(total / count), "loadSeconds": load, "batch": a.batch, "maxMemoryGiB": torch.cuda.max_memory_allocated() / 2**30}), flush=True)
    del model
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
