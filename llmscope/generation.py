"""Token-by-token generation with a KV cache (or without), timings, finish reason and per-token probabilities.
It returns GenerationResult and reports each token through an optional callback; it never prints."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmscope.errors import UsageError
from llmscope.tokenization import prompt_ids

if TYPE_CHECKING:
    import torch

    from llmscope.loader import LoadedModel


@dataclass(frozen=True)
class GenerationSettings:
    """How to pick tokens. Greedy unless do_sample; top_k 0 and top_p 1.0 mean no filter."""

    max_new_tokens: int = 50
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    use_cache: bool = True
    logprobs: int = 0  # how many alternatives to keep per generated token
    static_cache: bool = False  # a preallocated KV cache of prompt + max_new_tokens positions
    compile: bool = False  # torch.compile the one-token decode step (needs static_cache; compiles once per run)


@dataclass(frozen=True)
class TokenAlternative:
    token_id: int
    text: str
    probability: float
    logprob: float


@dataclass(frozen=True)
class GeneratedToken:
    """One generated token with how likely it was under the distribution it was drawn from."""

    index: int
    token_id: int
    text: str
    probability: float
    logprob: float
    entropy: float  # nats, of the same distribution
    seconds: float  # time of the forward pass + choice that produced it
    delta: str = ""  # what it added to the printed text ("" for special tokens, or bytes still held back)
    top: tuple[TokenAlternative, ...] = ()


@dataclass(frozen=True)
class GenerationResult:
    model: str
    prompt: str
    prompt_text: str  # what the model saw (after the chat template)
    text: str  # the continuation only
    prompt_token_ids: tuple[int, ...]
    token_ids: tuple[int, ...]
    tokens: tuple[GeneratedToken, ...]
    prompt_tokens: int
    new_tokens: int
    finish_reason: str  # "eos", "length" or "interrupted"
    time_to_first_token_s: float | None
    decode_seconds: float
    decode_tokens_per_s: float | None
    total_seconds: float
    chat_template_applied: bool
    settings: GenerationSettings
    distribution: str  # "model" (greedy: raw softmax) or "sampler" (after temperature / top-k / top-p)
    mean_logprob: float | None
    perplexity: float | None
    least_certain: GeneratedToken | None = field(default=None)

    @property
    def full_text(self) -> str:
        return self.prompt_text + self.text


TokenCallback = Callable[[GeneratedToken], None]


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


def context_length(config: Any) -> int | None:
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_lengths(config: Any, prompt_tokens: int, max_new_tokens: int) -> None:
    """Refuse an empty prompt, a prompt past the context, or a token budget that does not fit."""
    if prompt_tokens == 0:
        raise UsageError("the prompt is empty", hint="pass some text, or - to read it from stdin")
    if max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be at least 1 (got {max_new_tokens})")
    limit = context_length(config)
    if limit is None:
        return
    if prompt_tokens > limit:
        raise UsageError(f"the prompt has {prompt_tokens} tokens but the model's context is {limit}",
                         hint="shorten the prompt")
    if prompt_tokens + max_new_tokens > limit:
        raise UsageError(f"{prompt_tokens} prompt tokens + --max-new-tokens {max_new_tokens} exceed the "
                         f"model's context of {limit}", hint=f"use --max-new-tokens {limit - prompt_tokens} or less")


def check_settings(settings: GenerationSettings) -> None:
    if settings.temperature < 0 or (settings.do_sample and settings.temperature == 0):
        raise UsageError(f"--temperature must be above 0 (got {settings.temperature})",
                         hint="use a small value like 0.1 for near-greedy sampling, or leave out --sample")
    if settings.top_k < 0:
        raise UsageError(f"--top-k must be 0 (off) or more (got {settings.top_k})")
    if not 0 < settings.top_p <= 1:
        raise UsageError(f"--top-p must be in (0, 1] (got {settings.top_p})")
    if settings.logprobs < 0:
        raise UsageError(f"--logprobs must be 0 or more (got {settings.logprobs})")
    if (settings.static_cache or settings.compile) and not settings.use_cache:
        raise UsageError("--static-cache and --compile need the KV cache", hint="drop --no-cache")
    if settings.compile and not settings.static_cache:
        raise UsageError("--compile needs --static-cache (fixed shapes)", hint="add --static-cache")


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
        cumulative = torch.softmax(sorted_scores, dim=-1).cumsum(dim=-1)
        remove = cumulative - torch.softmax(sorted_scores, dim=-1) >= top_p  # keep the token that crosses top_p
        scores = scores.masked_fill(remove.scatter(-1, order, remove), float("-inf"))
    return torch.softmax(scores, dim=-1)


def entropy_nats(probabilities: torch.Tensor) -> float:
    import torch

    return float(torch.special.entr(probabilities).sum())


def _alternatives(tokenizer: Any, probabilities: torch.Tensor, count: int) -> tuple[TokenAlternative, ...]:
    import torch

    if count <= 0:
        return ()
    values, ids = torch.topk(probabilities, min(count, probabilities.shape[-1]))
    return tuple(
        TokenAlternative(token_id=int(i), text=tokenizer.decode([int(i)]), probability=float(p),
                         logprob=math.log(float(p)) if p > 0 else float("-inf"))
        for p, i in zip(values.tolist(), ids.tolist()))


def forward_options(model: Any) -> tuple[str, dict[str, int]]:
    """The keyword this model's forward takes the KV cache under, and logits_to_keep=1 where supported."""
    import inspect

    parameters = inspect.signature(model.forward).parameters
    cache_keyword = "cache" if "cache" in parameters else "past_key_values"
    return cache_keyword, ({"logits_to_keep": 1} if "logits_to_keep" in parameters else {})


@dataclass(frozen=True)
class IncrementalText:
    """Turns a growing list of token ids into printable text deltas, decoding only a short window per step.

    A character whose bytes span several tokens is held back until it is complete (no U+FFFD in the output).
    """

    tokenizer: Any
    prefix_offset: int = 0  # the window starts here: enough context for the tokenizer to place spaces
    read_offset: int = 0  # text up to here has been handed out

    def advance(self, ids: list[int]) -> tuple[str, IncrementalText]:
        decode = self.tokenizer.decode
        before = decode(ids[self.prefix_offset:self.read_offset], skip_special_tokens=True)
        after = decode(ids[self.prefix_offset:], skip_special_tokens=True)
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return "", self
        return after[len(before):], IncrementalText(self.tokenizer, self.read_offset, len(ids))


def new_cache(model: Any, settings: GenerationSettings, prompt_tokens: int) -> Any:
    """A dynamic KV cache (grows per token), or a static one sized for prompt + max_new_tokens."""
    from transformers import DynamicCache, StaticCache

    if settings.static_cache:
        return StaticCache(config=model.config, max_cache_len=prompt_tokens + settings.max_new_tokens)
    return DynamicCache(config=model.config)


def compiled_forward(model: Any) -> Callable[..., Any]:
    """torch.compile of the model's forward for one-token decode steps (fixed shapes with a static cache)."""
    import torch

    return torch.compile(model.forward, dynamic=False, fullgraph=False)


def _sync(device: Any) -> None:
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.synchronize(device)


def generate(loaded: LoadedModel, prompt: str, settings: GenerationSettings | None = None,
             chat: bool = False, system: str | None = None, on_token: TokenCallback | None = None
             ) -> GenerationResult:
    """Generate up to settings.max_new_tokens tokens after the prompt, one forward pass per token.

    Each token's probability comes from the same forward pass that produced it: the raw softmax when greedy,
    the sampler's filtered distribution when sampling. on_token(token) is called after each token; token.delta
    is the text it adds (multi-byte characters are held back until complete). Ctrl-C stops generation and
    returns what was generated with finish_reason "interrupted".
    """
    import torch

    settings = settings or GenerationSettings()
    check_settings(settings)
    model, tokenizer = loaded.model, loaded.tokenizer
    prompt_text, ids = prompt_ids(tokenizer, prompt, chat=chat, system=system)
    check_lengths(model.config, len(ids), settings.max_new_tokens)
    device = loaded.input_device
    input_ids = torch.tensor([ids], device=device)
    attention_mask = torch.ones_like(input_ids)
    stop_ids = eos_token_ids(model, tokenizer)
    sampler = None
    if settings.do_sample:
        sampler = torch.Generator(device=device)
        sampler.manual_seed(settings.seed if settings.seed is not None else torch.seed())
    cache_keyword, keep = forward_options(model)
    cache = new_cache(model, settings, len(ids)) if settings.use_cache else None
    decode_step = compiled_forward(model) if settings.compile else model

    tokens: list[GeneratedToken] = []
    new_ids: list[int] = []
    text_window = IncrementalText(tokenizer)
    finish_reason = "length"
    first_token_at: float | None = None
    _sync(device)
    started = time.perf_counter()
    step_started = started
    try:
        with torch.inference_mode():
            next_input = input_ids
            positions = torch.arange(len(ids), device=device)[None]
            for index in range(settings.max_new_tokens):
                if settings.use_cache:
                    forward = decode_step if index else model  # the prompt pass has its own shape: never compiled
                    # One unpadded sequence needs no mask beyond causality; leaving the growing mask out of the
                    # static-cache steps keeps their shapes fixed, so a compiled step is not recompiled per token.
                    mask = None if settings.static_cache and index else attention_mask
                    output = forward(input_ids=next_input, attention_mask=mask, position_ids=positions,
                                     use_cache=True, **{cache_keyword: cache}, **keep)
                else:
                    output = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **keep)
                logits = output.logits[0, -1].float()
                if settings.do_sample:
                    probabilities = sampler_distribution(logits, settings.temperature, settings.top_k, settings.top_p)
                    token_id = int(torch.multinomial(probabilities, 1, generator=sampler))
                else:
                    probabilities = torch.softmax(logits, dim=-1)
                    token_id = int(torch.argmax(logits))
                probability = float(probabilities[token_id])
                now = time.perf_counter()
                if first_token_at is None:
                    first_token_at = now
                new_ids.append(token_id)
                delta, text_window = text_window.advance(new_ids)
                token = GeneratedToken(
                    index=index, token_id=token_id, text=tokenizer.decode([token_id]), probability=probability,
                    logprob=math.log(probability) if probability > 0 else float("-inf"),
                    entropy=entropy_nats(probabilities), seconds=now - step_started, delta=delta,
                    top=_alternatives(tokenizer, probabilities, settings.logprobs))
                step_started = now
                tokens.append(token)
                if on_token is not None:
                    on_token(token)
                if token_id in stop_ids:
                    finish_reason = "eos"
                    break
                next_token = torch.tensor([[token_id]], device=device)
                input_ids = torch.cat([input_ids, next_token], dim=-1)
                attention_mask = torch.cat([attention_mask, torch.ones_like(next_token)], dim=-1)
                next_input = next_token
                positions = positions[:, -1:] + 1
    except KeyboardInterrupt:
        finish_reason = "interrupted"
    finished = time.perf_counter()
    return _result(loaded, prompt, prompt_text, ids, tokens, new_ids, finish_reason, started, first_token_at,
                   finished, chat, settings)


def _result(loaded: LoadedModel, prompt: str, prompt_text: str, ids: list[int], tokens: list[GeneratedToken],
            new_ids: list[int], finish_reason: str, started: float, first_token_at: float | None, finished: float,
            chat: bool, settings: GenerationSettings) -> GenerationResult:
    decode_steps = max(len(tokens) - 1, 0)
    decode_seconds = finished - first_token_at if first_token_at is not None else 0.0
    finite = [t.logprob for t in tokens if math.isfinite(t.logprob)]
    mean_logprob = sum(finite) / len(finite) if finite else None
    return GenerationResult(
        model=loaded.spec.name, prompt=prompt, prompt_text=prompt_text,
        text=loaded.tokenizer.decode(new_ids, skip_special_tokens=True),
        prompt_token_ids=tuple(ids), token_ids=tuple(new_ids), tokens=tuple(tokens), prompt_tokens=len(ids),
        new_tokens=len(new_ids), finish_reason=finish_reason,
        time_to_first_token_s=None if first_token_at is None else first_token_at - started,
        decode_seconds=decode_seconds,
        decode_tokens_per_s=decode_steps / decode_seconds if decode_steps and decode_seconds > 0 else None,
        total_seconds=finished - started, chat_template_applied=chat, settings=settings,
        distribution="sampler" if settings.do_sample else "model",
        mean_logprob=mean_logprob, perplexity=math.exp(-mean_logprob) if mean_logprob is not None else None,
        least_certain=min(tokens, key=lambda t: t.probability) if tokens else None)
