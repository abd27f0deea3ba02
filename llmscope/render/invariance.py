"""Show check-invariance: one table of the largest difference per quantity (alone vs batched, alone vs cached), or
the JSON document. It computes nothing; llmscope.invariance.check does."""

from __future__ import annotations

from rich.table import Table

from llmscope.core.model_info import InvarianceInfo, ModelInfo
from llmscope.invariance.check import QUANTITIES, Difference, InvarianceResult
from llmscope.render.display import Display, titled


def _cell(difference: Difference | None) -> str:
    if difference is None or difference.identical is None:
        return "- (none given)"
    if difference.quantity == "greedy tokens":
        differing = int(difference.max_abs or 0)
        return (f"same {difference.compared}" if not differing
                else f"{differing} of {difference.compared} differ")
    if difference.identical:
        return "0 (bit for bit)"
    return f"{difference.max_abs:.3g}"


def show_invariance(display: Display, info: ModelInfo | None, result: InvarianceResult) -> None:
    """check-invariance's one render entry: the document (--json) or the table and a verdict on stderr."""
    if not display.for_people:
        display.document("check-invariance", info, result)
        return
    found = {(d.quantity, d.comparison): d for d in result.differences}
    table = Table(title_justify="left")
    table.add_column("quantity")
    table.add_column("alone vs batch", justify="right")
    table.add_column("alone vs cache", justify="right")
    for quantity in QUANTITIES:
        if (quantity, "batch") in found or (quantity, "cache") in found:
            table.add_row(quantity, _cell(found.get((quantity, "batch"))), _cell(found.get((quantity, "cache"))))
    numerics = "invariant numerics" if result.invariant else "the model's own numerics"
    verdict = info.invariance if info is not None else None
    if verdict is not None and verdict.tile_rows is not None:
        numerics += f" ({verdict_text(verdict)})"
    title = f"largest difference over {result.prompt_tokens} prompt + {result.new_tokens} greedy tokens"
    caption = (f"batch: {result.batch_size} prompts shuffled, this one row {result.batch_index}, lengths "
               f"{', '.join(map(str, result.batch_lengths))} (left-padded); cache: prefill, then one token at a time; "
               f"--quantize {result.quantize}, {result.attention} attention, {numerics}")
    display.result(titled(title, table, caption))
    if result.identical:
        display.status(f"identical: every logit, hidden state, attention weight and greedy token matched bit for bit "
                       f"({result.seconds:.1f} s)")
    else:
        display.warning("the prompt's numbers depend on how it was run (see the table): "
                        + ("this device or kernel gives no invariance guarantee" if not result.invariant
                           else "this machine's kernels failed llmscope's self-test (`llmscope env` shows it)"
                           if verdict is not None and verdict.verdict == "failed"
                           else "invariant numerics were installed, so this is a bug: please report it"))


def verdict_text(verdict: InvarianceInfo) -> str:
    """The self-test's verdict in a few words: "self-test: invariant, 8 rows per GEMM call"."""
    if verdict.verdict == "off":
        return "off: " + verdict.probe
    rows = f"{verdict.tile_rows} row{'s' if verdict.tile_rows != 1 else ''} per GEMM call"
    said = {"invariant": f"self-test: invariant, {rows}",
            "fallback": f"self-test: fallback to {rows} (tiles failed here; slower, invariant by construction)",
            "failed": f"self-test: FAILED, not invariant on this machine ({rows})"}
    return said.get(verdict.verdict, verdict.verdict)
