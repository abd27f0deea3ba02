"""Compare two models (or one model in two precisions) on the same text, teacher-forced: KL(A‖B) per position,
top-1 / top-5 agreement, perplexity under each, and the next-token tables side by side. It never prints."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmscope.core.errors import InputMismatchError, UsageError
from llmscope.inspection.scoring import (
    LogprobChunk,
    ScoreSettings,
    logprob_chunks,
    nll_summary,
    prepare_scoring,
    text_deltas,
    token_figures,
)

if TYPE_CHECKING:
    import torch

    from llmscope.loading.loader import LoadedModel

DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class CompareSettings:
    """What to compare; checked on creation, before any model loads."""

    score: ScoreSettings = field(default_factory=ScoreSettings)
    against: str | None = None  # model B's spec; None: model A again (in against_dtype)
    against_dtype: str | None = None
    against_quantize: str | None = None  # model B's --quantize (auto, none, int8, int4)
    worst: int = 10  # positions named where the models part most
    next_token: bool = False
    top_k: int = 10  # rows of the next-token tables

    def __post_init__(self) -> None:
        if self.against is None and self.against_dtype is None and self.against_quantize is None:
            raise UsageError("compare needs a second model",
                             hint="add --against MODEL, --against-dtype bfloat16 or --against-quantize none")
        if self.against is not None and not self.against.strip():
            raise UsageError("--against is empty", hint="pass model B (a hub id, folder, .gguf file or alias), or "
                             "leave --against out to compare model A with itself in --against-dtype")
        if self.against_dtype is not None and self.against_dtype not in DTYPES:
            raise UsageError(f"--against-dtype must be one of {', '.join(DTYPES)} (got {self.against_dtype!r})")
        if self.worst < 0:
            raise UsageError(f"--worst must be 0 or more (got {self.worst})")
        if self.top_k < 1:
            raise UsageError(f"--top-k must be at least 1 (got {self.top_k})")


@dataclass(frozen=True)
class ComparedPosition:
    """One scored position read by both models."""

    position: int
    token_id: int
    text: str
    delta: str
    kl: float  # KL(A‖B) in nats over the whole vocabulary
    top_agree: bool
    top5_same: bool  # the same set of five most likely tokens
    a_top_id: int
    a_top_text: str
    a_top_probability: float
    b_top_id: int
    b_top_text: str
    b_top_probability: float
    a_logprob: float  # of the token that came
    b_logprob: float


@dataclass(frozen=True)
class NextTokenRow:
    rank: int
    a_id: int
    a_text: str
    a_probability: float
    a_probability_under_b: float  # the same token's probability under B
    b_id: int
    b_text: str
    b_probability: float
    b_probability_under_a: float


@dataclass(frozen=True)
class CompareResult:
    model_a: str
    model_b: str
    dtype_a: str
    dtype_b: str
    text: str
    token_ids: tuple[int, ...]
    context_tokens: int
    context_text: str
    bos_prepended: bool
    first_token_skipped: bool
    truncated: bool
    positions: tuple[ComparedPosition, ...]
    tokens_compared: int
    kl_mean: float
    kl_max: float
    kl_p99: float
    kl_median: float
    top1_agreement: float  # percent
    top5_same: float  # percent
    perplexity_a: float | None
    perplexity_b: float | None
    bits_per_byte_a: float | None
    bits_per_byte_b: float | None
    most_different: tuple[ComparedPosition, ...]
    next_token: tuple[NextTokenRow, ...]
    next_token_kl: float | None
    window: int
    stride: int
    windows: int
    seconds: float
    settings: CompareSettings
    weights_a: str = ""  # how each side's weights are held (ModelInfo.weights_label), e.g. "float32"
    weights_b: str = ""
    endpoint_b: str | None = None  # the server that gave B's figures (--against-endpoint)


def first_difference(a: list[int] | tuple[int, ...], b: list[int] | tuple[int, ...]) -> int | None:
    """The first position where two id sequences differ (the shorter length when one is a prefix), or None."""
    for position, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return position
    return None if len(a) == len(b) else min(len(a), len(b))


def percentile(values: list[float], share: float) -> float:
    """The share-th quantile with linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    place = (len(ordered) - 1) * share
    low = math.floor(place)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (place - low)


def _check_same_tokens(a: LoadedModel, b: LoadedModel, text: str, settings: ScoreSettings) -> None:
    from llmscope.inspection.scoring import prepare_ids

    ids_a, ids_b = prepare_ids(a.tokenizer, text, settings).ids, prepare_ids(b.tokenizer, text, settings).ids
    where = first_difference(ids_a, ids_b)
    if where is None:
        return

    def show(loaded: LoadedModel, ids: tuple[int, ...]) -> str:
        return repr(loaded.tokenizer.decode([ids[where]])) + f" (id {ids[where]})" if where < len(ids) else "the end"

    raise InputMismatchError(
        f"the two models tokenize the text differently: first at token {where}, {a.spec.name} has "
        f"{show(a, ids_a)} and {b.spec.name} has {show(b, ids_b)}",
        hint="compare models that share a tokenizer (`llmscope tokenize TEXT -m A -m B` shows both)")


def compare_texts(a: LoadedModel, b: LoadedModel, text: str, settings: CompareSettings,
                  b_chunks: Callable[[tuple[int, ...], list[tuple[int, int, int]], bool], Iterator[LogprobChunk]]
                  | None = None) -> CompareResult:
    """Run both models over the same tokens and measure how their next-token distributions differ.

    KL(A‖B) = Σ p_A (log p_A − log p_B) over the vocabulary, in float32, at each scored position (the positions
    `score` scores, with the same window and stride). Raises InputMismatchError when the tokenizers disagree.
    b_chunks(ids, plan, next_token) gives B's log-probability rows from elsewhere (a server, which checks the
    tokens itself); b then only names B (spec.name, dtype) and A's window plan is used.
    """
    import torch

    started = time.perf_counter()
    if b_chunks is None:
        _check_same_tokens(a, b, text, settings.score)
    prepared, plan_a, window_a, stride_a = prepare_scoring(a, text, settings.score)
    if b_chunks is None:
        _, plan_b, window_b, stride_b = prepare_scoring(b, text, settings.score)
    else:
        plan_b, window_b, stride_b = plan_a, window_a, stride_a
    plan, window, stride = (plan_a, window_a, stride_a) if window_a <= window_b else (plan_b, window_b, stride_b)
    ids = prepared.ids
    deltas = text_deltas(a.tokenizer, ids, prepared.first_target)
    positions: list[ComparedPosition] = []
    next_rows: tuple[NextTokenRow, ...] = ()
    next_kl = None
    chunks_b = b_chunks(ids, plan, settings.next_token) if b_chunks is not None else logprob_chunks(
        b, ids, plan, next_token=settings.next_token)
    chunks = zip(logprob_chunks(a, ids, plan, next_token=settings.next_token), chunks_b)
    for chunk_a, chunk_b in chunks:
        logp_a, logp_b = chunk_a.logprobs, chunk_b.logprobs.to(chunk_a.logprobs.device)
        if logp_a.shape[-1] != logp_b.shape[-1]:
            raise InputMismatchError(f"the two models' vocabularies differ in size ({logp_a.shape[-1]} and "
                                     f"{logp_b.shape[-1]} logits)", hint="compare models that share a tokenizer")
        kl = torch.sum(torch.exp(logp_a) * (logp_a - logp_b), dim=-1).clamp_min(0.0).tolist()
        top5_a = torch.topk(logp_a, min(5, logp_a.shape[-1])).indices.sort(dim=-1).values
        top5_b = torch.topk(logp_b, min(5, logp_b.shape[-1])).indices.sort(dim=-1).values
        top5_same = (top5_a == top5_b).all(dim=-1).tolist()
        targets = chunk_a.targets
        if targets[-1] == len(ids):  # the distribution after the text: the next-token tables
            next_rows, next_kl = _next_token_rows(a, logp_a[-1], logp_b[-1], settings.top_k), kl[-1]
            targets = targets[:-1]
        if not targets:
            continue
        target_ids = [ids[p] for p in targets]
        fig_a, fig_b = token_figures(logp_a[: len(targets)], target_ids), token_figures(logp_b[: len(targets)],
                                                                                          target_ids)
        for row, position in enumerate(targets):
            top_a, top_b = fig_a.top_ids[row], fig_b.top_ids[row]
            positions.append(ComparedPosition(
                position=position, token_id=ids[position], text=a.tokenizer.decode([ids[position]]),
                delta=deltas[position - prepared.first_target], kl=kl[row], top_agree=top_a == top_b,
                top5_same=bool(top5_same[row]), a_top_id=top_a, a_top_text=a.tokenizer.decode([top_a]),
                a_top_probability=math.exp(fig_a.top_logprobs[row]), b_top_id=top_b,
                b_top_text=a.tokenizer.decode([top_b]), b_top_probability=math.exp(fig_b.top_logprobs[row]),
                a_logprob=fig_a.logprobs[row], b_logprob=fig_b.logprobs[row]))
    kls = [p.kl for p in positions]
    scored_bytes = len("".join(deltas).encode("utf-8"))
    _, _, perplexity_a, bits_a = nll_summary([p.a_logprob for p in positions], scored_bytes)
    _, _, perplexity_b, bits_b = nll_summary([p.b_logprob for p in positions], scored_bytes)
    count = len(positions)
    return CompareResult(
        model_a=a.spec.name, model_b=b.spec.name, dtype_a=a.dtype, dtype_b=b.dtype, text=text, token_ids=ids,
        context_tokens=prepared.first_target, context_text=prepared.context_text,
        bos_prepended=prepared.bos_prepended, first_token_skipped=prepared.first_token_skipped,
        truncated=prepared.truncated, positions=tuple(positions), tokens_compared=count,
        kl_mean=math.fsum(kls) / count, kl_max=max(kls), kl_p99=percentile(kls, 0.99),
        kl_median=percentile(kls, 0.5), top1_agreement=100.0 * sum(p.top_agree for p in positions) / count,
        top5_same=100.0 * sum(p.top5_same for p in positions) / count,
        perplexity_a=perplexity_a, perplexity_b=perplexity_b, bits_per_byte_a=bits_a, bits_per_byte_b=bits_b,
        most_different=tuple(sorted(positions, key=lambda p: -p.kl)[: settings.worst]),
        next_token=next_rows, next_token_kl=next_kl, window=window, stride=stride, windows=len(plan),
        seconds=time.perf_counter() - started, settings=settings, weights_a=_weights(a), weights_b=_weights(b),
        endpoint_b=getattr(getattr(b, "info", None), "endpoint", None))


def _weights(model: Any) -> str:
    """A side's weights label: from its model info (a server's once it has answered), else its dtype."""
    info = getattr(model, "info", None)
    return info.weights_label if info is not None else str(getattr(model, "dtype", "?"))


def _next_token_rows(a: LoadedModel, row_a: torch.Tensor, row_b: torch.Tensor, top_k: int
                     ) -> tuple[NextTokenRow, ...]:
    import torch

    k = min(top_k, row_a.shape[-1])
    prob_a, prob_b = row_a.exp(), row_b.exp()
    values_a, ids_a = torch.topk(prob_a, k)
    values_b, ids_b = torch.topk(prob_b, k)
    decode = a.tokenizer.decode
    return tuple(
        NextTokenRow(rank=rank, a_id=ia, a_text=decode([ia]), a_probability=pa, a_probability_under_b=float(prob_b[ia]),
                     b_id=ib, b_text=decode([ib]), b_probability=pb, b_probability_under_a=float(prob_a[ib]))
        for rank, (ia, pa, ib, pb) in enumerate(zip(ids_a.tolist(), values_a.tolist(), ids_b.tolist(),
                                                    values_b.tolist()), start=1))
