# Factored Keys runtime for Hugging Face transformers.
#
# This file is a FIXED TEMPLATE of the Factored Keys project (python/modeling_factored_keys.py),
# copied byte for byte into every export. It contains no text taken from any checkpoint: every
# variable (tensor names, ranks, norms, RoPE, scales) is read from config.json's "factored_keys"
# block when the model is built. docs/FORMAT.md (sections 3, 4 and 9) is the specification.
#
#   model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
#
# How it works: the ORIGINAL architecture is built by transformers (the causal-LM class that the
# config's own model_type maps to), so embeddings, norms, MLPs, MoE, masks, generation and
# from_pretrained/save_pretrained are transformers' own. Only two things change, per layer:
#   1. the projection tensors that the export rewrote get their exported shapes (thin keys, and
#      in absorbed mode thin queries) and latent mode adds the layer's `k_up_proj`;
#   2. the attention module's forward is replaced by `_factored_attention_forward`, which caches
#      what the format says: per token the r-dim key latents c = x.A (latent mode) or the r-dim
#      keys (absorbed mode) of all KV heads, concatenated (sum of the layer's ranks), and the
#      full values. In latent mode the keys are rebuilt from the cached latents (k = c.B) before
#      the source's k-norm and RoPE at every step; nothing post-RoPE is cached.
#
# The cache is transformers' own DynamicCache (sliding-window layers included): its "keys" of a
# layer are a [batch, 1, tokens, sum(ranks)] tensor, so generate(), beam search, cropping and the
# masks work unchanged, and its key bytes are exactly what `factored-keys savings` predicts.
#
# Supported: eager and sdpa attention (softcap and sinks always run the eager path), dynamic
# caches, generate() (greedy, sampling, beams), save_pretrained (writes a factored checkpoint
# again, with this file), accelerate device_map, PEFT adapters on the projection modules.
# Not supported: flash-attention kernels in absorbed mode with rank != head_dim (they need equal
# query/value widths), static caches with left padding, quantized or offloaded caches, packed
# sequences with restarting position ids (keys are rotated at their cache position).
import inspect
import os
import shutil
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

FORMAT_VERSION = 1
RUNTIME_FILE = "modeling_factored_keys.py"


class FactoredKeysRuntimeError(ValueError):
    """The config.json's factored_keys block cannot be run by this runtime."""


def _require(cond, message):
    if not cond:
        raise FactoredKeysRuntimeError("factored_keys: " + message)


def _read_block(config):
    """The validated factored_keys block of a config (a dict)."""
    fk = getattr(config, "factored_keys", None)
    _require(isinstance(fk, dict), "config.json has no factored_keys block; not a factored-keys checkpoint")
    _require(fk.get("format_version") == FORMAT_VERSION, "format_version %r is not supported (expected %d)" % (fk.get("format_version"), FORMAT_VERSION))
    _require(fk.get("rope_mode") in ("absorbed", "latent"), "rope_mode must be 'absorbed' or 'latent'")
    layers = fk.get("layers")
    ranks = fk.get("ranks")
    _require(isinstance(layers, list) and isinstance(ranks, list) and len(layers) == len(ranks), "layers and ranks must be lists of equal length")
    d = fk.get("original_head_dim")
    h = fk.get("num_query_heads")
    kv = fk.get("num_kv_heads")
    q2kv = fk.get("query_to_kv")
    _require(all(isinstance(x, int) and x > 0 for x in (d, h, kv)), "original_head_dim, num_query_heads and num_kv_heads must be positive integers")
    _require(isinstance(q2kv, list) and len(q2kv) == h and all(isinstance(g, int) and 0 <= g < kv for g in q2kv), "query_to_kv must list one KV head per query head")
    for i, entry in enumerate(layers):
        _require(isinstance(entry, dict) and entry.get("layer") == i, "layers[%d].layer must be %d" % (i, i))
        _require(isinstance(entry.get("attention"), dict), "layers[%d] has no attention block (exported before the runtime existed: export again)" % i)
        r = ranks[i]
        _require(isinstance(r, list) and len(r) == kv and all(isinstance(x, int) and 1 <= x <= d for x in r), "ranks[%d] must hold one rank in 1..%d per KV head" % (i, d))
        _require(len(entry.get("query", [])) == h and len(entry.get("key", [])) == kv and len(entry.get("value", [])) == kv, "layers[%d] must list %d query, %d key and %d value slices" % (i, h, kv, kv))
        for s, w in zip(entry["key"], r):
            _require(s.get("width") == w, "layers[%d] key slice widths must equal ranks[%d]" % (i, i))
        _require((entry.get("key_up") is None) == (fk["rope_mode"] == "absorbed"), "layers[%d].key_up must be set exactly in latent mode" % i)
    return fk


def _module_path(tensor):
    """'model.layers.0.self_attn.k_proj.weight' -> ('model.layers.0.self_attn.k_proj', 'weight')."""
    _require(isinstance(tensor, str) and "." in tensor, "tensor name %r has no module path" % (tensor,))
    return tuple(tensor.rsplit(".", 1))


def _relative(root, path):
    _require(path.startswith(root + "."), "%r is not inside the attention module %r" % (path, root))
    return path[len(root) + 1:]


def _ranges(slices):
    """Merges adjacent [offset, offset+width) slices of one module's output into few narrow() calls."""
    out = []
    for off, width in slices:
        if out and out[-1][0] + out[-1][1] == off:
            out[-1] = (out[-1][0], out[-1][1] + width)
        else:
            out.append((off, width))
    return out


class _LayerPlan:
    """What one layer's factored attention needs, read from config.json (no tensors)."""

    def __init__(self, fk, index, attention_path):
        entry = fk["layers"][index]
        att = entry["attention"]
        self.index = index
        self.mode = fk["rope_mode"]
        self.head_dim = fk["original_head_dim"]
        self.query_heads = fk["num_query_heads"]
        self.kv_heads = fk["num_kv_heads"]
        self.query_to_kv = list(fk["query_to_kv"])
        self.ranks = list(fk["ranks"][index])
        self.scale = float(att.get("scale", fk.get("softmax_scale")))
        self.softcap = att.get("softcap")
        self.rotary_dim = att.get("rotary_dim") if self.mode == "latent" else None
        self.sinks = None if att.get("sinks") is None else _relative(attention_path, att["sinks"])
        self.output = _relative(attention_path, _module_path(att["output"])[0])
        self.key_up = None if entry["key_up"] is None else _relative(attention_path, _module_path(entry["key_up"])[0])
        self.q_norm = self._norm(att.get("q_norm"), attention_path)
        self.k_norm = self._norm(att.get("k_norm"), attention_path)
        _require(self.mode == "latent" or (self.q_norm is None and self.k_norm is None), "absorbed mode cannot have q/k norms")
        self.query = self._role(entry["query"], attention_path)
        self.key = self._role(entry["key"], attention_path)
        self.value = self._role(entry["value"], attention_path)
        for s in entry["value"]:
            _require(s["width"] == self.head_dim, "value slices must be head_dim wide")
        widths = [s["width"] for s in entry["query"]]
        want = [self.ranks[g] for g in self.query_to_kv] if self.mode == "absorbed" else [self.head_dim] * self.query_heads
        _require(widths == want, "layer %d query slice widths %r should be %r" % (index, widths, want))
        self.uniform = len(set(self.ranks)) == 1
        self.offsets = [sum(self.ranks[:g]) for g in range(self.kv_heads)]

    @staticmethod
    def _norm(n, root):
        if n is None:
            return None
        _require(n.get("scope") in ("head", "projection"), "norm scope must be 'head' or 'projection'")
        return (_relative(root, _module_path(n["weight"])[0]), n["scope"])

    @staticmethod
    def _role(slices, root):
        """[(module relative path, [(offset, width)...])] in slice order, grouped by module."""
        groups = []
        for s in slices:
            path, param = _module_path(s["tensor"])
            _require(param == "weight", "slice tensor %r must be a weight" % (s["tensor"],))
            _require(s.get("bias") in (None, path + ".bias"), "slice bias %r must be the bias of %r" % (s.get("bias"), path))
            _require(isinstance(s.get("offset"), int) and isinstance(s.get("width"), int) and s["offset"] >= 0 and s["width"] > 0, "slice offsets and widths must be integers")
            rel = _relative(root, path)
            if groups and groups[-1][0] == rel:
                groups[-1][1].append((s["offset"], s["width"]))
            else:
                groups.append((rel, [(s["offset"], s["width"])]))
        return [(rel, _ranges(sl)) for rel, sl in groups]


def _project(module, x, role):
    """Concatenates a role's slices (e.g. every query head) from the outputs of its modules."""
    parts = []
    cache = {}
    for rel, ranges in role:
        y = cache.get(rel)
        if y is None:
            y = cache[rel] = module.get_submodule(rel)(x)
        parts.extend(y.narrow(-1, off, width) for off, width in ranges)
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


def _padded_heads(x, widths, width):
    """[B, T, sum(widths)] -> [B, n, T, width], head j in its first widths[j] features, zeros after."""
    b, t, _ = x.shape
    if all(w == width for w in widths):
        return x.view(b, t, len(widths), width).transpose(1, 2)
    out = x.new_zeros(b, len(widths), t, width)
    off = 0
    for j, w in enumerate(widths):
        out[:, j, :, :w] = x[..., off:off + w]
        off += w
    return out


def _norm_heads(module, norm, x, heads, head_dim):
    """Applies the source's q/k norm to [B, T, heads*head_dim] and returns [B, T, heads, head_dim]."""
    b, t, _ = x.shape
    if norm is None:
        return x.view(b, t, heads, head_dim)
    rel, scope = norm
    if scope == "projection":
        return module.get_submodule(rel)(x).view(b, t, heads, head_dim)
    return module.get_submodule(rel)(x.view(b, t, heads, head_dim))


def _rotate(module, x, positions, plan):
    """RoPE of the source model on [B, n, L, d] at `positions` ([1 or B, L]), first rotary_dim dims."""
    rd = plan.rotary_dim
    rot, rest = (x, None) if rd == x.shape[-1] else (x[..., :rd], x[..., rd:])
    fk_rope = module._fk_rope
    if fk_rope["kind"] == "embed_positions":  # GPT-J: sin/cos table inside the attention module
        table = module.embed_positions.to(x.device)[positions]
        sin, cos = torch.split(table.to(x.dtype), table.shape[-1] // 2, dim=-1)
        rot = fk_rope["apply"](rot.transpose(1, 2), sin, cos).transpose(1, 2)
    else:
        rotary = fk_rope["rotary"]
        extra = {"layer_type": fk_rope["layer_type"]} if fk_rope["layer_type"] is not None else {}
        cos, sin = rotary(rot, positions, **extra)
        rot = fk_rope["apply"](rot, rot, cos, sin)[1]
    return rot if rest is None else torch.cat((rot, rest), dim=-1)


def _eager(module, q, k, v, mask, plan, dropout):
    """Attention with the source's scale, softcap, mask and sinks; q/k may be rank wide, v head_dim wide."""
    groups = q.shape[1] // k.shape[1]
    if groups > 1:
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
    scores = torch.matmul(q, k.transpose(2, 3)) * plan.scale
    if plan.softcap is not None:
        scores = torch.tanh(scores / plan.softcap) * plan.softcap
    t, length = q.shape[-2], k.shape[-2]
    if mask is None:
        if t > 1:
            keep = torch.ones(t, length, dtype=torch.bool, device=q.device).tril(length - t)
            scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
    elif mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask[..., :length], torch.finfo(scores.dtype).min)
    else:
        scores = scores + mask[..., :length]
    if plan.sinks is not None:
        sinks = module.get_parameter(plan.sinks).reshape(1, -1, 1, 1).expand(q.shape[0], -1, t, 1).to(scores.dtype)
        combined = torch.cat([scores, sinks], dim=-1)
        combined = combined - combined.max(dim=-1, keepdim=True).values
        probs = F.softmax(combined, dim=-1, dtype=combined.dtype)[..., :-1]
    else:
        probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    probs = F.dropout(probs, p=dropout, training=module.training)
    return torch.matmul(probs.to(v.dtype), v).transpose(1, 2).contiguous(), probs


def _factored_attention_forward(self, hidden_states, *args, **kwargs):
    """Replaces the source attention's forward; same arguments, same (output, weights) result."""
    bound = self._fk_signature.bind(self, hidden_states, *args, **kwargs)
    named = dict(bound.arguments)
    extra = dict(named.pop("kwargs", {}) or {})
    plan = self._fk_plan
    mask = named.get("attention_mask")
    cache = named.get("past_key_values", named.get("layer_past"))
    cache = getattr(cache, "self_attention_cache", cache)  # an EncoderDecoderCache (GPT-2)
    b, t, _ = hidden_states.shape
    d, h, kv = plan.head_dim, plan.query_heads, plan.kv_heads

    queries = _project(self, hidden_states, plan.query)
    thin = _project(self, hidden_states, plan.key)  # [B, T, sum(ranks)]: latents c or thin keys
    values = _project(self, hidden_states, plan.value).view(b, t, kv, d).transpose(1, 2)

    before = cache.get_seq_length(plan.index) if cache is not None else 0
    if cache is not None:
        thin_all, values = cache.update(thin.unsqueeze(1), values, plan.index)
        thin_all = thin_all.squeeze(1)
    else:
        thin_all = thin
    length = thin_all.shape[1]

    if plan.mode == "absorbed":
        width = max(plan.ranks)
        q = _padded_heads(queries, [plan.ranks[g] for g in plan.query_to_kv], width)
        k = _padded_heads(thin_all, plan.ranks, width)
    else:
        q = _norm_heads(self, plan.q_norm, queries, h, d).transpose(1, 2)
        keys = self.get_submodule(plan.key_up)(thin_all)  # k = c . B^T, every KV head at once
        k = _norm_heads(self, plan.k_norm, keys, kv, d).transpose(1, 2)
        if plan.rotary_dim:
            # a dynamic cache holds the last `length` of `before + t` tokens; a static one, slots 0..length-1
            start = before + t - length if length <= before + t else 0
            positions = torch.arange(start, start + length, device=k.device).unsqueeze(0)
            k = _rotate(self, k, positions, plan)
            q = _rotate(self, q, positions[:, length - t:] if length >= t else positions, plan)
    dropout = float(getattr(self, "attention_dropout", 0.0) or 0.0) if self.training else 0.0
    implementation = getattr(self.config, "_attn_implementation", None) or "eager"
    if implementation == "eager" or plan.softcap is not None or plan.sinks is not None:
        out, weights = _eager(self, q, k, values, mask, plan, dropout)
    else:
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        for name in ("output_attentions", "use_cache", "position_embeddings", "position_ids", "cache_position", "head_mask", "encoder_hidden_states", "encoder_attention_mask", "alibi"):
            extra.pop(name, None)
        out, weights = ALL_ATTENTION_FUNCTIONS[implementation](self, q, k, values, mask, dropout=dropout, scaling=plan.scale, **extra)
    out = self.get_submodule(plan.output)(out.reshape(b, t, h * d))
    if isinstance(getattr(self, "resid_dropout", None), nn.Module):
        out = self.resid_dropout(out)
    elif isinstance(getattr(self, "residual_dropout", None), float):
        out = F.dropout(out, p=self.residual_dropout, training=self.training)
    return out, weights


_ATTENTION_CLASSES = {}


def _factored_attention_class(cls):
    """A subclass of the source attention class whose forward is the factored one."""
    if cls not in _ATTENTION_CLASSES:
        _ATTENTION_CLASSES[cls] = type("FactoredKeys" + cls.__name__, (cls,), {
            "forward": _factored_attention_forward,
            "_fk_signature": inspect.signature(cls.forward),
            "_fk_source_module": cls.__module__,
        })
    return _ATTENTION_CLASSES[cls]


def _find_rotary(model):
    """The model-level rotary embedding module (transformers' <Family>RotaryEmbedding), or None."""
    for name, m in model.named_modules():
        if type(m).__name__.endswith("RotaryEmbedding") and ".layers." not in "." + name + "." and ".h." not in "." + name + ".":
            return m
    return None


def _replace_parameter(model, tensor, shape):
    path, pname = _module_path(tensor)
    module = model.get_submodule(path)
    old = getattr(module, pname)
    _require(isinstance(old, torch.Tensor), "%r is not a parameter of the source model" % (tensor,))
    _require(len(shape) == old.dim(), "%r: exported shape %r does not match the source's rank" % (tensor, shape))
    setattr(module, pname, nn.Parameter(torch.empty(shape, dtype=old.dtype, device=old.device), requires_grad=old.requires_grad))
    if pname == "weight" and isinstance(module, nn.Linear):
        module.out_features, module.in_features = shape[0], shape[1]
    elif pname == "weight" and hasattr(module, "nf") and len(shape) == 2:  # transformers' Conv1D [in, out]
        module.nf = shape[1]


def factorize(model, config):
    """Gives `model` (the source architecture, just built) the exported shapes and factored attention."""
    fk = _read_block(config)
    rotary = _find_rotary(model)
    layer_types = getattr(config, "layer_types", None)
    for i, entry in enumerate(fk["layers"]):
        att = entry["attention"]
        attention_path = _module_path(att["output"])[0].rsplit(".", 1)[0]
        shapes = att.get("shapes")
        _require(isinstance(shapes, dict), "layers[%d].attention.shapes must map tensor names to shapes" % i)
        for tensor, shape in shapes.items():
            _require(isinstance(shape, list) and all(isinstance(x, int) and x > 0 for x in shape), "shape of %r must be a list of positive integers" % (tensor,))
            if tensor == entry["key_up"]:
                continue
            _replace_parameter(model, tensor, shape)
        module = model.get_submodule(attention_path)
        if entry["key_up"] is not None:
            shape = shapes.get(entry["key_up"])
            _require(shape == [fk["num_kv_heads"] * fk["original_head_dim"], sum(fk["ranks"][i])], "layers[%d] key_up shape must be [kv_heads*head_dim, sum(ranks)]" % i)
            ref = model.get_parameter(entry["key"][0]["tensor"])
            parent, child = _module_path(entry["key_up"])[0].rsplit(".", 1)
            model.get_submodule(parent).add_module(child, nn.Linear(shape[1], shape[0], bias=False, dtype=ref.dtype, device=ref.device))
        plan = _LayerPlan(fk, i, attention_path)
        source = type(module)
        module.__class__ = _factored_attention_class(source)
        module._fk_plan = plan
        if not hasattr(module, "num_key_value_groups"):
            module.num_key_value_groups = plan.query_heads // plan.kv_heads
        if plan.rotary_dim:
            apply = getattr(sys.modules[source.__module__], "apply_rotary_pos_emb", None)
            _require(apply is not None, "layer %d: the source attention module has no apply_rotary_pos_emb" % i)
            if hasattr(module, "embed_positions"):
                module._fk_rope = {"kind": "embed_positions", "apply": apply}
            else:
                _require(rotary is not None, "layer %d uses RoPE but the model has no rotary embedding module" % i)
                wants_type = "layer_type" in inspect.signature(rotary.forward).parameters
                # a plain dict keeps the base model's rotary module out of this module's tree
                module._fk_rope = {"kind": "module", "apply": apply, "rotary": rotary, "layer_type": layer_types[i] if wants_type else None}
    return model


_MODEL_CLASSES = {}


def factored_class(config):
    """The source causal-LM class of `config` with factored attention: same name, same weights' names."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    base = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    if base in _MODEL_CLASSES:
        return _MODEL_CLASSES[base]

    def __init__(self, config, *args, **kwargs):
        base.__init__(self, config, *args, **kwargs)
        factorize(self, config)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Saves a factored checkpoint again (config with factored_keys and auto_map, this file)."""
        result = base.save_pretrained(self, save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            here = os.path.abspath(__file__)
            there = os.path.abspath(os.path.join(save_directory, RUNTIME_FILE))
            if here != there:
                shutil.copyfile(here, there)
        return result

    cls = type(base.__name__, (base,), {"__init__": __init__, "save_pretrained": save_pretrained, "__module__": base.__module__, "__qualname__": base.__qualname__, "_fk_factored": True})
    _MODEL_CLASSES[base] = cls
    return cls


class FactoredKeysForCausalLM:
    """The class config.json's auto_map names: builds the source architecture, factored.

    from_pretrained/from_config return an instance of the source's own causal-LM class (for
    example MistralForCausalLM) whose attention layers cache thin keys.
    """

    @classmethod
    def register_for_auto_class(cls, auto_class="AutoModelForCausalLM"):
        return None

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, config=None, **kwargs):
        if config is None:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(pretrained_model_name_or_path, **{k: v for k, v in kwargs.items() if k in ("revision", "cache_dir", "local_files_only", "token")})
        _read_block(config)
        kwargs.pop("trust_remote_code", None)
        return factored_class(config).from_pretrained(pretrained_model_name_or_path, *model_args, config=config, **kwargs)

    @classmethod
    def from_config(cls, config, **kwargs):
        _read_block(config)
        kwargs.pop("trust_remote_code", None)
        return factored_class(config)._from_config(config, **kwargs)
