"""`llmscope next-token` in process: JSON from stdin with the chat template, the table at 80 columns, bad values,
and --steps limits whose hint is the largest value that works."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers.cli import USAGE

PROMPT = "The capital of France is"


def test_cli_json_stdin_and_chat(cli, tiny_model_dir: Path) -> None:
    result = cli("next-token", "-", "-m", tiny_model_dir, "--json", "--top-k", "4", "--steps", "2", input=PROMPT)
    assert result.exit_code == 0, result.stderr
    document = result.json()
    assert document["command"] == "next-token" and document["prompt"] == PROMPT
    assert len(document["steps"]) == 2 and len(document["steps"][0]["top"]) == 4
    assert document["hidden_shape"][:2] == [1, len(document["prompt_tokens"])]
    chat = cli("next-token", "hi", "-m", tiny_model_dir, "--chat", "--json", "-k", "2").json()
    assert chat["chat_template_applied"] and chat["prompt_text"].startswith("<|im_start|>user\nhi")


def test_cli_table_fits_80_columns(cli, tiny_model_dir: Path) -> None:
    result = cli("next-token", PROMPT, "-m", tiny_model_dir, "--steps", "2", "-k", "5", "--temperature", "0.7",
                 "--top-p", "0.9", "--lens", env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.stderr
    assert "hidden states after the 2 blocks: [1, " in result.stdout and "Logit lens" in result.stdout
    assert "Step 2:" in result.stdout and "sampler" in result.stdout and "▸1" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 80


@pytest.mark.parametrize("arguments", [["--top-k", "0"], ["--steps", "0"], ["--temperature", "0"],
                                       ["--top-k", "100000"]])
def test_cli_rejects_bad_values(cli, tiny_model_dir: Path, arguments: list[str]) -> None:
    result = cli("next-token", PROMPT, "-m", tiny_model_dir, *arguments)
    assert result.exit_code == 2 and arguments[0] in result.stderr and "Traceback" not in result.stderr


def test_the_steps_hint_is_the_largest_value_that_works(cli, tiny_model_dir: Path) -> None:
    refused = cli("next-token", "Hello", "-m", tiny_model_dir, "--steps", "300", "-k", "1")
    assert refused.exit_code == USAGE
    hint = re.search(r"use --steps (\d+) or less", refused.stderr)
    assert hint and "--steps 300 exceed" in refused.stderr
    largest = int(hint.group(1))
    assert cli("next-token", "Hello", "-m", tiny_model_dir, "--steps", str(largest), "-k", "1", "--json"
               ).exit_code == 0
    assert cli("next-token", "Hello", "-m", tiny_model_dir, "--steps", str(largest + 1), "-k", "1").exit_code == USAGE


def test_steps_past_the_context_name_the_steps_option(cli, tiny_model_dir: Path) -> None:
    result = cli("next-token", "Hello", "-m", tiny_model_dir, "--steps", "100000")
    assert result.exit_code == USAGE
    assert "--steps" in result.stderr and "--max-new-tokens" not in result.stderr
