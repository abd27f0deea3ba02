"""Regenerate the example outputs of README.md and of the documentation pages (docs/**/*.md) from real runs of
llmscope's default mode (`make figures`), or check that every page still holds what the last run wrote (`--check`,
and tests/unit/test_docs.py). Runs commands only.

Two kinds of places in those pages:
- a fenced block right after `<!-- run: NAME -->`: `$ COMMAND` and what it printed (stderr and stdout as a terminal
  interleaves them, or stdout alone);
- an inline `<!-- figure: NAME -->VALUE<!-- /figure -->`: one value read from a command's --json.
A run or a figure may stand on several pages; each output is written once, to docs/outputs/NAME.txt, so that the
pages can be checked without running a model. Commands run in docs/examples/ (paragraph.txt lives there) with the
default model and options, COLUMNS=96, through pipes (so `token[p]` pairs, not colours), after one warm-up load so
that every load line reads the cache.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
OUTPUTS = DOCS / "outputs"
EXAMPLES = DOCS / "examples"
COLUMNS = "96"
MACHINE_LINES = ("warning: other processes keep the CPUs",)  # about the machine's load at the time, not the model


@dataclass(frozen=True)
class Run:
    """A README block: the command as shown, whether stderr is shown too, the environment it needs."""

    command: str  # as the reader types it, starting with `llmscope`
    stderr: bool = True
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Figure:
    """An inline value: a command with --json, the path to the value in its document, how it is written."""

    command: str
    path: tuple[Any, ...]
    format: str


RUNS: dict[str, Run] = {
    "generate-chat": Run('llmscope generate --chat "What is the capital of France?"'),
    "generate-n12": Run('llmscope generate "The capital of France is" -n 12'),
    "generate-show-probs": Run('llmscope generate "The capital of France is" -n 2 --show-probs', stderr=False),
    "generate-logprobs-json": Run('llmscope generate "The capital of France is" -n 2 --json --logprobs 2 -q',
                                  stderr=False),
    "next-token": Run('llmscope next-token "The capital of France is" --top-k 5'),
    "next-token-lens": Run('llmscope next-token "The capital of France is" --lens --top-k 3 -q'),
    "score-paragraph": Run("llmscope score --file paragraph.txt --worst 3"),
    "attribute": Run('llmscope attribute "The capital of France is"'),
    "attribute-contrast": Run('llmscope attribute "The capital of France is" --contrast " London" --method '
                              "ig,occlusion --quantize none"),
    "quantize-next-token": Run('llmscope next-token "The capital of France is" -k 3'),
    "check-invariance": Run("llmscope check-invariance"),
    "score-chat": Run('llmscope score "The capital of France is Paris." --chat --prompt "What is the capital of '
                      'France?"'),
    "compare-bfloat16": Run("llmscope compare --file paragraph.txt --against-dtype bfloat16 --worst 5"),
    "compare-next-token": Run('llmscope compare "The capital of France is" --against-dtype bfloat16 --next-token -k 5 '
                              "--worst 2"),
    "compare-quantize": Run("llmscope compare --file paragraph.txt --against-quantize none"),
    "attention": Run('llmscope attention "The dog chased the squirrel because it"      # COLUMNS=80',
                     env={"COLUMNS": "80"}),
    "attention-layer": Run('llmscope attention "The dog chased the squirrel because it" --layer 27'),
    "attention-matrix": Run('llmscope attention "The dog chased the squirrel because it" --layer 27 --head 2 '
                            "--matrix"),
    "bench-cache": Run("llmscope bench-cache -n 16 --threads 1 --max-time 40"),
    "what-if": Run("llmscope what-if -f lighthouse.txt --variant window=32 --variant sinks=4,window=28 --variant "
                  "kv-cache=int8 --variant kv-heads=1 -n 8"),
    "patch-eiffel": Run('llmscope patch "The Eiffel Tower is in the city of" --corrupt "The Colosseum is in the city '
                        'of"'),
    "tokenize": Run('llmscope tokenize "The capital of France is"'),
    "tokenize-ids": Run('llmscope tokenize "The capital of France is" --ids'),
    "tokenize-decode": Run('llmscope tokenize --decode "504 3575 282 4649 314"'),
    "architecture": Run("llmscope architecture --depth 3"),
    "env": Run("llmscope env"),
    "cache": Run("llmscope cache"),  # after the warm-up load, so it lists at least the embedded model's entries
    "serve-check": Run("llmscope serve --port 0 --check"),
    "explore-check": Run("llmscope explore --port 0 --check"),
}

_PARIS = ("steps", 0, "top", 0, "probability")
FIGURES: dict[str, Figure] = {
    "paris-default": Figure('llmscope next-token "The capital of France is" --json -q', _PARIS, "{:.4f}"),
    "paris-exact": Figure('llmscope next-token "The capital of France is" --quantize none --json -q', _PARIS,
                          "{:.4f}"),
    "paragraph-perplexity": Figure("llmscope score --file paragraph.txt --json -q", ("summary", "perplexity"),
                                   "{:.3f}"),
}

RUN_BLOCK = re.compile(r"<!-- run: (?P<name>[\w-]+) -->\n```\n(?P<body>.*?)```\n", re.S)
FIGURE_SPAN = re.compile(r"<!-- figure: (?P<name>[\w-]+) -->(?P<value>.*?)<!-- /figure -->")


def _environment(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", COLUMNS=COLUMNS, PYTHONPATH=str(ROOT))
    for name in ("LLMSCOPE_MODEL", "LLMSCOPE_QUANTIZE", "LLMSCOPE_ENDPOINT", "NO_COLOR", "FORCE_COLOR"):
        env.pop(name, None)
    env.update(extra)
    return env


def run_command(command: str, env: dict[str, str] | None = None,
                merged: bool = False) -> subprocess.CompletedProcess[str]:
    """Run `llmscope ...` as this Python's `-m llmscope` in docs/examples; a failure stops the script. merged:
    stderr into stdout's pipe, both unbuffered, so that the lines come in the order a terminal shows them."""
    words = shlex.split(command, comments=True)  # a `# note` after the command is for the reader
    assert words[0] == "llmscope", command
    done = subprocess.run([sys.executable, "-m", "llmscope", *words[1:]], cwd=EXAMPLES, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT if merged else subprocess.PIPE, text=True, timeout=1800,
                          env=_environment({**(env or {}), "PYTHONUNBUFFERED": "1"}))
    if done.returncode != 0:
        raise SystemExit(f"`{command}` failed with exit {done.returncode}:\n{done.stderr or done.stdout}")
    return done


def block_text(run: Run, done: subprocess.CompletedProcess[str]) -> str:
    """What a README block holds: the command, then what it printed (less the lines about the machine's load)."""
    lines = [f"$ {run.command}"]
    lines += [line for line in done.stdout.rstrip("\n").splitlines() if not line.startswith(MACHINE_LINES)]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def figure_text(figure: Figure, done: subprocess.CompletedProcess[str]) -> str:
    value: Any = json.loads(done.stdout)
    for key in figure.path:
        value = value[key]
    return figure.format.format(value)


def stored(name: str) -> str:
    return (OUTPUTS / f"{name}.txt").read_text()


def page_paths() -> list[Path]:
    """Every markdown file the generator writes into: README.md and the documentation pages."""
    return [README, *sorted(DOCS.rglob("*.md"))]


def read_pages() -> dict[str, str]:
    """Each page's text by its path relative to the repository root (the names the mismatches use)."""
    return {path.relative_to(ROOT).as_posix(): path.read_text() for path in page_paths()}


def apply(page: str, blocks: dict[str, str], figures: dict[str, str]) -> str:
    """The page with each marked block and figure replaced by its output (others left as they are)."""
    page = RUN_BLOCK.sub(lambda m: f"<!-- run: {m['name']} -->\n```\n{blocks.get(m['name'], m['body'])}```\n", page)
    return FIGURE_SPAN.sub(lambda m: f"<!-- figure: {m['name']} -->{figures.get(m['name'], m['value'])}"
                           "<!-- /figure -->", page)


def page_mismatches(name: str, page: str) -> list[str]:
    """Every run block and figure of one page whose text differs from its stored output or that nothing runs."""
    found = []
    missing = sorted({m["name"] for m in [*RUN_BLOCK.finditer(page), *FIGURE_SPAN.finditer(page)]
                      if m["name"] in RUNS.keys() | FIGURES.keys() and not (OUTPUTS / f"{m['name']}.txt").is_file()})
    if missing:
        return [f"{name} shows {', '.join(missing)}, never run: docs/outputs/ has no such file "
                f"(python docs/figures.py {' '.join(missing)})"]
    for match in RUN_BLOCK.finditer(page):
        if match["name"] not in RUNS:
            found.append(f"{name} marks run {match['name']}, which docs/figures.py does not run")
        elif match["body"] != stored(match["name"]):
            found.append(f"{name} block {match['name']} differs from docs/outputs/{match['name']}.txt")
    for match in FIGURE_SPAN.finditer(page):  # a figure can stand in several places: each must match
        if match["name"] not in FIGURES:
            found.append(f"{name} marks figure {match['name']}, which docs/figures.py does not run")
        elif match["value"] != stored(match["name"]).strip():
            found.append(f"{name} figure {match['name']} is {match['value']}, docs/outputs/{match['name']}.txt "
                         f"{stored(match['name']).strip()}")
    return found


def mismatches(pages: dict[str, str]) -> list[str]:
    """Every difference between the pages and the stored outputs, and every run or figure no page shows."""
    found = [problem for name, page in pages.items() for problem in page_mismatches(name, page)]
    shown = {m["name"] for page in pages.values() for m in RUN_BLOCK.finditer(page)}
    shown |= {m["name"] for page in pages.values() for m in FIGURE_SPAN.finditer(page)}
    found += [f"no page has a <!-- run: {name} --> block" for name in RUNS if name not in shown]
    found += [f"no page has a <!-- figure: {name} --> value" for name in FIGURES if name not in shown]
    return found


def regenerate(only: set[str] | None = None) -> None:
    unknown = (only or set()) - set(RUNS) - set(FIGURES)
    if unknown:
        raise SystemExit(f"no run or figure named {', '.join(sorted(unknown))}")
    run_command("llmscope next-token warm-up -q")  # the conversion cache, so that every load line reads it
    OUTPUTS.mkdir(exist_ok=True)
    blocks, figures = {}, {}
    for name, run in RUNS.items():
        if only is None or name in only:
            blocks[name] = block_text(run, run_command(run.command, run.env, merged=run.stderr))
            (OUTPUTS / f"{name}.txt").write_text(blocks[name])
            print(f"ran {name}", file=sys.stderr)
    for name, figure in FIGURES.items():
        if only is None or name in only:
            figures[name] = figure_text(figure, run_command(figure.command))
            (OUTPUTS / f"{name}.txt").write_text(figures[name] + "\n")
            print(f"ran {name}: {figures[name]}", file=sys.stderr)
    for path in page_paths():
        text = path.read_text()
        updated = apply(text, blocks, figures)
        if updated != text:
            path.write_text(updated)


def main() -> None:
    parser = argparse.ArgumentParser(description="Regenerate (or --check) the example outputs of README.md and "
                                     "docs/**/*.md from real runs.")
    parser.add_argument("--check", action="store_true",
                        help="compare README.md and docs/**/*.md with docs/outputs/ (runs nothing)")
    parser.add_argument("names", nargs="*", help="regenerate only these runs and figures")
    options = parser.parse_args()
    if options.check:
        problems = mismatches(read_pages())
        for problem in problems:
            print(problem, file=sys.stderr)
        raise SystemExit(1 if problems else 0)
    regenerate(set(options.names) or None)


if __name__ == "__main__":
    main()
