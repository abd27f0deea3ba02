"""What batch/cache invariance costs: prefill and decode tok/s of the embedded model with the loader's invariant
numerics and without them (SDPA attention, plain GEMMs), per --quantize mode, interleaved in one run at one thread.

    python benchmarks/invariance_cost.py [--modes auto,none] [--rounds 3] [--new-tokens 32] [--threads 1]

Ratios from one run are what to trust on a shared machine; the last stdout line is one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# A paragraph written for this benchmark (about 135 tokens with the embedded tokenizer); no test reads it.
PROMPT = (
    "On the morning of the fair the square filled slowly. The baker arrived first, carrying trays of bread still "
    "warm from the oven, and set them out under a striped awning. Then came the woman who sold honey in small "
    "glass jars, each one labelled by hand with the name of a flower. Children ran between the stalls, chasing a "
    "dog that had stolen a sausage, while their parents compared the price of apples and argued about the weather. "
    "By noon the band had tuned its instruments, the mayor had given a short speech that nobody heard, and the "
    "smell of roasting chestnuts drifted over the rooftops toward the river and the old mill beyond it."
)


def _median_rate(samples: list[float], tokens: int) -> float:
    return tokens / statistics.median(samples)


def run(modes: list[str], rounds: int, new_tokens: int, threads: int) -> dict[str, Any]:
    import torch

    from llmscope.generation.decoding import decode_steps, prompt_batch
    from llmscope.loading.loader import load_model

    torch.set_num_threads(threads)
    loaded = {(mode, invariant): load_model(None, device="cpu", quantize=mode, invariant=invariant)
              for mode in modes for invariant in (False, True)}
    any_model = next(iter(loaded.values()))
    ids = any_model.tokenizer(PROMPT)["input_ids"]
    batch = prompt_batch([ids], 0, "cpu")
    prefill: dict[Any, list[float]] = {key: [] for key in loaded}
    decode: dict[Any, list[float]] = {key: [] for key in loaded}
    for _ in range(rounds + 1):  # the first round warms up and is dropped
        for key, model in loaded.items():
            with torch.inference_mode():
                started = time.perf_counter()
                model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                            position_ids=batch.position_ids, use_cache=False, logits_to_keep=1)
                prefill[key].append(time.perf_counter() - started)
            steps = list(decode_steps(model.model, batch, new_tokens + 1))
            decode[key].append(sum(step.seconds for step in steps[1:]))
    for key in loaded:
        prefill[key], decode[key] = prefill[key][1:], decode[key][1:]
    rows = []
    for mode in modes:
        plain, exact = (mode, False), (mode, True)
        row = {"mode": mode,
               "prefill_tok_s": {"plain": _median_rate(prefill[plain], len(ids)),
                                 "invariant": _median_rate(prefill[exact], len(ids))},
               "decode_tok_s": {"plain": _median_rate(decode[plain], new_tokens),
                                "invariant": _median_rate(decode[exact], new_tokens)}}
        row["prefill_ratio"] = row["prefill_tok_s"]["invariant"] / row["prefill_tok_s"]["plain"]
        row["decode_ratio"] = row["decode_tok_s"]["invariant"] / row["decode_tok_s"]["plain"]
        rows.append(row)
    return {"prompt_tokens": len(ids), "new_tokens": new_tokens, "rounds": rounds, "threads": threads,
            "load_average": os.getloadavg()[0], "results": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="auto,none")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    options = parser.parse_args()
    report = run(options.modes.split(","), options.rounds, options.new_tokens, options.threads)
    for row in report["results"]:
        print(f"{row['mode']:>5}: prefill {row['prefill_tok_s']['plain']:7.1f} -> "
              f"{row['prefill_tok_s']['invariant']:7.1f} tok/s (x{row['prefill_ratio']:.2f}); "
              f"decode {row['decode_tok_s']['plain']:6.1f} -> "
              f"{row['decode_tok_s']['invariant']:6.1f} tok/s (x{row['decode_ratio']:.2f})", file=sys.stderr)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
