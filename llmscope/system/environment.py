"""What llmscope runs on: versions, accelerators, cache folders and the default model (`llmscope env`).
It reads the environment and installed packages; it loads no model and never prints."""

from __future__ import annotations

import importlib.metadata
import platform
import sys
from dataclasses import dataclass

from llmscope import __version__
from llmscope.core.model_info import InvarianceInfo

PACKAGES = ("torch", "transformers", "accelerate", "tokenizers", "huggingface-hub", "safetensors", "gguf", "typer",
            "rich")


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    total_memory_bytes: int
    bf16_supported: bool


@dataclass(frozen=True)
class EnvReport:
    llmscope_version: str
    python: str
    platform: str
    packages: dict[str, str | None]
    cuda_available: bool
    cuda_version: str | None
    gpus: tuple[GpuInfo, ...]
    mps_available: bool
    default_device: str
    cpu_threads: int
    llmscope_cache: str
    hf_cache: str
    hf_offline: bool
    default_model: str
    embedded_model_installed: bool
    embedded_model_path: str | None
    cached_conversions: tuple[str, ...]
    cache_size_bytes: int
    invariance: InvarianceInfo  # the CPU invariance self-test's verdict at this thread count (representative kernels)
    invariance_file: str  # where that verdict is cached


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def collect_environment() -> EnvReport:
    """Gather versions, devices and cache locations (imports torch to ask about CUDA/MPS)."""
    import torch

    from llmscope.core.errors import LlmscopeError
    from llmscope.loading.conversion_cache import cache_root, cache_size
    from llmscope.loading.loader import default_model_spec, embedded_gguf_path, resolve_device

    gpus = tuple(
        GpuInfo(index=i, name=torch.cuda.get_device_name(i),
                total_memory_bytes=int(torch.cuda.get_device_properties(i).total_memory),
                bf16_supported=bool(torch.cuda.is_bf16_supported()))
        for i in range(torch.cuda.device_count())) if torch.cuda.is_available() else ()
    try:
        embedded = str(embedded_gguf_path())
    except LlmscopeError:
        embedded = None
    conversions_dir = cache_root() / "gguf"
    conversions = tuple(sorted(p.name for p in conversions_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
                               )) if conversions_dir.is_dir() else ()
    from huggingface_hub import constants as hub  # what transformers really uses ($HF_HUB_CACHE, $HF_HOME, XDG)

    from llmscope.invariance.selftest import self_test

    verdict = self_test()

    return EnvReport(
        llmscope_version=__version__,
        python=sys.version.split()[0],
        platform=platform.platform(),
        packages={name: package_version(name) for name in PACKAGES},
        cuda_available=torch.cuda.is_available(),
        cuda_version=torch.version.cuda,
        gpus=gpus,
        mps_available=bool(torch.backends.mps.is_available()),
        default_device=resolve_device("auto"),
        cpu_threads=torch.get_num_threads(),
        llmscope_cache=str(cache_root()),
        hf_cache=str(hub.HF_HUB_CACHE),
        hf_offline=bool(hub.HF_HUB_OFFLINE),
        default_model=default_model_spec(),
        embedded_model_installed=embedded is not None,
        embedded_model_path=embedded,
        cached_conversions=conversions,
        cache_size_bytes=cache_size(),
        invariance=verdict.info,
        invariance_file=verdict.path,
    )
