"""Prompts as the model sees them: the chat template applied or not, the token ids, and the checks that need the
model (context length, embedding rows). It runs no forward pass and prints nothing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmscope.core.errors import UsageError
from llmscope.loading.modelconfig import context_length
from llmscope.loading.tokenization import prompt_ids

if TYPE_CHECKING:
    from llmscope.loading.loader import LoadedModel


@dataclass(frozen=True)
class EncodedPrompt:
    """One prompt ready for the model."""

    prompt: str  # as given
    text: str  # what the model reads (after the chat template)
    ids: tuple[int, ...]
    chat: bool


def check_lengths(config: Any, prompt_tokens: int, new_tokens: int = 0, budget_option: str | None = None,
                  budget_offset: int = 0, what: str = "the prompt") -> None:
    """Refuse an empty prompt, a prompt past the context, or a token budget that does not fit beside it.

    The messages name `what` (the prompt, or the option that gave the text: "--corrupt") and the option the user
    typed for the budget (budget_option, with the value typed: new_tokens + budget_offset; --steps N feeds N - 1
    new tokens back, so its offset is 1). Without budget_option they name no option: a library caller's budget has
    none, and a default would name an option that the caller's command may not have."""
    if prompt_tokens == 0:
        raise UsageError(f"{what} is empty", hint="pass some text, or - to read it from stdin")
    limit = context_length(config)
    if limit is None:
        return
    if prompt_tokens > limit:
        raise UsageError(f"{what} has {prompt_tokens} tokens but the model's context is {limit}",
                         hint=f"shorten {what}")
    if prompt_tokens + new_tokens > limit:
        fits = limit - prompt_tokens + budget_offset
        if budget_option is None:
            raise UsageError(f"{prompt_tokens} prompt tokens + {new_tokens} new tokens exceed the model's context "
                             f"of {limit}", hint=f"ask for {fits} new tokens or fewer")
        raise UsageError(f"{prompt_tokens} prompt tokens + {budget_option} {new_tokens + budget_offset} exceed the "
                         f"model's context of {limit}", hint=f"use {budget_option} {fits} or less")


def check_ids_fit(model: Any, ids: Sequence[int]) -> None:
    """Refuse token ids the embedding has no row for (a tokenizer that does not belong to its model)."""
    from llmscope.loading.quant.modules import layer_rows

    rows = layer_rows(model.get_input_embeddings())
    beyond = [i for i in ids if i >= rows]
    if beyond:
        raise UsageError(f"the tokenizer gave id {beyond[0]}, but the model's embedding has only {rows} rows",
                         hint="the tokenizer does not belong to this model")


def vocabulary_rows(loaded: LoadedModel) -> int:
    """Rows of the LM head: how many tokens the model scores."""
    from llmscope.loading.quant.modules import layer_rows

    head = loaded.model.get_output_embeddings()
    return layer_rows(head) if head is not None else len(loaded.tokenizer)


def check_top(option: str, value: int, loaded: LoadedModel) -> None:
    """Refuse a --top-k / --logprobs count larger than the vocabulary (a rule that needs the model)."""
    vocab = vocabulary_rows(loaded)
    if value > vocab:
        raise UsageError(f"{option} {value} is larger than the vocabulary ({vocab:,} tokens)",
                         hint=f"use {option} {vocab} or less")


def encode_prompt(loaded: LoadedModel, prompt: str, chat: bool = False, system: str | None = None,
                  new_tokens: int = 0, budget_option: str | None = None, budget_offset: int = 0,
                  what: str = "the prompt") -> EncodedPrompt:
    """Template and tokenize a prompt, then check it, with new_tokens to generate after it, against the model's
    context and embedding (check_lengths says what budget_option, budget_offset and what name)."""
    if not prompt.strip():
        raise UsageError(f"{what} is empty", hint="pass some text, or - to read it from stdin")
    text, ids = prompt_ids(loaded.tokenizer, prompt, chat=chat, system=system)
    check_lengths(loaded.model.config, len(ids), new_tokens, budget_option, budget_offset, what)
    check_ids_fit(loaded.model, ids)
    return EncodedPrompt(prompt=prompt, text=text, ids=tuple(ids), chat=chat)
