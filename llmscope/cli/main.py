"""The llmscope command line: the app with every command registered (llmscope.commands), the root help that names
them all, and the entry point. No torch or transformers at import time, so `llmscope --help` stays fast."""

from __future__ import annotations

import importlib
import sys

from llmscope.cli.app import app, normalize_argv
from llmscope.cli.kit import EXIT_CODES_HELP

# Importing a command module registers its command; this order is the order of the root help.
COMMAND_MODULES = ("llmscope.commands.generate", "llmscope.commands.tokenize_text", "llmscope.commands.next_token",
                   "llmscope.commands.attention", "llmscope.commands.architecture", "llmscope.commands.env",
                   "llmscope.commands.cache", "llmscope.commands.bench_cache", "llmscope.commands.score",
                   "llmscope.commands.compare", "llmscope.commands.attribute", "llmscope.commands.check_invariance",
                   "llmscope.commands.patch", "llmscope.commands.what_if", "llmscope.commands.serve",
                   "llmscope.commands.explore")
for _module in COMMAND_MODULES:
    importlib.import_module(_module)

from llmscope.commands.generate import run_generate  # noqa: E402  (after the registration above)

__all__ = ["app", "main", "normalize_argv", "run_generate"]


def example_line(name: str, args: tuple[str, ...]) -> str:
    """A command's @example as a user types it: the test's model folder ({model}) left to the default model."""
    import shlex

    words: list[str] = []
    skip = False
    for index, arg in enumerate(args):
        if skip:
            skip = False
            continue
        if arg in ("-m", "--model") and index + 1 < len(args) and args[index + 1] == "{model}":
            skip = True
            continue
        words.append(arg)
    return shlex.join(["llmscope", name, *words])


def _describe_commands() -> None:
    """The root --help names every command the app has, so a new command cannot be left out of it; each command's
    line there is its whole first sentence (click would cut it with "..."), and its own --help ends with its
    example."""
    import inspect

    import typer.main

    names = []
    for info in app.registered_commands:
        name = typer.main.get_command_name(info.name or info.callback.__name__)
        names.append(name)
        doc = inspect.getdoc(info.callback) or ""
        info.short_help = info.short_help or " ".join(doc.split("\n\n")[0].split())
        args = getattr(info.callback, "__llmscope_example__", None)
        if args is not None:
            info.epilog = f"\b\nExample:\n  {example_line(name, args)}\n\n{info.epilog or EXIT_CODES_HELP}"
    app.info.help = f"Look inside causal language models: {', '.join(names)}.\n\n{EXIT_CODES_HELP}"


_describe_commands()


def main(args: list[str] | None = None) -> None:
    """Run the app (the console script goes through llmscope.entry, which handles signals first)."""
    app(args=list(sys.argv[1:] if args is None else args), prog_name="llmscope")
