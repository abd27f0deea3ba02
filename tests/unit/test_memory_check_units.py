"""The memory check of every load, in the loading layer: the planned peak from the files' headers (the planner's
weights figure, doubled while a GGUF file is dequantized), load_model refusing before any weights are read. A GGUF
file's tensor table read once per load is checked through the command in tests/commands/test_loader.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmscope.core.errors import MemoryLimitError
from llmscope.loading import loader, memory, memory_check


def test_the_planner_and_the_check_share_one_weights_figure() -> None:
    from llmscope.architecture import planner

    assert planner.weight_bytes is memory_check.weight_bytes
    assert memory_check.weight_bytes(1000, "bfloat16") == 2000
    assert memory_check.weight_bytes(1000, "float32", held=(700, "int4 x3")) == 700
    assert memory_check.load_peak_bytes(1000, "float32", converting=True) == 8000


def test_the_planned_peak_counts_the_parameters_in_the_headers(tiny_model_dir: Path, tiny_gguf: Path) -> None:
    loaded = loader.load_model(str(tiny_model_dir), device="cpu", dtype="float32", quantize="none")
    parameters = loaded.parameters
    folder = loader.resolve_model_spec(str(tiny_model_dir))
    assert memory_check.tensor_table(folder) is None
    assert memory_check.file_parameters(folder, None) == parameters
    assert memory_check.planned_load_peak(folder, "none", "float32", False, None) == 4 * parameters
    assert memory_check.planned_load_peak(folder, "none", "bfloat16", False, None) == 2 * parameters
    gguf = loader.resolve_model_spec(str(tiny_gguf))
    table = memory_check.tensor_table(gguf)
    assert table is not None and memory_check.file_parameters(gguf, table) == parameters
    assert memory_check.planned_load_peak(gguf, "none", "float32", True, table) == 2 * 4 * parameters
    assert memory_check.planned_load_peak(gguf, "none", "float32", False, table) == 4 * parameters


def test_load_model_refuses_before_reading_weights(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    read: list[str] = []
    real_load = loader._load_pretrained
    monkeypatch.setattr(loader, "_load_pretrained", lambda *args: read.append("weights") or real_load(*args))
    monkeypatch.setattr(memory, "available_memory", lambda device="cpu": 100 << 10)  # 100 KiB
    with pytest.raises(MemoryLimitError) as refused:
        loader.load_model(str(tiny_model_dir), device="cpu", dtype="float32", quantize="int8")
    assert refused.value.message.startswith(f"loading {tiny_model_dir} with --quantize int8 needs about ")
    assert refused.value.message.endswith(" and 100 KiB is available") and read == []
    monkeypatch.setenv("LLMSCOPE_MEMORY_CHECK", "0")
    assert loader.load_model(str(tiny_model_dir), device="cpu", quantize="none").parameters > 0 and read
