"""The --endpoint backend: next-token, score and generate computed by a server instead of a local model. Against
`llmscope serve` it asks llmscope's own routes (the same results, exactly); against another OpenAI-compatible server
(vLLM, llama.cpp, ollama) next-token is rebuilt from its log-probabilities, and what such a server cannot give is
named, not invented. It trusts no server: redirects stay on the server, answers are capped in size and time, and
their shapes and figures are checked (results). It uses urllib only: no torch, no transformers."""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from llmscope.client.errors import DEFAULT_TIMEOUT, MAX_ANSWER_BYTES, AnswerShapeError, EndpointError, NoSuchRoute
from llmscope.core.errors import UsageError
from llmscope.core.model_info import ModelInfo

__all__ = ["AnswerShapeError", "Client", "EndpointError", "EndpointSettings", "NoSuchRoute", "endpoint_from"]


LLMSCOPE_SERVER, OPENAI_SERVER = "llmscope serve", "openai-compatible"  # ModelInfo.server: what answered
_READ_BYTES = 2**20  # read the answer in pieces of at most this many bytes
_ERROR_BODY_BYTES = 64 * 2**10  # the most read of an error answer's body (for its message)


@dataclass(frozen=True)
class EndpointSettings:
    """Where the server is: --endpoint URL (or $LLMSCOPE_ENDPOINT), its key, the served model's name, and how long
    one answer may take."""

    url: str
    api_key: str | None = None
    model: str | None = None  # the name to ask for; None: the first one /v1/models lists
    timeout: float = DEFAULT_TIMEOUT

    def __post_init__(self) -> None:
        check_url(self.url, "--endpoint")
        if not (isinstance(self.timeout, (int, float)) and 0 < self.timeout < math.inf):
            raise UsageError(f"--timeout takes a number of seconds above 0, not {self.timeout}")

    @property
    def base(self) -> str:
        """The server's root: a trailing / or /v1 in the URL is dropped (both spellings are common)."""
        url = self.url.rstrip("/")
        return url[:-3] if url.endswith("/v1") else url


def check_url(url: str, option: str) -> None:
    """A usage error unless URL is an http(s) URL with a host and a valid port (urllib's own errors, such as
    "Invalid IPv6 URL", are raised later and read as Python errors)."""
    from urllib.parse import urlsplit

    example = "e.g. http://127.0.0.1:8000, the address `llmscope serve` prints"
    if not url.startswith(("http://", "https://")):
        guess = f"did you mean {option} http://{url}? `llmscope serve` prints its address" if (
            url and "://" not in url) else example
        raise UsageError(f"{option} takes an http:// or https:// URL, not {url!r}", hint=guess)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (reading it checks it: "Port out of range", a port that is not a number)
    except ValueError as error:
        raise UsageError(f"{option} {url!r} is not a valid URL: {error}", hint=example) from None
    if not parts.hostname:
        raise UsageError(f"{option} {url!r} names no host", hint=example)


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of a URL, the port filled in for http and https: what "the same server" means."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(scheme)


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to the same scheme, host and port: the API key never goes to another server (urllib
    alone forwards the Authorization header wherever the redirect points)."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        if origin(newurl) != origin(req.full_url):
            raise EndpointError(f"the endpoint redirected {req.full_url} to another server, {newurl}: not followed, "
                                "as llmscope sends the API key to the --endpoint server only",
                                hint="if you trust that server, pass its address as --endpoint")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def endpoint_from(url: str | None, api_key: str | None, model: str | None,
                  timeout: float | None = None) -> EndpointSettings | None:
    """--endpoint, else $LLMSCOPE_ENDPOINT; None when neither is set (the command runs locally)."""
    chosen = url or os.environ.get("LLMSCOPE_ENDPOINT", "").strip() or None
    if chosen is None:
        return None
    key = api_key or os.environ.get("LLMSCOPE_API_KEY", "").strip() or None
    return EndpointSettings(url=chosen, api_key=key, model=model,
                            timeout=DEFAULT_TIMEOUT if timeout is None else timeout)


class Client:
    """JSON over HTTP to one server, errors as one readable line: redirects followed on the same server only, every
    answer read in pieces up to a size cap and a time limit (the settings' timeout, for the whole answer)."""

    def __init__(self, settings: EndpointSettings) -> None:
        self.settings = settings
        self.opener = urllib.request.build_opener(_SameOriginRedirects)

    def call(self, path: str, body: dict[str, Any] | None = None,
             max_bytes: int = MAX_ANSWER_BYTES) -> dict[str, Any]:
        """The JSON object the server answers on PATH (POST with BODY, GET without)."""
        deadline = time.monotonic() + self.settings.timeout
        with self._open(path, body) as (response, url):
            raw = self._read(response, url, max_bytes, deadline)
        return self._document(raw, path)

    def call_lines(self, path: str, body: dict[str, Any], max_bytes: int, max_line_bytes: int
                   ) -> Iterator[dict[str, Any]]:
        """The JSON objects of a JSON-lines answer on PATH, one per line as they arrive: each line at most
        max_line_bytes, the whole at most max_bytes, all of it within the timeout."""
        deadline = time.monotonic() + self.settings.timeout
        with self._open(path, body) as (response, url):
            size = 0
            while True:
                if time.monotonic() > deadline:
                    raise self._timed_out(url)
                try:
                    line = response.readline(max_line_bytes + 1)
                except (OSError, http.client.HTTPException) as error:
                    if isinstance(error, TimeoutError):
                        raise self._timed_out(url) from None
                    raise EndpointError(f"the endpoint {self.settings.base} broke off its answer on {path}: "
                                        f"{type(error).__name__} {error}") from None
                if not line:
                    return
                size += len(line)
                if len(line) > max_line_bytes:
                    raise self._too_large(url, f"sent a line of more than {_mib(max_line_bytes)}", max_line_bytes)
                if size > max_bytes:
                    raise self._too_large(url, f"passed {_mib(max_bytes)}", max_bytes)
                yield self._document(line, path)

    @contextlib.contextmanager
    def _open(self, path: str, body: dict[str, Any] | None) -> Iterator[tuple[Any, str]]:
        """The server's response to PATH (POST with BODY, GET without), open for reading; failures as one line."""
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.settings.api_key:
            headers["Authorization"] = f"Bearer {self.settings.api_key}"
        url = self.settings.base + path
        request = urllib.request.Request(url, data=data, headers=headers,
                                         method="POST" if body is not None else "GET")
        try:
            with self.opener.open(request, timeout=self.settings.timeout) as response:
                yield response, url
        except urllib.error.HTTPError as error:
            with error:
                raise _http_error(error, url) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            if isinstance(error, TimeoutError) or isinstance(reason, TimeoutError):
                raise self._timed_out(url) from None
            raise EndpointError(f"cannot reach the endpoint {self.settings.base}: {reason}",
                                hint="is the server running? `llmscope serve` prints its address") from None
        except http.client.HTTPException as error:
            raise EndpointError(f"the endpoint {self.settings.base} broke off its answer on {path}: "
                                f"{type(error).__name__} {error}") from None

    def _document(self, raw: bytes, path: str) -> dict[str, Any]:
        """A JSON object from the server's bytes, or one EndpointError line."""
        try:
            document = json.loads(raw)
        except (ValueError, RecursionError):
            raise EndpointError(f"the endpoint {self.settings.base} did not answer JSON on {path}") from None
        if not isinstance(document, dict):
            raise EndpointError(f"the endpoint {self.settings.base} answered a JSON {type(document).__name__} on "
                                f"{path}, not an object")
        return document

    def _read(self, response: Any, url: str, max_bytes: int, deadline: float) -> bytes:
        """The answer's body, read in pieces: refused as soon as it claims or passes max_bytes, or runs past the
        deadline (a server that trickles bytes cannot hold the client longer than about twice the timeout)."""
        claimed = (response.headers.get("Content-Length") or "").strip()
        if claimed.isdigit() and int(claimed) > max_bytes:
            raise self._too_large(url, f"announces {_mib(int(claimed))}", max_bytes)
        pieces, size = [], 0
        while True:
            if time.monotonic() > deadline:
                raise self._timed_out(url)
            piece = response.read1(_READ_BYTES)
            if not piece:
                return b"".join(pieces)
            size += len(piece)
            if size > max_bytes:
                raise self._too_large(url, f"passed {_mib(max_bytes)}", max_bytes)
            pieces.append(piece)

    def _too_large(self, url: str, what: str, max_bytes: int) -> EndpointError:
        return EndpointError(f"the endpoint's answer on {url} {what}: more than the {_mib(max_bytes)} llmscope "
                             "reads from a server; not read", hint="is --endpoint the server you meant?")

    def _timed_out(self, url: str) -> EndpointError:
        timeout = f"{self.settings.timeout:g}"
        return EndpointError(f"no whole answer from {url} within --timeout {timeout} s",
                             hint="the server may be busy or stuck; pass a larger --timeout to wait longer")

    def model_name(self) -> str:
        """The model to ask for: --model, else the first one the server lists."""
        if self.settings.model:
            return self.settings.model
        listed = self.call("/v1/models").get("data")
        if not isinstance(listed, list) or not listed:
            raise EndpointError(f"the endpoint {self.settings.base} lists no model", hint="pass --model NAME")
        first = listed[0]
        if not isinstance(first, dict) or not isinstance(first.get("id"), str) or not first["id"]:
            raise EndpointError(f"the endpoint {self.settings.base} lists its models in a shape llmscope cannot "
                                "read (no \"id\" in /v1/models' first entry)", hint="pass --model NAME")
        return first["id"]


def _mib(size: int) -> str:
    return f"{size / 2**20:,.0f} MiB" if size >= 2**20 else f"{size:,} bytes"


def _http_error(error: urllib.error.HTTPError, url: str) -> EndpointError | UsageError:
    code = None
    try:
        detail = json.loads(error.read(_ERROR_BODY_BYTES)).get("error", {})
        message, code = detail.get("message") or error.reason, detail.get("code")
    except (ValueError, AttributeError, OSError, RecursionError, http.client.HTTPException):
        message = error.reason
    message = " ".join(str(message).split())[:300]  # one line, whatever the server wrote
    if error.code == 404 and code == "model_not_found":
        return EndpointError(f"the endpoint does not serve that model: {message}",
                             hint="pass -m with a name its /v1/models lists, or leave -m out")
    if error.code == 404:
        return NoSuchRoute(f"the endpoint has no {url}: {message}")
    if error.code == 401:
        return EndpointError(f"the endpoint refused the API key: {message}",
                             hint="pass --api-key KEY or set LLMSCOPE_API_KEY")
    if error.code == 400:
        return UsageError(f"the endpoint refused the request: {message}")
    if 300 <= error.code < 400:
        return EndpointError(f"the endpoint answered {error.code} on {url}, a redirect llmscope does not follow "
                             f"for this request: {message}", hint="pass the address it points to as --endpoint")
    return EndpointError(f"the endpoint answered {error.code}: {message}")


def _info(document: dict[str, Any], settings: EndpointSettings) -> ModelInfo:
    """The model info `llmscope serve` sends (its model, dtype, weights), with the server's address added."""
    from dataclasses import replace

    from llmscope.client.answers import from_plain

    if "model_info" not in document:
        raise AnswerShapeError("no 'model_info' in the answer")
    return replace(from_plain(ModelInfo, document["model_info"], "model_info"), endpoint=settings.base,
                   server=LLMSCOPE_SERVER)


def _openai_info(model: str, settings: EndpointSettings) -> ModelInfo:
    """What an OpenAI-compatible server says of its model: the name alone (its weights and dtype are not sent)."""
    return ModelInfo(model=model, source="endpoint", endpoint=settings.base, server=OPENAI_SERVER)


# ---------------------------------------------------------------------------------------------- the commands


def next_token(settings: EndpointSettings, prompt: str, inspect: Any, chat: bool, system: str | None
               ) -> tuple[ModelInfo, Any, tuple[str, ...]]:
    """(model info, NextTokenResult, what the server could not give) for one prompt."""
    from llmscope.client.answers import reading_answer, result_from
    from llmscope.inspection.next_token import NextTokenResult

    if inspect.lens:
        raise UsageError("--lens needs the model's hidden states, which no endpoint sends",
                         hint="run next-token --lens with a local model (-m)")
    client = Client(settings)
    body = {"model": settings.model, "prompt": prompt, "top_k": inspect.top_k, "steps": inspect.steps,
            "temperature": inspect.temperature,
            "top_p": inspect.top_p, "chat": chat, "system": system}
    path = "/llmscope/v1/next-token"
    try:
        document = client.call(path, body)
    except NoSuchRoute:
        return next_token_openai(client, prompt, inspect, chat, system)
    with reading_answer(settings.base, path):
        if "result" not in document:
            raise AnswerShapeError("no 'result' in the answer")
        return _info(document, settings), result_from(NextTokenResult, document["result"]), ()


def next_token_openai(client: Client, prompt: str, inspect: Any, chat: bool, system: str | None
                      ) -> tuple[ModelInfo, Any, tuple[str, ...]]:
    """next-token from any OpenAI-compatible server: a greedy completion of `steps` tokens with top logprobs."""
    from llmscope.client.answers import (
        OPENAI_LIMITS,
        answer_choice,
        next_token_from_openai,
        prompt_token_count,
        read_entries,
        reading_answer,
    )
    from llmscope.server.openai_shapes import MAX_LOGPROBS

    model = client.model_name()
    top = min(inspect.top_k, MAX_LOGPROBS)
    common = {"model": model, "max_tokens": inspect.steps, "temperature": 0, "logprobs": True}
    if chat:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        path = "/v1/chat/completions"
        answer = client.call(path, {**common, "messages": messages, "top_logprobs": top})
    else:
        path = "/v1/completions"
        answer = client.call(path, {**common, "prompt": prompt, "logprobs": top})
    with reading_answer(client.settings.base, path):
        entries = read_entries(answer_choice(answer).get("logprobs"))
        prompt_tokens = prompt_token_count(answer)
        if entries:
            result = next_token_from_openai(model, prompt, prompt, prompt_tokens, entries, inspect, chat)
    if not entries:
        raise EndpointError("the endpoint sent no log-probabilities",
                            hint="vLLM: --max-logprobs 20; ollama and llama.cpp: a version with logprobs support")
    limits = [*OPENAI_LIMITS, "prompt token ids"]
    if inspect.top_k > top:
        limits.append(f"more than {top} candidates (top_logprobs is capped at {MAX_LOGPROBS})")
    return _openai_info(model, client.settings), result, tuple(limits)


def score(settings: EndpointSettings, text: str, options: Any) -> tuple[ModelInfo, Any, tuple[str, ...]]:
    """(model info, ScoreResult, what the server could not give): `llmscope serve`'s score route, else the
    prompt's log-probabilities from an OpenAI-compatible server."""
    from llmscope.client.answers import reading_answer, result_from
    from llmscope.inspection.scoring import ScoreResult

    client = Client(settings)
    body = {"model": settings.model, "text": text, "options": asdict(options)}
    path = "/llmscope/v1/score"
    try:
        document = client.call(path, body)
    except NoSuchRoute:
        return score_openai(client, text, options)
    with reading_answer(settings.base, path):
        if "result" not in document:
            raise AnswerShapeError("no 'result' in the answer")
        return _info(document, settings), result_from(ScoreResult, document["result"]), ()


def score_openai(client: Client, text: str, options: Any) -> tuple[ModelInfo, Any, tuple[str, ...]]:
    """score from any OpenAI-compatible server that echoes the prompt's log-probabilities (vLLM, llmscope serve;
    llama-cpp-python's echo, one token early, is put back in place or refused)."""
    from llmscope.client.answers import (
        DETECT_LOGPROBS,
        LOST_FIRST_NOTE,
        REBUILD_LOGPROBS,
        SCORE_LIMITS,
        SHIFT_NOTE,
        answer_choice,
        echo_is_shifted,
        prompt_token_count,
        read_entries,
        reading_answer,
        score_from_openai,
        unshift_echo,
        with_prompt_logprobs,
    )
    from llmscope.server.openai_shapes import MAX_LOGPROBS

    asked = [name for name, value in (("--prompt", options.prompt), ("--window", options.window),
                                      ("--stride", options.stride), ("--max-tokens", options.max_tokens)) if value]
    if asked:
        raise UsageError(f"{', '.join(asked)} with --endpoint need `llmscope serve`",
                         hint="an OpenAI-compatible server scores the whole text in one pass")
    model = client.model_name()
    top = min(max(options.top_k, 1), MAX_LOGPROBS)
    path = "/v1/completions"

    def echoed(alternatives: int, max_bytes: int = MAX_ANSWER_BYTES) -> dict[str, Any]:
        return client.call(path, {"model": model, "prompt": text, "max_tokens": 1, "temperature": 0, "echo": True,
                                  "logprobs": alternatives, "prompt_logprobs": alternatives}, max_bytes=max_bytes)

    answer = echoed(max(top, DETECT_LOGPROBS))  # wide enough to see a shifted echo; `top` of them are shown
    notes = []
    context = 1
    with reading_answer(client.settings.base, path):
        prompt_tokens = prompt_token_count(answer)
        choice = answer_choice(answer)
        entries = read_entries(choice.get("logprobs"))[:prompt_tokens]
        known = with_prompt_logprobs(entries, choice.get("prompt_logprobs"), top)
        if not known and len(entries) > 2 and echo_is_shifted(entries):
            asked = max(top, REBUILD_LOGPROBS)
            if top < asked:  # each token must be in the row before it: ask for enough alternatives
                wide = echoed(asked, max_bytes=max(MAX_ANSWER_BYTES, len(entries) * asked * 64))
                entries = read_entries(answer_choice(wide).get("logprobs"))[:prompt_token_count(wide)]
            entries, context = unshift_echo(entries, top, asked)
            notes.append(SHIFT_NOTE)
            if context > 1:
                notes.append(LOST_FIRST_NOTE)
        scored = len(entries) > context and entries[context]["logprob"] > -math.inf
        if scored:
            result = score_from_openai(model, text, entries, options, top, context)
    if not scored:
        raise EndpointError("the endpoint sent no log-probabilities for the prompt (echo with logprobs)",
                            hint="vLLM answers them; llama.cpp and ollama do not: score with a local model")
    limits = [limit for limit in SCORE_LIMITS if not (known and limit != SCORE_LIMITS[0])]
    if options.top_k > top:
        limits.append(f"more than {top} alternatives (top_logprobs is capped at {MAX_LOGPROBS})")
    return _openai_info(model, client.settings), result, tuple(limits + notes)


def generate(settings: EndpointSettings, prompt: str, chat: bool | None, system: str | None, generation: Any,
             detail: Any) -> tuple[ModelInfo, Any]:
    """(model info, GenerationResult) from `llmscope serve`'s generate route (the same decode as a local run)."""
    from llmscope.client.answers import reading_answer, result_from
    from llmscope.generation.generate import GenerationResult

    client = Client(settings)
    options = {k: v for k, v in asdict(generation).items() if k != "compile"}
    body = {"model": settings.model, "prompt": prompt, "chat": chat, "system": system, "options": options,
            "detail": asdict(detail)}
    path = "/llmscope/v1/generate"
    try:
        document = client.call(path, body)
    except NoSuchRoute:
        raise EndpointError("generate --endpoint needs `llmscope serve`",
                            hint="for another server, use its own client; next-token --endpoint works with any "
                            "OpenAI-compatible server") from None
    with reading_answer(settings.base, path):
        if "result" not in document:
            raise AnswerShapeError("no 'result' in the answer")
        return _info(document, settings), result_from(GenerationResult, document["result"])
