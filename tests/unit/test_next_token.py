"""next-token on tiny models: the top k against an independent forward pass, steps following greedy generation, the
sampler's distribution, the logit lens, and fuzzed prompts that never crash it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmscope.core.errors import UsageError
from llmscope.generation.generate import GenerationSettings, generate
from llmscope.inspection.next_token import next_token_distribution
from llmscope.loading.loader import load_model

PROMPT = "The capital of France is"


def _reference_logits(loaded, ids: list[int]):
    import torch

    with torch.inference_mode():
        return loaded.model(torch.tensor([ids])).logits[0, -1].float()


def test_top_k_matches_an_independent_forward_pass(tiny) -> None:
    import torch

    result = next_token_distribution(tiny, PROMPT, top_k=7)
    ids = [token.token_id for token in result.prompt_tokens]
    assert ids == tiny.tokenizer(PROMPT)["input_ids"]
    logits = _reference_logits(tiny, ids)
    probabilities = torch.softmax(logits, dim=-1)
    values, expected = torch.topk(probabilities, 7)
    step = result.first
    assert [row.token_id for row in step.top] == expected.tolist()
    for row, value in zip(step.top, values.tolist()):
        assert row.probability == pytest.approx(value, abs=1e-6)
        assert row.logit == pytest.approx(float(logits[row.token_id]), abs=1e-5)
        assert row.logprob == pytest.approx(math.log(value), abs=1e-5)
        assert row.text == tiny.tokenizer.decode([row.token_id])
    assert step.top[-1].cumulative == pytest.approx(float(values.sum()), abs=1e-5)
    assert step.entropy == pytest.approx(float(-(probabilities * probabilities.log()).sum()), abs=1e-4)
    vocab = tiny.model.config.vocab_size
    assert result.hidden_shape == (1, len(ids), 64) and result.logits_shape == (1, len(ids), vocab)
    assert result.vocab_size == vocab and result.layers == 2 and result.lens is None


def test_steps_follow_greedy_generation(tiny) -> None:
    result = next_token_distribution(tiny, "Hello world", top_k=3, steps=5)
    generated = generate(tiny, "Hello world", GenerationSettings(max_new_tokens=5))
    chosen = [step.chosen.token_id for step in result.steps]
    assert chosen[: len(generated.token_ids)] == list(generated.token_ids)
    for step, token in zip(result.steps, generated.tokens):
        assert step.chosen.probability == pytest.approx(token.probability, abs=1e-5)
    running = 0.0
    for index, step in enumerate(result.steps):
        running += step.chosen.logprob
        assert step.index == index and step.chosen.rank == 1
        assert step.cumulative_logprob == pytest.approx(running, abs=1e-6)
        assert step.context_tokens == len(result.prompt_tokens) + index
    assert result.continuation == tiny.tokenizer.decode(chosen)


def test_temperature_and_top_p_show_the_samplers_distribution(tiny) -> None:
    import torch

    result = next_token_distribution(tiny, PROMPT, top_k=5, temperature=0.5)
    ids = [token.token_id for token in result.prompt_tokens]
    cooled = torch.softmax(_reference_logits(tiny, ids) / 0.5, dim=-1)
    for row in result.first.top:
        assert row.sampler_probability == pytest.approx(float(cooled[row.token_id]), abs=1e-6)
    assert result.first.sampler_entropy < result.first.entropy
    nucleus = next_token_distribution(tiny, PROMPT, top_k=tiny.model.config.vocab_size, top_p=0.3).first
    kept = [row for row in nucleus.top if row.sampler_probability > 0]
    assert len(kept) == nucleus.sampler_kept
    assert sum(row.sampler_probability for row in kept) == pytest.approx(1, abs=1e-5)
    assert sum(row.probability for row in kept[:-1]) < 0.3 <= sum(row.probability for row in kept) + 1e-6
    plain = next_token_distribution(tiny, PROMPT, top_k=2).first
    assert plain.top[0].sampler_probability is None and plain.sampler_entropy is None


@pytest.mark.parametrize("name", ["llama", "qwen2", "gpt2", "phi3", "mistral"])
def test_logit_lens_last_layer_is_the_models_answer(tiny_models: dict[str, Path], name: str) -> None:
    loaded = load_model(str(tiny_models[name]), device="cpu")
    result = next_token_distribution(loaded, PROMPT, top_k=3, lens=True)
    assert result.lens_note is None  # the final norm was found
    assert len(result.lens) == loaded.model.config.num_hidden_layers + 1
    last = result.lens[-1]
    assert last.top_id == result.answer.token_id and last.answer_rank == 1
    assert last.answer_probability == pytest.approx(result.answer.probability, abs=1e-5)
    assert [layer.layer for layer in result.lens] == list(range(len(result.lens)))
    hidden = loaded.model.config.hidden_size
    assert result.hidden_shape[-1] == hidden and result.logits_shape[-1] == loaded.model.config.vocab_size


def test_bad_options_are_usage_errors(tiny) -> None:
    vocab = tiny.model.config.vocab_size
    for options in ({"top_k": 0}, {"top_k": vocab + 1}, {"steps": 0}, {"temperature": 0.0}, {"top_p": 1.5}):
        with pytest.raises(UsageError):
            next_token_distribution(tiny, PROMPT, **options)
    assert len(next_token_distribution(tiny, PROMPT, top_k=vocab).first.top) == vocab


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=300))
def test_fuzz_next_token_never_crashes(tiny, text: str) -> None:
    from llmscope.core.errors import UsageError
    from llmscope.inspection.next_token import next_token_distribution

    try:
        result = next_token_distribution(tiny, text, top_k=5)
    except UsageError as error:  # empty or too long for the 256-token context: a clear message, not a crash
        assert "empty" in str(error) or "context" in str(error)
        return
    probabilities = [candidate.probability for candidate in result.first.top]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-5
