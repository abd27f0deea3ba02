"""Tiny random causal LMs and their tokenizer, built on the spot: the fast tier's models. A byte-level BPE tokenizer
trained on CORPUS with ChatML special tokens, and small configs of several architectures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "The capital of France is Paris.", "The capital of Italy is Rome.", "Write an email to Sarah.",
    "Hello world! Tokens, ids and pieces: 12345 + 678 = 13023.", "Ünïcödé text, emoji 🙂 and tabs\tand\nnewlines.",
    "def main():\n    return 0\n", "Attention heads share keys and values in grouped-query attention.",
] * 20

# Small configs of several architectures, as transformers names their fields.
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "llama": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True),
    "qwen2": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=1, max_position_embeddings=256, tie_word_embeddings=False),
    "gpt2": dict(n_embd=64, n_layer=2, n_head=4, n_positions=256),
    "phi3": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=4, max_position_embeddings=256, sliding_window=64, pad_token_id=0,
                 tie_word_embeddings=False),
    "mistral": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=256, sliding_window=32),
}


def build_tokenizer(folder: Path) -> Any:
    """A byte-level BPE tokenizer (lossless) with ChatML special tokens and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(CORPUS, trainer)
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|endoftext|>",
                                        eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        unk_token="<|endoftext|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def build_tiny_model(folder: Path, model_type: str = "llama", seed: int = 0, **overrides: Any) -> Path:
    """Write a tiny random causal LM of the given architecture, with the tokenizer above, to `folder`
    (`overrides`: config fields that replace TINY_CONFIGS', e.g. n_positions=40)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(folder)
    fields = dict(TINY_CONFIGS[model_type], **overrides)
    fields.update(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    fields.setdefault("pad_token_id", tokenizer.pad_token_id)
    config = AutoConfig.for_model(model_type, **fields)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(str(folder))
    return folder


def write_config_folders(tmp_path_factory: pytest.TempPathFactory, families: dict[str, dict[str, Any]]
                         ) -> dict[str, Path]:
    """config.json alone for each model type in `families` (fields as transformers names them): what
    `architecture -m folder` reads."""
    from transformers import AutoConfig

    folders = {}
    for name, fields in families.items():
        folder = tmp_path_factory.mktemp(f"config-{name}")
        AutoConfig.for_model(name, **fields).save_pretrained(str(folder))
        folders[name] = folder
    return folders
