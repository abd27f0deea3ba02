"""One scripting contract for every command: the --json envelope, --quiet, colours, 80 columns (stderr wrapped at
word boundaries), text passed as argument / file / stdin alike, help pages with examples, the exit codes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers.cli import ANSI_COLOUR
from helpers.commands import COMMANDS, MODEL_COMMANDS, app_commands, command_line

from llmscope import __version__
from llmscope.cli.main import app

ENVELOPE = {"llmscope_version", "command", "model", "device", "dtype"}


TEXT = "The capital of France is Paris.\n"


LONG_PROMPT = "See https://example.com/" + "a" * 70 + " and\tthen   more words " * 3  # > 80 columns, a tab


def test_every_command_has_an_example_and_is_named_in_the_root_help(cli) -> None:
    root_help = " ".join(cli("--help").stdout.split())
    for name in COMMANDS:
        assert getattr(app_commands()[name], "__llmscope_example__", None) is not None, name
        assert name in root_help, name


def test_every_command_has_json_and_quiet() -> None:
    import typer.main


    group = typer.main.get_command(app)
    for name, sub in group.commands.items():  # type: ignore[attr-defined]
        options = {opt for param in sub.params for opt in param.opts}
        assert {"--json", "--quiet", "-q"} <= options, name


@pytest.mark.parametrize("name", COMMANDS)
def test_json_envelope_is_the_same_everywhere(cli, tiny_model_dir: Path, name: str) -> None:
    result = cli(*command_line(name, tiny_model_dir), "--json")
    assert result.exit_code == 0, result.stderr
    document = result.json()  # stdout holds exactly one JSON document
    assert ENVELOPE <= set(document), sorted(document)
    assert document["command"] == name and document["llmscope_version"] == __version__
    if name in MODEL_COMMANDS:
        assert document["model"] == str(tiny_model_dir)
    if document["device"] not in (None, "meta"):  # the commands that ran the model
        assert (document["device"], document["dtype"]) == ("cpu", "float32")


@pytest.mark.parametrize("name", COMMANDS)
def test_quiet_leaves_stderr_empty_and_tables_fit_80_columns(cli, tiny_model_dir: Path, name: str) -> None:
    result = cli(*command_line(name, tiny_model_dir), "-q", env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.strip()
    too_wide = [line for line in result.stdout.splitlines() if len(line) > 80]
    assert too_wide == []


def test_stderr_wraps_at_word_boundaries_at_80_columns(cli, tiny_model_dir: Path) -> None:
    long_path = tiny_model_dir / "deep folder name with spaces in it" / "model"
    result = cli("generate", "Hello", "-m", long_path, env={"COLUMNS": "80", "FORCE_COLOR": "1", "NO_COLOR": "1"})
    lines = re.sub(r"\x1b\[[0-9;]*m", "", result.stderr).splitlines()  # a terminal (forced): wrapped
    assert len(lines) > 1 and all(len(line) <= 80 for line in lines)
    words = set(" ".join(lines).split())
    assert {"no", "such", "model", "folder", "or", "file:"} <= words  # each word whole on one line
    piped = cli("generate", "Hello", "-m", long_path, env={"COLUMNS": "80"})
    assert len(piped.stderr.splitlines()) == 1  # into a pipe: one line a message, for scripts


def test_colours_follow_the_terminal_and_no_color(cli, tiny_model_dir: Path) -> None:
    args = ["tokenize", "Hello world", "-m", str(tiny_model_dir)]
    piped = cli(*args)
    assert not ANSI_COLOUR.search(piped.stdout)  # not a terminal: no colour
    forced = cli(*args, env={"FORCE_COLOR": "1", "NO_COLOR": ""})
    assert ANSI_COLOUR.search(forced.stdout)
    no_color = cli(*args, env={"FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert not ANSI_COLOUR.search(no_color.stdout)


def test_help_lists_exit_codes(cli) -> None:
    result = cli("--help")
    assert "Exit codes: 0 success, 1 runtime failure, 2 usage error, 130 interrupted, 143 terminated." in " ".join(
        result.stdout.split())


def test_every_command_help_shows_its_example(cli) -> None:
    for name, _callback in app_commands().items():
        result = cli(name, "--help", env={"COLUMNS": "80"})
        assert result.exit_code == 0, (name, result.stderr)
        assert "Example:" in result.stdout and f"llmscope {name}" in result.stdout.split("Example:")[1], name
        assert "{model}" not in result.stdout, name


def test_root_help_keeps_whole_descriptions(cli) -> None:
    import inspect

    result = cli("--help", env={"COLUMNS": "80"})
    commands = result.stdout.split("Commands:")[1]
    assert "..." not in commands
    flat = " ".join(commands.split())
    for name, callback in app_commands().items():
        first = " ".join((inspect.getdoc(callback) or "").split("\n\n")[0].split())
        assert first.replace("- ", "-") in flat.replace("- ", "-"), name


def test_a_text_keeps_its_final_newline_however_it_is_passed(cli, tiny_model_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "text.txt"
    path.write_bytes(TEXT.encode())
    runs = {"argument": cli("score", TEXT, "-m", tiny_model_dir, "--json"),
            "file": cli("score", "-f", path, "-m", tiny_model_dir, "--json"),
            "stdin": cli("score", "-", "-m", tiny_model_dir, "--json", input=TEXT)}
    documents = {how: run.json() for how, run in runs.items()}
    assert {how: d["text"] for how, d in documents.items()} == dict.fromkeys(runs, TEXT)
    assert len({tuple(d["token_ids"]) for d in documents.values()}) == 1
    tokenized = cli("tokenize", "-", "-m", tiny_model_dir, "--json", input=TEXT)
    as_argument = cli("tokenize", TEXT, "-m", tiny_model_dir, "--json")
    assert tokenized.json() == as_argument.json()
    assert "final newline" in cli("score", "--help").stdout


def test_a_long_model_path_is_not_broken_inside_a_name(cli, tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / ("models-kept-in-a-folder-whose-name-is-long-enough-to-wrap-" * 1)
    folder.mkdir()
    name = "SmolLM2-135M-Instruct.Q4_1-a-tiny-random-copy-for-the-wrapping-test"
    (folder / name).symlink_to(tiny_model_dir, target_is_directory=True)
    result = cli("score", "Hello world", "-m", folder / name, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.stderr
    title = next(n for n, line in enumerate(result.stdout.splitlines()) if line.startswith("Score under"))
    lines = result.stdout.splitlines()[title:title + 4]
    assert name in [line.strip() for line in lines], lines  # the name whole, on its own line
    assert all(len(line) <= 80 for line in lines)


def test_generated_text_goes_into_a_pipe_byte_for_byte(cli, tiny_model_dir: Path) -> None:
    plain = cli("generate", LONG_PROMPT, "-m", tiny_model_dir, "-n", "40", "--no-chat", "--full-text", "-q")
    document = cli("generate", LONG_PROMPT, "-m", tiny_model_dir, "-n", "40", "--no-chat", "--full-text",
                   "--json").json()
    assert plain.exit_code == 0, plain.stderr
    assert plain.stdout == document["full_text"] + "\n"
    streamed = cli("generate", LONG_PROMPT, "-m", tiny_model_dir, "-n", "40", "--no-chat", "--full-text", "-q",
                   "--stream")
    assert streamed.stdout == plain.stdout
    scored = cli("score", LONG_PROMPT, "-m", tiny_model_dir, "-q")
    first_line = scored.stdout.split("\n")[0]  # the text with each token's [p] marker, on one line
    assert re.sub(r"\[\d\.\d\d\]", "", first_line) == LONG_PROMPT


@pytest.mark.parametrize("command", [("generate", "Hello", "-n", "3", "--no-chat"), ("tokenize", "Hello"),
                                     ("architecture",)])
def test_columns_zero_still_prints(cli, tiny_model_dir: Path, command: tuple[str, ...]) -> None:
    result = cli(*command, "-m", tiny_model_dir, env={"COLUMNS": "0"})
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip()
