"""`llmscope serve` and --endpoint, measured in one run on one model (default: the embedded SmolLM2-135M):
  1. one-shot `next-token PROMPT --endpoint URL --json` end to end (a fresh process per call) against the local
     one-shot `next-token PROMPT --json` (loads the model each time); target at most 0.15x;
  2. C concurrent clients x R requests (greedy /v1/completions, N tokens each) against a server that batches
     (--max-batch 8) and one that runs one request at a time (--max-batch 1): throughput, p50 / p99 latency,
     errors, and the batching speed-up.
Run from the repository root:  .venv/bin/python benchmarks/serve_bench.py [--model M] [--clients 8] [--requests 20]
It prints a table and ends stdout with one compact JSON document. It sends traffic to 127.0.0.1 only."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import bench_env, interleaved_medians, venv_command

PROMPT = "The capital of France is"


def start(model_args: list[str], max_batch: int) -> tuple[subprocess.Popen[str], str]:
    """`llmscope serve` on a free port of 127.0.0.1; returns once it prints its address."""
    argv = [sys.executable, "-m", "llmscope", "serve", "--port", "0", "--max-batch", str(max_batch), "-q", *model_args]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=bench_env())
    assert process.stderr is not None
    for line in process.stderr:
        if line.startswith("listening on "):
            threading.Thread(target=process.stderr.read, daemon=True).start()
            return process, line.split("listening on ", 1)[1].strip()
    raise RuntimeError(f"serve exited with {process.wait()} before listening")


def stop(process: subprocess.Popen[str]) -> int:
    process.terminate()
    return process.wait(timeout=120)


def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.loads(response.read())


def load_test(url: str, clients: int, requests: int, tokens: int) -> dict[str, Any]:
    """clients threads, each sending `requests` greedy completions one after another."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(number: int) -> None:
        for index in range(requests):
            started = time.perf_counter()
            try:
                post(url + "/v1/completions", {"prompt": f"{PROMPT} (client {number}, request {index})",
                                               "max_tokens": tokens, "temperature": 0})
                with lock:
                    latencies.append(time.perf_counter() - started)
            except Exception as error:  # counted, not raised: the figure is how many failed
                with lock:
                    errors.append(f"{type(error).__name__}: {error}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    ordered = sorted(latencies)
    health = json.loads(urllib.request.urlopen(url + "/health", timeout=60).read())
    return {"requests": clients * requests, "ok": len(latencies), "errors": len(errors),
            "first_error": errors[0] if errors else None, "seconds": wall,
            "requests_per_s": len(latencies) / wall if wall else None,
            "tokens_per_s": len(latencies) * tokens / wall if wall else None,
            "p50_s": statistics.median(ordered) if ordered else None,
            "p99_s": ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))] if ordered else None,
            "batches": health.get("batches"), "largest_batch": health.get("largest_batch")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", "-m", default=None, help="model spec (default: the embedded model)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=20, help="requests per client")
    parser.add_argument("--tokens", type=int, default=8, help="new tokens per request")
    parser.add_argument("--repeats", type=int, default=3, help="timed one-shot calls of each kind")
    parser.add_argument("--quantize", default=None, help="the server's and the local call's --quantize")
    options = parser.parse_args()
    llmscope = venv_command("llmscope") or "llmscope"
    model_args = (["-m", options.model] if options.model else []) + (
        ["--quantize", options.quantize] if options.quantize else [])

    process, url = start(model_args, 8)
    try:
        one_shot, _ = interleaved_medians({
            "endpoint": [llmscope, "next-token", PROMPT, "--endpoint", url, "--json", "-q"],
            "local": [llmscope, "next-token", PROMPT, *model_args, "--json", "-q"],
        }, options.repeats)
        batched = load_test(url, options.clients, options.requests, options.tokens)
    finally:
        exit_batched = stop(process)
    process, url = start(model_args, 1)
    try:
        single = load_test(url, options.clients, options.requests, options.tokens)
    finally:
        exit_single = stop(process)

    ratio = one_shot["endpoint"] / one_shot["local"] if one_shot["endpoint"] and one_shot["local"] else None
    speedup = (batched["requests_per_s"] / single["requests_per_s"]
               if batched["requests_per_s"] and single["requests_per_s"] else None)
    print(f"one-shot next-token --json: --endpoint {one_shot['endpoint']:.3f} s, local {one_shot['local']:.3f} s, "
          f"ratio {ratio:.3f}x (target <= 0.15x: {'met' if ratio is not None and ratio <= 0.15 else 'MISSED'})")
    for name, figures in (("batched (--max-batch 8)", batched), ("one at a time (--max-batch 1)", single)):
        print(f"{name:<32} {figures['ok']}/{figures['requests']} ok, {figures['errors']} errors, "
              f"{figures['requests_per_s']:.2f} req/s ({figures['tokens_per_s']:.1f} tok/s), "
              f"p50 {figures['p50_s']:.3f} s, p99 {figures['p99_s']:.3f} s, {figures['batches']} batches "
              f"(largest {figures['largest_batch']})")
    print(f"batching speed-up: {speedup:.2f}x; servers exited {exit_batched} and {exit_single} on SIGTERM")
    print(json.dumps({"quantize": options.quantize, "one_shot_s": one_shot, "one_shot_ratio": ratio,
                      "clients": options.clients,
                      "requests_per_client": options.requests, "tokens": options.tokens, "batched": batched,
                      "one_at_a_time": single, "batching_speedup": speedup,
                      "exit_codes": [exit_batched, exit_single]}))


if __name__ == "__main__":
    main()
