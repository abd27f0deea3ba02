"""Generation on the decode-step core (generation.decoding): one prompt, or many in padded batches, with timings,
finish reason and per-token probabilities. It returns GenerationResult per prompt and never prints."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmscope.core.command_settings import GenerationSettings
from llmscope.generation.decoding import (
    Sampler,
    decode_steps,
    entropy_nats,
    eos_token_ids,
    pad_token_id,
    prompt_batch,
    synchronize,
)
from llmscope.generation.prompts import EncodedPrompt, encode_prompt
from llmscope.loading.tokenization import token_bytes

if TYPE_CHECKING:
    import torch

    from llmscope.loading.loader import LoadedModel

__all__ = ["GeneratedToken", "GenerationResult", "GenerationSettings", "IncrementalText", "TokenAlternative",
           "generate", "generate_many"]


@dataclass(frozen=True)
class TokenAlternative:
    token_id: int
    text: str
    probability: float
    logprob: float
    bytes: tuple[int, ...]  # the token's own bytes (part of a character for some byte-level tokens)


@dataclass(frozen=True)
class GeneratedToken:
    """One generated token with how likely it was under the distribution it was drawn from."""

    index: int
    token_id: int
    probability: float
    logprob: float
    seconds: float  # time of the forward pass + choice that produced it
    text: str | None = None  # the token alone, decoded (kept when streaming, --show-probs or --logprobs)
    delta: str = ""  # what it added to the printed text ("" for special tokens, or bytes still held back)
    entropy: float | None = None  # nats, of the same distribution (computed only when asked for)
    top: tuple[TokenAlternative, ...] = ()  # the --logprobs alternatives
    bytes: tuple[int, ...] = ()  # the token's own bytes (with --logprobs)


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
    finish_reason: str  # "eos", "length", "interrupted" or "stopped" (stop_row)
    time_to_first_token_s: float | None
    decode_seconds: float
    decode_tokens_per_s: float | None
    prompt_tokens_per_s: float | None  # prompt tokens / time to first token
    total_seconds: float
    chat_template_applied: bool
    settings: GenerationSettings
    distribution: str  # "model" (greedy: raw softmax) or "sampler" (after temperature / top-k / top-p)
    mean_logprob: float | None
    perplexity: float | None
    least_certain: GeneratedToken | None = field(default=None)
    peak_memory_bytes: int | None = None  # CUDA: peak allocated by torch; CPU: the process's peak RSS
    batch_size: int = 1  # prompts that ran together (timings are the batch's)

    @property
    def full_text(self) -> str:
        return self.prompt_text + self.text


@dataclass(frozen=True)
class TokenDetail:
    """Per-token work beyond the id and probability, done only when something will show it."""

    texts: bool = False  # each token's own text (for --show-probs and --logprobs)
    entropy: bool = False  # the distribution's entropy (for --show-probs=entropy and --logprobs)
    alternatives: int = 0  # the top-K alternatives (--logprobs K)


TokenCallback = Callable[[GeneratedToken], None]


def _alternatives(tokenizer: Any, probabilities: torch.Tensor, count: int) -> tuple[TokenAlternative, ...]:
    import torch

    kept = int((probabilities > 0).sum())  # zero-probability tokens are never alternatives
    values, ids = torch.topk(probabilities, min(count, kept))
    return tuple(
        TokenAlternative(token_id=int(i), text=tokenizer.decode([int(i)]), probability=float(p),
                         logprob=math.log(float(p)), bytes=token_bytes(tokenizer, int(i)))
        for p, i in zip(values.tolist(), ids.tolist()))
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




def peak_memory_bytes(device: Any) -> int | None:
    """Peak memory so far: CUDA memory torch allocated on a GPU, the process's peak resident set on the CPU."""
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        return int(torch.cuda.max_memory_allocated(device))
    try:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux
    except (ImportError, OSError):
        return None


def generate(loaded: LoadedModel, prompt: str, settings: GenerationSettings | None = None,
             chat: bool = False, system: str | None = None, on_token: TokenCallback | None = None,
             detail: TokenDetail | None = None) -> GenerationResult:
    """Generate up to settings.max_new_tokens tokens after the prompt, one forward pass per token.

    Each token's probability comes from the same forward pass that produced it: the raw softmax when greedy,
    the sampler's filtered distribution when sampling. on_token(token) is called after each token with
    token.delta, the text it adds (multi-byte characters are held back until complete). Ctrl-C stops generation
    and returns what was generated with finish_reason "interrupted".
    """
    settings = settings or GenerationSettings()
    encoded = encode_prompt(loaded, prompt, chat=chat, system=system, new_tokens=settings.max_new_tokens)
    return generate_encoded(loaded, [encoded], settings, on_token=on_token, detail=detail)[0]


def generate_many(loaded: LoadedModel, prompts: Sequence[str], settings: GenerationSettings | None = None,
                  chat: bool = False, system: str | None = None, batch_size: int = 8,
                  detail: TokenDetail | None = None) -> Iterator[GenerationResult]:
    """Generate for many prompts in padded batches of batch_size; yields one result per prompt, in order.

    Every prompt gets the tokens it would get alone (greedy: the same ids; sampling: the same seed per prompt).
    Raises UsageError on the first prompt that does not fit (the CLI's --batch turns that into an error record).
    """
    settings = settings or GenerationSettings()
    encoded = [encode_prompt(loaded, p, chat=chat, system=system, new_tokens=settings.max_new_tokens)
               for p in prompts]
    for start in range(0, len(encoded), batch_size):
        yield from generate_encoded(loaded, encoded[start:start + batch_size], settings, detail=detail)


def generate_encoded(loaded: LoadedModel, prompts: Sequence[EncodedPrompt], settings: GenerationSettings,
                     on_token: TokenCallback | None = None, detail: TokenDetail | None = None,
                     on_row_token: Callable[[int, GeneratedToken], None] | None = None,
                     stop_row: Callable[[int], bool] | None = None) -> list[GenerationResult]:
    """Generate for already-encoded prompts in one padded batch (on_token reports the first row's tokens).

    on_row_token(row, token) reports every row's tokens; stop_row(row), asked after each of a row's tokens, ends
    that row early (finish_reason "stopped": a stop string, its own token budget, or a client gone). The batch
    ends when every row has.
    """
    import torch

    detail = detail or TokenDetail(texts=on_token is not None or settings.logprobs > 0,
                                   entropy=settings.logprobs > 0, alternatives=settings.logprobs)
    if on_token is not None and not detail.texts:
        detail = TokenDetail(texts=True, entropy=detail.entropy, alternatives=detail.alternatives)
    model, tokenizer = loaded.model, loaded.tokenizer
    device = loaded.input_device
    batch = prompt_batch([p.ids for p in prompts], pad_token_id(tokenizer), device)
    sampler = Sampler(settings.do_sample, settings.temperature, settings.top_k, settings.top_p, settings.seed)
    compiled = torch.compile(model.forward, dynamic=False, fullgraph=False) if settings.compile else None
    rows = len(prompts)
    tokens: list[list[GeneratedToken]] = [[] for _ in range(rows)]
    windows = [IncrementalText(tokenizer) for _ in range(rows)]
    done = [False] * rows
    finish = ["length"] * rows
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    first_token_at: float | None = None
    synchronize(device)
    started = time.perf_counter()
    try:
        for step in decode_steps(model, batch, settings.max_new_tokens, sampler, eos_token_ids(model, tokenizer),
                                 use_cache=settings.use_cache, static_cache=settings.static_cache,
                                 compiled_step=compiled, retired=done, min_new_tokens=settings.eos_held_for):
            if first_token_at is None:
                first_token_at = time.perf_counter()
            for row in range(rows):
                if done[row]:
                    continue
                token = _token(step, row, tokens[row], windows, tokenizer, detail)
                tokens[row].append(token)
                if on_token is not None and row == 0:
                    on_token(token)
                if on_row_token is not None:
                    on_row_token(row, token)
                if step.finished[row]:
                    done[row], finish[row] = True, "eos"
                elif stop_row is not None and stop_row(row):
                    done[row], finish[row] = True, "stopped"
            if all(done):
                break
    except KeyboardInterrupt:
        finish = ["interrupted" if not d else f for d, f in zip(done, finish)]
    finished = time.perf_counter()
    peak = peak_memory_bytes(device)
    return [_result(loaded, prompt, tokens[row], finish[row], started, first_token_at, finished, settings, peak,
                    rows) for row, prompt in enumerate(prompts)]


def _token(step: Any, row: int, earlier: list[GeneratedToken], windows: list[IncrementalText], tokenizer: Any,
           detail: TokenDetail) -> GeneratedToken:
    """The record of one row's token at one step, with only the detail asked for."""
    import torch

    token_id, logprob = step.token_ids[row], step.logprobs[row]
    text, delta, entropy, top, own_bytes = None, "", None, (), ()
    if detail.texts:
        text = tokenizer.decode([token_id])
        delta, windows[row] = windows[row].advance([t.token_id for t in earlier] + [token_id])
        own_bytes = token_bytes(tokenizer, token_id)
    if detail.entropy or detail.alternatives:
        distribution = step.distribution[row] if step.distribution is not None else torch.softmax(
            step.logits[row], dim=-1)
        entropy = entropy_nats(distribution) if detail.entropy else None
        top = _alternatives(tokenizer, distribution, detail.alternatives) if detail.alternatives else ()
    return GeneratedToken(index=step.index, token_id=token_id, probability=math.exp(logprob), logprob=logprob,
                          seconds=step.seconds, text=text, delta=delta, entropy=entropy, top=top, bytes=own_bytes)


def _result(loaded: LoadedModel, prompt: EncodedPrompt, tokens: list[GeneratedToken], finish_reason: str,
            started: float, first_token_at: float | None, finished: float, settings: GenerationSettings,
            peak: int | None, batch_size: int) -> GenerationResult:
    tokenizer = loaded.tokenizer
    new_ids = [t.token_id for t in tokens]
    decode_steps_done = max(len(tokens) - 1, 0)
    decode_seconds = finished - first_token_at if first_token_at is not None else 0.0
    ttft = None if first_token_at is None else first_token_at - started
    finite = [t.logprob for t in tokens if math.isfinite(t.logprob)]
    mean_logprob = sum(finite) / len(finite) if finite else None
    least = min(tokens, key=lambda t: t.probability) if tokens else None
    if least is not None and least.text is None:
        least = GeneratedToken(**{**least.__dict__, "text": tokenizer.decode([least.token_id])})
    return GenerationResult(
        model=loaded.spec.name, prompt=prompt.prompt, prompt_text=prompt.text,
        text=tokenizer.decode(new_ids, skip_special_tokens=True),
        prompt_token_ids=prompt.ids, token_ids=tuple(new_ids), tokens=tuple(tokens), prompt_tokens=len(prompt.ids),
        new_tokens=len(new_ids), finish_reason=finish_reason, time_to_first_token_s=ttft,
        decode_seconds=decode_seconds,
        decode_tokens_per_s=decode_steps_done / decode_seconds if decode_steps_done and decode_seconds > 0 else None,
        prompt_tokens_per_s=len(prompt.ids) / ttft if ttft else None,
        total_seconds=finished - started, chat_template_applied=prompt.chat, settings=settings,
        distribution="sampler" if settings.do_sample else "model",
        mean_logprob=mean_logprob, perplexity=math.exp(-mean_logprob) if mean_logprob is not None else None,
        least_certain=least, peak_memory_bytes=peak, batch_size=batch_size)
