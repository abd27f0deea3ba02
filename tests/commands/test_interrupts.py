"""Ctrl-C and SIGTERM inside the commands (raised in process, no real signal): exit 130 / 143 with what was done,
one line when the interrupt lands outside a command, during an import, or is swallowed by a finalizer."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest
from helpers.cli import INTERRUPTED


@pytest.fixture
def signal_handlers():
    """Signal handlers and flags as they were before the test (entry.main installs its own)."""

    from llmscope.core import errors

    saved = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    flags = dict(errors._signals)
    yield
    for number, handler in saved.items():
        signal.signal(number, handler)
    errors._signals.update(flags)


def test_ctrl_c_during_generate_exits_130_with_partial_output(cli, tiny_model_dir: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import llmscope.render.generation as show

    real_printer = show.stream_printer

    def interrupting_printer(display, show_probs):
        printer = real_printer(display, show_probs)
        count = {"n": 0}

        def on_token(token) -> None:
            count["n"] += 1
            printer(token)
            if count["n"] == 4:
                raise KeyboardInterrupt

        return on_token

    monkeypatch.setattr(show, "stream_printer", interrupting_printer)
    result = cli("generate", "Hello", "-m", tiny_model_dir, "--no-chat", "-n", "40", "--stream")
    assert result.exit_code == INTERRUPTED
    assert result.stdout.strip() != "" and "4 new tokens" in result.stderr and "interrupted" in result.stderr


def test_sigterm_outside_a_command_is_one_line_and_143(monkeypatch: pytest.MonkeyPatch, capsys,
                                                       signal_handlers) -> None:
    import typer

    from llmscope.core import errors
    from llmscope.entry import main

    def stopped(*args: object, **kwargs: object) -> None:  # SIGTERM while Typer runs an option callback
        errors._signals["terminated"] = True
        raise KeyboardInterrupt

    monkeypatch.setattr(typer, "echo", stopped)
    with pytest.raises(SystemExit) as leaving:
        main(["--version"])
    assert leaving.value.code == 143
    assert capsys.readouterr().err == "error: terminated\n"


def test_a_swallowed_interrupt_still_stops_the_run(cli, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                   signal_handlers) -> None:

    import llmscope.bench.timed_run as benchrun
    from llmscope.core.errors import handle_sigterm

    handle_sigterm()
    real = benchrun.one_run
    calls = {"n": 0}

    def losing_the_interrupt(*args: object, **kwargs: object):  # as CPython does when it arrives in a finalizer
        calls["n"] += 1
        if calls["n"] == 3:
            try:
                signal.raise_signal(signal.SIGINT)
            except KeyboardInterrupt:
                pass
        return real(*args, **kwargs)

    monkeypatch.setattr("llmscope.bench.benchmark._one_run", losing_the_interrupt)
    result = cli("bench-cache", "-m", tiny_model_dir, "-n", "4", "--repeat", "20", "--warmup", "0", "--no-chat")
    assert result.exit_code == 130, result.stderr
    assert calls["n"] < 40 and "interrupted" in result.stderr


def test_an_interrupt_while_importing_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import types

    from llmscope import entry

    class Importing(types.ModuleType):
        def __getattr__(self, name: str) -> object:
            raise KeyboardInterrupt

    monkeypatch.setitem(sys.modules, "llmscope.cli.main", Importing("llmscope.cli.main"))
    with pytest.raises(SystemExit) as stopped:
        entry.main(["--help"])
    assert stopped.value.code == INTERRUPTED
    assert capsys.readouterr().err == "error: interrupted\n"
