"""The README's key figures run again on the embedded SmolLM2 in the default mode."""

from __future__ import annotations

import json
import shlex
from typing import Any

import pytest
from helpers.paths import ROOT


@pytest.mark.slow
def test_key_figures_rerun_in_the_default_mode_match_the_readme(readme_figures: Any, cli, monkeypatch) -> None:
    """next-token's p(" Paris") in the default (packed) mode and score's perplexity of paragraph.txt, run again."""
    monkeypatch.chdir(readme_figures.EXAMPLES)
    readme = (ROOT / "README.md").read_text()
    for name in ("paris-default", "paragraph-perplexity"):
        figure = readme_figures.FIGURES[name]
        args = shlex.split(figure.command)[1:]
        result = cli(*args)
        assert result.exit_code == 0, result.stderr
        value = json.loads(result.stdout)
        for key in figure.path:
            value = value[key]
        text = figure.format.format(value)
        assert f"<!-- figure: {name} -->{text}<!-- /figure -->" in readme, (name, text)
    assert readme_figures.stored("paris-default").strip() in readme_figures.stored("next-token")
