"""Run the app on uvicorn: bind first (port 0 picks a free port), say where on stderr, serve until SIGTERM or
Ctrl-C, then stop accepting, give in-flight requests the shutdown time, answer what is left with 503 and return.
Connections are bounded here: a request-head timeout, a keep-alive timeout and a connection limit."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from llmscope.core.errors import UsageError
from llmscope.server.config import ServeSettings, ServeSummary, plan_for


def require_server_packages() -> None:
    """Refuse early, with the install line, when the optional `serve` extra is missing."""
    import importlib.util

    missing = [name for name in ("starlette", "uvicorn", "pydantic") if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"llmscope serve needs {', '.join(missing)}",
                         hint="pip install 'llmscope[serve]' (the --endpoint client needs none of them)")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: the system picks a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {error.strerror or error}",
                         hint="choose another --port (0 picks a free one)") from None
    sock.listen(256)
    sock.set_inheritable(True)
    return sock


def raise_open_file_limit() -> None:
    """Let the process hold as many sockets as the system allows it (the soft limit up to the hard one)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))
        except (ValueError, OSError):
            pass


ANSWER_TIME = 2.0  # seconds the 503 answers get to be written after a second signal, before uvicorn stops waiting


def later(seconds: float, action: Callable[[], None]) -> None:
    """Run action on a daemon thread after `seconds`."""
    timer = threading.Timer(seconds, action)
    timer.daemon = True
    timer.start()


def build_server(loaded: Any, settings: ServeSettings, log: Callable[[str], None]) -> tuple[Any, Any]:
    """The uvicorn server and the started engine for `loaded`. server.ready is set once it accepts connections;
    server.handle_exit (what SIGTERM and Ctrl-C call) starts the shutdown clock: after --shutdown-timeout the
    engine answers every request still in flight with 503 (streams with an error event and [DONE]); a second
    signal does so at once, and uvicorn stops waiting ANSWER_TIME later."""
    require_server_packages()
    import uvicorn

    from llmscope.server.app import build_app
    from llmscope.server.engine import Engine
    from llmscope.server.protocol import guarded_protocol

    engine = Engine(loaded, max_batch=settings.max_batch, max_queue=settings.max_queue,
                    job_timeout=settings.job_timeout)

    class Server(uvicorn.Server):
        ready = threading.Event()
        stop_asked_at: float | None = None

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            self.ready.set()

        def handle_exit(self, sig: int, frame: Any) -> None:  # no re-raise after shutdown: the exit code is 0
            if self.should_exit:  # a second signal: every request still in flight gets its 503 now
                engine.abort("a second signal cut this request short")
                later(ANSWER_TIME, self.stop_waiting)
            else:
                self.stop_asked_at = time.monotonic()
                later(settings.shutdown_timeout, engine.abort)
            self.should_exit = True

        def stop_waiting(self) -> None:
            """uvicorn stops waiting for connections (their 503s have been written by now)."""
            self.force_exit = True

    engine.start()
    # uvicorn's own cancellation (a plain-text 500 and a traceback) comes only after the engine has answered
    # every request itself, at the shutdown timeout. The connection limit is the protocol's: uvicorn's
    # limit_concurrency counts the asking connection itself and would answer 503 on the last one allowed.
    config = uvicorn.Config(build_app(engine, settings, log), log_level="warning", access_log=False,
                            lifespan="off", timeout_graceful_shutdown=round(settings.shutdown_timeout) + 5,
                            timeout_keep_alive=settings.keep_alive_timeout,  # type: ignore[arg-type]
                            http=guarded_protocol(settings.header_timeout, settings.max_connections))
    server = Server(config)
    server.ready = threading.Event()
    return server, engine


def serve(loaded: Any, settings: ServeSettings, log: Callable[[str], None],
          on_listening: Callable[[int], None]) -> ServeSummary:
    """Serve `loaded` until a signal; on_listening(port) runs once connections are accepted. Returns what was
    served."""
    raise_open_file_limit()
    sock = bind(settings.host, settings.port)
    server, engine = build_server(loaded, settings, log)
    port = sock.getsockname()[1]
    started = time.perf_counter()
    try:
        on_listening(port)
        server.run(sockets=[sock])
    finally:
        log("stopping: finishing in-flight work")
        asked = server.stop_asked_at
        left = settings.shutdown_timeout - (time.monotonic() - asked if asked is not None else 0.0)
        engine.close(max(left, 0.0))
        sock.close()
        sys.stderr.flush()
    stats = engine.stats
    return ServeSummary(url=plan_for(settings, loaded.spec.name, port).url, seconds=time.perf_counter() - started,
                        requests=stats.requests, batches=stats.batches, rows=stats.rows,
                        largest_batch=stats.largest_batch)
