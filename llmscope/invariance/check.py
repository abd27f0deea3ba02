"""check-invariance: one prompt run alone, in a shuffled padded batch with other prompts, and token by token with the
KV cache; the largest difference per quantity (logits, hidden states, attention weights, greedy tokens). It loads
nothing and prints nothing: it runs the loaded model and returns an InvarianceResult."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmscope.generation.decoding import decode_steps, forward_options, pad_token_id, prompt_batch

if TYPE_CHECKING:
    import torch

    from llmscope.loading.loader import LoadedModel

# The prompts the checked one is batched with: shorter and longer than most, so it gets left padding and pads others.
COMPANIONS = (
    "Hi",
    "Write a short letter to a friend about the long grey evening light over the sea, the wind in the dunes and the "
    "ferries that no longer run in winter.",
    "1, 2, 3,",
    "def add(a, b):",
    "The quick brown fox jumps over the lazy dog, and the dog",
    "Translate to French: good morning",
    "Once upon a time there was a small robot who wanted to learn how to paint the sky at night.",
)
QUANTITIES = ("logits", "hidden states", "attention weights", "greedy tokens")


@dataclass(frozen=True)
class Difference:
    """The largest difference of one quantity between the lone run and another way of running the same prompt."""

    quantity: str  # one of QUANTITIES
    comparison: str  # "batch" (shuffled, padded, with the companions) or "cache" (token by token with the KV cache)
    max_abs: float | None  # the largest |difference|; for greedy tokens the number of tokens that differ; None: n/a
    compared: int  # how many values (or tokens) were compared
    identical: bool | None  # bit for bit; None when the model gave nothing to compare (no attention weights)


@dataclass(frozen=True)
class InvarianceResult:
    model: str
    prompt: str
    prompt_tokens: int
    new_tokens: int  # greedy tokens generated alone and appended to the prompt for the checks
    batch_size: int
    batch_index: int  # the prompt's row in the shuffled batch
    batch_lengths: tuple[int, ...]  # tokens per row of the batch, in batch order (left-padded to the longest)
    quantize: str
    invariant: bool  # the loader's invariant numerics are installed
    attention: str  # the attention implementation that ran
    differences: tuple[Difference, ...]
    identical: bool  # every difference is zero
    seconds: float


def _forward(model: Any, rows: Sequence[Sequence[int]], pad_id: int, device: Any) -> Any:
    import torch

    batch = prompt_batch(rows, pad_id, device)
    with torch.inference_mode():
        return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                     use_cache=False, output_hidden_states=True, output_attentions=True)


def _has_attentions(output: Any) -> bool:
    attentions = getattr(output, "attentions", None)
    return bool(attentions) and all(a is not None for a in attentions)


def _difference(quantity: str, comparison: str, pairs: list[tuple[torch.Tensor, torch.Tensor]] | None) -> Difference:
    import torch

    if pairs is None:
        return Difference(quantity, comparison, None, 0, None)
    largest, count, same = 0.0, 0, True
    for first, second in pairs:
        first, second = first.detach().cpu(), second.detach().cpu()
        same = same and torch.equal(first, second)
        if first.numel():
            largest = max(largest, float((first.double() - second.double()).abs().max()))
        count += first.numel()
    return Difference(quantity, comparison, largest, count, same)


def _token_difference(comparison: str, reference: Sequence[int], other: Sequence[int]) -> Difference:
    differing = sum(a != b for a, b in zip(reference, other)) + abs(len(reference) - len(other))
    return Difference("greedy tokens", comparison, float(differing), len(reference), differing == 0)


def _greedy(model: Any, rows: Sequence[Sequence[int]], pad_id: int, device: Any, steps: int,
            use_cache: bool = True) -> list[list[int]]:
    tokens: list[list[int]] = [[] for _ in rows]
    batch = prompt_batch(rows, pad_id, device)
    for step in decode_steps(model, batch, steps, use_cache=use_cache):
        for row, token in enumerate(step.token_ids):
            tokens[row].append(token)
    return tokens


def _token_by_token(model: Any, ids: Sequence[int], prompt_tokens: int, device: Any) -> tuple[list[Any], ...]:
    """The prompt as one cached prefill, then each later token alone with the cache: per position, the logits, each
    layer's hidden state and each layer's attention row over the keys so far."""
    import torch
    from transformers import DynamicCache

    cache_keyword, _ = forward_options(model)
    cache = DynamicCache(config=model.config)
    logits: list[torch.Tensor] = []
    hidden: list[torch.Tensor] = []  # [layers + 1, positions, hidden] per call
    attentions: list[list[torch.Tensor]] = []  # per call, per layer [heads, positions, keys]
    spans = [(0, prompt_tokens)] + [(position, position + 1) for position in range(prompt_tokens, len(ids))]
    with torch.inference_mode():
        for start, stop in spans:
            output = model(input_ids=torch.tensor([list(ids[start:stop])], device=device),
                           attention_mask=torch.ones((1, stop), dtype=torch.long, device=device),
                           position_ids=torch.arange(start, stop, device=device)[None], use_cache=True,
                           output_hidden_states=True, output_attentions=True, **{cache_keyword: cache})
            logits.append(output.logits[0].float())
            hidden.append(torch.stack([layer[0] for layer in output.hidden_states]))
            attentions.append([layer[0] for layer in output.attentions] if _has_attentions(output) else [])
    return logits, hidden, attentions, spans


def check_invariance(loaded: LoadedModel, prompt_ids: Sequence[int], prompt: str, new_tokens: int = 8,
                     companions: Sequence[Sequence[int]] = (), seed: int = 0) -> InvarianceResult:
    """Run `prompt_ids` alone, in a shuffled padded batch with `companions` (token id lists), and token by token with
    the KV cache, and compare every logit, hidden state and attention weight of its positions bit for bit.

    Args:
        loaded: the model (loading.loader.load_model).
        prompt_ids: the prompt's token ids; prompt: its text (for the result).
        new_tokens: greedy tokens generated alone (with the cache) and appended before the comparisons, so that the
            cache run has decode steps and the greedy-token comparisons have tokens to compare.
        companions: the other rows of the batch; seed: the shuffle's seed.
    """
    import torch

    started = time.perf_counter()
    model, device = loaded.model, loaded.input_device
    pad_id = pad_token_id(loaded.tokenizer)
    prompt_ids = list(prompt_ids)
    generated = _greedy(model, [prompt_ids], pad_id, device, new_tokens)[0] if new_tokens else []
    sequence = prompt_ids + generated[:-1] if generated else prompt_ids  # the last token is never fed back
    alone = _forward(model, [sequence], pad_id, device)
    length = len(sequence)
    with_weights = _has_attentions(alone)

    rows = [list(c) for c in companions] + [sequence]
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    shuffled = [rows[i] for i in order]
    index = order.index(len(rows) - 1)
    batched = _forward(model, shuffled, pad_id, device)
    batch_pairs = {
        "logits": [(alone.logits[0].float(), batched.logits[index, -length:].float())],
        "hidden states": [(a[0], b[index, -length:]) for a, b in zip(alone.hidden_states, batched.hidden_states)],
        "attention weights": [(a[0], b[index, :, -length:, -length:]) for a, b in
                              zip(alone.attentions, batched.attentions)] if with_weights else None,
    }
    logits, hidden, attentions, spans = _token_by_token(model, sequence, len(prompt_ids), device)
    cache_pairs: dict[str, Any] = {"logits": [], "hidden states": [], "attention weights": [] if with_weights else None}
    for call, (start, stop) in enumerate(spans):
        cache_pairs["logits"].append((alone.logits[0, start:stop].float(), logits[call]))
        cache_pairs["hidden states"].append((torch.stack([h[0] for h in alone.hidden_states])[:, start:stop],
                                             hidden[call]))
        if with_weights:
            for layer, weights in enumerate(attentions[call]):
                cache_pairs["attention weights"].append((alone.attentions[layer][0, :, start:stop, :stop], weights))
    differences = []
    for quantity in QUANTITIES[:3]:
        differences.append(_difference(quantity, "batch", batch_pairs[quantity]))
        differences.append(_difference(quantity, "cache", cache_pairs[quantity]))
    if new_tokens:
        in_batch = _greedy(model, [list(c) for c in ([*shuffled[:index], prompt_ids, *shuffled[index + 1:]])],
                           pad_id, device, new_tokens)[index]
        differences.append(_token_difference("batch", generated, in_batch))
        without_cache = _greedy(model, [prompt_ids], pad_id, device, new_tokens, use_cache=False)[0]
        differences.append(_token_difference("cache", generated, without_cache))
    return InvarianceResult(
        model=loaded.spec.name, prompt=prompt, prompt_tokens=len(prompt_ids), new_tokens=len(generated),
        batch_size=len(shuffled), batch_index=index, batch_lengths=tuple(len(r) for r in shuffled),
        quantize=loaded.quantize, invariant=loaded.invariant,
        attention=str(getattr(model.config, "_attn_implementation", None) or "eager"),
        differences=tuple(differences),
        identical=all(d.identical is not False for d in differences),
        seconds=time.perf_counter() - started)
