"""--help says what to type after each option (MODEL, TEXT, N, FILE, a list of choices), never Typer's type names
(<str>, <list[str]>), for every option of every command; and every command that reads a TEXT takes it from a file
the same way, -f/--file. Fast tier (tokenizer only for tokenize)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

TYPE_NAME = re.compile(r"<[^>]*>")
PYTHON_TYPES = {"str", "int", "float", "bool", "integer", "string", "list"}  # as Typer and click name types


def commands() -> dict[str, Any]:
    import typer.main

    from llmscope.cli.main import app

    return dict(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def value_options(command: Any) -> list[Any]:
    return [p for p in command.params if p.param_type_name == "option" and not getattr(p, "is_flag", False)]


@pytest.mark.parametrize("name", sorted(commands()))
def test_every_option_says_what_to_type(cli: Any, name: str) -> None:
    import typer

    command = commands()[name]
    context = typer.Context(command)
    for option in value_options(command):
        names, _ = option.get_help_record(context)
        shown = names.split(" ", len([o for o in names.split() if o.startswith("-")]))[-1].strip()
        assert option.metavar and shown == option.metavar, (name, names)
        assert not TYPE_NAME.search(shown) and shown not in PYTHON_TYPES, (name, names)
    text = cli(name, "--help", env={"COLUMNS": "200"}).stdout
    assert not TYPE_NAME.search(text), (name, TYPE_NAME.findall(text))


def test_the_shared_options_name_their_values(cli: Any) -> None:
    text = " ".join(cli("generate", "--help", env={"COLUMNS": "200"}).stdout.split())
    for shown in ("-m, --model MODEL", "-n, --max-new-tokens N", "--device DEVICE", "--dtype DTYPE",
                  "-t, --threads N", "--system TEXT", "--temperature NUMBER", "--top-k K", "--batch FILE",
                  "--api-key KEY", "--endpoint URL", "--html FILE|DIR"):
        assert shown in text, shown
    tokenize = " ".join(cli("tokenize", "--help", env={"COLUMNS": "200"}).stdout.split())
    assert "-m, --model MODEL" in tokenize and "-f, --file FILE" in tokenize


def test_every_command_that_reads_a_text_takes_a_file() -> None:
    readers = {name for name, command in commands().items()
               if any(p.param_type_name == "argument" and p.name == "text" for p in command.params)}
    assert readers == {"tokenize", "score", "compare", "what-if"}
    for name in readers:
        assert any("--file" in p.opts and "-f" in p.opts for p in commands()[name].params), name


def test_tokenize_reads_a_file_byte_for_byte(cli: Any, tiny_model_dir: Path, tmp_path: Path) -> None:
    text = "Hello world!\nÜnïcödé 🙂\n"
    source = tmp_path / "text.txt"
    source.write_bytes(text.encode("utf-8"))
    from_file = cli("tokenize", "-f", source, "-m", tiny_model_dir, "--json")
    from_argument = cli("tokenize", text, "-m", tiny_model_dir, "--json")
    assert from_file.exit_code == 0, from_file.stderr
    document = from_file.json()
    assert (document["text"], document["ids"]) == (text, from_argument.json()["ids"])  # the final newline too
    both = cli("tokenize", "hi", "-f", source, "-m", tiny_model_dir)
    assert both.exit_code == 2 and "give either TEXT or --file PATH" in both.stderr
    missing = cli("tokenize", "-f", tmp_path / "missing.txt", "-m", tiny_model_dir)
    assert missing.exit_code == 2 and "cannot read --file" in missing.stderr
