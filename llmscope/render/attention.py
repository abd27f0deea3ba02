"""Show an AttentionResult: heat rows per layer, heads grouped by KV head, one head's matrix fitted to the terminal,
the head-roles table, JSON, and the head grid as an image. Colours follow viridis; the numbers are always there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from llmscope.attention.pick import MAX_PLOT_PANELS, strongest_keys
from llmscope.attention.weights import Attended, AttentionResult, HeadStats, Role, masked
from llmscope.core.errors import UsageError
from llmscope.core.model_info import ModelInfo
from llmscope.render.display import Display, titled, visible

# Viridis (perceptually uniform, readable with the common colour-vision deficiencies): lower bound in %, colour.
SCALE = ((0, "#440154"), (2, "#482878"), (5, "#3e4989"), (10, "#31688e"), (20, "#26828e"), (30, "#1f9e89"),
         (45, "#35b779"), (60, "#6ece58"), (75, "#b5de2b"), (90, "#fde725"))
DARK_TEXT_FROM = 5  # index in SCALE from which the background is light enough for black text
MIN_CELL, MAX_CELL = 4, 9
PLOT_LABELS = 32  # token labels per panel axis before only every k-th is named
CUT_CELL = 6  # cells of a view cut to its strongest keys: room for a 5-character token over its position
TOP_WIDTH = 30
MARKS = {"future": "·", "window": "░"}


def percent(weight: float) -> str:
    return str(round(weight * 100))


def cell_style(weight: float) -> str:
    value = weight * 100
    index = max(i for i, (low, _) in enumerate(SCALE) if value >= low or i == 0)
    return f"{'black' if index >= DARK_TEXT_FROM else 'white'} on {SCALE[index][1]}"


def heat_cell(weight: float, width: int) -> Text:
    return Text(percent(weight).rjust(width), style=cell_style(weight))


def mask_cell(reason: str, width: int) -> Text:
    return Text(MARKS[reason].rjust(width), style="dim")


def short(text: str, width: int) -> str:
    shown = visible(text.strip()) or visible(text) or "∅"
    return shown if len(shown) <= width else shown[: max(1, width - 1)] + "…"


def legend() -> Text:
    line = Text("% attention:")
    for index, (low, _) in enumerate(SCALE):
        line.append(f" {low}", style=cell_style(low / 100 if index else 0.0))
        line.append(" ", style=cell_style(low / 100 if index else 0.0))
    line.append(" (viridis, colour-blind safe)", style="dim")
    return line


def top_text(top: tuple[Attended, ...], width: int = 8) -> str:
    return " · ".join(f"{short(item.text, width)} {percent(item.weight)}" for item in top)


def fit_keys(n_keys: int, room: int) -> tuple[list[int | None], int]:
    """Which key positions fit in `room` columns (None marks a cut), and the cell width."""
    if n_keys * MIN_CELL <= room:
        return list(range(n_keys)), max(MIN_CELL, min(MAX_CELL, room // max(1, n_keys)))
    count = max(2, room // MIN_CELL - 1)  # the first token (the usual sink), a cut, then the last ones
    return [0, None, *range(n_keys - count + 1, n_keys)], MIN_CELL


def pick_keys(result: AttentionResult, rows: list[tuple[float, ...]], room: int) -> tuple[list[int], int]:
    """The key positions for a heat row view and the cell width: the --keys chosen (or every key up to the query),
    all of them when they fit, else the ones with the largest weight in these rows (position order)."""
    candidates = list(result.keys) or list(range(result.query + 1))
    if len(candidates) * MIN_CELL <= room:
        return candidates, max(MIN_CELL, min(MAX_CELL, room // max(1, len(candidates))))
    return strongest_keys(rows, candidates, max(1, room // CUT_CELL)), CUT_CELL


def keys_caption(result: AttentionResult, shown: list[int], width: int) -> str | None:
    """Say which keys a heat row view shows when it is not every key up to the query."""
    total = len(result.keys) or result.query + 1
    if len(shown) == total:
        return "keys chosen with --keys" if result.keys else None
    return (f"cut to fit {width} columns: the {len(shown)} keys with the largest weights of {total}"
            f"{' chosen' if result.keys else ''} (column: a token over its position); choose them with --keys, or "
            "--json for every weight")


def cut_caption(shown: list[int | None], total: int, what: str, width: int) -> str | None:
    if None not in shown:
        return None
    kept = [p for p in shown if p is not None]
    return (f"cut to fit {width} columns: {what} 1–{kept[1] - 1} of 0–{total - 1} not shown "
            "(widen the terminal, or use --json for every weight)")


def header(result: AttentionResult) -> Text:
    query = result.tokens[result.query]
    n = len(result.tokens)
    line = Text(f"prompt ({n} token{'s' if n != 1 else ''}{', chat template' if result.chat_template_applied else ''}"
                "): ", style="bold")
    for token in result.tokens:
        line.append(f"{token.position}:", style="dim")
        line.append(f"{visible(token.text)}  ")
    line.append("\nquery: ", style="bold")
    line.append(f"{query.position} {visible(query.text)!r}")
    groups = len(result.kv_groups)
    line.append(f"   {result.num_layers} layers × {result.num_heads} heads, {result.layout} "
                f"({groups} KV head{'s' if groups != 1 else ''})", style="dim")
    windows = {w for w in result.windows if w}
    if windows:
        line.append(f", window {', '.join(map(str, sorted(windows)))}", style="dim")
    how = ("llmscope's invariant attention (the weights every command computes with)"
           if result.attention_implementation == "llmscope_invariant" else
           f"{result.attention_implementation} attention (SDPA/flash kernels give no weights)")
    line.append(f"\n{how}; layers, heads count from 0", style="dim")
    return line


def key_columns(table: Table, result: AttentionResult, shown: list[int | None], width: int) -> None:
    """One column per key: the token's text, with its position under it when the keys shown are not all in a row."""
    contiguous = None not in shown and shown == list(range(len(shown)))
    for position in shown:
        label = "…" if position is None else short(result.tokens[position].text, width - 1)
        if position is not None and not contiguous:
            label += f"\n{position}"
        table.add_column(label, justify="right", no_wrap=True, min_width=width, max_width=width)


def cells(weights: tuple[float, ...], shown: list[int | None], width: int) -> list[Text]:
    return [Text("…".rjust(width), style="dim") if p is None else heat_cell(weights[p], width) for p in shown]


def _grid_table() -> Table:
    """A borderless table: the cells carry their own leading space, so colours sit side by side."""
    return Table(box=None, pad_edge=False, padding=(0, 0), show_edge=False, header_style="bold")


def layers_table(result: AttentionResult, width: int) -> Group:
    """One heat row per layer for the query token: the mean over heads and the strongest head, or one head's row
    in every layer (--head without --layer)."""
    one_head = len(result.heads) == 1
    top_width = min(TOP_WIDTH, max(len(top_text(row.top)) for row in result.query_rows))
    rows = [row.mean for row in result.query_rows] + ([] if one_head else [r.strongest for r in result.query_rows])
    shown, cell = pick_keys(result, rows, width - 5 - 5 - 2 - top_width)
    table = _grid_table()
    table.add_column("layer", justify="right", width=5, no_wrap=True)
    table.add_column("", width=5, no_wrap=True)
    key_columns(table, result, list(shown), cell)
    table.add_column("  top 3", no_wrap=True, overflow="ellipsis", max_width=top_width + 2)
    for row in result.query_rows:
        if one_head:
            table.add_row(str(row.layer), f" H{result.heads[0]}", *cells(row.mean, list(shown), cell),
                          "  " + top_text(row.top))
            continue
        table.add_row(str(row.layer), " mean", *cells(row.mean, list(shown), cell), "  " + top_text(row.top))
        table.add_row("", Text(f" H{row.strongest_head}", style="dim"), *cells(row.strongest, list(shown), cell),
                      Text("  " + top_text(row.strongest_top), style="dim"))
    caption = (f"head {result.heads[0]} in every layer" if one_head else
               "mean over the heads; H: the head with the most weight on a token but the first")
    cut = keys_caption(result, shown, width)
    return titled(f"Where {visible(result.tokens[result.query].text)!r} (position {result.query}) looks, "
                  f"layer by layer{f', head {result.heads[0]}' if one_head else ''}", table,
                  caption + (f"\n{cut}" if cut else ""))


def heads_table(result: AttentionResult, width: int) -> Group:
    layer = result.layers[0]
    row_index = result.query_positions.index(result.query)
    top_width = min(TOP_WIDTH, max(len(top_text(row.top)) for row in result.head_rows))
    rows = [result.weights[0][j][row_index] for j in range(len(result.heads))]
    picked, cell = pick_keys(result, rows, width - 3 - 5 - 8 - 2 - top_width)
    shown: list[int | None] = list(picked)
    table = _grid_table()
    table.add_column("kv", justify="right", width=3, no_wrap=True)
    table.add_column("head", justify="right", width=5, no_wrap=True)
    key_columns(table, result, shown, cell)
    table.add_column("entropy", justify="right", width=8, no_wrap=True)
    table.add_column("  top 3", no_wrap=True, overflow="ellipsis", max_width=top_width + 2)
    for group in result.kv_groups:
        members = [row for row in result.head_rows if row.head in group.heads]
        for i, row in enumerate(members):
            weights = result.weights[0][result.heads.index(row.head)][row_index]
            table.add_row(str(group.kv_head) if i == 0 else "", f"H{row.head}", *cells(weights, shown, cell),
                          f"{row.entropy:.2f}", "  " + top_text(row.top),
                          end_section=i == len(members) - 1 and len(group.heads) > 1)
    size = result.num_heads // max(1, result.num_kv_heads)
    grouping = {"multi-head": "every head has its own keys and values",
                "multi-query": "all heads share one KV head",
                "grouped-query": f"groups of {size} heads share a KV head"}.get(result.layout, result.layout)
    caption = f"{result.layout}: {grouping}; entropy in nats of this query's row"
    cut = keys_caption(result, picked, width)
    return titled(f"Layer {layer}: where {visible(result.tokens[result.query].text)!r} (position {result.query}) "
                  "looks, head by head, by KV head", table, caption + (f"\n{cut}" if cut else ""))


def matrix_view(result: AttentionResult, width: int) -> Group:
    layer, head = result.layers[0], result.heads[0]
    window = result.windows[layer]
    n = len(result.tokens)
    label = min(14, max(len(short(t.text, 10)) for t in result.tokens) + 4)
    shown, _ = fit_keys(n, width - label)
    cell = MIN_CELL
    table = _grid_table()
    table.add_column("query", no_wrap=True, width=label, overflow="ellipsis")
    for position in shown:
        table.add_column("…" if position is None else str(position), justify="right", no_wrap=True,
                         min_width=cell, max_width=cell)
    weights = result.weights[0][0]
    for query in shown:
        if query is None:
            table.add_row("…", *[Text("…".rjust(cell), style="dim") for _ in shown])
            continue
        row = []
        for key in shown:
            reason = None if key is None else masked(query, key, window)
            row.append(Text("…".rjust(cell), style="dim") if key is None else
                       mask_cell(reason, cell) if reason else heat_cell(weights[query][key], cell))
        table.add_row(f"{query:>3} {short(result.tokens[query].text, label - 4)}", *row)
    caption = f"{MARKS['future']} future token (causal mask)"
    if window:
        caption += f"   {MARKS['window']} outside the sliding window of {window}"
    cut = cut_caption(shown, n, "positions", width)
    return titled(f"Layer {layer}, head {head}: every query (rows) against every key (columns), % per row",
                  table, caption + (f"\n{cut}" if cut else ""))


ROLE_WORDS = {
    "sink": ("attention sink", "park their attention on the first token, whatever it says"),
    "previous": ("previous token", "read the token just before the query"),
    "self": ("self", "read the query token itself"),
    "look-back": ("long look-back", "reach furthest back on average (among heads with at most half on the first "
                  "token)"),
    "focused": ("focused", "put their attention on the fewest tokens (lowest entropy among heads with at most half "
                "on the first token)"),
    "broad": ("broad", "spread their attention widest (highest entropy)"),
}


def role_value(role: Role, stats: HeadStats) -> str:
    value = getattr(stats, role.statistic)
    if role.statistic == "look_back":
        return f"{value:.1f} tok"
    if role.statistic == "entropy":
        return f"{value:.2f}"
    return f"{round(value * 100)}%"


def roles_table(result: AttentionResult) -> Group:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("role", no_wrap=True)
    table.add_column("the heads that play it most clearly, in words", overflow="fold")
    for role in result.roles:
        name, words = ROLE_WORDS[role.name]
        heads = ", ".join(f"L{s.layer} H{s.head} ({role_value(role, s)})" for s in role.heads)
        line = f"{heads} {words}"
        if role.over_half is not None:
            line += f"; {role.over_half} of {len(result.stats)} heads put over half their attention there"
        table.add_row(name, line)
    return titled("Head roles (averaged over the queries from position 2 on)", table,
                  "L layer, H head; % = share of attention, tok = tokens back, entropy in nats")


def stats_table(result: AttentionResult) -> Group:
    layer = result.layers[0]
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("head", "kv", "first", "previous", "self", "look-back", "entropy"):
        table.add_column(name, justify="right")
    for stats in result.stats:
        if stats.layer == layer and stats.head in result.heads:
            table.add_row(f"H{stats.head}", str(stats.kv_head), f"{round(stats.first_token * 100)}%",
                          f"{round(stats.previous_token * 100)}%", f"{round(stats.same_token * 100)}%",
                          f"{stats.look_back:.1f}", f"{stats.entropy:.2f}")
    return titled(f"Layer {layer}: each head's habits over the queries from position 2 on", table,
                  "first / previous / self: share of attention; look-back in tokens; entropy in nats")


def show_attention(display: Display, info: ModelInfo | None, result: AttentionResult, matrix: bool = False) -> None:
    """attention's one render entry: the document (--json / --jsonl) or the heat rows, head table or matrix."""
    if not display.for_people:
        display.document("attention", info, result)
        return
    width = display.out.width
    display.result(header(result))
    display.result(Text(""))
    if matrix:
        display.result(matrix_view(result, width))
    elif result.head_rows:
        display.result(heads_table(result, width))
        display.result(Text(""))
        display.result(stats_table(result))
    else:
        display.result(layers_table(result, width))
        display.result(Text(""))
        display.result(roles_table(result))
    display.result(legend())


def label_axes(axis: Any, result: AttentionResult, bottom: bool, left: bool, font: int) -> None:
    """Token labels on a panel's keys (bottom row) and queries (left column), every one while at most
    PLOT_LABELS fit, else every k-th."""
    labels = [short(t.text, 10) for t in result.tokens]
    step = max(1, -(-len(labels) // PLOT_LABELS))
    keys = list(range(0, len(labels), step)) if bottom else []
    queries = list(range(0, len(result.query_positions), step)) if left else []
    axis.set_xticks(keys, [labels[k] for k in keys], rotation=90, fontsize=font)
    axis.set_yticks(queries, [labels[result.query_positions[q]] for q in queries],
                    fontsize=font)


def write_plot(result: AttentionResult, path: Path) -> None:
    """The head grid (selected layers × heads, each head's queries × keys) as PNG or SVG, viridis, masks in grey."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy
    from matplotlib import pyplot

    from llmscope.render.benchchart import save_figure

    rows, cols = len(result.layers), len(result.heads)
    if rows * cols > MAX_PLOT_PANELS:
        raise UsageError(f"a plot of {rows} layers x {cols} heads would hold {rows * cols} panels, too small to read "
                         f"(at most {MAX_PLOT_PANELS})",
                         hint="choose one layer with --layer L, or one head across the layers with --head H")
    n = len(result.tokens)
    size = 2.2 if rows * cols > 1 else 5.0
    figure, axes = pyplot.subplots(rows, cols, figsize=(cols * size + 1.5, rows * size + 1.0), squeeze=False, dpi=100,
                                   layout="constrained")
    kv_of = {head: group.kv_head for group in result.kv_groups for head in group.heads}
    image = None
    try:
        for i, layer in enumerate(result.layers):
            window = result.windows[layer]
            for j, head in enumerate(result.heads):
                grid = numpy.array(result.weights[i][j], dtype=float)
                for q in range(grid.shape[0]):
                    for k in range(n):
                        if masked(result.query_positions[q], k, window):
                            grid[q, k] = numpy.nan
                axis = axes[i][j]
                image = axis.imshow(grid, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
                axis.set_facecolor("#dddddd")
                label_axes(axis, result, bottom=i == rows - 1, left=j == 0, font=8 if rows * cols == 1 else 5)
                if i == 0:
                    axis.set_title(f"H{head} (kv {kv_of[head]})", fontsize=8)
                if j == 0:
                    axis.set_ylabel(f"L{layer}", fontsize=8)
        figure.suptitle(f"{result.model}: attention over {n} tokens\nrows = queries, columns = keys, grey = masked",
                        fontsize=9)
        if image is not None:
            figure.colorbar(image, ax=axes, shrink=0.6, label="attention weight")
        save_figure(figure, path)  # no empty or half-written file on a full disk
    finally:
        pyplot.close(figure)
