"""The loader on local folders: aliases, paths that look like hub ids, devices and dtypes, the conversion cache's
keys and staging, no network call offline, gated and private models explained, threads for a busy machine."""

from __future__ import annotations

import os
import shutil
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


def test_offline_makes_no_network_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    attempts: list[object] = []
    real_connect = socket.socket.connect

    def recording_connect(self, address):
        attempts.append(address)
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", recording_connect)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="not in the local Hugging Face cache"):
        loader.load_model("someorg/not-cached-model", device="cpu")
    with pytest.raises(ModelLoadError):
        loader.load_tokenizer("someorg/not-cached-model")
    assert attempts == []


def test_gated_and_private_models_are_explained() -> None:
    import httpx2
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    spec = loader.ModelSpec("meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-8B", "hub", "meta-llama/Llama-3.1-8B")
    response = httpx2.Response(401, request=httpx2.Request("GET", "https://huggingface.co/meta-llama"))
    gated = loader._translate_load_error(GatedRepoError("Access to model is restricted", response=response),
                                         spec, "config")
    assert "gated model" in str(gated) and "HF_TOKEN" in str(gated)
    private = loader._translate_load_error(RepositoryNotFoundError("404", response=response), spec, "config")
    assert "private" in str(private) and "hf auth login" in str(private)


def test_paths_are_not_taken_for_hub_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         tiny_model_dir: Path) -> None:
    monkeypatch.chdir(tmp_path)
    os.symlink("loop-b", "loop-a")
    os.symlink("loop-a", "loop-b")
    with pytest.raises(ModelLoadError, match="broken symbolic link"):
        loader.resolve_model_spec("loop-a")
    Path("models").mkdir()
    with pytest.raises(ModelLoadError, match="no such model folder"):
        loader.resolve_model_spec("models/missing")  # `models` is here: a path, not a hub id
    shutil.copytree(tiny_model_dir, tmp_path / "org" / "name")
    spec = loader.resolve_model_spec("org/name")  # an existing relative folder wins over the hub
    assert spec.kind == "folder" and spec.location == str((tmp_path / "org" / "name").resolve())
    assert loader.resolve_model_spec("Qwen/Qwen2.5-0.5B").kind == "hub"
    assert loader.resolve_model_spec("gpt2").kind == "hub"
    with pytest.raises(ModelLoadError, match="no such model folder"):
        loader.resolve_model_spec("not a model id")


def test_threads_fit_the_cores_other_processes_leave() -> None:
    from llmscope.loading.cputhreads import choose_threads

    assert choose_threads(3, 90.0, cores=2).threads == 3  # asked for: kept
    assert choose_threads(None, 60.0, cores=2).threads == 1  # one of two cores busy elsewhere
    assert choose_threads(None, 40.0, cores=8).threads == 5  # three of eight busy
    assert choose_threads(None, 100.0, cores=2).threads == 1  # never below one
    assert choose_threads(None, 10.0, cores=2).threads is None  # a quiet machine: torch's default
    assert choose_threads(None, None, cores=2).threads is None  # nothing measured: no change
