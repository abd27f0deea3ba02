"""`llmscope score` in process: OpenAI-shaped JSON, text from a file, plain output, bad values before loading, token
text quoted in tables, an empty --prompt named."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers.cli import USAGE

from llmscope.inspection.scoring import score_text

TEXT = "The capital of France is Paris. The capital of Italy is Rome."


def test_cli_json_is_openai_shaped(cli, tiny_model_dir: Path, tiny) -> None:
    result = cli("score", "-", "-m", tiny_model_dir, "--json", "--top-k", "2", input=TEXT)
    assert result.exit_code == 0, result.stderr
    document = result.json()
    expected = score_text(tiny, TEXT)
    assert document["command"] == "score" and document["text"] == TEXT
    assert document["summary"]["perplexity"] == pytest.approx(expected.perplexity, rel=1e-6)
    content = document["prompt_logprobs"]["content"]
    assert len(content) == len(expected.token_ids) and content[0]["logprob"] is None and content[0]["token"] == "The"
    assert [c["id"] for c in content] == list(expected.token_ids)
    assert content[1]["logprob"] == pytest.approx(expected.tokens[0].logprob, abs=1e-6)
    assert len(content[1]["top_logprobs"]) == 2 and content[1]["rank"] == expected.tokens[0].rank


def test_cli_text_from_a_file_and_plain_output(cli, tiny_model_dir: Path, tmp_path: Path, tiny) -> None:
    path = tmp_path / "text.txt"
    path.write_text(TEXT + "\n", encoding="utf-8")
    result = cli("score", "--file", path, "-m", tiny_model_dir, "--worst", "2")
    assert result.exit_code == 0, result.stderr
    expected = score_text(tiny, TEXT + "\n")  # the file's bytes are its text, final newline included
    first = expected.tokens[0]
    assert result.stdout.startswith(f"The{first.delta}[{first.probability:.2f}]")
    assert f"{expected.perplexity:.3f}" in result.stdout and "The 2 most surprising tokens" in result.stdout
    assert "the first token 'The' is not scored" in result.stderr


@pytest.mark.parametrize("arguments", [
    ["--window", "1"], ["--stride", "0"], ["--window", "8", "--stride", "9"], ["--max-tokens", "0"],
    ["--top-k", "-1"], ["--chat"], ["--colour-by", "size"], ["--file", "/nonexistent/file.txt"],
    ["--file", "x.txt", "--system", "s"]])
def test_cli_bad_values_exit_2_before_loading(cli, monkeypatch: pytest.MonkeyPatch, arguments: list[str]) -> None:
    import llmscope.loading.loader

    def no_loading(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the model must not load")

    monkeypatch.setattr(llmscope.loading.loader, "load_model", no_loading)
    text = [] if "--file" in arguments else ["some text"]
    result = cli("score", *text, *arguments)
    assert result.exit_code == 2, result.stderr
    assert "Traceback" not in result.stderr and "must not load" not in result.stderr
    both = cli("score", "some text", "--file", "x.txt")
    assert both.exit_code == 2 and "either TEXT or --file" in both.stderr


def test_score_tables_quote_token_text(cli, tiny_model_dir: Path) -> None:
    result = cli("score", "a - b - c", "-m", tiny_model_dir, "--table", env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.stderr
    assert re.search(r"^\s*\d+\s+'␣-'\s", result.stdout, re.M) or re.search(r"^\s*\d+\s+'-'\s", result.stdout, re.M)


def test_an_empty_prompt_option_is_named(cli, tiny_model_dir: Path) -> None:
    result = cli("score", "Hello", "--prompt", "", "-m", tiny_model_dir)
    assert result.exit_code == USAGE and "--prompt is empty" in result.stderr
