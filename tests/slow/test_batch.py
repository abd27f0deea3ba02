"""--batch on the embedded SmolLM2: records equal single runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.cli import records


@pytest.mark.slow
def test_batch_on_the_embedded_model_equals_single_runs(cli, embedded_model, tmp_path: Path) -> None:
    from llmscope.core.command_settings import GenerationSettings
    from llmscope.generation.generate import generate, generate_many
    from llmscope.inspection.next_token import next_token_distribution

    prompts = ["The capital of France is", "What is the capital of France?", "1, 2, 3,"]
    settings = GenerationSettings(max_new_tokens=8)
    together = list(generate_many(embedded_model, prompts, settings, chat=True, batch_size=3))
    for prompt, result in zip(prompts, together):
        alone = generate(embedded_model, prompt, settings, chat=True)
        assert result.token_ids == alone.token_ids
        for mine, theirs in zip(result.tokens, alone.tokens):
            assert mine.probability == pytest.approx(theirs.probability, abs=1e-4)
    assert together[1].text == "The capital of France is Paris."
    batch_file = tmp_path / "prompts.txt"
    batch_file.write_text("\n".join(prompts) + "\n")
    lines = records(cli("next-token", "--batch", batch_file, "--top-k", "3", "--quantize", "none").stdout)
    first = next_token_distribution(embedded_model, prompts[0], top_k=3).first
    assert lines[0]["steps"][0]["top"][0]["text"] == " Paris"
    assert lines[0]["steps"][0]["top"][0]["probability"] == pytest.approx(first.top[0].probability, abs=1e-4)
    assert first.top[0].probability == pytest.approx(0.7725, abs=2e-3)
