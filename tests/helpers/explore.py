"""`llmscope explore` as a real subprocess on 127.0.0.1 port 0: start_explore returns once it prints its page's
address (read from stderr), stop_explore sends SIGTERM and checks the exit code; Explore asks its JSON routes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from typing import Any


class Explore:
    def __init__(self, process: subprocess.Popen[str], url: str, log: list[str], model: str) -> None:
        self.process, self.url, self.log, self.model = process, url, log, model

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def answer(self, path: str, body: dict[str, Any]) -> Any:
        """The whole answer of a route that must succeed ({"model_info", "result", ...})."""
        status, answer = self.post(path, body)
        assert status == 200, answer
        return answer

    def result(self, path: str, body: dict[str, Any]) -> Any:
        return self.answer(path, body)["result"]

    def get(self, path: str) -> tuple[int, str, str]:
        with urllib.request.urlopen(self.url + path, timeout=60) as response:
            return response.status, response.headers.get("content-type", ""), response.read().decode()


def start_explore(model: str, *extra: str) -> Explore:
    """`llmscope explore` on `model` (port 0), ready once it prints its page's address (read from stderr)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "llmscope", "explore", "-m", model, "--port", "0", "--threads", "1", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log: list[str] = []
    assert process.stderr is not None
    url = None
    for line in process.stderr:
        log.append(line)
        if line.startswith("listening on "):
            url = line.split("listening on ", 1)[1].strip()
        if line.startswith("explore at "):
            break
    else:
        raise AssertionError("explore exited before listening:\n" + "".join(log))
    threading.Thread(target=lambda: log.extend(process.stderr), daemon=True).start()  # type: ignore[arg-type]
    assert url is not None
    return Explore(process, url, log, model)


def stop_explore(explore: Explore) -> None:
    explore.process.send_signal(signal.SIGTERM)
    assert explore.process.wait(timeout=60) == 0, "".join(explore.log)
