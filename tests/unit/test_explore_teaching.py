"""The compute functions behind the explore page's teaching views, on tiny random models: one attention head taken
apart (q, k, v as the attention function got them, with causal and sliding-window masks, GQA groups, learned or
rotary positions) and the norms of what each block writes into the residual stream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmscope.core.errors import UsageError


@pytest.fixture(scope="module")
def loaded(tiny_models: dict[str, Path]) -> dict[str, Any]:
    from llmscope.loading.loader import load_model

    return {name: load_model(str(tiny_models[name]), device="cpu", dtype="float32")
            for name in ("llama", "gpt2", "mistral")}


def redo(steps: Any) -> tuple[Any, Any]:
    """softmax(q·kᵀ × scale, causal and window mask) and weights @ v, in float64 from the captured vectors."""
    import numpy

    q, k, v = (numpy.asarray(getattr(steps, name), dtype="float64") for name in ("q", "k", "v"))
    n = q.shape[0]
    scores = q @ k.T * steps.scale
    rows, cols = numpy.indices((n, n))
    hidden = (cols > rows) | ((rows - cols >= steps.window) if steps.window else False)
    scores[hidden] = -numpy.inf
    weights = numpy.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return weights, weights @ v


@pytest.mark.parametrize("name", ["llama", "gpt2", "mistral"])
def test_head_steps_redo_the_models_own_attention(name: str, loaded: dict[str, Any]) -> None:
    import numpy

    from llmscope.attention.headsteps import head_steps
    from llmscope.attention.weights import AttentionSettings, attention_weights

    model = loaded[name]
    prompt = "the cat sat on the mat and the dog sat on the log by the door"  # over 32 tokens: past mistral's window
    ids = model.tokenizer(prompt)["input_ids"]
    assert len(ids) > 32
    steps = head_steps(model, ids, 1, 2)
    weights, output = redo(steps)
    reference = attention_weights(model, prompt, AttentionSettings(layer=1, head=2, matrix=True))
    assert numpy.abs(weights - numpy.asarray(reference.weights[0][0])).max() < 1e-6  # what `attention` shows
    assert numpy.abs(weights - numpy.asarray(steps.weights)).max() < 1e-6
    assert numpy.abs(output - numpy.asarray(steps.output)).max() < 1e-5
    assert steps.recomputed_weight_difference < 1e-6
    expected = {"llama": (1, (2, 3), None), "gpt2": (2, (2,), None), "mistral": (1, (2, 3), 32)}[name]
    assert (steps.kv_head, steps.group, steps.window) == expected
    assert steps.scale == pytest.approx(16 ** -0.5)
    if steps.window:
        last = len(ids) - 1
        assert all(steps.weights[last][key] == 0.0 for key in range(last - steps.window + 1))  # outside the window


def test_head_steps_leave_the_model_as_it_was(loaded: dict[str, Any]) -> None:
    import torch

    from llmscope.attention.headsteps import head_steps

    model = loaded["llama"]
    ids = model.tokenizer("hello world")["input_ids"]
    before = model.model.config._attn_implementation
    with torch.inference_mode():
        logits = model.model(input_ids=torch.tensor([ids])).logits
    head_steps(model, ids, 0, 1)
    with torch.inference_mode():
        again = model.model(input_ids=torch.tensor([ids])).logits
    assert model.model.config._attn_implementation == before
    assert torch.equal(logits, again)
    assert all("config" not in module.__dict__ or module.__dict__["config"] is model.model.config
               for module in model.model.modules() if hasattr(module, "layer_idx"))
    with pytest.raises(UsageError, match="head 4 is outside the model"):
        head_steps(model, ids, 0, 4)
    with pytest.raises(UsageError, match="empty"):
        head_steps(model, [], 0, 0)


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_block_norms_follow_the_hidden_states(name: str, loaded: dict[str, Any]) -> None:
    """The stream entering block i is transformers' hidden_states[i]; what a block adds is its attention plus its
    MLP output (both tiny models are plain residual blocks)."""
    import torch

    from llmscope.inspection.blocknorms import block_norms

    model = loaded[name]
    ids = model.tokenizer("hello world the cat")["input_ids"]
    norms = block_norms(model, ids)
    with torch.inference_mode():
        hidden = model.model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
    for layer, row in enumerate(norms.last):
        assert row.residual_in == pytest.approx(float(hidden[layer][0, -1].double().norm()), rel=1e-6)
        assert norms.mean[layer].residual_in == pytest.approx(float(hidden[layer][0].double().norm(dim=-1).mean()),
                                                              rel=1e-6)
    assert norms.adds_up and norms.largest_mismatch < 1e-4
    assert norms.position == len(ids) - 1 and norms.tokens == len(ids)
    assert all(row.attention is not None and row.mlp is not None for row in norms.last)
    assert all(abs(row.added) <= row.attention + row.mlp + 1e-9 for row in norms.last)  # the triangle inequality
