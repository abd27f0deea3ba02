"""The explore page's routes: the page and its assets (GET /explore) and JSON routes for what serve's lack, each
computed by the CLI's own library functions on the engine's thread ({"model_info", "result"}, and for some routes
more keys beside "result": block norms, one head's q, k and v, the ⟨hex⟩ bytes of byte-fallback tokens). No figures
of its own: it reads bodies, runs library functions and packs their answers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from llmscope.core.model_info import to_plain
from llmscope.server import openai_shapes as shapes
from llmscope.server.budget import Pass, Shape, decoding_passes
from llmscope.server.engine import call_job
from llmscope.server.keys import TOKEN_PARAMETER, authorized, cookie_name, same_key
from llmscope.server.native import RouteTools, check_cap

Handler = Callable[[Request], Awaitable[Response]]
PAGE = "explore.html"
ASSETS = {"explore.js": "text/javascript", "whatif.js": "text/javascript", "views.js": "text/javascript",
          "forward.js": "text/javascript", "style.css": "text/css"}
PAGE_ATTRIBUTION_STEPS = 32  # `attribute --steps 32`: bounded work per click (the CLI's default may double to 256)
HEAD_VECTORS = ("q", "k", "v", "weights", "output")  # a head's arrays, packed as float32 blocks
CACHE_TIMING_TOKENS = 16  # new tokens per timed run of the cache button (bench-cache's measurement, small)
CACHE_TIMING_PAIRS = 2  # cached / uncached pairs, after one untimed warm-up pair
ROUTES = (  # what explore adds to serve's routes (explore --check lists them)
    ("GET", "/explore", "the page (and /explore/assets/*: its script and stylesheet)"),
    ("POST", "/llmscope/v1/explore/decode", "the sampler's view: temperature, top_k, top_p, greedy / sampled pick"),
    ("POST", "/llmscope/v1/explore/next-token", "next-token --json, with the bytes of byte-fallback candidates"),
    ("POST", "/llmscope/v1/explore/lens", "next-token --lens --json, and each block's residual-stream norms"),
    ("POST", "/llmscope/v1/explore/attention", "attention --json, every query row, weights packed as float32; with "
     "layer and head: that head's q, k, v, weights and output (weights: false for those alone)"),
    ("POST", "/llmscope/v1/explore/attribute", "attribute --steps 32 --json (methods; steps: others, up to "
     "--max-steps)"),
    ("POST", "/llmscope/v1/explore/cache", "KV-cache bytes for the prompt; time: bench-cache's with / without runs"),
    ("POST", "/llmscope/v1/explore/architecture", "architecture --json"),
)
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' "
                "'unsafe-inline'; connect-src 'self'", "Cache-Control": "no-cache"}


NO_KEY_PAGE = ("This page needs the server's key. Open the address that `llmscope explore` printed (it ends in "
               "?token=...), or, for `llmscope serve --api-key KEY`, /explore?token=KEY.\n")


def attribution_passes(methods: tuple[str, ...], tokens: int, steps: int) -> list[Pass]:
    """The passes attribution makes over `tokens` inputs (the prompt and the target): integrated gradients one
    forward and backward per step, input x gradient one, occlusion one forward per token left out, rollout one
    forward keeping the attention weights, and the target's own pass."""
    passes = [Pass(tokens=tokens, context=tokens)]
    if "integrated-gradients" in methods:
        passes.append(Pass(tokens=tokens, context=tokens, repeat=steps, backward=True))
    if "input-x-gradient" in methods:
        passes.append(Pass(tokens=tokens, context=tokens, backward=True))
    if "occlusion" in methods:
        passes.append(Pass(tokens=tokens, context=tokens, repeat=tokens))
    if "attention-rollout" in methods:
        passes.append(Pass(tokens=tokens, context=tokens, attentions=True))
    return passes


def asset_text(name: str) -> str:
    """One of the page's files as shipped in the package (llmscope/server/page)."""
    return resources.files("llmscope.server").joinpath("page", name).read_text(encoding="utf-8")


def partial_bytes(tokenizer: Any, ids: Iterable[int]) -> dict[str, str]:
    """Token id -> its bytes in hex ("E2 80"), for the ids that hold only part of a UTF-8 character: what the Tokens
    panel shows as ⟨hex⟩, so that every panel can write such a token the same way."""
    from llmscope.loading.tokenization import token_bytes

    out = {}
    for token_id in sorted(set(ids)):
        held = bytes(token_bytes(tokenizer, token_id))
        try:
            held.decode("utf-8")
        except UnicodeDecodeError:
            out[str(token_id)] = held.hex(" ").upper()
    return out


def packed_head_steps(plain: dict[str, Any]) -> dict[str, Any]:
    """A HeadSteps as plain values with its vectors packed as float32 blocks (float32 values round-trip exactly)."""
    from llmscope.core.floatpack import float32_block

    return {key: float32_block(value) if key in HEAD_VECTORS else value for key, value in plain.items()}


def optional_count(body: dict[str, Any], name: str) -> int | None:
    """An optional whole number of 0 or more from the body."""
    value = shapes.field_of(body, name, (int,), None)
    if value is not None and value < 0:
        raise shapes.ApiError(400, f"'{name}' must be 0 or more (got {value})", param=name)
    return value


def explore_routes(loaded: Any, guarded: Callable[..., Handler], tools: RouteTools) -> list[Route]:
    """The page (open, like /health) and the explore JSON routes (behind the server's key check and caps)."""
    name = loaded.spec.name

    async def envelope(result: Any, **extra: Any) -> Response:
        document = await asyncio.to_thread(lambda: {"model_info": to_plain(loaded.info), "result": to_plain(result),
                                                    **extra})
        return await tools.answer(document)  # checked against serve's --max-answer-bytes

    async def run(request: Request, work: Callable[[], Any]) -> Any:
        job = tools.submit(call_job(asyncio.get_running_loop(), work))
        return (await tools.wait(request, [job]))[0]

    def cost(passes: list[Pass]) -> None:
        tools.check_cost(passes)

    async def read(request: Request) -> tuple[dict[str, Any], Any]:
        """The body and its prompt, encoded and checked as next-token encodes it (and against serve's caps)."""
        from llmscope.generation.prompts import encode_prompt

        body = await tools.body_of(request)
        if body.get("model") not in (None, "", name):
            raise shapes.ApiError(404, f"The model `{body.get('model')}` does not exist; this server serves "
                                  f"`{name}`", param="model", code="model_not_found")
        prompt = shapes.text_of(body, "prompt", required=True) or ""
        chat = bool(shapes.field_of(body, "chat", (bool,), False))
        system = shapes.text_of(body, "system")
        tools.check_characters(len(prompt), 1)
        encoded = await tools.tokenized(lambda: encode_prompt(loaded, prompt, chat=chat, system=system,
                                                              budget_option="steps"))
        tools.check_tokens(len(encoded.ids) + 1)
        return body, encoded

    async def page(request: Request) -> Response:
        """The page. Under a key: opened with ?token=KEY, it sets the key's cookie (HttpOnly, SameSite=Strict)
        and sends the browser to the plain address, whose requests then carry the cookie; without the key or
        cookie it is 401, saying where the key is."""
        key = tools.api_key
        token = request.query_params.get(TOKEN_PARAMETER)
        if key is not None and token is not None:
            if not same_key(token, key):
                return Response(NO_KEY_PAGE, status_code=401, media_type="text/plain; charset=utf-8")
            answer = RedirectResponse("/explore", status_code=303)
            answer.set_cookie(cookie_name(request), key, httponly=True, samesite="strict", path="/")
            return answer
        if not authorized(request, key):
            return Response(NO_KEY_PAGE, status_code=401, media_type="text/plain; charset=utf-8")
        return Response(asset_text(PAGE), media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

    async def asset(request: Request) -> Response:
        file = request.path_params["file"]
        if file not in ASSETS:
            raise shapes.ApiError(404, f"no asset {file}", code="not_found")
        return Response(asset_text(file), media_type=ASSETS[file], headers={"Cache-Control": "no-cache"})

    async def home(request: Request) -> Response:
        return RedirectResponse("/explore", status_code=307)

    async def decode(request: Request) -> Response:
        from llmscope.inspection.samplerview import SamplerSettings, sampler_view

        body, encoded = await read(request)
        try:
            settings = SamplerSettings(
                temperature=float(shapes.field_of(body, "temperature", (int, float), 1.0)),
                top_k=int(shapes.field_of(body, "top_k", (int,), 0)),
                top_p=float(shapes.field_of(body, "top_p", (int, float), 1.0)),
                shown=int(shapes.field_of(body, "shown", (int,), 10)),
                pick=str(shapes.field_of(body, "pick", (str,), "none")),
                seed=shapes.field_of(body, "seed", (int,), None))
        except OverflowError as error:
            raise shapes.ApiError(400, str(error)) from None
        check_cap("shown", settings.shown, tools.max_top_k, "--max-top-k")
        cost(decoding_passes(len(encoded.ids), 1))

        def work() -> tuple[Any, dict[str, str]]:
            view = sampler_view(loaded, encoded, settings)
            ids = [t.token_id for t in view.top] + ([view.picked.token_id] if view.picked else [])
            return view, partial_bytes(loaded.tokenizer, ids)

        view, held = await run(request, work)
        return await envelope(view, partial_bytes=held)

    async def next_token(request: Request) -> Response:
        from llmscope.core.command_settings import NextTokenSettings
        from llmscope.inspection.next_token import next_token_encoded

        body, encoded = await read(request)
        settings = NextTokenSettings(top_k=int(shapes.field_of(body, "top_k", (int,), 10)))
        check_cap("top_k", settings.top_k, tools.max_top_k, "--max-top-k")
        cost(decoding_passes(len(encoded.ids), 1))

        def work() -> tuple[Any, dict[str, str]]:
            result = next_token_encoded(loaded, [encoded], settings)[0]
            return result, partial_bytes(loaded.tokenizer, [t.token_id for step in result.steps for t in step.top])

        result, held = await run(request, work)
        return await envelope(result, partial_bytes=held)

    async def lens(request: Request) -> Response:
        from llmscope.core.command_settings import NextTokenSettings
        from llmscope.inspection.blocknorms import block_norms
        from llmscope.inspection.next_token import next_token_encoded

        body, encoded = await read(request)
        settings = NextTokenSettings(top_k=int(shapes.field_of(body, "top_k", (int,), 10)), lens=True)
        check_cap("top_k", settings.top_k, tools.max_top_k, "--max-top-k")
        layers = Shape.of(loaded).layers
        cost([Pass(tokens=len(encoded.ids), context=len(encoded.ids), cache=True, hidden_states=True),
              Pass(tokens=1, context=1, logits=layers + 1),  # the lens: every layer's last position unembedded
              Pass(tokens=len(encoded.ids), context=len(encoded.ids), hidden_states=True)])  # the block norms

        def work() -> tuple[Any, Any, dict[str, str]]:
            result = next_token_encoded(loaded, [encoded], settings)[0]
            ids = [t.token_id for step in result.steps for t in step.top] + [row.top_id for row in result.lens or ()]
            return result, block_norms(loaded, encoded.ids), partial_bytes(loaded.tokenizer, ids)

        result, norms, held = await run(request, work)
        return await envelope(result, blocks=to_plain(norms), partial_bytes=held)

    async def attention(request: Request) -> Response:
        from llmscope.attention.headsteps import head_steps
        from llmscope.attention.weights import AttentionSettings, attention_weights
        from llmscope.core.floatpack import packed_attention

        body, encoded = await read(request)
        chat = bool(shapes.field_of(body, "chat", (bool,), False))
        settings = AttentionSettings(all_queries=True, chat=chat, system=shapes.text_of(body, "system"))
        layer, head = optional_count(body, "layer"), optional_count(body, "head")
        whole = bool(shapes.field_of(body, "weights", (bool,), True))
        if (layer is None) != (head is None):
            raise shapes.ApiError(400, "'layer' and 'head' go together: give both or neither", param="layer")
        if not whole and layer is None:
            raise shapes.ApiError(400, "'weights': false leaves nothing to answer without 'layer' and 'head'",
                                  param="weights")

        shape, tokens = Shape.of(loaded), len(encoded.ids)
        weights = shape.layers * shape.heads * tokens * tokens
        if whole and weights * 16 // 3 > tools.max_answer_bytes:  # float32 in base64
            raise shapes.ApiError(400, f"{shape.layers} layers x {shape.heads} heads x {tokens}² attention weights "
                                  f"make an answer of about {weights * 16 // 3:,} bytes, more than this server sends "
                                  f"({tools.max_answer_bytes:,}: serve --max-answer-bytes); use a shorter prompt",
                                  code="answer_too_large")
        cost([Pass(tokens=tokens, context=tokens, attentions=True)])

        def work() -> tuple[Any, Any, dict[str, str]]:
            steps = None if layer is None or head is None else packed_head_steps(to_plain(
                head_steps(loaded, encoded.ids, layer, head)))
            result = packed_attention(to_plain(attention_weights(loaded, encoded.prompt, settings))) if whole else None
            return result, steps, partial_bytes(loaded.tokenizer, encoded.ids)

        result, steps, held = await run(request, work)
        return await envelope(result, head_steps=steps, partial_bytes=held)

    async def attribute(request: Request) -> Response:
        from llmscope.attribution.attribute import attribute_encoded
        from llmscope.attribution.settings import MAX_AUTO_STEPS, AttributionSettings

        body, encoded = await read(request)
        methods = shapes.field_of(body, "methods", (list,), None)
        if methods is not None and not all(isinstance(m, str) for m in methods):
            raise shapes.ApiError(400, "'methods' must be a list of method names", param="methods")
        steps = shapes.field_of(body, "steps", (int,), PAGE_ATTRIBUTION_STEPS)
        if not 1 <= steps <= MAX_AUTO_STEPS:
            raise shapes.ApiError(400, f"'steps' must be 1 to {MAX_AUTO_STEPS} here (got {steps}); attribute "
                                  "--steps takes more", param="steps")
        check_cap("steps", steps, tools.max_steps, "--max-steps")
        settings = AttributionSettings(steps=steps, **({"methods": tuple(methods)} if methods else {}))
        cost(attribution_passes(settings.methods, len(encoded.ids) + 1, steps))

        def work() -> tuple[Any, dict[str, str]]:
            result = attribute_encoded(loaded, encoded, settings)
            return result, partial_bytes(loaded.tokenizer, [*result.ids, *(t.token_id for t in result.targets)])

        result, held = await run(request, work)
        return await envelope(result, partial_bytes=held)

    async def cache(request: Request) -> Response:
        from llmscope.architecture.kvcache import cache_size

        body, encoded = await read(request)
        timing = bool(shapes.field_of(body, "time", (bool,), False))
        dtype = loaded.info.dtype if loaded.info.dtype in ("float32", "bfloat16", "float16") else "float32"

        if timing:  # bench-cache's pairs: one untimed and CACHE_TIMING_PAIRS timed, each with and without the cache
            runs = 1 + CACHE_TIMING_PAIRS
            tokens = len(encoded.ids)
            cost([*decoding_passes(tokens, CACHE_TIMING_TOKENS) * runs,
                  Pass(tokens=tokens + 1, context=tokens + 1, repeat=CACHE_TIMING_TOKENS * runs, growth=0)])

        def work() -> dict[str, Any]:
            size = cache_size(loaded.model.config, len(encoded.ids), 1, dtype)
            out: dict[str, Any] = {"tokens": len(encoded.ids), "size": to_plain(size), "kv_bytes": size.kv_bytes,
                                   "state_bytes": size.state_bytes, "total_bytes": size.total_bytes, "bench": None}
            if timing:
                from llmscope.bench.benchmark import bench_cache

                out["bench"] = to_plain(bench_cache(loaded, encoded.prompt, lengths=(CACHE_TIMING_TOKENS,),
                                                    warmup=1, repeat=CACHE_TIMING_PAIRS, chat=encoded.chat))
            return out

        return await envelope(await run(request, work))

    async def architecture(request: Request) -> Response:
        from llmscope.architecture.describe import describe_loaded_model

        return await envelope(await run(request, lambda: describe_loaded_model(loaded, depth=1)))

    posts = {"/llmscope/v1/explore/decode": decode, "/llmscope/v1/explore/next-token": next_token,
             "/llmscope/v1/explore/lens": lens,
             "/llmscope/v1/explore/attention": attention, "/llmscope/v1/explore/attribute": attribute,
             "/llmscope/v1/explore/cache": cache, "/llmscope/v1/explore/architecture": architecture}
    return [Route("/", guarded(home, open_route=True), methods=["GET"]),
            Route("/explore", guarded(page, open_route=True), methods=["GET"]),
            Route("/explore/assets/{file}", guarded(asset, open_route=True), methods=["GET"]),
            *(Route(path, guarded(handler), methods=["POST"]) for path, handler in posts.items())]
