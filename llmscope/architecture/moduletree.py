"""The module tree as torch's print(model) shows it, with repeated blocks folded ("(0-31): 32 x Block") and
parameter counts per node. It reads a built model (meta or real) and never prints."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModuleNode:
    """One entry of the module tree; `repeat` > 1 for folded identical blocks ("(0-31): 32 x Block")."""

    name: str  # attribute name, or "0-31" for a folded run
    class_name: str
    extra: str  # the module's extra_repr(), as print(model) shows it
    parameters: int  # per module (per block when folded)
    repeat: int
    tied_to: str | None  # the parameter this module's weights are shared with, if it holds no weights of its own
    children: tuple[ModuleNode, ...]
    truncated: bool = False  # children cut by --depth
    experts: tuple[int, int] | None = None  # (routed experts, experts each token runs) for a stacked-experts module

    @property
    def total_parameters(self) -> int:
        return self.parameters * self.repeat


def module_tree(model: Any, experts: tuple[int, int] | None = None) -> ModuleNode:
    """The module tree as print(model) shows it: repeated identical blocks in a ModuleList folded into one node.

    `experts` = (routed, per token) marks each module named "experts" (the routed experts of an MoE block).
    """
    import torch

    owners: dict[int, str] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(parameter), name)

    def build(name: str, path: str, module: Any) -> ModuleNode:
        children: list[ModuleNode] = []
        items = [(key, child) for key, child in module.named_children()]
        built = [build(key, f"{path}.{key}" if path else key, child) for key, child in items]
        if isinstance(module, torch.nn.ModuleList):
            start = 0
            while start < len(built):
                end = start
                while end + 1 < len(built) and _same(built[end + 1], built[start]):
                    end += 1
                node = built[start]
                if end > start:
                    node = ModuleNode(name=f"{start}-{end}", class_name=node.class_name, extra=node.extra,
                                      parameters=node.parameters, repeat=end - start + 1, tied_to=node.tied_to,
                                      children=node.children, experts=node.experts)
                children.append(node)
                start = end + 1
        else:
            children = built
        own = list(module.parameters())
        tied_to = None
        prefix = f"{path}." if path else ""
        if own and all(not owners[id(p)].startswith(prefix) for p in own):
            tied_to = owners[id(own[0])]
        return ModuleNode(name=name, class_name=type(module).__name__, extra=_extra(module, bool(items)),
                          parameters=sum(p.numel() for p in own), repeat=1, tied_to=tied_to,
                          children=tuple(children), experts=experts if name == "experts" else None)

    return build("", "", model)


def _extra(module: Any, has_children: bool) -> str:
    """What print(model) shows inside a module's parentheses; leaves may override __repr__ (GPT-2's Conv1D)."""
    if not has_children:
        text = repr(module)
        prefix = type(module).__name__ + "("
        if text.startswith(prefix) and text.endswith(")") and "\n" not in text:
            return text[len(prefix):-1]
    return module.extra_repr()


def _same(a: ModuleNode, b: ModuleNode) -> bool:
    """Same class, settings and subtree (names included): what print(model) folds."""
    return (a.class_name == b.class_name and a.extra == b.extra and a.repeat == b.repeat
            and len(a.children) == len(b.children)
            and all(x.name == y.name and _same(x, y) for x, y in zip(a.children, b.children)))


def check_depth(depth: int | None) -> None:
    """The one rule for --depth: how many levels of the tree to show, 0 or more (None: all)."""
    from llmscope.core.command_settings import whole_number

    whole_number("--depth", depth, 0, 1_000)


def prune_tree(node: ModuleNode, depth: int) -> ModuleNode:
    """The tree cut `depth` levels below `node` (parameter counts keep what was cut)."""
    children = () if depth <= 0 else tuple(prune_tree(child, depth - 1) for child in node.children)
    return ModuleNode(name=node.name, class_name=node.class_name, extra=node.extra, parameters=node.parameters,
                      repeat=node.repeat, tied_to=node.tied_to, children=children,
                      truncated=node.truncated or (depth <= 0 and bool(node.children)), experts=node.experts)
