"""The env command: versions, devices, cache folders and the default model, for bug reports.
It calls llmscope.system.environment and the renderer; it loads no model."""

from __future__ import annotations

from llmscope.cli.app import app
from llmscope.cli.groups import Shared, grouped
from llmscope.cli.kit import (
    EXIT_CODES_HELP,
    command,
    example,
)


@app.command("env", epilog=EXIT_CODES_HELP)
@example()
@grouped()
def env_command(*, shared: Shared) -> None:
    """Versions, CUDA/MPS and GPUs, cache folders and the default model: paste it into bug reports."""
    with command(shared.output.quiet) as display:
        display.mode = shared.output.mode()
        from llmscope.render.environment import show_environment
        from llmscope.system.environment import collect_environment

        show_environment(display, collect_environment())
