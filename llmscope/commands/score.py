"""The score command: how likely a text (or each --batch text) is under a model, locally or through --endpoint.
It parses and checks options, then calls llmscope.inspection.scoring and the renderer; it computes nothing itself."""

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
from llmscope.commands._endpoint import endpoint_settings
from llmscope.commands._text_input import FileOpt, TextArg
from llmscope.core.errors import UsageError


@app.command(epilog=EXIT_CODES_HELP)
@example("Hello world", "-m", "{model}")
@grouped(load=True, text=True, batch=True, endpoint=True)
def score(
    text: TextArg = None,
    file: FileOpt = None,
    model: ModelOpt = None,
    top_k: Annotated[int, typer.Option(
        "--top-k", "-k", metavar="K", help="With --json: each token's K most likely alternatives (top_logprobs).")] = 0,
    worst: Annotated[int, typer.Option("--worst", metavar="N", help="Name the N most surprising tokens.")] = 5,
    colour_by: Annotated[str, typer.Option(
        "--colour-by", metavar="probability|entropy",
        help="Colour tokens by 'probability' or the distribution's 'entropy'.")] = "probability",
    table: Annotated[bool, typer.Option("--table", help="A table of every scored token instead of the text.")] = False,
    html: HtmlOpt = None,
    *,
    shared: Shared,
) -> None:
    """How likely is TEXT under the model? Per-token probability, rank and top choice; perplexity, bits per byte.

    Teacher-forced: one forward pass reads the text (a sliding window when it is longer than the context). The
    first token is scored after BOS when the tokenizer adds one; otherwise it has no prediction and is skipped.
    """
    with command(shared.output.quiet) as display:
        from llmscope.inspection.scoring import ScoreSettings

        if colour_by not in ("probability", "entropy"):
            raise UsageError(f"--colour-by takes 'probability' or 'entropy' (got {colour_by!r})")
        settings = ScoreSettings(**shared.text.fields(), top_k=top_k, worst=worst)
        batch_settings = shared.batch.settings(8)
        models = shared.load.settings(model)
        display.mode = shared.output.mode(batch=batch_settings is not None)
        if batch_settings is not None and (text is not None or file is not None):
            raise UsageError("give either TEXT, --file or --batch, not several")
        source = read_text(text, file) if batch_settings is None else None
        html_path = html_target(html)
        remote = endpoint_settings(shared.endpoint, model, None, {"--html": html_path is not None}, shared.load,
                                   display)
        items = read_batch(batch_settings)
        if remote is not None:
            from llmscope.commands._endpoint import run_score

            run_score(display, remote, source, settings, colour_by, table, items)
            return
        from llmscope.inspection.scoring import score_text
        from llmscope.render import scoring as show
        from llmscope.render.html import save_html

        loaded = load(display, models)
        if items is None:
            result = score_text(loaded, source, settings)
            show.show_score(display, loaded.info, result, colour_by, table)
            save_html(display, html_path, "score", loaded.info, result)
            return
        from llmscope.cli.batch import run_batch

        outcomes = run_batch(items, 1, prepare=lambda item: require_text(item.prompt, "text"),
                             run_chunk=lambda texts: [score_text(loaded, t, settings) for t in texts])

        def write(result: Any, keys: dict[str, Any]) -> None:
            show.show_score(display, loaded.info, result, **keys)
            save_html(display, html_path, "score", loaded.info, result, keys)

        write_batch(display, items, outcomes, write)
