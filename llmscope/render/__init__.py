"""The show layer: the only code that writes to stdout/stderr (Rich for people, JSON for scripts).
Results arrive as dataclasses of plain values; nothing here computes or loads a model."""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from llmscope import __version__
from llmscope.results import ModelInfo, to_plain

WHITESPACE_MARKERS = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}


def _no_color() -> bool:
    return bool(os.environ.get("NO_COLOR"))


@dataclass
class Display:
    """Where output goes for one command run: stdout for results, stderr for everything else."""

    quiet: bool = False
    out: Console = field(default_factory=lambda: Console(highlight=False, no_color=_no_color(), soft_wrap=False))
    err: Console = field(default_factory=lambda: Console(stderr=True, highlight=False, no_color=_no_color(),
                                                         soft_wrap=True))
    model_info: ModelInfo | None = None  # the model this run loaded, for error messages

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
        self.err.print(Text("error: ", style="bold red") + Text(message), soft_wrap=True)

    def result(self, renderable: Any) -> None:
        """A result for people on stdout."""
        self.out.print(renderable)

    def write(self, text: str) -> None:
        """Raw text on stdout (streaming), flushed at once."""
        self.out.file.write(text)
        self.out.file.flush()

    def spinner(self, message: str) -> Any:
        """A transient spinner on stderr while something slow runs (a no-op context when quiet or piped)."""
        import contextlib

        if self.quiet or not self.err.is_terminal:
            self.status(message)
            return contextlib.nullcontext()
        return self.err.status(escape(message), spinner="dots")


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


def emit_json(display: Display, command: str, info: ModelInfo | None, payload: Any) -> None:
    sys.stdout.write(json.dumps(json_document(command, info, payload), ensure_ascii=False, indent=2) + "\n")
    sys.stdout.flush()


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

    parts = [Text(title, style="bold"), table]
    if caption:
        parts.append(Text(caption, style="dim"))
    return Group(*parts)


def model_summary(display: Display, info: ModelInfo) -> None:
    """The one-line load summary on stderr."""
    where = " (from the conversion cache)" if info.from_cache else (
        " (converted from GGUF and cached)" if info.from_cache is False else
        " (converted from GGUF, not cached)" if info.source in ("gguf", "embedded") else "")
    display.status(f"loaded {info.model} on {info.device}, {info.dtype}, {human_count(info.parameters)} parameters "
                   f"in {info.load_seconds:.2f} s{where}")
