"""llmscope's own routes of `llmscope serve`, for what the OpenAI API lacks: tokenize, next-token (the full top-k
with logits and entropy), score, generate and full log-probability rows (compare --against-endpoint). Each answers
{"model_info", "result"} with the command's --json result, computed by the library on the engine's thread."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from llmscope.core.results import to_plain
from llmscope.server import openai_shapes as shapes
from llmscope.server.engine import Job, call_job

Handler = Callable[[Request], Awaitable[Response]]
MAX_ROW_VALUES = 1 << 26  # full-vocabulary log-probabilities in one logprobs answer (256 MiB of float32)


def native_routes(loaded: Any, submit: Callable[[Job], Job], body_of: Callable[[Request], Awaitable[dict[str, Any]]],
                  wait: Callable[[Request, list[Job]], Awaitable[list[Any]]]) -> dict[str, Handler]:
    """Path -> handler for llmscope's own routes (the caller adds the key check)."""
    name = loaded.spec.name

    async def read(request: Request) -> dict[str, Any]:
        """The body, with its optional "model" checked against the served one (404 for another)."""
        body = await body_of(request)
        model = body.get("model")
        if model not in (None, "", name):
            raise shapes.ApiError(404, f"The model `{model}` does not exist; this server serves `{name}`",
                                  param="model", code="model_not_found")
        return body

    def envelope(result: Any) -> JSONResponse:
        return JSONResponse({"model_info": to_plain(loaded.info), "result": to_plain(result)})

    async def tokenize(request: Request) -> Response:
        from llmscope.loading.tokenization import tokenize_text

        body = await read(request)
        text = shapes.text_of(body, "text", required=True) or ""
        special = bool(shapes.field_of(body, "add_special_tokens", (bool,), True))
        chat_on = bool(shapes.field_of(body, "chat", (bool,), False))
        system = shapes.text_of(body, "system")
        job = submit(call_job(asyncio.get_running_loop(), lambda: tokenize_text(
            loaded.tokenizer, text, name, add_special_tokens=special, chat=chat_on, system=system)))
        return envelope((await wait(request, [job]))[0])

    async def next_token(request: Request) -> Response:
        from llmscope.core.settings import NextTokenSettings
        from llmscope.generation.prompts import check_top, encode_prompt

        parsed = shapes.parse_next_token(await read(request))
        inspect = NextTokenSettings(top_k=parsed.top_k, steps=parsed.steps, temperature=parsed.temperature,
                                    top_p=parsed.top_p)
        check_top("top_k", inspect.top_k, loaded)
        encoded = encode_prompt(loaded, parsed.prompt, chat=parsed.chat, system=parsed.system,
                                new_tokens=parsed.steps - 1, budget_option="steps")
        loop = asyncio.get_running_loop()
        job = submit(Job(kind="next_token", key=("next_token", inspect), payload=encoded, loop=loop,
                         future=loop.create_future()))
        return envelope((await wait(request, [job]))[0])

    async def score(request: Request) -> Response:
        from llmscope.inspection.scoring import ScoreSettings, score_text

        body = await read(request)
        text = shapes.text_of(body, "text", required=True) or ""
        scoring = settings_of(ScoreSettings, body)
        if scoring.top_k:
            from llmscope.generation.prompts import check_top

            check_top("top_k", scoring.top_k, loaded)
        job = submit(call_job(asyncio.get_running_loop(), lambda: score_text(loaded, text, scoring)))
        return envelope((await wait(request, [job]))[0])

    async def generate(request: Request) -> Response:
        from llmscope.core.settings import GenerationSettings
        from llmscope.generation.generation import TokenDetail, generate_encoded
        from llmscope.generation.prompts import check_top, encode_prompt

        body = await read(request)
        prompt = shapes.text_of(body, "prompt", required=True) or ""
        generation = settings_of(GenerationSettings, body, leave_out=("compile",))
        detail = settings_of(TokenDetail, body, key="detail")
        for option, value in (("top_k", generation.top_k), ("logprobs", generation.logprobs)):
            if value:
                check_top(option, value, loaded)
        from llmscope.loading.tokenization import has_chat_template

        chat_on = shapes.field_of(body, "chat", (bool,), None)  # None: the template when the model has one
        chat = has_chat_template(loaded.tokenizer) if chat_on is None else chat_on
        encoded = encode_prompt(loaded, prompt, chat=chat, system=shapes.text_of(body, "system"),
                                new_tokens=generation.max_new_tokens)
        job = submit(call_job(asyncio.get_running_loop(),
                              lambda: generate_encoded(loaded, [encoded], generation, detail=detail)[0]))
        return envelope((await wait(request, [job]))[0])

    async def logprobs(request: Request) -> Response:
        from llmscope.inspection.scoring import ScoreSettings, prepare_ids

        body = await read(request)
        text = shapes.text_of(body, "text", required=True) or ""
        scoring = settings_of(ScoreSettings, body)
        ids, plan = body.get("ids"), body.get("plan")
        if not isinstance(ids, list) or not isinstance(plan, list) or not all(
                isinstance(w, list) and len(w) == 3 and all(isinstance(v, int) for v in w) for w in plan):
            raise shapes.ApiError(400, "'ids' must be the token ids and 'plan' a list of [begin, end, first]")
        if list(prepare_ids(loaded.tokenizer, text, scoring).ids) != ids:
            raise shapes.ApiError(400, f"{name} tokenizes the text differently from the local model",
                                  param="ids", code="tokenizer_mismatch")
        check_windows(plan, len(ids))
        rows = sum(end - first for _, end, first in plan) + 1
        from llmscope.generation.prompts import vocabulary_rows

        vocab = vocabulary_rows(loaded)
        if rows * vocab > MAX_ROW_VALUES:
            raise shapes.ApiError(413, f"{rows:,} rows of {vocab:,} log-probabilities are more than one answer "
                                  f"carries ({MAX_ROW_VALUES:,} values)", code="too_large")
        job = submit(call_job(asyncio.get_running_loop(), lambda: logprob_rows(
            loaded, tuple(ids), [tuple(w) for w in plan], bool(body.get("next_token")))))
        return envelope((await wait(request, [job]))[0])

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
    """A library settings object from the body's `key` object (the class checks the values; a wrong type is 400)."""
    names = [f.name for f in dataclasses.fields(kind) if f.name not in leave_out]
    try:
        return kind(**shapes.parse_options(body, names, key))
    except (TypeError, ValueError) as error:
        raise shapes.ApiError(400, f"'{key}' holds a value of the wrong type ({error})", param=key) from None


@dataclasses.dataclass(frozen=True)
class LogprobRows:
    """Full-vocabulary log-probability rows (float32, little-endian, base64) predicting `targets`."""

    targets: tuple[int, ...]
    contexts: tuple[int, ...]
    vocab: int
    rows_base64: str


def logprob_rows(loaded: Any, ids: tuple[int, ...], plan: list[tuple[int, int, int]], next_token: bool
                 ) -> LogprobRows:
    """scoring.logprob_chunks over the given windows, every row kept (compare --against-endpoint reads them)."""
    import base64

    import torch

    from llmscope.inspection.scoring import logprob_chunks

    targets, contexts, blocks = [], [], []
    for chunk in logprob_chunks(loaded, ids, plan, next_token=next_token):
        targets += chunk.targets
        contexts += chunk.contexts
        blocks.append(chunk.logprobs.float().cpu())
    rows = torch.cat(blocks).contiguous()
    data = rows.numpy().astype("<f4").tobytes()
    return LogprobRows(targets=tuple(targets), contexts=tuple(contexts), vocab=int(rows.shape[-1]),
                       rows_base64=base64.b64encode(data).decode())
