"""Attention patterns as functions of absolute positions: which keys a query may see (the mask) and which keys a
cache may still need (the eviction rule), each combined with the layer's own causal / sliding / chunked span.
Position arithmetic on tensors only: no model, no cache, and top-k (which needs the scores) lives in the attention."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmscope.whatif.variants import Pattern

if TYPE_CHECKING:
    import torch

HASH_MULTIPLIERS = (0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D)  # odd 32-bit constants: a cheap, well-mixed hash


@dataclass(frozen=True)
class LayerSpan:
    """The layer's own attention span: full (both None), a sliding window of `window` positions (the query's own
    included, as transformers counts it) or chunks of `chunk` positions."""

    window: int | None = None
    chunk: int | None = None


def model_visible(span: LayerSpan, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """[Q, K] booleans: the layer's own mask (causal, then its sliding window or chunk) at these positions."""
    q, k = queries[:, None], keys[None, :]
    visible = k <= q
    if span.window is not None:
        visible &= (q - k) < span.window
    if span.chunk is not None:
        visible &= (k // span.chunk) == (q // span.chunk)
    return visible


def random_scores(seed: int, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """[Q, K] pseudo-random integers that depend only on (seed, query position, key position): the same draw
    whether a query is read in one pass over the text or one token at a time from a cache."""
    import torch

    mask = (1 << 31) - 1
    a, b, c = HASH_MULTIPLIERS
    q = (queries[:, None].to(torch.int64) * a) & mask
    k = (keys[None, :].to(torch.int64) * b) & mask
    h = (q ^ k ^ ((seed * c) & mask)) & mask
    for _ in range(2):  # two rounds of xorshift-multiply mixing, kept below 2^31 so nothing overflows int64
        h = ((h ^ (h >> 15)) * 0x2C1B3C6D) & mask
        h = ((h ^ (h >> 12)) * 0x297A2D39) & mask
    return h ^ (h >> 15)


def pattern_visible(pattern: Pattern | None, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """[Q, K] booleans: what the pattern lets each query see, for keys at or before it (causality is the model's
    mask; top-k is decided on the scores, so here it sees everything).

    window W: q - k < W. sinks S, W: k < S or q - k < W. strided K: q - k < K or (q - k) % K == 0.
    block B, G: k // B == q // B or k < G. random R: k == q, or k among the R earlier keys with the highest
    random_scores (all earlier keys when there are R or fewer)."""
    import torch

    q, k = queries[:, None], keys[None, :]
    distance = q - k
    if pattern is None or pattern.kind == "topk":
        return torch.ones(distance.shape, dtype=torch.bool, device=queries.device)
    if pattern.kind == "window":
        return distance < pattern.window
    if pattern.kind == "sinks":
        return (k < pattern.sinks) | (distance < pattern.window)
    if pattern.kind == "strided":
        return (distance < pattern.stride) | (distance % pattern.stride == 0)
    if pattern.kind == "block":
        return ((k // pattern.block) == (q // pattern.block)) | (k < pattern.global_tokens)
    if pattern.kind == "random":
        return random_visible(pattern, queries, keys)
    raise ValueError(f"unknown pattern {pattern.kind}")


def random_visible(pattern: Pattern, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """random=R: each query's own key and R of the keys before it, drawn by random_scores over every earlier
    position (so a cache that lacks some positions cannot change the draw)."""
    import torch

    last = int(queries.max()) if queries.numel() else 0
    every = torch.arange(last + 1, device=queries.device)
    scores = random_scores(pattern.seed, queries, every)
    earlier = every[None, :] < queries[:, None]
    scores = torch.where(earlier, scores, torch.full_like(scores, -1))
    take = min(pattern.random, last + 1)
    chosen = torch.zeros(scores.shape, dtype=torch.bool, device=queries.device)
    if take:
        picked = torch.topk(scores, take, dim=-1).indices
        chosen.scatter_(1, picked, True)
        chosen &= earlier  # a query with fewer than R earlier keys took some -1 entries: not keys
    chosen |= every[None, :] == queries[:, None]
    inside = (keys >= 0) & (keys <= last)
    visible = torch.zeros(len(queries), len(keys), dtype=torch.bool, device=queries.device)
    visible[:, inside] = chosen[:, keys[inside]]
    return visible


def retained(pattern: Pattern | None, span: LayerSpan, positions: torch.Tensor, seen: int) -> torch.Tensor:
    """[K] booleans: which cached keys (at `positions`) a query at position `seen` or later may still see under the
    pattern and the layer's span; the rest can be evicted for good. Patterns that may look anywhere back (strided,
    random, top-k) keep every key the layer's span keeps."""
    import torch

    keep = torch.ones(positions.shape, dtype=torch.bool, device=positions.device)
    if span.window is not None:
        keep &= (seen - positions) < span.window
    if span.chunk is not None:
        keep &= (positions // span.chunk) == (seen // span.chunk)
    if pattern is None or not pattern.evicts:
        return keep
    if pattern.kind == "window":
        return keep & ((seen - positions) < pattern.window)
    if pattern.kind == "sinks":
        return keep & ((positions < pattern.sinks) | ((seen - positions) < pattern.window))
    return keep & (((positions // pattern.block) == (seen // pattern.block)) | (positions < pattern.global_tokens))
