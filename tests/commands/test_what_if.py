"""`llmscope what-if`: the variant grammar, each attention pattern against a mask written out by hand (on tiny
models, through the model's own eager attention), pooled KV heads against a hand-computed mean, the narrow cache
within its rounding bound, eviction that keeps the cache flat over a long generation, the KV formula against the
cache's own tensors, every tiny family, and (slow) the chapter's claims on the embedded model."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from llmscope.core.errors import UsageError
from llmscope.whatif.variants import Variant, parse_variant, parse_variants, preset_variants

LONG_TEXT = Path(__file__).resolve().parents[2] / "docs" / "examples" / "lighthouse.txt"


# ------------------------------------------------------------------------------------------------ grammar


@pytest.mark.parametrize(("spec", "canonical"), [
    ("window=32", "window=32"),
    ("window=28, sinks=4", "sinks=4,window=28"),
    ("strided=8", "strided=8"),
    ("block=64", "block=64,global=0"),
    ("block=64,global=4", "block=64,global=4"),
    ("random=16", "random=16,seed=0"),
    ("topk=8", "topk=8"),
    ("kv-heads=1", "kv-heads=1"),
    ("kv-cache=INT4", "kv-cache=int4"),
    ("kv-cache=int2+kv-heads=2+sinks=4,window=60", "sinks=4,window=60+kv-heads=2+kv-cache=int2"),
    ("full", ""),
])
def test_specs_parse_to_one_canonical_form(spec: str, canonical: str) -> None:
    assert parse_variant(spec).spec == canonical
    assert parse_variant(canonical).spec == canonical


@pytest.mark.parametrize(("spec", "says"), [
    ("window=0", "window must be at least 1"),
    ("window=x", "whole number"),
    ("sinks=4", "no variant takes sinks together"),
    ("window=4+strided=2", "two attention patterns"),
    ("kv-heads=1+kv-heads=2", "kv-heads twice"),
    ("kv-cache=int3", "int8 | int4 | int2"),
    ("kv-heads=1,window=4", "parts of their own"),
    ("windo=4", "unknown key 'windo'"),
    ("window=4++kv-heads=1", "empty part"),
    ("window", "not KEY=VALUE"),
])
def test_bad_specs_are_usage_errors(spec: str, says: str) -> None:
    with pytest.raises(UsageError, match=says.replace("|", r"\|")):
        parse_variant(spec)


def test_a_bad_spec_exits_2_before_any_load(cli, tmp_path: Path) -> None:
    result = cli("what-if", "hello", "-m", tmp_path / "no-such-model", "--variant", "window=4+topk=2")
    assert result.exit_code == 2
    assert "two attention patterns" in result.stderr and "no such" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_presets_tell_the_chapter_in_order() -> None:
    names = [v.spec for v in preset_variants(3)]
    assert names[:2] == ["window=32", "sinks=4,window=28"]
    assert "kv-heads=1" in names and "kv-heads=2" not in names  # 2 does not divide 3
    assert [v.spec for v in preset_variants(8) if v.kv_heads] == ["kv-heads=4", "kv-heads=1"]
    assert not any(v.kv_heads for v in preset_variants(1))
    assert names[-3:] == ["kv-cache=int8", "kv-cache=int4", "kv-cache=int2"]
    assert parse_variants(["window=4", "window=4", "full"]) == (parse_variant("window=4"),)


# ------------------------------------------------------------------------------------------------ masks by hand


def hand_visible(spec: str, q: int, k: int, model_window: int | None = None) -> bool:
    """The rules as the --help states them, one (query, key) pair at a time."""
    if k > q or (model_window is not None and q - k >= model_window):
        return False
    pattern = parse_variant(spec).pattern
    if pattern is None or pattern.kind == "topk":
        return True
    if pattern.kind == "window":
        return q - k < pattern.window
    if pattern.kind == "sinks":
        return k < pattern.sinks or q - k < pattern.window
    if pattern.kind == "strided":
        return q - k < pattern.stride or (q - k) % pattern.stride == 0
    if pattern.kind == "block":
        return k // pattern.block == q // pattern.block or k < pattern.global_tokens
    import torch

    from llmscope.whatif.patterns import random_scores

    if k == q:
        return True
    earlier = list(range(q))
    score = random_scores(pattern.seed, torch.tensor([q]), torch.tensor(earlier))[0].tolist()
    chosen = sorted(earlier, key=lambda j: (-score[j], j))[:pattern.random]
    return k in chosen


PATTERNS = ["window=5", "sinks=2,window=4", "strided=4", "block=6,global=2", "random=3,seed=7"]


@pytest.mark.parametrize("spec", PATTERNS)
@pytest.mark.parametrize("model_window", [None, 9])
def test_each_pattern_mask_equals_the_rule_written_out(spec: str, model_window: int | None) -> None:
    import torch

    from llmscope.whatif.patterns import LayerSpan, model_visible, pattern_visible

    positions = torch.arange(24)
    mask = model_visible(LayerSpan(window=model_window), positions, positions) & pattern_visible(
        parse_variant(spec).pattern, positions, positions)
    expected = [[hand_visible(spec, q, k, model_window) for k in range(24)] for q in range(24)]
    assert mask.tolist() == expected


def eager_logits(model: Any, ids: Any, allowed: Any) -> Any:
    """The model's own eager attention with a hand-built additive 4D mask (transformers takes a 4D mask as is)."""
    import torch

    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        mask = torch.zeros(allowed.shape, dtype=torch.float32).masked_fill(~allowed, torch.finfo(torch.float32).min)
        with torch.inference_mode():
            return model(input_ids=ids, attention_mask=mask[None, None], use_cache=False).logits
    finally:
        model.set_attn_implementation(previous)


def whatif_logits(loaded: Any, ids: Any, variant: Variant) -> Any:
    import torch

    from llmscope.whatif.attention import applied
    from llmscope.whatif.experiment import _pool, model_plan

    plan = model_plan(loaded.model)
    spans = {i: s for i, s in plan.spans.items() if s is not None}
    with applied(loaded.model, variant, spans, set(plan.changed), _pool(variant, plan)), torch.inference_mode():
        return loaded.model(input_ids=ids, use_cache=False).logits


@pytest.fixture(scope="module")
def tiny_loaded_models(tiny_models: dict[str, Path]) -> dict[str, Any]:
    from llmscope.loading.loader import load_model

    return {name: load_model(str(folder), device="cpu", dtype="float32") for name, folder in tiny_models.items()}


@pytest.mark.parametrize("family", ["llama", "mistral"])
@pytest.mark.parametrize("spec", PATTERNS)
def test_the_pattern_runs_in_every_layer_like_the_hand_mask(tiny_loaded_models: dict[str, Any], family: str,
                                                            spec: str) -> None:
    """mistral's own sliding window (32) stays; 40 tokens pass it."""
    import torch

    loaded = tiny_loaded_models[family]
    window = getattr(loaded.model.config, "sliding_window", None)
    torch.manual_seed(1)
    ids = torch.randint(3, 300, (1, 40))
    allowed = torch.tensor([[hand_visible(spec, q, k, window) for k in range(40)] for q in range(40)])
    expected = eager_logits(loaded.model, ids, allowed)
    got = whatif_logits(loaded, ids, parse_variant(spec))
    unchanged = whatif_logits(loaded, ids, Variant())
    assert torch.allclose(got, expected, atol=2e-5), (got - expected).abs().max()
    assert (got - unchanged).abs().max() > 1e-3  # the pattern did change something


def test_topk_keeps_each_querys_k_highest_scores() -> None:
    import torch

    from llmscope.whatif.attention import LayerPlan, RunState, whatif_attention
    from llmscope.whatif.patterns import LayerSpan

    torch.manual_seed(0)
    query, key, value = torch.randn(1, 4, 12, 8), torch.randn(1, 2, 12, 8), torch.randn(1, 2, 12, 8)

    class Module:
        llmscope_whatif_plan = LayerPlan(RunState(parse_variant("topk=3")), 0, LayerSpan(), True)

    module = Module()
    out, _ = whatif_attention(module, query, key, value, None, scaling=0.5)
    expected = torch.zeros(1, 12, 4, 8)
    for head in range(4):
        kv = head // 2  # two query heads share each KV head
        for q in range(12):
            scores = [(float(query[0, head, q] @ key[0, kv, k]) * 0.5, k) for k in range(q + 1)]
            top = sorted(scores, reverse=True)[:3]
            weights = torch.softmax(torch.tensor([s for s, _ in top]), dim=0)
            expected[0, q, head] = sum(w * value[0, kv, k] for w, (_, k) in zip(weights, top))
    assert torch.allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("spec", [*PATTERNS, "topk=6", "kv-heads=1", "", "sinks=2,window=4+kv-heads=1"])
def test_the_cache_gives_what_the_one_pass_read_gives(tiny_loaded_models: dict[str, Any], spec: str) -> None:
    """Token by token through the variant's own cache (evicting) = the one-pass read with the mask."""
    import torch

    from llmscope.whatif.attention import applied
    from llmscope.whatif.cache import variant_cache
    from llmscope.whatif.experiment import _pool, model_plan

    loaded = tiny_loaded_models["mistral"]
    model, variant = loaded.model, parse_variant(spec)
    plan = model_plan(model)
    torch.manual_seed(2)
    ids = torch.randint(3, 300, (1, 60))
    spans = {i: s for i, s in plan.spans.items() if s is not None}
    with applied(model, variant, spans, set(plan.changed), _pool(variant, plan)) as state, torch.inference_mode():
        one_pass = model(input_ids=ids, use_cache=False).logits[0]
        state.cache = variant_cache(model, variant, [plan.spans[i] for i in range(plan.layer_count)])
        rows = [model(input_ids=ids[:, :20], cache=state.cache, use_cache=True).logits[0, -1]]
        for t in range(20, 59):
            rows.append(model(input_ids=ids[:, t:t + 1], cache=state.cache, use_cache=True).logits[0, -1])
    assert torch.allclose(torch.stack(rows), one_pass[19:59], atol=1e-4)


def test_a_narrow_cache_read_token_by_token_is_the_one_pass_rule(tiny_loaded_models: dict[str, Any]) -> None:
    """kv-cache=int4 with group 32: after a 20-token prefill (no block complete, all full precision) every step reads
    the blocks completed before it as codes, exactly as the one-pass read does."""
    import torch

    from llmscope.whatif.attention import applied
    from llmscope.whatif.cache import variant_cache
    from llmscope.whatif.experiment import model_plan

    loaded = tiny_loaded_models["llama"]
    model, variant = loaded.model, parse_variant("kv-cache=int4")
    plan = model_plan(model)
    torch.manual_seed(3)
    ids = torch.randint(3, 300, (1, 100))
    spans = {i: s for i, s in plan.spans.items() if s is not None}
    with applied(model, variant, spans, set(plan.changed)) as state, torch.inference_mode():
        one_pass = model(input_ids=ids, use_cache=False).logits[0]
        state.cache = variant_cache(model, variant, [plan.spans[i] for i in range(plan.layer_count)])
        rows = [model(input_ids=ids[:, :20], cache=state.cache, use_cache=True).logits[0, -1]]
        for t in range(20, 99):
            rows.append(model(input_ids=ids[:, t:t + 1], cache=state.cache, use_cache=True).logits[0, -1])
        full = whatif_logits(loaded, ids, Variant())[0]
    assert torch.allclose(torch.stack(rows), one_pass[19:99], atol=1e-4)
    assert (one_pass - full).abs().max() > 1e-4  # the codes changed something


# ------------------------------------------------------------------------------------------------ pooled heads


def test_pooled_heads_are_the_mean_of_each_group(tiny_loaded_models: dict[str, Any]) -> None:
    import torch

    from llmscope.whatif.attention import attention_modules
    from llmscope.whatif.heads import pool_kv_heads

    model = tiny_loaded_models["llama"].model  # 4 query heads, 2 KV heads of 16
    module = attention_modules(model)[0]
    original_k, original_v = module.k_proj, module.v_proj
    k, v = original_k.weight.detach().clone(), original_v.weight.detach().clone()
    pooled = pool_kv_heads(model, attention_modules(model), 4, 2, 16, 1)
    assert torch.allclose(module.k_proj.weight, (k[:16] + k[16:32]) / 2)
    assert torch.allclose(module.v_proj.weight, (v[:16] + v[16:32]) / 2)
    assert module.num_key_value_groups == 4 and model.config.num_key_value_heads == 1
    pooled.restore()
    assert module.k_proj is original_k and module.v_proj is original_v
    assert module.num_key_value_groups == 2 and model.config.num_key_value_heads == 2


@pytest.mark.parametrize(("family", "attribute"), [("phi3", "qkv_proj"), ("gpt2", "c_attn")])
def test_fused_projections_pool_their_key_and_value_rows(tiny_loaded_models: dict[str, Any], family: str,
                                                         attribute: str) -> None:
    import torch

    from llmscope.whatif.attention import attention_modules
    from llmscope.whatif.heads import pool_kv_heads

    model = tiny_loaded_models[family].model  # 4 heads of 16, 4 KV heads
    module = attention_modules(model)[1]
    layer = getattr(module, attribute)
    weight = layer.weight.detach().t() if family == "gpt2" else layer.weight.detach()  # [out, in] either way
    pooled = pool_kv_heads(model, attention_modules(model), 4, 4, 16, 2)
    new = getattr(module, attribute).weight
    assert new.shape[0] == 64 + 2 * 32
    assert torch.allclose(new[:64], weight[:64])  # queries untouched
    assert torch.allclose(new[64:80], (weight[64:80] + weight[80:96]) / 2)  # keys: heads 0+1
    assert torch.allclose(new[96:112], (weight[128:144] + weight[144:160]) / 2)  # values: heads 0+1
    pooled.restore()
    assert getattr(module, attribute) is layer


def test_packed_projections_are_dequantized_before_pooling(tiny_gguf: Path) -> None:
    import torch

    from llmscope.loading.loader import load_model
    from llmscope.whatif.attention import attention_modules
    from llmscope.whatif.heads import pool_kv_heads

    loaded = load_model(str(tiny_gguf), device="cpu", quantize="int8")
    module = attention_modules(loaded.model)[0]
    assert hasattr(module.k_proj, "packed")
    dense = module.k_proj.packed.dequantize()
    pooled = pool_kv_heads(loaded.model, attention_modules(loaded.model), 4, 2, 16, 1)
    assert torch.allclose(module.k_proj.weight, (dense[:16] + dense[16:32]) / 2)
    pooled.restore()


# ------------------------------------------------------------------------------------------------ narrow cache


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_narrow_codes_round_trip_within_half_a_step(bits: int) -> None:
    import torch

    from llmscope.whatif.kvquant import (
        _pack,
        _unpack,
        dequantize_keys,
        dequantize_values,
        quantize_keys,
        quantize_values,
    )

    torch.manual_seed(bits)
    x = torch.randn(2, 3, 32, 64) * 3
    keys = quantize_keys(x, bits)
    assert keys.packed.dtype == torch.uint8 and keys.packed.shape[-1] == 64 * bits // 8  # really narrow
    back = dequantize_keys(keys)
    step = keys.scale.float()  # per channel, over the block
    slack = 1e-3 * x.abs().amax(dim=-2, keepdim=True)  # the float16 zero point's rounding
    assert ((x - back).abs() <= step / 2 + slack).all()
    values = quantize_values(x, bits, 32)
    back = dequantize_values(values)
    step = values.scale.float().repeat_interleave(32, dim=-1)  # per token, per group of 32 channels
    slack = 1e-3 * x.abs().reshape(2, 3, 32, 2, 32).amax(-1).repeat_interleave(32, dim=-1)
    assert ((x - back).abs() <= step / 2 + slack).all()
    codes = torch.randint(0, 2 ** bits, (5, 64))
    assert torch.equal(_unpack(_pack(codes, bits), bits, 64), codes.float())
    assert torch.equal(dequantize_keys(quantize_keys(torch.full((1, 1, 4, 8), 2.5), bits)),
                       torch.full((1, 1, 4, 8), 2.5))  # a constant block comes back exactly


def generate_bytes(loaded: Any, spec: str, new_tokens: int, prompt: int = 10) -> list[int]:
    """The cache's tensor bytes after every step of a greedy generation with the variant's own cache."""
    import torch

    from llmscope.generation.decoding import decode_steps, prompt_batch
    from llmscope.whatif.attention import applied
    from llmscope.whatif.cache import cache_bytes, variant_cache
    from llmscope.whatif.experiment import _pool, model_plan

    model, variant = loaded.model, parse_variant(spec)
    plan = model_plan(model)
    spans = {i: s for i, s in plan.spans.items() if s is not None}
    held = []
    with applied(model, variant, spans, set(plan.changed), _pool(variant, plan)) as state:
        state.cache = variant_cache(model, variant, [plan.spans[i] for i in range(plan.layer_count)])
        batch = prompt_batch([list(range(3, 3 + prompt))], 0, torch.device("cpu"))
        for _ in decode_steps(model, batch, new_tokens, cache=state.cache):
            held.append(cache_bytes(state.cache))
    return held


def test_eviction_keeps_the_cache_flat_over_a_long_generation(tiny_loaded_models: dict[str, Any]) -> None:
    loaded = tiny_loaded_models["llama"]
    full = generate_bytes(loaded, "", 200)
    window = generate_bytes(loaded, "window=16", 200)
    sinks = generate_bytes(loaded, "sinks=4,window=12", 200)
    block = generate_bytes(loaded, "block=16,global=2", 200)
    narrow = generate_bytes(loaded, "sinks=4,window=40+kv-cache=int4", 200)
    per_token = full[1] - full[0]
    assert per_token == 2 * 2 * 2 * 16 * 4  # layers x K,V x KV heads x head dim x float32 bytes
    assert full[-1] - full[0] == 199 * per_token  # grows every step
    assert set(window[10:]) == {15 * per_token}  # window - 1 positions at rest, from step 6 on
    assert set(sinks[10:]) == {15 * per_token}
    assert max(block) == 17 * per_token and min(block[20:]) == 2 * per_token  # a saw-tooth: globals + its block
    assert max(narrow[60:]) == max(narrow[100:])  # bounded: codes are evicted too
    assert max(narrow) < 44 * per_token


@pytest.mark.parametrize("spec", ["", "window=16", "sinks=4,window=12", "block=16,global=2", "strided=4",
                                  "kv-heads=1", "kv-cache=int8", "kv-cache=int2", "sinks=3,window=40+kv-cache=int4",
                                  "block=24,global=3+kv-cache=int4+kv-heads=1"])
@pytest.mark.parametrize("family", ["llama", "mistral"])
def test_the_kv_formula_is_what_the_cache_holds(tiny_loaded_models: dict[str, Any], spec: str, family: str) -> None:
    """kvcache.cache_size with the variant's layout = the bytes of the cache's own tensors, at every step."""
    from llmscope.architecture.kvcache import cache_size
    from llmscope.whatif.cache import variant_layout
    from llmscope.whatif.experiment import model_plan

    loaded = tiny_loaded_models[family]
    variant, plan = parse_variant(spec), model_plan(loaded.model)
    held = generate_bytes(loaded, spec, 90, prompt=37)
    for step, measured in enumerate(held):
        layout = variant_layout(variant, plan.type_spans, 37 + step, variant.kv_heads)
        assert measured == cache_size(loaded.model.config, 37 + step, 1, "float32", layout=layout).kv_bytes, step


# ------------------------------------------------------------------------------------------------ whole runs


def short_text() -> str:
    return LONG_TEXT.read_text()[:700]


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2", "phi3", "mistral"])
def test_every_family_runs_or_names_what_it_leaves(tiny_loaded_models: dict[str, Any], family: str) -> None:
    from llmscope.whatif.experiment import what_if
    from llmscope.whatif.results import WhatIfSettings

    loaded = tiny_loaded_models[family]
    variants = parse_variants(["window=8", "sinks=2,window=6", "topk=4", "kv-heads=1", "kv-cache=int4"])
    result = what_if(loaded, short_text(), WhatIfSettings(variants=variants, new_tokens=3, max_tokens=120,
                                                          passkey_depths=(0.5,), passkey_tokens=200))
    assert [row.name for row in result.variants] == ["full", *(v.spec for v in variants)]
    base = result.variants[0]
    assert base.kl_mean == 0.0 and base.top1_agreement == 1.0 and base.greedy_parts_at is None
    for row in result.variants:
        assert row.kv_cache_measured_bytes == row.kv_cache_bytes
        assert row.kv_cache_end_bytes == row.kv_cache_end_expected_bytes
        assert len(row.kl_per_token) == result.scored and math.isfinite(row.perplexity)
        assert len(row.passkey) == 1 and 180 <= row.passkey[0].tokens <= 200
    rows = {row.name: row for row in result.variants}
    assert rows["window=8"].kl_mean > 0 and rows["window=8"].kv_cache_bytes < base.kv_cache_bytes
    heads = rows["kv-heads=1"]
    if family == "qwen2":  # one KV head already
        assert heads.kl_mean == 0.0 and any("already has 1 KV head" in n for n in heads.unchanged_layers)
        assert heads.kv_cache_bytes == base.kv_cache_bytes
    else:
        kv = 4 if family in ("gpt2", "phi3") else 2
        assert heads.kl_mean > 0 and heads.kv_cache_bytes * kv == base.kv_cache_bytes


def test_a_linear_attention_hybrid_names_its_state_layers() -> None:
    """Qwen3-Next: every fourth layer is full attention, the rest gated delta-net layers with a fixed state."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from llmscope.whatif.experiment import model_plan

    config = AutoConfig.for_model(
        "qwen3_next", vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
        max_position_embeddings=128, intermediate_size=48, moe_intermediate_size=16,
        shared_expert_intermediate_size=16, num_key_value_heads=2, head_dim=8, num_experts=4, num_experts_per_tok=2,
        linear_num_value_heads=4, linear_num_key_heads=2, linear_key_head_dim=8, linear_value_head_dim=8,
        linear_conv_kernel_dim=4)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    plan = model_plan(model)
    assert plan.changed == frozenset({3})
    assert plan.notes == ("layers 0-2 (linear_attention): a fixed recurrent state, no keys to mask, evict or "
                          "quantize",)
    ids = torch.randint(0, 100, (1, 24))

    class Loaded:
        model: Any

    loaded = Loaded()
    loaded.model = model
    got = whatif_logits(loaded, ids, parse_variant("window=4"))
    assert (got - whatif_logits(loaded, ids, Variant())).abs().max() > 1e-4  # its one attention layer changed


def test_json_has_the_documented_shape(cli, tiny_model_dir: Path, tmp_path: Path) -> None:
    page = tmp_path / "what-if.html"
    result = cli("what-if", short_text(), "-m", tiny_model_dir, "--variant", "window=8", "--variant",
                 "kv-heads=1+kv-cache=int8", "-n", "3", "--max-tokens", "100", "--passkey-depth", "0.2,0.8",
                 "--passkey-tokens", "200", "--context", "200", "--json", "--html", page)
    assert result.exit_code == 0, result.stderr
    document = result.json()
    assert document["command"] == "what-if" and document["model"] == str(tiny_model_dir)
    assert document["tokens"] == 100 and document["scored"] == 99 and document["context"] == 200  # no BOS
    assert [v["name"] for v in document["variants"]] == ["full", "window=8", "kv-heads=1+kv-cache=int8"]
    assert [v["spec"] for v in document["variants"]] == ["", "window=8", "kv-heads=1+kv-cache=int8"]
    for row in document["variants"]:
        assert {"perplexity", "kl_mean", "kl_max", "top1_agreement", "kv_cache_bytes", "kv_cache_bytes_at_context",
                "peak_memory_bytes", "decode_tokens_per_s", "passkey"} <= set(row)
        assert [p["depth"] for p in row["passkey"]] == [0.2, 0.8]
        assert all(isinstance(p["found"], bool) for p in row["passkey"])
        assert row["peak_memory_bytes"] > 0
    assert document["variants"][1]["kv_cache_bytes_at_context"] == 2 * 2 * 2 * 16 * 4 * 7  # window - 1 positions
    assert "what-if" in page.read_text() and '"kv_cache_bytes_at_context"' in page.read_text()


def test_human_tables_and_plot(cli, tiny_model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    plot = tmp_path / "what-if.png"
    result = cli("what-if", short_text(), "-m", tiny_model_dir, "--variant", "window=8", "--variant",
                 "sinks=2,window=6", "--variant", "kv-heads=1", "--variant", "kv-cache=int4", "-n", "2",
                 "--max-tokens", "80", "--plot", plot, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.stderr
    assert "Quality on 79 tokens" in result.stdout and "Memory and speed" in result.stdout
    assert all(len(line) <= 80 for line in result.stdout.splitlines())
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_a_kv_head_count_the_model_cannot_take_exits_2(cli, tiny_model_dir: Path) -> None:
    result = cli("what-if", "hello there", "-m", tiny_model_dir, "--variant", "kv-heads=3", "-n", "0")
    assert result.exit_code == 2 and "the model has 2 KV heads" in result.stderr


# ------------------------------------------------------------------------------------------------ the views


def test_the_page_route_reads_its_variants() -> None:
    from llmscope.server.openai_shapes import ApiError
    from llmscope.server.whatif_route import PAGE_VARIANTS, page_settings

    settings = page_settings({"prompt": "x"}, 256)
    assert [v.spec for v in settings.variants] == list(PAGE_VARIANTS) and settings.new_tokens == 8
    assert page_settings({"variants": ["kv-heads=1"], "new_tokens": 0}, 256).new_tokens == 0
    for body, says in (({"variants": ["window=0"]}, "window must be at least 1"),
                       ({"variants": "window=4"}, "must be list"),
                       ({"variants": ["window=4"] * 9}, "at most 8"),
                       ({"new_tokens": 300}, "more than this server allows")):
        with pytest.raises(ApiError, match=says):
            page_settings(body, 256)


@pytest.mark.browser
def test_the_html_page_shows_the_json_numbers(cli, tiny_model_dir: Path, tmp_path: Path) -> None:
    """The --html page opened in chromium (network blocked): every row's figures are the --json document's."""
    import json
    import shutil

    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (README: browser tests)")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium found: apt-get install chromium")
    page_file = tmp_path / "what-if.html"
    result = cli("what-if", short_text(), "-m", tiny_model_dir, "--variant", "sinks=2,window=6", "--variant",
                 "kv-heads=1", "-n", "3", "--max-tokens", "60", "--passkey-depth", "0.5", "--passkey-tokens", "200",
                 "--json", "--html", page_file)
    assert result.exit_code == 0, result.stderr
    document = result.json()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--headless", "--no-sandbox"])
        context = browser.new_context()
        asked: list[str] = []
        context.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:") else (
            asked.append(route.request.url), route.abort()))
        errors: list[str] = []
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(page_file.resolve().as_uri())
        page.wait_for_selector("tr.whatif-cost")
        quality = page.eval_on_selector_all("tr.whatif-quality", "rows => rows.map(r => Object.assign({}, r.dataset))")
        cost = page.eval_on_selector_all("tr.whatif-cost", "rows => rows.map(r => Object.assign({}, r.dataset))")
        embedded = json.loads(page.eval_on_selector("#llmscope-data", "e => e.textContent"))
        browser.close()
    assert errors == [] and asked == []
    assert embedded["variants"] == document["variants"]
    for shown, row in zip(quality, document["variants"], strict=True):
        assert shown["variant"] == row["name"]
        assert float(shown["perplexity"]) == row["perplexity"] and float(shown["klMean"]) == row["kl_mean"]
        assert float(shown["top1"]) == row["top1_agreement"]
        assert int(shown["passkeysFound"]) == sum(p["found"] for p in row["passkey"])
    for shown, row in zip(cost, document["variants"], strict=True):
        assert int(shown["kvBytes"]) == row["kv_cache_bytes"]
        assert int(shown["kvBytesAtContext"]) == row["kv_cache_bytes_at_context"]
        assert int(shown["measuredBytes"]) == row["kv_cache_end_bytes"]
        assert float(shown["tokensPerS"]) == row["decode_tokens_per_s"]
