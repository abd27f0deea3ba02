"""What `patch` was asked to do, checked once when built: sites, layers and positions as typed, the metric, the
direction, corruption by text or by noise, ablation, the pass budget. No torch, no model: bad values fail before any
load; rules that need the tokenizer or the model's size come later (llmscope.patching.patcher)."""

from __future__ import annotations

from dataclasses import dataclass

from llmscope.core.command_settings import (
    BatchSettings,
    ModelSettings,
    OutputMode,
    plain_text,
    real_number,
    whole_number,
)
from llmscope.core.errors import UsageError
from llmscope.patching.sites import SITE_KINDS

METRICS = ("logit-diff", "prob", "logprob")
ABLATIONS = ("zero", "mean")
ALIGNMENTS = ("start", "end")
DEFAULT_MAX_PASSES = 4096  # patched runs (batch rows) one command may ask for before it wants narrower ranges
DEFAULT_SAMPLES = 10  # noise samples averaged, as in ROME's causal tracing
NOISE_SCALE = 3.0  # noise standard deviation, in units of the embedding's standard deviation (ROME)
MAX_ROWS_PER_PASS = 1024

# How patch can corrupt or ablate, by the option that chooses it, and the options only some of them use: an option
# given where the chosen way does not use it is refused before any load (it would be silently ignored).
CORRUPTIONS = {"text": "--corrupt TEXT", "noise": "--corrupt-noise SUBJECT", "zero": "--ablate zero",
               "mean": "--ablate mean"}
USED_BY = {
    "--denoise": ("text", "noise"), "--noise": ("text", "noise"),
    "--align": ("text",),
    "--samples": ("noise",), "--seed": ("noise",), "--noise-scale": ("noise",),
    "--reference": ("mean",),
}


def check_options_used(corruptions: tuple[str, ...], given: frozenset[str] | set[str]) -> None:
    """Refuse an option of USED_BY given while none of the corruptions that can run (`corruptions`: one, or those
    a --batch record may choose) uses it."""
    for option in sorted(given & USED_BY.keys()):
        if not set(USED_BY[option]) & set(corruptions):
            users = " or ".join(CORRUPTIONS[kind] for kind in USED_BY[option])
            chosen = " / ".join(CORRUPTIONS[kind] for kind in corruptions)
            raise UsageError(f"{option} has no effect with {chosen}: it is for {users}",
                             hint=f"drop {option}")


def site_list(values: list[str] | None) -> tuple[str, ...]:
    """--site given once or more, each a kind or a comma list; 'all' is resid, attn and mlp (ROME's three maps)."""
    if not values:
        return ("resid",)
    kinds: list[str] = []
    for value in values:
        for part in value.split(","):
            name = part.strip().lower()
            if not name:
                continue
            for kind in (("resid", "attn", "mlp") if name == "all" else (name,)):
                if kind not in SITE_KINDS:
                    raise UsageError(f"--site: unknown site {part.strip()!r}",
                                     hint=f"choose from {', '.join(SITE_KINDS)} (or all)")
                if kind not in kinds:
                    kinds.append(kind)
    if not kinds:
        raise UsageError("--site is empty", hint=f"choose from {', '.join(SITE_KINDS)}")
    return tuple(kinds)


def check_selection(option: str, text: str | None) -> None:
    """Refuse a --layers / --positions value that is not N, A:B or a comma list of them (before any load)."""
    if text is None:
        return
    plain_text(option, text)
    for part in text.split(","):
        pieces = part.strip().split(":")
        if len(pieces) > 2 or not all(p.strip() == "" or _is_int(p) for p in pieces) or (
                len(pieces) == 1 and not _is_int(pieces[0])):
            raise UsageError(f"{option}: {part.strip()!r} is not an index or a range",
                             hint=f"give N, A:B (B left out), or a comma list, e.g. {option} 0:10 or {option} -1")


def _is_int(text: str) -> bool:
    try:
        int(text.strip())
        return True
    except ValueError:
        return False


def select(option: str, text: str | None, count: int) -> tuple[int, ...]:
    """The indices --layers / --positions picks out of `count`: N, A:B (Python's slice: B left out, negative from
    the end) or a comma list; every index once, in order. None selects all."""
    if text is None:
        return tuple(range(count))
    check_selection(option, text)
    chosen: list[int] = []
    for part in text.split(","):
        pieces = part.strip().split(":")
        if len(pieces) == 1:
            index = int(pieces[0])
            if not -count <= index < count:
                raise UsageError(f"{option} {index} is out of range: there are {count} (0 to {count - 1})")
            picked = [index % count]
        else:
            start, stop = (int(p) if p.strip() else None for p in pieces)
            picked = list(range(count))[slice(start, stop)]
        chosen.extend(i for i in picked if i not in chosen)
    if not chosen:
        raise UsageError(f"{option} {text} selects nothing out of {count}", hint=f"indices run from 0 to {count - 1}")
    return tuple(sorted(chosen))


@dataclass(frozen=True)
class PatchSettings:
    """Sites, ranges, metric, direction, corruption, ablation and the pass budget of one patching run.

    corrupt: the corrupted prompt; noise_subject: corrupt the clean prompt's subject tokens with Gaussian noise
    instead (ROME); ablate: zero or mean-ablate each site of the one prompt instead of patching.
    """

    sites: tuple[str, ...] = ("resid",)
    layers: str | None = None
    positions: str | None = None
    metric: str | None = None  # None: logit-diff when patching, logprob when ablating
    noise: bool = False  # --noise: patch the corrupted run into the clean one (default: --denoise, clean into corrupt)
    target: str | None = None
    corrupt_target: str | None = None
    noise_subject: str | None = None
    samples: int = DEFAULT_SAMPLES
    seed: int = 0
    noise_scale: float = NOISE_SCALE
    ablate: str | None = None
    reference: str | None = None
    align: str | None = None
    max_passes: int = DEFAULT_MAX_PASSES
    rows_per_pass: int | None = None  # None: as many as the memory budget allows (up to DEFAULT_ROWS)
    top: int = 5

    def __post_init__(self) -> None:
        for kind in self.sites:
            if kind not in SITE_KINDS:
                raise UsageError(f"unknown site {kind!r}", hint=f"choose from {', '.join(SITE_KINDS)}")
        check_selection("--layers", self.layers)
        check_selection("--positions", self.positions)
        if self.metric is not None and self.metric not in METRICS:
            raise UsageError(f"--metric takes {', '.join(METRICS)} (got {self.metric!r})")
        for option, text in (("--target", self.target), ("--corrupt-target", self.corrupt_target),
                             ("--corrupt-noise", self.noise_subject), ("--reference", self.reference)):
            plain_text(option, text)
            if text is not None and not text.strip():
                raise UsageError(f"{option} is empty", hint="pass the text, e.g. ' Paris' with its leading space")
        whole_number("--samples", self.samples, 1, 1000)
        whole_number("--seed", self.seed, 0, 2**63 - 1)
        real_number("--noise-scale", self.noise_scale, 0.0, 1000.0, low_open=True)
        whole_number("--max-passes", self.max_passes, 1, 10**9)
        whole_number("--cells-per-pass", self.rows_per_pass, 1, MAX_ROWS_PER_PASS)
        whole_number("--top", self.top, 0, 1000)
        if self.ablate is not None:
            if self.ablate not in ABLATIONS:
                raise UsageError(f"--ablate takes {', '.join(ABLATIONS)} (got {self.ablate!r})")
            if self.noise_subject is not None or self.noise:
                raise UsageError("--ablate runs one prompt: it takes no --corrupt-noise or --noise")
            if self.ablate == "mean" and self.reference is None:
                raise UsageError("--ablate mean needs --reference TEXT",
                                 hint="the mean is taken over that text's activations at each site")
            if self.metric == "logit-diff" and self.corrupt_target is None:
                raise UsageError("--ablate with --metric logit-diff needs --corrupt-target TOKEN (the foil)")
        if self.reference is not None and self.ablate != "mean":
            raise UsageError(f"--reference has no effect {'with --ablate zero' if self.ablate else 'without --ablate'}"
                             ": it is the text --ablate mean takes its means from",
                             hint="drop --reference, or use --ablate mean")
        if self.align is not None and self.align not in ALIGNMENTS:
            raise UsageError(f"--align takes {', '.join(ALIGNMENTS)} (got {self.align!r})")
        if "heads" in self.sites and self.positions is not None:
            raise UsageError("--site heads patches each head at the last position: it takes no --positions",
                             hint="drop --positions, or run the heads map apart from the other sites")

    @property
    def chosen_metric(self) -> str:
        return self.metric or ("logprob" if self.ablate else "logit-diff")

    @property
    def mode(self) -> str:
        """denoise (clean into corrupt), noise (corrupt into clean) or ablate (zero / mean into the prompt)."""
        return "ablate" if self.ablate else ("noise" if self.noise else "denoise")



@dataclass(frozen=True)
class PatchCommand:
    """Everything `patch` was asked for."""

    patching: PatchSettings
    model: ModelSettings
    corrupt: str | None = None
    mode: OutputMode = OutputMode.HUMAN
    plot: str | None = None
    batch: BatchSettings | None = None
    given: frozenset[str] = frozenset()  # the options of USED_BY that were typed ("--seed", "--denoise", ...)

    def __post_init__(self) -> None:
        if self.mode not in (OutputMode.HUMAN, OutputMode.JSON, OutputMode.JSONL):
            raise UsageError(f"patch writes tables, --json or --jsonl (not --{self.mode.value})")
        plain_text("--corrupt", self.corrupt)
        if self.corrupt is not None and not self.corrupt.strip():
            raise UsageError("--corrupt is empty", hint="pass the corrupted prompt, e.g. --corrupt \"The capital of "
                             "Italy is\"")
        options = self.patching
        if self.batch is None:
            given = [o for o, v in (("--corrupt", self.corrupt), ("--corrupt-noise", options.noise_subject),
                                    ("--ablate", options.ablate)) if v is not None]
            if len(given) > 1:
                raise UsageError(f"give one of --corrupt, --corrupt-noise or --ablate (got {' and '.join(given)})")
            if not given:
                raise UsageError("patch needs a corrupted run: --corrupt TEXT, --corrupt-noise SUBJECT, or --ablate",
                                 hint='e.g. llmscope patch "The Eiffel Tower is in the city of" --corrupt '
                                      '"The Colosseum is in the city of"')
        elif self.corrupt is not None and options.noise_subject is not None:
            raise UsageError("give --corrupt or --corrupt-noise, not both")
        check_options_used(self.corruptions, self.given)
        plain_text("--plot", self.plot)
        if self.plot is not None and self.batch is not None:
            raise UsageError("--plot is for one pair at a time", hint="drop --plot with --batch")

    @property
    def corruptions(self) -> tuple[str, ...]:
        """The ways this run may corrupt (CORRUPTIONS' keys): the one chosen, or with --batch those its records
        may choose ("corrupt" or "subject")."""
        options = self.patching
        if options.ablate is not None:
            return (options.ablate,)
        if self.batch is not None:  # a record's own "corrupt" or "subject" overrides the options
            return ("text", "noise")
        return ("noise",) if options.noise_subject is not None else ("text",)
