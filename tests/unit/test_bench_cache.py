"""bench-cache's statistics on known numbers and its measurement on the tiny model: pairs, intervals, the time
budget (fake clocks, no timing asserted), depth and sweep settings. The speed-up itself belongs in benchmarks/."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest

from llmscope.bench import benchmark
from llmscope.bench import timed_run as benchrun
from llmscope.bench.benchmark import bench_cache, parse_sweep
from llmscope.bench.results import (
    CACHE,
    NO_CACHE,
    TTFT_GAP,
    ModeSummary,
    first_difference,
    speedup,
    summarize_mode,
    ttft_gap_note,
)
from llmscope.bench.timed_run import RunTiming, run_timing
from llmscope.core.errors import UsageError
from llmscope.core.stats import (
    PowerFit,
    Stats,
    fit_note,
    fit_power_law,
    interval_note,
    mean,
    mean_interval,
    median,
    sample_std,
    spread_note,
    summarize,
    t_quantile_975,
)
from llmscope.loading.loader import load_model


def _ticking_clock(step: float = 1.0):
    ticks = itertools.count()
    return lambda: next(ticks) * step


def _mode(mode: str, ttfts: list[float]) -> ModeSummary:
    stats = summarize(ttfts)
    assert stats is not None
    return ModeSummary(mode=mode, new_tokens=8, runs=len(ttfts), seconds=stats, ttft_s=stats,
                       decode_ms_per_token=None, tokens_per_s=1.0, decode_tokens_per_s=None, peak_memory_bytes=None,
                       peak_over_start_bytes=None)


def timing(mode: str, run: int, seconds: float, n: int = 10) -> RunTiming:
    return RunTiming(mode=mode, new_tokens=n, run=run, seconds=seconds, ttft_s=seconds / 10,
                     decode_ms_per_token=seconds * 100, tokens_per_s=n / seconds, peak_memory_bytes=1000 * run)


class FakeClock:
    """Stands in for the time module inside benchmark: the fake runs below advance it by their own seconds."""

    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now


def fake_runs(monkeypatch: pytest.MonkeyPatch, ratios: list[float]) -> list[tuple[bool, int]]:
    """Replace the timed generate call: a cached run takes 1 s, the uncached run of pair k takes ratios[k] s."""
    clock = FakeClock()
    calls: list[tuple[bool, int]] = []
    monkeypatch.setattr(benchmark, "time", clock)

    def run(loaded, input_ids, mask, new_tokens, use_cache, on_token, cache_options=None, stop=None):
        pair = sum(1 for cached, _ in calls if cached == use_cache)
        seconds = 1.0 if use_cache else ratios[pair % len(ratios)]
        calls.append((use_cache, new_tokens))
        clock.now += seconds
        times = [seconds * (index + 1) / new_tokens for index in range(new_tokens)]
        return seconds, times, (None, None), benchrun._Raw(ids=list(range(new_tokens)))

    monkeypatch.setattr(benchmark, "_one_run", run)
    return calls


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


def test_a_ttft_gap_on_identical_prefills_is_called_noise() -> None:
    same = ttft_gap_note(_mode("cache", [0.100, 0.104]), _mode("no-cache", [0.110, 0.112]), 21)
    assert same is None
    gap = ttft_gap_note(_mode("cache", [0.100, 0.100]), _mode("no-cache", [0.200, 0.200]), 21)
    assert gap is not None and gap.startswith("noise:") and "100 ms with the cache and 200 ms without" in gap
    assert "same 21-token prefill" in gap and "100% gap" in gap
    edge = ttft_gap_note(_mode("cache", [0.100]), _mode("no-cache", [0.100 * (1 + TTFT_GAP) - 1e-9]), 5)
    assert edge is None


def test_mean_std_median_on_known_numbers() -> None:
    assert mean([1, 2, 3, 4]) == 2.5
    assert sample_std([1, 2, 3, 4]) == pytest.approx(math.sqrt(5 / 3), rel=1e-15)
    assert sample_std([2, 4, 4, 4, 5, 5, 7, 9]) == pytest.approx(math.sqrt(32 / 7), rel=1e-15)
    assert sample_std([3.0]) is None
    assert median([5, 1, 3]) == 3 and median([4, 1, 3, 2]) == 2.5
    assert summarize([None, 4.0, 1.0, None, 7.0]) == Stats(n=3, mean=4.0, std=3.0, min=1.0, median=4.0, max=7.0)
    assert summarize([None]) is None


def test_power_law_fit_recovers_exact_exponents() -> None:
    lengths = [16, 32, 64, 128, 256]
    quadratic = fit_power_law(lengths, [2.0 * n**2 for n in lengths])
    assert quadratic is not None
    assert quadratic.exponent == pytest.approx(2.0, abs=1e-12)
    assert quadratic.coefficient == pytest.approx(2.0, rel=1e-12)
    assert quadratic.r_squared == pytest.approx(1.0, abs=1e-12) and quadratic.points == 5
    linear = fit_power_law(lengths, [0.042 * n for n in lengths])
    assert linear is not None and linear.exponent == pytest.approx(1.0, abs=1e-12)
    assert linear.coefficient == pytest.approx(0.042, rel=1e-12)


def test_power_law_fit_on_points_off_the_line() -> None:
    # log x = 0, 1, 2 and log y = 0, 1, 3: slope 3/2, intercept -1/6, residuals 1/6, -1/3, 1/6 -> R² = 27/28
    fit = fit_power_law([1, math.e, math.e**2], [1, math.e, math.e**3])
    assert fit is not None
    assert fit.exponent == pytest.approx(1.5, abs=1e-12)
    assert fit.coefficient == pytest.approx(math.exp(-1 / 6), rel=1e-12)
    assert fit.r_squared == pytest.approx(27 / 28, rel=1e-12)
    assert fit_power_law([16, 16], [1.0, 2.0]) is None


def test_t_quantiles_and_the_interval_of_a_mean() -> None:
    assert t_quantile_975(1) == 12.706 and t_quantile_975(30) == 2.042
    assert t_quantile_975(60) == pytest.approx(2.000, abs=1e-3)  # tables: 2.000 at 60, 1.980 at 120
    assert t_quantile_975(120) == pytest.approx(1.980, abs=1e-3)
    stats = summarize([2.0, 4.0, 6.0])  # mean 4, std 2
    assert stats is not None
    interval = mean_interval(stats)
    assert interval is not None
    half = 4.303 * 2 / math.sqrt(3)
    assert (interval.low, interval.high) == pytest.approx((4 - half, 4 + half), rel=1e-12)
    assert interval.relative_half_width == pytest.approx(half / 4, rel=1e-12)
    single = summarize([3.0])
    assert single is not None and mean_interval(single) is None


def test_noise_is_said_in_words() -> None:
    # figures measured on a busy machine: 17.8 s ± 8.54 s is noise; a fit with R² 0.315 is noise
    noisy = Stats(n=7, mean=17.8, std=8.54, min=9.0, median=17.0, max=30.0)
    assert spread_note(noisy, "the uncached time") == (
        "noise: the uncached time varied by ±48% of its mean from run to run (busy machine?), so the mean is not a "
        "reliable figure")
    assert spread_note(Stats(n=7, mean=17.8, std=0.5, min=17, median=17.8, max=18.5), "x") is None
    interval = mean_interval(Stats(n=3, mean=16.51, std=9.0, min=8, median=15, max=26))
    note = interval_note(interval, 3)
    assert note is not None and note.startswith("noise: the speed-up's 95% interval spans") and "over 3 pairs" in note
    assert interval_note(None, 1) is not None and "one pair only" in interval_note(None, 1)  # type: ignore[operator]
    tight = mean_interval(Stats(n=5, mean=2.0, std=0.01, min=1.99, median=2.0, max=2.01))
    assert interval_note(tight, 5) is None
    poor = PowerFit(exponent=-0.20, coefficient=1.0, r_squared=0.315, points=5)
    assert fit_note(poor) == ("poor fit (R² 0.32): the times do not follow one power law, most likely noise; the "
                              "exponent means little")
    assert fit_note(PowerFit(exponent=1.0, coefficient=1.0, r_squared=0.999, points=5)) is None
    assert "two points" in (fit_note(PowerFit(exponent=1.0, coefficient=1.0, r_squared=1.0, points=2)) or "")


def test_run_timing_splits_prefill_from_decode() -> None:
    run = run_timing(CACHE, 4, 1, 1.0, [0.2, 0.3, 0.4, 0.5], 123, 100)
    assert run.ttft_s == 0.2 and run.tokens_per_s == 4.0 and run.peak_memory_bytes == 123
    assert run.peak_over_start_bytes == 23
    assert run.decode_ms_per_token == pytest.approx(100.0, rel=1e-12)
    assert run_timing(CACHE, 1, 1, 0.5, [0.4], None).decode_ms_per_token is None


def test_speedup_and_mode_summary_from_interleaved_pairs() -> None:
    runs = [timing(CACHE, 1, 1.0), timing(NO_CACHE, 1, 3.0), timing(NO_CACHE, 2, 8.0), timing(CACHE, 2, 2.0)]
    result = speedup(runs, 10)
    assert result is not None
    assert result.of_means == pytest.approx(5.5 / 1.5, rel=1e-15)
    assert result.pairs.mean == 3.5 and result.pairs.min == 3.0 and result.pairs.max == 4.0
    assert result.pairs.std == pytest.approx(math.sqrt(0.5), rel=1e-15)
    summary = summarize_mode(NO_CACHE, 10, runs)
    assert summary is not None and summary.runs == 2 and summary.seconds.mean == 5.5
    assert summary.tokens_per_s == pytest.approx(10 / 5.5) and summary.peak_memory_bytes == 2000
    assert summary.decode_tokens_per_s == pytest.approx(1000 / 550)
    assert speedup(runs[:1], 10) is None and summarize_mode(CACHE, 99, runs) is None


def test_first_difference() -> None:
    assert first_difference([1, 2, 3], [1, 2, 3]) is None
    assert first_difference([1, 2, 3], [1, 5, 3]) == 1
    assert first_difference([1, 2], [1, 2, 3]) == 2


def test_parse_sweep_and_counts() -> None:
    assert parse_sweep("64, 16,32,16") == (16, 32, 64)
    for bad, message in (("16,x", "comma-separated"), ("0,16", "at least 1"), ("16", "two different"),
                         ("", "two different")):
        with pytest.raises(UsageError, match=message):
            parse_sweep(bad)
    with pytest.raises(UsageError, match="--repeat must be at least 1"):
        benchmark.check_counts(0, 0, (10,))
    with pytest.raises(UsageError, match="--warmup must be 0 or more"):
        benchmark.check_counts(-1, 3, (10,))
    assert benchmark.planned_tokens((16, 32), warmup=1, repeat=3) == 2 * (16 + 3 * 48)


def test_bench_cache_on_the_tiny_model(tiny) -> None:
    seen: list[RunTiming] = []
    advanced: list[int] = []
    result = benchmark.bench_cache(tiny, "Hello world", (4,), warmup=1, repeat=2, on_run=seen.append,
                                   on_progress=lambda description, advance: advanced.append(advance))
    prompt_tokens = len(tiny.tokenizer("Hello world")["input_ids"])
    assert result.prompt_tokens == prompt_tokens and not result.interrupted and result.complete_pairs == 2
    assert [(r.mode, r.run) for r in result.runs] == [(CACHE, 1), (NO_CACHE, 1), (NO_CACHE, 2), (CACHE, 2)]
    assert seen == list(result.runs)
    assert sum(advanced) == benchmark.planned_tokens((4,), 1, 2) == 24
    length = result.results[0]
    assert length.check is not None and length.check.identical and length.check.tokens_compared == 4
    assert length.check.pairs_compared == 2
    # tiny llama: 2 layers x 2 KV heads x head dim 16 x (K, V) x 4 bytes
    kv = length.kv_cache
    assert kv is not None and kv.bytes_per_token == 2 * 2 * 16 * 2 * 4 and kv.tokens == prompt_tokens + 4 - 1
    assert kv.measured_bytes == kv.formula_bytes == kv.bytes_per_token * kv.tokens
    assert kv.cache_class == "DynamicCache"
    assert all(r.ttft_s <= r.seconds and r.decode_ms_per_token is not None for r in result.runs)
    assert length.cache is not None and length.cache.runs == 2 and length.speedup is not None
    assert result.growth == ()


def test_interrupt_keeps_the_finished_runs(tiny) -> None:
    def stop_after_three(run: RunTiming) -> None:
        if len(finished) == 2:
            raise KeyboardInterrupt
        finished.append(run)

    finished: list[RunTiming] = []
    result = benchmark.bench_cache(tiny, "Hello", (3,), warmup=0, repeat=3, on_run=stop_after_three)
    assert result.interrupted and len(result.runs) == 3 and result.complete_pairs == 1
    assert result.results[0].check is not None and result.results[0].check.pairs_compared == 1


def test_plot_check_leaves_no_file_behind(tmp_path: Path) -> None:
    from llmscope.core.output_files import PLOT_FILE, check_output

    path = tmp_path / "chart.svg"
    check_output(PLOT_FILE, str(path))
    assert not path.exists()
    path.write_text("kept")
    check_output(PLOT_FILE, str(path))
    assert path.read_text() == "kept"


def test_adaptive_stops_when_the_interval_is_tight(tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_runs(monkeypatch, [3.0])  # every pair the same: zero spread, the interval is 3.0 ± 0
    result = benchmark.bench_cache(tiny, "Hello", (4,), warmup=0, max_time=1000)
    length = result.results[0]
    assert length.stop_reason == "converged" and result.complete_pairs == benchmark.MIN_PAIRS == 3
    assert length.speedup is not None and length.speedup.interval is not None
    assert length.speedup.interval.low == length.speedup.interval.high == 3.0 and length.speedup.note is None
    assert result.repeat is None and result.max_time_s == 1000 and result.target_ci == 0.05


def test_adaptive_stops_at_the_time_budget_and_says_it_is_noise(tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    # pair k's uncached run takes 2 s or 4 s in turn (the warm-up pair takes the first, 2 s): pairs of 3 s and 5 s
    calls = fake_runs(monkeypatch, [2.0, 4.0])
    result = benchmark.bench_cache(tiny, "Hello", (4,), warmup=1, max_time=32)
    assert calls[:2] == [(True, 4), (False, 4)]  # the warm-up pair runs first, at min(4, 16) tokens
    # 3 s of warm-up leave 29 s; timed pairs take 5, 3, 5, 3, 5, 3 s (24 s, and a 7th of 4 s on average fits),
    # then 5 s (29 s): an 8th would overrun
    length = result.results[0]
    assert length.stop_reason == "time budget" and result.complete_pairs == 7
    ratios = [4.0, 2.0, 4.0, 2.0, 4.0, 2.0, 4.0]
    centre, std = mean(ratios), sample_std(ratios)
    assert std is not None
    half = 2.447 * std / math.sqrt(7)  # Student's t with 6 degrees of freedom, 0.975 quantile
    assert length.speedup is not None and length.speedup.interval is not None
    assert length.speedup.interval.low == pytest.approx(centre - half, rel=1e-12)
    assert length.speedup.interval.relative_half_width == pytest.approx(half / centre, rel=1e-12)
    assert length.speedup.note is not None and length.speedup.note.startswith("noise: the speed-up's 95% interval")
    assert length.no_cache is not None and length.no_cache.note is not None  # std/mean = 1.069/3.143 = 34%
    assert length.cache is not None and length.cache.note is None  # every cached run took 1 s
    assert result.seconds == pytest.approx(3 + 29)


def test_repeat_forces_the_count_whatever_the_interval(tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_runs(monkeypatch, [3.0])
    result = benchmark.bench_cache(tiny, "Hello", (4,), warmup=0, repeat=5, max_time=0.001)
    assert result.complete_pairs == 5 and result.results[0].stop_reason == "repeat" and result.max_time_s is None


def test_depth_ids_repeat_the_prompt() -> None:
    assert benchmark.depth_ids([5, 6, 7], 7) == [5, 6, 7, 5, 6, 7, 5]
    assert benchmark.depth_ids([5, 6, 7], 2) == [5, 6]


def test_settings_derive_counts_and_budget() -> None:
    default = benchmark.BenchSettings()
    assert default.runs is None and default.time_budget == benchmark.DEFAULT_MAX_TIME == 80
    assert default.lengths == (100,) and default.planned_tokens() is None
    depth = benchmark.BenchSettings(depth="512,128")
    assert depth.depths == (128, 512) and depth.lengths == (16,) and depth.runs == 3 and depth.time_budget is None
    assert depth.planned_tokens() == 2 * (16 + 3 * 32)
    assert benchmark.BenchSettings(sweep="1,2", max_time=30).runs is None
    assert benchmark.BenchSettings(repeat=4).time_budget is None


@pytest.mark.cuda
def test_cuda_peak_memory_is_per_run(tiny_model_dir: Path) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    loaded = load_model(str(tiny_model_dir), device="cuda", dtype="float32")
    result = benchmark.bench_cache(loaded, "Hello", (3,), warmup=1, repeat=2)
    assert "max_memory_allocated" in result.memory_measure
    assert all(run.peak_memory_bytes and run.peak_memory_bytes > 0 for run in result.runs)
    assert result.results[0].check is not None and result.results[0].check.identical
    kv = result.results[0].kv_cache
    assert kv is not None and kv.measured_bytes == kv.formula_bytes
