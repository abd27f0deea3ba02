"""Show what `llmscope serve` serves (its --check plan): the address, the model, batching, routes and caps, as a Rich
table or one JSON document. It computes nothing."""

from __future__ import annotations

from rich import box
from rich.table import Table
from rich.text import Text

from llmscope.core.model_info import ModelInfo
from llmscope.render.display import Display, titled
from llmscope.server.config import ServePlan, ServeSummary


def show_plan(display: Display, info: ModelInfo, plan: ServePlan, command: str = "serve",
              more_routes: tuple[tuple[str, str, str], ...] = ()) -> None:
    """serve's (and explore's) one render entry; more_routes: what explore adds to serve's routes."""
    if more_routes:
        import dataclasses

        plan = dataclasses.replace(plan, routes=(*plan.routes, *more_routes))
    if not display.for_people:
        display.document(command, info, plan)
        return
    key = "required (Authorization: Bearer KEY)" if plan.api_key_required else "none"
    display.result(Text(f"would serve {plan.model} at {plan.url}\nAPI key: {key}; batches of up to {plan.max_batch}, "
                        f"{plan.max_queue} queued at most; {plan.shutdown_timeout:g} s to finish on SIGTERM"))
    table = Table(box=box.SIMPLE, pad_edge=False)
    table.add_column("method")
    table.add_column("route", no_wrap=True)
    table.add_column("what", overflow="fold")
    for method, route, what in plan.routes:
        table.add_row(method, route, what)
    display.result(titled("Routes", table))
    if plan.limits:
        limits = Table(box=box.SIMPLE, pad_edge=False)
        limits.add_column("option", no_wrap=True)
        limits.add_column("value", overflow="fold")
        for option, value in plan.limits:
            limits.add_row(option, value)
        display.result(titled("Per-request caps, timeouts and Host rule", limits))


def show_summary(display: Display, info: ModelInfo, summary: ServeSummary, command: str = "serve") -> None:
    """serve's render entry once it stops: the document (--json) or one line on stderr."""
    if not display.for_people:
        display.document(command, info, summary)
        return
    display.status(f"stopped: {summary.requests:,} requests in {summary.batches:,} batches (largest "
                   f"{summary.largest_batch}) over {summary.seconds:,.0f} s")
