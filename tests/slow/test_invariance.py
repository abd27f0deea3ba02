"""Batch and cache invariance on the embedded SmolLM2 on every weight path: batches against single rows, 64 greedy
tokens with and without the cache, p(" Paris") alone and in a batch, check-invariance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.invariance import PROMPTS, all_logits, assert_batches_match_alone, greedy, prompt_ids, unpadded

from llmscope.loading.loader import load_model


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["auto", "none", "int8", "int4"])
def test_embedded_model_batches_match_alone_on_every_weight_path(mode: str) -> None:
    loaded = load_model(None, device="cpu", quantize=mode)
    assert loaded.invariant
    ids = prompt_ids(loaded, PROMPTS)
    assert_batches_match_alone(loaded, ids)
    assert_batches_match_alone(loaded, unpadded(ids))


@pytest.mark.slow
def test_embedded_model_greedy_64_tokens_on_10_prompts_with_and_without_cache() -> None:
    """64 greedy tokens on 10 prompts with the KV cache are the tokens the model picks without it. Without a cache,
    step t recomputes the whole prefix (prompt + t tokens) and takes its last position; causal attention makes that
    position's logits the same as in one forward pass over prompt + all 64 tokens (one padded batch, no cache), so
    one pass checks every step. The step-by-step loop without the cache runs too, for the first 4 tokens."""
    import torch

    loaded = load_model(None, device="cpu")  # the default path: packed int4 weights, bfloat16 into the kernel
    texts = [*PROMPTS, "The best way to learn a language is", "Q: What is 7 times 8?\nA:"]
    rows = prompt_ids(loaded, texts)
    cached, _ = greedy(loaded, rows, 64, use_cache=True)
    assert len(rows) == 10 and all(len(tokens) == 64 for tokens in cached)
    recomputed, _ = greedy(loaded, rows, 4, use_cache=False)
    assert recomputed == [tokens[:4] for tokens in cached]
    teacher_forced = all_logits(loaded, [row + tokens[:-1] for row, tokens in zip(rows, cached)])
    picked = [torch.argmax(logits[len(row) - 1:], dim=-1).tolist() for row, logits in zip(rows, teacher_forced)]
    assert picked == cached


@pytest.mark.slow
def test_paris_is_the_same_alone_and_as_line_one_of_a_padded_batch(cli, tmp_path: Path) -> None:
    """p(" Paris") was once 0.757396 alone and 0.772998 in a 3-line batch on the packed path: now one figure."""
    batch = tmp_path / "prompts.txt"
    batch.write_text("The capital of France is\nHello, my name is\nOnce upon a time in a land far away, there\n")
    alone = cli("next-token", "The capital of France is", "--top-k", "1", "--json")
    together = cli("next-token", "--batch", str(batch), "--top-k", "1", "--jsonl")
    assert alone.exit_code == 0 and together.exit_code == 0, alone.stderr + together.stderr
    first = json.loads(together.stdout.splitlines()[0])
    lone_top = alone.json()["steps"][0]["top"][0]
    assert first["steps"][0]["top"][0] == lone_top and lone_top["text"] == " Paris"
    # 0.7729896 on AMD EPYC (AVX2, AVX-512) in 8-row tiles; other CPUs' float32 LM-head kernels round differently in
    # the seventh digit (0.7729887 measured on an Intel Xeon with AMX), the same alone and batched on each.
    assert lone_top["probability"] == pytest.approx(0.772990, abs=5e-6)


@pytest.mark.slow
def test_bench_cache_on_the_default_model_is_identical(cli) -> None:
    result = cli("bench-cache", "-n", "24", "--repeat", "1", "--warmup", "0", "--json")
    assert result.exit_code == 0, result.stderr
    check = result.json()["results"][0]["check"]
    assert check["identical"] is True and check["tokens_compared"] == 24


@pytest.mark.slow
def test_check_invariance_on_the_embedded_model(cli) -> None:
    result = cli("check-invariance", "--json")
    assert result.exit_code == 0, result.stderr
    document = result.json()
    assert document["identical"] is True and document["quantize"] == "auto" and document["prompt_tokens"] == 5
