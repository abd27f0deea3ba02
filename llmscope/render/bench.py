"""Show `bench-cache` results: tables, a terminal chart and a matplotlib image for people; JSON and CSV for scripts;
a progress bar on stderr while it runs. It computes nothing beyond layout and never touches the model."""

from __future__ import annotations

import contextlib
import csv
import itertools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from llmscope.benchmark import CACHE, BenchResult, LengthResult, ModeSummary, RunTiming, Stats
from llmscope.errors import UsageError
from llmscope.render import Display, emit_json, human_bytes
from llmscope.results import ModelInfo

MODE_LABELS = {CACHE: "with KV cache", "no-cache": "without cache"}
MODE_STYLES = {CACHE: "#56B4E9", "no-cache": "#E69F00"}  # Okabe-Ito blue / orange
MODE_MARKERS = {CACHE: "●", "no-cache": "■"}
PLOT_SUFFIXES = (".png", ".svg")
PLOT_INSTALL_HINT = "pip install 'llmscope[plot]'"
CSV_FIELDS = ("mode", "new_tokens", "run", "seconds", "ttft_s", "decode_ms_per_token", "tokens_per_s",
              "peak_memory_bytes", "peak_over_start_bytes")

# ---------------------------------------------------------------------------------------------- numbers


def seconds_text(value: float | None) -> str:
    """412 ms, 4.21 s, 83.0 s: three significant figures, in ms below one second."""
    if value is None:
        return "-"
    if abs(value) < 1:
        return f"{value * 1000:.3g} ms" if value * 1000 >= 100 else f"{value * 1000:.1f} ms"
    return f"{value:.3g} s" if value < 100 else f"{value:.0f} s"


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
def progress(display: Display, total_tokens: int) -> Iterator[tuple[Any, Any]]:
    """(on_progress, on_run) callbacks: a Rich bar of generated tokens on a terminal, one line per run otherwise.

    Both stay silent under --quiet. The bar lives on stderr and disappears when done.
    """
    if display.quiet:
        yield (lambda description, advance: None), (lambda timing: None)
        return

    def line(timing: RunTiming) -> Text:
        decode = (f", decode {timing.decode_ms_per_token:.1f} ms/token" if timing.decode_ms_per_token is not None
                  else "")
        return Text(f"{timing.new_tokens} tokens, {timing.mode} run {timing.run}: {seconds_text(timing.seconds)} "
                    f"(TTFT {seconds_text(timing.ttft_s)}{decode})", style="dim")

    if not display.err.is_terminal:
        yield (lambda description, advance: None), (lambda timing: display.err.print(line(timing)))
        return
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("tokens"),
                   TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(), console=display.err,
                   transient=True)
    task = bar.add_task("starting", total=total_tokens)

    def on_progress(description: str, advance: int) -> None:
        if description:
            bar.update(task, description=description, advance=advance)
        elif advance:
            bar.advance(task, advance)

    with bar:
        yield on_progress, (lambda timing: bar.console.print(line(timing)))


# ---------------------------------------------------------------------------------------------- tables


def _header(result: BenchResult) -> Text:
    lengths = (f"{result.lengths[0]} new tokens" if not result.sweep
               else "sweep of " + ", ".join(str(n) for n in result.lengths) + " new tokens")
    chat = ", chat template" if result.chat_template_applied else ""
    threads = f", {result.threads} thread{'s' if result.threads != 1 else ''}" if result.device == "cpu" else ""
    return Text(f"bench-cache: {result.model} on {result.device} ({result.dtype}{threads}), "
                f"{result.prompt_tokens} prompt tokens{chat}, {lengths}; {result.repeat} timed runs per mode "
                f"(+{result.warmup} warm-up), "
                "greedy, modes interleaved"
                + ("" if result.cache_kind == "dynamic" else f"; KV cache: {result.cache_kind}"), style="bold")


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


def speedup_text(length: LengthResult) -> Text:
    if length.speedup is None:
        return Text("speed-up: no complete pair of runs", style="yellow")
    pairs = length.speedup.pairs
    spread = f"{pairs.mean:.2f} ± {pairs.std:.2f}x" if pairs.std is not None else ratio_text(pairs.mean)
    return Text.assemble("speed-up from the cache: ", (ratio_text(length.speedup.of_means), "bold"),
                         f" (no-cache time / cache time); per interleaved pair {spread}, range "
                         f"{ratio_text(pairs.min)}–{ratio_text(pairs.max)}")


def kv_text(length: LengthResult) -> Text:
    kv = length.kv_cache
    if kv is None:
        return Text("KV cache: no cached run finished")
    measured = (f"{human_bytes(kv.measured_bytes)} measured in the returned {kv.cache_class}"
                if kv.measured_bytes is not None else "not readable from the returned cache")
    return Text(f"KV cache held at the end: {kv.tokens} positions, {measured}; formula "
                f"{human_bytes(kv.formula_bytes)} ({kv.bytes_per_token:,} bytes per token at "
                f"{kv.bytes_per_value} bytes per value" + (f"; {kv.note})" if kv.note else ")"))


def show_bench(display: Display, result: BenchResult) -> None:
    """The people's view on stdout: one table per length (or one sweep table, growth fits and a chart)."""
    display.result(_header(result))
    if not result.results:
        display.result(Text("no run finished", style="yellow"))
        return
    if result.sweep:
        display.result(sweep_table(result))
        display.result(sweep_check_text(result))
        display.result(growth_text(result))
        display.result(Text("\nmean generate time against new tokens", style="bold"))
        display.result(text_chart(result, width=max(20, min(60, display.out.width - 12))))
    else:
        length = result.results[0]
        display.result(mode_table(length))
        display.result(speedup_text(length))
        display.result(kv_text(length))
        display.result(check_text(length))
    display.status(f"peak memory: {result.memory_measure}; process peak RSS (getrusage ru_maxrss) "
                   f"{human_bytes(result.process_peak_rss_bytes)}")


BUSY_PERCENT = 25.0


def warn_if_busy(display: Display, busy_percent: float | None, device: str, threads: int | None = None) -> None:
    """Say so when other processes keep the CPUs busy: the timings will be noisy (and torch's threads thrash)."""
    if busy_percent is not None and busy_percent >= BUSY_PERCENT and device == "cpu":
        advice = ("" if threads == 1 else
                  "; when torch's threads compete for cores they slow down sharply (try --threads 1)")
        display.warning(f"other processes kept the CPUs {busy_percent:.0f}% busy just before timing: expect noisy "
                        f"times{advice}")


def warn_differences(display: Display, result: BenchResult) -> None:
    for length in result.results:
        if length.check is not None and not length.check.identical:
            display.warning(difference_text(length))


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


def growth_text(result: BenchResult) -> Text:
    if not result.growth:
        return Text("growth: fewer than two lengths finished, no fit", style="yellow")
    text = Text("growth of the time with new tokens (least-squares fit of log time on log length): ")
    for index, growth in enumerate(result.growth):
        if index:
            text.append("; ")
        text.append(f"{MODE_LABELS[growth.mode]} ∝ n^{growth.fit.exponent:.2f}", style=MODE_STYLES[growth.mode])
        text.append(f" (R² {growth.fit.r_squared:.3f})")
    return text


# ---------------------------------------------------------------------------------------------- charts


def _series(result: BenchResult) -> list[tuple[str, list[tuple[float, float]]]]:
    series = []
    for mode in (CACHE, "no-cache"):
        points = [(float(r.new_tokens), s.seconds.mean) for r in result.results
                  if (s := r.cache if mode == CACHE else r.no_cache) is not None]
        if points:
            series.append((mode, points))
    return series


def _interpolate(points: list[tuple[float, float]], x: float) -> float | None:
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return None


def text_chart(result: BenchResult, width: int = 60, height: int = 14) -> Text:
    """Mean time against new tokens for both modes, drawn in characters (linear axes, y from 0)."""
    series = _series(result)
    if not series:
        return Text("")
    xs = [x for _, points in series for x, _ in points]
    x_low, x_high = min(xs), max(xs)
    y_high = max(y for _, points in series for _, y in points) or 1.0
    grid: list[list[tuple[str, str]]] = [[(" ", "")] * width for _ in range(height)]

    def column(x: float) -> int:
        return 0 if x_high == x_low else round((x - x_low) / (x_high - x_low) * (width - 1))

    def row(y: float) -> int:
        return height - 1 - round(y / y_high * (height - 1))

    for mode, points in series:
        style = MODE_STYLES[mode]
        for col in range(width):
            x = x_low + (x_high - x_low) * col / (width - 1)
            y = _interpolate(points, x)
            if y is not None and grid[row(y)][col][0] == " ":
                grid[row(y)][col] = ("·", style)
        for x, y in points:
            grid[row(y)][column(x)] = (MODE_MARKERS[mode], f"bold {style}")

    label_width = max(len(seconds_text(y_high)), 4)
    text = Text()
    for index, cells in enumerate(grid):
        label = seconds_text(y_high) if index == 0 else ("0 s" if index == height - 1 else "")
        text.append(f"{label:>{label_width}} │")
        for char, style in cells:
            text.append(char, style=style)
        text.append("\n")
    text.append(" " * label_width + " └" + "─" * width + "\n")
    ticks = [" "] * (width + 8)
    for x in sorted(set(xs)):
        name, start = str(int(x)), column(x)
        if all(char == " " for char in ticks[max(start - 1, 0):start + len(name) + 1]):
            ticks[start:start + len(name)] = list(name)
    text.append(" " * (label_width + 2) + "".join(ticks).rstrip() + "\n")
    for mode, _ in series:
        fit = next((g.fit for g in result.growth if g.mode == mode), None)
        text.append(f"  {MODE_MARKERS[mode]} {MODE_LABELS[mode]}", style=MODE_STYLES[mode])
        text.append(f" ∝ n^{fit.exponent:.2f}" if fit else "")
    return text


def require_matplotlib() -> None:
    """Fail early, before any timing, when --plot cannot be written."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("--plot needs matplotlib, which is not installed", hint=PLOT_INSTALL_HINT) from None


def check_plot_path(path: Path) -> None:
    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise UsageError(f"--plot writes .png or .svg files (got {str(path)!r})")
    if not path.parent.exists():
        raise UsageError(f"--plot: the folder {str(path.parent)!r} does not exist")


def write_plot(result: BenchResult, path: Path) -> None:
    """The same chart as an image (PNG or SVG by the file's suffix), with matplotlib's Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(7, 4.2), dpi=120)
    try:
        for mode, points in _series(result):
            fit = next((g.fit for g in result.growth if g.mode == mode), None)
            label = MODE_LABELS[mode] + (f"  (∝ n^{fit.exponent:.2f})" if fit else "")
            summaries = [r.cache if mode == CACHE else r.no_cache for r in result.results]
            errors = [s.seconds.std or 0.0 for s in summaries if s is not None]
            axes.errorbar([x for x, _ in points], [y for _, y in points], yerr=errors, marker="o", capsize=3,
                          color=MODE_STYLES[mode], label=label)
        axes.set_xlabel("new tokens")
        axes.set_ylabel("generate time, s (mean ± std)")
        axes.set_ylim(bottom=0)
        axes.set_title(f"KV cache: {result.model} on {result.device} ({result.dtype}), "
                       f"{result.prompt_tokens}-token prompt", fontsize=10)
        axes.grid(alpha=0.3)
        axes.legend()
        figure.tight_layout()
        figure.savefig(path)
    finally:
        pyplot.close(figure)


# ---------------------------------------------------------------------------------------------- scripts


def show_bench_json(display: Display, info: ModelInfo, result: BenchResult) -> None:
    emit_json(display, "bench-cache", info, result)


def show_bench_csv(display: Display, result: BenchResult) -> None:
    """One row per timed run, in the order they ran."""
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for run in result.runs:
        writer.writerow([run.mode, run.new_tokens, run.run, f"{run.seconds:.6f}", f"{run.ttft_s:.6f}",
                         "" if run.decode_ms_per_token is None else f"{run.decode_ms_per_token:.4f}",
                         f"{run.tokens_per_s:.4f}", "" if run.peak_memory_bytes is None else run.peak_memory_bytes,
                         "" if run.peak_over_start_bytes is None else run.peak_over_start_bytes])
    sys.stdout.flush()
