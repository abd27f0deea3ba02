"""What each command was asked to do, checked once when it is built: ranges, NaN/inf, overflow, combinations, and
options the chosen mode ignores (kept as warnings). No torch, no model: a bad value is refused before any load."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from llmscope.core.errors import UsageError

QUANTIZE_CHOICES = ("auto", "none", "int8", "int4")  # --quantize; llmscope.loading.quant reads it
MAX_NEW_TOKENS = 1_000_000
MAX_THREADS = 1024
MAX_SEED = 2**64 - 1  # torch.manual_seed's range
MAX_TOP = 1_000_000  # --top-k / --logprobs: checked against the vocabulary after loading
MAX_BATCH_SIZE = 4096
MAX_INPUT_BYTES = 32 * 2**20  # one text input (stdin, --file, --batch): millions of tokens, past any context


class OutputMode(str, Enum):
    """How results are written to stdout."""

    HUMAN = "human"  # Rich tables and text
    JSON = "json"  # one indented JSON document
    JSONL = "jsonl"  # one compact JSON document per line (every --batch run)
    CSV = "csv"  # rows of comma-separated values
    IDS = "ids"  # token ids only, space-separated


def output_mode(json: bool = False, jsonl: bool = False, csv: bool = False, ids: bool = False,
                batch: bool = False) -> OutputMode:
    """The one output mode the flags ask for; two at once is a usage error. A --batch run writes JSON Lines, so
    there --json and --jsonl both mean that (and the other modes cannot be used)."""
    chosen = [name for name, on in (("--json", json), ("--jsonl", jsonl), ("--csv", csv), ("--ids", ids)) if on]
    if batch:
        other = [name for name in chosen if name not in ("--json", "--jsonl")]
        if other:
            raise UsageError(f"--batch writes JSON Lines: {', '.join(other)} cannot be used with it",
                             hint="drop " + " and ".join(other))
        return OutputMode.JSONL
    if len(chosen) > 1:
        raise UsageError(f"give one of {', '.join(chosen)}, not several")
    if not chosen:
        return OutputMode.HUMAN
    return {"--json": OutputMode.JSON, "--jsonl": OutputMode.JSONL, "--csv": OutputMode.CSV,
            "--ids": OutputMode.IDS}[chosen[0]]


# ---------------------------------------------------------------------------------------------- value rules


def whole_number(option: str, value: int | None, low: int, high: int, hint: str | None = None) -> None:
    """Refuse an integer outside [low, high] (None passes: the option was not given)."""
    if value is None:
        return
    if not low <= value <= high:
        where = f"at least {low}" if value < low else f"at most {high:,}"
        raise UsageError(f"{option} must be {where} (got {value})", hint=hint)


def real_number(option: str, value: float | None, low: float, high: float, low_open: bool = False,
                hint: str | None = None) -> None:
    """Refuse NaN, infinity and a float outside [low, high] ((low, high] with low_open)."""
    if value is None:
        return
    if not math.isfinite(value):
        raise UsageError(f"{option} must be a finite number (got {value})", hint=hint)
    if value < low or value > high or (low_open and value == low):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise UsageError(f"{option} must be in {interval} (got {value:g})", hint=hint)


def plain_text(option: str, value: str | None) -> None:
    """Refuse text that cannot be encoded as UTF-8 (a lone surrogate from a broken terminal or file name)."""
    if value is None:
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise UsageError(f"{option} holds a character that is not valid Unicode (position {error.start})",
                         hint="pass the text as UTF-8, or through stdin with -") from None


def utf8_text(data: bytes, source: str) -> str:
    """Bytes from stdin, --file or --batch as text; anything but UTF-8 is a usage error naming the source."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UsageError(f"{source} is not valid UTF-8 (byte {error.start})",
                         hint="convert it with `iconv -t utf-8`") from None


def read_bytes(path: str | None, source: str) -> bytes:
    """The bytes of a text input: stdin (path None or '-') or a file, a pipe, /dev/stdin or a process substitution.

    Read in 1 MiB pieces up to MAX_INPUT_BYTES, so that an endless input (/dev/zero) ends with one line naming
    the cap and Ctrl-C or SIGTERM stop the read. A closed stdin is a usage error; OSError goes to the caller."""
    import sys

    if path is None or path == "-":
        if sys.stdin is None:
            raise UsageError(f"{source}: stdin is closed", hint="pass the text as an argument, or a file")
        stream = getattr(sys.stdin, "buffer", None)
        if stream is None:  # a text-only stdin (tests, embedding): already decoded
            return sys.stdin.read(MAX_INPUT_BYTES + 1).encode("utf-8", "surrogateescape")[:MAX_INPUT_BYTES + 1]
        return _read_capped(stream, source)
    with open(path, "rb") as file:
        return _read_capped(file, source)


def _read_capped(stream: object, source: str) -> bytes:
    pieces: list[bytes] = []
    held = 0
    while held <= MAX_INPUT_BYTES:
        piece = stream.read(min(2**20, MAX_INPUT_BYTES + 1 - held))  # type: ignore[attr-defined]
        if not piece:
            break
        pieces.append(piece)
        held += len(piece)
    if held > MAX_INPUT_BYTES:
        raise UsageError(f"{source} is larger than {MAX_INPUT_BYTES // 2**20} MiB, the most llmscope reads",
                         hint="pass a shorter text, or split it")
    return b"".join(pieces)


def threads_from(option_value: int | None) -> int | None:
    """--threads, else $LLMSCOPE_THREADS, else None (torch's own choice); checked either way."""
    if option_value is not None:
        whole_number("--threads", option_value, 1, MAX_THREADS)
        return option_value
    raw = os.environ.get("LLMSCOPE_THREADS", "").strip()
    if not raw:
        return None
    if not (raw.isascii() and raw.isdecimal()):
        raise UsageError(f"LLMSCOPE_THREADS must be a whole number (got {raw!r})")
    whole_number("LLMSCOPE_THREADS", int(raw), 1, MAX_THREADS)
    return int(raw)


def quantize_from(option_value: str | None) -> str:
    """--quantize, else $LLMSCOPE_QUANTIZE, else auto; lower-cased and checked."""
    raw = option_value if option_value is not None else os.environ.get("LLMSCOPE_QUANTIZE", "").strip() or "auto"
    value = raw.strip().lower()
    if value not in QUANTIZE_CHOICES:
        where = "--quantize" if option_value is not None else "LLMSCOPE_QUANTIZE"
        raise UsageError(f"{where} takes {' | '.join(QUANTIZE_CHOICES)} (got {raw!r})")
    return value


# ---------------------------------------------------------------------------------------------- shared parts


@dataclass(frozen=True)
class ModelSettings:
    """Which model and how to run it: everything the loader needs, plus torch's thread count."""

    model: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    device_map: str | None = None
    trust_remote_code: bool = False
    threads: int | None = None
    quantize: str = "auto"

    def __post_init__(self) -> None:
        if self.quantize not in QUANTIZE_CHOICES:
            raise UsageError(f"--quantize takes {' | '.join(QUANTIZE_CHOICES)} (got {self.quantize!r})")
        if self.model is not None and not self.model.strip():
            raise UsageError("--model is empty", hint="pass a hub id, a folder, a .gguf file or an alias, "
                             "or leave --model out for the default")
        plain_text("--model", self.model)
        whole_number("--threads", self.threads, 1, MAX_THREADS)
        if self.device_map not in (None, "auto"):
            raise UsageError(f"--device-map takes 'auto' (got {self.device_map!r})")


@dataclass(frozen=True)
class PromptSettings:
    """How a prompt becomes tokens: the chat template (None: the command's default) and a system message."""

    chat: bool | None = None
    system: str | None = None
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        plain_text("--system", self.system)
        if self.system is not None and self.chat is False:
            object.__setattr__(self, "warnings", (*self.warnings, "--system is ignored with --no-chat"))

    @property
    def applies_template(self) -> bool:
        """The chat-template rule of every command: the raw prompt, unless --chat (or --system: a system message
        exists only inside a chat template) asks for the tokenizer's template."""
        return self.chat if self.chat is not None else self.system is not None


@dataclass(frozen=True)
class BatchSettings:
    """--batch FILE: many prompts through one model load, one JSON Lines record per prompt."""

    path: str  # a file, or "-" for stdin
    input_format: str = "auto"  # auto | lines | jsonl
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.input_format not in ("auto", "lines", "jsonl"):
            raise UsageError(f"--batch-format takes auto, lines or jsonl (got {self.input_format!r})")
        whole_number("--batch-size", self.batch_size, 1, MAX_BATCH_SIZE)
        if self.path != "-":
            path = Path(self.path)
            if path.is_dir():
                raise UsageError(f"--batch {self.path} is a folder", hint="pass a file with one prompt per line")
            if not path.exists():  # a pipe, /dev/stdin or <(cmd) is as good as a file
                raise UsageError(f"--batch: no such file {self.path}", hint="pass a file, or - for stdin")


# ---------------------------------------------------------------------------------------------- generation


@dataclass(frozen=True)
class GenerationSettings:
    """How to pick tokens. Greedy unless do_sample; top_k 0 and top_p 1.0 mean no filter."""

    max_new_tokens: int = 50
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    use_cache: bool = True
    logprobs: int = 0  # how many alternatives to keep per generated token
    static_cache: bool = False  # a preallocated KV cache of prompt + max_new_tokens positions
    compile: bool = False  # torch.compile the one-token decode step (needs static_cache)
    min_new_tokens: int = 0  # EOS is held back (never picked) until this many new tokens
    ignore_eos: bool = False  # EOS is never picked: always max_new_tokens new tokens

    def __post_init__(self) -> None:
        whole_number("--max-new-tokens", self.max_new_tokens, 1, MAX_NEW_TOKENS)
        whole_number("--min-new-tokens", self.min_new_tokens, 0, MAX_NEW_TOKENS)
        if self.min_new_tokens > self.max_new_tokens:
            raise UsageError(f"--min-new-tokens {self.min_new_tokens} exceeds --max-new-tokens {self.max_new_tokens}",
                             hint="raise --max-new-tokens too, or use --ignore-eos for exactly --max-new-tokens")
        if self.ignore_eos and self.min_new_tokens:
            raise UsageError("--min-new-tokens has no effect with --ignore-eos (EOS is held back for every token)",
                             hint="drop one of them")
        real_number("--temperature", self.temperature, 0.0, 1e6,
                    hint="use a small value like 0.1 for near-greedy sampling")
        if self.do_sample and self.temperature == 0:
            raise UsageError("--temperature must be above 0 when sampling (got 0)",
                             hint="use a small value like 0.1 for near-greedy sampling, or leave out --sample")
        whole_number("--top-k", self.top_k, 0, MAX_TOP)
        real_number("--top-p", self.top_p, 0.0, 1.0, low_open=True)
        whole_number("--seed", self.seed, 0, MAX_SEED)
        whole_number("--logprobs", self.logprobs, 0, MAX_TOP)
        if (self.static_cache or self.compile) and not self.use_cache:
            raise UsageError("--static-cache and --compile need the KV cache", hint="drop --no-cache")
        if self.compile and not self.static_cache:
            raise UsageError("--compile needs --static-cache (fixed shapes)", hint="add --static-cache")

    @classmethod
    def from_options(cls, max_new_tokens: int = 50, sample: bool = False, temperature: float | None = None,
                     top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
                     use_cache: bool = True, logprobs: int = 0, static_cache: bool = False,
                     compile: bool = False, min_new_tokens: int = 0, ignore_eos: bool = False
                     ) -> GenerationSettings:
        """The CLI's options as settings: any of --temperature > 0, --top-k or --top-p implies --sample, and
        --temperature 0 means greedy; --compile brings a static cache."""
        real_number("--temperature", temperature, 0.0, 1e6)
        if top_k is not None and top_k < 1:
            raise UsageError(f"--top-k must be at least 1 (got {top_k})", hint="leave it out to sample from all")
        do_sample = sample or (temperature is not None and temperature > 0) or top_k is not None or (
            top_p is not None)
        return cls(max_new_tokens=max_new_tokens, do_sample=do_sample,
                   temperature=1.0 if temperature is None or (temperature == 0 and not sample) else temperature,
                   top_k=top_k or 0, top_p=1.0 if top_p is None else top_p, seed=seed, use_cache=use_cache,
                   logprobs=logprobs, static_cache=static_cache or compile, compile=compile,
                   min_new_tokens=min_new_tokens, ignore_eos=ignore_eos)

    @property
    def eos_held_for(self) -> int:
        """How many first new tokens EOS is held back for: max_new_tokens with ignore_eos."""
        return self.max_new_tokens if self.ignore_eos else self.min_new_tokens

    def ignored(self) -> tuple[str, ...]:
        """Options that greedy decoding does not use."""
        if self.do_sample or self.seed is None:
            return ()
        return ("--seed is ignored without sampling (add --sample)",)


@dataclass(frozen=True)
class GenerateCommand:
    """Everything `generate` was asked for."""

    generation: GenerationSettings
    prompt: PromptSettings
    model: ModelSettings
    mode: OutputMode = OutputMode.HUMAN
    show_probs: str | None = None  # None, "probability" or "entropy"
    full_text: bool = False
    stream: bool | None = None
    batch: BatchSettings | None = None

    def __post_init__(self) -> None:
        if self.show_probs not in (None, "probability", "entropy"):
            raise UsageError(f"--show-probs takes 'probability' or 'entropy' (got {self.show_probs!r})")
        if self.mode not in (OutputMode.HUMAN, OutputMode.JSON, OutputMode.JSONL):
            raise UsageError(f"generate writes text, --json or --jsonl (not --{self.mode.value})")
        if self.batch is not None and self.generation.compile:
            raise UsageError("--compile is for one prompt at a time", hint="drop --compile with --batch")

    @property
    def json_like(self) -> bool:
        return self.mode in (OutputMode.JSON, OutputMode.JSONL) or self.batch is not None

    def warnings(self) -> tuple[str, ...]:
        notes = list(self.prompt.warnings) + list(self.generation.ignored())
        if self.generation.logprobs and not self.json_like:
            notes.append("--logprobs is ignored without --json (try --show-probs for people)")
        writes = "--batch" if self.batch is not None else f"--{self.mode.value}"  # the option the user typed
        if self.show_probs and self.json_like:
            notes.append(f"--show-probs is ignored with {writes} (use --logprobs K)")
        if self.stream and self.json_like:
            notes.append(f"--stream is ignored with {writes}")
        return tuple(notes)


@dataclass(frozen=True)
class NextTokenSettings:
    """What to show of the next-token distribution."""

    top_k: int = 10
    steps: int = 1
    temperature: float | None = None
    top_p: float | None = None
    lens: bool = False

    def __post_init__(self) -> None:
        whole_number("--top-k", self.top_k, 1, MAX_TOP)
        whole_number("--steps", self.steps, 1, MAX_NEW_TOKENS)
        real_number("--temperature", self.temperature, 0.0, 1e6, low_open=True,
                    hint="use a small value like 0.1 to sharpen the distribution")
        real_number("--top-p", self.top_p, 0.0, 1.0, low_open=True)

    @property
    def sampler_view(self) -> bool:
        return self.temperature is not None or self.top_p is not None


@dataclass(frozen=True)
class NextTokenCommand:
    """Everything `next-token` was asked for."""

    inspect: NextTokenSettings
    prompt: PromptSettings
    model: ModelSettings
    mode: OutputMode = OutputMode.HUMAN
    batch: BatchSettings | None = None

    def __post_init__(self) -> None:
        if self.mode not in (OutputMode.HUMAN, OutputMode.JSON, OutputMode.JSONL):
            raise UsageError(f"next-token writes tables, --json or --jsonl (not --{self.mode.value})")

    def warnings(self) -> tuple[str, ...]:
        return self.prompt.warnings


@dataclass(frozen=True)
class TokenizeCommand:
    """Everything `tokenize` was asked for."""

    models: tuple[str | None, ...]
    prompt: PromptSettings
    mode: OutputMode = OutputMode.HUMAN
    special: bool = True
    decode: str | None = None
    trust_remote_code: bool = False
    batch: BatchSettings | None = None

    def __post_init__(self) -> None:
        for model in self.models:
            ModelSettings(model=model)
        plain_text("--decode", self.decode)
        if self.mode == OutputMode.CSV:
            raise UsageError("tokenize writes a table, --ids, --json or --jsonl (not --csv)")
        if self.decode is not None and len(self.models) > 1:
            raise UsageError("--decode takes one --model")
        if self.decode is not None and self.batch is not None:
            raise UsageError("give either --decode or --batch, not both")
        if self.batch is not None and len(self.models) > 1:
            raise UsageError("--batch takes one --model")

    def warnings(self) -> tuple[str, ...]:
        return self.prompt.warnings
