# GPU-machine driver for docs/FINETUNE.md (test tooling, not product code). The GPU machine has
# no Node.js, so this does what `factored-keys finetune` does around python/train_factored_keys.py
# (bytes tokens, an output folder holding the export's other files) for a sweep of exports, losses
# and learning rates, and measures every result's heldout.txt perplexity with PyTorch.
#
#   pack      (here, stdlib only) a small folder to carry: the texts, the teachers (the exports'
#             sources) and each export as the byte ranges that differ from its teacher
#   run       (GPU machine) the sweep, several runs at once on one device; results into --out
#   assemble  (here, stdlib only) rebuilds the chosen fine-tuned folders from the pack and the
#             trained tensors that came back
#
#   python3 scripts/reference/finetune_sweep.py pack --dest .fkft/sweep --train train.txt \
#       --heldout heldout.txt NAME=EXPORT_DIR=TEACHER_DIR ...
#   python3 scripts/reference/finetune_sweep.py run --pack .fkft/sweep --out $OUT [--budget-s 420]
#   python3 scripts/reference/finetune_sweep.py assemble --pack .fkft/sweep --results DIR --dest .fkft
#
# Choice per export: the 300-step run (any loss, any rate) with the lowest KL to the teacher on
# the training text's held-out slice (the script's last 5 %), never heldout.txt. Its trained
# tensors go to OUT/NAME.trained.safetensors; the best longer run's to OUT/NAME-long.trained.safetensors.
# OUT/sweep.json has every run (rewritten after each, so a cut-short call keeps what ran).
import argparse
import contextlib
import hashlib
import io
import json
import math
import os
import shutil
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "python"))
import train_factored_keys as tfk  # noqa: E402  (stdlib-only at import; torch inside train())

PACK_FILE = "fk_pack.json"
# loss modes: (--lm-weight, --freeze-key-up); every run has the teacher, so every run's held-out
# slice KL is measured and comparable
MODES = {"kl": (0.0, False), "lm": (1.0, False), "kl+lm": (0.5, False), "kl-keyup-frozen": (0.0, True)}


# ---------------------------------------------------------------- pack / unpack (stdlib only)

def safetensors_header(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return 8 + n, header


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pack_export(export, teacher, dest, teacher_name):
    """Writes dest/: the export's non-shard files, fk_pack.json and delta.bin. Each shard is a list
    of segments, ("teacher", file, offset, length) for tensors whose bytes equal the teacher's
    tensor of the same name, ("delta", offset, length) for everything else (headers included)."""
    os.makedirs(dest, exist_ok=True)
    teacher_tensors = {}
    for f in tfk.shard_files(teacher):
        start, header = safetensors_header(os.path.join(teacher, f))
        for name, t in header.items():
            teacher_tensors[name] = (f, start + t["data_offsets"][0], t["data_offsets"][1] - t["data_offsets"][0], t["dtype"], t["shape"])
    handles = {}
    shards = []
    with open(os.path.join(dest, "delta.bin"), "wb") as delta:
        def put(data):
            off = delta.tell()
            delta.write(data)
            return ["delta", off, len(data)]

        for f in tfk.shard_files(export):
            path = os.path.join(export, f)
            start, header = safetensors_header(path)
            with open(path, "rb") as src:
                data = src.read()
            segments = [put(data[:start])]
            pos = start
            for name, t in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
                b, e = start + t["data_offsets"][0], start + t["data_offsets"][1]
                if b > pos:
                    segments.append(put(data[pos:b]))
                tt = teacher_tensors.get(name)
                same = False
                if tt and tt[2] == e - b and tt[3] == t["dtype"] and tt[4] == t["shape"]:
                    if tt[0] not in handles:
                        handles[tt[0]] = open(os.path.join(teacher, tt[0]), "rb")
                    handles[tt[0]].seek(tt[1])
                    same = handles[tt[0]].read(tt[2]) == data[b:e]
                segments.append(["teacher", tt[0], tt[1], tt[2]] if same else put(data[b:e]))
                pos = e
            if pos < len(data):
                segments.append(put(data[pos:]))
            shards.append({"file": f, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "segments": segments})
    for h in handles.values():
        h.close()
    for f in os.listdir(export):
        if not f.endswith(".safetensors") and os.path.isfile(os.path.join(export, f)):
            shutil.copy(os.path.join(export, f), os.path.join(dest, f))
    with open(os.path.join(dest, PACK_FILE), "w") as out:
        json.dump({"teacher": teacher_name, "shards": shards}, out, indent=1)


def unpack_export(packed, teacher, dest):
    """Rebuilds the export folder byte for byte (each shard's SHA-256 checked)."""
    with open(os.path.join(packed, PACK_FILE)) as f:
        pack = json.load(f)
    os.makedirs(dest, exist_ok=True)
    for f in os.listdir(packed):
        if f not in (PACK_FILE, "delta.bin"):
            shutil.copy(os.path.join(packed, f), os.path.join(dest, f))
    with open(os.path.join(packed, "delta.bin"), "rb") as delta:
        for shard in pack["shards"]:
            h = hashlib.sha256()
            with open(os.path.join(dest, shard["file"]), "wb") as out:
                for seg in shard["segments"]:
                    if seg[0] == "delta":
                        delta.seek(seg[1])
                        data = delta.read(seg[2])
                    else:
                        with open(os.path.join(teacher, seg[1]), "rb") as t:
                            t.seek(seg[2])
                            data = t.read(seg[3])
                    h.update(data)
                    out.write(data)
            if h.hexdigest() != shard["sha256"]:
                raise SystemExit("%s: rebuilt shard %s does not match its SHA-256" % (packed, shard["file"]))


def cmd_pack(a):
    os.makedirs(os.path.join(a.dest, "teachers"), exist_ok=True)
    os.makedirs(os.path.join(a.dest, "exports"), exist_ok=True)
    shutil.copy(a.train, os.path.join(a.dest, "train.txt"))
    shutil.copy(a.heldout, os.path.join(a.dest, "heldout.txt"))
    names = []
    for spec in a.exports:
        name, export, teacher = spec.split("=", 2)
        tname = os.path.basename(os.path.normpath(teacher))
        tdest = os.path.join(a.dest, "teachers", tname)
        if not os.path.isdir(tdest):
            shutil.copytree(teacher, tdest)
            for root, dirs, files in os.walk(tdest):  # copies of read-only fixtures stay writable
                for x in dirs + files:
                    os.chmod(os.path.join(root, x), 0o755 if x in dirs else 0o644)
        pack_export(export, tdest, os.path.join(a.dest, "exports", name), tname)
        names.append(name)
    with open(os.path.join(a.dest, "sweep_pack.json"), "w") as f:
        json.dump({"exports": names}, f, indent=1)
    total = sum(os.path.getsize(os.path.join(r, x)) for r, _, fs in os.walk(a.dest) for x in fs)
    print("packed %s into %s: %.1f MB" % (", ".join(names), a.dest, total / 1e6))


def unpack_all(pack, work):
    """{name: (export folder, teacher folder)} rebuilt under work/exports."""
    with open(os.path.join(pack, "sweep_pack.json")) as f:
        names = json.load(f)["exports"]
    out = {}
    for name in names:
        packed = os.path.join(pack, "exports", name)
        with open(os.path.join(packed, PACK_FILE)) as f:
            teacher = os.path.join(pack, "teachers", json.load(f)["teacher"])
        dest = os.path.join(work, "exports", name)
        shutil.rmtree(dest, ignore_errors=True)
        unpack_export(packed, teacher, dest)
        out[name] = (dest, os.path.abspath(teacher))
    return out


# ---------------------------------------------------------------- run (torch)

def tokens_file(text, path):
    import array

    with open(text, "rb") as f:
        data = f.read()
    ids = array.array("i", list(data))
    if sys.byteorder != "little":
        ids.byteswap()
    with open(path, "wb") as f:
        ids.tofile(f)


def _quiet():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def heldout_ppl(folder, text, seq, device, limit, teacher=False):
    """PyTorch perplexity of text (bytes) scored as our `eval` scores it: window j feeds ids
    [seq j, seq j + seq) and predicts ids [seq j + 1, seq j + seq + 1); float32 without TF32,
    eager attention."""
    import torch
    import transformers

    _quiet()
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # train() turns it on again for itself
        torch.backends.cudnn.allow_tf32 = False
    if teacher:
        model = transformers.AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=False, local_files_only=True, use_safetensors=True, attn_implementation="eager", dtype=torch.float32)
    else:
        rt = tfk.load_runtime()
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
        model = rt.factored_class(config).from_pretrained(folder, config=config, local_files_only=True, attn_implementation="eager", dtype=torch.float32)
    model.to(device).eval()
    with open(text, "rb") as f:
        data = f.read()
    if limit:
        data = data[:limit]
    ids = torch.tensor(list(data), dtype=torch.long)
    n = (ids.numel() - 1) // seq
    x_all = ids[: n * seq].view(n, seq)
    y_all = ids[1: n * seq + 1].view(n, seq)
    total = 0.0
    with torch.no_grad():
        for i in range(0, n, 32):
            x, y = x_all[i:i + 32].to(device), y_all[i:i + 32].to(device)
            logits = model(input_ids=x, use_cache=False).logits.float()
            total += torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
    return math.exp(total / (n * seq))


def job_baseline(job):
    _quiet()
    t0 = time.time()
    ppl = heldout_ppl(job["folder"], job["heldout"], 256, job["device"], job["heldout_bytes"], teacher=job["teacher"])
    return dict(job, heldout_txt_ppl=ppl, wall_s=round(time.time() - t0, 2))


def job_train(job):
    """One fine-tune in this worker process; returns its record (and leaves its trained tensors
    in job["tensors_out"])."""
    _quiet()
    from safetensors import safe_open
    from safetensors.torch import save_file

    out = job["out"]
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    src = job["export"]
    for f in os.listdir(src):
        if not f.endswith(".safetensors"):
            shutil.copy(os.path.join(src, f), os.path.join(out, f))
    lm_weight, freeze = MODES[job["mode"]]
    argv = ["train", "--checkpoint", src, "--tokens", job["tokens"], "--out", out, "--steps", str(job["steps"]), "--lr", str(job["lr"]),
            "--batch", str(job["batch"]), "--seq", str(job["seq"]), "--device", job["device"], "--teacher", job["teacher"], "--lm-weight", str(lm_weight)]
    if freeze:
        argv.append("--freeze-key-up")
    if job["threads"]:
        argv += ["--threads", str(job["threads"])]
    if job["heldout_max_tokens"]:
        argv += ["--heldout-max-tokens", str(job["heldout_max_tokens"])]
    buf = io.StringIO()
    t0 = time.time()
    with contextlib.redirect_stdout(buf):
        try:
            rc = tfk.main(argv)
        except tfk.Failure as e:
            tfk.emit("error", message=str(e))
            rc = 2
        except Exception as e:  # one run's crash must not end the sweep
            tfk.emit("error", message="%s: %s" % (type(e).__name__, e))
            rc = 1
    wall = time.time() - t0
    events = [json.loads(line) for line in buf.getvalue().splitlines() if line.startswith("{")]
    ev = {e["event"]: e for e in events}
    done, start = ev.get("done"), ev.get("start", {})
    steps = [e for e in events if e["event"] == "step"]
    rec = {k: job[k] for k in ("id", "name", "mode", "lr", "steps", "phase", "deciding")}
    rec.update(rc=rc, wall_s=round(wall, 2), lm_weight=lm_weight, freeze_key_up=freeze, error=ev.get("error", {}).get("message"),
               first_steps=steps[:2], last_steps=steps[-3:])
    if done:
        rec.update(kept=done["kept"], train_s=done["train_s"], tokens_per_s=done["tokens_per_s"], trained_parameters=done["trained_parameters"],
                   slice={"lm_before": done["before_loss"], "lm_after": done["after_loss"], "ppl_before": done["before_perplexity"], "ppl_after": done["after_perplexity"],
                          "kl_before": done["before_kl"], "kl_after": done["after_kl"]},
                   device_name=start.get("device_name"), torch=start.get("torch"), transformers=start.get("transformers"), batch=done["batch"], seq=done["seq"])
        rec["heldout_txt_ppl"] = heldout_ppl(out, job["heldout"], 256, job["device"], job["heldout_bytes"])
        tensors = {}
        names = set(start["tensors"])
        for f in tfk.shard_files(out):
            with safe_open(os.path.join(out, f), framework="pt") as s:
                for k in s.keys():
                    if k in names:
                        tensors[k] = s.get_tensor(k)
        save_file(tensors, job["tensors_out"], metadata={"run": job["id"]})
    shutil.rmtree(out, ignore_errors=True)
    return rec


def run_job(job):
    return job_baseline(job) if job["kind"] == "baseline" else job_train(job)


def cmd_run(a):
    import concurrent.futures
    import multiprocessing

    t_begin = time.time()
    deadline = t_begin + a.budget_s
    os.makedirs(a.out, exist_ok=True)
    work = os.path.abspath(a.work)
    os.makedirs(os.path.join(work, "runs"), exist_ok=True)
    exports = unpack_all(a.pack, work)
    if a.names:
        exports = {n: exports[n] for n in a.names.split(",")}
    toks = os.path.join(work, "train.i32")
    tokens_file(os.path.join(a.pack, "train.txt"), toks)
    heldout = os.path.abspath(os.path.join(a.pack, "heldout.txt"))
    device = a.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    common = dict(device=device, heldout=heldout, heldout_bytes=a.heldout_bytes)
    threads = a.threads or max(1, (os.cpu_count() or 1) // a.workers)
    lrs = [float(x) for x in a.lrs.split(",")]
    plan = a.modes.split(",")
    modes = [m for m in plan if m != "long"]
    for m in modes:
        if m not in MODES:
            raise SystemExit("unknown mode %r (known: %s, and long)" % (m, ", ".join(MODES)))
    # the modes before "long" decide each export's longer runs (all of them when it is absent)
    deciding = set(plan[: plan.index("long")] if "long" in plan else modes)

    queue = []
    for t in sorted({t for _, t in exports.values()}):
        queue.append(dict(common, kind="baseline", id="teacher-" + os.path.basename(t), folder=t, teacher=True))
    for name, (folder, _) in exports.items():
        queue.append(dict(common, kind="baseline", id="export-" + name, folder=folder, teacher=False))

    def train_job(name, mode, lr, steps, phase):
        folder, teacher = exports[name]
        jid = "%s-%s-lr%g-s%d" % (name, mode, lr, steps)
        return dict(common, kind="train", id=jid, name=name, mode=mode, lr=lr, steps=steps, phase=phase, deciding=phase == "grid" and mode in deciding, export=folder, teacher=teacher, tokens=toks,
                    out=os.path.join(work, "runs", jid), tensors_out=os.path.join(work, "runs", jid + ".trained.safetensors"),
                    batch=a.batch, seq=a.seq, threads=threads, heldout_max_tokens=a.heldout_max_tokens)

    for mode in modes:  # priority order: the modes as listed, every export, every rate
        for name, (folder, _) in exports.items():
            if MODES[mode][1] and tfk.read_json(os.path.join(folder, "config.json"), "config.json")["factored_keys"]["rope_mode"] != "latent":
                continue  # only latent mode has a key_up to freeze
            for lr in lrs:
                queue.append(train_job(name, mode, lr, a.steps, "grid"))
    long_steps = [int(x) for x in a.long_steps.split(",") if x]
    pending_grid = {name: sum(1 for j in queue if j.get("name") == name and j["deciding"]) for name in exports}
    decided = {}  # name -> the best deciding run so far

    results = {"settings": {"steps": a.steps, "long_steps": long_steps, "lrs": lrs, "modes": modes, "mode_lm_weight": {m: MODES[m][0] for m in modes}, "batch": a.batch, "seq": a.seq,
                            "workers": a.workers, "budget_s": a.budget_s, "device": device, "heldout_bytes": a.heldout_bytes or None,
                            "chosen_by": "lowest KL to the teacher on the training text's held-out slice (last 5 %) among the grid's runs; never heldout.txt"},
               "baseline": {}, "runs": [], "chosen": {}, "chosen_long": {}, "skipped": []}
    per_step = {}  # name -> measured wall seconds per step (one run alone)

    def save():
        results["elapsed_s"] = round(time.time() - t_begin, 1)
        with open(os.path.join(a.out, "sweep.json"), "w") as f:
            json.dump(results, f, indent=1)

    def estimate(job):
        """Seconds the job will take: load and evaluations, plus its steps at the rate measured
        for that export (under the same concurrency), or the guess slowed by the concurrency."""
        if job["kind"] == "baseline":
            return 10.0
        guess = a.guess_step_s * (1 + 0.5 * (a.workers - 1))
        return 15.0 + job["steps"] * per_step.get(job["name"], guess)

    def better(rec, cur):
        return cur is None or rec["slice"]["kl_after"] < cur["slice"]["kl_after"]

    def finished(rec):
        if rec.get("kind") == "baseline":
            results["baseline"][rec["id"]] = {"heldout_txt_ppl": rec["heldout_txt_ppl"], "wall_s": rec["wall_s"]}
            print(json.dumps({"baseline": rec["id"], "heldout_txt_ppl": rec["heldout_txt_ppl"]}), flush=True)
            return
        results["runs"].append(rec)
        short = {k: rec.get(k) for k in ("id", "rc", "kept", "wall_s", "train_s", "heldout_txt_ppl", "error")}
        if "slice" in rec:
            short.update(slice_kl="%.5f -> %.5f" % (rec["slice"]["kl_before"], rec["slice"]["kl_after"]), slice_ppl="%.4f -> %.4f" % (rec["slice"]["ppl_before"], rec["slice"]["ppl_after"]))
            per_step[rec["name"]] = max(per_step.get(rec["name"], 0.0), rec["train_s"] / rec["steps"])
            table = results["chosen"] if rec["phase"] == "grid" else results["chosen_long"]
            if better(rec, table.get(rec["name"])):
                table[rec["name"]] = rec
                suffix = "" if rec["phase"] == "grid" else "-long"
                shutil.copy(os.path.join(work, "runs", rec["id"] + ".trained.safetensors"), os.path.join(a.out, rec["name"] + suffix + ".trained.safetensors"))
        print(json.dumps(short), flush=True)
        if rec.get("deciding"):
            pending_grid[rec["name"]] -= 1
            if "slice" in rec and better(rec, decided.get(rec["name"])):
                decided[rec["name"]] = rec
            best = decided.get(rec["name"])
            if pending_grid[rec["name"]] == 0 and best:
                for s in reversed(long_steps):  # the grid's best setting, longer: next in line
                    queue.insert(0, train_job(rec["name"], best["mode"], best["lr"], s, "long"))

    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=a.workers, mp_context=ctx) as pool:
        running = {}
        while queue or running:
            while queue and len(running) < a.workers:
                job = queue.pop(0)
                if time.time() + estimate(job) > deadline:
                    results["skipped"].append(job["id"])
                    if job.get("deciding"):
                        pending_grid[job["name"]] -= 1
                    continue
                running[pool.submit(run_job, job)] = job
            if not running:
                continue
            done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for fut in done:
                job = running.pop(fut)
                try:
                    rec = fut.result()
                except Exception as e:  # a worker died: record it, keep going
                    rec = {"id": job["id"], "kind": job["kind"], "name": job.get("name"), "phase": job.get("phase"), "rc": -1, "error": "%s: %s" % (type(e).__name__, e)}
                    if job["kind"] == "baseline":
                        results["skipped"].append(job["id"])
                        continue
                    if job.get("deciding"):
                        pending_grid[job["name"]] -= 1
                    results["runs"].append(rec)
                    continue
                rec["kind"] = job["kind"]
                finished(rec)
                save()
    for table in ("chosen", "chosen_long"):
        results[table] = {n: {k: r.get(k) for k in ("id", "mode", "lr", "steps", "lm_weight", "freeze_key_up", "slice", "heldout_txt_ppl")} for n, r in results[table].items()}
    save()
    print(json.dumps({"chosen": {n: (c["id"], c["heldout_txt_ppl"]) for n, c in results["chosen"].items()},
                      "chosen_long": {n: (c["id"], c["heldout_txt_ppl"]) for n, c in results["chosen_long"].items()},
                      "skipped": len(results["skipped"]), "elapsed_s": results["elapsed_s"]}), flush=True)


# ---------------------------------------------------------------- assemble (stdlib only)

def cmd_assemble(a):
    """For each RESULTS/NAME[-long].trained.safetensors: the export rebuilt from the pack, with
    those tensors' bytes written over the same tensors (same dtype and shape, so the same byte
    ranges) into DEST/ft-NAME[-long]."""
    exports = unpack_all(a.pack, os.path.join(a.dest, ".sweep-exports"))
    for f in sorted(os.listdir(a.results)):
        if not f.endswith(".trained.safetensors"):
            continue
        label = f[: -len(".trained.safetensors")]
        name = label[: -len("-long")] if label.endswith("-long") else label
        export, _ = exports[name]
        dest = os.path.join(a.dest, "ft-" + label)
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(export, dest)
        tstart, theader = safetensors_header(os.path.join(a.results, f))
        with open(os.path.join(a.results, f), "rb") as tf:
            trained = tf.read()
        written = set()
        for shard in tfk.shard_files(dest):
            path = os.path.join(dest, shard)
            start, header = safetensors_header(path)
            with open(path, "r+b") as out:
                for name_t, t in header.items():
                    n = theader.get(name_t)
                    if n is None:
                        continue
                    if n["dtype"] != t["dtype"] or n["shape"] != t["shape"]:
                        raise SystemExit("%s: %s is %s %s, the export's %s %s" % (f, name_t, n["dtype"], n["shape"], t["dtype"], t["shape"]))
                    out.seek(start + t["data_offsets"][0])
                    out.write(trained[tstart + n["data_offsets"][0]: tstart + n["data_offsets"][1]])
                    written.add(name_t)
        missing = sorted(set(theader) - written)
        if missing:
            raise SystemExit("%s: tensor %s is not in the export" % (f, missing[0]))
        print("assembled %s (%d trained tensors)" % (dest, len(written)))
    shutil.rmtree(os.path.join(a.dest, ".sweep-exports"), ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(prog="finetune_sweep.py")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--dest", required=True)
    p.add_argument("--train", required=True)
    p.add_argument("--heldout", required=True)
    p.add_argument("exports", nargs="+", help="NAME=EXPORT_DIR=TEACHER_DIR")
    r = sub.add_parser("run")
    r.add_argument("--pack", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--work", default="/tmp/fk-sweep")
    r.add_argument("--names", default="", help="comma-separated subset of the packed exports")
    r.add_argument("--modes", default="kl,lm,long,kl-keyup-frozen,kl+lm",
                   help="in priority order; known: %s; long: each export's best setting of the modes before it, again with --long-steps" % ", ".join(MODES))
    r.add_argument("--lrs", default="1e-4,3e-4,1e-3,3e-3")
    r.add_argument("--steps", type=int, default=300)
    r.add_argument("--long-steps", default="1000", help="after an export's grid: its best setting again with these step counts (empty: none)")
    r.add_argument("--batch", type=int, default=32)
    r.add_argument("--seq", type=int, default=256)
    r.add_argument("--device", default="auto")
    r.add_argument("--workers", type=int, default=4, help="runs at once (separate processes) on the one device")
    r.add_argument("--threads", type=int, default=0, help="torch threads per run (default: the cores shared among the workers)")
    r.add_argument("--budget-s", type=float, default=400, help="start no run that would end after this many seconds")
    r.add_argument("--guess-step-s", type=float, default=0.05, help="seconds per step assumed before a run of that export has finished")
    r.add_argument("--heldout-bytes", type=int, default=0, help="score only the first N bytes of heldout.txt (CPU tests)")
    r.add_argument("--heldout-max-tokens", type=int, default=0, help="the script's held-out slice cap (CPU tests)")
    s = sub.add_parser("assemble")
    s.add_argument("--pack", required=True)
    s.add_argument("--results", required=True)
    s.add_argument("--dest", required=True)
    a = ap.parse_args()
    {"pack": cmd_pack, "run": cmd_run, "assemble": cmd_assemble}[a.command](a)


if __name__ == "__main__":
    main()
