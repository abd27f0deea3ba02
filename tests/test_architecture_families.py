"""`architecture` on the models people run now: mixture-of-experts, multi-head latent attention, sliding / full
alternation, linear-attention hybrids and Falcon's multi-query, on tiny random configs built here; every cache
figure checked against the bytes of transformers' own cache after a real forward; the memory planner's arithmetic."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from conftest import write_config_folders

from llmscope.architecture.describe import describe_config_model
from llmscope.architecture.kvcache import cache_size
from llmscope.architecture.planner import PlannerSettings, parse_memory, parse_tokens, plan_memory
from llmscope.core.errors import UsageError

COMMON = dict(vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
              max_position_embeddings=128)
FAMILIES: dict[str, dict[str, Any]] = {
    "mixtral": dict(COMMON, intermediate_size=48, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2),
    "qwen3_moe": dict(COMMON, intermediate_size=48, moe_intermediate_size=16, num_key_value_heads=2, num_experts=4,
                      num_experts_per_tok=2, head_dim=8),
    "deepseek_v3": dict(COMMON, intermediate_size=48, moe_intermediate_size=16, num_key_value_heads=4,
                        n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1, first_k_dense_replace=1,
                        kv_lora_rank=16, q_lora_rank=24, qk_rope_head_dim=4, qk_nope_head_dim=8, v_head_dim=8,
                        n_group=1, topk_group=1),
    "gemma2": dict(COMMON, intermediate_size=48, num_key_value_heads=2, head_dim=8, sliding_window=8),
    "gpt_oss": dict(COMMON, intermediate_size=16, num_key_value_heads=2, head_dim=8, sliding_window=8,
                    num_local_experts=4, num_experts_per_tok=2),
    "qwen3_next": dict(COMMON, num_hidden_layers=8, intermediate_size=48, moe_intermediate_size=16,
                       shared_expert_intermediate_size=16, num_key_value_heads=2, head_dim=8, num_experts=4,
                       num_experts_per_tok=2, linear_num_value_heads=4, linear_num_key_heads=2,
                       linear_key_head_dim=8, linear_value_head_dim=8, linear_conv_kernel_dim=4),
    "falcon": dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, multi_query=True,
                   new_decoder_architecture=False, max_position_embeddings=128),
}
MOE = ("mixtral", "qwen3_moe", "deepseek_v3", "gpt_oss", "qwen3_next")
PHI3_MINI_4K = {  # the book's model (FACTS.md): 3,821,079,552 parameters
    "architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "hidden_size": 3072, "intermediate_size": 8192,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32064,
    "max_position_embeddings": 4096, "sliding_window": 2047, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
    "tie_word_embeddings": False, "pad_token_id": 32000, "bos_token_id": 1, "eos_token_id": 32000,
    "hidden_act": "silu", "torch_dtype": "bfloat16"}


def family_config(name: str) -> Any:
    from transformers import AutoConfig

    return AutoConfig.for_model(name, **FAMILIES[name])


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_config_folders(tmp_path_factory, FAMILIES)


@pytest.fixture(scope="module")
def family_models() -> dict[str, Any]:
    """Each family as a real tiny model with random weights (float32, CPU)."""
    import torch
    from transformers import AutoModelForCausalLM

    models = {}
    for name in FAMILIES:
        torch.manual_seed(0)
        models[name] = AutoModelForCausalLM.from_config(family_config(name)).eval()
    return models


def held_bytes(cache: Any) -> int:
    """Bytes of every tensor transformers' cache holds: keys, values, convolution and recurrent states."""
    import torch

    total = 0
    for layer in cache.layers:
        tensors = [getattr(layer, "keys", None), getattr(layer, "values", None)]
        for states in (getattr(layer, "conv_states", None), getattr(layer, "recurrent_states", None)):
            tensors += list(states.values()) if isinstance(states, dict) else []
        total += sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))
    return total


@pytest.mark.parametrize("name", list(FAMILIES))
def test_total_and_active_parameters(name: str, family_dirs: dict[str, Path], family_models: dict[str, Any]) -> None:
    report = describe_config_model(str(family_dirs[name]))
    model = family_models[name]
    p = report.parameters
    assert p.total == model.num_parameters()
    assert p.embeddings + p.attention + p.mlp + p.experts + p.router + p.norms + p.lm_head + p.other == p.total
    k = model.config.num_experts_per_tok if name in MOE else None
    skipped = 0  # routed-expert weights a token does not run: each stacked tensor is [experts, ...]
    for path, parameter in model.named_parameters():
        if ".mlp.experts." in path:
            experts = parameter.shape[0]
            skipped += parameter.numel() // experts * (experts - k)
    assert p.active == p.total - skipped
    if name in MOE:
        assert skipped > 0 and p.experts > 0 and p.router > 0
        assert report.summary.experts == 4 and report.summary.experts_per_token == 2
        expert_nodes = [node for node in _walk(report.tree) if node.name == "experts"]
        assert expert_nodes and all(node.experts == (4, 2) for node in expert_nodes)
    else:
        assert p.active == p.total and p.experts == 0 and report.summary.experts is None


def _walk(node: Any) -> list[Any]:
    return [node] + [n for child in node.children for n in _walk(child)]


@pytest.mark.parametrize("name", list(FAMILIES))
def test_cache_bytes_equal_transformers_cache_after_a_forward(name: str, family_models: dict[str, Any]) -> None:
    import torch

    from llmscope.bench.benchmark import cache_bytes

    model = family_models[name]
    tokens, batch = 21, 2  # past every window (8)
    with torch.no_grad():
        output = model(torch.randint(0, 100, (batch, tokens)), use_cache=True)
    measured = held_bytes(output.past_key_values)
    predicted = cache_size(model.config, tokens, batch, "float32")
    assert predicted.total_bytes == measured
    assert cache_bytes(output.past_key_values) == measured  # what bench-cache reports as measured
    if name in ("gemma2", "gpt_oss"):
        sliding = [g for g in predicted.groups if g.kind == "sliding"]
        assert sliding and sliding[0].window == 8 and sliding[0].positions == 7  # window - 1 kept
    if name == "deepseek_v3":  # latent (16) + rotary key (4) per token and layer: one "head"
        assert [g.values_per_token for g in predicted.groups] == [20]
    if name == "qwen3_next":
        linear = [g for g in predicted.groups if g.kind == "linear"]
        assert linear[0].layers == 6 and linear[0].positions == 0 and linear[0].state_bytes > 0
        longer = cache_size(model.config, tokens + 50, batch, "float32")
        assert [g.state_bytes for g in longer.groups] == [g.state_bytes for g in predicted.groups]


def test_labels(family_dirs: dict[str, Path]) -> None:
    reports = {name: describe_config_model(str(folder)) for name, folder in family_dirs.items()}
    kinds = {name: report.summary.attention.kind for name, report in reports.items()}
    assert kinds == {"mixtral": "grouped-query", "qwen3_moe": "grouped-query", "deepseek_v3": "multi-head latent",
                     "gemma2": "grouped-query", "gpt_oss": "grouped-query", "qwen3_next": "grouped-query",
                     "falcon": "multi-query"}
    deepseek = reports["deepseek_v3"].summary.attention
    assert (deepseek.latent_rank, deepseek.rope_dims) == (16, 4) and "16-dim latent" in deepseek.description
    assert reports["falcon"].summary.attention.kv_heads == 1
    assert reports["gemma2"].summary.layer_pattern == "sliding 8 / full, alternating ×2"
    assert reports["gpt_oss"].summary.layer_pattern == "sliding 8 / full, alternating ×2"
    assert reports["qwen3_next"].summary.layer_pattern == "3 × linear / full, repeating ×2"
    assert reports["mixtral"].summary.layer_pattern == "full on all 4 layers"
    assert reports["deepseek_v3"].summary.shared_experts == 1 and reports["qwen3_next"].summary.shared_experts == 1
    assert reports["gemma2"].kv_cache.window == 8 and "keeps 7 positions" in reports["gemma2"].kv_cache.note


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


# ---------------------------------------------------------------------------------------------- planner


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


def test_planner_on_the_embedded_models_figures() -> None:
    from transformers import LlamaConfig

    config = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192,
                         tie_word_embeddings=True)
    plan = plan_memory(config, 134_515_008, PlannerSettings(batch_size=2, kv_dtype="float16",
                                                            weights_dtype="float32", gpu_memory=800 << 20))
    assert [row.tokens for row in plan.rows] == [4096, 8192] and not plan.past_context
    per_token = 2 * 30 * 3 * 64 * 2  # K and V x layers x KV heads x head dim x float16
    assert plan.rows[-1].kv_bytes == 8192 * 2 * per_token == 377_487_360
    assert plan.rows[-1].total_bytes == 4 * 134_515_008 + 377_487_360 and plan.rows[-1].fits == (False,)
    assert plan.rows[0].fits == (True,)


@pytest.mark.slow
def test_planner_on_the_embedded_model(cli) -> None:
    document = cli("architecture", "--batch-size", "2", "--kv-dtype", "float16", "--dtype", "float32",
                   "--json", "-q").json()
    plan = document["plan"]
    assert plan["weight_bytes"] == 4 * 134_515_008
    assert plan["rows"][-1]["tokens"] == 8192 and plan["rows"][-1]["kv_bytes"] == 377_487_360


def test_planner_parsing() -> None:
    assert (parse_tokens("32k"), parse_tokens("128K"), parse_tokens("4096")) == (32768, 131072, 4096)
    assert parse_memory("80GB") == parse_memory("80GiB") == 80 << 30 and parse_memory("512MB") == 512 << 20
    for bad in ("12q", "nan", "0", "-5", "1.5", "inf"):
        with pytest.raises(UsageError):
            parse_tokens(bad)
    for bad in ("lots", "80", "nan GB", "0GB"):
        with pytest.raises(UsageError):
            parse_memory(bad)
    with pytest.raises(UsageError):
        PlannerSettings(batch_size=0)
    with pytest.raises(UsageError):
        PlannerSettings(kv_dtype="int3")


@pytest.mark.parametrize("args", [("--context", "12q"), ("--batch-size", "0"), ("--kv-dtype", "int3"),
                                  ("--gpu-memory", "lots"), ("--dtype", "int8")])
def test_bad_planner_options_exit_2_before_loading(cli, args: tuple[str, str]) -> None:
    result = cli("architecture", "-m", "nobody-llmscope/not-a-model", *args)
    assert result.exit_code == 2 and args[0] in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------------------------------------- lens, bench-cache


def test_gemma_lens_applies_final_logit_softcapping(tmp_path: Path) -> None:
    import torch
    from conftest import build_tokenizer
    from transformers import AutoConfig, AutoModelForCausalLM

    from llmscope.inspection.next_token import next_token_distribution
    from llmscope.loading.loader import load_model

    tokenizer = build_tokenizer(tmp_path)
    fields = dict(FAMILIES["gemma2"], vocab_size=len(tokenizer), final_logit_softcapping=0.2,
                  pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                  eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.for_model("gemma2", **fields)).save_pretrained(str(tmp_path))
    loaded = load_model(str(tmp_path), device="cpu", dtype="float32")
    result = next_token_distribution(loaded, "The capital of France is", top_k=3, lens=True)
    last = result.lens[-1]
    assert last.top_id == result.answer.token_id
    assert last.answer_probability == pytest.approx(result.answer.probability, abs=1e-6)
    ids = torch.tensor([loaded.tokenizer("The capital of France is")["input_ids"]])
    with torch.no_grad():
        hidden = loaded.model.model(ids).last_hidden_state[0, -1]
        raw = torch.softmax(loaded.model.lm_head(hidden), dim=-1)  # without the cap
    uncapped = float(raw[result.answer.token_id])
    assert abs(uncapped - result.answer.probability) / result.answer.probability > 0.05  # the cap matters here


def test_bench_cache_formula_counts_the_window(tiny_models: dict[str, Path]) -> None:
    from llmscope.bench import benchmark
    from llmscope.loading.loader import load_model

    loaded = load_model(str(tiny_models["mistral"]), device="cpu")  # sliding window 32 on both layers
    result = benchmark.bench_cache(loaded, "The capital of France is Paris. " * 6, (4,), warmup=0, repeat=1)
    kv = result.results[0].kv_cache
    assert kv is not None and kv.tokens > 32
    assert kv.measured_bytes == kv.formula_bytes == 31 * kv.bytes_per_token  # window - 1 positions kept
    assert "window 32 - 1" in kv.note


# ---------------------------------------------------------------------------------------------- GPT-2 and the tree


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
