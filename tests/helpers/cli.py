"""What a CLI run gives back in the tests and how it is read: CliResult (stdout and stderr apart, .json()),
JSON-lines records, the one `error:` line a failure prints, the exit codes llmscope documents, and llmscope run as a
real process (for what only a process shows: stdin closed or piped, the locale, the environment at import)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

SUCCESS, RUNTIME, USAGE, INTERRUPTED, TERMINATED = 0, 1, 2, 130, 143
ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*(3[0-9]|4[0-9]|9[0-7]|10[0-7])[0-9;]*m")


class CliResult:
    def __init__(self, result: Any) -> None:
        self.exit_code: int = result.exit_code
        self.stdout: str = result.stdout
        self.stderr: str = result.stderr
        self.exception = result.exception

    def json(self) -> Any:
        return json.loads(self.stdout)


def invoke(*args: object, input: str | bytes | None = None, env: dict[str, str | None] | None = None) -> CliResult:
    """Run llmscope in this process (Typer's CliRunner), without $LLMSCOPE_MODEL unless `env` sets it."""
    from typer.testing import CliRunner

    from llmscope.cli.main import app

    return CliResult(CliRunner().invoke(app, [str(a) for a in args], input=input,
                                        env={"LLMSCOPE_MODEL": None, **(env or {})}))


def records(stdout: str) -> list[dict]:
    """The JSON-lines records of a --batch run's stdout (blank lines are no records)."""
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def one_error_line(result: Any) -> str:
    """The run's one `error:` line, checked to be llmscope's own (no traceback, no hint to set LLMSCOPE_DEBUG)."""
    errors = [line for line in result.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr and "LLMSCOPE_DEBUG" not in result.stderr, result.stderr
    return errors[0]


def assert_one_line_error(result: Any, exit_code: int, *fragments: str) -> None:
    """The run failed with `exit_code`, one `error:` line holding every fragment, nothing on stdout."""
    assert result.exit_code == exit_code, (result.exit_code, result.stdout, result.stderr)
    line = one_error_line(result)
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    assert result.stdout == ""


def run_llmscope(*args: object, stdin_text: str | None = None, close_stdin: bool = False,
                 env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """llmscope in a real process (stdin a pipe, or closed)."""
    return subprocess.run([sys.executable, "-m", "llmscope", *map(str, args)], input=stdin_text,
                          stdin=None if stdin_text is not None else subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})},
                          preexec_fn=(lambda: os.close(0)) if close_stdin else None)
