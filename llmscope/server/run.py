"""Run the app on uvicorn: bind first (port 0 picks a free port), say where on stderr, serve until SIGTERM or
Ctrl-C, then stop accepting, give in-flight requests the shutdown time, cancel what is left and return."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from llmscope.core.errors import UsageError
from llmscope.server.config import ServeSettings, ServeSummary, plan_for


def require_server_packages() -> None:
    """Refuse early, with the install line, when the optional `serve` extra is missing."""
    import importlib.util

    missing = [name for name in ("starlette", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"llmscope serve needs {' and '.join(missing)}",
                         hint="pip install 'llmscope[serve]' (the --endpoint client needs neither)")


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


def serve(loaded: Any, settings: ServeSettings, log: Callable[[str], None],
          on_listening: Callable[[int], None]) -> ServeSummary:
    """Serve `loaded` until a signal; on_listening(port) runs once connections are accepted. Returns what was
    served."""
    require_server_packages()
    import uvicorn

    from llmscope.server.app import build_app
    from llmscope.server.engine import Engine

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:  # no re-raise after shutdown: the exit code is 0
            if self.should_exit:
                self.force_exit = True
            self.should_exit = True

    sock = bind(settings.host, settings.port)
    engine = Engine(loaded, max_batch=settings.max_batch, max_queue=settings.max_queue)
    engine.start()
    config = uvicorn.Config(build_app(engine, settings, log), log_level="warning", access_log=False,
                            lifespan="off", timeout_graceful_shutdown=max(1, round(settings.shutdown_timeout)),
                            timeout_keep_alive=5)
    server = Server(config)
    port = sock.getsockname()[1]
    started = time.perf_counter()
    try:
        on_listening(port)
        server.run(sockets=[sock])
    finally:
        log("stopping: finishing in-flight work")
        engine.close(settings.shutdown_timeout)
        sock.close()
        sys.stderr.flush()
    stats = engine.stats
    return ServeSummary(url=plan_for(settings, loaded.spec.name, port).url, seconds=time.perf_counter() - started,
                        requests=stats.requests, batches=stats.batches, rows=stats.rows,
                        largest_batch=stats.largest_batch)
