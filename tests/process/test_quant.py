"""A model whose input widths no packed kernel reads loads under --quantize int8 / int4 with those layers kept exact,
in a subprocess so that a crash fails the test instead of killing pytest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WIDE = 100  # hidden size: not a multiple of 8, the shape that crashed _weight_int8pack_mm with 2+ rows


@pytest.fixture(scope="module")
def width_100_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny llama of hidden size 100 (5 heads of 20) and MLP width 160: q/k/v/o, gate/up and the head read 100
    values (no packed kernel), down_proj reads 160 (int8 can pack it, int4 cannot)."""
    from helpers.models import build_tokenizer
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("width-100")
    tokenizer = build_tokenizer(folder)
    config = AutoConfig.for_model("llama", hidden_size=WIDE, intermediate_size=160, num_hidden_layers=2,
                                  num_attention_heads=5, num_key_value_heads=5, max_position_embeddings=128,
                                  vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(str(folder))
    return folder


@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_width_100_model_loads_and_runs_under_quantize(width_100_model: Path, kind: str, cli) -> None:
    env = dict(os.environ, LLMSCOPE_MODEL="")
    args = [sys.executable, "-m", "llmscope", "next-token", "The capital of France is", "-m", str(width_100_model),
            "--quantize", kind, "--json"]
    run = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, (run.returncode, run.stderr[-2000:])  # -11 (segfault) before the fix
    document = json.loads(run.stdout)
    info = document["model_info"]
    # 2 layers x (q, k, v, o, gate, up) + the head read 100 values: kept in float32, and the load line says so
    assert info["kept_exact"] == "float32, input width 100 x13"
    assert info["weights"] == "int8 from float32 quantized x2"  # down_proj (width 160; int4 falls back to int8)
    assert "kept exact (no packed kernel for their input width): float32, input width 100 x13" in run.stderr
    exact = cli(*args[3:-3], "--quantize", "none", "--json")  # dense weights: nothing to crash, run in this process
    assert exact.exit_code == 0, exact.stderr
    reference = exact.json()["steps"][0]["top"]
    top = document["steps"][0]["top"]
    assert top[0]["token_id"] == reference[0]["token_id"]
    assert abs(top[0]["probability"] - reference[0]["probability"]) < 0.01
