"""The Typer app every llmscope command registers on, with its argument handling (optional-value options) and
--version. Commands live in llmscope.commands; llmscope.cli.main puts them together."""

from __future__ import annotations

from typing import Annotated, Any

import typer
import typer.core

from llmscope import __version__
from llmscope.core.errors import Interrupted

OPTIONAL_VALUE_OPTIONS = {"--show-probs": ("probability", ("probability", "entropy"))}


def normalize_argv(args: list[str]) -> list[str]:
    """Give options with an optional value their default when they stand alone (`--show-probs`).

    Typer has no optional-value options, so a bare `--show-probs` becomes `--show-probs=probability`.
    """
    out: list[str] = []
    for index, arg in enumerate(args):
        if arg == "--":
            return out + args[index:]
        following = args[index + 1] if index + 1 < len(args) else None
        if arg in OPTIONAL_VALUE_OPTIONS and following not in OPTIONAL_VALUE_OPTIONS[arg][1]:
            arg = f"{arg}={OPTIONAL_VALUE_OPTIONS[arg][0]}"
        out.append(arg)
    return out


class NamedArgument(typer.core.TyperArgument):
    """An argument that --help shows by what to type (PROMPT, TEXT), without Typer's type name (<str>) after it."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None


class LlmscopeGroup(typer.core.TyperGroup):
    """The app's command group: rewrites optional-value options inside argument parsing, so the app behaves the
    same whoever calls it (the console script, `python -m llmscope`, or a test's CliRunner), and shows every
    argument by its name in capitals (the options say what to type through their metavars: cli.groups)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for command in self.commands.values():
            for parameter in command.params:
                if isinstance(parameter, typer.core.TyperArgument):
                    parameter.__class__ = NamedArgument
                    parameter.metavar = parameter.metavar or (parameter.name or "").upper()

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, normalize_argv(list(args)))

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        """Parse the command line (option callbacks run here); see invoke for interrupts."""
        try:
            return super().make_context(*args, **kwargs)
        except KeyboardInterrupt:
            raise Interrupted from None

    def invoke(self, ctx: Any) -> Any:
        """Run the command; Ctrl-C or SIGTERM that no command handled leaves as Interrupted, which Typer lets
        through (a KeyboardInterrupt it would turn into a silent exit 130, even for SIGTERM)."""
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise Interrupted from None


app = typer.Typer(
    name="llmscope",
    cls=LlmscopeGroup,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"llmscope {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", "-V", help="Print the version and exit.",
                                          callback=_version_callback, is_eager=True)] = False,
) -> None:
    """Look inside causal language models from the command line."""
