"""The bench-cache command: greedy generation timed with and without the KV cache (one length, --sweep or --depth),
with an optional chart. It parses and checks options, then calls llmscope.bench and the renderer; no timing here."""

from __future__ import annotations

from typing import Annotated

import typer

from llmscope.cli.app import app
from llmscope.cli.groups import Shared, grouped
from llmscope.cli.kit import (
    EXIT_CODES_HELP,
    ChatOpt,
    ModelOpt,
    SystemOpt,
    command,
    example,
    interrupted_exit,
    load,
    read_prompt,
)
from llmscope.core.command_settings import PromptSettings
from llmscope.core.errors import UsageError
from llmscope.core.output_files import PLOT_FILE


@app.command("bench-cache", epilog=EXIT_CODES_HELP)
@example("Hello", "-m", "{model}", "-n", "3", "--repeat", "2", "--warmup", "0")
@grouped(load=True)
def bench_cache(
    prompt: Annotated[str | None, typer.Argument(
        help="The prompt; '-' reads it from stdin. Default: the book's 'Write a very long email apologizing to "
        "Sarah...'.", show_default=False)] = None,
    model: ModelOpt = None,
    max_new_tokens: Annotated[int | None, typer.Option(
        "--max-new-tokens", "-n", metavar="N", help="New tokens per run, exactly (EOS is suppressed).  [default: 100]",
        show_default=False)] = None,
    warmup: Annotated[int, typer.Option(
        "--warmup", metavar="N",
        help="Untimed runs of each mode before timing starts (at the first length, at most 16 tokens; "
        "the full length with --static-cache).")] = 1,
    repeat: Annotated[int | None, typer.Option(
        "--repeat", "-r", metavar="N",
        help="Timed runs per mode (and per length), a fixed count.  [default: until the speed-up's "
        "95% interval is within ±5% (3+ pairs) or --max-time; 3 with --sweep or --depth]", show_default=False)] = None,
    max_time: Annotated[float | None, typer.Option(
        "--max-time", metavar="SECONDS", help="Time budget for the warm-up and timed runs: repeat pairs until the "
        "speed-up's 95% interval is within ±5% (3+ pairs) or this runs out.  [default: 80]",
        show_default=False)] = None,
    sweep: Annotated[str | None, typer.Option(
        "--sweep", metavar="N,N,...",
        help="Time both modes at each of these new-token counts, e.g. 16,32,64,128,256, and fit how "
        "time grows.", show_default=False)] = None,
    depth: Annotated[str | None, typer.Option(
        "--depth", metavar="N,N,...",
        help="Time prefill (time to first token) and decode at each of these prompt lengths, e.g. "
        "128,512,2048 (the prompt's tokens repeated), with and without the cache, and fit how they grow "
        "(llama-bench's -p/-d).  [default new tokens: 16]", show_default=False)] = None,
    plot: Annotated[str | None, typer.Option(
        "--plot", metavar="FILE.png|svg", help="With --sweep or --depth: also write the chart as an image (needs "
        "matplotlib: pip install 'llmscope[plot]').", show_default=False), PLOT_FILE] = None,
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
