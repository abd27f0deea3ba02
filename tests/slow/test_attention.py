"""Attention on the embedded SmolLM2: it looks at the squirrel."""

from __future__ import annotations

import pytest

from llmscope.attention.weights import AttentionSettings, attention_weights

SEED_SENTENCE = "The dog chased the squirrel because it"


@pytest.mark.slow
def test_it_looks_at_the_squirrel_on_smollm2(embedded_model) -> None:
    """Measured: at layer 27, head 2, "it" puts 0.424 on " squirrel" (its top token), 0.37 on "The", little on dog."""
    result = attention_weights(embedded_model, SEED_SENTENCE, AttentionSettings(layer=27, query="it"))
    assert [t.token_id for t in result.tokens] == [504, 2767, 45360, 260, 27721, 975, 357]
    assert result.query == 6 and result.shape == (1, 9, 7, 7)
    assert [group.heads for group in result.kv_groups] == [(0, 1, 2), (3, 4, 5), (6, 7, 8)]
    head2 = result.head_rows[2]
    assert (head2.top[0].position, head2.top[0].text) == (4, " squirrel")
    assert head2.top[0].weight == pytest.approx(0.4241, abs=0.005)
    assert result.weights[0][2][6][1] < 0.1  # " dog"
    assert result.head_rows[3].top[0].text == " squirrel"  # the next KV group's first head agrees
