"""`llmscope patch` in process: prompts of different lengths refused with both tokenizations, the endpoint and
missing corruption refused, --max-passes, JSON / table / plot agreeing, ablation and noise, --batch, packed weights."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from llmscope.patching.settings import PatchSettings

CLEAN = "The capital of France is"


CORRUPT = "The capital of Rome is"  # the same 8 tokens in the tiny tokenizer


ANSWERS = {"target": " capital", "corrupt_target": " of"}  # single tokens of the tiny tokenizer


def values(result: Any) -> list[float]:
    return [v for grid in result.grids for row in grid.values for v in row]


def test_prompts_of_different_lengths_are_refused_with_both_tokenizations(cli: Any, tiny_model_dir: Path) -> None:
    result = cli("patch", CLEAN, "--corrupt", "The capital of Italy is", "-m", tiny_model_dir)
    assert result.exit_code == 2
    line = next(x for x in result.stderr.splitlines() if x.startswith("error:"))
    assert "8 tokens (The| capital| of| |Fr|an|ce| is)" in line and "7 (The| capital| of| |Ital|y| is)" in line
    assert "--align" in line
    aligned = cli("patch", CLEAN, "--corrupt", "The capital of Italy is", "-m", tiny_model_dir, "--align", "end",
                  "--target", " capital", "--corrupt-target", " of", "--json", "-q")
    assert aligned.exit_code == 0, aligned.stderr
    columns = aligned.json()["grids"][0]["columns"]
    assert [c["index"] for c in columns] == list(range(7))  # every position of the corrupted run (7 tokens)
    assert [c["source_position"] for c in columns] == list(range(1, 8))  # paired with the clean run's from the end


def test_endpoint_and_missing_corruption_are_refused_in_one_line(cli: Any, tiny_model_dir: Path) -> None:
    result = cli("patch", CLEAN, "--corrupt", CORRUPT, "--endpoint", "http://127.0.0.1:9")
    assert result.exit_code == 2 and "activations do not travel" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = cli("patch", CLEAN, "-m", tiny_model_dir)
    assert result.exit_code == 2 and "--corrupt TEXT, --corrupt-noise SUBJECT, or --ablate" in result.stderr


def test_max_passes_refuses_before_running(cli: Any, tiny_model_dir: Path) -> None:
    result = cli("patch", CLEAN, "--corrupt", CORRUPT, "-m", tiny_model_dir, "--site", "all", "--max-passes", "10")
    assert result.exit_code == 2
    assert "48 patched runs (2 layers x 8 positions x 3 sites) exceed --max-passes 10" in result.stderr
    assert "--layers" in result.stderr


def test_json_table_and_plot_agree(cli: Any, tiny_model_dir: Path, tmp_path: Path) -> None:
    args = ["patch", CLEAN, "--corrupt", CORRUPT, "-m", tiny_model_dir, "--site", "resid,heads",
            "--target", " capital", "--corrupt-target", " of"]
    document = cli(*args, "--json", "-q").json()
    assert document["command"] == "patch" and document["metric"] == "logit-diff" and document["normalised"]
    assert document["answer"]["text"] == " capital" and document["foil"]["text"] == " of"
    resid, heads = document["grids"]
    assert len(resid["values"]) == 2 and len(resid["values"][0]) == 8
    assert resid["values"][-1][-1] == pytest.approx(1.0, abs=1e-5)
    assert len(heads["values"][0]) == 4 and heads["position"] == 7
    assert resid["strongest"][0]["value"] == max(max(row) for row in resid["values"])
    plot = tmp_path / "map.png"
    table = cli(*args, "--plot", plot, env={"COLUMNS": "120", "NO_COLOR": "1"})
    assert table.exit_code == 0, table.stderr
    assert plot.stat().st_size > 1000 and "about to run: 24 cells" in table.stderr
    rows = [line.split() for line in table.stdout.splitlines() if re.match(r"^\s+\d+\s+-?\d", line)]
    assert [[float(x) for x in row[1:]] for row in rows[:2]] == [[round(v, 2) + 0.0 for v in row]
                                                                   for row in resid["values"]]
    from llmscope.loading.loader import load_model
    from llmscope.patching.patcher import patch
    from llmscope.render.patching import plot_figure

    loaded = load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    figure = plot_figure(patch(loaded, CLEAN, CORRUPT, PatchSettings(sites=("resid", "heads"), **ANSWERS)))
    images = [axis.images[0].get_array() for axis in figure.axes if axis.images]
    for image, grid in zip(images, (resid, heads), strict=True):
        pixels = [float(v) for row in image for v in row]
        assert pixels == pytest.approx([v for row in grid["values"] for v in row], abs=1e-5)


def test_ablate_and_noise_from_the_command_line(cli: Any, tiny_model_dir: Path) -> None:
    result = cli("patch", CLEAN, "-m", tiny_model_dir, "--ablate", "zero", "--site", "heads", "--json", "-q")
    assert result.exit_code == 0, result.stderr
    document = result.json()
    assert document["mode"] == "ablate" and document["metric"] == "logprob" and document["corrupt"] is None
    assert len(document["grids"][0]["values"]) == 2
    result = cli("patch", CLEAN, "-m", tiny_model_dir, "--corrupt-noise", "France", "--samples", "2",
                 "--metric", "prob", "--layers", "-1", "--json", "-q")
    assert result.exit_code == 0, result.stderr
    document = result.json()
    assert document["noise"]["samples"] == 2 and document["cost"]["rows"] == 2 * 8
    assert document["grids"][0]["layers"] == [1]


def test_batch_of_jsonl_pairs(cli: Any, tiny_model_dir: Path, tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join(json.dumps(record) for record in (
        {"id": "a", "prompt": CLEAN, "corrupt": CORRUPT, **ANSWERS},
        {"id": "b", "prompt": CLEAN, "subject": "France", "target": " capital"},
        {"id": "c", "prompt": CLEAN, "corrupt": "The capital of Italy is", **ANSWERS},
    )) + "\n")
    result = cli("patch", "--batch", pairs, "-m", tiny_model_dir, "--layers", "-1", "--samples", "2",
                 "--metric", "prob")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["id"] for r in records] == ["a", "b", "c"]
    assert records[0]["corruption"] == "text" and records[1]["corruption"] == "noise"
    assert "positions that align" in records[2]["error"] and result.exit_code == 1


def test_packed_weights_patch_activations_only(cli: Any, tiny_model_dir: Path) -> None:
    result = cli("patch", CLEAN, "--corrupt", CORRUPT, "-m", tiny_model_dir, "--quantize", "int8",
                 "--target", " capital", "--corrupt-target", " of", "--cells-per-pass", "1", "--json", "-q")
    assert result.exit_code == 0, result.stderr
    document = result.json()
    assert document["model_info"]["weights"] and document["model_info"]["quantize"] == "int8"
    values = document["grids"][0]["values"]
    assert values[-1][-1] == 1.0 and values[0][0] == 0.0  # "The" is the same token in both prompts
