"""The attribution methods, registered by name (METHODS): occlusion, input x gradient and integrated gradients
(through Captum, on the input embeddings) and attention rollout. Each returns one MethodAttribution; none prints.

The attributed function of target k is log p(target_k | inputs[:position_k]) in float32 (minus log p(contrast_k)
with a contrast). Integrated gradients holds position 0 at its own embedding: with no BOS token the first token is
the model's attention sink, and moving it along the path makes the integral diverge (measured: docs, attribute).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmscope.attribution.results import AttributionTarget, Completeness, MethodAttribution, eos_ids
from llmscope.attribution.settings import (
    COMPLETENESS_LIMIT,
    DEFAULT_STEPS,
    MAX_AUTO_STEPS,
    SETTLED_LIMIT,
    AttributionSettings,
)
from llmscope.core.errors import UsageError

if TYPE_CHECKING:
    import torch

    from llmscope.loading.loader import LoadedModel

TOKENS_PER_PASS = 640  # token positions one batched forward + backward carries (integrated-gradients steps, edits)
QUADRATURE = "gausslegendre"  # Captum's rule: exact for polynomials of degree 2n-1; 4x fewer steps than Riemann here


@dataclass(frozen=True)
class Problem:
    """What every method attributes: the model, the input ids and the targets (with their positions)."""

    loaded: LoadedModel
    ids: tuple[int, ...]
    targets: tuple[AttributionTarget, ...]
    settings: AttributionSettings
    step_batch: int = 0  # integrated-gradients steps per forward + backward pass that fit the memory (0: no plan)
    steps_cap: int | None = None  # the most integrated-gradients steps --max-time leaves room for (None: no cap)


@dataclass(frozen=True)
class Method:
    """One registered method: its name, the question it answers, and how to run it."""

    name: str
    question: str
    compute: Callable[[Problem], tuple[list[list[float | None]], list[Completeness | None], dict[str, Any]]]

    def run(self, problem: Problem) -> MethodAttribution:
        started = time.perf_counter()
        rows, completeness, parameters = self.compute(problem)
        width = len(problem.ids)
        matrix = tuple(tuple(row + [None] * (width - len(row))) for row in rows)
        return MethodAttribution(method=self.name, question=self.question, parameters=parameters, matrix=matrix,
                                 completeness=tuple(completeness), top=tuple(top_position(row) for row in matrix),
                                 seconds=time.perf_counter() - started)


def top_position(row: tuple[float | None, ...]) -> int | None:
    """The input with the largest attribution (the first one on a tie); None when no input has a value."""
    best: int | None = None
    for position, value in enumerate(row):
        if value is not None and (best is None or value > row[best]):  # type: ignore[operator]
            best = position
    return best


# ---------------------------------------------------------------------------------------------- the function


def _score_rows(logits: torch.Tensor, target: AttributionTarget) -> torch.Tensor:
    """The attributed function from last-position logits [batch, vocab]: float32 log-probabilities (float64 kept)."""
    import torch

    logits = logits if logits.dtype == torch.float64 else logits.float()
    logprobs = torch.log_softmax(logits, dim=-1)
    value = logprobs[:, target.token_id]
    if target.contrast_id is not None:
        value = value - logprobs[:, target.contrast_id]
    return value


def _last_logits(loaded: LoadedModel, **inputs: Any) -> torch.Tensor:
    from llmscope.generation.decoding import forward_options

    _, keep = forward_options(loaded.model)
    return loaded.model(use_cache=False, **inputs, **keep).logits[:, -1]


def embedding_function(loaded: LoadedModel, target: AttributionTarget) -> Callable[[torch.Tensor], torch.Tensor]:
    """f(embeddings [batch, tokens, hidden]) -> [batch]: the target's function, differentiable in the embeddings."""
    return lambda embeddings: _score_rows(_last_logits(loaded, inputs_embeds=embeddings), target)


@contextlib.contextmanager
def gradients_through(model: Any, quantize: str | None = None) -> Iterator[None]:
    """Gradients for the inputs only: the weights are frozen for the duration (less memory, no weight grads).
    On packed weights (quantize not none) a backward that cannot run becomes one line naming --quantize none."""
    import torch

    frozen = [p for p in model.parameters() if p.requires_grad]
    for parameter in frozen:
        parameter.requires_grad_(False)
    try:
        with torch.enable_grad():
            yield
    except (RuntimeError, NotImplementedError) as error:
        if quantize in (None, "none"):
            raise
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UsageError(f"gradients cannot run through this model's packed --quantize {quantize} weights ({first})",
                         hint="pass --quantize none, or --method occlusion,attention-rollout") from None
    finally:
        for parameter in frozen:
            parameter.requires_grad_(True)


def timed_gradient_pass(loaded: LoadedModel, ids: tuple[int, ...], target: AttributionTarget, rows: int = 1) -> float:
    """Seconds of one forward and backward pass of `rows` rows over ids[:target.position], as the gradient methods
    run it: what their cost is planned from. Raises what a gradient through this model raises (packed weights)."""
    from llmscope.generation.decoding import synchronize

    embeddings = input_embeddings(loaded, ids[: target.position])
    function = embedding_function(loaded, target)
    synchronize(loaded.input_device)
    started = time.perf_counter()
    with gradients_through(loaded.model, loaded.info.quantize):
        x = embeddings.expand(rows, -1, -1).clone().requires_grad_(True)
        function(x).sum().backward()
    synchronize(loaded.input_device)
    return time.perf_counter() - started


def input_embeddings(loaded: LoadedModel, ids: tuple[int, ...]) -> torch.Tensor:
    """The embeddings [1, tokens, hidden] the model reads for ids, detached."""
    import torch

    check_gradients_possible(loaded)
    with torch.no_grad():
        return loaded.model.get_input_embeddings()(torch.tensor([ids], device=loaded.input_device)).detach()


def check_gradients_possible(loaded: LoadedModel) -> None:
    """Gradient methods need floating-point embeddings; packed (quantized) weights get one line naming the fix."""
    weight = getattr(loaded.model.get_input_embeddings(), "weight", None)
    if any(t.is_inference() for t in (*loaded.model.parameters(), *loaded.model.buffers())):
        raise UsageError("this model was loaded inside torch.inference_mode(): its tensors cannot take part in "
                         "gradients", hint="load it outside inference mode (torch.inference_mode(False))")
    if weight is None or not weight.dtype.is_floating_point:
        raise UsageError("gradient methods cannot run on this model's packed (quantized) weights",
                         hint="pass --quantize none, or --method occlusion,attention-rollout")


# ---------------------------------------------------------------------------------------------- occlusion


def _occlusion(problem: Problem) -> tuple[list[list[float | None]], list[Completeness | None], dict[str, Any]]:
    import torch

    loaded, settings = problem.loaded, problem.settings
    replace = None
    if settings.occlude_with is not None:
        pieces = loaded.tokenizer(settings.occlude_with, add_special_tokens=False)["input_ids"]
        if len(pieces) != 1:
            raise UsageError(f"--occlude-with {settings.occlude_with!r} is {len(pieces)} tokens, not one",
                             hint="pass a single token, e.g. ' the' or '...'; see `llmscope tokenize`")
        replace = int(pieces[0])
    rows: list[list[float | None]] = []
    with torch.inference_mode():
        for target in problem.targets:
            context = list(problem.ids[: target.position])
            edits = []
            for i in range(len(context)):
                edits.append([*context[:i], replace, *context[i + 1:]] if replace is not None else
                             context[:i] + context[i + 1:])
            if not edits[0]:  # dropping the only token leaves nothing to predict from
                rows.append([None])
                continue
            # One prompt per forward pass, as `score` runs it: the numbers are exactly score's (a batch of edits
            # would differ in the last float32 bits).
            full, *values = (float(_score_rows(_last_logits(loaded, input_ids=torch.tensor(
                [sequence], device=loaded.input_device)), target)[0]) for sequence in [context, *edits])
            rows.append([full - value for value in values])
    how = {"mode": "replace", "token": settings.occlude_with, "token_id": replace} if replace is not None else {
        "mode": "leave-one-out"}
    return rows, [None] * len(rows), how


# ---------------------------------------------------------------------------------------------- gradients


def _input_x_gradient(problem: Problem) -> tuple[list[list[float | None]], list[Completeness | None],
                                                  dict[str, Any]]:
    from captum.attr import InputXGradient

    loaded = problem.loaded
    embeddings = input_embeddings(loaded, problem.ids)
    rows: list[list[float | None]] = []
    with gradients_through(loaded.model, loaded.info.quantize):
        for target in problem.targets:
            x = embeddings[:, : target.position].clone()
            attributions = InputXGradient(embedding_function(loaded, target)).attribute(x)
            rows.append(attributions.sum(dim=-1)[0].tolist())
    return rows, [None] * len(rows), {"summed_over": "hidden dimension"}


def baseline_embeddings(loaded: LoadedModel, x: torch.Tensor, kind: str) -> torch.Tensor:
    """The integrated-gradients baseline: every position but the first replaced (mean / eos / zero embedding)."""
    import torch

    table = loaded.model.get_input_embeddings().weight
    if kind == "eos":
        eos = sorted(eos_ids(loaded.tokenizer, loaded.model.config))
        fill = table[eos[0]] if eos else torch.zeros_like(table[0])
    elif kind == "mean":
        fill = table.mean(dim=0)
    else:
        fill = torch.zeros_like(table[0])
    baseline = fill.detach().to(x.dtype).expand_as(x).clone()
    baseline[:, 0] = x[:, 0]
    return baseline


def preferred_step_batch(tokens: int) -> int:
    """Integrated-gradients steps per pass before any memory limit: TOKENS_PER_PASS token positions."""
    return max(1, TOKENS_PER_PASS // max(tokens, 1))


def integrate(loaded: LoadedModel, target: AttributionTarget, x: torch.Tensor, baseline: torch.Tensor,
              steps: int, step_batch: int = 0) -> tuple[list[float], float, float]:
    """Captum's integrated gradients for one target: (attribution per token, sum, f(x) - f(baseline)), running
    `step_batch` steps per pass (0: preferred_step_batch, no memory limit)."""
    from captum.attr import IntegratedGradients

    function = embedding_function(loaded, target)
    per_pass = min(step_batch, preferred_step_batch(x.shape[1])) if step_batch else preferred_step_batch(x.shape[1])
    attributions, delta = IntegratedGradients(function).attribute(
        x, baselines=baseline, n_steps=steps, method=QUADRATURE, internal_batch_size=min(per_pass, steps),
        return_convergence_delta=True)
    per_token = attributions.sum(dim=-1)[0]
    total = float(per_token.sum())
    return per_token.tolist(), total, total - float(delta[0])


@dataclass(frozen=True)
class Integral:
    """One integrated-gradients run of one target: the value per input token, their sum, f(x) - f(baseline)."""

    steps: int
    values: tuple[float, ...]
    total: float
    expected: float


def _run(loaded: LoadedModel, target: AttributionTarget, x: torch.Tensor, baseline: torch.Tensor, step_batch: int,
         steps: int) -> Integral:
    values, total, expected = integrate(loaded, target, x, baseline, steps, step_batch)
    return Integral(steps, tuple(values), total, expected)


def check_integral(run: Integral, compared: Integral | None, suggested: int | None = None) -> Completeness:
    """Both checks of one run: the sum against f(x) - f(baseline) (COMPLETENESS_LIMIT), and each token against
    the run with half the steps (SETTLED_LIMIT of the row's largest |value|; position 0 is held, not compared)."""
    error = abs(run.total - run.expected)
    relative = error / max(abs(run.expected), 1e-12)
    unsettled: tuple[int, ...] = ()
    largest_move = None
    if compared is not None:
        largest = max((abs(v) for v in run.values[1:]), default=0.0) or 1e-12
        moves = [abs(a - b) / largest for a, b in zip(run.values[1:], compared.values[1:])]
        largest_move = max(moves, default=0.0)
        unsettled = tuple(position + 1 for position, move in enumerate(moves) if move > SETTLED_LIMIT)
    return Completeness(attribution_sum=run.total, expected=run.expected, error=error, relative_error=relative,
                        steps=run.steps, converged=relative <= COMPLETENESS_LIMIT and not unsettled,
                        suggested_steps=suggested, compared_steps=compared.steps if compared else None,
                        largest_move=largest_move, unsettled=unsettled)


def settle(compute: Callable[[int], Integral], steps: int | None,
           cap: int | None = None) -> tuple[Integral, Completeness]:
    """Integrated gradients at the asked steps (None: automatic), each run compared with half its steps.

    Automatic: DEFAULT_STEPS, doubled until both checks pass or MAX_AUTO_STEPS (each doubling compares with the run
    before, so only the first comparison costs a run of its own). A given --steps is used as it is; when it fails,
    2x and 4x are tried (each compared with the one before) to name the steps that would pass. Neither goes past
    `cap` steps (the time budget's)."""
    asked = steps or DEFAULT_STEPS
    limit = MAX_AUTO_STEPS if cap is None else min(cap, MAX_AUTO_STEPS)
    half = compute(asked // 2) if asked >= 2 else None
    run = compute(asked)
    check = check_integral(run, half)
    if steps is None:
        while not check.converged and 2 * run.steps <= limit:
            half, run = run, compute(2 * run.steps)
            check = check_integral(run, half)
    elif not check.converged:
        previous = run
        for probe in (2 * asked, 4 * asked):
            if cap is not None and probe > cap:
                break
            trial = compute(probe)
            if check_integral(trial, previous).converged:
                check = check_integral(run, half, suggested=probe)
                break
            previous = trial
    return run, check


def _integrated_gradients(problem: Problem) -> tuple[list[list[float | None]], list[Completeness | None],
                                                     dict[str, Any]]:
    loaded, settings = problem.loaded, problem.settings
    embeddings = input_embeddings(loaded, problem.ids)
    rows: list[list[float | None]] = []
    checks: list[Completeness | None] = []
    with gradients_through(loaded.model, loaded.info.quantize):
        for target in problem.targets:
            x = embeddings[:, : target.position].clone()
            baseline = baseline_embeddings(loaded, x, settings.baseline)
            run, check = settle(functools.partial(_run, loaded, target, x, baseline, problem.step_batch),
                                settings.steps, problem.steps_cap)
            rows.append([None, *run.values[1:]])  # position 0 is held at its own embedding: not attributed
            checks.append(check)
    parameters = {"steps": settings.steps or "auto", "default_steps": DEFAULT_STEPS, "max_auto_steps": MAX_AUTO_STEPS,
                  "steps_cap": problem.steps_cap,
                  "quadrature": QUADRATURE, "baseline": settings.baseline, "held_positions": [0],
                  "completeness_limit": COMPLETENESS_LIMIT, "settled_limit": SETTLED_LIMIT}
    return rows, checks, parameters


# ---------------------------------------------------------------------------------------------- attention


def _attention_rollout(problem: Problem) -> tuple[list[list[float | None]], list[Completeness | None],
                                                  dict[str, Any]]:
    import torch

    from llmscope.attention.weights import restore_attention, use_eager_attention

    loaded = problem.loaded
    model = loaded.model
    before = use_eager_attention(model)
    try:
        with torch.inference_mode():
            ids = torch.tensor([problem.ids], device=loaded.input_device)
            attentions = model(input_ids=ids, output_attentions=True, use_cache=False).attentions
    finally:
        restore_attention(model, before)
    if not attentions or any(a is None for a in attentions):
        raise UsageError("this model returned no attention weights", hint="leave out --method attention-rollout")
    rollout = rollout_matrix([a[0].float().mean(dim=0).cpu() for a in attentions])
    rows: list[list[float | None]] = [rollout[t.position - 1, : t.position].tolist() for t in problem.targets]
    return rows, [None] * len(rows), {"residual": 0.5, "heads": "mean", "target_independent": True}


def rollout_matrix(layers: list[torch.Tensor]) -> torch.Tensor:
    """Abnar & Zuidema's rollout: each layer's head-mean attention mixed half-and-half with the residual
    (identity), rows renormalised, multiplied from the first layer up. Row q: how much each input reaches q."""
    import torch

    n = layers[0].shape[-1]
    eye = torch.eye(n, dtype=torch.float64)
    result = eye
    for weights in layers:
        mixed = 0.5 * weights.double() + 0.5 * eye
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        result = mixed @ result
    return result


METHODS: dict[str, Method] = {method.name: method for method in (
    Method("occlusion", "How much does log p(target) fall when this input token is left out (or replaced)?",
           _occlusion),
    Method("input-x-gradient", "First-order estimate: gradient of the function at the input times the input "
           "embedding, summed over the hidden dimension.", _input_x_gradient),
    Method("integrated-gradients", "How the function's change from a baseline prompt to this one splits over "
           "the input tokens (the parts sum to the change: completeness).", _integrated_gradients),
    Method("attention-rollout", "Where attention, followed through every layer, carries information from: "
           "the same for any target at this position (it never sees the target).", _attention_rollout),
)}
