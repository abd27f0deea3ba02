"""What a model is, read from its configuration alone: attention layout, KV-cache size, parameters, module tree.
It builds models on the meta device (no weights) and never prints; it reads names through transformers' config
attributes, with no per-architecture code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmscope.errors import ModelLoadError, UsageError
from llmscope.modelconfig import context_length

if TYPE_CHECKING:
    from llmscope.loader import LoadedModel

BYTES_PER_PARAMETER = {"float32": 4.0, "bfloat16": 2.0, "int8": 1.0, "4-bit": 0.5}
DTYPE_BYTES = {"float32": 4, "float64": 8, "bfloat16": 2, "float16": 2, "float8_e4m3fn": 1, "int8": 1, "uint8": 1}
KV_CACHE_LENGTHS = (1024, 4096)
PARAMETER_GROUPS = ("embeddings", "attention", "mlp", "norms", "lm_head", "other")
ATTENTION_HINTS = ("attn", "attention")
MLP_HINTS = ("mlp", "feed_forward", "feedforward", "ffn", "moe", "expert", "fc1", "fc2", "fc_in", "fc_out", "c_fc")


def config_value(config: Any, *names: str, default: Any = None) -> Any:
    """The first of `names` the config has (transformers' attribute_map makes most names standard)."""
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return default


def text_config(config: Any) -> Any:
    """The language-model part of a config (multimodal configs nest it)."""
    getter = getattr(config, "get_text_config", None)
    return getter() if callable(getter) else config


def head_dim(config: Any) -> int:
    config = text_config(config)
    explicit = getattr(config, "head_dim", None)
    if isinstance(explicit, int) and explicit > 0:
        return explicit
    return int(config.hidden_size) // int(config.num_attention_heads)


def kv_heads(config: Any) -> int:
    config = text_config(config)
    return int(config_value(config, "num_key_value_heads", "multi_query_group_num",
                            default=config.num_attention_heads))


def kv_cache_bytes_per_token(config: Any, bytes_per_value: int) -> int:
    """Bytes the KV cache holds per token of context at batch 1: 2 (K and V) x layers x KV heads x head dim."""
    config = text_config(config)
    return 2 * int(config.num_hidden_layers) * kv_heads(config) * head_dim(config) * bytes_per_value


# ---------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class AttentionLayout:
    heads: int
    kv_heads: int
    head_dim: int
    kind: str  # "multi-head", "grouped-query" or "multi-query"
    description: str  # in words, e.g. "grouped-query: 9 query heads share 3 KV heads, groups of 3"


@dataclass(frozen=True)
class ArchitectureSummary:
    model_class: str
    model_type: str
    layers: int
    hidden_size: int
    intermediate_size: int | None
    vocab_size: int
    attention: AttentionLayout
    context_length: int | None
    sliding_window: int | None
    sliding_window_layers: int  # layers that attend only to the last `sliding_window` tokens
    positional_encoding: str
    rope_theta: float | None
    rope_scaling: str | None
    activation: str | None
    norm: str | None
    norm_eps: float | None
    tied_embeddings: bool
    dtype: str | None  # the config's stored dtype, or the loaded dtype(s) with weights
    devices: tuple[str, ...]  # ("meta",) without weights


@dataclass(frozen=True)
class ParameterBreakdown:
    total: int  # unique parameters: a tied LM head is counted once, under embeddings
    embeddings: int
    attention: int
    mlp: int
    norms: int
    lm_head: int  # 0 when tied to the input embeddings
    other: int
    memory_bytes: dict[str, int]  # weights alone at float32 / bfloat16 / int8 / 4-bit


@dataclass(frozen=True)
class KvCachePoint:
    tokens: int
    bytes: int
    full_mha_bytes: int


@dataclass(frozen=True)
class KvCacheEstimate:
    dtype: str
    bytes_per_value: int
    bytes_per_token: int  # every layer, uncapped: 2 x layers x KV heads x head dim x bytes
    full_mha_bytes_per_token: int  # the same model with one KV head per query head
    saving: float  # 1 - bytes_per_token / full_mha_bytes_per_token
    full_attention_layers: int
    windowed_layers: int  # sliding-window / chunked layers: their cache stops growing at `window` tokens
    window: int | None
    points: tuple[KvCachePoint, ...]  # batch 1 at 1K, 4K and the full context
    note: str | None


@dataclass(frozen=True)
class ModuleNode:
    """One entry of the module tree; `repeat` > 1 for folded identical blocks ("(0-31): 32 x Block")."""

    name: str  # attribute name, or "0-31" for a folded run
    class_name: str
    extra: str  # the module's extra_repr(), as print(model) shows it
    parameters: int  # per module (per block when folded)
    repeat: int
    tied_to: str | None  # the parameter this module's weights are shared with, if it holds no weights of its own
    children: tuple[ModuleNode, ...]
    truncated: bool = False  # children cut by --depth

    @property
    def total_parameters(self) -> int:
        return self.parameters * self.repeat


@dataclass(frozen=True)
class ArchitectureReport:
    model: str
    source: str  # "config" (meta device, no weights) or "weights"
    summary: ArchitectureSummary
    parameters: ParameterBreakdown
    kv_cache: KvCacheEstimate
    tree: ModuleNode
    depth: int | None


# ---------------------------------------------------------------------------------------------- building


def build_empty_model(config: Any, trust_remote_code: bool = False) -> Any:
    """The model a config describes, built on the meta device: shapes and classes, no memory for weights."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except (ValueError, KeyError, TypeError, RuntimeError, NotImplementedError, AttributeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelLoadError(f"could not build {type(config).__name__} on the meta device: {first}",
                             hint="pass --weights to load the real model instead") from error


def describe_config_model(spec: Any, depth: int | None = None,
                          trust_remote_code: bool = False) -> ArchitectureReport:
    """Architecture from config.json alone (a hub id fetches only that file); the model is built on meta.

    spec is a loader.ModelSpec, or what resolve_model_spec takes (hub id, folder, .gguf file, alias, None).
    Raises ModelLoadError when the config cannot be read or does not describe a causal LM.
    """
    from llmscope.loader import ModelSpec, load_config, require_causal_lm, resolve_model_spec

    spec = spec if isinstance(spec, ModelSpec) else resolve_model_spec(spec)
    config = load_config(spec, trust_remote_code)
    require_causal_lm(config, spec)
    model = build_empty_model(config, trust_remote_code)
    return describe_architecture(model, config, spec.name, source="config", depth=depth)


def describe_loaded_model(loaded: LoadedModel, depth: int | None = None) -> ArchitectureReport:
    """Architecture of a loaded model, with its real dtypes and devices."""
    return describe_architecture(loaded.model, loaded.config, loaded.spec.name, source="weights", depth=depth)


def describe_architecture(model: Any, config: Any, name: str, source: str = "config",
                          depth: int | None = None) -> ArchitectureReport:
    """Summary, parameter split, KV-cache sizes and folded module tree of a model (meta or loaded)."""
    if depth is not None and depth < 0:
        raise UsageError(f"--depth must be 0 or more (got {depth})")
    summary = summarize(model, config, source)
    parameters = parameter_breakdown(model)
    kv_dtype = summary.dtype.split(",")[0] if summary.dtype else "float32"
    tree = module_tree(model)
    return ArchitectureReport(model=name, source=source, summary=summary, parameters=parameters,
                              kv_cache=kv_cache_estimate(config, kv_dtype),
                              tree=tree if depth is None else prune_tree(tree, depth), depth=depth)


# ---------------------------------------------------------------------------------------------- summary


def attention_layout(config: Any) -> AttentionLayout:
    config = text_config(config)
    heads, kv, dim = int(config.num_attention_heads), kv_heads(config), head_dim(config)
    if kv == heads:
        kind, words = "multi-head", f"multi-head: {heads} heads, each with its own keys and values"
    elif kv == 1:
        kind, words = "multi-query", f"multi-query: {heads} query heads share 1 KV head"
    else:
        group = f"groups of {heads // kv}" if heads % kv == 0 else f"about {heads / kv:.1f} per group"
        kind, words = "grouped-query", f"grouped-query: {heads} query heads share {kv} KV heads, {group}"
    return AttentionLayout(heads=heads, kv_heads=kv, head_dim=dim, kind=kind, description=words)


def _dtype_text(value: Any) -> str | None:
    return None if value is None else str(value).removeprefix("torch.")


def _rope(config: Any) -> tuple[float | None, str | None, str | None]:
    """(theta, scaling in words, positional text) from rope_parameters (transformers 5) or rope_theta."""
    parameters = getattr(config, "rope_parameters", None)
    if not parameters and getattr(config, "rope_theta", None) is None:
        return None, None, None
    if not isinstance(parameters, dict):
        parameters = {"rope_theta": config.rope_theta, "rope_type": "default"}
        scaling = getattr(config, "rope_scaling", None)
        if isinstance(scaling, dict):
            parameters.update(scaling)
    if parameters and all(isinstance(v, dict) for v in parameters.values()):  # one set per layer type
        parts = [f"{kind.replace('_attention', '')} layers theta {_number(p.get('rope_theta'))}"
                 for kind, p in parameters.items()]
        thetas = [p.get("rope_theta") for p in parameters.values() if p.get("rope_theta") is not None]
        return (max(thetas) if thetas else None), None, "rotary (RoPE): " + ", ".join(parts)
    theta = parameters.get("rope_theta", getattr(config, "rope_theta", None))
    rope_type = parameters.get("rope_type") or parameters.get("type") or "default"
    scaling = None
    if rope_type != "default":
        factor = parameters.get("factor")
        scaling = rope_type + (f" x{_number(factor)}" if factor else "")
    text = f"rotary (RoPE), theta {_number(theta)}"
    partial = parameters.get("partial_rotary_factor", getattr(config, "partial_rotary_factor", None))
    if partial is not None and float(partial) < 1:
        text += f", on {float(partial):.0%} of each head"
    if scaling:
        text += f", {scaling} scaling"
    return (float(theta) if theta is not None else None), scaling, text


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value:,}" if isinstance(value, int) else str(value)


def _positional(model: Any, config: Any) -> tuple[str, float | None, str | None]:
    import torch

    if getattr(config, "alibi", False) or getattr(getattr(config, "attn_config", None), "alibi", False):
        return "ALiBi (linear attention biases, no position embeddings)", None, None
    theta, scaling, text = _rope(config)
    if text:
        return text, theta, scaling
    inputs = model.get_input_embeddings()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Embedding) and module is not inputs:
            return f"learned absolute ({name}: {module.num_embeddings:,} positions)", None, None
    return "none in the config (relative or ALiBi, set in code)", None, None


def _norm(model: Any, config: Any) -> tuple[str | None, float | None]:
    eps = config_value(config, "rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon", "norm_eps", "norm_epsilon")
    for module in model.modules():
        name = type(module).__name__
        if "norm" in name.lower():
            kind = "RMSNorm" if "rms" in name.lower() else ("LayerNorm" if "layernorm" in name.lower() else name)
            return f"{kind} ({name})" if kind != name else kind, eps
    return None, eps


def layer_types(config: Any) -> list[str]:
    """Each layer's attention type as transformers' cache sees it (full, sliding, chunked, dummy...)."""
    config = text_config(config)
    try:
        from transformers.cache_utils import get_layer_types_and_kwargs

        decoder = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
        return list(get_layer_types_and_kwargs(decoder)[0])
    except (ImportError, AttributeError, TypeError, ValueError):
        layers = int(config.num_hidden_layers)
        declared = getattr(config, "layer_types", None)
        if declared:
            return list(declared)
        window = getattr(config, "sliding_window", None)
        return ["sliding_attention" if window else "full_attention"] * layers


def _window(config: Any, types: list[str]) -> int | None:
    config = text_config(config)
    if any("sliding" in kind for kind in types):
        return getattr(config, "sliding_window", None)
    if "chunked_attention" in types:
        return getattr(config, "attention_chunk_size", None)
    return None


def summarize(model: Any, config: Any, source: str = "config") -> ArchitectureSummary:
    text = text_config(config)
    positional, theta, scaling = _positional(model, text)
    norm, eps = _norm(model, text)
    types = layer_types(config)
    sliding = sum(1 for kind in types if "sliding" in kind)
    if source == "weights":
        dtypes = sorted({_dtype_text(p.dtype) for p in model.parameters()})
        devices = tuple(sorted({str(p.device) for p in model.parameters()}))
        dtype = ", ".join(d for d in dtypes if d)
    else:
        dtype, devices = _dtype_text(config_value(config, "dtype", "torch_dtype")), ("meta",)
    output = model.get_output_embeddings()
    tied = output is not None and output.weight is model.get_input_embeddings().weight
    return ArchitectureSummary(
        model_class=type(model).__name__, model_type=str(getattr(config, "model_type", "")),
        layers=int(text.num_hidden_layers), hidden_size=int(text.hidden_size),
        intermediate_size=config_value(text, "intermediate_size", "n_inner", "ffn_dim", "ffn_hidden_size"),
        vocab_size=int(text.vocab_size), attention=attention_layout(text), context_length=context_length(text),
        sliding_window=getattr(text, "sliding_window", None) if sliding else None, sliding_window_layers=sliding,
        positional_encoding=positional, rope_theta=theta, rope_scaling=scaling,
        activation=config_value(text, "hidden_act", "hidden_activation", "activation_function", "hidden_activation"),
        norm=norm, norm_eps=eps, tied_embeddings=tied, dtype=dtype or None, devices=devices)


# ---------------------------------------------------------------------------------------------- parameters


def _group_of(path: str, modules: dict[str, Any], module: Any, inputs: Any, output: Any) -> str:
    import torch

    if module is output:
        return "lm_head"
    if isinstance(module, torch.nn.Embedding) or module is inputs:
        return "embeddings"
    if "norm" in type(module).__name__.lower():
        return "norms"
    parts = path.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        words = (parts[end - 1] + " " + type(modules.get(prefix)).__name__).lower()
        if any(hint in words for hint in ATTENTION_HINTS):
            return "attention"
        if any(hint in words for hint in MLP_HINTS):
            return "mlp"
    return "other"


def parameter_breakdown(model: Any) -> ParameterBreakdown:
    """Unique parameters split by what they do; a tied LM head counts once, under embeddings."""
    modules = dict(model.named_modules())
    inputs, output = model.get_input_embeddings(), model.get_output_embeddings()
    counts = dict.fromkeys(PARAMETER_GROUPS, 0)
    seen: set[int] = set()
    for path, module in modules.items():
        for parameter in module.parameters(recurse=False):
            if id(parameter) in seen:
                continue
            seen.add(id(parameter))
            counts[_group_of(path, modules, module, inputs, output)] += parameter.numel()
    total = sum(counts.values())
    memory = {name: int(total * size) for name, size in BYTES_PER_PARAMETER.items()}
    return ParameterBreakdown(total=total, memory_bytes=memory, **counts)


# ---------------------------------------------------------------------------------------------- KV cache


def kv_cache_estimate(config: Any, dtype: str = "bfloat16", lengths: tuple[int, ...] = KV_CACHE_LENGTHS
                      ) -> KvCacheEstimate:
    """KV-cache bytes at batch 1 for a few context lengths, against the same model with full multi-head attention.

    Sliding-window (and chunked) layers keep at most `window` tokens, so their share stops growing there.
    """
    text = text_config(config)
    size = DTYPE_BYTES.get(dtype, 2)
    per_token = kv_cache_bytes_per_token(text, size)
    layers = int(text.num_hidden_layers)
    mha_per_token = per_token * int(text.num_attention_heads) // kv_heads(text)
    types = layer_types(config)
    windowed = sum(1 for kind in types if "sliding" in kind or kind == "chunked_attention")
    cached = sum(1 for kind in types if kind != "dummy")
    full = cached - windowed
    window = _window(config, types)
    limit = context_length(text)
    wanted = sorted({n for n in lengths if limit is None or n < limit} | ({limit} if limit else set()))

    def at(tokens: int, per: int) -> int:
        per_layer = per // layers
        capped = min(tokens, window) if window else tokens
        return per_layer * (full * tokens + windowed * capped)

    points = tuple(KvCachePoint(tokens=n, bytes=at(n, per_token), full_mha_bytes=at(n, mha_per_token))
                   for n in wanted)
    note = None
    if window and windowed:
        which = "every layer attends" if windowed == cached else f"{windowed} of {layers} layers attend"
        note = (f"{which} only to the last {window:,} tokens (local attention), so their cache "
                f"stops growing at {window:,} tokens")
    return KvCacheEstimate(dtype=dtype, bytes_per_value=size, bytes_per_token=per_token,
                           full_mha_bytes_per_token=mha_per_token,
                           saving=round(1 - per_token / mha_per_token, 6) if mha_per_token else 0.0,
                           full_attention_layers=full, windowed_layers=windowed, window=window if windowed else None,
                           points=points, note=note)


# ---------------------------------------------------------------------------------------------- module tree


def module_tree(model: Any) -> ModuleNode:
    """The module tree as print(model) shows it: repeated identical blocks in a ModuleList folded into one node."""
    import torch

    owners: dict[int, str] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(parameter), name)

    def build(name: str, path: str, module: Any) -> ModuleNode:
        children: list[ModuleNode] = []
        items = [(key, child) for key, child in module.named_children()]
        built = [build(key, f"{path}.{key}" if path else key, child) for key, child in items]
        if isinstance(module, torch.nn.ModuleList):
            start = 0
            while start < len(built):
                end = start
                while end + 1 < len(built) and _same(built[end + 1], built[start]):
                    end += 1
                node = built[start]
                if end > start:
                    node = ModuleNode(name=f"{start}-{end}", class_name=node.class_name, extra=node.extra,
                                      parameters=node.parameters, repeat=end - start + 1, tied_to=node.tied_to,
                                      children=node.children)
                children.append(node)
                start = end + 1
        else:
            children = built
        own = list(module.parameters())
        tied_to = None
        prefix = f"{path}." if path else ""
        if own and all(not owners[id(p)].startswith(prefix) for p in own):
            tied_to = owners[id(own[0])]
        return ModuleNode(name=name, class_name=type(module).__name__, extra=_extra(module, bool(items)),
                          parameters=sum(p.numel() for p in own), repeat=1, tied_to=tied_to,
                          children=tuple(children))

    return build("", "", model)


def _extra(module: Any, has_children: bool) -> str:
    """What print(model) shows inside a module's parentheses; leaves may override __repr__ (GPT-2's Conv1D)."""
    if not has_children:
        text = repr(module)
        prefix = type(module).__name__ + "("
        if text.startswith(prefix) and text.endswith(")") and "\n" not in text:
            return text[len(prefix):-1]
    return module.extra_repr()


def _same(a: ModuleNode, b: ModuleNode) -> bool:
    """Same class, settings and subtree (names included): what print(model) folds."""
    return (a.class_name == b.class_name and a.extra == b.extra and a.repeat == b.repeat
            and len(a.children) == len(b.children)
            and all(x.name == y.name and _same(x, y) for x, y in zip(a.children, b.children)))


def prune_tree(node: ModuleNode, depth: int) -> ModuleNode:
    """The tree cut `depth` levels below `node` (parameter counts keep what was cut)."""
    children = () if depth <= 0 else tuple(prune_tree(child, depth - 1) for child in node.children)
    return ModuleNode(name=node.name, class_name=node.class_name, extra=node.extra, parameters=node.parameters,
                      repeat=node.repeat, tied_to=node.tied_to, children=children,
                      truncated=node.truncated or (depth <= 0 and bool(node.children)))
