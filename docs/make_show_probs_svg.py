"""Writes docs/show-probs.svg: a real `llmscope generate --show-probs` run on the embedded model, exported by Rich.
It runs the CLI's own generate path (settings -> load -> run -> show) with a recording console; it is a
documentation tool, not part of the CLI."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console

from llmscope.cli.main import run_generate
from llmscope.core.command_settings import GenerateCommand, GenerationSettings, ModelSettings, PromptSettings
from llmscope.render.display import Display

PROMPT = "Write a haiku about the sea."


def main(target: Path) -> None:
    out = Console(record=True, force_terminal=True, width=80, color_system="truecolor")
    display = Display(out=out, err=out)
    out.print(f"$ llmscope generate {PROMPT!r} --show-probs", style="bold")
    settings = GenerateCommand(generation=GenerationSettings(max_new_tokens=60), prompt=PromptSettings(chat=True),
                               model=ModelSettings(device="cpu", dtype="float32"), show_probs="probability",
                               stream=True)
    run_generate(display, settings, PROMPT)
    target.write_text(out.export_svg(title="llmscope generate --show-probs"))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("show-probs.svg")))
