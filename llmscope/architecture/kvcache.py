"""The KV cache and recurrent state a model holds after N tokens, per layer type, as transformers' cache keeps it:
one function for every command. Config arithmetic only: it builds no model and imports no torch."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from llmscope.core.errors import UsageError
from llmscope.loading.modelconfig import (
    SLIDING_TYPES,
    RecurrentState,
    attention_heads,
    head_dim,
    kv_heads,
    latent_fields,
    layer_types,
    recurrent_state,
    text_config,
    window_of,
)

KV_DTYPE_BYTES: dict[str, float] = {"float32": 4, "bfloat16": 2, "float16": 2, "float8": 1, "int8": 1, "int4": 0.5}
STATE_BYTES = 4  # SSM / gated-delta-net recurrent states are kept in float32 whatever the activations' dtype
ATTENTION_KINDS = ("full", "latent", "sliding", "chunked", "hybrid")  # layers that cache keys and values


@dataclass(frozen=True)
class HeldPositions:
    """What one attention layer holds when a cache policy, not the model, decides it (llmscope what-if): `full`
    positions at the activations' precision and `narrow` positions as codes, whose keys share a scale per channel
    over each of `key_blocks` blocks."""

    full: int
    narrow: int = 0
    key_blocks: int = 0


@dataclass(frozen=True)
class KVLayout:
    """A change to what each attention layer caches: fewer (pooled) KV heads, narrow codes of `bits` bits with a
    float16 scale and zero point per group (keys: per channel over `group` tokens; values: per token over `group`
    channels, or the whole head when `group` does not divide it), and the positions each layer type holds (an
    eviction policy). None everywhere is the model's own cache."""

    kv_heads: int | None = None
    bits: int | None = None
    group: int = 32
    held: dict[str, HeldPositions] | None = None  # by transformers' layer type; missing types keep the model's rule


NARROW_SCALE_BYTES = 2  # float16 scale and float16 zero point per group


def kv_value_bytes(dtype: str) -> float:
    """Bytes per cached key/value number for a --kv-dtype name (or a torch dtype's name)."""
    name = dtype.removeprefix("torch.")
    name = "float8" if name.startswith("float8") else name
    if name not in KV_DTYPE_BYTES:
        raise UsageError(f"unknown KV-cache dtype {dtype!r}", hint="use one of " + ", ".join(KV_DTYPE_BYTES))
    return KV_DTYPE_BYTES[name]


@dataclass(frozen=True)
class CacheGroup:
    """The layers of one cache type and what they hold after `tokens` tokens for `batch` sequences."""

    kind: str  # "full", "sliding", "chunked", "latent" (multi-head latent attention), "linear" (fixed state only),
    # "hybrid" (attention and a fixed state in one layer: Falcon-H1, Zamba2) or "none"
    layer_type: str  # transformers' name: full_attention, sliding_attention, linear_attention, hybrid, dummy...
    layers: int
    window: int | None  # sliding / chunked span: the layer keeps window - 1 positions at rest
    values_per_token: int  # per layer and sequence: 2 x KV heads x head dim, or latent rank + rotary dims
    positions: int  # positions each layer holds after `tokens` tokens
    kv_bytes: int  # keys and values (or the latent), all layers of this type, all sequences
    state_bytes: int  # fixed-size state (convolution + recurrent), all layers of this type, all sequences


@dataclass(frozen=True)
class CacheSize:
    tokens: int
    batch: int
    kv_dtype: str
    bytes_per_value: float
    groups: tuple[CacheGroup, ...]

    @property
    def kv_bytes(self) -> int:
        return sum(group.kv_bytes for group in self.groups)

    @property
    def state_bytes(self) -> int:
        return sum(group.state_bytes for group in self.groups)

    @property
    def total_bytes(self) -> int:
        return self.kv_bytes + self.state_bytes


def _kind(config: Any, layer_type: str) -> str:
    if layer_type in ("hybrid", "hybrid_sliding"):
        return "hybrid"
    if layer_type == "chunked_attention":
        return "chunked"
    if layer_type in SLIDING_TYPES:
        return "sliding"
    if layer_type in ("linear_attention", "conv", "mamba"):
        return "linear"
    if layer_type == "full_attention":
        return "latent" if latent_fields(config) else "full"
    return "none"


def values_per_token(config: Any, pooled_heads: int | None = None) -> int:
    """Numbers one attention layer caches per token and sequence: 2 x KV heads x head dim (K and V), or for
    multi-head latent attention the compressed latent plus its rotary key (kv_lora_rank + qk_rope_head_dim).
    `pooled_heads` replaces the model's KV heads (a what-if that mean-pools them; a latent cache has no heads)."""
    latent = latent_fields(config)
    if latent:
        return latent.kv_lora_rank + latent.rope_dims
    return 2 * (pooled_heads or kv_heads(config)) * head_dim(config) if attention_heads(config) else 0


def held_layer_bytes(config: Any, held: HeldPositions, bytes_per_value: float, layout: KVLayout | None) -> float:
    """Bytes one attention layer holds for one sequence: full-precision positions at `bytes_per_value`, narrow
    positions as `layout.bits`-bit codes plus each token's value scales (a zero point and a scale per group of
    channels per head) and each key block's per-channel scales."""
    pooled = layout.kv_heads if layout else None
    per_token = values_per_token(config, pooled)
    total = held.full * per_token * bytes_per_value
    if layout is None or layout.bits is None or not (held.narrow or held.key_blocks):
        return total
    heads, dim = pooled or kv_heads(config), head_dim(config)
    group = layout.group if dim % layout.group == 0 else dim
    value_scales = heads * (dim // group) * 2 * NARROW_SCALE_BYTES  # per narrow token
    key_scales = heads * dim * 2 * NARROW_SCALE_BYTES  # per key block
    return (total + held.narrow * (per_token * layout.bits / 8 + value_scales)
            + held.key_blocks * key_scales)


def state_bytes_per_layer(config: Any, state_dtype: str = "float32", state: RecurrentState | None = None) -> int:
    """One state layer's fixed state for one sequence: every tensor transformers' cache allocates for it (convolution
    inputs in the activations' dtype, SSM / delta-net recurrent states in float32); 0 when the config has none."""
    state = state or recurrent_state(config)
    if state is None:
        return 0
    total = 0.0
    for tensor in state.tensors:
        total += math.prod(tensor.shape) * (STATE_BYTES if tensor.float32 else kv_value_bytes(state_dtype))
    return math.ceil(total)


def cache_size(config: Any, tokens: int, batch: int = 1, kv_dtype: str = "bfloat16",
               state_dtype: str | None = None, layout: KVLayout | None = None) -> CacheSize:
    """What a DynamicCache holds after `tokens` tokens for `batch` sequences, per layer type.

    Full-attention layers keep every position; sliding-window and chunked layers keep window - 1 positions once
    past the window (DynamicSlidingWindowLayer); latent-attention layers keep one compressed latent per token;
    linear-attention layers keep a fixed state whatever the length. `state_dtype` (default: kv_dtype, int types
    meaning bfloat16) is the activations' dtype, in which the convolution state is kept. `layout` is a what-if's
    change to the attention layers' cache (pooled heads, narrow codes, the positions an eviction policy keeps).
    """
    text = text_config(config)
    size = kv_value_bytes(kv_dtype)
    floats = ("float32", "bfloat16", "float16")
    if state_dtype not in floats:  # quantized weights or KV: the activations are bfloat16 unless said otherwise
        state_dtype = kv_dtype if state_dtype is None and kv_dtype in floats else "bfloat16"
    counts: dict[str, int] = {}
    for layer_type in layer_types(config):
        counts[layer_type] = counts.get(layer_type, 0) + 1
    per_token = values_per_token(text, layout.kv_heads if layout else None)
    per_state = state_bytes_per_layer(text, state_dtype)
    groups = []
    for layer_type, layers in counts.items():
        kind = _kind(text, layer_type)
        window = window_of(text, layer_type)
        held = HeldPositions(full=0)
        if kind in ATTENTION_KINDS:
            held = (layout.held or {}).get(layer_type) if layout else None
            held = held or HeldPositions(full=min(tokens, window - 1) if window else tokens)
        positions, values = held.full + held.narrow, per_token if kind in ATTENTION_KINDS else 0
        state = per_state if kind in ("linear", "hybrid") else 0
        layer_bytes = held_layer_bytes(text, held, size, layout) if kind in ATTENTION_KINDS else 0
        groups.append(CacheGroup(kind=kind, layer_type=layer_type, layers=layers, window=window,
                                 values_per_token=values, positions=positions,
                                 kv_bytes=math.ceil(layers * batch * layer_bytes),
                                 state_bytes=layers * batch * state))
    return CacheSize(tokens=tokens, batch=batch, kv_dtype=kv_dtype, bytes_per_value=size, groups=tuple(groups))


def kv_cache_bytes_per_token(config: Any, bytes_per_value: float) -> int:
    """Bytes one token adds to the cache at batch 1 while every attention layer is still growing (no window
    reached): values per token x cached attention layers x bytes per value."""
    text = text_config(config)
    layers = sum(1 for kind in layer_types(config) if _kind(text, kind) in ATTENTION_KINDS)
    return math.ceil(values_per_token(text) * layers * bytes_per_value)


def held_cache_bytes(config: Any, tokens: int, dtype_name: str) -> tuple[int, str | None]:
    """What the cache of one sequence holds after `tokens` positions (cache_size at batch 1), and, when that is not
    bytes-per-token × tokens, why (sliding layers that keep window - 1 positions, fixed linear-attention states)."""
    size = cache_size(config, tokens, 1, dtype_name if dtype_name in ("float32", "bfloat16", "float16") else "float32")
    notes = [f"{g.layers} {g.kind} layer{'s' if g.layers > 1 else ''} keep{'' if g.layers > 1 else 's'} "
             f"{g.positions} positions (window {g.window} - 1)" for g in size.groups
             if g.window and g.positions < tokens]
    state = recurrent_state(config)
    notes += [f"{g.layers} {state.mixer if state else g.kind} layer{'s' if g.layers > 1 else ''} keep"
              f"{'' if g.layers > 1 else 's'} a fixed {g.state_bytes:,}-byte state"
              for g in size.groups if g.state_bytes]
    return size.total_bytes, "; ".join(notes) or None

