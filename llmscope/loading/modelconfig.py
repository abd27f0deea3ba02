"""Read a transformers config in plain terms: sizes, heads, context, each layer's type, MoE, latent attention and
linear-attention fields. Pure attribute reading: it builds no model and imports no torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SLIDING_TYPES = ("sliding_attention", "chunked_attention", "hybrid_sliding", "reference_sliding_attention")
STATE_TYPES = ("linear_attention", "conv", "mamba", "hybrid", "hybrid_sliding")


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


def attention_heads(config: Any) -> int:
    """Query heads per attention layer; 0 for a model without attention (Mamba)."""
    value = getattr(text_config(config), "num_attention_heads", None)
    return int(value) if isinstance(value, int) else 0


def nope_layers(config: Any) -> int:
    """Layers without rotary positions (NoPE), in a model that lists them (Llama 4, SmolLM3: no_rope_layers, where
    0 means NoPE); 0 otherwise."""
    flags = getattr(text_config(config), "no_rope_layers", None)
    return sum(1 for flag in flags if not flag) if isinstance(flags, (list, tuple)) else 0


def head_dim(config: Any) -> int:
    config = text_config(config)
    explicit = getattr(config, "head_dim", None)
    if isinstance(explicit, int) and explicit > 0:
        return explicit
    return int(config.hidden_size) // int(config.num_attention_heads)


def kv_heads(config: Any) -> int:
    """KV heads per layer; Falcon's `multi_query` means one, its `new_decoder_architecture` reads `num_kv_heads`."""
    config = text_config(config)
    heads = int(config.num_attention_heads)
    if getattr(config, "new_decoder_architecture", False):
        return int(config_value(config, "num_kv_heads", default=heads))
    if getattr(config, "multi_query", False) and hasattr(config, "new_decoder_architecture"):
        return 1
    return int(config_value(config, "num_key_value_heads", "multi_query_group_num", "num_kv_heads", default=heads))


def context_length(config: Any) -> int | None:
    """The longest sequence the model was built for (max_position_embeddings and its other names)."""
    config = text_config(config)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def intermediate_size(config: Any) -> int | None:
    """The dense MLP's inner width; GPT-2's `n_inner: null` means 4 x hidden."""
    config = text_config(config)
    value = config_value(config, "intermediate_size", "n_inner", "ffn_dim", "ffn_hidden_size")
    if value is None and getattr(config, "model_type", "") in ("gpt2", "gpt_bigcode", "gptj", "gpt_neo", "codegen"):
        return 4 * int(config.hidden_size)
    return value


def layer_types(config: Any) -> list[str]:
    """Each layer's cache type as transformers' cache builds it (full, sliding, chunked, linear_attention, dummy...)."""
    config = text_config(config)
    try:
        from transformers.cache_utils import get_layer_types_and_kwargs

        decoder = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
        return list(get_layer_types_and_kwargs(decoder)[0])
    except (ImportError, AttributeError, TypeError, ValueError):
        declared = getattr(config, "layer_types", None)
        if declared:
            return list(declared)
        window = getattr(config, "sliding_window", None)
        return ["sliding_attention" if window else "full_attention"] * int(config.num_hidden_layers)


def window_of(config: Any, kind: str) -> int | None:
    """The attention span of a sliding (sliding_window) or chunked (attention_chunk_size) layer type."""
    config = text_config(config)
    if kind == "chunked_attention":
        return getattr(config, "attention_chunk_size", None)
    if kind in SLIDING_TYPES:
        return getattr(config, "sliding_window", None)
    return None


@dataclass(frozen=True)
class MoeFields:
    experts: int  # routed experts per MoE layer
    active: int  # routed experts each token runs
    shared: int  # shared experts that always run (0 when none)
    expert_size: int | None  # the routed experts' inner width


def moe_fields(config: Any) -> MoeFields | None:
    """Routed / active / shared expert counts, or None for a dense model."""
    config = text_config(config)
    experts = config_value(config, "num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
    active = config_value(config, "num_experts_per_tok", "experts_per_token", "moe_top_k", "top_k")
    if not isinstance(experts, int) or experts <= 1 or not isinstance(active, int):
        return None
    shared = config_value(config, "n_shared_experts", "num_shared_experts", "moe_num_shared_experts", default=0)
    if not shared and config_value(config, "shared_expert_intermediate_size"):
        shared = 1
    return MoeFields(experts=experts, active=active, shared=int(shared or 0),
                     expert_size=config_value(config, "moe_intermediate_size", "intermediate_size"))


@dataclass(frozen=True)
class LatentFields:
    kv_lora_rank: int  # the compressed KV latent each token caches
    rope_dims: int  # decoupled rotary key dims cached beside it
    q_lora_rank: int | None


def latent_fields(config: Any) -> LatentFields | None:
    """Multi-head latent attention (DeepSeek-V2/V3, Kimi): the cached latent's rank and rotary dims."""
    config = text_config(config)
    rank = getattr(config, "kv_lora_rank", None)
    if not isinstance(rank, int) or rank <= 0:
        return None
    return LatentFields(kv_lora_rank=rank, rope_dims=int(getattr(config, "qk_rope_head_dim", 0) or 0),
                        q_lora_rank=getattr(config, "q_lora_rank", None))


@dataclass(frozen=True)
class StateTensor:
    name: str  # "convolution", "SSM" or "recurrent"
    shape: tuple[int, ...]  # per layer and sequence
    float32: bool  # kept in float32 whatever the activations' dtype (else in the activations' dtype)


@dataclass(frozen=True)
class RecurrentState:
    """The fixed-size state one sequence keeps in each linear-attention / state-space / convolution layer."""

    mixer: str  # "Mamba", "Mamba2", "gated delta net", "lightning attention" or "short convolution"
    tensors: tuple[StateTensor, ...]

    @property
    def words(self) -> str:
        """e.g. "convolution 96 x 4 + SSM 4 x 16 x 16 values"."""
        return " + ".join(f"{t.name} {' x '.join(str(n) for n in t.shape)}" for t in self.tensors) + " values"


def _int(config: Any, *names: str) -> int | None:
    value = config_value(config, *names)
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def recurrent_state(config: Any) -> RecurrentState | None:
    """What transformers' cache allocates per sequence for the model's state layers, from the config's fields:
    gated delta net (Qwen3-Next), Mamba (Jamba, Mamba, Falcon-Mamba), Mamba2 (Bamba, GraniteMoeHybrid, Falcon-H1,
    Zamba2, Mamba2), MiniMax's lightning attention and LFM2's short convolution. None when the config has none."""
    config = text_config(config)
    key_heads, value_heads = _int(config, "linear_num_key_heads"), _int(config, "linear_num_value_heads")
    if key_heads and value_heads:
        key_dim, value_dim = int(config.linear_key_head_dim), int(config.linear_value_head_dim)
        channels = 2 * key_heads * key_dim + value_heads * value_dim
        return RecurrentState("gated delta net", (
            StateTensor("convolution", (channels, int(config.linear_conv_kernel_dim)), False),
            StateTensor("recurrent", (value_heads, key_dim, value_dim), True)))
    d_state, d_conv = _int(config, "mamba_d_state", "state_size"), _int(config, "mamba_d_conv", "conv_kernel")
    if d_state and d_conv:
        hidden = int(config.hidden_size)
        inner = _int(config, "mamba_d_ssm") or int(config_value(config, "mamba_expand", "expand", default=2) * hidden)
        groups = _int(config, "mamba_n_groups", "mamba_ngroups", "n_groups")
        heads = _int(config, "mamba_n_heads", "n_mamba_heads") or (_int(config, "num_heads") if groups else None)
        if heads and groups:  # Mamba2: B and C (groups x state) go through the convolution beside x
            dim = _int(config, "mamba_d_head", "mamba_headdim") or (
                _int(config, "head_dim") if not _int(config, "mamba_n_heads", "n_mamba_heads") else None)
            return RecurrentState("Mamba2", (
                StateTensor("convolution", (inner + 2 * groups * d_state, d_conv), False),
                StateTensor("SSM", (heads, dim or inner // heads, d_state), True)))
        return RecurrentState("Mamba", (StateTensor("convolution", (inner, d_conv), False),
                                        StateTensor("SSM", (inner, d_state), True)))
    cache = _int(config, "conv_L_cache")
    if cache:
        return RecurrentState("short convolution", (StateTensor("convolution", (int(config.hidden_size), cache),
                                                                False),))
    if _int(config, "block_size") and "linear_attention" in (getattr(config, "layer_types", None) or ()):
        heads = int(config.num_attention_heads)
        dim = _int(config, "head_dim") or int(config.hidden_size) // heads
        return RecurrentState("lightning attention", (StateTensor("recurrent", (heads, dim, dim), False),))
    return None
