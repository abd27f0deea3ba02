"""attribute says what it will cost before its methods run (passes per method, time at the rate real passes showed,
peak memory) and refuses past --max-time; integrated gradients' automatic steps grow only as far as the budget
lets them. The estimate scales with parameters, layers, prompt length, methods and steps. Fast tier: the
arithmetic on made-up shapes and rates, the command on a tiny model."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from llmscope.core.errors import UsageError

RATE = 1e-10  # seconds per floating-point operation: what a timed pass would show


def shape(parameters: int = 135_000_000, layers: int = 30, hidden: int = 576) -> Any:
    """A model's shape (the embedded SmolLM2's by default)."""
    from llmscope.attribution.cost import ModelShape

    return ModelShape(parameters=parameters, layers=layers, hidden=hidden)


def timed(model: Any, tokens: int = 8, rows: int = 1, per_pass: float = 0.0) -> Any:
    """A pass as long as RATE says (plus a fixed per_pass): the machine is the same whatever the model."""
    from llmscope.attribution.cost import forward_flops
    from llmscope.attribution.results import TimedPass

    return TimedPass("forward", per_pass + RATE * forward_flops(model, tokens, rows), tokens, rows)


def estimate(model: Any = None, contexts: tuple[int, ...] = (6,), per_pass: float = 0.0, **settings: Any) -> Any:
    from llmscope.attribution.cost import plan_cost
    from llmscope.attribution.settings import AttributionSettings

    model = model or shape()
    options = AttributionSettings(**{"max_seconds": 1e9, **settings})
    gradient = (timed(model, per_pass=per_pass), timed(model, rows=16, per_pass=per_pass))
    return plan_cost(model, contexts, max(contexts), options, 16, timed(model), gradient, 0, 0)


def test_the_estimate_grows_with_the_model_the_prompt_the_methods_and_the_steps() -> None:
    base = estimate().seconds
    assert estimate(shape(8_000_000_000, 32, 4096)).seconds > 50 * base  # an 8B model, same machine
    assert estimate(shape(layers=60)).seconds > base  # more layers: more attention work
    assert estimate(contexts=(24,)).seconds > 3.5 * base  # four times the prompt
    assert estimate(contexts=(6, 7, 8)).seconds > 2.5 * base  # three targets (-n 3)
    assert estimate(methods=("occlusion",)).seconds < estimate(methods=("occlusion", "input-x-gradient")).seconds
    assert estimate(steps=64).seconds > 1.9 * estimate(steps=32, methods=("integrated-gradients",)).seconds
    # integrated gradients: 16 + 32 rows at least; automatic doubling up to 256: 16 + 32 + 64 + 128 + 256 rows
    [ig] = [m for m in estimate().methods if m.method == "integrated-gradients"]
    assert ig.step_rows == (48, 496) and ig.kind == "forward and backward"
    [occlusion] = [m for m in estimate(contexts=(6, 7)).methods if m.method == "occlusion"]
    assert occlusion.passes == 7 + 8  # the full context and each token left out, per target


def test_a_fixed_cost_per_pass_is_told_from_the_cost_per_row() -> None:
    """A backward pass through packed weights dequantizes them once per pass: two timed passes of 1 and 16 rows
    separate that from the work per row, and integrated gradients' 48 rows in 3 passes of 16 pay it 3 times."""
    from llmscope.attribution.cost import PassRate

    rate = PassRate.timed(shape(), timed(shape(), per_pass=2.0), timed(shape(), rows=16, per_pass=2.0))
    assert rate.per_pass == pytest.approx(2.0) and rate.per_flop == pytest.approx(RATE)
    ig = {"methods": ("integrated-gradients",), "steps": 32}
    extra = estimate(per_pass=2.0, **ig).seconds - estimate(**ig).seconds
    assert extra == pytest.approx(2.0 * 3)  # runs of 16 and 32 steps: 1 + 2 passes of up to 16 rows


def test_the_budget_caps_the_automatic_steps_and_refuses_what_cannot_fit() -> None:
    from llmscope.attribution.cost import forward_flops

    work = {run: RATE * forward_flops(shape(), 6, run) for run in (16, 32, 64, 128, 256)}  # no fixed cost per pass
    only_ig = {"methods": ("integrated-gradients",)}
    assert estimate(**only_ig).steps_cap == 256
    budget = work[16] + work[32] + work[64] * 1.01  # room for the doubling to 64, not for 128
    capped = estimate(max_seconds=budget, **only_ig)
    assert capped.steps_cap == 64 and capped.methods[0].step_rows == (48, 112)
    assert capped.max_seconds <= budget
    with pytest.raises(UsageError, match=r"past --max-time 0\.01 s") as refused:
        estimate(max_seconds=0.01, **only_ig)
    asked = int(re.search(r"raise --max-time to (\d+)", refused.value.hint or "").group(1))  # type: ignore[union-attr]
    assert estimate(max_seconds=asked, **only_ig).seconds <= asked


def test_settle_stops_doubling_at_the_cap() -> None:
    from llmscope.attribution.methods import Integral, settle

    runs: list[int] = []

    def never_converges(steps: int) -> Integral:
        runs.append(steps)
        return Integral(steps, (0.0, float(steps)), float(steps), 1.0)

    settle(never_converges, None, cap=64)
    assert runs == [16, 32, 64]
    runs.clear()
    settle(never_converges, 8, cap=16)  # a given --steps 8 that fails probes 16, and 32 only with room for it
    assert runs == [4, 8, 16]


def test_the_plan_is_printed_before_the_methods_run(cli: Any, tiny_model_dir: Path) -> None:
    result = cli("attribute", "The capital of France is", "-m", tiny_model_dir, "--steps", "4", "--json")
    assert result.exit_code == 0, result.stderr
    cost = result.json()["cost"]
    passes = {m["method"]: (m["passes"], m["max_passes"]) for m in cost["methods"]}
    targets = result.json()["targets"]
    context = targets[0]["position"]
    assert passes["occlusion"] == (context + 1, context + 1) and passes["attention-rollout"] == (1, 1)
    assert [m["step_rows"] for m in cost["methods"] if m["method"] == "integrated-gradients"] == [[6, 30]]
    forward, one_row, batched = cost["timed_passes"]
    assert (forward["kind"], forward["tokens"], forward["rows"]) == ("forward", context + 1, 1)
    assert (one_row["tokens"], one_row["rows"], batched["rows"]) == (context, 1, 2)  # --steps 4: runs of 2 and 4
    assert cost["seconds"] > 0 and cost["peak_bytes"] > cost["weights_bytes"] > 0
    line = next(line for line in result.stderr.splitlines() if line.startswith("about to run:"))
    assert f"occlusion {context + 1} forward passes" in line and "peak memory about" in line
    assert "--max-time 300 s" in line


def test_a_run_past_max_time_is_refused_before_the_methods(cli: Any, tiny_model_dir: Path) -> None:
    result = cli("attribute", "The capital of France is", "-m", tiny_model_dir, "--max-time", "0.000001")
    assert result.exit_code == 2 and result.stdout == ""
    assert "past --max-time 1e-06 s" in result.stderr and "raise --max-time to" in result.stderr
    assert "about to run" not in result.stderr
    bad = cli("attribute", "Hi", "-m", "/nonexistent/llmscope-model", "--max-time", "0")
    assert bad.exit_code == 2 and "--max-time must be in (0, 1e+09]" in bad.stderr
