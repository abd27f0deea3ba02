"""The Hugging Face hub out of reach, in real processes: a hub that never answers, a refusing proxy and a closed
port fail in seconds with the cause named; every hub request is bounded in time; `env` shows the hub cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.cli import RUNTIME, one_error_line, run_llmscope

from llmscope.loading import loader


@pytest.fixture
def silent_listener():
    """A TCP port on 127.0.0.1 that accepts connections and never sends a byte."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    server.close()


def test_unreachable_hub_fails_fast_in_one_line(tmp_path: Path) -> None:
    """A closed port stands in for an unreachable network: no retry chatter, the real cause named."""
    env = dict(os.environ, HF_HUB_OFFLINE="0", HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT="http://127.0.0.1:9",
               PYTHONPATH=str(Path(loader.__file__).parents[1]))
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        env.pop(name, None)
    result = subprocess.run([sys.executable, "-m", "llmscope", "next-token", "hi", "-m", "someorg/somemodel"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == RUNTIME
    assert "Retrying" not in result.stderr and "thrown while requesting" not in result.stderr
    line = one_error_line(result)
    assert "not in the local Hugging Face cache" in line and "unreachable (127.0.0.1:9" in line


def test_a_hub_that_never_answers_fails_in_seconds_with_the_cause(silent_listener: int, tmp_path: Path) -> None:
    env = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{silent_listener}", "HF_HOME": str(tmp_path),
           "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    result = run_llmscope("architecture", "-m", "someone/some-model", env=env, timeout=60)
    assert result.returncode == RUNTIME, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Retrying" not in result.stderr, result.stderr
    assert f"unreachable (127.0.0.1:{silent_listener}: no answer within" in errors[0]


def test_a_refusing_proxy_is_named_as_the_cause(tmp_path: Path) -> None:
    import socket

    with socket.socket() as closed:  # a port nothing listens on: the proxy refuses
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    env = {"HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path), "HTTPS_PROXY": f"http://127.0.0.1:{port}",
           "HTTP_PROXY": f"http://127.0.0.1:{port}", "NO_PROXY": "", "no_proxy": ""}
    result = run_llmscope("architecture", "-m", "someone/some-model", env=env, timeout=60)
    assert result.returncode == RUNTIME, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Retrying" not in result.stderr, result.stderr
    assert f"unreachable (proxy 127.0.0.1:{port}: Connection refused)" in errors[0]


def test_env_shows_the_hub_cache_huggingface_hub_uses(tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if k not in ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")}
    result = subprocess.run([sys.executable, "-m", "llmscope", "env", "--json"], capture_output=True, text=True,
                            timeout=120, env={**clean, "XDG_CACHE_HOME": str(tmp_path / "xdg")})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["hf_cache"] == str(tmp_path / "xdg" / "huggingface" / "hub")


def test_every_hub_request_is_bounded_in_time(silent_listener: int, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub
    import huggingface_hub.constants

    from llmscope.loading import load_errors

    monkeypatch.setattr(load_errors, "HUB_READ_TIMEOUT_S", 0.5)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # this request only: a local port
    load_errors._bound_hub_requests()
    with pytest.raises(Exception) as waited:  # model_info and others pass timeout=None: no limit at all before
        huggingface_hub.get_session().get(f"http://127.0.0.1:{silent_listener}/api/models/x", timeout=None)
    assert "Timeout" in type(waited.value).__name__
