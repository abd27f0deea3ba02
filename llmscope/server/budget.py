"""What a request will cost before it runs: its forward passes (new tokens and the context they attend to), their
arithmetic and peak memory from the model's shape, and a lower bound of the seconds they take at the speed this
server measured when it started. Estimates only; the one thing run here is the start-up measurement. No HTTP."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

QUERY_BLOCK = 512  # queries whose attention scores one block holds (invariance.kernels' QUERY_BLOCK)
CALIBRATION_TOKENS = (8, 128)  # the two prompt lengths timed at start-up (the longer capped by the context)
CALIBRATION_REPEATS = 3  # each timed this many times; the fastest counts


@dataclass(frozen=True)
class Pass:
    """`repeat` forward passes alike: `tokens` new positions per row attending to `context` positions (the new
    ones included), the context growing by `growth` from one to the next (decode steps grow by 1)."""

    tokens: int
    context: int
    rows: int = 1
    logits: int = 1  # positions per row whose logits are computed (all of them when scoring)
    repeat: int = 1
    growth: int = 0
    cache: bool = False  # a KV cache of `context` positions is kept (decoding)
    hidden_states: bool = False  # every layer's hidden states kept (the logit lens)
    attentions: bool = False  # every layer's attention weights kept (attention, attribution's rollout)
    backward: bool = False  # gradients too (a backward pass costs about twice its forward)


@dataclass(frozen=True)
class Shape:
    """The figures of a model that its passes' cost depends on."""

    layers: int
    hidden: int
    inner: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    dense_parameters: int  # weights every token multiplies through (the input embedding left out)
    element_bytes: int  # activations' dtype

    @classmethod
    def of(cls, loaded: Any) -> Shape:
        from llmscope.loading.modelconfig import (
            attention_heads,
            config_value,
            head_dim,
            intermediate_size,
            kv_heads,
            text_config,
        )

        config = text_config(loaded.model.config)
        hidden = int(config_value(config, "hidden_size", "n_embd", "d_model", default=0) or 0)
        vocab = int(config_value(config, "vocab_size", default=0) or 0)
        layers = int(config_value(config, "num_hidden_layers", "n_layer", "num_layers", default=0) or 0)
        parameters = loaded.info.parameters or sum(p.numel() for p in loaded.model.parameters())
        return cls(layers=layers, hidden=hidden, inner=intermediate_size(config) or 4 * hidden,
                   heads=attention_heads(loaded.model.config), kv_heads=kv_heads(loaded.model.config),
                   head_dim=head_dim(loaded.model.config), vocab=vocab,
                   dense_parameters=max(int(parameters) - vocab * hidden, 0),
                   element_bytes=4 if loaded.info.dtype in (None, "float32") else 2)


@dataclass(frozen=True)
class Cost:
    passes: int
    token_layers: int  # tokens x rows x layers, over every pass
    flops: float
    peak_bytes: int  # the largest pass's memory on top of the weights


def _context_sum(step: Pass) -> float:
    """The contexts of the repeated passes added up (an arithmetic series)."""
    return step.repeat * step.context + step.growth * step.repeat * (step.repeat - 1) / 2


def cost_of(shape: Shape, passes: Sequence[Pass]) -> Cost:
    """The passes' count, arithmetic (multiply-adds x 2) and peak memory, from the model's shape."""
    flops, peak, token_layers, count = 0.0, 0, 0, 0
    width = shape.heads * shape.head_dim
    for step in passes:
        rows, tokens = step.rows, step.tokens
        # causal attention: a new token sees on average the context less half the new ones
        keys = _context_sum(step) - step.repeat * tokens / 2
        forward = (2.0 * shape.dense_parameters * tokens * step.repeat * rows
                   + 4.0 * shape.layers * width * tokens * keys * rows
                   + 2.0 * shape.hidden * shape.vocab * step.logits * step.repeat * rows)
        flops += forward * (3 if step.backward else 1)
        count += step.repeat
        token_layers += tokens * rows * shape.layers * step.repeat
        last = step.context + step.growth * (step.repeat - 1)
        peak = max(peak, _pass_bytes(shape, step, last))
    return Cost(passes=count, token_layers=token_layers, flops=flops, peak_bytes=peak)


def _pass_bytes(shape: Shape, step: Pass, context: int) -> int:
    """One pass's memory at its peak: the KV cache, one layer's activations and attention scores, the logits, and
    what is kept for every layer (hidden states, attention weights, or a backward pass's saved activations)."""
    rows, tokens, element = step.rows, step.tokens, shape.element_bytes
    layer = tokens * (4 * shape.hidden + 3 * shape.inner) * 4
    scores = shape.heads * min(tokens, QUERY_BLOCK) * context * 4 * 2
    total = rows * (layer + scores + step.logits * shape.vocab * 4 * 2)
    if step.cache:
        total += rows * 2 * shape.layers * shape.kv_heads * shape.head_dim * context * element
    if step.hidden_states:
        total += rows * (shape.layers + 1) * tokens * shape.hidden * element
    if step.attentions:
        total += rows * shape.layers * shape.heads * tokens * context * 4
    if step.backward:
        total += rows * shape.layers * tokens * (8 * shape.hidden + 4 * shape.inner) * 4
    return int(total)


def decoding_passes(prompt_tokens: int, new_tokens: int, rows: int = 1, hidden_states: bool = False) -> list[Pass]:
    """A prompt's pass, then one pass per further new token with the KV cache (generate, next-token steps)."""
    passes = [Pass(tokens=prompt_tokens, context=prompt_tokens, rows=rows, cache=True,
                   hidden_states=hidden_states)]
    if new_tokens > 1:
        passes.append(Pass(tokens=1, context=prompt_tokens + 1, rows=rows, repeat=new_tokens - 1, growth=1,
                           cache=True))
    return passes


def window_passes(plan: Sequence[Sequence[int]], extra_row: bool = False) -> list[Pass]:
    """Teacher-forced passes over scoring's windows [begin, end, first target]: every scored row's logits."""
    return [Pass(tokens=end - begin, context=end - begin, logits=end - first + (1 if extra_row else 0))
            for begin, end, first in plan]


@dataclass(frozen=True)
class Speed:
    """What the start-up measurement found: seconds per pass (overhead) and per floating-point operation."""

    seconds_per_pass: float
    seconds_per_flop: float

    def least_seconds(self, cost: Cost) -> float:
        """A lower bound of the seconds `cost` takes: its arithmetic at the measured rate (the per-pass overhead
        left out, so that a busy machine's slow start-up measurement never refuses work that could finish)."""
        return cost.flops * self.seconds_per_flop


def measure_speed(loaded: Any) -> Speed:
    """Time two short prompts' forward passes (the fastest of a few runs each) and fit overhead + rate."""
    import torch

    from llmscope.generation.decoding import forward_options, synchronize
    from llmscope.loading.modelconfig import context_length

    shape = Shape.of(loaded)
    limit = context_length(loaded.model.config) or CALIBRATION_TOKENS[1]
    lengths = [min(n, limit) for n in CALIBRATION_TOKENS]
    _, keep = forward_options(loaded.model)
    device = loaded.input_device
    timings = []
    for length in lengths:
        ids = torch.zeros((1, length), dtype=torch.long, device=device)
        best = float("inf")
        for _ in range(CALIBRATION_REPEATS):
            synchronize(device)
            started = time.perf_counter()
            with torch.inference_mode():
                loaded.model(input_ids=ids, use_cache=False, **keep)
            synchronize(device)
            best = min(best, time.perf_counter() - started)
        timings.append((cost_of(shape, [Pass(tokens=length, context=length)]).flops, best))
    (short_flops, short), (long_flops, long) = timings
    slope = (long - short) / (long_flops - short_flops) if long_flops > short_flops else 0.0
    # A noisy pair of timings can give no slope at all: then a quarter of the long pass's seconds per operation,
    # which still leaves the bound below what the pass took.
    slope = max(slope, 0.25 * long / long_flops if long_flops else 0.0)
    return Speed(seconds_per_pass=max(short - slope * short_flops, 0.0), seconds_per_flop=slope)
