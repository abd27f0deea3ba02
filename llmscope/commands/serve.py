"""The `serve` command: load the model once and keep it warm behind an OpenAI-compatible HTTP API (llmscope.server).
It parses and checks options, loads, and hands over to the server; --check prints the plan without listening."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from llmscope.cli.app import app
from llmscope.cli.groups import Shared, grouped
from llmscope.cli.kit import (
    EXIT_CODES_HELP,
    ModelOpt,
    PortOpt,
    ServeCheckOpt,
    command,
    example,
    load,
    warn_all,
)

LISTENING = "listening on {url}"  # the line scripts wait for on stderr (printed even with -q)


@app.command(epilog=EXIT_CODES_HELP)
@example("-m", "{model}", "--port", "0", "--check")
@grouped(load=True, server=True)
def serve(
    model: ModelOpt = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0: every interface).")] = (
        "127.0.0.1"),
    port: PortOpt = 8000,
    max_batch: Annotated[int, typer.Option(
        "--max-batch", help="Most requests run together in one padded batch.")] = 8,
    check: ServeCheckOpt = False,
    *,
    shared: Shared,
) -> None:
    """Serve the model over HTTP (OpenAI's /v1/completions and /v1/chat/completions, plus llmscope's next-token,
    score and tokenize routes), warm for scripts and for --endpoint. Concurrent requests run in batches.

    Prints "listening on http://HOST:PORT" on stderr once it accepts connections. Stop it with SIGTERM or Ctrl-C.
    """
    with command(shared.output.quiet) as display:
        from llmscope.server.config import check_address, plan_for

        settings = shared.server.settings(host, port, max_batch=max_batch)
        check_address(host)  # a bad --host is refused now, not after the load
        models = shared.load.settings(model)
        display.mode = shared.output.mode()
        warn_all(display, settings.warnings())
        from llmscope.server.lifecycle import require_server_packages

        require_server_packages()
        loaded = load(display, models)
        if check:
            from llmscope.render.serve import show_plan

            show_plan(display, loaded.info, plan_for(settings, loaded.spec.name))
            return
        from llmscope.server.lifecycle import serve as run_server

        def listening(bound: int) -> None:
            url = plan_for(settings, loaded.spec.name, bound).url
            sys.stderr.write(LISTENING.format(url=url) + "\n")
            sys.stderr.flush()

        summary = run_server(loaded, settings, display.status, listening)
        from llmscope.render.serve import show_summary

        show_summary(display, loaded.info, summary)
