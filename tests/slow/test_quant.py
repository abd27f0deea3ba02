"""The embedded GGUF keeps its 4-bit blocks packed."""

from __future__ import annotations

import pytest

PROMPT = "The capital of France is"


@pytest.mark.slow
def test_embedded_gguf_keeps_its_blocks(cli) -> None:
    from llmscope.loading.conversion_cache import folder_size
    from llmscope.loading.loader import embedded_gguf_path, gguf_entry_for, resolve_model_spec

    result = cli("next-token", PROMPT, "-k", "3", "--json")
    assert result.exit_code == 0, result.stderr
    document = result.json()
    info = document["model_info"]
    assert info["quantize"] == "auto" and info["parameters"] == 134_515_008
    assert info["weights"] == "int4 from Q4_1 x210"
    top = document["steps"][0]["top"][0]
    # The exact dequantization gives 0.7725 (tests/slow/test_next_token.py); bfloat16 activations move it a little.
    assert top["text"] == " Paris" and top["probability"] == pytest.approx(0.7725, abs=0.03)
    entry = gguf_entry_for(resolve_model_spec(None), "auto")
    assert folder_size(entry) <= 1.5 * embedded_gguf_path().stat().st_size
