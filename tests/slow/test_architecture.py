"""`architecture` and the memory planner on the embedded SmolLM2: its facts and figures."""

from __future__ import annotations

import pytest

from llmscope.architecture.describe import (
    describe_config_model,
    kv_cache_bytes_per_token,
)
from llmscope.loading.loader import load_config


@pytest.mark.slow
def test_embedded_smollm2_facts() -> None:
    report = describe_config_model(None)
    s = report.summary
    assert report.parameters.total == 134_515_008
    assert (s.layers, s.attention.heads, s.attention.kv_heads, s.attention.head_dim) == (30, 9, 3, 64)
    assert s.context_length == 8192 and s.tied_embeddings and report.parameters.lm_head == 0
    assert s.attention.description == "grouped-query: 9 query heads share 3 KV heads, groups of 3"
    assert s.rope_theta == 100000.0
    config = load_config(None)
    assert kv_cache_bytes_per_token(config, 2) == 2 * 30 * 3 * 64 * 2
    assert report.kv_cache.saving == pytest.approx(2 / 3, abs=1e-6)
    assert report.tree.children[1].tied_to == "model.embed_tokens.weight"


@pytest.mark.slow
def test_planner_on_the_embedded_model(cli) -> None:
    document = cli("architecture", "--batch-size", "2", "--kv-dtype", "float16", "--dtype", "float32",
                   "--json", "-q").json()
    plan = document["plan"]
    assert plan["weight_bytes"] == 4 * 134_515_008
    assert plan["rows"][-1]["tokens"] == 8192 and plan["rows"][-1]["kv_bytes"] == 377_487_360
