"""What a CLI run gives back in the tests: CliResult (stdout and stderr apart, .json()), JSON-lines records, and the
exit codes llmscope documents."""

from __future__ import annotations

import json
from typing import Any

SUCCESS, RUNTIME, USAGE, INTERRUPTED, TERMINATED = 0, 1, 2, 130, 143


class CliResult:
    def __init__(self, result: Any) -> None:
        self.exit_code: int = result.exit_code
        self.stdout: str = result.stdout
        self.stderr: str = result.stderr
        self.exception = result.exception

    def json(self) -> Any:
        return json.loads(self.stdout)


def records(stdout: str) -> list[dict]:
    """The JSON-lines records of a --batch run's stdout."""
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]
