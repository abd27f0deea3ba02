"""next-token on the embedded SmolLM2: Paris, in the library and in the table."""

from __future__ import annotations

import pytest

from llmscope.inspection.next_token import next_token_distribution

PROMPT = "The capital of France is"


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
