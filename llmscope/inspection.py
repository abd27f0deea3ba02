"""Next-token inspection: the distribution over the vocabulary at the end of a prompt, greedy steps, the sampler's
view after temperature / top-p, and a logit lens over the blocks. It returns dataclasses and never prints."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmscope.errors import UsageError
from llmscope.generation import check_lengths, entropy_nats, eos_token_ids, forward_options, sampler_distribution
from llmscope.tokenization import prompt_ids

if TYPE_CHECKING:
    import torch

    from llmscope.loader import LoadedModel


@dataclass(frozen=True)
class PromptToken:
    position: int
    token_id: int
    text: str


@dataclass(frozen=True)
class TokenProbability:
    """One candidate for the next token under the raw softmax (and the sampler, when one is set)."""

    rank: int
    token_id: int
    text: str  # what the token decodes to, e.g. " Paris"
    piece: str  # the vocabulary entry, e.g. "ĠParis"
    probability: float
    logit: float
    logprob: float
    cumulative: float  # probability of this and every better-ranked token
    sampler_probability: float | None = None  # after temperature / top-p; None without a sampler


@dataclass(frozen=True)
class NextTokenStep:
    """The distribution at one position and the greedy choice made from it."""

    index: int
    context_tokens: int
    top: tuple[TokenProbability, ...]
    chosen: TokenProbability
    cumulative_logprob: float  # of the greedy continuation so far, this token included
    entropy: float  # nats, of the raw distribution
    sampler_entropy: float | None  # nats, after temperature / top-p
    sampler_kept: int | None  # tokens with non-zero probability under the sampler


@dataclass(frozen=True)
class LensLayer:
    """The logit lens at one depth: the last position's hidden state through the final norm and the LM head."""

    layer: int  # 0 = the embeddings, k = the output of block k (1-based)
    top_id: int
    top_text: str
    top_probability: float
    answer_rank: int  # rank (1 = top) of the model's real next token at this depth
    answer_probability: float


@dataclass(frozen=True)
class NextTokenResult:
    model: str
    prompt: str
    prompt_text: str  # what the model saw (after the chat template)
    prompt_tokens: tuple[PromptToken, ...]
    hidden_shape: tuple[int, ...]  # the block stack's output: [1, n, hidden]
    logits_shape: tuple[int, ...]  # the LM head's output: [1, n, vocab]
    layers: int
    vocab_size: int
    top_k: int
    temperature: float | None
    top_p: float | None
    chat_template_applied: bool
    steps: tuple[NextTokenStep, ...]  # fewer than asked when a greedy token ended the sequence (EOS)
    continuation: str  # the greedy tokens of all steps, decoded together
    lens: tuple[LensLayer, ...] | None
    lens_note: str | None

    @property
    def first(self) -> NextTokenStep:
        return self.steps[0]

    @property
    def answer(self) -> TokenProbability:
        """The most likely next token after the prompt."""
        return self.steps[0].chosen


def check_options(top_k: int, steps: int, temperature: float | None, top_p: float | None,
                  vocab_size: int | None = None) -> None:
    """Refuse option values that make no sense, before any model work."""
    if top_k < 1:
        raise UsageError(f"--top-k must be at least 1 (got {top_k})")
    if vocab_size is not None and top_k > vocab_size:
        raise UsageError(f"--top-k {top_k} is larger than the vocabulary ({vocab_size:,} tokens)",
                         hint=f"use --top-k {vocab_size} or less")
    if steps < 1:
        raise UsageError(f"--steps must be at least 1 (got {steps})")
    if temperature is not None and not temperature > 0:
        raise UsageError(f"--temperature must be above 0 (got {temperature})",
                         hint="use a small value like 0.1 to sharpen the distribution")
    if top_p is not None and not 0 < top_p <= 1:
        raise UsageError(f"--top-p must be in (0, 1] (got {top_p})")


def _candidates(tokenizer: Any, logits: torch.Tensor, top_k: int, sampler: torch.Tensor | None
                ) -> tuple[torch.Tensor, tuple[TokenProbability, ...]]:
    import torch

    logprobs = torch.log_softmax(logits, dim=-1)
    probabilities = logprobs.exp()
    values, ids = torch.topk(probabilities, top_k)
    id_list = ids.tolist()
    pieces = tokenizer.convert_ids_to_tokens(id_list)
    cumulative = 0.0
    rows = []
    for rank, (token_id, probability, piece) in enumerate(zip(id_list, values.tolist(), pieces), start=1):
        cumulative += probability
        rows.append(TokenProbability(
            rank=rank, token_id=token_id, text=tokenizer.decode([token_id]), piece=str(piece),
            probability=probability, logit=float(logits[token_id]), logprob=float(logprobs[token_id]),
            cumulative=min(cumulative, 1.0),
            sampler_probability=None if sampler is None else float(sampler[token_id])))
    return probabilities, tuple(rows)


def _find_final_norm(decoder: Any) -> Any | None:
    """The decoder's last direct child that is a norm (norm, ln_f, final_layer_norm...), or None."""
    found = None
    for _, child in decoder.named_children():
        if "norm" in type(child).__name__.lower():
            found = child
    return found


def _device_of(module: Any, fallback: torch.Tensor) -> Any:
    """Where a module's weights live (a device map may spread blocks over devices)."""
    for parameter in module.parameters():
        return parameter.device
    return fallback.device


def _logit_lens(model: Any, tokenizer: Any, hidden_states: tuple[torch.Tensor, ...], last_hidden: torch.Tensor,
                answer_id: int) -> tuple[tuple[LensLayer, ...], str | None]:
    import torch

    head = model.get_output_embeddings()
    norm = _find_final_norm(model.get_decoder())
    note = None if norm is not None else "no final norm found: the lens reads the raw hidden states"
    cap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
    layers = []
    for depth, states in enumerate(hidden_states):
        vector = states[0, -1:]
        if depth == len(hidden_states) - 1 and torch.allclose(states[0, -1], last_hidden[0, -1]):
            pass  # transformers hands back the last hidden state after the final norm already
        elif norm is not None:
            vector = norm(vector.to(_device_of(norm, vector)))
        logits = head(vector.to(device=head.weight.device, dtype=head.weight.dtype))[0]
        if cap:  # Gemma 2's final-logit softcapping, as the model applies it after its LM head
            logits = torch.tanh(logits / cap) * cap
        logits = logits.float()
        probabilities = torch.softmax(logits, dim=-1)
        top = int(torch.argmax(probabilities))
        answer_probability = float(probabilities[answer_id])
        rank = int((probabilities > probabilities[answer_id]).sum()) + 1
        layers.append(LensLayer(layer=depth, top_id=top, top_text=tokenizer.decode([top]),
                                top_probability=float(probabilities[top]), answer_rank=rank,
                                answer_probability=answer_probability))
    return tuple(layers), note


def next_token_distribution(loaded: LoadedModel, prompt: str, top_k: int = 10, steps: int = 1,
                            temperature: float | None = None, top_p: float | None = None, lens: bool = False,
                            chat: bool = False, system: str | None = None) -> NextTokenResult:
    """The model's distribution over the next token after `prompt`, as a float32 softmax of the last logits.

    Args:
        loaded: the model and tokenizer (loader.load_model).
        prompt: the text; with chat=True it is wrapped in the chat template first.
        top_k: how many candidates to keep per step (1 to the vocabulary size).
        steps: greedy steps; each appends the most likely token and shows the next distribution (stops at EOS).
        temperature, top_p: also compute the distribution a sampler draws from (generation.sampler_distribution).
        lens: the logit lens at the first step: every block's last hidden state through the final norm and head.
    Returns:
        NextTokenResult with the prompt tokens, the real shapes of the hidden states and logits, and each step.
    Raises:
        UsageError for bad option values or a prompt that does not fit the context.
    """
    import torch

    check_options(top_k, steps, temperature, top_p)
    model, tokenizer = loaded.model, loaded.tokenizer
    prompt_text, ids = prompt_ids(tokenizer, prompt, chat=chat, system=system)
    check_lengths(model.config, len(ids), steps)
    head = model.get_output_embeddings()
    check_options(top_k, steps, temperature, top_p, vocab_size=int(head.weight.shape[0]) if head is not None else None)
    device = loaded.input_device
    decoder = model.get_decoder()
    captured: dict[str, torch.Tensor] = {}

    def keep_last_hidden(_module: Any, _inputs: Any, output: Any) -> None:
        captured["hidden"] = output[0]  # a tuple or a ModelOutput: the last hidden state comes first

    cache_keyword, _ = forward_options(model)
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    input_ids = torch.tensor([ids], device=device)
    attention_mask = torch.ones_like(input_ids)
    use_sampler = temperature is not None or top_p is not None
    stop_ids = eos_token_ids(model, tokenizer)
    result_steps: list[NextTokenStep] = []
    chosen_ids: list[int] = []
    running = 0.0
    hidden_shape: tuple[int, ...] = ()
    logits_shape: tuple[int, ...] = ()
    lens_layers = None
    lens_note = None
    with torch.inference_mode():
        for index in range(steps):
            hook = decoder.register_forward_hook(keep_last_hidden) if index == 0 else None
            try:
                output = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=True,
                               output_hidden_states=lens and index == 0, **{cache_keyword: cache})
            finally:
                if hook is not None:
                    hook.remove()
            logits = output.logits[0, -1].float()
            if index == 0:
                hidden_shape = tuple(captured["hidden"].shape)
                logits_shape = tuple(output.logits.shape)
            sampler = sampler_distribution(logits, temperature or 1.0, 0, top_p or 1.0) if use_sampler else None
            probabilities, top = _candidates(tokenizer, logits, top_k, sampler)
            chosen = top[0]
            running += chosen.logprob
            result_steps.append(NextTokenStep(
                index=index, context_tokens=len(ids) + index, top=top, chosen=chosen, cumulative_logprob=running,
                entropy=entropy_nats(probabilities),
                sampler_entropy=None if sampler is None else entropy_nats(sampler),
                sampler_kept=None if sampler is None else int((sampler > 0).sum())))
            if lens and index == 0:
                lens_layers, lens_note = _logit_lens(model, tokenizer, output.hidden_states, captured["hidden"],
                                                     chosen.token_id)
            chosen_ids.append(chosen.token_id)
            if chosen.token_id in stop_ids:
                break
            input_ids = torch.tensor([[chosen.token_id]], device=device)
            attention_mask = torch.cat([attention_mask, torch.ones_like(input_ids)], dim=-1)
    return NextTokenResult(
        model=loaded.spec.name, prompt=prompt, prompt_text=prompt_text,
        prompt_tokens=tuple(PromptToken(position=i, token_id=t, text=tokenizer.decode([t]))
                            for i, t in enumerate(ids)),
        hidden_shape=hidden_shape, logits_shape=logits_shape,
        layers=int(getattr(model.config.get_text_config(), "num_hidden_layers", 0) or 0),
        vocab_size=int(logits_shape[-1]), top_k=top_k, temperature=temperature, top_p=top_p,
        chat_template_applied=chat, steps=tuple(result_steps),
        continuation=tokenizer.decode(chosen_ids, skip_special_tokens=False), lens=lens_layers, lens_note=lens_note)
