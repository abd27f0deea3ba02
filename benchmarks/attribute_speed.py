"""How fast integrated gradients (attribute's library function, Captum) runs on a 20-token prompt after loading, at
the default 32 steps, beside the raw cost of the same batched forward + backward passes, taking turns. Target: 3 s.
The completeness error at those steps is printed too (the command doubles the steps when it is over 1%).

    .venv/bin/python benchmarks/attribute_speed.py [--tokens 20] [--repeat 3] [--quantize none] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

PROMPT = ("The Eiffel Tower stands in the city of Paris, which is the capital of France, and the Colosseum stands "
          "in the city of")
TARGET_SECONDS = 3.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model spec (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--tokens", type=int, default=20, help="prompt tokens (the prompt above, cut)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quantize", default="none", help="none (float32, the default here) | auto | int8 | int4")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from llmscope.attribution.attribute import plan_targets
    from llmscope.attribution.methods import (
        TOKENS_PER_PASS,
        baseline_embeddings,
        embedding_function,
        gradients_through,
        input_embeddings,
        integrate,
    )
    from llmscope.attribution.results import AttributionTarget
    from llmscope.attribution.settings import DEFAULT_BASELINE, DEFAULT_STEPS, AttributionSettings
    from llmscope.loading.loader import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(args.model, device="cpu", dtype="float32", quantize=args.quantize)
    ids = tuple(loaded.tokenizer(PROMPT, add_special_tokens=False)["input_ids"][: args.tokens])
    (token, *_), _, _ = plan_targets(loaded, list(ids), AttributionSettings())
    target = AttributionTarget(position=len(ids), token_id=token, text=loaded.tokenizer.decode([token]), logprob=0.0)
    steps = DEFAULT_STEPS
    x = input_embeddings(loaded, ids)
    baseline = baseline_embeddings(loaded, x, DEFAULT_BASELINE)
    function = embedding_function(loaded, target)
    per_pass = max(1, TOKENS_PER_PASS // x.shape[1])

    def ours_once() -> tuple[float, float]:  # the library's integrated gradients at the default steps (Captum)
        with gradients_through(loaded.model):
            _, total, expected = integrate(loaded, target, x, baseline, steps)
        return total, expected

    def raw_passes() -> None:  # the integral's passes alone: no Captum, no baseline, no bookkeeping
        with gradients_through(loaded.model):
            for start in range(0, steps, per_pass):
                points = x.expand(min(per_pass, steps - start), -1, -1).clone().requires_grad_(True)
                torch.autograd.grad(function(points).sum(), points)

    total, expected = ours_once()  # warm-up
    error = abs(total - expected) / max(abs(expected), 1e-12)
    ours, raw = [], []
    for round_ in range(args.repeat):
        for which in ((0, 1) if round_ % 2 == 0 else (1, 0)):  # take turns, so that machine load hits both
            started = time.perf_counter()
            if which == 0:
                ours_once()
                ours.append(time.perf_counter() - started)
            else:
                raw_passes()
                raw.append(time.perf_counter() - started)
    seconds = statistics.median(ours)
    figures = {
        "model": loaded.spec.name, "quantize": args.quantize, "threads": torch.get_num_threads(),
        "prompt_tokens": len(ids), "target": target.text, "steps": steps, "completeness_error": error,
        "seconds": seconds, "raw_passes_seconds": statistics.median(raw),
        "overhead": seconds / statistics.median(raw), "target_seconds": TARGET_SECONDS,
        "meets_target": seconds <= TARGET_SECONDS, "runs": ours,
    }
    print(f"integrated gradients, {len(ids)} tokens, {steps} steps (completeness error "
          f"{error:.2%}): {seconds:.2f} s after load (target {TARGET_SECONDS:.0f} s; the raw "
          f"forward + backward passes alone {statistics.median(raw):.2f} s)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
