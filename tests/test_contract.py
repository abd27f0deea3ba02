"""One scripting contract for every command: --json envelope, --quiet, colours, 80 columns, the reference
page, and fuzzed inputs that must never crash tokenize or next-token."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmscope import __version__

ENVELOPE = {"llmscope_version", "command", "model", "device", "dtype"}
ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*(3[0-9]|4[0-9]|9[0-7]|10[0-7])[0-9;]*m")


def app_commands() -> dict[str, object]:
    """Every command of the Typer app, by name, with its callback: found from the app, not listed here."""
    import typer.main

    from llmscope.cli.main import app

    return {typer.main.get_command_name(c.name or c.callback.__name__): c.callback for c in app.registered_commands}


COMMANDS = sorted(app_commands())
MODEL_COMMANDS = [name for name in COMMANDS if "{model}" in getattr(app_commands()[name], "__llmscope_example__", ())]


def command_line(name: str, tiny: Path) -> list[str]:
    """The command's own example (attached with clikit.example), pointed at the tiny model."""
    example = getattr(app_commands()[name], "__llmscope_example__", None)
    assert example is not None, f"{name} has no @example: the contract tests cannot run it"
    return [name, *(str(tiny) if arg == "{model}" else arg for arg in example)]


def test_every_command_has_an_example_and_is_named_in_the_root_help(cli) -> None:
    root_help = " ".join(cli("--help").stdout.split())
    for name in COMMANDS:
        assert getattr(app_commands()[name], "__llmscope_example__", None) is not None, name
        assert name in root_help, name


def test_every_command_has_json_and_quiet() -> None:
    import typer.main

    from llmscope.cli.main import app

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


def test_reference_page_is_current() -> None:
    from llmscope.cli.reference import reference_page

    page = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
    assert page.read_text() == reference_page(), "docs/cli.md is stale: run `make figures`"


def test_help_lists_exit_codes(cli) -> None:
    result = cli("--help")
    assert "Exit codes: 0 success, 1 runtime failure, 2 usage error, 130 interrupted, 143 terminated." in " ".join(
        result.stdout.split())


# ------------------------------------------------------------------------------------- fuzzing

FUZZ_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=200) | st.builds(
    lambda c, n: c * n, st.characters(codec="utf-8", exclude_categories=("Cs",)), st.integers(500, 3000))


@pytest.fixture(scope="module")
def tiny_loaded(tiny_model_dir: Path):
    from llmscope.loading.loader import load_model

    return load_model(str(tiny_model_dir), device="cpu")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=FUZZ_TEXT)
def test_fuzz_tokenize_round_trip(tiny_loaded, text: str) -> None:
    from llmscope.loading.tokenization import decode_ids, tokenize_text

    result = tokenize_text(tiny_loaded.tokenizer, text, "tiny", add_special_tokens=False)
    assert result.token_count == len(result.ids)
    assert decode_ids(tiny_loaded.tokenizer, result.ids).text == text  # byte-level BPE is lossless


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=80))
def test_fuzz_cli_ids_then_decode(cli, tiny_model_dir: Path, text: str) -> None:
    ids = cli("tokenize", "-", "-m", tiny_model_dir, "--ids", "--no-special", input=text.encode())  # kept exact
    if not text.strip():  # whitespace alone is an empty prompt, refused in one line (clikit.require_text)
        assert ids.exit_code == 2 and "is empty" in ids.stderr
        return
    assert ids.exit_code == 0, ids.stderr
    if not ids.stdout.strip():
        return
    back = cli("tokenize", "-m", tiny_model_dir, "--decode", ids.stdout.strip(), "--json")
    assert back.exit_code == 0, back.stderr
    assert back.json()["text"] == text


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=300))
def test_fuzz_next_token_never_crashes(tiny_loaded, text: str) -> None:
    from llmscope.core.errors import UsageError
    from llmscope.inspection.next_token import next_token_distribution

    try:
        result = next_token_distribution(tiny_loaded, text, top_k=5)
    except UsageError as error:  # empty or too long for the 256-token context: a clear message, not a crash
        assert "empty" in str(error) or "context" in str(error)
        return
    probabilities = [candidate.probability for candidate in result.first.top]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-5


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=FUZZ_TEXT)
def test_fuzz_score_never_crashes(tiny_loaded, text: str) -> None:
    from llmscope.core.errors import UsageError
    from llmscope.inspection.scoring import score_text

    try:
        result = score_text(tiny_loaded, text)
    except UsageError as error:  # empty, or one token with nothing to predict it from
        assert "empty" in str(error) or "single token" in str(error)
        return
    assert result.tokens_scored == len(result.token_ids) - 1  # longer than the context: the sliding window
    assert [token.position for token in result.tokens] == list(range(1, len(result.token_ids)))
    assert result.perplexity is not None and result.perplexity > 1
