"""compare on tiny models: a model against itself, KL and agreement against an independent computation, the
sliding-window plan shared by both sides, settings refused before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.forward import log_probabilities

from llmscope.core.errors import UsageError
from llmscope.inspection.comparison import CompareSettings, compare_texts, first_difference, percentile
from llmscope.inspection.scoring import ScoreSettings, score_text
from llmscope.loading.loader import load_model

TEXT = "The capital of France is Paris. The capital of Italy is Rome."


def test_a_model_against_itself(tiny) -> None:
    result = compare_texts(tiny, tiny, TEXT, CompareSettings(against_dtype="float32", next_token=True, top_k=4))
    assert result.tokens_compared == len(result.token_ids) - 1
    assert result.kl_max < 1e-7 and result.kl_mean < 1e-7 and all(p.kl < 1e-7 for p in result.positions)
    assert result.top1_agreement == 100.0 and result.top5_same == 100.0
    assert result.perplexity_a == result.perplexity_b == pytest.approx(score_text(tiny, TEXT).perplexity, rel=1e-9)
    assert all(row.a_id == row.b_id and row.a_probability == row.a_probability_under_b for row in result.next_token)


def test_kl_and_agreement_match_an_independent_computation(tiny, other_dir: Path) -> None:
    import numpy
    import torch

    other = load_model(str(other_dir), device="cpu")
    result = compare_texts(tiny, other, TEXT, CompareSettings(against=str(other_dir), worst=3, next_token=True,
                                                              top_k=5))
    ids = list(result.token_ids)
    log_a, log_b = log_probabilities(tiny, ids), log_probabilities(other, ids)
    kl = torch.nn.functional.kl_div(log_b, log_a, log_target=True, reduction="none").sum(dim=-1)  # KL(A‖B) per row
    expected = kl[:-1].tolist()  # row t predicts token t + 1
    assert [p.kl for p in result.positions] == pytest.approx(expected, rel=1e-4, abs=1e-9)
    assert result.kl_mean == pytest.approx(float(numpy.mean(expected)), rel=1e-4)
    assert result.kl_p99 == pytest.approx(float(numpy.percentile(expected, 99)), rel=1e-4)
    assert result.kl_max == pytest.approx(max(expected), rel=1e-4) and result.kl_mean > 1e-4
    agree = (log_a[:-1].argmax(-1) == log_b[:-1].argmax(-1)).float().mean().item() * 100
    assert result.top1_agreement == pytest.approx(agree)
    assert [p.position for p in result.most_different] == [int(i) + 1 for i in numpy.argsort(expected)[::-1][:3]]
    assert result.perplexity_b == pytest.approx(score_text(other, TEXT).perplexity, rel=1e-6)
    top = torch.topk(log_a[-1].exp(), 5)
    assert [row.a_id for row in result.next_token] == top.indices.tolist()
    assert result.next_token[0].a_probability_under_b == pytest.approx(float(log_b[-1].exp()[top.indices[0]]),
                                                                       rel=1e-4)
    assert result.next_token_kl == pytest.approx(float(kl[-1]), rel=1e-4)


def test_helpers() -> None:
    assert first_difference([1, 2, 3], [1, 2, 3]) is None
    assert first_difference([1, 2, 3], [1, 5, 3]) == 1 and first_difference([1, 2], [1, 2, 3]) == 2
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5 and percentile([5.0], 0.99) == 5.0


def test_sliding_window_runs_the_same_plan_for_both(tiny) -> None:
    result = compare_texts(tiny, tiny, TEXT * 3, CompareSettings(score=ScoreSettings(window=16, stride=6),
                                                                 against_dtype="float32"))
    assert result.windows > 1 and result.tokens_compared == len(result.token_ids) - 1 and result.kl_max < 1e-7


@pytest.mark.parametrize("options", [{}, {"against_dtype": "int8"}, {"against": "x", "worst": -1},
                                     {"against": "x", "top_k": 0}])
def test_settings_refuse_bad_values(options: dict) -> None:
    with pytest.raises(UsageError):
        CompareSettings(**options)


def test_compare_leaves_inference_mode_off(tiny_model_dir) -> None:
    """scoring's generators yield outside inference mode: one left unfinished (compare zips two) must not switch it
    on in the caller, where a later gradient (attribute) would fail."""
    import torch

    from llmscope.inspection.comparison import CompareSettings, compare_texts
    from llmscope.loading.loader import load_model

    loaded = load_model(str(tiny_model_dir), device="cpu")
    compare_texts(loaded, loaded, "The capital of France is Paris. The capital of Italy is Rome.",
                  CompareSettings(against_dtype="float32"))
    assert not torch.is_inference_mode_enabled()
