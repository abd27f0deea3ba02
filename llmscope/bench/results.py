"""What `bench-cache` found, as frozen dataclasses of plain numbers, and the summaries built from the timed runs:
per-mode statistics, the speed-up with its interval, the output check, the growth fits. It measures nothing."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from llmscope.bench.timed_run import RunTiming
from llmscope.core.stats import (
    Interval,
    PowerFit,
    Stats,
    fit_note,
    fit_power_law,
    interval_note,
    mean,
    mean_interval,
    spread_note,
    summarize,
)
from llmscope.system.runinfo import RunInfo

CACHE, NO_CACHE = "cache", "no-cache"
MODES = (CACHE, NO_CACHE)
STOP_REASONS = ("repeat", "converged", "time budget", "pair limit", "interrupted")
TTFT_GAP = 0.25  # the two modes' times to first token differ by more than this share: the machine, not the cache


def first_difference(a: Sequence[int], b: Sequence[int]) -> int | None:
    """The first position where two id sequences differ (the shorter length if one is a prefix), else None."""
    for index, (left, right) in enumerate(zip(a, b)):
        if left != right:
            return index
    return None if len(a) == len(b) else min(len(a), len(b))


# ---------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ModeSummary:
    mode: str
    new_tokens: int
    runs: int
    seconds: Stats
    ttft_s: Stats
    decode_ms_per_token: Stats | None
    tokens_per_s: float  # new tokens / mean seconds
    decode_tokens_per_s: float | None  # 1000 / mean decode ms per token
    peak_memory_bytes: int | None  # the highest of the mode's runs
    peak_over_start_bytes: int | None  # the most any of its runs added on top of what was in use at its start
    note: str | None = None  # words when the run-to-run spread says the times are noise


@dataclass(frozen=True)
class SpeedUp:
    """No-cache time / cache time: the ratio of the means, and the ratios of the interleaved run pairs with the 95%
    confidence interval of their mean; note says in words when that interval (or its absence) makes it noise."""

    of_means: float
    pairs: Stats
    interval: Interval | None = None
    note: str | None = None


@dataclass(frozen=True)
class OutputCheck:
    """Whether greedy decoding gave the same ids with and without the cache, in every interleaved pair."""

    identical: bool
    pairs_compared: int
    tokens_compared: int
    first_difference: int | None  # position in the new tokens
    run: int | None  # the pair where it was found
    cache_token_id: int | None
    no_cache_token_id: int | None


@dataclass(frozen=True)
class KVCacheSize:
    """The KV cache the cached run holds when generate returns (prompt + new tokens - 1 positions)."""

    tokens: int
    measured_bytes: int | None  # sum of the key and value tensors in the returned cache object
    formula_bytes: int  # kvcache.cache_size: per layer type, sliding layers capped at window - 1 positions
    bytes_per_token: int
    bytes_per_value: int
    cache_class: str | None
    note: str | None = None  # why the formula is not bytes_per_token × tokens (windows, fixed states)


@dataclass(frozen=True)
class LengthResult:
    """One measuring point: new_tokens generated after a prompt of prompt_tokens, both modes."""

    new_tokens: int
    cache: ModeSummary | None
    no_cache: ModeSummary | None
    speedup: SpeedUp | None
    check: OutputCheck | None
    kv_cache: KVCacheSize | None
    text: str | None  # what the cached run generated (the first run)
    prompt_tokens: int = 0
    stop_reason: str = "repeat"  # why the pairs stopped: one of STOP_REASONS
    seconds: float = 0.0  # wall time spent on this point's timed runs
    ttft_note: str | None = None  # words when the two modes' identical prefills took visibly different times


@dataclass(frozen=True)
class GrowthFit:
    """How one mode's quantity grows along the series: seconds against new tokens (sweep), or time to first token
    and decode ms/token against prompt tokens (depth). note: words when the fit says it is noise."""

    mode: str
    fit: PowerFit
    quantity: str = "seconds"  # "seconds", "ttft_s" or "decode_ms_per_token"
    against: str = "new_tokens"  # "new_tokens" or "prompt_tokens"
    note: str | None = None


@dataclass(frozen=True)
class BenchResult:
    model: str
    prompt: str
    prompt_text: str
    prompt_tokens: int
    chat_template_applied: bool
    device: str
    dtype: str
    warmup: int
    repeat: int | None  # pairs per point when fixed; None when adaptive (max_time_s and target_ci apply)
    lengths: tuple[int, ...]
    sweep: bool
    threads: int  # torch.get_num_threads() during the runs
    cpu_count: int | None
    busy_cpu_percent: float | None  # how busy other processes kept the CPUs just before timing
    memory_measure: str  # what peak_memory_bytes means on this device
    process_peak_rss_bytes: int | None  # the process's high-water mark (getrusage ru_maxrss)
    results: tuple[LengthResult, ...]
    growth: tuple[GrowthFit, ...]
    runs: tuple[RunTiming, ...]
    interrupted: bool
    complete_pairs: int
    cache_kind: str = "dynamic"  # the cached mode's KV cache: "dynamic", "static" or "static + torch.compile"
    depths: tuple[int, ...] = ()  # --depth: the prompt lengths timed (the prompt's tokens repeated to each)
    max_time_s: float | None = None  # the time budget of an adaptive run
    target_ci: float | None = None  # the relative half width of the 95% interval an adaptive run stops at
    min_pairs: int | None = None
    warmup_tokens: int = 0  # new tokens per warm-up run
    seconds: float = 0.0  # warm-up and timed runs, wall time
    machine: RunInfo | None = None  # when and on what it ran (llama-bench style)
    budget_note: str | None = None  # a run stopped inside because it would overrun --max-time: what it had done


def _mine(runs: Sequence[RunTiming], mode: str, new_tokens: int, prompt_tokens: int | None) -> list[RunTiming]:
    return [r for r in runs if r.mode == mode and r.new_tokens == new_tokens
            and (prompt_tokens is None or r.prompt_tokens == prompt_tokens)]


def summarize_mode(mode: str, new_tokens: int, runs: Sequence[RunTiming],
                   prompt_tokens: int | None = None) -> ModeSummary | None:
    mine = _mine(runs, mode, new_tokens, prompt_tokens)
    if not mine:
        return None
    seconds = summarize([r.seconds for r in mine])
    ttft = summarize([r.ttft_s for r in mine])
    decode = summarize([r.decode_ms_per_token for r in mine])
    assert seconds is not None and ttft is not None
    peaks = [r.peak_memory_bytes for r in mine if r.peak_memory_bytes is not None]
    extras = [r.peak_over_start_bytes for r in mine if r.peak_over_start_bytes is not None]
    return ModeSummary(
        mode=mode, new_tokens=new_tokens, runs=len(mine), seconds=seconds, ttft_s=ttft, decode_ms_per_token=decode,
        tokens_per_s=new_tokens / seconds.mean if seconds.mean > 0 else math.inf,
        decode_tokens_per_s=1000 / decode.mean if decode and decode.mean > 0 else None,
        peak_memory_bytes=max(peaks) if peaks else None, peak_over_start_bytes=max(extras) if extras else None,
        note=spread_note(seconds, f"the {'cached' if mode == CACHE else 'uncached'} time"))


def speedup(runs: Sequence[RunTiming], new_tokens: int, prompt_tokens: int | None = None) -> SpeedUp | None:
    """No-cache / cache time from the runs of one point: ratio of means, per-pair ratios and their 95% interval."""
    cached = {r.run: r.seconds for r in _mine(runs, CACHE, new_tokens, prompt_tokens)}
    uncached = {r.run: r.seconds for r in _mine(runs, NO_CACHE, new_tokens, prompt_tokens)}
    pairs = summarize([uncached[run] / cached[run] for run in sorted(cached) if run in uncached and cached[run] > 0])
    if pairs is None:
        return None
    interval = mean_interval(pairs)
    return SpeedUp(of_means=mean(list(uncached.values())) / mean(list(cached.values())), pairs=pairs,
                   interval=interval, note=interval_note(interval, pairs.n))


def ttft_gap_note(cache: ModeSummary | None, no_cache: ModeSummary | None, prompt_tokens: int) -> str | None:
    """Words when the cached and uncached runs' times to first token differ by more than TTFT_GAP: both modes run
    the same prefill over the same prompt (the cache only changes the steps after it), so a gap is noise."""
    if cache is None or no_cache is None:
        return None
    low, high = sorted((cache.ttft_s.mean, no_cache.ttft_s.mean))
    if low <= 0 or high / low - 1 <= TTFT_GAP:
        return None
    return (f"noise: time to first token was {cache.ttft_s.mean * 1000:.0f} ms with the cache and "
            f"{no_cache.ttft_s.mean * 1000:.0f} ms without, though both modes run the same {prompt_tokens}-token "
            f"prefill: a {high / low - 1:.0%} gap is the machine (other processes), not the cache")


def length_result(length: int, runs: list[RunTiming], raws: dict[tuple[str, int, int, int], Any],
                   prompt_tokens: int, per_token: int, bytes_per_value: int, tokenizer: Any, stop_reason: str,
                   seconds: float, formula: Callable[[int], tuple[int, str | None]] | None = None,
                   same_prefill: bool = True) -> LengthResult:
    check = None
    pairs = sorted(run for (mode, p, n, run) in raws
                   if mode == CACHE and p == prompt_tokens and n == length and (NO_CACHE, p, n, run) in raws)
    for run in pairs:
        cached = raws[(CACHE, prompt_tokens, length, run)].ids
        uncached = raws[(NO_CACHE, prompt_tokens, length, run)].ids
        position = first_difference(cached, uncached)
        if position is not None or check is None:
            check = OutputCheck(
                identical=position is None, pairs_compared=len(pairs), tokens_compared=min(len(cached), len(uncached)),
                first_difference=position, run=run if position is not None else None,
                cache_token_id=cached[position] if position is not None and position < len(cached) else None,
                no_cache_token_id=uncached[position] if position is not None and position < len(uncached) else None)
        if position is not None:
            break
    cached_runs = sorted(run for (mode, p, n, run) in raws if mode == CACHE and p == prompt_tokens and n == length)
    kv = text = None
    if cached_runs:
        raw = raws[(CACHE, prompt_tokens, length, cached_runs[0])]
        held = raw.cache_tokens if raw.cache_tokens is not None else prompt_tokens + length - 1
        formula_bytes, note = formula(held) if formula else (per_token * held, None)
        kv = KVCacheSize(tokens=held, measured_bytes=raw.cache_bytes, formula_bytes=formula_bytes,
                         bytes_per_token=per_token, bytes_per_value=bytes_per_value, cache_class=raw.cache_class,
                         note=note)
        text = tokenizer.decode(raw.ids, skip_special_tokens=True)
    cache, no_cache = summarize_mode(CACHE, length, runs, prompt_tokens), summarize_mode(NO_CACHE, length, runs,
                                                                                          prompt_tokens)
    return LengthResult(new_tokens=length, cache=cache, no_cache=no_cache,
                        speedup=speedup(runs, length, prompt_tokens), check=check, kv_cache=kv, text=text,
                        prompt_tokens=prompt_tokens, stop_reason=stop_reason, seconds=seconds,
                        ttft_note=ttft_gap_note(cache, no_cache, prompt_tokens) if same_prefill else None)


def mode_summary(result: LengthResult, mode: str) -> ModeSummary | None:
    return result.cache if mode == CACHE else result.no_cache


def _fit(mode: str, points: list[tuple[float, float]], quantity: str, against: str) -> GrowthFit | None:
    fit = fit_power_law([x for x, _ in points], [y for _, y in points])
    return None if fit is None else GrowthFit(mode=mode, fit=fit, quantity=quantity, against=against,
                                              note=fit_note(fit))


def sweep_growth(results: Sequence[LengthResult]) -> tuple[GrowthFit, ...]:
    """Sweep: mean generate time against new tokens, per mode."""
    fits = [_fit(mode, [(r.new_tokens, s.seconds.mean) for r in results if (s := mode_summary(r, mode))],
                 "seconds", "new_tokens") for mode in MODES]
    return tuple(fit for fit in fits if fit is not None)


def depth_growth(results: Sequence[LengthResult]) -> tuple[GrowthFit, ...]:
    """Depth: time to first token and decode ms/token against prompt tokens, per mode."""
    fits = []
    for quantity in ("ttft_s", "decode_ms_per_token"):
        for mode in MODES:
            points = []
            for r in results:
                summary = mode_summary(r, mode)
                stats = None if summary is None else getattr(summary, quantity)
                if stats is not None:
                    points.append((float(r.prompt_tokens), stats.mean))
            fits.append(_fit(mode, points, quantity, "prompt_tokens"))
    return tuple(fit for fit in fits if fit is not None)
