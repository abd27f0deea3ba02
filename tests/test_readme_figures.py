"""The example outputs of README.md and the documentation pages are what docs/figures.py last ran: every marked block
and inline figure on every page equals its stored output, and every command's page shows at least one (fast, runs
nothing); the slow tier runs the key figures again on the embedded model in the default mode and finds them."""

from __future__ import annotations

import ast
import importlib.util
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def figures() -> Any:
    spec = importlib.util.spec_from_file_location("docs_figures", ROOT / "docs" / "figures.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["docs_figures"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_page_holds_the_stored_outputs(figures: Any) -> None:
    pages = figures.read_pages()
    assert "README.md" in pages and "docs/commands/generate.md" in pages
    assert figures.mismatches(pages) == []


def test_a_changed_figure_or_block_is_caught_on_any_page(figures: Any) -> None:
    pages = figures.read_pages()
    value = figures.stored("paris-default").strip()
    readme = pages["README.md"]
    pages["README.md"] = readme.replace(f"<!-- figure: paris-default -->{value}<",
                                        "<!-- figure: paris-default -->0.1234<", 1)
    block = figures.stored("next-token")
    page = pages["docs/commands/next-token.md"]
    assert block in page
    pages["docs/commands/next-token.md"] = page.replace(block, block.replace("Next token", "Next tokens", 1), 1)
    problems = figures.mismatches(pages)
    assert any(p.startswith("README.md figure paris-default is 0.1234") for p in problems), problems
    assert any(p.startswith("docs/commands/next-token.md block next-token differs") for p in problems), problems


def test_a_run_no_page_shows_and_a_mark_nothing_runs_are_caught(figures: Any) -> None:
    pages = {name: text.replace("<!-- run: check-invariance -->", "<!-- run: no-such-run -->")
             for name, text in figures.read_pages().items()}
    problems = figures.mismatches(pages)
    assert "no page has a <!-- run: check-invariance --> block" in problems
    assert any("marks run no-such-run, which docs/figures.py does not run" in p for p in problems), problems


def test_every_command_has_a_page_with_a_real_output(figures: Any) -> None:
    from llmscope.cli.reference import command_names

    pages = figures.read_pages()
    for name in command_names():
        page = pages.get(f"docs/commands/{name}.md")
        assert page is not None, f"docs/commands/{name}.md is missing"
        runs = [m["name"] for m in figures.RUN_BLOCK.finditer(page)]
        assert runs, f"docs/commands/{name}.md has no <!-- run: NAME --> block"
        assert any(figures.RUNS[run].command.startswith(f"llmscope {name}") for run in runs), (name, runs)


def test_the_api_page_documents_every_public_name() -> None:
    """docs/api.md renders each name of llmscope.__all__, and llmscope/__init__.py imports each one for type checkers
    (and mkdocstrings) from the module its lazy table loads it from."""
    import llmscope

    page = (ROOT / "docs" / "api.md").read_text()
    public = [name for name in llmscope.__all__ if name != "__version__"]
    for name in public:
        assert f"::: llmscope.{name}\n" in page, name
    tree = ast.parse((ROOT / "llmscope" / "__init__.py").read_text())
    imported = {alias.name: node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                for alias in node.names if node.module and node.module.startswith("llmscope.")}
    assert imported == {name: llmscope._LAZY[name] for name in public}


def test_the_examples_read_files_that_are_shipped(figures: Any) -> None:
    for run in figures.RUNS.values():
        if "--file" in run.command:
            name = run.command.split("--file", 1)[1].split()[0]
            assert (figures.EXAMPLES / name).is_file(), name
    paragraph = (figures.EXAMPLES / "paragraph.txt").read_bytes()
    assert len(paragraph) == 318 and paragraph.startswith(b"Paris is the capital")


@pytest.mark.slow
def test_key_figures_rerun_in_the_default_mode_match_the_pages(figures: Any, cli, monkeypatch) -> None:
    """next-token's p(" Paris") in the default (packed) mode and score's perplexity of paragraph.txt, run again."""
    monkeypatch.chdir(figures.EXAMPLES)
    text = "\n".join(figures.read_pages().values())
    for name in ("paris-default", "paragraph-perplexity"):
        figure = figures.FIGURES[name]
        args = shlex.split(figure.command)[1:]
        result = cli(*args)
        assert result.exit_code == 0, result.stderr
        value = json.loads(result.stdout)
        for key in figure.path:
            value = value[key]
        shown = figure.format.format(value)
        assert f"<!-- figure: {name} -->{shown}<!-- /figure -->" in text, (name, shown)
    assert figures.stored("paris-default").strip() in figures.stored("next-token")
