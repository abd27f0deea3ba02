"""The llmscope command line: the app with every command registered (llmscope.commands), the root help that names
them all, and the entry point. No torch or transformers at import time, so `llmscope --help` stays fast."""

from __future__ import annotations

import importlib
import sys

from llmscope.cliapp import app, normalize_argv
from llmscope.clikit import EXIT_CODES_HELP

# Importing a command module registers its commands; this order is the order of the root help.
COMMAND_MODULES = ("llmscope.commands.text", "llmscope.commands.models", "llmscope.commands.measure",
                   "llmscope.commands.serve")
for _module in COMMAND_MODULES:
    importlib.import_module(_module)

from llmscope.commands.text import run_generate  # noqa: E402  (after the registration above)

__all__ = ["app", "main", "normalize_argv", "run_generate"]


def _describe_commands() -> None:
    """The root --help names every command the app has, so a new command cannot be left out of it."""
    import typer.main

    names = ", ".join(typer.main.get_command_name(c.name or c.callback.__name__) for c in app.registered_commands)
    app.info.help = f"Look inside causal language models: {names}.\n\n{EXIT_CODES_HELP}"


_describe_commands()


def main(args: list[str] | None = None) -> None:
    """Run the app (the console script goes through llmscope.entry, which handles signals first)."""
    app(args=list(sys.argv[1:] if args is None else args), prog_name="llmscope")
