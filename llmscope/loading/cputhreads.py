"""How many CPU threads torch should use here: what the user asked for, else what the other processes leave free.
choose_threads only decides; fit_torch_threads measures the machine and applies the choice to torch."""

from __future__ import annotations

import os
from dataclasses import dataclass

BUSY_PERCENT = 50.0  # other processes using at least this much of the CPUs: timings are noisy, threads compete
SAMPLE_SECONDS = 0.1


@dataclass(frozen=True)
class ThreadChoice:
    """torch's thread count for this run, and why."""

    threads: int | None  # None: leave torch's own choice (one per core)
    cores: int
    busy_percent: float | None  # what other processes used of all cores while this one waited
    reason: str  # "asked" (--threads / LLMSCOPE_THREADS), "free cores" or "default"


def others_busy_percent(interval: float = SAMPLE_SECONDS) -> float | None:
    """System-wide CPU use over a short pause while this process sleeps: what the other processes are doing."""
    try:
        import psutil

        return float(psutil.cpu_percent(interval=interval))
    except Exception:  # psutil missing or not permitted: no measurement, no change
        return None


def choose_threads(asked: int | None, busy_percent: float | None = None, cores: int | None = None) -> ThreadChoice:
    """The threads to use: `asked` when given; else one per core that other processes leave free, when they keep
    some busy (torch's threads slow down when they compete for a core: measured 4x slower decode with 2 threads
    than with 1 while one of 2 cores was busy, when the threads still spun while waiting; llmscope now makes them
    wait passively, see llmscope/__init__.py, which removes the collapse but not the competition); else torch's
    default."""
    cores = cores or os.cpu_count() or 1
    if asked is not None:
        return ThreadChoice(asked, cores, busy_percent, "asked")
    if busy_percent is None:
        return ThreadChoice(None, cores, None, "default")
    busy_cores = round(busy_percent / 100 * cores)
    if busy_cores < 1:
        return ThreadChoice(None, cores, busy_percent, "default")
    return ThreadChoice(max(1, cores - busy_cores), cores, busy_percent, "free cores")


def fit_torch_threads(asked: int | None) -> tuple[ThreadChoice, int]:
    """Measure what other processes use (unless threads were asked for), set torch's thread count accordingly, and
    return the choice with the count torch now uses."""
    import torch

    choice = choose_threads(asked, None if asked is not None else others_busy_percent())
    if choice.threads is not None:
        torch.set_num_threads(choice.threads)
    return choice, torch.get_num_threads()
