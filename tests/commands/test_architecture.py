"""`llmscope architecture` in process: tables at 80 columns and JSON, the tree depth, --weights, configs that are
not a causal LM, nonsense layer counts and configs of defaults only."""

from __future__ import annotations

import json
from pathlib import Path

from helpers.cli import RUNTIME

from llmscope.architecture.describe import (
    describe_loaded_model,
)
from llmscope.loading.loader import load_model

BERT = {"architectures": ["BertForMaskedLM"], "model_type": "bert", "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 128, "vocab_size": 100}


def test_phi3_cli_table_fits_80_columns_and_json(cli, phi3_dir: Path) -> None:
    result = cli("architecture", "-m", phi3_dir, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.stderr
    assert "(0-31): 32 x Phi3DecoderLayer" in result.stdout and "3,821,079,552" in result.stdout
    assert "grouped" not in result.stdout and "multi-head: 32 heads" in result.stdout
    assert "2,047" in result.stdout and "meta device" in result.stderr
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    document = cli("architecture", "-m", phi3_dir, "--json").json()
    assert document["command"] == "architecture" and document["device"] == "meta"
    assert document["parameters"]["total"] == 3_821_079_552
    assert document["kv_cache"]["bytes_per_token"] == 393_216
    assert document["tree"]["children"][0]["children"][1]["children"][0]["repeat"] == 32


def test_depth_limits_the_tree(cli, phi3_dir: Path) -> None:
    document = cli("architecture", "-m", phi3_dir, "--depth", "1", "--json").json()
    model = document["tree"]["children"][0]
    assert model["children"] == [] and model["truncated"] and model["parameters"] > 3.7e9
    shown = cli("architecture", "-m", phi3_dir, "--depth", "2").stdout
    assert "(layers): ModuleList(…)" in shown and "qkv_proj" not in shown
    bad = cli("architecture", "-m", phi3_dir, "--depth", "-1")
    assert bad.exit_code == 2 and "--depth" in bad.stderr


def test_weights_flag_reports_loaded_dtype_and_device(cli, tiny_models: dict[str, Path]) -> None:
    document = cli("architecture", "-m", tiny_models["qwen2"], "--weights", "--device", "cpu", "--dtype",
                   "bfloat16", "--json").json()
    assert document["source"] == "weights" and document["summary"]["devices"] == ["cpu"]
    assert document["summary"]["dtype"] == "bfloat16" and document["kv_cache"]["bytes_per_value"] == 2
    loaded = load_model(str(tiny_models["qwen2"]), device="cpu")
    assert describe_loaded_model(loaded).parameters.total == loaded.parameters == document["parameters"]["total"]


def test_not_a_causal_lm_is_one_clear_line(cli, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(BERT))
    result = cli("architecture", "-m", tmp_path)
    assert result.exit_code == 1
    assert "not a causal language model (BertForMaskedLM)" in result.stderr and "Traceback" not in result.stderr


def test_missing_hub_model_offline(cli) -> None:
    result = cli("architecture", "-m", "nobody-llmscope/not-a-model")
    assert result.exit_code == 1 and "error:" in result.stderr and "Traceback" not in result.stderr


def test_a_negative_layer_count_is_refused(cli, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "num_hidden_layers": -3, "hidden_size": 64,
        "intermediate_size": 128, "num_attention_heads": 4, "vocab_size": 100}))
    result = cli("architecture", "-m", tmp_path)
    assert result.exit_code == RUNTIME, result.stdout
    assert "num_hidden_layers to -3" in result.stderr and "Traceback" not in result.stderr


def test_a_config_of_defaults_only_says_so(cli, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    result = cli("architecture", "-m", tmp_path, "--json")
    assert result.exit_code == 0, result.stderr
    assert "sets no size" in result.stderr and "default for llama" in result.stderr
    sized = tmp_path / "sized"
    sized.mkdir()
    (sized / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64,
                                                   "num_hidden_layers": 2, "intermediate_size": 128}))
    assert "sets no size" not in cli("architecture", "-m", sized, "--json").stderr
