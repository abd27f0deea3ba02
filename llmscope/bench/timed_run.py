"""One timed `model.generate` call for `bench-cache`: a clock at every token, peak memory, the ids and the KV cache
it returned. It knows nothing of modes, repeats or statistics, and never prints."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmscope.core.errors import stop_if_signalled
from llmscope.loading.peakmem import peak_memory, start_peak_memory

if TYPE_CHECKING:
    from llmscope.loading.loader import LoadedModel


@dataclass(frozen=True)
class RunTiming:
    """One timed `generate` call. Times in seconds except decode_ms_per_token."""

    mode: str  # "cache" or "no-cache"
    new_tokens: int
    run: int  # 1-based, per mode and measuring point
    seconds: float  # the whole generate call
    ttft_s: float  # time to first token: the prefill forward pass (plus generate's set-up)
    decode_ms_per_token: float | None  # (last token - first token) / (new_tokens - 1)
    tokens_per_s: float  # new_tokens / seconds
    peak_memory_bytes: int | None
    peak_over_start_bytes: int | None = None  # the peak minus what was in use when the run started
    prompt_tokens: int = 0  # the prompt's length in tokens (the context depth)


def busy_cpu_percent(interval: float = 0.25) -> float | None:
    """System-wide CPU use over a short pause while this process waits: what other processes are doing."""
    from llmscope.loading.cputhreads import others_busy_percent

    return others_busy_percent(interval)


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
            stop_if_signalled()  # Ctrl-C stops the run at the next token even if its first raise was lost
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
    extra = getattr(cache, "linear_cache", None)  # MiniMax keeps its lightning-attention states beside the layers
    for layer in [*(layers or ()), tuple(extra) if isinstance(extra, list) else ()]:
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
    """Positions the cache has seen: the longest attention layer (MiniMax's first layer may hold no keys at all)."""
    getter = getattr(cache, "get_seq_length", None)
    if not callable(getter):
        return None
    lengths = [int(layer.get_seq_length()) for layer in getattr(cache, "layers", None) or ()
               if callable(getattr(layer, "get_seq_length", None))]
    return max(lengths, default=int(getter()))


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


def _stop_when(stop: Callable[[], bool]) -> Any:
    """transformers stopping criteria that end generate after the token during which stop() turned true."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class StopWhen(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full((input_ids.shape[0],), stop(), dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([StopWhen()])


def one_run(loaded: LoadedModel, input_ids: Any, attention_mask: Any, new_tokens: int, use_cache: bool,
             on_token: Callable[[], None], cache_options: dict[str, Any] | None = None,
             stop: Callable[[], bool] | None = None) -> tuple[float, list[float], tuple[int | None, int | None], _Raw]:
    """One generate call: (seconds, per-token times from its start, (peak memory, memory at start), raw outputs).

    stop() is asked after every token; when it says True the run ends early with fewer than new_tokens ids (a time
    budget that this run would overrun)."""
    import torch

    device = str(loaded.input_device)
    on_cuda = device.startswith("cuda")

    def sync() -> None:
        if on_cuda:
            torch.cuda.synchronize()

    clock = _token_clock(sync, on_token)
    start_memory = start_peak_memory(on_cuda)
    sync()
    started = time.perf_counter()
    with torch.inference_mode():
        output = loaded.model.generate(
            input_ids, attention_mask=attention_mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
            do_sample=False, use_cache=use_cache, pad_token_id=pad_id(loaded), streamer=clock,
            return_dict_in_generate=True, **((cache_options or {}) if use_cache else {}),
            **({"stopping_criteria": _stop_when(stop)} if stop is not None else {}))
    sync()
    finished = time.perf_counter()
    peak = peak_memory(on_cuda)
    ids = output.sequences[0, input_ids.shape[1]:].tolist()
    raw = _Raw(ids=ids)
    if use_cache:
        cache = getattr(output, "cache", None) or getattr(output, "past_key_values", None)
        raw.cache_bytes = cache_bytes(cache)
        raw.cache_tokens = _cache_tokens(cache)
        raw.cache_class = type(cache).__name__ if cache is not None else None
    del output
    return finished - started, [t - started for t in clock.times], (peak, start_memory), raw


def pad_id(loaded: LoadedModel) -> int | None:
    tokenizer, config = loaded.tokenizer, loaded.model.generation_config
    for value in (tokenizer.pad_token_id, getattr(config, "pad_token_id", None), tokenizer.eos_token_id,
                  getattr(config, "eos_token_id", None)):
        if isinstance(value, int):
            return value
        if isinstance(value, (list, tuple)) and value:
            return int(value[0])
    return None


def run_timing(mode: str, new_tokens: int, run: int, seconds: float, token_times: Sequence[float],
               peak: int | None, start_memory: int | None = None, prompt_tokens: int = 0) -> RunTiming:
    """Turn one run's clock readings into its timing record."""
    ttft = token_times[0] if token_times else seconds
    decode = ((token_times[-1] - token_times[0]) / (len(token_times) - 1) * 1000
              if len(token_times) > 1 else None)
    return RunTiming(mode=mode, new_tokens=new_tokens, run=run, seconds=seconds, ttft_s=ttft,
                     decode_ms_per_token=decode, tokens_per_s=new_tokens / seconds if seconds > 0 else math.inf,
                     peak_memory_bytes=peak,
                     peak_over_start_bytes=max(peak - start_memory, 0) if peak is not None and start_memory is not None
                     else None, prompt_tokens=prompt_tokens)


