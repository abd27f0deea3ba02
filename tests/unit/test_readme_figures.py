"""The README's example outputs are what docs/readme_figures.py last ran (issue 28 item 16): every marked block and
inline figure equals its stored output (fast, runs nothing); the slow tier runs the key figures again on the
embedded model in the default mode and finds them in the README."""

from __future__ import annotations

import importlib.util
import json
import shlex
import sys
from typing import Any

import pytest
from helpers.paths import ROOT


@pytest.fixture(scope="module")
def figures() -> Any:
    spec = importlib.util.spec_from_file_location("readme_figures", ROOT / "docs" / "readme_figures.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["readme_figures"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_readme_holds_the_stored_outputs(figures: Any) -> None:
    assert figures.mismatches((ROOT / "README.md").read_text()) == []


def test_a_changed_figure_is_caught(figures: Any) -> None:
    readme = (ROOT / "README.md").read_text()
    value = figures.stored("paris-default").strip()
    edited = readme.replace(f"<!-- figure: paris-default -->{value}<", "<!-- figure: paris-default -->0.1234<", 1)
    block = figures.stored("next-token")
    edited = edited.replace(block, block.replace("Next token", "Next tokens", 1), 1)
    problems = figures.mismatches(edited)
    assert any("figure paris-default is 0.1234" in p for p in problems)
    assert any("block next-token differs" in p for p in problems)


def test_the_examples_read_files_that_are_shipped(figures: Any) -> None:
    for run in figures.RUNS.values():
        if "--file" in run.command:
            name = run.command.split("--file", 1)[1].split()[0]
            assert (figures.EXAMPLES / name).is_file(), name
    paragraph = (figures.EXAMPLES / "paragraph.txt").read_bytes()
    assert len(paragraph) == 318 and paragraph.startswith(b"Paris is the capital")


@pytest.mark.slow
def test_key_figures_rerun_in_the_default_mode_match_the_readme(figures: Any, cli, monkeypatch) -> None:
    """next-token's p(" Paris") in the default (packed) mode and score's perplexity of paragraph.txt, run again."""
    monkeypatch.chdir(figures.EXAMPLES)
    readme = (ROOT / "README.md").read_text()
    for name in ("paris-default", "paragraph-perplexity"):
        figure = figures.FIGURES[name]
        args = shlex.split(figure.command)[1:]
        result = cli(*args)
        assert result.exit_code == 0, result.stderr
        value = json.loads(result.stdout)
        for key in figure.path:
            value = value[key]
        text = figure.format.format(value)
        assert f"<!-- figure: {name} -->{text}<!-- /figure -->" in readme, (name, text)
    assert figures.stored("paris-default").strip() in figures.stored("next-token")
