"""The --html files: each carries the command's --json document inline, options checked before loading, one page
per --batch record."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")


def inline_document(path: Path) -> dict[str, Any]:
    page = path.read_text()
    found = re.search(r'<script type="application/json" id="llmscope-data">(.*?)</script>', page, re.S)
    assert found is not None
    return json.loads(found.group(1))


def test_html_file_carries_the_json_document(cli: Any, tiny_model_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "score.html"
    text = "a </script> b"  # must not end the data element early
    result = cli("score", text, "-m", str(tiny_model_dir), "--json", "--html", str(target))
    assert result.exit_code == 0, result.stderr
    document, inline = result.json(), inline_document(target)
    for volatile in ("model_info",):
        document.pop(volatile), inline.pop(volatile)
    document["summary"].pop("seconds"), inline["summary"].pop("seconds")
    assert inline == document
    page = target.read_text()
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert "<script src" not in page and "<link rel=\"stylesheet\"" not in page  # everything inline


def test_html_options_are_checked_before_loading(cli: Any, tmp_path: Path) -> None:
    result = cli("next-token", "hi", "--html", str(tmp_path))
    assert result.exit_code == 2 and "is a folder" in result.stderr
    (tmp_path / "file.txt").write_text("x")
    batch = tmp_path / "prompts.txt"
    batch.write_text("hi\n")
    result = cli("next-token", "--batch", str(batch), "--html", str(tmp_path / "file.txt"))
    assert result.exit_code == 2 and "names a folder" in result.stderr
    result = cli("attention", "hi", "--html", str(tmp_path / "missing" / "a.html"))
    assert result.exit_code == 2 and "does not exist" in result.stderr


def test_batch_html_writes_one_page_per_record(cli: Any, tiny_model_dir: Path, tmp_path: Path) -> None:
    batch = tmp_path / "prompts.jsonl"
    batch.write_text('{"id": "first", "prompt": "hello"}\n{"id": "second/two", "prompt": "the cat"}\n')
    result = cli("next-token", "--batch", str(batch), "-m", str(tiny_model_dir), "--html", str(tmp_path / "pages"))
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    pages = sorted((tmp_path / "pages").iterdir())
    assert [p.name for p in pages] == ["0000-first.html", "0001-second_two.html"]
    for record, page in zip(records, pages):
        inline = inline_document(page)
        assert inline["id"] == record["id"] and inline["steps"] == record["steps"]
