"""Results rebuilt from what a server sends: llmscope's own --json results back into their frozen dataclasses
(from_plain, the inverse of results.to_plain), and next-token's result from OpenAI log-probabilities, with what
such a server cannot give left empty and named. It imports neither torch nor transformers and sends nothing."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Union

from llmscope.core.settings import NextTokenSettings
from llmscope.inspection.inspection import NextTokenResult, NextTokenStep, TokenProbability

# What a plain OpenAI-compatible server cannot give next-token (said on stderr and in the --json document).
OPENAI_LIMITS = ("entropy over the full vocabulary", "logits", "hidden-state and logits shapes", "the logit lens",
                 "the sampler's view (--temperature / --top-p)")


def from_plain(kind: Any, value: Any) -> Any:
    """Rebuild a value of type `kind` (a frozen dataclass, tuple, optional...) from its to_plain form."""
    if value is None:
        return None
    origin = typing.get_origin(kind)
    if origin in (Union, types.UnionType):
        options = [k for k in typing.get_args(kind) if k is not type(None)]
        return from_plain(options[0], value) if len(options) == 1 else value
    if dataclasses.is_dataclass(kind) and isinstance(value, dict):
        hints = typing.get_type_hints(kind)
        fields = {f.name: from_plain(hints[f.name], value[f.name])
                  for f in dataclasses.fields(kind) if f.init and f.name in value}
        for f in dataclasses.fields(kind):  # to_plain writes -inf as null: a float field gets it back
            if f.name in fields and fields[f.name] is None and hints[f.name] is float:
                fields[f.name] = -math.inf
        return kind(**fields)
    if origin is tuple:
        args = typing.get_args(kind)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_plain(args[0], item) for item in value)
        return tuple(from_plain(arg, item) for arg, item in zip(args, value))
    if kind is float and isinstance(value, int):
        return float(value)
    return value


# ---------------------------------------------------------------------------------------------- OpenAI logprobs


def _alternatives(entry: dict[str, Any]) -> list[tuple[str, float, int]]:
    """(text, logprob, id or -1) of a chat logprobs entry's top_logprobs, or a completions top_logprobs dict."""
    tops = entry.get("top_logprobs") or []
    if isinstance(tops, dict):
        return [(text, float(lp), -1) for text, lp in tops.items()]
    return [(t.get("token", ""), float(t.get("logprob", -math.inf)), int(t.get("id", t.get("token_id", -1)) or -1))
            for t in tops]


def step_from_openai(index: int, context: int, chosen_text: str, chosen_logprob: float, chosen_id: int,
                     alternatives: list[tuple[str, float, int]], top_k: int, running: float) -> NextTokenStep:
    """One next-token step from a token's top log-probabilities (the chosen token first when it has none)."""
    seen = sorted(alternatives, key=lambda a: -a[1]) or [(chosen_text, chosen_logprob, chosen_id)]
    rows, cumulative = [], 0.0
    for rank, (text, logprob, token_id) in enumerate(seen[:top_k], start=1):
        probability = math.exp(logprob)
        cumulative += probability
        rows.append(TokenProbability(rank=rank, token_id=token_id, text=text, piece=text, probability=probability,
                                     logit=math.nan, logprob=logprob, cumulative=min(cumulative, 1.0)))
    chosen = next((row for row in rows if row.text == chosen_text), rows[0])
    return NextTokenStep(index=index, context_tokens=context, top=tuple(rows), chosen=chosen,
                         cumulative_logprob=running + chosen_logprob, entropy=math.nan, sampler_entropy=None,
                         sampler_kept=None)


def next_token_from_openai(model: str, prompt: str, prompt_text: str, prompt_tokens: int, entries: list[dict[str, Any]],
                           settings: NextTokenSettings, chat: bool) -> NextTokenResult:
    """next-token's result from a greedy completion's per-token log-probabilities (chat logprobs 'content'
    entries, or completions entries turned into that shape): prompt ids, logits, entropy and shapes unknown."""
    steps, running, texts = [], 0.0, []
    for index, entry in enumerate(entries[: settings.steps]):
        text, logprob = entry.get("token", ""), float(entry.get("logprob", -math.inf))
        step = step_from_openai(index, prompt_tokens + index, text, logprob, int(entry.get("id", -1) or -1),
                                _alternatives(entry), settings.top_k, running)
        running = step.cumulative_logprob
        steps.append(step)
        texts.append(text)
    return NextTokenResult(
        model=model, prompt=prompt, prompt_text=prompt_text, prompt_tokens=(), hidden_shape=(), logits_shape=(),
        layers=0, vocab_size=0, top_k=settings.top_k, temperature=None, top_p=None, chat_template_applied=chat,
        steps=tuple(steps), continuation="".join(texts), lens=None, lens_note=None)


def completion_entries(logprobs: dict[str, Any]) -> list[dict[str, Any]]:
    """The legacy completions logprobs object as chat-style entries: [{token, logprob, top_logprobs}] (a server
    that already answers chat-style entries under "content", as llama.cpp's does, is read as it is)."""
    if isinstance(logprobs.get("content"), list):
        return list(logprobs["content"])
    tokens = logprobs.get("tokens") or []
    values = logprobs.get("token_logprobs") or []
    tops = logprobs.get("top_logprobs") or [None] * len(tokens)
    return [{"token": t, "logprob": -math.inf if v is None else v, "top_logprobs": top or {}}
            for t, v, top in zip(tokens, values, tops)]


# What a plain OpenAI-compatible server cannot give score.
SCORE_LIMITS = ("entropy over the full vocabulary", "token ids", "ranks beyond the top log-probabilities")


def with_prompt_logprobs(entries: list[dict[str, Any]], prompt_logprobs: Any, top: int) -> bool:
    """Add ids and ranks from vLLM's `prompt_logprobs` ({id: {logprob, rank, decoded_token}} per prompt token) to
    the echoed entries, in place: the token is the entry whose text is the echoed one. True when every scored
    token was found."""
    if not isinstance(prompt_logprobs, list) or len(prompt_logprobs) != len(entries):
        return False
    found = 0
    for entry, options in zip(entries[1:], prompt_logprobs[1:]):
        if not isinstance(options, dict):
            continue
        ranked = sorted(((int(i), o) for i, o in options.items() if isinstance(o, dict)),
                        key=lambda pair: pair[1].get("rank") or 1 << 30)
        mine = next(((i, o) for i, o in ranked if o.get("decoded_token") == entry.get("token")), None)
        if mine is not None:
            entry["id"], entry["rank"] = mine[0], mine[1].get("rank")
            found += 1
        entry["top_logprobs"] = [{"token": o.get("decoded_token", ""), "logprob": o.get("logprob"), "id": i}
                                 for i, o in ranked if (o.get("rank") or 1 << 30) <= top]
    return found == len(entries) - 1


def score_from_openai(model: str, text: str, entries: list[dict[str, Any]], settings: Any) -> Any:
    """score's result from the prompt's own log-probabilities (completions with echo: the first token has none).
    A first token that does not start the text is a BOS the server added; entropy is NaN; ids are -1 and a rank
    0 (not known) unless vLLM's prompt_logprobs gave them (with_prompt_logprobs), or the token is among the top
    log-probabilities sent (its rank)."""
    from llmscope.generation.generation import TokenAlternative
    from llmscope.inspection.scoring import ScoredToken, ScoreResult, nll_summary

    first, rest = entries[0], entries[1:]
    bos = not text.startswith(first.get("token", ""))
    tokens = []
    for position, entry in enumerate(rest, start=1):
        text_piece, logprob = entry.get("token", ""), float(entry.get("logprob", -math.inf))
        alternatives = sorted(_alternatives(entry), key=lambda a: -a[1])
        rank = entry.get("rank") or next((r for r, (t, _, _) in enumerate(alternatives, start=1) if t == text_piece),
                                         0)
        best = alternatives[0] if alternatives else (text_piece, logprob, -1)
        tokens.append(ScoredToken(
            position=position, token_id=int(entry.get("id", -1)), text=text_piece, delta=text_piece,
            probability=math.exp(logprob),
            logprob=logprob, rank=rank, top_id=best[2], top_text=best[0], top_probability=math.exp(best[1]),
            entropy=math.nan, context=position,
            top=tuple(TokenAlternative(token_id=i, text=t, probability=math.exp(lp), logprob=lp,
                                       bytes=tuple(t.encode())) for t, lp, i in alternatives[: settings.top_k]),
            bytes=tuple(text_piece.encode())))
    scored_bytes = len("".join(t.delta for t in tokens).encode())
    total, mean, perplexity, bits = nll_summary([t.logprob for t in tokens], scored_bytes)
    return ScoreResult(
        model=model, text=text, prompt=None, context_text=first.get("token", ""), chat_template_applied=False,
        bos_prepended=bos, first_token_skipped=not bos, token_ids=tuple(int(e.get("id", -1)) for e in entries),
        context_tokens=1,
        tokens=tuple(tokens), tokens_scored=len(tokens), text_tokens=len(rest) + (0 if bos else 1), truncated=False,
        total_nll=total, mean_nll=mean, perplexity=perplexity, scored_bytes=scored_bytes, bits_per_byte=bits,
        window=len(entries), stride=len(entries), windows=1, min_context=1 if tokens else 0,
        mean_context=sum(t.context for t in tokens) / len(tokens) if tokens else 0.0,
        most_surprising=tuple(sorted(tokens, key=lambda t: t.logprob)[: settings.worst]), seconds=0.0,
        settings=settings)
