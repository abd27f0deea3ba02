"""The generate command: a continuation of a prompt (or of each --batch prompt), streamed or not, locally or through
--endpoint. It parses and checks options, then calls llmscope.generation and the renderer; it computes nothing."""

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
    command,
    example,
    html_target,
    interrupted_exit,
    load,
    prompt_or_batch,
    read_batch,
    warn_all,
    write_batch,
)
from llmscope.commands._endpoint import endpoint_settings
from llmscope.core.command_settings import PromptSettings


@app.command(epilog=EXIT_CODES_HELP)
@example("Hello", "-m", "{model}", "-n", "3", "--no-chat")
@grouped(load=True, batch=True, endpoint=True)
def generate(
    prompt: OptionalPromptArg = None,
    model: ModelOpt = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", "-n", metavar="N", help="Most new tokens.")] = 50,
    min_new_tokens: Annotated[int, typer.Option(
        "--min-new-tokens", metavar="N",
        help="Hold EOS back until this many new tokens (its logit is -inf before the pick, "
        "greedy or sampled; the probabilities shown are those without it).")] = 0,
    ignore_eos: Annotated[bool, typer.Option(
        "--ignore-eos", help="Never stop at EOS: always --max-new-tokens new tokens (EOS held back for all).")
    ] = False,
    chat: ChatOpt = None,
    system: SystemOpt = None,
    sample: Annotated[bool, typer.Option("--sample", help="Sample instead of greedy decoding.")] = False,
    temperature: Annotated[float | None, typer.Option(
        "--temperature", metavar="NUMBER", help="Sampling temperature (implies --sample; 0 means greedy).",
        show_default=False)] = None,
    top_k: Annotated[int | None, typer.Option(
        "--top-k", metavar="K", help="Sample from the K most likely tokens (implies --sample).",
        show_default=False)] = None,
    top_p: Annotated[float | None, typer.Option(
        "--top-p", metavar="NUMBER", help="Nucleus sampling threshold (implies --sample).", show_default=False)] = None,
    seed: Annotated[int | None, typer.Option(
        "--seed", metavar="N", help="Random seed: same seed, same text.", show_default=False)] = None,
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
        "--logprobs", metavar="K", help="With --json: each token's log-probability and its top K alternatives.")] = 0,
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
                seed=seed, use_cache=cache, logprobs=logprobs, static_cache=static_cache, compile=compile_model,
                min_new_tokens=min_new_tokens, ignore_eos=ignore_eos),
            prompt=PromptSettings(chat=chat, system=system),
            model=shared.load.settings(model),
            mode=shared.output.mode(batch=batch_settings is not None),
            show_probs=show_probs, full_text=full_text, stream=stream, batch=batch_settings)
        remote = endpoint_settings(shared.endpoint, model, batch_settings, {
            "--static-cache": static_cache, "--compile": compile_model, "--html": html is not None,
            "--min-new-tokens": min_new_tokens > 0, "--ignore-eos": ignore_eos},
            shared.load, display)
        text = prompt_or_batch(prompt, batch_settings)
        html_path = html_target(html)
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
                                               new_tokens=generation.max_new_tokens,
                                               budget_option="--max-new-tokens"),
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
                            new_tokens=generation.max_new_tokens, budget_option="--max-new-tokens")
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
