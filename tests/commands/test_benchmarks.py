"""The benchmark scripts read llmscope's own help page."""

from __future__ import annotations

import benchlib


def test_listed_commands_reads_the_help_page(cli) -> None:
    result = cli("--help")
    assert result.exit_code == 0
    names = benchlib.listed_commands(result.stdout)
    assert names[:2] == ["generate", "tokenize"]
    assert "--help" not in names and "look" not in names
    text = ("Usage: x\n\nCommands:\n  generate  Write text that goes on\n            past the line\n"
            "  bench-cache  Time\n")
    assert benchlib.listed_commands(text) == ["generate", "bench-cache"]
