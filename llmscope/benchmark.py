"""Measure what the KV cache buys: `model.generate` timed with and without it, runs interleaved, plus statistics.
It returns frozen dataclasses of plain numbers and reports progress through optional callbacks; it never prints."""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmscope.errors import UsageError

if TYPE_CHECKING:
    from llmscope.loader import LoadedModel

DEFAULT_PROMPT = ("Write a very long email apologizing to Sarah for the tragic gardening mishap. "
                  "Explain how it happened.")
DEFAULT_MAX_NEW_TOKENS = 100
DEFAULT_WARMUP = 1
DEFAULT_REPEAT = 7  # like %%timeit's 7 runs
DEFAULT_SWEEP_REPEAT = 3  # a sweep times every length, so fewer runs each by default
CACHE, NO_CACHE = "cache", "no-cache"
MODES = (CACHE, NO_CACHE)

# ---------------------------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Stats:
    """Summary of a sample. std is the sample standard deviation (n - 1), None for fewer than two values."""

    n: int
    mean: float
    std: float | None
    min: float
    median: float
    max: float


@dataclass(frozen=True)
class PowerFit:
    """time ≈ coefficient × length^exponent, fitted by least squares on log time against log length."""

    exponent: float
    coefficient: float
    r_squared: float
    points: int


def mean(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("mean of no values")
    return math.fsum(values) / len(values)


def sample_std(values: Sequence[float]) -> float | None:
    """Sample standard deviation (divides by n - 1); None when there are fewer than two values."""
    if len(values) < 2:
        return None
    centre = mean(values)
    return math.sqrt(math.fsum((value - centre) ** 2 for value in values) / (len(values) - 1))


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("median of no values")
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def summarize(values: Sequence[float | None]) -> Stats | None:
    """Stats of the values that are not None; None when there are none."""
    present = [float(value) for value in values if value is not None]
    if not present:
        return None
    return Stats(n=len(present), mean=mean(present), std=sample_std(present), min=min(present),
                 median=median(present), max=max(present))


def fit_power_law(lengths: Sequence[float], times: Sequence[float]) -> PowerFit | None:
    """Least-squares line through (log length, log time): its slope is the growth exponent.

    None when fewer than two distinct positive lengths (with positive times) are given.
    """
    points = [(math.log(x), math.log(y)) for x, y in zip(lengths, times) if x > 0 and y > 0]
    if len({x for x, _ in points}) < 2:
        return None
    xs, ys = [x for x, _ in points], [y for _, y in points]
    x_mean, y_mean = mean(xs), mean(ys)
    spread = math.fsum((x - x_mean) ** 2 for x in xs)
    slope = math.fsum((x - x_mean) * (y - y_mean) for x, y in points) / spread
    intercept = y_mean - slope * x_mean
    residual = math.fsum((y - (intercept + slope * x)) ** 2 for x, y in points)
    total = math.fsum((y - y_mean) ** 2 for y in ys)
    return PowerFit(exponent=slope, coefficient=math.exp(intercept),
                    r_squared=1.0 if total == 0 else 1.0 - residual / total, points=len(points))


def first_difference(a: Sequence[int], b: Sequence[int]) -> int | None:
    """The first position where two id sequences differ (the shorter length if one is a prefix), else None."""
    for index, (left, right) in enumerate(zip(a, b)):
        if left != right:
            return index
    return None if len(a) == len(b) else min(len(a), len(b))


def parse_sweep(text: str) -> tuple[int, ...]:
    """'16,32,64' -> (16, 32, 64): at least two distinct positive lengths, sorted."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    try:
        lengths = sorted({int(part) for part in parts})
    except ValueError:
        raise UsageError(f"--sweep takes comma-separated token counts, like 16,32,64 (got {text!r})") from None
    if any(length < 1 for length in lengths):
        raise UsageError(f"--sweep lengths must be at least 1 (got {text!r})")
    if len(lengths) < 2:
        raise UsageError(f"--sweep needs at least two different lengths to show growth (got {text!r})",
                         hint="for one length use --max-new-tokens")
    return tuple(lengths)


def check_counts(warmup: int, repeat: int, lengths: Sequence[int]) -> None:
    if repeat < 1:
        raise UsageError(f"--repeat must be at least 1 (got {repeat})")
    if warmup < 0:
        raise UsageError(f"--warmup must be 0 or more (got {warmup})")
    if not lengths or min(lengths) < 1:
        raise UsageError(f"--max-new-tokens must be at least 1 (got {min(lengths) if lengths else None})")


# ---------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class RunTiming:
    """One timed `generate` call. Times in seconds except decode_ms_per_token."""

    mode: str  # "cache" or "no-cache"
    new_tokens: int
    run: int  # 1-based, per mode and length
    seconds: float  # the whole generate call
    ttft_s: float  # time to first token: the prefill forward pass (plus generate's set-up)
    decode_ms_per_token: float | None  # (last token - first token) / (new_tokens - 1)
    tokens_per_s: float  # new_tokens / seconds
    peak_memory_bytes: int | None
    peak_over_start_bytes: int | None = None  # the peak minus what was in use when the run started


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


@dataclass(frozen=True)
class SpeedUp:
    """No-cache time / cache time: the ratio of the means, and the ratios of the interleaved run pairs."""

    of_means: float
    pairs: Stats


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
    new_tokens: int
    cache: ModeSummary | None
    no_cache: ModeSummary | None
    speedup: SpeedUp | None
    check: OutputCheck | None
    kv_cache: KVCacheSize | None
    text: str | None  # what the cached run generated (the first run)


@dataclass(frozen=True)
class GrowthFit:
    mode: str
    fit: PowerFit


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
    repeat: int
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


ProgressCallback = Callable[[str, int], None]  # (description, tokens to advance by)
RunCallback = Callable[[RunTiming], None]

# ---------------------------------------------------------------------------------------------- measuring


def planned_tokens(lengths: Sequence[int], warmup: int, repeat: int) -> int:
    """How many tokens the whole benchmark generates (the progress bar's total)."""
    return 2 * (warmup * lengths[0] + repeat * sum(lengths))


def busy_cpu_percent(interval: float = 0.25) -> float | None:
    """System-wide CPU use over a short pause while this process waits: what other processes are doing."""
    try:
        import psutil

        return float(psutil.cpu_percent(interval=interval))
    except Exception:  # psutil missing or no permission: not worth failing a benchmark over
        return None


def check_threads(threads: int | None) -> None:
    if threads is not None and threads < 1:
        raise UsageError(f"--threads must be at least 1 (got {threads})")


def memory_measure(device: str) -> str:
    """What peak_memory_bytes means on this device (each run's own peak where it can be reset)."""
    if device.startswith("cuda"):
        return "torch.cuda.max_memory_allocated, reset before each run"
    if _can_reset_peak_rss():
        return "peak RSS of the process (Linux VmHWM, reset before each run through /proc/self/clear_refs)"
    return "peak RSS of the process so far (getrusage ru_maxrss; it cannot be reset, so it includes earlier runs)"


def process_peak_rss() -> int | None:
    """The process's peak resident set size over its whole life, from getrusage (None where unavailable)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux


def _vm_hwm() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def _reset_peak_rss() -> bool:
    """Linux: set the RSS high-water mark back to the current RSS (echo 5 > /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
            clear.write("5")
        return True
    except OSError:
        return False


def _can_reset_peak_rss() -> bool:
    return _vm_hwm() is not None and _reset_peak_rss()


def _start_peak_memory(on_cuda: bool) -> int | None:
    """Reset the peak and return the memory in use now (CUDA: allocated by torch; CPU: the process's RSS)."""
    import torch

    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
        return int(torch.cuda.memory_allocated())
    _reset_peak_rss()
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # psutil missing: no baseline, only the peak
        return None


def _peak_memory(on_cuda: bool) -> int | None:
    import torch

    if on_cuda:
        return int(torch.cuda.max_memory_allocated())
    return _vm_hwm() or process_peak_rss()


def _token_clock(sync: Callable[[], None], on_token: Callable[[], None]) -> Any:
    """A transformers streamer that records time.perf_counter() at each new token (the first put is the prompt)."""
    from transformers.generation.streamers import BaseStreamer

    class TokenClock(BaseStreamer):
        def __init__(self) -> None:
            self.times: list[float] = []
            self._prompt_seen = False

        def put(self, value: Any) -> None:
            if not self._prompt_seen:
                self._prompt_seen = True
                return
            sync()
            self.times.append(time.perf_counter())
            on_token()

        def end(self) -> None:
            pass

    return TokenClock()


def cache_bytes(cache: Any) -> int | None:
    """Bytes of every key, value and state tensor a cache object holds (DynamicCache.layers, or legacy tuples)."""
    import torch

    if cache is None:
        return None
    total = 0
    found = False
    layers = getattr(cache, "layers", None)
    if layers is None and isinstance(cache, (tuple, list)):
        layers = cache
    for layer in layers or ():
        tensors = (getattr(layer, "keys", None), getattr(layer, "values", None)) if not isinstance(
            layer, (tuple, list)) else tuple(layer)
        for states in (getattr(layer, "conv_states", None), getattr(layer, "recurrent_states", None)):
            tensors += tuple(states.values()) if isinstance(states, dict) else ()  # linear-attention layers
        for tensor in tensors:
            if isinstance(tensor, torch.Tensor):
                total += tensor.numel() * tensor.element_size()
                found = True
    return total if found else None


def _cache_tokens(cache: Any) -> int | None:
    getter = getattr(cache, "get_seq_length", None)
    return int(getter()) if callable(getter) else None


@dataclass
class _Raw:
    """What one run left behind besides its timing: its ids and (cached runs) the cache's size."""

    ids: list[int]
    cache_bytes: int | None = None
    cache_tokens: int | None = None
    cache_class: str | None = None


def cached_mode_options(static_cache: bool, compile: bool, device: str) -> dict[str, Any]:
    """Extra model.generate arguments for the cached mode: a static cache, and torch.compile of its decode step.

    transformers compiles a static-cache decode step by itself on CUDA; on other devices it has to be asked to.
    """
    if not static_cache:
        return {}
    options: dict[str, Any] = {"cache_implementation": "static"}
    if compile:
        from transformers import CompileConfig

        config = CompileConfig(fullgraph=False, dynamic=False)
        config._compile_all_devices = not device.startswith("cuda")  # transformers' switch for CPU/MPS compiling
        options["compile_config"] = config
    else:
        options["disable_compile"] = True
    return options


def cache_kind_name(options: dict[str, Any]) -> str:
    if not options:
        return "dynamic"
    return "static + torch.compile" if "compile_config" in options else "static"


def _one_run(loaded: LoadedModel, input_ids: Any, attention_mask: Any, new_tokens: int, use_cache: bool,
             on_token: Callable[[], None], cache_options: dict[str, Any] | None = None
             ) -> tuple[float, list[float], tuple[int | None, int | None], _Raw]:
    """One generate call: (seconds, per-token times from its start, (peak memory, memory at start), raw outputs)."""
    import torch

    device = str(loaded.input_device)
    on_cuda = device.startswith("cuda")

    def sync() -> None:
        if on_cuda:
            torch.cuda.synchronize()

    clock = _token_clock(sync, on_token)
    start_memory = _start_peak_memory(on_cuda)
    sync()
    started = time.perf_counter()
    with torch.inference_mode():
        output = loaded.model.generate(
            input_ids, attention_mask=attention_mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
            do_sample=False, use_cache=use_cache, pad_token_id=_pad_id(loaded), streamer=clock,
            return_dict_in_generate=True, **((cache_options or {}) if use_cache else {}))
    sync()
    finished = time.perf_counter()
    peak = _peak_memory(on_cuda)
    ids = output.sequences[0, input_ids.shape[1]:].tolist()
    raw = _Raw(ids=ids)
    if use_cache:
        cache = getattr(output, "cache", None) or getattr(output, "past_key_values", None)
        raw.cache_bytes = cache_bytes(cache)
        raw.cache_tokens = _cache_tokens(cache)
        raw.cache_class = type(cache).__name__ if cache is not None else None
    del output
    return finished - started, [t - started for t in clock.times], (peak, start_memory), raw


def _pad_id(loaded: LoadedModel) -> int | None:
    tokenizer, config = loaded.tokenizer, loaded.model.generation_config
    for value in (tokenizer.pad_token_id, getattr(config, "pad_token_id", None), tokenizer.eos_token_id,
                  getattr(config, "eos_token_id", None)):
        if isinstance(value, int):
            return value
        if isinstance(value, (list, tuple)) and value:
            return int(value[0])
    return None


def run_timing(mode: str, new_tokens: int, run: int, seconds: float, token_times: Sequence[float],
               peak: int | None, start_memory: int | None = None) -> RunTiming:
    """Turn one run's clock readings into its timing record."""
    ttft = token_times[0] if token_times else seconds
    decode = ((token_times[-1] - token_times[0]) / (len(token_times) - 1) * 1000
              if len(token_times) > 1 else None)
    return RunTiming(mode=mode, new_tokens=new_tokens, run=run, seconds=seconds, ttft_s=ttft,
                     decode_ms_per_token=decode, tokens_per_s=new_tokens / seconds if seconds > 0 else math.inf,
                     peak_memory_bytes=peak,
                     peak_over_start_bytes=max(peak - start_memory, 0) if peak is not None and start_memory is not None
                     else None)


def bench_cache(loaded: LoadedModel, prompt: str = DEFAULT_PROMPT, lengths: Sequence[int] = (DEFAULT_MAX_NEW_TOKENS,),
                warmup: int = DEFAULT_WARMUP, repeat: int = DEFAULT_REPEAT, chat: bool = False,
                system: str | None = None, sweep: bool = False, threads: int | None = None,
                busy_percent: float | None = None, on_progress: ProgressCallback | None = None,
                on_run: RunCallback | None = None, static_cache: bool = False, compile: bool = False
                ) -> BenchResult:
    """Time greedy generation with and without the KV cache, `repeat` runs per mode at each length.

    The two modes alternate run by run (cache first on odd runs, no-cache first on even ones), so drift on a
    shared machine hits both alike; `warmup` untimed runs of each mode at the first length come first. Both
    modes generate exactly `length` new tokens. threads sets torch.set_num_threads for the process;
    busy_percent (from busy_cpu_percent) is only recorded. static_cache runs the cached mode with a preallocated
    static KV cache (transformers' cache_implementation="static"); compile adds torch.compile of its decode step
    (compiled during the warm-up, which it therefore needs). Ctrl-C stops and returns the runs that finished
    (interrupted=True).
    """
    import torch

    lengths = tuple(lengths)
    check_counts(warmup, repeat, lengths)
    check_threads(threads)
    if compile and warmup < 1:
        raise UsageError("--compile needs at least one warm-up run (compiling must not be timed)",
                         hint="use --warmup 1 or more")
    cache_options = cached_mode_options(static_cache or compile, compile, str(loaded.input_device))
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _bench(loaded, prompt, lengths, warmup, repeat, chat, system, sweep, busy_percent, on_progress, on_run,
                      cache_options)
    finally:
        torch.set_num_threads(previous_threads)


def _bench(loaded: LoadedModel, prompt: str, lengths: tuple[int, ...], warmup: int, repeat: int, chat: bool,
           system: str | None, sweep: bool, busy_percent: float | None, on_progress: ProgressCallback | None,
           on_run: RunCallback | None, cache_options: dict[str, Any]) -> BenchResult:
    import torch

    from llmscope.kvcache import cache_size, kv_cache_bytes_per_token
    from llmscope.prompts import check_lengths
    from llmscope.tokenization import prompt_ids

    prompt_text, ids = prompt_ids(loaded.tokenizer, prompt, chat=chat, system=system)
    check_lengths(loaded.model.config, len(ids), max(lengths))
    input_ids = torch.tensor([ids], device=loaded.input_device)
    attention_mask = torch.ones_like(input_ids)
    progress = on_progress or (lambda description, advance: None)

    runs: list[RunTiming] = []
    raws: dict[tuple[str, int, int], _Raw] = {}
    interrupted = False
    try:
        for index in range(warmup):
            for mode in _order(index + 1):
                progress(f"warm-up {index + 1}/{warmup}, {mode}", 0)
                _one_run(loaded, input_ids, attention_mask, lengths[0], mode == CACHE,
                         lambda: progress("", 1), cache_options)
        for length in lengths:
            for run in range(1, repeat + 1):
                for mode in _order(run):
                    progress(f"{length} tokens, {mode} run {run}/{repeat}", 0)
                    seconds, times, memory, raw = _one_run(loaded, input_ids, attention_mask, length, mode == CACHE,
                                                           lambda: progress("", 1), cache_options)
                    timing = run_timing(mode, length, run, seconds, times, *memory)
                    runs.append(timing)
                    raws[(mode, length, run)] = raw
                    if on_run is not None:
                        on_run(timing)
    except KeyboardInterrupt:
        interrupted = True

    bytes_per_value = torch.empty((), dtype=loaded.model.dtype).element_size()
    per_token = kv_cache_bytes_per_token(loaded.model.config, bytes_per_value)
    dtype_name = str(loaded.model.dtype).removeprefix("torch.")
    dtype_name = dtype_name if dtype_name in ("float32", "bfloat16", "float16") else "float32"

    def formula(tokens: int) -> tuple[int, str | None]:
        size = cache_size(loaded.model.config, tokens, 1, dtype_name)
        notes = [f"{g.layers} sliding layer{'s' if g.layers > 1 else ''} keep{'' if g.layers > 1 else 's'} "
                 f"{g.positions} positions (window {g.window} - 1)" for g in size.groups
                 if g.kind == "sliding" and g.positions < tokens]
        notes += [f"{g.layers} linear-attention layers keep a fixed {g.state_bytes:,}-byte state"
                  for g in size.groups if g.kind == "linear"]
        return size.total_bytes, "; ".join(notes) or None

    results = tuple(_length_result(length, runs, raws, len(ids), per_token, bytes_per_value, loaded.tokenizer,
                                   formula) for length in lengths if any(r.new_tokens == length for r in runs))
    growth = _growth(results) if sweep else ()
    return BenchResult(
        model=loaded.spec.name, prompt=prompt, prompt_text=prompt_text, prompt_tokens=len(ids),
        chat_template_applied=chat, device=loaded.device, dtype=loaded.dtype, warmup=warmup, repeat=repeat,
        lengths=lengths, sweep=sweep, threads=torch.get_num_threads(), cpu_count=os.cpu_count(),
        busy_cpu_percent=busy_percent, memory_measure=memory_measure(str(loaded.input_device)),
        process_peak_rss_bytes=process_peak_rss(), results=results, growth=growth, runs=tuple(runs),
        interrupted=interrupted, cache_kind=cache_kind_name(cache_options),
        complete_pairs=sum(1 for (mode, length, run) in raws if mode == CACHE and (NO_CACHE, length, run) in raws))


def _order(run: int) -> tuple[str, str]:
    return (CACHE, NO_CACHE) if run % 2 else (NO_CACHE, CACHE)


def summarize_mode(mode: str, new_tokens: int, runs: Sequence[RunTiming]) -> ModeSummary | None:
    mine = [r for r in runs if r.mode == mode and r.new_tokens == new_tokens]
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
        peak_memory_bytes=max(peaks) if peaks else None, peak_over_start_bytes=max(extras) if extras else None)


def speedup(runs: Sequence[RunTiming], new_tokens: int) -> SpeedUp | None:
    """No-cache / cache time from the runs of one length: ratio of means, and per-pair ratios."""
    cached = {r.run: r.seconds for r in runs if r.mode == CACHE and r.new_tokens == new_tokens}
    uncached = {r.run: r.seconds for r in runs if r.mode == NO_CACHE and r.new_tokens == new_tokens}
    pairs = summarize([uncached[run] / cached[run] for run in sorted(cached) if run in uncached and cached[run] > 0])
    if pairs is None:
        return None
    return SpeedUp(of_means=mean(list(uncached.values())) / mean(list(cached.values())), pairs=pairs)


def _length_result(length: int, runs: list[RunTiming], raws: dict[tuple[str, int, int], _Raw], prompt_tokens: int,
                   per_token: int, bytes_per_value: int, tokenizer: Any,
                   formula: Callable[[int], tuple[int, str | None]] | None = None) -> LengthResult:
    check = None
    pairs = sorted(run for (mode, n, run) in raws if mode == CACHE and n == length and (NO_CACHE, n, run) in raws)
    for run in pairs:
        cached, uncached = raws[(CACHE, length, run)].ids, raws[(NO_CACHE, length, run)].ids
        position = first_difference(cached, uncached)
        if position is not None or check is None:
            check = OutputCheck(
                identical=position is None, pairs_compared=len(pairs), tokens_compared=min(len(cached), len(uncached)),
                first_difference=position, run=run if position is not None else None,
                cache_token_id=cached[position] if position is not None and position < len(cached) else None,
                no_cache_token_id=uncached[position] if position is not None and position < len(uncached) else None)
        if position is not None:
            break
    cached_runs = sorted(run for (mode, n, run) in raws if mode == CACHE and n == length)
    kv = text = None
    if cached_runs:
        raw = raws[(CACHE, length, cached_runs[0])]
        held = raw.cache_tokens if raw.cache_tokens is not None else prompt_tokens + length - 1
        formula_bytes, note = formula(held) if formula else (per_token * held, None)
        kv = KVCacheSize(tokens=held, measured_bytes=raw.cache_bytes, formula_bytes=formula_bytes,
                         bytes_per_token=per_token, bytes_per_value=bytes_per_value, cache_class=raw.cache_class,
                         note=note)
        text = tokenizer.decode(raw.ids, skip_special_tokens=True)
    return LengthResult(new_tokens=length, cache=summarize_mode(CACHE, length, runs),
                        no_cache=summarize_mode(NO_CACHE, length, runs), speedup=speedup(runs, length), check=check,
                        kv_cache=kv, text=text)


def _growth(results: Sequence[LengthResult]) -> tuple[GrowthFit, ...]:
    fits = []
    for mode in MODES:
        points = [(r.new_tokens, summary.seconds.mean) for r in results
                  if (summary := r.cache if mode == CACHE else r.no_cache) is not None]
        fit = fit_power_law([x for x, _ in points], [y for _, y in points])
        if fit is not None:
            fits.append(GrowthFit(mode=mode, fit=fit))
    return tuple(fits)
