"""A GGUF file's tensors -> a transformers model whose linear and embedding weights stay packed: Q4_0, Q4_1 and
Q4_K blocks map exactly onto int4 groups of 32; other types get their nearest packed form. No cache, no printing.

The file is memory-mapped (gguf's reader) and read one tensor at a time, so a float32 copy of the whole model
never exists. Names and per-architecture fix-ups (llama's rotary row order for q/k) come from transformers' own
GGUF tables; a fix-up that is a reordering of rows is applied to the packed rows, any other one makes that
tensor dense.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from llmscope.loading.quant.packing import (
    GROUP,
    PackedWeight,
    int4_shape_ok,
    pack_int4_values,
    packed_form,
    quantize,
)

log = logging.getLogger("llmscope")

DEQUANTIZE_ROWS = 4096  # rows dequantized at a time into a dense tensor
EXACT_INT4 = ("Q4_0", "Q4_1", "Q4_K")  # blocks that are int4 groups of 32 exactly
DENSE_TYPES = ("F32", "F16", "BF16", "F64")
LOW_BIT = ("Q2_K", "Q3_K", "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "TQ1_0", "TQ2_0")


def target_form(ggml_type: str, mode: str, table: bool = False) -> str:
    """What a weight of this GGUF type becomes under --quantize `mode`: "int4", "int8", "bfloat16" or "dense".

    auto: Q4 blocks stay int4 (exact); types under 4 bits become int4; float tensors stay dense; Q8_0, Q5 and Q6
    become int8 per row, except in the embedding table and the LM head (`table`), whose errors reach the logits
    directly: those are dequantized exactly, as --quantize none does (cached as the file's own blocks). Measured
    on the embedded model's Q8_0 table (tied head), everything else packed, against the exact dequantization on a
    paragraph no test uses: float32 KL 0.00031 nats; bfloat16 KL 0.00067, and it turns the chat answer to "What
    is the capital of France?" from "The capital of France is Paris." into "L'Étoile, la Marseillaise, ..." (the
    first token is a near tie, "The" 0.152 against "L" 0.140); int8 per row KL 0.0023 and 96.8% top-1.
    int4 / int8: every weight in that form.
    """
    if mode in ("int8", "int4"):
        return mode
    if ggml_type in DENSE_TYPES:
        return "dense"
    if ggml_type in EXACT_INT4 or ggml_type in LOW_BIT or ggml_type.startswith("IQ4"):
        return "int4"
    return "dense" if table else "int8"


# -------------------------------------------------------------------------------------- block decoding


def _f16(raw: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(raw).view(np.float16).astype(np.float32)


def int4_blocks(raw: np.ndarray, ggml_type: str, columns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q4_0 / Q4_1 / Q4_K rows (bytes [N, row_bytes]) -> values [N, K] in 0..15, scale and zero [N, K/32] with
    w = (q - 8) * scale + zero, exactly the file's dequantization (Q4_K: each 32-value sub-block one group)."""
    rows = raw.shape[0]
    if ggml_type in ("Q4_0", "Q4_1"):
        head = 2 if ggml_type == "Q4_0" else 4
        blocks = raw.reshape(rows, columns // 32, head + 16)
        d = _f16(blocks[..., 0:2])[..., 0]
        packed = blocks[..., head:]  # 16 bytes: low nibbles are values 0-15, high nibbles 16-31
        values = np.concatenate([packed & 15, packed >> 4], axis=-1).reshape(rows, columns)
        zero = 8 * d if ggml_type == "Q4_1" else np.zeros_like(d)
        if ggml_type == "Q4_1":
            zero = zero + _f16(blocks[..., 2:4])[..., 0]
        return values, d, zero
    if ggml_type != "Q4_K":
        raise ValueError(f"{ggml_type} is not a 4-bit block type")
    blocks = raw.reshape(rows, columns // 256, 144)
    d = _f16(blocks[..., 0:2])  # [N, S, 1]
    dmin = _f16(blocks[..., 2:4])
    packed_scales = blocks[..., 4:16]
    low, high, mixed = packed_scales[..., 0:4], packed_scales[..., 4:8], packed_scales[..., 8:12]
    sub_scale = np.concatenate([low & 63, (mixed & 15) | ((low >> 2) & 48)], axis=-1).astype(np.float32)
    sub_min = np.concatenate([high & 63, (mixed >> 4) | ((high >> 2) & 48)], axis=-1).astype(np.float32)
    quants = blocks[..., 16:].reshape(rows, columns // 256, 4, 32)  # each 32 bytes: two sub-blocks
    values = np.stack([quants & 15, quants >> 4], axis=3).reshape(rows, columns)
    scale = (d * sub_scale).reshape(rows, columns // 32)
    zero = (8 * d * sub_scale - dmin * sub_min).reshape(rows, columns // 32)
    return values, scale, zero


def _pack_exact_int4(raw: np.ndarray, ggml_type: str, rows: int, columns: int, order: np.ndarray | None,
                     device: str) -> PackedWeight:
    values, scale, zero = int4_blocks(raw, ggml_type, columns)
    if order is not None:
        values, scale, zero = values[order], scale[order], zero[order]
    scale_zero = torch.from_numpy(np.stack([scale.T, zero.T], axis=-1).astype(np.float32))
    return pack_int4_values(torch.from_numpy(np.ascontiguousarray(values)).to(device), scale_zero.to(device),
                            ggml_type)


# -------------------------------------------------------------------------------------- the file


@dataclass
class FileTensor:
    """One tensor of the file, resolved to the model: where it goes and in what form."""

    gguf_name: str
    hf_name: str
    ggml_type: str
    rows: int
    columns: int
    raw: Any  # the memory-mapped bytes / values


def _row_order(processor: Any, name: str, rows: int) -> np.ndarray | bool | None:
    """The processor's fix-up as a row order: None when it leaves rows alone, False when it is not a reordering."""
    probe = np.arange(rows, dtype=np.float64)[:, None]
    try:
        result = processor.process(weights=probe, name=name, tensor_key_mapping={}, parsed_parameters={})
    except Exception:
        return False
    if result.name != name or result.weights.shape != probe.shape:
        return False
    order = result.weights[:, 0].astype(np.int64)
    if np.array_equal(order, np.arange(rows)):
        return None
    return order if np.array_equal(np.sort(order), np.arange(rows)) else False


def read_tensors(reader: Any, model: nn.Module, processor: Any) -> Iterator[FileTensor]:
    """Every tensor of the file (a gguf GGUFReader) that the model has, with its transformers name."""
    names = tensor_names(model, processor)
    for tensor in reader.tensors:
        if tensor.name not in names:
            continue
        shape = [int(n) for n in reversed(tensor.shape)]
        rows = shape[0]
        columns = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        yield FileTensor(tensor.name, names[tensor.name], tensor.tensor_type.name, rows, columns, tensor.data)


def tensor_names(model: nn.Module, processor: Any) -> dict[str, str]:
    """GGUF tensor name -> transformers parameter name, by transformers' own mapping. That mapping rebuilds gguf's
    name table for every submodule (397 times for a 30-layer model, ~35 s here); one table per process is enough."""
    from unittest import mock

    import gguf
    from transformers.modeling_gguf_pytorch_utils import get_gguf_hf_weights_map

    with mock.patch.object(gguf, "get_tensor_name_map", functools.lru_cache(maxsize=8)(gguf.get_tensor_name_map)):
        return get_gguf_hf_weights_map(model, processor)


def processor_for(architecture: str, config: Any) -> Any:
    """transformers' tensor fix-ups for a GGUF architecture (llama's q/k row order, ...)."""
    from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor

    return TENSOR_PROCESSORS.get(architecture, TensorProcessor)(config=config.to_dict())


def dense_tensor(item: FileTensor, processor: Any, dtype: torch.dtype) -> torch.Tensor:
    """A tensor dequantized the way transformers does it (same fix-ups), in `dtype`."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    kind = GGMLQuantizationType[item.ggml_type]
    raw = np.asarray(item.raw).view(np.ndarray)
    order = _row_order(processor, item.gguf_name, item.rows) if raw.ndim == 2 and item.rows > 1 else False
    if order is False:  # a fix-up that is not a row order (or a 1-D tensor): the whole tensor at once
        weights = dequantize(raw, kind)
        weights = processor.process(weights=weights, name=item.gguf_name, tensor_key_mapping={},
                                    parsed_parameters={}).weights
        return torch.from_numpy(np.asarray(weights, dtype=np.float32)).to(dtype)  # no copy when already float32
    # Rows a few thousand at a time into the result, so that dequantizing a 49,152-row table does not hold two or
    # three float32 copies of it at once.
    out = torch.empty((raw.shape[0], *dequantize(raw[:1], kind).shape[1:]), dtype=dtype)
    for start in range(0, raw.shape[0], DEQUANTIZE_ROWS):
        out[start:start + DEQUANTIZE_ROWS] = torch.from_numpy(dequantize(raw[start:start + DEQUANTIZE_ROWS], kind))
    return out if order is None else out[torch.from_numpy(order)]


def packed_tensor(item: FileTensor, form: str, processor: Any, device: str) -> PackedWeight | None:
    """The tensor in `form` ("int4" / "int8"), or None when it must stay dense (an unusual fix-up)."""
    order = _row_order(processor, item.gguf_name, item.rows)
    if order is False:
        return None
    if form == "int4" and item.ggml_type in EXACT_INT4 and int4_shape_ok(item.rows, item.columns):
        raw = np.asarray(item.raw).view(np.ndarray)
        return _pack_exact_int4(raw, item.ggml_type, item.rows, item.columns, order, device)
    dense = dense_tensor(item, processor, torch.float32).reshape(item.rows, item.columns).to(device)
    how = "quantized" if item.ggml_type in DENSE_TYPES else "as 16-bit" if form == "bfloat16" else "requantized"
    return quantize(dense, form, f"{item.ggml_type} {how}")


TABLE_NAMES = ("token_embd.weight", "output.weight")  # the embedding and the LM head in llama.cpp's names


def held_bytes(rows: int, columns: int, form: str, dense_bytes: int) -> int:
    """Bytes a [rows, columns] weight takes when held in `form` (int4 with bfloat16 scale and zero per 32 values,
    int8 with a bfloat16 scale per row, bfloat16, or dense in the model's dtype). The one formula for the planner
    and the tests that check it against a loaded model."""
    if form != "dense":
        form = packed_form(form, rows, columns) or "dense"
    return {"int4": rows * columns // 2 + rows * (columns // GROUP) * 4, "int8": rows * columns + rows * 2,
            "bfloat16": rows * columns * 2, "dense": rows * columns * dense_bytes}[form]


def file_weight_bytes(path: Any, mode: str, dense_bytes: int, table: list[Any] | None = None) -> tuple[int, str]:
    """The bytes a GGUF file's weights take once loaded under --quantize `mode`, read from its tensor table alone
    (`table`: read_tensor_table(path) when the caller has it already), and what they are held in ("int4 x210,
    float32 x62")."""
    from collections import Counter

    from llmscope.loading.quant.ggufheader import read_tensor_table

    total, forms = 0, Counter()
    for entry in table if table is not None else read_tensor_table(path):
        rows = entry.shape[0]
        columns = int(np.prod(entry.shape[1:])) if len(entry.shape) > 1 else 1
        form = target_form(entry.ggml_type, mode, table=entry.name in TABLE_NAMES) if len(entry.shape) == 2 \
            else "dense"
        if form != "dense":
            form = packed_form(form, rows, columns) or "dense"
        total += held_bytes(rows, columns, form, dense_bytes)
        forms[form] += 1
    return total, ", ".join(f"{form} x{count}" for form, count in sorted(forms.items()))


__all__ = ["GROUP", "FileTensor", "dense_tensor", "file_weight_bytes", "held_bytes", "int4_blocks", "packed_tensor",
           "processor_for", "read_tensors", "target_form"]
