"""generate --min-new-tokens N and --ignore-eos: EOS is held back (its logit -inf before the pick) for N new tokens or
for all of them, greedy or sampled, one prompt or a --batch, streamed or not, cached or not. Fast tier, on a tiny
GPT-2 whose final norm is rigged so that every position's first choice is EOS: a prompt whose first token is EOS,
as "Write a long story about a dragon who learns to cook." is for the embedded model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

PROMPT = "Write a long story"


@pytest.fixture(scope="module")
def eos_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Final hidden state = ln_f's bias b whatever the input (its weight is 0), and EOS's embedding (tied to the LM
    head) 40 b: every logit is wte @ b, EOS's far ahead, the runner-up a fixed token well ahead of the rest."""
    import torch
    from helpers.models import build_tiny_model
    from transformers import AutoModelForCausalLM

    folder = build_tiny_model(tmp_path_factory.mktemp("tiny-eos-first"), "gpt2")
    model = AutoModelForCausalLM.from_pretrained(str(folder))
    eos = model.generation_config.eos_token_id
    with torch.no_grad():
        direction = torch.nn.functional.normalize(torch.randn(model.config.n_embd, generator=torch.Generator()
                                                              .manual_seed(0)), dim=0)
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(direction)
        model.transformer.wte.weight[eos] = 40 * direction
        model.transformer.wte.weight[7] = 20 * direction  # the runner-up: sampling draws it almost surely too
    model.save_pretrained(str(folder))
    return folder


def run(cli: Any, model: Path, *args: str) -> dict[str, Any]:
    result = cli("generate", PROMPT, "-m", model, "--no-chat", "--json", "-q", *args)
    assert result.exit_code == 0, result.stderr
    return result.json()


def eos_id(document: dict[str, Any]) -> int:
    return document["token_ids"][-1]


def test_without_the_options_the_first_token_ends_generation(cli: Any, eos_model: Path) -> None:
    document = run(cli, eos_model, "-n", "8")
    assert document["new_tokens"] == 1 and document["finish_reason"] == "eos"
    assert document["timings"]["decode_tokens_per_s"] is None  # one token: no decode step to time


def test_min_new_tokens_holds_eos_back_for_n_tokens(cli: Any, eos_model: Path) -> None:
    eos = eos_id(run(cli, eos_model, "-n", "8"))
    document = run(cli, eos_model, "-n", "8", "--min-new-tokens", "5")
    assert document["token_ids"] == [7] * 5 + [eos] and document["finish_reason"] == "eos"
    assert document["timings"]["decode_tokens_per_s"] > 0
    assert (document["settings"]["min_new_tokens"], document["settings"]["ignore_eos"]) == (5, False)


@pytest.mark.parametrize("mode", [(), ("--sample", "--seed", "3"), ("--no-cache",), ("--temperature", "0.5")])
def test_ignore_eos_gives_exactly_max_new_tokens(cli: Any, eos_model: Path, mode: tuple[str, ...]) -> None:
    eos = eos_id(run(cli, eos_model, "-n", "2"))
    document = run(cli, eos_model, "-n", "6", "--ignore-eos", "--logprobs", "3", *mode)
    assert document["new_tokens"] == 6 and document["finish_reason"] == "length"
    assert eos not in document["token_ids"] and document["timings"]["decode_tokens_per_s"] > 0
    assert document["settings"]["ignore_eos"] is True
    for token in document["logprobs"]["content"]:  # the distribution the pick saw: EOS has no share of it
        assert eos not in [alternative["id"] for alternative in token["top_logprobs"]]


def test_batch_rows_each_hold_eos_back(cli: Any, eos_model: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"{PROMPT}\nHi\nThe capital of France is\n")
    result = cli("generate", "--batch", prompts, "-m", eos_model, "-n", "6", "--min-new-tokens", "3",
                 "--batch-size", "3")
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["new_tokens"] for r in records] == [4, 4, 4]
    assert all(r["token_ids"][:3] == [7, 7, 7] and r["finish_reason"] == "eos" for r in records)


def test_streamed_text_is_the_held_back_run(cli: Any, eos_model: Path) -> None:
    document = run(cli, eos_model, "-n", "5", "--ignore-eos")
    streamed = cli("generate", PROMPT, "-m", eos_model, "--no-chat", "-n", "5", "--ignore-eos", "--stream", "-q")
    assert streamed.exit_code == 0, streamed.stderr
    assert streamed.stdout.rstrip("\n") == document["text"] and document["text"]


@pytest.mark.parametrize(("args", "message"), [
    (("-n", "5", "--min-new-tokens", "6"), "--min-new-tokens 6 exceeds --max-new-tokens 5"),
    (("--ignore-eos", "--min-new-tokens", "2"), "--min-new-tokens has no effect with --ignore-eos"),
    (("--min-new-tokens", "-1"), "--min-new-tokens must be at least 0"),
    (("--ignore-eos", "--endpoint", "http://127.0.0.1:9"), "--ignore-eos needs a local model"),
])
def test_bad_combinations_are_refused(cli: Any, args: tuple[str, ...], message: str) -> None:
    result = cli("generate", PROMPT, "-m", "/nonexistent/llmscope-model", *args)
    assert result.exit_code == 2 and message in result.stderr, result.stderr


def test_decode_core_holds_stop_ids_back_for_every_pick() -> None:
    import torch

    from llmscope.generation.decoding import Sampler, decode_steps, prompt_batch

    class Constant(torch.nn.Module):
        """A model whose logits put token 3 first and token 1 second at every position."""

        def forward(self, input_ids: Any, **_: Any) -> Any:
            logits = torch.zeros(*input_ids.shape, 5)
            logits[..., 3], logits[..., 1] = 9.0, 5.0
            return type("Output", (), {"logits": logits})()

    batch = prompt_batch([[0, 2], [4]], 0, "cpu")
    for sampler in (None, Sampler(do_sample=True, seed=1, top_k=2)):
        steps = list(decode_steps(Constant(), batch, 6, sampler, {3}, use_cache=False, min_new_tokens=4))
        assert [step.token_ids for step in steps] == [(1, 1)] * 4 + [(3, 3)]
        assert all(bool(torch.isinf(step.logits[:, 3]).all()) for step in steps[:4])
