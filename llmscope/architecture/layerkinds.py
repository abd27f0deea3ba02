"""Attention per layer type, in words and in bytes: MHA / GQA / MQA / multi-head latent, sliding windows, linear
attention, the layer pattern and the KV-cache estimate `architecture` shows. Config arithmetic; it never prints."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmscope.architecture.kvcache import (
    ATTENTION_KINDS,
    CacheGroup,
    cache_size,
    kv_cache_bytes_per_token,
    values_per_token,
)
from llmscope.loading.modelconfig import (
    attention_heads,
    config_value,
    context_length,
    head_dim,
    kv_heads,
    latent_fields,
    layer_types,
    recurrent_state,
    text_config,
)

KV_CACHE_LENGTHS = (1024, 4096)
LAYER_WORDS = {"full": "full", "latent": "latent", "sliding": "sliding", "chunked": "chunked", "linear": "linear",
               "hybrid": "hybrid", "none": "no attention"}
LAYER_LETTERS = {"full": "F", "latent": "M", "sliding": "S", "chunked": "C", "linear": "L", "hybrid": "H",
                 "none": "-"}


@dataclass(frozen=True)
class AttentionLayout:
    heads: int
    kv_heads: int
    head_dim: int
    kind: str  # "multi-head", "grouped-query", "multi-query", "multi-head latent" or "none" (Mamba)
    description: str  # in words, e.g. "grouped-query: 9 query heads share 3 KV heads, groups of 3"
    latent_rank: int | None = None  # multi-head latent attention: the cached latent's width
    rope_dims: int | None = None  # ... and the rotary key dims cached beside it


@dataclass(frozen=True)
class LayerKind:
    """Layers of one cache type: full / sliding or chunked (window) / latent / linear (fixed state) / hybrid
    (attention and a fixed state) / none."""

    kind: str
    layer_type: str  # transformers' name (full_attention, sliding_attention, linear_attention, dummy...)
    layers: int
    window: int | None
    description: str


@dataclass(frozen=True)
class KvCachePoint:
    tokens: int
    bytes: int
    full_mha_bytes: int


@dataclass(frozen=True)
class KvCacheEstimate:
    dtype: str
    bytes_per_value: float
    bytes_per_token: int  # every attention layer, uncapped: values per token x layers x bytes
    full_mha_bytes_per_token: int  # the same model with one KV head per query head
    saving: float  # 1 - bytes_per_token / full_mha_bytes_per_token
    full_attention_layers: int  # attention layers that keep every position (full, latent, hybrid)
    windowed_layers: int  # sliding-window / chunked layers: they keep window - 1 positions once past the window
    window: int | None
    points: tuple[KvCachePoint, ...]  # batch 1 at 1K, 4K and the context asked for (KV + fixed state)
    note: str | None
    values_per_token: int  # per attention layer: 2 x KV heads x head dim, or latent rank + rotary dims
    state_bytes: int  # fixed state of the state layers (linear, hybrid) at batch 1 (0 when none)
    state_layers: int  # layers that keep a fixed state
    state_mixer: str | None  # what keeps it: "Mamba2", "gated delta net", "lightning attention"...
    groups: tuple[CacheGroup, ...]  # per layer type, at the last point


def attention_layout(config: Any) -> AttentionLayout:
    config = text_config(config)
    if not attention_heads(config):
        state = recurrent_state(config)
        return AttentionLayout(heads=0, kv_heads=0, head_dim=0, kind="none",
                               description=f"none: every layer is {state.mixer if state else 'attention-free'}")
    heads, kv, dim = int(config.num_attention_heads), kv_heads(config), head_dim(config)
    latent = latent_fields(config)
    if latent:
        words = (f"multi-head latent: {heads} heads whose keys and values are rebuilt from one cached "
                 f"{latent.kv_lora_rank}-dim latent per token, plus {latent.rope_dims} rotary key dims")
        dim = int(getattr(config, "qk_nope_head_dim", 0) or 0) + latent.rope_dims or dim  # query and key dims
        return AttentionLayout(heads=heads, kv_heads=1, head_dim=dim, kind="multi-head latent", description=words,
                               latent_rank=latent.kv_lora_rank, rope_dims=latent.rope_dims)
    if kv == heads:
        kind, words = "multi-head", f"multi-head: {heads} heads, each with its own keys and values"
    elif kv == 1:
        kind, words = "multi-query", f"multi-query: {heads} query heads share 1 KV head"
    else:
        group = f"groups of {heads // kv}" if heads % kv == 0 else f"about {heads / kv:.1f} per group"
        kind, words = "grouped-query", f"grouped-query: {heads} query heads share {kv} KV heads, {group}"
    return AttentionLayout(heads=heads, kv_heads=kv, head_dim=dim, kind=kind, description=words)


def layer_kinds(config: Any) -> tuple[LayerKind, ...]:
    """The model's layers grouped by cache type, each in words."""
    text = text_config(config)
    attention = attention_layout(text)
    state = recurrent_state(text)
    kinds = []
    for group in cache_size(config, 0).groups:
        kept = f"the cache keeps the last {group.window - 1:,} positions" if group.window else ""
        if group.kind == "sliding":
            words = (f"sliding window of {group.window:,} tokens ({attention.kind}); {kept}" if group.window
                     else "sliding window")
        elif group.kind == "chunked":
            words = (f"chunked attention ({attention.kind}): chunks of {group.window:,} tokens, each token attends "
                     f"within its own chunk; {kept}")
        elif group.kind == "linear":
            words = (f"{state.mixer}: a fixed-size state per sequence ({state.words}), no KV cache" if state
                     else "linear attention: a fixed-size state per sequence, no KV cache")
        elif group.kind == "hybrid":
            span = kept or "the cache keeps every position"
            words = (f"hybrid: attention ({attention.kind}, {span}) and {state.mixer if state else 'a recurrent'} "
                     f"state ({state.words if state else 'fixed size'}) in one layer")
        elif group.kind == "none":
            words = "no attention cache (MLP-only or KV shared with another layer)"
        elif group.kind == "latent":
            words = "multi-head latent attention: the cache keeps one compressed latent per position"
        else:
            words = f"full attention ({attention.kind}): the cache keeps every position"
        kinds.append(LayerKind(kind=group.kind, layer_type=group.layer_type, layers=group.layers,
                               window=group.window, description=words))
    return tuple(kinds)


def layer_pattern(config: Any) -> str:
    """How layer types follow each other: "full on all 30 layers", "sliding 8 / full, alternating ×2",
    "3 × linear / full, repeating ×12", or a per-layer strip (F full, S sliding, M latent, L linear, - none)."""
    sizes = {group.layer_type: group for group in cache_size(config, 0).groups}
    names = []
    for layer_type in layer_types(config):
        group = sizes[layer_type]
        word = LAYER_WORDS[group.kind]
        names.append(f"{word} {group.window:,}" if group.kind in ("sliding", "chunked") and group.window else word)
    count = len(names)
    if len(set(names)) == 1:
        return f"{names[0]} on all {count} layers" if count > 1 else names[0]
    for period in range(2, count // 2 + 1):
        if count % period == 0 and names == names[:period] * (count // period):
            runs: list[list[Any]] = []
            for name in names[:period]:
                if runs and runs[-1][0] == name:
                    runs[-1][1] += 1
                else:
                    runs.append([name, 1])
            parts = " / ".join(f"{n} × {word}" if n > 1 else word for word, n in runs)
            how = "alternating" if period == 2 else "repeating"
            return f"{parts}, {how} ×{count // period}"
    letters = [LAYER_LETTERS[sizes[kind].kind] for kind in layer_types(config)]
    legend = ", ".join(f"{letter} {LAYER_WORDS[kind]}" for kind, letter in LAYER_LETTERS.items() if letter in letters)
    return f"per layer: {''.join(letters)} ({legend})"


# ---------------------------------------------------------------------------------------------- KV cache


def kv_cache_estimate(config: Any, dtype: str = "bfloat16", lengths: tuple[int, ...] = KV_CACHE_LENGTHS,
                      context: int | None = None, state_dtype: str | None = None) -> KvCacheEstimate:
    """KV cache (and fixed state) at batch 1 for a few context lengths up to `context` (default: the model's), against
    the same model with one KV head per query head; every figure comes from kvcache.cache_size, the one cache formula.
    `state_dtype` is the activations' dtype, in which convolution states are kept (cache_size's default if None)."""
    text = text_config(config)
    top = context or context_length(text)
    wanted = sorted({n for n in lengths if top is None or n < top} | ({top} if top else set()))
    per_value = values_per_token(text)
    mha_value = _mha_values_per_token(text)

    def mha(size: Any) -> int:
        return sum(g.kv_bytes * mha_value // per_value if per_value else 0 for g in size.groups) + size.state_bytes

    sizes = [cache_size(config, n, 1, dtype, state_dtype) for n in wanted]
    points = tuple(KvCachePoint(tokens=n, bytes=size.total_bytes, full_mha_bytes=mha(size))
                   for n, size in zip(wanted, sizes))
    last = sizes[-1] if sizes else cache_size(config, 0, 1, dtype, state_dtype)
    groups = last.groups
    windowed = sum(g.layers for g in groups if g.kind in ATTENTION_KINDS and g.window)
    cached = sum(g.layers for g in groups if g.kind in ATTENTION_KINDS)
    windows = sorted({g.window for g in groups if g.kind in ATTENTION_KINDS and g.window})
    window = windows[0] if windows else None
    per_token = kv_cache_bytes_per_token(text, last.bytes_per_value)
    mha_per_token = per_token * mha_value // per_value if per_value else 0
    notes = []
    for kind in ("sliding", "chunked", "hybrid"):
        spans = [g for g in groups if g.kind == kind and g.window]
        if not spans:
            continue
        count, span = sum(g.layers for g in spans), min(g.window for g in spans if g.window)
        which = "every layer attends" if count == cached else f"{count} of {len(layer_types(config))} layers attend"
        if kind == "chunked":
            notes.append(f"chunked attention: {which} only within chunks of {span:,} tokens; transformers' cache "
                         f"keeps {span - 1:,} positions for them once past the first chunk")
        else:
            notes.append(f"sliding window: {which} only to the last {span:,} tokens (local attention); "
                         f"transformers' cache keeps {span - 1:,} positions for them once past the window")
    state = recurrent_state(text)
    return KvCacheEstimate(dtype=dtype, bytes_per_value=last.bytes_per_value, bytes_per_token=per_token,
                           full_mha_bytes_per_token=mha_per_token,
                           saving=round(1 - per_token / mha_per_token, 6) if mha_per_token else 0.0,
                           full_attention_layers=cached - windowed, windowed_layers=windowed, window=window,
                           points=points, note="\n".join(notes) or None, values_per_token=per_value,
                           state_bytes=cache_size(config, 0, 1, dtype, state_dtype).state_bytes,
                           state_layers=sum(g.layers for g in groups if g.state_bytes),
                           state_mixer=state.mixer if state else None, groups=groups)


def _mha_values_per_token(config: Any) -> int:
    """What one layer would cache per token with one K and V head per query head (MLA: its full K and V dims)."""
    heads = attention_heads(config)
    if not heads:
        return 0
    if latent_fields(config):
        key = int(config_value(config, "qk_head_dim", default=0)) or (
            int(getattr(config, "qk_nope_head_dim", 0)) + int(getattr(config, "qk_rope_head_dim", 0)))
        return heads * (key + int(config_value(config, "v_head_dim", default=head_dim(config))))
    return 2 * heads * head_dim(config)
