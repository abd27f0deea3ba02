"""`llmscope explore` as a real subprocess: its JSON routes answer with the CLI's own figures (next-token's,
attention's, the sampler's, one head's q, k and v, block norms) and refuse what does not fit. The page itself is
driven in tests/process/test_explore_browser.py."""

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
                                                           "/explore/assets/views.js", "/explore/assets/whatif.js",
                                                           "/explore/assets/forward.js", "/explore/assets/explore.js"]
    for asset in ("style.css", "views.js", "whatif.js", "forward.js", "explore.js"):
        status, _, text = server.get(f"/explore/assets/{asset}")
        text = text.replace('"http://www.w3.org/2000/svg"', "")  # SVG's namespace name, never fetched
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


def unpack(block: dict[str, Any]) -> Any:
    import numpy

    return numpy.frombuffer(base64.b64decode(block["float32_base64"]), dtype="<f4").reshape(block["shape"])


def test_attention_route_takes_one_head_apart(server: Explore) -> None:
    """q, k and v of layer 1, head 3 (KV head 1 of the tiny llama's 2): softmax(q·kᵀ/√16, causal) equals the head's
    weights in the same answer's matrix, and weights @ v its output."""
    import numpy

    status, answer = server.post("/llmscope/v1/explore/attention", {"prompt": PROMPT, "layer": 1, "head": 3})
    assert status == 200, answer
    steps, matrix = answer["head_steps"], unpack(answer["result"]["weights"])
    q, k, v = (unpack(steps[name]).astype("float64") for name in ("q", "k", "v"))
    n = len(answer["result"]["tokens"])
    assert q.shape == k.shape == v.shape == (n, 16)
    assert (steps["layer"], steps["head"], steps["kv_head"], steps["group"]) == (1, 3, 1, [2, 3])
    assert steps["scale"] == 0.25 and steps["window"] is None and steps["softcap"] is None
    scores = q @ k.T * steps["scale"]
    scores[numpy.triu_indices(n, 1)] = -numpy.inf
    weights = numpy.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    assert numpy.abs(weights - matrix[1, 3]).max() < 1e-6  # the attention route's own weights for that head
    assert numpy.abs(weights - unpack(steps["weights"])).max() < 1e-6
    assert numpy.abs(weights @ v - unpack(steps["output"])).max() < 1e-5
    assert steps["recomputed_weight_difference"] < 1e-6 and steps["recomputed_output_difference"] < 1e-5
    assert set(answer["partial_bytes"]) <= {str(t["token_id"]) for t in answer["result"]["tokens"]}

    status, alone = server.post("/llmscope/v1/explore/attention", {"prompt": PROMPT, "layer": 1, "head": 3,
                                                                   "weights": False})
    assert status == 200 and alone["result"] is None and alone["head_steps"]["q"] == steps["q"]
    status, answer = server.post("/llmscope/v1/explore/attention", {"prompt": PROMPT, "layer": 1})
    assert status == 400 and "go together" in answer["error"]["message"]
    status, answer = server.post("/llmscope/v1/explore/attention", {"prompt": PROMPT, "layer": 7, "head": 0})
    assert status == 400 and "layer 7 is outside the model" in answer["error"]["message"]
    status, answer = server.post("/llmscope/v1/explore/attention", {"prompt": PROMPT, "weights": False})
    assert status == 400


def test_next_token_and_lens_routes_add_block_norms_and_byte_tokens(server: Explore, tiny_model_dir: Path) -> None:
    """The lens answer carries next-token's candidates (top_k of them), the block norms, and the bytes of every
    candidate that holds part of a UTF-8 character, as the tokenizer's own token_bytes gives them; the next-token
    route the same candidates without the lens."""
    from llmscope.loading.loader import load_model
    from llmscope.loading.tokenization import token_bytes

    status, answer = server.post("/llmscope/v1/explore/lens", {"prompt": PROMPT, "top_k": 20})
    assert status == 200
    top = answer["result"]["steps"][0]["top"]
    assert len(top) == 20
    assert top == server.result("/llmscope/v1/next-token", {"prompt": PROMPT, "top_k": 20})["steps"][0]["top"]
    status, bars = server.post("/llmscope/v1/explore/next-token", {"prompt": PROMPT, "top_k": 20})
    assert status == 200 and bars["result"]["steps"] == answer["result"]["steps"] and bars["result"]["lens"] is None
    assert bars["partial_bytes"] == {key: value for key, value in answer["partial_bytes"].items()
                                     if int(key) in {t["token_id"] for t in top}}
    blocks = answer["blocks"]
    assert [row["layer"] for row in blocks["last"]] == [0, 1] and blocks["adds_up"] is True
    assert blocks["last"][0]["residual_out"] == blocks["last"][1]["residual_in"]
    tokenizer = load_model(str(tiny_model_dir), device="cpu", dtype="float32").tokenizer
    for candidate in top:
        held = bytes(token_bytes(tokenizer, candidate["token_id"]))
        whole = held.decode("utf-8", errors="replace") == held.decode("utf-8", errors="ignore")
        assert answer["partial_bytes"].get(str(candidate["token_id"])) == (None if whole else held.hex(" ").upper())
    assert any("\ufffd" in t["text"] for t in top) and answer["partial_bytes"]  # the tiny vocabulary has such tokens


def test_attribute_route_takes_steps_and_methods(server: Explore) -> None:
    result = server.result("/llmscope/v1/explore/attribute", {"prompt": PROMPT, "steps": 8,
                                                              "methods": ["integrated-gradients", "occlusion"]})
    assert [m["method"] for m in result["methods"]] == ["integrated-gradients", "occlusion"]
    check = result["methods"][0]["completeness"][0]
    assert check["steps"] == 8 and check["relative_error"] >= 0
    for bad in (0, 257):
        status, answer = server.post("/llmscope/v1/explore/attribute", {"prompt": PROMPT, "steps": bad})
        assert status == 400 and "'steps' must be 1 to 256" in answer["error"]["message"]
    status, answer = server.post("/llmscope/v1/explore/attribute", {"prompt": PROMPT, "methods": ["guess"]})
    assert status == 400 and "unknown attribution method" in answer["error"]["message"]


def test_what_does_not_fit_is_refused_with_a_message(server: Explore) -> None:
    status, answer = server.post("/llmscope/v1/explore/attention", {"prompt": "hello " * 400})
    assert status == 400 and "context" in answer["error"]["message"]
    status, answer = server.post("/llmscope/v1/explore/decode", {"prompt": PROMPT, "top_k": 10_000})
    assert status == 400 and "vocabulary" in answer["error"]["message"]
    status, answer = server.post("/llmscope/v1/explore/decode", {"prompt": PROMPT, "temperature": "hot"})
    assert status == 400
