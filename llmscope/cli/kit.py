"""Plumbing every llmscope command shares: typed option aliases, the command context that turns failures into one
line and an exit code, the loading status line, and --batch output. It imports neither torch nor rich at import."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Annotated, Any

import typer

from llmscope.client.errors import DEFAULT_TIMEOUT
from llmscope.core.command_settings import (
    BatchSettings,
    ModelSettings,
    OutputMode,
    plain_text,
    quantize_from,
    read_bytes,
    threads_from,
    utf8_text,
)
from llmscope.core.errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RUNTIME,
    EXIT_TERMINATED,
    LlmscopeError,
    UsageError,
    stop_if_signalled,
    terminated,
    translate,
)
from llmscope.core.output_files import HTML_FILE

if TYPE_CHECKING:  # rich (through llmscope.render) loads only when a command runs, not for --help
    from llmscope.cli.batch import BatchItem, BatchOutcome
    from llmscope.render.display import Display

EXIT_CODES_HELP = "Exit codes: 0 success, 1 runtime failure, 2 usage error, 130 interrupted, 143 terminated."

# ------------------------------------------------------------------------------------ shared options

ModelOpt = Annotated[str | None, typer.Option(
    "--model", "-m", metavar="MODEL", help="Hub id, local folder, .gguf file or alias (smollm2, phi3). "
    "Default: $LLMSCOPE_MODEL, else the embedded SmolLM2-135M-Instruct.", show_default=False)]
DeviceOpt = Annotated[str, typer.Option("--device", metavar="DEVICE",
    help="auto | cpu | cuda | cuda:N | mps (auto: CUDA, MPS, CPU).")]
DtypeOpt = Annotated[str, typer.Option(
    "--dtype", metavar="DTYPE", help="auto | float32 | bfloat16 | float16 (auto: bfloat16 on CUDA, float32 on CPU).")]
DeviceMapOpt = Annotated[str | None, typer.Option(
    "--device-map", metavar="auto",
    help="'auto' lets accelerate place a model too large for one device.", show_default=False)]
QuantizeOpt = Annotated[str | None, typer.Option(
    "--quantize", metavar="auto|none|int8|int4", help="How weights are held: auto keeps a GGUF file's 4/8-bit "
    "blocks packed (else as stored); none dequantizes to --dtype (the exact reference); int8 / int4 pack every "
    "linear layer at load. Default: $LLMSCOPE_QUANTIZE, else auto.", show_default=False)]
TrustOpt = Annotated[bool, typer.Option(
    "--trust-remote-code", help="Run Python code shipped with the model (off unless given).")]
ThreadsOpt = Annotated[int | None, typer.Option(
    "--threads", "-t", metavar="N",
    help="CPU threads for torch. Default: $LLMSCOPE_THREADS, else one per core that other "
    "processes leave free (torch's own choice on an idle machine).", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")]
JsonlOpt = Annotated[bool, typer.Option("--jsonl", help="JSON on one line (JSON Lines; what --batch writes).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Nothing on stderr but errors.")]
ChatOpt = Annotated[bool | None, typer.Option(
    "--chat/--no-chat", help="Wrap the prompt in the tokenizer's chat template as one user turn (default: off, "
    "the raw prompt, as in every command; on with --system).", show_default=False)]
SystemOpt = Annotated[str | None, typer.Option("--system", metavar="TEXT", help="System message for the chat template.",
                                               show_default=False)]
PromptArg = Annotated[str, typer.Argument(
    help="The prompt; '-' reads it from stdin (one final newline dropped).", show_default=False)]
OptionalPromptArg = Annotated[str | None, typer.Argument(
    help="The prompt; '-' reads it from stdin (one final newline dropped), or give --batch.", show_default=False)]
BatchOpt = Annotated[str | None, typer.Option(
    "--batch", metavar="FILE", help="Many prompts, one model load: one prompt per line, or JSON Lines with "
    "\"prompt\" (and \"id\"); '-' reads stdin. Writes one JSON record per prompt, in order.", show_default=False)]
BatchFormatOpt = Annotated[str, typer.Option(
    "--batch-format", metavar="auto|lines|jsonl",
    help="auto | lines | jsonl: how --batch input is read (auto: JSON Lines when the first "
    "non-blank line starts with '{').")]
EndpointOpt = Annotated[str | None, typer.Option(
    "--endpoint", metavar="URL", help="Ask a server instead of loading a model: `llmscope serve`, or any "
    "OpenAI-compatible server (vLLM, llama.cpp, ollama). Default: $LLMSCOPE_ENDPOINT. -m then names the served "
    "model.", show_default=False)]
ApiKeyOpt = Annotated[str | None, typer.Option(
    "--api-key", metavar="KEY",
    help="The endpoint's API key. Default: $LLMSCOPE_API_KEY. Sent to that server only: a redirect "
    "to another server is refused.", show_default=False)]
TimeoutOpt = Annotated[float | None, typer.Option(
    "--timeout", metavar="SECONDS", help="With an endpoint: the longest wait for one whole answer.  "
    f"[default: {DEFAULT_TIMEOUT:g}]", show_default=False)]
ContextOpt = Annotated[str | None, typer.Option(
    "--prompt", metavar="TEXT",
    help="Context before TEXT (not scored); with --chat, the question TEXT answers.", show_default=False)]
ScoreChatOpt = Annotated[bool, typer.Option(
    "--chat", help="Score TEXT as the assistant's answer to --prompt under the chat template.")]
WindowOpt = Annotated[int | None, typer.Option(
    "--window", metavar="N", help="Tokens per forward pass (default: the model's context length).", show_default=False)]
StrideOpt = Annotated[int | None, typer.Option(
    "--stride", metavar="N", help="Tokens the window moves for texts longer than it (default: half the window).",
    show_default=False)]
MaxTokensOpt = Annotated[int | None, typer.Option(
    "--max-tokens", metavar="N", help="Score at most this many tokens of the text.", show_default=False)]
PortOpt = Annotated[int, typer.Option("--port", "-p", metavar="PORT",
    help="Port to listen on; 0 picks a free one (printed).")]
ServeCheckOpt = Annotated[bool, typer.Option(
    "--check", help="Load the model, print what would be served, and exit without listening.")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", metavar="N",
    help="With --batch: prompts run together (padded).")]
HtmlOpt = Annotated[str | None, typer.Option(
    "--html", metavar="FILE|DIR", help="Also write the result as one self-contained HTML page (data inline, opens "
    "from disk, no network); with --batch, a folder of one page per record.", show_default=False), HTML_FILE]


def example(*args: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Attach a working command line to a command ({model} stands for a model folder); the contract tests run
    every command of the app with its example, so a command without one fails them."""

    def attach(function: Callable[..., Any]) -> Callable[..., Any]:
        function.__llmscope_example__ = args  # type: ignore[attr-defined]
        return function

    return attach


# ------------------------------------------------------------------------------------ plumbing


def debug_enabled() -> bool:
    return os.environ.get("LLMSCOPE_DEBUG", "").strip() not in ("", "0", "false", "no")


def quiet_libraries() -> None:
    """Keep transformers / huggingface_hub chatter (log lines, tqdm bars, warnings) off stdout and terse."""
    if debug_enabled():
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if not sys.stderr.isatty():  # progress bars only on a terminal; tqdm reads this once, when it is imported
        os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")


def silence_stdout() -> None:
    """Point stdout at /dev/null after the reader went away, so that the final flush cannot fail again."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


@contextlib.contextmanager
def command(quiet: bool = False, mode: OutputMode = OutputMode.HUMAN) -> Iterator[Display]:
    """Set up output for one command and turn every failure into one line on stderr and an exit code.

    A closed stdout (`| head`) is not a failure: exit 0 quietly. Ctrl-C exits 130, SIGTERM 143.
    """
    from llmscope.render.display import Display, attach_logging

    display = Display(quiet=quiet, mode=mode)
    attach_logging(display)
    quiet_libraries()
    try:
        yield display
        stop_if_signalled()  # a Ctrl-C whose KeyboardInterrupt was swallowed on the way still ends in 130
    except typer.Exit:
        raise
    except BrokenPipeError:
        silence_stdout()
        raise typer.Exit(EXIT_OK) from None
    except LlmscopeError as error:
        if debug_enabled():
            raise
        display.error(str(error))
        raise typer.Exit(error.exit_code) from None
    except KeyboardInterrupt:
        display.error("terminated" if terminated() else "interrupted")
        raise typer.Exit(EXIT_TERMINATED if terminated() else EXIT_INTERRUPTED) from None
    except Exception as error:  # anything else still becomes one line; LLMSCOPE_DEBUG=1 shows the traceback
        if debug_enabled():
            raise
        known = translate(error, display.model_info)
        if known is not None:
            display.error(str(known))
            raise typer.Exit(known.exit_code) from None
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        display.error(f"{type(error).__name__}: {first} (set LLMSCOPE_DEBUG=1 for the traceback)")
        raise typer.Exit(EXIT_RUNTIME) from None


def interrupted_exit() -> typer.Exit:
    """The exit for a run that stopped early on Ctrl-C (130) or SIGTERM (143) after showing what it had."""
    return typer.Exit(EXIT_TERMINATED if terminated() else EXIT_INTERRUPTED)


def read_prompt(prompt: str, what: str = "prompt", exact: bool = False) -> str:
    """The prompt itself, or stdin when it is '-' (one trailing newline dropped, the one `echo` adds, unless exact:
    a text to measure keeps its bytes, final newline included); empty is a usage error."""
    if prompt != "-":
        text = prompt
    else:
        text = utf8_text(read_bytes(None, "stdin"), "stdin")
        text = text[:-1] if text.endswith("\n") and not exact else text
    return require_text(text, what)


def require_text(text: str, what: str = "prompt") -> str:
    """The text, unless it is empty or holds a character that is not valid Unicode (a usage error)."""
    plain_text(f"the {what}", text)
    if not text.strip():
        raise UsageError(f"the {what} is empty", hint="pass some text, or - to read it from stdin")
    return text


def model_settings(model: str | None, device: str, dtype: str, device_map: str | None, trust_remote_code: bool,
                   threads: int | None, quantize: str | None = None) -> ModelSettings:
    return ModelSettings(model=model, device=device, dtype=dtype, device_map=device_map,
                         trust_remote_code=trust_remote_code, threads=threads_from(threads),
                         quantize=quantize_from(quantize))


def load(display: Display, settings: ModelSettings, fit_threads: bool = True) -> Any:  # -> LoadedModel
    """Load the model with a spinner (or the GGUF conversion bar on first use) and print the summary line.

    On the CPU, torch's threads follow --threads / $LLMSCOPE_THREADS, else the cores other processes leave free
    (fit_threads; bench-cache chooses its own), with a warning when the machine is busy.
    """
    from llmscope.loading.loader import (
        cache_entry_is_whole,
        gguf_cache_dir,
        hide_library_progress_bars,
        load_model,
        resolve_device,
        resolve_model_spec,
    )
    from llmscope.render.display import model_summary

    spec = resolve_model_spec(settings.model)
    converting = spec.is_gguf and settings.quantize == "none" and not cache_entry_is_whole(gguf_cache_dir(spec))
    show_bars = converting and display.err.is_terminal and not display.quiet
    if not show_bars:
        hide_library_progress_bars()
    # A first GGUF load shows transformers' own conversion progress bar; other loads a spinner.
    # Threads first: the loader's invariance self-test checks the kernels at the thread count the run will use.
    if (settings.device_map is None and resolve_device(settings.device) == "cpu"
            and (fit_threads or settings.threads is not None)):
        fit_cpu_threads(display, settings.threads)
    with contextlib.nullcontext() if show_bars else display.spinner(f"loading {spec.name}"):
        loaded = load_model(spec, device=settings.device, dtype=settings.dtype, device_map=settings.device_map,
                            trust_remote_code=settings.trust_remote_code, quantize=settings.quantize)
    model_summary(display, loaded.info)
    warn_all(display, loaded.info.load_warnings)
    display.model_info = loaded.info
    return loaded


def fit_cpu_threads(display: Display, asked: int | None) -> None:
    """Set torch's CPU threads to the asked count, or to the cores other processes leave free (and say so)."""
    from llmscope.loading.cputhreads import BUSY_PERCENT, fit_torch_threads

    choice, using = fit_torch_threads(asked)
    if choice.busy_percent is not None and choice.busy_percent >= BUSY_PERCENT:
        display.warning(f"other processes keep the CPUs {choice.busy_percent:.0f}% busy: using {using} torch "
                        f"thread{'s' if using != 1 else ''} of {choice.cores} cores (--threads N to choose); "
                        "expect slower, noisier runs")


def html_target(html: str | None) -> Any:  # -> Path | None
    """--html's path (None without it); the option group checked it before the command ran."""
    from pathlib import Path

    return None if html is None else Path(html)


def warn_all(display: Display, notes: tuple[str, ...]) -> None:
    for note in notes:
        display.warning(note)


def write_batch(display: Display, items: list[BatchItem], outcomes: Iterator[BatchOutcome[Any]],
                show: Callable[[Any, dict[str, Any]], None]) -> None:
    """Write one JSON record per --batch item as soon as it is done (show(result, keys) for a result, an error
    record otherwise), with a progress bar on stderr; exit 1 if any record failed, 130 when interrupted."""
    from llmscope.render.display import batch_progress

    failed = 0
    with batch_progress(display, len(items)) as advance:
        try:
            for outcome in outcomes:
                failed += outcome.error is not None
                advance(lambda outcome=outcome: write_record(display, outcome, show))
        except KeyboardInterrupt:
            display.error(f"{'terminated' if terminated() else 'interrupted'}: the finished records were written")
            raise interrupted_exit() from None
    if failed:
        display.warning(f"{failed} of {len(items)} prompts failed (see their error records)")
        raise typer.Exit(EXIT_RUNTIME)


def write_record(display: Display, outcome: BatchOutcome[Any], show: Callable[[Any, dict[str, Any]], None]) -> None:
    """One --batch record: the result through its command's renderer, or the error record."""
    if outcome.error is not None:
        display.record({**outcome.keys(), "error": outcome.error, "exit_code": outcome.exit_code})
    else:
        show(outcome.result, outcome.keys())


def batch_from_options(path: str | None, input_format: str, size: int) -> BatchSettings | None:
    """--batch FILE with its format and size as settings, or None; the two options alone are a usage error."""
    if path is None:
        given = [name for name, changed in (("--batch-format", input_format != "auto"), ("--batch-size", size != 8))
                 if changed]
        if given:
            raise UsageError(f"{' and '.join(given)} need{'s' if len(given) == 1 else ''} --batch FILE")
        return None
    return BatchSettings(path=path, input_format=input_format, batch_size=size)


def prompt_or_batch(prompt: str | None, batch: BatchSettings | None, exact: bool = False) -> str | None:
    """The one prompt (read from stdin for '-', exact as read_prompt says), or None with --batch; both or neither
    is a usage error."""
    if batch is not None:
        if prompt is not None:
            raise UsageError("give either PROMPT or --batch, not both")
        return None
    if prompt is None:
        raise UsageError("missing PROMPT", hint="pass the prompt, - to read it from stdin, or --batch FILE")
    return read_prompt(prompt, exact=exact)


def read_batch(settings: BatchSettings | None) -> list[Any] | None:
    """The --batch items, read before any model loads (None without --batch)."""
    if settings is None:
        return None
    from llmscope.cli.batch import read_items

    return read_items(settings)


def read_text(text: str | None, file: str | None) -> str:
    """TEXT, stdin ('-') or --file PATH: exactly one of them, byte for byte (a file's final newline is part of its
    text, as it is of an argument that holds one)."""
    if (text is None) == (file is None):
        raise UsageError("give either TEXT or --file PATH" if file is not None else "missing TEXT",
                         hint="pass the text, - to read stdin, or --file PATH")
    if file is None:
        return read_prompt(text or "", "text", exact=True)
    try:
        data = read_bytes(file, f"--file {file}")
    except OSError as error:
        raise UsageError(f"cannot read --file {file}: {error.strerror or error}") from None
    content = utf8_text(data, f"--file {file}")
    return require_text(content, "text")
