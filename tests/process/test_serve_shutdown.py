"""Stopping with work in flight, as a fault probe did it: `serve` and `explore` as real processes on 127.0.0.1 with
the embedded model (long generations and an attribution are still running when the signals come), and a command
interrupted while it computes. In-flight clients get 503 in the API's error shape, the process exits 0 without an
abort or a stray traceback, and a signal whose interrupt was lost still stops a forward pass. Waits are on events
(a line on stderr, a counter, a refused connection), bounded by WAIT as failures, never fixed sleeps."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import pytest
from helpers.inprocess_server import in_thread

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

WAIT = 120  # seconds before an awaited event counts as never coming
LONG = 4000  # new tokens no request here can reach before the signals come
COUNTING = "Count to ten thousand: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,"  # a text that goes on
STRAY = ("Traceback", "never retrieved", "Event loop is closed", "Exception in ASGI application")


class Process:
    """A llmscope server process with its stderr collected; url once it listens."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "llmscope", *args, "--port", "0"],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.log: list[str] = []
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)
            if line.startswith("listening on "):
                self.url = line.split("listening on ", 1)[1].strip()
                break
        else:
            raise AssertionError("the server exited before listening:\n" + "".join(self.log))
        self.reader = threading.Thread(target=lambda: self.log.extend(self.process.stderr), daemon=True)  # type: ignore[arg-type]
        self.reader.start()

    def health(self) -> Any:
        with urllib.request.urlopen(self.url + "/health", timeout=WAIT) as response:
            return json.loads(response.read())

    def wait_for(self, done: Any) -> None:
        """Poll the server's /health until done(health) (an event the server reports), at most WAIT seconds."""
        deadline = time.monotonic() + WAIT
        while not done(self.health()):
            assert time.monotonic() < deadline, "the server never reported it:\n" + "".join(self.log)
            time.sleep(0.05)

    def signal_and_wait_until_closed(self, signum: int) -> None:
        """Send the first signal and wait for its event: the server stops accepting connections."""
        self.process.send_signal(signum)
        address = urlsplit(self.url)
        deadline = time.monotonic() + WAIT
        while True:
            try:
                http.client.HTTPConnection(address.hostname, address.port, timeout=WAIT).connect()
            except OSError:
                return
            assert time.monotonic() < deadline, "the server kept accepting after the signal"
            time.sleep(0.05)

    def finish(self) -> tuple[int, str]:
        code = self.process.wait(timeout=WAIT)
        self.reader.join(WAIT)
        return code, "".join(self.log)


def post(url: str, path: str, body: Any) -> tuple[int, Any]:
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def assert_shutting_down(status: int, answer: Any, words: str = "a second signal") -> None:
    """503 in OpenAI's error shape, and from the second signal (not from the first one's shutdown timeout)."""
    assert status == 503, answer
    assert set(answer["error"]) == {"message", "type", "param", "code"} and answer["error"]["code"] == "shutting_down"
    assert words in answer["error"]["message"], answer


@pytest.mark.slow
def test_a_second_sigterm_answers_in_flight_requests_with_503_and_exits(llmscope_cache: Any) -> None:
    server = Process("serve", "--threads", "1")
    body = {"prompt": COUNTING, "max_tokens": LONG, "temperature": 0}
    clients = [in_thread(lambda: post(server.url, "/v1/completions", body)) for _ in range(4)]
    server.wait_for(lambda health: health["requests"] == 4)  # all four handed to the model
    server.signal_and_wait_until_closed(signal.SIGTERM)
    server.process.send_signal(signal.SIGTERM)
    for thread, out in clients:
        thread.join(WAIT)
        assert_shutting_down(*out["result"])
    code, log = server.finish()
    assert code == 0, log
    assert not any(word in log for word in STRAY), log


@pytest.mark.slow
def test_sigint_with_streams_in_flight_ends_each_stream_and_exits_0(llmscope_cache: Any) -> None:
    server = Process("serve", "--threads", "1", "--shutdown-timeout", "1")
    address = urlsplit(server.url)
    started = threading.Barrier(9)
    results: list[bytes] = []

    def stream() -> None:
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=WAIT)
        connection.request("POST", "/v1/completions", body=json.dumps(
            {"prompt": COUNTING, "max_tokens": LONG, "temperature": 0, "stream": True}),
            headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        started.wait(WAIT)
        results.append(response.read())

    threads = [threading.Thread(target=stream, daemon=True) for _ in range(8)]
    for thread in threads:
        thread.start()
    started.wait(WAIT)  # every stream has its answer's head
    server.wait_for(lambda health: health["requests"] == 8)  # and its job: one generating, the rest queued
    server.process.send_signal(signal.SIGINT)
    for thread in threads:
        thread.join(WAIT)
    code, log = server.finish()
    assert code == 0, log  # not -6 (SIGABRT)
    assert not any(word in log for word in STRAY), log
    assert len(results) == 8
    cut = 0
    for content in results:  # each stream ends properly: cut by the shutdown timeout, or finished before it
        events = [line[6:] for line in content.decode().splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]", events[-3:]
        last = json.loads(events[-2])
        if "error" in last:
            assert last["error"]["code"] == "shutting_down" and "shutdown timeout" in last["error"]["message"]
            cut += 1
        else:
            assert last["choices"][0]["finish_reason"] in ("stop", "length"), last
    assert cut >= 1


@pytest.mark.slow
def test_explore_answers_a_running_attribution_with_503_on_a_second_sigint(llmscope_cache: Any) -> None:
    explore = Process("explore", "--threads", "1")
    prompt = "The history of the town is long and it has many chapters, each told by a different family. " * 3
    thread, out = in_thread(lambda: post(explore.url, "/llmscope/v1/explore/attribute", {
        "prompt": prompt, "steps": 64, "methods": ["integrated-gradients"]}))
    explore.wait_for(lambda health: health["requests"] == 1 or not thread.is_alive())
    assert thread.is_alive(), out  # the attribution runs (it was not refused)
    explore.signal_and_wait_until_closed(signal.SIGINT)
    explore.process.send_signal(signal.SIGINT)
    thread.join(WAIT)
    assert_shutting_down(*out["result"])
    code, log = explore.finish()
    assert code == 0, log
    assert not any(word in log for word in STRAY), log


@pytest.mark.slow
def test_check_invariance_stops_on_sigint_while_it_computes(llmscope_cache: Any) -> None:
    process = subprocess.Popen([sys.executable, "-m", "llmscope", "check-invariance", "-n", "400", "--threads", "1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "COLUMNS": "200"})
    assert process.stderr is not None
    log = []
    for line in process.stderr:  # the model summary line: loading is over, the checks run
        log.append(line)
        if line.startswith("loaded "):
            break
    else:
        raise AssertionError("check-invariance ended before computing:\n" + "".join(log))
    process.send_signal(signal.SIGINT)
    code = process.wait(timeout=WAIT)
    rest = process.stderr.read()
    # 130, or ended by SIGINT itself after its error line (what a shell shows as 130 too)
    assert code in (130, -signal.SIGINT), "".join(log) + rest
    assert rest.strip().splitlines()[-1] == "error: interrupted"


def test_a_lost_interrupt_still_stops_the_next_forward_pass(tiny_model_dir: Any) -> None:
    """A signal whose KeyboardInterrupt was swallowed (or is waiting for a long torch call) is recorded; the model's
    next block or sublayer raises it, so the run stops within the pass."""
    import torch

    from llmscope.core import errors
    from llmscope.loading.loader import load_model

    loaded = load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    reached = []
    handle = loaded.model.model.layers[-1].register_forward_pre_hook(lambda *_: reached.append(True))
    first = loaded.model.model.layers[0]

    def lose_an_interrupt(*_: Any) -> None:  # the signal arrives while the first block runs; its raise is lost
        errors._signals["interrupted"] = True

    lost = first.register_forward_pre_hook(lose_an_interrupt)
    try:
        with pytest.raises(KeyboardInterrupt), torch.inference_mode():
            loaded.model(input_ids=torch.tensor([[1, 2, 3]]))
        assert not reached  # stopped inside the pass, before the last block
    finally:
        errors._signals["interrupted"] = False
        handle.remove()
        lost.remove()
