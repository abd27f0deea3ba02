"""Show a NextTokenResult: the prompt's tokens and tensor shapes, the top-k table of each step (with the sampler's
view beside the raw one), and the logit lens, as Rich tables or one JSON document. It computes nothing."""

from __future__ import annotations

import json
import math

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from llmscope.core.model_info import ModelInfo
from llmscope.inspection.next_token import NextTokenResult, NextTokenStep
from llmscope.render.display import Display, titled, visible

BLOCKS = " ▏▎▍▌▋▊▉█"
TOKEN_WIDTH = 16


def bar(fraction: float, width: int) -> str:
    """A horizontal bar of `width` cells filled to `fraction`, in eighths of a cell."""
    eighths = round(max(0.0, min(1.0, fraction)) * width * 8)
    full, part = divmod(eighths, 8)
    return ("█" * full + (BLOCKS[part] if part else "")).ljust(width)


def probability_text(value: float) -> str:
    """Four decimals, or scientific notation for what would round to 0.0000."""
    if value == 0:
        return "0"
    return f"{value:.4f}" if value >= 0.00005 else f"{value:.1e}"


def shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(size) for size in shape) + "]"


def token_text(text: str) -> str:
    return visible(text) if text else "∅"


def prompt_lines(result: NextTokenResult) -> Text:
    """The prompt's tokens (whitespace visible, split by │), their ids, and where the scores come from."""
    if result.layers == 0:  # from a server's log-probabilities (--endpoint): no ids, shapes or full softmax
        line = Text("prompt: ", style="bold")
        line.append(token_text(result.prompt_text))
        line.append("\nscores for the next token: the server's top log-probabilities", style="dim")
        return line
    n = len(result.prompt_tokens)
    line = Text()
    line.append(f"prompt ({n} token{'s' if n != 1 else ''}{', chat template' if result.chat_template_applied else ''}"
                "): ", style="bold")
    for index, token in enumerate(result.prompt_tokens):
        if index:
            line.append("│", style="dim")
        line.append(token_text(token.text))
    line.append("\nids: ", style="bold")
    line.append(" ".join(str(token.token_id) for token in result.prompt_tokens))
    line.append(f"\nhidden states after the {result.layers} blocks: ", style="bold")
    line.append(shape_text(result.hidden_shape))
    line.append("   LM head output: ", style="bold")
    line.append(shape_text(result.logits_shape))
    line.append(f"\nscores for the next token: logits[0, -1] (float32 softmax over {result.vocab_size:,} tokens)",
                style="dim")
    return line


def step_title(result: NextTokenResult, step: NextTokenStep) -> str:
    chosen = step.chosen
    entropy = "" if math.isnan(step.entropy) else f", entropy {step.entropy:.2f} nats"  # NaN: not known
    if len(result.steps) == 1:
        return f"Next token: {token_text(chosen.text)} (p {chosen.probability:.4f}{entropy})"
    return (f"Step {step.index + 1}: {token_text(chosen.text)} p {chosen.probability:.4f}, "
            f"log-prob so far {step.cumulative_logprob:.3f}{entropy}")


def sampler_label(result: NextTokenResult) -> str:
    parts = []
    if result.temperature is not None:
        parts.append(f"T={result.temperature:g}")
    if result.top_p is not None:
        parts.append(f"top-p={result.top_p:g}")
    return " ".join(parts)


def step_table(result: NextTokenResult, step: NextTokenStep) -> Group:
    sampler = step.sampler_entropy is not None
    caption = None
    if sampler:
        kept = step.sampler_kept or 0
        caption = (f"sampler ({sampler_label(result)}): {kept:,} token{'s' if kept != 1 else ''} kept, "
                   f"entropy {step.sampler_entropy:.2f} nats\n")
    table = Table(box=box.SIMPLE, pad_edge=False)
    table.add_column("#", justify="right")
    table.add_column("token", max_width=TOKEN_WIDTH, no_wrap=True, overflow="ellipsis")
    table.add_column("id", justify="right")
    table.add_column("prob", justify="right")
    table.add_column("logit", justify="right")
    table.add_column("cum", justify="right")
    if sampler:
        table.add_column("sampler", justify="right")
    width = 8 if sampler else 14
    table.add_column("", no_wrap=True, style="green", min_width=width)
    marked = len(result.steps) > 1
    for row in step.top:
        rank = f"▸{row.rank}" if marked and row == step.chosen else str(row.rank)
        cells = [rank, token_text(row.text), str(row.token_id) if row.token_id >= 0 else "-",
                 f"{row.probability:.4f}", "-" if math.isnan(row.logit) else f"{row.logit:.2f}",
                 f"{row.cumulative:.4f}"]
        if sampler:
            cells.append(f"{row.sampler_probability:.4f}")
        cells.append(bar(row.probability, width))
        table.add_row(*cells, style="bold" if marked and row.rank == 1 else None)
    return titled(step_title(result, step), table, caption)


def lens_table(result: NextTokenResult) -> Group:
    answer = result.answer
    label = token_text(answer.text)
    table = Table(box=box.SIMPLE, pad_edge=False)
    table.add_column("layer", justify="right")
    table.add_column("top token", max_width=TOKEN_WIDTH, no_wrap=True, overflow="ellipsis")
    table.add_column("p", justify="right")
    table.add_column(f"rank of {label}", justify="right", max_width=22)
    table.add_column(f"p({label})", justify="right", max_width=22)
    table.add_column("", no_wrap=True, style="green", min_width=10)
    for layer in result.lens or ():
        name = "embed" if layer.layer == 0 else str(layer.layer)
        table.add_row(name, token_text(layer.top_text), f"{layer.top_probability:.4f}", f"{layer.answer_rank:,}",
                      probability_text(layer.answer_probability), bar(layer.answer_probability, 10),
                      style="bold" if layer.answer_rank == 1 else None)
    return titled("Logit lens: the last position after each block -> final norm -> LM head", table,
                  result.lens_note)


def show_next_token(display: Display, info: ModelInfo, result: NextTokenResult, **extra: object) -> None:
    """next-token's one render entry: the document (--json / --jsonl, extra keys first) or the tables."""
    if not display.for_people:
        display.document("next-token", info, result, **extra)
        return
    display.result(prompt_lines(result))
    display.result(Text(""))
    for step in result.steps:
        display.result(step_table(result, step))
    if len(result.steps) > 1:
        last = result.steps[-1]
        line = Text("greedy continuation: ", style="bold")
        line.append(json.dumps(result.continuation, ensure_ascii=False))
        line.append(f"  (log-prob {last.cumulative_logprob:.3f}, {len(result.steps)} tokens)", style="dim")
        display.result(line)
        display.result(Text(""))
    if result.lens is not None:
        display.result(lens_table(result))
