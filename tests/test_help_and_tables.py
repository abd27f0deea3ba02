"""Help and tables as a person reads them (issue 21 item 10): every command's --help shows its example, the root
--help keeps whole descriptions, token text quoted in score's tables, compare's marker without colour and one
busy-CPU warning, cache entry names whole at 80 columns, and tokenize recording a use of the tokenizer entry."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest

from llmscope.cli.main import app


def _commands() -> list[tuple[str, object]]:
    import typer.main

    return [(typer.main.get_command_name(info.name or info.callback.__name__), info.callback)
            for info in app.registered_commands]


def test_every_command_help_shows_its_example(cli) -> None:
    for name, _callback in _commands():
        result = cli(name, "--help", env={"COLUMNS": "80"})
        assert result.exit_code == 0, (name, result.stderr)
        assert "Example:" in result.stdout and f"llmscope {name}" in result.stdout.split("Example:")[1], name
        assert "{model}" not in result.stdout, name


def test_root_help_keeps_whole_descriptions(cli) -> None:
    import inspect

    result = cli("--help", env={"COLUMNS": "80"})
    commands = result.stdout.split("Commands:")[1]
    assert "..." not in commands
    flat = " ".join(commands.split())
    for name, callback in _commands():
        first = " ".join((inspect.getdoc(callback) or "").split("\n\n")[0].split())
        assert first.replace("- ", "-") in flat.replace("- ", "-"), name


def test_score_tables_quote_token_text(cli, tiny_model_dir: Path) -> None:
    result = cli("score", "a - b - c", "-m", tiny_model_dir, "--table", env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.stderr
    assert re.search(r"^\s*\d+\s+'␣-'\s", result.stdout, re.M) or re.search(r"^\s*\d+\s+'-'\s", result.stdout, re.M)


def test_compare_marks_different_tops_without_colour_and_warns_once(cli, tiny_models: dict[str, Path],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import llmscope.loading.cputhreads

    monkeypatch.setattr(llmscope.loading.cputhreads, "others_busy_percent", lambda interval=0.1: 100.0)
    result = cli("compare", "The capital of France is Paris. The capital of Italy is Rome.", "-m",
                 tiny_models["llama"], "--against", tiny_models["qwen2"], "--worst", "8",
                 env={"COLUMNS": "80", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.stderr
    assert "(≠ and bold: different top tokens)" in result.stdout
    assert re.search(r"^.*≠\s*$", result.stdout.split("Where they part most")[1], re.M)
    assert result.stderr.count("other processes keep the CPUs") == 1, result.stderr


def test_cache_table_keeps_entry_names_whole_at_80_columns() -> None:
    from rich.console import Console

    from llmscope.loading.conversion_cache import CacheEntry, CacheReport
    from llmscope.render.cache import show_cache
    from llmscope.render.display import Display

    names = ("0123456789abcdef0123.tokenizer", "fedcba98765432100123")
    report = CacheReport(root="/home/someone/.cache/llmscope/gguf", total_bytes=3 << 30, entries=tuple(
        CacheEntry(name=name, kind="tokenizer", size_bytes=1 << 30, created=0.0,
                   source="/models/a-rather-long-file-name.Q4_K_M.gguf", last_used=0.0,
                   problem="model.safetensors: the weights changed since they were written")
        for name in names))
    out = io.StringIO()
    show_cache(Display(out=Console(file=out, width=80, no_color=True, color_system=None)), report)
    text = out.getvalue()
    assert all(name in text for name in names), text
    assert max(len(line) for line in text.splitlines()) <= 80


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
