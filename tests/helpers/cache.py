"""The embedded model's GGUF conversions made once per test run, whatever the number of xdist workers: each entry
is built under its own file lock, so two workers build two different entries at the same time and never one twice."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from filelock import FileLock, Timeout

# Every --quantize mode a slow test loads the embedded model in: the float entry ("none") and the packed ones.
EMBEDDED_MODES = ("auto", "none", "int4", "int8")


def warm_embedded_entries(cache: Path) -> None:
    """Build each missing entry of the embedded model in `cache`: first those no other worker is building (a lock
    taken without waiting), then wait for the rest, so that every entry is whole on return."""
    from llmscope.loading import loader

    spec = loader.resolve_model_spec(None)
    cache.mkdir(parents=True, exist_ok=True)
    builds: list[tuple[Path, Callable[[], object]]] = [
        (loader.gguf_entry_for(spec, mode), lambda mode=mode: loader.load_model(None, device="cpu", quantize=mode))
        for mode in EMBEDDED_MODES]
    builds.append((loader.gguf_cache_dir(spec, "tokenizer"), lambda: loader.load_tokenizer(None)))

    def build(entry: Path, make: Callable[[], object], wait: bool) -> bool:
        lock = FileLock(str(cache / f".warm-{entry.name}.lock"))
        try:
            lock.acquire(timeout=-1 if wait else 0)
        except Timeout:
            return False
        try:
            if not loader.cache_entry_is_whole(entry):
                make()
        finally:
            lock.release()
        return True

    waiting = [(entry, make) for entry, make in builds if not build(entry, make, wait=False)]
    for entry, make in waiting:
        build(entry, make, wait=True)
