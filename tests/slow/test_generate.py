"""generate on the embedded SmolLM2: Paris, the probability next-token gives, the chat answer."""

from __future__ import annotations

import pytest


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
