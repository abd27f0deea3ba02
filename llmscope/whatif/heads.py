"""kv-heads=G: turn an attention layer's key and value projections into G groups by mean-pooling the heads of each
group (the GQA paper's checkpoint conversion), in place and undoably. It knows three layouts: separate k_proj /
v_proj (Llama, Qwen, Mistral...), a fused qkv_proj (Phi-3) and GPT-2's c_attn; other layers are named, not changed.
Packed (GGUF) projections are dequantized first. It runs no forward pass and never prints."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmscope.core.errors import UsageError


@dataclass
class PooledHeads:
    """What pooling changed, to put back: (object, attribute, old value) in the order they were set."""

    changes: list[tuple[Any, str, Any]] = field(default_factory=list)
    layouts: dict[int, str] = field(default_factory=dict)  # layer index -> the layout pooled
    left: dict[int, str] = field(default_factory=dict)  # layer index -> why it kept its heads

    def set(self, owner: Any, name: str, value: Any) -> None:
        self.changes.append((owner, name, getattr(owner, name)))
        setattr(owner, name, value)

    def restore(self) -> None:
        for owner, name, value in reversed(self.changes):
            setattr(owner, name, value)
        self.changes.clear()


def dense_weight(module: Any) -> tuple[Any, Any]:
    """(weight [out, in], bias [out] or None) of a linear layer as dense float tensors: nn.Linear, a packed
    layer (dequantized) or GPT-2's Conv1D (stored transposed)."""
    if hasattr(module, "packed"):
        return module.packed.dequantize(), module.bias
    if type(module).__name__.endswith("Conv1D"):
        return module.weight.t(), module.bias
    return module.weight, getattr(module, "bias", None)


def pool_rows(weight: Any, heads: int, head_dim: int, groups: int) -> Any:
    """Rows [heads * head_dim, ...] -> [groups * head_dim, ...]: each group's heads averaged (heads of a group are
    consecutive, as grouped-query attention assigns query heads to KV heads)."""
    rest = weight.shape[1:]
    return weight.reshape(groups, heads // groups, head_dim, *rest).float().mean(dim=1).reshape(
        groups * head_dim, *rest)


def _linear(weight: Any, bias: Any, like: Any) -> Any:
    """A new nn.Linear holding `weight` / `bias` in the dtype and on the device the layer's input comes in."""
    import torch
    from torch import nn

    dtype = like.dtype if like.is_floating_point() else torch.float32
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device, dtype=dtype)
    with torch.no_grad():
        layer.weight.copy_(weight.to(dtype))
        if bias is not None:
            layer.bias.copy_(bias.to(dtype))
    layer.requires_grad_(False)
    return layer


def _input_like(model: Any) -> Any:
    """A tensor in the dtype hidden states have (the embedding's output dtype)."""
    embedding = model.get_input_embeddings()
    weight = getattr(embedding, "weight", None)
    if weight is not None and weight.is_floating_point():
        return weight
    import torch

    return torch.empty(0, dtype=getattr(model, "dtype", torch.float32))


def _pool_separate(module: Any, heads: int, head_dim: int, groups: int, like: Any, pooled: PooledHeads) -> None:
    for name in ("k_proj", "v_proj"):
        weight, bias = dense_weight(getattr(module, name))
        new_bias = pool_rows(bias, heads, head_dim, groups) if bias is not None else None
        pooled.set(module, name, _linear(pool_rows(weight, heads, head_dim, groups), new_bias, like))


def _pool_fused(module: Any, query_rows: int, heads: int, head_dim: int, groups: int, like: Any,
                pooled: PooledHeads, name: str) -> Any:
    import torch

    weight, bias = dense_weight(getattr(module, name))
    kv_rows = heads * head_dim
    parts = (weight[:query_rows], weight[query_rows:query_rows + kv_rows], weight[query_rows + kv_rows:])
    new_weight = torch.cat([parts[0].float(), pool_rows(parts[1], heads, head_dim, groups),
                            pool_rows(parts[2], heads, head_dim, groups)])
    new_bias = None
    if bias is not None:
        pieces = (bias[:query_rows], bias[query_rows:query_rows + kv_rows], bias[query_rows + kv_rows:])
        new_bias = torch.cat([pieces[0].float(), pool_rows(pieces[1], heads, head_dim, groups),
                              pool_rows(pieces[2], heads, head_dim, groups)])
    pooled.set(module, name, _linear(new_weight, new_bias, like))


def pool_kv_heads(model: Any, modules: dict[int, Any], query_heads: int, kv_heads: int, head_dim: int,
                  groups: int) -> PooledHeads:
    """Pool every attention module's KV heads into `groups` (modules: layer index -> attention module), setting
    the module's own head counts and the config's num_key_value_heads; PooledHeads.restore() undoes it all.

    Raises UsageError when `groups` does not divide the model's KV heads or is more than it has."""
    if groups > kv_heads or kv_heads % groups:
        divisors = [g for g in range(1, kv_heads + 1) if kv_heads % g == 0]
        raise UsageError(f"kv-heads={groups}: the model has {kv_heads} KV heads, which {groups} does not divide"
                         if groups <= kv_heads else f"kv-heads={groups}: the model has only {kv_heads} KV heads",
                         hint=f"use one of {', '.join(map(str, divisors))}")
    pooled = PooledHeads()
    like = _input_like(model)
    layouts: dict[str, Callable[[Any], None]] = {
        "k_proj/v_proj": lambda m: _pool_separate(m, kv_heads, head_dim, groups, like, pooled),
        "qkv_proj": lambda m: _pool_fused(m, query_heads * head_dim, kv_heads, head_dim, groups, like, pooled,
                                          "qkv_proj"),
        "c_attn": lambda m: _pool_fused(m, query_heads * head_dim, kv_heads, head_dim, groups, like, pooled,
                                        "c_attn"),
    }
    for index, module in modules.items():
        layout = _layout(module)
        if layout is None:
            pooled.left[index] = (f"{type(module).__name__} has no k_proj/v_proj, qkv_proj or c_attn to pool")
            continue
        layouts[layout](module)
        pooled.layouts[index] = layout
        if hasattr(module, "num_key_value_groups"):
            pooled.set(module, "num_key_value_groups", query_heads // groups)
        if hasattr(module, "num_key_value_heads"):
            pooled.set(module, "num_key_value_heads", groups)
        if layout == "c_attn":  # GPT-2 splits c_attn's output in three equal parts unless told the sizes
            pooled.set(module, "split_size", [query_heads * head_dim, groups * head_dim, groups * head_dim])
    from llmscope.loading.modelconfig import text_config

    config = text_config(model.config)
    if pooled.layouts and getattr(config, "num_key_value_heads", None) is not None:
        pooled.set(config, "num_key_value_heads", groups)
    return pooled


def _layout(module: Any) -> str | None:
    if hasattr(module, "k_proj") and hasattr(module, "v_proj"):
        return "k_proj/v_proj"
    if hasattr(module, "qkv_proj"):
        return "qkv_proj"
    if hasattr(module, "c_attn") and not getattr(module, "is_cross_attention", False):
        return "c_attn"
    return None
