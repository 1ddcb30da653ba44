# Builds test/reference/finetune/finetune_reference.json (stdlib only, runs here without torch)
# from the GPU run's sweep.json (scripts/reference/finetune_sweep.py), our own `eval --json` of
# each brought-back fine-tuned checkpoint (lines "NAME {json}"), and those folders' shards.
#
#   python3 scripts/reference/finetune_reference.py --sweep sweep.json --ours ft_eval.txt \
#       --original-ours orig_eval.txt --folders .fkft --out test/reference/finetune/finetune_reference.json
import argparse
import hashlib
import json
import os


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def lines(path):
    out = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                name, js = line.split(" ", 1)
                out[name] = json.loads(js)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sweep", required=True)
    ap.add_argument("--ours", required=True)
    ap.add_argument("--original-ours", required=True)
    ap.add_argument("--folders", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    sweep = json.load(open(a.sweep))
    ours = lines(a.ours)
    base = lines(a.original_ours)
    runs = []
    start = None
    for r in sweep["runs"]:
        ev = {e["event"]: e for e in r["events"] if e["event"] in ("start", "done")}
        start = start or ev.get("start")
        done = ev.get("done", {})
        runs.append({
            "name": r["name"], "lr": r["lr"], "kept": done.get("kept"),
            "slice_perplexity": {"before": done.get("before_perplexity"), "after": done.get("after_perplexity")},
            "heldout_txt_perplexity_torch": {"before": r["heldout_ppl_export"], "after": r.get("heldout_ppl_finetuned")},
            "train_seconds": done.get("train_s"), "tokens_per_second": done.get("tokens_per_s"),
            "trained_parameters": done.get("trained_parameters"), "wall_seconds": r["wall_s"],
        })
    checkpoints = {}
    for name, lr in sweep["chosen"].items():
        folder = os.path.join(a.folders, "ft-" + name)
        run = next(x for x in runs if x["name"] == name and x["lr"] == lr)
        checkpoints[name] = {
            "lr": lr,
            "shards": {f: sha256(os.path.join(folder, f)) for f in sorted(os.listdir(folder)) if f.endswith(".safetensors")},
            "perplexity_ours": ours[name]["perplexity"],
            "perplexity_torch": run["heldout_txt_perplexity_torch"]["after"],
            "export_perplexity_ours": base[name]["perplexity"],
            "tokens": ours[name]["tokens"],
        }
    out = {
        "what": "finetune of key-svd exports on ../shared/fixtures/train.txt, 300 AdamW steps of 32 x 256 tokens; heldout.txt perplexity at seq 256 (bytes tokenizer)",
        "device": start.get("device_name") if start else None, "torch": start.get("torch") if start else None, "transformers": start.get("transformers") if start else None,
        "steps": start.get("steps") if start else None, "batch": start.get("batch") if start else None, "seq": start.get("seq") if start else None,
        "original_perplexity_ours": {"mistral-bytes": base["mistral-bytes"]["perplexity"], "gpt2-bytes": base["gpt2-bytes"]["perplexity"]},
        "chosen_by": "lowest loss on the training text's held-out slice (last 5 %), never heldout.txt",
        "checkpoints": checkpoints,
        "runs": runs,
    }
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
