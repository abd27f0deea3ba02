"""The explore page and the --html files in a real headless chromium (Playwright), against `llmscope explore` on tiny
random models: the page's numbers equal the JSON routes and the library's own math (bars, sampler, a head's matrix,
its attention step by step redone from q, k and v, block norms, the architecture); the page says every failure where
the reader looks; it aborts the requests it no longer wants and keeps one run per prompt; it works from the keyboard,
by touch and at 390 px; figures are readable (precision, scales, legends, contrast, ⟨hex⟩ bytes, plurals); the strip
and the glossary lead to the panels; every --html file opens from disk with the network blocked. Tests wait for DOM
states and browser events, never for time. Skipped, with the reason, when Playwright or a chromium is missing
(README: "Browser tests")."""

from __future__ import annotations

import base64
import json
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.browser import Page, rows, run_prompt, wait_done
from helpers.cli import invoke
from helpers.explore import Explore, start_explore, stop_explore

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip(
    "playwright.sync_api", reason="Playwright is not installed: pip install 'llmscope[browser]' (see README)")
pytestmark = pytest.mark.browser


PROMPT = "hello world the cat"
ROUTES_PER_RUN = ["attention", "cache", "decode", "lens", "next-token"]  # the explore routes one prompt's run asks


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path) -> Iterator[Explore]:
    explore = start_explore(str(tiny_model_dir))
    yield explore
    stop_explore(explore)


@pytest.fixture(scope="module")
def mistral_server(tiny_models: dict[str, Path]) -> Iterator[Explore]:
    """A tiny mistral: grouped-query attention with a sliding window of 32 on every layer."""
    explore = start_explore(str(tiny_models["mistral"]))
    yield explore
    stop_explore(explore)


@pytest.fixture
def page(browser: Any) -> Iterator[Page]:
    opened = Page(browser)
    yield opened
    opened.close()


def unpack(block: dict[str, Any]) -> Any:
    import numpy

    return numpy.frombuffer(base64.b64decode(block["float32_base64"]), dtype="<f4").reshape(block["shape"])


def luminance(colour: str) -> float:
    channels = [int(v) / 255 for v in re.findall(r"[\d.]+", colour)[:3]]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(foreground: str, background: str) -> float:
    """WCAG's contrast ratio of two computed CSS colours ("rgb(r, g, b)")."""
    high, low = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def tab_to(page: Any, selector: str, limit: int = 600) -> None:
    """Press Tab until the focused element matches `selector` (keyboard only)."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("s => document.activeElement && document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"Tab never reached {selector}")


# ---------------------------------------------------------------------------------------- the numbers


def test_bars_equal_the_next_token_route(server: Explore, page: Page, cli: Any) -> None:
    page.page.goto(server.url + "/explore")
    run_prompt(page.page, PROMPT)
    expected = server.result("/llmscope/v1/next-token", {"prompt": PROMPT, "top_k": 10})["steps"][0]["top"]
    shown = rows(page.page, "#bars tr.candidate")
    assert [int(r["tokenId"]) for r in shown] == [t["token_id"] for t in expected]
    assert [float(r["probability"]) for r in shown] == [t["probability"] for t in expected]  # exactly
    assert [float(r["logit"]) for r in shown] == [t["logit"] for t in expected]
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
    assert "1 token of the vocabulary keeps a chance" in page.page.inner_text("#decoding")  # singular
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
    lines = page.page.eval_on_selector_all("svg.lines line.line", "ls => ls.map(l => [Number(l.dataset.q), "
                                           "Number(l.dataset.k), Number(l.dataset.w)])")
    assert {q for q, _, _ in lines} == {3}  # the lines view keeps the chosen query's lines
    assert all(w == pytest.approx(matrix[3][k], abs=1e-6) for _, k, w in lines)
    assert page.page.locator("#attention .legend").count() == 1  # the colour scale is stated
    assert page.errors == []


@pytest.mark.parametrize("which", ["llama", "mistral"])
def test_attention_step_by_step_equals_a_hand_computation(which: str, server: Explore, mistral_server: Explore,
                                                          page: Page) -> None:
    """The page's q·k, scaled scores, masks, softmax weights and head output for a chosen query equal the same
    arithmetic done here in float64 from the route's q, k and v; on the tiny mistral the sliding window of 32 hides
    the oldest keys of a long prompt."""
    import numpy

    explore = server if which == "llama" else mistral_server
    text = PROMPT if which == "llama" else "the cat sat on the mat and the dog sat on the log by the door"
    page.page.goto(explore.url + "/explore?" + urllib.parse.urlencode({"prompt": text, "layer": 1, "head": 3}))
    page.page.wait_for_selector("body[data-done]")
    page.page.wait_for_selector("#head-steps[data-head='3'][data-layer='1']")
    n = page.page.locator("#matrix th.query").count()
    query = n - 1 if which == "mistral" else 5
    page.page.select_option("#steps-query", str(query))
    page.page.wait_for_selector(f"#head-steps[data-query='{query}']")
    shown = rows(page.page, "#head-steps tr.step-row")
    out = page.page.eval_on_selector_all("#head-steps .out-value", "vs => vs.map(v => Number(v.dataset.value))")

    answer = explore.answer("/llmscope/v1/explore/attention", {"prompt": text, "layer": 1, "head": 3,
                                                                  "weights": False})["head_steps"]
    q, k, v = (unpack(answer[name]).astype("float64") for name in ("q", "k", "v"))
    assert q.shape[0] == n
    dots = k @ q[query]
    scaled = dots * answer["scale"]
    window = answer["window"]
    masks = ["future" if key > query else "window" if window and query - key >= window else "" for key in range(n)]
    visible = numpy.array([m == "" for m in masks])
    weights = numpy.where(visible, numpy.exp(scaled - scaled[visible].max()), 0.0)
    weights /= weights.sum()
    assert [int(r["k"]) for r in shown] == list(range(n))
    assert [r["mask"] for r in shown] == masks
    assert [float(r["dot"]) for r in shown] == pytest.approx(list(dots), rel=1e-9, abs=1e-12)
    assert [float(r["scaled"]) for r in shown] == pytest.approx(list(scaled), rel=1e-9, abs=1e-12)
    assert [float(r["weight"]) for r in shown] == pytest.approx(list(weights), rel=1e-9, abs=1e-12)
    assert out == pytest.approx(list(weights @ v), rel=1e-9, abs=1e-12)
    model_weights = unpack(answer["weights"])[query]
    assert [float(r["modelWeight"]) for r in shown] == [float(w) for w in model_weights]  # float32, exactly
    assert numpy.abs(weights - model_weights).max() < 1e-6
    if which == "mistral":
        assert window == 32 and masks.count("window") == n - 32 > 0
        assert "outside the sliding window" in page.page.inner_text("#head-steps").replace("\n", " ")
    group = page.page.eval_on_selector_all("#head-steps .gqa-group", "gs => gs.map(g => Array.from("
                                           "g.querySelectorAll('.gqa-head'), h => Number(h.dataset.head)))")
    assert group == [[0, 1], [2, 3]]  # 4 query heads on 2 KV heads
    assert page.errors == []


def test_block_norms_and_the_architecture_are_the_routes(server: Explore, page: Page) -> None:
    page.page.goto(server.url + "/explore")
    run_prompt(page.page, PROMPT)
    blocks = server.answer("/llmscope/v1/explore/lens", {"prompt": PROMPT})["blocks"]
    shown = rows(page.page, "#blocks tr.norm-row")
    assert [float(r["in"]) for r in shown] == [b["residual_in"] for b in blocks["last"]]
    assert [float(r["mlp"]) for r in shown] == [b["mlp"] for b in blocks["last"]]
    page.page.click("#blocks button[data-which='mean']")
    page.page.wait_for_selector("#blocks button[data-which='mean'][aria-pressed='true']")
    assert [float(r["out"]) for r in rows(page.page, "#blocks tr.norm-row")] == [b["residual_out"]
                                                                                for b in blocks["mean"]]

    report = server.result("/llmscope/v1/explore/architecture", {})
    text = page.page.inner_text("#architecture")
    assert f"Parameters: {report['parameters']['total']:,}" in text
    parts = page.page.eval_on_selector_all("#architecture tr.param-row", "rs => rs.map(r => r.dataset.part)")
    assert parts == [p for p in ("embeddings", "attention", "mlp", "experts", "router", "norms", "lm_head", "other")
                     if report["parameters"][p]]
    assert "512 B (64 values × 4 B, float32)" in text  # 2 layers x K,V x 2 KV heads x 16 x 4 bytes
    assert "50% smaller than full multi-head attention" in text  # the GQA saving: 2 KV heads for 4 query heads
    assert "1e-6" in text and "0.00000" not in text  # norm eps as written in the config
    assert page.page.locator("#architecture tr.plan-row").count() == len(report["plan"]["rows"])
    assert page.page.inner_text("#model-name") == "· " + server.model  # the model is named
    assert server.model in page.page.title()
    assert page.errors == []


# ---------------------------------------------------------------------------------------- saying what happened


def test_a_refusal_is_said_in_the_status_line_and_the_panels(server: Explore, page: Page) -> None:
    page.page.goto(server.url + "/explore")
    run_prompt(page.page, "hello " * 400)  # past the tiny model's 256 positions
    status = page.page.locator("#status")
    assert status.get_attribute("data-kind") == "error"
    said = status.inner_text()
    assert "the server refused it" in said and "context" in said and "computed in" not in said
    assert "Change the prompt" in said
    error = page.page.inner_text("#next-panel .panel-error")
    assert error.startswith("Next token failed: the server refused it") and "Change the prompt" in error
    assert page.page.locator("#attention-panel .panel-error").count() >= 1
    assert page.page.get_attribute("#bars", "data-error") == "refused"
    assert page.script_errors() == []


def test_a_stopped_server_is_said_with_what_to_do(tiny_model_dir: Path, browser: Any) -> None:
    explore = start_explore(str(tiny_model_dir))
    opened = Page(browser)
    try:
        opened.page.goto(explore.url + "/explore")
        opened.page.wait_for_selector("body[data-done]")
        stop_explore(explore)
        before = opened.page.get_attribute("body", "data-run")
        opened.page.click("#run")
        wait_done(opened.page, before)
        said = opened.page.inner_text("#status")
        assert said.startswith("Nothing was computed: the server does not answer")
        assert "Start `llmscope explore` again" in said
        assert "does not answer" in opened.page.inner_text("#next-panel .panel-error")
        assert opened.page.locator(".panel-error button").count() > 0  # a way to try again
        assert opened.script_errors() == []
    finally:
        opened.close()
        if explore.process.poll() is None:
            stop_explore(explore)


def test_an_empty_prompt_is_said_and_sends_nothing(server: Explore, page: Page) -> None:
    page.page.goto(server.url + "/explore")
    page.page.wait_for_selector("body[data-done]")
    sent: list[str] = []
    page.page.on("request", lambda request: sent.append(request.url) if request.method == "POST" else None)
    page.page.fill("#prompt", "  \n ")  # white space alone is no prompt either (the routes refuse it)
    page.page.press("#prompt", "Enter")
    page.page.wait_for_selector("body[data-empty='1']")
    assert page.page.get_attribute("#status", "data-kind") == "empty"
    assert "The prompt is empty" in page.page.inner_text("#status")
    for target in ("tokens", "bars", "decoding", "lens", "blocks", "attention", "cache"):
        assert "No prompt" in page.page.inner_text(f"#{target}")
    page.page.click("#greedy")
    page.page.wait_for_function("() => document.getElementById('status').textContent.includes('a step appends')")
    assert sent == []
    assert page.errors == []


def test_a_new_prompt_marks_the_old_results_until_its_own_arrive(server: Explore, page: Page) -> None:
    page.page.goto(server.url + "/explore")
    run_prompt(page.page, PROMPT)
    held: list[Any] = []

    def hold_bars(route: Any) -> None:
        if "the dog" in (route.request.post_data or ""):
            held.append(route)
        else:
            route.continue_()

    page.page.route("**/llmscope/v1/explore/next-token", hold_bars)
    page.page.fill("#prompt", "the dog")
    page.page.press("#prompt", "Enter")
    page.page.wait_for_selector("#attention[data-ready='1']")  # the new attention is drawn, the bars held
    classes = page.page.get_attribute("#next-panel", "class")
    assert "stale" in classes and "busy" in classes
    assert float(page.page.eval_on_selector("#bars", "e => getComputedStyle(e).opacity")) < 0.5
    assert "stale" not in page.page.get_attribute("#attention-panel", "class")
    assert page.page.inner_text("#status") == "computing…"  # nothing claimed before the first panels arrive
    assert len(held) == 1
    held[0].continue_()
    page.page.wait_for_selector("#bars[data-ready='1']")
    assert "stale" not in page.page.get_attribute("#next-panel", "class")
    assert page.errors == []


# ---------------------------------------------------------------------------------------- requests


def explore_requests(page: Any) -> list[dict[str, Any]]:
    """Every POST to the explore routes, with how it ended (filled in as the browser reports it)."""
    seen: list[dict[str, Any]] = []

    def started(request: Any) -> None:
        if request.method == "POST" and "/explore/" in request.url:
            seen.append({"request": request, "route": request.url.rsplit("/", 1)[1],
                         "prompt": json.loads(request.post_data)["prompt"], "end": None})

    def ended(request: Any, how: str) -> None:
        for entry in seen:
            if entry["request"] is request:
                entry["end"] = how

    page.on("request", started)
    page.on("requestfinished", lambda request: ended(request, "finished"))
    page.on("requestfailed", lambda request: ended(request, request.failure))
    return seen


def test_a_new_prompt_aborts_the_old_run(server: Explore, page: Page) -> None:
    """The first prompt's requests are held unanswered; pressing Enter on a second aborts all of them (the server
    can drop their jobs), and the second prompt's run is the only one left and draws."""
    page.page.goto(server.url + "/explore")
    page.page.wait_for_selector("body[data-done]")
    seen = explore_requests(page.page)
    held: list[Any] = []
    page.page.route("**/llmscope/v1/explore/*", lambda route: held.append(route) if "first one" in (
        route.request.post_data or "") else route.continue_())
    page.page.fill("#prompt", "first one")
    page.page.press("#prompt", "Enter")
    page.page.wait_for_selector("#tokens[data-ready='1']")
    while sum(e["prompt"] == "first one" for e in seen) < 5:  # next-token, attention, decode, lens, cache
        page.page.wait_for_event("request")
    before = page.page.get_attribute("body", "data-run")
    page.page.fill("#prompt", "second one")
    page.page.press("#prompt", "Enter")
    wait_done(page.page, before)
    while any(e["end"] is None for e in seen if e["prompt"] == "first one"):
        page.page.wait_for_event("requestfailed")
    first = [e for e in seen if e["prompt"] == "first one"]
    assert sorted(e["route"] for e in first) == ROUTES_PER_RUN
    assert all(e["end"] == "net::ERR_ABORTED" for e in first)
    second = [e for e in seen if e["prompt"] == "second one"]
    assert sorted(e["route"] for e in second) == ROUTES_PER_RUN  # one run, each route once
    assert all(e["end"] == "finished" for e in second)
    assert page.page.eval_on_selector_all("#tokens .piece", "ps => ps.map(p => p.textContent).join('')") == \
        "second␣one"
    assert page.page.get_attribute("body", "data-done") == page.page.get_attribute("body", "data-run")
    assert page.script_errors() == []


def test_typing_leaves_at_most_one_run_per_prompt(server: Explore, page: Page) -> None:
    """Whatever the typing speed: every prompt is asked for at most once per route, and each request for a prompt
    that was typed over is aborted or had already finished; the final prompt's run finishes."""
    page.page.goto(server.url + "/explore")
    page.page.wait_for_selector("body[data-done]")
    seen = explore_requests(page.page)
    page.page.fill("#prompt", "")
    page.page.wait_for_selector("body[data-empty='1']")
    page.page.type("#prompt", "Hello there")
    page.page.wait_for_function("() => !document.body.dataset.empty && document.body.dataset.done === "
                                "document.body.dataset.run && document.getElementById('prompt').value === "
                                "'Hello there'")
    while any(e["end"] is None for e in seen):
        page.page.wait_for_event("requestfinished")
    per_prompt: dict[tuple[str, str], int] = {}
    for entry in seen:
        per_prompt[(entry["prompt"], entry["route"])] = per_prompt.get((entry["prompt"], entry["route"]), 0) + 1
        assert entry["end"] in ("finished", "net::ERR_ABORTED")
    assert max(per_prompt.values()) == 1
    assert sorted(route for (prompt, route) in per_prompt if prompt == "Hello there") == ROUTES_PER_RUN
    assert all(e["end"] == "finished" for e in seen if e["prompt"] == "Hello there")
    assert page.script_errors() == []


def test_attribution_takes_steps_and_methods_and_shows_completeness(server: Explore, page: Page) -> None:
    page.page.goto(server.url + "/explore")
    run_prompt(page.page, PROMPT)
    seen = explore_requests(page.page)
    for method in ("input-x-gradient", "attention-rollout"):
        page.page.uncheck(f"input[name='method'][value='{method}']")
    page.page.select_option("#attribution-steps", "8")
    page.page.click("#attribute")
    page.page.wait_for_selector("#attribution[data-ready='1']")
    body = json.loads(seen[-1]["request"].post_data)
    assert (body["steps"], body["methods"]) == (8, ["occlusion", "integrated-gradients"])
    methods = page.page.eval_on_selector_all("#attribution .attr-row", "rs => rs.map(r => r.dataset.method)")
    assert methods == ["occlusion", "integrated-gradients"]
    result = server.result("/llmscope/v1/explore/attribute", body)
    check = result["methods"][1]["completeness"][0]
    line = page.page.locator("#attribution .completeness")
    assert float(line.get_attribute("data-relative-error")) == check["relative_error"]
    said = line.inner_text()
    assert f"with {check['steps']} steps" in said
    assert ("did NOT converge" in said) == (not check["converged"]) and "converged" in said
    assert page.page.locator("#attribution .legend").count() == 1  # the colour scale is stated
    page.page.uncheck("input[name='method'][value='occlusion']")
    page.page.uncheck("input[name='method'][value='integrated-gradients']")
    assert page.page.is_disabled("#attribute")  # no method, no request
    assert page.errors == []


def test_cancel_a_new_prompt_or_a_moved_slider_abort_what_is_no_longer_wanted(server: Explore, page: Page) -> None:
    """An attribution held unanswered is aborted by its cancel button, and by a new prompt; a decode request is
    aborted by the next slider move."""
    page.page.goto(server.url + "/explore")
    run_prompt(page.page, PROMPT)
    seen = explore_requests(page.page)
    held: list[Any] = []
    page.page.route("**/llmscope/v1/explore/attribute", lambda route: held.append(route))
    page.page.click("#attribute")
    while not seen:
        page.page.wait_for_event("request")
    assert page.page.is_visible("#attribute-cancel")
    page.page.click("#attribute-cancel")
    while seen[-1]["end"] is None:
        page.page.wait_for_event("requestfailed")
    assert seen[-1]["end"] == "net::ERR_ABORTED" and "cancelled" in page.page.inner_text("#attribution")
    assert not page.page.is_visible("#attribute-cancel")

    page.page.click("#attribute")
    while len(seen) < 2:
        page.page.wait_for_event("request")
    attribution = seen[-1]
    run_prompt(page.page, "the cat")
    while attribution["end"] is None:
        page.page.wait_for_event("requestfailed")
    assert attribution["end"] == "net::ERR_ABORTED"
    assert "the prompt changed" in page.page.inner_text("#attribution")

    decodes: list[Any] = []
    page.page.route("**/llmscope/v1/explore/decode", lambda route: decodes.append(route) if json.loads(
        route.request.post_data)["temperature"] == 0.5 else route.continue_())
    page.page.fill("#temperature", "0.5")
    while seen[-1]["route"] != "decode":
        page.page.wait_for_event("request")
    first = seen[-1]
    page.page.fill("#temperature", "0.8")
    page.page.wait_for_selector("#decoding[data-temperature='0.8'][data-ready='1']")
    while first["end"] is None:
        page.page.wait_for_event("requestfailed")
    assert first["end"] == "net::ERR_ABORTED"
    assert page.script_errors() == []


# ---------------------------------------------------------------------------------------- keyboard, touch, phone


def test_keyboard_alone_reaches_a_head_its_rows_and_the_glossary(server: Explore, page: Page) -> None:
    page.page.goto(server.url + "/explore")
    page.page.wait_for_selector("body[data-done]")
    page.page.focus("#prompt")
    page.page.keyboard.press("Control+A")
    page.page.keyboard.type("the cat sat")
    before = page.page.get_attribute("body", "data-run")
    page.page.keyboard.press("Enter")
    wait_done(page.page, before)
    tab_to(page.page, ".head-thumb[data-layer='0'][data-head='1']")
    page.page.keyboard.press("Enter")
    page.page.wait_for_selector("#matrix[data-layer='0'][data-head='1']")
    page.page.wait_for_selector("#head-steps[data-head='1'][data-ready='1']")
    tab_to(page.page, "th.query[data-q='2']")
    page.page.keyboard.press("Enter")
    page.page.wait_for_selector("#head-steps[data-query='2']")
    assert page.page.get_attribute(".readout", "data-q") == "2"
    page.page.keyboard.press("Shift+Tab")
    page.page.keyboard.press("Space")
    page.page.wait_for_selector("#head-steps[data-query='1']")
    assert page.page.get_attribute("th.query[data-q='1']", "aria-pressed") == "true"
    tab_to(page.page, "#head-steps .term")
    term = page.page.evaluate("document.activeElement.dataset.term")
    tip = page.page.locator("#term-tip")
    assert tip.is_visible() and term in tip.inner_text()
    page.page.keyboard.press("Escape")
    assert not tip.is_visible()
    assert page.errors == []


def test_the_chosen_head_stays_across_runs_and_steps(server: Explore, page: Page) -> None:
    page.page.goto(server.url + "/explore")
    run_prompt(page.page, PROMPT)
    page.page.click(".head-thumb[data-layer='1'][data-head='3']")
    page.page.wait_for_selector("#head-steps[data-head='3'][data-ready='1']")
    run_prompt(page.page, "the cat sat on the mat")
    assert page.page.get_attribute(".head-thumb.selected", "data-head") == "3"
    assert page.page.get_attribute("#matrix", "data-layer") == "1"
    assert page.page.get_attribute("#head-steps", "data-head") == "3"
    before = page.page.get_attribute("body", "data-run")
    page.page.click("#greedy")
    wait_done(page.page, before)
    assert page.page.get_attribute("#matrix", "data-head") == "3"
    assert page.page.get_attribute("#head-steps", "data-head") == "3"
    assert "layer=1&head=3" in page.page.url
    assert page.errors == []


def test_the_address_carries_the_prompt_and_the_head(server: Explore, page: Page) -> None:
    page.page.goto(server.url + "/explore?" + urllib.parse.urlencode({"prompt": "the cat", "layer": 1, "head": 2,
                                                                     "query": 1}))
    page.page.wait_for_selector("body[data-done]")
    assert page.page.input_value("#prompt") == "the cat"
    assert page.page.get_attribute("#matrix", "data-head") == "2"
    assert page.page.get_attribute(".readout", "data-q") == "1"
    page.page.wait_for_selector("#head-steps[data-query='1'][data-head='2']")
    run_prompt(page.page, "a dog & a cat?")
    assert urllib.parse.parse_qs(urllib.parse.urlparse(page.page.url).query)["prompt"] == ["a dog & a cat?"]
    page.page.goto(server.url + "/explore?prompt=x&layer=99&head=0")  # a head this model lacks
    page.page.wait_for_selector("body[data-done]")
    assert page.page.get_attribute("#matrix", "data-layer") == "0"
    assert page.errors == []


def test_touch_reads_a_row_and_a_term(server: Explore, browser: Any) -> None:
    phone = Page(browser, width=390, has_touch=True, is_mobile=True)
    try:
        phone.page.goto(server.url + "/explore")
        phone.page.wait_for_selector("body[data-done]")
        phone.page.tap("#matrix th.query[data-q='2']")
        phone.page.wait_for_selector("#head-steps[data-query='2']")
        assert phone.page.get_attribute(".readout", "data-q") == "2"
        phone.page.tap("#next-panel .term[data-term='logit']")
        assert phone.page.locator("#term-tip").is_visible()
        assert "raw score" in phone.page.inner_text("#term-tip")
        assert phone.errors == []
    finally:
        phone.close()


def test_the_page_fits_a_phone_and_draws_every_panel(server: Explore, browser: Any) -> None:
    narrow = Page(browser, width=390)
    try:
        narrow.page.goto(server.url + "/explore")
        narrow.page.wait_for_selector("body[data-done]")
        narrow.page.wait_for_selector("#architecture[data-ready='1']")
        assert narrow.page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways page scroll
        narrow.page.fill("#top-k", "3")
        narrow.page.wait_for_selector("#decoding[data-top-k='3'][data-ready='1']")
        narrow.page.click("#attribute")
        narrow.page.wait_for_selector("#attribution[data-ready='1']")
        assert narrow.page.locator("#attribution .attr-row").count() == 4  # the four methods
        overflowing = narrow.page.evaluate("""() => Array.from(document.querySelectorAll('main table'))
            .filter(t => !t.closest('.matrix-scroll, .steps-scroll'))
            .filter(t => t.getBoundingClientRect().right > t.closest('.panel').getBoundingClientRect().right + 0.5
                     || t.getBoundingClientRect().right > 390)
            .map(t => t.className + ' in ' + t.closest('.panel').id)""")
        assert overflowing == []  # every column of every table is on screen, none behind a scroll
        header = narrow.page.locator("#decoding thead th").last.bounding_box()
        assert "sampler" in narrow.page.locator("#decoding thead th").last.inner_text() and header["x"] + \
            header["width"] <= 390
        assert narrow.errors == []
    finally:
        narrow.close()


# ---------------------------------------------------------------------------------------- reading the figures


def test_figures_are_readable(server: Explore, page: Page) -> None:
    """Probabilities keep three significant digits (never 0.0000 beside a bar), bars are on a stated 0-1 scale,
    byte-fallback tokens read ⟨hex⟩ in every panel as in Tokens, cut rows keep 4.5:1 contrast."""
    page.page.goto(server.url + "/explore")
    run_prompt(page.page, PROMPT)
    answer = server.answer("/llmscope/v1/explore/next-token", {"prompt": PROMPT})
    held = answer["partial_bytes"]
    assert held  # the tiny vocabulary's top tokens include bytes of a character
    for selector in ("#bars", "#decoding", "#lens"):
        text = page.page.inner_text(selector)
        assert "\ufffd" not in text and "0.0000" not in text
    for row in page.page.query_selector_all("#bars tr.candidate"):
        p = float(row.get_attribute("data-probability"))
        cells = row.query_selector_all("td")
        assert float(cells[2].inner_text()) == pytest.approx(p, rel=5e-3)  # three significant digits
        width = row.eval_on_selector(".bar", "b => parseFloat(b.style.width)")
        assert width == pytest.approx(100 * p, abs=0.01)  # the bar is p itself on the 0-1 scale
        token_id = row.get_attribute("data-token-id")
        if token_id in held:
            assert cells[1].inner_text() == f"⟨{held[token_id]}⟩"
    assert "0 to 1 scale" in page.page.inner_text("#next-panel")

    run_prompt(page.page, "emoji 🙂 ok")
    pieces = page.page.eval_on_selector_all("#tokens .chip.byte .piece", "ps => ps.map(p => p.textContent)")
    assert pieces and all(p.startswith("⟨") for p in pieces)
    keys = page.page.eval_on_selector_all("#matrix th.key", "ks => ks.map(k => k.textContent)")
    assert set(pieces) <= set(keys)  # the attention matrix writes them as the Tokens panel does
    page.page.fill("#top-k", "2")
    page.page.wait_for_selector("#decoding[data-top-k='2'][data-ready='1']")
    cut = page.page.locator("#decoding tr.cut td.tok").first
    colour = cut.evaluate("e => getComputedStyle(e).color")
    background = page.page.eval_on_selector("#decoding-panel", "e => getComputedStyle(e).backgroundColor")
    assert contrast(colour, background) >= 4.5
    for selector in (".note", "#status", "thead th"):
        colour = page.page.eval_on_selector(selector, "e => getComputedStyle(e).color")
        assert contrast(colour, "rgb(255, 255, 255)") >= 4.5
    assert page.errors == []


def test_an_interval_is_said_plainly(server: Explore, page: Page) -> None:
    page.page.goto(server.url + "/explore")
    run_prompt(page.page, PROMPT)
    said = page.page.evaluate("LlmscopeViews.interval(-0.68, 4.69, 1, '×')")
    assert said.startswith("95% interval -0.68× to 4.69×") and "includes 1×" in said and "cannot tell" in said
    assert "above 1×" in page.page.evaluate("LlmscopeViews.interval(1.2, 1.5, 1, '×')")
    page.page.click("#cache-time")
    page.page.wait_for_selector("#cache .interval")
    line = page.page.locator("#cache .interval")
    low, high = float(line.get_attribute("data-low")), float(line.get_attribute("data-high"))
    assert ("cannot tell" in line.inner_text()) == (low <= 1 <= high)
    assert page.errors == []


# ---------------------------------------------------------------------------------------- the strip, the glossary


def test_the_strip_draws_this_models_pass_and_opens_panels(server: Explore, page: Page) -> None:
    page.page.goto(server.url + "/explore")
    run_prompt(page.page, PROMPT)
    n = page.page.locator("#tokens .chip").count()
    shapes = dict(page.page.eval_on_selector_all("#strip [data-stage]", "ss => ss.map(s => [s.dataset.stage, "
                                                 "s.textContent])"))
    assert shapes["tokens"] == f"tokens{n} ids"
    assert f"[{n}, 64]" in shapes["embedding"] and "RoPE" in shapes["embedding"]
    assert shapes["blocks"].startswith("2 × block") and "4 heads × 16, 2 KV" in shapes["blocks"]
    assert "64 → 128 → 64" in shapes["mlp"]
    assert "64 → 320" in shapes["lm-head"] and f"[{n}, 320]" in shapes["logits"]
    for stage, panel in (("decoding", "decoding-panel"), ("attention", "attention-panel"), ("feedback", "cache-panel"),
                         ("tokens", "tokens-panel")):
        page.page.focus(f"#strip [data-stage='{stage}']")
        page.page.keyboard.press("Enter")
        page.page.wait_for_function("id => document.activeElement && document.activeElement.id === id", arg=panel)
        top = page.page.eval_on_selector(f"#{panel}", "e => e.getBoundingClientRect().top")
        assert -1 <= top < 900  # scrolled into view (to within a pixel's rounding)
    assert page.errors == []


def test_every_term_has_a_glossary_entry(server: Explore, page: Page) -> None:
    page.page.goto(server.url + "/explore")
    run_prompt(page.page, PROMPT)
    page.page.click("#attribute")
    page.page.wait_for_selector("#attribution[data-ready='1']")
    glossary = page.page.evaluate("LlmscopeViews.GLOSSARY")
    used = set(page.page.eval_on_selector_all(".term", "ts => ts.map(t => t.dataset.term)"))
    assert used <= set(glossary)
    for needed in ("nats", "logit", "rank", "sink", "look-back", "softmax", "KV cache", "GQA", "RoPE",
                   "residual stream", "completeness", "temperature", "top-p"):
        assert needed in used, needed
    listed = page.page.eval_on_selector_all("#glossary dt", "ds => ds.map(d => d.textContent)")
    assert sorted(listed) == sorted(glossary)
    page.page.hover("#next-panel .term[data-term='nats']")
    assert page.page.locator("#term-tip").is_visible()
    assert "1 nat ≈ 1.44 bits" in page.page.inner_text("#term-tip")
    assert page.page.get_attribute("#next-panel .term[data-term='nats']", "aria-describedby") == "term-tip"
    assert page.errors == []


def test_greedy_step_appends_the_top_token(server: Explore, page: Page) -> None:
    page.page.goto(server.url + "/explore")
    run_prompt(page.page, PROMPT)
    top = server.result("/llmscope/v1/next-token", {"prompt": PROMPT, "top_k": 1})["steps"][0]["top"][0]
    run = page.page.get_attribute("body", "data-run")
    page.page.click("#greedy")
    wait_done(page.page, run)
    assert page.page.input_value("#prompt") == PROMPT + top["text"]
    assert page.errors == []


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


def test_the_what_if_panel_shows_the_routes_numbers(server: Explore, page: Page) -> None:
    """The what-if panel (whatif.js) measures the prompt with the variants typed into it and shows what
    /llmscope/v1/explore/what-if answers: perplexity, KL, top-1 agreement and KV bytes per variant, exactly."""
    page.page.goto(server.url + "/explore")
    run_prompt(page.page, PROMPT)
    page.page.fill("#whatif-variants", "window=2 kv-cache=int4")
    page.page.fill("#whatif-new-tokens", "2")
    page.page.click("#whatif-run")
    page.page.wait_for_selector("#whatif[data-ready]")
    expected = server.result("/llmscope/v1/explore/what-if",
                             {"prompt": PROMPT, "variants": ["window=2", "kv-cache=int4"], "new_tokens": 2})
    quality = rows(page.page, "tr.whatif-quality")
    cost = rows(page.page, "tr.whatif-cost")
    assert [r["variant"] for r in quality] == [v["name"] for v in expected["variants"]] == [
        "full", "window=2", "kv-cache=int4"]
    for row, shown, spent in zip(expected["variants"], quality, cost):
        assert float(shown["perplexity"]) == row["perplexity"]
        assert float(shown["klMean"]) == row["kl_mean"] and float(shown["klMax"]) == row["kl_max"]
        assert float(shown["top1"]) == row["top1_agreement"]
        assert int(spent["kvBytes"]) == row["kv_cache_bytes"]
        assert int(spent["kvBytesAtContext"]) == row["kv_cache_bytes_at_context"]
    assert float(quality[1]["perplexity"]) != float(quality[0]["perplexity"])  # the window changed the numbers
    assert page.errors == []
