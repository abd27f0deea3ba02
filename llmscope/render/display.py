"""The Display every command writes through (stdout for results, stderr for the rest), the JSON document, progress,
logging, and the formatting every renderer shares (counts, bytes, visible whitespace). It computes nothing."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from llmscope import __version__
from llmscope.core.command_settings import OutputMode
from llmscope.core.model_info import ModelInfo, to_plain

WHITESPACE_MARKERS = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}


def _no_color() -> bool:
    return bool(os.environ.get("NO_COLOR"))


class ResultConsole(Console):
    """stdout's console: a reader that went away (`| head`) ends the command quietly with exit 0, the same for
    every command, instead of Rich's exit 1."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


def _width() -> int | None:
    """The width to force on a console: 80 when $COLUMNS is 0 (Rich would print nothing at all), else None (Rich's
    own choice: $COLUMNS, the terminal's width, or 80)."""
    columns = os.environ.get("COLUMNS", "").strip()
    return 80 if columns.isdigit() and int(columns) < 1 else None


def _stderr_console() -> Console:
    """stderr: at a terminal, lines wrap at word boundaries to its width (no word broken at 80 columns); into a
    pipe or a file, each message stays one line, so that scripts can read `error: ...` lines whole."""
    console = Console(stderr=True, highlight=False, no_color=_no_color(), width=_width())
    console.soft_wrap = not console.is_terminal
    return console


@dataclass
class Display:
    """Where output goes for one command run: stdout for results, stderr for everything else."""

    quiet: bool = False
    mode: OutputMode = OutputMode.HUMAN
    out: Console = field(default_factory=lambda: ResultConsole(highlight=False, no_color=_no_color(),
                                                                soft_wrap=False, width=_width()))
    err: Console = field(default_factory=lambda: _stderr_console())
    model_info: ModelInfo | None = None  # the model this run loaded, for error messages

    @property
    def for_people(self) -> bool:
        """Human output: tables and text rather than JSON, CSV or bare ids."""
        return self.mode == OutputMode.HUMAN

    @property
    def stdout_is_terminal(self) -> bool:
        return self.out.is_terminal

    def status(self, message: str) -> None:
        """A progress or summary line on stderr (silenced by --quiet)."""
        if not self.quiet:
            self.err.print(Text(message, style="dim"))

    def note(self, renderable: Any) -> None:
        """A Rich renderable on stderr (silenced by --quiet)."""
        if not self.quiet:
            self.err.print(renderable)

    def warning(self, message: str) -> None:
        if not self.quiet:
            self.err.print(Text("warning: ", style="bold yellow") + Text(message))

    def error(self, message: str) -> None:
        self.err.print(Text("error: ", style="bold red") + Text(message))

    def document(self, command: str, info: ModelInfo | None, payload: Any, **extra: Any) -> None:
        """A result for scripts: the common envelope + payload, indented with --json, one line with --jsonl.
        extra keys (a --batch record's index and id) come first."""
        body = json_document(command, info, payload)
        self.record({**extra, **body})

    def record(self, document: dict[str, Any]) -> None:
        """One JSON document on stdout, written and flushed at once (indented, or one line with --jsonl)."""
        indent = None if self.mode == OutputMode.JSONL else 2
        self.out.file.write(json.dumps(document, ensure_ascii=False, indent=indent, allow_nan=False) + "\n")
        self.out.file.flush()

    def csv(self, header: list[str], rows: list[list[Any]]) -> None:
        """Comma-separated rows on stdout, with a header line."""
        import csv

        writer = csv.writer(self.out.file, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        self.out.file.flush()

    def result(self, renderable: Any) -> None:
        """A result for people on stdout."""
        self.out.print(renderable)

    def write(self, text: str) -> None:
        """Raw text on stdout (streaming), flushed at once."""
        self.out.file.write(text)
        self.out.file.flush()

    def text(self, content: Text, end: str = "") -> None:
        """Text a model wrote or read, on stdout: styled and wrapped by Rich at a terminal; into a pipe or a file,
        the plain text byte for byte (no wrapping, no trailing spaces, tabs kept)."""
        if self.out.is_terminal:
            self.out.print(content, end=end)
            self.out.file.flush()
        else:
            self.write(content.plain + end)

    def spinner(self, message: str) -> Any:
        """A transient spinner on stderr while something slow runs (a no-op context when quiet or piped)."""
        import contextlib

        if self.quiet or not self.err.is_terminal:
            self.status(message)
            return contextlib.nullcontext()
        return self.err.status(escape(message), spinner="dots")


@contextlib.contextmanager
def batch_progress(display: Display, total: int) -> Iterator[Callable[[Callable[[], None]], None]]:
    """A progress bar on stderr for --batch (prompts done, prompts/s); yields advance(write), which runs write()
    (a record to stdout) and moves the bar on. When stdout is the same terminal the bar steps aside for each
    record, so that no record starts on the bar's line. Nothing is drawn when quiet or when stderr is not a
    terminal."""
    if display.quiet or not display.err.is_terminal:
        yield lambda write: write()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("prompts"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=display.err,
                  transient=True, redirect_stdout=False, redirect_stderr=False) as progress:
        task = progress.add_task("batch", total=total, rate="")
        started = time.perf_counter()
        done = [0]

        def advance(write: Callable[[], None]) -> None:
            if display.out.is_terminal:
                progress.stop()  # transient: the bar's line is cleared, the record takes it
                try:
                    write()
                finally:
                    progress.start()
            else:
                write()
            done[0] += 1
            elapsed = time.perf_counter() - started
            progress.update(task, advance=1, rate=f"{done[0] / elapsed:.2f} prompts/s" if elapsed > 0 else "")

        yield advance


class DisplayLogHandler(logging.Handler):
    """Sends llmscope's log records to the Display's stderr console."""

    def __init__(self, display: Display) -> None:
        super().__init__()
        self.display = display

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno >= logging.ERROR:
            self.display.error(message)
        elif record.levelno >= logging.WARNING:
            self.display.warning(message)
        else:
            self.display.status(message)


def attach_logging(display: Display) -> None:
    """Route the 'llmscope' logger to this display (replacing an earlier handler)."""
    logger = logging.getLogger("llmscope")
    logger.handlers = [handler for handler in logger.handlers if not isinstance(handler, DisplayLogHandler)]
    logger.addHandler(DisplayLogHandler(display))
    logger.setLevel(logging.ERROR if display.quiet else logging.INFO)
    logger.propagate = False


def json_document(command: str, info: ModelInfo | None, payload: Any) -> dict[str, Any]:
    """The common envelope of every --json document: version, command, model, device, dtype, then the result."""
    document: dict[str, Any] = {
        "llmscope_version": __version__,
        "command": command,
        "model": info.model if info else None,
        "device": info.device if info else None,
        "dtype": info.dtype if info else None,
        "model_info": to_plain(info) if info else None,
    }
    body = to_plain(payload)
    if isinstance(body, dict):
        body = {key: value for key, value in body.items() if key not in ("model",)}
        document.update(body)
    else:
        document["result"] = body
    return document


def visible(text: str) -> str:
    """Text with whitespace and control characters made visible (␣ ↵ ⇥, \\xNN)."""
    out = []
    for char in text:
        if char in WHITESPACE_MARKERS:
            out.append(WHITESPACE_MARKERS[char])
        elif ord(char) < 32 or ord(char) == 127:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return "".join(out)


def human_count(value: int | float | None) -> str:
    if value is None:
        return "-"
    value = float(value)
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}"


def human_bytes(value: int | float | None) -> str:
    if value is None:
        return "-"
    value = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def titled(title: str, table: Any, caption: str | None = None) -> Any:
    """A table under a bold title line (and over a dim caption) that wrap to the screen, not to the table."""
    from rich.console import Group

    parts = [PathWrapped(title, style="bold"), table]
    if caption:
        parts.append(PathWrapped(caption, style="dim"))
    return Group(*parts)


class PathWrapped:
    """Text that wraps at spaces and, inside a long path, after a '/': Rich alone breaks a path that does not fit
    the line wherever the line ends ("...Instruct.⏎Q4_1.gguf")."""

    def __init__(self, text: str, style: str = "") -> None:
        self.text, self.style = text, style

    def __rich_console__(self, console: Any, options: Any) -> Iterator[Text]:
        yield Text(wrap_at_paths(self.text, options.max_width), style=self.style)


def wrap_at_paths(text: str, width: int) -> str:
    """TEXT with line breaks put at spaces or after a path's '/' so that each line fits WIDTH where it can (a single
    name longer than the line is left for Rich to fold)."""
    import re

    lines = []
    for paragraph in text.split("\n"):
        line = ""
        for piece in re.findall(r"(?:://|[^ /])*(?:/+| +|$)", paragraph):
            if line and len(line + piece.rstrip(" ")) > width:
                lines.append(line.rstrip(" "))
                line = piece.lstrip(" ")
            else:
                line += piece
        lines.append(line.rstrip(" "))
    return "\n".join(lines)


def model_summary(display: Display, info: ModelInfo) -> None:
    """The one-line load summary on stderr."""
    where = " (from the conversion cache)" if info.from_cache else (
        " (packed from GGUF and cached)" if info.from_cache is False and info.weights else
        " (converted from GGUF and cached)" if info.from_cache is False else
        " (converted from GGUF, not cached)" if info.source in ("gguf", "embedded") else "")
    held = f", weights {info.weights} ({info.activations} into packed matmuls)" if info.weights else ""
    if info.kept_exact:
        held += f", kept exact (no packed kernel for their input width): {info.kept_exact}"
    display.status(f"loaded {info.model} on {info.device}, {info.dtype}, {human_count(info.parameters)} parameters"
                   f"{held} in {info.load_seconds:.2f} s{where}")
