"""The Starlette app of `llmscope serve`: middleware that logs every request and checks its Host and Content-Type,
the API-key check and error mapping around every route, and build_app, which only wires the routes (OpenAI's in
openai_routes, llmscope's in native and explore) to one ServeState. No route logic here, no renderers, no model code."""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from llmscope.core.errors import LlmscopeError, UsageError
from llmscope.server import openai_routes
from llmscope.server.config import ServeSettings, host_allowed
from llmscope.server.engine import Engine
from llmscope.server.explore import explore_routes
from llmscope.server.keys import check_key
from llmscope.server.native import native_routes
from llmscope.server.openai_shapes import ApiError
from llmscope.server.state import ServeState
from llmscope.server.whatif_route import whatif_routes
from llmscope.server.wire import ClientGone

Handler = Callable[[Request], Awaitable[Response]]
StateHandler = Callable[[Request, ServeState], Awaitable[Response]]


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


def _error(error: ApiError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def _library_error(error: LlmscopeError) -> ApiError:
    message = str(error)
    if isinstance(error, UsageError):
        code = "context_length_exceeded" if "context" in message else None
        return ApiError(400, message, code=code)
    return ApiError(500, message, kind="server_error")


def guarded(state: ServeState, handler: Handler, open_route: bool = False) -> Handler:
    """The handler behind the key check (unless open_route), every failure answered in OpenAI's error shape: the
    library's known errors keep their words, a client gone gets 499, anything else a one-line 500 on the log."""
    async def run(request: Request) -> Response:
        try:
            if state.settings.api_key is not None and not open_route:
                check_key(request, state.settings.api_key)
            return await handler(request)
        except ApiError as error:
            return _error(error)
        except LlmscopeError as error:
            return _error(_library_error(error))
        except ClientGone:
            return Response(status_code=499)
        except Exception as error:  # still OpenAI's shape; the library's known errors keep their words
            from llmscope.core.errors import translate

            known = translate(error, state.loaded.info)
            text = str(known) if known is not None else f"{type(error).__name__}: {error}".splitlines()[0]
            state.log(f"error: {text}")
            return _error(ApiError(500, text, kind="server_error"))
    return run


async def not_found(request: Request, error: Exception) -> Response:
    """Starlette's HTTPException (no such route, wrong method) in OpenAI's error shape."""
    status = getattr(error, "status_code", 404)
    message = f"no route {request.method} {request.url.path}" if status == 404 else str(
        getattr(error, "detail", "")) or "bad request"
    return _error(ApiError(status, message, code="not_found" if status == 404 else None))


def build_app(engine: Engine, settings: ServeSettings, log: Callable[[str], None]) -> Starlette:
    """The app for one loaded model (engine.loaded); `log` takes the request lines."""
    state = ServeState(engine, settings, log)
    tools = state.route_tools()
    guard = functools.partial(guarded, state)

    def openai(handler: StateHandler) -> Handler:
        return guard(functools.partial(handler, state=state))

    routes = [
        Route("/health", guard(functools.partial(openai_routes.health, state=state), open_route=True),
              methods=["GET"]),
        Route("/v1/models", openai(openai_routes.models), methods=["GET"]),
        Route("/v1/completions", openai(openai_routes.completions), methods=["POST"]),
        Route("/v1/chat/completions", openai(openai_routes.chat), methods=["POST"]),
        *(Route(path, guard(handler), methods=["POST"])
          for path, handler in native_routes(state.loaded, tools).items()),
        *explore_routes(state.loaded, guard, tools),
        *whatif_routes(state.loaded, guard, tools),
    ]
    return Starlette(routes=routes, middleware=[Middleware(RequestLog, log=log),
                                                Middleware(RequestGuard, names=settings.host_names())],
                     exception_handlers={HTTPException: not_found})
