"""Show an ArchitectureReport: summary, parameter split, weight memory, KV-cache sizes and the folded module tree
as Rich tables, or one JSON document. It computes nothing and never loads a model."""

from __future__ import annotations

import re

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from llmscope.architecture import ArchitectureReport, ModuleNode
from llmscope.render import Display, emit_json, human_bytes, human_count, titled
from llmscope.results import ModelInfo

GROUP_LABELS = {"embeddings": "embeddings", "attention": "attention", "mlp": "MLP", "norms": "norms",
                "lm_head": "LM head", "other": "other"}


def _pairs_table(title: str, rows: list[tuple[str, str]]) -> Group:
    table = Table(box=box.SIMPLE, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, value)
    return titled(title, table)


def _maybe(value: object, fmt: str = "{:,}") -> str:
    return "-" if value is None else fmt.format(value)


def summary_table(report: ArchitectureReport) -> Group:
    s = report.summary
    attention = s.attention
    rows = [
        ("model class", s.model_class), ("model type", s.model_type), ("layers", f"{s.layers:,}"),
        ("hidden size", f"{s.hidden_size:,}"), ("intermediate size", _maybe(s.intermediate_size)),
        ("vocabulary", f"{s.vocab_size:,}"), ("attention heads", f"{attention.heads}"),
        ("KV heads", f"{attention.kv_heads}"), ("head dim", f"{attention.head_dim}"),
        ("attention", attention.description), ("context length", _maybe(s.context_length)),
    ]
    if s.sliding_window:
        scope = ("every layer" if s.sliding_window_layers == s.layers
                 else f"{s.sliding_window_layers} of {s.layers} layers")
        rows.append(("sliding window", f"{s.sliding_window:,} tokens on {scope} (local attention)"))
    rows += [
        ("positions", s.positional_encoding), ("activation", s.activation or "-"),
        ("norm", (s.norm or "-") + (f", eps {s.norm_eps:g}" if s.norm_eps is not None else "")),
        ("tied embeddings", "yes: the LM head reuses the input embeddings" if s.tied_embeddings else "no"),
        ("dtype", (s.dtype or "not stated in the config") + ("" if report.source == "weights" else " (as stored)")),
        ("devices", ", ".join(s.devices) + (" (config only, no weights loaded)" if s.devices == ("meta",) else "")),
    ]
    return _pairs_table(f"Architecture: {s.model_class}", rows)


def parameters_table(report: ArchitectureReport) -> Group:
    p = report.parameters
    table = Table(box=box.SIMPLE, pad_edge=False)
    table.add_column("group")
    table.add_column("parameters", justify="right")
    table.add_column("share", justify="right")
    for group, label in GROUP_LABELS.items():
        count = getattr(p, group)
        if group == "lm_head" and report.summary.tied_embeddings:
            table.add_row(label, "tied", "-")
            continue
        if group == "other" and count == 0:
            continue
        table.add_row(label, f"{count:,}", f"{count / p.total:.1%}" if p.total else "-")
    table.add_section()
    table.add_row(Text("total", style="bold"), Text(f"{p.total:,}", style="bold"), human_count(p.total))
    return titled("Parameters (a tied LM head counts once)" if report.summary.tied_embeddings else "Parameters",
                  table)


def memory_table(report: ArchitectureReport) -> Group:
    table = Table(box=box.SIMPLE, pad_edge=False)
    for name in report.parameters.memory_bytes:
        table.add_column(name, justify="right")
    table.add_row(*(human_bytes(value) for value in report.parameters.memory_bytes.values()))
    return titled("Weights in memory (parameters x bytes each; quantization scales not counted)", table)


def kv_cache_table(report: ArchitectureReport) -> Group:
    kv = report.kv_cache
    a = report.summary.attention
    title = f"KV cache (batch 1, {kv.dtype}): {kv.bytes_per_token:,} bytes per token"
    table = Table(box=box.SIMPLE, pad_edge=False)
    table.add_column("context", justify="right")
    table.add_column("KV cache", justify="right")
    table.add_column(f"with {a.heads} KV heads (MHA)", justify="right")
    table.add_column("saved", justify="right")
    for point in kv.points:
        saved = 1 - point.bytes / point.full_mha_bytes if point.full_mha_bytes else 0.0
        table.add_row(f"{point.tokens:,}", human_bytes(point.bytes), human_bytes(point.full_mha_bytes),
                      f"{saved:.0%}")
    return titled(title, table, kv_cache_notes(report) + "\n")


LINEAR_FEATURES = re.compile(r"in_features=(\d+), out_features=(\d+)")
LONG_FLOAT = re.compile(r"\d+\.\d{7,}(?:e[-+]?\d+)?")


def kv_cache_notes(report: ArchitectureReport) -> str:
    kv, a = report.kv_cache, report.summary.attention
    lines = [f"bytes per token = 2 (K and V) x {report.summary.layers} layers x {a.kv_heads} KV heads x "
             f"{a.head_dim} dims x {kv.bytes_per_value} bytes ({kv.dtype})"]
    if kv.saving > 0:
        lines.append(f"{a.kind} attention keeps {1 - kv.saving:.0%} of the cache full multi-head attention needs")
    if kv.note:
        lines.append(f"sliding window: {kv.note}")
    return "\n".join(lines)


def node_label(node: ModuleNode, compact: bool = False) -> str:
    """One tree line as print(model) writes it, without the children: "(0-31): 32 x Phi3DecoderLayer".

    compact writes "in_features=A, out_features=B" as "A → B" and long floats (float32 eps read back as
    9.999999747378752e-06) in %g form, so that deep lines fit 80 columns.
    """
    name = f"({node.name}): " if node.name else ""
    count = f"{node.repeat} x " if node.repeat > 1 else ""
    if node.truncated:
        return f"{name}{count}{node.class_name}(…)"
    if node.children:
        return f"{name}{count}{node.class_name}"
    extra = node.extra
    if compact:
        extra = LONG_FLOAT.sub(lambda match: f"{float(match.group(0)):g}", LINEAR_FEATURES.sub(r"\1 → \2", extra))
    return f"{name}{count}{node.class_name}({extra})"


def _tree_rows(node: ModuleNode, level: int, compact: bool, indent: int,
               rows: list[tuple[str, str]]) -> list[tuple[str, str]]:
    if node.tied_to:
        count = "tied"
    elif node.repeat > 1:
        count = f"{node.repeat}x{human_count(node.parameters)}"
    else:
        count = human_count(node.parameters) if node.parameters else ""
    rows.append((count, " " * indent * level + node_label(node, compact)))
    for child in node.children:
        _tree_rows(child, level + 1, compact, indent, rows)
    return rows


def tree_table(report: ArchitectureReport, width: int = 80) -> Group:
    """The module tree with a parameter count per line, as print(model) writes it when the screen is wide enough;
    on a narrow one Linear shapes and long floats are shortened, then the indent goes from 2 spaces to 1."""
    for compact, indent in ((False, 2), (True, 2), (True, 1)):
        rows = _tree_rows(report.tree, 0, compact, indent, [])
        if max(len(count) for count, _ in rows) + max(len(label) for _, label in rows) + 2 <= width:
            break
    depth_note = f", depth {report.depth}" if report.depth is not None else ""
    table = Table(box=None, show_header=False, pad_edge=False, padding=(0, 1))
    table.add_column(justify="right", no_wrap=True, style="cyan")
    table.add_column(overflow="fold")
    for count, label in rows:
        table.add_row(count, Text(label))
    return titled(f"Modules (parameters per module{depth_note})", table, " ")


def tree_text(node: ModuleNode) -> str:
    """The tree exactly as torch's print(model) prints it (used to check the folding against torch)."""
    lines = [line for line in node.extra.split("\n") if line] if node.extra else []
    children = []
    for child in node.children:
        body = tree_text(child)
        if child.repeat > 1:
            body = f"{child.repeat} x {body}"
        body = body.replace("\n", "\n  ")
        children.append(f"({child.name}): {body}")
    text = node.class_name + "("
    if len(lines) == 1 and not children:
        text += lines[0]
    elif lines or children:
        text += "\n  " + "\n  ".join(lines + children) + "\n"
    return text + ")"


def show_architecture(display: Display, report: ArchitectureReport) -> None:
    display.result(summary_table(report))
    display.result(parameters_table(report))
    display.result(memory_table(report))
    display.result(kv_cache_table(report))
    display.result(tree_table(report, display.out.width))


def show_architecture_json(display: Display, info: ModelInfo, report: ArchitectureReport) -> None:
    emit_json(display, "architecture", info, report)
