# GPU-machine driver for docs/FINETUNE.md (test tooling, not product code): runs
# python/train_factored_keys.py in one process for several exports and learning rates (the
# machine has no Node.js, so it does what `factored-keys finetune` does around the script:
# bytes tokens, an output folder holding the export's other files), then measures each result's
# perplexity on a separate text with the project's runtime template, reloaded from the folder.
#
#   python3 scripts/reference/finetune_sweep.py --work DIR --out DIR --train train.txt \
#       --heldout heldout.txt NAME=EXPORT_DIR ... [--lrs 1e-3,3e-3] [--steps 300]
#
# For each NAME it keeps the learning rate whose *training-text held-out slice* loss is lowest
# (never heldout.txt) and packs that folder's shards as OUT/NAME.tar; OUT/sweep.json has every
# run's events and heldout.txt perplexity.
import argparse
import contextlib
import io
import json
import math
import os
import shutil
import sys
import tarfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "python"))
import train_factored_keys as tfk  # noqa: E402


def tokens_file(text, path):
    import array

    with open(text, "rb") as f:
        data = f.read()
    ids = array.array("i", list(data))
    if sys.byteorder != "little":
        ids.byteswap()
    with open(path, "wb") as f:
        ids.tofile(f)
    return len(data)


def heldout_ppl(folder, text, seq, device):
    import torch
    import transformers

    rt = tfk.load_runtime()
    config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    model = rt.factored_class(config).from_pretrained(folder, config=config, local_files_only=True, dtype=torch.float32).to(device).eval()
    with open(text, "rb") as f:
        ids = torch.tensor(list(f.read()), dtype=torch.long)
    return math.exp(tfk.heldout_loss(model, ids, seq, 32, device, torch))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--train", required=True)
    ap.add_argument("--heldout", required=True)
    ap.add_argument("--lrs", default="1e-3,3e-3")
    ap.add_argument("--steps", default="300")
    ap.add_argument("exports", nargs="+")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    toks = os.path.join(a.work, "train.i32")
    tokens_file(a.train, toks)
    results = {"runs": []}
    for spec in a.exports:
        name, src = spec.split("=", 1)
        best = None
        base = {"name": name, "export": os.path.basename(src), "heldout_ppl_export": heldout_ppl(src, a.heldout, 256, "cuda")}
        for lr in a.lrs.split(","):
            out = os.path.join(a.work, "%s-lr%s" % (name, lr))
            shutil.rmtree(out, ignore_errors=True)
            os.makedirs(out)
            for f in os.listdir(src):
                if not f.endswith(".safetensors"):
                    shutil.copy(os.path.join(src, f), os.path.join(out, f))
            buf = io.StringIO()
            t0 = time.time()
            with contextlib.redirect_stdout(buf):
                try:
                    rc = tfk.main(["train", "--checkpoint", src, "--tokens", toks, "--out", out, "--steps", a.steps, "--lr", lr])
                except tfk.Failure as e:
                    tfk.emit("error", message=str(e))
                    rc = 2
            wall = time.time() - t0
            events = [json.loads(l) for l in buf.getvalue().splitlines() if l.strip()]
            done = next((e for e in events if e["event"] == "done"), None)
            run = dict(base, lr=float(lr), rc=rc, wall_s=round(wall, 2), events=[e for e in events if e["event"] != "step"] + [e for e in events if e["event"] == "step"][-3:])
            if done:
                run["heldout_ppl_finetuned"] = heldout_ppl(out, a.heldout, 256, "cuda")
                if best is None or done["after_loss"] < best[1]:
                    best = (out, done["after_loss"], float(lr))
            print(json.dumps({k: v for k, v in run.items() if k != "events"}), flush=True)
            results["runs"].append(run)
            with open(os.path.join(a.out, "sweep.json"), "w") as f:  # after every run: a cut-short call keeps what ran
                json.dump(results, f, indent=1)
        if best:
            results.setdefault("chosen", {})[name] = best[2]
            with tarfile.open(os.path.join(a.out, name + ".tar"), "w") as tar:
                for f in sorted(os.listdir(best[0])):
                    if f.endswith(".safetensors"):
                        tar.add(os.path.join(best[0], f), arcname=f)
    with open(os.path.join(a.out, "sweep.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
