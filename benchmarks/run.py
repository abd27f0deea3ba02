"""The llmscope benchmark suite: each figure beside its baseline (raw transformers, `python -c pass`, `hf --help`)
measured in the same run, as a table of ratios and targets plus a JSON file. It never changes llmscope itself.

    .venv/bin/python benchmarks/run.py [--quick] [--only SECTIONS] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # the folder is put on the path just above
    HERE,
    Figure,
    ProbeError,
    at_least,
    at_most,
    bench_cache_figures,
    bench_env,
    format_met,
    format_ratio,
    format_value,
    interleaved_medians,
    listed_commands,
    load_average,
    machine,
    machine_line,
    median,
    not_available,
    old_default_estimate,
    ratio,
    run_probe,
    time_command,
    venv_command,
)

SECTIONS = ("startup", "tokenize", "load", "decode", "compile", "nocache", "bandwidth", "bench-cache", "depth",
            "batch", "quant")
DEPTHS = "128,512,2048"  # llama-bench's -d style: prompt lengths for bench-cache --depth
TOKENIZE_TEXT = "The capital of France is"
EXPECTED_IDS = "504 3575 282 4649 314"  # the embedded SmolLM2's ids for TOKENIZE_TEXT (no BOS)
DECODE_PROMPT = ("Write a very long email apologizing to Sarah for the tragic gardening mishap. "
                 "Explain how it happened.")
SEED_GPU = {"cache_s": 4.24, "no_cache_s": 5.74, "new_tokens": 100}  # the seed chapter, Phi-3 on a GPU
TARGETS = {"startup_s": 0.15, "tokenize_s": 0.5, "cached_load_s": 1.5, "decode_ratio": 0.97,
           "bandwidth_fraction": 0.60, "bench_cache_s": 90.0, "batch_call_speedup": 20.0, "one_shot_s": 3.0,
           "batched_generate_speedup": 2.0}
BATCH_SUBJECTS = ("France", "the sea", "tokens", "a garden", "the moon", "Sarah", "grouped-query attention", "Rome")
BATCH_FRAMES = ("The capital of {} is", "Tell me about {}.", "A short poem about {}:", "Three facts about {}: 1.",
                "Why does {} matter?", "The history of {} begins", "{} in one word:", "Explain {} to a child.")
RAW_TOKENIZE = ("import sys\nfrom transformers import AutoTokenizer\n"
                "t = AutoTokenizer.from_pretrained(sys.argv[1])\n"
                "print(' '.join(str(i) for i in t(sys.argv[2])['input_ids']))\n")


class Suite:
    """Runs the chosen sections and collects their figures and raw measurements."""

    def __init__(self, args: argparse.Namespace, progress: Callable[[str], None]) -> None:
        self.args = args
        self.quick: bool = args.quick
        self.progress = progress
        self.figures: list[Figure] = []
        self.details: dict[str, Any] = {}
        self.env = bench_env()
        self.model_options = {"model": args.model, "device": args.device, "dtype": args.dtype}
        self._prepared: dict[str, Any] | None = None
        self._generation: dict[str, Any] | None = None

    # -------------------------------------------------------------------------------- helpers

    def add(self, *figures: Figure) -> None:
        self.figures.extend(figures)

    def prepared(self) -> dict[str, Any]:
        """Load the model once (converting it into the cache if this machine never did) and remember where."""
        if self._prepared is None:
            self.progress("preparing: one load so that the conversion cache is warm")
            self._prepared = run_probe("prepare", self.model_options, self.env)
            self.details["model"] = self._prepared
        return self._prepared

    def llmscope_argv(self, *args: str) -> list[str]:
        exe = venv_command("llmscope")
        return [exe, *args] if exe else [sys.executable, "-m", "llmscope", *args]

    def model_args(self) -> list[str]:
        return ["--model", self.args.model] if self.args.model else []

    def embedded(self) -> bool:
        return self.prepared()["kind"] == "embedded"

    # -------------------------------------------------------------------------------- 1. start-up

    def startup(self) -> None:
        self.progress("start-up: --help, --version, python -c pass, hf --help")
        repeats = 3 if self.quick else 10
        commands = {"help": self.llmscope_argv("--help"), "version": self.llmscope_argv("--version"),
                    "python": [sys.executable, "-c", "pass"]}
        hf = venv_command("hf")
        if hf:
            commands["hf"] = [hf, "--help"]
        times, _ = interleaved_medians(commands, repeats, self.env)
        self.details["startup"] = {"repeats": repeats, "median_s": times}
        for key, label in (("help", "llmscope --help"), ("version", "llmscope --version")):
            self.add(Figure("start-up", label, times[key], "s", times["python"], "python -c pass",
                            ratio(times[key], times["python"]), f"<= {TARGETS['startup_s']} s",
                            at_most(times[key], TARGETS["startup_s"]), f"median of {repeats}"))
        if hf:
            share = ratio(times["help"], times.get("hf"))
            self.add(Figure("start-up", "llmscope --help vs hf --help", times["help"], "s", times.get("hf"),
                            "hf --help", share, "ratio <= 0.33", at_most(share, 1 / 3), "3x faster than hf"))
        imports = run_probe("imports", {}, self.env)
        self.details["imports"] = imports
        heavy = sorted(set(imports["heavy_after_import"]) | set(imports["heavy_after_help"]))
        self.add(Figure("start-up", "import llmscope.cli.main, --help: heavy modules", ", ".join(heavy) or "none", "",
                        target="none of torch, transformers, numpy", met=not heavy,
                        note=f"import {imports['import_seconds'] * 1000:.0f} ms in-process"))

    # -------------------------------------------------------------------------------- 2. tokenize

    def tokenize(self) -> None:
        prepared = self.prepared()
        self.progress("tokenize: llmscope tokenize --ids vs AutoTokenizer on the cached folder")
        repeats = 2 if self.quick else 5
        commands = {"llmscope": self.llmscope_argv("tokenize", TOKENIZE_TEXT, "--ids", *self.model_args()),
                    "raw": [sys.executable, "-c", RAW_TOKENIZE, prepared["folder"], TOKENIZE_TEXT]}
        times, outputs = interleaved_medians(commands, repeats, self.env)
        ours, theirs = outputs["llmscope"].strip(), outputs["raw"].strip()
        same = ours == theirs and bool(ours)
        expected = (ours == EXPECTED_IDS) if self.embedded() else None
        met = at_most(times["llmscope"], TARGETS["tokenize_s"])
        if met is not None:
            met = met and same and expected is not False
        self.details["tokenize"] = {"repeats": repeats, "median_s": times, "llmscope_ids": ours, "raw_ids": theirs,
                                    "folder": prepared["folder"]}
        note = f"ids {ours}" + (" (same as transformers)" if same else f" but transformers gives {theirs}")
        self.add(Figure("tokenize", "tokenize --ids, tokenizer cached", times["llmscope"], "s", times["raw"],
                        "AutoTokenizer (python -c)", ratio(times["llmscope"], times["raw"]),
                        f"<= {TARGETS['tokenize_s']} s", met, note))

    # -------------------------------------------------------------------------------- 3. load

    def load(self) -> None:
        prepared = self.prepared()
        raw_options = {"device": self.args.device, "dtype_name": prepared["dtype"]}
        if self.quick or not prepared["is_gguf"]:
            why = "skipped in --quick" if self.quick else "the model is not a GGUF file"
            self.add(not_available("load", "load, first (GGUF conversion)", why))
        else:
            self.progress("load: first load from the GGUF into a fresh cache (about 25 s), then raw transformers")
            with tempfile.TemporaryDirectory(prefix="llmscope-bench-cache-") as fresh:
                first = run_probe("load", self.model_options, bench_env({"LLMSCOPE_CACHE": fresh}))
            raw_first = run_probe("load_raw", {**raw_options, "folder": prepared["location"],
                                               "gguf_file": prepared["gguf_file"]}, self.env)
            self.details["load_first"] = {"llmscope": first, "raw": raw_first}
            self.add(Figure("load", "load, first (GGUF conversion)", first["load_seconds"], "s",
                            raw_first["load_seconds"], "from_pretrained(gguf_file=)",
                            ratio(first["load_seconds"], raw_first["load_seconds"]), "progress bar shown",
                            None, "llmscope also writes the cache" if first["from_cache"] is False else ""))
        repeats = 2 if self.quick else 3
        self.progress(f"load: from the cache, {repeats} fresh processes each, llmscope vs raw from_pretrained")
        ours: list[float] = []
        theirs: list[float] = []
        served: list[Any] = []
        for _ in range(repeats):
            result = run_probe("load", self.model_options, self.env)
            ours.append(result["load_seconds"])
            served.append(result["from_cache"])
            theirs.append(run_probe("load_raw", {**raw_options, "folder": prepared["folder"]}, self.env)
                          ["load_seconds"])
        self.details["load_cached"] = {"llmscope_s": ours, "raw_s": theirs, "from_cache": served}
        value, base = median(ours), median(theirs)
        cached = all(s is not False for s in served)
        self.add(Figure("load", "load, from the cache", value, "s", base, "from_pretrained(cache folder)",
                        ratio(value, base), f"<= {TARGETS['cached_load_s']} s",
                        at_most(value, TARGETS["cached_load_s"]),
                        f"median of {repeats} processes" + ("" if cached else "; the cache was NOT used")))

    # -------------------------------------------------------------------------------- 4, 6, 7. generation

    def generation(self) -> dict[str, Any]:
        """One process for decode, no-cache and bandwidth (one load for all three)."""
        if self._generation is None:
            chosen = set(self.args.only)
            parts = [p for p in ("decode", "nocache", "bandwidth") if p in chosen]
            options = {**self.model_options, "prompt": DECODE_PROMPT, "parts": parts,
                       "new_tokens": 16 if self.quick else 64, "rounds": 3 if self.quick else 5,
                       "nocache_lengths": [16] if self.quick else [32, 100], "nocache_rounds": 1 if self.quick else 3}
            self.progress(f"generation: {', '.join(parts)} on one loaded model "
                          f"({options['new_tokens']} tokens x {options['rounds']} rounds)")
            self._generation = run_probe("generation", options, self.env)
            self.details["generation"] = self._generation
        return self._generation

    def decode(self) -> None:
        data = self.generation()["decode"]
        value, base = data["llmscope_median"], data["raw_median"]
        share = ratio(value, base)
        met = at_least(share, TARGETS["decode_ratio"])
        note = f"{data['new_tokens']} tokens, median of {data['rounds']}; tokens " + (
            "identical" if data["identical_tokens"] else "DIFFER")
        if data["llmscope_new_tokens"] != data["new_tokens"]:
            note += f"; llmscope stopped at {data['llmscope_new_tokens']} ({data['finish_reason']})"
        self.add(Figure("decode", "decode, dynamic cache", value, "tok/s", base, "raw model.generate", share,
                        f"ratio >= {TARGETS['decode_ratio']}", met, note))

    def nocache(self) -> None:
        for row in self.generation()["nocache"]:
            ours = ratio(row["llmscope_no_cache_s"], row["llmscope_cache_s"])
            theirs = ratio(row["raw_no_cache_s"], row["raw_cache_s"])
            note = (f"{row['llmscope_no_cache_s']:.2f} s vs {row['llmscope_cache_s']:.2f} s, "
                    f"median of {row.get('rounds', 1)}"
                    + ("" if row["same_tokens"] else "; tokens DIFFER"))
            if row["new_tokens"] == SEED_GPU["new_tokens"]:
                note += f"; the book (Phi-3, GPU): {SEED_GPU['no_cache_s'] / SEED_GPU['cache_s']:.2f}x"
            self.add(Figure("no cache", f"no-cache / cache time, {row['new_tokens']} tokens", ours, "x", theirs,
                            "same with model.generate", ratio(ours, theirs), "", None, note))

    def bandwidth(self) -> None:
        data = self.generation()
        band = data["bandwidth"]
        gbps = band["gb_per_s"]
        limit = gbps * 1e9 / data["weight_bytes"] if gbps else None
        self.add(Figure("bandwidth", "memory bandwidth (matvec)", gbps, "GB/s",
                        note=f"{band['matrix_bytes'] / 1e6:.0f} MB float32 matrix, torch.mv"),
                 Figure("bandwidth", f"{data['dtype']} decode limit", limit, "tok/s",
                        note=f"bandwidth / {data['weight_bytes'] / 1e6:.0f} MB of weights read per token"))
        decode = data.get("decode")
        if decode is None:
            return
        ours, theirs = ratio(decode["llmscope_median"], limit), ratio(decode["raw_median"], limit)
        self.add(Figure("bandwidth", "decode / bandwidth limit", None if ours is None else ours * 100, "%",
                        None if theirs is None else theirs * 100, "raw model.generate", ratio(ours, theirs),
                        f">= {TARGETS['bandwidth_fraction']:.0%}", at_least(ours, TARGETS["bandwidth_fraction"]),
                        "llmscope generate, dynamic cache"))

    # -------------------------------------------------------------------------------- 5. static cache + compile

    def compile(self) -> None:
        if self.quick:
            self.add(not_available("compile", "static cache + compile", "skipped in --quick"))
            return
        self.progress("compile: static cache + torch.compile (compiles once: 10-60 s)")
        options = {**self.model_options, "prompt": DECODE_PROMPT, "new_tokens": 64, "rounds": 3}
        data = run_probe("compile", options, self.env, timeout=self.args.compile_timeout)
        self.details["compile"] = data
        if not data["available"]:
            self.add(not_available("compile", "static cache + compile", f"not available yet: {data['why']}"))
            return
        self.add(Figure("compile", "static cache + compile: compile time", data["compile_seconds"], "s",
                        note="first call minus a steady call; once per process"))
        share = ratio(data["compiled_median"], data["raw_median"])
        met = None if share is None else share > 1 and data["identical_tokens"]
        self.add(Figure("compile", "static cache + compile: decode", data["compiled_median"], "tok/s",
                        data["raw_median"], "raw model.generate (dynamic)", share, "> raw, same tokens", met,
                        "tokens identical to the dynamic cache" if data["identical_tokens"] else "tokens DIFFER"))

    # -------------------------------------------------------------------------------- 8. bench-cache

    def bench_cache(self) -> None:
        name = "bench-cache default run"
        if self.quick:
            self.add(not_available("bench-cache", name, "skipped in --quick"))
            return
        _, help_run = time_command(self.llmscope_argv("--help"), self.env)
        if "bench-cache" not in listed_commands(help_run.stdout):
            self.add(not_available("bench-cache", name, "not available yet (no bench-cache command)",
                                   f"<= {TARGETS['bench_cache_s']:.0f} s"))
            return
        self.progress("bench-cache: llmscope bench-cache --json -q (target 90 s)")
        seconds, done = time_command(self.llmscope_argv("bench-cache", "--json", "-q", *self.model_args()),
                                     self.env, timeout=900)
        self.details["bench_cache"] = {"seconds": seconds, "exit_code": done.returncode,
                                       "stderr": done.stderr[-2000:]}
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no message"])[-1]
            self.add(not_available("bench-cache", name, f"failed (exit {done.returncode}): {tail}"))
            return
        try:
            self.details["bench_cache"]["json"] = json.loads(done.stdout)
        except ValueError:
            pass
        figures = bench_cache_figures(self.details["bench_cache"].get("json") or {}) or {}
        before = old_default_estimate(seconds, figures) if figures else None
        note = "wall time, whole command"
        if figures:
            note += (f"; {figures['pairs']} pairs, stopped: {figures['stop_reason']}; baseline: the old fixed "
                     "default (full-length warm-up + 7 pairs) from this run's own pair times")
        self.add(Figure("bench-cache", name, seconds, "s", before, "old default, estimated", ratio(seconds, before),
                        f"<= {TARGETS['bench_cache_s']:.0f} s", at_most(seconds, TARGETS["bench_cache_s"]), note))
        if figures:
            low, high = figures["interval"]
            raw = self.raw_speedup(figures["new_tokens"])
            base, label = (raw, "raw model.generate, this run") if raw else (
                SEED_GPU["no_cache_s"] / SEED_GPU["cache_s"], "the book: Phi-3, GPU")
            spread = f"95% interval {low:.2f}–{high:.2f}x" if low is not None else "no interval (one pair)"
            note = (f"{figures['no_cache_s']:.2f} s vs {figures['cache_s']:.2f} s, {figures['new_tokens']} tokens; "
                    f"{spread}; tokens {'identical' if figures['identical'] else 'DIFFER'}")
            self.add(Figure("bench-cache", "bench-cache speed-up (no-cache / cache)", figures["speedup"], "x", base,
                            label, ratio(figures["speedup"], base), "", None, note))

    def raw_speedup(self, new_tokens: int) -> float | None:
        """model.generate's no-cache / cache time at this many tokens, if the nocache section measured it."""
        for row in (self.details.get("generation") or {}).get("nocache", []):
            if row.get("new_tokens") == new_tokens:
                return ratio(row["raw_no_cache_s"], row["raw_cache_s"])
        return None

    # -------------------------------------------------------------------------------- 9. context depth

    def depth(self) -> None:
        if self.quick:
            self.add(not_available("depth", "bench-cache --depth", "skipped in --quick"))
            return
        argv = ["bench-cache", "--depth", DEPTHS, "-n", "8", "--repeat", "1", "--json", "-q", *self.model_args()]
        self.progress(f"depth: llmscope {' '.join(argv)}")
        seconds, done = time_command(self.llmscope_argv(*argv), self.env, timeout=900)
        self.details["depth"] = {"seconds": seconds, "exit_code": done.returncode, "stderr": done.stderr[-2000:]}
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no message"])[-1]
            self.add(not_available("depth", "bench-cache --depth", f"failed (exit {done.returncode}): {tail}"))
            return
        document = json.loads(done.stdout)
        self.details["depth"]["json"] = document
        theory = {("decode_ms_per_token", "cache"): (0.0, "each step reads the weights; attention is small"),
                  ("decode_ms_per_token", "no-cache"): (1.0, "each step re-reads the whole context"),
                  ("ttft_s", "cache"): (1.0, "prefill grows with the prompt (linear layers dominate)")}
        for growth in document["growth"]:
            key = (growth["quantity"], growth["mode"])
            if key not in theory:
                continue
            expected, why = theory[key]
            note = f"R² {growth['fit']['r_squared']:.3f}; {why}" + (f"; {growth['note']}" if growth["note"] else "")
            self.add(Figure("depth", f"{growth['quantity'].replace('_', ' ')} growth, {growth['mode']}, "
                            f"prompts {DEPTHS}", growth["fit"]["exponent"], "", expected, "theory (exponent)",
                            None, "", None, note))
        deepest = document["results"][-1]
        cached, uncached = deepest["cache"], deepest["no_cache"]
        self.add(Figure("depth", f"decode ms/token at {deepest['prompt_tokens']} prompt tokens, no cache",
                        uncached["decode_ms_per_token"]["mean"], "ms", cached["decode_ms_per_token"]["mean"],
                        "with the cache", ratio(uncached["decode_ms_per_token"]["mean"],
                                                cached["decode_ms_per_token"]["mean"]), "", None,
                        f"TTFT {cached['ttft_s']['mean']:.2f} s; whole command {seconds:.0f} s"))

    # -------------------------------------------------------------------------------- 9. batch

    def batch(self) -> None:
        """Many prompts, one load: one `next-token --batch` call vs a shell loop of `next-token --json` calls, and
        in-process batched generation vs one prompt at a time."""
        self.prepared()
        prompts = [frame.format(subject) for frame in BATCH_FRAMES for subject in BATCH_SUBJECTS]
        looped = 8 if self.quick else 64  # each separate call costs seconds: the loop is timed on this many
        self.progress(f"batch: next-token --batch on {len(prompts)} prompts vs {looped} separate calls")
        with tempfile.TemporaryDirectory(prefix="llmscope-bench-batch-") as folder:
            batch_file = Path(folder) / "prompts.txt"
            batch_file.write_text("\n".join(prompts) + "\n")
            argv = self.llmscope_argv("next-token", "--batch", str(batch_file), "--top-k", "5", "-q",
                                      *self.model_args())
            started = time.perf_counter()
            done = subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=1800)
            batch_seconds = time.perf_counter() - started
            records = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
            loop_seconds = 0.0
            same = len(records) == len(prompts)
            for index, prompt in enumerate(prompts[:looped]):
                started = time.perf_counter()
                single = subprocess.run(self.llmscope_argv("next-token", prompt, "--top-k", "5", "--json", "-q",
                                                           *self.model_args()),
                                        capture_output=True, text=True, env=self.env, timeout=300)
                loop_seconds += time.perf_counter() - started
                alone = json.loads(single.stdout)["steps"][0]["top"]
                together = records[index]["steps"][0]["top"] if index < len(records) else []
                same = same and [c["token_id"] for c in alone] == [c["token_id"] for c in together] and all(
                    abs(a["probability"] - b["probability"]) <= 1e-4 for a, b in zip(alone, together))
        per_batch = batch_seconds / len(prompts)
        per_call = loop_seconds / looped
        self.add(Figure("batch", "one-shot next-token --json, end to end", per_call, "s", None, "",
                        None, f"<= {TARGETS['one_shot_s']} s", at_most(per_call, TARGETS["one_shot_s"]),
                        f"mean of {looped} separate processes (imports, tokenizer, weights, one forward)"))
        speedup = ratio(per_call, per_batch)
        self.details["batch_cli"] = {"prompts": len(prompts), "batch_seconds": batch_seconds, "looped": looped,
                                     "loop_seconds": loop_seconds, "records_match": same}
        self.add(Figure("batch", "next-token: s per prompt, --batch vs a loop", per_batch, "s", per_call,
                        "one process per prompt", ratio(per_batch, per_call),
                        f"loop / batch >= {TARGETS['batch_call_speedup']:.0f}x",
                        at_least(speedup, TARGETS["batch_call_speedup"]),
                        f"{speedup:.1f}x faster; {len(prompts)} prompts in {batch_seconds:.1f} s; records "
                        + ("equal the single runs" if same else "DIFFER from the single runs")))
        options = {**self.model_options, "prompts": prompts[: 8 if self.quick else 16], "new_tokens": 16,
                   "batch_size": 8 if self.quick else 16}
        self.progress(f"batch: generate -n 16, {len(options['prompts'])} prompts batched vs one at a time")
        data = run_probe("batch_generate", options, self.env)
        self.details["batch_generate"] = data
        gain = ratio(data["batched_tokens_per_s"], data["single_tokens_per_s"])
        self.add(Figure("batch", "generate -n 16: tokens/s batched vs one at a time", data["batched_tokens_per_s"],
                        "tok/s", data["single_tokens_per_s"], "one prompt at a time", gain,
                        f">= {TARGETS['batched_generate_speedup']:.0f}x",
                        at_least(gain, TARGETS["batched_generate_speedup"]),
                        f"batch of {data['batch_size']}; ids "
                        + ("identical" if data["identical"] else "DIFFER")))

    # -------------------------------------------------------------------------------- 10. quantized weights

    def quant(self) -> None:
        """benchmarks/quant_bench.py (the embedded model only): --quantize auto against none in one run."""
        if self.args.model:
            self.add(not_available("quant", "quantized weights", "the embedded GGUF only"))
            return
        self.progress("quant: --quantize auto vs none (decode, memory, cache entry, KL)")
        argv = [sys.executable, str(HERE / "quant_bench.py"), "--rounds", "1" if self.quick else "3",
                "--new-tokens", "16" if self.quick else "48"]
        done = subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=3600)
        report = json.loads(done.stdout.strip().splitlines()[-1])
        self.details["quant"] = report
        decode, memory, quality, targets = report["decode"], report["memory"], report["quality"], report["targets"]
        auto, none = decode["tok_s"]["auto"], decode["tok_s"]["none"]
        self.add(Figure("quant", "decode, 1 thread, packed (auto)", auto, "tok/s", none, "--quantize none",
                        decode["ratio"], f">= {targets['decode_ratio']}x", at_least(decode["ratio"],
                                                                               targets["decode_ratio"]),
                        f"{decode['fraction_of_limit']['auto']:.0%} of the 4-bit bandwidth limit"),
                 Figure("quant", "next-token peak RSS, packed", memory["auto"]["peak_rss"] / 2**20, "MiB",
                        memory["none"]["peak_rss"] / 2**20, "--quantize none",
                        memory["auto"]["peak_rss"] / memory["none"]["peak_rss"], "<= 0.5x",
                        at_most(memory["auto"]["peak_rss"] / memory["none"]["peak_rss"], targets["rss_fraction"])),
                 Figure("quant", "cache entry / GGUF size", memory["auto"]["entry_bytes"] / 2**20, "MiB",
                        memory["gguf_bytes"] / 2**20, "the GGUF file", memory["auto"]["entry_bytes"]
                        / memory["gguf_bytes"], "<= 1.5x", at_most(memory["auto"]["entry_bytes"]
                                                                   / memory["gguf_bytes"], targets["entry_ratio"])),
                 Figure("quant", "KL(auto || none), mean", quality["kl_mean"], "nats", target="<= 0.005",
                        met=at_most(quality["kl_mean"], targets["kl_mean"]),
                        note=f"top-1 {quality['top1_percent']:.1f}% over {quality['tokens']} tokens (>= 97%)"))

    # -------------------------------------------------------------------------------- driver

    def run(self) -> None:
        steps: dict[str, Callable[[], None]] = {
            "startup": self.startup, "tokenize": self.tokenize, "load": self.load, "bandwidth": self.bandwidth,
            "decode": self.decode, "nocache": self.nocache, "compile": self.compile, "bench-cache": self.bench_cache,
            "depth": self.depth, "batch": self.batch, "quant": self.quant}
        for section in SECTIONS:
            if section not in self.args.only:
                continue
            started = time.perf_counter()
            try:
                steps[section]()
            except (ProbeError, OSError, KeyError, TypeError, ValueError, subprocess.TimeoutExpired) as error:
                self.add(not_available(section, section, f"failed: {error}"))
            self.details.setdefault("section_seconds", {})[section] = round(time.perf_counter() - started, 2)


def render(figures: list[Figure], info: dict[str, Any], quick: bool, seconds: float) -> None:
    """The table for people, on stdout."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"llmscope benchmarks{' (--quick)' if quick else ''}: {machine_line(info)}",
                  title_justify="left", caption=f"{seconds:.0f} s in all; ratio = llmscope / baseline; load average "
                  f"{info.get('load_average_start')} at the start, {info.get('load_average_end')} at the end; "
                  f"started {info.get('timestamp')}",
                  caption_justify="left")
    for column in ("section", "figure", "llmscope", "baseline", "ratio", "target", "met?", "note"):
        table.add_column(column, justify="right" if column in ("llmscope", "baseline", "ratio") else "left",
                         overflow="fold")
    for figure in figures:
        base = format_value(figure.baseline, figure.unit)
        if figure.baseline_label and figure.baseline is not None:
            base = f"{base} ({figure.baseline_label})"
        met = format_met(figure.met)
        table.add_row(figure.section, figure.name, format_value(figure.value, figure.unit), base,
                      format_ratio(figure.ratio), figure.target or "-",
                      f"[green]{met}[/]" if figure.met else (f"[red]{met}[/]" if figure.met is False else met),
                      figure.note)
    Console(width=max(160, Console().width)).print(table)


def summary(figures: list[Figure], info: dict[str, Any], quick: bool, seconds: float) -> dict[str, Any]:
    """The compact JSON document of the last stdout line."""
    def rounded(value: Any) -> Any:
        return round(value, 4) if isinstance(value, float) else value

    return {"suite": "llmscope-benchmarks", "quick": quick, "seconds": round(seconds, 1),
            "machine": machine_line(info),
            "figures": {f.name: {"value": rounded(f.value), "unit": f.unit, "baseline": rounded(f.baseline),
                                 "ratio": rounded(f.ratio), "met": f.met} for f in figures},
            "targets_met": sum(f.met is True for f in figures), "targets_missed": sum(f.met is False for f in figures)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark llmscope against its baselines in one run.")
    parser.add_argument("--quick", action="store_true",
                        help="fewer repeats, fewer tokens; skips the first GGUF load, compile and bench-cache")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections to run (default all): {', '.join(SECTIONS)}")
    parser.add_argument("--json-out", type=Path, default=HERE / "results" / "latest.json",
                        help="where to write the full JSON (default benchmarks/results/latest.json)")
    parser.add_argument("--model", default=None, help="model spec (default: the embedded SmolLM2)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, ...")
    parser.add_argument("--dtype", default="auto", help="auto (float32 on CPU), float32, bfloat16, float16")
    parser.add_argument("--compile-timeout", type=float, default=300,
                        help="give up on the static cache + compile section after this many seconds (default 300)")
    args = parser.parse_args(argv)
    args.only = [part.strip() for part in args.only.split(",") if part.strip()]
    unknown = [part for part in args.only if part not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["HF_HUB_OFFLINE"] = "1"
    started = time.perf_counter()

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {message}", file=sys.stderr, flush=True)

    info = machine()
    info["load_average_start"] = load_average()
    suite = Suite(args, progress)
    suite.run()
    info["load_average_end"] = load_average()
    seconds = time.perf_counter() - started
    document = {"suite": "llmscope-benchmarks", "quick": args.quick, "sections": args.only, "machine": info,
                "seconds": round(seconds, 1), "targets": TARGETS, "seed_gpu": SEED_GPU,
                "figures": [figure.to_dict() for figure in suite.figures], "details": suite.details}
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(document, indent=1) + "\n")
    render(suite.figures, info, args.quick, seconds)
    print(json.dumps(summary(suite.figures, info, args.quick, seconds), separators=(",", ":")))
    progress(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
