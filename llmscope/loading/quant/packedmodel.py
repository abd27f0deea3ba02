"""Whole models with packed weights: built from a GGUF file tensor by tensor, written to and read from a folder
(packed safetensors + a manifest). It chooses nothing about caching or devices itself and never prints.

A model is built on the meta device, so the only memory it ever takes is what it keeps: the packed weights,
the dense tensors (norms, biases, float embeddings) and, briefly, one tensor being converted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import mmap
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from llmscope.loading.cached_model import make_missing_buffers
from llmscope.loading.quant.ggufweights import (
    DENSE_TYPES,
    FileTensor,
    dense_tensor,
    packed_tensor,
    processor_for,
    read_tensors,
    target_form,
)
from llmscope.loading.quant.modules import PackedEmbedding, PackedLinear, set_module
from llmscope.loading.quant.packing import PackedWeight
from llmscope.loading.quant.packing import _cpu_block_rows as cpu_int4_block_rows

log = logging.getLogger("llmscope")

MANIFEST = "packed-weights.json"
WEIGHTS = "packed.safetensors"
MANIFEST_FORMAT = 2  # 2: Q8_0 / Q5 / Q6 tables kept exact (format 1 entries are rebuilt)


def _meta_model(config: Any, dtype: torch.dtype) -> Any:
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, dtype=dtype)


def build_from_gguf(path: Path, config: Any, mode: str, dtype: torch.dtype, device: str) -> Any:
    """The model in a GGUF file with its weights packed as --quantize `mode` (auto, int8 or int4) asks."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    field = reader.fields["general.architecture"]
    architecture = bytes(field.parts[field.data[0]]).decode()
    model = _meta_model(config, dtype)
    processor = processor_for(architecture, config)
    dense: dict[str, torch.Tensor] = {}
    packed: dict[str, PackedWeight] = {}
    blocks: dict[str, dict[str, Any]] = {}  # dense tensors that came from quantized blocks
    tables = (model.get_input_embeddings(), model.get_output_embeddings())
    for item in read_tensors(reader, model, processor):
        _release_pages(reader)  # the previous tensor's pages: it is packed or copied by now
        module_name, _, parameter = item.hf_name.rpartition(".")
        module = model.get_submodule(module_name)
        form = target_form(item.ggml_type, mode, table=any(module is table for table in tables))
        if parameter == "weight" and form != "dense" and isinstance(module, (nn.Linear, nn.Embedding)):
            weight = packed_tensor(item, form, processor, device)
            if weight is not None:
                packed[module_name] = weight
                continue
        dense[item.hf_name] = _dense(model, item.hf_name, dense_tensor(item, processor, dtype)).to(device)
        if item.ggml_type not in DENSE_TYPES:  # cached as the file's own blocks, dequantized again at load
            blocks[item.hf_name] = {"gguf_name": item.gguf_name, "type": item.ggml_type, "raw": np.array(item.raw)}
    _release_pages(reader)
    model = _assemble(model, dense, packed, dtype, device)
    model.llmscope_file_blocks = {"architecture": architecture, "tensors": blocks}
    return model


def _release_pages(reader: Any) -> None:
    """Let the kernel drop the file's pages read so far: they count as this process's memory while mapped, and a
    4 GB file read through its mapping would otherwise add 4 GB to the peak of a model that keeps 4.5 GB."""
    mapping = getattr(reader.data, "_mmap", None)
    if mapping is not None and hasattr(mmap, "MADV_DONTNEED"):
        with contextlib.suppress(OSError, ValueError):
            mapping.madvise(mmap.MADV_DONTNEED)


def _dense(model: Any, name: str, tensor: torch.Tensor) -> torch.Tensor:
    target = dict(model.named_parameters()).get(name)
    return tensor.reshape(target.shape) if target is not None else tensor


def _assemble(model: Any, dense: dict[str, torch.Tensor], packed: dict[str, PackedWeight], dtype: torch.dtype,
              device: str) -> Any:
    model.load_state_dict(dense, strict=False, assign=True)
    head = model.get_output_embeddings()
    head_name = next((name for name, module in model.named_modules() if module is head), None)
    embedding = model.get_input_embeddings()
    embedding_name = next(name for name, module in model.named_modules() if module is embedding)
    head_missing = head is not None and head_name not in packed and head.weight.is_meta
    if head_missing and embedding_name not in packed:
        model.tie_weights()  # a dense tied head: share the dense table
    for name, weight in packed.items():
        module = model.get_submodule(name)
        if isinstance(module, nn.Embedding):
            set_module(model, name, PackedEmbedding(weight, dtype, module.padding_idx))
        else:
            bias = module.bias if getattr(module, "bias", None) is not None and not module.bias.is_meta else None
            set_module(model, name, PackedLinear(weight, bias.data if bias is not None else None))
    if head_missing and embedding_name in packed:  # a tied head over a packed table: the same packed weight
        set_module(model, head_name, PackedLinear(packed[embedding_name], _head_bias(head)))
    missing = [name for name, parameter in model.named_parameters() if parameter.is_meta]
    if missing:
        raise ValueError(f"the file has no weights for {', '.join(missing[:3])}")
    if not make_missing_buffers(model, device):
        raise ValueError("a buffer the model's initialisation did not make")
    return model.eval()


def _head_bias(head: Any) -> torch.Tensor | None:
    bias = getattr(head, "bias", None)
    return bias.data if bias is not None and not bias.is_meta else None


# -------------------------------------------------------------------------------------- folders


def save_packed(model: Any, folder: Path) -> None:
    """Write the model into `folder`: config, generation config, packed.safetensors and the manifest."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    seen: dict[int, str] = {}
    file_blocks = getattr(model, "llmscope_file_blocks", {"architecture": None, "tensors": {}})
    blocks = {}
    for name, block in file_blocks["tensors"].items():  # the file's bytes: smaller than the dequantized tensor
        tensors[f"{name}.file_blocks"] = torch.from_numpy(np.array(block["raw"], dtype=np.uint8))
        blocks[name] = {"gguf_name": block["gguf_name"], "type": block["type"]}
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen:
            continue  # a tied dense table is written once; loading ties it again
        seen[tensor.data_ptr()] = name
        if name not in blocks:
            tensors[name] = tensor.detach().to("cpu").contiguous()
    layers: dict[str, Any] = {}
    written: dict[int, str] = {}
    for name, module in model.named_modules():
        if not isinstance(module, (PackedLinear, PackedEmbedding)):
            continue
        weight = module.packed
        shared = written.get(id(weight.data))
        layers[name] = {"layer": "embedding" if isinstance(module, PackedEmbedding) else "linear",
                        "kind": weight.kind, "rows": weight.rows, "columns": weight.columns,
                        "source": weight.source, "same_as": shared}
        if shared is None:
            written[id(weight.data)] = name
            on_cpu = weight.to("cpu")
            tensors[f"{name}.packed_data"] = on_cpu.data.contiguous()
            tensors[f"{name}.packed_scales"] = on_cpu.scales.contiguous()
    model.config.save_pretrained(str(folder))
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(str(folder))
    save_file(tensors, str(folder / WEIGHTS))
    (folder / MANIFEST).write_text(json.dumps({"format": MANIFEST_FORMAT, "layers": layers, "file_blocks": blocks,
                                               "architecture": file_blocks["architecture"],
                                               "int4_block_rows": cpu_int4_block_rows()}, indent=1))


SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
                      "BOOL": torch.bool}


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, each read with plain reads into memory of its own (torch's allocator
    aligns it to 64 bytes, as the int8 kernel needs). Nothing maps the file, so its pages never count as this
    process's memory beside the copies (mapping it and copying out held the file twice: 8.74 GiB peak for an
    8B-shaped Q4_0 model that keeps 4.5 GiB)."""
    tensors: dict[str, torch.Tensor] = {}
    with open(path, "rb", buffering=0) as handle:
        length = struct.unpack("<Q", handle.read(8))[0]
        header = json.loads(handle.read(length))
        start = 8 + length
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            begin, end = entry["data_offsets"]
            data = torch.empty(end - begin, dtype=torch.uint8)
            view, done = memoryview(data.numpy()), 0
            handle.seek(start + begin)
            while done < end - begin:
                got = handle.readinto(view[done:])
                if not got:
                    raise ValueError(f"{path.name} ends inside tensor {name}")
                done += got
            tensors[name] = data.view(SAFETENSORS_DTYPES[entry["dtype"]]).reshape(entry["shape"])
    return tensors


def load_packed(folder: Path, dtype: torch.dtype, device: str) -> Any:
    """The model written by save_packed, on `device`, its dense tensors in `dtype`."""
    from transformers import AutoConfig, GenerationConfig

    manifest = json.loads((folder / MANIFEST).read_text())
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{MANIFEST} has format {manifest.get('format')}, not {MANIFEST_FORMAT}")
    written_block = manifest.get("int4_block_rows", 32)  # entries before the key were written in 32-row blocks
    if written_block != cpu_int4_block_rows() and any(layer["kind"] == "int4" for layer in manifest["layers"].values()):
        raise ValueError(f"{MANIFEST} holds int4 blocks of {written_block} rows; this CPU's kernel reads "
                         f"{cpu_int4_block_rows()}")
    config = AutoConfig.from_pretrained(str(folder))
    model = _meta_model(config, dtype)
    tensors = read_safetensors(folder / WEIGHTS)
    packed: dict[str, PackedWeight] = {}
    for name, layer in manifest["layers"].items():
        source = layer["same_as"] or name
        if layer["same_as"] and source in packed:
            packed[name] = packed[source]
            continue
        # Each tensor has memory of its own, 64-byte aligned (torch's int8 kernel segfaults on data at the 8-byte
        # offsets a safetensors mapping gives, AVX-512, measured).
        weight = PackedWeight(layer["kind"], layer["rows"], layer["columns"], tensors.pop(f"{source}.packed_data"),
                              tensors.pop(f"{source}.packed_scales"), layer["source"])
        packed[name] = weight.to(device)
    if manifest["file_blocks"]:
        processor = processor_for(manifest["architecture"], config)
        for name, block in manifest["file_blocks"].items():
            raw = tensors.pop(f"{name}.file_blocks").numpy()
            item = FileTensor(block["gguf_name"], name, block["type"], raw.shape[0], 0, raw)
            tensors[name] = _dense(model, name, dense_tensor(item, processor, dtype))
    dense = {name: (tensor.to(dtype) if tensor.is_floating_point() else tensor).to(device)
             for name, tensor in tensors.items()}
    model = _assemble(model, dense, packed, dtype, device)
    if (folder / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(str(folder))
    return model
