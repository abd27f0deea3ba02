"""Peak memory of one benchmark run: CUDA's allocator peak on a GPU, the process's RSS high-water mark on the CPU.
It reads counters and resets them between runs; it times nothing and never prints."""

from __future__ import annotations

import sys


def memory_measure(device: str) -> str:
    """What peak_memory_bytes means on this device (each run's own peak where it can be reset)."""
    if device.startswith("cuda"):
        return "torch.cuda.max_memory_allocated, reset before each run"
    if _can_reset_peak_rss():
        return "peak RSS of the process (Linux VmHWM, reset before each run through /proc/self/clear_refs)"
    return "peak RSS of the process so far (getrusage ru_maxrss; it cannot be reset, so it includes earlier runs)"


def process_peak_rss() -> int | None:
    """The process's peak resident set size over its whole life, from getrusage (None where unavailable)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux


def _vm_hwm() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def _reset_peak_rss() -> bool:
    """Linux: set the RSS high-water mark back to the current RSS (echo 5 > /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
            clear.write("5")
        return True
    except OSError:
        return False


def _can_reset_peak_rss() -> bool:
    return _vm_hwm() is not None and _reset_peak_rss()


def start_peak_memory(on_cuda: bool) -> int | None:
    """Reset the peak and return the memory in use now (CUDA: allocated by torch; CPU: the process's RSS)."""
    import torch

    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
        return int(torch.cuda.memory_allocated())
    _reset_peak_rss()
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # psutil missing: no baseline, only the peak
        return None


def peak_memory(on_cuda: bool) -> int | None:
    import torch

    if on_cuda:
        return int(torch.cuda.max_memory_allocated())
    return _vm_hwm() or process_peak_rss()
