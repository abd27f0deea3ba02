"""`architecture` on hybrid and state-space families (Jamba, Bamba, Mamba, MiniMax, ...): cache bytes against
transformers' own cache after 40 tokens, KV and recurrent state apart, parameters and labels."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from helpers.architectures import HYBRIDS

from llmscope.architecture.describe import describe_config_model
from llmscope.architecture.kvcache import cache_size

STATE = ("jamba", "bamba", "granitemoehybrid", "falcon_h1", "zamba2", "minimax", "lfm2", "mamba", "mamba2")


TOKENS = 40


def family_config(name: str) -> Any:
    from transformers import AutoConfig

    return AutoConfig.for_model(name, **HYBRIDS[name])


@pytest.fixture(scope="module")
def reports(hybrid_dirs: dict[str, Path]) -> dict[str, Any]:
    return {name: describe_config_model(str(folder)) for name, folder in hybrid_dirs.items()}


@pytest.fixture(scope="module")
def family_models() -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM

    models = {}
    for name in HYBRIDS:
        torch.manual_seed(0)
        models[name] = AutoModelForCausalLM.from_config(family_config(name)).eval()
    return models


def held_parts(cache: Any) -> tuple[int, int]:
    """(keys and values, states) in bytes: every tensor transformers' cache holds, MiniMax's linear_cache included."""
    import torch

    def size(tensors: list[Any]) -> int:
        return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))

    kv = state = 0
    for layer in cache.layers:
        kv += size([getattr(layer, "keys", None), getattr(layer, "values", None)])
        for states in (getattr(layer, "conv_states", None), getattr(layer, "recurrent_states", None)):
            state += size(list(states.values()) if isinstance(states, dict) else [])
    state += size(list(getattr(cache, "linear_cache", [])))
    return kv, state


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("name", list(HYBRIDS))
def test_cache_bytes_at_40_tokens_equal_transformers_cache(name: str, dtype: str,
                                                           family_models: dict[str, Any]) -> None:
    import torch

    from llmscope.bench.timed_run import cache_bytes

    model = family_models[name] if dtype == "float32" else copy.deepcopy(family_models[name]).to(torch.bfloat16)
    with torch.no_grad():
        cache = model(torch.randint(0, 100, (1, TOKENS)), use_cache=True).past_key_values
    kv, state = held_parts(cache)
    predicted = cache_size(model.config, TOKENS, 1, dtype)
    assert (predicted.kv_bytes, predicted.state_bytes) == (kv, state)
    assert cache_bytes(cache) == kv + state  # what bench-cache reports as measured
    if name in STATE:
        assert state > 0 and cache_size(model.config, 3 * TOKENS, 1, dtype).state_bytes == state  # fixed size
    else:
        assert state == 0


def test_total_and_active_parameters(reports: dict[str, Any], family_models: dict[str, Any]) -> None:
    for name, report in reports.items():
        model, p = family_models[name], report.parameters
        assert p.total == model.num_parameters(), name
        k, skipped = getattr(model.config, "num_experts_per_tok", None), 0
        for path, parameter in model.named_parameters():
            if ".experts." in path:  # routed experts: stacked [experts, ...]; a token runs k of them
                skipped += parameter.numel() // parameter.shape[0] * (parameter.shape[0] - k)
        assert p.active == p.total - skipped, name


def test_state_is_in_the_kv_table_and_the_plan(reports: dict[str, Any], hybrid_dirs: dict[str, Path]) -> None:
    for name in STATE:
        report = reports[name]
        size = cache_size(family_config(name), 0, 1, report.plan.kv_dtype, state_dtype=report.plan.weights_dtype)
        assert report.kv_cache.state_bytes == size.state_bytes > 0, name
        assert all(row.state_bytes == size.state_bytes for row in report.plan.rows), name
        assert all(point.bytes >= size.state_bytes for point in report.kv_cache.points), name
    words = {"jamba": "Mamba", "bamba": "Mamba2", "granitemoehybrid": "Mamba2", "falcon_h1": "Mamba2",
             "zamba2": "Mamba2", "minimax": "lightning attention", "lfm2": "short convolution", "mamba": "Mamba",
             "mamba2": "Mamba2"}
    for name, word in words.items():
        described = " ".join(kind.description for kind in reports[name].summary.layer_kinds)
        assert f"{word}:" in described or f"{word} state" in described, (name, described)


def test_hybrid_layers_hold_kv_and_state(reports: dict[str, Any]) -> None:
    falcon, zamba = reports["falcon_h1"], reports["zamba2"]
    assert falcon.summary.layer_pattern == "hybrid on all 2 layers"
    assert "per layer: LH" in zamba.summary.layer_pattern and "H hybrid" in zamba.summary.layer_pattern
    for report in (falcon, zamba):
        groups = [g for g in report.kv_cache.groups if g.layer_type == "hybrid"]
        assert groups and groups[0].kind == "hybrid" and groups[0].kv_bytes > 0 and groups[0].state_bytes > 0
        assert report.kv_cache.bytes_per_token > 0 and report.kv_cache.full_attention_layers == groups[0].layers
        text = report.summary.layer_pattern + " ".join(kind.description for kind in report.summary.layer_kinds)
        assert "no attention" not in text
    hybrid = falcon.summary.layer_kinds[0].description
    assert "attention" in hybrid and "Mamba2" in hybrid and "every position" in hybrid


def test_labels(reports: dict[str, Any]) -> None:
    llama4 = reports["llama4_text"]
    chunked = [kind for kind in llama4.summary.layer_kinds if kind.layer_type == "chunked_attention"]
    assert chunked and chunked[0].kind == "chunked" and "chunks of 16 tokens" in chunked[0].description
    assert "sliding" not in chunked[0].description + llama4.summary.layer_pattern
    assert "chunk" in llama4.kv_cache.note and "sliding" not in llama4.kv_cache.note
    assert llama4.summary.norm.startswith("RMSNorm") and "L2" not in llama4.summary.norm
    for name in ("llama4_text", "smollm3"):
        assert "no positional encoding (NoPE) on 1 of 2 layers" in reports[name].summary.positional_encoding
    shared = {name: reports[name].summary.shared_experts
              for name in ("llama4_text", "ernie4_5_moe", "hunyuan_v1_moe", "granitemoehybrid", "jamba", "minimax")}
    assert shared == {"llama4_text": 1, "ernie4_5_moe": 1, "hunyuan_v1_moe": 1, "granitemoehybrid": 1, "jamba": 0,
                      "minimax": 0}
    for name in ("jamba", "mamba", "mamba2"):  # no position encoding at all: order comes from the recurrence
        positions = reports[name].summary.positional_encoding
        assert "ALiBi" not in positions and "relative" not in positions and "recurrent" in positions


@pytest.mark.parametrize("name", ["minimax", "falcon_h1"])
def test_bench_cache_formula_equals_measured_on_state_layers(name: str, tmp_path: Path) -> None:
    import torch
    from helpers.models import build_tokenizer
    from transformers import AutoConfig, AutoModelForCausalLM

    from llmscope.bench import benchmark
    from llmscope.loading.loader import load_model

    tokenizer = build_tokenizer(tmp_path)
    fields = dict(HYBRIDS[name], vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.for_model(name, **fields)).save_pretrained(str(tmp_path))
    loaded = load_model(str(tmp_path), device="cpu", dtype="float32")
    result = benchmark.bench_cache(loaded, "The capital of France is Paris. " * 3, (4,), warmup=0, repeat=1)
    kv = result.results[0].kv_cache
    assert kv is not None and kv.tokens > 20  # MiniMax's first layer holds no keys: the tokens come from the others
    assert kv.measured_bytes == kv.formula_bytes and "fixed" in kv.note
