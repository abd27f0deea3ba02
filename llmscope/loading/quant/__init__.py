"""Quantized weights: what `--quantize` may ask for. The modules hold the kernels and packed forms (packing), the
layers (modules), the GGUF readers (ggufheader, ggufweights), whole models (packedmodel) and the mode choice (mode)."""

from __future__ import annotations

from llmscope.core.command_settings import QUANTIZE_CHOICES

__all__ = ["QUANTIZE_CHOICES"]
