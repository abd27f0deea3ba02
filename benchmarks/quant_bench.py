"""What packed weights buy and cost, measured in one run on this machine: decode speed at one thread (--quantize
auto against none, interleaved), the 4-bit bandwidth limit, next-token's peak memory, the cache entry's size, KL
and top-1 agreement on a paragraph no test uses, and (with --big) a Llama-3.1-8B-shaped Q4 GGUF.

    python benchmarks/quant_bench.py [--big /tmp/llama8b.gguf] [--rounds 3] [--new-tokens 64]

Ratios from one run are what to trust on a shared machine; the last stdout line is one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

PROMPT = "The capital of France is"
DECODE_PROMPT = "Once upon a time, in a small village by the sea, there lived"
# A paragraph written for this benchmark; no test reads it.
PARAGRAPH = (
    "The old bridge over the river had been closed to cars for a decade, but on Sunday mornings it filled with "
    "people. A man sold roasted chestnuts from a cart near the north end, and children leaned over the railing to "
    "count the barges sliding underneath. Nobody remembered who had painted the lamp posts green, or why one of "
    "them was blue. In the spring the city council argued again about whether to repair the stonework or to "
    "replace the whole structure with something lighter and cheaper. The engineers wrote long reports full of "
    "numbers about load, corrosion and the freezing of water inside the cracks. Meanwhile the pigeons, the "
    "musicians and the chestnut seller went on as before, as if the bridge would simply last forever."
)
TARGETS = {"decode_ratio": 3.0, "decode_fraction_of_llama_cpp": 0.5, "llama_cpp_tok_s": 146.0,
           "rss_fraction": 0.5, "entry_ratio": 1.5, "kl_mean": 0.005, "top1_percent": 97.0, "big_rss_gib": 7.0,
           "plan_error": 0.10}


def _llmscope(*args: str) -> list[str]:
    exe = Path(sys.executable).parent / "llmscope"
    return [str(exe), *args] if exe.exists() else [sys.executable, "-m", "llmscope", *args]


def run_measured(argv: list[str]) -> tuple[dict[str, Any] | None, float, float]:
    """Run a command; (its --json document, peak RSS in bytes of that process alone, wall seconds)."""
    import tempfile

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own peak, not the largest child's so far
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    peak = usage.ru_maxrss * 1024
    if os.waitstatus_to_exitcode(status):
        print(f"  {' '.join(argv[1:4])}... exited {os.waitstatus_to_exitcode(status)}: "
              f"{stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None, peak, wall
    return json.loads(stdout), peak, wall


def decode_speed(rounds: int, new_tokens: int) -> dict[str, Any]:
    """Decode tok/s of --quantize auto and none at one thread, rounds interleaved, medians."""
    import torch

    from llmscope.core.command_settings import GenerationSettings
    from llmscope.generation.generate import generate
    from llmscope.loading.loader import load_model
    from llmscope.loading.quant.modules import held_weight_bytes

    torch.set_num_threads(1)
    models = {mode: load_model(None, device="cpu", dtype="float32", quantize=mode) for mode in ("auto", "none")}
    settings = GenerationSettings(max_new_tokens=new_tokens)
    speeds: dict[str, list[float]] = {mode: [] for mode in models}
    texts: dict[str, str] = {}
    for _ in range(rounds):
        for mode, loaded in models.items():
            result = generate(loaded, DECODE_PROMPT, settings)
            speeds[mode].append(result.decode_tokens_per_s)
            texts[mode] = result.text
    weight_bytes = {mode: held_weight_bytes(loaded.model) for mode, loaded in models.items()}
    from benchprobe import bandwidth

    memory = bandwidth(weight_bytes["none"], torch.device("cpu"))
    median = {mode: statistics.median(values) for mode, values in speeds.items()}
    limit = {mode: memory["gb_per_s"] * 1e9 / weight_bytes[mode] for mode in models}
    return {"tok_s": median, "all": speeds, "ratio": median["auto"] / median["none"], "weight_bytes": weight_bytes,
            "bandwidth_gb_s": memory["gb_per_s"], "bandwidth_limit_tok_s": limit,
            "fraction_of_limit": {mode: median[mode] / limit[mode] for mode in models},
            "same_text": texts["auto"] == texts["none"]}


def quality() -> dict[str, Any]:
    from llmscope.inspection.comparison import CompareSettings, compare_texts
    from llmscope.loading.loader import load_model

    auto = load_model(None, device="cpu", dtype="float32", quantize="auto")
    none = load_model(None, device="cpu", dtype="float32", quantize="none")
    result = compare_texts(auto, none, PARAGRAPH, CompareSettings(against_quantize="none"))
    return {"tokens": result.tokens_compared, "kl_mean": result.kl_mean, "kl_p99": result.kl_p99,
            "top1_percent": result.top1_agreement, "perplexity_auto": result.perplexity_a,
            "perplexity_none": result.perplexity_b}


def memory_and_cache() -> dict[str, Any]:
    from llmscope.loading.conversion_cache import folder_size
    from llmscope.loading.loader import embedded_gguf_path, gguf_entry_for, resolve_model_spec

    out: dict[str, Any] = {}
    for mode in ("auto", "none"):
        argv = _llmscope("next-token", PROMPT, "-k", "3", "--json", "--quantize", mode, "-q")
        run_measured(argv)  # warm the cache entry first
        document, peak, wall = run_measured(argv)
        out[mode] = {"peak_rss": peak, "wall_s": wall,
                     "load_s": document["model_info"]["load_seconds"] if document else None,
                     "top": document["steps"][0]["top"][0] if document else None,
                     "entry_bytes": folder_size(gguf_entry_for(resolve_model_spec(None), mode))}
    out["gguf_bytes"] = embedded_gguf_path().stat().st_size
    return out


def big_model(path: Path) -> dict[str, Any]:
    """next-token and generate -n 16 on the 8B-shaped file (written first if missing), and the planner's figure."""
    if not path.exists():
        subprocess.run([sys.executable, str(HERE / "big_gguf.py"), str(path)], check=True)
    out: dict[str, Any] = {"file_bytes": path.stat().st_size}
    first, peak, wall = run_measured(_llmscope("next-token", PROMPT, "-m", str(path), "-k", "3", "--json", "-q"))
    out["first_load"] = {"peak_rss": peak, "wall_s": wall, "load_s": first and first["model_info"]["load_seconds"]}
    again, peak, wall = run_measured(_llmscope("next-token", PROMPT, "-m", str(path), "-k", "3", "--json", "-q"))
    out["next_token"] = {"peak_rss": peak, "wall_s": wall, "load_s": again and again["model_info"]["load_seconds"],
                         "weights": again and again["model_info"]["weights"]}
    generated, peak, wall = run_measured(_llmscope("generate", PROMPT, "-m", str(path), "-n", "16", "--json", "-q"))
    out["generate"] = {"peak_rss": peak, "wall_s": wall,
                       "decode_tok_s": generated and generated["timings"]["decode_tokens_per_s"],
                       "prompt_tok_s": generated and generated["timings"]["prompt_tokens_per_s"]}
    plan, _, _ = run_measured(_llmscope("architecture", "-m", str(path), "--context", "64", "--json", "-q"))
    if plan:
        predicted = plan["plan"]["rows"][0]["total_bytes"]
        out["plan"] = {"predicted_bytes": predicted, "weights_format": plan["plan"]["weights_format"],
                       "error_vs_next_token_peak": predicted / out["next_token"]["peak_rss"] - 1}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--big", type=Path, default=None, help="the 8B-shaped GGUF (written if missing)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"load_average": os.getloadavg()[0], "targets": TARGETS}
    print("memory and cache entries ...", file=sys.stderr)
    report["memory"] = memory_and_cache()
    print("decode speed (one thread, interleaved) ...", file=sys.stderr)
    report["decode"] = decode_speed(args.rounds, args.new_tokens)
    print("KL and top-1 against --quantize none ...", file=sys.stderr)
    report["quality"] = quality()
    if args.big:
        print(f"8B-shaped model {args.big} ...", file=sys.stderr)
        report["big"] = big_model(args.big)
    decode, memory, quality_ = report["decode"], report["memory"], report["quality"]
    lines = [
        f"decode, 1 thread: auto {decode['tok_s']['auto']:.1f} tok/s, none {decode['tok_s']['none']:.1f} tok/s: "
        f"{decode['ratio']:.2f}x (target >= {TARGETS['decode_ratio']}x); "
        f"{decode['tok_s']['auto'] / TARGETS['llama_cpp_tok_s']:.2f} of llama.cpp's ~146 tok/s (target >= 0.5)",
        f"bandwidth {decode['bandwidth_gb_s']:.1f} GB/s: the 4-bit limit is "
        f"{decode['bandwidth_limit_tok_s']['auto']:.0f} tok/s; auto reaches {decode['fraction_of_limit']['auto']:.0%}",
        f"next-token peak RSS: auto {memory['auto']['peak_rss'] / 2**20:.0f} MiB, none "
        f"{memory['none']['peak_rss'] / 2**20:.0f} MiB ({memory['auto']['peak_rss'] / memory['none']['peak_rss']:.2f}"
        f"x; target <= 0.5x)",
        f"cache entry: auto {memory['auto']['entry_bytes'] / 2**20:.0f} MiB = "
        f"{memory['auto']['entry_bytes'] / memory['gguf_bytes']:.2f}x the GGUF (target <= 1.5x); none "
        f"{memory['none']['entry_bytes'] / 2**20:.0f} MiB",
        f"against none on {quality_['tokens']} tokens: KL mean {quality_['kl_mean']:.5f} nats (target <= 0.005), "
        f"top-1 {quality_['top1_percent']:.1f}% (target >= 97%), perplexity {quality_['perplexity_auto']:.3f} vs "
        f"{quality_['perplexity_none']:.3f}",
    ]
    if "big" in report:
        big = report["big"]
        lines.append(f"8B-shaped ({big['file_bytes'] / 2**30:.2f} GiB): next-token peak RSS "
                     f"{big['next_token']['peak_rss'] / 2**30:.2f} GiB (target <= 7), load "
                     f"{big['next_token']['load_s']} s from the cache ({big['first_load']['load_s']} s packing, peak "
                     f"{big['first_load']['peak_rss'] / 2**30:.2f} GiB); generate -n 16: "
                     f"{big['generate']['decode_tok_s']} tok/s decode")
        if "plan" in big:
            lines.append(f"planner: {big['plan']['predicted_bytes'] / 2**30:.2f} GiB predicted, "
                         f"{big['plan']['error_vs_next_token_peak']:+.1%} against the measured peak (target 10%)")
    print("\n".join(lines))
    print(json.dumps(report, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
