"""serve on the embedded SmolLM2: 8 concurrent clients get the lone request's log-probabilities."""

from __future__ import annotations

import pytest
from helpers.servers import concurrent_logprobs


@pytest.mark.slow
def test_serve_on_the_embedded_model_with_8_concurrent_clients() -> None:
    pytest.importorskip("uvicorn")
    concurrent_logprobs("smollm2", 8)

