"""what-if on the embedded SmolLM2: the chapter's claims (StreamingLLM's sinks, GQA's pooled heads, KIVI's narrow
cache) hold qualitatively on a 600-token story, and evicted keys are really gone from the cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmscope.whatif.variants import parse_variants

LONG_TEXT = Path(__file__).resolve().parents[2] / "docs" / "examples" / "lighthouse.txt"


@pytest.mark.slow
def test_the_chapters_claims_on_the_embedded_model(embedded_model: Any) -> None:
    """StreamingLLM, GQA and KIVI, qualitatively, on a 600-token story (docs/examples/lighthouse.txt)."""
    from llmscope.whatif.experiment import what_if
    from llmscope.whatif.results import WhatIfSettings

    variants = parse_variants(["window=32", "sinks=4,window=28", "kv-cache=int8", "kv-cache=int2", "kv-heads=1"])
    result = what_if(embedded_model, LONG_TEXT.read_text(), WhatIfSettings(variants=variants, new_tokens=8))
    assert result.tokens >= 400
    rows = {row.name: row for row in result.variants}
    full = rows["full"]
    window, sinks = rows["window=32"], rows["sinks=4,window=28"]
    assert window.perplexity > 2.5 * full.perplexity  # the first tokens left the window: perplexity explodes
    assert sinks.perplexity < 2.0 * full.perplexity  # four attention sinks bring most of it back
    assert (sinks.perplexity - full.perplexity) < 0.5 * (window.perplexity - full.perplexity)
    assert rows["kv-cache=int8"].kl_mean <= 0.01  # int8 is nearly free
    assert rows["kv-cache=int8"].kl_mean < rows["kv-cache=int2"].kl_mean  # 2 bits cost more
    heads = rows["kv-heads=1"]
    assert 3 * heads.kv_cache_bytes == full.kv_cache_bytes and heads.kl_mean > 0  # 3 KV heads -> 1
    assert window.kv_cache_end_bytes is not None and full.kv_cache_end_bytes is not None
    assert window.kv_cache_end_bytes * 10 < full.kv_cache_end_bytes  # evicted for real
    for row in result.variants:
        assert row.kv_cache_measured_bytes == row.kv_cache_bytes
