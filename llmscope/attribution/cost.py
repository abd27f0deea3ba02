"""What an attribution will cost before its methods run: the passes each method makes, their floating-point work,
the time that work takes at the rates real passes of the same model showed on this machine (one forward pass, and
one forward and backward pass when a gradient method is asked), and how far --max-time lets integrated gradients'
automatic steps grow. Arithmetic only; it runs nothing.

A forward pass over t tokens does about 2 x parameters x t floating-point operations (every weight once per token)
plus 4 x layers x hidden x t^2 for attention's scores and mixing; a batch row more, as much again. The rates (seconds
per operation) come from timed passes, so a slower machine, packed weights or a busy CPU are all in them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from llmscope.attribution.results import AttributionCost, MethodCost
from llmscope.attribution.settings import DEFAULT_STEPS, MAX_AUTO_STEPS, AttributionSettings
from llmscope.core.errors import UsageError

GRADIENT_METHODS = ("input-x-gradient", "integrated-gradients")


@dataclass(frozen=True)
class ModelShape:
    """What the work of a pass depends on."""

    parameters: int
    layers: int
    hidden: int


@dataclass(frozen=True)
class TimedPass:
    """One real pass of one batch row over `tokens` tokens, and the seconds it took."""

    seconds: float
    tokens: int


def forward_flops(shape: ModelShape, tokens: int, rows: int = 1) -> float:
    """Floating-point operations of one forward pass over `tokens` tokens in each of `rows` batch rows."""
    return rows * (2.0 * shape.parameters * tokens + 4.0 * shape.layers * shape.hidden * tokens * tokens)


def integrated_gradients_runs(steps: int | None, cap: int | None = None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(the runs integrated gradients makes at least, at most), in steps per run, per target: the asked steps and
    half of them; then automatic doubling up to MAX_AUTO_STEPS (steps None), or a failed check's probes at 2x
    and 4x (steps given); `cap` (the budget's) stops either."""
    asked = steps or DEFAULT_STEPS
    least = (asked // 2, asked)
    if steps is None:
        more = [asked * 2 ** k for k in range(1, 32) if asked * 2 ** k <= MAX_AUTO_STEPS]
    else:
        more = [2 * asked, 4 * asked]
    return least, least + tuple(s for s in more if cap is None or s <= cap)


def method_cost(method: str, shape: ModelShape, contexts: Sequence[int], inputs: int, settings: AttributionSettings,
                step_batch: int, cap: int | None = None) -> tuple[MethodCost, float, float]:
    """The method's passes (at least, at most) and their work in forward-pass operations (at least, at most), for
    targets whose contexts hold `contexts` tokens (attention rollout reads all `inputs` once). A gradient method's
    work is timed at the gradient rate, which holds the backward pass."""
    if method == "occlusion":
        edit = 0 if settings.occlude_with is not None else 1  # leave-one-out drops a token; replacing keeps it
        passes = sum(p + 1 for p in contexts)
        work = sum(forward_flops(shape, p) + p * forward_flops(shape, max(p - edit, 1)) for p in contexts)
        return MethodCost(method, passes, passes, "forward"), work, work
    if method == "input-x-gradient":
        work = sum(forward_flops(shape, p) for p in contexts)
        return MethodCost(method, len(contexts), len(contexts), "forward and backward"), work, work
    if method == "integrated-gradients":
        least, most = integrated_gradients_runs(settings.steps, cap)
        batch = max(step_batch, 1)
        passes = [sum(math.ceil(run / batch) for run in runs) * len(contexts) for runs in (least, most)]
        work = [sum(forward_flops(shape, p, sum(runs)) for p in contexts) for runs in (least, most)]
        return (MethodCost(method, passes[0], passes[1], "forward and backward", step_rows=(sum(least), sum(most))),
                work[0], work[1])
    work = forward_flops(shape, inputs)  # attention rollout: one pass with every layer's attention weights
    return MethodCost(method, 1, 1, "forward"), work, work


def plan_cost(shape: ModelShape, contexts: Sequence[int], inputs: int, settings: AttributionSettings,
              step_batch: int, forward: TimedPass, gradient: TimedPass | None, peak_bytes: int,
              weights_bytes: int) -> AttributionCost:
    """The cost of every asked method at the rates of the timed passes; integrated gradients' automatic steps capped
    to fit --max-time. Raises UsageError when even the least the methods must do would run past --max-time."""
    rates = {"forward": forward.seconds / forward_flops(shape, forward.tokens)}
    rates["gradient"] = gradient.seconds / forward_flops(shape, gradient.tokens) if gradient else rates["forward"]

    def rate(name: str) -> float:
        return rates["gradient" if name in GRADIENT_METHODS else "forward"]

    costs = {name: method_cost(name, shape, contexts, inputs, settings, step_batch) for name in settings.methods}
    least = sum(low * rate(name) for name, (_, low, _) in costs.items())
    cap = None
    if "integrated-gradients" in costs:
        others = least - costs["integrated-gradients"][1] * rates["gradient"]
        cap = steps_cap(shape, contexts, settings, rates["gradient"], settings.max_seconds - others)
        costs["integrated-gradients"] = method_cost("integrated-gradients", shape, contexts, inputs, settings,
                                                    step_batch, cap)
    most = sum(high * rate(name) for name, (_, _, high) in costs.items())
    cost = AttributionCost(methods=tuple(cost for cost, _, _ in costs.values()), seconds=least, max_seconds=most,
                           peak_bytes=peak_bytes, weights_bytes=weights_bytes, budget_seconds=settings.max_seconds,
                           steps_cap=cap, forward_seconds=forward.seconds, forward_tokens=forward.tokens,
                           gradient_seconds=gradient.seconds if gradient else None,
                           gradient_tokens=gradient.tokens if gradient else None)
    if least > settings.max_seconds:
        raise UsageError(f"attribute would take about {seconds_text(least)} at the least ({passes_text(cost)}), "
                         f"past --max-time {settings.max_seconds:g} s",
                         hint=f"raise --max-time to {math.ceil(least * 1.5)} to pay for it, or ask for less: fewer "
                              "--method, fewer --steps, fewer targets (-n) or a shorter prompt")
    return cost


def steps_cap(shape: ModelShape, contexts: Sequence[int], settings: AttributionSettings, rate: float,
              budget: float) -> int:
    """The most steps integrated gradients may reach (doubling, or probing a failed check) within `budget`
    seconds: the last run of its ladder whose running total still fits, never below the asked steps."""
    least, most = integrated_gradients_runs(settings.steps)
    total = 0.0
    cap = least[-1]
    for index, run in enumerate(most):
        total += sum(forward_flops(shape, p, run) for p in contexts) * rate
        if total > budget and index >= len(least):
            break
        cap = max(cap, run)
    return cap


def seconds_text(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def passes_text(cost: AttributionCost) -> str:
    """"occlusion 7 forward passes, integrated-gradients 2 to 10 forward and backward passes (48 to 496 step
    rows), ..." """
    parts = []
    for method in cost.methods:
        count = str(method.passes) if method.passes == method.max_passes else f"{method.passes} to {method.max_passes}"
        rows = ""
        if method.step_rows is not None:
            low, high = method.step_rows
            rows = f" ({low} step rows)" if low == high else f" ({low} to {high} step rows)"
        parts.append(f"{method.method} {count} {method.kind} pass{'es' if method.max_passes != 1 else ''}{rows}")
    return ", ".join(parts)
