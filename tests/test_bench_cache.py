"""`llmscope bench-cache`: the statistics on known numbers, the measurement's bookkeeping on the tiny random model,
and every output format. No timing is asserted; the speed-up itself belongs in benchmarks/."""

from __future__ import annotations

import csv
import io
import math
import sys
from pathlib import Path

import pytest

from llmscope.bench import benchmark
from llmscope.bench import timed_run as benchrun
from llmscope.bench.benchmark import parse_sweep
from llmscope.bench.results import CACHE, NO_CACHE, first_difference, speedup, summarize_mode
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

TINY = ("-n", "3", "--repeat", "2", "--warmup", "0")
SMOLLM2_KV_BYTES_PER_TOKEN = 2 * 30 * 3 * 64 * 4  # K and V x layers x KV heads x head dim x float32


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    return load_model(str(tiny_model_dir), device="cpu")


def timing(mode: str, run: int, seconds: float, n: int = 10) -> RunTiming:
    return RunTiming(mode=mode, new_tokens=n, run=run, seconds=seconds, ttft_s=seconds / 10,
                     decode_ms_per_token=seconds * 100, tokens_per_s=n / seconds, peak_memory_bytes=1000 * run)


# ---------------------------------------------------------------------------------------------- statistics


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
    # the busy-machine figures: 17.8 s ± 8.54 s is noise; a fit with R² 0.315 is noise
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


# ---------------------------------------------------------------------------------------------- measuring


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


# ---------------------------------------------------------------------------------------------- the command


def test_json_has_every_run(cli, tiny_model_dir: Path) -> None:
    result = cli("bench-cache", "Hello world", "-m", tiny_model_dir, *TINY, "--json", "-q")
    assert result.exit_code == 0, result.stderr
    document = result.json()
    assert document["command"] == "bench-cache" and document["model"] == str(tiny_model_dir)
    assert document["device"] == "cpu" and document["lengths"] == [3] and document["repeat"] == 2
    assert len(document["runs"]) == 4 and {run["mode"] for run in document["runs"]} == {"cache", "no-cache"}
    assert all(run["seconds"] > 0 and run["new_tokens"] == 3 for run in document["runs"])
    length = document["results"][0]
    assert length["check"]["identical"] is True and length["cache"]["seconds"]["n"] == 2
    assert length["kv_cache"]["measured_bytes"] == length["kv_cache"]["formula_bytes"]
    assert document["interrupted"] is False and document["sweep"] is False and "run 1" not in result.stderr


@pytest.mark.parametrize(("flag", "kind"), [("--static-cache", "static"), ("--compile", "static + torch.compile")])
def test_static_cache_and_compile_modes_keep_the_output(cli, tiny_model_dir: Path, flag: str, kind: str) -> None:
    result = cli("bench-cache", "Hello world", "-m", tiny_model_dir, "-n", "4", "--repeat", "2", "--warmup", "1",
                 flag, "--json", "-q")
    assert result.exit_code == 0, result.stderr
    document = result.json()
    assert document["cache_kind"] == kind
    length = document["results"][0]
    assert length["check"]["identical"] is True and length["check"]["pairs_compared"] == 2
    assert length["kv_cache"]["cache_class"] == "StaticCache"
    # a static cache is allocated for prompt + new tokens up front: more than the dynamic cache holds at the end
    assert length["kv_cache"]["measured_bytes"] >= length["kv_cache"]["formula_bytes"]


def test_csv_one_row_per_run(cli, tiny_model_dir: Path) -> None:
    result = cli("bench-cache", "Hello", "-m", tiny_model_dir, *TINY, "--csv", "-q")
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == ["mode", "new_tokens", "run", "seconds", "ttft_s", "decode_ms_per_token", "tokens_per_s",
                             "peak_memory_bytes", "peak_over_start_bytes", "prompt_tokens"]
    assert [(row["mode"], row["run"]) for row in rows] == [("cache", "1"), ("no-cache", "1"), ("no-cache", "2"),
                                                           ("cache", "2")]
    assert all(float(row["seconds"]) >= float(row["ttft_s"]) > 0 and row["new_tokens"] == "3" for row in rows)


def test_table_for_people(cli, tiny_model_dir: Path) -> None:
    result = cli("bench-cache", "-", "-m", tiny_model_dir, *TINY, input="Hello world\n")
    assert result.exit_code == 0, result.stderr
    for expected in ("with KV cache", "without cache", "time to first token", "decode ms/token",
                     "speed-up from the cache", "KV cache held at the end", "DynamicCache",
                     "✓ identical token ids with and without the cache (2 pairs × 3 tokens)"):
        assert expected in result.stdout
    assert "cache run 1:" in result.stderr and "peak memory:" in result.stderr  # progress lines go to stderr


def test_sweep_fits_and_charts(cli, tiny_model_dir: Path) -> None:
    result = cli("bench-cache", "Hi", "-m", tiny_model_dir, "--sweep", "2,1", "--warmup", "0", "--json", "-q")
    assert result.exit_code == 0, result.stderr
    document = result.json()
    assert [length["new_tokens"] for length in document["results"]] == [1, 2] and document["sweep"] is True
    assert document["repeat"] == benchmark.DEFAULT_SWEEP_REPEAT == 3 and len(document["runs"]) == 12
    assert [growth["mode"] for growth in document["growth"]] == ["cache", "no-cache"]
    assert all(growth["fit"]["points"] == 2 for growth in document["growth"])
    text = cli("bench-cache", "Hi", "-m", tiny_model_dir, "--sweep", "1,2", "--repeat", "1", "--warmup", "0", "-q")
    assert text.exit_code == 0 and "● with KV cache ∝ n^" in text.stdout and "■ without cache ∝ n^" in text.stdout
    assert "at every length (2 pairs)" in text.stdout and "run 1" not in text.stderr


def test_a_difference_is_marked_and_warned(cli, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = benchmark._one_run

    def corrupt(loaded, input_ids, mask, new_tokens, use_cache, on_token, cache_options=None):
        seconds, times, memory, raw = real(loaded, input_ids, mask, new_tokens, use_cache, on_token, cache_options)
        if not use_cache:
            raw.ids[2] = raw.ids[2] + 1
        return seconds, times, memory, raw

    monkeypatch.setattr(benchmark, "_one_run", corrupt)
    result = cli("bench-cache", "Hello", "-m", tiny_model_dir, *TINY)
    assert result.exit_code == 0
    assert "✗ the token ids differ with and without the cache at new token 2 (run 1" in result.stdout
    assert "warning: the token ids differ" in result.stderr


def test_ctrl_c_shows_finished_runs_and_exits_130(cli, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = benchmark._one_run
    calls = []

    def interrupt_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(benchmark, "_one_run", interrupt_third)
    result = cli("bench-cache", "Hello", "-m", tiny_model_dir, *TINY, "--json")
    assert result.exit_code == 130
    assert len(result.json()["runs"]) == 2 and result.json()["interrupted"] is True
    assert "interrupted: showing the 2 timed run(s) that finished" in result.stderr


def test_threads_are_set_for_the_run_and_restored(cli, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    before = torch.get_num_threads()
    monkeypatch.setattr(benchmark, "busy_cpu_percent", lambda interval=0.25: 80.0)
    result = cli("bench-cache", "Hi", "-m", tiny_model_dir, "-n", "2", "--repeat", "1", "--warmup", "0",
                 "--threads", "1", "--json")
    assert result.exit_code == 0, result.stderr
    document = result.json()
    assert document["threads"] == 1 and document["busy_cpu_percent"] == 80.0 and torch.get_num_threads() == before
    assert "warning: other processes kept the CPUs 80% busy just before timing" in result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (("--repeat", "0"), "--repeat must be at least 1"),
    (("--warmup", "-1"), "--warmup must be 0 or more"),
    (("-n", "0"), "--max-new-tokens must be at least 1"),
    (("--sweep", "16,abc"), "--sweep takes comma-separated token counts"),
    (("--sweep", "16"), "--sweep needs at least two different lengths"),
    (("--sweep", "8,16", "-n", "4"), "either --max-new-tokens or --sweep"),
    (("--json", "--csv"), "give one of --json, --csv"),
    (("--plot", "chart.png"), "--plot draws the --sweep or --depth chart"),
    (("--repeat", "3", "--max-time", "10"), "either --repeat (a fixed count) or --max-time"),
    (("--max-time", "nan"), "--max-time must be a positive number of seconds"),
    (("--max-time", "0"), "--max-time must be a positive number of seconds"),
    (("--depth", "8,x"), "--depth takes comma-separated token counts, like 128,512,2048"),
    (("--depth", "8"), "--depth needs at least two different lengths"),
    (("--depth", "8,16", "--sweep", "1,2"), "either --sweep (output lengths) or --depth"),
    (("--depth", "100,300"), "--depth 300 does not fit: the prompt has 300 tokens but the model's context is 256"),
    (("--depth", "100,250"), "--depth 250 does not fit: 250 prompt tokens + --max-new-tokens 16 exceed the model's"),
    (("--sweep", "8,16", "--plot", "chart.pdf"), "--plot writes .png or .svg"),
    (("-n", "500"), "exceed the model's context of 256"),
    (("--threads", "0"), "--threads must be at least 1"),
    (("--compile", "--warmup", "0"), "--compile needs at least one warm-up run"),
])
def test_bad_options_are_usage_errors(cli, tiny_model_dir: Path, args: tuple[str, ...], message: str) -> None:
    result = cli("bench-cache", "Hello", "-m", tiny_model_dir, *args)
    assert result.exit_code == 2 and message in result.stderr and result.stdout == ""


def test_plot_without_matplotlib_says_how_to_install(cli, tiny_model_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    result = cli("bench-cache", "Hi", "-m", tiny_model_dir, "--sweep", "1,2", "--plot", tmp_path / "chart.png")
    assert result.exit_code == 2 and "pip install 'llmscope[plot]'" in result.stderr


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_plot_writes_the_image(cli, tiny_model_dir: Path, tmp_path: Path, suffix: str) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / f"chart{suffix}"
    result = cli("bench-cache", "Hi", "-m", tiny_model_dir, "--sweep", "1,2", "--repeat", "1", "--warmup", "0",
                 "--plot", path)
    assert result.exit_code == 0, result.stderr
    head = path.read_bytes()[:200]
    assert head.startswith(b"\x89PNG") if suffix == ".png" else b"<svg" in path.read_bytes()
    assert f"wrote {path}" in result.stderr


@pytest.mark.parametrize("where", ["folder", "under a file", "no permission"])
def test_plot_path_is_checked_before_anything_runs(cli, tmp_path: Path, where: str) -> None:
    """A --plot path that cannot be written fails at once: the model (here one that does not exist) never loads."""
    plain_file = tmp_path / "file.txt"
    plain_file.write_text("x")
    path = {"folder": tmp_path / "charts.png", "under a file": plain_file / "chart.png",
            "no permission": Path("/sys/llmscope-chart.png")}[where]
    if where == "folder":
        path.mkdir()
    result = cli("bench-cache", "Hi", "-m", tmp_path / "no-such-model", "--sweep", "1,2", "--plot", path)
    expected = {"folder": "is a folder", "under a file": "does not exist", "no permission": "cannot write"}[where]
    assert result.exit_code == 2 and expected in result.stderr and "no-such-model" not in result.stderr


def test_plot_check_leaves_no_file_behind(tmp_path: Path) -> None:
    from llmscope.core.output_files import PLOT_FILE, check_output

    path = tmp_path / "chart.svg"
    check_output(PLOT_FILE, str(path))
    assert not path.exists()
    path.write_text("kept")
    check_output(PLOT_FILE, str(path))
    assert path.read_text() == "kept"


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


def test_default_run_is_adaptive_and_records_the_machine(cli, tiny_model_dir: Path) -> None:
    import importlib.metadata

    result = cli("bench-cache", "Hello", "-m", tiny_model_dir, "-n", "3", "--warmup", "0", "--max-time", "2",
                 "--json", "-q")
    assert result.exit_code == 0, result.stderr
    document = result.json()
    assert document["repeat"] is None and document["max_time_s"] == 2 and document["min_pairs"] == 3
    length = document["results"][0]
    assert length["stop_reason"] in ("converged", "time budget", "pair limit")
    assert length["speedup"]["pairs"]["n"] == document["complete_pairs"] >= 1
    machine = document["machine"]
    assert machine["torch_version"] == importlib.metadata.version("torch")
    assert machine["transformers_version"] == importlib.metadata.version("transformers")
    assert machine["llmscope_version"] == document["llmscope_version"] and machine["gpu_name"] is None
    assert machine["cpu_model"] and machine["threads"] == document["threads"] and len(machine["load_average"]) == 3
    assert machine["timestamp"].endswith("+00:00")


def test_depth_times_prefill_and_decode_at_each_prompt_length(cli, tiny_model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    result = cli("bench-cache", "Hello world", "-m", tiny_model_dir, "--depth", "24,6", "-n", "3", "--repeat", "2",
                 "--warmup", "0", "--json", "-q", "--plot", tmp_path / "depth.png")
    assert result.exit_code == 0, result.stderr
    document = result.json()
    assert document["depths"] == [6, 24] and document["lengths"] == [3]
    assert [length["prompt_tokens"] for length in document["results"]] == [6, 24]
    for length in document["results"]:
        assert length["kv_cache"]["tokens"] == length["prompt_tokens"] + 3 - 1
        assert length["check"]["identical"] is True and length["cache"]["runs"] == 2
    assert sorted({run["prompt_tokens"] for run in document["runs"]}) == [6, 24] and len(document["runs"]) == 8
    assert {(g["quantity"], g["mode"]) for g in document["growth"]} == {
        (q, m) for q in ("ttft_s", "decode_ms_per_token") for m in ("cache", "no-cache")}
    assert all(g["against"] == "prompt_tokens" and g["fit"]["points"] == 2 for g in document["growth"])
    assert (tmp_path / "depth.png").read_bytes().startswith(b"\x89PNG")
    text = cli("bench-cache", "Hello world", "-m", tiny_model_dir, "--depth", "6,24", "-n", "3", "--repeat", "1",
               "--warmup", "0", "-q")
    assert text.exit_code == 0, text.stderr
    for expected in ("prompts of 6, 24 tokens", "TTFT cache", "time to first token: with KV cache ∝ n^",
                     "decode ms/token: with KV cache ∝ n^", "mean decode ms/token against prompt tokens"):
        assert expected in text.stdout
    # each noise note is said once for the points it covers, not once per point or per mode
    assert text.stdout.count("one pair only") == 1 and "⚠ every point: one pair only" in text.stdout
    assert text.stdout.count("two points: the line passes through both") == 2  # once per fitted quantity


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


@pytest.mark.slow
def test_embedded_model_same_ids_and_kv_size(cli) -> None:
    """The seed's prompt on the real SmolLM2: same greedy ids with and without the cache; KV bytes as the formula."""
    result = cli("bench-cache", "-n", "3", "--repeat", "1", "--warmup", "0", "--json", "-q", "--quantize", "none")
    assert result.exit_code == 0, result.stderr  # exact weights: packed ones round one row and many differently
    document = result.json()
    assert document["prompt_tokens"] == 21 and document["chat_template_applied"] is False
    length = document["results"][0]
    assert length["check"]["identical"] is True
    assert length["kv_cache"]["bytes_per_token"] == SMOLLM2_KV_BYTES_PER_TOKEN
    assert length["kv_cache"]["measured_bytes"] == SMOLLM2_KV_BYTES_PER_TOKEN * (21 + 3 - 1)


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
