"""Draw `bench-cache`'s sweep or depth series: a chart in characters for the terminal, an image through matplotlib,
and the check that an image path can be written. It computes nothing beyond layout and never touches the model."""

from __future__ import annotations

import itertools
from pathlib import Path

from rich.text import Text

from llmscope.bench.results import CACHE, BenchResult

# The modes' names, colours and markers, and the seconds format: shared with the tables of render/bench.py, which
# imports them from here (the arrows run one way: bench -> benchchart).
MODE_LABELS = {CACHE: "with KV cache", "no-cache": "without cache"}
MODE_STYLES = {CACHE: "#56B4E9", "no-cache": "#E69F00"}  # Okabe-Ito blue / orange
MODE_MARKERS = {CACHE: "●", "no-cache": "■"}


def seconds_text(value: float | None) -> str:
    """412 ms, 4.21 s, 83.0 s: three significant figures, in ms below one second."""
    if value is None:
        return "-"
    if abs(value) < 1:
        return f"{value * 1000:.3g} ms" if value * 1000 >= 100 else f"{value * 1000:.1f} ms"
    return f"{value:.3g} s" if value < 100 else f"{value:.0f} s"




def _series(result: BenchResult) -> list[tuple[str, list[tuple[float, float]]]]:
    """Per mode, (x, y) points: mean seconds against new tokens (sweep), or decode ms/token against prompt tokens."""
    series = []
    for mode in (CACHE, "no-cache"):
        points = []
        for r in result.results:
            summary = r.cache if mode == CACHE else r.no_cache
            if summary is None:
                continue
            if not result.depths:
                points.append((float(r.new_tokens), summary.seconds.mean))
            elif summary.decode_ms_per_token is not None:
                points.append((float(r.prompt_tokens), summary.decode_ms_per_token.mean / 1000))
        if points:
            series.append((mode, points))
    return series


def _errors(result: BenchResult, mode: str) -> list[float]:
    summaries = [s for r in result.results if (s := r.cache if mode == CACHE else r.no_cache) is not None]
    if result.depths:
        return [(s.decode_ms_per_token.std or 0.0) / 1000 for s in summaries if s.decode_ms_per_token is not None]
    return [s.seconds.std or 0.0 for s in summaries]


def _quantity(result: BenchResult) -> str:
    return "decode_ms_per_token" if result.depths else "seconds"


def _interpolate(points: list[tuple[float, float]], x: float) -> float | None:
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return None


def text_chart(result: BenchResult, width: int = 60, height: int = 14) -> Text:
    """Mean time against new tokens (or decode time per token against prompt tokens) for both modes, drawn in
    characters (linear axes, y from 0)."""
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
        fit = next((g.fit for g in result.growth if g.mode == mode and g.quantity == _quantity(result)), None)
        text.append(f"  {MODE_MARKERS[mode]} {MODE_LABELS[mode]}", style=MODE_STYLES[mode])
        text.append(f" ∝ n^{fit.exponent:.2f}" if fit else "")
    return text


def save_figure(figure: object, path: Path) -> None:
    """figure.savefig into a temporary file beside `path`, renamed over it when whole: a full disk or a failing
    writer leaves no empty or half-written image, only one line naming the file and the cause."""
    import os
    import tempfile

    from llmscope.core.errors import LlmscopeError

    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    try:
        figure.savefig(temporary, format=path.suffix.lstrip(".").lower())  # type: ignore[attr-defined]
        os.replace(temporary, path)
    except OSError as error:
        raise LlmscopeError(f"--plot: could not write {str(path)!r}: {error.strerror or error}") from None
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def write_plot(result: BenchResult, path: Path) -> None:
    """The same chart as an image (PNG or SVG by the file's suffix), with matplotlib's Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(7, 4.2), dpi=120)
    try:
        for mode, points in _series(result):
            fit = next((g.fit for g in result.growth if g.mode == mode and g.quantity == _quantity(result)), None)
            label = MODE_LABELS[mode] + (f"  (∝ n^{fit.exponent:.2f})" if fit else "")
            errors = _errors(result, mode)
            axes.errorbar([x for x, _ in points], [y for _, y in points], yerr=errors, marker="o", capsize=3,
                          color=MODE_STYLES[mode], label=label)
        axes.set_xlabel("prompt tokens" if result.depths else "new tokens")
        axes.set_ylabel("decode time per token, s (mean ± std)" if result.depths
                        else "generate time, s (mean ± std)")
        axes.set_ylim(bottom=0)
        axes.set_title(f"KV cache: {result.model} on {result.device} ({result.dtype}), "
                       f"{result.prompt_tokens}-token prompt", fontsize=10)
        axes.grid(alpha=0.3)
        axes.legend()
        figure.tight_layout()
        save_figure(figure, path)
    finally:
        pyplot.close(figure)
