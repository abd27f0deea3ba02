"""What a benchmark ran on, recorded beside its figures (like llama-bench's JSON): time, versions, CPU, GPU,
threads, load average. It reads the system and package metadata only; it imports no torch at module level."""

from __future__ import annotations

import datetime
import os
import platform
from dataclasses import dataclass
from pathlib import Path

from llmscope import __version__
from llmscope.system.environment import package_version


@dataclass(frozen=True)
class RunInfo:
    timestamp: str  # ISO 8601, UTC, when the timing started
    llmscope_version: str
    torch_version: str | None
    transformers_version: str | None
    cpu_model: str
    cpu_count: int | None  # logical CPUs this process may run on
    gpu_name: str | None  # the GPU the model ran on, None on the CPU
    threads: int  # torch.get_num_threads() during the runs
    load_average: tuple[float, float, float] | None  # 1, 5 and 15 minutes; above cpu_count, work is queueing


def cpu_model() -> str:
    """The processor's model name from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def usable_cpus() -> int | None:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def load_average() -> tuple[float, float, float] | None:
    try:
        one, five, fifteen = os.getloadavg()
    except (OSError, AttributeError):  # not on Windows
        return None
    return round(one, 2), round(five, 2), round(fifteen, 2)


def utc_timestamp() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def gpu_name(device: str) -> str | None:
    """torch's name for a CUDA device ('cuda', 'cuda:1'); None for any other device."""
    if not device.startswith("cuda"):
        return None
    import torch

    index = int(device.split(":", 1)[1]) if ":" in device else torch.cuda.current_device()
    return str(torch.cuda.get_device_name(index))


def run_info(device: str, threads: int) -> RunInfo:
    return RunInfo(timestamp=utc_timestamp(), llmscope_version=__version__, torch_version=package_version("torch"),
                   transformers_version=package_version("transformers"), cpu_model=cpu_model(),
                   cpu_count=usable_cpus(), gpu_name=gpu_name(device), threads=threads, load_average=load_average())
