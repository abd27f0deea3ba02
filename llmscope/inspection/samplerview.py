"""The decoding panel's figures: next-token's top tokens before and after the sampler's temperature, top-k and top-p
(what is cut, what remains renormalised) and a greedy or sampled pick. Frozen dataclasses; it never prints."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmscope.core.errors import UsageError
from llmscope.generation.decoding import (
    Sampler,
    decode_steps,
    entropy_nats,
    eos_token_ids,
    pad_token_id,
    prompt_batch,
    sampler_distribution,
)
from llmscope.generation.prompts import EncodedPrompt, check_top
from llmscope.inspection.next_token import TokenProbability, candidates

if TYPE_CHECKING:
    from llmscope.loading.loader import LoadedModel

PICKS = ("none", "greedy", "sample")


@dataclass(frozen=True)
class SamplerSettings:
    """The sampler a decoding step would use, and how many of the raw top tokens to show."""

    temperature: float = 1.0
    top_k: int = 0  # 0: no top-k filter
    top_p: float = 1.0  # 1.0: no nucleus filter
    shown: int = 10
    pick: str = "none"  # "greedy": the raw argmax; "sample": one draw from the sampler's distribution
    seed: int | None = None  # for "sample"; None draws a fresh seed (returned in the view)

    def __post_init__(self) -> None:
        from llmscope.core.command_settings import MAX_TOP, real_number, whole_number

        real_number("temperature", self.temperature, 0.0, 1e6, low_open=True)
        whole_number("top_k", self.top_k, 0, MAX_TOP)
        real_number("top_p", self.top_p, 0.0, 1.0, low_open=True)
        whole_number("shown", self.shown, 1, MAX_TOP)
        if self.pick not in PICKS:
            raise UsageError(f"pick must be one of {', '.join(PICKS)} (got {self.pick!r})")


@dataclass(frozen=True)
class SamplerView:
    """The raw top tokens with their sampler probability (0 where top-k or top-p cut them) and the picked token."""

    context_tokens: int
    temperature: float
    top_k: int
    top_p: float
    top: tuple[TokenProbability, ...]  # raw softmax order; sampler_probability: after temperature, top-k, top-p
    kept: int  # tokens of the whole vocabulary with non-zero sampler probability
    entropy: float  # nats, raw
    sampler_entropy: float  # nats, after the sampler
    picked: TokenProbability | None  # the greedy or sampled token (its raw figures and its sampler probability)
    pick: str
    seed: int | None


def sampler_view(loaded: LoadedModel, encoded: EncodedPrompt, settings: SamplerSettings) -> SamplerView:
    """The last position's logits through the decode core (as next-token reads them), then the sampler's filters.

    The raw probabilities equal `next-token --json`'s; with top_k 0 the sampler probabilities equal its
    `--temperature T --top-p P` column, since both come from decoding.sampler_distribution on the same logits.
    """
    import random

    import torch

    check_top("shown", settings.shown, loaded)
    if settings.top_k:
        check_top("top_k", settings.top_k, loaded)
    model, tokenizer = loaded.model, loaded.tokenizer
    batch = prompt_batch([encoded.ids], pad_token_id(tokenizer), loaded.input_device)
    step = next(iter(decode_steps(model, batch, 1, Sampler(), eos_token_ids(model, tokenizer))))
    logits = step.logits[0]
    sampler = sampler_distribution(logits, settings.temperature, settings.top_k, settings.top_p)
    probabilities, top = candidates(tokenizer, logits, settings.shown, sampler)
    picked, seed = None, None
    if settings.pick == "greedy":
        picked = top[0]
    elif settings.pick == "sample":
        seed = settings.seed if settings.seed is not None else random.getrandbits(63)
        generator = torch.Generator(device=sampler.device).manual_seed(seed)
        token = int(torch.multinomial(sampler, 1, generator=generator))
        rank = int((probabilities > probabilities[token]).sum()) + 1
        log_probability = torch.log(probabilities[token])
        picked = TokenProbability(rank=rank, token_id=token, text=tokenizer.decode([token]),
                                  piece=str(tokenizer.convert_ids_to_tokens([token])[0]),
                                  probability=float(probabilities[token]), logit=float(logits[token]),
                                  logprob=float(log_probability), cumulative=float(probabilities[
                                      probabilities >= probabilities[token]].sum().clamp(max=1.0)),
                                  sampler_probability=float(sampler[token]))
    return SamplerView(context_tokens=len(encoded.ids), temperature=settings.temperature, top_k=settings.top_k,
                       top_p=settings.top_p, top=top, kept=int((sampler > 0).sum()),
                       entropy=entropy_nats(probabilities), sampler_entropy=entropy_nats(sampler), picked=picked,
                       pick=settings.pick, seed=seed)
