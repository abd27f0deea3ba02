"""Show `attribute` results: the prompt with each token's background coloured by its attribution, the methods side
by side with numbers, the top inputs, the targets x inputs grid for several targets, --plot, and JSON. No compute."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from llmscope.attribution.cost import passes_text, seconds_text
from llmscope.attribution.results import (
    AttributionCost,
    AttributionResult,
    Completeness,
    MethodAttribution,
    disagreement,
)
from llmscope.core.model_info import ModelInfo
from llmscope.render.display import Display, human_bytes, titled, visible
from llmscope.render.generation import colours_on

POSITIVE = (214, 39, 40)  # red: the input raises the function
NEGATIVE = (31, 119, 180)  # blue: the input lowers it
SHORT_NAMES = {"occlusion": "occlusion", "input-x-gradient": "input×grad", "integrated-gradients": "integ.grad",
               "attention-rollout": "rollout"}
GRID_CELL = 7  # characters per input column in the targets x inputs grid


def token_label(text: str, width: int = 12) -> str:
    label = visible(text)
    return label if len(label) <= width else label[: width - 1] + "…"


def number(value: float | None) -> str:
    """Three decimals, or two significant digits for the tiny values (attention rollout's far-off inputs)."""
    if value is None:
        return "-"
    return f"{value:+.1e}" if 0 < abs(value) < 5e-4 else f"{value:+.3f}"


def scale(row: tuple[float | None, ...]) -> float:
    """The largest |attribution| in a row: colours are relative to it (each method on its own scale)."""
    return max((abs(v) for v in row if v is not None), default=0.0) or 1.0


def cell_style(value: float | None, largest: float) -> str:
    """A diverging background: white at 0, red for positive, blue for negative, deeper with |value|/largest."""
    if value is None:
        return "dim"
    strength = min(abs(value) / largest, 1.0)
    base = POSITIVE if value >= 0 else NEGATIVE
    red, green, blue = (round(255 + (c - 255) * strength) for c in base)
    ink = "white" if strength > 0.55 else "black"
    return f"{ink} on rgb({red},{green},{blue})"


def coloured_prompt(result: AttributionResult, method: MethodAttribution, target: int, colour: bool) -> Text:
    """The inputs as text, each token's background coloured by its attribution (plain text without colour)."""
    row = method.matrix[target]
    largest = scale(row)
    line = Text()
    for position, text in enumerate(result.tokens[: result.targets[target].position]):
        line.append(text.replace("\n", "↵"), style=cell_style(row[position], largest) if colour else "")
    return line


def completeness_text(check: Completeness) -> str:
    verdict = "converged" if check.converged else "NOT converged"
    text = (f"sum {check.attribution_sum:.4f} vs f(input) - f(baseline) {check.expected:.4f}: error "
            f"{check.relative_error:.2%} at {check.steps} steps")
    if check.compared_steps is not None and check.largest_move is not None:
        count = len(check.unsettled)
        settled = "every token settled" if not count else f"{count} token{'s' if count != 1 else ''} NOT settled"
        text += (f"; against {check.compared_steps} steps {settled} (largest move {check.largest_move:.1%} of the "
                 "largest value)")
    return f"{text} ({verdict})"


def unsettled_text(result: AttributionResult, check: Completeness) -> str:
    """The tokens integrated gradients has not settled on yet, named (the first five)."""
    named = ", ".join(repr(result.tokens[p]) for p in check.unsettled[:5])
    more = f" and {len(check.unsettled) - 5} more" if len(check.unsettled) > 5 else ""
    return named + more


def method_heading(method: MethodAttribution) -> str:
    name = SHORT_NAMES.get(method.method, method.method)
    unconverged = any(c is not None and not c.converged for c in method.completeness)
    return f"{name}\n(unconverged)" if unconverged else name


def target_heading(result: AttributionResult, target: int) -> str:
    item = result.targets[target]
    about = f"{item.text!r} (log p {item.logprob:.3f})"
    if item.contrast_text is not None:
        about += f" rather than {item.contrast_text!r} (log p {item.contrast_logprob:.3f})"
    return f"Target {about}: {result.target_function} = {item.value:.4f}"


def single_target(result: AttributionResult, target: int, colour: bool, top: int) -> Group:
    """One target: a coloured prompt per method, the inputs x methods table, the ranked top inputs."""
    parts: list[Any] = [Text(target_heading(result, target), style="bold")]
    width = max(len(SHORT_NAMES.get(m.method, m.method)) for m in result.methods)
    for method in result.methods if colour else ():  # without colour these lines carry nothing: the table has it
        label = Text(f"{SHORT_NAMES.get(method.method, method.method):>{width}}  ", style="bold")
        parts.append(label + coloured_prompt(result, method, target, colour))
    table = Table(box=box.SIMPLE, pad_edge=False)
    table.add_column("#", justify="right")
    table.add_column("input", no_wrap=True)
    for method in result.methods:
        table.add_column(method_heading(method), justify="right")
    scales = [scale(m.matrix[target]) for m in result.methods]
    for position in range(result.targets[target].position):
        cells = [Text(number(m.matrix[target][position]),
                      style=cell_style(m.matrix[target][position], s) if colour else "")
                 for m, s in zip(result.methods, scales)]
        table.add_row(str(position), token_label(result.tokens[position]), *cells)
    parts.append(table)
    parts.append(ranked_table(result, target, top))
    return Group(*parts)


def ranked(method: MethodAttribution, target: int, count: int) -> list[int]:
    row = method.matrix[target]
    return sorted((p for p, v in enumerate(row) if v is not None), key=lambda p: -row[p])[:count]  # type: ignore


def ranked_table(result: AttributionResult, target: int, top: int) -> Any:
    table = Table(box=box.SIMPLE, pad_edge=False)
    table.add_column("rank", justify="right")
    for method in result.methods:
        table.add_column(SHORT_NAMES.get(method.method, method.method), no_wrap=True)
    columns = [ranked(m, target, top) for m in result.methods]
    for rank in range(max((len(c) for c in columns), default=0)):
        cells = []
        for method, order in zip(result.methods, columns):
            if rank < len(order):
                position = order[rank]
                cells.append(f"{token_label(result.tokens[position], 10)} {number(method.matrix[target][position])}")
            else:
                cells.append("")
        table.add_row(str(rank + 1), *cells)
    return titled(f"Top {top} inputs per method", table)


def grid(result: AttributionResult, method: MethodAttribution, width: int, colour: bool) -> Any:
    """Targets x inputs for one method, fitted to `width` columns: the last inputs kept, the cut named."""
    label_width = max(6, min(12, max(len(token_label(t.text)) for t in result.targets)))
    room = max(1, (width - label_width - 2) // (GRID_CELL + 1))
    total = len(result.ids)
    first = max(0, total - room)
    table = Table(box=None, pad_edge=False, show_edge=False, padding=(0, 1, 0, 0))
    table.add_column("target", no_wrap=True, width=label_width)
    for position in range(first, total):
        table.add_column(token_label(result.tokens[position], GRID_CELL), justify="right", no_wrap=True,
                         width=GRID_CELL)
    for index, item in enumerate(result.targets):
        row = method.matrix[index]
        largest = scale(row)
        cells = [Text("" if row[p] is None else f"{row[p]:+.2f}"[:GRID_CELL],
                      style=cell_style(row[p], largest) if colour and row[p] is not None else "")
                 for p in range(first, total)]
        table.add_row(token_label(item.text), *cells)
    names = token_label(result.tokens[0]) + (f" … {token_label(result.tokens[first - 1])}" if first > 1 else "")
    cut = (f"the first {first} of {total} inputs ({names}) are cut to fit {width} columns; --json or --plot has "
           "them all") if first else None
    return titled(f"{method.method}: targets x inputs", table, cut)


def top_per_target(result: AttributionResult, top: int) -> Any:
    table = Table(box=box.SIMPLE, pad_edge=False)
    table.add_column("target", no_wrap=True)
    for method in result.methods:
        table.add_column(SHORT_NAMES.get(method.method, method.method))
    for index, item in enumerate(result.targets):
        cells = [", ".join(token_label(result.tokens[p], 10) for p in ranked(m, index, top)) for m in result.methods]
        table.add_row(token_label(item.text), *cells)
    return titled(f"Top {top} inputs per target", table)


def disagreement_lines(result: AttributionResult) -> list[str]:
    lines = []
    for index in range(len(result.targets)):
        picks = disagreement(result, index)
        if picks is None:
            continue
        named = ", ".join(f"{method} {token_label(token)}" for method, token in picks.items())
        which = f"target {index + 1} " if len(result.targets) > 1 else ""
        lines.append(f"the methods disagree on the top input for {which}{result.targets[index].text!r}: {named}")
    return lines


def warn_completeness(display: Display, result: AttributionResult) -> None:
    """On stderr: every integrated-gradients row over the limit, with the steps that would fix it."""
    for method in result.methods:
        for index, check in enumerate(method.completeness):
            if check is None or check.converged:
                continue
            if check.suggested_steps is not None:
                fix = f"--steps {check.suggested_steps} passes both checks"
            elif method.parameters.get("steps") == "auto" and check.steps < method.parameters.get("max_auto_steps", 0):
                fix = (f"--max-time left room for {check.steps} steps, not more: raise --max-time, or try another "
                       "--baseline")
            elif method.parameters.get("steps") == "auto":
                fix = (f"the automatic steps stopped at their budget of {check.steps}; try --steps {check.steps * 4} "
                       "or another --baseline")
            elif check.steps * 4 > (method.parameters.get("steps_cap") or check.steps * 4):
                fix = "--max-time left no room to try more steps: raise it, or try more --steps or another --baseline"
            else:
                fix = (f"--steps {2 * check.steps} and {4 * check.steps} do not pass either; try more, or "
                       "another --baseline")
            problems = []
            if check.relative_error > method.parameters.get("completeness_limit", 0.01):
                problems.append(f"completeness error {check.relative_error:.1%} at {check.steps} steps")
            if check.unsettled:
                problems.append(f"{unsettled_text(result, check)} still moved by up to {check.largest_move:.0%} of "
                                f"the largest value between {check.compared_steps} and {check.steps} steps")
            display.warning(f"integrated gradients for {result.targets[index].text!r} did not converge: "
                            f"{'; '.join(problems)}; {fix}")


def cost_line(cost: AttributionCost) -> str:
    """The plan, said before the methods run: passes per method, the time at the measured rate, peak memory."""
    time = seconds_text(cost.seconds)
    if cost.max_seconds > cost.seconds * 1.05:
        time += f" (up to {seconds_text(cost.max_seconds)} if integrated gradients needs more steps)"
    timed = ", ".join(f"{p.kind} over {p.tokens} tokens{f' x {p.rows} rows' if p.rows > 1 else ''} "
                      f"{seconds_text(p.seconds)}" for p in cost.timed_passes)
    return (f"{passes_text(cost)}; about {time} (timed: {timed}; --max-time {cost.budget_seconds:g} s); peak "
            f"memory about {human_bytes(cost.peak_bytes)} (weights {human_bytes(cost.weights_bytes)})")


def show_attribution(display: Display, info: ModelInfo, result: AttributionResult, top: int = 5,
                     plot: str | None = None, **extra: Any) -> None:
    """attribute's one render entry: JSON (extra keys first), or the views for people; --plot writes the image."""
    warn_completeness(display, result)
    low = getattr(info, "activations", None) or (info.dtype if info.dtype in ("bfloat16", "float16") else None)
    if low in ("bfloat16", "float16"):
        display.warning(f"the model computes in {low}: log-probabilities, and so attributions, are rounded to about "
                        "3 significant digits; pass --quantize none (and --dtype float32) for float32 figures")
    if plot is not None:
        write_plot(result, Path(plot))
        display.status(f"wrote {plot}")
    if not display.for_people:
        display.document("attribute", info, attribution_payload(result), **extra)
        return
    colour = colours_on(display)
    if len(result.targets) == 1:
        display.result(single_target(result, 0, colour, top))
    else:
        display.result(Text(f"{len(result.targets)} targets ({result.target_source}): "
                            f"{''.join(t.text for t in result.targets)!r}; {result.target_function}", style="bold"))
        for method in result.methods:
            display.result(grid(result, method, display.out.width, colour))
        display.result(top_per_target(result, min(top, 3)))
    for method in result.methods:
        checks = [c for c in method.completeness if c is not None]
        if len(checks) == 1:
            display.result(Text(f"integrated gradients: {completeness_text(checks[0])}"))
        elif checks:
            worst = max(checks, key=lambda c: c.relative_error)
            low, high = min(c.steps for c in checks), max(c.steps for c in checks)
            steps = str(low) if low == high else f"{low} to {high}"
            display.result(Text(f"integrated gradients, {len(checks)} targets: the largest completeness error is "
                                f"{worst.relative_error:.2%}, at {steps} steps "
                                f"({sum(not c.converged for c in checks)} not converged)"))
    for line in disagreement_lines(result):
        display.result(Text(line, style="yellow"))
    if colour:
        display.note(Text("colour: ") + Text(" raises the function ", style=cell_style(1, 1)) + Text(" ")
                     + Text(" lowers it ", style=cell_style(-1, 1)) + Text(" (each method on its own scale)"))


def attribution_payload(result: AttributionResult) -> dict[str, Any]:
    """The JSON body: tokens, ids, one matrix per method with its settings and completeness, the target function."""
    return {
        "prompt": result.prompt, "text": result.text, "chat": result.chat,
        "tokens": list(result.tokens), "ids": list(result.ids), "prompt_tokens": result.prompt_tokens,
        "target_source": result.target_source, "target_function": result.target_function,
        "targets": [{"position": t.position, "token": t.text, "id": t.token_id, "logprob": t.logprob,
                     "contrast": None if t.contrast_id is None else {
                         "token": t.contrast_text, "id": t.contrast_id, "logprob": t.contrast_logprob},
                     "value": t.value} for t in result.targets],
        "methods": [{"method": m.method, "question": m.question, "parameters": m.parameters,
                     "matrix": [list(row) for row in m.matrix],
                     "completeness": [None if c is None else {
                         "attribution_sum": c.attribution_sum, "expected": c.expected, "error": c.error,
                         "relative_error": c.relative_error, "steps": c.steps, "converged": c.converged,
                         "suggested_steps": c.suggested_steps, "compared_steps": c.compared_steps,
                         "largest_move": c.largest_move, "unsettled": list(c.unsettled)} for c in m.completeness],
                     "top": list(m.top), "seconds": m.seconds} for m in result.methods],
        "top_agree": list(result.top_agree), "seconds": result.seconds, "cost": result.cost,
    }


def write_plot(result: AttributionResult, path: Path) -> None:
    """One heatmap per method (targets x inputs, diverging colours around 0), token labels on both axes."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy
    from matplotlib import pyplot

    count = len(result.methods)
    inputs = [token_label(t, 10) for t in result.tokens]
    targets = [token_label(t.text, 10) for t in result.targets]
    figure, axes = pyplot.subplots(count, 1, figsize=(max(4.0, 0.45 * len(inputs) + 2.5),
                                                      count * (0.4 * len(targets) + 1.6) + 0.5),
                                   squeeze=False, dpi=100, layout="constrained")
    for axis, method in zip(axes[:, 0], result.methods):
        values = numpy.array([[numpy.nan if v is None else v for v in row] for row in method.matrix], dtype=float)
        largest = float(numpy.nanmax(numpy.abs(values))) if numpy.isfinite(values).any() else 1.0
        colours = matplotlib.colormaps["RdBu_r"].copy()
        colours.set_bad("#d0d0d0")  # grey: not in that target's context (or held, for integrated gradients)
        image = axis.imshow(numpy.ma.masked_invalid(values), cmap=colours, vmin=-largest, vmax=largest,
                            aspect="auto")
        axis.set_xticks(range(len(inputs)), inputs, rotation=90, fontsize=8)
        axis.set_yticks(range(len(targets)), targets, fontsize=8)
        what = "attention weight; the same for any target" if method.method == "attention-rollout" else (
            result.target_function)
        axis.set_title(f"{method.method} ({what})", fontsize=9)
        figure.colorbar(image, ax=axis, shrink=0.8)
    figure.savefig(path)
    pyplot.close(figure)
