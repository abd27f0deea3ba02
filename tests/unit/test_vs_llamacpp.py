"""benchmarks/vs_llamacpp.py's pure parts: the checks it derives from measured cells, and how it says llama.cpp is
missing. Nothing here loads a model or times anything."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from helpers.paths import BENCHMARKS

sys.path.insert(0, str(BENCHMARKS))

import vs_llamacpp


def _answer(decode: float | None, prompt: float) -> dict[str, Any]:
    return {"decode_tok_s": decode, "prompt_tok_s": prompt, "text": "x"}


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
