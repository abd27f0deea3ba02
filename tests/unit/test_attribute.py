"""attribute's methods against independent computations on a tiny llama (finite differences, a hand-written
Riemann sum, score's log-probabilities), per-token convergence of integrated gradients, memory-sized step batches."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from llmscope.attribution.attribute import attribute
from llmscope.attribution.settings import AttributionSettings
from llmscope.core.errors import UsageError

# Every test here needs gradients: inference mode off, even when an earlier test left it on.
pytestmark = pytest.mark.usefixtures("outside_inference_mode")

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def tiny64(tiny_model_dir: Path) -> Any:
    """The tiny llama in float64: finite differences and quadrature sums agree with autograd to ~1e-10."""
    import torch

    from llmscope.loading.loader import load_model

    with torch.inference_mode(False):  # another test may have left it on (see gradient_ready)
        loaded = load_model(str(tiny_model_dir), device="cpu", dtype="float32", quantize="none")
        loaded.model.double()
    return loaded


@pytest.fixture(scope="module")
def tiny32(tiny_model_dir: Path) -> Any:
    import torch

    from llmscope.loading.loader import load_model

    with torch.inference_mode(False):
        return load_model(str(tiny_model_dir), device="cpu", dtype="float32", quantize="none")


def function_of(loaded: Any, target_id: int, contrast_id: int | None = None) -> Any:
    """log p(target | embeddings), written here from scratch (not the library's function)."""
    import torch

    def f(embeddings: Any) -> Any:
        logits = loaded.model(inputs_embeds=embeddings, use_cache=False).logits[:, -1]
        logprobs = torch.log_softmax(logits.double(), dim=-1)
        value = logprobs[:, target_id]
        return value - logprobs[:, contrast_id] if contrast_id is not None else value

    return f


def embeddings_of(loaded: Any, ids: tuple[int, ...]) -> Any:
    import torch

    with torch.no_grad():
        return loaded.model.get_input_embeddings()(torch.tensor([ids])).detach()


def method(result: Any, name: str) -> Any:
    return next(m for m in result.methods if m.method == name)


def gradient_at(f: Any, points: Any) -> Any:
    import torch

    points = points.clone().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(f(points).sum(), points)
    return grad


def _fake_runs(move: Any, calls: list[int]) -> Any:
    """Runs whose sum is exact at every step count (completeness 0%) while tokens 1 and 2 trade `move(steps)`."""
    from llmscope.attribution.methods import Integral

    def compute(steps: int) -> Integral:
        calls.append(steps)
        values = (0.0, 1.0 + move(steps), 1.0 - move(steps), 0.5)
        return Integral(steps=steps, values=values, total=sum(values[1:]), expected=2.5)

    return compute


def _tiny_plan(tiny32: Any, tokens: int) -> Any:
    from llmscope.attribution.memory import plan_method

    return plan_method("integrated-gradients", tiny32.config, tokens, 32, 32, None, 0)


def test_input_x_gradient_equals_finite_differences(tiny64: Any) -> None:
    import torch

    result = attribute(tiny64, PROMPT, AttributionSettings(methods=("input-x-gradient",)))
    target = result.targets[0]
    x = embeddings_of(tiny64, result.ids)
    f = function_of(tiny64, target.token_id)
    h = 1e-2  # the five-point stencil's error is O(h^4); transformers' RMSNorm runs in float32 even here

    def scaled(i: int, by: float) -> float:
        point = x.clone()
        point[:, i] *= 1 + by
        return float(f(point)[0])

    expected = []
    with torch.no_grad():
        for i in range(len(result.ids)):  # d/de f(x with x_i scaled by 1 + e) at 0 = grad_i . x_i
            expected.append((-scaled(i, 2 * h) + 8 * scaled(i, h) - 8 * scaled(i, -h) + scaled(i, -2 * h)) / (12 * h))
    assert method(result, "input-x-gradient").matrix[0] == pytest.approx(expected, abs=1e-4)


def test_integrated_gradients_equals_a_hand_written_riemann_sum(tiny64: Any) -> None:
    import torch

    settings = AttributionSettings(methods=("integrated-gradients",), steps=64, baseline="eos")
    result = attribute(tiny64, PROMPT, settings)
    target = result.targets[0]
    x = embeddings_of(tiny64, result.ids)
    eos = tiny64.tokenizer.eos_token_id
    baseline = tiny64.model.get_input_embeddings().weight[eos].detach().expand_as(x).clone()
    baseline[:, 0] = x[:, 0]  # the first position is held
    f = function_of(tiny64, target.token_id)
    steps = 2000  # midpoint rule: error O(1/steps²), far below 1e-4 on this smooth path
    alphas = (torch.arange(steps, dtype=torch.float64) + 0.5) / steps
    grads = gradient_at(f, baseline + alphas[:, None, None] * (x - baseline))
    riemann = ((x - baseline) * grads.mean(dim=0, keepdim=True)).sum(dim=-1)[0].tolist()
    row = method(result, "integrated-gradients").matrix[0]
    assert row[0] is None  # held, not attributed
    assert row[1:] == pytest.approx(riemann[1:], abs=1e-4)
    check = method(result, "integrated-gradients").completeness[0]
    with torch.no_grad():
        difference = float(f(x)[0] - f(baseline)[0])
    assert check.expected == pytest.approx(difference, abs=1e-9)
    assert check.attribution_sum == pytest.approx(sum(riemann), abs=1e-4)
    assert check.converged and check.steps == 64


def test_occlusion_equals_score_log_probabilities(tiny32: Any) -> None:
    from llmscope.inspection.scoring import logprob_chunks

    result = attribute(tiny32, PROMPT, AttributionSettings(methods=("occlusion",)))
    target = result.targets[0]
    ids = list(result.ids)

    def scored(context: list[int]) -> float:  # what `score` computes for target after this context
        chunk = list(logprob_chunks(tiny32, tuple(context), [(0, len(context), len(context))], next_token=True))[-1]
        return float(chunk.logprobs[-1, target.token_id])

    full = scored(ids)
    assert target.logprob == pytest.approx(full, abs=1e-6)
    expected = [full - scored(ids[:i] + ids[i + 1:]) for i in range(len(ids))]
    assert list(method(result, "occlusion").matrix[0]) == expected  # exactly: the same float32 arithmetic
    occluder = tiny32.tokenizer.decode([ids[-1]])  # one token of this tokenizer
    replaced = attribute(tiny32, PROMPT, AttributionSettings(methods=("occlusion",), occlude_with=occluder))
    expected = [full - scored([*ids[:i], ids[-1], *ids[i + 1:]]) for i in range(len(ids))]
    assert list(method(replaced, "occlusion").matrix[0]) == expected
    assert method(replaced, "occlusion").parameters["mode"] == "replace"


def test_contrastive_is_the_difference_of_two_single_target_runs(tiny64: Any) -> None:
    methods = ("occlusion", "input-x-gradient", "integrated-gradients")
    ids = tiny64.tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    one_token, other_token = (tiny64.tokenizer.decode([i]) for i in ids[1:3])  # single tokens of this tokenizer
    both = attribute(tiny64, PROMPT, AttributionSettings(methods=methods, target=one_token, contrast=other_token,
                                                         steps=16))
    paris = attribute(tiny64, PROMPT, AttributionSettings(methods=methods, target=one_token, steps=16))
    rome = attribute(tiny64, PROMPT, AttributionSettings(methods=methods, target=other_token, steps=16))
    assert len(both.targets) == len(paris.targets) == len(rome.targets) == 1
    assert both.target_function == "log p(target) - log p(contrast)"
    for name in methods:
        for k in range(len(both.targets)):
            row, one, two = (method(r, name).matrix[k] for r in (both, paris, rome))
            difference = [None if a is None else a - b for a, b in zip(one, two)]
            assert [v is None for v in row] == [v is None for v in difference]
            assert [v for v in row if v is not None] == pytest.approx([v for v in difference if v is not None],
                                                                      abs=1e-6), name


def test_generated_targets_make_a_triangular_matrix(tiny32: Any) -> None:
    result = attribute(tiny32, "Hello world", AttributionSettings(methods=("occlusion", "attention-rollout"),
                                                                  new_tokens=3))
    assert result.target_source == "generated" and 1 <= len(result.targets) <= 3
    prompt_tokens = result.prompt_tokens
    for k, target in enumerate(result.targets):
        assert target.position == prompt_tokens + k
        for m in result.methods:
            row = m.matrix[k]
            assert len(row) == len(result.ids)
            assert all(v is not None for v in row[: target.position])
            assert all(v is None for v in row[target.position:])
    rollout = method(result, "attention-rollout")
    assert all(math.isclose(sum(v for v in row if v is not None), 1.0, rel_tol=1e-9) for row in rollout.matrix)


def test_gradients_run_when_a_caller_left_inference_mode_on(tiny32: Any) -> None:
    import torch

    with torch.inference_mode():  # a partly consumed generator elsewhere can leave it on
        result = attribute(tiny32, PROMPT, AttributionSettings(methods=("input-x-gradient",)))
    assert all(v is not None for v in result.methods[0].matrix[0])


def test_usage_guards(tiny32: Any) -> None:
    with pytest.raises(UsageError, match="not both"):
        AttributionSettings(target=" Paris", new_tokens=2)
    with pytest.raises(UsageError, match="exceed --max-tokens 4"):
        attribute(tiny32, PROMPT, AttributionSettings(max_tokens=4))
    with pytest.raises(UsageError, match="--contrast"):
        attribute(tiny32, PROMPT, AttributionSettings(contrast=" Paris is a city"))
    from llmscope.attribution.settings import method_list

    assert method_list(["ig,occlusion", "rollout"]) == ("integrated-gradients", "occlusion", "attention-rollout")
    with pytest.raises(UsageError, match="unknown method"):
        method_list(["saliency"])


def test_a_right_sum_with_moving_tokens_is_not_converged() -> None:
    """The sum alone once said converged while single tokens still moved."""
    from llmscope.attribution.methods import settle

    calls: list[int] = []
    run, check = settle(_fake_runs(lambda steps: 4 / steps, calls), steps=32)
    assert check.relative_error == 0.0 and not check.converged
    assert check.compared_steps == 16 and check.unsettled == (1, 2)
    assert check.largest_move == pytest.approx((4 / 16 - 4 / 32) / (1 + 4 / 32))  # 11%
    # the fix is named: 64 against 32 still moves 5.9% of the largest value, 128 against 64 3.0%
    assert check.suggested_steps == 128
    assert calls == [16, 32, 64, 128] and run.steps == 32


def test_automatic_steps_double_until_every_token_settles() -> None:
    from llmscope.attribution.methods import settle

    calls: list[int] = []
    run, check = settle(_fake_runs(lambda steps: 64 / steps**2, calls), steps=None)
    assert calls == [16, 32, 64]  # only the first comparison costs a run of its own
    assert run.steps == 64 and check.converged and check.unsettled == () and check.compared_steps == 32


def test_each_token_is_compared_with_a_run_of_half_the_steps(tiny_model_dir: Path) -> None:
    from llmscope.attribution.attribute import attribute
    from llmscope.attribution.settings import SETTLED_LIMIT, AttributionSettings
    from llmscope.loading.loader import load_model

    loaded = load_model(str(tiny_model_dir), device="cpu", dtype="float32", quantize="none")
    rows = {}
    for steps in (2, 4):
        result = attribute(loaded, PROMPT, AttributionSettings(methods=("integrated-gradients",), steps=steps,
                                                               baseline="zero"))
        rows[steps] = result.methods[0].matrix[0]
        check = result.methods[0].completeness[0]
    largest = max(abs(v) for v in rows[4][1:])
    moves = [abs(a - b) / largest for a, b in zip(rows[4][1:], rows[2][1:])]
    assert check.compared_steps == 2 and check.largest_move == pytest.approx(max(moves), rel=1e-5)
    assert check.unsettled == tuple(p + 1 for p, move in enumerate(moves) if move > SETTLED_LIMIT)


def test_the_step_batch_shrinks_to_the_memory_there_is(tiny32: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Integrated gradients once ran 640 token positions per pass whatever memory there was."""
    from llmscope.attribution.attribute import attribute
    from llmscope.attribution.settings import AttributionSettings
    from llmscope.loading import memory

    settings = AttributionSettings(methods=("integrated-gradients",), steps=8, baseline="zero")
    free = attribute(tiny32, PROMPT, settings)
    tokens = len(free.ids)
    per_step = _tiny_plan(tiny32, tokens).per_step_bytes
    monkeypatch.setattr(memory, "available_memory", lambda device="cpu": int(3.5 * per_step))
    tight = attribute(tiny32, PROMPT, settings)
    (ig_free,), (ig_tight,) = free.methods, tight.methods
    assert ig_free.parameters["step_batch"] == 8 and ig_tight.parameters["step_batch"] == 3
    assert ig_tight.parameters["planned_memory_bytes"] == 3 * per_step
    assert ig_tight.matrix[0][1:] == pytest.approx(ig_free.matrix[0][1:], abs=1e-5)  # the same integral
