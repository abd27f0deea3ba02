"""The passes patching runs: a prompt's batch rows (noise on its subject's embeddings or none), last-position logits
with hooks in place, the metric per row, the answers as tokens, the noise's scale. It never prints or plans.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmscope.core.errors import UsageError
from llmscope.patching.results import Token
from llmscope.patching.sites import Replacement, SiteModules, hooked

if TYPE_CHECKING:
    from llmscope.loading.loader import LoadedModel

EMBEDDING_STD_ROWS = 8192  # vocabulary rows the embedding's standard deviation is measured on (evenly spaced)


@dataclass
class RunInputs:
    """One run's batch variants: the ids, and the noise added to its embeddings (one draw per variant) or none."""

    ids: tuple[int, ...]
    noise: Any = None  # [variants, subject positions, hidden]
    noise_positions: tuple[int, ...] = ()

    @property
    def variants(self) -> int:
        return 1 if self.noise is None else int(self.noise.shape[0])


def token_texts(tokenizer: Any, ids: tuple[int, ...]) -> tuple[str, ...]:
    return tuple(tokenizer.decode([i]) for i in ids)


def shown_tokens(tokenizer: Any, ids: tuple[int, ...]) -> str:
    return "|".join(token_texts(tokenizer, ids))


def single_token(tokenizer: Any, option: str, text: str) -> Token:
    """--target / --corrupt-target as one token id (a patching metric scores one next token)."""
    ids = [int(i) for i in tokenizer(text, add_special_tokens=False)["input_ids"]]
    if len(ids) != 1:
        pieces = "|".join(tokenizer.decode([i]) for i in ids)
        first = repr(tokenizer.decode(ids[:1])) if ids else "a token"
        raise UsageError(f"{option} {text!r} is {len(ids)} tokens ({pieces}); the metric scores one next token",
                         hint=f"give one token, e.g. {option} {first}")
    return Token(ids[0], tokenizer.decode(ids))


def subject_positions(loaded: LoadedModel, text: str, ids: tuple[int, ...], subject: str) -> tuple[int, ...]:
    """The positions of the tokens that overlap the first occurrence of `subject` in the prompt's text."""
    start = text.find(subject)
    if start < 0:
        raise UsageError(f"--corrupt-noise {subject!r} does not occur in the prompt {text!r}",
                         hint="give the subject exactly as it is written in the prompt")
    end = start + len(subject)
    encoded = loaded.tokenizer(text, return_offsets_mapping=True)
    found = [int(i) for i in encoded["input_ids"]]
    if tuple(found) != tuple(ids):
        encoded = loaded.tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
        found = [int(i) for i in encoded["input_ids"]]
    offsets = encoded["offset_mapping"]
    shift = len(ids) - len(found)  # special tokens the prompt has in front that the offsets call left out
    positions = tuple(index + shift for index, (a, b) in enumerate(offsets) if a < end and b > start and b > a)
    if not positions:
        raise UsageError(f"--corrupt-noise {subject!r} covers no token of the prompt")
    return positions


def embedding_std(model: Any) -> tuple[float, int]:
    """(standard deviation, width) of the input embedding's output over up to EMBEDDING_STD_ROWS evenly spaced
    rows of the vocabulary."""
    import torch

    from llmscope.loading.quant.modules import layer_placement, layer_rows

    embedding = model.get_input_embeddings()
    rows = layer_rows(embedding)
    step = max(1, rows // EMBEDDING_STD_ROWS)
    ids = torch.arange(0, rows, step, device=layer_placement(embedding)[0])
    with torch.inference_mode():
        values = embedding(ids[None])[0].double()
    return float(values.std()), int(values.shape[-1])


def forward_rows(loaded: LoadedModel, inputs: RunInputs, rows: list[int], sites: SiteModules, width: int,
             capture: dict[tuple[str, int], Any] | None = None,
             replace: dict[tuple[str, int], Replacement] | None = None) -> Any:
    """Last-position logits [len(rows), vocab] of the run's variants `rows` (one batch row each), with hooks.

    Every pass has exactly `width` rows (the last variant repeated): a row's numbers can depend on how many rows
    its matrix products hold, so the unpatched references and the patched cells all run at one batch size, and a
    cell that writes back a value the run computes anyway gives exactly the reference's logits."""
    import torch

    from llmscope.generation.decoding import forward_options

    _, keep = forward_options(loaded.model)
    padded = rows + [rows[-1]] * (width - len(rows))
    batch = torch.tensor([inputs.ids], device=loaded.input_device).expand(len(padded), -1)
    noise = None
    if inputs.noise is not None:
        count = len(inputs.noise_positions)
        noise = Replacement(rows=torch.arange(len(padded)).repeat_interleave(count),
                            positions=torch.tensor(inputs.noise_positions).repeat(len(padded)),
                            values=inputs.noise[padded].reshape(len(padded) * count, -1))
    with torch.inference_mode(), hooked(sites, capture, replace, loaded.model.get_input_embeddings(), noise):
        logits = loaded.model(input_ids=batch, use_cache=False, **keep).logits[:, -1]
    if capture is not None:
        for key, value in capture.items():
            capture[key] = value[:len(rows)]
    return logits[:len(rows)].float()


def run_unpatched(loaded: LoadedModel, inputs: RunInputs, sites: SiteModules, keys: list[tuple[str, int]],
                  width: int) -> tuple[Any, dict[tuple[str, int], Any]]:
    """(last-position logits [variants, vocab], activations {key: [variants, seq, width]}) of every variant of a
    run, `width` rows per pass."""
    import torch

    logits, parts = [], []
    variants = list(range(inputs.variants))
    for start in range(0, len(variants), width):
        capture: dict[tuple[str, int], Any] = dict.fromkeys(keys)
        logits.append(forward_rows(loaded, inputs, variants[start:start + width], sites, width, capture=capture))
        parts.append(capture)
    return torch.cat(logits), {key: torch.cat([part[key] for part in parts]) for key in keys}


def metric_rows(logits: Any, metric: str, answer: int, foil: int | None) -> list[float]:
    """The raw metric of each row of last-position logits (float32 softmax, float64 difference)."""
    import torch

    if metric == "logit-diff":
        assert foil is not None
        return [float(v) for v in (logits[:, answer].double() - logits[:, foil].double())]
    logprobs = torch.log_softmax(logits, dim=-1)[:, answer]
    values = logprobs.exp() if metric == "prob" else logprobs
    return [float(v) for v in values.double()]


def top_token(tokenizer: Any, logits: Any) -> Token:
    """The token with the largest probability, averaged over the rows (the noise samples)."""
    import torch

    top = int(torch.softmax(logits, dim=-1).double().mean(dim=0).argmax())
    return Token(top, tokenizer.decode([top]))
