"""`llmscope tokenize`: ids, pieces, spans, decode, comparisons, on the tiny tokenizer and the real one."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from llmscope.core.errors import UsageError
from llmscope.loading.loader import load_tokenizer
from llmscope.loading.tokenization import decode_ids, parse_id_list, tokenize_text


def test_tokenize_text_spans_round_trip(tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(str(tiny_model_dir))
    text = "The capital of France is Paris."
    result = tokenize_text(tokenizer, text, "tiny")
    assert result.ids == tokenizer(text)["input_ids"]
    assert "".join(text[t.start:t.end] for t in result.tokens if t.start is not None) == text
    assert result.token_count == len(result.tokens) and result.characters == len(text)
    assert decode_ids(tokenizer, result.ids).text == text


def test_chat_template_tokens(tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(str(tiny_model_dir))
    result = tokenize_text(tokenizer, "hi", "tiny", chat=True)
    assert result.text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert result.tokens[0].special and result.tokens[0].piece == "<|im_start|>"


def test_parse_id_list() -> None:
    assert parse_id_list("504 3575,282 [4649]".replace("[", "").replace("]", ""), 49152) == [504, 3575, 282, 4649]
    assert parse_id_list("[1, 2]", 10) == [1, 2]
    with pytest.raises(UsageError, match="outside the vocabulary"):
        parse_id_list("5 10", 10)
    with pytest.raises(UsageError, match="not a token id"):
        parse_id_list("5 abc", 10)
    with pytest.raises(UsageError, match="no token ids"):
        parse_id_list("  ", 10)


def test_cli_tokenize_json_and_ids(cli, tiny_model_dir: Path) -> None:
    result = cli("tokenize", "The capital of France is", "-m", tiny_model_dir, "--json")
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert data["command"] == "tokenize" and data["model"] == str(tiny_model_dir)
    ids = data["ids"]
    assert data["token_count"] == len(ids) and [t["token_id"] for t in data["tokens"]] == ids
    plain = cli("tokenize", "The capital of France is", "-m", tiny_model_dir, "--ids")
    assert plain.stdout.split() == [str(i) for i in ids]
    back = cli("tokenize", "-m", tiny_model_dir, "--decode", " ".join(map(str, ids)))
    assert back.stdout == "The capital of France is\n"


def test_cli_tokenize_stdin_and_table(cli, tiny_model_dir: Path) -> None:
    result = cli("tokenize", "-", "-m", tiny_model_dir, input="Hello world!\n")
    assert result.exit_code == 0, result.stderr
    assert "13 characters" in result.stdout  # stdin's bytes are the text: its final newline is kept
    assert "␣" in result.stdout.splitlines()[0]  # whitespace made visible in the boundary line
    assert "special tokens added: none" in result.stdout


def test_cli_tokenize_compares_tokenizers(cli, tiny_models: dict[str, Path]) -> None:
    result = cli("tokenize", "Hello world!", "-m", tiny_models["llama"], "-m", tiny_models["gpt2"], "--json")
    assert result.exit_code == 0, result.stderr
    comparison = result.json()["comparison"]
    assert [c["model"] for c in comparison] == [str(tiny_models["llama"]), str(tiny_models["gpt2"])]


@pytest.mark.slow
def test_embedded_tokenizer_ids(cli) -> None:
    result = cli("tokenize", "The capital of France is", "--ids")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "504 3575 282 4649 314\n"
    decoded = cli("tokenize", "--decode", "504 3575 282 4649 314", "--json")
    assert decoded.json()["text"] == "The capital of France is"


LIGHT_SAMPLES = ["The capital of France is", "  two  spaces\tand a tab\nnew line", "Ünïcödé 🙂 日本語",
                 "<|im_start|>user\nhi<|im_end|>", "", "x" * 300, "def f(a, b):\n    return a+b  # ok"]


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


def test_tokens_holding_parts_of_a_character_show_their_bytes(cli, tiny_model_dir: Path) -> None:
    """Byte-level BPE splits 👋 (F0 9F 91 8B) and 東 (E6 9D B1) into byte tokens: each shows its own bytes,
    and the spans tile the text without overlapping (a character belongs to the token with its last byte)."""
    text = "héllo 👋 東"
    result = cli("tokenize", "-m", tiny_model_dir, "--json", text)
    assert result.exit_code == 0, result.stderr
    tokens = result.json()["tokens"]
    held = b"".join(bytes.fromhex(t["partial_bytes"]) if t["partial_bytes"] else t["text"].encode()
                    for t in tokens)
    assert held == text.encode("utf-8")
    partial = [t["partial_bytes"] for t in tokens if t["partial_bytes"]]
    assert " ".join(partial).split() == ["C3", "A9", "F0", "9F", "91", "8B", "E6", "9D", "B1"]
    spans = [(t["start"], t["end"]) for t in tokens]
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans))  # no overlap
    assert "".join(text[s:e] for s, e in spans) == text  # and nothing lost
    wave = next(t for t in tokens if t["partial_bytes"] == "8B")
    assert text[wave["start"]:wave["end"]] == "👋"
    line = cli("tokenize", "-m", tiny_model_dir, text).stdout.splitlines()[0]
    assert line == "h|<C3>|<A9>|l|l|o|␣|<F0>|<9F>|<91>|<8B>|␣|<E6>|<9D>|<B1>"


@pytest.mark.slow
def test_embedded_tokens_split_inside_characters(cli) -> None:
    """The issue's example on SmolLM2: ' 👋' is split as ␣F0 9F | 91 | 8B, not three copies of 👋."""
    result = cli("tokenize", "héllo wörld 👋 東京")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[0] == "h|é|llo|␣w|ör|ld|␣<F0 9F>|<91>|<8B>|␣<E6>|<9D>|<B1>|<E4 BA>|<AC>"
