"""One attention head taken apart: the query, key and value vectors the model's attention function received for one
layer and head (after any rotary position encoding), its scale, mask and weights, and the head's output, captured in
one forward pass. It returns a frozen dataclass of plain values and never prints; the explore page redoes the
arithmetic (q·k, scaling, mask, softmax, weighted sum) from these vectors."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmscope.attention.pick import DEFAULT_MAX_WEIGHTS
from llmscope.attention.weights import (
    attention_modules,
    kv_groups,
    masked,
    restore_attention,
    use_eager_attention,
    window_per_layer,
)
from llmscope.core.errors import ModelLoadError, UsageError

if TYPE_CHECKING:
    from llmscope.loading.loader import LoadedModel

CAPTURE_NAME = "llmscope_capture"  # registered with transformers' AttentionInterface; used by one module at a time


@dataclass(frozen=True)
class HeadSteps:
    """Layer `layer`, head `head` on a prompt of `tokens` tokens: vectors per position, as the attention function got
    them. `weights` and `output` are the model's own; the recomputed_* figures say how far a float64 redo of the
    arithmetic from q, k and v lands from them (0 up to rounding when the steps describe what the model does)."""

    layer: int
    head: int
    kv_head: int
    group: tuple[int, ...]  # the query heads that read this KV head (grouped-query / multi-query attention)
    num_heads: int
    num_kv_heads: int
    tokens: int
    head_dim: int
    value_dim: int
    scale: float  # scores are q·k times this (1/sqrt(head_dim) unless the model sets its own)
    window: int | None  # the layer's sliding window: a query sees keys less than `window` positions back
    softcap: float | None  # logit soft-capping (scores -> cap * tanh(scores / cap)) when the model uses it
    attention_implementation: str
    q: tuple[tuple[float, ...], ...]  # [tokens, head_dim], this head's queries
    k: tuple[tuple[float, ...], ...]  # [tokens, head_dim], its KV head's keys
    v: tuple[tuple[float, ...], ...]  # [tokens, value_dim], its KV head's values
    weights: tuple[tuple[float, ...], ...]  # [tokens, tokens], the model's softmax weights for this head
    output: tuple[tuple[float, ...], ...]  # [tokens, value_dim], the head's output before the output projection
    recomputed_weight_difference: float  # largest |weight| difference of the float64 redo against the model's
    recomputed_output_difference: float  # the same for the head's output


def _capturing_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, **kwargs: Any) -> Any:
    """Run the module's own attention function and hand what it received and returned to the module's recorder."""
    delegate, record = module._llmscope_capture
    output, weights = delegate(module, query, key, value, attention_mask, **kwargs)
    record(query, key, value, kwargs, output, weights)
    return output, weights


class _ConfigView:
    """The model's config as one attention module sees it, with another attention implementation name: the other
    layers and the mask builder keep reading the real config."""

    def __init__(self, config: Any, implementation: str) -> None:
        object.__setattr__(self, "_wrapped", config)
        object.__setattr__(self, "_attn_implementation", implementation)

    def __getattr__(self, name: str) -> Any:
        return getattr(object.__getattribute__(self, "_wrapped"), name)


def _delegate_for(module: Any, implementation: str) -> Any:
    """The attention function the module would call under `implementation` (eager: its modeling file's own)."""
    from transformers import AttentionInterface

    eager = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
    if implementation == "eager":
        if eager is None:
            raise ModelLoadError(f"{type(module).__name__} has no eager attention function llmscope can wrap")
        return eager
    return AttentionInterface().get_interface(implementation, eager)


def _check_choice(layer: int, head: int, layers: int, heads: int, tokens: int, max_weights: int) -> None:
    if not 0 <= layer < layers:
        raise UsageError(f"layer {layer} is outside the model (layers 0-{layers - 1})")
    if not 0 <= head < heads:
        raise UsageError(f"head {head} is outside the model (heads 0-{heads - 1})")
    if tokens * tokens > max_weights:
        raise UsageError(f"one head's {tokens} x {tokens} weights are over the limit of {max_weights:,}",
                         hint="shorten the prompt")


def _redo(q: Any, k: Any, v: Any, scale: float, window: int | None, softcap: float | None) -> tuple[Any, Any]:
    """The head's weights and output recomputed in float64 from its q, k and v (causal and window mask)."""
    import torch

    n = q.shape[0]
    scores = (q.double() @ k.double().T) * scale
    if softcap:
        scores = softcap * torch.tanh(scores / softcap)
    hidden = torch.tensor([[masked(i, j, window) is not None for j in range(n)] for i in range(n)])
    scores = scores.masked_fill(hidden, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights, weights @ v.double()


def head_steps(loaded: LoadedModel, ids: list[int] | tuple[int, ...], layer: int, head: int,
               max_weights: int = DEFAULT_MAX_WEIGHTS) -> HeadSteps:
    """One forward pass over `ids`, capturing what layer `layer`'s attention function gets and returns for `head`.

    Args:
        loaded: the model and tokenizer; SDPA / flash attention is switched to eager for the pass (as `attention`
            does) and switched back afterwards.
        ids: the prompt's token ids (already encoded, chat template included when wanted).
        layer, head: 0-based block and query head.
        max_weights: refuse a prompt whose tokens x tokens weights exceed this.
    Returns:
        HeadSteps with q, k, v, the scale, window, the model's weights and the head's output.
    Raises:
        UsageError for a layer or head outside the model, an empty or too long prompt;
        ModelLoadError when the model's attention cannot be captured.
    """
    import torch
    from transformers import AttentionInterface

    from llmscope.architecture.layerkinds import attention_layout
    from llmscope.generation.prompts import check_ids_fit
    from llmscope.loading.modelconfig import text_config

    model = loaded.model
    config = text_config(model.config)
    layout = attention_layout(config)
    num_layers, heads, kv = int(config.num_hidden_layers), layout.heads, layout.kv_heads
    if not ids:
        raise UsageError("the prompt is empty", hint="type some text")
    _check_choice(layer, head, num_layers, heads, len(ids), max_weights)
    check_ids_fit(model, list(ids))
    modules, _ = attention_modules(model)
    if len(modules) != num_layers:
        raise ModelLoadError(f"found {len(modules)} attention modules for {num_layers} layers: this architecture's "
                             "attention cannot be taken apart")
    module = modules[layer]
    group = kv_groups(heads, kv)
    kv_head = next(g.kv_head for g in group if head in g.heads)
    captured: dict[str, Any] = {}

    def record(query: Any, key: Any, value: Any, kwargs: dict[str, Any], output: Any, weights: Any) -> None:
        captured.update(q=query[0, head].float().cpu(), k=key[0, kv_head].float().cpu(),
                        v=value[0, kv_head].float().cpu(), scaling=kwargs.get("scaling"),
                        softcap=kwargs.get("softcap"),
                        output=output[0, :, head].float().cpu(),
                        weights=None if weights is None else weights[0, head].float().cpu())

    before = use_eager_attention(model)
    implementation = getattr(model.config, "_attn_implementation", None) or "eager"
    AttentionInterface.register(CAPTURE_NAME, _capturing_attention)
    module._llmscope_capture = (_delegate_for(module, implementation), record)
    own_config = module.__dict__.get("config")
    module.config = _ConfigView(model.config, CAPTURE_NAME)
    module.return_attention_weights = True  # read by llmscope's invariant attention
    try:
        input_ids = torch.tensor([list(ids)], device=loaded.input_device)
        with torch.inference_mode():
            model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), use_cache=False)
    finally:
        del module._llmscope_capture, module.return_attention_weights
        if own_config is None:
            del module.config
        else:
            module.config = own_config
        restore_attention(model, before)
    if "q" not in captured:
        raise ModelLoadError(f"layer {layer}'s attention did not go through transformers' attention functions")
    if captured["weights"] is None:
        raise ModelLoadError(f"layer {layer} returned no attention weights, even with {implementation} attention")
    q, k, v = captured["q"], captured["k"], captured["v"]
    scale = float(captured["scaling"]) if captured["scaling"] is not None else q.shape[-1] ** -0.5
    softcap = float(captured["softcap"]) if captured["softcap"] else None
    window = window_per_layer(model.config, num_layers)[layer]
    weights, output = _redo(q, k, v, scale, window, softcap)
    return HeadSteps(
        layer=layer, head=head, kv_head=kv_head, group=group[kv_head].heads, num_heads=heads, num_kv_heads=kv,
        tokens=len(ids), head_dim=int(q.shape[-1]), value_dim=int(v.shape[-1]), scale=scale, window=window,
        softcap=softcap, attention_implementation=implementation, q=tuple(map(tuple, q.tolist())),
        k=tuple(map(tuple, k.tolist())), v=tuple(map(tuple, v.tolist())),
        weights=tuple(map(tuple, captured["weights"].tolist())), output=tuple(map(tuple, captured["output"].tolist())),
        recomputed_weight_difference=float((weights - captured["weights"].double()).abs().max()),
        recomputed_output_difference=float((output - captured["output"].double()).abs().max()))
