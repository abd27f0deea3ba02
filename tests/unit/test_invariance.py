"""Batch and cache invariance on tiny models: a row's logits, hidden states and greedy tokens are the same bit for bit
alone, in padded batches of any size and order, and token by token with the KV cache, on every weight path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.invariance import PROMPTS, all_logits, assert_batches_match_alone, greedy, prompt_ids, unpadded

from llmscope.loading.loader import load_model


@pytest.mark.parametrize("kind", ["float32", "int4", "int8", "bfloat16"])
def test_a_row_gets_the_same_bits_whatever_rows_come_with_it(kind: str) -> None:
    """The property every linear layer relies on: row i of a call of M rows equals the call of row i alone."""
    import torch

    from llmscope.invariance.kernels import InvariantLinear
    from llmscope.loading.quant.modules import PackedLinear
    from llmscope.loading.quant.packing import quantize

    torch.manual_seed(0)
    dense = InvariantLinear(256, 192, bias=True)
    layer = dense if kind == "float32" else PackedLinear(quantize(dense.weight.data, kind), dense.bias.data)
    if kind == "bfloat16":  # a dense bfloat16 GEMM: it runs in fixed-shape tiles too
        from llmscope.invariance.kernels import make_linears_invariant

        holder = torch.nn.Sequential(layer)
        make_linears_invariant(holder)
        layer = holder[0]
    x = torch.randn(135, 256)
    with torch.inference_mode():
        alone = torch.cat([layer(x[i:i + 1]) for i in range(135)])
        for rows in (1, 2, 3, 4, 7, 8, 64, 135):
            assert torch.equal(layer(x[:rows]), alone[:rows]), rows
        assert torch.equal(layer(x[None, :5]), alone[None, :5])  # [batch, positions, features] too


def _gemm_calls(run) -> list[tuple[str, tuple[tuple[int, ...], ...]]]:
    """Every GEMM-like call (linear, addmm, mm, bmm, matmul) `run()` makes, with its operands' shapes."""
    import torch
    from torch.overrides import TorchFunctionMode

    names = {"linear", "addmm", "mm", "bmm", "matmul", "__matmul__"}
    calls = []

    class Spy(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            name = getattr(func, "__name__", "")
            if name in names:
                calls.append((name, tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor))))
            return func(*args, **(kwargs or {}))

    with Spy():
        run()
    return calls


@pytest.mark.parametrize("mode", ["none", "int8"])
def test_every_gemm_of_a_forward_pass_has_one_fixed_shape_per_weight(tiny_model_dir: Path, mode: str) -> None:
    """The mechanism itself, not one BLAS's behaviour: whatever the batch (1 prompt, 3 of unequal lengths, a cached
    decode step), each dense GEMM gets exactly TILE_ROWS rows, and attention's GEMMs are [kv heads, TILE_ROWS, head dim]
    x [kv heads, head dim, KEY_CHUNK] and [kv heads, TILE_ROWS, KEY_CHUNK] x [kv heads, KEY_CHUNK, head dim + 1]. The
    only other products are the rotary embedding's outer products (inner dimension 1: one multiply, no sum)."""
    from llmscope.invariance.kernels import KEY_CHUNK, TILE_ROWS

    loaded = load_model(str(tiny_model_dir), device="cpu", quantize=mode)
    config = loaded.model.config
    kv_heads, depth = config.num_key_value_heads, config.hidden_size // config.num_attention_heads
    ids = prompt_ids(loaded, PROMPTS[:3])
    shapes_per_weight: dict[tuple[int, ...], set[tuple[int, ...]]] = {}
    calls = (_gemm_calls(lambda: all_logits(loaded, ids[:1])) + _gemm_calls(lambda: all_logits(loaded, ids))
             + _gemm_calls(lambda: greedy(loaded, ids, 3, use_cache=True)))
    assert calls
    for name, shapes in calls:
        if name in ("linear", "addmm", "mm"):
            rows = shapes[1] if name == "addmm" else shapes[0]
            assert rows[0] == TILE_ROWS and len(rows) == 2, (name, shapes)
            shapes_per_weight.setdefault(shapes[-1], set()).add(rows)
        elif name == "bmm":
            assert shapes[0] in ((kv_heads, TILE_ROWS, depth), (kv_heads, TILE_ROWS, KEY_CHUNK)), shapes
            assert shapes[1] in ((kv_heads, depth, KEY_CHUNK), (kv_heads, KEY_CHUNK, depth + 1)), shapes
        else:  # rotary: [B, D/2, 1] @ [B, 1, L]
            assert shapes[0][-1] == 1 and shapes[1][-2] == 1, (name, shapes)
    assert all(len(rows) == 1 for rows in shapes_per_weight.values())  # one shape per weight, whatever the batch
    assert any(name == "bmm" for name, _ in calls)
    assert len(shapes_per_weight) == (5 if mode == "none" else 0)  # q and o, k and v, gate and up, down, the head
    if mode == "int8":  # the packed kernel computes each row on its own: its calls are not tiled
        assert not any(name == "linear" and shapes[-1] != (config.vocab_size, config.hidden_size)
                       for name, shapes in calls)


@pytest.mark.parametrize("mode", ["none", "int8", "int4"])
def test_batches_of_1_3_8_in_three_orders_match_alone(tiny_model_dir: Path, mode: str) -> None:
    loaded = load_model(str(tiny_model_dir), device="cpu", quantize=mode)
    assert loaded.invariant and loaded.model.config._attn_implementation == "llmscope_invariant"
    ids = prompt_ids(loaded, PROMPTS)
    assert len({len(row) for row in ids}) > 1
    assert_batches_match_alone(loaded, ids)  # padded
    assert_batches_match_alone(loaded, unpadded(ids))  # unpadded


@pytest.mark.parametrize("family", ["qwen2", "gpt2", "phi3", "mistral"])
def test_other_families_are_batch_invariant(tiny_models: dict[str, Path], family: str) -> None:
    loaded = load_model(str(tiny_models[family]), device="cpu")
    assert loaded.invariant
    assert_batches_match_alone(loaded, prompt_ids(loaded, PROMPTS[:3]))


@pytest.mark.parametrize("mode", ["none", "int8", "int4"])
def test_cache_and_no_cache_give_the_same_logits_every_step(tiny_model_dir: Path, mode: str) -> None:
    import torch

    loaded = load_model(str(tiny_model_dir), device="cpu", quantize=mode)
    rows = prompt_ids(loaded, PROMPTS[:4])
    cached, cached_logits = greedy(loaded, rows, 24, use_cache=True)
    recomputed, recomputed_logits = greedy(loaded, rows, 24, use_cache=False)
    assert cached == recomputed
    assert all(torch.equal(a, b) for a, b in zip(cached_logits, recomputed_logits))
    for row, ids in enumerate(rows):  # and each row alone
        alone, alone_logits = greedy(loaded, [ids], 24, use_cache=True)
        assert alone[0] == cached[row]
        assert all(torch.equal(a[0], b[row]) for a, b in zip(alone_logits, cached_logits))


def test_a_sliding_window_cache_past_the_window_stays_invariant(tiny_models: dict[str, Path]) -> None:
    """mistral's tiny config has a 32-token window: the cache drops keys, the grid stays aligned to positions."""
    loaded = load_model(str(tiny_models["mistral"]), device="cpu")
    rows = prompt_ids(loaded, [PROMPTS[6] * 2, PROMPTS[1]])
    assert len(rows[0]) > 32
    cached, _ = greedy(loaded, rows, 40, use_cache=True)
    recomputed, _ = greedy(loaded, rows, 40, use_cache=False)
    alone, _ = greedy(loaded, rows[:1], 40, use_cache=True)
    assert cached == recomputed and cached[0] == alone[0]


def test_many_key_chunks_and_query_blocks_stay_invariant(tiny_model_dir: Path, monkeypatch) -> None:
    """Small chunks (16 keys) and blocks (8 queries) so that prompts span several of each, with a padded companion
    that shifts the grid: alone, batched and cached still agree to the last bit."""
    import torch

    from llmscope.invariance import kernels

    monkeypatch.setattr(kernels, "KEY_CHUNK", 16)
    monkeypatch.setattr(kernels, "QUERY_BLOCK", 8)
    loaded = load_model(str(tiny_model_dir), device="cpu")
    rows = prompt_ids(loaded, [PROMPTS[6] + " " + PROMPTS[3], PROMPTS[1], PROMPTS[0]])
    assert len(rows[0]) > 40
    assert_batches_match_alone(loaded, rows)
    cached, cached_logits = greedy(loaded, rows, 12, use_cache=True)
    recomputed, recomputed_logits = greedy(loaded, rows, 12, use_cache=False)
    assert cached == recomputed and all(torch.equal(a, b) for a, b in zip(cached_logits, recomputed_logits))


def test_library_batches_match_single_calls(tiny_model_dir: Path) -> None:
    """generate_encoded and next-token batches: each prompt's figures equal its own call's, to the last bit."""
    from llmscope.core.command_settings import GenerationSettings, NextTokenSettings
    from llmscope.generation.generate import generate_encoded
    from llmscope.generation.prompts import encode_prompt
    from llmscope.inspection.next_token import next_token_encoded

    loaded = load_model(str(tiny_model_dir), device="cpu")
    encoded = [encode_prompt(loaded, text, new_tokens=6) for text in PROMPTS[:5]]
    settings = GenerationSettings(max_new_tokens=6)
    together = generate_encoded(loaded, encoded, settings)
    for prompt, result in zip(encoded, together):
        lone = generate_encoded(loaded, [prompt], settings)[0]
        assert lone.token_ids == result.token_ids
        assert [t.logprob for t in lone.tokens] == [t.logprob for t in result.tokens]
    inspected = next_token_encoded(loaded, encoded, NextTokenSettings(top_k=5, steps=2))
    for prompt, result in zip(encoded, inspected):
        lone = next_token_encoded(loaded, [prompt], NextTokenSettings(top_k=5, steps=2))[0]
        assert [[(c.token_id, c.probability, c.logit) for c in step.top] for step in lone.steps] == [
            [(c.token_id, c.probability, c.logit) for c in step.top] for step in result.steps]


def test_check_invariance_shows_the_differences_of_the_models_own_numerics(tiny_model_dir: Path) -> None:
    """With invariance left out (SDPA, a plain GEMM) the check measures and reports the differences, never hides them;
    SDPA gives no attention weights, so that row says so."""
    from llmscope.invariance.check import COMPANIONS, check_invariance

    loaded = load_model(str(tiny_model_dir), device="cpu", invariant=False)
    assert not loaded.invariant
    ids = loaded.tokenizer(PROMPTS[0])["input_ids"]
    result = check_invariance(loaded, ids, PROMPTS[0], new_tokens=3,
                              companions=[loaded.tokenizer(c)["input_ids"] for c in COMPANIONS])
    weights = [d for d in result.differences if d.quantity == "attention weights"]
    assert all(d.identical is None and d.max_abs is None for d in weights)
    logits = next(d for d in result.differences if d.quantity == "logits" and d.comparison == "batch")
    assert logits.max_abs is not None and logits.max_abs < 1e-3  # float32: small, measured, shown
    json.dumps(logits.__dict__)
