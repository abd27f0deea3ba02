"""Independent forward passes the tests check llmscope's figures against: plain model calls, no llmscope code."""

from __future__ import annotations

from typing import Any


def log_probabilities(loaded: Any, ids: list[int]) -> Any:
    """log-softmax of the model's logits at every position of `ids` (float32)."""
    import torch

    with torch.inference_mode():
        return torch.log_softmax(loaded.model(torch.tensor([ids])).logits[0].float(), dim=-1)


def model_loss(loaded: Any, ids: list[int], labels: list[int] | None = None) -> float:
    """transformers' own mean cross-entropy of `labels` (default: `ids`) under the model."""
    import torch

    with torch.inference_mode():
        return float(loaded.model(torch.tensor([ids]), labels=torch.tensor([labels or ids])).loss)
