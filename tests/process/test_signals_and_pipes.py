"""What only a real process shows: SIGINT and SIGTERM exit 130 / 143, a closed pipe is no failure, a closed or
endless stdin is one line, an ASCII locale escapes, an interrupt while the package imports is one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.cli import INTERRUPTED, TERMINATED, USAGE, records, run_llmscope


def _llmscope(*args: str) -> list[str]:
    return [sys.executable, "-m", "llmscope", *args]


def test_sigint_to_a_real_process_exits_130(tiny_model_dir: Path, tmp_path: Path) -> None:
    import signal

    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, "-m", "llmscope", "bench-cache", "-m", str(tiny_model_dir), "-n",
                                "150", "--repeat", "50", "--warmup", "0", "--no-chat"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    assert process.stderr is not None
    for line in process.stderr:  # wait until a timed run has finished (one line per run): runs are in progress
        if " run 1: " in line:
            break
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == INTERRUPTED, stderr
    assert "Traceback" not in stderr


def test_an_endless_input_ends_with_one_line_naming_the_cap(cli, tiny_model_dir: Path) -> None:
    result = cli("score", "--file", "/dev/zero", "-m", tiny_model_dir)
    assert result.exit_code == USAGE
    assert "--file /dev/zero is larger than 32 MiB" in result.stderr and "Traceback" not in result.stderr
    with open("/dev/zero", "rb") as zeros:  # stdin that never ends, in a real process
        piped = subprocess.run([sys.executable, "-m", "llmscope", "score", "-", "-m", str(tiny_model_dir)],
                               stdin=zeros, capture_output=True, text=True, timeout=120)
    assert piped.returncode == USAGE and "stdin is larger than 32 MiB" in piped.stderr, piped.stderr


def test_batch_reads_dev_stdin_and_a_closed_stdin_is_one_line(cli, tiny_model_dir: Path) -> None:
    result = run_llmscope("tokenize", "-m", tiny_model_dir, "--batch", "/dev/stdin", stdin_text="Hello\nworld\n")
    assert result.returncode == 0, result.stderr
    assert [line["text"] for line in records(result.stdout)] == ["Hello", "world"]
    empty = cli("tokenize", "-m", tiny_model_dir, "--batch", "/dev/null")
    assert empty.exit_code == USAGE and "holds no prompts" in empty.stderr
    for args in (("tokenize", "-"), ("tokenize", "--batch", "-")):
        closed = run_llmscope(*args, "-m", tiny_model_dir, close_stdin=True)
        assert closed.returncode == USAGE, closed.stderr
        assert "stdin is closed" in closed.stderr and "Traceback" not in closed.stderr


def test_an_interrupt_while_the_package_imports_is_one_line() -> None:
    # SIGINT is held back while llmscope.entry imports, then let through before main() runs
    code = ("import os, signal; signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}); "
            "os.kill(os.getpid(), signal.SIGINT); import llmscope.entry; "
            "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT}); print('not stopped')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr, result.stdout) == (130, "error: interrupted\n", "")
    light = subprocess.run([sys.executable, "-c", "import sys, llmscope; print('typing' in sys.modules)"],
                           capture_output=True, text=True, timeout=60)
    assert light.stdout.strip() == "False"  # the package itself imports nothing that takes time


def test_an_ascii_locale_escapes_instead_of_failing(tiny_model_dir: Path) -> None:
    shown = run_llmscope("tokenize", "café ☕", "-m", tiny_model_dir, env={"PYTHONIOENCODING": "ascii"})
    assert shown.returncode == 0 and "\\u2423" in shown.stdout, shown.stderr  # the ␣ marker, escaped


@pytest.mark.parametrize("command", ["architecture", "tokenize", "next-token"])
def test_a_closed_pipe_is_not_a_failure(tiny_model_dir: Path, command: str) -> None:
    args = {"architecture": ["architecture", "-m", str(tiny_model_dir)],
            "tokenize": ["tokenize", "Hello world " * 50, "-m", str(tiny_model_dir)],
            "next-token": ["next-token", "Hello", "-m", str(tiny_model_dir), "--top-k", "200"]}[command]
    env = dict(os.environ, HF_HUB_OFFLINE="1", COLUMNS="80")
    process = subprocess.Popen(_llmscope(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert process.stdout is not None
    process.stdout.read(10)
    process.stdout.close()  # what `| head -c 10` does
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert b"Traceback" not in stderr and b"error" not in stderr


def test_sigterm_stops_like_ctrl_c_with_143(tiny_model_dir: Path) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    process = subprocess.Popen(_llmscope("bench-cache", "-m", str(tiny_model_dir), "-n", "150", "--repeat", "50",
                                         "--warmup", "0", "--no-chat"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    assert process.stderr is not None
    for line in process.stderr:  # wait until a timed run has finished (one line per run): runs are in progress
        if " run 1: " in line:
            break
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == TERMINATED, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr
