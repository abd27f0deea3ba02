"""Quantized weights: what `--quantize` may ask for, and the packed forms llmscope keeps weights in.
The modules below hold the kernels (packing), the layers (modules) and the GGUF reader (ggufweights); no printing."""

from __future__ import annotations

QUANTIZE_CHOICES = ("auto", "none", "int8", "int4")
QUANTIZE_HELP = ("auto keeps a GGUF file's own 4/8-bit blocks and loads other models as stored; none dequantizes "
                 "to --dtype (the exact reference); int8 / int4 quantize every linear layer at load "
                 "(weight-only; int4 in groups of 32).")
