"""`llmscope serve` as a real subprocess on 127.0.0.1 (port 0), with the official openai client and raw HTTP:
answers equal the library's own run, streaming equals non-streaming, errors have OpenAI's shape and status, and
SIGTERM exits 0. The batching queue and cancellation are checked on the engine itself (no timing involved)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

KEY = "test-key"


class Server:
    def __init__(self, process: subprocess.Popen[str], url: str, log: list[str]) -> None:
        self.process, self.url, self.log = process, url, log

    def request(self, path: str, body: Any = None, key: str | None = KEY, raw: bytes | None = None
                ) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.url + path, data=data, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())


def start_server(model: Path, *extra: str) -> Server:
    """Start `llmscope serve` and return once it prints its address (the event, read from stderr)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "llmscope", "serve", "-m", str(model), "--port", "0", "--threads", "1", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log: list[str] = []
    assert process.stderr is not None
    for line in process.stderr:
        log.append(line)
        if line.startswith("listening on "):
            break
    else:
        raise AssertionError("serve exited before listening:\n" + "".join(log))
    threading.Thread(target=lambda: log.extend(process.stderr), daemon=True).start()  # type: ignore[arg-type]
    return Server(process, line.split("listening on ", 1)[1].strip(), log)


def stop_server(server: Server) -> int:
    server.process.send_signal(signal.SIGTERM)
    return server.process.wait(timeout=60)


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path) -> Iterator[Server]:
    running = start_server(tiny_model_dir, "--api-key", KEY)
    yield running
    assert stop_server(running) == 0, "".join(running.log)


@pytest.fixture(scope="module")
def local(tiny_model_dir: Path) -> Any:
    from llmscope.loading.loader import load_model

    return load_model(str(tiny_model_dir), device="cpu", dtype="float32")


@pytest.fixture
def client(server: Server) -> Any:
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)


# ---------------------------------------------------------------------------------------------- OpenAI routes


def test_models_lists_the_served_model(client: Any, tiny_model_dir: Path) -> None:
    assert [model.id for model in client.models.list().data] == [str(tiny_model_dir)]


def test_greedy_completion_is_the_library_generation(client: Any, local: Any, tiny_model_dir: Path) -> None:
    from llmscope.core.command_settings import GenerationSettings
    from llmscope.generation.generate import generate

    answer = client.completions.create(model=str(tiny_model_dir), prompt="The capital of France is", max_tokens=6,
                                       temperature=0, logprobs=3)
    expected = generate(local, "The capital of France is", GenerationSettings(max_new_tokens=6, logprobs=3))
    choice = answer.choices[0]
    assert choice.text == expected.text
    assert choice.logprobs.token_logprobs == pytest.approx([t.logprob for t in expected.tokens], abs=1e-5)
    assert list(choice.logprobs.top_logprobs[0].values()) == pytest.approx(
        [a.logprob for a in expected.tokens[0].top], abs=1e-5)
    assert answer.usage.completion_tokens == 6 and choice.finish_reason == "length"


def test_streaming_delivers_the_same_tokens(client: Any, tiny_model_dir: Path) -> None:
    common = dict(model=str(tiny_model_dir), max_tokens=8, temperature=0.8, seed=7)
    whole = client.completions.create(prompt=["Hello world", "Write an email"], **common)
    for index, prompt in enumerate(["Hello world", "Write an email"]):
        streamed = "".join(c.choices[0].text for c in client.completions.create(prompt=prompt, stream=True, **common))
        assert streamed == whole.choices[index].text
    messages = [{"role": "user", "content": "Hello"}]
    chat = client.chat.completions.create(messages=messages, **common)
    pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
        messages=messages, stream=True, **common) if c.choices]
    assert "".join(pieces) == chat.choices[0].message.content


def test_stop_strings_end_the_text_before_them(client: Any, tiny_model_dir: Path) -> None:
    free = client.completions.create(model=str(tiny_model_dir), prompt="Hello", max_tokens=12, temperature=0)
    stop = free.choices[0].text[3:5]
    assert stop
    stopped = client.completions.create(model=str(tiny_model_dir), prompt="Hello", max_tokens=12, temperature=0,
                                        stop=[stop])
    assert stopped.choices[0].text == free.choices[0].text[: free.choices[0].text.find(stop)]
    assert stopped.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=str(tiny_model_dir), prompt="Hello", max_tokens=12, temperature=0, stop=[stop], stream=True))
    assert streamed == stopped.choices[0].text


def test_echo_gives_the_prompt_log_probabilities_of_score(client: Any, local: Any, tiny_model_dir: Path) -> None:
    from llmscope.inspection.scoring import score_text

    answer = client.completions.create(model=str(tiny_model_dir), prompt="Hello world", max_tokens=0, echo=True,
                                       logprobs=1)
    logprobs = answer.choices[0].logprobs
    assert answer.choices[0].text == "Hello world"
    assert logprobs.token_logprobs[0] is None
    scored = score_text(local, "Hello world")  # no BOS in the tiny tokenizer: the first token is context only
    assert logprobs.token_logprobs[1:] == pytest.approx([t.logprob for t in scored.tokens], abs=1e-5)


def test_chat_logprobs(client: Any, tiny_model_dir: Path) -> None:
    answer = client.chat.completions.create(model=str(tiny_model_dir), messages=[{"role": "user", "content": "Hi"}],
                                            max_tokens=3, temperature=0, logprobs=True, top_logprobs=2)
    content = answer.choices[0].logprobs.content
    assert len(content) == 3 and all(len(entry.top_logprobs) == 2 for entry in content)
    assert content[0].top_logprobs[0].logprob >= content[0].top_logprobs[1].logprob


# ---------------------------------------------------------------------------------------------- errors


def test_errors_have_openai_shape_and_status(server: Server, tiny_model_dir: Path) -> None:
    cases = [
        (server.request("/v1/models", key="wrong"), 401),
        (server.request("/v1/models", key=None), 401),
        (server.request("/v1/completions", raw=b"{not json"), 400),
        (server.request("/v1/completions", {"prompt": "Hi", "temperature": 5}), 400),
        (server.request("/v1/completions", {"prompt": ""}), 400),
        (server.request("/v1/completions", {"prompt": "Hi", "model": "another"}), 404),
        (server.request("/v1/nothing", {"prompt": "Hi"}), 404),
        (server.request("/v1/completions", {"prompt": "Hi " * 400}), 400),  # past the 256-token context
        (_declared_too_large(server), 413),
    ]
    for (status, body), expected in cases:
        assert status == expected, body
        assert set(body["error"]) == {"message", "type", "param", "code"} and body["error"]["message"]
    assert server.request("/health", key=None)[0] == 200  # health needs no key


def _declared_too_large(server: Server) -> tuple[int, Any]:
    """A request that declares a 5 MiB body: refused from its headers, before the body is read."""
    import http.client
    from urllib.parse import urlsplit

    address = urlsplit(server.url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=60)
    connection.putrequest("POST", "/v1/completions")
    connection.putheader("Authorization", f"Bearer {KEY}")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(5 * 1024 * 1024))
    connection.endheaders()
    response = connection.getresponse()
    status, body = response.status, json.loads(response.read())
    connection.close()
    return status, body


def test_wrong_key_is_401_for_the_openai_client(server: Server) -> None:
    openai = pytest.importorskip("openai")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0).models.list()


def test_a_client_that_goes_away_stops_its_generation(server: Server) -> None:
    import http.client
    import time
    from urllib.parse import urlsplit

    before = server.request("/health")[1]["cancelled"]
    address = urlsplit(server.url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=60)
    connection.request("POST", "/v1/completions", body=json.dumps(
        {"prompt": "Hi", "max_tokens": 240, "temperature": 0, "stream": True}),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
    response = connection.getresponse()
    assert response.readline().startswith(b"data: {")
    connection.sock.shutdown(2)  # the client goes away after its first token
    connection.close()
    deadline = time.monotonic() + 60  # wait for the server to say so (no fixed sleep)
    while server.request("/health")[1]["cancelled"] == before:
        assert time.monotonic() < deadline, "the generation was not cancelled"
        time.sleep(0.05)


def test_requests_are_logged_on_stderr(server: Server) -> None:
    server.request("/health", key=None)
    assert any('"GET /health" 200' in line for line in server.log)


# ---------------------------------------------------------------------------------------------- the engine


def _generate_jobs(local: Any, loop: asyncio.AbstractEventLoop, prompts: list[str], tokens: int) -> list[Any]:
    from llmscope.core.command_settings import GenerationSettings
    from llmscope.generation.prompts import encode_prompt
    from llmscope.server.engine import GenerateWork, Job

    settings = GenerationSettings(max_new_tokens=tokens)
    return [Job(kind="generate", key=("generate", False), loop=loop, future=loop.create_future(),
                payload=GenerateWork(encode_prompt(local, p, new_tokens=tokens), settings)) for p in prompts]


def test_queued_requests_run_as_one_batch_with_single_run_answers(local: Any) -> None:
    from llmscope.core.command_settings import GenerationSettings
    from llmscope.generation.generate import generate
    from llmscope.server.engine import Engine

    prompts = ["Hello", "The capital of Italy is", "Write an email to Sarah."]

    async def run() -> tuple[list[Any], Engine]:
        engine = Engine(local, max_batch=8)
        jobs = _generate_jobs(local, asyncio.get_running_loop(), prompts, 5)
        for job in jobs:  # queued before the worker starts: they arrive "while a batch runs"
            engine.submit(job)
        engine.start()
        results = await asyncio.gather(*(job.future for job in jobs))
        engine.close(5)
        return results, engine

    results, engine = asyncio.run(run())
    assert engine.stats.batches == 1 and engine.stats.largest_batch == 3
    for prompt, result in zip(prompts, results):
        assert result.token_ids == generate(local, prompt, GenerationSettings(max_new_tokens=5)).token_ids


def test_a_full_queue_is_503_and_a_cancelled_job_stops(local: Any) -> None:
    from llmscope.server.engine import Engine
    from llmscope.server.openai_shapes import ApiError

    async def run() -> Any:
        engine = Engine(local, max_batch=8, max_queue=1)
        loop = asyncio.get_running_loop()
        first, second = _generate_jobs(local, loop, ["Hello", "Hello"], 200)
        engine.submit(first)
        with pytest.raises(ApiError) as refused:
            engine.submit(second)
        assert refused.value.status == 503
        emitted = first.emit

        def emit_and_leave(item: Any) -> None:  # the client goes away after its first token
            first.cancelled.set()
            emitted(item)

        first.emit = emit_and_leave  # type: ignore[method-assign]
        engine.start()
        result = await first.future
        engine.close(5)
        return result

    result = asyncio.run(run())
    assert result.finish_reason == "cancelled" and result.new_tokens == 1


def test_sigterm_with_a_stream_in_flight_exits_0(tiny_model_dir: Path) -> None:
    """SIGTERM while a stream runs: the server stops accepting, the stream finishes (or ends with an error event and
    [DONE] after the shutdown time) and the process exits 0."""
    import http.client
    from urllib.parse import urlsplit

    running = start_server(tiny_model_dir, "--shutdown-timeout", "2", "--json")
    address = urlsplit(running.url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=60)
    connection.request("POST", "/v1/completions", body=json.dumps(
        {"prompt": "Hi", "max_tokens": 240, "temperature": 0, "stream": True}),
        headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200
    first = response.readline()
    assert first.startswith(b"data: {")
    assert stop_server(running) == 0, "".join(running.log)
    rest = response.read()  # the rest of the stream: finished, or cut by the shutdown time with an error event
    assert rest.rstrip().endswith(b"data: [DONE]")
    if b'"error"' in rest:
        assert b'"shutting_down"' in rest or b"shutting down" in rest
    with pytest.raises(OSError):
        urllib.request.urlopen(running.url + "/health", timeout=10)
    assert running.process.stdout is not None
    summary = json.loads(running.process.stdout.read())  # --json: what was served, once it stopped
    assert summary["command"] == "serve" and summary["url"] == running.url and summary["requests"] == 1


@pytest.mark.parametrize("body, param", [
    ({"prompt": "Hi", "n": 2}, "n"),
    ({"prompt": "Hi", "logprobs": 21}, "logprobs"),
    ({"prompt": "Hi", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"prompt": "Hi", "max_tokens": 0}, "max_tokens"),  # 0 only with echo
    ({"prompt": "Hi", "top_p": 0}, "top_p"),
    ({"prompt": "Hi", "seed": -1}, "seed"),
    ({"prompt": "Hi", "stream": "yes"}, "stream"),
    ({"prompt": [1, 2, 3]}, "prompt"),
    ({"prompt": "Hi", "frequency_penalty": 0.5}, "frequency_penalty"),  # refused, not silently ignored
    ({"prompt": "Hi", "logit_bias": {"50": 10}}, "logit_bias"),
])
def test_completion_requests_are_checked(body: dict[str, Any], param: str) -> None:
    from llmscope.server.openai_shapes import ApiError, parse_completion

    with pytest.raises(ApiError) as refused:
        parse_completion(body)
    assert refused.value.status == 400 and refused.value.param == param


def test_request_shapes_read_openai_fields() -> None:
    from llmscope.server.openai_shapes import ApiError, parse_chat, parse_completion

    echo = parse_completion({"prompt": ["a", "b"], "max_tokens": 0, "echo": True, "logprobs": 2, "stop": "x"})
    assert echo.prompts == ("a", "b") and echo.sampling.max_tokens == 0 and echo.sampling.stop == ("x",)
    chat = parse_chat({"messages": [{"role": "developer", "content": "Be brief."},
                                    {"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
                       "max_completion_tokens": 5, "temperature": 0, "logprobs": True, "top_logprobs": 3})
    assert chat.messages == (("system", "Be brief."), ("user", "Hi")) and chat.sampling.max_tokens == 5
    assert chat.sampling.greedy and chat.top_logprobs == 3
    with pytest.raises(ApiError):
        parse_chat({"messages": [{"role": "tool", "content": "x"}]})
    with pytest.raises(ApiError):
        parse_chat({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})  # needs logprobs


def test_llmscope_routes_check_their_options(server: Server) -> None:
    assert server.request("/llmscope/v1/score", {"text": "Hi there", "options": {"window": "big"}})[0] == 400
    assert server.request("/llmscope/v1/score", {"text": "Hi there", "options": {"colour": 1}})[0] == 400
    assert server.request("/llmscope/v1/next-token", {"prompt": "Hi", "top_k": 100000})[0] == 400  # > vocabulary
    status, body = server.request("/llmscope/v1/tokenize", {"text": "Hello world"})
    assert status == 200 and body["result"]["token_count"] == len(body["result"]["tokens"]) > 0
    assert body["model_info"]["device"] == "cpu"
