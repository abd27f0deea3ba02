"""`llmscope cache` in process: --clear of one entry, a symlinked entry, an entry that cannot be removed, and the
use of a tokenizer entry recorded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers.cli import RUNTIME, USAGE


@pytest.fixture
def fake_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A conversion cache with two entries, one of them a symlink to a folder outside the cache."""
    monkeypatch.setenv("LLMSCOPE_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "gguf"
    (folder / "aaaa1111").mkdir(parents=True)
    (folder / "aaaa1111" / "model.safetensors").write_bytes(b"\0" * 100)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "keep.txt").write_text("not the cache's")
    (folder / "bbbb2222").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    return folder


def test_tokenize_records_a_use_of_the_tokenizer_entry(cli, tiny_gguf: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from llmscope.loading import conversion_cache
    from llmscope.loading.loader import load_model

    monkeypatch.setenv("LLMSCOPE_CACHE", str(tmp_path / "cache"))
    assert cli("tokenize", "Hello", "-m", tiny_gguf, "-q").exit_code == 0  # the tokenizer entry
    load_model(str(tiny_gguf), device="cpu")  # the model entry (model + tokenizer)
    entries = {entry.kind: entry for entry in conversion_cache.list_entries().entries}
    assert set(entries) == {"model", "tokenizer"}
    marker = tmp_path / "cache" / "gguf" / entries["tokenizer"].name / conversion_cache.CACHE_MARKER
    os.utime(marker, (1_000_000, 1_000_000))
    assert cli("tokenize", "Hello", "-m", tiny_gguf, "-q").exit_code == 0
    used = {entry.kind: entry.last_used for entry in conversion_cache.list_entries().entries}
    assert used["tokenizer"] is not None and used["tokenizer"] > 1_000_000


def test_clear_with_an_empty_name_clears_nothing(cli, fake_cache: Path) -> None:
    result = cli("cache", "--clear", "")
    assert result.exit_code == USAGE and "empty entry name" in result.stderr
    assert sorted(p.name for p in fake_cache.iterdir()) == ["aaaa1111", "bbbb2222"]


def test_clear_removes_a_symlink_entry_but_not_its_target(cli, fake_cache: Path) -> None:
    result = cli("cache", "--clear", "bbbb2222")
    assert result.exit_code == 0, result.stderr
    assert "removed 1 entry" in result.stderr
    assert [p.name for p in fake_cache.iterdir()] == ["aaaa1111"]
    assert (fake_cache.parent.parent / "elsewhere" / "keep.txt").exists()


def test_clear_that_cannot_remove_says_so(cli, fake_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    def read_only(path: object, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(shutil, "rmtree", read_only)
    result = cli("cache", "--clear", "aaaa1111")
    assert result.exit_code == RUNTIME
    assert "could not remove aaaa1111 (Permission denied)" in result.stderr
    empty = cli("cache", "--clear", env={"LLMSCOPE_CACHE": str(fake_cache.parent.parent / "none")})
    assert empty.exit_code == 0 and "nothing to remove" in empty.stderr
