"""`llmscope next-token`: the top-k distribution, tensor shapes, greedy steps, the sampler's view and the logit
lens, checked against an independent forward pass, generate(), and the embedded SmolLM2's known answer."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from llmscope.core.errors import UsageError
from llmscope.generation.generate import GenerationSettings, generate
from llmscope.inspection.next_token import next_token_distribution
from llmscope.loading.loader import load_model

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    return load_model(str(tiny_model_dir), device="cpu")


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


def test_cli_json_stdin_and_chat(cli, tiny_model_dir: Path) -> None:
    result = cli("next-token", "-", "-m", tiny_model_dir, "--json", "--top-k", "4", "--steps", "2", input=PROMPT)
    assert result.exit_code == 0, result.stderr
    document = result.json()
    assert document["command"] == "next-token" and document["prompt"] == PROMPT
    assert len(document["steps"]) == 2 and len(document["steps"][0]["top"]) == 4
    assert document["hidden_shape"][:2] == [1, len(document["prompt_tokens"])]
    chat = cli("next-token", "hi", "-m", tiny_model_dir, "--chat", "--json", "-k", "2").json()
    assert chat["chat_template_applied"] and chat["prompt_text"].startswith("<|im_start|>user\nhi")


def test_cli_table_fits_80_columns(cli, tiny_model_dir: Path) -> None:
    result = cli("next-token", PROMPT, "-m", tiny_model_dir, "--steps", "2", "-k", "5", "--temperature", "0.7",
                 "--top-p", "0.9", "--lens", env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.stderr
    assert "hidden states after the 2 blocks: [1, " in result.stdout and "Logit lens" in result.stdout
    assert "Step 2:" in result.stdout and "sampler" in result.stdout and "▸1" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 80


@pytest.mark.parametrize("arguments", [["--top-k", "0"], ["--steps", "0"], ["--temperature", "0"],
                                       ["--top-k", "100000"]])
def test_cli_rejects_bad_values(cli, tiny_model_dir: Path, arguments: list[str]) -> None:
    result = cli("next-token", PROMPT, "-m", tiny_model_dir, *arguments)
    assert result.exit_code == 2 and arguments[0] in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_embedded_model_says_paris(embedded_model) -> None:
    result = next_token_distribution(embedded_model, PROMPT, top_k=5, lens=True)
    assert [token.token_id for token in result.prompt_tokens] == [504, 3575, 282, 4649, 314]
    assert result.hidden_shape == (1, 5, 576) and result.logits_shape == (1, 5, 49152)
    top = result.first.top
    assert [row.text for row in top[:3]] == [" Paris", " the", " London"]
    assert top[0].probability == pytest.approx(0.7725, abs=0.005)
    assert top[1].probability == pytest.approx(0.0645, abs=0.005)
    assert top[2].probability == pytest.approx(0.0125, abs=0.003)
    assert result.lens[-1].top_text == " Paris" and result.lens[-1].answer_rank == 1
    assert result.lens[0].answer_rank > 100  # the embeddings alone do not know the answer


@pytest.mark.slow
def test_embedded_cli_table(cli) -> None:
    result = cli("next-token", PROMPT, "--top-k", "3", "--quantize", "none")
    assert result.exit_code == 0, result.stderr
    assert "␣Paris" in result.stdout and "0.7725" in result.stdout and "[1, 5, 49152]" in result.stdout
