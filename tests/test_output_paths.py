"""Every file a command writes (--html, --plot) is checked writable before any model loads: for every command of the
app, a path under /proc or /sys, a device (/dev/full takes the open and fails the write) and a missing folder are
refused in one line, exit 2, naming the option. Fast tier: the model named does not exist, so a refusal that names
it came from an attempt to load."""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Any

import pytest

from llmscope.core.output_files import HTML_FILE, PLOT_FILE, OutputFile, check_output

NO_MODEL = "/nonexistent/llmscope-model"


def output_options() -> list[tuple[str, tuple[str, ...], str, OutputFile]]:
    """(command, its example's arguments, option, what the option writes) for every option that writes a file."""
    import typer.main

    from llmscope.cli.main import app

    found = []
    for info in app.registered_commands:
        name = typer.main.get_command_name(info.name or info.callback.__name__)
        example = tuple(getattr(info.callback, "__llmscope_example__", ()))
        for parameter in inspect.signature(info.callback).parameters.values():
            for marker in typing.get_args(parameter.annotation)[1:]:
                if isinstance(marker, OutputFile):
                    found.append((name, example, marker.option, marker))
    return found


def test_every_html_and_plot_option_is_checked() -> None:
    import typer.main

    from llmscope.cli.main import app

    command = typer.main.get_command(app)
    writing = {(name, option) for name, sub in command.commands.items()  # type: ignore[attr-defined]
               for parameter in sub.params for option in parameter.opts if option in ("--html", "--plot")}
    marked = {(name, option) for name, _, option, _ in output_options()}
    assert writing == marked and len(marked) >= 10  # six commands write --html, four --plot


def bad_paths(spec: OutputFile, tmp_path: Path) -> list[tuple[str, str]]:
    """(path, what the refusal says) for paths no writer can use."""
    suffix = spec.suffixes[0] if spec.suffixes else ".html"
    device = tmp_path / f"full{suffix}"  # /dev/full under a name with the right suffix
    if not device.exists():
        device.symlink_to("/dev/full")
    return [(f"/proc/llmscope-check{suffix}", "cannot write"), (f"/sys/llmscope-check{suffix}", "cannot write"),
            ("/dev/full" if not spec.suffixes else str(device), "is not a regular file"),
            (str(tmp_path / "missing" / f"out{suffix}"), "does not exist")]


@pytest.mark.parametrize(("name", "example", "option", "spec"), output_options(),
                         ids=[f"{name} {option}" for name, _, option, _ in output_options()])
def test_unwritable_outputs_are_refused_before_loading(cli: Any, tmp_path: Path, name: str,
                                                       example: tuple[str, ...], option: str,
                                                       spec: OutputFile) -> None:
    args = [NO_MODEL if arg == "{model}" else arg for arg in example]
    for path, message in bad_paths(spec, tmp_path):
        result = cli(name, *args, option, path)
        assert result.exit_code == 2, (path, result.stderr)
        assert option in result.stderr and message in result.stderr, (path, result.stderr)
        assert NO_MODEL not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_batch_html_folder_must_be_writable(cli: Any, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Hello\n")
    result = cli("generate", "--batch", prompts, "-m", NO_MODEL, "--html", "/proc/llmscope/pages")
    assert result.exit_code == 2 and "--html: cannot write in '/proc'" in result.stderr, result.stderr
    assert NO_MODEL not in result.stderr


def test_the_check_leaves_nothing_behind(tmp_path: Path) -> None:
    page, chart, folder = tmp_path / "page.html", tmp_path / "chart.png", tmp_path / "pages" / "deeper"
    assert check_output(HTML_FILE, str(page)) == page and not page.exists()
    assert check_output(PLOT_FILE, str(chart)) == chart and not chart.exists()
    assert check_output(HTML_FILE, str(folder), batch=True) == folder
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    page.write_text("kept")
    check_output(HTML_FILE, str(page))
    assert page.read_text() == "kept"
    assert check_output(HTML_FILE, "/dev/null") == Path("/dev/null")  # the one device that takes any output
