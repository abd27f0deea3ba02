"""`llmscope architecture` on today's families in process: the mixture-of-experts, hybrid and latent views, the
planner's options, hub ids offline, GPT-2's intermediate size and one tree format."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import pytest

from llmscope.architecture.describe import describe_config_model

PHI3_MINI_4K = {  # the book's model (FACTS.md): 3,821,079,552 parameters
    "architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "hidden_size": 3072, "intermediate_size": 8192,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32064,
    "max_position_embeddings": 4096, "sliding_window": 2047, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
    "tie_word_embeddings": False, "pad_token_id": 32000, "bos_token_id": 1, "eos_token_id": 32000,
    "hidden_act": "silu", "torch_dtype": "bfloat16"}


def test_cli_shows_moe_hybrid_and_latent(cli, family_dirs: dict[str, Path]) -> None:
    moe = cli("architecture", "-m", family_dirs["qwen3_next"], env={"COLUMNS": "80"})
    assert moe.exit_code == 0, moe.stderr
    assert "active per token" in moe.stdout and "routed experts" in moe.stdout
    assert "3 × linear / full, repeating ×2" in moe.stdout and "[4 experts, 2 per token]" in moe.stdout
    assert "state" in moe.stdout and max(len(line) for line in moe.stdout.splitlines()) <= 80
    assert "…" not in moe.stdout  # no cell cut short (the plan table has 8 columns at 80)
    latent = cli("architecture", "-m", family_dirs["deepseek_v3"], "--json").json()
    assert latent["summary"]["attention"]["kind"] == "multi-head latent"
    assert latent["kv_cache"]["values_per_token"] == 20


def test_offline_hub_id_hint_fetches_the_config_alone(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    result = cli("architecture", "-m", "someorg/not-cached-model")
    assert result.exit_code == 1 and "not in the local Hugging Face cache" in result.stderr
    assert "hf download someorg/not-cached-model config.json" in result.stderr


def test_planner_on_phi3_mini_128k_batch_4_int4(cli, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(PHI3_MINI_4K))
    document = cli("architecture", "-m", tmp_path, "--context", "128k", "--batch-size", "4", "--dtype", "bfloat16",
                   "--kv-dtype", "int4", "--gpu-memory", "80GB", "--json").json()
    plan = document["plan"]
    assert plan["weight_bytes"] == 3_821_079_552 * 2 and plan["kv_dtype"] == "int4" and plan["batch_size"] == 4
    last = plan["rows"][-1]
    # 32 sliding layers keep 2,046 positions x 2 (K, V) x 32 heads x 96 dims x 4 sequences x half a byte
    assert last["tokens"] == 131_072 and last["kv_bytes"] == 32 * 2046 * 2 * 32 * 96 * 4 // 2 == 804_519_936
    assert last["total_bytes"] == 7_642_159_104 + 804_519_936 and last["fits"] == [True]
    assert plan["past_context"] and [row["tokens"] for row in plan["rows"]] == [4096, 32768, 131072]
    shown = cli("architecture", "-m", tmp_path, "--context", "128k", "--batch-size", "4", "--dtype", "bfloat16",
                "--kv-dtype", "int4").stdout
    assert "Memory plan: batch 4, weights in bfloat16, KV cache in int4" in shown and "131,072*" in shown


@pytest.mark.parametrize("args", [("--context", "12q"), ("--batch-size", "0"), ("--kv-dtype", "int3"),
                                  ("--gpu-memory", "lots"), ("--dtype", "int8")])
def test_bad_planner_options_exit_2_before_loading(cli, args: tuple[str, str]) -> None:
    result = cli("architecture", "-m", "nobody-llmscope/not-a-model", *args)
    assert result.exit_code == 2 and args[0] in result.stderr and "Traceback" not in result.stderr


def test_gpt2_intermediate_size_and_one_tree_format(cli, tiny_models: dict[str, Path]) -> None:
    folder = tiny_models["gpt2"]  # n_embd 64, n_inner null
    assert json.loads((folder / "config.json").read_text()).get("n_inner") is None
    assert describe_config_model(str(folder)).summary.intermediate_size == 4 * 64
    env = {"COLUMNS": "80"}
    full = cli("architecture", "-m", folder, "-q", env=env).stdout
    deep = cli("architecture", "-m", folder, "-q", "--depth", "9", env=env).stdout
    tree = full[full.index("Modules ("):].splitlines()[1:]
    assert tree == deep[deep.index("Modules ("):].splitlines()[1:]  # same text whatever --depth
    assert any("(lm_head): Linear(64 → 320, bias=False)" in line for line in tree)
    shallow = cli("architecture", "-m", folder, "-q", "--depth", "1", env=env).stdout
    assert "(lm_head): Linear(64 → 320, bias=False)" in shallow  # not Linear(in_features=...) when it fits
    assert "in_features" not in full + shallow and "9.99999" not in full
    assert max(len(line) for line in full.splitlines()) <= 80
    width = len(tree[0]) - len(tree[0].lstrip()) + len(tree[0].split()[0])  # the count column's right edge
    folded = [(line, after) for line, after in pairwise(tree)
              if "LayerNorm(" in line and not line.rstrip().endswith(")")]
    assert folded  # at 80 columns GPT-2's LayerNorm lines are too long: the rest hangs under the label
    assert all(after[:width].strip() == "" and after.strip().endswith(")") for _, after in folded)
