"""The one decode-step core under every command: padded batches of prompts in, one yielded step per new token.
It picks tokens (greedy or sampled) and stops at EOS, or holds EOS back for a minimum of new tokens; it keeps no
per-token records, decodes no text and prints nothing: the caller decides what to keep and show."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Sampler:
    """How a token is picked from the last logits. Greedy unless do_sample; top_k 0 and top_p 1.0 mean no filter."""

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None


@dataclass
class PromptBatch:
    """Prompts of different lengths, left-padded into one tensor, with their mask and position ids."""

    input_ids: torch.Tensor  # [batch, longest prompt]
    attention_mask: torch.Tensor  # 1 for real tokens, 0 for left padding
    position_ids: torch.Tensor  # 0.. for the real tokens of each row
    lengths: tuple[int, ...]  # real tokens per row

    @property
    def padded(self) -> bool:
        return min(self.lengths) != max(self.lengths)


@dataclass
class DecodeStep:
    """One new token per row. Holds live tensors for the caller to read; not a result to keep."""

    index: int  # 0 is the token after the prompt
    token_ids: tuple[int, ...]  # the token picked for each row
    logprobs: tuple[float, ...]  # each picked token's log-probability under the distribution it was drawn from
    logits: torch.Tensor  # [batch, vocab], float32: the last position's scores, as the pick saw them (a held-back
    # stop id at -inf)
    distribution: torch.Tensor | None  # [batch, vocab]: the sampler's distribution when sampling, else None
    finished: tuple[bool, ...]  # rows that produced an end-of-sequence token at this step or before
    seconds: float  # this step's forward pass and pick, host-synchronised
    output: Any  # the model's output object for this step (hidden states when asked for)


def eos_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """Every id that ends generation: the generation config's eos ids and the tokenizer's."""
    ids: set[int] = set()
    generation_config = getattr(model, "generation_config", None)
    for source in (getattr(generation_config, "eos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif source:
            ids.update(int(i) for i in source)
    return ids


def pad_token_id(tokenizer: Any) -> int:
    """The id used for left padding: the tokenizer's pad token, else its EOS, else 0 (masked out either way)."""
    for value in (getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if isinstance(value, int):
            return value
    return 0


def prompt_batch(rows: Sequence[Sequence[int]], pad_id: int, device: Any) -> PromptBatch:
    """Left-pad token id lists into one batch; positions count real tokens only, so padding changes nothing."""
    import torch

    longest = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for index, row in enumerate(rows):
        if row:
            input_ids[index, longest - len(row):] = torch.tensor(list(row), dtype=torch.long)
            attention_mask[index, longest - len(row):] = 1
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return PromptBatch(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                       position_ids=position_ids.to(device), lengths=tuple(len(row) for row in rows))


def sampler_distribution(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0,
                         top_p: float = 1.0) -> torch.Tensor:
    """Float32 probabilities after temperature, top-k and nucleus (top-p) filtering, as a sampler draws them."""
    import torch

    scores = logits.float() / max(temperature, 1e-6)
    if 0 < top_k < scores.shape[-1]:
        threshold = torch.topk(scores, top_k).values[..., -1, None]
        scores = scores.masked_fill(scores < threshold, float("-inf"))
    if top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=True)
        probabilities = torch.softmax(sorted_scores, dim=-1)
        remove = probabilities.cumsum(dim=-1) - probabilities >= top_p  # keep the token that crosses top_p
        scores = scores.masked_fill(remove.scatter(-1, order, remove), float("-inf"))
    return torch.softmax(scores, dim=-1)


def entropy_nats(probabilities: torch.Tensor) -> float:
    """Shannon entropy in nats of one distribution (zero-probability entries contribute nothing)."""
    import torch

    return float(torch.special.entr(probabilities).sum())


def forward_options(model: Any) -> tuple[str, dict[str, int]]:
    """The keyword this model's forward takes the KV cache under, and logits_to_keep=1 where supported."""
    import inspect

    parameters = inspect.signature(model.forward).parameters
    cache_keyword = "cache" if "cache" in parameters else "past_key_values"
    return cache_keyword, ({"logits_to_keep": 1} if "logits_to_keep" in parameters else {})


def new_cache(model: Any, static: bool, max_length: int) -> Any:
    """A dynamic KV cache (grows per token), or a static one preallocated for max_length positions."""
    from transformers import DynamicCache, StaticCache

    if static:
        return StaticCache(config=model.config, max_cache_len=max_length)
    return DynamicCache(config=model.config)


def synchronize(device: Any) -> None:
    """Wait for queued CUDA work, so that a clock read after it measures the work (a no-op elsewhere)."""
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.synchronize(device)


def _generators(sampler: Sampler, rows: int, device: Any) -> list[Any]:
    """One random generator per row, each seeded alike: a row samples what it would sample alone."""
    import torch

    seed = sampler.seed if sampler.seed is not None else int(torch.seed())
    generators = []
    for _ in range(rows):
        generator = torch.Generator(device=device)
        generator.manual_seed(seed)
        generators.append(generator)
    return generators


TokenPicker = Callable[["torch.Tensor"], tuple["torch.Tensor", "torch.Tensor", "torch.Tensor | None"]]
"""logits [batch, vocab] float32 -> (picked ids [batch], their log-probabilities [batch], the distribution they were
drawn from [batch, vocab] when sampling, else None)."""


def greedy_pick(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
    """The highest-scoring token of each row and its log-probability under the raw softmax."""
    import torch

    picked = torch.argmax(logits, dim=-1)
    return picked, torch.log_softmax(logits, dim=-1).gather(-1, picked[:, None])[:, 0], None


def make_picker(sampler: Sampler | None, rows: int, device: Any) -> TokenPicker:
    """How decode_steps picks each step's tokens for `rows` rows: greedy_pick unless the sampler samples; then a
    draw per row from sampler_distribution with the row's own generator (every row seeded alike)."""
    import torch

    sampler = sampler or Sampler()
    if not sampler.do_sample:
        return greedy_pick
    generators = _generators(sampler, rows, device)

    def sample_pick(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        distribution = sampler_distribution(logits, sampler.temperature, sampler.top_k, sampler.top_p)
        picked = torch.cat([torch.multinomial(distribution[row], 1, generator=generator)
                            for row, generator in enumerate(generators)])
        return picked, distribution.gather(-1, picked[:, None])[:, 0].log(), distribution

    return sample_pick


def hold_back(logits: torch.Tensor, ids: torch.Tensor | None) -> torch.Tensor:
    """The logits with the given token ids at -inf, so that no pick (greedy or sampled) can choose them."""
    if ids is None:
        return logits
    return logits.index_fill(-1, ids, float("-inf"))


def held_ids(stop_ids: set[int] | frozenset[int], vocabulary: int, device: Any) -> torch.Tensor | None:
    """The stop ids the logits have a column for, as a tensor for hold_back (None: none)."""
    import torch

    ids = sorted(i for i in stop_ids if 0 <= i < vocabulary)
    return torch.tensor(ids, dtype=torch.long, device=device) if ids else None


def decode_steps(model: Any, batch: PromptBatch, max_new_tokens: int, sampler: Sampler | None = None,
                 stop_ids: set[int] | frozenset[int] = frozenset(), use_cache: bool = True,
                 static_cache: bool = False, compiled_step: Callable[..., Any] | None = None,
                 hidden_states_first: bool = False, retired: Sequence[bool] | None = None,
                 min_new_tokens: int = 0, cache: Any = None) -> Iterator[DecodeStep]:
    """Yield one DecodeStep per new token, for every row of the batch at once, until max_new_tokens or all rows
    have produced a stop id.

    Args:
        model: a transformers causal LM in eval mode.
        batch: left-padded prompts (prompt_batch); a padded batch gives each row what it would get alone.
        max_new_tokens: the most steps.
        sampler: greedy when None or not do_sample; sampling draws from sampler_distribution per row (make_picker
            builds the pick once, before the first step).
        stop_ids: token ids that finish a row. A finished row is still fed (its later tokens are not used) but no
            longer consumes positions: its position stays put and its mask stays 0, so a short row batched with a
            long one never runs past a context of learned positions.
        use_cache: False recomputes the whole sequence every step (the book's use_cache=False).
        static_cache: preallocate the KV cache for prompt + max_new_tokens (fixed shapes).
        compiled_step: a torch.compile'd model.forward for the one-token steps (with static_cache).
        hidden_states_first: ask the first (prompt) pass for every layer's hidden states.
        retired: rows the caller has ended (its own budget, a stop string, a client gone), read before each step:
            they count as finished from then on.
        min_new_tokens: for the first this many steps the stop ids' logits are -inf before the pick (greedy or
            sampled alike), so no row ends before it has this many tokens; max_new_tokens holds them back always
            (llama.cpp's --ignore-eos, vLLM's min_tokens). The step's logits and log-probabilities are those the
            pick saw.
        cache: the KV cache to fill instead of a new one (a what-if's evicting or narrow cache); with use_cache.
    The caller owns interruption: a KeyboardInterrupt raised while a step runs propagates out of the generator.
    """
    import torch

    device = batch.input_ids.device
    rows = batch.input_ids.shape[0]
    pick = make_picker(sampler, rows, device)
    cache_keyword, keep = forward_options(model)
    if cache is None and use_cache:
        cache = new_cache(model, static_cache, batch.input_ids.shape[1] + max_new_tokens)
    input_ids, attention_mask, positions = batch.input_ids, batch.attention_mask, batch.position_ids
    next_input = input_ids
    finished = [False] * rows
    held = None  # the stop ids' columns, found from the first step's logits when any are to be held back
    with torch.inference_mode():
        for index in range(max_new_tokens):
            if index == 0:  # later steps start right after the previous step's sync (its .tolist())
                synchronize(device)
            started = time.perf_counter()
            extra = {"output_hidden_states": True} if hidden_states_first and index == 0 else {}
            if use_cache:
                forward = compiled_step if compiled_step is not None and index else model
                # An unpadded batch needs no mask beyond causality; leaving the growing mask out of static-cache
                # steps keeps their shapes fixed, so a compiled step is not recompiled per token.
                mask = None if static_cache and index and not batch.padded else attention_mask
                output = forward(input_ids=next_input, attention_mask=mask, position_ids=positions, use_cache=True,
                                 **{cache_keyword: cache}, **keep, **extra)
            else:
                full_positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
                output = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=full_positions,
                               use_cache=False, **keep, **extra)
            logits = output.logits[:, -1].float()
            if index < min_new_tokens:
                held = held if held is not None else held_ids(stop_ids, logits.shape[-1], logits.device)
                logits = hold_back(logits, held)
            picked, chosen, distribution = pick(logits)
            # The one host sync of the step: the picked ids and their log-probabilities together.
            picked_host, chosen_host = torch.stack([picked.double(), chosen.double()]).tolist()
            token_ids = tuple(int(t) for t in picked_host)
            finished = [done or token in stop_ids for done, token in zip(finished, token_ids)]
            if retired is not None:
                finished = [done or bool(gone) for done, gone in zip(finished, retired)]
            yield DecodeStep(index=index, token_ids=token_ids, logprobs=tuple(chosen_host), logits=logits,
                             distribution=distribution,
                             finished=tuple(finished), seconds=time.perf_counter() - started, output=output)
            if retired is not None:  # the caller retires rows while handling the step just yielded
                finished = [done or bool(gone) for done, gone in zip(finished, retired)]
            if all(finished):
                return
            next_input = picked[:, None].to(device)
            live = torch.tensor([[0 if done else 1] for done in finished], dtype=torch.long, device=device)
            input_ids = torch.cat([input_ids, next_input], dim=-1)
            attention_mask = torch.cat([attention_mask, live], dim=-1)
            positions = positions[:, -1:] + live
