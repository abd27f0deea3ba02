"""The benchmark suite run as a script: --quick's start-up and generation sections end to end on a tiny model,
and the machine description read without importing torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import benchlib
import pytest
from helpers.paths import BENCHMARKS


def _run_suite(tmp_path: Path, *args: str) -> tuple[dict, dict]:
    out = tmp_path / "result.json"
    done = subprocess.run([sys.executable, str(BENCHMARKS / "run.py"), "--quick", "--json-out", str(out), *args],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    last = json.loads(done.stdout.strip().splitlines()[-1])  # the compact JSON document ends stdout
    assert last["suite"] == "llmscope-benchmarks" and last["quick"] is True
    document = json.loads(out.read_text())
    return document, {figure["name"]: figure for figure in document["figures"]}


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
