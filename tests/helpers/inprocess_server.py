"""Helpers for tests that run `llmscope serve` in this process (uvicorn on a thread, 127.0.0.1, a free port): the
server, a gate that holds the model inside a forward pass until a test opens it, and a thread runner. Every wait is
on an event, never on a clock. A helper module, not a test module."""

from __future__ import annotations

import http.client
import json
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

WAIT = 120  # seconds before an awaited event counts as never coming (a failure, not a timing assumption)


class Gate:
    """A forward pre-hook on `module` (the model, or one of its blocks): counts its calls and, while closed, holds
    each one until opened."""

    def __init__(self, module: Any, closed: bool = True) -> None:
        self.calls = 0
        self.entered = threading.Event()
        self.opened = threading.Event()
        if not closed:
            self.opened.set()
        self.handle = module.register_forward_pre_hook(self)

    def __call__(self, _module: Any, _args: Any) -> None:
        self.calls += 1
        self.entered.set()
        assert self.opened.wait(WAIT), "the gate was never opened"

    def remove(self) -> None:
        self.opened.set()
        self.handle.remove()


class Counter:
    """A forward pre-hook that counts a module's calls (without holding them)."""

    def __init__(self, module: Any) -> None:
        self.calls = 0
        self.handle = module.register_forward_pre_hook(self)

    def __call__(self, _module: Any, _args: Any) -> None:
        self.calls += 1

    def remove(self) -> None:
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

    def post(self, path: str, body: Any = None, headers: dict[str, str] | None = None,
             raw: bytes | None = None) -> tuple[int, Any]:
        status, _, content = self.request("POST", path, body, headers=headers, raw=raw)
        return status, json.loads(content)

    def health(self, headers: dict[str, str] | None = None) -> Any:
        status, _, content = self.request("GET", "/health", headers=headers)
        assert status == 200
        return json.loads(content)

    def running_job(self) -> Any:
        """The job the engine runs now (the test has made sure there is one)."""
        with self.engine._lock:
            return self.engine._running[0]

    def stop(self) -> None:
        self.server.handle_exit(signal.SIGTERM, None)
        self.thread.join(WAIT)
        self.engine.close(0)
        self.sock.close()


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


def wait_until(done: Callable[[], bool], what: str) -> None:
    """Poll done() until it holds (an event the server shows), at most WAIT seconds (then the test fails)."""
    deadline = time.monotonic() + WAIT
    while not done():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)
