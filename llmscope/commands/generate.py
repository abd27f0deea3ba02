"""Commands that run prompts through a model: generate, tokenize and next-token (one prompt, or --batch).
They parse and check options, then call the library and the renderer; they compute nothing themselves."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from llmscope.cli.app import app
from llmscope.cli.groups import Shared, grouped
from llmscope.cli.kit import (
    EXIT_CODES_HELP,
    BatchSizeOpt,
    ChatOpt,
    HtmlOpt,
    ModelOpt,
    OptionalPromptArg,
    SystemOpt,
    TrustOpt,
    command,
    example,
    html_target,
    interrupted_exit,
    load,
    prompt_or_batch,
    read_batch,
    read_prompt,
    require_text,
    warn_all,
    write_batch,
)
from llmscope.commands._endpoint import endpoint_settings
from llmscope.core.command_settings import PromptSettings
from llmscope.core.errors import UsageError

# ------------------------------------------------------------------------------------ generate


@app.command(epilog=EXIT_CODES_HELP)
@example("Hello", "-m", "{model}", "-n", "3", "--no-chat")
@grouped(load=True, batch=True, endpoint=True)
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
    html: HtmlOpt = None,
    batch_size: BatchSizeOpt = 8,
    *,
    shared: Shared,
) -> None:
    """Generate a continuation of PROMPT (greedy unless sampling is asked for), with timings and why it stopped."""
    with command(shared.output.quiet) as display:
        from llmscope.core.command_settings import GenerateCommand, GenerationSettings

        batch_settings = shared.batch.settings(batch_size)
        settings = GenerateCommand(
            generation=GenerationSettings.from_options(
                max_new_tokens=max_new_tokens, sample=sample, temperature=temperature, top_k=top_k, top_p=top_p,
                seed=seed, use_cache=cache, logprobs=logprobs, static_cache=static_cache, compile=compile_model),
            prompt=PromptSettings(chat=chat, system=system),
            model=shared.load.settings(model),
            mode=shared.output.mode(batch=batch_settings is not None),
            show_probs=show_probs, full_text=full_text, stream=stream, batch=batch_settings)
        remote = endpoint_settings(shared.endpoint, model, batch_settings, {
            "--static-cache": static_cache, "--compile": compile_model, "--html": html is not None},
            shared.load, display)
        text = prompt_or_batch(prompt, batch_settings)
        html_path = html_target(html, batch_settings is not None)
        display.mode = settings.mode
        warn_all(display, settings.warnings())
        if remote is not None:
            from llmscope.commands._endpoint import run_generate as run_remote

            run_remote(display, remote, text, settings)
            return
        items = read_batch(batch_settings)
        run_generate(display, settings, text, items, html_path)


def run_generate(display: Any, settings: Any, text: str | None, items: list[Any] | None = None,
                 html_path: Any = None) -> None:
    """generate after its settings are read: load -> run (one prompt, or --batch items) -> show (and --html)."""
    from llmscope.generation.generate import TokenDetail, generate_encoded
    from llmscope.generation.prompts import check_top, encode_prompt
    from llmscope.render import generation as show
    from llmscope.render.html import save_html
    generation = settings.generation
    loaded = load(display, settings.model)
    if generation.top_k:
        check_top("--top-k", generation.top_k, loaded)
    if generation.logprobs:
        check_top("--logprobs", generation.logprobs, loaded)
    chat = settings.prompt.applies_template
    logprobs = generation.logprobs > 0
    if items is not None:
        from llmscope.cli.batch import run_batch

        outcomes = run_batch(
            items, settings.batch.batch_size,
            prepare=lambda item: encode_prompt(loaded, item.prompt, chat=chat, system=settings.prompt.system,
                                               new_tokens=generation.max_new_tokens),
            run_chunk=lambda encoded: generate_encoded(loaded, encoded, generation, detail=TokenDetail(
                texts=html_path is not None or generation.logprobs > 0,
                entropy=html_path is not None or generation.logprobs > 0, alternatives=generation.logprobs)))

        def write(result: Any, keys: dict[str, Any]) -> None:
            show.show_generation(display, loaded.info, result, full_text=settings.full_text, logprobs=logprobs,
                                 **keys)
            save_html(display, html_path, "generate", loaded.info, result, keys, settings.show_probs)

        write_batch(display, items, outcomes, write)
        return
    streaming = (settings.stream if settings.stream is not None else display.stdout_is_terminal) and (
        display.for_people)
    show.legend(display, settings.show_probs)
    encoded = encode_prompt(loaded, text, chat=chat, system=settings.prompt.system,
                            new_tokens=generation.max_new_tokens)
    if streaming and settings.full_text:
        display.write(encoded.text)
    wants_html = html_path is not None
    detail = TokenDetail(texts=streaming or bool(settings.show_probs) or logprobs or wants_html,
                         entropy=settings.show_probs == "entropy" or logprobs or wants_html,
                         alternatives=generation.logprobs)
    result = generate_encoded(loaded, [encoded], generation, detail=detail,
                              on_token=show.stream_printer(display, settings.show_probs) if streaming else None)[0]
    show.show_generation(display, loaded.info, result, settings.show_probs, settings.full_text, logprobs,
                         streamed=streaming)
    save_html(display, html_path, "generate", loaded.info, result, show_probs=settings.show_probs)
    if result.finish_reason == "interrupted":
        raise interrupted_exit()


# ------------------------------------------------------------------------------------ tokenize


@app.command(epilog=EXIT_CODES_HELP)
@example("Hello world", "-m", "{model}")
@grouped(batch=True)
def tokenize(
    text: Annotated[str | None, typer.Argument(
        help="The text; '-' reads it from stdin byte for byte, final newline kept (or give --batch).",
        show_default=False)] = None,
    model: Annotated[list[str] | None, typer.Option(
        "--model", "-m", help="Model whose tokenizer to use; give several to compare them side by side.",
        show_default=False)] = None,
    ids: Annotated[bool, typer.Option("--ids", help="Print only the ids, space-separated.")] = False,
    decode: Annotated[str | None, typer.Option(
        "--decode", help='Decode ids back to text, e.g. "504 3575 282"; "-" reads them from stdin.',
        show_default=False)] = None,
    special: Annotated[bool, typer.Option("--special/--no-special", help="Add BOS/EOS as the model does.")] = True,
    chat: Annotated[bool, typer.Option(
        "--chat", help="Tokenize after the chat template (default: off, the raw text; on with --system).")] = False,
    system: SystemOpt = None,
    trust_remote_code: TrustOpt = False,
    *,
    shared: Shared,
) -> None:
    """Show how TEXT splits into tokens: ids, pieces, spans and counts. Loads the tokenizer only."""
    with command(shared.output.quiet) as display:
        from llmscope.core.command_settings import TokenizeCommand

        batch_settings = shared.batch.settings(8)
        settings = TokenizeCommand(
            models=tuple(model or [None]), prompt=PromptSettings(chat=True if chat else None, system=system),
            mode=shared.output.mode(batch=batch_settings is not None, ids=ids),
            special=special, decode=decode, trust_remote_code=trust_remote_code, batch=batch_settings)
        display.mode = settings.mode
        warn_all(display, settings.warnings())
        if decode is not None:
            if text is not None:
                raise UsageError("give either TEXT or --decode, not both")
            _run_decode(display, settings)
            return
        source = prompt_or_batch(text, batch_settings, exact=True)
        items = read_batch(batch_settings)
        _run_tokenize(display, settings, source, items)


def _run_decode(display: Any, settings: Any) -> None:
    from llmscope.core.model_info import ModelInfo
    from llmscope.loading.loader import load_tokenizer, resolve_model_spec
    from llmscope.loading.tokenization import decode_ids, parse_id_list, vocabulary_size
    from llmscope.render import tokens as show

    spec = resolve_model_spec(settings.models[0])
    tokenizer = load_tokenizer(spec, settings.trust_remote_code, light=True)
    ids = parse_id_list(read_prompt(settings.decode, "ids"), vocabulary_size(tokenizer))
    decoded = decode_ids(tokenizer, ids, spec.name, skip_special_tokens=not settings.special)
    show.show_decoded(display, ModelInfo(model=spec.name, source=spec.kind), decoded)


def _run_tokenize(display: Any, settings: Any, source: str | None, items: list[Any] | None) -> None:
    from llmscope.core.model_info import ModelInfo
    from llmscope.loading.loader import load_tokenizer, resolve_model_spec
    from llmscope.loading.tokenization import tokenize_text
    from llmscope.render import tokens as show

    specs = [resolve_model_spec(m) for m in settings.models]
    chat = settings.prompt.applies_template
    light = not chat  # the conversion cache's tokenizer.json can be read without torch / transformers
    tokenizers = [load_tokenizer(spec, settings.trust_remote_code, light=light) for spec in specs]
    info = ModelInfo(model=", ".join(spec.name for spec in specs), source=",".join(s.kind for s in specs))

    def run(text: str) -> list[Any]:
        return [tokenize_text(tokenizer, text, spec.name, add_special_tokens=settings.special, chat=chat,
                              system=settings.prompt.system) for spec, tokenizer in zip(specs, tokenizers)]

    if items is None:
        show.show_tokens(display, info, run(source))
        return
    from llmscope.cli.batch import run_batch

    outcomes = run_batch(items, 64, prepare=lambda item: require_text(item.prompt),
                         run_chunk=lambda texts: [run(text) for text in texts])
    write_batch(display, items, outcomes, lambda results, keys: show.show_tokens(display, info, results, **keys))


# ------------------------------------------------------------------------------------ next-token


@app.command("next-token", epilog=EXIT_CODES_HELP)
@example("Hello", "-m", "{model}", "--top-k", "3")
@grouped(load=True, batch=True, endpoint=True)
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
    chat: ChatOpt = None,
    system: SystemOpt = None,
    html: HtmlOpt = None,
    batch_size: BatchSizeOpt = 8,
    *,
    shared: Shared,
) -> None:
    """Show the model's probabilities for the token after PROMPT: top-k, the tensor shapes, greedy steps, logit lens."""
    with command(shared.output.quiet) as display:
        from llmscope.core.command_settings import NextTokenCommand, NextTokenSettings

        batch_settings = shared.batch.settings(batch_size)
        settings = NextTokenCommand(
            inspect=NextTokenSettings(top_k=top_k, steps=steps, temperature=temperature, top_p=top_p, lens=lens),
            prompt=PromptSettings(chat=chat, system=system),
            model=shared.load.settings(model),
            mode=shared.output.mode(batch=batch_settings is not None),
            batch=batch_settings)
        remote = endpoint_settings(shared.endpoint, model, None, {"--lens": lens, "--html": html is not None},
                                   shared.load, display)
        text = prompt_or_batch(prompt, batch_settings)
        html_path = html_target(html, batch_settings is not None)
        display.mode = settings.mode
        warn_all(display, settings.warnings())
        items = read_batch(batch_settings)
        if remote is not None:
            from llmscope.commands._endpoint import run_next_token

            run_next_token(display, remote, text, settings, items)
            return
        _run_next_token(display, settings, text, items, html_path)


def _run_next_token(display: Any, settings: Any, text: str | None, items: list[Any] | None, html_path: Any) -> None:
    from llmscope.generation.prompts import encode_prompt
    from llmscope.inspection.next_token import next_token_encoded
    from llmscope.render import inspection as show
    from llmscope.render.html import save_html

    loaded = load(display, settings.model)
    chat = settings.prompt.applies_template
    steps = settings.inspect.steps

    def encode(prompt: str) -> Any:
        return encode_prompt(loaded, prompt, chat=chat, system=settings.prompt.system, new_tokens=steps - 1,
                             budget_option="--steps", budget_offset=1)

    if items is None:
        result = next_token_encoded(loaded, [encode(text)], settings.inspect)[0]
        show.show_next_token(display, loaded.info, result)
        save_html(display, html_path, "next-token", loaded.info, result)
        return
    from llmscope.cli.batch import run_batch

    outcomes = run_batch(items, settings.batch.batch_size, prepare=lambda item: encode(item.prompt),
                         run_chunk=lambda encoded: next_token_encoded(loaded, encoded, settings.inspect))

    def write(result: Any, keys: dict[str, Any]) -> None:
        show.show_next_token(display, loaded.info, result, **keys)
        save_html(display, html_path, "next-token", loaded.info, result, keys)

    write_batch(display, items, outcomes, write)
