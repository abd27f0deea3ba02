"""Sites as data (kind, layer, position, head) and where they live in a transformers model: the decoder blocks, their
attention, MLP and attention output projection, found from the module tree. Hooks capture and replace activations.

Nothing here runs a forward pass or knows about metrics; weights are never touched (packed weights work as they are).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from llmscope.core.errors import UsageError

SITE_KINDS = ("resid", "attn", "mlp", "heads")
SITE_MEANINGS = {
    "resid": "the residual stream after the block (the block's output hidden state)",
    "attn": "the attention sublayer's output (after its output projection), before it joins the residual stream",
    "mlp": "the MLP sublayer's output, before it joins the residual stream",
    "heads": "one attention head's output: its slice of the output projection's input",
}
ATTENTION_NAME = re.compile(r"(^|_)(self_)?(attn|attention)$")
MLP_NAME = re.compile(r"(^|_)(mlp|feed_forward|ffn|block_sparse_moe|moe)$")
OUTPUT_PROJECTION_NAMES = ("o_proj", "out_proj", "c_proj", "dense", "wo", "o")


@dataclass(frozen=True)
class Site:
    """One activation: `kind` (resid, attn, mlp, heads) at block `layer` and sequence `position`; `head` for heads."""

    kind: str
    layer: int
    position: int
    head: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in SITE_KINDS:
            raise UsageError(f"unknown site {self.kind!r}", hint=f"choose from {', '.join(SITE_KINDS)}")
        if (self.head is None) == (self.kind == "heads"):
            raise UsageError("a heads site needs a head, and only a heads site takes one")


@dataclass
class SiteModules:
    """The live modules each site kind hooks, per block, and the head layout of the output projection's input."""

    blocks: list[Any]
    attention: list[Any]
    mlp: list[Any]
    output_projection: list[Any]
    heads: int
    path: str  # where the blocks sit, e.g. "model.layers"

    @property
    def layers(self) -> int:
        return len(self.blocks)

    def module(self, kind: str, layer: int) -> Any:
        """The module whose output (resid, attn, mlp) or input (heads) a site of this kind reads."""
        table = {"resid": self.blocks, "attn": self.attention, "mlp": self.mlp, "heads": self.output_projection}
        found = table[kind][layer]
        if found is None:
            raise UsageError(f"block {layer} of this model has no {kind} module that llmscope can find",
                             hint=f"use --site resid, which every block has (blocks at {self.path})")
        return found


def _block_list(model: Any, count: int) -> tuple[str, Any]:
    """The ModuleList of decoder blocks: `count` long (the config's layers), preferring one whose blocks hold an
    attention child; else the longest ModuleList."""
    from torch import nn

    lists = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.ModuleList)
             and len(module) > 0]
    if not lists:
        raise UsageError(f"{type(model).__name__} has no list of blocks llmscope can patch")

    def has_attention(items: Any) -> bool:
        return any(ATTENTION_NAME.search(child) for child, _ in items[0].named_children())

    exact = [(name, module) for name, module in lists if len(module) == count]
    for group in (exact, lists):
        chosen = [(name, module) for name, module in group if has_attention(module)]
        if chosen:
            return chosen[0]
    return max(lists, key=lambda item: len(item[1]))


def _child(block: Any, pattern: re.Pattern[str]) -> Any:
    for name, module in block.named_children():
        if pattern.search(name):
            return module
    return None


def _output_projection(attention: Any) -> Any:
    if attention is None:
        return None
    children = dict(attention.named_children())
    for name in OUTPUT_PROJECTION_NAMES:
        if name in children:
            return children[name]
    return None


def find_site_modules(model: Any) -> SiteModules:
    """Find the blocks, attention, MLP and attention output projection of any transformers causal LM."""
    from llmscope.loading.modelconfig import attention_heads, config_value, text_config

    count = int(config_value(text_config(model.config), "num_hidden_layers", "n_layer", "num_layers", default=0))
    path, blocks = _block_list(model, count)
    attention = [_child(block, ATTENTION_NAME) for block in blocks]
    return SiteModules(blocks=list(blocks), attention=attention, mlp=[_child(block, MLP_NAME) for block in blocks],
                       output_projection=[_output_projection(a) for a in attention],
                       heads=attention_heads(model.config), path=path)


def first_tensor(output: Any) -> Any:
    """A module's activation: the output itself, or the first item of a tuple output (hidden, weights, ...)."""
    return output[0] if isinstance(output, (tuple, list)) else output


def with_first(output: Any, value: Any) -> Any:
    """The output with its activation replaced (tuple outputs keep their other items)."""
    if isinstance(output, tuple):
        return (value, *output[1:])
    if isinstance(output, list):
        return [value, *output[1:]]
    return value


@dataclass
class Replacement:
    """Values written into one (kind, layer) activation of a batched forward pass: rows[i], positions[i] (and head
    heads[i]) take values[i]. Tensors, built once per pass; `heads` None for resid, attn and mlp."""

    rows: Any
    positions: Any
    values: Any
    heads: Any = None


def replace_activation(activation: Any, edit: Replacement, heads: int) -> Any:
    """A copy of `activation` [batch, seq, width] with the edit's rows written (one head's slice for heads)."""
    changed = activation.clone()
    values = edit.values.to(device=changed.device, dtype=changed.dtype)
    if edit.heads is None:
        changed[edit.rows, edit.positions] = values
        return changed
    batch, length, width = changed.shape
    view = changed.view(batch, length, heads, width // heads)
    view[edit.rows, edit.positions, edit.heads] = values
    return changed


@contextlib.contextmanager
def hooked(sites: SiteModules, capture: dict[tuple[str, int], Any] | None = None,
           replace: dict[tuple[str, int], Replacement] | None = None,
           embedding: Any = None, embedding_noise: Replacement | None = None) -> Iterator[None]:
    """Hooks for one forward pass: store each captured (kind, layer) activation into `capture` (detached, the values
    after any replacement at that site), write each replacement, and add embedding noise (values added, not set).
    The hooks are removed on exit, whatever happened."""
    handles = []
    capture_keys = set(capture or {})
    replace = replace or {}
    keys = sorted(capture_keys | set(replace), key=lambda key: (key[1], SITE_KINDS.index(key[0])))

    def output_hook(key: tuple[str, int]) -> Any:
        def hook(module: Any, args: Any, output: Any) -> Any:
            activation = first_tensor(output)
            if key in replace:
                activation = replace_activation(activation, replace[key], sites.heads)
            if key in capture_keys:
                capture[key] = activation.detach()  # type: ignore[index]
            return with_first(output, activation) if key in replace else None
        return hook

    def input_hook(key: tuple[str, int]) -> Any:
        def hook(module: Any, args: Any) -> Any:
            activation = args[0]
            if key in replace:
                activation = replace_activation(activation, replace[key], sites.heads)
            if key in capture_keys:
                capture[key] = activation.detach()  # type: ignore[index]
            return (activation, *args[1:]) if key in replace else None
        return hook

    def noise_hook(module: Any, args: Any, output: Any) -> Any:
        assert embedding_noise is not None
        changed = output.clone()
        noise = embedding_noise.values.to(device=changed.device, dtype=changed.dtype)
        changed[embedding_noise.rows, embedding_noise.positions] += noise
        return changed

    try:
        if embedding is not None and embedding_noise is not None:
            handles.append(embedding.register_forward_hook(noise_hook))
        for key in keys:
            kind, layer = key
            module = sites.module(kind, layer)
            if kind == "heads":
                handles.append(module.register_forward_pre_hook(input_hook(key)))
            else:
                handles.append(module.register_forward_hook(output_hook(key)))
        yield
    finally:
        for handle in handles:
            handle.remove()
