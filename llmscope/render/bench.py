"""Show `bench-cache` results: tables, a terminal chart and a matplotlib image for people; JSON and CSV for scripts;
a progress bar on stderr while it runs. It computes nothing beyond layout and never touches the model."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from rich.console import Group
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from llmscope.bench.results import CACHE, BenchResult, GrowthFit, LengthResult, ModeSummary
from llmscope.bench.timed_run import RunTiming
from llmscope.core.model_info import ModelInfo
from llmscope.core.stats import Stats
from llmscope.render.benchchart import MODE_LABELS, MODE_STYLES, seconds_text, text_chart
from llmscope.render.display import Display, human_bytes

CSV_FIELDS = ("mode", "new_tokens", "run", "seconds", "ttft_s", "decode_ms_per_token", "tokens_per_s",
              "peak_memory_bytes", "peak_over_start_bytes", "prompt_tokens")

# ---------------------------------------------------------------------------------------------- numbers


def mean_std_text(stats: Stats | None, scale: float = 1.0, unit: str = "s") -> str:
    if stats is None:
        return "-"
    if unit == "s":
        body = seconds_text(stats.mean * scale)
        return body if stats.std is None else f"{body} ± {seconds_text(stats.std * scale)}"
    body = f"{stats.mean * scale:.1f}"
    return body if stats.std is None else f"{body} ± {stats.std * scale:.1f}"


def ratio_text(value: float) -> str:
    return f"{value:.2f}x"


# ---------------------------------------------------------------------------------------------- progress


@contextlib.contextmanager
def progress(display: Display, total_tokens: int | None, depth: bool = False) -> Iterator[tuple[Any, Any]]:
    """(on_progress, on_run) callbacks: a Rich bar of generated tokens on a terminal, one line per run otherwise.

    Both stay silent under --quiet. The bar lives on stderr and disappears when done. total_tokens None (an
    adaptive run, whose length is not known ahead) gives a running count and the elapsed time instead of a bar.
    """
    if display.quiet:
        yield (lambda description, advance: None), (lambda timing: None)
        return

    def line(timing: RunTiming) -> Text:
        decode = (f", decode {timing.decode_ms_per_token:.1f} ms/token" if timing.decode_ms_per_token is not None
                  else "")
        where = f"{timing.prompt_tokens}-token prompt, " if depth else ""
        return Text(f"{where}{timing.new_tokens} tokens, {timing.mode} run {timing.run}: "
                    f"{seconds_text(timing.seconds)} "
                    f"(TTFT {seconds_text(timing.ttft_s)}{decode})", style="dim")

    if not display.err.is_terminal:
        yield (lambda description, advance: None), (lambda timing: display.err.print(line(timing)))
        return
    columns: tuple[Any, ...] = (
        (BarColumn(), MofNCompleteColumn(), TextColumn("tokens"), TimeElapsedColumn(), TextColumn("left"),
         TimeRemainingColumn()) if total_tokens is not None
        else (TextColumn("{task.completed:.0f} tokens"), TimeElapsedColumn()))
    bar = Progress(TextColumn("{task.description}"), *columns, console=display.err, transient=True)
    task = bar.add_task("starting", total=total_tokens)

    def on_progress(description: str, advance: int) -> None:
        if description:
            bar.update(task, description=description, advance=advance)
        elif advance:
            bar.advance(task, advance)

    with bar:
        yield on_progress, (lambda timing: bar.console.print(line(timing)))


# ---------------------------------------------------------------------------------------------- tables


def _header(result: BenchResult, weights: str | None = None) -> Text:
    if result.depths:
        points = ("prompts of " + ", ".join(str(n) for n in result.depths) + " tokens (the prompt repeated), "
                  f"{result.lengths[0]} new tokens each")
    elif result.sweep:
        points = "sweep of " + ", ".join(str(n) for n in result.lengths) + " new tokens"
    else:
        points = f"{result.prompt_tokens} prompt tokens, {result.lengths[0]} new tokens"
    chat = ", chat template" if result.chat_template_applied else ""
    threads = f", {result.threads} thread{'s' if result.threads != 1 else ''}" if result.device == "cpu" else ""
    held = f", weights {weights}" if weights else ""
    return Text(f"bench-cache: {result.model} on {result.device} ({result.dtype}{held}{threads}), {points}{chat}; "
                f"{repeat_text(result)}, greedy, modes interleaved"
                + ("" if result.cache_kind == "dynamic" else f"; KV cache: {result.cache_kind}"), style="bold")


def repeat_text(result: BenchResult) -> str:
    """How many pairs were timed and why they stopped."""
    warm = f" (+{result.warmup} warm-up of {result.warmup_tokens} tokens)" if result.warmup else ""
    if result.repeat is not None:
        return f"{result.repeat} timed run{'s' if result.repeat != 1 else ''} per mode{warm}"
    target = f"±{result.target_ci:.0%}" if result.target_ci is not None else "?"
    budget = f"{result.max_time_s:.0f} s" if result.max_time_s is not None else "?"
    return (f"pairs until the speed-up's 95% interval is within {target} ({result.min_pairs}+ pairs) or the "
            f"{budget} budget is spent{warm}")


def _ratio(uncached: float | None, cached: float | None) -> str:
    return ratio_text(uncached / cached) if uncached is not None and cached else ""


def mode_table(length: LengthResult) -> Table:
    """Metrics down, the two modes across, and how many times slower the run without the cache was."""
    cached, uncached = length.cache, length.no_cache
    table = Table(show_edge=False, pad_edge=False)
    table.add_column(f"{length.new_tokens} new tokens")
    table.add_column(MODE_LABELS[CACHE], justify="right", style=MODE_STYLES[CACHE])
    table.add_column(MODE_LABELS["no-cache"], justify="right", style=MODE_STYLES["no-cache"])
    table.add_column("without / with", justify="right")

    def cell(summary: ModeSummary | None, text: Any) -> str:
        return "-" if summary is None else text(summary)

    def value(summary: ModeSummary | None, get: Any) -> float | None:
        return None if summary is None else get(summary)

    rows = [
        ("runs", lambda s: str(s.runs), None),
        ("time (mean ± std)", lambda s: mean_std_text(s.seconds), lambda s: s.seconds.mean),
        ("min", lambda s: seconds_text(s.seconds.min), lambda s: s.seconds.min),
        ("median", lambda s: seconds_text(s.seconds.median), lambda s: s.seconds.median),
        ("tokens/s", lambda s: f"{s.tokens_per_s:.1f}", None),
        ("time to first token", lambda s: mean_std_text(s.ttft_s), lambda s: s.ttft_s.mean),
        ("decode ms/token", lambda s: mean_std_text(s.decode_ms_per_token, unit="ms"),
         lambda s: s.decode_ms_per_token.mean if s.decode_ms_per_token else None),
        ("peak memory", lambda s: human_bytes(s.peak_memory_bytes), None),
        ("  added during a run", lambda s: "+" + human_bytes(s.peak_over_start_bytes), None),
    ]
    for name, text, number in rows:
        ratio = _ratio(value(uncached, number), value(cached, number)) if number else ""
        table.add_row(name, cell(cached, text), cell(uncached, text), ratio)
    return table


def check_text(length: LengthResult) -> Text:
    check = length.check
    if check is None:
        return Text("output check: no complete pair of runs to compare", style="yellow")
    if check.identical:
        return Text.assemble(("✓ ", "bold green"), f"identical token ids with and without the cache "
                             f"({check.pairs_compared} pair{'s' if check.pairs_compared != 1 else ''} × "
                             f"{check.tokens_compared} tokens)")
    return Text.assemble(("✗ ", "bold red"), difference_text(length))


def difference_text(length: LengthResult) -> str:
    check = length.check
    assert check is not None
    return (f"the token ids differ with and without the cache at new token {check.first_difference} (run "
            f"{check.run}, {length.new_tokens} tokens): cache {check.cache_token_id}, no cache "
            f"{check.no_cache_token_id}")


STOP_WORDS = {"converged": "the interval reached its target", "time budget": "the time budget ran out",
              "pair limit": "the pair limit was reached", "interrupted": "interrupted", "repeat": "--repeat"}


def speedup_text(length: LengthResult) -> Text:
    if length.speedup is None:
        return Text("speed-up: no complete pair of runs", style="yellow")
    found = length.speedup
    pairs, interval = found.pairs, found.interval
    spread = (f"mean {ratio_text(pairs.mean)}, 95% interval {ratio_text(interval.low)}–{ratio_text(interval.high)} "
              f"(±{interval.relative_half_width:.1%})" if interval is not None else ratio_text(pairs.mean))
    text = Text.assemble("speed-up from the cache: ", (ratio_text(found.of_means), "bold"),
                         f" (no-cache time / cache time); {pairs.n} interleaved pair{'s' if pairs.n != 1 else ''}: "
                         f"{spread}, range {ratio_text(pairs.min)}–{ratio_text(pairs.max)}; stopped: "
                         f"{STOP_WORDS.get(length.stop_reason, length.stop_reason)}")
    return text


def notes_text(length: LengthResult) -> Any:
    """The noise warnings of one point (speed-up interval, per-mode spread), each on its own line, or None."""
    notes = [note for note in (length.speedup.note if length.speedup else None,
                               length.cache.note if length.cache else None,
                               length.no_cache.note if length.no_cache else None, length.ttft_note) if note]
    return warning_lines(notes)


def warning_lines(notes: list[str]) -> Any:
    """Each note after a ⚠, wrapping under its own text rather than back to column 0; None without notes."""
    if not notes:
        return None
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True, style="yellow")
    grid.add_column(overflow="fold", style="yellow")
    for note in notes:
        grid.add_row("⚠", note)
    return grid


TTFT_GAP_WORDS = ("noise: time to first token differs between the modes though both run the same prefill: the "
                  "machine (other processes), not the cache")


def series_notes(result: BenchResult) -> Any:
    """The noise warnings of a sweep or depth series, each said once with the points it applies to."""
    where: dict[str, list[str]] = {}
    for length in result.results:
        point = f"{length.prompt_tokens}" if result.depths else f"{length.new_tokens}"
        for note in (length.speedup.note if length.speedup else None, length.cache.note if length.cache else None,
                     length.no_cache.note if length.no_cache else None, length.ttft_note and TTFT_GAP_WORDS):
            if note:
                where.setdefault(note, []).append(point)
    if not where:
        return None
    unit = "prompt tokens" if result.depths else "new tokens"
    return warning_lines([("every point" if len(points) == len(result.results) else f"at {', '.join(points)} {unit}")
                          + f": {note}" for note, points in where.items()])


def kv_text(length: LengthResult) -> Text:
    kv = length.kv_cache
    if kv is None:
        return Text("KV cache: no cached run finished")
    measured = (f"{human_bytes(kv.measured_bytes)} measured in the returned {kv.cache_class}"
                if kv.measured_bytes is not None else "not readable from the returned cache")
    return Text(f"KV cache held at the end: {kv.tokens} positions, {measured}; formula "
                f"{human_bytes(kv.formula_bytes)} ({kv.bytes_per_token:,} bytes per token at "
                f"{kv.bytes_per_value} bytes per value" + (f"; {kv.note})" if kv.note else ")"))


def show_bench(display: Display, info: ModelInfo, result: BenchResult) -> None:
    """bench-cache's one render entry: the document (--json / --jsonl), one CSV row per timed run (--csv), or the
    people's view: one table per length (or one sweep/depth table, growth fits and a chart)."""
    from llmscope.core.command_settings import OutputMode

    if display.mode == OutputMode.CSV:
        display.csv(list(CSV_FIELDS), [csv_row(run) for run in result.runs])
        return
    if not display.for_people:
        display.document("bench-cache", info, result)
        return

    display.result(_header(result, info.weights))
    if not result.results:
        display.result(Text("no run finished", style="yellow"))
        return
    width = max(20, min(60, display.out.width - 12))
    if result.sweep or result.depths:
        display.result(depth_table(result, display.out.width) if result.depths else sweep_table(result))
        display.result(sweep_check_text(result))
        notes = series_notes(result)
        if notes is not None:
            display.result(notes)
        display.result(growth_text(result))
        title = ("mean decode ms/token against prompt tokens" if result.depths
                 else "mean generate time against new tokens")
        display.result(Text(f"\n{title}", style="bold"))
        display.result(text_chart(result, width=width))
    else:
        length = result.results[0]
        display.result(mode_table(length))
        display.result(speedup_text(length))
        notes = notes_text(length)
        if notes is not None:
            display.result(notes)
        display.result(kv_text(length))
        display.result(check_text(length))
    display.status(f"peak memory: {result.memory_measure}; process peak RSS (getrusage ru_maxrss) "
                   f"{human_bytes(result.process_peak_rss_bytes)}")


BUSY_PERCENT = 25.0


def warn_if_busy(display: Display, busy_percent: float | None, device: str, threads: int | None = None) -> None:
    """Say so when other processes keep the CPUs busy: the timings will be noisy (threads: what the runs use)."""
    if busy_percent is not None and busy_percent >= BUSY_PERCENT and device == "cpu":
        advice = ("; when torch's threads compete for cores they slow down sharply (try --threads 1)" if threads is None
                  else f"; timing on {threads} torch thread{'s' if threads != 1 else ''}, the cores they leave free "
                  "(--threads N to choose)")
        display.warning(f"other processes kept the CPUs {busy_percent:.0f}% busy just before timing: expect noisy "
                        f"times{advice}")


def warn_differences(display: Display, result: BenchResult, invariant: bool = False) -> None:
    """One warning per length whose token ids differ, saying whether the loader's invariant numerics were on."""
    for length in result.results:
        if length.check is not None and not length.check.identical:
            display.warning(difference_text(length) + (
                "; the invariant numerics should make the cache change nothing: `llmscope check-invariance` shows "
                "which quantity differs (please report it)" if invariant else
                "; this model runs without invariant numerics (not on the CPU): one row (cache) and the whole "
                "sequence (no cache) are computed by different kernels, which can flip a near tie"))


def sweep_table(result: BenchResult) -> Table:
    table = Table(show_edge=False, pad_edge=False)
    for name in ("new\ntokens", "with cache\n(mean ± std)", "without cache\n(mean ± std)", "speed-\nup",
                 "cache\nms/token", "no-cache\nms/token"):
        table.add_column(name, justify="right", no_wrap=True)
    for length in result.results:
        table.add_row(
            str(length.new_tokens),
            Text(mean_std_text(length.cache.seconds) if length.cache else "-", style=MODE_STYLES[CACHE]),
            Text(mean_std_text(length.no_cache.seconds) if length.no_cache else "-", style=MODE_STYLES["no-cache"]),
            ratio_text(length.speedup.of_means) if length.speedup else "-",
            _decode_mean(length.cache), _decode_mean(length.no_cache))
    return table


def _decode_mean(summary: ModeSummary | None) -> str:
    return "-" if summary is None or summary.decode_ms_per_token is None else f"{summary.decode_ms_per_token.mean:.1f}"


def sweep_check_text(result: BenchResult) -> Text:
    """One line for the identical-output check across every length of a sweep."""
    checked = [length for length in result.results if length.check is not None]
    differing = [length for length in checked if not length.check.identical]  # type: ignore[union-attr]
    if not checked:
        return Text("output check: no complete pair of runs to compare", style="yellow")
    if differing:
        return Text.assemble(("✗ ", "bold red"), "; ".join(difference_text(length) for length in differing))
    pairs = sum(length.check.pairs_compared for length in checked)  # type: ignore[union-attr]
    return Text.assemble(("✓ ", "bold green"), f"identical token ids with and without the cache at every length "
                         f"({pairs} pairs)")


QUANTITY_WORDS = {"seconds": "generate time", "ttft_s": "time to first token", "decode_ms_per_token": "decode ms/token"}


def growth_text(result: BenchResult) -> Any:
    """The growth fits, one per line under their quantity; a line too long for the screen wraps under itself,
    never back to column 0."""
    if not result.growth:
        return Text("growth: fewer than two points finished, no fit", style="yellow")
    against = "prompt tokens" if result.depths else "new tokens"
    parts: list[Any] = [Text(f"growth with {against} (least-squares fit of log time on log length):")]
    for quantity in ("seconds", "ttft_s", "decode_ms_per_token"):
        fits = [growth for growth in result.growth if growth.quantity == quantity]
        grid = Table.grid(padding=(0, 1))  # one per quantity: its fits start right after its own label
        parts.append(grid)
        for index, growth in enumerate(fits):
            line = Text(f"{MODE_LABELS[growth.mode]} ∝ n^{growth.fit.exponent:.2f}", style=MODE_STYLES[growth.mode])
            line.append(f" (R² {growth.fit.r_squared:.3f})")
            grid.add_row(f"  {QUANTITY_WORDS[quantity]}:" if index == 0 else "", line)
        notes = {growth.note for growth in fits if growth.note}
        both = len(fits) > 1 and len(notes) == 1 and all(growth.note for growth in fits)
        for growth in fits[:1] if both else fits:
            if growth.note:
                who = "both" if both else MODE_LABELS[growth.mode]
                grid.add_row("", Text(f"⚠ {who}: {growth.note}", style="yellow"))
    return Group(*(part for part in parts if not isinstance(part, Table) or part.row_count))


def fit_for(result: BenchResult, mode: str, quantity: str) -> GrowthFit | None:
    return next((g for g in result.growth if g.mode == mode and g.quantity == quantity), None)


DEPTH_DROPS = ("pairs", "decode\nratio")  # columns left out, in this order, when the table is wider than the screen


def depth_table(result: BenchResult, width: int = 80) -> Table:
    """One row per prompt length: prefill and decode with and without the cache, and the whole-run speed-up.
    No figure is ever cut: when the columns are wider than `width`, the pair count (said in the caption) and then
    the decode ratio (no-cache over cache ms/token, both shown) are left out."""
    columns: dict[str, list[Text]] = {name: [] for name in (
        "prompt\ntokens", "TTFT cache\n(mean)", "TTFT no\ncache", "cache\nms/token", "no-cache\nms/token",
        "decode\nratio", "speed-\nup", "pairs")}
    for length in result.results:
        cached, uncached = length.cache, length.no_cache
        decode_ratio = (_ratio(uncached.decode_ms_per_token.mean, cached.decode_ms_per_token.mean)
                        if cached and uncached and cached.decode_ms_per_token and uncached.decode_ms_per_token else "-")
        cells = (Text(str(length.prompt_tokens)),
                 Text(seconds_text(cached.ttft_s.mean) if cached else "-", style=MODE_STYLES[CACHE]),
                 Text(seconds_text(uncached.ttft_s.mean) if uncached else "-", style=MODE_STYLES["no-cache"]),
                 Text(_decode_mean(cached), style=MODE_STYLES[CACHE]),
                 Text(_decode_mean(uncached), style=MODE_STYLES["no-cache"]), Text(decode_ratio or "-"),
                 Text(ratio_text(length.speedup.of_means) if length.speedup else "-"),
                 Text(str(length.speedup.pairs.n) if length.speedup else "0"))
        for name, cell in zip(columns, cells):
            columns[name].append(cell)

    def needed() -> int:  # each column as wide as its widest line; " │ " between columns
        return sum(max(len(line) for text in (Text(name), *cells) for line in text.plain.split("\n"))
                   for name, cells in columns.items()) + 3 * (len(columns) - 1)

    dropped = [columns.pop(name) and name for name in DEPTH_DROPS if needed() > width]
    pairs = sorted({length.speedup.pairs.n if length.speedup else 0 for length in result.results})
    table = Table(show_edge=False, pad_edge=False, caption_justify="left", caption=(
        f"pairs per prompt length: {', '.join(map(str, pairs))}" if "pairs" in dropped else None))
    for name in columns:
        table.add_column(name, justify="right", no_wrap=True)
    for row in zip(*columns.values()):
        table.add_row(*row)
    return table


# ---------------------------------------------------------------------------------------------- scripts


def csv_row(run: Any) -> list[Any]:
    """One timed run as a CSV row, in CSV_FIELDS order."""
    return [run.mode, run.new_tokens, run.run, f"{run.seconds:.6f}", f"{run.ttft_s:.6f}",
            "" if run.decode_ms_per_token is None else f"{run.decode_ms_per_token:.4f}",
            f"{run.tokens_per_s:.4f}", "" if run.peak_memory_bytes is None else run.peak_memory_bytes,
            "" if run.peak_over_start_bytes is None else run.peak_over_start_bytes, run.prompt_tokens]
