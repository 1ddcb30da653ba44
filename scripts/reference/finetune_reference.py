# Builds test/reference/finetune/finetune_reference.json (stdlib only, runs here without torch)
# from the GPU run's sweep.json (scripts/reference/finetune_sweep.py run), our own `eval --json`
# of each fine-tuned checkpoint rebuilt by `finetune_sweep.py assemble` (lines "LABEL {json}",
# LABEL = NAME or NAME-long, folders FOLDERS/ft-LABEL), and those folders' shards.
# --original-ours has lines "mistral-bytes {json}", "gpt2-bytes {json}" and "NAME {json}" (exports).
#
#   python3 scripts/reference/finetune_reference.py --sweep sweep.json --ours ft_eval.txt \
#       --original-ours orig_eval.txt --folders .fkft --out test/reference/finetune/finetune_reference.json
import argparse
import json
import os

from finetune_sweep import sha256_file  # the same files' hashes as the sweep records


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
    settings = sweep["settings"]
    first = next((r for r in sweep["runs"] if r.get("device_name")), {})
    runs = []
    for r in sweep["runs"]:
        runs.append({
            "name": r["name"], "mode": r.get("mode"), "lr": r.get("lr"), "steps": r.get("steps"), "phase": r.get("phase"), "lm_weight": r.get("lm_weight"),
            "freeze_key_up": r.get("freeze_key_up"), "kept": r.get("kept"), "error": r.get("error"), "slice": r.get("slice"),
            "heldout_txt_perplexity_torch": {"before": sweep["baseline"].get("export-" + r["name"], {}).get("heldout_txt_ppl"), "after": r.get("heldout_txt_ppl")},
            "train_seconds": r.get("train_s"), "tokens_per_second": r.get("tokens_per_s"), "trained_parameters": r.get("trained_parameters"), "wall_seconds": r.get("wall_s"),
        })
    checkpoints = {}
    for table, suffix in (("chosen", ""), ("chosen_long", "-long")):
        for name, c in sweep.get(table, {}).items():
            label = name + suffix
            folder = os.path.join(a.folders, "ft-" + label)
            if label not in ours or not os.path.isdir(folder):
                continue
            checkpoints[label] = {
                "mode": c["mode"], "lr": c["lr"], "steps": c["steps"], "slice": c["slice"],
                "shards": {f: sha256_file(os.path.join(folder, f)) for f in sorted(os.listdir(folder)) if f.endswith(".safetensors")},
                "perplexity_ours": ours[label]["perplexity"],
                "perplexity_torch": c["heldout_txt_ppl"],
                "export_perplexity_ours": base[name]["perplexity"],
                "tokens": ours[label]["tokens"],
            }
    out = {
        "what": "finetune of key-svd exports on ../shared/fixtures/train.txt (AdamW, batch x seq below) with the LM loss, KL distillation from the source model, or both; heldout.txt perplexity at seq 256 (bytes tokenizer)",
        "device": first.get("device_name"), "torch": first.get("torch"), "transformers": first.get("transformers"),
        "steps": settings["steps"], "long_steps": settings.get("long_steps"), "batch": settings["batch"], "seq": settings["seq"], "modes": settings.get("mode_lm_weight"),
        "original_perplexity_ours": {"mistral-bytes": base["mistral-bytes"]["perplexity"], "gpt2-bytes": base["gpt2-bytes"]["perplexity"]},
        "original_perplexity_torch": {k[len("teacher-"):]: v["heldout_txt_ppl"] for k, v in sweep["baseline"].items() if k.startswith("teacher-")},
        "chosen_by": settings["chosen_by"],
        "checkpoints": checkpoints,
        "runs": runs,
        "skipped": sweep.get("skipped", []),
    }
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
