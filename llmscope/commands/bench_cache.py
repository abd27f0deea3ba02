"""Commands that measure: bench-cache (the KV cache), score (how likely a text is) and compare (two models).
They parse and check options, then call the library and the renderer; they compute nothing themselves."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from llmscope.cli.app import app
from llmscope.cli.groups import EndpointOptions, Shared, grouped
from llmscope.cli.kit import (
    EXIT_CODES_HELP,
    ApiKeyOpt,
    ChatOpt,
    HtmlOpt,
    ModelOpt,
    SystemOpt,
    TimeoutOpt,
    command,
    example,
    html_target,
    interrupted_exit,
    load,
    read_batch,
    read_prompt,
    read_text,
    require_text,
    write_batch,
)
from llmscope.commands._endpoint import endpoint_settings
from llmscope.core.command_settings import PromptSettings
from llmscope.core.errors import UsageError

# ------------------------------------------------------------------------------------ bench-cache


@app.command("bench-cache", epilog=EXIT_CODES_HELP)
@example("Hello", "-m", "{model}", "-n", "3", "--repeat", "2", "--warmup", "0")
@grouped(load=True)
def bench_cache(
    prompt: Annotated[str | None, typer.Argument(
        help="The prompt; '-' reads it from stdin. Default: the book's 'Write a very long email apologizing to "
        "Sarah...'.", show_default=False)] = None,
    model: ModelOpt = None,
    max_new_tokens: Annotated[int | None, typer.Option(
        "--max-new-tokens", "-n", help="New tokens per run, exactly (EOS is suppressed).  [default: 100]",
        show_default=False)] = None,
    warmup: Annotated[int, typer.Option(
        "--warmup", help="Untimed runs of each mode before timing starts (at the first length, at most 16 tokens; "
        "the full length with --static-cache).")] = 1,
    repeat: Annotated[int | None, typer.Option(
        "--repeat", "-r", help="Timed runs per mode (and per length), a fixed count.  [default: until the speed-up's "
        "95% interval is within ±5% (3+ pairs) or --max-time; 3 with --sweep or --depth]", show_default=False)] = None,
    max_time: Annotated[float | None, typer.Option(
        "--max-time", metavar="SECONDS", help="Time budget for the warm-up and timed runs: repeat pairs until the "
        "speed-up's 95% interval is within ±5% (3+ pairs) or this runs out.  [default: 80]",
        show_default=False)] = None,
    sweep: Annotated[str | None, typer.Option(
        "--sweep", help="Time both modes at each of these new-token counts, e.g. 16,32,64,128,256, and fit how "
        "time grows.", show_default=False)] = None,
    depth: Annotated[str | None, typer.Option(
        "--depth", help="Time prefill (time to first token) and decode at each of these prompt lengths, e.g. "
        "128,512,2048 (the prompt's tokens repeated), with and without the cache, and fit how they grow "
        "(llama-bench's -p/-d).  [default new tokens: 16]", show_default=False)] = None,
    plot: Annotated[str | None, typer.Option(
        "--plot", metavar="FILE.png|svg", help="With --sweep or --depth: also write the chart as an image (needs "
        "matplotlib: pip install 'llmscope[plot]').", show_default=False)] = None,
    csv_output: Annotated[bool, typer.Option("--csv", help="One CSV row per timed run on stdout.")] = False,
    static_cache: Annotated[bool, typer.Option(
        "--static-cache", help="Time the cached mode with a preallocated static KV cache.")] = False,
    compile_model: Annotated[bool, typer.Option(
        "--compile", help="Also torch.compile the cached mode's decode step (with a static cache; compiled during "
        "the warm-up).")] = False,
    chat: ChatOpt = None,
    system: SystemOpt = None,
    *,
    shared: Shared,
) -> None:
    """Time greedy generation with and without the KV cache: speed-up, TTFT/decode split, cache size, same output.

    Raw prompt by default (no chat template: --chat), like the book's model.generate call. The two modes alternate
    run by run. Ctrl-C stops and shows the runs that finished.
    """
    with command(shared.output.quiet) as display:
        display.mode = shared.output.mode(csv=csv_output)
        from dataclasses import replace
        from pathlib import Path

        from llmscope.bench import benchmark
        from llmscope.render import bench as show
        from llmscope.render import benchchart

        models = shared.load.settings(model)
        settings = benchmark.BenchSettings(max_new_tokens=max_new_tokens, sweep=sweep, depth=depth, warmup=warmup,
                                           repeat=repeat, max_time=max_time, threads=models.threads,
                                           static_cache=static_cache, compile=compile_model)
        plot_path = Path(plot) if plot is not None else None
        if plot_path is not None:
            if sweep is None and depth is None:
                raise UsageError("--plot draws the --sweep or --depth chart",
                                 hint="add --sweep 16,32,64 or --depth 128,512,2048 (for example)")
            benchchart.check_plot_path(plot_path)
            benchchart.require_matplotlib()
        text = read_prompt(prompt) if prompt is not None else benchmark.DEFAULT_PROMPT
        loaded = load(display, replace(models, threads=None), fit_threads=False)  # the threads are set per run
        from llmscope.loading.cputhreads import choose_threads

        busy = benchmark.busy_cpu_percent()  # like every command: the cores other processes leave free
        threads = choose_threads(models.threads, busy).threads if loaded.device == "cpu" else models.threads
        show.warn_if_busy(display, busy, loaded.device, threads)
        with show.progress(display, settings.planned_tokens(), depth is not None) as (on_progress, on_run):
            result = benchmark.bench_cache(
                loaded, text, settings.lengths, warmup=warmup, repeat=settings.runs,
                chat=PromptSettings(chat=chat, system=system).applies_template, system=system,
                sweep=sweep is not None, threads=threads, busy_percent=busy, on_progress=on_progress, on_run=on_run,
                static_cache=static_cache, compile=compile_model, depths=settings.depths,
                max_time=settings.time_budget)
        if result.interrupted:
            display.warning(f"interrupted: showing the {len(result.runs)} timed run(s) that finished")
        show.show_bench(display, loaded.info, result)
        show.warn_differences(display, result, invariant=loaded.invariant)
        if result.budget_note:
            display.warning(result.budget_note)
        if plot_path is not None and result.results:
            benchchart.write_plot(result, plot_path)
            display.status(f"wrote {plot_path}")
        if result.interrupted:
            raise interrupted_exit()


# ------------------------------------------------------------------------------------ score and compare

TextArg = Annotated[str | None, typer.Argument(
    help="The text; '-' reads it from stdin, byte for byte (a final newline is kept: echo -n leaves it out).",
    show_default=False)]
FileOpt = Annotated[str | None, typer.Option(
    "--file", "-f", help="Read the text from this file (UTF-8), byte for byte: its final newline is scored too.",
    show_default=False)]


@app.command(epilog=EXIT_CODES_HELP)
@example("Hello world", "-m", "{model}")
@grouped(load=True, text=True, batch=True, endpoint=True)
def score(
    text: TextArg = None,
    file: FileOpt = None,
    model: ModelOpt = None,
    top_k: Annotated[int, typer.Option(
        "--top-k", "-k", help="With --json: each token's K most likely alternatives (top_logprobs).")] = 0,
    worst: Annotated[int, typer.Option("--worst", help="Name the N most surprising tokens.")] = 5,
    colour_by: Annotated[str, typer.Option(
        "--colour-by", help="Colour tokens by 'probability' or the distribution's 'entropy'.")] = "probability",
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
        html_path = html_target(html, batch_settings is not None)
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


@app.command(epilog=EXIT_CODES_HELP)
@example("Hello world", "-m", "{model}", "--against-dtype", "float32")
@grouped(load=True, text=True)
def compare(
    text: TextArg = None,
    file: FileOpt = None,
    model: ModelOpt = None,
    against: Annotated[str | None, typer.Option(
        "--against", "-b", help="Model B: hub id, folder, .gguf file or alias (default: model A again).",
        show_default=False)] = None,
    against_dtype: Annotated[str | None, typer.Option(
        "--against-dtype", help="Load B in this dtype (float32 | bfloat16 | float16), e.g. A in another precision.",
        show_default=False)] = None,
    against_quantize: Annotated[str | None, typer.Option(
        "--against-quantize", metavar="auto|none|int8|int4", help="Load B with this --quantize, e.g. none to "
        "measure what a GGUF's packed 4-bit weights cost against their exact dequantization.",
        show_default=False)] = None,
    worst: Annotated[int, typer.Option("--worst", help="Name the N positions where the models part most.")] = 10,
    next_token: Annotated[bool, typer.Option(
        "--next-token", help="Also the two top-k tables for the token after the text, side by side.")] = False,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Rows of the --next-token tables.")] = 10,
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
            "--against-quantize": against_quantize is not None})
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
