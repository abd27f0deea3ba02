"""compare on the embedded SmolLM2: float32 against bfloat16, KL against an independent computation."""

from __future__ import annotations

import pytest
from helpers.forward import log_probabilities

from llmscope.inspection.comparison import CompareSettings, compare_texts
from llmscope.loading.loader import load_model


@pytest.mark.slow
def test_embedded_float32_against_bfloat16(embedded_model) -> None:
    import numpy
    import torch
    from helpers.texts import PARAGRAPH

    bf16 = load_model(None, device="cpu", dtype="bfloat16")
    result = compare_texts(embedded_model, bf16, PARAGRAPH, CompareSettings(against_dtype="bfloat16"))
    ids = list(result.token_ids)
    log_a, log_b = log_probabilities(embedded_model, ids)[:-1], log_probabilities(bf16, ids)[:-1]
    kl = torch.nn.functional.kl_div(log_b, log_a, log_target=True, reduction="none").sum(dim=-1)
    assert result.kl_mean == pytest.approx(float(kl.mean()), rel=0.05)
    assert 0 < result.kl_mean < 0.01 and result.kl_mean == pytest.approx(9.4e-4, rel=0.3)  # measured 9.38e-4
    assert result.kl_p99 == pytest.approx(float(numpy.percentile(kl.numpy(), 99)), rel=0.1)
    assert result.top1_agreement > 95 and result.tokens_compared == len(ids) - 1
    assert result.perplexity_a == pytest.approx(13.97, rel=0.01)
    assert abs(result.perplexity_b - result.perplexity_a) / result.perplexity_a < 0.02
