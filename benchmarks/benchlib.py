"""Pure helpers of the benchmark suite: medians, ratios, target checks, the Figure record, the machine line,
and running a probe or a command in a subprocess. It imports no torch and measures nothing by itself."""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PROBE = HERE / "benchprobe.py"
RESULT_PREFIX = "BENCH-RESULT "


@dataclass(frozen=True)
class Figure:
    """One row of the table: llmscope's figure beside its baseline, measured in the same run."""

    section: str
    name: str
    value: float | str | None  # llmscope's figure (None: not measured)
    unit: str
    baseline: float | str | None = None
    baseline_label: str = ""
    ratio: float | None = None  # value / baseline, unless the row says otherwise
    target: str = ""
    met: bool | None = None  # None: no target, or not measured
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def median(values: Sequence[float]) -> float | None:
    """The median of the finite values, or None when there are none."""
    finite = [float(v) for v in values if v is not None and v == v and abs(v) != float("inf")]
    return statistics.median(finite) if finite else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is not positive."""
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def at_most(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def at_least(value: float | None, limit: float) -> bool | None:
    return None if value is None else value >= limit


def not_available(section: str, name: str, why: str, target: str = "") -> Figure:
    """A row for a figure that could not be measured in this run (command missing, step failed, skipped)."""
    return Figure(section=section, name=name, value=None, unit="", target=target, met=None, note=why)


def format_value(value: float | str | None, unit: str) -> str:
    """Seconds below 1 s keep three decimals; rates one; plain ratios two."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if unit == "s":
        return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"
    if unit in ("tok/s", "GB/s"):
        return f"{value:.1f} {unit}"
    if unit == "%":
        return f"{value:.0f}%"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "":
        return f"{value:.2f}"
    return f"{value:g} {unit}".strip()


def format_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def format_met(met: bool | None) -> str:
    return {True: "yes", False: "NO", None: "-"}[met]


# ---------------------------------------------------------------------------------------------- machine


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def gpu_names() -> list[str]:
    """The GPUs nvidia-smi lists (none when it is missing or fails): read without importing torch."""
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip()] if done.returncode == 0 else []


def machine() -> dict[str, Any]:
    """What the figures were measured on (llama-bench style), read without importing torch: when, the CPU and its
    flags, the GPUs, versions, the thread setting the measured processes inherit, and the load average."""
    from llmscope.system.runinfo import cpu_model, usable_cpus, utc_timestamp
    from llmscope.system.runinfo import load_average as load_averages

    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = "AVX-512" if "avx512f" in text else ("AVX2" if "avx2" in text else "")
    except OSError:
        pass
    gpus = gpu_names()
    return {
        "timestamp": utc_timestamp(), "cpu": cpu_model(), "cpu_flags": flags, "cores": usable_cpus(),
        "gpu": ", ".join(gpus) if gpus else None, "system": f"{platform.system()} {platform.machine()}",
        "python": platform.python_version(), "torch": package_version("torch"),
        "transformers": package_version("transformers"), "llmscope": package_version("llmscope"),
        "threads": os.environ.get("OMP_NUM_THREADS") or "torch default (one per core)",
        "load_averages": load_averages(),
    }


def load_average() -> float | None:
    """The 1-minute load average (runnable processes): above the core count, other work shares the CPUs."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def machine_line(info: dict[str, Any]) -> str:
    flags = f", {info['cpu_flags']}" if info.get("cpu_flags") else ""
    gpu = f", GPU {info['gpu']}" if info.get("gpu") else ""
    return (f"{info['cpu']}{flags}, {info['cores']} cores{gpu}, torch {info['torch']}, "
            f"transformers {info['transformers']}, Python {info['python']}")


# ---------------------------------------------------------------------------------------------- subprocesses


def bench_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment every measured subprocess gets: offline, quiet libraries, no tokenizer threads."""
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"})
    env.update(extra or {})
    return env


def venv_command(name: str) -> str | None:
    """A console script installed beside this Python (the venv's llmscope or hf), or None."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.is_file() and os.access(candidate, os.X_OK) else None


def time_command(argv: Sequence[str], env: dict[str, str] | None = None,
                 timeout: float = 600) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Wall seconds of one run of argv, with its completed process (stdout, stderr, return code)."""
    started = time.perf_counter()
    done = subprocess.run(list(argv), capture_output=True, text=True, env=env or bench_env(), timeout=timeout,
                          stdin=subprocess.DEVNULL)
    return time.perf_counter() - started, done


def interleaved_medians(commands: dict[str, Sequence[str]], repeats: int, env: dict[str, str] | None = None
                        ) -> tuple[dict[str, float | None], dict[str, str]]:
    """Median wall seconds of each command, run in turn `repeats` times after one untimed warm-up each, so that
    drifts in machine load hit all of them alike; and the warm-up's stdout. A command that fails gets None."""
    times: dict[str, list[float]] = {key: [] for key in commands}
    outputs: dict[str, str] = {}
    failed: set[str] = set()
    for key, argv in commands.items():
        _, done = time_command(argv, env)
        outputs[key] = done.stdout
        if done.returncode != 0:
            failed.add(key)
    for _ in range(repeats):
        for key, argv in commands.items():
            if key in failed:
                continue
            seconds, done = time_command(argv, env)
            if done.returncode == 0:
                times[key].append(seconds)
    return {key: None if key in failed else median(values) for key, values in times.items()}, outputs


class ProbeError(RuntimeError):
    """A probe subprocess failed; the message is the last line it wrote to stderr."""


def run_probe(name: str, options: dict[str, Any], env: dict[str, str] | None = None,
              timeout: float = 900) -> dict[str, Any]:
    """Run `benchprobe.py NAME JSON` in a fresh Python and return the JSON it reports on its last stdout line."""
    argv = [sys.executable, str(PROBE), name, json.dumps(options)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=env or bench_env(), timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ProbeError(f"probe {name} did not finish within {timeout:.0f} s") from None
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    lines = [line for line in (done.stderr or done.stdout).strip().splitlines() if line.strip()]
    raise ProbeError(f"probe {name} failed (exit {done.returncode}): {lines[-1] if lines else 'no output'}")


def listed_commands(help_text: str) -> list[str]:
    """Command names from the 'Commands:' block of a Typer/Click --help page."""
    names: list[str] = []
    in_block = False
    for line in help_text.splitlines():
        if line.strip().lower() == "commands:":
            in_block = True
            continue
        if in_block:
            match = re.match(r"^ {1,6}([a-z][\w-]*)(\s|$)", line)
            if match:
                names.append(match.group(1))
            elif line.strip() and not line.startswith(" "):
                in_block = False
    return names


def bench_cache_figures(document: dict[str, Any]) -> dict[str, Any] | None:
    """Cache / no-cache mean seconds, speed-up (with its 95% interval and pair count, where given), the same-output
    check, and the seconds of timed runs from `bench-cache --json`, or None."""
    try:
        first = document["results"][0]
        interval = (first["speedup"].get("interval") or {})
        return {"new_tokens": first["new_tokens"], "cache_s": first["cache"]["seconds"]["mean"],
                "no_cache_s": first["no_cache"]["seconds"]["mean"], "speedup": first["speedup"]["of_means"],
                "identical": (first.get("check") or {}).get("identical"),
                "pairs": first["speedup"]["pairs"]["n"], "interval": (interval.get("low"), interval.get("high")),
                "stop_reason": first.get("stop_reason"),
                "run_seconds": sum(run["seconds"] for run in document.get("runs", [])),
                "timing_seconds": document.get("seconds")}
    except (KeyError, IndexError, TypeError, AttributeError):
        return None


def old_default_estimate(wall_seconds: float, figures: dict[str, Any], pairs: int = 8) -> float | None:
    """What bench-cache took before it stopped on its own (1 full-length warm-up pair + 7 timed pairs), estimated
    from this run: the start-up and load (wall time minus the timing) plus 8 of this run's mean pairs."""
    if not figures.get("pairs") or figures.get("timing_seconds") is None:
        return None
    overhead = wall_seconds - figures["timing_seconds"]
    return overhead + pairs * figures["run_seconds"] / figures["pairs"]
