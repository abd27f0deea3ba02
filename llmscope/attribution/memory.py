"""How much memory each attribution method will take, planned from the model's shape and the prompt's length before
it runs: integrated gradients' batched steps, gradients through packed layers. Arithmetic only; it never runs one.

The figures per token are upper bounds written from what autograd keeps for a decoder layer's backward pass (the
norms' inputs and outputs, q/k/v, the attention output, the MLP's gate, up and product). Measured on the embedded
model (float32, 30 layers, 8 tokens, batches of 1, 4 and 16 steps): 0.99 MiB of peak RSS per token and step; the
formula below gives 1.23 MiB (a 24% margin).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmscope.core.errors import MemoryLimitError
from llmscope.loading.memory import gib

SAVED_PER_HIDDEN = 8  # floats autograd keeps per token, per layer, per hidden unit (norms, q/k/v/o, residuals)
SAVED_PER_INTERMEDIATE = 4  # ... per MLP unit (gate, up, activation, product)
FLOAT_BYTES = 4  # gradients run in float32 (packed layers' activations are cast back to it)
LOGIT_COPIES = 4  # the last position's logits: float32 logits, log-softmax, and their gradients


@dataclass(frozen=True)
class MethodMemory:
    """A method's planned memory on top of the loaded model, and the step batch that fits the limit."""

    method: str
    per_step_bytes: int  # one batch row (one integrated-gradients step, or the one pass) over the prompt
    fixed_bytes: int  # held once whatever the batch: the largest packed weight dequantized for the backward pass
    batch: int  # rows per forward + backward pass (integrated gradients' steps at once); 1 for the others
    peak_bytes: int  # fixed + batch x per_step


def model_shape(config: Any) -> tuple[int, int, int, int, int]:
    """(layers, hidden, intermediate, heads, vocabulary) from a transformers config (text config for multimodal)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden = int(getattr(text, "hidden_size", 0) or getattr(text, "n_embd", 0) or 0)
    layers = int(getattr(text, "num_hidden_layers", 0) or getattr(text, "n_layer", 0) or 0)
    intermediate = int(getattr(text, "intermediate_size", 0) or getattr(text, "n_inner", 0) or 4 * hidden)
    heads = int(getattr(text, "num_attention_heads", 0) or getattr(text, "n_head", 0) or 1)
    return layers, hidden, intermediate, heads, int(getattr(text, "vocab_size", 0) or 0)


def step_bytes(config: Any, tokens: int, gradients: bool, attentions: bool = False) -> int:
    """Memory one row of a forward (and backward, with gradients) pass over `tokens` holds at its peak."""
    layers, hidden, intermediate, heads, vocab = model_shape(config)
    per_layer = SAVED_PER_HIDDEN * hidden + SAVED_PER_INTERMEDIATE * intermediate
    if not gradients:  # inference frees each layer's activations as the next one runs: one layer's worth
        per_layer_total = per_layer
    else:
        per_layer_total = layers * per_layer
    total = tokens * per_layer_total + tokens * tokens * heads * (2 if gradients else 1)
    if attentions:  # attention rollout keeps every layer's [heads, tokens, tokens] weights
        total += layers * heads * tokens * tokens
    return (total + LOGIT_COPIES * vocab) * FLOAT_BYTES


def largest_packed_dense_bytes(model: Any) -> int:
    """The float32 size of the largest packed weight: a backward pass through it dequantizes it whole."""
    from llmscope.loading.quant.modules import packed_weights

    return max((w.rows * w.columns * FLOAT_BYTES for w in packed_weights(model)), default=0)


def plan_method(method: str, config: Any, tokens: int, steps: int, preferred_batch: int, limit: int | None,
                packed_dense: int, bound: str = "free") -> MethodMemory:
    """The method's memory, its step batch shrunk (down to one step at a time) to fit `limit` bytes (None: no
    limit). Raises MemoryLimitError when even one step at a time cannot fit."""
    gradients = method in ("integrated-gradients", "input-x-gradient")
    per_step = step_bytes(config, tokens, gradients, attentions=method == "attention-rollout")
    fixed = packed_dense if gradients else 0
    wanted = max(1, min(preferred_batch, steps)) if method == "integrated-gradients" else 1
    batch = wanted
    if limit is not None:
        batch = max(0, min(wanted, (limit - fixed) // per_step))
    if batch < 1:
        need = fixed + per_step
        packed = f", {gib(fixed)} of it to dequantize the largest packed weight for the backward pass" if fixed else ""
        one = " one step at a time" if method == "integrated-gradients" else ""
        raise MemoryLimitError(
            f"{method} on {tokens} tokens needs about {gib(need)}{one}{packed}, and {gib(limit or 0)} is {bound}",
            hint="leave it out with --method occlusion,attention-rollout (fewer --steps do not help: they already "
                 "run one at a time), shorten the prompt, or raise --max-memory if more memory is free")
    return MethodMemory(method=method, per_step_bytes=per_step, fixed_bytes=fixed, batch=batch,
                        peak_bytes=fixed + batch * per_step)
