"""What `attribute` computes, as frozen dataclasses of plain values: the targets, one targets x inputs matrix per
method with its parameters and completeness check, and the whole result. No torch, no compute."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AttributionTarget:
    """One token the model is asked to explain, at `position` of the sequence (its context is ids[:position])."""

    position: int
    token_id: int
    text: str
    logprob: float  # log p(token | context), float32 log-softmax as `score` computes it
    contrast_id: int | None = None
    contrast_text: str | None = None
    contrast_logprob: float | None = None

    @property
    def value(self) -> float:
        """The attributed function at the real input: log p(target), minus log p(contrast) with a contrast."""
        return self.logprob - (self.contrast_logprob if self.contrast_logprob is not None else 0.0)


@dataclass(frozen=True)
class Completeness:
    """Integrated gradients' own checks: the attributions should sum to f(input) - f(baseline), and no single
    token's value should still move when the steps are halved."""

    attribution_sum: float
    expected: float  # f(input) - f(baseline)
    error: float  # |attribution_sum - expected|
    relative_error: float  # error / |expected|
    steps: int  # the steps that gave this row
    converged: bool  # relative_error <= COMPLETENESS_LIMIT and no token unsettled
    suggested_steps: int | None = None  # with a too-small --steps: the steps found to bring it under the limits
    compared_steps: int | None = None  # the run each token was compared with (half the steps); None: no comparison
    largest_move: float | None = None  # max |value(steps) - value(compared)| / max |value(steps)| over the tokens
    unsettled: tuple[int, ...] = ()  # input positions that moved by more than SETTLED_LIMIT of the largest |value|


@dataclass(frozen=True)
class MethodAttribution:
    """One method's answer: a targets x inputs matrix (None where an input is not in a target's context)."""

    method: str
    question: str  # what the method answers, in one line
    parameters: dict[str, Any]
    matrix: tuple[tuple[float | None, ...], ...]
    completeness: tuple[Completeness | None, ...]  # per target (integrated gradients only)
    top: tuple[int | None, ...]  # per target: the input position with the largest attribution
    seconds: float


@dataclass(frozen=True)
class TimedPass:
    """One real pass the cost estimate stands on: `rows` batch rows over `tokens` tokens, forward only or forward
    and backward, and the seconds it took."""

    kind: str  # "forward" or "forward and backward"
    seconds: float
    tokens: int
    rows: int = 1


@dataclass(frozen=True)
class MethodCost:
    """The passes one method makes over all targets: at least, and at most (integrated gradients' automatic steps
    or a failed check's probes)."""

    method: str
    passes: int
    max_passes: int
    kind: str  # "forward" or "forward and backward"
    step_rows: tuple[int, int] | None = None  # integrated gradients: batch rows (steps) at least, at most


@dataclass(frozen=True)
class AttributionCost:
    """What the methods were planned to cost before they ran, and what the estimate stood on."""

    methods: tuple[MethodCost, ...]
    seconds: float  # the least the methods must do, at the measured rate
    max_seconds: float  # the most (integrated gradients' steps grown as far as the budget lets them)
    peak_bytes: int  # the weights plus the hungriest method's planned memory
    weights_bytes: int
    budget_seconds: float  # --max-time
    steps_cap: int | None  # the most integrated-gradients steps the budget leaves room for (None: not asked)
    timed_passes: tuple[TimedPass, ...]  # what the rates come from: a forward pass, then the gradient ones


@dataclass(frozen=True)
class AttributionResult:
    model: str
    prompt: str
    text: str  # what the model read (after the chat template)
    chat: bool
    ids: tuple[int, ...]  # the inputs: prompt tokens, then the targets before the last one
    tokens: tuple[str, ...]  # each input token decoded on its own
    prompt_tokens: int
    target_source: str  # "next-token" (the model's own), "generated" (-n), "given" (--target)
    target_function: str
    targets: tuple[AttributionTarget, ...]
    methods: tuple[MethodAttribution, ...]
    top_agree: tuple[bool, ...]  # per target: every method picks the same top input
    seconds: float
    cost: AttributionCost | None = None  # what was planned before the methods ran


def eos_ids(tokenizer: Any, config: Any) -> set[int]:
    eos = getattr(config, "eos_token_id", None)
    eos = eos if isinstance(eos, (list, tuple)) else [eos]
    return {int(i) for i in (*eos, getattr(tokenizer, "eos_token_id", None)) if i is not None}


def disagreement(result: AttributionResult, target: int) -> dict[str, str] | None:
    """Each method's top input token for one target, when the methods do not all pick the same one."""
    if result.top_agree[target]:
        return None
    return {m.method: (result.tokens[m.top[target]] if m.top[target] is not None else "-") for m in result.methods}
