"""Measure what the KV cache buys: `model.generate` timed with and without it, runs interleaved, repeated until the
speed-up is known to ±5% or a time budget runs out, at several output lengths or context depths.
It returns frozen dataclasses of plain numbers and reports progress through optional callbacks; it never prints."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmscope.bench.results import (
    CACHE,
    MODES,
    NO_CACHE,
    STOP_REASONS,
    BenchResult,
    GrowthFit,
    KVCacheSize,
    LengthResult,
    ModeSummary,
    OutputCheck,
    SpeedUp,
    depth_growth,
    first_difference,
    length_result,
    speedup,
    summarize_mode,
    sweep_growth,
)
from llmscope.bench.timed_run import (
    RunTiming,
    busy_cpu_percent,
    cache_bytes,
    cache_kind_name,
    cached_mode_options,
    run_timing,
)
from llmscope.bench.timed_run import one_run as _one_run
from llmscope.core.errors import UsageError
from llmscope.loading.peakmem import memory_measure, process_peak_rss
from llmscope.system.runinfo import run_info

if TYPE_CHECKING:
    from llmscope.loading.loader import LoadedModel

__all__ = ["CACHE", "MODES", "NO_CACHE", "STOP_REASONS", "BenchResult", "BenchSettings", "GrowthFit", "KVCacheSize",
           "LengthResult", "ModeSummary", "OutputCheck", "RunTiming", "SpeedUp", "bench_cache", "busy_cpu_percent",
           "cache_bytes", "first_difference", "run_timing", "speedup", "summarize_mode"]

DEFAULT_PROMPT = ("Write a very long email apologizing to Sarah for the tragic gardening mishap. "
                  "Explain how it happened.")
DEFAULT_MAX_NEW_TOKENS = 100
DEFAULT_DEPTH_NEW_TOKENS = 16  # --depth: the prefill plus 15 decode steps at each depth
DEFAULT_WARMUP = 1
DEFAULT_SWEEP_REPEAT = 3  # a sweep or depth series times every point, so a fixed few runs each by default
DEFAULT_MAX_TIME = 80.0  # seconds of timing (warm-up included) for the default run: load and start-up fit in 90 s
TARGET_CI = 0.05  # stop once the speed-up's 95% interval is within ±5% of it...
MIN_PAIRS = 3  # ...over at least this many pairs
MAX_PAIRS = 100  # never more pairs than this per point, however fast the runs
WARMUP_TOKENS = 16  # a dynamic-cache warm-up needs no more tokens than this to run every kernel once


def parse_lengths(text: str, option: str = "--sweep", example: str = "16,32,64") -> tuple[int, ...]:
    """'16,32,64' -> (16, 32, 64): at least two distinct positive token counts, sorted."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    try:
        lengths = sorted({int(part) for part in parts})
    except ValueError:
        raise UsageError(f"{option} takes comma-separated token counts, like {example} (got {text!r})") from None
    if any(length < 1 for length in lengths):
        raise UsageError(f"{option} lengths must be at least 1 (got {text!r})")
    if len(lengths) < 2:
        raise UsageError(f"{option} needs at least two different lengths to show growth (got {text!r})",
                         hint="for one length use --max-new-tokens" if option == "--sweep" else None)
    return tuple(lengths)


def parse_sweep(text: str) -> tuple[int, ...]:
    return parse_lengths(text, "--sweep", "16,32,64")


def check_counts(warmup: int, repeat: int | None, lengths: Sequence[int]) -> None:
    if repeat is not None and repeat < 1:
        raise UsageError(f"--repeat must be at least 1 (got {repeat})")
    if warmup < 0:
        raise UsageError(f"--warmup must be 0 or more (got {warmup})")
    if not lengths or min(lengths) < 1:
        raise UsageError(f"--max-new-tokens must be at least 1 (got {min(lengths) if lengths else None})")


def check_threads(threads: int | None) -> None:
    if threads is not None and threads < 1:
        raise UsageError(f"--threads must be at least 1 (got {threads})")


def check_max_time(max_time: float | None) -> None:
    if max_time is not None and not (math.isfinite(max_time) and max_time > 0):
        raise UsageError(f"--max-time must be a positive number of seconds (got {max_time})")


@dataclass(frozen=True)
class BenchSettings:
    """bench-cache's options as given, checked before the model loads; the derived counts are properties.

    repeat None means adaptive: pairs until the speed-up's 95% interval is within ±5% (3+ pairs) or max_time.
    A sweep or depth series without --repeat or --max-time keeps a fixed DEFAULT_SWEEP_REPEAT pairs per point.
    """

    max_new_tokens: int | None = None
    sweep: str | None = None
    depth: str | None = None
    warmup: int = DEFAULT_WARMUP
    repeat: int | None = None
    max_time: float | None = None
    threads: int | None = None
    static_cache: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        if self.sweep is not None and self.max_new_tokens is not None:
            raise UsageError("give either --max-new-tokens or --sweep, not both")
        if self.sweep is not None and self.depth is not None:
            raise UsageError("give either --sweep (output lengths) or --depth (prompt lengths), not both")
        if self.repeat is not None and self.max_time is not None:
            raise UsageError("give either --repeat (a fixed count) or --max-time (a time budget), not both")
        check_max_time(self.max_time)
        check_counts(self.warmup, self.repeat, self.lengths)
        check_threads(self.threads)
        if self.compile and self.warmup < 1:
            raise UsageError("--compile needs at least one warm-up run (compiling must not be timed)",
                             hint="use --warmup 1 or more")
        _ = self.depths

    @property
    def lengths(self) -> tuple[int, ...]:
        if self.sweep is not None:
            return parse_sweep(self.sweep)
        if self.max_new_tokens is not None:
            return (self.max_new_tokens,)
        return (DEFAULT_DEPTH_NEW_TOKENS if self.depth is not None else DEFAULT_MAX_NEW_TOKENS,)

    @property
    def depths(self) -> tuple[int, ...]:
        return parse_lengths(self.depth, "--depth", "128,512,2048") if self.depth is not None else ()

    @property
    def runs(self) -> int | None:
        """The fixed number of pairs per point, or None for adaptive."""
        if self.repeat is not None:
            return self.repeat
        if (self.sweep is not None or self.depth is not None) and self.max_time is None:
            return DEFAULT_SWEEP_REPEAT
        return None

    @property
    def time_budget(self) -> float | None:
        return None if self.runs is not None else (self.max_time or DEFAULT_MAX_TIME)

    def planned_tokens(self) -> int | None:
        points = len(self.depths) or 1
        if self.runs is None:
            return None
        return planned_tokens(self.lengths * points, self.warmup, self.runs,
                              warmup_tokens(self.lengths[0], self.static_cache or self.compile))


ProgressCallback = Callable[[str, int], None]  # (description, tokens to advance by)
RunCallback = Callable[[RunTiming], None]

# ---------------------------------------------------------------------------------------------- measuring


def planned_tokens(lengths: Sequence[int], warmup: int, repeat: int, warm_tokens: int | None = None) -> int:
    """How many tokens the whole benchmark generates with a fixed repeat count (the progress bar's total)."""
    return 2 * (warmup * (lengths[0] if warm_tokens is None else warm_tokens) + repeat * sum(lengths))


def warmup_tokens(first_length: int, static: bool) -> int:
    """A static cache is shaped by the token count (and compiled for it), so its warm-up runs the full length."""
    return first_length if static else min(first_length, WARMUP_TOKENS)


def depth_ids(ids: Sequence[int], depth: int) -> list[int]:
    """The prompt's ids repeated (and cut) to exactly `depth` tokens: a context of that length."""
    if not ids:
        return []
    return [ids[index % len(ids)] for index in range(depth)]


def bench_cache(loaded: LoadedModel, prompt: str = DEFAULT_PROMPT, lengths: Sequence[int] = (DEFAULT_MAX_NEW_TOKENS,),
                warmup: int = DEFAULT_WARMUP, repeat: int | None = None, chat: bool = False,
                system: str | None = None, sweep: bool = False, threads: int | None = None,
                busy_percent: float | None = None, on_progress: ProgressCallback | None = None,
                on_run: RunCallback | None = None, static_cache: bool = False, compile: bool = False,
                depths: Sequence[int] = (), max_time: float | None = None, target_ci: float = TARGET_CI,
                clock: Callable[[], float] | None = None) -> BenchResult:
    """Time greedy generation with and without the KV cache at each point: each output length, or with depths
    given, each prompt length (the prompt's tokens repeated to it) generating lengths[0] new tokens.

    The two modes alternate run by run (cache first on odd pairs, no-cache first on even ones), so drift on a
    shared machine hits both alike; `warmup` untimed pairs at the first point come first (WARMUP_TOKENS tokens, the
    full length with a static cache). With repeat=None the pairs at each point continue until the 95% confidence
    interval of the per-pair speed-up is within ±target_ci of it (at least MIN_PAIRS pairs), or until the next pair
    would overrun the point's share of max_time (default DEFAULT_MAX_TIME seconds, warm-up included); a run that
    reaches the end of max_time stops inside (it is left out; budget_note says what it had done); a given
    repeat forces that many pairs. clock (seconds; default perf_counter) measures the budget.
    threads sets torch.set_num_threads for the process; busy_percent (from
    busy_cpu_percent) is only recorded. static_cache runs the cached mode with a preallocated static KV cache;
    compile adds torch.compile of its decode step (compiled during the warm-up, which it therefore needs). Ctrl-C
    stops and returns the runs that finished (interrupted=True).
    """
    import torch

    lengths = tuple(lengths)
    depths = tuple(depths)
    check_counts(warmup, repeat, lengths)
    check_threads(threads)
    check_max_time(max_time)
    if compile and warmup < 1:
        raise UsageError("--compile needs at least one warm-up run (compiling must not be timed)",
                         hint="use --warmup 1 or more")
    cache_options = cached_mode_options(static_cache or compile, compile, str(loaded.input_device))
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _bench(loaded, prompt, lengths, depths, warmup, repeat, None if repeat is not None else (
            max_time or DEFAULT_MAX_TIME), target_ci, chat, system, sweep, busy_percent, on_progress, on_run,
            cache_options, clock)
    finally:
        torch.set_num_threads(previous_threads)


def _bench(loaded: LoadedModel, prompt: str, lengths: tuple[int, ...], depths: tuple[int, ...], warmup: int,
           repeat: int | None, budget: float | None, target_ci: float, chat: bool, system: str | None, sweep: bool,
           busy_percent: float | None, on_progress: ProgressCallback | None, on_run: RunCallback | None,
           cache_options: dict[str, Any], clock: Callable[[], float] | None = None) -> BenchResult:
    import torch

    from llmscope.architecture.kvcache import held_cache_bytes, kv_cache_bytes_per_token
    from llmscope.generation.prompts import check_ids_fit, check_lengths
    from llmscope.loading.tokenization import prompt_ids

    prompt_text, ids = prompt_ids(loaded.tokenizer, prompt, chat=chat, system=system)
    check_ids_fit(loaded.model, ids)
    prompts = [depth_ids(ids, depth) for depth in depths] if depths else [ids]
    try:
        check_lengths(loaded.model.config, max(len(p) for p in prompts) if ids else 0, max(lengths))
    except UsageError as error:
        if not depths or not ids:
            raise
        raise UsageError(f"--depth {max(depths)} does not fit: {error.message}",
                         hint="use smaller --depth values or fewer --max-new-tokens") from None
    points = [(p, lengths[0]) for p in prompts] if depths else [(ids, n) for n in lengths]
    warm = warmup_tokens(points[0][1], bool(cache_options))
    progress = on_progress or (lambda description, advance: None)
    machine = run_info(str(loaded.input_device), torch.get_num_threads())

    def tensors(prompt_list: list[int]) -> tuple[Any, Any]:
        input_ids = torch.tensor([prompt_list], device=loaded.input_device)
        return input_ids, torch.ones_like(input_ids)

    runs: list[RunTiming] = []
    raws: dict[tuple[str, int, int, int], Any] = {}
    stops: dict[tuple[int, int], str] = {}
    spent: dict[tuple[int, int], float] = {}
    clock = clock or time.perf_counter
    started = clock()
    deadline = None if budget is None else started + budget
    within_budget = {} if deadline is None else {"stop": lambda: clock() > deadline}
    interrupted = False
    budget_note = None
    try:
        first = tensors(points[0][0])
        for index in range(warmup):
            for mode in _order(index + 1):
                progress(f"warm-up {index + 1}/{warmup}, {mode}", 0)
                raw = _one_run(loaded, *first, warm, mode == CACHE, lambda: progress("", 1), cache_options,
                               **within_budget)[3]
                if len(raw.ids) < warm:
                    raise _OutOfTime(f"the {mode} warm-up run was stopped after {len(raw.ids)} of {warm} tokens: "
                                     f"the --max-time budget of {budget:g} s ran out before any timed run")
        for number, (prompt_list, new_tokens) in enumerate(points):
            key = (len(prompt_list), new_tokens)
            point_started = clock()
            share = None if budget is None else (budget - (point_started - started)) / (len(points) - number)
            input_ids, attention_mask = tensors(prompt_list)
            where = f"{key[0]}-token prompt, {new_tokens} tokens" if depths else f"{new_tokens} tokens"
            run = 0
            while True:
                run += 1
                for mode in _order(run):
                    progress(f"{where}, {mode} run {run}{'' if repeat is None else f'/{repeat}'}", 0)
                    seconds, times, memory, raw = _one_run(loaded, input_ids, attention_mask, new_tokens,
                                                           mode == CACHE, lambda: progress("", 1), cache_options,
                                                           **within_budget)
                    if len(raw.ids) < new_tokens:
                        stops[key] = "time budget"
                        spent[key] = clock() - point_started
                        raise _OutOfTime(
                            f"the {mode} run {run} at {where} was stopped after {len(raw.ids)} of {new_tokens} tokens "
                            f"({seconds:.1f} s): the --max-time budget of {budget:g} s ran out, so it is left out"
                            + ("" if runs else " and no run finished"))
                    timing = run_timing(mode, new_tokens, run, seconds, times, *memory, prompt_tokens=key[0])
                    runs.append(timing)
                    raws[(mode, key[0], new_tokens, run)] = raw
                    if on_run is not None:
                        on_run(timing)
                spent[key] = clock() - point_started
                stop = _stop_reason(run, repeat, runs, key, target_ci, spent[key], share)
                if stop is not None:
                    stops[key] = stop
                    break
    except _OutOfTime as stopped:
        budget_note = str(stopped)
    except KeyboardInterrupt:
        interrupted = True

    bytes_per_value = torch.empty((), dtype=loaded.model.dtype).element_size()
    per_token = kv_cache_bytes_per_token(loaded.model.config, bytes_per_value)
    results = tuple(
        length_result(new_tokens, runs, raws, len(prompt_list), per_token, bytes_per_value, loaded.tokenizer,
                       stops.get((len(prompt_list), new_tokens), "interrupted"),
                       spent.get((len(prompt_list), new_tokens), 0.0),
                       formula=lambda held: held_cache_bytes(loaded.model.config, held, loaded.dtype),
                       same_prefill=not cache_options)
        for prompt_list, new_tokens in points
        if any(r.new_tokens == new_tokens and r.prompt_tokens == len(prompt_list) for r in runs))
    growth = depth_growth(results) if depths else (sweep_growth(results) if sweep else ())
    return BenchResult(
        model=loaded.spec.name, prompt=prompt, prompt_text=prompt_text, prompt_tokens=len(ids),
        chat_template_applied=chat, device=loaded.device, dtype=loaded.dtype, warmup=warmup, repeat=repeat,
        lengths=lengths, sweep=sweep, threads=torch.get_num_threads(), cpu_count=os.cpu_count(),
        busy_cpu_percent=busy_percent, memory_measure=memory_measure(str(loaded.input_device)),
        process_peak_rss_bytes=process_peak_rss(), results=results, growth=growth, runs=tuple(runs),
        interrupted=interrupted, cache_kind=cache_kind_name(cache_options),
        complete_pairs=sum(1 for (mode, p, n, run) in raws if mode == CACHE and (NO_CACHE, p, n, run) in raws),
        depths=depths, max_time_s=budget, target_ci=None if budget is None else target_ci,
        min_pairs=None if budget is None else MIN_PAIRS, warmup_tokens=warm if warmup else 0,
        seconds=clock() - started, machine=machine, budget_note=budget_note)


def _stop_reason(run: int, repeat: int | None, runs: Sequence[RunTiming], key: tuple[int, int], target_ci: float,
                 spent: float, share: float | None) -> str | None:
    """Why to stop after `run` pairs at this point, or None to time another pair."""
    if repeat is not None:
        return "repeat" if run >= repeat else None
    found = speedup(runs, key[1], key[0])
    interval = found.interval if found is not None else None
    if run >= MIN_PAIRS and interval is not None and interval.relative_half_width <= target_ci:
        return "converged"
    if share is not None and spent + spent / run > share:  # the next pair, as long as the mean pair, would overrun
        return "time budget"
    return "pair limit" if run >= MAX_PAIRS else None


class _OutOfTime(Exception):
    """A run stopped inside because the time budget ran out; the message says what it had done."""


def _order(run: int) -> tuple[str, str]:
    return (CACHE, NO_CACHE) if run % 2 else (NO_CACHE, CACHE)


