"""The `explore` command: `serve` with its page in front, on 127.0.0.1 by default: type a prompt, see its tokens,
next-token bars, decoding, attention, attribution, cache and architecture. It parses options and starts the server."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from llmscope.cli.app import app
from llmscope.cli.groups import Shared, grouped
from llmscope.cli.kit import EXIT_CODES_HELP, ModelOpt, PortOpt, ServeCheckOpt, command, example, load, warn_all
from llmscope.commands.serve import LISTENING

PAGE_LINE = "explore at {url}/explore{query}"  # printed on stderr after the listening line
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@app.command(epilog=EXIT_CODES_HELP)
@example("-m", "{model}", "--port", "0", "--check")
@grouped(load=True, server=True)
def explore(
    model: ModelOpt = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on. Beyond this machine (0.0.0.0) without "
                                      "--api-key, a key is made for the run and put in the page's address.")] = (
        "127.0.0.1"),
    port: PortOpt = 8000,
    open_browser: Annotated[bool, typer.Option("--open", help="Open the page in the default web browser.")] = False,
    check: ServeCheckOpt = False,
    *,
    shared: Shared,
) -> None:
    """Explore the model in a web page: tokens, next-token bars, a decoding panel (temperature, top-k, top-p, greedy
    and sampled steps), logit lens, attention heads, attribution, KV cache and architecture, for a prompt you type.

    It is `serve` with the page at /explore; every figure on the page comes from the same library functions as the
    commands. Prints "listening on http://HOST:PORT" on stderr, then the page's address (with ?token=KEY under a
    key: opening it sets the key's cookie). Stop it with Ctrl-C.
    """
    with command(shared.output.quiet) as display:
        from llmscope.server.config import check_address, plan_for
        from llmscope.server.keys import new_key

        made_key = shared.server.api_key is None and host not in LOCAL_HOSTS
        # one request at a time: the page is one person's, and its clicks queue instead of sharing a batch
        settings = shared.server.settings(host, port, max_batch=1,
                                          **({"api_key": new_key()} if made_key else {}))
        check_address(host)
        models = shared.load.settings(model)
        display.mode = shared.output.mode()
        notes = settings.warnings()
        if made_key:
            notes += (f"explore on {host}: a key was made for this run and is in the page's address below; the "
                      "page is plain HTTP, so anyone who can see the traffic can read it",)
        warn_all(display, notes)
        from llmscope.server.lifecycle import require_server_packages

        require_server_packages()
        loaded = load(display, models)
        if check:
            from llmscope.render.serve import show_plan
            from llmscope.server.explore import ROUTES

            show_plan(display, loaded.info, plan_for(settings, loaded.spec.name), "explore", ROUTES)
            return
        from llmscope.server.lifecycle import serve as run_server

        def listening(bound: int) -> None:
            url = plan_for(settings, loaded.spec.name, bound).url
            query = f"?token={settings.api_key}" if settings.api_key else ""
            sys.stderr.write(LISTENING.format(url=url) + "\n" + PAGE_LINE.format(url=url, query=query) + "\n")
            sys.stderr.flush()
            if open_browser:
                import webbrowser

                webbrowser.open(f"{url}/explore{query}")

        summary = run_server(loaded, settings, display.status, listening)
        from llmscope.render.serve import show_summary

        show_summary(display, loaded.info, summary, "explore")
