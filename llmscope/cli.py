"""The llmscope command line: thin Typer commands that parse options, call the library and hand results
to llmscope.render. No torch or transformers at import time, so `llmscope --help` stays fast."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated

import typer

from llmscope import __version__
from llmscope.errors import EXIT_INTERRUPTED, EXIT_RUNTIME, LlmscopeError, UsageError

if TYPE_CHECKING:  # rich (through llmscope.render) loads only when a command runs, not for --help
    from llmscope.render import Display

EXIT_CODES_HELP = "Exit codes: 0 success, 1 runtime failure, 2 usage error, 130 interrupted."

app = typer.Typer(
    name="llmscope",
    help="Look inside causal language models: generate, tokenize, architecture, next-token, bench-cache.\n\n"
    + EXIT_CODES_HELP,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# ------------------------------------------------------------------------------------ shared options

ModelOpt = Annotated[str | None, typer.Option(
    "--model", "-m", help="Hub id, local folder, .gguf file or alias (smollm2, phi3). "
    "Default: $LLMSCOPE_MODEL, else the embedded SmolLM2-135M-Instruct.", show_default=False)]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N | mps (auto: CUDA, MPS, CPU).")]
DtypeOpt = Annotated[str, typer.Option(
    "--dtype", help="auto | float32 | bfloat16 | float16 (auto: bfloat16 on CUDA, float32 on CPU).")]
DeviceMapOpt = Annotated[str | None, typer.Option(
    "--device-map", help="'auto' lets accelerate place a model too large for one device.", show_default=False)]
TrustOpt = Annotated[bool, typer.Option(
    "--trust-remote-code", help="Run Python code shipped with the model (off unless given).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Nothing on stderr but errors.")]
ChatOpt = Annotated[bool | None, typer.Option(
    "--chat/--no-chat", help="Apply the tokenizer's chat template.", show_default=False)]
SystemOpt = Annotated[str | None, typer.Option("--system", help="System message for the chat template.",
                                               show_default=False)]
PromptArg = Annotated[str, typer.Argument(help="The prompt; '-' reads it from stdin.", show_default=False)]


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"llmscope {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", "-V", help="Print the version and exit.",
                                          callback=_version_callback, is_eager=True)] = False,
) -> None:
    """Look inside causal language models from the command line."""


# ------------------------------------------------------------------------------------ plumbing


def _debug() -> bool:
    return os.environ.get("LLMSCOPE_DEBUG", "").strip() not in ("", "0", "false", "no")


def _quiet_libraries() -> None:
    """Keep transformers / huggingface_hub chatter (log lines, tqdm bars, warnings) off stdout and terse."""
    if _debug():
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")


@contextlib.contextmanager
def command(quiet: bool = False) -> Iterator[Display]:
    """Set up output for one command and turn failures into one line on stderr and an exit code."""
    from llmscope.render import Display, attach_logging

    display = Display(quiet=quiet)
    attach_logging(display)
    _quiet_libraries()
    try:
        yield display
    except typer.Exit:
        raise
    except LlmscopeError as error:
        if _debug():
            raise
        display.error(str(error))
        raise typer.Exit(error.exit_code) from None
    except KeyboardInterrupt:
        display.error("interrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except Exception as error:  # anything else still becomes one line; LLMSCOPE_DEBUG=1 shows the traceback
        if _debug():
            raise
        if type(error).__name__ == "OutOfMemoryError":
            from llmscope.loader import out_of_memory_error

            info = display.model_info
            display.error(str(out_of_memory_error(info.device if info else None, info.model if info else "the model",
                                                  info.parameters if info else None, info.dtype if info else None)))
        else:
            display.error(f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
                          " (set LLMSCOPE_DEBUG=1 for the traceback)")
        raise typer.Exit(EXIT_RUNTIME) from None


def read_prompt(prompt: str, what: str = "prompt") -> str:
    """The prompt itself, or stdin when it is '-' (one trailing newline dropped)."""
    if prompt != "-":
        return prompt
    data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UsageError(f"stdin is not valid UTF-8 (byte {error.start})",
                         hint=f"convert the {what} with `iconv -t utf-8`") from None
    return text[:-1] if text.endswith("\n") else text


def load(display: Display, model: str | None, device: str, dtype: str, device_map: str | None,
         trust_remote_code: bool):  # -> LoadedModel
    from llmscope.loader import (
        cache_entry_is_whole,
        gguf_cache_dir,
        hide_library_progress_bars,
        load_model,
        resolve_model_spec,
    )
    from llmscope.render import model_summary

    spec = resolve_model_spec(model)
    converting = spec.is_gguf and not cache_entry_is_whole(gguf_cache_dir(spec))
    show_bars = converting and display.err.is_terminal and not display.quiet
    if not show_bars:
        hide_library_progress_bars()
    # A first GGUF load shows transformers' own conversion progress bar; other loads a spinner.
    with contextlib.nullcontext() if show_bars else display.spinner(f"loading {spec.name}"):
        loaded = load_model(spec, device=device, dtype=dtype, device_map=device_map,
                            trust_remote_code=trust_remote_code)
    model_summary(display, loaded.info)
    display.model_info = loaded.info
    return loaded


# ------------------------------------------------------------------------------------ generate


@app.command(epilog=EXIT_CODES_HELP)
def generate(
    prompt: PromptArg,
    model: ModelOpt = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", "-n", help="Most new tokens.")] = 50,
    chat: ChatOpt = None,
    system: SystemOpt = None,
    sample: Annotated[bool, typer.Option("--sample", help="Sample instead of greedy decoding.")] = False,
    temperature: Annotated[float | None, typer.Option(
        help="Sampling temperature (implies --sample; 0 means greedy).", show_default=False)] = None,
    top_k: Annotated[int | None, typer.Option(
        "--top-k", help="Sample from the k most likely tokens (implies --sample).", show_default=False)] = None,
    top_p: Annotated[float | None, typer.Option("--top-p", help="Nucleus sampling threshold (implies --sample).",
                                                show_default=False)] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed: same seed, same text.", show_default=False)] = None,
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="Use the KV cache.")] = True,
    static_cache: Annotated[bool, typer.Option(
        "--static-cache", help="Preallocate the KV cache for prompt + --max-new-tokens (fixed shapes).")] = False,
    compile_model: Annotated[bool, typer.Option(
        "--compile", help="torch.compile the decode step (with --static-cache; compiling takes seconds).")] = False,
    stream: Annotated[bool | None, typer.Option(
        "--stream/--no-stream", help="Print tokens as they come (default: when stdout is a terminal).",
        show_default=False)] = None,
    full_text: Annotated[bool, typer.Option("--full-text", help="Print the prompt before the continuation.")] = False,
    show_probs: Annotated[str | None, typer.Option(
        "--show-probs", metavar="[=probability|entropy]",
        help="Colour each token by its probability (--show-probs=entropy: by the distribution's entropy).",
        show_default=False)] = None,
    logprobs: Annotated[int, typer.Option(
        "--logprobs", help="With --json: each token's log-probability and its top K alternatives.")] = 0,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    device_map: DeviceMapOpt = None,
    trust_remote_code: TrustOpt = False,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Generate a continuation of PROMPT (greedy unless sampling is asked for), with timings and why it stopped."""
    with command(quiet) as display:
        if show_probs not in (None, "probability", "entropy"):
            raise UsageError(f"--show-probs takes 'probability' or 'entropy' (got {show_probs!r})")
        text = read_prompt(prompt)
        if not text.strip():
            raise UsageError("the prompt is empty", hint="pass some text, or - to read it from stdin")
        from llmscope.generation import GenerationSettings
        from llmscope.generation import generate as run_generation
        from llmscope.render import generation as show

        do_sample = sample or (temperature is not None and temperature > 0) or top_k is not None or top_p is not None
        settings = GenerationSettings(
            max_new_tokens=max_new_tokens, do_sample=do_sample,
            temperature=1.0 if temperature is None or (temperature == 0 and not sample) else temperature,
            top_k=top_k or 0, top_p=1.0 if top_p is None else top_p, seed=seed, use_cache=cache,
            logprobs=logprobs, static_cache=static_cache or compile_model, compile=compile_model)
        from llmscope.generation import check_settings

        check_settings(settings)
        if top_k is not None and top_k < 1:
            raise UsageError(f"--top-k must be at least 1 (got {top_k})", hint="leave it out to sample from all tokens")
        loaded = load(display, model, device, dtype, device_map, trust_remote_code)
        vocab = len(loaded.tokenizer)
        if top_k is not None and top_k > vocab:
            raise UsageError(f"--top-k {top_k} is larger than the vocabulary ({vocab} tokens)")
        use_chat = chat if chat is not None else _has_template(loaded.tokenizer)
        streaming = (stream if stream is not None else display.stdout_is_terminal) and not json_output
        if show_probs and not json_output and not quiet:
            display.note(show.confidence_legend(show_probs))
        if streaming and full_text:
            display.write(_prompt_text(loaded.tokenizer, text, use_chat, system))
        result = run_generation(loaded, text, settings, chat=use_chat, system=system,
                                on_token=show.stream_printer(display, show_probs) if streaming else None)
        if json_output:
            show.show_generation_json(display, loaded.info, result, full_text, logprobs > 0)
        elif streaming:
            display.write("\n")
        else:
            show.show_text(display, result, show_probs, full_text)
        show.summary(display, result, show_probs)
        if result.finish_reason == "interrupted":
            raise typer.Exit(EXIT_INTERRUPTED)


def _has_template(tokenizer) -> bool:
    from llmscope.tokenization import has_chat_template

    return has_chat_template(tokenizer)


def _prompt_text(tokenizer, text: str, chat: bool, system: str | None) -> str:
    from llmscope.tokenization import prompt_ids

    return prompt_ids(tokenizer, text, chat=chat, system=system)[0]


# ------------------------------------------------------------------------------------ tokenize


@app.command(epilog=EXIT_CODES_HELP)
def tokenize(
    text: Annotated[str | None, typer.Argument(help="The text; '-' reads it from stdin.", show_default=False)] = None,
    model: Annotated[list[str] | None, typer.Option(
        "--model", "-m", help="Model whose tokenizer to use; give several to compare them side by side.",
        show_default=False)] = None,
    ids: Annotated[bool, typer.Option("--ids", help="Print only the ids, space-separated.")] = False,
    decode: Annotated[str | None, typer.Option(
        "--decode", help='Decode ids back to text, e.g. "504 3575 282"; "-" reads them from stdin.',
        show_default=False)] = None,
    special: Annotated[bool, typer.Option("--special/--no-special", help="Add BOS/EOS as the model does.")] = True,
    chat: Annotated[bool, typer.Option("--chat", help="Tokenize after the chat template.")] = False,
    system: SystemOpt = None,
    trust_remote_code: TrustOpt = False,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Show how TEXT splits into tokens: ids, pieces, spans and counts. Loads the tokenizer only."""
    with command(quiet) as display:
        from llmscope.loader import load_tokenizer, resolve_model_spec
        from llmscope.render import tokens as show
        from llmscope.results import ModelInfo
        from llmscope.tokenization import decode_ids, parse_id_list, tokenize_text, vocabulary_size

        specs = [resolve_model_spec(m) for m in (model or [None])]
        light = not chat  # the conversion cache's tokenizer.json can be read without torch / transformers
        if decode is not None:
            if text is not None:
                raise UsageError("give either TEXT or --decode, not both")
            if len(specs) > 1:
                raise UsageError("--decode takes one --model")
            tokenizer = load_tokenizer(specs[0], trust_remote_code, light=True)
            decoded = decode_ids(tokenizer, parse_id_list(read_prompt(decode, "ids"), vocabulary_size(tokenizer)),
                                 specs[0].name, skip_special_tokens=not special)
            info = ModelInfo(model=specs[0].name, source=specs[0].kind)
            show.show_decoded_json(display, info, decoded) if json_output else show.show_decoded(display, decoded)
            return
        if text is None:
            raise UsageError("missing TEXT", hint="pass the text, or - to read it from stdin, or --decode IDS")
        source = read_prompt(text, "text")
        results = []
        for spec in specs:
            tokenizer = load_tokenizer(spec, trust_remote_code, light=light)
            results.append(tokenize_text(tokenizer, source, spec.name, add_special_tokens=special, chat=chat,
                                         system=system))
        info = ModelInfo(model=", ".join(spec.name for spec in specs), source=",".join(s.kind for s in specs))
        if json_output:
            show.show_tokenization_json(display, info, results)
        elif ids:
            show.show_ids(display, results)
        elif len(results) > 1:
            show.show_comparison(display, results)
        else:
            show.show_tokenization(display, results[0])


# ------------------------------------------------------------------------------------ bench-cache


@app.command("bench-cache", epilog=EXIT_CODES_HELP)
def bench_cache(
    prompt: Annotated[str | None, typer.Argument(
        help="The prompt; '-' reads it from stdin. Default: the seed's 'Write a very long email apologizing to "
        "Sarah...'.", show_default=False)] = None,
    model: ModelOpt = None,
    max_new_tokens: Annotated[int | None, typer.Option(
        "--max-new-tokens", "-n", help="New tokens per run, exactly (EOS is suppressed).  [default: 100]",
        show_default=False)] = None,
    warmup: Annotated[int, typer.Option(
        "--warmup", help="Untimed runs of each mode before timing starts (at the first length).")] = 1,
    repeat: Annotated[int | None, typer.Option(
        "--repeat", "-r", help="Timed runs per mode (and per length).  [default: 7; 3 with --sweep]",
        show_default=False)] = None,
    sweep: Annotated[str | None, typer.Option(
        "--sweep", help="Time both modes at each of these new-token counts, e.g. 16,32,64,128,256, and fit how "
        "time grows.", show_default=False)] = None,
    plot: Annotated[str | None, typer.Option(
        "--plot", metavar="FILE.png|svg", help="With --sweep: also write the chart as an image (needs matplotlib: "
        "pip install 'llmscope[plot]').", show_default=False)] = None,
    csv_output: Annotated[bool, typer.Option("--csv", help="One CSV row per timed run on stdout.")] = False,
    static_cache: Annotated[bool, typer.Option(
        "--static-cache", help="Time the cached mode with a preallocated static KV cache.")] = False,
    compile_model: Annotated[bool, typer.Option(
        "--compile", help="Also torch.compile the cached mode's decode step (with a static cache; compiled during "
        "the warm-up).")] = False,
    threads: Annotated[int | None, typer.Option(
        "--threads", "-t", help="CPU threads for torch (torch.set_num_threads). Default: torch's own choice.",
        show_default=False)] = None,
    chat: ChatOpt = None,
    system: SystemOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    device_map: DeviceMapOpt = None,
    trust_remote_code: TrustOpt = False,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Time greedy generation with and without the KV cache: speed-up, TTFT/decode split, cache size, same output.

    Raw prompt by default (no chat template), like the seed's model.generate call. The two modes alternate run by
    run. Ctrl-C stops and shows the runs that finished.
    """
    with command(quiet) as display:
        from pathlib import Path

        from llmscope import benchmark
        from llmscope.render import bench as show

        if json_output and csv_output:
            raise UsageError("give either --json or --csv, not both")
        if sweep is not None and max_new_tokens is not None:
            raise UsageError("give either --max-new-tokens or --sweep, not both")
        lengths = benchmark.parse_sweep(sweep) if sweep is not None else (
            max_new_tokens if max_new_tokens is not None else benchmark.DEFAULT_MAX_NEW_TOKENS,)
        runs = repeat if repeat is not None else (
            benchmark.DEFAULT_SWEEP_REPEAT if sweep is not None else benchmark.DEFAULT_REPEAT)
        benchmark.check_counts(warmup, runs, lengths)
        benchmark.check_threads(threads)
        plot_path = Path(plot) if plot is not None else None
        if plot_path is not None:
            if sweep is None:
                raise UsageError("--plot draws the --sweep chart", hint="add --sweep 16,32,64 (for example)")
            show.check_plot_path(plot_path)
            show.require_matplotlib()
        text = read_prompt(prompt) if prompt is not None else benchmark.DEFAULT_PROMPT
        if not text.strip():
            raise UsageError("the prompt is empty", hint="pass some text, or - to read it from stdin")
        loaded = load(display, model, device, dtype, device_map, trust_remote_code)
        busy = benchmark.busy_cpu_percent()
        show.warn_if_busy(display, busy, loaded.device, threads)
        with show.progress(display, benchmark.planned_tokens(lengths, warmup, runs)) as (on_progress, on_run):
            result = benchmark.bench_cache(loaded, text, lengths, warmup=warmup, repeat=runs, chat=bool(chat),
                                           system=system, sweep=sweep is not None, threads=threads,
                                           busy_percent=busy, on_progress=on_progress, on_run=on_run,
                                           static_cache=static_cache, compile=compile_model)
        if result.interrupted:
            display.warning(f"interrupted: showing the {len(result.runs)} timed run(s) that finished")
        if json_output:
            show.show_bench_json(display, loaded.info, result)
        elif csv_output:
            show.show_bench_csv(display, result)
        else:
            show.show_bench(display, result)
        show.warn_differences(display, result)
        if plot_path is not None and result.results:
            show.write_plot(result, plot_path)
            display.status(f"wrote {plot_path}")
        if result.interrupted:
            raise typer.Exit(EXIT_INTERRUPTED)


# ------------------------------------------------------------------------------------ next-token


@app.command("next-token", epilog=EXIT_CODES_HELP)
def next_token(
    prompt: PromptArg,
    model: ModelOpt = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="How many candidates to show per step.")] = 10,
    steps: Annotated[int, typer.Option(
        "--steps", help="Greedy steps: append the top token and show the next distribution, N times.")] = 1,
    temperature: Annotated[float | None, typer.Option(
        help="Also show the distribution a sampler draws from at this temperature.", show_default=False)] = None,
    top_p: Annotated[float | None, typer.Option(
        "--top-p", help="Also show the sampler's distribution after nucleus (top-p) filtering.",
        show_default=False)] = None,
    lens: Annotated[bool, typer.Option(
        "--lens", help="Logit lens: every block's last hidden state through the final norm and LM head.")] = False,
    chat: Annotated[bool | None, typer.Option(
        "--chat/--no-chat", help="Apply the tokenizer's chat template (default: off, the raw prompt).",
        show_default=False)] = None,
    system: SystemOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    device_map: DeviceMapOpt = None,
    trust_remote_code: TrustOpt = False,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Show the model's probabilities for the token after PROMPT: top-k, the tensor shapes, greedy steps, logit lens."""
    with command(quiet) as display:
        from llmscope.inspection import check_options, next_token_distribution
        from llmscope.render import inspection as show

        check_options(top_k, steps, temperature, top_p)
        text = read_prompt(prompt)
        if not text.strip():
            raise UsageError("the prompt is empty", hint="pass some text, or - to read it from stdin")
        loaded = load(display, model, device, dtype, device_map, trust_remote_code)
        result = next_token_distribution(loaded, text, top_k=top_k, steps=steps, temperature=temperature,
                                         top_p=top_p, lens=lens, chat=chat if chat is not None else bool(system),
                                         system=system)
        if json_output:
            show.show_next_token_json(display, loaded.info, result)
        else:
            show.show_next_token(display, result)


# ------------------------------------------------------------------------------------ architecture


@app.command(epilog=EXIT_CODES_HELP)
def architecture(
    model: ModelOpt = None,
    weights: Annotated[bool, typer.Option(
        "--weights", help="Load the real model for its dtypes and devices (default: config only, no weights).")
    ] = False,
    depth: Annotated[int | None, typer.Option(
        "--depth", help="Show the module tree this many levels deep.", show_default=False)] = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    device_map: DeviceMapOpt = None,
    trust_remote_code: TrustOpt = False,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Describe a model from its config alone: sizes, attention layout, parameters, KV cache and module tree."""
    with command(quiet) as display:
        if depth is not None and depth < 0:
            raise UsageError(f"--depth must be 0 or more (got {depth})")
        from llmscope import architecture as arch
        from llmscope.render import architecture as show
        from llmscope.render import human_count

        if weights:
            loaded = load(display, model, device, dtype, device_map, trust_remote_code)
            report = arch.describe_loaded_model(loaded, depth)
            info = loaded.info
        else:
            from llmscope.loader import resolve_model_spec
            from llmscope.results import ModelInfo

            if (device, dtype, device_map) != ("auto", "auto", None):
                display.warning("--device, --dtype and --device-map only matter with --weights")
            spec = resolve_model_spec(model)
            with display.spinner(f"reading the config of {spec.name}"):
                report = arch.describe_config_model(spec, depth, trust_remote_code)
            info = ModelInfo(model=spec.name, source=spec.kind, device="meta", dtype=report.summary.dtype,
                             parameters=report.parameters.total)
            display.status(f"built {report.summary.model_class} from the config on the meta device (no weights): "
                           f"{human_count(report.parameters.total)} parameters")
        if json_output:
            show.show_architecture_json(display, info, report)
        else:
            show.show_architecture(display, report)


@app.command("env", epilog=EXIT_CODES_HELP)
def env_command(json_output: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Versions, CUDA/MPS and GPUs, cache folders and the default model: paste it into bug reports."""
    with command(quiet) as display:
        from llmscope.environment import collect_environment
        from llmscope.render.environment import show_environment, show_environment_json

        report = collect_environment()
        show_environment_json(display, report) if json_output else show_environment(display, report)


@app.command("cache", epilog=EXIT_CODES_HELP)
def cache_command(
    clear: Annotated[bool, typer.Option("--clear", help="Remove the entries named, or every entry.")] = False,
    entries: Annotated[list[str] | None, typer.Argument(
        help="Entries to clear: a name (or its first characters) or a source file name.", show_default=False)] = None,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """List the GGUF conversion cache (size, source file, last use, state) or clear it."""
    with command(quiet) as display:
        from llmscope import conversion_cache
        from llmscope.render.cache import show_cache, show_cache_json

        if entries and not clear:
            raise UsageError("entry names are only used with --clear", hint="llmscope cache --clear NAME")
        report = conversion_cache.clear(tuple(entries or ())) if clear else conversion_cache.list_entries(check=True)
        show_cache_json(display, report) if json_output else show_cache(display, report)


OPTIONAL_VALUE_OPTIONS = {"--show-probs": "probability"}


def normalize_argv(args: list[str]) -> list[str]:
    """Give options with an optional value their default when they stand alone (`--show-probs`).

    Typer has no optional-value options, so a bare `--show-probs` becomes `--show-probs=probability`.
    """
    out: list[str] = []
    for index, arg in enumerate(args):
        if arg == "--":
            return out + args[index:]
        following = args[index + 1] if index + 1 < len(args) else None
        if arg in OPTIONAL_VALUE_OPTIONS and following not in ("probability", "entropy"):
            arg = f"{arg}={OPTIONAL_VALUE_OPTIONS[arg]}"
        out.append(arg)
    return out


def main(args: list[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        app(args=normalize_argv(list(sys.argv[1:] if args is None else args)), prog_name="llmscope")
    except KeyboardInterrupt:  # Ctrl-C outside a command's own handling (e.g. while importing torch)
        sys.stderr.write("error: interrupted\n")
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()
