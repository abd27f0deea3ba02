"""Loading the embedded SmolLM2: its facts, the second load from the cache, a truncated GGUF reported, two processes
converting at once and a broken cache entry rebuilt."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.cli import RUNTIME, assert_one_line_error

from llmscope.loading import loader


@pytest.mark.slow
def test_embedded_model_facts(embedded_model) -> None:
    config = embedded_model.config
    assert embedded_model.parameters == 134_515_008
    assert (config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads) == (30, 9, 3)
    assert type(embedded_model.model).__name__ == "LlamaForCausalLM"
    entry = loader.gguf_cache_dir(embedded_model.spec)
    assert loader.cache_entry_is_whole(entry)
    assert (entry / "model.safetensors").is_file() and (entry / "tokenizer.json").is_file()


@pytest.mark.slow
def test_second_load_reads_the_cache(embedded_model) -> None:
    again = loader.load_model(None, device="cpu")
    assert again.from_cache is True
    assert again.parameters == 134_515_008


@pytest.mark.slow
def test_truncated_gguf_is_reported(cli, tmp_path: Path) -> None:
    source = loader.embedded_gguf_path()
    broken = tmp_path / "broken.gguf"
    with open(source, "rb") as handle:
        broken.write_bytes(handle.read(1 << 20))
    result = cli("generate", "hi", "-m", broken)
    assert_one_line_error(result, RUNTIME, "could not read the GGUF file", "corrupt or truncated")


@pytest.mark.slow
def test_concurrent_conversions_and_a_broken_cache_entry(tmp_path: Path) -> None:
    """Two processes convert the same GGUF at once: both succeed and the entry is whole; a truncated entry
    is detected and rebuilt from the GGUF file."""
    copy = tmp_path / "smol.gguf"
    shutil.copyfile(loader.embedded_gguf_path(), copy)
    cache = tmp_path / "cache"
    env = dict(os.environ, HF_HUB_OFFLINE="1", LLMSCOPE_CACHE=str(cache))
    command = [sys.executable, "-m", "llmscope", "tokenize", "--ids", "-m", str(copy), "The capital of France is"]
    generate_command = [sys.executable, "-m", "llmscope", "generate", "-m", str(copy), "--no-chat", "-n", "1",
                        "--json", "-q", "The capital of France is"]
    first = subprocess.Popen(generate_command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    second = subprocess.Popen(generate_command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    outputs = [first.communicate(timeout=600), second.communicate(timeout=600)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    assert all(json.loads(out)["token_ids"] == [7042] for out, _ in outputs)
    entries = [p for p in (cache / "gguf").iterdir() if not p.name.endswith(".tokenizer")]
    assert len(entries) == 1 and not entries[0].name.startswith(".tmp")
    assert loader.cache_entry_is_whole(entries[0])
    assert not [p for p in (cache / "gguf").iterdir() if p.name.startswith(".tmp")]

    weights = max(entries[0].glob("*.safetensors"), key=lambda path: path.stat().st_size)  # packed or float32
    with open(weights, "r+b") as handle:
        handle.truncate(weights.stat().st_size // 2)
    not_quiet = [arg for arg in generate_command if arg != "-q"]
    rebuilt = subprocess.run(not_quiet, capture_output=True, text=True, env=env, timeout=600)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "is broken" in rebuilt.stderr and "rebuilding it from the GGUF file" in rebuilt.stderr
    assert json.loads(rebuilt.stdout)["token_ids"] == [7042]
    assert loader.cache_entry_is_whole(entries[0])
    tokens = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert tokens.stdout == "504 3575 282 4649 314\n"

