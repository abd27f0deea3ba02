"""Teacher-forced scoring of a given text: each token's probability, rank, the model's own top choice and entropy,
perplexity and bits per byte, with a sliding window for texts longer than the context. It never prints."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmscope.core.errors import UsageError
from llmscope.generation.generate import TokenAlternative
from llmscope.loading.tokenization import token_bytes

if TYPE_CHECKING:
    import torch

    from llmscope.loading.loader import LoadedModel

CHUNK_ROWS = 256  # log-softmax rows computed at once (256 x a 49k vocabulary = 50 MB in float32)


@dataclass(frozen=True)
class ScoreSettings:
    """What to score and how. Checked on creation, before any model loads; rules needing the model come later.

    The first token of a text has nothing to be predicted from. When the tokenizer itself adds a BOS token, the
    text is scored after BOS (every text token counts); otherwise the first token is context only (not scored).
    With `prompt`, TEXT is scored as the continuation of the prompt (with `chat`, as the assistant's answer under
    the chat template); the prompt's tokens are context only.
    """

    prompt: str | None = None
    chat: bool = False
    system: str | None = None
    window: int | None = None  # tokens per forward pass; None: the model's context length
    stride: int | None = None  # tokens the window moves each step; None: half the window
    max_tokens: int | None = None  # score at most this many text tokens (the rest is dropped)
    top_k: int = 0  # alternatives kept per token (OpenAI-style top_logprobs)
    worst: int = 5  # how many of the most surprising tokens the summary names

    def __post_init__(self) -> None:
        if self.window is not None and self.window < 2:
            raise UsageError(f"--window must be at least 2 tokens (got {self.window})")
        if self.stride is not None and self.stride < 1:
            raise UsageError(f"--stride must be at least 1 (got {self.stride})")
        if self.window is not None and self.stride is not None and self.stride >= self.window:
            raise UsageError(f"--stride {self.stride} must be smaller than --window {self.window}",
                             hint="each window keeps window - stride tokens of context for the tokens it scores")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise UsageError(f"--max-tokens must be at least 1 (got {self.max_tokens})")
        if self.top_k < 0:
            raise UsageError(f"--top-k must be 0 or more (got {self.top_k})")
        if self.worst < 0:
            raise UsageError(f"--worst must be 0 or more (got {self.worst})")
        if self.chat and self.prompt is None:
            raise UsageError("--chat scores TEXT as the answer to a question", hint="add --prompt QUESTION")
        if self.system is not None and not self.chat:
            raise UsageError("--system needs --chat")


@dataclass(frozen=True)
class ScoredToken:
    """One token of the text as the model predicted it from the tokens before it."""

    position: int  # in the token sequence the model read (context included)
    token_id: int
    text: str
    delta: str  # what it adds to the printed text (multi-byte characters complete on their last token)
    probability: float
    logprob: float
    rank: int  # 1 = the model's top choice
    top_id: int
    top_text: str
    top_probability: float
    entropy: float  # nats
    context: int  # tokens the model saw before it (fewer than the position inside a sliding window)
    top: tuple[TokenAlternative, ...] = ()
    bytes: tuple[int, ...] = ()  # the token's own bytes (part of a character for some byte-level tokens)


@dataclass(frozen=True)
class ScoreResult:
    model: str
    text: str
    prompt: str | None
    context_text: str  # the unscored text before the scored tokens (prompt, chat template, first token)
    chat_template_applied: bool
    bos_prepended: bool  # the tokenizer adds BOS, so the first text token is scored after it
    first_token_skipped: bool  # no BOS and no prompt: the first token is context only
    token_ids: tuple[int, ...]  # everything the model read
    context_tokens: int  # leading tokens that are context only
    tokens: tuple[ScoredToken, ...]
    tokens_scored: int
    text_tokens: int  # tokens of TEXT before --max-tokens
    truncated: bool
    total_nll: float  # nats
    mean_nll: float | None
    perplexity: float | None
    scored_bytes: int  # UTF-8 bytes of the scored tokens' text
    bits_per_byte: float | None
    window: int
    stride: int
    windows: int  # forward passes
    min_context: int
    mean_context: float
    most_surprising: tuple[ScoredToken, ...]
    seconds: float
    settings: ScoreSettings


@dataclass(frozen=True)
class PreparedText:
    """Token ids ready for scoring: the context (not scored) and the text (scored)."""

    ids: tuple[int, ...]
    first_target: int  # ids[first_target:] are scored
    context_text: str
    bos_prepended: bool
    first_token_skipped: bool
    text_tokens: int
    truncated: bool


def prepare_ids(tokenizer: Any, text: str, settings: ScoreSettings) -> PreparedText:
    """Tokenize TEXT (on its own, no special tokens) after its context: BOS, the prompt, or the chat template."""
    from llmscope.loading.tokenization import prompt_ids

    text_ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if not text_ids:
        raise UsageError("the text is empty", hint="pass some text, --file PATH, or - to read stdin")
    count = len(text_ids)
    if settings.max_tokens is not None:
        text_ids = text_ids[: settings.max_tokens]
    bos_prepended = skipped = False
    if settings.prompt is not None:
        if not settings.prompt.strip():
            raise UsageError("--prompt is empty", hint="pass the context the text follows, or leave --prompt out")
        context_text, context = prompt_ids(tokenizer, settings.prompt, chat=settings.chat, system=settings.system)
    else:
        bos = getattr(tokenizer, "bos_token_id", None)
        with_special = list(tokenizer(text, add_special_tokens=True)["input_ids"])
        bos_prepended = bos is not None and with_special[:1] == [bos] and text_ids[:1] != [bos]
        context = [bos] if bos_prepended else []
        context_text = tokenizer.decode(context) if context else ""
    if not context:
        skipped = True
        context_text = tokenizer.decode(text_ids[:1])
    ids = tuple(int(i) for i in context + text_ids)
    return PreparedText(ids=ids, first_target=max(len(context), 1), context_text=context_text,
                        bos_prepended=bos_prepended, first_token_skipped=skipped, text_tokens=count,
                        truncated=len(text_ids) < count)


def window_plan(length: int, first_target: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, first scored position) of each forward pass, as in transformers' perplexity guide.

    Windows of `window` tokens start every `stride` tokens; each scores the positions the previous one did not
    reach, so every scored token after the first window sees at least window - stride tokens of context.
    """
    plan = []
    reached = 0
    for begin in range(0, length, stride):
        end = min(begin + window, length)
        start = max(reached, begin + 1, first_target)
        if start < end:
            plan.append((begin, end, start))
        reached = end
        if end == length:
            break
    return plan


def resolve_window(loaded: LoadedModel, settings: ScoreSettings, length: int) -> tuple[int, int]:
    """The window and stride for this model: --window up to the model's context, the stride half of it."""
    from llmscope.loading.modelconfig import context_length

    limit = context_length(loaded.model.config)
    window = settings.window or limit or length
    if limit is not None and window > limit:
        raise UsageError(f"--window {window} is longer than the model's context of {limit} tokens",
                         hint=f"use --window {limit} or less")
    window = max(window, 2)
    stride = settings.stride or max(window // 2, 1)
    if stride >= window:
        raise UsageError(f"--stride {stride} must be smaller than the window of {window} tokens")
    return window, stride


@dataclass(frozen=True)
class LogprobChunk:
    """Log-probabilities (float32, [rows, vocab]) predicting `targets`, each read with `contexts` tokens before it."""

    targets: list[int]  # positions in the ids
    contexts: list[int]
    logprobs: Any  # torch.Tensor; lives only inside the compute layer


def logprob_chunks(loaded: LoadedModel, ids: tuple[int, ...], plan: list[tuple[int, int, int]],
                   next_token: bool = False) -> Iterator[LogprobChunk]:
    """One forward pass per window; yields the log-softmax rows that predict each scored position, in order.

    With next_token, a last chunk holds the distribution after the final token (targets [len(ids)]).
    """
    import torch

    from llmscope.generation.decoding import forward_options

    _, keep = forward_options(loaded.model)
    device = loaded.input_device
    # Inference mode is entered around each computation and left before each yield: a generator that yields inside
    # it leaves it switched on in its caller for as long as the generator is unfinished (compare zips two).
    for number, (begin, end, start) in enumerate(plan):
        with_next = next_token and number == len(plan) - 1  # the last window ends at the last token
        rows = end - start + 1  # the rows predicting start..end-1, and the one after the window's last token
        extra = {"logits_to_keep": rows} if keep else {}
        window_ids = torch.tensor([ids[begin:end]], device=device)
        with torch.inference_mode():
            logits = loaded.model(input_ids=window_ids, use_cache=False, **extra).logits[0, -rows:]
        if not with_next:
            logits = logits[:-1]
        positions = list(range(start, end)) + ([len(ids)] if with_next else [])
        for offset in range(0, len(positions), CHUNK_ROWS):
            block = positions[offset:offset + CHUNK_ROWS]
            with torch.inference_mode():
                logprobs = torch.log_softmax(logits[offset:offset + len(block)].float(), dim=-1)
            yield LogprobChunk(targets=block, contexts=[p - begin for p in block], logprobs=logprobs)


@dataclass(frozen=True)
class TokenFigures:
    """Per-row figures of a log-probability chunk against the tokens that came (plain lists)."""

    logprobs: list[float]
    ranks: list[int]
    top_ids: list[int]
    top_logprobs: list[float]
    entropies: list[float]


def token_figures(logprobs: torch.Tensor, target_ids: list[int]) -> TokenFigures:
    """Log-probability, rank, top choice and entropy (nats) of each row for its target id: the one definition."""
    import torch

    targets = torch.tensor(target_ids, device=logprobs.device)[:, None]
    chosen = logprobs.gather(1, targets)
    ranks = (logprobs > chosen).sum(dim=1) + 1
    top_logprobs, top_ids = logprobs.max(dim=1)
    entropies = torch.special.entr(logprobs.exp()).sum(dim=1)
    return TokenFigures(logprobs=chosen[:, 0].tolist(), ranks=ranks.tolist(), top_ids=top_ids.tolist(),
                        top_logprobs=top_logprobs.tolist(), entropies=entropies.tolist())


def nll_summary(logprobs: list[float], scored_bytes: int) -> tuple[float, float | None, float | None, float | None]:
    """(total NLL in nats, mean NLL, perplexity = exp(mean NLL), bits per UTF-8 byte = total / ln 2 / bytes)."""
    total = -math.fsum(logprobs)
    if not logprobs:
        return total, None, None, None
    mean = total / len(logprobs)
    return total, mean, math.exp(mean), (total / math.log(2) / scored_bytes if scored_bytes else None)


def text_deltas(tokenizer: Any, ids: tuple[int, ...], first: int) -> list[str]:
    """What each of ids[first:] adds to the decoded text (a character split over tokens lands on its last one)."""
    from llmscope.generation.generate import IncrementalText

    window = IncrementalText(tokenizer, 0, 0)
    _, window = window.advance(list(ids[:first]))
    deltas = []
    for end in range(first + 1, len(ids) + 1):
        delta, window = window.advance(list(ids[:end]))
        deltas.append(delta)
    return deltas


def _alternatives(tokenizer: Any, row: torch.Tensor, count: int) -> tuple[TokenAlternative, ...]:
    import torch

    if count <= 0:
        return ()
    values, indices = torch.topk(row, min(count, row.shape[-1]))
    return tuple(TokenAlternative(token_id=int(i), text=tokenizer.decode([int(i)]), probability=math.exp(v), logprob=v,
                                  bytes=token_bytes(tokenizer, int(i)))
                 for v, i in zip(values.tolist(), indices.tolist()))


def prepare_scoring(loaded: LoadedModel, text: str, settings: ScoreSettings
                    ) -> tuple[PreparedText, list[tuple[int, int, int]], int, int]:
    """Tokens, the window plan, the window and the stride: the model-dependent checks of score and compare."""
    from llmscope.generation.prompts import check_ids_fit

    prepared = prepare_ids(loaded.tokenizer, text, settings)
    check_ids_fit(loaded.model, prepared.ids)
    if len(prepared.ids) < 2:
        raise UsageError("the text is a single token with nothing before it: there is nothing to predict it from",
                         hint="pass a longer text, or --prompt with the context")
    window, stride = resolve_window(loaded, settings, len(prepared.ids))
    return prepared, window_plan(len(prepared.ids), prepared.first_target, window, stride), window, stride


def score_text(loaded: LoadedModel, text: str, settings: ScoreSettings | None = None) -> ScoreResult:
    """Score `text` under the model, teacher-forced: one forward pass per window, one record per scored token.

    Args:
        loaded: the model and tokenizer (loader.load_model).
        text: the text to score; called once per text (one line of a batch, for example).
        settings: prompt / chat context, window and stride, --max-tokens, alternatives kept, tokens named.
    Returns:
        ScoreResult: per-token figures and the summary (total and mean NLL, perplexity, bits per byte).
    Raises:
        UsageError for an empty text or a window longer than the model's context.
    """
    settings = settings or ScoreSettings()
    started = time.perf_counter()
    tokenizer = loaded.tokenizer
    prepared, plan, window, stride = prepare_scoring(loaded, text, settings)
    ids = prepared.ids
    deltas = text_deltas(tokenizer, ids, prepared.first_target)
    tokens: list[ScoredToken] = []
    for chunk in logprob_chunks(loaded, ids, plan):
        figures = token_figures(chunk.logprobs, [ids[p] for p in chunk.targets])
        for row, position in enumerate(chunk.targets):
            token_id = ids[position]
            logprob = figures.logprobs[row]
            tokens.append(ScoredToken(
                position=position, token_id=token_id, text=tokenizer.decode([token_id]),
                delta=deltas[position - prepared.first_target], probability=math.exp(logprob), logprob=logprob,
                rank=figures.ranks[row], top_id=figures.top_ids[row], top_text=tokenizer.decode([figures.top_ids[row]]),
                top_probability=math.exp(figures.top_logprobs[row]), entropy=figures.entropies[row],
                context=chunk.contexts[row], top=_alternatives(tokenizer, chunk.logprobs[row], settings.top_k),
                bytes=token_bytes(tokenizer, token_id)))
    scored_bytes = len("".join(deltas).encode("utf-8"))
    total, mean, perplexity, bits = nll_summary([t.logprob for t in tokens], scored_bytes)
    worst = sorted(tokens, key=lambda t: t.logprob)[: settings.worst]
    contexts = [t.context for t in tokens]
    return ScoreResult(
        model=loaded.spec.name, text=text, prompt=settings.prompt, context_text=prepared.context_text,
        chat_template_applied=settings.chat, bos_prepended=prepared.bos_prepended,
        first_token_skipped=prepared.first_token_skipped, token_ids=ids, context_tokens=prepared.first_target,
        tokens=tuple(tokens), tokens_scored=len(tokens), text_tokens=prepared.text_tokens,
        truncated=prepared.truncated, total_nll=total, mean_nll=mean, perplexity=perplexity,
        scored_bytes=scored_bytes, bits_per_byte=bits, window=window, stride=stride, windows=len(plan),
        min_context=min(contexts), mean_context=sum(contexts) / len(contexts), most_surprising=tuple(worst),
        seconds=time.perf_counter() - started, settings=settings)
