"""--quantize int8 / int4 on a model whose every linear layer must stay as loaded (input widths no packed kernel
takes) says so, on stderr and in the JSON's model_info, instead of passing the unquantized model off as quantized.
Fast tier: a tiny llama of hidden size 40 and MLP width 72 (int4 needs multiples of 64, int8 of 32)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="module")
def unpackable_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from helpers.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-width-40"), "llama", hidden_size=40, intermediate_size=72)


@pytest.mark.parametrize("kind", ["int4", "int8"])
def test_packing_nothing_is_said(cli: Any, unpackable_model: Path, kind: str) -> None:
    result = cli("generate", "Hello", "-m", unpackable_model, "--quantize", kind, "-n", "2", "--no-chat", "--json")
    assert result.exit_code == 0, result.stderr
    info = result.json()["model_info"]
    assert info["quantize"] == kind and info["weights"] is None and info["packed_layers"] == 0
    [warning] = info["load_warnings"]
    # 2 layers x (q, k, v, o, gate, up) read 40 values, 2 down projections 72, and the LM head 40: 15 layers
    assert f"--quantize {kind} packed nothing: all 15 linear layers stay as loaded" in warning
    assert "input width 40" in warning and "input width 72" in warning
    assert f"warning: --quantize {kind} packed nothing" in result.stderr


def test_a_packed_model_has_no_such_warning(cli: Any, tiny_model_dir: Path) -> None:
    result = cli("generate", "Hello", "-m", tiny_model_dir, "--quantize", "int8", "-n", "2", "--no-chat", "--json")
    assert result.exit_code == 0, result.stderr
    info = result.json()["model_info"]
    assert info["packed_layers"] == 15 and info["load_warnings"] == [] and "packed nothing" not in result.stderr
    exact = cli("generate", "Hello", "-m", tiny_model_dir, "--quantize", "none", "-n", "2", "--no-chat", "--json")
    assert exact.json()["model_info"]["packed_layers"] is None
