"""Tokenization: spans that round-trip and never overlap (byte-level and byte-fallback tokenizers), chat template
tokens, id lists of ASCII digits only, each token's own bytes, and fuzzed text that decodes back exactly."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from helpers.texts import FUZZ_TEXT
from hypothesis import HealthCheck, given, settings

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


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=FUZZ_TEXT)
def test_fuzz_tokenize_round_trip(tiny, text: str) -> None:
    from llmscope.loading.tokenization import decode_ids, tokenize_text

    result = tokenize_text(tiny.tokenizer, text, "tiny", add_special_tokens=False)
    assert result.token_count == len(result.ids)
    assert decode_ids(tiny.tokenizer, result.ids).text == text  # byte-level BPE is lossless


@pytest.mark.parametrize("ids", ["²", "1,²", "٣ ٤", "１２"])
def test_decode_takes_ascii_digits_only(ids: str) -> None:
    from llmscope.core.errors import UsageError
    from llmscope.loading.tokenization import parse_id_list

    with pytest.raises(UsageError, match="is not a token id"):
        parse_id_list(ids, 1000)


def test_tokenize_spans_never_overlap_with_a_byte_fallback_tokenizer(tmp_path: Path) -> None:
    from helpers.models import CORPUS
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from llmscope.loading.tokenization import tokenize_text

    backend = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))  # as Llama's converts
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=["<unk>", "<s>", "</s>",
                                                                  *(f"<0x{i:02X}>" for i in range(256))],
                                  show_progress=False, initial_alphabet=["▁"])
    backend.train_from_iterator(CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>")
    text = "Hi 🙂 中文 x\u0301y 𝔘"
    result = tokenize_text(tokenizer, text, add_special_tokens=False)
    spans = [(t.start, t.end) for t in result.tokens]
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), spans
    assert "".join(text[start:end] for start, end in spans) == text  # every character in exactly one token
    assert result.tokens[0].piece == "▁" and spans[0] == (0, 0) and spans[1] == (0, 1)  # the added word marker


def test_token_bytes_are_each_tokens_own_bytes(tiny_model_dir: Path) -> None:
    from llmscope.loading.loader import load_tokenizer
    from llmscope.loading.tokenization import token_bytes

    tokenizer = load_tokenizer(str(tiny_model_dir))
    for text in ("héllo wörld 👋 東京", "emoji 🙂 and tabs\t", "plain"):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        pieces = [bytes(token_bytes(tokenizer, i)) for i in ids]
        assert b"".join(pieces) == text.encode("utf-8")
    wave = tokenizer("👋", add_special_tokens=False)["input_ids"]
    assert len(wave) > 1 and all(len(token_bytes(tokenizer, i)) < 4 for i in wave)  # split inside the character
