"""Readers of a model's configuration that several commands need (context length, ...), in one place.
They read transformers config objects only: no weights, no torch."""

from __future__ import annotations

from typing import Any


def context_length(config: Any) -> int | None:
    """The longest sequence the model was built for, from whichever field the config uses."""
    getter = getattr(config, "get_text_config", None)
    config = getter() if callable(getter) else config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
