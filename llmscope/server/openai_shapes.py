"""The OpenAI API's request and response shapes, in one place: requests parsed and checked into frozen dataclasses,
responses and errors built as plain dicts. No model, no HTTP, no torch: the routes call these on both sides."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MAX_LOGPROBS = 20  # OpenAI's own limit for logprobs / top_logprobs


class ApiError(Exception):
    """A request the server refuses, with the HTTP status and OpenAI's error fields."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.kind, self.param, self.code)


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """OpenAI's error document: {"error": {"message", "type", "param", "code"}}."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


# ---------------------------------------------------------------------------------------------- field readers


def field_of(body: dict[str, Any], name: str, kinds: tuple[type, ...], default: Any = None) -> Any:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) and bool not in kinds:
        raise ApiError(400, f"'{name}' must be {' or '.join(k.__name__ for k in kinds)}, not a boolean", param=name)
    if not isinstance(value, kinds):
        raise ApiError(400, f"'{name}' must be {' or '.join(k.__name__ for k in kinds)}", param=name)
    return value


def _integer(body: dict[str, Any], name: str, default: int | None, low: int, high: int) -> int | None:
    value = field_of(body, name, (int,), default)
    if value is not None and not low <= value <= high:
        raise ApiError(400, f"'{name}' must be between {low} and {high} (got {value})", param=name)
    return value


def _number(body: dict[str, Any], name: str, default: float | None, low: float, high: float) -> float | None:
    value = field_of(body, name, (int, float), default)
    if value is None:
        return None
    if not math.isfinite(value) or not low <= value <= high:
        raise ApiError(400, f"'{name}' must be between {low:g} and {high:g} (got {value})", param=name)
    return float(value)


def text_of(body: dict[str, Any], name: str, required: bool = False) -> str | None:
    value = field_of(body, name, (str,))
    if required and (value is None or not value.strip()):
        raise ApiError(400, f"'{name}' is required and must be a non-empty string", param=name)
    return value


def _stops(body: dict[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    values = [stop] if isinstance(stop, str) else stop
    if not isinstance(values, list) or len(values) > 4 or not all(isinstance(s, str) and s for s in values):
        raise ApiError(400, "'stop' must be a non-empty string or a list of up to 4 of them", param="stop")
    return tuple(values)


def _include_usage(body: dict[str, Any], stream: bool) -> bool:
    """stream_options.include_usage: a last chunk with the usage (and no choices), as OpenAI sends it."""
    options = body.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict) or set(options) - {"include_usage", "include_obfuscation"}:
        raise ApiError(400, "'stream_options' takes include_usage", param="stream_options")
    if not stream:
        raise ApiError(400, "'stream_options' needs 'stream': true", param="stream_options")
    return bool(field_of(options, "include_usage", (bool,), False))


def _only_one_choice(body: dict[str, Any]) -> None:
    """n=1, and no field that would change the answer in a way this server does not do (refused, not ignored)."""
    if _integer(body, "n", 1, 1, 128) != 1:
        raise ApiError(400, "only n=1 is supported", param="n")
    for name in ("presence_penalty", "frequency_penalty", "logit_bias", "suffix", "tools", "response_format"):
        if body.get(name) not in (None, 0, 0.0, "", {}, []):
            raise ApiError(400, f"'{name}' is not supported by llmscope serve", param=name)
    if body.get("best_of") not in (None, 1):
        raise ApiError(400, "only best_of=1 is supported", param="best_of")


# ---------------------------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Sampling:
    """How a completion picks tokens, as the OpenAI fields say it (temperature 0: greedy)."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # vLLM's extension; 0 (or -1) keeps every token
    seed: int | None = None
    stop: tuple[str, ...] = ()
    max_tokens_given: bool = True  # False: the route's default (chat clips it to what the context leaves)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def _sampling(body: dict[str, Any], default_max: int, least: int = 1) -> Sampling:
    max_tokens = _integer(body, "max_completion_tokens", None, 1, 1_000_000)
    chosen = _integer(body, "max_tokens", max_tokens or default_max, least, 1_000_000)
    return Sampling(max_tokens=default_max if chosen is None else chosen,
                    max_tokens_given=body.get("max_tokens") is not None or max_tokens is not None,
                    temperature=_number(body, "temperature", 1.0, 0.0, 2.0) or 0.0,
                    top_p=_number(body, "top_p", 1.0, 1e-9, 1.0) or 1.0,
                    top_k=max(_integer(body, "top_k", 0, -1, 1_000_000) or 0, 0),
                    seed=_integer(body, "seed", None, 0, 2**63 - 1), stop=_stops(body))


@dataclass(frozen=True)
class CompletionRequest:
    """POST /v1/completions."""

    model: str | None
    prompts: tuple[str, ...]
    sampling: Sampling
    logprobs: int | None  # alternatives per token (0: only the chosen token's); None: no logprobs
    echo: bool
    stream: bool
    prompt_logprobs: int | None = None  # vLLM's extension: the prompt's own, with ids and ranks
    include_usage: bool = False  # stream_options.include_usage


def parse_completion(body: dict[str, Any]) -> CompletionRequest:
    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise ApiError(400, "'prompt' must be a non-empty string or a list of them (token ids are not supported)",
                       param="prompt")
    _only_one_choice(body)
    echo = bool(field_of(body, "echo", (bool,), False))
    sampling = _sampling(body, 16, least=0 if echo else 1)  # echo with max_tokens 0 scores the prompt only
    stream = bool(field_of(body, "stream", (bool,), False))
    return CompletionRequest(model=text_of(body, "model"), prompts=tuple(prompts), sampling=sampling,
                             logprobs=_integer(body, "logprobs", None, 0, MAX_LOGPROBS), echo=echo,
                             stream=stream, prompt_logprobs=_integer(body, "prompt_logprobs", None, 0, MAX_LOGPROBS),
                             include_usage=_include_usage(body, stream))


@dataclass(frozen=True)
class ChatRequest:
    """POST /v1/chat/completions."""

    model: str | None
    messages: tuple[tuple[str, str], ...]  # (role, content)
    sampling: Sampling
    logprobs: bool
    top_logprobs: int
    stream: bool
    include_usage: bool = False  # stream_options.include_usage


def _content(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):  # content parts: only text parts are read
        texts = [part.get("text") for part in content if isinstance(part, dict) and part.get("type") == "text"]
        if len(texts) == len(content) and all(isinstance(t, str) for t in texts):
            return "".join(texts)
    if not isinstance(content, str):
        raise ApiError(400, "each message needs 'content' as a string (or text parts)", param="messages")
    return content


def parse_chat(body: dict[str, Any]) -> ChatRequest:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise ApiError(400, "'messages' must be a non-empty list of {role, content} objects", param="messages")
    pairs = []
    for message in messages:
        role = message.get("role")
        if role not in ("system", "developer", "user", "assistant"):
            raise ApiError(400, f"unsupported message role {role!r}", param="messages")
        pairs.append(("system" if role == "developer" else role, _content(message)))
    _only_one_choice(body)
    logprobs = bool(field_of(body, "logprobs", (bool,), False))
    top = _integer(body, "top_logprobs", 0, 0, MAX_LOGPROBS) or 0
    if top and not logprobs:
        raise ApiError(400, "'top_logprobs' needs 'logprobs': true", param="top_logprobs")
    stream = bool(field_of(body, "stream", (bool,), False))
    return ChatRequest(model=text_of(body, "model"), messages=tuple(pairs), sampling=_sampling(body, 256),
                       logprobs=logprobs, top_logprobs=top, stream=stream, include_usage=_include_usage(body, stream))


# ---------------------------------------------------------------------------------------------- llmscope's own


@dataclass(frozen=True)
class NextTokenRequest:
    """POST /llmscope/v1/next-token: next-token's options (the full top-k with logits and entropy)."""

    prompt: str
    top_k: int = 10
    steps: int = 1
    temperature: float | None = None
    top_p: float | None = None
    chat: bool = False
    system: str | None = None


def parse_next_token(body: dict[str, Any]) -> NextTokenRequest:
    return NextTokenRequest(prompt=text_of(body, "prompt", required=True) or "",
                            top_k=_integer(body, "top_k", 10, 1, 1_000_000) or 10,
                            steps=_integer(body, "steps", 1, 1, 4096) or 1,
                            temperature=_number(body, "temperature", None, 1e-9, 1e6),
                            top_p=_number(body, "top_p", None, 1e-9, 1.0),
                            chat=bool(field_of(body, "chat", (bool,), False)), system=text_of(body, "system"))


def parse_options(body: dict[str, Any], names: Sequence[str], key: str = "options") -> dict[str, Any]:
    """An object of keyword options for a library settings class (checked by that class), limited to `names`."""
    options = body.get(key) or {}
    if not isinstance(options, dict) or set(options) - set(names):
        unknown = sorted(set(options) - set(names)) if isinstance(options, dict) else []
        raise ApiError(400, f"'{key}' takes {', '.join(names)}" + (f" (not {', '.join(unknown)})" if unknown else ""),
                       param=key)
    return options


# ---------------------------------------------------------------------------------------------- responses


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def models_list(name: str, created: int) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "llmscope"}]}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


@dataclass(frozen=True)
class TokenLogprob:
    """One token's log-probability and its alternatives (None for a first prompt token: nothing predicts it)."""

    text: str
    logprob: float | None
    top: tuple[tuple[str, float], ...] | None
    token_bytes: tuple[int, ...] = ()
    token_id: int = -1
    rank: int | None = None  # 1 = the model's top choice (known for prompt tokens)
    top_ids: tuple[int, ...] = ()  # the ids of `top`, in its order


def vllm_prompt_logprobs(tokens: Sequence[TokenLogprob]) -> list[dict[str, Any] | None]:
    """vLLM's `prompt_logprobs`: per prompt token None (the first) or {id: {logprob, rank, decoded_token}} holding
    the top alternatives and the token itself."""
    out: list[dict[str, Any] | None] = []
    for token in tokens:
        if token.logprob is None:
            out.append(None)
            continue
        entries = {str(i): {"logprob": _finite(lp), "rank": rank, "decoded_token": text}
                   for rank, (i, (text, lp)) in enumerate(zip(token.top_ids, token.top or ()), start=1)}
        entries.setdefault(str(token.token_id), {"logprob": _finite(token.logprob), "rank": token.rank,
                                                 "decoded_token": token.text})
        out.append(entries)
    return out


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else -9999.0  # OpenAI's stand-in for log(0)


def completion_logprobs(tokens: Sequence[TokenLogprob], start_offset: int = 0) -> dict[str, Any]:
    """The legacy completions `logprobs` object: tokens, token_logprobs, top_logprobs, text_offset."""
    offsets, offset = [], start_offset
    for token in tokens:
        offsets.append(offset)
        offset += len(token.text)
    return {"tokens": [t.text for t in tokens], "token_logprobs": [_finite(t.logprob) for t in tokens],
            "top_logprobs": [None if t.top is None else {text: _finite(lp) for text, lp in t.top} for t in tokens],
            "text_offset": offsets}


def chat_logprobs(tokens: Sequence[TokenLogprob]) -> dict[str, Any]:
    """The chat `logprobs` object: {"content": [{token, logprob, bytes, top_logprobs: [...]}]}."""
    return {"content": [{"token": t.text, "logprob": _finite(t.logprob), "bytes": list(t.token_bytes),
                         "top_logprobs": [{"token": text, "logprob": _finite(lp), "bytes": list(text.encode())}
                                          for text, lp in (t.top or ())]} for t in tokens]}


def completion_choice(index: int, text: str, finish_reason: str | None, logprobs: dict[str, Any] | None
                      ) -> dict[str, Any]:
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}


def completion(request_id: str, model: str, choices: list[dict[str, Any]], prompt_tokens: int,
               completion_tokens: int) -> dict[str, Any]:
    return {"id": request_id, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": choices, "usage": usage(prompt_tokens, completion_tokens)}


def completion_chunk(request_id: str, model: str, index: int, text: str, finish_reason: str | None,
                     logprobs: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": request_id, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [completion_choice(index, text, finish_reason, logprobs)]}


def chat_completion(request_id: str, model: str, text: str, finish_reason: str, logprobs: dict[str, Any] | None,
                    prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {"id": request_id, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": logprobs,
                         "finish_reason": finish_reason}], "usage": usage(prompt_tokens, completion_tokens)}


def chat_chunk(request_id: str, model: str, delta: dict[str, Any], finish_reason: str | None,
               logprobs: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": request_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}]}


def usage_chunk(request_id: str, model: str, kind: str, prompt_tokens: int, completion_tokens: int
                ) -> dict[str, Any]:
    """The last chunk of a stream asked for with stream_options.include_usage: no choices, the usage."""
    return {"id": request_id, "object": kind, "created": int(time.time()), "model": model, "choices": [],
            "usage": usage(prompt_tokens, completion_tokens)}


FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length"}


def finish_reason(reason: str) -> str:
    """OpenAI's finish_reason for llmscope's ("eos" and a stop string are "stop", the token budget "length")."""
    return FINISH_REASONS.get(reason, reason)
