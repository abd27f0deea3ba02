"""`llmscope generate` in process: JSON, text and show-probs, options ignored with a warning, rules checked after
loading, log-probabilities in JSON without impossible alternatives."""

from __future__ import annotations

from pathlib import Path

from helpers.cli import USAGE


def test_cli_generate_json(cli, tiny_model_dir: Path) -> None:
    result = cli("generate", "Hello", "-m", tiny_model_dir, "-n", "5", "--no-chat", "--json", "--logprobs", "2")
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert data["command"] == "generate" and data["device"] == "cpu" and data["dtype"] == "float32"
    assert data["new_tokens"] == len(data["token_ids"]) <= 5
    content = data["logprobs"]["content"]
    assert [c["id"] for c in content] == data["token_ids"]
    assert all(len(c["top_logprobs"]) == 2 for c in content)
    assert "prompt tokens" in result.stderr and "stopped:" in result.stderr


def test_cli_generate_text_and_show_probs_without_colour(cli, tiny_model_dir: Path) -> None:
    result = cli("generate", "Hello", "-m", tiny_model_dir, "-n", "4", "--no-chat", "--show-probs")
    assert result.exit_code == 0, result.stderr
    import re

    pairs = re.findall(r"\[(\d\.\d\d)\]", result.stdout)  # token[p] pairs when stdout is not a terminal
    assert pairs and all(0 <= float(p) <= 1 for p in pairs)
    assert "perplexity" in result.stderr


def test_ignored_options_are_named_in_a_warning(cli, tiny_model_dir: Path) -> None:
    result = cli("generate", "Hello", "-m", tiny_model_dir, "-n", "2", "--no-chat", "--system", "be brief",
                 "--logprobs", "2", "--seed", "3")
    assert result.exit_code == 0, result.stderr
    stderr = " ".join(result.stderr.split())
    assert "--system is ignored with --no-chat" in stderr
    assert "--logprobs is ignored without --json" in stderr
    assert "--seed is ignored without sampling" in stderr
    tokenized = cli("tokenize", "Hello", "-m", tiny_model_dir, "--system", "x", "--json")
    assert tokenized.json()["chat_template_applied"] is True  # --system asks for the template, as in every command


def test_model_rules_run_after_loading(cli, tiny_model_dir: Path) -> None:
    result = cli("generate", "Hello", "-m", tiny_model_dir, "--top-k", "100000")
    assert result.exit_code == USAGE and "larger than the vocabulary" in result.stderr


def test_logprobs_json_lists_no_impossible_alternatives(cli, tiny_model_dir: Path) -> None:
    document = cli("generate", "Hello", "-m", tiny_model_dir, "--no-chat", "-n", "3", "--top-k", "2", "--seed", "1",
                   "--logprobs", "5", "--json").json()
    for token in document["logprobs"]["content"]:
        assert len(token["top_logprobs"]) == 2 and document["logprobs"]["distribution"] == "sampler"
        assert all(alt["logprob"] is not None and alt["probability"] > 0 for alt in token["top_logprobs"])
    content = document["logprobs"]["content"]
    if document["finish_reason"] == "length":  # no end-of-sequence token: the bytes spell the text exactly
        assert b"".join(bytes(token["bytes"]) for token in content) == document["text"].encode("utf-8")
