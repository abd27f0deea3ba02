"""The console script's entry point: signals first (Ctrl-C and SIGTERM while Python is still importing Typer give
one line, not a traceback), then the app. It imports nothing heavy itself."""

from __future__ import annotations

import sys

from llmscope.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, handle_sigterm, terminated


def main(args: list[str] | None = None) -> None:
    """Run llmscope; an interrupt outside a command's own handling exits 130 (143 for SIGTERM) with one line."""
    handle_sigterm()
    try:
        from llmscope.cli import main as run

        run(args)
    except KeyboardInterrupt:
        sys.stderr.write(f"error: {'terminated' if terminated() else 'interrupted'}\n")
        sys.exit(EXIT_TERMINATED if terminated() else EXIT_INTERRUPTED)
    except BrokenPipeError:  # the reader of stdout went away (`| head`): not a failure
        from llmscope.clikit import silence_stdout

        silence_stdout()
        sys.exit(0)


if __name__ == "__main__":
    main()
