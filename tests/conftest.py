"""Fixtures shared by every tier: tiny random causal LMs built on the spot (fast tier), the embedded SmolLM2 (slow
tier), the GGUF conversion cache and a CLI runner that parses --json. No network: HF_HUB_OFFLINE is forced on.
Code that is not a fixture lives in tests/helpers/."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from helpers.cli import CliResult, invoke
from helpers.models import TINY_CONFIGS, build_tiny_model, write_config_folders

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# torch.compile's cache of this test session alone: a cache another process left half-written cannot fail a test
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="llmscope-inductor-"))
# Under pytest-xdist each worker is a process of its own: torch's threads share the cores among the workers (set before
# torch is imported; the llmscope processes a test starts inherit it) instead of each worker using every core.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_NUM_THREADS",
                          str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny random model per architecture in TINY_CONFIGS."""
    return {name: build_tiny_model(tmp_path_factory.mktemp(f"tiny-{name}"), name) for name in TINY_CONFIGS}


def pytest_configure(config: pytest.Config) -> None:
    """One conversion cache for the whole run, shared by every xdist worker (each worker is a process that inherits
    this environment): $LLMSCOPE_CACHE when set (CI keeps one per run), else a folder removed at the end."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None and not os.environ.get("LLMSCOPE_CACHE"):
        folder = tempfile.mkdtemp(prefix="llmscope-cache-")
        os.environ["LLMSCOPE_CACHE"] = folder
        config.stash[_OWN_CACHE] = folder


def pytest_unconfigure(config: pytest.Config) -> None:
    folder = config.stash.get(_OWN_CACHE, None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


_OWN_CACHE = pytest.StashKey[str]()
# The tiers in the order their modules are handed to the xdist workers (make test: --dist loadscope, a module's tests
# in one worker, --no-loadscope-reorder, modules in this order): the slow tier first, so that the last modules to
# finish are short ones.
TIER_ORDER = ("slow", "process", "commands", "unit")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def tier(item: pytest.Item) -> int:
        folder = item.path.relative_to(Path(__file__).parent).parts[0]
        return TIER_ORDER.index(folder) if folder in TIER_ORDER else len(TIER_ORDER)

    items.sort(key=tier)  # stable: within a tier, the collection order


@pytest.fixture(scope="session", autouse=True)
def llmscope_cache(request: pytest.FixtureRequest) -> Path:
    """The GGUF conversion cache. When the run holds slow tests, the embedded model's conversions are made here
    first, each once for all workers (see helpers.cache.warm_embedded_entries)."""
    cache = Path(os.environ["LLMSCOPE_CACHE"])
    if any(item.get_closest_marker("slow") for item in request.session.items):
        from helpers.cache import warm_embedded_entries

        warm_embedded_entries(cache)
    return cache


@pytest.fixture(scope="session")
def embedded_model(llmscope_cache: Path) -> Any:
    """The embedded SmolLM2-135M-Instruct, loaded once per session in float32 on the CPU, exactly dequantized
    (--quantize none: the reference path; the quantization tests cover the packed one)."""
    from llmscope.loading.loader import load_model

    return load_model(None, device="cpu", dtype="float32", quantize="none")


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch):
    """Run llmscope in-process: cli("tokenize", "hi", "--json") -> CliResult with stdout/stderr apart."""
    monkeypatch.delenv("LLMSCOPE_MODEL", raising=False)

    def run(*args: object, input: str | bytes | None = None, env: dict[str, str] | None = None) -> CliResult:
        return invoke(*args, input=input, env=env)

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
def docs_figures() -> Any:
    """docs/figures.py as a module: the stored outputs of the marked blocks and figures of README.md and docs/."""
    import importlib.util
    import sys

    from helpers.paths import ROOT

    spec = importlib.util.spec_from_file_location("docs_figures", ROOT / "docs" / "figures.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["docs_figures"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def browser() -> Any:
    """A headless chromium driven by Playwright; the test is skipped, with the reason, when either is missing."""
    from helpers.browser import CHROMIUM_ARGS, chromium_path

    playwright_api = pytest.importorskip(
        "playwright.sync_api", reason="Playwright is not installed: pip install 'llmscope[browser]' (see README)")
    path = chromium_path()
    if path is None:
        pytest.skip("no chromium found: apt-get install chromium (or set LLMSCOPE_CHROMIUM); see README")
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path) -> Any:
    """The tiny llama loaded once per module in float32 on the CPU, for servers run in process."""
    from llmscope.loading.loader import load_model

    return load_model(str(tiny_model_dir), device="cpu", dtype="float32")


@pytest.fixture
def served(loaded: Any) -> Any:
    """llmscope serve's app on a thread (helpers.inprocess_server), stopped after the test."""
    from helpers.inprocess_server import InProcessServer

    server = InProcessServer(loaded)
    yield server
    server.stop()
