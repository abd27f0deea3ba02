"""The llmscope command line: thin Typer commands that read settings -> load -> run -> show. Option types and the
error / exit-code plumbing live in llmscope.clikit; no torch or transformers at import time."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
import typer.core

from llmscope import __version__
from llmscope.clikit import (
    EXIT_CODES_HELP,
    BatchFormatOpt,
    BatchOpt,
    BatchSizeOpt,
    ChatOpt,
    DeviceMapOpt,
    DeviceOpt,
    DtypeOpt,
    JsonlOpt,
    JsonOpt,
    ModelOpt,
    OptionalPromptArg,
    PromptArg,
    QuietOpt,
    SystemOpt,
    ThreadsOpt,
    TrustOpt,
    command,
    example,
    interrupted_exit,
    load,
    model_settings,
    read_prompt,
    require_text,
    warn_all,
    write_batch,
)
from llmscope.errors import UsageError
from llmscope.settings import BatchSettings, PromptSettings, output_mode

OPTIONAL_VALUE_OPTIONS = {"--show-probs": ("probability", ("probability", "entropy"))}


def normalize_argv(args: list[str]) -> list[str]:
    """Give options with an optional value their default when they stand alone (`--show-probs`).

    Typer has no optional-value options, so a bare `--show-probs` becomes `--show-probs=probability`.
    """
    out: list[str] = []
    for index, arg in enumerate(args):
        if arg == "--":
            return out + args[index:]
        following = args[index + 1] if index + 1 < len(args) else None
        if arg in OPTIONAL_VALUE_OPTIONS and following not in OPTIONAL_VALUE_OPTIONS[arg][1]:
            arg = f"{arg}={OPTIONAL_VALUE_OPTIONS[arg][0]}"
        out.append(arg)
    return out


class LlmscopeGroup(typer.core.TyperGroup):
    """The app's command group: rewrites optional-value options inside argument parsing, so the app behaves the
    same whoever calls it (the console script, `python -m llmscope`, or a test's CliRunner)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, normalize_argv(list(args)))


app = typer.Typer(
    name="llmscope",
    cls=LlmscopeGroup,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


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


def _batch(path: str | None, input_format: str, size: int) -> BatchSettings | None:
    if path is None:
        if (input_format, size) != ("auto", 8):
            raise UsageError("--batch-format and --batch-size need --batch FILE")
        return None
    return BatchSettings(path=path, input_format=input_format, batch_size=size)


def _prompt_or_batch(prompt: str | None, batch: BatchSettings | None) -> str | None:
    if batch is not None:
        if prompt is not None:
            raise UsageError("give either PROMPT or --batch, not both")
        return None
    if prompt is None:
        raise UsageError("missing PROMPT", hint="pass the prompt, - to read it from stdin, or --batch FILE")
    return read_prompt(prompt)


# ------------------------------------------------------------------------------------ generate


@app.command(epilog=EXIT_CODES_HELP)
@example("Hello", "-m", "{model}", "-n", "3", "--no-chat")
def generate(
    prompt: OptionalPromptArg = None,
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
    batch: BatchOpt = None,
    batch_format: BatchFormatOpt = "auto",
    batch_size: BatchSizeOpt = 8,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    device_map: DeviceMapOpt = None,
    trust_remote_code: TrustOpt = False,
    threads: ThreadsOpt = None,
    json_output: JsonOpt = False,
    jsonl_output: JsonlOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Generate a continuation of PROMPT (greedy unless sampling is asked for), with timings and why it stopped."""
    with command(quiet) as display:
        from llmscope.settings import GenerateCommand, GenerationSettings

        batch_settings = _batch(batch, batch_format, batch_size)
        settings = GenerateCommand(
            generation=GenerationSettings.from_options(
                max_new_tokens=max_new_tokens, sample=sample, temperature=temperature, top_k=top_k, top_p=top_p,
                seed=seed, use_cache=cache, logprobs=logprobs, static_cache=static_cache, compile=compile_model),
            prompt=PromptSettings(chat=chat, system=system),
            model=model_settings(model, device, dtype, device_map, trust_remote_code, threads),
            mode=output_mode(json=json_output, jsonl=jsonl_output or batch_settings is not None),
            show_probs=show_probs, full_text=full_text, stream=stream, batch=batch_settings)
        text = _prompt_or_batch(prompt, batch_settings)
        display.mode = settings.mode
        warn_all(display, settings.warnings())
        items = _read_batch(batch_settings)
        run_generate(display, settings, text, items)


def _read_batch(settings: BatchSettings | None) -> list[Any] | None:
    if settings is None:
        return None
    from llmscope.batch import read_items

    return read_items(settings)


def run_generate(display: Any, settings: Any, text: str | None, items: list[Any] | None = None) -> None:
    """generate after its settings are read: load -> run (one prompt, or --batch items) -> show."""
    from llmscope.generation import generate, generate_encoded
    from llmscope.prompts import check_top, encode_prompt
    from llmscope.render import generation as show
    from llmscope.tokenization import has_chat_template

    generation = settings.generation
    loaded = load(display, settings.model)
    if generation.top_k:
        check_top("--top-k", generation.top_k, loaded)
    if generation.logprobs:
        check_top("--logprobs", generation.logprobs, loaded)
    chat = settings.prompt.chat if settings.prompt.chat is not None else has_chat_template(loaded.tokenizer)
    logprobs = generation.logprobs > 0
    if items is not None:
        from llmscope.batch import run_batch

        outcomes = run_batch(
            items, settings.batch.batch_size,
            prepare=lambda item: encode_prompt(loaded, item.prompt, chat=chat, system=settings.prompt.system,
                                               new_tokens=generation.max_new_tokens),
            run_chunk=lambda encoded: generate_encoded(loaded, encoded, generation))
        write_batch(display, items, outcomes, lambda result, keys: show.show_generation(
            display, loaded.info, result, full_text=settings.full_text, logprobs=logprobs, **keys))
        return
    streaming = (settings.stream if settings.stream is not None else display.stdout_is_terminal) and (
        display.for_people)
    show.legend(display, settings.show_probs)
    if streaming and settings.full_text:
        display.write(encode_prompt(loaded, text, chat=chat, system=settings.prompt.system).text)
    from llmscope.generation import TokenDetail

    detail = TokenDetail(texts=streaming or bool(settings.show_probs) or logprobs,
                         entropy=settings.show_probs == "entropy" or logprobs, alternatives=generation.logprobs)
    result = generate(loaded, text, generation, chat=chat, system=settings.prompt.system,
                      on_token=show.stream_printer(display, settings.show_probs) if streaming else None,
                      detail=detail)
    show.show_generation(display, loaded.info, result, settings.show_probs, settings.full_text, logprobs,
                         streamed=streaming)
    if result.finish_reason == "interrupted":
        raise interrupted_exit()


# ------------------------------------------------------------------------------------ tokenize


@app.command(epilog=EXIT_CODES_HELP)
@example("Hello world", "-m", "{model}")
def tokenize(
    text: Annotated[str | None, typer.Argument(
        help="The text; '-' reads it from stdin (or give --batch).", show_default=False)] = None,
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
    batch: BatchOpt = None,
    batch_format: BatchFormatOpt = "auto",
    trust_remote_code: TrustOpt = False,
    json_output: JsonOpt = False,
    jsonl_output: JsonlOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Show how TEXT splits into tokens: ids, pieces, spans and counts. Loads the tokenizer only."""
    with command(quiet) as display:
        from llmscope.settings import TokenizeCommand

        batch_settings = _batch(batch, batch_format, 8)
        settings = TokenizeCommand(
            models=tuple(model or [None]), prompt=PromptSettings(chat=True if chat else None, system=system),
            mode=output_mode(json=json_output, jsonl=jsonl_output or batch_settings is not None, ids=ids),
            special=special, decode=decode, trust_remote_code=trust_remote_code, batch=batch_settings)
        display.mode = settings.mode
        warn_all(display, settings.warnings())
        if decode is not None:
            if text is not None:
                raise UsageError("give either TEXT or --decode, not both")
            _run_decode(display, settings)
            return
        source = _prompt_or_batch(text, batch_settings)
        items = _read_batch(batch_settings)
        _run_tokenize(display, settings, source, items)


def _run_decode(display: Any, settings: Any) -> None:
    from llmscope.loader import load_tokenizer, resolve_model_spec
    from llmscope.render import tokens as show
    from llmscope.results import ModelInfo
    from llmscope.tokenization import decode_ids, parse_id_list, vocabulary_size

    spec = resolve_model_spec(settings.models[0])
    tokenizer = load_tokenizer(spec, settings.trust_remote_code, light=True)
    ids = parse_id_list(read_prompt(settings.decode, "ids"), vocabulary_size(tokenizer))
    decoded = decode_ids(tokenizer, ids, spec.name, skip_special_tokens=not settings.special)
    show.show_decoded(display, ModelInfo(model=spec.name, source=spec.kind), decoded)


def _run_tokenize(display: Any, settings: Any, source: str | None, items: list[Any] | None) -> None:
    from llmscope.loader import load_tokenizer, resolve_model_spec
    from llmscope.render import tokens as show
    from llmscope.results import ModelInfo
    from llmscope.tokenization import tokenize_text

    specs = [resolve_model_spec(m) for m in settings.models]
    chat = bool(settings.prompt.chat)
    light = not chat  # the conversion cache's tokenizer.json can be read without torch / transformers
    tokenizers = [load_tokenizer(spec, settings.trust_remote_code, light=light) for spec in specs]
    info = ModelInfo(model=", ".join(spec.name for spec in specs), source=",".join(s.kind for s in specs))

    def run(text: str) -> list[Any]:
        return [tokenize_text(tokenizer, text, spec.name, add_special_tokens=settings.special, chat=chat,
                              system=settings.prompt.system) for spec, tokenizer in zip(specs, tokenizers)]

    if items is None:
        show.show_tokens(display, info, run(source))
        return
    from llmscope.batch import run_batch

    outcomes = run_batch(items, 64, prepare=lambda item: require_text(item.prompt),
                         run_chunk=lambda texts: [run(text) for text in texts])
    write_batch(display, items, outcomes, lambda results, keys: show.show_tokens(display, info, results, **keys))


# ------------------------------------------------------------------------------------ bench-cache


@app.command("bench-cache", epilog=EXIT_CODES_HELP)
@example("Hello", "-m", "{model}", "-n", "3", "--repeat", "2", "--warmup", "0")
def bench_cache(
    prompt: Annotated[str | None, typer.Argument(
        help="The prompt; '-' reads it from stdin. Default: the book's 'Write a very long email apologizing to "
        "Sarah...'.", show_default=False)] = None,
    model: ModelOpt = None,
    max_new_tokens: Annotated[int | None, typer.Option(
        "--max-new-tokens", "-n", help="New tokens per run, exactly (EOS is suppressed).  [default: 100]",
        show_default=False)] = None,
    warmup: Annotated[int, typer.Option(
        "--warmup", help="Untimed runs of each mode before timing starts (at the first length, at most 16 tokens; "
        "the full length with --static-cache).")] = 1,
    repeat: Annotated[int | None, typer.Option(
        "--repeat", "-r", help="Timed runs per mode (and per length), a fixed count.  [default: until the speed-up's "
        "95% interval is within ±5% (3+ pairs) or --max-time; 3 with --sweep or --depth]", show_default=False)] = None,
    max_time: Annotated[float | None, typer.Option(
        "--max-time", metavar="SECONDS", help="Time budget for the warm-up and timed runs: repeat pairs until the "
        "speed-up's 95% interval is within ±5% (3+ pairs) or this runs out.  [default: 80]",
        show_default=False)] = None,
    sweep: Annotated[str | None, typer.Option(
        "--sweep", help="Time both modes at each of these new-token counts, e.g. 16,32,64,128,256, and fit how "
        "time grows.", show_default=False)] = None,
    depth: Annotated[str | None, typer.Option(
        "--depth", help="Time prefill (time to first token) and decode at each of these prompt lengths, e.g. "
        "128,512,2048 (the prompt's tokens repeated), with and without the cache, and fit how they grow "
        "(llama-bench's -p/-d).  [default new tokens: 16]", show_default=False)] = None,
    plot: Annotated[str | None, typer.Option(
        "--plot", metavar="FILE.png|svg", help="With --sweep or --depth: also write the chart as an image (needs "
        "matplotlib: pip install 'llmscope[plot]').", show_default=False)] = None,
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

    Raw prompt by default (no chat template), like the book's model.generate call. The two modes alternate run by
    run. Ctrl-C stops and shows the runs that finished.
    """
    with command(quiet) as display:
        display.mode = output_mode(json=json_output, csv=csv_output)
        from pathlib import Path

        from llmscope import benchmark
        from llmscope.render import bench as show
        from llmscope.render import benchchart

        settings = benchmark.BenchSettings(max_new_tokens=max_new_tokens, sweep=sweep, depth=depth, warmup=warmup,
                                           repeat=repeat, max_time=max_time, threads=threads,
                                           static_cache=static_cache, compile=compile_model)
        plot_path = Path(plot) if plot is not None else None
        if plot_path is not None:
            if sweep is None and depth is None:
                raise UsageError("--plot draws the --sweep or --depth chart",
                                 hint="add --sweep 16,32,64 or --depth 128,512,2048 (for example)")
            benchchart.check_plot_path(plot_path)
            benchchart.require_matplotlib()
        text = read_prompt(prompt) if prompt is not None else benchmark.DEFAULT_PROMPT
        loaded = load(display, model_settings(model, device, dtype, device_map, trust_remote_code, None),
                      fit_threads=False)
        busy = benchmark.busy_cpu_percent()
        show.warn_if_busy(display, busy, loaded.device, threads)
        with show.progress(display, settings.planned_tokens(), depth is not None) as (on_progress, on_run):
            result = benchmark.bench_cache(
                loaded, text, settings.lengths, warmup=warmup, repeat=settings.runs, chat=bool(chat), system=system,
                sweep=sweep is not None, threads=threads, busy_percent=busy, on_progress=on_progress, on_run=on_run,
                static_cache=static_cache, compile=compile_model, depths=settings.depths,
                max_time=settings.time_budget)
        if result.interrupted:
            display.warning(f"interrupted: showing the {len(result.runs)} timed run(s) that finished")
        show.show_bench(display, loaded.info, result)
        show.warn_differences(display, result)
        if plot_path is not None and result.results:
            benchchart.write_plot(result, plot_path)
            display.status(f"wrote {plot_path}")
        if result.interrupted:
            raise interrupted_exit()


# ------------------------------------------------------------------------------------ next-token


@app.command("next-token", epilog=EXIT_CODES_HELP)
@example("Hello", "-m", "{model}", "--top-k", "3")
def next_token(
    prompt: OptionalPromptArg = None,
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
        "--chat/--no-chat", help="Apply the tokenizer's chat template (default: off, the raw prompt; on with "
        "--system).", show_default=False)] = None,
    system: SystemOpt = None,
    batch: BatchOpt = None,
    batch_format: BatchFormatOpt = "auto",
    batch_size: BatchSizeOpt = 8,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    device_map: DeviceMapOpt = None,
    trust_remote_code: TrustOpt = False,
    threads: ThreadsOpt = None,
    json_output: JsonOpt = False,
    jsonl_output: JsonlOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Show the model's probabilities for the token after PROMPT: top-k, the tensor shapes, greedy steps, logit lens."""
    with command(quiet) as display:
        from llmscope.settings import NextTokenCommand, NextTokenSettings

        batch_settings = _batch(batch, batch_format, batch_size)
        settings = NextTokenCommand(
            inspect=NextTokenSettings(top_k=top_k, steps=steps, temperature=temperature, top_p=top_p, lens=lens),
            prompt=PromptSettings(chat=chat if chat is not None else (True if system is not None else None),
                                  system=system),
            model=model_settings(model, device, dtype, device_map, trust_remote_code, threads),
            mode=output_mode(json=json_output, jsonl=jsonl_output or batch_settings is not None),
            batch=batch_settings)
        text = _prompt_or_batch(prompt, batch_settings)
        display.mode = settings.mode
        warn_all(display, settings.warnings())
        items = _read_batch(batch_settings)
        _run_next_token(display, settings, text, items)


def _run_next_token(display: Any, settings: Any, text: str | None, items: list[Any] | None) -> None:
    from llmscope.inspection import next_token_encoded
    from llmscope.prompts import encode_prompt
    from llmscope.render import inspection as show

    loaded = load(display, settings.model)
    chat = bool(settings.prompt.chat)
    steps = settings.inspect.steps

    def encode(prompt: str) -> Any:
        return encode_prompt(loaded, prompt, chat=chat, system=settings.prompt.system, new_tokens=steps - 1,
                             budget_option="--steps")

    if items is None:
        result = next_token_encoded(loaded, [encode(text)], settings.inspect)[0]
        show.show_next_token(display, loaded.info, result)
        return
    from llmscope.batch import run_batch

    outcomes = run_batch(items, settings.batch.batch_size, prepare=lambda item: encode(item.prompt),
                         run_chunk=lambda encoded: next_token_encoded(loaded, encoded, settings.inspect))
    write_batch(display, items, outcomes, lambda result, keys: show.show_next_token(display, loaded.info, result,
                                                                                     **keys))


# ------------------------------------------------------------------------------------ attention


@app.command(epilog=EXIT_CODES_HELP)
@example("Hello world", "-m", "{model}")
def attention(
    prompt: PromptArg,
    model: ModelOpt = None,
    query: Annotated[str | None, typer.Option(
        "--query", help="The query token: a position (0, 5, -1) or its text ('it'). Default: the last token.",
        show_default=False)] = None,
    layer: Annotated[int | None, typer.Option(
        "--layer", "-l", help="Show every head of this layer (from 0), grouped by the KV head they share.",
        show_default=False)] = None,
    head: Annotated[int | None, typer.Option(
        "--head", help="With --layer: only this head (from 0).", show_default=False)] = None,
    matrix: Annotated[bool, typer.Option(
        "--matrix", help="With --layer and --head: the whole tokens × tokens pattern, fitted to the terminal.")
    ] = False,
    max_weights: Annotated[int, typer.Option(
        "--max-weights", help="Most attention weights to keep (layers × heads × queries × keys); one layer's heads × "
        "n² inside the forward may reach 16 times this.")] = 4_000_000,
    plot: Annotated[str | None, typer.Option(
        "--plot", metavar="FILE.png|svg", help="Also draw the head grid of the selected layers as an image (needs "
        "matplotlib: pip install 'llmscope[plot]').", show_default=False)] = None,
    chat: Annotated[bool | None, typer.Option(
        "--chat/--no-chat", help="Apply the tokenizer's chat template (default: off, the raw prompt).",
        show_default=False)] = None,
    system: SystemOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    device_map: DeviceMapOpt = None,
    trust_remote_code: TrustOpt = False,
    threads: ThreadsOpt = None,
    json_output: JsonOpt = False,
    jsonl_output: JsonlOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Show where each attention head looks, from one forward pass over PROMPT.

    The model runs with transformers' eager attention (SDPA and flash kernels return no weights), and only the
    selected layers' weights are kept. Default: for the query token, one heat row per layer (mean over heads and the
    strongest head) and the head-roles table.
    """
    with command(quiet) as display:
        display.mode = output_mode(json=json_output, jsonl=jsonl_output)
        from pathlib import Path

        from llmscope.attention import AttentionSettings, attention_weights
        from llmscope.render import attention as show

        models = model_settings(model, device, dtype, device_map, trust_remote_code, threads)
        settings = AttentionSettings(layer=layer, head=head, query=query, matrix=matrix, all_queries=plot is not None,
                                     max_weights=max_weights, chat=chat if chat is not None else bool(system),
                                     system=system)
        for message in settings.ignored():
            display.warning(message)
        plot_path = Path(plot) if plot is not None else None
        if plot_path is not None:
            from llmscope.render.benchchart import check_plot_path, require_matplotlib

            check_plot_path(plot_path)
            require_matplotlib()
        text = read_prompt(prompt)
        loaded = load(display, models)
        result = attention_weights(loaded, text, settings)
        show.show_attention(display, loaded.info, result, matrix=matrix)
        n = len(result.tokens)
        display.status(f"one eager forward over {n} token{'s' if n != 1 else ''} in {result.forward_seconds:.2f} s")
        if plot_path is not None:
            show.write_plot(result, plot_path)
            display.status(f"wrote {plot_path}")


# ------------------------------------------------------------------------------------ architecture


@app.command(epilog=EXIT_CODES_HELP)
@example("-m", "{model}")
def architecture(
    model: ModelOpt = None,
    weights: Annotated[bool, typer.Option(
        "--weights", help="Load the real model for its dtypes and devices (default: config only, no weights).")
    ] = False,
    depth: Annotated[int | None, typer.Option(
        "--depth", help="Show the module tree this many levels deep.", show_default=False)] = None,
    context: Annotated[str | None, typer.Option(
        "--context", help="Memory plan up to this many tokens: 4096, 32k, 128k (default: the model's context).",
        show_default=False)] = None,
    batch_size: Annotated[int, typer.Option(
        "--batch-size", help="Memory plan for this many sequences at once (B).")] = 1,
    kv_dtype: Annotated[str | None, typer.Option(
        "--kv-dtype", help="KV cache dtype for the plan: float32 | bfloat16 | float16 | float8 | int8 | int4 "
        "(default: the weights' dtype).", show_default=False)] = None,
    gpu_memory: Annotated[str | None, typer.Option(
        "--gpu-memory", help="Check the plan against this GPU size, e.g. 80GB (GB = GiB, as GPU makers mean it; "
        "default: 24, 40 and 80 GiB).", show_default=False)] = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    device_map: DeviceMapOpt = None,
    trust_remote_code: TrustOpt = False,
    json_output: JsonOpt = False,
    jsonl_output: JsonlOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Describe a model from its config alone: sizes, attention per layer type, parameters (active ones for MoE),
    KV cache, a memory plan (weights + KV + state at --context x --batch-size; --dtype sets the weights' dtype)
    and the module tree."""
    with command(quiet) as display:
        display.mode = output_mode(json=json_output, jsonl=jsonl_output)
        if depth is not None and depth < 0:
            raise UsageError(f"--depth must be 0 or more (got {depth})")
        from llmscope.planner import PlannerSettings

        plan = PlannerSettings.from_options(context, batch_size, kv_dtype, gpu_memory,
                                            dtype if not weights else "auto")
        from llmscope import architecture as arch
        from llmscope.render import architecture as show
        from llmscope.render import human_count

        if weights:
            loaded = load(display, model_settings(model, device, dtype, device_map, trust_remote_code, None))
            report = arch.describe_loaded_model(loaded, depth, plan)
            info = loaded.info
        else:
            from llmscope.loader import resolve_model_spec
            from llmscope.results import ModelInfo

            if (device, device_map) != ("auto", None):
                display.warning("--device and --device-map only matter with --weights")
            spec = resolve_model_spec(model)
            with display.spinner(f"reading the config of {spec.name}"):
                report = arch.describe_config_model(spec, depth, trust_remote_code, plan)
            info = ModelInfo(model=spec.name, source=spec.kind, device="meta", dtype=report.summary.dtype,
                             parameters=report.parameters.total)
            display.status(f"built {report.summary.model_class} from the config on the meta device (no weights): "
                           f"{human_count(report.parameters.total)} parameters")
        show.show_architecture(display, info, report)


@app.command("env", epilog=EXIT_CODES_HELP)
@example()
def env_command(json_output: JsonOpt = False, jsonl_output: JsonlOpt = False, quiet: QuietOpt = False) -> None:
    """Versions, CUDA/MPS and GPUs, cache folders and the default model: paste it into bug reports."""
    with command(quiet) as display:
        display.mode = output_mode(json=json_output, jsonl=jsonl_output)
        from llmscope.environment import collect_environment
        from llmscope.render.environment import show_environment

        show_environment(display, collect_environment())


@app.command("cache", epilog=EXIT_CODES_HELP)
@example()
def cache_command(
    clear: Annotated[bool, typer.Option("--clear", help="Remove the entries named, or every entry.")] = False,
    entries: Annotated[list[str] | None, typer.Argument(
        help="Entries to clear: a name (or its first characters) or a source file name.", show_default=False)] = None,
    json_output: JsonOpt = False,
    jsonl_output: JsonlOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """List the GGUF conversion cache (size, source file, last use, state) or clear it."""
    with command(quiet) as display:
        display.mode = output_mode(json=json_output, jsonl=jsonl_output)
        from llmscope import conversion_cache
        from llmscope.render.cache import show_cache

        if entries and not clear:
            raise UsageError("entry names are only used with --clear", hint="llmscope cache --clear NAME")
        report = conversion_cache.clear(tuple(entries or ())) if clear else conversion_cache.list_entries(check=True)
        show_cache(display, report)


# ------------------------------------------------------------------------------------ score and compare

TextArg = Annotated[str | None, typer.Argument(help="The text; '-' reads it from stdin.", show_default=False)]
FileOpt = Annotated[str | None, typer.Option("--file", "-f", help="Read the text from this file (UTF-8).",
                                             show_default=False)]
ContextOpt = Annotated[str | None, typer.Option(
    "--prompt", help="Context before TEXT (not scored); with --chat, the question TEXT answers.", show_default=False)]
ScoreChatOpt = Annotated[bool, typer.Option(
    "--chat", help="Score TEXT as the assistant's answer to --prompt under the chat template.")]
WindowOpt = Annotated[int | None, typer.Option(
    "--window", help="Tokens per forward pass (default: the model's context length).", show_default=False)]
StrideOpt = Annotated[int | None, typer.Option(
    "--stride", help="Tokens the window moves for texts longer than it (default: half the window).",
    show_default=False)]
MaxTokensOpt = Annotated[int | None, typer.Option(
    "--max-tokens", help="Score at most this many tokens of the text.", show_default=False)]


def read_text(text: str | None, file: str | None) -> str:
    """TEXT, stdin ('-') or --file PATH: exactly one of them."""
    if (text is None) == (file is None):
        raise UsageError("give either TEXT or --file PATH" if file is not None else "missing TEXT",
                         hint="pass the text, - to read stdin, or --file PATH")
    if file is None:
        return read_prompt(text or "", "text")
    from pathlib import Path

    try:
        data = Path(file).read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read --file {file}: {error.strerror or error}") from None
    try:
        content = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UsageError(f"--file {file} is not valid UTF-8 (byte {error.start})",
                         hint="convert it with `iconv -t utf-8`") from None
    return require_text(content[:-1] if content.endswith("\n") else content, "text")


@app.command(epilog=EXIT_CODES_HELP)
@example("Hello world", "-m", "{model}")
def score(
    text: TextArg = None,
    file: FileOpt = None,
    model: ModelOpt = None,
    prompt: ContextOpt = None,
    chat: ScoreChatOpt = False,
    system: SystemOpt = None,
    window: WindowOpt = None,
    stride: StrideOpt = None,
    max_tokens: MaxTokensOpt = None,
    top_k: Annotated[int, typer.Option(
        "--top-k", "-k", help="With --json: each token's K most likely alternatives (top_logprobs).")] = 0,
    worst: Annotated[int, typer.Option("--worst", help="Name the N most surprising tokens.")] = 5,
    colour_by: Annotated[str, typer.Option(
        "--colour-by", help="Colour tokens by 'probability' or the distribution's 'entropy'.")] = "probability",
    table: Annotated[bool, typer.Option("--table", help="A table of every scored token instead of the text.")] = False,
    batch: BatchOpt = None,
    batch_format: BatchFormatOpt = "auto",
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    device_map: DeviceMapOpt = None,
    trust_remote_code: TrustOpt = False,
    threads: ThreadsOpt = None,
    json_output: JsonOpt = False,
    jsonl_output: JsonlOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """How likely is TEXT under the model? Per-token probability, rank and top choice; perplexity, bits per byte.

    Teacher-forced: one forward pass reads the text (a sliding window when it is longer than the context). The
    first token is scored after BOS when the tokenizer adds one; otherwise it has no prediction and is skipped.
    """
    with command(quiet) as display:
        from llmscope.scoring import ScoreSettings

        if colour_by not in ("probability", "entropy"):
            raise UsageError(f"--colour-by takes 'probability' or 'entropy' (got {colour_by!r})")
        settings = ScoreSettings(prompt=prompt, chat=chat, system=system, window=window, stride=stride,
                                 max_tokens=max_tokens, top_k=top_k, worst=worst)
        batch_settings = _batch(batch, batch_format, 8)
        models = model_settings(model, device, dtype, device_map, trust_remote_code, threads)
        display.mode = output_mode(json=json_output, jsonl=jsonl_output or batch_settings is not None)
        if batch_settings is not None and (text is not None or file is not None):
            raise UsageError("give either TEXT, --file or --batch, not several")
        source = read_text(text, file) if batch_settings is None else None
        items = _read_batch(batch_settings)
        from llmscope.render import scoring as show
        from llmscope.scoring import score_text

        loaded = load(display, models)
        if items is None:
            show.show_score(display, loaded.info, score_text(loaded, source, settings), colour_by, table)
            return
        from llmscope.batch import run_batch

        outcomes = run_batch(items, 1, prepare=lambda item: require_text(item.prompt, "text"),
                             run_chunk=lambda texts: [score_text(loaded, t, settings) for t in texts])
        write_batch(display, items, outcomes, lambda result, keys: show.show_score(display, loaded.info, result,
                                                                                    **keys))


@app.command(epilog=EXIT_CODES_HELP)
@example("Hello world", "-m", "{model}", "--against-dtype", "float32")
def compare(
    text: TextArg = None,
    file: FileOpt = None,
    model: ModelOpt = None,
    against: Annotated[str | None, typer.Option(
        "--against", "-b", help="Model B: hub id, folder, .gguf file or alias (default: model A again).",
        show_default=False)] = None,
    against_dtype: Annotated[str | None, typer.Option(
        "--against-dtype", help="Load B in this dtype (float32 | bfloat16 | float16), e.g. A in another precision.",
        show_default=False)] = None,
    prompt: ContextOpt = None,
    chat: ScoreChatOpt = False,
    system: SystemOpt = None,
    window: WindowOpt = None,
    stride: StrideOpt = None,
    max_tokens: MaxTokensOpt = None,
    worst: Annotated[int, typer.Option("--worst", help="Name the N positions where the models part most.")] = 10,
    next_token: Annotated[bool, typer.Option(
        "--next-token", help="Also the two top-k tables for the token after the text, side by side.")] = False,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Rows of the --next-token tables.")] = 10,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    device_map: DeviceMapOpt = None,
    trust_remote_code: TrustOpt = False,
    threads: ThreadsOpt = None,
    json_output: JsonOpt = False,
    jsonl_output: JsonlOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Where do two models part on TEXT? KL(A‖B) per token, top-1 / top-5 agreement, perplexity under each.

    Both models read the same tokens (they must tokenize TEXT identically). --against-dtype bfloat16 alone compares
    the model with itself in another precision.
    """
    with command(quiet) as display:
        from llmscope.comparison import CompareSettings
        from llmscope.scoring import ScoreSettings

        settings = CompareSettings(
            score=ScoreSettings(prompt=prompt, chat=chat, system=system, window=window, stride=stride,
                                max_tokens=max_tokens),
            against=against, against_dtype=against_dtype, worst=worst, next_token=next_token, top_k=top_k)
        settings_a = model_settings(model, device, dtype, device_map, trust_remote_code, threads)
        settings_b = model_settings(against if against is not None else model, device, against_dtype or dtype,
                                    device_map, trust_remote_code, threads)
        display.mode = output_mode(json=json_output, jsonl=jsonl_output)
        source = read_text(text, file)
        from llmscope.comparison import compare_texts
        from llmscope.render import scoring as show

        model_a = load(display, settings_a)
        model_b = load(display, settings_b)
        if model_a.spec == model_b.spec and model_a.dtype == model_b.dtype:
            display.warning("A and B are the same model in the same dtype: expect KL 0")
        show.show_compare(display, model_a.info, compare_texts(model_a, model_b, source, settings))


def _describe_commands() -> None:
    """The root --help names every command the app has, so a new command cannot be left out of it."""
    import typer.main

    names = ", ".join(typer.main.get_command_name(c.name or c.callback.__name__) for c in app.registered_commands)
    app.info.help = f"Look inside causal language models: {names}.\n\n{EXIT_CODES_HELP}"


_describe_commands()


def main(args: list[str] | None = None) -> None:
    """Run the app (the console script goes through llmscope.entry, which handles signals first)."""
    app(args=list(sys.argv[1:] if args is None else args), prog_name="llmscope")
