"""Glue between the server's requests and the library: chat messages as an EncodedPrompt (with the library's
context checks) and the prompt's own log-probabilities for `echo` (the scoring module's forward passes).
It holds no state and speaks no HTTP."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmscope.server.openai_shapes import TokenLogprob

if TYPE_CHECKING:
    from llmscope.generation.prompts import EncodedPrompt
    from llmscope.loading.loader import LoadedModel


def encode_messages(loaded: LoadedModel, messages: tuple[tuple[str, str], ...], new_tokens: int) -> EncodedPrompt:
    """Chat messages through the tokenizer's template (with the assistant's turn opened), checked like a prompt."""
    from llmscope.core.errors import UsageError
    from llmscope.generation.prompts import EncodedPrompt, check_ids_fit, check_lengths
    from llmscope.loading.tokenization import has_chat_template

    tokenizer = loaded.tokenizer
    if not has_chat_template(tokenizer):
        raise UsageError("the model has no chat template", hint="use /v1/completions with a raw prompt")
    text = tokenizer.apply_chat_template([{"role": r, "content": c} for r, c in messages],
                                         add_generation_prompt=True, tokenize=False)
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    check_lengths(loaded.model.config, len(ids), new_tokens, "max_tokens")
    check_ids_fit(loaded.model, ids)
    last_user = next((c for r, c in reversed(messages) if r == "user"), messages[-1][1])
    return EncodedPrompt(prompt=last_user, text=text, ids=tuple(ids), chat=True)


def prompt_logprobs(loaded: LoadedModel, ids: tuple[int, ...], alternatives: int) -> list[TokenLogprob]:
    """Each prompt token's log-probability given the tokens before it (None for the first) and its top
    alternatives, from scoring's teacher-forced forward passes (a sliding window past the context)."""
    import torch

    from llmscope.inspection.scoring import logprob_chunks, token_figures

    tokenizer = loaded.tokenizer
    first = TokenLogprob(text=tokenizer.decode([ids[0]]), logprob=None, top=None, token_id=ids[0])
    if len(ids) < 2:
        return [first]
    out = [first]
    for chunk in logprob_chunks(loaded, ids, prompt_windows(loaded, len(ids))):
        figures = token_figures(chunk.logprobs, [ids[p] for p in chunk.targets])
        tops: list[Any] = [()] * len(chunk.targets)
        top_ids: list[Any] = [()] * len(chunk.targets)
        if alternatives:
            values, indices = torch.topk(chunk.logprobs, min(alternatives, chunk.logprobs.shape[-1]))
            tops = [tuple((tokenizer.decode([i]), v) for v, i in zip(vs, is_))
                    for vs, is_ in zip(values.tolist(), indices.tolist())]
            top_ids = [tuple(row) for row in indices.tolist()]
        for row, position in enumerate(chunk.targets):
            out.append(TokenLogprob(text=tokenizer.decode([ids[position]]), logprob=figures.logprobs[row],
                                    top=tops[row], token_id=ids[position], rank=figures.ranks[row],
                                    top_ids=top_ids[row]))
    return out


def prompt_windows(loaded: LoadedModel, length: int) -> list[tuple[int, int, int]]:
    """The windows [begin, end, first target] that score a prompt of `length` tokens from its second token on (a
    sliding window past the model's context, as score slides it)."""
    from llmscope.inspection.scoring import ScoreSettings, resolve_window, window_plan

    window, stride = resolve_window(loaded, ScoreSettings(), length)
    return window_plan(length, 1, window, stride)
