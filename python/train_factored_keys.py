# Factored Keys fine-tuning: recovers quality after factoring by training the queries and the
# thin key factors of a factored checkpoint (docs/FINETUNE.md), everything else frozen.
#
# This is a FIXED SCRIPT of the Factored Keys project (python/train_factored_keys.py). No text
# of any checkpoint ever becomes code here: the model is built by the project's own runtime
# template (python/modeling_factored_keys.py beside this file, imported by path; the copy inside
# the checkpoint is never executed and trust_remote_code is never used), and every name it
# trains is read from config.json's "factored_keys" block and looked up as data.
#
# It is started by `factored-keys finetune` (src/core/finetune/), which tokenizes the text, makes
# the temporary output folder, copies the checkpoint's other files, validates the result with
# the project's own reader and renames it into place. Protocol: one JSON object per line on
# stdout ("event": check | start | eval | step | saved | done | error); exit 0 on success.
#
#   python3 train_factored_keys.py check
#   python3 train_factored_keys.py train --checkpoint DIR --tokens FILE.i32 --out DIR [options]
#
# --tokens is the token ids as little-endian int32. The last --heldout-fraction of them is held
# out: its loss is measured before training and after (with the trained tensors rounded to the
# checkpoint's dtype, i.e. exactly what is written), and the better of the two is written.
#
# --teacher DIR distils from the export's source (the original, unfactored checkpoint, loaded by
# transformers' stock classes, frozen): the loss is KL(teacher || student) of the next-token
# distributions (temperature 1), mixed with the LM loss by --lm-weight, and the held-out
# criterion becomes that KL.
import argparse
import hashlib
import importlib.util
import json
import math
import os
import sys
import time

MIN_TORCH = (2, 1)
MIN_TRANSFORMERS = (4, 48)
HERE = os.path.dirname(os.path.abspath(__file__))
RUNTIME = os.path.join(HERE, "modeling_factored_keys.py")


def emit(event, **fields):
    fields = dict(event=event, **fields)
    sys.stdout.write(json.dumps(fields, allow_nan=False) + "\n")
    sys.stdout.flush()


class Failure(Exception):
    """A one-line error for the orchestrator."""


def _version(text):
    out = []
    for part in str(text).split("+")[0].split(".")[:2]:
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out)


def check():
    """Reports the Python, torch, transformers and safetensors versions, or what is missing."""
    info = {"python": "%d.%d.%d" % sys.version_info[:3], "executable": sys.executable}
    missing = []
    too_old = []
    for name, minimum in (("torch", MIN_TORCH), ("transformers", MIN_TRANSFORMERS), ("safetensors", None)):
        try:
            module = __import__(name)
        except Exception as e:  # ImportError, or a broken install
            missing.append(name)
            info[name + "_error"] = "%s: %s" % (type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            continue
        info[name] = getattr(module, "__version__", "unknown")
        if minimum is not None and _version(info[name]) < minimum:
            too_old.append("%s %s (needs >= %s)" % (name, info[name], ".".join(map(str, minimum))))
    if "torch" in info:
        import torch

        info["cuda"] = bool(torch.cuda.is_available())
        info["cuda_devices"] = torch.cuda.device_count() if info["cuda"] else 0
        if info["cuda"]:
            info["cuda_name"] = torch.cuda.get_device_name(0)
    info["missing"] = missing
    info["too_old"] = too_old
    info["ok"] = not missing and not too_old and os.path.isfile(RUNTIME)
    if not os.path.isfile(RUNTIME):
        info["runtime_missing"] = RUNTIME
    emit("check", **info)
    return 0 if info["ok"] else 3


def load_runtime():
    spec = importlib.util.spec_from_file_location("factored_keys_runtime", RUNTIME)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_json(path, what):
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise Failure("%s: %s not found" % (path, what))
    except ValueError as e:
        raise Failure("%s: %s is not valid JSON (%s)" % (path, what, e))


def shard_files(ckpt):
    """The shard file names in index order (as our reader orders them, src/core/checkpoint)."""
    index = os.path.join(ckpt, "model.safetensors.index.json")
    if os.path.isfile(index):
        weight_map = read_json(index, "model.safetensors.index.json").get("weight_map")
        if not isinstance(weight_map, dict):
            raise Failure("%s: has no weight_map" % index)
        files = []
        for f in weight_map.values():
            if f not in files:
                files.append(f)
    else:
        files = sorted(f for f in os.listdir(ckpt) if f.endswith(".safetensors"))
        if len(files) != 1:
            raise Failure("%s: %s" % (ckpt, "no .safetensors file" if not files else "%d .safetensors files but no model.safetensors.index.json" % len(files)))
    for f in files:
        if os.path.basename(f) != f or not f.endswith(".safetensors"):
            raise Failure("shard name %r is not a plain .safetensors file name" % (f,))
        if not os.path.isfile(os.path.join(ckpt, f)):
            raise Failure("%s: shard not found" % os.path.join(ckpt, f))
    return files


class Trainable:
    """One trained tensor: its parameter, and which output features (rows of a linear weight,
    columns of a conv1d weight, entries of a bias) training may change. key_up tensors may change
    only their block-diagonal entries (docs/FORMAT.md section 3)."""

    def __init__(self, name, param, dim):
        self.name = name
        self.param = param
        self.dim = dim  # the feature axis of the tensor
        self.features = set()
        self.block = None  # key_up: list of (row0, rows, col0, cols)

    def mask(self, torch):
        p = self.param
        if self.block is not None:
            m = torch.zeros(p.shape, dtype=torch.bool)
            for r0, rows, c0, cols in self.block:
                m[r0:r0 + rows, c0:c0 + cols] = True
            return m
        n = p.shape[self.dim]
        keep = torch.zeros(n, dtype=torch.bool)
        for f in self.features:
            if not 0 <= f < n:
                raise Failure("%s: slice feature %d outside its %d features" % (self.name, f, n))
            keep[f] = True
        shape = [1] * p.dim()
        shape[self.dim] = n
        return keep.view(shape).expand(p.shape).clone()


def select_trainables(model, fk, freeze_key_up=False):
    """The tensors named in the factored_keys block as queries, keys (with biases) and key_up
    (unless freeze_key_up)."""
    params = dict(model.named_parameters())
    out = {}

    def get(name, dim):
        if name not in params:
            raise Failure("factored_keys names tensor %r, which the model built from this checkpoint does not have" % (name,))
        if name not in out:
            out[name] = Trainable(name, params[name], dim)
        elif out[name].dim != dim:
            raise Failure("tensor %r is listed with two orientations" % (name,))
        return out[name]

    d = fk["original_head_dim"]
    for i, layer in enumerate(fk["layers"]):
        for s in list(layer["query"]) + list(layer["key"]):
            if s.get("orientation") not in ("linear", "conv1d"):
                raise Failure("layers[%d]: slice orientation %r" % (i, s.get("orientation")))
            t = get(s["tensor"], 0 if s["orientation"] == "linear" else 1)
            t.features.update(range(s["offset"], s["offset"] + s["width"]))
            if s.get("bias"):
                b = get(s["bias"], 0)
                b.features.update(range(s["offset"], s["offset"] + s["width"]))
        if layer.get("key_up") and not freeze_key_up:
            t = get(layer["key_up"], 0)
            t.block = []
            off = 0
            for g, r in enumerate(fk["ranks"][i]):
                t.block.append((g * d, d, off, r))
                off += r
    return list(out.values())


def windows(tokens, seq, count, generator, torch):
    starts = torch.randint(0, tokens.numel() - seq, (count,), generator=generator)
    return torch.stack([tokens[s:s + seq] for s in starts.tolist()])


# rows of logits per float32 chunk of the KL: at most this many elements at a time
KL_CHUNK_ELEMENTS = 1 << 24
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "merges.txt", "vocab.txt")


def kl_divergence(student_logits, teacher_logits, torch, reduction="mean"):
    """KL(teacher || student) of the next-token distributions at every position, temperature 1,
    in float32 and in row chunks; the mean (or sum) over positions."""
    v = student_logits.shape[-1]
    s = student_logits.reshape(-1, v)
    t = teacher_logits.reshape(-1, v)
    rows = max(1, KL_CHUNK_ELEMENTS // v)
    total = 0.0
    for i in range(0, s.shape[0], rows):
        log_s = torch.log_softmax(s[i:i + rows].float(), dim=-1)
        log_t = torch.log_softmax(t[i:i + rows].float(), dim=-1)
        total = total + torch.nn.functional.kl_div(log_s, log_t, log_target=True, reduction="sum")
    return total / s.shape[0] if reduction == "mean" else total


def lm_loss(logits, x, torch, reduction="mean"):
    """Next-token cross-entropy of each window (positions 0..seq-2 predict 1..seq-1), in float32."""
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), x[:, 1:].reshape(-1), reduction=reduction)


def heldout_losses(model, tokens, seq, batch, device, torch, teacher=None):
    """Mean next-token loss over consecutive seq-token windows (as `factored-keys eval` scores)
    and, with a teacher, the mean KL(teacher || student) per position: {"lm": .., "kl": ..}."""
    n = tokens.numel() // seq
    data = tokens[: n * seq].view(n, seq)
    total, count, kl, positions = 0.0, 0, 0.0, 0
    with torch.no_grad():
        for i in range(0, n, batch):
            x = data[i:i + batch].to(device)
            logits = model(input_ids=x, use_cache=False).logits
            total += lm_loss(logits, x, torch, reduction="sum").item()
            count += x.shape[0] * (seq - 1)
            if teacher is not None:
                kl += kl_divergence(logits, teacher(input_ids=x, use_cache=False).logits, torch, reduction="sum").item()
                positions += x.numel()
    out = {"lm": total / count}
    if teacher is not None:
        out["kl"] = kl / positions
    return out


def heldout_loss(model, tokens, seq, batch, device, torch):
    return heldout_losses(model, tokens, seq, batch, device, torch)["lm"]


def source_manifest(folder):
    """SHA-256 over config.json and each shard's name, size and safetensors header, in index
    order: what an export's factored_keys_report.json records as source.manifest_sha256
    (src/core/export/export.ts, exportSource)."""
    h = hashlib.sha256()
    with open(os.path.join(folder, "config.json"), "rb") as f:
        config = f.read()
    h.update(b"config.json %d\n" % len(config))
    h.update(config)
    for name in shard_files(folder):
        path = os.path.join(folder, name)
        with open(path, "rb") as f:
            length = int.from_bytes(f.read(8), "little")
            header = f.read(length)
        h.update(("\n%s %d %d\n" % (name, os.path.getsize(path), length)).encode("utf-8"))
        h.update(header)
    return h.hexdigest()


def _vocab_size(config):
    v = config.get("vocab_size")
    if v is None and isinstance(config.get("text_config"), dict):
        v = config["text_config"].get("vocab_size")
    return v


def check_teacher(teacher, ckpt, student_config):
    """The teacher is the export's source: an unfactored checkpoint folder with the export's
    vocabulary and tokenizer files and, where the export's report records it, its manifest."""
    where = "--teacher %s" % teacher
    if not os.path.isdir(teacher):
        raise Failure("%s: no such folder" % where)
    if not os.path.isfile(os.path.join(teacher, "config.json")):
        raise Failure("%s: not a checkpoint folder (no config.json)" % where)
    config = read_json(os.path.join(teacher, "config.json"), "config.json")
    if not isinstance(config, dict):
        raise Failure("%s: config.json is not a JSON object" % where)
    if "factored_keys" in config:
        raise Failure("%s: is a factored export; the teacher is the original checkpoint the export was made from" % where)
    try:
        shard_files(teacher)
    except Failure as e:
        raise Failure("%s: not a safetensors checkpoint (%s)" % (where, e))
    if _vocab_size(config) != _vocab_size(student_config):
        raise Failure("%s: has a vocabulary of %s tokens, the export %s: the teacher must use the export's tokenizer" % (where, _vocab_size(config), _vocab_size(student_config)))
    for name in TOKENIZER_FILES:
        a, b = os.path.join(teacher, name), os.path.join(ckpt, name)
        if os.path.isfile(a) != os.path.isfile(b):
            raise Failure("%s: %s has %s and the other has not: the teacher must use the export's token ids" % (where, "the teacher" if os.path.isfile(a) else "the export", name))
        if os.path.isfile(a):
            with open(a, "rb") as fa, open(b, "rb") as fb:
                if fa.read() != fb.read():
                    raise Failure("%s: its %s differs from the export's: the teacher must use the export's token ids" % (where, name))
    report = os.path.join(ckpt, "factored_keys_report.json")
    if os.path.isfile(report):
        source = read_json(report, "factored_keys_report.json").get("source") or {}
        want = source.get("manifest_sha256")
        if isinstance(want, str) and source_manifest(teacher) != want:
            raise Failure("%s: is not the checkpoint this export was made from (%s): its config.json and shard headers differ from the ones factored_keys_report.json records" % (where, source.get("name", "?")))


def train(args):
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file
    import transformers

    if not os.path.isfile(RUNTIME):
        raise Failure("the runtime template %s is missing from this installation" % RUNTIME)
    ckpt = os.path.abspath(args.checkpoint)
    config_json = read_json(os.path.join(ckpt, "config.json"), "config.json")
    fk_raw = config_json.get("factored_keys")
    if not isinstance(fk_raw, dict):
        raise Failure("%s: config.json has no factored_keys block; export the checkpoint first (factored-keys export)" % ckpt)
    if not os.path.isdir(args.out):
        raise Failure("%s: output folder does not exist" % args.out)

    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    if args.device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        device = args.device
        if device == "cuda" and not torch.cuda.is_available():
            raise Failure("--device cuda: this PyTorch sees no CUDA device (torch %s)" % torch.__version__)
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if args.threads:
        torch.set_num_threads(args.threads)

    with open(args.tokens, "rb") as f:
        raw = f.read()
    if len(raw) % 4:
        raise Failure("%s: not a whole number of int32 token ids" % args.tokens)
    tokens = torch.frombuffer(bytearray(raw), dtype=torch.int32).to(torch.long)
    seq = args.seq
    held_n = int(tokens.numel() * args.heldout_fraction)
    held_n = min(max(held_n, 2 * seq), args.heldout_max_tokens)
    if tokens.numel() - held_n < 4 * (seq + 1):
        raise Failure("the training text has %d tokens: too few for --seq %d (it needs at least %d)" % (tokens.numel(), seq, held_n + 4 * (seq + 1)))
    train_tokens, held_tokens = tokens[:-held_n], tokens[-held_n:]

    runtime = load_runtime()
    config = transformers.AutoConfig.from_pretrained(ckpt, trust_remote_code=False, local_files_only=True)
    vocab = getattr(config, "vocab_size", None)
    if isinstance(vocab, int) and int(tokens.max()) >= vocab:
        raise Failure("token id %d is outside the model's vocabulary of %d: wrong --tokenizer?" % (int(tokens.max()), vocab))
    max_pos = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if isinstance(max_pos, int) and seq > max_pos:
        raise Failure("--seq %d is longer than the model's %d positions" % (seq, max_pos))
    fk = runtime._read_block(config)
    cls = runtime.factored_class(config)
    teacher_dir = os.path.abspath(args.teacher) if args.teacher else None
    if teacher_dir:
        check_teacher(teacher_dir, ckpt, config_json)
    dtype_kw = "dtype" if _version(transformers.__version__) >= (4, 56) else "torch_dtype"
    t0 = time.time()
    model = cls.from_pretrained(ckpt, config=config, local_files_only=True, attn_implementation=args.attn, **{dtype_kw: torch.float32})
    model.to(device)
    model.eval()  # dropout off: a short fine-tune of a few tensors, measured deterministically
    for p in model.parameters():
        p.requires_grad_(False)
    teacher = None
    if teacher_dir:
        # the original model, by transformers' stock classes only; same dtype policy as the student
        teacher = transformers.AutoModelForCausalLM.from_pretrained(teacher_dir, trust_remote_code=False, local_files_only=True, use_safetensors=True, attn_implementation=args.attn, **{dtype_kw: torch.float32})
        teacher.to(device)
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        t_out, s_out = teacher.get_output_embeddings(), model.get_output_embeddings()
        if t_out is not None and s_out is not None and t_out.weight.shape[0] != s_out.weight.shape[0]:
            raise Failure("--teacher %s: predicts %d tokens, the export %d" % (args.teacher, t_out.weight.shape[0], s_out.weight.shape[0]))
    lm_weight = 1.0 if teacher is None else args.lm_weight
    loss_name = "lm" if lm_weight == 1 else ("kl" if lm_weight == 0 else "kl+lm")
    criterion = "kl" if teacher is not None else "lm"
    trainables = select_trainables(model, fk, args.freeze_key_up)
    masks = []
    for t in trainables:
        t.param.requires_grad_(True)
        m = t.mask(torch)
        full = bool(m.all())
        masks.append(None if full else m.to(device))
    params = [t.param for t in trainables]
    # frozen features are restored bit for bit after every step (the mask alone keeps them, and
    # weight decay is applied only to trained entries, but this makes it a guarantee)
    frozen = [None if m is None else t.param.detach().clone() for t, m in zip(trainables, masks)]
    initial = [t.param.detach().to("cpu", copy=True) for t in trainables]
    n_trained = sum(int(p.numel()) if m is None else int(m.sum()) for p, m in zip(params, masks))
    emit("start", device=device, device_name=(torch.cuda.get_device_name(0) if device == "cuda" else "cpu"), torch=torch.__version__, transformers=transformers.__version__,
         tensors=[t.name for t in trainables], trained_parameters=n_trained, total_parameters=sum(int(p.numel()) for p in model.parameters()),
         train_tokens=int(train_tokens.numel()), heldout_tokens=int(held_tokens.numel()), steps=args.steps, batch=args.batch, seq=seq, lr=args.lr, load_s=round(time.time() - t0, 3),
         loss=loss_name, lm_weight=lm_weight, criterion=criterion, teacher=(os.path.basename(teacher_dir) if teacher_dir else None), freeze_key_up=bool(args.freeze_key_up))

    storage = {}
    for f in shard_files(ckpt):
        with safe_open(os.path.join(ckpt, f), framework="pt") as s:
            for k in s.keys():
                storage[k] = f
    names = {t.name for t in trainables}
    missing = sorted(names - set(storage))
    if missing:
        raise Failure("tensor %r is not in the checkpoint's shards" % missing[0])
    dtypes = {}
    for f in set(storage[n] for n in names):
        with safe_open(os.path.join(ckpt, f), framework="pt") as s:
            for n in names:
                if storage[n] == f:
                    dtypes[n] = s.get_slice(n).get_dtype()

    def round_to_storage():
        """Rounds the trained tensors to the checkpoint's dtype in place (what will be written)."""
        with torch.no_grad():
            for t in trainables:
                dt = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64}.get(dtypes[t.name])
                if dt is None:
                    raise Failure("%s: dtype %s cannot be written" % (t.name, dtypes[t.name]))
                t.param.copy_(t.param.to(dt).to(torch.float32))

    def evaluate(phase):
        r = heldout_losses(model, held_tokens, seq, args.batch, device, torch, teacher)
        emit("eval", phase=phase, loss=r["lm"], perplexity=math.exp(r["lm"]), **({"kl": r["kl"]} if "kl" in r else {}))
        return r

    before = evaluate("before")

    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))
    warmup = max(1, min(args.warmup, args.steps // 5))

    def lr_at(step):
        if step < warmup:
            return args.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, args.steps - warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    every = max(1, args.steps // 50)
    t_start = time.time()
    tokens_done = 0
    loss_acc, loss_n = 0.0, 0
    parts_acc = {}

    def objective(x):
        """The training loss, and its KL and LM parts (detached) when there is a teacher."""
        if teacher is None:
            return model(input_ids=x, labels=x, use_cache=False).loss, {}
        with torch.no_grad():
            teacher_logits = teacher(input_ids=x, use_cache=False).logits
        logits = model(input_ids=x, use_cache=False).logits
        if lm_weight == 1:
            lm = lm_loss(logits, x, torch)
            with torch.no_grad():
                kl = kl_divergence(logits, teacher_logits, torch)
            return lm, {"kl": kl.detach(), "lm": lm.detach()}
        kl = kl_divergence(logits, teacher_logits, torch)
        if lm_weight == 0:
            return kl, {"kl": kl.detach()}
        lm = lm_loss(logits, x, torch)
        return (1 - lm_weight) * kl + lm_weight * lm, {"kl": kl.detach(), "lm": lm.detach()}

    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        x = windows(train_tokens, seq, args.batch, generator, torch).to(device, non_blocking=True)
        if device == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.bf16):
                loss, parts = objective(x)
        else:
            loss, parts = objective(x)
        if not torch.isfinite(loss):
            raise Failure("the loss became %s at step %d: lower --lr" % (loss.item(), step + 1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            for p, m in zip(params, masks):
                if m is not None and p.grad is not None:
                    p.grad.mul_(m)
        opt.step()
        with torch.no_grad():
            for p, m, f0 in zip(params, masks, frozen):
                if m is not None:
                    p.copy_(torch.where(m, p, f0))
        tokens_done += x.numel()
        loss_acc += loss.detach()
        for k, v in parts.items():
            parts_acc[k] = parts_acc.get(k, 0.0) + v
        loss_n += 1
        if (step + 1) % every == 0 or step + 1 == args.steps:
            mean = (loss_acc / loss_n).item()
            means = {k: (v / loss_n).item() for k, v in parts_acc.items()}
            loss_acc, loss_n, parts_acc = 0.0, 0, {}
            elapsed = time.time() - t_start
            rate = tokens_done / elapsed if elapsed > 0 else 0.0
            eta = elapsed / (step + 1) * (args.steps - step - 1)
            emit("step", step=step + 1, steps=args.steps, loss=mean, lr=lr_at(step), tokens_per_s=round(rate, 1), elapsed_s=round(elapsed, 3), eta_s=round(eta, 3), **means)
    train_s = time.time() - t_start

    round_to_storage()
    after = evaluate("after")
    kept = "trained" if after[criterion] < before[criterion] else "original"
    if kept == "original":
        with torch.no_grad():
            for t, w in zip(trainables, initial):
                t.param.copy_(w.to(t.param.device))

    # write every shard: untouched tensors exactly as read, trained ones replaced
    by_name = {t.name: t for t in trainables}
    for f in shard_files(ckpt):
        tensors = {}
        with safe_open(os.path.join(ckpt, f), framework="pt") as s:
            metadata = s.metadata()
            for k in s.keys():
                v = s.get_tensor(k)
                t = by_name.get(k)
                if t is not None:
                    new = t.param.detach().to("cpu").to(v.dtype)
                    if new.shape != v.shape:
                        raise Failure("%s: trained shape %s differs from the stored %s" % (k, list(new.shape), list(v.shape)))
                    m = t.mask(torch)
                    v = torch.where(m, new, v).contiguous()
                tensors[k] = v
        save_file(tensors, os.path.join(args.out, f), metadata=metadata)
        emit("saved", file=f, tensors=len(tensors))
    kl_fields = {"before_kl": before["kl"], "after_kl": after["kl"]} if teacher is not None else {}
    emit("done", kept=kept, before_loss=before["lm"], after_loss=after["lm"], before_perplexity=math.exp(before["lm"]), after_perplexity=math.exp(after["lm"]),
         train_s=round(train_s, 3), tokens_per_s=round(tokens_done / train_s, 1) if train_s > 0 else None, steps=args.steps, batch=args.batch, seq=seq, lr=args.lr,
         trained_parameters=n_trained, device=device, criterion=criterion, loss=loss_name, lm_weight=lm_weight, freeze_key_up=bool(args.freeze_key_up),
         teacher=(os.path.basename(teacher_dir) if teacher_dir else None), **kl_fields)
    return 0


def main(argv):
    parser = argparse.ArgumentParser(prog="train_factored_keys.py", description="Fine-tune the queries and thin keys of a factored-keys checkpoint.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="report the Python, torch and transformers versions")
    t = sub.add_parser("train", help="train and write the shards into --out")
    t.add_argument("--checkpoint", required=True)
    t.add_argument("--tokens", required=True, help="token ids, little-endian int32")
    t.add_argument("--out", required=True, help="an existing folder to write the shards into")
    t.add_argument("--steps", type=int, default=300)
    t.add_argument("--lr", type=float, default=5e-4)
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--seq", type=int, default=256)
    t.add_argument("--warmup", type=int, default=30)
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--heldout-fraction", type=float, default=0.05)
    t.add_argument("--heldout-max-tokens", type=int, default=262144)
    t.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    t.add_argument("--threads", type=int, default=0)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--attn", default="eager", help="attn_implementation (default eager, the path the runtime's checks use)")
    t.add_argument("--bf16", action="store_true", help="bf16 autocast on CUDA (default: float32 with TF32 matmuls)")
    t.add_argument("--teacher", help="the export's source checkpoint folder: distil from it (loss KL(teacher || student))")
    t.add_argument("--lm-weight", type=float, default=None, help="with --teacher: loss = (1 - W) KL + W LM (default 0, pure distillation)")
    t.add_argument("--freeze-key-up", action="store_true", help="do not train key_up (latent mode's B)")
    args = parser.parse_args(argv)
    if args.command == "check":
        return check()
    for name in ("steps", "batch", "seq"):
        if getattr(args, name) < 1:
            raise Failure("--%s must be a positive integer" % name)
    if not (args.lr > 0 and math.isfinite(args.lr)):
        raise Failure("--lr must be a positive number")
    if not 0 < args.heldout_fraction < 1:
        raise Failure("--heldout-fraction must be between 0 and 1")
    if args.lm_weight is not None and not args.teacher:
        raise Failure("--lm-weight needs --teacher (without a teacher the loss is the LM loss)")
    if args.lm_weight is None:
        args.lm_weight = 0.0
    if not 0 <= args.lm_weight <= 1:
        raise Failure("--lm-weight must be between 0 and 1")
    return train(args)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Failure as e:
        emit("error", message=str(e))
        sys.exit(2)
    except KeyboardInterrupt:
        emit("error", message="cancelled")
        sys.exit(130)
    except Exception as e:  # an unexpected failure: one line, the type and message
        emit("error", message="%s: %s" % (type(e).__name__, " ".join(str(e).split())[:800]))
        sys.exit(1)
