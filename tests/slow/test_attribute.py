"""attribute on the embedded SmolLM2: "The capital of France is" -> " Paris", completeness under 1%."""

from __future__ import annotations

import math
from typing import Any

import pytest

from llmscope.attribution.attribute import attribute
from llmscope.attribution.settings import AttributionSettings

# Every test here needs gradients: inference mode off, even when an earlier test left it on.
pytestmark = pytest.mark.usefixtures("outside_inference_mode")

PROMPT = "The capital of France is"


def gradient_ready(loaded: Any) -> Any:
    """The shared fixture's model, or a fresh load when it was loaded while a test had left inference mode on (a
    partly consumed generator holding `with torch.inference_mode()` leaks it): such weights cannot take gradients."""
    import torch

    from llmscope.loading.loader import load_model

    if not any(p.is_inference() for p in loaded.model.parameters()):
        return loaded
    with torch.inference_mode(False):
        return load_model(None, device="cpu", dtype="float32", quantize="none")


def method(result: Any, name: str) -> Any:
    return next(m for m in result.methods if m.method == name)


@pytest.mark.slow
def test_capital_of_france_on_the_embedded_model(embedded_model: Any) -> None:
    result = attribute(gradient_ready(embedded_model), PROMPT, AttributionSettings())
    assert [t.text for t in result.targets] == [" Paris"]
    assert result.targets[0].logprob == pytest.approx(math.log(0.7725), abs=2e-3)
    check = method(result, "integrated-gradients").completeness[0]
    assert check.relative_error < 0.01 and check.converged
    # 32 steps sum to within 1%, but some tokens still move by more than 5% against 16: the steps double once
    assert check.steps == 64 and check.compared_steps == 32 and check.unsettled == () and check.largest_move < 0.05
    occlusion = method(result, "occlusion")
    assert len(occlusion.matrix[0]) == 5 and result.tokens == ("The", " capital", " of", " France", " is")
