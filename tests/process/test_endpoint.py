"""--endpoint against real servers: `llmscope serve` in a subprocess gives the local run's documents (next-token,
score, generate, compare, --batch), and hostile http.server routes get one line and exit 1 for every wrong answer."""

from __future__ import annotations

import http.server
import json
import math
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.cli import one_error_line
from helpers.servers import Server, start_server, stop_server

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")


PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path) -> Iterator[Server]:
    running = start_server(tiny_model_dir)
    yield running
    assert stop_server(running) == 0, "".join(running.log)


def _without_timings(document: dict[str, Any]) -> dict[str, Any]:
    """The document less what belongs to one process: its load time, and how its invariance self-test reached the
    verdict (probed in that process or read from the cache); the verdict itself stays."""
    document["model_info"].pop("load_seconds")
    if document["model_info"].get("invariance"):
        document["model_info"]["invariance"].pop("probe")
    return document


Answer = tuple[int, dict[str, str], bytes]  # status, headers, body


MODELS = {"data": [{"id": "hostile"}]}


class Hostile:
    """A server whose routes answer what the test says; it records every request (path and headers)."""

    def __init__(self) -> None:
        self.routes: dict[str, Callable[[Any], Answer | None] | Answer] = {}
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.sent = 0
        self.release = threading.Event()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.body = self.rfile.read(length) if length else b""
                owner.seen.append((self.path, dict(self.headers)))
                route = owner.routes.get(self.path, (404, {}, json.dumps({"error": {"message": "no"}}).encode()))
                found = route(self) if callable(route) else route
                if found is None:  # the route wrote its own answer
                    return
                status, headers, body = found
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", "Content-Length": str(len(body)),
                                   **headers}.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = answer

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def json_route(self, path: str, document: Any, status: int = 200) -> None:
        self.routes[path] = (status, {}, json.dumps(document).encode())

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hostile() -> Iterator[Hostile]:
    server = Hostile()
    yield server
    server.close()


@pytest.fixture
def other() -> Iterator[Hostile]:
    server = Hostile()
    yield server
    server.close()


def completion(logprobs: Any, usage: Any = None) -> dict[str, Any]:
    return {"choices": [{"text": "x", "logprobs": logprobs}], "usage": usage or {"prompt_tokens": 5}}


def legacy(tokens: list[str], values: list[Any], tops: list[Any]) -> dict[str, Any]:
    return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops}


def _openai(hostile: Hostile, answer: Any, models: Any = MODELS) -> None:
    hostile.json_route("/v1/models", models)
    hostile.routes["/v1/completions"] = (200, {}, answer if isinstance(answer, bytes) else json.dumps(answer).encode())


GOOD_TOPS = [{" Paris": -0.3, " the": -2.0}]


SHAPES: list[tuple[str, Any, Any, str]] = [
    # (what, /v1/models, /v1/completions, what the error line says)
    ("choices a string", MODELS, {"choices": "oops"}, "a string for choices, where a list of choices goes"),
    ("no choices", MODELS, {"choices": []}, "a list of choices goes"),
    ("a choice not an object", MODELS, {"choices": [3]}, "a number for choices[0], where an object goes"),
    ("logprobs a string", MODELS, completion("x"), "a string for logprobs, where an object goes"),
    ("content not a list", MODELS, completion({"content": 5}), "a number for logprobs.content, where a list goes"),
    ("logprob a string", MODELS, completion(legacy([" Paris"], ["-1"], GOOD_TOPS)),
     "a string for logprobs.token_logprobs[0], where a number goes"),
    ("logprob 1000", MODELS, completion(legacy([" Paris"], [1000], [{" Paris": 1000}])),
     "an impossible log-probability for logprobs.token_logprobs[0]: 1000, a probability above 1"),
    ("logprob +5", MODELS, completion(legacy([" Paris"], [-0.3], [{" Paris": 5.0}])),
     "an impossible log-probability for logprobs.top_logprobs[0][' Paris']: 5.0"),
    ("NaN", MODELS, b'{"choices": [{"logprobs": {"tokens": [" Paris"], "token_logprobs": [NaN], '
     b'"top_logprobs": [{" Paris": -0.3}]}}]}', "a probability of NaN"),
    ("probabilities summing to 2.94", MODELS,
     completion(legacy([" a"], [-0.02], [{" a": -0.02, " b": -0.02, " c": -0.02}])),
     "3 alternatives whose probabilities sum to 2.941, more than 1"),
    ("lists of different lengths", MODELS, completion(legacy([" a", " b"], [-1.0], [None, None])),
     "1 logprobs.token_logprobs for 2 tokens"),
    ("prompt_tokens a string", MODELS, completion(legacy([" Paris"], [-0.3], GOOD_TOPS), {"prompt_tokens": "5"}),
     "a string for usage.prompt_tokens, where a count goes"),
    ("models a string", {"data": "oops"}, {}, "lists no model"),
    ("a model without an id", {"data": [5]}, {}, "lists its models in a shape llmscope cannot read"),
    ("a JSON list", MODELS, [1, 2], "answered a JSON list on /v1/completions, not an object"),
    ("not JSON", MODELS, b"<html>hello</html>", "did not answer JSON on /v1/completions"),
    ("nested past Python's recursion limit", MODELS, b"[" * 100_000 + b"]" * 100_000, "did not answer JSON"),
]


INFO = {"model": "hostile", "source": "folder", "dtype": "float32"}


TOKEN = {"rank": 1, "token_id": 7, "text": " Paris", "piece": "ĠParis", "probability": 0.5, "logit": 3.0,
         "logprob": math.log(0.5), "cumulative": 0.5}


STEP = {"index": 0, "context_tokens": 5, "top": [TOKEN], "chosen": TOKEN, "cumulative_logprob": math.log(0.5),
        "entropy": 1.0, "sampler_entropy": None, "sampler_kept": None}


RESULT = {"model": "hostile", "prompt": PROMPT, "prompt_text": PROMPT, "prompt_tokens": [], "hidden_shape": [1, 5, 8],
          "logits_shape": [1, 5, 32], "layers": 2, "vocab_size": 32, "top_k": 1, "temperature": None, "top_p": None,
          "chat_template_applied": False, "steps": [STEP], "continuation": " Paris", "lens": None,
          "lens_note": None}


NATIVE: list[tuple[str, Any, str]] = [
    ("no model_info", {"result": RESULT}, "no 'model_info' in the answer"),
    ("no result", {"model_info": INFO}, "no 'result' in the answer"),
    ("steps a string", {"model_info": INFO, "result": {**RESULT, "steps": "oops"}},
     "a string for result.steps, where a list goes"),
    ("a step a number", {"model_info": INFO, "result": {**RESULT, "steps": [1]}},
     "a number for result.steps[0], where an object goes"),
    ("model_info a list", {"model_info": [1], "result": RESULT}, "a list for model_info, where an object goes"),
    ("probability 148", {"model_info": INFO, "result": {**RESULT, "steps": [
        {**STEP, "top": [{**TOKEN, "probability": 148.0, "logprob": 5.0}]}]}},
     "an impossible probability for result.steps[0].top[0].probability: 148.0"),
    ("three tokens summing to 2.94", {"model_info": INFO, "result": {**RESULT, "steps": [
        {**STEP, "top": [{**TOKEN, "probability": 0.98, "logprob": math.log(0.98)}] * 3}]}},
     "3 alternatives whose probabilities sum to 2.94"),
    ("a missing field", {"model_info": INFO, "result": {k: v for k, v in RESULT.items() if k != "top_k"}},
     "no 'top_k' in result"),
]


TEXT = "The cat sat on the mat"


PIECES = ["The", " cat", " sat", " on", " the", " mat"]


# the true log-probability of each token after the first, and the best alternatives at that position
TRUE = {1: -0.5, 2: -0.7, 3: -0.2, 4: -1.1, 5: -0.9}


RIVALS = {1: {" dog": -1.5}, 2: {" ran": -1.2}, 3: {" in": -2.5}, 4: {" a": -0.8}, 5: {" rug": -1.4}}


def llama_cpp_python_echo(drop: int | None = None) -> dict[str, Any]:
    """An echo as llama-cpp-python 0.3 sends it for a model without BOS: entry i holds the distribution that
    predicts token i + 1 (its top 2), plus the entry's own token with that distribution's figure for it."""
    tokens, values, tops = [], [], []
    for i, piece in enumerate(PIECES):
        nxt = i + 1
        ahead = {PIECES[nxt]: TRUE[nxt], **RIVALS[nxt]} if nxt < len(PIECES) else {".": -0.4, "!": -2.0}
        if drop == nxt:
            ahead = {" x": -0.1, " y": -3.0}
        ahead = dict(sorted(ahead.items(), key=lambda kv: -kv[1])[:2])
        ahead.setdefault(piece, -9.5)  # its own token, with the next position's (low) figure for it
        tokens.append(piece)
        values.append(ahead[piece])
        tops.append(ahead)
    return completion(legacy([*tokens, "."], [*values, -0.4], [*tops, {".": -0.4}]),
                      {"prompt_tokens": len(PIECES)})


def test_next_token_over_the_server_is_the_local_document(cli, server: Server, tiny_model_dir: Path) -> None:
    args = ["next-token", PROMPT, "-k", "8", "--steps", "3", "--temperature", "0.7", "--json"]
    remote = cli(*args, "--endpoint", server.url)
    local = cli(*args, "-m", tiny_model_dir)
    assert remote.exit_code == 0 and local.exit_code == 0, remote.stderr + local.stderr
    a, b = _without_timings(remote.json()), _without_timings(local.json())
    # the source is named: which server, and that it is llmscope's (its model, dtype and weights follow)
    assert (a["model_info"].pop("endpoint"), a["model_info"].pop("server")) == (server.url, "llmscope serve")
    assert (b["model_info"].pop("endpoint"), b["model_info"].pop("server")) == (None, None)
    assert f"answered by `llmscope serve` at {server.url}: {tiny_model_dir}, float32" in remote.stderr
    for step_a, step_b in zip(a["steps"], b["steps"], strict=True):
        assert [r["token_id"] for r in step_a["top"]] == [r["token_id"] for r in step_b["top"]]
        assert [r["probability"] for r in step_a["top"]] == pytest.approx(
            [r["probability"] for r in step_b["top"]], abs=1e-5)
        assert step_a["entropy"] == pytest.approx(step_b["entropy"], abs=1e-5)
    assert {k: v for k, v in a.items() if k != "steps"} == {k: v for k, v in b.items() if k != "steps"}


def test_next_token_from_openai_logprobs_alone(server: Server, tiny_model_dir: Path) -> None:
    from llmscope.client.endpoint import Client, EndpointSettings, next_token_openai
    from llmscope.core.command_settings import NextTokenSettings
    from llmscope.inspection.next_token import next_token_distribution
    from llmscope.loading.loader import load_model

    client = Client(EndpointSettings(url=server.url + "/v1"))
    info, result, limits = next_token_openai(client, PROMPT, NextTokenSettings(top_k=5, steps=2), False, None)
    local = next_token_distribution(load_model(str(tiny_model_dir), device="cpu"), PROMPT, top_k=5, steps=2)
    assert info.model == str(tiny_model_dir) and "entropy over the full vocabulary" in limits
    for remote_step, local_step in zip(result.steps, local.steps, strict=True):
        # the legacy completions format keys alternatives by text: compare the probabilities
        assert sorted(r.probability for r in remote_step.top) == pytest.approx(
            sorted({r.text: r.probability for r in local_step.top}.values()), abs=1e-5)
        assert remote_step.chosen.text == local_step.chosen.text


def test_score_over_the_server_has_the_local_perplexity(cli, server: Server, tiny_model_dir: Path) -> None:
    text = "Attention heads share keys and values in grouped-query attention."
    remote = cli("score", text, "--endpoint", server.url, "--top-k", "2", "--json")
    local = cli("score", text, "-m", tiny_model_dir, "--top-k", "2", "--json")
    assert remote.exit_code == 0, remote.stderr
    a, b = remote.json(), local.json()
    assert a["summary"]["perplexity"] == pytest.approx(b["summary"]["perplexity"], abs=1e-4)
    assert a["token_ids"] == b["token_ids"]
    for token_a, token_b in zip(a["prompt_logprobs"]["content"], b["prompt_logprobs"]["content"], strict=True):
        assert [t["id"] for t in token_a["top_logprobs"]] == [t["id"] for t in token_b["top_logprobs"]]
        assert token_a["logprob"] == pytest.approx(token_b["logprob"], abs=1e-5)


def test_generate_over_the_server_gives_the_local_tokens(cli, server: Server, tiny_model_dir: Path) -> None:
    args = ["generate", "Hello", "-n", "5", "--logprobs", "2", "--json"]
    remote = cli(*args, "--endpoint", server.url)
    local = cli(*args, "-m", tiny_model_dir)
    assert remote.exit_code == 0, remote.stderr
    a, b = remote.json(), local.json()
    assert a["text"] == b["text"] and a["token_ids"] == b["token_ids"]
    assert a.keys() == b.keys()


def test_an_endpoint_call_imports_neither_torch_nor_transformers(server: Server) -> None:
    code = ("import sys\nfrom llmscope.cli.main import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    code = e.code\nheavy = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
            "print(json.dumps({'exit': code, 'heavy': heavy}), file=sys.stderr)\n").replace(
        "import sys", "import json, sys", 1)
    for args in (["next-token", PROMPT, "--json"], ["score", "Hello world", "--json"], ["generate", "Hi", "-n", "2"]):
        run = subprocess.run([sys.executable, "-c", code, *args, "--endpoint", server.url],
                             capture_output=True, text=True, timeout=120)
        verdict = json.loads(run.stderr.strip().splitlines()[-1])
        assert verdict == {"exit": 0, "heavy": []}, run.stderr


def test_endpoint_usage_errors(cli, server: Server, tmp_path: Path) -> None:
    lens = cli("next-token", PROMPT, "--lens", "--endpoint", server.url)
    assert lens.exit_code == 2 and "--lens needs a local model" in lens.stderr
    batch_file = tmp_path / "prompts.txt"
    batch_file.write_text("a\nb\n")
    assert cli("generate", "--batch", batch_file, "--endpoint", server.url).exit_code == 2
    assert cli("next-token", PROMPT, "--api-key", "k").exit_code == 2  # a key without an endpoint
    assert cli("next-token", PROMPT, "--endpoint", "localhost:1").exit_code == 2
    gone = cli("next-token", PROMPT, "--endpoint", "http://127.0.0.1:9")
    assert gone.exit_code == 1 and "cannot reach the endpoint" in gone.stderr
    other_model = cli("next-token", PROMPT, "--endpoint", server.url, "-m", "another-model")
    assert other_model.exit_code == 1 and "does not serve that model" in other_model.stderr
    too_long = cli("next-token", "Hi " * 400, "--endpoint", server.url)
    assert too_long.exit_code == 2 and "context" in too_long.stderr


def test_llmscope_endpoint_variable(cli, server: Server) -> None:
    result = cli("next-token", PROMPT, "-k", "2", "--json", env={"LLMSCOPE_ENDPOINT": server.url})
    assert result.exit_code == 0, result.stderr
    assert len(result.json()["steps"][0]["top"]) == 2


def test_compare_against_the_server_is_the_local_compare(cli, server: Server, tiny_model_dir: Path) -> None:
    text = "The capital of France is Paris. The capital of Italy is Rome."
    args = ["compare", text, "-m", tiny_model_dir, "--window", "8", "--stride", "4", "--next-token", "-k", "3",
            "--json"]
    remote = cli(*args, "--against-endpoint", server.url)
    local = cli(*args, "--against", tiny_model_dir)
    assert remote.exit_code == 0, remote.stderr
    a, b = remote.json(), local.json()
    assert a["window"]["forward_passes"] > 1 and a["model_b"] == b["model_b"]  # several windows: chunks pair up
    assert (a["endpoint_b"], a["weights_b"], b["endpoint_b"], b["weights_b"]) == (server.url, "float32", None,
                                                                                   "float32")
    assert a["summary"]["kl_max"] < 1e-4 and a["summary"]["tokens_compared"] == b["summary"]["tokens_compared"]
    assert a["summary"]["perplexity_b"] == pytest.approx(b["summary"]["perplexity_b"], abs=1e-4)
    assert [r["b_id"] for r in a["next_token"]["rows"]] == [r["b_id"] for r in b["next_token"]["rows"]]
    other = cli("compare", text, "-m", tiny_model_dir, "--against-endpoint", server.url, "--against-dtype", "bfloat16")
    assert other.exit_code == 2


def test_score_from_openai_prompt_logprobs(server: Server, tiny_model_dir: Path) -> None:
    from llmscope.client.answers import read_entries, score_from_openai
    from llmscope.client.endpoint import Client, EndpointSettings, score_openai
    from llmscope.inspection.scoring import ScoreSettings, score_text
    from llmscope.loading.loader import load_model

    text = "Attention heads share keys and values."
    local = score_text(load_model(str(tiny_model_dir), device="cpu"), text, ScoreSettings(top_k=3))
    # vLLM's prompt_logprobs (llmscope serve answers them too): ids and every rank
    info, result, limits = score_openai(Client(EndpointSettings(url=server.url)), text, ScoreSettings(top_k=3))
    assert info.source == "endpoint" and limits == ("entropy over the full vocabulary",)
    assert result.perplexity == pytest.approx(local.perplexity, abs=1e-4)
    assert [t.token_id for t in result.tokens] == [t.token_id for t in local.tokens]
    assert [t.rank for t in result.tokens] == [t.rank for t in local.tokens]
    assert [[a.token_id for a in t.top] for t in result.tokens] == [[a.token_id for a in t.top] for t in local.tokens]
    # echo + logprobs alone (what other servers send): no ids, ranks only within the top 3
    status, answer = server.request("/v1/completions", {"prompt": text, "max_tokens": 1, "temperature": 0,
                                                        "echo": True, "logprobs": 3}, key=None)
    assert status == 200
    entries = read_entries(answer["choices"][0]["logprobs"])[: answer["usage"]["prompt_tokens"]]
    echoed = score_from_openai(str(tiny_model_dir), text, entries, ScoreSettings(top_k=3))
    assert echoed.perplexity == pytest.approx(local.perplexity, abs=1e-4)
    assert [t.text for t in echoed.tokens] == [t.text for t in local.tokens]
    assert all(t.rank in (0, r.rank) for t, r in zip(echoed.tokens, local.tokens, strict=True))


def test_batch_through_the_server_writes_the_local_records(cli, server: Server, tiny_model_dir: Path,
                                                           tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"id": "a", "prompt": "The capital of France is"}\n{"id": "b", "prompt": ""}\n'
                       '{"id": "c", "prompt": "Hello world"}\n')
    remote = cli("next-token", "--batch", prompts, "-k", "3", "--endpoint", server.url)
    local = cli("next-token", "--batch", prompts, "-k", "3", "-m", tiny_model_dir)
    assert remote.exit_code == local.exit_code == 1  # the empty prompt is an error record in both
    a, b = ([json.loads(line) for line in run.stdout.splitlines()] for run in (remote, local))
    assert [(r["id"], r.get("error") is None) for r in a] == [(r["id"], r.get("error") is None) for r in b]
    for record_a, record_b in zip(a, b):
        if record_a.get("error") is None:
            assert [t["probability"] for t in record_a["steps"][0]["top"]] == pytest.approx(
                [t["probability"] for t in record_b["steps"][0]["top"]], abs=1e-5)
    scored = cli("score", "--batch", prompts, "--endpoint", server.url)
    assert scored.exit_code == 1 and len(scored.stdout.splitlines()) == 3


def test_no_api_key_follows_a_redirect_to_another_server(cli, hostile: Hostile, other: Hostile) -> None:
    for code in (302, 307):
        hostile.routes["/llmscope/v1/next-token"] = (code, {"Location": other.url + "/steal"}, b"")
        result = cli("next-token", PROMPT, "--endpoint", hostile.url, "--api-key", "secret-key")
        assert result.exit_code == 1
        line = one_error_line(result)
        assert f"redirected {hostile.url}/llmscope/v1/next-token to another server, {other.url}/steal" in line
        assert other.seen == []  # nothing reached the other server, the key least of all
    # on the same server a redirect is followed, and the key goes with it (it is that server's key)
    hostile.routes["/llmscope/v1/next-token"] = (404, {}, b"{}")
    hostile.routes["/v1/models"] = (302, {"Location": "/v1/models-moved"}, b"")
    hostile.json_route("/v1/models-moved", {"data": "oops"})
    moved = cli("next-token", PROMPT, "--endpoint", hostile.url, "--api-key", "secret-key")
    assert moved.exit_code == 1 and "lists no model" in one_error_line(moved)
    assert dict(hostile.seen)["/v1/models-moved"]["Authorization"] == "Bearer secret-key"


def test_a_huge_answer_is_refused_unread(cli, hostile: Hostile) -> None:
    def claims_a_gibibyte(handler: Any) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(2**30))
        handler.end_headers()
        handler.wfile.write(b'{"model_info": ' + b" " * 2**16)  # then nothing: the client must not wait for it

    def streams_forever(handler: Any) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.end_headers()  # no length: the answer runs until the connection closes
        piece = b" " * 2**20
        try:
            handler.wfile.write(b'{"result": "')
            while not hostile.release.is_set():
                handler.wfile.write(piece)
                hostile.sent += len(piece)
        except OSError:  # the client hung up: what it wanted
            return

    hostile.routes["/llmscope/v1/next-token"] = claims_a_gibibyte
    claimed = cli("next-token", PROMPT, "--endpoint", hostile.url)
    assert claimed.exit_code == 1
    assert "announces 1,024 MiB: more than the 64 MiB llmscope reads" in one_error_line(claimed)
    hostile.routes["/llmscope/v1/next-token"] = streams_forever
    endless = cli("next-token", PROMPT, "--endpoint", hostile.url)
    assert endless.exit_code == 1 and "passed 64 MiB: more than the 64 MiB" in one_error_line(endless)
    assert hostile.sent < 2**30


def test_a_silent_server_meets_the_timeout(cli, hostile: Hostile) -> None:
    def silent(handler: Any) -> None:
        hostile.release.wait(120)  # answers nothing until the test ends

    hostile.routes["/llmscope/v1/score"] = silent
    result = cli("score", "Hello world", "--endpoint", hostile.url, "--timeout", "0.5")
    assert result.exit_code == 1
    assert f"no whole answer from {hostile.url}/llmscope/v1/score within --timeout 0.5 s" in one_error_line(result)
    assert cli("score", "Hello world", "--timeout", "5", "-m", "x").exit_code == 2  # --timeout is for --endpoint
    assert cli("score", "Hello world", "--endpoint", hostile.url, "--timeout", "0").exit_code == 2


@pytest.mark.parametrize(("models", "answer", "said"), [case[1:] for case in SHAPES], ids=[c[0] for c in SHAPES])
def test_wrong_shapes_from_an_openai_server_are_one_line(cli, hostile: Hostile, models: Any, answer: Any,
                                                         said: str) -> None:
    _openai(hostile, answer, models)
    result = cli("next-token", PROMPT, "--endpoint", hostile.url)
    assert result.exit_code == 1
    assert said in one_error_line(result)


@pytest.mark.parametrize(("document", "said"), [case[1:] for case in NATIVE], ids=[c[0] for c in NATIVE])
def test_wrong_shapes_from_a_llmscope_route_are_one_line(cli, hostile: Hostile, document: Any, said: str) -> None:
    hostile.json_route("/llmscope/v1/next-token", document)
    result = cli("next-token", PROMPT, "--endpoint", hostile.url)
    assert result.exit_code == 1
    assert said in one_error_line(result)


def test_a_right_shape_still_reads(cli, hostile: Hostile) -> None:
    hostile.json_route("/llmscope/v1/next-token", {"model_info": INFO, "result": RESULT})
    result = cli("next-token", PROMPT, "--endpoint", hostile.url, "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["steps"][0]["top"][0]["probability"] == 0.5


def test_llama_cpp_python_shifted_echo_is_put_back(cli, hostile: Hostile) -> None:
    _openai(hostile, llama_cpp_python_echo())
    result = cli("score", TEXT, "--endpoint", hostile.url, "--top-k", "2", "--json")
    assert result.exit_code == 0, result.stderr
    document = result.json()
    scored = document["prompt_logprobs"]["content"][1:]
    assert [t["token"] for t in scored] == PIECES[1:]
    assert [t["logprob"] for t in scored] == [TRUE[i] for i in range(1, 6)]
    expected_ppl = math.exp(-sum(TRUE.values()) / len(TRUE))
    assert document["summary"]["perplexity"] == pytest.approx(expected_ppl, rel=1e-9)
    # ranks are the server's order within the top 2 asked for: " a" (-0.8) beat " the" (-1.1) at position 4
    assert [t["rank"] for t in scored] == [1, 1, 1, 2, 1]
    assert any("one token early" in note for note in document["endpoint_cannot_give"])
    human = cli("score", TEXT, "--endpoint", hostile.url, "--top-k", "2")
    assert human.exit_code == 0 and "one token early" in human.stderr
    _openai(hostile, llama_cpp_python_echo(drop=3))
    refused = cli("score", TEXT, "--endpoint", hostile.url, "--top-k", "2")
    assert refused.exit_code == 1
    assert "one token early (as llama-cpp-python's server sends them), and 1 of 5 tokens" in one_error_line(refused)


def test_no_rank_past_the_top_asked_for(cli, hostile: Hostile) -> None:
    """A server that adds each token to its top-k list (as OpenAI's legacy format does) gives no rank for a token
    outside the top k: the rank is null, not k + 1."""
    tops = [None] + [{PIECES[i]: TRUE[i], **RIVALS[i]} for i in range(1, 6)]
    tops = [None] + [dict(sorted(top.items(), key=lambda kv: -kv[1])) for top in tops[1:]]
    _openai(hostile, completion(legacy(PIECES, [None, *TRUE.values()], tops), {"prompt_tokens": 6}))
    result = cli("score", TEXT, "--endpoint", hostile.url, "--top-k", "1", "--json")
    assert result.exit_code == 0, result.stderr
    scored = result.json()["prompt_logprobs"]["content"][1:]
    assert [t["rank"] for t in scored] == [1, 1, 1, None, 1]  # " the" (-1.1) is second to " a": not in the top 1
    assert [t["logprob"] for t in scored] == [TRUE[i] for i in range(1, 6)]


def test_the_source_is_named_and_load_options_refused(cli, hostile: Hostile) -> None:
    _openai(hostile, completion(legacy([" Paris"], [-0.3], GOOD_TOPS)))
    for option in (["--quantize", "none"], ["--dtype", "bfloat16"], ["--device", "cpu"], ["--threads", "1"]):
        refused = cli("next-token", PROMPT, "--endpoint", hostile.url, *option)
        assert refused.exit_code == 2
        assert f"{option[0]} needs a local model, not --endpoint" in one_error_line(refused)
        assert hostile.seen == []  # refused before anything was asked
    result = cli("next-token", PROMPT, "--endpoint", hostile.url, "--json", env={"LLMSCOPE_QUANTIZE": "int4"})
    assert result.exit_code == 0, result.stderr
    assert f"LLMSCOPE_QUANTIZE=int4 set aside: the figures come from the server at {hostile.url}" in result.stderr
    info = result.json()["model_info"]
    assert (info["endpoint"], info["server"], info["model"]) == (hostile.url, "openai-compatible", "hostile")
    assert f"answered by an OpenAI-compatible server at {hostile.url}: hostile, weights not said" in result.stderr


def test_compare_refuses_an_endpoint_before_model_a_loads(cli, hostile: Hostile, tiny_model_dir: Any) -> None:
    for answer in ((404, {}, b"{}"), (401, {}, b'{"error": {"message": "bad key"}}')):
        hostile.routes["/llmscope/v1/logprobs"] = answer
        result = cli("compare", "Hello world", "-m", tiny_model_dir, "--against-endpoint", hostile.url)
        assert result.exit_code == 1
        one_error_line(result)
        assert "loaded" not in result.stderr  # model A never loaded
    gone = cli("compare", "Hello world", "-m", tiny_model_dir, "--against-endpoint", "http://127.0.0.1:9")
    assert gone.exit_code == 1 and "cannot reach" in one_error_line(gone) and "loaded" not in gone.stderr


def test_a_score_answer_with_settings_llmscope_refuses(cli, hostile: Hostile, tiny_model_dir: Any) -> None:
    from llmscope.core.model_info import to_plain
    from llmscope.inspection.scoring import ScoreSettings, score_text
    from llmscope.loading.loader import load_model

    result = to_plain(score_text(load_model(str(tiny_model_dir), device="cpu"), "Hello world", ScoreSettings()))
    hostile.json_route("/llmscope/v1/score", {"model_info": INFO, "result": result})
    good = cli("score", "Hello world", "--endpoint", hostile.url, "--json")
    assert good.exit_code == 0 and good.json()["summary"]["perplexity"] == result["perplexity"]
    result["settings"]["top_k"] = -1
    hostile.json_route("/llmscope/v1/score", {"model_info": INFO, "result": result})
    refused = cli("score", "Hello world", "--endpoint", hostile.url)
    assert refused.exit_code == 1 and "with a value llmscope refuses: --top-k" in one_error_line(refused)


def test_compare_against_a_wrong_logprobs_answer(cli, hostile: Hostile, tiny_model_dir: Any) -> None:
    def logprobs(handler: Any) -> Answer:
        request = json.loads(handler.body)
        if not request:  # the check before model A loads: the route is there
            return 400, {}, json.dumps({"error": {"message": "'text' is required"}}).encode()
        rows = sum(end - first for _, end, first in request["plan"]) + int(request["next_token"])
        head = {"model_info": INFO, "result": {"vocab": 7, "rows": rows}}
        line = {"targets": list(range(rows)), "contexts": list(range(rows)), "rows_base64": "AAAAAA=="}
        return 200, {}, (json.dumps(head) + "\n" + json.dumps(line) + "\n").encode()

    hostile.routes["/llmscope/v1/logprobs"] = logprobs
    result = cli("compare", "Hello world, hello again.", "-m", tiny_model_dir, "--against-endpoint", hostile.url)
    assert result.exit_code == 1
    assert "rows of 7 log-probabilities in 4 bytes, where" in one_error_line(result)
