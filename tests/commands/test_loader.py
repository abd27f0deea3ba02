"""The loader through the commands: a busy machine gets fewer threads and one warning, every load checks its
planned memory first, and a GGUF file's tensor table is read once per load."""

from __future__ import annotations

from pathlib import Path

import pytest

PROMPT = "The capital of France is"


def test_every_load_checks_its_planned_peak_first(cli, tiny_model_dir: Path, tiny_gguf: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A load whose planned weights exceed the free memory is refused in one line with the figures (the float32
    copy of an 8B-shaped GGUF passed 15 GB in 79 s before)."""
    from llmscope.loading import loader, memory

    loads: list[str] = []  # a source's loader ran: weights were read
    for source in ("_load_pretrained", "_load_dequantized_gguf", "_load_packed_gguf"):
        real_load = getattr(loader, source)
        monkeypatch.setattr(loader, source, lambda *args, real_load=real_load: loads.append("load") or real_load(*args))
    monkeypatch.setattr(memory, "available_memory", lambda device="cpu": 100 << 10)  # 100 KiB
    monkeypatch.setenv("LLMSCOPE_CACHE", str(tmp_path / "empty-cache"))
    folder = cli("next-token", PROMPT, "-m", tiny_model_dir)
    assert folder.exit_code == 1 and not loads
    # 94,528 float32 parameters: 369 KiB
    message = " ".join(folder.stderr.split())  # Rich may wrap the line at the terminal's width
    assert f"{Path(tiny_model_dir).name} with --quantize auto needs about 369 KiB and 100 KiB is available" in message
    gguf = cli("next-token", PROMPT, "-m", tiny_gguf, "--quantize", "none")
    assert gguf.exit_code == 1 and not loads
    assert "(a first load, dequantizing the GGUF file) needs about 738 KiB" in gguf.stderr  # twice the weights
    monkeypatch.setenv("LLMSCOPE_MEMORY_CHECK", "0")
    assert cli("next-token", PROMPT, "-m", tiny_model_dir).exit_code == 0 and loads


def test_a_busy_machine_gets_fewer_threads_and_a_warning(cli, tiny_model_dir: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import llmscope.loading.cputhreads as cputhreads

    before = torch.get_num_threads()
    monkeypatch.setattr(cputhreads, "others_busy_percent", lambda interval=0.1: 75.0)
    monkeypatch.setattr(cputhreads.os, "cpu_count", lambda: 4)
    try:
        result = cli("next-token", "Hello", "-m", tiny_model_dir, "--top-k", "2")
        assert result.exit_code == 0, result.stderr
        assert torch.get_num_threads() == 1
        assert "75% busy: using 1 torch thread of 4 cores" in result.stderr
        asked = cli("next-token", "Hello", "-m", tiny_model_dir, "--top-k", "2", "--threads", "2")
        assert torch.get_num_threads() == 2 and "busy" not in asked.stderr  # asked for: not second-guessed
    finally:
        torch.set_num_threads(before)


def test_a_gguf_load_reads_its_tensor_table_once(cli, tiny_gguf: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from llmscope.loading.quant import ggufheader

    reads: list[Path] = []
    real_read = ggufheader.read_tensor_table
    monkeypatch.setattr(ggufheader, "read_tensor_table", lambda path: reads.append(path) or real_read(path))
    monkeypatch.setenv("LLMSCOPE_CACHE", str(tmp_path / "cache"))  # a first load: nothing packed or converted yet
    result = cli("next-token", "Hello", "-m", tiny_gguf, "--json")
    assert result.exit_code == 0, result.stderr
    assert reads == [tiny_gguf] and result.json()["model_info"]["quantize"] == "none"  # a float32 file: nothing packed
