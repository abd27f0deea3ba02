"""`llmscope serve` under a hostile client, measured in one run on one model (default: the embedded SmolLM2-135M):
  1. /health latency (worst and p99 of back-to-back calls) while one request's 640 kB prompt is tokenized;
     target: every /health answered within 1 s;
  2. SIGTERM while a long score runs, with --shutdown-timeout T: seconds until the score's request gets its 503
     and until the process exits; targets: the 503 at T (+0.5 s), the exit within T + 30 s (one chunk's pass).
Run from the repository root:  .venv/bin/python benchmarks/serve_hostile.py [--quantize none] [--shutdown-timeout 5]
It prints a table and ends stdout with one compact JSON document. It sends traffic to 127.0.0.1 only."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_bench import start


def post_status(url: str, body: dict[str, Any]) -> int:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=900) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        error.read()
        return error.code


def health_under_tokenizing(url: str, prompt_bytes: int) -> dict[str, Any]:
    """Back-to-back /health calls for as long as one request with a huge prompt is being tokenized (and refused)."""
    prompt = "The capital of France is Paris. " * (prompt_bytes // 32)
    out: dict[str, Any] = {}

    def big() -> None:
        started = time.perf_counter()
        out["status"] = post_status(url + "/v1/completions", {"prompt": prompt, "max_tokens": 1})
        out["seconds"] = time.perf_counter() - started

    thread = threading.Thread(target=big)
    thread.start()
    latencies = []
    while thread.is_alive():
        started = time.perf_counter()
        with urllib.request.urlopen(url + "/health", timeout=600) as response:
            response.read()
        latencies.append(time.perf_counter() - started)
    thread.join()
    latencies.sort()
    return {"prompt_bytes": len(prompt), "big_request_status": out["status"], "big_request_s": out["seconds"],
            "health_calls": len(latencies), "health_worst_s": latencies[-1] if latencies else None,
            "health_p99_s": latencies[int(0.99 * (len(latencies) - 1))] if latencies else None,
            "health_median_s": statistics.median(latencies) if latencies else None}


def sigterm_during_score(model_args: list[str], shutdown_timeout: float) -> dict[str, Any]:
    """A score of many windows, SIGTERM once it has started: when its request is answered, when the server exits."""
    process, url = start([*model_args, "--shutdown-timeout", str(shutdown_timeout)], 8)
    body = {"text": "The capital of France is Paris. " * 1000, "options": {"window": 256, "stride": 128}}
    out: dict[str, Any] = {}

    def score() -> None:
        out["status"] = post_status(url + "/llmscope/v1/score", body)
        out["answered_at"] = time.perf_counter()

    thread = threading.Thread(target=score)
    thread.start()
    while json.loads(urllib.request.urlopen(url + "/health", timeout=600).read())["requests"] == 0:
        time.sleep(0.05)  # polling the server's own counter: the score job has been handed to the model
    signalled = time.perf_counter()
    process.terminate()
    code = process.wait(timeout=900)
    exited = time.perf_counter() - signalled
    thread.join()
    return {"shutdown_timeout_s": shutdown_timeout, "score_status": out["status"],
            "answered_after_s": out["answered_at"] - signalled, "exited_after_s": exited, "exit_code": code}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model (default: the embedded one)")
    parser.add_argument("--quantize", default="none")
    parser.add_argument("--prompt-bytes", type=int, default=640_000,
                        help="the prompt's size: the default is about the most that passes the character check "
                        "(8192 tokens x the embedded model's longest token, 81 characters), so it is tokenized")
    parser.add_argument("--shutdown-timeout", type=float, default=5.0)
    options = parser.parse_args()
    model_args = (["-m", options.model] if options.model else []) + ["--quantize", options.quantize]

    process, url = start(model_args, 8)
    try:
        health = health_under_tokenizing(url, options.prompt_bytes)
    finally:
        process.terminate()
        process.wait(timeout=120)
    shutdown = sigterm_during_score(model_args, options.shutdown_timeout)
    met_health = health["health_worst_s"] is not None and health["health_worst_s"] < 1.0
    met_503 = abs(shutdown["answered_after_s"] - options.shutdown_timeout) <= 0.5 and shutdown["score_status"] == 503
    print(f"/health while a {health['prompt_bytes']:,}-byte prompt is tokenized ({health['big_request_s']:.1f} s, "
          f"answered {health['big_request_status']}): {health['health_calls']} calls, median "
          f"{health['health_median_s']:.3f} s, p99 {health['health_p99_s']:.3f} s, "
          f"worst {health['health_worst_s']:.3f} s "
          f"(target < 1 s: {'met' if met_health else 'MISSED'})")
    print(f"SIGTERM during a score, --shutdown-timeout {options.shutdown_timeout:g}: answered "
          f"{shutdown['score_status']} after {shutdown['answered_after_s']:.2f} s (target {options.shutdown_timeout:g} "
          f"s: {'met' if met_503 else 'MISSED'}), exited {shutdown['exit_code']} after "
          f"{shutdown['exited_after_s']:.2f} s")
    print(json.dumps({"quantize": options.quantize, "health": health, "shutdown": shutdown}))


if __name__ == "__main__":
    main()
