"""`llmscope explore` measured in a real browser: after the page has loaded, how long a typed prompt takes to show
its tokens, next-token bars and attention grid (the page's own performance.now() from Enter to the three panels
drawn), over several prompts; target under 2 s each. Also saves the page's screenshots at 1280 and 390 px wide.
Run from the repository root:
  .venv/bin/python benchmarks/explore_bench.py [--model M] [--url URL] [--screenshots docs/]
With --url it measures a page already served (`llmscope explore`); otherwise it starts one on a free port. It needs
Playwright and Debian's chromium (docs/explore.md), prints a table and ends stdout with one JSON document."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import bench_env, load_average, machine, median

PROMPTS = ("The capital of France is", "Attention heads share keys and values in grouped-query attention, so",
           "def fibonacci(n):\n    return", "The quick brown fox jumps over the lazy", "Paris is the capital of")
TARGET_SECONDS = 2.0
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def start(model_args: list[str]) -> tuple[subprocess.Popen[str], str]:
    """`llmscope explore` on a free port of 127.0.0.1; returns once it prints its page's address."""
    argv = [sys.executable, "-m", "llmscope", "explore", "--port", "0", *model_args]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=bench_env())
    assert process.stderr is not None
    for line in process.stderr:
        if line.startswith("explore at "):
            threading.Thread(target=process.stderr.read, daemon=True).start()
            return process, line.split("explore at ", 1)[1].strip()
        sys.stderr.write(line)
    raise RuntimeError(f"explore exited with {process.wait()} before listening")


def measure(url: str, prompts: tuple[str, ...], screenshots: Path | None) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        raise SystemExit("no chromium: apt-get install chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.goto(url, timeout=600_000)
        page.wait_for_selector("body[data-done]", timeout=600_000)  # the page's first run (its default prompt)
        page.wait_for_selector("#architecture[data-ready='1']", timeout=600_000)
        runs = []
        for prompt in prompts:
            before = page.get_attribute("body", "data-run")
            page.fill("#prompt", prompt)
            page.press("#prompt", "Enter")
            page.wait_for_function("before => document.body.dataset.run !== before && "
                                   "document.body.dataset.ready === document.body.dataset.run", arg=before,
                                   timeout=600_000)
            timing = page.evaluate("window.llmscopeExplore.timings.at(-1)")
            tokens = page.locator("#tokens .chip").count()
            runs.append({"prompt": prompt, "tokens": tokens, "seconds": timing["tokens_bars_attention_ms"] / 1000})
            page.wait_for_function("() => document.body.dataset.done === document.body.dataset.run",
                                   timeout=600_000)  # let the rest finish too
        if screenshots is not None:
            page.fill("#prompt", prompts[0])
            before = page.get_attribute("body", "data-run")
            page.press("#prompt", "Enter")
            page.wait_for_function("before => document.body.dataset.done === document.body.dataset.run && "
                                   "document.body.dataset.run !== before", arg=before, timeout=600_000)
            page.fill("#temperature", "0.7")
            page.wait_for_selector("#decoding[data-temperature='0.7'][data-ready='1']", timeout=600_000)
            page.click("#attribute")
            page.wait_for_selector("#attribution[data-ready='1']", timeout=600_000)
            page.click(".head-thumb[data-layer='3'][data-head='0']")
            page.wait_for_selector("#matrix[data-layer='3']", timeout=60_000)
            page.wait_for_selector("#head-steps[data-layer='3'][data-head='0'][data-ready='1']", timeout=600_000)
            page.evaluate("window.scrollTo(0, 0)")
            screenshots.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshots / "explore-1280.png"), full_page=True)
            page.set_viewport_size({"width": 390, "height": 844})
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=str(screenshots / "explore-390.png"), full_page=False)
        browser.close()
    return {"runs": runs, "console_errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", "-m", help="model (default: the embedded SmolLM2-135M)")
    parser.add_argument("--quantize", default=None, help="passed to llmscope explore")
    parser.add_argument("--url", help="measure this page (…/explore) instead of starting a server")
    parser.add_argument("--screenshots", type=Path, help="save explore-1280.png and explore-390.png here")
    args = parser.parse_args()
    process = None
    url = args.url
    if url is None:
        model_args = (["-m", args.model] if args.model else []) + (["--quantize", args.quantize] if args.quantize
                                                                   else [])
        process, url = start(model_args)
    try:
        figures = measure(url, PROMPTS, args.screenshots)
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=120)
    seconds = [run["seconds"] for run in figures["runs"]]
    for run in figures["runs"]:
        print(f"{run['seconds']:6.3f} s  {run['tokens']:3d} tokens  {run['prompt']!r}")
    worst = max(seconds)
    print(f"median {median(seconds):.3f} s, worst {worst:.3f} s (target < {TARGET_SECONDS} s); load average "
          f"{load_average()}; console errors: {len(figures['console_errors'])}")
    print(json.dumps({"benchmark": "explore", "url": url, "runs": figures["runs"], "median_s": median(seconds),
                      "worst_s": worst, "target_s": TARGET_SECONDS, "met": worst < TARGET_SECONDS,
                      "console_errors": figures["console_errors"], "machine": machine()}, separators=(",", ":")))


if __name__ == "__main__":
    main()
