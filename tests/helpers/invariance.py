"""The invariance checks shared by the fast and slow tiers: every real position's logits from one padded forward
pass, batches of 1, 3 and 8 in three orders against each row alone, and greedy decoding with or without the cache."""

from __future__ import annotations

import random

PROMPTS = ["The capital of France is", "Hello", "def add(a, b):\n    return", "Once upon a time there was a robot",
           "1, 2, 3,", "Attention heads share keys", "Write an email to Sarah about the weather and the trains",
           "Tokens"]


def prompt_ids(loaded, texts):
    return [loaded.tokenizer(text)["input_ids"] for text in texts]


def all_logits(loaded, rows):
    """Every real position's logits per row, from one padded forward pass (as the batch commands run it)."""
    import torch

    from llmscope.generation.decoding import pad_token_id, prompt_batch

    batch = prompt_batch(rows, pad_token_id(loaded.tokenizer), "cpu")
    with torch.inference_mode():
        logits = loaded.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                              position_ids=batch.position_ids, use_cache=False).logits
    return [logits[row, logits.shape[1] - len(ids):] for row, ids in enumerate(rows)]


def orders(count: int) -> list[list[int]]:
    forward = list(range(count))
    shuffled = forward[:]
    random.Random(1).shuffle(shuffled)
    return [forward, forward[::-1], shuffled]


def unpadded(ids: list[list[int]], length: int = 4) -> list[list[int]]:
    """Rows of one length (no padding at all): the first `length` tokens of every prompt that has as many."""
    rows = [row[:length] for row in ids if len(row) >= length]
    assert len(rows) >= 3
    return rows


def assert_batches_match_alone(loaded, ids: list[list[int]]) -> None:
    import torch

    alone = [all_logits(loaded, [row])[0] for row in ids]
    for size in (1, 3, 8):
        for order in orders(min(size, len(ids))):
            chosen = [ids[i] for i in order]
            for position, logits in zip(order, all_logits(loaded, chosen)):
                assert torch.equal(logits, alone[position]), (size, order, position)


def greedy(loaded, rows, steps: int, use_cache: bool):
    from llmscope.generation.decoding import decode_steps, pad_token_id, prompt_batch

    batch = prompt_batch(rows, pad_token_id(loaded.tokenizer), "cpu")
    tokens, logits = [[] for _ in rows], []
    for step in decode_steps(loaded.model, batch, steps, use_cache=use_cache):
        for row, token in enumerate(step.token_ids):
            tokens[row].append(token)
        logits.append(step.logits.clone())
    return tokens, logits
