"""Batch- and cache-invariant numerics, installed into a loaded model: every dense GEMM is called with one fixed number
of rows, and attention's every reduction has a fixed length and alignment. No loading, no printing, no probing.

Why fixed tiles: a BLAS picks its kernel, blocking and thread split from the shape of the call, so a row's bits can
change with the number of rows it comes with (M). Measured with torch 2.13's MKL 2024.2: on AMD EPYC (AVX2, AVX-512) a
row alone (M = 1) differs from every M >= 2; on an Intel Xeon with AMX a row matches a 4-row call only for M = 2..15.
No rule about M holds on every CPU. What does hold by construction: a call whose shape never changes runs the same
code the same way, so every dense GEMM here takes exactly TILE_ROWS rows (the rows are split into tiles, the last one
padded with zero rows), each tile a fresh 64-byte-aligned buffer, and a row's bits then depend on nothing but the row,
the weight and the thread count. llmscope.invariance.selftest checks this on the machine at hand (a row at every tile
position with random companions) and falls back to one row per call (tile_rows = 1, a matrix-vector product that
depends on the row alone, slower) where it does not hold. The packed int4 / int8 kernels compute each row on its own
(checked there too): they are tiled only in that fallback.

Why TILE_ROWS = 8 (AMD EPYC, AVX-512, 1 thread, torch 2.13, MKL 2024.2): decode pays the tile's rows for one, prompts
pay one call per tile. 576 -> 1536: one row 0.095 ms, tiles of 4 / 8 / 16 rows 0.21 / 0.27 / 0.42 ms; 131 rows as
tiles of 4 / 8 / 16 / 32: 7.3 / 5.2 / 4.3 / 4.1 ms; a SmolLM2 layer's seven linears per decode step 1.0 / 1.3 / 2.2 ms
and per 131-row prompt 25 / 18.5 / 15.5 ms (2 threads: decode 0.9 / 1.0 / 1.3, prompt 26 / 14 / 24). 8 is the knee:
16 doubles decode for 15% on prompts, 4 costs prompts 40% to save decode 25%. The 49152 x 576 LM head: 1 / 4 / 8 /
16 rows 11.3 / 20.3 / 23.6 / 31.6 ms.
Attention lays each row's keys out on a grid aligned to absolute positions (left padding and a sliding cache shift
nothing), computes scores and value sums KEY_CHUNK keys per call, adds the chunks one after another, and softmax takes
one exact maximum per query. Its GEMMs are fixed-shape too: [kv heads, tile rows, head dim] x [kv heads, head dim,
KEY_CHUNK] and [kv heads, tile rows, KEY_CHUNK] x [kv heads, KEY_CHUNK, head dim + 1], one batch row at a time. A
query's numbers then depend on its own row only: alone, in a padded batch, or one token at a time with the KV cache.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

log = logging.getLogger("llmscope")

ATTENTION_NAME = "llmscope_invariant"  # the name under transformers' AttentionInterface
TILE_ROWS = 8  # rows per dense GEMM call (see the module docstring for why 8)
ALIGNMENT = 64  # bytes: every tile starts at such an address (torch's CPU allocator aligns new tensors to it)
KEY_CHUNK = 256  # keys per attention GEMM (a fixed length, aligned to positions that are multiples of it)
QUERY_BLOCK = 512  # queries per block: bounds the score matrix a long prompt materializes (rows are independent)
TILE_ATTRIBUTE = "llmscope_tile_rows"  # set on a model's modules by make_invariant: the rows per GEMM call there


# -------------------------------------------------------------------------------------- fixed-shape tiles


def row_tiles(flat: torch.Tensor, tile_rows: int) -> list[torch.Tensor]:
    """flat [M, ...] as tiles of exactly `tile_rows` rows (the last padded with zero rows), each contiguous and
    starting at an ALIGNMENT-byte boundary of fresh memory, whatever the input's own layout and offset."""
    padding = (-flat.shape[0]) % tile_rows
    buffer = torch.cat([flat, flat.new_zeros(padding, *flat.shape[1:])])  # always a fresh, contiguous copy
    tiles = list(buffer.split(tile_rows))
    tile_bytes = tile_rows * flat[0].numel() * flat.element_size() if flat.shape[0] else 0
    if tile_bytes % ALIGNMENT or buffer.data_ptr() % ALIGNMENT:
        tiles = [tile.clone() for tile in tiles]  # each clone is a new, aligned allocation
    return tiles


def tiled(x: torch.Tensor, forward: Callable[[torch.Tensor], torch.Tensor], tile_rows: int) -> torch.Tensor:
    """forward(x) for x [..., K], computed `tile_rows` rows per call (see row_tiles); the padding rows are dropped."""
    width = x.shape[-1]
    rows = x.numel() // max(width, 1)
    if rows == 0:
        return forward(x)
    flat = x.reshape(rows, width)
    outs = [forward(tile) for tile in row_tiles(flat, tile_rows)]
    out = (outs[0] if len(outs) == 1 else torch.cat(outs))[:rows]
    return out.reshape(*x.shape[:-1], out.shape[-1])


def tile_rows_of(module: Any) -> int:
    """The rows per GEMM call make_invariant gave this module (TILE_ROWS when it gave none)."""
    return getattr(module, TILE_ATTRIBUTE, TILE_ROWS) if isinstance(module, nn.Module) else TILE_ROWS


class InvariantLinear(nn.Linear):
    """nn.Linear whose row results do not depend on how many rows come with it (see the module docstring)."""

    llmscope_tile_rows = TILE_ROWS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return tiled(x, super().forward, self.llmscope_tile_rows)


def _invariant_subclass(base: type) -> type:
    """A subclass of `base` (a linear layer class) whose forward runs in fixed-shape tiles; made once per class."""
    made = _SUBCLASSES.get(base)
    if made is None:
        made = type(f"Invariant{base.__name__}", (base,),
                    {"forward": lambda self, x: tiled(x, super(made, self).forward, self.llmscope_tile_rows),
                     TILE_ATTRIBUTE: TILE_ROWS,
                     "__doc__": f"{base.__name__} computed in fixed-shape tiles of rows (llmscope.invariance)."})
        _SUBCLASSES[base] = made
    return made


_SUBCLASSES: dict[type, type] = {nn.Linear: InvariantLinear}


def needs_tiles(module: nn.Module, packed_rows_independent: bool = True) -> bool:
    """Dense linear layers (nn.Linear, GPT-2's Conv1D) and packed ones held in bfloat16 (a dense GEMM too); packed
    int4 / int8 layers only when their kernel was not shown to compute each row on its own."""
    if type(module).__name__ == "PackedLinear":
        return getattr(module.packed, "kind", None) == "bfloat16" or not packed_rows_independent
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


def _at_boundary(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor itself when it is contiguous and starts at an ALIGNMENT-byte boundary, else an aligned copy."""
    if tensor.is_contiguous() and tensor.data_ptr() % ALIGNMENT == 0:
        return tensor
    return tensor.clone(memory_format=torch.contiguous_format)


def _chunks(grid: torch.Tensor) -> torch.Tensor:
    """grid [B, Hkv, S, D] (S a multiple of KEY_CHUNK) -> [B, S / KEY_CHUNK, Hkv, KEY_CHUNK, D]: every chunk of keys
    (or values) one contiguous block, the same operand layout in every GEMM call."""
    batch, heads, slots, depth = grid.shape
    return grid.view(batch, heads, slots // KEY_CHUNK, KEY_CHUNK, depth).transpose(1, 2).contiguous()


def _row_tiles(rows: torch.Tensor, tile_rows: int) -> torch.Tensor:
    """rows [B, Hkv, M, W] -> [B, tiles, Hkv, tile_rows, W]: M padded with zero rows to whole tiles, each tile one
    contiguous block (the left operand of one fixed-shape GEMM call)."""
    batch, heads, count, width = rows.shape
    tiles = -(-count // tile_rows)
    padded = torch.nn.functional.pad(rows, (0, 0, 0, tiles * tile_rows - count))
    return padded.view(batch, heads, tiles, tile_rows, width).transpose(1, 2).contiguous()


def _untiled(tiles: torch.Tensor, count: int) -> torch.Tensor:
    """The inverse of _row_tiles: [B, tiles, Hkv, T, W] -> [B, Hkv, count, W]."""
    batch, number, heads, tile_rows, width = tiles.shape
    return tiles.transpose(1, 2).reshape(batch, heads, number * tile_rows, width)[:, :, :count]


def _tiled_scores(queries: torch.Tensor, key_chunks: torch.Tensor, chunk_seen: list[bool], tile_rows: int
                  ) -> torch.Tensor:
    """queries [B, Hkv, M, D] . keys -> scores [B, Hkv, M, len(chunk_seen) * KEY_CHUNK], one GEMM of shape
    [Hkv, tile_rows, D] x [Hkv, D, KEY_CHUNK] per batch row, query tile and key chunk; chunks no query sees are left
    zero (the caller masks them)."""
    tiles = _row_tiles(queries, tile_rows)  # [B, n, Hkv, T, D]
    batch, number, heads = tiles.shape[:3]
    zeros = tiles.new_zeros(heads, tile_rows, KEY_CHUNK)
    products = []
    for row_tiles, row_chunks in zip(tiles.unbind(0), key_chunks.unbind(0)):
        keys = [_at_boundary(chunk).transpose(-1, -2) if seen else None
                for chunk, seen in zip(row_chunks.unbind(0), chunk_seen)]
        for tile in row_tiles.unbind(0):
            left = _at_boundary(tile)
            products.extend(zeros if right is None else torch.bmm(left, right) for right in keys)
    scores = torch.stack(products).view(batch, number, len(chunk_seen), heads, tile_rows, KEY_CHUNK)
    scores = scores.permute(0, 3, 1, 4, 2, 5).reshape(batch, heads, number * tile_rows, -1)
    return scores[:, :, :queries.shape[2]]


def _tiled_sums(probabilities: torch.Tensor, value_chunks: torch.Tensor, chunk_seen: list[bool], tile_rows: int
                ) -> torch.Tensor | None:
    """probabilities [B, Hkv, M, chunks * KEY_CHUNK] . values -> [B, Hkv, M, Dv]: per batch row and query tile, one
    GEMM of shape [Hkv, tile_rows, KEY_CHUNK] x [Hkv, KEY_CHUNK, Dv] per seen chunk, the chunks added in order.
    None when no chunk is seen."""
    if not any(chunk_seen):
        return None
    batch, heads, count = probabilities.shape[:3]
    tiles = _row_tiles(probabilities, tile_rows)  # [B, n, Hkv, T, chunks * C]
    number = tiles.shape[1]
    # Each (tile, chunk) one contiguous [Hkv, T, C] block: [B, n, chunks, Hkv, T, C].
    tiles = tiles.view(batch, number, heads, tile_rows, len(chunk_seen), KEY_CHUNK).permute(0, 1, 4, 2, 3, 5)
    tiles = tiles.contiguous()
    sums = []
    for row_tiles, row_chunks in zip(tiles.unbind(0), value_chunks.unbind(0)):
        values = [_at_boundary(chunk) if seen else None for chunk, seen in zip(row_chunks.unbind(0), chunk_seen)]
        for tile in row_tiles.unbind(0):
            total = None
            for part, right in zip(tile.unbind(0), values):
                if right is None:
                    continue  # an unseen chunk adds exact zeros: skipping it changes no bit
                product = torch.bmm(_at_boundary(part), right)
                total = product if total is None else total + product
            sums.append(total)
    stacked = torch.stack(sums).view(batch, number, heads, tile_rows, -1)
    return _untiled(stacked, count)


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
    tile_rows = tile_rows_of(module)
    key_chunks = _chunks(_aligned(key.float(), offsets, slots))  # [B, S / C, Hkv, C, D]
    ones = value.new_ones(batch, kv_heads, keys, 1, dtype=torch.float32)
    value_chunks = _chunks(_aligned(torch.cat([value.float(), ones], dim=-1), offsets, slots))  # last column sums p
    # Queries of one KV head are rows of one GEMM: [B, Hkv, groups * Q, D].
    grouped = query.float().reshape(batch, kv_heads, groups * queries, depth)
    outputs, weights = [], []
    record = getattr(module, "return_attention_weights", False) or _recording_attentions()
    for start, stop, chunk_seen, limit, seen in blocks:
        block = grouped.view(batch, kv_heads, groups, queries, depth)[:, :, :, start:stop]
        block = block.reshape(batch, kv_heads, groups * (stop - start), depth)
        block_chunks = chunk_seen[:limit // KEY_CHUNK]
        scores = _tiled_scores(block, key_chunks, block_chunks, tile_rows) * scale
        scores = scores.masked_fill(~seen, float("-inf"))
        peak = scores.amax(-1, keepdim=True)
        peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
        # exp(-inf) is 0 but slow (4x a finite argument here): exp(0) where not seen, then exactly 0 there.
        probabilities = torch.exp((scores - peak).masked_fill(~seen, 0.0)).masked_fill(~seen, 0.0)
        total = _tiled_sums(probabilities, value_chunks, block_chunks, tile_rows)
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


def make_linears_invariant(model: nn.Module, tile_rows: int = TILE_ROWS, packed_rows_independent: bool = True
                           ) -> None:
    """Run every dense linear layer of `model` (and packed bfloat16 ones; packed int4 / int8 ones too unless their
    kernel computes each row on its own) in fixed-shape tiles of `tile_rows` rows, and give every module that tile
    size (attention reads it from its module), in place."""
    for module in model.modules():
        if needs_tiles(module, packed_rows_independent) and type(module) not in _SUBCLASSES.values():
            module.__class__ = _invariant_subclass(type(module))
        setattr(module, TILE_ATTRIBUTE, tile_rows)


def make_invariant(model: Any, tile_rows: int = TILE_ROWS, packed_rows_independent: bool = True) -> bool:
    """Switch a loaded model to invariant numerics in place: dense linears in fixed-shape tiles (make_linears_invariant)
    and ATTENTION_NAME attention. Returns False when the model's attention cannot switch (it keeps its own; linears are
    switched anyway)."""
    make_linears_invariant(model, tile_rows, packed_rows_independent)
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
