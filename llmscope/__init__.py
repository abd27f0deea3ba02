"""llmscope: look inside causal language models from the command line and from Python.
This module exposes the version and lazy access to the library functions; it imports no torch."""

from __future__ import annotations

import os as _os

# Torch's OpenMP threads wait for work passively (sleep) instead of spinning: a spinning thread holds a core that
# another process, or a thread of ours that the scheduler put aside, needs. Measured on 2 cores with other work
# running (load average ~10): packed decode at 2 threads 0.28 tok/s spinning, 8-12 tok/s passive. libgomp reads
# this once, when torch is first imported, so it is set here; a value the user set wins (OMP_WAIT_POLICY=ACTIVE).
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (Ctrl-C at start-up is one line sooner)
if TYPE_CHECKING:  # never run: the lazy names for type checkers and the API page's griffe (`X as X`: a re-export)
    from typing import Any

    from llmscope.architecture.describe import describe_config_model as describe_config_model
    from llmscope.attention.pick import AttentionSettings as AttentionSettings
    from llmscope.attention.weights import attention_weights as attention_weights
    from llmscope.attribution.attribute import attribute as attribute
    from llmscope.attribution.settings import AttributionSettings as AttributionSettings
    from llmscope.bench.benchmark import bench_cache as bench_cache
    from llmscope.core.command_settings import GenerationSettings as GenerationSettings
    from llmscope.generation.decoding import decode_steps as decode_steps
    from llmscope.generation.generate import generate as generate
    from llmscope.generation.generate import generate_many as generate_many
    from llmscope.inspection.comparison import CompareSettings as CompareSettings
    from llmscope.inspection.comparison import compare_texts as compare_texts
    from llmscope.inspection.next_token import next_token_distribution as next_token_distribution
    from llmscope.inspection.scoring import ScoreSettings as ScoreSettings
    from llmscope.inspection.scoring import score_text as score_text
    from llmscope.loading.loader import load_config as load_config
    from llmscope.loading.loader import load_model as load_model
    from llmscope.loading.loader import load_tokenizer as load_tokenizer
    from llmscope.loading.loader import resolve_model_spec as resolve_model_spec
    from llmscope.loading.tokenization import decode_ids as decode_ids
    from llmscope.loading.tokenization import tokenize_text as tokenize_text
    from llmscope.system.environment import collect_environment as collect_environment

__version__ = "0.1.0"

_LAZY = {
    "load_model": "llmscope.loading.loader",
    "load_tokenizer": "llmscope.loading.loader",
    "load_config": "llmscope.loading.loader",
    "resolve_model_spec": "llmscope.loading.loader",
    "generate": "llmscope.generation.generate",
    "generate_many": "llmscope.generation.generate",
    "decode_steps": "llmscope.generation.decoding",
    "tokenize_text": "llmscope.loading.tokenization",
    "decode_ids": "llmscope.loading.tokenization",
    "next_token_distribution": "llmscope.inspection.next_token",
    "score_text": "llmscope.inspection.scoring",
    "compare_texts": "llmscope.inspection.comparison",
    "attention_weights": "llmscope.attention.weights",
    "describe_config_model": "llmscope.architecture.describe",
    "bench_cache": "llmscope.bench.benchmark",
    "collect_environment": "llmscope.system.environment",
    "attribute": "llmscope.attribution.attribute",
    # the settings the functions above take (frozen dataclasses that check themselves when built)
    "GenerationSettings": "llmscope.core.command_settings",
    "ScoreSettings": "llmscope.inspection.scoring",
    "CompareSettings": "llmscope.inspection.comparison",
    "AttentionSettings": "llmscope.attention.pick",
    "AttributionSettings": "llmscope.attribution.settings",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'llmscope' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module_name), name)
