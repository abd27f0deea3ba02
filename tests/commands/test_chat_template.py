"""The chat template through the commands: each command reads the raw prompt unless asked, generate says when a
template was applied, the help shows the default, a failing template is one line naming --no-chat."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.cli import USAGE

PROMPT = "The capital of France is"


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


def test_a_failing_chat_template_is_one_line_naming_no_chat(cli, tmp_path: Path, tiny_model_dir: Path) -> None:
    import shutil

    folder = tmp_path / "bad-template"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = "{{ messages.__class__.__mro__ }}{% for x in range(10 %}"
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    for chat_template in (folder / "chat_template.jinja",):
        if chat_template.exists():
            chat_template.write_text(config["chat_template"])
    result = cli("generate", "Hello", "-m", folder, "-n", "2", "--chat")
    assert result.exit_code == USAGE, result.stderr
    assert "chat template" in result.stderr and "--no-chat" in result.stderr and "Traceback" not in result.stderr
