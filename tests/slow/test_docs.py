"""The key figures of README.md and the documentation pages run again on the embedded SmolLM2 in the default mode."""

from __future__ import annotations

import json
import shlex
from typing import Any

import pytest


@pytest.mark.slow
def test_key_figures_rerun_in_the_default_mode_match_the_pages(docs_figures: Any, cli, monkeypatch) -> None:
    """next-token's p(" Paris") in the default (packed) mode and score's perplexity of paragraph.txt, run again."""
    monkeypatch.chdir(docs_figures.EXAMPLES)
    text = "\n".join(docs_figures.read_pages().values())
    for name in ("paris-default", "paragraph-perplexity"):
        figure = docs_figures.FIGURES[name]
        args = shlex.split(figure.command)[1:]
        result = cli(*args)
        assert result.exit_code == 0, result.stderr
        value = json.loads(result.stdout)
        for key in figure.path:
            value = value[key]
        shown = figure.format.format(value)
        assert f"<!-- figure: {name} -->{shown}<!-- /figure -->" in text, (name, shown)
    assert docs_figures.stored("paris-default").strip() in docs_figures.stored("next-token")
