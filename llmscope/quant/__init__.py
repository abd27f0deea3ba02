"""Quantized weights: what `--quantize` may ask for. The modules hold the kernels and packed forms (packing), the
layers (modules), the GGUF readers (ggufheader, ggufweights), whole models (packedmodel) and the mode choice (mode)."""

from __future__ import annotations

QUANTIZE_CHOICES = ("auto", "none", "int8", "int4")
