"""`llmscope explore` as a real subprocess: its JSON routes answer with the CLI's own figures (next-token's,
attention's, the sampler's) and refuse what does not fit. The page itself is driven in
tests/process/test_explore_browser.py."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.explore import Explore, start_explore, stop_explore

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")


PROMPT = "hello world the cat"


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path) -> Iterator[Explore]:
    explore = start_explore(str(tiny_model_dir))
    yield explore
    stop_explore(explore)


def test_the_page_and_its_assets_are_served_from_the_package(server: Explore) -> None:
    status, kind, page = server.get("/explore")
    assert status == 200 and kind.startswith("text/html")
    assert re.findall(r'(?:src|href)="([^"]+)"', page) == ["data:,", "/explore/assets/style.css",
                                                           "/explore/assets/views.js", "/explore/assets/explore.js"]
    for asset in ("style.css", "views.js", "explore.js"):
        status, _, text = server.get(f"/explore/assets/{asset}")
        assert status == 200 and "http://" not in text and "https://" not in text  # nothing from elsewhere


def test_the_sampler_view_equals_next_token_with_the_same_settings(server: Explore) -> None:
    view = server.result("/llmscope/v1/explore/decode", {"prompt": PROMPT, "temperature": 0.7, "top_p": 0.9,
                                                         "shown": 10})
    cli_view = server.result("/llmscope/v1/next-token", {"prompt": PROMPT, "top_k": 10, "temperature": 0.7,
                                                         "top_p": 0.9})["steps"][0]
    assert view["top"] == cli_view["top"]  # ids, texts, probabilities, logits and sampler column, exactly
    assert view["kept"] == cli_view["sampler_kept"]
    assert view["sampler_entropy"] == cli_view["sampler_entropy"]


def test_top_k_cuts_and_renormalises(server: Explore) -> None:
    view = server.result("/llmscope/v1/explore/decode", {"prompt": PROMPT, "top_k": 2, "shown": 5})
    kept = [t["sampler_probability"] for t in view["top"]]
    assert view["kept"] == 2 and kept[2:] == [0.0, 0.0, 0.0]
    assert sum(kept) == pytest.approx(1.0, abs=1e-6)
    first, second = view["top"][0], view["top"][1]
    assert kept[0] / kept[1] == pytest.approx(first["probability"] / second["probability"], rel=1e-5)


def test_greedy_and_seeded_sample_picks(server: Explore) -> None:
    greedy = server.result("/llmscope/v1/explore/decode", {"prompt": PROMPT, "pick": "greedy"})
    assert greedy["picked"]["token_id"] == greedy["top"][0]["token_id"]
    once = server.result("/llmscope/v1/explore/decode", {"prompt": PROMPT, "pick": "sample", "seed": 7,
                                                         "top_k": 3})
    again = server.result("/llmscope/v1/explore/decode", {"prompt": PROMPT, "pick": "sample", "seed": 7,
                                                          "top_k": 3})
    assert once["picked"] == again["picked"] and once["seed"] == 7
    assert once["picked"]["token_id"] in [t["token_id"] for t in once["top"][:3]]
    assert once["picked"]["sampler_probability"] > 0


def test_attention_route_packs_the_library_weights(server: Explore, tiny_model_dir: Path) -> None:
    import numpy

    from llmscope.attention.weights import AttentionSettings, attention_weights
    from llmscope.loading.loader import load_model

    result = server.result("/llmscope/v1/explore/attention", {"prompt": PROMPT})
    block = result["weights"]
    weights = numpy.frombuffer(base64.b64decode(block["float32_base64"]), dtype="<f4").reshape(block["shape"])
    loaded = load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    expected = attention_weights(loaded, PROMPT, AttentionSettings(all_queries=True))
    assert block["shape"] == list(expected.shape) == [2, 4, len(expected.tokens), len(expected.tokens)]
    assert numpy.allclose(weights, numpy.asarray(expected.weights), atol=1e-6)
    assert result["kv_groups"] == [{"kv_head": 0, "heads": [0, 1]}, {"kv_head": 1, "heads": [2, 3]}]


def test_lens_cache_and_architecture_routes(server: Explore, cli: Any, tiny_model_dir: Path) -> None:
    lens = server.result("/llmscope/v1/explore/lens", {"prompt": PROMPT})["lens"]
    command = cli("next-token", PROMPT, "-m", str(tiny_model_dir), "--lens", "--json").json()
    assert [row["top_id"] for row in lens] == [row["top_id"] for row in command["lens"]]
    assert [row["answer_probability"] for row in lens] == pytest.approx(
        [row["answer_probability"] for row in command["lens"]], abs=1e-6)
    cache = server.result("/llmscope/v1/explore/cache", {"prompt": PROMPT})
    tokens = cache["tokens"]
    assert cache["kv_bytes"] == 2 * tokens * (2 * 2 * 16) * 4  # 2 layers x tokens x (K and V x 2 KV heads x 16) fp32
    architecture = server.result("/llmscope/v1/explore/architecture", {})
    assert architecture["summary"]["layers"] == 2 and architecture["summary"]["attention"]["kv_heads"] == 2


def test_what_does_not_fit_is_refused_with_a_message(server: Explore) -> None:
    status, answer = server.post("/llmscope/v1/explore/attention", {"prompt": "hello " * 400})
    assert status == 400 and "context" in answer["error"]["message"]
    status, answer = server.post("/llmscope/v1/explore/decode", {"prompt": PROMPT, "top_k": 10_000})
    assert status == 400 and "vocabulary" in answer["error"]["message"]
    status, answer = server.post("/llmscope/v1/explore/decode", {"prompt": PROMPT, "temperature": "hot"})
    assert status == 400
