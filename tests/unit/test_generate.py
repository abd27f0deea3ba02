"""Generation on tiny models: greedy equals transformers' generate, cache / no cache / static cache agree, seeded
sampling, the decode-step core shared by every command, padded batches against single runs, interrupts."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from helpers.paths import PACKAGE
from helpers.texts import BATCH_PROMPTS

from llmscope.generation.decoding import sampler_distribution
from llmscope.generation.generate import GenerationSettings, generate
from llmscope.loading import loader
from llmscope.loading.loader import load_model


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


def test_interrupted_generation_keeps_what_was_generated(tiny_model_dir: Path) -> None:
    loaded = loader.load_model(str(tiny_model_dir), device="cpu")
    seen: list[int] = []

    def stop_after_three(token) -> None:
        seen.append(token.token_id)
        if len(seen) == 3:
            raise KeyboardInterrupt

    result = generate(loaded, "Hello", GenerationSettings(max_new_tokens=30), on_token=stop_after_three)
    assert result.finish_reason == "interrupted" and list(result.token_ids) == seen


def test_decode_steps_pads_left_and_gives_each_row_its_own_tokens(tiny_model_dir: Path) -> None:
    from llmscope.generation.decoding import decode_steps, pad_token_id, prompt_batch

    loaded = load_model(str(tiny_model_dir), device="cpu")
    rows = [loaded.tokenizer(p)["input_ids"] for p in BATCH_PROMPTS]
    batch = prompt_batch(rows, pad_token_id(loaded.tokenizer), "cpu")
    assert batch.lengths == tuple(len(r) for r in rows) and batch.padded
    assert batch.attention_mask.sum(-1).tolist() == [len(r) for r in rows]
    assert batch.position_ids[0, -len(rows[0]):].tolist() == list(range(len(rows[0])))
    together = [step.token_ids for step in decode_steps(loaded.model, batch, 6)]
    for index, row in enumerate(rows):
        alone = [step.token_ids[0] for step in decode_steps(
            loaded.model, prompt_batch([row], 0, "cpu"), 6)]
        assert [ids[index] for ids in together] == alone
    # greedy picks are the argmax, and their log-probabilities are the log-softmax's
    import torch

    with torch.inference_mode():
        logits = loaded.model(torch.tensor([rows[1]])).logits[0, -1].float()
    first = next(decode_steps(loaded.model, prompt_batch([rows[1]], 0, "cpu"), 1))
    assert first.token_ids[0] == int(torch.argmax(logits))
    assert first.logprobs[0] == pytest.approx(float(torch.log_softmax(logits, -1).max()), abs=1e-5)


def test_the_token_loop_exists_once() -> None:
    """generate and next-token both run on decoding.decode_steps; neither calls the model itself."""
    root = PACKAGE
    for module in ("generation/generate.py", "inspection/next_token.py"):
        source = (root / module).read_text()
        assert "decode_steps(" in source and "model(input_ids" not in source, module


@pytest.mark.parametrize("mode", [{"use_cache": False}, {"static_cache": True}])
def test_padded_batches_match_single_runs_without_a_dynamic_cache(tiny_model_dir: Path, mode: dict) -> None:
    from llmscope.core.command_settings import GenerationSettings
    from llmscope.generation.generate import generate_many

    loaded = load_model(str(tiny_model_dir), device="cpu")
    settings = GenerationSettings(max_new_tokens=5, **mode)
    together = list(generate_many(loaded, BATCH_PROMPTS, settings, batch_size=4))
    for prompt, result in zip(BATCH_PROMPTS, together):
        alone = next(generate_many(loaded, [prompt], settings, batch_size=1))
        assert result.token_ids == alone.token_ids
        assert [t.logprob for t in result.tokens] == pytest.approx([t.logprob for t in alone.tokens], abs=1e-4)
