"""Which --quantize mode runs for a model spec on a device: auto becomes none where nothing is packed or no packed
kernel runs, and an impossible explicit mode is refused. It reads a GGUF's tensor table at most; no torch."""

from __future__ import annotations

import logging
from typing import Any

from llmscope.core.errors import UsageError
from llmscope.loading.quant import QUANTIZE_CHOICES

log = logging.getLogger("llmscope")

PACKED_MODES = ("auto", "int8", "int4")


def cache_part(mode: str) -> str:
    """The conversion-cache part a GGUF loaded under `mode` lives in ("model" holds the float32 conversion)."""
    return "model" if mode == "none" else f"packed-{mode}"


def resolve_quantize(requested: str, spec: Any, device: str, device_map: str | None,
                     table: list[Any] | None = None) -> str:
    """The --quantize mode that will run for a loader.ModelSpec: auto on a non-GGUF model is none (as stored), and
    so is auto on a float GGUF; auto falls back to none where no packed kernel runs (MPS, a device map), and an
    explicit int8/int4 there is refused. table: the GGUF file's tensor table when the caller has read it already."""
    mode = (requested or "auto").strip().lower()
    if mode not in QUANTIZE_CHOICES:
        raise UsageError(f"unknown --quantize {requested!r}", hint="use one of: " + ", ".join(QUANTIZE_CHOICES))
    if mode == "auto" and not (spec.is_gguf and _has_quantized_matrices(spec, table)):
        return "none"  # as stored; a float GGUF has nothing to keep packed, and `none` is the same weights
    if mode == "none":
        return mode
    blocker = ("--device-map" if device_map else f"the {device} device" if device.split(":")[0] not in ("cpu", "cuda")
               else None)
    if blocker is None:
        return mode
    if mode == "auto":
        log.info("%s has no packed 4/8-bit kernels: the GGUF weights are dequantized (--quantize none)", blocker)
        return "none"
    raise UsageError(f"--quantize {mode} cannot run with {blocker}", hint="use --quantize none")


def _has_quantized_matrices(spec: Any, table: list[Any] | None = None) -> bool:
    from llmscope.loading import conversion_cache
    from llmscope.loading.quant.ggufheader import quantized_matrices

    if conversion_cache.entry_dir(spec.gguf_path, cache_part("auto")).is_dir():
        return True  # packed before: no need to read the tensor table again
    try:
        return quantized_matrices(spec.gguf_path, table) > 0
    except (OSError, ValueError):
        return False  # the dequantizing path reports what is wrong with the file
