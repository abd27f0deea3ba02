"""What a model is, read from its configuration alone: attention layout, KV-cache size, parameters, module tree.
It builds models on the meta device (no weights) and never prints."""

from __future__ import annotations

from typing import Any


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
