"""The GGUF conversion cache on disk: content keys, entries written through fsynced staging folders, markers
with content hashes, verification, stale-staging clean-up, listing and clearing. It loads no model and never prints.

Layout: <cache root>/gguf/<key>/ holds model + tokenizer, <key>.tokenizer/ the tokenizer alone; <key> is the
SHA-256 of the GGUF file's bytes (so one file converts once per machine, whatever its path or name). Each entry
has a marker (llmscope-entry.json) naming its source and, per file, its size, SHA-256 and stat signature.

What each load checks: every file's size; the safetensors header (its JSON, and that its data ends exactly at
the end of the file); the SHA-256 of every file under 16 MiB (config, tokenizer); and the SHA-256 of a large
file only when its stat signature (size, mtime_ns, ctime_ns, inode) differs from the one recorded, which any
write to it causes (ctime cannot be set back), after which the signature is refreshed. On the SmolLM2 entry
(538 MB of weights, 3.5 MB tokenizer.json) that is 14-20 ms per load instead of ~0.35 s for hashing the weights
every time (SHA-256 runs at 1.5 GB/s here). A damaged entry is reported so that the loader removes and rebuilds it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import struct
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("llmscope")

CACHE_MARKER = "llmscope-entry.json"
CACHE_FORMAT = 2
KEY_INDEX = "gguf-keys.json"
SMALL_FILE = 16 << 20  # files up to this size are hashed on every load (a few ms)
STAGING_PREFIX = ".tmp-"
STALE_AFTER_S = 24 * 3600  # a staging folder this old is stale even if its process id was reused
_CHUNK = 4 << 20


def cache_root() -> Path:
    """$LLMSCOPE_CACHE, else $XDG_CACHE_HOME/llmscope, else ~/.cache/llmscope."""
    if os.environ.get("LLMSCOPE_CACHE"):
        return Path(os.path.expanduser(os.environ["LLMSCOPE_CACHE"]))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "llmscope"


def conversions_dir() -> Path:
    return cache_root() / "gguf"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def stat_signature(path: Path) -> list[int]:
    """What changes when a file's bytes are written: size, mtime, ctime (not settable by utime) and inode."""
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]


# ---------------------------------------------------------------------------------------------- keys


def stamp_time(path: Path, when: float | None = None) -> float:
    """Set the file's mtime from Python's clock (time.time()), the clock that wrote the marker's "created".

    The kernel stamps writes and a bare utime() from a coarse clock that can lag time.time() by a tick, so an
    entry used right after it was created could list a last use before its creation; one clock for both."""
    when = time.time() if when is None else when
    os.utime(path, (when, when))
    return when


def _write_json_atomically(path: Path, payload: object) -> None:
    temporary = path.with_name(f"{STAGING_PREFIX}{path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(temporary, "w") as handle:
            json.dump(payload, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink()


def gguf_content_key(gguf_path: Path) -> str:
    """The SHA-256 of the file's bytes (first 20 hex digits), remembered per (path, size, mtime, ctime, inode).

    Hashing costs ~0.07 s per 100 MB here (1.5 GB/s), paid once per file: later calls read the small index.
    """
    resolved = str(gguf_path.resolve())
    signature = stat_signature(gguf_path)
    index_path = cache_root() / KEY_INDEX
    try:
        index = json.loads(index_path.read_text())
        remembered = index.get(resolved) if isinstance(index, dict) else None
        if isinstance(remembered, dict) and remembered.get("signature") == signature:
            return str(remembered["sha256"])[:20]
    except (OSError, ValueError, KeyError, TypeError):
        index = {}
    digest = file_sha256(gguf_path)
    index = index if isinstance(index, dict) else {}
    index[resolved] = {"signature": signature, "sha256": digest}
    if len(index) > 256:  # keep the newest entries only
        index = dict(list(index.items())[-256:])
    try:
        index_path.parent.mkdir(parents=True, exist_ok=True)
        _write_json_atomically(index_path, index)
    except OSError as error:
        log.debug("could not remember the GGUF hash in %s: %s", index_path, error)
    return digest[:20]


def entry_dir(gguf_path: Path, part: str = "model") -> Path:
    """The cache entry for a GGUF file: part "model" holds model + tokenizer, "tokenizer" the tokenizer only."""
    suffix = "" if part == "model" else f".{part}"
    return conversions_dir() / f"{gguf_content_key(gguf_path)}{suffix}"


# ---------------------------------------------------------------------------------------------- verification


def _read_marker(entry: Path) -> dict:
    marker = json.loads((entry / CACHE_MARKER).read_text())
    if not isinstance(marker, dict) or marker.get("format") != CACHE_FORMAT or not isinstance(marker.get("files"),
                                                                                                dict):
        raise ValueError("unknown marker format")
    return marker


def _check_safetensors_header(path: Path, size: int) -> str | None:
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            return f"{path.name}: no header"
        length = struct.unpack("<Q", head)[0]
        if length == 0 or 8 + length > size:
            return f"{path.name}: header length {length} does not fit the file"
        try:
            header = json.loads(handle.read(length))
            end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, IndexError):
            return f"{path.name}: the header is not valid JSON"
    if 8 + length + end != size:
        return f"{path.name}: the header says {8 + length + end} bytes, the file has {size}"
    return None


_VERIFIED: dict[str, tuple] = {}  # entry -> stat signatures at its last successful check in this process


def _signatures(entry: Path) -> tuple | None:
    try:
        return tuple((path.name, *(stat_signature(path)[:1] if path.name == CACHE_MARKER else stat_signature(path)))
                     for path in sorted(entry.iterdir()))  # the marker's times change with each use (touch)
    except OSError:
        return None


def verify_entry(entry: Path) -> str | None:
    """None when the entry is whole and undamaged, else why not (see the module docstring for the cost).

    A second check in the same process of an entry whose files' stat signatures have not changed costs a few
    stat calls (one command checks an entry up to three times: the CLI, the model and the tokenizer).
    """
    before = _signatures(entry)
    if before is not None and _VERIFIED.get(str(entry)) == before:
        return None
    problem = _verify(entry)
    if problem is None and before is not None:
        _VERIFIED[str(entry)] = _signatures(entry) or before
    else:
        _VERIFIED.pop(str(entry), None)
    return problem


def _verify(entry: Path) -> str | None:
    try:
        marker = _read_marker(entry)
    except FileNotFoundError:
        return "no marker"
    except (OSError, ValueError) as error:
        return f"unreadable marker ({error})"
    refreshed = False
    try:
        for name, recorded in marker["files"].items():
            path = entry / name
            signature = stat_signature(path)
            if signature[0] != recorded["size"]:
                return f"{name} has {signature[0]} bytes, {recorded['size']} expected"
            if name.endswith(".safetensors") and (problem := _check_safetensors_header(path, signature[0])):
                return problem
            if signature[0] <= SMALL_FILE or signature != recorded.get("signature"):
                if file_sha256(path) != recorded["sha256"]:
                    return f"{name}'s content does not match its recorded hash"
                if signature != recorded.get("signature"):
                    recorded["signature"] = signature
                    refreshed = True
    except FileNotFoundError as error:
        return f"{Path(error.filename or '?').name} is missing"
    except (OSError, KeyError, TypeError, AttributeError) as error:
        return f"unreadable ({error})"
    if refreshed:  # checked in full after a copy or touch: remember the new signatures
        with contextlib.suppress(OSError):
            _write_json_atomically(entry / CACHE_MARKER, marker)
            stamp_time(entry / CACHE_MARKER)
    return None


def entry_is_whole(entry: Path) -> bool:
    return verify_entry(entry) is None


def touch(entry: Path) -> None:
    """Record a use of the entry (the marker's mtime is its last use) and remove staging folders that dead
    processes left beside it (hundreds of MB, else kept until the next conversion); a read-only cache is fine."""
    with contextlib.suppress(OSError):
        stamp_time(entry / CACHE_MARKER)
    with contextlib.suppress(OSError):
        remove_stale_staging(entry.parent)


def remove_entry(entry: Path, why: str) -> None:
    if not entry.exists():  # `llmscope cache --clear` or another process removed it: no library text to show
        log.warning("conversion cache entry %s was removed while in use: rebuilding it", entry.name)
        return
    log.warning("conversion cache entry %s is broken (%s): rebuilding it from the GGUF file", entry.name, why)
    shutil.rmtree(entry, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- writing


def _fsync_path(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def staging(entry: Path, source: Path | None = None) -> Iterator[Path]:
    """A temporary folder beside `entry`, renamed into place on success and removed on failure.

    Before the rename every file is hashed into the marker and fsynced, and so is the folder, so a crash at any
    point leaves either no entry or a whole one (plus, at worst, a staging folder that the next writer removes).
    When two processes convert the same file at once, the first rename wins and the other discards its copy.
    """
    entry.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(entry.parent)
    folder = entry.parent / f"{STAGING_PREFIX}{entry.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    try:
        yield folder
        files = {}
        for path in sorted(p for p in folder.iterdir() if p.is_file()):
            _fsync_path(path)
            files[path.name] = {"size": path.stat().st_size, "sha256": file_sha256(path),
                                "signature": stat_signature(path)}
        created = time.time()
        marker = {"format": CACHE_FORMAT, "source": str(source) if source else None, "created": created,
                  "files": files}
        with open(folder / CACHE_MARKER, "w") as handle:
            json.dump(marker, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        stamp_time(folder / CACHE_MARKER, created)  # last use starts at creation, on the same clock
        _fsync_path(folder)
        try:
            os.rename(folder, entry)
        except OSError:
            if entry_is_whole(entry):
                return
            shutil.rmtree(entry, ignore_errors=True)
            os.rename(folder, entry)
        _fsync_path(entry.parent)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _staging_owner(name: str) -> int | None:
    parts = name.rsplit("-", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def remove_stale_staging(folder: Path | None = None) -> int:
    """Remove staging folders whose writing process is gone (or older than a day); returns the bytes freed."""
    folder = folder or conversions_dir()
    freed = 0
    if not folder.is_dir():
        return 0
    for path in folder.iterdir():
        if not path.name.startswith(STAGING_PREFIX):
            continue
        owner = _staging_owner(path.name)
        try:
            age = time.time() - path.stat().st_mtime
        except OSError:
            continue
        if owner == os.getpid() or (owner is not None and _process_alive(owner) and age < STALE_AFTER_S):
            continue
        size = folder_size(path)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
        if not path.exists():
            freed += size
            log.info("removed an unfinished conversion left by process %s (%d bytes)", owner, size)
    return freed


# ---------------------------------------------------------------------------------------------- listing


@dataclass(frozen=True)
class CacheEntry:
    """One conversion in the cache, as `llmscope cache` lists it."""

    name: str
    kind: str  # "model" (model + tokenizer) or "tokenizer"
    size_bytes: int
    source: str | None  # the GGUF file it was converted from (the last path that wrote it)
    created: float | None  # Unix time
    last_used: float | None  # Unix time
    problem: str | None  # None when whole; else why it would be rebuilt


@dataclass(frozen=True)
class CacheReport:
    root: str
    entries: tuple[CacheEntry, ...]
    total_bytes: int
    removed: tuple[str, ...] = ()  # names cleared by this call
    freed_bytes: int = 0
    cleared: bool = False  # the report of a --clear (which may have found nothing to remove)


def folder_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for child in path.rglob("*"):
        with contextlib.suppress(OSError):
            if child.is_file():
                total += child.stat().st_size
    return total


def _describe(path: Path, check: bool) -> CacheEntry:
    try:
        marker = json.loads((path / CACHE_MARKER).read_text())
        source, created = marker.get("source"), marker.get("created")
        last_used: float | None = (path / CACHE_MARKER).stat().st_mtime
    except (OSError, ValueError, AttributeError):
        source = created = last_used = None
    return CacheEntry(name=path.name, kind="tokenizer" if path.name.endswith(".tokenizer") else "model",
                      size_bytes=folder_size(path), source=source, created=created, last_used=last_used,
                      problem=verify_entry(path) if check else None)


def list_entries(check: bool = False) -> CacheReport:
    """Every entry (newest use first), after removing stale staging folders; check=True verifies each one."""
    folder = conversions_dir()
    remove_stale_staging(folder)
    paths = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")) if folder.is_dir() \
        else []
    entries = sorted((_describe(p, check) for p in paths), key=lambda e: -(e.last_used or 0))
    return CacheReport(root=str(cache_root()), entries=tuple(entries), total_bytes=cache_size())


def cache_size() -> int:
    """Bytes under the conversion folder, unfinished staging folders included."""
    folder = conversions_dir()
    return folder_size(folder) if folder.is_dir() else 0


def clear(names: tuple[str, ...] = ()) -> CacheReport:
    """Remove the named entries, or all of them. A name that is not an entry's exact name clears every entry
    that starts with it or was converted from a file of that name."""
    from llmscope.core.errors import LlmscopeError, UsageError

    before = list_entries()
    if names:
        chosen = []
        for wanted in names:
            if not wanted.strip():  # a script's empty variable must not mean "every entry"
                raise UsageError("--clear got an empty entry name", hint="give no name to clear every entry")
            matches = ([e for e in before.entries if e.name == wanted]
                       or [e for e in before.entries if e.name.startswith(wanted)
                           or (e.source and Path(e.source).name == wanted)])
            if not matches:
                raise UsageError(f"no cache entry matches {wanted!r}", hint="`llmscope cache` lists the entries")
            chosen.extend(matches)
    else:
        chosen = list(before.entries)
    freed = 0
    removed, failed = [], []
    chosen = list({e.name: e for e in chosen}.values())
    for entry in chosen:
        path = conversions_dir() / entry.name
        try:  # a symlink is the entry itself: its target is not the cache's to delete
            path.unlink() if path.is_symlink() else shutil.rmtree(path)
        except OSError as error:
            failed.append(f"{entry.name} ({error.strerror or type(error).__name__})")
        if not os.path.lexists(path):
            removed.append(entry.name)
            freed += entry.size_bytes
    if failed:
        raise LlmscopeError(f"could not remove {', '.join(failed)}; removed {len(removed)} of {len(chosen)}",
                            hint=f"check that you may write to {conversions_dir()}")
    after = list_entries()
    return CacheReport(root=after.root, entries=after.entries, total_bytes=after.total_bytes,
                       removed=tuple(removed), freed_bytes=freed, cleared=True)
