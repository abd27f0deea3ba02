"""Measurements that need a fresh Python each: imports, loads, decode speed, static cache + compile, bandwidth.
Run as `python benchprobe.py NAME '{json options}'`; it prints one result line and never judges a target."""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from typing import Any

RESULT_PREFIX = "BENCH-RESULT "  # the same as benchlib.RESULT_PREFIX (this file must run without benchlib)
HEAVY = ("torch", "transformers", "numpy")


def _sync(device: Any) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _median(values: list[float]) -> float | None:
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


# ---------------------------------------------------------------------------------------------- start-up


def probe_imports(options: dict[str, Any]) -> dict[str, Any]:
    """Which heavy modules `import llmscope.cli.main` pulls in, and what running --help pulls in."""
    started = time.perf_counter()
    import llmscope.cli.main

    import_seconds = time.perf_counter() - started
    after_import = [name for name in HEAVY if name in sys.modules]
    try:
        llmscope.cli.main.main(["--help"])
    except SystemExit:
        pass
    after_help = [name for name in HEAVY if name in sys.modules]
    return {"import_seconds": import_seconds, "heavy_after_import": after_import, "heavy_after_help": after_help}


# ---------------------------------------------------------------------------------------------- loading


def _weight_bytes(model: Any) -> int:
    seen: set[int] = set()
    total = 0
    for parameter in model.parameters():
        if id(parameter) not in seen:
            seen.add(id(parameter))
            total += parameter.numel() * parameter.element_size()
    return total


def probe_prepare(options: dict[str, Any]) -> dict[str, Any]:
    """Load once through llmscope (converting a GGUF into the cache if needed) and say where the weights are."""
    from llmscope.loading.loader import gguf_cache_dir, load_model, resolve_model_spec

    spec = resolve_model_spec(options.get("model"))
    loaded = load_model(spec, device=options.get("device", "cpu"), dtype=options.get("dtype", "auto"))
    folder = str(gguf_cache_dir(spec)) if spec.is_gguf else spec.location
    return {"name": spec.name, "kind": spec.kind, "is_gguf": spec.is_gguf, "folder": folder,
            "location": spec.location, "gguf_file": spec.gguf_file, "parameters": loaded.parameters,
            "weight_bytes": _weight_bytes(loaded.model), "dtype": loaded.dtype, "device": loaded.device,
            "load_seconds": loaded.load_seconds, "from_cache": loaded.from_cache}


def probe_load(options: dict[str, Any]) -> dict[str, Any]:
    """One llmscope load_model; its own load_seconds (imports excluded) and whether the cache served it."""
    from llmscope.loading.loader import load_model

    loaded = load_model(options.get("model"), device=options.get("device", "cpu"), dtype=options.get("dtype", "auto"))
    return {"load_seconds": loaded.load_seconds, "from_cache": loaded.from_cache, "parameters": loaded.parameters}


def probe_load_raw(options: dict[str, Any]) -> dict[str, Any]:
    """The same load done by hand with transformers: tokenizer + model from a folder (or from the GGUF file)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = options.get("device", "cpu")
    dtype = getattr(torch, options.get("dtype_name", "float32"))
    extra: dict[str, Any] = {"gguf_file": options["gguf_file"]} if options.get("gguf_file") else {}
    placement: dict[str, Any] = {"device_map": device} if device != "cpu" else {}
    started = time.perf_counter()
    AutoTokenizer.from_pretrained(options["folder"], **extra)
    model = AutoModelForCausalLM.from_pretrained(options["folder"], dtype=dtype, **extra, **placement)
    if extra and device != "cpu":
        model = model.to(device)
    model.eval()
    return {"load_seconds": time.perf_counter() - started}


# ---------------------------------------------------------------------------------------------- generation


def raw_generate(model: Any, tokenizer: Any, prompt_ids: list[int], device: Any, new_tokens: int,
                 use_cache: bool = True) -> dict[str, Any]:
    """Plain model.generate, greedy, exactly new_tokens tokens, with a streamer that times each token."""
    import torch
    from transformers.generation.streamers import BaseStreamer

    class Recorder(BaseStreamer):
        def __init__(self) -> None:
            self.prompt_seen = False
            self.times: list[float] = []
            self.tokens: list[int] = []

        def put(self, value: Any) -> None:
            if not self.prompt_seen:  # generate first hands over the prompt itself
                self.prompt_seen = True
                return
            self.tokens.extend(int(t) for t in value.reshape(-1).tolist())  # .tolist() waits for the device
            self.times.append(time.perf_counter())

        def end(self) -> None:
            pass

    input_ids = torch.tensor([prompt_ids], device=device)
    recorder = Recorder()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    _sync(device)
    started = time.perf_counter()
    with torch.inference_mode():
        model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=new_tokens,
                       min_new_tokens=new_tokens, do_sample=False, use_cache=use_cache, streamer=recorder,
                       pad_token_id=pad)
    _sync(device)
    finished = time.perf_counter()
    times = recorder.times
    decode = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else None
    return {"decode_tokens_per_s": decode, "total_seconds": finished - started, "tokens": recorder.tokens,
            "time_to_first_token_s": times[0] - started if times else None}


def _llmscope_generate(loaded: Any, prompt: str, new_tokens: int, **settings: Any) -> Any:
    """llmscope's generate, exactly new_tokens tokens (EOS held back, as raw_generate's min_new_tokens does): a
    prompt whose first token is EOS still gives new_tokens tokens and a decode speed."""
    from llmscope.generation.generate import GenerationSettings, generate

    return generate(loaded, prompt, GenerationSettings(max_new_tokens=new_tokens, ignore_eos=True, **settings),
                    chat=False)


def _interleave(rounds: int, first: Callable[[], None], second: Callable[[], None]) -> None:
    """Run the two measurements alternately, swapping which goes first each round."""
    for index in range(rounds):
        for step in ((first, second) if index % 2 == 0 else (second, first)):
            step()


def decode_comparison(loaded: Any, prompt: str, new_tokens: int, rounds: int) -> dict[str, Any]:
    """llmscope generate vs raw model.generate, decode tok/s of each, interleaved on the same loaded model."""
    device = loaded.input_device
    warm = _llmscope_generate(loaded, prompt, 4)
    prompt_ids = list(warm.prompt_token_ids)
    raw_generate(loaded.model, loaded.tokenizer, prompt_ids, device, 4)
    ours: list[float] = []
    theirs: list[float] = []
    token_sets: dict[str, list[int]] = {}
    finish: dict[str, Any] = {}

    def run_ours() -> None:
        result = _llmscope_generate(loaded, prompt, new_tokens)
        ours.append(result.decode_tokens_per_s)
        token_sets["llmscope"] = list(result.token_ids)
        finish.update(reason=result.finish_reason, new_tokens=result.new_tokens)

    def run_raw() -> None:
        result = raw_generate(loaded.model, loaded.tokenizer, prompt_ids, device, new_tokens)
        theirs.append(result["decode_tokens_per_s"])
        token_sets["raw"] = result["tokens"]

    _interleave(rounds, run_ours, run_raw)
    same = token_sets["llmscope"] == token_sets["raw"][: len(token_sets["llmscope"])]
    return {"new_tokens": new_tokens, "rounds": rounds, "prompt_tokens": len(prompt_ids),
            "llmscope_tokens_per_s": ours, "raw_tokens_per_s": theirs,
            "llmscope_median": _median(ours), "raw_median": _median(theirs), "identical_tokens": same,
            "finish_reason": finish.get("reason"), "llmscope_new_tokens": finish.get("new_tokens"),
            "token_ids": token_sets["llmscope"]}


def no_cache_comparison(loaded: Any, prompt: str, lengths: list[int], rounds: int = 1) -> list[dict[str, Any]]:
    """Total generation time without and with the KV cache, llmscope and raw model.generate, per length:
    the four runs take turns `rounds` times and each keeps its median."""
    device = loaded.input_device
    prompt_ids = list(_llmscope_generate(loaded, prompt, 1).prompt_token_ids)
    rows = []
    for length in lengths:
        times: dict[str, list[float]] = {"llmscope_cache_s": [], "llmscope_no_cache_s": [], "raw_cache_s": [],
                                         "raw_no_cache_s": []}
        same = True
        produced: set[int] = set()
        for _ in range(rounds):
            cached = _llmscope_generate(loaded, prompt, length)
            uncached = _llmscope_generate(loaded, prompt, length, use_cache=False)
            times["llmscope_cache_s"].append(cached.total_seconds)
            times["llmscope_no_cache_s"].append(uncached.total_seconds)
            times["raw_cache_s"].append(raw_generate(loaded.model, loaded.tokenizer, prompt_ids, device,
                                                     length)["total_seconds"])
            times["raw_no_cache_s"].append(raw_generate(loaded.model, loaded.tokenizer, prompt_ids, device, length,
                                                        use_cache=False)["total_seconds"])
            same = same and cached.token_ids == uncached.token_ids
            produced.update((cached.new_tokens, uncached.new_tokens))
        rows.append({"new_tokens": length, "rounds": rounds, **{key: _median(v) for key, v in times.items()},
                     "runs_s": times, "llmscope_new_tokens": sorted(produced), "same_tokens": same})
    return rows


def bandwidth(weight_bytes: int, device: Any, repeats: int = 12) -> dict[str, Any]:
    """Read bandwidth of a float32 matrix-vector product over a matrix of the model's weight size."""
    import torch

    side = max(int(math.sqrt(weight_bytes / 4)), 64)
    matrix = torch.randn(side, side, dtype=torch.float32, device=device)
    vector = torch.randn(side, dtype=torch.float32, device=device)
    times = []
    with torch.inference_mode():
        for index in range(repeats + 3):
            _sync(device)
            started = time.perf_counter()
            torch.mv(matrix, vector)
            _sync(device)
            if index >= 3:
                times.append(time.perf_counter() - started)
    seconds = _median(times)
    matrix_bytes = matrix.numel() * matrix.element_size()
    del matrix, vector
    return {"matrix_side": side, "matrix_bytes": matrix_bytes, "seconds": seconds,
            "gb_per_s": matrix_bytes / seconds / 1e9 if seconds else None}


def probe_generation(options: dict[str, Any]) -> dict[str, Any]:
    """Decode speed against raw generate, the no-cache ratio and memory bandwidth, on one loaded model."""
    from llmscope.loading.loader import load_model

    loaded = load_model(options.get("model"), device=options.get("device", "cpu"), dtype=options.get("dtype", "auto"))
    device = loaded.input_device
    prompt = options["prompt"]
    out: dict[str, Any] = {"device": loaded.device, "dtype": loaded.dtype, "parameters": loaded.parameters,
                           "weight_bytes": _weight_bytes(loaded.model)}
    parts = set(options.get("parts", ["decode", "nocache", "bandwidth"]))
    if "bandwidth" in parts:
        out["bandwidth"] = bandwidth(out["weight_bytes"], device)
    if "decode" in parts:
        out["decode"] = decode_comparison(loaded, prompt, options["new_tokens"], options["rounds"])
    if "nocache" in parts:
        out["nocache"] = no_cache_comparison(loaded, prompt, options["nocache_lengths"],
                                             options.get("nocache_rounds", 1))
    return out


def probe_compile(options: dict[str, Any]) -> dict[str, Any]:
    """GenerationSettings(static_cache=True, compile=True): compile time, same tokens, decode vs raw generate."""
    import dataclasses

    from llmscope.generation.generate import GenerationSettings
    from llmscope.loading.loader import load_model

    names = {field.name for field in dataclasses.fields(GenerationSettings)}
    if not {"static_cache", "compile"} <= names:
        return {"available": False, "why": "GenerationSettings has no static_cache/compile fields yet"}
    loaded = load_model(options.get("model"), device=options.get("device", "cpu"), dtype=options.get("dtype", "auto"))
    device = loaded.input_device
    prompt, new_tokens = options["prompt"], options["new_tokens"]
    dynamic = _llmscope_generate(loaded, prompt, new_tokens)
    prompt_ids = list(dynamic.prompt_token_ids)
    raw_generate(loaded.model, loaded.tokenizer, prompt_ids, device, 4)
    _sync(device)
    started = time.perf_counter()
    first = _llmscope_generate(loaded, prompt, new_tokens, static_cache=True, compile=True)
    first_wall = time.perf_counter() - started
    compiled_rates: list[float] = []
    compiled_totals: list[float] = []
    raw_rates: list[float] = []
    identical = [list(first.token_ids) == list(dynamic.token_ids)]

    def run_compiled() -> None:
        result = _llmscope_generate(loaded, prompt, new_tokens, static_cache=True, compile=True)
        compiled_rates.append(result.decode_tokens_per_s)
        compiled_totals.append(result.total_seconds)
        identical.append(list(result.token_ids) == list(dynamic.token_ids))

    def run_raw() -> None:
        raw_rates.append(raw_generate(loaded.model, loaded.tokenizer, prompt_ids, device, new_tokens)
                         ["decode_tokens_per_s"])

    _interleave(options["rounds"], run_compiled, run_raw)
    steady = _median(compiled_totals)
    return {"available": True, "new_tokens": new_tokens, "first_call_seconds": first_wall,
            "compile_seconds": first_wall - steady if steady is not None else None,
            "compiled_tokens_per_s": compiled_rates, "raw_tokens_per_s": raw_rates,
            "compiled_median": _median(compiled_rates), "raw_median": _median(raw_rates),
            "dynamic_tokens_per_s": dynamic.decode_tokens_per_s, "identical_tokens": all(identical)}


def probe_batch_generate(options: dict[str, Any]) -> dict[str, Any]:
    """Greedy generation of the same prompts in padded batches vs one at a time, in one loaded process."""
    from llmscope.core.command_settings import GenerationSettings
    from llmscope.generation.generate import generate_many
    from llmscope.loading.loader import load_model

    loaded = load_model(options.get("model"), device=options.get("device", "cpu"), dtype=options.get("dtype", "auto"))
    prompts = options["prompts"]
    settings = GenerationSettings(max_new_tokens=options["new_tokens"])
    list(generate_many(loaded, prompts[:2], settings, batch_size=2))  # warm-up
    started = time.perf_counter()
    singles = [next(generate_many(loaded, [prompt], settings, batch_size=1)) for prompt in prompts]
    single_seconds = time.perf_counter() - started
    started = time.perf_counter()
    batched = list(generate_many(loaded, prompts, settings, batch_size=options["batch_size"]))
    batched_seconds = time.perf_counter() - started
    tokens = sum(result.new_tokens for result in batched)
    return {"prompts": len(prompts), "batch_size": options["batch_size"], "new_tokens": tokens,
            "single_seconds": single_seconds, "batched_seconds": batched_seconds,
            "single_tokens_per_s": sum(r.new_tokens for r in singles) / single_seconds,
            "batched_tokens_per_s": tokens / batched_seconds,
            "identical": [r.token_ids for r in singles] == [r.token_ids for r in batched]}


PROBES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "imports": probe_imports, "prepare": probe_prepare, "load": probe_load, "load_raw": probe_load_raw,
    "generation": probe_generation, "compile": probe_compile, "batch_generate": probe_batch_generate,
}


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] not in PROBES:
        print(f"usage: benchprobe.py {{{','.join(PROBES)}}} [JSON options]", file=sys.stderr)
        return 2
    import logging
    import os
    import warnings

    warnings.filterwarnings("ignore")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    logging.getLogger("llmscope").setLevel(logging.ERROR)
    options = json.loads(argv[2]) if len(argv) > 2 else {}
    result = PROBES[argv[1]](options)
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
