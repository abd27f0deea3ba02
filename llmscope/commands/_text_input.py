"""The TEXT argument and -f/--file option of every command that reads a text (tokenize, score, compare): the one
way to give it from a file, read byte for byte, final newline kept. Option types only; no command lives here."""

from __future__ import annotations

from typing import Annotated

import typer

TextArg = Annotated[str | None, typer.Argument(
    help="The text; '-' reads it from stdin, byte for byte (a final newline is kept: echo -n leaves it out).",
    show_default=False)]
FileOpt = Annotated[str | None, typer.Option(
    "--file", "-f", metavar="FILE",
    help="Read the text from this file (UTF-8), byte for byte: its final newline is part of the text too.",
    show_default=False)]
