"""Fixtures shared by every tier: tiny random causal LMs built on the spot (fast tier), the embedded SmolLM2 (slow
tier), the GGUF conversion cache and a CLI runner that parses --json. No network: HF_HUB_OFFLINE is forced on.
Code that is not a fixture lives in tests/helpers/."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from helpers.cli import CliResult
from helpers.models import TINY_CONFIGS, build_tiny_model

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
