"""`llmscope serve --check`: a bad --host is refused before the model loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")


def test_a_bad_host_is_refused_before_the_load(cli: Any, tmp_path: Path) -> None:
    result = cli("serve", "-m", str(tmp_path / "no-model-here"), "--host", "no-such-host.invalid", "--check")
    assert result.exit_code != 0 and "--host no-such-host.invalid" in result.stderr
