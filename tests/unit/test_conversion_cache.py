"""The GGUF conversion cache under faults, in this process: a full disk (patched writers), bytes overwritten in an
entry, content keys, copied entries, clocks that disagree, an entry cleared while in use; the fast cached load."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest
from helpers.tinygguf import load_converted

from llmscope.loading import conversion_cache, loader


def _logits(loaded: loader.LoadedModel, ids: list[int]) -> list[float]:
    import torch

    with torch.no_grad():
        return loaded.model(torch.tensor([ids])).logits[0, -1].tolist()


IDS = [5, 17, 42, 99, 3]


def test_full_disk_while_writing_weights_falls_back_to_memory(empty_cache: Path, tiny_gguf: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """safetensors raises its own SafetensorError (not OSError) on a full disk: the model is used from memory,
    the warning names the real cause, and nothing half-written is left behind."""
    import transformers.modeling_utils
    from safetensors import SafetensorError

    def full_disk(*args: object, **kwargs: object) -> None:
        raise SafetensorError("Error while serializing: IoError(No space left on device (os error 28))")

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full_disk)  # what save_pretrained calls
    with caplog.at_level(logging.WARNING, logger="llmscope"):
        loaded = loader.load_model(str(tiny_gguf), device="cpu")
    assert loaded.from_cache is None  # not "converted and cached"
    assert "No space left on device" in caplog.text and "could not read the GGUF" not in caplog.text
    assert "SafetensorError" in caplog.text
    model_entry = loader.gguf_cache_dir(loaded.spec)
    assert not model_entry.exists()
    assert not [p for p in (empty_cache / "gguf").iterdir() if p.name.startswith(".tmp-")]
    monkeypatch.undo()
    reference = loader.load_model(str(tiny_gguf), device="cpu")
    assert _logits(loaded, IDS) == _logits(reference, IDS)


def test_overwritten_weight_bytes_are_detected_and_rebuilt(empty_cache: Path, tiny_gguf: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    first, entry = load_converted(tiny_gguf)
    expected = _logits(first, IDS)
    weights = entry / "model.safetensors"
    size = weights.stat().st_size
    stat = weights.stat()
    with open(weights, "r+b") as handle:  # same size, garbage in the middle of the weights, mtime put back
        handle.seek(size // 2)
        handle.write(b"\x7f" * 4096)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert weights.stat().st_size == size
    assert "does not match its recorded hash" in (conversion_cache.verify_entry(entry) or "")
    with caplog.at_level(logging.WARNING, logger="llmscope"):
        again = loader.load_model(str(tiny_gguf), device="cpu")
    assert "is broken" in caplog.text and "rebuilding it" in caplog.text
    assert again.from_cache is False  # rebuilt, never used
    assert _logits(again, IDS) == expected
    assert conversion_cache.verify_entry(entry) is None


def test_zeroed_safetensors_header_is_rebuilt(empty_cache: Path, tiny_gguf: Path) -> None:
    first, entry = load_converted(tiny_gguf)
    weights = entry / "model.safetensors"
    with open(weights, "r+b") as handle:
        handle.write(bytes(64))
    assert "header" in (conversion_cache.verify_entry(entry) or "")
    again = loader.load_model(str(tiny_gguf), device="cpu")
    assert again.from_cache is False
    third = loader.load_model(str(tiny_gguf), device="cpu")
    assert third.from_cache is True and _logits(third, IDS) == _logits(first, IDS)


def test_a_copied_entry_is_hashed_once_then_trusted_by_its_signature(empty_cache: Path, tiny_gguf: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _, entry = load_converted(tiny_gguf)
    moved = entry.with_name(entry.name + "-copy")
    shutil.copytree(entry, moved)  # new inodes and ctimes: the large file gets one full check
    monkeypatch.setattr(conversion_cache, "SMALL_FILE", 0)  # treat every file as large
    hashed: list[str] = []
    real = conversion_cache.file_sha256
    monkeypatch.setattr(conversion_cache, "file_sha256", lambda p: hashed.append(Path(p).name) or real(p))
    assert conversion_cache.verify_entry(moved) is None
    assert "model.safetensors" in hashed
    hashed.clear()
    conversion_cache._VERIFIED.clear()  # as in a new process
    assert conversion_cache.verify_entry(moved) is None
    assert hashed == []  # the refreshed signatures are trusted: no hashing on a normal load


def test_staging_of_a_live_process_is_kept(empty_cache: Path) -> None:
    folder = empty_cache / "gguf"
    live = folder / f".tmp-abc-{os.getppid()}-12345678"
    dead = folder / ".tmp-abc-999999999-12345678"
    for path in (live, dead):
        path.mkdir(parents=True)
        (path / "model.safetensors").write_bytes(bytes(1000))
    assert conversion_cache.remove_stale_staging() == 1000
    assert live.exists() and not dead.exists()


def test_last_use_is_never_before_creation_when_the_clocks_disagree(empty_cache: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """"created" once came from time.time() and "last used" from the kernel's coarser file clock.
    Python's clock is set 1000 s ahead of the kernel's here, so two clocks cannot agree by luck."""
    import time as time_module

    ahead = time_module.time() + 1000.0
    monkeypatch.setattr(conversion_cache.time, "time", lambda: ahead)
    entry = empty_cache / "gguf" / "clocks"
    with conversion_cache.staging(entry) as folder:
        (folder / "weights.bin").write_bytes(bytes(16))
    first = {e.name: e for e in conversion_cache.list_entries().entries}["clocks"]
    assert first.created == ahead and first.last_used == ahead
    later = ahead + 5.0
    monkeypatch.setattr(conversion_cache.time, "time", lambda: later)
    conversion_cache.touch(entry)
    used = {e.name: e for e in conversion_cache.list_entries().entries}["clocks"]
    assert used.created == ahead and used.last_used == later


def test_config_that_passes_the_hash_but_does_not_load_falls_back(empty_cache: Path, tiny_gguf: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Even an entry that verifies but whose config transformers refuses is dropped, not fatal."""
    _, entry = load_converted(tiny_gguf)
    config = json.loads((entry / "config.json").read_text())
    config["model_type"] = "no-such-architecture"
    (entry / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(conversion_cache, "verify_entry", lambda e: None)
    assert loader.load_config(str(tiny_gguf)).model_type == "llama"
    assert not entry.exists()


def test_key_is_the_content_not_the_path(empty_cache: Path, tiny_gguf: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    copy = tmp_path / "elsewhere" / "renamed.gguf"
    copy.parent.mkdir()
    shutil.copyfile(tiny_gguf, copy)
    key = conversion_cache.gguf_content_key(tiny_gguf)
    assert key == hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()[:20]
    assert conversion_cache.gguf_content_key(copy) == key  # one conversion per machine
    calls: list[Path] = []
    real = conversion_cache.file_sha256
    monkeypatch.setattr(conversion_cache, "file_sha256", lambda p: calls.append(p) or real(p))
    assert conversion_cache.gguf_content_key(copy) == key and calls == []  # paid once per file
    stat = copy.stat()
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF  # edited in the middle, same size, mtime put back
    copy.write_bytes(bytes(data))
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert conversion_cache.gguf_content_key(copy) == hashlib.sha256(bytes(data)).hexdigest()[:20] != key


def test_second_path_to_the_same_file_reuses_the_entry(empty_cache: Path, tiny_gguf: Path, tmp_path: Path) -> None:
    _, entry = load_converted(tiny_gguf)
    copy = tmp_path / "clone" / "other-name.gguf"
    copy.parent.mkdir()
    shutil.copyfile(tiny_gguf, copy)
    second = loader.load_model(str(copy), device="cpu")
    assert second.from_cache is True and loader.gguf_cache_dir(second.spec) == entry


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fast_cached_load_matches_from_pretrained_on_every_architecture(tiny_models: dict[str, Path],
                                                                          dtype: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from llmscope.loading.cached_model import _assign_into_meta_model

    torch_dtype = getattr(torch, dtype)
    ids = torch.tensor([[1, 7, 42, 99, 3, 250, 8]])
    for name, folder in tiny_models.items():
        fast = _assign_into_meta_model(folder, torch_dtype, "cpu")  # raises rather than falling back
        reference = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch_dtype).eval()
        assert not any(t.is_meta for t in [*fast.parameters(), *fast.buffers()]), name
        fast_buffers = dict(fast.named_buffers())
        for buffer_name, buffer in reference.named_buffers():
            assert torch.equal(fast_buffers[buffer_name], buffer), (name, buffer_name)
        with torch.no_grad():
            assert torch.equal(fast(ids).logits, reference(ids).logits), name
        assert fast.generation_config.to_dict() == reference.generation_config.to_dict(), name
        if reference.config.tie_word_embeddings:
            assert fast.lm_head.weight.data_ptr() == fast.get_input_embeddings().weight.data_ptr(), name


def test_an_entry_cleared_while_in_use_is_rebuilt_without_library_text(tiny_gguf: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import logging
    import shutil

    from llmscope.loading import loader

    monkeypatch.setenv("LLMSCOPE_CACHE", str(tmp_path / "cache"))
    loader.load_tokenizer(str(tiny_gguf))  # the tokenizer entry now exists
    real = loader._cached_tokenizer

    def cleared_meanwhile(entry: Path, light: bool) -> object:  # `cache --clear` from another shell, mid-load
        shutil.rmtree(entry)
        return real(entry, light)

    said: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append(record.getMessage())

    logger = logging.getLogger("llmscope")
    handler, level = Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    monkeypatch.setattr(loader, "_cached_tokenizer", cleared_meanwhile)
    try:
        tokenizer = loader.load_tokenizer(str(tiny_gguf))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert tokenizer("Hello")["input_ids"]
    assert any("was removed while in use" in line for line in said), said
    assert not any("Couldn't instantiate" in line or "first use" in line for line in said), said
