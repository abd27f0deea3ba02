"""`llmscope tokenize` in process: JSON and ids, stdin and the table, two tokenizers compared, bytes of tokens that
hold part of a character, huge ids, and fuzzed text whose ids decode back exactly."""

from __future__ import annotations

import itertools
from pathlib import Path

from helpers.cli import USAGE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmscope.loading.tokenization import parse_id_list


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


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=80))
def test_fuzz_cli_ids_then_decode(cli, tiny_model_dir: Path, text: str) -> None:
    ids = cli("tokenize", "-", "-m", tiny_model_dir, "--ids", "--no-special", input=text.encode())  # kept exact
    if not text.strip():  # whitespace alone is an empty prompt, refused in one line (clikit.require_text)
        assert ids.exit_code == 2 and "is empty" in ids.stderr
        return
    assert ids.exit_code == 0, ids.stderr
    if not ids.stdout.strip():
        return
    back = cli("tokenize", "-m", tiny_model_dir, "--decode", ids.stdout.strip(), "--json")
    assert back.exit_code == 0, back.stderr
    assert back.json()["text"] == text


def test_decode_of_a_huge_id_is_outside_the_vocabulary(cli, tiny_model_dir: Path) -> None:

    assert parse_id_list(" 3, 4 ", 1000) == [3, 4]
    result = cli("tokenize", "-m", tiny_model_dir, "--decode", "9" * 5000)
    assert result.exit_code == USAGE and "outside the vocabulary" in result.stderr and "5000 digits" in result.stderr
    superscript = cli("tokenize", "-m", tiny_model_dir, "--decode", "1,²")
    assert superscript.exit_code == USAGE and "'²' is not a token id" in superscript.stderr
