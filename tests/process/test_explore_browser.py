"""The explore page and the --html files in a real headless chromium (Playwright), against `llmscope explore`: the
page's numbers equal the routes' and the library's, every --html file opens from disk with the network blocked."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.browser import Page, rows, run_prompt
from helpers.cli import invoke
from helpers.explore import Explore, start_explore, stop_explore

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip(
    "playwright.sync_api", reason="Playwright is not installed: pip install 'llmscope[browser]' (see README)")
pytestmark = pytest.mark.browser


PROMPT = "hello world the cat"


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path) -> Iterator[Explore]:
    explore = start_explore(str(tiny_model_dir))
    yield explore
    stop_explore(explore)


@pytest.fixture
def page(browser: Any) -> Iterator[Page]:
    opened = Page(browser)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def html_files(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One --html file per command (and a --batch folder), written by the CLI on the tiny model."""
    folder = tmp_path_factory.mktemp("html")
    model = str(tiny_model_dir)
    runs = {
        "next-token": ["next-token", PROMPT, "--temperature", "0.7", "--lens", "--steps", "2"],
        "attention": ["attention", PROMPT],
        "attribute": ["attribute", PROMPT],
        "score": ["score", PROMPT],
        "compare": ["compare", PROMPT, "--against-dtype", "bfloat16"],
        "generate": ["generate", "hello", "-n", "4", "--no-chat", "--show-probs"],
    }
    files = {}
    for name, args in runs.items():
        path = folder / f"{name}.html"
        done = invoke(*args, "-m", model, "--threads", "1", "-q", "--html", path)
        assert done.exit_code == 0, done.stderr
        files[name] = path
    batch = folder / "prompts.txt"
    batch.write_text("hello\nthe cat\n")
    done = invoke("next-token", "--batch", batch, "-m", model, "--threads", "1", "-q", "--html", folder / "batch")
    assert done.exit_code == 0, done.stderr
    files["batch-0"] = folder / "batch" / "0000.html"
    files["batch-1"] = folder / "batch" / "0001.html"
    return files


def test_bars_equal_the_next_token_route(server: Explore, page: Page, cli: Any) -> None:
    page.page.goto(server.url + "/explore")
    run_prompt(page.page, PROMPT)
    expected = server.result("/llmscope/v1/next-token", {"prompt": PROMPT, "top_k": 10})["steps"][0]["top"]
    shown = rows(page.page, "#bars tr.candidate")
    assert [int(r["tokenId"]) for r in shown] == [t["token_id"] for t in expected]
    assert [float(r["probability"]) for r in shown] == [t["probability"] for t in expected]  # exactly
    assert [float(r["logit"]) for r in shown] == [t["logit"] for t in expected]
    assert page.page.inner_text("#bars tr.candidate >> nth=0").split("\t")[3] == f"{expected[0]['probability']:.4f}"
    command = cli("next-token", PROMPT, "-m", server.model, "--json", "--threads", "1", "-q")
    assert command.exit_code == 0, command.stderr
    assert command.json()["steps"][0]["top"] == expected  # the CLI's --json, exactly
    tokens = server.result("/llmscope/v1/tokenize", {"text": PROMPT})
    chips = page.page.eval_on_selector_all("#tokens .chip", "chips => chips.map(c => Number(c.dataset.tokenId))")
    assert chips == [t["token_id"] for t in tokens["tokens"]]
    assert page.errors == []


def test_temperature_and_top_p_renormalise_as_the_library_samples(server: Explore, page: Page,
                                                                  tiny_model_dir: Path) -> None:
    import torch

    from llmscope.generation.decoding import sampler_distribution
    from llmscope.loading.loader import load_model

    page.page.goto(server.url + "/explore")
    run_prompt(page.page, PROMPT)
    page.page.fill("#temperature", "1.5")
    page.page.wait_for_selector("#decoding[data-temperature='1.5'][data-ready='1']")
    shown = rows(page.page, "#decoding tr.candidate")
    cli_view = server.result("/llmscope/v1/next-token", {"prompt": PROMPT, "top_k": 10, "temperature": 1.5})
    expected = cli_view["steps"][0]["top"]
    assert [int(r["tokenId"]) for r in shown] == [t["token_id"] for t in expected]
    assert [float(r["samplerProbability"]) for r in shown] == [t["sampler_probability"] for t in expected]
    assert [float(r["probability"]) for r in shown] == [t["probability"] for t in expected]

    loaded = load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    ids = torch.tensor([cli_view["prompt_tokens"][i]["token_id"] for i in range(len(cli_view["prompt_tokens"]))])
    with torch.inference_mode():
        logits = loaded.model(input_ids=ids[None]).logits[0, -1].float()
    library = sampler_distribution(logits, 1.5)
    for row in shown:
        assert float(row["samplerProbability"]) == pytest.approx(float(library[int(row["tokenId"])]), abs=1e-6)

    page.page.fill("#top-k", "3")
    page.page.wait_for_selector("#decoding[data-top-k='3'][data-ready='1']")
    narrowed = rows(page.page, "#decoding tr.candidate")
    library = sampler_distribution(logits, 1.5, 3)
    kept = [r for r in narrowed if float(r["samplerProbability"]) > 0]
    assert [int(r["tokenId"]) for r in kept] == [int(r["tokenId"]) for r in narrowed[:3]]  # top-k keeps the best 3
    assert page.page.locator("#decoding tr.candidate.cut").count() == len(narrowed) - 3
    for row in narrowed:
        assert float(row["samplerProbability"]) == pytest.approx(float(library[int(row["tokenId"])]), abs=1e-6)
    assert sum(float(r["samplerProbability"]) for r in kept) == pytest.approx(1.0, abs=1e-6)  # renormalised

    page.page.fill("#top-p", "0.05")
    page.page.wait_for_selector("#decoding[data-top-p='0.05'][data-ready='1']")
    narrowed = rows(page.page, "#decoding tr.candidate")
    kept = [r for r in narrowed if float(r["samplerProbability"]) > 0]
    assert len(kept) == 1 and float(kept[0]["samplerProbability"]) == 1.0  # the nucleus holds one token
    assert int(kept[0]["tokenId"]) == int(torch.argmax(sampler_distribution(logits, 1.5, 3, 0.05)))
    assert sum(float(r["samplerProbability"]) for r in kept) <= 1.0 + 1e-6
    assert page.errors == []


def test_greedy_step_appends_the_top_token(server: Explore, page: Page) -> None:
    page.page.goto(server.url + "/explore")
    run_prompt(page.page, PROMPT)
    top = server.result("/llmscope/v1/next-token", {"prompt": PROMPT, "top_k": 1})["steps"][0]["top"][0]
    run = page.page.get_attribute("body", "data-run")
    page.page.click("#greedy")
    page.page.wait_for_function("run => document.body.dataset.ready && document.body.dataset.ready !== run", arg=run)
    assert page.page.input_value("#prompt") == PROMPT + top["text"]
    assert page.errors == []


def test_a_clicked_head_shows_its_attention_matrix(server: Explore, page: Page, tiny_model_dir: Path) -> None:
    from llmscope.attention.weights import AttentionSettings, attention_weights
    from llmscope.loading.loader import load_model

    page.page.goto(server.url + "/explore")
    run_prompt(page.page, PROMPT)
    thumbs = page.page.locator(".head-thumb")
    assert thumbs.count() == 2 * 4  # the tiny llama: 2 layers x 4 heads
    page.page.click(".head-thumb[data-layer='1'][data-head='3']")
    page.page.wait_for_selector("#matrix[data-layer='1'][data-head='3']")
    cells = page.page.eval_on_selector_all("#matrix td.cell[data-w]", "cells => cells.map(c => "
                                           "[Number(c.dataset.q), Number(c.dataset.k), Number(c.dataset.w)])")
    loaded = load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    result = attention_weights(loaded, PROMPT, AttentionSettings(all_queries=True))
    matrix = result.weights[1][3]
    n = len(result.tokens)
    assert len(cells) == n * (n + 1) // 2  # every key at or before its query
    for q, k, w in cells:
        assert w == pytest.approx(matrix[q][k], abs=1e-6)
    for q in range(n):
        assert sum(w for qq, _, w in cells if qq == q) == pytest.approx(1.0, abs=1e-5)
    page.page.hover("#matrix th.query[data-q='3']")
    assert page.page.get_attribute(".readout", "data-q") == "3"
    assert page.errors == []


def test_the_page_fits_a_phone_and_draws_every_panel(server: Explore, browser: Any) -> None:
    narrow = Page(browser, width=390)
    try:
        narrow.page.goto(server.url + "/explore")
        narrow.page.wait_for_selector("body[data-ready]")
        narrow.page.wait_for_selector("#architecture[data-ready='1']")
        narrow.page.wait_for_selector("#cache[data-ready='1']")
        narrow.page.wait_for_selector("#lens[data-ready='1']")
        width = narrow.page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390 + 1  # no sideways scrolling of the page itself
        narrow.page.click("#attribute")
        narrow.page.wait_for_selector("#attribution[data-ready='1']")
        assert narrow.page.locator("#attribution .attr-row").count() == 4  # the four methods side by side
        assert "4 heads" in narrow.page.inner_text("#architecture") or "4" in narrow.page.inner_text("#architecture")
        assert narrow.errors == []
    finally:
        narrow.close()


@pytest.mark.parametrize("name", ["next-token", "attention", "attribute", "score", "compare", "generate", "batch-0",
                                  "batch-1"])
def test_each_html_file_opens_from_disk_with_the_network_blocked(name: str, html_files: dict[str, Path],
                                                                 page: Page) -> None:
    path = html_files[name]
    page.block_network()
    page.page.goto(path.resolve().as_uri())
    page.page.wait_for_selector("#view")
    data = json.loads(page.page.inner_text("#llmscope-data") or page.page.eval_on_selector(
        "#llmscope-data", "e => e.textContent"))
    assert page.page.inner_text("header h1") == f"llmscope {data['command']}"
    if data["command"] == "next-token":
        shown = rows(page.page, "#view tr.candidate")
        top = data["steps"][0]["top"]
        assert [float(r["probability"]) for r in shown] == [t["probability"] for t in top]
        if data["temperature"] is not None:
            assert [float(r["samplerProbability"]) for r in shown] == [t["sampler_probability"] for t in top]
        if len(data["steps"]) > 1:
            page.page.click("#view button[data-step='1']")
            page.page.wait_for_selector("#view table.candidates[data-step='1']")
            shown = rows(page.page, "#view tr.candidate")
            assert [float(r["probability"]) for r in shown] == [t["probability"] for t in data["steps"][1]["top"]]
    if data["command"] == "attention":
        page.page.click(".head-thumb[data-layer='0'][data-head='1']")
        page.page.wait_for_selector("#matrix[data-layer='0'][data-head='1']")
    if data["command"] == "attribute":
        assert page.page.locator(".attr-row").count() == len(data["methods"])
    assert page.requests == []  # nothing tried to reach the network
    assert page.errors == []
