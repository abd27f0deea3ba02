"""KIVI-style narrow keys and values: keys quantized per channel over blocks of tokens, values per token over
groups of channels, asymmetric min-max codes of 8, 4 or 2 bits packed into bytes with a float16 scale and zero
point per group. Tensor arithmetic only: the cache that stores them and the attention that reads them live elsewhere."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

SCALE_DTYPE_NAME = "float16"  # scale and zero point of each group, as KIVI keeps them


@dataclass
class Codes:
    """Packed codes [..., n, ceil(D * bits / 8)] (uint8) and each group's scale and zero point (float16). Holds
    tensors; lives only inside the compute layer."""

    packed: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    bits: int
    channels: int  # D, the unpacked last dimension

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.packed, self.scale, self.zero))


def value_group(channels: int, group: int) -> int:
    """Channels per value-scale group: `group` when it divides the head dimension, else the whole head."""
    return group if channels % group == 0 else channels


def check_packable(channels: int, bits: int) -> str | None:
    """Why a head of `channels` numbers cannot be packed at `bits` (None when it can)."""
    per_byte = 8 // bits
    if channels % per_byte:
        return f"the head dimension {channels} is not a multiple of {per_byte} ({bits}-bit codes, {per_byte} a byte)"
    return None


def _pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """uint8 codes [..., D] (each below 2**bits) packed 8/bits to a byte along the last axis."""
    import torch

    per_byte = 8 // bits
    if per_byte == 1:
        return codes.to(torch.uint8)
    grouped = codes.to(torch.uint8).reshape(*codes.shape[:-1], codes.shape[-1] // per_byte, per_byte)
    packed = grouped[..., 0].clone()
    for slot in range(1, per_byte):
        packed |= grouped[..., slot] << (bits * slot)
    return packed


def _unpack(packed: torch.Tensor, bits: int, channels: int) -> torch.Tensor:
    """The inverse of _pack: uint8 [..., D / (8/bits)] -> codes [..., D] as float32."""
    import torch

    per_byte = 8 // bits
    if per_byte == 1:
        return packed.to(torch.float32)
    top = (1 << bits) - 1
    parts = [(packed >> (bits * slot)) & top for slot in range(per_byte)]
    return torch.stack(parts, dim=-1).reshape(*packed.shape[:-1], channels).to(torch.float32)


def _codes(x: torch.Tensor, low: torch.Tensor, high: torch.Tensor, bits: int) -> tuple[torch.Tensor, ...]:
    """Codes of x in [low, high] (broadcast), with the float16 scale and zero point they are read back with."""
    import torch

    levels = (1 << bits) - 1
    zero = low.to(torch.float16)
    scale = ((high - zero.float()) / levels).to(torch.float16)
    # A constant group (scale 0) keeps scale 1: every code is 0 and reads back as the zero point exactly.
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    codes = torch.round((x.float() - zero.float()) / scale.float()).clamp_(0, levels)
    return codes, scale, zero


def quantize_keys(keys: torch.Tensor, bits: int) -> Codes:
    """Keys [B, H, n, D] of one block of n tokens: each channel gets its own scale over the block (per channel)."""
    x = keys.float()
    codes, scale, zero = _codes(x, x.amin(dim=-2, keepdim=True), x.amax(dim=-2, keepdim=True), bits)
    return Codes(_pack(codes, bits), scale, zero, bits, keys.shape[-1])


def dequantize_keys(codes: Codes, rows_block: torch.Tensor | None = None, dtype: torch.dtype | None = None
                    ) -> torch.Tensor:
    """Keys back from codes; scale/zero [B, H, blocks, D] are picked per row by rows_block (None: one block)."""
    import torch

    values = _unpack(codes.packed, codes.bits, codes.channels)
    scale, zero = codes.scale.float(), codes.zero.float()
    if rows_block is not None:
        scale, zero = scale[:, :, rows_block], zero[:, :, rows_block]
    return (values * scale + zero).to(dtype or torch.float32)


def quantize_values(values: torch.Tensor, bits: int, group: int) -> Codes:
    """Values [B, H, n, D]: each token gets a scale per group of channels (per token)."""
    channels = values.shape[-1]
    size = value_group(channels, group)
    x = values.float().reshape(*values.shape[:-1], channels // size, size)
    codes, scale, zero = _codes(x, x.amin(dim=-1, keepdim=True), x.amax(dim=-1, keepdim=True), bits)
    packed = _pack(codes.reshape(values.shape), bits)
    return Codes(packed, scale[..., 0], zero[..., 0], bits, channels)


def dequantize_values(codes: Codes, dtype: torch.dtype | None = None) -> torch.Tensor:
    import torch

    values = _unpack(codes.packed, codes.bits, codes.channels)
    groups = codes.scale.shape[-1]
    grouped = values.reshape(*values.shape[:-1], groups, codes.channels // groups)
    out = grouped * codes.scale.float()[..., None] + codes.zero.float()[..., None]
    return out.reshape(values.shape).to(dtype or torch.float32)


def round_trip_keys(keys: torch.Tensor, bits: int, group: int) -> torch.Tensor:
    """Keys [B, H, K, D] as a cache would read them back, each complete block of `group` positions quantized on
    its own (from position 0); a last, incomplete block comes back unchanged (it waits in full precision)."""
    import torch

    length = keys.shape[-2]
    whole = (length // group) * group
    if whole == 0:
        return keys.clone()
    heads = keys[..., :whole, :]
    blocks = heads.reshape(*keys.shape[:-2], whole // group, group, keys.shape[-1])
    x = blocks.float()
    codes, scale, zero = _codes(x, x.amin(dim=-2, keepdim=True), x.amax(dim=-2, keepdim=True), bits)
    back = (codes * scale.float() + zero.float()).reshape(heads.shape).to(keys.dtype)
    return torch.cat([back, keys[..., whole:, :]], dim=-2)


def round_trip_values(values: torch.Tensor, bits: int, group: int) -> torch.Tensor:
    """Values [B, H, K, D] as a cache would read them back (each token quantized on its own)."""
    return dequantize_values(quantize_values(values, bits, group), values.dtype)
