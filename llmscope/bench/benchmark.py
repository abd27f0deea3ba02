"""Measure what the KV cache buys: `model.generate` timed with and without it, runs interleaved, repeated until the
speed-up is known to ±5% or a time budget runs out, at several output lengths or context depths.
It returns frozen dataclasses of plain numbers and reports progress through optional callbacks; it never prints."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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
    plan = BenchPlan(prompt=prompt, lengths=lengths, depths=depths, warmup=warmup, repeat=repeat,
                     budget=None if repeat is not None else (max_time or DEFAULT_MAX_TIME), target_ci=target_ci,
                     chat=chat, system=system, sweep=sweep, busy_percent=busy_percent,
                     cache_options=cached_mode_options(static_cache or compile, compile, str(loaded.input_device)))
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _bench(loaded, plan, on_progress, on_run, clock)
    finally:
        torch.set_num_threads(previous_threads)


@dataclass(frozen=True)
class BenchPlan:
    """What one bench_cache call times (its arguments already checked): the prompt, points, pairs and budget."""

    prompt: str
    lengths: tuple[int, ...]  # new tokens per run: one per point, or lengths[0] at every depth
    depths: tuple[int, ...] = ()  # prompt lengths (the prompt's tokens repeated); () times the prompt as it is
    warmup: int = DEFAULT_WARMUP
    repeat: int | None = None  # pairs per point; None: adaptive
    budget: float | None = None  # seconds for the whole timing, warm-up included (None with a fixed repeat)
    target_ci: float = TARGET_CI
    chat: bool = False
    system: str | None = None
    sweep: bool = False
    busy_percent: float | None = None  # recorded only
    cache_options: dict[str, Any] = field(default_factory=dict)  # generate's options for the cached mode


@dataclass(frozen=True)
class Point:
    """One measuring point: the prompt's ids and the new tokens each run generates."""

    ids: tuple[int, ...]
    new_tokens: int

    @property
    def prompt_tokens(self) -> int:
        return len(self.ids)


@dataclass
class PointLog:
    """What was measured at one point: each mode's raw outputs (run 1 first; a run stopped inside is left out), why
    its pairs stopped and the seconds they took."""

    point: Point
    outputs: dict[str, list[Any]] = field(default_factory=lambda: {mode: [] for mode in MODES})
    stop_reason: str = "interrupted"
    seconds: float = 0.0

    @property
    def complete_pairs(self) -> int:
        return min(len(self.outputs[CACHE]), len(self.outputs[NO_CACHE]))

    def outputs_by_run(self) -> dict[tuple[str, int, int, int], Any]:
        """The outputs keyed (mode, prompt tokens, new tokens, run), as results.length_result reads them."""
        return {(mode, self.point.prompt_tokens, self.point.new_tokens, run): raw
                for mode, raws in self.outputs.items() for run, raw in enumerate(raws, start=1)}


def _bench(loaded: LoadedModel, plan: BenchPlan, on_progress: ProgressCallback | None = None,
           on_run: RunCallback | None = None, clock: Callable[[], float] | None = None) -> BenchResult:
    import torch

    prompt_text, ids = _prompt(loaded, plan)
    points = _points(loaded, plan, ids)
    machine = run_info(str(loaded.input_device), torch.get_num_threads())
    timer = _Timer(loaded, plan, on_progress or (lambda description, advance: None), on_run,
                   clock or time.perf_counter)
    logs = [PointLog(point) for point in points]
    warm = warmup_tokens(points[0].new_tokens, bool(plan.cache_options))
    interrupted, budget_note = False, None
    try:
        timer.warm_up(points[0], warm)
        for number, log in enumerate(logs):
            timer.time_point(log, points_left=len(points) - number)
    except _OutOfTime as stopped:
        budget_note = str(stopped)
    except KeyboardInterrupt:
        interrupted = True
    results = _point_results(loaded, plan, logs, timer.runs)
    return BenchResult(
        model=loaded.spec.name, prompt=plan.prompt, prompt_text=prompt_text, prompt_tokens=len(ids),
        chat_template_applied=plan.chat, device=loaded.device, dtype=loaded.dtype, warmup=plan.warmup,
        repeat=plan.repeat, lengths=plan.lengths, sweep=plan.sweep, threads=torch.get_num_threads(),
        cpu_count=os.cpu_count(), busy_cpu_percent=plan.busy_percent,
        memory_measure=memory_measure(str(loaded.input_device)), process_peak_rss_bytes=process_peak_rss(),
        results=results, growth=_growth(plan, results),
        runs=tuple(timer.runs), interrupted=interrupted, cache_kind=cache_kind_name(plan.cache_options),
        complete_pairs=sum(log.complete_pairs for log in logs), depths=plan.depths, max_time_s=plan.budget,
        target_ci=None if plan.budget is None else plan.target_ci, min_pairs=None if plan.budget is None else MIN_PAIRS,
        warmup_tokens=warm if plan.warmup else 0, seconds=timer.elapsed(), machine=machine, budget_note=budget_note)


def _prompt(loaded: LoadedModel, plan: BenchPlan) -> tuple[str, list[int]]:
    """The prompt as the model reads it (the chat template applied when asked) and its ids, checked to fit."""
    from llmscope.generation.prompts import check_ids_fit
    from llmscope.loading.tokenization import prompt_ids

    prompt_text, ids = prompt_ids(loaded.tokenizer, plan.prompt, chat=plan.chat, system=plan.system)
    check_ids_fit(loaded.model, ids)
    return prompt_text, ids


def _points(loaded: LoadedModel, plan: BenchPlan, ids: list[int]) -> list[Point]:
    """The measuring points: each output length after the prompt, or each depth generating lengths[0] tokens;
    refused when the longest would not fit the model's context."""
    from llmscope.generation.prompts import check_lengths

    prompts = [tuple(depth_ids(ids, depth)) for depth in plan.depths] if plan.depths else [tuple(ids)]
    try:
        check_lengths(loaded.model.config, max(len(p) for p in prompts) if ids else 0, max(plan.lengths),
                      "--sweep" if plan.sweep else "--max-new-tokens")
    except UsageError as error:
        if not plan.depths or not ids:
            raise
        raise UsageError(f"--depth {max(plan.depths)} does not fit: {error.message}",
                         hint="use smaller --depth values or fewer --max-new-tokens") from None
    if plan.depths:
        return [Point(p, plan.lengths[0]) for p in prompts]
    return [Point(tuple(ids), n) for n in plan.lengths]


class _Timer:
    """Runs the timed generate calls of one benchmark, keeps their timings in order and watches the time budget."""

    def __init__(self, loaded: LoadedModel, plan: BenchPlan, progress: ProgressCallback, on_run: RunCallback | None,
                 clock: Callable[[], float]) -> None:
        self.loaded, self.plan, self.progress, self.on_run, self.clock = loaded, plan, progress, on_run, clock
        self.runs: list[RunTiming] = []
        self.started = clock()
        deadline = None if plan.budget is None else self.started + plan.budget
        self.within_budget = {} if deadline is None else {"stop": lambda: clock() > deadline}

    def elapsed(self) -> float:
        return self.clock() - self.started

    def _inputs(self, point: Point) -> tuple[Any, Any]:
        """The point's input ids and attention mask, on the model's input device."""
        import torch

        input_ids = torch.tensor([list(point.ids)], device=self.loaded.input_device)
        return input_ids, torch.ones_like(input_ids)

    def _run(self, inputs: tuple[Any, Any], new_tokens: int, cached: bool) -> tuple[float, list[float], Any, Any]:
        return _one_run(self.loaded, *inputs, new_tokens, cached, lambda: self.progress("", 1),
                        self.plan.cache_options, **self.within_budget)

    def warm_up(self, point: Point, tokens: int) -> None:
        """The untimed pairs before the first point; _OutOfTime when the budget ends one of them."""
        inputs = self._inputs(point)
        for index in range(self.plan.warmup):
            for mode in _order(index + 1):
                self.progress(f"warm-up {index + 1}/{self.plan.warmup}, {mode}", 0)
                raw = self._run(inputs, tokens, mode == CACHE)[3]
                if len(raw.ids) < tokens:
                    raise _OutOfTime(f"the {mode} warm-up run was stopped after {len(raw.ids)} of {tokens} tokens: "
                                     f"the --max-time budget of {self.plan.budget:g} s ran out before any timed run")

    def time_point(self, log: PointLog, points_left: int) -> None:
        """Timed pairs at one point until _stop_reason says stop (the point's share of the budget: what is left over
        the points left); _OutOfTime when the budget ends a run inside."""
        plan, point = self.plan, log.point
        point_started = self.clock()
        share = None if plan.budget is None else (plan.budget - (point_started - self.started)) / points_left
        inputs = self._inputs(point)
        where = (f"{point.prompt_tokens}-token prompt, {point.new_tokens} tokens" if plan.depths
                 else f"{point.new_tokens} tokens")
        run = 0
        while True:
            run += 1
            for mode in _order(run):
                self.progress(f"{where}, {mode} run {run}{'' if plan.repeat is None else f'/{plan.repeat}'}", 0)
                seconds, times, memory, raw = self._run(inputs, point.new_tokens, mode == CACHE)
                if len(raw.ids) < point.new_tokens:
                    log.stop_reason, log.seconds = "time budget", self.clock() - point_started
                    raise _OutOfTime(
                        f"the {mode} run {run} at {where} was stopped after {len(raw.ids)} of {point.new_tokens} "
                        f"tokens ({seconds:.1f} s): the --max-time budget of {plan.budget:g} s ran out, so it is "
                        "left out" + ("" if self.runs else " and no run finished"))
                timing = run_timing(mode, point.new_tokens, run, seconds, times, *memory,
                                    prompt_tokens=point.prompt_tokens)
                self.runs.append(timing)
                log.outputs[mode].append(raw)
                if self.on_run is not None:
                    self.on_run(timing)
            log.seconds = self.clock() - point_started
            stop = _stop_reason(run, plan.repeat, self.runs, point, plan.target_ci, log.seconds, share)
            if stop is not None:
                log.stop_reason = stop
                return


def _point_results(loaded: LoadedModel, plan: BenchPlan, logs: Sequence[PointLog], runs: list[RunTiming]
                   ) -> tuple[LengthResult, ...]:
    """Each point that finished a run: its per-mode figures, speed-up, output check and KV cache size."""
    import torch

    from llmscope.architecture.kvcache import held_cache_bytes, kv_cache_bytes_per_token

    bytes_per_value = torch.empty((), dtype=loaded.model.dtype).element_size()
    per_token = kv_cache_bytes_per_token(loaded.model.config, bytes_per_value)
    return tuple(
        length_result(log.point.new_tokens, runs, log.outputs_by_run(), log.point.prompt_tokens, per_token,
                      bytes_per_value, loaded.tokenizer, log.stop_reason, log.seconds,
                      formula=lambda held: held_cache_bytes(loaded.model.config, held, loaded.dtype),
                      same_prefill=not plan.cache_options)
        for log in logs if any(log.outputs.values()))


def _growth(plan: BenchPlan, results: Sequence[LengthResult]) -> tuple[GrowthFit, ...]:
    if plan.depths:
        return depth_growth(results)
    return sweep_growth(results) if plan.sweep else ()


def _stop_reason(run: int, repeat: int | None, runs: Sequence[RunTiming], point: Point, target_ci: float,
                 spent: float, share: float | None) -> str | None:
    """Why to stop after `run` pairs at this point, or None to time another pair."""
    if repeat is not None:
        return "repeat" if run >= repeat else None
    found = speedup(runs, point.new_tokens, point.prompt_tokens)
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
