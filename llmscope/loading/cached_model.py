"""Build a model from a conversion-cache entry fast: parameters on the meta device, the safetensors assigned in,
non-persistent buffers (rotary inv_freq and the like) made by the model's own initialisation. No GGUF, no printing.

Anything this fast path does not cover (sharded weights, renamed keys, fp32-kept modules in a lower dtype, a
device map) goes through `from_pretrained`, which reads the same folder; both give identical logits (tested on
every tiny architecture in tests/conftest.py).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

log = logging.getLogger("llmscope")


class _NotCovered(Exception):
    """The entry needs the general loader."""


def load_cached_model(entry: Path, dtype: torch.dtype, device: str, device_map: str | None = None) -> Any:
    """The model in `entry` (written by save_pretrained) on `device` in `dtype`, in eval mode."""
    from transformers import AutoModelForCausalLM

    if device_map is None:
        try:
            return _assign_into_meta_model(entry, dtype, device)
        except _NotCovered as why:
            log.debug("cached model: %s; using from_pretrained", why)
    placement = {"device_map": device_map} if device_map else ({"device_map": device} if device != "cpu" else {})
    return AutoModelForCausalLM.from_pretrained(str(entry), dtype=dtype, **placement).eval()


def _assign_into_meta_model(entry: Path, dtype: torch.dtype, device: str) -> Any:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    weights = entry / "model.safetensors"
    if not weights.is_file():
        raise _NotCovered("no single model.safetensors")
    config = AutoConfig.from_pretrained(str(entry))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    if getattr(model, "_keep_in_fp32_modules", None) and dtype != torch.float32:
        raise _NotCovered("modules kept in float32")
    state = load_file(str(weights), device=device)
    expected = set(model.state_dict().keys())
    if not set(state) <= expected:
        raise _NotCovered(f"keys the model does not have: {sorted(set(state) - expected)[:3]}")
    state = {name: tensor.to(dtype) if tensor.is_floating_point() else tensor for name, tensor in state.items()}
    model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    if any(parameter.is_meta for parameter in model.parameters()):
        raise _NotCovered("weights missing from the file")
    if not make_missing_buffers(model, device):
        raise _NotCovered("a buffer the model's initialisation did not make")
    if (entry / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(str(entry))
    return model.eval()


def make_missing_buffers(model: Any, device: str) -> bool:
    """Fill the buffers a meta-built model still lacks (rotary tables and the like) by the model's own
    initialisation, which leaves loaded tensors alone. False when some buffer is still missing afterwards."""
    import torch

    for tensor in model.state_dict(keep_vars=True).values():
        if not tensor.is_meta:
            tensor._is_hf_initialized = True
    needs_init = False
    for module in model.modules():
        for name, buffer in list(module._buffers.items()):
            if buffer is not None and buffer.is_meta:
                module._buffers[name] = torch.empty_like(buffer, device=device)
                needs_init = True
    if needs_init:
        model.initialize_weights()  # the model's own init fills only what was not loaded: rotary tables etc.
    return not any(buffer.is_meta for buffer in model.buffers())
