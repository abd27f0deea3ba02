"""What `attribute` was asked to do, checked once when built (methods, targets, steps, baseline, the token guard).
No torch, no model: a bad value is refused before any load; rules that need the tokenizer come later."""

from __future__ import annotations

from dataclasses import dataclass

from llmscope.core.command_settings import (
    BatchSettings,
    ModelSettings,
    OutputMode,
    PromptSettings,
    plain_text,
    real_number,
    whole_number,
)
from llmscope.core.errors import UsageError

METHOD_NAMES = ("occlusion", "input-x-gradient", "integrated-gradients", "attention-rollout")
METHOD_ALIASES = {"ig": "integrated-gradients", "ixg": "input-x-gradient", "rollout": "attention-rollout",
                  "loo": "occlusion", "all": ""}
BASELINES = ("mean", "eos", "zero")
DEFAULT_BASELINE = "mean"  # the only one that converged within 128 steps on 5-, 12-, 20-token prompts (docs: attribute)
DEFAULT_STEPS = 32  # Gauss-Legendre points; "The capital of France is": 0.48% completeness error (docs: attribute)
MAX_AUTO_STEPS = 256  # the budget the automatic steps may grow to (doubling) until completeness < 1%
MAX_STEPS = 4096
COMPLETENESS_LIMIT = 0.01  # a relative completeness error above this is a warning
SETTLED_LIMIT = 0.05  # a token whose value moves by more than this share of the row's largest |value| between half
# the steps and the steps is not settled: the completeness sum can be right while single tokens still move, so a
# passing completeness check alone does not show that each token's value has converged
DEFAULT_MAX_TOKENS = 256  # prompt + target tokens one run may attribute (--max-tokens)
DEFAULT_MAX_SECONDS = 300.0  # the estimated time the methods may take (--max-time)
MAX_TARGETS = 256


def method_list(values: list[str] | None) -> tuple[str, ...]:
    """--method given once or more, each a name or a comma list (aliases: ig, ixg, rollout, loo; 'all')."""
    if not values:
        return METHOD_NAMES
    names: list[str] = []
    for value in values:
        for part in value.split(","):
            name = part.strip().lower()
            if not name:
                continue
            name = METHOD_ALIASES.get(name, name)
            chosen = METHOD_NAMES if name == "" else (name,)
            for item in chosen:
                if item not in METHOD_NAMES:
                    raise UsageError(f"--method: unknown method {part.strip()!r}",
                                     hint=f"choose from {', '.join(METHOD_NAMES)} (or ig, ixg, rollout, all)")
                if item not in names:
                    names.append(item)
    if not names:
        raise UsageError("--method is empty", hint=f"choose from {', '.join(METHOD_NAMES)}")
    return tuple(names)


@dataclass(frozen=True)
class AttributionSettings:
    """The methods, what they attribute (targets, contrast) and their parameters.

    steps None means automatic: DEFAULT_STEPS, doubled up to MAX_AUTO_STEPS until the completeness error of
    integrated gradients is under COMPLETENESS_LIMIT; a given --steps is used as it is (and warned about).
    """

    methods: tuple[str, ...] = METHOD_NAMES
    target: str | None = None  # teacher-forced continuation; None: the model's own (greedy) tokens
    new_tokens: int = 1  # greedy tokens attributed when no target is given (-n)
    contrast: str | None = None  # attribute log p(target) - log p(contrast)
    occlude_with: str | None = None  # occlusion replaces the token with this one instead of dropping it
    steps: int | None = None
    baseline: str = DEFAULT_BASELINE
    max_tokens: int = DEFAULT_MAX_TOKENS
    top: int = 5  # inputs ranked per target in the table
    max_memory: int | None = None  # bytes the process may hold in all (--max-memory); None: what it holds + free
    max_seconds: float = DEFAULT_MAX_SECONDS  # the methods' estimated time may not pass this (--max-time)

    def __post_init__(self) -> None:
        for name in self.methods:
            if name not in METHOD_NAMES:
                raise UsageError(f"unknown attribution method {name!r}", hint=f"choose from {', '.join(METHOD_NAMES)}")
        if not self.methods:
            raise UsageError("no attribution method", hint=f"choose from {', '.join(METHOD_NAMES)}")
        for option, text in (("--target", self.target), ("--contrast", self.contrast),
                             ("--occlude-with", self.occlude_with)):
            plain_text(option, text)
            if text is not None and text == "":
                raise UsageError(f"{option} is empty", hint="pass the text, e.g. ' Paris' with its leading space")
        whole_number("-n/--new-tokens", self.new_tokens, 1, MAX_TARGETS)
        if self.target is not None and self.new_tokens != 1:
            raise UsageError("give either --target TEXT or -n N, not both",
                             hint="--target attributes a given continuation; -n the model's own greedy tokens")
        whole_number("--steps", self.steps, 2, MAX_STEPS)
        if self.baseline not in BASELINES:
            raise UsageError(f"--baseline takes {', '.join(BASELINES)} (got {self.baseline!r})")
        whole_number("--max-tokens", self.max_tokens, 2, 1_000_000)
        whole_number("--top", self.top, 1, 1_000)
        real_number("--max-time", self.max_seconds, 0.0, 1e9, low_open=True)
        if self.max_memory is not None and self.max_memory < 1 << 20:
            raise UsageError(f"--max-memory must be at least 1 MiB (got {self.max_memory} bytes)")

    def ignored(self) -> tuple[str, ...]:
        """Options that the chosen methods do not use."""
        notes = []
        if "integrated-gradients" not in self.methods:
            if self.steps is not None:
                notes.append("--steps is ignored without the integrated-gradients method")
            if self.baseline != DEFAULT_BASELINE:
                notes.append("--baseline is ignored without the integrated-gradients method")
        if self.occlude_with is not None and "occlusion" not in self.methods:
            notes.append("--occlude-with is ignored without the occlusion method")
        return tuple(notes)


@dataclass(frozen=True)
class AttributeCommand:
    """Everything `attribute` was asked for."""

    attribution: AttributionSettings
    prompt: PromptSettings
    model: ModelSettings
    mode: OutputMode = OutputMode.HUMAN
    plot: str | None = None  # a .png or .svg file
    batch: BatchSettings | None = None

    def __post_init__(self) -> None:
        if self.mode not in (OutputMode.HUMAN, OutputMode.JSON, OutputMode.JSONL):
            raise UsageError(f"attribute writes tables, --json or --jsonl (not --{self.mode.value})")
        plain_text("--plot", self.plot)
        if self.plot is not None:
            if not self.plot.lower().endswith((".png", ".svg")):
                raise UsageError(f"--plot writes .png or .svg files (got {self.plot!r})")
            if self.batch is not None:
                raise UsageError("--plot is for one prompt at a time", hint="drop --plot with --batch")

    def warnings(self) -> tuple[str, ...]:
        return (*self.prompt.warnings, *self.attribution.ignored())
