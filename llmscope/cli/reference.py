"""Builds docs/cli.md, the reference page of every command's --help, from the Typer app itself.
`python -m llmscope.cli.reference > docs/cli.md` writes it; a test fails when the checked-in page is stale."""

from __future__ import annotations

WIDTH = 100


def command_names() -> list[str]:
    import typer.main

    from llmscope.cli.main import app

    return sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def help_text(args: list[str]) -> str:
    from typer.testing import CliRunner

    from llmscope.cli.main import app

    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": str(WIDTH), "NO_COLOR": "1",
                                                            "TERM": "dumb"}, prog_name="llmscope")
    return result.stdout.rstrip() + "\n"


def reference_page() -> str:
    parts = ["# llmscope command reference", "",
             "Generated from the app by `python -m llmscope.cli.reference > docs/cli.md`; a test checks it is current.",
             "", "## llmscope", "", "```", help_text([]).rstrip(), "```", ""]
    for name in command_names():
        parts += [f"## llmscope {name}", "", "```", help_text([name]).rstrip(), "```", ""]
    return "\n".join(parts)


if __name__ == "__main__":
    print(reference_page(), end="")
