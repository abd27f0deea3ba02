"""Show check-invariance: one table of the largest difference per quantity (alone vs batched, alone vs cached), or
the JSON document. It computes nothing; llmscope.invariance.check does."""

from __future__ import annotations

from rich.table import Table

from llmscope.core.model_info import ModelInfo
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
                           else "invariant numerics were installed, so this is a bug: please report it"))
