"""The explore page on the embedded SmolLM2 in a real headless chromium: " Paris" on top of the bars, as next-token
says. Skipped, with the reason, when Playwright or a chromium is missing (README: "Browser tests")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers.browser import Page, rows, run_prompt
from helpers.explore import start_explore, stop_explore

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytestmark = pytest.mark.browser


@pytest.mark.slow
def test_the_embedded_model_page_says_paris(browser: Any, llmscope_cache: Path) -> None:
    """The chapter's example on the real model: " Paris" at p = 0.7725 on top of the bars, as next-token says."""
    explore = start_explore("smollm2", "--quantize", "none")
    opened = Page(browser)
    try:
        opened.page.goto(explore.url + "/explore")
        run_prompt(opened.page, "The capital of France is")
        shown = rows(opened.page, "#bars tr.candidate")
        top = explore.result("/llmscope/v1/next-token", {"prompt": "The capital of France is", "top_k": 10})
        assert [float(r["probability"]) for r in shown] == [t["probability"] for t in top["steps"][0]["top"]]
        assert top["steps"][0]["top"][0]["text"] == " Paris"
        assert round(float(shown[0]["probability"]), 4) == 0.7725
        assert [t["token_id"] for t in top["prompt_tokens"]] == [504, 3575, 282, 4649, 314]
        assert opened.page.locator(".head-thumb").count() == 30 * 9
        assert opened.errors == []
    finally:
        opened.close()
        stop_explore(explore)
