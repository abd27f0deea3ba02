"""The console script's entry point: signals first (Ctrl-C and SIGTERM while Python is still importing give one
line, not a traceback, and are never turned into a silent exit by Typer), then the app. It imports nothing heavy."""

from __future__ import annotations

import os
import sys

try:  # the C module: `signal` first imports enum, which takes longer than a quick Ctrl-C
    import _signal as signals
except ImportError:  # another Python
    import signal as signals


def _stop_while_importing(signum: int, _frame: object) -> None:
    """Until main() installs the real handlers: nothing to clean up yet, so say it in one line and leave."""
    terminated = signum == signals.SIGTERM
    os.write(2, b"error: terminated\n" if terminated else b"error: interrupted\n")
    os._exit(143 if terminated else 130)


signals.signal(signals.SIGINT, _stop_while_importing)
signals.signal(signals.SIGTERM, _stop_while_importing)

from llmscope.core.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, Interrupted, handle_sigterm, terminated  # noqa: E402


def main(args: list[str] | None = None) -> None:
    """Run llmscope; an interrupt outside a command's own handling exits 130 (143 for SIGTERM) with one line."""
    handle_sigterm()
    for stream in (sys.stdout, sys.stderr):  # a non-UTF-8 locale (PYTHONIOENCODING=ascii): \u2423, not an error
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    try:
        from llmscope.cli.main import main as run

        run(args)
    except (KeyboardInterrupt, Interrupted):
        sys.stderr.write(f"error: {'terminated' if terminated() else 'interrupted'}\n")
        sys.exit(EXIT_TERMINATED if terminated() else EXIT_INTERRUPTED)
    except BrokenPipeError:  # the reader of stdout went away (`| head`): not a failure
        from llmscope.cli.kit import silence_stdout

        silence_stdout()
        sys.exit(0)


if __name__ == "__main__":
    main()
