"""The server's limits against a fault probe's repros: idle sockets cannot lock real clients out, /health says only
"up" without the key, the explore page has a key story, a request that cannot finish in its budget is refused before
it runs, a long pass stops inside when its budget is spent or its client leaves, explore obeys --max-steps, and the
logprobs answer is streamed in lines within --max-answer-bytes. A real uvicorn server on 127.0.0.1 in this process;
every wait is on an event (a gate entered, a connection closed, a counter moved), never on a clock."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers.inprocess_server import WAIT, Counter, Gate, InProcessServer, in_thread, wait_until

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

KEY = "limits-key"


def blocks(loaded: Any) -> Any:
    return loaded.model.model.layers


def _closed_by_server(sock: socket.socket) -> bool:
    """True once the server closes the connection (recv returns b""); a recv timeout counts as not closed."""
    sock.settimeout(WAIT)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


# ---------------------------------------------------------------------------------------------- connections


class IdleFlood:
    """`count` TCP connections to 127.0.0.1 that send nothing, each reopened as soon as the server closes it (the
    probe's lockout), until stopped. `closed` is set once the server has closed one of them."""

    def __init__(self, port: int, count: int) -> None:
        self.port, self.count = port, count
        self.closed = threading.Event()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._hold, daemon=True) for _ in range(count)]
        for thread in self.threads:
            thread.start()

    def _hold(self) -> None:
        while not self.stopping.is_set():
            try:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=WAIT)
            except OSError:
                continue
            with sock:
                sock.settimeout(0.2)  # to notice `stopping`; the server's close is the event waited for
                while not self.stopping.is_set():
                    try:
                        if sock.recv(1) == b"":
                            break
                    except TimeoutError:
                        continue
                    except OSError:
                        break
            self.closed.set()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(WAIT)


def test_idle_connections_cannot_lock_real_clients_out(loaded: Any) -> None:
    """Three times --max-connections of idle sockets, reopened as they are closed: /health still answers every
    time (it used to answer 1 try in 30: the newcomer was the one closed)."""
    server = InProcessServer(loaded, max_connections=8, header_timeout=600)
    flood = IdleFlood(server.port, 24)
    try:
        assert flood.closed.wait(WAIT)  # the server is full and closing idle sockets
        for _ in range(10):
            assert server.health()["status"] == "ok"
    finally:
        flood.stop()
        server.stop()


def test_only_a_newcomer_is_closed_when_every_connection_is_being_answered(loaded: Any) -> None:
    server = InProcessServer(loaded, max_connections=2, header_timeout=600, keep_alive_timeout=600)
    gate = Gate(loaded.model)
    try:
        idle = socket.create_connection(("127.0.0.1", server.port))
        busy, busy_out = in_thread(lambda: server.post("/llmscope/v1/next-token", {"prompt": "Hi"}))
        assert gate.entered.wait(WAIT)  # one connection's request holds the model: the idle one can go
        assert server.health()["status"] == "ok"  # a third connection: the idle one was closed for it
        assert _closed_by_server(idle)
        waiting, waiting_out = in_thread(lambda: server.post("/llmscope/v1/next-token", {"prompt": "Hello"}))
        wait_until(lambda: server.engine.queued == 1, "the second request queued")  # both connections busy
        extra = socket.create_connection(("127.0.0.1", server.port))
        assert _closed_by_server(extra)  # no idle connection to close: the newcomer goes
        gate.opened.set()
        for thread, out in ((busy, busy_out), (waiting, waiting_out)):
            thread.join(WAIT)
            assert out["result"][0] == 200, out
    finally:
        gate.remove()
        server.stop()


# ---------------------------------------------------------------------------------------------- keys


def test_health_without_the_key_says_only_that_the_server_is_up(loaded: Any) -> None:
    server = InProcessServer(loaded, api_key=KEY)
    try:
        assert server.health() == {"status": "ok"}  # no model path, no counters
        full = server.health({"Authorization": f"Bearer {KEY}"})
        assert full["model"] == loaded.spec.name and {"requests", "queued", "cancelled", "timed_out"} <= set(full)
        assert server.health({"Authorization": "Bearer wrong"}) == {"status": "ok"}
    finally:
        server.stop()


def test_the_explore_page_takes_the_key_from_its_address_into_a_cookie(loaded: Any) -> None:
    server = InProcessServer(loaded, api_key=KEY)
    try:
        assert server.request("GET", "/explore")[0] == 401
        assert server.request("GET", "/explore?token=wrong")[0] == 401
        status, headers, _ = server.request("GET", f"/explore?token={KEY}")
        assert status == 303 and headers["location"] == "/explore"
        cookie = headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        pair = cookie.split(";", 1)[0]
        assert pair == f"llmscope_key_{server.port}={KEY}"
        assert server.request("GET", "/explore", headers={"Cookie": pair})[0] == 200
        body = {"prompt": "hello world", "shown": 3}
        status, answer = server.post("/llmscope/v1/explore/decode", body, headers={"Cookie": pair})
        assert status == 200 and len(answer["result"]["top"]) == 3
        assert server.post("/llmscope/v1/explore/decode", body)[0] == 401
        assert server.post("/llmscope/v1/explore/decode", body, headers={"Cookie": f"{pair}x"})[0] == 401
    finally:
        server.stop()


def test_explore_takes_a_key_and_makes_one_beyond_this_machine(cli: Any, tiny_model_dir: Path) -> None:
    given = cli("explore", "-m", tiny_model_dir, "--api-key", KEY, "--check", "--json")
    assert given.exit_code == 0, given.stderr
    assert given.json()["api_key_required"] is True
    everywhere = cli("explore", "-m", tiny_model_dir, "--host", "0.0.0.0", "--check", "--json")
    assert everywhere.exit_code == 0, everywhere.stderr
    assert everywhere.json()["api_key_required"] is True
    assert "a key was made for this run" in everywhere.stderr and "without --api-key" not in everywhere.stderr
    local = cli("explore", "-m", tiny_model_dir, "--check", "--json")
    assert local.json()["api_key_required"] is False and local.json()["url"].startswith("http://127.0.0.1:")


def test_explore_takes_serves_job_and_timeout_options(cli: Any, tiny_model_dir: Path) -> None:
    result = cli("explore", "-m", tiny_model_dir, "--job-timeout", "7", "--shutdown-timeout", "2", "--max-steps",
                 "9", "--max-answer-bytes", "65536", "--header-timeout", "3", "--check", "--json")
    assert result.exit_code == 0, result.stderr
    limits = dict(result.json()["limits"])
    assert limits["--job-timeout"] == "7 s" and limits["--max-steps"] == "9"
    assert limits["--header-timeout"] == "3 s" and limits["--max-answer-bytes"] == "65,536"
    assert result.json()["shutdown_timeout"] == 2.0


# ---------------------------------------------------------------------------------------------- time budgets


def test_a_request_that_cannot_finish_in_its_budget_is_refused_before_it_runs(loaded: Any) -> None:
    from llmscope.server.budget import Speed

    server = InProcessServer(loaded, job_timeout=5.0)
    server.engine.speed = Speed(seconds_per_pass=0.0, seconds_per_flop=1e-6)  # a machine of one MFLOP/s
    gate = Gate(loaded.model, closed=False)
    try:
        status, answer = server.post("/llmscope/v1/next-token", {"prompt": "hello " * 30, "steps": 40})
        assert status == 400 and answer["error"]["code"] == "over_budget", answer
        assert "--job-timeout" in answer["error"]["message"] and "forward passes" in answer["error"]["message"]
        assert gate.calls == 0
        assert server.health()["refused"] == 1
        status, answer = server.post("/llmscope/v1/next-token", {"prompt": "Hi"})  # a small one still runs
        assert status == 200, answer
    finally:
        gate.remove()
        server.stop()


def test_the_budget_stops_a_pass_between_its_layers(loaded: Any) -> None:
    """The first block of the first pass is held until the job's budget is spent: the pass stops there (the last
    block never runs) and the request gets 504; the check used to come only before the next pass."""
    server = InProcessServer(loaded, job_timeout=0.1)
    first = Gate(blocks(loaded)[0])
    last = Counter(blocks(loaded)[-1])
    try:
        thread, out = in_thread(lambda: server.post("/llmscope/v1/next-token", {"prompt": "Hello world"}))
        assert first.entered.wait(WAIT)
        job = server.running_job()
        wait_until(lambda: job.expired(time.monotonic()), "the job's budget spent")
        first.opened.set()
        thread.join(WAIT)
        status, answer = out["result"]
        assert status == 504 and answer["error"]["code"] == "timeout", answer
        assert last.calls == 0
        assert server.health()["timed_out"] == 1
    finally:
        first.remove()
        last.remove()
        server.stop()


def test_a_client_that_leaves_stops_its_pass_and_the_next_request_runs(served: InProcessServer, loaded: Any) -> None:
    first = Gate(blocks(loaded)[0])
    last = Counter(blocks(loaded)[-1])
    try:
        client = socket.create_connection(("127.0.0.1", served.port), timeout=WAIT)
        data = json.dumps({"prompt": "hello world the cat"}).encode()
        client.sendall(b"POST /llmscope/v1/explore/lens HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                       b"application/json\r\nContent-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)
        assert first.entered.wait(WAIT)
        job = served.running_job()
        client.close()
        assert job.cancelled.wait(WAIT)
        first.opened.set()
        status, answer = served.post("/llmscope/v1/explore/cache", {"prompt": "hello"})
        assert status == 200, answer
        assert last.calls == 0  # the abandoned pass stopped after its first block
        assert served.health()["cancelled"] == 1
    finally:
        first.remove()
        last.remove()


def test_a_queued_request_whose_client_left_is_counted_as_cancelled(served: InProcessServer, loaded: Any) -> None:
    gate = Gate(loaded.model)
    try:
        holder, holder_out = in_thread(lambda: served.post("/llmscope/v1/explore/decode", {"prompt": "Hi"}))
        assert gate.entered.wait(WAIT)
        client = socket.create_connection(("127.0.0.1", served.port), timeout=WAIT)
        data = json.dumps({"prompt": "hello world"}).encode()
        client.sendall(b"POST /llmscope/v1/explore/lens HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                       b"application/json\r\nContent-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)
        wait_until(lambda: served.engine.queued == 1, "the second request queued")
        with served.engine._lock:
            queued = served.engine._pending[0]
        client.close()
        assert queued.cancelled.wait(WAIT)
        gate.opened.set()
        holder.join(WAIT)
        assert holder_out["result"][0] == 200
        # the worker drops it from the queue when it looks next
        wait_until(lambda: served.health()["queued"] == 0, "the queue emptied")
        assert served.health()["cancelled"] == 1
    finally:
        gate.remove()


def test_explore_attribution_obeys_max_steps(loaded: Any) -> None:
    server = InProcessServer(loaded, max_steps=8)
    gate = Gate(loaded.model, closed=False)
    try:
        status, answer = server.post("/llmscope/v1/explore/attribute", {"prompt": "hello world", "steps": 9})
        assert status == 400 and "--max-steps" in answer["error"]["message"], answer
        assert gate.calls == 0
        status, answer = server.post("/llmscope/v1/explore/attribute", {
            "prompt": "hello world", "steps": 8, "methods": ["integrated-gradients"]})
        assert status == 200, answer
    finally:
        gate.remove()
        server.stop()


def test_the_attention_answer_is_refused_when_it_would_pass_the_cap(loaded: Any) -> None:
    server = InProcessServer(loaded, max_answer_bytes=16 * 1024)
    gate = Gate(loaded.model, closed=False)
    try:
        status, answer = server.post("/llmscope/v1/explore/attention", {"prompt": "hello world " * 10})
        assert status == 400 and answer["error"]["code"] == "answer_too_large", answer
        assert gate.calls == 0
    finally:
        gate.remove()
        server.stop()


# ---------------------------------------------------------------------------------------------- answers


def test_logprobs_answer_is_streamed_in_lines_within_the_cap(loaded: Any) -> None:
    """The full-vocabulary rows come as JSON lines of at most --max-answer-bytes each (the route used to skip the
    cap and send one document of every row), and they are the library's own rows."""
    import torch

    from llmscope.inspection.scoring import ScoreSettings, logprob_chunks, prepare_ids

    cap = 64 * 1024
    server = InProcessServer(loaded, max_answer_bytes=cap)
    text = "Hello world, the capital of France is Paris. " * 4
    ids = list(prepare_ids(loaded.tokenizer, text, ScoreSettings()).ids)
    plan = [[0, len(ids), 1]]
    try:
        status, headers, content = server.request("POST", "/llmscope/v1/logprobs", {
            "text": text, "ids": ids, "plan": plan, "next_token": True})
        assert status == 200 and headers["content-type"].startswith("application/x-ndjson")
        lines = content.splitlines(keepends=True)
        assert len(lines) > 3 and all(len(line) <= cap for line in lines)
        head, *body, end = [json.loads(line) for line in lines]
        vocab = head["result"]["vocab"]
        assert head["result"]["rows"] == len(ids) and end == {"end": True}
        rows = torch.cat([torch.frombuffer(bytearray(base64.b64decode(line["rows_base64"])), dtype=torch.float32)
                          .view(-1, vocab) for line in body])
        targets = [t for line in body for t in line["targets"]]
        assert targets == list(range(1, len(ids) + 1))
        local = torch.cat([chunk.logprobs for chunk in logprob_chunks(loaded, tuple(ids), [(0, len(ids), 1)],
                                                                      next_token=True)])
        assert torch.equal(rows, local.float())
    finally:
        server.stop()


def test_compare_against_the_streamed_logprobs_agrees_with_a_local_run(loaded: Any) -> None:
    from llmscope.client.compare import remote_chunks
    from llmscope.client.endpoint import EndpointSettings
    from llmscope.inspection.scoring import ScoreSettings, logprob_chunks, prepare_ids

    server = InProcessServer(loaded, max_answer_bytes=16 * 1024)
    text = "The capital of Italy is Rome. " * 5
    ids = prepare_ids(loaded.tokenizer, text, ScoreSettings()).ids
    plan = [(0, 20, 1), (10, len(ids), 20)]
    try:
        remote, chunks = remote_chunks(EndpointSettings(f"http://127.0.0.1:{server.port}"), text, ScoreSettings())
        got = list(chunks(ids, plan, True))
        expected = list(logprob_chunks(loaded, ids, plan, next_token=True))
        assert [c.targets for c in got] == [c.targets for c in expected]
        assert [c.contexts for c in got] == [c.contexts for c in expected]
        assert all(bool((a.logprobs == b.logprobs.float()).all()) for a, b in zip(got, expected))
        assert remote.info is not None and remote.info.model == loaded.spec.name
    finally:
        server.stop()
