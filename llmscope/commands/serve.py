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
@grouped(load=True)
def serve(
    model: ModelOpt = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0: every interface).")] = (
        "127.0.0.1"),
    port: PortOpt = 8000,
    api_key: Annotated[str | None, typer.Option(
        "--api-key", envvar="LLMSCOPE_API_KEY", help="Require 'Authorization: Bearer KEY' on every route but "
        "/health. Default: $LLMSCOPE_API_KEY, else no key.", show_default=False)] = None,
    max_batch: Annotated[int, typer.Option(
        "--max-batch", help="Most requests run together in one padded batch.")] = 8,
    max_queue: Annotated[int, typer.Option(
        "--max-queue", help="Requests waiting beyond this get 503 (busy).")] = 64,
    shutdown_timeout: Annotated[float, typer.Option(
        "--shutdown-timeout", metavar="SECONDS", help="After SIGTERM or Ctrl-C: time (1 s or more) in-flight "
        "requests get to finish before they are cancelled; then the server exits 0.")] = 10.0,
    allowed_host: Annotated[list[str] | None, typer.Option(
        "--allowed-host", metavar="NAME", help="Also answer requests whose Host header is NAME (repeat for more; "
        "'*' for any). Default: the --host address, localhost and any IP address; other names get 400, which "
        "stops DNS-rebinding pages.", show_default=False)] = None,
    max_top_k: Annotated[int, typer.Option(
        "--max-top-k", help="Most alternatives per position one request may ask for (next-token and score top_k, "
        "generate logprobs); more gets 400.")] = 100,
    max_steps: Annotated[int, typer.Option(
        "--max-steps", help="Most next-token steps per request; more gets 400.")] = 64,
    max_tokens: Annotated[int, typer.Option(
        "--max-tokens", help="Most prompt + new tokens per request, over all its prompts; more gets 400.")] = 8192,
    max_answer_bytes: Annotated[int, typer.Option(
        "--max-answer-bytes", metavar="BYTES", help="Largest JSON answer; a request whose answer is estimated "
        "larger gets 400 before any work.")] = 32 * 1024 * 1024,
    job_timeout: Annotated[float, typer.Option(
        "--job-timeout", metavar="SECONDS", help="Time one job may run once started; then it stops at its next "
        "forward pass and its request gets 504.")] = 300.0,
    max_connections: Annotated[int, typer.Option(
        "--max-connections", help="Most open connections; more are closed on arrival.")] = 64,
    header_timeout: Annotated[float, typer.Option(
        "--header-timeout", metavar="SECONDS", help="Time a connection has to send a request's head, and then its "
        "body; idle and half-sent connections are closed.")] = 10.0,
    keep_alive_timeout: Annotated[float, typer.Option(
        "--keep-alive-timeout", metavar="SECONDS", help="Time an idle keep-alive connection stays open between "
        "requests.")] = 5.0,
    check: ServeCheckOpt = False,
    *,
    shared: Shared,
) -> None:
    """Serve the model over HTTP (OpenAI's /v1/completions and /v1/chat/completions, plus llmscope's next-token,
    score and tokenize routes), warm for scripts and for --endpoint. Concurrent requests run in batches.

    Prints "listening on http://HOST:PORT" on stderr once it accepts connections. Stop it with SIGTERM or Ctrl-C.
    """
    with command(shared.output.quiet) as display:
        from llmscope.server.config import ServeSettings, check_address, plan_for

        settings = ServeSettings(host=host, port=port, api_key=api_key, max_batch=max_batch, max_queue=max_queue,
                                 shutdown_timeout=shutdown_timeout, max_top_k=max_top_k, max_steps=max_steps,
                                 max_tokens=max_tokens, max_answer_bytes=max_answer_bytes, job_timeout=job_timeout,
                                 max_connections=max_connections, header_timeout=header_timeout,
                                 keep_alive_timeout=keep_alive_timeout, allowed_hosts=tuple(allowed_host or ()))
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
