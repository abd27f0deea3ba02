"""What an attribution will cost before its methods run: the passes each method makes, their floating-point work,
the time they take at the rates real passes of the same model showed on this machine, and how far --max-time lets
integrated gradients' automatic steps grow. Arithmetic only; it runs nothing.

A forward pass over t tokens does about 2 x parameters x t floating-point operations (every weight once per token)
plus 4 x layers x hidden x t^2 for attention's scores and mixing; each batch row as much again. A pass's time is a
part per operation plus a part per pass whatever its rows (a backward pass through packed weights dequantizes each
of them whole): the forward rate comes from a timed forward pass, the gradient rates from a timed forward and
backward pass of one row and one of several rows. A slower machine, packed weights or a busy CPU are all in them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from llmscope.attribution.results import AttributionCost, MethodCost, TimedPass
from llmscope.attribution.settings import DEFAULT_STEPS, MAX_AUTO_STEPS, AttributionSettings
from llmscope.core.errors import UsageError

GRADIENT_METHODS = ("input-x-gradient", "integrated-gradients")


@dataclass(frozen=True)
class ModelShape:
    """What the work of a pass depends on."""

    parameters: int
    layers: int
    hidden: int


def forward_flops(shape: ModelShape, tokens: int, rows: int = 1) -> float:
    """Floating-point operations of one forward pass over `tokens` tokens in each of `rows` batch rows."""
    return rows * (2.0 * shape.parameters * tokens + 4.0 * shape.layers * shape.hidden * tokens * tokens)


@dataclass(frozen=True)
class PassRate:
    """Seconds of a pass: per_pass whatever its size, plus per_flop for each operation of its forward work."""

    per_pass: float
    per_flop: float

    def seconds(self, shape: ModelShape, tokens: int, rows: int = 1) -> float:
        return self.per_pass + self.per_flop * forward_flops(shape, tokens, rows)

    @classmethod
    def timed(cls, shape: ModelShape, one: TimedPass, more: TimedPass | None = None) -> PassRate:
        """The rate of one timed pass (all of it per operation), or the line through a pass of one row and a
        pass of several: what grows with the rows is per operation, the rest per pass."""
        work = forward_flops(shape, one.tokens, one.rows)
        if more is None or more.rows == one.rows:
            return cls(0.0, one.seconds / work)
        per_flop = max((more.seconds - one.seconds) / (forward_flops(shape, more.tokens, more.rows) - work), 0.0)
        return cls(max(one.seconds - per_flop * work, 0.0), per_flop)


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


def run_seconds(shape: ModelShape, contexts: Sequence[int], steps: int, batch: int, rate: PassRate) -> float:
    """One integrated-gradients run of `steps` rows per target, `batch` rows per pass."""
    passes = math.ceil(steps / max(batch, 1))
    return sum(passes * rate.per_pass + rate.per_flop * forward_flops(shape, p, steps) for p in contexts)


def method_cost(method: str, shape: ModelShape, contexts: Sequence[int], inputs: int, settings: AttributionSettings,
                step_batch: int, forward: PassRate, gradient: PassRate, cap: int | None = None
                ) -> tuple[MethodCost, float, float]:
    """The method's passes and seconds (each at least, at most), for targets whose contexts hold `contexts` tokens
    (attention rollout reads all `inputs` once)."""
    if method == "occlusion":
        edit = 0 if settings.occlude_with is not None else 1  # leave-one-out drops a token; replacing keeps it
        passes = sum(p + 1 for p in contexts)
        seconds = sum(forward.seconds(shape, p) + p * forward.seconds(shape, max(p - edit, 1)) for p in contexts)
        return MethodCost(method, passes, passes, "forward"), seconds, seconds
    if method == "input-x-gradient":
        seconds = sum(gradient.seconds(shape, p) for p in contexts)
        return MethodCost(method, len(contexts), len(contexts), "forward and backward"), seconds, seconds
    if method == "integrated-gradients":
        least, most = integrated_gradients_runs(settings.steps, cap)
        passes = [sum(math.ceil(run / max(step_batch, 1)) for run in runs) * len(contexts) for runs in (least, most)]
        seconds = [sum(run_seconds(shape, contexts, run, step_batch, gradient) for run in runs)
                   for runs in (least, most)]
        return (MethodCost(method, passes[0], passes[1], "forward and backward", step_rows=(sum(least), sum(most))),
                seconds[0], seconds[1])
    seconds = forward.seconds(shape, inputs)  # attention rollout: one pass with every layer's attention weights
    return MethodCost(method, 1, 1, "forward"), seconds, seconds


def plan_cost(shape: ModelShape, contexts: Sequence[int], inputs: int, settings: AttributionSettings,
              step_batch: int, forward: TimedPass, gradient: Sequence[TimedPass], peak_bytes: int,
              weights_bytes: int) -> AttributionCost:
    """The cost of every asked method at the rates of the timed passes (`gradient`: a forward and backward pass of
    one row, and one of several when integrated gradients batches its steps); integrated gradients' automatic
    steps capped to fit --max-time. Raises UsageError when even the least the methods must do would run past
    --max-time."""
    forward_rate = PassRate.timed(shape, forward)
    gradient_rate = PassRate.timed(shape, *gradient[:2]) if gradient else forward_rate
    costs = {name: method_cost(name, shape, contexts, inputs, settings, step_batch, forward_rate, gradient_rate)
             for name in settings.methods}
    least = sum(low for _, low, _ in costs.values())
    cap = None
    if "integrated-gradients" in costs:
        others = least - costs["integrated-gradients"][1]
        cap = steps_cap(shape, contexts, settings, step_batch, gradient_rate, settings.max_seconds - others)
        costs["integrated-gradients"] = method_cost("integrated-gradients", shape, contexts, inputs, settings,
                                                    step_batch, forward_rate, gradient_rate, cap)
    most = sum(high for _, _, high in costs.values())
    cost = AttributionCost(methods=tuple(cost for cost, _, _ in costs.values()), seconds=least, max_seconds=most,
                           peak_bytes=peak_bytes, weights_bytes=weights_bytes, budget_seconds=settings.max_seconds,
                           steps_cap=cap, timed_passes=(forward, *gradient))
    if least > settings.max_seconds:
        raise UsageError(f"attribute would take about {seconds_text(least)} at the least ({passes_text(cost)}), "
                         f"past --max-time {settings.max_seconds:g} s",
                         hint=f"raise --max-time to {math.ceil(least * 1.5)} to pay for it, or ask for less: fewer "
                              "--method, fewer --steps, fewer targets (-n) or a shorter prompt")
    return cost


def steps_cap(shape: ModelShape, contexts: Sequence[int], settings: AttributionSettings, step_batch: int,
              rate: PassRate, budget: float) -> int:
    """The most steps integrated gradients may reach (doubling, or probing a failed check) within `budget`
    seconds: the last run of its ladder whose running total still fits, never below the asked steps."""
    least, most = integrated_gradients_runs(settings.steps)
    total = 0.0
    cap = least[-1]
    for index, run in enumerate(most):
        total += run_seconds(shape, contexts, run, step_batch, rate)
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
