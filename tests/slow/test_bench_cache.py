"""bench-cache on the embedded SmolLM2: the same ids with and without the cache, KV bytes as the formula."""

from __future__ import annotations

import pytest

SMOLLM2_KV_BYTES_PER_TOKEN = 2 * 30 * 3 * 64 * 4  # K and V x layers x KV heads x head dim x float32


@pytest.mark.slow
def test_embedded_model_same_ids_and_kv_size(cli) -> None:
    """The seed's prompt on the real SmolLM2: same greedy ids with and without the cache; KV bytes as the formula."""
    result = cli("bench-cache", "-n", "3", "--repeat", "1", "--warmup", "0", "--json", "-q", "--quantize", "none")
    assert result.exit_code == 0, result.stderr  # exact weights: packed ones round one row and many differently
    document = result.json()
    assert document["prompt_tokens"] == 21 and document["chat_template_applied"] is False
    length = document["results"][0]
    assert length["check"]["identical"] is True
    assert length["kv_cache"]["bytes_per_token"] == SMOLLM2_KV_BYTES_PER_TOKEN
    assert length["kv_cache"]["measured_bytes"] == SMOLLM2_KV_BYTES_PER_TOKEN * (21 + 3 - 1)
