"""The documentation cannot go stale: the README's marked outputs are what docs/readme_figures.py last ran, a changed
figure is caught, the examples' files are shipped, and docs/cli.md is the current reference page."""

from __future__ import annotations

from typing import Any

from helpers.paths import ROOT


def test_the_readme_holds_the_stored_outputs(readme_figures: Any) -> None:
    assert readme_figures.mismatches((ROOT / "README.md").read_text()) == []


def test_a_changed_figure_is_caught(readme_figures: Any) -> None:
    readme = (ROOT / "README.md").read_text()
    value = readme_figures.stored("paris-default").strip()
    edited = readme.replace(f"<!-- figure: paris-default -->{value}<", "<!-- figure: paris-default -->0.1234<", 1)
    block = readme_figures.stored("next-token")
    edited = edited.replace(block, block.replace("Next token", "Next tokens", 1), 1)
    problems = readme_figures.mismatches(edited)
    assert any("figure paris-default is 0.1234" in p for p in problems)
    assert any("block next-token differs" in p for p in problems)


def test_the_examples_read_files_that_are_shipped(readme_figures: Any) -> None:
    for run in readme_figures.RUNS.values():
        if "--file" in run.command:
            name = run.command.split("--file", 1)[1].split()[0]
            assert (readme_figures.EXAMPLES / name).is_file(), name
    paragraph = (readme_figures.EXAMPLES / "paragraph.txt").read_bytes()
    assert len(paragraph) == 318 and paragraph.startswith(b"Paris is the capital")


def test_reference_page_is_current() -> None:
    from llmscope.cli.reference import reference_page

    page = ROOT / "docs" / "cli.md"
    assert page.read_text() == reference_page(), "docs/cli.md is stale: run `make docs`"
