"""The memory check before a load: the planned peak of loading a model (its weights as they will be held, twice
over while a GGUF file is dequantized), from its files' headers alone, refused in one line when it is more than the
memory there is. The weights figure here is the one the architecture planner shows. Headers only; no weights read."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmscope.loading.modelspec import ModelSpec
    from llmscope.loading.quant.ggufheader import TensorEntry

WEIGHT_DTYPE_BYTES: dict[str, float] = {"float32": 4, "bfloat16": 2, "float16": 2}
CONVERSION_COPIES = 2  # a first GGUF --quantize none load holds the dequantized tensors and the model at once
# (measured on the embedded model: 1.14 GiB peak RSS for 0.50 GiB of float32 weights; FACTS.md)


def weight_bytes(parameters: int, weights_dtype: str, held: tuple[int, str] | None = None) -> int:
    """What the weights take once loaded: packed bytes when held packed, else parameters x the dtype's size."""
    return held[0] if held else math.ceil(parameters * WEIGHT_DTYPE_BYTES[weights_dtype])


def load_peak_bytes(parameters: int, weights_dtype: str, held: tuple[int, str] | None = None,
                    converting: bool = False) -> int:
    """The planned peak of loading a model: its weights as held (the figure plan_memory starts from), twice over
    while a GGUF file is dequantized into a float32 model. Activations and the KV cache come on top."""
    return weight_bytes(parameters, weights_dtype, held) * (CONVERSION_COPIES if converting else 1)


def tensor_table(spec: ModelSpec) -> list[TensorEntry] | None:
    """A GGUF file's tensor table, read once for the whole load; None for other models and for a file that cannot
    be read as GGUF (the load itself then says what is wrong with it)."""
    if not spec.is_gguf:
        return None
    from llmscope.loading.quant.ggufheader import read_tensor_table

    try:
        return read_tensor_table(spec.gguf_path)
    except (OSError, ValueError):
        return None


def file_parameters(spec: ModelSpec, table: list[TensorEntry] | None) -> int | None:
    """Parameters counted from the weight files' headers (a GGUF tensor table, safetensors headers); None when the
    files are not here to read (a hub id not downloaded yet) or cannot be read."""
    try:
        if spec.is_gguf:
            return sum(math.prod(entry.shape) for entry in table) if table is not None else None
        files = sorted(Path(spec.location).glob("*.safetensors")) if spec.kind == "folder" else []
        total = 0
        for path in files:
            with open(path, "rb") as handle:
                (length,) = struct.unpack("<Q", handle.read(8))
                header = json.loads(handle.read(length))
            total += sum(math.prod(item["shape"]) for name, item in header.items() if name != "__metadata__")
        return total or None
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return None


def planned_load_peak(spec: ModelSpec, mode: str, weights_dtype: str, converting: bool,
                      table: list[TensorEntry] | None) -> int | None:
    """The planned peak memory of loading `spec` under the resolved --quantize `mode` with dense weights in
    `weights_dtype`: a GGUF's weights as `mode` holds them (from `table`), else parameters x the dtype's size;
    None when the files cannot tell."""
    parameters = file_parameters(spec, table)
    if parameters is None:
        return None
    held = None
    if spec.is_gguf and mode != "none":
        from llmscope.loading.quant.ggufweights import file_weight_bytes

        held = file_weight_bytes(spec.gguf_path, mode, 4 if weights_dtype == "float32" else 2, table)
    return load_peak_bytes(parameters, weights_dtype, held, converting=converting and held is None)


def check_load_fits(spec: ModelSpec, requested: str, mode: str, weights_dtype: str, device: str, converting: bool,
                    table: list[TensorEntry] | None) -> None:
    """Before any weights are read: refuse (MemoryLimitError, one line) a load whose planned peak is more than the
    memory free on `device`. `requested` is the --quantize asked for, `mode` what it resolved to; converting: a GGUF
    file is dequantized now (not read from the conversion cache). $LLMSCOPE_MEMORY_CHECK=0 skips the check."""
    from llmscope.loading import memory

    if not memory.check_enabled():
        return
    peak = planned_load_peak(spec, mode, weights_dtype, converting, table)
    if peak is None:
        return
    how = f"--quantize {requested}" + (" (a first load, dequantizing the GGUF file)" if converting else "")
    packed_hint = "--quantize auto or int4 keeps the weights packed" if requested == "none" else (
        "--quantize int4 holds the weights in the least memory")
    memory.require_fits(peak, memory.available_memory(device), f"loading {spec.name} with {how}",
                        hint=f"free memory, or {packed_hint}; LLMSCOPE_MEMORY_CHECK=0 skips this check")

