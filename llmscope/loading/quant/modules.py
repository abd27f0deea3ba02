"""Layers that hold packed weights (PackedLinear, PackedEmbedding), putting them into a transformers model, and
quantizing a loaded model's linear layers at load (--quantize int8/int4). No files, no GGUF, no printing.

A packed layer keeps its tensors as buffers (not parameters: they are frozen) and says how many logical
parameters it stands for, so parameter counts stay those of the model. Its forward is differentiable with
respect to its input, so gradients (attribution, the lens) work on packed weights.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch import nn

from llmscope.loading.quant.packing import PackedWeight, packed_form, packed_linear, quantize


class PackedLinear(nn.Module):
    """A linear layer y = x W^T + b whose W is packed (int4 groups of 32, or int8 per row)."""

    def __init__(self, weight: PackedWeight, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.in_features = weight.columns
        self.out_features = weight.rows
        self.packed = weight
        self.register_buffer("packed_data", weight.data, persistent=False)
        self.register_buffer("packed_scales", weight.scales, persistent=False)
        self.bias = nn.Parameter(bias, requires_grad=False) if bias is not None else None

    @property
    def logical_parameters(self) -> int:
        return self.out_features * self.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = packed_linear(x, self.packed)
        return out + self.bias.to(out.dtype) if self.bias is not None else out

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.packed.kind}"


class PackedEmbedding(nn.Module):
    """An embedding table kept packed; a lookup dequantizes only the rows asked for."""

    def __init__(self, weight: PackedWeight, dtype: torch.dtype, padding_idx: int | None = None) -> None:
        super().__init__()
        self.num_embeddings = weight.rows
        self.embedding_dim = weight.columns
        self.padding_idx = padding_idx
        self.packed = weight
        self.output_dtype = dtype
        self.register_buffer("packed_data", weight.data, persistent=False)
        self.register_buffer("packed_scales", weight.scales, persistent=False)
        # Off the CPU an int4 row cannot be read out of the kernel's tiles cheaply: keep the table dense there.
        self.table = weight.dequantize(dtype) if weight.device.type != "cpu" and weight.kind == "int4" else None

    @property
    def logical_parameters(self) -> int:
        return self.num_embeddings * self.embedding_dim

    @property
    def weight(self) -> torch.Tensor:
        """The whole table, dense (for code that reads the embedding matrix; costs a dequantization)."""
        return self.table if self.table is not None else self.packed.dequantize(self.output_dtype)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.table is not None:
            return nn.functional.embedding(ids, self.table, self.padding_idx)
        return self.packed.rows_dense(ids, self.output_dtype)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, {self.packed.kind}"


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def packed_parameters(model: nn.Module) -> int:
    """Logical parameters held by packed layers, each packed weight counted once (a tied table is one)."""
    return sum(weight.rows * weight.columns for weight in packed_weights(model))


def packed_summary(model: nn.Module) -> dict[str, int]:
    """How many weight matrices are held in which form: {"int4 from Q4_1": 210, "int8 from Q8_0": 1, ...}."""
    counts: Counter[str] = Counter(f"{w.kind} from {w.source}" if w.source else w.kind for w in packed_weights(model))
    return dict(sorted(counts.items()))


def held_weight_bytes(model: nn.Module) -> int:
    """Bytes of every weight as held: packed data and scales plus dense parameters, each tensor counted once."""
    tensors = list(model.parameters()) + [t for w in packed_weights(model) for t in (w.data, w.scales)]
    seen: set[int] = set()
    total = 0
    for tensor in tensors:
        if tensor.data_ptr() not in seen and not tensor.is_meta:
            seen.add(tensor.data_ptr())
            total += tensor.numel() * tensor.element_size()
    return total


def quantize_linears(model: Any, kind: str) -> None:
    """Replace every linear layer of a loaded model (the LM head included; transformers' Conv1D too) by a
    PackedLinear of `kind` (int8 / int4). A head tied to the embedding stays tied: both read one packed weight,
    the embedding dequantizing only the rows it looks up. A layer whose shape no packed kernel takes stays dense
    (exact; unpackable_layers() names them for the load line). Done in place."""
    head, embedding = model.get_output_embeddings(), model.get_input_embeddings()
    tied = head is not None and isinstance(embedding, nn.Embedding) and head.weight is embedding.weight
    for name, module in list(model.named_modules()):
        conv1d = type(module).__name__ == "Conv1D"  # GPT-2's linear layers keep their weight as [in, out]
        if not (isinstance(module, nn.Linear) or conv1d) or module.weight.dim() != 2:
            continue
        dense = module.weight.data.t() if conv1d else module.weight.data
        source = str(dense.dtype).removeprefix("torch.")
        weight = quantize(dense, kind, f"{source} quantized")
        if weight is None:
            continue
        bias = module.bias.data if module.bias is not None else None
        set_module(model, name, PackedLinear(weight, bias))
        if tied and module is head:
            embedding_name = next(n for n, m in model.named_modules() if m is embedding)
            set_module(model, embedding_name, PackedEmbedding(weight, embedding.weight.dtype, embedding.padding_idx))


def unpackable_layers(model: nn.Module, kind: str) -> dict[str, int]:
    """Dense linear layers that `kind` (int8 / int4) could not pack because no kernel takes their shape, counted by
    what they are held in and their input width: {"float32, input width 100": 7}."""
    counts: Counter[str] = Counter()
    for module in model.modules():
        conv1d = type(module).__name__ == "Conv1D"
        if not (isinstance(module, nn.Linear) or conv1d) or module.weight.dim() != 2 or module.weight.is_meta:
            continue
        rows, columns = module.weight.shape[::-1] if conv1d else module.weight.shape
        if packed_form(kind, int(rows), int(columns)) is None:
            dtype = str(module.weight.dtype).removeprefix("torch.")
            counts[f"{dtype}, input width {columns}"] += 1
    return dict(sorted(counts.items()))


# -------------------------------------------------------------------------------------- reading layers


def layer_rows(module: nn.Module) -> int:
    """Output rows of a linear layer or an embedding table, packed or dense (an LM head's vocabulary)."""
    for name in ("out_features", "num_embeddings"):
        if isinstance(getattr(module, name, None), int):
            return int(getattr(module, name))
    return int(module.weight.shape[0])  # type: ignore[union-attr]


def layer_placement(module: nn.Module) -> tuple[torch.device, torch.dtype | None]:
    """Where a layer's weight lives and the dtype its input should have (None: any; a packed layer casts)."""
    packed = getattr(module, "packed", None)
    if isinstance(packed, PackedWeight):
        return packed.device, None
    weight = module.weight  # type: ignore[union-attr]
    return weight.device, weight.dtype


def shares_weight(first: nn.Module | None, second: nn.Module | None) -> bool:
    """Whether two layers use one weight (a tied LM head), dense or packed."""
    if first is None or second is None:
        return False
    packed_first, packed_second = getattr(first, "packed", None), getattr(second, "packed", None)
    if isinstance(packed_first, PackedWeight) or isinstance(packed_second, PackedWeight):
        return packed_first is not None and packed_second is not None and packed_first.data is packed_second.data
    return first.weight is second.weight  # type: ignore[union-attr]


def packed_weights(model: nn.Module) -> list[PackedWeight]:
    """Every packed weight of a model, each once (a tied table is one)."""
    found: dict[int, PackedWeight] = {}
    for module in model.modules():
        packed = getattr(module, "packed", None)
        if isinstance(packed, PackedWeight):
            found.setdefault(id(packed.data), packed)
    return list(found.values())
