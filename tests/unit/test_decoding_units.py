"""The decode core's token picker on known logits, without a model: greedy picks the top score with its raw
log-probability; sampling draws per row from the sampler's distribution, every row seeded alike, the same draws
for the same seed."""

from __future__ import annotations

import math

import pytest

from llmscope.generation.decoding import Sampler, greedy_pick, make_picker, sampler_distribution


def test_greedy_picks_the_top_score_with_its_log_probability() -> None:
    import torch

    logits = torch.tensor([[1.0, 3.0, 2.0], [0.0, 0.0, 5.0]])
    assert make_picker(None, 2, "cpu") is greedy_pick
    assert make_picker(Sampler(temperature=0.5), 2, "cpu") is greedy_pick  # not sampling: temperature unused
    picked, logprobs, distribution = greedy_pick(logits)
    assert picked.tolist() == [1, 2] and distribution is None
    first = 3.0 - math.log(math.exp(1.0) + math.exp(3.0) + math.exp(2.0))
    second = 5.0 - math.log(2 + math.exp(5.0))
    assert logprobs.tolist() == pytest.approx([first, second], abs=1e-6)


def test_sampling_draws_each_row_as_it_would_alone() -> None:
    import torch

    logits = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4]] * 3))
    sampler = Sampler(do_sample=True, temperature=1.0, seed=1234)
    pick = make_picker(sampler, 3, "cpu")
    draws = [pick(logits) for _ in range(20)]
    for picked, logprobs, distribution in draws:
        assert distribution is not None and torch.equal(distribution, sampler_distribution(logits))
        assert picked.tolist() == [picked[0].item()] * 3  # every row seeded alike
        assert logprobs.tolist() == pytest.approx([math.log(0.1 * (picked[0].item() + 1))] * 3, abs=1e-6)
    sequence = [picked[0].item() for picked, _, _ in draws]
    assert len(set(sequence)) > 1  # a draw, not a fixed pick
    again = make_picker(sampler, 1, "cpu")
    assert [again(logits[:1])[0].item() for _ in range(20)] == sequence  # the same seed, the same draws


def test_sampling_filters_as_the_distribution_says() -> None:
    import torch

    logits = torch.tensor([[2.0, 1.0, 0.5, 0.1]])
    pick = make_picker(Sampler(do_sample=True, top_k=1, seed=7), 1, "cpu")
    for _ in range(5):
        picked, logprobs, distribution = pick(logits)
        assert picked.tolist() == [0] and logprobs.tolist() == [0.0]  # top_k 1 keeps one token: probability 1
        assert distribution is not None and distribution[0].tolist() == [1.0, 0.0, 0.0, 0.0]
