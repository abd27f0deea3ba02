"""The documentation cannot go stale: the marked outputs of README.md and the documentation pages are what
docs/figures.py last ran, every command's page shows at least one, a changed figure is caught, the examples' files
are shipped, docs/api.md documents every public name and docs/cli.md is the current reference page."""

from __future__ import annotations

import ast
from typing import Any

from helpers.paths import ROOT


def test_every_page_holds_the_stored_outputs(docs_figures: Any) -> None:
    pages = docs_figures.read_pages()
    assert "README.md" in pages and "docs/commands/generate.md" in pages
    assert docs_figures.mismatches(pages) == []


def test_a_changed_figure_or_block_is_caught_on_any_page(docs_figures: Any) -> None:
    pages = docs_figures.read_pages()
    value = docs_figures.stored("paris-default").strip()
    readme = pages["README.md"]
    pages["README.md"] = readme.replace(f"<!-- figure: paris-default -->{value}<",
                                        "<!-- figure: paris-default -->0.1234<", 1)
    block = docs_figures.stored("next-token")
    page = pages["docs/commands/next-token.md"]
    assert block in page
    pages["docs/commands/next-token.md"] = page.replace(block, block.replace("Next token", "Next tokens", 1), 1)
    problems = docs_figures.mismatches(pages)
    assert any(p.startswith("README.md figure paris-default is 0.1234") for p in problems), problems
    assert any(p.startswith("docs/commands/next-token.md block next-token differs") for p in problems), problems


def test_a_run_no_page_shows_and_a_mark_nothing_runs_are_caught(docs_figures: Any) -> None:
    pages = {name: text.replace("<!-- run: check-invariance -->", "<!-- run: no-such-run -->")
             for name, text in docs_figures.read_pages().items()}
    problems = docs_figures.mismatches(pages)
    assert "no page has a <!-- run: check-invariance --> block" in problems
    assert any("marks run no-such-run, which docs/figures.py does not run" in p for p in problems), problems


def test_every_command_has_a_page_with_a_real_output(docs_figures: Any) -> None:
    from llmscope.cli.reference import command_names

    pages = docs_figures.read_pages()
    for name in command_names():
        page = pages.get(f"docs/commands/{name}.md")
        assert page is not None, f"docs/commands/{name}.md is missing"
        runs = [m["name"] for m in docs_figures.RUN_BLOCK.finditer(page)]
        assert runs, f"docs/commands/{name}.md has no <!-- run: NAME --> block"
        assert any(docs_figures.RUNS[run].command.startswith(f"llmscope {name}") for run in runs), (name, runs)


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


def test_the_examples_read_files_that_are_shipped(docs_figures: Any) -> None:
    for run in docs_figures.RUNS.values():
        if "--file" in run.command:
            name = run.command.split("--file", 1)[1].split()[0]
            assert (docs_figures.EXAMPLES / name).is_file(), name
    paragraph = (docs_figures.EXAMPLES / "paragraph.txt").read_bytes()
    assert len(paragraph) == 318 and paragraph.startswith(b"Paris is the capital")


def test_reference_page_is_current() -> None:
    from llmscope.cli.reference import reference_page

    page = ROOT / "docs" / "cli.md"
    assert page.read_text() == reference_page(), "docs/cli.md is stale: run `make figures`"
