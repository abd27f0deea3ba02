"""The benchmark scripts' pure helpers (benchlib, vs_llamacpp): medians, ratios, targets, formatting, the checks
derived from measured cells. Nothing here loads a model or times anything."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import benchlib
import pytest
import vs_llamacpp


def _answer(decode: float | None, prompt: float) -> dict[str, Any]:
    return {"decode_tok_s": decode, "prompt_tok_s": prompt, "text": "x"}


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


def test_checks_are_medians_compared_with_the_issue_targets() -> None:
    cells = {
        ("auto", 1, "quiet"): [_answer(30.0, 300.0), _answer(20.0, 100.0), _answer(40.0, 200.0)],
        ("none", 1, "quiet"): [_answer(10.0, 250.0)],
        ("llama.cpp", 1, "quiet"): [_answer(100.0, 90.0)],
        ("auto", 1, "busy"): [_answer(9.0, 80.0), _answer(None, 70.0)],
        ("none", 1, "busy"): [_answer(5.0, 40.0)],
        ("llama.cpp", 1, "busy"): [_answer(50.0, 30.0)],
    }
    summary = vs_llamacpp.summarize(cells, [1], ["auto", "none", "llama.cpp"])
    assert summary["speed"]["auto|1|quiet"] == {"decode_tok_s": 30.0, "prompt_tok_s": 200.0, "runs": 3}
    assert summary["speed"]["auto|1|busy"]["decode_tok_s"] == 9.0  # a run without a decode figure is left out
    checks = {item["check"]: item for item in summary["checks"]}
    assert checks["decode auto / none, 1 thread, quiet"]["value"] == pytest.approx(3.0)
    assert checks["decode auto / none, 1 thread, quiet"]["met"] is True
    assert checks["prompt auto / none, 1 thread(s), quiet"]["value"] == pytest.approx(0.8)
    assert checks["prompt auto / none, 1 thread(s), quiet"]["met"] is False
    assert checks["decode auto / llama.cpp, 1 thread, quiet"]["value"] == pytest.approx(0.3)
    assert checks["decode auto / llama.cpp, 1 thread, quiet"]["met"] is False
    assert checks["decode busy / quiet, auto, 1 thread(s)"]["value"] == pytest.approx(0.3)
    assert checks["decode busy / quiet, auto, 1 thread(s)"]["met"] is False
    assert summary["other_ratios"]["decode_tok_s llama.cpp 1t busy/quiet"] == pytest.approx(0.5)


def test_without_llama_cpp_its_check_is_left_out_and_the_others_remain() -> None:
    cells = {("auto", 2, "quiet"): [_answer(12.0, 150.0)], ("none", 2, "quiet"): [_answer(4.0, 100.0)]}
    summary = vs_llamacpp.summarize(cells, [2], ["auto", "none"])
    labels = [item["check"] for item in summary["checks"]]
    assert not any("llama.cpp" in label for label in labels)
    busy = next(item for item in summary["checks"] if item["check"].startswith("decode busy"))
    assert busy["value"] is None and busy["met"] is None  # not measured, not failed


def test_a_missing_node_llama_cpp_is_named_with_the_install_command(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMSCOPE_NODE_LLAMA_CPP", raising=False)
    folder, why = vs_llamacpp.node_llama_cpp_dir(None)
    assert folder is None and "--node-llama-cpp" in why
    monkeypatch.setattr(vs_llamacpp.shutil, "which", lambda name: "/usr/bin/node")
    folder, why = vs_llamacpp.node_llama_cpp_dir(str(tmp_path))
    assert folder is None and f"npm install --prefix {tmp_path} node-llama-cpp@3.22.1" in why
    (tmp_path / "node_modules" / "node-llama-cpp").mkdir(parents=True)
    (tmp_path / "node_modules" / "node-llama-cpp" / "package.json").write_text("{}")
    assert vs_llamacpp.node_llama_cpp_dir(str(tmp_path)) == (tmp_path, "")
