"""Show `patch` results: both runs and their answers, one layer x position (or layer x head) heat table per site fitted
to the terminal width with token-labelled columns, the strongest cells named, --plot heatmaps, and JSON. No compute."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from llmscope.core.model_info import ModelInfo
from llmscope.patching.results import PatchCost, PatchResult, RunSummary, SiteGrid
from llmscope.render.attribution import cell_style
from llmscope.render.display import Display, human_bytes, titled, visible
from llmscope.render.generation import colours_on

CELL = 6  # characters per column of the heat table
LAYER_LABEL = 5


def short(text: str, width: int = CELL) -> str:
    label = visible(text)
    return label if len(label) <= width else label[: width - 1] + "…"


def cell_text(value: float, decimals: int = 2) -> str:
    return f"{value:.{decimals}f}" if abs(value) < 9.5 else f"{value:.0f}"


def decimals_of(result: PatchResult) -> int:
    """Two decimals for the normalised metric (0 to 1), three for probabilities, log-probabilities and changes."""
    return 2 if result.normalised else 3


def scale_of(grid: SiteGrid) -> float:
    """The colour scale: the largest |value| of the grid (each site on its own scale, as in the plot)."""
    return max((abs(v) for row in grid.values for v in row), default=0.0) or 1.0


def column_name(grid: SiteGrid, index: int) -> str:
    column = grid.columns[index]
    if grid.column_kind == "head":
        return f"head {column.index}"
    return f"position {column.index} {visible(column.label)!r}"


def strongest(result: PatchResult, grid: SiteGrid, count: int) -> list[tuple[int, int, float]]:
    """The strongest cells as the table names them: the largest values, or the largest changes when ablating."""
    return grid.strongest(count, by_size=result.mode == "ablate")


def heat_table(result: PatchResult, grid: SiteGrid, width: int, colour: bool) -> Any:
    """Layers down, columns across (the last ones kept when the terminal is too narrow, the cut named)."""
    room = max(1, (width - LAYER_LABEL - 1) // (CELL + 1))
    total = len(grid.columns)
    first = max(0, total - room)
    largest = scale_of(grid)
    table = Table(box=None, pad_edge=False, show_edge=False, padding=(0, 1, 0, 0))
    table.add_column("layer", justify="right", no_wrap=True, width=LAYER_LABEL)
    for column in grid.columns[first:]:
        mark = "*" if column.other_token is not None else ""
        label = column.label if grid.column_kind == "head" else short(column.label, CELL - len(mark)) + mark
        table.add_column(label, justify="right", no_wrap=True, width=CELL)
    decimals = decimals_of(result)
    for layer, row in zip(grid.layers, grid.values):
        cells = [Text(cell_text(v, decimals), style=cell_style(v, largest) if colour else "") for v in row[first:]]
        table.add_row(str(layer), *cells)
    where = f" at position {grid.position}" if grid.position is not None else ""
    what = f"change in {result.metric} after ablating" if result.mode == "ablate" else f"{result.metric} after patching"
    title = f"{grid.site}: {what} each cell{where} ({grid.column_kind}s across, layers down)"
    notes = []
    if first:
        notes.append(f"the first {first} of {total} columns are cut to fit {width} columns; --json or --plot has "
                     "them all")
    differ = [c for c in grid.columns if c.other_token is not None]
    if differ:
        pairs = ", ".join(f"{c.index} {visible(c.label)}/{visible(c.other_token or '')}" for c in differ)
        notes.append(f"* the prompts differ there (clean/corrupted): {pairs}")
    return titled(title, table, "\n".join(notes) or None)


def run_line(run: RunSummary, result: PatchResult) -> Text:
    """One unpatched run: its prompt, its own top token, both answers' probabilities and the metric's value."""
    line = Text(f"{run.role:>7}: ", style="bold")
    line.append(repr("".join(run.tokens)))
    line.append(f" -> {visible(run.top.text)!r} (p {run.top_probability:.4f}); p(answer ")
    line.append(f"{visible(result.answer.text)!r}) {run.answer_probability:.4f}")
    if result.foil is not None and run.foil_probability is not None:
        line.append(f", p(corrupted answer {visible(result.foil.text)!r}) {run.foil_probability:.4f}")
    line.append(f"; {result.metric} {run.metric_value:.4f}", style="dim")
    return line


def strongest_lines(result: PatchResult, grid: SiteGrid, count: int) -> Text:
    text = Text(f"strongest {grid.site} cells: ", style="bold")
    text.append("; ".join(f"layer {layer} {column_name(grid, j)} {value:.3f}"
                          for layer, j, value in strongest(result, grid, count)))
    return text


def cost_line(cost: PatchCost) -> str:
    """The plan, said before running: patched runs, batched passes and the peak memory estimate."""
    return (f"{cost.cells} cells, {cost.rows} patched runs in {cost.passes} forward pass"
            f"{'es' if cost.passes != 1 else ''} of up to {cost.rows_per_pass} rows; peak memory about "
            f"{human_bytes(cost.peak_bytes_estimate)} (weights {human_bytes(cost.weights_bytes)})")


def show_patch(display: Display, info: ModelInfo, result: PatchResult, top: int = 5, plot: str | None = None,
               **extra: Any) -> None:
    """patch's one render entry: JSON (extra keys first), or the runs, the heat tables and the strongest cells;
    --plot writes the heatmaps."""
    if plot is not None:
        write_plot(result, Path(plot))
        display.status(f"wrote {plot}")
    if not display.for_people:
        display.document("patch", info, patch_payload(result, top), **extra)
        return
    colour = colours_on(display)
    display.result(run_line(result.clean, result))
    if result.corrupt is not None:
        display.result(run_line(result.corrupt, result))
    if result.noise is not None:
        noise = result.noise
        display.result(Text(f"corrupted by Gaussian noise on {noise.subject!r} (positions "
                            f"{', '.join(map(str, noise.positions))}): std {noise.std:.4f} = {noise.scale:g} x the "
                            f"embedding's {noise.embedding_std:.4f}, {noise.samples} samples, seed {noise.seed}",
                            style="dim"))
    display.result(Text(f"{result.mode}: {result.mode_meaning}", style="dim"))
    display.result(Text(f"metric: {result.metric_meaning}", style="dim"))
    for grid in result.grids:
        display.result(Text(""))
        display.result(heat_table(result, grid, display.out.width, colour))
        if top:
            display.result(strongest_lines(result, grid, top))
    display.status(f"{result.cost.rows} patched runs in {result.cost.passes} forward passes, {result.seconds:.2f} s "
                   "in all")


def patch_payload(result: PatchResult, top: int = 5) -> dict[str, Any]:
    """The JSON body: the runs, the answers, every grid in full (layers x columns) with its strongest cells."""
    from llmscope.core.model_info import to_plain

    body = to_plain(result)
    body["grids"] = []
    for grid in result.grids:
        plain = to_plain(grid)
        plain["strongest"] = [{"layer": layer, "column": grid.columns[j].index, "label": grid.columns[j].label,
                               "value": value} for layer, j, value in strongest(result, grid, top)]
        body["grids"].append(plain)
    return body


def write_plot(result: PatchResult, path: Path) -> None:
    """Write plot_figure's heatmaps to a .png or .svg file."""
    from matplotlib import pyplot

    figure = plot_figure(result)
    figure.savefig(path)
    pyplot.close(figure)


def plot_figure(result: PatchResult) -> Any:
    """One heatmap per site, side by side: layers down, positions (token-labelled) or heads across."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy
    from matplotlib import pyplot

    count = len(result.grids)
    widest = max(len(g.columns) for g in result.grids)
    tallest = max(len(g.layers) for g in result.grids)
    figure, axes = pyplot.subplots(1, count, figsize=(count * (0.42 * widest + 2.4), 0.22 * tallest + 2.6),
                                   squeeze=False, dpi=100, layout="constrained")
    for axis, grid in zip(axes[0], result.grids):
        values = numpy.array(grid.values, dtype=float)
        largest = scale_of(grid)
        image = axis.imshow(values, cmap="RdBu_r", vmin=-largest, vmax=largest, aspect="auto")
        labels = [c.label if grid.column_kind == "head" else short(c.label, 10) + ("*" if c.other_token else "")
                  for c in grid.columns]
        axis.set_xticks(range(len(labels)), labels, rotation=90, fontsize=8)
        axis.set_yticks(range(len(grid.layers)), [str(layer) for layer in grid.layers], fontsize=7)
        axis.set_ylabel("layer")
        axis.set_xlabel("head" if grid.column_kind == "head" else "position (clean token; * differs)")
        where = f", position {grid.position}" if grid.position is not None else ""
        axis.set_title(f"{grid.site} ({result.mode}{where})", fontsize=9)
        figure.colorbar(image, ax=axis, shrink=0.8, label=result.metric)
    figure.suptitle(f"{result.model}: {''.join(result.clean.tokens)!r} -> {result.answer.text!r}", fontsize=9)
    return figure
