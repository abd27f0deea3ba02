"""The files a command writes besides stdout (--html, --plot): what each option takes, and the one check that the
path can be written, run before any model loads. No torch, no rendering: the writers live in llmscope.render."""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from llmscope.core.command_settings import plain_text
from llmscope.core.errors import UsageError

PLOT_INSTALL_HINT = "pip install 'llmscope[plot]'"


@dataclass(frozen=True)
class OutputFile:
    """Marks a Typer option whose value is a path the command writes (put it in the option's Annotated[...]):
    llmscope.cli.groups checks every such path before the command runs."""

    option: str  # "--html"
    suffixes: tuple[str, ...] = ()  # the file must end in one of these ("" : any)
    folder_with_batch: bool = False  # with --batch the value names a folder (one file per record)
    needs: str | None = None  # a module the writer imports ("matplotlib"), checked too


HTML_FILE = OutputFile("--html", folder_with_batch=True)
PLOT_FILE = OutputFile("--plot", suffixes=(".png", ".svg"), needs="matplotlib")


def check_output(spec: OutputFile, value: str, batch: bool = False) -> Path:
    """The path `value` names, refused in one line unless it can be written: a folder, or a folder that does not
    exist, a device or pipe (/dev/full accepts the open and fails the write), a place the process may not write
    (/proc, /sys, read-only mounts), a wrong suffix, or a writer's module that is not installed."""
    option = spec.option
    plain_text(option, value)
    if not value.strip():
        raise UsageError(f"{option} is empty", hint="give a file name")
    if spec.needs is not None:
        _require(spec)
    path = Path(value)
    if batch and spec.folder_with_batch:
        if path.exists() and not path.is_dir():
            raise UsageError(f"{option} {value} is a file; with --batch it names a folder (one file per record)")
        _check_folder(option, path)
        return path
    if path.is_dir():
        raise UsageError(f"{option} {value} is a folder", hint="give a file name"
                         + (f" ending in {' or '.join(spec.suffixes)}" if spec.suffixes else ""))
    if spec.suffixes and path.suffix.lower() not in spec.suffixes:
        raise UsageError(f"{option} writes {' or '.join(spec.suffixes)} files (got {value!r})")
    if not path.parent.is_dir():
        raise UsageError(f"{option} {value}: the folder {path.parent} does not exist")
    if path.exists() and not path.is_file() and os.path.realpath(path) != os.devnull:
        raise UsageError(f"{option} {value} is not a regular file (a device, pipe or socket): it cannot take the "
                         "output", hint="give a file name")
    _try_open(option, path)
    return path


def _require(spec: OutputFile) -> None:
    import importlib.util

    if importlib.util.find_spec(spec.needs or "") is None:
        raise UsageError(f"{spec.option} needs {spec.needs}, which is not installed", hint=PLOT_INSTALL_HINT)


def _try_open(option: str, path: Path) -> None:
    """Open the file for appending (which changes nothing in a file that exists) and remove it again when this
    check created it: what the writer will need, asked of the file system itself (root may write almost anywhere,
    so permission bits alone would not say)."""
    existed = path.exists()
    try:
        with open(path, "ab"):
            pass
    except OSError as error:
        raise UsageError(f"{option}: cannot write {str(path)!r}: {error.strerror or error}") from None
    if not existed:
        with contextlib.suppress(OSError):
            path.unlink()


def _check_folder(option: str, folder: Path) -> None:
    """A folder the writer can create files in (made when missing): a scratch folder is made and removed in the
    deepest part of the path that exists."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{option} {folder}: {existing} is a file, not a folder")
    try:
        scratch = tempfile.mkdtemp(prefix=".llmscope-check-", dir=existing)
    except OSError as error:
        raise UsageError(f"{option}: cannot write in {str(existing)!r}: {error.strerror or error}") from None
    with contextlib.suppress(OSError):
        os.rmdir(scratch)
