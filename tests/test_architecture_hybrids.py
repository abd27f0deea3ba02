"""`architecture` on state-space and hybrid families (Jamba, Bamba, GraniteMoeHybrid, Falcon-H1, Zamba2, MiniMax,
LFM2, Mamba, Mamba2) and on Llama 4, SmolLM3, ERNIE 4.5 MoE and Hunyuan MoE: tiny random configs built here, every
cache figure checked against the tensors transformers' own cache holds after a real 40-token forward."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from conftest import write_config_folders

from llmscope.architecture.describe import describe_config_model
from llmscope.architecture.kvcache import cache_size
from llmscope.architecture.planner import PlannerSettings
from llmscope.render.display import human_bytes

COMMON = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              intermediate_size=48, max_position_embeddings=128)
MAMBA2 = dict(mamba_n_heads=4, mamba_d_state=16, mamba_n_groups=1, mamba_d_conv=4, mamba_expand=2, mamba_chunk_size=16)
FAMILIES: dict[str, dict[str, Any]] = {
    "jamba": dict(COMMON, attn_layer_period=2, attn_layer_offset=1, expert_layer_period=2, expert_layer_offset=1,
                  num_experts=4, num_experts_per_tok=2, mamba_d_state=8, mamba_d_conv=4, mamba_expand=2),
    "bamba": dict(COMMON, attn_layer_indices=[1], **MAMBA2),
    "granitemoehybrid": dict(COMMON, layer_types=["mamba", "attention"], num_local_experts=4, num_experts_per_tok=2,
                             shared_intermediate_size=24, **MAMBA2),
    "falcon_h1": dict(COMMON, head_dim=8, mamba_d_ssm=64, **MAMBA2),
    "zamba2": dict(COMMON, num_key_value_heads=4, layers_block_type=["mamba", "hybrid"], mamba_d_state=16,
                   mamba_d_conv=4, mamba_expand=2, mamba_ngroups=1, n_mamba_heads=4, chunk_size=16, num_mem_blocks=1),
    "minimax": dict(COMMON, head_dim=8, num_local_experts=4, num_experts_per_tok=2, block_size=16,
                    layer_types=["linear_attention", "full_attention"]),
    "lfm2": dict(COMMON, full_attn_idxs=[1], conv_L_cache=3),
    "mamba": dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, state_size=8, conv_kernel=4, expand=2),
    "mamba2": dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, state_size=16, conv_kernel=4, expand=2,
                   num_heads=4, head_dim=16, n_groups=1, chunk_size=16),
    "llama4_text": dict(COMMON, intermediate_size_mlp=64, head_dim=8, num_local_experts=4, num_experts_per_tok=1,
                        attention_chunk_size=16, no_rope_layer_interval=2, interleave_moe_layer_step=1),
    "smollm3": dict(COMMON, no_rope_layer_interval=2, pad_token_id=0, bos_token_id=1, eos_token_id=2),
    "ernie4_5_moe": dict(COMMON, moe_intermediate_size=16, moe_num_experts=4, moe_k=2, moe_num_shared_experts=1,
                         moe_layer_start_index=0, moe_layer_interval=1),
    "hunyuan_v1_moe": dict(COMMON, moe_intermediate_size=16, head_dim=8, num_experts=4, moe_topk=2),
}
STATE = ("jamba", "bamba", "granitemoehybrid", "falcon_h1", "zamba2", "minimax", "lfm2", "mamba", "mamba2")
TOKENS = 40


def family_config(name: str) -> Any:
    from transformers import AutoConfig

    return AutoConfig.for_model(name, **FAMILIES[name])


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_config_folders(tmp_path_factory, FAMILIES)


@pytest.fixture(scope="module")
def reports(family_dirs: dict[str, Path]) -> dict[str, Any]:
    return {name: describe_config_model(str(folder)) for name, folder in family_dirs.items()}


@pytest.fixture(scope="module")
def family_models() -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM

    models = {}
    for name in FAMILIES:
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
@pytest.mark.parametrize("name", list(FAMILIES))
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


def test_state_is_in_the_kv_table_and_the_plan(reports: dict[str, Any], family_dirs: dict[str, Path]) -> None:
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


def test_cli_shows_the_state(cli, family_dirs: dict[str, Path]) -> None:
    shown = cli("architecture", "-m", family_dirs["bamba"], "-q", env={"COLUMNS": "80"})
    assert shown.exit_code == 0, shown.stderr
    kv_table = shown.stdout[shown.stdout.index("KV cache ("):shown.stdout.index("Memory plan")]
    # conv (64 + 2 x 16 channels x 4) + SSM (4 x 16 x 16) in float32 (the config states no dtype)
    assert f"fixed {human_bytes((96 * 4 + 4 * 16 * 16) * 4)} of state" in " ".join(kv_table.split())
    assert "state" in shown.stdout[shown.stdout.index("Memory plan"):]


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


def test_kv_table_shows_the_context_asked_for(family_dirs: dict[str, Path], cli) -> None:
    asked = describe_config_model(str(family_dirs["smollm3"]), plan=PlannerSettings(context=100))
    assert [point.tokens for point in asked.kv_cache.points] == [100]
    assert asked.kv_cache.points[0].bytes == cache_size(family_config("smollm3"), 100, 1, "float32").total_bytes
    longer = describe_config_model(str(family_dirs["smollm3"]), plan=PlannerSettings(context=2048))
    assert [point.tokens for point in longer.kv_cache.points] == [1024, 2048]
    shown = cli("architecture", "-m", family_dirs["smollm3"], "--context", "100", "-q").stdout
    rows = [line.split()[0] for line in shown[shown.index("KV cache ("):shown.index("Memory plan")].splitlines()
            if line.strip()[:1].isdigit()]
    assert rows == ["100"]
    past = cli("architecture", "-m", family_dirs["smollm3"], "--context", "2k", "-q").stdout
    kv_table = past[past.index("KV cache ("):past.index("Memory plan")]
    assert "2,048*" in kv_table and "* past the model's context of 128 tokens" in kv_table


@pytest.mark.parametrize("name", ["minimax", "falcon_h1"])
def test_bench_cache_formula_equals_measured_on_state_layers(name: str, tmp_path: Path) -> None:
    import torch
    from conftest import build_tokenizer
    from transformers import AutoConfig, AutoModelForCausalLM

    from llmscope.bench import benchmark
    from llmscope.loading.loader import load_model

    tokenizer = build_tokenizer(tmp_path)
    fields = dict(FAMILIES[name], vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.for_model(name, **fields)).save_pretrained(str(tmp_path))
    loaded = load_model(str(tmp_path), device="cpu", dtype="float32")
    result = benchmark.bench_cache(loaded, "The capital of France is Paris. " * 3, (4,), warmup=0, repeat=1)
    kv = result.results[0].kv_cache
    assert kv is not None and kv.tokens > 20  # MiniMax's first layer holds no keys: the tokens come from the others
    assert kv.measured_bytes == kv.formula_bytes and "fixed" in kv.note
