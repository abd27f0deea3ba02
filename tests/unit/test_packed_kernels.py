"""The packed kernels' contracts that speed work must keep: a row's result does not depend on the other rows of
the call (so no kernel may be chosen by row count), and torch's threads wait without spinning."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from helpers.paths import ROOT

from llmscope.loading.quant.modules import PackedLinear
from llmscope.loading.quant.packing import quantize_int4, quantize_int8


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
