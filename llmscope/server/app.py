"""The Starlette app of `llmscope serve`: each route reads a request into openai_shapes, checks it against the
per-request caps, hands the work to the engine (the library computes) and writes the answer back in OpenAI's
shape (or llmscope's --json shape on its own routes). Reading JSON, tokenizing and writing answers run off the
event loop; a middleware checks Host and Content-Type on every route. No renderers here, and no model code."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from llmscope.core.errors import LlmscopeError, UsageError
from llmscope.server import openai_shapes as shapes
from llmscope.server.compute import encode_messages, prompt_logprobs
from llmscope.server.config import MAX_BODY_BYTES, ServeSettings, host_allowed
from llmscope.server.engine import Engine, GenerateWork, Job, call_job
from llmscope.server.explore import explore_routes
from llmscope.server.native import RouteTools, native_routes
from llmscope.server.openai_shapes import ApiError, TokenLogprob

Handler = Callable[[Request], Awaitable[Response]]
T = TypeVar("T")
# What an answer costs in JSON, for the estimate checked against --max-answer-bytes before any work: per token
# (its text, id, figures) and per alternative of a token (text, id, log-probability). Generous upper figures.
BYTES_PER_TOKEN = 256
BYTES_PER_ALTERNATIVE = 128


class ClientGone(Exception):
    """The client closed the connection before its answer was ready (its work was cancelled)."""


class RequestLog:
    """ASGI middleware: one line per request on the server's log (client, method, path, status, milliseconds)."""

    def __init__(self, app: Any, log: Callable[[str], None]) -> None:
        self.app, self.log = app, log

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), {"code": 499}

        async def send_and_note(message: Any) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            client = scope.get("client") or ("-", 0)
            self.log(f'{client[0]} "{scope["method"]} {scope["path"]}" {status["code"]} '
                     f"{(time.perf_counter() - started) * 1000:.0f} ms")


class RequestGuard:
    """ASGI middleware over every route (llmscope's, OpenAI's and any page served beside them): the Host header
    must name this server (config.host_allowed: defeats DNS rebinding) and a request with a body must be
    application/json (a cross-origin page cannot send that without a CORS preflight, which is never granted)."""

    def __init__(self, app: Any, names: frozenset[str]) -> None:
        self.app, self.names = app, names

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        refusal = None
        if not host_allowed(headers.get("host"), self.names):
            refusal = ApiError(400, f"the Host header {headers.get('host', '')!r} does not name this server (serve "
                               "--allowed-host NAME accepts another name)", code="host_not_allowed")
        elif scope["method"] in ("POST", "PUT", "PATCH"):
            media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if media != "application/json":
                refusal = ApiError(415, f"the body must be sent as 'Content-Type: application/json' (got "
                                   f"{media or 'none'!r})", code="unsupported_media_type")
        if refusal is None:
            await self.app(scope, receive, send)
            return
        await _error(refusal)(scope, receive, send)


def json_bytes(document: Any) -> bytes:
    """A document as JSONResponse writes it (UTF-8, compact, no NaN)."""
    return json.dumps(document, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode()


def _error(error: ApiError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def _library_error(error: LlmscopeError) -> ApiError:
    message = str(error)
    if isinstance(error, UsageError):
        code = "context_length_exceeded" if "context" in message else None
        return ApiError(400, message, code=code)
    return ApiError(500, message, kind="server_error")


async def _disconnected(request: Request) -> None:
    """Returns when the client goes away (the body has been read, so receive() waits for the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _wait(request: Request, jobs: list[Job]) -> list[Any]:
    """The jobs' results, or ClientGone (and the jobs cancelled) when the client disconnects first."""
    watcher = asyncio.ensure_future(_disconnected(request))
    gathered = asyncio.gather(*(job.future for job in jobs))
    try:
        done, _ = await asyncio.wait({gathered, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if gathered in done:
            return gathered.result()
        raise ClientGone
    finally:
        watcher.cancel()
        for job in jobs:
            if not job.future.done():
                job.cancelled.set()
        if not gathered.done():
            gathered.cancel()
            with contextlib.suppress(BaseException):
                await gathered


def parse_body(data: bytes) -> dict[str, Any]:
    """A request body as a JSON object; anything else (bad JSON, nesting past Python's recursion limit, a string
    with a lone surrogate that no tokenizer can read) is a 400."""
    try:
        body = json.loads(data)
    except RecursionError:
        raise ApiError(400, "the body is nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as error:
        raise ApiError(400, f"the body is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, "the body holds a string that is not valid Unicode (a lone surrogate such as \\ud800)"
                       ) from None
    except RecursionError:
        raise ApiError(400, "the body is nested too deeply") from None
    return body


def longest_token(tokenizer: Any) -> int | None:
    """The most characters one token of the vocabulary stands for (its stored form: byte-level BPE keeps a byte as
    one character, so this bounds the text's characters too); None when the tokenizer does not list its vocabulary."""
    try:
        vocabulary = tokenizer.get_vocab()
    except (AttributeError, NotImplementedError, TypeError):
        return None
    return max((len(piece) for piece in vocabulary), default=0) or None


def build_app(engine: Engine, settings: ServeSettings, log: Callable[[str], None]) -> Starlette:
    """The app for one loaded model (engine.loaded); `log` takes the request lines."""
    loaded = engine.loaded
    name = loaded.spec.name
    created = int(time.time())
    tokenizer_lock = threading.Lock()  # one tokenization at a time, off the event loop (the model's thread is apart)

    async def tokenized(work: Callable[[], T]) -> T:
        """Run tokenizer work (and the checks around it) on a worker thread, never on the event loop."""
        def locked() -> T:
            with tokenizer_lock:
                return work()
        return await asyncio.to_thread(locked)

    async def answer(document: Any, limit: int | None = settings.max_answer_bytes) -> Response:
        """The JSON answer, written off the event loop and checked against --max-answer-bytes (limit None: the
        route bounds its answer itself)."""
        data = await asyncio.to_thread(json_bytes, document)
        if limit is not None and len(data) > limit:
            raise ApiError(400, f"the answer is {len(data):,} bytes, more than this server sends "
                           f"({settings.max_answer_bytes:,}: serve --max-answer-bytes); ask for less",
                           code="answer_too_large")
        return Response(data, media_type="application/json")

    def check_answer(positions: int, alternatives: int) -> None:
        """Refuse, before any work, an answer whose estimated size passes --max-answer-bytes."""
        estimate = positions * (BYTES_PER_TOKEN + alternatives * BYTES_PER_ALTERNATIVE)
        if estimate > settings.max_answer_bytes:
            raise ApiError(400, f"{positions:,} tokens with {alternatives:,} alternatives each would make an answer "
                           f"of about {estimate:,} bytes, more than this server sends ({settings.max_answer_bytes:,}:"
                           " serve --max-answer-bytes); ask for fewer", code="answer_too_large")

    def check_tokens(total: int, what: str = "prompt and new tokens") -> None:
        if total > settings.max_tokens:
            raise ApiError(400, f"this request asks for {total:,} {what}, more than one request may "
                           f"({settings.max_tokens:,}: serve --max-tokens)", code="too_many_tokens")

    longest = longest_token(loaded.tokenizer)

    def check_characters(characters: int, new_tokens: int = 0) -> None:
        """Refuse, before tokenizing, text too long to fit --max-tokens whatever its tokens: no token covers more
        than `longest` characters, so the text has at least characters / longest tokens."""
        fewest = -(-characters // longest) if longest else 0
        if fewest + new_tokens > settings.max_tokens:
            raise ApiError(400, f"{characters:,} characters make at least {fewest:,} tokens (no token of this model "
                           f"is longer than {longest} characters), more than one request may "
                           f"({settings.max_tokens:,}: serve --max-tokens)", code="too_many_tokens")

    def guarded(handler: Handler, open_route: bool = False) -> Handler:
        async def run(request: Request) -> Response:
            try:
                if settings.api_key is not None and not open_route:
                    given = request.headers.get("authorization", "")
                    token = given[7:].strip() if given.lower().startswith("bearer ") else ""
                    if not hmac.compare_digest(token.encode(), settings.api_key.encode()):
                        raise ApiError(401, "Incorrect API key provided (send it as 'Authorization: Bearer KEY')",
                                       code="invalid_api_key")
                return await handler(request)
            except ApiError as error:
                return _error(error)
            except LlmscopeError as error:
                return _error(_library_error(error))
            except ClientGone:
                return Response(status_code=499)
            except Exception as error:  # still OpenAI's shape; the library's known errors keep their words
                from llmscope.core.errors import translate

                known = translate(error, loaded.info)
                text = str(known) if known is not None else f"{type(error).__name__}: {error}".splitlines()[0]
                log(f"error: {text}")
                return _error(ApiError(500, text, kind="server_error"))
        return run

    async def body_of(request: Request) -> dict[str, Any]:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise ApiError(413, f"the request body is larger than {MAX_BODY_BYTES:,} bytes", code="too_large")
        data = bytearray()

        async def read_all() -> None:
            async for part in request.stream():
                data.extend(part)
                if len(data) > MAX_BODY_BYTES:
                    raise ApiError(413, f"the request body is larger than {MAX_BODY_BYTES:,} bytes", code="too_large")

        try:
            await asyncio.wait_for(read_all(), timeout=settings.header_timeout)
        except asyncio.TimeoutError:
            raise ApiError(408, f"the request body did not arrive within {settings.header_timeout:g} s (serve "
                           "--header-timeout)", code="timeout") from None
        return await asyncio.to_thread(parse_body, bytes(data))

    def check_model(model: str | None) -> None:
        if model not in (None, "", name):
            raise ApiError(404, f"The model `{model}` does not exist; this server serves `{name}`",
                           param="model", code="model_not_found")

    def submit(job: Job) -> Job:
        engine.submit(job)
        return job

    def submit_all(jobs: list[Job]) -> list[Job]:
        """Submit every job, or none: one refused (503) cancels those already queued."""
        try:
            for job in jobs:
                engine.submit(job)
        except ApiError:
            for job in jobs:
                job.cancelled.set()
            raise
        return jobs

    def generation_job(loop: asyncio.AbstractEventLoop, encoded: Any, sampling: shapes.Sampling, alternatives: int,
                       stream: bool) -> Job:
        from llmscope.core.command_settings import GenerationSettings

        budget = max(sampling.max_tokens, 1)
        if sampling.greedy:
            generation = GenerationSettings(max_new_tokens=budget)
        else:  # a request without a seed gets its own: two of them never share random draws in one batch
            import random

            seed = sampling.seed if sampling.seed is not None else random.getrandbits(63)
            generation = GenerationSettings(max_new_tokens=budget, do_sample=True, temperature=sampling.temperature,
                                            top_p=sampling.top_p, top_k=sampling.top_k, seed=seed)
        key = ("generate", generation.do_sample, generation.temperature, generation.top_p, generation.top_k,
               generation.seed)
        return Job(kind="generate", key=key, payload=GenerateWork(encoded, generation, sampling.stop, alternatives),
                   loop=loop, future=loop.create_future(), events=asyncio.Queue() if stream else None)

    def token_logprobs(result: Any, alternatives: int) -> list[TokenLogprob]:
        return [TokenLogprob(text=t.text or "", logprob=t.logprob,
                             top=tuple((a.text, a.logprob) for a in t.top[:alternatives]), token_bytes=t.bytes)
                for t in result.tokens]

    # ------------------------------------------------------------------------------------------ OpenAI

    async def health(request: Request) -> Response:
        stats = engine.stats
        return JSONResponse({"status": "ok", "model": name, "queued": engine.queued, "requests": stats.requests,
                             "batches": stats.batches, "rows": stats.rows, "largest_batch": stats.largest_batch,
                             "cancelled": stats.cancelled})

    async def models(request: Request) -> Response:
        return JSONResponse(shapes.models_list(name, created))

    async def completions(request: Request) -> Response:
        parsed = shapes.parse_completion(await body_of(request))
        check_model(parsed.model)
        if len(parsed.prompts) > settings.max_queue:  # they could never all be queued: not a retry matter
            raise ApiError(400, f"{len(parsed.prompts):,} prompts in one request; this server takes at most "
                           f"{settings.max_queue} (serve --max-queue)", param="prompt", code="too_many_prompts")
        loop = asyncio.get_running_loop()
        sampling, k = parsed.sampling, parsed.logprobs
        wanted = max(k or 0, parsed.prompt_logprobs or 0)
        check_answer(len(parsed.prompts) * sampling.max_tokens, k or 0)
        check_characters(sum(len(p) for p in parsed.prompts), len(parsed.prompts) * sampling.max_tokens)
        from llmscope.generation.prompts import encode_prompt

        encoded = await tokenized(lambda: [encode_prompt(loaded, p, new_tokens=max(sampling.max_tokens, 1),
                                                         budget_option="max_tokens") for p in parsed.prompts])
        check_tokens(sum(len(e.ids) + sampling.max_tokens for e in encoded))
        if parsed.echo or parsed.prompt_logprobs is not None:
            check_answer(sum(len(e.ids) for e in encoded) + len(encoded) * sampling.max_tokens, wanted)
        echoes: list[Job] = []
        if (parsed.echo and k is not None) or parsed.prompt_logprobs is not None:
            echoes = [call_job(loop, lambda e=e: prompt_logprobs(loaded, e.ids, wanted)) for e in encoded]
        jobs = [generation_job(loop, e, sampling, k or 0, parsed.stream) for e in encoded] if (
            sampling.max_tokens > 0) else []
        submit_all(echoes + jobs)
        request_id = shapes.new_id("cmpl")
        if parsed.stream:
            return _sse(_completion_stream(request_id, name, parsed, encoded, jobs, echoes, k, token_logprobs))
        echoed = await _wait(request, echoes) if echoes else [None] * len(encoded)
        results = await _wait(request, jobs) if jobs else [None] * len(encoded)
        choices = []
        for index, (prompt, result, echo) in enumerate(zip(encoded, results, echoed)):
            text = result.text if result is not None else ""
            shown = [dataclasses.replace(t, top=(t.top or ())[: k or 0] if t.top is not None else None)
                     for t in echo or []] if parsed.echo else []
            tokens = shown + (token_logprobs(result, k or 0) if result is not None and k is not None else [])
            reason = shapes.finish_reason(result.finish_reason) if result is not None else "length"
            choices.append(shapes.completion_choice(
                index, (prompt.text if parsed.echo else "") + text, reason,
                shapes.completion_logprobs(tokens) if k is not None else None))
            if parsed.prompt_logprobs is not None and echo is not None:
                trimmed = [dataclasses.replace(t, top=(t.top or ())[: parsed.prompt_logprobs],
                                               top_ids=t.top_ids[: parsed.prompt_logprobs]) for t in echo]
                choices[-1]["prompt_logprobs"] = shapes.vllm_prompt_logprobs(trimmed)
        completion_tokens = sum(r.new_tokens for r in results if r is not None)
        return await answer(shapes.completion(request_id, name, choices, sum(len(e.ids) for e in encoded),
                                              completion_tokens))

    async def chat(request: Request) -> Response:
        parsed = shapes.parse_chat(await body_of(request))
        check_model(parsed.model)
        loop = asyncio.get_running_loop()
        sampling = parsed.sampling
        check_characters(sum(len(content) for _, content in parsed.messages))
        if sampling.max_tokens_given:
            encoded = await tokenized(lambda: encode_messages(loaded, parsed.messages, sampling.max_tokens))
        else:  # the default budget, clipped to what the context leaves after the prompt
            from llmscope.loading.modelconfig import context_length

            encoded = await tokenized(lambda: encode_messages(loaded, parsed.messages, 1))
            limit = context_length(loaded.model.config)
            if limit is not None:
                sampling = dataclasses.replace(sampling, max_tokens=min(sampling.max_tokens, limit - len(encoded.ids)))
        check_tokens(len(encoded.ids) + sampling.max_tokens)
        check_answer(sampling.max_tokens, parsed.top_logprobs)
        job = submit(generation_job(loop, encoded, sampling, parsed.top_logprobs, parsed.stream))
        request_id = shapes.new_id("chatcmpl")
        if parsed.stream:
            return _sse(_chat_stream(request_id, name, parsed, job, token_logprobs, len(encoded.ids)))
        (result,) = await _wait(request, [job])
        logprobs = shapes.chat_logprobs(token_logprobs(result, parsed.top_logprobs)) if parsed.logprobs else None
        return await answer(shapes.chat_completion(request_id, name, result.text,
                                                   shapes.finish_reason(result.finish_reason), logprobs,
                                                   len(encoded.ids), result.new_tokens))

    async def not_found(request: Request, error: Exception) -> Response:
        status = getattr(error, "status_code", 404)
        message = f"no route {request.method} {request.url.path}" if status == 404 else str(
            getattr(error, "detail", "")) or "bad request"
        return _error(ApiError(status, message, code="not_found" if status == 404 else None))

    tools = RouteTools(submit=submit, body_of=body_of, wait=_wait, tokenized=tokenized, answer=answer,
                       check_answer=check_answer, check_tokens=check_tokens, check_characters=check_characters,
                       max_top_k=settings.max_top_k, max_steps=settings.max_steps)
    routes = [
        Route("/health", guarded(health, open_route=True), methods=["GET"]),
        Route("/v1/models", guarded(models), methods=["GET"]),
        Route("/v1/completions", guarded(completions), methods=["POST"]),
        Route("/v1/chat/completions", guarded(chat), methods=["POST"]),
        *(Route(path, guarded(handler), methods=["POST"])
          for path, handler in native_routes(loaded, tools).items()),
        *explore_routes(loaded, guarded, tools),
    ]
    return Starlette(routes=routes, middleware=[Middleware(RequestLog, log=log),
                                                Middleware(RequestGuard, names=settings.host_names())],
                     exception_handlers={HTTPException: not_found})


# ---------------------------------------------------------------------------------------------- streams


def _sse(events: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    async def lines() -> AsyncIterator[str]:
        async for event in events:
            yield f"data: {json.dumps(event, ensure_ascii=False)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(lines(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def _events(job: Job) -> AsyncIterator[tuple[str, Any, Any]]:
    """A streaming job's ("text", delta, token) items up to its ("end", reason, None); cancels it if abandoned."""
    assert job.events is not None
    try:
        while True:
            item = await job.events.get()
            if item[0] == "error":  # the answer has begun: the failure comes as an error event (item[2]: its code)
                yield item
                return
            yield item
            if item[0] == "end":
                await job.future
                return
    finally:
        if not job.future.done():
            job.cancelled.set()


async def _completion_stream(request_id: str, model: str, parsed: shapes.CompletionRequest, encoded: list[Any],
                             jobs: list[Job], echoes: list[Job], k: int | None,
                             token_logprobs: Callable[[Any, int], list[TokenLogprob]]
                             ) -> AsyncIterator[dict[str, Any]]:
    try:
        new_tokens = 0
        for index, prompt in enumerate(encoded):
            if parsed.echo:
                echo = await echoes[index].future if echoes else None
                logprobs = None if echo is None or k is None else shapes.completion_logprobs(
                    [dataclasses.replace(t, top=None if t.top is None else t.top[:k]) for t in echo])
                yield shapes.completion_chunk(request_id, model, index, prompt.text, None, logprobs)
            if not jobs:
                yield shapes.completion_chunk(request_id, model, index, "", "length")
                continue
            async for kind, value, token in _events(jobs[index]):
                if kind == "error":
                    yield shapes.error_body(value, "server_error", code=token)
                    return
                if kind == "end":
                    yield shapes.completion_chunk(request_id, model, index, "", shapes.finish_reason(value))
                elif value or token is not None:
                    logprobs = None
                    if k is not None and token is not None:
                        logprobs = shapes.completion_logprobs([TokenLogprob(
                            text=token.text or "", logprob=token.logprob,
                            top=tuple((a.text, a.logprob) for a in token.top[:k]))])
                    yield shapes.completion_chunk(request_id, model, index, value, None, logprobs)
            new_tokens += jobs[index].future.result().new_tokens  # _events returns once the job has resolved
        if parsed.include_usage:
            yield shapes.usage_chunk(request_id, model, "text_completion", sum(len(e.ids) for e in encoded),
                                     new_tokens)
    finally:
        for job in jobs + echoes:
            if not job.future.done():
                job.cancelled.set()


async def _chat_stream(request_id: str, model: str, parsed: shapes.ChatRequest, job: Job,
                       token_logprobs: Callable[[Any, int], list[TokenLogprob]], prompt_tokens: int
                       ) -> AsyncIterator[dict[str, Any]]:
    yield shapes.chat_chunk(request_id, model, {"role": "assistant", "content": ""}, None)
    async for kind, value, token in _events(job):
        if kind == "error":
            yield shapes.error_body(value, "server_error", code=token)
            return
        if kind == "end":
            yield shapes.chat_chunk(request_id, model, {}, shapes.finish_reason(value))
        elif value or token is not None:
            logprobs = None
            if parsed.logprobs and token is not None:
                logprobs = shapes.chat_logprobs([TokenLogprob(
                    text=token.text or "", logprob=token.logprob,
                    top=tuple((a.text, a.logprob) for a in token.top[: parsed.top_logprobs]), token_bytes=token.bytes)])
            yield shapes.chat_chunk(request_id, model, {"content": value}, None, logprobs)
    if parsed.include_usage:  # _events returns once the job has resolved
        yield shapes.usage_chunk(request_id, model, "chat.completion.chunk", prompt_tokens,
                                 job.future.result().new_tokens)
