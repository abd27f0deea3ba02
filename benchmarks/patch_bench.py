"""How fast `patch` runs on the embedded model: the time per patched cell one at a time (--cells-per-pass 1) and
batched (several batch sizes), the batching speed-up, and the full residual-stream map of a 10-token pair (30 layers x
10 positions = 300 cells). Target: the full map in under 60 s on a quiet machine. Prints the load average it ran under.

    .venv/bin/python benchmarks/patch_bench.py [--quantize none] [--single-cells 30] [--sizes 8,16,32,64] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

CLEAN = "The Eiffel Tower is located in the city of"  # 10 tokens in SmolLM2's tokenizer
CORRUPT = "The Colosseum is located in the city of"  # 10 tokens too
TARGET_SECONDS = 60.0


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def cpu_kind() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            flags = next((line for line in info if line.startswith("flags")), "")
        kind = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    except OSError:
        kind = "unknown"
    return f"{platform.machine()}, {os.cpu_count()} cores, {kind}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model spec (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--quantize", default="none", help="none (float32, the default here) | auto | int8 | int4")
    parser.add_argument("--single-cells", type=int, default=30, help="cells timed one per forward pass")
    parser.add_argument("--sizes", default="8,16,32,64", help="batch rows per pass to time on the full map")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from llmscope.loading.loader import load_model
    from llmscope.patching.patcher import plan_patch, run_plan
    from llmscope.patching.settings import PatchSettings

    if args.threads:
        torch.set_num_threads(args.threads)
    else:  # the command's own choice: one thread per core other processes leave free
        from llmscope.loading.cputhreads import fit_torch_threads

        fit_torch_threads(None)
    loaded = load_model(args.model, device="cpu", dtype="float32", quantize=args.quantize)
    before = load_average()
    print(f"model: {loaded.spec.name}, {args.quantize}; CPU: {cpu_kind()}; torch threads {torch.get_num_threads()}",
          flush=True)

    cpu_seconds = {}

    def timed(settings: PatchSettings) -> tuple[float, object]:
        """Wall seconds (and, in cpu_seconds, the process's CPU seconds: on a busy machine, what a quiet one's
        wall time would be at this thread count)."""
        started, cpu = time.perf_counter(), time.process_time()
        result = run_plan(plan_patch(loaded, CLEAN, CORRUPT, settings))
        cpu_seconds[settings.rows_per_pass] = time.process_time() - cpu
        return time.perf_counter() - started, result

    timed(PatchSettings(layers="0", rows_per_pass=1))  # warm-up
    layers = max(1, args.single_cells // 10)
    single_seconds, single = timed(PatchSettings(layers=f"0:{layers}", rows_per_pass=1))
    per_cell_single = single_seconds / single.cost.cells  # type: ignore[attr-defined]
    print(f"one cell per pass: {1000 * per_cell_single:.1f} ms per cell ({single.cost.cells} cells; CPU time "  # type: ignore
          f"{1000 * cpu_seconds[1] / single.cost.cells:.1f} ms per cell)", flush=True)  # type: ignore
    runs = []
    for size in [int(s) for s in args.sizes.split(",") if s.strip()]:
        seconds, result = timed(PatchSettings(rows_per_pass=size))
        runs.append({"rows_per_pass": size, "cells": result.cost.cells, "passes": result.cost.passes,  # type: ignore
                     "seconds": round(seconds, 3), "per_cell_ms": round(1000 * seconds / result.cost.cells, 2),  # type: ignore
                     "speed_up": round(per_cell_single / (seconds / result.cost.cells), 2)})  # type: ignore
        run = runs[-1]
        print(f"{size:>3} rows per pass: {run['per_cell_ms']:.1f} ms per cell, {run['seconds']:.1f} s for "
              f"{run['cells']} cells, {run['speed_up']:.1f}x the single-cell speed; CPU time "
              f"{1000 * cpu_seconds[size] / run['cells']:.1f} ms per cell", flush=True)
    default_seconds, default = timed(PatchSettings())
    after = load_average()
    tokens = len(default.clean.ids)  # type: ignore[attr-defined]
    print(f"load average (1, 5, 15 min) before: {before}; after: {after}")
    cost = default.cost  # type: ignore[attr-defined]
    verdict = "met" if default_seconds < TARGET_SECONDS else "NOT met"
    print(f"full residual map, {len(default.grids[0].layers)} layers x {tokens} positions = {cost.cells} cells, "  # type: ignore
          f"default batching ({cost.rows_per_pass} rows per pass, {cost.passes} passes): {default_seconds:.1f} s "
          f"(target < {TARGET_SECONDS:.0f} s: {verdict}); CPU time {cpu_seconds[None]:.1f} s on "
          f"{torch.get_num_threads()} thread(s)")
    print(json.dumps({"model": loaded.spec.name, "quantize": args.quantize, "cpu": cpu_kind(),
                      "threads": torch.get_num_threads(), "load_average_before": before, "load_average_after": after,
                      "single_cell_ms": round(1000 * per_cell_single, 2), "batched": runs,
                      "full_map": {"cells": cost.cells, "rows_per_pass": cost.rows_per_pass, "passes": cost.passes,
                                   "seconds": round(default_seconds, 2), "cpu_seconds": round(cpu_seconds[None], 2),
                                   "target_seconds": TARGET_SECONDS}}))


if __name__ == "__main__":
    main()
