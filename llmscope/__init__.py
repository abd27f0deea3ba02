"""llmscope: look inside causal language models from the command line and from Python.
This module exposes the version and lazy access to the library functions; it imports no torch."""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (Ctrl-C at start-up is one line sooner)
if TYPE_CHECKING:
    from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_model": "llmscope.loader",
    "load_tokenizer": "llmscope.loader",
    "load_config": "llmscope.loader",
    "resolve_model_spec": "llmscope.loader",
    "generate": "llmscope.generation",
    "generate_many": "llmscope.generation",
    "decode_steps": "llmscope.decoding",
    "tokenize_text": "llmscope.tokenization",
    "decode_ids": "llmscope.tokenization",
    "next_token_distribution": "llmscope.inspection",
    "score_text": "llmscope.scoring",
    "compare_texts": "llmscope.comparison",
    "attention_weights": "llmscope.attention",
    "describe_config_model": "llmscope.architecture",
    "bench_cache": "llmscope.benchmark",
    "collect_environment": "llmscope.environment",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'llmscope' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module_name), name)
