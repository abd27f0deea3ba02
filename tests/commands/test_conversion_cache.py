"""The conversion cache through the commands: a full disk while the tokenizer is written, an unwritable cache, the
`cache` listing and --clear, a damaged config.json that falls back to the GGUF header."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.tinygguf import load_converted

from llmscope.loading import loader


def test_full_disk_while_writing_the_tokenizer(empty_cache: Path, tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch,
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


def test_cache_command_lists_and_clears(empty_cache: Path, tiny_gguf: Path, tmp_path: Path, cli) -> None:
    _, entry = load_converted(tiny_gguf)
    listing = cli("cache", "--json")
    assert listing.exit_code == 0, listing.stderr
    document = listing.json()
    names = {e["name"]: e for e in document["entries"]}
    assert entry.name in names
    row = names[entry.name]
    assert row["source"] == str(tiny_gguf.resolve()) and row["problem"] is None and row["kind"] == "model"
    assert row["size_bytes"] == sum(p.stat().st_size for p in entry.iterdir())
    assert row["last_used"] >= row["created"]
    assert document["total_bytes"] == sum(p.stat().st_size for p in (empty_cache / "gguf").rglob("*") if p.is_file())
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


def test_damaged_config_in_an_entry_falls_back_to_the_gguf_header(empty_cache: Path, tiny_gguf: Path, cli) -> None:
    _, entry = load_converted(tiny_gguf)
    (entry / "config.json").write_text("{ not json")
    result = cli("architecture", "-m", str(tiny_gguf), "--json")
    assert result.exit_code == 0, result.stderr
    assert "is broken" in result.stderr and not entry.exists()
    from transformers import AutoConfig

    expected = AutoConfig.from_pretrained(str(tiny_gguf.parent), gguf_file=tiny_gguf.name)
    assert loader.load_config(str(tiny_gguf)).hidden_size == expected.hidden_size == 64
