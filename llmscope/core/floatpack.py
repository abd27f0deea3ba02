"""Large float arrays as base64 little-endian float32 with their shape, for the explore page and --html files (a
JSON number per weight would be five times larger). It computes nothing: float32 values round-trip exactly."""

from __future__ import annotations

from typing import Any


def float32_block(values: Any) -> dict[str, Any]:
    """{"shape": [...], "float32_base64": "..."} for nested sequences of floats (or an array) of one shape."""
    import base64

    import numpy

    array = numpy.asarray(values, dtype="<f4")
    return {"shape": list(array.shape), "float32_base64": base64.b64encode(array.tobytes()).decode("ascii")}


def packed_attention(plain: dict[str, Any]) -> dict[str, Any]:
    """An attention result as plain values (to_plain / --json) with its `weights` packed as one float32 block."""
    out = dict(plain)
    out["weights"] = float32_block(plain["weights"]) if plain.get("weights") else None
    return out
