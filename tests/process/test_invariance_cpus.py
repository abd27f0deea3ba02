"""The invariance tests under the code paths of other CPUs: MKL's (MKL_ENABLE_INSTRUCTIONS=AVX2 / AVX512) and torch's
own (ATEN_CPU_CAPABILITY=default / avx2 / avx512), each where this CPU has the instructions. Both variables are read
when torch loads, so each setting runs a representative subset of the invariance tests in a fresh pytest process
(one torch thread, to keep the three runs affordable on a shared 2-core machine)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The dense GEMM row test, batches of 1/3/8 and cache vs no cache on --quantize none, the fixed GEMM shapes,
# check-invariance on a tiny model, and the self-test itself.
SUBSET = ("a_row_gets_the_same_bits_whatever and float32 or batches_of_1_3_8 and none or cache_and_no_cache and none"
          " or fixed_shape and none or check_invariance_reports or machine_key or probes_once_per_machine_key"
          " or falls_back_to_one_row")
SUBSET_TESTS = 8
# Each MKL path and each ATen capability at least once; the first two are what AVX2 and AVX-512 machines run.
SETTINGS = [("AVX2", "avx2"), ("AVX512", "avx512"), ("AVX2", "default")]
NEEDS = {"AVX2": {"avx2", "fma"}, "AVX512": {"avx512f", "avx512bw", "avx512vl", "avx512dq"},
         "avx2": {"avx2", "fma"}, "avx512": {"avx512f", "avx512bw", "avx512vl", "avx512dq"}, "default": set()}


def _cpu_flags() -> set[str] | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return set(line.partition(":")[2].split())


@pytest.mark.parametrize(("mkl", "aten"), SETTINGS, ids=[f"MKL={m}-ATEN={a}" for m, a in SETTINGS])
def test_the_invariance_tests_pass_on_each_kernel_path_this_cpu_has(mkl: str, aten: str, tmp_path: Path) -> None:
    flags = _cpu_flags()
    if flags is None:
        pytest.skip("no /proc/cpuinfo: cannot tell which instruction sets this CPU has")
    missing = sorted((NEEDS[mkl] | NEEDS[aten]) - flags)
    if missing:
        pytest.skip(f"this CPU lacks {', '.join(missing)} (MKL_ENABLE_INSTRUCTIONS={mkl}, ATEN_CPU_CAPABILITY={aten})")
    env = {**os.environ, "MKL_ENABLE_INSTRUCTIONS": mkl, "ATEN_CPU_CAPABILITY": aten, "OMP_NUM_THREADS": "1",
           "LLMSCOPE_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "LLMSCOPE_CACHE": str(tmp_path / "cache")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m", "not slow",
         "tests/unit/test_invariance.py", "tests/unit/test_invariance_selftest.py",
         "tests/commands/test_check_invariance.py", "-k", SUBSET],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert summary.startswith(f"{SUBSET_TESTS} passed") and "skipped" not in summary, summary
