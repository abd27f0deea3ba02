"""What people read: cache entry names whole at 80 columns, the batch progress bar stepping aside for records,
non-finite figures as null in JSON, show-probs without colour."""

from __future__ import annotations

import io
import json
import re

from llmscope.cli.batch import BatchItem, BatchOutcome
from llmscope.core.command_settings import OutputMode


def _terminal_lines(raw: str) -> list[str]:
    """What a terminal shows, line by line: colour codes dropped, a carriage return starting the line over."""
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw)
    return [line.split("\r")[-1] for line in plain.split("\n")]


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


def test_non_finite_figures_are_null_in_json() -> None:
    from llmscope.core.model_info import to_plain

    assert to_plain({"logprob": float("-inf"), "x": float("nan"), "ok": -1.5}) == {"logprob": None, "x": None,
                                                                                  "ok": -1.5}


def test_show_probs_without_colour_explains_the_figures_and_ends_newline_tokens() -> None:
    from llmscope.generation.generate import GeneratedToken
    from llmscope.render.generation import confidence_legend, token_markup

    newline = GeneratedToken(index=0, token_id=1, probability=0.36, logprob=-1.02, seconds=0.0, text="\n", delta="\n")
    word = GeneratedToken(index=1, token_id=2, probability=0.77, logprob=-0.26, seconds=0.0, text=" Paris",
                          delta=" Paris")
    assert token_markup(newline, "probability", colour=False).plain == "↵[0.36]\n"
    assert token_markup(word, "probability", colour=False).plain == " Paris[0.77]"
    plain = confidence_legend("probability", colour=False)
    assert plain.plain == "each token is followed by [its probability]" and not plain.spans
    assert confidence_legend("probability", colour=True).spans
