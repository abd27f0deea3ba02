"""The attention every what-if runs through, registered with transformers' AttentionInterface: eager-style, in
float32, the variant's pattern added to the layer's own causal / sliding mask, top-k chosen on the scores, and (in a
one-pass read of a text) keys and values read back as a narrow cache would hold them. `applied` installs a variant
in a loaded model (pooled heads included) and takes it out again. No caching, no measuring, no printing."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmscope.whatif.kvquant import round_trip_keys, round_trip_values
from llmscope.whatif.patterns import LayerSpan, model_visible, pattern_visible
from llmscope.whatif.variants import Variant

if TYPE_CHECKING:
    import torch

ATTENTION_NAME = "llmscope_whatif"  # the name under transformers' AttentionInterface and AttentionMaskInterface
PLAN_ATTRIBUTE = "llmscope_whatif_plan"  # set on each attention module while a variant is applied
QUERY_BLOCK = 256  # queries per score matrix: bounds the memory a long text takes


@dataclass
class RunState:
    """What every layer of one applied variant shares: the variant, the cache of the run in progress (None for a
    one-pass read of a text) and the last pattern mask (every layer of a forward asks for the same one)."""

    variant: Variant
    cache: Any = None
    memo: dict[tuple[Any, ...], Any] = field(default_factory=dict)
    pooled: Any = None  # the PooledHeads of kv-heads=G while applied (what was pooled, what was left)


@dataclass(frozen=True)
class LayerPlan:
    """One attention layer's part: its index, its own span, and whether the variant applies to it."""

    state: RunState
    index: int
    span: LayerSpan
    changed: bool

    def cache_layer(self) -> Any:
        cache = self.state.cache
        if cache is None or self.index >= len(cache.layers):
            return None
        layer = cache.layers[self.index]
        return layer if getattr(layer, "returned_positions", None) is not None else None


def _given_mask(attention_mask: torch.Tensor | None, queries: int, keys: int) -> torch.Tensor | None:
    """transformers' mask as booleans [batch, Q, K] (True: visible), when it has this call's shape."""
    import torch

    if attention_mask is None or attention_mask.dim() != 4 or tuple(attention_mask.shape[-2:]) != (queries, keys):
        return None
    mask = attention_mask[:, 0]
    return mask if mask.dtype == torch.bool else mask > torch.finfo(mask.dtype).min / 2


def _pattern_mask(plan: LayerPlan | None, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """The variant's pattern (and the layer's span) at these positions; the last one is kept on the run state."""
    pattern = plan.state.variant.pattern if plan is not None and plan.changed else None
    span = plan.span if plan is not None else LayerSpan()
    if plan is None:
        return model_visible(span, queries, keys) & pattern_visible(pattern, queries, keys)
    key = (pattern, span, int(queries[0]), len(queries), int(keys[0]), int(keys[-1]), len(keys), int(keys.sum()))
    found = plan.state.memo.get(key)
    if found is None:
        found = model_visible(span, queries, keys) & pattern_visible(pattern, queries, keys)
        plan.state.memo.clear()
        plan.state.memo[key] = found
    return found


def whatif_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                     **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Scaled dot-product attention in float32 under the module's LayerPlan (registered as ATTENTION_NAME).

    query [B, H, Q, D], key / value [B, Hkv, K, D]; returns (output [B, Q, H, Dv], None). Query and key positions
    come from the what-if cache layer when one is running (it evicts, so keys are not 0..K-1), else they are the
    last Q of 0..K-1 and transformers' own mask is applied too. Logit soft-capping and learned attention sinks
    (`softcap`, `s_aux`) are honoured; dropout is not (inference only)."""
    import torch

    plan: LayerPlan | None = getattr(module, PLAN_ATTRIBUTE, None)
    batch, heads, queries, depth = query.shape
    kv_heads, keys, value_depth = key.shape[1], key.shape[2], value.shape[-1]
    groups = heads // kv_heads
    scale = scaling if scaling is not None else depth ** -0.5
    layer = plan.cache_layer() if plan is not None else None
    if layer is not None:
        key_positions = layer.returned_positions.to(query.device)
        given = None
    else:
        key_positions = torch.arange(keys, device=query.device)
        given = _given_mask(attention_mask, queries, keys)
    query_positions = key_positions[-queries:]
    variant = plan.state.variant if plan is not None and plan.changed else None
    topk = variant.pattern.topk if variant and variant.pattern and variant.pattern.kind == "topk" else 0
    narrow = None
    if variant is not None and variant.kv_bits is not None and layer is None:
        # A one-pass read: each query reads the keys of every block completed before it as codes (what a cache
        # filled one token at a time would hand it); its own block waits in full precision.
        group = variant.quant_group
        narrow = (key_positions[None, :] < group * (query_positions[:, None] // group))
        narrow_keys = round_trip_keys(key, variant.kv_bits, group).float()
        narrow_values = round_trip_values(value, variant.kv_bits, group).float()
    grouped = query.float().reshape(batch, kv_heads, groups, queries, depth)
    full_keys, full_values = key.float()[:, :, None], value.float()[:, :, None]
    softcap = kwargs.get("softcap")
    sinks = kwargs.get("s_aux")
    outputs = []
    for start in range(0, queries, QUERY_BLOCK):
        stop = min(start + QUERY_BLOCK, queries)
        block = grouped[:, :, :, start:stop]
        visible = _pattern_mask(plan, query_positions[start:stop], key_positions)[None]  # [1, q, K]
        if given is not None:
            visible = visible & given[:, start:stop]
        scores = torch.matmul(block, full_keys.transpose(-1, -2)) * scale  # [B, Hkv, g, q, K]
        if narrow is not None:
            narrow_scores = torch.matmul(block, narrow_keys[:, :, None].transpose(-1, -2)) * scale
            scores = torch.where(narrow[start:stop], narrow_scores, scores)
        if softcap is not None:
            scores = torch.tanh(scores / softcap) * softcap
        scores = scores.masked_fill(~visible[:, None, None], float("-inf"))
        if topk and topk < keys:
            chosen = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, scores.topk(topk, dim=-1).indices, True)
            scores = scores.masked_fill(~chosen, float("-inf"))
        if sinks is not None:  # a learned logit per head that takes probability mass and no value
            column = sinks.float().reshape(1, kv_heads, groups, 1, 1).expand(*scores.shape[:-1], 1)
            probabilities = torch.softmax(torch.cat([scores, column], dim=-1), dim=-1)[..., :-1]
        else:
            probabilities = torch.softmax(scores, dim=-1)
        probabilities = torch.nan_to_num(probabilities, nan=0.0)
        if narrow is not None:
            rows = narrow[start:stop]
            out = (torch.matmul(probabilities.masked_fill(~rows, 0.0), narrow_values[:, :, None])
                   + torch.matmul(probabilities.masked_fill(rows, 0.0), full_values))
        else:
            out = torch.matmul(probabilities, full_values)
        outputs.append(out)
    output = torch.cat(outputs, dim=3).reshape(batch, heads, queries, value_depth)
    return output.to(query.dtype).transpose(1, 2).contiguous(), None


def whatif_mask(*args: Any, **kwargs: Any) -> Any:
    """transformers' boolean mask, always materialized: the attention reads it in a one-pass read."""
    from transformers.masking_utils import sdpa_mask

    kwargs["allow_is_causal_skip"] = False
    return sdpa_mask(*args, **kwargs)


def register() -> None:
    """Register the attention and its mask under ATTENTION_NAME with transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ATTENTION_NAME, whatif_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, whatif_mask)


def attention_modules(model: Any) -> dict[int, Any]:
    """Each self-attention module of the model by its layer index (modules named *Attention with a layer_idx)."""
    found: dict[int, Any] = {}
    for module in model.modules():
        index = getattr(module, "layer_idx", None)
        if isinstance(index, int) and type(module).__name__.endswith("Attention") and index not in found:
            found[index] = module
    return found


@contextlib.contextmanager
def applied(model: Any, variant: Variant, spans: dict[int, LayerSpan], changed: set[int],
            pool: Any = None) -> Iterator[RunState]:
    """Run `model` under `variant` inside the block: ATTENTION_NAME attention in every attention layer (spans:
    layer index -> the layer's own span; `changed`: the layers the variant applies to, the others run unchanged
    through the same attention), KV heads pooled by `pool(model)` (returns a PooledHeads) when given. Everything
    is put back on the way out, the model's attention implementation included."""
    register()
    previous = getattr(model.config, "_attn_implementation", None)
    state = RunState(variant)
    modules = attention_modules(model)
    pooled = state.pooled = pool(model) if pool is not None else None
    try:
        for index, module in modules.items():
            setattr(module, PLAN_ATTRIBUTE, LayerPlan(state, index, spans.get(index, LayerSpan()), index in changed))
        model.set_attn_implementation(ATTENTION_NAME)
        yield state
    finally:
        for module in modules.values():
            if hasattr(module, PLAN_ATTRIBUTE):
                delattr(module, PLAN_ATTRIBUTE)
        if previous is not None and previous != ATTENTION_NAME:
            model.set_attn_implementation(previous)
        if pooled is not None:
            pooled.restore()
