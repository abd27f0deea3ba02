"""What `patch` computes, as frozen dataclasses of plain values: both runs with their answers and probabilities, one
layer x position (or layer x head) grid per site, the noise used and what the run cost. No torch, no compute."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Token:
    id: int
    text: str


@dataclass(frozen=True)
class RunSummary:
    """One unpatched run: its tokens, its own top token, the probabilities of both answers and the metric's value
    (means over the noise samples for a noised run)."""

    role: str  # "clean", "corrupt" (text or noise), or "prompt" (ablation)
    prompt: str
    ids: tuple[int, ...]
    tokens: tuple[str, ...]
    top: Token
    top_probability: float
    answer_probability: float  # p(the clean answer)
    foil_probability: float | None  # p(the corrupted answer)
    metric_value: float  # the raw metric (logit difference, probability or log-probability)


@dataclass(frozen=True)
class Column:
    """One column of a grid: a position of the patched run (with its counterpart in the other run), or a head."""

    index: int  # the position in the patched run, or the head number
    label: str  # the token at that position (the clean run's), or "h3"
    source_position: int | None = None  # where the value came from in the other run (None: ablation or heads)
    other_token: str | None = None  # the other run's token there, when it differs


@dataclass(frozen=True)
class SiteGrid:
    """One site's map: values[layer row][column], the metric after patching that one cell."""

    site: str
    meaning: str
    layers: tuple[int, ...]
    columns: tuple[Column, ...]
    column_kind: str  # "position" or "head"
    position: int | None  # heads: the position every head was patched at
    values: tuple[tuple[float, ...], ...]

    def strongest(self, count: int, by_size: bool = False) -> list[tuple[int, int, float]]:
        """(layer, column index, value) of the `count` largest cells, or of the largest |value| with by_size
        (ablation: the largest changes, either way)."""
        cells = [(layer, j, row[j]) for layer, row in zip(self.layers, self.values) for j in range(len(self.columns))]
        return sorted(cells, key=(lambda cell: -abs(cell[2])) if by_size else (lambda cell: -cell[2]))[:count]


@dataclass(frozen=True)
class NoiseInfo:
    """ROME's corruption: Gaussian noise added to the subject tokens' embeddings, `samples` draws averaged."""

    subject: str
    positions: tuple[int, ...]
    samples: int
    seed: int
    scale: float  # in units of the embedding's standard deviation
    embedding_std: float
    std: float  # scale * embedding_std: the noise's standard deviation


@dataclass(frozen=True)
class PatchCost:
    """How much work the run was: cells, patched runs (batch rows), forward passes, and the memory estimate."""

    cells: int
    rows: int  # cells x samples: one patched run each
    rows_per_pass: int
    passes: int  # batched forward passes of the patched runs (the unpatched runs come on top)
    peak_bytes_estimate: int
    weights_bytes: int


@dataclass(frozen=True)
class PatchResult:
    model: str
    mode: str  # denoise, noise or ablate
    mode_meaning: str
    corruption: str  # "text", "noise", "zero" or "mean"
    metric: str  # logit-diff, prob or logprob
    metric_meaning: str
    normalised: bool  # logit-diff patching: (patched - corrupt) / (clean - corrupt)
    answer: Token  # the clean answer (the target)
    foil: Token | None  # the corrupted answer
    clean: RunSummary
    corrupt: RunSummary | None  # None for ablation
    patched_run: str  # which run the cells were written into: "corrupt" (denoise), "clean" (noise) or "prompt"
    align: str | None
    noise: NoiseInfo | None
    reference: str | None  # --ablate mean: the text whose mean activations were written
    grids: tuple[SiteGrid, ...]
    cost: PatchCost
    seconds: float
