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

NO_MODEL = "/nonexistent/llmscope-model"
FILE_OPTIONS = ("--html", "--plot")  # every option of the app that writes a file


def registered() -> dict[str, Any]:
    import typer.main

    from llmscope.cli.main import app

    return {typer.main.get_command_name(info.name or info.callback.__name__): info.callback
            for info in app.registered_commands}


def output_options() -> list[tuple[str, tuple[str, ...], str]]:
    """(command, its example's arguments, option) for every option of the app that writes a file."""
    import typer.main

    from llmscope.cli.main import app

    examples = {name: tuple(getattr(callback, "__llmscope_example__", ())) for name, callback in registered().items()}
    return [(name, examples[name], option)
            for name, sub in sorted(typer.main.get_command(app).commands.items())  # type: ignore[attr-defined]
            for parameter in sub.params for option in parameter.opts if option in FILE_OPTIONS]


def test_every_file_option_is_marked_for_the_check() -> None:
    from llmscope.core.output_files import OutputFile

    marked = {(name, marker.option) for name, callback in registered().items()
              for parameter in inspect.signature(callback).parameters.values()
              for marker in typing.get_args(parameter.annotation)[1:] if isinstance(marker, OutputFile)}
    found = {(name, option) for name, _, option in output_options()}
    assert marked == found and len(found) >= 10  # six commands write --html, four --plot


def bad_paths(option: str, tmp_path: Path) -> list[tuple[str, str]]:
    """(path, what the refusal says) for paths no writer can use."""
    suffix = ".png" if option == "--plot" else ".html"
    device = tmp_path / f"full{suffix}"  # /dev/full under a name with the right suffix
    if not device.exists():
        device.symlink_to("/dev/full")
    return [(f"/proc/llmscope-check{suffix}", "cannot write"), (f"/sys/llmscope-check{suffix}", "cannot write"),
            ("/dev/full" if option == "--html" else str(device), "is not a regular file"),
            (str(tmp_path / "missing" / f"out{suffix}"), "does not exist")]


@pytest.mark.parametrize(("name", "example", "option"), output_options(),
                         ids=[f"{name} {option}" for name, _, option in output_options()])
def test_unwritable_outputs_are_refused_before_loading(cli: Any, tmp_path: Path, name: str,
                                                       example: tuple[str, ...], option: str) -> None:
    args = [NO_MODEL if arg == "{model}" else arg for arg in example]
    for path, message in bad_paths(option, tmp_path):
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
    from llmscope.core.output_files import HTML_FILE, PLOT_FILE, check_output

    page, chart, folder = tmp_path / "page.html", tmp_path / "chart.png", tmp_path / "pages" / "deeper"
    assert check_output(HTML_FILE, str(page)) == page and not page.exists()
    assert check_output(PLOT_FILE, str(chart)) == chart and not chart.exists()
    assert check_output(HTML_FILE, str(folder), batch=True) == folder
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    page.write_text("kept")
    check_output(HTML_FILE, str(page))
    assert page.read_text() == "kept"
    assert check_output(HTML_FILE, "/dev/null") == Path("/dev/null")  # the one device that takes any output
