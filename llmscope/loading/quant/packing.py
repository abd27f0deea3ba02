"""Packed weight forms and their kernels: int4 in groups of 32 (torch's tinygemm form, w = (q - 8) * scale + zero),
int8 per output channel and bfloat16; packing, exact dequantization and the matmuls on CPU and CUDA. No model, no files.

Layouts: int4 weights are kept in the layout of the device's kernel. On the CPU that is torch's
`_convert_weight_to_int4pack_for_cpu` output: blocks of B rows (B = 32 on AVX2, 64 on AVX-512), each a [K, B/2]
byte array whose low nibble holds row b + j and high nibble row b + B/2 + j; a last, shorter block (N not a
multiple of B) holds rows b + 2j and b + 2j + 1 instead. B is found and the layout checked when packing, so a
torch that changed it fails loudly, not silently;
on CUDA it is the tinygemm tile layout, unpacked through the kernel itself. Scales and zeros are bfloat16,
[K/32, N, 2], as both kernels take them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch

GROUP = 32  # values per int4 group (a GGUF Q4 block and a Q4_K sub-block are 32 values too)
KERNEL_DTYPE = torch.bfloat16  # the activations' dtype the packed kernels are fast with (and on CUDA need)
PACK_ROWS = 4096  # rows packed at a time (the kernel's packer wants int32 values: 4 bytes for each 4 bits)


INT8_COLUMNS = 32  # the int8 kernel's input width must be a multiple of this (see int8_shape_ok)


def int4_shape_ok(rows: int, columns: int) -> bool:
    """Whether an [rows, columns] weight can be packed as int4 (the kernels' tiling needs these multiples)."""
    return rows % 32 == 0 and columns % GROUP == 0 and columns % 64 == 0


def int8_shape_ok(rows: int, columns: int) -> bool:
    """Whether an [rows, columns] weight can be packed as int8 per row. torch 2.13's CPU `_weight_int8pack_mm`
    reads the input width in vector steps: measured on AVX-512, K = 100 with 2+ input rows segfaults, and K = 8,
    24 or 104 (multiples of 8, not of 16) return garbage or NaN without an error; multiples of 16 are right.
    A multiple of 32 leaves a margin for wider vector units; any row count works."""
    return rows > 0 and columns > 0 and columns % INT8_COLUMNS == 0


def packed_form(kind: str, rows: int, columns: int) -> str | None:
    """The form an [rows, columns] weight asked to be `kind` (int4 / int8 / bfloat16) is held in: int4 where its
    shape allows, else int8 where that kernel takes the shape, bfloat16 always; None: no packed kernel takes it,
    keep it dense (exact). The one rule for packing, the planner's byte counts and the load line."""
    if kind == "bfloat16":
        return "bfloat16"
    if kind == "int4" and int4_shape_ok(rows, columns):
        return "int4"
    return "int8" if int8_shape_ok(rows, columns) else None


def _inner_k_tiles(columns: int) -> int:
    return next(tiles for tiles in (8, 4, 2) if columns % (tiles * 16) == 0)


@dataclass
class PackedWeight:
    """One weight matrix [N, K] in a packed form. Holds tensors; not a result."""

    kind: str  # "int4", "int8" or "bfloat16" (16-bit, for tables whose type has no exact packed form)
    rows: int  # N, output features
    columns: int  # K, input features
    data: torch.Tensor  # int4: the kernel's packed bytes; int8: int8 [N, K]; bfloat16: [N, K]
    scales: torch.Tensor  # int4: bfloat16 [K/32, N, 2] (scale, zero); int8: [N] per-row scale; bfloat16: empty
    source: str = ""  # what it was made from: "Q4_1", "Q8_0 requantized", "bfloat16 quantized", ...

    def __post_init__(self) -> None:
        if self.kind == "int8" and not int8_shape_ok(self.rows, self.columns):  # the kernel would crash on it
            raise ValueError(f"an int8 weight needs an input width divisible by {INT8_COLUMNS} "
                             f"(got {self.rows} x {self.columns})")

    @property
    def device(self) -> torch.device:
        return self.data.device

    @property
    def nbytes(self) -> int:
        return self.data.numel() * self.data.element_size() + self.scales.numel() * self.scales.element_size()

    def to(self, device: str | torch.device) -> PackedWeight:
        """The same weight for another device (int4 is repacked for that device's kernel)."""
        device = torch.device(device)
        if device == self.device:
            return self
        if self.kind != "int4":
            return PackedWeight(self.kind, self.rows, self.columns, self.data.to(device), self.scales.to(device),
                                self.source)
        values = unpack_int4(self).to(device)
        return pack_int4_values(values, self.scales.to(device), self.source)

    # -------------------------------------------------------------------------------------- math

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The dense [N, K] weight, exactly as the packed values and scales define it (computed in float32)."""
        if self.kind == "bfloat16":
            return self.data.to(dtype)
        if self.kind == "int8":
            return (self.data.to(torch.float32) * self.scales.to(torch.float32)[:, None]).to(dtype)
        values = unpack_int4(self).to(torch.float32)  # [N, K] in 0..15
        scale_zero = self.scales.to(torch.float32)  # [K/G, N, 2]
        scale = scale_zero[..., 0].t().repeat_interleave(GROUP, dim=1)
        zero = scale_zero[..., 1].t().repeat_interleave(GROUP, dim=1)
        return ((values - 8) * scale + zero).to(dtype)

    def rows_dense(self, index: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Rows `index` of the dense weight (an embedding lookup), without dequantizing the rest."""
        if self.kind == "bfloat16":
            return self.data[index].to(dtype)
        if self.kind == "int8":
            return (self.data[index].to(torch.float32) * self.scales[index].to(torch.float32)[..., None]).to(dtype)
        flat = index.reshape(-1)
        values = _int4_rows(self, flat).to(torch.float32)  # [n, K]
        scale_zero = self.scales[:, flat, :].to(torch.float32)  # [K/G, n, 2]
        scale = scale_zero[..., 0].t().repeat_interleave(GROUP, dim=1)
        zero = scale_zero[..., 1].t().repeat_interleave(GROUP, dim=1)
        return ((values - 8) * scale + zero).to(dtype).reshape(*index.shape, self.columns)

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., K] @ weight.T -> [..., N] in x's dtype, through the packed kernel with bfloat16 activations and
        outputs, whatever the rows: a prompt's length never changes the precision the model runs in.

        The CPU kernels cost time in proportion to the rows. Dequantizing for a dense product instead does not pay
        here: on this project's 2-core AVX2 machine, dequantizing a 4096 x 4096 int4 weight takes ~350 ms, the
        kernel ~0.9 ms a row, and a float32 product of 64 rows 34 ms (the kernel: 57 ms), so the kernel wins below
        about 500 rows, and a bfloat16 product is slower than both (199 ms for 64 rows).
        """
        flat = x.reshape(-1, self.columns)
        kernel_input = flat.to(KERNEL_DTYPE)
        if self.kind == "bfloat16":
            out = torch.nn.functional.linear(kernel_input, self.data)
        elif self.kind == "int8":
            out = torch.ops.aten._weight_int8pack_mm(kernel_input, self.data, self.scales)
        elif self.device.type == "cpu":
            out = torch.ops.aten._weight_int4pack_mm_for_cpu(kernel_input, self.data, GROUP, self.scales)
        else:
            out = torch.ops.aten._weight_int4pack_mm(kernel_input, self.data, GROUP, self.scales)
        return out.to(x.dtype).reshape(*x.shape[:-1], self.rows)


# -------------------------------------------------------------------------------------- int4


def pack_int4_values(values: torch.Tensor, scale_zero: torch.Tensor, source: str = "") -> PackedWeight:
    """Pack int4 values [N, K] (0..15) with bfloat16 (scale, zero) [K/32, N, 2] for the kernel of their device."""
    rows, columns = values.shape
    if not int4_shape_ok(rows, columns):
        raise ValueError(f"an int4 weight needs rows divisible by 32 and columns by 64 (got {rows} x {columns})")
    scale_zero = scale_zero.to(KERNEL_DTYPE).contiguous()
    if values.device.type == "cpu":  # the layout is 32-row blocks one after another: pack a few thousand rows at once
        tiles = _inner_k_tiles(columns)
        data = torch.cat([torch.ops.aten._convert_weight_to_int4pack_for_cpu(
            values[start:start + PACK_ROWS].to(torch.int32).contiguous(), tiles)
            for start in range(0, rows, PACK_ROWS)])
        _check_cpu_layout()
        return PackedWeight("int4", rows, columns, data, scale_zero, source)
    pairs = (values[:, ::2] << 4 | values[:, 1::2]).to(torch.uint8).contiguous()
    data = torch.ops.aten._convert_weight_to_int4pack(pairs, _inner_k_tiles(columns))
    return PackedWeight("int4", rows, columns, data, scale_zero, source)


@functools.lru_cache(maxsize=1)
def _check_cpu_layout() -> None:
    """Once per process: the CPU kernel's packed bytes are laid out as this module reads them."""
    _cpu_block_rows()


@functools.lru_cache(maxsize=1)
def _cpu_block_rows() -> int:
    """The rows per block of the CPU kernel's layout on this machine (torch picks it by CPU capability), checked
    on a weight whose last block is a short one."""
    generator = torch.Generator().manual_seed(0)
    values = torch.randint(0, 16, (96, 128), generator=generator, dtype=torch.int32)
    data = torch.ops.aten._convert_weight_to_int4pack_for_cpu(values, _inner_k_tiles(128))
    for block_rows in (32, 64):
        if torch.equal(_cpu_unpack(data, 96, 128, block_rows).to(torch.int32), values):
            return block_rows
    raise RuntimeError(f"torch {torch.__version__} packs int4 weights in a layout llmscope does not know")


def _cpu_unpack(data: torch.Tensor, rows: int, columns: int, block_rows: int) -> torch.Tensor:
    flat = data.reshape(-1)
    parts = []
    for start in range(0, rows, block_rows):
        size = min(block_rows, rows - start)
        block = flat[start * columns // 2:(start + size) * columns // 2].view(columns, size // 2)
        low, high = (block & 15).t(), (block >> 4).t()  # [size/2, K] each
        parts.append(torch.cat([low, high]) if size == block_rows else torch.stack([low, high], 1).flatten(0, 1))
    return torch.cat(parts)


def _cpu_int4_rows(data: torch.Tensor, rows: int, columns: int, index: torch.Tensor) -> torch.Tensor:
    block_rows = _cpu_block_rows()
    start = torch.div(index, block_rows, rounding_mode="floor") * block_rows
    half = (rows - start).clamp(max=block_rows) // 2
    within = index - start
    full = half * 2 == block_rows
    byte = torch.where(full, within % half, within // 2)
    high = torch.where(full, within >= half, within % 2 == 1)
    offsets = start[:, None] * (columns // 2) + torch.arange(columns)[None, :] * half[:, None] + byte[:, None]
    picked = data.reshape(-1)[offsets]  # [n, K]
    return (picked >> (high.to(torch.uint8)[:, None] * 4)) & 15


def _int4_rows(weight: PackedWeight, index: torch.Tensor) -> torch.Tensor:
    if weight.device.type == "cpu":
        return _cpu_int4_rows(weight.data, weight.rows, weight.columns, index)
    return unpack_int4(weight)[index]


def unpack_int4(weight: PackedWeight) -> torch.Tensor:
    """The int4 values [N, K] (uint8, 0..15) of a packed weight."""
    if weight.device.type == "cpu":
        return _cpu_unpack(weight.data, weight.rows, weight.columns, _cpu_block_rows())
    # CUDA tiles: run the kernel on an identity with unit scales and zero offsets: the output is q - 8.
    unit = torch.zeros_like(weight.scales)
    unit[..., 0] = 1
    eye = torch.eye(weight.columns, dtype=KERNEL_DTYPE, device=weight.device)
    out = torch.ops.aten._weight_int4pack_mm(eye, weight.data, GROUP, unit)  # [K, N]
    return (out.t().round() + 8).to(torch.uint8)


def quantize_int4(weight: torch.Tensor, source: str = "") -> PackedWeight:
    """Quantize a dense [N, K] weight to int4 with a scale and zero per 32 values (min-max, round to nearest)."""
    rows, columns = weight.shape
    groups = weight.detach().to(torch.float32).reshape(rows, columns // GROUP, GROUP)
    low = groups.amin(dim=-1)
    high = groups.amax(dim=-1)
    scale = ((high - low) / 15).clamp(min=1e-10)
    values = ((groups - low[..., None]) / scale[..., None]).round().clamp(0, 15).reshape(rows, columns)
    zero = low + 8 * scale  # w = (q - 8) * scale + zero = q * scale + low
    scale_zero = torch.stack([scale.t(), zero.t()], dim=-1)
    return pack_int4_values(values.to(torch.uint8).to(weight.device), scale_zero, source)


def quantize_int8(weight: torch.Tensor, source: str = "") -> PackedWeight:
    """Quantize a dense [N, K] weight to int8 with one symmetric scale per row."""
    dense = weight.detach().to(torch.float32)
    scale = (dense.abs().amax(dim=1) / 127).clamp(min=1e-10)
    data = (dense / scale[:, None]).round().clamp(-127, 127).to(torch.int8)
    return PackedWeight("int8", dense.shape[0], dense.shape[1], data.contiguous(), scale.to(KERNEL_DTYPE), source)


def to_bfloat16(weight: torch.Tensor, source: str = "") -> PackedWeight:
    """A dense [N, K] weight held in bfloat16 (half of float32, 8 significant bits)."""
    data = weight.detach().to(KERNEL_DTYPE).contiguous()
    return PackedWeight("bfloat16", data.shape[0], data.shape[1], data, torch.zeros(0, dtype=KERNEL_DTYPE), source)


def quantize(weight: torch.Tensor, kind: str, source: str = "") -> PackedWeight | None:
    """The weight in the form packed_form() picks for `kind`; None when no packed kernel takes its shape."""
    form = packed_form(kind, *weight.shape)
    if form == "bfloat16":
        return to_bfloat16(weight, source)
    if form == "int4":
        return quantize_int4(weight, source)
    return quantize_int8(weight, source) if form == "int8" else None


# -------------------------------------------------------------------------------------- autograd


class _PackedMatmul(torch.autograd.Function):
    """x @ W.T with W packed: gradients flow to x (the weight is frozen), through the dense weight."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: PackedWeight) -> torch.Tensor:  # type: ignore[override]
        ctx.weight = weight
        return weight.matmul(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad @ ctx.weight.dequantize(grad.dtype), None


def packed_linear(x: torch.Tensor, weight: PackedWeight) -> torch.Tensor:
    """The packed product, differentiable with respect to x when x needs a gradient."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _PackedMatmul.apply(x, weight)
    return weight.matmul(x)
