"""Which input tokens made the model say its tokens: targets (the next token, a teacher-forced --target, or -n
greedy tokens), the function attributed, and one targets x inputs matrix per method. It never prints or loads.

The methods themselves live in llmscope.attribution.methods (one registry, by name) and their cost arithmetic in
llmscope.attribution.cost; this module plans the targets and what the methods will cost (plan_attribution, which
times the passes the cost scales from), runs the chosen methods (run_attribution) and says where they disagree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from llmscope.attribution.cost import GRADIENT_METHODS, ModelShape, TimedPass, plan_cost
from llmscope.attribution.memory import model_shape
from llmscope.attribution.methods import METHODS, Problem, timed_gradient_pass
from llmscope.attribution.results import (
    AttributionCost,
    AttributionResult,
    AttributionTarget,
    eos_ids,
)
from llmscope.attribution.settings import DEFAULT_STEPS, AttributionSettings
from llmscope.core.errors import UsageError
from llmscope.generation.decoding import synchronize

if TYPE_CHECKING:
    from llmscope.attribution.memory import MethodMemory
    from llmscope.generation.prompts import EncodedPrompt
    from llmscope.loading.loader import LoadedModel


def target_function_name(contrast: bool) -> str:
    return "log p(target) - log p(contrast)" if contrast else "log p(target)"


def _text_ids(tokenizer: Any, text: str) -> list[int]:
    return [int(i) for i in tokenizer(text, add_special_tokens=False)["input_ids"]]


def greedy_tokens(loaded: LoadedModel, ids: list[int], count: int) -> list[int]:
    """The model's own next `count` tokens (greedy, stopping after an end-of-sequence token)."""
    import torch

    from llmscope.generation.decoding import forward_options

    _, keep = forward_options(loaded.model)
    stop = eos_ids(loaded.tokenizer, loaded.model.config)
    sequence = list(ids)
    new: list[int] = []
    with torch.inference_mode():
        for _ in range(count):
            logits = loaded.model(input_ids=torch.tensor([sequence], device=loaded.input_device), use_cache=False,
                                  **keep).logits[0, -1]
            token = int(logits.argmax())
            new.append(token)
            sequence.append(token)
            if token in stop:
                break
    return new


def check_cost(inputs: int, targets: int, settings: AttributionSettings) -> None:
    """The --max-tokens guard: refuse a long prompt before any gradient runs, stating what it would cost."""
    if inputs + targets <= settings.max_tokens:
        return
    steps = settings.steps or DEFAULT_STEPS
    passes = []
    if "integrated-gradients" in settings.methods:
        passes.append(f"integrated gradients {steps} or more forward and backward passes")
    if "occlusion" in settings.methods:
        passes.append(f"occlusion {inputs + 1} forward passes")
    plural = "s" if targets != 1 else ""
    each = "the target" if targets == 1 else f"each of the {targets} targets"
    cost = f"; {each} costs {' and '.join(passes)} over up to {inputs + targets} tokens" if passes else ""
    raise UsageError(f"{inputs} prompt tokens + {targets} target{plural} exceed --max-tokens {settings.max_tokens}"
                     f"{cost}", hint=f"shorten the prompt, or raise --max-tokens to {inputs + targets} to pay for it")


def plan_targets(loaded: LoadedModel, prompt_ids: list[int], settings: AttributionSettings
                 ) -> tuple[list[int], list[int], str]:
    """(target ids, contrast ids (empty without --contrast), where the targets came from)."""
    tokenizer = loaded.tokenizer
    if settings.target is not None:
        targets, source = _text_ids(tokenizer, settings.target), "given"
        if not targets:
            raise UsageError("--target has no tokens", hint="pass some text, e.g. ' Paris'")
    else:
        check_cost(len(prompt_ids), settings.new_tokens, settings)
        targets = greedy_tokens(loaded, prompt_ids, settings.new_tokens)
        source = "next-token" if settings.new_tokens == 1 else "generated"
    contrast = check_contrast(tokenizer, settings, len(targets))
    return targets, contrast, source


def check_contrast(tokenizer: Any, settings: AttributionSettings, targets: int | None = None) -> list[int]:
    """The --contrast ids (empty without it), refused unless there is one per target token: `targets` of them, or
    before the model loads (the tokenizer alone), those of --target or -n. Also refuses a --target of no tokens."""
    if targets is None:
        if settings.target is not None:
            targets = len(_text_ids(tokenizer, settings.target))
            if not targets:
                raise UsageError("--target has no tokens", hint="pass some text, e.g. ' Paris'")
        else:
            targets = settings.new_tokens
    if settings.contrast is None:
        return []
    contrast = _text_ids(tokenizer, settings.contrast)
    if len(contrast) != targets:
        plural = "s" if len(contrast) != 1 else ""
        raise UsageError(f"--contrast {settings.contrast!r} is {len(contrast)} token{plural} but the target is "
                         f"{targets}",
                         hint="give a contrast with one token per target token, checked with `llmscope tokenize`")
    return contrast


def target_logprobs(loaded: LoadedModel, ids: list[int], positions: list[int], wanted: list[list[int]]
                    ) -> list[list[float]]:
    """log p(token | ids[:position]) for each position and each of its wanted tokens: one teacher-forced pass."""
    import torch

    with torch.inference_mode():
        logits = loaded.model(input_ids=torch.tensor([ids], device=loaded.input_device), use_cache=False).logits[0]
        rows = torch.log_softmax(logits[[p - 1 for p in positions]].float(), dim=-1)
    return [[float(rows[row, token]) for token in tokens] for row, tokens in enumerate(wanted)]


def timed_forward(loaded: LoadedModel, ids: list[int]) -> float:
    """Seconds of one more forward pass over ids: with the scoring pass before it, the rate is the faster of two
    (the first pass of a process also pays for warming up)."""
    import torch

    synchronize(loaded.input_device)
    started = time.perf_counter()
    with torch.inference_mode():
        loaded.model(input_ids=torch.tensor([ids], device=loaded.input_device), use_cache=False)
    synchronize(loaded.input_device)
    return time.perf_counter() - started


@dataclass
class AttributionPlan:
    """What run_attribution needs: the targets with their log-probabilities, the inputs, each method's memory and
    the whole cost, checked against --max-time and --max-memory. Holds the live model; not a result."""

    loaded: Any
    encoded: Any  # EncodedPrompt
    settings: AttributionSettings
    targets: tuple[AttributionTarget, ...]
    inputs: list[int]
    memory: dict[str, MethodMemory]
    cost: AttributionCost
    source: str
    contrast: bool
    started: float


def plan_attribution(loaded: LoadedModel, encoded: EncodedPrompt, settings: AttributionSettings) -> AttributionPlan:
    """Pick the targets (the model's own greedy tokens, or --target), run the one teacher-forced pass that scores
    them (timed: the rate every estimate scales from), and plan what each method will cost in passes, time and
    memory. Raises UsageError past --max-tokens or --max-time, MemoryLimitError past the memory."""
    started = time.perf_counter()
    tokenizer = loaded.tokenizer
    prompt_ids = list(encoded.ids)
    targets, contrast, source = plan_targets(loaded, prompt_ids, settings)
    check_cost(len(prompt_ids), len(targets), settings)
    ids = prompt_ids + targets
    positions = [len(prompt_ids) + k for k in range(len(targets))]
    wanted = [[t] + ([contrast[k]] if contrast else []) for k, t in enumerate(targets)]
    synchronize(loaded.input_device)
    measured = time.perf_counter()
    logprobs = target_logprobs(loaded, ids, positions, wanted)
    measured = min(time.perf_counter() - measured, timed_forward(loaded, ids))
    rows = tuple(AttributionTarget(
        position=p, token_id=t, text=tokenizer.decode([t]), logprob=lp[0],
        contrast_id=contrast[k] if contrast else None,
        contrast_text=tokenizer.decode([contrast[k]]) if contrast else None,
        contrast_logprob=lp[1] if contrast else None) for k, (p, t, lp) in enumerate(zip(positions, targets, logprobs)))
    inputs = ids[: positions[-1]]
    plans = plan_memory(loaded, len(inputs), settings)
    gradient = timed_gradient_passes(loaded, tuple(inputs), rows[0], settings, plans)
    cost = _cost(loaded, settings, positions, len(inputs), plans, TimedPass("forward", measured, len(ids)), gradient)
    return AttributionPlan(loaded=loaded, encoded=encoded, settings=settings, targets=rows, inputs=inputs,
                           memory=plans, cost=cost, source=source, contrast=bool(contrast), started=started)


def timed_gradient_passes(loaded: LoadedModel, inputs: tuple[int, ...], target: AttributionTarget,
                          settings: AttributionSettings, plans: dict[str, MethodMemory]) -> tuple[TimedPass, ...]:
    """The forward and backward passes the gradient methods' cost is planned from (none without them): one row,
    and with integrated gradients also as many rows as its first run puts in a pass, since a pass through packed
    weights pays for dequantizing them once whatever its rows."""
    if not set(GRADIENT_METHODS) & set(settings.methods):
        return ()
    import torch

    ig = plans.get("integrated-gradients")
    sizes = [1]
    if ig is not None:  # the larger pass first: it, not the one-row pass, pays for setting autograd up
        sizes.insert(0, max(1, min(ig.batch, (settings.steps or DEFAULT_STEPS) // 2)))
    with torch.inference_mode(False):
        timed = [TimedPass("forward and backward", timed_gradient_pass(loaded, inputs, target, rows),
                           target.position, rows) for rows in dict.fromkeys(sizes)]
    return tuple(sorted(timed, key=lambda timed_pass: timed_pass.rows))


def _cost(loaded: LoadedModel, settings: AttributionSettings, positions: list[int], inputs: int,
          plans: dict[str, MethodMemory], forward: TimedPass, gradient: tuple[TimedPass, ...]) -> AttributionCost:
    from llmscope.loading.quant.modules import held_weight_bytes

    layers, hidden = model_shape(loaded.config)[:2]
    shape = ModelShape(parameters=loaded.parameters, layers=layers, hidden=hidden)
    weights = held_weight_bytes(loaded.model)
    ig = plans.get("integrated-gradients")
    return plan_cost(shape, positions, inputs, settings, ig.batch if ig else 1, forward, gradient,
                     weights + max(plan.peak_bytes for plan in plans.values()), weights)


def run_attribution(plan: AttributionPlan) -> AttributionResult:
    """Run every method of the plan and say where they disagree."""
    loaded, settings, plans = plan.loaded, plan.settings, plan.memory
    tokenizer = loaded.tokenizer
    ig = plans.get("integrated-gradients")
    problem = Problem(loaded=loaded, ids=tuple(plan.inputs), targets=plan.targets, settings=settings,
                      step_batch=ig.batch if ig else 0, steps_cap=plan.cost.steps_cap)
    import torch

    with torch.inference_mode(False):  # gradients need it off, even if a caller left it on
        methods = tuple(METHODS[name].run(problem) for name in settings.methods)
    methods = tuple(replace(m, parameters={**m.parameters, "planned_memory_bytes": plans[m.method].peak_bytes,
                                           **({"step_batch": plans[m.method].batch}
                                              if m.method == "integrated-gradients" else {})})
                    for m in methods)
    rows = plan.targets
    agree = tuple(len({m.top[k] for m in methods}) <= 1 for k in range(len(rows)))
    encoded, inputs = plan.encoded, plan.inputs
    return AttributionResult(
        model=loaded.spec.name, prompt=encoded.prompt, text=encoded.text, chat=encoded.chat, ids=tuple(inputs),
        tokens=tuple(tokenizer.decode([i]) for i in inputs), prompt_tokens=len(encoded.ids),
        target_source=plan.source, target_function=target_function_name(plan.contrast), targets=rows,
        methods=methods, top_agree=agree, seconds=time.perf_counter() - plan.started, cost=plan.cost)


def attribute_encoded(loaded: LoadedModel, encoded: EncodedPrompt, settings: AttributionSettings
                      ) -> AttributionResult:
    """Attribute the targets of one encoded prompt with every method asked for (plan_attribution, then
    run_attribution).

    Args:
        loaded: the model and tokenizer (loader.load_model).
        encoded: the prompt as the model reads it (prompts.encode_prompt).
        settings: methods, targets, contrast, steps, baseline and the --max-tokens and --max-time guards.
    Returns:
        AttributionResult: the inputs, the targets with their log-probabilities, one matrix per method, the cost.
    Raises:
        UsageError for a prompt past --max-tokens, methods past --max-time, or a contrast whose length does not
        match the targets.
    """
    return run_attribution(plan_attribution(loaded, encoded, settings))


def plan_memory(loaded: LoadedModel, tokens: int, settings: AttributionSettings) -> dict[str, MethodMemory]:
    """Each asked method's planned memory over `tokens` inputs, before any of them runs: integrated gradients' step
    batch shrunk to what is free (or left under --max-memory); MemoryLimitError when a method cannot fit at all."""
    from llmscope.attribution.memory import largest_packed_dense_bytes, plan_method
    from llmscope.attribution.methods import preferred_step_batch
    from llmscope.loading.memory import headroom

    limit, bound = headroom(settings.max_memory, str(loaded.input_device))
    packed = largest_packed_dense_bytes(loaded.model)
    steps = settings.steps or DEFAULT_STEPS
    return {name: plan_method(name, loaded.config, tokens, steps, preferred_step_batch(tokens), limit, packed, bound)
            for name in settings.methods}


def attribute(loaded: LoadedModel, prompt: str, settings: AttributionSettings | None = None, chat: bool = False,
              system: str | None = None) -> AttributionResult:
    """Attribute `prompt`'s targets (library entry: encode, then attribute_encoded)."""
    from llmscope.generation.prompts import encode_prompt

    settings = settings or AttributionSettings()
    encoded = encode_prompt(loaded, prompt, chat=chat, system=system, new_tokens=settings.new_tokens,
                            budget_option="-n")
    return attribute_encoded(loaded, encoded, settings)

