"""Decode and prompt speed of llmscope's default packed path (--quantize auto), its float32 path (none) and llama.cpp
on the same GGUF, at 1 and 2 threads, quiet and with one busy process per core, interleaved in one run.

    python benchmarks/vs_llamacpp.py --quick     # under 3 minutes on a 2-core machine
    python benchmarks/vs_llamacpp.py             # more rounds and a longer decode
    python benchmarks/vs_llamacpp.py --model /path/file.gguf --threads 1,2,4 --json-out /tmp/vs.json
    python benchmarks/vs_llamacpp.py --quick --with-spinning   # also auto with spinning OpenMP threads (the old way)

llama.cpp runs through node-llama-cpp (its prebuilt binaries are npm packages). This script installs nothing;
to include llama.cpp, install it once, anywhere, and say where:
    npm install --prefix ~/.cache/llmscope-bench/node-llama-cpp node-llama-cpp@3.22.1
    python benchmarks/vs_llamacpp.py --node-llama-cpp ~/.cache/llmscope-bench/node-llama-cpp
(or set LLMSCOPE_NODE_LLAMA_CPP); the script writes its small worker, llmscope-bench-worker.mjs, into that
folder. Without it, or without node, the llama.cpp columns are skipped with a message.

Each engine lives in its own long-running worker process (model loaded once, one warm-up run per thread count),
and the rounds visit every (threads, load, engine) cell in turn, rotating the engine order, so slow drifts of a
shared machine hit every column alike. "busy" runs one spinning process per core beside the worker. Figures are
medians over the rounds; ratios come from the same run. Timings are never asserted by tests.
Decode tok/s = (new tokens - 1) / time after the first new token; prompt tok/s = prompt tokens / time to the first
new token (prompt processing plus one sampling step), for every engine alike.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PACKAGE_NAME = "node-llama-cpp"
# Written for this benchmark (about 135 tokens with the embedded model's tokenizer); no test reads it.
PROMPT = (
    "The lighthouse keeper kept a logbook on the desk by the window. Every evening he wrote down the wind, the "
    "height of the waves, the ships that passed and the birds that rested on the railing. Most entries were short: "
    "calm sea, two fishing boats, gulls. Some were longer, like the night a cargo ship lost power near the rocks "
    "and drifted for an hour before the tugboats arrived. He never wrote about himself, only about the water and "
    "the light. When the lighthouse was automated, the logbooks went to the town museum, where visitors read them "
    "and tried to imagine the man behind the careful handwriting. Years later, his"
)
TARGETS = {"decode_auto_over_none_1t": 2.0, "prompt_auto_over_none": 1.0, "decode_auto_over_llama_1t": 0.5,
           "busy_over_quiet": 0.33}
ENGINES = ("auto", "none", "llama.cpp", "auto-spin")  # auto-spin: auto with OMP_WAIT_POLICY=ACTIVE (--with-spinning)

NODE_WORKER = r"""
import readline from "readline";
import {getLlama} from "node-llama-cpp";
await (async () => {
  const [modelPath, prompt] = [process.argv[2], process.argv[3]];
  const llama = await getLlama({gpu: false, maxThreads: 0, logLevel: "error"});
  const model = await llama.loadModel({modelPath, gpuLayers: 0});
  const tokens = model.tokenize(prompt);
  const lines = readline.createInterface({input: process.stdin});
  console.log(JSON.stringify({ready: true, prompt_tokens: tokens.length}));
  for await (const line of lines) {
    const {threads, new_tokens} = JSON.parse(line);
    const context = await model.createContext({contextSize: 1024, batchSize: 512, threads: {ideal: threads,
                                                                                             min: threads}});
    const sequence = context.getSequence();
    const started = performance.now();
    let first = 0, count = 0;
    for await (const token of sequence.evaluate(tokens, {temperature: 0})) {
      count += 1;
      if (count === 1) first = performance.now();
      if (count >= new_tokens) break;
    }
    const done = performance.now();
    await context.dispose();
    console.log(JSON.stringify({prompt_tokens: tokens.length, new_tokens: count,
                                prompt_tok_s: tokens.length / ((first - started) / 1000),
                                decode_tok_s: count > 1 ? (count - 1) / ((done - first) / 1000) : null}));
  }
})().catch((error) => { console.log(JSON.stringify({error: String(error)})); process.exit(1); });
"""


# -------------------------------------------------------------------------------------- workers


def llmscope_worker(mode: str, model: str | None) -> None:
    """Serve measurement requests on stdin/stdout: load the model once, then one generate() per request line."""
    sys.path.insert(0, str(ROOT))
    importlib.import_module("llmscope")  # before torch, as the CLI does (it sets torch's thread wait policy)
    import torch

    from llmscope.core.command_settings import GenerationSettings
    from llmscope.generation.generate import generate
    from llmscope.loading.loader import load_model

    loaded = load_model(model, device="cpu", dtype="float32", quantize=mode)
    prompt_tokens = len(loaded.tokenizer(PROMPT).input_ids)
    print(json.dumps({"ready": True, "prompt_tokens": prompt_tokens, "weights": loaded.info.weights}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        torch.set_num_threads(request["threads"])
        result = generate(loaded, PROMPT, GenerationSettings(max_new_tokens=request["new_tokens"]))
        print(json.dumps({"prompt_tokens": prompt_tokens, "new_tokens": len(result.token_ids),
                          "prompt_tok_s": result.prompt_tokens_per_s, "decode_tok_s": result.decode_tokens_per_s,
                          "text": result.text}), flush=True)


class Worker:
    """One engine's worker process; ask() sends a request line and waits for its answer line."""

    def __init__(self, name: str, argv: list[str], cwd: Path | None = None,
                 extra_env: dict[str, str] | None = None) -> None:
        self.name = name
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), **(extra_env or {})}
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=cwd,
                                        env=env, bufsize=1)
        self.hello = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        while True:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"the {self.name} worker exited ({self.process.wait()})")
            if line.startswith("{"):
                answer = json.loads(line)
                if "error" in answer:
                    raise RuntimeError(f"{self.name}: {answer['error']}")
                return answer

    def ask(self, threads: int, new_tokens: int) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"threads": threads, "new_tokens": new_tokens}) + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def node_llama_cpp_dir(asked: str | None) -> tuple[Path | None, str]:
    """Where node-llama-cpp is installed, or None with the reason it cannot be used."""
    folder = asked or os.environ.get("LLMSCOPE_NODE_LLAMA_CPP")
    if not folder:
        return None, "no --node-llama-cpp DIR (or LLMSCOPE_NODE_LLAMA_CPP); see this script's docstring"
    if shutil.which("node") is None:
        return None, "node is not on PATH"
    path = Path(folder).expanduser()
    if not (path / "node_modules" / PACKAGE_NAME / "package.json").is_file():
        return None, f"{path} has no node_modules/{PACKAGE_NAME} (npm install --prefix {path} node-llama-cpp@3.22.1)"
    return path, ""


def start_workers(workers: dict[str, Worker], model: str | None, gguf: Path, node_dir: Path | None,
                  spinning: bool = False) -> None:
    """Start each engine's worker into `workers` (the caller closes them, also when one fails to start)."""
    for name in ("auto", "none") + (("auto-spin",) if spinning else ()):
        argv = [sys.executable, str(Path(__file__).resolve()), "--worker", name.removesuffix("-spin")]
        extra = {"OMP_WAIT_POLICY": "ACTIVE"} if name.endswith("-spin") else None
        workers[name] = Worker(name, argv + (["--model", model] if model else []), extra_env=extra)
    if node_dir is not None:
        script = node_dir / "llmscope-bench-worker.mjs"
        script.write_text(NODE_WORKER)
        workers["llama.cpp"] = Worker("llama.cpp", ["node", str(script), str(gguf), PROMPT], cwd=node_dir)


# -------------------------------------------------------------------------------------- load


class BusyCores:
    """One spinning process per core while inside the with block."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.processes: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> BusyCores:
        self.processes = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.count)]
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self.processes:
            process.kill()
        for process in self.processes:
            process.wait()


# -------------------------------------------------------------------------------------- run


def measure(workers: dict[str, Worker], threads: list[int], rounds: int, new_tokens: int,
            busy: int) -> dict[tuple[str, int, str], list[dict[str, Any]]]:
    cells: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    names = list(workers)
    for count in threads:  # warm-up: each engine's first run at each thread count is not timed
        for worker in workers.values():
            worker.ask(count, 4)
    for round_index in range(rounds):
        order = names[round_index % len(names):] + names[:round_index % len(names)]
        for count in threads:
            for load in ("quiet", "busy"):
                with BusyCores(busy) if load == "busy" else _quiet():
                    for name in order:
                        answer = workers[name].ask(count, new_tokens)
                        cells.setdefault((name, count, load), []).append(answer)
                        print(f"  round {round_index + 1} {count} thread(s) {load:5} {name:9} decode "
                              f"{_fmt(answer['decode_tok_s'])} tok/s, prompt {_fmt(answer['prompt_tok_s'])} tok/s",
                              file=sys.stderr)
    return cells


class _quiet:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _median(values: list[float | None]) -> float | None:
    finite = [v for v in values if v is not None]
    return statistics.median(finite) if finite else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summarize(cells: dict[tuple[str, int, str], list[dict[str, Any]]], threads: list[int],
              engines: list[str]) -> dict[str, Any]:
    speed = {f"{name}|{count}|{load}": {"decode_tok_s": _median([a["decode_tok_s"] for a in answers]),
                                        "prompt_tok_s": _median([a["prompt_tok_s"] for a in answers]),
                                        "runs": len(answers)}
             for (name, count, load), answers in cells.items()}

    def get(name: str, count: int, load: str, key: str) -> float | None:
        return speed.get(f"{name}|{count}|{load}", {}).get(key)

    checks: list[dict[str, Any]] = []

    def check(label: str, value: float | None, target: float) -> None:
        checks.append({"check": label, "value": value, "target": target,
                       "met": None if value is None else value >= target})

    first = threads[0]
    check(f"decode auto / none, {first} thread, quiet",
          _ratio(get("auto", first, "quiet", "decode_tok_s"), get("none", first, "quiet", "decode_tok_s")),
          TARGETS["decode_auto_over_none_1t"])
    for count in threads:
        check(f"prompt auto / none, {count} thread(s), quiet",
              _ratio(get("auto", count, "quiet", "prompt_tok_s"), get("none", count, "quiet", "prompt_tok_s")),
              TARGETS["prompt_auto_over_none"])
    if "llama.cpp" in engines:
        check(f"decode auto / llama.cpp, {first} thread, quiet",
              _ratio(get("auto", first, "quiet", "decode_tok_s"), get("llama.cpp", first, "quiet", "decode_tok_s")),
              TARGETS["decode_auto_over_llama_1t"])
    for count in threads:
        check(f"decode busy / quiet, auto, {count} thread(s)",
              _ratio(get("auto", count, "busy", "decode_tok_s"), get("auto", count, "quiet", "decode_tok_s")),
              TARGETS["busy_over_quiet"])
    informative = {f"{key} {name} {count}t busy/quiet": _ratio(get(name, count, "busy", key),
                                                               get(name, count, "quiet", key))
                   for name in engines for count in threads for key in ("decode_tok_s", "prompt_tok_s")}
    return {"speed": speed, "checks": checks, "other_ratios": informative}


def print_report(summary: dict[str, Any], threads: list[int], engines: list[str], context: dict[str, Any]) -> None:
    print(f"{context['cpu']}, {context['cores']} cores; load average before {context['load_before']}, "
          f"after {context['load_after']}; prompt {context['prompt_tokens']} tokens, {context['new_tokens']} new "
          f"tokens, {context['rounds']} rounds")
    header = f"{'':22}" + "".join(f"{name:>20}" for name in engines)
    for key, label in (("decode_tok_s", "decode tok/s"), ("prompt_tok_s", "prompt tok/s")):
        print(f"\n{label}")
        print(header)
        for count in threads:
            for load in ("quiet", "busy"):
                row = f"{count} thread(s), {load:5}    "
                for name in engines:
                    row += f"{_fmt(summary['speed'].get(f'{name}|{count}|{load}', {}).get(key)):>20}"
                print(row)
    print("\nchecks")
    for item in summary["checks"]:
        met = {True: "met", False: "NOT met", None: "not measured"}[item["met"]]
        value = "-" if item["value"] is None else f"{item['value']:.2f}"
        print(f"  {item['check']:45} {value:>6}  (target >= {item['target']})  {met}")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 32 new tokens (under 3 minutes)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds over every cell (default 5; quick 2)")
    parser.add_argument("--new-tokens", type=int, default=None, help="tokens per decode (default 128; quick 32)")
    parser.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    parser.add_argument("--model", default=None, help="a GGUF file (default: the embedded SmolLM2-135M)")
    parser.add_argument("--node-llama-cpp", default=None, help="folder where node-llama-cpp is npm-installed")
    parser.add_argument("--with-spinning", action="store_true",
                        help="also run auto with OMP_WAIT_POLICY=ACTIVE (spinning threads, as before issue 25; slow "
                             "when busy)")
    parser.add_argument("--json-out", type=Path, default=None, help="also write the full results here")
    parser.add_argument("--worker", choices=("auto", "none"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        llmscope_worker(args.worker, args.model)
        return 0
    rounds = args.rounds or (2 if args.quick else 5)
    new_tokens = args.new_tokens or (32 if args.quick else 128)
    threads = [int(part) for part in args.threads.split(",") if part.strip()]
    cores = os.cpu_count() or 1
    sys.path.insert(0, str(ROOT))
    from llmscope.loading.loader import embedded_gguf_path

    gguf = Path(args.model) if args.model else embedded_gguf_path()
    node_dir, why = node_llama_cpp_dir(args.node_llama_cpp)
    if node_dir is None:
        print(f"llama.cpp skipped: {why}", file=sys.stderr)
    load_before = round(os.getloadavg()[0], 2)
    started = time.perf_counter()
    print("starting workers (models load once) ...", file=sys.stderr)
    workers: dict[str, Worker] = {}
    try:
        start_workers(workers, args.model, gguf, node_dir, args.with_spinning)
        cells = measure(workers, threads, rounds, new_tokens, cores)
    finally:
        for worker in workers.values():
            worker.close()
    engines = [name for name in ENGINES if name in workers]
    summary = summarize(cells, threads, engines)
    context = {"cpu": cpu_name(), "cores": cores, "load_before": load_before,
               "load_after": round(os.getloadavg()[0], 2), "prompt_tokens": workers["auto"].hello["prompt_tokens"],
               "new_tokens": new_tokens, "rounds": rounds, "gguf": str(gguf), "seconds": time.perf_counter() - started,
               "llama_cpp": "node-llama-cpp" if node_dir else f"skipped: {why}",
               "same_text_auto_none": [a["text"] for a in cells[("auto", threads[0], "quiet")]]
               == [a["text"] for a in cells[("none", threads[0], "quiet")]]}
    print_report(summary, threads, engines, context)
    document = {"context": context, "targets": TARGETS, **summary}
    if args.json_out:
        args.json_out.write_text(json.dumps(document, indent=1))
    print(json.dumps(document))
    return 0


if __name__ == "__main__":
    sys.exit(main())
