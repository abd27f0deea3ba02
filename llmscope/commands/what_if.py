"""The what-if command: change a model's attention the way "Recent improvements to the Transformer architecture"
describes and measure quality, memory and speed against the unchanged model. It parses and checks options (every
--variant before any load), then calls llmscope.whatif and the renderer; it computes nothing itself."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from llmscope.cli.app import app
from llmscope.cli.groups import Shared, grouped
from llmscope.cli.kit import (
    EXIT_CODES_HELP,
    HtmlOpt,
    ModelOpt,
    command,
    example,
    html_target,
    load,
    read_batch,
    read_text,
    require_text,
    write_batch,
)
from llmscope.commands._text_input import FileOpt, TextArg
from llmscope.core.errors import UsageError
from llmscope.core.output_files import PLOT_FILE
from llmscope.whatif.results import DEFAULT_PASSKEY_TOKENS
from llmscope.whatif.variants import GRAMMAR_HELP


def _depths(values: list[str] | None) -> tuple[float, ...]:
    """--passkey-depth, repeated or a comma list, as fractions."""
    depths: list[float] = []
    for value in values or ():
        for piece in value.split(","):
            try:
                depths.append(float(piece.strip()))
            except ValueError:
                raise UsageError(f"--passkey-depth takes fractions from 0 to 1 (got {piece.strip()!r})") from None
    return tuple(dict.fromkeys(depths))


@app.command(name="what-if", epilog=EXIT_CODES_HELP)
@example("The capital of France is Paris. The capital of Italy is Rome.", "-m", "{model}", "--variant", "window=4",
         "--variant", "kv-cache=int4", "-n", "4")
@grouped(load=True, batch=True)
def what_if(
    text: TextArg = None,
    file: FileOpt = None,
    model: ModelOpt = None,
    variant: Annotated[list[str] | None, typer.Option(
        "--variant", metavar="SPEC", help=f"A variant to measure (repeatable). {GRAMMAR_HELP} Without "
        "--variant: a preset sweep of all three kinds.", show_default=False)] = None,
    new_tokens: Annotated[int, typer.Option(
        "--new-tokens", "-n", help="Greedy tokens generated after the text with each variant's own cache (its "
        "evictions, narrow codes, pooled heads): the measured memory and speed. 0: quality only.")] = 32,
    context: Annotated[int | None, typer.Option(
        "--context", metavar="N", help="Also give each variant's KV-cache bytes at N tokens (default: the "
        "model's context length).", show_default=False)] = None,
    passkey_depth: Annotated[list[str] | None, typer.Option(
        "--passkey-depth", metavar="D", help="Pass-key probe: a random 5-digit key at depth D (0 = start, 1 = end) "
        "of filler text; does each variant still say it greedily? Repeat or give a comma list, e.g. 0.1,0.5,0.9.",
        show_default=False)] = None,
    passkey_tokens: Annotated[int, typer.Option(
        "--passkey-tokens", metavar="N", help="The pass-key probe's length in tokens (at most the model's context "
        "less 8).")] = DEFAULT_PASSKEY_TOKENS,
    max_tokens: Annotated[int | None, typer.Option(
        "--max-tokens", help="Read at most this many tokens of the text.", show_default=False)] = None,
    plot: Annotated[str | None, typer.Option(
        "--plot", metavar="FILE", help="Also write perplexity and KV bytes against window size, KV groups and code "
        "bits, and KL along the text per variant (.png or .svg).", show_default=False), PLOT_FILE] = None,
    html: HtmlOpt = None,
    *,
    shared: Shared,
) -> None:
    """What if the attention changed? Sparse patterns, fewer KV heads, a narrower KV cache, measured on TEXT.

    Each variant runs in every attention layer against the unchanged model on the same tokens: perplexity,
    KL(full ‖ variant) per token, top-1 agreement; the KV-cache bytes from the same formula as `architecture`; and,
    with the variant really applied while -n tokens are generated (keys evicted, codes stored, heads pooled), the
    cache's measured bytes, the peak memory and the decode speed. Layers a variant cannot change (linear attention,
    a latent cache for kv-heads) are named on stderr.
    """
    with command(shared.output.quiet) as display:
        from llmscope.whatif.results import WhatIfSettings
        from llmscope.whatif.variants import parse_variants

        settings = WhatIfSettings(variants=parse_variants(variant), new_tokens=new_tokens, context=context,
                                  passkey_depths=_depths(passkey_depth), passkey_tokens=passkey_tokens,
                                  max_tokens=max_tokens)
        batch_settings = shared.batch.settings(8)
        models = shared.load.settings(model)
        display.mode = shared.output.mode(batch=batch_settings is not None)
        if batch_settings is not None and (text is not None or file is not None):
            raise UsageError("give either TEXT, --file or --batch, not several")
        if plot is not None and batch_settings is not None:
            raise UsageError("--plot is for one text at a time", hint="drop --plot with --batch")
        source = read_text(text, file) if batch_settings is None else None
        if html is not None and batch_settings is not None:
            raise UsageError("--html is for one text at a time", hint="drop --html with --batch")
        html_path = html_target(html)
        items = read_batch(batch_settings)
        from llmscope.render import whatif as show
        from llmscope.render.html import save_html
        from llmscope.whatif.experiment import what_if as run

        loaded = load(display, models)
        if items is None:
            with display.spinner("measuring the unchanged model") as spinner:
                def progress(done: int, total: int, name: str) -> None:
                    message = f"measuring {name} ({done + 1} of {total})"
                    if spinner is not None:
                        spinner.update(message)
                    elif done:
                        display.status(message)

                result = run(loaded, source or "", settings, progress)
            show.show_what_if(display, loaded.info, result, plot=plot)
            save_html(display, html_path, "what-if", loaded.info, result)
            return
        from llmscope.cli.batch import run_batch

        outcomes = run_batch(items, 1, prepare=lambda item: require_text(item.prompt, "text"),
                             run_chunk=lambda texts: [run(loaded, t, settings) for t in texts])

        def write(result: Any, keys: dict[str, Any]) -> None:
            show.show_what_if(display, loaded.info, result, **keys)
            save_html(display, html_path, "what-if", loaded.info, result, keys)

        write_batch(display, items, outcomes, write)
