"""Checks the Hugging Face runtime of factored exports (python/modeling_factored_keys.py).

Reference tooling, not product code. For every export written by scripts/reference/runtime_exports.sh:
  * loads it with AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True);
  * perplexity (byte ids, windows of 256) against our own `eval` of the same export;
  * logits against stock transformers on the FULL-SHAPE rank-r model (the source checkpoint with
    each key head's weights replaced by its rank-r version: U_g.A_g in latent mode, W_K V_r V_r^T
    for key-svd in absorbed mode), and greedy tokens of both;
  * at full rank: logits and 64 greedy tokens against the original model;
  * the thin cache: step-by-step decoding equals the no-cache forward; generate() greedy and
    sampling, batch 2 with left padding;
  * cache bytes of generate() at 1,024 tokens x batch 8 (mistral-bytes and gpt2-bytes rank 16)
    against `factored-keys savings`, and the original model's;
  * save_pretrained round trip, PEFT LoRA on the projections, accelerate device_map.

  python scripts/reference/check_runtime.py --work .fkx --fixtures ../shared/fixtures \
      --out test/reference/runtime/runtime_reference.json
"""
import argparse
import filecmp
import json
import math
import os
import platform
import sys
import tempfile
import time

import torch
import transformers
from transformers import AutoModelForCausalLM

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TEMPLATE = os.path.join(ROOT, "python", "modeling_factored_keys.py")


def source_of(name, fixtures):
    kind, model = name.split(".")[:2]
    if kind == "layouts2":
        return os.path.join(fixtures, "layouts2", model)
    if kind == "variants":
        return os.path.join(ROOT, "test", "fixtures", "variants", model)
    return os.path.join(fixtures, kind)


def text_ids(path, device):
    return torch.tensor(list(open(path, "rb").read()), dtype=torch.long, device=device)


@torch.no_grad()
def perplexity(model, ids, seq=256, batch=16):
    n = (ids.numel() - 1) // seq
    x = ids[: n * seq].view(n, seq)
    y = ids[1 : n * seq + 1].view(n, seq)
    nll = 0.0
    for i in range(0, n, batch):
        logits = model(x[i : i + batch], use_cache=False).logits.double()
        nll += torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y[i : i + batch].reshape(-1), reduction="sum").item()
    return math.exp(nll / (n * seq)), n * seq


def load(path, dtype, device, remote):
    kw = {"dtype": dtype, "attn_implementation": "eager"}
    if remote:
        kw["trust_remote_code"] = True
    return AutoModelForCausalLM.from_pretrained(path, **kw).to(device).eval()


def slices_of(config):
    fk = config["factored_keys"]
    return fk, fk["layers"]


def key_rows(t, s):
    """A key slice of a source or exported tensor as [width, in] (rows of the linear map)."""
    if s["orientation"] == "linear":
        return t[s["offset"] : s["offset"] + s["width"], :]
    return t[:, s["offset"] : s["offset"] + s["width"]].T


def put_rows(t, s, rows):
    if s["orientation"] == "linear":
        t[s["offset"] : s["offset"] + s["width"], :] = rows
    else:
        t[:, s["offset"] : s["offset"] + s["width"]] = rows.T


@torch.no_grad()
def full_shape_reference(src, exp_dir, full_dir, dtype, device):
    """Stock transformers on the source with rank-r key weights (None when it cannot be built)."""
    cfg = json.load(open(os.path.join(exp_dir, "config.json")))
    fk, layers = slices_of(cfg)
    if full_dir is None or not os.path.isdir(full_dir):
        return None
    full_layers = json.load(open(os.path.join(full_dir, "config.json")))["factored_keys"]["layers"]
    if fk["rope_mode"] == "absorbed" and fk["method"] != "key-svd":
        return None
    ref = load(src, torch.float64, "cpu", remote=False)
    sd = dict(ref.named_parameters())
    from safetensors import safe_open

    exported = {}
    for f in os.listdir(exp_dir):
        if f.endswith(".safetensors"):
            with safe_open(os.path.join(exp_dir, f), "pt") as h:
                for k in h.keys():
                    exported[k] = h.get_tensor(k).double()
    d = fk["original_head_dim"]
    for i, L in enumerate(layers):
        ranks = fk["ranks"][i]
        for g, (s, s_full) in enumerate(zip(L["key"], full_layers[i]["key"])):
            W = sd[s_full["tensor"]].data
            src_rows = key_rows(W, s_full)  # [d, in], source (full-rank export keeps source offsets)
            if fk["rope_mode"] == "latent":
                A = key_rows(exported[s["tensor"]], s)  # [r, in]
                U = exported[L["key_up"]]
                o = sum(ranks[:g])
                Ug = U[g * d : (g + 1) * d, o : o + ranks[g]]  # [d, r]
                put_rows(W, s_full, Ug @ A)
                if s_full["bias"]:
                    bA = exported[s["bias"]][s["offset"] : s["offset"] + s["width"]]
                    sd[s_full["bias"]].data[s_full["offset"] : s_full["offset"] + d] = Ug @ bA
            else:  # key-svd absorbed: W_K V_r V_r^T (bias excluded from the SVD, as in the paper)
                # W_K = src_rows^T (in x d): its right singular vectors are src_rows' left ones
                Vr = torch.linalg.svd(src_rows, full_matrices=False).U[:, : ranks[g]]
                put_rows(W, s_full, Vr @ Vr.T @ src_rows)
                if s_full["bias"]:
                    b = sd[s_full["bias"]].data
                    b[s_full["offset"] : s_full["offset"] + d] = b[s_full["offset"] : s_full["offset"] + d] @ Vr @ Vr.T
    return ref.to(dtype).to(device)


@torch.no_grad()
def greedy(model, prompt, n):
    out = model.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
    return out[0, prompt.shape[1] :].tolist()


@torch.no_grad()
def step_consistency(model, ids):
    """Max |logit| difference between cached step-by-step decoding and the no-cache forward."""
    full = model(ids, use_cache=False).logits
    out = model(ids[:, :32], use_cache=True)
    cache = out.past_key_values
    worst = (out.logits - full[:, :32]).abs().max().item()
    for t in range(32, ids.shape[1]):
        out = model(ids[:, t : t + 1], past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        worst = max(worst, (out.logits[:, 0] - full[:, t]).abs().max().item())
    return worst


@torch.no_grad()
def padded_generate(model, ids, device):
    """Batch 2, the first row left-padded by 5: greedy rows equal their unpadded runs; sampling runs."""
    a, b = ids[0, :24], ids[0, 5:24]
    batch = torch.zeros(2, 24, dtype=torch.long, device=device)
    mask = torch.zeros(2, 24, dtype=torch.long, device=device)
    batch[0], mask[0] = a, 1
    batch[1, 5:], mask[1, 5:] = b, 1
    out = model.generate(batch, attention_mask=mask, max_new_tokens=16, min_new_tokens=16, do_sample=False, pad_token_id=0)
    alone = model.generate(b.unsqueeze(0), max_new_tokens=16, min_new_tokens=16, do_sample=False, pad_token_id=0)
    torch.manual_seed(0)
    sampled = model.generate(batch, attention_mask=mask, max_new_tokens=16, min_new_tokens=16, do_sample=True, top_k=20, temperature=0.8, pad_token_id=0)
    return {
        "padded_row_equals_unpadded": out[1, 24:].tolist() == alone[0, 19:].tolist(),
        "sampled_shape": list(sampled.shape),
    }


def cache_bytes(cache):
    keys = values = 0
    for layer in cache.layers:
        keys += layer.keys.numel() * layer.keys.element_size()
        values += layer.values.numel() * layer.values.element_size()
    return keys, values


@torch.no_grad()
def measure_cache(exp_dir, src, ids, dtype, device, context=1024, batch=8):
    res = {}
    for label, path, remote in (("factored", exp_dir, True), ("original", src, False)):
        model = load(path, dtype, device, remote)
        prompt = ids[: context - 24].repeat(batch, 1)
        out = model.generate(prompt, max_new_tokens=25, min_new_tokens=25, do_sample=False, pad_token_id=0, return_dict_in_generate=True)
        k, v = cache_bytes(out.past_key_values)
        res[label] = {"cached_tokens": out.past_key_values.get_seq_length(), "key_bytes": k, "value_bytes": v}
        del model
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=".fkx")
    ap.add_argument("--fixtures", default="../shared/fixtures")
    ap.add_argument("--out", default="runtime_reference.json")
    ap.add_argument("--only", default="")
    ap.add_argument("--extras-only", action="store_true", help="only the cache, round-trip, PEFT and device_map checks")
    ap.add_argument("--no-extras", action="store_true", help="skip the cache, round-trip, PEFT and device_map checks")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_num_threads(int(os.environ.get("FK_THREADS", os.cpu_count() or 1)))
    exports_dir = os.path.join(args.work, "exports")
    names = sorted(n for n in os.listdir(exports_dir) if args.only in n)
    result = {
        "generator": "scripts/reference/check_runtime.py",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": device if device == "cpu" else torch.cuda.get_device_name(0),
        "python": platform.python_version(),
        "compute_dtype": "float32",
        "exports": {},
        "failures": [],
    }
    fail = result["failures"]
    for name in [] if args.extras_only else names:
        t0 = time.time()
        exp = os.path.join(exports_dir, name)
        src = source_of(name, args.fixtures)
        text = os.path.join(args.work, "heldout2049.txt")  # our eval of each export used the same text
        ids = text_ids(text, device)
        ours = json.load(open(os.path.join(args.work, "eval", name + ".eval.json")))
        cfg = json.load(open(os.path.join(exp, "config.json")))
        rec = {"architecture": cfg["factored_keys"]["architecture"], "mode": cfg["factored_keys"]["rope_mode"], "method": cfg["factored_keys"]["method"], "ranks": sorted({r for row in cfg["factored_keys"]["ranks"] for r in row})}
        try:
            same = filecmp.cmp(os.path.join(exp, "modeling_factored_keys.py"), TEMPLATE, shallow=False)
            rec["template_identical"] = same
            model = load(exp, torch.float32, device, remote=True)
            rec["class"] = type(model).__name__
            seq = ours.get("seq", 256)
            ppl, tokens = perplexity(model, ids, seq)
            rec["ppl_runtime"], rec["tokens"], rec["ppl_ours"] = ppl, tokens, ours["perplexity"]
            rec["ppl_rel_diff"] = abs(ppl - ours["perplexity"]) / ours["perplexity"]
            probe = ids[:seq].unsqueeze(0)
            logits = model(probe, use_cache=False).logits
            rec["cache_step_max_abs_diff"] = step_consistency(model, ids[:48].unsqueeze(0))
            rec.update(padded_generate(model, ids.unsqueeze(0), device))
            g = greedy(model, ids[:32].unsqueeze(0), 64)
            stem = name.rsplit(".", 1)[0]
            full_dir = os.path.join(exports_dir, stem + ".full")
            if name.endswith(".full"):
                orig = load(src, torch.float32, device, remote=False)
                rec["original_logits_max_abs_diff"] = (orig(probe, use_cache=False).logits - logits).abs().max().item()
                rec["greedy64_equals_original"] = greedy(orig, ids[:32].unsqueeze(0), 64) == g
                rec["ppl_original"] = perplexity(orig, ids, seq)[0]
                del orig
            ref = full_shape_reference(src, exp, full_dir, torch.float32, device)
            if ref is not None:
                rec["reference_logits_max_abs_diff"] = (ref(probe, use_cache=False).logits - logits).abs().max().item()
                rec["reference_logits_scale"] = logits.abs().max().item()
                rec["ppl_reference"] = perplexity(ref, ids, seq)[0]
                rec["ppl_reference_rel_diff"] = abs(rec["ppl_reference"] - ppl) / ppl
                rec["greedy64_equals_reference"] = greedy(ref, ids[:32].unsqueeze(0), 64) == g
                del ref
            ok = same and rec["ppl_rel_diff"] <= 1e-3 and rec["cache_step_max_abs_diff"] <= 1e-3 and rec["padded_row_equals_unpadded"]
            if "ppl_reference_rel_diff" in rec:
                ok = ok and rec["ppl_reference_rel_diff"] <= 1e-3
            if name.endswith(".full"):
                ok = ok and rec["greedy64_equals_original"]
            rec["pass"] = bool(ok)
            del model
        except Exception as e:  # recorded, the run goes on
            rec["pass"] = False
            rec["error"] = "%s: %s" % (type(e).__name__, str(e).splitlines()[0][:300] if str(e) else "")
        rec["seconds"] = round(time.time() - t0, 2)
        result["exports"][name] = rec
        if not rec["pass"]:
            fail.append(name)
        print(name, json.dumps({k: rec[k] for k in rec if k in ("pass", "ppl_rel_diff", "ppl_reference_rel_diff", "cache_step_max_abs_diff", "greedy64_equals_original", "error")}), flush=True)
        write(result, args.out)  # after every export, so an interrupted run keeps what it measured

    # cache bytes at 1,024 tokens x batch 8 against `savings`
    result["cache"] = {}
    for model_name, dtype in () if args.no_extras else (("mistral-bytes", torch.bfloat16), ("gpt2-bytes", torch.float32)):
        name = model_name + ".key-svd.r16"
        if name not in names:
            continue
        sav = json.load(open(os.path.join(args.work, "eval", "savings.%s.r16.json" % model_name)))
        ids = text_ids(os.path.join(args.work, "heldout16385.txt"), device)
        m = measure_cache(os.path.join(exports_dir, name), source_of(name, args.fixtures), ids, dtype, device, context=sav["inputs"]["context"])
        m["savings"] = sav
        m["dtype"] = str(dtype).replace("torch.", "")
        result["cache"][name] = m
        print("cache", name, json.dumps(m)[:400], flush=True)

    # round trip, PEFT, device_map on the mistral rank-16 export
    name = "mistral-bytes.key-svd.r16"
    if name in names and not args.no_extras:
        extra = {}
        exp = os.path.join(exports_dir, name)
        ids = text_ids(os.path.join(args.work, "heldout16385.txt"), device)[:256].unsqueeze(0)
        model = load(exp, torch.float32, device, remote=True)
        base = model(ids, use_cache=False).logits
        out_dir = os.path.join(args.work, "roundtrip")
        model.save_pretrained(out_dir)
        saved = json.load(open(os.path.join(out_dir, "config.json")))
        extra["roundtrip_config_has_block"] = "factored_keys" in saved and saved.get("auto_map") == cfg_auto_map(exp)
        extra["roundtrip_template_identical"] = filecmp.cmp(os.path.join(out_dir, "modeling_factored_keys.py"), TEMPLATE, shallow=False)
        again = load(out_dir, torch.float32, device, remote=True)
        extra["roundtrip_logits_max_abs_diff"] = (again(ids, use_cache=False).logits - base).abs().max().item()
        del again
        try:
            from peft import LoraConfig, get_peft_model

            peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], lora_dropout=0.0))
            loss = peft_model(ids, labels=ids).loss
            loss.backward()
            extra["peft_lora_loss"] = loss.item()
            extra["peft_lora_grad_ok"] = all(p.grad is not None for n, p in peft_model.named_parameters() if p.requires_grad)
        except Exception as e:
            extra["peft_error"] = "%s: %s" % (type(e).__name__, str(e)[:200])
        del model
        try:
            mapped = AutoModelForCausalLM.from_pretrained(exp, trust_remote_code=True, dtype=torch.float32, device_map="auto", attn_implementation="eager")
            extra["device_map"] = sorted({str(v) for v in getattr(mapped, "hf_device_map", {}).values()})
            extra["device_map_logits_max_abs_diff"] = (mapped(ids.to(mapped.device), use_cache=False).logits.to(base.device) - base).abs().max().item()
        except Exception as e:
            extra["device_map_error"] = "%s: %s" % (type(e).__name__, str(e)[:200])
        result["extras"] = extra
        print("extras", json.dumps(extra), flush=True)

    write(result, args.out)
    print("%d exports, %d failed: %s" % (len(names), len(fail), " ".join(fail)))
    return 1 if fail else 0


def write(result, out):
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)
        f.write("\n")


def merge(paths, out):
    """Joins the results of several runs (later files win per export); failures recomputed."""
    result = None
    for p in paths:
        part = json.load(open(p))
        if result is None:
            result = dict(part, exports={}, cache={}, failures=[], merged_from=[])
        result["exports"].update(part["exports"])
        result["cache"].update(part.get("cache", {}))
        if part.get("extras"):
            result["extras"] = part["extras"]
        result["merged_from"].append(len(part["exports"]))
    result["failures"] = sorted(n for n, r in result["exports"].items() if not r["pass"])
    with open(out, "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)
        f.write("\n")
    print("%d exports, %d failed: %s" % (len(result["exports"]), len(result["failures"]), " ".join(result["failures"])))
    return 1 if result["failures"] else 0


def cfg_auto_map(exp):
    return json.load(open(os.path.join(exp, "config.json"))).get("auto_map")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--merge"]:  # --merge OUT RUN.json...
        sys.exit(merge(sys.argv[3:], sys.argv[2]))
    sys.exit(main())
