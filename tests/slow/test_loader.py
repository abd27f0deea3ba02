"""Loading the embedded SmolLM2: its facts, the second load from the cache, a truncated GGUF reported.
(Two processes converting one GGUF at once: tests/process/test_conversion_cache.py, on a tiny GGUF.)"""

from __future__ import annotations

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
