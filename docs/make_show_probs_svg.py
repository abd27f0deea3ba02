"""Writes docs/show-probs.svg: a real `llmscope generate --show-probs` run on the embedded model, exported by Rich.
It runs the library and the renderer with a recording console; it is a documentation tool, not part of the CLI."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console

from llmscope.generation import GenerationSettings, generate
from llmscope.loader import load_model
from llmscope.render import Display
from llmscope.render.generation import confidence_legend, stream_printer, summary

PROMPT = "Write a haiku about the sea."


def main(target: Path) -> None:
    loaded = load_model(None, device="cpu", dtype="float32")
    out = Console(record=True, force_terminal=True, width=80, color_system="truecolor")
    display = Display(out=out, err=out)
    out.print(f"$ llmscope generate {PROMPT!r} --show-probs", style="bold")
    display.note(confidence_legend("probability"))
    result = generate(loaded, PROMPT, GenerationSettings(max_new_tokens=60), chat=True,
                      on_token=stream_printer(display, "probability"))
    out.print()
    summary(display, result, "probability")
    target.write_text(out.export_svg(title="llmscope generate --show-probs"))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("show-probs.svg")))
