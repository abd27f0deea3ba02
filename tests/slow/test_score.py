"""score on the embedded SmolLM2: the paragraph's perplexity and Paris."""

from __future__ import annotations

import math

import pytest
from helpers.forward import model_loss
from helpers.texts import PARAGRAPH

from llmscope.inspection.scoring import score_text


@pytest.mark.slow
def test_embedded_perplexity_and_paris(embedded_model) -> None:
    result = score_text(embedded_model, PARAGRAPH)
    ids = list(result.token_ids)
    assert result.first_token_skipped and ids[:2] == embedded_model.tokenizer("Paris is")["input_ids"]
    loss = model_loss(embedded_model, ids)
    assert result.perplexity == pytest.approx(math.exp(loss), rel=1e-5)
    assert result.perplexity == pytest.approx(13.97, rel=0.01)  # measured: 13.974 (float32, CPU)
    paris = score_text(embedded_model, "The capital of France is Paris").tokens[-1]
    assert paris.text == " Paris" and paris.rank == 1 and paris.probability == pytest.approx(0.7725, abs=0.005)
