"""The OpenAI routes of `llmscope serve` (health, models, completions, chat completions) as plain async functions
of (request, ServeState): each reads its request, checks it against the caps, queues the work on the engine and
writes the answer in OpenAI's shape, streamed or whole. No key check or error mapping here (app.py adds them)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from llmscope.server import openai_shapes as shapes
from llmscope.server.budget import decoding_passes, window_passes
from llmscope.server.compute import encode_messages, prompt_logprobs, prompt_windows
from llmscope.server.engine import GenerateWork, Job, call_job
from llmscope.server.keys import authorized
from llmscope.server.openai_shapes import ApiError, TokenLogprob
from llmscope.server.state import ServeState, wait_for_jobs


async def health(request: Request, state: ServeState) -> Response:
    """Liveness; with the key (or on a server without one) also the model, the queue's length and the engine's
    counters. Without the key it says only that the server is up: no path, no counters."""
    if not authorized(request, state.settings.api_key):
        return JSONResponse({"status": "ok"})
    stats = state.engine.stats
    return JSONResponse({"status": "ok", "model": state.name, "queued": state.engine.queued,
                         "requests": stats.requests, "batches": stats.batches, "rows": stats.rows,
                         "largest_batch": stats.largest_batch, "cancelled": stats.cancelled,
                         "timed_out": stats.timed_out, "refused": stats.refused})


async def models(request: Request, state: ServeState) -> Response:
    """The one served model, as OpenAI lists models."""
    return JSONResponse(shapes.models_list(state.name, state.created))


async def completions(request: Request, state: ServeState) -> Response:
    """POST /v1/completions: one or more prompts, with echo, prompt log-probabilities and streaming."""
    parsed = shapes.parse_completion(await state.body_of(request))
    state.check_model(parsed.model)
    if len(parsed.prompts) > state.settings.max_queue:  # they could never all be queued: not a retry matter
        raise ApiError(400, f"{len(parsed.prompts):,} prompts in one request; this server takes at most "
                       f"{state.settings.max_queue} (serve --max-queue)", param="prompt", code="too_many_prompts")
    loop = asyncio.get_running_loop()
    loaded, sampling, k = state.loaded, parsed.sampling, parsed.logprobs
    wanted = max(k or 0, parsed.prompt_logprobs or 0)
    state.check_answer(len(parsed.prompts) * sampling.max_tokens, k or 0)
    state.check_characters(sum(len(p) for p in parsed.prompts), len(parsed.prompts) * sampling.max_tokens)
    from llmscope.generation.prompts import encode_prompt

    encoded = await state.tokenized(lambda: [encode_prompt(loaded, p, new_tokens=max(sampling.max_tokens, 1),
                                                           budget_option="max_tokens") for p in parsed.prompts])
    state.check_tokens(sum(len(e.ids) + sampling.max_tokens for e in encoded))
    if parsed.echo or parsed.prompt_logprobs is not None:
        state.check_answer(sum(len(e.ids) for e in encoded) + len(encoded) * sampling.max_tokens, wanted)
    echoing = (parsed.echo and k is not None) or parsed.prompt_logprobs is not None
    for prompt in encoded:  # each prompt's jobs run within the job budget
        if sampling.max_tokens > 0:
            state.check_cost(decoding_passes(len(prompt.ids), sampling.max_tokens))
        if echoing and len(prompt.ids) > 1:
            state.check_cost(window_passes(prompt_windows(loaded, len(prompt.ids))))
    echoes: list[Job] = []
    if echoing:
        echoes = [call_job(loop, lambda e=e: prompt_logprobs(loaded, e.ids, wanted)) for e in encoded]
    jobs = [generation_job(loop, e, sampling, k or 0, parsed.stream) for e in encoded] if (
        sampling.max_tokens > 0) else []
    state.submit_all(echoes + jobs)
    request_id = shapes.new_id("cmpl")
    if parsed.stream:
        return sse(_completion_stream(request_id, state.name, parsed, encoded, jobs, echoes, k))
    echoed = await wait_for_jobs(request, echoes) if echoes else [None] * len(encoded)
    results = await wait_for_jobs(request, jobs) if jobs else [None] * len(encoded)
    choices = [_completion_choice(index, parsed, prompt, result, echo, k)
               for index, (prompt, result, echo) in enumerate(zip(encoded, results, echoed))]
    completion_tokens = sum(r.new_tokens for r in results if r is not None)
    return await state.answer(shapes.completion(request_id, state.name, choices, sum(len(e.ids) for e in encoded),
                                                completion_tokens))


def _completion_choice(index: int, parsed: shapes.CompletionRequest, prompt: Any, result: Any, echo: Any,
                       k: int | None) -> dict[str, Any]:
    """One prompt's choice: its text (after the echoed prompt), finish reason and log-probabilities."""
    text = result.text if result is not None else ""
    shown = [dataclasses.replace(t, top=(t.top or ())[: k or 0] if t.top is not None else None)
             for t in echo or []] if parsed.echo else []
    tokens = shown + (token_logprobs(result, k or 0) if result is not None and k is not None else [])
    reason = shapes.finish_reason(result.finish_reason) if result is not None else "length"
    choice = shapes.completion_choice(index, (prompt.text if parsed.echo else "") + text, reason,
                                      shapes.completion_logprobs(tokens) if k is not None else None)
    if parsed.prompt_logprobs is not None and echo is not None:
        trimmed = [dataclasses.replace(t, top=(t.top or ())[: parsed.prompt_logprobs],
                                       top_ids=t.top_ids[: parsed.prompt_logprobs]) for t in echo]
        choice["prompt_logprobs"] = shapes.vllm_prompt_logprobs(trimmed)
    return choice


async def chat(request: Request, state: ServeState) -> Response:
    """POST /v1/chat/completions: the messages through the chat template, then one generation."""
    parsed = shapes.parse_chat(await state.body_of(request))
    state.check_model(parsed.model)
    loop = asyncio.get_running_loop()
    loaded, sampling = state.loaded, parsed.sampling
    state.check_characters(sum(len(content) for _, content in parsed.messages))
    if sampling.max_tokens_given:
        encoded = await state.tokenized(lambda: encode_messages(loaded, parsed.messages, sampling.max_tokens))
    else:  # the default budget, clipped to what the context leaves after the prompt
        from llmscope.loading.modelconfig import context_length

        encoded = await state.tokenized(lambda: encode_messages(loaded, parsed.messages, 1))
        limit = context_length(loaded.model.config)
        if limit is not None:
            sampling = dataclasses.replace(sampling, max_tokens=min(sampling.max_tokens, limit - len(encoded.ids)))
    state.check_tokens(len(encoded.ids) + sampling.max_tokens)
    state.check_answer(sampling.max_tokens, parsed.top_logprobs)
    state.check_cost(decoding_passes(len(encoded.ids), sampling.max_tokens))
    job = state.submit(generation_job(loop, encoded, sampling, parsed.top_logprobs, parsed.stream))
    request_id = shapes.new_id("chatcmpl")
    if parsed.stream:
        return sse(_chat_stream(request_id, state.name, parsed, job, len(encoded.ids)))
    (result,) = await wait_for_jobs(request, [job])
    logprobs = shapes.chat_logprobs(token_logprobs(result, parsed.top_logprobs)) if parsed.logprobs else None
    return await state.answer(shapes.chat_completion(request_id, state.name, result.text,
                                                     shapes.finish_reason(result.finish_reason), logprobs,
                                                     len(encoded.ids), result.new_tokens))


def generation_job(loop: asyncio.AbstractEventLoop, encoded: Any, sampling: shapes.Sampling, alternatives: int,
                   stream: bool) -> Job:
    """The engine's job for one prompt; jobs with equal sampling settings may share a batch."""
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
    """A generation's tokens with their log-probabilities and the first `alternatives` alternatives."""
    return [TokenLogprob(text=t.text or "", logprob=t.logprob,
                         top=tuple((a.text, a.logprob) for a in t.top[:alternatives]), token_bytes=t.bytes)
            for t in result.tokens]


# ---------------------------------------------------------------------------------------------- streams


def sse(events: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    """Server-sent events: one `data:` line per event, then `data: [DONE]`."""
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
                             jobs: list[Job], echoes: list[Job], k: int | None) -> AsyncIterator[dict[str, Any]]:
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


async def _chat_stream(request_id: str, model: str, parsed: shapes.ChatRequest, job: Job, prompt_tokens: int
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
