"""What a model is, read from its configuration alone: attention layout per layer type, KV cache, parameters
(active ones for MoE), memory plan and module tree. It builds models on the meta device (no weights) and never
prints; it reads names through transformers' config attributes, with no per-architecture code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmscope.architecture.kvcache import kv_cache_bytes_per_token
from llmscope.architecture.layerkinds import (
    AttentionLayout,
    KvCacheEstimate,
    KvCachePoint,
    LayerKind,
    attention_layout,
    kv_cache_estimate,
    layer_kinds,
    layer_pattern,
)
from llmscope.architecture.moduletree import ModuleNode, check_depth, module_tree, prune_tree
from llmscope.architecture.planner import MemoryPlan, PlannerSettings, plan_memory
from llmscope.core.errors import ModelLoadError
from llmscope.loading.modelconfig import (
    config_value,
    context_length,
    head_dim,
    intermediate_size,
    kv_heads,
    layer_types,
    moe_fields,
    nope_layers,
    recurrent_state,
    text_config,
)

if TYPE_CHECKING:
    from llmscope.loading.loader import LoadedModel

__all__ = ["ArchitectureReport", "AttentionLayout", "KvCacheEstimate", "KvCachePoint", "LayerKind", "ModuleNode",
           "build_empty_model", "config_value", "describe_architecture", "describe_config_model",
           "describe_loaded_model", "head_dim", "kv_cache_bytes_per_token", "kv_heads", "layer_types", "text_config"]

BYTES_PER_PARAMETER = {"float32": 4.0, "bfloat16": 2.0, "int8": 1.0, "4-bit": 0.5}
PARAMETER_GROUPS = ("embeddings", "attention", "mlp", "experts", "router", "norms", "lm_head", "other")
ATTENTION_HINTS = ("attn", "attention")
MLP_HINTS = ("mlp", "feed_forward", "feedforward", "ffn", "moe", "expert", "fc1", "fc2", "fc_in", "fc_out", "c_fc")
ROUTER_NAMES = ("gate", "router")
SHARED_EXPERT_NAMES = ("shared_expert", "shared_experts", "shared_mlp")


# ---------------------------------------------------------------------------------------------- results


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
    layer_kinds: tuple[LayerKind, ...]
    layer_pattern: str  # e.g. "sliding 8 / full, alternating ×2", or a per-layer strip
    experts: int | None  # MoE: routed experts per MoE layer
    experts_per_token: int | None
    shared_experts: int | None
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
    mlp: int  # dense MLPs and shared experts
    experts: int  # routed experts (MoE), all of them
    router: int  # MoE routers (gates)
    norms: int
    lm_head: int  # 0 when tied to the input embeddings
    other: int
    memory_bytes: dict[str, int]  # weights alone at float32 / bfloat16 / int8 / 4-bit
    active: int  # run for each token: total less the routed experts a token does not use (= total when dense)


@dataclass(frozen=True)
class ArchitectureReport:
    model: str
    source: str  # "config" (meta device, no weights) or "weights"
    summary: ArchitectureSummary
    parameters: ParameterBreakdown
    kv_cache: KvCacheEstimate
    tree: ModuleNode
    depth: int | None
    plan: MemoryPlan


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


def describe_config_model(spec: Any, depth: int | None = None, trust_remote_code: bool = False,
                          plan: PlannerSettings | None = None, quantize: str = "auto") -> ArchitectureReport:
    """Architecture from config.json alone (a hub id fetches only that file); the model is built on meta.

    spec is a loader.ModelSpec, or what resolve_model_spec takes (hub id, folder, .gguf file, alias, None).
    Raises ModelLoadError when the config cannot be read or does not describe a causal LM.
    """
    from llmscope.loading.loader import ModelSpec, load_config, require_causal_lm, resolve_model_spec

    spec = spec if isinstance(spec, ModelSpec) else resolve_model_spec(spec)
    try:
        config = load_config(spec, trust_remote_code)
    except ModelLoadError as error:  # the config is all `architecture` needs: say how to fetch just that file
        download = f"`hf download {spec.name}`"
        if error.hint and download in error.hint:
            error.hint = error.hint.replace(download, f"`hf download {spec.name} config.json` (the config alone)")
        raise
    require_causal_lm(config, spec)
    model = build_empty_model(config, trust_remote_code)
    return describe_architecture(model, config, spec.name, source="config", depth=depth, plan=plan,
                                 held=_file_weights(spec, quantize, plan))


def _file_weights(spec: Any, quantize: str, plan: PlannerSettings | None) -> tuple[int, str] | None:
    """A GGUF file's weights as --quantize would hold them, from its tensor table (None: not packed)."""
    from llmscope.loading.quant.mode import resolve_quantize

    if not spec.is_gguf or (plan and plan.weights_dtype):
        return None
    mode = resolve_quantize(quantize, spec, "cpu", None)
    if mode == "none":
        return None
    from llmscope.loading.quant.ggufweights import file_weight_bytes

    return file_weight_bytes(spec.gguf_path, mode, 4)


def describe_loaded_model(loaded: LoadedModel, depth: int | None = None,
                          plan: PlannerSettings | None = None) -> ArchitectureReport:
    """Architecture of a loaded model, with its real dtypes and devices (packed weights at their real size)."""
    from llmscope.loading.quant.modules import held_weight_bytes

    held = (held_weight_bytes(loaded.model), loaded.weights) if loaded.weights else None
    return describe_architecture(loaded.model, loaded.config, loaded.spec.name, source="weights", depth=depth,
                                 plan=plan, held=held)


def describe_architecture(model: Any, config: Any, name: str, source: str = "config",
                          depth: int | None = None, plan: PlannerSettings | None = None,
                          held: tuple[int, str] | None = None) -> ArchitectureReport:
    """Summary, parameter split, KV-cache sizes, memory plan and folded module tree of a model (meta or loaded)."""
    check_depth(depth)
    settings = plan or PlannerSettings()
    summary = summarize(model, config, source)
    parameters = parameter_breakdown(model, config)
    moe = moe_fields(config)
    tree = module_tree(model, (moe.experts, moe.active) if moe else None)
    if source == "weights":  # the loaded dtype is what the weights really take
        settings = PlannerSettings(settings.context, settings.batch_size, settings.kv_dtype, None,
                                   settings.gpu_memory)
    # the KV table uses the plan's KV dtype
    plan = plan_memory(config, parameters.total, settings, summary.dtype, held)
    return ArchitectureReport(model=name, source=source, summary=summary, parameters=parameters,
                              kv_cache=kv_cache_estimate(config, plan.kv_dtype, context=settings.context,
                                                         state_dtype=plan.weights_dtype),
                              tree=tree if depth is None else prune_tree(tree, depth), depth=depth, plan=plan)


# ---------------------------------------------------------------------------------------------- summary


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
        nope, layers = nope_layers(config), int(config.num_hidden_layers)
        if nope:
            scope = "every layer" if nope == layers else f"{nope} of {layers} layers"
            text += f"; no positional encoding (NoPE) on {scope}"
        return text, theta, scaling
    inputs = model.get_input_embeddings()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Embedding) and module is not inputs:
            return f"learned absolute ({name}: {module.num_embeddings:,} positions)", None, None
    state = recurrent_state(config)
    if state:
        return f"none: word order comes from the recurrent state of the {state.mixer} layers", None, None
    return "none found in the config (no rotary parameters, no position-embedding table)", None, None


def _norm(model: Any, config: Any) -> tuple[str | None, float | None]:
    eps = config_value(config, "rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon", "norm_eps", "norm_epsilon")
    norms = [(path.count("."), type(module).__name__) for path, module in model.named_modules()
             if "norm" in type(module).__name__.lower()]
    if norms:  # the outermost one: the final norm, not a q/k norm inside attention (Llama 4's L2 norm)
        name = min(norms, key=lambda norm: norm[0])[1]
        kind = "RMSNorm" if "rms" in name.lower() else ("LayerNorm" if "layernorm" in name.lower() else name)
        return f"{kind} ({name})" if kind != name else kind, eps
    return None, eps


def _shared_expert_modules(model: Any) -> int:
    """1 when each MoE block has a shared expert the config does not count (Llama 4's shared_expert, Hunyuan's and
    GraniteMoeHybrid's shared_mlp), else 0."""
    return int(any(path.rsplit(".", 1)[-1] in SHARED_EXPERT_NAMES for path, _ in model.named_modules()))


def summarize(model: Any, config: Any, source: str = "config") -> ArchitectureSummary:
    text = text_config(config)
    positional, theta, scaling = _positional(model, text)
    norm, eps = _norm(model, text)
    types = layer_types(config)
    sliding = sum(1 for kind in types if "sliding" in kind)
    moe = moe_fields(config)
    if source == "weights":
        from llmscope.loading.quant.modules import packed_weights

        packed = packed_weights(model)
        dtypes = sorted({_dtype_text(p.dtype) for p in model.parameters()} | {w.kind for w in packed})
        devices = tuple(sorted({str(p.device) for p in model.parameters()} | {str(w.device) for w in packed}))
        dtype = ", ".join(d for d in dtypes if d)
    else:
        dtype, devices = _dtype_text(config_value(config, "dtype", "torch_dtype")), ("meta",)
    from llmscope.loading.quant.modules import shares_weight

    tied = shares_weight(model.get_output_embeddings(), model.get_input_embeddings())
    return ArchitectureSummary(
        model_class=type(model).__name__, model_type=str(getattr(config, "model_type", "")),
        layers=int(text.num_hidden_layers), hidden_size=int(text.hidden_size),
        intermediate_size=intermediate_size(text),
        vocab_size=int(text.vocab_size), attention=attention_layout(text), context_length=context_length(text),
        sliding_window=getattr(text, "sliding_window", None) if sliding else None, sliding_window_layers=sliding,
        layer_kinds=layer_kinds(config), layer_pattern=layer_pattern(config),
        experts=moe.experts if moe else None, experts_per_token=moe.active if moe else None,
        shared_experts=(moe.shared or _shared_expert_modules(model)) if moe else None,
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
    if "experts" in parts:
        return "experts"
    if parts[-1] in ROUTER_NAMES:
        return "router"
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        words = (parts[end - 1] + " " + type(modules.get(prefix)).__name__).lower()
        if any(hint in words for hint in ATTENTION_HINTS):
            return "attention"
        if any(hint in words for hint in MLP_HINTS):
            return "mlp"
    return "other"


def parameter_breakdown(model: Any, config: Any = None) -> ParameterBreakdown:
    """Unique parameters split by what they do; a tied LM head counts once, under embeddings.

    Active parameters: a token runs `num_experts_per_tok` of the routed experts, so the routed experts count
    k / E of their total; everything else (attention, shared experts, routers, embeddings) always runs.
    """
    modules = dict(model.named_modules())
    inputs, output = model.get_input_embeddings(), model.get_output_embeddings()
    counts = dict.fromkeys(PARAMETER_GROUPS, 0)
    seen: set[int] = set()
    for path, module in modules.items():
        held = [(id(p), p.numel()) for p in module.parameters(recurse=False)]
        packed = getattr(module, "packed", None)  # a packed layer stands for its whole weight matrix
        if packed is not None and hasattr(module, "logical_parameters"):
            held.append((id(packed.data), module.logical_parameters))
        for identity, count in held:
            if identity in seen:
                continue
            seen.add(identity)
            counts[_group_of(path, modules, module, inputs, output)] += count
    total = sum(counts.values())
    memory = {name: int(total * size) for name, size in BYTES_PER_PARAMETER.items()}
    moe = moe_fields(config if config is not None else model.config)
    if moe is None:  # "experts" / "gate" names in a dense model are ordinary MLP weights
        counts["mlp"] += counts["experts"] + counts["router"]
        counts["experts"] = counts["router"] = 0
    active = total - counts["experts"] + counts["experts"] * moe.active // moe.experts if moe else total
    return ParameterBreakdown(total=total, memory_bytes=memory, active=active, **counts)
