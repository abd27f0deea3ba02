"""Quantized weights through the commands: every model command on packed weights, the lens and --weights on them,
what quantization costs measured by compare, --quantize checked, the planner counting packed bytes as held."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from llmscope.loading.loader import load_model

# The tiny llama's tensors: q in Q4_1, the MLP's down projection in Q8_0 (int8 per row), the embedding (tied to
# the head) in Q8_0 (dequantized exactly under auto), everything else 2-D in Q4_0; norms stay float32.


PROMPT = "The capital of France is"


def test_every_model_command_runs_on_packed_weights(cli, quantized_gguf: Path) -> None:
    from helpers.commands import MODEL_COMMANDS, command_line

    for name in MODEL_COMMANDS:
        if name == "tokenize":
            continue  # the tokenizer only
        result = cli(*command_line(name, quantized_gguf), "--json")
        assert result.exit_code == 0, (name, result.stderr)
        info = json.loads(result.stdout)["model_info"]
        if name != "architecture":  # architecture reads the config unless --weights
            assert info["quantize"] == "auto" and "int4 from Q4_0" in info["weights"], name


def test_next_token_lens_and_architecture_weights_on_packed_weights(cli, quantized_gguf: Path) -> None:
    lens = cli("next-token", PROMPT, "-m", quantized_gguf, "--lens", "--json").json()
    assert [row["layer"] for row in lens["lens"]] == [0, 1, 2]  # the embeddings and the two blocks
    assert lens["lens"][-1]["top_id"] == lens["steps"][0]["top"][0]["token_id"]
    arch = cli("architecture", "-m", quantized_gguf, "--weights", "--json").json()
    assert arch["parameters"]["total"] == 94_528
    assert "int4" in arch["summary"]["dtype"]


def test_compare_measures_what_quantization_costs(cli, tiny_model_dir: Path) -> None:
    text = "The capital of France is Paris. The capital of Italy is Rome. Write an email to Sarah."
    result = cli("compare", text, "-m", tiny_model_dir, "--quantize", "int4", "--against-quantize", "none",
                 "--json").json()["summary"]
    assert result["tokens_compared"] > 10
    assert 0 < result["kl_mean"] < 0.05
    assert math.isfinite(result["perplexity_a"]) and math.isfinite(result["perplexity_b"])


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--quantize", "int3"], {}, "--quantize takes auto | none | int8 | int4"),
    ([], {"LLMSCOPE_QUANTIZE": "fp4"}, "LLMSCOPE_QUANTIZE takes"),
    (["--quantize", "int4", "--device-map", "auto"], {}, "--quantize int4 cannot run with --device-map"),
])
def test_quantize_option_is_checked(cli, tiny_model_dir: Path, args: list[str], env: dict[str, str],
                                    message: str) -> None:
    result = cli("next-token", PROMPT, "-m", tiny_model_dir, *args, env=env)
    assert result.exit_code == 2, result.stderr
    assert message in " ".join(result.stderr.split())


@pytest.mark.parametrize("mode", ["auto", "int4", "int8"])
def test_the_planner_counts_packed_weights_as_the_loader_holds_them(cli, quantized_gguf: Path, mode: str) -> None:
    from llmscope.loading.quant.ggufweights import file_weight_bytes
    from llmscope.loading.quant.modules import held_weight_bytes

    loaded = load_model(str(quantized_gguf), device="cpu", dtype="float32", quantize=mode)
    predicted, held_in = file_weight_bytes(quantized_gguf, mode, 4)
    assert predicted == held_weight_bytes(loaded.model)
    plan = cli("architecture", "-m", quantized_gguf, "--quantize", mode, "--json").json()["plan"]
    assert plan["weight_bytes"] == predicted and plan["weights_format"] == held_in
    loaded_plan = cli("architecture", "-m", quantized_gguf, "--quantize", mode, "--weights", "--json").json()["plan"]
    assert loaded_plan["weight_bytes"] == predicted
