"""The benchmark suite's pure helpers, and its --quick mode run end to end on the start-up figures and on a tiny
random model. Timings are never asserted here: only that each figure is measured and reported."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.paths import BENCHMARKS

sys.path.insert(0, str(BENCHMARKS))

import benchlib


def test_median_skips_missing_and_non_finite_values() -> None:
    assert benchlib.median([3.0, 1.0, 2.0]) == 2.0
    assert benchlib.median([4.0, 1.0, 3.0, 2.0]) == 2.5
    assert benchlib.median([1.0, None, math.nan, math.inf, 5.0]) == 3.0  # type: ignore[list-item]
    assert benchlib.median([]) is None


def test_ratio_and_targets() -> None:
    assert benchlib.ratio(3.0, 4.0) == 0.75
    assert benchlib.ratio(1.0, 0.0) is None
    assert benchlib.ratio(None, 2.0) is None
    assert benchlib.at_most(0.15, 0.15) is True
    assert benchlib.at_most(0.16, 0.15) is False
    assert benchlib.at_least(0.97, 0.97) is True
    assert benchlib.at_least(None, 0.97) is None


def test_formatting() -> None:
    assert benchlib.format_value(0.1234, "s") == "0.123 s"
    assert benchlib.format_value(25.04, "s") == "25.0 s"
    assert benchlib.format_value(24.06, "tok/s") == "24.1 tok/s"
    assert benchlib.format_value(2.5, "x") == "2.50x"
    assert benchlib.format_value(None, "s") == "-"
    assert benchlib.format_value("none", "") == "none"
    assert benchlib.format_value(1.0234, "") == "1.02" and benchlib.format_value(523.46, "ms") == "523.5 ms"
    assert [benchlib.format_met(met) for met in (True, False, None)] == ["yes", "NO", "-"]


def test_listed_commands_reads_the_help_page(cli) -> None:
    result = cli("--help")
    assert result.exit_code == 0
    names = benchlib.listed_commands(result.stdout)
    assert names[:2] == ["generate", "tokenize"]
    assert "--help" not in names and "look" not in names
    text = ("Usage: x\n\nCommands:\n  generate  Write text that goes on\n            past the line\n"
            "  bench-cache  Time\n")
    assert benchlib.listed_commands(text) == ["generate", "bench-cache"]


def test_bench_cache_figures() -> None:
    document = {"results": [{"new_tokens": 100, "cache": {"seconds": {"mean": 4.0}},
                             "no_cache": {"seconds": {"mean": 10.0}},
                             "speedup": {"of_means": 2.5, "pairs": {"n": 3}, "interval": {"low": 2.4, "high": 2.6}},
                             "check": {"identical": True}, "stop_reason": "converged"}],
                "runs": [{"seconds": 4.0}, {"seconds": 10.0}] * 3, "seconds": 45.0}
    figures = benchlib.bench_cache_figures(document)
    assert figures == {"new_tokens": 100, "cache_s": 4.0, "no_cache_s": 10.0, "speedup": 2.5, "identical": True,
                       "pairs": 3, "interval": (2.4, 2.6), "stop_reason": "converged", "run_seconds": 42.0,
                       "timing_seconds": 45.0}
    # the old default: start-up and load (50 - 45 s) plus 8 pairs of this run's mean pair (42 / 3 = 14 s)
    assert benchlib.old_default_estimate(50.0, figures) == pytest.approx(5.0 + 8 * 14.0)
    assert benchlib.bench_cache_figures({}) is None


def test_machine_is_read_without_torch() -> None:
    info = benchlib.machine()
    assert info["cores"] >= 1 and info["cpu"]
    assert info["torch"] and info["torch"].startswith("2.")
    assert "cores" in benchlib.machine_line(info)
    assert info["timestamp"].endswith("+00:00") and "gpu" in info and info["threads"]
    assert info["load_averages"] is None or len(info["load_averages"]) == 3
    probe = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import benchlib; "
                            "benchlib.machine(); print('torch' in sys.modules)", str(BENCHMARKS)],
                           capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == "False", probe.stderr


def _run_suite(tmp_path: Path, *args: str) -> tuple[dict, dict]:
    out = tmp_path / "result.json"
    done = subprocess.run([sys.executable, str(BENCHMARKS / "run.py"), "--quick", "--json-out", str(out), *args],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    last = json.loads(done.stdout.strip().splitlines()[-1])  # the compact JSON document ends stdout
    assert last["suite"] == "llmscope-benchmarks" and last["quick"] is True
    document = json.loads(out.read_text())
    return document, {figure["name"]: figure for figure in document["figures"]}


def test_quick_startup_section(tmp_path: Path) -> None:
    document, figures = _run_suite(tmp_path, "--only", "startup")
    assert document["sections"] == ["startup"]
    heavy = figures["import llmscope.cli.main, --help: heavy modules"]
    assert heavy["value"] == "none" and heavy["met"] is True
    for name in ("llmscope --help", "llmscope --version"):
        assert figures[name]["value"] > 0 and figures[name]["baseline"] > 0
        assert figures[name]["baseline_label"] == "python -c pass"
        assert figures[name]["ratio"] == pytest.approx(figures[name]["value"] / figures[name]["baseline"])


def test_quick_generation_sections_on_a_tiny_model(tmp_path: Path, tiny_model_dir: Path) -> None:
    document, figures = _run_suite(tmp_path, "--only", "decode,nocache,bandwidth", "--model", str(tiny_model_dir))
    decode = figures["decode, dynamic cache"]
    assert decode["value"] > 0 and decode["baseline"] > 0 and decode["unit"] == "tok/s"
    assert "tokens identical" in decode["note"]
    details = document["details"]["generation"]
    assert details["decode"]["identical_tokens"] is True
    assert len(details["decode"]["llmscope_tokens_per_s"]) == details["decode"]["rounds"] == 3
    # the bytes read per token are the tiny model's float32 weights, counted once
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    unique = {id(p): p.numel() for p in model.parameters()}
    assert details["weight_bytes"] == 4 * sum(unique.values())
    nocache = figures["no-cache / cache time, 16 tokens"]
    assert nocache["value"] > 0 and nocache["baseline"] > 0
    assert figures["memory bandwidth (matvec)"]["value"] > 0
    assert figures["decode / bandwidth limit"]["unit"] == "%"
