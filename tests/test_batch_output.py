"""--batch output (issue 21 item 8): --json is accepted (a batch writes JSON Lines), the progress bar steps aside
for each record when stdout is the same terminal, and a blank line of a plain-text batch says which line and why."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from llmscope.cli.batch import BatchItem, BatchOutcome, parse_items
from llmscope.core.command_settings import OutputMode, output_mode
from llmscope.core.errors import UsageError


def test_batch_with_json_writes_json_lines(cli, tiny_model_dir: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The capital of France is\nHello world\n")
    result = cli("next-token", "--batch", prompts, "-m", tiny_model_dir, "-k", "1", "--json", "-q")
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["index"] for r in records] == [0, 1] and all(r["command"] == "next-token" for r in records)
    assert output_mode(json=True, batch=True) is OutputMode.JSONL
    assert output_mode(jsonl=True, batch=True) is OutputMode.JSONL
    with pytest.raises(UsageError, match="--batch writes JSON Lines: --ids"):
        output_mode(ids=True, batch=True)


def _terminal_lines(raw: str) -> list[str]:
    """What a terminal shows, line by line: colour codes dropped, a carriage return starting the line over."""
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw)
    return [line.split("\r")[-1] for line in plain.split("\n")]


def test_progress_bar_steps_aside_for_records_at_a_terminal() -> None:
    from rich.console import Console

    from llmscope.cli.kit import write_batch
    from llmscope.render.display import Display

    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=80, color_system="standard")
    display = Display(mode=OutputMode.JSONL, out=console, err=console)
    items = [BatchItem(index=i, prompt=f"p{i}") for i in range(3)]
    outcomes = iter([BatchOutcome(item, result=item.index) for item in items])
    write_batch(display, items, outcomes, lambda result, keys: display.record({**keys, "value": result}))
    records = [json.dumps({"index": i, "value": i}) for i in range(3)]
    shown = _terminal_lines(screen.getvalue())
    for record in records:
        assert record in shown, shown


def test_a_blank_line_in_a_plain_text_batch_names_its_line(cli, tiny_model_dir: Path, tmp_path: Path) -> None:
    items = parse_items("first\n\nthird\n\n\n")
    assert [item.prompt for item in items] == ["first", "", "third"]
    assert items[1].problem == "line 2 is blank: a plain-text batch reads one prompt per line"
    assert items[0].problem is None and items[2].problem is None
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Hello\n   \nworld\n")
    result = cli("tokenize", "--batch", prompts, "-m", tiny_model_dir, "-q")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records[1]["error"].startswith("line 2 is blank") and "stdin" not in records[1]["error"]
    assert "error" not in records[0] and "error" not in records[2] and result.exit_code == 1
