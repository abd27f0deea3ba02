"""The loader's steps one at a time on the tiny models: the load dtype, each source's loader (a folder through
transformers, a GGUF file dequantized and cached), where the model is said to be, and load_model mapping any
source's failure to one error."""

from __future__ import annotations

import struct
from pathlib import Path
from types import SimpleNamespace

import pytest

from llmscope.core.errors import DeviceError, ModelLoadError
from llmscope.loading import loader


def test_the_load_dtype_is_the_asked_one_or_the_devices() -> None:
    import torch

    assert loader._load_dtype("auto", "cpu", None) == torch.float32
    assert loader._load_dtype("bfloat16", "cpu", None) == torch.bfloat16
    assert loader._load_dtype("float16", "cpu", "auto") == torch.float16


def test_a_folder_loads_through_transformers_and_packs_on_request(tiny_model_dir: Path) -> None:
    import torch

    spec = loader.resolve_model_spec(str(tiny_model_dir))
    dense, tokenizer, from_cache = loader._load_pretrained(spec, "none", torch.float32, "cpu", None, False)
    assert from_cache is None and dense.dtype == torch.float32 and tokenizer.eos_token == "<|im_end|>"
    linears = sum(isinstance(module, torch.nn.Linear) for module in dense.modules())
    assert linears == 2 * 7 + 1  # two layers of q, k, v, o, gate, up, down, and the head
    packed, _, _ = loader._load_pretrained(spec, "int8", torch.float32, "cpu", None, False)
    started = 0.0
    plain = loader._loaded_model(spec, dense, tokenizer, "cpu", torch.float32, "none", started, None, False)
    held = loader._loaded_model(spec, packed, tokenizer, "cpu", torch.float32, "int8", started, None, False)
    assert plain.weights is None and plain.activations is None and plain.kept_exact is None
    assert held.parameters == plain.parameters == sum(p.numel() for p in dense.parameters())
    packed_count = sum(int(part.rsplit("x", 1)[1]) for part in held.weights.split(", "))
    kept_count = sum(int(part.rsplit("x", 1)[1]) for part in (held.kept_exact or "x0").split(", "))
    assert packed_count + kept_count == linears and packed_count > 0, (held.weights, held.kept_exact)
    assert held.activations == loader.KERNEL_DTYPE_NAME and held.quantize == "int8"


def test_a_gguf_file_is_converted_once_then_read_from_the_cache(tiny_gguf: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setenv("LLMSCOPE_CACHE", str(tmp_path / "cache"))
    spec = loader.resolve_model_spec(str(tiny_gguf))
    converted, _, first = loader._load_dequantized_gguf(spec, torch.float32, "cpu", None)
    assert first is False and loader.cache_entry_is_whole(loader.gguf_cache_dir(spec))
    cached, tokenizer, second = loader._load_dequantized_gguf(spec, torch.float32, "cpu", None)
    assert second is True and tokenizer.eos_token == "<|im_end|>"
    ours, theirs = converted.state_dict(), cached.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[name], theirs[name]) for name in ours)


def test_the_device_label_names_what_a_device_map_placed() -> None:
    model = SimpleNamespace(hf_device_map={"model.embed_tokens": 0, "model.layers.0": 0, "lm_head": "cpu"})
    assert loader._device_label(model, "cpu", None) == "cpu"
    assert loader._device_label(model, "cuda:0", "auto") == "auto (0, cpu)"
    assert loader._device_label(SimpleNamespace(), "cuda:0", "auto") == "auto"


def test_a_source_failure_becomes_one_load_error(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    def corrupt(*args: object) -> None:
        raise struct.error("unpack requires a buffer of 8 bytes")

    monkeypatch.setattr(loader, "_load_pretrained", corrupt)
    with pytest.raises(ModelLoadError) as failed:
        loader.load_model(str(tiny_model_dir), device="cpu")
    assert failed.value.message == (f"could not load the model of {tiny_model_dir}: "
                                    "unpack requires a buffer of 8 bytes")

    def out_of_memory(*args: object) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(loader, "_load_pretrained", out_of_memory)
    with pytest.raises(DeviceError) as full:
        loader.load_model(str(tiny_model_dir), device="cpu")
    assert str(tiny_model_dir) in full.value.message
