"""`llmscope serve` over HTTP: as a subprocess with the openai client (answers equal the library's, streaming,
errors in OpenAI's shape, SIGTERM), and in this process behind gates to see what it does meanwhile (caps, cancel)."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.inprocess_server import WAIT, Gate, InProcessServer, in_thread
from helpers.servers import KEY, Server, concurrent_logprobs, start_server, stop_server

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path) -> Iterator[Server]:
    running = start_server(tiny_model_dir, "--api-key", KEY)
    yield running
    assert stop_server(running) == 0, "".join(running.log)


@pytest.fixture
def client(server: Server) -> Any:
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)


def _declared_too_large(server: Server) -> tuple[int, Any]:
    """A request that declares a 5 MiB body: refused from its headers, before the body is read."""
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


def _closed_by_server(sock: socket.socket) -> bool:
    """True once the server closes the connection (recv returns b""); a recv timeout counts as not closed."""
    sock.settimeout(WAIT)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_serve_with_8_concurrent_clients_returns_the_lone_logprobs(server: Server) -> None:
    concurrent_logprobs(server, 6)


def test_models_lists_the_served_model(client: Any, tiny_model_dir: Path) -> None:
    assert [model.id for model in client.models.list().data] == [str(tiny_model_dir)]


def test_greedy_completion_is_the_library_generation(client: Any, tiny: Any, tiny_model_dir: Path) -> None:
    from llmscope.core.command_settings import GenerationSettings
    from llmscope.generation.generate import generate

    answer = client.completions.create(model=str(tiny_model_dir), prompt="The capital of France is", max_tokens=6,
                                       temperature=0, logprobs=3)
    expected = generate(tiny, "The capital of France is", GenerationSettings(max_new_tokens=6, logprobs=3))
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


def test_echo_gives_the_prompt_log_probabilities_of_score(client: Any, tiny: Any, tiny_model_dir: Path) -> None:
    from llmscope.inspection.scoring import score_text

    answer = client.completions.create(model=str(tiny_model_dir), prompt="Hello world", max_tokens=0, echo=True,
                                       logprobs=1)
    logprobs = answer.choices[0].logprobs
    assert answer.choices[0].text == "Hello world"
    assert logprobs.token_logprobs[0] is None
    scored = score_text(tiny, "Hello world")  # no BOS in the tiny tokenizer: the first token is context only
    assert logprobs.token_logprobs[1:] == pytest.approx([t.logprob for t in scored.tokens], abs=1e-5)


def test_chat_logprobs(client: Any, tiny_model_dir: Path) -> None:
    answer = client.chat.completions.create(model=str(tiny_model_dir), messages=[{"role": "user", "content": "Hi"}],
                                            max_tokens=3, temperature=0, logprobs=True, top_logprobs=2)
    content = answer.choices[0].logprobs.content
    assert len(content) == 3 and all(len(entry.top_logprobs) == 2 for entry in content)
    assert content[0].top_logprobs[0].logprob >= content[0].top_logprobs[1].logprob


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


def test_wrong_key_is_401_for_the_openai_client(server: Server) -> None:
    openai = pytest.importorskip("openai")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0).models.list()


def test_a_client_that_goes_away_stops_its_generation(server: Server) -> None:
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


def test_sigterm_with_a_stream_in_flight_exits_0(tiny_model_dir: Path) -> None:
    """SIGTERM while a stream runs: the server stops accepting, the stream finishes (or ends with an error event and
    [DONE] after the shutdown time) and the process exits 0."""
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


def test_llmscope_routes_check_their_options(server: Server) -> None:
    assert server.request("/llmscope/v1/score", {"text": "Hi there", "options": {"window": "big"}})[0] == 400
    assert server.request("/llmscope/v1/score", {"text": "Hi there", "options": {"colour": 1}})[0] == 400
    assert server.request("/llmscope/v1/next-token", {"prompt": "Hi", "top_k": 100000})[0] == 400  # > vocabulary
    status, body = server.request("/llmscope/v1/tokenize", {"text": "Hello world"})
    assert status == 200 and body["result"]["token_count"] == len(body["result"]["tokens"]) > 0
    assert body["model_info"]["device"] == "cpu"


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
