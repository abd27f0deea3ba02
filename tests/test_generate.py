"""`llmscope generate`: greedy/sampled decoding, cache on/off, stop reasons, per-token probabilities."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from llmscope.generation.decoding import sampler_distribution
from llmscope.generation.generate import GenerationSettings, generate
from llmscope.loading.loader import load_model


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    return load_model(str(tiny_model_dir), device="cpu")


def test_greedy_matches_transformers_generate(tiny) -> None:
    import torch

    result = generate(tiny, "The capital of France is", GenerationSettings(max_new_tokens=12))
    ids = torch.tensor([list(result.prompt_token_ids)])
    reference = tiny.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                                    pad_token_id=tiny.tokenizer.pad_token_id)
    expected = reference[0, ids.shape[1]:].tolist()
    assert list(result.token_ids) == expected[: len(result.token_ids)]
    assert result.finish_reason in ("eos", "length")


def test_cache_and_no_cache_agree(tiny) -> None:
    cached = generate(tiny, "Hello world", GenerationSettings(max_new_tokens=10))
    uncached = generate(tiny, "Hello world", GenerationSettings(max_new_tokens=10, use_cache=False))
    assert cached.token_ids == uncached.token_ids
    for a, b in zip(cached.tokens, uncached.tokens):
        assert a.probability == pytest.approx(b.probability, abs=1e-4)


def test_static_cache_gives_the_same_tokens(tiny) -> None:
    dynamic = generate(tiny, "The capital of France is", GenerationSettings(max_new_tokens=10))
    static = generate(tiny, "The capital of France is", GenerationSettings(max_new_tokens=10, static_cache=True))
    assert static.token_ids == dynamic.token_ids
    assert [t.probability for t in static.tokens] == pytest.approx([t.probability for t in dynamic.tokens], abs=1e-5)


def test_sampling_is_seeded_and_probabilities_are_the_samplers(tiny) -> None:
    settings = GenerationSettings(max_new_tokens=8, do_sample=True, temperature=0.7, top_k=20, seed=3, logprobs=3)
    first = generate(tiny, "Hello", settings)
    second = generate(tiny, "Hello", settings)
    assert first.token_ids == second.token_ids and first.distribution == "sampler"
    for token in first.tokens:
        assert 0 < token.probability <= 1 and token.logprob == pytest.approx(math.log(token.probability))
        assert len(token.top) == 3 and token.top[0].probability >= token.probability - 1e-6
    assert first.perplexity == pytest.approx(math.exp(-first.mean_logprob))


def test_sampler_distribution_filters() -> None:
    import torch

    logits = torch.tensor([4.0, 3.0, 2.0, 1.0])
    top2 = sampler_distribution(logits, top_k=2)
    assert (top2[2:] == 0).all() and top2.sum().item() == pytest.approx(1.0)
    nucleus = sampler_distribution(logits, top_p=0.5)
    assert nucleus[0].item() == pytest.approx(1.0)  # p(first) = 0.64 already crosses 0.5
    cooled = sampler_distribution(logits, temperature=0.5)
    assert cooled[0] > torch.softmax(logits, -1)[0]


def test_max_new_tokens_and_eos(tiny) -> None:
    result = generate(tiny, "Hello", GenerationSettings(max_new_tokens=3))
    assert result.new_tokens <= 3
    assert result.finish_reason == ("length" if result.new_tokens == 3 else "eos")


def test_cli_generate_json(cli, tiny_model_dir: Path) -> None:
    result = cli("generate", "Hello", "-m", tiny_model_dir, "-n", "5", "--no-chat", "--json", "--logprobs", "2")
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert data["command"] == "generate" and data["device"] == "cpu" and data["dtype"] == "float32"
    assert data["new_tokens"] == len(data["token_ids"]) <= 5
    content = data["logprobs"]["content"]
    assert [c["id"] for c in content] == data["token_ids"]
    assert all(len(c["top_logprobs"]) == 2 for c in content)
    assert "prompt tokens" in result.stderr and "stopped:" in result.stderr


def test_cli_generate_text_and_show_probs_without_colour(cli, tiny_model_dir: Path) -> None:
    result = cli("generate", "Hello", "-m", tiny_model_dir, "-n", "4", "--no-chat", "--show-probs")
    assert result.exit_code == 0, result.stderr
    import re

    pairs = re.findall(r"\[(\d\.\d\d)\]", result.stdout)  # token[p] pairs when stdout is not a terminal
    assert pairs and all(0 <= float(p) <= 1 for p in pairs)
    assert "perplexity" in result.stderr


@pytest.mark.slow
def test_embedded_generate_paris(cli) -> None:
    result = cli("generate", "The capital of France is", "--no-chat", "-n", "3", "--json", "--logprobs", "5",
                 "--quantize", "none")  # the exact dequantization: the reference figures
    assert result.exit_code == 0, result.stderr
    data = result.json()
    first = data["logprobs"]["content"][0]
    assert first["token"] == " Paris" and first["id"] == 7042
    assert first["probability"] == pytest.approx(0.7725, abs=0.005)
    assert [alt["token"] for alt in first["top_logprobs"][:3]] == [" Paris", " the", " London"]
    assert data["prompt_token_ids"] == [504, 3575, 282, 4649, 314]


@pytest.mark.slow
def test_generate_probability_equals_next_token(cli) -> None:
    """The first generated token's probability is the one `next-token` reports for the same prompt."""
    generated = cli("generate", "The capital of France is", "--no-chat", "-n", "1", "--json", "--logprobs", "3", "-q")
    inspected = cli("next-token", "The capital of France is", "--top-k", "3", "--json", "-q")
    first = generated.json()["logprobs"]["content"][0]
    top = inspected.json()["steps"][0]["top"]
    assert first["id"] == top[0]["token_id"] == 7042
    assert first["probability"] == pytest.approx(top[0]["probability"], abs=1e-6)
    assert [alt["id"] for alt in first["top_logprobs"]] == [t["token_id"] for t in top]
    assert [alt["probability"] for alt in first["top_logprobs"]] == pytest.approx([t["probability"] for t in top],
                                                                                  abs=1e-6)


@pytest.mark.slow
def test_embedded_chat_answer(cli) -> None:
    result = cli("generate", "What is the capital of France?", "--chat", "-n", "20")  # make demo's command
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "The capital of France is Paris."
    assert "end of sequence" in result.stderr


@pytest.mark.parametrize("text", ["Ünïcödé 🙂 text, tabs\tand\nnewlines", "The capital of France is Paris.", "🙂🙂🙂"])
def test_incremental_text_adds_up_to_the_whole_decode(tiny, text: str) -> None:
    from llmscope.generation.generate import IncrementalText

    ids = tiny.tokenizer(text, add_special_tokens=False)["input_ids"]
    window = IncrementalText(tiny.tokenizer)
    pieces = []
    for end in range(1, len(ids) + 1):
        delta, window = window.advance(ids[:end])
        assert "\ufffd" not in delta
        pieces.append(delta)
    assert "".join(pieces) == text == tiny.tokenizer.decode(ids)
