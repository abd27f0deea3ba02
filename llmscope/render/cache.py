"""Show the conversion cache (`llmscope cache`): a table of entries with size, source and last use, or JSON.
Nothing here reads or changes the cache; llmscope.loading.conversion_cache does."""

from __future__ import annotations

import time
from pathlib import Path

from rich.table import Table

from llmscope.loading.conversion_cache import CacheReport
from llmscope.render.display import Display, human_bytes


def _when(stamp: float | None) -> str:
    return "-" if stamp is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp))


def show_cache(display: Display, report: CacheReport) -> None:
    """cache's one render entry: the document (--json / --jsonl) or the entries table."""
    if not display.for_people:
        display.document("cache", None, report)
        return
    if report.removed:
        display.status(f"removed {len(report.removed)} entr{'y' if len(report.removed) == 1 else 'ies'}, "
                       f"{human_bytes(report.freed_bytes)} freed")
    elif report.cleared:
        display.status("nothing to remove: the cache holds no entries")
    damaged = any(entry.problem for entry in report.entries)
    table = Table(title=f"conversion cache: {report.root} ({human_bytes(report.total_bytes)})",
                  title_justify="left", caption_justify="left",
                  caption="damaged entries are rebuilt on their next use; `llmscope cache --clear NAME` removes one"
                  if damaged else None)
    # <hash> holds model + tokenizer, <hash>.tokenizer the tokenizer: names stay whole (they are typed back into
    # `cache --clear NAME`); the source file and the state fold instead
    longest = max((len(entry.name) for entry in report.entries), default=5)
    table.add_column("entry", no_wrap=True, min_width=longest)
    table.add_column("size", justify="right", no_wrap=True, min_width=9)
    table.add_column("source file", overflow="fold", ratio=3)
    table.add_column("last use", no_wrap=True, min_width=16)
    if damaged:
        table.add_column("state", overflow="fold", ratio=2)
    for entry in report.entries:
        row = [entry.name, human_bytes(entry.size_bytes), Path(entry.source).name if entry.source else "-",
               _when(entry.last_used)]
        table.add_row(*row, *([entry.problem or "ok"] if damaged else []))
    if report.entries:
        display.result(table)
    else:
        display.result(f"conversion cache: {report.root} holds no entries ({human_bytes(report.total_bytes)})")
