"""Where the repository's folders are, for tests that read its files (README, docs, benchmarks, the package)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "llmscope"
BENCHMARKS = ROOT / "benchmarks"
TESTS = ROOT / "tests"
