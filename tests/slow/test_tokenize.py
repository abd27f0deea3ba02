"""The embedded SmolLM2's tokenizer: ids, the light tokenizer against transformers', tokens split inside characters."""

from __future__ import annotations

import pytest

from llmscope.loading.loader import load_tokenizer
from llmscope.loading.tokenization import decode_ids, tokenize_text

LIGHT_SAMPLES = ["The capital of France is", "  two  spaces\tand a tab\nnew line", "Ünïcödé 🙂 日本語",
                 "<|im_start|>user\nhi<|im_end|>", "", "x" * 300, "def f(a, b):\n    return a+b  # ok"]


@pytest.mark.slow
def test_embedded_tokenizer_ids(cli) -> None:
    result = cli("tokenize", "The capital of France is", "--ids")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "504 3575 282 4649 314\n"
    decoded = cli("tokenize", "--decode", "504 3575 282 4649 314", "--json")
    assert decoded.json()["text"] == "The capital of France is"


@pytest.mark.slow
def test_light_tokenizer_matches_transformers(embedded_model) -> None:
    """The torch-free tokenizer on the cached tokenizer.json gives transformers' ids, pieces, spans and text."""
    from llmscope.loading.tokenization import LightTokenizer

    light = load_tokenizer(embedded_model.spec, light=True)
    full = embedded_model.tokenizer
    assert isinstance(light, LightTokenizer) and len(light) == len(full) == 49152
    assert set(light.all_special_ids) <= set(full.all_special_ids) | {0, 1, 2}
    for text in LIGHT_SAMPLES:
        a = tokenize_text(light, text, "light")
        b = tokenize_text(full, text, "full")
        assert a.ids == b.ids, text
        assert [(t.piece, t.text, t.start, t.end, t.special) for t in a.tokens] == \
            [(t.piece, t.text, t.start, t.end, t.special) for t in b.tokens], text
        assert decode_ids(light, a.ids).text == decode_ids(full, b.ids).text == text


@pytest.mark.slow
def test_embedded_tokens_split_inside_characters(cli) -> None:
    """A byte-level split on SmolLM2: ' 👋' is split as ␣F0 9F | 91 | 8B, not three copies of 👋."""
    result = cli("tokenize", "héllo wörld 👋 東京")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[0] == "h|é|llo|␣w|ör|ld|␣<F0 9F>|<91>|<8B>|␣<E6>|<9D>|<B1>|<E4 BA>|<AC>"
