"""Fixtures shared by every tier: tiny random causal LMs built on the spot (fast tier), the embedded SmolLM2 (slow
tier), the GGUF conversion cache and a CLI runner that parses --json. No network: HF_HUB_OFFLINE is forced on.
Code that is not a fixture lives in tests/helpers/."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from helpers.cli import CliResult
from helpers.models import TINY_CONFIGS, build_tiny_model, write_config_folders

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# torch.compile's cache of this test session alone: a cache another process left half-written cannot fail a test
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="llmscope-inductor-"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny random model per architecture in TINY_CONFIGS."""
    return {name: build_tiny_model(tmp_path_factory.mktemp(f"tiny-{name}"), name) for name in TINY_CONFIGS}


@pytest.fixture(scope="session", autouse=True)
def llmscope_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The GGUF conversion cache: $LLMSCOPE_CACHE when set (CI keeps one per run), else a temporary folder."""
    if not os.environ.get("LLMSCOPE_CACHE"):
        os.environ["LLMSCOPE_CACHE"] = str(tmp_path_factory.mktemp("llmscope-cache"))
    return Path(os.environ["LLMSCOPE_CACHE"])


@pytest.fixture(scope="session")
def embedded_model(llmscope_cache: Path) -> Any:
    """The embedded SmolLM2-135M-Instruct, loaded once per session in float32 on the CPU, exactly dequantized
    (--quantize none: the reference path; the quantization tests cover the packed one)."""
    from llmscope.loading.loader import load_model

    return load_model(None, device="cpu", dtype="float32", quantize="none")


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch):
    """Run llmscope in-process: cli("tokenize", "hi", "--json") -> CliResult with stdout/stderr apart."""
    from typer.testing import CliRunner

    from llmscope.cli.main import app

    monkeypatch.delenv("LLMSCOPE_MODEL", raising=False)
    runner = CliRunner()

    def run(*args: str, input: str | bytes | None = None, env: dict[str, str] | None = None) -> CliResult:
        return CliResult(runner.invoke(app, [str(a) for a in args], input=input, env=env))

    return run


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A tiny llama GGUF file (float32) made from tiny_model_dir: converts in well under a second."""
    from helpers.tinygguf import write_tiny_gguf

    return write_tiny_gguf(tiny_model_dir, tmp_path_factory.mktemp("tiny-gguf") / "tiny.gguf")


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> Any:
    """The tiny llama loaded as the commands load it (float32 on the CPU), once per test module."""
    from llmscope.loading.loader import load_model

    return load_model(str(tiny_model_dir), device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def other_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another tiny llama with the same tokenizer but other random weights."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-other"), "llama", seed=7)


@pytest.fixture(scope="session")
def quantized_gguf(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """The tiny llama as a GGUF of 4- and 8-bit blocks (TINY_TYPES)."""
    from helpers.tinygguf import TINY_TYPES, write_tiny_gguf

    return write_tiny_gguf(tiny_model_dir, tmp_path_factory.mktemp("tiny-q") / "tiny-q4.gguf", TINY_TYPES)


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty conversion cache for one test."""
    root = tmp_path / "cache"
    monkeypatch.setenv("LLMSCOPE_CACHE", str(root))
    return root


@pytest.fixture
def outside_inference_mode() -> Any:
    """The test runs with inference mode off, even when an earlier test left it on (attribute needs gradients)."""
    import torch

    with torch.inference_mode(False):
        yield


@pytest.fixture(scope="session")
def phi3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Phi-3-mini-4k-instruct's config.json alone: no weights, no tokenizer."""
    from helpers.architectures import PHI3_MINI_4K

    folder = tmp_path_factory.mktemp("phi3-mini-config")
    (folder / "config.json").write_text(json.dumps(PHI3_MINI_4K, indent=1))
    return folder


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """config.json alone for each of today's families (mixture-of-experts, latent attention, ...)."""
    from helpers.architectures import FAMILIES

    return write_config_folders(tmp_path_factory, FAMILIES)


@pytest.fixture(scope="session")
def hybrid_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """config.json alone for each hybrid and state-space family (Jamba, Bamba, Mamba, ...)."""
    from helpers.architectures import HYBRIDS

    return write_config_folders(tmp_path_factory, HYBRIDS)


@pytest.fixture(scope="session")
def readme_figures() -> Any:
    """docs/readme_figures.py as a module: the stored outputs of the README's marked blocks and figures."""
    import importlib.util
    import sys

    from helpers.paths import ROOT

    spec = importlib.util.spec_from_file_location("readme_figures", ROOT / "docs" / "readme_figures.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["readme_figures"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
