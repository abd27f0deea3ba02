"""Batch- and cache-invariant numerics, installed into a loaded model: linear layers that never take the matrix-vector
path, and an attention function whose every reduction has a fixed length and alignment. No loading, no printing.

Why (measured on this project's CPUs, MKL 2024.2, AVX2 and AVX-512 alike): a float32 GEMM gives a row one result when
it is alone (M = 1, a matrix-vector kernel), another in a block of 2 or 3 rows, and a third in a block of 4; with
several threads MKL hands each thread blocks of 4 rows and the last one the rest. So every dense GEMM call here has a
multiple of ROW_FLOOR rows (padded with zero rows): then a row's bits depend on nothing but the row, for any thread
count we measured (1-4). The packed int4 / int8 kernels compute each row on its own: they are left alone.
A GEMM's sum over its inner dimension is unchanged by zeros appended at its end but not by zeros put in front, so
attention lays each row's keys out on a grid aligned to absolute positions (left padding and a sliding cache shift
nothing), sums values over fixed-length key chunks and adds the chunks one after another, and softmax takes one exact
maximum per query. A query's numbers then depend on its own row only: alone, in a padded batch, or one token at a time
with the KV cache.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

log = logging.getLogger("llmscope")

ATTENTION_NAME = "llmscope_invariant"  # the name under transformers' AttentionInterface
ROW_FLOOR = 4  # every dense GEMM call has a multiple of this many rows
KEY_CHUNK = 256  # keys summed per GEMM (a fixed length, aligned to positions that are multiples of it)
QUERY_BLOCK = 512  # queries per block: bounds the score matrix a long prompt materializes (rows are independent)


# -------------------------------------------------------------------------------------- linear layers


def _padded_rows(rows: int) -> int:
    return -(-rows // ROW_FLOOR) * ROW_FLOOR


def with_row_floor(x: torch.Tensor, forward: Any) -> torch.Tensor:
    """forward(x) for x [..., K], its rows padded with zero rows to a multiple of ROW_FLOOR (dropped afterwards)."""
    rows = x.numel() // max(x.shape[-1], 1)
    target = _padded_rows(rows)
    if target == rows:
        return forward(x)
    flat = x.reshape(rows, x.shape[-1])
    padded = torch.cat([flat, flat.new_zeros(target - rows, x.shape[-1])])
    out = forward(padded)[:rows]
    return out.reshape(*x.shape[:-1], out.shape[-1])


class InvariantLinear(nn.Linear):
    """nn.Linear whose row results do not depend on how many rows come with it (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return with_row_floor(x, super().forward)


def _invariant_subclass(base: type) -> type:
    """A subclass of `base` (a linear layer class) whose forward pads to ROW_FLOOR rows; made once per class."""
    made = _SUBCLASSES.get(base)
    if made is None:
        made = type(f"Invariant{base.__name__}", (base,),
                    {"forward": lambda self, x: with_row_floor(x, super(made, self).forward),
                     "__doc__": f"{base.__name__} with at least {ROW_FLOOR} rows per GEMM call."})
        _SUBCLASSES[base] = made
    return made


_SUBCLASSES: dict[type, type] = {nn.Linear: InvariantLinear}


def _needs_row_floor(module: nn.Module) -> bool:
    """Dense linear layers (nn.Linear, GPT-2's Conv1D) and packed ones held in bfloat16 (a dense GEMM too)."""
    if type(module).__name__ == "PackedLinear":
        return getattr(module.packed, "kind", None) == "bfloat16"
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


# -------------------------------------------------------------------------------------- attention


def _visible(attention_mask: torch.Tensor | None, batch: int, queries: int, keys: int,
             device: torch.device) -> torch.Tensor:
    """The mask as booleans [batch, queries, keys], True where a query sees a key."""
    if attention_mask is None:  # no mask given: causal over the last `queries` keys
        rows = torch.arange(queries, device=device)[:, None] + (keys - queries)
        return (torch.arange(keys, device=device)[None, :] <= rows).expand(batch, queries, keys)
    mask = attention_mask
    if mask.dtype != torch.bool:
        mask = mask > torch.finfo(mask.dtype).min / 2
    return mask[:, 0].expand(batch, queries, keys) if mask.dim() == 4 else mask.expand(batch, queries, keys)


def _matmul(rows: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """rows [..., M, K] @ other [..., K, N], M padded with zero rows to a multiple of ROW_FLOOR."""
    count = rows.shape[-2]
    target = _padded_rows(count)
    if target == count:
        return torch.matmul(rows, other)
    padding = rows.new_zeros(*rows.shape[:-2], target - count, rows.shape[-1])
    return torch.matmul(torch.cat([rows, padding], dim=-2), other)[..., :count, :]


def _key_offsets(visible: torch.Tensor, position_ids: torch.Tensor | None) -> torch.Tensor:
    """Per row, the slot the first key takes on the aligned grid: (absolute position of key 0) mod KEY_CHUNK.

    A query's own key is the last it sees (causal); its position id minus that key's index is the position of key 0
    (negative under left padding). Without position ids key 0 of the last query's first visible key counts as
    position 0, which holds for full-attention layers."""
    batch, queries, keys = visible.shape
    last_query = visible[:, -1]  # [batch, keys]; the last query is a real token in a left-padded batch
    index = torch.arange(keys, device=visible.device)
    if position_ids is not None and position_ids.shape[-1] == queries:
        own = torch.where(last_query, index, -1).amax(-1)
        start = position_ids.expand(batch, queries)[:, -1].to(own.dtype) - own
    else:
        start = -torch.where(last_query, index, keys).amin(-1)
    return torch.remainder(start, KEY_CHUNK)


def _slot_index(offsets: list[int], keys: int, device: torch.device) -> torch.Tensor:
    """[batch, keys]: the grid slot of each row's key k, offsets[b] + k."""
    return torch.tensor(offsets, device=device)[:, None] + torch.arange(keys, device=device)


def _aligned(tensor: torch.Tensor, offsets: list[int], slots: int) -> torch.Tensor:
    """tensor [batch, heads, keys, D] laid out at slots offsets[b]..offsets[b]+keys-1 of a zero [.., slots, D] grid.
    One scatter for the whole batch (a copy per row would cost autograd a copy of the whole grid per row)."""
    batch, heads, keys, depth = tensor.shape
    if len(set(offsets)) == 1:  # every row starts at the same slot: one pad
        return torch.nn.functional.pad(tensor, (0, 0, offsets[0], slots - offsets[0] - keys))
    index = _slot_index(offsets, keys, tensor.device)[:, None, :, None].expand(batch, heads, keys, depth)
    return tensor.new_zeros(batch, heads, slots, depth).scatter(2, index, tensor)


def _unaligned(grid: torch.Tensor, offsets: list[int], keys: int) -> torch.Tensor:
    """The inverse of _aligned on the last axis: grid [batch, heads, queries, slots] -> [.., keys]."""
    batch, heads, queries, _ = grid.shape
    index = _slot_index(offsets, keys, grid.device)[:, None, None, :].expand(batch, heads, queries, keys)
    return grid.gather(3, index)


def _layout(attention_mask: torch.Tensor | None, position_ids: torch.Tensor | None, batch: int, queries: int,
            keys: int, kv_heads: int, groups: int, device: torch.device) -> tuple[list[int], int, list[Any]]:
    """Where each row's keys sit on the grid (offsets, slots) and, per query block, which key chunks it sees and its
    mask. Every layer of one forward pass gets the same mask tensor: the answer is kept on it and computed once."""
    key = (id(position_ids), batch, queries, keys, kv_heads, groups, KEY_CHUNK, QUERY_BLOCK)
    kept = getattr(attention_mask, "_llmscope_layout", None)
    if kept is not None and kept[0] == key and kept[1] is position_ids:
        return kept[2]
    visible = _visible(attention_mask, batch, queries, keys, device)
    offsets = _key_offsets(visible, position_ids).tolist()
    slots = -(-(keys + max(offsets)) // KEY_CHUNK) * KEY_CHUNK
    grid_visible = _aligned(visible[:, None, :, :].transpose(-1, -2), offsets, slots).transpose(-1, -2)[:, 0]
    blocks = []
    for start in range(0, queries, QUERY_BLOCK):
        stop = min(start + QUERY_BLOCK, queries)
        block_visible = grid_visible[:, start:stop]  # [B, q, S]
        chunk_seen = block_visible.reshape(batch, stop - start, slots // KEY_CHUNK, KEY_CHUNK).any(-1)
        chunk_seen = chunk_seen.any(1).any(0).tolist()
        # Keys after the block's last seen chunk are left out: a score is one dot product, whatever the columns.
        limit = (max((c for c, s in enumerate(chunk_seen) if s), default=0) + 1) * KEY_CHUNK
        seen = block_visible[:, None, None, :, :limit].expand(batch, kv_heads, groups, stop - start, limit)
        blocks.append((start, stop, chunk_seen, limit, seen.reshape(batch, kv_heads, groups * (stop - start), limit)))
    layout = (offsets, slots, blocks)
    if attention_mask is not None:
        attention_mask._llmscope_layout = (key, position_ids, layout)
    return layout


def invariant_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                        **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scaled dot-product attention with a fixed reduction order (registered as ATTENTION_NAME).

    query [B, H, Q, D], key/value [B, Hkv, K, D]; returns (output [B, Q, H, Dv], weights [B, H, Q, K] when transformers
    records attentions, else None). Falls back to eager attention for what it does not model (dropout in training,
    logit soft-capping, attention sinks)."""
    if (dropout and module.training) or kwargs.get("softcap") is not None or kwargs.get("s_aux") is not None:
        from transformers.models.llama.modeling_llama import eager_attention_forward

        return eager_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                       **kwargs)
    batch, heads, queries, depth = query.shape
    kv_heads, keys, value_depth = key.shape[1], key.shape[2], value.shape[-1]
    groups = heads // kv_heads
    scale = scaling if scaling is not None else depth ** -0.5
    offsets, slots, blocks = _layout(attention_mask, kwargs.get("position_ids"), batch, queries, keys, kv_heads,
                                     groups, query.device)
    grid_keys = _aligned(key.float(), offsets, slots)  # [B, Hkv, S, D]
    ones = value.new_ones(batch, kv_heads, keys, 1, dtype=torch.float32)
    grid_values = _aligned(torch.cat([value.float(), ones], dim=-1), offsets, slots)  # the last column sums p
    # Queries of one KV head are rows of one GEMM: [B, Hkv, groups * Q, D].
    grouped = query.float().reshape(batch, kv_heads, groups * queries, depth)
    outputs, weights = [], []
    record = getattr(module, "return_attention_weights", False) or _recording_attentions()
    for start, stop, chunk_seen, limit, seen in blocks:
        block = grouped.view(batch, kv_heads, groups, queries, depth)[:, :, :, start:stop]
        block = block.reshape(batch, kv_heads, groups * (stop - start), depth)
        scores = _matmul(block, grid_keys[:, :, :limit].transpose(-1, -2)) * scale
        scores = scores.masked_fill(~seen, float("-inf"))
        peak = scores.amax(-1, keepdim=True)
        peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
        probabilities = torch.exp(scores - peak)  # exactly 0 where not seen
        total = None
        for chunk in range(0, limit, KEY_CHUNK):
            if not chunk_seen[chunk // KEY_CHUNK]:
                continue  # an unseen chunk adds exact zeros: skipping it changes no bit
            part = probabilities[..., chunk:chunk + KEY_CHUNK]
            product = _matmul(part, grid_values[:, :, chunk:chunk + KEY_CHUNK])
            total = product if total is None else total + product
        if total is None:
            total = probabilities.new_zeros(*probabilities.shape[:-1], value_depth + 1)
        denominator = total[..., -1:]
        safe = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
        outputs.append((total[..., :-1] / safe).view(batch, kv_heads, groups, stop - start, value_depth))
        if record:
            share = torch.nn.functional.pad(probabilities / safe, (0, slots - limit))
            weights.append(share.view(batch, kv_heads, groups, stop - start, slots))
    output = torch.cat(outputs, dim=3).reshape(batch, heads, queries, value_depth)
    output = output.to(query.dtype).transpose(1, 2).contiguous()
    if not record:
        return output, None
    grid = torch.cat(weights, dim=3).reshape(batch, heads, queries, slots)
    return output, _unaligned(grid, offsets, keys).to(query.dtype)


def _recording_attentions() -> bool:
    """Whether transformers is collecting attention weights in this forward (True when that cannot be told)."""
    try:
        from transformers.utils.output_capturing import _active_collector
    except ImportError:
        return True
    collected = _active_collector.get()
    return collected is None or "attentions" in collected


def invariant_mask(*args: Any, **kwargs: Any) -> torch.Tensor | None:
    """transformers' boolean mask, always materialized (never skipped as "plain causal"): the attention reads it."""
    from transformers.masking_utils import sdpa_mask

    kwargs["allow_is_causal_skip"] = False
    return sdpa_mask(*args, **kwargs)


def register() -> None:
    """Register the attention and its mask under ATTENTION_NAME with transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ATTENTION_NAME, invariant_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, invariant_mask)


# -------------------------------------------------------------------------------------- installing


def make_linears_invariant(model: nn.Module) -> None:
    """Give every dense linear layer of `model` (and packed bfloat16 ones) the row floor, in place."""
    for module in model.modules():
        if _needs_row_floor(module) and type(module) not in _SUBCLASSES.values():
            module.__class__ = _invariant_subclass(type(module))


def make_invariant(model: Any) -> bool:
    """Switch a loaded model to invariant numerics in place: row-floored dense linears and ATTENTION_NAME attention.
    Returns False when the model's attention cannot switch (it keeps its own; linears are switched anyway)."""
    make_linears_invariant(model)
    register()
    try:
        model.set_attn_implementation(ATTENTION_NAME)
    except (ValueError, KeyError, ImportError, TypeError) as error:
        log.info("attention stays %s: %s", getattr(model.config, "_attn_implementation", None), error)
        return False
    return getattr(model.config, "_attn_implementation", None) == ATTENTION_NAME


def is_invariant(model: Any) -> bool:
    """Whether make_invariant's attention is the model's attention implementation."""
    return getattr(getattr(model, "config", None), "_attn_implementation", None) == ATTENTION_NAME
