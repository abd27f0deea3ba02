"""Every command of the Typer app, found from the app (not listed by hand), and each command's own example
(attached with clikit.example) pointed at a model: what the contract tests run for every command."""

from __future__ import annotations

from pathlib import Path


def app_commands() -> dict[str, object]:
    """Every command of the Typer app, by name, with its callback."""
    import typer.main

    from llmscope.cli.main import app

    return {typer.main.get_command_name(c.name or c.callback.__name__): c.callback for c in app.registered_commands}


COMMANDS = sorted(app_commands())
MODEL_COMMANDS = [name for name in COMMANDS if "{model}" in getattr(app_commands()[name], "__llmscope_example__", ())]


def command_line(name: str, model: Path) -> list[str]:
    """The command's own example, pointed at `model`."""
    example = getattr(app_commands()[name], "__llmscope_example__", None)
    assert example is not None, f"{name} has no @example: the contract tests cannot run it"
    return [name, *(str(model) if arg == "{model}" else arg for arg in example)]
