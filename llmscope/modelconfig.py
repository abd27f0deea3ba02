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
    shared = config_value(config, "n_shared_experts", "num_shared_experts", default=0)
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
class LinearAttentionFields:
    conv_channels: int  # channels of the short causal convolution whose last `conv_kernel` inputs are kept
    conv_kernel: int
    recurrent_values: int  # values in the recurrent state (value heads x key dim x value dim)


def linear_attention_fields(config: Any) -> LinearAttentionFields | None:
    """Gated-delta-net linear attention (Qwen3-Next): the fixed-size state each sequence keeps per layer."""
    config = text_config(config)
    key_heads = getattr(config, "linear_num_key_heads", None)
    value_heads = getattr(config, "linear_num_value_heads", None)
    if not key_heads or not value_heads:
        return None
    key_dim, value_dim = int(config.linear_key_head_dim), int(config.linear_value_head_dim)
    return LinearAttentionFields(conv_channels=2 * key_heads * key_dim + value_heads * value_dim,
                                 conv_kernel=int(config.linear_conv_kernel_dim),
                                 recurrent_values=value_heads * key_dim * value_dim)
