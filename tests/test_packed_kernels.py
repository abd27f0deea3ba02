"""The packed kernels' contracts that speed work must keep: a row's result does not depend on the other rows of
the call, CPU int4 layouts of other machines are read back exactly, and torch's threads wait without spinning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llmscope.loading.quant.modules import PackedLinear
from llmscope.loading.quant.packing import (
    PackedWeight,
    cpu_int4_layout,
    from_cpu_int4_layout,
    quantize_int4,
    quantize_int8,
    unpack_int4,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("kind", ["int4", "int8"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", [(96, 128), (576, 192), (192, 1536)])
def test_packed_linear_gives_a_row_the_same_bits_whatever_the_rows_in_the_call(kind: str, threads: int,
                                                                                 shape: tuple[int, int]) -> None:
    """M=1 decode and M=n prefill run one kernel: each row of a many-row call equals that row computed alone."""
    rows, columns = shape
    generator = torch.Generator().manual_seed(rows + columns)
    dense = torch.randn(rows, columns, generator=generator)
    layer = PackedLinear(quantize_int4(dense) if kind == "int4" else quantize_int8(dense))
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for count in (2, 3, 7, 8, 64, 135):
            inputs = torch.randn(count, columns, generator=generator)
            together = layer(inputs)
            alone = torch.cat([layer(inputs[row:row + 1]) for row in range(count)])
            assert together.dtype == torch.float32
            assert torch.equal(together, alone), f"{kind} {shape}: {count} rows differ from one at a time"
            batched = layer(inputs.reshape(1, count, columns))[0]  # [batch, positions, features] as models call it
            assert torch.equal(batched, together)
    finally:
        torch.set_num_threads(previous)


def _pack_in_layout(values: torch.Tensor, block_rows: int) -> torch.Tensor:
    """Bytes of int4 values [N, K] in the CPU layout with `block_rows` rows per block (written out by hand, as
    another machine's torch would pack them): full blocks hold rows j and B/2 + j, a short last block 2j and 2j+1."""
    rows, _ = values.shape
    parts = []
    for start in range(0, rows, block_rows):
        block = values[start:start + block_rows].to(torch.uint8)
        size = block.shape[0]
        low, high = (block[:size // 2], block[size // 2:]) if size == block_rows else (block[0::2], block[1::2])
        parts.append((low | high << 4).t().contiguous().reshape(-1))
    return torch.cat(parts).reshape(rows, -1)


@pytest.mark.parametrize("foreign", [32, 64])
@pytest.mark.parametrize("rows", [64, 96, 192])
def test_int4_weights_packed_on_another_cpu_kind_are_read_back_exactly(foreign: int, rows: int) -> None:
    """A cache entry written on an AVX2 machine (32-row blocks) reads right on AVX-512 (64) and the other way."""
    generator = torch.Generator().manual_seed(rows)
    dense = torch.randn(rows, 128, generator=generator)
    here = quantize_int4(dense, "test")
    values = unpack_int4(here)
    assert values.shape == (rows, 128) and int(values.max()) <= 15
    if foreign == cpu_int4_layout():  # this machine's own layout: the hand-written packing must match torch's
        assert torch.equal(_pack_in_layout(values, foreign).reshape(-1), here.data.reshape(-1))
    elsewhere = PackedWeight("int4", rows, 128, _pack_in_layout(values, foreign), here.scales, "test")
    restored = from_cpu_int4_layout(elsewhere, foreign)
    assert torch.equal(unpack_int4(restored), values)
    inputs = torch.randn(3, 128, generator=generator)
    assert torch.equal(restored.matmul(inputs), here.matmul(inputs))
    index = torch.tensor([0, rows - 1, rows // 2, 33 % rows])
    assert torch.equal(restored.rows_dense(index, torch.float32), here.dequantize()[index])


def test_saved_packed_model_records_its_cpu_layout(tmp_path: Path, tiny_model_dir: Path) -> None:
    """The manifest says which layout the int4 bytes are in, so another CPU kind repacks instead of misreading."""
    from tinygguf import write_tiny_gguf

    from llmscope.loading.loader import load_model
    from llmscope.loading.quant.modules import packed_summary
    from llmscope.loading.quant.packedmodel import MANIFEST, load_packed, save_packed

    gguf = write_tiny_gguf(tiny_model_dir, tmp_path / "tiny-q4.gguf", {"": "Q4_0", "token_embd.weight": "Q8_0"})
    loaded = load_model(str(gguf), device="cpu", dtype="float32", quantize="auto")
    assert any(form.startswith("int4") for form in packed_summary(loaded.model))
    folder = tmp_path / "saved"
    folder.mkdir()
    save_packed(loaded.model, folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["int4_cpu_layout"] == cpu_int4_layout() in (32, 64)
    again = load_packed(folder, torch.float32, "cpu")
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.inference_mode():
        assert torch.equal(again(ids).logits, loaded.model(ids).logits)


def test_importing_llmscope_makes_torch_threads_wait_passively_unless_told_otherwise() -> None:
    """Spinning OpenMP threads collapse decode on a busy machine; a user's own OMP_WAIT_POLICY is kept."""
    code = "import os, llmscope; print(os.environ['OMP_WAIT_POLICY'])"
    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = str(ROOT)
    default = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert default.stdout.strip() == "PASSIVE"
    chosen = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                            capture_output=True, text=True, check=True)
    assert chosen.stdout.strip() == "ACTIVE"
