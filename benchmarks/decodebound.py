"""What bounds float32 decode on the CPU: one decode step of the model beside the matrix-vector products it is made
of (each weight shape timed over the model's own tensors in turn), the matvec bandwidth, and the one layout change
measured to help (the LM head's weight stored transposed), with how far its logits move. It changes nothing.

    .venv/bin/python benchmarks/decodebound.py [--model SPEC] [--threads N] [--steps 16]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter
from typing import Any


def median_seconds(fn: Any, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--steps", type=int, default=16)
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F
    from transformers import DynamicCache

    from llmscope.loading.loader import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(args.model, device="cpu", dtype="float32")
    model = loaded.model
    ids = torch.tensor([loaded.tokenizer("The capital of France is")["input_ids"]])
    unique = {id(p): p for p in model.parameters()}
    weight_bytes = sum(p.numel() * p.element_size() for p in unique.values())
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    counts = Counter(tuple(m.weight.shape) for m in linears)
    report: dict[str, Any] = {"threads": torch.get_num_threads(), "weight_bytes": weight_bytes}

    with torch.inference_mode():
        cache = DynamicCache(config=model.config)
        out = model(ids, past_key_values=cache, use_cache=True)
        token = out.logits[:, -1].argmax(-1, keepdim=True)

        def step() -> None:
            nonlocal out, token
            out = model(token, past_key_values=out.past_key_values, use_cache=True)
            token = out.logits[:, -1].argmax(-1, keepdim=True)

        report["step_ms"] = median_seconds(step, args.steps) * 1000
        shapes = {}
        total = 0.0
        for shape, count in counts.items():
            # every layer's weight of this shape in turn, as a decode step reads them (not one tensor kept in cache)
            weights = [m.weight for m in linears if tuple(m.weight.shape) == shape]
            x = torch.randn(1, 1, shape[1])

            def all_of_them(ws: list[Any] = weights, v: Any = x) -> None:
                for w in ws:
                    F.linear(v, w)

            seconds = median_seconds(all_of_them, 10) / len(weights)
            shapes[f"{shape[0]}x{shape[1]}"] = {"per_step": count, "us": round(seconds * 1e6, 1),
                                                "GB_per_s": round(shape[0] * shape[1] * 4 / seconds / 1e9, 1)}
            total += seconds * count
        report["linear"] = shapes
        report["linear_ms_per_step"] = total * 1000
        matrix = torch.randn(weight_bytes // 4 // 8192, 8192)
        vector = torch.randn(8192)
        report["matvec_GB_per_s"] = matrix.numel() * 4 / median_seconds(lambda: torch.mv(matrix, vector), 10) / 1e9
        report["limit_ms"] = weight_bytes / (report["matvec_GB_per_s"] * 1e9) * 1000
        head = model.get_output_embeddings().weight
        hidden = torch.randn(1, 1, head.shape[1])
        transposed = head.t().contiguous()
        report["lm_head_us"] = median_seconds(lambda: F.linear(hidden, head), 30) * 1e6
        report["lm_head_transposed_us"] = median_seconds(lambda: hidden @ transposed, 30) * 1e6
        report["lm_head_transposed_max_abs_diff"] = float((F.linear(hidden, head) - hidden @ transposed).abs().max())
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
