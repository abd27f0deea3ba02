"""Show an ArchitectureReport: summary, parameter split, weight memory, KV-cache sizes, memory plan and the folded
module tree as Rich tables, or one JSON document. It computes nothing and never loads a model."""

from __future__ import annotations

import re

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from llmscope.architecture.describe import ArchitectureReport, ModuleNode
from llmscope.core.model_info import ModelInfo
from llmscope.render.display import Display, human_bytes, human_count, titled

GROUP_LABELS = {"embeddings": "embeddings", "attention": "attention", "mlp": "MLP", "experts": "routed experts",
                "router": "router", "norms": "norms", "lm_head": "LM head", "other": "other"}


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
        ("KV heads", f"{attention.kv_heads}" if attention.latent_rank is None else "none: one latent per token"),
        ("head dim", f"{attention.head_dim}"),
        ("attention", attention.description), ("context length", _maybe(s.context_length)),
    ]
    if not attention.heads:  # no attention at all (Mamba): no heads to count
        rows = [row for row in rows if row[0] not in ("attention heads", "KV heads", "head dim")]
    if len(s.layer_kinds) > 1 or (s.layer_kinds and s.layer_kinds[0].kind not in ("full", "sliding", "latent")):
        rows.append(("layer pattern", s.layer_pattern))
        rows += [(f"  {kind.layers} layer{'s' if kind.layers > 1 else ''}", kind.description)
                 for kind in s.layer_kinds]
    if s.experts:
        shared = ""
        if s.shared_experts:
            verb = "s that always run" if s.shared_experts > 1 else " that always runs"
            shared = f", plus {s.shared_experts} shared expert{verb}"
        rows.append(("experts", f"mixture of experts: {s.experts} routed experts per MoE layer, "
                                f"{s.experts_per_token} run for each token{shared}"))
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
        if count == 0 and (group in ("other", "experts", "router") or (group == "mlp" and p.experts)):
            continue
        table.add_row(label, f"{count:,}", f"{count / p.total:.1%}" if p.total else "-")
    table.add_section()
    table.add_row(Text("total", style="bold"), Text(f"{p.total:,}", style="bold"), human_count(p.total))
    if p.active != p.total:
        s = report.summary
        table.add_row(Text("active per token", style="bold"), Text(f"{p.active:,}", style="bold"),
                      human_count(p.active))
        table.add_row(Text(f"  ({s.experts_per_token} of {s.experts} routed experts)", style="dim"), "",
                      f"{p.active / p.total:.0%}" if p.total else "-")
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
    table.add_column("KV + state" if kv.state_bytes else "KV cache", justify="right")
    if a.heads:
        table.add_column(f"with {a.heads} KV heads (MHA)", justify="right")
        table.add_column("saved", justify="right")
    for point in kv.points:
        saved = 1 - point.bytes / point.full_mha_bytes if point.full_mha_bytes else 0.0
        past = report.summary.context_length is not None and point.tokens > report.summary.context_length
        cells = [f"{point.tokens:,}" + ("*" if past else ""), human_bytes(point.bytes)]
        table.add_row(*cells, *((human_bytes(point.full_mha_bytes), f"{saved:.0%}") if a.heads else ()))
    return titled(title, table, kv_cache_notes(report) + "\n")


LINEAR_FEATURES = re.compile(r"in_features=(\d+), out_features=(\d+)")
LONG_FLOAT = re.compile(r"\d+\.\d{7,}(?:e[-+]?\d+)?")


def kv_cache_notes(report: ArchitectureReport) -> str:
    kv, a = report.kv_cache, report.summary.attention
    layers = kv.full_attention_layers + kv.windowed_layers
    value = f"{kv.bytes_per_value:g} bytes ({kv.dtype})"
    plural = "s" if layers != 1 else ""
    if not layers:
        lines = ["no attention layers: no keys or values are cached"]
    elif a.latent_rank is not None:
        lines = [f"bytes per token = {layers} layer{plural} x ({a.latent_rank} latent + {a.rope_dims} rotary) dims"
                 f" x {value}"]
    else:
        lines = [f"bytes per token = 2 (K and V) x {layers} layer{plural} x {a.kv_heads} KV heads x {a.head_dim} "
                 f"dims x {value}"]
    if kv.state_bytes:
        plural = "s" if kv.state_layers != 1 else ""
        lines.append(f"plus a fixed {human_bytes(kv.state_bytes)} of state per sequence in the {kv.state_layers} "
                     f"{kv.state_mixer or 'linear-attention'} layer{plural}, whatever the length (convolution "
                     "states in the weights' dtype, SSM / delta-net states in float32)")
    if kv.saving > 0:
        lines.append(f"{a.kind} attention keeps {1 - kv.saving:.0%} of the cache full multi-head attention needs")
    if kv.note:
        lines.append(kv.note)
    if a.latent_rank is not None:
        lines.append("multi-head latent attention caches one compressed latent per token instead of K and V per head")
    context = report.summary.context_length
    if context is not None and any(point.tokens > context for point in kv.points):
        lines.append(f"* past the model's context of {context:,} tokens")
    return "\n".join(lines)


def node_label(node: ModuleNode, compact: bool = False) -> str:
    """One tree line as print(model) writes it, without the children: "(0-31): 32 x Phi3DecoderLayer".

    compact writes "in_features=A, out_features=B" as "A → B" and long floats (float32 eps read back as
    9.999999747378752e-06) in %g form, so that deep lines fit 80 columns. Routed experts say how many run.
    """
    name = f"({node.name}): " if node.name else ""
    count = f"{node.repeat} x " if node.repeat > 1 else ""
    experts = f" [{node.experts[0]} experts, {node.experts[1]} per token]" if node.experts else ""
    if node.truncated:
        return f"{name}{count}{node.class_name}(…){experts}"
    if node.children:
        return f"{name}{count}{node.class_name}{experts}"
    extra = node.extra
    if compact:
        extra = LONG_FLOAT.sub(lambda match: f"{float(match.group(0)):g}", LINEAR_FEATURES.sub(r"\1 → \2", extra))
    return f"{name}{count}{node.class_name}({extra}){experts}"


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
    """The module tree with a parameter count per line, in one format whatever --depth: Linear shapes as "A → B",
    float32 eps as written in the config (1e-05); the indent goes from 2 spaces to 1 on a narrow screen, and a
    line still too long folds inside its own column, never into the counts."""
    for indent in (2, 1):
        rows = _tree_rows(report.tree, 0, True, indent, [])
        if max(len(count) for count, _ in rows) + max(len(label) for _, label in rows) + 2 <= width:
            break
    depth_note = f", depth {report.depth}" if report.depth is not None else ""
    table = Table(box=None, show_header=False, pad_edge=False, padding=(0, 1))
    table.add_column(justify="right", no_wrap=True, style="cyan")
    table.add_column(overflow="fold")
    room = width - max(len(count) for count, _ in rows) - 1
    for count, label in rows:
        for index, line in enumerate(_hanging(label, room)):
            table.add_row(count if index == 0 else "", Text(line))
    return titled(f"Modules (parameters per module{depth_note})", table, " ")


def _hanging(label: str, room: int) -> list[str]:
    """A tree line too long for its column, broken after ", " with the rest indented under its own text."""
    if len(label) <= room or room < 20:
        return [label]
    indent = " " * (len(label) - len(label.lstrip()) + 4)
    lines, line = [], ""
    for piece in re.split(r"(?<=, )", label):
        if line and len(line) + len(piece.rstrip()) > room:
            lines.append(line.rstrip())
            line = indent
        line += piece
    return [*lines, line]


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


def plan_table(report: ArchitectureReport) -> Group:
    plan = report.plan
    with_state = any(row.state_bytes for row in plan.rows)
    table = Table(box=box.SIMPLE, pad_edge=False, collapse_padding=True)
    for header in ("context", "weights", "KV cache") + (("state",) if with_state else ()) + ("total",):
        table.add_column(header, justify="right", no_wrap=True)
    for name, memory in plan.gpus:
        table.add_column(human_bytes(memory) if name == "--gpu-memory" else name, justify="center", no_wrap=True)
    for row in plan.rows:
        past = plan.model_context is not None and row.tokens > plan.model_context
        cells = [f"{row.tokens:,}" + ("*" if past else ""), human_bytes(plan.weight_bytes), human_bytes(row.kv_bytes)]
        cells += [human_bytes(row.state_bytes)] if with_state else []
        cells.append(Text(human_bytes(row.total_bytes), style="bold", no_wrap=True))
        cells += [Text("fits", style="green") if fits else Text("no", style="red") for fits in row.fits]
        table.add_row(*cells)
    held_in = f"packed ({plan.weights_format})" if plan.weights_format else f"in {plan.weights_dtype}"
    title = f"Memory plan: batch {plan.batch_size}, weights {held_in}, KV cache in {plan.kv_dtype}"
    per = f"{plan.weight_bytes / plan.parameters:.3g}" if plan.parameters else "0"
    notes = [f"weights = {plan.parameters:,} parameters x {per} bytes on average; activations, the CUDA context "
             "and allocator slack come on top" if plan.parameters else ""]
    if plan.past_context:
        notes.append(f"* past the model's context of {plan.model_context:,} tokens")
    return titled(title, table, "\n".join(notes) + "\n")


def show_architecture(display: Display, info: ModelInfo, report: ArchitectureReport) -> None:
    """architecture's one render entry: the document (--json / --jsonl) or the tables and the tree."""
    if not display.for_people:
        display.document("architecture", info, report)
        return
    display.result(summary_table(report))
    display.result(parameters_table(report))
    display.result(memory_table(report))
    display.result(kv_cache_table(report))
    display.result(plan_table(report))
    display.result(tree_table(report, display.out.width))
