"""The cache command: list the GGUF conversion cache or clear entries of it.
It calls llmscope.loading.conversion_cache and the renderer; it loads no model."""

from __future__ import annotations

from typing import Annotated

import typer

from llmscope.cli.app import app
from llmscope.cli.groups import Shared, grouped
from llmscope.cli.kit import (
    EXIT_CODES_HELP,
    command,
    example,
)
from llmscope.core.errors import UsageError


@app.command("cache", epilog=EXIT_CODES_HELP)
@example()
@grouped()
def cache_command(
    clear: Annotated[bool, typer.Option("--clear", help="Remove the entries named, or every entry.")] = False,
    entries: Annotated[list[str] | None, typer.Argument(
        help="Entries to clear: a name (or its first characters) or a source file name.", show_default=False)] = None,
    *,
    shared: Shared,
) -> None:
    """List the GGUF conversion cache (size, source file, last use, state) or clear it."""
    with command(shared.output.quiet) as display:
        display.mode = shared.output.mode()
        from llmscope.loading import conversion_cache
        from llmscope.render.cache import show_cache

        if entries and not clear:
            raise UsageError("entry names are only used with --clear", hint="llmscope cache --clear NAME")
        report = conversion_cache.clear(tuple(entries or ())) if clear else conversion_cache.list_entries(check=True)
        show_cache(display, report)
