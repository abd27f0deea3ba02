"""Results rebuilt from what a server sends: llmscope's own --json results back into their frozen dataclasses
(from_plain, the inverse of core.model_info.to_plain), and next-token's result from OpenAI log-probabilities, with what
such a server cannot give left empty and named. It imports neither torch nor transformers and sends nothing."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import types
import typing
from collections.abc import Iterator
from typing import Any, Union

from llmscope.client.errors import AnswerShapeError, EndpointError
from llmscope.core.command_settings import NextTokenSettings
from llmscope.core.errors import UsageError
from llmscope.inspection.next_token import NextTokenResult, NextTokenStep, TokenProbability

# What a plain OpenAI-compatible server cannot give next-token (said on stderr and in the --json document).
OPENAI_LIMITS = ("entropy over the full vocabulary", "logits", "hidden-state and logits shapes", "the logit lens",
                 "the sampler's view (--temperature / --top-p)")


# A log-probability may round a little above 0, and a top-k's probabilities a little above 1: no further.
FIGURE_SLACK = 1e-3


@contextlib.contextmanager
def reading_answer(base: str, path: str) -> Iterator[None]:
    """Turn every failure to read a server's answer into one EndpointError line: a wrong shape ({"choices":
    "oops"}, a missing key, a string where a number goes) or an impossible figure (logprob above 0, NaN)."""
    hint = "is --endpoint an OpenAI-compatible server or `llmscope serve`?"
    try:
        yield
    except AnswerShapeError as error:
        raise EndpointError(f"the endpoint {base} answered {path} with {error}", hint=hint) from None
    except UsageError as error:  # a settings value in the answer that llmscope's own checks refuse
        raise EndpointError(f"the endpoint {base} answered {path} with a value llmscope refuses: {error.message}",
                            hint=hint) from None
    except (AttributeError, KeyError, TypeError, ValueError, IndexError, OverflowError, RecursionError) as error:
        detail = " ".join(str(error).split())[:200]
        raise EndpointError(f"the endpoint {base} answered {path} in a shape llmscope cannot read: "
                            f"{type(error).__name__} {detail}", hint=hint) from None


def from_plain(kind: Any, value: Any, where: str = "the answer") -> Any:
    """Rebuild a value of type `kind` (a frozen dataclass, tuple, optional...) from its to_plain form, checking
    every value's JSON type on the way (AnswerShapeError names the first that is wrong)."""
    if value is None:
        return -math.inf if kind is float else None  # to_plain writes -inf as null: a float field gets it back
    origin = typing.get_origin(kind)
    if origin in (Union, types.UnionType):
        options = [k for k in typing.get_args(kind) if k is not type(None)]
        return from_plain(options[0], value, where) if len(options) == 1 else value
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise AnswerShapeError(f"{_json_type(value)} for {where}, where an object goes")
        hints = typing.get_type_hints(kind)
        missing = [f.name for f in dataclasses.fields(kind) if f.init and f.name not in value
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise AnswerShapeError(f"no {missing[0]!r} in {where}")
        return kind(**{f.name: from_plain(hints[f.name], value[f.name], f"{where}.{f.name}")
                       for f in dataclasses.fields(kind) if f.init and f.name in value})
    if origin is tuple:
        if not isinstance(value, list):
            raise AnswerShapeError(f"{_json_type(value)} for {where}, where a list goes")
        args = typing.get_args(kind)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_plain(args[0], item, f"{where}[{n}]") for n, item in enumerate(value))
        if len(args) != len(value):
            raise AnswerShapeError(f"{len(value)} values for {where}, where {len(args)} go")
        return tuple(from_plain(arg, item, f"{where}[{n}]") for n, (arg, item) in enumerate(zip(args, value)))
    if kind is float:
        return _number(value, where)
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise AnswerShapeError(f"{_json_type(value)} for {where}, where a whole number goes")
    if kind in (str, bool) and not isinstance(value, kind):
        raise AnswerShapeError(f"{_json_type(value)} for {where}, where a "
                               f"{'string' if kind is str else 'boolean'} goes")
    return value


def _json_type(value: Any) -> str:
    """How JSON names a value's type: "a string", "a list"..."""
    names = {bool: "a boolean", str: "a string", int: "a number", float: "a number", list: "a list",
             dict: "an object"}
    return "null" if value is None else names.get(type(value), f"a {type(value).__name__}")


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AnswerShapeError(f"{_json_type(value)} for {where}, where a number goes")
    return float(value)


def logprob_from(value: Any, where: str) -> float:
    """A log-probability as sent (null: -inf, probability 0), refused when no distribution can have it."""
    if value is None:
        return -math.inf
    logprob = _number(value, where)
    if math.isnan(logprob) or logprob > FIGURE_SLACK:
        raise AnswerShapeError(f"an impossible log-probability for {where}: {value}, a probability "
                               f"{'of NaN' if math.isnan(logprob) else 'above 1'}")
    return min(logprob, 0.0)


def check_distribution(logprobs: list[float], where: str) -> None:
    """Refuse alternatives whose probabilities sum past 1: they cannot come from one distribution."""
    total = math.fsum(math.exp(lp) for lp in logprobs)
    if total > 1 + FIGURE_SLACK:
        raise AnswerShapeError(f"impossible figures for {where}: {len(logprobs)} alternatives whose probabilities "
                               f"sum to {total:.4g}, more than 1")


_PROBABILITY_FIELDS = ("probability", "top_probability", "cumulative", "sampler_probability",
                       "answer_probability")


def check_figures(value: Any, where: str = "result") -> None:
    """Refuse a rebuilt llmscope result holding a figure no distribution can have: a probability outside [0, 1]
    or NaN, a log-probability above 0 or NaN, a top-k list whose probabilities sum past 1."""
    if isinstance(value, tuple):
        for number, item in enumerate(value):
            check_figures(item, f"{where}[{number}]")
        return
    if not dataclasses.is_dataclass(value):
        return
    for field in dataclasses.fields(value):
        item, name = getattr(value, field.name), f"{where}.{field.name}"
        if field.name in _PROBABILITY_FIELDS and isinstance(item, float):
            if math.isnan(item) or not 0 <= item <= 1 + FIGURE_SLACK:
                raise AnswerShapeError(f"an impossible probability for {name}: {item}")
        elif field.name == "logprob" and isinstance(item, float):
            logprob_from(item, name)
        elif isinstance(item, tuple) or dataclasses.is_dataclass(item):
            check_figures(item, name)
            if field.name == "top" and isinstance(item, tuple):  # the top-k of one distribution
                check_distribution([math.log(p) if p > 0 else -math.inf
                                    for p in (getattr(alt, "probability", 0.0) for alt in item)], name)


def result_from(kind: Any, value: Any) -> Any:
    """A llmscope result from its --json form: every type checked, then every figure."""
    result = from_plain(kind, value, "result")
    check_figures(result, "result")
    return result


# ---------------------------------------------------------------------------------------------- OpenAI logprobs
# Entries are read into one checked shape: {"token": str, "logprob": float, "top": [(text, logprob, id)], "id": int,
# "rank": int | None}, whichever format the server used (chat "content" entries or the legacy completions lists).


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise AnswerShapeError(f"{_json_type(value)} for {where}, where a token's text goes")
    return value


def _token_id(value: Any) -> int:
    """A token id as sent, or -1 (not known) for anything that is not a whole number."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else -1


def _alternatives(tops: Any, where: str) -> list[tuple[str, float, int]]:
    """(text, logprob, id or -1), best first, of a chat entry's top_logprobs list or a completions top_logprobs
    dict; refused when they cannot be one distribution's top tokens."""
    if tops is None:
        return []
    if isinstance(tops, dict):
        found = [(_text(text, where), logprob_from(lp, f"{where}[{text!r}]"), -1) for text, lp in tops.items()]
    elif isinstance(tops, list):
        found = []
        for number, alt in enumerate(tops):
            if not isinstance(alt, dict):
                raise AnswerShapeError(f"{_json_type(alt)} for {where}[{number}], where an object goes")
            found.append((_text(alt.get("token", ""), f"{where}[{number}].token"),
                          logprob_from(alt.get("logprob"), f"{where}[{number}].logprob"),
                          _token_id(alt.get("id", alt.get("token_id")))))
    else:
        raise AnswerShapeError(f"{_json_type(tops)} for {where}, where a list or an object goes")
    found.sort(key=lambda alt: -alt[1])
    check_distribution([lp for _, lp, _ in found], where)
    return found


def step_from_openai(index: int, context: int, chosen_text: str, chosen_logprob: float, chosen_id: int,
                     alternatives: list[tuple[str, float, int]], top_k: int, running: float) -> NextTokenStep:
    """One next-token step from a token's top log-probabilities, best first (the chosen token alone when there
    are none)."""
    seen = alternatives or [(chosen_text, chosen_logprob, chosen_id)]
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
    """next-token's result from a greedy completion's per-token log-probabilities (entries as read_entries gives
    them): prompt ids, logits, entropy and shapes unknown."""
    steps, running, texts = [], 0.0, []
    for index, entry in enumerate(entries[: settings.steps]):
        step = step_from_openai(index, prompt_tokens + index, entry["token"], entry["logprob"], entry["id"],
                                entry["top"], settings.top_k, running)
        running = step.cumulative_logprob
        steps.append(step)
        texts.append(entry["token"])
    return NextTokenResult(
        model=model, prompt=prompt, prompt_text=prompt_text, prompt_tokens=(), hidden_shape=(), logits_shape=(),
        layers=0, vocab_size=0, top_k=settings.top_k, temperature=None, top_p=None, chat_template_applied=chat,
        steps=tuple(steps), continuation="".join(texts), lens=None, lens_note=None)


def answer_choice(answer: dict[str, Any]) -> dict[str, Any]:
    """The first choice of a completions or chat answer."""
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices:
        raise AnswerShapeError(f"{_json_type(choices)} for choices, where a list of choices goes")
    if not isinstance(choices[0], dict):
        raise AnswerShapeError(f"{_json_type(choices[0])} for choices[0], where an object goes")
    return choices[0]


def prompt_token_count(answer: dict[str, Any]) -> int:
    """usage.prompt_tokens, or 0 when the server did not say."""
    usage = answer.get("usage")
    count = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    if count is None:
        return 0
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise AnswerShapeError(f"{_json_type(count)} for usage.prompt_tokens, where a count goes")
    return count


def read_entries(logprobs: Any) -> list[dict[str, Any]]:
    """A choice's logprobs object (chat-style "content" entries, as chat answers and llama.cpp's completions
    send; or the legacy completions lists) as checked entries."""
    if logprobs is None:
        return []
    if not isinstance(logprobs, dict):
        raise AnswerShapeError(f"{_json_type(logprobs)} for logprobs, where an object goes")
    if logprobs.get("content") is not None:
        content = logprobs["content"]
        if not isinstance(content, list):
            raise AnswerShapeError(f"{_json_type(content)} for logprobs.content, where a list goes")
        entries = []
        for number, item in enumerate(content):
            where = f"logprobs.content[{number}]"
            if not isinstance(item, dict):
                raise AnswerShapeError(f"{_json_type(item)} for {where}, where an object goes")
            entries.append({"token": _text(item.get("token", ""), f"{where}.token"),
                            "logprob": logprob_from(item.get("logprob"), f"{where}.logprob"),
                            "top": _alternatives(item.get("top_logprobs"), f"{where}.top_logprobs"),
                            "id": _token_id(item.get("id", item.get("token_id"))), "rank": None})
        return entries
    tokens, values = logprobs.get("tokens") or [], logprobs.get("token_logprobs") or []
    tops = logprobs.get("top_logprobs") or [None] * len(tokens)
    for name, listed in (("tokens", tokens), ("token_logprobs", values), ("top_logprobs", tops)):
        if not isinstance(listed, list):
            raise AnswerShapeError(f"{_json_type(listed)} for logprobs.{name}, where a list goes")
        if len(listed) != len(tokens):
            raise AnswerShapeError(f"{len(listed)} logprobs.{name} for {len(tokens)} tokens")
    return [{"token": _text(t, f"logprobs.tokens[{n}]"), "logprob": logprob_from(v, f"logprobs.token_logprobs[{n}]"),
             "top": _alternatives(top, f"logprobs.top_logprobs[{n}]"), "id": -1, "rank": None}
            for n, (t, v, top) in enumerate(zip(tokens, values, tops))]


# What a plain OpenAI-compatible server cannot give score.
SCORE_LIMITS = ("entropy over the full vocabulary", "token ids", "ranks beyond the top log-probabilities")
SHIFT_NOTE = ("echoed log-probabilities in their places (they came one token early, as llama-cpp-python's server "
              "sends them, and were put back from the row before each token)")
LOST_FIRST_NOTE = ("the first token after the context: its log-probability was not sent (a null first row), so the "
                   "first two tokens are context")
SHIFT_MARGIN = 2.0  # nats by which one reading of a token's figure must beat the other to count
DETECT_LOGPROBS = 20  # alternatives asked for per row first: enough to see a shifted echo (vLLM allows 20)
REBUILD_LOGPROBS = 1000  # alternatives asked for per row to put a shifted echo back (each token must be among them)


def with_prompt_logprobs(entries: list[dict[str, Any]], prompt_logprobs: Any, top: int) -> bool:
    """Add ids and ranks from vLLM's `prompt_logprobs` ({id: {logprob, rank, decoded_token}} per prompt token) to
    the echoed entries, in place: the token is the entry whose text is the echoed one. True when every scored
    token was found."""
    if not isinstance(prompt_logprobs, list) or len(prompt_logprobs) != len(entries):
        return False
    found = 0
    for number, (entry, options) in enumerate(zip(entries[1:], prompt_logprobs[1:]), start=1):
        if not isinstance(options, dict):
            continue
        where = f"prompt_logprobs[{number}]"
        ranked = []
        for key, option in options.items():
            if not isinstance(option, dict) or not str(key).isdigit():
                raise AnswerShapeError(f"an entry {key!r} for {where} that is not {{id: {{logprob, rank}}}}")
            rank = option.get("rank")
            rank = rank if isinstance(rank, int) and not isinstance(rank, bool) and rank > 0 else None
            ranked.append((int(key), _text(option.get("decoded_token", ""), f"{where}[{key}].decoded_token"),
                           logprob_from(option.get("logprob"), f"{where}[{key}].logprob"), rank))
        ranked.sort(key=lambda item: item[3] or 1 << 30)
        mine = next((item for item in ranked if item[1] == entry["token"]), None)
        if mine is not None:
            entry["id"], entry["rank"] = mine[0], mine[3]
            found += 1
        entry["top"] = [(text, logprob, token_id) for token_id, text, logprob, rank in ranked
                        if rank is not None and rank <= top]
        check_distribution([lp for _, lp, _ in entry["top"]], where)
    return found == len(entries) - 1


def echo_is_shifted(entries: list[dict[str, Any]]) -> bool:
    """True when the echoed log-probabilities sit one token early, as llama-cpp-python's server sends them for a
    model without BOS: row i's alternatives are the prediction of token i + 1, and token i's own figure is its
    log-probability there. Read from the answer itself: where a token appears in the row before it, compare that
    figure with its own. In place, a token is likelier where it stands than one position early (its own figure
    is the higher); one token early it is the other way round. A figure wins by more than SHIFT_MARGIN nats (a
    model that has learnt nothing gives neither); shifted when the row before wins at least twice and more than
    twice as often as the own figure does."""
    earlier = later = 0
    for entry, after in itertools.pairwise(entries):
        before = next((lp for text, lp, _ in entry["top"] if text == after["token"]), None)
        if before is None or after["logprob"] == -math.inf:
            continue
        if before > after["logprob"] + SHIFT_MARGIN:
            earlier += 1
        elif after["logprob"] > before + SHIFT_MARGIN:
            later += 1
    return earlier >= 2 and earlier > 2 * later


def unshift_echo(entries: list[dict[str, Any]], top: int, asked: int) -> tuple[list[dict[str, Any]], int]:
    """The entries of a shifted echo put back in place, and how many of them lead as context: token i + 1's
    figure, rank and alternatives come from row i (sorted, the row's own token included: its figure belongs to
    the same distribution). A first row sent as null (llama-cpp-python's) leaves the second token without a
    figure: the first two tokens are then context. Refused, naming how many, when a token is not in its row
    (`asked`: the alternatives asked for per row)."""
    context = 1 if entries[0]["top"] else 2
    fixed = [{**entry, "logprob": -math.inf, "top": [], "rank": None} for entry in entries[:context]]
    missing = 0
    for entry, after in itertools.pairwise(entries[context - 1:]):
        rank = next((r for r, (text, _, _) in enumerate(entry["top"], start=1) if text == after["token"]), None)
        if rank is None:
            missing += 1
            continue
        fixed.append({**after, "logprob": entry["top"][rank - 1][1], "top": entry["top"][:top], "rank": rank})
    if missing:
        raise AnswerShapeError(f"log-probabilities one token early (as llama-cpp-python's server sends them), and "
                               f"{missing} of {len(entries) - context} tokens are not among the alternatives of the "
                               f"row before them ({asked} asked for), so they cannot be put back: score with a local "
                               "model (-m)")
    return fixed, context


def score_from_openai(model: str, text: str, entries: list[dict[str, Any]], settings: Any, top: int | None = None,
                      context: int = 1) -> Any:
    """score's result from the prompt's own log-probabilities (completions with echo: the first `context` tokens
    have none). A first token that does not start the text is a BOS the server added; entropy is NaN; ids are -1
    unless vLLM's prompt_logprobs gave them. A rank is one the server gave: prompt_logprobs' rank, or the token's
    place among the `top` alternatives asked for (a server that adds the token itself past them gives no rank for
    it: 0)."""
    from llmscope.generation.generate import TokenAlternative
    from llmscope.inspection.scoring import ScoredToken, ScoreResult, nll_summary

    top = settings.top_k if top is None else top
    lead, rest = entries[:context], entries[context:]
    context_text = "".join(entry["token"] for entry in lead)
    bos = not text.startswith(lead[0]["token"])
    tokens = []
    for position, entry in enumerate(rest, start=context):
        text_piece, logprob = entry["token"], entry["logprob"]
        alternatives = entry["top"][:top]
        rank = entry.get("rank") or next((r for r, (t, _, _) in enumerate(alternatives, start=1) if t == text_piece),
                                         0)
        best = alternatives[0] if alternatives else (text_piece, logprob, entry["id"])
        tokens.append(ScoredToken(
            position=position, token_id=entry["id"], text=text_piece, delta=text_piece,
            probability=math.exp(logprob),
            logprob=logprob, rank=rank, top_id=best[2], top_text=best[0], top_probability=math.exp(best[1]),
            entropy=math.nan, context=position,
            top=tuple(TokenAlternative(token_id=i, text=t, probability=math.exp(lp), logprob=lp,
                                       bytes=tuple(t.encode())) for t, lp, i in alternatives[: settings.top_k]),
            bytes=tuple(text_piece.encode())))
    scored_bytes = len("".join(t.delta for t in tokens).encode())
    total, mean, perplexity, bits = nll_summary([t.logprob for t in tokens], scored_bytes)
    return ScoreResult(
        model=model, text=text, prompt=None, context_text=context_text, chat_template_applied=False,
        bos_prepended=bos, first_token_skipped=not bos, token_ids=tuple(e["id"] for e in entries),
        context_tokens=context,
        tokens=tuple(tokens), tokens_scored=len(tokens), text_tokens=len(rest) + context - (1 if bos else 0),
        truncated=False,
        total_nll=total, mean_nll=mean, perplexity=perplexity, scored_bytes=scored_bytes, bits_per_byte=bits,
        window=len(entries), stride=len(entries), windows=1, min_context=context if tokens else 0,
        mean_context=sum(t.context for t in tokens) / len(tokens) if tokens else 0.0,
        most_surprising=tuple(sorted(tokens, key=lambda t: t.logprob)[: settings.worst]), seconds=0.0,
        settings=settings)
