"""How fast `llmscope score` scores text: seconds per 1,000 tokens beside the baseline of one raw transformers
forward pass with labels (model(ids, labels=ids)) on the same tokens, taking turns. It never changes llmscope.

    .venv/bin/python benchmarks/score_speed.py [--tokens 1024] [--repeat 5] [--window 256 --stride 128]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model spec (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--tokens", type=int, default=1024, help="tokens of text to score (from README.md)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--window", type=int, default=None)
    parser.add_argument("--stride", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from llmscope.inspection.scoring import ScoreSettings, score_text
    from llmscope.loading.loader import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(args.model, device="cpu", dtype="float32")
    ids = loaded.tokenizer((ROOT / "README.md").read_text(), add_special_tokens=False)["input_ids"][: args.tokens]
    text = loaded.tokenizer.decode(ids)
    settings = ScoreSettings(window=args.window, stride=args.stride)
    score_text(loaded, text, settings)  # warm-up
    ours, raw, result = [], [], None
    for round_ in range(args.repeat):
        for which in ((0, 1) if round_ % 2 == 0 else (1, 0)):  # take turns, so that machine load hits both
            started = time.perf_counter()
            if which == 0:
                result = score_text(loaded, text, settings)
                ours.append(time.perf_counter() - started)
            else:
                with torch.inference_mode():
                    tensor = torch.tensor([list(result.token_ids) if result else ids])
                    loss = float(loaded.model(tensor, labels=tensor).loss)
                raw.append(time.perf_counter() - started)
    assert result is not None
    per_thousand = statistics.median(ours) / result.tokens_scored * 1000
    raw_per_thousand = statistics.median(raw) / result.tokens_scored * 1000
    figures = {
        "model": loaded.spec.name, "tokens_scored": result.tokens_scored, "window": result.window,
        "stride": result.stride, "forward_passes": result.windows, "perplexity": result.perplexity,
        "raw_perplexity": math.exp(loss), "seconds_per_1000_tokens": round(per_thousand, 3),
        "raw_forward_seconds_per_1000_tokens": round(raw_per_thousand, 3),
        "ratio": round(per_thousand / raw_per_thousand, 3), "repeat": args.repeat,
        "threads": torch.get_num_threads(), "load_average": os.getloadavg(),
    }
    print(f"score: {per_thousand:.2f} s per 1,000 tokens ({result.tokens_scored} tokens, {result.windows} forward "
          f"pass(es) of up to {result.window}); raw forward with labels: {raw_per_thousand:.2f} s; "
          f"ratio {figures['ratio']:.2f}", file=sys.stderr)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
