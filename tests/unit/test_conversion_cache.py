"""The GGUF conversion cache under faults: a full disk (patched writers), an unwritable cache, bytes overwritten
in an entry, a writer killed mid-write, a damaged config.json; content keys; `llmscope cache`; the fast cached
load giving the same logits as from_pretrained on every tiny architecture."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llmscope.loading import conversion_cache, loader


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty conversion cache for one test."""
    root = tmp_path / "cache"
    monkeypatch.setenv("LLMSCOPE_CACHE", str(root))
    return root


def _logits(loaded: loader.LoadedModel, ids: list[int]) -> list[float]:
    import torch

    with torch.no_grad():
        return loaded.model(torch.tensor([ids])).logits[0, -1].tolist()


IDS = [5, 17, 42, 99, 3]


def _converted(tiny_gguf: Path) -> tuple[loader.LoadedModel, Path]:
    loaded = loader.load_model(str(tiny_gguf), device="cpu")
    return loaded, loader.gguf_cache_dir(loaded.spec)


# ------------------------------------------------------------------------------------------- item 11 and 16


def test_full_disk_while_writing_weights_falls_back_to_memory(cache: Path, tiny_gguf: Path,
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
    assert not [p for p in (cache / "gguf").iterdir() if p.name.startswith(".tmp-")]
    monkeypatch.undo()
    reference = loader.load_model(str(tiny_gguf), device="cpu")
    assert _logits(loaded, IDS) == _logits(reference, IDS)


def test_full_disk_while_writing_the_tokenizer(cache: Path, tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch,
                                               cli) -> None:
    """The tokenizers library raises a plain Exception: `tokenize` still works and says why nothing was cached."""
    from transformers import PreTrainedTokenizerBase

    def full_disk(*args: object, **kwargs: object) -> None:
        raise Exception("No space left on device (os error 28)")

    monkeypatch.setattr(PreTrainedTokenizerBase, "save_pretrained", full_disk)
    result = cli("tokenize", "--ids", "-m", str(tiny_gguf), "The capital of France is")
    assert result.exit_code == 0, result.stderr
    from transformers import AutoTokenizer

    expected = AutoTokenizer.from_pretrained(str(tiny_gguf.parent), gguf_file=tiny_gguf.name)
    assert result.stdout.split() == [str(i) for i in expected("The capital of France is")["input_ids"]]
    assert "No space left on device" in result.stderr and "could not write the tokenizer" in result.stderr


def test_unwritable_cache_load_line_does_not_claim_cached(tmp_path: Path, tiny_gguf: Path,
                                                          monkeypatch: pytest.MonkeyPatch, cli) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("LLMSCOPE_CACHE", str(blocker / "cache"))
    result = cli("next-token", "-m", str(tiny_gguf), "The capital of France is")
    assert result.exit_code == 0, result.stderr
    assert "could not write the converted model" in result.stderr
    assert "(converted from GGUF, not cached)" in result.stderr and "and cached" not in result.stderr


# ------------------------------------------------------------------------------------------- item 12


def test_overwritten_weight_bytes_are_detected_and_rebuilt(cache: Path, tiny_gguf: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    first, entry = _converted(tiny_gguf)
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


def test_zeroed_safetensors_header_is_rebuilt(cache: Path, tiny_gguf: Path) -> None:
    first, entry = _converted(tiny_gguf)
    weights = entry / "model.safetensors"
    with open(weights, "r+b") as handle:
        handle.write(bytes(64))
    assert "header" in (conversion_cache.verify_entry(entry) or "")
    again = loader.load_model(str(tiny_gguf), device="cpu")
    assert again.from_cache is False
    third = loader.load_model(str(tiny_gguf), device="cpu")
    assert third.from_cache is True and _logits(third, IDS) == _logits(first, IDS)


def test_a_copied_entry_is_hashed_once_then_trusted_by_its_signature(cache: Path, tiny_gguf: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _, entry = _converted(tiny_gguf)
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


KILL_MID_WRITE = textwrap.dedent("""
    import os, signal, sys
    from llmscope.loading import conversion_cache, loader
    real = conversion_cache._fsync_path
    def die(path):  # the files are written, nothing is fsynced or renamed yet: kill -9 here
        os.kill(os.getpid(), signal.SIGKILL)
    conversion_cache._fsync_path = die
    loader.load_model(sys.argv[1], device="cpu")
""")


def test_writer_killed_mid_write_leaves_no_trusted_entry_and_its_staging_is_removed(
        cache: Path, tiny_gguf: Path, cli) -> None:
    env = dict(os.environ, LLMSCOPE_CACHE=str(cache), PYTHONPATH=str(Path(loader.__file__).parents[1]))
    child = subprocess.run([sys.executable, "-c", KILL_MID_WRITE, str(tiny_gguf)], env=env, capture_output=True,
                           text=True, timeout=300)
    assert child.returncode == -9, child.stderr
    folder = cache / "gguf"
    staging = [p for p in folder.iterdir() if p.name.startswith(".tmp-")]
    assert staging and not [p for p in folder.iterdir() if not p.name.startswith(".")]
    leftover = sum(conversion_cache.folder_size(p) for p in staging)
    assert leftover > 0 and conversion_cache.cache_size() >= leftover  # env shows it
    listed = cli("cache", "--json")
    assert listed.exit_code == 0, listed.stderr
    assert listed.json()["entries"] == [] and not [p for p in folder.iterdir() if p.name.startswith(".tmp-")]
    loaded = loader.load_model(str(tiny_gguf), device="cpu")
    assert loaded.from_cache is False and conversion_cache.verify_entry(loader.gguf_cache_dir(loaded.spec)) is None


def test_staging_of_a_live_process_is_kept(cache: Path) -> None:
    folder = cache / "gguf"
    live = folder / f".tmp-abc-{os.getppid()}-12345678"
    dead = folder / ".tmp-abc-999999999-12345678"
    for path in (live, dead):
        path.mkdir(parents=True)
        (path / "model.safetensors").write_bytes(bytes(1000))
    assert conversion_cache.remove_stale_staging() == 1000
    assert live.exists() and not dead.exists()


# ------------------------------------------------------------------------------------------- item 13


def test_cache_command_lists_and_clears(cache: Path, tiny_gguf: Path, tmp_path: Path, cli) -> None:
    _, entry = _converted(tiny_gguf)
    listing = cli("cache", "--json")
    assert listing.exit_code == 0, listing.stderr
    document = listing.json()
    names = {e["name"]: e for e in document["entries"]}
    assert entry.name in names
    row = names[entry.name]
    assert row["source"] == str(tiny_gguf.resolve()) and row["problem"] is None and row["kind"] == "model"
    assert row["size_bytes"] == sum(p.stat().st_size for p in entry.iterdir())
    assert row["last_used"] >= row["created"]
    assert document["total_bytes"] == sum(p.stat().st_size for p in (cache / "gguf").rglob("*") if p.is_file())
    env = cli("env", "--json")
    assert env.json()["cache_size_bytes"] == document["total_bytes"]
    human = cli("cache")
    assert entry.name in human.stdout and "tiny.gguf" in human.stdout
    assert cli("cache", "nothing").exit_code == 2
    assert cli("cache", "--clear", "no-such-entry").exit_code == 2
    one = cli("cache", "--clear", entry.name, "--json")
    assert one.exit_code == 0 and one.json()["removed"] == [entry.name] and not entry.exists()
    assert len(one.json()["entries"]) == len(document["entries"]) - 1
    everything = cli("cache", "--clear", "--json")
    assert everything.json()["entries"] == [] and everything.json()["total_bytes"] == 0


def test_last_use_is_never_before_creation_when_the_clocks_disagree(cache: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 28 item 14: "created" came from time.time() and "last used" from the kernel's coarser file clock.
    Python's clock is set 1000 s ahead of the kernel's here, so two clocks cannot agree by luck."""
    import time as time_module

    ahead = time_module.time() + 1000.0
    monkeypatch.setattr(conversion_cache.time, "time", lambda: ahead)
    entry = cache / "gguf" / "clocks"
    with conversion_cache.staging(entry) as folder:
        (folder / "weights.bin").write_bytes(bytes(16))
    first = {e.name: e for e in conversion_cache.list_entries().entries}["clocks"]
    assert first.created == ahead and first.last_used == ahead
    later = ahead + 5.0
    monkeypatch.setattr(conversion_cache.time, "time", lambda: later)
    conversion_cache.touch(entry)
    used = {e.name: e for e in conversion_cache.list_entries().entries}["clocks"]
    assert used.created == ahead and used.last_used == later


# ------------------------------------------------------------------------------------------- item 14


def test_damaged_config_in_an_entry_falls_back_to_the_gguf_header(cache: Path, tiny_gguf: Path, cli) -> None:
    _, entry = _converted(tiny_gguf)
    (entry / "config.json").write_text("{ not json")
    result = cli("architecture", "-m", str(tiny_gguf), "--json")
    assert result.exit_code == 0, result.stderr
    assert "is broken" in result.stderr and not entry.exists()
    from transformers import AutoConfig

    expected = AutoConfig.from_pretrained(str(tiny_gguf.parent), gguf_file=tiny_gguf.name)
    assert loader.load_config(str(tiny_gguf)).hidden_size == expected.hidden_size == 64


def test_config_that_passes_the_hash_but_does_not_load_falls_back(cache: Path, tiny_gguf: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Even an entry that verifies but whose config transformers refuses is dropped, not fatal."""
    _, entry = _converted(tiny_gguf)
    config = json.loads((entry / "config.json").read_text())
    config["model_type"] = "no-such-architecture"
    (entry / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(conversion_cache, "verify_entry", lambda e: None)
    assert loader.load_config(str(tiny_gguf)).model_type == "llama"
    assert not entry.exists()


# ------------------------------------------------------------------------------------------- item 15


def test_key_is_the_content_not_the_path(cache: Path, tiny_gguf: Path, tmp_path: Path,
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


def test_second_path_to_the_same_file_reuses_the_entry(cache: Path, tiny_gguf: Path, tmp_path: Path) -> None:
    _, entry = _converted(tiny_gguf)
    copy = tmp_path / "clone" / "other-name.gguf"
    copy.parent.mkdir()
    shutil.copyfile(tiny_gguf, copy)
    second = loader.load_model(str(copy), device="cpu")
    assert second.from_cache is True and loader.gguf_cache_dir(second.spec) == entry


# ------------------------------------------------------------------------------------------- issue 15, item 5


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
