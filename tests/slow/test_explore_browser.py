"""The explore page on the embedded SmolLM2 in a real headless chromium: " Paris" on top of the bars, as next-token
says, and a head's attention steps (GQA, RoPE) and the parameter count. Skipped, with the reason, when Playwright or
a chromium is missing (README: "Browser tests")."""

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
        opened.page.click(".head-thumb[data-layer='3'][data-head='4']")
        opened.page.wait_for_selector("#head-steps[data-layer='3'][data-head='4'][data-ready='1']")
        assert float(opened.page.get_attribute("#head-steps", "data-weight-gap")) < 1e-5  # the steps redo the model
        group = opened.page.eval_on_selector_all("#head-steps .gqa-group.current .gqa-head",
                                                 "hs => hs.map(h => Number(h.dataset.head))")
        assert group == [3, 4, 5]  # 9 query heads on 3 KV heads
        assert "RoPE" in opened.page.inner_text("#head-steps")
        assert "134,515,008" in opened.page.inner_text("#architecture")
        assert opened.errors == []
    finally:
        opened.close()
        stop_explore(explore)
