"""Device and dtype choice: auto|cpu|cuda|cuda:N|mps and auto|float32|bfloat16|float16 -> what runs here,
checked with a tiny probe (the out-of-memory message lives in errors.py). It loads no model and never prints."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmscope.core.errors import DeviceError, UsageError
from llmscope.core.errors import out_of_memory_error as out_of_memory_error
from llmscope.loading.load_errors import first_line

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")


def resolve_device(requested: str = "auto") -> str:
    """Turn auto|cpu|cuda|cuda:N|mps into a concrete device string, checking it exists here."""
    import torch

    choice = (requested or "auto").strip().lower()
    if choice == "auto":
        if torch.cuda.is_available():
            return "cuda:0"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if choice == "cpu":
        return "cpu"
    if choice == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError("--device mps was asked for but MPS is not available here", hint="use --device cpu")
        return "mps"
    if choice == "cuda" or choice.startswith("cuda:"):
        index_text = choice.partition(":")[2] or "0"
        if not index_text.isdigit():
            raise UsageError(f"bad device {requested!r}", hint="use cuda or cuda:N with N a GPU index")
        if not torch.cuda.is_available():
            build = "a CPU-only build of torch" if torch.version.cuda is None else "no visible CUDA GPU"
            raise DeviceError(f"--device {requested} was asked for but CUDA is not available ({build})",
                              hint="use --device cpu, or --device auto to pick what is here")
        count = torch.cuda.device_count()
        if int(index_text) >= count:
            raise DeviceError(f"--device {requested}: there are only {count} CUDA device(s)",
                              hint=f"use cuda:0 to cuda:{count - 1}")
        return f"cuda:{int(index_text)}"
    raise UsageError(f"unknown device {requested!r}", hint="use one of: " + ", ".join(DEVICE_CHOICES))


def resolve_dtype(requested: str, device: str) -> torch.dtype:
    """auto -> bfloat16 on CUDA where supported (else float16), float16 on MPS, float32 on CPU."""
    import torch

    choice = (requested or "auto").strip().lower()
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}
    if choice == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if device == "mps" else torch.float32
    if choice not in names:
        raise UsageError(f"unknown dtype {requested!r}", hint="use one of: " + ", ".join(DTYPE_CHOICES))
    dtype = names[choice]
    _check_dtype_runs(dtype, device)
    return dtype


def _check_dtype_runs(dtype: torch.dtype, device: str) -> None:
    import torch

    if device.startswith("cuda") and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise DeviceError(f"{torch.cuda.get_device_name(device)} cannot run bfloat16",
                          hint="use --dtype float16 or float32")
    try:
        probe = torch.ones(4, 4, dtype=dtype, device=device)
        (probe @ probe).sum().item()
    except (RuntimeError, TypeError) as error:
        raise DeviceError(f"--dtype {dtype_name(dtype)} cannot run on {device}: {first_line(error)}",
                          hint="use --dtype float32") from error


def dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")
