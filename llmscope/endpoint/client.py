"""The --endpoint backend: next-token, score and generate computed by a server instead of a local model. Against
`llmscope serve` it asks llmscope's own routes (the same results, exactly); against another OpenAI-compatible server
(vLLM, llama.cpp, ollama) next-token is rebuilt from its log-probabilities, and what such a server cannot give is
named, not invented. It uses urllib only: no torch, no transformers, nothing to import but the standard library."""

from __future__ import annotations

import json
import math
import os
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any

from llmscope.core.errors import LlmscopeError, UsageError
from llmscope.core.results import ModelInfo


class EndpointError(LlmscopeError):
    """The server could not be reached, refused the request or answered something that is not its API."""


class NoSuchRoute(EndpointError):
    """The server has no such route (404): not `llmscope serve`, for llmscope's own routes."""


@dataclass(frozen=True)
class EndpointSettings:
    """Where the server is: --endpoint URL (or $LLMSCOPE_ENDPOINT), its key, and the served model's name."""

    url: str
    api_key: str | None = None
    model: str | None = None  # the name to ask for; None: the first one /v1/models lists
    timeout: float = 600.0

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise UsageError(f"--endpoint must be an http:// or https:// URL (got {self.url!r})",
                             hint="e.g. --endpoint http://127.0.0.1:8000 (the address `llmscope serve` prints)")

    @property
    def base(self) -> str:
        """The server's root: a trailing / or /v1 in the URL is dropped (both spellings are common)."""
        url = self.url.rstrip("/")
        return url[:-3] if url.endswith("/v1") else url


def endpoint_from(url: str | None, api_key: str | None, model: str | None) -> EndpointSettings | None:
    """--endpoint, else $LLMSCOPE_ENDPOINT; None when neither is set (the command runs locally)."""
    chosen = url or os.environ.get("LLMSCOPE_ENDPOINT", "").strip() or None
    if chosen is None:
        return None
    key = api_key or os.environ.get("LLMSCOPE_API_KEY", "").strip() or None
    return EndpointSettings(url=chosen, api_key=key, model=model)


class Client:
    """JSON over HTTP to one server, errors as one readable line."""

    def __init__(self, settings: EndpointSettings) -> None:
        self.settings = settings

    def call(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.settings.api_key:
            headers["Authorization"] = f"Bearer {self.settings.api_key}"
        request = urllib.request.Request(self.settings.base + path, data=data, headers=headers,
                                         method="POST" if body is not None else "GET")
        try:
            with urllib.request.urlopen(request, timeout=self.settings.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise _http_error(error, self.settings.base + path) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise EndpointError(f"cannot reach the endpoint {self.settings.base}: {reason}",
                                hint="is the server running? `llmscope serve` prints its address") from None
        except ValueError:
            raise EndpointError(f"the endpoint {self.settings.base} did not answer JSON on {path}") from None

    def model_name(self) -> str:
        """The model to ask for: --model, else the first one the server lists."""
        if self.settings.model:
            return self.settings.model
        listed = self.call("/v1/models").get("data") or []
        if not listed:
            raise EndpointError(f"the endpoint {self.settings.base} lists no model", hint="pass --model NAME")
        return str(listed[0].get("id"))


def _http_error(error: urllib.error.HTTPError, url: str) -> EndpointError | UsageError:
    code = None
    try:
        detail = json.loads(error.read()).get("error", {})
        message, code = detail.get("message") or error.reason, detail.get("code")
    except (ValueError, AttributeError, OSError):
        message = error.reason
    if error.code == 404 and code == "model_not_found":
        return EndpointError(f"the endpoint does not serve that model: {message}",
                             hint="pass -m with a name its /v1/models lists, or leave -m out")
    if error.code == 404:
        return NoSuchRoute(f"the endpoint has no {url} ({message})")
    if error.code == 401:
        return EndpointError(f"the endpoint refused the API key: {message}",
                             hint="pass --api-key KEY or set LLMSCOPE_API_KEY")
    if error.code == 400:
        return UsageError(f"the endpoint refused the request: {message}")
    return EndpointError(f"the endpoint answered {error.code}: {message}")


def _info(document: dict[str, Any]) -> ModelInfo:
    from llmscope.endpoint.results import from_plain

    return from_plain(ModelInfo, document["model_info"])


# ---------------------------------------------------------------------------------------------- the commands


def next_token(settings: EndpointSettings, prompt: str, inspect: Any, chat: bool, system: str | None
               ) -> tuple[ModelInfo, Any, tuple[str, ...]]:
    """(model info, NextTokenResult, what the server could not give) for one prompt."""
    from llmscope.endpoint.results import from_plain
    from llmscope.inspection.inspection import NextTokenResult

    if inspect.lens:
        raise UsageError("--lens needs the model's hidden states, which no endpoint sends",
                         hint="run next-token --lens with a local model (-m)")
    client = Client(settings)
    body = {"model": settings.model, "prompt": prompt, "top_k": inspect.top_k, "steps": inspect.steps,
            "temperature": inspect.temperature,
            "top_p": inspect.top_p, "chat": chat, "system": system}
    try:
        document = client.call("/llmscope/v1/next-token", body)
    except NoSuchRoute:
        return next_token_openai(client, prompt, inspect, chat, system)
    return _info(document), from_plain(NextTokenResult, document["result"]), ()


def next_token_openai(client: Client, prompt: str, inspect: Any, chat: bool, system: str | None
                      ) -> tuple[ModelInfo, Any, tuple[str, ...]]:
    """next-token from any OpenAI-compatible server: a greedy completion of `steps` tokens with top logprobs."""
    from llmscope.endpoint.results import OPENAI_LIMITS, completion_entries, next_token_from_openai
    from llmscope.server.openai_shapes import MAX_LOGPROBS

    model = client.model_name()
    top = min(inspect.top_k, MAX_LOGPROBS)
    common = {"model": model, "max_tokens": inspect.steps, "temperature": 0, "logprobs": True}
    if chat:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        answer = client.call("/v1/chat/completions", {**common, "messages": messages, "top_logprobs": top})
        entries = ((answer.get("choices") or [{}])[0].get("logprobs") or {}).get("content") or []
    else:
        answer = client.call("/v1/completions", {**common, "prompt": prompt, "logprobs": top})
        entries = completion_entries((answer.get("choices") or [{}])[0].get("logprobs") or {})
    if not entries:
        raise EndpointError("the endpoint sent no log-probabilities",
                            hint="vLLM: --max-logprobs 20; ollama and llama.cpp: a version with logprobs support")
    prompt_tokens = int((answer.get("usage") or {}).get("prompt_tokens") or 0)
    result = next_token_from_openai(model, prompt, prompt, prompt_tokens, entries, inspect, chat)
    limits = [*OPENAI_LIMITS, "prompt token ids"]
    if inspect.top_k > top:
        limits.append(f"more than {top} candidates (top_logprobs is capped at {MAX_LOGPROBS})")
    info = ModelInfo(model=model, source="endpoint")
    return info, result, tuple(limits)


def score(settings: EndpointSettings, text: str, options: Any) -> tuple[ModelInfo, Any, tuple[str, ...]]:
    """(model info, ScoreResult, what the server could not give): `llmscope serve`'s score route, else the
    prompt's log-probabilities from an OpenAI-compatible server."""
    from llmscope.endpoint.results import from_plain
    from llmscope.inspection.scoring import ScoreResult

    client = Client(settings)
    body = {"model": settings.model, "text": text, "options": asdict(options)}
    try:
        document = client.call("/llmscope/v1/score", body)
    except NoSuchRoute:
        return score_openai(client, text, options)
    return _info(document), from_plain(ScoreResult, document["result"]), ()


def score_openai(client: Client, text: str, options: Any) -> tuple[ModelInfo, Any, tuple[str, ...]]:
    """score from any OpenAI-compatible server that echoes the prompt's log-probabilities (vLLM, llmscope serve)."""
    from llmscope.endpoint.results import SCORE_LIMITS, completion_entries, score_from_openai, with_prompt_logprobs
    from llmscope.server.openai_shapes import MAX_LOGPROBS

    asked = [name for name, value in (("--prompt", options.prompt), ("--window", options.window),
                                      ("--stride", options.stride), ("--max-tokens", options.max_tokens)) if value]
    if asked:
        raise UsageError(f"{', '.join(asked)} with --endpoint need `llmscope serve`",
                         hint="an OpenAI-compatible server scores the whole text in one pass")
    model = client.model_name()
    top = min(max(options.top_k, 1), MAX_LOGPROBS)
    answer = client.call("/v1/completions", {"model": model, "prompt": text, "max_tokens": 1, "temperature": 0,
                                             "echo": True, "logprobs": top, "prompt_logprobs": top})
    prompt_tokens = int((answer.get("usage") or {}).get("prompt_tokens") or 0)
    choice = (answer.get("choices") or [{}])[0]
    entries = completion_entries(choice.get("logprobs") or {})[:prompt_tokens]
    known = with_prompt_logprobs(entries, choice.get("prompt_logprobs"), top)
    if len(entries) < 2 or entries[1].get("logprob") in (None, -math.inf):
        raise EndpointError("the endpoint sent no log-probabilities for the prompt (echo with logprobs)",
                            hint="vLLM answers them; llama.cpp and ollama do not: score with a local model")
    limits = [limit for limit in SCORE_LIMITS if not (known and limit != SCORE_LIMITS[0])]
    if options.top_k > top:
        limits.append(f"more than {top} alternatives (top_logprobs is capped at {MAX_LOGPROBS})")
    return ModelInfo(model=model, source="endpoint"), score_from_openai(model, text, entries, options), tuple(limits)


def generate(settings: EndpointSettings, prompt: str, chat: bool | None, system: str | None, generation: Any,
             detail: Any) -> tuple[ModelInfo, Any]:
    """(model info, GenerationResult) from `llmscope serve`'s generate route (the same decode as a local run)."""
    from llmscope.endpoint.results import from_plain
    from llmscope.generation.generation import GenerationResult

    client = Client(settings)
    options = {k: v for k, v in asdict(generation).items() if k != "compile"}
    body = {"model": settings.model, "prompt": prompt, "chat": chat, "system": system, "options": options,
            "detail": asdict(detail)}
    try:
        document = client.call("/llmscope/v1/generate", body)
    except NoSuchRoute:
        raise EndpointError("generate --endpoint needs `llmscope serve`",
                            hint="for another server, use its own client; next-token --endpoint works with any "
                            "OpenAI-compatible server") from None
    return _info(document), from_plain(GenerationResult, document["result"])
