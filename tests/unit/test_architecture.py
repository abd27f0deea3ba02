"""`architecture`'s figures from a config alone (Phi-3-mini's own config.json: parameters, KV cache, sliding
window, torch's print of the model) and on every tiny architecture, checked against the real model's counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmscope.architecture.describe import (
    build_empty_model,
    describe_config_model,
)
from llmscope.loading.loader import count_parameters, load_config
from llmscope.render.architecture import tree_text


@pytest.fixture(scope="module")
def phi3(phi3_dir: Path):
    return describe_config_model(str(phi3_dir))


def test_phi3_figures_from_config_alone(phi3) -> None:
    s = phi3.summary
    assert phi3.parameters.total == 3_821_079_552
    assert (s.model_class, s.model_type, s.layers, s.hidden_size, s.intermediate_size, s.vocab_size) == (
        "Phi3ForCausalLM", "phi3", 32, 3072, 8192, 32064)
    assert (s.attention.heads, s.attention.kv_heads, s.attention.head_dim, s.attention.kind) == (32, 32, 96,
                                                                                                  "multi-head")
    assert s.context_length == 4096 and s.sliding_window == 2047 and s.sliding_window_layers == 32
    assert s.rope_theta == 10000.0 and s.positional_encoding.startswith("rotary")
    assert s.activation == "silu" and s.norm_eps == 1e-05 and s.norm.startswith("RMSNorm")
    assert not s.tied_embeddings and s.dtype == "bfloat16" and s.devices == ("meta",)


def test_phi3_parameter_split_by_hand(phi3) -> None:
    hidden, inner, layers, vocab = 3072, 8192, 32, 32064
    p = phi3.parameters
    assert p.embeddings == vocab * hidden and p.lm_head == vocab * hidden  # untied: both counted
    assert p.attention == layers * (hidden * 3 * hidden + hidden * hidden)  # qkv_proj + o_proj
    assert p.mlp == layers * (hidden * 2 * inner + inner * hidden)  # gate_up_proj + down_proj
    assert p.norms == (2 * layers + 1) * hidden and p.other == 0
    assert p.memory_bytes == {"float32": 4 * p.total, "bfloat16": 2 * p.total, "int8": p.total,
                              "4-bit": p.total // 2}


def test_phi3_kv_cache_and_sliding_window(phi3) -> None:
    kv = phi3.kv_cache
    per_token = 2 * 32 * 32 * 96 * 2  # K and V x layers x KV heads x head dim x bfloat16
    assert kv.dtype == "bfloat16" and kv.bytes_per_token == per_token == 393_216
    assert kv.saving == 0 and kv.full_mha_bytes_per_token == per_token
    assert [point.tokens for point in kv.points] == [1024, 4096]
    assert kv.points[0].bytes == 1024 * per_token
    assert kv.points[1].bytes == 2046 * per_token  # transformers' sliding cache keeps window - 1 = 2,046 positions
    assert kv.window == 2047 and "2,047" in kv.note


def test_phi3_tree_is_torchs_print_model(phi3, phi3_dir: Path) -> None:
    text = tree_text(phi3.tree)
    assert text == str(build_empty_model(load_config(str(phi3_dir))))
    for line in ("(embed_tokens): Embedding(32064, 3072, padding_idx=32000)",
                 "(0-31): 32 x Phi3DecoderLayer(",
                 "(qkv_proj): Linear(in_features=3072, out_features=9216, bias=False)",
                 "(gate_up_proj): Linear(in_features=3072, out_features=16384, bias=False)",
                 "(down_proj): Linear(in_features=8192, out_features=3072, bias=False)",
                 "(post_attention_layernorm): Phi3RMSNorm((3072,), eps=1e-05)",
                 "(lm_head): Linear(in_features=3072, out_features=32064, bias=False)"):
        assert line in text
    layers = phi3.tree.children[0].children[1]
    block = layers.children[0]
    assert (layers.class_name, block.name, block.repeat, block.class_name) == ("ModuleList", "0-31", 32,
                                                                               "Phi3DecoderLayer")
    assert block.total_parameters == layers.parameters == 32 * 113_252_352


@pytest.mark.parametrize("name", ["llama", "qwen2", "gpt2", "phi3", "mistral"])
def test_tiny_models_config_figures_match_the_real_model(tiny_models: dict[str, Path], name: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    folder = tiny_models[name]
    report = describe_config_model(str(folder))
    real = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    config = real.config
    assert report.parameters.total == count_parameters(real)
    groups = report.parameters
    assert groups.embeddings + groups.attention + groups.mlp + groups.norms + groups.lm_head + groups.other == \
        groups.total
    assert groups.attention > 0 and groups.mlp > 0 and groups.norms > 0 and groups.other == 0
    assert report.summary.layers == config.num_hidden_layers == 2
    assert report.summary.attention.heads == config.num_attention_heads == 4
    assert report.summary.vocab_size == config.vocab_size
    assert report.summary.tied_embeddings == (real.lm_head.weight is real.get_input_embeddings().weight)
    assert (groups.lm_head == 0) == report.summary.tied_embeddings
    assert tree_text(report.tree) == str(real)


def test_tiny_attention_kinds_positions_and_windows(tiny_models: dict[str, Path]) -> None:
    reports = {name: describe_config_model(str(folder)) for name, folder in tiny_models.items()}
    assert reports["llama"].summary.attention.description == "grouped-query: 4 query heads share 2 KV heads, " \
                                                             "groups of 2"
    assert reports["qwen2"].summary.attention.kind == "multi-query"
    assert reports["gpt2"].summary.attention.kind == "multi-head"
    assert reports["gpt2"].summary.positional_encoding == "learned absolute (transformer.wpe: 256 positions)"
    assert reports["gpt2"].summary.norm.startswith("LayerNorm")
    assert reports["llama"].summary.positional_encoding.startswith("rotary (RoPE)")
    mistral = reports["mistral"].kv_cache
    per_token = 2 * 2 * 2 * 16 * mistral.bytes_per_value
    assert mistral.window == 32 and mistral.bytes_per_token == per_token
    assert mistral.points[-1].tokens == 256 and mistral.points[-1].bytes == 31 * per_token  # window - 1 kept
    assert mistral.points[-1].full_mha_bytes == 31 * 2 * per_token and mistral.saving == 0.5
    assert reports["qwen2"].kv_cache.window is None and reports["qwen2"].kv_cache.saving == 0.75
    llama_tree = reports["llama"].tree
    assert [child.name for child in llama_tree.children] == ["model", "lm_head"]
    assert llama_tree.children[1].tied_to == "model.embed_tokens.weight"
