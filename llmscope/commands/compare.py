"""The compare command: where two models (or one model in two dtypes / quantizations, or a local model and a served
one) part on a text. It parses and checks options, loads both, then calls llmscope.inspection.comparison."""

from __future__ import annotations

from typing import Annotated

import typer

from llmscope.cli.app import app
from llmscope.cli.groups import EndpointOptions, Shared, grouped
from llmscope.cli.kit import (
    EXIT_CODES_HELP,
    ApiKeyOpt,
    HtmlOpt,
    ModelOpt,
    TimeoutOpt,
    command,
    example,
    html_target,
    load,
    read_text,
)
from llmscope.commands._endpoint import endpoint_settings
from llmscope.commands._text_input import FileOpt, TextArg


@app.command(epilog=EXIT_CODES_HELP)
@example("Hello world", "-m", "{model}", "--against-dtype", "float32")
@grouped(load=True, text=True)
def compare(
    text: TextArg = None,
    file: FileOpt = None,
    model: ModelOpt = None,
    against: Annotated[str | None, typer.Option(
        "--against", "-b", metavar="MODEL",
        help="Model B: hub id, folder, .gguf file or alias (default: model A again).",
        show_default=False)] = None,
    against_dtype: Annotated[str | None, typer.Option(
        "--against-dtype", metavar="DTYPE",
        help="Load B in this dtype (float32 | bfloat16 | float16), e.g. A in another precision.",
        show_default=False)] = None,
    against_quantize: Annotated[str | None, typer.Option(
        "--against-quantize", metavar="auto|none|int8|int4", help="Load B with this --quantize, e.g. none to "
        "measure what a GGUF's packed 4-bit weights cost against their exact dequantization.",
        show_default=False)] = None,
    worst: Annotated[int, typer.Option("--worst", metavar="N",
        help="Name the N positions where the models part most.")] = 10,
    next_token: Annotated[bool, typer.Option(
        "--next-token", help="Also the two top-k tables for the token after the text, side by side.")] = False,
    top_k: Annotated[int, typer.Option("--top-k", "-k", metavar="K", help="Rows of the --next-token tables.")] = 10,
    against_endpoint: Annotated[str | None, typer.Option(
        "--against-endpoint", metavar="URL", help="Model B is the one `llmscope serve` serves at URL (it must "
        "tokenize TEXT like model A).", show_default=False)] = None,
    api_key: ApiKeyOpt = None,
    html: HtmlOpt = None,
    timeout: TimeoutOpt = None,
    *,
    shared: Shared,
) -> None:
    """Where do two models part on TEXT? KL(A‖B) per token, top-1 / top-5 agreement, perplexity under each.

    Both models read the same tokens (they must tokenize TEXT identically). --against-dtype bfloat16 alone compares
    the model with itself in another precision.
    """
    with command(shared.output.quiet) as display:
        from llmscope.inspection.comparison import CompareSettings
        from llmscope.inspection.scoring import ScoreSettings

        settings = CompareSettings(
            score=ScoreSettings(**shared.text.fields()),
            against=against if against_endpoint is None else against_endpoint, against_dtype=against_dtype,
            against_quantize=against_quantize, worst=worst, next_token=next_token, top_k=top_k)
        remote = endpoint_settings(EndpointOptions(against_endpoint, api_key, timeout), None, None, {
            "--against": against is not None, "--against-dtype": against_dtype is not None,
            "--against-quantize": against_quantize is not None}, option="--against-endpoint")
        settings_a = shared.load.settings(model)
        settings_b = shared.load.settings(
            against if against is not None else model, dtype=against_dtype or shared.load.dtype,
            quantize=against_quantize if against_quantize is not None else shared.load.quantize)
        display.mode = shared.output.mode()
        source = read_text(text, file)
        html_path = html_target(html)
        from llmscope.inspection.comparison import compare_texts
        from llmscope.render import scoring as show
        from llmscope.render.html import save_html

        if remote is not None:
            from llmscope.client.compare import check_ready

            check_ready(remote)  # before model A loads: a server that cannot answer is found in a second
        model_a = load(display, settings_a)
        if remote is not None:
            from llmscope.client.compare import remote_chunks
            from llmscope.generation.prompts import vocabulary_rows

            model_b, chunks_b = remote_chunks(remote, source, settings.score, vocabulary_rows(model_a))
            result = compare_texts(model_a, model_b, source, settings, chunks_b)
            show.show_compare(display, model_a.info, result)
            save_html(display, html_path, "compare", model_a.info, result)
            return
        model_b = load(display, settings_b, fit_threads=False)  # torch's threads are per process: fitted with A
        if model_a.spec == model_b.spec and model_a.dtype == model_b.dtype and model_a.quantize == model_b.quantize:
            display.warning("A and B are the same model in the same dtype: expect KL 0")
        result = compare_texts(model_a, model_b, source, settings)
        show.show_compare(display, model_a.info, result)
        save_html(display, html_path, "compare", model_a.info, result)
