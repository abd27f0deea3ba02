"""One chat-template rule for every command (issue 21 item 9): the raw prompt unless --chat (or --system) asks for
the tokenizer's template; the default is in each --help and the human output says when a template was applied."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmscope.core.command_settings import PromptSettings

PROMPT = "The capital of France is"


def test_the_rule() -> None:
    assert PromptSettings().applies_template is False
    assert PromptSettings(chat=True).applies_template is True
    assert PromptSettings(system="be brief").applies_template is True
    assert PromptSettings(chat=False, system="be brief").applies_template is False


@pytest.mark.parametrize("command", [
    ("generate", "-n", "1"), ("next-token", "-k", "1"), ("attention",), ("tokenize",)])
def test_every_command_reads_the_raw_prompt_unless_asked(cli, tiny_model_dir: Path, command: tuple[str, ...]) -> None:
    name, *options = command
    raw = cli(name, PROMPT, "-m", tiny_model_dir, *options, "--json", "-q")
    assert raw.exit_code == 0, raw.stderr
    assert raw.json()["chat_template_applied"] is False
    for asked in (["--chat"], ["--system", "be brief"]):
        templated = cli(name, PROMPT, "-m", tiny_model_dir, *options, *asked, "--json", "-q")
        assert templated.exit_code == 0, (asked, templated.stderr)
        assert templated.json()["chat_template_applied"] is True, asked


def test_generate_says_when_a_template_was_applied(cli, tiny_model_dir: Path) -> None:
    templated = cli("generate", PROMPT, "-m", tiny_model_dir, "-n", "1", "--chat")
    assert templated.exit_code == 0 and "(chat template applied)" in templated.stderr, templated.stderr
    raw = cli("generate", PROMPT, "-m", tiny_model_dir, "-n", "1")
    assert raw.exit_code == 0 and "chat template" not in raw.stderr, raw.stderr


@pytest.mark.parametrize("name", ["generate", "next-token", "attention", "bench-cache", "tokenize"])
def test_help_shows_the_default(cli, name: str) -> None:
    result = cli(name, "--help", env={"COLUMNS": "120"})
    text = " ".join(result.stdout.split())
    assert "default: off, the raw" in text and "on with --system" in text, name
