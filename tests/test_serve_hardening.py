"""`llmscope serve` against a hostile or careless client: a real uvicorn server on 127.0.0.1 port 0, run in this
process so that a test can hold the model (or the tokenizer) at a gate and see what the server does meanwhile.
Every wait is on an event (a gate entered, a job cancelled, a connection closed), never on a clock."""

from __future__ import annotations

import asyncio
import http.client
import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

WAIT = 120  # seconds before an awaited event counts as never coming (a failure, not a timing assumption)


class Gate:
    """A forward pre-hook on the model: counts forward passes and, while closed, holds each one until opened."""

    def __init__(self, model: Any, closed: bool = True) -> None:
        self.calls = 0
        self.entered = threading.Event()
        self.opened = threading.Event()
        if not closed:
            self.opened.set()
        self.handle = model.register_forward_pre_hook(self)

    def __call__(self, _module: Any, _args: Any) -> None:
        self.calls += 1
        self.entered.set()
        assert self.opened.wait(WAIT), "the gate was never opened"

    def remove(self) -> None:
        self.opened.set()
        self.handle.remove()


class InProcessServer:
    """build_server's uvicorn server on a thread, listening on a free port of 127.0.0.1."""

    def __init__(self, loaded: Any, **fields: Any) -> None:
        from llmscope.server.config import ServeSettings
        from llmscope.server.lifecycle import bind, build_server

        self.settings = ServeSettings(port=0, **fields)
        self.log: list[str] = []
        self.sock = bind("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.server, self.engine = build_server(loaded, self.settings, self.log.append)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        assert self.server.ready.wait(WAIT), "the server never started"

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                raw: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=WAIT)
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        sent = {"Content-Type": "application/json"} if data is not None else {}
        sent.update(headers or {})
        connection.request(method, path, body=data, headers=sent)
        response = connection.getresponse()
        status, got, content = response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        connection.close()
        return status, got, content

    def post(self, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
        status, _, content = self.request("POST", path, body, raw=raw)
        return status, json.loads(content)

    def running_job(self) -> Any:
        """The job the engine runs now (the test has made sure there is one)."""
        with self.engine._lock:
            return self.engine._running[0]

    def stop(self) -> None:
        self.server.handle_exit(signal.SIGTERM, None)
        self.thread.join(WAIT)
        self.engine.close(0)
        self.sock.close()


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path) -> Any:
    from llmscope.loading.loader import load_model

    return load_model(str(tiny_model_dir), device="cpu", dtype="float32")


@pytest.fixture
def served(loaded: Any) -> Iterator[InProcessServer]:
    server = InProcessServer(loaded)
    yield server
    server.stop()


def in_thread(work: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """Run work() on a thread; its result (or error) lands in the returned dict."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = work()
        except BaseException as error:  # handed to the test
            out["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


# ---------------------------------------------------------------------------------------------- 1: the loop


def test_health_answers_while_a_prompt_is_being_tokenized(served: InProcessServer,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from llmscope.generation import prompts

    entered, opened = threading.Event(), threading.Event()
    original = prompts.prompt_ids

    def held_prompt_ids(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        assert opened.wait(WAIT)
        return original(*args, **kwargs)

    monkeypatch.setattr(prompts, "prompt_ids", held_prompt_ids)
    thread, out = in_thread(lambda: served.post("/v1/completions", {"prompt": "Hello", "max_tokens": 2}))
    try:
        assert entered.wait(WAIT)  # the request is tokenizing its prompt, and cannot finish until opened
        status, _, content = served.request("GET", "/health")
        assert status == 200 and json.loads(content)["status"] == "ok"
        assert thread.is_alive() and not out
    finally:
        opened.set()
    thread.join(WAIT)
    assert out["result"][0] == 200, out


def test_health_answers_while_a_score_job_runs(served: InProcessServer, loaded: Any) -> None:
    gate = Gate(loaded.model)
    try:
        thread, out = in_thread(lambda: served.post("/llmscope/v1/score", {"text": "Hello world, hello again"}))
        assert gate.entered.wait(WAIT)
        assert served.request("GET", "/health")[0] == 200
        assert thread.is_alive()
    finally:
        gate.remove()
    thread.join(WAIT)
    assert out["result"][0] == 200


# ---------------------------------------------------------------------------------------------- 2: caps


@pytest.mark.parametrize("path, body, words", [
    ("/llmscope/v1/next-token", {"prompt": "Hi", "top_k": 101}, "--max-top-k"),
    ("/llmscope/v1/next-token", {"prompt": "Hi", "steps": 65}, "--max-steps"),
    ("/llmscope/v1/score", {"text": "Hello world", "options": {"top_k": 101}}, "--max-top-k"),
    ("/llmscope/v1/generate", {"prompt": "Hi", "options": {"logprobs": 101}}, "--max-top-k"),
    ("/llmscope/v1/next-token", {"prompt": "Hi", "top_k": 100, "steps": 64}, "--max-answer-bytes"),
    ("/v1/completions", {"prompt": "Hi", "max_tokens": 30}, "--max-tokens"),
    ("/llmscope/v1/score", {"text": "Hello world " * 20}, "--max-tokens"),
    ("/v1/completions", {"prompt": ["Hi"] * 9, "max_tokens": 1}, "--max-queue"),
    ("/v1/completions", {"prompt": "x" * 100_000, "max_tokens": 1}, "characters make at least"),  # not tokenized
])
def test_requests_past_the_caps_are_400_before_any_work(loaded: Any, path: str, body: dict[str, Any],
                                                         words: str) -> None:
    server = InProcessServer(loaded, max_tokens=24, max_answer_bytes=64 * 1024, max_queue=8)
    gate = Gate(loaded.model, closed=False)
    try:
        status, answer = server.post(path, body)
        assert status == 400, answer
        assert words in answer["error"]["message"] and set(answer["error"]) == {"message", "type", "param", "code"}
        assert gate.calls == 0  # refused before the model ran
    finally:
        gate.remove()
        server.stop()


def test_a_job_past_its_time_budget_stops_at_its_next_forward_pass(loaded: Any) -> None:
    server = InProcessServer(loaded, job_timeout=0.1)
    gate = Gate(loaded.model)
    try:
        thread, out = in_thread(lambda: server.post("/llmscope/v1/generate", {
            "prompt": "Hello", "options": {"max_new_tokens": 40}}))
        assert gate.entered.wait(WAIT)
        job = server.running_job()
        while not job.expired(time.monotonic()):  # the first forward pass is held until the budget is spent
            time.sleep(0.01)
        gate.opened.set()
        thread.join(WAIT)
        status, answer = out["result"]
        assert status == 504 and answer["error"]["code"] == "timeout" and "--job-timeout" in answer["error"]["message"]
        assert gate.calls == 1
        assert server.engine.stats.timed_out == 1
    finally:
        gate.remove()
        server.stop()


# ---------------------------------------------------------------------------------------------- 3: cancel


@pytest.mark.parametrize("path, body", [
    ("/llmscope/v1/score", {"text": "Hello world, the capital of France is Paris. " * 8,
                            "options": {"window": 16, "stride": 8}}),
    ("/llmscope/v1/generate", {"prompt": "Hello", "options": {"max_new_tokens": 60}}),
])
def test_a_client_that_goes_away_stops_its_job(served: InProcessServer, loaded: Any, path: str,
                                               body: dict[str, Any]) -> None:
    gate = Gate(loaded.model)
    try:
        client = socket.create_connection(("127.0.0.1", served.port), timeout=WAIT)
        data = json.dumps(body).encode()
        client.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                       f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        assert gate.entered.wait(WAIT)  # its first forward pass is held
        job = served.running_job()
        client.close()  # the client goes away
        assert job.cancelled.wait(WAIT)
        gate.opened.set()
        # The engine runs one job at a time: once the next request is answered, the abandoned one has ended.
        status, answer = served.post("/llmscope/v1/next-token", {"prompt": "Hi"})
        assert status == 200, answer
        assert gate.calls == 2  # the held pass (never run) and next-token's one
        assert served.engine.stats.cancelled == 1
    finally:
        gate.remove()


# ---------------------------------------------------------------------------------------------- 4: connections


def _closed_by_server(sock: socket.socket) -> bool:
    """True once the server closes the connection (recv returns b""); a recv timeout counts as not closed."""
    sock.settimeout(WAIT)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_idle_and_half_sent_connections_are_closed(loaded: Any) -> None:
    server = InProcessServer(loaded, header_timeout=0.5)
    try:
        idle = socket.create_connection(("127.0.0.1", server.port))
        half = socket.create_connection(("127.0.0.1", server.port))
        half.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-")
        assert _closed_by_server(idle) and _closed_by_server(half)
        assert server.request("GET", "/health")[0] == 200  # the server still serves
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------- 6: browsers


def test_only_this_servers_host_names_are_answered(loaded: Any) -> None:
    server = InProcessServer(loaded, allowed_hosts=("box.lan",))
    try:
        port = server.port
        for host in ("evil.example", f"evil.example:{port}", "localhost.evil.example"):
            for method, path in (("GET", "/health"), ("POST", "/v1/completions"), ("GET", "/any/page")):
                status, _, content = server.request(method, path, {"prompt": "Hi"} if method == "POST" else None,
                                                    headers={"Host": host})
                assert status == 400 and json.loads(content)["error"]["code"] == "host_not_allowed", (host, path)
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST", f"[::1]:{port}", "box.lan",
                     f"10.1.2.3:{port}"):
            assert server.request("GET", "/health", headers={"Host": host})[0] == 200, host
    finally:
        server.stop()


def test_posts_must_be_json_and_no_cors_is_granted(served: InProcessServer) -> None:
    body = json.dumps({"prompt": "Hi", "max_tokens": 1}).encode()
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        status, headers, content = served.request("POST", "/v1/completions", raw=body,
                                                   headers={"Content-Type": kind, "Origin": "http://evil.example"})
        assert status == 415 and json.loads(content)["error"]["code"] == "unsupported_media_type"
        assert not any(name.startswith("access-control-") for name in headers)
    status, headers, _ = served.request("OPTIONS", "/v1/completions", headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert status >= 400 and not any(name.startswith("access-control-") for name in headers)
    status, headers, _ = served.request("POST", "/v1/completions", raw=body, headers={
        "Content-Type": "application/json; charset=utf-8", "Origin": "http://evil.example"})
    assert status == 200 and not any(name.startswith("access-control-") for name in headers)


# ---------------------------------------------------------------------------------------------- 9: shutdown


def test_shutdown_answers_what_is_left_with_503_and_ends_streams(loaded: Any,
                                                                 capfd: pytest.CaptureFixture[str]) -> None:
    server = InProcessServer(loaded, shutdown_timeout=1.0)
    gate = Gate(loaded.model)
    try:
        plain, plain_out = in_thread(lambda: server.request("POST", "/v1/completions", {
            "prompt": "Hello", "max_tokens": 50, "temperature": 0}))
        assert gate.entered.wait(WAIT)  # the first request holds the model
        streamed, stream_out = in_thread(lambda: server.request("POST", "/v1/completions", {
            "prompt": "Hi", "max_tokens": 50, "temperature": 0, "stream": True}))
        while server.engine.queued == 0:  # the stream's job is queued behind it
            assert streamed.is_alive()
            time.sleep(0.01)
        server.server.handle_exit(signal.SIGTERM, None)  # what SIGTERM calls
        server.thread.join(WAIT)
        assert not server.thread.is_alive()  # the server stopped while the model was still held
        assert not gate.opened.is_set()
        plain.join(WAIT)
        streamed.join(WAIT)
        status, headers, content = plain_out["result"]
        assert status == 503 and headers["content-type"] == "application/json"
        assert json.loads(content)["error"]["code"] == "shutting_down"
        status, _, content = stream_out["result"]
        events = [line[6:] for line in content.decode().splitlines() if line.startswith("data: ")]
        assert status == 200 and events[-1] == "[DONE]"
        assert json.loads(events[-2])["error"]["code"] == "shutting_down"
    finally:
        gate.remove()
        server.stop()
    assert "Traceback" not in capfd.readouterr().err


# ---------------------------------------------------------------------------------------------- 10: validation


@pytest.mark.parametrize("path, raw", [
    ("/v1/completions", b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    ("/v1/completions", b'{"prompt": "\\ud800", "max_tokens": 1}'),
    ("/llmscope/v1/tokenize", b'{"text": "a\\udfffb"}'),
    ("/llmscope/v1/score", b'{"text": "Hello world", "options": {"window": 2.5}}'),
    ("/llmscope/v1/generate", b'{"prompt": 5}'),
    ("/llmscope/v1/generate", b'{"prompt": "Hi", "options": {"max_new_tokens": 2.5}}'),
    ("/llmscope/v1/generate", b'{"prompt": "Hi", "options": {"do_sample": "no"}}'),
    ("/llmscope/v1/generate", b'{"prompt": "Hi", "options": {"use_cache": "no"}}'),
    ("/llmscope/v1/generate", b'{"prompt": "Hi", "options": {"seed": true}}'),
    ("/llmscope/v1/score", b'{"text": "Hello world", "options": {"top_k": "5"}}'),
    ("/llmscope/v1/logprobs", b'{"text": "Hello", "ids": [1], "plan": [[0, 1, 1]], "next_token": "no"}'),
])
def test_malformed_requests_are_400(served: InProcessServer, path: str, raw: bytes) -> None:
    status, answer = served.post(path, raw=raw)
    assert status == 400, answer
    assert set(answer["error"]) == {"message", "type", "param", "code"}


# ---------------------------------------------------------------------------------------------- 13: smaller


def test_chat_default_budget_is_clipped_to_the_context(served: InProcessServer, loaded: Any) -> None:
    long_message = "Hello world, the capital of France is Paris. " * 4  # its tokens + 256 pass the 256 context
    status, answer = served.post("/v1/chat/completions", {"messages": [{"role": "user", "content": long_message}],
                                                          "temperature": 0})
    assert status == 200, answer
    usage = answer["usage"]
    assert usage["prompt_tokens"] + usage["completion_tokens"] <= 256
    status, answer = served.post("/v1/chat/completions", {"messages": [{"role": "user", "content": long_message}],
                                                          "max_tokens": 256})
    assert status == 400  # a budget asked for is checked, not clipped


def test_stream_options_include_usage(served: InProcessServer) -> None:
    for path, body in (("/v1/completions", {"prompt": "Hi"}),
                       ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]})):
        body = dict(body, max_tokens=3, temperature=0, stream=True, stream_options={"include_usage": True})
        status, _, content = served.request("POST", path, body)
        events = [line[6:] for line in content.decode().splitlines() if line.startswith("data: ")]
        assert status == 200 and events[-1] == "[DONE]"
        last = json.loads(events[-2])
        assert last["choices"] == [] and last["usage"]["completion_tokens"] >= 1
        assert last["usage"]["total_tokens"] == last["usage"]["prompt_tokens"] + last["usage"]["completion_tokens"]


def test_stop_matcher_finds_what_a_plain_search_finds() -> None:
    import random

    from llmscope.server.engine import StopMatcher

    draw = random.Random(5)
    for _ in range(400):
        stops = tuple("".join(draw.choice("ab") for _ in range(draw.randint(1, 5))) for _ in range(draw.randint(1, 4)))
        matcher, text, found = StopMatcher(stops), "", None
        while found is None and len(text) < 40:
            delta = "".join(draw.choice("abc") for _ in range(draw.randint(0, 3)))
            found = matcher.feed(delta, len(text))
            text += delta
            plain = [text.find(stop) for stop in stops if stop in text]
            assert found == (min(plain) if plain else None), (stops, text)
            if found is None:  # what a stream holds back: the longest tail that starts a stop string
                assert matcher.held == max((size for stop in stops for size in range(1, len(stop))
                                            if text.endswith(stop[:size])), default=0)


def test_a_bad_host_is_refused_before_the_load(cli: Any, tmp_path: Path) -> None:
    result = cli("serve", "-m", str(tmp_path / "no-model-here"), "--host", "no-such-host.invalid", "--check")
    assert result.exit_code != 0 and "--host no-such-host.invalid" in result.stderr


# ---------------------------------------------------------------------------------------------- 5: positions


def test_a_finished_row_stops_consuming_positions(tmp_path_factory: pytest.TempPathFactory) -> None:
    """GPT-2 with 40 learned positions: a 34-token prompt with 6 new tokens batched with a short prompt with 38
    used to feed the finished row past position 39 (IndexError for both); each row now gets its own run."""
    from conftest import build_tiny_model

    from llmscope.core.command_settings import GenerationSettings
    from llmscope.generation.generate import generate_encoded
    from llmscope.generation.prompts import EncodedPrompt, encode_prompt
    from llmscope.loading.loader import load_model
    from llmscope.server.engine import Engine, GenerateWork, Job

    folder = build_tiny_model(tmp_path_factory.mktemp("gpt2-40"), "gpt2", n_positions=40)
    gpt2 = load_model(str(folder), device="cpu", dtype="float32")
    ids = tuple(gpt2.tokenizer("Hello world, the capital of France is Paris. " * 6)["input_ids"][:34])
    long = EncodedPrompt(prompt="long", text=gpt2.tokenizer.decode(ids), ids=ids, chat=False)
    short = encode_prompt(gpt2, "Hi", new_tokens=38)
    assert len(long.ids) == 34 and len(short.ids) + 38 <= 40

    async def run() -> list[Any]:
        engine = Engine(gpt2, max_batch=8)
        loop = asyncio.get_running_loop()
        jobs = [Job(kind="generate", key=("generate", False), loop=loop, future=loop.create_future(),
                    payload=GenerateWork(prompt, GenerationSettings(max_new_tokens=budget)))
                for prompt, budget in ((long, 6), (short, 38))]
        for job in jobs:  # queued before the worker starts: one batch
            engine.submit(job)
        engine.start()
        results = await asyncio.gather(*(job.future for job in jobs))
        engine.close(5)
        assert engine.stats.batches == 1
        return results

    first, second = asyncio.run(run())
    assert first.new_tokens == 6 and second.new_tokens > 6  # the long row finished while the short one ran on
    for prompt, budget, result in ((long, 6, first), (short, 38, second)):
        alone = generate_encoded(gpt2, [prompt], GenerationSettings(max_new_tokens=budget))[0]
        assert result.token_ids == alone.token_ids
        assert result.finish_reason in ("length", "eos")
