"""llmscope's own routes of `llmscope serve`, for what the OpenAI API lacks: tokenize, next-token (the full top-k
with logits and entropy), score, generate and full log-probability rows (compare --against-endpoint). Each answers
{"model_info", "result"} with the command's --json result, computed by the library on the engine's thread. Each
request is checked against the server's caps before any work; option objects are validated strictly (pydantic)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import threading
import time
import typing
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from llmscope.core.model_info import to_plain
from llmscope.server import openai_shapes as shapes
from llmscope.server.budget import Pass, decoding_passes, window_passes
from llmscope.server.engine import Job, call_job
from llmscope.server.wire import ClientGone, client_disconnected, json_bytes

Handler = Callable[[Request], Awaitable[Response]]
MAX_ROW_VALUES = 1 << 26  # full-vocabulary log-probabilities in one logprobs answer (256 MiB of float32)


@dataclasses.dataclass(frozen=True)
class RouteTools:
    """What the app lends llmscope's routes: the queue, the body reader, the waiter, off-loop tokenizing and
    answering, and the per-request caps (see app.build_app)."""

    submit: Callable[[Job], Job]
    body_of: Callable[[Request], Awaitable[dict[str, Any]]]
    wait: Callable[[Request, list[Job]], Awaitable[list[Any]]]
    tokenized: Callable[[Callable[[], Any]], Awaitable[Any]]
    answer: Callable[..., Awaitable[Response]]  # (document, limit=--max-answer-bytes; None: no byte check)
    check_answer: Callable[[int, int], None]
    check_tokens: Callable[..., None]
    check_characters: Callable[..., None]  # (characters, new_tokens=0): refused before tokenizing
    check_cost: Callable[[list[Pass]], Any]  # the request's forward passes against --job-timeout and free memory
    max_top_k: int
    max_steps: int
    max_answer_bytes: int
    api_key: str | None = None


def check_cap(option: str, value: int | None, cap: int, serve_option: str) -> None:
    """Refuse a count above the server's cap (400, before any work)."""
    if value is not None and value > cap:
        raise shapes.ApiError(400, f"'{option}' {value:,} is more than this server allows per request ({cap:,}: "
                              f"serve {serve_option})", param=option, code="over_limit")


def native_routes(loaded: Any, tools: RouteTools) -> dict[str, Handler]:
    """Path -> handler for llmscope's own routes (the caller adds the key check)."""
    name = loaded.spec.name
    submit, body_of, wait, tokenized = tools.submit, tools.body_of, tools.wait, tools.tokenized

    async def read(request: Request) -> dict[str, Any]:
        """The body, with its optional "model" checked against the served one (404 for another)."""
        body = await body_of(request)
        model = body.get("model")
        if model not in (None, "", name):
            raise shapes.ApiError(404, f"The model `{model}` does not exist; this server serves `{name}`",
                                  param="model", code="model_not_found")
        return body

    async def envelope(result: Any, checked: bool = True) -> Response:
        document = await asyncio.to_thread(lambda: {"model_info": to_plain(loaded.info), "result": to_plain(result)})
        return await tools.answer(document) if checked else await tools.answer(document, limit=None)

    async def tokenize(request: Request) -> Response:
        from llmscope.loading.tokenization import tokenize_text

        body = await read(request)
        text = shapes.text_of(body, "text", required=True) or ""
        special = bool(shapes.field_of(body, "add_special_tokens", (bool,), True))
        chat_on = bool(shapes.field_of(body, "chat", (bool,), False))
        system = shapes.text_of(body, "system")
        tools.check_characters(len(text))
        result = await tokenized(lambda: tokenize_text(loaded.tokenizer, text, name, add_special_tokens=special,
                                                       chat=chat_on, system=system))
        tools.check_tokens(result.token_count, "tokens")
        return await envelope(result)

    async def next_token(request: Request) -> Response:
        from llmscope.core.command_settings import NextTokenSettings
        from llmscope.generation.prompts import check_top, encode_prompt

        parsed = shapes.parse_next_token(await read(request))
        check_cap("top_k", parsed.top_k, tools.max_top_k, "--max-top-k")
        check_cap("steps", parsed.steps, tools.max_steps, "--max-steps")
        tools.check_answer(parsed.steps, parsed.top_k)
        tools.check_characters(len(parsed.prompt), parsed.steps - 1)
        inspect = NextTokenSettings(top_k=parsed.top_k, steps=parsed.steps, temperature=parsed.temperature,
                                    top_p=parsed.top_p)
        check_top("top_k", inspect.top_k, loaded)
        encoded = await tokenized(lambda: encode_prompt(loaded, parsed.prompt, chat=parsed.chat,
                                                        system=parsed.system, new_tokens=parsed.steps - 1,
                                                        budget_option="steps"))
        tools.check_tokens(len(encoded.ids) + parsed.steps - 1)
        tools.check_cost(decoding_passes(len(encoded.ids), parsed.steps))
        loop = asyncio.get_running_loop()
        job = submit(Job(kind="next_token", key=("next_token", inspect), payload=encoded, loop=loop,
                         future=loop.create_future()))
        return await envelope((await wait(request, [job]))[0])

    async def score(request: Request) -> Response:
        from llmscope.inspection.scoring import (
            ScoreSettings,
            prepare_ids,
            resolve_window,
            score_text,
            window_plan,
        )

        body = await read(request)
        text = shapes.text_of(body, "text", required=True) or ""
        scoring = settings_of(ScoreSettings, body)
        check_cap("top_k", scoring.top_k, tools.max_top_k, "--max-top-k")
        if scoring.top_k:
            from llmscope.generation.prompts import check_top

            check_top("top_k", scoring.top_k, loaded)
        tools.check_characters(len(text) + len(scoring.prompt or ""))
        prepared = await tokenized(lambda: prepare_ids(loaded.tokenizer, text, scoring))
        tokens = len(prepared.ids)
        tools.check_tokens(tokens, "tokens to read")
        tools.check_answer(min(tokens, scoring.max_tokens or tokens), scoring.top_k)
        if tokens >= 2:  # shorter: score_text says why in its own words
            window, stride = resolve_window(loaded, scoring, tokens)
            tools.check_cost(window_passes(window_plan(tokens, prepared.first_target, window, stride)))
        job = submit(call_job(asyncio.get_running_loop(), lambda: score_text(loaded, text, scoring)))
        return await envelope((await wait(request, [job]))[0])

    async def generate(request: Request) -> Response:
        from llmscope.core.command_settings import GenerationSettings
        from llmscope.generation.generate import TokenDetail, generate_encoded
        from llmscope.generation.prompts import check_top, encode_prompt

        body = await read(request)
        prompt = shapes.text_of(body, "prompt", required=True) or ""
        generation = settings_of(GenerationSettings, body, leave_out=("compile",))
        detail = settings_of(TokenDetail, body, key="detail")
        check_cap("logprobs", generation.logprobs, tools.max_top_k, "--max-top-k")
        check_cap("alternatives", detail.alternatives, tools.max_top_k, "--max-top-k")
        for option, value in (("top_k", generation.top_k), ("logprobs", generation.logprobs)):
            if value:
                check_top(option, value, loaded)
        tools.check_answer(generation.max_new_tokens, max(generation.logprobs, detail.alternatives))
        from llmscope.loading.tokenization import has_chat_template

        chat_on = shapes.field_of(body, "chat", (bool,), None)  # None: the template when the model has one
        chat = has_chat_template(loaded.tokenizer) if chat_on is None else chat_on
        system = shapes.text_of(body, "system")
        tools.check_characters(len(prompt), generation.max_new_tokens)
        encoded = await tokenized(lambda: encode_prompt(loaded, prompt, chat=chat, system=system,
                                                        new_tokens=generation.max_new_tokens))
        tools.check_tokens(len(encoded.ids) + generation.max_new_tokens)
        tools.check_cost(decoding_passes(len(encoded.ids), generation.max_new_tokens))
        job = submit(call_job(asyncio.get_running_loop(),
                              lambda: generate_encoded(loaded, [encoded], generation, detail=detail)[0]))
        return await envelope((await wait(request, [job]))[0])

    async def logprobs(request: Request) -> Response:
        from llmscope.inspection.scoring import ScoreSettings, prepare_ids

        body = await read(request)
        text = shapes.text_of(body, "text", required=True) or ""
        scoring = settings_of(ScoreSettings, body)
        ids, plan = body.get("ids"), body.get("plan")
        if not isinstance(ids, list) or not isinstance(plan, list) or not all(
                isinstance(w, list) and len(w) == 3 and all(isinstance(v, int) for v in w) for w in plan):
            raise shapes.ApiError(400, "'ids' must be the token ids and 'plan' a list of [begin, end, first]")
        tools.check_tokens(len(ids), "tokens to read")
        tools.check_characters(len(text))
        if list((await tokenized(lambda: prepare_ids(loaded.tokenizer, text, scoring))).ids) != ids:
            raise shapes.ApiError(400, f"{name} tokenizes the text differently from the local model",
                                  param="ids", code="tokenizer_mismatch")
        check_windows(plan, len(ids))
        next_token = bool(shapes.field_of(body, "next_token", (bool,), False))
        rows = sum(end - first for _, end, first in plan) + (1 if next_token else 0)
        from llmscope.generation.prompts import vocabulary_rows

        vocab = vocabulary_rows(loaded)
        if rows * vocab > MAX_ROW_VALUES:  # the whole stream's cap (compare sends a whole text's plan at once)
            raise shapes.ApiError(413, f"{rows:,} rows of {vocab:,} log-probabilities are more than one answer "
                                  f"carries ({MAX_ROW_VALUES:,} values)", code="too_large")
        per_line = (tools.max_answer_bytes - LINE_OVERHEAD) // row_bytes(vocab)
        if per_line < 1:
            raise shapes.ApiError(400, f"one row of {vocab:,} log-probabilities is more than this server sends at "
                                  f"once ({tools.max_answer_bytes:,} bytes: serve --max-answer-bytes)",
                                  code="answer_too_large")
        tools.check_cost(window_passes(plan, next_token))
        loop = asyncio.get_running_loop()
        ahead = threading.Semaphore(LINES_AHEAD)
        job = Job(kind="call", key=object(), payload=None, loop=loop, future=loop.create_future(),
                  events=asyncio.Queue())
        def work() -> None:
            logprob_lines(loaded, tuple(ids), [tuple(w) for w in plan], next_token, per_line,
                          lambda line: hand_over(job, ahead, line))
            job.emit(("end", None, None))

        job.payload = work
        submit(job)
        head = await first_line(request, job)
        document = await asyncio.to_thread(lambda: {"model_info": to_plain(loaded.info),
                                                    "result": {"vocab": vocab, "rows": rows}})
        return StreamingResponse(ndjson(head, document, job, ahead), media_type="application/x-ndjson",
                                 headers={"Cache-Control": "no-cache"})

    def check_windows(plan: list[list[int]], length: int) -> None:
        from llmscope.loading.modelconfig import context_length

        limit = context_length(loaded.model.config) or 1 << 62
        for begin, end, first in plan:
            if not 0 <= begin < first <= end <= length:
                raise shapes.ApiError(400, f"bad window [{begin}, {end}, {first}] for {length} tokens", param="plan")
            if end - begin > limit:
                raise shapes.ApiError(400, f"a window of {end - begin} tokens does not fit {name}'s context of "
                                      f"{limit} (pass --window {limit} or less)", param="plan")

    return {"/llmscope/v1/tokenize": tokenize, "/llmscope/v1/next-token": next_token, "/llmscope/v1/score": score,
            "/llmscope/v1/generate": generate, "/llmscope/v1/logprobs": logprobs}


def settings_of(kind: Any, body: dict[str, Any], key: str = "options", leave_out: tuple[str, ...] = ()) -> Any:
    """A library settings object from the body's `key` object: each value's JSON type is checked strictly against
    the field's (no 2.5 for a whole number, no "no" for a boolean: 400), then the class checks the values."""
    import pydantic

    names = [f.name for f in dataclasses.fields(kind) if f.name not in leave_out]
    options = shapes.parse_options(body, names, key)
    try:
        checked = _options_model(kind).model_validate(options).model_dump(include=set(options))
    except pydantic.ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise shapes.ApiError(400, f"'{key}.{where}': {first['msg']} (got {first.get('input')!r})",
                              param=key) from None
    try:
        return kind(**checked)
    except (TypeError, ValueError) as error:
        raise shapes.ApiError(400, f"'{key}' holds a value of the wrong type ({error})", param=key) from None


@functools.cache
def _options_model(kind: Any) -> Any:
    """A strict pydantic model of a settings dataclass's fields: bool, int, float and str take only their own JSON
    type (an int is a float too), None where the field allows it; unknown names are refused."""
    import pydantic

    hints = typing.get_type_hints(kind)
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(kind):
        fields[field.name] = (_strict(hints[field.name]), None)
    return pydantic.create_model(f"{kind.__name__}Options", __config__=pydantic.ConfigDict(extra="forbid"), **fields)


def _strict(hint: Any) -> Any:
    import pydantic

    if hint in (bool, int, float, str):
        return typing.Annotated[hint, pydantic.Strict()]
    arguments = typing.get_args(hint)
    if type(None) in arguments:  # X | None
        rest = [_strict(a) for a in arguments if a is not type(None)]
        return functools.reduce(lambda left, right: left | right, rest) | None
    return hint


# ------------------------------------------------------------------------------------ the logprobs stream
# /llmscope/v1/logprobs answers in JSON lines: {"model_info", "result": {"vocab", "rows"}}, then lines of at most
# --max-answer-bytes with rows {"targets", "contexts", "rows_base64"} (float32, little-endian), then {"end": true}
# (or {"error": {...}} when the work fails midway). The model's thread computes at most LINES_AHEAD lines ahead of
# the network, so the server holds a few lines, never the whole answer.

LINES_AHEAD = 2
LINE_OVERHEAD = 4096  # a line's JSON around its rows: targets, contexts, keys


def row_bytes(vocab: int) -> int:
    """One row in a line: float32 values in base64 (4 bytes -> 16/3), with its target and context numbers."""
    return -(-vocab * 4 // 3) * 4 + 32


def logprob_lines(loaded: Any, ids: tuple[int, ...], plan: list[tuple[int, int, int]], next_token: bool,
                  per_line: int, put: Callable[[bytes], None]) -> int:
    """scoring.logprob_chunks over the given windows, every row handed to `put` as JSON lines of at most
    `per_line` rows (compare --against-endpoint reads them); returns the rows sent."""
    import base64

    from llmscope.inspection.scoring import logprob_chunks
    sent = 0
    for chunk in logprob_chunks(loaded, ids, plan, next_token=next_token):
        rows = chunk.logprobs.float().cpu()
        for at in range(0, len(chunk.targets), per_line):
            block = rows[at:at + per_line].contiguous().numpy().astype("<f4")
            put(json_bytes({"targets": chunk.targets[at:at + per_line], "contexts": chunk.contexts[at:at + per_line],
                            "rows_base64": base64.b64encode(block.tobytes()).decode()}) + b"\n")
            sent += len(block)
    return sent


def hand_over(job: Job, ahead: threading.Semaphore, line: bytes) -> None:
    """On the model's thread: pass a line to the request, waiting while LINES_AHEAD lines are still unsent; stop
    (JobStopped) when the job should (client gone, time budget spent, server stopping)."""
    from llmscope.server.engine import JobStopped

    while not ahead.acquire(timeout=0.05):
        if job.stopped(time.monotonic()):
            raise JobStopped
    if job.stopped(time.monotonic()):
        raise JobStopped
    job.emit(("line", line, None))


async def first_line(request: Request, job: Job) -> Any:
    """The job's first event; its error as an HTTP status (the answer has not begun), or ClientGone (the job
    cancelled) when the client leaves first."""
    assert job.events is not None
    getter = asyncio.ensure_future(job.events.get())
    watcher = asyncio.ensure_future(client_disconnected(request))
    try:
        done, _ = await asyncio.wait({getter, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if getter not in done:
            job.cancelled.set()
            raise ClientGone
        item = getter.result()
        if item[0] == "error":
            await job.future  # raises the job's error: its status and words
        return item
    finally:
        for task in (getter, watcher):
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task


async def ndjson(head: Any, document: Any, job: Job, ahead: threading.Semaphore) -> AsyncIterator[bytes]:
    """The stream's lines, from the job's events; an abandoned stream cancels the job."""
    assert job.events is not None
    try:
        yield json_bytes(document) + b"\n"
        item = head
        while True:
            kind, value, code = item
            if kind == "line":
                ahead.release()
                yield value
            elif kind == "error":
                yield json_bytes(shapes.error_body(value, "server_error", code=code)) + b"\n"
                return
            else:  # "end"
                yield b'{"end":true}\n'
                return
            item = await job.events.get()
    finally:
        if not job.future.done():
            job.cancelled.set()
