"""Next-token inspection: the distribution over the vocabulary at the end of a prompt, greedy steps, the sampler's
view after temperature / top-p, and a logit lens over the blocks. It returns dataclasses and never prints."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmscope.core.command_settings import NextTokenSettings
from llmscope.generation.decoding import (
    Sampler,
    decode_steps,
    entropy_nats,
    eos_token_ids,
    pad_token_id,
    prompt_batch,
    sampler_distribution,
)
from llmscope.generation.prompts import EncodedPrompt, check_top, encode_prompt

if TYPE_CHECKING:
    import torch

    from llmscope.loading.loader import LoadedModel


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


def candidates(tokenizer: Any, logits: torch.Tensor, top_k: int, sampler: torch.Tensor | None
               ) -> tuple[torch.Tensor, tuple[TokenProbability, ...]]:
    """One position's float32 softmax over the vocabulary and its top_k rows (each with the sampler's probability
    when a sampler distribution is given): next-token's figures, shared with the decoding panel."""
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

    from llmscope.loading.quant.modules import layer_placement

    head = model.get_output_embeddings()
    head_device, head_dtype = layer_placement(head)
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
        logits = head(vector.to(device=head_device, dtype=head_dtype or vector.dtype))[0]
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
        temperature, top_p: also compute the distribution a sampler draws from (decoding.sampler_distribution).
        lens: the logit lens at the first step: every block's last hidden state through the final norm and head.
    Returns:
        NextTokenResult with the prompt tokens, the real shapes of the hidden states and logits, and each step.
    Raises:
        UsageError for bad option values or a prompt that does not fit the context.
    """
    settings = NextTokenSettings(top_k=top_k, steps=steps, temperature=temperature, top_p=top_p, lens=lens)
    encoded = encode_prompt(loaded, prompt, chat=chat, system=system, new_tokens=steps - 1, budget_option="--steps",
                           budget_offset=1)
    return next_token_encoded(loaded, [encoded], settings)[0]


def next_token_encoded(loaded: LoadedModel, prompts: list[EncodedPrompt], settings: NextTokenSettings
                       ) -> list[NextTokenResult]:
    """next_token_distribution for already-encoded prompts, run as one left-padded batch on the decode core."""

    check_top("--top-k", settings.top_k, loaded)
    model, tokenizer = loaded.model, loaded.tokenizer
    decoder = model.get_decoder()
    captured: dict[str, torch.Tensor] = {}

    def keep_last_hidden(_module: Any, _inputs: Any, output: Any) -> None:
        captured["hidden"] = output[0]  # a tuple or a ModelOutput: the last hidden state comes first

    rows = len(prompts)
    batch = prompt_batch([p.ids for p in prompts], pad_token_id(tokenizer), loaded.input_device)
    steps: list[list[NextTokenStep]] = [[] for _ in range(rows)]
    chosen_ids: list[list[int]] = [[] for _ in range(rows)]
    running = [0.0] * rows
    ended = [False] * rows
    lens_results: list[tuple[tuple[LensLayer, ...] | None, str | None]] = [(None, None)] * rows
    hidden_size = 0
    hook = decoder.register_forward_hook(keep_last_hidden)
    try:
        for step in decode_steps(model, batch, settings.steps, Sampler(), eos_token_ids(model, tokenizer),
                                 hidden_states_first=settings.lens):
            if step.index == 0:
                hook.remove()
                hidden_size = int(captured["hidden"].shape[-1])
            for row in range(rows):
                if ended[row]:
                    continue  # this row's greedy token was an end of sequence at an earlier step
                logits = step.logits[row]
                sampler = sampler_distribution(logits, settings.temperature or 1.0, 0, settings.top_p or 1.0
                                               ) if settings.sampler_view else None
                probabilities, top = candidates(tokenizer, logits, settings.top_k, sampler)
                chosen = top[0]
                running[row] += chosen.logprob
                steps[row].append(NextTokenStep(
                    index=step.index, context_tokens=len(prompts[row].ids) + step.index, top=top, chosen=chosen,
                    cumulative_logprob=running[row], entropy=entropy_nats(probabilities),
                    sampler_entropy=None if sampler is None else entropy_nats(sampler),
                    sampler_kept=None if sampler is None else int((sampler > 0).sum())))
                chosen_ids[row].append(chosen.token_id)
                if settings.lens and step.index == 0:
                    hidden_states = tuple(states[row:row + 1] for states in step.output.hidden_states)
                    lens_results[row] = _logit_lens(model, tokenizer, hidden_states,
                                                    captured["hidden"][row:row + 1], chosen.token_id)
                ended[row] = step.finished[row]
    finally:
        hook.remove()
    vocab = int(step.logits.shape[-1])
    layers = int(getattr(model.config.get_text_config(), "num_hidden_layers", 0) or 0)
    return [NextTokenResult(
        model=loaded.spec.name, prompt=prompt.prompt, prompt_text=prompt.text,
        prompt_tokens=tuple(PromptToken(position=i, token_id=t, text=tokenizer.decode([t]))
                            for i, t in enumerate(prompt.ids)),
        hidden_shape=(1, len(prompt.ids), hidden_size), logits_shape=(1, len(prompt.ids), vocab),
        layers=layers, vocab_size=vocab, top_k=settings.top_k, temperature=settings.temperature,
        top_p=settings.top_p, chat_template_applied=prompt.chat, steps=tuple(steps[row]),
        continuation=tokenizer.decode(chosen_ids[row], skip_special_tokens=False),
        lens=lens_results[row][0], lens_note=lens_results[row][1]) for row, prompt in enumerate(prompts)]
