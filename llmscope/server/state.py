"""What every route of `llmscope serve` shares, held by one ServeState: the loaded model and its engine, the
per-request caps and the checks against them, reading a body, tokenizing and answering off the event loop,
queueing jobs and waiting for them. It speaks HTTP only through Starlette's Request; it computes nothing itself."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable
from types import EllipsisType
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from llmscope.server.budget import Cost, Pass, Shape, cost_of
from llmscope.server.config import MAX_BODY_BYTES, ServeSettings
from llmscope.server.engine import Engine, Job
from llmscope.server.native import RouteTools
from llmscope.server.openai_shapes import ApiError
from llmscope.server.wire import ClientGone, client_disconnected, json_bytes

T = TypeVar("T")
# What an answer costs in JSON, for the estimate checked against --max-answer-bytes before any work: per token
# (its text, id, figures) and per alternative of a token (text, id, log-probability). Generous upper figures.
BYTES_PER_TOKEN = 256
BYTES_PER_ALTERNATIVE = 128


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


async def wait_for_jobs(request: Request, jobs: list[Job]) -> list[Any]:
    """The jobs' results, or ClientGone (and the jobs cancelled) when the client disconnects first."""
    watcher = asyncio.ensure_future(client_disconnected(request))
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


class ServeState:
    """One served model (engine.loaded) with its engine, the server's settings and its log; what the routes read
    and the checks they run before any work."""

    def __init__(self, engine: Engine, settings: ServeSettings, log: Callable[[str], None]) -> None:
        self.engine, self.settings, self.log = engine, settings, log
        self.loaded = engine.loaded
        self.name: str = self.loaded.spec.name
        self.created = int(time.time())
        self.longest = longest_token(self.loaded.tokenizer)
        self.shape = Shape.of(self.loaded)
        # one tokenization at a time, off the event loop (the model's thread is apart)
        self._tokenizer_lock = threading.Lock()

    async def tokenized(self, work: Callable[[], T]) -> T:
        """Run tokenizer work (and the checks around it) on a worker thread, never on the event loop."""
        def locked() -> T:
            with self._tokenizer_lock:
                return work()
        return await asyncio.to_thread(locked)

    async def answer(self, document: Any, limit: int | EllipsisType | None = ...) -> Response:
        """The JSON answer, written off the event loop and checked against `limit` bytes (left out:
        --max-answer-bytes; None: the route bounds its answer itself)."""
        limit = self.settings.max_answer_bytes if limit is ... else limit
        data = await asyncio.to_thread(json_bytes, document)
        if limit is not None and len(data) > limit:
            raise ApiError(400, f"the answer is {len(data):,} bytes, more than this server sends "
                           f"({self.settings.max_answer_bytes:,}: serve --max-answer-bytes); ask for less",
                           code="answer_too_large")
        return Response(data, media_type="application/json")

    def check_answer(self, positions: int, alternatives: int) -> None:
        """Refuse, before any work, an answer whose estimated size passes --max-answer-bytes."""
        estimate = positions * (BYTES_PER_TOKEN + alternatives * BYTES_PER_ALTERNATIVE)
        if estimate > self.settings.max_answer_bytes:
            raise ApiError(400, f"{positions:,} tokens with {alternatives:,} alternatives each would make an answer "
                           f"of about {estimate:,} bytes, more than this server sends "
                           f"({self.settings.max_answer_bytes:,}: serve --max-answer-bytes); ask for fewer",
                           code="answer_too_large")

    def check_cost(self, passes: list[Pass]) -> Cost:
        """Refuse, before any work, a request whose forward passes cannot finish within --job-timeout at the speed
        measured when the server started (a lower bound: 400, over_budget), or whose largest pass needs more memory
        than is free now (400, over_memory)."""
        from llmscope.loading.memory import available_memory, check_enabled, gib

        cost = cost_of(self.shape, passes)
        speed = self.engine.speed
        least = speed.least_seconds(cost) if speed is not None else 0.0
        budget = self.settings.job_timeout
        if least > budget:
            self.engine.stats.refused += 1
            raise ApiError(400, f"this request needs {cost.passes:,} forward passes over {cost.token_layers:,} "
                           f"token-layers: at least {least:,.1f} s at the speed this server measured, more than its "
                           f"time budget of {budget:g} s per job (serve --job-timeout); ask for less",
                           code="over_budget")
        free = available_memory(str(self.loaded.input_device)) if check_enabled() else None
        if free is not None and cost.peak_bytes > free:
            self.engine.stats.refused += 1
            raise ApiError(400, f"this request needs about {gib(cost.peak_bytes)} of memory for its largest forward "
                           f"pass and {gib(free)} is free now; ask for less", code="over_memory")
        return cost

    def check_tokens(self, total: int, what: str = "prompt and new tokens") -> None:
        if total > self.settings.max_tokens:
            raise ApiError(400, f"this request asks for {total:,} {what}, more than one request may "
                           f"({self.settings.max_tokens:,}: serve --max-tokens)", code="too_many_tokens")

    def check_characters(self, characters: int, new_tokens: int = 0) -> None:
        """Refuse, before tokenizing, text too long to fit --max-tokens whatever its tokens: no token covers more
        than `longest` characters, so the text has at least characters / longest tokens."""
        fewest = -(-characters // self.longest) if self.longest else 0
        if fewest + new_tokens > self.settings.max_tokens:
            raise ApiError(400, f"{characters:,} characters make at least {fewest:,} tokens (no token of this model "
                           f"is longer than {self.longest} characters), more than one request may "
                           f"({self.settings.max_tokens:,}: serve --max-tokens)", code="too_many_tokens")

    def check_model(self, model: str | None) -> None:
        if model not in (None, "", self.name):
            raise ApiError(404, f"The model `{model}` does not exist; this server serves `{self.name}`",
                           param="model", code="model_not_found")

    async def body_of(self, request: Request) -> dict[str, Any]:
        """The request's body as a JSON object: at most MAX_BODY_BYTES, within --header-timeout."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise ApiError(413, f"the request body is larger than {MAX_BODY_BYTES:,} bytes", code="too_large")
        data = bytearray()

        async def read_all() -> None:
            async for part in request.stream():
                data.extend(part)
                if len(data) > MAX_BODY_BYTES:
                    raise ApiError(413, f"the request body is larger than {MAX_BODY_BYTES:,} bytes", code="too_large")

        timeout = self.settings.header_timeout
        try:
            await asyncio.wait_for(read_all(), timeout=timeout)
        except asyncio.TimeoutError:
            raise ApiError(408, f"the request body did not arrive within {timeout:g} s (serve --header-timeout)",
                           code="timeout") from None
        return await asyncio.to_thread(parse_body, bytes(data))

    def submit(self, job: Job) -> Job:
        self.engine.submit(job)
        return job

    def submit_all(self, jobs: list[Job]) -> list[Job]:
        """Submit every job, or none: one refused (503) cancels those already queued."""
        try:
            for job in jobs:
                self.engine.submit(job)
        except ApiError:
            for job in jobs:
                job.cancelled.set()
            raise
        return jobs

    def route_tools(self) -> RouteTools:
        """What llmscope's own routes and explore's borrow from this state."""
        return RouteTools(submit=self.submit, body_of=self.body_of, wait=wait_for_jobs, tokenized=self.tokenized,
                          answer=self.answer, check_answer=self.check_answer,
                          check_tokens=self.check_tokens, check_characters=self.check_characters,
                          check_cost=self.check_cost, max_top_k=self.settings.max_top_k,
                          max_steps=self.settings.max_steps, max_answer_bytes=self.settings.max_answer_bytes,
                          api_key=self.settings.api_key)
