"""serve on the embedded SmolLM2: 8 concurrent clients get the lone request's log-probabilities."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.servers import KEY, concurrent_logprobs, start_server, stop_server


@pytest.mark.slow
def test_serve_on_the_embedded_model_with_8_concurrent_clients() -> None:
    pytest.importorskip("uvicorn")
    server = start_server(Path("smollm2"), "--api-key", KEY)
    try:
        concurrent_logprobs(server, 8)
    finally:
        assert stop_server(server) == 0, "".join(server.log)
