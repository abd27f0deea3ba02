"""The shared loader: spec resolution, device/dtype choice, the GGUF conversion cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llmscope.core.errors import DeviceError, ModelLoadError, UsageError
from llmscope.loading import conversion_cache, loader


def test_aliases_and_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMSCOPE_MODEL", raising=False)
    spec = loader.resolve_model_spec(None)
    assert spec.kind == "embedded" and spec.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert Path(spec.location, spec.gguf_file).stat().st_size == 98_362_432
    assert loader.resolve_model_spec("phi3").location == "microsoft/Phi-3-mini-4k-instruct"
    assert loader.resolve_model_spec("phi3").kind == "hub"
    monkeypatch.setenv("LLMSCOPE_MODEL", "Qwen/Qwen2.5-0.5B")
    assert loader.resolve_model_spec(None).location == "Qwen/Qwen2.5-0.5B"


def test_folder_and_missing_paths(tiny_model_dir: Path, tmp_path: Path) -> None:
    spec = loader.resolve_model_spec(str(tiny_model_dir))
    assert spec.kind == "folder" and spec.location == str(tiny_model_dir.resolve())
    with pytest.raises(ModelLoadError, match="no such model folder"):
        loader.resolve_model_spec(str(tmp_path / "nope" / "model"))
    with pytest.raises(ModelLoadError, match="no such GGUF file"):
        loader.resolve_model_spec(str(tmp_path / "missing.gguf"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"is not a model: it has no config\.json"):
        loader.resolve_model_spec(str(tmp_path / "empty"))


def test_device_and_dtype_on_cpu() -> None:
    import torch

    assert loader.resolve_device("cpu") == "cpu"
    assert loader.resolve_dtype("auto", "cpu") == torch.float32
    assert loader.resolve_dtype("bf16", "cpu") == torch.bfloat16
    with pytest.raises(UsageError, match="unknown dtype"):
        loader.resolve_dtype("float8", "cpu")
    with pytest.raises(UsageError, match="unknown device"):
        loader.resolve_device("tpu")
    if not torch.cuda.is_available():
        assert loader.resolve_device("auto") in ("cpu", "mps")
        with pytest.raises(DeviceError, match="CUDA is not available"):
            loader.resolve_device("cuda")


def test_load_tiny_model(tiny_model_dir: Path) -> None:
    loaded = loader.load_model(str(tiny_model_dir), device="cpu")
    expected = sum(p.numel() for p in loaded.model.parameters())  # tied embeddings appear once in parameters()
    assert loaded.parameters == expected
    assert loaded.dtype == "float32" and loaded.device == "cpu" and loaded.from_cache is None
    assert loaded.info.source == "folder"
    assert loaded.tokenizer.pad_token is not None


def test_cache_key_changes_with_file(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + bytes(100))
    first = conversion_cache.gguf_content_key(gguf)
    gguf.write_bytes(b"GGUF" + bytes(99) + b"x")
    os.utime(gguf, ns=(1, 1))
    assert conversion_cache.gguf_content_key(gguf) != first


def test_staging_dir_is_atomic(tmp_path: Path) -> None:
    entry = tmp_path / "entry"
    with pytest.raises(RuntimeError):
        with conversion_cache.staging(entry) as staging:
            (staging / "a.bin").write_bytes(b"1234")
            raise RuntimeError("interrupted")
    assert not entry.exists() and list(tmp_path.iterdir()) == []
    with conversion_cache.staging(entry) as staging:
        (staging / "a.bin").write_bytes(b"1234")
    assert loader.cache_entry_is_whole(entry)
    (entry / "a.bin").write_bytes(b"12")  # truncated
    assert not loader.cache_entry_is_whole(entry)


@pytest.mark.slow
def test_embedded_model_facts(embedded_model) -> None:
    config = embedded_model.config
    assert embedded_model.parameters == 134_515_008
    assert (config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads) == (30, 9, 3)
    assert type(embedded_model.model).__name__ == "LlamaForCausalLM"
    entry = loader.gguf_cache_dir(embedded_model.spec)
    assert loader.cache_entry_is_whole(entry)
    assert (entry / "model.safetensors").is_file() and (entry / "tokenizer.json").is_file()


@pytest.mark.slow
def test_second_load_reads_the_cache(embedded_model) -> None:
    again = loader.load_model(None, device="cpu")
    assert again.from_cache is True
    assert again.parameters == 134_515_008
