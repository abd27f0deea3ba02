"""The explore page's what-if panel: POST /llmscope/v1/explore/what-if runs the what-if library on the page's prompt
({"model_info", "result"}, the result the same fields as `what-if --json`), on the engine's thread. No figures of its
own; the page's view is page/whatif.js."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from llmscope.core.errors import UsageError
from llmscope.core.model_info import to_plain
from llmscope.server import openai_shapes as shapes
from llmscope.server.engine import call_job
from llmscope.server.native import RouteTools, check_cap

Handler = Callable[[Request], Awaitable[Response]]
PATH = "/llmscope/v1/explore/what-if"
ROUTE = ("POST", PATH, "what-if --json on the prompt: variants (specs, default the page's four), new_tokens")
PAGE_VARIANTS = ("window=32", "sinks=4,window=28", "kv-heads=1", "kv-cache=int4")
PAGE_NEW_TOKENS = 8  # greedy tokens per variant: enough for a measured cache and speed, bounded work per click
MAX_VARIANTS = 8


def page_settings(body: dict[str, Any], max_steps: int) -> Any:  # -> WhatIfSettings
    """The request's variants and new_tokens as WhatIfSettings; a bad spec is a 400 naming it."""
    from llmscope.whatif.results import WhatIfSettings
    from llmscope.whatif.variants import parse_variants

    specs = shapes.field_of(body, "variants", (list,), list(PAGE_VARIANTS))
    if not all(isinstance(spec, str) for spec in specs):
        raise shapes.ApiError(400, "'variants' must be a list of variant specs, e.g. [\"window=32\"]",
                              param="variants")
    if len(specs) > MAX_VARIANTS:
        raise shapes.ApiError(400, f"'variants' holds {len(specs)} specs; the page runs at most {MAX_VARIANTS} at once",
                              param="variants", code="over_limit")
    new_tokens = int(shapes.field_of(body, "new_tokens", (int,), PAGE_NEW_TOKENS))
    check_cap("new_tokens", new_tokens, max_steps, "--max-steps")
    try:
        variants = parse_variants(specs)
        return WhatIfSettings(variants=variants, new_tokens=new_tokens)
    except UsageError as error:
        raise shapes.ApiError(400, str(error), param="variants") from None


def whatif_routes(loaded: Any, guarded: Callable[..., Handler], tools: RouteTools) -> list[Route]:
    """The what-if route, behind the server's key check and caps."""
    name = loaded.spec.name

    async def what_if(request: Request) -> Response:
        from llmscope.whatif.experiment import what_if as run

        body = await tools.body_of(request)
        if body.get("model") not in (None, "", name):
            raise shapes.ApiError(404, f"The model `{body.get('model')}` does not exist; this server serves "
                                  f"`{name}`", param="model", code="model_not_found")
        prompt = shapes.text_of(body, "prompt", required=True) or ""
        settings = page_settings(body, tools.max_steps)
        tools.check_characters(len(prompt), settings.new_tokens)
        job = tools.submit(call_job(asyncio.get_running_loop(), lambda: run(loaded, prompt, settings)))
        result = (await tools.wait(request, [job]))[0]
        document = await asyncio.to_thread(lambda: {"model_info": to_plain(loaded.info), "result": to_plain(result)})
        return await tools.answer(document)

    return [Route(PATH, guarded(what_if), methods=["POST"])]
