"""Result types shared by every command: what model ran where, and how results become plain data.
Each capability module defines its own frozen result dataclasses; none of them hold tensors."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from enum import Enum
from typing import Any


@dataclass(frozen=True)
class InvarianceInfo:
    """Whether this machine's figures are batch- and cache-invariant, as llmscope's self-test found (see
    llmscope.invariance.selftest)."""

    verdict: str  # "invariant", "fallback" (one row per GEMM call), "failed" (not invariant here) or "off"
    tile_rows: int | None  # rows per dense GEMM call; None when off
    probe: str  # how the verdict was reached (probed now or cached, for which machine key, what failed)


@dataclass(frozen=True)
class ModelInfo:
    """Which model a result came from and how it was loaded (the common keys of every JSON document)."""

    model: str
    source: str  # "hub", "folder", "gguf" or "embedded"
    device: str | None = None
    dtype: str | None = None
    parameters: int | None = None
    load_seconds: float | None = None
    from_cache: bool | None = None
    quantize: str | None = None  # the --quantize mode that ran (none, auto, int8, int4)
    weights: str | None = None  # how packed weights are held, e.g. "int4 from Q4_1 x210, int8 from Q8_0 requantized x1"
    activations: str | None = None  # the dtype packed matmuls take their input in (bfloat16)
    kept_exact: str | None = None  # layers --quantize left dense: no packed kernel takes their shape
    packed_layers: int | None = None  # weight matrices held packed (0: --quantize packed nothing); None: none asked
    load_warnings: tuple[str, ...] = ()  # what the load did not do as asked, also said on stderr
    endpoint: str | None = None  # the server that computed the figures (--endpoint), None for a local run
    server: str | None = None  # what that server is: "llmscope serve" or "openai-compatible"
    invariance: InvarianceInfo | None = None  # the invariance self-test's verdict for this run (None: not said)

    @property
    def weights_label(self) -> str:
        """How the weights are held, in a few words: the packed layout ("int4 from Q4_1 x210, ...") or the dtype
        ("float32"); "not said" for a server that does not say."""
        if self.weights:
            return f"{self.weights}, {self.dtype} elsewhere" if self.dtype else self.weights
        return self.dtype or "weights not said"


def to_plain(value: Any) -> Any:
    """Turn dataclasses, enums, tuples and non-finite floats into JSON-ready plain values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: to_plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(key): to_plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN or infinity: a log-probability of -inf (probability 0) is written as null
    return value
