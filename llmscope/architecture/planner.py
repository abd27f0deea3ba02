"""Will it fit? Weights + KV cache + recurrent state for a context length, batch size and dtypes, against GPU
sizes; and the frozen settings that check the planner's options before anything loads. Arithmetic only."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from llmscope.architecture.kvcache import KV_DTYPE_BYTES, cache_size
from llmscope.core.errors import UsageError
from llmscope.loading.memory_check import WEIGHT_DTYPE_BYTES, weight_bytes
from llmscope.loading.modelconfig import context_length

PLAN_LENGTHS = (4096, 32768, 131072)
GPU_SIZES = (("24 GiB", 24 << 30), ("40 GiB", 40 << 30), ("80 GiB", 80 << 30))
MAX_TOKENS = 1 << 31
_TOKENS = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*$")
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(i?[bB])?\s*$")


def parse_tokens(text: str) -> int:
    """A token count: 4096, 32k (32,768), 128k (131,072), 1m (1,048,576)."""
    match = _TOKENS.match(text)
    if not match:
        raise UsageError(f"--context must be a token count such as 4096, 32k or 128k (got {text!r})")
    value = float(match.group(1)) * {"": 1, "k": 1024, "m": 1024 ** 2}[match.group(2).lower()]
    if not value.is_integer() or not 1 <= value <= MAX_TOKENS:
        raise UsageError(f"--context must be a whole number of tokens from 1 to {MAX_TOKENS:,} (got {text!r})")
    return int(value)


def parse_memory(text: str) -> int:
    """Bytes from 80GB / 80GiB / 24G / 512MB: like GPU makers, GB here means GiB (an "80GB" H100 has 80 GiB)."""
    match = _MEMORY.match(text)
    if not match or not (match.group(2) or match.group(3)):
        raise UsageError(f"--gpu-memory must be a size such as 24GB, 80GB or 141GB (got {text!r})")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[match.group(2).lower()]
    value = float(match.group(1)) * scale
    if not math.isfinite(value) or value < 1 << 20:
        raise UsageError(f"--gpu-memory must be at least 1 MiB (got {text!r})")
    return int(value)


@dataclass(frozen=True)
class PlannerSettings:
    """`architecture`'s planner options, checked before anything loads (UsageError, exit 2)."""

    context: int | None = None  # plan up to this many tokens (default: the model's context length)
    batch_size: int = 1
    kv_dtype: str | None = None  # None: the weights' dtype
    weights_dtype: str | None = None  # None: the config's (or loaded) dtype; float32 when it states none
    gpu_memory: int | None = None  # bytes; None: 24, 40 and 80 GiB

    def __post_init__(self) -> None:
        if self.context is not None and not 1 <= self.context <= MAX_TOKENS:
            raise UsageError(f"--context must be from 1 to {MAX_TOKENS:,} tokens (got {self.context})")
        if not 1 <= self.batch_size <= 1 << 20:
            raise UsageError(f"--batch-size must be from 1 to {1 << 20:,} (got {self.batch_size})")
        if self.kv_dtype is not None and self.kv_dtype not in KV_DTYPE_BYTES:
            raise UsageError(f"--kv-dtype must be one of {', '.join(KV_DTYPE_BYTES)} (got {self.kv_dtype!r})")
        if self.weights_dtype is not None and self.weights_dtype not in WEIGHT_DTYPE_BYTES:
            raise UsageError(f"--dtype (the plan's weights) must be one of {', '.join(WEIGHT_DTYPE_BYTES)} "
                             f"(got {self.weights_dtype!r})")

    @classmethod
    def from_options(cls, context: str | None, batch_size: int, kv_dtype: str | None, gpu_memory: str | None,
                     dtype: str = "auto") -> PlannerSettings:
        """From the CLI's text options (--context 128k, --gpu-memory 80GB, --dtype auto|float32|...)."""
        return cls(context=None if context is None else parse_tokens(context), batch_size=batch_size,
                   kv_dtype=kv_dtype, weights_dtype=None if dtype == "auto" else dtype,
                   gpu_memory=None if gpu_memory is None else parse_memory(gpu_memory))


@dataclass(frozen=True)
class PlanRow:
    tokens: int
    kv_bytes: int
    state_bytes: int
    total_bytes: int  # weights + KV + state
    fits: tuple[bool, ...]  # one per MemoryPlan.gpus


@dataclass(frozen=True)
class MemoryPlan:
    parameters: int
    weights_dtype: str
    weight_bytes: int
    kv_dtype: str
    batch_size: int
    model_context: int | None
    gpus: tuple[tuple[str, int], ...]  # (name, bytes)
    rows: tuple[PlanRow, ...]
    past_context: bool  # a planned length is longer than the model's context
    weights_format: str | None = None  # packed weights: how they are held ("int4 x210, float32 x62")


def _dtype_name(dtype: str | None) -> str | None:
    name = None if dtype is None else str(dtype).removeprefix("torch.").split(",")[0].strip()
    return name if name in WEIGHT_DTYPE_BYTES else None


def plan_memory(config: Any, parameters: int, settings: PlannerSettings, stored_dtype: str | None = None,
                held: tuple[int, str] | None = None) -> MemoryPlan:
    """Weights + cache + state at a few context lengths up to settings.context (or the model's context).

    Counts the weights and the cache only: activations, the CUDA context and allocator slack come on top.
    held: (bytes, format) of packed weights, which then replace parameters x the dtype's size.
    """
    weights_dtype = settings.weights_dtype or _dtype_name(stored_dtype) or "float32"
    kv_dtype = settings.kv_dtype or weights_dtype
    weights = weight_bytes(parameters, weights_dtype, held)
    limit = context_length(config)
    top = settings.context or limit or PLAN_LENGTHS[-1]
    lengths = sorted({n for n in PLAN_LENGTHS if n < top} | {top} | ({limit} if limit and limit < top else set()))
    gpus = (("--gpu-memory", settings.gpu_memory),) if settings.gpu_memory else GPU_SIZES
    rows = []
    for tokens in lengths:
        size = cache_size(config, tokens, settings.batch_size, kv_dtype, state_dtype=weights_dtype)
        total = weights + size.total_bytes
        rows.append(PlanRow(tokens=tokens, kv_bytes=size.kv_bytes, state_bytes=size.state_bytes, total_bytes=total,
                            fits=tuple(total <= memory for _, memory in gpus)))
    return MemoryPlan(parameters=parameters, weights_dtype=weights_dtype, weight_bytes=weights, kv_dtype=kv_dtype,
                      batch_size=settings.batch_size, model_context=limit, gpus=gpus, rows=tuple(rows),
                      past_context=bool(limit and top > limit), weights_format=held[1] if held else None)
