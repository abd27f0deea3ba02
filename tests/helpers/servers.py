"""`llmscope serve` as a real subprocess on 127.0.0.1 port 0 (start_server returns once it prints its address;
stop_server sends SIGTERM and returns the exit code), and the serve engine's generate jobs built by hand."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

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


def generate_jobs(local: Any, loop: asyncio.AbstractEventLoop, prompts: list[str], tokens: int) -> list[Any]:
    from llmscope.core.command_settings import GenerationSettings
    from llmscope.generation.prompts import encode_prompt
    from llmscope.server.engine import GenerateWork, Job

    settings = GenerationSettings(max_new_tokens=tokens)
    return [Job(kind="generate", key=("generate", False), loop=loop, future=loop.create_future(),
                payload=GenerateWork(encode_prompt(local, p, new_tokens=tokens), settings)) for p in prompts]


SERVE_PROMPTS = ["The capital of France is", "Hello", "def add(a, b):", "Once upon a time there was a robot",
                 "1, 2, 3,", "Attention heads share keys", "Write an email to Sarah about the trains", "Tokens"]


def concurrent_logprobs(server: Server, tokens: int) -> None:
    """A lone completion, then 8 clients at once (the same prompt among them): the same log-probabilities."""
    from concurrent.futures import ThreadPoolExecutor

    served = server.request("/v1/models")[1]["data"][0]["id"]

    def ask(prompt: str) -> list[float]:
        status, body = server.request("/v1/completions", {"model": served, "prompt": prompt, "max_tokens": tokens,
                                                          "temperature": 0, "logprobs": 1})
        assert status == 200, body
        return body["choices"][0]["logprobs"]["token_logprobs"]

    lone = ask(SERVE_PROMPTS[0])
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(ask, SERVE_PROMPTS))
    assert len(lone) == tokens and together[0] == lone
    assert [ask(prompt) for prompt in SERVE_PROMPTS[1:3]] == together[1:3]
