"""Show `what-if` results: a quality table and a cost table (one row per variant, the unchanged model first), the
notes on stderr, --plot's figure and the JSON document (the shape scripts depend on). No compute."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table

from llmscope.core.model_info import ModelInfo, to_plain
from llmscope.render.display import Display, human_bytes, titled
from llmscope.whatif.results import VariantResult, WhatIfResult


def _ratio(value: float | None, base: float | None) -> str:
    if value is None or base is None or base == 0 or math.isnan(value) or math.isnan(base):
        return "-"
    ratio = value / base
    return f"{ratio:.2f}×" if ratio >= 0.1 or ratio == 0 else f"{ratio:.1g}×"


def _kl(value: float) -> str:
    return f"{value:.4f}" if value >= 1e-4 or value == 0 else f"{value:.1e}"


def _passkey(row: VariantResult) -> str:
    if not row.passkey:
        return "-"
    return f"{sum(p.found for p in row.passkey)}/{len(row.passkey)}"


def quality_table(result: WhatIfResult) -> Any:
    base = result.variants[0]
    grid = Table(box=box.SIMPLE, pad_edge=False)
    grid.add_column("variant", overflow="fold")
    for name in ("ppl", "×", "KL mean", "KL max", "top-1", "parts"):
        grid.add_column(name, justify="right", no_wrap=True)
    if any(row.passkey for row in result.variants):
        grid.add_column("key", justify="right", no_wrap=True)
    for row in result.variants:
        cells = [row.name, f"{row.perplexity:,.2f}", _ratio(row.perplexity, base.perplexity), _kl(row.kl_mean),
                 _kl(row.kl_max), f"{100 * row.top1_agreement:.1f}%",
                 "-" if row.greedy_parts_at is None else str(row.greedy_parts_at)]
        if any(r.passkey for r in result.variants):
            cells.append(_passkey(row))
        grid.add_row(*cells)
    caption = ("KL(full ‖ variant) in nats per token; top-1: same most likely token; parts: the first of the -n "
               "greedy tokens that differs (- none)")
    if any(row.passkey for row in result.variants):
        caption += "; key: pass keys returned"
    return titled(f"Quality on {result.scored:,} tokens, against the unchanged model", grid, caption)


def cost_table(result: WhatIfResult) -> Any:
    base = result.variants[0]
    grid = Table(box=box.SIMPLE, pad_edge=False)
    grid.add_column("variant", overflow="fold")
    grid.add_column(f"KV @{result.tokens:,}", justify="right", no_wrap=True)
    grid.add_column(f"KV @{result.context:,}", justify="right", no_wrap=True)
    grid.add_column("×", justify="right", no_wrap=True)
    measured = result.new_tokens > 0
    if measured:
        grid.add_column("measured", justify="right", no_wrap=True)
        grid.add_column("peak +", justify="right", no_wrap=True)
        grid.add_column("tok/s", justify="right", no_wrap=True)
    for row in result.variants:
        cells = [row.name, human_bytes(row.kv_cache_bytes), human_bytes(row.kv_cache_bytes_at_context),
                 _ratio(row.kv_cache_bytes_at_context, base.kv_cache_bytes_at_context)]
        if measured:
            cells += [human_bytes(row.kv_cache_end_bytes), human_bytes(row.peak_memory_added_bytes),
                      "-" if row.decode_tokens_per_s is None else f"{row.decode_tokens_per_s:.1f}"]
        grid.add_row(*cells)
    caption = (f"KV: the cache formula at the text's {result.tokens:,} tokens and at {result.context:,} "
               f"({result.kv_dtype} keys and values)")
    if measured:
        caption += (f"; measured: the cache's tensors after -n {result.new_tokens} tokens, peak +: the "
                    "generation's peak memory over what was in use before it, tok/s: decode speed")
    return titled("Memory and speed, the variant really applied", grid, caption)


def notes(display: Display, result: WhatIfResult) -> None:
    """On stderr: what was read and measured, and every layer a variant left unchanged."""
    display.status(f"{result.tokens:,} tokens read in one pass; "
                   + (f"-n {result.new_tokens} greedy tokens generated with each variant's own cache; "
                      if result.new_tokens else "")
                   + f"peak memory: {result.memory_measure}")
    if result.preset:
        display.status("no --variant: the preset sweep (windows and sinks, fixed patterns, random and top-k, "
                       "fewer KV heads, narrower caches)")
    said: set[str] = set()
    for row in result.variants:
        for note in row.unchanged_layers:
            if note not in said:
                said.add(note)
                display.warning(f"left unchanged: {note}")
    for row in result.variants:
        if row.kv_cache_measured_bytes is not None and row.kv_cache_measured_bytes != row.kv_cache_bytes:
            display.warning(f"{row.name}: the cache held {row.kv_cache_measured_bytes:,} bytes after the text, the "
                            f"formula says {row.kv_cache_bytes:,}")


def whatif_payload(result: WhatIfResult) -> dict[str, Any]:
    """The --json document's body: {"tokens", "variants": [{"name", "spec", "perplexity", "kl_mean", "kl_max",
    "top1_agreement", "kv_cache_bytes", "kv_cache_bytes_at_context", "peak_memory_bytes",
    "decode_tokens_per_s", "passkey": [{"depth", "found", ...}], ...}], ...}."""
    return {
        "tokens": result.tokens, "scored": result.scored, "context": result.context,
        "new_tokens": result.new_tokens, "kv_dtype": result.kv_dtype, "memory_measure": result.memory_measure,
        "preset": result.preset, "variants": [to_plain(row) for row in result.variants],
        "seconds": result.seconds, "text": result.text, "settings": to_plain(result.settings),
    }


def show_what_if(display: Display, info: ModelInfo, result: WhatIfResult, plot: str | None = None,
                 **extra: Any) -> None:
    """what-if's one render entry: the JSON document, or the notes and the two tables; --plot writes the figure."""
    if plot is not None:
        write_plot(result, Path(plot))
        display.status(f"wrote {plot}")
    if not display.for_people:
        display.document("what-if", info, whatif_payload(result), **extra)
        return
    notes(display, result)
    display.result(quality_table(result))
    display.result(cost_table(result))


# ------------------------------------------------------------------------------------------------ --plot


def _series(result: WhatIfResult) -> dict[str, list[tuple[float, VariantResult]]]:
    """Rows grouped by what they vary: window size (window; sinks + window), KV groups, code bits; each series
    ends with the unchanged model (every position seen, the model's KV heads, its cache dtype's bits)."""
    series: dict[str, list[tuple[float, VariantResult]]] = {}
    for row in result.variants[1:]:
        spec = row.spec
        if "+" in spec:
            continue
        fields = dict(part.split("=", 1) for part in spec.split(","))
        if set(fields) == {"window"}:
            series.setdefault("window", []).append((float(fields["window"]), row))
        elif set(fields) == {"sinks", "window"}:
            series.setdefault(f"{fields['sinks']} sinks + window", []).append(
                (float(fields["window"]) + float(fields["sinks"]), row))
        elif "kv-heads" in fields:
            series.setdefault("kv-heads", []).append((float(fields["kv-heads"]), row))
        elif "kv-cache" in fields:
            series.setdefault("kv-cache", []).append((float(fields["kv-cache"].removeprefix("int")), row))
    base = result.variants[0]
    for key, points in series.items():  # the unchanged model ends each line where it stands
        if key.endswith("window"):
            points.append((float(result.tokens), base))
        elif key == "kv-heads" and points[0][1].kv_cache_bytes:
            groups, row = points[0]
            points.append((float(round(groups * base.kv_cache_bytes / row.kv_cache_bytes)), base))
        elif key == "kv-cache":
            points.append((8.0 * {"float32": 4, "bfloat16": 2, "float16": 2}.get(result.kv_dtype, 4), base))
    return series


KL_SMOOTHING = 16  # tokens averaged per point of the KL-along-the-text panel


def running_mean(values: tuple[float, ...], width: int) -> list[float]:
    """Each value averaged with up to width - 1 values before it (a floor of 1e-9 keeps a log axis finite)."""
    out, total = [], 0.0
    for index, value in enumerate(values):
        total += value
        if index >= width:
            total -= values[index - width]
        out.append(max(total / min(index + 1, width), 1e-9))
    return out


def plot_figure(result: WhatIfResult) -> Any:
    """Perplexity and KV bytes at --context against window size, KV groups and code bits (the unchanged model as
    a dashed line), and KL along the text per variant."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    base = result.variants[0]
    series = _series(result)
    panels = [name for name in ("window", "kv-heads", "kv-cache") if any(key.endswith(name) or key == name
                                                                       for key in series)]
    count = len(panels) + 1
    figure, axes = pyplot.subplots(1, count, figsize=(5.2 * count, 4.2), squeeze=False)
    for axis, panel in zip(axes[0], panels):
        twin = axis.twinx()
        for key, points in series.items():
            if not (key == panel or key.endswith(panel)):
                continue
            points.sort(key=lambda point: point[0])
            xs = [x for x, _ in points]
            axis.plot(xs, [row.perplexity for _, row in points], marker="o", label=f"{key}: perplexity")
            twin.plot(xs, [row.kv_cache_bytes_at_context / 2**20 for _, row in points], marker="s",
                      linestyle=":", label=f"{key}: KV MiB")
        axis.axhline(base.perplexity, color="grey", linestyle="--", label="full: perplexity")
        twin.axhline(base.kv_cache_bytes_at_context / 2**20, color="grey", linestyle=":", label="full: KV MiB")
        axis.set_xlabel({"window": "positions a query sees", "kv-heads": "KV heads (groups)",
                         "kv-cache": "bits per cached number"}[panel])
        axis.set_ylabel("perplexity")
        twin.set_ylabel(f"KV cache at {result.context:,} tokens (MiB)")
        handles = axis.get_legend_handles_labels()
        extra = twin.get_legend_handles_labels()
        axis.legend(handles[0] + extra[0], handles[1] + extra[1], fontsize="small")
        axis.set_title(panel)
    axis = axes[0][-1]
    axis.set_prop_cycle(color=pyplot.get_cmap("tab20").colors)
    for row in result.variants[1:]:
        axis.plot(range(len(row.kl_per_token)), running_mean(row.kl_per_token, KL_SMOOTHING), linewidth=0.9,
                  label=row.name)
    axis.set_yscale("log")
    axis.set_xlabel("position in the text (scored tokens)")
    axis.set_ylabel(f"KL(full ‖ variant), nats, {KL_SMOOTHING}-token running mean")
    axis.set_title("KL along the text")
    if len(result.variants) > 1:
        axis.legend(fontsize="x-small", ncol=2, loc="lower right")
    figure.suptitle(f"llmscope what-if · {result.model}")
    figure.tight_layout()
    return figure


def write_plot(result: WhatIfResult, path: Path) -> None:
    """Write plot_figure to a .png or .svg file."""
    from matplotlib import pyplot

    figure = plot_figure(result)
    figure.savefig(path)
    pyplot.close(figure)
