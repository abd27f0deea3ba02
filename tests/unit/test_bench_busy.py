"""bench-cache on a busy machine (issue 21 item 4): threads fitted to the free cores like every command, the
--max-time budget checked inside a run (a fake clock, no timing), and a time-to-first-token gap between the two
modes' identical prefills called noise."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from llmscope.bench.benchmark import bench_cache
from llmscope.bench.results import TTFT_GAP, ModeSummary, ttft_gap_note
from llmscope.core.stats import summarize
from llmscope.loading.loader import load_model


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    return load_model(str(tiny_model_dir), device="cpu")


def test_threads_fit_the_free_cores(cli, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import llmscope.bench.benchmark

    monkeypatch.setattr(llmscope.bench.benchmark, "busy_cpu_percent", lambda interval=0.25: 75.0)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)  # 3 of 4 cores busy: 1 left free
    monkeypatch.delenv("LLMSCOPE_THREADS", raising=False)
    result = cli("bench-cache", "Hello", "-m", tiny_model_dir, "-n", "2", "--repeat", "1", "--warmup", "0", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["threads"] == 1
    assert "timing on 1 torch thread, the cores they leave free" in " ".join(result.stderr.split())
    asked = cli("bench-cache", "Hello", "-m", tiny_model_dir, "-n", "2", "--repeat", "1", "--warmup", "0", "--json",
                "--threads", "2")
    assert asked.exit_code == 0 and asked.json()["threads"] == 2, asked.stderr


def _ticking_clock(step: float = 1.0):
    ticks = itertools.count()
    return lambda: next(ticks) * step


def test_a_run_that_would_overrun_the_budget_stops_inside(tiny) -> None:
    result = bench_cache(tiny, "Hello world", (40,), warmup=0, max_time=6.0, clock=_ticking_clock())
    assert not result.interrupted and result.runs == () and result.results == ()
    assert result.budget_note is not None and "was stopped after" in result.budget_note
    assert "of 40 tokens" in result.budget_note and "no run finished" in result.budget_note
    stopped = int(result.budget_note.split("stopped after ")[1].split()[0])
    assert 1 <= stopped < 40


def test_a_budget_that_is_not_reached_stops_nothing(tiny) -> None:
    result = bench_cache(tiny, "Hello world", (4,), warmup=1, max_time=1e9, target_ci=10.0,
                         clock=_ticking_clock(1e-9))
    assert result.budget_note is None and result.complete_pairs == 3 and len(result.runs) == 6
    assert result.results[0].stop_reason == "converged"


def _mode(mode: str, ttfts: list[float]) -> ModeSummary:
    stats = summarize(ttfts)
    assert stats is not None
    return ModeSummary(mode=mode, new_tokens=8, runs=len(ttfts), seconds=stats, ttft_s=stats,
                       decode_ms_per_token=None, tokens_per_s=1.0, decode_tokens_per_s=None, peak_memory_bytes=None,
                       peak_over_start_bytes=None)


def test_a_ttft_gap_on_identical_prefills_is_called_noise() -> None:
    same = ttft_gap_note(_mode("cache", [0.100, 0.104]), _mode("no-cache", [0.110, 0.112]), 21)
    assert same is None
    gap = ttft_gap_note(_mode("cache", [0.100, 0.100]), _mode("no-cache", [0.200, 0.200]), 21)
    assert gap is not None and gap.startswith("noise:") and "100 ms with the cache and 200 ms without" in gap
    assert "same 21-token prefill" in gap and "100% gap" in gap
    edge = ttft_gap_note(_mode("cache", [0.100]), _mode("no-cache", [0.100 * (1 + TTFT_GAP) - 1e-9]), 5)
    assert edge is None


@pytest.mark.parametrize("columns", [80, 64])
def test_depth_view_cuts_no_figure_and_wraps_fits_under_themselves(cli, tiny_model_dir: Path, columns: int) -> None:
    """Issue 21 item 7: at 80 columns (and narrower) no number or header is cut with '…': columns are left out
    (the pair count then said in a caption), and the growth fits wrap under their own text, never to column 0."""
    result = cli("bench-cache", "Hello world", "-m", tiny_model_dir, "--depth", "6,24", "-n", "3", "--repeat", "1",
                 "--warmup", "0", "-q", env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "…" not in result.stdout and max(len(line) for line in lines) <= columns
    assert ("pairs per prompt length: 1" in result.stdout) == (columns < 80)
    start = next(i for i, line in enumerate(lines) if line.startswith("  time to first token:"))
    end = next(i for i, line in enumerate(lines) if "mean decode ms/token against prompt tokens" in line)
    fits = [line for line in lines[start:end] if line.strip()]
    assert fits and all(line.startswith(" ") for line in fits), fits
    assert any("⚠" in line for line in fits)  # the two-point notes, wrapped under their text
