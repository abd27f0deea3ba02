"""The memory a run may use (what the machine has free, or a stated --max-memory) and the one check that refuses a
planned peak above it. Counters and arithmetic only: no model, no estimates of its own, no printing."""

from __future__ import annotations

import os

from llmscope.core.errors import MemoryLimitError, UsageError

CHECK_ENV = "LLMSCOPE_MEMORY_CHECK"  # "0" skips the check (an estimate can be wrong; the run may still fail later)


def parse_size(option: str, text: str | None) -> int | None:
    """Bytes from 8GB / 8GiB / 512MB / 2G (GB means GiB here, as the planner reads --gpu-memory); None stays None."""
    if text is None:
        return None
    cleaned = text.strip().lower().removesuffix("b").removesuffix("i")
    scale = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}.get(cleaned[-1:], 1)
    number = cleaned[:-1] if scale != 1 else cleaned
    try:
        value = float(number) * scale
    except ValueError:
        value = -1.0
    if not value >= 1 << 20 or value == float("inf"):
        raise UsageError(f"{option} must be a size of at least 1 MiB such as 8GB or 512MB (got {text!r})")
    return int(value)


def available_memory(device: str = "cpu") -> int | None:
    """Bytes a new allocation can take now: free GPU memory on CUDA, else the RAM the OS can give without swapping
    (psutil's `available`); None when it cannot be read."""
    try:
        if device.startswith("cuda"):
            import torch

            return int(torch.cuda.mem_get_info(device)[0])
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # no psutil, no driver: no check rather than a wrong refusal
        return None


def gib(size: int) -> str:
    """A size for people: GiB from half a GiB up, MiB from 1 MiB, else KiB."""
    if size >= 1 << 29:
        return f"{size / (1 << 30):.1f} GiB"
    return f"{size / (1 << 20):.0f} MiB" if size >= 1 << 20 else f"{max(size, 0) / (1 << 10):.0f} KiB"


def check_enabled() -> bool:
    return os.environ.get(CHECK_ENV, "").strip() not in ("0", "false", "no")


def require_fits(needed: int, limit: int | None, what: str, hint: str, limit_name: str = "available") -> None:
    """Refuse (MemoryLimitError, one line) when `needed` bytes are more than `limit`; nothing when the limit is
    unknown or the check is switched off ($LLMSCOPE_MEMORY_CHECK=0)."""
    if limit is None or needed <= limit or not check_enabled():
        return
    raise MemoryLimitError(f"{what} needs about {gib(needed)} and {gib(limit)} is {limit_name}", hint=hint)


def process_memory() -> int | None:
    """This process's resident memory now (bytes), None when it cannot be read."""
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:
        return None


def headroom(max_memory: int | None, device: str = "cpu") -> tuple[int | None, str]:
    """The bytes a run may still add, and what bounds them: --max-memory less what the process holds now (on the
    CPU), else the memory free now; (None, ...) when neither can be read or the check is off."""
    if not check_enabled():
        return None, "unchecked"
    if max_memory is not None:
        held = process_memory() if not device.startswith("cuda") else 0
        return (None if held is None else max_memory - held), f"left under --max-memory {gib(max_memory)}"
    return available_memory(device), "free"
