"""`architecture` on the families people run now (mixture-of-experts, multi-head latent attention, sliding / full
alternation, Falcon's multi-query): parameters and cache bytes against transformers' own, and the memory planner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers.architectures import FAMILIES

from llmscope.architecture.describe import describe_config_model
from llmscope.architecture.kvcache import cache_size
from llmscope.architecture.planner import PlannerSettings, parse_memory, parse_tokens, plan_memory
from llmscope.core.errors import UsageError

MOE = ("mixtral", "qwen3_moe", "deepseek_v3", "gpt_oss", "qwen3_next")


def family_config(name: str) -> Any:
    from transformers import AutoConfig

    return AutoConfig.for_model(name, **FAMILIES[name])


@pytest.fixture(scope="module")
def family_models() -> dict[str, Any]:
    """Each family as a real tiny model with random weights (float32, CPU)."""
    import torch
    from transformers import AutoModelForCausalLM

    models = {}
    for name in FAMILIES:
        torch.manual_seed(0)
        models[name] = AutoModelForCausalLM.from_config(family_config(name)).eval()
    return models


def held_bytes(cache: Any) -> int:
    """Bytes of every tensor transformers' cache holds: keys, values, convolution and recurrent states."""
    import torch

    total = 0
    for layer in cache.layers:
        tensors = [getattr(layer, "keys", None), getattr(layer, "values", None)]
        for states in (getattr(layer, "conv_states", None), getattr(layer, "recurrent_states", None)):
            tensors += list(states.values()) if isinstance(states, dict) else []
        total += sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))
    return total


def _walk(node: Any) -> list[Any]:
    return [node] + [n for child in node.children for n in _walk(child)]


@pytest.mark.parametrize("name", list(FAMILIES))
def test_total_and_active_parameters(name: str, family_dirs: dict[str, Path], family_models: dict[str, Any]) -> None:
    report = describe_config_model(str(family_dirs[name]))
    model = family_models[name]
    p = report.parameters
    assert p.total == model.num_parameters()
    assert p.embeddings + p.attention + p.mlp + p.experts + p.router + p.norms + p.lm_head + p.other == p.total
    k = model.config.num_experts_per_tok if name in MOE else None
    skipped = 0  # routed-expert weights a token does not run: each stacked tensor is [experts, ...]
    for path, parameter in model.named_parameters():
        if ".mlp.experts." in path:
            experts = parameter.shape[0]
            skipped += parameter.numel() // experts * (experts - k)
    assert p.active == p.total - skipped
    if name in MOE:
        assert skipped > 0 and p.experts > 0 and p.router > 0
        assert report.summary.experts == 4 and report.summary.experts_per_token == 2
        expert_nodes = [node for node in _walk(report.tree) if node.name == "experts"]
        assert expert_nodes and all(node.experts == (4, 2) for node in expert_nodes)
    else:
        assert p.active == p.total and p.experts == 0 and report.summary.experts is None


@pytest.mark.parametrize("name", list(FAMILIES))
def test_cache_bytes_equal_transformers_cache_after_a_forward(name: str, family_models: dict[str, Any]) -> None:
    import torch

    from llmscope.bench.benchmark import cache_bytes

    model = family_models[name]
    tokens, batch = 21, 2  # past every window (8)
    with torch.no_grad():
        output = model(torch.randint(0, 100, (batch, tokens)), use_cache=True)
    measured = held_bytes(output.past_key_values)
    predicted = cache_size(model.config, tokens, batch, "float32")
    assert predicted.total_bytes == measured
    assert cache_bytes(output.past_key_values) == measured  # what bench-cache reports as measured
    if name in ("gemma2", "gpt_oss"):
        sliding = [g for g in predicted.groups if g.kind == "sliding"]
        assert sliding and sliding[0].window == 8 and sliding[0].positions == 7  # window - 1 kept
    if name == "deepseek_v3":  # latent (16) + rotary key (4) per token and layer: one "head"
        assert [g.values_per_token for g in predicted.groups] == [20]
    if name == "qwen3_next":
        linear = [g for g in predicted.groups if g.kind == "linear"]
        assert linear[0].layers == 6 and linear[0].positions == 0 and linear[0].state_bytes > 0
        longer = cache_size(model.config, tokens + 50, batch, "float32")
        assert [g.state_bytes for g in longer.groups] == [g.state_bytes for g in predicted.groups]


def test_labels(family_dirs: dict[str, Path]) -> None:
    reports = {name: describe_config_model(str(folder)) for name, folder in family_dirs.items()}
    kinds = {name: report.summary.attention.kind for name, report in reports.items()}
    assert kinds == {"mixtral": "grouped-query", "qwen3_moe": "grouped-query", "deepseek_v3": "multi-head latent",
                     "gemma2": "grouped-query", "gpt_oss": "grouped-query", "qwen3_next": "grouped-query",
                     "falcon": "multi-query"}
    deepseek = reports["deepseek_v3"].summary.attention
    assert (deepseek.latent_rank, deepseek.rope_dims) == (16, 4) and "16-dim latent" in deepseek.description
    assert reports["falcon"].summary.attention.kv_heads == 1
    assert reports["gemma2"].summary.layer_pattern == "sliding 8 / full, alternating ×2"
    assert reports["gpt_oss"].summary.layer_pattern == "sliding 8 / full, alternating ×2"
    assert reports["qwen3_next"].summary.layer_pattern == "3 × linear / full, repeating ×2"
    assert reports["mixtral"].summary.layer_pattern == "full on all 4 layers"
    assert reports["deepseek_v3"].summary.shared_experts == 1 and reports["qwen3_next"].summary.shared_experts == 1
    assert reports["gemma2"].kv_cache.window == 8 and "keeps 7 positions" in reports["gemma2"].kv_cache.note


def test_planner_on_the_embedded_models_figures() -> None:
    from transformers import LlamaConfig

    config = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192,
                         tie_word_embeddings=True)
    plan = plan_memory(config, 134_515_008, PlannerSettings(batch_size=2, kv_dtype="float16",
                                                            weights_dtype="float32", gpu_memory=800 << 20))
    assert [row.tokens for row in plan.rows] == [4096, 8192] and not plan.past_context
    per_token = 2 * 30 * 3 * 64 * 2  # K and V x layers x KV heads x head dim x float16
    assert plan.rows[-1].kv_bytes == 8192 * 2 * per_token == 377_487_360
    assert plan.rows[-1].total_bytes == 4 * 134_515_008 + 377_487_360 and plan.rows[-1].fits == (False,)
    assert plan.rows[0].fits == (True,)


def test_planner_parsing() -> None:
    assert (parse_tokens("32k"), parse_tokens("128K"), parse_tokens("4096")) == (32768, 131072, 4096)
    assert parse_memory("80GB") == parse_memory("80GiB") == 80 << 30 and parse_memory("512MB") == 512 << 20
    for bad in ("12q", "nan", "0", "-5", "1.5", "inf"):
        with pytest.raises(UsageError):
            parse_tokens(bad)
    for bad in ("lots", "80", "nan GB", "0GB"):
        with pytest.raises(UsageError):
            parse_memory(bad)
    with pytest.raises(UsageError):
        PlannerSettings(batch_size=0)
    with pytest.raises(UsageError):
        PlannerSettings(kv_dtype="int3")


def test_gemma_lens_applies_final_logit_softcapping(tmp_path: Path) -> None:
    import torch
    from helpers.models import build_tokenizer
    from transformers import AutoConfig, AutoModelForCausalLM

    from llmscope.inspection.next_token import next_token_distribution
    from llmscope.loading.loader import load_model

    tokenizer = build_tokenizer(tmp_path)
    fields = dict(FAMILIES["gemma2"], vocab_size=len(tokenizer), final_logit_softcapping=0.2,
                  pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                  eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.for_model("gemma2", **fields)).save_pretrained(str(tmp_path))
    loaded = load_model(str(tmp_path), device="cpu", dtype="float32")
    result = next_token_distribution(loaded, "The capital of France is", top_k=3, lens=True)
    last = result.lens[-1]
    assert last.top_id == result.answer.token_id
    assert last.answer_probability == pytest.approx(result.answer.probability, abs=1e-6)
    ids = torch.tensor([loaded.tokenizer("The capital of France is")["input_ids"]])
    with torch.no_grad():
        hidden = loaded.model.model(ids).last_hidden_state[0, -1]
        raw = torch.softmax(loaded.model.lm_head(hidden), dim=-1)  # without the cap
    uncapped = float(raw[result.answer.token_id])
    assert abs(uncapped - result.answer.probability) / result.answer.probability > 0.05  # the cap matters here


def test_bench_cache_formula_counts_the_window(tiny_models: dict[str, Path]) -> None:
    from llmscope.bench import benchmark
    from llmscope.loading.loader import load_model

    loaded = load_model(str(tiny_models["mistral"]), device="cpu")  # sliding window 32 on both layers
    result = benchmark.bench_cache(loaded, "The capital of France is Paris. " * 6, (4,), warmup=0, repeat=1)
    kv = result.results[0].kv_cache
    assert kv is not None and kv.tokens > 32
    assert kv.measured_bytes == kv.formula_bytes == 31 * kv.bytes_per_token  # window - 1 positions kept
    assert "window 32 - 1" in kv.note
